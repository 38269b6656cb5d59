//! The daemon (`pom run`): starts every task of a long-running agent, reloads them, stops them.
//!
//! Tasks, each owning one thing (STYLE.md §4):
//! - **scheduler**: runs probes on time (`scheduler`), restarted with the new checks on reload;
//! - **monitor**: results → verdicts → pages (`monitor`), reconfigured in place on reload;
//! - **outbox**: delivers what is due (`alert::outbox`), restarted with the new channels;
//! - **store**: the SQLite thread (`store`);
//! - **api**: the HTTP API (`api`);
//! - **prune**: daily, keeps 30 days.
//!
//! A reload builds everything new from the file first and swaps only when all of it is valid,
//! so a bad config is rejected with its error and the old one keeps running. `[agent] name`,
//! `data_dir` and `api_listen` need a restart; a reload that changes them says so.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use mesh_proto::quorum::{LivenessPolicy, QuorumPolicy};
use mesh_proto::{AlertPolicy, CheckId, CheckKind, ConfigHash, DriftPolicy};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::alert::channel::{Channel, ChannelError};
use crate::alert::outbox::{Backoff, DeliveryIds, Outbox};
use crate::api::{self, AgentInfo, ApiState, Token};
use crate::board::Board;
use crate::clock::millis;
use crate::config::{self, Config, ConfigError};
use crate::mesh::tls::MeshTls;
use crate::mesh::{MeshSetup, Node};
use crate::monitor::{self, Command, Monitor, MonitorConfig};
use crate::plan::{self, PlanError};
use crate::probe::{self, ProbeContext};
use crate::scheduler::{self, ProbeResult, SchedulerStats};
use crate::store::{Store, StoreError, StoreHandle};

/// How long history is kept.
pub const RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// How often old history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(86_400);
/// Probe results that may wait for the monitor before the scheduler drops them.
const RESULTS_QUEUE: usize = 8192;
/// Delivery reports waiting for the monitor; beyond that they are dropped (a claim then stays
/// `sending` in the mesh, which holds the page: no duplicate, no loss).
const DELIVERY_REPORTS: usize = 1024;

/// The process environment, passed in (tests never change their own).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Why the daemon could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The checks could not be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A channel could not be built (a missing secret, a bad URL).
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mesh certificates are unusable.
    #[error(transparent)]
    MeshTls(#[from] crate::mesh::tls::TlsError),
    /// The mesh transport cannot start.
    #[error(transparent)]
    MeshTransport(#[from] crate::mesh::transport::TransportError),
    /// The API could not listen.
    #[error("cannot listen on {addr} for the API: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What a config turns into: everything a generation of tasks needs.
struct Built {
    config: Config,
    checks: Vec<Arc<plan::CheckSpec>>,
    channels: Vec<Channel>,
    monitor: MonitorConfig,
}

fn build(path: &Path, env: &Env) -> Result<Built, DaemonError> {
    let config = config::load(path)?;
    let checks: Vec<Arc<plan::CheckSpec>> =
        plan::build(&config)?.into_iter().map(Arc::new).collect();
    let channels = config
        .alerts
        .channels
        .iter()
        .map(|c| Channel::from_config(c, &**env))
        .collect::<Result<Vec<_>, _>>()?;
    let heartbeats = config
        .heartbeats
        .iter()
        .filter_map(|h| {
            CheckId::new(&h.name, CheckKind::Heartbeat)
                .ok()
                .map(|id| (id, h.max_age))
        })
        .collect();
    let monitor = MonitorConfig {
        agent: config.agent.name.clone(),
        runbook_base: config.alerts.runbook_base.clone(),
        policy: AlertPolicy {
            cooldown_ms: millis(config.alerts.cooldown),
            repeat_interval_ms: millis(config.alerts.repeat_interval),
        },
        depends_on: config
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.depends_on.clone()))
            .collect(),
        checks: checks.clone(),
        heartbeats,
        drift: DriftPolicy::default(),
    };
    Ok(Built {
        config,
        checks,
        channels,
        monitor,
    })
}

/// The mesh part of a config, with its certificates loaded (and their name checked).
fn mesh_setup(config: &Config, instance_id: &str) -> Result<Option<MeshSetup>, DaemonError> {
    let Some(mesh) = &config.mesh else {
        return Ok(None);
    };
    let me = config.agent.name.clone();
    let tls = MeshTls::load(&mesh.ca_cert, &mesh.cert, &mesh.key, &me)?;
    Ok(Some(MeshSetup {
        listen: mesh.listen,
        tls,
        peers: mesh
            .peers_except(&me)
            .map(|p| (p.name.clone(), p.addr.clone()))
            .collect(),
        liveness: LivenessPolicy {
            heartbeat_interval_ms: millis(mesh.heartbeat_interval),
            missed_heartbeats: mesh.missed_heartbeats,
        },
        quorum: match mesh.quorum {
            config::Quorum::Majority => QuorumPolicy::Majority,
            config::Quorum::All => QuorumPolicy::All,
            config::Quorum::Count(n) => QuorumPolicy::Count(n),
        },
        config_hash: ConfigHash(config.shared_hash),
        instance_id: instance_id.to_owned(),
        me,
    }))
}

/// The tasks that are replaced on reload.
struct Generation {
    stop: watch::Sender<bool>,
    scheduler: JoinHandle<()>,
    outbox_task: JoinHandle<()>,
}

impl Generation {
    fn start(
        built: &Built,
        channels: Vec<Channel>,
        shared: &Shared,
        results: mpsc::Sender<ProbeResult>,
    ) -> (Self, Outbox, mpsc::Sender<CheckId>) {
        let (stop, stop_rx) = watch::channel(false);
        let outbox = Outbox::new(shared.store.clone(), channels, Backoff::default())
            .with_counters(shared.board.counters.clone());
        // Before the delivery task starts, so the monitor hears of every delivery.
        outbox.report_to(shared.reports.clone());
        let outbox_task = tokio::spawn(outbox.clone().run(monitor::now, stop_rx.clone()));
        let (run_now_tx, run_now_rx) = mpsc::channel(256);
        // One set of counters across generations, so a reload never resets a Prometheus counter.
        let stats = shared.scheduler.clone();
        let ctx = shared.probes.clone();
        let scheduler = tokio::spawn(scheduler::run(
            built.checks.clone(),
            built.config.agent.max_concurrent_probes,
            move |check| {
                let ctx = ctx.clone();
                async move { probe::run(&check, &ctx).await }
            },
            results,
            run_now_rx,
            stats,
            stop_rx,
        ));
        (
            Self {
                stop,
                scheduler,
                outbox_task,
            },
            outbox,
            run_now_tx,
        )
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.scheduler.await;
        let _ = self.outbox_task.await;
    }
}

/// State shared across generations.
struct Shared {
    store: StoreHandle,
    board: Arc<Board>,
    probes: Arc<ProbeContext>,
    scheduler: Arc<SchedulerStats>,
    /// Where every generation's outbox reports accepted deliveries (read by the monitor).
    reports: mpsc::Sender<DeliveryIds>,
}

/// The settings a reload cannot change: they are fixed at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    name: String,
    data_dir: PathBuf,
    api_listen: SocketAddr,
    /// `[mesh] listen`: the mesh's socket is bound once.
    mesh_listen: Option<SocketAddr>,
}

impl Identity {
    fn of(config: &Config) -> Self {
        Self {
            name: config.agent.name.clone(),
            data_dir: config.agent.data_dir.clone(),
            api_listen: config.agent.api_listen,
            mesh_listen: config.mesh.as_ref().map(|m| m.listen),
        }
    }
}

/// A running daemon.
pub struct Daemon {
    path: PathBuf,
    env: Env,
    identity: Identity,
    shared: Shared,
    generation: Generation,
    results: mpsc::Sender<ProbeResult>,
    commands: mpsc::Sender<Command>,
    token: Arc<Token>,
    heartbeats: Arc<RwLock<BTreeSet<String>>>,
    api_addr: SocketAddr,
    instance_id: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("path", &self.path)
            .field("api_addr", &self.api_addr)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Loads the config at `path`, opens the store and starts every task. Returns once the API
    /// listens.
    pub async fn start(path: &Path, env: Env) -> Result<Self, DaemonError> {
        let mut built = build(path, &env)?;
        let data_dir = built.config.agent.data_dir.clone();
        let (store, instance_id) = tokio::task::spawn_blocking(move || Store::open(&data_dir))
            .await
            .map_err(|e| StoreError::Spawn(std::io::Error::other(e)))??;
        if let Some(moved) = store.moved_aside() {
            tracing::error!(moved_to = %moved.display(),
                "the database was unreadable and has been moved aside; started with a fresh one");
        }
        // The mesh tells a restart from a reconnect by the Hello's instance id, so it carries
        // this start's own suffix after the persistent id.
        let start_id = format!(
            "{instance_id}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mesh = match mesh_setup(&built.config, &start_id)? {
            Some(setup) => {
                let heartbeats: Vec<CheckId> = built
                    .monitor
                    .heartbeats
                    .iter()
                    .map(|(id, _)| id.clone())
                    .collect();
                let node = Node::start(
                    setup,
                    &built.monitor.vote_checks(),
                    &heartbeats,
                    monitor::now(),
                )?;
                tracing::info!(listen = ?node.local_addr(), "mesh listening (QUIC, mutual TLS)");
                Some(node)
            }
            None => None,
        };
        let board = Arc::new(Board::default());
        let (reports, deliveries) = mpsc::channel(DELIVERY_REPORTS);
        let shared = Shared {
            reports,
            store: store.clone(),
            board: board.clone(),
            probes: Arc::new(ProbeContext::for_agent(&built.config.agent.name)),
            scheduler: Arc::default(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let (results_tx, results_rx) = mpsc::channel(RESULTS_QUEUE);
        let (commands_tx, commands_rx) = mpsc::channel(8);
        let channels = std::mem::take(&mut built.channels);
        let channel_count = channels.len();
        let (generation, outbox, run_now) =
            Generation::start(&built, channels, &shared, results_tx.clone());
        let monitor = Monitor::new(
            built.monitor.clone(),
            store.clone(),
            outbox,
            board.clone(),
            run_now,
            mesh,
            deliveries,
        )
        .await;
        let mut tasks = vec![tokio::spawn(monitor.run(
            results_rx,
            commands_rx,
            stop_rx.clone(),
        ))];
        tasks.push(tokio::spawn(prune(store.clone(), stop_rx.clone())));

        let token = Arc::new(Token::new(env(&built.config.agent.api_token_env)));
        if env(&built.config.agent.api_token_env).is_none_or(|t| t.is_empty()) {
            tracing::warn!(variable = %built.config.agent.api_token_env,
                "no API token in the environment: /api/status, /api/mesh and pushes refuse every request");
        }
        let heartbeats = Arc::new(RwLock::new(heartbeat_names(&built.config)));
        let state = ApiState {
            info: Arc::new(AgentInfo {
                name: built.config.agent.name.clone(),
                instance_id: instance_id.to_string(),
                version: env!("CARGO_PKG_VERSION"),
            }),
            token: token.clone(),
            board,
            store,
            heartbeats: heartbeats.clone(),
            scheduler: shared.scheduler.clone(),
        };
        let listen = built.config.agent.api_listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: listen,
                source,
            })?;
        let api_addr = listener.local_addr().unwrap_or(listen);
        let mut api_stop = stop_rx;
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, api::router(state))
                .with_graceful_shutdown(async move {
                    let _ = api_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the API server stopped");
            }
        }));
        tracing::info!(api = %api_addr, checks = built.checks.len(),
            heartbeats = built.monitor.heartbeats.len(), channels = channel_count,
            agent = %built.config.agent.name, "agent started");
        Ok(Self {
            path: path.to_owned(),
            env,
            identity: Identity::of(&built.config),
            shared,
            generation,
            results: results_tx,
            commands: commands_tx,
            token,
            heartbeats,
            api_addr,
            instance_id: start_id,
            stop,
            tasks,
        })
    }

    /// Where the API listens (useful with port 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Whether the scheduler and the monitor are alive: the monitor went round its loop
    /// within `within`, and the scheduler task has not ended.
    pub fn is_alive(&self, within: Duration) -> bool {
        let last = self
            .shared
            .board
            .counters
            .monitor_alive_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let fresh = monitor::now().millis_since(mesh_proto::Timestamp(last)) < millis(within);
        fresh && !self.generation.scheduler.is_finished()
    }

    /// Reads the config file again and applies it. On error nothing changes.
    pub async fn reload(&mut self) -> Result<(), DaemonError> {
        let mut built = build(&self.path, &self.env)?;
        if Identity::of(&built.config) != self.identity {
            tracing::warn!(
                "[agent] name, data_dir, api_listen and [mesh] listen changes take effect only after a restart"
            );
        }
        // Until then the agent keeps its name everywhere, the mesh (certificate, Hello) included.
        built.config.agent.name.clone_from(&self.identity.name);
        let mesh = mesh_setup(&built.config, &self.instance_id)?;
        let channels = std::mem::take(&mut built.channels);
        let mut monitor_config = built.monitor.clone();
        monitor_config.agent.clone_from(&self.identity.name);
        let (generation, outbox, run_now) =
            Generation::start(&built, channels, &self.shared, self.results.clone());
        let old = std::mem::replace(&mut self.generation, generation);
        old.stop().await;
        let _ = self
            .commands
            .send(Command::Reconfigure(
                Box::new(monitor_config),
                outbox,
                run_now,
                mesh.map(Box::new),
            ))
            .await;
        self.token
            .set((self.env)(&built.config.agent.api_token_env));
        *self
            .heartbeats
            .write()
            .unwrap_or_else(PoisonError::into_inner) = heartbeat_names(&built.config);
        tracing::info!(checks = built.checks.len(), "config reloaded");
        Ok(())
    }

    /// Stops every task, flushes the store, and returns within about `within`.
    pub async fn shutdown(self, within: Duration) {
        let stopping = async {
            let _ = self.stop.send(true);
            self.generation.stop().await;
            for task in self.tasks {
                let _ = task.await;
            }
            if let Err(e) = self.shared.store.close().await {
                tracing::error!(error = %e, "the store did not close cleanly");
            }
        };
        if tokio::time::timeout(within, stopping).await.is_err() {
            tracing::warn!(within = %humantime::format_duration(within), "shutdown timed out");
        }
    }
}

fn heartbeat_names(config: &Config) -> BTreeSet<String> {
    config.heartbeats.iter().map(|h| h.name.clone()).collect()
}

/// Prunes history older than [`RETENTION`] once a day, the first time a minute after start.
async fn prune(store: StoreHandle, mut stop: watch::Receiver<bool>) {
    let mut next = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep_until(next) => {}
        }
        next += PRUNE_EVERY;
        let cutoff = monitor::now().add_millis(-millis(RETENTION));
        match store.prune(cutoff).await {
            Ok(stats) => tracing::info!(
                observations = stats.observations,
                deliveries = stats.deliveries,
                notifications = stats.notifications,
                "pruned history"
            ),
            Err(e) => tracing::error!(error = %e, "pruning failed; retrying tomorrow"),
        }
    }
}
