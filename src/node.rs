//! The browser node: the event loop that drives one [`Overlay`] with real WebRTC
//! connections, the signaling client and a timer.
//!
//! The overlay core decides everything; this driver only carries out its [`Output`]s and
//! feeds back what the browser reports, in the order it happens. It is single-threaded
//! (the page's event loop) and re-entrancy-free: every input goes through
//! [`Shared::input`], which borrows the state, runs the overlay, and performs the outputs;
//! anything that has to wait (a promise, a timer, a socket) is spawned as a task that
//! calls `input` again later. Many nodes can live in one page: they share nothing but the
//! page's count of `RTCPeerConnection`s.
//!
//! Connections are keyed by the remote peer. One connection per pair is enough because
//! the transport does perfect negotiation (simultaneous connects converge on one
//! `RTCPeerConnection` per side); a remote peer that restarted (a reload) shows up as an
//! offer with a new attempt id on an open connection, which replaces the old one.
//!
//! The signaling session stays open while the node runs — it costs the server one idle
//! WebSocket, answered pings keep it alive — but nothing depends on it: when it closes,
//! the overlay is told (`ServerDown`) and signals go through the overlay instead. A new
//! session is opened only when the overlay asks for a re-bootstrap because it is isolated.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use futures_channel::mpsc;
use futures_util::StreamExt;
use gloo_timers::callback::{Interval, Timeout};
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;

use crate::id::{Identity, PeerId};
use crate::overlay::{self, Event, Input, Output, Overlay};
use crate::signal::{SignalPayload, SignedEnvelope};
use crate::topology::{Announcement, Hop, NetworkMap, ANNOUNCEMENT_VERSION, MAX_ANNOUNCED_HOPS};
use crate::transport::web::{connections_created, WebConnection};
use crate::transport::web_signaling::{SignalingClient, SignalingEvent, SignalingSender};
use crate::transport::{ConnEvent, ConnLimits, IceServer};
use crate::wire::MsgId;

/// Everything a node needs to start. One home for the driver's settings; the overlay's
/// own live in [`overlay::Config`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Signaling server URLs (`ws://…/ws`), tried in order.
    pub signaling: Vec<String>,
    /// The room to join.
    pub room: String,
    /// STUN/TURN servers; empty for a local network.
    pub ice_servers: Vec<IceServer>,
    /// This node's identity; a fresh one when `None`.
    pub identity: Option<Identity>,
    /// Overlay parameters.
    pub overlay: overlay::Config,
    /// Per-connection limits (largest message, send queue).
    pub limits: ConnLimits,
    /// Deadline for reaching the signaling server and joining, per URL. Default 10 s.
    pub join_timeout_ms: u32,
    /// Heartbeat on the signaling session, well under the server's idle timeout.
    /// Default 20 s.
    pub server_ping_ms: u32,
    /// Broadcast this node's active view every so many ms, and assemble the whole
    /// network's graph from everyone's announcements (see `topology.rs`). Costs one
    /// broadcast per peer per interval: for demos and small rooms. Default off.
    pub announce_topology_ms: Option<u32>,
}

impl NodeConfig {
    /// A configuration with the defaults for everything but the servers and the room.
    pub fn new(signaling: Vec<String>, room: impl Into<String>) -> Self {
        NodeConfig {
            signaling,
            room: room.into(),
            ice_servers: Vec::new(),
            identity: None,
            overlay: overlay::Config::default(),
            limits: ConnLimits::default(),
            join_timeout_ms: 10_000,
            server_ping_ms: 20_000,
            announce_topology_ms: None,
        }
    }
}

/// What a node tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A peer joined this node's active view.
    NeighborUp(PeerId),
    /// A peer left this node's active view.
    NeighborDown(PeerId),
    /// A broadcast arrived (each at most once).
    Broadcast {
        /// Who broadcast it (verified signature).
        from: PeerId,
        /// The origin's sequence number.
        seq: u64,
        /// The bytes.
        data: Vec<u8>,
        /// Overlay hops it travelled.
        hops: u16,
    },
    /// The picture of the network changed (an announcement arrived, or a neighbour came
    /// or went); read it with [`Node::topology`].
    TopologyChanged,
    /// Something went wrong; the node goes on.
    Error {
        /// Stable machine-readable code.
        code: &'static str,
        /// Human-readable detail.
        message: String,
        /// The peer concerned, if any.
        peer: Option<PeerId>,
    },
    /// The node left the overlay; no event follows.
    Left,
}

/// Why a node could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No identity could be made.
    #[error(transparent)]
    Identity(#[from] crate::id::IdError),
    /// No signaling server accepted us.
    #[error(transparent)]
    Signaling(#[from] crate::transport::web_signaling::SignalingError),
    /// The node has left.
    #[error("the node has left the overlay")]
    Left,
    /// The overlay refused a command.
    #[error(transparent)]
    Overlay(#[from] overlay::OverlayError),
}

/// Counters a node reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStats {
    /// Peers in the active view.
    pub neighbors: usize,
    /// Peers in the passive view.
    pub passive: usize,
    /// Open or opening connections of this node.
    pub connections: usize,
    /// `RTCPeerConnection`s created by this page so far, all nodes together (Chromium
    /// allows ~500 per page lifetime).
    pub page_connections_created: u32,
    /// Connections this node started.
    pub connects: u64,
    /// Broadcasts delivered to the application.
    pub delivered: u64,
    /// Duplicate gossip frames received.
    pub duplicates: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Frames relayed for others.
    pub relayed: u64,
    /// Re-bootstraps through the signaling server.
    pub bootstraps: u64,
    /// Whether a signaling session is open.
    pub server_connected: bool,
    /// Application broadcasts sent by this node.
    pub broadcasts_sent: u64,
    /// Bytes handed to data channels (all frames).
    pub bytes_sent: u64,
    /// Bytes received on data channels (all frames).
    pub bytes_received: u64,
}

/// One peer in [`Node::topology`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopologyPeer {
    /// Its id.
    pub id: PeerId,
    /// How this node knows it: `"self"`, `"active"`, `"passive"` or `"announced"`.
    pub view: &'static str,
    /// Its active view as it announced it (empty when unknown).
    pub neighbors: Vec<PeerId>,
    /// Broadcasts it delivered, as it announced.
    pub delivered: u64,
    /// Frames it sent, as it announced.
    pub frames_sent: u64,
    /// Frames it received, as it announced.
    pub frames_received: u64,
}

/// The network as this node sees it: itself, its views, and everything announced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Topology {
    /// This node.
    pub me: PeerId,
    /// Every known peer.
    pub peers: Vec<TopologyPeer>,
    /// Links: this node's own, and those both ends announced.
    pub edges: Vec<(PeerId, PeerId)>,
}

struct Conn {
    conn: Rc<WebConnection>,
    /// Distinguishes this connection from an earlier one to the same peer.
    generation: u64,
    /// Our attempt id, sealed into every envelope we send for it.
    attempt: u64,
    /// The remote side's attempt id, once it has sent something.
    remote_attempt: Option<u64>,
    /// Signals for the transport, applied one at a time in arrival order.
    signals: mpsc::UnboundedSender<SignalPayload>,
    open: bool,
}

/// First byte of every broadcast payload: which stream it belongs to.
const CHANNEL_APP: u8 = 0;
const CHANNEL_TOPOLOGY: u8 = 1;

struct State {
    identity: Identity,
    map: NetworkMap,
    recent: VecDeque<Hop>,
    announcer: Option<Interval>,
    broadcasts_sent: u64,
    last_sent: Option<MsgId>,
    bytes_sent: u64,
    bytes_received: u64,
    config: NodeConfig,
    overlay: Overlay,
    conns: HashMap<PeerId, Conn>,
    next_generation: u64,
    server: Option<SignalingSender>,
    server_session: u64,
    bootstrapping: bool,
    timer: Option<Timeout>,
    ping: Option<Interval>,
    events: mpsc::UnboundedSender<NodeEvent>,
    left: bool,
}

/// The node's state, shared by the tasks that feed it.
pub(crate) struct Shared {
    state: RefCell<State>,
}

/// A running node. Dropping it does not stop it; call [`Node::leave`].
#[derive(Clone)]
pub struct Node {
    shared: Rc<Shared>,
    id: PeerId,
}

/// Milliseconds on the page's monotonic clock (`performance.now()`), in a window or a
/// worker; `Date.now()` where there is no `performance`.
fn now_ms() -> u64 {
    use wasm_bindgen::JsCast;
    let global = js_sys::global();
    let t = js_sys::Reflect::get(&global, &JsValue::from_str("performance"))
        .ok()
        .filter(|p| p.is_object())
        .and_then(|perf| {
            let now = js_sys::Reflect::get(&perf, &JsValue::from_str("now")).ok()?;
            now.dyn_into::<js_sys::Function>()
                .ok()?
                .call0(&perf)
                .ok()?
                .as_f64()
        })
        .unwrap_or_else(js_sys::Date::now);
    t.max(0.0) as u64
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // Attempt ids and seeds only need to differ, not to be secret; fall back to time.
    if getrandom::fill(&mut b).is_err() {
        return js_sys::Date::now().to_bits();
    }
    u64::from_le_bytes(b)
}

impl Node {
    /// Joins the overlay: reaches a signaling server, joins the room, and starts
    /// connecting to the members it was introduced to. Resolves once the server session
    /// is up; neighbours come as [`NodeEvent::NeighborUp`] events.
    pub async fn join(
        config: NodeConfig,
    ) -> Result<(Node, mpsc::UnboundedReceiver<NodeEvent>), NodeError> {
        let identity = match config.identity.clone() {
            Some(id) => id,
            None => Identity::generate()?,
        };
        let (client, contacts) = SignalingClient::connect_any(
            &config.signaling,
            &identity,
            &config.room,
            config.join_timeout_ms,
        )
        .await?;
        let (events, rx) = mpsc::unbounded();
        let overlay = Overlay::new(identity.clone(), config.overlay.clone(), random_u64());
        let id = identity.peer_id();
        let shared = Rc::new(Shared {
            state: RefCell::new(State {
                identity,
                map: NetworkMap::new(),
                recent: VecDeque::new(),
                announcer: None,
                broadcasts_sent: 0,
                last_sent: None,
                bytes_sent: 0,
                bytes_received: 0,
                config,
                overlay,
                conns: HashMap::new(),
                next_generation: 1,
                server: None,
                server_session: 0,
                bootstrapping: false,
                timer: None,
                ping: None,
                events,
                left: false,
            }),
        });
        shared.attach_server(client, contacts);
        shared.start_announcing();
        Ok((Node { shared, id }, rx))
    }

    /// This node's peer id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Broadcasts `data` to every peer of the overlay; returns its sequence number (with
    /// this node's id it names the broadcast, e.g. for [`Node::trace`]).
    pub fn broadcast(&self, data: Vec<u8>) -> Result<u64, NodeError> {
        {
            let mut s = self.shared.state.borrow_mut();
            if s.left {
                return Err(NodeError::Left);
            }
            let max = crate::wire::MAX_PAYLOAD_LEN - 1;
            if data.len() > max {
                return Err(NodeError::Overlay(overlay::OverlayError::PayloadTooLarge(
                    data.len(),
                )));
            }
            s.broadcasts_sent += 1;
        }
        let mut payload = Vec::with_capacity(1 + data.len());
        payload.push(CHANNEL_APP);
        payload.extend_from_slice(&data);
        self.shared.state.borrow_mut().last_sent = None;
        self.shared.input(Input::Broadcast { payload });
        // The overlay signs and sends within `input`, reporting `BroadcastSent`.
        let sent = self.shared.state.borrow_mut().last_sent.take();
        sent.map(|id| id.seq)
            .ok_or(NodeError::Overlay(overlay::OverlayError::NotJoined))
    }

    /// The network as this node knows it: its own views, plus — when topology
    /// announcements are on — every peer and link the announcements describe.
    pub fn topology(&self) -> Topology {
        let mut s = self.shared.state.borrow_mut();
        s.map.expire(now_ms());
        let me = self.id;
        let active: Vec<PeerId> = s.overlay.active_view().to_vec();
        let mut peers: Vec<TopologyPeer> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let announced = |id: PeerId, view: &'static str| {
            let a = s.map.peers().find(|(p, _)| **p == id).map(|(_, a)| a);
            TopologyPeer {
                id,
                view,
                neighbors: a.map(|a| a.active.clone()).unwrap_or_default(),
                delivered: a.map(|a| a.delivered).unwrap_or(0),
                frames_sent: a.map(|a| a.frames_sent).unwrap_or(0),
                frames_received: a.map(|a| a.frames_received).unwrap_or(0),
            }
        };
        let mut me_entry = announced(me, "self");
        me_entry.neighbors = active.clone();
        peers.push(me_entry);
        seen.insert(me);
        for p in &active {
            if seen.insert(*p) {
                peers.push(announced(*p, "active"));
            }
        }
        for p in s.overlay.passive_view() {
            if seen.insert(p) {
                peers.push(announced(p, "passive"));
            }
        }
        let others: Vec<PeerId> = s.map.peers().map(|(p, _)| *p).collect();
        for p in others {
            if seen.insert(p) {
                peers.push(announced(p, "announced"));
            }
        }
        let mut edges: std::collections::BTreeSet<(PeerId, PeerId)> = s
            .map
            .edges()
            .into_iter()
            .filter(|(a, b)| *a != me && *b != me)
            .collect();
        for p in &active {
            edges.insert(if me < *p { (me, *p) } else { (*p, me) });
        }
        Topology {
            me,
            peers,
            edges: edges.into_iter().collect(),
        }
    }

    /// The hops broadcast `(origin, seq)` took, as far as announcements tell.
    pub fn trace(&self, origin: PeerId, seq: u64) -> Vec<(PeerId, PeerId)> {
        self.shared.state.borrow().map.trace(&origin, seq)
    }

    /// The active view: peers this node has open connections to.
    pub fn neighbors(&self) -> Vec<PeerId> {
        self.shared.state.borrow().overlay.active_view().to_vec()
    }

    /// The passive view: peers known by address, kept for repair.
    pub fn passive(&self) -> Vec<PeerId> {
        self.shared.state.borrow().overlay.passive_view().collect()
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let s = self.shared.state.borrow();
        let o = s.overlay.stats();
        NodeStats {
            neighbors: s.overlay.active_view().len(),
            passive: s.overlay.passive_view().count(),
            connections: s.conns.len(),
            page_connections_created: connections_created(),
            connects: o.connects,
            delivered: o.delivered,
            duplicates: o.duplicates,
            frames_sent: o.frames_sent,
            frames_received: o.frames_received,
            relayed: o.relayed,
            bootstraps: o.bootstraps,
            server_connected: s.server.is_some(),
            broadcasts_sent: s.broadcasts_sent,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
        }
    }

    /// Closes the signaling session, as if the server had gone away. For tests and for
    /// applications that want to stop using the server once the overlay is up.
    pub fn disconnect_server(&self) {
        self.shared.drop_server();
    }

    /// Closes the connection to `peer` (as a network failure would); the overlay repairs.
    pub fn drop_connection(&self, peer: PeerId) -> bool {
        let conn = self.shared.state.borrow_mut().conns.remove(&peer);
        match conn {
            Some(c) => {
                c.conn.close();
                self.shared.input(Input::ConnectionDown { peer });
                true
            }
            None => false,
        }
    }

    /// Sends raw bytes to a neighbour, bypassing the overlay. Only for testing how
    /// peers treat a misbehaving one.
    #[doc(hidden)]
    pub fn send_raw(&self, peer: PeerId, bytes: &[u8]) -> bool {
        let conn = self
            .shared
            .state
            .borrow()
            .conns
            .get(&peer)
            .map(|c| c.conn.clone());
        conn.map(|c| c.send(bytes).is_ok()).unwrap_or(false)
    }

    /// Leaves the overlay: says goodbye to the neighbours, closes every connection and
    /// the signaling session. Resolves when the goodbyes are flushed (at most ~1 s).
    pub async fn leave(&self) {
        if self.shared.state.borrow().left {
            return;
        }
        self.shared.input(Input::Leave);
        // Give the DISCONNECT frames a moment to leave.
        let deadline = now_ms() + 1_000;
        loop {
            let pending: usize = self
                .shared
                .state
                .borrow()
                .conns
                .values()
                .map(|c| c.conn.buffered_amount())
                .sum();
            if pending == 0 || now_ms() >= deadline {
                break;
            }
            TimeoutFuture::new(20).await;
        }
        let mut s = self.shared.state.borrow_mut();
        s.left = true;
        for (_, c) in s.conns.drain() {
            c.conn.close();
        }
        s.timer = None;
        s.ping = None;
        s.announcer = None;
        s.server = None;
        s.server_session += 1;
        let _ = s.events.unbounded_send(NodeEvent::Left);
        s.events.close_channel();
    }
}

impl Shared {
    /// Runs one input through the overlay and carries out what it asks.
    fn input(self: &Rc<Self>, input: Input) {
        let outputs = {
            let mut s = self.state.borrow_mut();
            if s.left {
                return;
            }
            s.overlay.handle(now_ms(), input)
        };
        for out in outputs {
            self.perform(out);
        }
    }

    fn emit(&self, ev: NodeEvent) {
        let _ = self.state.borrow().events.unbounded_send(ev);
    }

    fn perform(self: &Rc<Self>, out: Output) {
        match out {
            Output::Send { to, frame } => {
                let conn = self.state.borrow().conns.get(&to).map(|c| c.conn.clone());
                match conn.map(|c| c.send(&frame)) {
                    Some(Ok(())) => self.state.borrow_mut().bytes_sent += frame.len() as u64,
                    Some(Err(e)) => self.emit(NodeEvent::Error {
                        code: "send-failed",
                        message: e.to_string(),
                        peer: Some(to),
                    }),
                    // The overlay already heard (or will hear) that the link is gone.
                    None => {}
                }
            }
            Output::Connect { peer, .. } => self.open_connection(peer, true),
            Output::Disconnect { peer } => {
                let conn = self.state.borrow_mut().conns.remove(&peer);
                if let Some(c) = conn {
                    spawn_local(close_after_flush(c.conn));
                }
            }
            Output::SetTimer { at } => {
                let delay = at.saturating_sub(now_ms()).min(u32::MAX as u64) as u32;
                let weak = Rc::downgrade(self);
                let timer = Timeout::new(delay, move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.input(Input::Timer);
                    }
                });
                self.state.borrow_mut().timer = Some(timer);
            }
            Output::SendViaServer { envelope } => {
                let server = self.state.borrow().server.clone();
                let sent = server.map(|s| s.send_signal(&envelope));
                if !matches!(sent, Some(Ok(()))) {
                    // Lost the server between the overlay's decision and now.
                    self.drop_server();
                }
            }
            Output::DeliverSignal { envelope, payload } => self.deliver_signal(envelope, payload),
            Output::RequestBootstrap => self.bootstrap(),
            Output::Event(ev) => self.app_event(ev),
        }
    }

    fn app_event(&self, ev: Event) {
        let ev = match ev {
            Event::NeighborUp(p) => {
                self.emit(NodeEvent::NeighborUp(p));
                NodeEvent::TopologyChanged
            }
            Event::NeighborDown(p) => {
                self.state.borrow_mut().map.remove(&p);
                self.emit(NodeEvent::NeighborDown(p));
                NodeEvent::TopologyChanged
            }
            Event::Broadcast {
                id,
                payload,
                hops,
                via,
            } => {
                let Some((&channel, data)) = payload.split_first() else {
                    return; // an empty payload carries no channel: not from a rhizome node
                };
                if channel == CHANNEL_APP {
                    let mut s = self.state.borrow_mut();
                    if s.recent.len() == MAX_ANNOUNCED_HOPS {
                        s.recent.pop_front();
                    }
                    s.recent.push_back(Hop {
                        origin: id.origin,
                        seq: id.seq,
                        via,
                    });
                }
                match channel {
                    CHANNEL_APP => NodeEvent::Broadcast {
                        from: id.origin,
                        seq: id.seq,
                        data: data.to_vec(),
                        hops,
                    },
                    CHANNEL_TOPOLOGY => match Announcement::decode(data) {
                        Ok(a) => {
                            if !self.state.borrow_mut().map.apply(id.origin, a, now_ms()) {
                                return;
                            }
                            NodeEvent::TopologyChanged
                        }
                        Err(e) => NodeEvent::Error {
                            code: "bad-announcement",
                            message: e.to_string(),
                            peer: Some(id.origin),
                        },
                    },
                    other => NodeEvent::Error {
                        code: "unknown-channel",
                        message: format!("broadcast on unknown channel {other}"),
                        peer: Some(id.origin),
                    },
                }
            }
            Event::BroadcastSent(id) => {
                self.state.borrow_mut().last_sent = Some(id);
                return;
            }
            // An envelope that fails verification may be forged by whoever relayed it;
            // the peer it names is not blamed, only the envelope is refused.
            Event::Misbehaving {
                peer,
                reason: reason @ overlay::Misbehaviour::BadSignal(_),
            } => NodeEvent::Error {
                code: "bad-signal",
                message: format!("refused a signal envelope claiming to be from it: {reason}"),
                peer: Some(peer),
            },
            Event::Misbehaving { peer, reason } => NodeEvent::Error {
                code: "peer-misbehaved",
                message: reason.to_string(),
                peer: Some(peer),
            },
            // DHT events are not exposed to JS yet (node.send / 'message' to be wired).
            Event::Dht(_) => return,
            Event::Error(e) => NodeEvent::Error {
                code: match e {
                    overlay::OverlayError::PayloadTooLarge(_) => "payload-too-large",
                    overlay::OverlayError::NotJoined => "not-joined",
                    overlay::OverlayError::ForeignEnvelope => "foreign-envelope",
                    overlay::OverlayError::NoSignalPath(_) => "no-signal-path",
                },
                message: e.to_string(),
                peer: match e {
                    overlay::OverlayError::NoSignalPath(p) => Some(p),
                    _ => None,
                },
            },
        };
        self.emit(ev);
    }

    /// Creates a connection to `peer` and the task that forwards its events.
    fn open_connection(self: &Rc<Self>, peer: PeerId, initiate: bool) {
        let (local, ice, limits) = {
            let s = self.state.borrow();
            (
                s.identity.peer_id(),
                s.config.ice_servers.clone(),
                s.config.limits.clone(),
            )
        };
        let (conn, mut events) = match WebConnection::new(local, peer, &ice, limits, initiate) {
            Ok(c) => c,
            Err(e) => {
                self.emit(NodeEvent::Error {
                    code: "connection-failed",
                    message: e.to_string(),
                    peer: Some(peer),
                });
                self.input(Input::ConnectionDown { peer });
                return;
            }
        };
        let conn = Rc::new(conn);
        let (signals, mut signal_rx) = mpsc::unbounded::<SignalPayload>();
        let generation = {
            let mut s = self.state.borrow_mut();
            let generation = s.next_generation;
            s.next_generation += 1;
            if let Some(old) = s.conns.insert(
                peer,
                Conn {
                    conn: conn.clone(),
                    generation,
                    attempt: random_u64(),
                    remote_attempt: None,
                    signals,
                    open: false,
                },
            ) {
                old.conn.close();
            }
            generation
        };

        // Signals are applied one at a time, in the order they arrived.
        {
            let conn = conn.clone();
            let weak = Rc::downgrade(self);
            spawn_local(async move {
                while let Some(payload) = signal_rx.next().await {
                    if let Err(e) = conn.handle_signal(payload).await {
                        if let Some(shared) = weak.upgrade() {
                            shared.emit(NodeEvent::Error {
                                code: "signal-failed",
                                message: e.to_string(),
                                peer: Some(peer),
                            });
                        }
                    }
                }
            });
        }

        let weak: Weak<Shared> = Rc::downgrade(self);
        spawn_local(async move {
            while let Some(ev) = events.next().await {
                let Some(shared) = weak.upgrade() else { return };
                if !shared.is_current(peer, generation) {
                    return; // replaced or removed; its news is stale
                }
                match ev {
                    ConnEvent::Signal(payload) => {
                        let envelope = {
                            let s = shared.state.borrow();
                            let attempt = s.conns.get(&peer).map(|c| c.attempt).unwrap_or(0);
                            SignedEnvelope::seal(&s.identity, peer, attempt, &payload)
                        };
                        shared.input(Input::SendSignal { envelope });
                    }
                    ConnEvent::Open => {
                        if let Some(c) = shared.state.borrow_mut().conns.get_mut(&peer) {
                            c.open = true;
                        }
                        shared.input(Input::ConnectionUp { peer });
                    }
                    ConnEvent::Message(bytes) => {
                        shared.state.borrow_mut().bytes_received += bytes.len() as u64;
                        shared.input(Input::Frame { from: peer, bytes })
                    }
                    ConnEvent::Corrupt(why) => {
                        shared.emit(NodeEvent::Error {
                            code: "peer-misbehaved",
                            message: format!("broke the channel framing: {why}"),
                            peer: Some(peer),
                        });
                        shared.remove_connection(peer);
                        return;
                    }
                    ConnEvent::Closed(_why) => {
                        shared.remove_connection(peer);
                        return;
                    }
                }
            }
        });
    }

    fn is_current(&self, peer: PeerId, generation: u64) -> bool {
        self.state
            .borrow()
            .conns
            .get(&peer)
            .is_some_and(|c| c.generation == generation)
    }

    fn remove_connection(self: &Rc<Self>, peer: PeerId) {
        let conn = self.state.borrow_mut().conns.remove(&peer);
        if let Some(c) = conn {
            c.conn.close();
            self.input(Input::ConnectionDown { peer });
        }
    }

    fn deliver_signal(self: &Rc<Self>, envelope: SignedEnvelope, payload: SignalPayload) {
        let from = envelope.from;
        let is_offer = matches!(payload, SignalPayload::Offer { .. });
        // A fresh offer on an open connection means the remote side restarted.
        let stale = {
            let s = self.state.borrow();
            s.conns.get(&from).is_some_and(|c| {
                is_offer && c.open && c.remote_attempt.is_some_and(|a| a != envelope.attempt)
            })
        };
        if stale {
            self.remove_connection(from);
        }
        let exists = self.state.borrow().conns.contains_key(&from);
        if !exists {
            if !is_offer {
                return; // leftovers of an attempt we no longer have
            }
            self.open_connection(from, false);
        }
        let mut s = self.state.borrow_mut();
        if let Some(c) = s.conns.get_mut(&from) {
            c.remote_attempt = Some(envelope.attempt);
            let _ = c.signals.unbounded_send(payload);
        }
    }

    /// Starts the periodic topology announcement, if configured.
    fn start_announcing(self: &Rc<Self>) {
        let Some(ms) = self.state.borrow().config.announce_topology_ms else {
            return;
        };
        let weak = Rc::downgrade(self);
        let announce = move || {
            if let Some(shared) = weak.upgrade() {
                shared.announce(ms);
            }
        };
        announce();
        let interval = Interval::new(ms.max(250), announce);
        self.state.borrow_mut().announcer = Some(interval);
    }

    fn announce(self: &Rc<Self>, interval_ms: u32) {
        let (payload, me, announcement) = {
            let s = self.state.borrow();
            if s.left {
                return;
            }
            let o = s.overlay.stats();
            let a = Announcement {
                version: ANNOUNCEMENT_VERSION,
                interval_ms,
                active: s.overlay.active_view().to_vec(),
                passive: s.overlay.passive_view().count().min(u16::MAX as usize) as u16,
                delivered: o.delivered,
                frames_sent: o.frames_sent,
                frames_received: o.frames_received,
                recent: s.recent.iter().copied().collect(),
            };
            let mut payload = vec![CHANNEL_TOPOLOGY];
            payload.extend_from_slice(&a.encode());
            (payload, s.identity.peer_id(), a)
        };
        // Our own entry, so the map has both ends of our links.
        self.state
            .borrow_mut()
            .map
            .apply(me, announcement, now_ms());
        if self.state.borrow().overlay.is_joined() {
            self.input(Input::Broadcast { payload });
        }
    }

    /// Takes a joined signaling session into use.
    fn attach_server(self: &Rc<Self>, mut client: SignalingClient, contacts: Vec<PeerId>) {
        let session = {
            let mut s = self.state.borrow_mut();
            s.server = Some(client.sender());
            s.server_session += 1;
            s.bootstrapping = false;
            let sender = client.sender();
            s.ping = Some(Interval::new(s.config.server_ping_ms, move || {
                let _ = sender.ping();
            }));
            s.server_session
        };
        self.input(Input::ServerUp);
        self.input(Input::Join { contacts });

        let weak = Rc::downgrade(self);
        spawn_local(async move {
            while let Some(ev) = client.next_event().await {
                let Some(shared) = weak.upgrade() else { return };
                if shared.state.borrow().server_session != session {
                    return; // replaced by a newer session
                }
                match ev {
                    SignalingEvent::Signal { envelope, .. } => {
                        match SignedEnvelope::from_json(&envelope) {
                            Ok(envelope) => shared.input(Input::SignalFromServer { envelope }),
                            Err(e) => shared.emit(NodeEvent::Error {
                                code: "bad-signal",
                                message: e.to_string(),
                                peer: None,
                            }),
                        }
                    }
                    SignalingEvent::Error { code, message } => shared.emit(NodeEvent::Error {
                        code: "signaling-error",
                        message: match code {
                            Some(c) => format!("{c:?}: {message}"),
                            None => message,
                        },
                        peer: None,
                    }),
                    SignalingEvent::Closed(_) => break,
                }
            }
            if let Some(shared) = weak.upgrade() {
                if shared.state.borrow().server_session == session {
                    shared.drop_server();
                }
            }
        });
    }

    fn drop_server(self: &Rc<Self>) {
        let had = {
            let mut s = self.state.borrow_mut();
            s.ping = None;
            s.server_session += 1;
            s.server.take().is_some()
        };
        if had {
            self.input(Input::ServerDown);
        }
    }

    /// The overlay is isolated: open a new signaling session for a fresh sample.
    fn bootstrap(self: &Rc<Self>) {
        let (urls, identity, room, timeout) = {
            let mut s = self.state.borrow_mut();
            if s.bootstrapping || s.left {
                return;
            }
            s.bootstrapping = true;
            (
                s.config.signaling.clone(),
                s.identity.clone(),
                s.config.room.clone(),
                s.config.join_timeout_ms,
            )
        };
        self.drop_server();
        let weak = Rc::downgrade(self);
        spawn_local(async move {
            let result = SignalingClient::connect_any(&urls, &identity, &room, timeout).await;
            let Some(shared) = weak.upgrade() else { return };
            match result {
                Ok((client, contacts)) => shared.attach_server(client, contacts),
                Err(e) => {
                    shared.state.borrow_mut().bootstrapping = false;
                    // The overlay asks again after its back-off.
                    shared.emit(NodeEvent::Error {
                        code: "bootstrap-failed",
                        message: e.to_string(),
                        peer: None,
                    });
                }
            }
        });
    }
}

/// Closes a connection once what it has queued is sent (at most ~2 s).
async fn close_after_flush(conn: Rc<WebConnection>) {
    let deadline = now_ms() + 2_000;
    while conn.is_open() && conn.buffered_amount() > 0 && now_ms() < deadline {
        TimeoutFuture::new(20).await;
    }
    conn.close();
}
