//! The monitor in a mesh: transport events in, one round of mesh rules, the local-outage
//! report.
//!
//! With `[mesh]`, the verdicts come from every agent's votes ([`Node`], `mesh-proto`'s
//! `MeshState`), not from this agent's results alone. Each round: is this agent isolated (no
//! live peer, every target unreachable)? Is it alone and should it first ask every target
//! whether the fault is its own network? Then the mesh's conditions and agreed statuses go into
//! the engine, every page it owes is held through the [`Node`] until this agent is due to send
//! it, and the board shows the votes, verdicts and peers.

use std::collections::BTreeMap;

use mesh_proto::{
    AlertEvent, AlertKind, CheckId, CheckKind, PeerState, Status, Subject, Timestamp, incident_id,
};

use super::{Monitor, Own, ROUND, ago, now, to_datetime};
use crate::alert::Alert;
use crate::alert::payload::PAYLOAD_VERSION;
use crate::board::MeshView;
use crate::clock::{millis, rfc3339};
use crate::mesh::Node;
use crate::mesh::node::{Effect, MAX_CLOCK_SKEW_MS};
use crate::mesh::transport::{Event, IDLE_TIMEOUT};

/// A mesh certificate this close to expiry raises `mesh_cert_expiry`.
const CERT_WARN_MS: i64 = 14 * 86_400_000;

impl Monitor {
    /// A transport event.
    pub(super) fn mesh_event(&mut self, event: Event) {
        let now = now();
        let Some(node) = &mut self.mesh else { return };
        for effect in node.handle(event, now) {
            match effect {
                Effect::RunNow(check) => {
                    if self.known.contains(&check) && check.kind() != CheckKind::Heartbeat {
                        if self.run_now.try_send(check.clone()).is_err() {
                            tracing::debug!(check = %check, "scheduler busy; ProbeNow skipped");
                        }
                    } else {
                        tracing::debug!(check = %check, "ProbeNow for a check not configured here");
                    }
                }
                Effect::Ping(name, at) => {
                    let known = self
                        .config
                        .heartbeats
                        .iter()
                        .any(|(id, _)| id.target() == name);
                    if known && self.board.pings().get(&name).is_none_or(|t| *t < at) {
                        self.board.ping(&name, at);
                        let store = self.store.clone();
                        tokio::spawn(async move {
                            if let Err(e) = store.record_ping(&name, at).await {
                                tracing::warn!(heartbeat = %name, error = %e, "cannot store a peer's ping");
                            }
                        });
                    }
                }
            }
        }
    }

    /// One round in a mesh: isolation, the mesh's conditions and agreed statuses into the
    /// engine, the pages it owes held until this agent is due to send them.
    pub(super) async fn mesh_step(&mut self, now: Timestamp) {
        let Some(mut node) = self.mesh.take() else {
            return;
        };
        let was_isolated = node.state().is_isolated();
        let isolated = !node.state().any_peer_live(now) && all_unreachable(&self.own);
        node.set_isolated(isolated);
        node.share_pings(&self.board.pings());
        // With no peer alive (all missing, or late: suspect), a failure or the peers' silence
        // may be this agent's own network: ask every target now, and page nothing until they
        // answered. By the time the peers are missing this agent is then isolated (nothing goes
        // out), or rightly alone and alerting as a quorum of one.
        let alone = !node
            .state()
            .peers()
            .any(|(peer, _)| node.state().peer_state(peer, now) == PeerState::Alive);
        if alone
            && !isolated
            && (!self.was_alone || self.alone_failure)
            && self.alone_settle_until.is_none()
        {
            tracing::info!("no peer is live: asking every target before alerting alone");
            self.ask_canaries();
            self.alone_settle_until = Some(now.add_millis(millis(self.config.settle())));
        }
        self.was_alone = alone;
        self.alone_failure = false;
        let settling = match self.alone_settle_until {
            Some(until) if now < until && alone => true,
            _ => {
                self.alone_settle_until = None;
                false
            }
        };
        let outage = match (was_isolated, isolated) {
            (false, true) => {
                tracing::warn!(
                    "isolated: no peer is reachable and every target is unreachable; \
                    this agent stops voting and alerting until its network is back"
                );
                self.isolated_since = Some(now);
                None
            }
            (true, false) => {
                // Fresh votes at once, rather than at each check's next slot; and the peers
                // get the time to be heard again before any of them counts as missing.
                self.back_at = Some(tokio::time::Instant::now());
                self.rejoin = Some((now, now.add_millis(rejoin_limit(&node))));
                self.ask_canaries();
                self.isolated_since.take()
            }
            _ => None,
        };
        if settling {
            // The peers are shown while the alerts wait: `pom mesh` right after a start must
            // not read "no peers" and exit 0.
            self.show_mesh(&node, now);
            self.mesh = Some(node);
            return;
        }
        let rejoining = self.rejoin.is_some_and(|(since, until)| {
            now < until
                && node
                    .state()
                    .peers()
                    .any(|(_, view)| view.last_heartbeat.is_none_or(|t| t < since))
        });
        if !rejoining {
            self.rejoin = None;
            for (subject, active) in
                node.state()
                    .conditions(node.config_hash(), MAX_CLOCK_SKEW_MS, now)
            {
                self.engine.set_condition(subject, active);
            }
        }
        if !isolated {
            for (agent, not_after) in node.cert_expiries() {
                let expiring = not_after.saturating_mul(1000) - now.as_millis() < CERT_WARN_MS;
                self.engine
                    .set_condition(Subject::agent(AlertKind::MeshCertExpiry, agent), expiring);
            }
        }
        let mut round = node.state().agreed_statuses(now);
        if !isolated {
            // Push heartbeats: every agent judges them alike, from the pings shared by all.
            round.extend(
                std::mem::take(&mut self.round)
                    .into_iter()
                    .filter(|(id, _)| id.kind() == CheckKind::Heartbeat),
            );
        }
        self.pending.clear();
        let decisions = self.engine.step(&round, now);
        for decision in &decisions {
            let alert = self.alert(decision, Some(&node), now);
            node.owe(decision.notification(), alert, now);
        }
        for (key, alert) in node.due(now) {
            match key.subject.parse::<Subject>() {
                Ok(subject) => self.deliver(&subject, alert, now).await,
                Err(e) => tracing::error!(subject = %key.subject, "unparsable subject: {e}"),
            }
        }
        if let Some(since) = outage {
            self.report_outage(&node, since, now).await;
        }
        self.board.set_isolated(isolated);
        for id in &self.known {
            if id.kind() == CheckKind::Heartbeat {
                continue;
            }
            let conclusion = node.state().conclusion(id, now);
            let votes: BTreeMap<String, Status> = node
                .state()
                .votes(id)
                .map(|(agent, o)| (agent.to_owned(), o.status))
                .collect();
            self.board.update(id, |state| {
                state.votes = votes;
                state.mesh_verdict = Some(conclusion.verdict);
            });
        }
        self.show_mesh(&node, now);
        if now.as_millis() % 60_000 < millis(ROUND) {
            node.prune(now);
        }
        self.mesh = Some(node);
        self.save_lifecycles(now).await;
        self.refresh(now).await;
    }

    /// The mesh as `/api/mesh` and `pom mesh` show it.
    fn show_mesh(&self, node: &Node, now: Timestamp) {
        self.board.set_mesh(MeshView {
            quorum: node.state().settings().quorum,
            voters: node.state().eligible(now).len(),
            peers: node.peers(now),
            dropped_frames: node.dropped_frames(),
            log: node.log_counts(),
        });
    }

    /// After an isolation ends: one alert with the time range of the local outage.
    async fn report_outage(&mut self, node: &Node, since: Timestamp, now: Timestamp) {
        let me = &self.config.agent;
        // Its own subject, `monitoring_offline`: `monitoring_offline:NAME` is the peers' incident
        // about this agent, and a receiver must not take one for the other.
        let subject = Subject::MonitoringOffline;
        tracing::warn!(since = %to_datetime(since), "isolation over: reporting the local network outage");
        let alert = Alert {
            version: PAYLOAD_VERSION,
            event: AlertEvent::Resolved,
            alert: AlertKind::MonitoringOffline,
            target: me.clone(),
            check: subject.to_string(),
            status: Status::Operational,
            summary: format!(
                "agent {me} was cut off from {} to {} ({}): its own network was down",
                rfc3339(since),
                rfc3339(now),
                ago(now, since)
            ),
            detail: "No peer was reachable and every target was unreachable from this host. \
                It cast no votes and sent no target alerts meanwhile; the failures it saw are not alerted."
                .to_owned(),
            since: to_datetime(since),
            incident: incident_id(&subject, since),
            confirmed_by: vec![me.clone()],
            agents_total: node.agents_total(),
            sent_by: me.clone(),
            runbook: self.runbook(AlertKind::MonitoringOffline),
            repeat: 0,
        };
        self.deliver(&subject, alert, now).await;
    }
}

/// How long after an isolation the mesh conditions wait at most for every peer to be heard
/// again (ms): the missing deadline, plus the time a connection that died during the outage
/// can still look open before it is dialled again (QUIC's idle timeout, then a dial). A peer
/// that is really gone is paged this much later by this agent; its peers page it meanwhile.
fn rejoin_limit(node: &Node) -> i64 {
    node.state().settings().liveness.missing_after_ms()
        + millis(IDLE_TIMEOUT)
        + node.state().settings().liveness.heartbeat_interval_ms
}

/// Whether this agent's latest round of every target (at least two) was all unreachable.
pub(super) fn all_unreachable(own: &BTreeMap<CheckId, Own>) -> bool {
    let mut latest: BTreeMap<&str, (Timestamp, bool)> = BTreeMap::new();
    for (id, o) in own {
        if id.kind() == CheckKind::Heartbeat {
            continue;
        }
        let unreachable = o.status == Status::Unreachable;
        let entry = latest.entry(id.target()).or_insert((o.at, unreachable));
        if o.at > entry.0 {
            *entry = (o.at, unreachable);
        } else if o.at == entry.0 {
            entry.1 &= unreachable;
        }
    }
    latest.len() >= 2 && latest.values().all(|(_, u)| *u)
}

/// The next transport event, or never without a mesh.
pub(super) async fn next_event(mesh: &mut Option<Node>) -> Option<Event> {
    match mesh {
        Some(node) => node.next_event().await,
        None => std::future::pending().await,
    }
}
