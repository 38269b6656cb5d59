//! This agent's place in the mesh: the transport, `mesh-proto`'s [`MeshState`], and the rules
//! that need a clock or a socket.
//!
//! The monitor owns the [`Node`] and calls it from its loop, so the mesh state has one writer:
//! - its own probe results go out at once ([`Node::own_observation`]); a check that changes
//!   state also asks the live peers to run it now (ProbeNow), at most once per
//!   [`PROBE_NOW_EVERY`] per check;
//! - transport events come in through [`Node::handle`], which answers with what the monitor
//!   must do (run a check, record a ping);
//! - heartbeats leave every `heartbeat_interval` ([`Node::heartbeat`]);
//! - pages the engine owes are held with their payload until this agent is due to send them
//!   ([`Node::owe`], [`Node::due`]); claims and deliveries are gossiped.
//!
//! A peer asking for probes is limited too: one ProbeNow per check per peer per
//! [`PROBE_NOW_EVERY`], and a budget of [`PROBE_NOW_BURST`] per peer refilled at one per
//! second, so a flood costs the peer its requests, not this agent its probes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use mesh_proto::notify_log::NotificationKey;
use mesh_proto::quorum::{LivenessPolicy, PeerState, QuorumPolicy};
use mesh_proto::{
    AlertEvent, CheckId, CheckKind, ConfigHash, FrameV1, Heartbeat, Hello, LogEntry, LogState,
    MeshSettings, MeshState, Observation, PROTOCOL_VERSION, ProbeNow, Status, Subject, Timestamp,
};
use tokio::sync::mpsc;

use super::tls::MeshTls;
use super::transport::{Event, PeerAddrs, Transport, TransportError};
use crate::alert::Alert;

/// The least time between two ProbeNow requests for one check, each way.
pub const PROBE_NOW_EVERY: Duration = Duration::from_secs(2);
/// ProbeNow requests a peer may make in a burst.
const PROBE_NOW_BURST: f64 = 20.0;
/// How long a position in the notifier order waits for a claim.
pub const TAKEOVER: Duration = Duration::from_secs(3);
/// How far apart two agents' pages of one transition may be and still match.
const MATCH_WINDOW: Duration = Duration::from_secs(60);
/// Clock skew between peers above this raises `clock_skew`.
pub const MAX_CLOCK_SKEW_MS: i64 = 2_000;
/// Log entries older than this are forgotten.
const LOG_RETENTION_MS: i64 = 24 * 3_600_000;
/// Transport events buffered for the monitor.
const EVENT_QUEUE: usize = 4_096;

/// Everything the mesh needs from the config, built (and validated) before anything starts.
#[derive(Debug, Clone)]
pub struct MeshSetup {
    /// This agent's name.
    pub me: String,
    /// The UDP listen address.
    pub listen: SocketAddr,
    /// The certificates.
    pub tls: MeshTls,
    /// The peers: name → `host:port`.
    pub peers: PeerAddrs,
    /// Heartbeat rules.
    pub liveness: LivenessPolicy,
    /// Quorum policy.
    pub quorum: QuorumPolicy,
    /// The shared-config hash.
    pub config_hash: ConfigHash,
    /// This agent's instance id.
    pub instance_id: String,
}

impl MeshSetup {
    fn settings(&self) -> MeshSettings {
        MeshSettings {
            me: self.me.clone(),
            peers: self.peers.keys().cloned().collect(),
            liveness: self.liveness,
            quorum: self.quorum,
            takeover_ms: millis(TAKEOVER),
            match_window_ms: millis(MATCH_WINDOW),
        }
    }

    fn hello(&self, now: Timestamp) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            name: self.me.clone(),
            instance_id: self.instance_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            config_hash: self.config_hash,
            wall_clock: now,
        }
    }
}

/// One peer, as `/api/mesh` and `pom mesh` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerInfo {
    /// Agent name.
    pub name: String,
    /// Configured address.
    pub addr: String,
    /// Liveness.
    pub state: PeerState,
    /// Whether a QUIC connection is up now.
    pub connected: bool,
    /// Whether it says it is isolated.
    pub isolated: bool,
    /// When its latest heartbeat arrived (RFC 3339 in the API).
    #[serde(skip)]
    pub last_heartbeat: Option<Timestamp>,
    /// QUIC's smoothed round-trip time.
    pub rtt_ms: Option<f64>,
    /// Its clock minus ours.
    pub clock_skew_ms: Option<i64>,
    /// Its agent version.
    pub version: Option<String>,
    /// Its shared-config hash (hex).
    pub config_hash: Option<String>,
    /// Whether that hash differs from ours.
    pub config_drift: bool,
    /// When its mesh certificate expires (Unix seconds).
    #[serde(skip)]
    pub cert_not_after: Option<i64>,
    /// UDP bytes sent to and received from it on the current connection.
    #[serde(skip)]
    pub udp_bytes: Option<(u64, u64)>,
}

/// What the monitor must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Run this check now (a peer's ProbeNow).
    RunNow(CheckId),
    /// A push-heartbeat ping that reached a peer.
    Ping(String, Timestamp),
}

/// A page this agent owes, with its payload.
#[derive(Debug, Clone)]
struct Held {
    alert: Alert,
}

/// A claimed page being sent: its delivery is reported by the outbox with the payload's ids.
pub type PayloadIds = (String, String, AlertEvent, u32);

/// This agent in the mesh. See the [module docs](self).
#[derive(Debug)]
pub struct Node {
    setup: MeshSetup,
    state: MeshState,
    transport: Transport,
    events: mpsc::Receiver<Event>,
    seq: u64,
    /// When this agent last asked its peers to run each check.
    asked: HashMap<CheckId, Timestamp>,
    /// When each peer last had each check run, and its request budget.
    served: HashMap<(String, CheckId), Timestamp>,
    budgets: HashMap<String, (f64, Timestamp)>,
    /// Peers' mesh certificate expiries (Unix seconds).
    peer_certs: BTreeMap<String, i64>,
    held: BTreeMap<NotificationKey, Held>,
    sending: HashMap<PayloadIds, NotificationKey>,
    /// The latest ping of each push heartbeat already told to the peers.
    pings_told: BTreeMap<String, Timestamp>,
    /// This agent's latest observation of each check, sent to a peer when it connects.
    latest_own: BTreeMap<CheckId, Observation>,
    /// The configured checks and push heartbeats, as subjects: log entries about anything else
    /// are dropped, so a peer cannot grow the log with made-up subjects.
    subjects: BTreeSet<String>,
}

impl Node {
    /// Starts the transport and an empty view of the mesh with `checks` (id, freshness).
    pub fn start(
        setup: MeshSetup,
        checks: &[(CheckId, i64)],
        heartbeats: &[CheckId],
        now: Timestamp,
    ) -> Result<Self, TransportError> {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let transport = Transport::start(
            setup.listen,
            &setup.tls,
            setup.peers.clone(),
            setup.hello(now),
            tx,
        )?;
        Ok(Self {
            state: MeshState::new(setup.settings(), checks.iter().cloned(), now),
            subjects: subjects(checks, heartbeats),
            setup,
            transport,
            events,
            seq: 0,
            asked: HashMap::new(),
            served: HashMap::new(),
            budgets: HashMap::new(),
            peer_certs: BTreeMap::new(),
            held: BTreeMap::new(),
            sending: HashMap::new(),
            pings_told: BTreeMap::new(),
            latest_own: BTreeMap::new(),
        })
    }

    /// A reloaded config: new peers, rules, checks and certificates.
    pub fn reconfigure(
        &mut self,
        setup: MeshSetup,
        checks: &[(CheckId, i64)],
        heartbeats: &[CheckId],
        now: Timestamp,
    ) -> Result<(), TransportError> {
        self.transport.reload(&setup.tls, setup.peers.clone())?;
        self.transport.set_hello(setup.hello(now));
        self.state
            .reconfigure(setup.settings(), checks.iter().cloned(), now);
        self.subjects = subjects(checks, heartbeats);
        let state = &self.state;
        self.latest_own
            .retain(|id, _| state.votes(id).next().is_some());
        self.peer_certs
            .retain(|name, _| setup.peers.contains_key(name));
        self.setup = setup;
        Ok(())
    }

    /// The mesh state.
    pub fn state(&self) -> &MeshState {
        &self.state
    }

    /// The mesh state, to change.
    pub fn state_mut(&mut self) -> &mut MeshState {
        &mut self.state
    }

    /// The shared-config hash of this agent.
    pub fn config_hash(&self) -> ConfigHash {
        self.setup.config_hash
    }

    /// Every agent's mesh certificate expiry: this one's, then the peers' known so far.
    pub fn cert_expiries(&self) -> impl Iterator<Item = (&str, i64)> {
        std::iter::once((self.setup.me.as_str(), self.setup.tls.not_after))
            .chain(self.peer_certs.iter().map(|(n, t)| (n.as_str(), *t)))
    }

    /// The number of agents in the mesh, this one included.
    pub fn agents_total(&self) -> u32 {
        u32::try_from(self.setup.peers.len() + 1).unwrap_or(u32::MAX)
    }

    /// The next transport event.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// This agent's own observation: recorded as its vote and sent to the peers. `changed`: the
    /// check's status changed, so the peers are asked to run it too.
    ///
    /// While this agent is isolated its observations stay here: they describe its own broken
    /// network, and queued on a half-dead connection they would reach the peers as stale votes
    /// when it comes back.
    pub fn own_observation(&mut self, observation: Observation, changed: bool, now: Timestamp) {
        let me = self.setup.me.clone();
        self.state.observe(&me, observation.clone());
        if self.state.is_isolated() {
            return;
        }
        self.latest_own
            .insert(observation.check.clone(), observation.clone());
        let check = observation.check.clone();
        self.transport
            .broadcast(FrameV1::Observations(vec![observation]));
        if changed {
            let due = self
                .asked
                .get(&check)
                .is_none_or(|at| now.millis_since(*at) >= millis(PROBE_NOW_EVERY));
            if due {
                self.asked.insert(check.clone(), now);
                self.transport
                    .broadcast(FrameV1::ProbeNow(ProbeNow { check }));
            }
        }
    }

    /// Sets whether this agent is isolated. Becoming isolated also forgets the latest own
    /// observations kept for peers that connect: they were made while the network failed.
    pub fn set_isolated(&mut self, isolated: bool) {
        if isolated {
            self.latest_own.clear();
        }
        self.state.set_isolated(isolated);
    }

    /// Tells the peers about push-heartbeat pings they have not heard of.
    pub fn share_pings(&mut self, pings: &BTreeMap<String, Timestamp>) {
        let fresh: Vec<Observation> = pings
            .iter()
            .filter(|(name, at)| self.pings_told.get(*name).is_none_or(|t| t < *at))
            .filter_map(|(name, at)| {
                Some(Observation {
                    check: CheckId::new(name, CheckKind::Heartbeat).ok()?,
                    status: Status::Operational,
                    latency_ms: None,
                    detail: "ping".to_owned(),
                    at: *at,
                })
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        for o in &fresh {
            self.pings_told.insert(o.check.target().to_owned(), o.at);
        }
        self.transport.broadcast(FrameV1::Observations(fresh));
    }

    /// Sends a heartbeat to every connected peer.
    pub fn heartbeat(&mut self, now: Timestamp) {
        self.seq += 1;
        self.transport.broadcast(FrameV1::Heartbeat(Heartbeat {
            seq: self.seq,
            wall_clock: now,
            config_hash: self.setup.config_hash,
            isolated: self.state.is_isolated(),
        }));
    }

    /// Takes one transport event.
    pub fn handle(&mut self, event: Event, now: Timestamp) -> Vec<Effect> {
        match event {
            Event::Connected {
                peer,
                hello,
                cert_not_after,
            } => {
                if hello.config_hash != self.setup.config_hash {
                    tracing::warn!(peer = %peer, theirs = %hello.config_hash, ours = %self.setup.config_hash,
                        "peer runs another shared config (config drift)");
                }
                self.state.on_hello(&peer, hello, now);
                if let Some(t) = cert_not_after {
                    self.peer_certs.insert(peer.clone(), t);
                }
                // Catch the peer up: a heartbeat now, our latest votes, pings and the log.
                self.seq += 1;
                self.transport.send(
                    &peer,
                    FrameV1::Heartbeat(Heartbeat {
                        seq: self.seq,
                        wall_clock: now,
                        config_hash: self.setup.config_hash,
                        isolated: self.state.is_isolated(),
                    }),
                );
                let own: Vec<Observation> = self.latest_own.values().cloned().collect();
                for chunk in own.chunks(mesh_proto::wire::MAX_OBSERVATIONS_PER_FRAME) {
                    self.transport
                        .send(&peer, FrameV1::Observations(chunk.to_vec()));
                }
                self.pings_told.clear(); // re-told at the next round
                let log: Vec<LogEntry> = self.state.log().entries().cloned().collect();
                for chunk in log.chunks(mesh_proto::wire::MAX_LOG_ENTRIES_PER_FRAME) {
                    self.transport
                        .send(&peer, FrameV1::NotificationLog(chunk.to_vec()));
                }
                Vec::new()
            }
            Event::Disconnected { .. } => Vec::new(),
            Event::Frame { peer, frame } => self.frame(&peer, frame, now),
        }
    }

    fn frame(&mut self, peer: &str, frame: FrameV1, now: Timestamp) -> Vec<Effect> {
        match frame {
            FrameV1::Heartbeat(hb) => {
                self.state.on_heartbeat(peer, &hb, now);
                Vec::new()
            }
            FrameV1::Observations(list) => {
                let mut effects = Vec::new();
                for o in list {
                    if o.check.kind() == CheckKind::Heartbeat {
                        effects.push(Effect::Ping(o.check.target().to_owned(), o.at));
                    } else {
                        self.state.observe(peer, o);
                    }
                }
                effects
            }
            FrameV1::ProbeNow(ProbeNow { check }) => {
                if self.allow_probe(peer, &check, now) {
                    vec![Effect::RunNow(check)]
                } else {
                    Vec::new()
                }
            }
            FrameV1::NotificationLog(entries) => {
                for entry in entries {
                    if self.knows(&entry.subject) {
                        self.state.merge_log(entry);
                    } else {
                        tracing::debug!(peer = %peer, subject = %entry.subject,
                            "log entry about something not configured here; dropped");
                    }
                }
                Vec::new()
            }
            FrameV1::Hello(_) | FrameV1::Bye(_) => Vec::new(), // the transport handles these
        }
    }

    /// Whether a log entry about `subject` may be kept: a configured check or push heartbeat,
    /// or a condition of an agent of the mesh.
    fn knows(&self, subject: &str) -> bool {
        match subject.parse::<Subject>() {
            Ok(Subject::Check(_)) => self.subjects.contains(subject),
            Ok(Subject::Agent { agent, .. }) => {
                agent == self.setup.me || self.setup.peers.contains_key(&agent)
            }
            Ok(Subject::MonitoringOffline) | Err(_) => false,
        }
    }

    /// Whether a peer's ProbeNow for `check` is within its limits.
    fn allow_probe(&mut self, peer: &str, check: &CheckId, now: Timestamp) -> bool {
        let (tokens, last) = self
            .budgets
            .entry(peer.to_owned())
            .or_insert((PROBE_NOW_BURST, now));
        #[allow(clippy::cast_precision_loss)] // milliseconds since the last request
        let refill = now.millis_since(*last).max(0) as f64 / 1000.0;
        *tokens = (*tokens + refill).min(PROBE_NOW_BURST);
        *last = now;
        if *tokens < 1.0 {
            return false;
        }
        let key = (peer.to_owned(), check.clone());
        if self
            .served
            .get(&key)
            .is_some_and(|at| now.millis_since(*at) < millis(PROBE_NOW_EVERY))
        {
            return false;
        }
        *tokens -= 1.0;
        if self.served.len() > 65_536 {
            let cutoff = millis(PROBE_NOW_EVERY);
            self.served.retain(|_, at| now.millis_since(*at) < cutoff);
        }
        self.served.insert(key, now);
        true
    }

    /// Holds a page the engine owes, with its payload, until this agent is due to send it.
    pub fn owe(&mut self, key: NotificationKey, alert: Alert, now: Timestamp) {
        self.state.owe(key.clone(), now);
        self.held.insert(key, Held { alert });
    }

    /// The pages this agent sends now, claimed and gossiped. Pages another agent sent are
    /// dropped. Each payload carries the incident id of the first claim, if another agent's.
    pub fn due(&mut self, now: Timestamp) -> Vec<(NotificationKey, Alert)> {
        let due = self.state.due(now);
        let mut out = Vec::new();
        for (key, entry) in due {
            self.transport
                .broadcast(FrameV1::NotificationLog(vec![entry]));
            let Some(held) = self.held.remove(&key) else {
                continue;
            };
            let mut alert = held.alert;
            if let Some(alias) = self.state.incident_alias(&key.incident) {
                alias.clone_into(&mut alert.incident);
            }
            self.sending.insert(
                (
                    alert.check.clone(),
                    alert.incident.clone(),
                    alert.event,
                    alert.repeat,
                ),
                key.clone(),
            );
            out.push((key, alert));
        }
        // Pages covered by someone else's claim are no longer owed.
        let owed: BTreeSet<&NotificationKey> = self.state.owed().collect();
        self.held.retain(|k, _| owed.contains(k));
        out
    }

    /// After a restart: the outbox still holds this page (`ids` are its payload's check,
    /// incident, event and repeat), so this agent renews its claim before any peer hears from
    /// it, and its delivery turns the claim `sent` as usual. Without the renewal the peers would
    /// take the previous instance's claim for dead and send the page too.
    pub fn reclaim(&mut self, ids: PayloadIds, now: Timestamp) {
        let (subject, incident, event, repeat) = ids.clone();
        let key = NotificationKey {
            subject,
            incident,
            event,
            repeat,
        };
        let entry = self.state.reclaim(key.clone(), now);
        self.transport
            .broadcast(FrameV1::NotificationLog(vec![entry]));
        self.sending.insert(ids, key);
    }

    /// The outbox delivered a page to a channel: the claim becomes `sent`, and is gossiped.
    pub fn delivered(&mut self, ids: &PayloadIds, now: Timestamp) {
        if let Some(key) = self.sending.remove(ids) {
            let entry = self.state.sent(&key, now);
            self.transport
                .broadcast(FrameV1::NotificationLog(vec![entry]));
        }
    }

    /// Forgets what is too old to matter.
    pub fn prune(&mut self, now: Timestamp) {
        self.state.prune(now.add_millis(-LOG_RETENTION_MS));
        let cutoff = millis(PROBE_NOW_EVERY);
        self.served.retain(|_, at| now.millis_since(*at) < cutoff);
        self.asked.retain(|_, at| now.millis_since(*at) < cutoff);
    }

    /// Every peer, for `/api/mesh`.
    pub fn peers(&self, now: Timestamp) -> Vec<PeerInfo> {
        self.state
            .peers()
            .map(|(name, view)| PeerInfo {
                name: name.to_owned(),
                addr: self.setup.peers.get(name).cloned().unwrap_or_default(),
                state: self.state.peer_state(name, now),
                connected: self.transport.is_connected(name),
                isolated: view.isolated,
                last_heartbeat: view.last_heartbeat,
                rtt_ms: self.transport.rtt(name).map(|d| d.as_secs_f64() * 1000.0),
                clock_skew_ms: view.clock_skew_ms,
                version: view.hello.as_ref().map(|h| h.agent_version.clone()),
                config_hash: view.config_hash.map(|h| h.to_string()),
                config_drift: view
                    .config_hash
                    .is_some_and(|h| h != self.setup.config_hash),
                cert_not_after: self.peer_certs.get(name).copied(),
                udp_bytes: self.transport.udp_bytes(name),
            })
            .collect()
    }

    /// Says Bye and closes the transport.
    pub async fn shutdown(&self) {
        self.transport.shutdown("shutting down").await;
    }

    /// Notification-log entries in state `sending`, and in state `sent`.
    pub fn log_counts(&self) -> (usize, usize) {
        self.state
            .log()
            .entries()
            .fold((0, 0), |(sending, sent), e| match e.state {
                LogState::Sending => (sending + 1, sent),
                LogState::Sent => (sending, sent + 1),
            })
    }

    /// Frames dropped because a peer's queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.transport.dropped_frames()
    }

    /// The transport's UDP address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.transport.local_addr()
    }
}

/// The string forms of every check and push heartbeat.
fn subjects(checks: &[(CheckId, i64)], heartbeats: &[CheckId]) -> BTreeSet<String> {
    checks
        .iter()
        .map(|(id, _)| id)
        .chain(heartbeats)
        .map(ToString::to_string)
        .collect()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
