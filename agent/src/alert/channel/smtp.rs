//! The `smtp` channel: one plain-text email through an SMTP server, with lettre.
//!
//! `security` picks the connection: `starttls` (port 587 by default; the upgrade is required,
//! so nothing, credentials included, is sent in clear if the server does not offer it), `tls`
//! (465, TLS from the first byte) or `none` (25, plain: for a relay on the same host). With
//! `username` and `password_env`, lettre logs in with PLAIN or LOGIN.
//!
//! Each delivery opens its own connection and closes it (alerts are rare; a pooled connection
//! would mostly be a dead one). The transport is built inside the delivery because lettre's
//! pool needs a running runtime. The `Message-ID` is derived from
//! [`delivery_key`](super::delivery_key), and reminders and the resolve refer to the first
//! email of their incident, so mail clients thread an incident together.
//!
//! A 4xx reply is retried; a 5xx reply (bad address, refused login, policy) is not.

use std::time::Duration;

use lettre::message::header::{ContentType, InReplyTo, References};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mesh_proto::AlertEvent;

use crate::alert::Alert;
use crate::config::{SmtpChannel, SmtpSecurity};

use super::{ChannelError, DeliveryError, Env, Secret, delivery_key, incident_key};

/// `type = "smtp"`.
#[derive(Debug)]
pub(super) struct Smtp {
    host: String,
    port: u16,
    security: SmtpSecurity,
    username: Option<String>,
    password: Option<Secret<String>>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Smtp {
    pub(super) fn new(config: &SmtpChannel, env: &Env<'_>) -> Result<Self, ChannelError> {
        if config.host.is_empty() {
            return Err(env.invalid("host", "expected a host name"));
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| env.invalid("from", format!("{:?}: {e}", config.from)))?;
        if config.to.is_empty() {
            return Err(env.invalid("to", "expected at least one recipient address"));
        }
        let to = config
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| env.invalid("to", format!("{a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let password = match (&config.username, &config.password_env) {
            (Some(_), Some(var)) => Some(env.raw(var)?),
            (None, None) => None,
            _ => {
                return Err(env.invalid("username", "`username` and `password_env` go together"));
            }
        };
        if config.security != SmtpSecurity::None {
            // Checks the host is a usable TLS server name now, not at the first alert.
            TlsParameters::new(config.host.clone())
                .map_err(|e| env.invalid("host", format!("cannot set up TLS: {e}")))?;
        }
        let port = config.port.unwrap_or(match config.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        });
        Ok(Self {
            host: config.host.clone(),
            port,
            security: config.security,
            username: config.username.clone(),
            password,
            from,
            to,
        })
    }

    pub(super) async fn deliver(
        &self,
        alert: &Alert,
        timeout: Duration,
    ) -> Result<(), DeliveryError> {
        let message = self.message(alert)?;
        let transport = self.transport(timeout)?;
        let sent = transport.send(message).await;
        transport.shutdown().await;
        sent.map(drop).map_err(|e| self.failed(&e))
    }

    pub(super) fn secrets(&self) -> Vec<&str> {
        self.password.iter().map(|p| p.expose().as_str()).collect()
    }

    fn message(&self, alert: &Alert) -> Result<Message, DeliveryError> {
        let domain = self.from.email.domain();
        let first = format!("<{}-firing-0@{domain}>", incident_key(&alert.incident));
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject())
            .message_id(Some(format!("<{}@{domain}>", delivery_key(alert))))
            .header(ContentType::TEXT_PLAIN);
        if alert.event == AlertEvent::Resolved || alert.repeat > 0 {
            builder = builder
                .header(InReplyTo::from(first.clone()))
                .header(References::from(first));
        }
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(alert.text())
            .map_err(|e| DeliveryError::permanent(format!("cannot build the email: {e}")))
    }

    fn transport(
        &self,
        timeout: Duration,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
        let tls = match self.security {
            SmtpSecurity::None => Tls::None,
            secure => {
                let parameters = TlsParameters::new(self.host.clone()).map_err(|e| {
                    DeliveryError::permanent(format!("smtp {}: cannot set up TLS: {e}", self.host))
                })?;
                if secure == SmtpSecurity::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let (Some(username), Some(password)) = (&self.username, &self.password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose().clone(),
            ));
        }
        Ok(builder.build())
    }

    /// A failed send: SMTP 5xx replies and client-side refusals are permanent; 4xx replies,
    /// connection, TLS and timeout failures are retried.
    fn failed(&self, e: &lettre::transport::smtp::Error) -> DeliveryError {
        let message = format!("smtp {}:{}: {e}", self.host, self.port);
        if e.is_permanent() || e.is_client() {
            DeliveryError::permanent(message)
        } else {
            DeliveryError::retry(message)
        }
    }
}
