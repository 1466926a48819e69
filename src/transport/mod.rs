//! Transports: how bytes reach a neighbour, and how the signaling server is reached.
//!
//! The overlay core never touches these; the node driver owns them and translates
//! between their events and the core's inputs. In the browser that is `web` (one
//! `RTCPeerConnection` per neighbour) and `web_signaling` (the WebSocket client of the
//! bootstrap server).

pub mod web;
pub mod web_signaling;

use wasm_bindgen::{JsCast, JsValue};

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
}

/// A readable one-line description of a thrown JS value.
pub(crate) fn describe_js_error(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        let name: String = err.name().into();
        let msg: String = err.message().into();
        return format!("{name}: {msg}");
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}
