//! Trust roots and TLS client configs for probes: the system roots plus a target's `ca_file`.
//!
//! Roots are parsed once per process (system) or once per `ca_file`, and the resulting verifier
//! and HTTP client config are shared by every probe of every target using them. Every config
//! here is built on the ring provider explicitly, so it works whether or not a process-wide
//! default provider was installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a trust root could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The PEM file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds no certificate.
    #[error("CA file {} holds no PEM certificate", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the file is malformed.
    #[error("CA file {} holds an invalid certificate: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Reads every certificate of a PEM file; fails if there is none or one is malformed.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let pem = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TrustError::Empty {
            path: path.to_owned(),
        });
    }
    for cert in &certs {
        webpki_anchor_check(cert).map_err(|detail| TrustError::Invalid {
            path: path.to_owned(),
            detail,
        })?;
    }
    Ok(certs)
}

fn webpki_anchor_check(cert: &CertificateDer<'_>) -> Result<(), String> {
    let mut store = RootCertStore::empty();
    store.add(cert.clone()).map_err(|e| e.to_string())
}

/// The ring crypto provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trust roots (`/etc/ssl/certs` and friends), or Mozilla's bundled roots when the
/// system has none. Loaded once per process.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!("no system trust roots found; using the bundled Mozilla roots");
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(store)
        })
        .clone()
}

/// What probes need to verify servers of one trust domain.
#[derive(Debug)]
pub struct TrustEntry {
    /// The standard WebPKI verifier over these roots.
    pub verifier: Arc<WebPkiServerVerifier>,
    /// A client config for HTTP probes: verifying, HTTP/1.1 only, no session resumption (every
    /// probe does a full handshake, as a new visitor would).
    pub http: Arc<ClientConfig>,
}

/// Trust entries, cached per `ca_file` (`None`: the system roots only).
#[derive(Debug, Default)]
pub struct Trust {
    entries: Mutex<HashMap<Option<PathBuf>, Arc<TrustEntry>>>,
}

impl Trust {
    /// The entry for the system roots plus `ca_file`.
    pub fn entry(&self, ca_file: Option<&Path>) -> Result<Arc<TrustEntry>, TrustError> {
        let key = ca_file.map(Path::to_owned);
        if let Some(entry) = self.lock().get(&key) {
            return Ok(entry.clone());
        }
        let entry = Arc::new(build_entry(ca_file)?);
        Ok(self.lock().entry(key).or_insert(entry).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<PathBuf>, Arc<TrustEntry>>> {
        // The map is only ever inserted into; a panic elsewhere cannot leave it inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn build_entry(ca_file: Option<&Path>) -> Result<TrustEntry, TrustError> {
    let mut roots = (*system_roots()).clone();
    if let Some(path) = ca_file {
        for cert in read_pem_certs(path)? {
            roots.add(cert).map_err(|e| TrustError::Invalid {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        }
    }
    let invalid = |detail: String| TrustError::Invalid {
        path: ca_file.map(Path::to_owned).unwrap_or_default(),
        detail,
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let mut http = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_webpki_verifier(verifier.clone())
        .with_no_client_auth();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    http.resumption = rustls::client::Resumption::disabled();
    Ok(TrustEntry {
        verifier,
        http: Arc::new(http),
    })
}
