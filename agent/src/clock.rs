//! The agent's wall clock and its conversions: the one place that reads `SystemTime` and turns
//! durations into the mesh's millisecond [`Timestamp`] arithmetic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_proto::Timestamp;
use time::OffsetDateTime;

/// The wall clock, as the mesh's [`Timestamp`].
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp(ms)
}

/// A timestamp as a UTC date-time (the epoch if out of range).
pub fn to_datetime(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_millis()) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A timestamp in RFC 3339, as the API and alert texts show it.
pub fn rfc3339(t: Timestamp) -> String {
    to_datetime(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
