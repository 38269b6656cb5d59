//! The demo's voice: one line per event on stdout, stamped with the time since the demo began,
//! as text for people or as JSON lines for scripts.
//!
//! Everything the demo prints goes through one [`Narrator`], shared by the story and the
//! webhook sink, so lines from both come out whole and in order.

use std::io::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How the story is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lines for people.
    Text,
    /// One JSON object per line: `{"t": seconds, "kind": …, "text": …}`; alerts carry their
    /// webhook payload as `alert`.
    Json,
}

/// Prints the story. See the [module docs](self).
#[derive(Debug)]
pub struct Narrator {
    start: Instant,
    format: Format,
    out: Mutex<()>,
}

impl Narrator {
    /// A narrator whose clock starts now.
    pub fn new(format: Format) -> Self {
        Self {
            start: Instant::now(),
            format,
            out: Mutex::new(()),
        }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// A heading: the start of an act.
    pub fn act(&self, number: u32, title: &str) {
        match self.format {
            Format::Text => self.print(&format!("\n{number}. {title}")),
            Format::Json => self.json("act", title, None),
        }
    }

    /// A plain line that is not an event (the introduction, the summary).
    pub fn line(&self, text: &str) {
        match self.format {
            Format::Text => self.print(text),
            Format::Json => self.json("info", text, None),
        }
    }

    /// Something that happened.
    pub fn say(&self, text: &str) {
        match self.format {
            Format::Text => self.print(&format!("{}  {text}", self.stamp())),
            Format::Json => self.json("event", text, None),
        }
    }

    /// An alert the webhook sink received.
    pub fn alert(&self, alert: &Value) {
        let text = describe_alert(alert);
        match self.format {
            Format::Text => self.print(&format!("{}  >> webhook: {text}", self.stamp())),
            Format::Json => self.json("alert", &text, Some(alert.clone())),
        }
    }

    /// What went wrong, when the story does not go as told.
    pub fn fail(&self, text: &str) {
        match self.format {
            Format::Text => self.print(&format!("{}  FAILED: {text}", self.stamp())),
            Format::Json => self.json("failed", text, None),
        }
    }

    fn stamp(&self) -> String {
        format!("[{:5.1}s]", self.elapsed().as_secs_f64())
    }

    fn json(&self, kind: &str, text: &str, alert: Option<Value>) {
        let t = (self.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        let mut line = json!({ "t": t, "kind": kind, "text": text });
        if let (Some(alert), Some(obj)) = (alert, line.as_object_mut()) {
            obj.insert("alert".into(), alert);
        }
        self.print(&line.to_string());
    }

    fn print(&self, line: &str) {
        let _guard = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`pom demo | head`) must not stop the demo, which cleans up after
        // itself; the lines are simply lost.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

/// One line about an alert: event, check, sender, confirmers, summary.
pub fn describe_alert(alert: &Value) -> String {
    let text = |key: &str| alert[key].as_str().unwrap_or("?").to_owned();
    let confirmed: Vec<&str> = alert["confirmed_by"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{event} {check}, sent by {sent_by}, confirmed by {confirmed} ({n} of {total} agents): {summary}",
        event = text("event").to_uppercase(),
        check = text("check"),
        sent_by = text("sent_by"),
        confirmed = confirmed.join(", "),
        n = confirmed.len(),
        total = alert["agents_total"],
        summary = text("summary"),
    )
}
