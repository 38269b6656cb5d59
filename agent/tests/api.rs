//! The HTTP API through `tower::ServiceExt::oneshot`: auth, JSON shapes, errors, metrics.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use mesh_proto::{CheckId, Status};
use pom::api::{self, AgentInfo, ApiState, MAX_BODY, Token};
use pom::board::Board;
use pom::store::Store;
use serde_json::Value;
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    state: ApiState,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (store, instance) = Store::open(dir.path()).unwrap();
    let board = Arc::new(Board::default());
    let id: CheckId = "shop/health".parse().unwrap();
    board.set_checks([
        (id.clone(), Some(60_000)),
        ("nightly/heartbeat".parse().unwrap(), None),
    ]);
    board.update(&id, |s| {
        s.status = Some(Status::Error);
        s.votes.insert("edge".into(), Status::Error);
        s.last_checked = Some(pom::monitor::now());
        s.latency_ms = Some(42);
        s.detail = "GET /api/health returned 502".into();
        s.cert_expiry = Some(1_800_000_000);
    });
    board.counters.alert_sent("hook");
    let state = ApiState {
        info: Arc::new(AgentInfo {
            name: "edge".into(),
            instance_id: instance.to_string(),
            version: "0.1.0",
        }),
        token: Arc::new(Token::new(Some("s3cret-token".into()))),
        board,
        store,
        heartbeats: Arc::new(RwLock::new(BTreeSet::from(["nightly".to_owned()]))),
        scheduler: Arc::default(),
    };
    Fixture { _dir: dir, state }
}

async fn call(
    state: &ApiState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Body,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = api::router(state.clone())
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

async fn json(
    state: &ApiState,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let (status, body) = call(state, method, uri, token, Body::empty()).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, value)
}

#[tokio::test]
async fn health_needs_no_token_and_describes_this_agent() {
    let f = fixture();
    let (status, body) = json(&f.state, "GET", "/api/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["name"], "edge");
    assert_eq!(body["version"], "0.1.0");
    assert_eq!(body["instance_id"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn authenticated_routes_refuse_a_missing_or_wrong_token_with_json() {
    let f = fixture();
    for (method, uri) in [
        ("GET", "/api/status"),
        ("GET", "/api/mesh"),
        ("POST", "/api/heartbeats/nightly"),
    ] {
        for token in [None, Some("wrong"), Some("s3cret-token "), Some("")] {
            let (status, body) = json(&f.state, method, uri, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}");
            assert!(body["error"].as_str().unwrap().contains("token"));
            assert!(
                !body.to_string().contains("s3cret"),
                "the token never leaks"
            );
        }
    }
    // The scheme is `Bearer`, exactly; a token elsewhere does not count.
    let request = Request::get("/api/status")
        .header(header::AUTHORIZATION, "bearer s3cret-token")
        .body(Body::empty())
        .unwrap();
    let response = api::router(f.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unset_token_refuses_everything_instead_of_opening() {
    let f = fixture();
    f.state.token.set(None);
    let (status, _) = json(&f.state, "GET", "/api/status", Some("")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn status_has_the_contract_fields_per_check() {
    let f = fixture();
    let (status, body) = json(&f.state, "GET", "/api/status", Some("s3cret-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["agent"], "edge");
    let checks = body["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    let shop = &checks[1];
    assert_eq!(shop["id"], "shop/health");
    assert_eq!(shop["target"], "shop");
    assert_eq!(shop["kind"], "health");
    assert_eq!(shop["status"], "error");
    assert_eq!(shop["verdict"], "down");
    assert_eq!(shop["votes"], serde_json::json!({"edge": "error"}));
    assert!(shop["last_checked"].as_str().unwrap().ends_with('Z'));
    assert_eq!(shop["latency_ms"], 42);
    assert_eq!(shop["detail"], "GET /api/health returned 502");
    let never = &checks[0];
    assert_eq!(never["id"], "nightly/heartbeat");
    assert_eq!(never["status"], Value::Null);
    assert_eq!(never["verdict"], "unknown");
    assert_eq!(never["last_checked"], Value::Null);
}

#[tokio::test]
async fn mesh_shows_this_agent_and_no_peers_when_alone() {
    let f = fixture();
    let (status, body) = json(&f.state, "GET", "/api/mesh", Some("s3cret-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["self"]["name"], "edge");
    assert_eq!(body["self"]["isolated"], false);
    assert_eq!(body["peers"], serde_json::json!([]));
}

#[tokio::test]
async fn a_ping_is_recorded_on_the_board_and_in_the_store() {
    let f = fixture();
    let (status, body) = json(
        &f.state,
        "POST",
        "/api/heartbeats/nightly",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["heartbeat"], "nightly");
    assert_eq!(body["stored"], true);
    let on_board = f.state.board.pings()["nightly"];
    assert_eq!(
        f.state.store.last_ping("nightly").await.unwrap(),
        Some(on_board)
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let f = fixture();
    let (status, body) = json(
        &f.state,
        "POST",
        "/api/heartbeats/unknown",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("unknown"));

    let (status, body) = call(
        &f.state,
        "POST",
        "/api/heartbeats/nightly",
        Some("s3cret-token"),
        Body::from(vec![b'x'; MAX_BODY + 1]),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["error"].is_string());
    assert!(
        f.state.board.pings().is_empty(),
        "a refused ping does not count"
    );

    let (status, body) = json(&f.state, "GET", "/api/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());

    let (status, body) = json(&f.state, "DELETE", "/api/health", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string());
}

/// Parses the Prometheus text format strictly enough to catch a malformed line: every sample is
/// `name{label="value",...} number`, every family has HELP and TYPE before its samples.
/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut typed = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed.insert(parts.next().unwrap().to_owned());
            let kind = parts.next().unwrap();
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed {line:?}"));
                let mut labels = Vec::new();
                let mut rest = inner;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        let (i, c) = chars
                            .next()
                            .unwrap_or_else(|| panic!("unterminated {line:?}"));
                        match c {
                            '\\' => value.push(chars.next().unwrap().1),
                            '"' => break i,
                            c => value.push(c),
                        }
                    };
                    labels.push((key.to_owned(), value));
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line:?}");
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_carry_the_contract_families() {
    let f = fixture();
    let (status, body) = call(&f.state, "GET", "/metrics", None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let samples = parse_metrics(&text);
    let value = |name: &str, label: (&str, &str)| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.iter().any(|(k, v)| k == label.0 && v == label.1))
            .map(|(_, _, v)| *v)
    };
    assert_eq!(
        value("pom_probe_success", ("check", "shop/health")),
        Some(0.0)
    );
    assert_eq!(
        value("pom_probe_duration_seconds", ("check", "shop/health")),
        Some(0.042)
    );
    assert_eq!(
        samples
            .iter()
            .filter(|(n, l, v)| n == "pom_check_status"
                && *v == 1.0
                && l.iter().any(|(k, v)| k == "status" && v == "error"))
            .count(),
        1
    );
    assert_eq!(
        value(
            "pom_cert_expiry_timestamp_seconds",
            ("check", "shop/health")
        ),
        Some(1_800_000_000.0)
    );
    assert_eq!(
        value("pom_alerts_sent_total", ("channel", "hook")),
        Some(1.0)
    );
    for family in [
        "pom_domain_expiry_timestamp_seconds",
        "pom_outbox_pending",
        "pom_peer_up",
        "pom_scheduler_start_delay_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
}

#[tokio::test]
async fn a_stale_observation_or_an_isolated_agent_gives_no_verdict() {
    let f = fixture();
    let id: CheckId = "shop/health".parse().unwrap();
    f.state.board.update(&id, |s| {
        s.last_checked = Some(pom::monitor::now().add_millis(-61_000));
    });
    let (_, body) = json(&f.state, "GET", "/api/status", Some("s3cret-token")).await;
    assert_eq!(
        body["checks"][1]["verdict"], "unknown",
        "older than its freshness window"
    );
    assert_eq!(
        body["checks"][1]["status"], "error",
        "its own status still shows"
    );

    f.state
        .board
        .update(&id, |s| s.last_checked = Some(pom::monitor::now()));
    f.state.board.set_isolated(true);
    let (_, body) = json(&f.state, "GET", "/api/status", Some("s3cret-token")).await;
    assert_eq!(
        body["checks"][1]["verdict"], "unknown",
        "an isolated agent casts no vote"
    );
    let (_, mesh) = json(&f.state, "GET", "/api/mesh", Some("s3cret-token")).await;
    assert_eq!(mesh["self"]["isolated"], true);
}
