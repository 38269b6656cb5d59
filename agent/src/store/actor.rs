//! The store thread: the one owner of the SQLite connection, and its closed command protocol.
//!
//! The loop blocks on the command queue, drains up to `batch_size` commands and runs them as one
//! round of two transactions: first every observation (the ones retained from failed rounds,
//! then the new ones), then every request, each inside its own savepoint so that one failing
//! request does not undo the others. Replies go out only once their transaction's fate is known:
//! a caller never hears "saved" for a write that was rolled back. Requests see every observation
//! queued before them.
//!
//! When writes fail (a full disk, an I/O error, a lock held by another process, a read-only
//! database), the thread keeps running: the observations stay in memory (at most
//! `max_retained`; beyond that the oldest are dropped and counted) and are retried in the next
//! round, which comes with the next command or after `retry_interval`. Requests get the error as
//! their reply, and reads keep working. Errors are logged loudly but rate-limited.
//!
//! On [`Control::Close`] (or when every handle is gone), the thread stops taking commands, runs
//! everything already queued, retries the retained observations once more, closes the connection
//! and only then acknowledges, so that `close` means "flushed".

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_proto::{AlertEvent, CheckId, Lifecycle, Observation, Subject, Timestamp};
use rusqlite::Connection;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use super::handle::Shared;
use super::limiter::LogLimiter;
use super::queries::{self, NotificationKey};
use super::{AgentObservation, Delivery, PruneStats, StoreError, StoreOptions};

/// Where a request's answer goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Everything the store thread can be asked to do.
#[derive(Debug)]
pub(super) enum Command {
    /// Database work, batched into transactions.
    Work(Work),
    /// Connection-level work, run between transactions.
    Control(Control),
}

/// Database work.
#[derive(Debug)]
pub(super) enum Work {
    /// Store an observation; nobody waits for it.
    Observe {
        agent: String,
        observation: Observation,
    },
    /// A request whose caller waits for the answer.
    Query(Query),
}

/// Requests with a reply. Each maps to one function in [`queries`].
#[derive(Debug)]
pub(super) enum Query {
    RecentObservations {
        check: CheckId,
        since: Timestamp,
        reply: Reply<Vec<AgentObservation>>,
    },
    LatencySamples {
        agent: String,
        check: CheckId,
        since: Timestamp,
        reply: Reply<Vec<u64>>,
    },
    SaveLifecycle {
        subject: Subject,
        state: String,
        now: Timestamp,
        reply: Reply<()>,
    },
    LoadLifecycles {
        reply: Reply<Vec<(Subject, Lifecycle)>>,
    },
    LogNotification {
        key: NotificationKey,
        sent_by: String,
        at: Timestamp,
        reply: Reply<bool>,
    },
    WasNotified {
        key: NotificationKey,
        reply: Reply<bool>,
    },
    LogAndEnqueue {
        key: NotificationKey,
        sent_by: String,
        at: Timestamp,
        channels: Vec<String>,
        payload: String,
        /// The subject's lifecycle (JSON), saved in the same savepoint.
        lifecycle: Option<String>,
        reply: Reply<bool>,
    },
    Enqueue {
        channel: String,
        payload: String,
        now: Timestamp,
        reply: Reply<i64>,
    },
    DueDeliveries {
        now: Timestamp,
        limit: u32,
        reply: Reply<Vec<Delivery>>,
    },
    MarkDelivered {
        id: i64,
        now: Timestamp,
        reply: Reply<()>,
    },
    MarkFailed {
        id: i64,
        error: String,
        next_attempt: Timestamp,
        reply: Reply<()>,
    },
    PendingCount {
        reply: Reply<u64>,
    },
    RecordPing {
        name: String,
        at: Timestamp,
        reply: Reply<()>,
    },
    LastPing {
        name: String,
        reply: Reply<Option<Timestamp>>,
    },
    LastPayload {
        incident: String,
        event: AlertEvent,
        reply: Reply<Option<String>>,
    },
    Prune {
        older_than: Timestamp,
        reply: Reply<PruneStats>,
    },
}

/// Connection-level commands.
#[derive(Debug)]
pub(super) enum Control {
    /// Test hook: `PRAGMA query_only`, which makes every write fail with `SQLITE_READONLY`.
    QueryOnly { on: bool, reply: Reply<()> },
    /// Flush and stop; the reply is sent after the connection is closed.
    Close { reply: oneshot::Sender<()> },
}

/// The connection as a request sees it: usable, or the reason the batch cannot run.
type Conn<'a> = Result<&'a Connection, &'a Arc<rusqlite::Error>>;

fn on<T>(
    conn: Conn<'_>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    match conn {
        Ok(conn) => f(conn).map_err(StoreError::from),
        Err(e) => Err(StoreError::Database(Arc::clone(e))),
    }
}

impl Query {
    /// Runs the request (or, when `conn` is an error, fails it) and returns its reply, not yet
    /// sent.
    fn run(self, conn: Conn<'_>) -> Box<dyn Pending> {
        match self {
            Self::RecentObservations {
                check,
                since,
                reply,
            } => pending(
                reply,
                on(conn, |c| queries::recent_observations(c, &check, since)),
            ),
            Self::LatencySamples {
                agent,
                check,
                since,
                reply,
            } => pending(
                reply,
                on(conn, |c| queries::latency_samples(c, &agent, &check, since)),
            ),
            Self::SaveLifecycle {
                subject,
                state,
                now,
                reply,
            } => pending(
                reply,
                on(conn, |c| queries::save_lifecycle(c, &subject, &state, now)),
            ),
            Self::LoadLifecycles { reply } => pending(reply, on(conn, queries::load_lifecycles)),
            Self::LogNotification {
                key,
                sent_by,
                at,
                reply,
            } => pending(
                reply,
                on(conn, |c| queries::log_notification(c, &key, &sent_by, at)),
            ),
            Self::WasNotified { key, reply } => {
                pending(reply, on(conn, |c| queries::was_notified(c, &key)))
            }
            Self::LogAndEnqueue {
                key,
                sent_by,
                at,
                channels,
                payload,
                lifecycle,
                reply,
            } => pending(
                reply,
                on(conn, |c| {
                    queries::log_and_enqueue(
                        c,
                        &key,
                        &sent_by,
                        at,
                        &channels,
                        &payload,
                        lifecycle.as_deref(),
                    )
                }),
            ),
            Self::Enqueue {
                channel,
                payload,
                now,
                reply,
            } => pending(
                reply,
                on(conn, |c| queries::enqueue(c, &channel, &payload, now)),
            ),
            Self::DueDeliveries { now, limit, reply } => {
                pending(reply, on(conn, |c| queries::due_deliveries(c, now, limit)))
            }
            Self::MarkDelivered { id, now, reply } => {
                pending(reply, on(conn, |c| queries::mark_delivered(c, id, now)))
            }
            Self::MarkFailed {
                id,
                error,
                next_attempt,
                reply,
            } => pending(
                reply,
                on(conn, |c| queries::mark_failed(c, id, &error, next_attempt)),
            ),
            Self::PendingCount { reply } => pending(reply, on(conn, queries::pending_count)),
            Self::RecordPing { name, at, reply } => {
                pending(reply, on(conn, |c| queries::record_ping(c, &name, at)))
            }
            Self::LastPing { name, reply } => {
                pending(reply, on(conn, |c| queries::last_ping(c, &name)))
            }
            Self::LastPayload {
                incident,
                event,
                reply,
            } => pending(
                reply,
                on(conn, |c| queries::last_payload(c, &incident, event)),
            ),
            Self::Prune { older_than, reply } => {
                pending(reply, on(conn, |c| queries::prune(c, older_than)))
            }
        }
    }
}

/// A reply held until the batch transaction commits or fails.
trait Pending: Send {
    /// Whether the request itself succeeded.
    fn succeeded(&self) -> bool;
    /// Turns a success into `error` (its savepoint or transaction did not commit).
    fn fail(&mut self, error: &Arc<rusqlite::Error>);
    /// Sends the reply; a caller that stopped waiting is not an error.
    fn send(self: Box<Self>);
}

struct Held<T> {
    reply: Reply<T>,
    result: Result<T, StoreError>,
}

fn pending<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Box<dyn Pending> {
    Box::new(Held { reply, result })
}

impl<T: Send> Pending for Held<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn fail(&mut self, error: &Arc<rusqlite::Error>) {
        if self.result.is_ok() {
            self.result = Err(StoreError::Database(Arc::clone(error)));
        }
    }

    fn send(self: Box<Self>) {
        let _ = self.reply.send(self.result);
    }
}

/// Stores `observations` in one transaction. On any error the whole transaction is rolled back
/// and the caller keeps them all for a retry: a failing insert means the database cannot take
/// writes now (a full disk, a lock held elsewhere), and trying the rest one by one would only
/// repeat the failure (and, for a lock, the busy wait).
fn store_observations(
    conn: &mut Connection,
    observations: &[(String, Observation)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (agent, observation) in observations {
        queries::insert_observation(&tx, agent, observation)?;
    }
    tx.commit()
}

/// Runs `queries` in one transaction, each in its own savepoint, and sends every reply once the
/// transaction's fate is known. Returns the error that lost the transaction, if one did.
fn run_queries(conn: &mut Connection, queries: Vec<Query>) -> Option<Arc<rusqlite::Error>> {
    let mut replies: Vec<Box<dyn Pending>> = Vec::with_capacity(queries.len());
    // Set when the transaction as a whole is lost: it could not begin, or SQLite rolled it back
    // on its own (as it may after SQLITE_FULL or an I/O error).
    let mut lost: Option<Arc<rusqlite::Error>> = None;
    let mut tx = match conn.transaction() {
        Ok(tx) => Some(tx),
        Err(e) => {
            lost = Some(Arc::new(e));
            None
        }
    };
    for query in queries {
        let tx = match (&lost, tx.as_mut()) {
            (None, Some(tx)) => tx,
            (Some(e), _) => {
                replies.push(query.run(Err(e)));
                continue;
            }
            // `tx` is None only when `lost` is set; fail the query rather than drop its reply.
            (None, None) => {
                let e = Arc::new(rusqlite::Error::InvalidQuery);
                replies.push(query.run(Err(&e)));
                continue;
            }
        };
        let reply = match tx.savepoint() {
            Ok(sp) => {
                let mut reply = query.run(Ok(&sp));
                if reply.succeeded()
                    && let Err(e) = sp.commit()
                {
                    reply.fail(&Arc::new(e));
                }
                reply
            }
            Err(e) => query.run(Err(&Arc::new(e))),
        };
        if !reply.succeeded() && tx.is_autocommit() {
            // The request failed and took the transaction with it: the requests before it in
            // this batch are undone, the ones after it fail.
            lost = Some(Arc::new(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("SQLite rolled the batch transaction back after an error".into()),
            )));
        }
        replies.push(reply);
    }
    let committed = match (&lost, tx) {
        (None, Some(tx)) => tx.commit().map_err(Arc::new),
        (Some(e), tx) => {
            drop(tx); // rolls back what is left, ignoring errors
            Err(Arc::clone(e))
        }
        (None, None) => Ok(()),
    };
    let error = committed.err();
    for mut reply in replies {
        if let Some(e) = &error {
            reply.fail(e);
        }
        reply.send();
    }
    error
}

/// The store thread's state.
#[derive(Debug)]
pub(super) struct Actor {
    pub(super) conn: Connection,
    pub(super) rx: mpsc::Receiver<Command>,
    pub(super) runtime: Runtime,
    pub(super) shared: Arc<Shared>,
    pub(super) options: StoreOptions,
    /// Observations whose write failed, oldest first, waiting for the next round.
    retained: VecDeque<(String, Observation)>,
    /// Whether the latest round failed (to log the recovery once).
    failing: bool,
    errors_log: LogLimiter,
}

impl Actor {
    pub(super) fn new(
        conn: Connection,
        rx: mpsc::Receiver<Command>,
        runtime: Runtime,
        shared: Arc<Shared>,
        options: StoreOptions,
    ) -> Self {
        Self {
            conn,
            rx,
            runtime,
            shared,
            options,
            retained: VecDeque::new(),
            failing: false,
            errors_log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// The thread's body.
    pub(super) fn run(mut self) {
        let mut closers = Vec::new();
        while let Some(first) = self.next_command() {
            let mut batch = Vec::new();
            let mut control = None;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Work(work) => batch.push(work),
                    Command::Control(c) => {
                        control = Some(c);
                        break;
                    }
                }
                if batch.len() < self.options.batch_size.max(1) {
                    next = self.rx.try_recv().ok();
                }
            }
            if control.is_none() {
                control = self.linger(&mut batch);
            }
            self.round(batch);
            match control {
                None => {}
                Some(Control::QueryOnly { on, reply }) => {
                    let result = self
                        .conn
                        .pragma_update(None, "query_only", on)
                        .map_err(StoreError::from);
                    let _ = reply.send(result);
                }
                Some(Control::Close { reply }) => {
                    // Refuse new commands; the ones already queued still run.
                    self.rx.close();
                    closers.push(reply);
                }
            }
        }
        self.finish();
        for closer in closers {
            let _ = closer.send(());
        }
    }

    /// While `batch` holds only observations, waits up to `linger` for more, so that a steady
    /// trickle of probe results (a hundred a second with 1,000 checks at 10 s) commits a few
    /// times a second instead of once per result. Nobody waits for an observation, so the delay
    /// costs nothing; a request ends the wait at once, as does a full batch. Returns a control
    /// command that arrived meanwhile.
    fn linger(&mut self, batch: &mut Vec<Work>) -> Option<Control> {
        let linger = self.options.linger;
        if linger.is_zero() || batch.iter().any(|w| matches!(w, Work::Query(_))) {
            return None;
        }
        let deadline = std::time::Instant::now() + linger;
        let limit = self.options.batch_size.max(1);
        while batch.len() < limit {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let rx = &mut self.rx;
            let wait = async move { tokio::time::timeout(left, rx.recv()).await };
            match self.runtime.block_on(wait) {
                Ok(Some(Command::Work(work))) => {
                    let request = matches!(work, Work::Query(_));
                    batch.push(work);
                    if request {
                        break;
                    }
                }
                Ok(Some(Command::Control(control))) => return Some(control),
                Ok(None) | Err(_) => break,
            }
        }
        None
    }

    /// The next command; while observations wait for a retry, retries them every
    /// `retry_interval` until one arrives. `None` once the queue is closed and empty.
    fn next_command(&mut self) -> Option<Command> {
        loop {
            if self.retained.is_empty() {
                return self.runtime.block_on(self.rx.recv());
            }
            let (rx, interval) = (&mut self.rx, self.options.retry_interval);
            // The timer must be created inside the runtime, hence the async block.
            let wait = async move { tokio::time::timeout(interval, rx.recv()).await };
            match self.runtime.block_on(wait) {
                Ok(command) => return command,
                Err(_elapsed) => self.round(Vec::new()),
            }
        }
    }

    /// One round: the retained and new observations in one transaction, then the requests in
    /// another (so that reads still answer while writes fail).
    fn round(&mut self, batch: Vec<Work>) {
        let mut queries = Vec::new();
        for work in batch {
            match work {
                Work::Observe { agent, observation } => {
                    self.retained.push_back((agent, observation));
                }
                Work::Query(query) => queries.push(query),
            }
        }
        let mut error = None;
        if !self.retained.is_empty() {
            let observations = self.retained.make_contiguous();
            match store_observations(&mut self.conn, observations) {
                Ok(()) => self.retained.clear(),
                Err(e) => {
                    error = Some(Arc::new(e));
                    let excess = self
                        .retained
                        .len()
                        .saturating_sub(self.options.max_retained);
                    if excess > 0 {
                        self.retained.drain(..excess);
                        self.count_dropped(excess);
                    }
                }
            }
        }
        if !queries.is_empty()
            && let Some(e) = run_queries(&mut self.conn, queries)
        {
            error.get_or_insert(e);
        }
        match error {
            Some(error) => {
                self.failing = true;
                if let Some(suppressed) = self.errors_log.check() {
                    tracing::error!(
                        error = %error,
                        retained = self.retained.len(),
                        dropped_total = self.shared.dropped.load(Ordering::Relaxed),
                        suppressed,
                        "database write failed; keeping unsaved observations in memory and retrying"
                    );
                }
            }
            None if self.failing => {
                self.failing = false;
                tracing::info!("database writes succeed again");
            }
            None => {}
        }
    }

    /// Last chance for retained observations, then closes the connection.
    fn finish(mut self) {
        if !self.retained.is_empty() {
            self.round(Vec::new());
        }
        if !self.retained.is_empty() {
            let lost = self.retained.len();
            self.count_dropped(lost);
            tracing::error!(
                lost,
                "store closing while database writes fail: observations lost"
            );
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::error!(error = %e, "closing the database failed");
        }
    }

    fn count_dropped(&self, n: usize) {
        self.shared
            .dropped
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}
