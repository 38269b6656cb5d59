//! `pom run`: the daemon under a signal loop. SIGTERM or SIGINT drains within
//! [`DRAIN`] and exits 0; SIGHUP reloads the config (a bad one is rejected, the old one keeps
//! running). Under systemd it sends READY once the API listens and WATCHDOG while the
//! scheduler and the monitor are alive. (No RELOADING: it needs MONOTONIC_USEC, and the unit is
//! `Type=notify`, for which a reload is just a signal.)

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use super::ConfigArg;
use crate::daemon::{Daemon, Env};
use crate::systemd::{self, Notifier};

/// How long shutdown may take.
pub(super) const DRAIN: Duration = Duration::from_secs(10);

pub(super) async fn run(args: ConfigArg) -> anyhow::Result<u8> {
    let env: Env = Arc::new(|name: &str| std::env::var(name).ok());
    let notifier = Notifier::from_env(&*env);
    let watchdog = systemd::watchdog_interval(&*env);
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    let mut daemon = Daemon::start(&args.config, env)
        .await
        .with_context(|| format!("cannot start the agent with {}", args.config.display()))?;
    notifier.notify("READY=1\nSTATUS=monitoring");
    let period = watchdog.unwrap_or(Duration::from_secs(3600));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                match daemon.reload().await {
                    Ok(()) => tracing::info!(config = %args.config.display(), "reloaded"),
                    Err(e) => tracing::error!(config = %args.config.display(),
                        "reload rejected; the previous config keeps running: {e}"),
                }
                notifier.notify("READY=1");
            }
            _ = ping.tick(), if watchdog.is_some() => {
                // Stale by more than a few rounds means something is stuck: no ping, and
                // systemd restarts us.
                if daemon.is_alive(Duration::from_secs(10)) {
                    notifier.notify("WATCHDOG=1");
                } else {
                    tracing::error!("the scheduler or the monitor is stuck; not pinging the watchdog");
                }
            }
        }
    }
    tracing::info!("stopping");
    notifier.notify("STOPPING=1");
    daemon.shutdown(DRAIN).await;
    tracing::info!("stopped");
    Ok(0)
}
