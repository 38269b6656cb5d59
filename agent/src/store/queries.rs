//! The SQL: one function per store operation, each on a borrowed connection (in practice a
//! savepoint inside the store thread's batch transaction).
//!
//! Rows written by an older or buggy agent, or damaged on disk, never panic here: a row that does
//! not decode is skipped with a warning (or, for the outbox, parked so that it stops being due).

use mesh_proto::{AlertEvent, CheckId, Lifecycle, Observation, Status, Subject, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::{AgentObservation, Delivery, PruneStats};
use crate::alert::Alert;

/// Longest `last_error` kept for an outbox row, in bytes.
const MAX_ERROR_LEN: usize = 2000;

/// The key of one notification: a transition of one incident of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NotificationKey {
    pub(super) check: Subject,
    pub(super) incident: String,
    pub(super) event: AlertEvent,
    pub(super) repeat: u32,
}

impl NotificationKey {
    pub(super) fn new(check: &Subject, incident: &str, event: AlertEvent, repeat: u32) -> Self {
        Self {
            check: check.clone(),
            incident: incident.to_owned(),
            event,
            repeat,
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn insert_observation(
    conn: &Connection,
    agent: &str,
    observation: &Observation,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO observations (check_id, agent, status, latency_ms, detail, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    stmt.execute(params![
        observation.check.to_string(),
        agent,
        observation.status.as_str(),
        observation.latency_ms.map(to_i64),
        observation.detail,
        observation.at.as_millis(),
    ])?;
    Ok(())
}

pub(super) fn recent_observations(
    conn: &Connection,
    check: &CheckId,
    since: Timestamp,
) -> rusqlite::Result<Vec<AgentObservation>> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent, status, latency_ms, detail, at_ms FROM observations
         WHERE check_id = ?1 AND at_ms >= ?2 ORDER BY at_ms, id",
    )?;
    let rows = stmt.query_map(params![check.to_string(), since.as_millis()], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Option<i64>>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    let mut skipped = 0_usize;
    for row in rows {
        let (agent, status, latency, detail, at) = row?;
        let Ok(status) = status.parse::<Status>() else {
            skipped += 1;
            continue;
        };
        let latency_ms = match latency.map(u64::try_from) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(_)) => {
                skipped += 1;
                continue;
            }
        };
        out.push(AgentObservation {
            agent,
            observation: Observation {
                check: check.clone(),
                status,
                latency_ms,
                detail,
                at: Timestamp(at),
            },
        });
    }
    if skipped > 0 {
        tracing::warn!(check = %check, skipped, "skipped observation rows that do not decode");
    }
    Ok(out)
}

/// Latencies of the probes of `check` by `agent` that got an answer (`operational` or
/// `degraded`), oldest first. Failed probes are left out: their latency measures a timeout or an
/// error page, not the service.
pub(super) fn latency_samples(
    conn: &Connection,
    agent: &str,
    check: &CheckId,
    since: Timestamp,
) -> rusqlite::Result<Vec<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT latency_ms FROM observations
         WHERE check_id = ?1 AND at_ms >= ?2 AND agent = ?3 AND latency_ms IS NOT NULL
           AND status IN ('operational', 'degraded')
         ORDER BY at_ms, id",
    )?;
    let rows = stmt.query_map(
        params![check.to_string(), since.as_millis(), agent],
        |row| row.get::<_, i64>(0),
    )?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(latency) = u64::try_from(row?) {
            out.push(latency);
        }
    }
    Ok(out)
}

pub(super) fn save_lifecycle(
    conn: &Connection,
    subject: &Subject,
    state: &str,
    now: Timestamp,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO lifecycles (check_id, state, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (check_id)
         DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
    )?
    .execute(params![subject.to_string(), state, now.as_millis()])?;
    Ok(())
}

pub(super) fn load_lifecycles(conn: &Connection) -> rusqlite::Result<Vec<(Subject, Lifecycle)>> {
    let mut stmt =
        conn.prepare_cached("SELECT check_id, state FROM lifecycles ORDER BY check_id")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (check, state) = row?;
        let parsed = check
            .parse::<Subject>()
            .map_err(|e| e.to_string())
            .and_then(|id| {
                serde_json::from_str::<Lifecycle>(&state)
                    .map(|l| (id, l))
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(entry) => out.push(entry),
            Err(error) => {
                tracing::warn!(
                    check = %check,
                    error = %error,
                    "skipped a stored alert lifecycle that does not decode"
                );
            }
        }
    }
    Ok(out)
}

/// Inserts the entry unless it is already there; `true` when it was new.
pub(super) fn log_notification(
    conn: &Connection,
    key: &NotificationKey,
    sent_by: &str,
    at: Timestamp,
) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO notifications (check_id, incident, event, repeat, sent_by, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            key.check.to_string(),
            key.incident,
            key.event.as_str(),
            key.repeat,
            sent_by,
            at.as_millis(),
        ])?;
    Ok(inserted == 1)
}

/// Logs a transition and, only if it was not logged yet, queues `payload` for every channel.
/// `lifecycle` (the subject's state after the page, JSON) is saved either way. The caller runs
/// it inside one savepoint, so the lifecycle, the log entry and the outbox rows commit together:
/// a crash can neither lose a page that is logged nor queue one twice, nor leave a lifecycle
/// that forgot the page (which would open a new incident, with a new id, after a restart).
pub(super) fn log_and_enqueue(
    conn: &Connection,
    key: &NotificationKey,
    sent_by: &str,
    at: Timestamp,
    channels: &[String],
    payload: &str,
    lifecycle: Option<&str>,
) -> rusqlite::Result<bool> {
    if let Some(state) = lifecycle {
        save_lifecycle(conn, &key.check, state, at)?;
    }
    if !log_notification(conn, key, sent_by, at)? {
        return Ok(false);
    }
    for channel in channels {
        enqueue(conn, channel, payload, at)?;
    }
    Ok(true)
}

pub(super) fn was_notified(conn: &Connection, key: &NotificationKey) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM notifications
         WHERE check_id = ?1 AND incident = ?2 AND event = ?3 AND repeat = ?4)",
    )?
    .query_row(
        params![
            key.check.to_string(),
            key.incident,
            key.event.as_str(),
            key.repeat
        ],
        |row| row.get(0),
    )
}

pub(super) fn enqueue(
    conn: &Connection,
    channel: &str,
    payload: &str,
    now: Timestamp,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO outbox (channel, payload, created_ms, attempts, next_attempt_ms)
         VALUES (?1, ?2, ?3, 0, ?3)",
    )?
    .execute(params![channel, payload, now.as_millis()])?;
    Ok(conn.last_insert_rowid())
}

/// Undelivered rows whose next attempt is due at `now`, earliest first. A row whose payload does
/// not decode is parked (its next attempt moved to the end of time, the reason kept in
/// `last_error`) so that it cannot block the queue; it still counts as pending.
pub(super) fn due_deliveries(
    conn: &Connection,
    now: Timestamp,
    limit: u32,
) -> rusqlite::Result<Vec<Delivery>> {
    let rows: Vec<(i64, String, String, i64, i64)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT id, channel, payload, attempts, created_ms FROM outbox
             WHERE delivered_ms IS NULL AND next_attempt_ms <= ?1
             ORDER BY next_attempt_ms, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now.as_millis(), limit], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut out = Vec::with_capacity(rows.len());
    for (id, channel, payload, attempts, created) in rows {
        match serde_json::from_str::<Alert>(&payload) {
            Ok(alert) => out.push(Delivery {
                id,
                channel,
                alert,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                created: Timestamp(created),
            }),
            Err(e) => {
                tracing::error!(
                    outbox_id = id,
                    channel = %channel,
                    error = %e,
                    "parked an outbox entry whose payload does not decode"
                );
                conn.prepare_cached(
                    "UPDATE outbox SET next_attempt_ms = ?2, last_error = ?3 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    i64::MAX,
                    truncate(&format!("payload does not decode: {e}"))
                ])?;
            }
        }
    }
    Ok(out)
}

pub(super) fn mark_delivered(conn: &Connection, id: i64, now: Timestamp) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE outbox SET delivered_ms = ?2 WHERE id = ?1 AND delivered_ms IS NULL",
    )?
    .execute(params![id, now.as_millis()])?;
    Ok(())
}

pub(super) fn mark_failed(
    conn: &Connection,
    id: i64,
    error: &str,
    next_attempt: Timestamp,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3
         WHERE id = ?1 AND delivered_ms IS NULL",
    )?
    .execute(params![id, next_attempt.as_millis(), truncate(error)])?;
    Ok(())
}

pub(super) fn pending_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT count(*) FROM outbox WHERE delivered_ms IS NULL")?
        .query_row([], |row| row.get::<_, i64>(0))
        .map(to_u64)
}

/// Records a ping; a ping never moves the time backwards (pings merged from peers may arrive
/// late).
pub(super) fn record_ping(conn: &Connection, name: &str, at: Timestamp) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO heartbeats (name, last_ping_ms) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET last_ping_ms = max(last_ping_ms, excluded.last_ping_ms)",
    )?
    .execute(params![name, at.as_millis()])?;
    Ok(())
}

pub(super) fn last_ping(conn: &Connection, name: &str) -> rusqlite::Result<Option<Timestamp>> {
    conn.prepare_cached("SELECT last_ping_ms FROM heartbeats WHERE name = ?1")?
        .query_row(params![name], |row| row.get::<_, i64>(0))
        .optional()
        .map(|t| t.map(Timestamp))
}

/// The payload of the latest outbox row of `incident`'s `event` (`firing` or `resolved`), if
/// any is left. Read at start-up only, so a scan of the outbox (pruned to 30 days) is fine.
pub(super) fn last_payload(
    conn: &Connection,
    incident: &str,
    event: AlertEvent,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT payload FROM outbox
         WHERE json_extract(payload, '$.incident') = ?1 AND json_extract(payload, '$.event') = ?2
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![incident, event.as_str()], |row| {
        row.get::<_, String>(0)
    })
    .optional()
}

/// Deletes observations, delivered outbox rows and notification log entries older than
/// `older_than`. Undelivered alerts are kept, however old.
pub(super) fn prune(conn: &Connection, older_than: Timestamp) -> rusqlite::Result<PruneStats> {
    let t = older_than.as_millis();
    let observations = conn.execute("DELETE FROM observations WHERE at_ms < ?1", [t])?;
    let deliveries = conn.execute(
        "DELETE FROM outbox WHERE delivered_ms IS NOT NULL AND delivered_ms < ?1",
        [t],
    )?;
    let notifications = conn.execute("DELETE FROM notifications WHERE at_ms < ?1", [t])?;
    Ok(PruneStats {
        observations: observations as u64,
        deliveries: deliveries as u64,
        notifications: notifications as u64,
    })
}

/// `error` cut to at most [`MAX_ERROR_LEN`] bytes, on a character boundary.
fn truncate(error: &str) -> &str {
    if error.len() <= MAX_ERROR_LEN {
        return error;
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}
