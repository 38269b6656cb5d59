//! Peer liveness, voters, quorum and the mesh verdict (DESIGN.md, "Mesh semantics").
//!
//! - **Liveness.** A peer is *alive* while its latest heartbeat is at most one and a half
//!   intervals old, *suspect* after that, and *missing* once `missed_heartbeats` intervals pass
//!   without one. Only missing peers stop counting: alive and suspect peers are *live*. A peer
//!   never heard from is suspect for the same span after watching starts, then missing.
//! - **Voters** for a check: live, non-isolated agents (this one included) with a fresh
//!   observation of it.
//! - **Confirmed down:** failing votes ≥ `required(n)`, n being the number of voters.
//!   `majority` is ⌊n/2⌋+1, `all` is n, an integer is capped at n. Missing peers shrink n, so the
//!   survivor of a 2-agent mesh alerts alone.
//! - **Local only:** this agent fails the check but the failing votes fall short.
//! - **Notifier:** the first live, non-isolated agent in name order.
//!
//! Everything here is a pure function of its inputs and `now`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Status, Timestamp, Verdict};

/// The heartbeat rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivenessPolicy {
    /// Milliseconds between two heartbeats of one agent.
    pub heartbeat_interval_ms: i64,
    /// Heartbeats a peer may miss before it is missing.
    pub missed_heartbeats: u32,
}

impl LivenessPolicy {
    /// How long after its latest heartbeat a peer becomes missing.
    pub fn missing_after_ms(&self) -> i64 {
        self.heartbeat_interval_ms
            .saturating_mul(i64::from(self.missed_heartbeats.max(1)))
    }

    /// How long after its latest heartbeat a peer becomes suspect.
    fn suspect_after_ms(&self) -> i64 {
        self.heartbeat_interval_ms.saturating_mul(3) / 2
    }
}

/// A peer's liveness (the `state` of `/api/mesh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Heartbeats arrive on time.
    Alive,
    /// A heartbeat is late, but not yet `missed_heartbeats` of them.
    Suspect,
    /// `missed_heartbeats` intervals passed without a heartbeat.
    Missing,
}

impl PeerState {
    /// Whether the peer still counts (alive or suspect).
    pub const fn is_live(self) -> bool {
        !matches!(self, Self::Missing)
    }
}

/// The state of a peer with its latest heartbeat at `last` (`None`: never heard), watched since
/// `watching_since`, at `now`. A heartbeat from the future (clock skew) counts as fresh.
pub fn peer_state(
    last: Option<Timestamp>,
    watching_since: Timestamp,
    now: Timestamp,
    policy: &LivenessPolicy,
) -> PeerState {
    let age = now.millis_since(last.unwrap_or(watching_since));
    if age >= policy.missing_after_ms() {
        PeerState::Missing
    } else if last.is_some() && age <= policy.suspect_after_ms() {
        PeerState::Alive
    } else {
        PeerState::Suspect
    }
}

/// How many failing votes confirm a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuorumPolicy {
    /// ⌊n/2⌋+1 of the voters.
    Majority,
    /// Every voter.
    All,
    /// This many, capped at the number of voters.
    Count(u32),
}

impl QuorumPolicy {
    /// The failing votes required among `voters` (at least 1).
    pub fn required(self, voters: usize) -> usize {
        let n = voters.max(1);
        match self {
            Self::Majority => n / 2 + 1,
            Self::All => n,
            Self::Count(k) => usize::try_from(k).unwrap_or(usize::MAX).clamp(1, n),
        }
    }
}

/// One agent's latest observation of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The agent.
    pub agent: String,
    /// What it saw.
    pub status: Status,
    /// When.
    pub at: Timestamp,
}

/// What the agents conclude about one check, and who confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conclusion {
    /// The verdict.
    pub verdict: Verdict,
    /// The voters whose failing votes confirmed a `down` (empty otherwise).
    pub confirmed_by: Vec<String>,
    /// How many agents voted.
    pub voters: usize,
}

/// The verdict on one check from `votes` (at most one per agent; others are ignored).
///
/// `eligible` are the live, non-isolated agents, this one (`me`) included if it is not isolated.
/// A vote counts when its agent is eligible and it is younger than `max_age_ms` (2 × interval +
/// timeout). With no counting vote the verdict is `unknown`.
pub fn verdict(
    votes: &[Vote],
    me: &str,
    eligible: &BTreeSet<String>,
    max_age_ms: i64,
    now: Timestamp,
    policy: QuorumPolicy,
) -> Conclusion {
    let mut seen = BTreeSet::new();
    let counted: Vec<&Vote> = votes
        .iter()
        .filter(|v| eligible.contains(&v.agent) && now.millis_since(v.at) < max_age_ms)
        .filter(|v| seen.insert(v.agent.as_str()))
        .collect();
    let voters = counted.len();
    if voters == 0 {
        return Conclusion {
            verdict: Verdict::Unknown,
            confirmed_by: Vec::new(),
            voters,
        };
    }
    let mut failing: Vec<String> = counted
        .iter()
        .filter(|v| v.status.is_failure())
        .map(|v| v.agent.clone())
        .collect();
    failing.sort();
    if failing.len() >= policy.required(voters) {
        return Conclusion {
            verdict: Verdict::Down,
            confirmed_by: failing,
            voters,
        };
    }
    let mine_fails = counted
        .iter()
        .any(|v| v.agent == me && v.status.is_failure());
    Conclusion {
        verdict: if mine_fails {
            Verdict::LocalOnly
        } else {
            Verdict::Up
        },
        confirmed_by: Vec::new(),
        voters,
    }
}

/// The agent that sends notifications: the first eligible one in name order.
pub fn notifier(eligible: &BTreeSet<String>) -> Option<&str> {
    eligible.iter().next().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const POLICY: LivenessPolicy = LivenessPolicy {
        heartbeat_interval_ms: 1_000,
        missed_heartbeats: 3,
    };

    fn t(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    #[test]
    fn liveness_goes_alive_suspect_missing() {
        let last = Some(t(10_000));
        assert_eq!(peer_state(last, t(0), t(11_500), &POLICY), PeerState::Alive);
        assert_eq!(
            peer_state(last, t(0), t(11_501), &POLICY),
            PeerState::Suspect
        );
        assert_eq!(
            peer_state(last, t(0), t(12_999), &POLICY),
            PeerState::Suspect
        );
        assert_eq!(
            peer_state(last, t(0), t(13_000), &POLICY),
            PeerState::Missing
        );
        assert_eq!(
            peer_state(last, t(0), t(5_000), &POLICY),
            PeerState::Alive,
            "skew"
        );
    }

    #[test]
    fn a_peer_never_heard_from_is_suspect_then_missing() {
        assert_eq!(peer_state(None, t(0), t(100), &POLICY), PeerState::Suspect);
        assert!(peer_state(None, t(0), t(2_999), &POLICY).is_live());
        assert_eq!(
            peer_state(None, t(0), t(3_000), &POLICY),
            PeerState::Missing
        );
    }

    #[test]
    fn required_follows_the_policy() {
        assert_eq!(QuorumPolicy::Majority.required(1), 1);
        assert_eq!(QuorumPolicy::Majority.required(2), 2);
        assert_eq!(QuorumPolicy::Majority.required(3), 2);
        assert_eq!(QuorumPolicy::Majority.required(4), 3);
        assert_eq!(QuorumPolicy::All.required(3), 3);
        assert_eq!(QuorumPolicy::Count(2).required(5), 2);
        assert_eq!(QuorumPolicy::Count(5).required(2), 2, "capped at n");
        assert_eq!(QuorumPolicy::Count(0).required(2), 1, "never zero");
    }

    fn vote(agent: &str, status: Status, at: i64) -> Vote {
        Vote {
            agent: agent.into(),
            status,
            at: t(at),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    use Status::{Error, Operational, Unreachable};

    #[test]
    fn two_of_three_confirm_and_one_is_local_only() {
        let all = set(&["astra", "edge", "vps"]);
        let votes = [
            vote("astra", Error, 900),
            vote("edge", Unreachable, 950),
            vote("vps", Operational, 990),
        ];
        let c = verdict(
            &votes,
            "edge",
            &all,
            1_000,
            t(1_000),
            QuorumPolicy::Majority,
        );
        assert_eq!(c.verdict, Verdict::Down);
        assert_eq!(c.confirmed_by, ["astra", "edge"]);
        assert_eq!(c.voters, 3);
        let votes = [
            vote("astra", Operational, 900),
            vote("edge", Unreachable, 950),
            vote("vps", Operational, 990),
        ];
        let c = verdict(
            &votes,
            "edge",
            &all,
            1_000,
            t(1_000),
            QuorumPolicy::Majority,
        );
        assert_eq!(c.verdict, Verdict::LocalOnly);
        let c = verdict(&votes, "vps", &all, 1_000, t(1_000), QuorumPolicy::Majority);
        assert_eq!(c.verdict, Verdict::Up);
    }

    #[test]
    fn a_missing_peer_shrinks_n_and_the_survivor_alerts_alone() {
        let votes = [vote("edge", Error, 900), vote("vps", Operational, 100)];
        let survivors = set(&["edge"]);
        let c = verdict(
            &votes,
            "edge",
            &survivors,
            5_000,
            t(1_000),
            QuorumPolicy::Majority,
        );
        assert_eq!(c.verdict, Verdict::Down);
        assert_eq!((c.confirmed_by.len(), c.voters), (1, 1));
    }

    #[test]
    fn stale_votes_and_ineligible_agents_do_not_count() {
        let votes = [vote("edge", Error, 0), vote("intruder", Error, 990)];
        let c = verdict(
            &votes,
            "edge",
            &set(&["edge"]),
            500,
            t(1_000),
            QuorumPolicy::Majority,
        );
        assert_eq!(c.verdict, Verdict::Unknown);
        assert_eq!(notifier(&set(&["vps", "edge", "astra"])), Some("astra"));
        assert_eq!(notifier(&BTreeSet::new()), None);
    }

    proptest! {
        #[test]
        fn never_down_without_quorum_and_only_eligible_agents_vote(
            statuses in proptest::collection::vec((0usize..5, any::<bool>(), 0i64..2_000), 0..12),
            eligible_mask in 0u8..32,
            count in 0u32..6,
        ) {
            let names = ["a", "b", "c", "d", "e"];
            let eligible: BTreeSet<String> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| eligible_mask & (1 << i) != 0)
                .map(|(_, n)| (*n).to_owned())
                .collect();
            let votes: Vec<Vote> = statuses
                .iter()
                .map(|(i, fails, at)| vote(names[*i], if *fails { Error } else { Operational }, *at))
                .collect();
            for policy in [QuorumPolicy::Majority, QuorumPolicy::All, QuorumPolicy::Count(count)] {
                let c = verdict(&votes, "a", &eligible, 1_000, t(2_000), policy);
                prop_assert!(c.voters <= eligible.len());
                if c.verdict == Verdict::Down {
                    prop_assert!(c.confirmed_by.len() >= policy.required(c.voters));
                    prop_assert!(c.confirmed_by.iter().all(|a| eligible.contains(a)));
                } else {
                    prop_assert!(c.confirmed_by.is_empty());
                }
            }
        }
    }
}
