//! The browser platform: `RTCPeerConnection`s (`transport::web`), the WebSocket signaling
//! client (`transport::web_signaling`), the page's clock and `gloo-timers`.

use std::future::Future;

use gloo_timers::callback::{Interval, Timeout};
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen::JsValue;

use super::platform::{Connection, Created, Platform, SignalSender, SignalingSession};
use super::NodeConfig;
use crate::id::{Identity, PeerId};
use crate::signal::{SignalPayload, SignedEnvelope};
use crate::transport::web::{self, WebConnection};
use crate::transport::web_signaling::{
    SignalingClient, SignalingError, SignalingEvent, SignalingSender,
};
use crate::transport::TransportError;

/// The browser (a window or a worker).
pub(crate) struct Web;

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// The global `performance.now()`, imported directly: one call into JS per clock read
    /// (a lookup by name made two JS strings and ~8 calls each time). `Err` where there
    /// is no `performance`.
    #[wasm_bindgen(catch, js_namespace = performance, js_name = now)]
    fn performance_now() -> Result<f64, JsValue>;
}

impl Platform for Web {
    type Conn = WebConnection;
    type Signaling = SignalingClient;
    type Timeout = Timeout;
    type Interval = Interval;

    /// `performance.now()`, in a window or a worker; `Date.now()` where there is no
    /// `performance`. The overlay reads the clock on every input (each received message,
    /// each timer).
    fn now_ms() -> u64 {
        let t = performance_now().unwrap_or_else(|_| js_sys::Date::now());
        t.max(0.0) as u64
    }

    fn spawn_local(task: impl Future<Output = ()> + 'static) {
        wasm_bindgen_futures::spawn_local(task);
    }

    fn sleep(ms: u32) -> impl Future<Output = ()> {
        TimeoutFuture::new(ms)
    }

    fn timeout(ms: u32, f: impl FnOnce() + 'static) -> Timeout {
        Timeout::new(ms, f)
    }

    fn interval(ms: u32, f: impl FnMut() + 'static) -> Interval {
        Interval::new(ms, f)
    }

    fn wall_ms() -> u64 {
        js_sys::Date::now().max(0.0) as u64
    }

    fn connections_created() -> u32 {
        web::connections_created()
    }

    fn connections_alive() -> u32 {
        web::connections_alive()
    }

    fn warn(message: &str) {
        web_sys::console::warn_1(&message.into());
    }

    fn prewarm(config: &NodeConfig) {
        web::prewarm(&config.ice_servers);
    }

    fn connect(
        local: PeerId,
        remote: PeerId,
        config: &NodeConfig,
        initiate: bool,
    ) -> impl Future<Output = Created<WebConnection>> + 'static {
        // The browser's constructor is synchronous: the connection exists now.
        let created = WebConnection::new(
            local,
            remote,
            &config.ice_servers,
            config.limits.clone(),
            initiate,
        );
        std::future::ready(created)
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

impl Connection for WebConnection {
    fn send(&self, data: &[u8]) -> Result<(), TransportError> {
        WebConnection::send(self, data)
    }

    fn is_open(&self) -> bool {
        WebConnection::is_open(self)
    }

    fn buffered_amount(&self) -> usize {
        WebConnection::buffered_amount(self)
    }

    fn arm_drained(&self) -> bool {
        WebConnection::arm_drained(self)
    }

    fn rtt_ms(&self) -> Option<f64> {
        WebConnection::rtt_ms(self)
    }

    fn candidate_pair(&self) -> Option<String> {
        WebConnection::candidate_pair(self)
    }

    fn close(&self) {
        WebConnection::close(self)
    }

    async fn close_gracefully(&self) {
        WebConnection::close(self)
    }

    async fn handle_signal(&self, payload: SignalPayload) -> Result<(), TransportError> {
        WebConnection::handle_signal(self, payload).await
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
