//! One WebRTC connection to one neighbour, in a native process, over webrtc-rs.
//!
//! The twin of `web.rs`: the same constructor arguments, the same methods and the same
//! [`ConnEvent`]s, so the node driver treats a browser connection and a native one alike,
//! and a native peer and a browser peer can connect to each other. It makes no protocol
//! decisions.
//!
//! Choices worth knowing (the first four are `web.rs`'s, kept identical for interop):
//! - **One pre-negotiated data channel** (`negotiated`, id 0, label `rhizome`, ordered),
//!   created by both sides, exactly as the browser does.
//! - **Perfect negotiation**: the side with the smaller [`PeerId`] is *polite*. webrtc-rs
//!   has no implicit rollback, so the polite side rolls its own offer back explicitly
//!   before applying the remote one. Every SDP operation runs under one async lock, which
//!   makes "are we in the middle of an offer?" the same question as "is the signaling state
//!   stable?".
//! - **Chunks and backpressure**: messages travel as 16 KiB chunks (`chunk.rs`) through a
//!   bounded queue of ours; a writer task hands them to webrtc-rs while the channel's
//!   outstanding bytes are under [`HIGH_WATER`] and otherwise waits for webrtc-rs's
//!   `OnBufferedAmountLow` event (threshold [`LOW_WATER`]), with a short re-check as a
//!   backstop against a missed wake-up. `send` refuses when our queue is full.
//! - **Trickle ICE** with remote candidates queued until the remote description is set.
//! - **Who is the SCTP client**: a native answerer takes the DTLS *server* role
//!   (`a=setup:passive`), so the offerer — a browser, say — is the DTLS and SCTP client.
//!   webrtc-rs (0.21) registers a pre-negotiated channel's stream only when it handles the
//!   association's "established" event, and reads DATA chunks that came in the same packet
//!   before that: as the SCTP client it lost whatever a browser bundled with its
//!   COOKIE-ACK, which is the overlay's first frame (the JOIN) — the native side never saw
//!   the browser as a neighbour in about half of the runs where the browser dialled. As the
//!   server, the first packet it gets (COOKIE-ECHO) carries no data: the browser's
//!   channel is not open before the COOKIE-ACK.
//! - **webrtc-rs is async and callback-free**: connection events arrive on a handler trait
//!   that runs on webrtc-rs's driver task, and channel events are polled. The handler only
//!   forwards (it must not block the driver); two tasks of ours read the channel and feed
//!   it. Hence [`NativeConnection::new`] is `async` and needs a tokio runtime, where the
//!   browser's constructor is synchronous.
//! - **Where it binds** is the one thing a browser decides for itself and a process must be
//!   told: [`NativeConfig`]. Tests bind 127.0.0.1 only ([`NativeConfig::loopback`]).
//! - **Round-trip time** comes from webrtc-rs's `get_stats` (the selected ICE candidate
//!   pair's `current_round_trip_time`, measured by its ICE checks), read lazily like the
//!   browser's: [`NativeConnection::rtt_ms`] returns the last value and starts a new read
//!   when it is older than [`RTT_POLL`].
//! - **Teardown** is explicit: [`NativeConnection::close`] (and `Drop`) stops our tasks
//!   and closes the webrtc-rs connection, whose driver task would otherwise outlive it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use futures_channel::mpsc;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::transport::RTCDtlsRole;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceConnectionState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, RTCStatsReport,
    SettingEngineBuilder, StatsSelector,
};

use crate::id::PeerId;
use crate::signal::SignalPayload;

use super::chunk::{self, SendQueue};
use super::{ConnEvent, ConnLimits, IceServer, TransportError};

/// Outstanding bytes in webrtc-rs up to which queued chunks are handed over; above it the
/// writer waits for `OnBufferedAmountLow` (the browser transport's is 256 KiB).
pub const HIGH_WATER: u32 = 1024 * 1024;
/// Buffered-amount-low threshold: when webrtc-rs's buffer drains below this, we refill.
pub const LOW_WATER: u32 = 256 * 1024;
/// Label of the one data channel (the browser side uses the same).
pub const CHANNEL_LABEL: &str = "rhizome";
/// Most remote candidates held while waiting for the remote description; more are a
/// misbehaving peer and are dropped.
const MAX_PENDING_CANDIDATES: usize = 64;
/// How often a writer waiting for room re-checks, in case a wake-up was missed.
const BACKPRESSURE_RECHECK: Duration = Duration::from_millis(50);

static CREATED: AtomicU32 = AtomicU32::new(0);

/// Number of webrtc-rs peer connections this process has created (the browser transport
/// counts the same thing, where Chromium limits it).
pub fn connections_created() -> u32 {
    CREATED.load(Ordering::Relaxed)
}

/// How `….local` (mDNS) ICE candidates are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdnsMode {
    /// Drop remote `.local` candidates and send no multicast at all. A browser peer can
    /// still connect: it reaches our (IP) host candidates, and we learn its address as a
    /// peer-reflexive candidate from its connectivity checks.
    Disabled,
    /// Resolve remote `.local` candidates (Chromium's host candidates) with mDNS queries;
    /// advertise our own candidates as plain IPs.
    Resolve,
}

/// Where and how a native connection gathers ICE candidates: what a browser decides for
/// itself and a process must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeConfig {
    /// Local UDP addresses to bind. `0.0.0.0:0` (the default) binds every non-loopback
    /// interface on an ephemeral port; a concrete address binds just that one.
    pub udp_addrs: Vec<SocketAddr>,
    /// Offer loopback addresses as host candidates. Needed when binding 127.0.0.1
    /// (default: false, as in browsers).
    pub include_loopback: bool,
    /// Treatment of mDNS candidates (default: [`MdnsMode::Resolve`], so Chromium's
    /// `.local` host candidates work directly).
    pub mdns: MdnsMode,
    /// Silence after which ICE counts as disconnected (default 5 s).
    pub ice_disconnected_timeout: Duration,
    /// Further silence after which ICE fails and the connection is reported closed
    /// (default 25 s).
    pub ice_failed_timeout: Duration,
    /// Interval of ICE keepalives on an idle connection (default 2 s).
    pub ice_keepalive_interval: Duration,
}

impl Default for NativeConfig {
    fn default() -> Self {
        NativeConfig {
            udp_addrs: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))],
            include_loopback: false,
            mdns: MdnsMode::Resolve,
            ice_disconnected_timeout: Duration::from_secs(5),
            ice_failed_timeout: Duration::from_secs(25),
            ice_keepalive_interval: Duration::from_secs(2),
        }
    }
}

impl NativeConfig {
    /// Binds 127.0.0.1 only, with mDNS off: every packet stays on this machine. For tests
    /// and for peers on one host.
    pub fn loopback() -> Self {
        NativeConfig {
            udp_addrs: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
            include_loopback: true,
            mdns: MdnsMode::Disabled,
            ..NativeConfig::default()
        }
    }
}

/// Perfect-negotiation state; its lock also serialises every SDP operation.
#[derive(Default)]
struct Negotiation {
    ignore_offer: bool,
    pending_candidates: Vec<RTCIceCandidateInit>,
}

/// A connection's round-trip time is read from webrtc-rs's stats at most this often.
pub const RTT_POLL: Duration = Duration::from_secs(2);

/// The last round-trip time read from the stats.
#[derive(Default)]
struct Rtt {
    ms: Option<f64>,
    /// The selected candidate pair's types, `local/remote` (e.g. `srflx/relay`).
    pair: Option<String>,
    polled_at: Option<std::time::Instant>,
    polling: bool,
}

/// State shared by the connection, its tasks and the webrtc-rs event handler.
struct Shared {
    events: mpsc::UnboundedSender<ConnEvent>,
    closed: AtomicBool,
    open: AtomicBool,
    /// Chunks accepted by `send` and not yet handed to webrtc-rs.
    queue: Mutex<SendQueue>,
    /// webrtc-rs's outstanding bytes as last seen by the writer.
    in_flight: AtomicUsize,
    /// Someone waits for our queue to empty: report [`ConnEvent::Drained`] when it does.
    drain_wanted: AtomicBool,
    wake_writer: Notify,
    buffered_low: Notify,
    negotiation_needed: Notify,
    negotiation: tokio::sync::Mutex<Negotiation>,
}

impl Shared {
    fn emit(&self, event: ConnEvent) {
        let _ = self.events.unbounded_send(event);
    }

    /// Reports `Closed` once; nothing is emitted after it.
    fn close_once(&self, reason: &str) {
        self.open.store(false, Ordering::Release);
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.emit(ConnEvent::Closed(reason.to_string()));
            self.events.close_channel();
        }
        // Let the writer and negotiation tasks see `closed` and end.
        self.wake_writer.notify_one();
        self.negotiation_needed.notify_one();
        self.buffered_low.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data inconsistent (each
    // critical section is a few field updates), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn native(e: impl std::fmt::Display) -> TransportError {
    TransportError::Native(e.to_string())
}

/// Receives webrtc-rs's connection events on its driver task and only forwards them.
struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_negotiation_needed(&self) {
        self.shared.negotiation_needed.notify_one();
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Ok(init) = event.candidate.to_json() else {
            return;
        };
        if init.candidate.is_empty() {
            return;
        }
        if std::env::var_os("RHIZOME_DEBUG_ICE").is_some() {
            eprintln!("ice: local {}", init.candidate);
        }
        // webrtc-rs names the m-section "" here; browsers want a real mid or none, and
        // there is exactly one m-section (the data channel's): index 0.
        let sdp_mid = init.sdp_mid.filter(|m| !m.is_empty());
        let sdp_m_line_index = if sdp_mid.is_none() {
            Some(init.sdp_mline_index.unwrap_or(0))
        } else {
            init.sdp_mline_index
        };
        self.shared
            .emit(ConnEvent::Signal(SignalPayload::Candidate {
                candidate: init.candidate,
                sdp_mid,
                sdp_m_line_index,
            }));
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if std::env::var_os("RHIZOME_DEBUG_ICE").is_some() {
            eprintln!("ice: state {state:?}");
        }
        match state {
            RTCIceConnectionState::Failed => self.shared.close_once("ICE failed"),
            RTCIceConnectionState::Closed => self.shared.close_once("ICE closed"),
            _ => {}
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Failed => self.shared.close_once("connection failed"),
            RTCPeerConnectionState::Closed => self.shared.close_once("connection closed"),
            _ => {}
        }
    }
}

/// One webrtc-rs peer connection with its data channel.
pub struct NativeConnection {
    remote: PeerId,
    polite: bool,
    limits: ConnLimits,
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    shared: Arc<Shared>,
    rtt: Arc<Mutex<Rtt>>,
    torn_down: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl NativeConnection {
    /// Creates a connection to `remote` with the default [`NativeConfig`] and returns it
    /// with the stream of its events. Must run inside a tokio runtime.
    ///
    /// If `initiate` is true this side sends the first offer (it is emitted as a
    /// [`ConnEvent::Signal`]); otherwise it waits for the remote offer, which the caller
    /// passes to [`NativeConnection::handle_signal`].
    pub async fn new(
        local: PeerId,
        remote: PeerId,
        ice_servers: &[IceServer],
        limits: ConnLimits,
        initiate: bool,
    ) -> Result<(Self, mpsc::UnboundedReceiver<ConnEvent>), TransportError> {
        Self::with_config(
            local,
            remote,
            ice_servers,
            limits,
            initiate,
            &NativeConfig::default(),
        )
        .await
    }

    /// [`NativeConnection::new`] with explicit binding and ICE settings.
    pub async fn with_config(
        local: PeerId,
        remote: PeerId,
        ice_servers: &[IceServer],
        limits: ConnLimits,
        initiate: bool,
        config: &NativeConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<ConnEvent>), TransportError> {
        let (tx, rx) = mpsc::unbounded();
        let shared = Arc::new(Shared {
            events: tx,
            closed: AtomicBool::new(false),
            open: AtomicBool::new(false),
            queue: Mutex::new(SendQueue::default()),
            in_flight: AtomicUsize::new(0),
            drain_wanted: AtomicBool::new(false),
            wake_writer: Notify::new(),
            buffered_low: Notify::new(),
            negotiation_needed: Notify::new(),
            negotiation: tokio::sync::Mutex::new(Negotiation::default()),
        });

        let settings = SettingEngineBuilder::new()
            // Answer as the DTLS (and so SCTP) server; see "Who is the SCTP client" above.
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_include_loopback_candidate(config.include_loopback)
            .with_multicast_dns_mode(match config.mdns {
                MdnsMode::Disabled => MulticastDnsMode::Disabled,
                MdnsMode::Resolve => MulticastDnsMode::QueryOnly,
            })
            .with_ice_timeouts(
                Some(config.ice_disconnected_timeout),
                Some(config.ice_failed_timeout),
                Some(config.ice_keepalive_interval),
            )
            .build();
        let rtc_config = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers.iter().map(ice_server).collect())
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(rtc_config)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler {
                shared: shared.clone(),
            }))
            .with_udp_addrs(config.udp_addrs.clone())
            .build()
            .await
            .map_err(native)?;
        CREATED.fetch_add(1, Ordering::Relaxed);
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let init = RTCDataChannelInit {
            ordered: true,
            negotiated: Some(0),
            ..Default::default()
        };
        let dc = match pc.create_data_channel(CHANNEL_LABEL, Some(init)).await {
            Ok(dc) => dc,
            Err(e) => {
                let _ = pc.close().await;
                return Err(native(e));
            }
        };
        if let Err(e) = dc.set_buffered_amount_low_threshold(LOW_WATER).await {
            let _ = pc.close().await;
            return Err(native(e));
        }

        let polite = local < remote;
        let tasks = vec![
            tokio::spawn(read_loop(dc.clone(), shared.clone(), limits.max_message)),
            tokio::spawn(write_loop(dc.clone(), shared.clone())),
            tokio::spawn(negotiate_loop(pc.clone(), shared.clone(), initiate)),
        ];
        let conn = NativeConnection {
            remote,
            polite,
            limits,
            pc,
            dc,
            shared,
            rtt: Arc::default(),
            torn_down: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
        };
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
        self.shared.open.load(Ordering::Acquire)
    }

    /// Bytes accepted by [`NativeConnection::send`] and not yet delivered: our queue plus
    /// webrtc-rs's outstanding bytes as last seen (webrtc-rs reports those only
    /// asynchronously, so that part can lag by one chunk).
    pub fn buffered_amount(&self) -> usize {
        lock(&self.shared.queue).bytes + self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Whether our queue is empty (everything accepted is with webrtc-rs, whose buffer
    /// holds at most [`HIGH_WATER`]); if not, a [`ConnEvent::Drained`] follows once it is.
    pub fn arm_drained(&self) -> bool {
        // Armed before looking, so the writer emptying the queue meanwhile either sees
        // the flag (and reports) or is seen here (and we answer now; a late report then
        // finds nobody waiting, which is harmless).
        self.shared.drain_wanted.store(true, Ordering::SeqCst);
        let empty = lock(&self.shared.queue).bytes == 0;
        if empty {
            self.shared.drain_wanted.store(false, Ordering::SeqCst);
        }
        empty
    }

    /// The round-trip time to the peer in milliseconds, as last read from webrtc-rs's
    /// stats (the selected candidate pair's `current_round_trip_time`); `None` until one
    /// read has found a measurement. When the last read is older than [`RTT_POLL`], this
    /// starts another in the background (on the current tokio runtime, if any).
    pub fn rtt_ms(&self) -> Option<f64> {
        let now = std::time::Instant::now();
        let mut r = lock(&self.rtt);
        let due = !r.polling
            && r.polled_at
                .is_none_or(|t| now.duration_since(t) >= RTT_POLL);
        if due && !self.shared.is_closed() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                r.polling = true;
                r.polled_at = Some(now);
                let (pc, rtt) = (self.pc.clone(), self.rtt.clone());
                rt.spawn(async move {
                    let report = pc.get_stats(now, StatsSelector::None).await;
                    let ms = selected_pair_rtt(&report);
                    let pair = selected_pair_types(&pc).await;
                    let mut r = lock(&rtt);
                    r.polling = false;
                    if ms.is_some() {
                        r.ms = ms;
                    }
                    if pair.is_some() {
                        r.pair = pair;
                    }
                });
            }
        }
        r.ms
    }

    /// Reads the round-trip time from the stats now (see [`NativeConnection::rtt_ms`]);
    /// `None` while no candidate pair has been selected or measured.
    pub async fn measure_rtt(&self) -> Option<f64> {
        let report = self
            .pc
            .get_stats(std::time::Instant::now(), StatsSelector::None)
            .await;
        let ms = selected_pair_rtt(&report);
        let pair = selected_pair_types(&self.pc).await;
        let mut r = lock(&self.rtt);
        if ms.is_some() {
            r.ms = ms;
        }
        if pair.is_some() {
            r.pair = pair;
        }
        ms
    }

    /// The selected ICE candidate pair's types as `local/remote` (`host`, `srflx`,
    /// `prflx` or `relay` each, e.g. `srflx/relay`), as last read with the round-trip
    /// time (see [`NativeConnection::rtt_ms`], which also starts a new read); `None`
    /// until a pair was selected.
    pub fn candidate_pair(&self) -> Option<String> {
        lock(&self.rtt).pair.clone()
    }

    /// Sends one message of up to [`ConnLimits::max_message`] bytes, in order with every
    /// other. Refuses — and loses nothing already queued — when the channel is not open,
    /// the message is too large, or the send queue is full (wait for it to drain).
    pub fn send(&self, data: &[u8]) -> Result<(), TransportError> {
        chunk::check_size(data, self.limits.max_message)?;
        if !self.is_open() {
            return Err(TransportError::NotOpen);
        }
        lock(&self.shared.queue).push_message(
            data,
            self.limits.max_queued,
            chunk::CHUNK_PAYLOAD,
        )?;
        self.shared.wake_writer.notify_one();
        Ok(())
    }

    /// Sends `bytes` as one raw data-channel message, bypassing chunking (but queued in
    /// order behind earlier sends). Exists to test how peers treat a misbehaving one;
    /// never needed otherwise.
    #[doc(hidden)]
    pub fn send_unframed(&self, bytes: &[u8]) -> Result<(), TransportError> {
        if !self.is_open() {
            return Err(TransportError::NotOpen);
        }
        lock(&self.shared.queue).push_raw(bytes.to_vec());
        self.shared.wake_writer.notify_one();
        Ok(())
    }

    /// Applies a signal from the remote peer (already authenticated by the caller).
    pub async fn handle_signal(&self, payload: SignalPayload) -> Result<(), TransportError> {
        match payload {
            SignalPayload::Offer { sdp } => self.handle_description(RTCSdpType::Offer, sdp).await,
            SignalPayload::Answer { sdp } => self.handle_description(RTCSdpType::Answer, sdp).await,
            SignalPayload::Candidate {
                candidate,
                sdp_mid,
                sdp_m_line_index,
            } => {
                if candidate.is_empty() {
                    return Ok(()); // end-of-candidates marker
                }
                let init = RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index: sdp_m_line_index,
                    ..Default::default()
                };
                let mut neg = self.shared.negotiation.lock().await;
                if self.shared.is_closed() {
                    return Ok(());
                }
                if self.pc.remote_description().await.is_none() {
                    if neg.pending_candidates.len() < MAX_PENDING_CANDIDATES {
                        neg.pending_candidates.push(init);
                    }
                    return Ok(());
                }
                self.add_candidate(&neg, init).await
            }
            SignalPayload::Abort => {
                // Closing continues in the background; nothing to wait for here.
                drop(self.close_with("remote peer aborted the connection attempt"));
                Ok(())
            }
        }
    }

    async fn add_candidate(
        &self,
        neg: &Negotiation,
        init: RTCIceCandidateInit,
    ) -> Result<(), TransportError> {
        if std::env::var_os("RHIZOME_DEBUG_ICE").is_some() {
            eprintln!("ice: remote {}", init.candidate);
        }
        match self.pc.add_ice_candidate(init).await {
            Ok(()) => Ok(()),
            // Candidates belonging to an offer we ignored during glare fail; that is fine.
            Err(_) if neg.ignore_offer => Ok(()),
            Err(e) => Err(native(e)),
        }
    }

    async fn handle_description(
        &self,
        kind: RTCSdpType,
        sdp: String,
    ) -> Result<(), TransportError> {
        let mut neg = self.shared.negotiation.lock().await;
        if self.shared.is_closed() {
            return Ok(());
        }
        // Under the negotiation lock no offer of ours is half made, so "making an offer"
        // is exactly "our offer is pending".
        let have_local_offer = self.pc.pending_local_description().await.is_some();
        let stable = !have_local_offer && self.pc.pending_remote_description().await.is_none();
        let offer_collision = kind == RTCSdpType::Offer && !stable;
        neg.ignore_offer = !self.polite && offer_collision;
        if neg.ignore_offer {
            return Ok(());
        }
        if offer_collision && have_local_offer {
            // webrtc-rs has no implicit rollback: withdraw our offer before taking theirs.
            let rollback = RTCSessionDescription::rollback(None).map_err(native)?;
            self.pc
                .set_local_description(rollback)
                .await
                .map_err(native)?;
        }
        let desc = match kind {
            RTCSdpType::Offer => RTCSessionDescription::offer(sdp),
            _ => RTCSessionDescription::answer(sdp),
        }
        .map_err(native)?;
        self.pc.set_remote_description(desc).await.map_err(native)?;
        let queued = std::mem::take(&mut neg.pending_candidates);
        for c in queued {
            self.add_candidate(&neg, c).await?;
        }
        if kind == RTCSdpType::Offer {
            let answer = self.pc.create_answer(None).await.map_err(native)?;
            let sdp = answer.sdp.clone();
            self.pc
                .set_local_description(answer)
                .await
                .map_err(native)?;
            self.shared
                .emit(ConnEvent::Signal(SignalPayload::Answer { sdp }));
        }
        Ok(())
    }

    /// Reports `Closed`, stops our tasks and starts closing the webrtc-rs connection; the
    /// returned task finishes when webrtc-rs has said goodbye to the peer. `None` when
    /// already torn down, or when there is no runtime to close on (a drop at shutdown:
    /// the runtime's end stops webrtc-rs's driver anyway).
    fn close_with(&self, reason: &str) -> Option<JoinHandle<()>> {
        self.shared.close_once(reason);
        if self.torn_down.swap(true, Ordering::AcqRel) {
            return None;
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let (pc, dc) = (self.pc.clone(), self.dc.clone());
        // webrtc-rs's driver task lives until the connection is closed, and closing is
        // async.
        let rt = tokio::runtime::Handle::try_current().ok()?;
        Some(rt.spawn(async move {
            let _ = dc.close().await;
            let _ = pc.close().await;
        }))
    }

    /// Closes the connection and stops its tasks. Idempotent.
    pub fn close(&self) {
        self.close_with("closed locally");
    }

    /// Closes like [`NativeConnection::close`] and waits until webrtc-rs has told the
    /// peer, so it notices at once rather than by ICE timeout. For a process about to exit.
    pub async fn close_and_wait(&self) {
        if let Some(closing) = self.close_with("closed locally") {
            let _ = closing.await;
        }
    }
}

impl Drop for NativeConnection {
    fn drop(&mut self) {
        self.close();
    }
}

/// The current RTT in ms of the candidate pair the transport selected (or, when it names
/// none, of a nominated one), once it has been measured.
fn selected_pair_rtt(report: &RTCStatsReport) -> Option<f64> {
    let selected = report
        .transport()
        .map(|t| t.selected_candidate_pair_id.as_str())
        .filter(|id| !id.is_empty());
    let pair = report
        .candidate_pairs()
        .filter(|p| p.responses_received > 0 && p.current_round_trip_time.is_finite())
        .filter(|p| match selected {
            Some(id) => p.stats.id == id,
            None => p.nominated,
        })
        .last()?;
    Some(pair.current_round_trip_time.max(0.0) * 1000.0)
}

/// The selected candidate pair's `local/remote` candidate types, from the ICE transport.
async fn selected_pair_types(pc: &Arc<dyn PeerConnection>) -> Option<String> {
    use webrtc::peer_connection::RTCIceCandidateType;
    let ice = pc.sctp().await?.transport().ice_transport();
    let pair = ice.get_selected_candidate_pair().await.ok()??;
    let kind = |t: RTCIceCandidateType| match t {
        RTCIceCandidateType::Host => "host",
        RTCIceCandidateType::Srflx => "srflx",
        RTCIceCandidateType::Prflx => "prflx",
        RTCIceCandidateType::Relay => "relay",
        _ => "unknown",
    };
    Some(format!(
        "{}/{}",
        kind(pair.local().typ),
        kind(pair.remote().typ)
    ))
}

fn ice_server(s: &IceServer) -> RTCIceServer {
    RTCIceServer {
        urls: s.urls.clone(),
        username: s.username.clone().unwrap_or_default(),
        credential: s.credential.clone().unwrap_or_default(),
    }
}

/// Sends the first offer on the side that initiates, when webrtc-rs says negotiation is
/// needed (creating the data channel does). Never renegotiates: the one channel is all
/// there is, and ICE restarts are not used (a failed connection is replaced instead).
async fn negotiate_loop(pc: Arc<dyn PeerConnection>, shared: Arc<Shared>, initiate: bool) {
    loop {
        shared.negotiation_needed.notified().await;
        if shared.is_closed() {
            return;
        }
        let _neg = shared.negotiation.lock().await;
        if !initiate {
            continue;
        }
        // The need is judged now, not when it was raised: webrtc-rs raises it when the
        // channel is created and again after a rollback, and by the time we get here the
        // remote offer may already have negotiated the channel. With one channel and no
        // media, any completed exchange covers everything, so there is nothing to do.
        if pc.current_local_description().await.is_some()
            || pc.pending_local_description().await.is_some()
            || pc.pending_remote_description().await.is_some()
        {
            continue;
        }
        let result = async {
            let offer = pc.create_offer(None).await?;
            let sdp = offer.sdp.clone();
            pc.set_local_description(offer).await?;
            Ok::<_, webrtc::error::Error>(sdp)
        }
        .await;
        match result {
            Ok(sdp) => shared.emit(ConnEvent::Signal(SignalPayload::Offer { sdp })),
            Err(e) => {
                if !shared.is_closed() {
                    shared.close_once(&format!("could not create an offer: {e}"));
                }
                return;
            }
        }
    }
}

/// Reads the data channel: opening, reassembled messages, buffer-low wake-ups, closing.
async fn read_loop(dc: Arc<dyn DataChannel>, shared: Arc<Shared>, max_message: usize) {
    let mut reassembler = chunk::Reassembler::new(max_message);
    let mut corrupt = false;
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnOpen if !shared.is_closed() => {
                shared.open.store(true, Ordering::Release);
                shared.emit(ConnEvent::Open);
                shared.wake_writer.notify_one();
            }
            DataChannelEvent::OnMessage(msg) => {
                if corrupt {
                    continue; // already reported; the rest of the stream is meaningless
                }
                let result = if msg.is_string {
                    // Text frames are not part of the protocol.
                    Err("text frame on a binary channel".to_string())
                } else {
                    reassembler.push(&msg.data).map_err(|e| e.to_string())
                };
                match result {
                    Ok(Some(message)) => shared.emit(ConnEvent::Message(message)),
                    Ok(None) => {}
                    Err(reason) => {
                        corrupt = true;
                        shared.emit(ConnEvent::Corrupt(reason));
                    }
                }
            }
            DataChannelEvent::OnBufferedAmountLow => shared.buffered_low.notify_one(),
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    shared.close_once("data channel closed");
}

/// Feeds queued chunks to webrtc-rs while its buffer has room.
async fn write_loop(dc: Arc<dyn DataChannel>, shared: Arc<Shared>) {
    loop {
        shared.wake_writer.notified().await;
        loop {
            if shared.is_closed() {
                return;
            }
            if !shared.open.load(Ordering::Acquire) {
                break;
            }
            let Some(chunk) = lock(&shared.queue).chunks.pop_front() else {
                break;
            };
            // Wait for room: webrtc-rs fires OnBufferedAmountLow below LOW_WATER.
            loop {
                match dc.outstanding_bytes().await {
                    Ok(n) => {
                        shared.in_flight.store(n, Ordering::Relaxed);
                        if n < HIGH_WATER as usize {
                            break;
                        }
                    }
                    Err(e) => {
                        shared.close_once(&format!("send failed: {e}"));
                        return;
                    }
                }
                if shared.is_closed() {
                    return;
                }
                let _ = tokio::time::timeout(BACKPRESSURE_RECHECK, shared.buffered_low.notified())
                    .await;
            }
            let len = chunk.len();
            let result = dc.send(BytesMut::from(&chunk[..])).await;
            let emptied = {
                let mut queue = lock(&shared.queue);
                queue.bytes = queue.bytes.saturating_sub(len);
                queue.bytes == 0
            };
            if emptied && shared.drain_wanted.swap(false, Ordering::SeqCst) {
                shared.emit(ConnEvent::Drained);
            }
            shared.in_flight.fetch_add(len, Ordering::Relaxed);
            if let Err(e) = result {
                shared.close_once(&format!("send failed: {e}"));
                return;
            }
        }
    }
}
