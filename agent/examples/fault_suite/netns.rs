//! The hosts: one network namespace per host (`pomf-NAME`), each with a veth into a bridge that
//! lives in its own namespace (`pomf-sw`), addresses from 10.77.0.0/24, and nftables faults inside
//! the namespaces. [`Net`] deletes everything it made when dropped: it kills every process left in
//! its namespaces and deletes them. [`sweep`] does the same for anything a crashed run left.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The prefix of every namespace this suite makes.
pub(crate) const PREFIX: &str = "pomf-";
/// The namespace that holds the bridge.
const SWITCH: &str = "pomf-sw";

/// Runs a command; fails with its stderr unless it succeeds.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `args` inside namespace `ns`.
pub(crate) fn exec(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Runs an nft script inside namespace `ns`.
pub(crate) fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        child.stdin.as_mut().context("nft stdin")?,
        script.as_bytes(),
    )?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Our namespaces that exist now.
fn ours() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Kills every process inside our namespaces (they are all ours) and deletes the namespaces.
pub(crate) fn sweep() {
    for ns in ours() {
        for _ in 0..50 {
            let pids = run("ip", &["netns", "pids", &ns]).unwrap_or_default();
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = run("kill", &["-9", pid]);
            }
            // Poll interval while the killed processes exit, not a wait for a condition.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = run("ip", &["netns", "del", &ns]);
    }
}

/// A host: a namespace with one interface `eth0` on the bridge.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) name: &'static str,
    pub(crate) ns: String,
    pub(crate) ip: &'static str,
}

/// The bridge and the hosts; dropping it removes them all.
#[derive(Debug)]
pub(crate) struct Net {
    pub(crate) hosts: Vec<Host>,
}

impl Net {
    /// Creates the bridge and one host per `(name, ip)`.
    pub(crate) fn create(hosts: &[(&'static str, &'static str)]) -> anyhow::Result<Self> {
        sweep();
        let mut net = Self { hosts: Vec::new() };
        run("ip", &["netns", "add", SWITCH])?;
        exec(SWITCH, &["ip", "link", "add", "br0", "type", "bridge"])?;
        exec(SWITCH, &["ip", "link", "set", "br0", "up"])?;
        for &(name, ip) in hosts {
            let ns = format!("{PREFIX}{name}");
            run("ip", &["netns", "add", &ns])?;
            let port = format!("v-{name}");
            run(
                "ip",
                &[
                    "link", "add", &port, "netns", SWITCH, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            exec(SWITCH, &["ip", "link", "set", &port, "master", "br0", "up"])?;
            exec(&ns, &["ip", "link", "set", "lo", "up"])?;
            exec(
                &ns,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            exec(&ns, &["ip", "link", "set", "eth0", "up"])?;
            net.hosts.push(Host { name, ns, ip });
        }
        Ok(net)
    }

    pub(crate) fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .expect("every host the suite names exists")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        sweep();
    }
}

impl Host {
    /// Takes the host's link down (`false`) or up.
    pub(crate) fn link(&self, up: bool) -> anyhow::Result<()> {
        exec(
            &self.ns,
            &["ip", "link", "set", "eth0", if up { "up" } else { "down" }],
        )?;
        Ok(())
    }

    /// Installs `rules` (nft rule bodies) in the input and output hooks of table `inet f`;
    /// `input` rules go to the input hook, `output` ones to the output hook.
    pub(crate) fn fault(&self, input: &[String], output: &[String]) -> anyhow::Result<()> {
        self.heal()?;
        let mut script = String::from(
            "table inet f {\n  chain in { type filter hook input priority 0; }\n  chain out { type filter hook output priority 0; }\n}\n",
        );
        for r in input {
            script.push_str(&format!("add rule inet f in {r}\n"));
        }
        for r in output {
            script.push_str(&format!("add rule inet f out {r}\n"));
        }
        nft(&self.ns, &script)
    }

    /// Removes the fault table if there is one.
    pub(crate) fn heal(&self) -> anyhow::Result<()> {
        nft(&self.ns, "table inet f\ndelete table inet f\n")
    }
}
