//! `pom demo`: a first run that shows something real with no setup and no network.
//!
//! It starts local services on loopback (and a local DNS server), each playing a failure PoM
//! exists to catch: a healthy shop; an edge proxy answering `404 page not found` with Traefik's
//! self-signed default certificate, whose DNS record has drifted; an API whose certificate expires in 5 days and whose health body says the
//! database is down; a service that is not running at all. It writes a `pom.toml` for them and
//! runs exactly what `pom check` runs.

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use time::Duration;

use super::check::check_and_print;
use super::{DemoArgs, Output};
use crate::config;
use crate::testbed::certs::{Leaf, TestCa, traefik_default};
use crate::testbed::dns::{DnsServer, Zone};
use crate::testbed::http::TestServer;

pub(super) async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let ca = TestCa::new("PoM Demo CA")?;
    let ca_file = dir.path().join("demo-ca.crt");
    std::fs::write(&ca_file, ca.cert_pem()).context("writing the demo CA")?;

    let shop_cert = ca.issue(&Leaf::new(&["127.0.0.1", "localhost"]))?;
    let shop = TestServer::https(shop(), shop_cert.server_config()?).await?;
    let edge = TestServer::https(edge(), traefik_default()?.server_config()?).await?;
    let api_cert =
        ca.issue(&Leaf::new(&["127.0.0.1"]).expiring_in(Duration::days(5) + Duration::hours(1)))?;
    let api = TestServer::https(api(), api_cert.server_config()?).await?;
    let gone = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dns = DnsServer::start(
        Zone::new()
            .a("shop.example", [127, 0, 0, 1])
            .a("edge.example", [198, 51, 100, 9]),
    )
    .await?;

    let toml = format!(
        r#"# Written by `pom demo`: local services, each playing one failure.
[agent]
name = "demo"

[[targets]]
name = "shop"              # healthy
url = "https://127.0.0.1:{shop}"
ca_file = "demo-ca.crt"
  [targets.health]
  path = "/api/health"
  expect_json = {{ status = "ok" }}
  [targets.tls]
  [[targets.routes]]
  path = "/login"
  [[targets.routes]]
  path = "/api/pilot-request"
  method = "POST"
  body = "{{}}"
  expect_status = [200, 201, 422]
  [targets.cors]
  path = "/api/health"
  origin = "https://app.shop.example"
  method = "POST"
  headers = ["content-type"]
  [[targets.dns]]
  type = "A"
  name = "shop.example"
  expect = ["127.0.0.1"]
  nameserver = "{dns}"

[[targets]]
name = "edge"              # a proxy with no route and no certificate for the host
url = "https://127.0.0.1:{edge}"
ca_file = "demo-ca.crt"
  [targets.health]
  path = "/api/health"
  [targets.tls]
  [[targets.dns]]          # and its DNS record was changed behind our back
  type = "A"
  name = "edge.example"
  expect = ["203.0.113.7"]
  nameserver = "{dns}"

[[targets]]
name = "api"               # certificate expires in 5 days; health body reports trouble
url = "https://127.0.0.1:{api}"
ca_file = "demo-ca.crt"
  [targets.health]
  path = "/health"
  expect_json = {{ status = "ok" }}
  [targets.tls]

[[targets]]
name = "legacy"            # nothing listens any more
url = "http://127.0.0.1:{gone}"
  [targets.health]
  timeout = "2s"
  [[targets.tcp]]
  port = {gone}
"#,
        shop = shop.port(),
        edge = edge.port(),
        api = api.port(),
        dns = dns.addr(),
    );
    let config_path = dir.path().join("pom.toml");
    std::fs::write(&config_path, &toml).context("writing the demo config")?;

    if args.output == Output::Table {
        println!("PoM demo: four local services, each playing a failure PoM catches.");
        println!("  shop    healthy: health, TLS, routes, CORS and DNS all pass");
        println!("  edge    a proxy answering 404 with Traefik's self-signed default certificate,");
        println!("          and its DNS record no longer points where it should");
        println!("  api     certificate expires in 5 days; health says the database is down");
        println!("  legacy  the service is gone: nothing listens on its port");
        println!(
            "Config written to {} (this is what `pom check` ran):\n",
            config_path.display()
        );
    }

    let config = config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    check_and_print(&config, &[], 16, args.output).await?;
    if args.output == Output::Table {
        println!(
            "\n`pom check` would exit 2 here (some error or unreachable): the Nagios convention for a deploy gate."
        );
        println!("Try it on your own services: see README.md, \"Quick start on a real host\".");
    }
    Ok(0)
}

fn shop() -> Router {
    Router::new()
        .route(
            "/api/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok", "version": "1.4.2"})) })
                .options(cors_preflight),
        )
        .route("/login", get(|| async { "<form>login</form>" }))
        .route(
            "/api/pilot-request",
            post(|| async { (StatusCode::CREATED, "{}") }),
        )
}

async fn cors_preflight(headers: HeaderMap) -> (StatusCode, HeaderMap) {
    let mut answer = HeaderMap::new();
    if let Some(origin) = headers.get("origin") {
        answer.insert("access-control-allow-origin", origin.clone());
    }
    answer.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST"),
    );
    answer.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("content-type"),
    );
    (StatusCode::NO_CONTENT, answer)
}

fn edge() -> Router {
    Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
}

fn api() -> Router {
    Router::new().route(
        "/health",
        get(|| async { axum::Json(serde_json::json!({"status": "degraded", "db": "down"})) }),
    )
}
