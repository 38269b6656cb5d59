//! The table: printed at the end and written to docs/fault-suite.md with the command and date.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Args;
use crate::scenarios::Outcome;

fn tta(xs: &[i64]) -> (String, String) {
    if xs.is_empty() {
        return ("–".into(), "–".into());
    }
    let mut v = xs.to_vec();
    v.sort_unstable();
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2] as f64
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) as f64 / 2.0
    };
    let max = v[v.len() - 1];
    (
        format!("{:.1} s", median / 1000.0),
        format!("{:.1} s", max as f64 / 1000.0),
    )
}

fn utc_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Prints the table, writes it to `args.out`; true if any scenario deviated.
pub(crate) fn finish(args: &Args, results: &[Outcome], elapsed: Duration) -> anyhow::Result<bool> {
    let mut table = String::from(
        "| scenario | runs | expected (each run) | observed | time-to-alert median | max | result |\n|---|---|---|---|---|---|---|\n",
    );
    let mut failed = false;
    for o in results {
        let (median, max) = tta(&o.tta_ms);
        let result = if o.deviations.is_empty() {
            "pass".to_owned()
        } else {
            failed = true;
            format!("**FAIL**: {}", o.deviations.join("; "))
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {median} | {max} | {} |",
            cell(&o.scenario),
            o.runs,
            cell(&o.expected),
            cell(&o.observed),
            cell(&result)
        );
    }
    let command: Vec<String> = std::env::args().collect();
    let head = format!(
        "Run {} on `{}` ({} CPUs); suite time {:.0} s; command: `{}`\n\n",
        utc_now(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, usize::from),
        elapsed.as_secs_f64(),
        command.join(" ")
    );
    println!("\n{head}{table}");
    if args.out != "-" {
        let doc = format!(
            "# Fault suite\n\n\
             The network-namespace fault suite of issue 5 (`agent/examples/fault_suite/`): three `pom run`\n\
             agents (`edge` 10.77.0.11, `vps` 10.77.0.12, `third` 10.77.0.13), a site host (10.77.0.20:\n\
             nginx HTTP and HTTPS, dnsmasq) and a receiver host (10.77.0.30: webhook sink), each its own\n\
             network namespace on a bridge. Four checks at 2 s (timeout 1 s): `site/health`,\n\
             `site-tls/health`, `site-dns/dns:A:site.pomf.test`, `app/health` (an nginx on the `vps`\n\
             host). Heartbeats every 1 s, 3 missed make a peer missing, cooldown 1 s.\n\n\
             Run it as root: `bench/fault-suite.sh [--scenario N]... [--repeat K]`.\n\n\
             Time-to-alert is from the fault (or the kill) to the firing's arrival at the sink; for\n\
             site faults, the later of the two firings (`site/health`, `site-tls/health`). Every run\n\
             of a scenario is judged after the mesh settled again and every agent did 30 more probe\n\
             runs: the alerts received since the fault must be exactly the expected ones.\n\n\
             ## Latest run\n\n{head}{table}"
        );
        std::fs::write(&args.out, doc)?;
    }
    Ok(failed)
}
