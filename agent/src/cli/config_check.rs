//! `pom config check`: parse and validate, print every problem, exit 3 if there is one.

use crate::config;

use super::{ConfigArg, EXIT_INTERNAL};

pub(super) fn run(args: &ConfigArg) -> anyhow::Result<u8> {
    match config::load(&args.config) {
        Ok(config) => {
            let checks: usize = config
                .targets
                .iter()
                .map(|t| t.checks().map_or(0, |c| c.len()))
                .sum();
            println!(
                "{}: ok ({} targets, {checks} checks, {} heartbeats, {} channels{})",
                args.config.display(),
                config.targets.len(),
                config.heartbeats.len(),
                config.alerts.channels.len(),
                config.mesh.as_ref().map_or_else(
                    || ", no mesh".to_owned(),
                    |m| format!(", {} peers", m.peers.len())
                ),
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(EXIT_INTERNAL)
        }
    }
}
