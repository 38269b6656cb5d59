//! The outbox against a real webhook receiver and a real SQLite store: an alert survives a
//! channel outage and an agent restart, and each channel receives it exactly once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use mesh_proto::{AlertEvent, AlertKind, Status, Timestamp};
use pom::alert::Alert;
use pom::alert::channel::Channel;
use pom::alert::outbox::{Backoff, Outbox};
use pom::config;
use pom::store::Store;
use pom::testbed::http::TestServer;
use tokio::sync::watch;

/// A webhook receiver that answers each request with the next scripted status (then 200), and
/// records what it was sent.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<VecDeque<u16>>>,
    always: Arc<Mutex<Option<u16>>>,
    seen: Arc<Mutex<Vec<(u16, serde_json::Value)>>>,
}

impl Receiver {
    fn answering(script: &[u16]) -> Self {
        let r = Self::default();
        r.script.lock().unwrap().extend(script);
        r
    }

    fn fail_always(&self, status: Option<u16>) {
        *self.always.lock().unwrap() = status;
    }

    fn seen(&self) -> Vec<(u16, serde_json::Value)> {
        self.seen.lock().unwrap().clone()
    }

    fn accepted(&self) -> usize {
        self.seen().iter().filter(|(s, _)| *s == 200).count()
    }

    async fn serve(&self) -> TestServer {
        async fn hook(State(r): State<Receiver>, body: String) -> StatusCode {
            let status = (*r.always.lock().unwrap())
                .or_else(|| r.script.lock().unwrap().pop_front())
                .unwrap_or(200);
            let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            r.seen.lock().unwrap().push((status, json));
            StatusCode::from_u16(status).unwrap()
        }
        TestServer::http(
            Router::new()
                .route("/hook", post(hook))
                .with_state(self.clone()),
        )
        .await
        .unwrap()
    }
}

fn webhook(name: &str, server: &TestServer) -> Channel {
    let text = format!(
        "[[alerts.channels]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\n",
        server.port()
    );
    let config = config::parse(&text, "t.toml", None).unwrap();
    Channel::from_config(&config.alerts.channels[0], &|_: &str| None).unwrap()
}

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp(i64::try_from(ms).unwrap())
}

fn alert() -> Alert {
    Alert {
        version: 1,
        event: AlertEvent::Firing,
        alert: AlertKind::Health,
        target: "shop".into(),
        check: "shop/health".into(),
        status: Status::Error,
        summary: "GET /api/health returned 502".into(),
        detail: "GET /api/health returned 502 Bad Gateway, expected 2xx".into(),
        since: time::OffsetDateTime::now_utc(),
        incident: "shop/health@1".into(),
        confirmed_by: vec!["edge".into()],
        agents_total: 1,
        sent_by: "edge".into(),
        runbook: "https://runbook.example/runbook.md#health-status-change".into(),
        repeat: 0,
    }
}

const FAST: Backoff = Backoff {
    base: Duration::from_millis(20),
    max: Duration::from_millis(200),
};

/// Polls `condition` every few milliseconds until it holds or the deadline passes.
async fn poll_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "deadline passed waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await; // poll interval, bounded by the deadline
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(outbox: &Outbox) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(
        outbox
            .clone()
            .with_poll(Duration::from_millis(10))
            .run(now, stop_rx),
    );
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_survives_a_channel_outage_and_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let receiver = Receiver::answering(&[500, 503, 500]);
    let server = receiver.serve().await;
    let outbox = Outbox::new(store.clone(), vec![webhook("hook", &server)], FAST);
    let running = start(&outbox);

    outbox.enqueue(&alert(), now()).await.unwrap();
    poll_until("the delivery to be marked", || {
        let store = store.clone();
        async move { store.pending_count().await.unwrap() == 0 }
    })
    .await;
    running.stop().await;

    let seen = receiver.seen();
    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [500, 503, 500, 200],
        "three failures, then exactly one delivery"
    );
    let expected = serde_json::to_value(alert_with_since(&seen[3].1)).unwrap();
    assert!(
        seen.iter().all(|(_, body)| *body == expected),
        "every attempt carried the payload"
    );
    store.close().await.unwrap();
}

/// The test alert with the `since` that was actually sent (it is taken at construction time).
fn alert_with_since(sent: &serde_json::Value) -> Alert {
    let mut a = alert();
    a.since = serde_json::from_value::<Alert>(sent.clone()).unwrap().since;
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undelivered_alert_survives_a_restart_and_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    receiver.fail_always(Some(500));
    let server = receiver.serve().await;

    // First life: the channel is down the whole time.
    let (store, _) = Store::open(dir.path()).unwrap();
    let outbox = Outbox::new(store.clone(), vec![webhook("hook", &server)], FAST);
    let running = start(&outbox);
    outbox.enqueue(&alert(), now()).await.unwrap();
    poll_until("a few failed attempts", || {
        let n = receiver.seen().len();
        async move { n >= 2 }
    })
    .await;
    running.stop().await;
    store.close().await.unwrap();
    assert_eq!(receiver.accepted(), 0);

    // Second life: the alert is still owed, and the channel is back.
    receiver.fail_always(None);
    let (store, _) = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.pending_count().await.unwrap(),
        1,
        "the alert survived the restart"
    );
    let outbox = Outbox::new(store.clone(), vec![webhook("hook", &server)], FAST);
    let running = start(&outbox);
    poll_until("delivery after the restart", || {
        let store = store.clone();
        async move { store.pending_count().await.unwrap() == 0 }
    })
    .await;
    running.stop().await;
    assert_eq!(receiver.accepted(), 1, "delivered exactly once");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_channel_is_retried_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let up = Receiver::default();
    let down = Receiver::default();
    down.fail_always(Some(502));
    let (up_server, down_server) = (up.serve().await, down.serve().await);
    let outbox = Outbox::new(
        store.clone(),
        vec![webhook("up", &up_server), webhook("down", &down_server)],
        FAST,
    );
    let running = start(&outbox);
    outbox.enqueue(&alert(), now()).await.unwrap();
    poll_until("the failing channel to be retried", || {
        let n = down.seen().len();
        async move { n >= 3 }
    })
    .await;
    running.stop().await;
    assert_eq!(
        up.seen().len(),
        1,
        "the healthy channel got it once, not once per retry"
    );
    assert_eq!(
        store.pending_count().await.unwrap(),
        1,
        "still owed to the failing channel"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_failure_is_kept_at_the_longest_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    let receiver = Receiver::default();
    receiver.fail_always(Some(400));
    let server = receiver.serve().await;
    let slow = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_secs(3600),
    };
    let outbox = Outbox::new(store.clone(), vec![webhook("hook", &server)], slow);
    outbox.enqueue(&alert(), now()).await.unwrap();
    let first = outbox.deliver_due(now()).await.unwrap();
    assert_eq!((first.delivered, first.failed), (0, 1));
    // Not due again soon: a 400 waits for the longest backoff, but is not dropped.
    let again = outbox.deliver_due(now().add_millis(60_000)).await.unwrap();
    assert_eq!((again.delivered, again.failed), (0, 0));
    assert_eq!(store.pending_count().await.unwrap(), 1);
    assert_eq!(receiver.seen().len(), 1);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transition_is_queued_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Receiver::default(), Receiver::default());
    let (sa, sb) = (a.serve().await, b.serve().await);
    let check = mesh_proto::Subject::Check("shop/health".parse().unwrap());
    let firing = alert();

    let (store, _) = Store::open(dir.path()).unwrap();
    let outbox = Outbox::new(
        store.clone(),
        vec![webhook("a", &sa), webhook("b", &sb)],
        FAST,
    );
    assert!(outbox.notify(&check, &firing, None, now()).await.unwrap());
    assert!(
        !outbox.notify(&check, &firing, None, now()).await.unwrap(),
        "already logged"
    );
    assert_eq!(
        store.pending_count().await.unwrap(),
        2,
        "one row per channel"
    );
    store.close().await.unwrap();

    // After a restart (as after kill -9: the rows were committed before anything was sent).
    let (store, _) = Store::open(dir.path()).unwrap();
    let outbox = Outbox::new(
        store.clone(),
        vec![webhook("a", &sa), webhook("b", &sb)],
        FAST,
    );
    assert!(
        !outbox.notify(&check, &firing, None, now()).await.unwrap(),
        "not paged again"
    );
    let mut resolved = firing.clone();
    resolved.event = AlertEvent::Resolved;
    resolved.status = Status::Operational;
    assert!(outbox.notify(&check, &resolved, None, now()).await.unwrap());
    let round = outbox.deliver_due(now()).await.unwrap();
    assert_eq!(round.delivered, 4);
    let events = |r: &Receiver| -> Vec<String> {
        r.seen()
            .iter()
            .map(|(_, body)| body["event"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(events(&a), ["firing", "resolved"]);
    assert_eq!(events(&b), ["firing", "resolved"]);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_logs_nothing_and_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let server = receiver.serve().await;
    let check = mesh_proto::Subject::Check("shop/health".parse().unwrap());
    let (store, _) = Store::open(dir.path()).unwrap();
    let outbox = Outbox::new(store.clone(), vec![webhook("hook", &server)], FAST);

    store.set_query_only_for_tests(true).await.unwrap();
    assert!(outbox.notify(&check, &alert(), None, now()).await.is_err());
    store.set_query_only_for_tests(false).await.unwrap();
    // Neither half was kept: the transition is still new, and nothing was queued before it.
    assert_eq!(store.pending_count().await.unwrap(), 0);
    assert!(outbox.notify(&check, &alert(), None, now()).await.unwrap());
    assert_eq!(store.pending_count().await.unwrap(), 1);
    store.close().await.unwrap();
}
