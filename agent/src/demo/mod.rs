//! `pom demo`: a three-agent mesh on loopback that tells what it does, live.
//!
//! The demo makes a mesh CA and a certificate per agent ([`crate::pki`]), writes three configs
//! and starts three real `pom run` processes of this executable (`astra`, `edge`, `vps`). In
//! this process it runs what they watch ([`scene`]): two sites, `shop` and `blog`, and a webhook
//! sink that prints every alert as it arrives. Each agent reaches each peer through a UDP relay
//! of the demo ([`relay`]), so the demo can cut one agent off without touching the host's
//! network: the relays drop its datagrams and the sites stop answering its probes.
//!
//! Then it plays the story, narrating from the agents' own API (`/api/mesh`, `/api/status`)
//! and from what reaches the sink:
//! 1. the agents connect;
//! 2. `shop` goes down: the quorum confirms it, and exactly one `firing` is sent;
//! 3. `shop` recovers: exactly one `resolved`;
//! 4. `vps` is cut off: the others page `peer_missing` once; `vps` finds itself isolated and
//!    nobody sends a false alert about the sites;
//! 5. `vps` is back: `peer_missing` resolves, and `vps` reports its local outage with its time
//!    range;
//! 6. a tally of every alert received.
//!
//! The cut and the return each happen in one step, as a real network failure would: the relays
//! and the sites stop (or start again) serving vps at the same moment.
//!
//! Every step waits for what it expects by polling, with a deadline ([`STEP_DEADLINE`]); an
//! alert the story does not expect fails the demo at once. Nothing but loopback is used, and
//! the agents are killed on every way out (`agents::Agents`).

mod agents;
pub mod narrator;
pub mod relay;
pub mod scene;
mod story;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

pub use self::narrator::Format;
use self::narrator::Narrator;

/// The agents, in name order: the first is the notifier while the mesh is whole.
pub const AGENTS: [&str; 3] = ["astra", "edge", "vps"];
/// How long any one step of the story may take.
pub const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// How often the demo looks at the agents and the sink.
const POLL: Duration = Duration::from_millis(50);
/// Probe runs each agent makes while the demo watches for alerts that must not come: about
/// 4 s at two checks a second, more than the mesh's takeover window (3 s) in which a second
/// agent would send a page nobody claimed.
const QUIET_RUNS: u64 = 8;

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file or process operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A local server or relay could not listen.
    #[error("cannot listen on loopback: {0}")]
    Listen(#[source] std::io::Error),
    /// The mesh certificates could not be made.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// Something else the demo needs could not be set up.
    #[error("{0}")]
    Setup(String),
    /// An agent process ended during the story.
    #[error("agent {name} exited ({status}); the end of its log:\n{log}")]
    AgentExited {
        /// The agent.
        name: String,
        /// How it ended.
        status: ExitStatus,
        /// Its last log lines.
        log: String,
    },
    /// A step of the story did not happen in time.
    #[error("expected {0} within {secs}s; it did not happen", secs = STEP_DEADLINE.as_secs())]
    Expected(String),
    /// Something happened that the story says must not.
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

impl DemoError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// Whether the story went wrong (the mesh did not behave as told), rather than the demo
    /// being unable to run.
    pub fn is_story(&self) -> bool {
        matches!(
            self,
            Self::AgentExited { .. } | Self::Expected(_) | Self::Unexpected(_)
        )
    }
}

/// How the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How the story is printed.
    pub format: Format,
}

/// Runs the demo to its end. On a failed story the agents' directory (configs, logs) is kept
/// and its path printed.
pub async fn run(options: Options) -> Result<(), DemoError> {
    let narrator = Arc::new(Narrator::new(options.format));
    let exe = std::env::current_exe()
        .map_err(|e| DemoError::Setup(format!("cannot find this executable: {e}")))?;
    let dir = tempfile::Builder::new()
        .prefix("pom-demo-")
        .tempdir()
        .map_err(|e| DemoError::io("create", &std::env::temp_dir(), e))?;
    // The story owns the agents: whichever branch ends first, the other is dropped, and with
    // it the story, which kills them. The signal comes first: on Ctrl-C in a terminal the
    // agents get SIGINT too, and their exit must not pass for a failed story.
    let result = tokio::select! {
        biased;
        () = interrupted() => Err(DemoError::Interrupted),
        result = story::story(narrator.clone(), &exe, dir.path()) => result,
    };
    match &result {
        Ok(()) => {}
        Err(DemoError::Interrupted) => narrator.line("Interrupted: the agents are stopped."),
        Err(e) if e.is_story() => {
            narrator.fail(&e.to_string());
            let kept = dir.keep();
            narrator.line(&format!(
                "The agents' configs and logs are kept in {}",
                kept.display()
            ));
        }
        Err(_) => {} // the demo could not run; the caller says why
    }
    result
}

/// Resolves on Ctrl-C or SIGTERM. If the handlers cannot be installed, never: the demo still
/// ends by itself.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return std::future::pending().await;
        };
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                if result.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
