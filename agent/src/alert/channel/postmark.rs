//! The `postmark` channel: one plain-text email through Postmark's API (`POST {api_url}/email`).
//!
//! Postmark answers 200 with `{"ErrorCode": 0, …}` when it accepted the email. Any other
//! `ErrorCode` (in a 200 or, as Postmark usually does, a 422) is a refusal that a retry will not
//! change: an invalid address, an inactive recipient, an unconfirmed sender signature. 429 and
//! 5xx are retried.

use bytes::Bytes;
use hyper::Method;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::alert::Alert;
use crate::config::PostmarkChannel;

use super::http::{self, Client, Endpoint, JSON};
use super::{ChannelError, DeliveryError, Env, Secret};

/// The header carrying the server token.
const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-postmark-server-token");

/// `type = "postmark"`.
#[derive(Debug)]
pub(super) struct Postmark {
    client: Client,
    endpoint: Endpoint,
    token: Secret<String>,
    token_header: Secret<HeaderValue>,
    from: String,
    to: String,
}

/// The part of Postmark's answer we read.
#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "ErrorCode")]
    error_code: i64,
    #[serde(rename = "Message", default)]
    message: String,
}

impl Postmark {
    pub(super) fn new(config: &PostmarkChannel, env: &Env<'_>) -> Result<Self, ChannelError> {
        let base = env.public_url("api_url", &config.api_url)?;
        if config.to.is_empty() {
            return Err(env.invalid("to", "expected at least one recipient address"));
        }
        let (token, token_header) = env.header(&config.token_env, "")?;
        Ok(Self {
            client: env.client()?,
            endpoint: Endpoint::public(http::join(&base, &["email"])),
            token,
            token_header,
            from: config.from.clone(),
            to: config.to.join(","),
        })
    }

    pub(super) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = serde_json::json!({
            "From": self.from,
            "To": self.to,
            "Subject": alert.subject(),
            "TextBody": alert.text(),
            "MessageStream": "outbound",
        });
        let answer = self
            .client
            .send(
                &Method::POST,
                &self.endpoint,
                &[
                    (ACCEPT, JSON),
                    (CONTENT_TYPE, JSON),
                    (TOKEN_HEADER, self.token_header.expose().clone()),
                ],
                Bytes::from(body.to_string()),
            )
            .await?;
        match serde_json::from_slice::<Answer>(&answer.body) {
            Ok(Answer { error_code: 0, .. }) => Ok(()),
            Ok(Answer {
                error_code,
                message,
            }) => Err(DeliveryError::permanent(format!(
                "POST {}: Postmark refused the email: ErrorCode {error_code}{}",
                self.endpoint.shown(),
                http::quote(message.as_bytes())
            ))),
            Err(_) => Err(DeliveryError::permanent(format!(
                "POST {}: answered {} without Postmark's ErrorCode{}",
                self.endpoint.shown(),
                answer.status,
                http::quote(&answer.body)
            ))),
        }
    }

    pub(super) fn secrets(&self) -> Vec<&str> {
        vec![self.token.expose()]
    }
}
