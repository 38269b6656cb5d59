//! The `alertmanager` channel: a `POST {url}/api/v2/alerts` of one alert, so teams route PoM's
//! alerts through the Alertmanager they already run.
//!
//! Alertmanager identifies an alert by its whole label set: a resolve only ends the firing
//! alert whose labels are identical. The labels are therefore only what stays the same for the
//! whole incident, whichever agent sends it:
//!
//! | label | value |
//! |---|---|
//! | `alertname` | `pom_<alert kind>`, e.g. `pom_health` |
//! | `alert` | the alert kind |
//! | `check` | the check id |
//! | `target` | the target (the agent, for mesh alerts) |
//! | `severity` | `warning` for the early-warning kinds (below), else `critical` |
//!
//! The early-warning kinds are `tls_expiry`, `whois_expiry`, `latency_drift`, `config_drift`,
//! `clock_skew` and `mesh_cert_expiry`. Severity follows the kind, not the status: a resolve
//! carries `operational`, and its severity must still match the firing's.
//!
//! What changes during an incident goes into annotations, which Alertmanager updates in place:
//! `summary`, `description` (the detail), `runbook_url`, `status` (`error`, …; `operational`
//! on resolve), `sent_by`, `incident` and `confirmed_by`. (`status` and `sent_by` as labels
//! would turn the resolve, which carries `operational` and may come from another agent, into a
//! second, separate alert, and leave the first one firing.)
//!
//! `startsAt` is when the incident started. `endsAt` is sent only on resolve (the time of
//! sending). A firing alert without `endsAt` is resolved by Alertmanager itself after its
//! `resolve_timeout` unless it is posted again: every [`Alertmanager::refresh`].

use std::time::Duration;

use mesh_proto::{AlertEvent, AlertKind};
use serde_json::{Value, json};
use time::OffsetDateTime;
use url::Url;

use crate::alert::Alert;
use crate::config::AlertmanagerChannel;

use super::http::{self, Client, Endpoint};
use super::{ChannelError, DeliveryError, Env, rfc3339};

/// `type = "alertmanager"`.
#[derive(Debug)]
pub(super) struct Alertmanager {
    client: Client,
    endpoint: Endpoint,
    /// How often a firing alert is posted again (config `refresh`; 60 s by default, well
    /// inside Alertmanager's default `resolve_timeout` of 5 minutes, as Prometheus re-sends
    /// every minute).
    pub(super) refresh: Duration,
}

impl Alertmanager {
    pub(super) fn new(config: &AlertmanagerChannel, env: &Env<'_>) -> Result<Self, ChannelError> {
        let base: Url = env.public_url("url", &config.url)?;
        Ok(Self {
            client: env.client()?,
            endpoint: Endpoint::public(http::join(&base, &["api", "v2", "alerts"])),
            refresh: config.refresh,
        })
    }

    pub(super) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = Value::Array(vec![postable(alert, OffsetDateTime::now_utc())]);
        self.client.post_json(&self.endpoint, &body).await?;
        Ok(())
    }
}

/// The `PostableAlert` of `alert`, sent at `now`.
fn postable(alert: &Alert, now: OffsetDateTime) -> Value {
    let mut posted = json!({
        "labels": {
            "alertname": format!("pom_{}", alert.alert),
            "alert": alert.alert.as_str(),
            "check": alert.check,
            "target": alert.target,
            "severity": severity(alert.alert),
        },
        "annotations": {
            "summary": alert.summary,
            "description": alert.detail,
            "runbook_url": alert.runbook,
            "status": alert.status.as_str(),
            "sent_by": alert.sent_by,
            "incident": alert.incident,
            "confirmed_by": alert.confirmed_by.join(", "),
        },
        "startsAt": rfc3339(alert.since),
        "generatorURL": alert.runbook,
    });
    if alert.event == AlertEvent::Resolved
        && let Some(fields) = posted.as_object_mut()
    {
        // Alertmanager wants endsAt >= startsAt, even if clocks disagree.
        fields.insert(
            "endsAt".to_owned(),
            Value::from(rfc3339(now.max(alert.since))),
        );
    }
    posted
}

/// The severity label: fixed per alert kind, so it is the same on the firing and the resolve.
fn severity(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::TlsExpiry
        | AlertKind::WhoisExpiry
        | AlertKind::LatencyDrift
        | AlertKind::ConfigDrift
        | AlertKind::ClockSkew
        | AlertKind::MeshCertExpiry => "warning",
        AlertKind::Health
        | AlertKind::TlsFailed
        | AlertKind::Route
        | AlertKind::Dns
        | AlertKind::Cors
        | AlertKind::HeartbeatStale
        | AlertKind::PeerMissing
        | AlertKind::MonitoringOffline => "critical",
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::Status;
    use time::macros::datetime;

    use super::*;
    use crate::alert::payload::PAYLOAD_VERSION;

    fn alert(event: AlertEvent, status: Status, sent_by: &str) -> Alert {
        Alert {
            version: PAYLOAD_VERSION,
            event,
            alert: AlertKind::Health,
            target: "site".into(),
            check: "site/health".into(),
            status,
            summary: "down".into(),
            detail: "502".into(),
            since: datetime!(2026-06-14 03:12:09 UTC),
            incident: "site/health@1".into(),
            confirmed_by: vec!["a".into(), "b".into()],
            agents_total: 2,
            sent_by: sent_by.into(),
            runbook: "https://example.org/runbook.md#health-status-change".into(),
            repeat: 0,
        }
    }

    #[test]
    fn firing_and_resolve_share_their_labels_whoever_sends_them() {
        let now = datetime!(2026-06-14 04:00:00 UTC);
        let firing = postable(&alert(AlertEvent::Firing, Status::Error, "a"), now);
        let resolved = postable(&alert(AlertEvent::Resolved, Status::Operational, "b"), now);
        assert_eq!(firing["labels"], resolved["labels"]);
        assert!(firing.get("endsAt").is_none());
        assert_eq!(resolved["endsAt"], "2026-06-14T04:00:00Z");
        assert_eq!(resolved["annotations"]["status"], "operational");
        // A clock behind `since` still yields a valid interval.
        let early = postable(
            &alert(AlertEvent::Resolved, Status::Operational, "b"),
            datetime!(2026-06-14 03:00:00 UTC),
        );
        assert_eq!(early["endsAt"], early["startsAt"]);
    }

    #[test]
    fn every_kind_has_a_severity() {
        for kind in AlertKind::ALL {
            assert!(["warning", "critical"].contains(&severity(kind)));
        }
    }
}
