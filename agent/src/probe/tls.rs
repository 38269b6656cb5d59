//! The TLS check: connect, take the whole certificate chain the server presents, and judge it.
//!
//! The handshake uses a verifier that accepts any chain (it still verifies the handshake
//! signatures, so the server must hold the key of the leaf it shows). The chain is then judged
//! on three independent counts, so an expired self-signed certificate is reported as both:
//!
//! - trust: the real WebPKI verifier (system roots plus the target's `ca_file`), asked at a time
//!   inside the leaf's validity so that expiry does not mask an unknown issuer;
//! - name: the leaf must be valid for the host;
//! - time: not before, not after, and the `warn_days` window.
//!
//! A self-signed certificate, or the fallback certificate of a known reverse proxy (Traefik,
//! Kubernetes ingress-nginx, Caddy), is named as such: it is what a proxy serves when it has no
//! route or certificate for the host, i.e. an edge outage.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::net::{self, TlsFailure, describe_cert_error};
use super::trust::provider;
use super::{Facts, Outcome, ProbeContext};
use crate::plan::TlsSpec;

/// Certificates that reverse proxies serve when nothing matches the host.
struct KnownDefault {
    /// Matched, case-insensitively, within the leaf's subject or issuer common name.
    needle: &'static str,
    /// Which proxy.
    proxy: &'static str,
    /// When it shows up.
    meaning: &'static str,
}

const KNOWN_DEFAULTS: &[KnownDefault] = &[
    KnownDefault {
        needle: "TRAEFIK DEFAULT CERT",
        proxy: "Traefik",
        meaning: "served when no router or certificate matches the host",
    },
    KnownDefault {
        needle: "Kubernetes Ingress Controller Fake Certificate",
        proxy: "Kubernetes ingress-nginx",
        meaning: "served when no Ingress TLS secret matches the host",
    },
    KnownDefault {
        needle: "Caddy Local Authority",
        proxy: "Caddy",
        meaning: "issued by Caddy's internal CA instead of a public one",
    },
];

/// Accepts any certificate chain so that it can be inspected after the handshake, but still
/// verifies the handshake signatures against the presented leaf.
#[derive(Debug)]
struct InspectOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for InspectOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Runs one TLS check.
pub async fn probe(spec: &TlsSpec, ctx: &ProbeContext) -> Outcome {
    let trust = match ctx.trust.entry(spec.ca_file.as_deref()) {
        Ok(trust) => trust,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let config = match ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => {
            let mut config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(InspectOnly {
                    inner: trust.verifier.clone(),
                }))
                .with_no_client_auth();
            config.resumption = rustls::client::Resumption::disabled();
            Arc::new(config)
        }
        Err(e) => return Outcome::error(format!("TLS setup failed: {e}")),
    };
    let stream = match net::connect(&spec.host, spec.port).await {
        Ok(stream) => stream,
        Err(e) => return Outcome::unreachable(format!("port {}: {e}", spec.port)),
    };
    let tls = match net::tls_handshake(stream, &spec.host, config).await {
        Ok(tls) => tls,
        Err(e @ (TlsFailure::Handshake(_) | TlsFailure::Certificate(_))) => {
            return Outcome::unreachable(e.to_string());
        }
    };
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    drop(tls);
    judge(spec, &trust.verifier, &chain, OffsetDateTime::now_utc())
}

/// Judges a presented chain at `now`. Public for the benefit of tests and `pom cert`-style tools.
pub fn judge(
    spec: &TlsSpec,
    verifier: &WebPkiServerVerifier,
    chain: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Outcome {
    let Some(leaf_der) = chain.first() else {
        return Outcome::error("the server presented no certificate");
    };
    let leaf = match x509_parser::parse_x509_certificate(leaf_der) {
        Ok((_, leaf)) => leaf,
        Err(e) => return Outcome::error(format!("the certificate could not be parsed: {e}")),
    };
    let Ok(name) = net::server_name(&spec.host) else {
        return Outcome::error(format!("{:?} is not a valid TLS server name", spec.host));
    };
    let not_before = leaf.validity().not_before.to_datetime();
    let not_after = leaf.validity().not_after.to_datetime();
    let subject = leaf.subject().to_string();
    let issuer = leaf.issuer().to_string();
    let sans = subject_alt_names(&leaf);
    let self_signed = leaf.subject().as_raw() == leaf.issuer().as_raw();

    // Trust (and name, which webpki checks after the chain) at a moment the leaf is valid.
    let inside = now.clamp(not_before, not_after);
    let at = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(inside.unix_timestamp()).unwrap_or(0),
    ));
    let verdict = verifier.verify_server_cert(leaf_der, &chain[1..], &name, &[], at);
    let (trusted, name_ok) = match &verdict {
        Ok(_) => (Ok(()), true),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => (Ok(()), false),
        Err(rustls::Error::InvalidCertificate(e)) => {
            (Err(describe_cert_error(e)), name_matches(leaf_der, &name))
        }
        Err(e) => (Err(e.to_string()), name_matches(leaf_der, &name)),
    };

    let mut problems = Vec::new();
    if let Err(why) = &trusted {
        let default = KNOWN_DEFAULTS.iter().find(|d| {
            let needle = d.needle.to_ascii_lowercase();
            [&subject, &issuer]
                .iter()
                .any(|n| n.to_ascii_lowercase().contains(&needle))
        });
        match (default, self_signed) {
            (Some(d), true) => problems.push(format!(
                "self-signed default certificate {subject} ({}: {})",
                d.proxy, d.meaning
            )),
            (Some(d), false) => problems.push(format!(
                "default certificate {subject} issued by {issuer} ({}: {})",
                d.proxy, d.meaning
            )),
            (None, true) => problems.push(format!("self-signed certificate {subject}")),
            (None, false) => problems.push(format!("untrusted chain: {why}")),
        }
    }
    let days_left = (not_after - now).whole_days();
    if now > not_after {
        problems.push(format!(
            "expired on {} ({} days ago)",
            date(not_after),
            (now - not_after).whole_days()
        ));
    } else if now < not_before {
        problems.push(format!("not valid before {}", date(not_before)));
    }
    if !name_ok {
        let names = if sans.is_empty() {
            "no names".to_owned()
        } else {
            sans.join(", ")
        };
        problems.push(format!("not valid for {} (it names {names})", spec.host));
    }

    let facts_text = format!(
        "subject {subject}; issuer {issuer}; SANs {}; expires {} ({days_left} days); chain of {}; {}",
        if sans.is_empty() {
            "none".to_owned()
        } else {
            sans.join(", ")
        },
        date(not_after),
        chain.len(),
        if trusted.is_ok() {
            "trusted"
        } else {
            "untrusted"
        },
    );
    let mut outcome = if !problems.is_empty() {
        Outcome::error(format!("{}; {facts_text}", problems.join("; ")))
    } else if days_left < i64::from(spec.warn_days) {
        Outcome::degraded(format!(
            "expires in {days_left} days, inside the {}-day warning window; {facts_text}",
            spec.warn_days
        ))
    } else {
        Outcome::operational(facts_text)
    };
    outcome.facts = Facts {
        cert_not_after: Some(not_after),
        ..Facts::default()
    };
    outcome
}

fn name_matches(leaf: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    ParsedCertificate::try_from(leaf)
        .ok()
        .is_some_and(|parsed| verify_server_name(&parsed, name).is_ok())
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn date(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}
