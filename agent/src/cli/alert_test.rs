//! `pom alert test [--channel NAME]`: sends a clearly labelled test alert through each channel,
//! directly (not through the outbox), and reports what happened. Exit 0 when every channel took
//! it, 2 when one failed, 3 for a bad config or an unknown channel.

use comfy_table::Table;

use super::{AlertTestArgs, EXIT_INTERNAL};
use crate::alert::channel::{Channel, test_alert};
use crate::config;

pub(super) async fn run(args: AlertTestArgs) -> anyhow::Result<u8> {
    let config = match config::load(&args.config.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return Ok(EXIT_INTERNAL);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let selected: Vec<_> = config
        .alerts
        .channels
        .iter()
        .filter(|c| args.channel.as_ref().is_none_or(|n| n == c.name()))
        .collect();
    if selected.is_empty() {
        eprintln!(
            "{}",
            match &args.channel {
                Some(name) => format!("no channel named {name:?} in [[alerts.channels]]"),
                None => "no channels configured in [[alerts.channels]]".to_owned(),
            }
        );
        return Ok(EXIT_INTERNAL);
    }
    let alert = test_alert(&config.agent.name, &config.alerts.runbook_base);
    let mut table = Table::new();
    table.set_header(["channel", "type", "result"]);
    let mut code = 0;
    for entry in selected {
        let (kind, result) = match Channel::from_config(entry, &env) {
            Ok(channel) => (
                channel.kind(),
                channel
                    .deliver(&alert)
                    .await
                    .map_err(|e| e.message().to_owned()),
            ),
            Err(e) => ("-", Err(e.to_string())),
        };
        let shown = match result {
            Ok(()) => "delivered".to_owned(),
            Err(e) => {
                code = 2;
                format!("FAILED: {e}")
            }
        };
        table.add_row([entry.name().to_owned(), kind.to_owned(), shown]);
    }
    println!("{table}");
    Ok(code)
}
