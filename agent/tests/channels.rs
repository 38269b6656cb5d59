//! Alert channels against real receivers in this process: axum servers that record the exact
//! request each channel sends, and the testbed's SMTP server. Each channel type delivers a
//! firing and a resolved alert whose shape is asserted field by field; failures are classified
//! as retryable or not; secrets never show in `Debug` output or error messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use mesh_proto::{AlertEvent, AlertKind, Status};
use pom::alert::Alert;
use pom::alert::channel::{self, Channel, ChannelError, DeliveryError};
use pom::alert::payload::PAYLOAD_VERSION;
use pom::config::{self, ChannelConfig};
use pom::testbed::http::{Misbehaviour, TestServer};
use pom::testbed::smtp::SmtpServer;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;

const TOKEN: &str = "tok-3f9a1c77e2b84d05";
const SLACK_PATH: &str = "/services/T000SECRET/B000SECRET/XyZsecretSecret";

// ----- receivers -----------------------------------------------------------------------------

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    /// Path and query, as sent (percent-encoding kept).
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Recorded {
    #[track_caller]
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .expect("ASCII header")
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("a UTF-8 body")
    }
}

/// An HTTP receiver that records every request and answers with a settable status and body.
/// In the body, `{echo}` is replaced by the request's path and headers, as a careless server
/// might echo them in an error page.
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Recorded>>>,
    answer: Arc<Mutex<(StatusCode, String)>>,
}

impl Receiver {
    async fn start(status: u16, body: &str) -> (TestServer, Self) {
        let receiver = Self {
            seen: Arc::default(),
            answer: Arc::new(Mutex::new((
                StatusCode::from_u16(status).unwrap(),
                body.to_owned(),
            ))),
        };
        let router = Router::new().fallback(record).with_state(receiver.clone());
        let server = TestServer::http(router).await.expect("receiver starts");
        (server, receiver)
    }

    fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (StatusCode::from_u16(status).unwrap(), body.to_owned());
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    #[track_caller]
    fn last(&self) -> Recorded {
        self.requests().pop().expect("a request arrived")
    }
}

async fn record(
    State(receiver): State<Receiver>,
    request: axum::extract::Request,
) -> (StatusCode, String) {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let echo = format!("{path} {:?}", parts.headers);
    receiver.seen.lock().unwrap().push(Recorded {
        method: parts.method,
        path,
        headers: parts.headers,
        body,
    });
    let (status, answer) = receiver.answer.lock().unwrap().clone();
    (status, answer.replace("{echo}", &echo))
}

/// A loopback address where nothing listens.
fn nothing_listening() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ----- channels and alerts -------------------------------------------------------------------

/// The channel entry written in TOML (without the `[[alerts.channels]]` line), parsed and
/// validated as `pom.toml` is.
#[track_caller]
fn channel_config(entry: &str) -> ChannelConfig {
    let text = format!("[[alerts.channels]]\n{entry}");
    let config = config::parse(&text, "t.toml", None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config
        .alerts
        .channels
        .into_iter()
        .next()
        .expect("one channel")
}

/// An environment made of `vars`, as `from_config` reads it.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.get(name).cloned()
}

#[track_caller]
fn channel(entry: &str, vars: &[(&str, &str)]) -> Channel {
    Channel::from_config(&channel_config(entry), &env(vars)).expect("channel builds")
}

fn firing() -> Alert {
    Alert {
        version: PAYLOAD_VERSION,
        event: AlertEvent::Firing,
        alert: AlertKind::Health,
        target: "makenot.work".into(),
        check: "makenot.work/health".into(),
        status: Status::Error,
        summary: "GET /api/health returned 502".into(),
        detail: "GET /api/health returned 502 Bad Gateway, expected 200".into(),
        since: datetime!(2026-06-14 03:12:09 UTC),
        incident: "makenot.work/health@1781406729000".into(),
        confirmed_by: vec!["astra".into(), "hetzner".into()],
        agents_total: 2,
        sent_by: "astra".into(),
        runbook: "https://git.example.com/runbook.md#health-status-change".into(),
        repeat: 0,
    }
}

fn resolved() -> Alert {
    Alert {
        event: AlertEvent::Resolved,
        status: Status::Operational,
        summary: "GET /api/health returned 200".into(),
        sent_by: "hetzner".into(),
        ..firing()
    }
}

#[track_caller]
fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{secret:?} shows in: {text}");
    }
}

async fn failure(channel: &Channel, alert: &Alert) -> DeliveryError {
    match channel.deliver(alert).await {
        Ok(()) => panic!("{} delivered, expected a failure", channel.name()),
        Err(e) => e,
    }
}

// ----- one test per channel type -------------------------------------------------------------

#[tokio::test]
async fn webhook_posts_the_alert_payload() {
    let (server, receiver) = Receiver::start(200, "").await;
    let hook = channel(
        &format!(
            "name = \"hook\"\ntype = \"webhook\"\nurl = \"http://{}/alerts\"\n",
            server.addr()
        ),
        &[],
    );
    assert_eq!(hook.name(), "hook");
    for alert in [firing(), resolved()] {
        hook.deliver(&alert).await.expect("delivered");
        let got = receiver.last();
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path, "/alerts");
        assert_eq!(got.header("content-type"), "application/json");
        assert_eq!(got.json(), serde_json::to_value(&alert).unwrap());
    }
    assert_eq!(receiver.last().json()["event"], "resolved");
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn a_webhook_url_from_the_environment_is_a_secret() {
    let (server, receiver) = Receiver::start(500, "error at {echo}").await;
    let secret_path = "/hooks/8c1d2e3f4a5b6c7d-secret";
    let url = format!("http://{}{secret_path}", server.addr());
    let hook = channel(
        "name = \"hook\"\ntype = \"webhook\"\nurl_env = \"HOOK_URL\"\n",
        &[("HOOK_URL", &url)],
    );
    let debug = format!("{hook:?}");
    assert_no_secret(&debug, &[secret_path]);
    assert!(debug.contains(&server.addr().to_string()), "{debug}");

    let e = failure(&hook, &firing()).await;
    assert!(e.retryable, "{e}");
    assert_eq!(receiver.last().path, secret_path, "sent to the real URL");
    // The server echoed the path; the error still does not show it.
    assert_no_secret(&e.to_string(), &[secret_path]);
    assert_no_secret(&format!("{e:?}"), &[secret_path]);
    assert!(e.to_string().contains("answered 500"), "{e}");

    receiver.answer(200, "");
    hook.deliver(&firing()).await.expect("delivered");
    assert_eq!(
        receiver.last().json(),
        serde_json::to_value(firing()).unwrap()
    );
}

#[tokio::test]
async fn slack_posts_the_text_to_its_secret_url() {
    let (server, receiver) = Receiver::start(200, "ok").await;
    let url = format!("http://{}{SLACK_PATH}", server.addr());
    let slack = channel(
        "name = \"chat\"\ntype = \"slack\"\nwebhook_url_env = \"SLACK_URL\"\n",
        &[("SLACK_URL", &url)],
    );
    assert_no_secret(&format!("{slack:?}"), &[SLACK_PATH, "T000SECRET"]);
    for alert in [firing(), resolved()] {
        slack.deliver(&alert).await.expect("delivered");
        let got = receiver.last();
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path, SLACK_PATH);
        assert_eq!(got.header("content-type"), "application/json");
        assert_eq!(got.json(), json!({ "text": alert.text() }));
    }
    assert!(
        receiver.last().json()["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED]")
    );

    // Slack markup characters are escaped, so a summary cannot ping `<!channel>`.
    let mut loud = firing();
    loud.summary = "<!channel> & friends".into();
    slack.deliver(&loud).await.expect("delivered");
    let text = receiver.last().json()["text"].as_str().unwrap().to_owned();
    assert!(text.contains("&lt;!channel&gt; &amp; friends"), "{text}");

    receiver.answer(404, "no_service {echo}");
    let e = failure(&slack, &firing()).await;
    assert!(!e.retryable, "{e}");
    assert!(e.to_string().contains("no_service"), "{e}");
    assert_no_secret(
        &e.to_string(),
        &[SLACK_PATH, "T000SECRET", "XyZsecretSecret"],
    );
}

#[tokio::test]
async fn matrix_puts_into_the_encoded_room_with_an_idempotent_transaction() {
    let (server, receiver) = Receiver::start(200, r#"{"event_id":"$abc"}"#).await;
    let matrix = channel(
        &format!(
            "name = \"room\"\ntype = \"matrix\"\nhomeserver = \"http://{}/\"\nroom = \"!ops:example.org\"\ntoken_env = \"MATRIX_TOKEN\"\n",
            server.addr()
        ),
        &[("MATRIX_TOKEN", TOKEN)],
    );
    assert_no_secret(&format!("{matrix:?}"), &[TOKEN]);
    let prefix = "/_matrix/client/v3/rooms/%21ops%3Aexample.org/send/m.room.message/";
    let txn = |r: &Recorded| {
        r.path
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected path {}", r.path))
            .to_owned()
    };

    matrix.deliver(&firing()).await.expect("delivered");
    let first = receiver.last();
    assert_eq!(first.method, Method::PUT);
    assert_eq!(first.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(first.header("content-type"), "application/json");
    assert_eq!(
        first.json(),
        json!({ "msgtype": "m.text", "body": firing().text() })
    );
    let first_txn = txn(&first);
    assert!(!first_txn.is_empty());
    assert!(
        first_txn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)),
        "{first_txn}"
    );

    // A retry of the same notification reuses its transaction id, so Matrix posts it once.
    matrix.deliver(&firing()).await.expect("delivered");
    assert_eq!(txn(&receiver.last()), first_txn);

    // A reminder and the resolve are new messages.
    let mut reminder = firing();
    reminder.repeat = 1;
    matrix.deliver(&reminder).await.expect("delivered");
    let reminder_txn = txn(&receiver.last());
    matrix.deliver(&resolved()).await.expect("delivered");
    let resolved_request = receiver.last();
    let resolved_txn = txn(&resolved_request);
    assert_ne!(reminder_txn, first_txn);
    assert_ne!(resolved_txn, first_txn);
    assert_ne!(resolved_txn, reminder_txn);
    assert_eq!(resolved_request.json()["body"], resolved().text());

    // An echoing error page does not leak the token into the error.
    receiver.answer(403, r#"{"errcode":"M_FORBIDDEN","seen":"{echo}"}"#);
    let e = failure(&matrix, &firing()).await;
    assert!(!e.retryable, "{e}");
    assert!(e.to_string().contains("M_FORBIDDEN"), "{e}");
    assert_no_secret(&e.to_string(), &[TOKEN]);
    receiver.answer(429, r#"{"errcode":"M_LIMIT_EXCEEDED"}"#);
    assert!(failure(&matrix, &firing()).await.retryable);
}

#[tokio::test]
async fn a_matrix_room_alias_is_resolved_once() {
    // One answer serves both the directory lookup and the send.
    let (server, receiver) =
        Receiver::start(200, r#"{"room_id":"!abc:example.org","event_id":"$x"}"#).await;
    let matrix = channel(
        &format!(
            "name = \"room\"\ntype = \"matrix\"\nhomeserver = \"http://{}\"\nroom = \"#ops:example.org\"\ntoken_env = \"MATRIX_TOKEN\"\n",
            server.addr()
        ),
        &[("MATRIX_TOKEN", TOKEN)],
    );
    matrix.deliver(&firing()).await.expect("delivered");
    matrix.deliver(&resolved()).await.expect("delivered");
    let requests = receiver.requests();
    let seen: Vec<(Method, &str)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.as_str()))
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[0],
        (
            Method::GET,
            "/_matrix/client/v3/directory/room/%23ops%3Aexample.org"
        )
    );
    assert_eq!(
        requests[0].header("authorization"),
        format!("Bearer {TOKEN}")
    );
    for (method, path) in &seen[1..] {
        assert_eq!(method, Method::PUT);
        assert!(
            path.starts_with("/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn postmark_sends_the_email_fields_with_its_token() {
    let (server, receiver) = Receiver::start(
        200,
        r#"{"To":"a@example.org","SubmittedAt":"2026-06-14T03:12:10Z","MessageID":"x","ErrorCode":0,"Message":"OK"}"#,
    )
    .await;
    let postmark = channel(
        &format!(
            "name = \"mail\"\ntype = \"postmark\"\ntoken_env = \"POSTMARK_TOKEN\"\nfrom = \"pom@example.org\"\nto = [\"a@example.org\", \"b@example.org\"]\napi_url = \"http://{}\"\n",
            server.addr()
        ),
        &[("POSTMARK_TOKEN", TOKEN)],
    );
    assert_no_secret(&format!("{postmark:?}"), &[TOKEN]);
    for alert in [firing(), resolved()] {
        postmark.deliver(&alert).await.expect("delivered");
        let got = receiver.last();
        assert_eq!(got.method, Method::POST);
        assert_eq!(got.path, "/email");
        assert_eq!(got.header("accept"), "application/json");
        assert_eq!(got.header("content-type"), "application/json");
        assert_eq!(got.header("x-postmark-server-token"), TOKEN);
        assert_eq!(
            got.json(),
            json!({
                "From": "pom@example.org",
                "To": "a@example.org,b@example.org",
                "Subject": alert.subject(),
                "TextBody": alert.text(),
                "MessageStream": "outbound",
            })
        );
    }
    assert_eq!(
        receiver.last().json()["Subject"],
        "[RESOLVED] makenot.work/health: GET /api/health returned 200"
    );
}

#[tokio::test]
async fn postmark_error_codes_are_failures() {
    let (server, receiver) = Receiver::start(
        200,
        r#"{"ErrorCode":300,"Message":"Invalid email request"}"#,
    )
    .await;
    let postmark = channel(
        &format!(
            "name = \"mail\"\ntype = \"postmark\"\ntoken_env = \"POSTMARK_TOKEN\"\nfrom = \"pom@example.org\"\nto = [\"a@example.org\"]\napi_url = \"http://{}\"\n",
            server.addr()
        ),
        &[("POSTMARK_TOKEN", TOKEN)],
    );
    let e = failure(&postmark, &firing()).await;
    assert!(!e.retryable, "{e}");
    assert!(e.to_string().contains("ErrorCode 300"), "{e}");
    assert!(e.to_string().contains("Invalid email request"), "{e}");

    // Postmark's usual refusal: 422 with an ErrorCode; and a bad token, echoed back.
    receiver.answer(422, r#"{"ErrorCode":406,"Message":"inactive recipient"}"#);
    assert!(!failure(&postmark, &firing()).await.retryable);
    receiver.answer(401, r#"{"ErrorCode":10,"Message":"bad token {echo}"}"#);
    let e = failure(&postmark, &firing()).await;
    assert!(!e.retryable, "{e}");
    assert_no_secret(&e.to_string(), &[TOKEN]);
    receiver.answer(429, r#"{"ErrorCode":429,"Message":"rate limit"}"#);
    assert!(failure(&postmark, &firing()).await.retryable);
    receiver.answer(503, "maintenance");
    assert!(failure(&postmark, &firing()).await.retryable);
    // A 200 that is not Postmark's answer did not send the email either.
    receiver.answer(200, "<html>proxy login</html>");
    assert!(!failure(&postmark, &firing()).await.retryable);
}

#[tokio::test]
async fn alertmanager_gets_one_v2_alert_with_labels_stable_across_the_incident() {
    let (server, receiver) = Receiver::start(200, "").await;
    let am = channel(
        &format!(
            "name = \"am\"\ntype = \"alertmanager\"\nurl = \"http://{}/prefix/\"\n",
            server.addr()
        ),
        &[],
    );
    assert_eq!(am.refresh_interval(), Some(Duration::from_secs(60)));

    am.deliver(&firing()).await.expect("delivered");
    let got = receiver.last();
    assert_eq!(got.method, Method::POST);
    assert_eq!(got.path, "/prefix/api/v2/alerts");
    assert_eq!(got.header("content-type"), "application/json");
    let firing_json = got.json();
    assert_eq!(
        firing_json,
        json!([{
            "labels": {
                "alertname": "pom_health",
                "alert": "health",
                "check": "makenot.work/health",
                "target": "makenot.work",
                "severity": "critical",
            },
            "annotations": {
                "summary": "GET /api/health returned 502",
                "description": "GET /api/health returned 502 Bad Gateway, expected 200",
                "runbook_url": "https://git.example.com/runbook.md#health-status-change",
                "status": "error",
                "sent_by": "astra",
                "incident": "makenot.work/health@1781406729000",
                "confirmed_by": "astra, hetzner",
            },
            "startsAt": "2026-06-14T03:12:09Z",
            "generatorURL": "https://git.example.com/runbook.md#health-status-change",
        }])
    );

    let before = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    am.deliver(&resolved()).await.expect("delivered");
    let resolved_json = receiver.last().json();
    let alert = &resolved_json[0];
    assert_eq!(resolved_json.as_array().unwrap().len(), 1);
    // The same labels: Alertmanager matches the resolve to the firing alert by them.
    assert_eq!(alert["labels"], firing_json[0]["labels"]);
    assert_eq!(alert["startsAt"], "2026-06-14T03:12:09Z");
    assert_eq!(alert["annotations"]["status"], "operational");
    assert_eq!(alert["annotations"]["sent_by"], "hetzner");
    let ends = OffsetDateTime::parse(alert["endsAt"].as_str().expect("endsAt"), &Rfc3339)
        .expect("RFC 3339 endsAt");
    assert!(ends >= before, "{ends} < {before}");

    let mut tls = firing();
    tls.alert = AlertKind::TlsExpiry;
    tls.status = Status::Degraded;
    am.deliver(&tls).await.expect("delivered");
    let labels = &receiver.last().json()[0]["labels"];
    assert_eq!(labels["alertname"], "pom_tls_expiry");
    assert_eq!(labels["severity"], "warning");

    receiver.answer(400, "bad alert");
    assert!(!failure(&am, &firing()).await.retryable);
}

#[tokio::test]
async fn ntfy_sets_title_priority_tags_click_and_token() {
    let (server, receiver) = Receiver::start(200, r#"{"id":"x"}"#).await;
    let ntfy = channel(
        &format!(
            "name = \"phone\"\ntype = \"ntfy\"\nurl = \"http://{}\"\ntopic = \"pom-alerts\"\ntoken_env = \"NTFY_TOKEN\"\n",
            server.addr()
        ),
        &[("NTFY_TOKEN", TOKEN)],
    );
    assert_no_secret(&format!("{ntfy:?}"), &[TOKEN]);

    ntfy.deliver(&firing()).await.expect("delivered");
    let got = receiver.last();
    assert_eq!(got.method, Method::POST);
    assert_eq!(got.path, "/pom-alerts");
    assert_eq!(got.text(), firing().text());
    assert_eq!(got.header("title"), firing().subject());
    assert_eq!(got.header("priority"), "5");
    assert_eq!(got.header("tags"), "rotating_light");
    assert_eq!(
        got.header("click"),
        "https://git.example.com/runbook.md#health-status-change"
    );
    assert_eq!(got.header("authorization"), format!("Bearer {TOKEN}"));

    let mut degraded = firing();
    degraded.status = Status::Degraded;
    ntfy.deliver(&degraded).await.expect("delivered");
    assert_eq!(receiver.last().header("priority"), "4");

    ntfy.deliver(&resolved()).await.expect("delivered");
    let got = receiver.last();
    assert_eq!(got.header("priority"), "3");
    assert_eq!(got.header("tags"), "white_check_mark");
    assert_eq!(got.header("title"), resolved().subject());
    assert_eq!(got.text(), resolved().text());

    // A public topic sends no Authorization header.
    let open = channel(
        &format!(
            "name = \"open\"\ntype = \"ntfy\"\nurl = \"http://{}\"\ntopic = \"t\"\n",
            server.addr()
        ),
        &[],
    );
    open.deliver(&firing()).await.expect("delivered");
    assert!(receiver.last().headers.get("authorization").is_none());
}

#[tokio::test]
async fn smtp_delivers_to_a_real_receiver_with_login() {
    let smtp_server = SmtpServer::start().await.expect("SMTP receiver starts");
    let password = "pw-5b0e7d1c9a3f";
    let smtp = channel(
        &format!(
            "name = \"mail\"\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nusername = \"alerts\"\npassword_env = \"SMTP_PASSWORD\"\nfrom = \"PoM <pom@example.org>\"\nto = [\"a@example.org\", \"b@example.org\"]\n",
            smtp_server.port()
        ),
        &[("SMTP_PASSWORD", password)],
    );
    assert_no_secret(&format!("{smtp:?}"), &[password]);

    smtp.deliver(&firing()).await.expect("delivered");
    smtp.deliver(&resolved()).await.expect("delivered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let got = smtp_server.wait_for(2, deadline).await.expect("two emails");
    for (mail, alert) in got.iter().zip([firing(), resolved()]) {
        assert_eq!(mail.from, "pom@example.org");
        assert_eq!(mail.to, ["a@example.org", "b@example.org"]);
        assert_eq!(mail.user.as_deref(), Some("alerts"));
        let data = mail.data.replace("\r\n", "\n");
        assert!(
            data.contains(&format!("Subject: {}\n", alert.subject())),
            "{data}"
        );
        assert!(data.contains("From: PoM <pom@example.org>\n"), "{data}");
        assert!(
            data.contains("To: a@example.org, b@example.org\n"),
            "{data}"
        );
        assert!(data.contains("Content-Type: text/plain"), "{data}");
        let body = data.split_once("\n\n").expect("headers, then body").1;
        assert_eq!(body.trim_end(), alert.text());
    }
    // The resolve threads under the first email of its incident.
    let message_id = |data: &str| {
        data.lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .expect("a Message-ID")
            .to_owned()
    };
    let first_id = message_id(&got[0].data);
    assert_ne!(message_id(&got[1].data), first_id);
    assert!(
        got[1].data.contains(&format!("In-Reply-To: {first_id}")),
        "{}",
        got[1].data
    );
}

#[tokio::test]
async fn smtp_refusals_are_classified_by_reply_code() {
    let smtp_server = SmtpServer::start().await.expect("SMTP receiver starts");
    let smtp = channel(
        &format!(
            "name = \"mail\"\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"pom@example.org\"\nto = [\"a@example.org\"]\n",
            smtp_server.port()
        ),
        &[],
    );
    smtp_server.reply_to_data(Some("550 5.7.1 message rejected"));
    let e = failure(&smtp, &firing()).await;
    assert!(!e.retryable, "{e}");
    assert!(e.to_string().contains("rejected"), "{e}");
    smtp_server.reply_to_data(Some("451 4.3.0 try again later"));
    let e = failure(&smtp, &firing()).await;
    assert!(e.retryable, "{e}");
    assert!(smtp_server.received().is_empty());

    smtp_server.reply_to_data(None);
    smtp.deliver(&firing()).await.expect("delivered");
    assert_eq!(smtp_server.received().len(), 1);
    assert_eq!(smtp_server.received()[0].user, None);
}

// ----- failures and secrets, across types ----------------------------------------------------

/// Every HTTP channel type, pointed at `addr`, with its secrets in the environment.
fn http_channels(addr: std::net::SocketAddr) -> Vec<Channel> {
    let vars = [
        ("SLACK_URL", format!("http://{addr}{SLACK_PATH}")),
        ("TOKEN", TOKEN.to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    [
        format!("name = \"w\"\ntype = \"webhook\"\nurl = \"http://{addr}/hook\"\n"),
        "name = \"s\"\ntype = \"slack\"\nwebhook_url_env = \"SLACK_URL\"\n".to_owned(),
        format!("name = \"m\"\ntype = \"matrix\"\nhomeserver = \"http://{addr}\"\nroom = \"!r:example.org\"\ntoken_env = \"TOKEN\"\n"),
        format!("name = \"p\"\ntype = \"postmark\"\ntoken_env = \"TOKEN\"\nfrom = \"f@example.org\"\nto = [\"t@example.org\"]\napi_url = \"http://{addr}\"\n"),
        format!("name = \"a\"\ntype = \"alertmanager\"\nurl = \"http://{addr}\"\n"),
        format!("name = \"n\"\ntype = \"ntfy\"\nurl = \"http://{addr}\"\ntopic = \"t\"\ntoken_env = \"TOKEN\"\n"),
    ]
    .iter()
    .map(|entry| channel(entry, &vars))
    .collect()
}

#[tokio::test]
async fn server_errors_are_retryable_and_client_errors_are_not() {
    let (server, receiver) = Receiver::start(500, "broken {echo}").await;
    let channels = http_channels(server.addr());
    let secrets = [TOKEN, SLACK_PATH, "T000SECRET"];
    for channel in &channels {
        receiver.answer(500, "broken {echo}");
        let e = failure(channel, &firing()).await;
        assert!(e.retryable, "{}: {e}", channel.name());
        assert!(e.to_string().contains("500"), "{}: {e}", channel.name());
        assert_no_secret(&e.to_string(), &secrets);

        receiver.answer(400, "bad request {echo}");
        let e = failure(channel, &firing()).await;
        assert!(!e.retryable, "{}: {e}", channel.name());
        assert_no_secret(&e.to_string(), &secrets);

        receiver.answer(429, "slow down");
        assert!(
            failure(channel, &firing()).await.retryable,
            "{}",
            channel.name()
        );

        assert_no_secret(&format!("{channel:?}"), &secrets);
    }
    // Every type reached the receiver each time: 3 answers x 6 types.
    assert_eq!(receiver.requests().len(), 18);
}

#[tokio::test]
async fn nothing_listening_is_retryable() {
    let addr = nothing_listening();
    for channel in http_channels(addr) {
        let e = failure(&channel, &firing()).await;
        assert!(e.retryable, "{}: {e}", channel.name());
        assert_no_secret(&e.to_string(), &[TOKEN, SLACK_PATH, "T000SECRET"]);
    }
    let smtp = channel(
        &format!(
            "name = \"mail\"\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nusername = \"u\"\npassword_env = \"PW\"\nfrom = \"f@example.org\"\nto = [\"t@example.org\"]\n",
            addr.port()
        ),
        &[("PW", "pw-5b0e7d1c9a3f")],
    );
    let e = failure(&smtp, &firing()).await;
    assert!(e.retryable, "{e}");
    assert_no_secret(&e.to_string(), &["pw-5b0e7d1c9a3f"]);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_retryably() {
    let hole = TestServer::misbehaving(Misbehaviour::BlackHole)
        .await
        .unwrap();
    let hook = channel(
        &format!(
            "name = \"hook\"\ntype = \"webhook\"\nurl = \"http://{}/\"\n",
            hole.addr()
        ),
        &[],
    )
    .with_timeout(Duration::from_millis(300));
    let e = failure(&hook, &firing()).await;
    assert!(e.retryable, "{e}");
    assert!(e.to_string().contains("no answer within 300ms"), "{e}");
}

#[test]
fn missing_secrets_name_their_variable_not_a_value() {
    let entries = [
        (
            "SLACK_URL",
            "name = \"s\"\ntype = \"slack\"\nwebhook_url_env = \"SLACK_URL\"\n",
        ),
        (
            "HOOK_URL",
            "name = \"w\"\ntype = \"webhook\"\nurl_env = \"HOOK_URL\"\n",
        ),
        (
            "MATRIX_TOKEN",
            "name = \"m\"\ntype = \"matrix\"\nhomeserver = \"https://m.example.org\"\nroom = \"!r:example.org\"\ntoken_env = \"MATRIX_TOKEN\"\n",
        ),
        (
            "POSTMARK_TOKEN",
            "name = \"p\"\ntype = \"postmark\"\ntoken_env = \"POSTMARK_TOKEN\"\nfrom = \"f@example.org\"\nto = [\"t@example.org\"]\n",
        ),
        (
            "SMTP_PASSWORD",
            "name = \"e\"\ntype = \"smtp\"\nhost = \"smtp.example.org\"\nusername = \"u\"\npassword_env = \"SMTP_PASSWORD\"\nfrom = \"f@example.org\"\nto = [\"t@example.org\"]\n",
        ),
        (
            "NTFY_TOKEN",
            "name = \"n\"\ntype = \"ntfy\"\ntopic = \"t\"\ntoken_env = \"NTFY_TOKEN\"\n",
        ),
    ];
    for (var, entry) in entries {
        let config = channel_config(entry);
        for value in [None, Some("")] {
            let lookup = |name: &str| (name == var).then(|| value.map(str::to_owned)).flatten();
            match Channel::from_config(&config, &lookup) {
                Err(e @ ChannelError::MissingEnv { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(var), "{text}");
                    assert!(text.contains(config.name()), "{text}");
                }
                other => panic!("{var}: expected MissingEnv, got {other:?}"),
            }
        }
    }
}

#[test]
fn bad_secret_values_are_reported_without_the_value() {
    let slack = channel_config("name = \"s\"\ntype = \"slack\"\nwebhook_url_env = \"SLACK_URL\"\n");
    for value in ["not a url T000SECRET", "ftp://files.example.org/T000SECRET"] {
        let e = Channel::from_config(&slack, &env(&[("SLACK_URL", value)])).unwrap_err();
        assert!(matches!(e, ChannelError::BadUrlEnv { .. }), "{e:?}");
        assert!(e.to_string().contains("SLACK_URL"), "{e}");
        assert_no_secret(&e.to_string(), &["T000SECRET"]);
        assert_no_secret(&format!("{e:?}"), &["T000SECRET"]);
    }
    let ntfy = channel_config(
        "name = \"n\"\ntype = \"ntfy\"\ntopic = \"t\"\ntoken_env = \"NTFY_TOKEN\"\n",
    );
    let e = Channel::from_config(&ntfy, &env(&[("NTFY_TOKEN", "abc\ndef-secret")])).unwrap_err();
    assert!(matches!(e, ChannelError::BadSecret { .. }), "{e:?}");
    assert_no_secret(&format!("{e} {e:?}"), &["def-secret"]);
    // Surrounding white space, as an env file may leave, is not part of a token.
    let padded = Channel::from_config(&ntfy, &env(&[("NTFY_TOKEN", " tok-123456 \n")]));
    assert!(padded.is_ok(), "{padded:?}");
}

#[tokio::test]
async fn the_test_alert_is_delivered_like_any_other() {
    let (server, receiver) = Receiver::start(200, "").await;
    let hook = channel(
        &format!(
            "name = \"hook\"\ntype = \"webhook\"\nurl = \"http://{}/\"\n",
            server.addr()
        ),
        &[],
    );
    let alert = channel::test_alert("astra", "https://example.org/runbook.md");
    hook.deliver(&alert).await.expect("delivered");
    let got = receiver.last().json();
    assert_eq!(got["sent_by"], "astra");
    assert!(got["summary"].as_str().unwrap().contains("TEST"), "{got}");
    // Two test runs are two distinct notifications (Matrix would drop a repeated txn id).
    let again = channel::test_alert("astra", "https://example.org/runbook.md");
    assert_ne!(again.incident, alert.incident);
}

#[tokio::test]
async fn the_smtp_receiver_speaks_login_and_dot_stuffing_and_survives_garbage() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let server = SmtpServer::start().await.unwrap();
    let stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut next = async move || lines.next_line().await.unwrap().unwrap_or_default();
    assert!(next().await.starts_with("220 "));
    let script = [
        ("EHLO client", "250-"),
        ("AUTH LOGIN", "250-"), // the rest of the EHLO reply comes first
        ("", "250-"),
        ("", "250-"),
        ("", "250 SIZE"),
        ("", "334 VXNlcm5hbWU6"),
        ("bW9uaXRvcg==", "334 UGFzc3dvcmQ6"),
        ("c2VjcmV0", "235 "),
        ("MAIL FROM:<pom@example.org> BODY=8BITMIME", "250 "),
        ("RCPT TO:<a@example.org>", "250 "),
        ("DATA", "354 "),
        ("Subject: hi\r\n\r\n..leading dot\r\nlast\r\n.", "250 "),
        ("NOOP", "250 "),
        ("\u{1}\u{ff}garbage", "500 "),
        ("RCPT TO:<b@example.org>", "503 "),
        ("QUIT", "221 "),
    ];
    for (send, expect) in script {
        if !send.is_empty() {
            write
                .write_all(format!("{send}\r\n").as_bytes())
                .await
                .unwrap();
        }
        let reply = next().await;
        assert!(reply.starts_with(expect), "{send:?}: {reply:?}");
    }
    let got = server
        .wait_for(1, tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .expect("one message");
    assert_eq!(got[0].from, "pom@example.org");
    assert_eq!(got[0].to, ["a@example.org"]);
    assert_eq!(got[0].user.as_deref(), Some("monitor"));
    assert_eq!(got[0].data, "Subject: hi\r\n\r\n.leading dot\r\nlast\r\n");

    // An endless line ends the session; the server keeps serving others.
    let mut flood = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    flood
        .write_all(&vec![b'x'; pom::testbed::smtp::MAX_LINE + 10])
        .await
        .unwrap();
    let mut answer = String::new();
    let mut flood = BufReader::new(flood);
    flood.read_line(&mut answer).await.unwrap(); // greeting
    answer.clear();
    flood.read_line(&mut answer).await.unwrap();
    assert!(answer.starts_with("500 "), "{answer:?}");

    let smtp = channel(
        &format!(
            "name = \"mail\"\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"f@example.org\"\nto = [\"t@example.org\"]\n",
            server.port()
        ),
        &[],
    );
    smtp.deliver(&firing()).await.expect("still serving");
    assert!(
        server
            .wait_for(2, tokio::time::Instant::now() + Duration::from_secs(5))
            .await
            .is_some()
    );
    // A count never reached ends at the deadline instead of hanging.
    assert!(
        server
            .wait_for(3, tokio::time::Instant::now())
            .await
            .is_none()
    );
}

#[test]
fn channels_build_without_a_runtime_and_deliver_from_any_task() {
    fn shared<T: Send + Sync>(_: &T) {}
    fn spawnable<T: Send>(_: &T) {}
    let addr = nothing_listening();
    let mut channels = http_channels(addr);
    channels.push(channel(
        "name = \"mail\"\ntype = \"smtp\"\nhost = \"smtp.example.org\"\nusername = \"u\"\npassword_env = \"PW\"\nfrom = \"f@example.org\"\nto = [\"t@example.org\"]\n",
        &[("PW", "pw-5b0e7d1c9a3f")],
    ));
    let alert = firing();
    for channel in &channels {
        shared(channel);
        spawnable(&channel.deliver(&alert));
    }
    let kinds: Vec<&str> = channels.iter().map(Channel::kind).collect();
    assert_eq!(
        kinds,
        [
            "webhook",
            "slack",
            "matrix",
            "postmark",
            "alertmanager",
            "ntfy",
            "smtp"
        ]
    );
    assert!(
        channels
            .iter()
            .filter(|c| c.kind() != "alertmanager")
            .all(|c| c.refresh_interval().is_none())
    );
}
