//! rhizome: a peer-to-peer overlay for browsers.
//!
//! Peers talk over WebRTC data channels. A small signaling server introduces a newcomer
//! to a few members of its room; after that the peers discover, connect to and repair
//! each other through the overlay itself. See `docs/ARCHITECTURE.md` for the layers.
//!
//! - [`id`]: Ed25519 identities; a peer id is a public key.
//! - [`signal`]: the signaling protocol, shared with the `rhizome-signaling` server.
//! - [`transport`]: WebRTC data channels (`web-sys` in the browser) and message chunking.

#![warn(missing_docs)]

mod collections;
pub mod id;
pub mod overlay;
pub mod signal;
pub mod topology;
pub mod wire;

#[cfg(target_arch = "wasm32")]
pub mod js;
#[cfg(any(target_arch = "wasm32", feature = "native"))]
pub mod node;
pub mod transport;
