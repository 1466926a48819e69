//! One WebRTC connection to one neighbour, through the browser's `RTCPeerConnection`.
//!
//! This is the thin edge between the overlay and the browser: it turns signal payloads
//! into SDP/ICE calls, and browser callbacks into [`ConnEvent`]s on a channel that the
//! driver reads. It makes no protocol decisions.
//!
//! Choices worth knowing:
//! - **One pre-negotiated data channel** (`negotiated: true, id: 0`) created by both
//!   sides. Neither side waits for `ondatachannel`, and it does not matter who sent the
//!   offer, which is what makes perfect negotiation simple.
//! - **Perfect negotiation**: the side with the smaller [`PeerId`] is *polite*. When both
//!   sides offer at once (glare), the impolite side ignores the incoming offer and the
//!   polite side rolls its own back and answers. No coordinator and no retry loop.
//! - **Chunks and backpressure**: every message travels as chunks (`chunk.rs`) of up to
//!   64 KiB when the remote's SCTP transport takes them (its `maxMessageSize`, read when
//!   the channel opens), else 16 KiB, through a queue of ours that feeds the browser only
//!   while its `bufferedAmount` is under [`HIGH_WATER`], refilled on `bufferedamountlow`;
//!   `send` refuses when our queue is full instead of letting memory grow.
//! - **Made ahead while joining**: a node calls [`prewarm`] while its signaling socket
//!   opens, and [`WebConnection::new`] takes that peer connection (up to two wait per
//!   page), so the constructor's ~1 ms is off the join's critical path; the answer is
//!   made by one implicit `setLocalDescription()` and sent before queued remote
//!   candidates are added (docs/BENCHMARKS.md, "Join: profiled step by step").
//! - **Trickle ICE**: candidates are emitted as they are found; remote candidates that
//!   arrive before the remote description are queued, because a relay through the
//!   overlay does not keep the order the sender produced them in.
//! - **Teardown** is explicit: [`WebConnection::close`] (and `Drop`) unhooks every
//!   handler before closing, so no JS callback outlives its Rust closure.
//! - Failure is read from `connectionstatechange` and `iceconnectionstatechange` as well
//!   as the channel's `close`, because Firefox and Chromium disagree on which fires.
//! - **Round-trip time** comes from `getStats()` (the selected ICE candidate pair's
//!   `currentRoundTripTime`, which the browser measures with its ICE consent checks), read
//!   lazily: [`WebConnection::rtt_ms`] returns the last value and starts a new read when it
//!   is older than [`RTT_POLL_MS`]. Nothing is measured per message.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_channel::mpsc;
use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{
    MessageEvent, RtcConfiguration, RtcDataChannel, RtcDataChannelInit, RtcDataChannelState,
    RtcDataChannelType, RtcIceCandidateInit, RtcIceConnectionState, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit,
    RtcSignalingState,
};

use crate::id::PeerId;
use crate::signal::SignalPayload;

use super::chunk::{self, SendQueue};
use super::{describe_js_error, ConnEvent, ConnLimits, IceServer, TransportError};

/// `bufferedAmount` up to which queued chunks are handed to the browser. Above it, chunks
/// wait in our queue until the browser fires `bufferedamountlow`: Chromium kills a
/// channel whose buffer reaches 16 MiB, so we never get near. 256 KiB (four 64 KiB
/// chunks): with 1 MiB a 64 MiB transfer cost ~9 % more browser CPU per MiB and ran
/// slower (same-session A/B, docs/BENCHMARKS.md "Browser"), the 1 KiB rate unchanged.
pub const HIGH_WATER: u32 = 256 * 1024;
/// `bufferedAmountLowThreshold`: when the browser's buffer drains below this, we refill.
pub const LOW_WATER: u32 = 64 * 1024;

/// A connection's round-trip time is read from `getStats()` at most this often.
pub const RTT_POLL_MS: f64 = 2_000.0;

/// Number of `RTCPeerConnection`s this page has created, all connections together.
/// Chromium refuses more than ~500 per page lifetime, so the overlay watches this.
pub fn connections_created() -> u32 {
    CREATED.with(|c| *c.borrow())
}

/// Number of this page's `RTCPeerConnection`s that still count against Chromium's limit
/// of 500: created and not yet garbage-collected (a closed one counts until then), all
/// nodes together. Read through a `FinalizationRegistry`; where there is none, every
/// connection ever created counts.
pub fn connections_alive() -> u32 {
    ALIVE.with(|c| *c.borrow())
}

thread_local! {
    static CREATED: RefCell<u32> = const { RefCell::new(0) };
    static ALIVE: RefCell<u32> = const { RefCell::new(0) };
    /// Counts [`ALIVE`] down as the page's connections are collected.
    static COLLECTED: RefCell<Option<js_sys::FinalizationRegistry>> = const { RefCell::new(None) };
    /// `RTCPeerConnection`s made ahead of need ([`prewarm`]), with the JSON of the ICE
    /// servers each was made with; at most [`SPARES`].
    static SPARE: RefCell<Vec<(String, RtcPeerConnection)>> = const { RefCell::new(Vec::new()) };
}

/// Most spare connections [`prewarm`] keeps: two, so that when two nodes of a page join
/// at once, the one that offers and the one that answers both find one.
const SPARES: usize = 2;

/// Makes one `RTCPeerConnection` now, for a later [`WebConnection::new`] with the same
/// ICE servers to take instead of making its own (unless two are waiting already).
///
/// Creating a peer connection costs the page's main thread about a millisecond; a node
/// calls this while its signaling session is still opening (idle time), so the
/// connection to its first contact — or the answer to its first offer — starts without
/// that cost on the join's critical path. Nothing is negotiated on the spare (no data
/// channel, no description), so it holds no network resources; it counts towards
/// [`connections_created`]. Fails silently where there is no `RTCPeerConnection` (a
/// worker).
pub fn prewarm(ice_servers: &[IceServer]) {
    if SPARE.with(|s| s.borrow().len()) >= SPARES {
        return;
    }
    let Ok(servers) = ice_servers_to_js(ice_servers) else {
        return;
    };
    let key = js_sys::JSON::stringify(&servers)
        .ok()
        .and_then(|k| k.as_string())
        .unwrap_or_default();
    if let Ok(pc) = new_peer_connection(&servers) {
        SPARE.with(|s| s.borrow_mut().push((key, pc)));
    }
}

/// A new `RTCPeerConnection` with these ICE servers (as JS), counted in
/// [`connections_created`].
fn new_peer_connection(servers: &JsValue) -> Result<RtcPeerConnection, JsValue> {
    let config = RtcConfiguration::new();
    config.set_ice_servers(servers);
    let pc = RtcPeerConnection::new_with_configuration(&config)?;
    CREATED.with(|c| *c.borrow_mut() += 1);
    ALIVE.with(|c| *c.borrow_mut() += 1);
    COLLECTED.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_none() {
            let global = js_sys::global();
            if Reflect::has(&global, &"FinalizationRegistry".into()) != Ok(true) {
                return;
            }
            let collected = Closure::<dyn FnMut(JsValue)>::new(|_: JsValue| {
                ALIVE.with(|c| {
                    let mut c = c.borrow_mut();
                    *c = c.saturating_sub(1);
                })
            });
            *r = Some(js_sys::FinalizationRegistry::new(
                &collected.into_js_value().unchecked_into(),
            ));
        }
        if let Some(r) = r.as_ref() {
            r.register(&pc, &JsValue::UNDEFINED);
        }
    });
    Ok(pc)
}

/// A spare connection from [`prewarm`] made with these ICE servers (`servers` as JSON)
/// and still unused; `None` if there is none.
fn take_spare(servers: &JsValue) -> Option<RtcPeerConnection> {
    let key = js_sys::JSON::stringify(servers).ok()?.as_string()?;
    let (_, pc) = SPARE.with(|s| {
        let mut spares = s.borrow_mut();
        let i = spares.iter().position(|(k, _)| *k == key)?;
        Some(spares.swap_remove(i))
    })?;
    // Unused means: never negotiated, never closed.
    let fresh = pc.signaling_state() == RtcSignalingState::Stable
        && pc.local_description().is_none()
        && pc.connection_state() == RtcPeerConnectionState::New;
    if !fresh {
        pc.close();
        return None;
    }
    Some(pc)
}

/// Perfect-negotiation state shared with the callbacks.
#[derive(Default)]
struct Negotiation {
    making_offer: bool,
    ignore_offer: bool,
    pending_candidates: Vec<RtcIceCandidateInit>,
    closed: bool,
}

/// The last round-trip time read from `getStats()`.
/// What [`pump`] knows of the browser's send buffer without asking it.
#[derive(Default)]
struct Room {
    /// Bytes the buffer surely takes before [`HIGH_WATER`].
    bound: Cell<u32>,
    /// The buffer was at [`HIGH_WATER`] when last read: wait for `bufferedamountlow`.
    full: Cell<bool>,
    /// Someone waits for our queue to empty: report [`ConnEvent::Drained`] when it does.
    drain_wanted: Cell<bool>,
}

#[derive(Default)]
struct Rtt {
    ms: Option<f64>,
    /// The selected candidate pair's types, `local/remote`.
    pair: Option<String>,
    /// `Date.now()` of the last read started.
    polled_at: f64,
    polling: bool,
}

/// Hands queued chunks to the browser while its buffer is below [`HIGH_WATER`].
///
/// Each chunk goes to `send` as a view into the wasm memory: copying it into a JS
/// `ArrayBuffer` first was slower (docs/BENCHMARKS.md, browser section, `sendView`).
/// `room` is a lower bound on what the browser's buffer takes before [`HIGH_WATER`]: its
/// `bufferedAmount` only grows by our sends, so it is read only when the bound is spent
/// (a read costs a call into the browser: ~3 µs, once per 1 KiB message before), and not
/// at all while the buffer is known full: then only `bufferedamountlow` (which clears
/// [`Room::full`]) resumes sending — the buffer is above [`LOW_WATER`], so it will fire.
/// When the queue empties while [`Room::drain_wanted`], it reports [`ConnEvent::Drained`].
fn pump(
    queue: &mut SendQueue,
    dc: &RtcDataChannel,
    room: &Room,
    events: &mpsc::UnboundedSender<ConnEvent>,
) -> Result<(), TransportError> {
    while let Some(chunk) = queue.chunks.front() {
        let len = chunk.len() as u32;
        if room.bound.get() < len {
            if room.full.get() {
                break;
            }
            room.bound
                .set(HIGH_WATER.saturating_sub(dc.buffered_amount()));
            if room.bound.get() == 0 {
                room.full.set(true);
                break;
            }
        }
        dc.send_with_u8_array(chunk)
            .map_err(|e| TransportError::Browser(describe_js_error(&e)))?;
        room.bound.set(room.bound.get().saturating_sub(len));
        queue.bytes -= chunk.len();
        queue.chunks.pop_front();
    }
    if queue.bytes == 0 && room.drain_wanted.replace(false) {
        let _ = events.unbounded_send(ConnEvent::Drained);
    }
    Ok(())
}

/// One `RTCPeerConnection` with its data channel.
pub struct WebConnection {
    remote: PeerId,
    polite: bool,
    limits: ConnLimits,
    pc: RtcPeerConnection,
    dc: RtcDataChannel,
    state: Rc<RefCell<Negotiation>>,
    queue: Rc<RefCell<SendQueue>>,
    /// Payload bytes per chunk for this remote: [`chunk::payload_for`] its SCTP
    /// transport's `maxMessageSize`, read when the channel opens (before anything is sent).
    chunk_payload: Rc<Cell<usize>>,
    /// What we know of the browser's buffer (see [`pump`]).
    room: Rc<Room>,
    rtt: Rc<RefCell<Rtt>>,
    events: mpsc::UnboundedSender<ConnEvent>,
    _callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl WebConnection {
    /// Creates a connection to `remote` and returns it with the stream of its events.
    ///
    /// If `initiate` is true this side sends the first offer (it is emitted as a
    /// [`ConnEvent::Signal`]); otherwise it waits for the remote offer, which the caller
    /// passes to [`WebConnection::handle_signal`].
    pub fn new(
        local: PeerId,
        remote: PeerId,
        ice_servers: &[IceServer],
        limits: ConnLimits,
        initiate: bool,
    ) -> Result<(Self, mpsc::UnboundedReceiver<ConnEvent>), TransportError> {
        let servers = ice_servers_to_js(ice_servers)?;
        let pc = match take_spare(&servers) {
            Some(pc) => pc,
            None => new_peer_connection(&servers)
                .map_err(|e| TransportError::Browser(describe_js_error(&e)))?,
        };

        let init = RtcDataChannelInit::new();
        init.set_negotiated(true);
        init.set_id(0);
        init.set_ordered(true);
        let dc = pc.create_data_channel_with_data_channel_dict("rhizome", &init);
        dc.set_binary_type(RtcDataChannelType::Arraybuffer);
        dc.set_buffered_amount_low_threshold(LOW_WATER);

        let (tx, rx) = mpsc::unbounded();
        let mut conn = WebConnection {
            remote,
            polite: local < remote,
            limits,
            pc,
            dc,
            state: Rc::new(RefCell::new(Negotiation::default())),
            queue: Rc::new(RefCell::new(SendQueue::default())),
            chunk_payload: Rc::new(Cell::new(chunk::CHUNK_PAYLOAD)),
            room: Rc::new(Room::default()),
            rtt: Rc::new(RefCell::new(Rtt::default())),
            events: tx,
            _callbacks: Vec::new(),
        };
        conn.hook_callbacks(initiate);
        Ok((conn, rx))
    }

    /// The peer at the other end.
    pub fn remote(&self) -> PeerId {
        self.remote
    }

    /// Whether this side yields when both sides offer at once.
    pub fn is_polite(&self) -> bool {
        self.polite
    }

    /// Whether the data channel is open.
    pub fn is_open(&self) -> bool {
        self.dc.ready_state() == RtcDataChannelState::Open
    }

    /// Bytes accepted by [`WebConnection::send`] and not yet sent: our queue plus the
    /// browser's buffer.
    pub fn buffered_amount(&self) -> usize {
        self.queue.borrow().bytes + self.dc.buffered_amount() as usize
    }

    /// Whether our queue is empty (everything accepted is with the browser, whose buffer
    /// holds at most [`HIGH_WATER`]); if not, a [`ConnEvent::Drained`] follows once it is.
    pub fn arm_drained(&self) -> bool {
        let empty = self.queue.borrow().bytes == 0;
        self.room.drain_wanted.set(!empty);
        empty
    }

    /// The round-trip time to the peer in milliseconds, as last read from `getStats()`
    /// (the selected candidate pair's `currentRoundTripTime`); `None` until one read has
    /// succeeded. When the last read is older than [`RTT_POLL_MS`], this starts another
    /// in the background, so polling it often costs at most one `getStats()` per 2 s.
    pub fn rtt_ms(&self) -> Option<f64> {
        let now = js_sys::Date::now();
        let start = {
            let mut r = self.rtt.borrow_mut();
            let due = !r.polling && (now - r.polled_at).abs() >= RTT_POLL_MS;
            if due && !self.state.borrow().closed {
                r.polling = true;
                r.polled_at = now;
                true
            } else {
                false
            }
        };
        if start {
            let (pc, rtt) = (self.pc.clone(), self.rtt.clone());
            spawn_local(async move {
                let read = read_rtt(&pc).await;
                let mut r = rtt.borrow_mut();
                r.polling = false;
                if let Some((ms, pair)) = read {
                    r.ms = Some(ms);
                    if pair.is_some() {
                        r.pair = pair;
                    }
                }
            });
        }
        self.rtt.borrow().ms
    }

    /// Reads the round-trip time from `getStats()` now (see [`WebConnection::rtt_ms`]);
    /// `None` while no candidate pair has been selected or measured.
    pub async fn measure_rtt(&self) -> Option<f64> {
        let (ms, pair) = read_rtt(&self.pc).await?;
        let mut r = self.rtt.borrow_mut();
        r.ms = Some(ms);
        if pair.is_some() {
            r.pair = pair;
        }
        Some(ms)
    }

    /// The selected ICE candidate pair's types as `local/remote` (`host`, `srflx`,
    /// `prflx` or `relay` each), as last read with the round-trip time (see
    /// [`WebConnection::rtt_ms`]); `None` until known.
    pub fn candidate_pair(&self) -> Option<String> {
        self.rtt.borrow().pair.clone()
    }

    /// Sends one message of up to [`ConnLimits::max_message`] bytes, in order with every
    /// other. Refuses — and loses nothing already queued — when the channel is not open,
    /// the message is too large, or the send queue is full (wait for it to drain).
    pub fn send(&self, data: &[u8]) -> Result<(), TransportError> {
        chunk::check_size(data, self.limits.max_message)?;
        if !self.is_open() {
            return Err(TransportError::NotOpen);
        }
        let mut queue = self.queue.borrow_mut();
        queue.push_message(data, self.limits.max_queued, self.chunk_payload.get())?;
        pump(&mut queue, &self.dc, &self.room, &self.events)
    }

    /// Sends `bytes` as one raw data-channel message, bypassing chunking and the queue.
    /// Exists to test how peers treat a misbehaving one; never needed otherwise.
    #[doc(hidden)]
    pub fn send_unframed(&self, bytes: &[u8]) -> Result<(), TransportError> {
        self.dc
            .send_with_u8_array(bytes)
            .map_err(|e| TransportError::Browser(describe_js_error(&e)))
    }

    /// Applies a signal from the remote peer (already authenticated by the caller).
    pub async fn handle_signal(&self, payload: SignalPayload) -> Result<(), TransportError> {
        match payload {
            SignalPayload::Offer { sdp } => self.handle_description(RtcSdpType::Offer, sdp).await,
            SignalPayload::Answer { sdp } => self.handle_description(RtcSdpType::Answer, sdp).await,
            SignalPayload::Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            } => {
                let init = RtcIceCandidateInit::new(&candidate);
                init.set_sdp_mid(sdp_mid.as_deref());
                init.set_sdp_m_line_index(sdp_m_line_index);
                if self.pc.remote_description().is_none() {
                    self.state.borrow_mut().pending_candidates.push(init);
                    return Ok(());
                }
                self.add_candidate(&init).await
            }
            SignalPayload::Abort => {
                self.close_with("remote peer aborted the connection attempt");
                Ok(())
            }
        }
    }

    async fn add_candidate(&self, init: &RtcIceCandidateInit) -> Result<(), TransportError> {
        let result = JsFuture::from(
            self.pc
                .add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(init)),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            // Candidates belonging to an offer we ignored during glare fail; that is fine.
            Err(_) if self.state.borrow().ignore_offer => Ok(()),
            Err(e) => Err(TransportError::Browser(describe_js_error(&e))),
        }
    }

    async fn handle_description(
        &self,
        kind: RtcSdpType,
        sdp: String,
    ) -> Result<(), TransportError> {
        let offer_collision = kind == RtcSdpType::Offer
            && (self.state.borrow().making_offer
                || self.pc.signaling_state() != RtcSignalingState::Stable);
        let ignore = !self.polite && offer_collision;
        self.state.borrow_mut().ignore_offer = ignore;
        if ignore {
            return Ok(());
        }
        let desc = RtcSessionDescriptionInit::new(kind);
        desc.set_sdp(&sdp);
        // A polite peer in glare rolls back implicitly (supported by all current browsers).
        browser(JsFuture::from(self.pc.set_remote_description(&desc)).await)?;
        // The answer first: the other side waits for it, while candidates that came early
        // can as well be added once it is on its way.
        if kind == RtcSdpType::Offer {
            let sdp = set_local_answer(&self.pc).await?;
            let _ = self
                .events
                .unbounded_send(ConnEvent::Signal(SignalPayload::Answer { sdp }));
        }
        let queued = std::mem::take(&mut self.state.borrow_mut().pending_candidates);
        for c in &queued {
            self.add_candidate(c).await?;
        }
        Ok(())
    }

    fn hook_callbacks(&mut self, initiate: bool) {
        let mut callbacks: Vec<Closure<dyn FnMut(JsValue)>> = Vec::new();

        // Offers: sent when the browser says negotiation is needed (the data channel
        // creation triggers it), but only on the side that initiates.
        {
            let pc = self.pc.clone();
            let state = self.state.clone();
            let tx = self.events.clone();
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |_ev: JsValue| {
                if !initiate && pc.remote_description().is_none() {
                    return;
                }
                // Only from a stable state: the answering side's browser may report the
                // need (its data channel) only once the remote offer is set, and that
                // offer's answer covers it. Firefox does; offering then collided with
                // our own answer and closed a connection that was about to open.
                if pc.signaling_state() != RtcSignalingState::Stable {
                    return;
                }
                let (pc, state, tx) = (pc.clone(), state.clone(), tx.clone());
                spawn_local(async move {
                    state.borrow_mut().making_offer = true;
                    let result = make_offer(&pc).await;
                    state.borrow_mut().making_offer = false;
                    match result {
                        Ok(Some(sdp)) => {
                            let _ =
                                tx.unbounded_send(ConnEvent::Signal(SignalPayload::Offer { sdp }));
                        }
                        // A remote offer came first: answering it negotiates the channel.
                        Ok(None) => {}
                        Err(e) => {
                            if !state.borrow().closed {
                                let _ = tx.unbounded_send(ConnEvent::Closed(format!(
                                    "could not create an offer: {e}"
                                )));
                            }
                        }
                    }
                });
            });
            self.pc
                .set_onnegotiationneeded(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }

        // Trickle ICE.
        {
            let tx = self.events.clone();
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                let Ok(ev) = ev.dyn_into::<RtcPeerConnectionIceEvent>() else {
                    return;
                };
                let Some(c) = ev.candidate() else { return };
                if c.candidate().is_empty() {
                    return; // end-of-candidates marker
                }
                let _ = tx.unbounded_send(ConnEvent::Signal(SignalPayload::Candidate {
                    candidate: c.candidate(),
                    sdp_mid: c.sdp_mid(),
                    sdp_m_line_index: c.sdp_m_line_index(),
                }));
            });
            self.pc
                .set_onicecandidate(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }

        // Failure, from both state machines (browsers differ in which one they update).
        {
            let pc = self.pc.clone();
            let state = self.state.clone();
            let tx = self.events.clone();
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |_ev: JsValue| {
                let reason = match (pc.connection_state(), pc.ice_connection_state()) {
                    (RtcPeerConnectionState::Failed, _) => "connection failed",
                    (RtcPeerConnectionState::Closed, _) => "connection closed",
                    (_, RtcIceConnectionState::Failed) => "ICE failed",
                    (_, RtcIceConnectionState::Closed) => "ICE closed",
                    _ => return,
                };
                close_once(&state, &tx, reason);
            });
            self.pc
                .set_onconnectionstatechange(Some(cb.as_ref().unchecked_ref()));
            self.pc
                .set_oniceconnectionstatechange(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }

        // Data channel. Once it is open the SCTP transport is up and its `maxMessageSize`
        // (the smaller of both sides' limits) final: the chunk size is read then.
        {
            let tx = self.events.clone();
            let (pc, payload) = (self.pc.clone(), self.chunk_payload.clone());
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |_ev: JsValue| {
                let max = Reflect::get(&pc, &JsValue::from_str("sctp"))
                    .ok()
                    .filter(|sctp| sctp.is_object())
                    .and_then(|sctp| Reflect::get(&sctp, &JsValue::from_str("maxMessageSize")).ok())
                    .and_then(|m| m.as_f64());
                payload.set(chunk::payload_for(max));
                let _ = tx.unbounded_send(ConnEvent::Open);
            });
            self.dc.set_onopen(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }
        {
            let tx = self.events.clone();
            let mut reassembler = chunk::Reassembler::new(self.limits.max_message);
            let mut corrupt = false;
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                if corrupt {
                    return; // already reported; the rest of the stream is meaningless
                }
                // Only the channel calls this, always with a `MessageEvent` (unchecked: an
                // `instanceof` per chunk saved).
                let data = ev.unchecked_into::<MessageEvent>().data();
                let result = if data.is_string() {
                    // Text frames are not part of the protocol.
                    Err("text frame on a binary channel".to_string())
                } else {
                    push_chunk(&mut reassembler, &Uint8Array::new(&data))
                };
                match result {
                    Ok(Some(message)) => {
                        let _ = tx.unbounded_send(ConnEvent::Message(message));
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        corrupt = true;
                        let _ = tx.unbounded_send(ConnEvent::Corrupt(reason));
                    }
                }
            });
            self.dc.set_onmessage(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }
        {
            let dc = self.dc.clone();
            let (queue, room) = (self.queue.clone(), self.room.clone());
            let state = self.state.clone();
            let tx = self.events.clone();
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |_ev: JsValue| {
                room.full.set(false);
                if let Err(e) = pump(&mut queue.borrow_mut(), &dc, &room, &tx) {
                    close_once(&state, &tx, &format!("send failed: {e}"));
                }
            });
            self.dc
                .set_onbufferedamountlow(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }
        {
            let state = self.state.clone();
            let tx = self.events.clone();
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |_ev: JsValue| {
                close_once(&state, &tx, "data channel closed");
            });
            self.dc.set_onclose(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }
        self._callbacks = callbacks;
    }

    fn unhook(&self) {
        self.pc.set_onnegotiationneeded(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_oniceconnectionstatechange(None);
        self.dc.set_onopen(None);
        self.dc.set_onmessage(None);
        self.dc.set_onbufferedamountlow(None);
        self.dc.set_onclose(None);
    }

    fn close_with(&self, reason: &str) {
        close_once(&self.state, &self.events, reason);
        self.unhook();
        self.dc.close();
        self.pc.close();
    }

    /// Closes the connection and unhooks every callback. Idempotent.
    pub fn close(&self) {
        self.close_with("closed locally");
    }
}

impl Drop for WebConnection {
    fn drop(&mut self) {
        self.close();
    }
}

/// Feeds a received chunk to the reassembler, copying its payload out of the browser's
/// buffer once, straight into the message.
fn push_chunk(
    reassembler: &mut chunk::Reassembler,
    chunk: &Uint8Array,
) -> Result<Option<Vec<u8>>, String> {
    let len = chunk.length();
    if len == 0 {
        return Err(chunk::ChunkError::Empty.to_string());
    }
    reassembler
        .push_from(chunk.get_index(0), len as usize - 1, |dst| {
            chunk.subarray(1, len).copy_to(dst)
        })
        .map_err(|e| e.to_string())
}

fn close_once(state: &RefCell<Negotiation>, tx: &mpsc::UnboundedSender<ConnEvent>, reason: &str) {
    let mut s = state.borrow_mut();
    if !s.closed {
        s.closed = true;
        let _ = tx.unbounded_send(ConnEvent::Closed(reason.to_string()));
    }
}

/// The selected candidate pair's `currentRoundTripTime` in ms and its `local/remote`
/// candidate types, from `getStats()`.
async fn read_rtt(pc: &RtcPeerConnection) -> Option<(f64, Option<String>)> {
    let report = JsFuture::from(pc.get_stats()).await.ok()?;
    selected_pair(&report)
}

/// Finds the candidate pair in use in an `RTCStatsReport` and returns its current RTT in
/// ms, with its candidates' types (`host/srflx`, ...) when the report has them. The pair
/// in use is the one the `transport` entry names (Chromium, Safari); failing that, one
/// marked `selected` (Firefox) or nominated and succeeded.
fn selected_pair(report: &JsValue) -> Option<(f64, Option<String>)> {
    let str_of = |o: &JsValue, k: &str| Reflect::get(o, &JsValue::from_str(k)).ok()?.as_string();
    let bool_of = |o: &JsValue, k: &str| {
        Reflect::get(o, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    let mut selected_id = None;
    // (id, in use, rtt, local candidate id, remote candidate id)
    let mut pairs: Vec<(String, bool, f64, String, String)> = Vec::new();
    let mut candidates: Vec<(String, String)> = Vec::new();
    // An `RTCStatsReport` is a maplike: iterating it yields `[id, stats]` pairs.
    for entry in js_sys::try_iter(report).ok()??.flatten() {
        let stats = Array::from(&entry).get(1);
        match str_of(&stats, "type").as_deref() {
            Some("transport") => {
                if let Some(id) = str_of(&stats, "selectedCandidatePairId") {
                    selected_id = Some(id);
                }
            }
            Some("local-candidate" | "remote-candidate") => {
                if let (Some(id), Some(ty)) =
                    (str_of(&stats, "id"), str_of(&stats, "candidateType"))
                {
                    candidates.push((id, ty));
                }
            }
            Some("candidate-pair") => {
                let Some(rtt) = Reflect::get(&stats, &JsValue::from_str("currentRoundTripTime"))
                    .ok()
                    .and_then(|v| v.as_f64())
                    .filter(|r| r.is_finite() && *r >= 0.0)
                else {
                    continue;
                };
                let in_use = bool_of(&stats, "selected")
                    || (bool_of(&stats, "nominated")
                        && str_of(&stats, "state").as_deref() == Some("succeeded"));
                pairs.push((
                    str_of(&stats, "id").unwrap_or_default(),
                    in_use,
                    rtt,
                    str_of(&stats, "localCandidateId").unwrap_or_default(),
                    str_of(&stats, "remoteCandidateId").unwrap_or_default(),
                ));
            }
            _ => {}
        }
    }
    let pair = match &selected_id {
        Some(id) => pairs.iter().find(|p| &p.0 == id),
        None => None,
    }
    .or_else(|| pairs.iter().find(|p| p.1))?;
    let kind = |id: &str| {
        candidates
            .iter()
            .find(|(cid, _)| cid == id)
            .map(|(_, ty)| ty.as_str())
    };
    let types = kind(&pair.3)
        .zip(kind(&pair.4))
        .map(|(l, r)| format!("{l}/{r}"));
    Some((pair.2 * 1000.0, types))
}

async fn make_offer(pc: &RtcPeerConnection) -> Result<Option<String>, TransportError> {
    let offer = browser(JsFuture::from(pc.create_offer()).await)?;
    let sdp = sdp_of(&offer)?;
    if pc.signaling_state() != RtcSignalingState::Stable {
        // A remote offer arrived while we were creating ours; perfect negotiation
        // already handled it, and ours would be stale (not an error: the connection
        // goes on with the remote offer).
        return Ok(None);
    }
    let local = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
    local.set_sdp(&sdp);
    browser(JsFuture::from(pc.set_local_description(&local)).await)?;
    Ok(Some(sdp))
}

/// Answers the remote offer just set: `setLocalDescription()` without an argument, which
/// creates the answer and sets it in one step (one trip to the browser's WebRTC thread
/// instead of two for `createAnswer` then `setLocalDescription`: about a millisecond
/// less on the join's critical path, measured with the bench's `joinSteps`). Returns the
/// answer's SDP.
async fn set_local_answer(pc: &RtcPeerConnection) -> Result<String, TransportError> {
    let set = Reflect::get(pc, &JsValue::from_str("setLocalDescription"))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| TransportError::Browser("no setLocalDescription".into()))?;
    // Not `dyn_into::<Promise>()`: Firefox's promise sometimes fails that `instanceof`
    // check (it comes from another realm), which left the offer unanswered: the native
    // peer never connected, or connected only when the page dialled it back.
    // `Promise.resolve` adopts it whatever its realm.
    let promise = js_sys::Promise::resolve(&browser(set.call0(pc))?);
    browser(JsFuture::from(promise).await)?;
    let local = pc
        .local_description()
        .ok_or_else(|| TransportError::Browser("no local description after answering".into()))?;
    if local.type_() != RtcSdpType::Answer {
        return Err(TransportError::Browser(format!(
            "expected a local answer, the browser made {:?}",
            local.type_()
        )));
    }
    Ok(local.sdp())
}

fn browser(r: Result<JsValue, JsValue>) -> Result<JsValue, TransportError> {
    r.map_err(|e| TransportError::Browser(describe_js_error(&e)))
}

fn sdp_of(desc: &JsValue) -> Result<String, TransportError> {
    Reflect::get(desc, &JsValue::from_str("sdp"))
        .ok()
        .and_then(|v| v.as_string())
        .ok_or_else(|| TransportError::Browser("session description without SDP".into()))
}

fn ice_servers_to_js(servers: &[IceServer]) -> Result<JsValue, TransportError> {
    let list = Array::new();
    for s in servers {
        let o = Object::new();
        let urls = Array::new();
        for u in &s.urls {
            urls.push(&JsValue::from_str(u));
        }
        let set = |k: &str, v: &JsValue| {
            Reflect::set(&o, &JsValue::from_str(k), v)
                .map_err(|e| TransportError::Browser(describe_js_error(&e)))
        };
        set("urls", &urls)?;
        if let Some(u) = &s.username {
            set("username", &JsValue::from_str(u))?;
        }
        if let Some(c) = &s.credential {
            set("credential", &JsValue::from_str(c))?;
        }
        list.push(&o);
    }
    Ok(list.into())
}
