//! The event loop of a node, written once for the browser and for a native process.
//!
//! The overlay core decides everything; this driver only carries out its [`Output`]s and
//! feeds back what the transports report, in the order it happens. It is single-threaded
//! and re-entrancy-free: every input goes through [`Shared::input`], which borrows the
//! state, runs the overlay, and performs the outputs; anything that has to wait (a
//! connection being made, a signal being applied, a timer, a socket) is spawned as a task
//! that calls `input` again later. What differs between the browser and a native process
//! (the connection and signaling types, the clock, tasks and timers) comes from the
//! [`Platform`] the state is generic over; nothing else does.
//!
//! Connections are keyed by the remote peer. One connection per pair is enough because
//! the transport does perfect negotiation (simultaneous connects converge on one
//! peer connection per side); a remote peer that restarted (a reload) shows up as an
//! offer with a newer attempt id on an open connection, which replaces the old one, while
//! an offer of an attempt no newer than the one held is a replay and is ignored (attempt
//! ids grow with the sender's clock; `guard.rs`). Offers from unknown peers, the page's
//! connection budget and the pace of signals to the server are bounded there too. A
//! connection is registered at once and made by a task (natively its constructor is
//! async); signals that arrive meanwhile wait in its queue and are applied, one at a time
//! in arrival order, once it exists.
//!
//! The signaling session stays open while the node runs — it costs the server one idle
//! WebSocket, pinged every `server_ping_ms` — but nothing depends on it: when it closes,
//! the overlay is told (`ServerDown`) and signals go through the overlay instead. A new
//! session is opened only when the overlay asks for a re-bootstrap: because it is isolated,
//! or because it may be in a component of its own (see `membership.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_channel::{mpsc, oneshot};
use futures_util::future::{select, Either};
use futures_util::StreamExt;

use super::platform::{Connection, Platform, SignalSender, SignalingSession};
use super::{NodeConfig, NodeEvent, SendError};
use crate::collections::BTreeMap;
use crate::id::{Identity, PeerId};
use crate::overlay::dht::{Command, DhtEvent};
use crate::overlay::{self, Event, Input, Output, Overlay};
use crate::signal::{attempt_id, SignalPayload, SignedEnvelope};
use crate::topology::{
    Announcement, Hop, NetworkMap, ANNOUNCEMENT_VERSION, MAX_ANNOUNCED_DHT_LINKS,
    MAX_ANNOUNCED_HOPS, MAX_ANNOUNCED_NEIGHBORS,
};
use crate::transport::guard::{self, Admit, Claim, OfferVerdict};
use crate::transport::signaling_types::SignalingEvent;
use crate::transport::{ConnEvent, IceServer};
use crate::wire::MsgId;
/// A connection that did not open this long after it was registered, although the peer
/// answered, counts as a failed ICE negotiation (`ice-failed`).
pub(super) const ICE_FAILED_AFTER_MS: u64 = 5_000;
/// `ice-failed` is raised at most once per peer in this long.
pub(super) const ICE_FAILED_REPEAT_MS: u64 = 3_600_000;
/// Peers remembered for that; beyond, the oldest are forgotten (a warning repeats).
const MAX_ICE_FAILED_REMEMBERED: usize = 1024;
/// Most signals (offer or answer, candidates) taken from the remote side for one
/// connection; the rest are dropped.
const MAX_SIGNALS_PER_ATTEMPT: u32 = 128;

/// One connection, registered as soon as it is decided on.
pub(super) struct Conn<P: Platform> {
    /// The transport's connection; `None` while it is being made.
    pub(super) conn: Option<Rc<P::Conn>>,
    /// Distinguishes this connection from an earlier one to the same peer.
    generation: u64,
    /// Our attempt id, sealed into every envelope we send for it.
    attempt: u64,
    /// The remote side's latest attempt id, once it has sent something.
    remote_attempt: Option<u64>,
    /// Made for an offer from a peer this node did not ask for and does not know.
    unsolicited: bool,
    /// When it was registered (`Platform::now_ms`).
    since: u64,
    /// Signals for the transport, applied one at a time in arrival order (queued until
    /// the connection exists).
    signals: mpsc::UnboundedSender<SignalPayload>,
    /// Signals taken for this connection so far (at most [`MAX_SIGNALS_PER_ATTEMPT`]).
    signals_taken: u32,
    open: bool,
    /// Bytes handed to this connection and received on it.
    bytes_sent: u64,
    bytes_received: u64,
    /// `Node::drained` callers waiting for the transport's queue to empty (resolved on
    /// `ConnEvent::Drained`, or by being dropped with the connection).
    drain_waiters: Vec<oneshot::Sender<()>>,
}

/// Who waits for the outcome of a direct message or a request.
pub(super) enum Waiter {
    /// `Node::send`: the hops, once acknowledged.
    Send(oneshot::Sender<Result<u8, SendError>>),
    /// `Node::request`: the response.
    Request(oneshot::Sender<Result<Vec<u8>, SendError>>),
}

/// Most direct messages waiting for an acknowledgement at once; beyond, `send` refuses
/// with `backpressure`. Bounds the driver's bookkeeping and the DHT's retry copies
/// (routed messages are at most 60 KiB each).
pub(super) const MAX_SENDS_IN_FLIGHT: usize = 1024;

/// First byte of every broadcast payload: which stream it belongs to.
pub(super) const CHANNEL_APP: u8 = 0;
const CHANNEL_TOPOLOGY: u8 = 1;

/// Everything a node holds; borrowed for the length of one step, never across an await.
pub(super) struct State<P: Platform> {
    pub(super) identity: Identity,
    pub(super) map: NetworkMap,
    recent: VecDeque<Hop>,
    pub(super) announcer: Option<P::Interval>,
    pub(super) broadcasts_sent: u64,
    pub(super) last_sent: Option<MsgId>,
    pub(super) bytes_sent: u64,
    pub(super) bytes_received: u64,
    pub(super) config: NodeConfig,
    pub(super) overlay: Overlay,
    pub(super) conns: BTreeMap<PeerId, Conn<P>>,
    /// Connections let go of that are still sending what they had queued.
    pub(super) flushing: usize,
    next_generation: u64,
    pub(super) server: Option<<P::Signaling as SignalingSession>::Sender>,
    /// Dropping it ends the current session's task, which closes the session.
    pub(super) server_stop: Option<oneshot::Sender<()>>,
    pub(super) server_session: u64,
    bootstrapping: bool,
    pub(super) timer: Option<P::Timeout>,
    pub(super) events: mpsc::UnboundedSender<NodeEvent>,
    pub(super) left: bool,
    /// Direct messages waiting for their acknowledgement, by the id given to the overlay;
    /// dropping one (on leave) rejects its `send` with `left`.
    pub(super) sends: BTreeMap<u64, Waiter>,
    next_send: u64,
    /// Direct messages handed to the overlay, and received.
    pub(super) messages_sent: u64,
    pub(super) messages_received: u64,
    /// Recent peers' latest attempt ids, and whether we had a link with them.
    memory: guard::Memory,
    /// The pace of our signals to the server.
    pub(super) pacer: guard::Pacer,
    /// Offers from unknown peers dropped before a connection was made.
    pub(super) offers_refused: u64,
    /// The application's own ICE servers (`config.ice_servers` as given); the config's
    /// list is these merged with what the signaling server offers.
    own_ice: Vec<IceServer>,
    /// When an `ice-failed` error was last raised for each peer (at most once an hour).
    ice_failed_at: BTreeMap<PeerId, u64>,
}

impl<P: Platform> State<P> {
    /// The measured round-trip time of the open connection to `peer`, in ms.
    pub(super) fn link_rtt_ms(&self, peer: &PeerId) -> Option<f64> {
        self.conns
            .get(peer)
            .filter(|c| c.open)
            .and_then(|c| c.conn.as_ref())
            .and_then(|c| c.rtt_ms())
    }

    /// Every connection of this node with its role, round-trip time and traffic, sorted
    /// by peer (for `Node::stats`).
    pub(super) fn links(&self) -> Vec<super::LinkStats> {
        let active = self.overlay.active_view();
        let dht = self.overlay.dht_links();
        let mut links: Vec<super::LinkStats> = self
            .conns
            .iter()
            .map(|(peer, c)| super::LinkStats {
                peer: *peer,
                kind: if active.contains(peer) {
                    "active"
                } else if dht.contains(peer) {
                    "dht"
                } else {
                    "other"
                },
                open: c.open,
                rtt_ms: self.link_rtt_ms(peer),
                candidate_pair: c
                    .conn
                    .as_ref()
                    .filter(|_| c.open)
                    .and_then(|c| c.candidate_pair()),
                bytes_sent: c.bytes_sent,
                bytes_received: c.bytes_received,
            })
            .collect();
        crate::collections::sort_by_key(&mut links, |l| l.peer);
        links
    }

    /// The round-trip time to `peer` in whole microseconds, as announcements carry it.
    /// Takes the ICE servers the current signaling server offers (replacing what an
    /// earlier server or `welcome` offered) into use for every later connection: the
    /// application's own first, then the server's that the application does not name.
    fn use_server_ice(&mut self, offered: Vec<IceServer>) {
        self.config.ice_servers = merge_ice(&self.own_ice, offered);
    }

    fn link_rtt_us(&self, peer: &PeerId) -> Option<u32> {
        self.link_rtt_ms(peer)
            .map(|ms| (ms * 1000.0).round().clamp(0.0, u32::MAX as f64) as u32)
    }
}

/// The node's state, shared by the tasks that feed it.
pub(crate) struct Shared<P: Platform> {
    pub(super) state: RefCell<State<P>>,
}

/// A fresh random number: attempt ids and overlay seeds only need to differ, not to be
/// secret, so a failing random source falls back to the clock and a counter.
pub(super) fn random_u64<P: Platform>() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        return P::now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n;
    }
    u64::from_le_bytes(b)
}

/// A fresh attempt id ([`attempt_id`]: the wall clock in the high bits), strictly larger
/// than every earlier one of this page or process.
pub(super) fn next_attempt<P: Platform>() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let fresh = attempt_id(P::wall_ms(), random_u64::<P>());
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = fresh.max(last.saturating_add(1));
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(now) => last = now,
        }
    }
}

/// Whether a signal we queued for the server is still worth sending: its attempt is the
/// connection's current one, and a candidate only while the connection is not open.
fn signal_wanted<P: Platform>(
    conns: &BTreeMap<PeerId, Conn<P>>,
    envelope: &SignedEnvelope,
    candidate: bool,
) -> bool {
    conns
        .get(&envelope.to)
        .is_some_and(|c| c.attempt == envelope.attempt && !(candidate && c.open))
}

impl<P: Platform> Shared<P> {
    /// Joins the room on a signaling server and starts the node's tasks.
    pub(super) async fn start(
        mut config: NodeConfig,
        identity: Identity,
    ) -> Result<(Rc<Self>, mpsc::UnboundedReceiver<NodeEvent>), super::NodeError> {
        // The platform prepares the first connection in a task of its own, which runs once
        // this one waits for the server (the session's socket is being opened by then).
        if let Some(secret) = &config.secret {
            // The key from the real name; the server sees only the name's hash.
            config.overlay.room_key = Some(overlay::room::RoomKey::derive(&config.room, secret));
            config.room = overlay::room::server_room(&config.room);
        }
        let prewarm = config.clone();
        P::spawn_local(async move { P::prewarm(&prewarm) });
        let (client, contacts) = P::join_server(
            config.signaling.clone(),
            identity.clone(),
            config.room.clone(),
            config.join_timeout_ms,
        )
        .await?;
        let (events, rx) = mpsc::unbounded();
        let own_ice = config.ice_servers.clone();
        let overlay = Overlay::new(identity.clone(), config.overlay.clone(), random_u64::<P>());
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
                conns: BTreeMap::new(),
                flushing: 0,
                next_generation: 1,
                server: None,
                server_stop: None,
                server_session: 0,
                bootstrapping: false,
                timer: None,
                events,
                left: false,
                sends: BTreeMap::new(),
                next_send: 1,
                messages_sent: 0,
                messages_received: 0,
                memory: guard::Memory::default(),
                pacer: guard::Pacer::new(P::now_ms()),
                offers_refused: 0,
                own_ice,
                ice_failed_at: BTreeMap::new(),
            }),
        });
        shared.attach_server(client, contacts);
        {
            let s = shared.state.borrow();
            if needs_ice_warning(&s.config.signaling, &s.config.ice_servers) {
                warn_once::<P>();
            }
        }
        shared.start_announcing();
        Ok((shared, rx))
    }

    /// Runs one input through the overlay and carries out what it asks.
    pub(super) fn input(self: &Rc<Self>, input: Input) {
        let outputs = {
            let mut s = self.state.borrow_mut();
            if s.left {
                return;
            }
            s.overlay.handle(P::now_ms(), input)
        };
        for out in outputs {
            self.perform(out);
        }
    }

    pub(super) fn emit(&self, ev: NodeEvent) {
        let _ = self.state.borrow().events.unbounded_send(ev);
    }

    fn perform(self: &Rc<Self>, out: Output) {
        match out {
            Output::Send { to, frame } => {
                let conn = self
                    .state
                    .borrow()
                    .conns
                    .get(&to)
                    .and_then(|c| c.conn.clone());
                match conn.map(|c| c.send(&frame)) {
                    Some(Ok(())) => {
                        let mut s = self.state.borrow_mut();
                        s.bytes_sent += frame.len() as u64;
                        if let Some(c) = s.conns.get_mut(&to) {
                            c.bytes_sent += frame.len() as u64;
                        }
                    }
                    Some(Err(e)) => {
                        self.fail_data_frame(&frame, &e);
                        self.emit(NodeEvent::Error {
                            code: "send-failed",
                            message: e.to_string(),
                            peer: Some(to),
                        })
                    }
                    // The overlay already heard (or will hear) that the link is gone.
                    None => {}
                }
            }
            Output::Connect { peer, .. } => {
                // One connection per pair: perfect negotiation makes an attempt already
                // under way (ours, or the remote's that we are answering) serve both
                // sides, and replacing it would strand the remote's half. The overlay
                // does not see an inbound attempt until it opens, so it may ask for one.
                let existing = self.state.borrow().conns.get(&peer).map(|c| c.open);
                match existing {
                    None => {
                        self.open_connection(peer, true, false);
                    }
                    Some(true) => self.input(Input::ConnectionUp { peer }),
                    Some(false) => {}
                }
            }
            Output::Disconnect { peer } => {
                // A connection still being made is closed by its maker, which finds
                // itself replaced.
                let conn = self.state.borrow_mut().conns.remove(&peer);
                if let Some(c) = &conn {
                    self.note_failed_ice(peer, c);
                }
                if let Some(conn) = conn.and_then(|c| c.conn) {
                    self.state.borrow_mut().flushing += 1;
                    let weak = Rc::downgrade(self);
                    P::spawn_local(async move {
                        close_after_flush::<P>(conn).await;
                        if let Some(shared) = weak.upgrade() {
                            shared.state.borrow_mut().flushing -= 1;
                        }
                    });
                }
            }
            Output::SetTimer { at } => {
                let delay = at.saturating_sub(P::now_ms()).min(u32::MAX as u64) as u32;
                let weak = Rc::downgrade(self);
                let timer = P::timeout(delay, move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.input(Input::Timer);
                    }
                });
                self.state.borrow_mut().timer = Some(timer);
            }
            Output::SendViaServer { envelope } => {
                if self.state.borrow().server.is_none() {
                    return; // lost the server between the overlay's decision and now
                }
                let candidate = matches!(
                    SignalPayload::from_text(&envelope.body),
                    Ok(SignalPayload::Candidate { .. })
                );
                {
                    let mut s = self.state.borrow_mut();
                    let s = &mut *s;
                    let conns = &s.conns;
                    s.pacer
                        .push(envelope, candidate, |e, c| signal_wanted(conns, e, c));
                }
                self.pump_signals();
            }
            Output::DeliverSignal { envelope, payload } => self.deliver_signal(envelope, payload),
            Output::RequestBootstrap => self.bootstrap(),
            Output::Event(ev) => self.app_event(ev),
        }
    }

    /// Sends what the pace allows of the signals waiting for the server, and schedules a
    /// wake-up for the rest.
    fn pump_signals(self: &Rc<Self>) {
        loop {
            let next = {
                let mut s = self.state.borrow_mut();
                let s = &mut *s;
                let Some(server) = s.server.clone() else {
                    return; // they wait for the next session
                };
                let conns = &s.conns;
                s.pacer
                    .next(P::now_ms(), |e, c| signal_wanted(conns, e, c))
                    .map(|envelope| (envelope, server))
            };
            match next {
                Ok((envelope, server)) => {
                    if server.send_signal(&envelope).is_err() {
                        // Lost the server between the overlay's decision and now.
                        self.drop_server(true);
                        return;
                    }
                }
                Err(0) => return,
                Err(ms) => {
                    let mut s = self.state.borrow_mut();
                    if !s.pacer.armed {
                        s.pacer.armed = true;
                        let weak = Rc::downgrade(self);
                        P::spawn_local(async move {
                            P::sleep(ms).await;
                            if let Some(shared) = weak.upgrade() {
                                shared.state.borrow_mut().pacer.armed = false;
                                shared.pump_signals();
                            }
                        });
                    }
                    return;
                }
            }
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
                            if !self.state.borrow_mut().map.apply(id.origin, a, P::now_ms()) {
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
            Event::IncompatiblePeer {
                peer,
                their_version,
                our_version,
            } => NodeEvent::IncompatiblePeer {
                peer,
                their_version,
                our_version,
            },
            Event::BadRoomSecret { peer } => NodeEvent::Error {
                code: "bad-room-secret",
                message: "this peer and we do not share the room's secret: disconnected".into(),
                peer: Some(peer),
            },
            Event::Dht(ev) => return self.dht_event(ev),
            Event::Error(e) => NodeEvent::Error {
                code: match e {
                    overlay::OverlayError::PayloadTooLarge(_) => "payload-too-large",
                    overlay::OverlayError::NotJoined => "not-joined",
                    overlay::OverlayError::ForeignEnvelope => "foreign-envelope",
                    overlay::OverlayError::NoSignalPath(_) => "no-signal-path",
                    overlay::OverlayError::BroadcastRateLimited => "broadcast-rate-limited",
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

    /// News from the DHT half: direct messages in, and the fate of ours. Lookups and
    /// records are not exposed yet; a request (no API yet) is left to time out.
    fn dht_event(&self, ev: DhtEvent) {
        enum Done {
            Delivered(u8),
            Response(Vec<u8>),
        }
        let (id, result) = match ev {
            DhtEvent::Direct {
                from,
                payload,
                hops,
                ..
            } => {
                self.state.borrow_mut().messages_received += 1;
                return self.emit(NodeEvent::Message {
                    from,
                    data: payload,
                    hops,
                });
            }
            DhtEvent::Request { from, id, payload } => {
                return self.emit(NodeEvent::Request {
                    from,
                    id,
                    data: payload,
                })
            }
            DhtEvent::Delivered { id, hops, .. } => (id, Ok(Done::Delivered(hops))),
            DhtEvent::Response { id, payload, .. } => (id, Ok(Done::Response(payload))),
            DhtEvent::Failed { id, error } => (id, Err(SendError::from_dht(error))),
            DhtEvent::Refused { error } => {
                return self.emit(NodeEvent::Error {
                    code: "refused",
                    message: error.to_string(),
                    peer: None,
                })
            }
            _ => return,
        };
        let waiting = self.state.borrow_mut().sends.remove(&id);
        // Nobody may be listening any more; that is fine.
        match (waiting, result) {
            (Some(Waiter::Send(tx)), Ok(Done::Delivered(hops))) => drop(tx.send(Ok(hops))),
            (Some(Waiter::Send(tx)), Err(e)) => drop(tx.send(Err(e))),
            (Some(Waiter::Request(tx)), Ok(Done::Response(data))) => drop(tx.send(Ok(data))),
            (Some(Waiter::Request(tx)), Err(e)) => drop(tx.send(Err(e))),
            _ => {}
        }
    }

    /// Sends a request (routed through the DHT, like a direct message to a non-neighbour)
    /// and returns where its response will come; with `timeout_ms`, it fails with
    /// `Timeout` after that long whatever the DHT's own deadlines.
    pub(super) fn start_request(
        self: &Rc<Self>,
        to: PeerId,
        data: Vec<u8>,
        timeout_ms: Option<u32>,
    ) -> Result<oneshot::Receiver<Result<Vec<u8>, SendError>>, SendError> {
        let (tx, rx) = oneshot::channel();
        let id = self.waiter_id(Waiter::Request(tx))?;
        if let Some(ms) = timeout_ms {
            let weak = Rc::downgrade(self);
            P::spawn_local(async move {
                P::sleep(ms).await;
                let Some(shared) = weak.upgrade() else { return };
                let waiting = shared.state.borrow_mut().sends.remove(&id);
                if let Some(Waiter::Request(tx)) = waiting {
                    let _ = tx.send(Err(SendError::Timeout));
                }
            });
        }
        self.input(Input::Dht(Command::Request {
            id,
            to,
            payload: data,
        }));
        Ok(rx)
    }

    /// Answers the request `id` from `to`.
    pub(super) fn respond(
        self: &Rc<Self>,
        to: PeerId,
        id: u64,
        data: Vec<u8>,
    ) -> Result<(), SendError> {
        let max = overlay::dht::MAX_DIRECT_PAYLOAD;
        if self.state.borrow().left {
            return Err(SendError::Left);
        }
        if data.len() > max {
            return Err(SendError::TooLarge {
                what: "response",
                len: data.len(),
                max,
            });
        }
        self.input(Input::Dht(Command::Respond {
            to,
            id,
            payload: data,
        }));
        Ok(())
    }

    /// A piece of an application's direct message that the transport refused: its `send`
    /// rejects now (`backpressure` when the queue was full) instead of at the timeout.
    fn fail_data_frame(&self, frame: &[u8], e: &crate::transport::TransportError) {
        let Ok(crate::wire::Message::Data { id, .. }) = crate::wire::decode(frame) else {
            return;
        };
        let error = match e {
            crate::transport::TransportError::Backpressure => SendError::Backpressure,
            _ => SendError::Unreachable,
        };
        let waiting = self.state.borrow_mut().sends.remove(&id);
        if let Some(Waiter::Send(tx)) = waiting {
            let _ = tx.send(Err(error));
        }
    }

    /// Registers `waiter` under a fresh id, unless the node left or too many wait.
    fn waiter_id(&self, waiter: Waiter) -> Result<u64, SendError> {
        let mut s = self.state.borrow_mut();
        if s.left {
            return Err(SendError::Left);
        }
        if s.sends.len() >= MAX_SENDS_IN_FLIGHT {
            return Err(SendError::Backpressure);
        }
        let id = s.next_send;
        s.next_send += 1;
        s.sends.insert(id, waiter);
        Ok(id)
    }

    /// Bytes accepted for `peer` and not yet sent: the transport's queue and the WebRTC
    /// stack's buffer (0 without a connection).
    pub(super) fn buffered_amount(&self, peer: PeerId) -> usize {
        let s = self.state.borrow();
        let conn = s.conns.get(&peer).and_then(|c| c.conn.as_ref());
        conn.map_or(0, |c| c.buffered_amount())
    }

    /// Where to wait for the transport's queue toward `peer` to empty; `None` when it is
    /// empty already (or there is no connection: nothing is queued).
    pub(super) fn drain_waiter(&self, peer: PeerId) -> Option<oneshot::Receiver<()>> {
        let mut s = self.state.borrow_mut();
        let c = s.conns.get_mut(&peer)?;
        if c.conn.as_ref()?.arm_drained() {
            return None;
        }
        // Callers that stopped waiting leave no sender behind.
        c.drain_waiters.retain(|tx| !tx.is_canceled());
        let (tx, rx) = oneshot::channel();
        c.drain_waiters.push(tx);
        Some(rx)
    }

    /// Hands a direct message to the overlay at once (so messages leave in call order)
    /// and returns where its outcome will come. Refuses with `backpressure` when
    /// [`MAX_SENDS_IN_FLIGHT`] wait already or the connection's send queue cannot take it.
    pub(super) fn start_send(
        self: &Rc<Self>,
        to: PeerId,
        data: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<u8, SendError>>, SendError> {
        let (tx, rx) = oneshot::channel();
        {
            let s = self.state.borrow();
            let queued = s
                .conns
                .get(&to)
                .and_then(|c| c.conn.as_ref())
                .map(|c| c.buffered_amount());
            if queued.is_some_and(|q| q + data.len() > s.config.limits.max_queued) {
                return Err(SendError::Backpressure);
            }
        }
        let id = self.waiter_id(Waiter::Send(tx))?;
        self.state.borrow_mut().messages_sent += 1;
        self.input(Input::Send {
            id,
            to,
            payload: data,
        });
        Ok(rx)
    }

    /// Registers a connection to `peer` and spawns the task that makes it, then applies
    /// its signals; another task forwards its events. Makes nothing, and returns false,
    /// when the page is too near its limit of connections for this claim (`unsolicited`:
    /// an offer from a peer we do not know).
    fn open_connection(self: &Rc<Self>, peer: PeerId, initiate: bool, unsolicited: bool) -> bool {
        let claim = if unsolicited {
            Claim::Unsolicited
        } else {
            Claim::Own
        };
        let alive = P::connections_alive();
        if !guard::page_allows(alive, claim) {
            if !initiate {
                self.state.borrow_mut().offers_refused += 1;
                return false;
            }
            // Our own attempt fails at once, as a failed connection would (later: the
            // overlay may be in the middle of a step).
            let weak = Rc::downgrade(self);
            P::spawn_local(async move {
                let Some(shared) = weak.upgrade() else { return };
                shared.emit(NodeEvent::Error {
                    code: "connection-limit",
                    message: format!(
                        "the page holds {alive} RTCPeerConnections (open, or closed and not \
                         yet garbage-collected); the browser allows {}",
                        guard::PAGE_CONNECTION_LIMIT
                    ),
                    peer: Some(peer),
                });
                shared.input(Input::ConnectionDown { peer });
            });
            return false;
        }
        let (signals, mut signal_rx) = mpsc::unbounded::<SignalPayload>();
        let (generation, making, handshake_ms) = {
            let mut s = self.state.borrow_mut();
            let generation = s.next_generation;
            s.next_generation += 1;
            let making = P::connect(s.identity.peer_id(), peer, &s.config, initiate);
            let old = s.conns.insert(
                peer,
                Conn {
                    conn: None,
                    generation,
                    attempt: next_attempt::<P>(),
                    remote_attempt: None,
                    unsolicited,
                    since: P::now_ms(),
                    signals,
                    signals_taken: 0,
                    open: false,
                    bytes_sent: 0,
                    bytes_received: 0,
                    drain_waiters: Vec::new(),
                },
            );
            if let Some(old) = old.and_then(|c| c.conn) {
                old.close();
            }
            let handshake_ms = s.overlay.config().handshake_timeout_ms;
            (generation, making, handshake_ms.min(u32::MAX as u64) as u32)
        };

        // The overlay times out the handshakes it asked for; one a peer started is unknown
        // to it until it opens, so nothing else would ever end it.
        if !initiate {
            let weak = Rc::downgrade(self);
            P::spawn_local(async move {
                P::sleep(handshake_ms).await;
                let Some(shared) = weak.upgrade() else { return };
                let stalled = shared
                    .state
                    .borrow()
                    .conns
                    .get(&peer)
                    .is_some_and(|c| c.generation == generation && !c.open);
                if stalled {
                    shared.remove_connection(peer);
                }
            });
        }

        let weak = Rc::downgrade(self);
        P::spawn_local(async move {
            let made = making.await;
            let Some(shared) = weak.upgrade() else { return };
            let (conn, events) = match made {
                Ok(made) => made,
                Err(e) => {
                    if shared.is_current(peer, generation) {
                        shared.state.borrow_mut().conns.remove(&peer);
                        shared.emit(NodeEvent::Error {
                            code: "connection-failed",
                            message: e.to_string(),
                            peer: Some(peer),
                        });
                        shared.input(Input::ConnectionDown { peer });
                    }
                    return;
                }
            };
            let conn = Rc::new(conn);
            {
                let mut s = shared.state.borrow_mut();
                match s.conns.get_mut(&peer) {
                    Some(c) if c.generation == generation => c.conn = Some(conn.clone()),
                    // Replaced or removed while it was being made.
                    _ => {
                        drop(s);
                        conn.close();
                        return;
                    }
                }
            }
            P::spawn_local(forward_events(weak.clone(), peer, generation, events));
            drop(shared);

            // Signals are applied one at a time, in the order they arrived; the queue ends
            // when the connection is removed.
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
        true
    }

    fn is_current(&self, peer: PeerId, generation: u64) -> bool {
        self.state
            .borrow()
            .conns
            .get(&peer)
            .is_some_and(|c| c.generation == generation)
    }

    /// Closes the connection to `peer`, if any, and tells the overlay it is down.
    pub(super) fn remove_connection(self: &Rc<Self>, peer: PeerId) -> bool {
        let conn = self.state.borrow_mut().conns.remove(&peer);
        let Some(c) = conn else { return false };
        self.note_failed_ice(peer, &c);
        if let Some(conn) = c.conn {
            conn.close();
        }
        self.input(Input::ConnectionDown { peer });
        true
    }

    /// A connection given up before it opened although the peer answered (it sent
    /// signals for it) and ICE had [`ICE_FAILED_AFTER_MS`] to find a path: signaling
    /// worked, so the peer is there, but no candidate pair did — typically two NATs that
    /// need a TURN relay and none is configured. Raises `ice-failed` naming the peer, at
    /// most once per peer per [`ICE_FAILED_REPEAT_MS`], so an application can tell this
    /// from a peer that is gone.
    fn note_failed_ice(&self, peer: PeerId, c: &Conn<P>) {
        let now = P::now_ms();
        if c.open || c.remote_attempt.is_none() || now.saturating_sub(c.since) < ICE_FAILED_AFTER_MS
        {
            return;
        }
        let raise = {
            let mut s = self.state.borrow_mut();
            let recent = s
                .ice_failed_at
                .get(&peer)
                .is_some_and(|&at| now.saturating_sub(at) < ICE_FAILED_REPEAT_MS);
            if !recent {
                if s.ice_failed_at.len() >= MAX_ICE_FAILED_REMEMBERED {
                    s.ice_failed_at
                        .retain(|_, at| now.saturating_sub(*at) < ICE_FAILED_REPEAT_MS);
                }
                if s.ice_failed_at.len() < MAX_ICE_FAILED_REMEMBERED {
                    s.ice_failed_at.insert(peer, now);
                }
            }
            !recent
        };
        if raise {
            let servers = self.state.borrow().config.ice_servers.len();
            self.emit(NodeEvent::Error {
                code: "ice-failed",
                message: format!(
                    "the peer answered but no ICE candidate pair worked within {} s ({} ICE \
                     server(s) configured); behind NATs that need a relay, only a TURN server helps",
                    now.saturating_sub(c.since) / 1000,
                    servers
                ),
                peer: Some(peer),
            });
        }
    }

    fn deliver_signal(self: &Rc<Self>, envelope: SignedEnvelope, payload: SignalPayload) {
        let from = envelope.from;
        let attempt = envelope.attempt;
        let is_offer = matches!(payload, SignalPayload::Offer { .. });
        let (live, remembered) = {
            let s = self.state.borrow();
            let live = s.conns.get(&from).map(|c| (c.open, c.remote_attempt));
            (live, s.memory.attempt(&from))
        };
        if is_offer {
            match guard::offer_verdict(live, remembered, attempt) {
                // Not newer than what we hold from this peer: a replay (a server or relay
                // may keep old envelopes) must not reset a working link.
                OfferVerdict::Ignore => return,
                // A newer attempt than the connection's: the remote side restarted (or
                // gave up the attempt under way and started another).
                OfferVerdict::Replace => {
                    self.remove_connection(from);
                }
                OfferVerdict::Apply => {}
            }
        } else if guard::is_leftover(live.and_then(|(_, a)| a), attempt) {
            return;
        }
        let exists = self.state.borrow().conns.contains_key(&from);
        if !exists {
            if !is_offer {
                return; // leftovers of an attempt we no longer have
            }
            if !self.admit_offer(from) {
                return;
            }
        }
        let mut s = self.state.borrow_mut();
        if let Some(c) = s.conns.get_mut(&from) {
            c.remote_attempt = Some(c.remote_attempt.map_or(attempt, |a| a.max(attempt)));
            // An attempt needs an offer or answer and a few candidates per interface; a
            // peer that sends endless candidates (each validly signed) must not grow the
            // queue of a connection that is still being made.
            if c.signals_taken >= MAX_SIGNALS_PER_ATTEMPT {
                return;
            }
            c.signals_taken += 1;
            let _ = c.signals.unbounded_send(payload);
            s.memory.note(from, attempt, false);
        }
    }

    /// Makes a connection for an offer from `from`, which we hold none with, unless it is
    /// an unknown peer and too many of those are handshaking (or the page is near its
    /// limit): then the offer is dropped and nothing is made.
    fn admit_offer(self: &Rc<Self>, from: PeerId) -> bool {
        let now = P::now_ms();
        let (known, admit) = {
            let s = self.state.borrow();
            let known = s.memory.linked(&from)
                || s.overlay.connections().any(|p| p == from)
                || s.overlay.passive_view().any(|p| p == from);
            let pending = s
                .conns
                .values()
                .filter(|c| c.unsolicited && !c.open)
                .map(|c| c.since);
            (known, guard::admit_unsolicited(pending, now))
        };
        if known {
            return self.open_connection(from, false, false);
        }
        match admit {
            Admit::Yes => {}
            Admit::No => {
                self.state.borrow_mut().offers_refused += 1;
                return false;
            }
            Admit::Evict { since } => {
                let oldest = self
                    .state
                    .borrow()
                    .conns
                    .iter()
                    .find(|(_, c)| c.unsolicited && !c.open && c.since == since)
                    .map(|(p, _)| *p);
                if let Some(p) = oldest {
                    self.remove_connection(p);
                }
            }
        }
        self.open_connection(from, false, true)
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
        let interval = P::interval(ms.max(250), announce);
        self.state.borrow_mut().announcer = Some(interval);
    }

    fn announce(self: &Rc<Self>, interval_ms: u32) {
        // Each delivery's hop is announced once (receivers keep it; see crate::topology).
        let recent = Vec::from(std::mem::take(&mut self.state.borrow_mut().recent));
        let (payload, me, announcement) = {
            let s = self.state.borrow();
            if s.left {
                return;
            }
            let o = s.overlay.stats();
            let active: Vec<PeerId> = s
                .overlay
                .active_view()
                .iter()
                .take(MAX_ANNOUNCED_NEIGHBORS)
                .copied()
                .collect();
            let a = Announcement {
                version: ANNOUNCEMENT_VERSION,
                interval_ms,
                rtt_us: active.iter().map(|p| s.link_rtt_us(p)).collect(),
                dht: s
                    .overlay
                    .dht_links()
                    .into_iter()
                    .filter(|p| !active.contains(p))
                    .take(MAX_ANNOUNCED_DHT_LINKS)
                    .collect(),
                active,
                passive: s.overlay.passive_view().count().min(u16::MAX as usize) as u16,
                delivered: o.delivered,
                frames_sent: o.frames_sent,
                frames_received: o.frames_received,
                recent,
            };
            let mut payload = vec![CHANNEL_TOPOLOGY];
            payload.extend_from_slice(&a.encode());
            (payload, s.identity.peer_id(), a)
        };
        // Our own entry, so the map has both ends of our links.
        self.state
            .borrow_mut()
            .map
            .apply(me, announcement, P::now_ms());
        // A structured node broadcasts nothing of its own, announcements included.
        let may = {
            let s = self.state.borrow();
            s.overlay.is_joined() && s.overlay.config().mode != overlay::dht::Mode::Structured
        };
        if may {
            self.input(Input::Broadcast { payload });
        }
    }

    /// Takes a joined signaling session into use: a task owns it, reads its events and
    /// pings it, until it closes or the node lets it go.
    fn attach_server(self: &Rc<Self>, mut client: P::Signaling, contacts: Vec<PeerId>) {
        let (stop_tx, mut stop) = oneshot::channel::<()>();
        let offered = client.ice_servers();
        let (session, ping_ms) = {
            let mut s = self.state.borrow_mut();
            s.use_server_ice(offered);
            s.server = Some(client.sender());
            s.server_stop = Some(stop_tx);
            s.server_session += 1;
            s.bootstrapping = false;
            (s.server_session, s.config.server_ping_ms.max(1))
        };
        self.input(Input::ServerUp);
        self.input(Input::Join { contacts });

        enum Wake {
            Event(Option<SignalingEvent>),
            Ping,
            Stop,
        }
        let weak = Rc::downgrade(self);
        P::spawn_local(async move {
            let mut ping = pin!(P::sleep(ping_ms));
            loop {
                let wake = {
                    let next = pin!(client.next_event());
                    match select(next, select(ping.as_mut(), &mut stop)).await {
                        Either::Left((ev, _)) => Wake::Event(ev),
                        Either::Right((Either::Left(_), _)) => Wake::Ping,
                        Either::Right((Either::Right(_), _)) => Wake::Stop,
                    }
                };
                let ev = match wake {
                    Wake::Stop => {
                        client.close(); // the node dropped this session
                        return;
                    }
                    Wake::Ping => {
                        let _ = client.ping();
                        ping.set(P::sleep(ping_ms));
                        continue;
                    }
                    Wake::Event(None) | Wake::Event(Some(SignalingEvent::Closed(_))) => break,
                    Wake::Event(Some(ev)) => ev,
                };
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
                    SignalingEvent::Error {
                        code,
                        message,
                        peer,
                    } => {
                        // The server could not deliver our signal to `peer`: it left the
                        // room (or never was in it), so a handshake signalled through the
                        // server cannot complete. Fail it now, as a failed connection
                        // would be, instead of at the handshake timeout.
                        let unknown = code == Some(crate::signal::ErrorCode::UnknownPeer);
                        let pending = peer.filter(|p| {
                            unknown && shared.state.borrow().conns.get(p).is_some_and(|c| !c.open)
                        });
                        shared.emit(NodeEvent::Error {
                            code: "signaling-error",
                            message: match code {
                                Some(c) => format!("{c}: {message}"),
                                None => message,
                            },
                            peer,
                        });
                        if let Some(p) = pending {
                            shared.remove_connection(p);
                        }
                    }
                    SignalingEvent::IceServers(offered) => {
                        shared.state.borrow_mut().use_server_ice(offered);
                    }
                    SignalingEvent::Closed(_) => break,
                }
            }
            if let Some(shared) = weak.upgrade() {
                if shared.state.borrow().server_session == session {
                    shared.drop_server(true);
                }
            }
        });
    }

    /// Lets the signaling session go (its task closes it) and tells the overlay: that it
    /// was lost (`reconnect`: the overlay reconnects in the background), or that the
    /// application released it on purpose.
    pub(super) fn drop_server(self: &Rc<Self>, reconnect: bool) {
        let had = {
            let mut s = self.state.borrow_mut();
            s.server_stop = None;
            s.server_session += 1;
            s.server.take().is_some()
        };
        if had {
            self.input(if reconnect {
                Input::ServerDown
            } else {
                Input::ServerReleased
            });
        }
    }

    /// The overlay wants a fresh sample of the room (it is isolated, or may be in a
    /// component of its own): open a new signaling session. The current one, if any,
    /// carries signals until the new one is joined and takes its place.
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
        let weak = Rc::downgrade(self);
        P::spawn_local(async move {
            let result = P::join_server(urls, identity, room, timeout).await;
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

/// Warns, once per page or process, that peers behind NATs will not connect.
fn warn_once<P: Platform>() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        P::warn(
            "rhizome: no ICE servers are configured and the signaling server offered none, \
             but it is not on this machine or a private network: peers behind NATs will not \
             connect to each other. Give `iceServers` (STUN and TURN) or run the signaling \
             server with --stun/--turn (see README, Deploying).",
        );
    }
}

/// Whether a node should warn that it has no ICE servers: none configured or offered,
/// and a signaling server that is neither loopback nor on a private network (so its
/// peers are probably spread over the Internet, behind NATs).
pub(super) fn needs_ice_warning(signaling: &[String], ice: &[IceServer]) -> bool {
    ice.is_empty() && signaling.iter().any(|url| !is_local_url(url))
}

/// Whether a `ws://host:port/...` URL names a loopback, private or link-local host.
fn is_local_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") || host.ends_with(".local") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

/// The application's ICE servers, then the offered ones whose URLs it does not list.
pub(super) fn merge_ice(own: &[IceServer], offered: Vec<IceServer>) -> Vec<IceServer> {
    let mut merged = own.to_vec();
    for server in offered {
        if !own.iter().any(|o| o.urls == server.urls) {
            merged.push(server);
        }
    }
    merged
}

/// Closes a connection once what it has queued is sent (at most ~2 s).
async fn close_after_flush<P: Platform>(conn: Rc<P::Conn>) {
    let deadline = P::now_ms() + 2_000;
    while conn.is_open() && conn.buffered_amount() > 0 && P::now_ms() < deadline {
        P::sleep(20).await;
    }
    conn.close_gracefully().await;
}

/// Feeds a connection's events to the node until it closes or is replaced.
async fn forward_events<P: Platform>(
    weak: Weak<Shared<P>>,
    peer: PeerId,
    generation: u64,
    mut events: mpsc::UnboundedReceiver<ConnEvent>,
) {
    // Our candidates must not overtake our first description: the remote side drops
    // signals for a connection it does not know, and only an offer creates one. webrtc-rs
    // may report candidates while it is still setting the offer locally.
    let mut described = false;
    let mut held: Vec<SignalPayload> = Vec::new();
    while let Some(ev) = events.next().await {
        let Some(shared) = weak.upgrade() else { return };
        if !shared.is_current(peer, generation) {
            return; // replaced or removed; its news is stale
        }
        match ev {
            ConnEvent::Signal(payload) => {
                let candidate = matches!(payload, SignalPayload::Candidate { .. });
                if candidate && !described {
                    held.push(payload);
                    continue;
                }
                described |= matches!(
                    payload,
                    SignalPayload::Offer { .. } | SignalPayload::Answer { .. }
                );
                let mut ready = vec![payload];
                if described {
                    ready.append(&mut held);
                }
                for payload in ready {
                    let envelope = {
                        let s = shared.state.borrow();
                        let attempt = s.conns.get(&peer).map(|c| c.attempt).unwrap_or(0);
                        SignedEnvelope::seal(&s.identity, peer, attempt, &payload)
                    };
                    shared.input(Input::SendSignal { envelope });
                }
            }
            ConnEvent::Open => {
                {
                    let mut s = shared.state.borrow_mut();
                    let mut remote = None;
                    if let Some(c) = s.conns.get_mut(&peer) {
                        c.open = true;
                        remote = c.remote_attempt;
                    }
                    if let Some(a) = remote {
                        s.memory.note(peer, a, true);
                    }
                }
                shared.input(Input::ConnectionUp { peer });
            }
            ConnEvent::Message(bytes) => {
                {
                    let mut s = shared.state.borrow_mut();
                    s.bytes_received += bytes.len() as u64;
                    if let Some(c) = s.conns.get_mut(&peer) {
                        c.bytes_received += bytes.len() as u64;
                    }
                }
                shared.input(Input::Frame { from: peer, bytes })
            }
            ConnEvent::Drained => {
                let waiters = match shared.state.borrow_mut().conns.get_mut(&peer) {
                    Some(c) => std::mem::take(&mut c.drain_waiters),
                    None => Vec::new(),
                };
                for tx in waiters {
                    let _ = tx.send(());
                }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, user: Option<&str>) -> IceServer {
        IceServer {
            urls: vec![url.to_string()],
            username: user.map(str::to_string),
            credential: user.map(|_| "c".to_string()),
        }
    }

    #[test]
    fn the_applications_ice_servers_come_first_and_win_over_offered_duplicates() {
        let own = vec![server("stun:own", None), server("turn:shared", Some("app"))];
        let offered = vec![
            server("turn:shared", Some("srv")),
            server("turn:srv", Some("srv")),
        ];
        let merged = merge_ice(&own, offered);
        assert_eq!(
            merged,
            vec![
                server("stun:own", None),
                server("turn:shared", Some("app")),
                server("turn:srv", Some("srv")),
            ]
        );
        assert_eq!(merge_ice(&own, vec![]), own);
        assert!(!needs_ice_warning(&["wss://x.example/ws".into()], &own));
        assert_eq!(
            merge_ice(&[], vec![server("stun:x", None)]),
            vec![server("stun:x", None)]
        );
    }

    #[test]
    fn only_a_public_signaling_server_without_ice_servers_warns() {
        let warns = |url: &str| needs_ice_warning(&[url.to_string()], &[]);
        for local in [
            "ws://127.0.0.1:8080/ws",
            "ws://localhost:8080/ws",
            "ws://10.1.2.3/ws",
            "ws://172.16.0.1:1/ws",
            "ws://192.168.1.10:8080/ws",
            "ws://[::1]:8080/ws",
            "ws://[fd00::1]/ws",
            "ws://box.local:8080/ws",
        ] {
            assert!(!warns(local), "{local}");
        }
        for public in [
            "wss://signal.example/ws",
            "ws://203.0.113.1:8080/ws",
            "wss://user@8.8.8.8/ws",
            "ws://[2001:db8::1]:80/ws",
        ] {
            assert!(warns(public), "{public}");
        }
    }
}
