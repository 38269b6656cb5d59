//! Probes: one real network client per check kind, each bounded by a timeout and a cap on what it
//! reads, and none able to panic on what a server sends back.
//!
//! A probe turns a [`CheckSpec`] into an [`Outcome`]: a [`Status`] from the contract's status
//! model, a one-line detail for humans, the latency, and facts worth exporting as metrics
//! (certificate and domain expiry). Probes never touch the store or the alerting: they return
//! values, and the caller decides where those go.

pub mod cors;
pub mod dns;
pub mod http;
pub mod http_check;
pub mod net;
pub mod tcp;
pub mod tls;
pub mod trust;
pub mod whois;

use std::time::{Duration, Instant};

use mesh_proto::Status;
use time::OffsetDateTime;

use crate::plan::{CheckSpec, ProbeSpec};

/// The largest response body a probe reads; the rest is never downloaded.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What one run of one probe concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status, per the contract's status model.
    pub status: Status,
    /// One line for humans, e.g. `GET /api/health returned 502 Bad Gateway`.
    pub detail: String,
    /// How long the probe took.
    pub latency: Duration,
    /// Facts for metrics.
    pub facts: Facts,
}

/// Facts a probe learned on the way, exported as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// When the leaf certificate expires (TLS checks).
    pub cert_not_after: Option<OffsetDateTime>,
    /// When the domain registration expires (WHOIS checks).
    pub domain_expires: Option<OffsetDateTime>,
}

impl Outcome {
    /// An outcome with no facts; the latency is filled in by [`run`].
    pub fn new(status: Status, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            latency: Duration::ZERO,
            facts: Facts::default(),
        }
    }

    /// Shorthand for an `operational` outcome.
    pub fn operational(detail: impl Into<String>) -> Self {
        Self::new(Status::Operational, detail)
    }

    /// Shorthand for a `degraded` outcome.
    pub fn degraded(detail: impl Into<String>) -> Self {
        Self::new(Status::Degraded, detail)
    }

    /// Shorthand for an `error` outcome.
    pub fn error(detail: impl Into<String>) -> Self {
        Self::new(Status::Error, detail)
    }

    /// Shorthand for an `unreachable` outcome.
    pub fn unreachable(detail: impl Into<String>) -> Self {
        Self::new(Status::Unreachable, detail)
    }
}

/// Shared, reusable state for probes: trust stores, resolvers, the RDAP bootstrap cache.
///
/// Building it is cheap; what is expensive (system roots, a resolver per nameserver, IANA's
/// bootstrap file) is loaded on first use and kept.
#[derive(Debug, Default)]
pub struct ProbeContext {
    /// Trust roots and TLS client configs, per `ca_file`.
    pub trust: trust::Trust,
    /// DNS resolvers, per nameserver.
    pub dns: dns::Resolvers,
    /// The RDAP bootstrap cache.
    pub rdap: whois::RdapBootstrap,
    /// The `User-Agent` of HTTP probes; `None`: [`http::USER_AGENT_VALUE`].
    pub user_agent: Option<hyper::header::HeaderValue>,
}

impl ProbeContext {
    /// A context whose HTTP probes name `agent` in their `User-Agent`
    /// (`pom/0.1.0 (agent edge)`), so a target's access log tells which agent asked.
    pub fn for_agent(agent: &str) -> Self {
        Self {
            user_agent: hyper::header::HeaderValue::from_str(&format!(
                "{} (agent {agent})",
                http::USER_AGENT_VALUE
            ))
            .ok(),
            ..Self::default()
        }
    }
}

/// Runs one probe under its timeout.
///
/// A probe that overruns is cancelled and reported `unreachable`: a server that accepts and never
/// answers is, to a user, a server that is down.
pub async fn run(check: &CheckSpec, ctx: &ProbeContext) -> Outcome {
    let started = Instant::now();
    let probe = async {
        match &check.probe {
            ProbeSpec::Http(spec) => http_check::probe(spec, ctx).await,
            ProbeSpec::Tls(spec) => tls::probe(spec, ctx).await,
            ProbeSpec::Dns(spec) => dns::probe(spec, ctx).await,
            ProbeSpec::Whois(spec) => whois::probe(spec, ctx).await,
            ProbeSpec::Cors(spec) => cors::probe(spec, ctx).await,
            ProbeSpec::Tcp(spec) => tcp::probe(spec).await,
        }
    };
    let mut outcome = match tokio::time::timeout(check.timeout, probe).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::unreachable(format!(
            "no answer within the {} timeout",
            humantime::format_duration(check.timeout)
        )),
    };
    outcome.latency = started.elapsed();
    outcome
}

/// Shortens `text` to one line of at most `max` characters, for details.
pub(crate) fn snippet(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    if trimmed.chars().count() > max {
        let cut: String = trimmed.chars().take(max).collect();
        format!("{cut}…")
    } else {
        trimmed.to_owned()
    }
}
