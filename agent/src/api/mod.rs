//! The HTTP API (DESIGN.md, "HTTP API"; a contract): `fn router(state) -> Router`.
//!
//! | route | auth |
//! |---|---|
//! | `GET /api/health` | none; describes this agent only, never its targets or peers |
//! | `GET /api/status` | bearer |
//! | `GET /api/mesh` | bearer |
//! | `POST /api/heartbeats/{name}` | bearer |
//! | `GET /metrics` | none (bind the API privately) |
//!
//! The token is compared in constant time, and a missing token in the environment refuses
//! every authenticated request rather than opening them. Every error is JSON
//! (`{"error": "..."}`) with a 4xx status; bodies over [`MAX_BODY`] get 413.

mod metrics;

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mesh_proto::QuorumPolicy;
use serde_json::{Value, json};

use crate::board::Board;
use crate::clock::rfc3339;
use crate::monitor::now;
use crate::scheduler::SchedulerStats;
use crate::store::StoreHandle;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Who this agent is, for `/api/health` and `/api/mesh`.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// `[agent] name`.
    pub name: String,
    /// The instance id from `data_dir/instance_id`.
    pub instance_id: String,
    /// The agent's version.
    pub version: &'static str,
}

/// The bearer token, replaceable on reload. Its `Debug` never shows it.
#[derive(Default)]
pub struct Token(RwLock<Option<Vec<u8>>>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token; `None` (or empty) refuses every authenticated request.
    pub fn new(token: Option<String>) -> Self {
        let slot = Self::default();
        slot.set(token);
        slot
    }

    /// Replaces the token.
    pub fn set(&self, token: Option<String>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) =
            token.filter(|t| !t.is_empty()).map(String::into_bytes);
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_deref()
            .is_some_and(|expected| constant_time_eq(expected, presented))
    }
}

/// Compares two byte strings without an early exit: the time depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// What the API reads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// This agent.
    pub info: Arc<AgentInfo>,
    /// The bearer token.
    pub token: Arc<Token>,
    /// Check states and counters.
    pub board: Arc<Board>,
    /// Where pings are kept.
    pub store: StoreHandle,
    /// Configured push-heartbeat names (replaced on reload).
    pub heartbeats: Arc<RwLock<BTreeSet<String>>>,
    /// Scheduler counters.
    pub scheduler: Arc<SchedulerStats>,
}

/// The API's routes. See the [module docs](self).
pub fn router(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/api/status", get(status))
        .route("/api/mesh", get(mesh))
        .route("/api/heartbeats/{name}", post(heartbeat))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/api/health", get(health))
        .route("/metrics", get(metrics::render))
        .merge(authed)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A JSON error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(token) if state.token.matches(token) => next.run(request).await,
        _ => {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

async fn health(State(state): State<ApiState>) -> axum::Json<Value> {
    axum::Json(json!({
        "status": "ok",
        "name": state.info.name,
        "instance_id": state.info.instance_id,
        "version": state.info.version,
    }))
}

async fn status(State(state): State<ApiState>) -> axum::Json<Value> {
    let checks: Vec<Value> = state
        .board
        .checks(now())
        .into_iter()
        .map(|c| {
            let mut v = serde_json::to_value(&c).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "last_checked".into(),
                    c.last_checked.map_or(Value::Null, |t| rfc3339(t).into()),
                );
            }
            v
        })
        .collect();
    axum::Json(json!({ "agent": state.info.name, "checks": checks }))
}

async fn mesh(State(state): State<ApiState>) -> axum::Json<Value> {
    let view = state.board.mesh();
    let quorum = view.as_ref().map_or_else(
        || json!({ "policy": "alone", "voters": 1 }),
        |v| {
            let policy = match v.quorum {
                QuorumPolicy::Majority => json!("majority"),
                QuorumPolicy::All => json!("all"),
                QuorumPolicy::Count(n) => json!(n),
            };
            json!({ "policy": policy, "voters": v.voters, "required": v.quorum.required(v.voters) })
        },
    );
    let notifications = view.as_ref().map_or(
        Value::Null,
        |v| json!({ "sending": v.log.0, "sent": v.log.1 }),
    );
    let peers: Vec<Value> = view
        .map(|v| v.peers)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let mut value = serde_json::to_value(&p).unwrap_or(Value::Null);
            if let Some(obj) = value.as_object_mut() {
                obj.insert(
                    "last_heartbeat".into(),
                    p.last_heartbeat.map_or(Value::Null, |t| rfc3339(t).into()),
                );
                obj.insert(
                    "cert_not_after".into(),
                    p.cert_not_after
                        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .map_or(Value::Null, Value::from),
                );
            }
            value
        })
        .collect();
    axum::Json(json!({
        "self": {
            "name": state.info.name,
            "instance_id": state.info.instance_id,
            "version": state.info.version,
            "isolated": state.board.is_isolated(),
            "quorum": quorum,
            "notifications": notifications,
        },
        "peers": peers,
    }))
}

async fn heartbeat(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(rejection) = body {
        return error(rejection.status(), rejection.body_text());
    }
    let known = state
        .heartbeats
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&name);
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            format!("no heartbeat named {name:?} is configured"),
        );
    }
    let at = now();
    state.board.ping(&name, at);
    let stored = match state.store.record_ping(&name, at).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(heartbeat = %name, error = %e,
                "cannot store a heartbeat ping; it counts, but is lost on restart");
            false
        }
    };
    axum::Json(json!({ "heartbeat": name, "at": rfc3339(at), "stored": stored })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn an_unset_or_empty_token_matches_nothing() {
        let token = Token::new(None);
        assert!(!token.matches(b""));
        token.set(Some(String::new()));
        assert!(!token.matches(b""));
        token.set(Some("t".into()));
        assert!(token.matches(b"t"));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }
}
