//! Transports: how bytes reach a neighbour, and how the signaling server is reached.
//!
//! The overlay core never touches these; the node driver owns them and translates
//! between their events and the core's inputs. In the browser that is `web` (one
//! `RTCPeerConnection` per neighbour) and `web_signaling` (the WebSocket client of the
//! bootstrap server). A native process (feature `native`) has the same pair over
//! webrtc-rs and tokio: `native` and `native_signaling`, with the same API shape and the
//! same events, so one driver design serves both. What the two sides share lives here
//! (connection events, limits, errors) and in `chunk` and `signaling_types`; `guard`
//! holds the bounds the driver puts on handshakes and signals.

use crate::signal::SignalPayload;

pub mod chunk;
/// Bounds on a node's unsolicited handshakes, its page's connections and its signals'
/// pace; freshness of offers.
pub(crate) mod guard;
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub mod native;
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub mod native_signaling;
#[cfg(any(target_arch = "wasm32", feature = "native"))]
pub mod signaling_types;
#[cfg(target_arch = "wasm32")]
pub mod web;
#[cfg(target_arch = "wasm32")]
pub mod web_signaling;

/// Limits of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Largest message sent or accepted (it travels in 16 KiB chunks).
    pub max_message: usize,
    /// Most bytes waiting in our send queue; beyond it `send` refuses with
    /// [`TransportError::Backpressure`] and nothing already queued is lost.
    pub max_queued: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_message: 16 * 1024 * 1024,
            max_queued: 32 * 1024 * 1024,
        }
    }
}

/// An ICE server (STUN or TURN), as in `RTCIceServer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Something that happened on a connection (browser or native).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// A signal to deliver to the remote peer (through the server or the overlay).
    Signal(SignalPayload),
    /// The data channel is open: messages can flow.
    Open,
    /// A whole message arrived (reassembled from its chunks).
    Message(Vec<u8>),
    /// Our send queue emptied after `arm_drained` found it non-empty: everything
    /// accepted by `send` is now with the WebRTC stack (whose own buffer holds at most
    /// the transport's high water mark). At most one per arming.
    Drained,
    /// The remote peer broke the framing; the caller should report and drop it.
    Corrupt(String),
    /// The connection is gone, for the reason given. No event follows.
    Closed(String),
}

/// Why a transport operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The browser refused; its message is kept.
    #[error("browser error: {0}")]
    Browser(String),
    /// The native WebRTC stack (webrtc-rs) refused; its message is kept.
    #[error("webrtc-rs error: {0}")]
    Native(String),
    /// The data channel is not open (yet, or any more).
    #[error("data channel is not open")]
    NotOpen,
    /// The message exceeds what one data-channel message may carry.
    #[error("message of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size of the refused message.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The send buffer is full; try again when it drains.
    #[error("send buffer is full")]
    Backpressure,
    /// The remote peer broke the framing (garbage or an oversized message).
    #[error("remote peer broke the framing: {0}")]
    Corrupt(#[from] chunk::ChunkError),
}

/// A readable one-line description of a thrown JS value.
#[cfg(target_arch = "wasm32")]
pub(crate) fn describe_js_error(e: &wasm_bindgen::JsValue) -> String {
    use wasm_bindgen::JsCast;
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        let name: String = err.name().into();
        let msg: String = err.message().into();
        return format!("{name}: {msg}");
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}
