//! Alert vocabulary shared by every agent: the alert kinds (a contract, DESIGN.md "Alerting"),
//! their runbook anchors, and the lifecycle events a notification can carry.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CheckKind;

/// What an alert is about (the `alert` field of every notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A health check changed state.
    Health,
    /// A certificate is inside its warning window.
    TlsExpiry,
    /// A TLS check failed: invalid, untrusted, self-signed or unreachable.
    TlsFailed,
    /// A route check failed.
    Route,
    /// A DNS record differs from what is expected.
    Dns,
    /// A domain registration is inside its warning window or expired.
    WhoisExpiry,
    /// A CORS preflight failed.
    Cors,
    /// Latency is sustained above twice its 7-day baseline.
    LatencyDrift,
    /// A push heartbeat did not arrive within its `max_age`.
    HeartbeatStale,
    /// A peer agent missed its heartbeats.
    PeerMissing,
    /// An agent sees every target unreachable while its peers do not.
    MonitoringOffline,
    /// A peer runs with a different shared config.
    ConfigDrift,
    /// A peer's clock differs from ours by more than 2 s.
    ClockSkew,
    /// A mesh certificate (ours or a peer's) expires within 14 days.
    MeshCertExpiry,
}

impl AlertKind {
    /// Every kind, in the order of the runbook.
    pub const ALL: [Self; 14] = [
        Self::Health,
        Self::TlsExpiry,
        Self::TlsFailed,
        Self::Route,
        Self::Dns,
        Self::WhoisExpiry,
        Self::Cors,
        Self::LatencyDrift,
        Self::HeartbeatStale,
        Self::PeerMissing,
        Self::MonitoringOffline,
        Self::ConfigDrift,
        Self::ClockSkew,
        Self::MeshCertExpiry,
    ];

    /// The contract name (`health`, `tls_expiry`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::TlsExpiry => "tls_expiry",
            Self::TlsFailed => "tls_failed",
            Self::Route => "route",
            Self::Dns => "dns",
            Self::WhoisExpiry => "whois_expiry",
            Self::Cors => "cors",
            Self::LatencyDrift => "latency_drift",
            Self::HeartbeatStale => "heartbeat_stale",
            Self::PeerMissing => "peer_missing",
            Self::MonitoringOffline => "monitoring_offline",
            Self::ConfigDrift => "config_drift",
            Self::ClockSkew => "clock_skew",
            Self::MeshCertExpiry => "mesh_cert_expiry",
        }
    }

    /// The anchor of this kind's section in docs/runbook.md; alerts link to
    /// `runbook_base#anchor`.
    pub const fn runbook_anchor(self) -> &'static str {
        match self {
            Self::Health => "health-status-change",
            Self::TlsExpiry => "tls-certificate-expiry",
            Self::TlsFailed => "tls-check-failed",
            Self::Route => "route-failure",
            Self::Dns => "dns-mismatch",
            Self::WhoisExpiry => "whois-domain-expiry",
            Self::Cors => "cors-preflight-failure",
            Self::LatencyDrift => "latency-drift",
            Self::HeartbeatStale => "heartbeat-stale",
            Self::PeerMissing => "peer-missing",
            Self::MonitoringOffline => "monitoring-offline",
            Self::ConfigDrift => "config-drift",
            Self::ClockSkew => "clock-skew",
            Self::MeshCertExpiry => "mesh-certificate-expiry",
        }
    }

    /// The kind of alert a failing check raises. A TLS check that only nears expiry raises
    /// [`AlertKind::TlsExpiry`] instead; the caller knows which, from the status.
    pub const fn for_check(kind: CheckKind) -> Self {
        match kind {
            CheckKind::Health | CheckKind::Tcp => Self::Health,
            CheckKind::Tls => Self::TlsFailed,
            CheckKind::Route => Self::Route,
            CheckKind::Dns => Self::Dns,
            CheckKind::Whois => Self::WhoisExpiry,
            CheckKind::Cors => Self::Cors,
            CheckKind::Heartbeat => Self::HeartbeatStale,
        }
    }

    /// Whether the alert concerns an agent of the mesh (`target` is then the agent's name).
    pub const fn is_mesh(self) -> bool {
        matches!(
            self,
            Self::PeerMissing
                | Self::MonitoringOffline
                | Self::ConfigDrift
                | Self::ClockSkew
                | Self::MeshCertExpiry
        )
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A notification's place in an incident's lifecycle (the `event` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertEvent {
    /// The incident is confirmed (or, with `repeat > 0`, still going on).
    Firing,
    /// The incident is over.
    Resolved,
}

impl AlertEvent {
    /// The contract name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_match_serde_and_are_the_contract_list() {
        let names: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "health",
                "tls_expiry",
                "tls_failed",
                "route",
                "dns",
                "whois_expiry",
                "cors",
                "latency_drift",
                "heartbeat_stale",
                "peer_missing",
                "monitoring_offline",
                "config_drift",
                "clock_skew",
                "mesh_cert_expiry",
            ]
        );
        for kind in AlertKind::ALL {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        assert_eq!(
            serde_json::to_string(&AlertEvent::Resolved).unwrap(),
            "\"resolved\""
        );
    }

    #[test]
    fn anchors_are_unique_slugs() {
        let anchors: BTreeSet<&str> = AlertKind::ALL.iter().map(|k| k.runbook_anchor()).collect();
        assert_eq!(anchors.len(), AlertKind::ALL.len());
        for anchor in anchors {
            assert!(
                anchor.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{anchor}"
            );
        }
    }

    #[test]
    fn every_check_kind_has_an_alert_kind_and_mesh_kinds_are_marked() {
        for kind in CheckKind::ALL {
            assert!(!AlertKind::for_check(kind).is_mesh());
        }
        let mesh: Vec<AlertKind> = AlertKind::ALL.into_iter().filter(|k| k.is_mesh()).collect();
        assert_eq!(mesh.len(), 5);
    }
}
