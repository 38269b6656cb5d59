//! `GET /metrics`: the Prometheus text exposition (format 0.0.4).
//!
//! Labels are bounded: check ids, targets, kinds, channel and heartbeat names from the config;
//! never a free-form error string.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use mesh_proto::Status;

use super::ApiState;
use crate::board::CheckState;

pub(super) async fn render(State(state): State<ApiState>) -> impl IntoResponse {
    let body = text(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// The whole exposition.
fn text(state: &ApiState) -> String {
    let checks = state.board.checks(crate::monitor::now());
    let mut out = String::with_capacity(256 + checks.len() * 512);
    let labels = |c: &CheckState| {
        format!(
            "check=\"{}\",target=\"{}\",kind=\"{}\"",
            escape(&c.id.to_string()),
            escape(&c.target),
            escape(&c.kind)
        )
    };

    let mut per_check = |name: &str, help: &str, value: &dyn Fn(&CheckState) -> Option<String>| {
        family(&mut out, name, "gauge", help);
        for c in &checks {
            if let Some(v) = value(c) {
                let _ = writeln!(out, "{name}{{{}}} {v}", labels(c));
            }
        }
    };
    per_check(
        "pom_probe_success",
        "1 if the latest probe answered as expected (operational or degraded), 0 if not.",
        &|c| c.status.map(|s| u8::from(!s.is_failure()).to_string()),
    );
    per_check(
        "pom_probe_duration_seconds",
        "How long the latest probe took.",
        // Milliseconds, well inside f64's range.
        #[allow(clippy::cast_precision_loss)]
        &|c| c.latency_ms.map(|ms| (ms as f64 / 1000.0).to_string()),
    );
    per_check(
        "pom_cert_expiry_timestamp_seconds",
        "When the leaf certificate a TLS check saw expires (Unix time).",
        &|c| c.cert_expiry.map(|t| t.to_string()),
    );
    per_check(
        "pom_domain_expiry_timestamp_seconds",
        "When the domain registration a WHOIS check saw expires (Unix time).",
        &|c| c.domain_expiry.map(|t| t.to_string()),
    );
    family(
        &mut out,
        "pom_check_status",
        "gauge",
        "1 for the check's current status, 0 for the others.",
    );
    for c in &checks {
        if let Some(current) = c.status {
            for s in Status::ALL {
                let _ = writeln!(
                    out,
                    "pom_check_status{{{},status=\"{s}\"}} {}",
                    labels(c),
                    u8::from(s == current)
                );
            }
        }
    }
    family(
        &mut out,
        "pom_heartbeat_last_ping_timestamp_seconds",
        "gauge",
        "When a push heartbeat was last pinged (Unix time).",
    );
    for (name, at) in state.board.pings() {
        let _ = writeln!(
            out,
            "pom_heartbeat_last_ping_timestamp_seconds{{heartbeat=\"{}\"}} {}",
            escape(&name),
            at.as_millis() / 1000
        );
    }

    let counters = &state.board.counters;
    family(
        &mut out,
        "pom_alerts_sent_total",
        "counter",
        "Alerts a channel accepted.",
    );
    for (channel, n) in counters.alerts_sent() {
        let _ = writeln!(
            out,
            "pom_alerts_sent_total{{channel=\"{}\"}} {n}",
            escape(&channel)
        );
    }
    family(
        &mut out,
        "pom_outbox_pending",
        "gauge",
        "Alert deliveries waiting in the outbox.",
    );
    let _ = writeln!(
        out,
        "pom_outbox_pending {}",
        counters.outbox_pending.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "pom_peer_up",
        "gauge",
        "1 if a mesh peer is alive (no peers when the agent runs alone).",
    );
    let peers = state.board.mesh().map(|m| m.peers).unwrap_or_default();
    for p in &peers {
        let up = u8::from(p.state == mesh_proto::PeerState::Alive);
        let _ = writeln!(out, "pom_peer_up{{peer=\"{}\"}} {up}", escape(&p.name));
    }
    family(
        &mut out,
        "pom_mesh_udp_bytes_total",
        "counter",
        "UDP bytes exchanged with a mesh peer on its current connection (resets on reconnect).",
    );
    for p in &peers {
        if let Some((tx, rx)) = p.udp_bytes {
            let name = escape(&p.name);
            let _ = writeln!(
                out,
                "pom_mesh_udp_bytes_total{{peer=\"{name}\",direction=\"tx\"}} {tx}\npom_mesh_udp_bytes_total{{peer=\"{name}\",direction=\"rx\"}} {rx}"
            );
        }
    }
    family(
        &mut out,
        "pom_mesh_dropped_frames_total",
        "counter",
        "Frames dropped because a peer's send queue was full.",
    );
    let dropped = state.board.mesh().map_or(0, |m| m.dropped_frames);
    let _ = writeln!(out, "pom_mesh_dropped_frames_total {dropped}");

    let scheduler = &state.scheduler;
    family(
        &mut out,
        "pom_probe_runs_total",
        "counter",
        "Probe runs started.",
    );
    let _ = writeln!(
        out,
        "pom_probe_runs_total {}",
        scheduler.started.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "pom_probe_skipped_total",
        "counter",
        "Probe slots skipped, by reason.",
    );
    for (reason, n) in [
        ("overlap", &scheduler.overlapping),
        ("missed", &scheduler.missed),
        ("result_dropped", &scheduler.dropped),
    ] {
        let _ = writeln!(
            out,
            "pom_probe_skipped_total{{reason=\"{reason}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "pom_store_dropped_observations_total",
        "counter",
        "Observations the store could not keep.",
    );
    let _ = writeln!(
        out,
        "pom_store_dropped_observations_total {}",
        state.store.dropped_observations()
    );

    family(
        &mut out,
        "pom_scheduler_start_delay_seconds",
        "histogram",
        "How late probe runs started after their slot.",
    );
    let (buckets, count, sum) = counters.start_delay.snapshot();
    for (le_ms, n) in buckets {
        #[allow(clippy::cast_precision_loss)] // bucket bounds are small
        let le = le_ms as f64 / 1000.0;
        let _ = writeln!(
            out,
            "pom_scheduler_start_delay_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "pom_scheduler_start_delay_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "pom_scheduler_start_delay_seconds_sum {sum}");
    let _ = writeln!(out, "pom_scheduler_start_delay_seconds_count {count}");
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
