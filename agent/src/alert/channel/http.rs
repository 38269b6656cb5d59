//! What the HTTP channels share: the client (the probes' own HTTP/1.1 client, over the system
//! trust roots), endpoints that know how to show themselves without their secret, and the
//! reading of an answer into success, a retryable failure or a permanent one.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use rustls::ClientConfig;
use url::Url;

use super::DeliveryError;
use crate::probe::http::{self, HttpError, Request, Response};

/// The most answer bytes read: enough for any error document a receiver sends.
const MAX_ANSWER: usize = 64 * 1024;

/// The most characters of an answer quoted in an error message.
const QUOTED: usize = 300;

/// The `Content-Type` of every JSON request.
pub(super) const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Sends requests over HTTP/1.1 or HTTPS (system roots); one connection per request.
#[derive(Clone)]
pub(super) struct Client {
    tls: Arc<ClientConfig>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// A URL to send to, and how error messages and `Debug` show it.
pub(super) struct Endpoint {
    url: Url,
    shown: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Endpoint {
    /// A URL that is no secret; it is shown without user info, query or fragment, which may
    /// still hold credentials.
    pub(super) fn public(url: Url) -> Self {
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        Self {
            shown: shown.to_string(),
            url,
        }
    }

    /// A URL that is itself a credential (a Slack or secret webhook URL): it is shown as its
    /// scheme, host and port only.
    pub(super) fn secret(url: Url) -> Self {
        let shown = format!(
            "{}://{}/<redacted>",
            url.scheme(),
            &url[url::Position::BeforeHost..url::Position::AfterPort]
        );
        Self { url, shown }
    }

    /// How the endpoint appears in messages.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }
}

/// Accepts http and https URLs with a host; says what is wrong otherwise.
pub(super) fn check_scheme(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(()),
        "http" | "https" => Err("the URL has no host".to_owned()),
        other => Err(format!("expected an http or https URL, not {other}:")),
    }
}

/// `base` with `segments` appended to its path, each percent-encoded as a whole (only
/// `A-Z a-z 0-9 - . _ ~` stay as they are), so a `/`, `:` or `!` inside a segment cannot change
/// the path. A trailing slash of `base` is dropped first; its query is kept.
pub(super) fn join(base: &Url, segments: &[&str]) -> Url {
    let mut path = base.path().trim_end_matches('/').to_owned();
    for segment in segments {
        path.push('/');
        encode_segment(segment, &mut path);
    }
    let mut url = base.clone();
    url.set_path(&path);
    url.set_fragment(None);
    url
}

fn encode_segment(segment: &str, out: &mut String) {
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl Client {
    pub(super) fn new(tls: Arc<ClientConfig>) -> Self {
        Self { tls }
    }

    /// Sends one request and returns a 2xx answer; anything else is a [`DeliveryError`] that
    /// names the endpoint as [`Endpoint::shown`] does.
    pub(super) async fn send(
        &self,
        method: &Method,
        endpoint: &Endpoint,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Response, DeliveryError> {
        let request = Request {
            method,
            url: &endpoint.url,
            headers,
            body,
            tls: &self.tls,
            max_body: MAX_ANSWER,
            user_agent: None,
        };
        let answer = http::send(&request).await.map_err(|e| match e {
            // Its text quotes the URL, which may be the secret.
            HttpError::Url(_) => DeliveryError::permanent(format!(
                "{method} {}: the URL cannot be requested",
                endpoint.shown
            )),
            // Resolution, connection, TLS and protocol failures name the host at most.
            other => DeliveryError::retry(format!("{method} {}: {other}", endpoint.shown)),
        })?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(refused(method, endpoint, answer.status, &answer.body))
        }
    }

    /// POSTs `body` as JSON.
    pub(super) async fn post_json(
        &self,
        endpoint: &Endpoint,
        body: &serde_json::Value,
    ) -> Result<Response, DeliveryError> {
        self.send(
            &Method::POST,
            endpoint,
            &[(CONTENT_TYPE, JSON)],
            Bytes::from(body.to_string()),
        )
        .await
    }
}

/// The error for a non-2xx answer: retryable for 5xx, 429 (rate limited) and 408 (the server
/// timed out waiting); permanent for every other status, which needs a person to fix the
/// channel.
pub(super) fn refused(
    method: &Method,
    endpoint: &Endpoint,
    status: StatusCode,
    body: &[u8],
) -> DeliveryError {
    let message = format!(
        "{method} {}: answered {status}{}",
        endpoint.shown,
        quote(body)
    );
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        DeliveryError::retry(message)
    } else {
        DeliveryError::permanent(message)
    }
}

/// `: <the start of body>` on one line, or nothing for an empty body.
pub(super) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut one_line: String = flat
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(QUOTED + 1)
        .collect();
    if one_line.is_empty() {
        return String::new();
    }
    if one_line.chars().count() > QUOTED {
        one_line = one_line.chars().take(QUOTED).collect();
        one_line.push('…');
    }
    format!(": {one_line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_segments_are_encoded_whole() {
        let base = Url::parse("https://matrix.example.org/prefix/").unwrap();
        let url = join(
            &base,
            &["_matrix", "rooms", "!abc:example.org", "m.room.message"],
        );
        assert_eq!(
            url.as_str(),
            "https://matrix.example.org/prefix/_matrix/rooms/%21abc%3Aexample.org/m.room.message"
        );
        let url = join(&Url::parse("http://h:1").unwrap(), &["a/b c", "ü"]);
        assert_eq!(url.as_str(), "http://h:1/a%2Fb%20c/%C3%BC");
    }

    #[test]
    fn endpoints_show_no_credentials() {
        let secret = Endpoint::secret(
            Url::parse("https://hooks.slack.com:8443/services/T0/B0/XYZ?x=1").unwrap(),
        );
        assert_eq!(secret.shown(), "https://hooks.slack.com:8443/<redacted>");
        assert_eq!(
            format!("{secret:?}"),
            "https://hooks.slack.com:8443/<redacted>"
        );
        let public = Endpoint::public(Url::parse("https://u:pw@am.example/a?token=t#f").unwrap());
        assert_eq!(public.shown(), "https://am.example/a");
    }

    #[test]
    fn answers_are_quoted_on_one_bounded_line() {
        assert_eq!(quote(b""), "");
        assert_eq!(quote(b"  no\r\n service \x07"), ": no service");
        let long = quote("é".repeat(1000).as_bytes());
        assert_eq!(long.chars().count(), 2 + QUOTED + 1);
        assert_eq!(quote(&[0xff, b'x']), ": \u{fffd}x");
    }

    #[test]
    fn statuses_are_classified() {
        let endpoint = Endpoint::public(Url::parse("http://h/").unwrap());
        let retry = |code: u16| {
            refused(
                &Method::POST,
                &endpoint,
                StatusCode::from_u16(code).unwrap(),
                b"",
            )
            .retryable
        };
        assert!(retry(500) && retry(503) && retry(429) && retry(408));
        assert!(!retry(400) && !retry(401) && !retry(404) && !retry(422) && !retry(301));
    }
}
