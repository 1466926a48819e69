//! The peer-to-peer frame format: what one overlay core sends another over a data channel.
//!
//! A frame is one version byte followed by a [postcard](https://docs.rs/postcard) encoding
//! of a [`Message`]. Postcard is compact (varints, no field names) and its decoder works on
//! a borrowed slice and reports errors instead of panicking, which matters because every
//! byte here comes from a peer we do not trust.
//!
//! Limits, all checked by [`decode`] before a message reaches the protocol code:
//! - a frame is at most [`MAX_FRAME_LEN`] = 64 KiB, the largest message that every browser
//!   delivers over a data channel (larger application data is chunked by the transport);
//!   the one exception is [`Message::Data`], one piece of an application's
//!   point-to-point direct message (up to [`MAX_MESSAGE_LEN`] = 16 MiB in pieces of at
//!   most [`MAX_DATA_PIECE`] = 256 KiB; the transport chunks those too);
//! - a broadcast payload is at most [`MAX_PAYLOAD_LEN`];
//! - peer lists (walk paths, source routes, shuffle entries, IHAVE batches) and batched
//!   acknowledgements have small fixed bounds ([`MAX_PATH_LEN`], [`MAX_ENTRIES`],
//!   [`MAX_IHAVE`], [`MAX_DATA_ACK_IDS`]).
//!
//! The version byte lets a future format live beside this one: a peer that receives a
//! version it does not speak gets [`WireError::UnsupportedVersion`] (naming both versions)
//! and the overlay drops the sender, does not dial it again and tells the application once
//! (`overlay::Event::IncompatiblePeer`). **Bump [`WIRE_VERSION`] with every change to the
//! bytes of any message** (a new variant, a new or reordered field): postcard carries no
//! field names, so a peer of another build would otherwise misread frames silently.
//!
//! | version | change |
//! |---|---|
//! | 1 | first format |
//! | 2 | DATA pieces, PRUNE naming the origin, DataAck with a list of ids, LEAVE (these went out as version 1 by mistake, so builds misread each other silently) |
//! | 3 | DHT frames carry an answer's way back (`DhtFrame::route`) |
//! | 4 | `Data` carries the sender's count of unacknowledged messages (`unacked`), so the receiver can batch its acknowledgements |
//! | 5 | routed direct messages, requests and responses carry their payload sealed end to end, and `Ack` a sealed tag (`overlay::seal`) |
//! | 6 | `RoomProof`, the first frame on a connection in a room with a secret (`overlay::room`) |

use serde::{Deserialize, Serialize};

use crate::id::{PeerId, Signature};
use crate::signal::SignedEnvelope;

/// Version of the frame format written by [`encode`].
pub const WIRE_VERSION: u8 = 6;
/// Largest frame accepted or produced, in bytes (version byte included).
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Largest broadcast payload, in bytes: a frame minus room for the gossip header.
pub const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN - 1024;
/// Longest walk path or source route carried in a frame.
pub const MAX_PATH_LEN: usize = 16;
/// Most peer entries in one shuffle or shuffle reply.
pub const MAX_ENTRIES: usize = 32;
/// Most message ids in one IHAVE batch.
pub const MAX_IHAVE: usize = 256;
/// Largest application direct message, in bytes (16 MiB).
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;
/// Largest piece of a direct message in one [`Message::Data`] frame (256 KiB): small
/// enough that a neighbour keeps hearing from the sender (pings, the failure detector)
/// while a large message crosses a slow link.
pub const MAX_DATA_PIECE: usize = 256 * 1024;
/// Most pieces of one direct message.
pub const MAX_DATA_PARTS: u32 = (MAX_MESSAGE_LEN / MAX_DATA_PIECE) as u32;
/// Most message ids acknowledged by one [`Message::DataAck`].
pub const MAX_DATA_ACK_IDS: usize = 256;
/// Largest [`Message::Data`] frame: a piece plus its header.
pub const MAX_DATA_FRAME_LEN: usize = MAX_DATA_PIECE + 64;
/// The byte after the version byte that marks a [`Message::Data`] frame (postcard writes
/// the variant index first; checked by a test).
const DATA_TAG: u8 = 14;

/// Largest length allowed for a frame that starts like `frame`: only data frames may
/// exceed [`MAX_FRAME_LEN`].
fn frame_limit(frame: &[u8]) -> usize {
    if frame.get(1) == Some(&DATA_TAG) {
        MAX_DATA_FRAME_LEN
    } else {
        MAX_FRAME_LEN
    }
}

/// Why a frame could not be decoded (or encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame had no bytes at all.
    #[error("empty frame")]
    Empty,
    /// The frame is longer than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLong {
        /// Length received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The version byte names a format this peer does not speak: the sender runs an
    /// incompatible build.
    #[error("wire version {theirs} is not ours ({ours})")]
    UnsupportedVersion {
        /// The version byte of the frame.
        theirs: u8,
        /// [`WIRE_VERSION`].
        ours: u8,
    },
    /// The bytes after the version byte are not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A valid message was followed by extra bytes.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A list or payload inside the message is over its bound.
    #[error("{what} has {len} items, more than the limit of {max}")]
    LimitExceeded {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Priority of a HyParView NEIGHBOR request: `High` must be accepted (the sender has no
/// other neighbour), `Low` may be refused by a peer whose active view is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Must be accepted, evicting another neighbour if needed.
    High,
    /// Accepted only if there is room.
    Low,
}

/// Identifies a broadcast: its origin and the origin's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MsgId {
    /// The peer that signed the broadcast.
    pub origin: PeerId,
    /// The origin's sequence number for it.
    pub seq: u64,
}

/// A peer address carried in a shuffle: the peer, and a source route to it from the
/// peer that sent the entry (empty when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The advertised peer.
    pub peer: PeerId,
    /// Hops from the sender of the entry to `peer` (ending with `peer`); empty if the
    /// sender knows no route.
    pub route: Vec<PeerId>,
}

/// A broadcast as it travels the Plumtree: signed by its origin over
/// `seq || payload`, so relays can neither forge nor alter it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    /// Origin and sequence number.
    pub id: MsgId,
    /// Hops travelled so far (not signed: relays increment it).
    pub round: u16,
    /// The application's bytes (serialised as one byte string: same wire bytes as a
    /// sequence of u8, without serde visiting each byte).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The origin's signature (see `overlay::broadcast::BROADCAST_CONTEXT`).
    pub sig: Signature,
}

/// What a routed frame carries to a peer we are not connected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Routed {
    /// A WebRTC signal envelope (offer, answer, ICE candidate, abort).
    Signal(SignedEnvelope),
    /// The answer to a shuffle: entries from the receiver's passive view.
    ShuffleReply {
        /// Entries, with routes relative to the replying peer.
        entries: Vec<PeerEntry>,
    },
    /// "Would you take me as a low-priority neighbour?" — asked before opening a
    /// connection, so a refusal costs no RTCPeerConnection.
    NeighborQuery,
    /// Answer to [`Routed::NeighborQuery`].
    NeighborAnswer {
        /// Whether the sender has room in its active view right now.
        room: bool,
    },
    /// A relay on `path` could not forward a routed frame to `target`.
    Unreachable {
        /// The final destination that could not be reached.
        target: PeerId,
    },
}

/// Every frame one overlay core sends another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// HyParView JOIN: "I am new, take me into your active view".
    Join,
    /// HyParView FORWARD_JOIN: a random walk announcing `newcomer`.
    ForwardJoin {
        /// The joining peer.
        newcomer: PeerId,
        /// Remaining hops.
        ttl: u8,
        /// Peers the walk has visited, starting with the newcomer's contact.
        path: Vec<PeerId>,
    },
    /// HyParView NEIGHBOR: "please make me an active neighbour".
    Neighbor {
        /// Whether the receiver may refuse.
        priority: Priority,
    },
    /// Answer to [`Message::Neighbor`].
    NeighborReply {
        /// `false` means the sender will close the connection.
        accepted: bool,
    },
    /// HyParView DISCONNECT: "I drop you from my active view; keep me as passive".
    Disconnect,
    /// HyParView SHUFFLE: a random walk that exchanges view samples.
    Shuffle {
        /// Remaining hops.
        ttl: u8,
        /// Peers visited, starting with the origin of the shuffle.
        path: Vec<PeerId>,
        /// The origin's sample (itself, some active and some passive peers).
        entries: Vec<PeerEntry>,
    },
    /// Failure detector probe.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Failure detector answer.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Plumtree eager push of a broadcast.
    Gossip(Gossip),
    /// Plumtree lazy push: "I have these messages" (id and round).
    IHave(Vec<(MsgId, u16)>),
    /// Plumtree GRAFT: "make me eager again in the tree of `id.origin`, and send `id` if
    /// `send`" (each origin's broadcasts travel their own tree: `overlay::broadcast`).
    Graft {
        /// The message that was missing, or (with `send` false) the one whose shorter
        /// path or first arrival over a lazy link made the sender graft.
        id: MsgId,
        /// Whether the message itself is wanted.
        send: bool,
    },
    /// Plumtree PRUNE: "stop eager-pushing `origin`'s broadcasts to me".
    Prune {
        /// The origin whose tree loses this link.
        origin: PeerId,
    },
    /// A frame travelling hop by hop along a source route (see `overlay::route`).
    Route {
        /// Every hop from the source (`path[0]`) to the target (last).
        path: Vec<PeerId>,
        /// Index in `path` of the peer that sent this frame.
        hop: u8,
        /// What is carried.
        body: Routed,
    },
    /// A frame routed greedily over open links by XOR distance (see `overlay::dht`).
    Dht(Box<crate::overlay::dht::DhtFrame>),
    /// A piece of an application's direct message to the peer at the other end of this
    /// connection (see `overlay::direct`): point to point, so unsigned (the data channel
    /// is DTLS-authenticated); up to [`MAX_DATA_PIECE`] bytes, the only frame allowed past
    /// [`MAX_FRAME_LEN`]. The pieces of one message follow each other on the channel; the
    /// last is answered by [`Message::DataAck`].
    Data {
        /// The sender's id for the message, echoed in the acknowledgement.
        id: u64,
        /// Which piece this is, from 0.
        part: u32,
        /// How many pieces the message has (1 to [`MAX_DATA_PARTS`]).
        parts: u32,
        /// How many of the sender's messages to this peer were waiting for their
        /// acknowledgement when this piece was sent, this one included: the receiver may
        /// hold its acknowledgement back while fewer than half of them have arrived
        /// (more are on their way; see `overlay::direct`). 1 (or 0) asks for it at once.
        unacked: u32,
        /// The application's bytes (one byte string on the wire).
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// "Your [`Message::Data`] messages `ids` arrived": acknowledgements are batched
    /// (see `overlay::direct`), at most [`MAX_DATA_ACK_IDS`] ids per frame.
    DataAck {
        /// The acknowledged messages' ids, in the order they arrived.
        ids: Vec<u64>,
    },
    /// "I am leaving the room": like [`Message::Disconnect`], but the receiver forgets the
    /// sender instead of keeping it in its passive view for later repairs.
    Leave,
    /// In a room with a secret, the first frame each side sends on a new connection: an
    /// HMAC of both ids under a key derived from the secret (see `overlay::room`).
    RoomProof {
        /// The proof ([`crate::overlay::room::PROOF_LEN`] bytes).
        #[serde(with = "serde_bytes")]
        mac: Vec<u8>,
    },
}

/// `Err(LimitExceeded)` when `len` (of `what`) is over `max`: the length checks of
/// [`Message::validate`] and of the frames it carries.
pub(crate) fn bound(what: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        Err(WireError::LimitExceeded { what, len, max })
    } else {
        Ok(())
    }
}

impl Message {
    /// Checks the length bounds documented in the module doc.
    pub fn validate(&self) -> Result<(), WireError> {
        fn entries(e: &[PeerEntry]) -> Result<(), WireError> {
            bound("entries", e.len(), MAX_ENTRIES)?;
            e.iter()
                .try_for_each(|e| bound("entry route", e.route.len(), MAX_PATH_LEN))
        }
        match self {
            Message::ForwardJoin { path, .. } => bound("path", path.len(), MAX_PATH_LEN),
            Message::Shuffle {
                path, entries: e, ..
            } => {
                bound("path", path.len(), MAX_PATH_LEN)?;
                entries(e)
            }
            Message::Gossip(g) => bound("payload", g.payload.len(), MAX_PAYLOAD_LEN),
            Message::IHave(ids) => bound("ihave", ids.len(), MAX_IHAVE),
            Message::DataAck { ids } => bound("data acks", ids.len(), MAX_DATA_ACK_IDS),
            Message::RoomProof { mac } => {
                bound("room proof", mac.len(), crate::overlay::room::PROOF_LEN)
            }
            Message::Data {
                part,
                parts,
                payload,
                ..
            } => {
                bound("data", payload.len(), MAX_DATA_PIECE)?;
                bound("data parts", *parts as usize, MAX_DATA_PARTS as usize)?;
                if *parts == 0 || part >= parts {
                    return Err(WireError::Malformed(format!("data part {part} of {parts}")));
                }
                Ok(())
            }
            Message::Dht(frame) => frame.validate(),
            Message::Route { path, body, .. } => {
                bound("path", path.len(), MAX_PATH_LEN)?;
                match body {
                    Routed::ShuffleReply { entries: e } => entries(e),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// What a postcard error means, in a few words: postcard's own texts (its `Display`) were
/// ~0.7 KB of the browser build.
pub(crate) fn postcard_reason(e: &postcard::Error) -> &'static str {
    use postcard::Error as E;
    match e {
        E::DeserializeUnexpectedEnd => "truncated",
        E::DeserializeBadVarint
        | E::DeserializeBadBool
        | E::DeserializeBadChar
        | E::DeserializeBadUtf8
        | E::DeserializeBadOption
        | E::DeserializeBadEnum
        | E::DeserializeBadEncoding => "bad value",
        _ => "not postcard",
    }
}

/// Encodes `msg` as a frame. Fails only if the message breaks a documented limit.
pub fn encode(msg: &Message) -> Result<Vec<u8>, WireError> {
    msg.validate()?;
    // The version byte and the message as one tuple: postcard writes a u8 as one byte, so
    // these are the same bytes as the version followed by the message, and `to_allocvec`
    // copies byte strings (payloads) with one memcpy where `to_extend` pushes them byte by
    // byte (8 % of the main thread's time in a 64 MiB `node.send` transfer).
    let out = postcard::to_allocvec(&(WIRE_VERSION, msg))
        .map_err(|e| WireError::Malformed(postcard_reason(&e).into()))?;
    let max = frame_limit(&out);
    if out.len() > max {
        return Err(WireError::TooLong {
            len: out.len(),
            max,
        });
    }
    Ok(out)
}

/// Decodes one frame. Never panics, whatever the bytes.
pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
    let max = frame_limit(frame);
    if frame.len() > max {
        return Err(WireError::TooLong {
            len: frame.len(),
            max,
        });
    }
    let (&version, rest) = frame.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion {
            theirs: version,
            ours: WIRE_VERSION,
        });
    }
    let (msg, trailing): (Message, _) = postcard::take_from_bytes(rest)
        .map_err(|e| WireError::Malformed(postcard_reason(&e).into()))?;
    if !trailing.is_empty() {
        return Err(WireError::TrailingBytes(trailing.len()));
    }
    msg.validate()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Identity;
    use crate::signal::SignalPayload;
    use proptest::prelude::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    #[test]
    fn a_broadcast_payload_has_the_same_wire_bytes_as_a_plain_byte_sequence() {
        // Peers that serialise the payload element by element must read ours, and we
        // theirs: the byte-string encoding may change speed, never the format.
        #[derive(Serialize)]
        struct PlainGossip {
            id: MsgId,
            round: u16,
            payload: Vec<u8>,
            sig: Signature,
        }
        let g = Gossip {
            id: MsgId {
                origin: peer(7),
                seq: 300,
            },
            round: 2,
            payload: (0..=255u8).chain(0..=10).collect(),
            sig: Signature::from_bytes([9; 64]),
        };
        let plain = PlainGossip {
            id: g.id,
            round: g.round,
            payload: g.payload.clone(),
            sig: g.sig,
        };
        let ours = postcard::to_allocvec(&g).unwrap();
        assert_eq!(ours, postcard::to_allocvec(&plain).unwrap());
        assert_eq!(postcard::from_bytes::<Gossip>(&ours).unwrap(), g);
    }

    fn arb_peer() -> impl Strategy<Value = PeerId> {
        any::<[u8; 32]>().prop_map(PeerId::from_bytes)
    }

    fn arb_entry() -> impl Strategy<Value = PeerEntry> {
        (arb_peer(), prop::collection::vec(arb_peer(), 0..4))
            .prop_map(|(peer, route)| PeerEntry { peer, route })
    }

    fn arb_id() -> impl Strategy<Value = MsgId> {
        (arb_peer(), any::<u64>()).prop_map(|(origin, seq)| MsgId { origin, seq })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let sig = any::<[u8; 32]>().prop_map(|h| {
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&h);
            Signature::from_bytes(b)
        });
        prop_oneof![
            Just(Message::Join),
            (
                arb_peer(),
                any::<u8>(),
                prop::collection::vec(arb_peer(), 0..8)
            )
                .prop_map(|(newcomer, ttl, path)| Message::ForwardJoin {
                    newcomer,
                    ttl,
                    path
                }),
            prop_oneof![Just(Priority::High), Just(Priority::Low)]
                .prop_map(|priority| Message::Neighbor { priority }),
            any::<bool>().prop_map(|accepted| Message::NeighborReply { accepted }),
            Just(Message::Disconnect),
            (
                any::<u8>(),
                prop::collection::vec(arb_peer(), 0..8),
                prop::collection::vec(arb_entry(), 0..8)
            )
                .prop_map(|(ttl, path, entries)| Message::Shuffle {
                    ttl,
                    path,
                    entries
                }),
            any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
            (
                arb_id(),
                any::<u16>(),
                prop::collection::vec(any::<u8>(), 0..300),
                sig
            )
                .prop_map(|(id, round, payload, sig)| Message::Gossip(Gossip {
                    id,
                    round,
                    payload,
                    sig
                })),
            prop::collection::vec((arb_id(), any::<u16>()), 0..20).prop_map(Message::IHave),
            (arb_id(), any::<bool>()).prop_map(|(id, send)| Message::Graft { id, send }),
            arb_peer().prop_map(|origin| Message::Prune { origin }),
            (any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(id, payload)| {
                Message::Data {
                    id,
                    part: 0,
                    parts: 1,
                    unacked: 1,
                    payload,
                }
            }),
            prop::collection::vec(any::<u64>(), 0..8).prop_map(|ids| Message::DataAck { ids }),
            (
                prop::collection::vec(arb_peer(), 0..8),
                any::<u8>(),
                prop::collection::vec(arb_entry(), 0..4)
            )
                .prop_map(|(path, hop, entries)| Message::Route {
                    path,
                    hop,
                    body: Routed::ShuffleReply { entries }
                }),
            (prop::collection::vec(arb_peer(), 0..8), arb_peer()).prop_map(|(path, target)| {
                Message::Route {
                    path,
                    hop: 0,
                    body: Routed::Unreachable { target },
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(msg in arb_message()) {
            let frame = encode(&msg).unwrap();
            prop_assert!(frame.len() <= MAX_FRAME_LEN);
            prop_assert_eq!(decode(&frame).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let mut v = vec![WIRE_VERSION];
            v.extend_from_slice(&bytes);
            let _ = decode(&v);
        }

        #[test]
        fn truncated_frames_are_errors(msg in arb_message(), cut in any::<prop::sample::Index>()) {
            let frame = encode(&msg).unwrap();
            let at = cut.index(frame.len());
            prop_assert!(decode(&frame[..at]).is_err());
        }
    }

    #[test]
    fn a_signal_envelope_round_trips() {
        let a = Identity::from_secret_bytes([1; 32]);
        let env = SignedEnvelope::seal(&a, peer(2), 7, &SignalPayload::Offer { sdp: "v=0".into() });
        let msg = Message::Route {
            path: vec![a.peer_id(), peer(3), peer(2)],
            hop: 0,
            body: Routed::Signal(env),
        };
        assert_eq!(decode(&encode(&msg).unwrap()).unwrap(), msg);
    }

    #[test]
    fn a_frame_from_another_build_is_refused_naming_both_versions() {
        let mut old = encode(&Message::Join).unwrap();
        old[0] = 1;
        let err = decode(&old).unwrap_err();
        assert_eq!(
            err,
            WireError::UnsupportedVersion {
                theirs: 1,
                ours: WIRE_VERSION
            }
        );
        assert_eq!(
            err.to_string(),
            format!("wire version 1 is not ours ({WIRE_VERSION})")
        );
    }

    #[test]
    fn bad_frames_get_typed_errors() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(
            decode(&[9, 0]),
            Err(WireError::UnsupportedVersion {
                theirs: 9,
                ours: WIRE_VERSION
            })
        );
        assert!(matches!(
            decode(&vec![WIRE_VERSION; MAX_FRAME_LEN + 1]),
            Err(WireError::TooLong { .. })
        ));
        let mut frame = encode(&Message::Join).unwrap();
        frame.push(0);
        assert_eq!(decode(&frame), Err(WireError::TrailingBytes(1)));
        assert!(matches!(
            decode(&[WIRE_VERSION, 200]),
            Err(WireError::Malformed(_))
        ));
        let long = Message::ForwardJoin {
            newcomer: peer(1),
            ttl: 1,
            path: vec![peer(2); MAX_PATH_LEN + 1],
        };
        assert!(matches!(
            encode(&long),
            Err(WireError::LimitExceeded { .. })
        ));
        // A hand-made frame that breaks a limit is refused by decode too.
        let mut raw = vec![WIRE_VERSION];
        raw.extend(postcard::to_allocvec(&long).unwrap());
        assert!(matches!(decode(&raw), Err(WireError::LimitExceeded { .. })));
    }

    #[test]
    fn a_data_frame_may_carry_256_kib_and_no_other_frame_may_exceed_64_kib() {
        let big = Message::Data {
            id: u64::MAX,
            part: MAX_DATA_PARTS - 1,
            parts: MAX_DATA_PARTS,
            unacked: u32::MAX,
            payload: vec![7; MAX_DATA_PIECE],
        };
        let frame = encode(&big).unwrap();
        assert_eq!(
            frame[1], DATA_TAG,
            "DATA_TAG must be Message::Data's variant index"
        );
        assert!(frame.len() <= MAX_DATA_FRAME_LEN);
        assert_eq!(decode(&frame).unwrap(), big);
        let ack = Message::DataAck {
            ids: vec![3, 4, u64::MAX],
        };
        assert_eq!(decode(&encode(&ack).unwrap()).unwrap(), ack);
        // A batch of acknowledgements is bounded both ways.
        let too_many = Message::DataAck {
            ids: vec![1; MAX_DATA_ACK_IDS + 1],
        };
        assert!(matches!(
            encode(&too_many),
            Err(WireError::LimitExceeded { .. })
        ));
        let mut raw = vec![WIRE_VERSION];
        raw.extend(postcard::to_allocvec(&too_many).unwrap());
        assert!(matches!(decode(&raw), Err(WireError::LimitExceeded { .. })));
        let full = Message::DataAck {
            ids: vec![u64::MAX; MAX_DATA_ACK_IDS],
        };
        assert!(encode(&full).unwrap().len() <= MAX_FRAME_LEN);

        // One byte more than a piece, a part past the count, or too many parts: refused
        // both ways.
        let data = |part, parts, len| Message::Data {
            id: 1,
            part,
            parts,
            unacked: 1,
            payload: vec![0; len],
        };
        for bad in [
            data(0, 1, MAX_DATA_PIECE + 1),
            data(1, 1, 1),
            data(0, 0, 1),
            data(0, MAX_DATA_PARTS + 1, 1),
        ] {
            assert!(encode(&bad).is_err());
            let mut raw = vec![WIRE_VERSION];
            raw.extend(postcard::to_allocvec(&bad).unwrap());
            assert!(decode(&raw).is_err());
        }
        let mut raw = vec![WIRE_VERSION];
        raw.extend(postcard::to_allocvec(&data(0, 1, MAX_DATA_PIECE)).unwrap());
        raw.resize(MAX_DATA_FRAME_LEN + 1, 0);
        assert!(matches!(decode(&raw), Err(WireError::TooLong { .. })));
        // A data frame that claims more bytes than it has is malformed, not a panic.
        assert!(matches!(
            decode(&frame[..frame.len() - 1]),
            Err(WireError::Malformed(_))
        ));
        // Any other frame past 64 KiB is refused before it is parsed.
        let mut long = vec![WIRE_VERSION, 8];
        long.resize(MAX_FRAME_LEN + 1, 0);
        assert!(matches!(decode(&long), Err(WireError::TooLong { .. })));
    }

    #[test]
    fn a_frame_is_the_version_byte_then_the_message() {
        let m = Message::Data {
            id: 7,
            part: 0,
            parts: 1,
            unacked: 3,
            payload: (0..3000).map(|i| i as u8).collect(),
        };
        let mut expected = vec![WIRE_VERSION];
        expected.extend(postcard::to_allocvec(&m).unwrap());
        assert_eq!(encode(&m).unwrap(), expected);
    }

    #[test]
    fn control_frames_are_small() {
        assert!(encode(&Message::Ping { nonce: u64::MAX }).unwrap().len() <= 12);
        let origin = PeerId::from_bytes([7; 32]);
        assert_eq!(encode(&Message::Prune { origin }).unwrap().len(), 34);
    }
}
