//! The payload of a page: what the monitor's decisions say to the people they wake.
//!
//! One [`Alert`] per decision, in the webhook's versioned shape: the kind, the check, a one-line
//! summary and a detail, the incident id, the runbook link, and in a mesh who confirmed it and
//! who sent it.

use std::collections::BTreeSet;

use mesh_proto::{
    AlertEvent, AlertKind, CheckKind, Decision, Page, PeerState, Status, Subject, Timestamp,
    incident_id,
};

use super::{Monitor, ago, to_datetime};
use crate::alert::Alert;
use crate::alert::payload::PAYLOAD_VERSION;
use crate::mesh::Node;
use crate::mesh::node::MAX_CLOCK_SKEW_MS;

impl Monitor {
    /// The kind of a page of `incident`: the one its first page carried (`seen` is what the
    /// check's status says now). A `resolved` ends the incident.
    fn incident_kind(
        &mut self,
        subject: &Subject,
        incident: &str,
        event: AlertEvent,
        seen: AlertKind,
    ) -> AlertKind {
        let known = self
            .incident_kinds
            .get(subject)
            .filter(|(id, _)| id == incident)
            .map(|(_, kind)| *kind);
        match event {
            AlertEvent::Firing => {
                let kind = known.unwrap_or(seen);
                self.incident_kinds
                    .insert(subject.clone(), (incident.to_owned(), kind));
                kind
            }
            AlertEvent::Resolved => {
                if known.is_some() {
                    self.incident_kinds.remove(subject);
                }
                known.unwrap_or(seen)
            }
        }
    }

    pub(super) fn runbook(&self, kind: AlertKind) -> String {
        format!(
            "{}#{}",
            self.config.runbook_base.trim_end_matches('#'),
            kind.runbook_anchor()
        )
    }

    /// The payload of a decision; in a mesh, with who confirmed it.
    pub(super) fn alert(
        &mut self,
        decision: &Decision,
        mesh: Option<&Node>,
        now: Timestamp,
    ) -> Alert {
        let (event, since, repeat) = match decision.page {
            Page::Firing { since, repeat } => (AlertEvent::Firing, since, repeat),
            Page::Resolved { since } => (AlertEvent::Resolved, since, 0),
        };
        let agent = self.config.agent.clone();
        let (kind, target, status, mut summary, mut detail) = match &decision.subject {
            Subject::MonitoringOffline => {
                let targets: BTreeSet<&str> = decision.folded.iter().map(|c| c.target()).collect();
                let status = if event == AlertEvent::Firing {
                    Status::Unreachable
                } else {
                    Status::Operational
                };
                (
                    AlertKind::MonitoringOffline,
                    agent.clone(),
                    status,
                    match event {
                        AlertEvent::Firing => format!(
                            "agent {agent} sees every target unreachable: its own network is likely down"
                        ),
                        AlertEvent::Resolved => format!("agent {agent} reaches its targets again"),
                    },
                    format!(
                        "{} targets unreachable at once: {}",
                        targets.len(),
                        targets.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                )
            }
            Subject::Agent { kind, agent: about } => {
                let firing = event == AlertEvent::Firing;
                let view = mesh.and_then(|n| n.peers(now).into_iter().find(|p| p.name == *about));
                let (summary, detail) = match kind {
                    AlertKind::PeerMissing if firing => (
                        format!("agent {about} is missing: no heartbeat from it"),
                        view.as_ref().and_then(|v| v.last_heartbeat).map_or_else(
                            || "never heard from since this agent started".to_owned(),
                            |t| format!("last heartbeat {} ago", ago(now, t)),
                        ),
                    ),
                    AlertKind::PeerMissing => (format!("agent {about} is back"), String::new()),
                    AlertKind::MonitoringOffline if firing => (
                        format!(
                            "agent {about} lost its network: it sees every target unreachable while the other agents reach them"
                        ),
                        "Its votes are local failures; the mesh keeps monitoring without it."
                            .to_owned(),
                    ),
                    AlertKind::MonitoringOffline => (
                        format!("agent {about} reaches its targets again"),
                        String::new(),
                    ),
                    AlertKind::ConfigDrift if firing => {
                        let theirs = if *about == agent {
                            mesh.map(|n| n.config_hash().to_string())
                        } else {
                            view.as_ref().and_then(|v| v.config_hash.clone())
                        };
                        let agreed = mesh.and_then(|n| {
                            n.state().agreed_config(n.config_hash(), now)
                        });
                        (
                            format!("agent {about} runs another shared config"),
                            format!(
                                "its config hash {}, the one most agents run {}",
                                theirs.as_deref().unwrap_or("unknown"),
                                agreed.map_or_else(|| "unknown".to_owned(), |h| h.to_string())
                            ),
                        )
                    }
                    AlertKind::ConfigDrift => (
                        format!("agent {about} runs the same shared config again"),
                        String::new(),
                    ),
                    AlertKind::ClockSkew if firing => (
                        format!("agent {about}'s clock is off"),
                        mesh.and_then(|n| n.state().clock_off(about, MAX_CLOCK_SKEW_MS, now))
                            .map_or_else(
                                || format!("off by more than {MAX_CLOCK_SKEW_MS} ms"),
                                |off| {
                                    format!(
                                        "its clock minus the one most agents agree on: {off} ms (limit ±{MAX_CLOCK_SKEW_MS} ms)"
                                    )
                                },
                            ),
                    ),
                    AlertKind::ClockSkew => {
                        (format!("agent {about}'s clock agrees again"), String::new())
                    }
                    AlertKind::MeshCertExpiry if firing => {
                        let expiry = mesh
                            .and_then(|n| {
                                n.cert_expiries().find(|(a, _)| a == about).map(|(_, t)| t)
                            })
                            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                            .map(|t| t.to_string())
                            .unwrap_or_default();
                        (
                            format!("the mesh certificate of {about} expires soon"),
                            format!("not after {expiry}; renew it with `pom cert issue {about}`"),
                        )
                    }
                    _ => (format!("{} is over", decision.subject), String::new()),
                };
                let status = match (firing, kind) {
                    (false, _) => Status::Operational,
                    (true, AlertKind::PeerMissing | AlertKind::MonitoringOffline) => {
                        Status::Unreachable
                    }
                    (true, _) => Status::Degraded,
                };
                (*kind, about.clone(), status, summary, detail)
            }
            Subject::Check(id) => {
                let own = self.own.get(id);
                let status = own.map_or(Status::Operational, |o| o.status);
                let detail = own.map_or_else(String::new, |o| o.detail.clone());
                let kind = match id.kind() {
                    _ if own.is_some_and(|o| o.drift.is_some()) && !status.is_failure() => {
                        AlertKind::LatencyDrift
                    }
                    CheckKind::Tls if status == Status::Degraded => AlertKind::TlsExpiry,
                    other => AlertKind::for_check(other),
                };
                let summary = match event {
                    AlertEvent::Firing => detail.clone(),
                    AlertEvent::Resolved => format!("{id} recovered: {detail}"),
                };
                (kind, id.target().to_owned(), status, summary, detail)
            }
        };
        let incident = incident_id(&decision.subject, since);
        let kind = self.incident_kind(&decision.subject, &incident, event, kind);
        if event == AlertEvent::Resolved {
            detail = format!("{detail}\nDown for {} in all.", ago(now, since));
        }
        if !decision.folded.is_empty() && !matches!(decision.subject, Subject::MonitoringOffline) {
            let folded: Vec<String> = decision.folded.iter().map(ToString::to_string).collect();
            detail = format!(
                "{detail}\nAlso down, folded into this alert (they depend on {target}): {}",
                folded.join(", ")
            );
        }
        if summary.is_empty() {
            summary = format!("{} {event}", decision.subject);
        }
        let (confirmed_by, agents_total) = match mesh {
            None => (vec![agent.clone()], 1),
            Some(node) => {
                let eligible = node.state().eligible(now);
                let confirmed: Vec<String> = match &decision.subject {
                    Subject::Check(id) if event == AlertEvent::Firing => {
                        let c = node.state().conclusion(id, now);
                        if c.confirmed_by.is_empty() {
                            eligible.iter().cloned().collect()
                        } else {
                            c.confirmed_by
                        }
                    }
                    _ => eligible.iter().cloned().collect(),
                };
                let missing: Vec<String> = node
                    .peers(now)
                    .into_iter()
                    .filter(|p| p.state == PeerState::Missing)
                    .map(|p| p.name)
                    .collect();
                let mut line = format!(
                    "Confirmed by {} of {} reachable agents ({})",
                    confirmed.len(),
                    eligible.len(),
                    confirmed.join(", ")
                );
                if !missing.is_empty() {
                    line.push_str(&format!("; missing: {}", missing.join(", ")));
                }
                detail = format!("{detail}\n{line}. Sent by {agent}.");
                (confirmed, node.agents_total())
            }
        };
        Alert {
            version: PAYLOAD_VERSION,
            event,
            alert: kind,
            target,
            check: decision.subject.to_string(),
            status,
            summary,
            detail,
            since: to_datetime(since),
            incident,
            confirmed_by,
            agents_total,
            sent_by: agent.clone(),
            runbook: self.runbook(kind),
            repeat,
        }
    }
}
