//! docs/runbook.md has a section for every alert the agent can send, at the anchor its link
//! points to.
//!
//! An alert links to `runbook_base#anchor`, with the anchor from
//! [`AlertKind::runbook_anchor`] (and `#testing-alert-channels` for `pom alert test`). This test
//! reads the runbook and checks, for every kind in [`AlertKind::ALL`], that the anchor is defined
//! exactly once (as an explicit `<a id="…">`, `<a name="…">` or `{#…}`, or as the GitHub slug of
//! a heading), and that the section it opens names the kind. It also checks that the runbook's
//! own `(#…)` links resolve, and that the checker rejects a runbook with a broken anchor.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::AlertKind;
use pom::alert::channel::test_alert;

const RUNBOOK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/runbook.md");

/// The alert kinds of the contract (DESIGN.md, "Alerting").
const CONTRACT_KINDS: [&str; 14] = [
    "health",
    "tls_expiry",
    "tls_failed",
    "route",
    "dns",
    "whois_expiry",
    "cors",
    "latency_drift",
    "heartbeat_stale",
    "peer_missing",
    "monitoring_offline",
    "config_drift",
    "clock_skew",
    "mesh_cert_expiry",
];

/// The anchor `pom alert test` links to.
const TEST_ALERT_ANCHOR: &str = "testing-alert-channels";

fn runbook() -> String {
    std::fs::read_to_string(RUNBOOK_PATH)
        .unwrap_or_else(|e| panic!("cannot read the runbook at {RUNBOOK_PATH}: {e}"))
}

/// The position of a variant in [`AlertKind::ALL`]'s order. The match has no wildcard, so a new
/// variant does not compile here until it is listed, and then must be in `ALL` too.
fn variant_index(kind: AlertKind) -> usize {
    match kind {
        AlertKind::Health => 0,
        AlertKind::TlsExpiry => 1,
        AlertKind::TlsFailed => 2,
        AlertKind::Route => 3,
        AlertKind::Dns => 4,
        AlertKind::WhoisExpiry => 5,
        AlertKind::Cors => 6,
        AlertKind::LatencyDrift => 7,
        AlertKind::HeartbeatStale => 8,
        AlertKind::PeerMissing => 9,
        AlertKind::MonitoringOffline => 10,
        AlertKind::ConfigDrift => 11,
        AlertKind::ClockSkew => 12,
        AlertKind::MeshCertExpiry => 13,
    }
}

#[test]
fn every_alert_kind_is_listed_and_parses_from_its_contract_name() {
    let from_names: Vec<AlertKind> = CONTRACT_KINDS
        .iter()
        .map(|name| {
            serde_json::from_value(serde_json::Value::from(*name))
                .unwrap_or_else(|e| panic!("alert kind {name:?} does not parse: {e}"))
        })
        .collect();
    assert_eq!(
        from_names,
        AlertKind::ALL,
        "ALL is the contract list, in order"
    );
    assert_eq!(AlertKind::ALL.len(), CONTRACT_KINDS.len());
    let indices: BTreeSet<usize> = AlertKind::ALL.into_iter().map(variant_index).collect();
    assert_eq!(
        indices,
        (0..AlertKind::ALL.len()).collect(),
        "every variant is in AlertKind::ALL, once"
    );
    for kind in AlertKind::ALL {
        assert_eq!(
            serde_json::to_value(kind).expect("serializes"),
            serde_json::Value::from(kind.as_str())
        );
    }
}

#[test]
fn anchors_are_unique_url_fragments() {
    let anchors: BTreeSet<&str> = AlertKind::ALL.iter().map(|k| k.runbook_anchor()).collect();
    assert_eq!(anchors.len(), AlertKind::ALL.len(), "anchors are unique");
    assert!(!anchors.contains(TEST_ALERT_ANCHOR));
    for anchor in anchors {
        assert!(
            !anchor.is_empty()
                && anchor
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{anchor:?} is not a plain lowercase slug"
        );
    }
}

#[test]
fn the_runbook_has_a_section_at_every_anchor_alerts_link_to() {
    let problems = check(&runbook());
    assert!(
        problems.is_empty(),
        "{RUNBOOK_PATH}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_test_alert_links_to_its_section() {
    for base in [
        "https://git.example.com/ops/pom/src/branch/main/docs/runbook.md",
        "https://git.example.com/ops/pom/src/branch/main/docs/runbook.md#",
    ] {
        let alert = test_alert("astra", base);
        let fragment = alert
            .runbook
            .strip_prefix(base.trim_end_matches('#'))
            .and_then(|rest| rest.strip_prefix('#'))
            .unwrap_or_else(|| panic!("{:?} is not {base}#…", alert.runbook));
        assert_eq!(fragment, TEST_ALERT_ANCHOR);
    }
    let text = runbook();
    let doc = Doc::parse(&text);
    assert_eq!(
        doc.anchors.get(TEST_ALERT_ANCHOR).map(Vec::len),
        Some(1),
        "the runbook defines #{TEST_ALERT_ANCHOR} once"
    );
}

#[test]
fn the_checker_catches_a_broken_anchor() {
    let good = runbook();
    assert!(check(&good).is_empty());

    // A renamed heading: its slug changes, so alerts would link to nothing.
    let renamed = good.replacen("### Peer missing", "### Peer is missing", 1);
    assert_ne!(
        renamed, good,
        "the runbook has a `### Peer missing` heading"
    );
    let problems = check(&renamed);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("peer_missing") && p.contains("#peer-missing")),
        "{problems:?}"
    );

    // The anchor still exists, but its section no longer names the kind it is for.
    let wrong_section = good.replace("`clock_skew`", "clock skew");
    assert_ne!(wrong_section, good);
    assert!(
        check(&wrong_section)
            .iter()
            .any(|p| p.contains("clock_skew")),
        "a section that does not name its kind"
    );
}

#[test]
fn headings_slug_like_github_and_code_is_not_markup() {
    assert_eq!(slug("Health status change"), "health-status-change");
    assert_eq!(
        slug("`health`: Health status change"),
        "health-health-status-change"
    );
    assert_eq!(slug("What's up? (v2.0)"), "whats-up-v20");
    assert_eq!(
        slug("snake_case and kebab-case"),
        "snake_case-and-kebab-case"
    );
    assert_eq!(slug("[Link](https://x.example/#a) text"), "link-text");
    assert_eq!(slug("<a id=\"x\"></a>Title"), "title");

    let doc = Doc::parse(
        "# A\n\n```sh\n# not a heading\n<a id=\"fenced\"></a>\n```\n\n\
         Text with `<a id=\"in-code\">` in it.\n\n<a id=\"explicit\"></a>\n## A\n\n\
         ### Custom {#custom}\n",
    );
    let ids: Vec<&str> = doc.anchors.keys().map(String::as_str).collect();
    assert_eq!(ids, ["a", "a-1", "custom", "explicit"]);
}

/// Every problem with `doc` as a runbook, one line each.
fn check(doc: &str) -> Vec<String> {
    let parsed = Doc::parse(doc);
    let mut problems = Vec::new();
    for kind in AlertKind::ALL {
        let anchor = kind.runbook_anchor();
        match parsed.anchors.get(anchor).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!(
                "alert kind {kind}: no section at #{anchor} (an explicit <a id=\"{anchor}\"></a> \
                 or a heading whose GitHub slug is {anchor})"
            )),
            Some([line]) => {
                let section = parsed.section_from(*line);
                if !section.contains(&format!("`{kind}`")) {
                    problems.push(format!(
                        "alert kind {kind}: the section at #{anchor} (line {}) never names `{kind}`",
                        line + 1
                    ));
                }
            }
            Some(lines) => problems.push(format!(
                "alert kind {kind}: #{anchor} is defined {} times (lines {:?})",
                lines.len(),
                lines.iter().map(|l| l + 1).collect::<Vec<_>>()
            )),
        }
    }
    match parsed.anchors.get(TEST_ALERT_ANCHOR).map(Vec::as_slice) {
        Some([line]) if parsed.section_from(*line).contains("pom alert test") => {}
        _ => problems.push(format!(
            "test alerts: no single section at #{TEST_ALERT_ANCHOR} that names `pom alert test`"
        )),
    }
    for (line, target) in &parsed.links {
        if !parsed.anchors.contains_key(target) {
            problems.push(format!(
                "line {}: link to #{target}, which is not defined",
                line + 1
            ));
        }
    }
    problems
}

/// What the checker needs of a Markdown document.
#[derive(Debug)]
struct Doc<'a> {
    lines: Vec<&'a str>,
    /// Headings outside code: (line, level).
    headings: Vec<(usize, usize)>,
    /// Every anchor and the lines that define it.
    anchors: BTreeMap<String, Vec<usize>>,
    /// In-page links `](#target)`: (line, target).
    links: Vec<(usize, String)>,
}

impl<'a> Doc<'a> {
    fn parse(text: &'a str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let mut doc = Self {
            lines: lines.clone(),
            headings: Vec::new(),
            anchors: BTreeMap::new(),
            links: Vec::new(),
        };
        let mut fence: Option<(char, usize)> = None;
        let mut slugs: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in lines.iter().enumerate() {
            let line = raw.trim_start();
            let indent = raw.len() - line.len();
            if indent < 4
                && let Some(open) = fence_of(line)
            {
                match fence {
                    None => fence = Some(open),
                    Some((c, n)) if open.0 == c && open.1 >= n && is_bare_fence(line) => {
                        fence = None;
                    }
                    Some(_) => {}
                }
                continue;
            }
            if fence.is_some() {
                continue;
            }
            let text = strip_code_spans(line);
            for id in explicit_ids(&text) {
                doc.anchors.entry(id).or_default().push(i);
            }
            for target in in_page_links(&text) {
                doc.links.push((i, target));
            }
            if indent >= 4 {
                continue;
            }
            if let Some((level, title)) = heading(line) {
                doc.headings.push((i, level));
                let (title, custom) = split_custom_id(title);
                let id = match custom {
                    Some(id) => id.to_owned(),
                    None => unique(&mut slugs, slug(title)),
                };
                doc.anchors.entry(id).or_default().push(i);
            }
        }
        doc
    }

    /// The text from `line` to the end of the section of the first heading at or after it.
    fn section_from(&self, line: usize) -> String {
        let end = match self.headings.iter().find(|(l, _)| *l >= line) {
            Some(&(start, level)) => self
                .headings
                .iter()
                .find(|(l, lv)| *l > start && *lv <= level)
                .map_or(self.lines.len(), |(l, _)| *l),
            None => self.lines.len(),
        };
        self.lines[line..end].join("\n")
    }
}

/// A code fence opening or closing on `line`: its character and length.
fn fence_of(line: &str) -> Option<(char, usize)> {
    let c = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = line.chars().take_while(|x| *x == c).count();
    (n >= 3).then_some((c, n))
}

/// Whether a fence line has nothing after its fence characters (only such a line closes).
fn is_bare_fence(line: &str) -> bool {
    line.trim_start_matches(['`', '~']).trim().is_empty()
}

/// An ATX heading: its level and its text, without the closing `#`s.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let mut text = rest.trim();
    let unclosed = text.trim_end_matches('#');
    if unclosed.is_empty() || unclosed.ends_with([' ', '\t']) {
        text = unclosed.trim_end();
    }
    Some((level, text))
}

/// A heading's `{#id}` suffix, which replaces its slug.
fn split_custom_id(title: &str) -> (&str, Option<&str>) {
    if let Some(open) = title.rfind("{#")
        && title.ends_with('}')
    {
        let id = &title[open + 2..title.len() - 1];
        if !id.is_empty() && !id.contains(char::is_whitespace) {
            return (title[..open].trim_end(), Some(id));
        }
    }
    (title, None)
}

/// The GitHub slug of a heading's text: its rendered text lowercased, every character but
/// letters, digits, `_`, `-` and spaces removed, spaces turned into `-`.
fn slug(title: &str) -> String {
    let rendered = strip_html_tags(&strip_link_targets(title)).replace('`', "");
    rendered
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The slug, with `-1`, `-2`, … appended when an earlier heading took it (as GitHub does).
fn unique(seen: &mut BTreeMap<String, usize>, slug: String) -> String {
    let mut candidate = slug.clone();
    while let Some(n) = seen.get(&candidate).copied() {
        let next = seen.entry(slug.clone()).or_insert(n);
        *next += 1;
        candidate = format!("{slug}-{next}");
    }
    seen.insert(candidate.clone(), 0);
    candidate
}

/// `[text](url)` → `text`; images keep their alt text.
fn strip_link_targets(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("](") {
        let Some(close) = rest[open..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out.replace(['[', ']'], "").replace('!', "")
}

fn strip_html_tags(text: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// `line` with the contents of its code spans removed (their delimiters stay): markup inside
/// code is shown, not rendered.
fn strip_code_spans(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|b| **b == b'`').count();
        let after = i + run;
        // The closing run: the same number of backticks, not part of a longer run.
        let mut j = after;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let n = bytes[j..].iter().take_while(|b| **b == b'`').count();
                if n == run {
                    close = Some(j);
                    break;
                }
                j += n;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                out.push_str(&line[copied..after]);
                copied = end;
                i = end + run;
            }
            None => i = after,
        }
    }
    out.push_str(&line[copied..]);
    out
}

/// The ids of `<a id="…">` / `<a name="…">` tags in `text`.
fn explicit_ids(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<a ") {
        let tag_end = rest[start..].find('>').map_or(rest.len(), |e| start + e);
        let tag = &rest[start..tag_end];
        for attr in ["id=", "name="] {
            let mut search = tag;
            while let Some(at) = search.find(attr) {
                let preceded = search[..at].ends_with(char::is_whitespace);
                let value = &search[at + attr.len()..];
                if preceded
                    && let Some(quote) = value.chars().next().filter(|q| matches!(q, '"' | '\''))
                    && let Some(len) = value[1..].find(quote)
                {
                    ids.push(value[1..=len].to_owned());
                }
                search = &search[at + attr.len()..];
            }
        }
        rest = &rest[tag_end..];
    }
    ids
}

/// The targets of in-page links `](#target)` in `text`.
fn in_page_links(text: &str) -> Vec<String> {
    text.match_indices("](#")
        .filter_map(|(at, m)| {
            let rest = &text[at + m.len()..];
            rest.find(')').map(|end| rest[..end].to_owned())
        })
        .collect()
}
