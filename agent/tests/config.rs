//! Config loading: every kind of bad file names the right `file:line:column`, and
//! `pom config check` exits 3.

use std::process::Command;

use pom::config::{self, ConfigError, Quorum};

/// Parses `text` and returns the one-per-line error report.
fn errors(text: &str) -> String {
    match config::parse(text, "pom.toml", None) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e @ ConfigError::Invalid { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[track_caller]
fn assert_error(text: &str, at: &str, needle: &str) {
    let report = errors(text);
    let line = report
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no error containing {needle:?} in:\n{report}"));
    assert!(
        line.starts_with(&format!("pom.toml:{at}: ")),
        "expected at {at}: {line}"
    );
}

const TARGET: &str = "[[targets]]\nname = \"site\"\nurl = \"https://site.example\"\n";

#[test]
fn the_design_example_parses_with_its_values_and_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/pom.toml");
    let config = config::load(std::path::Path::new(path)).expect("example config");
    assert_eq!(config.agent.name, "hetzner");
    let mesh = config.mesh.expect("mesh");
    assert_eq!(mesh.quorum, Quorum::Majority);
    assert_eq!(mesh.peers[0].name, "astra");
    let target = &config.targets[0];
    let ids: Vec<String> = target
        .checks()
        .unwrap()
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "makenot.work/health",
            "makenot.work/tls",
            "makenot.work/route:/login",
            "makenot.work/route:/api/pilot-request",
            "makenot.work/dns:A",
            "makenot.work/whois",
            "makenot.work/cors",
        ]
    );
    let tls = target.tls.as_ref().unwrap();
    assert_eq!(tls.interval, std::time::Duration::from_secs(3600));
    assert_eq!(tls.timeout, std::time::Duration::from_secs(10));
    assert_eq!(
        target.routes[0].interval,
        std::time::Duration::from_secs(300)
    );
    assert_eq!(config.alerts.cooldown, std::time::Duration::from_secs(300));
    assert_eq!(
        config.heartbeats[0].max_age,
        std::time::Duration::from_secs(7 * 24 * 3600)
    );
}

#[test]
fn a_minimal_file_gets_the_contract_defaults() {
    let config = config::parse(&format!("{TARGET}[targets.health]\n"), "pom.toml", None).unwrap();
    assert!(config.mesh.is_none());
    assert_eq!(config.agent.api_listen.to_string(), "127.0.0.1:9100");
    assert_eq!(config.agent.api_token_env, "POM_API_TOKEN");
    let health = config.targets[0].health.as_ref().unwrap();
    assert_eq!((health.path.as_str(), health.method.as_str()), ("/", "GET"));
    assert_eq!(health.interval, std::time::Duration::from_secs(300));
    assert_eq!(
        config.alerts.repeat_interval,
        std::time::Duration::from_secs(4 * 3600)
    );
}

#[test]
fn syntax_errors_point_at_the_spot() {
    assert_error(
        "[agent]\nname = \"a\nx = 1\n",
        "2:10",
        "invalid basic string",
    );
    assert_error(
        "[[targets]\nname = \"x\"\n",
        "1:11",
        "unclosed array table, expected `]`",
    );
}

#[test]
fn unknown_keys_are_errors() {
    assert_error(
        &format!("{TARGET}[targets.health]\nintervall = \"5m\"\n"),
        "5:1",
        "unknown field `intervall`",
    );
    assert_error("[agnet]\nname = \"a\"\n", "1:2", "unknown field `agnet`");
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_error(
        "[agent]\nname = 5\n",
        "2:8",
        "invalid type: integer `5`, expected a string",
    );
    assert_error(
        &format!("{TARGET}[targets.health]\nexpect_status = \"200\"\n"),
        "5:17",
        "expected a sequence",
    );
}

#[test]
fn durations_need_units() {
    assert_error(
        &format!("{TARGET}[targets.health]\ninterval = 300\n"),
        "5:12",
        "got the bare number 300: add a unit, e.g. \"300s\"",
    );
    assert_error(
        &format!("{TARGET}[targets.health]\ninterval = \"5 parsecs\"\n"),
        "5:12",
        "expected a duration such as \"30s\"",
    );
}

#[test]
fn bad_urls_and_regexes_are_reported_where_written() {
    assert_error(
        "[[targets]]\nname = \"a\"\nurl = \"not a url\"\n[targets.health]\n",
        "3:7",
        "relative URL without a base",
    );
    assert_error(
        "[[targets]]\nname = \"a\"\nurl = \"ftp://a.example\"\n[targets.health]\n",
        "3:7",
        "expected an http:// or https:// URL",
    );
    assert_error(
        &format!("{TARGET}[targets.health]\nexpect_body_regex = \"(unclosed\"\n"),
        "5:21",
        "expected a valid regex",
    );
}

#[test]
fn duplicate_names_and_ids_are_errors() {
    let two = format!("{TARGET}[targets.health]\n{TARGET}[targets.health]\n");
    assert_error(&two, "6:8", "duplicate target name \"site\"");
    let routes =
        format!("{TARGET}[[targets.routes]]\npath = \"/a\"\n[[targets.routes]]\npath = \"/a\"\n");
    assert_error(&routes, "6:1", "duplicate check id site/route:/a");
}

#[test]
fn timing_rules_are_enforced() {
    assert_error(
        &format!("{TARGET}[targets.health]\ninterval = \"10s\"\ntimeout = \"10s\"\n"),
        "6:11",
        "expected a timeout shorter than the interval (10s), got 10s",
    );
    assert_error(
        &format!("{TARGET}[targets.health]\ninterval = \"100ms\"\n"),
        "5:12",
        "expected an interval between 1s and 30days",
    );
    assert_error(
        &format!("{TARGET}[targets.tls]\ntimeout = \"0s\"\n"),
        "5:11",
        "expected a timeout between 1ms and 5m",
    );
}

#[test]
fn dependencies_must_exist_and_not_cycle() {
    let unknown = format!("{TARGET}depends_on = [\"edge\"]\n[targets.health]\n");
    assert_error(
        &unknown,
        "4:14",
        "depends_on names \"edge\", which is not a target",
    );
    let cycle = "[[targets]]\nname = \"a\"\nurl = \"http://a.example\"\ndepends_on = [\"b\"]\n[targets.tcp]\n\
                 [[targets]]\nname = \"b\"\nurl = \"http://b.example\"\ndepends_on = [\"a\"]\n[targets.health]\n";
    let cycle = cycle.replace("[targets.tcp]", "[[targets.tcp]]\nport = 22");
    let report = errors(&cycle);
    assert!(
        report.contains("depends_on forms a cycle: a -> b -> a")
            || report.contains("depends_on forms a cycle: b -> a -> b"),
        "{report}"
    );
}

#[test]
fn missing_required_values_and_empty_targets_are_errors() {
    assert_error(
        "[[targets]]\nurl = \"http://a.example\"\n",
        "1:1",
        "missing field `name`",
    );
    assert_error(TARGET, "1:1", "target \"site\" has no checks");
    assert_error(
        "[[targets]]\nname = \"a\"\n[targets.health]\n",
        "3:1",
        "a HTTP check needs the target's `url`",
    );
    assert_error(
        &format!("{TARGET}[[targets.dns]]\ntype = \"A\"\nnameserver = \"dns.example\"\n"),
        "6:14",
        "expected IP or IP:PORT",
    );
    assert_error(
        &format!("{TARGET}[[targets.dns]]\ntype = \"SRV\"\n"),
        "5:8",
        "unknown variant `SRV`",
    );
}

#[test]
fn mesh_and_channel_rules_are_enforced() {
    // The peer list may name this agent too (one file for every host); it is not counted twice.
    let mesh = format!(
        "[agent]\nname = \"edge\"\n[mesh]\nquorum = 3\n[[mesh.peers]]\nname = \"edge\"\naddr = \"10.0.0.1:9101\"\n[[mesh.peers]]\nname = \"vps\"\naddr = \"nowhere\"\n{TARGET}[targets.health]\n"
    );
    let report = errors(&mesh);
    assert!(
        report.contains("pom.toml:4:10: mesh.quorum: quorum 3 is more than the 2 agents"),
        "{report}"
    );
    assert!(
        report.contains("pom.toml:10:8: mesh.peers[1].addr: expected HOST:PORT"),
        "{report}"
    );
    assert_eq!(report.lines().count(), 2, "{report}");
    // In a mesh, names are certificate names: DNS names.
    let names = format!(
        "[agent]\nname = \"edge_1\"\n[mesh]\n[[mesh.peers]]\nname = \"vps box\"\naddr = \"10.0.0.1:9101\"\n{TARGET}[targets.health]\n"
    );
    let report = errors(&names);
    assert!(
        report.contains("agent.name: with [mesh], the agent name is a certificate name"),
        "{report}"
    );
    assert!(
        report.contains("mesh.peers[0].name: a peer name is a certificate name"),
        "{report}"
    );
    let hook = format!(
        "[[alerts.channels]]\nname = \"h\"\ntype = \"webhook\"\n{TARGET}[targets.health]\n"
    );
    assert_error(&hook, "1:1", "needs exactly one of `url` or `url_env`");
    let extra = format!(
        "[[alerts.channels]]\nname = \"h\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nbogus = 1\n{TARGET}[targets.health]\n"
    );
    assert_error(
        &extra,
        "1:1",
        "unknown field `bogus`, expected one of `name`, `url`, `url_env`",
    );
    let pager =
        format!("[[alerts.channels]]\nname = \"p\"\ntype = \"pager\"\n{TARGET}[targets.health]\n");
    assert_error(&pager, "3:8", "unknown variant `pager`");
    let secret = format!(
        "[[alerts.channels]]\nname = \"m\"\ntype = \"postmark\"\ntoken_env = \"my token\"\nfrom = \"a@b.c\"\nto = [\"x@y.z\"]\n{TARGET}[targets.health]\n"
    );
    assert_error(&secret, "4:13", "expected an environment variable name");
    let am = |refresh: &str| {
        format!(
            "[[alerts.channels]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\nrefresh = \"{refresh}\"\n{TARGET}[targets.health]\n"
        )
    };
    assert_error(&am("0s"), "5:11", "expected a refresh between 1s and 1h");
    assert_error(&am("2h"), "5:11", "got 2h");
    assert_error(&am("500ms"), "5:11", "got 500ms");
    assert!(config::parse(&am("30s"), "pom.toml", None).is_ok());
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = format!(
        "[agent]\nmax_concurrent_probes = 0\n{TARGET}depends_on = [\"x\"]\n[targets.health]\ntimeout = \"1h\"\n"
    );
    let report = errors(&text);
    assert_eq!(report.lines().count(), 3, "{report}");
}

fn pom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pom"))
}

#[test]
fn config_check_prints_locations_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pom.toml");
    std::fs::write(&path, format!("{TARGET}[targets.health]\ninterval = 300\n")).unwrap();
    let out = pom()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{}:5:12: expected a duration", path.display())),
        "{stderr}"
    );

    std::fs::write(&path, [0xffu8, 0xfe, b'\n']).unwrap();
    let out = pom()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":1:1: expected UTF-8 text"));

    let out = pom()
        .args(["config", "check", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[test]
fn config_check_accepts_the_example_and_resolves_relative_ca_files() {
    let out = pom()
        .args([
            "config",
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/pom.toml"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("ok (1 targets, 7 checks, 1 heartbeats, 2 channels, 1 peers)")
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pom.toml");
    std::fs::write(
        &path,
        format!("{TARGET}ca_file = \"ca.crt\"\n[targets.tls]\n"),
    )
    .unwrap();
    let out = pom()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":4:11: targets[0].ca_file: cannot read CA file")
            && stderr.contains("ca.crt"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("ca.crt"), "not a pem\n").unwrap();
    let out = pom()
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no PEM certificate"));
}

mod never_panics {
    use proptest::prelude::*;

    const EXAMPLE: &str = include_str!("../../deploy/examples/pom.toml");

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = pom::config::parse(&text, "fuzz.toml", None);
        }

        /// Deletes a slice of the example and splices arbitrary text in: near-valid files reach
        /// validation and the key-path locator, not only the TOML parser.
        #[test]
        fn on_mutations_of_the_example(start in 0usize..EXAMPLE.len(), len in 0usize..40, insert in "\\PC{0,12}") {
            let mut text = EXAMPLE.to_owned();
            let start = (0..=start).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let end = (start + len..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
            text.replace_range(start..end, &insert);
            if let Err(e) = pom::config::parse(&text, "fuzz.toml", None) {
                // Every problem is located somewhere inside the file.
                let lines = text.lines().count().max(1) + 1;
                for line in e.to_string().lines() {
                    let mut parts = line.splitn(4, ':');
                    prop_assert_eq!(parts.next(), Some("fuzz.toml"));
                    let n: usize = parts.next().and_then(|l| l.parse().ok()).expect("line number");
                    prop_assert!((1..=lines).contains(&n), "line {} of {}: {}", n, lines, line);
                }
            }
        }
    }
}
