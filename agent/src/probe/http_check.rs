//! Health and route checks: an HTTP request and the expectations on its answer.
//!
//! - Refused, reset, timeout, resolution or handshake failure: `unreachable`.
//! - A rejected certificate, an answer that is not HTTP, or a status outside the expected set:
//!   `error`.
//! - An expected status with a body that misses an expectation: `degraded`.
//!
//! Redirects are followed (up to [`MAX_REDIRECTS`]) only when the check says so; otherwise a
//! 3xx is judged like any other status.

use hyper::header::LOCATION;
use hyper::{Method, StatusCode};
use url::Url;

use super::http::{self, Request, Response};
use super::{MAX_BODY_BYTES, Outcome, ProbeContext, snippet};
use crate::plan::HttpSpec;

/// The most redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// Runs one health or route check.
pub async fn probe(spec: &HttpSpec, ctx: &ProbeContext) -> Outcome {
    let trust = match ctx.trust.entry(spec.ca_file.as_deref()) {
        Ok(trust) => trust,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let label = format!("{} {}", spec.method, path_of(&spec.url));
    let mut method = spec.method.clone();
    let mut body = spec.body.clone();
    let mut url = spec.url.clone();
    let mut hops = 0;
    let response = loop {
        let request = Request {
            method: &method,
            url: &url,
            headers: &spec.headers,
            body: body.clone(),
            tls: &trust.http,
            max_body: MAX_BODY_BYTES,
            user_agent: ctx.user_agent.as_ref(),
        };
        let response = match http::send(&request).await {
            Ok(response) => response,
            Err(e) => {
                let at = if hops > 0 {
                    format!(" (after redirect to {url})")
                } else {
                    String::new()
                };
                return Outcome::new(e.status(), format!("{label}: {e}{at}"));
            }
        };
        let next = spec
            .follow_redirects
            .then(|| redirect_target(&url, &response))
            .flatten();
        let Some(next) = next else { break response };
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Outcome::error(format!("{label}: more than {MAX_REDIRECTS} redirects"));
        }
        if response.status == StatusCode::SEE_OTHER
            || (matches!(
                response.status,
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND
            ) && method == Method::POST)
        {
            method = Method::GET;
            body = bytes::Bytes::new();
        }
        url = next;
    };
    judge(spec, &label, &response)
}

fn path_of(url: &Url) -> &str {
    &url[url::Position::BeforePath..url::Position::AfterQuery]
}

fn redirect_target(from: &Url, response: &Response) -> Option<Url> {
    if !response.status.is_redirection() {
        return None;
    }
    let location = response.headers.get(LOCATION)?.to_str().ok()?;
    from.join(location)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

fn judge(spec: &HttpSpec, label: &str, response: &Response) -> Outcome {
    let code = response.status.as_u16();
    let expected = if spec.expect_status.is_empty() {
        response.status.is_success()
    } else {
        spec.expect_status.contains(&code)
    };
    let status_text = match response.status.canonical_reason() {
        Some(reason) => format!("{code} {reason}"),
        None => code.to_string(),
    };
    if !expected {
        let body = String::from_utf8_lossy(&response.body);
        let shown = snippet(&body, 80);
        let wanted = if spec.expect_status.is_empty() {
            "2xx".to_owned()
        } else {
            spec.expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return if shown.is_empty() {
            Outcome::error(format!("{label} returned {status_text}, expected {wanted}"))
        } else {
            Outcome::error(format!(
                "{label} returned {status_text}, expected {wanted}: {shown:?}"
            ))
        };
    }
    match body_problem(spec, &response.body) {
        Some(problem) => {
            let cut = if response.truncated {
                format!(" (in the first {} KiB)", MAX_BODY_BYTES / 1024)
            } else {
                String::new()
            };
            Outcome::degraded(format!(
                "{label} returned {status_text}, but {problem}{cut}"
            ))
        }
        None => Outcome::operational(format!("{label} returned {status_text}")),
    }
}

/// The first body expectation that does not hold, if any.
fn body_problem(spec: &HttpSpec, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    if let Some(needle) = &spec.expect_body
        && !text.contains(needle.as_str())
    {
        return Some(format!("the body does not contain {needle:?}"));
    }
    if let Some(regex) = &spec.expect_body_regex
        && !regex.is_match(&text)
    {
        return Some(format!("the body does not match /{}/", regex.as_str()));
    }
    if spec.expect_json.is_empty() {
        return None;
    }
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(e) => return Some(format!("the body is not JSON ({e})")),
    };
    for (path, want) in &spec.expect_json {
        let got = path.split('.').try_fold(&json, |value, key| match value {
            serde_json::Value::Object(map) => map.get(key),
            serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        });
        match got {
            None => return Some(format!("JSON field {path} is missing (expected {want})")),
            Some(got) if !json_eq(got, want) => {
                return Some(format!("JSON field {path} is {got}, expected {want}"));
            }
            Some(_) => {}
        }
    }
    None
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
