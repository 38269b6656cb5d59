//! `pom check`: run every probe once from this host and print the results.

use std::sync::Arc;

use anyhow::bail;
use mesh_proto::Status;

use super::output::{self, Row};
use super::{CheckArgs, EXIT_INTERNAL, Output};
use crate::config::{self, Config};
use crate::probe::ProbeContext;
use crate::{plan, runner};

pub(super) async fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let config = match config::load(&args.config.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return Ok(EXIT_INTERNAL);
        }
    };
    for name in &args.target {
        if !config.targets.iter().any(|t| &t.name == name) {
            eprintln!(
                "pom: no target named {name:?} in {}",
                args.config.config.display()
            );
            return Ok(EXIT_INTERNAL);
        }
    }
    let concurrency = args
        .concurrency
        .map_or(config.agent.max_concurrent_probes, usize::from);
    let worst = check_and_print(&config, &args.target, concurrency, args.output).await?;
    Ok(worst.nagios_code())
}

/// Runs the checks of `targets` (all when empty) once and prints them; returns the worst status.
pub(super) async fn check_and_print(
    config: &Config,
    targets: &[String],
    concurrency: usize,
    format: Output,
) -> anyhow::Result<Status> {
    let mut checks = plan::build(config)?;
    if !targets.is_empty() {
        checks.retain(|c| targets.iter().any(|t| t == c.id.target()));
    }
    if checks.is_empty() {
        bail!("nothing to check");
    }
    let outcomes = runner::run_once(&checks, &Arc::new(ProbeContext::default()), concurrency).await;
    let rows: Vec<Row<'_>> = checks
        .iter()
        .zip(&outcomes)
        .map(|(check, outcome)| Row {
            id: &check.id,
            outcome,
        })
        .collect();
    output::print(&rows, format)?;
    Ok(Status::worst(outcomes.iter().map(|o| o.status)))
}
