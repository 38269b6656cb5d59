//! Deterministic simulation of a PoM mesh (STYLE.md §2, DESIGN.md "Mesh semantics").
//!
//! N agents (2 to 5) run in one thread on a virtual clock. Each agent is one [`MeshState`] and
//! one [`AlertEngine`], driven the way `agent/src/monitor.rs` drives them: probes that complete
//! are observed and broadcast (with `ProbeNow` on a state change), heartbeats every second, a
//! Hello and the whole notification log on every (re)connection, and every 500 ms a round that
//! sets the isolation, feeds the engine the mesh's agreed statuses and conditions, owes its
//! decisions, and sends what [`MeshState::due`] hands out.
//!
//! The world injects per-message delay, message loss, partitions, crashes (also between claiming
//! a notification and sending it) with restarts, lost networks (probes unreachable, no peer, no
//! channel) and broken probe paths (probes unreachable, mesh fine), while the targets go up and
//! down. A restarted agent gets a fresh `MeshState` and keeps its engine's lifecycles (the agent
//! persists them with every page); the pages it owed or had claimed die with it, except those in
//! its outbox. A page the channel refuses (lost network) waits in the agent's durable outbox and
//! is retried; the outbox survives a crash, and a restarted agent claims again what it holds
//! (`MeshState::reclaim`) before its peers hear from it.
//!
//! Invariants (each assertion names its seed):
//! 1. a check agreed failing has `required` fresh failing votes of eligible agents, each from a
//!    probe that really failed (target down, or that agent's network or probe path down);
//! 2. no vote of an isolated agent counts (isolated when cast, or said isolated in its
//!    heartbeat); an isolated agent agrees on nothing, judges no peer, sends nothing, and a page
//!    it owed while isolated is never sent;
//! 3. with delay only (no partition, loss or crash), every transition goes out exactly once;
//! 4. when the notifier crashes between claiming and sending, an agent that owes the same page
//!    and stays up sends it within the takeover bound;
//! 5. a transition sent twice overlaps a partition, loss, lost network or crash;
//!
//! 6. a `clock_skew` page names the agent whose clock is off, while it is off (with two agents,
//!    whose clocks cannot outvote each other, the one whose name sorts second: DESIGN's
//!    tie-break);
//!
//! and no loss: a page owed by an agent that could send all along went out within the bound.
//!
//! Clocks: every agent's heartbeats carry its wall clock, a few hundred ms off the world's; in
//! some seeds one agent's jumps seconds away for a while. Only heartbeats carry it: everything
//! else runs on the world's clock.
//!
//! Design limitations this simulation has to allow for (DESIGN.md behaviour, not bugs of
//! `mesh-proto`; they are counted, and the report names them):
//! - *Verdicts are sampled.* Each agent feeds its engine the verdict at its own round. A verdict
//!   shorter than a round (a target up for a second between two outages) is seen by some agents
//!   only: their incidents split where the others' go on. Each split is a transition of its own
//!   here, sent once; a user sees an extra resolved/firing pair.
//! - *Quorum counts fresh voters only.* An agent that just started or reconnected, or the last
//!   one standing, confirms alone; with its own probe path broken, before its probes have all
//!   failed and made it isolated, that is a false alert (`false_firings`). Likewise an agent
//!   whose network just died sees every peer missing and pages `peer_missing` for each before
//!   it knows it is isolated; its outbox sends those once the network is back.
//! - *Duplicates after a crash.* A crashed claimer's page is taken over by position, counted
//!   from its claim; two survivors can both reach their turn before either's claim arrives.
//!
//! Seeds: `POM_SIM_SEEDS=N` (total over the five tests, default 5000); `POM_SIM_SEED=S` runs
//! only seed S (add `POM_SIM_TRACE=1` for a trace of what every agent did).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use mesh_proto::notify_log::NotificationKey;
use mesh_proto::{
    AlertEngine, AlertEvent, AlertPolicy, CheckId, CheckKind, ConfigHash, Heartbeat, Hello,
    Lifecycle, LivenessPolicy, LogEntry, MeshSettings, MeshState, Observation, PROTOCOL_VERSION,
    QuorumPolicy, Status, Subject, Timestamp, Verdict,
};

// ---------------------------------------------------------------------------------------------
// Settings: realistic values, the same for every seed.

const HEARTBEAT_MS: i64 = 1_000;
const MISSED_HEARTBEATS: u32 = 3;
const MISSING_AFTER_MS: i64 = HEARTBEAT_MS * MISSED_HEARTBEATS as i64;
const TAKEOVER_MS: i64 = 3_000;
const MATCH_WINDOW_MS: i64 = 60_000;
const INTERVAL_MS: i64 = 5_000;
const TIMEOUT_MS: i64 = 1_000;
const FRESH_MS: i64 = 2 * INTERVAL_MS + TIMEOUT_MS;
const ROUND_MS: i64 = 500;
const COOLDOWN_MS: i64 = 10_000;
const REPEAT_MS: i64 = 45_000;
/// A check runs at most this often on `ProbeNow` requests.
const PROBE_NOW_GAP_MS: i64 = 2_000;
const MAX_SKEW_MS: i64 = 2_000;
/// Virtual length of one run.
const DURATION_MS: i64 = 150_000;
/// Faults start no later than this, so the end of a run shows how the mesh recovers.
const FAULTS_UNTIL_MS: i64 = DURATION_MS - 45_000;
/// Two incidents of one subject whose starts are this close are one incident seen by several
/// agents (distinct incidents are farther apart: targets stay up at least 30 s).
const SAME_INCIDENT_MS: i64 = 10_000;
/// How far before a duplicate's incident a fault still explains it.
const FAULT_AFTERMATH_MS: i64 = 30_000;

const TARGETS: [&str; 3] = ["t0", "t1", "t2"];
const CHECKS: [(usize, CheckKind); 4] = [
    (0, CheckKind::Health),
    (0, CheckKind::Tcp),
    (1, CheckKind::Health),
    (2, CheckKind::Health),
];
const CONFIG: ConfigHash = ConfigHash([7; 32]);

/// How long after a page became owed it must have gone out (when someone could send it): the
/// claimer's absence noticed, then every position of the notifier order waits its turn.
fn delivery_bound(n: usize) -> i64 {
    MISSING_AFTER_MS + n as i64 * TAKEOVER_MS + 4 * ROUND_MS + 2_000
}

// ---------------------------------------------------------------------------------------------
// Seeded PRNG (splitmix64).

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x005e_ed0f_904d_5eed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` when empty).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next() % (hi - lo) as u64) as i64
    }

    fn index(&mut self, n: usize) -> usize {
        self.range(0, n as i64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Delay only (and broken probe paths, which do not split the mesh).
    Clean,
    /// Agent crashes, many of them between claiming and sending a notification.
    Crashes,
    /// Partitions.
    Partitions,
    /// Message loss and agents losing their network.
    LossAndNetwork,
    /// Everything at once.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    Crash,
    NetDown,
    Partition,
    Loss,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    kind: FaultKind,
    start: i64,
    end: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashPoint {
    /// Claimed, the claim not gossiped yet.
    Claimed,
    /// Claimed and gossiped, not sent.
    Gossiped,
    /// Sent, not marked sent.
    Delivered,
}

// ---------------------------------------------------------------------------------------------
// Events.

#[derive(Debug, Clone)]
enum Msg {
    Hello(Hello),
    Heartbeat(Heartbeat),
    Obs(Observation),
    ProbeNow(usize),
    Entry(LogEntry),
    Log(Vec<LogEntry>),
}

#[derive(Debug, Clone)]
enum Ev {
    Round(usize, u32),
    Heartbeat(usize, u32),
    ProbeStart {
        agent: usize,
        epoch: u32,
        check: usize,
        regular: bool,
    },
    ProbeDone {
        agent: usize,
        epoch: u32,
        check: usize,
    },
    Deliver {
        from: usize,
        to: usize,
        conn: u64,
        msg: Box<Msg>,
    },
    Connect(usize, usize, u64),
    Truth(usize, Status),
    Crash(usize),
    Restart(usize, u32),
    NetDown(usize, bool),
    PathDown(usize, bool),
    Partition(Option<Vec<u8>>),
    Loss(f64),
}

#[derive(Debug)]
struct Queued {
    at: i64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

// ---------------------------------------------------------------------------------------------
// Records kept for the invariants.

#[derive(Debug, Clone)]
struct Delivery {
    key: NotificationKey,
    by: usize,
    at: i64,
}

#[derive(Debug, Clone)]
struct DecisionRec {
    agent: usize,
    at: i64,
    key: NotificationKey,
}

#[derive(Debug, Clone)]
struct MidSend {
    agent: usize,
    at: i64,
    key: NotificationKey,
    point: CrashPoint,
}

#[derive(Debug, Clone, Copy)]
struct ObsRec {
    status: Status,
    /// The probe failed for a real reason: the target was down, or the agent's network or
    /// probe path was.
    legit: bool,
    /// The agent was isolated when it made the observation.
    isolated: bool,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    seeds: u64,
    agent_rounds: u64,
    confirmed_rounds: u64,
    isolated_rounds: u64,
    deliveries: u64,
    check_firings: u64,
    reminders: u64,
    resolved: u64,
    condition_pages: u64,
    transitions_exactly_once: u64,
    decisions_verified: u64,
    crashes: u64,
    mid_send_crashes: u64,
    mid_send_verified: u64,
    /// Pages a restarted agent claimed again from its outbox.
    reclaims: u64,
    partitions: u64,
    net_downs: u64,
    loss_periods: u64,
    lost_messages: u64,
    duplicates: u64,
    duplicates_by: BTreeMap<String, u64>,
    false_confirmations: u64,
    false_firings: u64,
    /// `clock_skew` firings sent (each checked to name the skewed agent).
    skew_pages: u64,
}

impl Stats {
    fn add(&mut self, o: &Self) {
        self.seeds += o.seeds;
        self.agent_rounds += o.agent_rounds;
        self.confirmed_rounds += o.confirmed_rounds;
        self.isolated_rounds += o.isolated_rounds;
        self.deliveries += o.deliveries;
        self.check_firings += o.check_firings;
        self.reminders += o.reminders;
        self.resolved += o.resolved;
        self.condition_pages += o.condition_pages;
        self.transitions_exactly_once += o.transitions_exactly_once;
        self.decisions_verified += o.decisions_verified;
        self.crashes += o.crashes;
        self.mid_send_crashes += o.mid_send_crashes;
        self.mid_send_verified += o.mid_send_verified;
        self.reclaims += o.reclaims;
        self.partitions += o.partitions;
        self.net_downs += o.net_downs;
        self.loss_periods += o.loss_periods;
        self.lost_messages += o.lost_messages;
        self.duplicates += o.duplicates;
        for (k, v) in &o.duplicates_by {
            *self.duplicates_by.entry(k.clone()).or_default() += v;
        }
        self.false_confirmations += o.false_confirmations;
        self.false_firings += o.false_firings;
        self.skew_pages += o.skew_pages;
    }

    fn summary(&self) -> String {
        format!(
            "{} seeds, {} agent rounds | delivered: {} firings, {} reminders, {} resolved, {} \
             mesh-condition pages | {} transitions sent exactly once, {} owed pages checked \
             delivered | {} crashes, {} mid-send ({} checked taken over), {} pages reclaimed \
             after a restart | {} partitions, {} \
             lost networks, {} loss periods ({} messages lost), {} isolated rounds | {} \
             duplicates {:?} | {} checked rounds agreeing a check failing, {} with the target \
             up, {} such firings sent | {} clock_skew pages",
            self.seeds,
            self.agent_rounds,
            self.check_firings,
            self.reminders,
            self.resolved,
            self.condition_pages,
            self.transitions_exactly_once,
            self.decisions_verified,
            self.crashes,
            self.mid_send_crashes,
            self.mid_send_verified,
            self.reclaims,
            self.partitions,
            self.net_downs,
            self.loss_periods,
            self.lost_messages,
            self.isolated_rounds,
            self.duplicates,
            self.duplicates_by,
            self.confirmed_rounds,
            self.false_confirmations,
            self.false_firings,
            self.skew_pages,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The world.

#[derive(Debug)]
struct Agent {
    up: bool,
    /// Bumped by every crash: timers of a dead incarnation are ignored.
    epoch: u32,
    mesh: MeshState,
    engine: AlertEngine,
    seq: u64,
    last_status: Vec<Option<Status>>,
    last_probe_now: Vec<i64>,
    /// Claimed pages not sent yet because the channel was out of reach.
    outbox: Vec<NotificationKey>,
    net_down: bool,
    path_down: bool,
    iso_since: Option<i64>,
    iso_intervals: Vec<(i64, i64)>,
    down_intervals: Vec<(i64, i64)>,
    net_intervals: Vec<(i64, i64)>,
    owed_while_isolated: BTreeSet<NotificationKey>,
    /// The statuses agreed at the previous round, and rounds since invariants 1 and 2 were
    /// last checked in full.
    last_agreed: BTreeMap<CheckId, Status>,
    unchecked_rounds: u32,
}

/// Rounds whose agreed statuses did not change are checked in full every this many rounds
/// (the check costs as much as the round itself).
const CHECK_EVERY: u32 = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Conn {
    connected: bool,
    pending: bool,
    generation: u64,
}

/// One agent's clock off the others' for a while.
#[derive(Debug, Clone, Copy)]
struct Skew {
    agent: usize,
    off_ms: i64,
    from: i64,
    until: i64,
}

struct World {
    seed: u64,
    kind: Kind,
    n: usize,
    quorum: QuorumPolicy,
    mid_send_p: f64,
    rng: Rng,
    now: i64,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    names: Vec<String>,
    checks: Vec<CheckId>,
    agents: Vec<Agent>,
    truth: Vec<Status>,
    truth_history: Vec<Vec<(i64, Status)>>,
    groups: Option<Vec<u8>>,
    loss: f64,
    conns: Vec<Vec<Conn>>,
    deliveries: Vec<Delivery>,
    decisions: Vec<DecisionRec>,
    mid_sends: Vec<MidSend>,
    faults: Vec<Fault>,
    open_faults: BTreeMap<(FaultKind, usize), usize>,
    obs: BTreeMap<(usize, usize, i64), ObsRec>,
    stats: Stats,
    trace: bool,
    /// Each agent's clock minus the world's (ms), apart from `skew`.
    clocks: Vec<i64>,
    skew: Option<Skew>,
}

impl World {
    fn new(seed: u64, kind: Kind, trace: bool) -> Self {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(kind as u64));
        let n = rng.range(2, 6) as usize;
        let quorum = match rng.index(3) {
            0 => QuorumPolicy::Majority,
            1 => QuorumPolicy::All,
            _ => QuorumPolicy::Count(2),
        };
        let names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
        let checks: Vec<CheckId> = CHECKS
            .iter()
            .map(|(t, k)| CheckId::new(TARGETS[*t], *k).expect("valid check id"))
            .collect();
        let mid_send_p = match kind {
            Kind::Crashes => 0.35,
            Kind::Mixed => 0.15,
            _ => 0.0,
        };
        let mut world = Self {
            seed,
            kind,
            n,
            quorum,
            mid_send_p,
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            names,
            checks,
            agents: Vec::new(),
            truth: vec![Status::Operational; TARGETS.len()],
            truth_history: vec![vec![(0, Status::Operational)]; TARGETS.len()],
            groups: None,
            loss: 0.0,
            conns: vec![vec![Conn::default(); n]; n],
            deliveries: Vec::new(),
            decisions: Vec::new(),
            mid_sends: Vec::new(),
            faults: Vec::new(),
            open_faults: BTreeMap::new(),
            obs: BTreeMap::new(),
            stats: Stats::default(),
            trace,
            clocks: Vec::new(),
            skew: None,
        };
        for a in 0..n {
            let mesh = world.new_mesh(a);
            world.agents.push(Agent {
                up: true,
                epoch: 0,
                mesh,
                engine: new_engine(),
                seq: 0,
                last_status: vec![None; CHECKS.len()],
                last_probe_now: vec![i64::MIN / 2; CHECKS.len()],
                outbox: Vec::new(),
                net_down: false,
                path_down: false,
                iso_since: None,
                iso_intervals: Vec::new(),
                down_intervals: Vec::new(),
                net_intervals: Vec::new(),
                owed_while_isolated: BTreeSet::new(),
                last_agreed: BTreeMap::new(),
                unchecked_rounds: 0,
            });
            world.start_timers(a);
        }
        world.plan();
        world.topology_changed();
        world
    }

    fn new_mesh(&self, a: usize) -> MeshState {
        let settings = MeshSettings {
            me: self.names[a].clone(),
            peers: self
                .names
                .iter()
                .filter(|p| **p != self.names[a])
                .cloned()
                .collect(),
            liveness: LivenessPolicy {
                heartbeat_interval_ms: HEARTBEAT_MS,
                missed_heartbeats: MISSED_HEARTBEATS,
            },
            quorum: self.quorum,
            takeover_ms: TAKEOVER_MS,
            match_window_ms: MATCH_WINDOW_MS,
        };
        MeshState::new(
            settings,
            self.checks.iter().map(|c| (c.clone(), FRESH_MS)),
            Timestamp(self.now),
        )
    }

    fn push(&mut self, at: i64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn start_timers(&mut self, a: usize) {
        let epoch = self.agents[a].epoch;
        let now = self.now;
        let first_round = now + self.rng.range(0, ROUND_MS);
        self.push(first_round, Ev::Round(a, epoch));
        let first_heartbeat = now + self.rng.range(0, HEARTBEAT_MS);
        self.push(first_heartbeat, Ev::Heartbeat(a, epoch));
        for check in 0..CHECKS.len() {
            let at = now + self.rng.range(0, INTERVAL_MS);
            self.push(
                at,
                Ev::ProbeStart {
                    agent: a,
                    epoch,
                    check,
                    regular: true,
                },
            );
        }
    }

    /// Schedules the targets' ups and downs and this scenario's faults.
    fn plan(&mut self) {
        self.clocks = (0..self.n).map(|_| self.rng.range(-400, 401)).collect();
        if self.rng.chance(0.5) {
            let from = self.rng.range(5_000, FAULTS_UNTIL_MS);
            let magnitude = self.rng.range(3_000, 9_000);
            self.skew = Some(Skew {
                agent: self.rng.index(self.n),
                off_ms: if self.rng.chance(0.5) {
                    magnitude
                } else {
                    -magnitude
                },
                from,
                until: from + self.rng.range(10_000, 60_000),
            });
        }
        for target in 0..TARGETS.len() {
            let mut t = self.rng.range(5_000, 60_000);
            while t < DURATION_MS - 30_000 {
                let down_for = if self.rng.chance(0.25) {
                    self.rng.range(1_000, 4_000)
                } else {
                    self.rng.range(6_000, 75_000)
                };
                let status = if self.rng.chance(0.5) {
                    Status::Error
                } else {
                    Status::Unreachable
                };
                self.push(t, Ev::Truth(target, status));
                self.push(t + down_for, Ev::Truth(target, Status::Operational));
                t += down_for + self.rng.range(30_000, 100_000);
            }
        }
        // Now and then every target goes down at once (unreachable): with a partition this
        // isolates the agent that is alone.
        if self.rng.chance(0.2) {
            let t = self.rng.range(20_000, FAULTS_UNTIL_MS);
            for target in 0..TARGETS.len() {
                self.push(t, Ev::Truth(target, Status::Unreachable));
                self.push(t + 20_000, Ev::Truth(target, Status::Operational));
            }
        }
        // A broken probe path (the mesh still works): peers raise monitoring_offline.
        if self.rng.chance(0.3) {
            let a = self.rng.index(self.n);
            let t = self.rng.range(10_000, FAULTS_UNTIL_MS);
            let d = self.rng.range(15_000, 40_000);
            self.push(t, Ev::PathDown(a, true));
            self.push(t + d, Ev::PathDown(a, false));
        }
        let (crashes, partitions, losses, net_downs) = match self.kind {
            Kind::Clean => (0, 0, 0, 0),
            Kind::Crashes => (self.rng.range(1, 4), 0, 0, 0),
            Kind::Partitions => (0, self.rng.range(1, 4), 0, 0),
            Kind::LossAndNetwork => (0, 0, self.rng.range(1, 3), self.rng.range(1, 4)),
            Kind::Mixed => (
                self.rng.range(0, 3),
                self.rng.range(0, 3),
                self.rng.range(0, 2),
                self.rng.range(0, 3),
            ),
        };
        for _ in 0..crashes {
            let a = self.rng.index(self.n);
            let t = self.rng.range(5_000, FAULTS_UNTIL_MS);
            self.push(t, Ev::Crash(a));
        }
        // Partitions follow one another, never overlapping.
        let mut t = self.rng.range(5_000, 40_000);
        for _ in 0..partitions {
            if t > FAULTS_UNTIL_MS {
                break;
            }
            let d = if self.rng.chance(0.3) {
                self.rng.range(500, 3_000)
            } else {
                self.rng.range(3_000, 45_000)
            };
            let mut groups: Vec<u8> = (0..self.n).map(|_| self.rng.index(2) as u8).collect();
            if groups.iter().all(|g| *g == groups[0]) {
                groups[self.rng.index(self.n)] ^= 1;
            }
            if self.n >= 3 && self.rng.chance(0.2) {
                groups[self.rng.index(self.n)] = 2;
            }
            self.push(t, Ev::Partition(Some(groups)));
            self.push(t + d, Ev::Partition(None));
            t += d + self.rng.range(5_000, 50_000);
        }
        let mut t = self.rng.range(5_000, 60_000);
        for _ in 0..losses {
            if t > FAULTS_UNTIL_MS {
                break;
            }
            let d = self.rng.range(5_000, 30_000);
            let p = [0.05, 0.2, 0.5][self.rng.index(3)];
            self.push(t, Ev::Loss(p));
            self.push(t + d, Ev::Loss(0.0));
            t += d + self.rng.range(10_000, 60_000);
        }
        for _ in 0..net_downs {
            let a = self.rng.index(self.n);
            let t = self.rng.range(5_000, FAULTS_UNTIL_MS);
            let d = if self.rng.chance(0.3) {
                self.rng.range(500, 3_000)
            } else {
                self.rng.range(3_000, 40_000)
            };
            self.push(t, Ev::NetDown(a, true));
            self.push(t + d, Ev::NetDown(a, false));
        }
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            println!("{:>7} {}", self.now, what());
        }
    }

    // --- connectivity ------------------------------------------------------------------------

    /// Agent `a`'s clock minus the world's, now.
    fn clock_off(&self, a: usize) -> i64 {
        let skewed = self
            .skew
            .filter(|s| s.agent == a && (s.from..s.until).contains(&self.now));
        self.clocks[a] + skewed.map_or(0, |s| s.off_ms)
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.agents[a], &self.agents[b]);
        x.up && y.up
            && !x.net_down
            && !y.net_down
            && self.groups.as_ref().is_none_or(|g| g[a] == g[b])
    }

    /// Drops the connections that broke and schedules a reconnection for the pairs that can
    /// reach each other again.
    fn topology_changed(&mut self) {
        for a in 0..self.n {
            for b in a + 1..self.n {
                let reachable = self.reachable(a, b);
                let conn = self.conns[a][b];
                if !reachable && (conn.connected || conn.pending) {
                    let generation = conn.generation + 1;
                    self.set_conn(a, b, false, false, generation);
                } else if reachable && !conn.connected && !conn.pending {
                    let generation = conn.generation + 1;
                    self.set_conn(a, b, false, true, generation);
                    let at = self.now + self.rng.range(100, 1_500);
                    self.push(at, Ev::Connect(a, b, generation));
                }
            }
        }
    }

    fn set_conn(&mut self, a: usize, b: usize, connected: bool, pending: bool, generation: u64) {
        let conn = Conn {
            connected,
            pending,
            generation,
        };
        self.conns[a][b] = conn;
        self.conns[b][a] = conn;
    }

    fn connect(&mut self, a: usize, b: usize, generation: u64) {
        if self.conns[a][b].generation != generation || !self.reachable(a, b) {
            return;
        }
        self.set_conn(a, b, true, false, generation);
        self.log(|| format!("connect a{a} a{b}"));
        for (from, to) in [(a, b), (b, a)] {
            let hello = Hello {
                protocol_version: PROTOCOL_VERSION,
                name: self.names[from].clone(),
                instance_id: format!("{}#{}", self.names[from], self.agents[from].epoch),
                agent_version: "0.1.0".into(),
                config_hash: CONFIG,
                wall_clock: Timestamp(self.now),
            };
            self.send(from, to, Msg::Hello(hello), false);
            let log: Vec<LogEntry> = self.agents[from].mesh.log().entries().cloned().collect();
            self.send(from, to, Msg::Log(log), false);
        }
    }

    /// Sends over the connection, if there is one. The handshake (`lossy` false) is reliable.
    fn send(&mut self, from: usize, to: usize, msg: Msg, lossy: bool) {
        let conn = self.conns[from][to];
        if !conn.connected {
            return;
        }
        if lossy && self.loss > 0.0 && self.rng.chance(self.loss) {
            self.stats.lost_messages += 1;
            return;
        }
        let at = self.now + self.rng.range(1, 50);
        self.push(
            at,
            Ev::Deliver {
                from,
                to,
                conn: conn.generation,
                msg: Box::new(msg),
            },
        );
    }

    fn broadcast(&mut self, from: usize, msg: &Msg) {
        for to in 0..self.n {
            if to != from {
                self.send(from, to, msg.clone(), true);
            }
        }
    }

    // --- faults --------------------------------------------------------------------------------

    fn open_fault(&mut self, kind: FaultKind, who: usize) {
        self.open_faults.insert((kind, who), self.faults.len());
        self.faults.push(Fault {
            kind,
            start: self.now,
            end: i64::MAX,
        });
    }

    fn close_fault(&mut self, kind: FaultKind, who: usize) {
        if let Some(i) = self.open_faults.remove(&(kind, who)) {
            self.faults[i].end = self.now;
        }
    }

    fn crash(&mut self, a: usize, restart_in: i64) {
        if !self.agents[a].up {
            return;
        }
        self.log(|| format!("a{a} CRASH (restart in {restart_in} ms)"));
        self.stats.crashes += 1;
        let now = self.now;
        let agent = &mut self.agents[a];
        agent.up = false;
        agent.epoch += 1;
        // The outbox is durable: what it holds survives the crash.
        if let Some(since) = agent.iso_since.take() {
            agent.iso_intervals.push((since, now));
        }
        agent.down_intervals.push((now, i64::MAX));
        let epoch = agent.epoch;
        self.open_fault(FaultKind::Crash, a);
        self.topology_changed();
        self.push(now + restart_in, Ev::Restart(a, epoch));
    }

    fn restart(&mut self, a: usize, epoch: u32) {
        if self.agents[a].up || self.agents[a].epoch != epoch {
            return;
        }
        self.log(|| format!("a{a} RESTART"));
        let now = self.now;
        // The agent persists its lifecycles with every page: they survive; the mesh view, the
        // notification log and the pages owed do not.
        let saved: Vec<(Subject, Lifecycle)> = self.agents[a]
            .engine
            .lifecycles()
            .map(|(s, l)| (s.clone(), *l))
            .collect();
        let mut engine = new_engine();
        for (s, l) in saved {
            engine.restore(s, l);
        }
        let mut mesh = self.new_mesh(a);
        // What the outbox still holds is claimed again before any peer hears from this agent
        // (the agent's `reclaim_outbox`), so the peers keep holding it and this agent sends it.
        for key in &self.agents[a].outbox {
            mesh.reclaim(key.clone(), Timestamp(now));
            self.stats.reclaims += 1;
        }
        let agent = &mut self.agents[a];
        agent.up = true;
        agent.mesh = mesh;
        agent.engine = engine;
        agent.seq = 0;
        agent.last_status = vec![None; CHECKS.len()];
        agent.last_probe_now = vec![i64::MIN / 2; CHECKS.len()];
        if let Some(last) = agent.down_intervals.last_mut() {
            last.1 = now;
        }
        self.close_fault(FaultKind::Crash, a);
        self.start_timers(a);
        self.topology_changed();
    }

    // --- the agent's loop ----------------------------------------------------------------------

    fn run(&mut self) {
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > DURATION_MS {
                break;
            }
            self.now = q.at;
            match q.ev {
                Ev::Round(a, epoch) if self.agents[a].up && self.agents[a].epoch == epoch => {
                    self.round(a);
                    let at = self.now + ROUND_MS;
                    if self.agents[a].up && self.agents[a].epoch == epoch {
                        self.push(at, Ev::Round(a, epoch));
                    }
                }
                Ev::Heartbeat(a, epoch) if self.agents[a].up && self.agents[a].epoch == epoch => {
                    let clock = self.clock_off(a);
                    let agent = &mut self.agents[a];
                    agent.seq += 1;
                    let hb = Heartbeat {
                        seq: agent.seq,
                        wall_clock: Timestamp(self.now + clock),
                        config_hash: CONFIG,
                        isolated: agent.mesh.is_isolated(),
                    };
                    self.broadcast(a, &Msg::Heartbeat(hb));
                    let at = self.now + HEARTBEAT_MS;
                    self.push(at, Ev::Heartbeat(a, epoch));
                }
                Ev::ProbeStart {
                    agent,
                    epoch,
                    check,
                    regular,
                } if self.agents[agent].up && self.agents[agent].epoch == epoch => {
                    let latency = self.rng.range(5, TIMEOUT_MS);
                    self.push(
                        self.now + latency,
                        Ev::ProbeDone {
                            agent,
                            epoch,
                            check,
                        },
                    );
                    if regular {
                        self.push(
                            self.now + INTERVAL_MS,
                            Ev::ProbeStart {
                                agent,
                                epoch,
                                check,
                                regular,
                            },
                        );
                    }
                }
                Ev::ProbeDone {
                    agent,
                    epoch,
                    check,
                } if self.agents[agent].up && self.agents[agent].epoch == epoch => {
                    self.probe_done(agent, check);
                }
                Ev::Deliver {
                    from,
                    to,
                    conn,
                    msg,
                } => {
                    let c = self.conns[from][to];
                    if c.connected && c.generation == conn && self.agents[to].up {
                        self.receive(from, to, *msg);
                    }
                }
                Ev::Connect(a, b, generation) => self.connect(a, b, generation),
                Ev::Truth(target, status) => {
                    self.log(|| format!("truth {} {status}", TARGETS[target]));
                    self.truth[target] = status;
                    self.truth_history[target].push((self.now, status));
                }
                Ev::Crash(a) => {
                    let restart_in = self.restart_delay();
                    self.crash(a, restart_in);
                }
                Ev::Restart(a, epoch) => self.restart(a, epoch),
                Ev::NetDown(a, down) => {
                    if self.agents[a].net_down == down {
                        continue;
                    }
                    self.log(|| format!("a{a} network {}", if down { "DOWN" } else { "up" }));
                    self.agents[a].net_down = down;
                    if down {
                        self.stats.net_downs += 1;
                        self.open_fault(FaultKind::NetDown, a);
                        self.agents[a].net_intervals.push((self.now, i64::MAX));
                    } else {
                        self.close_fault(FaultKind::NetDown, a);
                        if let Some(last) = self.agents[a].net_intervals.last_mut() {
                            last.1 = self.now;
                        }
                    }
                    self.topology_changed();
                }
                Ev::PathDown(a, down) => {
                    self.log(|| format!("a{a} probe path {}", if down { "DOWN" } else { "up" }));
                    self.agents[a].path_down = down;
                }
                Ev::Partition(groups) => {
                    self.log(|| format!("partition {groups:?}"));
                    if groups.is_some() {
                        self.stats.partitions += 1;
                        self.open_fault(FaultKind::Partition, 0);
                    } else {
                        self.close_fault(FaultKind::Partition, 0);
                    }
                    self.groups = groups;
                    self.topology_changed();
                }
                Ev::Loss(p) => {
                    if p > 0.0 {
                        self.stats.loss_periods += 1;
                        self.open_fault(FaultKind::Loss, 0);
                    } else {
                        self.close_fault(FaultKind::Loss, 0);
                    }
                    self.loss = p;
                }
                Ev::Round(..)
                | Ev::Heartbeat(..)
                | Ev::ProbeStart { .. }
                | Ev::ProbeDone { .. } => {}
            }
        }
        self.now = DURATION_MS;
        for agent in &mut self.agents {
            if let Some(since) = agent.iso_since.take() {
                agent.iso_intervals.push((since, DURATION_MS));
            }
        }
        for f in &mut self.faults {
            f.end = f.end.min(DURATION_MS);
        }
    }

    fn restart_delay(&mut self) -> i64 {
        if self.rng.chance(0.5) {
            // Back before the peers notice it missing.
            self.rng.range(200, 2_500)
        } else {
            self.rng.range(3_000, 25_000)
        }
    }

    fn probe_done(&mut self, a: usize, check: usize) {
        let target = CHECKS[check].0;
        let agent = &self.agents[a];
        let own_fault = agent.net_down || agent.path_down;
        let status = if own_fault {
            Status::Unreachable
        } else {
            self.truth[target]
        };
        let at = self.now;
        // Isolated for real: it says so and is cut off. (Back on the network, it says so until
        // its next round; what it probes meanwhile is genuine.)
        let cut_off = agent.net_down || (0..self.n).all(|b| !self.conns[a][b].connected);
        self.obs.insert(
            (a, check, at),
            ObsRec {
                status,
                legit: !status.is_failure() || own_fault || self.truth[target].is_failure(),
                isolated: agent.mesh.is_isolated() && cut_off,
            },
        );
        let obs = Observation {
            check: self.checks[check].clone(),
            status,
            latency_ms: Some(10),
            detail: String::new(),
            at: Timestamp(at),
        };
        let agent = &mut self.agents[a];
        agent.mesh.observe(&self.names[a], obs.clone());
        let changed = agent.last_status[check].is_some_and(|s| s != status);
        agent.last_status[check] = Some(status);
        self.broadcast(a, &Msg::Obs(obs));
        if changed {
            self.broadcast(a, &Msg::ProbeNow(check));
        }
    }

    fn receive(&mut self, from: usize, to: usize, msg: Msg) {
        let now = Timestamp(self.now);
        let name = self.names[from].clone();
        let agent = &mut self.agents[to];
        match msg {
            Msg::Hello(hello) => agent.mesh.on_hello(&name, hello, now),
            Msg::Heartbeat(hb) => {
                assert!(agent.mesh.on_heartbeat(&name, &hb, now));
            }
            Msg::Obs(obs) => {
                agent.mesh.observe(&name, obs);
            }
            Msg::ProbeNow(check) => {
                if self.now - agent.last_probe_now[check] >= PROBE_NOW_GAP_MS {
                    agent.last_probe_now[check] = self.now;
                    let epoch = agent.epoch;
                    let at = self.now + self.rng.range(0, 50);
                    self.push(
                        at,
                        Ev::ProbeStart {
                            agent: to,
                            epoch,
                            check,
                            regular: false,
                        },
                    );
                }
            }
            Msg::Entry(entry) => {
                agent.mesh.merge_log(entry);
            }
            Msg::Log(entries) => {
                for entry in entries {
                    agent.mesh.merge_log(entry);
                }
            }
        }
    }

    fn isolated_now(&self, a: usize) -> bool {
        let agent = &self.agents[a];
        let now = Timestamp(self.now);
        if agent.mesh.any_peer_live(now) {
            return false;
        }
        let me = &self.names[a];
        let mut latest: BTreeMap<&str, (Timestamp, bool)> = BTreeMap::new();
        for id in &self.checks {
            let Some((_, o)) = agent.mesh.votes(id).find(|(who, _)| *who == me) else {
                continue;
            };
            let unreachable = o.status == Status::Unreachable;
            let e = latest.entry(id.target()).or_insert((o.at, unreachable));
            if o.at > e.0 {
                *e = (o.at, unreachable);
            } else if o.at == e.0 {
                e.1 &= unreachable;
            }
        }
        latest.len() == TARGETS.len() && latest.len() >= 2 && latest.values().all(|(_, u)| *u)
    }

    fn round(&mut self, a: usize) {
        self.stats.agent_rounds += 1;
        let now = Timestamp(self.now);
        // 3. Isolation.
        let isolated = self.isolated_now(a);
        {
            let t = self.now;
            let agent = &mut self.agents[a];
            if isolated != agent.mesh.is_isolated() {
                if isolated {
                    agent.iso_since = Some(t);
                } else if let Some(since) = agent.iso_since.take() {
                    agent.iso_intervals.push((since, t));
                }
            }
            agent.mesh.set_isolated(isolated);
        }
        if isolated {
            self.stats.isolated_rounds += 1;
        }
        // 4. Conditions and verdicts into the engine; its decisions are owed.
        let agreed = {
            let agent = &mut self.agents[a];
            let conditions = agent.mesh.conditions(CONFIG, MAX_SKEW_MS, now);
            assert!(
                !isolated || conditions.is_empty(),
                "seed {}: isolated a{a} judges its peers",
                self.seed
            );
            for (subject, active) in conditions {
                agent.engine.set_condition(subject, active);
            }
            agent.mesh.agreed_statuses(now)
        };
        let decisions = self.agents[a].engine.step(&agreed, now);
        let agent = &mut self.agents[a];
        agent.unchecked_rounds += 1;
        if isolated
            || !decisions.is_empty()
            || agent.last_agreed != agreed
            || agent.unchecked_rounds >= CHECK_EVERY
        {
            agent.unchecked_rounds = 0;
            self.check_agreed(a, &agreed, isolated);
            self.agents[a].last_agreed = agreed;
        }
        for d in decisions {
            let key = d.notification();
            self.log(|| {
                format!(
                    "a{a} decides {} {} #{}",
                    key.incident, key.event, key.repeat
                )
            });
            self.decisions.push(DecisionRec {
                agent: a,
                at: self.now,
                key: key.clone(),
            });
            let agent = &mut self.agents[a];
            if isolated {
                agent.owed_while_isolated.insert(key.clone());
            }
            agent.mesh.owe(key, now);
        }
        // 5. Pages this agent sends: first those the channel refused before (the agent's outbox
        // is durable and retries until the channel takes them).
        if !self.agents[a].net_down {
            for key in std::mem::take(&mut self.agents[a].outbox) {
                self.deliver(a, key);
            }
        }
        let due = self.agents[a].mesh.due(now);
        assert!(
            !isolated || due.is_empty(),
            "seed {}: isolated a{a} sends {due:?}",
            self.seed
        );
        if self.trace && self.agents[a].mesh.owed().next().is_some() {
            let mesh = &self.agents[a].mesh;
            let owed: Vec<String> = mesh
                .owed()
                .map(|k| {
                    let claim = mesh
                        .log()
                        .entries()
                        .filter(|e| e.subject == k.subject && e.event == k.event)
                        .map(|e| format!("{}:{}:{:?}@{}", e.incident, e.sent_by, e.state, e.at))
                        .collect::<Vec<_>>();
                    format!("{} {} #{} {claim:?}", k.incident, k.event, k.repeat)
                })
                .collect();
            self.log(|| format!("a{a} eligible {:?} owes {owed:?}", mesh.eligible(now)));
        }
        let epoch = self.agents[a].epoch;
        for (key, entry) in due {
            if self.agents[a].epoch != epoch {
                // Crashed earlier in this round: the claim died with it.
                self.mid_sends.push(MidSend {
                    agent: a,
                    at: self.now,
                    key,
                    point: CrashPoint::Claimed,
                });
                continue;
            }
            self.log(|| format!("a{a} claims {} {} #{}", key.incident, key.event, key.repeat));
            let crash_at = (self.mid_send_p > 0.0 && self.rng.chance(self.mid_send_p)).then(|| {
                match self.rng.index(3) {
                    0 => CrashPoint::Claimed,
                    1 => CrashPoint::Gossiped,
                    _ => CrashPoint::Delivered,
                }
            });
            if crash_at == Some(CrashPoint::Claimed) {
                self.crash_mid_send(a, key, CrashPoint::Claimed);
                continue;
            }
            self.broadcast(a, &Msg::Entry(entry));
            if crash_at == Some(CrashPoint::Gossiped) {
                self.crash_mid_send(a, key, CrashPoint::Gossiped);
                continue;
            }
            if self.agents[a].net_down {
                self.agents[a].outbox.push(key);
                continue;
            }
            if crash_at == Some(CrashPoint::Delivered) {
                self.record_delivery(a, &key);
                self.crash_mid_send(a, key, CrashPoint::Delivered);
                continue;
            }
            self.deliver(a, key);
        }
    }

    fn crash_mid_send(&mut self, a: usize, key: NotificationKey, point: CrashPoint) {
        if !self.agents[a].up {
            return;
        }
        self.mid_sends.push(MidSend {
            agent: a,
            at: self.now,
            key,
            point,
        });
        let restart_in = self.restart_delay();
        self.crash(a, restart_in);
    }

    fn record_delivery(&mut self, a: usize, key: &NotificationKey) {
        self.log(|| format!("a{a} SENDS {} {} #{}", key.incident, key.event, key.repeat));
        assert!(
            !self.agents[a].owed_while_isolated.contains(key),
            "seed {}: a{a} sends {key:?}, owed while it was isolated (a stale alert)",
            self.seed
        );
        self.deliveries.push(Delivery {
            key: key.clone(),
            by: a,
            at: self.now,
        });
    }

    fn deliver(&mut self, a: usize, key: NotificationKey) {
        self.record_delivery(a, &key);
        let sent = self.agents[a].mesh.sent(&key, Timestamp(self.now));
        self.broadcast(a, &Msg::Entry(sent));
    }

    /// Invariants 1 and 2, every round: a check agreed failing has a quorum of fresh failing
    /// votes from eligible agents whose probes really failed, and no vote of an isolated agent
    /// counts.
    fn check_agreed(&mut self, a: usize, agreed: &BTreeMap<CheckId, Status>, isolated: bool) {
        let seed = self.seed;
        let now = Timestamp(self.now);
        let mesh = &self.agents[a].mesh;
        if isolated {
            assert!(
                agreed.is_empty(),
                "seed {seed}: isolated a{a} agrees on {agreed:?}"
            );
            return;
        }
        if !agreed.values().any(|s| s.is_failure()) {
            return;
        }
        let eligible = mesh.eligible(now);
        for (check, status) in agreed {
            if !status.is_failure() {
                continue;
            }
            self.stats.confirmed_rounds += 1;
            let ci = self.checks.iter().position(|c| c == check).expect("known");
            let conclusion = mesh.conclusion(check, now);
            assert_eq!(conclusion.verdict, Verdict::Down, "seed {seed}");
            let mut voters = 0;
            let mut failing = 0;
            for (who, o) in mesh.votes(check) {
                if !eligible.contains(who) || !o.is_fresh(now, FRESH_MS) {
                    continue;
                }
                voters += 1;
                if o.status.is_failure() {
                    failing += 1;
                }
            }
            let required = self.quorum.required(voters);
            assert!(
                failing >= required,
                "seed {seed} t={now}: a{a} agrees {check} is {status} with {failing} failing \
                 of {voters} voters, {required} required"
            );
            let mut truly_down = false;
            for who in &conclusion.confirmed_by {
                let wi = agent_index(who);
                let o = mesh
                    .votes(check)
                    .find(|(w, _)| *w == who)
                    .map(|(_, o)| o)
                    .expect("a confirmer has a vote");
                assert!(
                    eligible.contains(who) && o.status.is_failure() && o.is_fresh(now, FRESH_MS),
                    "seed {seed} t={now}: a{a} counts {who}'s vote {o:?} for {check}"
                );
                let rec = self
                    .obs
                    .get(&(wi, ci, o.at.as_millis()))
                    .unwrap_or_else(|| {
                        panic!("seed {seed}: a{a} holds a vote {who} never cast: {o:?}")
                    });
                assert!(
                    rec.status == o.status && rec.legit,
                    "seed {seed} t={now}: a{a} counts {who}'s failing vote on {check}, but \
                     its probe did not fail ({rec:?})"
                );
                assert!(
                    !rec.isolated,
                    "seed {seed} t={now}: a{a} counts a vote {who} cast on {check} at {} \
                     while it was isolated",
                    o.at
                );
                if who != &self.names[a] {
                    let heard_isolated = mesh
                        .peers()
                        .find(|(n, _)| n == who)
                        .is_some_and(|(_, v)| v.isolated);
                    assert!(
                        !heard_isolated,
                        "seed {seed} t={now}: a{a} counts the vote of {who}, which said it is \
                         isolated"
                    );
                }
                truly_down |= self.truth_at(CHECKS[ci].0, o.at.as_millis()).is_failure();
            }
            if !truly_down {
                self.stats.false_confirmations += 1;
                self.log(|| {
                    format!(
                        "a{a} FALSE confirmation of {check}: {conclusion:?}, eligible {eligible:?}"
                    )
                });
            }
        }
    }

    fn truth_at(&self, target: usize, at: i64) -> Status {
        self.truth_history[target]
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map_or(Status::Operational, |(_, s)| *s)
    }

    /// Whether agent `a` could send all through `[from, to]`: up, with its network, never
    /// isolated.
    fn healthy(&self, a: usize, from: i64, to: i64) -> bool {
        let agent = &self.agents[a];
        let overlaps = |iv: &(i64, i64)| iv.0 <= to && iv.1 >= from;
        !agent.down_intervals.iter().any(overlaps)
            && !agent.net_intervals.iter().any(overlaps)
            && !agent.iso_intervals.iter().any(overlaps)
    }

    /// Invariants 3, 4 and 5, and no loss, over the whole run.
    fn check_run(&mut self) {
        let seed = self.seed;
        let kind = self.kind;
        let bound = delivery_bound(self.n);
        for d in &self.deliveries {
            self.stats.deliveries += 1;
            match (d.key.subject.contains('/'), d.key.event, d.key.repeat) {
                (true, AlertEvent::Firing, 0) => {
                    self.stats.check_firings += 1;
                    // Was the target down at all while the votes that opened it were fresh?
                    let target = TARGETS
                        .iter()
                        .position(|t| d.key.subject.starts_with(&format!("{t}/")))
                        .expect("a target's check");
                    let start = incident_start(&d.key);
                    let down = self.truth_history[target]
                        .iter()
                        .enumerate()
                        .any(|(i, (at, s))| {
                            let until = self.truth_history[target]
                                .get(i + 1)
                                .map_or(i64::MAX, |(next, _)| *next);
                            s.is_failure() && *at <= start && until >= start - FRESH_MS
                        });
                    if !down {
                        self.stats.false_firings += 1;
                    }
                }
                (true, AlertEvent::Firing, _) => self.stats.reminders += 1,
                (true, AlertEvent::Resolved, _) => self.stats.resolved += 1,
                (false, _, _) => self.stats.condition_pages += 1,
            }
            // Invariant 6.
            if let Some(named) = d.key.subject.strip_prefix("clock_skew:")
                && d.key.event == AlertEvent::Firing
                && d.key.repeat == 0
            {
                self.stats.skew_pages += 1;
                let start = incident_start(&d.key);
                let skew = self.skew.unwrap_or_else(|| {
                    panic!(
                        "seed {seed}: {} sent by a{} at {}, and no clock was off",
                        d.key.incident, d.by, d.at
                    )
                });
                let expected = if self.n == 2 { 1 } else { skew.agent };
                assert!(
                    agent_index(named) == expected
                        && (skew.from..=skew.until + HEARTBEAT_MS + ROUND_MS).contains(&start),
                    "seed {seed}: {} sent by a{} at {}; a{}'s clock was {} ms off from {} to {}",
                    d.key.incident,
                    d.by,
                    d.at,
                    skew.agent,
                    skew.off_ms,
                    skew.from,
                    skew.until
                );
            }
        }
        let same_transition = |k: &NotificationKey, l: &NotificationKey| {
            k.subject == l.subject && k.event == l.event && k.repeat == l.repeat
        };
        let delivered_near = |key: &NotificationKey, from: i64, to: i64| {
            self.deliveries
                .iter()
                .any(|d| same_transition(&d.key, key) && d.at >= from && d.at <= to)
        };

        // No loss: a page owed by an agent that could send it all along went out (by it, or by
        // the agent whose claim covered it) within the bound.
        for dec in &self.decisions {
            if dec.at + bound > DURATION_MS || !self.healthy(dec.agent, dec.at, dec.at + bound) {
                continue;
            }
            assert!(
                delivered_near(&dec.key, dec.at - MATCH_WINDOW_MS, dec.at + bound),
                "seed {seed} ({kind:?}): a{} owed {:?} at {} and stayed able to send, but \
                 nobody sent it within {bound} ms",
                dec.agent,
                dec.key,
                dec.at
            );
            self.stats.decisions_verified += 1;
        }

        // Invariant 4: a notifier that crashed between claiming and sending is replaced.
        for ms in &self.mid_sends {
            self.stats.mid_send_crashes += 1;
            if ms.point == CrashPoint::Delivered || ms.at + bound > DURATION_MS {
                continue;
            }
            // Another agent owes the same transition, has not seen it sent before the crash,
            // and could send all along.
            let survivor = self.decisions.iter().find(|dec| {
                dec.agent != ms.agent
                    && same_transition(&dec.key, &ms.key)
                    && (dec.at - ms.at).abs() <= MATCH_WINDOW_MS
                    && (incident_start(&dec.key) - incident_start(&ms.key)).abs()
                        <= SAME_INCIDENT_MS
                    && dec.at <= ms.at + bound
                    && !delivered_near(&dec.key, dec.at - MATCH_WINDOW_MS, ms.at - 1)
                    && self.healthy(dec.agent, dec.at.min(ms.at), dec.at.max(ms.at) + bound)
            });
            let Some(survivor) = survivor else {
                continue;
            };
            let deadline = survivor.at.max(ms.at) + bound;
            if deadline > DURATION_MS {
                continue;
            }
            assert!(
                delivered_near(&ms.key, ms.at - 2_000, deadline),
                "seed {seed} ({kind:?}): a{} crashed at {} ({:?}) after claiming {:?}; no \
                 other agent sent it by {deadline}",
                ms.agent,
                ms.at,
                ms.point,
                ms.key
            );
            self.stats.mid_send_verified += 1;
        }

        // Invariants 3 and 5: group the deliveries into transitions (subject, event, repeat, one
        // incident); more than one delivery per transition needs a split of the mesh nearby.
        // Deliveries are one transition when their incidents are one incident seen by several
        // agents (opened within seconds of each other) and the agents decided the page within
        // seconds of each other. When one agent's incident ends or repeats far from another's,
        // a verdict shorter than a round that only some agents sampled split them: each is a
        // transition of its own (a design limitation, see the module docs).
        let decided: BTreeMap<(usize, &NotificationKey), i64> = self
            .decisions
            .iter()
            .map(|dec| ((dec.agent, &dec.key), dec.at))
            .collect();
        let decided_at = |d: &Delivery| decided.get(&(d.by, &d.key)).copied().unwrap_or(d.at);
        let mut sorted: Vec<&Delivery> = self.deliveries.iter().collect();
        sorted.sort_by_key(|d| {
            (
                d.key.subject.clone(),
                d.key.event,
                d.key.repeat,
                decided_at(d),
            )
        });
        // Two incidents of one agent are two transitions (a flap it saw), never one sent twice:
        // a delivery starts a new group when its agent decided another incident of the same
        // transition since the group's first incident began.
        let later_incident = |d: &Delivery, group_start: i64| {
            let start = incident_start(&d.key);
            self.decisions.iter().any(|dec| {
                dec.agent == d.by
                    && same_transition(&dec.key, &d.key)
                    && dec.key != d.key
                    && (group_start - SAME_INCIDENT_MS..start).contains(&incident_start(&dec.key))
            })
        };
        let mut groups: Vec<Vec<&Delivery>> = Vec::new();
        for d in sorted {
            match groups.last_mut() {
                Some(g)
                    if same_transition(&g[0].key, &d.key)
                        && (incident_start(&d.key) - incident_start(&g[0].key)).abs()
                            <= SAME_INCIDENT_MS
                        && decided_at(d) - decided_at(g[0]) <= SAME_INCIDENT_MS
                        && !later_incident(d, incident_start(&g[0].key)) =>
                {
                    g.push(d)
                }
                _ => groups.push(vec![d]),
            }
        }
        for g in &groups {
            if g.len() == 1 {
                self.stats.transitions_exactly_once += 1;
                continue;
            }
            let from =
                g.iter().map(|d| incident_start(&d.key)).min().unwrap_or(0) - FAULT_AFTERMATH_MS;
            let to = g.iter().map(|d| d.at).max().unwrap_or(0);
            let describe = || {
                g.iter()
                    .map(|d| format!("a{} at {} ({})", d.by, d.at, d.key.incident))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            assert!(
                kind != Kind::Clean,
                "seed {seed} ({kind:?}): while the mesh was connected, {} {} #{} went out \
                 {} times: {}",
                g[0].key.subject,
                g[0].key.event,
                g[0].key.repeat,
                g.len(),
                describe()
            );
            let causes: BTreeSet<FaultKind> = self
                .faults
                .iter()
                .filter(|f| f.start <= to && f.end >= from)
                .map(|f| f.kind)
                .collect();
            assert!(
                !causes.is_empty(),
                "seed {seed} ({kind:?}): duplicate {} {} #{} with no partition, loss or crash \
                 near it: {}",
                g[0].key.subject,
                g[0].key.event,
                g[0].key.repeat,
                describe()
            );
            self.stats.duplicates += (g.len() - 1) as u64;
            let label = causes
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join("+");
            *self.stats.duplicates_by.entry(label).or_default() += (g.len() - 1) as u64;
        }
    }
}

fn new_engine() -> AlertEngine {
    AlertEngine::new(
        AlertPolicy {
            cooldown_ms: COOLDOWN_MS,
            repeat_interval_ms: REPEAT_MS,
        },
        Vec::<(String, Vec<String>)>::new(),
    )
    .without_offline_rule()
}

fn agent_index(name: &str) -> usize {
    name[1..].parse().expect("agent names are a0, a1, …")
}

/// When the incident of `key` opened (its id is `subject@start`).
fn incident_start(key: &NotificationKey) -> i64 {
    key.incident
        .rsplit_once('@')
        .and_then(|(_, t)| t.parse().ok())
        .expect("incident ids end in @start")
}

// ---------------------------------------------------------------------------------------------
// Driver.

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs this kind's share of the seeds; returns the summed counters.
fn run_kind(kind: Kind) -> Stats {
    let trace = std::env::var("POM_SIM_TRACE").is_ok_and(|v| v == "1");
    let seeds: Vec<u64> = match env_u64("POM_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let total = env_u64("POM_SIM_SEEDS").unwrap_or(5_000);
            (0..total.div_ceil(5)).collect()
        }
    };
    let started = Instant::now();
    // Seeds are independent: two threads share them (the runs stay single-threaded and
    // deterministic; this only keeps the five tests balanced on two cores).
    let run_share = |share: &[u64]| -> Result<Stats, String> {
        let mut total = Stats::default();
        for &seed in share {
            let result = catch_unwind(AssertUnwindSafe(|| {
                let mut world = World::new(seed, kind, trace);
                world.run();
                world.check_run();
                world.stats.seeds = 1;
                world.stats
            }));
            match result {
                Ok(stats) => total.add(&stats),
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    return Err(format!(
                        "{kind:?} seed {seed} failed: {msg}\n  reproduce: POM_SIM_SEED={seed} \
                         POM_SIM_TRACE=1 cargo test -p mesh-proto --test sim -- {} --nocapture",
                        test_name(kind)
                    ));
                }
            }
        }
        Ok(total)
    };
    let (first, second) = seeds.split_at(seeds.len() / 2);
    let results = std::thread::scope(|scope| {
        let other = scope.spawn(|| run_share(second));
        [
            run_share(first),
            other.join().expect("the sim thread returns"),
        ]
    });
    let mut total = Stats::default();
    for result in results {
        match result {
            Ok(stats) => total.add(&stats),
            Err(failure) => panic!("{failure}"),
        }
    }
    println!(
        "sim {kind:?} in {:.1?}: {}",
        started.elapsed(),
        total.summary()
    );
    total
}

fn test_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Clean => "connected_mesh",
        Kind::Crashes => "crashes",
        Kind::Partitions => "partitions",
        Kind::LossAndNetwork => "loss_and_lost_networks",
        Kind::Mixed => "everything_at_once",
    }
}

/// Whether the counters should be checked for vacuity (enough seeds, not one seed).
fn full_run() -> bool {
    env_u64("POM_SIM_SEED").is_none() && env_u64("POM_SIM_SEEDS").is_none_or(|n| n >= 500)
}

/// The counters show the scenarios exercised what the invariants are about.
fn assert_exercised(s: &Stats, what: &str, ok: bool) {
    assert!(ok, "too few {what} to mean anything: {}", s.summary());
}

#[test]
fn connected_mesh() {
    let s = run_kind(Kind::Clean);
    if full_run() {
        assert_exercised(&s, "incidents", s.check_firings > 4 * s.seeds);
        assert_exercised(&s, "reminders", s.reminders > s.seeds);
        assert_exercised(&s, "resolutions", s.resolved > 4 * s.seeds);
        assert_exercised(
            &s,
            "monitoring_offline pages",
            s.condition_pages > s.seeds / 5,
        );
        assert_exercised(
            &s,
            "checked transitions",
            s.transitions_exactly_once > 10 * s.seeds,
        );
        assert_exercised(&s, "clock_skew pages", s.skew_pages > s.seeds / 5);
        assert_eq!(s.duplicates, 0);
    }
}

#[test]
fn crashes() {
    let s = run_kind(Kind::Crashes);
    if full_run() {
        assert_exercised(&s, "crashes", s.crashes > 2 * s.seeds);
        assert_exercised(
            &s,
            "mid-send crashes taken over",
            s.mid_send_verified > s.seeds,
        );
        assert_exercised(&s, "checked pages", s.decisions_verified > 10 * s.seeds);
    }
}

#[test]
fn partitions() {
    let s = run_kind(Kind::Partitions);
    if full_run() {
        assert_exercised(&s, "partitions", s.partitions > s.seeds);
        assert_exercised(
            &s,
            "duplicates across partitions",
            s.duplicates > s.seeds / 10,
        );
        assert_exercised(&s, "checked pages", s.decisions_verified > 10 * s.seeds);
    }
}

#[test]
fn loss_and_lost_networks() {
    let s = run_kind(Kind::LossAndNetwork);
    if full_run() {
        assert_exercised(&s, "lost networks", s.net_downs > s.seeds);
        assert_exercised(&s, "isolated rounds", s.isolated_rounds > 10 * s.seeds);
        assert_exercised(&s, "lost messages", s.lost_messages > 50 * s.seeds);
        assert_exercised(&s, "checked pages", s.decisions_verified > 10 * s.seeds);
    }
}

#[test]
fn everything_at_once() {
    let s = run_kind(Kind::Mixed);
    if full_run() {
        assert_exercised(
            &s,
            "mid-send crashes taken over",
            s.mid_send_verified > s.seeds / 4,
        );
        assert_exercised(
            &s,
            "pages reclaimed after a restart",
            s.reclaims > s.seeds / 10,
        );
        assert_exercised(&s, "partitions", s.partitions > s.seeds / 2);
        assert_exercised(&s, "isolated rounds", s.isolated_rounds > s.seeds);
        assert_exercised(&s, "checked pages", s.decisions_verified > 10 * s.seeds);
    }
}
