//! `pom demo`, run as a user runs it: the real binary, to its end, within a deadline. It must
//! tell the whole story (one page per transition, the cut-off agent isolated and silent, its
//! outage reported), exit 0, and leave no agent running, also when interrupted.
//!
//! Every wait polls with a deadline; nothing sleeps to wait and nothing is retried.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The demo takes about 15 s; this leaves room for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// A running `pom demo`, killed on drop; its stdout lines are collected as they come.
struct Demo {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pom"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Polls until `condition` holds on the output so far; fails after [`DEADLINE`].
    fn until(&mut self, what: &str, condition: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !condition(&self.lines()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the demo exited ({status}) before {what}:\n{}",
                    self.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50)); // poll interval, not a wait
        }
    }

    /// Waits for the demo to exit (killing it after [`DEADLINE`]); its status and every line.
    fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the demo did not end within {DEADLINE:?}:\n{}",
                    self.lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50)); // poll interval, not a wait
        };
        // The reader thread ends with stdout; give it its last lines.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.lines) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10)); // poll interval, not a wait
        }
        (status, self.lines())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agents' process ids, from the `started agent NAME (pid N, …` lines.
fn agent_pids(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.split_once("(pid ")?.1.split_once(',')?.0.parse().ok())
        .collect()
}

/// Fails if any of `pids` still runs (Linux: `/proc/PID`; the demo reaps its children).
fn assert_stopped(pids: &[u32]) {
    assert_eq!(pids.len(), 3, "three agents were started");
    if cfg!(target_os = "linux") {
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "agent process {pid} still runs after the demo ended"
            );
        }
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn the_demo_tells_the_whole_story_and_ends_by_itself() {
    let started = Instant::now();
    let (status, lines) = Demo::start(&[]).finish();
    let out = lines.join("\n");
    assert!(status.success(), "exit {status}:\n{out}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the demo took {:?}:\n{out}",
        started.elapsed()
    );

    // The mesh forms.
    for seen in [
        "astra sees edge and vps alive",
        "edge sees astra and vps alive",
        "vps sees astra and edge alive",
    ] {
        assert_eq!(count(&lines, seen), 1, "{out}");
    }
    // shop down: confirmed by the quorum, paged once, by the first agent; the others hold.
    assert_eq!(
        count(&lines, ">> webhook: FIRING shop/health, sent by astra"),
        1,
        "{out}"
    );
    assert_eq!(count(&lines, "FIRING shop/health"), 1, "one firing:\n{out}");
    assert!(
        out.contains("astra's verdict on shop/health: down"),
        "{out}"
    );
    assert!(out.contains("held theirs: one page, not three"), "{out}");
    assert_eq!(
        count(&lines, ">> webhook: RESOLVED shop/health, sent by astra"),
        1,
        "{out}"
    );
    // vps cut off: a true alert, once; vps isolated; no false alert from anyone.
    assert_eq!(
        count(&lines, ">> webhook: FIRING peer_missing:vps, sent by astra"),
        1,
        "{out}"
    );
    assert!(
        out.contains("vps's own view: astra missing, edge missing; isolated: yes"),
        "{out}"
    );
    assert!(out.contains("no false alert"), "{out}");
    assert_eq!(count(&lines, "FIRING blog/health"), 0, "{out}");
    let from_vps = lines
        .iter()
        .filter(|l| l.contains(">> webhook:") && l.contains("sent by vps"))
        .count();
    assert_eq!(from_vps, 1, "vps sends only its report:\n{out}");
    // vps back: peer_missing resolved once; vps reports its outage with its time range.
    assert_eq!(
        count(
            &lines,
            ">> webhook: RESOLVED peer_missing:vps, sent by astra"
        ),
        1,
        "{out}"
    );
    assert_eq!(
        count(
            &lines,
            ">> webhook: RESOLVED monitoring_offline, sent by vps"
        ),
        1,
        "{out}"
    );
    assert!(out.contains("agent vps was cut off from "), "{out}");
    assert!(out.contains("its own network was down"), "{out}");
    // The summary: the five alerts of the story and no other; nothing failed.
    assert!(
        out.contains("Every alert the webhook sink received, in order (5;"),
        "{out}"
    );
    assert!(
        out.contains("Per kind: health 2, monitoring_offline 1, peer_missing 2."),
        "{out}"
    );
    assert_eq!(count(&lines, ">> webhook:"), 5, "{out}");
    assert!(out.contains("The demo ended by itself"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    assert_stopped(&agent_pids(&lines));
}

#[test]
fn the_json_story_carries_every_alert_payload() {
    let (status, lines) = Demo::start(&["--output", "json"]).finish();
    let out = lines.join("\n");
    assert!(status.success(), "exit {status}:\n{out}");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "alert")
        .map(|e| &e["alert"])
        .collect();
    let of = |check: &str, event: &str| -> Vec<&Value> {
        alerts
            .iter()
            .copied()
            .filter(|a| a["check"] == check && a["event"] == event)
            .collect()
    };

    let firing = of("shop/health", "firing");
    assert_eq!(firing.len(), 1, "{out}");
    assert_eq!(firing[0]["sent_by"], "astra");
    assert_eq!(firing[0]["agents_total"], 3);
    assert!(
        firing[0]["confirmed_by"].as_array().unwrap().len() >= 2,
        "confirmed by a quorum: {}",
        firing[0]
    );
    let resolved = of("shop/health", "resolved");
    assert_eq!(resolved.len(), 1, "{out}");
    assert_eq!(resolved[0]["incident"], firing[0]["incident"]);

    let missing = of("peer_missing:vps", "firing");
    assert_eq!(missing.len(), 1, "{out}");
    assert_eq!(missing[0]["target"], "vps");
    assert_eq!(missing[0]["sent_by"], "astra");
    assert_eq!(of("peer_missing:vps", "resolved").len(), 1, "{out}");

    let report = of("monitoring_offline", "resolved");
    assert_eq!(report.len(), 1, "vps reports its outage once:\n{out}");
    assert_eq!(report[0]["sent_by"], "vps");
    assert_eq!(report[0]["target"], "vps");
    assert_eq!(report[0]["alert"], "monitoring_offline");
    let summary = report[0]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("agent vps was cut off from ")
            && summary.ends_with(": its own network was down"),
        "{summary}"
    );
    assert!(of("monitoring_offline", "firing").is_empty(), "{out}");

    // No alert about a site other than shop's one incident, and nothing else from vps.
    let about_sites = alerts
        .iter()
        .filter(|a| a["target"] == "shop" || a["target"] == "blog")
        .count();
    assert_eq!(about_sites, 2, "{out}");
    assert_eq!(
        alerts.iter().filter(|a| a["sent_by"] == "vps").count(),
        1,
        "{out}"
    );
    assert_eq!(alerts.len(), 5, "{out}");
    assert!(events.iter().all(|e| e["kind"] != "failed"), "{out}");
    assert_stopped(&agent_pids(&lines));
}

#[test]
fn an_interrupted_demo_stops_its_agents() {
    let mut demo = Demo::start(&[]);
    demo.until("the mesh to form", |lines| {
        lines
            .iter()
            .any(|l| l.contains("every agent holds three votes"))
    });
    let pids = agent_pids(&demo.lines());
    let status = Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (status, lines) = demo.finish();
    assert_eq!(status.code(), Some(130), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("Interrupted")),
        "{}",
        lines.join("\n")
    );
    assert_stopped(&pids);
}
