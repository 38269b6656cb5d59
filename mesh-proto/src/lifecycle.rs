//! The alert lifecycle of one check: when a confirmed outage pages, repeats and resolves.
//!
//! Rules (DESIGN.md, "Alerting"):
//! - a confirmed-down check opens an incident, which pages `firing`;
//! - `cooldown` is the least time between two `firing` pages of one check, across incidents, so a
//!   flapping check pages at most once per cooldown. A firing held back by the cooldown goes out
//!   when the cooldown ends, if the check is still down; an incident that ends before it paged
//!   never pages at all;
//! - while the check stays down, a reminder (`firing`, `repeat` 1, 2, …) goes out every
//!   `repeat_interval` (zero: never);
//! - the `resolved` of an incident that paged goes out at once, bypassing the cooldown.
//!
//! The state is plain data ([`Lifecycle`] is serde): the agent persists it after every
//! transition, so a restart neither pages an incident again nor forgets to resolve it.
//!
//! Who sends a page (the notifier choice, takeover) is not decided here: this module says *what*
//! the mesh owes the humans, not *who* delivers it.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The timing rules of alerting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertPolicy {
    /// Least milliseconds between two `firing` pages of one check.
    pub cooldown_ms: i64,
    /// Milliseconds between reminders while down; 0 turns reminders off.
    pub repeat_interval_ms: i64,
}

/// A page the lifecycle asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Page {
    /// The incident that started at `since` is firing; `repeat` is 0 for the first page.
    Firing {
        /// When the incident opened.
        since: Timestamp,
        /// 0, then 1, 2, … for reminders.
        repeat: u32,
    },
    /// The incident that started at `since` is over.
    Resolved {
        /// When the incident opened.
        since: Timestamp,
    },
}

impl Page {
    /// When the incident of this page opened.
    pub const fn since(self) -> Timestamp {
        match self {
            Self::Firing { since, .. } | Self::Resolved { since } => since,
        }
    }
}

/// An incident that is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenIncident {
    /// When the check was first confirmed down.
    pub since: Timestamp,
    /// Pages sent for it so far (0: held back by the cooldown, not paged yet).
    pub pages: u32,
    /// When its latest page went out.
    pub last_page: Option<Timestamp>,
    /// Folded into another alert: it pages nothing until an [`Lifecycle::update`] ends the hold.
    #[serde(default)]
    pub held: bool,
}

/// The alert state of one check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The open incident, if the check is down.
    pub open: Option<OpenIncident>,
    /// When the latest `firing` page of this check went out, in any incident.
    pub last_firing: Option<Timestamp>,
}

impl Lifecycle {
    /// Feeds the check's confirmed state at `now` (`down`: confirmed down; `false`: confirmed
    /// up). Returns the page owed now, if any. Call it with every new verdict and at
    /// [`next_wakeup`](Self::next_wakeup).
    pub fn update(&mut self, down: bool, now: Timestamp, policy: &AlertPolicy) -> Option<Page> {
        if !down {
            let incident = self.open.take()?;
            return (incident.pages > 0).then_some(Page::Resolved {
                since: incident.since,
            });
        }
        let cooled = self
            .last_firing
            .is_none_or(|t| now.millis_since(t) >= policy.cooldown_ms);
        let incident = self.open.get_or_insert(OpenIncident {
            since: now,
            pages: 0,
            last_page: None,
            held: false,
        });
        incident.held = false;
        let due = match incident.last_page {
            None => cooled,
            Some(last) => {
                policy.repeat_interval_ms > 0 && now.millis_since(last) >= policy.repeat_interval_ms
            }
        };
        if !due {
            return None;
        }
        let page = Page::Firing {
            since: incident.since,
            repeat: incident.pages,
        };
        incident.pages = incident.pages.saturating_add(1);
        incident.last_page = Some(now);
        self.last_firing = Some(now);
        Some(page)
    }

    /// Keeps a down check's incident open without paging, because its alert is folded into
    /// another one (a down parent, `monitoring_offline`). When the hold ends and the check is
    /// still down, [`update`](Self::update) pages it with its original start.
    pub fn hold(&mut self, now: Timestamp) {
        self.open
            .get_or_insert(OpenIncident {
                since: now,
                pages: 0,
                last_page: None,
                held: true,
            })
            .held = true;
    }

    /// When [`update`](Self::update) should be called again without a new verdict: the end of
    /// a cooldown that holds back a firing, or the next reminder. A held incident waits for its
    /// hold to end instead.
    pub fn next_wakeup(&self, policy: &AlertPolicy) -> Option<Timestamp> {
        let incident = self.open.filter(|i| !i.held)?;
        match incident.last_page {
            None => Some(
                self.last_firing
                    .map_or(incident.since, |t| t.add_millis(policy.cooldown_ms)),
            ),
            Some(last) if policy.repeat_interval_ms > 0 => {
                Some(last.add_millis(policy.repeat_interval_ms))
            }
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIN: i64 = 60_000;
    const POLICY: AlertPolicy = AlertPolicy {
        cooldown_ms: 5 * MIN,
        repeat_interval_ms: 240 * MIN,
    };

    fn t(minutes: i64) -> Timestamp {
        Timestamp(minutes * MIN)
    }

    #[test]
    fn one_firing_per_incident_and_an_immediate_resolved() {
        let mut l = Lifecycle::default();
        assert_eq!(l.update(false, t(0), &POLICY), None);
        assert_eq!(
            l.update(true, t(1), &POLICY),
            Some(Page::Firing {
                since: t(1),
                repeat: 0
            })
        );
        assert_eq!(l.update(true, t(2), &POLICY), None);
        assert_eq!(l.update(true, t(3), &POLICY), None);
        assert_eq!(
            l.update(false, t(3), &POLICY),
            Some(Page::Resolved { since: t(1) })
        );
        assert_eq!(l.update(false, t(4), &POLICY), None);
    }

    #[test]
    fn flapping_pages_once_per_cooldown_and_a_held_firing_goes_out_later() {
        let mut l = Lifecycle::default();
        assert!(matches!(
            l.update(true, t(0), &POLICY),
            Some(Page::Firing { .. })
        ));
        assert!(matches!(
            l.update(false, t(1), &POLICY),
            Some(Page::Resolved { .. })
        ));
        // Down again inside the cooldown: held back.
        assert_eq!(l.update(true, t(2), &POLICY), None);
        assert_eq!(l.next_wakeup(&POLICY), Some(t(5)));
        // Up again before the cooldown ended: that incident never pages, not even resolved.
        assert_eq!(l.update(false, t(3), &POLICY), None);
        assert_eq!(l.next_wakeup(&POLICY), None);
        // Down and staying down: the firing goes out when the cooldown ends.
        assert_eq!(l.update(true, t(4), &POLICY), None);
        assert_eq!(
            l.update(true, t(5), &POLICY),
            Some(Page::Firing {
                since: t(4),
                repeat: 0
            })
        );
    }

    #[test]
    fn reminders_follow_the_repeat_interval_and_can_be_turned_off() {
        let mut l = Lifecycle::default();
        l.update(true, t(0), &POLICY);
        assert_eq!(l.next_wakeup(&POLICY), Some(t(240)));
        assert_eq!(l.update(true, t(239), &POLICY), None);
        assert_eq!(
            l.update(true, t(240), &POLICY),
            Some(Page::Firing {
                since: t(0),
                repeat: 1
            })
        );
        assert_eq!(
            l.update(true, t(480), &POLICY),
            Some(Page::Firing {
                since: t(0),
                repeat: 2
            })
        );

        let quiet = AlertPolicy {
            repeat_interval_ms: 0,
            ..POLICY
        };
        let mut l = Lifecycle::default();
        l.update(true, t(0), &quiet);
        assert_eq!(l.next_wakeup(&quiet), None);
        assert_eq!(l.update(true, t(10_000), &quiet), None);
    }

    #[test]
    fn state_survives_a_restart_through_serde() {
        let mut l = Lifecycle::default();
        l.update(true, t(0), &POLICY);
        let saved = serde_json::to_string(&l).unwrap();
        let mut restored: Lifecycle = serde_json::from_str(&saved).unwrap();
        assert_eq!(
            restored.update(true, t(1), &POLICY),
            None,
            "no second firing"
        );
        assert_eq!(
            restored.update(false, t(2), &POLICY),
            Some(Page::Resolved { since: t(0) })
        );
    }

    proptest! {
        /// Random verdict sequences, with the agent waking up whenever the lifecycle asks.
        #[test]
        fn invariants_hold_for_any_verdict_sequence(
            steps in proptest::collection::vec((any::<bool>(), 0i64..400_000), 1..200),
            cooldown in 0i64..600_000,
            repeat in prop_oneof![Just(0i64), 1i64..2_000_000],
        ) {
            let policy = AlertPolicy { cooldown_ms: cooldown, repeat_interval_ms: repeat };
            let mut l = Lifecycle::default();
            let mut now = Timestamp(1_000_000);
            let mut down = false;
            let mut last_first_firing: Option<Timestamp> = None;
            let mut last_any_firing: Option<Timestamp> = None;
            let mut paged_incident: Option<Timestamp> = None;
            for (verdict, gap) in steps {
                let target = now.add_millis(gap);
                // Wake-ups owed before the next verdict.
                while let Some(wake) = l.next_wakeup(&policy).filter(|&w| w <= target) {
                    let wake = wake.max(now);
                    let page = l.update(down, wake, &policy);
                    prop_assert!(page.is_some(), "a wake-up that pages nothing");
                    now = wake;
                    check(&mut last_first_firing, &mut last_any_firing, &mut paged_incident, page, now, &policy)?;
                }
                now = target;
                down = verdict;
                let page = l.update(down, now, &policy);
                if !down {
                    prop_assert!(l.open.is_none());
                    let resolved_or_nothing = matches!(page, None | Some(Page::Resolved { .. }));
                    prop_assert!(resolved_or_nothing, "page {:?} while up", page);
                }
                check(&mut last_first_firing, &mut last_any_firing, &mut paged_incident, page, now, &policy)?;
            }
        }
    }

    fn check(
        last_first_firing: &mut Option<Timestamp>,
        last_any_firing: &mut Option<Timestamp>,
        paged_incident: &mut Option<Timestamp>,
        page: Option<Page>,
        now: Timestamp,
        policy: &AlertPolicy,
    ) -> Result<(), TestCaseError> {
        match page {
            Some(Page::Firing { since, repeat: 0 }) => {
                if let Some(prev) = *last_any_firing {
                    prop_assert!(
                        now.millis_since(prev) >= policy.cooldown_ms,
                        "firing inside the cooldown"
                    );
                }
                prop_assert!(*paged_incident != Some(since), "incident paged twice");
                *last_first_firing = Some(now);
                *last_any_firing = Some(now);
                *paged_incident = Some(since);
            }
            Some(Page::Firing { since, .. }) => {
                prop_assert_eq!(
                    *paged_incident,
                    Some(since),
                    "reminder for an unpaged incident"
                );
                prop_assert!(policy.repeat_interval_ms > 0);
                *last_any_firing = Some(now);
            }
            Some(Page::Resolved { since }) => {
                prop_assert_eq!(*paged_incident, Some(since), "resolved without a firing");
                *paged_incident = None;
            }
            None => {}
        }
        Ok(())
    }
}
