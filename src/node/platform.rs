//! What the node driver needs from the machine it runs on, and nothing more.
//!
//! The driver (`driver.rs`) is one piece of code for the browser and for a native
//! process; this private trait is the seam between them, in the spirit of matchbox's
//! `wasm.rs` / `native.rs` split. A platform names its connection and signaling-client
//! types and supplies a clock, a way to spawn a task on the current thread, a sleep, a
//! one-shot timer and an interval. `web.rs` implements it over `web-sys` and
//! `gloo-timers`; `native.rs` over webrtc-rs and a tokio `LocalSet`.
//!
//! Everything here is single-threaded by design: the driver's state lives in an `Rc`, and
//! every task runs on the thread that created the node.

use std::future::Future;

use futures_channel::mpsc;

use super::NodeConfig;
use crate::id::{Identity, PeerId};
use crate::signal::{SignalPayload, SignedEnvelope};
use crate::transport::signaling_types::{SignalingError, SignalingEvent};
use crate::transport::{ConnEvent, IceServer, TransportError};

/// A result of creating a connection: the connection and the stream of its events.
pub(crate) type Created<C> = Result<(C, mpsc::UnboundedReceiver<ConnEvent>), TransportError>;

/// The machine the node runs on.
pub(crate) trait Platform: Sized + 'static {
    /// One WebRTC connection to one neighbour.
    type Conn: Connection;
    /// A joined session with the signaling server.
    type Signaling: SignalingSession;
    /// A pending one-shot timer; dropping it cancels it.
    type Timeout;
    /// A running interval; dropping it stops it.
    type Interval;

    /// Milliseconds on a monotonic clock (any fixed origin).
    fn now_ms() -> u64;
    /// Runs `task` on this thread, concurrently with the caller.
    fn spawn_local(task: impl Future<Output = ()> + 'static);
    /// Completes after `ms` milliseconds.
    fn sleep(ms: u32) -> impl Future<Output = ()>;
    /// Calls `f` once after `ms` milliseconds, unless the handle is dropped first.
    fn timeout(ms: u32, f: impl FnOnce() + 'static) -> Self::Timeout;
    /// Calls `f` every `ms` milliseconds (first after `ms`) until the handle is dropped.
    fn interval(ms: u32, f: impl FnMut() + 'static) -> Self::Interval;
    /// Milliseconds since the Unix epoch (the wall clock, for attempt ids).
    fn wall_ms() -> u64;
    /// Connections created by this page or process so far, all nodes together.
    fn connections_created() -> u32;
    /// Connections of this page that still count against its limit (created and not yet
    /// garbage-collected), all nodes together; 0 where there is no such limit.
    fn connections_alive() -> u32 {
        0
    }
    /// Tells the developer something once (the browser's console); natively nothing,
    /// since a library does not write to a process's stderr on its own.
    fn warn(_message: &str) {}
    /// Called while the node's first signaling session is opening: a platform may prepare
    /// what its first connection will need (the browser makes an `RTCPeerConnection`).
    fn prewarm(_config: &NodeConfig) {}
    /// Creates a connection to `remote`. In the browser it exists when this returns (the
    /// future is ready at once); natively it is made by the returned future.
    fn connect(
        local: PeerId,
        remote: PeerId,
        config: &NodeConfig,
        initiate: bool,
    ) -> impl Future<Output = Created<Self::Conn>> + 'static;
    /// Joins `room` on the first of `urls` that lets us in.
    fn join_server(
        urls: Vec<String>,
        identity: Identity,
        room: String,
        timeout_ms: u32,
    ) -> impl Future<Output = Result<(Self::Signaling, Vec<PeerId>), SignalingError>> + 'static;
}

/// What the driver does with a connection (`WebConnection`, `NativeConnection`).
pub(crate) trait Connection: 'static {
    /// Queues one message.
    fn send(&self, data: &[u8]) -> Result<(), TransportError>;
    /// Whether the data channel is open.
    fn is_open(&self) -> bool;
    /// Bytes queued and not yet sent.
    fn buffered_amount(&self) -> usize;
    /// Whether nothing waits in the transport's own queue; if something does, a
    /// `ConnEvent::Drained` follows once it is all with the WebRTC stack.
    fn arm_drained(&self) -> bool;
    /// Round-trip time to the peer in ms, as last measured; `None` until measured. Cheap:
    /// the transport re-measures in the background at most every 2 s, never per message.
    fn rtt_ms(&self) -> Option<f64>;
    /// The selected ICE candidate pair's types, `local/remote`, as last read with the
    /// round-trip time; `None` until known or where the platform does not tell.
    fn candidate_pair(&self) -> Option<String> {
        None
    }
    /// Closes at once; a `Closed` event follows (or has been sent).
    fn close(&self);
    /// Closes and, where the platform can tell, waits until the peer has been told (a
    /// native process may exit right after; a page goes on, so there it is `close`).
    async fn close_gracefully(&self);
    /// Applies a signal from the remote peer.
    async fn handle_signal(&self, payload: SignalPayload) -> Result<(), TransportError>;
}

/// What the driver does with a signaling session (`web_signaling`, `native_signaling`).
pub(crate) trait SignalingSession: 'static {
    /// A cheap handle that sends on the session while a task reads its events.
    type Sender: SignalSender;
    /// A sender for this session.
    fn sender(&self) -> Self::Sender;
    /// Sends a heartbeat.
    fn ping(&self) -> Result<(), SignalingError>;
    /// The ICE servers the server offered when we joined.
    fn ice_servers(&self) -> Vec<IceServer>;
    /// The next thing the server said; `None` once closed. Cancel-safe.
    async fn next_event(&mut self) -> Option<SignalingEvent>;
    /// Closes the session.
    fn close(&self);
}

/// The sending half of a signaling session.
pub(crate) trait SignalSender: Clone + 'static {
    /// Relays an envelope to another member of the room.
    fn send_signal(&self, envelope: &SignedEnvelope) -> Result<(), SignalingError>;
}
