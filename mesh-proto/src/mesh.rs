//! One agent's view of the mesh, as a state machine (DESIGN.md, "Mesh semantics").
//!
//! [`MeshState`] takes what arrives from peers (hellos, heartbeats, observations, log entries)
//! and what this agent decides (its own observations, its isolation, the pages its alert engine
//! owes), each with `now`, and answers the questions the agent acts on:
//!
//! - which peers are live ([`peer_state`](crate::quorum::peer_state)), and which agents may vote
//!   and send (the *eligible* ones: live and not isolated, this agent included);
//! - the verdict on each check from the freshest votes ([`MeshState::conclusion`]);
//! - which peers lost their network: every target unreachable for them while the mesh sees the
//!   same targets up ([`MeshState::offline_peers`]);
//! - which owed notifications this agent sends now ([`MeshState::due`]), and which another agent
//!   already claimed (the notification log, [`crate::notify_log`]).
//!
//! **Matching notifications across agents.** Each agent's alert engine opens its own incidents
//! from the same verdicts, a few hundred milliseconds apart, so incident ids differ slightly
//! between agents. A page this agent owes is covered by a claim of another agent for the same
//! subject, event and repeat, made at most `match_window_ms` before the page became owed (or at
//! any time after it), that no earlier page of this agent already matched. The agent then
//! adopts the claimer's incident id ([`MeshState::incident_alias`]), so a later `resolved` sent
//! by a survivor carries the id of the `firing` it resolves.
//!
//! **Holding, not dropping.** A `sent` claim discharges the page. A `sending` claim only holds
//! it: the claimer may die before it sends. The page stays owed until the `sent` arrives, and if
//! the claimer goes missing or comes back as a new instance (its Hello says so), the takeover
//! order of [`crate::notify_log`] applies from its claim on.
//!
//! No I/O and no clock: the transport delivers, the agent decides when to ask.

use std::collections::{BTreeMap, BTreeSet};

use crate::notify_log::{self, Merged, NotificationKey, NotificationLog};
use crate::quorum::{self, Conclusion, LivenessPolicy, PeerState, QuorumPolicy, Vote};
use crate::wire::{ConfigHash, Heartbeat, Hello, LogEntry, LogState};
use crate::{AlertKind, CheckId, CheckKind, Observation, Status, Subject, Timestamp};

/// The fixed rules of one agent's mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// This agent's name.
    pub me: String,
    /// The other agents' names.
    pub peers: BTreeSet<String>,
    /// Heartbeat interval and missed heartbeats.
    pub liveness: LivenessPolicy,
    /// How many failing votes confirm.
    pub quorum: QuorumPolicy,
    /// How long each position in the notifier order waits for a claim before it sends.
    pub takeover_ms: i64,
    /// How long before a page another agent's claim of it may be (see the module docs).
    pub match_window_ms: i64,
}

/// What this agent knows of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// When its latest heartbeat arrived, on this agent's clock.
    pub last_heartbeat: Option<Timestamp>,
    /// Its latest Hello (version, instance id, config hash at connection time).
    pub hello: Option<Hello>,
    /// Its latest heartbeat's sequence number.
    pub seq: u64,
    /// Whether it said it is isolated.
    pub isolated: bool,
    /// Its clock minus ours, from its latest heartbeat (ms).
    pub clock_skew_ms: Option<i64>,
    /// Its shared-config hash, from its latest heartbeat or hello.
    pub config_hash: Option<ConfigHash>,
    /// Since when it is watched: before its first heartbeat it is missing this long after.
    pub watching_since: Timestamp,
}

impl PeerView {
    fn new(now: Timestamp) -> Self {
        Self {
            last_heartbeat: None,
            hello: None,
            seq: 0,
            isolated: false,
            clock_skew_ms: None,
            config_hash: None,
            watching_since: now,
        }
    }
}

/// A page this agent's engine owes, waiting to be sent by someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owed {
    /// When it became owed.
    since: Timestamp,
    /// This agent claimed it (and sends it).
    claimed: bool,
}

/// When a peer restarted (its Hello showed a new instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Restart {
    /// The new instance's wall clock in its Hello: its claims made before died with the old one.
    theirs: Timestamp,
    /// When the Hello arrived, on this agent's clock: the takeover order of the claims it
    /// abandoned runs from then.
    seen: Timestamp,
}

/// How many probes in a row of every check a live peer must see `unreachable` before it counts
/// as having lost its network ([`MeshState::offline_peers`]). One round is not enough: on a lossy
/// link every probe of a round can time out now and then while the host's network works.
pub const OFFLINE_STREAK: u32 = 3;

/// One agent's view of the mesh. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct MeshState {
    settings: MeshSettings,
    isolated: bool,
    peers: BTreeMap<String, PeerView>,
    /// check → agent → its latest observation.
    votes: BTreeMap<CheckId, BTreeMap<String, Observation>>,
    /// check → how long an observation of it stays fresh (2 × interval + timeout).
    fresh_for: BTreeMap<CheckId, i64>,
    log: NotificationLog,
    owed: BTreeMap<NotificationKey, Owed>,
    /// Log entries of other agents matched to a page of this agent: theirs → mine.
    matched: BTreeMap<NotificationKey, NotificationKey>,
    /// Peers whose Hello showed a new instance: its `sending` claims made before then died with
    /// the previous instance, unless the new one renews them.
    restarts: BTreeMap<String, Restart>,
    /// check → agent → how many of its latest observations of the check in a row were
    /// `unreachable`.
    unreachable_streaks: BTreeMap<CheckId, BTreeMap<String, u32>>,
    /// This agent's incident id → the id another agent's claim gave the same incident.
    aliases: BTreeMap<String, String>,
    /// Checks whose latest own observation is a failure seen while isolated: forgotten when
    /// the isolation ends, so that they never count as votes.
    isolated_failures: BTreeSet<CheckId>,
}

impl MeshState {
    /// A fresh view at `now`, with the checks that are voted on and how long their
    /// observations stay fresh.
    pub fn new(
        settings: MeshSettings,
        checks: impl IntoIterator<Item = (CheckId, i64)>,
        now: Timestamp,
    ) -> Self {
        let peers = settings
            .peers
            .iter()
            .filter(|p| **p != settings.me)
            .map(|p| (p.clone(), PeerView::new(now)))
            .collect();
        Self {
            settings,
            isolated: false,
            peers,
            votes: BTreeMap::new(),
            fresh_for: checks.into_iter().collect(),
            log: NotificationLog::default(),
            owed: BTreeMap::new(),
            matched: BTreeMap::new(),
            restarts: BTreeMap::new(),
            unreachable_streaks: BTreeMap::new(),
            aliases: BTreeMap::new(),
            isolated_failures: BTreeSet::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    /// Applies a reloaded config: new checks, peers and rules. Votes of removed checks and
    /// everything about removed peers are forgotten; a new peer is watched from `now`.
    pub fn reconfigure(
        &mut self,
        settings: MeshSettings,
        checks: impl IntoIterator<Item = (CheckId, i64)>,
        now: Timestamp,
    ) {
        self.fresh_for = checks.into_iter().collect();
        let fresh_for = &self.fresh_for;
        self.votes.retain(|id, _| fresh_for.contains_key(id));
        self.unreachable_streaks
            .retain(|id, _| fresh_for.contains_key(id));
        self.peers.retain(|name, _| settings.peers.contains(name));
        for peer in &settings.peers {
            if *peer != settings.me && !self.peers.contains_key(peer) {
                self.peers.insert(peer.clone(), PeerView::new(now));
            }
        }
        self.settings = settings;
    }

    /// Whether `name` is a configured peer.
    pub fn is_peer(&self, name: &str) -> bool {
        self.peers.contains_key(name)
    }

    /// Every peer and what is known of it.
    pub fn peers(&self) -> impl Iterator<Item = (&str, &PeerView)> {
        self.peers.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The liveness of `peer` at `now` (`missing` for a name that is not a peer).
    pub fn peer_state(&self, peer: &str, now: Timestamp) -> PeerState {
        self.peers.get(peer).map_or(PeerState::Missing, |view| {
            quorum::peer_state(
                view.last_heartbeat,
                view.watching_since,
                now,
                &self.settings.liveness,
            )
        })
    }

    /// Whether any peer is live at `now`.
    pub fn any_peer_live(&self, now: Timestamp) -> bool {
        self.peers.keys().any(|p| self.peer_state(p, now).is_live())
    }

    /// A peer's Hello. Its config hash counts until its first heartbeat.
    ///
    /// A Hello from a new instance of a peer (it restarted), arriving at `now`, also ends the
    /// `sending` claims it made before, unless the new instance renews them: what its outbox
    /// still held survives the restart, the rest is as lost as if it had gone missing.
    pub fn on_hello(&mut self, from: &str, hello: Hello, now: Timestamp) {
        if let Some(view) = self.peers.get_mut(from) {
            if let Some(previous) = &view.hello
                && previous.instance_id != hello.instance_id
            {
                let restart = Restart {
                    theirs: hello.wall_clock,
                    seen: now,
                };
                self.restarts.insert(from.to_owned(), restart);
            }
            if view.hello.as_ref().map(|h| &h.instance_id) != Some(&hello.instance_id) {
                view.seq = 0; // a restart: its sequence starts again
            }
            view.config_hash = Some(hello.config_hash);
            view.hello = Some(hello);
        }
    }

    /// A peer's heartbeat, received at `now`. Returns false for a name that is not a peer.
    pub fn on_heartbeat(&mut self, from: &str, heartbeat: &Heartbeat, now: Timestamp) -> bool {
        let Some(view) = self.peers.get_mut(from) else {
            return false;
        };
        view.last_heartbeat = Some(now);
        view.seq = heartbeat.seq;
        view.isolated = heartbeat.isolated;
        view.clock_skew_ms = Some(heartbeat.wall_clock.millis_since(now));
        view.config_hash = Some(heartbeat.config_hash);
        true
    }

    /// Records an observation by `agent` (this one or a peer). Returns whether it was taken:
    /// observations of unknown checks, of unknown agents, and older than the one held are
    /// dropped. Push-heartbeat observations are not votes: the agent handles them as pings.
    pub fn observe(&mut self, agent: &str, observation: Observation) -> bool {
        let known_agent = agent == self.settings.me || self.peers.contains_key(agent);
        if !known_agent
            || observation.check.kind() == CheckKind::Heartbeat
            || !self.fresh_for.contains_key(&observation.check)
        {
            return false;
        }
        let votes = self.votes.entry(observation.check.clone()).or_default();
        match votes.get(agent) {
            Some(held) if held.at > observation.at => false,
            held => {
                // The same observation again (a peer catching up after a reconnect) is no new
                // probe: it does not lengthen the streak.
                let again = held.is_some_and(|h| h.at == observation.at);
                if agent == self.settings.me {
                    if self.isolated && observation.status.is_failure() {
                        self.isolated_failures.insert(observation.check.clone());
                    } else {
                        self.isolated_failures.remove(&observation.check);
                    }
                }
                let streak = self
                    .unreachable_streaks
                    .entry(observation.check.clone())
                    .or_default()
                    .entry(agent.to_owned())
                    .or_default();
                if observation.status != Status::Unreachable {
                    *streak = 0;
                } else if !again {
                    *streak = streak.saturating_add(1);
                }
                votes.insert(agent.to_owned(), observation);
                true
            }
        }
    }

    /// Every agent's latest observation of `check`.
    pub fn votes(&self, check: &CheckId) -> impl Iterator<Item = (&str, &Observation)> {
        self.votes
            .get(check)
            .into_iter()
            .flatten()
            .map(|(a, o)| (a.as_str(), o))
    }

    /// Sets whether this agent is isolated: no live peer, and every probe of its latest round
    /// unreachable. An isolated agent casts no vote and sends nothing.
    ///
    /// Becoming isolated drops the pages owed and not claimed yet: by the time this agent can
    /// send again they would be stale, and the agents that stayed connected decided on their own.
    /// Ending the isolation forgets this agent's own failing observations made while isolated:
    /// they are the stale failures of its own outage, and would otherwise count as its votes
    /// (alone, when the peers' votes went stale meanwhile) until its next probe.
    pub fn set_isolated(&mut self, isolated: bool) {
        if isolated && !self.isolated {
            self.owed.retain(|_, o| o.claimed);
        }
        if !isolated && self.isolated {
            for check in std::mem::take(&mut self.isolated_failures) {
                if let Some(votes) = self.votes.get_mut(&check) {
                    votes.remove(&self.settings.me);
                }
            }
        }
        self.isolated = isolated;
    }

    /// Whether this agent is isolated.
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    /// The agents that vote and may send at `now`: live, non-isolated peers, and this agent
    /// unless it is isolated.
    pub fn eligible(&self, now: Timestamp) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .peers
            .iter()
            .filter(|(name, view)| !view.isolated && self.peer_state(name, now).is_live())
            .map(|(name, _)| name.clone())
            .collect();
        if !self.isolated {
            out.insert(self.settings.me.clone());
        }
        out
    }

    /// The agent that sends notifications at `now`, if any.
    pub fn notifier(&self, now: Timestamp) -> Option<String> {
        quorum::notifier(&self.eligible(now)).map(str::to_owned)
    }

    /// What the mesh concludes about `check` at `now`.
    pub fn conclusion(&self, check: &CheckId, now: Timestamp) -> Conclusion {
        self.conclude(check, &self.eligible(now), now)
    }

    fn conclude(&self, check: &CheckId, eligible: &BTreeSet<String>, now: Timestamp) -> Conclusion {
        let max_age = self.fresh_for.get(check).copied().unwrap_or(0);
        let votes: Vec<Vote> = self
            .votes(check)
            .map(|(agent, o)| Vote {
                agent: agent.to_owned(),
                status: o.status,
                at: o.at,
            })
            .collect();
        quorum::verdict(
            &votes,
            &self.settings.me,
            eligible,
            max_age,
            now,
            self.settings.quorum,
        )
    }

    /// The live peers that see every target they probed last unreachable (at least two
    /// targets), each of those checks in [`OFFLINE_STREAK`] probes in a row, while the mesh's
    /// verdict on those targets' checks is not `down`: they lost their own network, and cannot
    /// say so themselves.
    pub fn offline_peers(&self, now: Timestamp) -> Vec<String> {
        let eligible = self.eligible(now);
        self.peers
            .iter()
            .filter(|(p, view)| !view.isolated && self.peer_state(p, now).is_live())
            .map(|(p, _)| p)
            .filter(|peer| {
                // Per target: the peer's newest fresh observation time, and whether all its
                // observations at that time are unreachable.
                let mut latest: BTreeMap<&str, (Timestamp, bool)> = BTreeMap::new();
                let mut checks = Vec::new();
                for (check, by_agent) in &self.votes {
                    let Some(o) = by_agent.get(peer.as_str()) else {
                        continue;
                    };
                    let max_age = self.fresh_for.get(check).copied().unwrap_or(0);
                    if !o.is_fresh(now, max_age) {
                        continue;
                    }
                    checks.push(check);
                    let streak = self
                        .unreachable_streaks
                        .get(check)
                        .and_then(|by_agent| by_agent.get(peer.as_str()))
                        .copied()
                        .unwrap_or(0);
                    let unreachable = o.status == Status::Unreachable && streak >= OFFLINE_STREAK;
                    let entry = latest.entry(check.target()).or_insert((o.at, unreachable));
                    if o.at > entry.0 {
                        *entry = (o.at, unreachable);
                    } else if o.at == entry.0 {
                        entry.1 &= unreachable;
                    }
                }
                latest.len() >= 2
                    && latest.values().all(|(_, unreachable)| *unreachable)
                    && checks.iter().any(|check| {
                        // Someone else sees this check answer.
                        self.votes(check).any(|(agent, o)| {
                            agent != peer.as_str()
                                && eligible.contains(agent)
                                && o.is_fresh(now, self.fresh_for[*check])
                                && !o.status.is_failure()
                        })
                    })
                    && checks.iter().all(|check| {
                        self.conclude(check, &eligible, now).verdict != crate::Verdict::Down
                    })
            })
            .cloned()
            .collect()
    }

    /// The statuses the mesh agrees on at `now`, to feed the alert engine: for a check
    /// confirmed `down`, the failing status most of its confirmers saw (this agent's own if it
    /// is one of them); for a check that is `up`, `degraded` when a quorum of the voters sees it
    /// degraded, else `operational`. A `local_only` check is `up` for the mesh: only this
    /// agent's own vote tells the two apart, so treating it otherwise would feed agents that
    /// hold the same votes different statuses (the agent whose probe failed last would resolve
    /// an incident one probe later than the others, after they took over its notification).
    /// Checks without votes (`unknown`) are left out: they keep their previous state. An
    /// isolated agent agrees on nothing.
    pub fn agreed_statuses(&self, now: Timestamp) -> BTreeMap<CheckId, Status> {
        let mut out = BTreeMap::new();
        if self.isolated {
            return out;
        }
        let eligible = self.eligible(now);
        for check in self.fresh_for.keys() {
            let conclusion = self.conclude(check, &eligible, now);
            let status = match conclusion.verdict {
                crate::Verdict::Down => {
                    let seen: Vec<Status> = conclusion
                        .confirmed_by
                        .iter()
                        .filter_map(|a| self.votes.get(check)?.get(a).map(|o| o.status))
                        .collect();
                    let mine = self
                        .votes
                        .get(check)
                        .and_then(|v| v.get(&self.settings.me))
                        .filter(|_| conclusion.confirmed_by.contains(&self.settings.me))
                        .map(|o| o.status);
                    let errors = seen.iter().filter(|s| **s == Status::Error).count();
                    mine.unwrap_or(if errors * 2 >= seen.len() {
                        Status::Error
                    } else {
                        Status::Unreachable
                    })
                }
                crate::Verdict::Up | crate::Verdict::LocalOnly => {
                    let max_age = self.fresh_for.get(check).copied().unwrap_or(0);
                    let degraded = self
                        .votes(check)
                        .filter(|(a, o)| {
                            eligible.contains(*a)
                                && o.is_fresh(now, max_age)
                                && o.status == Status::Degraded
                        })
                        .count();
                    if degraded >= self.settings.quorum.required(conclusion.voters) {
                        Status::Degraded
                    } else {
                        Status::Operational
                    }
                }
                crate::Verdict::Unknown => continue,
            };
            out.insert(check.clone(), status);
        }
        out
    }

    /// The conditions of the mesh's agents at `now`, each active or not, to feed the alert
    /// engine ([`AlertEngine::set_condition`](crate::AlertEngine::set_condition)): a peer
    /// missing, a peer that lost its network, a peer with another shared config than
    /// `my_config`, a peer whose clock is more than `max_skew_ms` off. An isolated agent
    /// judges nobody: it returns nothing.
    pub fn conditions(
        &self,
        my_config: ConfigHash,
        max_skew_ms: i64,
        now: Timestamp,
    ) -> Vec<(Subject, bool)> {
        if self.isolated {
            return Vec::new();
        }
        let offline: BTreeSet<String> = self.offline_peers(now).into_iter().collect();
        // Without a reference, drift and skew are not judged: their conditions keep their state.
        let reference = self.agreed_config(my_config, now);
        let clock = self.reference_clock(max_skew_ms, now);
        let mut out = Vec::new();
        if let Some(reference) = reference {
            out.push((
                Subject::agent(AlertKind::ConfigDrift, self.settings.me.clone()),
                my_config != reference,
            ));
        }
        if let Some(clock) = clock {
            out.push((
                Subject::agent(AlertKind::ClockSkew, self.settings.me.clone()),
                clock.abs() > max_skew_ms,
            ));
        }
        for (name, view) in &self.peers {
            let missing = self.peer_state(name, now) == PeerState::Missing;
            // A peer not heard from since watching started (this agent just started) is not
            // known to be back: its `peer_missing` keeps its state until a heartbeat or the
            // missing deadline says.
            if missing || view.last_heartbeat.is_some() {
                out.push((Subject::agent(AlertKind::PeerMissing, name), missing));
            }
            out.push((
                Subject::agent(AlertKind::MonitoringOffline, name),
                offline.contains(name),
            ));
            if let Some(reference) = reference {
                out.push((
                    Subject::agent(AlertKind::ConfigDrift, name),
                    !missing && view.config_hash.is_some_and(|h| h != reference),
                ));
            }
            if let Some(clock) = clock {
                out.push((
                    Subject::agent(AlertKind::ClockSkew, name),
                    !missing
                        && view
                            .clock_skew_ms
                            .is_some_and(|s| (s - clock).abs() > max_skew_ms),
                ));
            }
        }
        out
    }

    /// How far `agent`'s clock (this one's, or a live peer's) is off the clock the mesh agrees
    /// on (ms, positive when ahead), as `clock_skew` judges it; `None` without a reference or
    /// a reading.
    pub fn clock_off(&self, agent: &str, max_skew_ms: i64, now: Timestamp) -> Option<i64> {
        let reference = self.reference_clock(max_skew_ms, now)?;
        let clock = if agent == self.settings.me {
            0
        } else {
            self.peers.get(agent)?.clock_skew_ms?
        };
        Some(clock - reference)
    }

    /// The shared-config hash the mesh agrees on (see [`Self::reference`]), as `config_drift`
    /// judges it: a drifted agent is named by all, itself included, and paged once, instead of
    /// each side paging about the other.
    pub fn agreed_config(&self, my_config: ConfigHash, now: Timestamp) -> Option<ConfigHash> {
        self.reference(my_config, |view| view.config_hash, |a, b| a == b, now)
    }

    /// The clock the mesh agrees on, as an offset from this agent's (ms; see
    /// [`Self::reference`]; two clocks agree within `max_skew_ms`): an agent whose clock is off
    /// is named by all, itself included, instead of it naming everyone else.
    fn reference_clock(&self, max_skew_ms: i64, now: Timestamp) -> Option<i64> {
        self.reference(
            0,
            |view| view.clock_skew_ms,
            |a, b| (a - b).abs() <= max_skew_ms,
            now,
        )
    }

    /// The value the mesh agrees on, among this agent's (`mine`) and each live peer's
    /// (`theirs`): that of the agent with the most others agreeing with it, ties going to the
    /// name that sorts first. Every agent picks the same one (up to the noise of measuring).
    ///
    /// `None` while that is a guess: the value is held by no strict majority of the whole mesh
    /// and some agent is not heard. An agent that has just started and heard one peer of three
    /// cannot tell which of the two is the odd one out; the tie would name whoever sorts last.
    /// With every agent heard, the tie-break stands (two agents, two clocks: the second by name
    /// is named, on both sides).
    fn reference<T: Copy + Ord>(
        &self,
        mine: T,
        theirs: impl Fn(&PeerView) -> Option<T>,
        agree: impl Fn(T, T) -> bool,
        now: Timestamp,
    ) -> Option<T> {
        let mut values: Vec<(&str, T)> = vec![(self.settings.me.as_str(), mine)];
        values.extend(
            self.peers
                .iter()
                .filter(|(name, _)| self.peer_state(name, now).is_live())
                .filter_map(|(name, view)| Some((name.as_str(), theirs(view)?))),
        );
        values.sort();
        let agreeing = |v: T| values.iter().filter(|(_, x)| agree(*x, v)).count();
        // max_by_key keeps the last maximum: compare the reversed position so the first (by
        // name) of the most agreed-on wins.
        let (count, value) = values
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (agreeing(*v), std::cmp::Reverse(i), *v))
            .max_by_key(|(count, i, _)| (*count, *i))
            .map(|(count, _, v)| (count, v))?;
        let mesh = self.peers.len() + 1;
        (2 * count > mesh || values.len() == mesh).then_some(value)
    }

    /// Notes that this agent's engine owes the page `key` from `now`.
    ///
    /// An isolated agent owes nothing: what its engine decides then (a reminder, a firing the
    /// cooldown held back) comes from a stale view, and the connected agents decide on their own.
    pub fn owe(&mut self, key: NotificationKey, now: Timestamp) {
        if self.isolated {
            return;
        }
        self.owed.entry(key).or_insert(Owed {
            since: now,
            claimed: false,
        });
    }

    /// The owed pages this agent should send at `now`, claimed: each comes with the `sending`
    /// log entry to store and gossip before sending. Pages another agent sent meanwhile are
    /// dropped; pages another live agent is sending are held until its `sent` arrives, or until
    /// it goes missing or restarts (then the takeover order applies from its claim on).
    pub fn due(&mut self, now: Timestamp) -> Vec<(NotificationKey, LogEntry)> {
        let eligible = self.eligible(now);
        let me = self.settings.me.clone();
        let mut out = Vec::new();
        let keys: Vec<NotificationKey> = self.owed.keys().cloned().collect();
        for key in keys {
            let Some(owed) = self.owed.get(&key).copied() else {
                continue;
            };
            if owed.claimed {
                continue;
            }
            let mut claim = self.covering_claim(&key, owed.since, &eligible).cloned();
            let mut since = owed.since;
            if let Some(c) = claim.as_ref().filter(|c| c.sent_by != me) {
                self.adopt(&key, c);
                if c.state == LogState::Sent {
                    self.owed.remove(&key);
                    continue;
                }
                if let Some(restart) = self.abandoned(c) {
                    // Its new instance renews the claim if its outbox still holds the page,
                    // right after its Hello. It gets one takeover window for that, whatever
                    // its place; then the takeover order runs as if nobody had claimed.
                    since = since.max(restart.seen.add_millis(self.settings.takeover_ms));
                    claim = None;
                } else if eligible.contains(&c.sent_by) {
                    continue; // it is being sent: hold the page until it is sent
                }
            }
            let send = notify_log::should_send(
                claim.as_ref(),
                &me,
                &eligible,
                since,
                now,
                self.settings.takeover_ms,
            );
            if send {
                let entry = LogEntry {
                    subject: key.subject.clone(),
                    incident: key.incident.clone(),
                    event: key.event,
                    repeat: key.repeat,
                    sent_by: me.clone(),
                    at: now,
                    state: LogState::Sending,
                };
                self.log.merge(entry.clone());
                if let Some(owed) = self.owed.get_mut(&key) {
                    owed.claimed = true;
                }
                out.push((key, entry));
            }
        }
        out
    }

    /// Marks a claimed page sent; returns the `sent` log entry to gossip.
    pub fn sent(&mut self, key: &NotificationKey, now: Timestamp) -> LogEntry {
        self.owed.remove(key);
        let entry = LogEntry {
            subject: key.subject.clone(),
            incident: key.incident.clone(),
            event: key.event,
            repeat: key.repeat,
            sent_by: self.settings.me.clone(),
            at: now,
            state: LogState::Sent,
        };
        let mut merged = entry.clone();
        if let Some(claim) = self.log.get(key).filter(|c| c.sent_by == entry.sent_by) {
            merged.at = claim.at; // a claim keeps the time it was made
        }
        self.log.merge(merged.clone());
        merged
    }

    /// Renews this agent's claim of `key` at `now`, after a restart: its outbox still holds the
    /// page and sends it, so the claim the previous instance made still stands. Returns the
    /// `sending` entry to gossip; the page is then sent as a claimed one ([`Self::sent`]).
    pub fn reclaim(&mut self, key: NotificationKey, now: Timestamp) -> LogEntry {
        let entry = LogEntry {
            subject: key.subject,
            incident: key.incident,
            event: key.event,
            repeat: key.repeat,
            sent_by: self.settings.me.clone(),
            at: now,
            state: LogState::Sending,
        };
        self.log.merge(entry.clone());
        entry
    }

    /// Merges a log entry from a peer (or restored from disk).
    pub fn merge_log(&mut self, entry: LogEntry) -> Merged {
        self.log.merge(entry)
    }

    /// The merged log, for gossip to a peer that (re)connects.
    pub fn log(&self) -> &NotificationLog {
        &self.log
    }

    /// Pages owed and not yet sent by anyone this agent knows of.
    pub fn owed(&self) -> impl Iterator<Item = &NotificationKey> {
        self.owed.keys()
    }

    /// The incident id another agent gave this agent's incident `incident`, if one did.
    pub fn incident_alias(&self, incident: &str) -> Option<&str> {
        self.aliases.get(incident).map(String::as_str)
    }

    /// Forgets log entries, matches and owed pages older than `older_than`.
    pub fn prune(&mut self, older_than: Timestamp) {
        self.log.prune(older_than);
        let log = &self.log;
        self.matched.retain(|k, _| log.get(k).is_some());
        self.owed.retain(|_, o| o.since >= older_than);
    }

    /// The claim that covers `key`, owed since `since`: its own entry, else another agent's
    /// claim of the same transition made at most the match window before `since` and not
    /// matched to another page of this agent. Among several, one that still stands (`sent`, or
    /// its agent still sending: eligible, not restarted) first; among those, the one this page
    /// already matched (a held page keeps its claim, and leaves later claims to later pages),
    /// then a `sent` one, then the earliest. This agent's own claims of other incidents never
    /// cover a page.
    fn covering_claim(
        &self,
        key: &NotificationKey,
        since: Timestamp,
        eligible: &BTreeSet<String>,
    ) -> Option<&LogEntry> {
        if let Some(entry) = self.log.get(key) {
            return Some(entry);
        }
        let not_before = since.add_millis(-self.settings.match_window_ms);
        self.log
            .entries()
            .filter(|e| {
                e.sent_by != self.settings.me
                    && e.subject == key.subject
                    && e.event == key.event
                    && e.repeat == key.repeat
                    && e.at >= not_before
            })
            .filter(|e| {
                self.matched
                    .get(&NotificationKey::of(e))
                    .is_none_or(|mine| mine == key)
            })
            .min_by_key(|e| {
                let sent = e.state == LogState::Sent;
                let stands = sent || (eligible.contains(&e.sent_by) && self.abandoned(e).is_none());
                let mine = self.matched.contains_key(&NotificationKey::of(e));
                (!stands, !mine, !sent, e.at, e.sent_by.clone())
            })
    }

    /// The restart of `claim`'s agent, if `claim` is a `sending` claim it made before.
    fn abandoned(&self, claim: &LogEntry) -> Option<Restart> {
        if claim.state != LogState::Sending {
            return None;
        }
        self.restarts
            .get(&claim.sent_by)
            .filter(|restart| claim.at < restart.theirs)
            .copied()
    }

    /// Records that `key` is covered by another agent's `claim`, and adopts its incident id.
    fn adopt(&mut self, key: &NotificationKey, claim: &LogEntry) {
        let theirs = NotificationKey::of(claim);
        if theirs != *key {
            self.matched.insert(theirs, key.clone());
            if claim.incident != key.incident {
                self.aliases
                    .insert(key.incident.clone(), claim.incident.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AlertEvent;

    const FRESH: i64 = 11_000;

    fn t(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    fn check(target: &str) -> CheckId {
        CheckId::new(target, CheckKind::Health).unwrap()
    }

    fn mesh(me: &str, names: &[&str]) -> MeshState {
        let settings = MeshSettings {
            me: me.into(),
            peers: names.iter().map(|s| (*s).to_owned()).collect(),
            liveness: LivenessPolicy {
                heartbeat_interval_ms: 1_000,
                missed_heartbeats: 3,
            },
            quorum: QuorumPolicy::Majority,
            takeover_ms: 3_000,
            match_window_ms: 60_000,
        };
        MeshState::new(settings, [(check("a"), FRESH), (check("b"), FRESH)], t(0))
    }

    fn obs(target: &str, status: Status, at: i64) -> Observation {
        Observation {
            check: check(target),
            status,
            latency_ms: None,
            detail: String::new(),
            at: t(at),
        }
    }

    fn heartbeat(m: &mut MeshState, from: &str, now: i64) {
        let hb = Heartbeat {
            seq: 1,
            wall_clock: t(now),
            config_hash: ConfigHash([0; 32]),
            isolated: false,
        };
        assert!(m.on_heartbeat(from, &hb, t(now)));
    }

    fn hello(m: &mut MeshState, from: &str, instance: &str, now: i64) {
        m.on_hello(
            from,
            Hello {
                protocol_version: 1,
                name: from.into(),
                instance_id: instance.into(),
                agent_version: "0".into(),
                config_hash: ConfigHash([0; 32]),
                wall_clock: t(now),
            },
            t(now),
        );
    }

    fn key(incident: &str) -> NotificationKey {
        NotificationKey {
            subject: "a/health".into(),
            incident: incident.into(),
            event: AlertEvent::Firing,
            repeat: 0,
        }
    }

    fn claim(by: &str, incident: &str, at: i64, state: LogState) -> LogEntry {
        LogEntry {
            subject: "a/health".into(),
            incident: incident.into(),
            event: AlertEvent::Firing,
            repeat: 0,
            sent_by: by.into(),
            at: t(at),
            state,
        }
    }

    #[test]
    fn failures_seen_while_isolated_never_count_after_it() {
        let mut m = mesh("edge", &["edge", "vps"]);
        m.set_isolated(true);
        m.observe("edge", obs("a", Status::Unreachable, 10_000));
        m.observe("edge", obs("b", Status::Unreachable, 10_000));
        // Back: the peer's votes went stale meanwhile, so the old failures would confirm alone.
        heartbeat(&mut m, "vps", 12_000);
        m.set_isolated(false);
        assert!(m.agreed_statuses(t(12_000)).is_empty());
        assert_eq!(
            m.conclusion(&check("a"), t(12_000)).verdict,
            crate::Verdict::Unknown
        );
        // A failure seen once connected counts.
        m.observe("edge", obs("a", Status::Error, 12_500));
        assert_eq!(
            m.agreed_statuses(t(12_600)).get(&check("a")),
            Some(&Status::Error)
        );
    }

    #[test]
    fn an_isolated_agent_owes_nothing() {
        let mut m = mesh("edge", &["edge", "vps"]);
        m.set_isolated(true);
        m.owe(key("a/health@1"), t(1_000));
        m.set_isolated(false);
        assert_eq!(m.owed().count(), 0);
        assert!(m.due(t(100_000)).is_empty());
    }

    #[test]
    fn local_only_is_up_for_the_engine() {
        let mut m = mesh("edge", &["edge", "vps", "astra"]);
        heartbeat(&mut m, "vps", 1_000);
        heartbeat(&mut m, "astra", 1_000);
        m.observe("edge", obs("a", Status::Error, 1_000));
        m.observe("vps", obs("a", Status::Operational, 1_000));
        m.observe("astra", obs("a", Status::Operational, 1_000));
        assert_eq!(
            m.conclusion(&check("a"), t(1_100)).verdict,
            crate::Verdict::LocalOnly
        );
        assert_eq!(
            m.agreed_statuses(t(1_100)).get(&check("a")),
            Some(&Status::Operational),
            "the same votes feed every agent's engine the same status"
        );
    }

    #[test]
    fn a_peer_not_heard_since_the_start_is_neither_missing_nor_back() {
        let mut m = mesh("edge", &["edge", "vps"]);
        let missing = |m: &MeshState, now| {
            m.conditions(ConfigHash([0; 32]), 2_000, t(now))
                .into_iter()
                .find(|(s, _)| *s == Subject::agent(AlertKind::PeerMissing, "vps"))
                .map(|(_, active)| active)
        };
        assert_eq!(
            missing(&m, 1_000),
            None,
            "unknown yet: keeps a restored incident"
        );
        assert_eq!(missing(&m, 3_000), Some(true));
        heartbeat(&mut m, "vps", 3_500);
        assert_eq!(missing(&m, 3_600), Some(false));
    }

    #[test]
    fn a_sending_claim_holds_the_page_until_sent() {
        let mut m = mesh("vps", &["edge", "vps"]);
        heartbeat(&mut m, "edge", 1_000);
        m.owe(key("a/health@1000"), t(1_000));
        m.merge_log(claim("edge", "a/health@900", 1_100, LogState::Sending));
        assert!(m.due(t(1_200)).is_empty());
        assert_eq!(
            m.owed().count(),
            1,
            "held, not dropped: edge may die before it sends"
        );
        assert_eq!(m.incident_alias("a/health@1000"), Some("a/health@900"));
        m.merge_log(claim("edge", "a/health@900", 1_100, LogState::Sent));
        assert!(m.due(t(1_300)).is_empty());
        assert_eq!(m.owed().count(), 0);
    }

    #[test]
    fn a_claimer_that_dies_mid_send_is_replaced() {
        let mut m = mesh("vps", &["edge", "vps"]);
        heartbeat(&mut m, "edge", 1_000);
        m.owe(key("a/health@1000"), t(1_000));
        m.merge_log(claim("edge", "a/health@900", 1_100, LogState::Sending));
        assert!(m.due(t(1_200)).is_empty());
        // edge goes missing (3 heartbeat intervals), and vps, now first, sends.
        assert!(m.due(t(3_900)).is_empty());
        let due = m.due(t(4_000));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, key("a/health@1000"));
    }

    #[test]
    fn a_claimer_that_restarted_mid_send_is_replaced() {
        let mut m = mesh("vps", &["edge", "vps"]);
        hello(&mut m, "edge", "edge#1", 500);
        heartbeat(&mut m, "edge", 1_000);
        m.owe(key("a/health@1000"), t(1_000));
        m.merge_log(claim("edge", "a/health@900", 1_100, LogState::Sending));
        assert!(m.due(t(1_200)).is_empty());
        // edge restarts before it is missed: live all along, but its claim died with it. It gets
        // one takeover window to renew it, then keeps its place first in line: vps, second,
        // waits one more.
        hello(&mut m, "edge", "edge#2", 2_000);
        for now in (2_000..8_000).step_by(500) {
            heartbeat(&mut m, "edge", now);
            assert!(m.due(t(now)).is_empty(), "held at {now}");
        }
        assert_eq!(m.due(t(8_000)).len(), 1);
    }

    #[test]
    fn a_restarted_claimer_gets_one_window_to_renew_even_behind_this_agent() {
        let mut m = mesh("edge", &["edge", "vps"]);
        hello(&mut m, "vps", "vps#1", 500);
        heartbeat(&mut m, "vps", 1_000);
        m.owe(key("a/health@1000"), t(1_000));
        // vps claimed it (edge was cut off then, say); then vps restarts.
        m.merge_log(claim("vps", "a/health@900", 1_100, LogState::Sending));
        assert!(m.due(t(1_200)).is_empty());
        hello(&mut m, "vps", "vps#2", 2_000);
        heartbeat(&mut m, "vps", 2_000);
        assert!(m.due(t(4_900)).is_empty(), "edge, first, still waits");
        assert_eq!(m.due(t(5_000)).len(), 1, "no renewal came: edge sends");
    }

    #[test]
    fn a_restarted_claimer_that_renews_its_claim_keeps_the_page() {
        let mut m = mesh("vps", &["edge", "vps"]);
        hello(&mut m, "edge", "edge#1", 500);
        heartbeat(&mut m, "edge", 1_000);
        m.owe(key("a/health@1000"), t(1_000));
        m.merge_log(claim("edge", "a/health@900", 1_100, LogState::Sending));
        // edge restarts; its outbox still holds the page, so the new instance renews the claim.
        hello(&mut m, "edge", "edge#2", 2_000);
        m.merge_log(claim("edge", "a/health@900", 2_050, LogState::Sending));
        for now in (2_100..30_000).step_by(500) {
            heartbeat(&mut m, "edge", now);
            assert!(m.due(t(now)).is_empty(), "held at {now}");
        }
        m.merge_log(claim("edge", "a/health@900", 2_050, LogState::Sent));
        assert!(m.due(t(30_000)).is_empty());
        assert_eq!(m.owed().count(), 0);
    }

    #[test]
    fn a_reclaim_renews_the_own_claim() {
        let mut m = mesh("edge", &["edge", "vps"]);
        let old = claim("edge", "a/health@900", 1_100, LogState::Sending);
        m.merge_log(old);
        let renewed = m.reclaim(key("a/health@900"), t(5_000));
        assert_eq!(renewed.at, t(5_000));
        assert_eq!(m.log().get(&key("a/health@900")), Some(&renewed));
        let sent = m.sent(&key("a/health@900"), t(6_000));
        assert_eq!(sent.state, LogState::Sent);
        assert_eq!(sent.at, t(5_000), "a claim keeps the time it was made");
    }

    #[test]
    fn a_peer_is_offline_only_after_a_streak_of_unreachable_rounds() {
        let mut m = mesh("edge", &["edge", "vps", "third"]);
        let round = |m: &mut MeshState, at: i64, vps: Status| {
            heartbeat(m, "vps", at);
            heartbeat(m, "third", at);
            for target in ["a", "b"] {
                m.observe("vps", obs(target, vps, at));
                m.observe("third", obs(target, Status::Operational, at));
                m.observe("edge", obs(target, Status::Operational, at));
            }
        };
        // A lossy link: a round where every probe timed out, then one that got through.
        round(&mut m, 1_000, Status::Unreachable);
        round(&mut m, 2_000, Status::Unreachable);
        assert!(m.offline_peers(t(2_000)).is_empty());
        round(&mut m, 3_000, Status::Operational);
        round(&mut m, 4_000, Status::Unreachable);
        round(&mut m, 5_000, Status::Unreachable);
        assert!(m.offline_peers(t(5_000)).is_empty());
        // The same observations again (a reconnect's catch-up) are not new probes.
        m.observe("vps", obs("a", Status::Unreachable, 5_000));
        m.observe("vps", obs("b", Status::Unreachable, 5_000));
        assert!(m.offline_peers(t(5_000)).is_empty());
        round(&mut m, 6_000, Status::Unreachable);
        assert_eq!(m.offline_peers(t(6_000)), ["vps"]);
    }

    #[test]
    fn own_claims_of_other_incidents_cover_nothing() {
        let mut m = mesh("edge", &["edge", "vps"]);
        heartbeat(&mut m, "vps", 1_000);
        m.owe(key("a/health@1000"), t(1_000));
        let due = m.due(t(1_000));
        assert_eq!(due.len(), 1, "edge is the notifier");
        // Never sent (the channel is down); a new incident of the same check opens.
        m.owe(key("a/health@20000"), t(20_000));
        heartbeat(&mut m, "vps", 20_000);
        let due = m.due(t(20_000));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, key("a/health@20000"));
    }

    #[test]
    fn a_held_page_keeps_its_claim_and_leaves_later_ones_to_later_pages() {
        let mut m = mesh("vps", &["edge", "vps"]);
        heartbeat(&mut m, "edge", 1_000);
        m.owe(key("a/health@1000"), t(1_000));
        m.merge_log(claim("edge", "a/health@900", 1_000, LogState::Sending));
        assert!(m.due(t(1_100)).is_empty());
        // Its `sent` is lost. A second incident of the same check: edge claims and sends it.
        m.owe(key("a/health@30000"), t(30_000));
        m.merge_log(claim("edge", "a/health@29900", 30_000, LogState::Sent));
        heartbeat(&mut m, "edge", 30_000);
        assert!(m.due(t(30_100)).is_empty());
        assert_eq!(
            m.owed().collect::<Vec<_>>(),
            [&key("a/health@1000")],
            "the second page is covered by the second claim"
        );
        heartbeat(&mut m, "edge", 39_000);
        assert!(m.due(t(40_000)).is_empty(), "nothing sent twice");
    }

    /// The active conditions of `kind` at `now`, for an agent whose own config is `mine`.
    fn active(m: &MeshState, kind: AlertKind, mine: ConfigHash, now: i64) -> Vec<String> {
        m.conditions(mine, 2_000, t(now))
            .into_iter()
            .filter(|(s, on)| *on && matches!(s, Subject::Agent { kind: k, .. } if *k == kind))
            .map(|(s, _)| s.to_string())
            .collect()
    }

    fn drifted(m: &MeshState, mine: ConfigHash, now: i64) -> Vec<String> {
        active(m, AlertKind::ConfigDrift, mine, now)
    }

    /// A heartbeat from `from` carrying `hash` and its clock reading `their_clock`, arriving at
    /// `now` on ours.
    fn heartbeat_from(m: &mut MeshState, from: &str, hash: ConfigHash, their_clock: i64, now: i64) {
        let hb = Heartbeat {
            seq: 1,
            wall_clock: t(their_clock),
            config_hash: hash,
            isolated: false,
        };
        assert!(m.on_heartbeat(from, &hb, t(now)));
    }

    fn heartbeat_with(m: &mut MeshState, from: &str, hash: ConfigHash, now: i64) {
        heartbeat_from(m, from, hash, now, now);
    }

    #[test]
    fn config_drift_names_the_odd_agent_out_from_every_side() {
        let (same, odd) = (ConfigHash([1; 32]), ConfigHash([2; 32]));
        let mut astra = mesh("astra", &["astra", "edge", "vps"]);
        heartbeat_with(&mut astra, "edge", same, 10);
        heartbeat_with(&mut astra, "vps", odd, 10);
        assert_eq!(drifted(&astra, same, 20), ["config_drift:vps"]);
        let mut vps = mesh("vps", &["astra", "edge", "vps"]);
        heartbeat_with(&mut vps, "astra", same, 10);
        heartbeat_with(&mut vps, "edge", same, 10);
        assert_eq!(
            drifted(&vps, odd, 20),
            ["config_drift:vps"],
            "it names itself"
        );
        // Two agents, two configs: the first by name is the reference, on both sides.
        let mut a = mesh("astra", &["astra", "vps"]);
        heartbeat_with(&mut a, "vps", odd, 10);
        assert_eq!(drifted(&a, same, 20), ["config_drift:vps"]);
        let mut v = mesh("vps", &["astra", "vps"]);
        heartbeat_with(&mut v, "astra", same, 10);
        assert_eq!(drifted(&v, odd, 20), ["config_drift:vps"]);
        // A missing peer's config does not count.
        assert!(drifted(&astra, same, 60_000).is_empty());
    }

    #[test]
    fn an_agent_that_has_heard_one_peer_of_two_names_nobody_until_a_majority_agrees() {
        // third, 5 s ahead, has just started and heard vps only: one clock against one, and
        // "third" sorts first. It must not page vps's clock, nor vps's config.
        let (same, odd) = (ConfigHash([1; 32]), ConfigHash([2; 32]));
        let mut third = mesh("third", &["edge", "third", "vps"]);
        heartbeat_from(&mut third, "vps", same, 1_000, 6_000);
        let judged = |m: &MeshState, mine: ConfigHash, now: i64| -> Vec<String> {
            m.conditions(mine, 2_000, t(now))
                .into_iter()
                .map(|(s, _)| s.to_string())
                .filter(|s| s.starts_with("clock_skew") || s.starts_with("config_drift"))
                .collect()
        };
        assert_eq!(judged(&third, odd, 6_100), Vec::<String>::new());
        // edge is heard: vps and edge agree, so third is the odd one out, on its own count.
        heartbeat_from(&mut third, "edge", same, 1_050, 6_050);
        assert_eq!(
            active(&third, AlertKind::ClockSkew, odd, 6_100),
            ["clock_skew:third"]
        );
        assert_eq!(drifted(&third, odd, 6_100), ["config_drift:third"]);
        // A majority is enough without hearing everyone: edge, having heard vps only.
        let mut edge = mesh("edge", &["edge", "third", "vps"]);
        heartbeat_from(&mut edge, "vps", same, 1_000, 1_000);
        assert!(active(&edge, AlertKind::ClockSkew, same, 1_100).is_empty());
        assert!(active(&edge, AlertKind::ConfigDrift, same, 1_100).is_empty());
        assert_eq!(judged(&edge, same, 1_100).len(), 6, "judged, all clear");
    }

    fn skewed(m: &MeshState, now: i64) -> Vec<String> {
        active(m, AlertKind::ClockSkew, ConfigHash([0; 32]), now)
    }

    fn heartbeat_at(m: &mut MeshState, from: &str, their_clock: i64, now: i64) {
        heartbeat_from(m, from, ConfigHash([0; 32]), their_clock, now);
    }

    #[test]
    fn clock_skew_names_the_agent_whose_clock_is_off_from_every_side() {
        // third's clock is 5 s ahead of the others'.
        let mut edge = mesh("edge", &["edge", "third", "vps"]);
        heartbeat_at(&mut edge, "vps", 1_050, 1_000);
        heartbeat_at(&mut edge, "third", 6_000, 1_000);
        assert_eq!(skewed(&edge, 1_100), ["clock_skew:third"]);
        let mut third = mesh("third", &["edge", "third", "vps"]);
        heartbeat_at(&mut third, "edge", 1_000, 6_000);
        heartbeat_at(&mut third, "vps", 1_000, 6_000);
        assert_eq!(
            skewed(&third, 6_100),
            ["clock_skew:third"],
            "it names itself"
        );
        // Two agents, two clocks, both heard: the second by name is named, on both sides.
        let mut edge = mesh("edge", &["edge", "vps"]);
        heartbeat_at(&mut edge, "vps", 6_000, 1_000);
        assert_eq!(skewed(&edge, 1_100), ["clock_skew:vps"]);
        let mut vps = mesh("vps", &["edge", "vps"]);
        heartbeat_at(&mut vps, "edge", 1_000, 6_000);
        assert_eq!(skewed(&vps, 6_100), ["clock_skew:vps"]);
        // Within 2 s, nobody.
        let mut calm = mesh("edge", &["edge", "vps"]);
        heartbeat_at(&mut calm, "vps", 2_900, 1_000);
        assert!(skewed(&calm, 1_100).is_empty());
    }
}
