//! The JavaScript API, through wasm-bindgen.
//!
//! This grows into the full node API (`Rhizome.join`, `broadcast`, events; see the
//! browser-node work). Today it exposes identities, so a page can create, show and
//! persist its peer id.

use wasm_bindgen::prelude::*;

use crate::id::Identity as CoreIdentity;

/// An Ed25519 identity; its `id` is the peer id other peers know this page by.
#[wasm_bindgen]
pub struct Identity(CoreIdentity);

#[wasm_bindgen]
impl Identity {
    /// A fresh identity from `crypto.getRandomValues`.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Result<Identity, JsError> {
        CoreIdentity::generate()
            .map(Identity)
            .map_err(|e| JsError::new(&e.to_string()))
    }

    /// Restores an identity saved with `secret`.
    #[wasm_bindgen(js_name = fromSecret)]
    pub fn from_secret(secret: &str) -> Result<Identity, JsError> {
        CoreIdentity::from_secret_hex(secret)
            .map(Identity)
            .map_err(|e| JsError::new(&e.to_string()))
    }

    /// The peer id: 64 hex characters.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.0.peer_id().to_string()
    }

    /// The first 8 hex characters of the id, for display.
    #[wasm_bindgen(getter)]
    pub fn short(&self) -> String {
        self.0.peer_id().short()
    }

    /// The secret key as hex, to persist the identity (e.g. in `localStorage`).
    #[wasm_bindgen(getter)]
    pub fn secret(&self) -> String {
        self.0.secret_hex()
    }
}

/// The version of the rhizome package.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
