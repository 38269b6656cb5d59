//! The table: printed at the end and written to docs/fault-suite.md with the command and date.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Args;
use crate::judge::Outcome;

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

/// Where the hand-written part of docs/fault-suite.md starts.
const HISTORY: &str = "\n## History";

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
             The network-namespace fault suite of issue 5 (`agent/examples/fault_suite/`), run by\n\
             `.ci/run` and by hand with `bench/fault-suite.sh` (as root). Every host is its own network\n\
             namespace on one bridge: three `pom run` agents (`edge` 10.77.0.11, `vps` 10.77.0.12,\n\
             `third` 10.77.0.13), a site host (10.77.0.20: nginx over HTTP and HTTPS with test\n\
             certificates, dnsmasq), a receiver host (10.77.0.30: a webhook sink and Debian's\n\
             Alertmanager, which notifies the sink in turn), and for scenario 10 two intruder hosts\n\
             (10.77.0.14, 10.77.0.15). Four checks at 2 s (timeout 1.5 s): `site/health`,\n\
             `site-tls/health`, `site-dns/dns:A:site.pomf.test`, `app/health` (an nginx on the `vps`\n\
             host, so losing the VPS loses both). Heartbeats every 1 s, 3 missed make a peer missing,\n\
             cooldown 1 s. Faults are made with `ip link`, nftables rules inside the namespaces\n\
             (REJECT, DROP, 100 % and 30 % loss with `numgen random`), kill -9, SIGTERM and\n\
             libfaketime.\n\n\
             Time-to-alert is from the fault (or the kill) to the firing's arrival at the webhook; for\n\
             several firings, the last of them. Every run of a scenario is judged after the mesh\n\
             settled again and every agent did 30 more probe runs (10 between two repeats of one\n\
             fault: an alert that comes later counts against the next repeat): the webhook must have received\n\
             exactly the expected alerts since the fault (each once, from the expected sender,\n\
             confirmed by enough agents), and Alertmanager must have notified exactly one `firing` and\n\
             one `resolved` per expected firing, and nothing else.\n\n\
             ## Latest run\n\n{head}{table}"
        );
        // The hand-written history below the table is kept.
        let history = std::fs::read_to_string(&args.out)
            .ok()
            .and_then(|old| old.find(HISTORY).map(|i| old[i..].to_owned()))
            .unwrap_or_default();
        std::fs::write(&args.out, format!("{doc}{history}"))?;
    }
    Ok(failed)
}
