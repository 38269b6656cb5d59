//! `--soak MINUTES` (not in CI): the three agents watch 1,000 checks for MINUTES, and the suite
//! samples each agent's resident memory every 10 s and counts the mesh's bytes with nftables
//! counters on the mesh port in each agent's namespace (QUIC with its headers and keep-alives,
//! whatever the agent's own counters say). The report goes to stdout and to the "Soak" section
//! of docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::Args;
use crate::agents::{Agent, MESH_PORT, NAMES};
use crate::netns::{Host, Net, exec, nft};
use crate::scene;

/// Checks in the soak, split over the site's HTTP server (as separate targets).
const CHECKS: usize = 1_000;
/// Their interval: 100 probes a second per agent.
const INTERVAL: &str = "10s";
/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const SITE: &str = "10.77.0.20";

fn config(channels_to: &str) -> String {
    let mut out = format!(
        "[alerts]\ncooldown = \"1m\"\nrepeat_interval = \"0s\"\n\n\
         [[alerts.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{channels_to}\"\n\n"
    );
    for i in 0..CHECKS {
        let _ = write!(
            out,
            "[[targets]]\nname = \"t{i:04}\"\nurl = \"http://{SITE}\"\n  [targets.health]\n  path = \"/health\"\n  interval = \"{INTERVAL}\"\n  timeout = \"2s\"\n\n"
        );
    }
    out
}

/// Counters of the mesh's UDP bytes, out and in, in `host`'s namespace.
fn count_mesh(host: &Host) -> anyhow::Result<()> {
    nft(
        &host.ns,
        &format!(
            "table inet soak {{\n  counter mesh_out {{ }}\n  counter mesh_in {{ }}\n\
             chain out {{ type filter hook output priority 0; udp sport {MESH_PORT} counter name mesh_out; udp dport {MESH_PORT} counter name mesh_out; }}\n\
             chain in {{ type filter hook input priority 0; udp dport {MESH_PORT} counter name mesh_in; udp sport {MESH_PORT} counter name mesh_in; }}\n}}\n"
        ),
    )
}

/// The bytes the two counters counted so far: (out, in).
fn mesh_bytes(host: &Host) -> anyhow::Result<(u64, u64)> {
    let out = exec(
        &host.ns,
        &["nft", "list", "counters", "table", "inet", "soak"],
    )?;
    let (mut tx, mut rx, mut current) = (None, None, "");
    for line in out.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("counter ") {
            current = name.trim_end_matches('{').trim();
        } else if line.contains("bytes") {
            let bytes = line
                .split_whitespace()
                .skip_while(|w| *w != "bytes")
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("an nft counter line: {line}"))?;
            match current {
                "mesh_out" => tx = Some(bytes),
                "mesh_in" => rx = Some(bytes),
                _ => {}
            }
        }
    }
    tx.zip(rx)
        .with_context(|| format!("the mesh counters in {}: {out}", host.ns))
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Runs the soak for `minutes`.
pub(crate) fn run(args: &Args, minutes: u64, pom: &Path, work: &Path) -> anyhow::Result<()> {
    let net = Net::create(&[
        ("edge", "10.77.0.11"),
        ("vps", "10.77.0.12"),
        ("third", "10.77.0.13"),
        ("site", SITE),
        ("recv", "10.77.0.30"),
    ])?;
    let _site = scene::nginx(&work.join("nginx-site"), net.host("site"), 80, None)?;
    let sink_dir = work.join("sink");
    let _sink = scene::sink(&sink_dir, net.host("recv"))?;
    let ca = work.join("mesh-ca");
    pom::pki::init_ca(&ca, 365, false).context("creating the mesh CA")?;
    let peers: Vec<Host> = NAMES.iter().map(|n| net.host(n).clone()).collect();
    let shared = config(&format!(
        "http://10.77.0.30:{}{}",
        scene::SINK_PORT,
        scene::HOOK_PATH
    ));
    let mut agents = Vec::new();
    for name in NAMES {
        let host = net.host(name);
        count_mesh(host)?;
        agents.push(Agent::prepare(work, &ca, pom, name, host, &peers, &shared)?);
    }
    for a in &mut agents {
        a.spawn()?;
    }
    for a in &mut agents {
        a.wait_ready()?;
    }
    eprintln!(
        "soak: {CHECKS} checks at {INTERVAL} on each of {} agents for {minutes} min",
        agents.len()
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let bytes0: Vec<(u64, u64)> = agents
        .iter()
        .map(|a| mesh_bytes(&a.host))
        .collect::<anyhow::Result<_>>()?;
    // Per agent, per minute: the RSS samples (KiB).
    let mut samples: Vec<Vec<Vec<u64>>> = vec![Vec::new(); agents.len()];
    let mut next = start;
    while Instant::now() < end {
        let minute = usize::try_from(start.elapsed().as_secs() / 60).unwrap_or(usize::MAX);
        for (i, a) in agents.iter_mut().enumerate() {
            a.alive()?;
            let pid = a.pid().context("a running agent has a pid")?;
            let rss = rss_kib(pid).with_context(|| format!("{}'s VmRSS", a.name))?;
            if samples[i].len() <= minute {
                samples[i].resize(minute + 1, Vec::new());
            }
            samples[i][minute].push(rss);
        }
        next += SAMPLE_EVERY;
        // The sampling period of a measurement, not a wait for a condition.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bytes1: Vec<(u64, u64)> = agents
        .iter()
        .map(|a| mesh_bytes(&a.host))
        .collect::<anyhow::Result<_>>()?;
    let runs: Vec<u64> = agents.iter().map(|a| a.runs().unwrap_or(0)).collect();
    let alerts = scene::received(&sink_dir, scene::HOOK_PATH).len();
    let report = report(
        minutes, elapsed, &agents, &samples, &bytes0, &bytes1, &runs, alerts,
    );
    println!("{report}");
    if args.out != "-" {
        write_section(Path::new("docs/benchmarks.md"), &report)?;
    }
    drop(agents);
    drop(net);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    minutes: u64,
    elapsed: f64,
    agents: &[Agent],
    samples: &[Vec<Vec<u64>>],
    bytes0: &[(u64, u64)],
    bytes1: &[(u64, u64)],
    runs: &[u64],
    alerts: usize,
) -> String {
    let mut out = String::new();
    let command: Vec<String> = std::env::args().collect();
    let _ = writeln!(
        out,
        "Run {} on `{}` ({} CPUs), {minutes} min ({elapsed:.0} s): {CHECKS} HTTP checks at {INTERVAL} on each agent, \
         heartbeats every 1 s; command: `{}`\n",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, usize::from),
        command.join(" ")
    );
    let _ = writeln!(
        out,
        "RSS per agent, median of each minute's samples (MiB), first and last minute and the highest sample:\n"
    );
    let _ = writeln!(
        out,
        "| agent | probe runs | runs/s | RSS minute 1 | RSS last minute | growth | max sample | mesh out B/s | mesh in B/s |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (i, a) in agents.iter().enumerate() {
        let minutes_rss: Vec<u64> = samples[i].iter().map(|m| median(&mut m.clone())).collect();
        let first = minutes_rss.first().copied().unwrap_or(0);
        let last = minutes_rss.last().copied().unwrap_or(0);
        let max = samples[i].iter().flatten().max().copied().unwrap_or(0);
        let mib = |k: u64| k as f64 / 1024.0;
        let tx = bytes1[i].0.saturating_sub(bytes0[i].0) as f64 / elapsed;
        let rx = bytes1[i].1.saturating_sub(bytes0[i].1) as f64 / elapsed;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:+.1}% | {:.1} | {tx:.0} | {rx:.0} |",
            a.name,
            runs[i],
            runs[i] as f64 / elapsed,
            mib(first),
            mib(last),
            if first > 0 {
                (last as f64 / first as f64 - 1.0) * 100.0
            } else {
                0.0
            },
            mib(max),
        );
    }
    let _ = writeln!(out, "\nAlerts received during the soak: {alerts}.\n");
    let _ = writeln!(out, "RSS medians minute by minute (MiB):\n");
    let _ = writeln!(out, "| minute | {} |", NAMES.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(agents.len()));
    let rows = samples.iter().map(Vec::len).max().unwrap_or(0);
    for m in 0..rows {
        let cells: Vec<String> = samples
            .iter()
            .map(|s| {
                s.get(m).map_or("–".into(), |v| {
                    format!("{:.1}", median(&mut v.clone()) as f64 / 1024.0)
                })
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", m + 1, cells.join(" | "));
    }
    out
}

/// Replaces the "Soak" section's latest run in `doc` (or appends the section).
fn write_section(doc: &Path, report: &str) -> anyhow::Result<()> {
    const HEAD: &str = "## Soak: 1,000 checks on three agents (fault suite --soak)";
    const RUN: &str = "### Latest run";
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let section = format!(
        "{HEAD}\n\n\
         `bench/fault-suite.sh --soak MINUTES` (as root) starts the fault suite's three agents in their\n\
         network namespaces with 1,000 HTTP checks each against the site's nginx, samples every agent's\n\
         VmRSS every 10 s, and counts the mesh's UDP bytes (both directions, QUIC headers and keep-alives\n\
         included) with nftables counters on port {MESH_PORT} in each agent's namespace. The memory must stay\n\
         flat: the last minute's median within a few percent of the first's.\n\n{RUN}\n\n{report}"
    );
    let new = match text.find(HEAD) {
        Some(start) => {
            let rest = &text[start + HEAD.len()..];
            let end = rest
                .find("\n## ")
                .map_or(text.len(), |i| start + HEAD.len() + i + 1);
            format!("{}{section}\n{}", &text[..start], &text[end..])
        }
        None => format!(
            "{}\n{section}",
            text.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(doc, new)?;
    Ok(())
}
