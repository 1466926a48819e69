//! Transports: how bytes reach a neighbour, and how the signaling server is reached.
//!
//! The overlay core never touches these; the node driver owns them and translates
//! between their events and the core's inputs. In the browser that is `web` (one
//! `RTCPeerConnection` per neighbour) and `web_signaling` (the WebSocket client of the
//! bootstrap server).

pub mod chunk;
#[cfg(target_arch = "wasm32")]
pub mod web;
#[cfg(target_arch = "wasm32")]
pub mod web_signaling;

/// Why a transport operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The browser refused; its message is kept.
    #[error("browser error: {0}")]
    Browser(String),
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
