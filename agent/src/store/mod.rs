//! The store: everything PoM keeps on disk in `DATA_DIR/pom.db` (SQLite, WAL) and
//! `DATA_DIR/instance_id`.
//!
//! **Architecture invariant:** this is the only module that touches rusqlite, and nothing outside
//! it ever waits on a disk write it did not ask to wait for. One dedicated OS thread owns the
//! [`rusqlite::Connection`] (`store::actor`); the rest of the agent holds a cheap, cloneable
//! [`StoreHandle`] that sends it commands over a bounded channel. Probe results go in with
//! [`StoreHandle::record_observation`], which never waits: when the queue is full the observation
//! is dropped and counted ([`StoreHandle::dropped_observations`]), because a probe that waits on
//! the database reports false downtime (Uptime Kuma #2470).
//!
//! What is kept (the schema is a stability boundary, see `store::schema`): observations (30
//! days of probe history, ours and our peers'), the alert lifecycle of every check, the
//! notification log ("was this transition already sent?"), the alert outbox (deliveries survive
//! channel outages and restarts) and push-heartbeat pings.
//!
//! Failure policy:
//! - a database file that is not a database, fails `PRAGMA quick_check` or cannot be migrated is
//!   moved aside to `pom.db.corrupt-<unix ms>` with a loud error, and a fresh one is created
//!   ([`StoreHandle::moved_aside`]); the agent keeps monitoring;
//! - a write that fails at run time (disk full, I/O error) never stops the store thread: queued
//!   observations are kept in memory (bounded) and retried on the next round; requests that wait
//!   for a reply get the error and decide themselves.
//!
//! Time never comes from the clock here: every timestamp is a [`Timestamp`] passed in by the
//! caller. The clock is read only to rate-limit logs and to name a moved-aside file.

mod actor;
mod error;
mod handle;
mod instance;
mod limiter;
mod queries;
mod schema;

use std::path::Path;
use std::time::Duration;

use mesh_proto::{Observation, Timestamp};

pub use error::StoreError;
pub use handle::StoreHandle;
pub use instance::InstanceId;
pub use schema::SCHEMA_VERSION;

use crate::alert::Alert;

/// The database's file name inside the data directory.
pub const DB_FILE: &str = "pom.db";
/// The instance id's file name inside the data directory.
pub const INSTANCE_ID_FILE: &str = "instance_id";

/// Opens the store. See the [module docs](self).
#[derive(Debug)]
pub struct Store {
    _private: (),
}

impl Store {
    /// Opens (or creates) `data_dir/pom.db` and `data_dir/instance_id` with default options and
    /// starts the store thread.
    pub fn open(data_dir: &Path) -> Result<(StoreHandle, InstanceId), StoreError> {
        Self::open_with(data_dir, StoreOptions::default())
    }

    /// Like [`open`](Self::open), with explicit queue and batching limits.
    ///
    /// Blocking: it reads and may create files, checks the database and runs migrations. Call it
    /// at startup, before probes run (or from `spawn_blocking`).
    pub fn open_with(
        data_dir: &Path,
        options: StoreOptions,
    ) -> Result<(StoreHandle, InstanceId), StoreError> {
        instance::ensure_data_dir(data_dir)?;
        let instance_id = instance::load_or_create(data_dir)?;
        let opened = schema::open(&data_dir.join(DB_FILE))?;
        let handle = handle::start(opened.conn, opened.moved_aside, options)?;
        Ok((handle, instance_id))
    }
}

/// Limits of the store thread. The defaults suit a daemon; tests may shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Commands that may wait in the queue. When it is full, observations are dropped (and
    /// counted) and requests wait for room.
    pub queue_capacity: usize,
    /// Most commands run in one transaction.
    pub batch_size: usize,
    /// Most observations kept in memory while writes fail; beyond it the oldest are dropped (and
    /// counted).
    pub max_retained: usize,
    /// Wait between two write attempts while writes fail and nothing new arrives.
    pub retry_interval: Duration,
    /// How long a batch of observations waits for more before it is written (zero: never).
    /// Requests never wait.
    pub linger: Duration,
    /// How long [`StoreHandle::close`] waits for the thread to flush and stop.
    pub close_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            batch_size: 512,
            max_retained: 50_000,
            retry_interval: Duration::from_secs(1),
            linger: Duration::from_millis(250),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// An observation together with the agent that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentObservation {
    /// The agent's name.
    pub agent: String,
    /// What it saw.
    pub observation: Observation,
}

/// An outbox entry due for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The outbox row, for [`StoreHandle::mark_delivered`] and [`StoreHandle::mark_failed`].
    pub id: i64,
    /// The channel's name (`[[alerts.channels]] name`).
    pub channel: String,
    /// What to send.
    pub alert: Alert,
    /// Failed attempts so far (for the caller's backoff).
    pub attempts: u32,
    /// When it was enqueued.
    pub created: Timestamp,
}

/// What [`StoreHandle::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Observations.
    pub observations: u64,
    /// Delivered outbox rows.
    pub deliveries: u64,
    /// Notification log entries.
    pub notifications: u64,
}
