//! Observations: what one agent saw when it ran one check once.
//!
//! An observation is the unit that probes produce, the store keeps and the mesh gossips.
//! Time is a plain [`Timestamp`] handed in by the caller; this crate never reads a clock.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{CheckId, Status};

/// Milliseconds since the Unix epoch, UTC.
///
/// A plain number so that it encodes compactly and compares across agents; the caller owns the
/// clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant moved by `millis` (negative moves back), saturating at the ends of `i64`.
    pub const fn add_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub const fn millis_since(self, earlier: Self) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The result of running one check once, on one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Which check.
    pub check: CheckId,
    /// What the probe concluded.
    pub status: Status,
    /// How long the probe took, when it got far enough to measure it.
    pub latency_ms: Option<u64>,
    /// A one-line human explanation, e.g. `GET /api/health returned 502`.
    pub detail: String,
    /// When the probe finished.
    pub at: Timestamp,
}

impl Observation {
    /// Whether this observation is younger than `max_age_ms` at `now`.
    ///
    /// An observation from the future (a peer's clock ahead of ours) counts as fresh: clock skew is
    /// reported separately, and dropping the vote would turn skew into a false outage.
    pub fn is_fresh(&self, now: Timestamp, max_age_ms: i64) -> bool {
        now.millis_since(self.at) < max_age_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CheckKind;

    fn observation(at: i64) -> Observation {
        Observation {
            check: CheckId::new("site", CheckKind::Health).unwrap(),
            status: Status::Operational,
            latency_ms: Some(12),
            detail: "GET / returned 200".into(),
            at: Timestamp(at),
        }
    }

    #[test]
    fn freshness_is_strictly_younger_than_max_age() {
        let obs = observation(1_000);
        assert!(obs.is_fresh(Timestamp(1_000), 500));
        assert!(obs.is_fresh(Timestamp(1_499), 500));
        assert!(!obs.is_fresh(Timestamp(1_500), 500));
        assert!(
            obs.is_fresh(Timestamp(0), 500),
            "future observations are fresh"
        );
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(Timestamp(i64::MAX).add_millis(1), Timestamp(i64::MAX));
        assert_eq!(Timestamp(10).millis_since(Timestamp(4)), 6);
        assert_eq!(Timestamp(i64::MIN).millis_since(Timestamp(1)), i64::MIN);
    }

    #[test]
    fn json_shape_is_stable() {
        let json = serde_json::to_value(observation(5)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "check": "site/health", "status": "operational", "latency_ms": 12,
                "detail": "GET / returned 200", "at": 5
            })
        );
    }
}
