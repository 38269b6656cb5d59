//! The store against real SQLite files in temporary directories: the instance id, every API
//! round trip, restarts (close and reopen), corruption recovery, the schema version guard, and
//! the promise that recording an observation never waits on the database.
//!
//! A few tests open a second rusqlite connection to the same file, the way another process
//! would: to plant a newer schema version or a foreign table, or to hold the write lock.

use std::path::Path;
use std::time::{Duration, Instant};

use mesh_proto::{
    AlertEvent, AlertKind, AlertPolicy, CheckId, Lifecycle, Observation, Status, Subject, Timestamp,
};
use pom::alert::Alert;
use pom::alert::payload::PAYLOAD_VERSION;
use pom::store::{
    DB_FILE, INSTANCE_ID_FILE, PruneStats, SCHEMA_VERSION, Store, StoreError, StoreHandle,
};
use time::macros::datetime;

const DAY: i64 = 86_400_000;

fn check(s: &str) -> CheckId {
    s.parse().expect("test check id")
}

fn subject(s: &str) -> Subject {
    Subject::Check(check(s))
}

fn obs(check_id: &str, status: Status, latency_ms: Option<u64>, at: i64) -> Observation {
    Observation {
        check: check(check_id),
        status,
        latency_ms,
        detail: format!("{status} at {at}"),
        at: Timestamp(at),
    }
}

fn alert(incident: &str) -> Alert {
    Alert {
        version: PAYLOAD_VERSION,
        event: AlertEvent::Firing,
        alert: AlertKind::Health,
        target: "makenot.work".into(),
        check: "makenot.work/health".into(),
        status: Status::Error,
        summary: "GET /api/health returned 502".into(),
        detail: "502 Bad Gateway".into(),
        since: datetime!(2026-06-14 03:12:09 UTC),
        incident: incident.into(),
        confirmed_by: vec!["astra".into(), "hetzner".into()],
        agents_total: 2,
        sent_by: "astra".into(),
        runbook: "https://example.com/runbook.md#health-status-change".into(),
        repeat: 0,
    }
}

fn open(dir: &Path) -> StoreHandle {
    let (store, _) = Store::open(dir).expect("open store");
    store
}

async fn reopen(store: StoreHandle, dir: &Path) -> StoreHandle {
    store.close().await.expect("close store");
    open(dir)
}

#[tokio::test]
async fn instance_id_is_created_once_and_stable_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let (store, first) = Store::open(&data).unwrap();
    let parsed = uuid::Uuid::parse_str(first.as_str()).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 4);
    let path = data.join(INSTANCE_ID_FILE);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        first.as_str()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "instance_id mode {mode:o}");
    }
    assert!(store.moved_aside().is_none());
    store.close().await.unwrap();

    let (store, second) = Store::open(&data).unwrap();
    assert_eq!(first, second);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_malformed_instance_id_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(INSTANCE_ID_FILE);
    std::fs::write(&path, "not-a-uuid\n").unwrap();
    let err = Store::open(dir.path()).expect_err("malformed id must fail");
    assert!(
        matches!(err, StoreError::InstanceIdMalformed { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not-a-uuid"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "not-a-uuid\n",
        "left alone"
    );

    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::InstanceIdMalformed { .. })
    ));
}

#[tokio::test]
async fn observations_round_trip_with_agent_and_latency_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let health = "site/health";
    store.record_observation("astra", &obs(health, Status::Operational, Some(10), 1_000));
    store.record_observation(
        "hetzner",
        &obs(health, Status::Operational, Some(90), 1_500),
    );
    store.record_observation(
        "astra",
        &obs(health, Status::Unreachable, Some(10_000), 2_000),
    );
    store.record_observation("astra", &obs(health, Status::Degraded, Some(30), 3_000));
    store.record_observation("astra", &obs(health, Status::Error, None, 4_000));
    store.record_observation(
        "astra",
        &obs("site/tls", Status::Operational, Some(5), 3_500),
    );

    // Requests run after everything queued before them.
    let all = store
        .recent_observations(&check(health), Timestamp(0))
        .await
        .unwrap();
    let seen: Vec<(&str, i64)> = all
        .iter()
        .map(|o| (o.agent.as_str(), o.observation.at.as_millis()))
        .collect();
    assert_eq!(
        seen,
        [
            ("astra", 1_000),
            ("hetzner", 1_500),
            ("astra", 2_000),
            ("astra", 3_000),
            ("astra", 4_000)
        ]
    );
    assert_eq!(
        all[0].observation,
        obs(health, Status::Operational, Some(10), 1_000)
    );
    assert_eq!(all[4].observation.latency_ms, None);

    let since = store
        .recent_observations(&check(health), Timestamp(2_000))
        .await
        .unwrap();
    assert_eq!(since.len(), 3, "since is inclusive");

    let samples = store
        .latency_samples("astra", &check(health), Timestamp(0))
        .await
        .unwrap();
    assert_eq!(
        samples,
        [10, 30],
        "own answered probes only: no peer, no timeout, no null"
    );
    assert_eq!(store.dropped_observations(), 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn lifecycles_round_trip_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let policy = AlertPolicy {
        cooldown_ms: 300_000,
        repeat_interval_ms: 0,
    };
    let mut down = Lifecycle::default();
    down.update(true, Timestamp(1_000), &policy);
    let quiet = Lifecycle::default();

    store
        .save_lifecycle(&subject("a/health"), &quiet, Timestamp(1))
        .await
        .unwrap();
    store
        .save_lifecycle(&subject("b/tls"), &quiet, Timestamp(1))
        .await
        .unwrap();
    // Saving again replaces.
    store
        .save_lifecycle(&subject("a/health"), &down, Timestamp(2))
        .await
        .unwrap();
    let expected = vec![(subject("a/health"), down), (subject("b/tls"), quiet)];
    assert_eq!(store.load_lifecycles().await.unwrap(), expected);

    let store = reopen(store, dir.path()).await;
    assert_eq!(store.load_lifecycles().await.unwrap(), expected);
    store.close().await.unwrap();

    // A row that does not decode (written by hand here) is skipped, not fatal.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch(
        "INSERT INTO lifecycles VALUES ('c/health', '{not json', 3);
         INSERT INTO lifecycles VALUES ('no slash', '{}', 3);",
    )
    .unwrap();
    drop(conn);
    let store = open(dir.path());
    assert_eq!(store.load_lifecycles().await.unwrap(), expected);
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_notification_log_dedups_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = check("site/health");
    let incident = "site/health@1000";

    assert!(
        !store
            .was_notified(&Subject::Check(id.clone()), incident, AlertEvent::Firing, 0)
            .await
            .unwrap()
    );
    assert!(
        store
            .log_notification(
                &Subject::Check(id.clone()),
                incident,
                AlertEvent::Firing,
                0,
                "astra",
                Timestamp(1)
            )
            .await
            .unwrap(),
        "first entry is new"
    );
    assert!(
        !store
            .log_notification(
                &Subject::Check(id.clone()),
                incident,
                AlertEvent::Firing,
                0,
                "hetzner",
                Timestamp(2)
            )
            .await
            .unwrap(),
        "second entry for the same transition is not"
    );
    assert!(
        store
            .was_notified(&Subject::Check(id.clone()), incident, AlertEvent::Firing, 0)
            .await
            .unwrap()
    );
    // Another repeat, event or incident is another transition.
    assert!(
        !store
            .was_notified(&Subject::Check(id.clone()), incident, AlertEvent::Firing, 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .was_notified(
                &Subject::Check(id.clone()),
                incident,
                AlertEvent::Resolved,
                0
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .log_notification(
                &Subject::Check(id.clone()),
                incident,
                AlertEvent::Resolved,
                0,
                "astra",
                Timestamp(3)
            )
            .await
            .unwrap()
    );

    let store = reopen(store, dir.path()).await;
    assert!(
        !store
            .log_notification(
                &Subject::Check(id.clone()),
                incident,
                AlertEvent::Firing,
                0,
                "astra",
                Timestamp(4)
            )
            .await
            .unwrap(),
        "a restart does not forget what was sent"
    );
    assert!(
        store
            .was_notified(
                &Subject::Check(id.clone()),
                incident,
                AlertEvent::Resolved,
                0
            )
            .await
            .unwrap()
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_outbox_orders_retries_and_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = store
        .enqueue("hook", &alert("a"), Timestamp(100))
        .await
        .unwrap();
    let b = store
        .enqueue("mail", &alert("b"), Timestamp(200))
        .await
        .unwrap();
    let c = store
        .enqueue("hook", &alert("c"), Timestamp(300))
        .await
        .unwrap();
    assert!(a < b && b < c);
    assert_eq!(store.pending_count().await.unwrap(), 3);

    // Due: only what is due at `now`, earliest first, up to the limit.
    let ids = |d: Vec<pom::store::Delivery>| d.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.due_deliveries(Timestamp(250), 10).await.unwrap()),
        [a, b]
    );
    assert_eq!(
        ids(store.due_deliveries(Timestamp(1_000), 2).await.unwrap()),
        [a, b]
    );
    let first = store
        .due_deliveries(Timestamp(1_000), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(first.channel, "hook");
    assert_eq!(first.alert, alert("a"));
    assert_eq!(first.attempts, 0);
    assert_eq!(first.created, Timestamp(100));

    // A failure moves the entry into the future and counts the attempt.
    store
        .mark_failed(a, "connection refused", Timestamp(5_000))
        .await
        .unwrap();
    assert_eq!(
        ids(store.due_deliveries(Timestamp(1_000), 10).await.unwrap()),
        [b, c]
    );
    let later = store.due_deliveries(Timestamp(5_000), 10).await.unwrap();
    assert_eq!(
        later.iter().map(|d| d.id).collect::<Vec<_>>(),
        [b, c, a],
        "ordered by next attempt"
    );
    assert_eq!(later[2].attempts, 1);
    assert_eq!(store.pending_count().await.unwrap(), 3);

    // Delivery removes it from due and pending.
    store.mark_delivered(b, Timestamp(1_100)).await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 2);
    assert_eq!(
        ids(store.due_deliveries(Timestamp(5_000), 10).await.unwrap()),
        [c, a]
    );
    // A late failure report for a delivered entry does not resurrect it.
    store.mark_failed(b, "late", Timestamp(0)).await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 2);
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_outbox_entry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = store
        .enqueue("hook", &alert("x"), Timestamp(10))
        .await
        .unwrap();
    store.mark_failed(id, "503", Timestamp(20)).await.unwrap();

    let store = reopen(store, dir.path()).await;
    assert_eq!(store.pending_count().await.unwrap(), 1);
    let due = store.due_deliveries(Timestamp(20), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, id);
    assert_eq!(due[0].alert, alert("x"));
    assert_eq!(due[0].attempts, 1);
    // Ids are never reused, even after the newest entry is pruned.
    store.mark_delivered(id, Timestamp(30)).await.unwrap();
    store.prune(Timestamp(31)).await.unwrap();
    let next = store
        .enqueue("hook", &alert("y"), Timestamp(40))
        .await
        .unwrap();
    assert!(next > id);
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_outbox_payload_that_does_not_decode_is_parked_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let good = store
        .enqueue("hook", &alert("ok"), Timestamp(10))
        .await
        .unwrap();
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute(
        "INSERT INTO outbox (channel, payload, created_ms, attempts, next_attempt_ms)
         VALUES ('hook', '{\"version\": 1', 5, 0, 5)",
        [],
    )
    .unwrap();
    drop(conn);

    let store = open(dir.path());
    let due = store.due_deliveries(Timestamp(100), 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [good]);
    // Parked: it stays pending (a person should look) but is never due again.
    assert_eq!(store.pending_count().await.unwrap(), 2);
    assert_eq!(
        store
            .due_deliveries(Timestamp(i64::MAX - 1), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn heartbeat_pings_round_trip_and_never_go_back_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.last_ping("staging-tests").await.unwrap(), None);
    store
        .record_ping("staging-tests", Timestamp(1_000))
        .await
        .unwrap();
    assert_eq!(
        store.last_ping("staging-tests").await.unwrap(),
        Some(Timestamp(1_000))
    );
    store
        .record_ping("staging-tests", Timestamp(500))
        .await
        .unwrap();
    assert_eq!(
        store.last_ping("staging-tests").await.unwrap(),
        Some(Timestamp(1_000)),
        "a late ping from a peer does not move it back"
    );
    store
        .record_ping("staging-tests", Timestamp(2_000))
        .await
        .unwrap();
    let store = reopen(store, dir.path()).await;
    assert_eq!(
        store.last_ping("staging-tests").await.unwrap(),
        Some(Timestamp(2_000))
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn prune_removes_old_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = 100 * DAY;
    let cutoff = Timestamp(now - 30 * DAY);
    let id = check("site/health");

    store.record_observation(
        "a",
        &obs("site/health", Status::Operational, Some(1), now - 31 * DAY),
    );
    store.record_observation(
        "a",
        &obs("site/health", Status::Operational, Some(2), now - 30 * DAY),
    );
    store.record_observation(
        "a",
        &obs("site/health", Status::Operational, Some(3), now - DAY),
    );

    let old_done = store
        .enqueue("hook", &alert("1"), Timestamp(now - 40 * DAY))
        .await
        .unwrap();
    store
        .mark_delivered(old_done, Timestamp(now - 40 * DAY))
        .await
        .unwrap();
    let recent_done = store
        .enqueue("hook", &alert("2"), Timestamp(now - 40 * DAY))
        .await
        .unwrap();
    store
        .mark_delivered(recent_done, Timestamp(now - DAY))
        .await
        .unwrap();
    let old_pending = store
        .enqueue("hook", &alert("3"), Timestamp(now - 40 * DAY))
        .await
        .unwrap();

    store
        .log_notification(
            &Subject::Check(id.clone()),
            "old",
            AlertEvent::Firing,
            0,
            "a",
            Timestamp(now - 31 * DAY),
        )
        .await
        .unwrap();
    store
        .log_notification(
            &Subject::Check(id.clone()),
            "new",
            AlertEvent::Firing,
            0,
            "a",
            Timestamp(now - DAY),
        )
        .await
        .unwrap();

    let stats = store.prune(cutoff).await.unwrap();
    assert_eq!(
        stats,
        PruneStats {
            observations: 1,
            deliveries: 1,
            notifications: 1
        }
    );

    let kept: Vec<i64> = store
        .recent_observations(&id, Timestamp(0))
        .await
        .unwrap()
        .iter()
        .map(|o| o.observation.at.as_millis())
        .collect();
    assert_eq!(kept, [now - 30 * DAY, now - DAY]);
    assert_eq!(
        store.pending_count().await.unwrap(),
        1,
        "undelivered alerts are never pruned"
    );
    let due = store.due_deliveries(Timestamp(now), 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [old_pending]);
    assert!(
        !store
            .was_notified(&Subject::Check(id.clone()), "old", AlertEvent::Firing, 0)
            .await
            .unwrap()
    );
    assert!(
        store
            .was_notified(&Subject::Check(id.clone()), "new", AlertEvent::Firing, 0)
            .await
            .unwrap()
    );

    assert_eq!(store.prune(cutoff).await.unwrap(), PruneStats::default());
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_not_downgraded() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).close().await.unwrap();
    let db = dir.path().join(DB_FILE);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);

    let err = Store::open(dir.path()).expect_err("newer schema must fail");
    match &err {
        StoreError::NewerSchema { found, known, .. } => {
            assert_eq!((*found, *known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(err.to_string().contains(&db.display().to_string()));
    assert!(db.exists(), "the newer database is left in place");
    assert!(corrupt_files(dir.path()).is_empty(), "and not moved aside");
}

/// The `pom.db.corrupt-*` files in `dir`.
fn corrupt_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pom.db.corrupt-"))
        .collect();
    names.sort();
    names
}

/// Opens a store over a planted bad `pom.db` and checks that it was moved aside and that the
/// fresh database works.
async fn assert_recovers_from(dir: &Path, original: &[u8]) {
    let (store, _) = Store::open(dir).expect("a corrupt database must not stop the agent");
    let aside = store
        .moved_aside()
        .expect("the corrupt database was moved aside")
        .to_owned();
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("pom.db.corrupt-"),
        "{aside:?}"
    );
    // Compared without printing: the files are large.
    assert!(
        std::fs::read(&aside).unwrap() == original,
        "the corrupt database is moved aside untouched"
    );
    assert!(
        corrupt_files(dir).contains(&aside.file_name().unwrap().to_string_lossy().into_owned())
    );

    // The fresh database works.
    store.record_ping("p", Timestamp(7)).await.unwrap();
    store.record_observation("a", &obs("site/health", Status::Operational, Some(1), 9));
    assert_eq!(
        store
            .recent_observations(&check("site/health"), Timestamp(0))
            .await
            .unwrap()
            .len(),
        1
    );
    let store = reopen(store, dir).await;
    assert!(store.moved_aside().is_none(), "the fresh database is kept");
    assert_eq!(store.last_ping("p").await.unwrap(), Some(Timestamp(7)));
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_text_file_database_is_moved_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"this is not a database\n".repeat(300);
    std::fs::write(dir.path().join(DB_FILE), &text).unwrap();
    assert_recovers_from(dir.path(), &text).await;
}

#[tokio::test]
async fn a_random_bytes_database_is_moved_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // xorshift64: deterministic noise without a random-number crate.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(dir.path().join(DB_FILE), &noise).unwrap();
    assert_recovers_from(dir.path(), &noise).await;
}

#[tokio::test]
async fn a_database_with_damaged_pages_is_moved_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..2_000 {
        store.record_observation(
            "a",
            &obs("site/health", Status::Operational, Some(i), i as i64),
        );
    }
    store
        .enqueue("hook", &alert("x"), Timestamp(1))
        .await
        .unwrap();
    store.close().await.unwrap();

    // Keep the header page, scribble over everything after it.
    let db = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "the database has data pages");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i % 251) as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    assert_recovers_from(dir.path(), &bytes).await;
}

#[tokio::test]
async fn a_database_with_a_foreign_schema_is_moved_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE observations (something_else BLOB); INSERT INTO observations VALUES (x'00');",
    )
    .unwrap();
    drop(conn);
    let original = std::fs::read(&db).unwrap();
    assert_recovers_from(dir.path(), &original).await;
}

#[tokio::test]
async fn record_observation_never_waits_on_the_database() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    // Another connection holds the write lock, as another process could: the store thread is
    // stuck in SQLite's busy wait (5 s per attempt) while we record.
    let blocker = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let observation = obs("site/health", Status::Operational, Some(12), 1);
    let start = Instant::now();
    for _ in 0..N {
        store.record_observation("astra", &observation);
    }
    let elapsed = start.elapsed();
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);

    // A call that waited for the database would have waited out at least one busy timeout.
    assert!(
        elapsed < Duration::from_secs(5),
        "{N} calls took {elapsed:?}"
    );
    assert!(
        store.dropped_observations() > 0,
        "a blocked store drops and counts, it does not block"
    );

    store.close().await.unwrap();
    let dropped = store.dropped_observations();
    let store = open(dir.path());
    let stored = store
        .recent_observations(&check("site/health"), Timestamp(0))
        .await
        .unwrap()
        .len();
    assert_eq!(
        u64::try_from(stored).unwrap() + dropped,
        N as u64,
        "stored {stored} + dropped {dropped}"
    );
    assert!(stored > 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_store_survives_write_errors_and_retries_kept_observations() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = check("site/health");
    store.record_observation("a", &obs("site/health", Status::Operational, Some(1), 1));

    // Every write now fails for real inside SQLite (SQLITE_READONLY).
    store.set_query_only_for_tests(true).await.unwrap();
    for at in 2..=11 {
        store.record_observation("a", &obs("site/health", Status::Operational, Some(1), at));
    }
    let err = store
        .record_ping("p", Timestamp(1))
        .await
        .expect_err("a write fails while the database is read-only");
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    // The thread is alive and reads still answer.
    assert_eq!(
        store
            .recent_observations(&id, Timestamp(0))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.last_ping("p").await.unwrap(), None);

    // Writable again: the kept observations are written on a following round.
    store.set_query_only_for_tests(false).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = store
            .recent_observations(&id, Timestamp(0))
            .await
            .unwrap()
            .len();
        if n == 11 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kept observations never written: {n} of 11"
        );
        tokio::task::yield_now().await;
    }
    store.record_ping("p", Timestamp(1)).await.unwrap();
    assert_eq!(store.dropped_observations(), 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn close_flushes_and_a_closed_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let clone = store.clone();
    for at in 0..500 {
        clone.record_observation("a", &obs("site/health", Status::Operational, None, at));
    }
    store.close().await.unwrap();
    // Closing again (from any clone) is fine; using a closed store is an error, not a hang.
    clone.close().await.unwrap();
    assert!(matches!(
        clone.pending_count().await,
        Err(StoreError::Closed)
    ));
    let before = clone.dropped_observations();
    clone.record_observation("a", &obs("site/health", Status::Operational, None, 1));
    assert_eq!(clone.dropped_observations(), before + 1);

    let store = open(dir.path());
    let stored = store
        .recent_observations(&check("site/health"), Timestamp(0))
        .await
        .unwrap()
        .len();
    assert_eq!(stored as u64 + before, 500);
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_latest_alert_of_an_incident_is_found_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(
        store.last_alert("i-1", AlertEvent::Firing).await.unwrap(),
        None
    );
    let first = alert("i-1");
    let mut reminder = alert("i-1");
    reminder.repeat = 1;
    let mut resolved = alert("i-1");
    resolved.event = AlertEvent::Resolved;
    for a in [&first, &reminder, &alert("i-2"), &resolved] {
        store.enqueue("hook", a, Timestamp(1)).await.unwrap();
    }
    let store = reopen(store, dir.path()).await;
    assert_eq!(
        store.last_alert("i-1", AlertEvent::Firing).await.unwrap(),
        Some(reminder),
        "the newest firing of that incident"
    );
    assert_eq!(
        store.last_alert("i-1", AlertEvent::Resolved).await.unwrap(),
        Some(resolved)
    );
    assert_eq!(
        store.last_alert("i-3", AlertEvent::Firing).await.unwrap(),
        None
    );
}
