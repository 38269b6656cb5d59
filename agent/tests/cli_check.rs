//! `pom check` as a deploy pipeline runs it: the real binary, its exit codes
//! (Nagios convention) and its JSON contract, against servers in this test process.

use std::path::Path;
use std::process::{Command, Output};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use pom::testbed::http::TestServer;

fn app() -> Router {
    Router::new()
        .route("/api/health", get(|| async { r#"{"status":"ok"}"# }))
        .route("/login", get(|| async { "<form>" }))
        .route("/tired", get(|| async { r#"{"status":"degraded"}"# }))
        .route(
            "/broken",
            get(|| async { (StatusCode::BAD_GATEWAY, "bad gateway") }),
        )
}

fn config(port: u16, dead: u16) -> String {
    format!(
        r#"
[[targets]]
name = "ok"
url = "http://127.0.0.1:{port}"
  [targets.health]
  path = "/api/health"
  expect_json = {{ status = "ok" }}
  [[targets.routes]]
  path = "/login"

[[targets]]
name = "tired"
url = "http://127.0.0.1:{port}"
  [targets.health]
  path = "/tired"
  expect_body = "\"status\":\"ok\""

[[targets]]
name = "broken"
url = "http://127.0.0.1:{port}"
  [targets.health]
  path = "/broken"

[[targets]]
name = "gone"
url = "http://127.0.0.1:{dead}"
  [[targets.tcp]]
  port = {dead}
"#
    )
}

async fn pom(args: &[&str], config: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pom"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("POM_CONFIG");
    tokio::task::spawn_blocking(move || cmd.output().expect("run pom"))
        .await
        .expect("join")
}

struct Setup {
    _server: TestServer,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

async fn setup() -> Setup {
    let server = TestServer::http(app()).await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pom.toml");
    std::fs::write(&path, config(server.port(), dead)).unwrap();
    Setup {
        _server: server,
        _dir: dir,
        path,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_follow_the_nagios_convention() {
    let s = setup().await;
    for (target, code) in [("ok", 0), ("tired", 1), ("broken", 2), ("gone", 2)] {
        let out = pom(&["check", "--target", target], &s.path).await;
        assert_eq!(
            out.status.code(),
            Some(code),
            "target {target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let all = pom(&["check"], &s.path).await;
    assert_eq!(all.status.code(), Some(2));
    let both = pom(&["check", "-t", "ok", "-t", "tired"], &s.path).await;
    assert_eq!(both.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_and_unknown_target_exit_3() {
    let s = setup().await;
    let out = pom(&["check", "--target", "nope"], &s.path).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no target named \"nope\""));

    std::fs::write(&s.path, "[[targets]]\nname = 1\n").unwrap();
    let out = pom(&["check"], &s.path).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2:8: invalid type"));
}

#[tokio::test(flavor = "multi_thread")]
async fn table_output_has_no_colour_off_a_terminal() {
    let s = setup().await;
    let out = pom(&["check"], &s.path).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains('\u{1b}'), "escape codes in {stdout:?}");
    assert!(stdout.starts_with("CHECK"), "{stdout}");
    let broken = stdout
        .lines()
        .find(|l| l.starts_with("broken/health"))
        .expect("broken row");
    assert!(
        broken.split_whitespace().nth(1) == Some("error"),
        "{broken}"
    );
    assert!(
        stdout.contains("5 checks: 2 operational, 1 degraded, 1 error, 1 unreachable"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_is_the_contract_shape() {
    let s = setup().await;
    let out = pom(&["check", "--output", "json"], &s.path).await;
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    for result in json["results"].as_array().unwrap() {
        assert!(result["latency_ms"].is_u64());
    }
    insta::with_settings!({filters => vec![(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"), (r"tcp:\d+", "tcp:[port]")]}, {
        insta::assert_json_snapshot!(json, {".results[].latency_ms" => "[latency]"});
    });
}
