//! Push heartbeats: an outside job (a nightly test run, a backup) pings the agent, and the check
//! fails when no ping arrived within `max_age` (DESIGN.md, "Checks": "test run stale").
//!
//! A heartbeat that has never been pinged is judged from when the agent started watching it, so
//! a newly configured heartbeat gets one full `max_age` of grace instead of paging at once.

use crate::{Status, Timestamp};

/// The state of a push heartbeat at `now`: `operational` while the latest ping (or, without any,
/// the start of watching) is younger than `max_age_ms`, `error` ("stale") after.
pub fn status(
    last_ping: Option<Timestamp>,
    watching_since: Timestamp,
    max_age_ms: i64,
    now: Timestamp,
) -> Status {
    if now < stale_at(last_ping, watching_since, max_age_ms) {
        Status::Operational
    } else {
        Status::Error
    }
}

/// When [`status`] next changes if no ping arrives: the moment the heartbeat goes stale.
pub fn stale_at(
    last_ping: Option<Timestamp>,
    watching_since: Timestamp,
    max_age_ms: i64,
) -> Timestamp {
    last_ping.unwrap_or(watching_since).add_millis(max_age_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn fresh_then_stale_at_exactly_max_age() {
        let ping = Some(Timestamp(10 * DAY));
        assert_eq!(
            status(ping, Timestamp(0), 7 * DAY, Timestamp(16 * DAY)),
            Status::Operational
        );
        assert_eq!(
            status(ping, Timestamp(0), 7 * DAY, Timestamp(17 * DAY)),
            Status::Error
        );
        assert_eq!(stale_at(ping, Timestamp(0), 7 * DAY), Timestamp(17 * DAY));
    }

    #[test]
    fn a_never_pinged_heartbeat_gets_one_max_age_of_grace() {
        let start = Timestamp(DAY);
        assert_eq!(
            status(None, start, DAY, Timestamp(DAY + 1)),
            Status::Operational
        );
        assert_eq!(status(None, start, DAY, Timestamp(2 * DAY)), Status::Error);
        assert_eq!(stale_at(None, start, DAY), Timestamp(2 * DAY));
    }

    #[test]
    fn an_old_ping_from_before_watching_started_still_counts() {
        // The agent restarted: the ping from before counts, the restart gives no new grace.
        let ping = Some(Timestamp(0));
        assert_eq!(
            status(ping, Timestamp(5 * DAY), DAY, Timestamp(5 * DAY)),
            Status::Error
        );
    }
}
