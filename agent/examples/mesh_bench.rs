//! The mesh benchmark (`bench/mesh.sh`; results and how to read them: docs/benchmarks.md, "Mesh").
//!
//! Usage: `mesh_bench [--pom PATH] [--keep] [all|latency|idle|reconnect] [OPTIONS]`
//!
//! Starts three real `pom run` processes (`astra`, `edge`, `vps`) on 127.0.0.1, each in its own
//! directory with its own certificate from a throw-away mesh CA (`pom::pki`), its own data
//! directory and free ports, talking mutual-TLS QUIC to each other. Three measurements, each on a
//! fresh mesh:
//!
//! - **latency**: how long from the first failing probe to the confirmed `firing` webhook. There
//!   are `--targets` (12) targets, taken down in turn: each its own check id, so its own probe
//!   phase against the notifier's 500 ms monitor round (one check would meet it at one of three
//!   phases only). Each target is a TCP listener this harness controls: while *up* it answers
//!   `200` to any request;
//!   while *down* it accepts each connection, reads the request for at most 20 ms (only to learn
//!   which agent sent it, from the User-Agent), then resets it (`SO_LINGER` 0 and close, so the
//!   probe sees ECONNRESET: `unreachable`). Every accepted connection is recorded with its time,
//!   so "the first failing probe" is the first connection accepted after the switch to down,
//!   measured. The webhook receiver runs in this process too and records arrival times with the
//!   same clock. Each incident: switch down, wait for the `firing`, switch up, wait for the
//!   `resolved`, wait until every agent's own status is `operational` again and `--gap` has
//!   passed since the `resolved` (so ProbeNow's 2 s rate limit does not carry over), repeat.
//!   The agents are started `interval / 3` apart, as hosts started at different times would be,
//!   so their scheduled probes fall at different phases and the first failure is seen by one
//!   agent alone: the others probe because of its ProbeNow.
//! - **idle**: UDP bytes per peer of a mesh at the default heartbeat (60 s, QUIC keep-alive 2 s),
//!   one target at the default 5 m interval, over `--idle-window` seconds: the difference of
//!   `pom_mesh_udp_bytes_total{peer,direction}` of every agent, sampled every 10 s (the counter
//!   belongs to the current connection, so a sample that goes down means a reconnect and fails
//!   the run). Then the same with `--busy-checks` checks at 10 s over `--busy-window` seconds
//!   (observations are mesh traffic too).
//! - **reconnect**: `kill -9` one agent (in turn `vps`, `edge`, `astra`), start it again at once,
//!   and measure from the spawn to each of the two others showing it in `/api/mesh` as `alive`,
//!   `connected`, with a `last_heartbeat` newer than before the kill (polled every 10 ms). The
//!   heartbeat condition matters: at the default heartbeat a killed peer stays `alive` for 3 min,
//!   so `alive` alone says nothing about a reconnect. Then `--blips` times a network blip:
//!   `SIGSTOP` one agent until both others have dropped its connection (QUIC idle timeout, 10 s),
//!   `SIGCONT` it, and measure the same way from the `SIGCONT`. Before each kill and each
//!   `SIGCONT` the harness pauses a random 0–1 s: the poll before it ends just after a monitor
//!   round, and acting at once would always meet the observers' rounds at the same phase.
//!
//! Every wait is a poll of a condition with a deadline. Progress goes to stderr; the summary
//! tables, the command lines and the config go to stdout. Test traffic stays on loopback.
//!
//! The `pom` binary: `--pom`, else `$POM_BIN`, else `target/release/pom`, else
//! `target/debug/pom` (relative to the current directory).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use clap::{Parser, ValueEnum};
use pom::testbed::http::TestServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The agents, in name order: `astra` is the notifier while it lives.
const NAMES: [&str; 3] = ["astra", "edge", "vps"];
/// The API token of every agent.
const TOKEN: &str = "mesh-bench-token-5d1e";
/// How long the down target waits for a request before it resets the connection.
const PEEK: Duration = Duration::from_millis(20);

#[derive(Debug, Parser)]
#[command(about = "Benchmark of a 3-agent PoM mesh on loopback (docs/benchmarks.md, \"Mesh\")")]
struct Args {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    what: What,
    /// The `pom` binary (else $POM_BIN, target/release/pom, target/debug/pom).
    #[arg(long, env = "POM_BIN")]
    pom: Option<PathBuf>,
    /// Keep the scratch directory (configs, data, agent logs).
    #[arg(long)]
    keep: bool,
    /// latency: incidents to measure.
    #[arg(long, default_value_t = 60)]
    incidents: usize,
    /// latency: targets, each with its own listener and health check, taken down in turn.
    #[arg(long, default_value_t = 12)]
    targets: usize,
    /// latency: the health checks' interval, in seconds.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// latency: the health check's timeout, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    probe_timeout: u64,
    /// latency: `[alerts] cooldown`, in seconds.
    #[arg(long, default_value_t = 1)]
    cooldown: u64,
    /// latency: least seconds between a `resolved` and the next switch to down.
    #[arg(long, default_value_t = 2.5)]
    gap: f64,
    /// idle: seconds of the idle window (default heartbeat, one check at 5 m).
    #[arg(long, default_value_t = 180)]
    idle_window: u64,
    /// idle: seconds of the busy window (0 skips it).
    #[arg(long, default_value_t = 120)]
    busy_window: u64,
    /// idle: checks at 10 s in the busy window.
    #[arg(long, default_value_t = 10)]
    busy_checks: usize,
    /// reconnect: kill -9 and restart this many times.
    #[arg(long, default_value_t = 12)]
    restarts: usize,
    /// reconnect: SIGSTOP/SIGCONT blips (0 skips them).
    #[arg(long, default_value_t = 3)]
    blips: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum What {
    All,
    Latency,
    Idle,
    Reconnect,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pom = find_pom(args.pom.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let scratch = tempfile::Builder::new()
        .prefix("pom-mesh-bench.")
        .tempdir()
        .context("creating the scratch directory")?;
    let ctx = Ctx {
        pom,
        work: scratch.path().to_owned(),
        runtime,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mesh_bench: {}, {} cores ({}), load average at start {}",
        utc_now(),
        std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model(),
        loadavg()
    );
    let _ = writeln!(
        out,
        "harness: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(out, "pom binary: {}", ctx.pom.display());
    println!("{out}");

    let runs = if args.what == What::All {
        vec![What::Latency, What::Idle, What::Reconnect]
    } else {
        vec![args.what]
    };
    let mut verdicts = Vec::new();
    let mut failed = None;
    for what in runs {
        let result = match what {
            What::Latency => latency(&ctx, &args),
            What::Idle => idle(&ctx, &args),
            What::Reconnect => reconnect(&ctx, &args),
            What::All => unreachable!("expanded above"),
        };
        match result {
            Ok(mut v) => verdicts.append(&mut v),
            Err(e) => {
                eprintln!("{what:?} failed: {e:#}");
                failed.get_or_insert(e);
            }
        }
    }
    if !verdicts.is_empty() {
        println!("\n### Against the targets\n");
        println!("| target | measured | verdict |\n|---|---|---|");
        for (target, measured, met) in &verdicts {
            println!(
                "| {target} | {measured} | {} |",
                if *met { "met" } else { "MISSED" }
            );
        }
    }
    println!("\nload average at the end: {}", loadavg());
    if args.keep {
        let kept = scratch.keep();
        eprintln!("scratch directory kept: {}", kept.display());
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What every run needs.
#[derive(Debug)]
struct Ctx {
    pom: PathBuf,
    work: PathBuf,
    runtime: tokio::runtime::Runtime,
}

/// (target, what was measured, met).
type Verdict = (String, String, bool);

// ---------------------------------------------------------------------------------------------
// Time

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn since_ms(later: Instant, earlier: Instant) -> f64 {
    ms(later.saturating_duration_since(earlier))
}

fn utc_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn cpu_pressure() -> String {
    std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("some"))
                .and_then(|l| l.split_whitespace().find(|f| f.starts_with("avg60=")))
                .map(|f| format!("{}%", f.trim_start_matches("avg60=")))
        })
        .unwrap_or_else(|| "n/a".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Polls `check` every `every` until it returns `Some`; fails after `deadline`.
fn poll<T>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() >= end {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(every); // the poll period, not a wait for the condition
    }
}

/// A pause drawn uniformly from `[0, max)` (xorshift, seeded from the clock), so the harness's
/// steps do not keep one phase against the agents' 500 ms monitor rounds.
fn jitter(max: Duration) -> Duration {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| u64::from(d.subsec_nanos()))
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(x % max_us)
}

/// Sorted copy.
fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn mean(xs: &[f64]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let n = xs.len() as f64;
    xs.iter().sum::<f64>() / n
}

// ---------------------------------------------------------------------------------------------
// The target: up (HTTP 200) or down (accept, then reset)

#[derive(Debug, Default)]
struct Target {
    down: AtomicBool,
    conns: Mutex<Vec<Conn>>,
}

/// One accepted connection.
#[derive(Debug, Clone)]
struct Conn {
    at: Instant,
    down: bool,
    /// The agent, from the request's User-Agent (`pom/x.y.z (agent NAME)`).
    agent: Option<String>,
}

impl Target {
    async fn start() -> anyhow::Result<(Arc<Self>, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target = Arc::new(Self::default());
        let t = target.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let at = Instant::now();
                let down = t.down.load(Ordering::SeqCst);
                let index = {
                    let mut conns = lock(&t.conns);
                    conns.push(Conn {
                        at,
                        down,
                        agent: None,
                    });
                    conns.len() - 1
                };
                let t = t.clone();
                tokio::spawn(async move {
                    let agent = if down {
                        refuse(stream).await
                    } else {
                        answer(stream).await
                    };
                    lock(&t.conns)[index].agent = agent;
                });
            }
        });
        Ok((target, addr))
    }

    fn set_down(&self, down: bool) -> Instant {
        let at = Instant::now();
        self.down.store(down, Ordering::SeqCst);
        at
    }

    /// Connections accepted at or after `from`, in order.
    fn since(&self, from: Instant) -> Vec<Conn> {
        let mut v: Vec<Conn> = lock(&self.conns)
            .iter()
            .filter(|c| c.at >= from)
            .cloned()
            .collect();
        v.sort_by_key(|c| c.at);
        v
    }
}

/// Reads the request briefly (to learn the agent), then resets the connection.
async fn refuse(mut stream: tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(PEEK, stream.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let _ = stream.set_zero_linger();
    drop(stream); // SO_LINGER 0: the close sends RST
    agent_of(&buf[..n])
}

/// Reads the request head and answers 200.
async fn answer(mut stream: tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_ok() {
        let _ = stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            )
            .await;
        let _ = stream.shutdown().await;
    }
    agent_of(&buf)
}

fn agent_of(request: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(request);
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("user-agent:"))?;
    let (_, rest) = line.split_once("(agent ")?;
    Some(rest.trim_end_matches(')').trim().to_owned())
}

// ---------------------------------------------------------------------------------------------
// The webhook sink

#[derive(Debug, Clone, Default)]
struct Sink {
    hooks: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Sink {
    async fn start() -> anyhow::Result<(Self, TestServer)> {
        let sink = Self::default();
        let router = Router::new()
            .route("/hook/{secret}", post(receive))
            .with_state(sink.clone());
        Ok((sink, TestServer::http(router).await?))
    }

    fn all(&self) -> Vec<(Instant, Value)> {
        lock(&self.hooks).clone()
    }

    /// Hooks from index `from` on, about `check`, with `event`.
    fn find(&self, from: usize, check: &str, event: &str) -> Vec<(Instant, Value)> {
        lock(&self.hooks)
            .iter()
            .skip(from)
            .filter(|(_, v)| v["check"] == check && v["event"] == event)
            .cloned()
            .collect()
    }

    fn len(&self) -> usize {
        lock(&self.hooks).len()
    }
}

async fn receive(State(sink): State<Sink>, body: String) -> StatusCode {
    let at = Instant::now();
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    lock(&sink.hooks).push((at, value));
    StatusCode::OK
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Agents and the mesh

fn find_pom(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.canonicalize()?)
        } else {
            Err(anyhow!("no pom binary at {}", p.display()))
        };
    }
    for candidate in ["target/release/pom", "target/debug/pom"] {
        let p = Path::new(candidate);
        if p.is_file() {
            return Ok(p.canonicalize()?);
        }
    }
    bail!("no pom binary: pass --pom or POM_BIN, or build it (cargo build --release -p pom)")
}

#[derive(Debug)]
struct Agent {
    name: &'static str,
    home: PathBuf,
    api: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Agent {
    fn config_path(&self) -> PathBuf {
        self.home.join("pom.toml")
    }

    /// Starts `pom run`; returns the time just before the spawn.
    fn spawn(&mut self, pom: &Path) -> anyhow::Result<Instant> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("agent.log"))?;
        let at = Instant::now();
        let child = Command::new(pom)
            .args(["run", "--config"])
            .arg(self.config_path())
            .env_clear()
            .env("POM_API_TOKEN", TOKEN)
            .env("POM_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", pom.display()))?;
        self.child = Some(child);
        Ok(at)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| anyhow!("{} is not running", self.name))
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        let name = self.name;
        let Some(child) = self.child.as_mut() else {
            bail!("{name} is not running");
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited with {status}; log tail:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid()?.to_string();
        let status = Command::new("kill").args([signal, &pid]).status()?;
        if !status.success() {
            bail!("kill {signal} {pid} failed");
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.home.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn get(&self, path: &str, auth: bool) -> Option<String> {
        http_get(&self.api, path, auth.then_some(TOKEN))
    }

    fn json(&self, path: &str) -> Option<Value> {
        serde_json::from_str(&self.get(path, true)?).ok()
    }

    fn metrics(&self) -> Option<String> {
        self.get("/metrics", false)
    }

    /// This agent's view of `peer` in `/api/mesh`.
    fn peer_view(&self, peer: &str) -> Option<Value> {
        let mesh = self.json("/api/mesh")?;
        mesh["peers"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == peer)
            .cloned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A blocking GET on loopback; the body of a 200.
fn http_get(host: &str, path: &str, token: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Three agents with one shared config.
#[derive(Debug)]
struct Mesh {
    agents: Vec<Agent>,
}

impl Mesh {
    /// Writes the configs (`mesh_extra`: extra `[mesh]` keys; `shared`: everything after the
    /// peers) and starts the agents `stagger` apart, in name order.
    fn start(
        ctx: &Ctx,
        label: &str,
        mesh_extra: &str,
        shared: &str,
        hook_url: &str,
        stagger: Duration,
    ) -> anyhow::Result<Self> {
        let dir = ctx.work.join(label);
        let ca = dir.join("ca");
        std::fs::create_dir_all(&dir)?;
        pom::pki::init_ca(&ca, 365, false).context("creating the mesh CA")?;
        let mut udp = Vec::new();
        for _ in NAMES {
            udp.push(free_udp_port()?);
        }
        let mut peers = String::new();
        for (name, port) in NAMES.iter().zip(&udp) {
            let _ = write!(
                peers,
                "[[mesh.peers]]\nname = \"{name}\"\naddr = \"127.0.0.1:{port}\"\n\n"
            );
        }
        let mut agents = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let home = dir.join(name);
            std::fs::create_dir_all(&home)?;
            let certs = home.join("mesh");
            pom::pki::issue(name, &ca, &certs, 30, false)
                .with_context(|| format!("issuing the certificate of {name}"))?;
            let api = format!("127.0.0.1:{}", free_tcp_port()?);
            let config = format!(
                "[agent]\nname = \"{name}\"\ndata_dir = \"{data}\"\napi_listen = \"{api}\"\n\n\
                 [mesh]\nlisten = \"127.0.0.1:{port}\"\nca_cert = \"{c}/ca.crt\"\ncert = \"{c}/node.crt\"\nkey = \"{c}/node.key\"\n\
                 quorum = \"majority\"\n{mesh_extra}\n{peers}{shared}",
                data = home.join("data").display(),
                port = udp[i],
                c = certs.display(),
            );
            std::fs::write(home.join("pom.toml"), config)?;
            agents.push(Agent {
                name,
                home,
                api,
                env: vec![("HOOK_URL".into(), hook_url.into())],
                child: None,
            });
        }
        let mut mesh = Self { agents };
        println!("`{label}` mesh; each agent runs (env POM_API_TOKEN, POM_LOG=info, HOOK_URL):");
        for a in &mesh.agents {
            println!(
                "    {} run --config {}",
                ctx.pom.display(),
                a.config_path().display()
            );
        }
        println!(
            "config of astra (the others differ in [agent] and the certificate paths):\n```toml\n{}```",
            std::fs::read_to_string(mesh.agents[0].config_path())?
        );
        let first = Instant::now();
        for (i, agent) in mesh.agents.iter_mut().enumerate() {
            let due = first + stagger * u32::try_from(i)?;
            // A deliberate offset between the starts (the agents' probe phases), not a wait.
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            agent.spawn(&ctx.pom)?;
        }
        for agent in &mut mesh.agents {
            let api = agent.api.clone();
            poll(
                &format!("{}'s API", agent.name),
                Duration::from_secs(30),
                Duration::from_millis(20),
                || {
                    agent.alive()?;
                    Ok(http_get(&api, "/api/health", None).map(|_| ()))
                },
            )?;
        }
        Ok(mesh)
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        for a in &mut self.agents {
            a.alive()?;
        }
        Ok(())
    }

    /// Waits until every agent sees every other one alive and connected.
    fn wait_connected(&mut self, deadline: Duration) -> anyhow::Result<()> {
        poll(
            "every agent to see the others alive and connected",
            deadline,
            Duration::from_millis(20),
            || {
                self.alive()?;
                let ok = self.agents.iter().all(|a| {
                    NAMES.iter().filter(|n| **n != a.name).all(|peer| {
                        a.peer_view(peer)
                            .is_some_and(|p| p["state"] == "alive" && p["connected"] == true)
                    })
                });
                Ok(ok.then_some(()))
            },
        )
    }

    /// Waits until every agent holds a vote of every agent on every one of `checks`.
    fn wait_votes(&mut self, checks: usize, deadline: Duration) -> anyhow::Result<()> {
        poll(
            "every agent to hold three votes on every check",
            deadline,
            Duration::from_millis(50),
            || {
                self.alive()?;
                let ok = self.agents.iter().all(|a| {
                    a.json("/api/status").is_some_and(|s| {
                        let list = s["checks"].as_array().cloned().unwrap_or_default();
                        list.len() == checks
                            && list.iter().all(|c| {
                                c["votes"]
                                    .as_object()
                                    .is_some_and(|v| v.len() == NAMES.len())
                            })
                    })
                });
                Ok(ok.then_some(()))
            },
        )
    }
}

fn alerts_section(cooldown: &str) -> String {
    format!(
        "[alerts]\ncooldown = \"{cooldown}\"\nrepeat_interval = \"0s\"\nrunbook_base = \"https://runbook.example/runbook.md\"\n\n\
         [[alerts.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl_env = \"HOOK_URL\"\n\n"
    )
}

fn hook_url(sink: &TestServer) -> String {
    format!("http://{}/hook/bench-secret-path", sink.addr())
}

// ---------------------------------------------------------------------------------------------
// 1. Confirmation latency

/// One incident of the latency run.
#[derive(Debug)]
struct Incident {
    /// Switch to down → first failing probe (the schedule's wait; not part of the latency).
    wait_ms: f64,
    /// First failing probe → confirmed firing webhook.
    latency_ms: f64,
    /// First → second agent's first failing probe (the ProbeNow path).
    second_ms: Option<f64>,
    /// First → third agent's first failing probe.
    third_ms: Option<f64>,
    /// Second agent's failing probe → webhook (quorum reached → page delivered).
    after_quorum_ms: Option<f64>,
    /// First successful probe after the switch up → resolved webhook.
    resolve_ms: Option<f64>,
    first_agent: String,
    sent_by: String,
    status: String,
    confirmed_by: usize,
}

fn latency(ctx: &Ctx, args: &Args) -> anyhow::Result<Vec<Verdict>> {
    eprintln!("== latency: {} incidents", args.incidents);
    let mut targets = Vec::new();
    let mut shared = alerts_section(&format!("{}s", args.cooldown));
    for i in 0..args.targets.max(1) {
        let (target, addr) = ctx.runtime.block_on(Target::start())?;
        let name = format!("site{i:02}");
        let _ = write!(
            shared,
            "[[targets]]\nname = \"{name}\"\nurl = \"http://{addr}\"\n\n  [targets.health]\n  path = \"/health\"\n  interval = \"{}s\"\n  timeout = \"{}ms\"\n\n",
            args.interval, args.probe_timeout
        );
        targets.push((format!("{name}/health"), target));
    }
    let (sink, sink_server) = ctx.runtime.block_on(Sink::start())?;
    let interval = Duration::from_secs(args.interval);
    println!(
        "\n## Confirmation latency\n\n{} incidents over {} targets (in turn; each its own listener and check id, \
         so its own probe phase); health checks every {} s, timeout {} ms; cooldown {} s; agents started \
         {:.1} s apart; at least {} s from a resolved to the next switch to down.\n",
        args.incidents,
        targets.len(),
        args.interval,
        args.probe_timeout,
        args.cooldown,
        Duration::from_secs(args.interval).as_secs_f64() / 3.0,
        args.gap
    );
    let mut mesh = Mesh::start(
        ctx,
        "latency",
        "",
        &shared,
        &hook_url(&sink_server),
        interval / 3,
    )?;
    mesh.wait_connected(Duration::from_secs(30))?;
    mesh.wait_votes(targets.len(), interval * 2 + Duration::from_secs(30))?;
    let load_start = loadavg();

    let mut incidents: Vec<Incident> = Vec::new();
    // When each incident's switch to down happened, and its check.
    let mut windows: Vec<(Instant, String)> = Vec::new();
    let mut last_resolved: Option<Instant> = None;
    let result = (|| -> anyhow::Result<()> {
        for k in 0..args.incidents {
            let (check, target) = &targets[k % targets.len()];
            // Every agent's own latest probe of every check is operational, and the mesh says up.
            poll(
                "every agent's own status operational",
                interval * 3 + Duration::from_secs(30),
                Duration::from_millis(20),
                || {
                    mesh.alive()?;
                    let ok = mesh.agents.iter().all(|a| {
                        a.json("/api/status").is_some_and(|s| {
                            s["checks"].as_array().is_some_and(|list| {
                                list.iter()
                                    .all(|c| c["status"] == "operational" && c["verdict"] == "up")
                            })
                        })
                    });
                    Ok(ok.then_some(()))
                },
            )?;
            if let Some(at) = last_resolved {
                // The least gap after the last resolved, so rate limits do not carry over.
                let due = at + Duration::from_secs_f64(args.gap);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            let hooks_before = sink.len();
            let down_at = target.set_down(true);
            windows.push((down_at, check.clone()));
            let (fired_at, firing) = poll(
                "the firing",
                interval + Duration::from_secs(30),
                Duration::from_millis(5),
                || {
                    mesh.alive()?;
                    Ok(sink.find(hooks_before, check, "firing").into_iter().next())
                },
            )?;
            let failing: Vec<Conn> = target
                .since(down_at)
                .into_iter()
                .filter(|c| c.down)
                .collect();
            let first = failing
                .first()
                .ok_or_else(|| anyhow!("a firing without any failing probe"))?
                .clone();
            if first.at > fired_at {
                bail!("the firing came before the first failing probe");
            }
            // Each agent's first failing probe, in order.
            let mut per_agent: Vec<(String, Instant)> = Vec::new();
            for c in &failing {
                let name = c.agent.clone().unwrap_or_else(|| "?".into());
                if c.at <= fired_at && !per_agent.iter().any(|(n, _)| *n == name) {
                    per_agent.push((name, c.at));
                }
            }
            let hooks_mid = sink.len();
            let up_at = target.set_down(false);
            let (resolved_at, _) = poll(
                "the resolved",
                interval * 2 + Duration::from_secs(30),
                Duration::from_millis(5),
                || {
                    mesh.alive()?;
                    Ok(sink.find(hooks_mid, check, "resolved").into_iter().next())
                },
            )?;
            let first_up = target
                .since(up_at)
                .into_iter()
                .find(|c| !c.down && c.at <= resolved_at);
            last_resolved = Some(resolved_at);
            let second = per_agent.get(1).map(|(_, at)| *at);
            let incident = Incident {
                wait_ms: since_ms(first.at, down_at),
                latency_ms: since_ms(fired_at, first.at),
                second_ms: second.map(|at| since_ms(at, first.at)),
                third_ms: per_agent.get(2).map(|(_, at)| since_ms(*at, first.at)),
                after_quorum_ms: second.map(|at| since_ms(fired_at, at)),
                resolve_ms: first_up.map(|c| since_ms(resolved_at, c.at)),
                first_agent: per_agent[0].0.clone(),
                sent_by: firing["sent_by"].as_str().unwrap_or("?").to_owned(),
                status: firing["status"].as_str().unwrap_or("?").to_owned(),
                confirmed_by: firing["confirmed_by"].as_array().map_or(0, Vec::len),
            };
            eprintln!(
                "  incident {:>3}: first failing probe {:>6.0} ms after the switch (by {}), \
                 firing {:>6.1} ms after it (2nd probe +{:.1}, 3rd +{:.1}; sent by {}, {} confirmers, {}); resolved {:.1} ms after the first good probe",
                k + 1,
                incident.wait_ms,
                incident.first_agent,
                incident.latency_ms,
                incident.second_ms.unwrap_or(f64::NAN),
                incident.third_ms.unwrap_or(f64::NAN),
                incident.sent_by,
                incident.confirmed_by,
                incident.status,
                incident.resolve_ms.unwrap_or(f64::NAN),
            );
            incidents.push(incident);
        }
        Ok(())
    })();
    // Late duplicates: every claim settled (none `sending`), and well past the takeover window
    // (3 s) since the last resolved.
    let settle = poll(
        "the notification logs to settle",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let quiet = last_resolved.is_none_or(|at| at.elapsed() >= Duration::from_secs(5));
            let settled = mesh.agents.iter().all(|a| {
                a.json("/api/mesh")
                    .is_some_and(|m| m["self"]["notifications"]["sending"] == 0)
            });
            Ok((quiet && settled).then_some(()))
        },
    );
    let hooks = sink.all();
    drop(mesh);

    // Duplicates: per incident (the span from one switch to down to the next), firings and
    // resolveds beyond the first.
    let mut firings_per = vec![0usize; windows.len()];
    let mut resolved_per = vec![0usize; windows.len()];
    let mut others = Vec::new();
    let mut incident_ids = BTreeSet::new();
    for (at, v) in &hooks {
        let Some(slot) = windows.iter().rposition(|(w, _)| w <= at) else {
            others.push(format!(
                "{} {} before the first incident",
                v["check"], v["event"]
            ));
            continue;
        };
        if v["check"] != windows[slot].1.as_str() {
            others.push(format!("{} {} {}", v["alert"], v["check"], v["event"]));
            continue;
        }
        if v["event"] == "firing" {
            firings_per[slot] += 1;
            incident_ids.insert(v["incident"].as_str().unwrap_or("").to_owned());
        } else if v["event"] == "resolved" {
            resolved_per[slot] += 1;
        }
    }
    let dup_firing: usize = firings_per.iter().map(|n| n.saturating_sub(1)).sum();
    let dup_resolved: usize = resolved_per.iter().map(|n| n.saturating_sub(1)).sum();
    let lost = firings_per.iter().filter(|n| **n == 0).count();

    let lat: Vec<f64> = incidents.iter().map(|i| i.latency_ms).collect();
    let s = sorted(&lat);
    let row = |name: &str, xs: &[f64]| {
        let s = sorted(xs);
        format!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            s.len(),
            pct(&s, 50.0),
            pct(&s, 90.0),
            pct(&s, 99.0),
            s.last().copied().unwrap_or(f64::NAN),
            s.first().copied().unwrap_or(f64::NAN),
            mean(&s)
        )
    };
    let collect =
        |f: fn(&Incident) -> Option<f64>| -> Vec<f64> { incidents.iter().filter_map(f).collect() };
    println!("| ms | n | p50 | p90 | p99 | max | min | mean |\n|---|--:|--:|--:|--:|--:|--:|--:|");
    println!("{}", row("**first failing probe → firing webhook**", &lat));
    println!(
        "{}",
        row(
            "first failing probe → second agent's failing probe (ProbeNow)",
            &collect(|i| i.second_ms)
        )
    );
    println!(
        "{}",
        row(
            "first failing probe → third agent's failing probe",
            &collect(|i| i.third_ms)
        )
    );
    println!(
        "{}",
        row(
            "second agent's failing probe (quorum) → firing webhook",
            &collect(|i| i.after_quorum_ms)
        )
    );
    println!(
        "{}",
        row(
            "first good probe → resolved webhook",
            &collect(|i| i.resolve_ms)
        )
    );
    println!(
        "{}",
        row(
            "switch to down → first failing probe (schedule; not part of the latency)",
            &collect(|i| Some(i.wait_ms))
        )
    );
    let mut by_first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_sender: BTreeMap<&str, usize> = BTreeMap::new();
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    let mut confirmers: BTreeMap<usize, usize> = BTreeMap::new();
    for i in &incidents {
        *by_first.entry(&i.first_agent).or_default() += 1;
        *by_sender.entry(&i.sent_by).or_default() += 1;
        *statuses.entry(&i.status).or_default() += 1;
        *confirmers.entry(i.confirmed_by).or_default() += 1;
    }
    println!(
        "\nincidents: {}; firing webhooks: {} ({} distinct incident ids), duplicates {dup_firing}, \
         incidents without a firing {lost}; resolved webhooks: {}, duplicates {dup_resolved}",
        incidents.len(),
        firings_per.iter().sum::<usize>(),
        incident_ids.len(),
        resolved_per.iter().sum::<usize>(),
    );
    println!(
        "first failing probe by: {by_first:?}; sent by: {by_sender:?}; status: {statuses:?}; \
         confirmers in the firing: {confirmers:?}"
    );
    println!(
        "other webhooks: {}",
        if others.is_empty() {
            "none".to_owned()
        } else {
            others.join(", ")
        }
    );
    println!(
        "all latencies, sorted (ms): {}",
        s.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "load average at the start of the incidents {load_start}, at the end {}; CPU pressure (some, avg60) {}",
        loadavg(),
        cpu_pressure()
    );
    result?;
    settle?;
    let (p50, p99) = (pct(&s, 50.0), pct(&s, 99.0));
    Ok(vec![
        (
            "confirmation p50 ≤ 1 s".into(),
            format!("{p50:.0} ms (n = {})", s.len()),
            p50 <= 1000.0,
        ),
        (
            "confirmation p99 ≤ 2.5 s".into(),
            format!(
                "{p99:.0} ms (max {:.0} ms)",
                s.last().copied().unwrap_or(f64::NAN)
            ),
            p99 <= 2500.0,
        ),
        (
            "exactly one firing per incident".into(),
            format!("{dup_firing} duplicates, {lost} lost, {dup_resolved} duplicate resolved"),
            dup_firing == 0 && lost == 0,
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// 2. Idle mesh traffic

/// (agent, peer, direction) → bytes.
type Bytes = BTreeMap<(String, String, String), u64>;

fn udp_bytes(agent: &str, metrics: &str) -> Bytes {
    let mut out = Bytes::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("pom_mesh_udp_bytes_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        if let (Some(peer), Some(dir), Ok(v)) = (label("peer"), label("direction"), value.parse()) {
            out.insert((agent.to_owned(), peer, dir), v);
        }
    }
    out
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Every agent's UDP byte counters and probe runs now.
fn sample(mesh: &mut Mesh) -> anyhow::Result<(Instant, Bytes, u64)> {
    mesh.alive()?;
    let at = Instant::now();
    let mut bytes = Bytes::new();
    let mut runs = 0;
    for a in &mesh.agents {
        let m = a
            .metrics()
            .ok_or_else(|| anyhow!("{}: no /metrics", a.name))?;
        bytes.extend(udp_bytes(a.name, &m));
        runs += counter(&m, "pom_probe_runs_total");
    }
    Ok((at, bytes, runs))
}

fn traffic_window(
    ctx: &Ctx,
    label: &str,
    checks: &str,
    n_checks: usize,
    window: u64,
) -> anyhow::Result<(f64, String)> {
    let (_target, target_addr) = ctx.runtime.block_on(Target::start())?;
    let (_sink, sink_server) = ctx.runtime.block_on(Sink::start())?;
    let shared = format!(
        "{}{}",
        alerts_section("5m"),
        checks.replace("TARGET", &target_addr.to_string())
    );
    let mut mesh = Mesh::start(
        ctx,
        label,
        "",
        &shared,
        &hook_url(&sink_server),
        Duration::ZERO,
    )?;
    mesh.wait_connected(Duration::from_secs(30))?;
    mesh.wait_votes(n_checks, Duration::from_secs(60))?;
    // Let the first probes' observations and the start-up catch-up settle.
    let settle_until = Instant::now() + Duration::from_secs(3);
    std::thread::sleep(settle_until.saturating_duration_since(Instant::now()));
    eprintln!("== {label}: {window} s window");
    let (t0, b0, r0) = sample(&mut mesh)?;
    let mut last = b0.clone();
    let end = t0 + Duration::from_secs(window);
    let mut t1 = t0;
    let mut b1 = b0.clone();
    let mut r1 = r0;
    while t1 < end {
        let next = (t1 + Duration::from_secs(10)).min(end);
        // The sampling grid of the window: a measurement, not a wait for a condition.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        (t1, b1, r1) = sample(&mut mesh)?;
        for (key, v) in &b1 {
            if last.get(key).is_some_and(|old| v < old) || !b0.contains_key(key) {
                bail!("{label}: the connection {key:?} was replaced during the window");
            }
        }
        if b1.len() != b0.len() {
            bail!("{label}: a connection went away during the window");
        }
        last.clone_from(&b1);
        eprintln!(
            "  {label}: {:.0}/{window} s",
            t1.duration_since(t0).as_secs_f64()
        );
    }
    let secs = t1.duration_since(t0).as_secs_f64();
    drop(mesh);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| agent → peer | tx B/s | rx B/s | tx + rx B/s |\n|---|--:|--:|--:|"
    );
    let mut worst: f64 = 0.0;
    for agent in NAMES {
        for peer in NAMES.iter().filter(|p| **p != agent) {
            let d = |dir: &str| -> anyhow::Result<f64> {
                let k = (agent.to_owned(), (*peer).to_owned(), dir.to_owned());
                let (Some(a), Some(b)) = (b0.get(&k), b1.get(&k)) else {
                    bail!("{label}: no UDP byte counter for {k:?}");
                };
                #[allow(clippy::cast_precision_loss)]
                let delta = b.saturating_sub(*a) as f64;
                Ok(delta / secs)
            };
            let (tx, rx) = (d("tx")?, d("rx")?);
            worst = worst.max(tx + rx);
            let _ = writeln!(
                table,
                "| {agent} → {peer} | {tx:.1} | {rx:.1} | {:.1} |",
                tx + rx
            );
        }
    }
    let _ = writeln!(
        table,
        "\n{label}: {secs:.0} s window, {n_checks} check(s); probe runs in the window (all agents): {}; \
         load average {}, CPU pressure (some, avg60) {}",
        r1 - r0,
        loadavg(),
        cpu_pressure()
    );
    Ok((worst, table))
}

fn idle(ctx: &Ctx, args: &Args) -> anyhow::Result<Vec<Verdict>> {
    println!(
        "\n## Idle mesh traffic\n\nDefault heartbeat (60 s, 3 missed), QUIC keep-alive 2 s. \
         Bytes are UDP payload bytes of the peer's current QUIC connection (quinn's `udp_tx` / `udp_rx`, \
         `pom_mesh_udp_bytes_total`), sampled every 10 s.\n"
    );
    let one = "[[targets]]\nname = \"shop\"\nurl = \"http://TARGET\"\n\n  [targets.health]\n  path = \"/health\"\n";
    let (idle_worst, idle_table) = traffic_window(ctx, "idle", one, 1, args.idle_window)?;
    println!("### Idle: one health check at the default interval (5 m)\n\n{idle_table}");
    let mut verdicts = vec![(
        "idle mesh traffic ≤ 1 KB/s per peer".to_owned(),
        format!("{idle_worst:.0} B/s (highest agent → peer, tx + rx)"),
        idle_worst <= 1000.0,
    )];
    if args.busy_window > 0 {
        let mut checks = String::new();
        for i in 0..args.busy_checks {
            let _ = write!(
                checks,
                "[[targets]]\nname = \"site{i:02}\"\nurl = \"http://TARGET\"\n\n  [targets.health]\n  path = \"/health\"\n  interval = \"10s\"\n  timeout = \"1s\"\n\n"
            );
        }
        let (busy_worst, busy_table) =
            traffic_window(ctx, "busy", &checks, args.busy_checks, args.busy_window)?;
        println!(
            "### With {} health checks at 10 s\n\n{busy_table}",
            args.busy_checks
        );
        verdicts.push((
            format!(
                "(informative) traffic with {} checks at 10 s",
                args.busy_checks
            ),
            format!("{busy_worst:.0} B/s (highest agent → peer)"),
            true,
        ));
    }
    Ok(verdicts)
}

// ---------------------------------------------------------------------------------------------
// 3. Reconnect

/// The observers' `last_heartbeat` of `victim`, now.
fn heartbeats_of(mesh: &Mesh, victim: usize) -> Vec<Value> {
    mesh.agents
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, a)| {
            a.peer_view(NAMES[victim])
                .map_or(Value::Null, |p| p["last_heartbeat"].clone())
        })
        .collect()
}

/// When a stopped or restarted agent was back, in ms from its spawn or `SIGCONT`.
#[derive(Debug)]
struct Back {
    /// Each observer, and when it showed the agent back.
    per: Vec<(String, f64)>,
    /// When the agent's own API answered (after a restart).
    api: Option<f64>,
    /// When the agent showed both observers alive and connected.
    sees: Option<f64>,
}

/// From `start`, polls every 10 ms until both observers see `victim` alive, connected and with a
/// heartbeat other than `before`. Returns the ms for each observer, then for the victim's own
/// API to answer (if `with_api`) and for the victim to see both observers alive and connected.
fn wait_back(
    mesh: &mut Mesh,
    victim: usize,
    before: &[Value],
    start: Instant,
    with_api: bool,
) -> anyhow::Result<Back> {
    let observers: Vec<usize> = (0..NAMES.len()).filter(|i| *i != victim).collect();
    let mut seen: Vec<Option<f64>> = vec![None; observers.len()];
    let mut api: Option<f64> = None;
    let mut sees: Option<f64> = None;
    poll(
        &format!("{} to be back", NAMES[victim]),
        Duration::from_secs(60),
        Duration::from_millis(10),
        || {
            mesh.alive()?;
            for (k, &o) in observers.iter().enumerate() {
                if seen[k].is_some() {
                    continue;
                }
                let back = mesh.agents[o].peer_view(NAMES[victim]).is_some_and(|p| {
                    p["state"] == "alive"
                        && p["connected"] == true
                        && p["last_heartbeat"] != before[k]
                });
                if back {
                    seen[k] = Some(since_ms(Instant::now(), start));
                }
            }
            let v = &mesh.agents[victim];
            if with_api && api.is_none() && http_get(&v.api, "/api/health", None).is_some() {
                api = Some(since_ms(Instant::now(), start));
            }
            if sees.is_none()
                && observers.iter().all(|&o| {
                    v.peer_view(NAMES[o])
                        .is_some_and(|p| p["state"] == "alive" && p["connected"] == true)
                })
            {
                sees = Some(since_ms(Instant::now(), start));
            }
            let done = seen.iter().all(Option::is_some) && sees.is_some();
            Ok(done.then_some(()))
        },
    )?;
    let per = observers
        .iter()
        .zip(&seen)
        .map(|(&o, t)| (NAMES[o].to_owned(), t.unwrap_or(f64::NAN)))
        .collect();
    Ok(Back { per, api, sees })
}

fn reconnect(ctx: &Ctx, args: &Args) -> anyhow::Result<Vec<Verdict>> {
    eprintln!(
        "== reconnect: {} restarts, {} blips",
        args.restarts, args.blips
    );
    let (_target, target_addr) = ctx.runtime.block_on(Target::start())?;
    let (_sink, sink_server) = ctx.runtime.block_on(Sink::start())?;
    let shared = format!(
        "{}[[targets]]\nname = \"shop\"\nurl = \"http://{target_addr}\"\n\n  [targets.health]\n  path = \"/health\"\n",
        alerts_section("5m")
    );
    println!(
        "\n## Reconnect\n\nDefault heartbeat (60 s), one check at 5 m. Back = the observer's `/api/mesh` shows the \
         agent `alive`, `connected`, with a `last_heartbeat` newer than before (polled every 10 ms).\n"
    );
    let mut mesh = Mesh::start(
        ctx,
        "reconnect",
        "",
        &shared,
        &hook_url(&sink_server),
        Duration::ZERO,
    )?;
    mesh.wait_connected(Duration::from_secs(30))?;
    let mut rows = String::new();
    let _ = writeln!(
        rows,
        "| # | event | agent | API answers, ms | back at observer 1, ms | back at observer 2, ms | both back, ms | it sees both, ms |\n|--:|---|---|--:|--:|--:|--:|--:|"
    );
    let mut both: Vec<f64> = Vec::new();
    let mut per_victim: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for k in 0..args.restarts {
        let victim = NAMES.len() - 1 - k % NAMES.len(); // vps, edge, astra, ...
        mesh.wait_connected(Duration::from_secs(60))?;
        // A random phase against the agents' rounds (the poll above ends just after one).
        std::thread::sleep(jitter(Duration::from_secs(1)));
        let before = heartbeats_of(&mesh, victim);
        mesh.agents[victim].kill9()?;
        let start = mesh.agents[victim].spawn(&ctx.pom)?;
        let Back { per, api, sees } = wait_back(&mut mesh, victim, &before, start, true)?;
        let worst = per.iter().map(|(_, t)| *t).fold(0.0, f64::max);
        both.push(worst);
        per_victim.entry(NAMES[victim]).or_default().push(worst);
        eprintln!(
            "  restart {:>2} of {}: back at {per:?}, API after {:.0} ms",
            k + 1,
            NAMES[victim],
            api.unwrap_or(f64::NAN)
        );
        let _ = writeln!(
            rows,
            "| {} | kill -9, restart | {} | {:.0} | {} {:.0} | {} {:.0} | **{worst:.0}** | {:.0} |",
            k + 1,
            NAMES[victim],
            api.unwrap_or(f64::NAN),
            per[0].0,
            per[0].1,
            per[1].0,
            per[1].1,
            sees.unwrap_or(f64::NAN)
        );
    }
    let mut blips: Vec<f64> = Vec::new();
    for k in 0..args.blips {
        let victim = NAMES.len() - 1 - k % NAMES.len();
        mesh.wait_connected(Duration::from_secs(60))?;
        let before = heartbeats_of(&mesh, victim);
        mesh.agents[victim].signal("-STOP")?;
        let stopped = Instant::now();
        let observers: Vec<usize> = (0..NAMES.len()).filter(|i| *i != victim).collect();
        let dropped = poll(
            "the observers to drop the stopped agent's connection",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                let gone = observers.iter().all(|&o| {
                    mesh.agents[o]
                        .peer_view(NAMES[victim])
                        .is_some_and(|p| p["connected"] == false)
                });
                Ok(gone.then(|| since_ms(Instant::now(), stopped)))
            },
        );
        std::thread::sleep(jitter(Duration::from_secs(1)));
        let start = Instant::now();
        mesh.agents[victim].signal("-CONT")?;
        let dropped = dropped?;
        let Back { per, sees, .. } = wait_back(&mut mesh, victim, &before, start, false)?;
        let worst = per.iter().map(|(_, t)| *t).fold(0.0, f64::max);
        blips.push(worst);
        eprintln!(
            "  blip {:>2} of {}: dropped after {dropped:.0} ms stopped; back at {per:?}",
            k + 1,
            NAMES[victim]
        );
        let _ = writeln!(
            rows,
            "| {} | SIGSTOP {:.1} s, SIGCONT | {} | – | {} {:.0} | {} {:.0} | **{worst:.0}** | {:.0} |",
            k + 1,
            dropped / 1000.0,
            NAMES[victim],
            per[0].0,
            per[0].1,
            per[1].0,
            per[1].1,
            sees.unwrap_or(f64::NAN)
        );
    }
    drop(mesh);
    println!("{rows}");
    let s = sorted(&both);
    let (median, max) = (pct(&s, 50.0), s.last().copied().unwrap_or(f64::NAN));
    println!(
        "kill -9 and restart, both observers back: n = {}, median {median:.0} ms, max {max:.0} ms; by agent restarted: {}",
        s.len(),
        per_victim
            .iter()
            .map(|(v, xs)| {
                let s = sorted(xs);
                format!(
                    "{v} median {:.0} / max {:.0}",
                    pct(&s, 50.0),
                    s.last().copied().unwrap_or(f64::NAN)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut verdicts = vec![(
        "a restarted peer is reconnected within 1 s".to_owned(),
        format!("median {median:.0} ms, max {max:.0} ms (n = {})", s.len()),
        max <= 1000.0,
    )];
    if !blips.is_empty() {
        let b = sorted(&blips);
        let (bm, bx) = (pct(&b, 50.0), b.last().copied().unwrap_or(f64::NAN));
        println!(
            "blip, both observers back after SIGCONT: n = {}, median {bm:.0} ms, max {bx:.0} ms",
            b.len()
        );
        verdicts.push((
            "(informative) back within 1 s after a blip".to_owned(),
            format!("median {bm:.0} ms, max {bx:.0} ms (n = {})", b.len()),
            bx <= 1000.0,
        ));
    }
    println!(
        "load average {}, CPU pressure (some, avg60) {}",
        loadavg(),
        cpu_pressure()
    );
    Ok(verdicts)
}
