//! Bad input on the mesh port of a real `pom run`: garbage UDP, and a peer with a valid
//! certificate that sends malformed, oversized or truncated frames, an unknown frame version, or
//! a flood of ProbeNow. The agent drops or limits that peer, keeps running, and its memory stays
//! bounded.
//!
//! The misbehaving peer is this test, speaking QUIC with quinn and the mesh certificate of
//! `edge`. Every wait polls a condition with a deadline.

mod process;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use mesh_proto::codec;
use mesh_proto::{
    AlertEvent, CheckId, CheckKind, ConfigHash, Frame, FrameV1, Hello, LogEntry, LogState,
    Observation, ProbeNow, Status, Timestamp,
};
use pom::mesh::tls::MeshTls;
use pom::testbed::http::TestServer;
use process::*;
use quinn::crypto::rustls::QuicClientConfig;

/// The test's own certificate, as the configured peer `edge`.
struct Peer {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
}

impl Peer {
    fn new(certs: &Path) -> Self {
        let tls = MeshTls::load(
            &certs.join("ca.crt"),
            &certs.join("node.crt"),
            &certs.join("node.key"),
            "edge",
        )
        .unwrap();
        let crypto = QuicClientConfig::try_from(tls.client.clone()).unwrap();
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        Self {
            endpoint,
            client: quinn::ClientConfig::new(Arc::new(crypto)),
        }
    }

    async fn connect(&self, addr: SocketAddr) -> quinn::Connection {
        self.endpoint
            .connect_with(self.client.clone(), addr, "astra")
            .unwrap()
            .await
            .expect("a valid peer is accepted")
    }
}

fn hello(version: u16) -> Vec<u8> {
    codec::encode(&Frame::V1(FrameV1::Hello(Hello {
        protocol_version: version,
        name: "edge".into(),
        instance_id: "test-instance".into(),
        agent_version: "0.0.0-test".into(),
        config_hash: ConfigHash([0; 32]),
        wall_clock: Timestamp(pom::monitor::now().as_millis()),
    })))
    .unwrap()
}

/// Sends `bytes` after a Hello (or instead of one) and waits until the agent closes the
/// connection; returns its close code.
async fn sent_then_closed(peer: &Peer, addr: SocketAddr, bytes: &[&[u8]], finish: bool) -> u64 {
    let conn = peer.connect(addr).await;
    let mut stream = conn.open_uni().await.unwrap();
    for chunk in bytes {
        stream.write_all(chunk).await.unwrap();
    }
    if finish {
        stream.finish().unwrap();
    }
    let error = tokio::time::timeout(DEADLINE, conn.closed())
        .await
        .expect("the agent closes the connection");
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
        other => panic!("expected an application close, got {other}"),
    }
}

/// A vote of edge's on `shop/health`: once the agent shows it, it has handled every frame sent
/// before it on the same stream.
fn marker_for(status: Status) -> Vec<u8> {
    codec::encode(&Frame::V1(FrameV1::Observations(vec![Observation {
        check: CheckId::new("shop", CheckKind::Health).unwrap(),
        status,
        latency_ms: None,
        detail: "marker".into(),
        at: pom::monitor::now(),
    }])))
    .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_on_the_mesh_port_is_dropped_and_the_agent_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    pom::pki::init_ca(&ca, 365, false).unwrap();
    let astra_certs = dir.path().join("astra-mesh");
    let edge_certs = dir.path().join("edge-mesh");
    pom::pki::issue("astra", &ca, &astra_certs, 30, false).unwrap();
    pom::pki::issue("edge", &ca, &edge_certs, 30, false).unwrap();
    let (_target, target_server): (Target, TestServer) = Target::start().await;
    let mesh_port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    // edge's address: a UDP port nothing answers on (the agent's dials to it fail quietly).
    let edge_port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let body = format!(
        "[mesh]\nlisten = \"127.0.0.1:{mesh_port}\"\nca_cert = \"{0}/ca.crt\"\ncert = \"{0}/node.crt\"\nkey = \"{0}/node.key\"\nheartbeat_interval = \"1s\"\n\n[[mesh.peers]]\nname = \"edge\"\naddr = \"127.0.0.1:{edge_port}\"\n\n",
        astra_certs.display()
    ) + &alerts_section("10s")
        + &target("shop", target_server.port(), "");
    let home = dir.path().join("astra");
    std::fs::create_dir_all(&home).unwrap();
    let mut agent = tokio::task::block_in_place(|| Agent::start_named(&home, "astra", &body, &[]));
    let addr: SocketAddr = format!("127.0.0.1:{mesh_port}").parse().unwrap();
    let pid = agent.child().id();
    let alive = |agent: &Agent| health(&agent.api).is_some();

    // 1. Garbage UDP: 20,000 datagrams of noise, some shaped like QUIC long headers.
    let noise = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..20_000u32 {
        let len = 1 + (i as usize * 37) % 1400;
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .enumerate()
            .map(|(j, b)| if j == 0 && i % 2 == 0 { 0xc0 | b } else { b })
            .collect();
        let _ = noise.send_to(&datagram, addr);
    }
    assert!(alive(&agent), "garbage UDP does not stop the agent");

    let peer = Peer::new(&edge_certs);
    const PROTOCOL: u64 = 3;

    // 2. A Hello, then bytes that are not a frame.
    let code = sent_then_closed(
        &peer,
        addr,
        &[&hello(1), &[0, 0, 0, 3, 0xff, 0xff, 0xff]],
        false,
    )
    .await;
    assert_eq!(code, PROTOCOL, "malformed frame");

    // 3. A length prefix far above MAX_FRAME_SIZE: refused before anything is buffered.
    let code = sent_then_closed(&peer, addr, &[&hello(1), &u32::MAX.to_be_bytes()], false).await;
    assert_eq!(code, PROTOCOL, "oversized frame");

    // 4. A truncated frame: the stream ends in the middle of it.
    let mut truncated = hello(1);
    truncated.truncate(truncated.len() / 2);
    let code = sent_then_closed(&peer, addr, &[&truncated], true).await;
    assert_eq!(code, PROTOCOL, "truncated frame");

    // 5. An unknown frame version (enum tag 1 = a future V2).
    let code = sent_then_closed(&peer, addr, &[&hello(1), &[0, 0, 0, 2, 1, 0]], false).await;
    assert_eq!(code, PROTOCOL, "unknown frame version");

    // 6. A first frame that is not a Hello.
    let probe = codec::encode(&Frame::V1(FrameV1::ProbeNow(ProbeNow {
        check: CheckId::new("shop", CheckKind::Health).unwrap(),
    })))
    .unwrap();
    let code = sent_then_closed(&peer, addr, &[&probe], false).await;
    assert_eq!(code, PROTOCOL, "no Hello first");

    assert!(alive(&agent));

    // 7. A Hello from a newer protocol is accepted (both speak the lower version); then a
    //    flood of ProbeNow is limited to one run per check per 2 s, and memory stays bounded.
    let conn = peer.connect(addr).await;
    let mut stream = conn.open_uni().await.unwrap();
    stream.write_all(&hello(7)).await.unwrap();
    tokio::task::block_in_place(|| {
        poll("astra to count edge as connected", || {
            let body =
                http_get(&format!("{}/api/mesh", agent.api), Some(TOKEN)).unwrap_or_default();
            let mesh: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            mesh["peers"][0]["connected"] == true
        });
    });
    let rss_before = rss_kib(pid);
    let runs_before = agent.runs();
    let started = std::time::Instant::now();
    let flood: Vec<u8> = std::iter::repeat_n(probe.as_slice(), 1_000)
        .flatten()
        .copied()
        .collect();
    for _ in 0..100 {
        stream.write_all(&flood).await.unwrap(); // 100,000 ProbeNow frames
    }
    // A vote after the flood: once the agent shows it, it has handled every frame before it.
    let marker = marker_for(Status::Error);
    stream.write_all(&marker).await.unwrap();
    tokio::task::block_in_place(|| {
        poll("the flood to be handled", || {
            agent.status()["checks"][0]["votes"]["edge"] == "error"
        });
    });
    let flood_secs = started.elapsed().as_secs_f64();
    let runs = agent.runs() - runs_before;
    // The schedule runs `shop/health` once a second; ProbeNow may add one run per 2 s.
    let allowed = 2 + (flood_secs * 1.5).ceil() as u64;
    assert!(
        runs <= allowed,
        "{runs} runs during a {flood_secs:.1} s flood (allowed {allowed})"
    );
    assert!(
        conn.close_reason().is_none(),
        "a well-formed flood is limited, not dropped"
    );
    let rss_after = rss_kib(pid);
    eprintln!("flood: {flood_secs:.2} s, {runs} runs, RSS {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 20 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(alive(&agent));

    // 8. Log entries about things not configured here are dropped, not kept for a day.
    for batch in 0..40 {
        let entries: Vec<LogEntry> = (0..256)
            .map(|i| LogEntry {
                subject: format!("made-up-{batch}-{i}/health"),
                incident: format!("made-up-{batch}-{i}/health@1"),
                event: AlertEvent::Firing,
                repeat: 0,
                sent_by: "edge".into(),
                at: pom::monitor::now(),
                state: LogState::Sending,
            })
            .collect();
        let frame = codec::encode(&Frame::V1(FrameV1::NotificationLog(entries))).unwrap();
        stream.write_all(&frame).await.unwrap();
    }
    let late = marker_for(Status::Operational);
    stream.write_all(&late).await.unwrap();
    tokio::task::block_in_place(|| {
        poll("the log flood to be handled", || {
            agent.status()["checks"][0]["votes"]["edge"] == "operational"
        });
        let body = http_get(&format!("{}/api/mesh", agent.api), Some(TOKEN)).unwrap();
        let mesh: serde_json::Value = serde_json::from_str(&body).unwrap();
        // What remains is astra's own claim of `config_drift:edge` (this test's Hello carries
        // another config hash), not one of the 10,240 made-up entries.
        let held = mesh["self"]["notifications"]["sending"].as_u64().unwrap()
            + mesh["self"]["notifications"]["sent"].as_u64().unwrap();
        assert!(held <= 2, "{mesh}");
    });
    conn.close(0u32.into(), b"done");
}
