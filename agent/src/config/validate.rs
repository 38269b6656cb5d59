//! The rules a parsed config must keep: unique names, sane intervals, timeouts shorter than their
//! interval, URLs fit for their checks, `depends_on` naming existing targets without cycles.
//!
//! Each problem names the key it concerns as a [`KeyPath`]; the loader turns that into
//! `file:line:column`. Validation collects every problem instead of stopping at the first, so one
//! `pom config check` shows the operator everything to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use mesh_proto::validate_target_name;

use super::checks::CheckDef;
use super::{ChannelConfig, Config, HttpCheck, Quorum, Target};

/// The shortest interval a check may have.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval a check may have.
const MAX_INTERVAL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest timeout a probe may have.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest an Alertmanager channel may wait before posting an open alert again.
const MAX_ALERTMANAGER_REFRESH: Duration = Duration::from_secs(3600);

/// One step of a path into the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(&'static str),
    /// An array index.
    Index(usize),
}

/// Where in the config a problem is, e.g. `targets[2].health.interval`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A rule the config breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key concerned.
    pub path: KeyPath,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Checks every rule and returns all the problems found.
pub fn validate(config: &Config) -> Result<(), Vec<Invalid>> {
    let mut v = Validator::default();
    v.agent(config);
    v.mesh(config);
    v.alerts(config);
    v.targets(config);
    v.heartbeats(config);
    if v.problems.is_empty() {
        Ok(())
    } else {
        Err(v.problems)
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Invalid>,
}

impl Validator {
    fn report(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.problems.push(Invalid {
            path: KeyPath(path),
            message: message.into(),
        });
    }

    fn name(&mut self, path: Vec<Seg>, what: &str, name: &str) {
        if let Err(e) = validate_target_name(name) {
            self.report(path, format!("invalid {what} name: {e}"));
        }
    }

    fn env_name(&mut self, path: Vec<Seg>, name: &str) {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            self.report(
                path,
                format!(
                    "expected an environment variable name such as \"POM_API_TOKEN\", got {name:?}"
                ),
            );
        }
    }

    /// Reports the second and later uses of each name.
    fn unique<'a>(&mut self, what: &str, items: impl IntoIterator<Item = (Vec<Seg>, &'a str)>) {
        let mut seen = BTreeSet::new();
        for (path, name) in items {
            if !seen.insert(name) {
                self.report(
                    path,
                    format!("duplicate {what} name {name:?}: names must be unique"),
                );
            }
        }
    }

    fn agent(&mut self, config: &Config) {
        let agent = &config.agent;
        self.name(
            vec![Seg::Key("agent"), Seg::Key("name")],
            "agent",
            &agent.name,
        );
        self.env_name(
            vec![Seg::Key("agent"), Seg::Key("api_token_env")],
            &agent.api_token_env,
        );
        // Each probe may hold a 1 MiB body: 1024 probes bound that memory at 1 GiB.
        if !(1..=1024).contains(&agent.max_concurrent_probes) {
            self.report(
                vec![Seg::Key("agent"), Seg::Key("max_concurrent_probes")],
                format!(
                    "expected between 1 and 1024 concurrent probes, got {}",
                    agent.max_concurrent_probes
                ),
            );
        }
    }

    fn mesh(&mut self, config: &Config) {
        let Some(mesh) = &config.mesh else { return };
        let at = |key| vec![Seg::Key("mesh"), Seg::Key(key)];
        if !(Duration::from_millis(100)..=Duration::from_secs(3600))
            .contains(&mesh.heartbeat_interval)
        {
            self.report(
                at("heartbeat_interval"),
                format!(
                    "expected a heartbeat interval between 100ms and 1h, got {}",
                    humantime::format_duration(mesh.heartbeat_interval)
                ),
            );
        }
        if !(1..=100).contains(&mesh.missed_heartbeats) {
            self.report(
                at("missed_heartbeats"),
                format!(
                    "expected between 1 and 100 missed heartbeats, got {}",
                    mesh.missed_heartbeats
                ),
            );
        }
        let agents = mesh.peers_except(&config.agent.name).count() + 1;
        if let Quorum::Count(n) = mesh.quorum
            && n as usize > agents
        {
            self.report(
                at("quorum"),
                format!("quorum {n} is more than the {agents} agents of the mesh (this agent and its peers)"),
            );
        }
        let peer_path = |i, key| {
            vec![
                Seg::Key("mesh"),
                Seg::Key("peers"),
                Seg::Index(i),
                Seg::Key(key),
            ]
        };
        // Agents find each other by the names in their certificates, which are DNS names.
        if let Err(crate::pki::PkiError::BadName { reason, .. }) =
            crate::pki::check_name(&config.agent.name)
        {
            self.report(
                vec![Seg::Key("agent"), Seg::Key("name")],
                format!("with [mesh], the agent name is a certificate name: {reason}"),
            );
        }
        for (i, peer) in mesh.peers.iter().enumerate() {
            self.name(peer_path(i, "name"), "peer", &peer.name);
            if let Err(crate::pki::PkiError::BadName { reason, .. }) =
                crate::pki::check_name(&peer.name)
            {
                self.report(
                    peer_path(i, "name"),
                    format!("a peer name is a certificate name: {reason}"),
                );
            }
            if !is_host_port(&peer.addr) {
                self.report(
                    peer_path(i, "addr"),
                    format!(
                        "expected HOST:PORT such as \"10.0.0.2:9101\", got {:?}",
                        peer.addr
                    ),
                );
            }
        }
        self.unique(
            "peer",
            mesh.peers
                .iter()
                .enumerate()
                .map(|(i, p)| (peer_path(i, "name"), p.name.as_str())),
        );
    }

    fn alerts(&mut self, config: &Config) {
        let alerts = &config.alerts;
        if url::Url::parse(&alerts.runbook_base).is_err() {
            self.report(
                vec![Seg::Key("alerts"), Seg::Key("runbook_base")],
                format!("expected an absolute URL, got {:?}", alerts.runbook_base),
            );
        }
        let path = |i, key| {
            vec![
                Seg::Key("alerts"),
                Seg::Key("channels"),
                Seg::Index(i),
                Seg::Key(key),
            ]
        };
        for (i, channel) in alerts.channels.iter().enumerate() {
            self.name(path(i, "name"), "channel", channel.name());
            match channel {
                ChannelConfig::Webhook(c) => {
                    if c.url.is_some() == c.url_env.is_some() {
                        self.report(
                            path(i, "url"),
                            "a webhook channel needs exactly one of `url` or `url_env`",
                        );
                    }
                    if let Some(env) = &c.url_env {
                        self.env_name(path(i, "url_env"), env);
                    }
                }
                ChannelConfig::Slack(c) => {
                    self.env_name(path(i, "webhook_url_env"), &c.webhook_url_env)
                }
                ChannelConfig::Matrix(c) => {
                    self.env_name(path(i, "token_env"), &c.token_env);
                    if !c.room.starts_with('!') && !c.room.starts_with('#') {
                        self.report(
                            path(i, "room"),
                            format!(
                                "expected a room id such as \"!abc:example.org\", got {:?}",
                                c.room
                            ),
                        );
                    }
                }
                ChannelConfig::Postmark(c) => {
                    self.env_name(path(i, "token_env"), &c.token_env);
                    self.recipients(path(i, "to"), &c.to);
                }
                ChannelConfig::Smtp(c) => {
                    if let Some(env) = &c.password_env {
                        self.env_name(path(i, "password_env"), env);
                    }
                    if c.password_env.is_some() != c.username.is_some() {
                        self.report(
                            path(i, "username"),
                            "`username` and `password_env` go together",
                        );
                    }
                    self.recipients(path(i, "to"), &c.to);
                }
                ChannelConfig::Alertmanager(c) => {
                    if !(MIN_INTERVAL..=MAX_ALERTMANAGER_REFRESH).contains(&c.refresh) {
                        self.report(
                            path(i, "refresh"),
                            format!(
                                "expected a refresh between 1s and 1h (inside Alertmanager's resolve_timeout, 5m by default), got {}",
                                humantime::format_duration(c.refresh)
                            ),
                        );
                    }
                }
                ChannelConfig::Ntfy(c) => {
                    if let Some(env) = &c.token_env {
                        self.env_name(path(i, "token_env"), env);
                    }
                    if c.topic.is_empty() || c.topic.contains('/') {
                        self.report(
                            path(i, "topic"),
                            format!("expected a topic name without '/', got {:?}", c.topic),
                        );
                    }
                }
            }
        }
        self.unique(
            "channel",
            alerts
                .channels
                .iter()
                .enumerate()
                .map(|(i, c)| (path(i, "name"), c.name())),
        );
    }

    fn recipients(&mut self, path: Vec<Seg>, to: &[String]) {
        if to.is_empty() {
            self.report(path, "expected at least one recipient address");
        } else if let Some(bad) = to.iter().find(|a| !a.contains('@')) {
            self.report(path, format!("expected email addresses, got {bad:?}"));
        }
    }

    fn targets(&mut self, config: &Config) {
        let names: BTreeSet<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
        let mut ids = BTreeSet::new();
        for (i, target) in config.targets.iter().enumerate() {
            let base = |key| vec![Seg::Key("targets"), Seg::Index(i), Seg::Key(key)];
            self.name(base("name"), "target", &target.name);
            if let Some(url) = &target.url
                && !matches!(url.scheme(), "http" | "https")
            {
                self.report(
                    base("url"),
                    format!("expected an http:// or https:// URL, got {url}"),
                );
            }
            if let Some(url) = &target.url
                && url.host_str().is_none()
            {
                self.report(
                    base("url"),
                    format!("expected a URL with a host, got {url}"),
                );
            }
            for dep in &target.depends_on {
                if dep == &target.name {
                    self.report(
                        base("depends_on"),
                        format!("target {dep:?} depends on itself"),
                    );
                } else if !names.contains(dep.as_str()) {
                    self.report(
                        base("depends_on"),
                        format!("depends_on names {dep:?}, which is not a target"),
                    );
                }
            }
            if let Some(ca_file) = &target.ca_file
                && let Err(e) = crate::probe::trust::read_pem_certs(ca_file)
            {
                self.report(base("ca_file"), e.to_string());
            }
            let Ok(checks) = target.checks() else {
                continue; // the invalid name is already reported
            };
            if checks.is_empty() {
                self.report(
                    vec![Seg::Key("targets"), Seg::Index(i)],
                    format!(
                        "target {:?} has no checks: add [targets.health], [targets.tls], [[targets.routes]], [[targets.dns]], [targets.whois], [targets.cors] or [[targets.tcp]]",
                        target.name
                    ),
                );
            }
            for check in checks {
                let mut path = vec![Seg::Key("targets"), Seg::Index(i)];
                path.extend(check.path.iter().copied());
                if !ids.insert(check.id.clone()) {
                    self.report(
                        path.clone(),
                        format!("duplicate check id {}: each check of a target needs its own path, record or port", check.id),
                    );
                }
                self.timing(&path, check.def.interval(), check.def.timeout());
                self.check(path, target, &check.def);
            }
        }
        self.unique(
            "target",
            config.targets.iter().enumerate().map(|(i, t)| {
                (
                    vec![Seg::Key("targets"), Seg::Index(i), Seg::Key("name")],
                    t.name.as_str(),
                )
            }),
        );
        self.dependency_cycles(config);
    }

    fn timing(&mut self, path: &[Seg], interval: Duration, timeout: Duration) {
        let at = |key| {
            let mut p = path.to_vec();
            p.push(Seg::Key(key));
            p
        };
        let fmt = humantime::format_duration;
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            self.report(
                at("interval"),
                format!(
                    "expected an interval between 1s and 30days, got {}",
                    fmt(interval)
                ),
            );
        }
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            self.report(
                at("timeout"),
                format!(
                    "expected a timeout between 1ms and 5m, got {}",
                    fmt(timeout)
                ),
            );
        } else if timeout >= interval {
            self.report(
                at("timeout"),
                format!(
                    "expected a timeout shorter than the interval ({}), got {}",
                    fmt(interval),
                    fmt(timeout)
                ),
            );
        }
    }

    fn check(&mut self, path: Vec<Seg>, target: &Target, def: &CheckDef<'_>) {
        let at = |key| {
            let mut p = path.clone();
            p.push(Seg::Key(key));
            p
        };
        let needs_url = |what: &str| {
            format!(
                "a {what} check needs the target's `url` (target {:?} has none)",
                target.name
            )
        };
        match def {
            CheckDef::Health(http) | CheckDef::Route(http) => {
                if target.url.is_none() {
                    self.report(path.clone(), needs_url("HTTP"));
                }
                self.http(&path, http);
            }
            CheckDef::Tls(_) => {
                if target.url.is_none() {
                    self.report(path.clone(), needs_url("TLS"));
                }
            }
            CheckDef::Cors(cors) => {
                if target.url.is_none() {
                    self.report(path.clone(), needs_url("CORS"));
                }
                if !cors.path.starts_with('/') {
                    self.report(
                        at("path"),
                        format!("expected a path starting with '/', got {:?}", cors.path),
                    );
                }
                if url::Url::parse(&cors.origin).map_or(true, |u| u.host_str().is_none()) {
                    self.report(
                        at("origin"),
                        format!(
                            "expected an origin such as \"https://app.example.com\", got {:?}",
                            cors.origin
                        ),
                    );
                }
                if Method::from_bytes(cors.method.as_bytes()).is_err() {
                    self.report(
                        at("method"),
                        format!("expected an HTTP method, got {:?}", cors.method),
                    );
                }
                if let Some(bad) = cors
                    .headers
                    .iter()
                    .find(|h| HeaderName::from_bytes(h.as_bytes()).is_err())
                {
                    self.report(at("headers"), format!("expected header names, got {bad:?}"));
                }
            }
            CheckDef::Dns(dns) => {
                if dns.name.is_none() && target.host().is_none() {
                    self.report(
                        path.clone(),
                        "a DNS check needs a `name` or the target's `url` to take the host from",
                    );
                }
                if let Some(name) = &dns.name
                    && !is_dns_name(name)
                {
                    self.report(at("name"), format!("expected a domain name, got {name:?}"));
                }
                if let Some(ns) = &dns.nameserver
                    && parse_nameserver(ns).is_none()
                {
                    self.report(
                        at("nameserver"),
                        format!("expected IP or IP:PORT such as \"127.0.0.1:53\", got {ns:?}"),
                    );
                }
                if let Some(bad) = dns.expect.iter().find(|e| e.trim().is_empty()) {
                    self.report(
                        at("expect"),
                        format!("expected non-empty record values, got {bad:?}"),
                    );
                }
            }
            CheckDef::Whois(whois) => {
                if whois.domain.is_none() && target.host().is_none() {
                    self.report(
                        path.clone(),
                        "a WHOIS check needs a `domain` or the target's `url` to take it from",
                    );
                }
                if let Some(domain) = &whois.domain
                    && (!is_dns_name(domain) || !domain.contains('.'))
                {
                    self.report(
                        at("domain"),
                        format!(
                            "expected a registered domain such as \"example.com\", got {domain:?}"
                        ),
                    );
                }
                if let Some(server) = &whois.whois_server
                    && !is_host_port(server)
                    && !is_dns_name(server)
                {
                    self.report(
                        at("whois_server"),
                        format!("expected HOST or HOST:PORT such as \"whois.example.net:43\", got {server:?}"),
                    );
                }
            }
            CheckDef::Tcp(tcp) => {
                if tcp.host.is_none() && target.host().is_none() {
                    self.report(
                        path.clone(),
                        "a TCP check needs a `host` or the target's `url` to take it from",
                    );
                }
                if tcp.port == 0 {
                    self.report(at("port"), "expected a port between 1 and 65535, got 0");
                }
            }
        }
    }

    fn http(&mut self, path: &[Seg], http: &HttpCheck) {
        let at = |key| {
            let mut p = path.to_vec();
            p.push(Seg::Key(key));
            p
        };
        if !http.path.starts_with('/') {
            self.report(
                at("path"),
                format!("expected a path starting with '/', got {:?}", http.path),
            );
        }
        if Method::from_bytes(http.method.as_bytes()).is_err() {
            self.report(
                at("method"),
                format!(
                    "expected an HTTP method such as \"GET\", got {:?}",
                    http.method
                ),
            );
        }
        if let Some(bad) = http
            .expect_status
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            self.report(
                at("expect_status"),
                format!("expected HTTP statuses between 100 and 599, got {bad}"),
            );
        }
        for (name, value) in &http.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.report(at("headers"), format!("invalid header name {name:?}"));
            } else if HeaderValue::from_str(value).is_err() {
                self.report(at("headers"), format!("invalid value for header {name:?}"));
            }
        }
        for (key, value) in &http.expect_json {
            if key.is_empty() || key.split('.').any(str::is_empty) {
                self.report(
                    at("expect_json"),
                    format!("expected a dotted JSON path such as \"db.ok\", got {key:?}"),
                );
            }
            if matches!(value, toml::Value::Datetime(_)) {
                self.report(
                    at("expect_json"),
                    format!("expect_json {key:?}: dates are not JSON values; write a string"),
                );
            }
        }
    }

    fn dependency_cycles(&mut self, config: &Config) {
        let index: BTreeMap<&str, usize> = config
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut state = vec![0u8; config.targets.len()];
        let mut reported = BTreeSet::new();
        for start in 0..config.targets.len() {
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            if state[start] != 0 {
                continue;
            }
            state[start] = 1;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let deps = &config.targets[node].depends_on;
                if let Some(dep) = deps.get(*next) {
                    *next += 1;
                    let Some(&d) = index.get(dep.as_str()) else {
                        continue;
                    };
                    match state[d] {
                        0 => {
                            state[d] = 1;
                            stack.push((d, 0));
                        }
                        1 if d != node => {
                            let from = stack.iter().position(|&(n, _)| n == d).unwrap_or(0);
                            let mut cycle: Vec<&str> = stack[from..]
                                .iter()
                                .map(|&(n, _)| config.targets[n].name.as_str())
                                .collect();
                            cycle.push(&config.targets[d].name);
                            if reported.insert(d) {
                                self.report(
                                    vec![
                                        Seg::Key("targets"),
                                        Seg::Index(node),
                                        Seg::Key("depends_on"),
                                    ],
                                    format!("depends_on forms a cycle: {}", cycle.join(" -> ")),
                                );
                            }
                        }
                        _ => {}
                    }
                } else {
                    state[node] = 2;
                    stack.pop();
                }
            }
        }
    }

    fn heartbeats(&mut self, config: &Config) {
        let path = |i, key| vec![Seg::Key("heartbeats"), Seg::Index(i), Seg::Key(key)];
        for (i, hb) in config.heartbeats.iter().enumerate() {
            self.name(path(i, "name"), "heartbeat", &hb.name);
            if hb.max_age < MIN_INTERVAL {
                self.report(
                    path(i, "max_age"),
                    format!(
                        "expected a max_age of at least 1s, got {}",
                        humantime::format_duration(hb.max_age)
                    ),
                );
            }
        }
        self.unique(
            "heartbeat",
            config
                .heartbeats
                .iter()
                .enumerate()
                .map(|(i, h)| (path(i, "name"), h.name.as_str())),
        );
    }
}

/// Parses a nameserver as `IP` (port 53) or `IP:PORT`.
pub fn parse_nameserver(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

fn is_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => is_dns_name(host) && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}
