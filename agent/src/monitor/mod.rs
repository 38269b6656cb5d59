//! The monitor: turns probe results into verdicts, and verdicts into pages.
//!
//! One task owns the alert engine. It takes probe results from the scheduler, keeps this
//! agent's latest status of every check, writes observations to the store (never waiting), and
//! updates the [`Board`]. Every [`ROUND`] it feeds what changed to `mesh-proto`'s
//! [`AlertEngine`] and carries out the pages it owes through the [`Outbox`].
//!
//! What it adds around the pure engine, because it needs I/O or a clock:
//! - **Is it me or them?** A check that starts failing is not fed at once. The monitor asks the
//!   scheduler to run one check of every other target now (the canaries, at most once per
//!   settle window) and feeds every new failure together once the canaries had time to answer.
//!   So when this agent's own network is down, every target is seen unreachable in one round
//!   and the engine pages one `monitoring_offline` instead of N target alerts; and when a parent
//!   fails, its dependants' failures join the same round and are listed in the parent's page.
//! - **Latency drift.** Health checks compare their latest latencies with the median of the
//!   past 7 days (`mesh_proto::drift`); a drifting check counts as `degraded` and pages
//!   `latency_drift`. Baselines are read from the store off the monitor's path, hourly.
//! - **Push heartbeats.** Their status is computed from the latest ping (`mesh_proto::push`)
//!   every round.
//! - **Crash safety.** A page, its notification-log entry and the lifecycle that decided it
//!   commit in one transaction ([`Outbox::notify`]); other lifecycle changes are saved after
//!   each round. After a restart, even a `kill -9`, nothing is paged twice.
//! - **The mesh** (`mesh.rs`): with `[mesh]`, verdicts come from every agent's votes, and the
//!   canaries only serve an agent left alone. `payload.rs` renders a decision as an alert.

mod mesh;
mod payload;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_proto::{
    AlertEngine, AlertEvent, AlertKind, AlertPolicy, CheckId, CheckKind, Decision, Drift,
    DriftPolicy, Lifecycle, Observation, Status, Subject, Timestamp, drift, incident_id, push,
};
use tokio::sync::{mpsc, watch};

use self::mesh::next_event;
use crate::alert::Alert;
use crate::alert::outbox::{DeliveryIds, Outbox};
use crate::board::Board;
use crate::clock::millis;
pub use crate::clock::{now, to_datetime};
use crate::mesh::{MeshSetup, Node};
use crate::plan::CheckSpec;
use crate::scheduler::ProbeResult;
use crate::store::StoreHandle;

/// How often the monitor feeds the engine what changed.
pub const ROUND: Duration = Duration::from_millis(500);
/// How long a latency baseline is used before it is read again.
const BASELINE_MAX_AGE_MS: i64 = 3_600_000;
/// At most this many outbox rows are read at start-up to renew their claims (a backlog beyond
/// that is years of alerts to a dead channel; its rest may be sent by a peer too).
const RECLAIM_LIMIT: u32 = 10_000;
/// The span of the latency baseline.
const BASELINE_SPAN_MS: i64 = 7 * 86_400_000;

/// What the monitor needs to know of the config. Rebuilt on reload.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// This agent's name (`sent_by`, `confirmed_by`).
    pub agent: String,
    /// `runbook_base`; alerts link to `runbook_base#anchor`.
    pub runbook_base: String,
    /// Cooldown and repeat interval.
    pub policy: AlertPolicy,
    /// target → the targets it depends on.
    pub depends_on: Vec<(String, Vec<String>)>,
    /// The probed checks.
    pub checks: Vec<Arc<CheckSpec>>,
    /// Push heartbeats: id (`NAME/heartbeat`) and `max_age`.
    pub heartbeats: Vec<(CheckId, Duration)>,
    /// Latency drift rules.
    pub drift: DriftPolicy,
}

impl MonitorConfig {
    /// Every check id: probes, then push heartbeats.
    pub fn check_ids(&self) -> impl Iterator<Item = CheckId> + '_ {
        self.board_checks().map(|(id, _)| id)
    }

    /// The checks the mesh votes on (probes, not push heartbeats), with their freshness.
    pub fn vote_checks(&self) -> Vec<(CheckId, i64)> {
        self.board_checks()
            .filter_map(|(id, fresh)| Some((id, fresh?)))
            .collect()
    }

    /// Every check the board shows, with how long its observation stays fresh: 2 × interval +
    /// timeout for probes (DESIGN.md, "Voters"), always for push heartbeats.
    fn board_checks(&self) -> impl Iterator<Item = (CheckId, Option<i64>)> + '_ {
        self.checks
            .iter()
            .map(|c| (c.id.clone(), Some(millis(c.interval * 2 + c.timeout))))
            .chain(self.heartbeats.iter().map(|(id, _)| (id.clone(), None)))
    }

    /// How long new `unreachable` results wait for the canaries: the longest canary timeout,
    /// plus a margin for the result to travel.
    fn settle(&self) -> Duration {
        self.canaries()
            .values()
            .map(|c| c.timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(1)
    }

    /// Every target related to `target` by `depends_on`, either way, directly or through
    /// others: the targets it depends on and the targets that depend on it.
    fn relatives(&self, target: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        // Dependants: walk down.
        let mut queue = vec![target.to_owned()];
        while let Some(parent) = queue.pop() {
            for (child, parents) in &self.depends_on {
                if parents.contains(&parent) && found.insert(child.clone()) {
                    queue.push(child.clone());
                }
            }
        }
        // Ancestors: walk up.
        let mut queue = vec![target.to_owned()];
        while let Some(child) = queue.pop() {
            for (name, parents) in &self.depends_on {
                if *name == child {
                    for parent in parents {
                        if found.insert(parent.clone()) {
                            queue.push(parent.clone());
                        }
                    }
                }
            }
        }
        found.remove(target);
        found
    }

    /// One check per target: the first one configured (usually its health check).
    fn canaries(&self) -> BTreeMap<&str, &Arc<CheckSpec>> {
        let mut out = BTreeMap::new();
        for check in &self.checks {
            out.entry(check.id.target()).or_insert(check);
        }
        out
    }
}

/// Messages to the monitor.
#[derive(Debug)]
pub enum Command {
    /// A reloaded config, with the outbox and scheduler of the new generation, and the mesh
    /// setup (certificates re-read).
    Reconfigure(
        Box<MonitorConfig>,
        Outbox,
        mpsc::Sender<CheckId>,
        Option<Box<MeshSetup>>,
    ),
}

/// This agent's latest view of one check.
#[derive(Debug, Clone)]
struct Own {
    status: Status,
    /// When it was observed.
    at: Timestamp,
    detail: String,
    /// Set while a health check drifts.
    drift: Option<Drift>,
}

/// A check's latency baseline and its latest answered latencies.
#[derive(Debug, Default)]
struct Latency {
    /// Median and sample count, and when they were read.
    baseline: Option<(u64, usize, Timestamp)>,
    /// A read of the baseline is under way.
    reading: bool,
    recent: VecDeque<u64>,
}

/// A baseline read off the monitor's path.
#[derive(Debug)]
struct Baseline {
    check: CheckId,
    median: u64,
    samples: usize,
    at: Timestamp,
}

/// The monitor task. See the [module docs](self).
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    /// The ids of `config`, for quick lookups.
    known: BTreeSet<CheckId>,
    engine: AlertEngine,
    store: StoreHandle,
    outbox: Outbox,
    board: Arc<Board>,
    run_now: mpsc::Sender<CheckId>,
    own: BTreeMap<CheckId, Own>,
    latency: BTreeMap<CheckId, Latency>,
    baselines: (mpsc::Sender<Baseline>, mpsc::Receiver<Baseline>),
    /// New failures waiting for the canaries, and when they are fed regardless.
    pending: BTreeSet<CheckId>,
    pending_until: Option<Timestamp>,
    /// Targets whose canary ran in the current settle window.
    canaries_asked: BTreeSet<String>,
    /// What changed since the last round.
    round: BTreeMap<CheckId, Status>,
    /// Lifecycles as last saved.
    saved: BTreeMap<Subject, Lifecycle>,
    /// The latest firing alert this agent sent of each open incident, for refreshes.
    open_alerts: BTreeMap<Subject, OpenAlert>,
    /// The alert kind each open incident paged with: every later page of the incident, its
    /// `resolved` included, carries the same (a receiver such as Alertmanager matches the
    /// resolve to the firing by it), even if the check's status now points at another kind.
    incident_kinds: BTreeMap<Subject, (String, AlertKind)>,
    refresh_every: Option<Duration>,
    /// When each push heartbeat started being watched (start-up, or the reload that added it).
    watching_since: BTreeMap<CheckId, Timestamp>,
    /// The mesh, when configured: verdicts then come from the votes of every agent.
    mesh: Option<Node>,
    /// Since when this agent is isolated (mesh only).
    isolated_since: Option<Timestamp>,
    /// In a mesh with no live peer, pages wait until this moment, for every target's canary
    /// to tell whether the network at fault is this agent's own (mesh only).
    alone_settle_until: Option<Timestamp>,
    /// When this agent's latest isolation ended: a failure from a probe that started before
    /// then describes the outage, not the targets (mesh only).
    back_at: Option<tokio::time::Instant>,
    /// After an isolation (from when it ended, until when at the latest), the mesh conditions
    /// (a peer missing, …) wait until every peer is heard again, so that a peer whose
    /// connection is still being re-established is not paged missing (mesh only).
    rejoin: Option<(Timestamp, Timestamp)>,
    /// Whether no peer was live at the last round, and whether a check started failing since.
    was_alone: bool,
    alone_failure: bool,
    /// Deliveries reported by the outbox (mesh only: they turn claims into `sent`).
    deliveries: mpsc::Receiver<DeliveryIds>,
}

impl Monitor {
    /// A monitor that restores the saved lifecycles and the latest heartbeat pings. In a mesh it
    /// renews the claims of what the outbox still holds. `deliveries` are the outbox's reports
    /// of accepted deliveries, wired before the outbox started, so none is missed.
    pub async fn new(
        config: MonitorConfig,
        store: StoreHandle,
        outbox: Outbox,
        board: Arc<Board>,
        run_now: mpsc::Sender<CheckId>,
        mesh: Option<Node>,
        deliveries: mpsc::Receiver<DeliveryIds>,
    ) -> Self {
        let now = now();
        let mut engine = new_engine(&config, mesh.is_some());
        let mut saved = BTreeMap::new();
        match store.load_lifecycles().await {
            Ok(lifecycles) => {
                for (subject, lifecycle) in lifecycles {
                    engine.restore(subject.clone(), lifecycle);
                    saved.insert(subject, lifecycle);
                }
            }
            Err(e) => tracing::error!(
                error = %e,
                "cannot read the saved alert state: open incidents may page again"
            ),
        }
        for (id, _) in &config.heartbeats {
            match store.last_ping(id.target()).await {
                Ok(Some(at)) => board.ping(id.target(), at),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(heartbeat = %id.target(), error = %e, "cannot read the last ping")
                }
            }
        }
        board.set_checks(config.board_checks());
        let refresh_every = outbox.channels().filter_map(|c| c.refresh_interval()).min();
        let mut monitor = Self {
            mesh,
            isolated_since: None,
            alone_settle_until: None,
            back_at: None,
            rejoin: None,
            was_alone: false,
            alone_failure: false,
            deliveries,

            engine,
            store,
            outbox,
            board,
            run_now,
            own: BTreeMap::new(),
            latency: BTreeMap::new(),
            baselines: mpsc::channel(64),
            pending: BTreeSet::new(),
            pending_until: None,
            canaries_asked: BTreeSet::new(),
            round: BTreeMap::new(),
            saved,
            open_alerts: BTreeMap::new(),
            incident_kinds: BTreeMap::new(),
            refresh_every,
            watching_since: config
                .heartbeats
                .iter()
                .map(|(id, _)| (id.clone(), now))
                .collect(),
            known: config.check_ids().collect(),
            config,
        };
        let known = &monitor.known;
        monitor.engine.retain_checks(|id| known.contains(id));
        monitor.reopen_alerts().await;
        monitor.reclaim_outbox(now).await;
        monitor
    }

    /// In a mesh, after a restart: renews this agent's claim of every page its outbox still
    /// holds, so the peers keep holding it instead of sending it too (the outbox sends it).
    async fn reclaim_outbox(&mut self, now: Timestamp) {
        let Some(node) = &mut self.mesh else { return };
        match self.store.undelivered(RECLAIM_LIMIT).await {
            Ok(pending) => {
                // A row for a channel no longer configured is kept but never sent: no claim.
                let channels: BTreeSet<&str> = self.outbox.channels().map(|c| c.name()).collect();
                let ids: BTreeSet<DeliveryIds> = pending
                    .into_iter()
                    .filter(|d| channels.contains(d.channel.as_str()))
                    .map(|d| {
                        (
                            d.alert.check,
                            d.alert.incident,
                            d.alert.event,
                            d.alert.repeat,
                        )
                    })
                    .collect();
                if !ids.is_empty() {
                    tracing::info!(
                        pages = ids.len(),
                        "the outbox still holds pages: renewing their claims in the mesh"
                    );
                }
                for ids in ids {
                    node.reclaim(ids, now);
                }
            }
            Err(e) => tracing::warn!(error = %e,
                "cannot read the outbox: its pages may also be sent by a peer"),
        }
    }

    /// After a restart, finds the latest firing alert of every incident that paged and is still
    /// open, so channels that expire alerts (Alertmanager) keep receiving it. They are
    /// refreshed at the first round: the agent may have been down longer than the receiver
    /// keeps an alert.
    /// Their kinds are restored too, so the resolve carries the kind of the firing.
    async fn reopen_alerts(&mut self) {
        let open: Vec<(Subject, Timestamp)> = self
            .engine
            .lifecycles()
            .filter_map(|(s, l)| l.open.filter(|i| i.pages > 0).map(|i| (s.clone(), i.since)))
            .collect();
        for (subject, since) in open {
            let incident = incident_id(&subject, since);
            match self.store.last_alert(&incident, AlertEvent::Firing).await {
                Ok(Some(alert)) => {
                    self.incident_kinds
                        .insert(subject.clone(), (incident.clone(), alert.alert));
                    if self.refresh_every.is_some() {
                        self.open_alerts.insert(
                            subject,
                            OpenAlert {
                                alert,
                                incident_since: since,
                                refreshed: Timestamp::EPOCH,
                            },
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(incident = %incident, error = %e,
                    "cannot read an open incident's alert; it is not refreshed"),
            }
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(
        mut self,
        mut results: mpsc::Receiver<ProbeResult>,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(ROUND);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.heartbeat_interval());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                Some(command) = commands.recv() => match command {
                    Command::Reconfigure(config, outbox, run_now, mesh) => {
                        self.refresh_every = outbox.channels().filter_map(|c| c.refresh_interval()).min();
                        self.outbox = outbox;
                        self.run_now = run_now;
                        self.reconfigure(*config, mesh.map(|m| *m));
                        heartbeat = tokio::time::interval(self.heartbeat_interval());
                    }
                },
                Some(result) = results.recv() => self.observe(&result),
                Some(event) = next_event(&mut self.mesh) => self.mesh_event(event),
                Some(ids) = self.deliveries.recv() => {
                    if let Some(node) = &mut self.mesh {
                        node.delivered(&ids, now());
                    }
                }
                _ = heartbeat.tick(), if self.mesh.is_some() => {
                    if let Some(node) = &mut self.mesh {
                        node.heartbeat(now());
                    }
                }
                Some(baseline) = self.baselines.1.recv() => {
                    // A check removed by a reload meanwhile has no entry any more.
                    if let Some(entry) = self.latency.get_mut(&baseline.check) {
                        entry.reading = false;
                        entry.baseline = Some((baseline.median, baseline.samples, baseline.at));
                    }
                }
                _ = tick.tick() => self.step().await,
            }
        }
        // Whatever changed last still gets its lifecycle saved.
        self.save_lifecycles(now()).await;
        if let Some(node) = &self.mesh {
            node.shutdown().await;
        }
    }

    /// How often heartbeats go out (an hour without a mesh: the timer is then unused).
    fn heartbeat_interval(&self) -> Duration {
        self.mesh.as_ref().map_or(Duration::from_secs(3600), |n| {
            Duration::from_millis(
                u64::try_from(n.state().settings().liveness.heartbeat_interval_ms)
                    .unwrap_or(60_000)
                    .max(1),
            )
        })
    }

    fn reconfigure(&mut self, config: MonitorConfig, mesh: Option<MeshSetup>) {
        match (&mut self.mesh, mesh) {
            (Some(node), Some(setup)) => {
                let heartbeats: Vec<CheckId> =
                    config.heartbeats.iter().map(|(id, _)| id.clone()).collect();
                if let Err(e) = node.reconfigure(setup, &config.vote_checks(), &heartbeats, now()) {
                    tracing::error!(error = %e, "mesh reload failed; the mesh keeps its old settings");
                }
            }
            (None, None) => {}
            _ => tracing::warn!("adding or removing [mesh] takes effect at the next restart"),
        }
        self.engine = {
            let mut engine = new_engine(&config, self.mesh.is_some());
            for (subject, lifecycle) in self.engine.lifecycles() {
                engine.restore(subject.clone(), *lifecycle);
            }
            engine
        };
        let known: BTreeSet<CheckId> = config.check_ids().collect();
        self.engine.retain_checks(|id| known.contains(id));
        self.own.retain(|id, _| known.contains(id));
        self.latency.retain(|id, _| known.contains(id));
        self.pending.retain(|id| known.contains(id));
        let configured = |subject: &Subject| match subject {
            Subject::Check(id) => known.contains(id),
            Subject::MonitoringOffline | Subject::Agent { .. } => true,
        };
        self.open_alerts.retain(|subject, _| configured(subject));
        self.incident_kinds.retain(|subject, _| configured(subject));
        self.known = known;
        let now = now();
        self.watching_since
            .retain(|id, _| config.heartbeats.iter().any(|(h, _)| h == id));
        for (id, _) in &config.heartbeats {
            self.watching_since.entry(id.clone()).or_insert(now);
        }
        self.board.set_checks(config.board_checks());
        self.config = config;
        // Every current status is fed again, so the new policy and dependencies apply at once.
        self.round
            .extend(self.own.iter().map(|(id, own)| (id.clone(), own.status)));
        tracing::info!(checks = self.config.checks.len(), "monitor reconfigured");
    }

    /// Takes one probe result.
    fn observe(&mut self, result: &ProbeResult) {
        let now = now();
        let id = &result.check.id;
        if !self.known.contains(id) {
            return; // a probe of a check removed by a reload
        }
        self.board
            .counters
            .start_delay
            .observe(result.start_delay());
        let outcome = &result.outcome;
        let latency_ms = u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX);
        let mut status = outcome.status;
        let mut detail = outcome.detail.clone();
        let drifting = self.drift(id, status, latency_ms, now);
        if let Some(d) = drifting {
            if status == Status::Operational {
                status = Status::Degraded;
            }
            detail = format!(
                "latency {} ms, above twice the 7-day median of {} ms; {detail}",
                d.current_ms, d.baseline_ms
            );
        }
        self.store.record_observation(
            &self.config.agent,
            &Observation {
                check: id.clone(),
                status,
                latency_ms: Some(latency_ms),
                detail: detail.clone(),
                at: now,
            },
        );
        let agent = &self.config.agent;
        let alone = self.mesh.is_none();
        self.board.update(id, |state| {
            state.status = Some(status);
            if alone {
                state.votes = BTreeMap::from([(agent.clone(), status)]);
            } else {
                state.votes.insert(agent.clone(), status); // the others' come each round
            }
            state.last_checked = Some(now);
            state.latency_ms = Some(latency_ms);
            state.detail.clone_from(&detail);
            if let Some(t) = outcome.facts.cert_not_after {
                state.cert_expiry = Some(t.unix_timestamp());
            }
            if let Some(t) = outcome.facts.domain_expires {
                state.domain_expiry = Some(t.unix_timestamp());
            }
        });
        let previous = self.own.get(id).map(|o| o.status);
        let was_failing = previous.is_some_and(Status::is_failure);
        self.own.insert(
            id.clone(),
            Own {
                status,
                at: now,
                detail: detail.clone(),
                drift: drifting,
            },
        );
        if let Some(node) = &mut self.mesh {
            let observation = Observation {
                check: id.clone(),
                status,
                latency_ms: Some(latency_ms),
                detail,
                at: now,
            };
            if status.is_failure() && self.back_at.is_some_and(|back| result.started < back) {
                // Started while this agent was cut off: it says nothing about the target.
                return;
            }
            if status.is_failure() && !was_failing {
                self.alone_failure = true;
            }
            node.own_observation(observation, previous != Some(status), now);
            return;
        }
        if status.is_failure() && (!was_failing || self.pending.contains(id)) {
            self.hold_for_canaries(id, status, now);
        } else {
            self.pending.remove(id);
            self.round.insert(id.clone(), status);
        }
    }

    /// Holds a new failure until the settle window ends and asks the canaries that can tell
    /// what it means: for `unreachable` (is it me?), every other target's; for a wrong answer
    /// (the network works), only those of the targets related by `depends_on`: a failing parent
    /// lists its failing dependants, and a failing dependant learns whether its parent is down
    /// (and is folded) instead of paging first. A canary runs at most once per window.
    fn hold_for_canaries(&mut self, id: &CheckId, status: Status, now: Timestamp) {
        self.pending.insert(id.clone());
        if self.pending_until.is_none() {
            self.pending_until = Some(now.add_millis(millis(self.config.settle())));
            self.canaries_asked.clear();
        }
        let wanted: BTreeSet<String> = if status == Status::Unreachable {
            self.config
                .canaries()
                .keys()
                .map(|t| (*t).to_owned())
                .collect()
        } else {
            self.config.relatives(id.target())
        };
        let canaries = self.config.canaries();
        for target in wanted {
            if target == id.target() || !self.canaries_asked.insert(target.clone()) {
                continue;
            }
            if let Some(canary) = canaries.get(target.as_str())
                && self.run_now.try_send(canary.id.clone()).is_err()
            {
                tracing::debug!(check = %canary.id, "scheduler busy; canary skipped");
            }
        }
    }

    /// Runs one check of every target now (mesh: alone, or back from isolation).
    fn ask_canaries(&self) {
        for canary in self.config.canaries().values() {
            if self.run_now.try_send(canary.id.clone()).is_err() {
                tracing::debug!(check = %canary.id, "scheduler busy; canary skipped");
            }
        }
    }

    /// Updates a health check's latency window; returns the drift, if it drifts.
    fn drift(
        &mut self,
        id: &CheckId,
        status: Status,
        latency_ms: u64,
        now: Timestamp,
    ) -> Option<Drift> {
        if id.kind() != CheckKind::Health {
            return None;
        }
        let policy = self.config.drift;
        let entry = self.latency.entry(id.clone()).or_default();
        if matches!(status, Status::Operational | Status::Degraded) {
            entry.recent.push_back(latency_ms);
            while entry.recent.len() > policy.sustained.max(1) {
                entry.recent.pop_front();
            }
        } else {
            entry.recent.clear();
        }
        let stale = entry
            .baseline
            .is_none_or(|(_, _, at)| now.millis_since(at) >= BASELINE_MAX_AGE_MS);
        if stale && !entry.reading {
            entry.reading = true;
            let (store, agent, check, tx) = (
                self.store.clone(),
                self.config.agent.clone(),
                id.clone(),
                self.baselines.0.clone(),
            );
            tokio::spawn(async move {
                let since = now.add_millis(-BASELINE_SPAN_MS);
                let samples = match store.latency_samples(&agent, &check, since).await {
                    Ok(samples) => samples,
                    Err(e) => {
                        tracing::warn!(check = %check, error = %e, "cannot read the latency baseline");
                        Vec::new()
                    }
                };
                let median = drift::median(&samples).unwrap_or(0);
                let baseline = Baseline {
                    check,
                    median,
                    samples: samples.len(),
                    at: now,
                };
                let _ = tx.send(baseline).await;
            });
        }
        let (median, samples, _) = entry.baseline?;
        let recent: Vec<u64> = entry.recent.iter().copied().collect();
        drift::detect(median, samples, &recent, &policy)
    }

    /// One round: heartbeats, held failures, the engine, the pages, the saved state.
    async fn step(&mut self) {
        let now = now();
        self.board
            .counters
            .monitor_alive_ms
            .store(now.as_millis(), Ordering::Relaxed);
        self.heartbeats(now);
        if self.mesh.is_some() {
            self.mesh_step(now).await;
            return;
        }
        if self.pending_until.is_some_and(|until| now >= until) {
            self.pending_until = None;
            for id in std::mem::take(&mut self.pending) {
                if let Some(own) = self.own.get(&id) {
                    self.round.insert(id, own.status);
                }
            }
        }
        let decisions = if self.round.is_empty() {
            if self.engine.next_wakeup().is_none_or(|t| t > now) {
                self.refresh(now).await;
                return;
            }
            self.engine.tick(now)
        } else {
            let round = std::mem::take(&mut self.round);
            self.engine.step(&round, now)
        };
        for decision in decisions {
            self.page(&decision, now).await;
        }
        self.board.set_isolated(
            self.engine
                .lifecycle(&Subject::MonitoringOffline)
                .is_some_and(|l| l.open.is_some()),
        );
        self.save_lifecycles(now).await;
        self.refresh(now).await;
    }

    /// Push heartbeats: a changed status goes into the round.
    fn heartbeats(&mut self, now: Timestamp) {
        let pings = self.board.pings();
        for (id, max_age) in &self.config.heartbeats {
            let last = pings.get(id.target()).copied();
            let max_age_ms = millis(*max_age);
            let since = self.watching_since.get(id).copied().unwrap_or(now);
            let status = push::status(last, since, max_age_ms, now);
            if self.own.get(id).is_some_and(|o| o.status == status) {
                continue;
            }
            let detail = match (status, last) {
                (Status::Operational, Some(at)) => format!("last ping {} ago", ago(now, at)),
                (Status::Operational, None) => format!(
                    "no ping yet; stale {} after the agent started",
                    humantime::format_duration(*max_age)
                ),
                (_, Some(at)) => format!(
                    "no ping for {} (max_age {})",
                    ago(now, at),
                    humantime::format_duration(*max_age)
                ),
                (_, None) => format!(
                    "never pinged in the {} since the agent started (max_age {})",
                    ago(now, since),
                    humantime::format_duration(*max_age)
                ),
            };
            self.board.update(id, |state| {
                state.status = Some(status);
                state.votes = BTreeMap::from([(self.config.agent.clone(), status)]);
                state.last_checked = last;
                state.detail.clone_from(&detail);
            });
            self.own.insert(
                id.clone(),
                Own {
                    status,
                    at: now,
                    detail,
                    drift: None,
                },
            );
            self.round.insert(id.clone(), status);
        }
    }

    /// Carries out one decision: the page, its log entry and lifecycle, in one transaction.
    async fn page(&mut self, decision: &Decision, now: Timestamp) {
        let alert = self.alert(decision, None, now);
        self.deliver(&decision.subject, alert, now).await;
    }

    /// Queues `alert` about `subject`, with its log entry and the subject's lifecycle, in one
    /// transaction; and keeps it for refreshes while it fires.
    async fn deliver(&mut self, subject: &Subject, alert: Alert, now: Timestamp) {
        let lifecycle = self.engine.lifecycle(subject).copied();
        match self
            .outbox
            .notify(subject, &alert, lifecycle.as_ref(), now)
            .await
        {
            Ok(queued) => {
                if let Some(l) = lifecycle {
                    self.saved.insert(subject.clone(), l);
                }
                if queued {
                    tracing::info!(subject = %subject, event = %alert.event,
                        repeat = alert.repeat, alert = %alert.alert, "alert queued");
                } else {
                    tracing::info!(subject = %subject, event = %alert.event,
                        "already notified before; not sent again");
                }
            }
            Err(e) => {
                tracing::error!(subject = %subject, error = %e,
                    "cannot store an alert: sending it without the outbox");
                self.outbox.send_direct(alert.clone());
            }
        }
        match (alert.event, lifecycle.and_then(|l| l.open)) {
            (AlertEvent::Firing, Some(incident)) => {
                self.open_alerts.insert(
                    subject.clone(),
                    OpenAlert {
                        alert,
                        incident_since: incident.since,
                        refreshed: now,
                    },
                );
            }
            _ => {
                self.open_alerts.remove(subject);
            }
        }
    }

    /// Saves every lifecycle that changed since it was last saved. A failed save is retried
    /// next round (the old copy stays in `saved`).
    async fn save_lifecycles(&mut self, now: Timestamp) {
        let changed: Vec<(Subject, Lifecycle)> = self
            .engine
            .lifecycles()
            .filter(|(s, l)| self.saved.get(*s) != Some(*l))
            .map(|(s, l)| (s.clone(), *l))
            .collect();
        for (subject, lifecycle) in changed {
            match self.store.save_lifecycle(&subject, &lifecycle, now).await {
                Ok(()) => {
                    self.saved.insert(subject, lifecycle);
                }
                Err(e) => {
                    tracing::error!(subject = %subject, error = %e, "cannot save alert state; retrying");
                    return;
                }
            }
        }
    }

    /// Re-posts open firing alerts to channels that expire them (Alertmanager).
    ///
    /// Only while the incident is open here and no agent of the mesh has claimed its
    /// `resolved`: in a mesh the resolve may come from another agent, before this one's engine
    /// closes the incident, and a refresh after it would fire the alert again at the receiver.
    async fn refresh(&mut self, now: Timestamp) {
        let Some(every) = self.refresh_every else {
            return;
        };
        let resolved: BTreeSet<&str> = self
            .mesh
            .iter()
            .flat_map(|node| {
                node.state()
                    .log()
                    .entries()
                    .filter(|e| e.event == AlertEvent::Resolved)
                    .map(|e| e.incident.as_str())
            })
            .collect();
        let engine = &self.engine;
        self.open_alerts.retain(|subject, open| {
            !resolved.contains(open.alert.incident.as_str())
                && engine
                    .lifecycle(subject)
                    .and_then(|l| l.open)
                    .is_some_and(|incident| incident.since == open.incident_since)
        });
        for open in self.open_alerts.values_mut() {
            if now.millis_since(open.refreshed) < millis(every) {
                continue;
            }
            match self.outbox.refresh(&open.alert, now).await {
                Ok(()) => open.refreshed = now,
                Err(e) => {
                    tracing::warn!(check = %open.alert.check, error = %e, "cannot queue an alert refresh")
                }
            }
        }
    }
}

/// A firing alert this agent sent, kept to re-post while its incident is open.
#[derive(Debug)]
struct OpenAlert {
    alert: Alert,
    /// When the incident opened, in this agent's engine: the alert is dropped once that
    /// incident is closed, whoever sent the `resolved`.
    incident_since: Timestamp,
    refreshed: Timestamp,
}

/// The engine: without the `monitoring_offline` rule in a mesh, where peers judge that.
fn new_engine(config: &MonitorConfig, mesh: bool) -> AlertEngine {
    let engine = AlertEngine::new(config.policy, config.depends_on.clone());
    if mesh {
        engine.without_offline_rule()
    } else {
        engine
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone), holding no borrow of it.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `now - then`, for humans, to the second.
fn ago(now: Timestamp, then: Timestamp) -> String {
    let secs = u64::try_from(now.millis_since(then) / 1000).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
