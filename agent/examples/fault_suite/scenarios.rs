//! The scenarios of issue 5, each asserting the exact alerts the sink received.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::Args;
use crate::agents::{Agent, NAMES};
use crate::netns::{Host, Net};
use crate::poll;
use crate::scene::{self, DNS_NAME, Daemon, SINK_PORT, now_ms};

const SITE: &str = "10.77.0.20";
/// The receiver host: the webhook sink and Alertmanager.
const RECV: &str = "10.77.0.30";
const APP_PORT: u16 = 8080;
/// The check ids every agent runs.
pub(crate) const CHECKS: [&str; 4] = [
    "site/health",
    "site-tls/health",
    "site-dns/dns:A:site.pomf.test",
    "app/health",
];
/// Probe runs every agent does after a scenario healed, before the alerts are counted: long
/// enough for every takeover window (3 s a position) to pass twice at 2 runs a second.
const QUIET_RUNS: u64 = 30;

/// One scenario's outcome (or one fault way of it).
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) scenario: String,
    pub(crate) expected: String,
    pub(crate) observed: String,
    pub(crate) runs: usize,
    /// Time-to-alert of each run, in ms.
    pub(crate) tta_ms: Vec<i64>,
    pub(crate) deviations: Vec<String>,
}

/// Who may have sent an alert.
#[derive(Debug, Clone, Copy)]
enum Sender {
    Any,
    Is(&'static str),
    Not(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct Want {
    check: String,
    event: &'static str,
    sender: Sender,
    /// Least length of `confirmed_by`.
    quorum: usize,
}

fn want(check: &str, event: &'static str, sender: Sender, quorum: usize) -> Want {
    Want {
        check: check.to_owned(),
        event,
        sender,
        quorum,
    }
}

/// A firing and a resolved of `check`, the firing confirmed by at least `quorum`.
fn incident(check: &str, firing_by: Sender, quorum: usize) -> [Want; 2] {
    [
        want(check, "firing", firing_by, quorum),
        want(check, "resolved", Sender::Any, 0),
    ]
}

fn short(a: &Value) -> String {
    format!(
        "{} {} by {}",
        a["check"].as_str().unwrap_or("?"),
        a["event"].as_str().unwrap_or("?"),
        a["sent_by"].as_str().unwrap_or("?")
    )
}

/// Compares `alerts` with `wants` (each exactly once); every other alert is a deviation.
fn compare(alerts: &[Value], wants: &[Want]) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = vec![false; alerts.len()];
    for w in wants {
        let hits: Vec<usize> = (0..alerts.len())
            .filter(|&i| alerts[i]["check"] == w.check.as_str() && alerts[i]["event"] == w.event)
            .collect();
        if hits.len() != 1 {
            out.push(format!(
                "{} {}: {} received, 1 expected",
                w.check,
                w.event,
                hits.len()
            ));
        }
        for &i in &hits {
            used[i] = true;
            let a = &alerts[i];
            let by = a["sent_by"].as_str().unwrap_or("");
            match w.sender {
                Sender::Is(n) if by != n => {
                    out.push(format!("{}: sent by {by}, not {n}", short(a)))
                }
                Sender::Not(n) if by == n => out.push(format!("{}: sent by {n}", short(a))),
                _ => {}
            }
            let confirmed = a["confirmed_by"].as_array().map_or(0, Vec::len);
            if confirmed < w.quorum {
                out.push(format!(
                    "{}: confirmed by {confirmed} ({}), {} expected",
                    short(a),
                    a["confirmed_by"],
                    w.quorum
                ));
            }
        }
    }
    for (i, a) in alerts.iter().enumerate() {
        if !used[i] {
            out.push(format!("unexpected: {} ({})", short(a), a["summary"]));
        }
    }
    out
}

/// Compares Alertmanager's notifications with `wants`: one `firing` and one `resolved` for
/// each firing the webhook should get. Alertmanager notifies nothing of an alert it never saw
/// firing (the outage report after an isolation is a lone `resolved`).
fn compare_am(notified: &[(String, String)], wants: &[Want]) -> Vec<String> {
    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    for w in wants.iter().filter(|w| w.event == "firing") {
        for status in ["firing", "resolved"] {
            *expected
                .entry((w.check.clone(), status.to_owned()))
                .or_default() += 1;
        }
    }
    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    for n in notified {
        *got.entry(n.clone()).or_default() += 1;
    }
    let mut out = Vec::new();
    for key in expected
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (e, g) = (
            expected.get(key).copied().unwrap_or(0),
            got.get(key).copied().unwrap_or(0),
        );
        if e != g {
            out.push(format!(
                "Alertmanager notified {} {} {g} times, {e} expected",
                key.0, key.1
            ));
        }
    }
    out
}

/// Alerts grouped as `check event by SENDER ×N`.
fn summary(alerts: &[Value]) -> String {
    if alerts.is_empty() {
        return "0 alerts".into();
    }
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for a in alerts {
        *groups.entry(short(a)).or_default() += 1;
    }
    groups
        .iter()
        .map(|(k, n)| {
            if *n == 1 {
                k.clone()
            } else {
                format!("{k} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe(wants: &[Want]) -> String {
    if wants.is_empty() {
        return "0 alerts".into();
    }
    wants
        .iter()
        .map(|w| {
            let by = match w.sender {
                Sender::Any => String::new(),
                Sender::Is(n) => format!(" by {n}"),
                Sender::Not(n) => format!(" not by {n}"),
            };
            let q = if w.quorum > 1 {
                format!(" (≥{} confirm)", w.quorum)
            } else {
                String::new()
            };
            format!("{} {}{by}{q} ×1", w.check, w.event)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

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
    fn start(args: &Args, work: &Path) -> anyhow::Result<Self> {
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

    fn agent(&mut self, name: &str) -> &mut Agent {
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

    fn since(&self, mark: Mark) -> Vec<Value> {
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

    /// Waits for the first alert after `mark` about `check` with `event` (and `target`).
    fn wait_alert(
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

    /// Settles, waits the quiet window and compares what arrived since `mark` with `wants`.
    pub(crate) fn judge(
        &mut self,
        mark: Mark,
        wants: &[Want],
        out: &mut Outcome,
    ) -> anyhow::Result<()> {
        self.settle()?;
        self.wait_runs(QUIET_RUNS)?;
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

fn tta(alert: &Value, t0: i64) -> i64 {
    alert["received_ms"].as_i64().unwrap_or(0) - t0
}

/// Runs the scenarios `args` asks for; an error that stops a scenario becomes its deviation.
pub(crate) fn run_all(args: &Args) -> anyhow::Result<Vec<Outcome>> {
    let list: Vec<u32> = if args.scenarios.is_empty() {
        vec![1, 2, 3, 4, 5, 7, 6, 8, 9, 10, 11]
    } else {
        args.scenarios.clone()
    };
    let base = std::env::current_dir()?.join("target/fault-suite");
    std::fs::create_dir_all(&base)?;
    let work = tempfile::Builder::new().prefix("run-").tempdir_in(&base)?;
    eprintln!("fault suite: scratch directory {}", work.path().display());
    let mut suite = Suite::start(args, work.path())?;
    let mut results = Vec::new();
    for n in list {
        eprintln!("fault suite: scenario {n}");
        let outcomes = match n {
            1 => vec![steady(&mut suite, args)],
            2 => site_down(&mut suite, args),
            3 => edge_network(&mut suite, args),
            4 => vec![vps_loss(&mut suite)],
            5 => vec![notifier_dies(&mut suite)],
            6 => vec![agent_restart(&mut suite)],
            7 => vec![split(&mut suite)],
            8 => vec![flaky(&mut suite, args)],
            9 => vec![receiver_outage(&mut suite)],
            10 => vec![crate::intruders::intruders(&mut suite)],
            11 => vec![clock_skew(&mut suite)],
            other => vec![Outcome {
                scenario: format!("{other}"),
                deviations: vec!["not implemented".into()],
                ..Outcome::default()
            }],
        };
        for o in &outcomes {
            eprintln!(
                "  {}: {} run(s), {}",
                o.scenario,
                o.runs,
                if o.deviations.is_empty() {
                    "ok".into()
                } else {
                    format!("{:?}", o.deviations)
                }
            );
        }
        results.extend(outcomes);
    }
    let failed = results.iter().any(|o| !o.deviations.is_empty());
    drop(suite);
    if failed || args.keep {
        let kept = work.keep();
        eprintln!("fault suite: kept {}", kept.display());
    }
    Ok(results)
}

/// Runs `body` once, turning an error into a deviation of `out`.
pub(crate) fn guarded(out: &mut Outcome, body: impl FnOnce(&mut Outcome) -> anyhow::Result<()>) {
    if let Err(e) = body(out) {
        out.deviations.push(format!("{e:#}"));
    }
}

fn steady(s: &mut Suite, args: &Args) -> Outcome {
    let mut out = Outcome {
        scenario: "1 steady state".into(),
        ..Outcome::default()
    };
    guarded(&mut out, |out| {
        s.settle()?;
        let mark = s.mark();
        s.wait_runs(args.steady_runs)?;
        s.judge(mark, &[], out)?;
        out.expected = format!("0 alerts over {} probe runs per agent", args.steady_runs);
        Ok(())
    });
    out
}

#[derive(Debug, Clone, Copy)]
enum SiteFault {
    Stopped,
    Reject,
    Drop,
}

fn site_fault(s: &mut Suite, how: SiteFault, on: bool) -> anyhow::Result<()> {
    let site = s.net.host("site").clone();
    match (how, on) {
        (SiteFault::Stopped, true) => s.site.stop(),
        (SiteFault::Stopped, false) => {
            s.site.spawn()?;
            scene::wait_http(&mut s.site, &site, &format!("http://{SITE}/health"))
        }
        (SiteFault::Reject, true) => site.fault(&["tcp dport { 80, 443 } reject".into()], &[]),
        (SiteFault::Drop, true) => site.fault(&["tcp dport { 80, 443 } drop".into()], &[]),
        (_, false) => site.heal(),
    }
}

fn site_down(s: &mut Suite, args: &Args) -> Vec<Outcome> {
    let ways = [
        (SiteFault::Stopped, "2a site down: nginx stopped"),
        (SiteFault::Reject, "2b site down: nft REJECT"),
        (SiteFault::Drop, "2c site down: nft DROP"),
    ];
    let mut all = Vec::new();
    for (how, label) in ways {
        let mut out = Outcome {
            scenario: label.into(),
            ..Outcome::default()
        };
        for _ in 0..args.repeat {
            guarded(&mut out, |out| {
                s.settle()?;
                let mark = s.mark();
                site_fault(s, how, true)?;
                let t0 = now_ms();
                let a = s.wait_alert(mark, "site/health", "firing", 30.0)?;
                let b = s.wait_alert(mark, "site-tls/health", "firing", 30.0)?;
                out.tta_ms.push(tta(&a, t0).max(tta(&b, t0)));
                site_fault(s, how, false)?;
                s.wait_alert(mark, "site/health", "resolved", 30.0)?;
                s.wait_alert(mark, "site-tls/health", "resolved", 30.0)?;
                let mut wants = Vec::new();
                wants.extend(incident("site/health", Sender::Any, 2));
                wants.extend(incident("site-tls/health", Sender::Any, 2));
                s.judge(mark, &wants, out)
            });
            // Leave the site up whatever happened (a no-op when it is).
            let _ = site_fault(s, how, false);
        }
        all.push(out);
    }
    all
}

fn edge_network(s: &mut Suite, args: &Args) -> Vec<Outcome> {
    let mut all = Vec::new();
    for (loss, label) in [
        (false, "3a edge's link down"),
        (true, "3b edge's 100% loss (nft)"),
    ] {
        let mut out = Outcome {
            scenario: label.into(),
            ..Outcome::default()
        };
        for _ in 0..args.repeat {
            let edge = s.net.host("edge").clone();
            guarded(&mut out, |out| {
                s.settle()?;
                let mark = s.mark();
                if loss {
                    edge.fault(
                        &["iifname != \"lo\" drop".into()],
                        &["oifname != \"lo\" drop".into()],
                    )?;
                } else {
                    edge.link(false)?;
                }
                let t0 = now_ms();
                let a = s.wait_alert(mark, "peer_missing:edge", "firing", 30.0)?;
                out.tta_ms.push(tta(&a, t0));
                let e = s.agent("edge");
                poll("edge to call itself isolated", 30.0, || {
                    e.alive()?;
                    Ok(e.json("/api/mesh")
                        .is_some_and(|m| m["self"]["isolated"] == true))
                })?;
                // Stale failures pile up on the edge while it is cut off.
                let before = e.runs().unwrap_or(0);
                poll("8 probe runs on the isolated edge", 30.0, || {
                    Ok(e.runs().unwrap_or(0) >= before + 8)
                })?;
                if loss {
                    edge.heal()?;
                } else {
                    edge.link(true)?;
                }
                s.wait_alert(mark, "monitoring_offline", "resolved", 60.0)?;
                s.wait_alert(mark, "peer_missing:edge", "resolved", 30.0)?;
                let mut wants = Vec::new();
                wants.extend(incident("peer_missing:edge", Sender::Not("edge"), 0));
                wants.push(want(
                    "monitoring_offline",
                    "resolved",
                    Sender::Is("edge"),
                    0,
                ));
                s.judge(mark, &wants, out)?;
                let offline = s
                    .since(mark)
                    .into_iter()
                    .find(|a| a["check"] == "monitoring_offline");
                if let Some(o) = offline
                    && o["target"] != "edge"
                {
                    out.deviations
                        .push(format!("monitoring_offline names {} not edge", o["target"]));
                }
                Ok(())
            });
            let _ = edge.heal();
            let _ = edge.link(true);
        }
        all.push(out);
    }
    all
}

fn vps_loss(s: &mut Suite) -> Outcome {
    let mut out = Outcome {
        scenario: "4 VPS loss (agent + app)".into(),
        ..Outcome::default()
    };
    guarded(&mut out, |out| {
        s.settle()?;
        let mark = s.mark();
        s.agent("vps").kill("-9")?;
        s.app.stop()?;
        let t0 = now_ms();
        let a = s.wait_alert(mark, "peer_missing:vps", "firing", 30.0)?;
        let b = s.wait_alert(mark, "app/health", "firing", 30.0)?;
        out.tta_ms.push(tta(&a, t0).max(tta(&b, t0)));
        let vps = s.net.host("vps").clone();
        s.app.spawn()?;
        scene::wait_http(
            &mut s.app,
            &vps,
            &format!("http://10.77.0.12:{APP_PORT}/health"),
        )?;
        s.agent("vps").spawn()?;
        s.agent("vps").wait_ready()?;
        s.wait_alert(mark, "peer_missing:vps", "resolved", 30.0)?;
        s.wait_alert(mark, "app/health", "resolved", 30.0)?;
        let mut wants = Vec::new();
        wants.extend(incident("peer_missing:vps", Sender::Not("vps"), 0));
        wants.extend(incident("app/health", Sender::Not("vps"), 2));
        s.judge(mark, &wants, out)
    });
    restore(s);
    out
}

/// Brings every agent and daemon back after a scenario that may have failed half-way.
fn restore(s: &mut Suite) {
    for a in &mut s.agents {
        if !a.running() || a.alive().is_err() {
            let _ = a.kill("-9");
            a.faketime = None;
            let _ = a.spawn().and_then(|()| a.wait_ready());
        }
    }
    for d in [&mut s.site, &mut s.app] {
        if d.alive().is_err() {
            let _ = d.spawn();
        }
    }
    for h in &s.net.hosts {
        let _ = h.heal();
        let _ = h.link(true);
    }
}

fn notifier_dies(s: &mut Suite) -> Outcome {
    let mut out = Outcome {
        scenario: "5 notifier kill -9 as the site goes down".into(),
        ..Outcome::default()
    };
    guarded(&mut out, |out| {
        s.settle()?;
        let mark = s.mark();
        s.site.stop()?;
        s.agent("edge").kill("-9")?;
        let t0 = now_ms();
        let a = s.wait_alert(mark, "site/health", "firing", 30.0)?;
        let b = s.wait_alert(mark, "site-tls/health", "firing", 30.0)?;
        out.tta_ms.push(tta(&a, t0).max(tta(&b, t0)));
        s.wait_alert(mark, "peer_missing:edge", "firing", 30.0)?;
        site_fault(s, SiteFault::Stopped, false)?;
        s.agent("edge").spawn()?;
        s.agent("edge").wait_ready()?;
        for c in ["site/health", "site-tls/health", "peer_missing:edge"] {
            s.wait_alert(mark, c, "resolved", 30.0)?;
        }
        let mut wants = Vec::new();
        wants.extend(incident("site/health", Sender::Not("edge"), 2));
        wants.extend(incident("site-tls/health", Sender::Not("edge"), 2));
        wants.extend(incident("peer_missing:edge", Sender::Not("edge"), 0));
        s.judge(mark, &wants, out)
    });
    restore(s);
    out
}

fn agent_restart(s: &mut Suite) -> Outcome {
    let mut out = Outcome {
        scenario: "6 agent restart during an incident".into(),
        ..Outcome::default()
    };
    guarded(&mut out, |out| {
        s.settle()?;
        let mark = s.mark();
        s.site.stop()?;
        let t0 = now_ms();
        let a = s.wait_alert(mark, "site/health", "firing", 30.0)?;
        s.wait_alert(mark, "site-tls/health", "firing", 30.0)?;
        out.tta_ms.push(tta(&a, t0));
        // Restart every agent in turn (SIGTERM, start again) while the site stays down.
        for name in NAMES {
            let a = s.agent(name);
            a.kill("-TERM")?;
            a.spawn()?;
            a.wait_ready()?;
            a.wait_runs_local(4)?;
        }
        site_fault(s, SiteFault::Stopped, false)?;
        s.wait_alert(mark, "site/health", "resolved", 30.0)?;
        s.wait_alert(mark, "site-tls/health", "resolved", 30.0)?;
        let mut wants = Vec::new();
        wants.extend(incident("site/health", Sender::Any, 2));
        wants.extend(incident("site-tls/health", Sender::Any, 2));
        s.judge(mark, &wants, out)
    });
    restore(s);
    out
}

fn split(s: &mut Suite) -> Outcome {
    let mut out = Outcome {
        scenario: "7 mesh split edge | vps+third".into(),
        ..Outcome::default()
    };
    let edge = s.net.host("edge").clone();
    guarded(&mut out, |out| {
        s.settle()?;
        let mark = s.mark();
        // Only the mesh (QUIC, UDP 9101) is cut: every agent still reaches the site and the app.
        edge.fault(
            &["ip saddr { 10.77.0.12, 10.77.0.13 } udp sport 9101 drop".into()],
            &["ip daddr { 10.77.0.12, 10.77.0.13 } udp dport 9101 drop".into()],
        )?;
        let t0 = now_ms();
        let a = s.wait_alert(mark, "peer_missing:edge", "firing", 30.0)?;
        out.tta_ms.push(tta(&a, t0));
        s.wait_alert(mark, "peer_missing:vps", "firing", 30.0)?;
        s.wait_alert(mark, "peer_missing:third", "firing", 30.0)?;
        // Both sides keep probing for a while: no target alert may come.
        for name in NAMES {
            s.agent(name).wait_runs_local(10)?;
        }
        edge.heal()?;
        for c in [
            "peer_missing:edge",
            "peer_missing:vps",
            "peer_missing:third",
        ] {
            s.wait_alert(mark, c, "resolved", 30.0)?;
        }
        let mut wants = Vec::new();
        wants.extend(incident("peer_missing:edge", Sender::Not("edge"), 0));
        wants.extend(incident("peer_missing:vps", Sender::Is("edge"), 0));
        wants.extend(incident("peer_missing:third", Sender::Is("edge"), 0));
        s.judge(mark, &wants, out)
    });
    let _ = edge.heal();
    restore(s);
    out
}

fn flaky(s: &mut Suite, args: &Args) -> Outcome {
    let mut out = Outcome {
        scenario: "8 flaky link (30% loss on edge)".into(),
        ..Outcome::default()
    };
    let edge = s.net.host("edge").clone();
    guarded(&mut out, |out| {
        s.settle()?;
        let mark = s.mark();
        let rule = "numgen random mod 100 < 30 drop";
        edge.fault(
            &[format!("iifname != \"lo\" {rule}")],
            &[format!("oifname != \"lo\" {rule}")],
        )?;
        s.wait_runs(args.flaky_runs)?;
        edge.heal()?;
        s.judge(mark, &[], out)?;
        out.expected = format!("0 alerts over {} probe runs per agent", args.flaky_runs);
        Ok(())
    });
    let _ = edge.heal();
    out
}

fn receiver_outage(s: &mut Suite) -> Outcome {
    let mut out = Outcome {
        scenario: "9 receiver answers 500; sender restarted".into(),
        ..Outcome::default()
    };
    let dir = s.sink_dir.clone();
    guarded(&mut out, |out| {
        s.settle()?;
        let mark = s.mark();
        let refused = |d: &Path| {
            std::fs::read_to_string(d.join("refused.jsonl"))
                .unwrap_or_default()
                .lines()
                .count()
        };
        let refused_before = refused(&dir);
        scene::sink_failing(&dir, true)?;
        s.site.stop()?;
        let t0 = now_ms();
        poll("both firings to be refused once", 30.0, || {
            Ok(refused(&dir) >= refused_before + 2)
        })?;
        // The sender (the notifier, edge) restarts while its deliveries are pending.
        let e = s.agent("edge");
        e.kill("-TERM")?;
        e.spawn()?;
        e.wait_ready()?;
        e.wait_runs_local(10)?;
        scene::sink_failing(&dir, false)?;
        let a = s.wait_alert(mark, "site/health", "firing", 120.0)?;
        s.wait_alert(mark, "site-tls/health", "firing", 120.0)?;
        out.tta_ms.push(tta(&a, t0));
        site_fault(s, SiteFault::Stopped, false)?;
        s.wait_alert(mark, "site/health", "resolved", 60.0)?;
        s.wait_alert(mark, "site-tls/health", "resolved", 60.0)?;
        let mut wants = Vec::new();
        wants.extend(incident("site/health", Sender::Any, 2));
        wants.extend(incident("site-tls/health", Sender::Any, 2));
        s.judge(mark, &wants, out)
    });
    let _ = scene::sink_failing(&dir, false);
    restore(s);
    out
}

fn clock_skew(s: &mut Suite) -> Outcome {
    let mut out = Outcome {
        scenario: "11 clock skew (third at +5 s, faketime)".into(),
        ..Outcome::default()
    };
    guarded(&mut out, |out| {
        s.settle()?;
        let mark = s.mark();
        let t = s.agent("third");
        t.kill("-TERM")?;
        t.faketime = Some("+5s".into());
        t.spawn()?;
        let t0 = now_ms();
        t.wait_ready()?;
        let a = s.wait_alert(mark, "clock_skew:third", "firing", 30.0)?;
        out.tta_ms.push(tta(&a, t0));
        s.settle()?;
        s.wait_runs(20)?;
        let t = s.agent("third");
        t.kill("-TERM")?;
        t.faketime = None;
        t.spawn()?;
        t.wait_ready()?;
        s.wait_alert(mark, "clock_skew:third", "resolved", 30.0)?;
        let wants = incident("clock_skew:third", Sender::Not("third"), 0);
        s.judge(mark, &wants, out)
    });
    restore(s);
    out
}

impl Agent {
    /// Waits until this agent did `n` more probe runs.
    fn wait_runs_local(&mut self, n: u64) -> anyhow::Result<()> {
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
