//! Helpers shared by the process-level tests: a webhook sink, a target whose answer can be
//! changed, a `pom run` child process, and polling with a deadline.
//!
//! Every wait polls a condition with a deadline; nothing sleeps to wait and nothing is retried.
#![allow(dead_code, unreachable_pub)] // each test binary uses a part of it

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use pom::testbed::http::TestServer;
use serde_json::Value;

pub const TOKEN: &str = "test-token-7f3a";
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A webhook receiver that records every alert and can be told to fail.
#[derive(Clone, Default)]
pub struct Sink {
    pub alerts: Arc<Mutex<Vec<Value>>>,
    pub failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Sink {
    pub async fn start() -> (Self, TestServer) {
        let sink = Self::default();
        let router = Router::new()
            .route("/hook/{secret}", post(receive))
            .with_state(sink.clone());
        (sink, TestServer::http(router).await.unwrap())
    }

    pub fn alerts(&self) -> Vec<Value> {
        self.alerts.lock().unwrap().clone()
    }

    /// Alerts matching `check` and `event`.
    pub fn count(&self, check: &str, event: &str) -> usize {
        self.alerts()
            .iter()
            .filter(|a| a["check"] == check && a["event"] == event)
            .count()
    }
}

pub async fn receive(State(sink): State<Sink>, body: String) -> StatusCode {
    if sink.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let mut alert: Value = serde_json::from_str(&body).expect("the webhook body is JSON");
    alert["received_ms"] = now_ms().into();
    sink.alerts.lock().unwrap().push(alert);
    StatusCode::OK
}

/// An HTTP receiver of Alertmanager's v2 API: records every posted alert list.
#[derive(Clone, Default)]
pub struct AlertmanagerSink {
    pub posts: Arc<Mutex<Vec<Value>>>,
}

impl AlertmanagerSink {
    pub async fn start() -> (Self, TestServer) {
        let sink = Self::default();
        let router = Router::new()
            .route("/api/v2/alerts", post(receive_alerts))
            .with_state(sink.clone());
        (sink, TestServer::http(router).await.unwrap())
    }

    /// The config of a channel `am` posting to `server`.
    pub fn channel(server: &TestServer) -> String {
        format!(
            "[[alerts.channels]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://{}\"\n\n",
            server.addr()
        )
    }

    /// Every alert posted, in order, with the check it is about (label `check`).
    pub fn alerts(&self, check: &str) -> Vec<Value> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .flat_map(|post| post.as_array().cloned().unwrap_or_default())
            .filter(|a| a["labels"]["check"] == check)
            .collect()
    }
}

async fn receive_alerts(State(sink): State<AlertmanagerSink>, body: String) -> StatusCode {
    let alerts: Value = serde_json::from_str(&body).expect("Alertmanager gets JSON");
    sink.posts.lock().unwrap().push(alerts);
    StatusCode::OK
}

/// A target whose health answer (status code, delay) can be changed.
#[derive(Clone)]
pub struct Target {
    pub status: Arc<AtomicU16>,
    pub delay_ms: Arc<AtomicU16>,
}

impl Target {
    pub async fn start() -> (Self, TestServer) {
        let target = Self {
            status: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU16::new(0)),
        };
        let router = Router::new()
            .route("/health", get(answer))
            .with_state(target.clone());
        (target, TestServer::http(router).await.unwrap())
    }

    pub fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

pub async fn answer(State(t): State<Target>) -> StatusCode {
    let delay = t.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        // The server is slow on purpose: this is the latency under test, not a wait.
        tokio::time::sleep(Duration::from_millis(delay.into())).await;
    }
    StatusCode::from_u16(t.status.load(Ordering::SeqCst)).unwrap()
}

pub fn now_ms() -> i64 {
    pom::monitor::now().as_millis()
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A running `pom run`, killed on drop.
pub struct Agent {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub api: String,
    pub extra_env: Vec<(String, String)>,
}

impl Agent {
    pub fn config_path(dir: &Path) -> PathBuf {
        dir.join("pom.toml")
    }

    /// Writes `body` (everything after `[agent]`) and starts the agent.
    pub fn start(dir: &Path, body: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::start_named(dir, "edge", body, extra_env)
    }

    /// Like [`start`](Self::start), for the agent `name`.
    pub fn start_named(dir: &Path, name: &str, body: &str, extra_env: &[(&str, &str)]) -> Self {
        let mut agent = Self::launch(dir, name, body, extra_env);
        agent.wait_ready();
        agent
    }

    /// Writes the config and starts the process without waiting for it (so that several agents
    /// start together); call [`wait_ready`](Self::wait_ready).
    pub fn launch(dir: &Path, name: &str, body: &str, extra_env: &[(&str, &str)]) -> Self {
        let port = closed_port();
        let config = format!(
            "[agent]\nname = \"{name}\"\ndata_dir = \"{}\"\napi_listen = \"127.0.0.1:{port}\"\n\n{body}",
            dir.join("data").display()
        );
        std::fs::write(Self::config_path(dir), config).unwrap();
        let mut agent = Self {
            child: None,
            dir: dir.to_owned(),
            api: format!("http://127.0.0.1:{port}"),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        agent.launch_process();
        agent
    }

    /// Starts the process again (after [`kill9`](Self::kill9)) and waits for its API.
    pub fn spawn(&mut self) {
        self.launch_process();
        self.wait_ready();
    }

    fn launch_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_pom"))
                .args(["run", "--config"])
                .arg(Self::config_path(&self.dir))
                .env_clear()
                .env("POM_API_TOKEN", TOKEN)
                .env("POM_LOG", "info")
                .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    /// Waits until the API answers; fails if the process exits.
    pub fn wait_ready(&mut self) {
        let api = self.api.clone();
        poll("the agent's API to answer", || {
            if let Some(status) = self.child().try_wait().unwrap() {
                panic!("the agent exited with {status}:\n{}", self.log());
            }
            health(&api).is_some()
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the agent was started")
    }

    pub fn kill9(&mut self) {
        self.child().kill().unwrap();
        self.child().wait().unwrap();
    }

    pub fn signal(&mut self, signal: &str) {
        let pid = self.child().id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    /// `pom_probe_runs_total` from /metrics.
    pub fn runs(&self) -> u64 {
        let text = http_get(&format!("{}/metrics", self.api), None).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("pom_probe_runs_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// `pom_alerts_sent_total` of `channel`: deliveries the agent has recorded as done.
    pub fn sent(&self, channel: &str) -> u64 {
        let text = http_get(&format!("{}/metrics", self.api), None).unwrap_or_default();
        let prefix = format!("pom_alerts_sent_total{{channel=\"{channel}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until `n` more probe runs have started: time passing, measured in work done.
    pub fn wait_runs(&self, n: u64) {
        let target = self.runs() + n;
        poll(&format!("{n} more probe runs"), || self.runs() >= target);
    }

    pub fn status(&self) -> Value {
        let body = http_get(&format!("{}/api/status", self.api), Some(TOKEN)).unwrap();
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
    }
}

/// A blocking GET with a short timeout (the tests' own tiny client).
pub fn http_get(url: &str, token: Option<&str>) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

pub fn health(api: &str) -> Option<Value> {
    serde_json::from_str(&http_get(&format!("{api}/api/health"), None)?).ok()
}

/// Polls `condition` every 20 ms until it holds; fails after [`DEADLINE`].
pub fn poll(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20)); // poll interval, not a wait
    }
}

/// The webhook channel; its URL (with a secret path) comes from `HOOK_URL`.
pub const WEBHOOK: &str =
    "[[alerts.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl_env = \"HOOK_URL\"\n\n";

pub fn hook_url(sink: &TestServer) -> String {
    format!("http://{}/hook/SECRET-PATH-91c2", sink.addr())
}

pub fn target(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[targets]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}\"\n{extra}\n  [targets.health]\n  path = \"/health\"\n  interval = \"1s\"\n  timeout = \"500ms\"\n\n"
    )
}

pub fn alerts_section(cooldown: &str) -> String {
    format!(
        "[alerts]\ncooldown = \"{cooldown}\"\nrunbook_base = \"https://runbook.example/runbook.md\"\n\n"
    )
}
