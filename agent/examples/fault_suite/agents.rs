//! The three `pom run` processes, each in its own host namespace with its own certificate
//! (`pom::pki`), data directory and config; their API is reached from inside their namespace
//! (`ip netns exec … curl` to 127.0.0.1), so it stays reachable while the host's link is down.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::netns::{Host, exec};
use crate::poll;

/// The agents in name order: `edge` is the notifier while it lives.
pub(crate) const NAMES: [&str; 3] = ["edge", "third", "vps"];
pub(crate) const TOKEN: &str = "fault-suite-token-0c4e";
const API: &str = "127.0.0.1:9100";
/// Debian's `faketime` package library.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
pub(crate) const MESH_PORT: u16 = 9101;

#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) name: &'static str,
    pub(crate) host: Host,
    pub(crate) home: PathBuf,
    pom: PathBuf,
    child: Option<Child>,
    /// `faketime` offset for the next start (e.g. "+5s"), if any.
    pub(crate) faketime: Option<String>,
}

impl Agent {
    /// Writes the config of agent `name` on `host` (`shared`: everything after `[mesh]` and its
    /// peers) and its certificate, issued by the CA in `ca`, into `work/HOST`.
    pub(crate) fn prepare(
        work: &Path,
        ca: &Path,
        pom: &Path,
        name: &'static str,
        host: &Host,
        peers: &[Host],
        shared: &str,
    ) -> anyhow::Result<Self> {
        let home = work.join(host.name);
        std::fs::create_dir_all(&home)?;
        let certs = home.join("mesh");
        pom::pki::issue(name, ca, &certs, 30, false)
            .with_context(|| format!("issuing the certificate of {name}"))?;
        let mut config = format!(
            "[agent]\nname = \"{name}\"\ndata_dir = \"{data}\"\napi_listen = \"{API}\"\n\n\
             [mesh]\nlisten = \"{ip}:{MESH_PORT}\"\nca_cert = \"{c}/ca.crt\"\ncert = \"{c}/node.crt\"\nkey = \"{c}/node.key\"\n\
             heartbeat_interval = \"1s\"\nmissed_heartbeats = 3\nquorum = \"majority\"\n\n",
            data = home.join("data").display(),
            ip = host.ip,
            c = certs.display(),
        );
        for p in peers {
            config.push_str(&format!(
                "[[mesh.peers]]\nname = \"{}\"\naddr = \"{}:{MESH_PORT}\"\n\n",
                p.name, p.ip
            ));
        }
        config.push_str(shared);
        std::fs::write(home.join("pom.toml"), config)?;
        Ok(Self {
            name,
            host: host.clone(),
            home,
            pom: pom.to_owned(),
            child: None,
            faketime: None,
        })
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.home.join("pom.toml")
    }

    /// Starts `pom run` in the agent's namespace (under `faketime` if set).
    pub(crate) fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("agent.log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.ns]);
        cmd.arg(&self.pom)
            .args(["run", "--config"])
            .arg(self.config_path())
            .env_remove("LD_PRELOAD");
        if let Some(offset) = &self.faketime {
            // libfaketime preloaded directly (not the `faketime` wrapper, which forks): the
            // child's pid stays pom's, so kill and restart reach the agent itself.
            cmd.env("LD_PRELOAD", FAKETIME_LIB)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        cmd.env("POM_API_TOKEN", TOKEN)
            .env("POM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().context("starting pom")?);
        Ok(())
    }

    pub(crate) fn wait_ready(&mut self) -> anyhow::Result<()> {
        poll(&format!("{}'s API", self.name), 20.0, || {
            self.alive()?;
            Ok(self.get("/api/health").is_some())
        })
    }

    pub(crate) fn alive(&mut self) -> anyhow::Result<()> {
        let name = self.name;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited with {status}; log tail:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The agent's process id (`ip netns exec` execs it, so it is pom's own).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL (`-9`) or a clean SIGTERM stop.
    pub(crate) fn kill(&mut self, signal: &str) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let status = Command::new("kill").args([signal, &pid]).status()?;
            if !status.success() {
                bail!("kill {signal} {pid} failed");
            }
            child.wait()?;
        }
        Ok(())
    }

    pub(crate) fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.home.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// GET `path` on the agent's API (with the token); the body of a 2xx.
    pub(crate) fn get(&self, path: &str) -> Option<String> {
        exec(
            &self.host.ns,
            &[
                "curl",
                "-sf",
                "-m",
                "2",
                "-H",
                &format!("Authorization: Bearer {TOKEN}"),
                &format!("http://{API}{path}"),
            ],
        )
        .ok()
    }

    pub(crate) fn json(&self, path: &str) -> Option<Value> {
        serde_json::from_str(&self.get(path)?).ok()
    }

    /// `pom_probe_runs_total`.
    pub(crate) fn runs(&self) -> Option<u64> {
        self.get("/metrics")?
            .lines()
            .find_map(|l| l.strip_prefix("pom_probe_runs_total "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// This agent's view of `peer` in `/api/mesh`.
    pub(crate) fn peer_view(&self, mesh: &Value, peer: &str) -> Option<Value> {
        mesh["peers"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == peer)
            .cloned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.kill("-9");
    }
}
