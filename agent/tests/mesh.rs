//! The mesh with real `pom run` processes on 127.0.0.1, each with its own certificates and data
//! directory, talking mutual-TLS QUIC: quorum alerts sent once, a killed agent reported once,
//! intruders refused, a killed notifier replaced.
//!
//! Every wait polls a condition with a deadline; nothing sleeps to wait and nothing is retried.

mod process;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;

use pom::testbed::http::TestServer;
use process::*;
use serde_json::Value;

/// The agents of the mesh, in name order (so `astra` is the notifier while it lives).
const NAMES: [&str; 3] = ["astra", "edge", "vps"];

/// A UDP port nothing listens on now.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// A mesh CA in `dir/ca` and a certificate for `name` in `dir/NAME`, issued by it.
fn issue(ca_dir: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(format!("mesh-{name}"));
    pom::pki::issue(name, ca_dir, &out, 30, false).unwrap();
    out
}

fn mesh_section(certs: &Path, listen: u16, peers: &[(&str, u16)]) -> String {
    let mut out = format!(
        "[mesh]\nlisten = \"127.0.0.1:{listen}\"\nca_cert = \"{0}/ca.crt\"\ncert = \"{0}/node.crt\"\nkey = \"{0}/node.key\"\nheartbeat_interval = \"300ms\"\nmissed_heartbeats = 3\nquorum = \"majority\"\n\n",
        certs.display()
    );
    for (name, port) in peers {
        out.push_str(&format!(
            "[[mesh.peers]]\nname = \"{name}\"\naddr = \"127.0.0.1:{port}\"\n\n"
        ));
    }
    out
}

/// Three agents watching one target, alerting to one webhook sink (and to Alertmanager when
/// asked).
struct Mesh {
    sink: Sink,
    am: AlertmanagerSink,
    target: Target,
    agents: Vec<Agent>,
    ports: Vec<u16>,
    ca: PathBuf,
    dir: tempfile::TempDir,
    shared: String,
    url: String,
    _servers: Vec<TestServer>,
}

impl Mesh {
    async fn start(cooldown: &str) -> Self {
        Self::start_with(cooldown, None, None).await
    }

    /// Like [`start`](Self::start), with `targets` (config) instead of the `shop` target, and
    /// an Alertmanager channel besides the webhook, refreshing every `alertmanager`, if given.
    async fn start_with(
        cooldown: &str,
        targets: Option<String>,
        alertmanager: Option<&str>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        pom::pki::init_ca(&ca, 365, false).unwrap();
        let (sink, sink_server) = Sink::start().await;
        let (target, target_server) = Target::start().await;
        let (am, am_server) = AlertmanagerSink::start().await;
        let url = hook_url(&sink_server);
        let am_channel = alertmanager.map_or_else(String::new, |refresh| {
            AlertmanagerSink::channel(&am_server) + &format!("refresh = \"{refresh}\"\n\n")
        });
        let shared = alerts_section(cooldown)
            + WEBHOOK
            + &am_channel
            + &targets.unwrap_or_else(|| process::target("shop", target_server.port(), ""));
        let ports: Vec<u16> = NAMES.iter().map(|_| free_udp_port()).collect();
        let mut mesh = Self {
            sink,
            am,
            target,
            agents: Vec::new(),
            ports,
            ca,
            dir,
            shared,
            url,
            _servers: vec![sink_server, target_server, am_server],
        };
        let agents: Vec<Agent> = tokio::task::block_in_place(|| {
            let mut agents: Vec<Agent> = (0..NAMES.len()).map(|i| mesh.launch(i)).collect();
            for agent in &mut agents {
                agent.wait_ready();
            }
            agents
        });
        mesh.agents = agents;
        mesh
    }

    fn peers(&self) -> Vec<(&'static str, u16)> {
        NAMES
            .iter()
            .copied()
            .zip(self.ports.iter().copied())
            .collect()
    }

    fn launch(&self, i: usize) -> Agent {
        let name = NAMES[i];
        let home = self.dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let certs = issue(&self.ca, &home, name);
        let body = mesh_section(&certs, self.ports[i], &self.peers()) + &self.shared;
        Agent::launch(&home, name, &body, &[("HOOK_URL", self.url.as_str())])
    }

    /// Waits until every live agent sees every other live agent alive.
    fn wait_connected(&self, live: &[usize]) {
        for &i in live {
            let agent = &self.agents[i];
            poll(&format!("{} to see its peers alive", NAMES[i]), || {
                let mesh = mesh_status(agent);
                live.iter().filter(|&&j| j != i).all(|&j| {
                    mesh["peers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == NAMES[j] && p["state"] == "alive")
                })
            });
        }
    }
}

fn mesh_status(agent: &Agent) -> Value {
    let body = http_get(&format!("{}/api/mesh", agent.api), Some(TOKEN)).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// The alerts about `check` with `event`.
fn alerts(sink: &Sink, check: &str, event: &str) -> Vec<Value> {
    sink.alerts()
        .into_iter()
        .filter(|a| a["check"] == check && a["event"] == event)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_down_is_confirmed_by_the_quorum_and_paged_once() {
    let mesh = Mesh::start("10s").await;
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        poll("every agent to vote on the target", || {
            let status = mesh.agents[0].status();
            status["checks"][0]["votes"].as_object().map(|v| v.len()) == Some(3)
        });
        mesh.target.set(503);
        poll("the firing", || {
            !alerts(&mesh.sink, "shop/health", "firing").is_empty()
        });
        let firing = alerts(&mesh.sink, "shop/health", "firing").remove(0);
        let confirmed = firing["confirmed_by"].as_array().unwrap().len();
        assert!(confirmed >= 2, "confirmed by a quorum: {firing}");
        assert_eq!(firing["agents_total"], 3);
        assert_eq!(firing["sent_by"], "astra", "the first agent by name sends");

        mesh.target.set(200);
        poll("the resolved", || {
            !alerts(&mesh.sink, "shop/health", "resolved").is_empty()
        });
        // Every agent has seen the recovery and the notification log has gone round: any
        // duplicate would have been sent by now.
        for agent in &mesh.agents {
            poll("the verdict up everywhere", || {
                agent.status()["checks"][0]["verdict"] == "up"
            });
            agent.wait_runs(3);
        }
        assert_eq!(alerts(&mesh.sink, "shop/health", "firing").len(), 1);
        let resolved = alerts(&mesh.sink, "shop/health", "resolved");
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        assert_eq!(resolved[0]["incident"], firing["incident"]);
        let others: Vec<Value> = mesh
            .sink
            .alerts()
            .into_iter()
            .filter(|a| a["check"] != "shop/health")
            .collect();
        assert!(others.is_empty(), "no other alert: {others:?}");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_is_reported_missing_once() {
    let mut mesh = Mesh::start("10s").await;
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        mesh.agents[2].kill9();
        poll("peer_missing for vps", || {
            !alerts(&mesh.sink, "peer_missing:vps", "firing").is_empty()
        });
        let page = alerts(&mesh.sink, "peer_missing:vps", "firing").remove(0);
        assert_eq!(page["target"], "vps");
        assert_eq!(page["alert"], "peer_missing");
        for i in [0, 1] {
            mesh.agents[i].wait_runs(3);
        }
        assert_eq!(alerts(&mesh.sink, "peer_missing:vps", "firing").len(), 1);
        let state = mesh_status(&mesh.agents[1])["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "vps")
            .unwrap()["state"]
            .clone();
        assert_eq!(state, "missing");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pom"))
            .args(["mesh", "--api", &mesh.agents[1].api])
            .env("POM_API_TOKEN", TOKEN)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(2),
            "a missing peer is critical: {text}"
        );
        assert!(text.contains("this agent: edge"), "{text}");
        assert!(
            text.contains("2 voting agents now, 2 failing votes confirm"),
            "{text}"
        );
        let row = |name: &str| {
            text.lines()
                .find(|l| l.contains(name))
                .unwrap_or("")
                .to_owned()
        };
        assert!(row("vps").contains("missing"), "{text}");
        assert!(
            row("astra").contains("alive") && row("astra").contains(" up "),
            "{text}"
        );

        // It comes back: resolved once.
        mesh.agents[2].spawn();
        mesh.wait_connected(&[0, 1, 2]);
        poll("peer_missing resolved", || {
            !alerts(&mesh.sink, "peer_missing:vps", "resolved").is_empty()
        });
        for i in [0, 1] {
            mesh.agents[i].wait_runs(3);
        }
        assert_eq!(alerts(&mesh.sink, "peer_missing:vps", "resolved").len(), 1);
        assert_eq!(alerts(&mesh.sink, "peer_missing:vps", "firing").len(), 1);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn intruders_are_refused_and_never_counted() {
    let mesh = Mesh::start("10s").await;
    // One intruder with a certificate from another CA under a listed name, one with a
    // certificate from the mesh CA under a name that is not a peer.
    let other_ca = mesh.dir.path().join("other-ca");
    pom::pki::init_ca(&other_ca, 365, false).unwrap();
    let forger_home = mesh.dir.path().join("forger");
    std::fs::create_dir_all(&forger_home).unwrap();
    let forged = issue(&other_ca, &forger_home, "vps");
    let stranger_home = mesh.dir.path().join("mallory");
    std::fs::create_dir_all(&stranger_home).unwrap();
    let stranger_certs = issue(&mesh.ca, &stranger_home, "mallory");
    let mut peers = mesh.peers();
    peers.retain(|(n, _)| *n != "vps");
    let intruders = tokio::task::block_in_place(|| {
        let forger = Agent::start_named(
            &forger_home,
            "vps",
            &(mesh_section(&forged, free_udp_port(), &peers) + &mesh.shared),
            &[("HOOK_URL", mesh.url.as_str())],
        );
        let stranger = Agent::start_named(
            &stranger_home,
            "mallory",
            &(mesh_section(&stranger_certs, free_udp_port(), &peers) + &mesh.shared),
            &[("HOOK_URL", mesh.url.as_str())],
        );
        [forger, stranger]
    });
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        // Both intruders keep dialing; the mesh refuses them and logs it.
        poll("the refusals in the logs", || {
            let log = mesh.agents[0].log();
            log.contains("mesh connection refused") && log.contains("mallory")
        });
        for agent in &intruders {
            agent.wait_runs(3);
        }
        for (i, agent) in mesh.agents.iter().enumerate() {
            let status = agent.status();
            let votes = status["checks"][0]["votes"].as_object().unwrap().clone();
            assert!(
                votes.keys().all(|k| NAMES.contains(&k.as_str())),
                "{}: only mesh agents vote: {votes:?}",
                NAMES[i]
            );
            let peers = mesh_status(agent)["peers"].as_array().unwrap().clone();
            assert!(peers.iter().all(|p| p["name"] != "mallory"));
        }
        // The forger holds the name vps but not its key: the real vps stays connected and
        // alone in that role.
        for agent in &intruders {
            let seen = mesh_status(agent)["peers"].as_array().unwrap().clone();
            assert!(
                seen.iter().all(|p| p["state"] != "alive"),
                "an intruder sees nobody alive: {seen:?}"
            );
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_notifier_dies_mid_incident_another_agent_resolves_it_once() {
    let mut mesh = Mesh::start("10s").await;
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        mesh.target.set(503);
        poll("the firing", || {
            !alerts(&mesh.sink, "shop/health", "firing").is_empty()
        });
        let firing = alerts(&mesh.sink, "shop/health", "firing").remove(0);
        assert_eq!(firing["sent_by"], "astra");
        // The incident is open and its firing known as sent across the mesh; then the notifier
        // dies. (Killed between its delivery and the gossip of it, it would be paged again by
        // design: a claim still `sending` when its agent disappears is taken over.)
        for i in [1, 2] {
            poll("the firing known as sent", || {
                mesh_status(&mesh.agents[i])["self"]["notifications"]["sent"] == 1
            });
        }
        mesh.agents[0].kill9();
        mesh.target.set(200);
        poll("the resolved", || {
            !alerts(&mesh.sink, "shop/health", "resolved").is_empty()
        });
        for i in [1, 2] {
            mesh.agents[i].wait_runs(3);
        }
        let resolved = alerts(&mesh.sink, "shop/health", "resolved");
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        assert_eq!(
            resolved[0]["sent_by"], "edge",
            "the next agent by name takes over"
        );
        assert_eq!(
            resolved[0]["incident"], firing["incident"],
            "the survivor resolves the incident the notifier opened"
        );
        let firings = alerts(&mesh.sink, "shop/health", "firing");
        assert_eq!(firings.len(), 1, "{firings:?}");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notifier_back_after_another_agent_resolved_its_incident_does_not_refire_it_at_alertmanager()
 {
    let mut mesh = Mesh::start_with("10s", None, Some("60s")).await;
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        mesh.target.set(503);
        poll("the firing at Alertmanager", || {
            !mesh.am.alerts("shop/health").is_empty()
        });
        for i in [1, 2] {
            poll("the firing known as sent", || {
                mesh_status(&mesh.agents[i])["self"]["notifications"]["sent"] == 1
            });
        }
        // astra, which sent the firing (and re-posts it while the incident is open), dies; the
        // site recovers and edge resolves the incident.
        mesh.agents[0].kill9();
        mesh.target.set(200);
        poll("the resolve at Alertmanager", || {
            mesh.am
                .alerts("shop/health")
                .last()
                .is_some_and(|a| a.get("endsAt").is_some())
        });
        let resolved = alerts(&mesh.sink, "shop/health", "resolved");
        assert_eq!(resolved[0]["sent_by"], "edge");
        // astra comes back with the incident open in its store. Once it has caught up, the
        // incident is over for it too: it must not post the old firing again, which would
        // open the alert at Alertmanager a second time, with nobody left to resolve it.
        mesh.agents[0].spawn();
        mesh.wait_connected(&[0, 1, 2]);
        poll("astra to agree that shop is up", || {
            http_get(&format!("{}/api/status", mesh.agents[0].api), Some(TOKEN))
                .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                .is_some_and(|v| {
                    v["checks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["id"] == "shop/health" && c["verdict"] == "up")
                })
        });
        mesh.agents[0].wait_runs(5);
        let again = firing_after_resolve(&mesh.am, "shop/health");
        assert!(
            again.is_empty(),
            "firing again after the resolve: {again:?}"
        );
        assert_eq!(alerts(&mesh.sink, "shop/health", "firing").len(), 1);
    });
}

/// The alerts posted to Alertmanager about `check` after its first resolve that have no
/// `endsAt` (firing again).
fn firing_after_resolve(am: &AlertmanagerSink, check: &str) -> Vec<Value> {
    let posts = am.alerts(check);
    let resolve = posts
        .iter()
        .position(|a| a.get("endsAt").is_some())
        .expect("the resolve was posted");
    posts[resolve..]
        .iter()
        .filter(|a| a.get("endsAt").is_none())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sender_whose_incident_another_agent_resolved_stops_refreshing_it_at_alertmanager() {
    let mut mesh = Mesh::start_with("10s", None, Some("1s")).await;
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        // astra, first in the notifier order, is down when the site fails: edge sends the
        // firing and re-posts it to Alertmanager every second.
        mesh.agents[0].kill9();
        mesh.target.set(503);
        poll("the firing", || {
            !alerts(&mesh.sink, "shop/health", "firing").is_empty()
        });
        assert_eq!(
            alerts(&mesh.sink, "shop/health", "firing")[0]["sent_by"],
            "edge"
        );
        poll("edge's refreshes", || {
            mesh.am.alerts("shop/health").len() >= 3
        });
        // astra is back, first in the order again, and sends the resolved.
        mesh.agents[0].spawn();
        mesh.wait_connected(&[0, 1, 2]);
        mesh.target.set(200);
        poll("the resolved", || {
            !alerts(&mesh.sink, "shop/health", "resolved").is_empty()
        });
        assert_eq!(
            alerts(&mesh.sink, "shop/health", "resolved")[0]["sent_by"],
            "astra"
        );
        poll("the resolve at Alertmanager", || {
            mesh.am
                .alerts("shop/health")
                .iter()
                .any(|a| a.get("endsAt").is_some())
        });
        // Several refresh periods later, edge has not posted its firing again.
        mesh.agents[1].wait_runs(5);
        let again = firing_after_resolve(&mesh.am, "shop/health");
        assert!(
            again.is_empty(),
            "firing again after the resolve: {again:?}"
        );
        assert_eq!(alerts(&mesh.sink, "shop/health", "firing").len(), 1);
        assert_eq!(alerts(&mesh.sink, "shop/health", "resolved").len(), 1);
    });
}

/// `pom_outbox_pending` from /metrics: alerts queued and not delivered yet.
fn outbox_pending(agent: &Agent) -> u64 {
    let text = http_get(&format!("{}/metrics", agent.api), None).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("pom_outbox_pending "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notifier_restarted_with_its_page_still_queued_sends_it_once_and_no_peer_does() {
    let mut mesh = Mesh::start("10s").await;
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        mesh.sink.failing.store(true, Ordering::SeqCst);
        mesh.target.set(503);
        // astra, the notifier, claims the firing; its webhook refuses it, so it stays queued.
        for i in [1, 2] {
            poll("astra's claim seen by its peers", || {
                mesh_status(&mesh.agents[i])["self"]["notifications"]["sending"] == 1
            });
        }
        poll("the firing queued at astra", || {
            outbox_pending(&mesh.agents[0]) >= 1
        });
        // astra restarts: a new instance, its page still in its outbox.
        mesh.agents[0].signal("-TERM");
        mesh.agents[0].child().wait().unwrap();
        mesh.agents[0].spawn();
        mesh.wait_connected(&[0, 1, 2]);
        // Several takeover windows (3 s a position) pass while the channel still fails: the
        // peers hold the page astra renewed instead of queueing it themselves.
        for i in [1, 2] {
            mesh.agents[i].wait_runs(10);
            assert_eq!(
                outbox_pending(&mesh.agents[i]),
                0,
                "{} queued a page astra still holds",
                NAMES[i]
            );
        }
        mesh.sink.failing.store(false, Ordering::SeqCst);
        poll("the firing", || {
            !alerts(&mesh.sink, "shop/health", "firing").is_empty()
        });
        for i in [1, 2] {
            poll("the firing known as sent", || {
                mesh_status(&mesh.agents[i])["self"]["notifications"]["sent"] == 1
            });
        }
        mesh.target.set(200);
        poll("the resolved", || {
            !alerts(&mesh.sink, "shop/health", "resolved").is_empty()
        });
        for agent in &mesh.agents {
            agent.wait_runs(3);
            assert_eq!(outbox_pending(agent), 0);
        }
        let firings = alerts(&mesh.sink, "shop/health", "firing");
        assert_eq!(firings.len(), 1, "{firings:?}");
        assert_eq!(firings[0]["sent_by"], "astra");
        assert_eq!(alerts(&mesh.sink, "shop/health", "resolved").len(), 1);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_mesh_certificate_for_new_connections_and_keeps_live_ones() {
    let mut mesh = Mesh::start("10s").await;
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        let disconnects = |agent: &Agent| agent.log().matches("peer disconnected").count();
        let edge_disconnects = disconnects(&mesh.agents[1]);

        // astra gets a certificate that expires in 10 days, inside the 14-day warning.
        let certs = mesh.dir.path().join("astra").join("mesh-astra");
        pom::pki::issue("astra", &mesh.ca, &certs, 10, true).unwrap();
        mesh.agents[0].signal("-HUP");
        poll("astra to reload", || {
            mesh.agents[0].log().contains("config reloaded")
        });
        poll("mesh_cert_expiry for astra", || {
            !alerts(&mesh.sink, "mesh_cert_expiry:astra", "firing").is_empty()
        });

        // The live connections were kept.
        mesh.agents[1].wait_runs(3);
        assert_eq!(
            disconnects(&mesh.agents[1]),
            edge_disconnects,
            "{}",
            mesh.agents[1].log()
        );
        mesh.wait_connected(&[0, 1, 2]);

        // A new connection presents the new certificate: vps, restarted, sees its expiry.
        mesh.agents[2].kill9();
        mesh.agents[2].spawn();
        mesh.wait_connected(&[0, 1, 2]);
        poll("vps to see astra's new certificate", || {
            let peers = mesh_status(&mesh.agents[2])["peers"].clone();
            let astra = peers
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == "astra")
                .cloned()
                .unwrap_or_default();
            let not_after = astra["cert_not_after"].as_str().unwrap_or("").to_owned();
            let ten_days = time::OffsetDateTime::now_utc() + time::Duration::days(11);
            time::OffsetDateTime::parse(&not_after, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|t| t < ten_days)
        });
        for i in [0, 1, 2] {
            mesh.agents[i].wait_runs(3);
        }
        let pages = alerts(&mesh.sink, "mesh_cert_expiry:astra", "firing");
        assert_eq!(pages.len(), 1, "{pages:?}");
    });
}

/// A target that never answers the agent `vps` while `blocked` is set: its probes time out, as
/// if vps had lost its network. Everyone else gets 200.
async fn blocking_target(blocked: Arc<AtomicBool>) -> TestServer {
    let router = Router::new().route(
        "/health",
        get(move |headers: HeaderMap| {
            let blocked = blocked.clone();
            async move {
                let from_vps = headers
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ua| ua.contains("(agent vps)"));
                if from_vps && blocked.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await; // never answers: the probe times out
                }
                StatusCode::OK
            }
        }),
    );
    TestServer::http(router).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_loses_its_network_is_reported_by_its_peers_and_pages_nothing_else() {
    let blocked = Arc::new(AtomicBool::new(false));
    let shop = blocking_target(blocked.clone()).await;
    let cdn = blocking_target(blocked.clone()).await;
    let targets = target("shop", shop.port(), "") + &target("cdn", cdn.port(), "");
    let mesh = Mesh::start_with("10s", Some(targets), None).await;
    tokio::task::block_in_place(|| {
        mesh.wait_connected(&[0, 1, 2]);
        blocked.store(true, Ordering::SeqCst);
        poll("monitoring_offline for vps", || {
            !alerts(&mesh.sink, "monitoring_offline:vps", "firing").is_empty()
        });
        let page = alerts(&mesh.sink, "monitoring_offline:vps", "firing").remove(0);
        assert_eq!(
            page["sent_by"], "astra",
            "its peers say it, off-box: {page}"
        );
        assert_eq!(page["target"], "vps");
        // vps still reaches its peers, so it is not isolated: its votes count, and lose.
        poll("vps to see its own failures as local", || {
            let status = mesh.agents[2].status();
            status["checks"].as_array().unwrap().iter().all(|check| {
                check["votes"]["vps"] == "unreachable"
                    && check["votes"]["astra"] == "operational"
                    && check["verdict"] == "local_only"
            })
        });
        blocked.store(false, Ordering::SeqCst);
        poll("monitoring_offline resolved", || {
            !alerts(&mesh.sink, "monitoring_offline:vps", "resolved").is_empty()
        });
        for agent in &mesh.agents {
            agent.wait_runs(4);
        }
        let all = mesh.sink.alerts();
        assert_eq!(
            all.len(),
            2,
            "one firing, one resolved, no target alert: {all:?}"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_refuses_to_start_with_a_certificate_of_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    pom::pki::init_ca(&ca, 365, false).unwrap();
    let certs = issue(&ca, dir.path(), "edge");
    let body = mesh_section(&certs, free_udp_port(), &[("edge", free_udp_port())]);
    let mut agent = Agent::launch(dir.path(), "astra", &body, &[]);
    tokio::task::block_in_place(|| {
        let mut status = None;
        poll("the agent to exit", || {
            status = agent.child().try_wait().unwrap();
            status.is_some()
        });
        assert!(!status.unwrap().success());
        let log = agent.log();
        assert!(
            log.contains("is issued to [\"edge\"], but [agent] name is \"astra\""),
            "{log}"
        );
    });
}
