//! Connecting: name resolution, TCP connect and TLS handshake, with every failure classified
//! once, here, so that all probes agree on what "refused", "reset" or "certificate rejected"
//! mean.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a TCP connection could not be made. Every variant means `unreachable`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {detail}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's message.
        detail: String,
    },
    /// Every address refused, reset or could not be reached; this is the last failure.
    #[error("{addr}: {}", describe_io(source))]
    Io {
        /// The address tried last.
        addr: SocketAddr,
        /// The failure.
        source: io::Error,
    },
}

/// A short, stable description of a socket error.
pub fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".to_owned(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        io::ErrorKind::BrokenPipe => "connection closed by peer (broken pipe)".to_owned(),
        io::ErrorKind::UnexpectedEof => "connection closed by peer".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// Resolves `host` (a name or an IP literal) to socket addresses.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolve_err = |detail: String| ConnectError::Resolve {
        host: host.to_owned(),
        detail,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| resolve_err(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(resolve_err("no addresses".to_owned()));
    }
    Ok(addrs)
}

/// Connects to the first address of `host` that accepts.
pub async fn connect(host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for addr in resolve(host, port).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Probes send one small request; waiting for Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(source) => last = Some(ConnectError::Io { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Resolve {
        host: host.to_owned(),
        detail: "no addresses".to_owned(),
    }))
}

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    /// The server's certificate was rejected: the server answered, wrongly (`error`).
    #[error("certificate rejected: {}", describe_cert_error(.0))]
    Certificate(CertificateError),
    /// The handshake itself failed (`unreachable`).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// The TLS server name for `host`: a DNS name, or an IP address (no SNI is sent for those).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsFailure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|e| TlsFailure::Handshake(format!("invalid server name {host:?}: {e}")))
}

/// Runs a TLS handshake over `stream`.
pub async fn tls_handshake(
    stream: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, TlsFailure> {
    let name = server_name(host)?;
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::InvalidCertificate(cert)) => {
                    TlsFailure::Certificate(cert.clone())
                }
                Some(other) => TlsFailure::Handshake(other.to_string()),
                None => TlsFailure::Handshake(describe_io(&e)),
            }
        })
}

/// A short description of a certificate rejection.
pub fn describe_cert_error(e: &CertificateError) -> String {
    match e {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not valid yet".to_owned()
        }
        CertificateError::NotValidForName => "certificate not valid for this host".to_owned(),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "certificate not valid for {} (it names {})",
            expected.to_str(),
            if presented.is_empty() {
                "nothing".to_owned()
            } else {
                presented.join(", ")
            }
        ),
        CertificateError::UnknownIssuer => {
            "certificate not issued by a trusted CA (self-signed or unknown issuer)".to_owned()
        }
        CertificateError::BadSignature => "certificate signature invalid".to_owned(),
        CertificateError::BadEncoding => "certificate could not be parsed".to_owned(),
        CertificateError::Revoked => "certificate revoked".to_owned(),
        other => other.to_string(),
    }
}
