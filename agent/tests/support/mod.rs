//! Helpers shared by the integration tests: building check specs and running one probe.
#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use mesh_proto::CheckId;
use pom::plan::{CheckSpec, HttpSpec, ProbeSpec};
use pom::probe::{self, Outcome, ProbeContext};
use pom::testbed::certs::TestCa;
use url::Url;

/// Installs the ring provider, as `main` does.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A check spec around `probe`, with a short timeout.
pub fn spec(id: &str, timeout: Duration, probe: ProbeSpec) -> CheckSpec {
    CheckSpec {
        id: id.parse::<CheckId>().expect("test check id"),
        interval: Duration::from_secs(60),
        timeout,
        probe,
    }
}

/// A GET health check of `url` with no expectations but 2xx.
pub fn http(url: &str) -> HttpSpec {
    HttpSpec {
        method: Method::GET,
        url: Url::parse(url).expect("test url"),
        headers: Vec::new(),
        body: Bytes::new(),
        expect_status: Vec::new(),
        expect_body: None,
        expect_body_regex: None,
        expect_json: Vec::new(),
        follow_redirects: false,
        ca_file: None,
    }
}

/// Runs one probe with a fresh context and a 5 s timeout.
pub async fn run(probe: ProbeSpec) -> Outcome {
    run_with_timeout(probe, Duration::from_secs(5)).await
}

/// Runs one probe with a fresh context and the given timeout.
pub async fn run_with_timeout(probe: ProbeSpec, timeout: Duration) -> Outcome {
    init();
    probe::run(
        &spec("test/health", timeout, probe),
        &ProbeContext::default(),
    )
    .await
}

/// Writes `ca`'s certificate to a temporary PEM file.
pub fn ca_file(ca: &TestCa) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.crt");
    std::fs::write(&path, ca.cert_pem()).expect("write ca");
    (dir, path)
}

/// Asserts a status and that the detail contains `needle`.
#[track_caller]
pub fn assert_outcome(outcome: &Outcome, status: mesh_proto::Status, needle: &str) {
    assert_eq!(outcome.status, status, "detail: {}", outcome.detail);
    assert!(
        outcome.detail.contains(needle),
        "detail {:?} does not contain {needle:?}",
        outcome.detail
    );
}
