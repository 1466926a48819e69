//! The native platform: webrtc-rs connections (`transport::native`), the tokio-tungstenite
//! signaling client (`transport::native_signaling`) and tokio's clock and timers.
//!
//! The driver is `Rc`-based and single-threaded, so every task of a node is spawned with
//! `tokio::task::spawn_local`: a native node lives inside a `tokio::task::LocalSet` (any
//! runtime flavour; a current-thread runtime is enough for many nodes). The transports'
//! own tasks are ordinary tokio tasks.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use super::platform::{Connection, Created, Platform, SignalSender, SignalingSession};
use super::NodeConfig;
use crate::id::{Identity, PeerId};
use crate::signal::{SignalPayload, SignedEnvelope};
use crate::transport::native::{self, NativeConnection};
use crate::transport::native_signaling::{
    SignalingClient, SignalingError, SignalingEvent, SignalingSender,
};
use crate::transport::TransportError;

/// A native process, inside a tokio `LocalSet`.
pub(crate) struct Native;

/// A timer task, cancelled when this is dropped.
pub(crate) struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

impl Platform for Native {
    type Conn = NativeConnection;
    type Signaling = SignalingClient;
    type Timeout = AbortOnDrop;
    type Interval = AbortOnDrop;

    /// Milliseconds since the first call in this process.
    fn now_ms() -> u64 {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn spawn_local(task: impl Future<Output = ()> + 'static) {
        tokio::task::spawn_local(task);
    }

    fn sleep(ms: u32) -> impl Future<Output = ()> {
        tokio::time::sleep(millis(ms))
    }

    fn timeout(ms: u32, f: impl FnOnce() + 'static) -> AbortOnDrop {
        let task = tokio::task::spawn_local(async move {
            tokio::time::sleep(millis(ms)).await;
            f();
        });
        AbortOnDrop(task.abort_handle())
    }

    fn interval(ms: u32, mut f: impl FnMut() + 'static) -> AbortOnDrop {
        let task = tokio::task::spawn_local(async move {
            let period = millis(ms.max(1));
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                f();
            }
        });
        AbortOnDrop(task.abort_handle())
    }

    fn wall_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn connections_created() -> u32 {
        native::connections_created()
    }

    fn connect(
        local: PeerId,
        remote: PeerId,
        config: &NodeConfig,
        initiate: bool,
    ) -> impl Future<Output = Created<NativeConnection>> + 'static {
        let ice = config.ice_servers.clone();
        let limits = config.limits.clone();
        let native = config.native.clone();
        async move {
            NativeConnection::with_config(local, remote, &ice, limits, initiate, &native).await
        }
    }

    async fn join_server(
        urls: Vec<String>,
        identity: Identity,
        room: String,
        timeout_ms: u32,
    ) -> Result<(SignalingClient, Vec<PeerId>), SignalingError> {
        SignalingClient::connect_any(&urls, &identity, &room, timeout_ms).await
    }
}

impl Connection for NativeConnection {
    fn send(&self, data: &[u8]) -> Result<(), TransportError> {
        NativeConnection::send(self, data)
    }

    fn is_open(&self) -> bool {
        NativeConnection::is_open(self)
    }

    fn buffered_amount(&self) -> usize {
        NativeConnection::buffered_amount(self)
    }

    fn arm_drained(&self) -> bool {
        NativeConnection::arm_drained(self)
    }

    fn rtt_ms(&self) -> Option<f64> {
        NativeConnection::rtt_ms(self)
    }

    fn candidate_pair(&self) -> Option<String> {
        NativeConnection::candidate_pair(self)
    }

    fn close(&self) {
        NativeConnection::close(self)
    }

    async fn close_gracefully(&self) {
        NativeConnection::close_and_wait(self).await
    }

    async fn handle_signal(&self, payload: SignalPayload) -> Result<(), TransportError> {
        NativeConnection::handle_signal(self, payload).await
    }
}

impl SignalingSession for SignalingClient {
    type Sender = SignalingSender;

    fn sender(&self) -> SignalingSender {
        SignalingClient::sender(self)
    }

    fn ping(&self) -> Result<(), SignalingError> {
        SignalingClient::ping(self)
    }

    fn ice_servers(&self) -> Vec<crate::transport::IceServer> {
        SignalingClient::ice_servers(self).to_vec()
    }

    async fn next_event(&mut self) -> Option<SignalingEvent> {
        SignalingClient::next_event(self).await
    }

    fn close(&self) {
        SignalingClient::close(self)
    }
}

impl SignalSender for SignalingSender {
    fn send_signal(&self, envelope: &SignedEnvelope) -> Result<(), SignalingError> {
        SignalingSender::send_signal(self, envelope)
    }
}
