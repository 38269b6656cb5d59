//! The local target of the `pom check` benchmark (`bench/check.sh`, `docs/benchmarks.md`).
//!
//! Usage: `bench_target DIR`
//!
//! Starts one plain HTTP and one HTTPS server on `127.0.0.1` (ephemeral ports, the library's
//! [`TestServer`]), both answering `GET /health` with a small JSON body, and writes into `DIR`:
//!
//! - `bench-ca.crt`: the throw-away CA that issued the HTTPS server's certificate;
//! - `http.toml`: 1,000 health targets on the HTTP server;
//! - `https.toml`: 1,000 health targets on the HTTPS server (`ca_file = "bench-ca.crt"`);
//! - `mixed.toml`: both sets, 2,000 targets.
//!
//! Every target of a file points at the same server under its own name, so `pom check` makes one
//! fresh connection (and, for HTTPS, one full TLS handshake) per target. Once the files are
//! written it prints `ready` on stdout, then serves until its stdin is closed (or it is killed).
//! Nothing listens anywhere but loopback.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use pom::testbed::certs::{Leaf, TestCa};
use pom::testbed::http::TestServer;

/// How many targets each of `http.toml` and `https.toml` holds.
const TARGETS: usize = 1000;

/// The CA file's name, relative to the configs.
const CA_FILE: &str = "bench-ca.crt";

fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: bench_target DIR (where to write bench-ca.crt and the configs)")?;
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow!("a rustls crypto provider was already installed"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(&dir))
}

async fn run(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let ca = TestCa::new("Bench CA").context("creating the bench CA")?;
    let ca_path = dir.join(CA_FILE);
    std::fs::write(&ca_path, ca.cert_pem())
        .with_context(|| format!("writing {}", ca_path.display()))?;
    let identity = ca
        .issue(&Leaf::new(&["127.0.0.1"]))
        .context("issuing the server certificate")?;
    let tls = identity
        .server_config()
        .context("building the TLS server config")?;

    let http = TestServer::http(router())
        .await
        .context("starting the HTTP server")?;
    let https = TestServer::https(router(), tls)
        .await
        .context("starting the HTTPS server")?;

    let http_targets = targets("h", "http", http.port(), None);
    let https_targets = targets("s", "https", https.port(), Some(CA_FILE));
    write(dir, "http.toml", &config("http", &[&http_targets]))?;
    write(dir, "https.toml", &config("https", &[&https_targets]))?;
    write(
        dir,
        "mixed.toml",
        &config("mixed", &[&http_targets, &https_targets]),
    )?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready").context("writing to stdout")?;
    stdout.flush().context("flushing stdout")?;
    drop(stdout);

    // Serve until stdin reaches end of file: the bench script holds it open while it measures.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = closed_tx.send(());
        })
        .context("starting the stdin watcher")?;
    let _ = closed_rx.await;

    drop((http, https));
    Ok(())
}

/// Answers `/health` with a small JSON body, like a typical health endpoint.
fn router() -> Router {
    Router::new().route(
        "/health",
        get(|| async {
            (
                [(CONTENT_TYPE, "application/json")],
                r#"{"status":"ok","version":"1.0.0"}"#,
            )
        }),
    )
}

/// `TARGETS` health targets named `{prefix}0001`… on `scheme://127.0.0.1:port`.
fn targets(prefix: &str, scheme: &str, port: u16, ca_file: Option<&str>) -> String {
    let mut out = String::new();
    for i in 1..=TARGETS {
        let _ = writeln!(out, "[[targets]]");
        let _ = writeln!(out, "name = \"{prefix}{i:04}\"");
        let _ = writeln!(out, "url = \"{scheme}://127.0.0.1:{port}\"");
        if let Some(ca_file) = ca_file {
            let _ = writeln!(out, "ca_file = \"{ca_file}\"");
        }
        let _ = writeln!(out, "  [targets.health]");
        let _ = writeln!(out, "  path = \"/health\"");
        let _ = writeln!(out);
    }
    out
}

/// A whole config: an `[agent]` section and the given target lists.
fn config(name: &str, target_lists: &[&str]) -> String {
    let mut out = format!(
        "# Written by `cargo run --example bench_target`: the {name} case of bench/check.sh.\n\
         [agent]\nname = \"bench\"\n\n"
    );
    for targets in target_lists {
        out.push_str(targets);
    }
    out
}

fn write(dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
