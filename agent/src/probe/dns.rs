//! The DNS check: look a record up and compare the answer set with the expected values.
//!
//! - The answer set equals `expect` (order and case do not matter): `operational`.
//! - A different set, NXDOMAIN, SERVFAIL, REFUSED or a malformed answer: `error`, showing
//!   expected against got.
//! - No answer at all (timeout, nothing listening): `unreachable`.
//!
//! Values are compared in a canonical form: IP addresses as parsed, names lower-case without the
//! trailing dot, MX as `"PREFERENCE HOST"`, TXT as the record's strings joined.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::{Outcome, ProbeContext};
use crate::config::DnsRecordType;
use crate::plan::DnsSpec;

/// Resolvers, one per nameserver (`None`: the system's), built on first use. Their caches are
/// off: every probe must see what the nameserver says now.
#[derive(Debug, Default)]
pub struct Resolvers {
    cache: Mutex<HashMap<Option<SocketAddr>, TokioResolver>>,
}

impl Resolvers {
    fn get(&self, nameserver: Option<SocketAddr>) -> Result<TokioResolver, NetError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(resolver) = cache.get(&nameserver) {
            return Ok(resolver.clone());
        }
        let resolver = build(nameserver)?;
        cache.insert(nameserver, resolver.clone());
        Ok(resolver)
    }
}

fn build(nameserver: Option<SocketAddr>) -> Result<TokioResolver, NetError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match nameserver {
        None => TokioResolver::builder(provider)?,
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut ns.connections {
                connection.port = addr.port();
            }
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                provider,
            );
            builder.options_mut().attempts = 1;
            builder
        }
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.cache_size = 0;
    builder.build()
}

/// Runs one DNS check.
pub async fn probe(spec: &DnsSpec, ctx: &ProbeContext) -> Outcome {
    let rtype = spec.record_type.as_str();
    let label = format!("{rtype} {}", spec.name);
    let server = spec
        .nameserver
        .map_or_else(|| "the system resolver".to_owned(), |ns| ns.to_string());
    let resolver = match ctx.dns.get(spec.nameserver) {
        Ok(resolver) => resolver,
        // A local problem (say, an unreadable resolv.conf), not a wrong answer from the target.
        Err(e) => return Outcome::unreachable(format!("cannot set up a resolver: {e}")),
    };
    // A trailing dot makes the name absolute, so no search domain is tried.
    let fqdn = if spec.name.ends_with('.') {
        spec.name.clone()
    } else {
        format!("{}.", spec.name)
    };
    let got: BTreeSet<String> = match resolver
        .lookup(fqdn.as_str(), record_type(spec.record_type))
        .await
    {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|record| canonical_rdata(spec.record_type, &record.data))
            .collect(),
        Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            query,
            response_code: ResponseCode::NXDomain,
            ..
        }))) => {
            let missing = canonical_name(&query.name().to_ascii());
            return Outcome::error(if missing == canonical_name(&spec.name) {
                format!("{label}: NXDOMAIN from {server}, the name does not exist")
            } else {
                format!("{label}: NXDOMAIN from {server} for {missing}, which the name points to")
            });
        }
        Err(e) if e.is_no_records_found() => BTreeSet::new(),
        Err(NetError::Dns(DnsError::ResponseCode(code))) => {
            return Outcome::error(format!("{label}: {server} answered {code}"));
        }
        Err(NetError::Proto(e)) => {
            return Outcome::error(format!("{label}: malformed answer from {server}: {e}"));
        }
        Err(e) => return Outcome::unreachable(format!("{label}: no answer from {server}: {e}")),
    };
    let shown = |set: &BTreeSet<String>| {
        format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", "))
    };
    if spec.expect.is_empty() {
        return if got.is_empty() {
            Outcome::error(format!("{label}: no {rtype} records"))
        } else {
            Outcome::operational(format!("{label} = {}", shown(&got)))
        };
    }
    let expected: BTreeSet<String> = spec
        .expect
        .iter()
        .map(|v| canonical_expected(spec.record_type, v))
        .collect();
    if expected == got {
        Outcome::operational(format!("{label} = {}", shown(&got)))
    } else {
        Outcome::error(format!(
            "{label}: expected {}, got {}",
            shown(&expected),
            shown(&got)
        ))
    }
}

fn record_type(t: DnsRecordType) -> RecordType {
    match t {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::AAAA => RecordType::AAAA,
        DnsRecordType::CNAME => RecordType::CNAME,
        DnsRecordType::MX => RecordType::MX,
        DnsRecordType::TXT => RecordType::TXT,
        DnsRecordType::NS => RecordType::NS,
    }
}

fn canonical_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The canonical text of an answer record, or `None` when it is not of the asked type (e.g. the
/// CNAME records of a chain, or a wrong-type answer from a broken server).
fn canonical_rdata(want: DnsRecordType, data: &RData) -> Option<String> {
    match (want, data) {
        (DnsRecordType::A, RData::A(a)) => Some(a.0.to_string()),
        (DnsRecordType::AAAA, RData::AAAA(aaaa)) => Some(aaaa.0.to_string()),
        (DnsRecordType::CNAME, RData::CNAME(name)) => Some(canonical_name(&name.0.to_ascii())),
        (DnsRecordType::NS, RData::NS(name)) => Some(canonical_name(&name.0.to_ascii())),
        (DnsRecordType::MX, RData::MX(mx)) => Some(format!(
            "{} {}",
            mx.preference,
            canonical_name(&mx.exchange.to_ascii())
        )),
        (DnsRecordType::TXT, RData::TXT(txt)) => Some(
            txt.txt_data
                .iter()
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect(),
        ),
        _ => None,
    }
}

/// The canonical text of an expected value, as written in the config.
fn canonical_expected(want: DnsRecordType, value: &str) -> String {
    match want {
        DnsRecordType::A | DnsRecordType::AAAA => value
            .trim()
            .parse::<IpAddr>()
            .map_or_else(|_| value.trim().to_owned(), |ip| ip.to_string()),
        DnsRecordType::CNAME | DnsRecordType::NS => canonical_name(value),
        DnsRecordType::MX => match value.split_whitespace().collect::<Vec<_>>().as_slice() {
            [pref, host] => format!(
                "{} {}",
                pref.parse::<u16>()
                    .map_or_else(|_| (*pref).to_owned(), |p| p.to_string()),
                canonical_name(host)
            ),
            _ => value.trim().to_owned(),
        },
        DnsRecordType::TXT => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_values_are_canonicalised() {
        assert_eq!(
            canonical_expected(DnsRecordType::AAAA, "2001:DB8:0::1"),
            "2001:db8::1"
        );
        assert_eq!(
            canonical_expected(DnsRecordType::CNAME, "Edge.Example.COM."),
            "edge.example.com"
        );
        assert_eq!(
            canonical_expected(DnsRecordType::MX, "010  Mail.example.com."),
            "10 mail.example.com"
        );
        assert_eq!(
            canonical_expected(DnsRecordType::TXT, "v=spf1 -all"),
            "v=spf1 -all"
        );
    }
}
