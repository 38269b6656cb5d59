//! The status model: the four outcomes of a probe, and how they rank.
//!
//! The names are a contract (DESIGN.md, "Status model"): they appear in the CLI's JSON, the API,
//! webhook payloads and, later, on the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The outcome of one probe.
///
/// Variants are declared from best to worst, so `Ord` ranks them by severity:
/// `Operational < Degraded < Error < Unreachable`. The worst status of a set is its `max()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answered, and every expectation held.
    Operational,
    /// Answered, but something is off: an unexpected body on a 2xx, latency drift, a certificate
    /// or domain inside its warning window.
    Degraded,
    /// Answered wrongly: an unexpected HTTP status, an invalid certificate, a DNS answer that
    /// differs from the expected one, a CORS violation.
    Error,
    /// No usable answer: resolution failed, connection refused or reset, timeout, TLS handshake
    /// failure.
    Unreachable,
}

impl Status {
    /// Every status, best first.
    pub const ALL: [Self; 4] = [
        Self::Operational,
        Self::Degraded,
        Self::Error,
        Self::Unreachable,
    ];

    /// The contract name, as used in JSON and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Operational => "operational",
            Self::Degraded => "degraded",
            Self::Error => "error",
            Self::Unreachable => "unreachable",
        }
    }

    /// Whether this status counts as the check being down (a failing vote).
    ///
    /// `degraded` is a warning, not an outage: the service answers.
    pub const fn is_failure(self) -> bool {
        matches!(self, Self::Error | Self::Unreachable)
    }

    /// The Nagios plugin exit code for this status: 0 OK, 1 WARNING, 2 CRITICAL.
    pub const fn nagios_code(self) -> u8 {
        match self {
            Self::Operational => 0,
            Self::Degraded => 1,
            Self::Error | Self::Unreachable => 2,
        }
    }

    /// The worst status among `statuses`, or `Operational` when there are none.
    pub fn worst(statuses: impl IntoIterator<Item = Self>) -> Self {
        statuses.into_iter().max().unwrap_or(Self::Operational)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that names no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}: expected operational, degraded, error or unreachable")]
pub struct UnknownStatus(String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order_is_best_to_worst() {
        assert!(Status::Operational < Status::Degraded);
        assert!(Status::Degraded < Status::Error);
        assert!(Status::Error < Status::Unreachable);
        assert_eq!(
            Status::worst([Status::Degraded, Status::Operational]),
            Status::Degraded
        );
        assert_eq!(Status::worst([]), Status::Operational);
    }

    #[test]
    fn nagios_codes_follow_the_plugin_convention() {
        let codes: Vec<u8> = Status::ALL.iter().map(|s| s.nagios_code()).collect();
        assert_eq!(codes, [0, 1, 2, 2]);
    }

    #[test]
    fn only_error_and_unreachable_are_failures() {
        let failing: Vec<Status> = Status::ALL.into_iter().filter(|s| s.is_failure()).collect();
        assert_eq!(failing, [Status::Error, Status::Unreachable]);
    }

    #[test]
    fn names_round_trip_through_str_and_json() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            let json = serde_json::to_string(&status).expect("serialize");
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(
                serde_json::from_str::<Status>(&json).expect("deserialize"),
                status
            );
        }
        assert!("down".parse::<Status>().is_err());
        assert!("Operational".parse::<Status>().is_err());
    }
}
