//! A native process's client of the bootstrap signaling server (protocol in `signal.rs`
//! and `signaling/PROTOCOL.md`), over tokio-tungstenite.
//!
//! The twin of `web_signaling.rs`, with the same calls and the same
//! [`SignalingEvent`]s / [`SignalingError`]s (both in `signaling_types.rs`), so the node
//! driver does not care which one it holds. A node uses the server to join (the server's
//! `welcome` names a few members of the room to connect to) and to relay signal envelopes
//! until its connections are up. Everything that arrives is parsed defensively: a frame
//! that is not a valid server message becomes a [`SignalingEvent::Error`], never a panic,
//! and the session goes on.
//!
//! The socket is split: a writer task owns the sending half, fed through an unbounded
//! channel, so [`SignalingSender`] is cheap to clone and its `send` is synchronous like the
//! browser's `WebSocket.send`; the reading half stays in the [`SignalingClient`], read by
//! [`SignalingClient::next_event`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::id::{Identity, PeerId};
use crate::signal::{ClientMsg, SignedEnvelope};
use crate::transport::IceServer;

use super::signaling_types::{first_that_joins, session_event, Handshake, Step};
pub use super::signaling_types::{SignalingError, SignalingEvent};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A joined session with a signaling server.
pub struct SignalingClient {
    url: String,
    reader: SplitStream<Socket>,
    sender: SignalingSender,
    writer: Option<JoinHandle<()>>,
    ended: bool,
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

    /// Connects to one server, proves our identity and joins `room`, all within
    /// `deadline_ms`. Must run inside a tokio runtime.
    pub async fn connect(
        url: &str,
        identity: &Identity,
        room: &str,
        deadline_ms: u32,
    ) -> Result<(Self, Vec<PeerId>), SignalingError> {
        let deadline = Duration::from_millis(u64::from(deadline_ms));
        match tokio::time::timeout(deadline, Self::connect_now(url, identity, room)).await {
            Ok(result) => result,
            Err(_) => Err(SignalingError::Timeout {
                url: url.to_string(),
                ms: deadline_ms,
            }),
        }
    }

    async fn connect_now(
        url: &str,
        identity: &Identity,
        room: &str,
    ) -> Result<(Self, Vec<PeerId>), SignalingError> {
        let (socket, _response) = tokio_tungstenite::connect_async(url).await.map_err(|e| {
            SignalingError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            }
        })?;
        let (mut sink, reader) = socket.split();
        let (tx, mut rx) = mpsc::unbounded::<Message>();
        let closed = Arc::new(AtomicBool::new(false));
        let writer = {
            let closed = closed.clone();
            tokio::spawn(async move {
                while let Some(msg) = rx.next().await {
                    let is_close = matches!(msg, Message::Close(_));
                    if sink.send(msg).await.is_err() || is_close {
                        break;
                    }
                }
                closed.store(true, Ordering::Release);
                let _ = sink.close().await;
            })
        };
        let mut client = SignalingClient {
            url: url.to_string(),
            reader,
            sender: SignalingSender {
                url: url.to_string(),
                tx,
                closed,
            },
            writer: Some(writer),
            ended: false,
            ice_servers: Vec::new(),
        };
        let peers = client.handshake(identity, room).await?;
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
            let text = match self.reader.next().await {
                None => return Err(self.unreachable("connection closed during join".into())),
                Some(Err(e)) => return Err(self.unreachable(e.to_string())),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Err(self.unreachable(close_reason(frame.as_ref())))
                }
                Some(Ok(Message::Binary(_))) => {
                    return Err(self.protocol("binary frame during join".into()))
                }
                Some(Ok(_)) => continue, // ping/pong, answered by tungstenite
            };
            match handshake.on_text(text.as_str())? {
                Step::Send(msg) => self.sender.send(&msg)?,
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

    fn protocol(&self, reason: String) -> SignalingError {
        SignalingError::Protocol {
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

    /// Relays a signed envelope to another member of the room.
    pub fn send_signal(&self, envelope: &SignedEnvelope) -> Result<(), SignalingError> {
        self.sender.send_signal(envelope)
    }

    /// Sends a heartbeat.
    pub fn ping(&self) -> Result<(), SignalingError> {
        self.sender.send(&ClientMsg::Ping)
    }

    /// A handle that sends on this session while another task reads its events.
    pub fn sender(&self) -> SignalingSender {
        self.sender.clone()
    }

    /// The next thing the server said; `None` after [`SignalingEvent::Closed`].
    pub async fn next_event(&mut self) -> Option<SignalingEvent> {
        if self.ended {
            return None;
        }
        loop {
            let text = match self.reader.next().await {
                None => return Some(self.end("connection closed".into())),
                Some(Err(e)) => return Some(self.end(e.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    return Some(self.end(close_reason(frame.as_ref())))
                }
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    return Some(SignalingEvent::Error {
                        code: None,
                        message: "binary frame from server".into(),
                        peer: None,
                    })
                }
                Some(Ok(_)) => continue, // ping/pong, answered by tungstenite
            };
            match session_event(text.as_str()) {
                Some(event) => return Some(event),
                None => continue,
            }
        }
    }

    fn end(&mut self, reason: String) -> SignalingEvent {
        self.ended = true;
        self.sender.closed.store(true, Ordering::Release);
        SignalingEvent::Closed(reason)
    }

    /// Closes the session (a WebSocket close frame, then the socket). Idempotent.
    pub fn close(&self) {
        if !self.sender.closed.swap(true, Ordering::AcqRel) {
            let _ = self.sender.tx.unbounded_send(Message::Close(None));
        }
        self.sender.tx.close_channel();
    }
}

impl Drop for SignalingClient {
    fn drop(&mut self) {
        self.close();
        // The writer ends by itself once it has sent the close frame; if it is stuck on a
        // dead socket, don't let it outlive the session by more than a moment.
        let Some(writer) = self.writer.take() else {
            return;
        };
        if writer.is_finished() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let abort = writer.abort_handle();
                    if tokio::time::timeout(Duration::from_secs(2), writer)
                        .await
                        .is_err()
                    {
                        abort.abort();
                    }
                });
            }
            Err(_) => writer.abort(),
        }
    }
}

/// The sending half of a [`SignalingClient`] session; cheap to clone.
#[derive(Clone)]
pub struct SignalingSender {
    url: String,
    tx: mpsc::UnboundedSender<Message>,
    closed: Arc<AtomicBool>,
}

impl SignalingSender {
    fn send(&self, msg: &ClientMsg) -> Result<(), SignalingError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SignalingError::Closed);
        }
        let text = serde_json::to_string(msg).map_err(|e| SignalingError::Protocol {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        self.tx
            .unbounded_send(Message::text(text))
            .map_err(|_| SignalingError::Closed)
    }

    /// Relays a signed envelope to another member of the room.
    pub fn send_signal(&self, envelope: &SignedEnvelope) -> Result<(), SignalingError> {
        self.send(&ClientMsg::Signal {
            to: envelope.to,
            envelope: envelope.to_json(),
        })
    }
}

fn close_reason(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed with code {} {}", u16::from(f.code), f.reason),
        None => "closed".to_string(),
    }
}
