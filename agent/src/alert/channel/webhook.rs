//! The `webhook` channel (a JSON `POST` of the [`Alert`] itself, the payload contract) and the
//! `slack` channel (an incoming webhook: a `POST` of `{"text": …}`).
//!
//! A Slack webhook URL, and a webhook URL read from `url_env`, is a credential: anyone who
//! knows it can post. Both are kept as [`Endpoint::secret`]s and shown as scheme and host only.

use crate::alert::Alert;
use crate::config::{SlackChannel, WebhookChannel};

use super::http::{Client, Endpoint};
use super::{ChannelError, DeliveryError, Env, Secret};

/// `type = "webhook"`.
#[derive(Debug)]
pub(super) struct Webhook {
    client: Client,
    endpoint: Endpoint,
    /// The URL, when it came from `url_env`.
    secret: Option<Secret<String>>,
}

impl Webhook {
    pub(super) fn new(config: &WebhookChannel, env: &Env<'_>) -> Result<Self, ChannelError> {
        let (endpoint, secret) = match (&config.url, &config.url_env) {
            (_, Some(var)) => {
                let (url, text) = env.url(var)?;
                (Endpoint::secret(url), Some(text))
            }
            (Some(url), None) => (Endpoint::public(env.public_url("url", url)?), None),
            (None, None) => return Err(env.invalid("url", "needs one of `url` or `url_env`")),
        };
        Ok(Self {
            client: env.client()?,
            endpoint,
            secret,
        })
    }

    pub(super) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = serde_json::to_value(alert).map_err(|e| {
            DeliveryError::permanent(format!("cannot encode the alert as JSON: {e}"))
        })?;
        self.client.post_json(&self.endpoint, &body).await?;
        Ok(())
    }

    pub(super) fn secrets(&self) -> Vec<&str> {
        url_secrets(self.secret.as_ref())
    }
}

/// `type = "slack"`.
#[derive(Debug)]
pub(super) struct Slack {
    client: Client,
    endpoint: Endpoint,
    secret: Secret<String>,
}

impl Slack {
    pub(super) fn new(config: &SlackChannel, env: &Env<'_>) -> Result<Self, ChannelError> {
        let (url, secret) = env.url(&config.webhook_url_env)?;
        Ok(Self {
            client: env.client()?,
            endpoint: Endpoint::secret(url),
            secret,
        })
    }

    pub(super) async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = serde_json::json!({ "text": escape(&alert.text()) });
        self.client.post_json(&self.endpoint, &body).await?;
        Ok(())
    }

    pub(super) fn secrets(&self) -> Vec<&str> {
        url_secrets(Some(&self.secret))
    }
}

/// Slack reads `&`, `<` and `>` as markup (links, mentions); its documentation asks for them
/// to be escaped as HTML entities, and only those.
pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A secret URL, and its path and query alone (the credential part), for scrubbing.
fn url_secrets(secret: Option<&Secret<String>>) -> Vec<&str> {
    let Some(secret) = secret else {
        return Vec::new();
    };
    let whole = secret.expose().as_str();
    let mut secrets = vec![whole];
    // The part after the authority: `/services/T…/B…/…`.
    if let Some(rest) = whole.split_once("://").map(|(_, rest)| rest)
        && let Some(slash) = rest.find('/')
        && let Some(path) = rest.get(slash..)
        && path.len() > 1
    {
        secrets.push(path);
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_markup_is_escaped() {
        assert_eq!(escape("a < b && c > d"), "a &lt; b &amp;&amp; c &gt; d");
    }

    #[test]
    fn the_path_of_a_secret_url_is_a_secret_too() {
        let secret = Secret("https://hooks.slack.com/services/T0/B0/XYZ".to_owned());
        assert_eq!(
            url_secrets(Some(&secret)),
            [
                "https://hooks.slack.com/services/T0/B0/XYZ",
                "/services/T0/B0/XYZ"
            ]
        );
        let bare = Secret("https://example.org/".to_owned());
        assert_eq!(url_secrets(Some(&bare)), ["https://example.org/"]);
    }
}
