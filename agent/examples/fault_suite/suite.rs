//! The suite's world: the hosts, the site, the receivers and the three agents ([`Suite`]), and
//! what scenarios do with it: settle the mesh, mark the receivers, wait for an alert, count probe
//! runs, judge what arrived since a mark, and restore everything after a scenario.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::Args;
use crate::agents::{Agent, NAMES};
use crate::judge::{Outcome, Want, compare, compare_am, describe, summary};
use crate::netns::{Host, Net};
use crate::poll;
use crate::scene::{self, DNS_NAME, Daemon, SINK_PORT};

pub(crate) const SITE: &str = "10.77.0.20";
/// The receiver host: the webhook sink and Alertmanager.
const RECV: &str = "10.77.0.30";
pub(crate) const APP_PORT: u16 = 8080;
/// The check ids every agent runs.
pub(crate) const CHECKS: [&str; 4] = [
    "site/health",
    "site-tls/health",
    "site-dns/dns:A:site.pomf.test",
    "app/health",
];
/// Probe runs every agent does after a scenario healed, before the alerts are counted: long
/// enough for every takeover window (3 s a position) to pass twice at 2 runs a second.
pub(crate) const QUIET_RUNS: u64 = 30;
/// The quiet window between two repeats of one fault: a late alert still fails the suite, as an
/// unexpected one of the next repeat, which starts at once.
pub(crate) const QUIET_BETWEEN_REPEATS: u64 = 10;

/// How many alerts each receiver held at some moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    hook: usize,
    am: usize,
}

/// The hosts, the daemons and the agents. Fields drop in order: agents and daemons first, the
/// namespaces last.
pub(crate) struct Suite {
    pub(crate) work: PathBuf,
    pub(crate) pom: PathBuf,
    pub(crate) mesh_ca: PathBuf,
    /// The shared part of every agent's config (targets, alerts).
    pub(crate) shared: String,
    pub(crate) sink_dir: PathBuf,
    pub(crate) agents: Vec<Agent>,
    pub(crate) site: Daemon,
    pub(crate) app: Daemon,
    _dns: Daemon,
    _alertmanager: Daemon,
    _sink: Daemon,
    pub(crate) net: Net,
}

pub(crate) fn find_pom(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.pom {
        return Ok(p.canonicalize()?);
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the example has no parent directory")?;
    let pom = dir.join("pom");
    if !pom.is_file() {
        bail!(
            "no pom binary at {} (run `cargo build -p pom --bin pom` first, or pass --pom)",
            pom.display()
        );
    }
    Ok(pom)
}

/// The config every agent shares after its `[mesh]`: the alert rules, the channels (none for
/// an intruder: its pages are not the mesh's) and the four targets.
pub(crate) fn shared_config(ca_pem: &Path, channels: bool) -> String {
    // 1.5 s: above TCP's 1 s SYN retransmission, as every real timeout is (the default is 10 s),
    // so a single lost SYN on a lossy link (scenario 8) does not fail a probe by itself.
    let t = "  interval = \"2s\"\n  timeout = \"1500ms\"\n";
    let hook = if channels {
        format!(
            "[[alerts.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{RECV}:{SINK_PORT}{}\"\n\n\
             [[alerts.channels]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://{RECV}:{}\"\n\n",
            scene::HOOK_PATH,
            scene::AM_PORT
        )
    } else {
        String::new()
    };
    format!(
        "[alerts]\ncooldown = \"1s\"\nrepeat_interval = \"0s\"\nrunbook_base = \"https://runbook.example/runbook.md\"\n\n{hook}\
         [[targets]]\nname = \"site\"\nurl = \"http://{SITE}\"\n  [targets.health]\n  path = \"/health\"\n{t}\n\
         [[targets]]\nname = \"site-tls\"\nurl = \"https://{SITE}\"\nca_file = \"{ca}\"\n  [targets.health]\n  path = \"/health\"\n{t}\n\
         [[targets]]\nname = \"site-dns\"\n  [[targets.dns]]\n  type = \"A\"\n  name = \"{DNS_NAME}\"\n  nameserver = \"{SITE}\"\n  expect = [\"{SITE}\"]\n{t}\n\
         [[targets]]\nname = \"app\"\nurl = \"http://10.77.0.12:{APP_PORT}\"\n  [targets.health]\n  path = \"/health\"\n{t}\n",
        ca = ca_pem.display()
    )
}

impl Suite {
    pub(crate) fn start(args: &Args, work: &Path) -> anyhow::Result<Self> {
        let pom = find_pom(args)?;
        let net = Net::create(&[
            ("edge", "10.77.0.11"),
            ("vps", "10.77.0.12"),
            ("third", "10.77.0.13"),
            ("site", SITE),
            ("recv", RECV),
            ("rogue", "10.77.0.14"),
            ("mallory", "10.77.0.15"),
        ])?;
        let certs = work.join("site-certs");
        std::fs::create_dir_all(&certs)?;
        let ca_pem = scene::site_certs(&certs, SITE)?;
        let site = scene::nginx(&work.join("nginx-site"), net.host("site"), 80, Some(&certs))?;
        let app = scene::nginx(&work.join("nginx-app"), net.host("vps"), APP_PORT, None)?;
        let dns = scene::dnsmasq(&work.join("dnsmasq"), net.host("site"))?;
        let sink_dir = work.join("sink");
        let sink = scene::sink(&sink_dir, net.host("recv"))?;
        let alertmanager = scene::alertmanager(&work.join("alertmanager"), net.host("recv"))?;
        let ca = work.join("mesh-ca");
        pom::pki::init_ca(&ca, 365, false).context("creating the mesh CA")?;
        let peers: Vec<Host> = NAMES.iter().map(|n| net.host(n).clone()).collect();
        let shared = shared_config(&ca_pem, true);
        let mut agents = Vec::new();
        for name in NAMES {
            agents.push(Agent::prepare(
                work,
                &ca,
                &pom,
                name,
                net.host(name),
                &peers,
                &shared,
            )?);
        }
        for a in &mut agents {
            a.spawn()?;
        }
        for a in &mut agents {
            a.wait_ready()?;
        }
        Ok(Self {
            work: work.to_owned(),
            pom,
            mesh_ca: ca,
            shared: shared_config(&ca_pem, false),
            sink_dir,
            agents,
            site,
            app,
            _dns: dns,
            _alertmanager: alertmanager,
            _sink: sink,
            net,
        })
    }

    pub(crate) fn agent(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .expect("the three agents exist")
    }

    pub(crate) fn agent_ref(&self, name: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .expect("the three agents exist")
    }

    /// The agents' alerts the webhook received so far, in arrival order.
    pub(crate) fn alerts(&self) -> Vec<Value> {
        scene::received(&self.sink_dir, scene::HOOK_PATH)
    }

    /// What the receivers hold now: later alerts are the ones after this mark.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            hook: self.alerts().len(),
            am: scene::received(&self.sink_dir, scene::AM_PATH).len(),
        }
    }

    pub(crate) fn since(&self, mark: Mark) -> Vec<Value> {
        self.alerts().into_iter().skip(mark.hook).collect()
    }

    /// Alertmanager's notifications since `mark`, one `(check, status)` per alert in them.
    fn am_since(&self, mark: Mark) -> Vec<(String, String)> {
        scene::received(&self.sink_dir, scene::AM_PATH)
            .into_iter()
            .skip(mark.am)
            .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
            .map(|a| {
                (
                    a["labels"]["check"].as_str().unwrap_or("?").to_owned(),
                    a["status"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect()
    }

    /// Waits for the first alert after `mark` about `check` with `event` at the webhook. A
    /// firing is also waited for at Alertmanager, so that a scenario heals its fault only once
    /// both receivers paged: Alertmanager drops an incident that fired and resolved between
    /// two flushes of a group it still holds (its notification log knows of no firing to
    /// clear), which a fault healed within `group_interval` of a previous repeat would hit.
    pub(crate) fn wait_alert(
        &mut self,
        mark: Mark,
        check: &str,
        event: &str,
        secs: f64,
    ) -> anyhow::Result<Value> {
        let alert = self.wait_hook(mark, check, event, secs)?;
        if event == "firing" {
            self.wait_am(mark, check, event, secs)?;
        }
        Ok(alert)
    }

    /// Waits for Alertmanager's notification of `check` with `status` since `mark`.
    fn wait_am(&mut self, mark: Mark, check: &str, status: &str, secs: f64) -> anyhow::Result<()> {
        poll(
            &format!("{check} {status} notified by Alertmanager"),
            secs,
            || {
                self.alive()?;
                Ok(self
                    .am_since(mark)
                    .iter()
                    .any(|(c, s)| c == check && s == status))
            },
        )
        .map_err(|e| anyhow!("{e}; notified since the fault: {:?}", self.am_since(mark)))
    }

    /// Waits for the first alert after `mark` about `check` with `event` at the webhook.
    fn wait_hook(
        &mut self,
        mark: Mark,
        check: &str,
        event: &str,
        secs: f64,
    ) -> anyhow::Result<Value> {
        let mut found = None;
        poll(&format!("{check} {event} at the sink"), secs, || {
            self.alive()?;
            found = self
                .since(mark)
                .into_iter()
                .find(|a| a["check"] == check && a["event"] == event);
            Ok(found.is_some())
        })
        .map_err(|e| {
            anyhow!(
                "{e}; received since the fault: {}",
                summary(&self.since(mark))
            )
        })?;
        found.ok_or_else(|| anyhow!("unreachable: the poll found it"))
    }

    /// Waits for the `event` of every check in `checks` since `mark`; returns the time from `t0`
    /// to the last arrival (ms).
    pub(crate) fn wait_all(
        &mut self,
        mark: Mark,
        checks: &[&str],
        event: &str,
        secs: f64,
        t0: i64,
    ) -> anyhow::Result<i64> {
        let mut latest = 0;
        for check in checks {
            let alert = self.wait_alert(mark, check, event, secs)?;
            latest = latest.max(crate::judge::tta(&alert, t0));
        }
        Ok(latest)
    }

    /// Brings every agent, daemon and link back after a scenario that may have failed half-way.
    pub(crate) fn restore(&mut self) {
        for a in &mut self.agents {
            if !a.running() || a.alive().is_err() {
                let _ = a.kill("-9");
                a.faketime = None;
                let _ = a.spawn().and_then(|()| a.wait_ready());
            }
        }
        for d in [&mut self.site, &mut self.app] {
            if d.alive().is_err() {
                let _ = d.spawn();
            }
        }
        for h in &self.net.hosts {
            let _ = h.heal();
            let _ = h.link(true);
        }
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        for a in &mut self.agents {
            if a.running() {
                a.alive()?;
            }
        }
        self.site.alive()?;
        self.app.alive()
    }

    /// Waits until every running agent sees the others alive and connected, is not isolated,
    /// and holds the verdict `up` on every check.
    pub(crate) fn settle(&mut self) -> anyhow::Result<()> {
        let running: Vec<&'static str> = self
            .agents
            .iter()
            .filter(|a| a.running())
            .map(|a| a.name)
            .collect();
        let mut last = String::new();
        poll(
            "the mesh to settle (peers alive, every verdict up)",
            90.0,
            || {
                self.alive()?;
                for a in self.agents.iter().filter(|a| a.running()) {
                    let Some(mesh) = a.json("/api/mesh") else {
                        last = format!("{}: no /api/mesh", a.name);
                        return Ok(false);
                    };
                    if mesh["self"]["isolated"] != false {
                        last = format!("{} isolated", a.name);
                        return Ok(false);
                    }
                    for p in running.iter().filter(|p| **p != a.name) {
                        let ok = a
                            .peer_view(&mesh, p)
                            .is_some_and(|v| v["state"] == "alive" && v["connected"] == true);
                        if !ok {
                            last = format!("{} does not see {p} alive", a.name);
                            return Ok(false);
                        }
                    }
                    let Some(status) = a.json("/api/status") else {
                        last = format!("{}: no /api/status", a.name);
                        return Ok(false);
                    };
                    let checks = status["checks"].as_array().cloned().unwrap_or_default();
                    if checks.len() != CHECKS.len() {
                        last = format!("{}: {} checks", a.name, checks.len());
                        return Ok(false);
                    }
                    if let Some(c) = checks.iter().find(|c| c["verdict"] != "up") {
                        last = format!("{}: {} is {}", a.name, c["id"], c["verdict"]);
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .map_err(|e| anyhow!("{e}; last: {last}"))
    }

    /// Waits until every running agent did `n` more probe runs.
    pub(crate) fn wait_runs(&mut self, n: u64) -> anyhow::Result<()> {
        let mut targets = Vec::new();
        for a in self.agents.iter().filter(|a| a.running()) {
            let now = a.runs().with_context(|| format!("{}'s /metrics", a.name))?;
            targets.push((a.name, now + n));
        }
        // 4 checks at 2 s make 2 runs a second; allow for a slow machine.
        let secs = 30.0 + n as f64;
        poll(&format!("{n} more probe runs on every agent"), secs, || {
            self.alive()?;
            Ok(targets.iter().all(|(name, target)| {
                self.agents
                    .iter()
                    .find(|a| a.name == *name)
                    .and_then(Agent::runs)
                    .is_some_and(|r| r >= *target)
            }))
        })
    }

    /// Settles, waits a quiet window of `quiet` probe runs and compares what arrived since
    /// `mark` with `wants`.
    pub(crate) fn judge(
        &mut self,
        mark: Mark,
        wants: &[Want],
        quiet: u64,
        out: &mut Outcome,
    ) -> anyhow::Result<()> {
        self.settle()?;
        self.wait_runs(quiet)?;
        let got = self.since(mark);
        let mut dev = compare(&got, wants);
        dev.extend(compare_am(&self.am_since(mark), wants));
        out.runs += 1;
        if out.expected.is_empty() {
            out.expected = describe(wants);
        }
        let seen = summary(&got);
        if out.observed.is_empty() {
            out.observed = seen.clone();
        } else if !out.observed.split(" | ").any(|o| o == seen) {
            out.observed = format!("{} | {seen}", out.observed);
        }
        if !dev.is_empty() {
            eprintln!("  DEVIATION: {dev:?}\n  alerts: {got:#?}");
            for a in &self.agents {
                eprintln!("  --- {} log tail ---\n{}", a.name, a.log_tail(40));
            }
        }
        out.deviations.extend(dev);
        Ok(())
    }
}

impl Agent {
    /// Waits until this agent did `n` more probe runs.
    pub(crate) fn wait_runs_local(&mut self, n: u64) -> anyhow::Result<()> {
        let target = self.runs().unwrap_or(0) + n;
        let name = self.name;
        poll(
            &format!("{n} more probe runs on {name}"),
            30.0 + n as f64,
            || {
                self.alive()?;
                Ok(self.runs().is_some_and(|r| r >= target))
            },
        )
    }
}
