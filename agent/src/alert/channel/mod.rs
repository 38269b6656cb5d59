//! Alert channels: the places a notification goes to (DESIGN.md "Alerting"), and how one
//! [`Alert`] becomes one request to each of them.
//!
//! A [`Channel`] is built once from its `[[alerts.channels]]` entry ([`Channel::from_config`]).
//! Building resolves every secret the entry names by `*_env` through an environment passed in
//! (tests pass a map; the daemon passes the process environment, which systemd fills from
//! `/etc/pom/env`) and checks everything that can be checked without the network, so a bad
//! channel fails at start-up, not at 3 a.m. [`Channel::deliver`] then sends one alert, once,
//! within a time limit, and says whether a failure is worth retrying
//! ([`DeliveryError::retryable`]): the persistent outbox owns retries and backoff, not this
//! module.
//!
//! Secrets (tokens, passwords, and the URLs of Slack and `url_env` webhooks, whose path is the
//! credential) never reach a `Debug` output, an error message or a log line: they live in
//! `Secret` wrappers whose `Debug` prints `<redacted>`, errors show a secret URL as its scheme
//! and host only, and every delivery error is scrubbed of the channel's secrets before it leaves
//! [`Channel::deliver`], in case a server echoes one back.
//!
//! Each channel type lives in its own submodule. The HTTP ones share one client (the `http`
//! submodule): the probes' own HTTP/1.1 client, over the system trust roots.

mod alertmanager;
mod http;
mod matrix;
mod ntfy;
mod postmark;
mod smtp;
mod webhook;

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use mesh_proto::{AlertEvent, AlertKind, Status};
use time::OffsetDateTime;

use super::payload::{Alert, PAYLOAD_VERSION};
use crate::config::ChannelConfig;
use crate::probe::trust::{Trust, TrustError};

/// How long one delivery may take, unless [`Channel::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The trust roots of every HTTPS channel: the system's, loaded once per process.
static TRUST: LazyLock<Trust> = LazyLock::new(Trust::default);

/// One alert destination, ready to deliver: its name and its validated kind, with its secrets
/// resolved.
#[derive(Debug)]
pub struct Channel {
    name: String,
    kind: Kind,
    timeout: Duration,
}

/// The channel types. Every variant's `Debug` is safe to print: secrets sit in [`Secret`]s.
#[derive(Debug)]
enum Kind {
    Webhook(webhook::Webhook),
    Slack(webhook::Slack),
    Matrix(matrix::Matrix),
    Postmark(postmark::Postmark),
    Smtp(smtp::Smtp),
    Alertmanager(alertmanager::Alertmanager),
    Ntfy(ntfy::Ntfy),
}

/// Why a channel entry cannot be used. Messages name environment variables, never their
/// values.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A secret's environment variable is unset or empty.
    #[error("channel `{channel}`: environment variable {var} is not set (or is empty)")]
    MissingEnv {
        /// The channel's name.
        channel: String,
        /// The variable's name.
        var: String,
    },
    /// A secret URL's environment variable does not hold an http(s) URL.
    #[error(
        "channel `{channel}`: environment variable {var} does not hold an http(s) URL: {reason}"
    )]
    BadUrlEnv {
        /// The channel's name.
        channel: String,
        /// The variable's name.
        var: String,
        /// What is wrong, without the value.
        reason: String,
    },
    /// A secret holds characters that cannot be sent (a line break in a token, say).
    #[error(
        "channel `{channel}`: environment variable {var} holds characters that cannot be sent in a header"
    )]
    BadSecret {
        /// The channel's name.
        channel: String,
        /// The variable's name.
        var: String,
    },
    /// A setting of the entry is unusable.
    #[error("channel `{channel}`: `{key}`: {reason}")]
    Invalid {
        /// The channel's name.
        channel: String,
        /// The config key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The system trust roots could not be loaded.
    #[error("channel `{channel}`: {source}")]
    Trust {
        /// The channel's name.
        channel: String,
        /// The cause.
        source: TrustError,
    },
}

/// Why one delivery failed. The message never holds a secret.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// Whether trying again later may succeed: no connection, a timeout, a 5xx or a 429 (or an
    /// SMTP 4xx). A refusal that will not change by itself (another 4xx, a Postmark error code,
    /// an SMTP 5xx) is not retryable.
    pub retryable: bool,
    message: String,
}

impl DeliveryError {
    /// A failure that may go away: retry later.
    fn retry(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that will not go away by itself.
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }

    /// What went wrong (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A secret value. Its `Debug` prints `<redacted>`; the value is reached only through
/// [`Secret::expose`], at the one place that sends it.
#[derive(Clone)]
struct Secret<T>(T);

impl<T> Secret<T> {
    fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Secret resolution for one channel entry, through the environment passed in.
struct Env<'a> {
    channel: &'a str,
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The value of `var`, verbatim; unset or empty is an error naming `var`.
    fn raw(&self, var: &str) -> Result<Secret<String>, ChannelError> {
        match (self.get)(var) {
            Some(value) if !value.is_empty() => Ok(Secret(value)),
            _ => Err(ChannelError::MissingEnv {
                channel: self.channel.to_owned(),
                var: var.to_owned(),
            }),
        }
    }

    /// A token: the value of `var` without surrounding white space.
    fn token(&self, var: &str) -> Result<Secret<String>, ChannelError> {
        let value = self.raw(var)?;
        let trimmed = value.expose().trim();
        if trimmed.is_empty() {
            return Err(self.missing(var));
        }
        Ok(Secret(trimmed.to_owned()))
    }

    /// A token as a header value (`prefix` + token), marked sensitive.
    fn header(
        &self,
        var: &str,
        prefix: &str,
    ) -> Result<(Secret<String>, Secret<hyper::header::HeaderValue>), ChannelError> {
        let token = self.token(var)?;
        let mut value = hyper::header::HeaderValue::from_str(&format!("{prefix}{}", token.0))
            .map_err(|_| ChannelError::BadSecret {
                channel: self.channel.to_owned(),
                var: var.to_owned(),
            })?;
        value.set_sensitive(true);
        Ok((token, Secret(value)))
    }

    /// A secret http(s) URL.
    fn url(&self, var: &str) -> Result<(url::Url, Secret<String>), ChannelError> {
        let text = self.token(var)?;
        let bad = |reason: String| ChannelError::BadUrlEnv {
            channel: self.channel.to_owned(),
            var: var.to_owned(),
            reason,
        };
        // url's parse errors describe the problem, never the input.
        let url = url::Url::parse(text.expose()).map_err(|e| bad(e.to_string()))?;
        http::check_scheme(&url).map_err(bad)?;
        Ok((url, text))
    }

    fn missing(&self, var: &str) -> ChannelError {
        ChannelError::MissingEnv {
            channel: self.channel.to_owned(),
            var: var.to_owned(),
        }
    }

    fn invalid(&self, key: &'static str, reason: impl Into<String>) -> ChannelError {
        ChannelError::Invalid {
            channel: self.channel.to_owned(),
            key,
            reason: reason.into(),
        }
    }

    /// A non-secret base URL from the config, which must be http(s).
    fn public_url(&self, key: &'static str, url: &url::Url) -> Result<url::Url, ChannelError> {
        http::check_scheme(url).map_err(|reason| self.invalid(key, reason))?;
        Ok(url.clone())
    }

    /// The HTTP client over the system roots.
    fn client(&self) -> Result<http::Client, ChannelError> {
        let entry = TRUST.entry(None).map_err(|source| ChannelError::Trust {
            channel: self.channel.to_owned(),
            source,
        })?;
        Ok(http::Client::new(entry.http.clone()))
    }
}

impl Channel {
    /// Builds the channel of `config`, resolving its secrets through `env` (a variable's value,
    /// or `None` when unset). An unset or empty variable is a [`ChannelError`] naming the
    /// variable, never its value. Needs no runtime and does no I/O but reading trust roots.
    pub fn from_config(
        config: &ChannelConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ChannelError> {
        let env = Env {
            channel: config.name(),
            get: env,
        };
        let kind = match config {
            ChannelConfig::Webhook(c) => Kind::Webhook(webhook::Webhook::new(c, &env)?),
            ChannelConfig::Slack(c) => Kind::Slack(webhook::Slack::new(c, &env)?),
            ChannelConfig::Matrix(c) => Kind::Matrix(matrix::Matrix::new(c, &env)?),
            ChannelConfig::Postmark(c) => Kind::Postmark(postmark::Postmark::new(c, &env)?),
            ChannelConfig::Smtp(c) => Kind::Smtp(smtp::Smtp::new(c, &env)?),
            ChannelConfig::Alertmanager(c) => {
                Kind::Alertmanager(alertmanager::Alertmanager::new(c, &env)?)
            }
            ChannelConfig::Ntfy(c) => Kind::Ntfy(ntfy::Ntfy::new(c, &env)?),
        };
        Ok(Self {
            name: config.name().to_owned(),
            kind,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same channel with another time limit per delivery.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channel's type, as in the config (`webhook`, `slack`, …).
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Webhook(_) => "webhook",
            Kind::Slack(_) => "slack",
            Kind::Matrix(_) => "matrix",
            Kind::Postmark(_) => "postmark",
            Kind::Smtp(_) => "smtp",
            Kind::Alertmanager(_) => "alertmanager",
            Kind::Ntfy(_) => "ntfy",
        }
    }

    /// How often a still-firing alert should be posted again to keep it alive at the receiver,
    /// if the receiver expires alerts by itself. Alertmanager resolves an alert without
    /// `endsAt` once `resolve_timeout` (5m by default) passes without a new post, so the
    /// notifier should re-deliver the latest `firing` alert of each open incident this often
    /// (re-posting the same alert is idempotent there). `None` for every other channel.
    pub fn refresh_interval(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Alertmanager(c) => Some(c.refresh),
            _ => None,
        }
    }

    /// Sends `alert` once, within the channel's time limit. On failure, says whether a retry
    /// may succeed; the error's text names no secret.
    pub async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let sent = tokio::time::timeout(self.timeout, self.send(alert)).await;
        let result = match sent {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::retry(format!(
                "{} channel `{}`: no answer within {}",
                self.kind(),
                self.name,
                humantime::format_duration(self.timeout)
            ))),
        };
        result.map_err(|mut e| {
            e.message = self.scrub(e.message);
            e
        })
    }

    async fn send(&self, alert: &Alert) -> Result<(), DeliveryError> {
        match &self.kind {
            Kind::Webhook(c) => c.deliver(alert).await,
            Kind::Slack(c) => c.deliver(alert).await,
            Kind::Matrix(c) => c.deliver(alert).await,
            Kind::Postmark(c) => c.deliver(alert).await,
            Kind::Smtp(c) => c.deliver(alert, self.timeout).await,
            Kind::Alertmanager(c) => c.deliver(alert).await,
            Kind::Ntfy(c) => c.deliver(alert).await,
        }
    }

    /// Every secret of this channel, for [`scrub`](Self::scrub).
    fn secrets(&self) -> Vec<&str> {
        match &self.kind {
            Kind::Webhook(c) => c.secrets(),
            Kind::Slack(c) => c.secrets(),
            Kind::Matrix(c) => c.secrets(),
            Kind::Postmark(c) => c.secrets(),
            Kind::Smtp(c) => c.secrets(),
            Kind::Alertmanager(_) => Vec::new(),
            Kind::Ntfy(c) => c.secrets(),
        }
    }

    /// Replaces every occurrence of a secret in `message` by `<redacted>`. Errors are built
    /// without secrets in the first place; this catches a server that echoes one back.
    fn scrub(&self, mut message: String) -> String {
        for secret in self.secrets() {
            // Very short values would match ordinary words; no real token is that short.
            if secret.len() >= 6 && message.contains(secret) {
                message = message.replace(secret, "<redacted>");
            }
        }
        message
    }
}

/// A clearly labelled test alert, for `pom alert test`: it says it is a test, that nothing is
/// down, and which agent sent it. Its incident id is new on every call (a random UUID), so
/// receivers that de-duplicate (Matrix transaction ids, email threading) show every test.
pub fn test_alert(sent_by: &str, runbook_base: &str) -> Alert {
    let now = OffsetDateTime::now_utc();
    Alert {
        version: PAYLOAD_VERSION,
        event: AlertEvent::Firing,
        alert: AlertKind::Health,
        target: "pom-test".to_owned(),
        check: "pom-test/alert".to_owned(),
        status: Status::Degraded,
        summary: format!("TEST alert from agent {sent_by}: nothing is down"),
        detail: format!(
            "This is a test notification sent with `pom alert test` by agent {sent_by}, to check \
             that this channel delivers. No service is down and nothing needs doing."
        ),
        since: now,
        incident: format!("pom-test/{sent_by}/{}", uuid::Uuid::new_v4()),
        confirmed_by: vec![sent_by.to_owned()],
        agents_total: 1,
        sent_by: sent_by.to_owned(),
        runbook: format!(
            "{}#testing-alert-channels",
            runbook_base.trim_end_matches('#')
        ),
        repeat: 0,
    }
}

/// A key unique to one notification (incident, event, repeat) and stable across retries and
/// agents: Matrix's transaction id and the email `Message-ID`. It is
/// `<incident, sanitised and cut>-<FNV-1a of the incident>-<event>-<repeat>`, using only
/// `[A-Za-z0-9-]`, so it fits a URL path segment and the local part of a message id as it is.
fn delivery_key(alert: &Alert) -> String {
    format!(
        "{}-{}-{}",
        incident_key(&alert.incident),
        alert.event.as_str(),
        alert.repeat
    )
}

/// The incident part of [`delivery_key`]: readable, and unique through the hash.
fn incident_key(incident: &str) -> String {
    let readable: String = incident
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let readable = readable.trim_matches('-');
    let hash = fnv1a(incident.as_bytes());
    if readable.is_empty() {
        format!("{hash:016x}")
    } else {
        format!("{readable}-{hash:016x}")
    }
}

/// 64-bit FNV-1a: a hash that is the same on every build and platform, unlike `std`'s.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The time in RFC 3339, as every JSON channel writes it.
fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn sample() -> Alert {
        Alert {
            version: PAYLOAD_VERSION,
            event: AlertEvent::Firing,
            alert: AlertKind::Health,
            target: "makenot.work".into(),
            check: "makenot.work/health".into(),
            status: Status::Error,
            summary: "GET /api/health returned 502".into(),
            detail: "502 Bad Gateway".into(),
            since: datetime!(2026-06-14 03:12:09 UTC),
            incident: "makenot.work/health@1781406729000".into(),
            confirmed_by: vec!["astra".into()],
            agents_total: 2,
            sent_by: "astra".into(),
            runbook: "https://example.org/runbook.md#health-status-change".into(),
            repeat: 0,
        }
    }

    #[test]
    fn delivery_keys_are_stable_per_notification_and_distinct_across_them() {
        let firing = sample();
        let key = delivery_key(&firing);
        assert_eq!(key, delivery_key(&firing.clone()));
        assert!(
            key.starts_with("makenot-work-health-1781406729000-"),
            "{key}"
        );
        assert!(key.ends_with("-firing-0"), "{key}");
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{key}"
        );
        let mut reminder = firing.clone();
        reminder.repeat = 1;
        let mut resolved = firing.clone();
        resolved.event = AlertEvent::Resolved;
        // Incidents that sanitise alike still differ by their hash.
        let mut other = firing.clone();
        other.incident = "makenot.work/health-1781406729000".into();
        let keys = [&firing, &reminder, &resolved, &other].map(delivery_key);
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The hash is FNV-1a, fixed forever: a retry after an upgrade keeps its key.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn delivery_keys_of_odd_incidents_are_still_well_formed() {
        for incident in ["", "////", "ünïcødé", &"x".repeat(500)] {
            let mut alert = sample();
            alert.incident = incident.to_owned();
            let key = delivery_key(&alert);
            assert!(!key.starts_with('-'), "{key}");
            assert!(key.len() < 80, "{key}");
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{key}"
            );
        }
    }

    #[test]
    fn the_test_alert_says_it_is_a_test() {
        let alert = test_alert("astra", "https://example.org/runbook.md");
        assert!(alert.subject().contains("TEST"), "{}", alert.subject());
        assert!(alert.text().contains("nothing needs doing"));
        assert_eq!(alert.sent_by, "astra");
        assert_eq!(
            alert.runbook,
            "https://example.org/runbook.md#testing-alert-channels"
        );
        assert_ne!(alert.status, Status::Error);
        let again = test_alert("astra", "https://example.org/runbook.md");
        assert_ne!(delivery_key(&again), delivery_key(&alert));
    }

    #[test]
    fn secrets_debug_as_redacted() {
        assert_eq!(format!("{:?}", Secret("hunter2".to_owned())), "<redacted>");
    }
}
