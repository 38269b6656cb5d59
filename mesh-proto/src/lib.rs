//! PoM's sans-IO core.
//!
//! This crate holds what every agent must compute identically: the status model, check ids and
//! observations, the alert lifecycles and engine, the wire protocol, peer liveness, quorum
//! verdicts, the notification log, and [`MeshState`], one agent's view of the mesh. It does no
//! I/O and never reads the clock: time arrives as a [`Timestamp`] parameter, so the whole crate
//! is driven by a deterministic simulation (`tests/sim.rs`).
//!
//! **Architecture invariant:** nothing here depends on tokio, sockets, a database or the system
//! clock. CI checks this with `cargo tree -p mesh-proto -e normal`.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod alert;
mod check;
pub mod codec;
pub mod drift;
mod engine;
mod lifecycle;
pub mod mesh;
pub mod notify_log;
mod observation;
pub mod push;
pub mod quorum;
mod status;
mod verdict;
pub mod wire;

pub use alert::{AlertEvent, AlertKind};
pub use check::{CheckId, CheckIdError, CheckKind, validate_target_name};
pub use codec::{CodecError, FrameDecoder, MAX_FRAME_SIZE};
pub use drift::{Drift, DriftPolicy};
pub use engine::{AlertEngine, Decision, Subject, incident_id};
pub use lifecycle::{AlertPolicy, Lifecycle, OpenIncident, Page};
pub use mesh::{MeshSettings, MeshState, PeerView};
pub use notify_log::{Merged, NotificationKey, NotificationLog};
pub use observation::{Observation, Timestamp};
pub use quorum::{Conclusion, LivenessPolicy, PeerState, QuorumPolicy, Vote};
pub use status::{Status, UnknownStatus};
pub use verdict::Verdict;
pub use wire::{
    Bye, ConfigHash, Frame, FrameV1, Heartbeat, Hello, LogEntry, LogState, PROTOCOL_VERSION,
    ProbeNow, WireError,
};
