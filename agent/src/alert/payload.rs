//! The alert payload: the webhook JSON (a contract, DESIGN.md "Alerting"; fields may be added,
//! never renamed), from which every channel renders its own message.

use mesh_proto::{AlertEvent, AlertKind, Status};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The payload version; bumped only for an incompatible change, which the contract forbids.
pub const PAYLOAD_VERSION: u32 = 1;

/// One notification about one incident transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Always [`PAYLOAD_VERSION`].
    pub version: u32,
    /// `firing` or `resolved`.
    pub event: AlertEvent,
    /// What the alert is about.
    pub alert: AlertKind,
    /// The target, or for mesh alerts the agent concerned.
    pub target: String,
    /// The check id (for mesh alerts, `AGENT/...`-style ids are not used: this is the agent name).
    pub check: String,
    /// The status that raised it (`operational` on resolve).
    pub status: Status,
    /// One line, e.g. `GET /api/health returned 502`.
    pub summary: String,
    /// More detail.
    pub detail: String,
    /// When the incident started.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The incident's id, stable across its transitions and across agents.
    pub incident: String,
    /// The agents whose votes confirmed it.
    pub confirmed_by: Vec<String>,
    /// How many agents could vote.
    pub agents_total: u32,
    /// The agent that sent this notification.
    pub sent_by: String,
    /// `runbook_base#anchor` of the alert kind.
    pub runbook: String,
    /// 0 for the first `firing`, then 1, 2, … for each reminder while the incident goes on.
    #[serde(default)]
    pub repeat: u32,
}

impl Alert {
    /// A short subject line for channels that need one (email, ntfy, Alertmanager):
    /// `[FIRING] makenot.work/health: GET /api/health returned 502`.
    pub fn subject(&self) -> String {
        let event = match (self.event, self.repeat) {
            (AlertEvent::Firing, 0) => "FIRING".to_owned(),
            (AlertEvent::Firing, n) => format!("STILL FIRING ({n})"),
            (AlertEvent::Resolved, _) => "RESOLVED".to_owned(),
        };
        format!("[{event}] {}: {}", self.check, self.summary)
    }

    /// A plain-text body for chat and email: every field a person on call needs, one per line.
    pub fn text(&self) -> String {
        let since = self
            .since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.since.unix_timestamp().to_string());
        let confirmed = if self.confirmed_by.is_empty() {
            "none".to_owned()
        } else {
            self.confirmed_by.join(", ")
        };
        format!(
            "{}\n\n{}\nstatus: {}\nalert: {}\nsince: {since}\nconfirmed by: {confirmed} of {} agents\nsent by: {}\nrunbook: {}\nincident: {}",
            self.subject(),
            self.detail,
            self.status,
            self.alert,
            self.agents_total,
            self.sent_by,
            self.runbook,
            self.incident,
        )
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    pub(crate) fn sample() -> Alert {
        Alert {
            version: PAYLOAD_VERSION,
            event: AlertEvent::Firing,
            alert: AlertKind::Health,
            target: "makenot.work".into(),
            check: "makenot.work/health".into(),
            status: Status::Error,
            summary: "GET /api/health returned 502".into(),
            detail: "GET /api/health returned 502 Bad Gateway, expected 200".into(),
            since: datetime!(2026-06-14 03:12:09 UTC),
            incident: "makenot.work/health@1781406729000".into(),
            confirmed_by: vec!["astra".into(), "hetzner".into()],
            agents_total: 2,
            sent_by: "astra".into(),
            runbook: "https://git.example.com/runbook.md#health-status-change".into(),
            repeat: 0,
        }
    }

    #[test]
    fn serialises_to_the_contract_shape() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1, "event": "firing", "alert": "health",
                "target": "makenot.work", "check": "makenot.work/health", "status": "error",
                "summary": "GET /api/health returned 502",
                "detail": "GET /api/health returned 502 Bad Gateway, expected 200",
                "since": "2026-06-14T03:12:09Z", "incident": "makenot.work/health@1781406729000",
                "confirmed_by": ["astra", "hetzner"], "agents_total": 2, "sent_by": "astra",
                "runbook": "https://git.example.com/runbook.md#health-status-change",
                "repeat": 0
            })
        );
        let back: Alert = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn subject_and_text_carry_what_on_call_needs() {
        let mut alert = sample();
        assert_eq!(
            alert.subject(),
            "[FIRING] makenot.work/health: GET /api/health returned 502"
        );
        let text = alert.text();
        for part in [
            "confirmed by: astra, hetzner of 2 agents",
            "sent by: astra",
            "#health-status-change",
            "since: 2026-06-14T03:12:09Z",
        ] {
            assert!(text.contains(part), "{part:?} missing in {text}");
        }
        alert.repeat = 2;
        assert!(alert.subject().starts_with("[STILL FIRING (2)]"));
        alert.event = AlertEvent::Resolved;
        assert!(alert.subject().starts_with("[RESOLVED]"));
    }
}
