//! What a signaling client reports, shared by the browser client (`web_signaling`) and the
//! native one (`native_signaling`).
//!
//! The node driver handles a session the same way whichever client it holds, so both
//! clients speak in these two types: the errors that end a join attempt, and the events of
//! a joined session. Keeping them here, free of browser and tokio types, is what lets the
//! two clients stay interchangeable.

use crate::id::{Identity, PeerId};
use crate::signal::{sign_join_proof, ClientMsg, EnvelopeJson, ErrorCode, ServerMsg};
use crate::transport::IceServer;

/// Why talking to the signaling server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalingError {
    /// The WebSocket could not be opened or closed before the join finished.
    #[error("could not reach {url}: {reason}")]
    Unreachable {
        /// Server URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server did not answer within the deadline.
    #[error("{url} did not answer within {ms} ms")]
    Timeout {
        /// Server URL.
        url: String,
        /// The deadline.
        ms: u32,
    },
    /// The server refused the join.
    #[error("{url} refused: {code:?}: {message}")]
    Refused {
        /// Server URL.
        url: String,
        /// The server's error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server broke the protocol.
    #[error("{url} sent something unexpected: {reason}")]
    Protocol {
        /// Server URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// No URL was given.
    #[error("no signaling server URL given")]
    NoServers,
    /// The session is closed.
    #[error("signaling session is closed")]
    Closed,
}

/// Something the server told us after the join.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalingEvent {
    /// An envelope from another member of the room.
    Signal {
        /// Sender, as authenticated by the server (the envelope carries its own proof).
        from: PeerId,
        /// The envelope as relayed (check it with [`SignedEnvelope::open`](crate::signal::SignedEnvelope::open)).
        envelope: EnvelopeJson,
    },
    /// The server reported an error, or sent something we could not parse.
    Error {
        /// The server's code, if it sent one.
        code: Option<ErrorCode>,
        /// Details.
        message: String,
        /// The peer the error is about, if the server named one: the recipient of a
        /// `signal` that was refused (`unknown-peer`: not in the room, so a connection
        /// attempt signalled through the server cannot complete).
        peer: Option<PeerId>,
    },
    /// The server sent fresh ICE servers (new TURN credentials before the old ones
    /// expire); they replace those of the `welcome`.
    IceServers(Vec<IceServer>),
    /// The session ended. No event follows.
    Closed(String),
}

/// Tries `connect` on each URL in order and returns the first session that joins; with
/// none, the last error ([`SignalingError::NoServers`] for an empty list). The fallback
/// order both clients promise for a list of servers.
pub(crate) async fn first_that_joins<'a, T, Fut>(
    urls: &'a [String],
    mut connect: impl FnMut(&'a str) -> Fut,
) -> Result<T, SignalingError>
where
    Fut: std::future::Future<Output = Result<T, SignalingError>>,
{
    let mut last = SignalingError::NoServers;
    for url in urls {
        match connect(url).await {
            Ok(ok) => return Ok(ok),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The join handshake as a pure state machine, shared by both clients: feed it every text
/// frame the server sends; it says what to answer and when the join is done. Only the
/// socket handling differs between the browser and the native client.
pub(crate) struct Handshake<'a> {
    url: &'a str,
    identity: &'a Identity,
    room: &'a str,
    joined: bool,
}

/// What the client does after a frame of the handshake.
pub(crate) enum Step {
    /// Send this message and keep reading.
    Send(ClientMsg),
    /// Keep reading.
    Wait,
    /// Joined: the members the server introduced us to, and the ICE servers it offers.
    Joined(Vec<PeerId>, Vec<IceServer>),
}

impl<'a> Handshake<'a> {
    /// A handshake joining `room` as `identity` on the server at `url`.
    pub(crate) fn new(url: &'a str, identity: &'a Identity, room: &'a str) -> Self {
        Handshake {
            url,
            identity,
            room,
            joined: false,
        }
    }

    /// The next step after the server sent `text`.
    pub(crate) fn on_text(&mut self, text: &str) -> Result<Step, SignalingError> {
        let protocol = |reason: String| SignalingError::Protocol {
            url: self.url.to_string(),
            reason,
        };
        let msg = ServerMsg::from_text(text)
            .map_err(|e| protocol(format!("bad frame during join: {e}")))?;
        match msg {
            ServerMsg::Hello { nonce, .. } if !self.joined => {
                self.joined = true;
                Ok(Step::Send(ClientMsg::Join {
                    room: self.room.to_string(),
                    peer: self.identity.peer_id(),
                    proof: sign_join_proof(self.identity, &nonce, self.room),
                }))
            }
            ServerMsg::Welcome { peers, ice_servers } if self.joined => {
                Ok(Step::Joined(peers, ice_servers))
            }
            ServerMsg::Error { code, message, .. } => Err(SignalingError::Refused {
                url: self.url.to_string(),
                code,
                message,
            }),
            ServerMsg::Pong => Ok(Step::Wait),
            other => Err(protocol(format!(
                "unexpected `{}` during join",
                message_kind(&other)
            ))),
        }
    }
}

/// What one text frame of a joined session means; `None` for frames with nothing to
/// report (pongs). Never fails: what cannot be parsed becomes an error event.
pub(crate) fn session_event(text: &str) -> Option<SignalingEvent> {
    Some(match ServerMsg::from_text(text) {
        Ok(ServerMsg::Signal { from, envelope }) => SignalingEvent::Signal { from, envelope },
        Ok(ServerMsg::Error {
            code,
            message,
            peer,
        }) => SignalingEvent::Error {
            code: Some(code),
            message,
            peer,
        },
        Ok(ServerMsg::Pong) => return None,
        Ok(ServerMsg::IceServers { ice_servers }) => SignalingEvent::IceServers(ice_servers),
        Ok(other) => SignalingEvent::Error {
            code: None,
            message: format!("unexpected `{}` from server", message_kind(&other)),
            peer: None,
        },
        Err(e) => SignalingEvent::Error {
            code: None,
            message: format!("unparseable frame from server: {e}"),
            peer: None,
        },
    })
}

/// The `type` of a server message, for error messages (a `Debug` dump would drag the
/// formatting of every payload into the wasm binary).
fn message_kind(m: &ServerMsg) -> &'static str {
    match m {
        ServerMsg::Hello { .. } => "hello",
        ServerMsg::Welcome { .. } => "welcome",
        ServerMsg::Signal { .. } => "signal",
        ServerMsg::Pong => "pong",
        ServerMsg::IceServers { .. } => "ice-servers",
        ServerMsg::Error { .. } => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_peer_error_names_the_peer_it_is_about() {
        let to = Identity::from_secret_bytes([5; 32]).peer_id();
        let frame = format!(
            r#"{{"type":"error","code":"unknown-peer","message":"not here","peer":"{to}"}}"#
        );
        assert_eq!(
            session_event(&frame),
            Some(SignalingEvent::Error {
                code: Some(ErrorCode::UnknownPeer),
                message: "not here".into(),
                peer: Some(to),
            })
        );
    }

    #[test]
    fn fresh_ice_servers_are_an_event_and_a_welcome_hands_them_over() {
        let frame = r#"{"type":"ice-servers","iceServers":[{"urls":["turn:t"],"username":"1:a","credential":"c"}]}"#;
        let turn = IceServer {
            urls: vec!["turn:t".into()],
            username: Some("1:a".into()),
            credential: Some("c".into()),
        };
        assert_eq!(
            session_event(frame),
            Some(SignalingEvent::IceServers(vec![turn.clone()]))
        );
        let id = Identity::from_secret_bytes([5; 32]);
        let mut h = Handshake::new("ws://x", &id, "r");
        assert!(matches!(
            h.on_text(r#"{"type":"hello","nonce":"n","version":1}"#),
            Ok(Step::Send(_))
        ));
        let welcome = r#"{"type":"welcome","peers":[],"iceServers":[{"urls":"turn:t","username":"1:a","credential":"c"}]}"#;
        match h.on_text(welcome) {
            Ok(Step::Joined(peers, ice)) => {
                assert!(peers.is_empty());
                assert_eq!(ice, vec![turn]);
            }
            _ => panic!("joined"),
        }
    }

    #[test]
    fn an_error_from_an_older_server_has_no_peer() {
        let frame = r#"{"type":"error","code":"unknown-peer","message":"not here"}"#;
        assert!(matches!(
            session_event(frame),
            Some(SignalingEvent::Error {
                code: Some(ErrorCode::UnknownPeer),
                peer: None,
                ..
            })
        ));
    }

    #[test]
    fn a_garbled_frame_is_an_error_event_not_a_panic() {
        for frame in [
            "",
            "{",
            r#"{"type":"error","code":"unknown-peer","message":"x","peer":"zz"}"#,
        ] {
            assert!(matches!(
                session_event(frame),
                Some(SignalingEvent::Error {
                    code: None,
                    peer: None,
                    ..
                })
            ));
        }
        assert_eq!(session_event(r#"{"type":"pong"}"#), None);
    }
}
