//! Latency drift: sustained latency well above a check's own baseline (DESIGN.md, "Checks").
//!
//! The baseline is the median latency of the check's answered probes over the past 7 days, as
//! measured by this agent. A check drifts when each of its latest `sustained` answered probes
//! took more than `factor_percent`% of that baseline. The median ignores the odd slow probe in
//! the baseline, and the "each of the latest" rule ignores a single slow one now: only a
//! sustained change raises `latency_drift`.

use serde::{Deserialize, Serialize};

/// The rules of drift detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftPolicy {
    /// How far above the baseline counts as drift, in percent (200: twice the baseline).
    pub factor_percent: u64,
    /// How many consecutive answered probes must all be above it.
    pub sustained: usize,
    /// The fewest baseline samples that make a baseline; fewer, and nothing is judged.
    pub min_samples: usize,
    /// Latencies at or below this many milliseconds never drift (a 1 ms baseline doubling to
    /// 2 ms is noise, not an incident).
    pub floor_ms: u64,
}

impl Default for DriftPolicy {
    fn default() -> Self {
        Self {
            factor_percent: 200,
            sustained: 3,
            min_samples: 20,
            floor_ms: 50,
        }
    }
}

/// A detected drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The 7-day median, in milliseconds.
    pub baseline_ms: u64,
    /// The lowest of the latest sustained latencies, in milliseconds.
    pub current_ms: u64,
}

/// The median of `samples` (the lower middle for an even count), or `None` when empty.
pub fn median(samples: &[u64]) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    let mid = (sorted.len() - 1) / 2;
    let (_, median, _) = sorted.select_nth_unstable(mid);
    Some(*median)
}

/// Whether `recent` (answered probes, oldest first) drifts above `baseline_ms`, the median
/// from [`median`] over `baseline_samples` samples.
pub fn detect(
    baseline_ms: u64,
    baseline_samples: usize,
    recent: &[u64],
    policy: &DriftPolicy,
) -> Option<Drift> {
    if baseline_samples < policy.min_samples || policy.sustained == 0 {
        return None;
    }
    let latest = recent.get(recent.len().checked_sub(policy.sustained)?..)?;
    let limit = baseline_ms
        .saturating_mul(policy.factor_percent)
        .div_ceil(100)
        .max(policy.floor_ms);
    let current_ms = latest.iter().copied().min()?;
    (current_ms > limit).then_some(Drift {
        baseline_ms,
        current_ms,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const POLICY: DriftPolicy = DriftPolicy {
        factor_percent: 200,
        sustained: 3,
        min_samples: 20,
        floor_ms: 50,
    };

    #[test]
    fn medians_resist_outliers() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median(&[100, 100, 100, 9_000]), Some(100));
        assert_eq!(median(&[3, 1, 2]), Some(2));
    }

    #[test]
    fn sustained_latency_above_twice_the_baseline_drifts() {
        assert_eq!(
            detect(100, 2000, &[100, 250, 260, 230], &POLICY),
            Some(Drift {
                baseline_ms: 100,
                current_ms: 230
            })
        );
    }

    #[test]
    fn one_slow_probe_or_exactly_twice_is_not_drift() {
        assert_eq!(detect(100, 2000, &[250, 100, 260], &POLICY), None);
        assert_eq!(detect(100, 2000, &[200, 200, 200], &POLICY), None);
        assert_eq!(detect(100, 2000, &[250, 250], &POLICY), None, "too few");
    }

    #[test]
    fn no_baseline_no_verdict_and_tiny_latencies_never_drift() {
        assert_eq!(detect(100, 19, &[900, 900, 900], &POLICY), None);
        assert_eq!(
            detect(5, 2000, &[40, 45, 49], &POLICY),
            None,
            "under the floor"
        );
        assert!(detect(5, 2000, &[60, 60, 60], &POLICY).is_some());
    }

    proptest! {
        #[test]
        fn drift_means_every_latest_sample_is_above_the_limit(
            baseline in 0u64..10_000,
            recent in proptest::collection::vec(0u64..100_000, 0..10),
        ) {
            match detect(baseline, 100, &recent, &POLICY) {
                Some(d) => {
                    let tail = &recent[recent.len() - 3..];
                    prop_assert!(tail.iter().all(|&l| l * 100 > baseline * 200 && l > 50));
                    prop_assert_eq!(d.current_ms, *tail.iter().min().unwrap());
                }
                None => prop_assert!(
                    recent.len() < 3
                        || recent[recent.len() - 3..].iter().any(|&l| l * 100 <= baseline * 200 || l <= 50)
                ),
            }
        }
    }
}
