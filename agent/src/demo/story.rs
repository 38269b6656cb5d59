//! The story the demo tells, act by act: each act changes the world (a site's answer, the
//! links of one agent), then waits, by polling with a deadline, until the agents' API and the
//! webhook sink show what the act claims, narrating what it sees on the way.
//!
//! Every poll also checks that no agent exited and that the sink got no alert the story does
//! not expect ([`Expect`]): a second copy of a page, or any alert about a site while vps is cut
//! off, fails the demo at once.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use serde_json::Value;

use super::agents::{AgentSetup, Agents, Api};
use super::narrator::{self, Narrator};
use super::relay::Relay;
use super::scene::{CutOff, Received, Sink, Site};
use super::{AGENTS, DemoError, POLL, QUIET_RUNS, STEP_DEADLINE};

/// The agent that gets cut off.
const CUT: &str = "vps";
/// The checks of the two sites.
const SITES: [&str; 2] = ["shop/health", "blog/health"];

pub(super) async fn story(
    narrator: Arc<Narrator>,
    exe: &Path,
    dir: &Path,
) -> Result<(), DemoError> {
    let mut story = Story::set_up(narrator, exe, dir).await?;
    story.connect().await?;
    story.outage().await?;
    story.recovery().await?;
    story.cut_off().await?;
    story.reconnect().await?;
    story.summary().await
}

/// One alert the story expects, exactly once.
#[derive(Debug, Clone, Copy)]
struct Expect {
    check: &'static str,
    event: &'static str,
    sent_by: &'static str,
}

/// Every alert of the story; any other is a failure.
const EXPECTED: [Expect; 5] = [
    Expect {
        check: "shop/health",
        event: "firing",
        sent_by: "astra",
    },
    Expect {
        check: "shop/health",
        event: "resolved",
        sent_by: "astra",
    },
    Expect {
        check: "peer_missing:vps",
        event: "firing",
        sent_by: "astra",
    },
    Expect {
        check: "peer_missing:vps",
        event: "resolved",
        sent_by: "astra",
    },
    // vps's own report of its outage, sent once it is back.
    Expect {
        check: OWN_REPORT,
        event: "resolved",
        sent_by: CUT,
    },
];

/// The check of an agent's report of its own outage.
const OWN_REPORT: &str = "monitoring_offline";

impl Expect {
    fn matches(&self, alert: &Value) -> bool {
        alert["check"] == self.check
            && alert["event"] == self.event
            && alert["sent_by"] == self.sent_by
    }
}

/// The demo's world and its agents. Field order is drop order: the agents are killed first.
#[derive(Debug)]
struct Story {
    agents: Agents,
    narrator: Arc<Narrator>,
    api: Api,
    setups: Vec<AgentSetup>,
    /// One relay per ordered pair of agents (from, to).
    relays: BTreeMap<(String, String), Relay>,
    cut: CutOff,
    shop: Site,
    blog: Site,
    sink: Sink,
}

impl Story {
    /// Makes the PKI, the sites, the sink, the relays and the configs; starts the agents.
    async fn set_up(narrator: Arc<Narrator>, exe: &Path, dir: &Path) -> Result<Self, DemoError> {
        narrator.line(
            "PoM demo: three agents (astra, edge, vps), each a separate `pom run` process on this \
             machine,\nprobe the same two sites and vote over mutual-TLS QUIC. An alert goes out only \
             when a quorum\nagrees, and only one agent sends it. Everything runs on 127.0.0.1 and \
             stops by itself.",
        );
        let ca = dir.join("ca");
        // Longer than the 14 days under which `mesh_cert_expiry` pages.
        crate::pki::init_ca(&ca, 60, false)?;
        let cut = CutOff::default();
        let shop = Site::start(cut.clone()).await.map_err(DemoError::Listen)?;
        let blog = Site::start(cut.clone()).await.map_err(DemoError::Listen)?;
        let sink = Sink::start(narrator.clone())
            .await
            .map_err(DemoError::Listen)?;

        let mut apis = Vec::new();
        let mut listens = Vec::new();
        for _ in AGENTS {
            apis.push(free_tcp_port()?);
            listens.push(free_udp_port()?);
        }
        let mut relays = BTreeMap::new();
        for (i, from) in AGENTS.iter().enumerate() {
            for (j, to) in AGENTS.iter().enumerate() {
                if i != j {
                    let relay = Relay::start(listens[j]).await.map_err(DemoError::Listen)?;
                    relays.insert(((*from).to_owned(), (*to).to_owned()), relay);
                }
            }
        }
        let shared = shared_config(&shop, &blog, &sink);
        let mut setups = Vec::new();
        for (i, name) in AGENTS.iter().enumerate() {
            let home = dir.join(name);
            crate::pki::issue(name, &ca, &home.join("mesh"), 30, false)?;
            let setup = AgentSetup {
                name: (*name).to_owned(),
                dir: home,
                api: apis[i],
                listen: listens[i],
                peers: AGENTS
                    .iter()
                    .filter(|p| *p != name)
                    .map(|p| {
                        // Every ordered pair got its relay just above.
                        let relay = &relays[&((*name).to_owned(), (*p).to_owned())];
                        ((*p).to_owned(), relay.addr())
                    })
                    .collect(),
            };
            let path = setup.config_path();
            std::fs::write(&path, setup.config(&shared))
                .map_err(|e| DemoError::io("write", &path, e))?;
            setups.push(setup);
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let story = Self {
            agents: Agents::default(),
            api: Api::new(&token)?,
            narrator,
            setups,
            relays,
            cut,
            shop,
            blog,
            sink,
        };
        let n = &story.narrator;
        n.say(&format!(
            "made a mesh CA and one certificate per agent in {}",
            dir.display()
        ));
        n.say(&format!(
            "sites: shop {}/health and blog {}/health, both answering 200; webhook sink: {}",
            story.shop.url(),
            story.blog.url(),
            story.sink.url()
        ));
        n.say(
            "each agent reaches each peer through a UDP relay of the demo, so one agent can be cut off",
        );
        for setup in &story.setups {
            let pid = story.agents.spawn(exe, setup, &token)?;
            n.say(&format!(
                "started agent {} (pid {pid}, API http://{}, QUIC {})",
                setup.name, setup.api, setup.listen
            ));
        }
        Ok(story)
    }

    /// Act 1: every agent sees both peers alive, and every check has three votes.
    async fn connect(&mut self) -> Result<(), DemoError> {
        self.narrator.act(1, "Three agents connect");
        let mut connected: Vec<&str> = Vec::new();
        self.until("every agent to see both peers alive", async || {
            for name in AGENTS {
                if connected.contains(&name) {
                    continue;
                }
                let Some(mesh) = self.mesh(name).await else {
                    continue;
                };
                let peers = peers_of(&mesh);
                if peers.values().filter(|p| p.state == "alive").count() == AGENTS.len() - 1 {
                    let names: Vec<&str> = peers.keys().map(String::as_str).collect();
                    let rtts: Vec<String> = peers.values().map(Peer::rtt).collect();
                    self.narrator.say(&format!(
                        "{name} sees {} alive (mutual-TLS QUIC, round trips {})",
                        names.join(" and "),
                        rtts.join(", ")
                    ));
                    connected.push(name);
                }
            }
            (connected.len() == AGENTS.len()).then_some(())
        })
        .await?;
        self.until("three votes on every check, all up", async || {
            for name in AGENTS {
                for id in SITES {
                    let check = self.check(name, id).await?;
                    let ok = check["verdict"] == "up"
                        && votes_of(&check).len() == AGENTS.len()
                        && votes_of(&check).values().all(|s| s == "operational");
                    if !ok {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await?;
        self.narrator.say(
            "every agent holds three votes on shop/health and blog/health: operational, verdict up",
        );
        Ok(())
    }

    /// Act 2: shop answers 503; the quorum confirms; one agent pages, once.
    async fn outage(&mut self) -> Result<(), DemoError> {
        self.narrator.act(2, "shop goes down");
        self.shop.answer(StatusCode::SERVICE_UNAVAILABLE);
        self.narrator
            .say("shop starts answering 503 Service Unavailable to everyone");
        let notifier = AGENTS[0];
        let (mut votes_seen, mut verdict_seen) = (None, None);
        self.until(
            "the quorum to confirm shop down, and a firing to arrive",
            async || {
                if let Some(votes) = self.votes("shop/health").await
                    && votes_seen.as_ref() != Some(&votes)
                {
                    self.narrator.say(&votes);
                    votes_seen = Some(votes);
                }
                if let Some(check) = self.check(notifier, "shop/health").await {
                    let verdict = text(&check["verdict"]);
                    if verdict_seen.as_ref() != Some(&verdict) {
                        self.narrator
                            .say(&format!("{notifier}'s verdict on shop/health: {verdict}"));
                        verdict_seen = Some(verdict);
                    }
                }
                self.sink
                    .matching("shop/health", "firing")
                    .into_iter()
                    .next()
            },
        )
        .await?;
        self.until_logged().await?;
        let others: Vec<&str> = AGENTS[1..].to_vec();
        self.narrator.say(&format!(
            "{} saw {notifier}'s claim in the mesh's notification log, marked sent, and held theirs: one page, not three",
            others.join(" and ")
        ));
        Ok(())
    }

    /// Act 3: shop answers 200 again; one `resolved`.
    async fn recovery(&mut self) -> Result<(), DemoError> {
        self.narrator.act(3, "shop recovers");
        self.shop.answer(StatusCode::OK);
        self.narrator.say("shop answers 200 again");
        self.until("one resolved for shop/health", async || {
            self.sink
                .matching("shop/health", "resolved")
                .into_iter()
                .next()
        })
        .await?;
        self.until("every agent to see shop up", async || {
            for name in AGENTS {
                if self.check(name, "shop/health").await?["verdict"] != "up" {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        self.until_logged().await?;
        self.narrator
            .say("all three agents see shop up, and all know the resolved was sent");
        Ok(())
    }

    /// Act 4: vps loses its network, all at once: the relays drop everything to and from it
    /// and the sites stop answering it. The others page `peer_missing` once; vps finds itself
    /// isolated and pages nothing.
    async fn cut_off(&mut self) -> Result<(), DemoError> {
        self.narrator.act(4, "vps is cut off");
        self.cut.set(CUT, true);
        self.set_links(CUT, true);
        self.narrator.say(
            "vps loses its network: the relays drop everything to and from it, and the sites no longer answer it",
        );
        self.until_peer_missing().await?;
        let mut seen: Option<String> = None;
        self.until("vps to find itself isolated", async || {
            let mesh = self.mesh(CUT).await?;
            let peers: Vec<String> = peers_of(&mesh)
                .iter()
                .map(|(n, p)| format!("{n} {}", p.state))
                .collect();
            let isolated = mesh["self"]["isolated"] == true;
            let view = format!(
                "vps's own view: {}; isolated: {}",
                peers.join(", "),
                if isolated { "yes" } else { "no" }
            );
            if seen.as_ref() != Some(&view) {
                self.narrator.say(&view);
                seen = Some(view);
            }
            isolated.then_some(())
        })
        .await?;
        self.narrator.say(
            "vps is isolated: no peer, every site unreachable. It casts no vote and pages nothing",
        );
        self.quiet().await?;
        self.until("astra and edge to see both sites up", async || {
            for name in AGENTS.iter().filter(|n| **n != CUT) {
                for id in SITES {
                    if self.check(name, id).await?["verdict"] != "up" {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await?;
        self.narrator.say(
            "no false alert: vps kept probing and failing, and sent nothing; astra and edge see both sites up",
        );
        Ok(())
    }

    /// Narrates until astra and edge have seen vps go missing and `peer_missing` is paged.
    async fn until_peer_missing(&self) -> Result<(), DemoError> {
        let mut states: BTreeMap<&str, String> = BTreeMap::new();
        self.until("peer_missing for vps to be paged", async || {
            for name in AGENTS.iter().filter(|n| **n != CUT) {
                if let Some(mesh) = self.mesh(name).await
                    && let Some(state) = peers_of(&mesh).get(CUT).map(|p| p.state.clone())
                    && states.get(name) != Some(&state)
                {
                    self.narrator.say(&format!("{name} sees vps {state}"));
                    states.insert(name, state);
                }
            }
            let missing = states.values().filter(|s| *s == "missing").count();
            let paged = !self.sink.matching("peer_missing:vps", "firing").is_empty();
            (missing == AGENTS.len() - 1 && paged).then_some(())
        })
        .await
    }

    /// Act 5: vps is back, all at once: the relays pass its datagrams and the sites answer it
    /// again. `peer_missing` resolves; vps reports its own outage.
    async fn reconnect(&mut self) -> Result<(), DemoError> {
        self.narrator.act(5, "vps is back");
        self.cut.set(CUT, false);
        self.set_links(CUT, false);
        self.narrator
            .say("vps's network is back: the relays pass its datagrams, the sites answer it");
        self.until_back().await?;
        self.until("the mesh whole again", async || {
            for name in AGENTS {
                let mesh = self.mesh(name).await?;
                let alive = peers_of(&mesh)
                    .values()
                    .filter(|p| p.state == "alive")
                    .count();
                if alive != AGENTS.len() - 1 || mesh["self"]["isolated"] != false {
                    return None;
                }
                for id in SITES {
                    if self.check(name, id).await?["verdict"] != "up" {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await?;
        self.narrator
            .say("all three agents see both peers alive and both sites up; vps votes again");
        Ok(())
    }

    /// Waits for `peer_missing` of vps to resolve and for vps's report of its own outage.
    async fn until_back(&self) -> Result<(), DemoError> {
        self.until("peer_missing for vps to resolve", async || {
            self.sink
                .matching("peer_missing:vps", "resolved")
                .into_iter()
                .next()
        })
        .await?;
        self.until("vps to report its local network outage", async || {
            self.sink
                .matching(OWN_REPORT, "resolved")
                .into_iter()
                .find(|r| r.alert["sent_by"] == CUT)
        })
        .await?;
        self.narrator.say(
            "vps hears its peers again: its isolation is over, and it reports the outage it could not report while cut off",
        );
        Ok(())
    }

    /// Act 6: after a quiet spell, every alert received, against the story.
    async fn summary(&mut self) -> Result<(), DemoError> {
        self.narrator.act(6, "Summary");
        self.quiet().await?;
        let alerts = self.sink.alerts();
        for expect in EXPECTED {
            let n = alerts.iter().filter(|r| expect.matches(&r.alert)).count();
            if n != 1 {
                return Err(DemoError::Expected(format!(
                    "exactly one {} {} sent by {} (received {n})",
                    expect.event, expect.check, expect.sent_by
                )));
            }
        }
        let n = &self.narrator;
        n.line(&format!(
            "Every alert the webhook sink received, in order ({}; each expected, none twice):",
            alerts.len()
        ));
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for r in &alerts {
            let a = &r.alert;
            *kinds.entry(text(&a["alert"])).or_default() += 1;
            n.line(&format!(
                "  {:>5.1}s  {:<8}  {:<22}  sent by {:<5}  {}",
                r.at.as_secs_f64(),
                text(&a["event"]),
                text(&a["check"]),
                text(&a["sent_by"]),
                meaning(a)
            ));
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        n.line(&format!("Per kind: {}.", kinds.join(", ")));
        n.line("- shop down: confirmed by the quorum and paged once, by astra; edge and vps held theirs.");
        n.line("- vps cut off: peer_missing, once (true); nothing about shop or blog from anyone (no false alert).");
        n.line("- vps back: peer_missing resolved, once; and vps's own report of the outage, with its time range.");
        n.line(&format!(
            "The demo ended by itself after {:.0}s; the agents are stopped and their files removed.",
            n.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Cuts (or restores) every relay between `agent` and its peers, both ways.
    fn set_links(&self, agent: &str, cut: bool) {
        for ((from, to), relay) in &self.relays {
            if from == agent || to == agent {
                relay.set_cut(cut);
            }
        }
    }

    /// Waits until every agent knows of every page sent by the mesh: its notification log holds
    /// them all as `sent`, nothing `sending`. Then no agent still owes one of them.
    async fn until_logged(&self) -> Result<(), DemoError> {
        let paged = self
            .sink
            .alerts()
            .iter()
            .filter(|r| !is_own_report(&r.alert))
            .count();
        self.until(
            "every agent's notification log to show the pages sent",
            async || {
                for name in AGENTS {
                    let mesh = self.mesh(name).await?;
                    let log = &mesh["self"]["notifications"];
                    let sent = log["sent"].as_u64()?;
                    if log["sending"] != 0 || usize::try_from(sent).ok()? < paged {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }

    /// Lets every agent run [`QUIET_RUNS`] probes while watching for alerts that must not come
    /// (every poll checks them).
    async fn quiet(&self) -> Result<(), DemoError> {
        let mut start = Vec::new();
        for setup in &self.setups {
            start.push(self.api.probe_runs(setup.api).await.unwrap_or(0));
        }
        self.until("the agents to keep probing", async || {
            for (setup, from) in self.setups.iter().zip(&start) {
                if self.api.probe_runs(setup.api).await? < from + QUIET_RUNS {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// Polls `check` until it returns `Some`, for at most [`STEP_DEADLINE`]. Every poll also
    /// checks that no agent has exited and that no unexpected alert arrived.
    async fn until<T>(
        &self,
        what: &str,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> Result<T, DemoError> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            if let Some((name, status, log)) = self.agents.exited() {
                return Err(DemoError::AgentExited { name, status, log });
            }
            self.no_unexpected_alert()?;
            if let Some(found) = check().await {
                self.no_unexpected_alert()?;
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(DemoError::Expected(what.to_owned()));
            }
            tokio::time::sleep(POLL).await; // the poll interval, not a wait for something
        }
    }

    /// Fails on an alert the story does not expect, or a second copy of one it does.
    fn no_unexpected_alert(&self) -> Result<(), DemoError> {
        let alerts = self.sink.alerts();
        for (i, r) in alerts.iter().enumerate() {
            let expected = EXPECTED.iter().find(|e| e.matches(&r.alert));
            let first = expected
                .is_some_and(|e| alerts[..i].iter().all(|earlier| !e.matches(&earlier.alert)));
            if !first {
                return Err(DemoError::Unexpected(unexpected(r)));
            }
        }
        Ok(())
    }

    /// Each agent's own latest status of check `id`, the vote it sends:
    /// `votes on shop/health: astra error, edge operational, vps operational`.
    async fn votes(&self, id: &str) -> Option<String> {
        let mut votes = Vec::new();
        for name in AGENTS {
            let check = self.check(name, id).await?;
            votes.push(format!("{name} {}", text(&check["status"])));
        }
        Some(format!("votes on {id}: {}", votes.join(", ")))
    }

    fn setup(&self, name: &str) -> Option<&AgentSetup> {
        self.setups.iter().find(|s| s.name == name)
    }

    /// `/api/mesh` of agent `name`.
    async fn mesh(&self, name: &str) -> Option<Value> {
        self.api.json(self.setup(name)?.api, "/api/mesh").await
    }

    /// The check `id` from `/api/status` of agent `name`.
    async fn check(&self, name: &str, id: &str) -> Option<Value> {
        let status = self.api.json(self.setup(name)?.api, "/api/status").await?;
        status["checks"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
    }
}

/// What an alert of the story says, in a few words.
fn meaning(alert: &Value) -> String {
    let event = text(&alert["event"]);
    let firing = event == "firing";
    match (text(&alert["alert"]).as_str(), firing) {
        ("peer_missing", true) => format!("{} is missing", text(&alert["target"])),
        ("peer_missing", false) => format!("{} is back", text(&alert["target"])),
        ("monitoring_offline", _) => "its own outage, reported once it was back".to_owned(),
        (_, true) => {
            let confirmed = alert["confirmed_by"].as_array().map_or(0, Vec::len);
            format!(
                "down, confirmed by {confirmed} of {} agents",
                alert["agents_total"]
            )
        }
        (_, false) => "up again".to_owned(),
    }
}

/// What an unexpected alert was.
fn unexpected(r: &Received) -> String {
    format!(
        "alert at {:.1}s: {}",
        r.at.as_secs_f64(),
        narrator::describe_alert(&r.alert)
    )
}

/// Whether `alert` is an agent's report of its own local outage: sent directly once its
/// isolation ends, not through the mesh's notification log.
fn is_own_report(alert: &Value) -> bool {
    alert["alert"] == "monitoring_offline" && alert["target"] == alert["sent_by"]
}

/// The config every agent shares: alerts, the sink, the sites. Short timings so the story
/// takes seconds: probes every second with a 500 ms timeout; peers missing after 3 heartbeats
/// of 300 ms (in `[mesh]`).
fn shared_config(shop: &Site, blog: &Site, sink: &Sink) -> String {
    let site = |name: &str, site: &Site| {
        format!(
            "[[targets]]\n\
             name = \"{name}\"\n\
             url = \"{}\"\n  \
               [targets.health]\n  \
               path = \"/health\"\n  \
               interval = \"1s\"\n  \
               timeout = \"500ms\"\n\n",
            site.url()
        )
    };
    format!(
        "[alerts]\n\
         cooldown = \"5s\"\n\n\
         [[alerts.channels]]\n\
         name = \"demo-sink\"\n\
         type = \"webhook\"\n\
         url = \"{}\"\n\n{}{}",
        sink.url(),
        site("shop", shop),
        site("blog", blog)
    )
}

/// A free TCP port on loopback (for an agent's API).
fn free_tcp_port() -> Result<SocketAddr, DemoError> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(DemoError::Listen)
}

/// A free UDP port on loopback (for an agent's QUIC).
fn free_udp_port() -> Result<SocketAddr, DemoError> {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map_err(DemoError::Listen)
}

/// A peer as `/api/mesh` shows it.
#[derive(Debug, Clone)]
struct Peer {
    state: String,
    rtt_ms: Option<f64>,
}

impl Peer {
    fn rtt(&self) -> String {
        self.rtt_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
    }
}

/// The peers of an `/api/mesh` answer, by name.
fn peers_of(mesh: &Value) -> BTreeMap<String, Peer> {
    mesh["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                text(&p["name"]),
                Peer {
                    state: text(&p["state"]),
                    rtt_ms: p["rtt_ms"].as_f64(),
                },
            )
        })
        .collect()
}

/// The votes of an `/api/status` check: agent → status.
fn votes_of(check: &Value) -> BTreeMap<String, String> {
    check["votes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(agent, status)| (agent.clone(), text(status)))
        .collect()
}

/// A JSON string's text, or the JSON itself.
fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}
