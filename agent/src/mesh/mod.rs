//! The mesh, agent side: mutual-TLS QUIC between agents ([`transport`], the only module that
//! knows quinn), the certificates it uses ([`tls`]), and [`node`], which connects the
//! transport to `mesh-proto`'s [`MeshState`](mesh_proto::MeshState) for the monitor:
//! heartbeats, votes, fast confirmation, and the notification log.

pub mod node;
pub mod tls;
pub mod transport;

pub use node::{MeshSetup, Node, PeerInfo};
