//! Verdicts: what the agents together conclude about a check (DESIGN.md, "Mesh semantics").
//!
//! `up` and `down` are confirmed conclusions; `local_only` means this agent fails the check but
//! not enough others do; `unknown` means there are no fresh votes. A lone agent is its own
//! quorum of one ([`Verdict::alone`]); the mesh computes verdicts from every agent's votes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Status;

/// The agents' conclusion about one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Confirmed working (possibly degraded).
    Up,
    /// Confirmed failing by a quorum.
    Down,
    /// This agent fails it, but not enough others do: a regional or path problem.
    LocalOnly,
    /// No fresh votes.
    Unknown,
}

impl Verdict {
    /// The verdict of a quorum of one on its own latest status (`None`: never observed).
    /// A stale observation (not `fresh`) or an isolated agent gives no verdict: an agent that
    /// cannot reach anything casts no vote (DESIGN.md, "Isolated agent").
    pub fn alone(status: Option<Status>, fresh: bool, isolated: bool) -> Self {
        match status {
            None => Self::Unknown,
            Some(_) if !fresh || isolated => Self::Unknown,
            Some(s) if s.is_failure() => Self::Down,
            Some(_) => Self::Up,
        }
    }

    /// The contract name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::LocalOnly => "local_only",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_of_one_follows_its_own_status() {
        assert_eq!(Verdict::alone(None, true, false), Verdict::Unknown);
        assert_eq!(
            Verdict::alone(Some(Status::Operational), true, false),
            Verdict::Up
        );
        assert_eq!(
            Verdict::alone(Some(Status::Degraded), true, false),
            Verdict::Up
        );
        assert_eq!(
            Verdict::alone(Some(Status::Error), true, false),
            Verdict::Down
        );
        assert_eq!(
            Verdict::alone(Some(Status::Unreachable), true, false),
            Verdict::Down
        );
        assert_eq!(
            Verdict::alone(Some(Status::Error), false, false),
            Verdict::Unknown,
            "stale"
        );
        assert_eq!(
            Verdict::alone(Some(Status::Unreachable), true, true),
            Verdict::Unknown,
            "an isolated agent casts no vote"
        );
        assert_eq!(
            serde_json::to_string(&Verdict::LocalOnly).unwrap(),
            "\"local_only\""
        );
    }
}
