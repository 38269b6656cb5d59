//! The store's error type: what can go wrong opening the data directory and talking to the
//! store thread.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// An error from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created or used.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The instance id file cannot be read or written.
    #[error("cannot read or create the instance id file {path}: {source}")]
    InstanceIdIo {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The instance id file does not hold a UUID.
    #[error("{path} is malformed: expected one UUID, found {found:?}")]
    InstanceIdMalformed {
        /// The file.
        path: PathBuf,
        /// The start of what it holds.
        found: String,
    },
    /// The database cannot be opened or prepared, for a reason that moving it aside would not
    /// fix (permissions, I/O, a full disk).
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer agent. It is left alone: downgrading is a decision
    /// for a person, not for startup code.
    #[error(
        "database {path} has schema version {found}, newer than this agent knows ({known}); \
         run the newer agent or move the file aside by hand"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this agent knows.
        known: i64,
    },
    /// A corrupt database could not be moved aside.
    #[error("cannot move the corrupt database {path} aside: {source}")]
    MoveAside {
        /// The file that could not be renamed.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A corrupt database was moved aside, and the fresh one that replaced it is unusable too:
    /// the file system, not the file, is at fault.
    #[error("a freshly created database {path} is unusable: {reason}")]
    FreshUnusable {
        /// The database file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The store thread could not be started.
    #[error("cannot start the store thread: {0}")]
    Spawn(#[source] io::Error),
    /// A statement or transaction failed at run time (e.g. a full disk). The store keeps running;
    /// the caller decides whether to retry.
    #[error("database error: {0}")]
    Database(#[source] Arc<rusqlite::Error>),
    /// A payload could not be encoded as JSON.
    #[error("cannot encode the alert payload: {0}")]
    Encode(#[source] serde_json::Error),
    /// The store thread has stopped (closed, or gone after a bug).
    #[error("the store is closed")]
    Closed,
    /// [`close`](crate::store::StoreHandle::close) gave up waiting for the thread.
    #[error("the store thread did not stop within {0:?}; queued writes may be lost")]
    CloseTimedOut(Duration),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}
