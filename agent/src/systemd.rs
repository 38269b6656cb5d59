//! systemd's notification protocol (`sd_notify(3)`): `READY=1` once the API listens,
//! `WATCHDOG=1` while the agent is alive, `RELOADING=1` and `STOPPING=1` around those.
//!
//! The protocol is one datagram per message to the Unix socket named by `NOTIFY_SOCKET` (a path,
//! or `@name` for the abstract namespace). Without that variable every call is a no-op, so the
//! agent runs the same outside systemd. The environment is passed in, never read here.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for (none when unset or empty).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            socket: env("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
        }
    }

    /// Whether there is a socket to notify.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (e.g. `READY=1`). A failure is logged, never fatal: systemd's absence
    /// must not stop monitoring.
    pub fn notify(&self, state: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(e) = send(socket, state) {
            tracing::warn!(socket = %socket, error = %e, "cannot notify systemd");
        }
    }
}

fn send(socket: &str, state: &str) -> io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if systemd set it for this process
/// (`WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval(env: &dyn Fn(&str) -> Option<String>) -> Option<Duration> {
    if let Some(pid) = env("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = env("WATCHDOG_USEC")?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        assert_eq!(
            watchdog_interval(&env(&[("WATCHDOG_USEC", "30000000")])),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(&env(&[])), None);
        assert_eq!(watchdog_interval(&env(&[("WATCHDOG_USEC", "x")])), None);
        assert_eq!(
            watchdog_interval(&env(&[("WATCHDOG_USEC", "30"), ("WATCHDOG_PID", "1")])),
            None,
            "meant for another process"
        );
    }

    #[test]
    fn a_notification_arrives_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let socket = path.to_str().unwrap().to_owned();
        let notifier = Notifier::from_env(&move |k| (k == "NOTIFY_SOCKET").then(|| socket.clone()));
        assert!(notifier.enabled());
        notifier.notify("READY=1");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        Notifier::default().notify("READY=1"); // a no-op, not an error
    }
}
