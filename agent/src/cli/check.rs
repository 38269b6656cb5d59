//! `pom check`: run every probe once from this host and print the results.

use std::sync::Arc;

use anyhow::bail;
use mesh_proto::Status;

use super::output::{self, Row};
use super::{CheckArgs, EXIT_INTERNAL};
use crate::probe::ProbeContext;
use crate::{config, plan, runner};

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
    let mut checks = plan::build(&config)?;
    if !args.target.is_empty() {
        checks.retain(|c| args.target.iter().any(|t| t == c.id.target()));
    }
    if checks.is_empty() {
        bail!("nothing to check");
    }
    let concurrency = args
        .concurrency
        .unwrap_or(config.agent.max_concurrent_probes);
    let outcomes = runner::run_once(&checks, &Arc::new(ProbeContext::default()), concurrency).await;
    let rows: Vec<Row<'_>> = checks
        .iter()
        .zip(&outcomes)
        .map(|(check, outcome)| Row {
            id: &check.id,
            outcome,
        })
        .collect();
    output::print(&rows, args.output)?;
    Ok(Status::worst(outcomes.iter().map(|o| o.status)).nagios_code())
}
