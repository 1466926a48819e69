//! Room secrets: a room whose peers share a secret keeps everyone else out of it.
//!
//! From the room's name and its secret every member derives the same [`RoomKey`]
//! (PBKDF2-HMAC-SHA-256, [`KDF_ROUNDS`] rounds, salted with the room's name), and from it
//! three keys of its own:
//! - a **proof key**: the first frame on every connection, both ways, is
//!   [`Message::RoomProof`](crate::wire::Message::RoomProof), an HMAC-SHA-256 of both
//!   peers' ids (sender first) under it. A peer accepts no other frame until the proof
//!   verified; a wrong or missing proof (or a proof where none is expected) ends the
//!   connection with [`Event::BadRoomSecret`](super::Event::BadRoomSecret) on both sides.
//!   So only peers that know the secret become neighbours or DHT links. The secret itself
//!   never leaves the peer. The proof carries no fresh value: it is bound to the ordered
//!   pair of ids, and only its receiver ever sees it (the data channel is DTLS between
//!   the two ids of the signed envelopes), which cannot pass it on as its own (it would
//!   need the proof for another pair).
//! - a **broadcast key**: broadcast payloads are sealed with XChaCha20-Poly1305 under it
//!   (random 24-byte nonce; the origin and sequence number as associated data) before
//!   the origin signs them, so a peer without the secret holding a relayed frame sees
//!   ciphertext.
//! - a **sealing key**, mixed into every pair key of [`super::seal`]: routed direct
//!   messages, requests and responses are encrypted under keys that need both the pair's
//!   X25519 secret and the room secret.
//!
//! The signaling server is given [`server_room`] (a hash of the room's name) instead of
//! the name, and never the secret. What a secret does not protect: a weak secret can be
//! guessed offline by a peer that received one proof (the slow derivation only makes each
//! guess cost [`KDF_ROUNDS`] HMACs): use a long random one. Everyone who knows it is a
//! full member.

use sha2::{Digest, Sha256};

use crate::id::PeerId;

/// PBKDF2 rounds of the room key's derivation (done once, at join).
pub const KDF_ROUNDS: u32 = 10_000;
/// Bytes a sealed broadcast payload adds to its plaintext: nonce and tag.
pub const OVERHEAD: usize = 24 + 16;
/// Length of a room proof.
pub const PROOF_LEN: usize = 32;

const KEY_SALT: &[u8] = b"rhizome/room-key/v1";
const SERVER_ROOM: &[u8] = b"rhizome/server-room/v1";

/// The keys derived from a room's secret. Its `Debug` shows no key.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomKey {
    proof: [u8; 32],
    broadcast: [u8; 32],
    seal: [u8; 32],
}

impl core::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RoomKey(..)")
    }
}

/// HMAC-SHA-256 (RFC 2104) of the concatenated `parts` under a 32-byte key.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let (inner, outer) = hmac_states(key);
    hmac_with(&inner, &outer, parts)
}

fn hmac_states(key: &[u8; 32]) -> (Sha256, Sha256) {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner = Sha256::new();
    inner.update(ipad);
    let mut outer = Sha256::new();
    outer.update(opad);
    (inner, outer)
}

fn hmac_with(inner: &Sha256, outer: &Sha256, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = inner.clone();
    for p in parts {
        h.update(p);
    }
    let mut o = outer.clone();
    o.update(h.finalize());
    o.finalize().into()
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The room name the signaling server is given for `room` when it has a secret: a hash
/// of the name (hex), so the server never learns it. Peers with a wrong secret land in
/// the same server room, meet the members and are told `bad-room-secret`.
pub fn server_room(room: &str) -> String {
    let mut h = Sha256::new();
    h.update(SERVER_ROOM);
    h.update(room.as_bytes());
    hex::encode(h.finalize())
}

impl RoomKey {
    /// Derives the keys of `room` with `secret`: PBKDF2-HMAC-SHA-256 ([`KDF_ROUNDS`]
    /// rounds, one block; the secret, hashed to 32 bytes, is the HMAC key, the room's
    /// name the salt), then one HMAC per purpose.
    pub fn derive(room: &str, secret: &str) -> Self {
        let password: [u8; 32] = Sha256::new()
            .chain_update(KEY_SALT)
            .chain_update(secret.as_bytes())
            .finalize()
            .into();
        let (inner, outer) = hmac_states(&password);
        let mut u = hmac_with(
            &inner,
            &outer,
            &[KEY_SALT, room.as_bytes(), &1u32.to_be_bytes()],
        );
        let mut master = u;
        for _ in 1..KDF_ROUNDS {
            u = hmac_with(&inner, &outer, &[&u]);
            for (m, x) in master.iter_mut().zip(u) {
                *m ^= x;
            }
        }
        RoomKey {
            proof: hmac(&master, &[b"proof"]),
            broadcast: hmac(&master, &[b"broadcast"]),
            seal: hmac(&master, &[b"seal"]),
        }
    }

    /// The proof `from` sends `to` on a new connection.
    pub fn proof(&self, from: &PeerId, to: &PeerId) -> [u8; PROOF_LEN] {
        hmac(
            &self.proof,
            &[b"rhizome/room-proof/v1", from.as_bytes(), to.as_bytes()],
        )
    }

    /// Whether `mac` is the proof `from` owes `to`.
    pub fn verify(&self, from: &PeerId, to: &PeerId, mac: &[u8]) -> bool {
        same(&self.proof(from, to), mac)
    }

    /// The key mixed into the pair keys of routed traffic.
    pub(super) fn seal_key(&self) -> &[u8; 32] {
        &self.seal
    }

    fn aad(origin: &PeerId, seq: u64) -> Vec<u8> {
        let mut aad = b"rhizome/room-broadcast/v1".to_vec();
        aad.extend_from_slice(origin.as_bytes());
        aad.extend_from_slice(&seq.to_be_bytes());
        aad
    }

    /// Seals broadcast `seq` of `origin` with a random `nonce`: `nonce ‖ ciphertext ‖ tag`.
    pub fn seal_broadcast(
        &self,
        origin: &PeerId,
        seq: u64,
        nonce: [u8; 24],
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        super::seal::xseal(&self.broadcast, nonce, &Self::aad(origin, seq), plaintext)
    }

    /// Opens what [`RoomKey::seal_broadcast`] sealed; `None` if it does not verify.
    pub fn open_broadcast(&self, origin: &PeerId, seq: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        super::seal::xopen(&self.broadcast, &Self::aad(origin, seq), sealed).map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Identity;

    #[test]
    fn hmac_matches_rfc_4231_shape() {
        // RFC 4231 test case 2 uses a 4-byte key; ours are 32 bytes, zero-padded like any
        // HMAC key shorter than the block, so "Jefe" padded gives the same MAC.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn proofs_bind_the_pair_and_the_secret() {
        let a = Identity::from_secret_bytes([1; 32]).peer_id();
        let b = Identity::from_secret_bytes([2; 32]).peer_id();
        let k = RoomKey::derive("room", "secret");
        assert_eq!(k, RoomKey::derive("room", "secret"));
        let p = k.proof(&a, &b);
        assert!(k.verify(&a, &b, &p));
        assert!(!k.verify(&b, &a, &p));
        assert!(!k.verify(&a, &b, &p[..31]));
        assert!(!RoomKey::derive("room", "other").verify(&a, &b, &p));
        assert!(!RoomKey::derive("room2", "secret").verify(&a, &b, &p));
        assert_eq!(format!("{k:?}"), "RoomKey(..)");
        assert_ne!(server_room("room"), "room");
    }

    #[test]
    fn broadcasts_open_only_with_the_key() {
        let a = Identity::from_secret_bytes([1; 32]).peer_id();
        let k = RoomKey::derive("room", "secret");
        let sealed = k.seal_broadcast(&a, 7, [9; 24], b"hello").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(k.open_broadcast(&a, 7, &sealed).unwrap(), b"hello");
        assert!(k.open_broadcast(&a, 8, &sealed).is_none());
        assert!(k.open_broadcast(&a, 7, &sealed[..10]).is_none());
        let other = RoomKey::derive("room", "wrong");
        assert!(other.open_broadcast(&a, 7, &sealed).is_none());
    }
}
