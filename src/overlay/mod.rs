//! The sans-IO overlay core: one [`Overlay`] state machine per peer.
//!
//! Everything the overlay decides is a pure function of its inputs and of the time passed
//! in with them. It never opens a socket, never reads a clock and never spawns a task; it
//! takes an [`Input`] (an application command, a frame from a neighbour, a transport
//! event, a timer) and returns the [`Output`]s the driver must carry out (send a frame,
//! open or close a WebRTC connection, relay a signal, arm the timer, tell the app).
//! This is the shape of [str0m](https://github.com/algesten/str0m) and
//! [quinn-proto](https://github.com/quinn-rs/quinn): the browser driver, a native driver
//! and the simulator (`rhizome-sim`, 10,000 of these in one process) all run the same
//! code, and every test is deterministic.
//!
//! Inside, four protocols share the state:
//! - [`membership`]: HyParView (Leitão, Pereira, Rodrigues, DSN 2007) keeps a small
//!   *active view* of open connections and a larger *passive view* of addresses;
//! - [`broadcast`]: Plumtree (Leitão, Pereira, Rodrigues, SRDS 2007) builds a spanning
//!   tree over the active views and repairs it with lazy IHAVE announcements;
//! - [`route`]: source-routed frames carry WebRTC signals to peers we are not connected
//!   to, so new connections need no signaling server;
//! - [`failure`]: a ping-and-suspicion failure detector (after SWIM/Lifeguard), because a
//!   crashed browser tab can leave a data channel looking open for tens of seconds.
//!
//! # Time
//! `now` is a monotonic count of **milliseconds** since any fixed origin the driver
//! chooses (the browser driver uses `performance.now()`, the simulator its virtual
//! clock). It must never go backwards. The overlay asks to be woken with
//! [`Output::SetTimer`]; the driver keeps **one** timer, replaces it on every
//! `SetTimer`, and calls `handle(now, Input::Timer)` when it fires. Waking early or
//! late is harmless.
//!
//! # How a driver uses it
//! 1. `Overlay::new(identity, config, seed)`, with a fresh random seed in production.
//! 2. Connect to the signaling server, `handle(now, Input::ServerUp)`, then
//!    `handle(now, Input::Join { contacts })` with the server's sample of the room.
//! 3. Carry out every output in order:
//!    - `Send` — write the frame on the data channel to `to`;
//!    - `Connect` — create an RTCPeerConnection to `peer` (this side makes the offer);
//!      every envelope the transport produces for it (offer, candidates) goes back in
//!      as `Input::SendSignal`, and the overlay picks the path;
//!    - `DeliverSignal` — hand the (already verified) payload to the transport; create an
//!      answering RTCPeerConnection if it is an offer for an unknown peer;
//!    - `SendViaServer` — send the envelope over the signaling WebSocket;
//!    - `Disconnect` — close the connection to `peer` (gracefully: frames already
//!      queued are flushed first) or abort the attempt;
//!    - `RequestBootstrap` — ask the server for a new sample and answer with `Join`;
//!    - `Event` — tell the application.
//! 4. Report the transport's news: `ConnectionUp`/`ConnectionDown` (down also means
//!    "the attempt failed or timed out"), every received frame as `Frame`, every envelope
//!    from the server as `SignalFromServer`, the server session as `ServerUp`/`ServerDown`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand_core::{RngCore, SeedableRng};

use chacha::ChaCha8 as ChaCha8Rng;

use crate::collections::{BTreeMap, BTreeSet};
use crate::id::{Identity, PeerId};
use crate::signal::{EnvelopeError, SignalPayload, SignedEnvelope};
use crate::wire::{self, Message, MsgId, WireError};

pub mod broadcast;
mod chacha;
pub mod dht;
pub mod direct;
pub mod failure;
pub mod membership;
pub mod room;
pub mod route;
pub mod seal;

#[cfg(test)]
mod dht_tests;
#[cfg(test)]
mod tests;

/// Tunable parameters of the overlay. One home for all of them; the defaults are the ones
/// tuned with the simulator (see `docs/ARCHITECTURE.md` for the reasons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// HyParView active view size: open connections kept. Default 5 (log₁₀ 10,000 + 1).
    pub active_view_capacity: usize,
    /// HyParView passive view size: addresses kept for repair. Default 30.
    pub passive_view_capacity: usize,
    /// Active random walk length (ARWL) of a FORWARD_JOIN. Default 6.
    pub active_random_walk_length: u8,
    /// Passive random walk length (PRWL): the hop at which the walk also adds the
    /// newcomer to the passive view. Default 3.
    pub passive_random_walk_length: u8,
    /// Period of a shuffle — one *membership round*. Default 10 s.
    pub shuffle_interval_ms: u64,
    /// Active-view entries sent in a shuffle. Default 3.
    pub shuffle_active: usize,
    /// Passive-view entries sent in a shuffle. Default 4.
    pub shuffle_passive: usize,
    /// Length of a shuffle's random walk. Default 6.
    pub shuffle_ttl: u8,
    /// Period of the housekeeping tick (failure detector, repair, timeouts). Default 1 s.
    pub heartbeat_interval_ms: u64,
    /// Silence from a neighbour before it is pinged. Default 4 s.
    pub ping_interval_ms: u64,
    /// An unanswered ping after this long makes the neighbour *suspect*. Default 1.5 s.
    pub ping_timeout_ms: u64,
    /// A suspect that stays silent this long is declared dead. Default 3 s.
    pub suspicion_timeout_ms: u64,
    /// Deadline for a connection attempt or the first frame on a new connection.
    /// Default 15 s (ICE can stall for seconds in browsers).
    pub handshake_timeout_ms: u64,
    /// First wait after a refused NEIGHBOR request; doubles up to `repair_backoff_max_ms`.
    /// Default 2 s.
    pub repair_backoff_ms: u64,
    /// Longest wait between refused NEIGHBOR requests. Default 60 s.
    pub repair_backoff_max_ms: u64,
    /// Least time between two re-bootstrap requests. Default 10 s.
    pub bootstrap_backoff_ms: u64,
    /// After the signaling session is lost, the first reconnection is tried at a random
    /// time within this window; each failure doubles the window up to
    /// `reconnect_backoff_max_ms`. Random ("full jitter") so that the peers of a room
    /// whose server restarted come back spread over the window, not all at once.
    /// Default 5 s.
    pub reconnect_backoff_ms: u64,
    /// Largest reconnection window. Default 30 s: a room is whole again at most about
    /// this long after its server is back.
    pub reconnect_backoff_max_ms: u64,
    /// Plumtree: wait after the first IHAVE for a missing message before GRAFTing.
    /// Default 500 ms (about 2× the simulator's mean RTT between neighbours).
    pub graft_timeout_ms: u64,
    /// Plumtree: wait before GRAFTing the next announcer. Default 250 ms.
    pub graft_retry_ms: u64,
    /// Plumtree optimisation threshold in hops. Default 3.
    pub optimization_threshold: u16,
    /// How long a broadcast's payload stays cached to answer GRAFTs. Default 60 s.
    pub message_cache_ms: u64,
    /// How long a broadcast's id is remembered for de-duplication. Default 5 min.
    pub seen_ttl_ms: u64,
    /// Broadcasts per second accepted from one origin, on average (a token bucket per
    /// origin, checked after the signature): an origin over it is reported
    /// ([`Misbehaviour::Flooding`]) and banned for [`Config::ban_ms`], and its broadcasts
    /// are neither delivered nor relayed meanwhile. Default 1,000.
    pub origin_broadcasts_per_s: u32,
    /// Broadcasts one origin may send at once above that rate (the bucket's size).
    /// Default 10,000.
    pub origin_broadcast_burst: u32,
    /// Broadcast payload bytes per second accepted from one origin. Default 8 MiB.
    pub origin_bytes_per_s: u64,
    /// Payload bytes one origin may send at once above that rate. Default 64 MiB.
    pub origin_bytes_burst: u64,
    /// Most bytes of broadcast frames cached for GRAFTs, all origins together: the oldest
    /// go first beyond it (before [`Config::message_cache_ms`]). Default 32 MiB.
    pub max_cached_broadcast_bytes: usize,
    /// Most broadcast ids remembered for de-duplication: the oldest go first beyond it
    /// (before [`Config::seen_ttl_ms`]). Default 200,000 (~20 MB).
    pub max_seen_broadcasts: usize,
    /// Messages at most this old are announced (IHAVE) to a new neighbour, so a peer
    /// that was cut off catches up after repair. Default 30 s.
    pub ihave_on_connect_ms: u64,
    /// Longest source route kept for a passive peer. Default 10.
    pub max_route_len: usize,
    /// How long a misbehaving peer is refused. Default 10 min.
    pub ban_ms: u64,
    /// Which halves run: unstructured, structured or hybrid (default); see [`dht::Mode`].
    pub mode: dht::Mode,
    /// The DHT's parameters (see [`dht::DhtConfig`]).
    pub dht: dht::DhtConfig,
    /// The room's secret, derived ([`room::RoomKey::derive`]): only peers that know it
    /// become neighbours or DHT links, and broadcasts and routed messages are encrypted
    /// under keys derived from it (see [`room`]). Default none (an open room).
    pub room_key: Option<room::RoomKey>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            active_view_capacity: 5,
            passive_view_capacity: 30,
            active_random_walk_length: 6,
            passive_random_walk_length: 3,
            shuffle_interval_ms: 10_000,
            shuffle_active: 3,
            shuffle_passive: 4,
            shuffle_ttl: 6,
            heartbeat_interval_ms: 1_000,
            ping_interval_ms: 4_000,
            ping_timeout_ms: 1_500,
            suspicion_timeout_ms: 3_000,
            handshake_timeout_ms: 15_000,
            repair_backoff_ms: 2_000,
            repair_backoff_max_ms: 60_000,
            bootstrap_backoff_ms: 10_000,
            reconnect_backoff_ms: 5_000,
            reconnect_backoff_max_ms: 30_000,
            graft_timeout_ms: 500,
            graft_retry_ms: 250,
            optimization_threshold: 3,
            message_cache_ms: 60_000,
            seen_ttl_ms: 300_000,
            origin_broadcasts_per_s: 1_000,
            origin_broadcast_burst: 10_000,
            origin_bytes_per_s: 8 << 20,
            origin_bytes_burst: 64 << 20,
            max_cached_broadcast_bytes: 32 << 20,
            max_seen_broadcasts: 200_000,
            ihave_on_connect_ms: 30_000,
            max_route_len: 10,
            ban_ms: 600_000,
            mode: dht::Mode::default(),
            dht: dht::DhtConfig::default(),
            room_key: None,
        }
    }
}

/// Everything the driver tells the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Join (or re-join) the overlay through `contacts`, the server's sample of the room.
    Join {
        /// Peers to try, in any order.
        contacts: Vec<PeerId>,
    },
    /// Broadcast `payload` (at most [`wire::MAX_PAYLOAD_LEN`] bytes) to every peer.
    Broadcast {
        /// The application's bytes.
        payload: Vec<u8>,
    },
    /// Leave: say goodbye to the neighbours and close every connection.
    Leave,
    /// A frame arrived on the data channel from `from`.
    Frame {
        /// The neighbour that sent it.
        from: PeerId,
        /// The raw bytes (untrusted).
        bytes: Vec<u8>,
    },
    /// A data channel to `peer` opened (whichever side started it).
    ConnectionUp {
        /// The peer.
        peer: PeerId,
    },
    /// The connection to `peer` closed, failed, or could not be set up.
    ConnectionDown {
        /// The peer.
        peer: PeerId,
    },
    /// The timer set by the last [`Output::SetTimer`] fired.
    Timer,
    /// The signaling server session is up (joined to the room).
    ServerUp,
    /// The signaling server session is gone (closed by the server or the network): the
    /// overlay asks to reconnect (`RequestBootstrap`) in the background, with backoff.
    ServerDown,
    /// The application closed the signaling session on purpose: as `ServerDown`, but no
    /// reconnection (an isolated peer still asks for a re-bootstrap).
    ServerReleased,
    /// The server relayed this envelope to us.
    SignalFromServer {
        /// The envelope (untrusted until verified; the overlay verifies it).
        envelope: SignedEnvelope,
    },
    /// The transport produced this envelope (signed by us) for a connection attempt;
    /// the overlay sends it via the server or the overlay.
    SendSignal {
        /// The envelope to carry.
        envelope: SignedEnvelope,
    },
    /// A DHT command: direct message, request/response, lookup, put, get (see [`dht`]).
    Dht(dht::Command),
    /// Send the application's `payload` to `to`: over the open connection when there is
    /// one (up to [`wire::MAX_MESSAGE_LEN`]), else routed through the DHT (see
    /// [`direct`]). Answered by `DhtEvent::Delivered` or `DhtEvent::Failed` with `id`.
    Send {
        /// The driver's id for this send (unique among those in flight).
        id: u64,
        /// The recipient, anywhere in the room.
        to: PeerId,
        /// The bytes.
        payload: Vec<u8>,
    },
}

/// How the signals for a connection travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalPath {
    /// Through the signaling server.
    Server,
    /// Hop by hop through the overlay along this source route (first hop is an active
    /// neighbour, last is the peer).
    Overlay {
        /// The hops.
        route: Vec<PeerId>,
    },
    /// Greedily over open links toward the peer's id (see [`dht`]).
    Dht,
}

/// Everything the overlay asks of the driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `frame` to the connected peer `to`.
    Send {
        /// Recipient (a peer with an open data channel).
        to: PeerId,
        /// An encoded [`wire::Message`], at most [`wire::MAX_FRAME_LEN`] bytes.
        frame: Vec<u8>,
    },
    /// Open a WebRTC connection to `peer`; this side sends the offer.
    Connect {
        /// The peer.
        peer: PeerId,
        /// How the signals will travel (informational: pass every envelope back as
        /// [`Input::SendSignal`] and the overlay routes it).
        via: SignalPath,
    },
    /// Close the connection to `peer`, or abort the attempt.
    Disconnect {
        /// The peer.
        peer: PeerId,
    },
    /// Call `handle(now, Input::Timer)` at `at` (ms). Replaces any earlier timer.
    SetTimer {
        /// Deadline in the driver's millisecond clock.
        at: u64,
    },
    /// Send this envelope through the signaling server.
    SendViaServer {
        /// The envelope.
        envelope: SignedEnvelope,
    },
    /// A verified signal for our transport (it came via the server or the overlay).
    DeliverSignal {
        /// The envelope as received.
        envelope: SignedEnvelope,
        /// Its decoded payload.
        payload: SignalPayload,
    },
    /// We are isolated: ask the signaling server for a new sample, then send `Join`.
    RequestBootstrap,
    /// Something for the application.
    Event(Event),
}

/// What the application hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `peer` joined our active view.
    NeighborUp(PeerId),
    /// `peer` left our active view.
    NeighborDown(PeerId),
    /// A broadcast arrived (each at most once).
    Broadcast {
        /// Origin (who signed it) and its sequence number.
        id: MsgId,
        /// The bytes.
        payload: Vec<u8>,
        /// Hops it travelled to reach us.
        hops: u16,
        /// The neighbour that delivered it (for hop traces).
        via: PeerId,
    },
    /// Our own broadcast was signed and sent.
    BroadcastSent(MsgId),
    /// A peer misbehaved; it was disconnected and banned for [`Config::ban_ms`] unless
    /// the reason says otherwise.
    Misbehaving {
        /// The peer held responsible.
        peer: PeerId,
        /// What it did.
        reason: Misbehaviour,
    },
    /// `peer` speaks another version of the wire format (another build of rhizome): it
    /// was disconnected and is not dialled or accepted again for [`Config::ban_ms`].
    /// Reported once per peer.
    IncompatiblePeer {
        /// The peer.
        peer: PeerId,
        /// The version byte of its frames.
        their_version: u8,
        /// Ours, [`wire::WIRE_VERSION`].
        our_version: u8,
    },
    /// `peer` does not know the room's secret (or we do not: it proved a secret we do
    /// not share, or none where one is expected): it was disconnected and is not dialled
    /// or accepted again for [`Config::ban_ms`]. Both sides of such a connection report it.
    BadRoomSecret {
        /// The peer.
        peer: PeerId,
    },
    /// A command could not be carried out.
    Error(OverlayError),
    /// News from the DHT: direct messages, acknowledgements, lookups, records.
    Dht(dht::DhtEvent),
}

/// What a misbehaving peer did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misbehaviour {
    /// It sent a frame that does not decode.
    #[error("sent an undecodable frame: {0}")]
    BadFrame(#[from] WireError),
    /// It relayed a broadcast whose signature does not match its origin.
    #[error("relayed a forged or altered broadcast from {0:?}")]
    ForgedBroadcast(PeerId),
    /// A signal envelope claiming to be from it failed verification (the relay that
    /// delivered it is not blamed, since it cannot check envelopes meant for others).
    #[error("bad signal envelope: {0}")]
    BadSignal(EnvelopeError),
    /// It broke the protocol in a way an honest peer never does.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// It broadcast faster than [`Config::origin_broadcasts_per_s`] or
    /// [`Config::origin_bytes_per_s`] allow (checked at every peer, against the origin
    /// that signed: relays are not blamed).
    #[error("broadcast faster than the per-origin limits")]
    Flooding,
}

/// Errors about local commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    /// The broadcast payload is over [`wire::MAX_PAYLOAD_LEN`].
    #[error("broadcast payload of {0} bytes is too large")]
    PayloadTooLarge(usize),
    /// A command that needs a joined overlay came before `Join` or after `Leave`.
    #[error("not joined")]
    NotJoined,
    /// `SendSignal` with an envelope not signed by us.
    #[error("envelope is not from this peer")]
    ForeignEnvelope,
    /// No path (server or overlay) to carry a signal to this peer.
    #[error("no signal path to {0:?}")]
    NoSignalPath(PeerId),
    /// Our broadcast would exceed the per-origin limits every peer applies
    /// ([`Config::origin_broadcasts_per_s`], [`Config::origin_bytes_per_s`]): not sent.
    #[error("broadcast rate limit reached; not sent")]
    BroadcastRateLimited,
}

/// Counters for the driver's `stats()` and for the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `Connect` outputs emitted (RTCPeerConnections this side started).
    pub connects: u64,
    /// Connections that came up (either side started them).
    pub connections_up: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Broadcasts delivered to the application.
    pub delivered: u64,
    /// Gossip frames that were duplicates.
    pub duplicates: u64,
    /// Frames relayed on behalf of others (route.rs).
    pub relayed: u64,
    /// Re-bootstrap requests.
    pub bootstraps: u64,
    /// Reconnections to the signaling server tried after its session was lost (each is
    /// also a re-bootstrap request).
    pub reconnects: u64,
    /// Connections to a peer the server named after a reconnection that nothing in the
    /// overlay knew of: they merge a room that grew apart while the server was away.
    pub merge_probes: u64,
    /// Neighbours declared dead by the failure detector.
    pub declared_dead: u64,
    /// Neighbours evicted to make room for another.
    pub evictions: u64,
    /// Our NEIGHBOR requests that were refused.
    pub refused: u64,
    /// Connection attempts that failed or timed out.
    pub failed_connects: u64,
    /// Broadcasts dropped for their origin's rate (or because it was banned).
    pub refused_broadcasts: u64,
    /// Connections ended because the peer and we do not share the room's secret.
    pub bad_room_secrets: u64,
    /// Broadcasts (validly signed) whose payload did not open under the room's key: not
    /// delivered.
    pub unreadable_broadcasts: u64,
}

/// Most peers remembered as already reported incompatible.
const MAX_INCOMPATIBLE: usize = 256;

/// Why a timer was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Heartbeat,
    Shuffle,
    Graft(MsgId),
    /// Send the batched acknowledgements of direct messages (see [`direct`]).
    AckFlush,
}

/// What a connection we started is for (HyParView decides on `ConnectionUp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// Join the overlay through this contact.
    Join,
    /// Ask to become neighbours.
    Neighbor(wire::Priority),
    /// A long-lived DHT link (see [`dht`]).
    DhtLink,
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// We emitted `Connect` and wait for `ConnectionUp`.
    Connecting { intent: Intent, since: u64 },
    /// Up, and the peer is in our active view.
    Active,
    /// Up, started by the other side; we wait for its JOIN or NEIGHBOR.
    AwaitingHello { since: u64 },
    /// Up; we sent NEIGHBOR and wait for the reply.
    AwaitingReply { since: u64 },
}

/// One peer's overlay state machine. See the module documentation for the contract.
///
/// `Clone` lets the simulator snapshot a whole network and replay scenarios from it.
#[derive(Clone)]
pub struct Overlay {
    identity: Identity,
    me: PeerId,
    config: Config,
    rng: ChaCha8Rng,
    now: u64,
    joined: bool,
    server_up: bool,
    conns: BTreeMap<PeerId, Conn>,
    banned: BTreeMap<PeerId, u64>,
    /// Peers already reported as [`Event::IncompatiblePeer`] (at most
    /// [`MAX_INCOMPATIBLE`]).
    incompatible: BTreeSet<PeerId>,
    /// In a room with a secret: peers whose connection carried a valid room proof (until
    /// it goes down).
    proven: BTreeSet<PeerId>,
    /// In a room with a secret: connections up whose peer's proof has not come yet (the
    /// overlay does not use them until it does), with the time they came up.
    unproven: BTreeMap<PeerId, u64>,
    timers: BinaryHeap<Reverse<(u64, TimerKind)>>,
    announced_timer: Option<u64>,
    out: Vec<Output>,
    stats: Stats,
    membership: membership::Membership,
    plumtree: broadcast::Plumtree,
    router: route::Router,
    detector: failure::Detector,
    dht: dht::Dht,
    direct: direct::Direct,
    seal: seal::Sealer,
}

impl Overlay {
    /// A new, unjoined overlay core for `identity`. `rng_seed` drives every random choice
    /// (use a fresh random seed in production, a fixed one in tests).
    pub fn new(identity: Identity, config: Config, rng_seed: u64) -> Self {
        let me = identity.peer_id();
        let config_room = config.room_key.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        // A random start, so a restarted peer with the same identity does not reuse
        // sequence numbers its old broadcasts still occupy in others' caches; below 2^52,
        // so every sequence number stays exact as a JavaScript number.
        let first_seq = rng.next_u64() >> 12;
        let dht = dht::Dht::new(&me, rng.next_u64() >> 12);
        // The seed of Plumtree's id table, from a stream of its own: drawing it from
        // `rng` would shift every later random choice.
        let mut seeds = ChaCha8Rng::seed_from_u64(rng_seed);
        seeds.set_stream(1);
        let table_seed = [0; 4].map(|_: u64| seeds.next_u64());
        Overlay {
            identity,
            me,
            config,
            rng,
            now: 0,
            joined: false,
            server_up: false,
            conns: BTreeMap::new(),
            banned: BTreeMap::new(),
            incompatible: BTreeSet::new(),
            proven: BTreeSet::new(),
            unproven: BTreeMap::new(),
            timers: BinaryHeap::new(),
            announced_timer: None,
            out: Vec::new(),
            stats: Stats::default(),
            membership: membership::Membership::default(),
            plumtree: broadcast::Plumtree::new(first_seq, table_seed),
            router: route::Router::default(),
            detector: failure::Detector::default(),
            dht,
            direct: direct::Direct::default(),
            seal: seal::Sealer::new(&me, rng_seed)
                .with_room(config_room.as_ref().map(|k| *k.seal_key())),
        }
    }

    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The active view: neighbours with an open connection, in no particular order.
    pub fn active_view(&self) -> &[PeerId] {
        &self.membership.active
    }

    /// The passive view: peers known for repair.
    pub fn passive_view(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.membership.passive.iter().map(|e| e.peer)
    }

    /// Neighbours this peer currently eager-pushes broadcasts to (its Plumtree links).
    pub fn eager_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.plumtree.eager.iter().copied()
    }

    /// Whether `Join` was called and `Leave` was not.
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the failure detector currently suspects the active neighbour `peer`.
    pub fn is_suspect(&self, peer: &PeerId) -> bool {
        self.detector.is_suspect(peer)
    }

    /// Peers with a connection open or being opened, whatever its HyParView role.
    pub fn connections(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.conns.keys().copied()
    }

    /// Feeds one input at time `now` (ms, monotonic) and returns what to do, in order.
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Output> {
        self.now = self.now.max(now);
        match input {
            Input::Join { contacts } => self.on_join_command(contacts),
            Input::Broadcast { payload } => self.on_broadcast_command(payload),
            Input::Leave => {
                // Messages already reported to the application are acknowledged first.
                self.flush_acks(true);
                self.on_leave_command();
                self.expire_sends(true);
            }
            Input::Frame { from, bytes } => self.on_frame(from, &bytes),
            Input::ConnectionUp { peer } => {
                // In a room with a secret, the proof goes first, and the connection is
                // used (JOIN, NEIGHBOR, DHT link) only once the peer's proof verified.
                let refused = !self.joined || self.is_banned(&peer) || peer == self.me;
                // The driver reports an open connection again when the overlay asks for
                // one it has (perfect negotiation): a proven one is taken at once, an
                // unproven one still waits for its proof.
                if let (Some(key), false) = (&self.config.room_key, refused) {
                    if self.proven.contains(&peer) {
                        self.connection_up(peer);
                    } else if !self.unproven.contains_key(&peer) {
                        let mac = key.proof(&self.me, &peer).to_vec();
                        self.send(peer, &Message::RoomProof { mac });
                        self.unproven.insert(peer, self.now);
                    }
                } else {
                    self.connection_up(peer);
                }
            }
            Input::ConnectionDown { peer } => {
                self.proven.remove(&peer);
                self.unproven.remove(&peer);
                if !self.dht_connection_down(peer) {
                    self.on_connection_down(peer)
                }
                self.expire_sends(false);
            }
            Input::Timer => {
                // The driver's one timer has fired: none is pending there now. If it
                // fired early (a browser's coarsened or jittered clock can read `now`
                // just below the deadline), nothing is due yet and the same deadline
                // must be announced again, or the overlay would never be woken.
                self.announced_timer = None;
                self.on_timer()
            }
            Input::ServerUp => self.server_up = true,
            Input::ServerDown => self.on_server_down(true),
            Input::ServerReleased => self.on_server_down(false),
            Input::SignalFromServer { envelope } => self.on_server_signal(envelope),
            Input::SendSignal { envelope } => self.on_send_signal(envelope),
            Input::Dht(command) => self.on_dht_command(command),
            Input::Send { id, to, payload } => self.on_send_command(id, to, payload),
        }
        if self.config.room_key.is_some() {
            // A connection the overlay closes is never reported down by the driver: the
            // next one to the same peer must prove the secret again.
            for o in &self.out {
                if let Output::Disconnect { peer } = o {
                    self.proven.remove(peer);
                    self.unproven.remove(peer);
                }
            }
        }
        self.filter_fragment_events();
        self.announce_timer();
        std::mem::take(&mut self.out)
    }

    fn connection_up(&mut self, peer: PeerId) {
        if !self.dht_connection_up(peer) {
            self.on_connection_up(peer)
        }
    }

    fn on_frame(&mut self, from: PeerId, bytes: &[u8]) {
        if !self.joined || from == self.me {
            return;
        }
        self.stats.frames_received += 1;
        let msg = match wire::decode(bytes) {
            Ok(msg) => msg,
            Err(WireError::UnsupportedVersion { theirs, ours }) => {
                return self.on_incompatible(from, theirs, ours)
            }
            Err(e) => return self.punish(from, Misbehaviour::BadFrame(e)),
        };
        if let Message::RoomProof { mac } = &msg {
            let pending = self.unproven.remove(&from).is_some();
            return match &self.config.room_key {
                Some(key) if pending && key.verify(&from, &self.me, mac) => {
                    self.proven.insert(from);
                    self.connection_up(from);
                }
                // A second proof on a proven connection, or one for a connection that
                // is gone: nothing to do.
                Some(_) if !pending => {}
                // A wrong proof, or one where our room has no secret.
                _ => self.on_bad_room_secret(from),
            };
        }
        if self.config.room_key.is_some() && !self.proven.contains(&from) {
            if self.unproven.contains_key(&from) {
                // Anything before the proof: the peer has no secret.
                self.on_bad_room_secret(from);
            }
            return;
        }
        let Some(conn) = self.conns.get(&from).copied() else {
            // A frame from a peer we have no connection with (it raced a close): ignore.
            return;
        };
        self.detector.heard_from(from, self.now);
        match conn {
            Conn::Active => self.on_active_message(from, msg),
            Conn::AwaitingHello { .. } if matches!(&msg, Message::Dht(f) if f.body == dht::DhtBody::LinkHello) => {
                self.dht_link_hello(from)
            }
            Conn::AwaitingHello { .. } | Conn::AwaitingReply { .. } => {
                self.on_handshake_message(from, conn, msg)
            }
            Conn::Connecting { .. } => {}
        }
    }

    /// A message from a peer in our active view.
    fn on_active_message(&mut self, from: PeerId, msg: Message) {
        match msg {
            Message::Join => self.on_join_message(from),
            Message::ForwardJoin {
                newcomer,
                ttl,
                path,
            } => self.on_forward_join(from, newcomer, ttl, path),
            // On a DHT link (open, not in the active view) a NEIGHBOR request is decided
            // as on a fresh connection, so both sides agree on the active view.
            Message::Neighbor { priority } if !self.membership.is_active(&from) => {
                self.answer_neighbor_request(from, priority);
            }
            Message::Neighbor { .. } => self.send(from, &Message::NeighborReply { accepted: true }),
            Message::NeighborReply { accepted } => self.on_link_neighbor_reply(from, accepted),
            Message::Disconnect => self.on_disconnect_message(from),
            Message::Leave => self.on_leave_message(from),
            Message::Shuffle { ttl, path, entries } => self.on_shuffle(from, ttl, path, entries),
            Message::Ping { nonce } => self.send(from, &Message::Pong { nonce }),
            Message::Pong { .. } => {}
            Message::Gossip(g) => self.on_gossip(from, g),
            Message::IHave(ids) => self.on_ihave(from, ids),
            Message::Graft { id, send } => self.on_graft(from, id, send),
            Message::Prune { origin } => self.on_prune(from, origin),
            Message::Route { path, hop, body } => self.on_route(from, path, hop, body),
            Message::Dht(frame) => self.on_dht_frame(from, *frame),
            Message::Data {
                id,
                part,
                parts,
                unacked,
                payload,
            } => self.on_data(from, id, (part, parts), unacked, payload),
            Message::DataAck { ids } => self.on_data_acks(from, ids),
            // Handled in `on_frame`, before any other frame.
            Message::RoomProof { .. } => {}
        }
    }

    fn on_broadcast_command(&mut self, payload: Vec<u8>) {
        if !self.joined {
            return self.event(Event::Error(OverlayError::NotJoined));
        }
        let sealed = if self.config.room_key.is_some() {
            room::OVERHEAD
        } else {
            0
        };
        if payload.len() + sealed > wire::MAX_PAYLOAD_LEN {
            return self.event(Event::Error(OverlayError::PayloadTooLarge(payload.len())));
        }
        if self.config.mode == dht::Mode::Structured {
            let error = dht::DhtError::Disabled(dht::Mode::Structured);
            return self.event(Event::Dht(dht::DhtEvent::Refused { error }));
        }
        self.broadcast(payload);
    }

    fn on_leave_command(&mut self) {
        if !self.joined {
            return;
        }
        self.dht_leave();
        for peer in self.membership.active.clone() {
            self.send(peer, &Message::Leave);
            self.event(Event::NeighborDown(peer));
        }
        let peers: Vec<PeerId> = self.conns.keys().copied().collect();
        for peer in peers {
            self.out.push(Output::Disconnect { peer });
        }
        self.conns.clear();
        self.membership.active.clear();
        self.plumtree.clear_links();
        self.detector = failure::Detector::default();
        self.timers.clear();
        self.announced_timer = None;
        self.joined = false;
    }

    fn on_timer(&mut self) {
        while let Some(Reverse((at, kind))) = self.timers.peek().copied() {
            if at > self.now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::Heartbeat => {
                    self.heartbeat();
                    let at = self.now + self.config.heartbeat_interval_ms;
                    self.set_timer(at, TimerKind::Heartbeat);
                }
                TimerKind::Shuffle => {
                    self.shuffle();
                    let base = self.config.shuffle_interval_ms;
                    let jitter = self.rand_below((base / 5).max(1) as usize) as u64;
                    self.set_timer(self.now + base - base / 10 + jitter, TimerKind::Shuffle);
                }
                TimerKind::Graft(id) => self.on_graft_timer(id),
                TimerKind::AckFlush => self.flush_acks(false),
            }
        }
    }

    /// Housekeeping, once per heartbeat: failure detection, timeouts, repair, GC.
    fn heartbeat(&mut self) {
        if !self.joined {
            return;
        }
        self.check_liveness();
        self.dht_tick();
        self.expire_sends(false);
        self.check_handshake_timeouts();
        self.expire_queries();
        self.repair();
        self.reconnect_server();
        self.plumtree.gc(self.now, &self.config);
        self.router.gc(self.now);
        let now = self.now;
        self.banned.retain(|_, until| *until > now);
    }

    /// Starts the periodic timers, each at a random phase so peers do not tick together.
    fn start_timers(&mut self) {
        let hb = self.rand_below(self.config.heartbeat_interval_ms as usize) as u64;
        self.set_timer(self.now + hb + 1, TimerKind::Heartbeat);
        let sh = self.rand_below(self.config.shuffle_interval_ms as usize) as u64;
        self.set_timer(self.now + sh + 1, TimerKind::Shuffle);
    }

    // ---- helpers shared by the protocol modules ----

    fn set_timer(&mut self, at: u64, kind: TimerKind) {
        self.timers.push(Reverse((at, kind)));
    }

    fn announce_timer(&mut self) {
        let next = self.timers.peek().map(|Reverse((at, _))| *at);
        if next != self.announced_timer {
            if let Some(at) = next {
                self.out.push(Output::SetTimer { at });
            }
            self.announced_timer = next;
        }
    }

    fn send(&mut self, to: PeerId, msg: &Message) {
        match wire::encode(msg) {
            Ok(frame) => self.send_frame(to, frame),
            // Only our own bugs can get here (every list we build is bounded); dropping
            // the frame is safer than panicking in a browser.
            Err(_) => debug_assert!(false, "tried to send an oversized frame"),
        }
    }

    fn send_frame(&mut self, to: PeerId, frame: Vec<u8>) {
        self.stats.frames_sent += 1;
        self.out.push(Output::Send { to, frame });
    }

    fn event(&mut self, e: Event) {
        self.out.push(Output::Event(e));
    }

    fn rand_below(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            (self.rng.next_u64() % n as u64) as usize
        }
    }

    /// Reports `peer`, drops it from every view and bans it for a while.
    fn punish(&mut self, peer: PeerId, reason: Misbehaviour) {
        self.event(Event::Misbehaving { peer, reason });
        self.shun(peer);
    }

    /// `peer` runs a build whose frames we cannot read (nor it ours): not misbehaviour,
    /// but a link to it would look up while carrying nothing. Dropped and kept away like a
    /// banned peer (its offers are ignored, so it costs no RTCPeerConnection either), and
    /// reported to the application the first time only.
    fn on_incompatible(&mut self, peer: PeerId, their_version: u8, our_version: u8) {
        if self.incompatible.insert(peer) {
            if self.incompatible.len() > MAX_INCOMPATIBLE {
                // Forget one at random (a reload might report it again, which is harmless).
                let i = self.rand_below(self.incompatible.len());
                if let Some(old) = self.incompatible.iter().nth(i).copied() {
                    self.incompatible.remove(&old);
                }
            }
            self.event(Event::IncompatiblePeer {
                peer,
                their_version,
                our_version,
            });
        }
        self.shun(peer);
    }

    /// `peer` and we do not share the room's secret: reported, dropped and kept away like
    /// an incompatible peer (the ban keeps it from costing connections again).
    fn on_bad_room_secret(&mut self, peer: PeerId) {
        self.stats.bad_room_secrets += 1;
        self.event(Event::BadRoomSecret { peer });
        // A connection the overlay had not taken yet (the other side started it) is
        // closed too.
        let known = self.conns.contains_key(&peer);
        self.shun(peer);
        if !known {
            self.out.push(Output::Disconnect { peer });
        }
    }

    /// Drops `peer` from every view and connection and bans it for [`Config::ban_ms`].
    fn shun(&mut self, peer: PeerId) {
        self.proven.remove(&peer);
        self.unproven.remove(&peer);
        self.banned.insert(peer, self.now + self.config.ban_ms);
        self.membership.remove_passive(&peer);
        if self.conns.remove(&peer).is_some() {
            self.out.push(Output::Disconnect { peer });
        }
        self.drop_active(peer);
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.get(peer).is_some_and(|until| *until > self.now)
    }
}
