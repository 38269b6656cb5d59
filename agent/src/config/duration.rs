//! Durations in the config file: humantime strings such as `"30s"`, `"5m"` or `"1h 30m"`.
//!
//! A bare number is refused with a hint to add a unit: `interval = 300` is ambiguous, and guessing
//! seconds is how a 5-minute check becomes a 5-millisecond one.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{Error, Visitor};

const EXPECTED: &str = "a duration such as \"30s\", \"5m\" or \"1h\"";

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Duration, E> {
        humantime::parse_duration(v)
            .map_err(|e| E::custom(format!("expected {EXPECTED}, got {v:?} ({e})")))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "expected {EXPECTED}, got the bare number {v}: add a unit, e.g. \"{v}s\""
        )))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "expected {EXPECTED}, got the bare number {v}: add a unit, e.g. \"{v}s\""
        )))
    }
}
