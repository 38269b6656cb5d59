//! Check ids: `TARGET/KIND` plus a qualifier where a kind can appear more than once.
//!
//! Examples (DESIGN.md, a contract): `makenot.work/health`, `makenot.work/tls`,
//! `makenot.work/route:/login`, `makenot.work/dns:A`. The id is the key of everything that is
//! shared about a check: observations, votes, incidents, metric labels.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// An HTTP request to the target's health endpoint.
    Health,
    /// The TLS certificate the target presents.
    Tls,
    /// An HTTP request to one of the target's routes.
    Route,
    /// A DNS record compared with its expected values.
    Dns,
    /// The domain's registration expiry (RDAP, with a WHOIS fallback).
    Whois,
    /// A CORS preflight.
    Cors,
    /// A TCP connect.
    Tcp,
    /// A push heartbeat that an outside job must send within its `max_age`.
    Heartbeat,
}

impl CheckKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::Health,
        Self::Tls,
        Self::Route,
        Self::Dns,
        Self::Whois,
        Self::Cors,
        Self::Tcp,
        Self::Heartbeat,
    ];

    /// The name used in check ids and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Tls => "tls",
            Self::Route => "route",
            Self::Dns => "dns",
            Self::Whois => "whois",
            Self::Cors => "cors",
            Self::Tcp => "tcp",
            Self::Heartbeat => "heartbeat",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a valid check id or target name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckIdError {
    /// The id has no `/` between target and kind.
    #[error("check id {0:?} has no '/': expected TARGET/KIND[:QUALIFIER]")]
    MissingSlash(String),
    /// The target part is empty, too long, or contains a `/`, whitespace or a control character.
    #[error(
        "invalid target name {0:?}: expected 1 to {max} characters, without '/', whitespace or control characters",
        max = CheckId::MAX_TARGET_LEN
    )]
    InvalidTarget(String),
    /// The kind part names no known kind.
    #[error(
        "unknown check kind {0:?}: expected one of health, tls, route, dns, whois, cors, tcp, heartbeat"
    )]
    UnknownKind(String),
    /// A `:` is followed by nothing, or the qualifier contains a control character.
    #[error("invalid qualifier in check id {0:?}")]
    InvalidQualifier(String),
}

/// The id of one check.
///
/// Serialised as its string form (`target/kind[:qualifier]`), which is what users see and what
/// crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckId {
    target: String,
    kind: CheckKind,
    qualifier: Option<String>,
}

impl CheckId {
    /// The longest target name accepted.
    pub const MAX_TARGET_LEN: usize = 128;

    /// A check id without a qualifier, e.g. `makenot.work/health`.
    pub fn new(target: &str, kind: CheckKind) -> Result<Self, CheckIdError> {
        validate_target_name(target)?;
        Ok(Self {
            target: target.to_owned(),
            kind,
            qualifier: None,
        })
    }

    /// A check id with a qualifier, e.g. `makenot.work/route:/login`.
    pub fn with_qualifier(
        target: &str,
        kind: CheckKind,
        qualifier: &str,
    ) -> Result<Self, CheckIdError> {
        let mut id = Self::new(target, kind)?;
        if qualifier.is_empty() || qualifier.chars().any(char::is_control) {
            return Err(CheckIdError::InvalidQualifier(format!(
                "{target}/{kind}:{qualifier}"
            )));
        }
        id.qualifier = Some(qualifier.to_owned());
        Ok(id)
    }

    /// The target's name.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// What the check probes.
    pub fn kind(&self) -> CheckKind {
        self.kind
    }

    /// The qualifier that tells apart several checks of one kind on one target.
    pub fn qualifier(&self) -> Option<&str> {
        self.qualifier.as_deref()
    }
}

/// Checks that `name` can be used as a target (or agent) name in check ids.
pub fn validate_target_name(name: &str) -> Result<(), CheckIdError> {
    let valid = !name.is_empty()
        && name.len() <= CheckId::MAX_TARGET_LEN
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(CheckIdError::InvalidTarget(name.to_owned()))
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.target, self.kind)?;
        if let Some(qualifier) = &self.qualifier {
            write!(f, ":{qualifier}")?;
        }
        Ok(())
    }
}

impl FromStr for CheckId {
    type Err = CheckIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (target, rest) = s
            .split_once('/')
            .ok_or_else(|| CheckIdError::MissingSlash(s.to_owned()))?;
        let (kind, qualifier) = match rest.split_once(':') {
            Some((kind, qualifier)) => (kind, Some(qualifier)),
            None => (rest, None),
        };
        let kind = CheckKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| CheckIdError::UnknownKind(kind.to_owned()))?;
        match qualifier {
            Some(qualifier) => Self::with_qualifier(target, kind, qualifier),
            None => Self::new(target, kind),
        }
    }
}

impl Serialize for CheckId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CheckId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn formats_the_contract_examples() {
        let health = CheckId::new("makenot.work", CheckKind::Health).unwrap();
        assert_eq!(health.to_string(), "makenot.work/health");
        let route = CheckId::with_qualifier("makenot.work", CheckKind::Route, "/login").unwrap();
        assert_eq!(route.to_string(), "makenot.work/route:/login");
        let dns = CheckId::with_qualifier("makenot.work", CheckKind::Dns, "A").unwrap();
        assert_eq!(dns.to_string(), "makenot.work/dns:A");
    }

    #[test]
    fn parses_qualifiers_that_contain_separators() {
        let id: CheckId = "api/route:/v1/items:search".parse().unwrap();
        assert_eq!(id.target(), "api");
        assert_eq!(id.kind(), CheckKind::Route);
        assert_eq!(id.qualifier(), Some("/v1/items:search"));
        let tcp: CheckId = "db/tcp:10.0.0.5:5432".parse().unwrap();
        assert_eq!(tcp.qualifier(), Some("10.0.0.5:5432"));
    }

    #[test]
    fn rejects_malformed_ids() {
        assert_eq!(
            "makenot.work".parse::<CheckId>(),
            Err(CheckIdError::MissingSlash("makenot.work".into()))
        );
        assert_eq!(
            "/health".parse::<CheckId>(),
            Err(CheckIdError::InvalidTarget(String::new()))
        );
        assert_eq!(
            "a/ping".parse::<CheckId>(),
            Err(CheckIdError::UnknownKind("ping".into()))
        );
        assert!(matches!(
            "a/route:".parse::<CheckId>(),
            Err(CheckIdError::InvalidQualifier(_))
        ));
        assert!("my site/health".parse::<CheckId>().is_err());
        assert!("a/route:/x\n".parse::<CheckId>().is_err());
        assert!(CheckId::new(&"x".repeat(129), CheckKind::Tcp).is_err());
    }

    #[test]
    fn serde_uses_the_string_form() {
        let id = CheckId::with_qualifier("t", CheckKind::Dns, "MX").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"t/dns:MX\"");
        assert_eq!(serde_json::from_str::<CheckId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<CheckId>("\"t/nope\"").is_err());
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(
            target in "[a-z0-9.-]{1,20}",
            kind in proptest::sample::select(CheckKind::ALL.to_vec()),
            qualifier in proptest::option::of("[ -~]{1,30}"),
        ) {
            let id = match &qualifier {
                Some(q) => CheckId::with_qualifier(&target, kind, q).unwrap(),
                None => CheckId::new(&target, kind).unwrap(),
            };
            prop_assert_eq!(id.to_string().parse::<CheckId>().unwrap(), id);
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<CheckId>();
        }
    }
}
