//! The command line: argument definitions and the dispatch to each command.
//!
//! Exit codes follow the Nagios plugin convention (DESIGN.md, "CLI"): 0 all operational,
//! 1 some degraded, 2 some error or unreachable, 3 bad config or internal failure.

mod alert_test;
mod check;
mod config_check;
mod demo;
mod output;
mod pki;
mod remote;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for a bad config or an internal failure.
pub const EXIT_INTERNAL: u8 = 3;

/// PoM: monitor public services from several hosts, alert only when a quorum agrees.
#[derive(Debug, Parser)]
#[command(name = "pom", version, about, max_term_width = 100)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `key=value` lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: probe on schedule, keep history, serve the API, send alerts.
    Run(ConfigArg),
    /// Show every check's status, verdict and votes, from the local agent's API.
    Status(ApiArgs),
    /// Show the mesh: this agent and every peer, from the local agent's API.
    Mesh(ApiArgs),
    /// Push a ping to a push heartbeat (`[[heartbeats]]`) through the local agent's API.
    Heartbeat {
        /// The heartbeat's name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The mesh's certificate authority.
    Ca {
        /// What to do.
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Mesh certificates for agents.
    Cert {
        /// What to do.
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Work with alert channels.
    Alert {
        /// What to do.
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Run every probe once from this host, print the results, exit 0/1/2 (Nagios style).
    Check(CheckArgs),
    /// Work with the configuration file.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run a 3-agent mesh on loopback and tell what it does: a site goes down, the quorum
    /// confirms, one alert; an agent is cut off, no false alert; recovery. No setup, no network.
    Demo(DemoArgs),
}

/// `pom ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the mesh CA: DIR/ca.crt and DIR/ca.key (0600). Keep ca.key off the agents.
    Init {
        /// Where to write it.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// How long the CA is valid.
        #[arg(long, default_value_t = crate::pki::DEFAULT_CA_DAYS, value_name = "N")]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// `pom cert ...`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue an agent's certificate: OUT/ca.crt, OUT/node.crt and OUT/node.key (0600), the
    /// layout of /etc/pom/mesh/. NAME must equal the agent's `[agent] name`.
    Issue {
        /// The agent's name.
        name: String,
        /// The CA's directory (from `pom ca init`).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// Where to write the agent's files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How long the certificate is valid.
        #[arg(long, default_value_t = crate::pki::DEFAULT_NODE_DAYS, value_name = "N")]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// `pom alert ...`.
#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Send a labelled test alert through every channel (or one) and report what happened.
    Test(AlertTestArgs),
}

/// `pom alert test`.
#[derive(Debug, clap::Args)]
pub struct AlertTestArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this channel (its `name`).
    #[arg(long, value_name = "NAME")]
    pub channel: Option<String>,
}

/// How to reach the local agent's API.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The agent's API.
    #[arg(long, env = "POM_API", default_value = "http://127.0.0.1:9100")]
    pub api: String,
    /// The bearer token.
    #[arg(long, env = "POM_API_TOKEN", hide_env_values = true, hide = true)]
    pub token: Option<String>,
}

/// `pom config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate the config; print every problem as file:line:column; exit 3 if any.
    Check(ConfigArg),
}

/// The `--config` option shared by commands that read the config.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The config file [default: $POM_CONFIG, else /etc/pom/pom.toml].
    #[arg(
        long,
        short = 'c',
        env = "POM_CONFIG",
        default_value = "/etc/pom/pom.toml"
    )]
    pub config: PathBuf,
}

/// `pom check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only the checks of this target (repeatable).
    #[arg(long, short = 't', value_name = "NAME")]
    pub target: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// How many probes run at once, 1 to 1024 [default: [agent] max_concurrent_probes].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: Option<u16>,
}

/// `pom demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Output format: the story as text (`table`), or one JSON object per event
    /// (`{"t","kind","text"[,"alert"]}`).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for humans; colours only on a terminal.
    Table,
    /// The contract JSON: `{"results":[{"id","target","kind","status","latency_ms","detail"}]}`.
    Json,
}

/// Runs the command and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let daemon = matches!(cli.command, Command::Run(_));
    init_tracing(cli.log_format, if daemon { "info" } else { "warn" });
    // The one TLS provider for the whole process: ring (CRATES.md: never aws-lc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let code = match cli.command {
        Command::Run(args) => daemon_runtime().and_then(|rt| rt.block_on(run::run(args))),
        Command::Status(args) => runtime().and_then(|rt| rt.block_on(remote::status(args))),
        Command::Mesh(args) => runtime().and_then(|rt| rt.block_on(remote::mesh(args))),
        Command::Heartbeat { name, api } => {
            runtime().and_then(|rt| rt.block_on(remote::heartbeat(api, &name)))
        }
        Command::Ca {
            command: CaCommand::Init { dir, days, force },
        } => pki::init(&dir, days, force),
        Command::Cert {
            command:
                CertCommand::Issue {
                    name,
                    ca_dir,
                    out,
                    days,
                    force,
                },
        } => pki::issue(&name, &ca_dir, &out, days, force),
        Command::Alert {
            command: AlertCommand::Test(args),
        } => runtime().and_then(|rt| rt.block_on(alert_test::run(args))),
        Command::Check(args) => runtime().and_then(|rt| rt.block_on(check::run(args))),
        Command::Config {
            command: ConfigCommand::Check(args),
        } => config_check::run(&args),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pom: {e:#}");
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The daemon's runtime: one worker thread. Its work is a trickle of short I/O-bound probes
/// (1,000 checks at 10 s are 100 a second, each well under a millisecond of CPU), and with a
/// second worker most of its CPU went into waking and parking threads for each other
/// (docs/benchmarks.md). The database has its own thread and never runs here.
fn daemon_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pom-worker")
        .enable_all()
        .build()?)
}

fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
