//! The probe plan: a validated [`Config`] expanded into concrete checks, each with its id,
//! schedule and fully resolved probe parameters (absolute URLs, parsed methods and headers,
//! expected values).
//!
//! Building the plan repeats no validation: it relies on [`Target::checks`], the same expansion
//! that validation walked, and turns the few conversions that could still fail into a
//! [`PlanError`] rather than a panic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use mesh_proto::CheckId;
use url::Url;

use crate::config::{CheckDef, Config, DnsRecordType, HttpCheck, Target, parse_nameserver};

/// One check, ready to run.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// The check's id.
    pub id: CheckId,
    /// How often it runs.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// What to probe, and what to expect.
    pub probe: ProbeSpec,
}

/// The probe parameters of one check.
#[derive(Debug, Clone)]
pub enum ProbeSpec {
    /// Health and route checks.
    Http(HttpSpec),
    /// A certificate inspection.
    Tls(TlsSpec),
    /// A DNS record comparison.
    Dns(DnsSpec),
    /// A domain expiry lookup.
    Whois(WhoisSpec),
    /// A CORS preflight.
    Cors(CorsSpec),
    /// A TCP connect.
    Tcp(TcpSpec),
}

/// An HTTP request and what its answer must look like.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: Url,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body (empty for none).
    pub body: Bytes,
    /// Statuses that count as success; empty means any 2xx.
    pub expect_status: Vec<u16>,
    /// A substring the body must contain.
    pub expect_body: Option<String>,
    /// A regex the body must match.
    pub expect_body_regex: Option<regex::Regex>,
    /// JSON fields the body must have: dotted path and value.
    pub expect_json: Vec<(String, serde_json::Value)>,
    /// Whether redirects are followed.
    pub follow_redirects: bool,
    /// An extra trust root for HTTPS.
    pub ca_file: Option<PathBuf>,
}

/// A certificate inspection.
#[derive(Debug, Clone)]
pub struct TlsSpec {
    /// The host name (SNI and name check) or IP address.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Days before expiry at which the check turns `degraded`.
    pub warn_days: u32,
    /// An extra trust root.
    pub ca_file: Option<PathBuf>,
}

/// A DNS record comparison.
#[derive(Debug, Clone)]
pub struct DnsSpec {
    /// The name to look up.
    pub name: String,
    /// The record type.
    pub record_type: DnsRecordType,
    /// The expected answer set; empty means "any answer".
    pub expect: Vec<String>,
    /// The nameserver; `None` is the system resolver.
    pub nameserver: Option<SocketAddr>,
}

/// A domain expiry lookup.
#[derive(Debug, Clone)]
pub struct WhoisSpec {
    /// The registered domain.
    pub domain: String,
    /// Days before expiry at which the check turns `degraded`.
    pub warn_days: u32,
    /// IANA's RDAP bootstrap file.
    pub rdap_bootstrap: Url,
    /// An RDAP base URL that overrides the bootstrap.
    pub rdap_url: Option<Url>,
    /// A WHOIS server (`host[:port]`) that overrides the IANA referral.
    pub whois_server: Option<String>,
    /// RDAP's share of the check's timeout, so that a hung RDAP server still leaves WHOIS time
    /// to answer.
    pub rdap_timeout: Duration,
}

/// A CORS preflight.
#[derive(Debug, Clone)]
pub struct CorsSpec {
    /// The absolute URL the preflight goes to.
    pub url: Url,
    /// The `Origin`.
    pub origin: String,
    /// The method asked for.
    pub method: Method,
    /// The headers asked for.
    pub headers: Vec<String>,
    /// An extra trust root for HTTPS.
    pub ca_file: Option<PathBuf>,
}

/// A TCP connect.
#[derive(Debug, Clone)]
pub struct TcpSpec {
    /// The host name or IP address.
    pub host: String,
    /// The port.
    pub port: u16,
}

/// A config that passed validation but still cannot be planned. Seeing one is a bug in
/// validation; it is reported, never panicked on.
#[derive(Debug, thiserror::Error)]
#[error("{check}: {message}")]
pub struct PlanError {
    /// The check concerned (or the target, when the id itself failed).
    pub check: String,
    /// What went wrong.
    pub message: String,
}

/// Expands every target of `config` into its checks, in config order.
pub fn build(config: &Config) -> Result<Vec<CheckSpec>, PlanError> {
    let mut specs = Vec::new();
    for target in &config.targets {
        let checks = target.checks().map_err(|e| PlanError {
            check: target.name.clone(),
            message: e.to_string(),
        })?;
        for check in checks {
            let fail = |message: String| PlanError {
                check: check.id.to_string(),
                message,
            };
            specs.push(CheckSpec {
                interval: check.def.interval(),
                timeout: check.def.timeout(),
                probe: probe_spec(target, &check.def).map_err(fail)?,
                id: check.id,
            });
        }
    }
    Ok(specs)
}

fn probe_spec(target: &Target, def: &CheckDef<'_>) -> Result<ProbeSpec, String> {
    let url = || target.url.clone().ok_or("the target has no url".to_owned());
    let host = |own: Option<&String>| {
        own.cloned()
            .or_else(|| target.host().map(str::to_owned))
            .ok_or("no host: set one or give the target a url".to_owned())
    };
    Ok(match def {
        CheckDef::Health(http) | CheckDef::Route(http) => {
            ProbeSpec::Http(http_spec(&url()?, http, target.ca_file.clone())?)
        }
        CheckDef::Tls(tls) => {
            let url = url()?;
            ProbeSpec::Tls(TlsSpec {
                host: host_for_connect(&url)?,
                // An explicit port in an https URL is where TLS is; otherwise TLS is on 443, even
                // when the target's URL is plain http.
                port: tls
                    .port
                    .or(match url.scheme() {
                        "https" => url.port(),
                        _ => None,
                    })
                    .unwrap_or(443),
                warn_days: tls.warn_days,
                ca_file: target.ca_file.clone(),
            })
        }
        CheckDef::Dns(dns) => ProbeSpec::Dns(DnsSpec {
            name: host(dns.name.as_ref())?,
            record_type: dns.record_type,
            expect: dns.expect.clone(),
            nameserver: match &dns.nameserver {
                Some(ns) => Some(parse_nameserver(ns).ok_or(format!("bad nameserver {ns:?}"))?),
                None => None,
            },
        }),
        CheckDef::Whois(whois) => ProbeSpec::Whois(WhoisSpec {
            domain: match &whois.domain {
                Some(domain) => domain.clone(),
                None => registered_domain(&host(None)?),
            },
            warn_days: whois.warn_days,
            rdap_bootstrap: whois.rdap_bootstrap.clone(),
            rdap_url: whois.rdap_url.clone(),
            whois_server: whois.whois_server.clone(),
            rdap_timeout: whois.timeout * 3 / 5,
        }),
        CheckDef::Cors(cors) => ProbeSpec::Cors(CorsSpec {
            url: url()?.join(&cors.path).map_err(|e| e.to_string())?,
            origin: cors.origin.clone(),
            method: Method::from_bytes(cors.method.as_bytes()).map_err(|e| e.to_string())?,
            headers: cors.headers.clone(),
            ca_file: target.ca_file.clone(),
        }),
        CheckDef::Tcp(tcp) => ProbeSpec::Tcp(TcpSpec {
            host: match &tcp.host {
                Some(h) => h.clone(),
                None => host_for_connect(&url()?)?,
            },
            port: tcp.port,
        }),
    })
}

fn http_spec(base: &Url, http: &HttpCheck, ca_file: Option<PathBuf>) -> Result<HttpSpec, String> {
    let headers = http
        .headers
        .iter()
        .map(|(name, value)| {
            Ok((
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
                HeaderValue::from_str(value).map_err(|e| e.to_string())?,
            ))
        })
        .collect::<Result<_, String>>()?;
    let expect_json = http
        .expect_json
        .iter()
        .map(|(path, value)| {
            serde_json::to_value(value)
                .map(|v| (path.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, String>>()?;
    Ok(HttpSpec {
        method: Method::from_bytes(http.method.as_bytes()).map_err(|e| e.to_string())?,
        url: base.join(&http.path).map_err(|e| e.to_string())?,
        headers,
        body: http.body.clone().map(Bytes::from).unwrap_or_default(),
        expect_status: http.expect_status.clone(),
        expect_body: http.expect_body.clone(),
        expect_body_regex: http.expect_body_regex.as_ref().map(|r| r.0.clone()),
        expect_json,
        follow_redirects: http.follow_redirects,
        ca_file,
    })
}

/// The URL's host as a connectable name: IPv6 literals lose their brackets.
fn host_for_connect(url: &Url) -> Result<String, String> {
    match url.host() {
        Some(url::Host::Domain(d)) => Ok(d.to_owned()),
        Some(url::Host::Ipv4(ip)) => Ok(ip.to_string()),
        Some(url::Host::Ipv6(ip)) => Ok(ip.to_string()),
        None => Err(format!("{url} has no host")),
    }
}

/// Second-level labels under which registries sell third-level names (`example.co.uk`).
const SECOND_LEVEL_REGISTRIES: &[&str] =
    &["co", "com", "net", "org", "gov", "edu", "ac", "ne", "or"];

/// The registered domain of `host`, by a small heuristic: the last two labels, or three under a
/// two-letter country code with a well-known second level (`shop.example.co.uk` →
/// `example.co.uk`). Set `[targets.whois] domain` where this guesses wrong.
pub fn registered_domain(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let keep = match labels.as_slice() {
        [.., second, tld] if tld.len() == 2 && SECOND_LEVEL_REGISTRIES.contains(second) => 3,
        _ => 2,
    };
    labels[labels.len().saturating_sub(keep)..].join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_port(url: &str) -> u16 {
        let text = format!("[[targets]]\nname = \"t\"\nurl = \"{url}\"\n[targets.tls]\n");
        let config = crate::config::parse(&text, "t.toml", None).expect("config");
        match build(&config).expect("plan").remove(0).probe {
            ProbeSpec::Tls(tls) => tls.port,
            other => panic!("not a TLS check: {other:?}"),
        }
    }

    #[test]
    fn tls_checks_default_to_443_unless_an_https_url_names_a_port() {
        assert_eq!(tls_port("https://a.example"), 443);
        assert_eq!(tls_port("https://a.example:8443"), 8443);
        assert_eq!(tls_port("http://a.example"), 443);
        assert_eq!(tls_port("http://a.example:8080"), 443);
    }

    #[test]
    fn registered_domain_strips_subdomains() {
        assert_eq!(registered_domain("makenot.work"), "makenot.work");
        assert_eq!(registered_domain("app.makenot.work"), "makenot.work");
        assert_eq!(registered_domain("a.b.Example.COM."), "example.com");
        assert_eq!(registered_domain("shop.example.co.uk"), "example.co.uk");
        assert_eq!(registered_domain("localhost"), "localhost");
    }
}
