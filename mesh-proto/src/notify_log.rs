//! The notification log across the mesh: who sends each notification, and when an agent that
//! holds one takes over (DESIGN.md, "One sender per alert").
//!
//! Every agent computes the same owed notifications from the same verdicts. The notifier (the
//! first live, non-isolated agent by name) claims each one with a `sending` entry, gossips it,
//! sends, and marks it `sent`. The others hold. An agent at position k of the eligible agents
//! (name order, 0 = the notifier) sends a notification that nobody claimed once it has been owed
//! for k × the takeover window, so a crashed notifier is replaced by the next agent, then the
//! next. A `sending` claim whose agent is no longer eligible (it went missing mid-send), or that
//! its agent made before it restarted, counts as no claim: losing the notification would be
//! worse than sending it twice. Until then, it holds the others' pages; only `sent` ends them.
//!
//! Two claims of one notification only happen across a partition; merging keeps the earliest
//! (then the smallest agent name), so every agent ends up with the same log.

use std::collections::{BTreeMap, BTreeSet};

use crate::wire::{LogEntry, LogState};
use crate::{AlertEvent, Timestamp};

/// What identifies one notification: a transition of one incident.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NotificationKey {
    /// The subject's string form.
    pub subject: String,
    /// The incident id.
    pub incident: String,
    /// Firing or resolved.
    pub event: AlertEvent,
    /// 0, or the reminder's number.
    pub repeat: u32,
}

impl NotificationKey {
    /// The key of `entry`.
    pub fn of(entry: &LogEntry) -> Self {
        Self {
            subject: entry.subject.clone(),
            incident: entry.incident.clone(),
            event: entry.event,
            repeat: entry.repeat,
        }
    }
}

/// What [`NotificationLog::merge`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// The notification was not in the log.
    New,
    /// The same claim moved from `sending` to `sent`.
    Sent,
    /// Nothing changed (a repeat, or an older state).
    Known,
    /// Another agent's claim of the same notification: a duplicate across a partition. The
    /// log keeps the earliest claim.
    Conflict,
}

/// The merged log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationLog {
    entries: BTreeMap<NotificationKey, LogEntry>,
}

impl NotificationLog {
    /// Merges one entry, from this agent or a peer.
    pub fn merge(&mut self, entry: LogEntry) -> Merged {
        let key = NotificationKey::of(&entry);
        let Some(current) = self.entries.get_mut(&key) else {
            self.entries.insert(key, entry);
            return Merged::New;
        };
        if current.sent_by == entry.sent_by {
            if current.state == LogState::Sending && entry.state == LogState::Sent {
                *current = entry;
                return Merged::Sent;
            }
            if current.state == entry.state && entry.at > current.at {
                // A renewed claim (its agent restarted and still sends it): the latest stands.
                current.at = entry.at;
            }
            return Merged::Known;
        }
        if (entry.at, &entry.sent_by) < (current.at, &current.sent_by) {
            *current = entry;
        }
        Merged::Conflict
    }

    /// The entry of `key`, if any.
    pub fn get(&self, key: &NotificationKey) -> Option<&LogEntry> {
        self.entries.get(key)
    }

    /// Every entry, in key order (for gossip to a peer that reconnects).
    pub fn entries(&self) -> impl Iterator<Item = &LogEntry> {
        self.entries.values()
    }

    /// Forgets entries written before `older_than`.
    pub fn prune(&mut self, older_than: Timestamp) {
        self.entries.retain(|_, e| e.at >= older_than);
    }
}

/// Whether `me` should send a notification now, given the log's `claim` of it (if any). It has
/// been owed (confirmed by the verdicts) since `owed_since`; `eligible` are the live,
/// non-isolated agents, `me` included if it may send at all.
pub fn should_send(
    claim: Option<&LogEntry>,
    me: &str,
    eligible: &BTreeSet<String>,
    owed_since: Timestamp,
    now: Timestamp,
    takeover_ms: i64,
) -> bool {
    let Some(position) = eligible.iter().position(|a| a == me) else {
        return false; // isolated or missing: never send
    };
    let since = match claim {
        None => owed_since,
        Some(claim) if claim.state == LogState::Sending && !eligible.contains(&claim.sent_by) => {
            // The claimer went missing mid-send: owed again from when it claimed.
            owed_since.max(claim.at)
        }
        Some(_) => return false,
    };
    let rank = i64::try_from(position).unwrap_or(i64::MAX);
    now.millis_since(since) >= rank.saturating_mul(takeover_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(by: &str, at: i64, state: LogState) -> LogEntry {
        LogEntry {
            subject: "shop/health".into(),
            incident: "shop/health@1".into(),
            event: AlertEvent::Firing,
            repeat: 0,
            sent_by: by.into(),
            at: Timestamp(at),
            state,
        }
    }

    fn agents(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_claim_then_its_sent_merge_and_repeats_are_known() {
        let mut log = NotificationLog::default();
        assert_eq!(
            log.merge(entry("astra", 10, LogState::Sending)),
            Merged::New
        );
        assert_eq!(
            log.merge(entry("astra", 10, LogState::Sending)),
            Merged::Known
        );
        assert_eq!(log.merge(entry("astra", 12, LogState::Sent)), Merged::Sent);
        assert_eq!(
            log.merge(entry("astra", 10, LogState::Sending)),
            Merged::Known,
            "no step back"
        );
        let key = NotificationKey::of(&entry("x", 0, LogState::Sent));
        assert_eq!(log.get(&key).unwrap().state, LogState::Sent);
    }

    #[test]
    fn conflicting_claims_converge_on_the_earliest_in_any_order() {
        let a = entry("vps", 10, LogState::Sent);
        let b = entry("edge", 11, LogState::Sent);
        let mut one = NotificationLog::default();
        one.merge(a.clone());
        assert_eq!(one.merge(b.clone()), Merged::Conflict);
        let mut two = NotificationLog::default();
        two.merge(b);
        assert_eq!(two.merge(a), Merged::Conflict);
        assert_eq!(one, two);
    }

    #[test]
    fn the_notifier_sends_at_once_and_the_others_take_over_in_turn() {
        let log = NotificationLog::default();
        let key = NotificationKey::of(&entry("x", 0, LogState::Sent));
        let all = agents(&["astra", "edge", "vps"]);
        let owed = Timestamp(1_000);
        let send = |me, now| should_send(log.get(&key), me, &all, owed, Timestamp(now), 3_000);
        assert!(send("astra", 1_000));
        assert!(!send("edge", 3_999));
        assert!(send("edge", 4_000));
        assert!(!send("vps", 6_999));
        assert!(send("vps", 7_000));
        assert!(!send("intruder", 100_000), "not eligible, never");
    }

    #[test]
    fn a_claim_holds_everyone_unless_its_agent_went_missing() {
        let mut log = NotificationLog::default();
        log.merge(entry("astra", 2_000, LogState::Sending));
        let key = NotificationKey::of(&entry("x", 0, LogState::Sent));
        let owed = Timestamp(1_000);
        let live = agents(&["astra", "edge"]);
        assert!(!should_send(
            log.get(&key),
            "edge",
            &live,
            owed,
            Timestamp(60_000),
            3_000
        ));
        // astra is missing: edge is now first, and sends from astra's claim on.
        let survivors = agents(&["edge"]);
        assert!(should_send(
            log.get(&key),
            "edge",
            &survivors,
            owed,
            Timestamp(2_000),
            3_000
        ));
        log.merge(entry("astra", 2_500, LogState::Sent));
        assert!(!should_send(
            log.get(&key),
            "edge",
            &survivors,
            owed,
            Timestamp(9_000),
            3_000
        ));
    }

    #[test]
    fn prune_forgets_old_entries() {
        let mut log = NotificationLog::default();
        log.merge(entry("astra", 5, LogState::Sent));
        log.prune(Timestamp(6));
        assert_eq!(log.entries().count(), 0);
    }
}
