//! Runs a set of checks once, concurrently, under a concurrency bound, and returns their
//! outcomes in the order of the checks. `pom check` uses it; the daemon's scheduler will run
//! single probes through the same [`probe::run`].

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::plan::CheckSpec;
use crate::probe::{self, Outcome, ProbeContext};

/// Runs every check once, at most `concurrency` at a time.
///
/// A probe task that panics (a bug, never an answer from outside: probes do not panic on input)
/// is reported as an `error` outcome for its check, not lost.
pub async fn run_once(
    checks: &[CheckSpec],
    ctx: &Arc<ProbeContext>,
    concurrency: usize,
) -> Vec<Outcome> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    for (index, check) in checks.iter().enumerate() {
        let check = check.clone();
        let ctx = ctx.clone();
        let permits = permits.clone();
        let handle = tasks.spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail; if it did, run anyway.
            let _permit = permits.acquire_owned().await.ok();
            (index, probe::run(&check, &ctx).await)
        });
        ids.insert(handle.id(), index);
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; checks.len()];
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, (index, outcome))) => outcomes[index] = Some(outcome),
            Err(e) => {
                if let Some(&index) = ids.get(&e.id()) {
                    tracing::error!(check = %checks[index].id, "probe task failed: {e}");
                    outcomes[index] = Some(Outcome::error(format!(
                        "internal error: the probe task failed ({e})"
                    )));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::error("internal error: no outcome")))
        .collect()
}
