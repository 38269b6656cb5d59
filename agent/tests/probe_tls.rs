//! The TLS probe against real rustls servers presenting every kind of certificate.

mod support;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use mesh_proto::Status;
use pom::plan::{ProbeSpec, TlsSpec};
use pom::probe::tls;
use pom::probe::trust::Trust;
use pom::testbed::certs::{Identity, Leaf, TestCa, ingress_nginx_fake, traefik_default};
use pom::testbed::http::{Misbehaviour, TestServer};
use support::{assert_outcome, ca_file, run, run_with_timeout};
use time::{Duration as Days, OffsetDateTime};

fn page_not_found() -> Router {
    Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
}

async fn serve(identity: &Identity) -> TestServer {
    TestServer::https(page_not_found(), identity.server_config().unwrap())
        .await
        .unwrap()
}

fn spec(host: &str, port: u16, ca_file: Option<std::path::PathBuf>) -> TlsSpec {
    TlsSpec {
        host: host.into(),
        port,
        warn_days: 14,
        ca_file,
    }
}

struct Fixture {
    ca: TestCa,
    _dir: tempfile::TempDir,
    ca_path: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let ca = TestCa::new("Test Root CA").unwrap();
    let (_dir, ca_path) = ca_file(&ca);
    Fixture { ca, _dir, ca_path }
}

async fn probe_identity(f: &Fixture, identity: &Identity, host: &str) -> pom::probe::Outcome {
    let s = serve(identity).await;
    run(ProbeSpec::Tls(spec(
        host,
        s.port(),
        Some(f.ca_path.clone()),
    )))
    .await
}

#[tokio::test]
async fn a_valid_chain_is_operational_and_fully_reported() {
    let f = fixture();
    let id =
        f.ca.issue(&Leaf::new(&["127.0.0.1", "shop.example"]))
            .unwrap();
    let outcome = probe_identity(&f, &id, "127.0.0.1").await;
    assert_outcome(&outcome, Status::Operational, "subject CN=127.0.0.1");
    for part in [
        "issuer CN=Test Root CA",
        "SANs 127.0.0.1, shop.example",
        "(89 days)",
        "chain of 2",
        "trusted",
    ] {
        assert!(
            outcome.detail.contains(part),
            "{part:?} missing in {}",
            outcome.detail
        );
    }
    let not_after = outcome.facts.cert_not_after.expect("not_after fact");
    let days = (not_after - OffsetDateTime::now_utc()).whole_days();
    assert!((88..=90).contains(&days), "{days}");
}

#[tokio::test]
async fn inside_the_warning_window_is_degraded() {
    let f = fixture();
    let id =
        f.ca.issue(&Leaf::new(&["127.0.0.1"]).expiring_in(Days::days(5) + Days::hours(1)))
            .unwrap();
    let outcome = probe_identity(&f, &id, "127.0.0.1").await;
    assert_outcome(
        &outcome,
        Status::Degraded,
        "expires in 5 days, inside the 14-day warning window",
    );
}

#[tokio::test]
async fn expired_is_error_but_still_inspected() {
    let f = fixture();
    let id =
        f.ca.issue(&Leaf::new(&["127.0.0.1"]).expiring_in(-Days::days(3)))
            .unwrap();
    let outcome = probe_identity(&f, &id, "127.0.0.1").await;
    assert_outcome(&outcome, Status::Error, "expired on");
    assert!(
        outcome.detail.contains("(3 days ago)"),
        "{}",
        outcome.detail
    );
    assert!(
        outcome.detail.contains("; trusted"),
        "the chain itself is trusted: {}",
        outcome.detail
    );
    assert!(outcome.facts.cert_not_after.is_some());
}

#[tokio::test]
async fn not_yet_valid_is_error() {
    let f = fixture();
    let id =
        f.ca.issue(&Leaf::new(&["127.0.0.1"]).starting_in(Days::days(2)))
            .unwrap();
    assert_outcome(
        &probe_identity(&f, &id, "127.0.0.1").await,
        Status::Error,
        "not valid before",
    );
}

#[tokio::test]
async fn wrong_host_is_error_naming_the_certificate_names() {
    let f = fixture();
    let id =
        f.ca.issue(&Leaf::new(&["other.example", "www.other.example"]))
            .unwrap();
    let outcome = probe_identity(&f, &id, "127.0.0.1").await;
    assert_outcome(
        &outcome,
        Status::Error,
        "not valid for 127.0.0.1 (it names other.example, www.other.example)",
    );
}

#[tokio::test]
async fn untrusted_issuer_is_error() {
    let f = fixture();
    let stranger = TestCa::new("Stranger CA").unwrap();
    let id = stranger.issue(&Leaf::new(&["127.0.0.1"])).unwrap();
    let outcome = probe_identity(&f, &id, "127.0.0.1").await;
    assert_outcome(&outcome, Status::Error, "untrusted chain");
    assert!(outcome.detail.contains("untrusted"), "{}", outcome.detail);
}

#[tokio::test]
async fn self_signed_is_error() {
    let f = fixture();
    let id = Leaf::new(&["127.0.0.1"])
        .named("my-box")
        .self_signed()
        .unwrap();
    let outcome = probe_identity(&f, &id, "127.0.0.1").await;
    assert_outcome(&outcome, Status::Error, "self-signed certificate CN=my-box");
    assert!(outcome.detail.contains("chain of 1"), "{}", outcome.detail);
}

#[tokio::test]
async fn expired_and_self_signed_reports_both() {
    let f = fixture();
    let id = Leaf::new(&["127.0.0.1"])
        .expiring_in(-Days::days(10))
        .self_signed()
        .unwrap();
    let outcome = probe_identity(&f, &id, "127.0.0.1").await;
    assert_outcome(&outcome, Status::Error, "self-signed certificate");
    assert!(outcome.detail.contains("expired on"), "{}", outcome.detail);
}

#[tokio::test]
async fn traefik_default_answering_404_is_the_edge_outage_it_is() {
    let f = fixture();
    let outcome = probe_identity(&f, &traefik_default().unwrap(), "127.0.0.1").await;
    assert_outcome(
        &outcome,
        Status::Error,
        "self-signed default certificate CN=TRAEFIK DEFAULT CERT (Traefik",
    );
}

#[tokio::test]
async fn ingress_nginx_fake_certificate_is_recognised() {
    let f = fixture();
    let outcome = probe_identity(&f, &ingress_nginx_fake().unwrap(), "127.0.0.1").await;
    assert_outcome(&outcome, Status::Error, "Kubernetes ingress-nginx");
    assert!(
        outcome.detail.contains("self-signed default certificate"),
        "{}",
        outcome.detail
    );
}

#[tokio::test]
async fn caddy_local_authority_is_recognised() {
    let f = fixture();
    let caddy = TestCa::new("Caddy Local Authority - ECC Intermediate").unwrap();
    let id = caddy.issue(&Leaf::new(&["127.0.0.1"])).unwrap();
    let outcome = probe_identity(&f, &id, "127.0.0.1").await;
    assert_outcome(
        &outcome,
        Status::Error,
        "default certificate CN=127.0.0.1 issued by CN=Caddy Local Authority",
    );
}

#[tokio::test]
async fn a_trusted_caddy_ca_is_not_flagged() {
    // An operator who trusts their Caddy CA on purpose (ca_file) gets no default-cert error.
    let caddy = TestCa::new("Caddy Local Authority - 2026 ECC Root").unwrap();
    let (_dir, path) = ca_file(&caddy);
    let id = caddy.issue(&Leaf::new(&["127.0.0.1"])).unwrap();
    let s = serve(&id).await;
    let outcome = run(ProbeSpec::Tls(spec("127.0.0.1", s.port(), Some(path)))).await;
    assert_outcome(&outcome, Status::Operational, "trusted");
}

#[tokio::test]
async fn no_tls_on_the_port_is_unreachable() {
    let s = TestServer::http(page_not_found()).await.unwrap();
    let outcome = run(ProbeSpec::Tls(spec("127.0.0.1", s.port(), None))).await;
    assert_outcome(&outcome, Status::Unreachable, "TLS handshake failed");
}

#[tokio::test]
async fn refused_and_black_hole_are_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let outcome = run(ProbeSpec::Tls(spec("127.0.0.1", port, None))).await;
    assert_outcome(&outcome, Status::Unreachable, "connection refused");

    let hole = TestServer::misbehaving(Misbehaviour::BlackHole)
        .await
        .unwrap();
    let outcome = run_with_timeout(
        ProbeSpec::Tls(spec("127.0.0.1", hole.port(), None)),
        Duration::from_millis(300),
    )
    .await;
    assert_outcome(&outcome, Status::Unreachable, "no answer within");
}

#[tokio::test]
async fn garbage_from_the_server_is_unreachable() {
    let s = TestServer::misbehaving(Misbehaviour::Garbage)
        .await
        .unwrap();
    let outcome = run(ProbeSpec::Tls(spec("127.0.0.1", s.port(), None))).await;
    assert_outcome(&outcome, Status::Unreachable, "TLS handshake failed");
}

#[test]
fn a_certificate_that_does_not_parse_is_an_error() {
    support::init();
    let trust = Trust::default();
    let entry = trust.entry(None).unwrap();
    let garbage = vec![rustls_pki_types::CertificateDer::from(vec![
        0x30, 0x03, 0x02, 0x01, 0x00,
    ])];
    let outcome = tls::judge(
        &spec("127.0.0.1", 443, None),
        &entry.verifier,
        &garbage,
        OffsetDateTime::now_utc(),
    );
    assert_outcome(&outcome, Status::Error, "could not be parsed");
    let outcome = tls::judge(
        &spec("127.0.0.1", 443, None),
        &entry.verifier,
        &[],
        OffsetDateTime::now_utc(),
    );
    assert_outcome(&outcome, Status::Error, "no certificate");
}
