//! What the agents watch and where they report: nginx (HTTP and HTTPS, test certificates from
//! `pom::testbed::certs`) and dnsmasq on the site host, an app (a second nginx) in the `vps`
//! host, and on the receiver host the webhook sink and Alertmanager. The sink is this very binary
//! run as `fault_suite sink DIR` inside the receiver's namespace: it appends every POST (the
//! agents' webhook on `/hook`, Alertmanager's notifications on `/am`), with its arrival time, to
//! `DIR/alerts.jsonl`, and answers 500 on `/hook` while `DIR/fail` exists.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use pom::testbed::certs::{Leaf, TestCa};
use serde_json::Value;

use crate::netns::{Host, exec};
use crate::poll;

/// The name dnsmasq answers for, with the site's address.
pub(crate) const DNS_NAME: &str = "site.pomf.test";
/// The sink's port on the receiver host.
pub(crate) const SINK_PORT: u16 = 8080;
/// Where the agents' webhook channel posts on the sink.
pub(crate) const HOOK_PATH: &str = "/hook";
/// Where Alertmanager's webhook receiver posts on the sink.
pub(crate) const AM_PATH: &str = "/am";
/// Alertmanager's port on the receiver host.
pub(crate) const AM_PORT: u16 = 9093;
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

pub(crate) fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn pem(label: &str, der: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a test CA (`ca.pem`) and a leaf for `ip` (`site.crt`, `site.key`) into `dir`.
pub(crate) fn site_certs(dir: &Path, ip: &str) -> anyhow::Result<PathBuf> {
    let ca = TestCa::new("PoM fault suite CA")?;
    let leaf = ca.issue(&Leaf::new(&[ip, DNS_NAME]))?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    std::fs::write(
        dir.join("site.crt"),
        format!("{}{}", leaf.cert_pem, ca.cert_pem()),
    )?;
    std::fs::write(dir.join("site.key"), pem("PRIVATE KEY", &leaf.key))?;
    Ok(dir.join("ca.pem"))
}

/// A daemon running in the foreground inside a namespace, killed on drop.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) what: String,
    child: Option<Child>,
    ns: String,
    args: Vec<String>,
    log: PathBuf,
}

impl Daemon {
    fn start(what: &str, ns: &str, args: Vec<String>, log: PathBuf) -> anyhow::Result<Self> {
        let mut d = Self {
            what: what.to_owned(),
            child: None,
            ns: ns.to_owned(),
            args,
            log,
        };
        d.spawn()?;
        Ok(d)
    }

    /// Starts it, unless it runs.
    pub(crate) fn spawn(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                return Ok(());
            }
            self.child = None;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.what))?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops it (SIGKILL: nginx workers die with the master's process group below).
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            // SIGTERM to nginx's master makes it stop its workers and exit.
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            child.wait()?;
        }
        Ok(())
    }

    pub(crate) fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited with {status}: {}",
                self.what,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// nginx in `host`'s namespace: `/health` over HTTP on `http_port`, and over HTTPS on 443
/// when `tls` holds the certificate directory.
pub(crate) fn nginx(
    dir: &Path,
    host: &Host,
    http_port: u16,
    tls: Option<&Path>,
) -> anyhow::Result<Daemon> {
    std::fs::create_dir_all(dir)?;
    let d = dir.display();
    let ip = host.ip;
    let mut servers = format!(
        "server {{ listen {ip}:{http_port}; location = /health {{ return 200 \"ok\\n\"; }} }}\n"
    );
    if let Some(certs) = tls {
        let c = certs.display();
        servers.push_str(&format!(
            "server {{ listen {ip}:443 ssl; ssl_certificate {c}/site.crt; ssl_certificate_key {c}/site.key;\n  location = /health {{ return 200 \"ok\\n\"; }} }}\n"
        ));
    }
    let conf = format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  {servers}}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let args = vec![
        "nginx".into(),
        "-c".into(),
        path.display().to_string(),
        "-e".into(),
        dir.join("error.log").display().to_string(),
    ];
    let mut daemon = Daemon::start(
        &format!("nginx in {}", host.ns),
        &host.ns,
        args,
        dir.join("stderr.log"),
    )?;
    wait_http(
        &mut daemon,
        host,
        &format!("http://{ip}:{http_port}/health"),
    )?;
    Ok(daemon)
}

/// Waits until `url` answers 200 from inside `host`.
pub(crate) fn wait_http(daemon: &mut Daemon, host: &Host, url: &str) -> anyhow::Result<()> {
    poll(&format!("{} to answer {url}", daemon.what), 10.0, || {
        daemon.alive()?;
        Ok(exec(&host.ns, &["curl", "-sf", "-m", "1", "-k", url]).is_ok())
    })
}

/// dnsmasq on `host`, answering `DNS_NAME` with the host's address.
pub(crate) fn dnsmasq(dir: &Path, host: &Host) -> anyhow::Result<Daemon> {
    std::fs::create_dir_all(dir)?;
    let args = [
        "dnsmasq",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        "--user=root",
        &format!("--listen-address={}", host.ip),
        &format!("--address=/{DNS_NAME}/{}", host.ip),
        &format!("--pid-file={}/dnsmasq.pid", dir.display()),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut daemon = Daemon::start("dnsmasq", &host.ns, args, dir.join("dnsmasq.log"))?;
    poll("dnsmasq to listen", 10.0, || {
        daemon.alive()?;
        Ok(exec(&host.ns, &["ss", "-lun", "sport", "=", ":53"]).is_ok_and(|s| s.contains(host.ip)))
    })?;
    Ok(daemon)
}

/// The webhook sink (this binary in `sink` mode) on `host`.
pub(crate) fn sink(dir: &Path, host: &Host) -> anyhow::Result<Daemon> {
    std::fs::create_dir_all(dir)?;
    let exe = std::env::current_exe()?;
    let args = vec![
        exe.display().to_string(),
        "sink".into(),
        dir.display().to_string(),
        format!("{}:{SINK_PORT}", host.ip),
    ];
    let mut daemon = Daemon::start("the webhook sink", &host.ns, args, dir.join("sink.log"))?;
    poll("the sink to listen", 10.0, || {
        daemon.alive()?;
        Ok(exec(
            &host.ns,
            &["ss", "-ltn", "sport", "=", &format!(":{SINK_PORT}")],
        )
        .is_ok_and(|s| s.contains(host.ip)))
    })?;
    Ok(daemon)
}

/// What the sink recorded so far on `path` (`HOOK_PATH` or `AM_PATH`), in arrival order.
/// Only whole lines count: one being written is read at the next look. A line that is not JSON
/// (it cannot happen: the sink writes each whole) would show as `{"unparsable": …}`.
pub(crate) fn received(dir: &Path, path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("alerts.jsonl")).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(
                |_| serde_json::json!({ "unparsable": l, "sink_path": path, "check": "?" }),
            )
        })
        .filter(|v| v["sink_path"] == path)
        .collect()
}

/// Alertmanager (Debian's `prometheus-alertmanager`) on `host`, without clustering: every alert
/// is a group of its own, notified to the sink's `AM_PATH` at once when the group is new and
/// within a second (`group_interval`) when a group left by an earlier incident is reused. The
/// agents post to it as their second channel.
pub(crate) fn alertmanager(dir: &Path, host: &Host) -> anyhow::Result<Daemon> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: sink\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 24h\n\
             receivers:\n  - name: sink\n    webhook_configs:\n      - url: http://{}:{SINK_PORT}{AM_PATH}\n        send_resolved: true\n",
            host.ip
        ),
    )?;
    let args = vec![
        ALERTMANAGER.to_owned(),
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("data").display()),
        format!("--web.listen-address={}:{AM_PORT}", host.ip),
        "--cluster.listen-address=".to_owned(),
    ];
    let mut daemon = Daemon::start("Alertmanager", &host.ns, args, dir.join("alertmanager.log"))?;
    let ready = format!("http://{}:{AM_PORT}/-/ready", host.ip);
    poll("Alertmanager to be ready", 30.0, || {
        daemon.alive()?;
        Ok(exec(&host.ns, &["curl", "-sf", "-m", "1", &ready]).is_ok())
    })?;
    Ok(daemon)
}

/// Makes the sink answer 500 (`true`) or 200 to the agents' webhook.
pub(crate) fn sink_failing(dir: &Path, failing: bool) -> anyhow::Result<()> {
    let flag = dir.join("fail");
    if failing {
        std::fs::write(flag, b"")?;
    } else if flag.exists() {
        std::fs::remove_file(flag)?;
    }
    Ok(())
}

/// The sink's main: a tiny HTTP/1.1 server, one request per connection.
pub(crate) fn serve_sink(dir: &Path, listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let dir = dir.to_owned();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let dir = dir.clone();
        std::thread::spawn(move || {
            let _ = handle(&dir, stream);
        });
    }
    Ok(())
}

fn handle(dir: &Path, stream: TcpStream) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let path = first.split_whitespace().nth(1).unwrap_or("");
    // Only the agents' webhook fails (scenario 9); Alertmanager's notifications always land.
    let failing = path == HOOK_PATH && dir.join("fail").exists();
    if first.starts_with("POST") {
        let mut value: Value = serde_json::from_slice(&body)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| serde_json::json!({ "raw": String::from_utf8_lossy(&body) }));
        value["received_ms"] = now_ms().into();
        value["sink_path"] = path.into();
        // One line, written whole under a lock: the agents and Alertmanager post at once.
        static WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let line = format!("{value}\n");
        let _guard = WRITES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(if failing {
                "refused.jsonl"
            } else {
                "alerts.jsonl"
            }))?;
        file.write_all(line.as_bytes())?;
    }
    let status = if failing {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    Ok(())
}
