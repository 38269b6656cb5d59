//! Health and route probes against real HTTP(S) servers on loopback.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Redirect;
use axum::routing::{get, post};
use bytes::Bytes;
use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use mesh_proto::Status;
use pom::plan::ProbeSpec;
use pom::testbed::certs::{Leaf, TestCa, traefik_default};
use pom::testbed::http::{Misbehaviour, TestServer};
use support::{assert_outcome, ca_file, http, run, run_with_timeout};
use time::Duration as Days;

fn app() -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { r#"{"status":"ok","db":{"ok":true,"pool":8},"items":[{"id":7}]}"# }),
        )
        .route(
            "/bad-gateway",
            get(|| async { (StatusCode::BAD_GATEWAY, "upstream timed out") }),
        )
        .route(
            "/unprocessable",
            post(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "{}") }),
        )
        .route("/html", get(|| async { "<html>maintenance</html>" }))
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let token = headers.get("x-token").and_then(|v| v.to_str().ok());
                if token == Some("abc") && body.as_ref() == br#"{"a":1}"# {
                    (StatusCode::OK, "echo ok")
                } else {
                    (StatusCode::BAD_REQUEST, "missing token or body")
                }
            }),
        )
        .route("/moved", get(|| async { Redirect::temporary("/health") }))
        .route("/loop", get(|| async { Redirect::temporary("/loop") }))
}

async fn server() -> TestServer {
    TestServer::http(app()).await.expect("server")
}

fn url(server: &TestServer, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.port())
}

#[tokio::test]
async fn two_hundred_with_expected_body_is_operational() {
    let s = server().await;
    let mut spec = http(&url(&s, "/health"));
    spec.expect_body = Some(r#""status":"ok""#.into());
    spec.expect_body_regex = Some(regex::Regex::new(r#""pool":\d+"#).unwrap());
    spec.expect_json = vec![
        ("status".into(), serde_json::json!("ok")),
        ("db.ok".into(), serde_json::json!(true)),
        ("db.pool".into(), serde_json::json!(8.0)),
        ("items.0.id".into(), serde_json::json!(7)),
    ];
    let outcome = run(ProbeSpec::Http(spec)).await;
    assert_outcome(&outcome, Status::Operational, "GET /health returned 200 OK");
    assert!(outcome.latency > Duration::ZERO);
}

#[tokio::test]
async fn two_hundred_with_the_wrong_body_is_degraded() {
    let s = server().await;
    type Configure = Box<dyn Fn(&mut pom::plan::HttpSpec)>;
    let cases: Vec<(Configure, &str)> = vec![
        (
            Box::new(|sp| sp.expect_body = Some("\"status\":\"up\"".into())),
            "does not contain",
        ),
        (
            Box::new(|sp| sp.expect_body_regex = Some(regex::Regex::new("^OK$").unwrap())),
            "does not match /^OK$/",
        ),
        (
            Box::new(|sp| sp.expect_json = vec![("db.ok".into(), serde_json::json!(false))]),
            "JSON field db.ok is true, expected false",
        ),
        (
            Box::new(|sp| sp.expect_json = vec![("db.missing".into(), serde_json::json!(1))]),
            "JSON field db.missing is missing",
        ),
    ];
    for (configure, needle) in cases {
        let mut spec = http(&url(&s, "/health"));
        configure(&mut spec);
        assert_outcome(&run(ProbeSpec::Http(spec)).await, Status::Degraded, needle);
    }
    let mut spec = http(&url(&s, "/html"));
    spec.expect_json = vec![("status".into(), serde_json::json!("ok"))];
    assert_outcome(
        &run(ProbeSpec::Http(spec)).await,
        Status::Degraded,
        "the body is not JSON",
    );
}

#[tokio::test]
async fn unexpected_status_is_error_with_the_body_shown() {
    let s = server().await;
    let outcome = run(ProbeSpec::Http(http(&url(&s, "/bad-gateway")))).await;
    assert_outcome(
        &outcome,
        Status::Error,
        "GET /bad-gateway returned 502 Bad Gateway, expected 2xx: \"upstream timed out\"",
    );
    let outcome = run(ProbeSpec::Http(http(&url(&s, "/nope")))).await;
    assert_outcome(&outcome, Status::Error, "returned 404 Not Found");
}

#[tokio::test]
async fn expected_status_set_replaces_the_2xx_default() {
    let s = server().await;
    let mut spec = http(&url(&s, "/unprocessable"));
    spec.method = Method::POST;
    spec.expect_status = vec![200, 201, 422];
    assert_outcome(
        &run(ProbeSpec::Http(spec.clone())).await,
        Status::Operational,
        "422",
    );
    spec.expect_status = vec![200];
    assert_outcome(
        &run(ProbeSpec::Http(spec)).await,
        Status::Error,
        "expected 200",
    );
}

#[tokio::test]
async fn method_headers_and_body_are_sent() {
    let s = server().await;
    let mut spec = http(&url(&s, "/echo"));
    spec.method = Method::POST;
    spec.body = Bytes::from_static(br#"{"a":1}"#);
    spec.headers = vec![(
        HeaderName::from_static("x-token"),
        HeaderValue::from_static("abc"),
    )];
    assert_outcome(
        &run(ProbeSpec::Http(spec.clone())).await,
        Status::Operational,
        "POST /echo returned 200",
    );
    spec.headers.clear();
    assert_outcome(&run(ProbeSpec::Http(spec)).await, Status::Error, "400");
}

#[tokio::test]
async fn redirects_are_followed_only_when_configured() {
    let s = server().await;
    let spec = http(&url(&s, "/moved"));
    assert_outcome(
        &run(ProbeSpec::Http(spec.clone())).await,
        Status::Error,
        "307 Temporary Redirect",
    );
    let mut follow = spec;
    follow.follow_redirects = true;
    follow.expect_body = Some("ok".into());
    assert_outcome(
        &run(ProbeSpec::Http(follow)).await,
        Status::Operational,
        "200",
    );
    let mut endless = http(&url(&s, "/loop"));
    endless.follow_redirects = true;
    assert_outcome(
        &run(ProbeSpec::Http(endless)).await,
        Status::Error,
        "more than 10 redirects",
    );
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let outcome = run(ProbeSpec::Http(http(&format!("http://127.0.0.1:{port}/")))).await;
    assert_outcome(&outcome, Status::Unreachable, "connection refused");
}

#[tokio::test]
async fn reset_connection_is_unreachable() {
    let s = TestServer::misbehaving(Misbehaviour::Reset).await.unwrap();
    let outcome = run(ProbeSpec::Http(http(&url(&s, "/")))).await;
    assert_eq!(outcome.status, Status::Unreachable, "{}", outcome.detail);
    assert!(
        outcome.detail.contains("reset") || outcome.detail.contains("closed"),
        "{}",
        outcome.detail
    );
}

#[tokio::test]
async fn closed_without_an_answer_is_unreachable() {
    let s = TestServer::misbehaving(Misbehaviour::CloseWithoutAnswer)
        .await
        .unwrap();
    let outcome = run(ProbeSpec::Http(http(&url(&s, "/")))).await;
    assert_eq!(outcome.status, Status::Unreachable, "{}", outcome.detail);
}

#[tokio::test]
async fn black_hole_times_out_as_unreachable_within_the_timeout() {
    let s = TestServer::misbehaving(Misbehaviour::BlackHole)
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = run_with_timeout(
        ProbeSpec::Http(http(&url(&s, "/"))),
        Duration::from_millis(300),
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Unreachable,
        "no answer within the 300ms timeout",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn garbage_instead_of_http_is_error() {
    let s = TestServer::misbehaving(Misbehaviour::Garbage)
        .await
        .unwrap();
    let outcome = run(ProbeSpec::Http(http(&url(&s, "/")))).await;
    assert_outcome(&outcome, Status::Error, "invalid HTTP response");
}

#[tokio::test]
async fn an_endless_response_head_is_an_error_not_a_hang() {
    let s = TestServer::misbehaving(Misbehaviour::EndlessHeader)
        .await
        .unwrap();
    let outcome = run(ProbeSpec::Http(http(&url(&s, "/")))).await;
    assert_outcome(&outcome, Status::Error, "invalid HTTP response");
}

#[tokio::test]
async fn endless_body_is_cut_at_the_cap() {
    let s = TestServer::misbehaving(Misbehaviour::EndlessBody)
        .await
        .unwrap();
    let mut spec = http(&url(&s, "/"));
    spec.expect_body = Some("needle".into());
    let outcome = run(ProbeSpec::Http(spec)).await;
    assert_outcome(&outcome, Status::Degraded, "(in the first 1024 KiB)");
}

#[tokio::test]
async fn fifty_megabyte_body_reads_only_the_cap() {
    let s = TestServer::misbehaving(Misbehaviour::HugeBody(50 << 20))
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = run(ProbeSpec::Http(http(&url(&s, "/")))).await;
    assert_outcome(&outcome, Status::Operational, "200 OK");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn https_with_a_trusted_certificate_is_operational() {
    let ca = TestCa::new("Test CA").unwrap();
    let (_dir, ca_path) = ca_file(&ca);
    let id = ca.issue(&Leaf::new(&["127.0.0.1"])).unwrap();
    let s = TestServer::https(app(), id.server_config().unwrap())
        .await
        .unwrap();
    let mut spec = http(&format!("https://127.0.0.1:{}/health", s.port()));
    spec.ca_file = Some(ca_path);
    assert_outcome(
        &run(ProbeSpec::Http(spec.clone())).await,
        Status::Operational,
        "200 OK",
    );

    // Without the CA file the same server is untrusted: the certificate is rejected.
    spec.ca_file = None;
    assert_outcome(
        &run(ProbeSpec::Http(spec)).await,
        Status::Error,
        "certificate rejected",
    );
}

#[tokio::test]
async fn https_certificate_problems_are_errors() {
    let ca = TestCa::new("Test CA").unwrap();
    let (_dir, ca_path) = ca_file(&ca);
    let cases = [
        (
            ca.issue(&Leaf::new(&["127.0.0.1"]).expiring_in(-Days::days(2)))
                .unwrap(),
            "certificate expired",
        ),
        (
            ca.issue(&Leaf::new(&["other.example"])).unwrap(),
            "not valid for 127.0.0.1",
        ),
        (
            Leaf::new(&["127.0.0.1"]).self_signed().unwrap(),
            "not issued by a trusted CA",
        ),
    ];
    for (identity, needle) in cases {
        let s = TestServer::https(app(), identity.server_config().unwrap())
            .await
            .unwrap();
        let mut spec = http(&format!("https://127.0.0.1:{}/health", s.port()));
        spec.ca_file = Some(ca_path.clone());
        assert_outcome(&run(ProbeSpec::Http(spec)).await, Status::Error, needle);
    }
}

#[tokio::test]
async fn traefik_default_certificate_answering_404_is_an_error() {
    let edge = Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") });
    let s = TestServer::https(edge, traefik_default().unwrap().server_config().unwrap())
        .await
        .unwrap();
    let outcome = run(ProbeSpec::Http(http(&format!(
        "https://127.0.0.1:{}/api/health",
        s.port()
    ))))
    .await;
    assert_outcome(&outcome, Status::Error, "certificate rejected");
}

#[tokio::test]
async fn plain_http_on_an_https_url_is_a_handshake_failure() {
    let s = server().await;
    let outcome = run(ProbeSpec::Http(http(&format!(
        "https://127.0.0.1:{}/health",
        s.port()
    ))))
    .await;
    assert_outcome(&outcome, Status::Unreachable, "TLS handshake failed");
}
