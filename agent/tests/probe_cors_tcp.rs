//! CORS preflights and TCP connects against real servers on loopback.

mod support;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::options;
use hyper::Method;
use mesh_proto::Status;
use pom::plan::{CorsSpec, ProbeSpec, TcpSpec};
use pom::testbed::http::TestServer;
use support::{assert_outcome, run};
use url::Url;

const ORIGIN: &str = "https://app.example";

/// A preflight endpoint per CORS policy.
fn app() -> Router {
    fn answer(
        origin: &'static str,
        methods: &'static str,
        headers: &'static str,
    ) -> (StatusCode, HeaderMap) {
        let mut h = HeaderMap::new();
        if !origin.is_empty() {
            h.insert(
                "access-control-allow-origin",
                HeaderValue::from_static(origin),
            );
        }
        if !methods.is_empty() {
            h.insert(
                "access-control-allow-methods",
                HeaderValue::from_static(methods),
            );
        }
        if !headers.is_empty() {
            h.insert(
                "access-control-allow-headers",
                HeaderValue::from_static(headers),
            );
        }
        (StatusCode::NO_CONTENT, h)
    }
    Router::new()
        .route(
            "/good",
            options(|| async { answer(ORIGIN, "GET, PUT, DELETE", "Content-Type, X-Token") }),
        )
        .route("/wildcard", options(|| async { answer("*", "*", "*") }))
        .route("/no-origin", options(|| async { answer("", "PUT", "") }))
        .route(
            "/other-origin",
            options(|| async { answer("https://evil.example", "PUT", "") }),
        )
        .route(
            "/no-put",
            options(|| async { answer(ORIGIN, "GET, POST", "content-type") }),
        )
        .route(
            "/forbidden",
            options(|| async { (StatusCode::FORBIDDEN, "no") }),
        )
}

fn cors(server: &TestServer, path: &str, method: Method, headers: &[&str]) -> ProbeSpec {
    ProbeSpec::Cors(CorsSpec {
        url: Url::parse(&format!("http://127.0.0.1:{}{path}", server.port())).unwrap(),
        origin: ORIGIN.into(),
        method,
        headers: headers.iter().map(|h| (*h).to_owned()).collect(),
        ca_file: None,
    })
}

#[tokio::test]
async fn allowed_preflights_are_operational() {
    let s = TestServer::http(app()).await.unwrap();
    let outcome = run(cors(&s, "/good", Method::PUT, &["content-type", "x-token"])).await;
    assert_outcome(
        &outcome,
        Status::Operational,
        "OPTIONS /good from https://app.example: PUT allowed",
    );
    assert_outcome(
        &run(cors(&s, "/wildcard", Method::DELETE, &["x-anything"])).await,
        Status::Operational,
        "allowed",
    );
    // POST is CORS-safelisted: no Access-Control-Allow-Methods needed.
    assert_outcome(
        &run(cors(&s, "/no-put", Method::POST, &[])).await,
        Status::Operational,
        "allowed",
    );
}

#[tokio::test]
async fn violations_are_errors() {
    let s = TestServer::http(app()).await.unwrap();
    let cases = [
        (
            "/no-origin",
            Method::PUT,
            vec![],
            "no Access-Control-Allow-Origin header",
        ),
        (
            "/other-origin",
            Method::PUT,
            vec![],
            "Access-Control-Allow-Origin is \"https://evil.example\"",
        ),
        ("/no-put", Method::PUT, vec![], "does not allow PUT"),
        (
            "/good",
            Method::PUT,
            vec!["x-secret"],
            "Access-Control-Allow-Headers does not allow x-secret",
        ),
        ("/forbidden", Method::PUT, vec![], "preflight returned 403"),
        ("/missing", Method::PUT, vec![], "preflight returned 404"),
    ];
    for (path, method, headers, needle) in cases {
        assert_outcome(
            &run(cors(&s, path, method, &headers)).await,
            Status::Error,
            needle,
        );
    }
}

#[tokio::test]
async fn cors_on_a_dead_port_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = ProbeSpec::Cors(CorsSpec {
        url: Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
        origin: ORIGIN.into(),
        method: Method::GET,
        headers: vec![],
        ca_file: None,
    });
    assert_outcome(&run(spec).await, Status::Unreachable, "connection refused");
}

#[tokio::test]
async fn tcp_open_port_is_operational_and_closed_is_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let spec = ProbeSpec::Tcp(TcpSpec {
        host: "127.0.0.1".into(),
        port,
    });
    assert_outcome(
        &run(spec.clone()).await,
        Status::Operational,
        "accepted the connection",
    );
    drop(listener);
    assert_outcome(&run(spec).await, Status::Unreachable, "connection refused");
}

#[tokio::test]
async fn tcp_by_host_name_resolves_through_the_system() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // "localhost" resolves from /etc/hosts, never from the network.
    let spec = ProbeSpec::Tcp(TcpSpec {
        host: "localhost".into(),
        port,
    });
    assert_outcome(&run(spec).await, Status::Operational, "accepted");
}
