//! Throw-away certificates for local servers: a test CA and leaves of every kind a TLS probe
//! must judge.
//!
//! Everything is ECDSA P-256 with an explicit subject, validity, serial and EKU (rcgen's defaults
//! would be "rcgen self signed cert", valid until the year 4096).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::probe::trust::provider;

/// A certificate authority for tests and the demo.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

impl TestCa {
    /// A new CA named `common_name`, valid from yesterday for ten years.
    pub fn new(common_name: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Issues a server certificate.
    pub fn issue(&self, leaf: &Leaf) -> Result<Identity, rcgen::Error> {
        let key = KeyPair::generate()?;
        let cert = leaf.params()?.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.der.clone()],
            key: key.serialize_der(),
            cert_pem: cert.pem(),
        })
    }
}

/// What a leaf certificate says: its names and validity.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Subject common name.
    pub common_name: String,
    /// Subject organisation, if any.
    pub organization: Option<String>,
    /// DNS names and IP addresses (SANs).
    pub names: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Leaf {
    /// A leaf for `names` (the first is also the CN), valid from yesterday for 90 days.
    pub fn new(names: &[&str]) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: names.first().copied().unwrap_or("localhost").to_owned(),
            organization: None,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(90),
        }
    }

    /// The same leaf, expiring `in_` from now (negative: already expired).
    pub fn expiring_in(mut self, in_: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_after = now + in_;
        if self.not_before >= self.not_after {
            self.not_before = self.not_after - Duration::days(30);
        }
        self
    }

    /// The same leaf, valid only from `in_` from now.
    pub fn starting_in(mut self, in_: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now + in_;
        self.not_after = self.not_before + Duration::days(90);
        self
    }

    /// The same leaf with another common name.
    pub fn named(mut self, common_name: &str) -> Self {
        self.common_name = common_name.to_owned();
        self
    }

    /// The same leaf with an organisation in its subject.
    pub fn organization(mut self, organization: &str) -> Self {
        self.organization = Some(organization.to_owned());
        self
    }

    /// A self-signed certificate with these names and validity.
    pub fn self_signed(&self) -> Result<Identity, rcgen::Error> {
        let key = KeyPair::generate()?;
        let cert = self.params()?.self_signed(&key)?;
        Ok(Identity {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
            cert_pem: cert.pem(),
        })
    }

    fn params(&self) -> Result<CertificateParams, rcgen::Error> {
        let mut params = CertificateParams::new(self.names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        if let Some(org) = &self.organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.serial_number = Some(serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(params)
    }
}

/// Traefik's fallback certificate, as it serves it when no router matches the host.
pub fn traefik_default() -> Result<Identity, rcgen::Error> {
    Leaf::new(&["0a1b2c3d4e5f.traefik.default"])
        .named("TRAEFIK DEFAULT CERT")
        .self_signed()
}

/// Kubernetes ingress-nginx's fallback certificate.
pub fn ingress_nginx_fake() -> Result<Identity, rcgen::Error> {
    Leaf::new(&["ingress.local"])
        .named("Kubernetes Ingress Controller Fake Certificate")
        .organization("Acme Co")
        .self_signed()
}

/// A certificate chain and its private key, ready to serve.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first, then the issuer (if any).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key, PKCS#8 DER.
    pub key: Vec<u8>,
    /// The leaf, PEM.
    pub cert_pem: String,
}

impl Identity {
    /// A rustls server config presenting this identity (HTTP/1.1 ALPN, ring provider).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, rustls::Error> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn serial() -> SerialNumber {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut bytes = (nanos as u64 ^ n.rotate_left(32)).to_be_bytes().to_vec();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}
