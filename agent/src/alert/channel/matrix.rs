//! The `matrix` channel: an `m.text` message in a room, through the client-server API
//! (`PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}`).
//!
//! The transaction id is [`delivery_key`](super::delivery_key): the same for every attempt at
//! one notification, so a retry after a lost answer does not post twice (the homeserver
//! de-duplicates by transaction id per access token), and different for the next reminder or
//! the resolve.
//!
//! The room may be given by id (`!abc:example.org`) or by alias (`#ops:example.org`). An alias
//! is resolved to its id (`GET /_matrix/client/v3/directory/room/{alias}`) at the first
//! delivery, and the id is kept for the next ones.

use std::sync::Mutex;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use url::Url;

use crate::alert::Alert;
use crate::config::MatrixChannel;

use super::http::{self, Client, Endpoint, JSON};
use super::{ChannelError, DeliveryError, Env, Secret, delivery_key};

/// `type = "matrix"`.
#[derive(Debug)]
pub(super) struct Matrix {
    client: Client,
    homeserver: Url,
    /// The room id or alias, as configured.
    room: String,
    /// The room id an alias resolved to.
    resolved: Mutex<Option<String>>,
    token: Secret<String>,
    authorization: Secret<HeaderValue>,
}

/// The answer to a room alias lookup.
#[derive(Deserialize)]
struct Directory {
    room_id: String,
}

impl Matrix {
    pub(super) fn new(config: &MatrixChannel, env: &Env<'_>) -> Result<Self, ChannelError> {
        let homeserver = env.public_url("homeserver", &config.homeserver)?;
        if config.room.is_empty() {
            return Err(env.invalid("room", "expected a room id such as \"!abc:example.org\""));
        }
        let (token, authorization) = env.header(&config.token_env, "Bearer ")?;
        Ok(Self {
            client: env.client()?,
            homeserver,
            room: config.room.clone(),
            resolved: Mutex::new(None),
            token,
            authorization,
        })
    }

    pub(super) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let room = self.room_id().await?;
        let txn = delivery_key(alert);
        let endpoint = Endpoint::public(http::join(
            &self.homeserver,
            &[
                "_matrix",
                "client",
                "v3",
                "rooms",
                &room,
                "send",
                "m.room.message",
                &txn,
            ],
        ));
        let body = serde_json::json!({ "msgtype": "m.text", "body": alert.text() });
        self.client
            .send(
                &Method::PUT,
                &endpoint,
                &[
                    (AUTHORIZATION, self.authorization.expose().clone()),
                    (CONTENT_TYPE, JSON),
                ],
                Bytes::from(body.to_string()),
            )
            .await?;
        Ok(())
    }

    /// The room id: the configured one, or what the configured alias resolves to.
    async fn room_id(&self) -> Result<String, DeliveryError> {
        if !self.room.starts_with('#') {
            return Ok(self.room.clone());
        }
        if let Some(id) = self.cached() {
            return Ok(id);
        }
        let endpoint = Endpoint::public(http::join(
            &self.homeserver,
            &["_matrix", "client", "v3", "directory", "room", &self.room],
        ));
        let answer = self
            .client
            .send(
                &Method::GET,
                &endpoint,
                &[(AUTHORIZATION, self.authorization.expose().clone())],
                Bytes::new(),
            )
            .await?;
        let id = serde_json::from_slice::<Directory>(&answer.body)
            .map_err(|_| {
                DeliveryError::permanent(format!(
                    "GET {}: the answer holds no room_id{}",
                    endpoint.shown(),
                    http::quote(&answer.body)
                ))
            })?
            .room_id;
        *self.resolved.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
        Ok(id)
    }

    fn cached(&self) -> Option<String> {
        // Only ever set to a complete value; a panic elsewhere cannot leave it half-written.
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn secrets(&self) -> Vec<&str> {
        vec![self.token.expose()]
    }
}
