//! The mesh transport: QUIC (quinn) on one UDP port, mutual TLS, one connection per peer.
//!
//! This is the only module that knows quinn. It carries [`Frame`]s between agents and reports
//! [`Event`]s; what the frames mean is the monitor's business.
//!
//! - **One endpoint** serves and dials. Both sides of a pair dial (so a peer that comes back is
//!   reconnected at once, by whichever side notices first); when two connections of one pair
//!   meet, both sides keep the same one: the connection to the newer instance of the peer, else
//!   the one dialed by the smaller agent name. The other is closed.
//! - **Who is it?** The client certificate is required and must chain to the mesh CA. The name
//!   in it must be a configured peer, or the connection is closed (and logged, at most once per
//!   address per minute). The first frame must be a Hello with that same name.
//! - **Frames** go on one unidirectional stream per direction, length-prefixed
//!   ([`mesh_proto::codec`]). A peer that sends a malformed, oversized or truncated frame, or an
//!   unknown protocol version, is disconnected. Each connection has a bounded send queue: when
//!   a peer cannot keep up, frames to it are dropped (and counted), never buffered without end.
//! - **Timing:** connects time out after [`CONNECT_TIMEOUT`]; failed dials back off from 100 ms
//!   to [`MAX_BACKOFF`] with jitter; QUIC keep-alives every [`KEEP_ALIVE`], well inside the
//!   [`IDLE_TIMEOUT`].
//! - **Reload:** [`Transport::reload`] swaps the TLS configs for new connections; live ones are
//!   kept (`Endpoint::set_server_config`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mesh_proto::codec::{self, FrameDecoder};
use mesh_proto::{Bye, Frame, FrameV1, Hello, PROTOCOL_VERSION};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::{mpsc, watch};

use super::tls::{MeshTls, cert_names, cert_not_after};

/// How long a dial may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest pause between two dials of an unreachable peer.
pub const MAX_BACKOFF: Duration = Duration::from_millis(800);
/// QUIC keep-alive period.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A connection without any packet for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one peer before more are dropped.
const SEND_QUEUE: usize = 512;
/// How long the first frame (Hello) may take after the handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Application close codes.
const CLOSE_DUPLICATE: u32 = 1;
const CLOSE_REFUSED: u32 = 2;
const CLOSE_PROTOCOL: u32 = 3;
const CLOSE_SHUTDOWN: u32 = 4;

/// What the transport reports.
#[derive(Debug)]
pub enum Event {
    /// A connection to `peer` is up and its Hello arrived. Sent again after a reconnect.
    Connected {
        /// The peer.
        peer: String,
        /// Its Hello.
        hello: Hello,
        /// When its certificate expires (Unix seconds).
        cert_not_after: Option<i64>,
    },
    /// A frame from `peer` (never a Hello: that comes with [`Event::Connected`]).
    Frame {
        /// The peer.
        peer: String,
        /// The frame.
        frame: FrameV1,
    },
    /// The connection to `peer` is gone.
    Disconnected {
        /// The peer.
        peer: String,
        /// Why, for logs.
        reason: String,
    },
}

/// Why the transport cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket cannot be bound.
    #[error("cannot listen on {addr} (UDP): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configs do not suit QUIC.
    #[error("mesh TLS config unusable for QUIC: {0}")]
    Crypto(String),
}

/// The peers to dial: name → `host:port`.
pub type PeerAddrs = BTreeMap<String, String>;

/// A live connection to one peer.
#[derive(Debug)]
struct Link {
    conn: quinn::Connection,
    /// The peer's instance id (from its Hello).
    instance: String,
    /// Whether this side dialed it.
    dialed_by_me: bool,
    frames: mpsc::Sender<Arc<[u8]>>,
}

#[derive(Debug)]
struct Shared {
    me: String,
    peers: Mutex<PeerAddrs>,
    links: Mutex<HashMap<String, Link>>,
    events: mpsc::Sender<Event>,
    hello: Mutex<Hello>,
    dropped: AtomicU64,
    /// Woken whenever a registered link ends, so the dial loops try again at once.
    link_lost: tokio::sync::Notify,
    refused_log: Mutex<HashMap<SocketAddr, Instant>>,
}

/// The running transport. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Transport {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    client: Arc<Mutex<quinn::ClientConfig>>,
    shutdown: watch::Sender<bool>,
}

impl Transport {
    /// Binds `listen`, accepts peers and dials every one of `peers`. Events go to `events`.
    /// `hello` is what this agent says first on each connection.
    pub fn start(
        listen: SocketAddr,
        tls: &MeshTls,
        peers: PeerAddrs,
        hello: Hello,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, TransportError> {
        let server = server_config(tls)?;
        let client = client_config(tls)?;
        let socket = std::net::UdpSocket::bind(listen).map_err(|source| TransportError::Bind {
            addr: listen,
            source,
        })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| TransportError::Bind {
            addr: listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            me: hello.name.clone(),
            peers: Mutex::new(peers.clone()),
            links: Mutex::new(HashMap::new()),
            events,
            hello: Mutex::new(hello),
            dropped: AtomicU64::new(0),
            link_lost: tokio::sync::Notify::new(),
            refused_log: Mutex::new(HashMap::new()),
        });
        let (shutdown, _) = watch::channel(false);
        let transport = Self {
            endpoint,
            shared,
            client: Arc::new(Mutex::new(client)),
            shutdown,
        };
        tokio::spawn(transport.clone().accept_loop());
        for name in peers.keys() {
            tokio::spawn(transport.clone().dial_loop(name.clone()));
        }
        Ok(transport)
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Queues `frame` for `peer`; false if it is not connected or its queue is full.
    pub fn send(&self, peer: &str, frame: FrameV1) -> bool {
        let Ok(bytes) = codec::encode(&Frame::V1(frame)) else {
            tracing::error!("refusing to send an invalid frame");
            return false;
        };
        self.send_bytes(peer, bytes.into())
    }

    /// Queues `frame` for every connected peer.
    pub fn broadcast(&self, frame: FrameV1) {
        let Ok(bytes) = codec::encode(&Frame::V1(frame)) else {
            tracing::error!("refusing to send an invalid frame");
            return;
        };
        let bytes: Arc<[u8]> = bytes.into();
        let peers: Vec<String> = lock(&self.shared.links).keys().cloned().collect();
        for peer in peers {
            self.send_bytes(&peer, bytes.clone());
        }
    }

    fn send_bytes(&self, peer: &str, bytes: Arc<[u8]>) -> bool {
        let links = lock(&self.shared.links);
        let Some(link) = links.get(peer) else {
            return false;
        };
        if link.frames.try_send(bytes).is_ok() {
            true
        } else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// The round-trip time to `peer`, if connected.
    pub fn rtt(&self, peer: &str) -> Option<Duration> {
        lock(&self.shared.links).get(peer).map(|l| l.conn.rtt())
    }

    /// UDP bytes sent to and received from `peer` on its current connection.
    pub fn udp_bytes(&self, peer: &str) -> Option<(u64, u64)> {
        lock(&self.shared.links).get(peer).map(|l| {
            let stats = l.conn.stats();
            (stats.udp_tx.bytes, stats.udp_rx.bytes)
        })
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &str) -> bool {
        lock(&self.shared.links).contains_key(peer)
    }

    /// Frames dropped because a peer's queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Updates what the next Hellos say (the config hash changes on reload).
    pub fn set_hello(&self, hello: Hello) {
        *lock(&self.shared.hello) = hello;
    }

    /// New certificates and peers: new connections use them, live ones are kept unless their
    /// peer was removed.
    pub fn reload(&self, tls: &MeshTls, peers: PeerAddrs) -> Result<(), TransportError> {
        let server = server_config(tls)?;
        let client = client_config(tls)?;
        self.endpoint.set_server_config(Some(server));
        *lock(&self.client) = client;
        let added: Vec<String> = {
            let mut current = lock(&self.shared.peers);
            let added = peers
                .keys()
                .filter(|p| !current.contains_key(*p))
                .cloned()
                .collect();
            *current = peers.clone();
            added
        };
        let removed: Vec<(String, quinn::Connection)> = lock(&self.shared.links)
            .iter()
            .filter(|(name, _)| !peers.contains_key(*name))
            .map(|(name, link)| (name.clone(), link.conn.clone()))
            .collect();
        for (name, conn) in removed {
            conn.close(CLOSE_REFUSED.into(), b"no longer a peer");
            tracing::info!(peer = %name, "peer removed from the config; disconnected");
        }
        for name in added {
            tokio::spawn(self.clone().dial_loop(name));
        }
        Ok(())
    }

    /// Says Bye to every peer and closes the endpoint.
    pub async fn shutdown(&self, reason: &str) {
        let _ = self.shutdown.send(true);
        let links: Vec<(quinn::Connection, mpsc::Sender<Arc<[u8]>>)> = lock(&self.shared.links)
            .values()
            .map(|l| (l.conn.clone(), l.frames.clone()))
            .collect();
        let bye = codec::encode(&Frame::V1(FrameV1::Bye(Bye {
            reason: reason.to_owned(),
        })))
        .ok();
        for (_, frames) in &links {
            if let Some(bye) = &bye {
                let _ = frames.try_send(bye.clone().into());
            }
        }
        // Give the Byes a moment to leave, bounded.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            for (_, frames) in &links {
                while frames.capacity() < frames.max_capacity() && !frames.is_closed() {
                    tokio::task::yield_now().await;
                    if frames.capacity() == frames.max_capacity() {
                        break;
                    }
                }
            }
        })
        .await;
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), reason.as_bytes());
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn accept_loop(self) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let incoming = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                incoming = self.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { return };
            let this = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match tokio::time::timeout(CONNECT_TIMEOUT, incoming).await {
                    Ok(Ok(conn)) => this.establish(conn, None).await,
                    Ok(Err(e)) => this.refused(remote, &format!("handshake failed: {e}")),
                    Err(_) => this.refused(remote, "handshake timed out"),
                }
            });
        }
    }

    async fn dial_loop(self, peer: String) {
        let mut stop = self.shutdown.subscribe();
        let mut failures: u32 = 0;
        let mut rng = Jitter::new(&peer);
        loop {
            if self.stopping() {
                return;
            }
            let Some(addr) = lock(&self.shared.peers).get(&peer).cloned() else {
                return; // removed by a reload
            };
            if !self.is_connected(&peer) {
                match self.dial(&peer, &addr).await {
                    Ok(conn) if self.is_connected(&peer) => {
                        // The peer dialed us meanwhile (a dial can take a second when its first
                        // packet found nobody listening): keep that link, drop this one before
                        // its Hello, so neither side ever registers it.
                        failures = 0;
                        conn.close(CLOSE_DUPLICATE.into(), b"already connected");
                    }
                    Ok(conn) => {
                        failures = 0;
                        self.establish(conn, Some(peer.clone())).await;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        if failures == 1 || failures.is_power_of_two() {
                            tracing::debug!(peer = %peer, addr = %addr, failures, "cannot reach peer: {e}");
                        }
                    }
                }
            }
            // Registered before the check, so a link lost in between still wakes this loop.
            let lost = self.shared.link_lost.notified();
            let pause = if self.is_connected(&peer) {
                // Connected (by either side): dial again as soon as a link is lost, or look
                // again after a while.
                MAX_BACKOFF * 4
            } else {
                rng.backoff(failures)
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = lost => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn dial(&self, peer: &str, addr: &str) -> Result<quinn::Connection, String> {
        let target = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(addr))
            .await
            .map_err(|_| "address lookup timed out".to_owned())?
            .map_err(|e| format!("cannot resolve {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} resolves to nothing"))?;
        let server_name = ServerName::try_from(peer.to_owned())
            .map_err(|e| format!("peer name {peer:?} is not a valid certificate name: {e}"))?;
        let client = lock(&self.client).clone();
        let connecting = self
            .endpoint
            .connect_with(client, target, &server_name.to_str())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("connect timed out after {CONNECT_TIMEOUT:?}")),
        }
    }

    /// Logs a refused connection, at most once a minute per address.
    fn refused(&self, remote: SocketAddr, why: &str) {
        let now = Instant::now();
        let mut log = lock(&self.shared.refused_log);
        if log.len() > 1024 {
            log.retain(|_, at| now.duration_since(*at) < Duration::from_secs(60));
        }
        let due = log
            .get(&remote)
            .is_none_or(|at| now.duration_since(*at) >= Duration::from_secs(60));
        if due && log.len() <= 1024 {
            log.insert(remote, now);
            tracing::warn!(remote = %remote, "mesh connection refused: {why}");
        }
    }

    /// Runs one connection: identifies the peer, exchanges Hellos, registers the link (settling
    /// a race with an existing one), then reads frames until it ends.
    async fn establish(&self, conn: quinn::Connection, dialed: Option<String>) {
        let remote = conn.remote_address();
        let certs = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok());
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            conn.close(CLOSE_REFUSED.into(), b"no certificate");
            self.refused(remote, "no client certificate");
            return;
        };
        let names = cert_names(leaf);
        let peer = match &dialed {
            Some(name) => name.clone(), // the handshake checked the server's name
            None => {
                let known = lock(&self.shared.peers);
                match names
                    .iter()
                    .find(|n| known.contains_key(*n) && **n != self.shared.me)
                {
                    Some(n) => n.clone(),
                    None => {
                        drop(known);
                        conn.close(CLOSE_REFUSED.into(), b"not a configured peer");
                        self.refused(
                            remote,
                            &format!("certificate names {names:?}, not a configured peer"),
                        );
                        return;
                    }
                }
            }
        };
        let cert_not_after = cert_not_after(leaf);
        let hello = lock(&self.shared.hello).clone();
        // Open our stream and say Hello; read theirs.
        let (tx, rx) = mpsc::channel::<Arc<[u8]>>(SEND_QUEUE);
        let Ok(first) = codec::encode(&Frame::V1(FrameV1::Hello(hello))) else {
            return;
        };
        let _ = tx.try_send(first.into());
        tokio::spawn(write_loop(conn.clone(), rx));
        let mut reader = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_uni()).await {
            Ok(Ok(stream)) => FrameReader::new(stream),
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, "connection ended before its stream opened: {e}");
                return;
            }
            Err(_) => {
                conn.close(CLOSE_PROTOCOL.into(), b"no hello");
                tracing::warn!(peer = %peer, "peer sent no Hello; disconnected");
                return;
            }
        };
        let their_hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
            Ok(Ok(Some(FrameV1::Hello(h)))) => h,
            Ok(Ok(Some(_))) => {
                return self.protocol_error(&conn, &peer, "the first frame is not a Hello");
            }
            Ok(Ok(None) | Err(ReadError::Lost(_))) => return,
            Ok(Err(e)) => return self.protocol_error(&conn, &peer, &e.to_string()),
            Err(_) => return self.protocol_error(&conn, &peer, "no Hello in time"),
        };
        if their_hello.name != peer {
            return self.protocol_error(
                &conn,
                &peer,
                &format!(
                    "Hello names {:?}, the certificate {peer:?}",
                    their_hello.name
                ),
            );
        }
        if their_hello.protocol_version < 1 {
            return self.protocol_error(&conn, &peer, "protocol version 0");
        }
        if !self.register(&peer, &conn, &their_hello.instance_id, dialed.is_some(), tx) {
            conn.close(CLOSE_DUPLICATE.into(), b"duplicate connection");
            return;
        }
        let version = their_hello.protocol_version.min(PROTOCOL_VERSION);
        tracing::info!(peer = %peer, remote = %remote, version = %their_hello.agent_version,
            protocol = version, "peer connected");
        let _ = self
            .shared
            .events
            .send(Event::Connected {
                peer: peer.clone(),
                hello: their_hello,
                cert_not_after,
            })
            .await;
        let reason = loop {
            match reader.next().await {
                Ok(Some(FrameV1::Bye(bye))) => break format!("said bye: {}", bye.reason),
                Ok(Some(FrameV1::Hello(_))) => {
                    self.protocol_error(&conn, &peer, "a second Hello");
                    break "protocol error".to_owned();
                }
                Ok(Some(frame)) => {
                    let event = Event::Frame {
                        peer: peer.clone(),
                        frame,
                    };
                    if self.shared.events.send(event).await.is_err() {
                        break "shutting down".to_owned();
                    }
                }
                Ok(None) => break "stream closed".to_owned(),
                Err(ReadError::Lost(e)) => break e,
                Err(e) => {
                    self.protocol_error(&conn, &peer, &e.to_string());
                    break e.to_string();
                }
            }
        };
        conn.close(CLOSE_SHUTDOWN.into(), b"done");
        let still_ours = {
            let mut links = lock(&self.shared.links);
            let ours = links
                .get(&peer)
                .is_some_and(|l| l.conn.stable_id() == conn.stable_id());
            if ours {
                links.remove(&peer);
                self.shared.link_lost.notify_waiters();
            }
            ours
        };
        if still_ours {
            tracing::info!(peer = %peer, "peer disconnected: {reason}");
            let _ = self
                .shared
                .events
                .send(Event::Disconnected { peer, reason })
                .await;
        }
    }

    /// Registers a new link to `peer`, or refuses it when the existing one wins: the link to
    /// the newer instance wins, else the one dialed by the smaller name. Returns whether the new
    /// one is kept.
    fn register(
        &self,
        peer: &str,
        conn: &quinn::Connection,
        instance: &str,
        dialed_by_me: bool,
        frames: mpsc::Sender<Arc<[u8]>>,
    ) -> bool {
        let mut links = lock(&self.shared.links);
        if let Some(old) = links.get(peer) {
            let same_instance = old.instance == instance;
            let old_alive = old.conn.close_reason().is_none();
            if same_instance && old_alive {
                let me_smaller = self.shared.me.as_str() < peer;
                // The connection dialed by the smaller name wins.
                let new_wins = dialed_by_me == me_smaller && old.dialed_by_me != me_smaller;
                if !new_wins {
                    return false;
                }
            }
            old.conn
                .close(CLOSE_DUPLICATE.into(), b"replaced by a newer connection");
        }
        links.insert(
            peer.to_owned(),
            Link {
                conn: conn.clone(),
                instance: instance.to_owned(),
                dialed_by_me,
                frames,
            },
        );
        true
    }

    fn protocol_error(&self, conn: &quinn::Connection, peer: &str, why: &str) {
        tracing::warn!(peer = %peer, "mesh protocol error, disconnecting: {why}");
        conn.close(CLOSE_PROTOCOL.into(), b"protocol error");
    }
}

/// Writes queued frames to a fresh unidirectional stream until the queue or connection ends.
async fn write_loop(conn: quinn::Connection, mut frames: mpsc::Receiver<Arc<[u8]>>) {
    let Ok(mut stream) = conn.open_uni().await else {
        return;
    };
    while let Some(bytes) = frames.recv().await {
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = stream.finish();
}

/// Reads length-prefixed frames from a peer's stream.
struct FrameReader {
    stream: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader").finish_non_exhaustive()
    }
}

impl FrameReader {
    fn new(stream: quinn::RecvStream) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(),
            buf: vec![0; 16 * 1024],
        }
    }

    /// The next frame; `None` at a clean end of stream; an error for malformed input (an
    /// unknown frame version decodes as an error too: V1 is the only variant).
    async fn next(&mut self) -> Result<Option<FrameV1>, ReadError> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(Frame::V1(frame))) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Malformed(e.to_string())),
            }
            match self.stream.read(&mut self.buf).await {
                Ok(Some(n)) => self
                    .decoder
                    .push(&self.buf[..n])
                    .map_err(|e| ReadError::Malformed(e.to_string()))?,
                Ok(None) => {
                    return self
                        .decoder
                        .finish()
                        .map(|()| None)
                        .map_err(|e| ReadError::Malformed(e.to_string()));
                }
                Err(e) => return Err(ReadError::Lost(e.to_string())),
            }
        }
    }
}

/// Why reading a peer's frames stopped.
#[derive(Debug)]
enum ReadError {
    /// The connection went away.
    Lost(String),
    /// The peer sent bytes that are not a valid frame.
    Malformed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lost(e) => write!(f, "connection lost: {e}"),
            Self::Malformed(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

fn server_config(tls: &MeshTls) -> Result<quinn::ServerConfig, TransportError> {
    let crypto = QuicServerConfig::try_from(tls.server.clone())
        .map_err(|e| TransportError::Crypto(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

fn client_config(tls: &MeshTls) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(tls.client.clone())
        .map_err(|e| TransportError::Crypto(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config.keep_alive_interval(Some(KEEP_ALIVE));
    config.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    // Frames travel on one unidirectional stream per direction.
    config.max_concurrent_bidi_streams(0u8.into());
    config.max_concurrent_uni_streams(1u8.into());
    Arc::new(config)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Dial backoff with jitter: 100 ms doubling to [`MAX_BACKOFF`], each pause drawn between half
/// and all of it, so agents restarted together do not dial in lockstep.
#[derive(Debug)]
struct Jitter(u64);

impl Jitter {
    fn new(seed: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut s = u64::from(nanos);
        for b in seed.bytes() {
            s = s.rotate_left(5) ^ u64::from(b);
        }
        Self(s | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let full = Duration::from_millis(100)
            .saturating_mul(1 << failures.min(4))
            .min(MAX_BACKOFF);
        let full_ms = u64::try_from(full.as_millis()).unwrap_or(800);
        let half = full_ms / 2;
        Duration::from_millis(half + self.next() % (full_ms - half + 1))
    }
}
