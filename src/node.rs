//! A node: one member of the overlay, with real WebRTC connections, a signaling client
//! and a timer — in a browser page or in a native process.
//!
//! This module is the public face ([`Node`], [`NodeConfig`], [`NodeEvent`], …); the event
//! loop behind it is `driver.rs`, written once over a private `Platform` trait
//! (`platform.rs`) with two implementations chosen by target: `web.rs` (`web-sys`,
//! `gloo-timers`, the page's event loop) and `native.rs` (webrtc-rs, tokio; feature
//! `native`). The browser and a native process therefore run the same code and make the
//! same decisions; only the transports and the clock differ.
//!
//! A node is single-threaded. In the browser that is the page's event loop; natively,
//! [`Node::join`] and everything after it must run inside a `tokio::task::LocalSet` (on
//! any runtime; a current-thread runtime carries many nodes). Many nodes can live in one
//! page or process: they share nothing but its count of peer connections.

use std::rc::Rc;

use futures_channel::mpsc;

use crate::id::{Identity, PeerId};
use crate::overlay::{self, Input};
use crate::transport::{ConnLimits, IceServer};

mod driver;
mod platform;

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod native;
#[cfg(target_arch = "wasm32")]
mod web;

use driver::{Shared, CHANNEL_APP};
use platform::Platform;

/// The platform this build runs on.
#[cfg(target_arch = "wasm32")]
type Current = web::Web;
/// The platform this build runs on.
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
type Current = native::Native;

/// Everything a node needs to start. One home for the driver's settings; the overlay's
/// own live in [`overlay::Config`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Signaling server URLs (`ws://…/ws`), tried in order.
    pub signaling: Vec<String>,
    /// The room to join.
    pub room: String,
    /// The room's secret: only peers that know it become neighbours or DHT links, and
    /// broadcasts and routed messages are encrypted under keys derived from it and the
    /// room's name; the signaling server is given a hash of the room's name instead of
    /// the name, and never the secret (see `overlay::room`). A peer with another secret
    /// gets [`NodeEvent::Error`] `bad-room-secret`. Default none (an open room).
    pub secret: Option<String>,
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
    /// Where a native node's connections bind and how they gather ICE candidates: what a
    /// browser decides for itself and a process must be told. Default
    /// [`NativeConfig::default`](crate::transport::native::NativeConfig::default) (every
    /// interface, mDNS names resolved); tests use `NativeConfig::loopback()`.
    #[cfg(all(feature = "native", not(target_arch = "wasm32")))]
    pub native: crate::transport::native::NativeConfig,
}

impl NodeConfig {
    /// A configuration with the defaults for everything but the servers and the room.
    pub fn new(signaling: Vec<String>, room: impl Into<String>) -> Self {
        NodeConfig {
            signaling,
            room: room.into(),
            secret: None,
            ice_servers: Vec::new(),
            identity: None,
            // Hybrid (the overlay's default): `send` reaches any peer of the room. Pick
            // unstructured to save the DHT links' connections when only broadcasting.
            overlay: overlay::Config::default(),
            // Room for the largest frame (a direct message's 256 KiB piece), no more.
            limits: ConnLimits {
                max_message: crate::wire::MAX_DATA_FRAME_LEN,
                ..ConnLimits::default()
            },
            join_timeout_ms: 10_000,
            server_ping_ms: 20_000,
            announce_topology_ms: None,
            #[cfg(all(feature = "native", not(target_arch = "wasm32")))]
            native: crate::transport::native::NativeConfig::default(),
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
    /// A direct message for this node ([`Node::send`] at its sender), each at most once.
    Message {
        /// Its sender (authenticated: the data channel's DTLS, or the routed frame's path
        /// as told by the relays).
        from: PeerId,
        /// The bytes.
        data: Vec<u8>,
        /// Overlay hops it travelled (1 from a neighbour).
        hops: u8,
    },
    /// A request for this node ([`Node::request`] at its sender), each at most once; answer
    /// it with [`Node::respond`]`(from, id, …)`.
    Request {
        /// The requester.
        from: PeerId,
        /// Its id, to pass to [`Node::respond`].
        id: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The picture of the network changed (an announcement arrived, or a neighbour came
    /// or went); read it with [`Node::topology`].
    TopologyChanged,
    /// `peer` runs a build of rhizome whose wire format is not ours: it was disconnected
    /// and is not dialled again for a while. Reported once per peer; update one side.
    IncompatiblePeer {
        /// The peer.
        peer: PeerId,
        /// The wire version it speaks.
        their_version: u8,
        /// The wire version this build speaks ([`crate::wire::WIRE_VERSION`]).
        our_version: u8,
    },
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
    Signaling(#[from] crate::transport::signaling_types::SignalingError),
    /// The node has left.
    #[error("the node has left the overlay")]
    Left,
    /// The overlay refused a command.
    #[error(transparent)]
    Overlay(#[from] overlay::OverlayError),
    /// The node's mode does not allow this (a broadcast in structured mode).
    #[error("not available in {0:?} mode")]
    Mode(overlay::dht::Mode),
}

/// Why [`Node::send`] failed. Each has a stable [`code`](SendError::code) (the JS API's
/// `RhizomeError.code`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The node left (before or while sending).
    #[error("the node has left the overlay")]
    Left,
    /// Addressed to this node itself.
    #[error("cannot send a message to this node itself")]
    SelfTarget,
    /// Over the limit: [`wire::MAX_MESSAGE_LEN`](crate::wire::MAX_MESSAGE_LEN) for a
    /// message, [`MAX_DIRECT_PAYLOAD`](overlay::dht::MAX_DIRECT_PAYLOAD) for a request or
    /// response.
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// What was measured.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer is not a neighbour and unstructured mode cannot route to others.
    #[error("the peer is not a neighbour, and unstructured mode routes to no one else (use mode \"hybrid\" or \"structured\")")]
    Mode,
    /// No acknowledgement before the deadline.
    #[error("no acknowledgement from the peer in time")]
    Timeout,
    /// Routing found no way to the peer (it left, or was never in the room), or the
    /// connection to it closed before it acknowledged.
    #[error("the peer is unreachable")]
    Unreachable,
    /// Too much is waiting to be sent: retry once earlier sends have resolved.
    #[error("too many messages waiting to be sent")]
    Backpressure,
}

impl SendError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SendError::Left => "left",
            SendError::SelfTarget => "bad-peer-id",
            SendError::TooLarge { .. } => "too-large",
            SendError::Mode => "mode",
            SendError::Timeout => "timeout",
            SendError::Unreachable => "unreachable",
            SendError::Backpressure => "backpressure",
        }
    }

    /// The node's view of the overlay's answer.
    pub(crate) fn from_dht(e: overlay::dht::DhtError) -> Self {
        use overlay::dht::DhtError as E;
        match e {
            E::Disabled(_) => SendError::Mode,
            E::SelfTarget => SendError::SelfTarget,
            E::TooLarge { what, len, max } => SendError::TooLarge { what, len, max },
            E::Timeout => SendError::Timeout,
            // Not joined means left (a node joins before it exists); ids are unique.
            E::NotJoined | E::DuplicateId(_) => SendError::Left,
            E::Unreachable | E::NotFound | E::Record(_) => SendError::Unreachable,
        }
    }
}

/// One connection of a node, in [`NodeStats::links`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LinkStats {
    /// The peer at the other end.
    pub peer: PeerId,
    /// Its role: `"active"` (active view), `"dht"` (a DHT link) or `"other"` (being
    /// opened, or not yet placed by the overlay).
    pub kind: &'static str,
    /// Whether its data channel is open.
    pub open: bool,
    /// Round-trip time in ms, from the transport's ICE statistics (`getStats()` in the
    /// browser), re-read at most every 2 s; `None` until measured.
    pub rtt_ms: Option<f64>,
    /// The selected ICE candidate pair's types, `local/remote` (`host`, `srflx`,
    /// `prflx` or `relay` each; `relay` on either side means through a TURN server),
    /// read with the round-trip time; `None` until known.
    pub candidate_pair: Option<String>,
    /// Bytes handed to it (all frames).
    pub bytes_sent: u64,
    /// Bytes received on it (all frames).
    pub bytes_received: u64,
}

/// Counters a node reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NodeStats {
    /// Peers in the active view.
    pub neighbors: usize,
    /// Peers in the passive view.
    pub passive: usize,
    /// Open or opening connections of this node.
    pub connections: usize,
    /// `RTCPeerConnection`s created by this page so far, all nodes together (Chromium
    /// allows ~500 per page lifetime); natively, webrtc-rs connections of this process.
    pub page_connections_created: u32,
    /// `RTCPeerConnection`s of this page that count against Chromium's limit of 500: not
    /// yet garbage-collected (closed ones included), all nodes together; 0 natively. This
    /// node makes none for offers from unknown peers above 400, none at all above 496.
    pub page_connections_alive: u32,
    /// Offers from unknown peers this node dropped without making a connection (too many
    /// such handshakes at once, or the page near its limit).
    pub offers_refused: u64,
    /// Signals for the server that were dropped: their attempt ended while they waited for
    /// the pace, or the queue was full.
    pub signals_dropped: u64,
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
    /// Reconnections to the signaling server tried after its session was lost.
    pub reconnects: u64,
    /// Whether a signaling session is open.
    pub server_connected: bool,
    /// Application broadcasts sent by this node.
    pub broadcasts_sent: u64,
    /// Direct messages this node sent ([`Node::send`]).
    pub messages_sent: u64,
    /// Direct messages this node received.
    pub messages_received: u64,
    /// Bytes handed to data channels (all frames).
    pub bytes_sent: u64,
    /// Bytes received on data channels (all frames).
    pub bytes_received: u64,
    /// Each connection: role, round-trip time and traffic, sorted by peer.
    pub links: Vec<LinkStats>,
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
    /// Its DHT links as it announced them (this node's own for `"self"`).
    pub dht: Vec<PeerId>,
}

/// One link in [`Topology::links`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopologyLink {
    /// One end (the smaller id).
    pub a: PeerId,
    /// The other end.
    pub b: PeerId,
    /// `"active"` (both in each other's active view) or `"dht"` (a DHT link).
    pub kind: &'static str,
    /// Round-trip time in ms: measured here for this node's own links, else as one of
    /// its ends announced it; `None` when unknown.
    pub rtt_ms: Option<f64>,
}

/// The network as this node sees it: itself, its views, and everything announced.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Topology {
    /// This node.
    pub me: PeerId,
    /// Every known peer.
    pub peers: Vec<TopologyPeer>,
    /// Active links: this node's own, and those both ends announced.
    pub edges: Vec<(PeerId, PeerId)>,
    /// Active and DHT links with their round-trip times, sorted (`edges` are the
    /// active ones).
    pub links: Vec<TopologyLink>,
}

/// A running node. Dropping it does not stop it; call [`Node::leave`].
#[derive(Clone)]
pub struct Node {
    shared: Rc<Shared<Current>>,
    id: PeerId,
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
        let id = identity.peer_id();
        let (shared, rx) = Shared::<Current>::start(config, identity).await?;
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
            let mode = s.overlay.config().mode;
            if mode == overlay::dht::Mode::Structured {
                return Err(NodeError::Mode(mode));
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

    /// Bytes sent to `peer` over this node's connection with it that have not left yet:
    /// the transport's queue plus the WebRTC stack's buffer; 0 without a connection
    /// (messages routed through other peers queue on theirs). With [`Node::drained`], the
    /// backpressure signal for streaming: send while this is under a limit of your
    /// choice, then wait.
    pub fn buffered_amount(&self, peer: PeerId) -> usize {
        self.shared.buffered_amount(peer)
    }

    /// Resolves once nothing sent to `peer` waits in this node's own queue for its
    /// connection: everything is with the WebRTC stack, whose buffer holds at most the
    /// transport's high water mark (256 KiB in a browser, 1 MiB natively) and the chunk
    /// that crossed it. At once when the queue is empty or there is no connection (it
    /// also resolves if the connection goes).
    pub fn drained(&self, peer: PeerId) -> impl std::future::Future<Output = ()> + 'static {
        let waiter = self.shared.drain_waiter(peer);
        async move {
            if let Some(rx) = waiter {
                let _ = rx.await;
            }
        }
    }

    /// Sends `data` to the peer `to`, anywhere in the room, and resolves with the hops it
    /// took once `to` acknowledged it.
    ///
    /// Up to [`wire::MAX_MESSAGE_LEN`](crate::wire::MAX_MESSAGE_LEN) (16 MiB). To a peer
    /// with an open connection (a neighbour or DHT link) it goes straight over it; to any
    /// other it is routed through the DHT (structured or hybrid mode), in fragments when
    /// it is over [`MAX_DIRECT_PAYLOAD`](overlay::dht::MAX_DIRECT_PAYLOAD) (see
    /// `overlay::direct`). The message is handed
    /// over when this is called, so messages leave in call order; the future only waits
    /// for the outcome. Refused at once with [`SendError::Backpressure`] while
    /// 1,024 sends (`MAX_SENDS_IN_FLIGHT`) wait or the connection's
    /// queue is full, so memory stays bounded.
    pub fn send(
        &self,
        to: PeerId,
        data: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<u8, SendError>> + 'static {
        let started = self.shared.start_send(to, data);
        async move {
            match started {
                Ok(rx) => rx.await.unwrap_or(Err(SendError::Left)),
                Err(e) => Err(e),
            }
        }
    }

    /// Sends a request to `to` and resolves with its response (see
    /// [`NodeEvent::Request`]). Requests are routed through the DHT even to a neighbour,
    /// so they need structured or hybrid mode ([`SendError::Mode`] otherwise) and carry
    /// at most [`MAX_DIRECT_PAYLOAD`](overlay::dht::MAX_DIRECT_PAYLOAD) bytes each way.
    /// Fails with [`SendError::Timeout`] after `timeout_ms` if given, else after the
    /// DHT's deadlines (about 8 s to arrive, then 10 s for the answer).
    pub fn request(
        &self,
        to: PeerId,
        data: Vec<u8>,
        timeout_ms: Option<u32>,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, SendError>> + 'static {
        let started = self.shared.start_request(to, data, timeout_ms);
        async move {
            match started {
                Ok(rx) => rx.await.unwrap_or(Err(SendError::Left)),
                Err(e) => Err(e),
            }
        }
    }

    /// Answers the request `id` from `to` ([`NodeEvent::Request`]) with `data`.
    pub fn respond(&self, to: PeerId, id: u64, data: Vec<u8>) -> Result<(), SendError> {
        self.shared.respond(to, id, data)
    }

    /// The overlay mode this node runs in.
    pub fn mode(&self) -> overlay::dht::Mode {
        self.shared.state.borrow().overlay.config().mode
    }

    /// The network as this node knows it: its own views, plus — when topology
    /// announcements are on — every peer and link the announcements describe.
    pub fn topology(&self) -> Topology {
        let mut s = self.shared.state.borrow_mut();
        s.map.expire(Current::now_ms());
        let me = self.id;
        let active: Vec<PeerId> = s.overlay.active_view().to_vec();
        let mut peers: Vec<TopologyPeer> = Vec::new();
        let mut seen = crate::collections::BTreeSet::new();
        let announced = |id: PeerId, view: &'static str| {
            let a = s.map.peers().find(|(p, _)| **p == id).map(|(_, a)| a);
            TopologyPeer {
                id,
                view,
                neighbors: a.map(|a| a.active.clone()).unwrap_or_default(),
                delivered: a.map(|a| a.delivered).unwrap_or(0),
                frames_sent: a.map(|a| a.frames_sent).unwrap_or(0),
                frames_received: a.map(|a| a.frames_received).unwrap_or(0),
                dht: a.map(|a| a.dht.clone()).unwrap_or_default(),
            }
        };
        let mut me_entry = announced(me, "self");
        me_entry.neighbors = active.clone();
        me_entry.dht = s
            .overlay
            .dht_links()
            .into_iter()
            .filter(|p| !active.contains(p))
            .collect();
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
        let mut edges: crate::collections::BTreeSet<(PeerId, PeerId)> = s
            .map
            .edges()
            .into_iter()
            .filter(|(a, b)| *a != me && *b != me)
            .collect();
        for p in &active {
            edges.insert(if me < *p { (me, *p) } else { (*p, me) });
        }
        let mut dht_edges: crate::collections::BTreeSet<(PeerId, PeerId)> = s
            .map
            .dht_edges()
            .into_iter()
            .filter(|(a, b)| *a != me && *b != me)
            .collect();
        for p in &peers[0].dht {
            dht_edges.insert(if me < *p { (me, *p) } else { (*p, me) });
        }
        let rtt = |a: &PeerId, b: &PeerId| {
            let other = if *a == me {
                Some(b)
            } else if *b == me {
                Some(a)
            } else {
                None
            };
            match other {
                Some(p) => s.link_rtt_ms(p),
                None => s.map.rtt_us(a, b).map(|us| f64::from(us) / 1000.0),
            }
        };
        let mut links: Vec<TopologyLink> = edges
            .iter()
            .map(|(a, b)| (a, b, "active"))
            .chain(dht_edges.iter().map(|(a, b)| (a, b, "dht")))
            .map(|(a, b, kind)| TopologyLink {
                a: *a,
                b: *b,
                kind,
                rtt_ms: rtt(a, b),
            })
            .collect();
        crate::collections::sort_by(&mut links, |x, y| {
            (x.a, x.b, x.kind).cmp(&(y.a, y.b, y.kind))
        });
        Topology {
            me,
            peers,
            edges: edges.into_iter().collect(),
            links,
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

    /// Peers this node has a connection with, open or being opened: its active view, its
    /// DHT links, and handshakes under way.
    pub fn connections(&self) -> Vec<PeerId> {
        self.shared.state.borrow().overlay.connections().collect()
    }

    /// The ICE servers this node's next connections use: the configured
    /// [`NodeConfig::ice_servers`], then those the signaling server offered (with TURN
    /// credentials, refreshed by the server before they expire).
    pub fn ice_servers(&self) -> Vec<IceServer> {
        self.shared.state.borrow().config.ice_servers.clone()
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
            page_connections_created: Current::connections_created(),
            page_connections_alive: Current::connections_alive(),
            offers_refused: s.offers_refused,
            signals_dropped: s.pacer.dropped,
            connects: o.connects,
            delivered: o.delivered,
            duplicates: o.duplicates,
            frames_sent: o.frames_sent,
            frames_received: o.frames_received,
            relayed: o.relayed,
            bootstraps: o.bootstraps,
            reconnects: o.reconnects,
            server_connected: s.server.is_some(),
            broadcasts_sent: s.broadcasts_sent,
            messages_sent: s.messages_sent,
            messages_received: s.messages_received,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            links: s.links(),
        }
    }

    /// Closes the signaling session for good: the node carries on through the overlay and
    /// does not reconnect (unless it ends up isolated, when it asks the server for a new
    /// sample). For applications that want to stop using the server once the overlay is
    /// up, and for tests. (A session the server or the network closes is reopened in the
    /// background, with backoff.)
    pub fn disconnect_server(&self) {
        self.shared.drop_server(false);
    }

    /// Closes the connection to `peer` (as a network failure would); the overlay repairs.
    pub fn drop_connection(&self, peer: PeerId) -> bool {
        self.shared.remove_connection(peer)
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
            .and_then(|c| c.conn.clone());
        conn.map(|c| c.send(bytes).is_ok()).unwrap_or(false)
    }

    /// Leaves the overlay: says goodbye to the neighbours, closes every connection and
    /// the signaling session. Resolves when the goodbyes are flushed and the connections
    /// they went on are closed (at most ~1 s).
    pub async fn leave(&self) {
        if self.shared.state.borrow().left {
            return;
        }
        self.shared.input(Input::Leave);
        // Give the DISCONNECT frames a moment to leave, and their connections to close.
        let deadline = Current::now_ms() + 1_000;
        loop {
            let (pending, flushing) = {
                let s = self.shared.state.borrow();
                let pending: usize = s
                    .conns
                    .values()
                    .filter_map(|c| c.conn.as_ref())
                    .map(|c| c.buffered_amount())
                    .sum();
                (pending, s.flushing)
            };
            if (pending == 0 && flushing == 0) || Current::now_ms() >= deadline {
                break;
            }
            Current::sleep(20).await;
        }
        let mut s = self.shared.state.borrow_mut();
        s.left = true;
        for conn in std::mem::take(&mut s.conns)
            .into_values()
            .filter_map(|c| c.conn)
        {
            conn.close();
        }
        s.timer = None;
        s.announcer = None;
        s.sends.clear(); // their `send`s reject with `Left`
        s.server = None;
        s.server_stop = None;
        s.server_session += 1;
        let _ = s.events.unbounded_send(NodeEvent::Left);
        s.events.close_channel();
    }
}
