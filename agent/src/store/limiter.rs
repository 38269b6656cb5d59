//! A lock-free rate limit for repeated log lines (STYLE.md §9: repeated warnings are
//! rate-limited). Reads the monotonic clock, which is only ever used for logging in the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one log line through per interval and counts the ones it holds back.
#[derive(Debug)]
pub(super) struct LogLimiter {
    origin: Instant,
    every_ms: u64,
    /// Milliseconds after `origin` before which nothing is logged.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub(super) fn new(every: Duration) -> Self {
        Self {
            origin: Instant::now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were held back since the last
    /// one; `None` when this one should be held back.
    pub(super) fn check(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_the_first_through_then_counts_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.check(), Some(0));
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 2);

        let open = LogLimiter::new(Duration::ZERO);
        assert_eq!(open.check(), Some(0));
        assert_eq!(open.check(), Some(0));
    }
}
