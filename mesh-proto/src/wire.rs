//! The mesh wire messages: versioned [`Frame`]s and their limits.
//!
//! This module owns *what* agents say to each other; [`crate::codec`] owns how it becomes bytes
//! (and is the only module that knows bincode). docs/protocol.md is the normative description;
//! keep the two in step.
//!
//! **Compatibility:** [`Frame::V1`] and everything reachable from it are frozen once released.
//! A new field, a new frame kind or a changed meaning goes into a new `Frame::V2`, never into V1:
//! the encoding is positional, so a peer cannot skip what it does not know.
//!
//! Decoding only proves that bytes have the right shape. [`Frame::validate`] then enforces the
//! limits (lengths, counts, name syntax), so a peer cannot hand us a 1 MB agent name; the codec's
//! decode functions call it, and so does `encode`, so an invalid frame never goes out either.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AlertEvent, CheckId, Observation, Subject, Timestamp, validate_target_name};

/// The highest protocol version this build speaks. [`Frame::V1`] is version 1.
pub const PROTOCOL_VERSION: u16 = 1;

/// The TLS ALPN protocol id of the mesh (version 1). Used by the transport, not by this crate.
pub const ALPN: &[u8] = b"pom/1";

/// The most observations one [`FrameV1::Observations`] frame may carry; larger batches are split.
pub const MAX_OBSERVATIONS_PER_FRAME: usize = 256;
/// The most entries one [`FrameV1::NotificationLog`] frame may carry; larger logs are split.
pub const MAX_LOG_ENTRIES_PER_FRAME: usize = 256;
/// The longest agent name, in bytes (the same rule as a target name: [`validate_target_name`]).
pub const MAX_AGENT_NAME_LEN: usize = CheckId::MAX_TARGET_LEN;
/// The longest instance id, in bytes.
pub const MAX_INSTANCE_ID_LEN: usize = 64;
/// The longest agent version string, in bytes.
pub const MAX_AGENT_VERSION_LEN: usize = 64;
/// The longest check id (or subject) in its string form, in bytes.
pub const MAX_CHECK_ID_LEN: usize = 512;
/// The longest observation `detail`, in bytes.
pub const MAX_DETAIL_LEN: usize = 512;
/// The longest incident id, in bytes.
pub const MAX_INCIDENT_LEN: usize = 64;
/// The longest [`Bye`] reason, in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// One message on the wire, tagged with its protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Protocol version 1 (frozen).
    V1(FrameV1),
}

/// The frames of protocol version 1. Frozen: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameV1 {
    /// The first frame each side sends on a connection.
    Hello(Hello),
    /// Liveness and drift information, every `heartbeat_interval`.
    Heartbeat(Heartbeat),
    /// A batch of the sender's own observations (at most [`MAX_OBSERVATIONS_PER_FRAME`]).
    Observations(Vec<Observation>),
    /// Asks the receiver to run one check now (fast confirmation).
    ProbeNow(ProbeNow),
    /// Notification-log entries, gossiped so that exactly one agent sends each notification
    /// (at most [`MAX_LOG_ENTRIES_PER_FRAME`]).
    NotificationLog(Vec<LogEntry>),
    /// The sender is closing the connection.
    Bye(Bye),
}

/// A SHA-256 hash of the shared config (targets, checks, alert rules), computed by the agent.
///
/// 32 raw bytes on the wire; shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigHash(pub [u8; 32]);

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigHash({self})")
    }
}

/// The handshake: who the sender is and what it runs. Sent first, once per connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The highest protocol version the sender speaks (≥ 1). Both sides then use the lower of
    /// the two versions. Hello itself is always sent as [`Frame::V1`], so every peer can read it.
    pub protocol_version: u16,
    /// The sender's agent name. The transport checks it against the name in the peer's
    /// certificate.
    pub name: String,
    /// Changes on every start of the agent, so that a peer can tell a restart from a reconnect.
    pub instance_id: String,
    /// The agent's software version, e.g. `0.1.0`.
    pub agent_version: String,
    /// The hash of the sender's shared config.
    pub config_hash: ConfigHash,
    /// The sender's wall clock when it sent the frame.
    pub wall_clock: Timestamp,
}

/// Sent every `heartbeat_interval` on each connection.
///
/// It carries no sender name: the connection is mutually authenticated, and the name was given
/// (and checked against the certificate) in [`Hello`]. The protocol and agent versions are in
/// Hello too, since they cannot change without a restart; the config hash can (a reload), so it
/// is repeated here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases by one with each heartbeat the sender sends (per agent start, not per
    /// connection); a gap means lost heartbeats.
    pub seq: u64,
    /// The sender's wall clock when it sent the frame (clock-skew detection).
    pub wall_clock: Timestamp,
    /// The hash of the sender's shared config now (config-drift detection).
    pub config_hash: ConfigHash,
    /// Whether the sender considers itself isolated: it then casts no votes.
    pub isolated: bool,
}

/// A request to run one check now, rate-limited per check by the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeNow {
    /// The check to run.
    pub check: CheckId,
}

/// Where a notification stands in the notification log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogState {
    /// The sender claimed the notification and is sending it.
    Sending,
    /// The notification went out.
    Sent,
}

/// One notification-log entry: who sends (or sent) one notification of one incident transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// What the notification is about: the string form of a [`Subject`].
    pub subject: String,
    /// The incident's id (unique per subject).
    pub incident: String,
    /// Firing or resolved.
    pub event: AlertEvent,
    /// 0 for the first page of an incident, then 1, 2, … for reminders.
    pub repeat: u32,
    /// The name of the agent that sends it.
    pub sent_by: String,
    /// When the entry was written, on `sent_by`'s clock.
    pub at: Timestamp,
    /// Sending or sent.
    pub state: LogState,
}

/// The sender closes the connection; the reason is for logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    /// Why, e.g. `shutting down` or `unsupported protocol version 2`.
    pub reason: String,
}

/// Why a decoded (or about to be encoded) frame breaks a limit of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A string field is longer than its limit.
    #[error("{field} is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list has more items than its limit.
    #[error("{field} has {len} items, more than the limit of {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Its item count.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string field is empty, or contains a character it may not.
    #[error("{field} is not valid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Frame {
    /// Checks every limit of the protocol (see the `MAX_*` constants).
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Self::V1(frame) => frame.validate(),
        }
    }
}

impl FrameV1 {
    /// Checks every limit of protocol version 1.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Self::Hello(hello) => hello.validate(),
            Self::Heartbeat(_) => Ok(()),
            Self::Observations(batch) => {
                max_items("observations", batch.len(), MAX_OBSERVATIONS_PER_FRAME)?;
                batch.iter().try_for_each(validate_observation)
            }
            Self::ProbeNow(probe) => check_id("probe_now.check", &probe.check),
            Self::NotificationLog(entries) => {
                max_items("notification_log", entries.len(), MAX_LOG_ENTRIES_PER_FRAME)?;
                entries.iter().try_for_each(LogEntry::validate)
            }
            Self::Bye(bye) => max_len("bye.reason", &bye.reason, MAX_REASON_LEN),
        }
    }
}

impl Hello {
    /// Checks the limits of a Hello.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.protocol_version == 0 {
            return Err(WireError::Invalid {
                field: "hello.protocol_version",
                reason: "version 0 does not exist",
            });
        }
        agent_name("hello.name", &self.name)?;
        token("hello.instance_id", &self.instance_id, MAX_INSTANCE_ID_LEN)?;
        token(
            "hello.agent_version",
            &self.agent_version,
            MAX_AGENT_VERSION_LEN,
        )
    }
}

impl LogEntry {
    /// Checks the limits of a log entry; `subject` must parse as a [`Subject`].
    pub fn validate(&self) -> Result<(), WireError> {
        max_len("log_entry.subject", &self.subject, MAX_CHECK_ID_LEN)?;
        if self.subject.parse::<Subject>().is_err() {
            return Err(WireError::Invalid {
                field: "log_entry.subject",
                reason: "not a check id or `monitoring_offline`",
            });
        }
        token("log_entry.incident", &self.incident, MAX_INCIDENT_LEN)?;
        agent_name("log_entry.sent_by", &self.sent_by)
    }
}

fn validate_observation(observation: &Observation) -> Result<(), WireError> {
    check_id("observation.check", &observation.check)?;
    max_len("observation.detail", &observation.detail, MAX_DETAIL_LEN)
}

fn max_len(field: &'static str, value: &str, max: usize) -> Result<(), WireError> {
    if value.len() > max {
        return Err(WireError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn max_items(field: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::TooMany { field, len, max });
    }
    Ok(())
}

/// A non-empty identifier without control characters.
fn token(field: &'static str, value: &str, max: usize) -> Result<(), WireError> {
    max_len(field, value, max)?;
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(WireError::Invalid {
            field,
            reason: "empty, or contains a control character",
        });
    }
    Ok(())
}

fn agent_name(field: &'static str, name: &str) -> Result<(), WireError> {
    max_len(field, name, MAX_AGENT_NAME_LEN)?;
    validate_target_name(name).map_err(|_| WireError::Invalid {
        field,
        reason: "an agent name is 1 to 128 bytes, without '/', whitespace or control characters",
    })
}

/// A [`CheckId`] is valid by construction, except that its qualifier has no length limit.
fn check_id(field: &'static str, id: &CheckId) -> Result<(), WireError> {
    let len = id.target().len()
        + 1
        + id.kind().as_str().len()
        + id.qualifier().map_or(0, |q| q.len() + 1);
    if len > MAX_CHECK_ID_LEN {
        return Err(WireError::TooLong {
            field,
            len,
            max: MAX_CHECK_ID_LEN,
        });
    }
    Ok(())
}

/// Example frames of every kind, shared by the tests of this module and of the codec.
#[cfg(test)]
pub(crate) mod examples {
    use super::*;
    use crate::{CheckKind, Status};

    pub(crate) fn hash() -> ConfigHash {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap().wrapping_mul(37);
        }
        ConfigHash(bytes)
    }

    pub(crate) fn hello() -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            name: "edge".into(),
            instance_id: "3f2c9a1e-0b7d-4e55-9a61-2d8f0c4b7e10".into(),
            agent_version: "0.1.0".into(),
            config_hash: hash(),
            wall_clock: Timestamp(1_795_000_000_123),
        }
    }

    pub(crate) fn observation() -> Observation {
        Observation {
            check: CheckId::with_qualifier("makenot.work", CheckKind::Route, "/login").unwrap(),
            status: Status::Unreachable,
            latency_ms: None,
            detail: "connect timed out after 10s".into(),
            at: Timestamp(1_795_000_000_000),
        }
    }

    pub(crate) fn log_entry() -> LogEntry {
        LogEntry {
            subject: "makenot.work/health".into(),
            incident: "1795000000000".into(),
            event: AlertEvent::Firing,
            repeat: 2,
            sent_by: "vps".into(),
            at: Timestamp(1_795_000_100_000),
            state: LogState::Sending,
        }
    }

    /// One frame of every kind.
    pub(crate) fn all() -> Vec<Frame> {
        vec![
            Frame::V1(FrameV1::Hello(hello())),
            Frame::V1(FrameV1::Heartbeat(Heartbeat {
                seq: 42,
                wall_clock: Timestamp(-5),
                config_hash: hash(),
                isolated: true,
            })),
            Frame::V1(FrameV1::Observations(vec![
                observation(),
                Observation {
                    check: CheckId::new("shop", CheckKind::Health).unwrap(),
                    status: Status::Operational,
                    latency_ms: Some(87),
                    detail: "GET /api/health returned 200".into(),
                    at: Timestamp(1_795_000_000_500),
                },
            ])),
            Frame::V1(FrameV1::Observations(Vec::new())),
            Frame::V1(FrameV1::ProbeNow(ProbeNow {
                check: CheckId::with_qualifier("makenot.work", CheckKind::Dns, "A").unwrap(),
            })),
            Frame::V1(FrameV1::NotificationLog(vec![
                log_entry(),
                LogEntry {
                    subject: "monitoring_offline".into(),
                    incident: "7".into(),
                    event: AlertEvent::Resolved,
                    repeat: 0,
                    sent_by: "edge".into(),
                    at: Timestamp(0),
                    state: LogState::Sent,
                },
            ])),
            Frame::V1(FrameV1::Bye(Bye {
                reason: "shutting down".into(),
            })),
        ]
    }

    /// The largest frames that still validate, one per list kind.
    pub(crate) fn largest() -> Vec<Frame> {
        let long_id = {
            let target = "t".repeat(MAX_AGENT_NAME_LEN);
            let room = MAX_CHECK_ID_LEN - target.len() - "/route:".len();
            CheckId::with_qualifier(&target, CheckKind::Route, &"q".repeat(room)).unwrap()
        };
        let observation = Observation {
            check: long_id.clone(),
            status: Status::Degraded,
            latency_ms: Some(u64::MAX),
            detail: "é".repeat(MAX_DETAIL_LEN / 2),
            at: Timestamp(i64::MIN),
        };
        let entry = LogEntry {
            subject: long_id.to_string(),
            incident: "i".repeat(MAX_INCIDENT_LEN),
            event: AlertEvent::Resolved,
            repeat: u32::MAX,
            sent_by: "a".repeat(MAX_AGENT_NAME_LEN),
            at: Timestamp(i64::MAX),
            state: LogState::Sent,
        };
        vec![
            Frame::V1(FrameV1::Observations(vec![
                observation;
                MAX_OBSERVATIONS_PER_FRAME
            ])),
            Frame::V1(FrameV1::NotificationLog(vec![
                entry;
                MAX_LOG_ENTRIES_PER_FRAME
            ])),
            Frame::V1(FrameV1::Hello(Hello {
                protocol_version: u16::MAX,
                name: "n".repeat(MAX_AGENT_NAME_LEN),
                instance_id: "i".repeat(MAX_INSTANCE_ID_LEN),
                agent_version: "v".repeat(MAX_AGENT_VERSION_LEN),
                config_hash: ConfigHash([0xff; 32]),
                wall_clock: Timestamp(i64::MIN),
            })),
            Frame::V1(FrameV1::Bye(Bye {
                reason: "r".repeat(MAX_REASON_LEN),
            })),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::examples::*;
    use super::*;
    use crate::CheckKind;

    #[test]
    fn every_example_frame_is_valid() {
        for frame in all().iter().chain(&largest()) {
            assert_eq!(frame.validate(), Ok(()), "{frame:?}");
        }
    }

    #[test]
    fn config_hash_shows_as_hex() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x01;
        let shown = ConfigHash(bytes).to_string();
        assert_eq!(shown.len(), 64);
        assert!(shown.starts_with("ab00"));
        assert!(shown.ends_with("0001"));
    }

    #[test]
    fn hello_limits() {
        let mut hello = hello();
        hello.name = "x".repeat(MAX_AGENT_NAME_LEN + 1);
        assert!(matches!(
            hello.validate(),
            Err(WireError::TooLong {
                field: "hello.name",
                ..
            })
        ));
        hello.name = "a b".into();
        assert!(matches!(
            hello.validate(),
            Err(WireError::Invalid {
                field: "hello.name",
                ..
            })
        ));
        hello.name = "edge".into();
        hello.protocol_version = 0;
        assert!(hello.validate().is_err());
        hello.protocol_version = 1;
        hello.instance_id = String::new();
        assert!(hello.validate().is_err());
        hello.instance_id = "x".into();
        hello.agent_version = "1.0\n".into();
        assert!(hello.validate().is_err());
        hello.agent_version = "v".repeat(MAX_AGENT_VERSION_LEN + 1);
        assert!(matches!(
            hello.validate(),
            Err(WireError::TooLong {
                field: "hello.agent_version",
                ..
            })
        ));
    }

    #[test]
    fn list_and_string_limits() {
        let too_many = FrameV1::Observations(vec![observation(); MAX_OBSERVATIONS_PER_FRAME + 1]);
        assert_eq!(
            too_many.validate(),
            Err(WireError::TooMany {
                field: "observations",
                len: MAX_OBSERVATIONS_PER_FRAME + 1,
                max: MAX_OBSERVATIONS_PER_FRAME,
            })
        );
        let mut long_detail = observation();
        long_detail.detail = "d".repeat(MAX_DETAIL_LEN + 1);
        assert!(FrameV1::Observations(vec![long_detail]).validate().is_err());

        let long_id =
            CheckId::with_qualifier("t", CheckKind::Route, &"q".repeat(MAX_CHECK_ID_LEN)).unwrap();
        assert!(
            FrameV1::ProbeNow(ProbeNow { check: long_id })
                .validate()
                .is_err()
        );

        let too_many = FrameV1::NotificationLog(vec![log_entry(); MAX_LOG_ENTRIES_PER_FRAME + 1]);
        assert!(matches!(
            too_many.validate(),
            Err(WireError::TooMany { .. })
        ));
        let mut bad_subject = log_entry();
        bad_subject.subject = "not a check".into();
        assert!(bad_subject.validate().is_err());
        let mut bad_sender = log_entry();
        bad_sender.sent_by = String::new();
        assert!(bad_sender.validate().is_err());
        let mut long_incident = log_entry();
        long_incident.incident = "9".repeat(MAX_INCIDENT_LEN + 1);
        assert!(long_incident.validate().is_err());

        let bye = FrameV1::Bye(Bye {
            reason: "r".repeat(MAX_REASON_LEN + 1),
        });
        assert!(bye.validate().is_err());
    }
}
