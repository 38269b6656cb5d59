//! Scenario 10: intruders on the mesh port, each from a host of its own.
//!
//! - `rogue` (10.77.0.14) runs a real `pom run` that calls itself `vps`, with a certificate from
//!   another CA;
//! - `mallory` (10.77.0.15) runs a real `pom run` with a valid certificate of the mesh CA for a
//!   name no agent lists;
//! - from `rogue`, this binary (`fault_suite garbage …`) speaks QUIC with the stolen certificate
//!   of `third` and sends what is not a conversation (bytes that are not a frame, a 4 GiB length
//!   prefix, a truncated Hello, an unknown frame version, a first frame that is not a Hello, a
//!   Hello naming another agent), and 2,000 datagrams of UDP noise to each agent.
//!
//! Every agent must refuse them all (each garbage connection closed with the protocol error
//! code), list none of them, count no vote of theirs, keep its two peers alive and connected,
//! and send no alert.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mesh_proto::{CheckId, CheckKind, ConfigHash, Frame, FrameV1, Hello, ProbeNow, Timestamp};
use pom::mesh::tls::MeshTls;
use quinn::crypto::rustls::QuicClientConfig;

use crate::agents::{Agent, MESH_PORT, NAMES};
use crate::judge::Outcome;
use crate::netns::exec;
use crate::scenarios::play;
use crate::suite::Suite;

/// The close code of a protocol error on the mesh port (docs/protocol.md §1).
const CLOSE_PROTOCOL: u64 = 3;
/// How long a garbage connection may stay open before the agent must have closed it.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// The garbage sends, by name: (what, the bytes on the stream, finish the stream after them).
fn garbage(as_name: &str) -> anyhow::Result<Vec<(&'static str, Vec<u8>, bool)>> {
    let hello = |name: &str| {
        mesh_proto::codec::encode(&Frame::V1(FrameV1::Hello(Hello {
            protocol_version: 1,
            name: name.into(),
            instance_id: "intruder".into(),
            agent_version: "0.0.0-intruder".into(),
            config_hash: ConfigHash([0; 32]),
            wall_clock: Timestamp(crate::scene::now_ms()),
        })))
    };
    let mut truncated = hello(as_name)?;
    truncated.truncate(truncated.len() / 2);
    let probe = mesh_proto::codec::encode(&Frame::V1(FrameV1::ProbeNow(ProbeNow {
        check: CheckId::new("site", CheckKind::Health).context("a check id")?,
    })))?;
    Ok(vec![
        ("not a frame", vec![0, 0, 0, 3, 0xff, 0xff, 0xff], false),
        (
            "4 GiB length prefix",
            u32::MAX.to_be_bytes().to_vec(),
            false,
        ),
        ("truncated Hello", truncated, true),
        ("unknown frame version", vec![0, 0, 0, 2, 1, 0], false),
        ("first frame not a Hello", probe, false),
        ("Hello naming another agent", hello("edge")?, false),
    ])
}

/// `fault_suite garbage CERTS NAME ADDR...`: connects to each ADDR (server name = the agent at
/// that address, given as `name@ip:port`) with the certificate in CERTS (of agent NAME) and
/// sends every garbage in turn, one connection each; prints `ADDR WHAT CODE` per connection
/// (the close code, or `open` if the agent never closed it), then sends UDP noise.
pub(crate) fn garbage_main(mut argv: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let certs = argv.next().context("garbage CERTS NAME name@ADDR...")?;
    let me = argv.next().context("garbage CERTS NAME name@ADDR...")?;
    let targets: Vec<(String, SocketAddr)> = argv
        .map(|t| {
            let (name, addr) = t.split_once('@').context("name@ip:port")?;
            Ok((name.to_owned(), addr.parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let certs = Path::new(&certs);
    let tls = MeshTls::load(
        &certs.join("ca.crt"),
        &certs.join("node.crt"),
        &certs.join("node.key"),
        &me,
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let crypto = QuicClientConfig::try_from(tls.client.clone())?;
        let client = quinn::ClientConfig::new(Arc::new(crypto));
        let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
        for (name, addr) in &targets {
            for (what, bytes, finish) in garbage(&me)? {
                let code = match send(&endpoint, &client, *addr, name, &bytes, finish).await {
                    Ok(code) => code,
                    Err(e) => format!("error:{}", e.to_string().replace(' ', "_")),
                };
                println!("{addr} {} {code}", what.replace(' ', "_"));
            }
        }
        endpoint.wait_idle().await;
        anyhow::Ok(())
    })?;
    noise(&targets)
}

async fn send(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    addr: SocketAddr,
    name: &str,
    bytes: &[u8],
    finish: bool,
) -> anyhow::Result<String> {
    let conn = endpoint.connect_with(client.clone(), addr, name)?.await?;
    let mut stream = conn.open_uni().await?;
    stream.write_all(bytes).await?;
    if finish {
        stream.finish()?;
    }
    match tokio::time::timeout(CLOSE_DEADLINE, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            Ok(close.error_code.into_inner().to_string())
        }
        Ok(other) => Ok(format!("closed:{}", other.to_string().replace(' ', "_"))),
        Err(_) => {
            conn.close(0u32.into(), b"intruder gives up");
            Ok("open".into())
        }
    }
}

/// 2,000 datagrams of noise to each agent, half of them shaped like QUIC long headers.
fn noise(targets: &[(String, SocketAddr)]) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (_, addr) in targets {
        for i in 0..2_000usize {
            let len = 1 + (i * 37) % 1400;
            let datagram: Vec<u8> = (0..len)
                .map(|j| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let b = x.to_le_bytes()[0];
                    if j == 0 && i % 2 == 0 { 0xc0 | b } else { b }
                })
                .collect();
            socket.send_to(&datagram, addr)?;
        }
    }
    Ok(())
}

/// The intruders' agents: `rogue` claims to be `vps` with a certificate of another CA,
/// `mallory` has a valid certificate for a name nobody lists.
fn start_intruders(s: &mut Suite) -> anyhow::Result<Vec<Agent>> {
    let work = s.work.clone();
    let foreign_ca = work.join("foreign-ca");
    if !foreign_ca.join("ca.crt").exists() {
        pom::pki::init_ca(&foreign_ca, 365, false).context("creating the foreign CA")?;
    }
    let peers: Vec<_> = NAMES.iter().map(|n| s.net.host(n).clone()).collect();
    let mut rogue = Agent::prepare(
        &work,
        &foreign_ca,
        &s.pom,
        "vps",
        s.net.host("rogue"),
        &peers,
        &s.shared,
    )?;
    let mut mallory = Agent::prepare(
        &work,
        &s.mesh_ca,
        &s.pom,
        "mallory",
        s.net.host("mallory"),
        &peers,
        &s.shared,
    )?;
    rogue.spawn()?;
    mallory.spawn()?;
    rogue.wait_ready()?;
    mallory.wait_ready()?;
    Ok(vec![rogue, mallory])
}

/// Runs the garbage sender in `rogue`'s namespace with the certificate of `third`.
fn send_garbage(s: &Suite) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe()?;
    let certs = s.agent_ref("third").home.join("mesh");
    let mut args = vec![
        exe.display().to_string(),
        "garbage".into(),
        certs.display().to_string(),
        "third".into(),
    ];
    for name in ["edge", "vps"] {
        args.push(format!("{name}@{}:{MESH_PORT}", s.net.host(name).ip));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = exec(&s.net.host("rogue").ns, &argv)?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// What an agent shows of the intruders: a peer it should not list, a peer of its own not
/// alive and connected, a vote of someone else. Empty when all is well.
fn trespass(agent: &Agent) -> Vec<String> {
    let mut out = Vec::new();
    let Some(mesh) = agent.json("/api/mesh") else {
        return vec![format!("{}: no /api/mesh", agent.name)];
    };
    let peers = mesh["peers"].as_array().cloned().unwrap_or_default();
    for p in &peers {
        let name = p["name"].as_str().unwrap_or("?");
        if !NAMES.contains(&name) || name == agent.name {
            out.push(format!("{} lists peer {name}", agent.name));
        } else if p["state"] != "alive" || p["connected"] != true {
            out.push(format!(
                "{} sees {name} {} (connected: {})",
                agent.name, p["state"], p["connected"]
            ));
        }
    }
    if peers.len() != NAMES.len() - 1 {
        out.push(format!("{} lists {} peers", agent.name, peers.len()));
    }
    let status = agent.json("/api/status").unwrap_or_default();
    for check in status["checks"].as_array().into_iter().flatten() {
        for voter in check["votes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !NAMES.contains(&voter.as_str()) {
                out.push(format!(
                    "{}: a vote of {voter} on {}",
                    agent.name, check["id"]
                ));
            }
        }
    }
    out
}

/// Scenario 10.
pub(crate) fn intruders(s: &mut Suite) -> Outcome {
    let mut out = Outcome {
        scenario: "10 intruders: another CA, an unlisted name, garbage frames".into(),
        expected: "every intruder refused (garbage: close code 3, 12 of 12), none listed or voting, peers alive, 0 alerts".into(),
        ..Outcome::default()
    };
    play(s, &mut out, |s, _, out| {
        let mut intruders = start_intruders(s)?;
        // The intruders try for a while: every agent keeps probing and heart-beating.
        s.wait_runs(20)?;
        let lines = send_garbage(s)?;
        let expected = garbage("third")?.len() * 2;
        if lines.len() != expected {
            bail!(
                "the garbage sender reported {} connections, not {expected}: {lines:?}",
                lines.len()
            );
        }
        for line in &lines {
            if !line.ends_with(&format!(" {CLOSE_PROTOCOL}")) {
                out.deviations
                    .push(format!("garbage not closed as a protocol error: {line}"));
            }
        }
        s.wait_runs(20)?;
        for a in &s.agents {
            out.deviations.extend(trespass(a));
        }
        // The intruders got nowhere either: no peer of theirs is connected.
        for i in &intruders {
            let mesh = i.json("/api/mesh").unwrap_or_default();
            for p in mesh["peers"].as_array().into_iter().flatten() {
                if p["connected"] == true {
                    out.deviations.push(format!(
                        "intruder {} ({}) is connected to {}",
                        i.name, i.host.name, p["name"]
                    ));
                }
            }
        }
        for i in &mut intruders {
            i.kill("-9")?;
        }
        Ok(Vec::new())
    });
    out
}
