//! The structured half: a Kademlia routing table, greedy routing over open links, routed
//! direct messages with acknowledgements, and signed records stored at the k closest peers.
//!
//! # Why routing over open links
//! [Kademlia](https://pdos.csail.mit.edu/~petar/papers/maymounkov-kademlia-lncs.pdf)
//! (Maymounkov & Mazières, IPTPS 2002) looks a key up *iteratively*: the searcher contacts
//! α peers from its k-buckets, learns closer ones from their answers, and contacts those.
//! Contacting a peer is one UDP datagram there; in a browser it is a WebRTC handshake
//! (offer, answer, ICE, DTLS: 0.5–several seconds, and Chromium refuses more than ~500
//! RTCPeerConnections in a page's lifetime). So rhizome keeps Kademlia's XOR metric and
//! k-buckets as *knowledge* (peer ids, no connections) and moves every message
//! **recursively over connections that are already open**: each hop hands the frame to
//! its open link (active-view neighbour or DHT link) closest in XOR distance to the
//! target, until no link is closer ([`DhtFrame`]).
//!
//! Greedy routing only converges quickly if the links are chosen for it. On the random
//! graph of HyParView's active views alone it stalls after about log₂(view size) bits.
//! [Kleinberg](https://www.cs.cornell.edu/home/kleinber/swn.pdf) (STOC 2000) showed that
//! greedy routing needs long links drawn with probability ∝ 1/distance; Kademlia's buckets
//! give exactly that distribution (bucket *i* holds half the space of bucket *i−1*), and
//! [Symphony](https://www.usenix.org/legacy/events/usits03/tech/full_papers/manku/manku.pdf)
//! (Manku, Bawa, Raghavan, USITS 2003) shows a handful of such links per node is enough.
//! So each peer keeps **one DHT link per non-empty link slot**: slot (level, digit) holds
//! peers sharing `level·b` leading bits with us whose next `b` bits are `digit`
//! ([`DhtConfig::bits_per_hop`]). A frame at a peer sharing `c` bits with its target can
//! always move to a link sharing at least `⌊c/b⌋·b + b` bits, so a lookup takes at most
//! ⌈log₂N / b⌉ hops, about half that on average, and the active view covers the top
//! levels for free.
//!
//! # Connection budget
//! Links are opened through a passive-view route or the server while there is one, else
//! through the DHT itself, and kept for the session. A peer opens at most
//! [`DhtConfig::max_links`] (default 12 ≈ log₂ 10,000 − 1; with b = 1 there are ⌈log₂N⌉
//! levels and the active view covers the first one or two), at most two at a time, and
//! accepts at most [`DhtConfig::max_inbound_links`] (default 16); a link made redundant
//! (another open connection serves its slot) is swapped for an uncovered slot only at the
//! budget. A link serves the same level at both ends (the shared prefix is symmetric), so
//! a slot an inbound link covers needs no link of ours. A peer whose link failed or was
//! closed (refused for the other side's inbound budget, usually) is not tried again for
//! 10 minutes: retrying a full peer every link round was most of the DHT's connection
//! churn (33 → 16–18 RTCPeerConnections per peer-hour at 1,000 peers under 2-hour-median
//! churn, overlay included; `docs/BENCHMARKS.md`, "DHT"), which stays far from
//! Chromium's ~500 per page. At 10,000 peers the budgets bind (refused inbound links,
//! swaps at the 12-link budget) and churn cost 45 per peer-hour: not yet solved (25–32 in
//! later runs over 5- and 15-minute windows).
//!
//! # What runs on top
//! - **Direct messages** ([`Command::SendDirect`]) are routed to an exact peer id; the
//!   recipient answers an [`DhtBody::Ack`] sent back along the message's own path
//!   ([`DhtFrame::route`]; every answer travels so: a newcomer is reachable greedily only
//!   once its deepest links are up), and the sender reports
//!   [`DhtEvent::Delivered`] or [`DhtEvent::Failed`] (timeout, or a relay found no closer
//!   link: unreachable). Where greedy routing stalls, a frame may take up to
//!   [`MAX_DETOURS`] hops to the closest link off its path; a failed attempt is retried
//!   once, with the same id, through another first hop.
//!   [`Command::Request`] / [`Command::Respond`] is the same with a payload in the answer.
//! - **Lookups** ([`Command::Lookup`]) find the k closest live peers to a key. The first
//!   query is routed to the key and answered by the closest peer the routing reaches with
//!   its k closest known peers; the searcher then queries the unqueried among its k best
//!   (α at a time, each routed over open links) until all k best have answered, as in
//!   Kademlia. A query that meets a routing dead end (`Unreachable`) goes once more
//!   through another first hop before its peer counts as gone: the peer is usually alive
//!   and a relay lacked a link. Peers learn each other from every frame they relay (the
//!   path is carried), and every peer looks up its own id periodically to know its
//!   neighbourhood.
//! - **Records** ([`Record`]): a value signed by its writer under a name; the key is
//!   SHA-256(writer ‖ name), so only the writer can write it. A higher sequence number
//!   wins, a record lives `ttl_ms`, and is stored at the [`DhtConfig::replicas`] (16 = 2k)
//!   closest peers, which refuse bad signatures, older sequence numbers and oversized
//!   values with a typed [`RecordError`]; puts and gets wait for that many answers, so a
//!   get after a mass crash still meets a surviving replica (and one that finds nothing
//!   there asks as many again beyond them). Holders and the writer
//!   republish every [`DhtConfig::republish_ms`].
//! - **Leave** fails every command in flight with [`DhtError::NotJoined`] and forgets the
//!   routing table, held records and links (only our own records stay, for a rejoin).
//! - **Signals**: a WebRTC envelope for a peer with no passive-view route travels the
//!   same way ([`SignalPath::Dht`]), so any two peers can connect without the server.
//!
//! # Modes ([`Mode`])
//! `Hybrid` (default) runs both halves. `Unstructured` opens no DHT links and refuses the
//! commands here: the cheapest choice for a room that only broadcasts. `Structured`
//! refuses the application's broadcasts (the peer still relays others'): for apps that
//! only address peers and records and want no broadcast traffic of their own.

use crate::collections::{BTreeMap, BTreeSet};

use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::seal::{self, Kind, OpenError};
use super::{Conn, Event, Intent, Misbehaviour, Output, Overlay, SignalPath};
use crate::id::{Identity, PeerId, Signature};
use crate::signal::SignedEnvelope;
use crate::wire::{Message, WireError, MAX_FRAME_LEN};

/// Largest k accepted in a [`DhtBody::Nodes`] answer.
pub const MAX_K: usize = 20;
/// Most hops a DHT frame travels (its path is carried, so this bounds the frame too).
pub const MAX_DHT_PATH: usize = 32;
/// Most non-greedy hops a frame for an exact target may take around a stall.
pub const MAX_DETOURS: u8 = 2;
/// Largest direct message, request or response payload, in bytes.
pub const MAX_DIRECT_PAYLOAD: usize = MAX_FRAME_LEN - 4096;
/// Longest record name, in bytes.
pub const MAX_RECORD_NAME: usize = 64;
/// Largest record value the wire accepts, in bytes ([`DhtConfig::max_record_value`] may
/// be lower).
pub const MAX_RECORD_VALUE: usize = 16 * 1024;
/// Signature context of records.
const RECORD_CONTEXT: &[u8] = b"rhizome/dht-record/v1";
/// Key derivation context of records.
const KEY_CONTEXT: &[u8] = b"rhizome/dht-key/v1";
/// How long a received direct message id is remembered to drop duplicates, ms.
const SEEN_TTL_MS: u64 = 120_000;
/// Most requests to us whose way back is kept for the application's `respond`.
const MAX_REQUEST_PATHS: usize = 1024;
/// How long we do not try again to link to a peer whose link failed or was closed, ms.
const LINK_BACKOFF_MS: u64 = 600_000;
/// A link candidate heard from directly this recently, ms, is preferred.
const LINK_FRESH_MS: u64 = 120_000;

/// A point in the 256-bit XOR key space: a peer id, or the hash locating a record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key(#[serde(with = "crate::id::byte_array")] pub [u8; 32]);

impl Key {
    /// A peer's position: its public key bytes.
    pub fn of_peer(peer: &PeerId) -> Key {
        Key(*peer.as_bytes())
    }

    /// Where the record `name` of `writer` lives: SHA-256 of a context, the writer and the name.
    pub fn for_record(writer: &PeerId, name: &[u8]) -> Key {
        let mut h = Sha256::new();
        h.update(KEY_CONTEXT);
        h.update(writer.as_bytes());
        h.update(name);
        Key(h.finalize().into())
    }

    /// XOR distance, compared as a big-endian number.
    pub fn distance(&self, other: &Key) -> Key {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Key(d)
    }

    /// Number of leading bits shared with `other` (256 if equal).
    pub fn common_prefix_len(&self, other: &Key) -> usize {
        for i in 0..32 {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        256
    }

    /// The `bits` bits starting at bit `from` (big-endian), as a number.
    fn bits(&self, from: usize, bits: usize) -> u32 {
        let mut v = 0u32;
        for i in from..(from + bits).min(256) {
            v = (v << 1) | u32::from((self.0[i / 8] >> (7 - i % 8)) & 1);
        }
        v
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}…)", hex::encode(&self.0[..4]))
    }
}

/// Which halves of the overlay run (see the module docs for when to pick which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    /// HyParView + Plumtree only: broadcasts, no DHT links, DHT commands refused.
    Unstructured,
    /// HyParView + DHT: direct messages and records; the app's broadcasts are refused.
    Structured,
    /// Both (default).
    #[default]
    Hybrid,
}

/// DHT parameters. One home for all of them, with the defaults documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtConfig {
    /// Bucket size and replication factor. Default 8 (Kademlia uses 20; 8 keeps browser
    /// traffic down and still leaves 1/256 chance of losing a record to a 50% crash).
    pub k: usize,
    /// Peers a record is stored at (at most [`MAX_K`]): the closest live ones to its key,
    /// found by a lookup that waits for this many answers. Default 16 = 2k: a record then survives half the
    /// network crashing at once unless all 16 replicas were among the crashed (2⁻¹⁶ per
    /// record instead of 2⁻⁸ with k replicas), and the gets afterwards still meet one.
    pub replicas: usize,
    /// Parallel queries while refining a lookup. Default 8 (= k): the lookup waits for
    /// all k best to answer anyway, so asking them at once costs about the same queries
    /// as 3 at a time and is faster (1,000 peers: 0.83 s instead of 1.29 s steady, 1.15 s
    /// instead of 1.65 s under churn, control traffic +1 %; `docs/BENCHMARKS.md`, "DHT").
    pub alpha: usize,
    /// Bits resolved per hop, b: link slots are `2^b − 1` per level of `b` bits. Default 1.
    pub bits_per_hop: u8,
    /// DHT links this peer opens. Default 12 (see "Connection budget").
    pub max_links: usize,
    /// DHT links other peers may open to this one. Default 24: a refused link has cost
    /// both ends an RTCPeerConnection and its opener links to another peer of the same
    /// slot anyway, so refusing saves nothing; at 10,000 peers the deepest slots' few
    /// peers are asked by many (inbound links per peer vary far more than outbound).
    pub max_inbound_links: usize,
    /// Period of the link check (at most two new links per check). Default 5 s.
    pub link_refresh_ms: u64,
    /// Period of the lookup of our own id that keeps the neighbourhood known. Default 60 s.
    pub self_lookup_ms: u64,
    /// Deadline of one routed attempt (direct message, request, query); a direct message
    /// or request gets two attempts. Default 4 s.
    pub request_timeout_ms: u64,
    /// Deadline of one lookup query (a `Find` routed to one peer). Default 2 s (a routed
    /// query takes ≈ 0.35 s in the simulator; a dead peer must not stall the lookup).
    pub query_timeout_ms: u64,
    /// How long a request that reached its recipient waits for the response. Default 10 s.
    pub response_timeout_ms: u64,
    /// Deadline of a whole lookup, put or get. Default 15 s.
    pub lookup_timeout_ms: u64,
    /// Largest record value accepted, at most [`MAX_RECORD_VALUE`]. Default 16 KiB.
    pub max_record_value: usize,
    /// Longest record lifetime accepted. Default 24 h.
    pub max_record_ttl_ms: u64,
    /// Records stored for others. Default 1,024.
    pub max_records: usize,
    /// Period of republishing (own records, and held records nobody re-stored). Default 10 min.
    pub republish_ms: u64,
    /// A bucket entry not heard of for this long may be replaced by a new peer. Default 10 min.
    pub stale_ms: u64,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            k: 8,
            replicas: 16,
            alpha: 8,
            bits_per_hop: 1,
            max_links: 12,
            max_inbound_links: 24,
            link_refresh_ms: 5_000,
            self_lookup_ms: 60_000,
            request_timeout_ms: 4_000,
            query_timeout_ms: 2_000,
            response_timeout_ms: 10_000,
            lookup_timeout_ms: 15_000,
            max_record_value: MAX_RECORD_VALUE,
            max_record_ttl_ms: 24 * 3_600_000,
            max_records: 1_024,
            republish_ms: 600_000,
            stale_ms: 600_000,
        }
    }
}

/// A DHT command from the application (`Input::Dht`). `id`s are chosen by the driver
/// (a counter is fine) and come back in the matching [`DhtEvent`]; an id still in flight
/// is refused with [`DhtError::DuplicateId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send `payload` to `to`; answered by [`DhtEvent::Delivered`] or [`DhtEvent::Failed`].
    SendDirect {
        /// The driver's id for this send.
        id: u64,
        /// Recipient, anywhere in the network.
        to: PeerId,
        /// At most [`MAX_DIRECT_PAYLOAD`] bytes.
        payload: Vec<u8>,
    },
    /// Send a request; answered by [`DhtEvent::Response`] or [`DhtEvent::Failed`].
    Request {
        /// The driver's id for this request.
        id: u64,
        /// Recipient.
        to: PeerId,
        /// At most [`MAX_DIRECT_PAYLOAD`] bytes.
        payload: Vec<u8>,
    },
    /// Answer the [`DhtEvent::Request`] `id` from `to`.
    Respond {
        /// The requester (`from` of the event).
        to: PeerId,
        /// The request's `id` from the event.
        id: u64,
        /// At most [`MAX_DIRECT_PAYLOAD`] bytes.
        payload: Vec<u8>,
    },
    /// Find the k closest live peers to `key`: [`DhtEvent::LookupDone`].
    Lookup {
        /// The driver's id.
        id: u64,
        /// The key.
        key: Key,
    },
    /// Write our record `name`: [`DhtEvent::PutDone`] or [`DhtEvent::Failed`].
    Put {
        /// The driver's id.
        id: u64,
        /// At most [`MAX_RECORD_NAME`] bytes.
        name: Vec<u8>,
        /// At most [`DhtConfig::max_record_value`] bytes.
        value: Vec<u8>,
        /// Sequence number; `None` = one more than the newest found in the network.
        seq: Option<u64>,
        /// Lifetime, at most [`DhtConfig::max_record_ttl_ms`].
        ttl_ms: u64,
    },
    /// Read the record `name` of `writer`: [`DhtEvent::GetDone`] or [`DhtEvent::Failed`].
    Get {
        /// The driver's id.
        id: u64,
        /// The record's writer.
        writer: PeerId,
        /// Its name.
        name: Vec<u8>,
    },
}

/// What the DHT tells the application (`Event::Dht`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtEvent {
    /// A direct message for us (each at most once).
    Direct {
        /// Its sender.
        from: PeerId,
        /// The sender's wire id (for logs; unique per sender).
        id: u64,
        /// The bytes.
        payload: Vec<u8>,
        /// Hops it travelled (1 from a neighbour).
        hops: u8,
    },
    /// Our [`Command::SendDirect`] `id` reached `to` (its acknowledgement came back).
    Delivered {
        /// The command's id.
        id: u64,
        /// The recipient.
        to: PeerId,
        /// Hops the message travelled.
        hops: u8,
    },
    /// A request for us; answer with [`Command::Respond`] `{ to: from, id, .. }`.
    Request {
        /// The requester.
        from: PeerId,
        /// Its id, to echo in the response.
        id: u64,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// The response to our [`Command::Request`] `id`.
    Response {
        /// The command's id.
        id: u64,
        /// The responder.
        from: PeerId,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// A lookup finished: the closest peers that answered, nearest first.
    LookupDone {
        /// The command's id.
        id: u64,
        /// The key.
        key: Key,
        /// Up to k peers (may include us).
        closest: Vec<PeerId>,
        /// Hops of the first routed query (to the closest peer routing reached).
        hops: u8,
    },
    /// Our record was stored.
    PutDone {
        /// The command's id.
        id: u64,
        /// Where it lives.
        key: Key,
        /// Its sequence number.
        seq: u64,
        /// Peers that accepted it (us included if we are among the k closest).
        stored: usize,
    },
    /// The newest valid record found.
    GetDone {
        /// The command's id.
        id: u64,
        /// The record (its signature checked).
        record: Record,
    },
    /// Command `id` failed.
    Failed {
        /// The command's id.
        id: u64,
        /// Why.
        error: DhtError,
    },
    /// A command without an id (a [`Command::Respond`], or a broadcast in structured mode)
    /// was refused.
    Refused {
        /// Why.
        error: DhtError,
    },
}

/// Why a DHT command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    /// The configured [`Mode`] does not allow this.
    #[error("not available in {0:?} mode")]
    Disabled(Mode),
    /// Not joined.
    #[error("not joined")]
    NotJoined,
    /// A payload, name or value over its limit.
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id is already used by a command in flight.
    #[error("id {0} is already in flight")]
    DuplicateId(u64),
    /// Addressed to ourselves.
    #[error("addressed to this peer")]
    SelfTarget,
    /// No answer before the deadline.
    #[error("timed out")]
    Timeout,
    /// Routing reached a peer with no link closer to the target: it is gone or unknown.
    #[error("unreachable")]
    Unreachable,
    /// No valid record found.
    #[error("not found")]
    NotFound,
    /// Every replica refused the record.
    #[error("record refused: {0}")]
    Record(RecordError),
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RecordError {
    /// The signature does not match the writer.
    #[error("bad signature")]
    BadSignature,
    /// A record with an equal or higher sequence number is stored.
    #[error("stale: have seq {have}, got {got}")]
    Stale {
        /// Stored sequence number.
        have: u64,
        /// Offered sequence number.
        got: u64,
    },
    /// Name or value too long.
    #[error("{what} of {len} bytes exceeds {max}")]
    TooLarge {
        /// "name" or "value".
        what: String,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Lifetime over the limit.
    #[error("ttl of {ttl_ms} ms exceeds {max_ms}")]
    TtlTooLong {
        /// Offered.
        ttl_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// Already expired on arrival.
    #[error("expired")]
    Expired,
    /// The store is full.
    #[error("store full")]
    StoreFull,
}

/// A signed record: `value` under `name`, written by `writer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The writer (signer).
    pub writer: PeerId,
    /// The name, at most [`MAX_RECORD_NAME`] bytes.
    pub name: Vec<u8>,
    /// Sequence number: a higher one replaces a lower one.
    pub seq: u64,
    /// Lifetime from the write, ms.
    pub ttl_ms: u64,
    /// The value.
    pub value: Vec<u8>,
    /// The writer's signature over key, seq, ttl and value.
    pub sig: Signature,
}

impl Record {
    /// Signs a record as `identity`.
    pub fn sign(identity: &Identity, name: Vec<u8>, seq: u64, ttl_ms: u64, value: Vec<u8>) -> Self {
        let writer = identity.peer_id();
        let msg = Self::signed_bytes(&Key::for_record(&writer, &name), seq, ttl_ms, &value);
        Record {
            writer,
            name,
            seq,
            ttl_ms,
            value,
            sig: identity.sign(RECORD_CONTEXT, &msg),
        }
    }

    /// Where the record lives.
    pub fn key(&self) -> Key {
        Key::for_record(&self.writer, &self.name)
    }

    fn signed_bytes(key: &Key, seq: u64, ttl_ms: u64, value: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(48 + value.len());
        m.extend_from_slice(&key.0);
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&ttl_ms.to_be_bytes());
        m.extend_from_slice(value);
        m
    }

    /// Checks limits and the signature.
    pub fn verify(&self, config: &DhtConfig) -> Result<(), RecordError> {
        let too = |what: &str, len: usize, max: usize| RecordError::TooLarge {
            what: what.into(),
            len: len as u64,
            max: max as u64,
        };
        if self.name.len() > MAX_RECORD_NAME {
            return Err(too("name", self.name.len(), MAX_RECORD_NAME));
        }
        let max = config.max_record_value.min(MAX_RECORD_VALUE);
        if self.value.len() > max {
            return Err(too("value", self.value.len(), max));
        }
        if self.ttl_ms > config.max_record_ttl_ms {
            return Err(RecordError::TtlTooLong {
                ttl_ms: self.ttl_ms,
                max_ms: config.max_record_ttl_ms,
            });
        }
        let msg = Self::signed_bytes(&self.key(), self.seq, self.ttl_ms, &self.value);
        self.writer
            .verify(RECORD_CONTEXT, &msg, &self.sig)
            .map_err(|_| RecordError::BadSignature)
    }
}

/// A frame routed greedily over open links toward `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtFrame {
    /// Where it goes.
    pub target: Key,
    /// `true`: only the peer whose id is `target` may take it (a relay with no closer
    /// link answers [`DhtBody::Unreachable`]); `false`: the closest peer reached takes it.
    pub exact: bool,
    /// The source then every relay so far (the last one is the sender of this frame).
    pub path: Vec<PeerId>,
    /// An answer's way back: the path its query took (the target first), up to the hop
    /// still to go. Each peer forwards to the first of them it holds an open link to
    /// (and cuts the route there), else greedily; empty for a query.
    pub route: Vec<PeerId>,
    /// Hops so far that did not get closer to an exact target (at most [`MAX_DETOURS`]).
    pub detours: u8,
    /// What is carried.
    pub body: DhtBody,
}

/// What a [`DhtFrame`] carries. `rpc` ids are the source's, unique per source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhtBody {
    /// First frame on a new DHT link: "this connection is a DHT link".
    LinkHello,
    /// A direct message; answered by `Ack`.
    Direct {
        /// Source's id.
        rpc: u64,
        /// The application's bytes sealed by the source for the target (see
        /// [`super::seal`]: relays see ciphertext); one byte string on the wire.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Acknowledges `Direct` `rpc`.
    Ack {
        /// The message's id.
        rpc: u64,
        /// Hops it travelled.
        hops: u8,
        /// An empty payload sealed by the acknowledging peer (see [`super::seal`]), so a
        /// relay cannot acknowledge for it.
        #[serde(with = "serde_bytes")]
        seal: Vec<u8>,
    },
    /// A request; acknowledged by `Ack` on arrival, answered by `Response`.
    Request {
        /// Source's id.
        rpc: u64,
        /// The application's bytes sealed by the source for the target (see
        /// [`super::seal`]: relays see ciphertext); one byte string on the wire.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Answers `Request` `rpc`.
    Response {
        /// The request's id.
        rpc: u64,
        /// The application's bytes sealed by the source for the target (see
        /// [`super::seal`]: relays see ciphertext); one byte string on the wire.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A relay had no link closer to the exact target of `rpc`.
    Unreachable {
        /// The id of the frame that could not be delivered.
        rpc: u64,
    },
    /// "Which k peers do you know closest to `key`?" (and the record at `key` if `value`).
    Find {
        /// Source's id.
        rpc: u64,
        /// The key.
        key: Key,
        /// Also return the record stored at `key`.
        value: bool,
    },
    /// Answers `Find`.
    Nodes {
        /// The query's id.
        rpc: u64,
        /// Up to k peers, the answerer included if close.
        peers: Vec<PeerId>,
        /// The record, if asked for and held.
        record: Option<Record>,
        /// Hops the query travelled.
        hops: u8,
        /// An empty payload sealed by the answering peer over `peers` and `hops` (see
        /// [`super::seal`]): a relay cannot answer for it, nor alter its list.
        #[serde(with = "serde_bytes")]
        seal: Vec<u8>,
    },
    /// "Store this record."
    Store {
        /// Source's id.
        rpc: u64,
        /// The record.
        record: Record,
        /// How long the sender has held it (0 for the writer), ms.
        age_ms: u64,
    },
    /// Answers `Store`.
    Stored {
        /// The store's id.
        rpc: u64,
        /// Why it was refused, if it was.
        refused: Option<RecordError>,
    },
    /// A WebRTC signal envelope for the target.
    Signal(SignedEnvelope),
    /// Sent on a DHT link (never routed): "another DHT link of mine serves this link's
    /// slot; close it if one of yours serves it for you too".
    LinkSpare,
}

impl DhtFrame {
    /// Checks the length bounds (called by `wire::decode`).
    pub fn validate(&self) -> Result<(), WireError> {
        use crate::wire::bound;
        fn record(r: &Record) -> Result<(), WireError> {
            bound("record name", r.name.len(), MAX_RECORD_NAME)?;
            bound("record value", r.value.len(), MAX_RECORD_VALUE)
        }
        bound("dht path", self.path.len(), MAX_DHT_PATH)?;
        bound("dht path", self.route.len(), MAX_DHT_PATH)?;
        match &self.body {
            DhtBody::Direct { payload, .. }
            | DhtBody::Request { payload, .. }
            | DhtBody::Response { payload, .. } => bound(
                "payload",
                payload.len(),
                MAX_DIRECT_PAYLOAD + seal::OVERHEAD,
            ),
            DhtBody::Ack { seal, .. } => bound("ack seal", seal.len(), seal::OVERHEAD),
            DhtBody::Nodes {
                peers,
                record: r,
                seal: s,
                ..
            } => {
                bound("peers", peers.len(), MAX_K)?;
                bound("nodes seal", s.len(), seal::OVERHEAD)?;
                r.as_ref().map_or(Ok(()), record)
            }
            DhtBody::Store { record: r, .. } => record(r),
            _ => Ok(()),
        }
    }
}

/// Counters for the simulator and `stats()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// DHT frames relayed for others.
    pub relayed: u64,
    /// DHT links opened by us that came up.
    pub links_opened: u64,
    /// DHT links accepted from others.
    pub links_accepted: u64,
    /// Direct messages and requests retried through another first hop.
    pub retries: u64,
    /// DHT links we tried to open (each an RTCPeerConnection on both sides).
    pub link_attempts: u64,
    /// Inbound DHT links refused for the budget (after their handshake).
    pub links_refused: u64,
    /// Our links offered for closing (`LinkSpare`) at the link budget to make room for
    /// another (closed only if the other end has another link in the slot).
    pub links_swapped: u64,
    /// Our link attempts that never came up.
    pub links_failed: u64,
    /// Links closed because both ends had another DHT link in the same slot.
    pub links_spared: u64,
    /// Open links (either direction) whose connection went down.
    pub links_down: u64,
    /// Links (either direction) whose connection the overlay closed or took over for
    /// another role.
    pub links_taken: u64,
    /// Frames for an exact target that found no closer link here (answered unreachable).
    pub stalls: u64,
    /// Lookup queries to one peer that failed (unreachable or timed out).
    pub queries_failed: u64,
    /// The application's lookups that ended with a peer that failed its query closer to
    /// the key than the closest that answered.
    pub lookups_closest_failed: u64,
    /// Bucket-refresh lookups started (the periodic self-lookup not included).
    pub bucket_refreshes: u64,
    /// Sealed frames for us that did not open (forged source, altered, or sealed for
    /// another frame): dropped.
    pub forged: u64,
    /// Sealed frames for us that opened but were seen before (replays): dropped.
    pub replayed: u64,
}

#[derive(Debug, Clone)]
struct Contact {
    peer: PeerId,
    /// Last time anyone mentioned it.
    seen: u64,
    /// Last time it was heard from directly (it relayed or sent us a frame, or is an
    /// active neighbour); 0 if never.
    heard: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    New,
    Asked,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
enum OpKind {
    Lookup,
    Refresh,
    /// `true`: widened to twice the replicas, the closest having answered without it.
    Get(bool),
    Put {
        name: Vec<u8>,
        value: Vec<u8>,
        seq: Option<u64>,
        ttl_ms: u64,
    },
    Republish(Record, u64),
    Storing {
        record: Record,
        outstanding: usize,
        stored: usize,
        refused: Option<RecordError>,
    },
}

/// A lookup (and what to do with its result) in progress.
#[derive(Debug, Clone)]
struct Op {
    app: Option<u64>,
    kind: OpKind,
    key: Key,
    deadline: u64,
    hops: u8,
    /// By distance to `key`.
    shortlist: BTreeMap<Key, (PeerId, Probe)>,
    found: Option<Record>,
    /// The first (key-routed) query has not been answered yet.
    routing: bool,
}

#[derive(Debug, Clone)]
enum Waiting {
    Direct {
        app: u64,
        to: PeerId,
        payload: Vec<u8>,
    },
    Request {
        app: u64,
        to: PeerId,
        payload: Vec<u8>,
    },
    /// A query of op `op` to `peer` (`None`: the first, key-routed query).
    Find {
        op: u64,
        peer: Option<PeerId>,
    },
    Store {
        op: u64,
    },
}

#[derive(Debug, Clone)]
struct Pending {
    what: Waiting,
    deadline: u64,
    attempt: u8,
    first_hop: Option<PeerId>,
    /// A request reached its recipient: wait for the response, do not retry.
    acked: bool,
}

/// How one replica answered a store.
#[derive(Debug, Clone)]
enum StoreOutcome {
    Stored,
    Refused(RecordError),
    /// No answer (unreachable or timed out).
    Lost,
}

#[derive(Debug, Clone)]
struct Held {
    record: Record,
    expires: u64,
    stored_at: u64,
}

/// DHT state of one peer.
#[derive(Debug, Clone)]
pub(super) struct Dht {
    me: Key,
    /// k-buckets by common prefix length with `me`.
    buckets: Vec<Vec<Contact>>,
    links_out: BTreeSet<PeerId>,
    links_in: BTreeSet<PeerId>,
    next_rpc: u64,
    pending: BTreeMap<u64, Pending>,
    ops: BTreeMap<u64, Op>,
    app_ids: BTreeSet<u64>,
    seen: BTreeMap<(PeerId, u64), (u64, u8)>,
    /// The path each request to us came by (asker first) and when, by asker and rpc:
    /// its response goes back that way (see [`Overlay::dht_answer`]). At most
    /// [`MAX_REQUEST_PATHS`], each kept for the asker's `response_timeout_ms`.
    request_paths: BTreeMap<(PeerId, u64), (u64, Vec<PeerId>)>,
    records: BTreeMap<Key, Held>,
    own: BTreeMap<Vec<u8>, Record>,
    next_links: u64,
    /// Peers not to open a link to before the time given: our link to them failed or was
    /// closed (refused for their inbound budget, usually), so trying again soon would
    /// cost another pair of RTCPeerConnections for the same answer.
    link_backoff: BTreeMap<PeerId, u64>,
    /// DHT links we offered to close ([`DhtBody::LinkSpare`]), with when: for a while
    /// they no longer count as covering their slot, so two peers never drop both of a
    /// slot's links.
    spare_offered: BTreeMap<PeerId, u64>,
    next_refresh: u64,
    /// When a lookup we started (other than a bucket refresh) last aimed at a key in each
    /// bucket: such a bucket needs no refresh lookup for a period (Kademlia's rule).
    bucket_looked_up: Vec<u64>,
    next_republish: u64,
    pub(super) stats: DhtStats,
}

impl Dht {
    pub(super) fn new(me: &PeerId, first_rpc: u64) -> Self {
        Dht {
            me: Key::of_peer(me),
            buckets: vec![Vec::new(); 256],
            links_out: BTreeSet::new(),
            links_in: BTreeSet::new(),
            next_rpc: first_rpc,
            pending: BTreeMap::new(),
            ops: BTreeMap::new(),
            app_ids: BTreeSet::new(),
            seen: BTreeMap::new(),
            request_paths: BTreeMap::new(),
            records: BTreeMap::new(),
            own: BTreeMap::new(),
            next_links: 0,
            link_backoff: BTreeMap::new(),
            spare_offered: BTreeMap::new(),
            next_refresh: 0,
            bucket_looked_up: vec![0; 256],
            next_republish: 0,
            stats: DhtStats::default(),
        }
    }

    /// Adds or refreshes `peer` in its bucket (`heard`: directly, not from hearsay).
    pub(super) fn learn(&mut self, peer: PeerId, now: u64, k: usize, stale_ms: u64, heard: bool) {
        let key = Key::of_peer(&peer);
        if key == self.me {
            return;
        }
        let direct = heard;
        let heard = if heard { now } else { 0 };
        let b = &mut self.buckets[self.me.common_prefix_len(&key).min(255)];
        if let Some(c) = b.iter_mut().find(|c| c.peer == peer) {
            c.seen = c.seen.max(now);
            c.heard = c.heard.max(heard);
            return;
        }
        let fresh = Contact {
            peer,
            seen: now,
            heard,
        };
        if b.len() < k.max(1) {
            return b.push(fresh);
        }
        // The oldest contact goes once stale, as in Kademlia, but hearsay only ever
        // replaces hearsay: made-up ids cannot push real peers out of a bucket.
        let oldest = b
            .iter_mut()
            .filter(|c| direct || c.heard == 0)
            .min_by_key(|c| c.seen);
        if let Some(oldest) = oldest {
            if oldest.seen + stale_ms <= now {
                *oldest = fresh;
            }
        }
    }

    /// Forgets `peer` (it failed to answer or to connect).
    pub(super) fn forget(&mut self, peer: &PeerId) {
        let key = Key::of_peer(peer);
        let b = &mut self.buckets[self.me.common_prefix_len(&key).min(255)];
        b.retain(|c| &c.peer != peer);
    }

    /// Every peer in the routing table.
    pub(super) fn known(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.buckets.iter().flatten().map(|c| c.peer)
    }

    /// The `n` known peers closest to `key`, nearest first.
    fn closest_known(&self, key: &Key, n: usize) -> Vec<PeerId> {
        let mut all: Vec<(Key, PeerId)> = self
            .known()
            .map(|p| (Key::of_peer(&p).distance(key), p))
            .collect();
        crate::collections::sort(&mut all);
        all.into_iter().take(n).map(|(_, p)| p).collect()
    }

    /// The link slot of `peer`: (level, digit) with `b` bits per level.
    fn slot(&self, peer: &PeerId, b: usize) -> (usize, u32) {
        let key = Key::of_peer(peer);
        let level = self.me.common_prefix_len(&key) / b;
        (level, key.bits(level * b, b))
    }

    fn new_rpc(&mut self) -> u64 {
        self.next_rpc = self.next_rpc.wrapping_add(1);
        self.next_rpc
    }
}

impl Overlay {
    fn dht_on(&self) -> bool {
        self.config.mode != Mode::Unstructured
    }

    /// Peers with an open connection usable for routing (active view and DHT links).
    fn open_links(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| **c == Conn::Active)
            .map(|(p, _)| *p)
    }

    /// The open link closest to `target`, skipping `avoid`, if it is closer than `than`.
    fn next_hop(&self, target: &Key, than: &Key, avoid: &[PeerId]) -> Option<PeerId> {
        let best = self
            .open_links()
            .filter(|p| !avoid.contains(p))
            .min_by_key(|p| Key::of_peer(p).distance(target))?;
        (Key::of_peer(&best).distance(target) < *than).then_some(best)
    }

    /// The next hop of an answer going back along its query's path (`route`, the target
    /// first): the first peer of it we hold an open link to (off `avoid`), where the
    /// route is cut. `None` if none is linked: greedy routing takes over, and a peer
    /// further on may meet the route again.
    fn route_hop(&self, route: &mut Vec<PeerId>, avoid: &[PeerId]) -> Option<PeerId> {
        let i = route
            .iter()
            .position(|p| !avoid.contains(p) && self.conns.get(p) == Some(&Conn::Active))?;
        let next = route[i];
        route.truncate(i);
        Some(next)
    }

    /// Where a frame for an exact target goes when no link is closer (greedy routing
    /// stalled here, usually for want of a link in one slot): the closest link off the
    /// frame's path, whose own links may be closer. At most [`MAX_DETOURS`] per frame.
    fn detour_hop(&self, target: &Key, path: &[PeerId]) -> Option<PeerId> {
        self.open_links()
            .filter(|p| !path.contains(p))
            .min_by_key(|p| Key::of_peer(p).distance(target))
    }

    /// Learns every peer the overlay knows about (views), cheap enough for each heartbeat:
    /// the active view as heard from (connected), the passive view as hearsay (shuffles
    /// carry ids unchecked, but without it a room whose server is gone loses the
    /// candidates its repairs need: the simulator's isolation test partitions). Hearsay
    /// never displaces a contact heard from, and is displaced by one (see `Dht::learn`).
    fn dht_learn_views(&mut self) {
        let (k, stale, now) = (self.config.dht.k, self.config.dht.stale_ms, self.now);
        let active = self.membership.active.iter().map(|p| (*p, true));
        let passive = self.membership.passive.iter().map(|e| (e.peer, false));
        let peers: Vec<(PeerId, bool)> = active.chain(passive).collect();
        for (p, heard) in peers {
            self.dht.learn(p, now, k, stale, heard);
        }
    }

    /// Learns a peer we just heard from directly (a frame's path, a link).
    pub(super) fn dht_learn(&mut self, peer: PeerId) {
        self.dht_learn_from(peer, true);
    }

    fn dht_learn_from(&mut self, peer: PeerId, heard: bool) {
        let (k, stale, now) = (self.config.dht.k, self.config.dht.stale_ms, self.now);
        if !self.is_banned(&peer) {
            self.dht.learn(peer, now, k, stale, heard);
        }
    }

    // ---- commands ----

    pub(super) fn on_dht_command(&mut self, cmd: Command) {
        let id = match &cmd {
            Command::Respond { .. } => None,
            Command::SendDirect { id, .. }
            | Command::Request { id, .. }
            | Command::Lookup { id, .. }
            | Command::Put { id, .. }
            | Command::Get { id, .. } => Some(*id),
        };
        if let Err(error) = self.check_command(&cmd, id) {
            let e = match id {
                Some(id) => DhtEvent::Failed { id, error },
                None => DhtEvent::Refused { error },
            };
            return self.event(Event::Dht(e));
        }
        if let Some(id) = id {
            self.dht.app_ids.insert(id);
        }
        let deadline = self.now + self.config.dht.lookup_timeout_ms;
        match cmd {
            Command::SendDirect { id, to, payload } => self.send_attempt(
                Waiting::Direct {
                    app: id,
                    to,
                    payload,
                },
                0,
                None,
                None,
            ),
            Command::Request { id, to, payload } => self.send_attempt(
                Waiting::Request {
                    app: id,
                    to,
                    payload,
                },
                0,
                None,
                None,
            ),
            Command::Respond { to, id, payload } => {
                let sealed =
                    self.seal
                        .seal(&self.identity, &to, Kind::Response, id, 0, &[], &payload);
                let Some(payload) = sealed else {
                    return; // not a usable id: no request came from it
                };
                let body = DhtBody::Response { rpc: id, payload };
                // Back the way the request came, like every answer; greedily if that is
                // not known (any more).
                match self.dht.request_paths.remove(&(to, id)) {
                    Some((_, path)) => self.dht_answer(&path, body),
                    None => {
                        self.dht_send(Key::of_peer(&to), true, body, &[]);
                    }
                }
            }
            Command::Lookup { id, key } => self.start_op(Some(id), OpKind::Lookup, key, deadline),
            Command::Get { id, writer, name } => self.start_op(
                Some(id),
                OpKind::Get(false),
                Key::for_record(&writer, &name),
                deadline,
            ),
            Command::Put {
                id,
                name,
                value,
                seq,
                ttl_ms,
            } => {
                let key = Key::for_record(&self.me, &name);
                let kind = OpKind::Put {
                    name,
                    value,
                    seq,
                    ttl_ms,
                };
                self.start_op(Some(id), kind, key, deadline)
            }
        }
    }

    fn check_command(&self, cmd: &Command, id: Option<u64>) -> Result<(), DhtError> {
        if !self.dht_on() {
            return Err(DhtError::Disabled(self.config.mode));
        }
        if !self.joined {
            return Err(DhtError::NotJoined);
        }
        if let Some(id) = id {
            if self.dht.app_ids.contains(&id) {
                return Err(DhtError::DuplicateId(id));
            }
        }
        let bound = |what, len: usize, max: usize| {
            if len > max {
                Err(DhtError::TooLarge { what, len, max })
            } else {
                Ok(())
            }
        };
        match cmd {
            Command::SendDirect { to, payload, .. }
            | Command::Request { to, payload, .. }
            | Command::Respond { to, payload, .. } => {
                if *to == self.me {
                    return Err(DhtError::SelfTarget);
                }
                bound("payload", payload.len(), MAX_DIRECT_PAYLOAD)
            }
            Command::Put {
                name,
                value,
                ttl_ms,
                ..
            } => {
                bound("name", name.len(), MAX_RECORD_NAME)?;
                let max = self.config.dht.max_record_value.min(MAX_RECORD_VALUE);
                bound("value", value.len(), max)?;
                if *ttl_ms > self.config.dht.max_record_ttl_ms || *ttl_ms == 0 {
                    return Err(DhtError::Record(RecordError::TtlTooLong {
                        ttl_ms: *ttl_ms,
                        max_ms: self.config.dht.max_record_ttl_ms,
                    }));
                }
                Ok(())
            }
            Command::Get { name, .. } => bound("name", name.len(), MAX_RECORD_NAME),
            Command::Lookup { .. } => Ok(()),
        }
    }

    /// Sends (or re-sends) a direct message or request.
    fn send_attempt(
        &mut self,
        what: Waiting,
        attempt: u8,
        avoid: Option<PeerId>,
        rpc: Option<u64>,
    ) {
        let rpc = rpc.unwrap_or_else(|| self.dht.new_rpc());
        // Sealed afresh for every attempt: a retry is a new frame (new nonce), so the
        // receiver's replay window takes it and its duplicate check acknowledges it.
        let (to, kind, payload) = match &what {
            Waiting::Direct { to, payload, .. } => (*to, Kind::Direct, payload),
            Waiting::Request { to, payload, .. } => (*to, Kind::Request, payload),
            _ => return,
        };
        let Some(sealed) = self
            .seal
            .seal(&self.identity, &to, kind, rpc, 0, &[], payload)
        else {
            // No peer has this id (it is no usable key): nothing could ever answer.
            let id = match what {
                Waiting::Direct { app, .. } | Waiting::Request { app, .. } => app,
                _ => return,
            };
            self.dht.app_ids.remove(&id);
            let error = DhtError::Unreachable;
            return self.event(Event::Dht(DhtEvent::Failed { id, error }));
        };
        let body = match kind {
            Kind::Direct => DhtBody::Direct {
                rpc,
                payload: sealed,
            },
            _ => DhtBody::Request {
                rpc,
                payload: sealed,
            },
        };
        let avoid: Vec<PeerId> = avoid.into_iter().collect();
        let deadline = self.now + self.config.dht.request_timeout_ms;
        self.dht.pending.insert(
            rpc,
            Pending {
                what,
                deadline,
                attempt,
                first_hop: None,
                acked: false,
            },
        );
        let first = self.dht_send(Key::of_peer(&to), true, body, &avoid);
        if let Some(p) = self.dht.pending.get_mut(&rpc) {
            p.first_hop = first;
        }
    }

    /// Sends a frame from us. Returns the first hop, if it left.
    ///
    /// A frame that cannot leave is handled here: delivered to us (key-routed) or failed
    /// (exact target unreachable).
    fn dht_send(
        &mut self,
        target: Key,
        exact: bool,
        body: DhtBody,
        avoid: &[PeerId],
    ) -> Option<PeerId> {
        self.dht_send_frame(target, exact, Vec::new(), body, avoid)
    }

    /// Answers a frame that came along `path` (its source first): back along that path,
    /// which just worked, rather than greedily. A newcomer is reachable by greedy routing
    /// only once its deepest links are up, so its answers were lost (most of the lookup
    /// misses left at 10,000 peers under churn).
    fn dht_answer(&mut self, path: &[PeerId], body: DhtBody) {
        self.dht_send_frame(Key::of_peer(&path[0]), true, path.to_vec(), body, &[]);
    }

    fn dht_send_frame(
        &mut self,
        target: Key,
        exact: bool,
        mut route: Vec<PeerId>,
        body: DhtBody,
        avoid: &[PeerId],
    ) -> Option<PeerId> {
        let me = self.me;
        let here = self.dht.me.distance(&target);
        // An exact target we are linked to takes the frame directly.
        let direct = PeerId::from_bytes(target.0);
        let linked =
            exact && !avoid.contains(&direct) && self.conns.get(&direct) == Some(&Conn::Active);
        let mut next = self
            .route_hop(&mut route, avoid)
            .or(linked.then_some(direct))
            .or_else(|| self.next_hop(&target, &here, avoid));
        let mut frame = DhtFrame {
            target,
            exact,
            path: vec![me],
            route,
            detours: 0,
            body,
        };
        if next.is_none() && exact && target != self.dht.me {
            next = self.detour_hop(&target, avoid);
            frame.detours = 1;
        }
        match next {
            Some(next) => {
                self.send(next, &Message::Dht(Box::new(frame)));
                Some(next)
            }
            None if !exact || target == self.dht.me => {
                self.dht_deliver(frame);
                None
            }
            None => {
                if let Some(rpc) = request_rpc(&frame.body) {
                    self.rpc_failed(rpc, DhtError::Unreachable);
                }
                None
            }
        }
    }

    // ---- routing ----

    /// A DHT frame on an open connection from `from`.
    pub(super) fn on_dht_frame(&mut self, from: PeerId, mut frame: DhtFrame) {
        if frame.path.last() != Some(&from) || frame.path.is_empty() {
            return self.punish(from, Misbehaviour::Protocol("dht path"));
        }
        if !self.dht_on() || matches!(frame.body, DhtBody::LinkHello) {
            return;
        }
        if frame.body == DhtBody::LinkSpare {
            return self.on_link_spare(from);
        }
        // Only the neighbour that sent it is heard from here: the path's other ids are
        // its word (a made-up id costs a poisoner nothing). A source is learned once what
        // it sealed opens (`dht_open`).
        self.dht_learn(from);
        let me_key = self.dht.me;
        if frame.target == me_key {
            return self.dht_deliver(frame);
        }
        let here = me_key.distance(&frame.target);
        let direct = PeerId::from_bytes(frame.target.0);
        let linked = frame.exact && self.conns.get(&direct) == Some(&Conn::Active);
        let mut next = self
            .route_hop(&mut frame.route, &frame.path)
            .or(linked.then_some(direct))
            .or_else(|| self.next_hop(&frame.target, &here, &frame.path));
        let detour = next.is_none() && frame.exact && frame.detours < MAX_DETOURS;
        if detour {
            next = self.detour_hop(&frame.target, &frame.path);
        }
        match next {
            Some(next) if frame.path.len() < MAX_DHT_PATH => {
                self.dht.stats.relayed += 1;
                frame.detours += u8::from(detour);
                frame.path.push(self.me);
                self.send(next, &Message::Dht(Box::new(frame)));
            }
            _ if !frame.exact => self.dht_deliver(frame),
            _ => {
                // No closer link: the exact target is gone or unknown here.
                self.dht.stats.stalls += 1;
                if let Some(rpc) = request_rpc(&frame.body) {
                    self.dht_answer(&frame.path, DhtBody::Unreachable { rpc });
                }
            }
        }
    }

    /// Records that `(source, rpc)` arrived after `hops` hops: whether this is its first
    /// copy, and the hops of that first copy. A retry that comes by another route is
    /// acknowledged with the first copy's hops, so the sender is told the path the
    /// delivered message took.
    fn dht_seen(&mut self, source: PeerId, rpc: u64, hops: u8) -> (bool, u8) {
        let now = self.now;
        match self.dht.seen.get(&(source, rpc)).copied() {
            Some((_, first_hops)) => {
                self.dht.seen.insert((source, rpc), (now, first_hops));
                (false, first_hops)
            }
            None => {
                self.dht.seen.insert((source, rpc), (now, hops));
                (true, hops)
            }
        }
    }

    /// A frame addressed to us (or to a key we are the closest reachable peer to).
    fn dht_deliver(&mut self, frame: DhtFrame) {
        let source = frame.path[0];
        let hops = (frame.path.len() as u8).saturating_sub(1) + u8::from(source != self.me);
        let now = self.now;
        match frame.body {
            DhtBody::LinkHello | DhtBody::LinkSpare => {}
            DhtBody::Direct { rpc, payload } => {
                let Some(payload) = self.dht_open(source, Kind::Direct, rpc, 0, &payload) else {
                    return;
                };
                let (first, hops) = self.dht_seen(source, rpc, hops);
                if first {
                    self.event(Event::Dht(DhtEvent::Direct {
                        from: source,
                        id: rpc,
                        payload,
                        hops,
                    }));
                }
                self.dht_ack(&frame.path, rpc, hops);
            }
            DhtBody::Request { rpc, payload } => {
                let Some(payload) = self.dht_open(source, Kind::Request, rpc, 0, &payload) else {
                    return;
                };
                let (first, hops) = self.dht_seen(source, rpc, hops);
                // The latest way in: a retry came by another path because the first one
                // (or its way back) broke.
                let paths = &mut self.dht.request_paths;
                if paths.len() < MAX_REQUEST_PATHS || paths.contains_key(&(source, rpc)) {
                    paths.insert((source, rpc), (now, frame.path.clone()));
                }
                if first {
                    self.event(Event::Dht(DhtEvent::Request {
                        from: source,
                        id: rpc,
                        payload,
                    }));
                }
                self.dht_ack(&frame.path, rpc, hops);
            }
            DhtBody::Ack { rpc, hops, seal } => {
                let response_wait = self.config.dht.response_timeout_ms;
                if !self.dht.pending.contains_key(&rpc)
                    || self.dht_open(source, Kind::Ack, rpc, hops, &seal).is_none()
                {
                    return;
                }
                let Some(p) = self.dht.pending.get_mut(&rpc) else {
                    return;
                };
                match &p.what {
                    Waiting::Direct { app, to, .. } if *to == source => {
                        let (id, to) = (*app, *to);
                        self.dht.pending.remove(&rpc);
                        self.dht.app_ids.remove(&id);
                        self.event(Event::Dht(DhtEvent::Delivered { id, to, hops }));
                    }
                    Waiting::Request { to, .. } if *to == source => {
                        p.acked = true;
                        p.deadline = now + response_wait;
                    }
                    _ => {}
                }
            }
            DhtBody::Response { rpc, payload } => {
                // Match by id and responder, so a third party cannot answer for `to`.
                let ours = matches!(
                    self.dht.pending.get(&rpc),
                    Some(Pending { what: Waiting::Request { to, .. }, .. }) if *to == source
                );
                let payload = match ours {
                    true => self.dht_open(source, Kind::Response, rpc, 0, &payload),
                    false => None,
                };
                if let Some(payload) = payload {
                    if let Some(Pending {
                        what: Waiting::Request { app, .. },
                        ..
                    }) = self.take_pending(rpc)
                    {
                        self.dht.app_ids.remove(&app);
                        self.event(Event::Dht(DhtEvent::Response {
                            id: app,
                            from: source,
                            payload,
                        }));
                    }
                }
            }
            DhtBody::Unreachable { rpc } => self.rpc_failed(rpc, DhtError::Unreachable),
            DhtBody::Find { rpc, key, value } => {
                // Enough peers for a record operation, which waits for `replicas` answers.
                let k = self.config.dht.k.max(self.config.dht.replicas).min(MAX_K);
                let mut peers = self.dht.closest_known(&key, k);
                peers.push(self.me);
                crate::collections::sort_by_key(&mut peers, |p| Key::of_peer(p).distance(&key));
                peers.truncate(k);
                let record = if value {
                    self.dht
                        .records
                        .get(&key)
                        .filter(|h| h.expires > now)
                        .map(|h| h.record.clone())
                } else {
                    None
                };
                let Some(seal) = self.seal.seal(
                    &self.identity,
                    &source,
                    Kind::Nodes,
                    rpc,
                    hops,
                    &peer_bytes(&peers),
                    &[],
                ) else {
                    return;
                };
                let body = DhtBody::Nodes {
                    rpc,
                    peers,
                    record,
                    hops,
                    seal,
                };
                self.dht_answer(&frame.path, body);
            }
            DhtBody::Nodes {
                rpc,
                peers,
                record,
                hops,
                seal,
            } => {
                // Only answers to our queries are opened (anything else costs no key).
                if !self.dht.pending.contains_key(&rpc) {
                    return;
                }
                let extra = peer_bytes(&peers);
                if self
                    .dht_open_with(source, Kind::Nodes, rpc, hops, &extra, &seal)
                    .is_none()
                {
                    return;
                }
                self.on_nodes(source, rpc, peers, record, hops)
            }
            DhtBody::Store {
                rpc,
                record,
                age_ms,
            } => {
                let refused = self.store_record(record, age_ms).err();
                self.dht_answer(&frame.path, DhtBody::Stored { rpc, refused });
            }
            DhtBody::Stored { rpc, refused } => {
                if let Some(Pending {
                    what: Waiting::Store { op },
                    ..
                }) = self.take_pending(rpc)
                {
                    let outcome = match refused {
                        None => StoreOutcome::Stored,
                        Some(e) => StoreOutcome::Refused(e),
                    };
                    self.on_stored(op, outcome);
                }
            }
            DhtBody::Signal(envelope) => {
                if envelope.from != source || self.is_banned(&source) {
                    return;
                }
                match envelope.open(&self.me) {
                    Ok(payload) => {
                        self.router.set_path(source, SignalPath::Dht, now);
                        self.out.push(Output::DeliverSignal { envelope, payload });
                    }
                    Err(e) => self.event(Event::Misbehaving {
                        peer: source,
                        reason: Misbehaviour::BadSignal(e),
                    }),
                }
            }
        }
    }

    /// Opens what `source` sealed for us in a frame of `kind`; counts and drops what does
    /// not open. Nobody is punished: the neighbour that delivered the frame may be an
    /// honest relay of a forger's frame, and the claimed source may be the victim.
    fn dht_open(
        &mut self,
        source: PeerId,
        kind: Kind,
        rpc: u64,
        aux: u8,
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        self.dht_open_with(source, kind, rpc, aux, &[], sealed)
    }

    /// As [`Overlay::dht_open`], with `extra` in the associated data. The source of what
    /// opens signed something fresh: it enters the routing table as heard from.
    fn dht_open_with(
        &mut self,
        source: PeerId,
        kind: Kind,
        rpc: u64,
        aux: u8,
        extra: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        match self
            .seal
            .open(&self.identity, &source, kind, rpc, aux, extra, sealed)
        {
            Ok(plaintext) => {
                if source != self.me {
                    self.dht_learn(source);
                }
                Some(plaintext)
            }
            Err(OpenError::Forged) => {
                self.dht.stats.forged += 1;
                None
            }
            Err(OpenError::Replayed) => {
                self.dht.stats.replayed += 1;
                None
            }
        }
    }

    /// Acknowledges `rpc` of the frame that came along `path`, sealed for its source.
    fn dht_ack(&mut self, path: &[PeerId], rpc: u64, hops: u8) {
        let Some(seal) = self
            .seal
            .seal(&self.identity, &path[0], Kind::Ack, rpc, hops, &[], &[])
        else {
            return;
        };
        self.dht_answer(path, DhtBody::Ack { rpc, hops, seal });
    }

    fn take_pending(&mut self, rpc: u64) -> Option<Pending> {
        self.dht.pending.remove(&rpc)
    }

    /// An rpc of ours failed (unreachable or timed out).
    fn rpc_failed(&mut self, rpc: u64, error: DhtError) {
        let Some(p) = self.take_pending(rpc) else {
            return;
        };
        match p.what {
            Waiting::Direct { app, to, .. } | Waiting::Request { app, to, .. } => {
                if p.attempt == 0 && !p.acked {
                    // Once more, with the same id, through another first hop.
                    self.dht.stats.retries += 1;
                    return self.send_attempt(p.what, 1, p.first_hop, Some(rpc));
                }
                if error == DhtError::Unreachable {
                    self.dht.forget(&to);
                }
                self.dht.app_ids.remove(&app);
                self.event(Event::Dht(DhtEvent::Failed { id: app, error }));
            }
            Waiting::Find { op, peer } => {
                // A query that met a routing dead end goes once more through another
                // first hop (the peer is often alive: a relay lacked a link). A timeout
                // usually means the peer is gone, and waiting twice would stall the
                // lookup, so only the query that decides the answer is retried: to a peer
                // closer to the key than any that answered. Under churn that peer was
                // often alive and known to everyone asked, and its query died with a
                // crashed relay (half the "responsible peer not found" misses at 3,000
                // peers).
                if let (Some(to), 0, Some(o)) = (peer, p.attempt, self.dht.ops.get(&op)) {
                    let d = Key::of_peer(&to).distance(&o.key);
                    let decisive = !o
                        .shortlist
                        .iter()
                        .take_while(|(k, _)| **k < d)
                        .any(|(_, (_, s))| *s == Probe::Done);
                    let retry = match error {
                        DhtError::Unreachable => p.first_hop.is_some(),
                        _ => decisive,
                    };
                    if retry {
                        let (key, value) = (o.key, self.op_wants_value(op));
                        self.dht.stats.retries += 1;
                        return self.send_find(op, to, key, value, rpc, 1, p.first_hop);
                    }
                }
                self.dht.stats.queries_failed += 1;
                if let Some(peer) = peer {
                    self.dht.forget(&peer);
                }
                let Some(key) = self.dht.ops.get(&op).map(|o| o.key) else {
                    return;
                };
                // The first query failed: fall back to what we know ourselves.
                let known = match peer {
                    Some(_) => Vec::new(),
                    None => self.dht.closest_known(&key, self.config.dht.k),
                };
                if let Some(o) = self.dht.ops.get_mut(&op) {
                    match peer {
                        Some(peer) => {
                            let d = Key::of_peer(&peer).distance(&key);
                            o.shortlist.insert(d, (peer, Probe::Failed));
                        }
                        None => o.routing = false,
                    }
                    for p in known {
                        let d = Key::of_peer(&p).distance(&key);
                        o.shortlist.entry(d).or_insert((p, Probe::New));
                    }
                }
                self.advance(op);
            }
            Waiting::Store { op } => self.on_stored(op, StoreOutcome::Lost),
        }
    }

    // ---- lookups ----

    fn start_op(&mut self, app: Option<u64>, kind: OpKind, key: Key, deadline: u64) {
        let op = self.dht.new_rpc();
        if !matches!(kind, OpKind::Refresh) {
            let bucket = self.dht.me.common_prefix_len(&key).min(255);
            self.dht.bucket_looked_up[bucket] = self.now;
        }
        let mut shortlist = BTreeMap::new();
        shortlist.insert(self.dht.me.distance(&key), (self.me, Probe::Done));
        let mut found = None;
        if let Some(h) = self.dht.records.get(&key).filter(|h| h.expires > self.now) {
            found = Some(h.record.clone());
        }
        self.dht.ops.insert(
            op,
            Op {
                app,
                kind,
                key,
                deadline,
                hops: 0,
                shortlist,
                found,
                routing: true,
            },
        );
        let rpc = self.dht.new_rpc();
        let value = self.op_wants_value(op);
        self.dht.pending.insert(
            rpc,
            Pending {
                what: Waiting::Find { op, peer: None },
                deadline: self.now + self.config.dht.query_timeout_ms,
                attempt: 0,
                first_hop: None,
                acked: false,
            },
        );
        self.dht_send(key, false, DhtBody::Find { rpc, key, value }, &[]);
    }

    fn op_wants_value(&self, op: u64) -> bool {
        matches!(
            self.dht.ops.get(&op).map(|o| &o.kind),
            Some(OpKind::Get(_) | OpKind::Put { .. })
        )
    }

    fn on_nodes(
        &mut self,
        source: PeerId,
        rpc: u64,
        peers: Vec<PeerId>,
        record: Option<Record>,
        hops: u8,
    ) {
        let Some(Pending {
            what: Waiting::Find { op, peer },
            ..
        }) = self.dht.pending.get(&rpc).cloned()
        else {
            return;
        };
        if peer.is_some_and(|p| p != source) {
            return; // Not from the peer we asked.
        }
        self.dht.pending.remove(&rpc);
        // The peers it names enter the routing table as hearsay only (they never displace
        // a peer heard from, `Dht::learn`), and as heard from once they answer themselves.
        for p in &peers {
            self.dht_learn_from(*p, false);
        }
        let dht_config = self.config.dht.clone();
        let me = self.me;
        let Some(o) = self.dht.ops.get_mut(&op) else {
            return;
        };
        if peer.is_none() {
            o.routing = false;
            o.hops = hops;
        }
        let d = Key::of_peer(&source).distance(&o.key);
        o.shortlist.insert(d, (source, Probe::Done));
        for p in peers {
            let d = Key::of_peer(&p).distance(&o.key);
            o.shortlist.entry(d).or_insert((p, Probe::New));
        }
        if let Some(r) = record {
            if r.key() == o.key
                && r.verify(&dht_config).is_ok()
                && o.found.as_ref().is_none_or(|f| r.seq > f.seq)
            {
                o.found = Some(r);
            }
        }
        let _ = me;
        self.advance(op);
    }

    /// How many of the closest peers an op waits for: k for lookups, the replica count
    /// for record operations.
    fn op_width(&self, op: u64) -> usize {
        let (k, r) = (
            self.config.dht.k.max(1),
            self.config.dht.replicas.clamp(1, MAX_K),
        );
        match self.dht.ops.get(&op).map(|o| &o.kind) {
            Some(OpKind::Get(true)) => 2 * r,
            Some(OpKind::Get(false) | OpKind::Put { .. } | OpKind::Republish(..)) => r,
            _ => k,
        }
    }

    /// Asks more peers, or finishes the op when its closest (see [`Self::op_width`]) have
    /// all answered.
    fn advance(&mut self, op: u64) {
        let (k, alpha) = (self.op_width(op), self.config.dht.alpha.max(1));
        let Some(o) = self.dht.ops.get(&op) else {
            return;
        };
        if o.routing {
            return;
        }
        let best: Vec<(Key, PeerId, Probe)> = o
            .shortlist
            .iter()
            .filter(|(_, (_, s))| *s != Probe::Failed)
            .take(k)
            .map(|(d, (p, s))| (*d, *p, *s))
            .collect();
        let asked = best.iter().filter(|b| b.2 == Probe::Asked).count();
        let fresh: Vec<(Key, PeerId)> = best
            .iter()
            .filter(|b| b.2 == Probe::New)
            .map(|b| (b.0, b.1))
            .collect();
        if asked == 0 && fresh.is_empty() {
            return self.finish(op);
        }
        let key = o.key;
        let value = self.op_wants_value(op);
        for (d, peer) in fresh.into_iter().take(alpha.saturating_sub(asked)) {
            if let Some(o) = self.dht.ops.get_mut(&op) {
                o.shortlist.insert(d, (peer, Probe::Asked));
            }
            let rpc = self.dht.new_rpc();
            self.send_find(op, peer, key, value, rpc, 0, None);
        }
    }

    /// Sends (or re-sends, `attempt` 1, avoiding the first hop that failed) the query
    /// `rpc` of op `op` to `peer`.
    #[allow(clippy::too_many_arguments)]
    fn send_find(
        &mut self,
        op: u64,
        peer: PeerId,
        key: Key,
        value: bool,
        rpc: u64,
        attempt: u8,
        avoid: Option<PeerId>,
    ) {
        self.dht.pending.insert(
            rpc,
            Pending {
                what: Waiting::Find {
                    op,
                    peer: Some(peer),
                },
                deadline: self.now + self.config.dht.query_timeout_ms,
                attempt,
                first_hop: None,
                acked: false,
            },
        );
        let avoid: Vec<PeerId> = avoid.into_iter().collect();
        let first = self.dht_send(
            Key::of_peer(&peer),
            true,
            DhtBody::Find { rpc, key, value },
            &avoid,
        );
        if let Some(p) = self.dht.pending.get_mut(&rpc) {
            p.first_hop = first;
        }
    }

    fn finish(&mut self, op: u64) {
        // A get whose closest peers all answered without the record asks as many again
        // beyond them: a put that missed some of the true closest (churn, a failed query)
        // left replicas there.
        let now = self.now;
        if let Some(o) = self.dht.ops.get_mut(&op) {
            if matches!(o.kind, OpKind::Get(false)) && o.found.is_none() && now < o.deadline {
                o.kind = OpKind::Get(true);
                return self.advance(op);
            }
        }
        let k = self.op_width(op);
        let Some(o) = self.dht.ops.remove(&op) else {
            return;
        };
        let closest: Vec<PeerId> = o
            .shortlist
            .values()
            .filter(|(_, s)| *s == Probe::Done)
            .take(k)
            .map(|(p, _)| *p)
            .collect();
        if o.app.is_some()
            && o.shortlist
                .values()
                .find(|(_, s)| *s != Probe::New)
                .is_some_and(|(_, s)| *s == Probe::Failed)
        {
            self.dht.stats.lookups_closest_failed += 1;
        }
        let done = |this: &mut Overlay, e: DhtEvent| {
            if let Some(app) = o.app {
                this.dht.app_ids.remove(&app);
                this.event(Event::Dht(e));
            }
        };
        match o.kind {
            OpKind::Refresh | OpKind::Storing { .. } => {}
            OpKind::Lookup => done(
                self,
                DhtEvent::LookupDone {
                    id: o.app.unwrap_or(0),
                    key: o.key,
                    closest,
                    hops: o.hops,
                },
            ),
            OpKind::Get(_) => match o.found {
                Some(record) => done(
                    self,
                    DhtEvent::GetDone {
                        id: o.app.unwrap_or(0),
                        record,
                    },
                ),
                None => done(
                    self,
                    DhtEvent::Failed {
                        id: o.app.unwrap_or(0),
                        error: DhtError::NotFound,
                    },
                ),
            },
            OpKind::Put {
                name,
                value,
                seq,
                ttl_ms,
            } => {
                let newest = o.found.as_ref().map(|r| r.seq).into_iter();
                let own = self.dht.own.get(&name).map(|r| r.seq).into_iter();
                let seq = seq.unwrap_or_else(|| newest.chain(own).max().map_or(1, |s| s + 1));
                let record = Record::sign(&self.identity, name.clone(), seq, ttl_ms, value);
                self.dht.own.insert(name, record.clone());
                self.store_at(o.app, record, 0, closest, o.deadline);
            }
            OpKind::Republish(record, age) => self.store_at(None, record, age, closest, o.deadline),
        }
    }

    /// Sends `record` to `peers` (storing it ourselves if we are one).
    fn store_at(
        &mut self,
        app: Option<u64>,
        record: Record,
        age_ms: u64,
        peers: Vec<PeerId>,
        deadline: u64,
    ) {
        let op = self.dht.new_rpc();
        let key = record.key();
        let mut stored = 0;
        let mut refused = None;
        let mut remote = Vec::new();
        for p in peers {
            if p == self.me {
                match self.store_record(record.clone(), age_ms) {
                    Ok(()) => stored += 1,
                    Err(e) => refused = Some(e),
                }
            } else {
                remote.push(p);
            }
        }
        self.dht.ops.insert(
            op,
            Op {
                app,
                kind: OpKind::Storing {
                    record: record.clone(),
                    outstanding: remote.len(),
                    stored,
                    refused,
                },
                key,
                deadline,
                hops: 0,
                shortlist: BTreeMap::new(),
                found: None,
                routing: false,
            },
        );
        if remote.is_empty() {
            return self.finish_store(op);
        }
        for p in remote {
            let rpc = self.dht.new_rpc();
            self.dht.pending.insert(
                rpc,
                Pending {
                    what: Waiting::Store { op },
                    deadline: self.now + self.config.dht.request_timeout_ms,
                    attempt: 0,
                    first_hop: None,
                    acked: false,
                },
            );
            let body = DhtBody::Store {
                rpc,
                record: record.clone(),
                age_ms,
            };
            self.dht_send(Key::of_peer(&p), true, body, &[]);
        }
    }

    /// One replica answered a store of op `op`.
    fn on_stored(&mut self, op: u64, outcome: StoreOutcome) {
        let Some(Op {
            kind:
                OpKind::Storing {
                    outstanding,
                    stored,
                    refused,
                    ..
                },
            ..
        }) = self.dht.ops.get_mut(&op)
        else {
            return;
        };
        match outcome {
            StoreOutcome::Stored => *stored += 1,
            StoreOutcome::Refused(e) => *refused = Some(e),
            StoreOutcome::Lost => {}
        }
        *outstanding = outstanding.saturating_sub(1);
        if *outstanding == 0 {
            self.finish_store(op);
        }
    }

    fn finish_store(&mut self, op: u64) {
        let Some(Op {
            app: Some(app),
            kind:
                OpKind::Storing {
                    record,
                    stored,
                    refused,
                    ..
                },
            ..
        }) = self.dht.ops.remove(&op)
        else {
            return;
        };
        self.dht.app_ids.remove(&app);
        let e = match (stored, refused) {
            (0, Some(e)) => DhtEvent::Failed {
                id: app,
                error: DhtError::Record(e),
            },
            (0, None) => DhtEvent::Failed {
                id: app,
                error: DhtError::Timeout,
            },
            (stored, _) => DhtEvent::PutDone {
                id: app,
                key: record.key(),
                seq: record.seq,
                stored,
            },
        };
        self.event(Event::Dht(e));
    }

    // ---- records ----

    /// Stores a record for the network, or says why not.
    pub(super) fn store_record(&mut self, record: Record, age_ms: u64) -> Result<(), RecordError> {
        record.verify(&self.config.dht)?;
        if age_ms >= record.ttl_ms {
            return Err(RecordError::Expired);
        }
        let key = record.key();
        let now = self.now;
        let expires = now + record.ttl_ms - age_ms;
        match self.dht.records.get_mut(&key) {
            Some(h) if h.expires > now => {
                if record.seq < h.record.seq || (record.seq == h.record.seq && record != h.record) {
                    return Err(RecordError::Stale {
                        have: h.record.seq,
                        got: record.seq,
                    });
                }
                h.expires = if record.seq == h.record.seq {
                    h.expires.max(expires)
                } else {
                    expires
                };
                h.record = record;
                h.stored_at = now;
            }
            _ => {
                if !self.dht.records.contains_key(&key)
                    && self.dht.records.len() >= self.config.dht.max_records
                {
                    return Err(RecordError::StoreFull);
                }
                self.dht.records.insert(
                    key,
                    Held {
                        record,
                        expires,
                        stored_at: now,
                    },
                );
            }
        }
        Ok(())
    }

    /// The record held here for `key`, if any and not expired.
    pub fn stored_record(&self, key: &Key) -> Option<&Record> {
        self.dht
            .records
            .get(key)
            .filter(|h| h.expires > self.now)
            .map(|h| &h.record)
    }

    /// Number of records held for the network.
    pub fn stored_records(&self) -> usize {
        self.dht.records.len()
    }

    /// The DHT routing table: every peer known, in no particular order.
    pub fn dht_known_peers(&self) -> Vec<PeerId> {
        self.dht.known().collect()
    }

    /// DHT links open now (connections kept for routing, not in the active view).
    pub fn dht_links(&self) -> Vec<PeerId> {
        self.dht
            .links_out
            .iter()
            .chain(self.dht.links_in.iter())
            .copied()
            .filter(|p| self.conns.get(p) == Some(&Conn::Active))
            .collect()
    }

    /// DHT counters.
    pub fn dht_stats(&self) -> &DhtStats {
        &self.dht.stats
    }

    // ---- links and housekeeping ----

    /// Once per heartbeat: timeouts, links, self-lookup, republish, expiry.
    pub(super) fn dht_tick(&mut self) {
        self.reconcile_links();
        if !self.dht_on() || !self.joined {
            return;
        }
        let now = self.now;
        // Timeouts.
        let expired: Vec<u64> = self
            .dht
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for rpc in expired {
            self.rpc_failed(rpc, DhtError::Timeout);
        }
        let late: Vec<u64> = self
            .dht
            .ops
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(op, _)| *op)
            .collect();
        for op in late {
            let storing = matches!(
                self.dht.ops.get(&op).map(|o| &o.kind),
                Some(OpKind::Storing { .. })
            );
            if storing {
                self.finish_store(op);
                self.dht.ops.remove(&op);
            } else {
                self.finish(op);
            }
        }
        self.dht.seen.retain(|_, (at, _)| *at + SEEN_TTL_MS > now);
        let answer_wait = self.config.dht.response_timeout_ms;
        self.dht
            .request_paths
            .retain(|_, (at, _)| *at + answer_wait > now);
        self.dht.link_backoff.retain(|_, until| *until > now);
        self.dht
            .spare_offered
            .retain(|_, at| *at + LINK_BACKOFF_MS > now);
        self.dht.records.retain(|_, h| h.expires > now);
        if self.membership.active.is_empty() {
            return;
        }
        self.dht_learn_views();
        if now >= self.dht.next_refresh {
            let jitter = self.rand_below(1 + self.config.dht.self_lookup_ms as usize / 5) as u64;
            // Soon after joining, then periodically.
            self.dht.next_refresh = if self.dht.next_refresh == 0 {
                now + 2_000 + jitter / 10
            } else {
                now + self.config.dht.self_lookup_ms - self.config.dht.self_lookup_ms / 10 + jitter
            };
            let me = self.dht.me;
            let deadline = now + self.config.dht.lookup_timeout_ms;
            self.start_op(None, OpKind::Refresh, me, deadline);
            for c in self.buckets_to_refresh() {
                let mut key = me.0;
                for (i, byte) in key.iter_mut().enumerate() {
                    for bit in 0..8 {
                        let pos = i * 8 + bit;
                        let mask = 0x80u8 >> bit;
                        // Flip bit c (so the key lands in bucket c), randomise the rest.
                        if pos == c || (pos > c && self.rng.next_u64() & 1 == 1) {
                            *byte ^= mask;
                        }
                    }
                }
                self.dht.stats.bucket_refreshes += 1;
                self.start_op(None, OpKind::Refresh, Key(key), deadline);
            }
        }
        if now >= self.dht.next_links {
            self.dht.next_links = now + self.config.dht.link_refresh_ms;
            self.open_links_for_slots();
            self.offer_spare_link();
        }
        if now >= self.dht.next_republish {
            let first = self.dht.next_republish == 0;
            let period = self.config.dht.republish_ms;
            let jitter = self.rand_below(1 + period as usize / 5) as u64;
            self.dht.next_republish = now + period - period / 10 + jitter;
            if !first {
                self.republish();
            }
        }
    }

    /// Kademlia's bucket refresh, minus the lookups that would learn nothing new: the
    /// buckets that are not full, so each peer knows someone in every non-empty slot
    /// (greedy routing stalls at a peer that does not), except
    /// - the buckets deeper than the shallowest of our k closest known peers: the
    ///   self-lookup started beside the refresh finds the k closest live peers, and every
    ///   peer of those buckets is closer to us than the farthest of them (at 10,000 peers
    ///   that skips the ≈ 5 deepest buckets, which were refreshed every minute for ever
    ///   because they hold fewer than k peers);
    /// - a bucket one of our own lookups aimed into during the last period.
    pub(super) fn buckets_to_refresh(&self) -> Vec<usize> {
        let (k, now, period) = (
            self.config.dht.k.max(1),
            self.now,
            self.config.dht.self_lookup_ms,
        );
        let me = self.dht.me;
        let closest = self.dht.closest_known(&me, k);
        let floor = if closest.len() < k {
            255 // Too few peers known for the self-lookup to vouch for any bucket.
        } else {
            closest
                .iter()
                .map(|p| me.common_prefix_len(&Key::of_peer(p)))
                .min()
                .unwrap_or(255)
        };
        let deepest = (0..256).rev().find(|c| !self.dht.buckets[*c].is_empty());
        (0..deepest.map_or(0, |d| d + 1).min(floor + 1))
            .filter(|&c| self.dht.buckets[c].len() < k)
            .filter(|&c| {
                let at = self.dht.bucket_looked_up[c];
                at == 0 || at + period <= now
            })
            .collect()
    }

    fn republish(&mut self) {
        let now = self.now;
        let period = self.config.dht.republish_ms;
        let deadline = now + self.config.dht.lookup_timeout_ms;
        let own: Vec<Record> = self.dht.own.values().cloned().collect();
        for r in own {
            let key = r.key();
            self.start_op(None, OpKind::Republish(r, 0), key, deadline);
        }
        // Held records nobody re-stored during the last period (someone else republished
        // the others, so usually one holder does the work).
        let held: Vec<(Record, u64)> = self
            .dht
            .records
            .values()
            .filter(|h| h.stored_at + period <= now && h.record.writer != self.me)
            .map(|h| {
                (
                    h.record.clone(),
                    h.record.ttl_ms.saturating_sub(h.expires - now),
                )
            })
            .collect();
        for (r, age) in held {
            if let Some(h) = self.dht.records.get_mut(&r.key()) {
                h.stored_at = now;
            }
            let key = r.key();
            self.start_op(None, OpKind::Republish(r, age), key, deadline);
        }
    }

    /// Drops links whose connection is gone; keeps the failure detector in step.
    fn reconcile_links(&mut self) {
        let gone: Vec<PeerId> = self
            .dht
            .links_out
            .iter()
            .chain(self.dht.links_in.iter())
            .copied()
            .filter(|p| match self.conns.get(p) {
                None => true,
                Some(Conn::Connecting { intent, .. }) => *intent != Intent::DhtLink,
                Some(_) => false,
            })
            .collect();
        for p in gone {
            self.dht.stats.links_taken += 1;
            self.dht.links_out.remove(&p);
            self.dht.links_in.remove(&p);
            if !self.membership.is_active(&p) {
                self.detector.remove(&p);
            }
        }
    }

    /// Opens links for uncovered slots, deepest first, at most two at a time, within the
    /// budget; at the budget, offers to close (`LinkSpare`) a link of ours whose slot
    /// another open link covers, to make room (a new active neighbour often lands in a
    /// slot a link already serves). It closes only if the other end agrees: closing it
    /// outright made the other end, which may need it, open another link in turn.
    fn open_links_for_slots(&mut self) {
        let b = usize::from(self.config.dht.bits_per_hop.clamp(1, 8));
        let mut covered: BTreeMap<(usize, u32), usize> = BTreeMap::new();
        let open: Vec<PeerId> = self.open_links().collect();
        for p in open.iter().chain(self.dht.links_out.iter()) {
            *covered.entry(self.dht.slot(p, b)).or_default() += 1;
        }
        let pending = self
            .dht
            .links_out
            .iter()
            .filter(|p| matches!(self.conns.get(p), Some(Conn::Connecting { .. })))
            .count();
        // Candidates by uncovered slot: heard from directly of late first (a departed peer
        // costs an RTCPeerConnection and a handshake timeout, and lookup answers name
        // peers long gone), then most recently seen.
        type Candidate = (bool, u64, PeerId);
        let mut by_slot: BTreeMap<(usize, u32), Vec<Candidate>> = BTreeMap::new();
        for c in self.dht.buckets.iter().flatten() {
            if self.conns.contains_key(&c.peer)
                || self.is_banned(&c.peer)
                || self.dht.link_backoff.contains_key(&c.peer)
            {
                continue;
            }
            let slot = self.dht.slot(&c.peer, b);
            if !covered.contains_key(&slot) {
                let fresh = c.heard + LINK_FRESH_MS >= self.now;
                by_slot
                    .entry(slot)
                    .or_default()
                    .push((fresh, c.seen, c.peer));
            }
        }
        if by_slot.is_empty() {
            return;
        }
        if self.dht.links_out.len() >= self.config.dht.max_links {
            let redundant = self.dht.links_out.iter().copied().find(|p| {
                self.conns.get(p) == Some(&Conn::Active)
                    && !self.membership.is_active(p)
                    && !self.dht.spare_offered.contains_key(p)
                    && covered.get(&self.dht.slot(p, b)).copied().unwrap_or(0) >= 2
            });
            if let Some(p) = redundant {
                self.dht.stats.links_swapped += 1;
                self.offer_link_spare(p);
            }
        }
        let mut budget = self
            .config
            .dht
            .max_links
            .saturating_sub(self.dht.links_out.len())
            .min(2usize.saturating_sub(pending));
        for (_, mut cands) in by_slot.into_iter().rev() {
            if budget == 0 {
                break;
            }
            crate::collections::sort_by(&mut cands, |a, b| b.cmp(a));
            let peer = cands[0].2;
            self.conns.insert(
                peer,
                Conn::Connecting {
                    intent: Intent::DhtLink,
                    since: self.now,
                },
            );
            self.dht.links_out.insert(peer);
            // A passive-view route or the server while there is one (they work before the
            // DHT links exist); else greedy routing over the links we have.
            let via = self
                .path_for_new_connection(&peer)
                .unwrap_or(SignalPath::Dht);
            self.router.set_path(peer, via.clone(), self.now);
            self.stats.connects += 1;
            self.dht.stats.link_attempts += 1;
            self.out.push(Output::Connect { peer, via });
            budget -= 1;
        }
    }

    /// DHT links (either direction, open, outside the active view) not offered as spare.
    fn kept_dht_links(&self) -> Vec<PeerId> {
        self.dht
            .links_out
            .iter()
            .chain(self.dht.links_in.iter())
            .copied()
            .filter(|p| {
                self.conns.get(p) == Some(&Conn::Active)
                    && !self.membership.is_active(p)
                    && !self.dht.spare_offered.contains_key(p)
            })
            .collect()
    }

    /// Offers to close one DHT link whose slot another of our DHT links serves (at most
    /// one per link round). Connections a departure takes down must be made again, so
    /// under churn the RTCPeerConnections a peer creates grow with the links it keeps:
    /// a link is worth keeping only while one of its ends needs it.
    fn offer_spare_link(&mut self) {
        let b = usize::from(self.config.dht.bits_per_hop.clamp(1, 8));
        let links = self.kept_dht_links();
        let mut by_slot: BTreeMap<(usize, u32), Vec<PeerId>> = BTreeMap::new();
        for p in links {
            by_slot.entry(self.dht.slot(&p, b)).or_default().push(p);
        }
        let Some(spare) = by_slot
            .values()
            .find(|v| v.len() >= 2)
            .map(|v| v[v.len() - 1])
        else {
            return;
        };
        self.offer_link_spare(spare);
    }

    /// Asks `spare`, one of our DHT links, to close it if its end can do without.
    fn offer_link_spare(&mut self, spare: PeerId) {
        self.dht.spare_offered.insert(spare, self.now);
        let frame = DhtFrame {
            target: Key::of_peer(&spare),
            exact: true,
            path: vec![self.me],
            route: Vec::new(),
            detours: 0,
            body: DhtBody::LinkSpare,
        };
        self.send(spare, &Message::Dht(Box::new(frame)));
    }

    /// `from` offers to close our DHT link: close it if another of ours serves its slot.
    fn on_link_spare(&mut self, from: PeerId) {
        let linked = self.dht.links_out.contains(&from) || self.dht.links_in.contains(&from);
        // A message in flight on the link (ours waiting for its acknowledgement, or
        // theirs half reassembled) would fail with it: keep the link for now (the other
        // end offers again at its budget).
        if !linked || self.membership.is_active(&from) || self.direct_in_flight_with(&from) {
            return;
        }
        let b = usize::from(self.config.dht.bits_per_hop.clamp(1, 8));
        let slot = self.dht.slot(&from, b);
        let other = self
            .kept_dht_links()
            .into_iter()
            .any(|p| p != from && self.dht.slot(&p, b) == slot);
        if !other {
            return;
        }
        self.dht.stats.links_spared += 1;
        self.conns.remove(&from);
        self.dht.links_out.remove(&from);
        self.dht.links_in.remove(&from);
        self.dht.spare_offered.remove(&from);
        self.detector.remove(&from);
        self.out.push(Output::Disconnect { peer: from });
    }

    /// The connection to `peer` came up: if it is a DHT link we opened, say so on it.
    /// Returns whether it was one.
    pub(super) fn dht_connection_up(&mut self, peer: PeerId) -> bool {
        if self.conns.get(&peer)
            != Some(&Conn::Connecting {
                intent: Intent::DhtLink,
                since: match self.conns.get(&peer) {
                    Some(Conn::Connecting { since, .. }) => *since,
                    _ => return false,
                },
            })
        {
            return false;
        }
        self.stats.connections_up += 1;
        self.router.connection_settled(&peer);
        if !self.joined || self.is_banned(&peer) {
            self.conns.remove(&peer);
            self.dht.links_out.remove(&peer);
            self.out.push(Output::Disconnect { peer });
            return true;
        }
        self.conns.insert(peer, Conn::Active);
        self.dht.stats.links_opened += 1;
        self.detector.add(peer, self.now);
        let hello = DhtFrame {
            target: Key::of_peer(&peer),
            exact: true,
            path: vec![self.me],
            route: Vec::new(),
            detours: 0,
            body: DhtBody::LinkHello,
        };
        self.send(peer, &Message::Dht(Box::new(hello)));
        true
    }

    /// The connection to `peer` went down: if it was a DHT link (or an attempt at one),
    /// forget it here. Returns whether it was one.
    pub(super) fn dht_connection_down(&mut self, peer: PeerId) -> bool {
        let link = self.dht.links_out.contains(&peer) || self.dht.links_in.contains(&peer);
        if !link || self.membership.is_active(&peer) {
            return false;
        }
        if matches!(self.conns.get(&peer), Some(Conn::Connecting { .. })) {
            self.stats.failed_connects += 1;
            self.dht.stats.links_failed += 1;
            self.dht.forget(&peer);
        }
        if self.conns.get(&peer) == Some(&Conn::Active) {
            self.dht.stats.links_down += 1;
        }
        if self.dht.links_out.contains(&peer) {
            let until = self.now + LINK_BACKOFF_MS;
            self.dht.link_backoff.insert(peer, until);
        }
        self.router.connection_settled(&peer);
        self.conns.remove(&peer);
        self.dht.links_out.remove(&peer);
        self.dht.links_in.remove(&peer);
        self.detector.remove(&peer);
        true
    }

    /// A `LinkHello` on a connection someone opened to us: accept it as a DHT link if the
    /// inbound budget allows.
    pub(super) fn dht_link_hello(&mut self, from: PeerId) {
        if !self.dht_on() || self.dht.links_in.len() >= self.config.dht.max_inbound_links {
            self.dht.stats.links_refused += 1;
            self.conns.remove(&from);
            self.out.push(Output::Disconnect { peer: from });
            return;
        }
        self.conns.insert(from, Conn::Active);
        self.dht.links_in.insert(from);
        self.dht.stats.links_accepted += 1;
        self.detector.add(from, self.now);
        self.dht_learn(from);
    }

    /// `Leave`: every command in flight fails with [`DhtError::NotJoined`], and the
    /// routing table, held records, links and timers are forgotten (the driver closes
    /// the links with the other connections). Only our own records and the counters
    /// stay (a later `Join` republishes them each [`DhtConfig::republish_ms`]).
    pub(super) fn dht_leave(&mut self) {
        let mut failed: BTreeSet<u64> = BTreeSet::new();
        for p in self.dht.pending.values() {
            if let Waiting::Direct { app, .. } | Waiting::Request { app, .. } = &p.what {
                failed.insert(*app);
            }
        }
        failed.extend(self.dht.ops.values().filter_map(|o| o.app));
        for id in failed {
            self.event(Event::Dht(DhtEvent::Failed {
                id,
                error: DhtError::NotJoined,
            }));
        }
        let me = self.me;
        let first_rpc = self.dht.next_rpc;
        let own = std::mem::take(&mut self.dht.own);
        let stats = std::mem::take(&mut self.dht.stats);
        for p in self.dht.links_out.iter().chain(self.dht.links_in.iter()) {
            self.detector.remove(p);
        }
        self.dht = Dht::new(&me, first_rpc);
        self.dht.own = own;
        self.dht.stats = stats;
    }

    /// Sends a WebRTC envelope along DHT routing (its path was set to [`SignalPath::Dht`]).
    pub(super) fn send_signal_via_dht(&mut self, envelope: SignedEnvelope) {
        let to = envelope.to;
        self.dht_send(Key::of_peer(&to), true, DhtBody::Signal(envelope), &[]);
    }
}

/// The rpc id of a frame that expects an answer (so a dead end can be reported).
/// The ids of a lookup answer, as sealed with it.
fn peer_bytes(peers: &[PeerId]) -> Vec<u8> {
    peers.iter().flat_map(|p| *p.as_bytes()).collect()
}

fn request_rpc(body: &DhtBody) -> Option<u64> {
    match body {
        DhtBody::Direct { rpc, .. }
        | DhtBody::Request { rpc, .. }
        | DhtBody::Find { rpc, .. }
        | DhtBody::Store { rpc, .. } => Some(*rpc),
        _ => None,
    }
}
