//! The CORS check: an `OPTIONS` preflight, as a browser would send before a cross-origin call.
//!
//! It passes when the preflight answers 2xx, `Access-Control-Allow-Origin` is the origin (or
//! `*`), the method is allowed (a CORS-safelisted method needs no explicit allowance), and every
//! requested header is allowed. Anything else is `error`: browsers would block the call.

use bytes::Bytes;
use hyper::Method;
use hyper::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderName,
    HeaderValue, ORIGIN,
};

use super::http::{self, Request};
use super::{Outcome, ProbeContext};
use crate::plan::CorsSpec;

/// A preflight answer needs no body; this is all that is read of one.
const MAX_PREFLIGHT_BODY: usize = 64 * 1024;

/// Runs one CORS check.
pub async fn probe(spec: &CorsSpec, ctx: &ProbeContext) -> Outcome {
    let trust = match ctx.trust.entry(spec.ca_file.as_deref()) {
        Ok(trust) => trust,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let mut headers = Vec::new();
    let mut push = |name: HeaderName, value: &str| match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.push((name, value));
            Ok(())
        }
        Err(_) => Err(Outcome::error(format!("invalid {name} value {value:?}"))),
    };
    let pushed = push(ORIGIN, &spec.origin)
        .and_then(|()| push(ACCESS_CONTROL_REQUEST_METHOD, spec.method.as_str()))
        .and_then(|()| {
            if spec.headers.is_empty() {
                Ok(())
            } else {
                push(ACCESS_CONTROL_REQUEST_HEADERS, &spec.headers.join(", "))
            }
        });
    if let Err(outcome) = pushed {
        return outcome;
    }
    let request = Request {
        method: &Method::OPTIONS,
        url: &spec.url,
        headers: &headers,
        body: Bytes::new(),
        tls: &trust.http,
        max_body: MAX_PREFLIGHT_BODY,
        user_agent: ctx.user_agent.as_ref(),
    };
    let label = format!("OPTIONS {} from {}", spec.url.path(), spec.origin);
    let response = match http::send(&request).await {
        Ok(response) => response,
        Err(e) => return Outcome::new(e.status(), format!("{label}: {e}")),
    };
    if !response.status.is_success() {
        return Outcome::error(format!(
            "{label}: preflight returned {}, expected 2xx",
            response.status.as_u16()
        ));
    }
    match problem(spec, &response.headers) {
        Some(problem) => Outcome::error(format!("{label}: {problem}")),
        None => Outcome::operational(format!("{label}: {} allowed", spec.method)),
    }
}

/// The first CORS rule the preflight answer breaks, if any.
fn problem(spec: &CorsSpec, headers: &HeaderMap) -> Option<String> {
    let header = |name: &HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let allow_origin = header(&ACCESS_CONTROL_ALLOW_ORIGIN);
    let allow_origin = allow_origin.trim();
    if allow_origin.is_empty() {
        return Some("no Access-Control-Allow-Origin header".to_owned());
    }
    if allow_origin != "*" && allow_origin != spec.origin {
        return Some(format!(
            "Access-Control-Allow-Origin is {allow_origin:?}, expected {:?} or \"*\"",
            spec.origin
        ));
    }
    let allow_methods = header(&ACCESS_CONTROL_ALLOW_METHODS);
    let methods = list(&allow_methods);
    let safelisted = matches!(spec.method, Method::GET | Method::HEAD | Method::POST);
    let method_ok = safelisted
        || methods
            .iter()
            .any(|m| *m == "*" || *m == spec.method.as_str());
    if !method_ok {
        return Some(if methods.is_empty() {
            format!(
                "no Access-Control-Allow-Methods header, so {} is not allowed",
                spec.method
            )
        } else {
            format!(
                "Access-Control-Allow-Methods is {allow_methods:?}, which does not allow {}",
                spec.method
            )
        });
    }
    let allow_headers = header(&ACCESS_CONTROL_ALLOW_HEADERS);
    let allowed = list(&allow_headers);
    let missing: Vec<&str> = spec
        .headers
        .iter()
        .map(String::as_str)
        .filter(|h| {
            !allowed
                .iter()
                .any(|a| *a == "*" || a.eq_ignore_ascii_case(h))
        })
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "Access-Control-Allow-Headers does not allow {}",
            missing.join(", ")
        ));
    }
    None
}

fn list(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}
