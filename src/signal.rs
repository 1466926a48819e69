//! The signaling protocol: the JSON messages between a peer and a signaling server, and
//! the signed envelopes peers exchange to set up a WebRTC connection.
//!
//! The server is used only for bootstrap and is not trusted. It learns which sessions are
//! in which room and relays opaque envelopes between two of them; it cannot read meaning
//! into an envelope nor forge one, because every [`SignedEnvelope`] is signed end to end
//! by its sender's Ed25519 key and names both endpoints. The SDP inside an offer or answer
//! carries the DTLS certificate fingerprint, so a server (or an overlay relay) that swaps
//! an SDP breaks the signature: the signaling path cannot man-in-the-middle a connection.
//!
//! The same envelopes travel through the overlay once the server is gone (see
//! `overlay/route.rs`), so a connection can be set up with or without a server.
//!
//! `signaling/PROTOCOL.md` documents the protocol for implementers in other languages;
//! these types are the source of truth and are shared by the server and every client.

#[cfg(not(target_arch = "wasm32"))]
use serde::{Deserialize, Serialize};

use crate::id::{IdError, Identity, PeerId, Signature};
pub use crate::transport::IceServer;

mod json;
pub use json::JsonError;

/// A relayed envelope as JSON, opaque to the server: parsed (`serde_json::Value`)
/// natively, where the server and the tests inspect it; its JSON text in the browser, whose
/// build carries no general JSON library (see `signal/json.rs`).
#[cfg(not(target_arch = "wasm32"))]
pub type EnvelopeJson = serde_json::Value;
/// A relayed envelope as JSON text (natively a `serde_json::Value`).
#[cfg(target_arch = "wasm32")]
pub type EnvelopeJson = String;

/// Version of the signaling protocol announced in [`ServerMsg::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Signature context of a join proof.
pub const JOIN_PROOF_CONTEXT: &[u8] = b"rhizome/signaling/join/v1";
/// Signature context of a signal envelope.
pub const ENVELOPE_CONTEXT: &[u8] = b"rhizome/signal-envelope/v1";

/// Low bits of an attempt id that are random (see [`attempt_id`]).
pub const ATTEMPT_RANDOM_BITS: u32 = 20;

/// A connection attempt id: the sender's wall clock (ms since the Unix epoch) in the high
/// bits and `random` in the low [`ATTEMPT_RANDOM_BITS`]. A peer's later attempts are
/// larger than its earlier ones, also after a restart that remembers nothing (as long as
/// its clock did not go back), so a receiver ignores an offer whose attempt is not newer
/// than the one it holds from that peer: a replayed offer cannot reset a link. Only one
/// peer's ids are ever compared with each other; clocks of different peers may differ.
pub fn attempt_id(wall_ms: u64, random: u64) -> u64 {
    (wall_ms << ATTEMPT_RANDOM_BITS) | (random & ((1 << ATTEMPT_RANDOM_BITS) - 1))
}

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_LEN: usize = 128;

/// The bytes a peer signs to prove, when joining, that it owns its id: the server's
/// one-time nonce (from [`ServerMsg::Hello`]) and the room, so a proof cannot be replayed
/// on another connection or for another room.
pub fn join_proof_message(nonce: &str, room: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + nonce.len() + room.len());
    m.extend_from_slice(&(nonce.len() as u32).to_be_bytes());
    m.extend_from_slice(nonce.as_bytes());
    m.extend_from_slice(&(room.len() as u32).to_be_bytes());
    m.extend_from_slice(room.as_bytes());
    m
}

/// Signs a join proof for `nonce` and `room`.
pub fn sign_join_proof(identity: &Identity, nonce: &str, room: &str) -> Signature {
    identity.sign(JOIN_PROOF_CONTEXT, &join_proof_message(nonce, room))
}

/// Checks a join proof.
pub fn verify_join_proof(
    peer: &PeerId,
    nonce: &str,
    room: &str,
    proof: &Signature,
) -> Result<(), IdError> {
    peer.verify(JOIN_PROOF_CONTEXT, &join_proof_message(nonce, room), proof)
}

/// A message from a client to the signaling server.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(Serialize, Deserialize))]
#[cfg_attr(
    not(target_arch = "wasm32"),
    serde(tag = "type", rename_all = "kebab-case")
)]
pub enum ClientMsg {
    /// Join `room` as `peer`; `proof` signs [`join_proof_message`] with the peer's key.
    Join {
        /// Room name, 1..=[`MAX_ROOM_LEN`] bytes.
        room: String,
        /// The joining peer's id.
        peer: PeerId,
        /// Proof of ownership of `peer`'s key.
        proof: Signature,
    },
    /// Relay `envelope` to the member `to` of the same room. The server does not look
    /// inside the envelope.
    Signal {
        /// Recipient.
        to: PeerId,
        /// Opaque to the server; a [`SignedEnvelope`] for rhizome peers.
        envelope: EnvelopeJson,
    },
    /// Heartbeat; answered with [`ServerMsg::Pong`].
    Ping,
}

/// A message from the signaling server to a client.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(Serialize, Deserialize))]
#[cfg_attr(
    not(target_arch = "wasm32"),
    serde(tag = "type", rename_all = "kebab-case")
)]
pub enum ServerMsg {
    /// First message on every connection.
    Hello {
        /// One-time value the join proof must sign.
        nonce: String,
        /// [`PROTOCOL_VERSION`] of the server.
        version: u32,
    },
    /// Answer to a successful join: a random sample of other members of the room (at
    /// most a configured handful, never the full list).
    Welcome {
        /// Other members to connect to.
        peers: Vec<PeerId>,
        /// STUN/TURN servers the server offers (TURN ones with short-lived credentials),
        /// for the client's connections from now on, merged with its own. JSON
        /// `iceServers`, absent when empty, so older clients and servers are unaffected.
        #[cfg_attr(
            not(target_arch = "wasm32"),
            serde(default, rename = "iceServers", skip_serializing_if = "Vec::is_empty")
        )]
        ice_servers: Vec<IceServer>,
    },
    /// Fresh ICE servers (new TURN credentials) for a joined session, sent before the
    /// previous ones expire; they replace the ones of the `welcome` (or of the previous
    /// `ice-servers`). A client that does not know this message may ignore it.
    IceServers {
        /// As in [`ServerMsg::Welcome`].
        #[cfg_attr(not(target_arch = "wasm32"), serde(rename = "iceServers"))]
        ice_servers: Vec<IceServer>,
    },
    /// An envelope relayed from another member of the room.
    Signal {
        /// Sender, as authenticated by its join proof.
        from: PeerId,
        /// As sent.
        envelope: EnvelopeJson,
    },
    /// Answer to [`ClientMsg::Ping`].
    Pong,
    /// Something was refused. The session stays open unless the code says otherwise.
    Error {
        /// Stable, machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// The peer the refusal is about, when there is one: the `to` of a `signal` that
        /// was refused with [`ErrorCode::UnknownPeer`] or [`ErrorCode::PeerBusy`]. Absent
        /// from the JSON when `None`, so older clients and servers are unaffected.
        #[cfg_attr(
            not(target_arch = "wasm32"),
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        peer: Option<PeerId>,
    },
}

/// Stable error codes of the signaling protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(not(target_arch = "wasm32"), derive(Serialize, Deserialize))]
#[cfg_attr(not(target_arch = "wasm32"), serde(rename_all = "kebab-case"))]
pub enum ErrorCode {
    /// The frame was not valid JSON or not a valid message.
    BadRequest,
    /// The frame was valid JSON with an unknown `type`.
    UnknownType,
    /// The frame exceeded the server's size limit.
    FrameTooLarge,
    /// The session sent too fast.
    RateLimited,
    /// A message other than `join` / `ping` arrived before a successful join.
    NotJoined,
    /// A second `join` on one session.
    AlreadyJoined,
    /// The join proof did not verify.
    BadProof,
    /// The room name was empty or too long.
    BadRoom,
    /// The room has as many members as the server allows.
    RoomFull,
    /// The server has as many rooms as it allows.
    TooManyRooms,
    /// The target of a `signal` is not a member of the room.
    UnknownPeer,
    /// No `join` arrived within the join deadline.
    JoinTimeout,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
    /// The same peer id joined from a newer session, which replaced this one.
    Replaced,
    /// The page's Origin is not on the server's allow-list.
    OriginForbidden,
    /// The server is shutting down.
    ShuttingDown,
    /// Too many errors on one session; it is closed.
    TooManyErrors,
    /// The target of a `signal` is not reading fast enough and its queue on the server is
    /// full; this one envelope was not delivered (retry later or give up on the target).
    PeerBusy,
}

/// WebSocket close code sent with [`ErrorCode::ShuttingDown`] (1001, "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code sent with [`ErrorCode::OriginForbidden`] (1008, "policy violation").
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code sent when a frame exceeds the server's hard size limit
/// ([`ErrorCode::FrameTooLarge`]; 1009, "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code sent with [`ErrorCode::Replaced`].
pub const CLOSE_REPLACED: u16 = 4000;
/// WebSocket close code sent with [`ErrorCode::JoinTimeout`].
pub const CLOSE_JOIN_TIMEOUT: u16 = 4001;
/// WebSocket close code sent with [`ErrorCode::IdleTimeout`].
pub const CLOSE_IDLE_TIMEOUT: u16 = 4002;
/// WebSocket close code sent with [`ErrorCode::TooManyErrors`].
pub const CLOSE_TOO_MANY_ERRORS: u16 = 4003;

impl ErrorCode {
    /// Every code, in declaration order (for documentation, metrics and tests).
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::FrameTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::BadProof,
        ErrorCode::BadRoom,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRooms,
        ErrorCode::UnknownPeer,
        ErrorCode::JoinTimeout,
        ErrorCode::IdleTimeout,
        ErrorCode::Replaced,
        ErrorCode::OriginForbidden,
        ErrorCode::ShuttingDown,
        ErrorCode::TooManyErrors,
        ErrorCode::PeerBusy,
    ];

    /// The code as it appears on the wire (`"frame-too-large"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::FrameTooLarge => "frame-too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::BadProof => "bad-proof",
            ErrorCode::BadRoom => "bad-room",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::TooManyRooms => "too-many-rooms",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::JoinTimeout => "join-timeout",
            ErrorCode::IdleTimeout => "idle-timeout",
            ErrorCode::Replaced => "replaced",
            ErrorCode::OriginForbidden => "origin-forbidden",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::TooManyErrors => "too-many-errors",
            ErrorCode::PeerBusy => "peer-busy",
        }
    }

    /// The WebSocket close code the server sends right after this error, if the error ends
    /// the session (`None`: the session stays open). A client can read the reason from
    /// the close code alone; the close reason text is [`ErrorCode::as_str`].
    pub const fn close_code(self) -> Option<u16> {
        match self {
            ErrorCode::ShuttingDown => Some(CLOSE_GOING_AWAY),
            ErrorCode::OriginForbidden => Some(CLOSE_POLICY),
            ErrorCode::Replaced => Some(CLOSE_REPLACED),
            ErrorCode::JoinTimeout => Some(CLOSE_JOIN_TIMEOUT),
            ErrorCode::IdleTimeout => Some(CLOSE_IDLE_TIMEOUT),
            ErrorCode::TooManyErrors => Some(CLOSE_TOO_MANY_ERRORS),
            _ => None,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one peer tells another to set up (or tear down) a WebRTC connection.
///
/// Its JSON text ([`SignalPayload::to_text`]) is what an envelope signs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(Serialize, Deserialize))]
#[cfg_attr(
    not(target_arch = "wasm32"),
    serde(tag = "kind", rename_all = "kebab-case")
)]
pub enum SignalPayload {
    /// An SDP offer.
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The `candidate:` line.
        candidate: String,
        /// Media stream id, if any.
        #[cfg_attr(
            not(target_arch = "wasm32"),
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        sdp_mid: Option<String>,
        /// Media line index, if any.
        #[cfg_attr(
            not(target_arch = "wasm32"),
            serde(default, skip_serializing_if = "Option::is_none")
        )]
        sdp_m_line_index: Option<u16>,
    },
    /// The sender gave up on this connection attempt.
    Abort,
}

/// A [`SignalPayload`] signed by its sender for one recipient and one connection attempt.
///
/// `body` is the JSON text of the payload, signed as is, so no canonical re-encoding is
/// needed to check it. Serde (postcard) carries it in overlay frames.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedEnvelope {
    /// Sender.
    pub from: PeerId,
    /// Recipient.
    pub to: PeerId,
    /// The sender's id for its side of this connection attempt ([`attempt_id`]: grows
    /// with the sender's clock); lets a peer ignore leftovers and replays of an earlier
    /// attempt, and tell a restarted peer (a newer attempt) from a replayed old offer.
    pub attempt: u64,
    /// JSON text of a [`SignalPayload`].
    pub body: String,
    /// `from`'s signature over `to`, `attempt` and `body`.
    pub sig: Signature,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not shaped like an envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// Addressed to somebody else.
    #[error("envelope addressed to {0:?}, not to us")]
    WrongRecipient(PeerId),
    /// The claimed sender did not sign it (or it was altered on the way).
    #[error("envelope from {0:?} has a bad signature")]
    BadSignature(PeerId),
}

impl SignedEnvelope {
    fn signed_bytes(to: &PeerId, attempt: u64, body: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(40 + body.len());
        m.extend_from_slice(to.as_bytes());
        m.extend_from_slice(&attempt.to_be_bytes());
        m.extend_from_slice(body.as_bytes());
        m
    }

    /// Signs `payload` from `identity` to `to`.
    pub fn seal(identity: &Identity, to: PeerId, attempt: u64, payload: &SignalPayload) -> Self {
        let body = payload.to_text();
        let sig = identity.sign(ENVELOPE_CONTEXT, &Self::signed_bytes(&to, attempt, &body));
        SignedEnvelope {
            from: identity.peer_id(),
            to,
            attempt,
            body,
            sig,
        }
    }

    /// Checks the signature and the recipient, and decodes the payload.
    pub fn open(&self, me: &PeerId) -> Result<SignalPayload, EnvelopeError> {
        if &self.to != me {
            return Err(EnvelopeError::WrongRecipient(self.to));
        }
        self.from
            .verify(
                ENVELOPE_CONTEXT,
                &Self::signed_bytes(&self.to, self.attempt, &self.body),
                &self.sig,
            )
            .map_err(|_| EnvelopeError::BadSignature(self.from))?;
        SignalPayload::from_text(&self.body).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// Parses an envelope out of the opaque JSON the server relays.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_json(v: &EnvelopeJson) -> Result<Self, EnvelopeError> {
        serde_json::from_value(v.clone()).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// Parses an envelope out of the opaque JSON the server relays.
    #[cfg(target_arch = "wasm32")]
    pub fn from_json(v: &EnvelopeJson) -> Result<Self, EnvelopeError> {
        Self::from_text(v).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// The envelope as the opaque JSON the server relays.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_json(&self) -> EnvelopeJson {
        serde_json::to_value(self).expect("envelopes always serialize")
    }

    /// The envelope as the opaque JSON the server relays.
    #[cfg(target_arch = "wasm32")]
    pub fn to_json(&self) -> EnvelopeJson {
        self.to_text()
    }
}

// The tests compare with serde_json, which the browser build does not have.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn client_messages_have_the_documented_json_shape() {
        let id = Identity::from_secret_bytes([7; 32]);
        let proof = sign_join_proof(&id, "n0nce", "lobby");
        let join = ClientMsg::Join {
            room: "lobby".into(),
            peer: id.peer_id(),
            proof,
        };
        let v: serde_json::Value = serde_json::to_value(&join).unwrap();
        assert_eq!(v["type"], "join");
        assert_eq!(v["room"], "lobby");
        assert_eq!(v["peer"], id.peer_id().to_string());
        assert_eq!(serde_json::from_value::<ClientMsg>(v).unwrap(), join);
        let err = ServerMsg::Error {
            code: ErrorCode::FrameTooLarge,
            message: "x".into(),
            peer: None,
        };
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(v["code"], "frame-too-large");
        assert!(
            v.get("peer").is_none(),
            "no peer field when there is no peer"
        );
    }

    #[test]
    fn an_error_about_a_peer_names_it_and_older_errors_still_parse() {
        let to = Identity::from_secret_bytes([3; 32]).peer_id();
        let err = ServerMsg::Error {
            code: ErrorCode::UnknownPeer,
            message: "gone".into(),
            peer: Some(to),
        };
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(v["peer"], to.to_string());
        assert_eq!(serde_json::from_value::<ServerMsg>(v).unwrap(), err);
        // What a server without the field sends.
        let old = r#"{"type":"error","code":"unknown-peer","message":"gone"}"#;
        assert_eq!(
            serde_json::from_str::<ServerMsg>(old).unwrap(),
            ServerMsg::Error {
                code: ErrorCode::UnknownPeer,
                message: "gone".into(),
                peer: None,
            }
        );
    }

    #[test]
    fn error_code_names_match_their_json_form() {
        for code in ErrorCode::ALL {
            let v = serde_json::to_value(code).unwrap();
            assert_eq!(v, code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(v).unwrap(), code);
        }
    }

    #[test]
    fn a_join_proof_is_bound_to_nonce_and_room() {
        let id = Identity::from_secret_bytes([7; 32]);
        let proof = sign_join_proof(&id, "n1", "lobby");
        assert!(verify_join_proof(&id.peer_id(), "n1", "lobby", &proof).is_ok());
        assert!(verify_join_proof(&id.peer_id(), "n2", "lobby", &proof).is_err());
        assert!(verify_join_proof(&id.peer_id(), "n1", "other", &proof).is_err());
    }

    #[test]
    fn a_later_attempt_id_is_larger_whatever_its_random_bits() {
        let t = 1_780_000_000_000;
        let max_random = (1 << ATTEMPT_RANDOM_BITS) - 1;
        assert!(attempt_id(t + 1, 0) > attempt_id(t, max_random));
        assert!(
            attempt_id(t, u64::MAX) == attempt_id(t, max_random),
            "only the low bits"
        );
        // Room for the wall clock for centuries: no overflow in the year 2500.
        let y2500 = 16_725_225_600_000u64;
        assert_eq!(attempt_id(y2500, 0) >> ATTEMPT_RANDOM_BITS, y2500);
    }

    #[test]
    fn a_tampered_envelope_is_refused() {
        let a = Identity::from_secret_bytes([1; 32]);
        let b = Identity::from_secret_bytes([2; 32]);
        let payload = SignalPayload::Offer {
            sdp: "v=0 fingerprint:sha-256 AA".into(),
        };
        let env = SignedEnvelope::seal(&a, b.peer_id(), 9, &payload);
        let relayed = SignedEnvelope::from_json(&env.to_json()).unwrap();
        assert_eq!(relayed.open(&b.peer_id()).unwrap(), payload);

        let mut swapped = env.clone();
        swapped.body = swapped.body.replace("AA", "BB");
        assert_eq!(
            swapped.open(&b.peer_id()),
            Err(EnvelopeError::BadSignature(a.peer_id()))
        );
        let mut replayed = env.clone();
        replayed.attempt = 10;
        assert!(replayed.open(&b.peer_id()).is_err());
        assert!(matches!(
            env.open(&a.peer_id()),
            Err(EnvelopeError::WrongRecipient(_))
        ));
    }
}
