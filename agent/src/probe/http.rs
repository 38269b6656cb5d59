//! A small HTTP/1.1 client for probes, on hyper's connection API.
//!
//! Each request gets its own connection (and, for HTTPS, a full handshake), as a new visitor
//! would. Every phase is classified separately, which a pooled high-level client cannot do:
//! resolution, connect and handshake failures are `unreachable`; a rejected certificate or an
//! answer that is not HTTP is `error`. Bodies are read up to a cap and the rest is never
//! downloaded, so an endless body costs at most [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use mesh_proto::Status;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use url::Url;

use super::net::{self, ConnectError, TlsFailure, describe_io};

/// The User-Agent of every probe.
pub const USER_AGENT_VALUE: &str = concat!("pom/", env!("CARGO_PKG_VERSION"));

/// One request.
#[derive(Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// The absolute http or https URL.
    pub url: &'a Url,
    /// Extra headers; they replace the defaults (`Host`, `User-Agent`, `Accept`) of the same name.
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// The body (empty for none).
    pub body: Bytes,
    /// The TLS config for https URLs.
    pub tls: &'a Arc<ClientConfig>,
    /// The most body bytes to read.
    pub max_body: usize,
    /// The `User-Agent`; `None`: [`USER_AGENT_VALUE`].
    pub user_agent: Option<&'a HeaderValue>,
}

/// An answer, with its body cut at the cap.
#[derive(Debug)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, at most `max_body` bytes.
    pub body: Bytes,
    /// Whether the body was longer than the cap.
    pub truncated: bool,
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Resolution or TCP connect failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The TLS handshake failed or the certificate was rejected.
    #[error(transparent)]
    Tls(#[from] TlsFailure),
    /// The server sent something that is not HTTP.
    #[error("invalid HTTP response: {0}")]
    Protocol(String),
    /// The connection ended before a complete answer.
    #[error("{0}")]
    Closed(String),
    /// The URL cannot be requested (not http or https, no host).
    #[error("cannot request {0}")]
    Url(String),
}

impl HttpError {
    /// The status this failure means, per the status model: the server answered wrongly
    /// (`error`) or gave no usable answer (`unreachable`).
    pub fn status(&self) -> Status {
        match self {
            Self::Tls(TlsFailure::Certificate(_)) | Self::Protocol(_) | Self::Url(_) => {
                Status::Error
            }
            Self::Connect(_) | Self::Tls(TlsFailure::Handshake(_)) | Self::Closed(_) => {
                Status::Unreachable
            }
        }
    }
}

/// Sends one request on a fresh connection and reads the answer.
pub async fn send(req: &Request<'_>) -> Result<Response, HttpError> {
    let url = req.url;
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(HttpError::Url(format!("{url}: no host"))),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| HttpError::Url(format!("{url}: no port")))?;
    let stream = net::connect(&host, port).await?;
    match url.scheme() {
        "http" => exchange(stream, req).await,
        "https" => {
            let tls = net::tls_handshake(stream, &host, req.tls.clone()).await?;
            exchange(tls, req).await
        }
        other => Err(HttpError::Url(format!(
            "{url}: scheme {other} is not http or https"
        ))),
    }
}

/// Aborts the connection task when the request is done, whatever the server still sends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange<S>(io: S, req: &Request<'_>) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .map_err(classify)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));

    let url = req.url;
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut request = hyper::Request::builder()
        .method(req.method.clone())
        .uri(target)
        .body(Full::new(req.body.clone()))
        .map_err(|e| HttpError::Url(format!("{url}: {e}")))?;
    let headers = request.headers_mut();
    let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
    if let Ok(value) = HeaderValue::from_str(authority) {
        headers.insert(HOST, value);
    }
    headers.insert(
        USER_AGENT,
        req.user_agent
            .cloned()
            .unwrap_or(HeaderValue::from_static(USER_AGENT_VALUE)),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    for (name, value) in req.headers {
        headers.insert(name.clone(), value.clone());
    }

    let response = sender.send_request(request).await.map_err(classify)?;
    let (parts, mut body) = response.into_parts();
    let mut buf = BytesMut::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(classify)?.into_data() else {
            continue; // trailers
        };
        let room = req.max_body - buf.len();
        if data.len() > room {
            buf.extend_from_slice(&data[..room]);
            truncated = true;
            break;
        }
        buf.extend_from_slice(&data);
    }
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body: buf.freeze(),
        truncated,
    })
}

fn classify(e: hyper::Error) -> HttpError {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return HttpError::Protocol(e.to_string());
    }
    let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
    if let Some(io) = io {
        return HttpError::Closed(describe_io(io));
    }
    if e.is_incomplete_message() {
        return HttpError::Closed("connection closed before a complete response".to_owned());
    }
    HttpError::Closed(e.to_string())
}
