//! The WHOIS check: when a domain's registration expires, asked of its registry over RDAP, with
//! a fallback to classic WHOIS on TCP port 43 for registries without RDAP. This module owns the
//! RDAP bootstrap cache (IANA's `dns.json`, kept 24 hours per bootstrap URL), both clients, and
//! the parsers for their answers. Every read is capped and nothing a server sends can make it
//! panic.
//!
//! RDAP is asked first; WHOIS only when the bootstrap has no RDAP service for the TLD or RDAP gives
//! no usable answer (a 404 is an answer: the domain is not registered). An expiry inside
//! `warn_days` is `degraded`; a past expiry, an unregistered domain or an answer without an
//! expiry date is `error`; no answer from any RDAP or WHOIS server is `unreachable`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{ACCEPT, HeaderValue, LOCATION};
use hyper::{Method, StatusCode};
use mesh_proto::Status;
use rustls::ClientConfig;
use serde_json::Value;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use super::http::{self, Request};
use super::net::{self, describe_io};
use super::{MAX_BODY_BYTES, Outcome, ProbeContext, snippet};
use crate::plan::WhoisSpec;

/// How long a fetched bootstrap file is used before it is fetched again.
const BOOTSTRAP_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The most of a WHOIS answer that is read; real answers are a few KiB.
const MAX_WHOIS_BYTES: usize = 64 * 1024;
/// The WHOIS port.
const WHOIS_PORT: u16 = 43;
/// Where the WHOIS server of a TLD is looked up when none is configured.
const IANA_WHOIS: &str = "whois.iana.org";
/// The most redirects an RDAP request follows.
const MAX_REDIRECTS: usize = 5;

/// WHOIS keys that carry the expiry date, best first. Compared case-insensitively, whole key
/// only: `free-date` (.ru, when a lapsed domain becomes free) is deliberately not here.
const EXPIRY_KEYS: &[&str] = &[
    "Registry Expiry Date",
    "Registrar Registration Expiration Date",
    "Expiration Date",
    "Expiry Date",
    "Expires On",
    "Expires",
    "Expire Date",
    "Expiration Time",
    "Expire",
    "paid-till",
    "Valid Until",
    "Renewal Date",
];

/// Phrases by which WHOIS servers say a domain is not registered (lower case). Only looked for
/// when an answer has no expiry date, so a disclaimer that mentions them does no harm.
const NOT_FOUND_MARKERS: &[&str] = &[
    "no match",
    "not found",
    "no entries found",
    "no data found",
    "no object found",
    "status: free",
    "status: available",
];

/// RDAP bootstrap cache (IANA dns.json), shared across probes.
#[derive(Debug, Default)]
pub struct RdapBootstrap {
    cache: Mutex<HashMap<Url, Cached>>,
}

#[derive(Debug)]
struct Cached {
    fetched: Instant,
    services: Arc<Services>,
}

impl RdapBootstrap {
    /// The bootstrap at `url`, from the cache while it is fresh.
    async fn services(
        &self,
        url: &Url,
        tls: &Arc<ClientConfig>,
    ) -> Result<Arc<Services>, LookupError> {
        if let Some(services) = self.cached(url, Instant::now()) {
            return Ok(services);
        }
        let services = Arc::new(fetch_bootstrap(url, tls).await?);
        let cached = Cached {
            fetched: Instant::now(),
            services: services.clone(),
        };
        self.lock().insert(url.clone(), cached);
        Ok(services)
    }

    fn cached(&self, url: &Url, now: Instant) -> Option<Arc<Services>> {
        self.lock()
            .get(url)
            .filter(|c| now.saturating_duration_since(c.fetched) < BOOTSTRAP_TTL)
            .map(|c| c.services.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Url, Cached>> {
        // Entries are replaced whole; a panic elsewhere cannot leave the map inconsistent.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A parsed RFC 9224 bootstrap file.
#[derive(Debug, Default)]
struct Services(Vec<Service>);

/// One service of a bootstrap file: the domain suffixes it serves, and its base URLs.
#[derive(Debug)]
struct Service {
    entries: Vec<String>,
    urls: Vec<Url>,
}

impl Services {
    /// Parses `{"services": [[["com", "net"], ["https://rdap.example/"]], ...]}`, skipping
    /// entries that do not have that shape.
    fn parse(body: &[u8]) -> Result<Self, String> {
        let json: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let services = json
            .get("services")
            .and_then(Value::as_array)
            .ok_or_else(|| "no \"services\" array".to_owned())?;
        Ok(Self(services.iter().filter_map(Service::parse).collect()))
    }

    /// The base URL for `domain`: the label-wise longest matching entry wins, and an https URL
    /// is preferred over others.
    fn base_for(&self, domain: &str) -> Option<&Url> {
        self.0
            .iter()
            .flat_map(|s| s.entries.iter().map(move |entry| (entry, s)))
            .filter(|(entry, _)| is_suffix(domain, entry))
            .max_by_key(|(entry, _)| entry.split('.').count())
            .and_then(|(_, s)| {
                s.urls
                    .iter()
                    .find(|u| u.scheme() == "https")
                    .or_else(|| s.urls.first())
            })
    }
}

impl Service {
    fn parse(value: &Value) -> Option<Self> {
        let pair = value.as_array()?;
        let entries = pair
            .first()?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(|e| e.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        let urls = pair
            .get(1)?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|u| Url::parse(u).ok())
            .collect();
        Some(Self { entries, urls })
    }
}

/// Whether `suffix` is `domain` or a whole-label suffix of it.
fn is_suffix(domain: &str, suffix: &str) -> bool {
    domain == suffix
        || domain
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Why one way of finding the expiry failed.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    /// No usable answer: no connection, a broken one, or a failing server. `unreachable`,
    /// unless the other protocol answers.
    #[error("{0}")]
    NoAnswer(String),
    /// RDAP cannot be used for this domain: no service for its TLD, or an unusable bootstrap.
    #[error("{0}")]
    NoRdap(String),
    /// The server answered, wrongly or with "not registered". `error`; no fallback.
    #[error("{0}")]
    Answer(String),
}

impl LookupError {
    fn status(&self) -> Status {
        match self {
            Self::NoAnswer(_) => Status::Unreachable,
            Self::NoRdap(_) | Self::Answer(_) => Status::Error,
        }
    }

    /// Whether WHOIS should be asked after this RDAP failure.
    fn falls_back(&self) -> bool {
        !matches!(self, Self::Answer(_))
    }

    /// This RDAP failure followed by WHOIS failing too: WHOIS had the last word.
    fn then_whois(self, whois: Self) -> Self {
        let detail = format!("{self}; {whois}");
        match whois {
            Self::NoAnswer(_) => Self::NoAnswer(detail),
            Self::NoRdap(_) | Self::Answer(_) => Self::Answer(detail),
        }
    }
}

/// An expiry date, and who said so (`RDAP <url>` or `WHOIS <host:port>`).
#[derive(Debug)]
struct Found {
    expires: OffsetDateTime,
    source: String,
}

/// Runs one WHOIS check.
pub async fn probe(spec: &WhoisSpec, ctx: &ProbeContext) -> Outcome {
    let Some(domain) = normalize_domain(&spec.domain) else {
        return Outcome::error(format!("{:?} is not a domain name", spec.domain));
    };
    let rdap = tokio::time::timeout(spec.rdap_timeout, rdap(spec, &domain, ctx))
        .await
        .unwrap_or_else(|_| {
            Err(LookupError::NoAnswer(format!(
                "RDAP: no answer within {}",
                humantime::format_duration(spec.rdap_timeout)
            )))
        });
    let found = match rdap {
        Err(rdap_err) if rdap_err.falls_back() => {
            tracing::debug!(domain = %domain, error = %rdap_err, "RDAP unusable; asking WHOIS");
            whois(spec, &domain)
                .await
                .map_err(|whois_err| rdap_err.then_whois(whois_err))
        }
        other => other,
    };
    match found {
        Ok(found) => judge(&domain, &found, spec.warn_days, OffsetDateTime::now_utc()),
        Err(e) => Outcome::new(e.status(), format!("{domain}: {e}")),
    }
}

/// Turns an expiry date into an outcome at `now`.
fn judge(domain: &str, found: &Found, warn_days: u32, now: OffsetDateTime) -> Outcome {
    let date = found.expires.to_offset(UtcOffset::UTC).date();
    let source = &found.source;
    let mut outcome = if found.expires <= now {
        let ago = days((now - found.expires).whole_days());
        Outcome::error(format!(
            "{domain} expired on {date} ({ago} ago) per {source}"
        ))
    } else {
        let left = (found.expires - now).whole_days();
        if left < i64::from(warn_days) {
            Outcome::degraded(format!(
                "{domain} expires {date} ({}, inside the {warn_days}-day warning window) per {source}",
                days(left)
            ))
        } else {
            Outcome::operational(format!(
                "{domain} expires {date} ({}) per {source}",
                days(left)
            ))
        }
    };
    outcome.facts.domain_expires = Some(found.expires);
    outcome
}

fn days(n: i64) -> String {
    if n == 1 {
        "1 day".to_owned()
    } else {
        format!("{n} days")
    }
}

/// The domain in lower-case ASCII (IDNA applied), without a trailing dot; `None` if it is not a
/// plain domain name (an IP address, or characters no host name has).
fn normalize_domain(raw: &str) -> Option<String> {
    let trimmed = raw.trim().trim_end_matches('.');
    match url::Host::parse(trimmed).ok()? {
        url::Host::Domain(domain)
            if !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) =>
        {
            Some(domain)
        }
        _ => None,
    }
}

/// The last label of `domain`.
fn tld(domain: &str) -> &str {
    domain.rsplit('.').next().unwrap_or(domain)
}

// ---- RDAP ----

async fn rdap(spec: &WhoisSpec, domain: &str, ctx: &ProbeContext) -> Result<Found, LookupError> {
    let tls = ctx
        .trust
        .entry(None)
        .map_err(|e| LookupError::NoRdap(format!("RDAP: {e}")))?
        .http
        .clone();
    let base = match &spec.rdap_url {
        Some(url) => url.clone(),
        None => {
            let services = ctx.rdap.services(&spec.rdap_bootstrap, &tls).await?;
            services.base_for(domain).cloned().ok_or_else(|| {
                LookupError::NoRdap(format!(
                    "no RDAP service for .{} in {}",
                    tld(domain),
                    spec.rdap_bootstrap
                ))
            })?
        }
    };
    let url = domain_url(&base, domain)?;
    let (url, response) = get("RDAP", &url, &tls, "application/rdap+json").await?;
    let label = format!("RDAP {url}");
    match response.status {
        status if status.is_success() => {}
        StatusCode::NOT_FOUND => {
            return Err(LookupError::Answer(format!(
                "{label}: domain not found ({})",
                response.status
            )));
        }
        status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            return Err(LookupError::NoAnswer(format!("{label} answered {status}")));
        }
        status => return Err(LookupError::Answer(format!("{label} answered {status}"))),
    }
    if response.truncated {
        return Err(LookupError::Answer(format!(
            "{label}: answer larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let expires = rdap_expiry(&response.body)
        .map_err(|why| LookupError::Answer(format!("{label}: {why}")))?;
    Ok(Found {
        expires,
        source: label,
    })
}

/// Fetches and parses a bootstrap file. Every failure lets WHOIS be tried.
async fn fetch_bootstrap(url: &Url, tls: &Arc<ClientConfig>) -> Result<Services, LookupError> {
    let (url, response) = get("RDAP bootstrap", url, tls, "application/json")
        .await
        .map_err(|e| match e {
            LookupError::Answer(detail) => LookupError::NoRdap(detail),
            other => other,
        })?;
    if !response.status.is_success() {
        return Err(LookupError::NoRdap(format!(
            "RDAP bootstrap {url} answered {}",
            response.status
        )));
    }
    if response.truncated {
        return Err(LookupError::NoRdap(format!(
            "RDAP bootstrap {url} is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    Services::parse(&response.body)
        .map_err(|why| LookupError::NoRdap(format!("RDAP bootstrap {url} is unusable: {why}")))
}

/// `{base}/domain/{domain}`, whether or not the base ends with a slash.
fn domain_url(base: &Url, domain: &str) -> Result<Url, LookupError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| LookupError::NoRdap(format!("RDAP base URL {base} cannot take a path")))?
        .pop_if_empty()
        .push("domain")
        .push(domain);
    Ok(url)
}

/// GETs `url`, following redirects; returns the final URL and its answer.
async fn get(
    what: &str,
    url: &Url,
    tls: &Arc<ClientConfig>,
    accept: &'static str,
) -> Result<(Url, http::Response), LookupError> {
    let headers = [(ACCEPT, HeaderValue::from_static(accept))];
    let mut url = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let request = Request {
            method: &Method::GET,
            url: &url,
            headers: &headers,
            body: Bytes::new(),
            tls,
            max_body: MAX_BODY_BYTES,
            user_agent: None,
        };
        let response = http::send(&request).await.map_err(|e| {
            let detail = failure(&format!("{what} {url}"), &e);
            match e.status() {
                Status::Unreachable => LookupError::NoAnswer(detail),
                _ => LookupError::Answer(detail),
            }
        })?;
        match redirect_target(&url, &response) {
            Some(next) => url = next,
            None => return Ok((url, response)),
        }
    }
    Err(LookupError::Answer(format!(
        "{what} {url}: more than {MAX_REDIRECTS} redirects"
    )))
}

fn redirect_target(url: &Url, response: &http::Response) -> Option<Url> {
    if !response.status.is_redirection() {
        return None;
    }
    let location = response.headers.get(LOCATION)?.to_str().ok()?;
    url.join(location).ok()
}

/// The `eventDate` of the `expiration` event of an RDAP domain answer.
fn rdap_expiry(body: &[u8]) -> Result<OffsetDateTime, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(body.get(..200).unwrap_or(body));
        format!("answer is not JSON ({e}): {:?}", snippet(&start, 60))
    })?;
    let events = json
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| "answer has no events, so no expiry date".to_owned())?;
    let expiration = events
        .iter()
        .find(|e| {
            e.get("eventAction")
                .and_then(Value::as_str)
                .is_some_and(|a| a.eq_ignore_ascii_case("expiration"))
        })
        .ok_or_else(|| "answer has no expiration event".to_owned())?;
    let date = expiration
        .get("eventDate")
        .and_then(Value::as_str)
        .ok_or_else(|| "the expiration event has no eventDate".to_owned())?;
    parse_date(date).ok_or_else(|| format!("expiration date {:?} is not a date", snippet(date, 40)))
}

// ---- WHOIS ----

async fn whois(spec: &WhoisSpec, domain: &str) -> Result<Found, LookupError> {
    let (host, port) = match &spec.whois_server {
        Some(server) => parse_server(server)
            .ok_or_else(|| LookupError::Answer(format!("invalid whois_server {server:?}")))?,
        None => referral(domain).await?,
    };
    let label = format!("WHOIS {}", host_port(&host, port));
    let (text, capped) = query(&label, &host, port, domain).await?;
    match whois_expiry(&text) {
        Ok(expires) => Ok(Found {
            expires,
            source: label,
        }),
        Err(WhoisError::NoExpiry(_)) if capped => Err(LookupError::Answer(format!(
            "{label}: no expiry date in the first {} KiB of the answer",
            MAX_WHOIS_BYTES / 1024
        ))),
        Err(why) => Err(LookupError::Answer(format!("{label}: {why}"))),
    }
}

/// Asks IANA which WHOIS server (host and port) serves the TLD of `domain`.
async fn referral(domain: &str) -> Result<(String, u16), LookupError> {
    let tld = tld(domain);
    let label = format!("WHOIS {IANA_WHOIS}:{WHOIS_PORT}");
    let (text, _) = query(&label, IANA_WHOIS, WHOIS_PORT, tld).await?;
    referral_server(&text)
        .and_then(|server| parse_server(&server))
        .ok_or_else(|| LookupError::Answer(format!("{label} names no WHOIS server for .{tld}")))
}

/// Sends one WHOIS question and reads the answer until EOF, at most [`MAX_WHOIS_BYTES`];
/// returns the text and whether it was cut at the cap.
async fn query(
    label: &str,
    host: &str,
    port: u16,
    question: &str,
) -> Result<(String, bool), LookupError> {
    let no_answer =
        |e: &std::io::Error| LookupError::NoAnswer(format!("{label}: {}", describe_io(e)));
    let mut stream = net::connect(host, port)
        .await
        .map_err(|e| LookupError::NoAnswer(failure(label, &e)))?;
    stream
        .write_all(format!("{question}\r\n").as_bytes())
        .await
        .map_err(|e| no_answer(&e))?;
    let mut buf = Vec::with_capacity(4096);
    let read = (&mut stream)
        .take(MAX_WHOIS_BYTES as u64)
        .read_to_end(&mut buf)
        .await;
    match read {
        // A reset after some text still leaves an answer worth reading.
        Err(e) if buf.is_empty() => return Err(no_answer(&e)),
        _ if buf.is_empty() => {
            return Err(LookupError::NoAnswer(format!(
                "{label}: closed the connection without answering"
            )));
        }
        _ => {}
    }
    let capped = buf.len() >= MAX_WHOIS_BYTES;
    Ok((String::from_utf8_lossy(&buf).into_owned(), capped))
}

/// `label: error`, without the error's leading `address: ` when the label already names it.
fn failure(label: &str, error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    match text.split_once(": ") {
        Some((address, rest)) if label.contains(address) => format!("{label}: {rest}"),
        _ => format!("{label}: {text}"),
    }
}

/// `host` or `host:port` or `[v6]:port` (or a bare IPv6 address); the port defaults to 43.
fn parse_server(server: &str) -> Option<(String, u16)> {
    let server = server.trim();
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(port) => (host, port.parse().ok()?),
            None if after.is_empty() => (host, WHOIS_PORT),
            None => return None,
        }
    } else {
        match server.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, port.parse().ok()?),
            _ => (server, WHOIS_PORT),
        }
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Why a WHOIS answer gave no expiry date.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum WhoisError {
    /// The server says the domain is not registered.
    #[error("domain not found ({0})")]
    NotFound(String),
    /// An expiry key is there, but its value is not a date we read.
    #[error("unrecognised expiry date {0:?}")]
    BadDate(String),
    /// Nothing that looks like an expiry date.
    #[error("no expiry date in the answer: {0}")]
    NoExpiry(String),
}

/// The expiry date in a WHOIS answer, by the first of [`EXPIRY_KEYS`] that has a date.
fn whois_expiry(text: &str) -> Result<OffsetDateTime, WhoisError> {
    let mut bad_date = None;
    for key in EXPIRY_KEYS {
        let values = text
            .lines()
            .filter_map(key_value)
            .filter(|(k, v)| k.eq_ignore_ascii_case(key) && !v.is_empty())
            .map(|(_, v)| v);
        for value in values {
            match parse_date(value) {
                Some(date) => return Ok(date),
                None => {
                    bad_date.get_or_insert(value);
                }
            }
        }
    }
    let not_found = text.lines().find(|line| {
        let line = line.to_ascii_lowercase();
        NOT_FOUND_MARKERS.iter().any(|m| line.contains(m))
    });
    Err(match (not_found, bad_date) {
        (Some(line), _) => WhoisError::NotFound(snippet(line, 80)),
        (None, Some(value)) => WhoisError::BadDate(snippet(value, 40)),
        (None, None) => WhoisError::NoExpiry(snippet(text, 80)),
    })
}

/// The WHOIS server named by IANA's answer for a TLD: its `refer:` line, else its `whois:` line.
fn referral_server(text: &str) -> Option<String> {
    ["refer", "whois"].iter().find_map(|key| {
        text.lines()
            .filter_map(key_value)
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .find_map(|(_, v)| {
                let host = v.split_whitespace().next()?;
                host.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
                    .then(|| host.to_owned())
            })
    })
}

/// Splits `Key: value` (dot leaders allowed) or `[Key] value` (JPRS style).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    let (key, value) = match line.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?,
        None => line.split_once(':')?,
    };
    Some((key.trim().trim_end_matches('.').trim(), value.trim()))
}

/// A date as registries write it: RFC 3339, or a day in one of a few layouts optionally
/// followed by a time of day (then read as UTC).
fn parse_date(value: &str) -> Option<OffsetDateTime> {
    let value = value.trim();
    let mut tokens = value.split_whitespace();
    let first = tokens.next()?;
    for candidate in [value, first] {
        if let Ok(date) = OffsetDateTime::parse(candidate, &Rfc3339) {
            return Some(date.to_offset(UtcOffset::UTC));
        }
    }
    let (day, time) = match parse_day(first) {
        Some(day) => (day, tokens.next().and_then(parse_time)),
        None => {
            let (day, time) = first.split_once(['T', 't'])?;
            (parse_day(day)?, parse_time(time))
        }
    };
    Some(PrimitiveDateTime::new(day, time.unwrap_or(Time::MIDNIGHT)).assume_utc())
}

/// Day layouts seen in WHOIS answers. Ambiguous ones (`06/07/2026`) are left out on purpose.
const DAY_FORMATS: &[&[BorrowedFormatItem<'static>]] = &[
    format_description!("[year]-[month]-[day]"),
    format_description!("[year].[month].[day]"),
    format_description!("[year]/[month]/[day]"),
    format_description!("[year][month][day]"),
    format_description!("[day padding:none]-[month repr:short case_sensitive:false]-[year]"),
    format_description!("[day padding:none].[month padding:none].[year]"),
];

fn parse_day(text: &str) -> Option<Date> {
    DAY_FORMATS
        .iter()
        .find_map(|format| Date::parse(text, format).ok())
}

/// `HH:MM[:SS]` at the start of `text`; a fraction, `Z` or an offset after it is ignored.
fn parse_time(text: &str) -> Option<Time> {
    let clock = text
        .split(|c: char| !(c.is_ascii_digit() || c == ':'))
        .next()?;
    Time::parse(clock, format_description!("[hour]:[minute]:[second]"))
        .or_else(|_| Time::parse(clock, format_description!("[hour]:[minute]")))
        .ok()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn date(text: &str) -> Option<OffsetDateTime> {
        parse_date(text)
    }

    #[test]
    fn parses_registry_date_layouts() {
        let day = datetime!(2026-06-14 00:00 UTC);
        let at = datetime!(2026-06-14 03:12:09 UTC);
        assert_eq!(date("2026-06-14T03:12:09Z"), Some(at));
        assert_eq!(
            date("2026-06-14T03:12:09.123Z"),
            Some(datetime!(2026-06-14 03:12:09.123 UTC))
        );
        assert_eq!(date("2026-06-14T05:12:09+02:00"), Some(at));
        assert_eq!(date("2026-06-14T03:12:09Z (UTC)"), Some(at));
        assert_eq!(date("2026-06-14T03:12:09"), Some(at));
        assert_eq!(date("2026-06-14 03:12:09"), Some(at));
        assert_eq!(date("2026-06-14 03:12:09 (GMT+0:00)"), Some(at));
        assert_eq!(date("2026-06-14"), Some(day));
        assert_eq!(date("2026.06.14"), Some(day));
        assert_eq!(date("2026.06.14 03:12:09"), Some(at));
        assert_eq!(date("2026/06/14"), Some(day));
        assert_eq!(date("20260614"), Some(day));
        assert_eq!(date("14-Jun-2026"), Some(day));
        assert_eq!(date("14-JUN-2026"), Some(day));
        assert_eq!(date("4-Oct-2026"), Some(datetime!(2026-10-04 00:00 UTC)));
        assert_eq!(
            date("14-Oct-2026 03:12:09"),
            Some(datetime!(2026-10-14 03:12:09 UTC))
        );
        assert_eq!(date("14.06.2026"), Some(day));
        assert_eq!(date("  2026-06-14  "), Some(day));
    }

    #[test]
    fn rejects_what_is_not_a_date() {
        for text in [
            "",
            " ",
            "never",
            "2026-13-01",
            "2026-02-30",
            "06/14/2026",
            "T",
            "T12:00:00",
            "14-Foo-2026",
            "ünïcödé",
            "9999999999-01-01",
            "2026-06-14x",
        ] {
            assert_eq!(date(text), None, "{text:?}");
        }
        // A date with an unreadable time keeps the date.
        assert_eq!(
            date("2026-06-14Tnonsense"),
            Some(datetime!(2026-06-14 00:00 UTC))
        );
    }

    #[test]
    fn reads_verisign_style_answer() {
        let text = "   Domain Name: EXAMPLE.COM\r\n\
                    \x20  Updated Date: 2025-08-14T07:01:34Z\r\n\
                    \x20  Creation Date: 1995-08-14T04:00:00Z\r\n\
                    \x20  Registrar Registration Expiration Date:\r\n\
                    \x20  Registry Expiry Date: 2026-08-13T04:00:00Z\r\n\
                    >>> Last update of whois database: 2025-11-01T00:00:00Z <<<\r\n\
                    NOTICE: if a domain is not found, ...\r\n";
        assert_eq!(whois_expiry(text), Ok(datetime!(2026-08-13 04:00 UTC)));
    }

    #[test]
    fn prefers_registry_expiry_over_registrar() {
        let text = "Registrar Registration Expiration Date: 2027-01-01T00:00:00Z\n\
                    Registry Expiry Date: 2026-08-13T04:00:00Z\n";
        assert_eq!(whois_expiry(text), Ok(datetime!(2026-08-13 04:00 UTC)));
    }

    #[test]
    fn reads_cctld_answers() {
        let nominet = "    Relevant dates:\n        Registered on: 14-Jun-2001\n        \
                       Expiry date:  14-Jun-2026\n        Last updated:  01-May-2025\n";
        assert_eq!(whois_expiry(nominet), Ok(datetime!(2026-06-14 00:00 UTC)));
        let ru = "domain:        EXAMPLE.RU\nfree-date:     2026-07-16\n\
                  paid-till:     2026-06-14T21:00:00Z\n";
        assert_eq!(whois_expiry(ru), Ok(datetime!(2026-06-14 21:00 UTC)));
        let br = "domain:      example.com.br\nexpires:     20260614\n";
        assert_eq!(whois_expiry(br), Ok(datetime!(2026-06-14 00:00 UTC)));
        let jp = "[Domain Name]   EXAMPLE.JP\n[Expires on]    2026/06/30\n";
        assert_eq!(whois_expiry(jp), Ok(datetime!(2026-06-30 00:00 UTC)));
        let dots = "Expiration Date.............: 2026.06.14 03:12:09\n";
        assert_eq!(whois_expiry(dots), Ok(datetime!(2026-06-14 03:12:09 UTC)));
        let cn = "Expiration Time: 2026-06-14 03:12:09\n";
        assert_eq!(whois_expiry(cn), Ok(datetime!(2026-06-14 03:12:09 UTC)));
    }

    #[test]
    fn free_date_alone_is_not_an_expiry() {
        let text = "domain: EXAMPLE.RU\nfree-date: 2026-07-16\n";
        assert!(matches!(whois_expiry(text), Err(WhoisError::NoExpiry(_))));
    }

    #[test]
    fn says_not_found() {
        for text in [
            "No match for \"NOPE.COM\".\r\n>>> Last update of whois database <<<\r\n",
            "%% NOT FOUND\n",
            "No entries found for the selected source(s).\n",
            "Domain Name: nope.de\nStatus: free\n",
        ] {
            assert!(
                matches!(whois_expiry(text), Err(WhoisError::NotFound(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn reports_unreadable_dates_and_missing_ones() {
        assert_eq!(
            whois_expiry("Registry Expiry Date: someday\n"),
            Err(WhoisError::BadDate("someday".to_owned()))
        );
        assert!(matches!(whois_expiry(""), Err(WhoisError::NoExpiry(_))));
        assert!(matches!(
            whois_expiry("xxxxxxxxxxxxxxxx"),
            Err(WhoisError::NoExpiry(_))
        ));
    }

    #[test]
    fn finds_iana_referral() {
        let iana = "% IANA WHOIS server\n\ndomain:       COM\n\norganisation: VeriSign\n\
                    whois:        whois.verisign-grs.com\nrefer:        whois.verisign-grs.com\n";
        assert_eq!(
            referral_server(iana).as_deref(),
            Some("whois.verisign-grs.com")
        );
        let whois_only = "domain: EXAMPLE\nwhois:  whois.nic.example\n";
        assert_eq!(
            referral_server(whois_only).as_deref(),
            Some("whois.nic.example")
        );
        assert_eq!(referral_server("domain: EXAMPLE\nrefer:\n"), None);
        assert_eq!(referral_server("refer: evil\u{0}host\n"), None);
        assert_eq!(referral_server(""), None);
    }

    #[test]
    fn parses_whois_server_setting() {
        let p = |s: &str| parse_server(s);
        assert_eq!(p("whois.example"), Some(("whois.example".to_owned(), 43)));
        assert_eq!(
            p("whois.example:4343"),
            Some(("whois.example".to_owned(), 4343))
        );
        assert_eq!(p("127.0.0.1:43"), Some(("127.0.0.1".to_owned(), 43)));
        assert_eq!(p("[::1]:4343"), Some(("::1".to_owned(), 4343)));
        assert_eq!(p("[::1]"), Some(("::1".to_owned(), 43)));
        assert_eq!(p("::1"), Some(("::1".to_owned(), 43)));
        assert_eq!(p("host:port"), None);
        assert_eq!(p("host:99999"), None);
        assert_eq!(p(":43"), None);
        assert_eq!(p("[::1"), None);
        assert_eq!(p("[::1]x"), None);
        assert_eq!(p(""), None);
        assert_eq!(host_port("::1", 43), "[::1]:43");
        assert_eq!(host_port("whois.example", 43), "whois.example:43");
    }

    const BOOTSTRAP: &str = r#"{
        "version": "1.0",
        "services": [
            [["com", "net"], ["http://rdap.plain.example/com/", "https://rdap.verisign.example/com/v1/"]],
            [["example"], ["https://rdap.nic.example"]],
            [["co.example"], ["https://rdap.co.example/"]],
            [["broken"]],
            "nonsense",
            [["nourl"], ["not a url"]]
        ]
    }"#;

    #[test]
    fn bootstrap_finds_base_by_longest_match() {
        let services = Services::parse(BOOTSTRAP.as_bytes()).expect("valid bootstrap");
        let base = |d: &str| services.base_for(d).map(Url::as_str);
        assert_eq!(
            base("example.com"),
            Some("https://rdap.verisign.example/com/v1/")
        );
        assert_eq!(
            base("a.b.net"),
            Some("https://rdap.verisign.example/com/v1/")
        );
        assert_eq!(base("foo.example"), Some("https://rdap.nic.example/"));
        assert_eq!(base("foo.co.example"), Some("https://rdap.co.example/"));
        assert_eq!(base("foo.xco.example"), Some("https://rdap.nic.example/"));
        assert_eq!(base("example.org"), None);
        assert_eq!(base("foo.nourl"), None);
        assert_eq!(base("foo.broken"), None);
        assert_eq!(base("notcom"), None);
    }

    #[test]
    fn bootstrap_rejects_garbage() {
        assert!(Services::parse(b"<html>").is_err());
        assert!(Services::parse(b"{}").is_err());
        assert!(Services::parse(b"{\"services\": 3}").is_err());
        let empty = Services::parse(b"{\"services\": []}").expect("empty is valid");
        assert_eq!(empty.base_for("example.com"), None);
    }

    #[test]
    fn bootstrap_cache_expires() {
        let cache = RdapBootstrap::default();
        let url = Url::parse("http://bootstrap.example/dns.json").expect("valid url");
        let then = Instant::now();
        cache.lock().insert(
            url.clone(),
            Cached {
                fetched: then,
                services: Arc::new(Services::default()),
            },
        );
        assert!(cache.cached(&url, then).is_some());
        assert!(cache.cached(&url, then + BOOTSTRAP_TTL / 2).is_some());
        assert!(cache.cached(&url, then + BOOTSTRAP_TTL).is_none());
        let other = Url::parse("http://other.example/dns.json").expect("valid url");
        assert!(cache.cached(&other, then).is_none());
    }

    #[test]
    fn joins_domain_path() {
        let join = |base: &str| {
            domain_url(&Url::parse(base).expect("valid url"), "example.com")
                .map(String::from)
                .ok()
        };
        let want = |s: &str| Some(s.to_owned());
        assert_eq!(
            join("https://r.example/com/v1/"),
            want("https://r.example/com/v1/domain/example.com")
        );
        assert_eq!(
            join("https://r.example/com/v1"),
            want("https://r.example/com/v1/domain/example.com")
        );
        assert_eq!(
            join("https://r.example"),
            want("https://r.example/domain/example.com")
        );
        assert_eq!(
            join("https://r.example/?x=1#f"),
            want("https://r.example/domain/example.com")
        );
        assert_eq!(join("mailto:rdap@example.com"), None);
    }

    #[test]
    fn reads_rdap_expiration_event() {
        let body = br#"{"objectClassName": "domain", "events": [
            {"eventAction": "registration", "eventDate": "1995-08-14T04:00:00Z"},
            {"eventAction": "expiration", "eventDate": "2026-08-13T04:00:00Z"},
            {"eventAction": "last update of RDAP database", "eventDate": "2025-11-01T00:00:00Z"}
        ]}"#;
        assert_eq!(rdap_expiry(body), Ok(datetime!(2026-08-13 04:00 UTC)));
        assert!(rdap_expiry(b"not json").is_err_and(|e| e.contains("not JSON")));
        assert!(rdap_expiry(b"{}").is_err_and(|e| e.contains("no events")));
        assert!(
            rdap_expiry(b"{\"events\": [1, \"x\", {}]}")
                .is_err_and(|e| e.contains("no expiration"))
        );
        assert!(
            rdap_expiry(b"{\"events\": [{\"eventAction\": \"expiration\"}]}")
                .is_err_and(|e| e.contains("no eventDate"))
        );
        assert!(
            rdap_expiry(
                b"{\"events\": [{\"eventAction\": \"expiration\", \"eventDate\": \"soon\"}]}"
            )
            .is_err_and(|e| e.contains("not a date"))
        );
        assert!(rdap_expiry(&[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn normalizes_domains() {
        assert_eq!(
            normalize_domain(" Example.COM. ").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            normalize_domain("bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(normalize_domain("127.0.0.1"), None);
        assert_eq!(normalize_domain("[::1]"), None);
        assert_eq!(normalize_domain("exa mple.com"), None);
        assert_eq!(normalize_domain("example.com\r\nx"), None);
        assert_eq!(normalize_domain("exa%0d%0ample.com"), None);
        assert_eq!(normalize_domain(""), None);
        assert_eq!(tld("example.co.uk"), "uk");
        assert_eq!(tld("localhost"), "localhost");
    }

    fn found(expires: OffsetDateTime) -> Found {
        Found {
            expires,
            source: "WHOIS whois.example:43".to_owned(),
        }
    }

    #[test]
    fn judges_expiry_against_warning_window() {
        let now = datetime!(2026-01-01 12:00 UTC);
        let ok = judge(
            "example.com",
            &found(datetime!(2026-04-10 12:00 UTC)),
            30,
            now,
        );
        assert_eq!(ok.status, Status::Operational);
        assert_eq!(
            ok.detail,
            "example.com expires 2026-04-10 (99 days) per WHOIS whois.example:43"
        );
        assert_eq!(
            ok.facts.domain_expires,
            Some(datetime!(2026-04-10 12:00 UTC))
        );

        let soon = judge(
            "example.com",
            &found(datetime!(2026-01-11 13:00 UTC)),
            30,
            now,
        );
        assert_eq!(soon.status, Status::Degraded);
        assert!(
            soon.detail
                .contains("(10 days, inside the 30-day warning window)"),
            "{}",
            soon.detail
        );

        let edge = judge(
            "example.com",
            &found(datetime!(2026-01-31 12:00 UTC)),
            30,
            now,
        );
        assert_eq!(edge.status, Status::Operational);

        let gone = judge(
            "example.com",
            &found(datetime!(2025-12-31 11:00 UTC)),
            30,
            now,
        );
        assert_eq!(gone.status, Status::Error);
        assert_eq!(
            gone.detail,
            "example.com expired on 2025-12-31 (1 day ago) per WHOIS whois.example:43"
        );
        assert!(gone.facts.domain_expires.is_some());

        let offset = judge(
            "example.com",
            &found(datetime!(2026-04-11 01:00 +03:00)),
            0,
            now,
        );
        assert!(
            offset.detail.contains("expires 2026-04-10"),
            "{}",
            offset.detail
        );
    }

    #[test]
    fn failure_does_not_repeat_the_address() {
        let refused = "127.0.0.1:43: connection refused";
        assert_eq!(
            failure("WHOIS 127.0.0.1:43", &refused),
            "WHOIS 127.0.0.1:43: connection refused"
        );
        assert_eq!(
            failure("RDAP http://127.0.0.1:43/domain/x.test", &refused),
            "RDAP http://127.0.0.1:43/domain/x.test: connection refused"
        );
        assert_eq!(
            failure("WHOIS whois.example:43", &refused),
            "WHOIS whois.example:43: 127.0.0.1:43: connection refused"
        );
        assert_eq!(failure("WHOIS h:43", &"timed out"), "WHOIS h:43: timed out");
    }

    #[test]
    fn combines_rdap_and_whois_failures() {
        let rdap = LookupError::NoRdap("no RDAP service for .test".to_owned());
        let both = rdap.then_whois(LookupError::NoAnswer(
            "WHOIS h:43: connection refused".to_owned(),
        ));
        assert_eq!(both.status(), Status::Unreachable);
        assert_eq!(
            both.to_string(),
            "no RDAP service for .test; WHOIS h:43: connection refused"
        );
        let rdap = LookupError::NoAnswer("RDAP x: connection refused".to_owned());
        let both = rdap.then_whois(LookupError::Answer(
            "WHOIS h:43: domain not found".to_owned(),
        ));
        assert_eq!(both.status(), Status::Error);
        assert!(!LookupError::Answer(String::new()).falls_back());
        assert!(LookupError::NoAnswer(String::new()).falls_back());
        assert!(LookupError::NoRdap(String::new()).falls_back());
    }
}
