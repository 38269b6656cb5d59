//! The DNS probe against a real authoritative server on loopback (`pom::testbed::dns`): every
//! record type it compares, and every way a nameserver can fail, mapped onto the status model.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mesh_proto::{CheckId, CheckKind, Status};
use pom::config::DnsRecordType;
use pom::plan::{CheckSpec, DnsSpec, ProbeSpec};
use pom::probe::{Outcome, ProbeContext};
use pom::testbed::dns::{Behaviour, DnsServer, Zone};

/// The timeout of probes expected to get an answer; generous, since none should come near it.
const ANSWERED: Duration = Duration::from_secs(5);

/// The timeout of probes expected to get no answer: short, so that the tests stay fast.
const SILENT: Duration = Duration::from_millis(500);

fn zone() -> Zone {
    Zone::new()
        .a("example.com", [192, 0, 2, 1])
        .a("example.com", [192, 0, 2, 2])
        .aaaa(
            "example.com",
            "2001:db8::1".parse::<Ipv6Addr>().expect("an IPv6 address"),
        )
        .mx("example.com", 10, "mail.example.com")
        .txt("example.com", "v=spf1 -all")
        .ns("example.com", "ns1.example.com")
        .ns("example.com", "ns2.example.com")
        .a("mail.example.com", [192, 0, 2, 25])
        .cname("www.example.com", "edge.example.com")
        .a("edge.example.com", [192, 0, 2, 80])
        .cname("dangling.example.com", "gone.example.net")
        .behave("servfail.example.com", Behaviour::ServFail)
        .behave("refused.example.com", Behaviour::Refused)
        .behave("silent.example.com", Behaviour::Drop)
        .behave("wrongtype.example.com", Behaviour::WrongType)
        .behave("garbage.example.com", Behaviour::Garbage)
}

async fn server() -> DnsServer {
    DnsServer::start(zone())
        .await
        .expect("the DNS server starts")
}

/// Runs one DNS probe of `name` against `nameserver`.
async fn probe(
    nameserver: SocketAddr,
    name: &str,
    record_type: DnsRecordType,
    expect: &[&str],
    timeout: Duration,
) -> Outcome {
    let spec = CheckSpec {
        id: CheckId::with_qualifier("example", CheckKind::Dns, record_type.as_str())
            .expect("a valid check id"),
        interval: Duration::from_secs(3600),
        timeout,
        probe: ProbeSpec::Dns(DnsSpec {
            name: name.to_owned(),
            record_type,
            expect: expect.iter().map(|v| (*v).to_owned()).collect(),
            nameserver: Some(nameserver),
        }),
    };
    pom::probe::run(&spec, &ProbeContext::default()).await
}

#[track_caller]
fn assert_outcome(outcome: &Outcome, status: Status, detail_parts: &[&str]) {
    assert_eq!(outcome.status, status, "detail: {}", outcome.detail);
    for part in detail_parts {
        assert!(
            outcome.detail.contains(part),
            "detail {:?} does not contain {part:?}",
            outcome.detail
        );
    }
}

#[tokio::test]
async fn a_records_that_match_are_operational() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "example.com",
        DnsRecordType::A,
        &["192.0.2.1", "192.0.2.2"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &["A example.com = [192.0.2.1, 192.0.2.2]"],
    );
}

#[tokio::test]
async fn a_records_match_in_any_order() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "example.com.",
        DnsRecordType::A,
        &["192.0.2.2", " 192.0.2.1"],
        ANSWERED,
    )
    .await;
    assert_outcome(&outcome, Status::Operational, &["[192.0.2.1, 192.0.2.2]"]);
}

#[tokio::test]
async fn aaaa_is_compared_in_canonical_form() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "example.com",
        DnsRecordType::AAAA,
        &["2001:DB8:0:0::1"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &["AAAA example.com = [2001:db8::1]"],
    );
}

#[tokio::test]
async fn cname_is_compared_without_case_or_trailing_dot() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "www.example.com",
        DnsRecordType::CNAME,
        &["Edge.Example.COM."],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &["CNAME www.example.com = [edge.example.com]"],
    );
}

#[tokio::test]
async fn a_lookup_follows_a_cname() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "www.example.com",
        DnsRecordType::A,
        &["192.0.2.80"],
        ANSWERED,
    )
    .await;
    // The CNAME itself is part of the answer but not of the compared set.
    assert_outcome(
        &outcome,
        Status::Operational,
        &["A www.example.com = [192.0.2.80]"],
    );
}

#[tokio::test]
async fn mx_is_compared_as_preference_and_host() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "example.com",
        DnsRecordType::MX,
        &["10 mail.example.com"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &["MX example.com = [10 mail.example.com]"],
    );
}

#[tokio::test]
async fn txt_is_compared_as_text() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "example.com",
        DnsRecordType::TXT,
        &["v=spf1 -all"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &["TXT example.com = [v=spf1 -all]"],
    );
}

#[tokio::test]
async fn ns_records_that_match_are_operational() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "example.com",
        DnsRecordType::NS,
        &["ns2.example.com", "ns1.example.com."],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &["NS example.com = [ns1.example.com, ns2.example.com]"],
    );
}

#[tokio::test]
async fn a_different_answer_is_an_error_showing_both_sets() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "example.com",
        DnsRecordType::A,
        &["192.0.2.1", "192.0.2.3"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Error,
        &[
            "A example.com",
            "expected [192.0.2.1, 192.0.2.3]",
            "got [192.0.2.1, 192.0.2.2]",
        ],
    );
}

#[tokio::test]
async fn nxdomain_is_an_error() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "nope.example.com",
        DnsRecordType::A,
        &["192.0.2.1"],
        ANSWERED,
    )
    .await;
    assert_outcome(&outcome, Status::Error, &["A nope.example.com", "NXDOMAIN"]);
}

#[tokio::test]
async fn servfail_is_an_error() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "servfail.example.com",
        DnsRecordType::A,
        &["192.0.2.1"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Error,
        &["A servfail.example.com", "Server Failure"],
    );
}

#[tokio::test]
async fn refused_is_an_error() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "refused.example.com",
        DnsRecordType::A,
        &["192.0.2.1"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Error,
        &["A refused.example.com", "Refused"],
    );
}

#[tokio::test]
async fn a_dropped_query_is_unreachable_within_the_timeout() {
    let server = server().await;
    let started = Instant::now();
    let outcome = probe(
        server.addr(),
        "silent.example.com",
        DnsRecordType::A,
        &["192.0.2.1"],
        SILENT,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Unreachable,
        &["no answer within the 500ms timeout"],
    );
    assert!(started.elapsed() < ANSWERED, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let closed = {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a UDP socket");
        socket.local_addr().expect("its address")
    };
    let outcome = probe(
        closed,
        "example.com",
        DnsRecordType::A,
        &["192.0.2.1"],
        SILENT,
    )
    .await;
    assert_outcome(&outcome, Status::Unreachable, &["no answer"]);
}

#[tokio::test]
async fn an_answer_of_the_wrong_type_is_an_error() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "wrongtype.example.com",
        DnsRecordType::A,
        &["192.0.2.1"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Error,
        &["A wrongtype.example.com", "expected [192.0.2.1], got []"],
    );
}

#[tokio::test]
async fn a_garbage_answer_is_an_error() {
    let server = server().await;
    let started = Instant::now();
    let outcome = probe(
        server.addr(),
        "garbage.example.com",
        DnsRecordType::A,
        &["192.0.2.1"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Error,
        &[
            "A garbage.example.com",
            "malformed answer from",
            &server.addr().to_string(),
        ],
    );
    assert!(started.elapsed() < ANSWERED, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn no_expectation_accepts_any_records() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "mail.example.com",
        DnsRecordType::A,
        &[],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &["A mail.example.com = [192.0.2.25]"],
    );
}

#[tokio::test]
async fn no_expectation_and_no_records_is_an_error() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "mail.example.com",
        DnsRecordType::AAAA,
        &[],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Error,
        &["AAAA mail.example.com: no AAAA records"],
    );
}

#[tokio::test]
async fn names_are_matched_without_case() {
    let server = server().await;
    let outcome = probe(
        server.addr(),
        "MAIL.Example.COM",
        DnsRecordType::A,
        &["192.0.2.25"],
        ANSWERED,
    )
    .await;
    assert_outcome(&outcome, Status::Operational, &["= [192.0.2.25]"]);
}

#[tokio::test]
async fn a_dangling_cname_is_an_error() {
    let server = server().await;
    // The CNAME's target is outside the zone; the resolver follows it and gets NXDOMAIN.
    let outcome = probe(
        server.addr(),
        "dangling.example.com",
        DnsRecordType::A,
        &["192.0.2.1"],
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Error,
        &[
            "A dangling.example.com",
            "NXDOMAIN from",
            "for gone.example.net, which the name points to",
        ],
    );
    // The CNAME itself is still there to be checked.
    let outcome = probe(
        server.addr(),
        "dangling.example.com",
        DnsRecordType::CNAME,
        &["gone.example.net"],
        ANSWERED,
    )
    .await;
    assert_outcome(&outcome, Status::Operational, &["= [gone.example.net]"]);
}

#[tokio::test]
async fn an_answer_too_big_for_udp_comes_over_tcp() {
    let mut zone = Zone::new();
    let mut expected = Vec::new();
    for i in 1..=100 {
        zone = zone.a("big.example.com", [198, 51, 100, i]);
        expected.push(format!("198.51.100.{i}"));
    }
    let server = DnsServer::start(zone).await.expect("the DNS server starts");
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let outcome = probe(
        server.addr(),
        "big.example.com",
        DnsRecordType::A,
        &expected,
        ANSWERED,
    )
    .await;
    assert_outcome(
        &outcome,
        Status::Operational,
        &["198.51.100.1, ", "198.51.100.100"],
    );
}
