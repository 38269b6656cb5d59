//! [`StoreHandle`]: the agent's side of the store, a cloneable sender of commands to the store
//! thread ([`super::actor`]).
//!
//! Requests are `async` and wait for their reply on a oneshot channel; the caller's task yields,
//! no thread blocks. [`StoreHandle::record_observation`] does not even wait for room in the queue.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mesh_proto::{AlertEvent, CheckId, Lifecycle, Observation, Subject, Timestamp};
use rusqlite::Connection;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::actor::{Actor, Command, Control, Query, Reply, Work};
use super::limiter::LogLimiter;
use super::queries::NotificationKey;
use super::{AgentObservation, Delivery, PruneStats, StoreError, StoreOptions};
use crate::alert::Alert;

/// State shared by every clone of a handle and by the store thread.
#[derive(Debug)]
pub(super) struct Shared {
    /// Observations lost: queue full, store closed, or retained too long while writes failed.
    pub(super) dropped: AtomicU64,
    moved_aside: Option<PathBuf>,
    thread: Mutex<Option<JoinHandle<()>>>,
    drops_log: LogLimiter,
    close_timeout: Duration,
}

/// The agent's way into the store. Cheap to clone; every clone talks to the same thread.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// Starts the store thread on `conn`.
pub(super) fn start(
    conn: Connection,
    moved_aside: Option<PathBuf>,
    options: StoreOptions,
) -> Result<StoreHandle, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(StoreError::Spawn)?;
    let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
    let shared = Arc::new(Shared {
        dropped: AtomicU64::new(0),
        moved_aside,
        thread: Mutex::new(None),
        drops_log: LogLimiter::new(Duration::from_secs(10)),
        close_timeout: options.close_timeout,
    });
    let actor = Actor::new(conn, rx, runtime, Arc::clone(&shared), options);
    let thread = std::thread::Builder::new()
        .name("pom-store".into())
        .spawn(move || actor.run())
        .map_err(StoreError::Spawn)?;
    *shared.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
    Ok(StoreHandle { tx, shared })
}

impl StoreHandle {
    /// Queues an observation by `agent` for storage and returns at once, without waiting for
    /// the database or for room in the queue. When the queue is full (or the store closed) the
    /// observation is dropped, counted in [`dropped_observations`](Self::dropped_observations)
    /// and reported by a rate-limited warning: a probe must never wait on the database.
    pub fn record_observation(&self, agent: &str, observation: &Observation) {
        let command = Command::Work(Work::Observe {
            agent: agent.to_owned(),
            observation: observation.clone(),
        });
        let Err(e) = self.tx.try_send(command) else {
            return;
        };
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(suppressed) = self.shared.drops_log.check() {
            let reason = match e {
                TrySendError::Full(_) => "the store queue is full",
                TrySendError::Closed(_) => "the store is closed",
            };
            tracing::warn!(
                check = %observation.check,
                dropped_total = total,
                suppressed,
                "observation not stored: {reason}"
            );
        }
    }

    /// Observations lost so far: dropped at a full queue, after [`close`](Self::close), or
    /// because writes kept failing for longer than memory allows.
    pub fn dropped_observations(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Where [`Store::open`](super::Store::open) moved a corrupt database before starting
    /// afresh, if it had to.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.shared.moved_aside.as_deref()
    }

    /// Every agent's observations of `check` at or after `since`, oldest first.
    pub async fn recent_observations(
        &self,
        check: &CheckId,
        since: Timestamp,
    ) -> Result<Vec<AgentObservation>, StoreError> {
        let check = check.clone();
        self.request(|reply| Query::RecentObservations {
            check,
            since,
            reply,
        })
        .await
    }

    /// The latencies `agent` measured for `check` at or after `since`, oldest first, from probes
    /// that got an answer (`operational` or `degraded`). The input of the 7-day baseline.
    pub async fn latency_samples(
        &self,
        agent: &str,
        check: &CheckId,
        since: Timestamp,
    ) -> Result<Vec<u64>, StoreError> {
        let (agent, check) = (agent.to_owned(), check.clone());
        self.request(|reply| Query::LatencySamples {
            agent,
            check,
            since,
            reply,
        })
        .await
    }

    /// Saves the alert lifecycle of `subject` (replacing the previous one).
    pub async fn save_lifecycle(
        &self,
        subject: &Subject,
        lifecycle: &Lifecycle,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let state = serde_json::to_string(lifecycle).map_err(StoreError::Encode)?;
        let subject = subject.clone();
        self.request(|reply| Query::SaveLifecycle {
            subject,
            state,
            now,
            reply,
        })
        .await
    }

    /// Every saved lifecycle, by subject. Rows that do not decode are skipped with a warning.
    pub async fn load_lifecycles(&self) -> Result<Vec<(Subject, Lifecycle)>, StoreError> {
        self.request(|reply| Query::LoadLifecycles { reply }).await
    }

    /// Adds a transition to the notification log; `true` when it was not there yet.
    pub async fn log_notification(
        &self,
        check: &Subject,
        incident: &str,
        event: AlertEvent,
        repeat: u32,
        sent_by: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let key = NotificationKey::new(check, incident, event, repeat);
        let sent_by = sent_by.to_owned();
        self.request(|reply| Query::LogNotification {
            key,
            sent_by,
            at,
            reply,
        })
        .await
    }

    /// Logs the transition of `alert` (its check, incident, event and repeat) and, only if it is
    /// new, queues it for every one of `channels`, in one transaction. Returns whether it was
    /// new: `false` means it was already notified (by this agent before a restart, or by a peer
    /// whose log entry arrived first) and nothing was queued.
    ///
    /// `lifecycle`, when given, is saved as `check`'s lifecycle in the same transaction, so the
    /// state that decided the page and the page itself are never out of step after a crash.
    pub async fn log_and_enqueue(
        &self,
        check: &Subject,
        alert: &Alert,
        channels: &[String],
        lifecycle: Option<&Lifecycle>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let key = NotificationKey::new(check, &alert.incident, alert.event, alert.repeat);
        let payload = serde_json::to_string(alert).map_err(StoreError::Encode)?;
        let lifecycle = lifecycle
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::Encode)?;
        let sent_by = alert.sent_by.clone();
        let channels = channels.to_vec();
        self.request(|reply| Query::LogAndEnqueue {
            key,
            sent_by,
            at,
            channels,
            payload,
            lifecycle,
            reply,
        })
        .await
    }

    /// Whether the notification log holds this transition.
    pub async fn was_notified(
        &self,
        check: &Subject,
        incident: &str,
        event: AlertEvent,
        repeat: u32,
    ) -> Result<bool, StoreError> {
        let key = NotificationKey::new(check, incident, event, repeat);
        self.request(|reply| Query::WasNotified { key, reply })
            .await
    }

    /// Puts `alert` in the outbox for `channel`, due at once. Returns the outbox id.
    pub async fn enqueue(
        &self,
        channel: &str,
        alert: &Alert,
        now: Timestamp,
    ) -> Result<i64, StoreError> {
        let payload = serde_json::to_string(alert).map_err(StoreError::Encode)?;
        let channel = channel.to_owned();
        self.request(|reply| Query::Enqueue {
            channel,
            payload,
            now,
            reply,
        })
        .await
    }

    /// Up to `limit` undelivered alerts whose next attempt is due at `now`, earliest first.
    pub async fn due_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.request(|reply| Query::DueDeliveries { now, limit, reply })
            .await
    }

    /// Up to `limit` undelivered alerts, due or waiting for their next attempt, earliest first.
    pub async fn undelivered(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        self.due_deliveries(Timestamp(i64::MAX), limit).await
    }

    /// Marks an outbox entry delivered; it is no longer due nor pending.
    pub async fn mark_delivered(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        self.request(|reply| Query::MarkDelivered { id, now, reply })
            .await
    }

    /// Records a failed attempt: counts it, keeps `error` (cut to 2000 bytes) and makes the entry
    /// due again at `next_attempt`. The backoff is the caller's policy. Keep secrets (webhook
    /// URLs, tokens) out of `error`: it is stored as given.
    pub async fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt: Timestamp,
    ) -> Result<(), StoreError> {
        let error = error.to_owned();
        self.request(|reply| Query::MarkFailed {
            id,
            error,
            next_attempt,
            reply,
        })
        .await
    }

    /// How many outbox entries are not delivered yet (due or waiting for their next attempt).
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        self.request(|reply| Query::PendingCount { reply }).await
    }

    /// Records a push-heartbeat ping. The stored time never moves backwards, so a late ping
    /// merged from a peer cannot hide a newer one.
    pub async fn record_ping(&self, name: &str, at: Timestamp) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.request(|reply| Query::RecordPing { name, at, reply })
            .await
    }

    /// The latest alert queued for `incident`'s `event`, if the outbox still holds one (a
    /// payload that no longer decodes counts as none).
    pub async fn last_alert(
        &self,
        incident: &str,
        event: AlertEvent,
    ) -> Result<Option<Alert>, StoreError> {
        let incident = incident.to_owned();
        let payload = self
            .request(|reply| Query::LastPayload {
                incident,
                event,
                reply,
            })
            .await?;
        Ok(payload.and_then(|p| serde_json::from_str(&p).ok()))
    }

    /// The latest ping of heartbeat `name`, if it ever got one.
    pub async fn last_ping(&self, name: &str) -> Result<Option<Timestamp>, StoreError> {
        let name = name.to_owned();
        self.request(|reply| Query::LastPing { name, reply }).await
    }

    /// Deletes observations, delivered outbox entries and notification log entries older than
    /// `older_than` (the daemon passes now − 30 days, daily). Undelivered alerts are kept.
    pub async fn prune(&self, older_than: Timestamp) -> Result<PruneStats, StoreError> {
        self.request(|reply| Query::Prune { older_than, reply })
            .await
    }

    /// Test hook, not for the daemon: turns SQLite's `query_only` on or off, so that every
    /// write fails for real (`SQLITE_READONLY`) and tests can watch the store survive it.
    #[doc(hidden)]
    pub async fn set_query_only_for_tests(&self, on: bool) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Control(Control::QueryOnly { on, reply }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops the store: everything queued before this call is written, the connection is closed
    /// and the thread joined. Gives up after the configured close timeout (5 s by default) with
    /// [`StoreError::CloseTimedOut`]. Closing an already closed store succeeds. Afterwards,
    /// requests fail with [`StoreError::Closed`] and observations are counted as dropped.
    pub async fn close(&self) -> Result<(), StoreError> {
        let limit = self.shared.close_timeout;
        let deadline = Instant::now() + limit;
        let timed_out = || {
            tracing::error!(
                timeout = ?limit,
                "the store thread did not stop in time; giving up on it"
            );
            StoreError::CloseTimedOut(limit)
        };
        let (reply, done) = oneshot::channel();
        let command = Command::Control(Control::Close { reply });
        match tokio::time::timeout_at(deadline.into(), self.tx.send(command)).await {
            Err(_) => return Err(timed_out()),
            // Closed already (by another clone, or the thread is gone): join below.
            Ok(Err(_)) => {}
            Ok(Ok(())) => {
                if tokio::time::timeout_at(deadline.into(), done)
                    .await
                    .is_err()
                {
                    return Err(timed_out());
                }
            }
        }
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(thread) = thread else {
            return Ok(());
        };
        let join = tokio::task::spawn_blocking(move || thread.join());
        match tokio::time::timeout_at(deadline.into(), join).await {
            Err(_) => Err(timed_out()),
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(_panic))) => {
                tracing::error!("the store thread had panicked");
                Err(StoreError::Closed)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not join the store thread");
                Err(StoreError::Closed)
            }
        }
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Query) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Work(Work::Query(make(reply))))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}
