//! One WebSocket session, from `hello` to the close frame.
//!
//! Each connection is one task that owns its socket and waits on four things at once:
//! server shutdown, its mailbox (signals relayed to it, or news that a newer session of
//! the same peer replaced it), its deadline (join deadline until joined, then idle
//! timeout), and frames from its client. Because the task alone writes to its socket, a
//! client that stops reading stalls only its own task (bounded by the write timeout)
//! and fills only its own mailbox; everyone else keeps going.
//!
//! Every refusal is an `error {code, message}` frame. Protocol violations also count
//! against the session's error budget; the session survives `max_errors` of them and is
//! closed on the next. Refusals that are nobody's fault (`room-full`, `unknown-peer`,
//! `peer-busy`, ...) do not count. A session that ends because of the server's decision
//! gets the error frame, then a close frame whose code names the reason (see
//! [`ErrorCode::close_code`]), then a short wait for the client's close reply so that
//! neither frame is lost to a TCP reset.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use rhizome::id::{PeerId, Signature};
use rhizome::signal::{
    verify_join_proof, ErrorCode, ServerMsg, CLOSE_TOO_BIG, MAX_ROOM_LEN, PROTOCOL_VERSION,
};
use serde_json::value::RawValue;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, info_span, Instrument};

use crate::connections::ConnPermit;
use crate::mailbox::{Delivery, Mailbox};
use crate::rate_limit::TokenBucket;
use crate::rooms::{JoinError, Member, RelayError, SessionId};
use crate::server::Shared;
use crate::telemetry;

/// Most relayed frames written with one flush.
const MAX_BATCH: usize = 32;

/// Longest wait for the client's close reply after the server sent its close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How a session ends.
enum End {
    /// The client closed or the connection broke: nothing more to say.
    Disconnected,
    /// The server ends the session: error frame with `code`, then a close frame.
    Close {
        code: ErrorCode,
        message: String,
        close: u16,
    },
}

impl End {
    fn close(code: ErrorCode, message: impl Into<String>) -> Self {
        End::Close {
            code,
            message: message.into(),
            // Every code that ends a session has a close code; 1008 is the fallback.
            close: code.close_code().unwrap_or(1008),
        }
    }
}

/// Runs one session to its end. `origin_ok` is the verdict of the Origin allow-list at
/// upgrade time; `_slots` are the session's shares of `max_sessions` and of
/// `max_connections`, released on return.
pub(crate) async fn run(
    ws: WebSocket,
    shared: Arc<Shared>,
    origin_ok: bool,
    _slots: (OwnedSemaphorePermit, Option<ConnPermit>),
) {
    let id = shared.next_session_id();
    telemetry::session_opened();
    let mailbox = Arc::new(Mailbox::new(shared.config.send_queue));
    let mut session = Session {
        id,
        nonce: new_nonce(),
        joined: None,
        signal_prefix: String::new(),
        errors: 0,
        bucket: TokenBucket::new(
            shared.config.rate_burst,
            shared.config.rate_per_sec,
            Instant::now(),
        ),
        mailbox,
        ws,
        shared,
    };
    async move {
        let end = if origin_ok {
            session.serve().await
        } else {
            End::close(
                ErrorCode::OriginForbidden,
                "this page's origin may not use this server",
            )
        };
        // Leave first, so nobody relays to a session that is closing.
        session.leave();
        session.mailbox.close();
        if let End::Close {
            code,
            message,
            close,
        } = end
        {
            debug!(%code, "closing session");
            Box::pin(session.close(code, message, close)).await;
        } else {
            debug!("client went away");
        }
        telemetry::session_closed();
    }
    .instrument(info_span!("session", id))
    .await
}

struct Session {
    id: SessionId,
    ws: WebSocket,
    shared: Arc<Shared>,
    /// The one-time value this session's join proof must sign.
    nonce: String,
    /// Room and peer id once joined.
    joined: Option<(String, PeerId)>,
    /// [`signal_prefix`] of this session's peer, once joined.
    signal_prefix: String,
    /// Protocol errors so far.
    errors: u32,
    bucket: TokenBucket,
    /// Handed to the registry so other sessions can relay to this one.
    mailbox: Arc<Mailbox>,
}

impl Session {
    async fn serve(&mut self) -> End {
        let hello = ServerMsg::Hello {
            nonce: self.nonce.clone(),
            version: PROTOCOL_VERSION,
        };
        if let Err(end) = self.send(&hello).await {
            return end;
        }
        let shared = self.shared.clone();
        let config = &shared.config;
        let mailbox = self.mailbox.clone();
        let join_by = Instant::now() + config.join_deadline;
        let mut idle_at = Instant::now() + config.idle_timeout;
        // The deadline in force: the join deadline until joined, then the idle timeout.
        let deadline = |joined: bool, idle_at: Instant| {
            if !joined && join_by <= idle_at {
                (join_by, ErrorCode::JoinTimeout)
            } else {
                (idle_at, ErrorCode::IdleTimeout)
            }
        };
        // One timer per session, re-armed only when it fires early: a busy session moves
        // its idle deadline with every frame, and touching the timer wheel each time
        // would cost more than the frame.
        let timer = sleep_until(deadline(false, idle_at).0);
        tokio::pin!(timer);
        // Fresh TURN credentials for a joined session every half of their lifetime.
        let refresh_every = crate::ice::refresh_every(config);
        let refresh =
            sleep_until(Instant::now() + refresh_every.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(refresh);
        let mut refresh_armed = false;
        loop {
            if !refresh_armed && self.joined.is_some() {
                if let Some(every) = refresh_every {
                    refresh.as_mut().reset(Instant::now() + every);
                    refresh_armed = true;
                }
            }
            let step = tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => {
                    Err(End::close(ErrorCode::ShuttingDown, "the server is shutting down"))
                }
                delivery = mailbox.next() => match delivery {
                    Delivery::Frame(frame) => self.send_relayed(frame).await,
                    Delivery::Replaced => Err(End::close(
                        ErrorCode::Replaced,
                        "a newer session joined with the same peer id",
                    )),
                },
                () = &mut refresh, if refresh_armed => {
                    refresh_armed = false;
                    match &self.joined {
                        Some((_, peer)) => {
                            let ice_servers = crate::ice::offer(config, peer);
                            self.send(&ServerMsg::IceServers { ice_servers }).await
                        }
                        None => Ok(()),
                    }
                }
                () = &mut timer => {
                    let (at, expired) = deadline(self.joined.is_some(), idle_at);
                    if Instant::now() >= at {
                        Err(End::close(expired, match expired {
                            ErrorCode::JoinTimeout => "no join within the join deadline",
                            _ => "nothing received within the idle timeout",
                        }))
                    } else {
                        timer.as_mut().reset(at);
                        Ok(())
                    }
                }
                incoming = self.ws.recv() => match incoming {
                    None => Err(End::Disconnected),
                    Some(Err(e)) => Err(read_error(e, config.hard_frame_bytes())),
                    Some(Ok(msg)) => {
                        // Only messages count as activity: a client that sends nothing
                        // but WebSocket pings (and maybe reads nothing) is idle.
                        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
                            idle_at = Instant::now() + config.idle_timeout;
                        }
                        // Boxed: its state is large and only alive while a frame is
                        // handled, so idle sessions should not carry room for it.
                        Box::pin(self.on_message(msg)).await
                    }
                },
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), End> {
        let (text, control) = match msg {
            Message::Text(t) => (Some(t), false),
            Message::Binary(_) => (None, false),
            Message::Ping(_) | Message::Pong(_) => (None, true),
            Message::Close(_) => {
                // The WebSocket layer has queued our close reply: send it before the
                // socket goes. Without it the client sees an abnormal closure (1006), and
                // Firefox then delays every new WebSocket to this server, more after each
                // one (20 closed sessions held off the next for longer than 3 s).
                let _ = self.flush().await;
                return Err(End::Disconnected);
            }
        };
        // Control frames cost tokens too: each ping makes the WebSocket layer queue a
        // pong, and a flood of them must be refused like a flood of messages.
        if !self.bucket.try_take(Instant::now()) {
            return self
                .refuse(ErrorCode::RateLimited, "too many messages; slow down")
                .await;
        }
        if control {
            // The WebSocket layer queued a pong for a ping (it keeps at most one, the
            // newest). Write it now, under the write timeout like any reply, so a client
            // that pings without reading is dropped instead of piling pongs up.
            return self.flush().await;
        }
        let Some(text) = text else {
            return self
                .refuse(
                    ErrorCode::BadRequest,
                    "binary frames are not part of the protocol",
                )
                .await;
        };
        let max = self.shared.config.max_frame_bytes;
        if text.len() > max {
            let message = format!("frame of {} bytes exceeds {max}", text.len());
            return self.refuse(ErrorCode::FrameTooLarge, message).await;
        }
        match decode(text.as_str()) {
            Err((code, message)) => self.refuse(code, message).await,
            Ok(Incoming::Ping) => self.send(&ServerMsg::Pong).await,
            Ok(Incoming::Join { room, peer, proof }) => self.join(room, peer, proof).await,
            Ok(Incoming::Signal { to, envelope }) => self.signal(to, envelope).await,
        }
    }

    async fn join(&mut self, room: String, peer: PeerId, proof: Signature) -> Result<(), End> {
        if self.joined.is_some() {
            return self
                .refuse(ErrorCode::AlreadyJoined, "this session already joined")
                .await;
        }
        if room.is_empty() || room.len() > MAX_ROOM_LEN {
            let message = format!("room names are 1 to {MAX_ROOM_LEN} bytes");
            return self.refuse(ErrorCode::BadRoom, message).await;
        }
        if verify_join_proof(&peer, &self.nonce, &room, &proof).is_err() {
            let message = "proof is not the peer's signature of this session's nonce and room";
            return self.refuse(ErrorCode::BadProof, message).await;
        }
        let member = Member {
            session: self.id,
            mailbox: self.mailbox.clone(),
        };
        match self.shared.rooms.join(&room, peer, member) {
            Ok(joined) => {
                telemetry::joined(joined.replaced);
                debug!(peer = %peer.short(), room, replaced = joined.replaced, "joined");
                let mut sample = joined.sample;
                if let Some(cluster) = &self.shared.cluster {
                    // The whole room, across servers; the local sample if Redis is lost.
                    if let Ok(whole) = cluster.join(&room, &peer, self.id).await {
                        sample = whole;
                    }
                }
                self.joined = Some((room, peer));
                self.signal_prefix = signal_prefix(&peer);
                self.send(&ServerMsg::Welcome {
                    peers: sample,
                    ice_servers: crate::ice::offer(&self.shared.config, &peer),
                })
                .await
            }
            Err(JoinError::RoomFull) => {
                let message = format!(
                    "room has {} members, the most this server allows",
                    self.shared.config.max_peers_per_room
                );
                self.reply_error(ErrorCode::RoomFull, message).await
            }
            Err(JoinError::TooManyRooms) => {
                let message = "the server has as many rooms as it allows";
                self.reply_error(ErrorCode::TooManyRooms, message).await
            }
        }
    }

    async fn signal(&mut self, to: PeerId, envelope: &RawValue) -> Result<(), End> {
        let Some((room, from)) = &self.joined else {
            return self
                .refuse(ErrorCode::NotJoined, "join a room before signalling")
                .await;
        };
        let frame = encode_signal(&self.signal_prefix, envelope);
        let mut relayed = self.shared.rooms.relay(room, from, self.id, &to, frame);
        if relayed == Err(RelayError::UnknownPeer) && to != *from {
            // Not a member here: maybe of the same room on another server.
            if let Some(cluster) = &self.shared.cluster {
                if cluster.relay(room, from, &to, envelope).await.is_ok() {
                    relayed = Ok(());
                }
            }
        }
        match relayed {
            Ok(()) => {
                telemetry::relayed();
                Ok(())
            }
            Err(RelayError::UnknownPeer) => {
                let message = format!("{to} is not another member of this room");
                self.reply_error_about(ErrorCode::UnknownPeer, message, Some(to))
                    .await
            }
            Err(RelayError::PeerBusy) => {
                let message = format!("{to} is not reading; signal not delivered");
                self.reply_error_about(ErrorCode::PeerBusy, message, Some(to))
                    .await
            }
            Err(RelayError::SenderReplaced) => Err(End::close(
                ErrorCode::Replaced,
                "a newer session joined with the same peer id",
            )),
        }
    }

    /// Refuses a protocol violation: counts it, and closes the session once the error
    /// budget is spent.
    async fn refuse(&mut self, code: ErrorCode, message: impl Into<String>) -> Result<(), End> {
        self.errors += 1;
        let message = message.into();
        if self.errors > self.shared.config.max_errors {
            return Err(End::close(
                ErrorCode::TooManyErrors,
                format!("too many errors; the last was {code}: {message}"),
            ));
        }
        self.reply_error(code, message).await
    }

    /// Sends an error frame that does not end the session.
    async fn reply_error(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), End> {
        self.reply_error_about(code, message, None).await
    }

    /// Sends an error frame that does not end the session and names the peer it is about
    /// (the `to` of a refused `signal`), so the client can act on it without parsing text.
    async fn reply_error_about(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
        peer: Option<PeerId>,
    ) -> Result<(), End> {
        telemetry::error(code);
        let message = message.into();
        self.send(&ServerMsg::Error {
            code,
            message,
            peer,
        })
        .await
    }

    async fn send(&mut self, msg: &ServerMsg) -> Result<(), End> {
        self.send_frame(Message::Text(encode(msg))).await
    }

    /// Writes a relayed frame and whatever else is already waiting in the mailbox, with
    /// one flush: a burst of signals (ICE candidates come in bursts) costs one write.
    async fn send_relayed(&mut self, first: Utf8Bytes) -> Result<(), End> {
        let limit = self.shared.config.write_timeout;
        let mailbox = &self.mailbox;
        let ws = &mut self.ws;
        let batch = async {
            ws.feed(Message::Text(first)).await?;
            for _ in 1..MAX_BATCH {
                let Some(frame) = mailbox.try_next() else {
                    break;
                };
                ws.feed(Message::Text(frame)).await?;
            }
            ws.flush().await
        };
        write_within(limit, &self.shared.shutdown, batch).await
    }

    /// Writes out whatever the WebSocket layer holds (an automatic pong), giving up like
    /// [`Session::send_frame`].
    async fn flush(&mut self) -> Result<(), End> {
        let limit = self.shared.config.write_timeout;
        write_within(limit, &self.shared.shutdown, self.ws.flush()).await
    }

    /// Writes one frame, giving up on a client that does not read within the write
    /// timeout, or when the server shuts down meanwhile.
    async fn send_frame(&mut self, frame: Message) -> Result<(), End> {
        let limit = self.shared.config.write_timeout;
        write_within(limit, &self.shared.shutdown, self.ws.send(frame)).await
    }

    fn leave(&mut self) {
        if let Some((room, peer)) = self.joined.take() {
            if self.shared.rooms.leave(&room, &peer, self.id) {
                telemetry::left();
                if let Some(cluster) = &self.shared.cluster {
                    let cluster = cluster.clone();
                    let id = self.id;
                    tokio::spawn(async move { cluster.leave(&room, &peer, id).await });
                }
            }
        }
    }

    /// Error frame, close frame, then wait (briefly) for the client's close reply.
    async fn close(&mut self, code: ErrorCode, message: String, close: u16) {
        telemetry::error(code);
        let limit = self.shared.config.write_timeout.min(CLOSE_LINGER);
        let error = Message::Text(encode(&ServerMsg::Error {
            code,
            message,
            peer: None,
        }));
        let frame = Message::Close(Some(CloseFrame {
            code: close,
            reason: code.as_str().into(),
        }));
        let ws = &mut self.ws;
        let closing = timeout(limit, async {
            ws.send(error).await?;
            ws.send(frame).await?;
            while let Some(Ok(msg)) = ws.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
            Ok::<(), axum::Error>(())
        });
        // Past the shutdown grace, nobody waits for a close reply.
        tokio::select! {
            _ = closing => {}
            () = self.shared.force.cancelled() => {}
        }
    }
}

/// Close code for a text frame (or close reason) that is not UTF-8 (RFC 6455, 1007
/// "invalid frame payload data"), sent with `bad-request`.
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code for a violation of the WebSocket protocol itself (RFC 6455, 1002
/// "protocol error": reserved opcodes, fragmented or oversized control frames, a
/// continuation without a start, a malformed close frame), sent with `bad-request`.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;

/// Maps a read error to how the session ends: a frame beyond the hard limit gets a
/// `frame-too-large` error and close code 1009, invalid UTF-8 `bad-request` and 1007, a
/// WebSocket protocol violation `bad-request` and 1002; anything else means the
/// connection broke.
fn read_error(e: axum::Error, hard_limit: usize) -> End {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(c)) => End::Close {
            code: ErrorCode::FrameTooLarge,
            message: format!("{c}; the hard limit is {hard_limit} bytes"),
            close: CLOSE_TOO_BIG,
        },
        Some(tungstenite::Error::Utf8(e)) => End::Close {
            code: ErrorCode::BadRequest,
            message: format!("a text frame is not UTF-8: {e}"),
            close: CLOSE_INVALID_PAYLOAD,
        },
        Some(tungstenite::Error::Protocol(e)) => End::Close {
            code: ErrorCode::BadRequest,
            message: format!("WebSocket protocol violation: {e}"),
            close: CLOSE_PROTOCOL_ERROR,
        },
        _ => End::Disconnected,
    }
}

/// A decoded client frame. A signal keeps its envelope as the raw JSON text it arrived
/// in: the server never looks inside, so it neither builds a tree for it nor re-encodes
/// it (relaying is the hot path).
#[derive(Debug)]
enum Incoming<'a> {
    Ping,
    Join {
        room: String,
        peer: PeerId,
        proof: Signature,
    },
    Signal {
        to: PeerId,
        envelope: &'a RawValue,
    },
}

/// Parses a client frame (the shapes of `rhizome::signal::ClientMsg`), telling an unknown `type` apart
/// from a malformed message.
fn decode(text: &str) -> Result<Incoming<'_>, (ErrorCode, String)> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        ty: Option<Cow<'a, str>>,
    }
    // Each message is read into its own struct, never through `ClientMsg`: serde buffers
    // an internally tagged enum's fields as generic values, so an unknown field holding
    // a number no float can hold (`1e999999999`) failed the whole message. Here unknown
    // fields are skipped unread, whatever they hold.
    #[derive(serde::Deserialize)]
    struct JoinIn {
        room: String,
        peer: PeerId,
        proof: Signature,
    }
    #[derive(serde::Deserialize)]
    struct SignalIn<'a> {
        to: PeerId,
        #[serde(borrow)]
        envelope: Option<&'a RawValue>,
    }
    let bad = |e: serde_json::Error| (ErrorCode::BadRequest, e.to_string());
    if !text.trim_start().starts_with('{') {
        return Err((
            ErrorCode::BadRequest,
            "a message is a JSON object".to_string(),
        ));
    }
    let head: Head = serde_json::from_str(text).map_err(bad)?;
    match head.ty.as_deref() {
        Some("signal") => {
            let s: SignalIn = serde_json::from_str(text).map_err(bad)?;
            Ok(Incoming::Signal {
                to: s.to,
                envelope: s.envelope.unwrap_or(RawValue::NULL),
            })
        }
        Some("join") => {
            let j: JoinIn = serde_json::from_str(text).map_err(bad)?;
            Ok(Incoming::Join {
                room: j.room,
                peer: j.peer,
                proof: j.proof,
            })
        }
        Some("ping") => Ok(Incoming::Ping),
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            Err((
                ErrorCode::UnknownType,
                format!("unknown message type {shown:?}"),
            ))
        }
        None => Err((ErrorCode::BadRequest, "missing field `type`".to_string())),
    }
}

/// The relayed form of a signal, `ServerMsg::Signal` on the wire, with the envelope
/// copied as it arrived.
pub(crate) fn encode_signal(prefix: &str, envelope: &RawValue) -> Utf8Bytes {
    let raw = envelope.get();
    let mut frame = String::with_capacity(prefix.len() + raw.len() + 1);
    frame.push_str(prefix);
    frame.push_str(raw);
    frame.push('}');
    frame.into()
}

/// Everything of a relayed signal before the envelope; made once per session at join,
/// because hex-encoding the sender's id for every signal showed up in profiles.
pub(crate) fn signal_prefix(from: &PeerId) -> String {
    format!(r#"{{"type":"signal","from":"{from}","envelope":"#)
}

fn encode(msg: &ServerMsg) -> Utf8Bytes {
    // Server messages hold strings, numbers and JSON values with string keys only, which
    // always serialize.
    serde_json::to_string(msg)
        .expect("server messages always serialize")
        .into()
}

/// 128 random bits as hex, from the thread-local CSPRNG.
fn new_nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a write on the WebSocket, giving up on a client that does not read within `limit`
/// (the write timeout), or when the server shuts down meanwhile.
async fn write_within<E>(
    limit: std::time::Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    write: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), End> {
    tokio::select! {
        sent = timeout(limit, write) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Disconnected),
            Err(_) => {
                debug!("write timed out; dropping a client that does not read");
                Err(End::Disconnected)
            }
        },
        _ = shutdown.cancelled() => Err(End::Disconnected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_are_told_apart_from_malformed_messages() {
        assert!(matches!(decode(r#"{"type":"ping"}"#), Ok(Incoming::Ping)));
        assert_eq!(
            decode(r#"{"type":"dance"}"#).map_err(|e| e.0).err(),
            Some(ErrorCode::UnknownType)
        );
        for bad in [
            "",
            "{",
            "[]",
            "42",
            r#"{"type":7}"#,
            r#"{"type":"join"}"#,
            r#"{"no":"type"}"#,
        ] {
            assert_eq!(
                decode(bad).map_err(|e| e.0).err(),
                Some(ErrorCode::BadRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_relayed_signal_is_the_documented_server_message_with_the_envelope_verbatim() {
        let from = rhizome::id::Identity::from_secret_bytes([1; 32]).peer_id();
        let to = rhizome::id::Identity::from_secret_bytes([2; 32]).peer_id();
        let text =
            format!(r#"{{"type":"signal","to":"{to}","envelope": {{"b":[1,2.5,"x"],"a":null}} }}"#);
        let Ok(Incoming::Signal { to: got, envelope }) = decode(&text) else {
            panic!("a signal decodes");
        };
        assert_eq!(got, to);
        let relayed = encode_signal(&signal_prefix(&from), envelope);
        let msg: ServerMsg = serde_json::from_str(relayed.as_str()).unwrap();
        assert_eq!(
            msg,
            ServerMsg::Signal {
                from,
                envelope: serde_json::json!({"b": [1, 2.5, "x"], "a": null}),
            }
        );
        // A missing envelope is relayed as null, as `ClientMsg` would read it.
        let text = format!(r#"{{"type":"signal","to":"{to}"}}"#);
        let Ok(Incoming::Signal { envelope, .. }) = decode(&text) else {
            panic!("a signal without envelope decodes");
        };
        assert_eq!(envelope.get(), "null");
    }

    #[test]
    fn unknown_fields_are_skipped_whatever_they_hold() {
        let to = rhizome::id::Identity::from_secret_bytes([2; 32]).peer_id();
        for value in [
            "1e999999999",
            "-1e999999999",
            "123456789012345678901234567890e5",
        ] {
            let text = format!(
                r#"{{"x":{value},"type":"signal","to":"{to}","envelope":{{"n":1}},"y":{value}}}"#
            );
            match decode(&text) {
                Ok(Incoming::Signal { envelope, .. }) => assert_eq!(envelope.get(), r#"{"n":1}"#),
                Err(e) => panic!("{text}: {e:?}"),
                Ok(other) => panic!("{text}: {other:?}"),
            }
            let ping = format!(r#"{{"x":{value},"type":"ping","y":{value}}}"#);
            assert!(matches!(decode(&ping), Ok(Incoming::Ping)), "{ping}");
        }
    }

    #[test]
    fn nonces_are_fresh_hex() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
