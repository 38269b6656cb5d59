//! The network-namespace fault suite (issue 5; results: docs/fault-suite.md).
//!
//! Usage (as root): `cargo build -p pom --bin pom --example fault_suite` and then
//! `target/debug/examples/fault_suite [--scenario N]... [--repeat K]`, or `bench/fault-suite.sh`.
//!
//! Every agent, the site and the receiver is its own host: a network namespace (`pomf-NAME`) with
//! its own address in 10.77.0.0/24 on a bridge (itself in the namespace `pomf-sw`). Three real
//! `pom run` processes (`edge`, `third`, `vps`) talk mutual-TLS QUIC to each other and watch the
//! site (nginx HTTP and HTTPS, dnsmasq) and an app that runs on the `vps` host; they alert to a
//! webhook sink on the receiver host. Faults are made with `ip link` and nftables inside the
//! namespaces. Each scenario asserts the exact alerts the sink received and records time-to-alert.
//!
//! Every wait polls a condition with a deadline; observation windows are counted in probe runs
//! (`pom_probe_runs_total`). Nothing is retried. The namespaces (and every process in them) are
//! removed at start if a previous run left them, and on every exit path: the `Net` guard on
//! return and on panic, a signal thread on SIGINT/SIGTERM.

mod agents;
mod intruders;
mod judge;
mod netns;
mod report;
mod scenarios;
mod scene;
mod soak;
mod suite;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "PoM fault suite: a 3-agent mesh in network namespaces (docs/fault-suite.md)")]
pub(crate) struct Args {
    /// Scenarios to run (default: every implemented one, in priority order).
    #[arg(long = "scenario")]
    pub(crate) scenarios: Vec<u32>,
    /// Repeats of each fault in scenarios 2 and 3.
    #[arg(long, default_value_t = 5)]
    pub(crate) repeat: usize,
    /// Probe runs (per agent) that scenario 1 observes: 4 checks at 2 s make 2 runs a second.
    #[arg(long, default_value_t = 240)]
    pub(crate) steady_runs: u64,
    /// Probe runs (per agent) of scenario 8's flaky link.
    #[arg(long, default_value_t = 240)]
    pub(crate) flaky_runs: u64,
    /// The `pom` binary (default: `../pom` next to this example).
    #[arg(long, env = "POM_BIN")]
    pub(crate) pom: Option<PathBuf>,
    /// Write the table to this file (default: docs/fault-suite.md; `-` for none).
    #[arg(long, default_value = "docs/fault-suite.md")]
    pub(crate) out: String,
    /// Keep the scratch directory (configs, data, logs) even on success.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Soak mode instead of the scenarios: 1,000 checks on the three agents for this many
    /// minutes, reporting memory over time and the mesh's bytes per second (docs/benchmarks.md).
    #[arg(long, value_name = "MINUTES")]
    pub(crate) soak: Option<u64>,
}

/// Polls `condition` every 100 ms until it holds; fails after `secs` seconds.
pub(crate) fn poll(
    what: &str,
    secs: f64,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {secs} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100)); // poll interval, not a wait
    }
}

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("sink") {
        let dir = PathBuf::from(argv.next().context("sink DIR ADDR")?);
        let listen = argv.next().context("sink DIR ADDR")?;
        return scene::serve_sink(&dir, &listen);
    }
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("garbage") {
        return intruders::garbage_main(argv);
    }
    let args = Args::parse();
    // SIGINT/SIGTERM: kill what runs in our namespaces, delete them, exit.
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("fault suite: interrupted, cleaning up");
        netns::sweep();
        std::process::exit(130);
    });
    if let Some(minutes) = args.soak {
        let pom = suite::find_pom(&args)?;
        let base = std::env::current_dir()?.join("target/fault-suite");
        std::fs::create_dir_all(&base)?;
        let work = tempfile::Builder::new().prefix("soak-").tempdir_in(&base)?;
        return soak::run(&args, minutes, &pom, work.path());
    }
    let started = Instant::now();
    let results = scenarios::run_all(&args)?;
    let elapsed = started.elapsed();
    let failed = report::finish(&args, &results, elapsed)?;
    if failed {
        bail!("the fault suite found deviations (see the table above)");
    }
    Ok(())
}
