//! The browser's client of the bootstrap signaling server (protocol in `signal.rs` and
//! `signaling/PROTOCOL.md`).
//!
//! A node uses the server twice at most: to join (the server's `welcome` names a few
//! members of the room to connect to) and when it finds itself isolated. In between it
//! relays signal envelopes for connections to those members. Everything that arrives is
//! parsed defensively: a frame that is not a valid server message becomes a
//! [`SignalingEvent::Error`], never a panic, and the session goes on.

use std::cell::RefCell;
use std::rc::Rc;

use futures_channel::mpsc;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use gloo_timers::future::TimeoutFuture;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::id::{Identity, PeerId};
use crate::signal::{ClientMsg, SignedEnvelope};
use crate::transport::IceServer;

use super::describe_js_error;
use super::signaling_types::{first_that_joins, session_event, Handshake, Step};
pub use super::signaling_types::{SignalingError, SignalingEvent};

enum Raw {
    Open,
    Text(String),
    Closed(String),
}

/// A joined session with a signaling server.
pub struct SignalingClient {
    url: String,
    ws: WebSocket,
    raw: mpsc::UnboundedReceiver<Raw>,
    closed: Rc<RefCell<bool>>,
    _callbacks: Vec<Closure<dyn FnMut(JsValue)>>,
    ice_servers: Vec<IceServer>,
}

impl SignalingClient {
    /// Tries each URL in order and returns the first session that joins `room`, with the
    /// members the server introduced us to.
    pub async fn connect_any(
        urls: &[String],
        identity: &Identity,
        room: &str,
        deadline_ms: u32,
    ) -> Result<(Self, Vec<PeerId>), SignalingError> {
        first_that_joins(urls, |url| Self::connect(url, identity, room, deadline_ms)).await
    }

    /// Connects to one server, proves our identity and joins `room`.
    pub async fn connect(
        url: &str,
        identity: &Identity,
        room: &str,
        deadline_ms: u32,
    ) -> Result<(Self, Vec<PeerId>), SignalingError> {
        let unreachable = |reason: String| SignalingError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let ws = WebSocket::new(url).map_err(|e| unreachable(describe_js_error(&e)))?;
        let (tx, raw) = mpsc::unbounded();
        let closed = Rc::new(RefCell::new(false));
        let mut callbacks: Vec<Closure<dyn FnMut(JsValue)>> = Vec::new();
        {
            let tx = tx.clone();
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |_| {
                let _ = tx.unbounded_send(Raw::Open);
            });
            ws.set_onopen(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }
        {
            let tx = tx.clone();
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                let text = ev
                    .dyn_into::<MessageEvent>()
                    .ok()
                    .and_then(|m| m.data().as_string());
                // Binary frames are not part of the protocol: report them as text that
                // fails to parse rather than dropping them silently.
                let _ = tx.unbounded_send(Raw::Text(text.unwrap_or_default()));
            });
            ws.set_onmessage(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }
        {
            let tx = tx.clone();
            let closed = closed.clone();
            let cb = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                *closed.borrow_mut() = true;
                let reason = match ev.dyn_into::<CloseEvent>() {
                    Ok(c) => format!("closed with code {} {}", c.code(), c.reason()),
                    Err(_) => "connection error".to_string(),
                };
                let _ = tx.unbounded_send(Raw::Closed(reason));
            });
            ws.set_onclose(Some(cb.as_ref().unchecked_ref()));
            callbacks.push(cb);
        }

        let mut client = SignalingClient {
            url: url.to_string(),
            ws,
            raw,
            closed,
            _callbacks: callbacks,
            ice_servers: Vec::new(),
        };
        let peers = with_deadline(url, deadline_ms, client.handshake(identity, room)).await?;
        Ok((client, peers))
    }

    async fn handshake(
        &mut self,
        identity: &Identity,
        room: &str,
    ) -> Result<Vec<PeerId>, SignalingError> {
        let url = self.url.clone();
        let mut handshake = Handshake::new(&url, identity, room);
        loop {
            let raw = self.raw.next().await.ok_or(SignalingError::Closed)?;
            let text = match raw {
                Raw::Open => continue,
                Raw::Closed(reason) => return Err(self.unreachable(reason)),
                Raw::Text(text) => text,
            };
            match handshake.on_text(&text)? {
                Step::Send(msg) => self.send(&msg)?,
                Step::Wait => {}
                Step::Joined(peers, ice_servers) => {
                    self.ice_servers = ice_servers;
                    return Ok(peers);
                }
            }
        }
    }

    fn unreachable(&self, reason: String) -> SignalingError {
        SignalingError::Unreachable {
            url: self.url.clone(),
            reason,
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The ICE servers the server offered in its `welcome` (later ones arrive as
    /// [`SignalingEvent::IceServers`]).
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.ice_servers
    }

    fn send(&self, msg: &ClientMsg) -> Result<(), SignalingError> {
        self.sender().send(msg)
    }

    /// Relays a signed envelope to another member of the room.
    pub fn send_signal(&self, envelope: &SignedEnvelope) -> Result<(), SignalingError> {
        self.sender().send_signal(envelope)
    }

    /// Sends a heartbeat.
    pub fn ping(&self) -> Result<(), SignalingError> {
        self.send(&ClientMsg::Ping)
    }

    /// A handle that sends on this session while another task reads its events.
    pub fn sender(&self) -> SignalingSender {
        SignalingSender {
            url: self.url.clone(),
            ws: self.ws.clone(),
            closed: self.closed.clone(),
        }
    }

    /// The next thing the server said; `None` after [`SignalingEvent::Closed`].
    pub async fn next_event(&mut self) -> Option<SignalingEvent> {
        loop {
            let raw = self.raw.next().await?;
            let text = match raw {
                Raw::Open => continue,
                Raw::Closed(reason) => {
                    self.raw.close();
                    return Some(SignalingEvent::Closed(reason));
                }
                Raw::Text(text) => text,
            };
            match session_event(&text) {
                Some(event) => return Some(event),
                None => continue,
            }
        }
    }

    /// Closes the session and unhooks the callbacks. Idempotent.
    pub fn close(&self) {
        *self.closed.borrow_mut() = true;
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

impl Drop for SignalingClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// The sending half of a [`SignalingClient`] session; cheap to clone.
#[derive(Clone)]
pub struct SignalingSender {
    url: String,
    ws: WebSocket,
    closed: Rc<RefCell<bool>>,
}

impl SignalingSender {
    fn send(&self, msg: &ClientMsg) -> Result<(), SignalingError> {
        if *self.closed.borrow() {
            return Err(SignalingError::Closed);
        }
        self.ws
            .send_with_str(&msg.to_text())
            .map_err(|e| SignalingError::Unreachable {
                url: self.url.clone(),
                reason: describe_js_error(&e),
            })
    }

    /// Relays a signed envelope to another member of the room.
    pub fn send_signal(&self, envelope: &SignedEnvelope) -> Result<(), SignalingError> {
        self.send(&ClientMsg::Signal {
            to: envelope.to,
            envelope: envelope.to_json(),
        })
    }

    /// Sends a heartbeat.
    pub fn ping(&self) -> Result<(), SignalingError> {
        self.send(&ClientMsg::Ping)
    }
}

async fn with_deadline<T>(
    url: &str,
    ms: u32,
    fut: impl std::future::Future<Output = Result<T, SignalingError>>,
) -> Result<T, SignalingError> {
    let fut = std::pin::pin!(fut);
    match select(fut, TimeoutFuture::new(ms)).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(SignalingError::Timeout {
            url: url.to_string(),
            ms,
        }),
    }
}
