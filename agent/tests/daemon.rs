//! `pom run` as a real process: probes on schedule against real local servers, alerts to a real
//! webhook sink, kill -9 and restarts, signals, systemd notifications.
//!
//! Every wait polls a condition with a deadline; nothing sleeps to wait and nothing is retried.

mod process;

use std::io::Read as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mesh_proto::{CheckId, Observation, Status, Timestamp};
use pom::testbed::http::TestServer;
use process::*;
use serde_json::Value;

/// The common scene: a webhook sink and two healthy targets, `shop` and `cdn`, with the config
/// that watches them (the webhook URL, a secret, goes in `HOOK_URL`).
struct ShopAndCdn {
    sink: Sink,
    shop: Target,
    config: String,
    url: String,
    _servers: [TestServer; 3],
}

impl ShopAndCdn {
    async fn start(cooldown: &str) -> Self {
        let (sink, sink_server) = Sink::start().await;
        let (shop, shop_server) = Target::start().await;
        let (_cdn, cdn_server) = Target::start().await;
        let config = alerts_section(cooldown)
            + WEBHOOK
            + &target("shop", shop_server.port(), "")
            + &target("cdn", cdn_server.port(), "");
        Self {
            sink,
            shop,
            config,
            url: hook_url(&sink_server),
            _servers: [sink_server, shop_server, cdn_server],
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_firing_per_incident_an_immediate_resolved_and_a_cooldown_on_flapping() {
    let dir = tempfile::tempdir().unwrap();
    let ShopAndCdn {
        sink,
        shop,
        config,
        url,
        _servers,
    } = ShopAndCdn::start("10s").await;
    let agent = tokio::task::block_in_place(|| {
        Agent::start(dir.path(), &config, &[("HOOK_URL", url.as_str())])
    });
    tokio::task::block_in_place(|| {
        agent.wait_runs(6);
        assert!(sink.alerts().is_empty(), "healthy targets page nothing");

        shop.set(503);
        poll("the firing", || sink.count("shop/health", "firing") == 1);
        let firing = sink.alerts()[0].clone();
        assert_eq!(firing["alert"], "health");
        assert_eq!(firing["status"], "error");
        assert_eq!(firing["target"], "shop");
        assert_eq!(firing["sent_by"], "edge");
        assert_eq!(firing["confirmed_by"], serde_json::json!(["edge"]));
        assert_eq!(firing["agents_total"], 1);
        assert_eq!(
            firing["runbook"],
            "https://runbook.example/runbook.md#health-status-change"
        );
        assert!(
            firing["summary"].as_str().unwrap().contains("503"),
            "{firing}"
        );
        let fired_at = firing["received_ms"].as_i64().unwrap();

        // Recovery inside the 10 s cooldown: the resolved does not wait for it.
        shop.set(200);
        poll("the resolved", || {
            sink.count("shop/health", "resolved") == 1
        });
        let resolved = sink.alerts()[1].clone();
        assert_eq!(resolved["incident"], firing["incident"]);
        assert!(
            resolved["received_ms"].as_i64().unwrap() - fired_at < 10_000,
            "resolved goes out at once, bypassing the cooldown"
        );
        assert_eq!(
            sink.count("shop/health", "firing"),
            1,
            "one firing per incident"
        );

        // A flap inside the cooldown: the next firing waits for the cooldown to end.
        shop.set(503);
        poll("the second firing", || {
            sink.count("shop/health", "firing") == 2
        });
        let second = sink
            .alerts()
            .into_iter()
            .filter(|a| a["event"] == "firing")
            .nth(1)
            .unwrap();
        // Receipt times carry each delivery's own latency (a few ms); the agent's clock says
        // exactly 10 s.
        assert!(
            second["received_ms"].as_i64().unwrap() - fired_at >= 9_500,
            "a flap pages at most once per cooldown: {} ms apart",
            second["received_ms"].as_i64().unwrap() - fired_at
        );
        assert_ne!(second["incident"], firing["incident"]);
        assert!(
            !agent.log().contains("SECRET-PATH-91c2"),
            "the webhook URL is a secret"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_parent_folds_its_dependants_into_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, sink_server) = Sink::start().await;
    let (edge, edge_server) = Target::start().await;
    let (shop, shop_server) = Target::start().await;
    let (_cdn, cdn_server) = Target::start().await;
    let config = alerts_section("1s")
        + WEBHOOK
        + &target("edge-proxy", edge_server.port(), "")
        + &target("shop", shop_server.port(), "depends_on = [\"edge-proxy\"]")
        + &target("cdn", cdn_server.port(), "");
    let url = hook_url(&sink_server);
    tokio::task::block_in_place(|| {
        let agent = Agent::start(dir.path(), &config, &[("HOOK_URL", url.as_str())]);
        agent.wait_runs(6);
        edge.set(502);
        shop.set(502);
        poll("the parent's firing", || {
            sink.count("edge-proxy/health", "firing") == 1
        });
        agent.wait_runs(10);
        let alerts = sink.alerts();
        assert_eq!(alerts.len(), 1, "only the parent pages: {alerts:?}");
        assert!(
            alerts[0]["detail"]
                .as_str()
                .unwrap()
                .contains("shop/health"),
            "the parent's alert lists what it folds: {}",
            alerts[0]
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn every_target_unreachable_is_one_monitoring_offline_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, sink_server) = Sink::start().await;
    let config = alerts_section("1s")
        + WEBHOOK
        + &target("a", closed_port(), "")
        + &target("b", closed_port(), "")
        + &target("c", closed_port(), "");
    let url = hook_url(&sink_server);
    tokio::task::block_in_place(|| {
        let agent = Agent::start(dir.path(), &config, &[("HOOK_URL", url.as_str())]);
        poll("monitoring_offline", || {
            sink.count("monitoring_offline", "firing") == 1
        });
        agent.wait_runs(15);
        let alerts = sink.alerts();
        assert_eq!(alerts.len(), 1, "one alert, not one per target: {alerts:?}");
        assert_eq!(alerts[0]["alert"], "monitoring_offline");
        assert_eq!(alerts[0]["target"], "edge", "a mesh alert names the agent");
        assert_eq!(
            alerts[0]["runbook"],
            "https://runbook.example/runbook.md#monitoring-offline"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_heartbeat_goes_stale_and_recovers_with_a_ping() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, sink_server) = Sink::start().await;
    let config = alerts_section("1s")
        + WEBHOOK
        + "[[heartbeats]]\nname = \"staging-tests\"\nmax_age = \"2s\"\n";
    let url = hook_url(&sink_server);
    tokio::task::block_in_place(|| {
        let agent = Agent::start(dir.path(), &config, &[("HOOK_URL", url.as_str())]);
        poll("heartbeat_stale", || {
            sink.count("staging-tests/heartbeat", "firing") == 1
        });
        assert_eq!(sink.alerts()[0]["alert"], "heartbeat_stale");
        let ping = Command::new(env!("CARGO_BIN_EXE_pom"))
            .args(["heartbeat", "staging-tests", "--api", &agent.api])
            .env_clear()
            .env("POM_API_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "{}",
            String::from_utf8_lossy(&ping.stderr)
        );
        poll("the resolved", || {
            sink.count("staging-tests/heartbeat", "resolved") == 1
        });

        let unknown = Command::new(env!("CARGO_BIN_EXE_pom"))
            .args(["heartbeat", "nope", "--api", &agent.api])
            .env_clear()
            .env("POM_API_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert_eq!(unknown.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn sustained_latency_above_twice_the_baseline_raises_latency_drift() {
    let dir = tempfile::tempdir().unwrap();
    // A week of fast answers, as an agent that ran before would have stored them.
    {
        let (store, _) = pom::store::Store::open(&dir.path().join("data")).unwrap();
        let id: CheckId = "api/health".parse().unwrap();
        let now = now_ms();
        for i in 0..60 {
            store.record_observation(
                "edge",
                &Observation {
                    check: id.clone(),
                    status: Status::Operational,
                    latency_ms: Some(10),
                    detail: "GET /health returned 200".into(),
                    at: Timestamp(now - (i + 1) * 3_600_000),
                },
            );
        }
        store.close().await.unwrap();
    }
    let (sink, sink_server) = Sink::start().await;
    let (api, api_server) = Target::start().await;
    api.delay_ms.store(150, Ordering::SeqCst);
    let (_b, b_server) = Target::start().await;
    let config = alerts_section("1s")
        + WEBHOOK
        + &target("api", api_server.port(), "")
        + &target("b", b_server.port(), "");
    let url = hook_url(&sink_server);
    tokio::task::block_in_place(|| {
        let agent = Agent::start(dir.path(), &config, &[("HOOK_URL", url.as_str())]);
        poll("latency_drift", || sink.count("api/health", "firing") == 1);
        let alert = &sink.alerts()[0];
        assert_eq!(alert["alert"], "latency_drift", "{alert}");
        assert_eq!(alert["status"], "degraded");
        assert!(
            alert["detail"]
                .as_str()
                .unwrap()
                .contains("7-day median of 10 ms"),
            "{alert}"
        );
        let status = agent.status();
        let api_check = status["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "api/health")
            .unwrap()
            .clone();
        assert_eq!(api_check["status"], "degraded");

        api.delay_ms.store(0, Ordering::SeqCst);
        poll("the resolved", || sink.count("api/health", "resolved") == 1);
        let resolved = sink
            .alerts()
            .into_iter()
            .find(|a| a["check"] == "api/health" && a["event"] == "resolved")
            .unwrap();
        assert_eq!(
            resolved["alert"], "latency_drift",
            "the resolve carries the firing's kind, so a receiver matches them: {resolved}"
        );
        assert_eq!(resolved["incident"], alert["incident"]);
        assert_eq!(sink.count("b/health", "firing"), 0);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_neither_repeats_a_page_nor_loses_an_undelivered_one() {
    let dir = tempfile::tempdir().unwrap();
    let ShopAndCdn {
        sink,
        shop,
        config,
        url,
        _servers,
    } = ShopAndCdn::start("1s").await;
    tokio::task::block_in_place(|| {
        let mut agent = Agent::start(dir.path(), &config, &[("HOOK_URL", url.as_str())]);
        shop.set(500);
        poll("the firing", || sink.count("shop/health", "firing") == 1);
        // Killed once the delivery is recorded. A kill between the receiver's answer and that
        // record would send it again after the restart: delivery is at-least-once across that
        // window, and the payload's incident/event/repeat let receivers drop the repeat.
        poll("the delivery recorded", || agent.sent("hook") == 1);

        agent.kill9();
        agent.spawn();
        agent.wait_runs(10);
        assert_eq!(
            sink.count("shop/health", "firing"),
            1,
            "no second page after kill -9"
        );

        // The channel goes down, the incident resolves, the agent dies before delivering.
        sink.failing.store(true, Ordering::SeqCst);
        shop.set(200);
        poll("the failed delivery of the resolved", || {
            agent.log().contains("alert delivery failed") && agent.log().contains("shop/health")
        });
        agent.kill9();
        sink.failing.store(false, Ordering::SeqCst);
        agent.spawn();
        poll("the resolved, after the restart", || {
            sink.count("shop/health", "resolved") == 1
        });
        agent.wait_runs(10);
        assert_eq!(sink.count("shop/health", "resolved"), 1, "delivered once");
        assert_eq!(sink.count("shop/health", "firing"), 1);
        assert!(
            !agent.log().contains("SECRET-PATH-91c2"),
            "the webhook URL never reaches the log"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_a_good_config_rejects_a_bad_one_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, a_server) = Target::start().await;
    let (_b, b_server) = Target::start().await;
    let config = target("a", a_server.port(), "");
    tokio::task::block_in_place(|| {
        let mut agent = Agent::start(dir.path(), &config, &[]);
        let ids = |agent: &Agent| -> Vec<String> {
            agent.status()["checks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&agent), ["a/health"]);

        let path = Agent::config_path(dir.path());
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            format!("{good}\n[[targets]]\nname = \"broken\"\nurl = 7\n"),
        )
        .unwrap();
        agent.signal("-HUP");
        poll("the rejection in the log", || {
            agent.log().contains("reload rejected")
        });
        assert!(
            agent.log().contains("pom.toml:"),
            "the error names the file and line"
        );
        assert_eq!(ids(&agent), ["a/health"], "the old config keeps running");
        agent.wait_runs(3);

        std::fs::write(
            &path,
            format!("{good}\n{}", target("b", b_server.port(), "")),
        )
        .unwrap();
        agent.signal("-HUP");
        poll("the new check", || ids(&agent) == ["a/health", "b/health"]);
        poll("b probed", || {
            agent.status()["checks"][1]["status"] == "operational"
        });

        let started = Instant::now();
        agent.signal("-TERM");
        let code = loop {
            if let Some(status) = agent.child().try_wait().unwrap() {
                break status.code();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "SIGTERM drains in bounded time"
            );
            std::thread::sleep(Duration::from_millis(20)); // poll interval
        };
        assert_eq!(code, Some(0));
        assert!(agent.log().contains("stopped"));
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn under_systemd_ready_follows_the_listening_api_and_the_watchdog_is_fed() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let (_a, a_server) = Target::start().await;
    let config = target("a", a_server.port(), "");
    let socket_env = socket_path.to_str().unwrap().to_owned();
    tokio::task::block_in_place(|| {
        let agent = Agent::start(
            dir.path(),
            &config,
            &[
                ("NOTIFY_SOCKET", socket_env.as_str()),
                ("WATCHDOG_USEC", "400000"),
            ],
        );
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(first.starts_with("READY=1"), "{first}");
        assert!(health(&agent.api).is_some(), "READY means the API listens");
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1", "and again");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, a_server) = Target::start().await;
    let config = format!(
        "[agent]\nname = \"edge\"\ndata_dir = \"{}\"\napi_listen = \"127.0.0.1:{}\"\n\n{}",
        dir.path().join("data").display(),
        closed_port(),
        target("a", a_server.port(), "")
    );
    std::fs::write(dir.path().join("pom.toml"), config).unwrap();
    let output = tokio::task::block_in_place(|| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pom"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(dir.path().join("pom.toml"))
            .env_clear()
            .env("POM_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + DEADLINE;
        while !seen.contains("agent started") {
            assert!(Instant::now() < deadline, "no start-up log");
            let n = stderr.read(&mut buf).unwrap();
            assert!(n > 0, "the agent exited: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let _ = child.kill();
        let _ = child.wait();
        seen
    });
    let lines: Vec<&str> = output.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        if !line.starts_with('{') {
            continue; // a partial last line
        }
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(output.contains("\"message\":\"agent started\""), "{output}");
}

/// Fills the file system at `dir` until a write fails with "no space".
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = std::io::Write::write_all(&mut file, &chunk) {
            assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
            break;
        }
    }
    // Also the last few bytes, so not even a page fits.
    while std::io::Write::write_all(&mut file, &[0u8; 512]).is_ok() {}
    path
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_logged_loudly_and_probes_and_alerts_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_disk) = SmallDisk::mount(&dir.path().join("data")) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); CI runs as root");
        return;
    };
    let ShopAndCdn {
        sink,
        shop,
        config,
        url,
        _servers,
    } = ShopAndCdn::start("1s").await;
    tokio::task::block_in_place(|| {
        let agent = Agent::start(dir.path(), &config, &[("HOOK_URL", url.as_str())]);
        agent.wait_runs(2);
        let filler = fill(&dir.path().join("data"));
        agent.wait_runs(4);
        shop.set(500);
        poll("the firing, sent even though the database is full", || {
            sink.count("shop/health", "firing") == 1
        });
        poll("a loud log line", || agent.log().contains("ERROR"));
        assert!(
            agent.log().contains("disk is full"),
            "the log says why: {}",
            agent.log()
        );
        agent.wait_runs(6);
        assert!(health(&agent.api).is_some(), "the agent keeps running");

        // Space comes back: the store catches up, and the resolved goes through the outbox.
        std::fs::remove_file(filler).unwrap();
        shop.set(200);
        poll("the resolved", || {
            sink.count("shop/health", "resolved") == 1
        });
        agent.wait_runs(6);
        assert_eq!(sink.count("shop/health", "firing"), 1);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_incident_is_posted_to_alertmanager_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (am, am_server) = AlertmanagerSink::start().await;
    let (shop, shop_server) = Target::start().await;
    let (_cdn, cdn_server) = Target::start().await;
    let config = alerts_section("1s")
        + &AlertmanagerSink::channel(&am_server)
        + &target("shop", shop_server.port(), "")
        + &target("cdn", cdn_server.port(), "");
    tokio::task::block_in_place(|| {
        let mut agent = Agent::start(dir.path(), &config, &[]);
        shop.set(500);
        poll("the firing at Alertmanager", || {
            am.posts.lock().unwrap().len() == 1
        });
        poll("the delivery recorded", || agent.sent("am") == 1);
        let first = am.posts.lock().unwrap()[0][0].clone();
        assert!(
            first.get("endsAt").is_none(),
            "a firing alert has no endsAt: {first}"
        );

        // Alertmanager forgets an alert that is not posted again within its resolve_timeout,
        // so the restarted agent posts the open incident again at once, unchanged.
        agent.kill9();
        agent.spawn();
        poll("the refresh after the restart", || {
            am.posts.lock().unwrap().len() == 2
        });
        let again = am.posts.lock().unwrap()[1][0].clone();
        assert_eq!(again["labels"], first["labels"]);
        assert_eq!(again["startsAt"], first["startsAt"]);
        assert!(again.get("endsAt").is_none());

        shop.set(200);
        poll("the resolve", || {
            am.posts
                .lock()
                .unwrap()
                .last()
                .is_some_and(|p| p[0].get("endsAt").is_some())
        });
    });
}

fn pom(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pom"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_mesh_and_alert_test_print_what_the_agent_and_channels_say() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, sink_server) = Sink::start().await;
    let (shop, shop_server) = Target::start().await;
    shop.set(503);
    let config = alerts_section("1s")
        + WEBHOOK
        + "[[alerts.channels]]\nname = \"chat\"\ntype = \"slack\"\nwebhook_url_env = \"SLACK_URL\"\n\n"
        + &target("shop", shop_server.port(), "");
    let url = hook_url(&sink_server);
    tokio::task::block_in_place(|| {
        // The daemon gets every secret; `pom alert test` below runs without SLACK_URL.
        let config_path = dir.path().join("pom.toml");
        let agent = Agent::start(
            dir.path(),
            &config,
            &[
                ("HOOK_URL", url.as_str()),
                ("SLACK_URL", "http://127.0.0.1:9/x"),
            ],
        );
        poll("shop probed", || {
            agent.status()["checks"][0]["status"] == "error"
        });

        let out = pom(
            &["status", "--api", &agent.api],
            &[("POM_API_TOKEN", TOKEN)],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "an error check exits 2: {text}");
        assert!(
            text.contains("shop/health") && text.contains("error") && text.contains("edge:error"),
            "{text}"
        );

        let out = pom(
            &["status", "--api", &agent.api],
            &[("POM_API_TOKEN", "wrong")],
        );
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"));

        let out = pom(&["mesh", "--api", &agent.api], &[("POM_API_TOKEN", TOKEN)]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains("this agent: edge") && text.contains("quorum of one"),
            "{text}"
        );

        let config_arg = config_path.to_str().unwrap();
        let out = pom(
            &["alert", "test", "--config", config_arg],
            &[("HOOK_URL", url.as_str())],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "one channel failed: {text}");
        assert!(text.contains("delivered"), "{text}");
        assert!(
            text.contains("SLACK_URL"),
            "the failure names the missing variable: {text}"
        );
        let test_alerts: Vec<Value> = sink
            .alerts()
            .into_iter()
            .filter(|a| a["check"] == "pom-test/alert")
            .collect();
        assert_eq!(test_alerts.len(), 1);
        assert!(test_alerts[0]["summary"].as_str().unwrap().contains("TEST"));

        let out = pom(
            &["alert", "test", "--config", config_arg, "--channel", "hook"],
            &[("HOOK_URL", url.as_str())],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let out = pom(
            &["alert", "test", "--config", config_arg, "--channel", "nope"],
            &[],
        );
        assert_eq!(out.status.code(), Some(3));
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dependant_that_fails_first_asks_its_parent_and_is_folded() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, sink_server) = Sink::start().await;
    let (edge, edge_server) = Target::start().await;
    let (shop, shop_server) = Target::start().await;
    edge.set(502);
    shop.set(502);
    // The parent's own slot is up to 30 s away (an hourly check): only its canary, asked by
    // the failing dependant, can tell in time that the parent is down.
    let parent = format!(
        "[[targets]]\nname = \"edge-proxy\"\nurl = \"http://127.0.0.1:{}\"\n  [targets.health]\n  path = \"/health\"\n  interval = \"1h\"\n  timeout = \"500ms\"\n\n",
        edge_server.port()
    );
    let config = alerts_section("1s")
        + WEBHOOK
        + &parent
        + &target("shop", shop_server.port(), "depends_on = [\"edge-proxy\"]");
    let url = hook_url(&sink_server);
    tokio::task::block_in_place(|| {
        let agent = Agent::start(dir.path(), &config, &[("HOOK_URL", url.as_str())]);
        poll("the parent's firing", || {
            sink.count("edge-proxy/health", "firing") == 1
        });
        agent.wait_runs(4);
        let alerts = sink.alerts();
        assert_eq!(alerts.len(), 1, "the dependant is folded: {alerts:?}");
        assert!(
            alerts[0]["detail"]
                .as_str()
                .unwrap()
                .contains("shop/health"),
            "{}",
            alerts[0]
        );
    });
}
