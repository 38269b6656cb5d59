//! The TCP check: a port accepts a connection. Refused, reset, unresolvable or silent (timeout)
//! is `unreachable`.

use super::Outcome;
use super::net;
use crate::plan::TcpSpec;

/// Runs one TCP check.
pub async fn probe(spec: &TcpSpec) -> Outcome {
    match net::connect(&spec.host, spec.port).await {
        Ok(stream) => {
            let peer = stream.peer_addr().map_or_else(
                |_| format!("{}:{}", spec.host, spec.port),
                |a| a.to_string(),
            );
            Outcome::operational(format!("{peer} accepted the connection"))
        }
        Err(e) => Outcome::unreachable(e.to_string()),
    }
}
