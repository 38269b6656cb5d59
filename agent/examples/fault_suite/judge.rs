//! What a scenario expected and what the receivers got: the expected alerts ([`Want`]), their
//! comparison with what the webhook received (each expected alert exactly once, nothing else)
//! and with Alertmanager's notifications, and a scenario's [`Outcome`] for the table.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One scenario's outcome (or one fault way of it).
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) scenario: String,
    pub(crate) expected: String,
    pub(crate) observed: String,
    pub(crate) runs: usize,
    /// Time-to-alert of each run, in ms.
    pub(crate) tta_ms: Vec<i64>,
    pub(crate) deviations: Vec<String>,
}

/// Who may have sent an alert.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sender {
    Any,
    Is(&'static str),
    Not(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct Want {
    check: String,
    event: &'static str,
    sender: Sender,
    /// Least length of `confirmed_by`.
    quorum: usize,
}

pub(crate) fn want(check: &str, event: &'static str, sender: Sender, quorum: usize) -> Want {
    Want {
        check: check.to_owned(),
        event,
        sender,
        quorum,
    }
}

/// A firing and a resolved of `check`, the firing confirmed by at least `quorum`.
pub(crate) fn incident(check: &str, firing_by: Sender, quorum: usize) -> [Want; 2] {
    [
        want(check, "firing", firing_by, quorum),
        want(check, "resolved", Sender::Any, 0),
    ]
}

fn short(a: &Value) -> String {
    format!(
        "{} {} by {}",
        a["check"].as_str().unwrap_or("?"),
        a["event"].as_str().unwrap_or("?"),
        a["sent_by"].as_str().unwrap_or("?")
    )
}

/// Compares `alerts` with `wants` (each exactly once); every other alert is a deviation.
pub(crate) fn compare(alerts: &[Value], wants: &[Want]) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = vec![false; alerts.len()];
    for w in wants {
        let hits: Vec<usize> = (0..alerts.len())
            .filter(|&i| alerts[i]["check"] == w.check.as_str() && alerts[i]["event"] == w.event)
            .collect();
        if hits.len() != 1 {
            out.push(format!(
                "{} {}: {} received, 1 expected",
                w.check,
                w.event,
                hits.len()
            ));
        }
        for &i in &hits {
            used[i] = true;
            let a = &alerts[i];
            let by = a["sent_by"].as_str().unwrap_or("");
            match w.sender {
                Sender::Is(n) if by != n => {
                    out.push(format!("{}: sent by {by}, not {n}", short(a)))
                }
                Sender::Not(n) if by == n => out.push(format!("{}: sent by {n}", short(a))),
                _ => {}
            }
            let confirmed = a["confirmed_by"].as_array().map_or(0, Vec::len);
            if confirmed < w.quorum {
                out.push(format!(
                    "{}: confirmed by {confirmed} ({}), {} expected",
                    short(a),
                    a["confirmed_by"],
                    w.quorum
                ));
            }
        }
    }
    for (i, a) in alerts.iter().enumerate() {
        if !used[i] {
            out.push(format!("unexpected: {} ({})", short(a), a["summary"]));
        }
    }
    out
}

/// Compares Alertmanager's notifications with `wants`: one `firing` and one `resolved` for
/// each firing the webhook should get. Alertmanager notifies nothing of an alert it never saw
/// firing (the outage report after an isolation is a lone `resolved`).
pub(crate) fn compare_am(notified: &[(String, String)], wants: &[Want]) -> Vec<String> {
    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    for w in wants.iter().filter(|w| w.event == "firing") {
        for status in ["firing", "resolved"] {
            *expected
                .entry((w.check.clone(), status.to_owned()))
                .or_default() += 1;
        }
    }
    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    for n in notified {
        *got.entry(n.clone()).or_default() += 1;
    }
    let mut out = Vec::new();
    for key in expected.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
        let (e, g) = (
            expected.get(key).copied().unwrap_or(0),
            got.get(key).copied().unwrap_or(0),
        );
        if e != g {
            out.push(format!(
                "Alertmanager notified {} {} {g} times, {e} expected",
                key.0, key.1
            ));
        }
    }
    out
}

/// Alerts grouped as `check event by SENDER ×N`.
pub(crate) fn summary(alerts: &[Value]) -> String {
    if alerts.is_empty() {
        return "0 alerts".into();
    }
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for a in alerts {
        *groups.entry(short(a)).or_default() += 1;
    }
    groups
        .iter()
        .map(|(k, n)| {
            if *n == 1 {
                k.clone()
            } else {
                format!("{k} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn describe(wants: &[Want]) -> String {
    if wants.is_empty() {
        return "0 alerts".into();
    }
    wants
        .iter()
        .map(|w| {
            let by = match w.sender {
                Sender::Any => String::new(),
                Sender::Is(n) => format!(" by {n}"),
                Sender::Not(n) => format!(" not by {n}"),
            };
            let q = if w.quorum > 1 {
                format!(" (≥{} confirm)", w.quorum)
            } else {
                String::new()
            };
            format!("{} {}{by}{q} ×1", w.check, w.event)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Time-to-alert: from `t0` (the fault) to the alert's arrival at the sink, in ms.
pub(crate) fn tta(alert: &Value, t0: i64) -> i64 {
    alert["received_ms"].as_i64().unwrap_or(0) - t0
}
