//! The codec: [`Frame`]s to bytes and back. The only module that knows bincode.
//!
//! On the wire a frame is a 4-byte big-endian body length followed by the body: the frame
//! encoded with bincode 2's standard config (docs/protocol.md describes the encoding byte by
//! byte). [`MAX_FRAME_SIZE`] is enforced three times: by [`encode`], by [`FrameDecoder`] on the
//! length prefix before it buffers a body, and by bincode's own limit while decoding. Trailing
//! bytes after a body are an error, and so is a frame that breaks a limit of [`Frame::validate`].
//!
//! Sans-IO: the transport reads bytes from its QUIC stream, pushes them into a [`FrameDecoder`]
//! and pulls frames out. Nothing here panics on any input.

use bincode::config::{self, Config};
use bincode::error::{DecodeError, EncodeError};

use crate::wire::{Frame, WireError};

/// The largest body a frame may have, in bytes (1 MiB). The 4-byte length prefix is not counted.
pub const MAX_FRAME_SIZE: usize = 1 << 20;

/// The size of the length prefix in front of every body.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// The longest bincode error message kept in [`CodecError::Malformed`]: such a message can quote
/// the peer's bytes, and it ends up in logs.
const MAX_ERROR_MESSAGE_LEN: usize = 200;

/// Why bytes are not a valid frame, or a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The (declared or produced) body is larger than [`MAX_FRAME_SIZE`].
    #[error("frame body of {len} bytes is larger than the limit of {MAX_FRAME_SIZE} bytes")]
    TooLarge {
        /// The body length.
        len: usize,
    },
    /// The input ends before the frame does.
    #[error("frame is truncated")]
    Truncated,
    /// Bytes are left over after the frame.
    #[error("{extra} trailing bytes after the frame")]
    Trailing {
        /// How many.
        extra: usize,
    },
    /// The frame's protocol version (`V{n}`) is not one this build speaks.
    #[error("frame of unknown protocol version {0} (this agent speaks version 1)")]
    UnknownVersion(u32),
    /// The body is not a valid encoding of a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame decodes, but breaks a limit of the protocol.
    #[error("invalid frame: {0}")]
    Invalid(#[from] WireError),
    /// bincode could not encode the frame (a bug: every frame type is encodable).
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// bincode 2's standard config: little-endian, variable-length integers. The limit bounds what
/// the decoder may allocate for the lengths it reads.
fn config() -> impl Config {
    config::standard().with_limit::<MAX_FRAME_SIZE>()
}

/// Encodes `frame` as a length-prefixed frame, after checking it with [`Frame::validate`].
pub fn encode(frame: &Frame) -> Result<Vec<u8>, CodecError> {
    frame.validate()?;
    let mut out = vec![0u8; LENGTH_PREFIX_LEN];
    bincode::serde::encode_into_std_write(frame, &mut out, config()).map_err(encode_error)?;
    let len = out.len() - LENGTH_PREFIX_LEN;
    if len > MAX_FRAME_SIZE {
        return Err(CodecError::TooLarge { len });
    }
    let prefix = u32::try_from(len).map_err(|_| CodecError::TooLarge { len })?;
    out[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Decodes exactly one length-prefixed frame, as produced by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Frame, CodecError> {
    let (prefix, rest) = bytes
        .split_first_chunk::<LENGTH_PREFIX_LEN>()
        .ok_or(CodecError::Truncated)?;
    let len = declared_len(*prefix)?;
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(CodecError::Truncated),
        std::cmp::Ordering::Greater => Err(CodecError::Trailing {
            extra: rest.len() - len,
        }),
        std::cmp::Ordering::Equal => decode_body(rest),
    }
}

/// Decodes one frame body (without its length prefix), rejecting trailing bytes, then checks it
/// with [`Frame::validate`].
pub fn decode_body(body: &[u8]) -> Result<Frame, CodecError> {
    if body.len() > MAX_FRAME_SIZE {
        return Err(CodecError::TooLarge { len: body.len() });
    }
    // The version tag comes first; read it alone so that a newer peer gets a clear error.
    let (version, _) =
        bincode::decode_from_slice::<u32, _>(body, config()).map_err(decode_error)?;
    if version != 0 {
        return Err(CodecError::UnknownVersion(version.saturating_add(1)));
    }
    let (frame, read): (Frame, usize) =
        bincode::serde::decode_from_slice(body, config()).map_err(decode_error)?;
    if read < body.len() {
        return Err(CodecError::Trailing {
            extra: body.len() - read,
        });
    }
    frame.validate()?;
    Ok(frame)
}

fn declared_len(prefix: [u8; LENGTH_PREFIX_LEN]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix);
    match usize::try_from(len) {
        Ok(len) if len <= MAX_FRAME_SIZE => Ok(len),
        // On a 16-bit target a u32 may not fit a usize; it is too large either way.
        _ => Err(CodecError::TooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
        }),
    }
}

fn decode_error(e: DecodeError) -> CodecError {
    match e {
        DecodeError::UnexpectedEnd { .. } => CodecError::Truncated,
        other => CodecError::Malformed(bounded_message(&other.to_string())),
    }
}

fn encode_error(e: EncodeError) -> CodecError {
    CodecError::Encode(bounded_message(&e.to_string()))
}

fn bounded_message(message: &str) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_LEN {
        return message.to_owned();
    }
    let mut end = MAX_ERROR_MESSAGE_LEN;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Splits a byte stream into frames, incrementally: push bytes in as they arrive, pull frames
/// out.
///
/// Memory stays bounded: a length prefix is checked against [`MAX_FRAME_SIZE`] as soon as its
/// 4 bytes arrive, before any byte of its body is buffered, and the decoder never reserves room
/// on the word of a declared length, only for bytes actually pushed. It holds the bytes pushed
/// but not yet returned as frames, so push chunks of a bounded size (e.g. one stream read).
///
/// After an error the stream is out of step and the decoder stays failed: every later call
/// returns the same error. The transport then sends `Bye` and closes the connection.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the first unread frame starts in `buf`.
    start: usize,
    /// Where the first length prefix not yet checked starts in `buf`; every prefix before it was
    /// checked. Beyond `buf.len()` while a body is still arriving.
    next_prefix: usize,
    failed: Option<CodecError>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream. Fails as soon as a length prefix declares a body over
    /// [`MAX_FRAME_SIZE`], without buffering that body.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), CodecError> {
        self.check_failed()?;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.next_prefix -= self.start;
            self.start = 0;
        }
        while !bytes.is_empty() {
            let want = if self.buf.len() < self.next_prefix {
                // Inside a body whose length was checked.
                self.next_prefix - self.buf.len()
            } else {
                // Inside a length prefix.
                self.next_prefix + LENGTH_PREFIX_LEN - self.buf.len()
            };
            let (now, later) = bytes.split_at(want.min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = later;
            if let Some(prefix) = self
                .buf
                .get(self.next_prefix..)
                .and_then(|rest| rest.first_chunk::<LENGTH_PREFIX_LEN>())
            {
                match declared_len(*prefix) {
                    Ok(len) => self.next_prefix += LENGTH_PREFIX_LEN + len,
                    Err(e) => return Err(self.fail(e)),
                }
            }
        }
        Ok(())
    }

    /// The next complete frame, or `None` until more bytes are pushed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        self.check_failed()?;
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some((prefix, rest)) = pending.split_first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = match declared_len(*prefix) {
            Ok(len) => len,
            Err(e) => return Err(self.fail(e)),
        };
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        let decoded = decode_body(body);
        self.start += LENGTH_PREFIX_LEN + len;
        match decoded {
            Ok(frame) => Ok(Some(frame)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// How many bytes are buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Call when the stream ends: fails with [`CodecError::Truncated`] if a frame was cut off.
    pub fn finish(&self) -> Result<(), CodecError> {
        self.check_failed()?;
        if self.buffered() > 0 {
            return Err(CodecError::Truncated);
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<(), CodecError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: CodecError) -> CodecError {
        self.buf = Vec::new();
        self.start = 0;
        self.next_prefix = 0;
        self.failed = Some(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{examples, *};
    use crate::{AlertEvent, CheckId, CheckKind, Observation, Status, Timestamp};

    fn prefixed(body: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn every_frame_kind_round_trips() {
        for frame in examples::all().into_iter().chain(examples::largest()) {
            let bytes = encode(&frame).unwrap();
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap());
            assert_eq!(len as usize, bytes.len() - 4);
            assert!(bytes.len() - 4 <= MAX_FRAME_SIZE);
            assert_eq!(decode(&bytes).unwrap(), frame);
            assert_eq!(decode_body(&bytes[4..]).unwrap(), frame);
        }
    }

    /// The byte layout is a promise (docs/protocol.md spells it out); this pins it.
    #[test]
    fn hello_and_heartbeat_bytes_match_the_spec() {
        let hello = Frame::V1(FrameV1::Hello(examples::hello()));
        let mut body = vec![0u8, 0]; // Frame::V1, FrameV1::Hello
        body.push(1); // protocol_version: varint 1
        body.extend([4, b'e', b'd', b'g', b'e']); // name
        body.push(36); // instance_id length
        body.extend(b"3f2c9a1e-0b7d-4e55-9a61-2d8f0c4b7e10");
        body.extend([5, b'0', b'.', b'1', b'.', b'0']); // agent_version
        body.extend(examples::hash().0); // config_hash: 32 raw bytes
        // wall_clock: i64 1_795_000_000_123, zigzag (×2), then 0xfd + u64 little-endian.
        body.push(0xfd);
        body.extend((1_795_000_000_123u64 * 2).to_le_bytes());
        assert_eq!(encode(&hello).unwrap(), prefixed(&body));

        let heartbeat = Frame::V1(FrameV1::Heartbeat(Heartbeat {
            seq: 300,
            wall_clock: Timestamp(-5),
            config_hash: ConfigHash([7; 32]),
            isolated: true,
        }));
        let mut body = vec![0u8, 1]; // Frame::V1, FrameV1::Heartbeat
        body.extend([0xfb, 0x2c, 0x01]); // seq: 300 as 0xfb + u16 little-endian
        body.push(9); // wall_clock: -5 zigzags to 9
        body.extend([7; 32]);
        body.push(1); // isolated
        assert_eq!(encode(&heartbeat).unwrap(), prefixed(&body));
    }

    #[test]
    fn observation_and_log_entry_bytes_match_the_spec() {
        let check = CheckId::new("a", CheckKind::Tcp).unwrap();
        let frame = Frame::V1(FrameV1::Observations(vec![Observation {
            check: check.clone(),
            status: Status::Error,
            latency_ms: Some(12),
            detail: "x".into(),
            at: Timestamp(1),
        }]));
        let mut body = vec![0u8, 2, 1]; // V1, Observations, 1 item
        body.extend([5, b'a', b'/', b't', b'c', b'p']); // check, as its string
        body.push(2); // Status::Error is variant 2
        body.extend([1, 12]); // Some(12)
        body.extend([1, b'x']);
        body.push(2); // at: 1 zigzags to 2
        assert_eq!(encode(&frame).unwrap(), prefixed(&body));

        let frame = Frame::V1(FrameV1::NotificationLog(vec![LogEntry {
            subject: "a/tcp".into(),
            incident: "i".into(),
            event: AlertEvent::Resolved,
            repeat: 3,
            sent_by: "b".into(),
            at: Timestamp(0),
            state: LogState::Sent,
        }]));
        let mut body = vec![0u8, 4, 1]; // V1, NotificationLog, 1 item
        body.extend([
            5, b'a', b'/', b't', b'c', b'p', 1, b'i', 1, 3, 1, b'b', 0, 1,
        ]);
        assert_eq!(encode(&frame).unwrap(), prefixed(&body));

        let probe = Frame::V1(FrameV1::ProbeNow(ProbeNow { check }));
        assert_eq!(
            encode(&probe).unwrap(),
            prefixed(&[0, 3, 5, b'a', b'/', b't', b'c', b'p'])
        );
        let bye = Frame::V1(FrameV1::Bye(Bye {
            reason: "ok".into(),
        }));
        assert_eq!(encode(&bye).unwrap(), prefixed(&[0, 5, 2, b'o', b'k']));
    }

    #[test]
    fn encode_refuses_invalid_frames() {
        let frame = Frame::V1(FrameV1::Bye(Bye {
            reason: "r".repeat(MAX_REASON_LEN + 1),
        }));
        assert!(matches!(encode(&frame), Err(CodecError::Invalid(_))));
    }

    #[test]
    fn decode_rejects_invalid_frames() {
        // A well-formed Bye whose reason is over its limit.
        let reason = "r".repeat(MAX_REASON_LEN + 1);
        let mut body = vec![0u8, 5, 0xfb];
        body.extend(u16::try_from(reason.len()).unwrap().to_le_bytes());
        body.extend(reason.as_bytes());
        assert!(matches!(
            decode(&prefixed(&body)),
            Err(CodecError::Invalid(WireError::TooLong {
                field: "bye.reason",
                ..
            }))
        ));
        // A Hello whose name has a space.
        let mut hello = encode(&Frame::V1(FrameV1::Hello(examples::hello()))).unwrap();
        hello[4 + 4] = b' '; // prefix, V1, Hello, version, name length, then "edge"
        assert!(matches!(decode(&hello), Err(CodecError::Invalid(_))));
    }

    #[test]
    fn oversized_declared_length_is_rejected_before_buffering() {
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend([0u8; 16]);
        assert_eq!(
            decode(&bytes),
            Err(CodecError::TooLarge {
                len: u32::MAX as usize
            })
        );

        let just_over = u32::try_from(MAX_FRAME_SIZE + 1).unwrap().to_be_bytes();
        let mut decoder = FrameDecoder::new();
        decoder.push(&just_over[..3]).unwrap();
        let err = decoder.push(&[just_over[3], 1, 2, 3]).unwrap_err();
        assert_eq!(
            err,
            CodecError::TooLarge {
                len: MAX_FRAME_SIZE + 1
            }
        );
        assert_eq!(decoder.buffered(), 0, "nothing of the body was kept");
        assert_eq!(
            decoder.next_frame(),
            Err(err.clone()),
            "the decoder stays failed"
        );
        assert_eq!(decoder.push(&[0]), Err(err));

        let at_limit = u32::try_from(MAX_FRAME_SIZE).unwrap().to_be_bytes();
        let mut decoder = FrameDecoder::new();
        decoder.push(&at_limit).unwrap();
        decoder.push(&[0; 100]).unwrap();
        assert_eq!(decoder.next_frame(), Ok(None), "waits for the whole body");
        assert!(
            decoder.buf.capacity() < MAX_FRAME_SIZE,
            "nothing reserved on the word of a prefix"
        );
    }

    #[test]
    fn a_body_over_the_limit_is_rejected() {
        let body = vec![0u8; MAX_FRAME_SIZE + 1];
        assert_eq!(
            decode_body(&body),
            Err(CodecError::TooLarge {
                len: MAX_FRAME_SIZE + 1
            })
        );
        // A string inside the body that claims more than the limit.
        let mut body = vec![0u8, 5, 0xfc];
        body.extend(u32::try_from(MAX_FRAME_SIZE + 1).unwrap().to_le_bytes());
        assert!(decode_body(&body).is_err());
    }

    #[test]
    fn truncated_input_is_rejected() {
        let bytes = encode(&examples::all()[0]).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]),
                Err(CodecError::Truncated),
                "cut at {cut}"
            );
        }
        // A body that is complete as a frame, but whose content ends early.
        assert_eq!(
            decode(&prefixed(&[0, 5, 10, b'a'])),
            Err(CodecError::Truncated)
        );
        assert_eq!(decode_body(&[]), Err(CodecError::Truncated));

        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(CodecError::Truncated));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&examples::all()[1]).unwrap();
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(CodecError::Trailing { extra: 1 }));
        // Trailing bytes inside the declared body.
        let body = [&bytes[4..], &[0, 0]].concat();
        assert_eq!(decode_body(&body), Err(CodecError::Trailing { extra: 3 }));
        assert_eq!(
            decode(&prefixed(&body)),
            Err(CodecError::Trailing { extra: 3 })
        );
    }

    #[test]
    fn unknown_versions_and_kinds_are_rejected() {
        assert_eq!(decode_body(&[1, 0]), Err(CodecError::UnknownVersion(2)));
        assert_eq!(
            decode_body(&[0xfb, 0xff, 0xff]),
            Err(CodecError::UnknownVersion(65536))
        );
        assert!(matches!(
            decode_body(&[0, 6]),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode_body(&[0xff]),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_is_rejected() {
        let bad_bool = [&[0u8, 1, 1, 9][..], &[0; 32], &[2]].concat();
        let cases: &[&[u8]] = &[
            &bad_bool,                                   // a heartbeat whose `isolated` is 2
            &[0, 1, 1, 9, 0xfe],                         // a heartbeat cut inside its hash
            &[0, 0, 1, 2, 0xc3, 0x28],                   // a name that is not UTF-8
            &[0, 2, 1, 5, b'a', b'/', b'x', b'y', b'z'], // an unknown check kind
            &[0, 1, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0xfe; 64],
        ];
        for body in cases {
            let result = decode_body(body);
            assert!(result.is_err(), "{body:?} decoded to {result:?}");
        }
        let mut decoder = FrameDecoder::new();
        decoder
            .push(&prefixed(&[0, 2, 1, 5, b'a', b'/', b'x', b'y', b'z']))
            .unwrap();
        assert!(matches!(
            decoder.next_frame(),
            Err(CodecError::Malformed(_))
        ));
        assert!(decoder.next_frame().is_err(), "stays failed");
    }

    #[test]
    fn malformed_messages_are_bounded() {
        // An unknown check kind: bincode's message quotes it.
        let kind = "k".repeat(10_000);
        let id = format!("a/{kind}");
        let mut body = vec![0u8, 3, 0xfb];
        body.extend(u16::try_from(id.len()).unwrap().to_le_bytes());
        body.extend(id.as_bytes());
        let Err(CodecError::Malformed(message)) = decode_body(&body) else {
            panic!("expected Malformed");
        };
        assert!(
            message.len() <= MAX_ERROR_MESSAGE_LEN + '…'.len_utf8(),
            "{message}"
        );
    }

    #[test]
    fn decoder_fed_one_byte_at_a_time() {
        let frames = examples::all();
        let stream: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte)).unwrap();
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn decoder_takes_many_frames_in_one_push() {
        let frames = examples::all();
        let stream: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
        let mut decoder = FrameDecoder::new();
        decoder.push(&stream).unwrap();
        let mut out = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            out.push(frame);
        }
        assert_eq!(out, frames);
        // An oversized prefix after good frames is caught by the push that brings it.
        let mut decoder = FrameDecoder::new();
        let bad = [&stream[..], &u32::MAX.to_be_bytes()].concat();
        assert!(matches!(
            decoder.push(&bad),
            Err(CodecError::TooLarge { .. })
        ));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9.-]{1,20}"
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..max.min(40)).prop_map(move |chars| {
            let mut s: String = chars.into_iter().collect();
            while s.len() > max {
                s.pop();
            }
            s
        })
    }

    fn token(max: usize) -> impl Strategy<Value = String> {
        text(max).prop_map(|s| {
            let s: String = s.chars().filter(|c| !c.is_control()).collect();
            if s.is_empty() { "x".to_owned() } else { s }
        })
    }

    fn check_id() -> impl Strategy<Value = CheckId> {
        (
            name(),
            proptest::sample::select(CheckKind::ALL.to_vec()),
            proptest::option::of("[ -~]{1,30}"),
        )
            .prop_map(|(target, kind, qualifier)| match qualifier {
                Some(q) => CheckId::with_qualifier(&target, kind, &q).unwrap(),
                None => CheckId::new(&target, kind).unwrap(),
            })
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        any::<i64>().prop_map(Timestamp)
    }

    fn hash() -> impl Strategy<Value = ConfigHash> {
        any::<[u8; 32]>().prop_map(ConfigHash)
    }

    fn observation() -> impl Strategy<Value = Observation> {
        (
            check_id(),
            proptest::sample::select(Status::ALL.to_vec()),
            any::<Option<u64>>(),
            text(MAX_DETAIL_LEN),
            timestamp(),
        )
            .prop_map(|(check, status, latency_ms, detail, at)| Observation {
                check,
                status,
                latency_ms,
                detail,
                at,
            })
    }

    fn log_entry() -> impl Strategy<Value = LogEntry> {
        (
            prop_oneof![
                check_id().prop_map(|id| id.to_string()),
                Just("monitoring_offline".to_owned())
            ],
            token(MAX_INCIDENT_LEN),
            any::<bool>(),
            any::<u32>(),
            name(),
            timestamp(),
            any::<bool>(),
        )
            .prop_map(|(subject, incident, resolved, repeat, sent_by, at, sent)| {
                LogEntry {
                    subject,
                    incident,
                    event: if resolved {
                        AlertEvent::Resolved
                    } else {
                        AlertEvent::Firing
                    },
                    repeat,
                    sent_by,
                    at,
                    state: if sent {
                        LogState::Sent
                    } else {
                        LogState::Sending
                    },
                }
            })
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let hello = (
            1..=u16::MAX,
            name(),
            token(MAX_INSTANCE_ID_LEN),
            token(MAX_AGENT_VERSION_LEN),
            hash(),
            timestamp(),
        )
            .prop_map(
                |(protocol_version, name, instance_id, agent_version, config_hash, wall_clock)| {
                    FrameV1::Hello(Hello {
                        protocol_version,
                        name,
                        instance_id,
                        agent_version,
                        config_hash,
                        wall_clock,
                    })
                },
            );
        let heartbeat = (any::<u64>(), timestamp(), hash(), any::<bool>()).prop_map(
            |(seq, wall_clock, config_hash, isolated)| {
                FrameV1::Heartbeat(Heartbeat {
                    seq,
                    wall_clock,
                    config_hash,
                    isolated,
                })
            },
        );
        prop_oneof![
            hello,
            heartbeat,
            proptest::collection::vec(observation(), 0..8).prop_map(FrameV1::Observations),
            check_id().prop_map(|check| FrameV1::ProbeNow(ProbeNow { check })),
            proptest::collection::vec(log_entry(), 0..8).prop_map(FrameV1::NotificationLog),
            text(MAX_REASON_LEN).prop_map(|reason| FrameV1::Bye(Bye { reason })),
        ]
        .prop_map(Frame::V1)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn encode_then_decode_is_identity(frame in frame()) {
            let bytes = encode(&frame).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), frame);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_body(&bytes);
            let _ = decode(&bytes);
            let mut decoder = FrameDecoder::new();
            if decoder.push(&bytes).is_ok() {
                while let Ok(Some(_)) = decoder.next_frame() {}
            }
        }

        /// Random bytes rarely get past the version tag; flipping bytes of real frames reaches
        /// every field decoder.
        #[test]
        fn decoding_mutated_frames_never_panics(
            frame in frame(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut body = encode(&frame).unwrap().split_off(LENGTH_PREFIX_LEN);
            for (at, byte) in flips {
                let i = at.index(body.len());
                body[i] = byte;
            }
            let _ = decode_body(&body);
        }

        #[test]
        fn any_chunking_gives_the_same_frames(
            frames in proptest::collection::vec(frame(), 0..6),
            cuts in proptest::collection::vec(1usize..64, 0..40),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(|f| encode(f).unwrap()).collect();
            let mut decoder = FrameDecoder::new();
            let mut out = Vec::new();
            let mut rest = &stream[..];
            let mut cuts = cuts.into_iter().cycle().chain(std::iter::repeat(64));
            while !rest.is_empty() {
                let n = cuts.next().unwrap().min(rest.len());
                decoder.push(&rest[..n]).unwrap();
                rest = &rest[n..];
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert_eq!(decoder.finish(), Ok(()));
        }
    }
}
