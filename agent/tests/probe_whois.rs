//! The WHOIS (domain expiry) probe against real servers on loopback: an in-process axum server
//! playing IANA's bootstrap and a registry's RDAP service, and raw TCP servers playing WHOIS.
//! Expiry dates are relative to now, so the tests do not rot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mesh_proto::{CheckId, CheckKind, Status};
use pom::plan::{CheckSpec, ProbeSpec, WhoisSpec};
use pom::probe::{self, Outcome, ProbeContext};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use url::Url;

/// The TLD the fake bootstrap maps to the fake RDAP service.
const RDAP_TLD: &str = "test";

// ---- servers ----

/// What the fake registry answers for one domain.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    body: String,
}

#[derive(Clone)]
struct Registry {
    base: String,
    domains: Arc<HashMap<String, Answer>>,
    bootstrap_hits: Arc<AtomicUsize>,
}

/// A running bootstrap + RDAP server.
struct Rdap {
    /// `http://127.0.0.1:port`
    base: String,
    bootstrap_hits: Arc<AtomicUsize>,
}

impl Rdap {
    fn bootstrap(&self) -> Url {
        url(&format!("{}/dns.json", self.base))
    }
}

async fn bootstrap(State(reg): State<Registry>) -> impl IntoResponse {
    reg.bootstrap_hits.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::json!({
        "version": "1.0",
        "publication": "2025-01-01T00:00:00Z",
        "services": [
            [["other"], ["http://127.0.0.1:9/never/"]],
            [[RDAP_TLD], [format!("{}/rdap/", reg.base)]],
        ],
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn domain(State(reg): State<Registry>, Path(name): Path<String>) -> Response {
    match reg.domains.get(&name) {
        Some(answer) => (
            answer.status,
            [(header::CONTENT_TYPE, "application/rdap+json")],
            answer.body.clone(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            r#"{"errorCode": 404, "title": "Not Found"}"#,
        )
            .into_response(),
    }
}

async fn moved(Path(name): Path<String>) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, format!("/rdap/domain/{name}"))],
    )
        .into_response()
}

/// Starts the bootstrap (`/dns.json`) and RDAP (`/rdap/domain/{name}`, and `/moved/domain/{name}`
/// redirecting there) server, answering `domains` and 404 for the rest.
async fn rdap_server(domains: &[(&str, StatusCode, String)]) -> Rdap {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let bootstrap_hits = Arc::new(AtomicUsize::new(0));
    let registry = Registry {
        base: base.clone(),
        domains: Arc::new(
            domains
                .iter()
                .map(|(name, status, body)| {
                    let answer = Answer {
                        status: *status,
                        body: body.clone(),
                    };
                    ((*name).to_owned(), answer)
                })
                .collect(),
        ),
        bootstrap_hits: bootstrap_hits.clone(),
    };
    let router = Router::new()
        .route("/dns.json", get(bootstrap))
        .route("/rdap/domain/{name}", get(domain))
        .route("/moved/domain/{name}", get(moved))
        .with_state(registry);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Rdap {
        base,
        bootstrap_hits,
    }
}

/// An RDAP domain object expiring at `expires`.
fn rdap_domain(name: &str, expires: OffsetDateTime) -> String {
    serde_json::json!({
        "objectClassName": "domain",
        "ldhName": name,
        "events": [
            {"eventAction": "registration", "eventDate": "2001-06-14T00:00:00Z"},
            {"eventAction": "expiration", "eventDate": expires.format(&Rfc3339).expect("format")},
            {"eventAction": "last update of RDAP database", "eventDate": "2025-01-01T00:00:00Z"},
        ],
    })
    .to_string()
}

/// How a fake WHOIS server behaves after reading the question.
#[derive(Clone)]
enum Whois {
    /// Writes this text and closes.
    Says(String),
    /// Writes forever.
    Endless,
    /// Never answers, never closes.
    Silent,
}

/// A running WHOIS server: its `host:port`, and the questions it was asked.
struct WhoisServer {
    addr: String,
    questions: mpsc::UnboundedReceiver<String>,
}

async fn whois_server(behaviour: Whois) -> WhoisServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, questions) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer_whois(socket, behaviour.clone(), tx.clone()));
        }
    });
    WhoisServer { addr, questions }
}

async fn answer_whois(
    socket: TcpStream,
    behaviour: Whois,
    questions: mpsc::UnboundedSender<String>,
) {
    let mut reader = BufReader::new(socket);
    let mut question = String::new();
    if reader.read_line(&mut question).await.is_err() {
        return;
    }
    let _ = questions.send(question);
    let mut socket = reader.into_inner();
    match behaviour {
        Whois::Says(text) => {
            let _ = socket.write_all(text.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
        Whois::Endless => {
            let line = b"% This server has a lot to say about nothing at all.\r\n";
            while socket.write_all(line).await.is_ok() {}
        }
        Whois::Silent => {
            // Hold the connection open until the client gives up.
            let mut sink = Vec::new();
            let _ = socket.read_to_end(&mut sink).await;
        }
    }
}

/// A loopback port with nothing listening on it.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A TCP server that accepts and never answers an HTTP request.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = socket.read_to_end(&mut sink).await;
            });
        }
    });
    addr
}

// ---- probe input ----

fn url(text: &str) -> Url {
    Url::parse(text).expect("valid url")
}

fn spec(domain: &str, bootstrap: Url) -> WhoisSpec {
    WhoisSpec {
        domain: domain.to_owned(),
        warn_days: 30,
        rdap_bootstrap: bootstrap,
        rdap_url: None,
        whois_server: None,
        rdap_timeout: Duration::from_secs(3),
    }
}

async fn run(spec: WhoisSpec, timeout: Duration) -> Outcome {
    let check = CheckSpec {
        id: CheckId::new("example", CheckKind::Whois).expect("check id"),
        interval: Duration::from_secs(3600),
        timeout,
        probe: ProbeSpec::Whois(spec),
    };
    probe::run(&check, &ProbeContext::default()).await
}

/// Runs with a timeout far above what any of these probes needs.
async fn probe(spec: WhoisSpec) -> Outcome {
    run(spec, Duration::from_secs(20)).await
}

fn in_days(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(days)
}

fn assert_outcome(outcome: &Outcome, status: Status, needle: &str) {
    assert_eq!(outcome.status, status, "{outcome:?}");
    assert!(
        outcome.detail.contains(needle),
        "detail {:?} lacks {needle:?}",
        outcome.detail
    );
}

/// A Verisign-style registry answer.
fn whois_text(expiry_line: &str) -> String {
    format!(
        "   Domain Name: EXAMPLE.NORDAP\r\n   Registrar: Example Registrar\r\n   \
         Creation Date: 2001-06-14T00:00:00Z\r\n   {expiry_line}\r\n   Name Server: NS1.EXAMPLE\r\n\
         >>> Last update of whois database: 2025-01-01T00:00:00Z <<<\r\n\r\n\
         NOTICE: The expiration date displayed in this record is the date the registrar's \
         sponsorship of the domain name registration in the registry is currently set to expire.\r\n"
    )
}

// ---- RDAP ----

#[tokio::test]
async fn rdap_via_bootstrap_far_expiry_is_operational() {
    let expires = in_days(400);
    let rdap = rdap_server(&[(
        "example.test",
        StatusCode::OK,
        rdap_domain("example.test", expires),
    )])
    .await;
    let outcome = probe(spec("Example.TEST", rdap.bootstrap())).await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &format!("example.test expires {}", expires.date()),
    );
    assert_outcome(
        &outcome,
        Status::Operational,
        &format!("per RDAP {}/rdap/domain/example.test", rdap.base),
    );
    assert_eq!(
        outcome.facts.domain_expires.map(|d| d.unix_timestamp()),
        Some(expires.unix_timestamp())
    );
    assert_eq!(rdap.bootstrap_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bootstrap_is_fetched_once_per_context() {
    let rdap = rdap_server(&[(
        "example.test",
        StatusCode::OK,
        rdap_domain("example.test", in_days(400)),
    )])
    .await;
    let ctx = ProbeContext::default();
    let spec = spec("example.test", rdap.bootstrap());
    for _ in 0..3 {
        let outcome = probe::whois::probe(&spec, &ctx).await;
        assert_eq!(outcome.status, Status::Operational, "{outcome:?}");
    }
    assert_eq!(rdap.bootstrap_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rdap_url_skips_the_bootstrap() {
    let rdap = rdap_server(&[(
        "example.com",
        StatusCode::OK,
        rdap_domain("example.com", in_days(200)),
    )])
    .await;
    // No trailing slash on the base: the probe must still ask `/rdap/domain/example.com`.
    let mut spec = spec(
        "example.com",
        url(&format!(
            "http://127.0.0.1:{}/dns.json",
            closed_port().await
        )),
    );
    spec.rdap_url = Some(url(&format!("{}/rdap", rdap.base)));
    let outcome = probe(spec).await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &format!("per RDAP {}/rdap/domain/example.com", rdap.base),
    );
    assert_eq!(rdap.bootstrap_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rdap_redirects_are_followed() {
    let rdap = rdap_server(&[(
        "example.com",
        StatusCode::OK,
        rdap_domain("example.com", in_days(200)),
    )])
    .await;
    let mut spec = spec("example.com", rdap.bootstrap());
    spec.rdap_url = Some(url(&format!("{}/moved/", rdap.base)));
    let outcome = probe(spec).await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &format!("per RDAP {}/rdap/domain/example.com", rdap.base),
    );
}

#[tokio::test]
async fn expiry_within_warn_days_is_degraded() {
    let expires = in_days(10) + time::Duration::hours(1);
    let rdap = rdap_server(&[(
        "soon.test",
        StatusCode::OK,
        rdap_domain("soon.test", expires),
    )])
    .await;
    let outcome = probe(spec("soon.test", rdap.bootstrap())).await;
    assert_outcome(
        &outcome,
        Status::Degraded,
        "(10 days, inside the 30-day warning window)",
    );
    assert_eq!(
        outcome.facts.domain_expires.map(|d| d.unix_timestamp()),
        Some(expires.unix_timestamp())
    );

    let mut relaxed = spec("soon.test", rdap.bootstrap());
    relaxed.warn_days = 7;
    assert_outcome(
        &probe(relaxed).await,
        Status::Operational,
        "soon.test expires",
    );
}

#[tokio::test]
async fn expired_domain_is_error() {
    let expires = in_days(-3) - time::Duration::hours(1);
    let rdap = rdap_server(&[(
        "gone.test",
        StatusCode::OK,
        rdap_domain("gone.test", expires),
    )])
    .await;
    let outcome = probe(spec("gone.test", rdap.bootstrap())).await;
    assert_outcome(
        &outcome,
        Status::Error,
        &format!("gone.test expired on {} (3 days ago)", expires.date()),
    );
    assert!(outcome.facts.domain_expires.is_some());
}

#[tokio::test]
async fn rdap_404_is_error_and_not_retried_over_whois() {
    let rdap = rdap_server(&[]).await;
    let mut whois = whois_server(Whois::Says(whois_text(
        "Registry Expiry Date: 2099-01-01T00:00:00Z",
    )))
    .await;
    let mut spec = spec("nope.test", rdap.bootstrap());
    spec.whois_server = Some(whois.addr.clone());
    let outcome = probe(spec).await;
    assert_outcome(&outcome, Status::Error, "domain not found (404 Not Found)");
    assert_eq!(outcome.facts.domain_expires, None);
    assert!(
        whois.questions.try_recv().is_err(),
        "WHOIS was asked after an RDAP 404"
    );
}

#[tokio::test]
async fn rdap_garbage_is_error() {
    let rdap = rdap_server(&[(
        "junk.test",
        StatusCode::OK,
        "<html>we moved!</html>".to_owned(),
    )])
    .await;
    let outcome = probe(spec("junk.test", rdap.bootstrap())).await;
    assert_outcome(&outcome, Status::Error, "answer is not JSON");
}

#[tokio::test]
async fn rdap_without_expiration_is_error() {
    let body = serde_json::json!({
        "objectClassName": "domain",
        "events": [{"eventAction": "registration", "eventDate": "2001-06-14T00:00:00Z"}],
    });
    let rdap = rdap_server(&[("noexp.test", StatusCode::OK, body.to_string())]).await;
    let outcome = probe(spec("noexp.test", rdap.bootstrap())).await;
    assert_outcome(&outcome, Status::Error, "no expiration event");
    assert_eq!(outcome.facts.domain_expires, None);
}

#[tokio::test]
async fn black_holed_rdap_server_is_unreachable_after_the_timeout() {
    let hole = black_hole().await;
    let mut spec = spec("example.com", url(&format!("http://{hole}/dns.json")));
    spec.rdap_url = Some(url(&format!("http://{hole}/")));
    let outcome = run(spec, Duration::from_millis(300)).await;
    assert_outcome(
        &outcome,
        Status::Unreachable,
        "no answer within the 300ms timeout",
    );
}

#[tokio::test]
async fn a_hung_rdap_server_leaves_time_for_whois() {
    let hole = black_hole().await;
    let expires = in_days(200) + time::Duration::hours(1);
    let line = format!(
        "Registry Expiry Date: {}",
        expires.format(&Rfc3339).expect("format")
    );
    let whois = whois_server(Whois::Says(whois_text(&line))).await;
    let mut spec = spec("example.com", url(&format!("http://{hole}/dns.json")));
    spec.rdap_url = Some(url(&format!("http://{hole}/")));
    spec.whois_server = Some(whois.addr.clone());
    spec.rdap_timeout = Duration::from_millis(300);
    let outcome = run(spec, Duration::from_secs(10)).await;
    assert_outcome(&outcome, Status::Operational, "example.com expires");
    assert!(
        outcome.detail.contains("(200 days) per WHOIS"),
        "{}",
        outcome.detail
    );
}

// ---- WHOIS fallback ----

#[tokio::test]
async fn tld_without_rdap_falls_back_to_whois() {
    let expires = in_days(300) + time::Duration::hours(1);
    let rdap = rdap_server(&[]).await;
    let line = format!(
        "Registry Expiry Date: {}",
        expires.format(&Rfc3339).expect("format")
    );
    let mut whois = whois_server(Whois::Says(whois_text(&line))).await;
    let mut spec = spec("example.nordap", rdap.bootstrap());
    spec.whois_server = Some(whois.addr.clone());
    let outcome = probe(spec).await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &format!(
            "example.nordap expires {} (300 days) per WHOIS {}",
            expires.date(),
            whois.addr
        ),
    );
    assert_eq!(
        outcome.facts.domain_expires.map(|d| d.unix_timestamp()),
        Some(expires.unix_timestamp())
    );
    assert_eq!(
        whois.questions.try_recv().ok().as_deref(),
        Some("example.nordap\r\n")
    );
}

#[tokio::test]
async fn unreachable_rdap_falls_back_to_whois() {
    let mut whois = whois_server(Whois::Says(whois_text(&format!(
        "Registry Expiry Date: {}",
        in_days(100).format(&Rfc3339).expect("format")
    ))))
    .await;
    let mut spec = spec("example.com", url("http://127.0.0.1:9/dns.json"));
    spec.rdap_url = Some(url(&format!("http://127.0.0.1:{}/", closed_port().await)));
    spec.whois_server = Some(whois.addr.clone());
    let outcome = probe(spec).await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &format!("per WHOIS {}", whois.addr),
    );
    assert_eq!(
        whois.questions.try_recv().ok().as_deref(),
        Some("example.com\r\n")
    );
}

#[tokio::test]
async fn failing_rdap_server_falls_back_to_whois() {
    let rdap = rdap_server(&[(
        "example.test",
        StatusCode::SERVICE_UNAVAILABLE,
        "busy".to_owned(),
    )])
    .await;
    let whois = whois_server(Whois::Says(whois_text("Expiry date: 14-Jun-2099"))).await;
    let mut spec = spec("example.test", rdap.bootstrap());
    spec.whois_server = Some(whois.addr.clone());
    assert_outcome(
        &probe(spec).await,
        Status::Operational,
        "expires 2099-06-14",
    );
}

#[tokio::test]
async fn whois_date_formats_are_understood() {
    let expires = in_days(200);
    let day =
        |f: &[time::format_description::BorrowedFormatItem<'_>]| expires.format(f).expect("format");
    let lines = [
        format!(
            "Registry Expiry Date: {}",
            expires.format(&Rfc3339).expect("format")
        ),
        format!(
            "Registrar Registration Expiration Date: {}",
            day(format_description!("[year]-[month]-[day]"))
        ),
        format!(
            "Expiration Date: {}",
            day(format_description!("[year].[month].[day]"))
        ),
        format!(
            "Expiry date:  {}",
            day(format_description!("[day]-[month repr:short]-[year]"))
        ),
        format!(
            "EXPIRY DATE: {}",
            day(format_description!("[day]-[month repr:short]-[year]")).to_uppercase()
        ),
        format!(
            "expires: {}",
            day(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
        ),
        format!(
            "free-date: 2001-01-01\r\npaid-till: {}",
            day(format_description!("[year]-[month]-[day]"))
        ),
        format!(
            "Expires On: {}",
            day(format_description!("[year]/[month]/[day]"))
        ),
    ];
    for line in lines {
        let whois = whois_server(Whois::Says(whois_text(&line))).await;
        let mut spec = spec("example.nordap", url("http://127.0.0.1:9/dns.json"));
        spec.rdap_url = Some(url(&format!("http://127.0.0.1:{}/", closed_port().await)));
        spec.whois_server = Some(whois.addr.clone());
        let outcome = probe(spec).await;
        assert_outcome(
            &outcome,
            Status::Operational,
            &format!("expires {}", expires.date()),
        );
        assert_eq!(
            outcome.facts.domain_expires.map(|d| d.date()),
            Some(expires.date()),
            "{line:?}"
        );
    }
}

#[tokio::test]
async fn whois_no_match_is_error() {
    let rdap = rdap_server(&[]).await;
    let whois = whois_server(Whois::Says(
        "No match for \"NOPE.NORDAP\".\r\n>>> Last update of whois database: 2025-01-01T00:00:00Z <<<\r\n".to_owned(),
    ))
    .await;
    let mut spec = spec("nope.nordap", rdap.bootstrap());
    spec.whois_server = Some(whois.addr.clone());
    let outcome = probe(spec).await;
    assert_outcome(
        &outcome,
        Status::Error,
        "domain not found (No match for \"NOPE.NORDAP\".)",
    );
    assert_outcome(&outcome, Status::Error, "no RDAP service for .nordap");
    assert_eq!(outcome.facts.domain_expires, None);
}

#[tokio::test]
async fn whois_answer_without_expiry_is_error() {
    let rdap = rdap_server(&[]).await;
    let whois = whois_server(Whois::Says(
        "Domain Name: EXAMPLE.NORDAP\r\nStatus: active\r\n".to_owned(),
    ))
    .await;
    let mut spec = spec("example.nordap", rdap.bootstrap());
    spec.whois_server = Some(whois.addr.clone());
    assert_outcome(
        &probe(spec).await,
        Status::Error,
        "no expiry date in the answer",
    );
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let bootstrap = url(&format!(
        "http://127.0.0.1:{}/dns.json",
        closed_port().await
    ));
    let whois_addr = format!("127.0.0.1:{}", closed_port().await);
    let mut spec = spec("example.com", bootstrap.clone());
    spec.whois_server = Some(whois_addr.clone());
    let outcome = probe(spec).await;
    assert_eq!(outcome.status, Status::Unreachable, "{outcome:?}");
    assert_eq!(
        outcome.detail,
        format!(
            "example.com: RDAP bootstrap {bootstrap}: connection refused; \
             WHOIS {whois_addr}: connection refused"
        )
    );
    assert_eq!(outcome.facts.domain_expires, None);
}

#[tokio::test]
async fn endless_whois_answer_is_capped() {
    let rdap = rdap_server(&[]).await;
    let mut whois = whois_server(Whois::Endless).await;
    let mut spec = spec("example.nordap", rdap.bootstrap());
    spec.whois_server = Some(whois.addr.clone());
    // Far below the timeout: the probe stops reading on its own.
    let outcome = probe(spec).await;
    assert_outcome(
        &outcome,
        Status::Error,
        "no expiry date in the first 64 KiB of the answer",
    );
    assert!(outcome.latency < Duration::from_secs(20), "{outcome:?}");
    assert_eq!(
        whois.questions.try_recv().ok().as_deref(),
        Some("example.nordap\r\n")
    );
}

#[tokio::test]
async fn black_holed_whois_server_is_unreachable_after_the_timeout() {
    let rdap = rdap_server(&[]).await;
    let whois = whois_server(Whois::Silent).await;
    let mut spec = spec("example.nordap", rdap.bootstrap());
    spec.whois_server = Some(whois.addr.clone());
    let outcome = run(spec, Duration::from_millis(300)).await;
    assert_outcome(
        &outcome,
        Status::Unreachable,
        "no answer within the 300ms timeout",
    );
}

#[tokio::test]
async fn not_a_domain_is_error() {
    let outcome = probe(spec("127.0.0.1", url("http://127.0.0.1:9/dns.json"))).await;
    assert_outcome(&outcome, Status::Error, "is not a domain name");
}
