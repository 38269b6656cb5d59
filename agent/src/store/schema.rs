//! Opening `pom.db`: connection settings, the integrity check, moving a corrupt file aside, and
//! the schema migrations.
//!
//! **Stability boundary:** the schema. Migrations are an append-only list of SQL scripts; the
//! database's `PRAGMA user_version` is the number of scripts applied. Each script runs in its own
//! transaction together with the version bump, so a crash leaves the database at a whole version.
//! Never edit a released script: add a new one. A database whose version is newer than this agent
//! knows is refused ([`StoreError::NewerSchema`]), never downgraded.
//!
//! What counts as corrupt (moved aside to `pom.db.corrupt-<unix ms>`, together with its `-wal` and
//! `-shm`, and replaced by a fresh database): "file is not a database", "database disk image is
//! malformed", a `PRAGMA quick_check` that does not answer `ok`, and a migration that fails on
//! what the file holds. An environmental failure (permissions, I/O, a full disk, a lock held by
//! another process) is an error instead: moving a healthy database aside would throw away the
//! undelivered alerts in its outbox.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::StoreError;

/// The migrations, oldest first. `user_version` = how many have been applied.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE observations (
        id         INTEGER PRIMARY KEY,
        check_id   TEXT    NOT NULL,
        agent      TEXT    NOT NULL,
        status     TEXT    NOT NULL,
        latency_ms INTEGER,
        detail     TEXT    NOT NULL,
        at_ms      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX observations_check_at ON observations (check_id, at_ms);

    -- state: serde_json of mesh_proto::Lifecycle
    CREATE TABLE lifecycles (
        check_id   TEXT    NOT NULL PRIMARY KEY,
        state      TEXT    NOT NULL,
        updated_ms INTEGER NOT NULL
    ) STRICT;

    -- The notification log: one row per (check, incident, transition) that was sent.
    CREATE TABLE notifications (
        check_id TEXT    NOT NULL,
        incident TEXT    NOT NULL,
        event    TEXT    NOT NULL,
        repeat   INTEGER NOT NULL,
        sent_by  TEXT    NOT NULL,
        at_ms    INTEGER NOT NULL,
        PRIMARY KEY (check_id, incident, event, repeat)
    ) STRICT;

    -- payload: serde_json of pom::alert::Alert. AUTOINCREMENT: an id is never reused, so a
    -- stale id held by a sender can never mark another alert delivered.
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        channel         TEXT    NOT NULL,
        payload         TEXT    NOT NULL,
        created_ms      INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        delivered_ms    INTEGER,
        last_error      TEXT
    ) STRICT;
    CREATE INDEX outbox_due ON outbox (delivered_ms, next_attempt_ms);

    CREATE TABLE heartbeats (
        name         TEXT    NOT NULL PRIMARY KEY,
        last_ping_ms INTEGER NOT NULL
    ) STRICT;
    ",
];

/// The most bytes a checkpointed WAL file keeps (`PRAGMA journal_size_limit`).
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// The schema version this agent writes (the number of migrations).
// The list is a handful of entries; the cast cannot wrap.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A ready connection, and where a corrupt predecessor was moved, if one was.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) conn: Connection,
    pub(super) moved_aside: Option<PathBuf>,
}

/// Why preparing the database failed.
enum Failure {
    /// The file's content is unusable: move it aside and start afresh.
    Corrupt(String),
    /// Anything else: report it, touch nothing.
    Fatal(StoreError),
}

/// Opens `path`, checks it, migrates it; moves it aside and starts afresh if it is corrupt.
pub(super) fn open(path: &Path) -> Result<Opened, StoreError> {
    let reason = match prepare(path) {
        Ok(conn) => {
            return Ok(Opened {
                conn,
                moved_aside: None,
            });
        }
        Err(Failure::Fatal(e)) => return Err(e),
        Err(Failure::Corrupt(reason)) => reason,
    };
    let aside = move_aside(path)?;
    tracing::error!(
        path = %path.display(),
        moved_to = %aside.display(),
        reason = %reason,
        "DATABASE CORRUPT: moved it aside and started a fresh, empty database; \
         history, alert state and undelivered alerts it held are not used"
    );
    match prepare(path) {
        Ok(conn) => Ok(Opened {
            conn,
            moved_aside: Some(aside),
        }),
        Err(Failure::Fatal(e)) => Err(e),
        // A brand-new file that is corrupt means the environment is broken; do not loop.
        Err(Failure::Corrupt(reason)) => Err(StoreError::FreshUnusable {
            path: path.to_owned(),
            reason,
        }),
    }
}

/// Opens, checks and migrates `path`.
fn prepare(path: &Path) -> Result<Connection, Failure> {
    let fail = |e| classify(path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;

    // The first statement that reads the file: "not a database" shows up here.
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(fail)?;
    if version > SCHEMA_VERSION {
        return Err(Failure::Fatal(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            known: SCHEMA_VERSION,
        }));
    }
    if version < 0 {
        return Err(Failure::Corrupt(format!(
            "user_version {version} was not written by PoM"
        )));
    }

    let problems = quick_check(&conn).map_err(fail)?;
    if problems != ["ok"] {
        return Err(Failure::Corrupt(format!(
            "quick_check: {}",
            problems.join("; ")
        )));
    }

    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(fail)?;
    // A WAL that grew (a long VACUUM by someone else, a burst of writes) is cut back to this
    // after each checkpoint instead of keeping its largest size on disk for good.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(fail)?;
    // Migrate before switching to WAL: a migration that fails on a foreign file rolls back and
    // leaves that file exactly as it was for whoever inspects it after it is moved aside.
    migrate(&mut conn, version).map_err(fail)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            path = %path.display(),
            journal_mode = %mode,
            "cannot use WAL mode for the database"
        );
    }
    Ok(conn)
}

/// At most ten lines of `PRAGMA quick_check`; `["ok"]` when the file is sound.
fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(10)")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    rows.collect()
}

/// Applies the migrations after `from`, each in its own transaction.
fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    for (index, script) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= from {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(
            from = version - 1,
            to = version,
            "migrated the database schema"
        );
    }
    Ok(())
}

/// Sorts an error while opening into "the file is bad" and "something else is wrong".
fn classify(path: &Path, e: rusqlite::Error) -> Failure {
    let code = match &e {
        rusqlite::Error::SqliteFailure(error, _) | rusqlite::Error::SqlInputError { error, .. } => {
            Some(error.code)
        }
        _ => None,
    };
    let environmental = match code {
        Some(code) => matches!(
            code,
            ErrorCode::PermissionDenied
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::OutOfMemory
                | ErrorCode::ReadOnly
                | ErrorCode::OperationInterrupted
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::NoLargeFileSupport
                | ErrorCode::ApiMisuse
                | ErrorCode::InternalMalfunction
        ),
        // Not from SQLite itself (a rusqlite conversion or a bad path): not the file's content.
        None => true,
    };
    if environmental {
        Failure::Fatal(StoreError::Open {
            path: path.to_owned(),
            source: e,
        })
    } else {
        Failure::Corrupt(e.to_string())
    }
}

/// Renames `path` and its `-wal` and `-shm` companions to `<path>.corrupt-<unix ms>[-wal|-shm]`,
/// so the set can still be opened together for forensics.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{millis}"));
    let aside = PathBuf::from(aside);
    rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = aside.as_os_str().to_owned();
        to.push(suffix);
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A stale -wal or -shm next to a fresh database would be replayed into it.
            Err(_) => remove_companion(Path::new(&from))?,
        }
    }
    Ok(aside)
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|source| StoreError::MoveAside {
        path: from.to_owned(),
        source,
    })
}

fn remove_companion(path: &Path) -> Result<(), StoreError> {
    fs::remove_file(path).map_err(|source| StoreError::MoveAside {
        path: path.to_owned(),
        source,
    })
}
