//! The mesh's mutual TLS: rustls configs built from the mesh CA and this node's certificate.
//!
//! - Both sides present a certificate, and each chain must lead to the mesh CA (and only to
//!   it: the system roots play no part).
//! - A client connects to a peer by its agent name, so the server's certificate must carry that
//!   name; the server reads the client's name from its certificate and the transport refuses
//!   names that are not configured peers.
//! - ALPN is `pom/1`; TLS 1.3 only (QUIC requires it).
//!
//! Loaded at start-up and again on SIGHUP (new connections use the new files; live ones keep
//! theirs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_proto::wire::ALPN;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::probe::trust::{TrustError, provider, read_pem_certs};

/// Why the mesh certificates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA or node certificate file cannot be read or parsed.
    #[error(transparent)]
    Cert(#[from] TrustError),
    /// The key file cannot be read or parsed.
    #[error("mesh key {}: {detail}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The node certificate names another agent.
    #[error(
        "mesh certificate {} is issued to {found:?}, but [agent] name is {expected:?}; issue one with `pom cert issue {expected}`",
        path.display()
    )]
    WrongName {
        /// The file.
        path: PathBuf,
        /// The names in the certificate.
        found: Vec<String>,
        /// `[agent] name`.
        expected: String,
    },
    /// rustls refused the combination (key does not match the certificate, …).
    #[error("mesh TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built from the CA.
    #[error("mesh CA: {0}")]
    Verifier(String),
}

/// The mesh identity of this node, ready for QUIC.
#[derive(Debug, Clone)]
pub struct MeshTls {
    /// For accepting peers (client certificate required).
    pub server: Arc<rustls::ServerConfig>,
    /// For connecting to peers (presents this node's certificate).
    pub client: Arc<rustls::ClientConfig>,
    /// When this node's certificate expires (Unix seconds).
    pub not_after: i64,
}

impl MeshTls {
    /// Loads the CA, the certificate and the key, and checks that the certificate names `me`.
    pub fn load(ca: &Path, cert: &Path, key: &Path, me: &str) -> Result<Self, TlsError> {
        let ca_certs = read_pem_certs(ca)?;
        let chain = read_pem_certs(cert)?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
            path: key.to_owned(),
            detail: e.to_string(),
        })?;
        let leaf = &chain[0];
        let names = cert_names(leaf);
        if !names.iter().any(|n| n == me) {
            return Err(TlsError::WrongName {
                path: cert.to_owned(),
                found: names,
                expected: me.to_owned(),
            });
        }
        let not_after = cert_not_after(leaf).unwrap_or(i64::MAX);
        let mut roots = RootCertStore::empty();
        for c in ca_certs {
            roots.add(c)?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            not_after,
        })
    }
}

/// The agent names a certificate carries: its DNS SANs, then its common name.
pub fn cert_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for cn in parsed.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str()
            && !names.iter().any(|n| n == cn)
        {
            names.push(cn.to_owned());
        }
    }
    names
}

/// When a certificate expires (Unix seconds).
pub fn cert_not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}
