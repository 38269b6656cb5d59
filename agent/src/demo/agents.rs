//! The demo's agents: real `pom run` processes, their config files, and a small client for
//! their HTTP API.
//!
//! Each agent is a child process of this executable with its own directory (config, mesh
//! certificate, database, log). [`Agents`] owns the children and kills them when dropped, so
//! they never outlive the demo on any way out of it: success, failure, error, panic or signal.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderValue};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use url::Url;

use super::DemoError;
use crate::probe::http::{self, Request};

/// How long one API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest API answer read.
const MAX_ANSWER: usize = 4 << 20;
/// How much of a log a failure quotes.
const LOG_TAIL_LINES: usize = 20;

/// What differs between the agents' config files: `[agent]` and `[mesh]`.
#[derive(Debug, Clone)]
pub(super) struct AgentSetup {
    /// The agent's name (and its certificate's).
    pub(super) name: String,
    /// Its directory: `pom.toml`, `mesh/`, `data/`, `agent.log`.
    pub(super) dir: PathBuf,
    /// Its API address.
    pub(super) api: SocketAddr,
    /// Its QUIC address.
    pub(super) listen: SocketAddr,
    /// Its peers, each at the address of the relay that leads to it.
    pub(super) peers: Vec<(String, SocketAddr)>,
}

impl AgentSetup {
    /// The config file: this agent's `[agent]` and `[mesh]`, then `shared`, the part every
    /// agent has alike (the part whose hash peers compare).
    pub(super) fn config(&self, shared: &str) -> String {
        let mut out = format!(
            "# Written by `pom demo` for agent {name}. Only [agent] and [mesh] differ between agents.\n\
             [agent]\n\
             name = \"{name}\"\n\
             data_dir = \"data\"\n\
             api_listen = \"{api}\"\n\n\
             [mesh]\n\
             listen = \"{listen}\"\n\
             ca_cert = \"mesh/ca.crt\"\n\
             cert = \"mesh/node.crt\"\n\
             key = \"mesh/node.key\"\n\
             heartbeat_interval = \"300ms\"\n\
             missed_heartbeats = 3\n\
             quorum = \"majority\"\n\n",
            name = self.name,
            api = self.api,
            listen = self.listen,
        );
        for (peer, addr) in &self.peers {
            let _ = write!(
                out,
                "[[mesh.peers]]          # reached through the demo's relay {name} -> {peer}\n\
                 name = \"{peer}\"\n\
                 addr = \"{addr}\"\n\n",
                name = self.name,
            );
        }
        out.push_str(shared);
        out
    }

    /// The config file's path.
    pub(super) fn config_path(&self) -> PathBuf {
        self.dir.join("pom.toml")
    }

    /// The log file's path.
    pub(super) fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }
}

/// One running agent.
#[derive(Debug)]
struct Running {
    name: String,
    log: PathBuf,
    child: Child,
}

/// The running agents; dropping this kills them. See the [module docs](self).
#[derive(Debug, Default)]
pub(super) struct Agents {
    running: Mutex<Vec<Running>>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for agent in running.iter_mut() {
            let _ = agent.child.kill();
            let _ = agent.child.wait();
        }
    }
}

impl Agents {
    /// Starts `exe run --config …` for `setup`, with the API token in `POM_API_TOKEN` and
    /// nothing else from this process's environment; its stderr goes to its log file.
    pub(super) fn spawn(
        &self,
        exe: &Path,
        setup: &AgentSetup,
        token: &str,
    ) -> Result<u32, DemoError> {
        let log_path = setup.log_path();
        let log =
            std::fs::File::create(&log_path).map_err(|e| DemoError::io("create", &log_path, e))?;
        let child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(setup.config_path())
            .env_clear()
            .env("POM_API_TOKEN", token)
            .env("POM_LOG", "warn,pom=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| DemoError::io("start", exe, e))?;
        let pid = child.id();
        self.lock().push(Running {
            name: setup.name.clone(),
            log: log_path,
            child,
        });
        Ok(pid)
    }

    /// The first agent that has exited, with its status and the end of its log.
    pub(super) fn exited(&self) -> Option<(String, ExitStatus, String)> {
        let mut running = self.lock();
        running.iter_mut().find_map(|agent| {
            let status = agent.child.try_wait().ok().flatten()?;
            Some((agent.name.clone(), status, log_tail(&agent.log)))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A client for the agents' API, with their bearer token.
#[derive(Debug, Clone)]
pub(super) struct Api {
    auth: HeaderValue,
    tls: Arc<ClientConfig>,
}

impl Api {
    /// A client sending `token`.
    pub(super) fn new(token: &str) -> Result<Self, DemoError> {
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| DemoError::Setup(format!("the API token cannot be a header: {e}")))?;
        // The API is plain HTTP on loopback; `http::send` still wants a TLS config.
        let tls = ClientConfig::builder_with_provider(crate::probe::trust::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| DemoError::Setup(format!("TLS client config: {e}")))?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        Ok(Self {
            auth,
            tls: Arc::new(tls),
        })
    }

    /// `GET path` of the agent at `api`: the body of a 200 answer, else `None`.
    pub(super) async fn get(&self, api: SocketAddr, path: &str) -> Option<Bytes> {
        let url = Url::parse(&format!("http://{api}{path}")).ok()?;
        let headers = [(AUTHORIZATION, self.auth.clone())];
        let request = Request {
            method: &Method::GET,
            url: &url,
            headers: &headers,
            body: Bytes::new(),
            tls: &self.tls,
            max_body: MAX_ANSWER,
            user_agent: None,
        };
        let answer = tokio::time::timeout(API_TIMEOUT, http::send(&request))
            .await
            .ok()?
            .ok()?;
        answer.status.is_success().then_some(answer.body)
    }

    /// `GET path` as JSON.
    pub(super) async fn json(&self, api: SocketAddr, path: &str) -> Option<Value> {
        serde_json::from_slice(&self.get(api, path).await?).ok()
    }

    /// `pom_probe_runs_total` from `/metrics`: probes this agent has started.
    pub(super) async fn probe_runs(&self, api: SocketAddr) -> Option<u64> {
        let text = self.get(api, "/metrics").await?;
        String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("pom_probe_runs_total "))
            .and_then(|v| v.trim().parse().ok())
    }
}
