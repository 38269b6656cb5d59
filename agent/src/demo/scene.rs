//! The world the demo's agents watch, in this process: two sites to probe and a webhook sink.
//!
//! - **Sites** ([`Site`]) answer `GET /health` with a status the story sets (200, then 503).
//!   They know each agent by the `User-Agent` of its probes (`pom/0.1.0 (agent vps)`), so they
//!   can play a network that no longer reaches one agent: its requests hang, with no answer,
//!   until its probe times out and counts the site `unreachable`.
//! - **The sink** ([`Sink`]) receives the agents' webhook alerts, keeps them, and has the
//!   narrator print each one as it arrives. It hears every agent, the cut-off one too, so any
//!   alert an agent sends shows at once.
//!
//! Everything listens on 127.0.0.1 and stops when dropped.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use serde_json::Value;

use super::narrator::Narrator;
use crate::testbed::http::TestServer;

/// How long a site keeps a cut-off agent's request without answering: far beyond any probe
/// timeout of the demo, so the probe gives up first.
const HANG: Duration = Duration::from_secs(10);

/// The agents whose network is cut: the sites do not answer them.
#[derive(Debug, Clone, Default)]
pub struct CutOff(Arc<Mutex<BTreeSet<String>>>);

impl CutOff {
    /// Cuts `agent` off (`true`) or lets it through again.
    pub fn set(&self, agent: &str, cut: bool) {
        let mut set = self.lock();
        if cut {
            set.insert(agent.to_owned());
        } else {
            set.remove(agent);
        }
    }

    /// Whether `agent` is cut off.
    pub fn contains(&self, agent: &str) -> bool {
        self.lock().contains(agent)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct SiteState {
    status: AtomicU16,
    cut: CutOff,
}

/// A site with a health endpoint. See the [module docs](self).
#[derive(Debug)]
pub struct Site {
    state: Arc<SiteState>,
    server: TestServer,
}

impl Site {
    /// Starts a site answering 200, that does not answer the agents in `cut`.
    pub async fn start(cut: CutOff) -> io::Result<Self> {
        let state = Arc::new(SiteState {
            status: AtomicU16::new(200),
            cut,
        });
        let router = Router::new()
            .route("/health", get(health))
            .with_state(state.clone());
        let server = TestServer::http(router).await?;
        Ok(Self { state, server })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Makes `/health` answer `status` from now on.
    pub fn answer(&self, status: StatusCode) {
        self.state.status.store(status.as_u16(), Ordering::SeqCst);
    }
}

async fn health(State(site): State<Arc<SiteState>>, headers: HeaderMap) -> StatusCode {
    if agent_of(&headers).is_some_and(|agent| site.cut.contains(agent)) {
        // The site plays a dead network for this agent: no answer before its probe gives up.
        tokio::time::sleep(HANG).await;
    }
    StatusCode::from_u16(site.status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The agent named in a probe's `User-Agent`: `pom/0.1.0 (agent NAME)`.
fn agent_of(headers: &HeaderMap) -> Option<&str> {
    let ua = headers.get(header::USER_AGENT)?.to_str().ok()?;
    ua.rsplit_once("(agent ")?.1.strip_suffix(')')
}

/// One alert the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The webhook payload.
    pub alert: Value,
    /// When it arrived, since the demo began.
    pub at: Duration,
}

#[derive(Debug)]
struct SinkState {
    alerts: Mutex<Vec<Received>>,
    narrator: Arc<Narrator>,
}

/// The webhook sink. See the [module docs](self).
#[derive(Debug)]
pub struct Sink {
    state: Arc<SinkState>,
    server: TestServer,
}

impl Sink {
    /// Starts the sink; `narrator` prints what arrives.
    pub async fn start(narrator: Arc<Narrator>) -> io::Result<Self> {
        let state = Arc::new(SinkState {
            alerts: Mutex::new(Vec::new()),
            narrator,
        });
        let router = Router::new()
            .route("/alerts", post(receive))
            .with_state(state.clone());
        let server = TestServer::http(router).await?;
        Ok(Self { state, server })
    }

    /// The webhook URL.
    pub fn url(&self) -> String {
        format!("http://{}/alerts", self.server.addr())
    }

    /// Every alert received so far, in order of arrival.
    pub fn alerts(&self) -> Vec<Received> {
        self.state
            .alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The alerts received about `check` with `event` (`firing`, `resolved`).
    pub fn matching(&self, check: &str, event: &str) -> Vec<Received> {
        self.alerts()
            .into_iter()
            .filter(|r| r.alert["check"] == check && r.alert["event"] == event)
            .collect()
    }
}

async fn receive(State(sink): State<Arc<SinkState>>, body: String) -> StatusCode {
    let Ok(alert) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    sink.narrator.alert(&alert);
    let at = sink.narrator.elapsed();
    sink.alerts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received { alert, at });
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_read_from_the_user_agent() {
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, "pom/0.1.0 (agent vps)".parse().unwrap());
        assert_eq!(agent_of(&headers), Some("vps"));
        headers.insert(header::USER_AGENT, "curl/8.0".parse().unwrap());
        assert_eq!(agent_of(&headers), None);
    }
}
