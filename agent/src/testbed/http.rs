//! Local HTTP(S) servers for an axum router, and raw TCP servers that misbehave on purpose.
//!
//! Servers bind `127.0.0.1:0`, serve from a background task, and stop when dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A server running in the background; dropping it stops it.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serves `router` over plain HTTP/1.1.
    pub async fn http(router: Router) -> io::Result<Self> {
        Self::serve(router, None).await
    }

    /// Serves `router` over HTTPS with `tls`.
    pub async fn https(router: Router, tls: Arc<ServerConfig>) -> io::Result<Self> {
        Self::serve(router, Some(TlsAcceptor::from(tls))).await
    }

    /// A server that misbehaves in the given way.
    pub async fn misbehaving(how: Misbehaviour) -> io::Result<Self> {
        let listener = listen()?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                match how {
                    Misbehaviour::BlackHole => held.push(stream),
                    other => {
                        tokio::spawn(other.act(stream));
                    }
                }
            }
        });
        Ok(Self { addr, task })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    async fn serve(router: Router, tls: Option<TlsAcceptor>) -> io::Result<Self> {
        let listener = listen()?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }
}

/// Binds `127.0.0.1:0` with a deep accept queue: at high probe concurrency, tokio's default
/// backlog of 128 overflows and the kernel's SYN retry adds a second to some probes.
fn listen() -> io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(1024)
}

/// Ways for a server to misbehave.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// Accept, then reset the connection (RST) without a byte.
    Reset,
    /// Accept and never answer, nor close.
    BlackHole,
    /// Read the request, answer with bytes that are not HTTP, close.
    Garbage,
    /// Answer 200 with a body that never ends.
    EndlessBody,
    /// Answer 200 with a body of this many bytes (sent as fast as it is read).
    HugeBody(u64),
    /// Read the request, then close without answering.
    CloseWithoutAnswer,
    /// Answer with a status line and a header that never ends.
    EndlessHeader,
}

impl Misbehaviour {
    async fn act(self, mut stream: TcpStream) {
        let mut request = [0u8; 4096];
        match self {
            Self::Reset => {
                // SO_LINGER 0 makes close() send RST instead of FIN.
                let _ = socket2_linger_zero(&stream);
                drop(stream);
            }
            Self::BlackHole => {}
            Self::Garbage => {
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage\r\n\r\n")
                    .await;
            }
            Self::CloseWithoutAnswer => {
                let _ = stream.read(&mut request).await;
            }
            Self::EndlessHeader => {
                let _ = stream.read(&mut request).await;
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nx-flood: ")
                    .await
                    .is_err()
                {
                    return;
                }
                let chunk = vec![b'a'; 64 * 1024];
                while stream.write_all(&chunk).await.is_ok() {}
            }
            Self::EndlessBody => {
                let _ = stream.read(&mut request).await;
                let head =
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n";
                if stream.write_all(head).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                while stream.write_all(&chunk).await.is_ok() {}
            }
            Self::HugeBody(len) => {
                let _ = stream.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            }
        }
    }
}

fn socket2_linger_zero(stream: &TcpStream) -> io::Result<()> {
    #[allow(deprecated)] // blocking close is what we want: the RST goes out at once
    stream.set_linger(Some(std::time::Duration::ZERO))
}
