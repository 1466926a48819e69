//! rhizome-signaling: the bootstrap server of a rhizome overlay.
//!
//! A newcomer opens a WebSocket, proves it owns its Ed25519 peer id by signing the
//! server's nonce, and is welcomed with a *random sample* of a few members of its room.
//! Until its WebRTC connections are up it sends signal envelopes through the server,
//! which relays them, unread, to one named member of the same room. That is all the
//! server does: it is needed only for bootstrap, it is not trusted (envelopes are signed
//! end to end, see `rhizome::signal`), and killing it does not stop a running overlay.
//!
//! Because it faces the open internet, every resource a client can make it spend is
//! bounded ([`Config`]), every refusal is an error frame with a stable code, and one
//! client's misbehaviour is contained in its own session.
//!
//! The protocol is documented in `signaling/PROTOCOL.md`; its types are in
//! `rhizome::signal`.
//!
//! ```no_run
//! # async fn run() -> Result<(), rhizome_signaling::ServeError> {
//! let listener = rhizome_signaling::bind("127.0.0.1:0").await?;
//! let config = rhizome_signaling::Config::default();
//! rhizome_signaling::serve(config, listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! Modules: [`config`] (every limit), [`ice`] (STUN/TURN servers offered, with TURN
//! credentials), `server` (accept loop, routes and shutdown),
//! `connections` (the connection cap), `session` (one WebSocket), `rooms` (the
//! registry), `mailbox` (relay queues), `rate_limit` (token bucket), [`telemetry`]
//! (Prometheus metrics), `cluster` (several servers as one, over Redis).

#![warn(missing_docs)]

mod cluster;
pub mod config;
mod connections;
pub mod ice;
mod mailbox;
mod rate_limit;
mod rooms;
mod server;
mod session;
pub mod telemetry;

pub use cluster::ClusterError;
pub use config::Config;
pub use server::{bind, serve, serve_ready, ServeError};
