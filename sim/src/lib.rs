//! rhizome-sim: a deterministic discrete-event simulator of many [`Overlay`] cores.
//!
//! The overlay is sans-IO, so the simulator is just another driver: it owns N overlays,
//! a virtual millisecond clock and one event queue, and plays the parts of everything
//! outside the core — the data channels, the WebRTC handshake, the signaling server —
//! with a simple, stated model:
//!
//! - **Links.** A data channel between two peers has a fixed one-way latency drawn per
//!   pair from `latency_ms`. Channels are reliable and ordered (SCTP), so a "lost" frame
//!   (probability `loss`) is not dropped but delivered late, after a retransmission
//!   (three extra latencies), and never overtakes earlier frames.
//! - **Handshake.** `Connect` makes the initiator's transport seal an offer and hand it
//!   back to its overlay (`SendSignal`), which sends it via the server or along an overlay
//!   route. The target's transport answers the same way. When the answer arrives, the
//!   channel opens after `ice_ms` more and both sides get `ConnectionUp`. An attempt not
//!   up within `transport_timeout_ms` reports `ConnectionDown` to its initiator. Every
//!   RTCPeerConnection created (one per side per attempt) is counted.
//! - **Server.** A room: the set of online peers that registered with it (joined, or
//!   re-bootstrapped). A join or re-bootstrap gets a random sample of `contacts` of them;
//!   envelopes are relayed with `server_latency_ms` each way to peers still registered. An
//!   offer to a peer that is not fails the attempt at once (the server answers
//!   `unknown-peer` and the driver reports `ConnectionDown`). The server can be switched
//!   off, which loses its room (every peer is told `ServerDown`), and on again, with an
//!   empty room that peers fill by reconnecting (`RequestBootstrap`) as a restarted
//!   server would. A re-bootstrap asked for while it is off fails silently.
//! - **Failures.** A crashed peer stops silently: its channels stay "open" to the other
//!   side until the transport notices (ICE consent failure) after a delay drawn from
//!   `crash_detect_ms`, unless the overlay's failure detector closes them first. A leaving
//!   peer runs `Leave` and its channels close normally.
//!
//! Everything random comes from one seeded ChaCha generator and every map that is
//! iterated is ordered, so a run is a pure function of its seed.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use rhizome::id::{Identity, PeerId};
use rhizome::overlay::{Config, Event, Input, Output, Overlay, SignalPath};
use rhizome::signal::{SignalPayload, SignedEnvelope};
use rhizome::wire::{self, Message, MsgId};

pub mod join;
pub mod report;
pub mod restart;

/// The simulator's model parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice (overlays included).
    pub seed: u64,
    /// Range of one-way link latency between two peers, ms: each peer sits at a random
    /// point of a unit square (a synthetic network coordinate) and the latency grows
    /// linearly with distance, from the low end (same spot) to the high end (opposite
    /// corners). Unlike independent random latencies this keeps the triangle inequality.
    pub latency_ms: (u64, u64),
    /// Probability that a frame needs a retransmission.
    pub loss: f64,
    /// One-way latency between a peer and the signaling server, ms.
    pub server_latency_ms: u64,
    /// Time from the answer's arrival to the open data channel (ICE + DTLS), ms.
    pub ice_ms: u64,
    /// The transport's deadline for a handshake, ms.
    pub transport_timeout_ms: u64,
    /// Range of delay before a transport notices that the far side crashed, ms.
    pub crash_detect_ms: (u64, u64),
    /// Size of the server's random sample of the room.
    pub contacts: usize,
    /// The overlay configuration of every peer.
    pub overlay: Config,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency_ms: (10, 100),
            loss: 0.01,
            server_latency_ms: 40,
            ice_ms: 150,
            transport_timeout_ms: 10_000,
            crash_detect_ms: (5_000, 30_000),
            contacts: 5,
            overlay: Config::default(),
        }
    }
}

/// Lifecycle of a simulated peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Not started yet.
    Idle,
    /// Running and in the server's room.
    Online,
    /// Crashed or left; never comes back (a returning user is a new peer).
    Gone,
}

#[derive(Clone)]
struct Node {
    identity: Identity,
    overlay: Overlay,
    state: NodeState,
    wake: Option<u64>,
    online_since: u64,
    gone_at: Option<u64>,
    /// Peers with an open simulated channel.
    links: BTreeSet<usize>,
    pcs_created: u64,
    pos: (f64, f64),
}

#[derive(Debug, Clone, Copy, Default)]
struct Link {
    open: bool,
    gen: u64,
    /// Arrival time of the last frame in each direction (low→high, high→low).
    last_arrival: [u64; 2],
}

#[derive(Debug, Clone)]
enum Ev {
    Start(usize),
    Wake(usize, u64),
    Input(usize, Input),
    Frame {
        to: usize,
        from: usize,
        gen: u64,
        frame: Vec<u8>,
    },
    PeerClosed {
        to: usize,
        from: usize,
        gen: u64,
    },
    LinkUp {
        a: usize,
        b: usize,
        attempt: u64,
    },
    AttemptDeadline {
        a: usize,
        b: usize,
        attempt: u64,
    },
    Bootstrap(usize),
}

#[derive(Debug, Clone)]
struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// What happened to one broadcast.
#[derive(Debug, Clone, Default)]
pub struct BroadcastTrack {
    /// Sender.
    pub origin: usize,
    /// When it was sent.
    pub sent_at: u64,
    /// Online peers other than the origin when it was sent.
    pub online_at_send: usize,
    /// Delay to each delivery, ms.
    pub latencies: Vec<u64>,
    /// Hop count of each delivery.
    pub hops: Vec<u16>,
    /// Peers that delivered it.
    pub delivered_by: BTreeSet<usize>,
    /// Gossip frames carrying it that reached an online peer.
    pub payload_frames: u64,
}

/// Counters over the whole run (reset with [`Sim::reset_counters`]).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Gossip (payload) frames delivered.
    pub payload_frames: u64,
    /// All other frames delivered.
    pub control_frames: u64,
    /// Frames dropped because the channel was closed.
    pub dropped_frames: u64,
    /// RTCPeerConnections created (both sides).
    pub pcs_created: u64,
    /// Channels that opened.
    pub links_opened: u64,
    /// Connects whose signals started on an overlay route.
    pub connects_via_overlay: u64,
    /// Connects whose signals started via the server.
    pub connects_via_server: u64,
    /// Connects whose signals were routed greedily over DHT links.
    pub connects_via_dht: u64,
    /// Envelopes the server relayed.
    pub server_relays: u64,
    /// Re-bootstrap requests answered.
    pub bootstraps: u64,
    /// Misbehaviour reports.
    pub misbehaviour_reports: u64,
    /// Sum over peers of online time, ms.
    pub peer_ms: u64,
}

/// The simulator.
#[derive(Clone)]
pub struct Sim {
    /// The model.
    pub cfg: SimConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    rng: ChaCha8Rng,
    nodes: Vec<Node>,
    index: HashMap<PeerId, usize>,
    links: HashMap<(usize, usize), Link>,
    attempts: HashMap<(usize, usize), u64>,
    /// Pairs between which no connection can be made (see [`Sim::block`]).
    blocked: BTreeSet<(usize, usize)>,
    next_attempt: u64,
    room: Vec<usize>,
    room_pos: Vec<Option<usize>>,
    /// The server's room: the peers registered with it (a subset of `room`).
    registered: Vec<usize>,
    registered_pos: Vec<Option<usize>>,
    /// When each registration (join or re-bootstrap) reached the server, ms.
    server_joins: Vec<u64>,
    server_up: bool,
    gossip_tag: u8,
    counters_since: u64,
    /// Counters since the last reset.
    pub counters: Counters,
    /// Every broadcast sent, by id.
    pub broadcasts: HashMap<MsgId, BroadcastTrack>,
    /// If set, every overlay event is logged here (for tests).
    pub log: Option<Vec<(u64, usize, Event)>>,
}

impl Sim {
    /// A simulator with `n` peers, none started.
    pub fn new(cfg: SimConfig, n: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut nodes = Vec::with_capacity(n);
        let mut index = HashMap::with_capacity(n);
        for i in 0..n {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            let identity = Identity::from_secret_bytes(secret);
            let overlay = Overlay::new(identity.clone(), cfg.overlay.clone(), rng.next_u64());
            index.insert(identity.peer_id(), i);
            nodes.push(Node {
                identity,
                overlay,
                state: NodeState::Idle,
                wake: None,
                online_since: 0,
                gone_at: None,
                links: BTreeSet::new(),
                pcs_created: 0,
                pos: (0.0, 0.0),
            });
        }
        for node in &mut nodes {
            node.pos = (unit(&mut rng), unit(&mut rng));
        }
        let gossip_tag = gossip_tag();
        Sim {
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            nodes,
            index,
            links: HashMap::new(),
            attempts: HashMap::new(),
            blocked: BTreeSet::new(),
            next_attempt: 1,
            room: Vec::new(),
            room_pos: vec![None; n],
            registered: Vec::new(),
            registered_pos: vec![None; n],
            server_joins: Vec::new(),
            server_up: true,
            gossip_tag,
            counters_since: 0,
            counters: Counters::default(),
            broadcasts: HashMap::new(),
            log: None,
        }
    }

    /// Adds a peer (not started). Returns its index.
    pub fn add_node(&mut self) -> usize {
        let mut secret = [0u8; 32];
        self.rng.fill_bytes(&mut secret);
        let identity = Identity::from_secret_bytes(secret);
        let overlay = Overlay::new(
            identity.clone(),
            self.cfg.overlay.clone(),
            self.rng.next_u64(),
        );
        let i = self.nodes.len();
        self.index.insert(identity.peer_id(), i);
        self.nodes.push(Node {
            identity,
            overlay,
            state: NodeState::Idle,
            wake: None,
            online_since: 0,
            gone_at: None,
            links: BTreeSet::new(),
            pcs_created: 0,
            pos: (0.0, 0.0),
        });
        self.room_pos.push(None);
        self.registered_pos.push(None);
        let pos = (unit(&mut self.rng), unit(&mut self.rng));
        self.nodes[i].pos = pos;
        i
    }

    /// Current virtual time, ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of peers ever created.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A peer's overlay.
    pub fn overlay(&self, i: usize) -> &Overlay {
        &self.nodes[i].overlay
    }

    /// A peer's id.
    pub fn peer_id(&self, i: usize) -> PeerId {
        self.nodes[i].identity.peer_id()
    }

    /// A peer's identity (for tests that forge or sign things).
    pub fn identity(&self, i: usize) -> &Identity {
        &self.nodes[i].identity
    }

    /// The index of a peer id.
    pub fn index_of(&self, id: &PeerId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// A peer's lifecycle state.
    pub fn state(&self, i: usize) -> NodeState {
        self.nodes[i].state
    }

    /// Indices of online peers.
    pub fn online(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].state == NodeState::Online)
            .collect()
    }

    /// Whether the online peers' active views connect them all (one component).
    pub fn active_views_connected(&self) -> bool {
        let online = self.online();
        let Some(&start) = online.first() else {
            return true;
        };
        let mut seen = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(u) = stack.pop() {
            for p in self.overlay(u).active_view() {
                if let Some(v) = self.index_of(p) {
                    if self.state(v) == NodeState::Online && seen.insert(v) {
                        stack.push(v);
                    }
                }
            }
        }
        seen.len() == online.len()
    }

    /// The `k` online peers closest to `key` in the DHT's XOR metric, by brute force: the
    /// answer a lookup should converge to.
    pub fn closest_online(&self, key: &rhizome::overlay::dht::Key, k: usize) -> Vec<PeerId> {
        use rhizome::overlay::dht::Key;
        let mut all: Vec<_> = self
            .online()
            .into_iter()
            .map(|i| self.peer_id(i))
            .map(|p| (Key::of_peer(&p).distance(key), p))
            .collect();
        all.sort();
        all.into_iter().take(k).map(|(_, p)| p).collect()
    }

    /// RTCPeerConnections created by peer `i` so far.
    pub fn pcs_created(&self, i: usize) -> u64 {
        self.nodes[i].pcs_created
    }

    /// Whether the signaling server is up.
    pub fn server_up(&self) -> bool {
        self.server_up
    }

    /// A uniformly random number below `n`.
    pub fn rand_below(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            (self.rng.next_u64() % n as u64) as usize
        }
    }

    /// A uniform float in [0, 1).
    pub fn rand_unit(&mut self) -> f64 {
        unit(&mut self.rng)
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            ev,
        }));
    }

    /// Schedules peer `i` to start (join via the server) at time `at`.
    pub fn start_at(&mut self, i: usize, at: u64) {
        self.push(at, Ev::Start(i));
    }

    /// Runs every event up to and including time `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse(s)) = self.queue.peek() {
            if s.at > until {
                break;
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            self.now = s.at;
            self.dispatch(s.ev);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Start(i) => self.start_now(i),
            Ev::Wake(i, at) => {
                if self.nodes[i].wake == Some(at) {
                    self.nodes[i].wake = None;
                    self.input(i, Input::Timer);
                }
            }
            Ev::Input(i, input) => self.input(i, input),
            Ev::Frame {
                to,
                from,
                gen,
                frame,
            } => {
                // Frames sent before a close still arrive (graceful close): the channel
                // counts as up for the receiver until it hears of the close.
                let link = self.links.get(&key(to, from)).copied().unwrap_or_default();
                let up = link.open || self.nodes[to].links.contains(&from);
                if !up || link.gen != gen || self.nodes[to].state != NodeState::Online {
                    self.counters.dropped_frames += 1;
                    return;
                }
                self.count_frame(to, &frame);
                self.input(
                    to,
                    Input::Frame {
                        from: self.nodes[from].identity.peer_id(),
                        bytes: frame,
                    },
                );
            }
            Ev::PeerClosed { to, from, gen } => {
                let link = self.links.get(&key(to, from)).copied().unwrap_or_default();
                if link.gen == gen && !link.open && self.nodes[to].links.remove(&from) {
                    let peer = self.nodes[from].identity.peer_id();
                    self.input(to, Input::ConnectionDown { peer });
                }
            }
            Ev::LinkUp { a, b, attempt } => self.link_up(a, b, attempt),
            Ev::AttemptDeadline { a, b, attempt } => {
                if self.attempts.get(&(a, b)) == Some(&attempt) {
                    self.attempts.remove(&(a, b));
                    let peer = self.nodes[b].identity.peer_id();
                    self.input(a, Input::ConnectionDown { peer });
                }
            }
            Ev::Bootstrap(i) => {
                if self.server_up && self.nodes[i].state == NodeState::Online {
                    self.counters.bootstraps += 1;
                    let contacts = self.sample_room(i);
                    self.register(i);
                    self.input(i, Input::ServerUp);
                    self.input(i, Input::Join { contacts });
                }
            }
        }
    }

    fn start_now(&mut self, i: usize) {
        if self.nodes[i].state != NodeState::Idle {
            return;
        }
        self.nodes[i].state = NodeState::Online;
        self.nodes[i].online_since = self.now;
        let contacts = if self.server_up {
            self.sample_room(i)
        } else {
            Vec::new()
        };
        self.room_pos[i] = Some(self.room.len());
        self.room.push(i);
        if self.server_up {
            self.register(i);
            self.input(i, Input::ServerUp);
        }
        self.input(i, Input::Join { contacts });
    }

    /// Starts peer `i` now, joining through `contact` (an introduction by a member, as
    /// when the server is gone).
    pub fn start_with_contact(&mut self, i: usize, contact: usize) {
        if self.nodes[i].state != NodeState::Idle {
            return;
        }
        self.nodes[i].state = NodeState::Online;
        self.nodes[i].online_since = self.now;
        self.room_pos[i] = Some(self.room.len());
        self.room.push(i);
        let contacts = vec![self.nodes[contact].identity.peer_id()];
        self.input(i, Input::Join { contacts });
    }

    fn sample_room(&mut self, except: usize) -> Vec<PeerId> {
        let mut out = Vec::new();
        let n = self.registered.len();
        if n == 0 {
            return out;
        }
        let want = self.cfg.contacts.min(n);
        let mut tries = 0;
        while out.len() < want && tries < want * 4 {
            tries += 1;
            let r = self.rand_below(n);
            let j = self.registered[r];
            let id = self.nodes[j].identity.peer_id();
            if j != except && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    fn leave_room(&mut self, i: usize) {
        remove_member(&mut self.room, &mut self.room_pos, i);
        remove_member(&mut self.registered, &mut self.registered_pos, i);
    }

    /// Peer `i` registers with the server (joins its room).
    fn register(&mut self, i: usize) {
        self.server_joins.push(self.now);
        if self.registered_pos[i].is_none() {
            self.registered_pos[i] = Some(self.registered.len());
            self.registered.push(i);
        }
    }

    /// When each registration (a join or re-bootstrap) reached the server, ms.
    pub fn server_joins(&self) -> &[u64] {
        &self.server_joins
    }

    /// How many peers the server's room holds (registered and online).
    pub fn registered(&self) -> usize {
        self.registered.len()
    }

    /// Feeds one input to peer `i` and carries out the outputs.
    pub fn input(&mut self, i: usize, input: Input) {
        if self.nodes[i].state != NodeState::Online {
            return;
        }
        let outputs = self.nodes[i].overlay.handle(self.now, input);
        for o in outputs {
            self.output(i, o);
        }
    }

    fn output(&mut self, i: usize, o: Output) {
        match o {
            Output::Send { to, frame } => {
                if let Some(j) = self.index_of(&to) {
                    self.send_frame(i, j, frame);
                }
            }
            Output::Connect { peer, via } => {
                if let Some(j) = self.index_of(&peer) {
                    self.start_attempt(i, j, via);
                }
            }
            Output::Disconnect { peer } => {
                if let Some(j) = self.index_of(&peer) {
                    self.close(i, j);
                }
            }
            Output::SetTimer { at } => {
                self.nodes[i].wake = Some(at);
                self.push(at.max(self.now), Ev::Wake(i, at));
            }
            Output::SendViaServer { envelope } => {
                if !self.server_up {
                    return;
                }
                let Some(j) = self.index_of(&envelope.to) else {
                    return;
                };
                let at = self.now + 2 * self.cfg.server_latency_ms;
                if self.registered_pos[j].is_some() {
                    self.counters.server_relays += 1;
                    self.push(at, Ev::Input(j, Input::SignalFromServer { envelope }));
                } else if self.attempts.contains_key(&(i, j)) {
                    // The server answers `unknown-peer`; the driver fails the attempt.
                    self.attempts.remove(&(i, j));
                    let peer = envelope.to;
                    self.push(at, Ev::Input(i, Input::ConnectionDown { peer }));
                }
            }
            Output::DeliverSignal { envelope, payload } => {
                self.transport_signal(i, envelope, payload)
            }
            Output::RequestBootstrap => {
                if self.server_up {
                    let at = self.now + 2 * self.cfg.server_latency_ms;
                    self.push(at, Ev::Bootstrap(i));
                }
            }
            Output::Event(e) => self.on_event(i, e),
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        match &e {
            Event::BroadcastSent(id) => {
                let online_at_send = self.room.len().saturating_sub(1);
                self.broadcasts.insert(
                    *id,
                    BroadcastTrack {
                        origin: i,
                        sent_at: self.now,
                        online_at_send,
                        ..Default::default()
                    },
                );
            }
            Event::Broadcast { id, hops, .. } => {
                if let Some(t) = self.broadcasts.get_mut(id) {
                    t.latencies.push(self.now - t.sent_at);
                    t.hops.push(*hops);
                    t.delivered_by.insert(i);
                }
            }
            Event::Misbehaving { .. } => self.counters.misbehaviour_reports += 1,
            _ => {}
        }
        if let Some(log) = &mut self.log {
            log.push((self.now, i, e));
        }
    }

    fn count_frame(&mut self, _to: usize, frame: &[u8]) {
        if frame.get(1) == Some(&self.gossip_tag) {
            self.counters.payload_frames += 1;
            if let Ok(Message::Gossip(g)) = wire::decode(frame) {
                if let Some(t) = self.broadcasts.get_mut(&g.id) {
                    t.payload_frames += 1;
                }
            }
        } else {
            self.counters.control_frames += 1;
        }
    }

    fn latency(&self, a: usize, b: usize) -> u64 {
        let (lo, hi) = self.cfg.latency_ms;
        let (pa, pb) = (self.nodes[a].pos, self.nodes[b].pos);
        let d = ((pa.0 - pb.0).powi(2) + (pa.1 - pb.1).powi(2)).sqrt() / std::f64::consts::SQRT_2;
        lo + ((hi.saturating_sub(lo)) as f64 * d) as u64
    }

    fn send_frame(&mut self, a: usize, b: usize, frame: Vec<u8>) {
        let k = key(a, b);
        let lat = self.latency(a, b);
        let extra = if self.cfg.loss > 0.0 && self.rand_unit() < self.cfg.loss {
            3 * lat
        } else {
            0
        };
        let Some(link) = self.links.get_mut(&k) else {
            self.counters.dropped_frames += 1;
            return;
        };
        if !link.open {
            self.counters.dropped_frames += 1;
            return;
        }
        let dir = usize::from(a > b);
        let at = (self.now + lat + extra).max(link.last_arrival[dir]);
        link.last_arrival[dir] = at;
        let gen = link.gen;
        self.push(
            at,
            Ev::Frame {
                to: b,
                from: a,
                gen,
                frame,
            },
        );
    }

    fn start_attempt(&mut self, a: usize, b: usize, via: SignalPath) {
        match via {
            SignalPath::Server => self.counters.connects_via_server += 1,
            SignalPath::Overlay { .. } => self.counters.connects_via_overlay += 1,
            SignalPath::Dht => self.counters.connects_via_dht += 1,
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.attempts.insert((a, b), attempt);
        self.nodes[a].pcs_created += 1;
        self.counters.pcs_created += 1;
        let to = self.nodes[b].identity.peer_id();
        let envelope = SignedEnvelope::seal(
            &self.nodes[a].identity,
            to,
            attempt,
            &SignalPayload::Offer { sdp: "sim".into() },
        );
        let deadline = self.now + self.cfg.transport_timeout_ms;
        self.push(deadline, Ev::AttemptDeadline { a, b, attempt });
        self.input(a, Input::SendSignal { envelope });
    }

    /// The transport of peer `i` gets a verified signal.
    fn transport_signal(&mut self, i: usize, envelope: SignedEnvelope, payload: SignalPayload) {
        let Some(from) = self.index_of(&envelope.from) else {
            return;
        };
        match payload {
            SignalPayload::Offer { .. } => {
                if self.links.get(&key(i, from)).is_some_and(|l| l.open) {
                    return;
                }
                // With perfect negotiation a peer that is itself offering reuses its
                // RTCPeerConnection, so only a fresh answerer creates one.
                if !self.attempts.contains_key(&(i, from)) {
                    self.nodes[i].pcs_created += 1;
                    self.counters.pcs_created += 1;
                }
                let answer = SignedEnvelope::seal(
                    &self.nodes[i].identity,
                    envelope.from,
                    envelope.attempt,
                    &SignalPayload::Answer { sdp: "sim".into() },
                );
                self.input(i, Input::SendSignal { envelope: answer });
            }
            SignalPayload::Answer { .. } => {
                if self.attempts.get(&(i, from)) == Some(&envelope.attempt)
                    && !self.blocked.contains(&key(i, from))
                {
                    let at = self.now + self.cfg.ice_ms + self.latency(i, from);
                    self.push(
                        at,
                        Ev::LinkUp {
                            a: i,
                            b: from,
                            attempt: envelope.attempt,
                        },
                    );
                }
            }
            SignalPayload::Candidate { .. } | SignalPayload::Abort => {}
        }
    }

    fn link_up(&mut self, a: usize, b: usize, attempt: u64) {
        if self.attempts.get(&(a, b)) != Some(&attempt) {
            return;
        }
        self.attempts.remove(&(a, b));
        self.attempts.remove(&(b, a));
        if self.nodes[a].state != NodeState::Online || self.nodes[b].state != NodeState::Online {
            if self.nodes[a].state == NodeState::Online {
                let peer = self.nodes[b].identity.peer_id();
                self.input(a, Input::ConnectionDown { peer });
            }
            return;
        }
        let link = self.links.entry(key(a, b)).or_default();
        if link.open {
            return;
        }
        link.open = true;
        link.gen += 1;
        link.last_arrival = [self.now; 2];
        self.counters.links_opened += 1;
        self.nodes[a].links.insert(b);
        self.nodes[b].links.insert(a);
        let (pa, pb) = (self.peer_id(a), self.peer_id(b));
        self.input(a, Input::ConnectionUp { peer: pb });
        self.input(b, Input::ConnectionUp { peer: pa });
    }

    fn close(&mut self, a: usize, b: usize) {
        self.attempts.remove(&(a, b));
        self.nodes[a].links.remove(&b);
        let k = key(a, b);
        let lat = self.latency(a, b);
        let Some(link) = self.links.get_mut(&k) else {
            return;
        };
        if !link.open {
            return;
        }
        link.open = false;
        let dir = usize::from(a > b);
        let gen = link.gen;
        let at = (self.now + lat).max(link.last_arrival[dir]);
        self.push(
            at,
            Ev::PeerClosed {
                to: b,
                from: a,
                gen,
            },
        );
    }

    /// Cuts the channel between `a` and `b` (both stay online), as a failed link or the
    /// browser tests' `drop_connection` does: `a` hears at once, `b` one latency later.
    pub fn cut(&mut self, a: usize, b: usize) {
        if !self.linked(a, b) {
            return;
        }
        self.close(a, b);
        let peer = self.peer_id(b);
        self.input(a, Input::ConnectionDown { peer });
    }

    /// From now on connections between `a` and `b` cannot be made (ICE fails, or a page
    /// too busy to finish a handshake in time): attempts die at the transport's deadline.
    /// Links already open stay open.
    pub fn block(&mut self, a: usize, b: usize) {
        self.blocked.insert(key(a, b));
    }

    /// Undoes [`Sim::block`].
    pub fn unblock(&mut self, a: usize, b: usize) {
        self.blocked.remove(&key(a, b));
    }

    /// Crashes peer `i`: it stops silently.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].state != NodeState::Online {
            return;
        }
        self.go(i);
        let links: Vec<usize> = std::mem::take(&mut self.nodes[i].links)
            .into_iter()
            .collect();
        let (lo, hi) = self.cfg.crash_detect_ms;
        for j in links {
            let link = self.links.entry(key(i, j)).or_default();
            link.open = false;
            let gen = link.gen;
            let at = self.now + lo + self.rng.next_u64() % (hi - lo + 1).max(1);
            self.push(
                at,
                Ev::PeerClosed {
                    to: j,
                    from: i,
                    gen,
                },
            );
        }
    }

    /// Peer `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) {
        if self.nodes[i].state != NodeState::Online {
            return;
        }
        self.input(i, Input::Leave);
        let links: Vec<usize> = self.nodes[i].links.iter().copied().collect();
        for j in links {
            self.close(i, j);
        }
        self.go(i);
    }

    fn go(&mut self, i: usize) {
        self.leave_room(i);
        let n = &mut self.nodes[i];
        n.state = NodeState::Gone;
        n.gone_at = Some(self.now);
        self.counters.peer_ms += self.now - n.online_since.max(self.counters_since);
    }

    /// Switches the signaling server off (it loses its room and every registered peer's
    /// session closes: each is told `ServerDown`) or on again (with an empty room, like a
    /// restarted server: nobody is told; peers come back by reconnecting).
    pub fn set_server(&mut self, up: bool) {
        if up == self.server_up {
            return;
        }
        self.server_up = up;
        if !up {
            let sessions = std::mem::take(&mut self.registered);
            for &i in &sessions {
                self.registered_pos[i] = None;
            }
            for i in sessions {
                self.input(i, Input::ServerDown);
            }
        }
    }

    /// Peer `i` broadcasts `payload`; returns the message id.
    pub fn broadcast(&mut self, i: usize, payload: Vec<u8>) -> Option<MsgId> {
        if self.nodes[i].state != NodeState::Online {
            return None;
        }
        let outputs = self.nodes[i]
            .overlay
            .handle(self.now, Input::Broadcast { payload });
        let mut id = None;
        for o in outputs {
            if let Output::Event(Event::BroadcastSent(m)) = &o {
                id = Some(*m);
            }
            self.output(i, o);
        }
        id
    }

    /// Delivers raw `bytes` to `to` as if its neighbour `from` had sent them now.
    pub fn inject_frame(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let peer = self.peer_id(from);
        self.input(to, Input::Frame { from: peer, bytes });
    }

    /// Whether a channel between `a` and `b` is open.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.links.get(&key(a, b)).is_some_and(|l| l.open)
    }

    /// Active-view pairs that are not mutual among online peers: `(a, b)` with `b` in
    /// `a`'s active view but not the reverse.
    pub fn asymmetric_pairs(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for a in self.online() {
            for p in self.nodes[a].overlay.active_view() {
                let Some(b) = self.index_of(p) else { continue };
                let back = self.nodes[b]
                    .overlay
                    .active_view()
                    .contains(&self.peer_id(a));
                if self.nodes[b].state != NodeState::Online || !back {
                    out.push((a, b));
                }
            }
        }
        out
    }

    /// Resets the counters (start of a measurement window).
    pub fn reset_counters(&mut self) {
        self.counters = Counters::default();
        self.counters_since = self.now;
    }

    /// Online peer-milliseconds since the last reset, counting peers still online.
    pub fn peer_ms(&self) -> u64 {
        let since = self.counters_since;
        self.counters.peer_ms
            + self
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Online)
                .map(|n| self.now - n.online_since.max(since))
                .sum::<u64>()
    }

    /// The flooding baseline: how `origin`'s broadcast would spread right now if every
    /// online peer forwarded it to all its active neighbours (except the one it came
    /// from), over the same views and the same link latencies.
    pub fn flood(&self, origin: usize) -> FloodResult {
        let n = self.nodes.len();
        let mut best = vec![u64::MAX; n];
        let mut hops = vec![0u16; n];
        let mut parent = vec![usize::MAX; n];
        let mut heap = BinaryHeap::new();
        best[origin] = 0;
        heap.push(Reverse((0u64, origin)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > best[u] {
                continue;
            }
            for p in self.nodes[u].overlay.active_view() {
                let Some(v) = self.index_of(p) else { continue };
                if self.nodes[v].state != NodeState::Online {
                    continue;
                }
                let nd = d + self.latency(u, v);
                if nd < best[v] {
                    best[v] = nd;
                    hops[v] = hops[u] + 1;
                    parent[v] = u;
                    heap.push(Reverse((nd, v)));
                }
            }
        }
        let mut r = FloodResult::default();
        for u in 0..n {
            if self.nodes[u].state != NodeState::Online || u == origin {
                continue;
            }
            r.online += 1;
            if best[u] == u64::MAX {
                continue;
            }
            r.reached += 1;
            r.latencies.push(best[u]);
            r.hops.push(hops[u]);
        }
        // Messages: every reached peer sends to each online neighbour but its parent.
        for u in 0..n {
            if best[u] == u64::MAX || self.nodes[u].state != NodeState::Online {
                continue;
            }
            for p in self.nodes[u].overlay.active_view() {
                let Some(v) = self.index_of(p) else { continue };
                if v != parent[u] && self.nodes[v].state == NodeState::Online {
                    r.messages += 1;
                }
            }
        }
        r
    }
}

/// The flooding baseline for one broadcast.
#[derive(Debug, Clone, Default)]
pub struct FloodResult {
    /// Online peers other than the origin.
    pub online: usize,
    /// Of those, how many the flood reaches.
    pub reached: usize,
    /// Payload messages received by online peers.
    pub messages: u64,
    /// Delay to each reached peer, ms.
    pub latencies: Vec<u64>,
    /// Hops to each reached peer.
    pub hops: Vec<u16>,
}

fn key(a: usize, b: usize) -> (usize, usize) {
    if a < b {
        (a, b)
    } else {
        (b, a)
    }
}

fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The postcard variant byte of `Message::Gossip`, found by encoding one.
fn gossip_tag() -> u8 {
    let g = Message::Gossip(wire::Gossip {
        id: MsgId {
            origin: PeerId::from_bytes([0; 32]),
            seq: 0,
        },
        round: 0,
        payload: Vec::new(),
        sig: rhizome::id::Signature::from_bytes([0; 64]),
    });
    wire::encode(&g).map(|f| f[1]).unwrap_or(u8::MAX)
}

/// Removes `i` from a member list kept with each member's position.
fn remove_member(list: &mut Vec<usize>, pos: &mut [Option<usize>], i: usize) {
    if let Some(p) = pos[i].take() {
        list.swap_remove(p);
        if p < list.len() {
            let moved = list[p];
            pos[moved] = Some(p);
        }
    }
}
