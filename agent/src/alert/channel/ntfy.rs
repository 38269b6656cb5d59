//! The `ntfy` channel: a `POST {url}/{topic}` whose body is the alert text, with ntfy's
//! headers: `Title` (the subject), `Priority` (5 for a firing `error` or `unreachable`, 4 for a
//! firing `degraded`, 3 otherwise and on resolve), `Tags` (`rotating_light` firing,
//! `white_check_mark` resolved), `Click` (the runbook) and, for a protected topic,
//! `Authorization: Bearer …`.
//!
//! Header values must be ASCII: a title with other characters is sent RFC 2047-encoded
//! (`=?UTF-8?B?…?=`), which ntfy decodes. The body is cut below ntfy's 4096-byte message limit,
//! past which ntfy would turn it into an attachment.

use bytes::Bytes;
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use mesh_proto::{AlertEvent, Status};

use crate::alert::Alert;
use crate::config::NtfyChannel;

use super::http::{self, Client, Endpoint};
use super::{ChannelError, DeliveryError, Env, Secret};

const TITLE: HeaderName = HeaderName::from_static("title");
const PRIORITY: HeaderName = HeaderName::from_static("priority");
const TAGS: HeaderName = HeaderName::from_static("tags");
const CLICK: HeaderName = HeaderName::from_static("click");

/// The most body bytes sent (ntfy's limit is 4096).
const MAX_MESSAGE: usize = 4000;

/// `type = "ntfy"`.
#[derive(Debug)]
pub(super) struct Ntfy {
    client: Client,
    endpoint: Endpoint,
    token: Option<(Secret<String>, Secret<HeaderValue>)>,
}

impl Ntfy {
    pub(super) fn new(config: &NtfyChannel, env: &Env<'_>) -> Result<Self, ChannelError> {
        let base = env.public_url("url", &config.url)?;
        if config.topic.is_empty() || config.topic.contains('/') {
            return Err(env.invalid("topic", "expected a topic name without '/'"));
        }
        let token = match &config.token_env {
            Some(var) => Some(env.header(var, "Bearer ")?),
            None => None,
        };
        Ok(Self {
            client: env.client()?,
            endpoint: Endpoint::public(http::join(&base, &[&config.topic])),
            token,
        })
    }

    pub(super) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let (priority, tag) = match (alert.event, alert.status) {
            (AlertEvent::Firing, Status::Error | Status::Unreachable) => ("5", "rotating_light"),
            (AlertEvent::Firing, Status::Degraded) => ("4", "rotating_light"),
            (AlertEvent::Firing, Status::Operational) => ("3", "rotating_light"),
            (AlertEvent::Resolved, _) => ("3", "white_check_mark"),
        };
        let mut headers = vec![
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (TITLE, header_text(&alert.subject())),
            (PRIORITY, HeaderValue::from_static(priority)),
            (TAGS, HeaderValue::from_static(tag)),
        ];
        if let Ok(click) = HeaderValue::from_str(&alert.runbook)
            && !alert.runbook.is_empty()
        {
            headers.push((CLICK, click));
        }
        if let Some((_, authorization)) = &self.token {
            headers.push((AUTHORIZATION, authorization.expose().clone()));
        }
        let body = cut(alert.text(), MAX_MESSAGE);
        self.client
            .send(&Method::POST, &self.endpoint, &headers, Bytes::from(body))
            .await?;
        Ok(())
    }

    pub(super) fn secrets(&self) -> Vec<&str> {
        self.token
            .iter()
            .map(|(token, _)| token.expose().as_str())
            .collect()
    }
}

/// `text` as a header value: line breaks and other controls become spaces, and text that is
/// not plain ASCII is RFC 2047-encoded.
fn header_text(text: &str) -> HeaderValue {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.is_ascii()
        && let Ok(value) = HeaderValue::from_str(&flat)
    {
        return value;
    }
    let encoded = format!("=?UTF-8?B?{}?=", base64(flat.as_bytes()));
    // Base64 and the markers are visible ASCII, which is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static("PoM alert"))
}

/// `text` cut to at most `max` bytes, at a character boundary, marked with `…` when cut.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    #[test]
    fn titles_are_valid_headers() {
        assert_eq!(header_text("[FIRING] a: b\r\nc"), "[FIRING] a: b  c");
        assert_eq!(header_text("ü"), "=?UTF-8?B?w7w=?=");
    }

    #[test]
    fn long_bodies_are_cut_at_a_character() {
        assert_eq!(cut("abc".to_owned(), 10), "abc");
        let long = cut("é".repeat(3000), MAX_MESSAGE);
        assert!(long.len() <= MAX_MESSAGE);
        assert!(long.ends_with('…'));
    }
}
