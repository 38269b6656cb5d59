//! `pom ca init` and `pom cert issue` as the operator runs them, and the certificates they make
//! doing a real mutual-TLS handshake over loopback.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

fn pom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pom"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

fn ok(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn ca_init(dir: &Path) {
    ok(&pom(&["ca", "init", "--dir", dir.to_str().unwrap()]));
}

fn issue(name: &str, ca: &Path, out: &Path) -> Output {
    pom(&[
        "cert",
        "issue",
        name,
        "--ca-dir",
        ca.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

#[test]
fn ca_init_writes_a_leaf_only_ca_with_a_private_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ca_init(&ca);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    let cert_der = der(&ca.join("ca.crt"));
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    assert!(cert.is_ca());
    let constraints = cert.basic_constraints().unwrap().unwrap().value;
    assert_eq!(
        constraints.path_len_constraint,
        Some(0),
        "a CA of leaves only"
    );
    assert!(cert.subject().to_string().contains("CN=PoM mesh CA"));
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 3650, "validity set explicitly");

    let key_before = std::fs::read(ca.join("ca.key")).unwrap();
    let again = pom(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists; pass --force"));
    assert_eq!(
        std::fs::read(ca.join("ca.key")).unwrap(),
        key_before,
        "untouched"
    );

    ok(&pom(&[
        "ca",
        "init",
        "--dir",
        ca.to_str().unwrap(),
        "--force",
    ]));
    assert_ne!(std::fs::read(ca.join("ca.key")).unwrap(), key_before);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
}

#[test]
fn cert_issue_names_the_agent_in_cn_and_san_for_both_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path().join("edge"));
    ca_init(&ca);
    ok(&issue("edge", &ca, &out));
    assert_eq!(mode(&out.join("node.key")), 0o600);
    assert_eq!(
        std::fs::read(out.join("ca.crt")).unwrap(),
        std::fs::read(ca.join("ca.crt")).unwrap()
    );
    let cert_der = der(&out.join("node.crt"));
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    assert!(!cert.is_ca());
    assert!(cert.subject().to_string().contains("CN=edge"));
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, [GeneralName::DNSName("edge")]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(cert.issuer().to_string().contains("CN=PoM mesh CA"));
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 365);
    let algorithm = cert.public_key().algorithm.algorithm.to_id_string();
    assert_eq!(algorithm, "1.2.840.10045.2.1", "an EC key (P-256)");

    let again = issue("edge", &ca, &out);
    assert_eq!(again.status.code(), Some(3), "no overwrite without --force");
}

#[test]
fn bad_names_missing_cas_and_overlong_lifetimes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = issue("edge", &ca, &dir.path().join("x"));
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ca.crt"));

    ca_init(&ca);
    let out = issue("not a name", &ca, &dir.path().join("y"));
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid agent name"));

    let out = pom(&[
        "cert",
        "issue",
        "edge",
        "--ca-dir",
        ca.to_str().unwrap(),
        "--out",
        dir.path().join("z").to_str().unwrap(),
        "--days",
        "4000",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outlive the CA"));
    assert!(
        !dir.path().join("z").join("node.key").exists(),
        "nothing half-written"
    );
}

fn identity(dir: &Path) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        vec![der(&dir.join("node.crt"))],
        PrivateKeyDer::from_pem_file(dir.join("node.key")).unwrap(),
    )
}

fn roots(dir: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(&dir.join("ca.crt"))).unwrap();
    Arc::new(roots)
}

/// One mutual-TLS handshake: a server with `server`'s files that requires a client certificate
/// from its CA, and a client with `client`'s files. Returns the client's name as the server saw
/// it, or the error either side hit.
async fn handshake(server: &Path, client: &Path, server_name: &str) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(server), provider.clone())
        .build()
        .unwrap();
    let (chain, key) = identity(server);
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let (chain, key) = identity(client);
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(client))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (_, cert) = X509Certificate::from_der(&peer).unwrap();
        let name = cert.subject().to_string();
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(name)
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let client_side = async {
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        // TLS 1.3 reports a rejected client certificate on the first read.
        tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let client_result = client_side.await;
    let server_result = served.await.unwrap();
    match (client_result, server_result) {
        (Ok(buf), Ok(name)) if buf == b"ok" => Ok(name),
        (client, server) => Err(format!("client: {client:?}; server: {server:?}")),
    }
}

#[tokio::test]
async fn issued_certificates_complete_a_mutual_tls_handshake_and_strangers_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, edge, vps) = (
        dir.path().join("ca"),
        dir.path().join("edge"),
        dir.path().join("vps"),
    );
    ca_init(&ca);
    ok(&issue("edge", &ca, &edge));
    ok(&issue("vps", &ca, &vps));
    let seen = handshake(&vps, &edge, "vps").await.unwrap();
    assert!(seen.contains("CN=edge"), "{seen}");
    // The server name is checked against the SAN.
    assert!(handshake(&vps, &edge, "other").await.is_err());

    // A node of another CA is refused, as a client and as a server.
    let (other_ca, intruder) = (dir.path().join("other-ca"), dir.path().join("intruder"));
    ca_init(&other_ca);
    ok(&issue("edge", &other_ca, &intruder));
    let refused = handshake(&vps, &intruder, "vps").await.unwrap_err();
    assert!(refused.contains("server: Err"), "{refused}");
    assert!(handshake(&intruder, &edge, "edge").await.is_err());
}
