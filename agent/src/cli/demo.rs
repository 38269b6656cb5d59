//! `pom demo`: a three-agent mesh on loopback that shows quorum alerting at work, with no setup
//! and no network. The demo itself lives in [`crate::demo`]; this maps its outcome to an exit
//! code.

use super::{DemoArgs, Output};
use crate::demo::{self, DemoError, Format, Options};

/// Exit code when the story did not go as told (the failure is already printed).
const EXIT_STORY_FAILED: u8 = 1;
/// Exit code after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

pub(super) async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let format = match args.output {
        Output::Table => Format::Text,
        Output::Json => Format::Json,
    };
    match demo::run(Options { format }).await {
        Ok(()) => Ok(0),
        Err(DemoError::Interrupted) => Ok(EXIT_INTERRUPTED),
        Err(e) if e.is_story() => Ok(EXIT_STORY_FAILED),
        Err(e) => Err(anyhow::Error::new(e).context("the demo could not run")),
    }
}
