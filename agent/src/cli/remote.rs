//! `pom status`, `pom mesh` and `pom heartbeat`: ask the local agent's API and print what it
//! says. The token comes from `$POM_API_TOKEN`; it is sent, never printed.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use comfy_table::Table;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::{ApiArgs, EXIT_INTERNAL};
use crate::probe::http::{self, Request};
use crate::probe::trust::Trust;

/// The longest wait for the agent.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request to the agent's API; returns the status and the JSON body.
async fn call(args: &ApiArgs, method: &Method, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let url = Url::parse(&args.api)
        .and_then(|base| base.join(path))
        .with_context(|| format!("invalid --api URL {:?}", args.api))?;
    let mut headers = Vec::new();
    if let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("POM_API_TOKEN contains characters a header cannot carry")?;
        headers.push((AUTHORIZATION, value));
    }
    let tls = Trust::default().entry(None)?.http.clone();
    let request = Request {
        method,
        url: &url,
        headers: &headers,
        body: Bytes::new(),
        tls: &tls,
        max_body: 16 << 20,
        user_agent: None,
    };
    let answer = tokio::time::timeout(TIMEOUT, http::send(&request))
        .await
        .with_context(|| format!("no answer from the agent at {url} within 10s"))?
        .with_context(|| format!("cannot reach the agent at {url} (is `pom run` running?)"))?;
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if answer.status == StatusCode::UNAUTHORIZED {
        bail!("the agent refused the token (set POM_API_TOKEN to the agent's api token)");
    }
    Ok((answer.status, body))
}

fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub(super) async fn status(args: ApiArgs) -> anyhow::Result<u8> {
    let (code, body) = call(&args, &Method::GET, "/api/status").await?;
    if !code.is_success() {
        bail!("the agent answered {code}: {}", field(&body, "error"));
    }
    let mut table = Table::new();
    table.set_header([
        "check",
        "status",
        "verdict",
        "votes",
        "latency",
        "last checked",
        "detail",
    ]);
    let checks = body["checks"].as_array().cloned().unwrap_or_default();
    let mut worst = 0;
    for c in &checks {
        let votes = c["votes"]
            .as_object()
            .map(|v| {
                v.iter()
                    .map(|(agent, s)| format!("{agent}:{}", s.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let status = field(c, "status");
        worst = worst.max(match status.as_str() {
            "operational" | "-" => 0,
            "degraded" => 1,
            _ => 2,
        });
        table.add_row([
            field(c, "id"),
            status,
            field(c, "verdict"),
            votes,
            c["latency_ms"]
                .as_u64()
                .map_or("-".into(), |ms| format!("{ms} ms")),
            field(c, "last_checked"),
            field(c, "detail"),
        ]);
    }
    println!(
        "agent {} — {} checks\n{table}",
        field(&body, "agent"),
        checks.len()
    );
    Ok(worst)
}

pub(super) async fn mesh(args: ApiArgs) -> anyhow::Result<u8> {
    let (code, body) = call(&args, &Method::GET, "/api/mesh").await?;
    if !code.is_success() {
        bail!("the agent answered {code}: {}", field(&body, "error"));
    }
    let me = &body["self"];
    println!(
        "this agent: {} (instance {}, version {}){}",
        field(me, "name"),
        field(me, "instance_id"),
        field(me, "version"),
        if me["isolated"].as_bool() == Some(true) {
            " — ISOLATED"
        } else {
            ""
        }
    );
    let quorum = &me["quorum"];
    if let Some(required) = quorum["required"].as_u64() {
        println!(
            "quorum: {} — {} voting agents now, {required} failing votes confirm",
            quorum["policy"]
                .as_str()
                .map_or_else(|| quorum["policy"].to_string(), str::to_owned),
            quorum["voters"]
        );
    }
    let peers = body["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("no peers: this agent is its own quorum of one");
        return Ok(0);
    }
    let mut table = Table::new();
    table.set_header([
        "peer",
        "addr",
        "state",
        "link",
        "last heartbeat",
        "rtt",
        "clock skew",
        "version",
        "config",
    ]);
    let mut code = 0;
    for p in &peers {
        if field(p, "state") != "alive" {
            code = 2;
        }
        let hash = field(p, "config_hash");
        let config = match (hash.get(..12), p["config_drift"].as_bool()) {
            (Some(short), Some(true)) => format!("{short}… DRIFT"),
            (Some(short), _) => format!("{short}…"),
            (None, _) => hash,
        };
        let ms = |key: &str| {
            p[key]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
        };
        let mut state = field(p, "state");
        if p["isolated"].as_bool() == Some(true) {
            state.push_str(" (isolated)");
        }
        table.add_row([
            field(p, "name"),
            field(p, "addr"),
            state,
            if p["connected"].as_bool() == Some(true) {
                "up"
            } else {
                "down"
            }
            .to_owned(),
            field(p, "last_heartbeat"),
            ms("rtt_ms"),
            ms("clock_skew_ms"),
            field(p, "version"),
            config,
        ]);
    }
    println!("{table}");
    Ok(code)
}

pub(super) async fn heartbeat(args: ApiArgs, name: &str) -> anyhow::Result<u8> {
    let path = format!("/api/heartbeats/{}", percent_encode(name));
    let (code, body) = call(&args, &Method::POST, &path).await?;
    if code.is_success() {
        println!("heartbeat {name}: pinged at {}", field(&body, "at"));
        Ok(0)
    } else {
        eprintln!(
            "heartbeat {name}: the agent answered {code}: {}",
            field(&body, "error")
        );
        Ok(EXIT_INTERNAL)
    }
}

/// Percent-encodes a path segment.
fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
