//! The one expansion of a target into its checks, with their ids and config paths.
//!
//! Validation (unique ids, sane intervals) and the probe plan both walk this list, so an id that
//! validation accepted is exactly the id the probes report.

use std::time::Duration;

use mesh_proto::{CheckId, CheckIdError, CheckKind};

use super::{CorsCheck, DnsCheck, HttpCheck, Seg, Target, TcpCheck, TlsCheck, WhoisCheck};

/// One configured check of a target.
#[derive(Debug, Clone, Copy)]
pub enum CheckDef<'a> {
    /// `[targets.health]`.
    Health(&'a HttpCheck),
    /// One of `[[targets.routes]]`.
    Route(&'a HttpCheck),
    /// `[targets.tls]`.
    Tls(&'a TlsCheck),
    /// One of `[[targets.dns]]`.
    Dns(&'a DnsCheck),
    /// `[targets.whois]`.
    Whois(&'a WhoisCheck),
    /// `[targets.cors]`.
    Cors(&'a CorsCheck),
    /// One of `[[targets.tcp]]`.
    Tcp(&'a TcpCheck),
}

impl CheckDef<'_> {
    /// How often the check runs.
    pub fn interval(&self) -> Duration {
        match self {
            Self::Health(c) | Self::Route(c) => c.interval,
            Self::Tls(c) => c.interval,
            Self::Dns(c) => c.interval,
            Self::Whois(c) => c.interval,
            Self::Cors(c) => c.interval,
            Self::Tcp(c) => c.interval,
        }
    }

    /// How long one probe may take.
    pub fn timeout(&self) -> Duration {
        match self {
            Self::Health(c) | Self::Route(c) => c.timeout,
            Self::Tls(c) => c.timeout,
            Self::Dns(c) => c.timeout,
            Self::Whois(c) => c.timeout,
            Self::Cors(c) => c.timeout,
            Self::Tcp(c) => c.timeout,
        }
    }
}

/// A check of a target: its id, where it is configured, and its definition.
#[derive(Debug, Clone)]
pub struct CheckRef<'a> {
    /// The check's id.
    pub id: CheckId,
    /// Its path in the config, below the target (e.g. `routes[1]`).
    pub path: Vec<Seg>,
    /// Its definition.
    pub def: CheckDef<'a>,
}

impl Target {
    /// Every check this target configures, in a stable order: health, tls, routes, dns, whois,
    /// cors, tcp.
    pub fn checks(&self) -> Result<Vec<CheckRef<'_>>, CheckIdError> {
        let name = self.name.as_str();
        let mut out = Vec::new();
        if let Some(health) = &self.health {
            out.push(CheckRef {
                id: CheckId::new(name, CheckKind::Health)?,
                path: vec![Seg::Key("health")],
                def: CheckDef::Health(health),
            });
        }
        if let Some(tls) = &self.tls {
            out.push(CheckRef {
                id: CheckId::new(name, CheckKind::Tls)?,
                path: vec![Seg::Key("tls")],
                def: CheckDef::Tls(tls),
            });
        }
        for (i, route) in self.routes.iter().enumerate() {
            out.push(CheckRef {
                id: CheckId::with_qualifier(name, CheckKind::Route, &route.path)?,
                path: vec![Seg::Key("routes"), Seg::Index(i)],
                def: CheckDef::Route(route),
            });
        }
        for (i, dns) in self.dns.iter().enumerate() {
            let qualifier = match &dns.name {
                Some(record) => format!("{}:{record}", dns.record_type.as_str()),
                None => dns.record_type.as_str().to_owned(),
            };
            out.push(CheckRef {
                id: CheckId::with_qualifier(name, CheckKind::Dns, &qualifier)?,
                path: vec![Seg::Key("dns"), Seg::Index(i)],
                def: CheckDef::Dns(dns),
            });
        }
        if let Some(whois) = &self.whois {
            out.push(CheckRef {
                id: CheckId::new(name, CheckKind::Whois)?,
                path: vec![Seg::Key("whois")],
                def: CheckDef::Whois(whois),
            });
        }
        if let Some(cors) = &self.cors {
            out.push(CheckRef {
                id: CheckId::new(name, CheckKind::Cors)?,
                path: vec![Seg::Key("cors")],
                def: CheckDef::Cors(cors),
            });
        }
        for (i, tcp) in self.tcp.iter().enumerate() {
            let qualifier = match &tcp.host {
                Some(host) => format!("{host}:{}", tcp.port),
                None => tcp.port.to_string(),
            };
            out.push(CheckRef {
                id: CheckId::with_qualifier(name, CheckKind::Tcp, &qualifier)?,
                path: vec![Seg::Key("tcp"), Seg::Index(i)],
                def: CheckDef::Tcp(tcp),
            });
        }
        Ok(out)
    }
}
