//! The status board: what the agent knows right now about every check, and the counters the
//! API and `/metrics` show.
//!
//! The monitor is the only writer of check states; the API and the metrics renderer read them.
//! Readers take a short read lock and copy what they need, so a slow HTTP client never holds
//! the monitor up. Push-heartbeat pings are written by the API (`POST /api/heartbeats/{name}`)
//! and read by the monitor.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use mesh_proto::{CheckId, QuorumPolicy, Status, Timestamp, Verdict};

use crate::mesh::PeerInfo;
use serde::Serialize;

/// The state of one check, as `/api/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckState {
    /// The check id.
    pub id: CheckId,
    /// The target.
    pub target: String,
    /// The check kind.
    pub kind: String,
    /// This agent's own latest status (`None` before the first run).
    pub status: Option<Status>,
    /// What the agents conclude.
    pub verdict: Verdict,
    /// Every agent's latest status of this check.
    pub votes: BTreeMap<String, Status>,
    /// When this agent last ran it (RFC 3339 in the API).
    #[serde(skip)]
    pub last_checked: Option<Timestamp>,
    /// How long the latest run took.
    pub latency_ms: Option<u64>,
    /// One line about the latest run.
    pub detail: String,
    /// The leaf certificate's expiry (TLS checks), seconds since the epoch.
    #[serde(skip)]
    pub cert_expiry: Option<i64>,
    /// The domain registration's expiry (WHOIS checks), seconds since the epoch.
    #[serde(skip)]
    pub domain_expiry: Option<i64>,
    /// How long an observation counts as fresh (2 × interval + timeout); `None`: always (push
    /// heartbeats, judged every round).
    #[serde(skip)]
    pub fresh_for_ms: Option<i64>,
    /// In a mesh, the verdict from every agent's votes, as of the monitor's latest round.
    #[serde(skip)]
    pub mesh_verdict: Option<Verdict>,
}

impl CheckState {
    /// A check not run yet.
    pub fn new(id: CheckId, fresh_for_ms: Option<i64>) -> Self {
        Self {
            target: id.target().to_owned(),
            kind: id.kind().to_string(),
            id,
            status: None,
            verdict: Verdict::Unknown,
            votes: BTreeMap::new(),
            last_checked: None,
            latency_ms: None,
            detail: String::new(),
            cert_expiry: None,
            domain_expiry: None,
            fresh_for_ms,
            mesh_verdict: None,
        }
    }
}

/// The mesh as `/api/mesh` shows it, as of the monitor's latest round.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshView {
    /// The quorum policy.
    pub quorum: QuorumPolicy,
    /// How many agents vote now (live, non-isolated, this one included).
    pub voters: usize,
    /// Every peer.
    pub peers: Vec<PeerInfo>,
    /// Frames dropped because a peer's queue was full.
    pub dropped_frames: u64,
    /// Notification-log entries being sent and sent, across the mesh, as this agent knows them.
    pub log: (usize, usize),
}

/// Counters, exported as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Alerts a channel accepted, by channel name.
    alerts_sent: Mutex<BTreeMap<String, u64>>,
    /// Outbox rows not delivered yet, as last counted.
    pub outbox_pending: AtomicU64,
    /// Start-time drift of probe runs, as a histogram over [`DELAY_BUCKETS_MS`].
    pub start_delay: Histogram,
    /// When the monitor last went round its loop (Unix ms): the watchdog's sign of life.
    pub monitor_alive_ms: AtomicI64,
}

impl Counters {
    /// Counts one delivered alert on `channel`.
    pub fn alert_sent(&self, channel: &str) {
        let mut sent = self
            .alerts_sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *sent.entry(channel.to_owned()).or_default() += 1;
    }

    /// Alerts delivered so far, by channel.
    pub fn alerts_sent(&self) -> BTreeMap<String, u64> {
        self.alerts_sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The upper bounds, in milliseconds, of the start-delay histogram's buckets.
pub const DELAY_BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 250, 1000, 5000];

/// A fixed-bucket histogram of milliseconds, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; DELAY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one value.
    pub fn observe(&self, d: std::time::Duration) {
        let ms = d.as_millis();
        for (bound, bucket) in DELAY_BUCKETS_MS.iter().zip(&self.buckets) {
            if ms <= u128::from(*bound) {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bucket (as Prometheus wants them), the total count and the sum in
    /// seconds.
    pub fn snapshot(&self) -> (Vec<(u64, u64)>, u64, f64) {
        let buckets = DELAY_BUCKETS_MS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        #[allow(clippy::cast_precision_loss)] // a metric, not an account
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, self.count.load(Ordering::Relaxed), sum)
    }
}

/// The board. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Board {
    checks: RwLock<BTreeMap<CheckId, CheckState>>,
    pings: Mutex<BTreeMap<String, Timestamp>>,
    /// Whether this agent sees every target unreachable (its `monitoring_offline` is open).
    isolated: AtomicBool,
    /// The mesh, when there is one.
    mesh: RwLock<Option<MeshView>>,
    /// Counters for metrics.
    pub counters: Arc<Counters>,
}

impl Board {
    /// Replaces the set of checks (start-up and reload), each with its freshness window,
    /// keeping what is known about those that stay.
    pub fn set_checks(&self, ids: impl IntoIterator<Item = (CheckId, Option<i64>)>) {
        let mut checks = self.checks.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = BTreeMap::new();
        for (id, fresh_for_ms) in ids {
            let mut state = checks
                .remove(&id)
                .unwrap_or_else(|| CheckState::new(id.clone(), fresh_for_ms));
            state.fresh_for_ms = fresh_for_ms;
            next.insert(id, state);
        }
        *checks = next;
    }

    /// Records whether this agent is isolated.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::Relaxed);
    }

    /// Whether this agent is isolated.
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }

    /// Changes one check's state, if it is on the board.
    pub fn update(&self, id: &CheckId, change: impl FnOnce(&mut CheckState)) {
        let mut checks = self.checks.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = checks.get_mut(id) {
            change(state);
        }
    }

    /// A copy of every check's state at `now`, in id order, with its verdict: a stale
    /// observation, or any observation of an isolated agent, gives no verdict.
    pub fn checks(&self, now: Timestamp) -> Vec<CheckState> {
        let isolated = self.is_isolated();
        self.checks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|c| {
                let mut c = c.clone();
                let fresh = match (c.last_checked, c.fresh_for_ms) {
                    (Some(at), Some(window)) => now.millis_since(at) < window,
                    _ => true,
                };
                c.verdict = match c.mesh_verdict {
                    Some(_) if isolated => Verdict::Unknown,
                    Some(v) => v,
                    None => Verdict::alone(c.status, fresh, isolated),
                };
                c
            })
            .collect()
    }

    /// Replaces the mesh view.
    pub fn set_mesh(&self, view: MeshView) {
        *self.mesh.write().unwrap_or_else(PoisonError::into_inner) = Some(view);
    }

    /// The mesh view (`None` without a mesh).
    pub fn mesh(&self) -> Option<MeshView> {
        self.mesh
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a push-heartbeat ping (never moving a heartbeat's time backwards).
    pub fn ping(&self, name: &str, at: Timestamp) {
        let mut pings = self.pings.lock().unwrap_or_else(PoisonError::into_inner);
        let latest = pings.entry(name.to_owned()).or_insert(at);
        *latest = (*latest).max(at);
    }

    /// The latest ping of every heartbeat that got one.
    pub fn pings(&self) -> BTreeMap<String, Timestamp> {
        self.pings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
