//! A UDP relay on loopback that the demo can cut: the stand-in for the network between two
//! agents.
//!
//! One relay carries one ordered pair of agents, `from` → `to`. Agent `from` is told that `to`
//! listens on the relay's address. The relay forwards each datagram it receives there to `to`'s
//! real QUIC port, from a socket of its own, and forwards what comes back to the address it
//! last heard `from` on. Both directions of every connection `from` dials go through it.
//!
//! A cut relay drops every datagram, both ways, as a dead link would: QUIC sees silence, not
//! an error. The relay owns its two sockets and stops when dropped.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The largest datagram relayed (QUIC's are far smaller).
const MAX_DATAGRAM: usize = 65_535;

/// What the relay task and its owner share.
#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    /// Counts one datagram; whether it goes through.
    fn pass(&self) -> bool {
        if self.cut.load(Ordering::SeqCst) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        } else {
            self.forwarded.fetch_add(1, Ordering::Relaxed);
            true
        }
    }
}

/// A running relay. See the [module docs](self).
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Listens on a free loopback port and relays to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let front = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let back = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        back.connect(upstream).await?;
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(relay(front, back, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// Where the client sends its datagrams.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the link both ways (`true`: every datagram is dropped) or restores it.
    pub fn set_cut(&self, cut: bool) {
        self.shared.cut.store(cut, Ordering::SeqCst);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Datagrams forwarded so far, both ways.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Datagrams dropped so far, both ways.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// The relay loop. Receive errors are transient on UDP (an ICMP "port unreachable" from an
/// upstream not listening yet shows up as a refused `recv`) and are skipped; a failed send is a
/// lost datagram, which QUIC recovers from.
async fn relay(front: UdpSocket, back: UdpSocket, shared: Arc<Shared>) {
    let mut client: Option<SocketAddr> = None;
    let mut up = vec![0u8; MAX_DATAGRAM];
    let mut down = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = front.recv_from(&mut up) => {
                let Ok((len, from)) = received else { continue };
                client = Some(from);
                if shared.pass() {
                    let _ = back.send(&up[..len]).await;
                }
            }
            received = back.recv(&mut down) => {
                let Ok(len) = received else { continue };
                let Some(to) = client else { continue };
                if shared.pass() {
                    let _ = front.send_to(&down[..len], to).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// An echo server on loopback: answers every datagram with `echo:` and the datagram.
    async fn echo() -> (SocketAddr, JoinHandle<()>) {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let mut answer = b"echo:".to_vec();
                answer.extend_from_slice(&buf[..len]);
                let _ = socket.send_to(&answer, from).await;
            }
        });
        (addr, task)
    }

    /// The next datagram `socket` receives, and where from.
    async fn next(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (len, from) = tokio::time::timeout(DEADLINE, socket.recv_from(&mut buf))
            .await
            .expect("a datagram in time")
            .unwrap();
        (buf[..len].to_vec(), from)
    }

    /// Polls until the relay has dropped `n` datagrams.
    async fn until_dropped(relay: &Relay, n: u64) {
        let deadline = Instant::now() + DEADLINE;
        while relay.dropped() < n {
            assert!(Instant::now() < deadline, "timed out waiting for {n} drops");
            tokio::time::sleep(Duration::from_millis(5)).await; // poll interval, not a wait
        }
    }

    #[tokio::test]
    async fn forwards_both_ways_and_drops_everything_while_cut() {
        let (server, _echo) = echo().await;
        let relay = Relay::start(server).await.unwrap();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();

        client.send_to(b"one", relay.addr()).await.unwrap();
        let (answer, from) = next(&client).await;
        assert_eq!(answer, b"echo:one");
        assert_eq!(from, relay.addr(), "answers come from the relay's address");
        assert_eq!(relay.forwarded(), 2, "the datagram and its answer");

        relay.set_cut(true);
        assert!(relay.is_cut());
        client.send_to(b"two", relay.addr()).await.unwrap();
        until_dropped(&relay, 1).await;

        relay.set_cut(false);
        client.send_to(b"three", relay.addr()).await.unwrap();
        let (answer, _) = next(&client).await;
        assert_eq!(answer, b"echo:three", "restored, and `two` never arrived");
        assert_eq!((relay.forwarded(), relay.dropped()), (4, 1));
    }

    #[tokio::test]
    async fn drops_answers_too_while_cut() {
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let relay = Relay::start(server.local_addr().unwrap()).await.unwrap();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        client.send_to(b"ping", relay.addr()).await.unwrap();
        let (request, relay_side) = next(&server).await;
        assert_eq!(request, b"ping");
        assert_ne!(
            relay_side,
            client.local_addr().unwrap(),
            "sent from the relay's own socket"
        );

        // The link is cut after the request went through: the answer is dropped.
        relay.set_cut(true);
        server.send_to(b"lost", relay_side).await.unwrap();
        until_dropped(&relay, 1).await;

        relay.set_cut(false);
        server.send_to(b"pong", relay_side).await.unwrap();
        let (answer, _) = next(&client).await;
        assert_eq!(
            answer, b"pong",
            "the answer reaches the client again; `lost` never did"
        );
    }
}
