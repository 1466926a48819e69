//! What a signaling client reports, shared by the browser client (`web_signaling`) and the
//! native one (`native_signaling`).
//!
//! The node driver handles a session the same way whichever client it holds, so both
//! clients speak in these two types: the errors that end a join attempt, and the events of
//! a joined session. Keeping them here, free of browser and tokio types, is what lets the
//! two clients stay interchangeable.

use crate::id::PeerId;
use crate::signal::ErrorCode;

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
        envelope: serde_json::Value,
    },
    /// The server reported an error, or sent something we could not parse.
    Error {
        /// The server's code, if it sent one.
        code: Option<ErrorCode>,
        /// Details.
        message: String,
    },
    /// The session ended. No event follows.
    Closed(String),
}
