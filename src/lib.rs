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

/// The browser build allocates with Talc instead of std's dlmalloc: about as fast, and
/// less code in the package.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
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
