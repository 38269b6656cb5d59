//! The outbox: every alert goes to SQLite first, one row per channel, and a delivery task sends
//! what is due, with exponential backoff, until each channel has taken it.
//!
//! So an alert survives a channel outage and an agent restart: it is in the database before
//! anyone tries to send it, and it leaves the "due" set only when its channel accepted it.
//! Delivery is at-least-once across a crash between "sent" and "marked delivered"; the payload's
//! `incident`, `event` and `repeat` identify a transition for receivers that deduplicate, and the
//! Matrix channel's transaction id makes a redelivery a no-op there.
//!
//! A failure the channel calls permanent (a 4xx, a refused login) is still retried, at the
//! longest backoff: it usually means a config or secret to fix, after which the alert must still
//! arrive. Nothing is ever dropped from the outbox except by delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_proto::{AlertEvent, Lifecycle, Subject, Timestamp};
use tokio::sync::{Notify, mpsc, watch};

use super::Alert;
use super::channel::Channel;
use crate::board::Counters;
use crate::clock::millis;
use crate::store::{StoreError, StoreHandle};

/// How many times an alert that could not be stored is tried directly, in memory.
const DIRECT_ATTEMPTS: u32 = 8;

/// How many due deliveries one round takes from the store.
const BATCH: u32 = 64;

/// Retry delays: `base`, doubling per failed attempt, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt, after `failures` failed attempts (1 or more).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// The outbox: enqueue from anywhere, deliver from one task.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: StoreHandle,
    channels: Arc<BTreeMap<String, Arc<Channel>>>,
    backoff: Backoff,
    /// How often the delivery task looks for due rows when nothing wakes it.
    poll: Duration,
    wake: Arc<Notify>,
    counters: Arc<Counters>,
    /// Told about every delivery a channel accepted (the mesh marks claims `sent`). Shared by
    /// the clones, so the delivery task reports to whoever set it.
    reports: Arc<std::sync::Mutex<Option<mpsc::Sender<DeliveryIds>>>>,
}

/// What identifies a delivered notification: the payload's check, incident, event and repeat.
pub type DeliveryIds = (String, String, AlertEvent, u32);

/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Deliveries a channel accepted.
    pub delivered: usize,
    /// Deliveries that failed and were rescheduled.
    pub failed: usize,
}

impl Outbox {
    /// An outbox over `store`, delivering through `channels`.
    pub fn new(store: StoreHandle, channels: Vec<Channel>, backoff: Backoff) -> Self {
        Self {
            store,
            channels: Arc::new(
                channels
                    .into_iter()
                    .map(|c| (c.name().to_owned(), Arc::new(c)))
                    .collect(),
            ),
            backoff,
            poll: Duration::from_secs(1),
            wake: Arc::new(Notify::new()),
            counters: Arc::default(),
            reports: Arc::default(),
        }
    }

    /// The same outbox, counting deliveries and pending rows into `counters` (for metrics).
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = counters;
        self
    }

    /// From now on, reports each accepted delivery to `reports` (dropped when full), from
    /// this outbox and every clone of it.
    pub fn report_to(&self, reports: mpsc::Sender<DeliveryIds>) {
        *self
            .reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reports);
    }

    /// The channels, by name.
    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels.values().map(AsRef::as_ref)
    }

    /// The same outbox, looking for due rows every `poll` when not woken.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Stores `alert` once per channel, due at once, and wakes the delivery task. Returns when
    /// the rows are committed: from then on the alert survives a restart.
    pub async fn enqueue(&self, alert: &Alert, now: Timestamp) -> Result<(), StoreError> {
        for name in self.channels.keys() {
            self.store.enqueue(name, alert, now).await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Records that `alert` (a transition of `subject`) is being notified and queues it for every
    /// channel, atomically with `lifecycle` (the state that decided it), unless the notification
    /// log already holds it. Returns whether it was queued. This is what keeps a restart, even
    /// after `kill -9`, from paging twice.
    pub async fn notify(
        &self,
        subject: &Subject,
        alert: &Alert,
        lifecycle: Option<&Lifecycle>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let channels: Vec<String> = self.channels.keys().cloned().collect();
        let queued = self
            .store
            .log_and_enqueue(subject, alert, &channels, lifecycle, now)
            .await?;
        if queued {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Queues `alert` again for the channels that expire a firing alert by themselves
    /// ([`Channel::refresh_interval`]); the caller keeps the pace. Not logged: a refresh is not
    /// a new notification.
    pub async fn refresh(&self, alert: &Alert, now: Timestamp) -> Result<(), StoreError> {
        for channel in self.channels.values() {
            if channel.refresh_interval().is_some() {
                self.store.enqueue(channel.name(), alert, now).await?;
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The last resort when the database cannot take an alert (disk full, I/O error): sends it
    /// to every channel straight from memory, with the usual backoff, a few times, on a task of
    /// its own. Nothing survives a restart on this path, and a page the log never saw may be
    /// sent again after one: better twice than never.
    pub fn send_direct(&self, alert: Alert) {
        for channel in self.channels.values() {
            let (channel, alert, backoff, counters) = (
                Arc::clone(channel),
                alert.clone(),
                self.backoff,
                self.counters.clone(),
            );
            tokio::spawn(async move {
                for attempt in 1..=DIRECT_ATTEMPTS {
                    match channel.deliver(&alert).await {
                        Ok(()) => {
                            counters.alert_sent(channel.name());
                            tracing::warn!(channel = %channel.name(), check = %alert.check,
                                event = %alert.event, "alert delivered without the outbox");
                            return;
                        }
                        Err(e) => {
                            tracing::error!(channel = %channel.name(), check = %alert.check,
                                attempt, "direct alert delivery failed: {}", e.message());
                            tokio::time::sleep(backoff.delay(attempt)).await;
                        }
                    }
                }
                tracing::error!(channel = %channel.name(), check = %alert.check,
                    "gave up on an alert the database could not store");
            });
        }
    }

    /// Sends every delivery due at `now` once.
    pub async fn deliver_due(&self, now: Timestamp) -> Result<Round, StoreError> {
        let mut round = Round::default();
        for delivery in self.store.due_deliveries(now, BATCH).await? {
            let failures = delivery.attempts.saturating_add(1);
            let result = match self.channels.get(&delivery.channel) {
                Some(channel) => channel.deliver(&delivery.alert).await,
                None => {
                    tracing::error!(channel = %delivery.channel, id = delivery.id,
                        "an undelivered alert names a channel that is no longer configured; it is kept");
                    self.store
                        .mark_failed(
                            delivery.id,
                            "channel not configured",
                            now.add_millis(millis(self.backoff.max)),
                        )
                        .await?;
                    round.failed += 1;
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    // Reported first: the mesh learns it went out as soon as possible, so a
                    // crash right after leaves the shortest window for a duplicate.
                    let reports = self
                        .reports
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    if let Some(reports) = reports {
                        let a = &delivery.alert;
                        let _ = reports.try_send((
                            a.check.clone(),
                            a.incident.clone(),
                            a.event,
                            a.repeat,
                        ));
                    }
                    self.store.mark_delivered(delivery.id, now).await?;
                    // Counted once recorded: a delivery in the counter is never sent again.
                    self.counters.alert_sent(&delivery.channel);
                    tracing::info!(channel = %delivery.channel, check = %delivery.alert.check,
                        event = %delivery.alert.event, attempts = failures, "alert delivered");
                    round.delivered += 1;
                }
                Err(e) => {
                    let delay = if e.retryable {
                        self.backoff.delay(failures)
                    } else {
                        self.backoff.max
                    };
                    tracing::warn!(channel = %delivery.channel, check = %delivery.alert.check,
                        attempts = failures, retry_in = %humantime::format_duration(delay),
                        retryable = e.retryable, "alert delivery failed: {}", e.message());
                    self.store
                        .mark_failed(delivery.id, e.message(), now.add_millis(millis(delay)))
                        .await?;
                    round.failed += 1;
                }
            }
        }
        Ok(round)
    }

    /// Delivers until `shutdown` turns true: a round whenever an alert is enqueued, and at least
    /// every `poll`. `clock` gives the current time.
    pub async fn run(
        self,
        clock: impl Fn() -> Timestamp + Send,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if let Err(e) = self.deliver_due(clock()).await {
                tracing::error!("outbox round failed, retrying: {e}");
            }
            match self.store.pending_count().await {
                Ok(n) => self.counters.outbox_pending.store(n, Ordering::Relaxed),
                Err(e) => tracing::debug!("outbox: cannot count pending rows: {e}"),
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        let delays: Vec<u64> = (1..=9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(600));
        assert_eq!(b.delay(0), Duration::from_secs(5));
    }
}
