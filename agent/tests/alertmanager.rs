//! The `alertmanager` channel against a real Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`, which CI installs): a firing alert shows up as one active alert
//! with the channel's labels and annotations, and the resolve of the same incident ends it.
//! Without the binary the test says so on stderr and passes.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use mesh_proto::{AlertEvent, AlertKind, Status};
use pom::alert::Alert;
use pom::alert::channel::Channel;
use pom::alert::payload::PAYLOAD_VERSION;
use pom::config;
use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpStream;

/// How often a readiness poll asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// How long Alertmanager gets to become ready, and each request to answer.
const DEADLINE: Duration = Duration::from_secs(20);

/// A route to a receiver that notifies nobody: the test only reads the alert store.
const CONFIG: &str = "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n";

// ----- the Alertmanager process --------------------------------------------------------------

/// A running Alertmanager on a loopback port, killed on drop.
#[derive(Debug)]
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager in a fresh directory, without clustering, and waits until
    /// `GET /-/ready` answers 200.
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, CONFIG).expect("write config");
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("local addr")
        };
        let log = File::create(dir.path().join("alertmanager.log")).expect("log file");
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!("--web.external-url=http://{addr}/"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("alertmanager starts");
        let mut am = Self { child, addr, dir };
        am.wait_ready().await;
        am
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(exit) = self.child.try_wait().expect("child status") {
                panic!("alertmanager exited with {exit}:\n{}", self.log());
            }
            // Refused or not ready yet: poll again until the deadline.
            if let Ok(Ok((StatusCode::OK, _))) =
                tokio::time::timeout(Duration::from_secs(1), get(self.addr, "/-/ready")).await
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready on {} after {DEADLINE:?}:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `GET /api/v2/alerts{query}`, as a JSON array.
    async fn alerts(&self, query: &str) -> Vec<Value> {
        let path = format!("/api/v2/alerts{query}");
        let (status, body) = tokio::time::timeout(DEADLINE, get(self.addr, &path))
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no answer within {DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, StatusCode::OK, "GET {path}: {body:?}");
        match serde_json::from_slice(&body) {
            Ok(Value::Array(alerts)) => alerts,
            other => panic!("GET {path}: not a JSON array: {other:?}"),
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET of `path` on `addr`: the status and the whole body.
async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), hyper::Error> {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        // Not listening yet reads as "not ready"; the caller's deadline decides.
        Err(_) => return Ok((StatusCode::SERVICE_UNAVAILABLE, Bytes::new())),
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

// ----- channel and alerts (as in tests/channels.rs) ------------------------------------------

fn channel(am: &Alertmanager) -> Channel {
    let text = format!(
        "[[alerts.channels]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"{}\"\n",
        am.url()
    );
    let config = config::parse(&text, "t.toml", None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let entry = config
        .alerts
        .channels
        .into_iter()
        .next()
        .expect("one channel");
    Channel::from_config(&entry, &|_| None).expect("channel builds")
}

/// A firing health alert whose incident started ten minutes ago: Alertmanager only ends an
/// alert whose `endsAt` is past, and the channel's `endsAt` is never before `since`.
fn firing() -> Alert {
    let since = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(600);
    Alert {
        version: PAYLOAD_VERSION,
        event: AlertEvent::Firing,
        alert: AlertKind::Health,
        target: "makenot.work".into(),
        check: "makenot.work/health".into(),
        status: Status::Error,
        summary: "GET /api/health returned 502".into(),
        detail: "GET /api/health returned 502 Bad Gateway, expected 200".into(),
        since,
        incident: format!("makenot.work/health@{}", since.unix_timestamp() * 1000),
        confirmed_by: vec!["astra".into(), "hetzner".into()],
        agents_total: 2,
        sent_by: "astra".into(),
        runbook: "https://git.example.com/runbook.md#health-status-change".into(),
        repeat: 0,
    }
}

/// The resolve of the same incident, sent by another agent.
fn resolved(firing: &Alert) -> Alert {
    Alert {
        event: AlertEvent::Resolved,
        status: Status::Operational,
        summary: "GET /api/health returned 200".into(),
        sent_by: "hetzner".into(),
        ..firing.clone()
    }
}

#[track_caller]
fn time(value: &Value) -> OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("{text}: {e}"))
}

// ----- the test ------------------------------------------------------------------------------

#[tokio::test]
async fn real_alertmanager_shows_the_firing_alert_and_ends_it_on_resolve() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !Path::new(BINARY).exists() {
        eprintln!(
            "SKIPPED: {BINARY} is not installed (apt-get install prometheus-alertmanager); \
             CI installs it"
        );
        return;
    }
    let am = Alertmanager::start().await;
    let channel = channel(&am);
    let firing = firing();

    channel.deliver(&firing).await.expect("firing delivered");
    let alerts = am.alerts("").await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let got = &alerts[0];
    assert_eq!(
        got["labels"],
        json!({
            "alertname": "pom_health",
            "alert": "health",
            "check": "makenot.work/health",
            "target": "makenot.work",
            "severity": "critical",
        })
    );
    let annotations = &got["annotations"];
    assert_eq!(annotations["summary"], "GET /api/health returned 502");
    assert_eq!(
        annotations["description"],
        "GET /api/health returned 502 Bad Gateway, expected 200"
    );
    assert_eq!(
        annotations["runbook_url"],
        "https://git.example.com/runbook.md#health-status-change"
    );
    assert_eq!(annotations["status"], "error");
    assert_eq!(annotations["sent_by"], "astra");
    assert_eq!(annotations["incident"], firing.incident.as_str());
    assert_eq!(annotations["confirmed_by"], "astra, hetzner");
    assert_eq!(
        got["generatorURL"],
        "https://git.example.com/runbook.md#health-status-change"
    );
    assert_eq!(got["status"]["state"], "active", "{got:#}");
    assert_eq!(got["receivers"], json!([{ "name": "null" }]));
    assert_eq!(time(&got["startsAt"]), firing.since);
    // No endsAt was sent: Alertmanager sets it to now + resolve_timeout.
    assert!(time(&got["endsAt"]) > OffsetDateTime::now_utc(), "{got:#}");

    channel
        .deliver(&resolved(&firing))
        .await
        .expect("resolve delivered");
    // The resolve carries other annotations and another sender but the same labels, so it
    // ends the firing alert rather than adding a second one. Alertmanager keeps the ended
    // alert in its store until GC, but the v2 API never lists an alert whose endsAt is past,
    // whatever the filters: an empty list, even with every filter on, means it ended.
    let all = "?active=true&silenced=true&inhibited=true&unprocessed=true";
    let alerts = am.alerts(all).await;
    assert!(
        alerts.is_empty(),
        "still listed after the resolve: {alerts:#?}"
    );
}
