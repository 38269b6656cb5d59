//! The alert engine: every check's [`Lifecycle`], plus the rules that span checks.
//!
//! - **Dependencies.** While any check of a parent target (`depends_on`, transitively) is
//!   down (`error` or `unreachable`), the checks of its dependants are *folded*: they page nothing, and the parent's
//!   pages list them. A dependant that already paged still gets its `resolved`.
//! - **Monitoring offline.** When, for at least two targets, the latest round of every target
//!   (the checks fed with its newest timestamp) is all `unreachable`, the likeliest cause is
//!   this agent's own network. Checks that ran long ago (an hourly TLS check) do not veto it:
//!   only what each target answered last counts. One
//!   `monitoring_offline` incident pages instead of one per target, and the target incidents are
//!   held (they page if they outlast it). In a mesh the rule is off
//!   ([`AlertEngine::without_offline_rule`]): there, peers decide ([`crate::mesh`]).
//!
//! The engine is fed one round of confirmed statuses at a time, with `now`, and returns the pages
//! owed. It holds no clock and does no I/O; its state is the lifecycles, which the agent persists.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::notify_log::NotificationKey;
use crate::{
    AlertEvent, AlertKind, AlertPolicy, CheckId, CheckIdError, CheckKind, Lifecycle, Page, Status,
    Timestamp, validate_target_name,
};

/// What a page is about.
///
/// Its string form (the store's key, log lines, the notification log) is the check id,
/// `monitoring_offline` (this agent, alone), or `KIND:AGENT` for a condition of one agent of the
/// mesh (`peer_missing:vps`). None of the last two can be a check id, which always has a `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// One check.
    Check(CheckId),
    /// This agent sees every target unreachable (an agent without a mesh).
    MonitoringOffline,
    /// A condition of one agent of the mesh: `kind` is one of the mesh alert kinds
    /// ([`AlertKind::is_mesh`]).
    Agent {
        /// What is wrong.
        kind: AlertKind,
        /// The agent it is about (this one, for its own mesh certificate).
        agent: String,
    },
}

impl Subject {
    const MONITORING_OFFLINE: &'static str = "monitoring_offline";

    /// The condition `kind` of `agent`.
    pub fn agent(kind: AlertKind, agent: impl Into<String>) -> Self {
        Self::Agent {
            kind,
            agent: agent.into(),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Check(id) => id.fmt(f),
            Self::MonitoringOffline => f.write_str(Self::MONITORING_OFFLINE),
            Self::Agent { kind, agent } => write!(f, "{kind}:{agent}"),
        }
    }
}

impl FromStr for Subject {
    type Err = CheckIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Self::MONITORING_OFFLINE {
            return Ok(Self::MonitoringOffline);
        }
        if !s.contains('/')
            && let Some((kind, agent)) = s.split_once(':')
            && let Some(kind) = AlertKind::ALL
                .into_iter()
                .find(|k| k.is_mesh() && k.as_str() == kind)
        {
            validate_target_name(agent)?;
            return Ok(Self::agent(kind, agent));
        }
        s.parse().map(Self::Check)
    }
}

/// A page the engine decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What it is about.
    pub subject: Subject,
    /// Firing or resolved.
    pub page: Page,
    /// For a firing page: the dependant checks folded into it (or, for `monitoring_offline`,
    /// the checks it stands for).
    pub folded: Vec<CheckId>,
}

impl Decision {
    /// The incident's id: its subject and its start, `shop/health@1700000000000`. The same
    /// after a restart; other agents' ids of the same incident differ by their start times
    /// ([`crate::mesh`] matches them).
    pub fn incident(&self) -> String {
        incident_id(&self.subject, self.page.since())
    }

    /// The notification this decision owes.
    pub fn notification(&self) -> NotificationKey {
        let (event, repeat) = match self.page {
            Page::Firing { repeat, .. } => (AlertEvent::Firing, repeat),
            Page::Resolved { .. } => (AlertEvent::Resolved, 0),
        };
        NotificationKey {
            subject: self.subject.to_string(),
            incident: self.incident(),
            event,
            repeat,
        }
    }
}

/// The id of the incident of `subject` that opened at `since`.
pub fn incident_id(subject: &Subject, since: Timestamp) -> String {
    format!("{subject}@{}", since.as_millis())
}

/// The alert engine of one agent.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    policy: AlertPolicy,
    /// target → every target it depends on, transitively, nearest first. Computed once: the
    /// dependency graph only changes with the config, and a new config builds a new engine.
    ancestry: BTreeMap<String, Vec<String>>,
    lifecycles: BTreeMap<Subject, Lifecycle>,
    /// The latest confirmed status of each check, and when it was fed.
    statuses: BTreeMap<CheckId, (Status, Timestamp)>,
    /// Conditions of mesh agents, as last set.
    conditions: BTreeMap<Subject, bool>,
    /// Whether the `monitoring_offline` rule applies: only to an agent without a mesh. In a
    /// mesh, peers judge an agent's network ([`crate::mesh`]).
    offline_rule: bool,
}

impl AlertEngine {
    /// An engine with the given policy and `depends_on` lists (target, its parents).
    pub fn new(
        policy: AlertPolicy,
        depends_on: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Self {
        let parents: BTreeMap<String, Vec<String>> = depends_on.into_iter().collect();
        let ancestry = parents
            .keys()
            .map(|target| (target.clone(), walk_ancestors(&parents, target)))
            .filter(|(_, ancestors)| !ancestors.is_empty())
            .collect();
        Self {
            policy,
            ancestry,
            lifecycles: BTreeMap::new(),
            statuses: BTreeMap::new(),
            conditions: BTreeMap::new(),
            offline_rule: true,
        }
    }

    /// The same engine without the `monitoring_offline` rule, for an agent in a mesh: the
    /// statuses it is fed are the mesh's verdicts, and its peers judge its network.
    #[must_use]
    pub fn without_offline_rule(mut self) -> Self {
        self.offline_rule = false;
        self
    }

    /// Sets a condition of a mesh agent ([`Subject::Agent`]): active conditions page like a
    /// failing check, with the same cooldown and reminders. Call [`tick`](Self::tick) or
    /// [`step`](Self::step) to get the pages.
    pub fn set_condition(&mut self, subject: Subject, active: bool) {
        if active || self.lifecycles.contains_key(&subject) {
            self.conditions.insert(subject, active);
        }
    }

    /// Forgets every condition (and its incident) about `agent`: it left the mesh's config.
    pub fn forget_agent(&mut self, name: &str) {
        let about = |s: &Subject| matches!(s, Subject::Agent { agent, .. } if agent == name);
        self.conditions.retain(|s, _| !about(s));
        self.lifecycles.retain(|s, _| !about(s));
    }

    /// Restores a lifecycle saved before a restart.
    pub fn restore(&mut self, subject: Subject, lifecycle: Lifecycle) {
        self.lifecycles.insert(subject, lifecycle);
    }

    /// The lifecycle of `subject`, if it has one.
    pub fn lifecycle(&self, subject: &Subject) -> Option<&Lifecycle> {
        self.lifecycles.get(subject)
    }

    /// Every lifecycle, for persisting.
    pub fn lifecycles(&self) -> impl Iterator<Item = (&Subject, &Lifecycle)> {
        self.lifecycles.iter()
    }

    /// Feeds one round of confirmed statuses. Checks absent from `round` (no verdict: unknown or
    /// local-only) keep their previous status. Returns the pages owed at `now`, parents first.
    pub fn step(&mut self, round: &BTreeMap<CheckId, Status>, now: Timestamp) -> Vec<Decision> {
        self.statuses.extend(
            round
                .iter()
                .map(|(id, status)| (id.clone(), (*status, now))),
        );
        self.evaluate(now)
    }

    /// Re-evaluates without new statuses: deferred firings and reminders. Call it at
    /// [`next_wakeup`](Self::next_wakeup).
    pub fn tick(&mut self, now: Timestamp) -> Vec<Decision> {
        self.evaluate(now)
    }

    /// Forgets checks that are no longer configured (after a reload), so they neither page nor
    /// count toward `monitoring_offline`. An open incident of a removed check is dropped without
    /// a `resolved`: the check no longer exists to recover.
    pub fn retain_checks(&mut self, keep: impl Fn(&CheckId) -> bool) {
        self.statuses.retain(|id, _| keep(id));
        self.lifecycles.retain(|subject, _| match subject {
            Subject::Check(id) => keep(id),
            Subject::MonitoringOffline | Subject::Agent { .. } => true,
        });
    }

    /// The earliest moment a lifecycle wants [`tick`](Self::tick).
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.lifecycles
            .values()
            .filter_map(|l| l.next_wakeup(&self.policy))
            .min()
    }

    fn evaluate(&mut self, now: Timestamp) -> Vec<Decision> {
        let policy = self.policy;
        let offline = if self.offline_rule {
            self.offline_checks()
        } else {
            Vec::new()
        };
        // Targets that are down (not merely degraded): they fold their dependants.
        let down_targets: BTreeSet<&str> = self
            .statuses
            .iter()
            .filter(|(_, (s, _))| s.is_failure())
            .map(|(id, _)| id.target())
            .collect();
        let mut decisions = Vec::new();

        let offline_page = self
            .lifecycles
            .entry(Subject::MonitoringOffline)
            .or_default()
            .update(!offline.is_empty(), now, &policy);
        if let Some(page) = offline_page {
            decisions.push(Decision {
                subject: Subject::MonitoringOffline,
                page,
                folded: offline.clone(),
            });
        }

        for (subject, active) in &self.conditions {
            let lifecycle = self.lifecycles.entry(subject.clone()).or_default();
            if let Some(page) = lifecycle.update(*active, now, &policy) {
                decisions.push(Decision {
                    subject: subject.clone(),
                    page,
                    folded: Vec::new(),
                });
            }
        }

        // Parents before dependants, so a parent's firing lists what it folds. The statuses are
        // in id order already, and the sort is stable: (depth, id) order.
        let ancestry = &self.ancestry;
        let ancestors = |target: &str| ancestry.get(target).map_or(&[][..], Vec::as_slice);
        let mut order: Vec<(&CheckId, Status, Option<&str>)> = self
            .statuses
            .iter()
            .map(|(id, (status, _))| {
                let folding_parent = ancestors(id.target())
                    .iter()
                    .find(|p| down_targets.contains(p.as_str()))
                    .map(String::as_str);
                (id, *status, folding_parent)
            })
            .collect();
        order.sort_by_key(|(id, _, _)| ancestors(id.target()).len());
        let mut pages = Vec::new();
        let mut folded_under: BTreeMap<&str, Vec<CheckId>> = BTreeMap::new();
        for (id, status, folding_parent) in order {
            let alerting = status != Status::Operational;
            let lifecycle = self
                .lifecycles
                .entry(Subject::Check(id.clone()))
                .or_default();
            let offline_folds = offline.binary_search(id).is_ok();
            if alerting && (offline_folds || folding_parent.is_some()) {
                if let Some(parent) = folding_parent {
                    folded_under.entry(parent).or_default().push(id.clone());
                }
                lifecycle.hold(now);
                continue;
            }
            if let Some(page) = lifecycle.update(alerting, now, &policy) {
                pages.push((id.clone(), page));
            }
        }
        for (id, page) in pages {
            let folded = match page {
                Page::Firing { .. } => folded_under.get(id.target()).cloned().unwrap_or_default(),
                Page::Resolved { .. } => Vec::new(),
            };
            decisions.push(Decision {
                subject: Subject::Check(id),
                page,
                folded,
            });
        }
        decisions
    }

    /// The unreachable checks of every target's latest round, if that is all of them across at
    /// least two targets; empty otherwise. A target's latest round is its network checks fed at
    /// its newest timestamp, so an hourly check that passed before the outage does not veto it.
    fn offline_checks(&self) -> Vec<CheckId> {
        // Per target: the newest timestamp, and whether everything fed then was unreachable.
        let mut latest: BTreeMap<&str, (Timestamp, bool)> = BTreeMap::new();
        for (id, (status, at)) in &self.statuses {
            if id.kind() == CheckKind::Heartbeat {
                continue;
            }
            let unreachable = *status == Status::Unreachable;
            let entry = latest.entry(id.target()).or_insert((*at, true));
            if *at > entry.0 {
                *entry = (*at, unreachable);
            } else if *at == entry.0 {
                entry.1 &= unreachable;
            }
        }
        let all_unreachable =
            latest.len() >= 2 && latest.values().all(|(_, unreachable)| *unreachable);
        if !all_unreachable {
            return Vec::new();
        }
        // Every check of these targets that is unreachable now is folded into the one page.
        self.statuses
            .iter()
            .filter(|(id, (s, _))| id.kind() != CheckKind::Heartbeat && *s == Status::Unreachable)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every target `target` depends on, transitively, nearest first.
    #[cfg(test)]
    fn ancestors(&self, target: &str) -> &[String] {
        self.ancestry.get(target).map_or(&[], Vec::as_slice)
    }
}

/// Every target `target` depends on in `parents`, transitively, nearest first. Cycles (refused
/// by config validation) end the walk instead of looping.
fn walk_ancestors(parents: &BTreeMap<String, Vec<String>>, target: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut queue: std::collections::VecDeque<&String> =
        parents.get(target).into_iter().flatten().collect();
    let mut out = Vec::new();
    while let Some(next) = queue.pop_front() {
        if next == target || !seen.insert(next) {
            continue;
        }
        if let Some(more) = parents.get(next) {
            queue.extend(more);
        }
        out.push(next.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const POLICY: AlertPolicy = AlertPolicy {
        cooldown_ms: 5 * MIN,
        repeat_interval_ms: 0,
    };

    fn id(s: &str) -> CheckId {
        s.parse().unwrap()
    }

    fn round(items: &[(&str, Status)]) -> BTreeMap<CheckId, Status> {
        items.iter().map(|(i, s)| (id(i), *s)).collect()
    }

    fn t(minutes: i64) -> Timestamp {
        Timestamp(minutes * MIN)
    }

    fn engine() -> AlertEngine {
        AlertEngine::new(
            POLICY,
            [
                ("shop".to_owned(), vec!["edge".to_owned()]),
                ("blog".to_owned(), vec!["edge".to_owned()]),
                ("cdn".to_owned(), vec![]),
            ],
        )
    }

    use Status::{Error, Operational as Ok, Unreachable};

    #[test]
    fn a_lone_failure_pages_once_and_resolves() {
        let mut e = engine();
        let d = e.step(&round(&[("cdn/health", Error), ("shop/health", Ok)]), t(0));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].subject, Subject::Check(id("cdn/health")));
        assert!(e.step(&round(&[("cdn/health", Error)]), t(1)).is_empty());
        let d = e.step(&round(&[("cdn/health", Ok)]), t(2));
        assert_eq!(d[0].page, Page::Resolved { since: t(0) });
    }

    #[test]
    fn dependants_fold_into_a_down_parent() {
        let mut e = engine();
        let d = e.step(
            &round(&[
                ("edge/health", Error),
                ("shop/health", Error),
                ("shop/tls", Error),
                ("blog/health", Error),
                ("cdn/health", Ok),
            ]),
            t(0),
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].subject, Subject::Check(id("edge/health")));
        assert_eq!(
            d[0].folded,
            [id("blog/health"), id("shop/health"), id("shop/tls")]
        );
        // The parent recovers; a dependant that is still down now pages on its own.
        let d = e.step(&round(&[("edge/health", Ok), ("blog/health", Ok)]), t(1));
        let subjects: Vec<&Subject> = d.iter().map(|d| &d.subject).collect();
        assert_eq!(
            subjects,
            [
                &Subject::Check(id("edge/health")),
                &Subject::Check(id("shop/health")),
                &Subject::Check(id("shop/tls"))
            ]
        );
        assert!(matches!(d[0].page, Page::Resolved { .. }));
        assert!(
            matches!(d[1].page, Page::Firing { since, .. } if since == t(0)),
            "original start kept"
        );
    }

    #[test]
    fn a_merely_degraded_parent_folds_nothing() {
        let mut e = engine();
        let d = e.step(
            &round(&[("edge/tls", Status::Degraded), ("shop/health", Error)]),
            t(0),
        );
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|d| d.folded.is_empty()));
    }

    #[test]
    fn a_dependant_that_paged_before_its_parent_still_resolves() {
        let mut e = engine();
        assert_eq!(
            e.step(&round(&[("shop/health", Error), ("edge/health", Ok)]), t(0))
                .len(),
            1
        );
        assert_eq!(e.step(&round(&[("edge/health", Error)]), t(1)).len(), 1);
        let d = e.step(&round(&[("shop/health", Ok)]), t(2));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].page, Page::Resolved { since: t(0) });
    }

    #[test]
    fn everything_unreachable_is_one_monitoring_offline_page() {
        let mut e = engine();
        let all = [
            ("edge/health", Unreachable),
            ("shop/health", Unreachable),
            ("cdn/health", Unreachable),
            ("cdn/tls", Unreachable),
        ];
        let d = e.step(&round(&all), t(0));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].subject, Subject::MonitoringOffline);
        assert_eq!(d[0].folded.len(), 4);
        // The network comes back: only the offline incident resolves; no target ever paged.
        let back = all.map(|(i, _)| (i, Ok));
        let d = e.step(&round(&back), t(3));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].subject, Subject::MonitoringOffline);
        assert!(matches!(d[0].page, Page::Resolved { .. }));
    }

    #[test]
    fn an_hourly_check_that_passed_before_the_outage_does_not_veto_offline() {
        let mut e = engine();
        e.step(&round(&[("cdn/tls", Ok), ("shop/tls", Ok)]), t(0));
        let d = e.step(
            &round(&[("cdn/health", Unreachable), ("shop/health", Unreachable)]),
            t(60),
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].subject, Subject::MonitoringOffline);
        assert_eq!(d[0].folded, [id("cdn/health"), id("shop/health")]);
        // One target answers again: the agent's network works, offline resolves and the
        // target that is still unreachable pages on its own, with its original start.
        let d = e.step(&round(&[("shop/health", Ok)]), t(61));
        let subjects: Vec<&Subject> = d.iter().map(|d| &d.subject).collect();
        assert_eq!(
            subjects,
            [
                &Subject::MonitoringOffline,
                &Subject::Check(id("cdn/health"))
            ]
        );
        assert!(matches!(d[1].page, Page::Firing { since, .. } if since == t(60)));
    }

    #[test]
    fn subjects_have_a_string_form_that_round_trips() {
        for subject in [
            Subject::MonitoringOffline,
            Subject::Check(id("shop/route:/a b")),
        ] {
            assert_eq!(subject.to_string().parse::<Subject>().unwrap(), subject);
        }
        assert!("nonsense".parse::<Subject>().is_err());
    }

    #[test]
    fn one_target_unreachable_is_not_monitoring_offline() {
        let mut e = engine();
        let d = e.step(
            &round(&[("cdn/health", Unreachable), ("cdn/tls", Unreachable)]),
            t(0),
        );
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|d| matches!(d.subject, Subject::Check(_))));
    }

    #[test]
    fn a_held_firing_is_owed_at_the_next_wakeup_and_restored_state_is_respected() {
        let mut e = engine();
        e.step(&round(&[("cdn/health", Error)]), t(0));
        e.step(&round(&[("cdn/health", Ok)]), t(1));
        assert!(
            e.step(&round(&[("cdn/health", Error)]), t(2)).is_empty(),
            "cooldown"
        );
        assert_eq!(e.next_wakeup(), Some(t(5)));
        assert_eq!(e.tick(t(5)).len(), 1);

        let saved: Vec<(Subject, Lifecycle)> =
            e.lifecycles().map(|(s, l)| (s.clone(), *l)).collect();
        let mut restarted = engine();
        for (subject, lifecycle) in saved {
            restarted.restore(subject, lifecycle);
        }
        assert!(
            restarted
                .step(&round(&[("cdn/health", Error)]), t(6))
                .is_empty(),
            "no re-page"
        );
        assert_eq!(restarted.step(&round(&[("cdn/health", Ok)]), t(7)).len(), 1);
    }

    mod simulation {
        use proptest::prelude::*;

        use super::*;

        const CHECKS: [&str; 6] = [
            "edge/health",
            "shop/health",
            "shop/tls",
            "blog/health",
            "cdn/health",
            "cdn/dns:A",
        ];

        fn status() -> impl Strategy<Value = Option<Status>> {
            prop_oneof![
                3 => Just(Some(Status::Operational)),
                1 => Just(Some(Status::Degraded)),
                1 => Just(Some(Error)),
                2 => Just(Some(Unreachable)),
                1 => Just(None),
            ]
        }

        proptest! {
            #[test]
            fn cross_check_invariants_hold(
                rounds in proptest::collection::vec(
                    (proptest::collection::vec(status(), CHECKS.len()), 0i64..10 * MIN),
                    1..80,
                ),
            ) {
                let mut e = engine();
                let mut now = t(0);
                let mut open: BTreeMap<Subject, Timestamp> = BTreeMap::new();
                let mut current: BTreeMap<CheckId, Status> = BTreeMap::new();
                for (statuses, gap) in rounds {
                    now = now.add_millis(gap);
                    let round: BTreeMap<CheckId, Status> = CHECKS
                        .iter()
                        .zip(&statuses)
                        .filter_map(|(c, s)| s.map(|s| (id(c), s)))
                        .collect();
                    current.extend(round.clone());
                    let mut decisions = e.step(&round, now);
                    decisions.extend(e.tick(now));
                    let offline = e.offline_checks();
                    for d in decisions {
                        match d.page {
                            Page::Firing { since, repeat: 0 } => {
                                prop_assert!(!open.contains_key(&d.subject), "{:?} paged twice", d.subject);
                                if let Subject::Check(check) = &d.subject {
                                    prop_assert!(!offline.contains(check), "{} paged while folded into monitoring_offline", check);
                                    let parent_down = e.ancestors(check.target()).iter().any(|p| {
                                        current.iter().any(|(c, s)| c.target() == p && s.is_failure())
                                    });
                                    prop_assert!(!parent_down, "{} paged while a parent is down", check);
                                    prop_assert!(current[check] != Status::Operational);
                                }
                                open.insert(d.subject.clone(), since);
                            }
                            Page::Firing { .. } => {}
                            Page::Resolved { since } => {
                                prop_assert_eq!(open.remove(&d.subject), Some(since), "resolved without firing");
                            }
                        }
                    }
                    // A held-back firing is always owed at a future wake-up, never in the past.
                    if let Some(wake) = e.next_wakeup() {
                        prop_assert!(wake > now || e.tick(now).is_empty(), "stale wake-up");
                    }
                }
            }
        }
    }
}
