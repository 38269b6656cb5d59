//! The scenarios of issue 5. Each run has one shape ([`play`]): the mesh settles, the receivers
//! are marked, the fault is played and healed (its body says which alerts it expects, and
//! records time-to-alert), then the suite settles again, waits a quiet window and compares what
//! both receivers got since the mark with what was expected.

use std::path::Path;

use anyhow::Context as _;

use crate::Args;
use crate::agents::NAMES;
use crate::judge::{Outcome, Sender, Want, incident, want};
use crate::poll;
use crate::scene::{self, now_ms};
use crate::suite::{APP_PORT, Mark, QUIET_BETWEEN_REPEATS, QUIET_RUNS, SITE, Suite};

/// The site's two health checks (HTTP and HTTPS on the site host).
const SITE_CHECKS: [&str; 2] = ["site/health", "site-tls/health"];

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
    let mut suite = Suite::start(args, work.path()).context("setting up the hosts")?;
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
                deviations: vec!["no such scenario".into()],
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

/// One run of a scenario: settle, mark the receivers, play `fault` (it returns the alerts it
/// expects, each exactly once, and may record time-to-alert in `out`), judge, and restore
/// whatever the fault left broken. An error becomes a deviation.
pub(crate) fn play(
    s: &mut Suite,
    out: &mut Outcome,
    fault: impl FnOnce(&mut Suite, Mark, &mut Outcome) -> anyhow::Result<Vec<Want>>,
) {
    play_quiet(s, out, QUIET_RUNS, fault);
}

/// [`play`] with a quiet window of `quiet` probe runs before the judging.
fn play_quiet(
    s: &mut Suite,
    out: &mut Outcome,
    quiet: u64,
    fault: impl FnOnce(&mut Suite, Mark, &mut Outcome) -> anyhow::Result<Vec<Want>>,
) {
    guarded(out, |out| {
        s.settle()?;
        let mark = s.mark();
        let wants = fault(s, mark, out)?;
        s.judge(mark, &wants, quiet, out)
    });
    s.restore();
}

/// The quiet window of repeat `i` of `n`: short between repeats, whole after the last.
fn quiet(i: usize, n: usize) -> u64 {
    if i + 1 < n {
        QUIET_BETWEEN_REPEATS
    } else {
        QUIET_RUNS
    }
}

fn outcome(scenario: &str) -> Outcome {
    Outcome {
        scenario: scenario.into(),
        ..Outcome::default()
    }
}

/// A site incident: each of the site's checks fires once, confirmed by at least 2 agents (not
/// by `firing_by`'s excluded agent, if it names one), and resolves once.
fn site_incident(firing_by: Sender) -> Vec<Want> {
    SITE_CHECKS
        .iter()
        .flat_map(|c| incident(c, firing_by, 2))
        .collect()
}

fn steady(s: &mut Suite, args: &Args) -> Outcome {
    let mut out = outcome("1 steady state");
    out.expected = format!("0 alerts over {} probe runs per agent", args.steady_runs);
    play(s, &mut out, |s, _, _| {
        s.wait_runs(args.steady_runs)?;
        Ok(Vec::new())
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
        let mut out = outcome(label);
        for i in 0..args.repeat {
            play_quiet(s, &mut out, quiet(i, args.repeat), |s, mark, out| {
                site_fault(s, how, true)?;
                let t0 = now_ms();
                out.tta_ms
                    .push(s.wait_all(mark, &SITE_CHECKS, "firing", 30.0, t0)?);
                site_fault(s, how, false)?;
                s.wait_all(mark, &SITE_CHECKS, "resolved", 30.0, t0)?;
                Ok(site_incident(Sender::Any))
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
        let mut out = outcome(label);
        for i in 0..args.repeat {
            let edge = s.net.host("edge").clone();
            play_quiet(s, &mut out, quiet(i, args.repeat), |s, mark, out| {
                if loss {
                    edge.fault(
                        &["iifname != \"lo\" drop".into()],
                        &["oifname != \"lo\" drop".into()],
                    )?;
                } else {
                    edge.link(false)?;
                }
                let t0 = now_ms();
                out.tta_ms
                    .push(s.wait_all(mark, &["peer_missing:edge"], "firing", 30.0, t0)?);
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
                let report = s.wait_alert(mark, "monitoring_offline", "resolved", 60.0)?;
                if report["target"] != "edge" {
                    out.deviations.push(format!(
                        "monitoring_offline names {} not edge",
                        report["target"]
                    ));
                }
                s.wait_alert(mark, "peer_missing:edge", "resolved", 30.0)?;
                let mut wants = incident("peer_missing:edge", Sender::Not("edge"), 0).to_vec();
                wants.push(want(
                    "monitoring_offline",
                    "resolved",
                    Sender::Is("edge"),
                    0,
                ));
                Ok(wants)
            });
        }
        all.push(out);
    }
    all
}

fn vps_loss(s: &mut Suite) -> Outcome {
    let mut out = outcome("4 VPS loss (agent + app)");
    play(s, &mut out, |s, mark, out| {
        s.agent("vps").kill("-9")?;
        s.app.stop()?;
        let t0 = now_ms();
        let checks = ["peer_missing:vps", "app/health"];
        out.tta_ms
            .push(s.wait_all(mark, &checks, "firing", 30.0, t0)?);
        let vps = s.net.host("vps").clone();
        s.app.spawn()?;
        scene::wait_http(
            &mut s.app,
            &vps,
            &format!("http://{}:{APP_PORT}/health", vps.ip),
        )?;
        s.agent("vps").spawn()?;
        s.agent("vps").wait_ready()?;
        s.wait_all(mark, &checks, "resolved", 30.0, t0)?;
        let mut wants = incident("peer_missing:vps", Sender::Not("vps"), 0).to_vec();
        wants.extend(incident("app/health", Sender::Not("vps"), 2));
        Ok(wants)
    });
    out
}

fn notifier_dies(s: &mut Suite) -> Outcome {
    let mut out = outcome("5 notifier kill -9 as the site goes down");
    play(s, &mut out, |s, mark, out| {
        s.site.stop()?;
        s.agent("edge").kill("-9")?;
        let t0 = now_ms();
        out.tta_ms
            .push(s.wait_all(mark, &SITE_CHECKS, "firing", 30.0, t0)?);
        s.wait_alert(mark, "peer_missing:edge", "firing", 30.0)?;
        site_fault(s, SiteFault::Stopped, false)?;
        s.agent("edge").spawn()?;
        s.agent("edge").wait_ready()?;
        let checks = ["site/health", "site-tls/health", "peer_missing:edge"];
        s.wait_all(mark, &checks, "resolved", 30.0, t0)?;
        let mut wants = site_incident(Sender::Not("edge"));
        wants.extend(incident("peer_missing:edge", Sender::Not("edge"), 0));
        Ok(wants)
    });
    out
}

fn agent_restart(s: &mut Suite) -> Outcome {
    let mut out = outcome("6 agent restart during an incident");
    play(s, &mut out, |s, mark, out| {
        s.site.stop()?;
        let t0 = now_ms();
        out.tta_ms
            .push(s.wait_all(mark, &SITE_CHECKS, "firing", 30.0, t0)?);
        // Restart every agent in turn (SIGTERM, start again) while the site stays down.
        for name in NAMES {
            let a = s.agent(name);
            a.kill("-TERM")?;
            a.spawn()?;
            a.wait_ready()?;
            a.wait_runs_local(4)?;
        }
        site_fault(s, SiteFault::Stopped, false)?;
        s.wait_all(mark, &SITE_CHECKS, "resolved", 30.0, t0)?;
        Ok(site_incident(Sender::Any))
    });
    out
}

fn split(s: &mut Suite) -> Outcome {
    let mut out = outcome("7 mesh split edge | vps+third");
    let edge = s.net.host("edge").clone();
    play(s, &mut out, |s, mark, out| {
        // Only the mesh (QUIC, UDP 9101) is cut: every agent still reaches the site and the app.
        edge.fault(
            &["ip saddr { 10.77.0.12, 10.77.0.13 } udp sport 9101 drop".into()],
            &["ip daddr { 10.77.0.12, 10.77.0.13 } udp dport 9101 drop".into()],
        )?;
        let t0 = now_ms();
        let checks = [
            "peer_missing:edge",
            "peer_missing:vps",
            "peer_missing:third",
        ];
        out.tta_ms
            .push(s.wait_all(mark, &checks[..1], "firing", 30.0, t0)?);
        s.wait_all(mark, &checks, "firing", 30.0, t0)?;
        // Both sides keep probing for a while: no target alert may come.
        for name in NAMES {
            s.agent(name).wait_runs_local(10)?;
        }
        edge.heal()?;
        s.wait_all(mark, &checks, "resolved", 30.0, t0)?;
        let mut wants = incident("peer_missing:edge", Sender::Not("edge"), 0).to_vec();
        wants.extend(incident("peer_missing:vps", Sender::Is("edge"), 0));
        wants.extend(incident("peer_missing:third", Sender::Is("edge"), 0));
        Ok(wants)
    });
    out
}

fn flaky(s: &mut Suite, args: &Args) -> Outcome {
    let mut out = outcome("8 flaky link (30% loss on edge)");
    out.expected = format!("0 alerts over {} probe runs per agent", args.flaky_runs);
    let edge = s.net.host("edge").clone();
    play(s, &mut out, |s, _, _| {
        let rule = "numgen random mod 100 < 30 drop";
        edge.fault(
            &[format!("iifname != \"lo\" {rule}")],
            &[format!("oifname != \"lo\" {rule}")],
        )?;
        s.wait_runs(args.flaky_runs)?;
        edge.heal()?;
        Ok(Vec::new())
    });
    out
}

fn receiver_outage(s: &mut Suite) -> Outcome {
    let mut out = outcome("9 receiver answers 500; sender restarted");
    let dir = s.sink_dir.clone();
    play(s, &mut out, |s, mark, out| {
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
        out.tta_ms
            .push(s.wait_all(mark, &SITE_CHECKS, "firing", 120.0, t0)?);
        site_fault(s, SiteFault::Stopped, false)?;
        s.wait_all(mark, &SITE_CHECKS, "resolved", 60.0, t0)?;
        Ok(site_incident(Sender::Any))
    });
    let _ = scene::sink_failing(&dir, false);
    out
}

fn clock_skew(s: &mut Suite) -> Outcome {
    let mut out = outcome("11 clock skew (third at +5 s, faketime)");
    play(s, &mut out, |s, mark, out| {
        let t = s.agent("third");
        t.kill("-TERM")?;
        t.faketime = Some("+5s".into());
        t.spawn()?;
        let t0 = now_ms();
        t.wait_ready()?;
        let firing = s.wait_alert(mark, "clock_skew:third", "firing", 30.0)?;
        out.tta_ms.push(crate::judge::tta(&firing, t0));
        // The detail gives third's offset from the clock the others agree on, whoever sends.
        let detail = firing["detail"].as_str().unwrap_or_default();
        let off: i64 = detail
            .strip_prefix("its clock minus the one most agents agree on: ")
            .and_then(|rest| rest.split_once(" ms"))
            .and_then(|(ms, _)| ms.parse().ok())
            .with_context(|| format!("clock_skew:third firing, detail {detail:?}"))?;
        anyhow::ensure!(
            (4_000..=6_000).contains(&off),
            "clock_skew:third firing says third is {off} ms off, not about +5000 ms: {detail:?}"
        );
        s.settle()?;
        s.wait_runs(20)?;
        let t = s.agent("third");
        t.kill("-TERM")?;
        t.faketime = None;
        t.spawn()?;
        t.wait_ready()?;
        s.wait_alert(mark, "clock_skew:third", "resolved", 30.0)?;
        Ok(incident("clock_skew:third", Sender::Not("third"), 0).to_vec())
    });
    out
}
