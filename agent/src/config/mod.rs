//! The `pom.toml` configuration: its types, defaults, loading and validation.
//!
//! The shape is a contract (DESIGN.md, "Configuration"): unknown keys are errors, durations are
//! humantime strings (`"30s"`, `"5m"`), and every error names `file:line:column` and what was
//! expected. Loading is two steps: serde parses the types (syntax and type errors carry toml's
//! own span), then [`validate`] checks the rules that span several keys (unique names, sane
//! intervals, `depends_on` without cycles) and reports each problem at the key it concerns.
//!
//! Every key is documented, with its default, in docs/configuration.md.

mod checks;
mod duration;
mod load;
mod locate;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use url::Url;

pub use checks::{CheckDef, CheckRef};
pub use load::{ConfigError, Problem, load, parse};
pub use validate::{Invalid, KeyPath, Seg, parse_nameserver, validate};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This host's agent.
    #[serde(default)]
    pub agent: AgentConfig,
    /// The mesh. Without it the agent runs alone, as its own quorum of one.
    #[serde(default)]
    pub mesh: Option<MeshConfig>,
    /// Alert rules and channels.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// What to monitor.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Push heartbeats that outside jobs must send.
    #[serde(default)]
    pub heartbeats: Vec<HeartbeatConfig>,
    /// SHA-256 of the shared part of the file: everything but `[agent]` and `[mesh]`. Agents
    /// compare it to detect config drift.
    #[serde(skip)]
    pub shared_hash: [u8; 32],
}

/// `[agent]`: this host's identity and local surfaces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name; must equal the CN/SAN of this host's mesh certificate.
    #[serde(default = "default_agent_name")]
    pub name: String,
    /// Where `pom.db` and `instance_id` live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The HTTP API's listen address.
    #[serde(default = "default_api_listen")]
    pub api_listen: SocketAddr,
    /// The environment variable that holds the API's bearer token.
    #[serde(default = "default_api_token_env")]
    pub api_token_env: String,
    /// How many probes may run at once.
    #[serde(default = "default_max_concurrent_probes")]
    pub max_concurrent_probes: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            name: default_agent_name(),
            data_dir: default_data_dir(),
            api_listen: default_api_listen(),
            api_token_env: default_api_token_env(),
            max_concurrent_probes: default_max_concurrent_probes(),
        }
    }
}

/// `[mesh]`: the peers this agent agrees with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// The UDP (QUIC) listen address.
    #[serde(default = "default_mesh_listen")]
    pub listen: SocketAddr,
    /// The mesh CA certificate (PEM).
    #[serde(default = "default_ca_cert")]
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM).
    #[serde(default = "default_node_cert")]
    pub cert: PathBuf,
    /// This node's private key (PEM, mode 0600).
    #[serde(default = "default_node_key")]
    pub key: PathBuf,
    /// How often heartbeats are sent.
    #[serde(default = "default_heartbeat_interval", with = "duration")]
    pub heartbeat_interval: Duration,
    /// How many heartbeats may be missed before a peer is `missing`.
    #[serde(default = "default_missed_heartbeats")]
    pub missed_heartbeats: u32,
    /// How many agreeing agents confirm a verdict.
    #[serde(default)]
    pub quorum: Quorum,
    /// The agents of the mesh. This agent's own entry, if listed, is skipped, so one list can
    /// serve every host.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

impl MeshConfig {
    /// The peers other than `me`. The peer list may name every agent, this one included, so that
    /// the file is the same on every host; an agent skips its own entry.
    pub fn peers_except<'a>(&'a self, me: &'a str) -> impl Iterator<Item = &'a PeerConfig> + 'a {
        self.peers.iter().filter(move |p| p.name != me)
    }
}

/// `[[mesh.peers]]`: an agent of the mesh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's agent name (the name in its certificate).
    pub name: String,
    /// `host:port` of its QUIC listener.
    pub addr: String,
}

/// The quorum policy: how many failing votes confirm that a check is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quorum {
    /// ⌊n/2⌋+1 of the voters.
    #[default]
    Majority,
    /// Every voter.
    All,
    /// A fixed number, capped at the number of voters.
    Count(u32),
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quorum;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"majority\", \"all\" or a positive integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quorum, E> {
                match v {
                    "majority" => Ok(Quorum::Majority),
                    "all" => Ok(Quorum::All),
                    other => Err(E::custom(format!(
                        "expected \"majority\", \"all\" or a positive integer, got {other:?}"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quorum, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|&n| n > 0)
                    .map(Quorum::Count)
                    .ok_or_else(|| E::custom(format!("expected a positive quorum, got {v}")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `[alerts]`: alert rules and channels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The least time between two `firing` notifications for one check.
    #[serde(default = "default_cooldown", with = "duration")]
    pub cooldown: Duration,
    /// Reminder period while a check stays down; zero turns reminders off.
    #[serde(default = "default_repeat_interval", with = "duration")]
    pub repeat_interval: Duration,
    /// Base URL of the runbook; each alert links to `runbook_base#anchor`.
    #[serde(default = "default_runbook_base")]
    pub runbook_base: String,
    /// Where alerts go.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            cooldown: default_cooldown(),
            repeat_interval: default_repeat_interval(),
            runbook_base: default_runbook_base(),
            channels: Vec::new(),
        }
    }
}

/// `[[alerts.channels]]`: one alert destination. Secrets are named by `*_env` keys and read from
/// the environment, never written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChannelConfig {
    /// A JSON POST of the webhook payload.
    Webhook(WebhookChannel),
    /// A Slack incoming webhook.
    Slack(SlackChannel),
    /// A Matrix room, through the client-server API.
    Matrix(MatrixChannel),
    /// Email through Postmark's API.
    Postmark(PostmarkChannel),
    /// Email through an SMTP server.
    Smtp(SmtpChannel),
    /// An Alertmanager (v2 API).
    Alertmanager(AlertmanagerChannel),
    /// An ntfy topic.
    Ntfy(NtfyChannel),
}

impl ChannelConfig {
    /// The channel's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Webhook(c) => &c.name,
            Self::Slack(c) => &c.name,
            Self::Matrix(c) => &c.name,
            Self::Postmark(c) => &c.name,
            Self::Smtp(c) => &c.name,
            Self::Alertmanager(c) => &c.name,
            Self::Ntfy(c) => &c.name,
        }
    }
}

/// `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// The channel's name.
    pub name: String,
    /// The URL, when it is not a secret.
    pub url: Option<Url>,
    /// The environment variable holding the URL, when it is a secret.
    pub url_env: Option<String>,
}

/// `type = "slack"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackChannel {
    /// The channel's name.
    pub name: String,
    /// The environment variable holding the incoming-webhook URL.
    pub webhook_url_env: String,
}

/// `type = "matrix"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixChannel {
    /// The channel's name.
    pub name: String,
    /// The homeserver's base URL.
    pub homeserver: Url,
    /// The room id (`!abc:example.org`).
    pub room: String,
    /// The environment variable holding the access token.
    pub token_env: String,
}

/// `type = "postmark"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostmarkChannel {
    /// The channel's name.
    pub name: String,
    /// The environment variable holding the server token.
    pub token_env: String,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The API base URL.
    #[serde(default = "default_postmark_api")]
    pub api_url: Url,
}

/// `type = "smtp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpChannel {
    /// The channel's name.
    pub name: String,
    /// The SMTP server's host name.
    pub host: String,
    /// The port; defaults to 587 for `starttls`, 465 for `tls` and 25 for `none`.
    pub port: Option<u16>,
    /// How the connection is secured.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The login, if the server wants one.
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS on the submission port (the default).
    #[default]
    Starttls,
    /// TLS from the first byte.
    Tls,
    /// Plain SMTP, for a relay on localhost only.
    None,
}

/// `type = "alertmanager"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerChannel {
    /// The channel's name.
    pub name: String,
    /// Alertmanager's base URL (alerts go to `/api/v2/alerts` under it).
    pub url: Url,
    /// How often the firing alert of an open incident is posted again: Alertmanager resolves
    /// an alert by itself once its `resolve_timeout` passes without one.
    #[serde(default = "default_alertmanager_refresh", with = "duration")]
    pub refresh: Duration,
}

/// `type = "ntfy"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyChannel {
    /// The channel's name.
    pub name: String,
    /// The ntfy server's base URL.
    #[serde(default = "default_ntfy_url")]
    pub url: Url,
    /// The topic.
    pub topic: String,
    /// The environment variable holding an access token, if the topic is protected.
    pub token_env: Option<String>,
}

/// `[[targets]]`: one monitored service and its checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The target's name; the first part of its check ids.
    pub name: String,
    /// The service's base URL. HTTP, TLS and CORS checks need it; DNS, WHOIS and TCP checks take
    /// their host name from it unless they name their own.
    pub url: Option<Url>,
    /// Targets whose outage explains this one's.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// An extra trust root (PEM) for this target's HTTPS and TLS checks.
    pub ca_file: Option<PathBuf>,
    /// `[targets.health]`.
    pub health: Option<HttpCheck>,
    /// `[targets.tls]`.
    pub tls: Option<TlsCheck>,
    /// `[[targets.routes]]`.
    #[serde(default)]
    pub routes: Vec<HttpCheck>,
    /// `[[targets.dns]]`.
    #[serde(default)]
    pub dns: Vec<DnsCheck>,
    /// `[targets.whois]`.
    pub whois: Option<WhoisCheck>,
    /// `[targets.cors]`.
    pub cors: Option<CorsCheck>,
    /// `[[targets.tcp]]`.
    #[serde(default)]
    pub tcp: Vec<TcpCheck>,
}

impl Target {
    /// The host name of the target's URL, if it has one.
    pub fn host(&self) -> Option<&str> {
        self.url.as_ref().and_then(Url::host_str)
    }
}

/// An HTTP check: `[targets.health]` or one of `[[targets.routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// The path (and query) under the target's URL.
    #[serde(default = "default_path")]
    pub path: String,
    /// The request method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body.
    pub body: Option<String>,
    /// The statuses that count as success; empty means any 2xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// A substring the body must contain.
    pub expect_body: Option<String>,
    /// A regular expression the body must match.
    pub expect_body_regex: Option<BodyRegex>,
    /// JSON fields the body must have, by dotted path (`"db.ok" = true`).
    #[serde(default)]
    pub expect_json: BTreeMap<String, toml::Value>,
    /// Whether redirects are followed (up to 10).
    #[serde(default)]
    pub follow_redirects: bool,
    /// How often the check runs.
    #[serde(default = "default_http_interval", with = "duration")]
    pub interval: Duration,
    /// How long one probe may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

/// A regular expression, compiled when the config is parsed so that a bad pattern is reported at
/// its `file:line:column`.
#[derive(Debug, Clone)]
pub struct BodyRegex(pub regex::Regex);

impl<'de> Deserialize<'de> for BodyRegex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(deserializer)?;
        regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 20)
            .build()
            .map(BodyRegex)
            .map_err(|e| serde::de::Error::custom(format!("expected a valid regex: {e}")))
    }
}

/// `[targets.tls]`: the certificate the target presents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCheck {
    /// Days before expiry at which the check turns `degraded`.
    #[serde(default = "default_tls_warn_days")]
    pub warn_days: u32,
    /// The port; defaults to the URL's port (443 for https).
    pub port: Option<u16>,
    /// How often the check runs.
    #[serde(default = "default_slow_interval", with = "duration")]
    pub interval: Duration,
    /// How long one probe may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

/// `[[targets.dns]]`: a record compared with its expected values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsCheck {
    /// The record type.
    #[serde(rename = "type")]
    pub record_type: DnsRecordType,
    /// The name to look up; defaults to the URL's host.
    pub name: Option<String>,
    /// The expected answer set, in any order. Empty means "any answer".
    #[serde(default)]
    pub expect: Vec<String>,
    /// `ip` or `ip:port` of the nameserver to ask; default: the system resolver.
    pub nameserver: Option<String>,
    /// How often the check runs.
    #[serde(default = "default_slow_interval", with = "duration")]
    pub interval: Duration,
    /// How long one probe may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

/// The DNS record types a check can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum DnsRecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    AAAA,
    /// Canonical name.
    CNAME,
    /// Mail exchanger, compared as `"PREFERENCE HOST"`.
    MX,
    /// Text, the strings of one record joined.
    TXT,
    /// Name server.
    NS,
}

impl DnsRecordType {
    /// The record type's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::AAAA => "AAAA",
            Self::CNAME => "CNAME",
            Self::MX => "MX",
            Self::TXT => "TXT",
            Self::NS => "NS",
        }
    }
}

/// `[targets.whois]`: the domain's registration expiry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhoisCheck {
    /// The registered domain; defaults to the URL's host without its subdomains.
    pub domain: Option<String>,
    /// Days before expiry at which the check turns `degraded`.
    #[serde(default = "default_whois_warn_days")]
    pub warn_days: u32,
    /// The RDAP bootstrap file (IANA's `dns.json`).
    #[serde(default = "default_rdap_bootstrap")]
    pub rdap_bootstrap: Url,
    /// An RDAP base URL to ask directly, skipping the bootstrap.
    pub rdap_url: Option<Url>,
    /// `host[:port]` of a WHOIS server to ask directly, skipping the IANA referral.
    pub whois_server: Option<String>,
    /// How often the check runs.
    #[serde(default = "default_slow_interval", with = "duration")]
    pub interval: Duration,
    /// How long one probe may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

/// `[targets.cors]`: a CORS preflight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsCheck {
    /// The path to send the preflight to.
    #[serde(default = "default_path")]
    pub path: String,
    /// The `Origin` of the preflight.
    pub origin: String,
    /// The method asked for in `Access-Control-Request-Method`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Headers asked for in `Access-Control-Request-Headers`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// How often the check runs.
    #[serde(default = "default_slow_interval", with = "duration")]
    pub interval: Duration,
    /// How long one probe may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

/// `[[targets.tcp]]`: a port that must accept connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    /// The port.
    pub port: u16,
    /// The host; defaults to the URL's host.
    pub host: Option<String>,
    /// How often the check runs.
    #[serde(default = "default_http_interval", with = "duration")]
    pub interval: Duration,
    /// How long one probe may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

/// `[[heartbeats]]`: a push heartbeat.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// The heartbeat's name, as pushed to `/api/heartbeats/{name}`.
    pub name: String,
    /// The longest time without a ping before `heartbeat_stale`.
    #[serde(with = "duration")]
    pub max_age: Duration,
}

/// The runbook every alert links into, unless `[alerts] runbook_base` says otherwise.
pub const DEFAULT_RUNBOOK_BASE: &str =
    "https://git.example.com/ops/pom/src/branch/main/docs/runbook.md";

fn default_agent_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "pom".to_owned())
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/pom")
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}
fn default_api_token_env() -> String {
    "POM_API_TOKEN".to_owned()
}
fn default_max_concurrent_probes() -> usize {
    64
}
fn default_mesh_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9101))
}
fn default_ca_cert() -> PathBuf {
    PathBuf::from("/etc/pom/mesh/ca.crt")
}
fn default_node_cert() -> PathBuf {
    PathBuf::from("/etc/pom/mesh/node.crt")
}
fn default_node_key() -> PathBuf {
    PathBuf::from("/etc/pom/mesh/node.key")
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_missed_heartbeats() -> u32 {
    3
}
fn default_alertmanager_refresh() -> Duration {
    Duration::from_secs(60)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_runbook_base() -> String {
    DEFAULT_RUNBOOK_BASE.to_owned()
}
#[allow(clippy::expect_used)] // a constant that is known to parse
fn default_postmark_api() -> Url {
    Url::parse("https://api.postmarkapp.com").expect("constant URL")
}
#[allow(clippy::expect_used)] // a constant that is known to parse
fn default_ntfy_url() -> Url {
    Url::parse("https://ntfy.sh").expect("constant URL")
}
#[allow(clippy::expect_used)] // a constant that is known to parse
fn default_rdap_bootstrap() -> Url {
    Url::parse("https://data.iana.org/rdap/dns.json").expect("constant URL")
}
fn default_path() -> String {
    "/".to_owned()
}
fn default_method() -> String {
    "GET".to_owned()
}
fn default_http_interval() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_slow_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_tls_warn_days() -> u32 {
    14
}
fn default_whois_warn_days() -> u32 {
    30
}
