//! End-to-end sealing of routed direct traffic: the application bytes of a routed direct
//! message, request or response (and so of every fragment of a large message) are
//! encrypted to the target and authenticated by the source; its acknowledgement is
//! authenticated too. Relays see ciphertext and cannot forge a `from`, alter a payload, or
//! replay an old frame.
//!
//! # Construction
//! - **Key agreement**: static-static X25519 between the two peers' ids (each id is an
//!   Ed25519 key; [`Identity::key_agreement`] maps both keys to their Montgomery form),
//!   so no handshake is needed: the first routed message is already sealed. The shared
//!   secret is hashed into one key per direction, `SHA-256(context ‖ secret ‖ from ‖
//!   to)` (as libsodium's `crypto_kx`), computed once per peer and cached
//!   ([`MAX_KEYS`] peers).
//!   In a room with a secret, the room's sealing key (`super::room`) is hashed in after
//!   the shared secret, so opening also needs the room's secret.
//! - **AEAD**: XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) with a 24-byte nonce
//!   = this session's random 16-byte salt ‖ a 64-bit counter that never repeats within
//!   the session. The salt makes nonce reuse across sessions of one identity (a page
//!   reload restarts the counter) as unlikely as two equal random salts.
//! - **Associated data**: context, source, target, the frame's kind, its rpc id and (for
//!   an acknowledgement) its hop count, so a sealed payload cannot be moved to another
//!   frame, peer or kind.
//! - **Replays**: the receiver keeps, per sender, a sliding window of [`WINDOW`] counters
//!   for each of the sender's last [`SESSIONS`] salts, and drops a counter it has seen
//!   (or one older than the window). Checked only after the tag verified, so forged
//!   frames cannot move a window. State for [`MAX_PEERS`] senders (least recently heard
//!   forgotten first).
//!
//! Sealed bytes: `nonce (24) ‖ ciphertext ‖ tag (16)`, [`OVERHEAD`] = 40 bytes more than
//! the plaintext.
//!
//! What it does not give: forward secrecy (a stolen identity key opens recorded traffic
//! to and from it: identities are long-lived signing keys already, and an ephemeral
//! exchange would cost a round trip per pair); replay protection across a receiver's
//! restart or beyond its memory (a frame recorded in a session it forgot may be accepted
//! once more); hiding who talks to whom (relays see the path and sizes).

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::collections::BTreeMap;
use crate::id::{Identity, PeerId};

/// Bytes a sealed payload adds to its plaintext: nonce and tag.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const SALT_LEN: usize = 16;
/// Peers whose pair keys are cached.
pub const MAX_KEYS: usize = 256;
/// Senders whose replay windows are kept.
pub const MAX_PEERS: usize = 1024;
/// Sessions (salts) of one sender whose windows are kept.
pub const SESSIONS: usize = 4;
/// Width of a replay window, in counters.
pub const WINDOW: u64 = 512;
const WORDS: usize = (WINDOW / 64) as usize;

const KEY_CONTEXT: &[u8] = b"rhizome/seal-key/v1";
const AAD_CONTEXT: &[u8] = b"rhizome/seal/v1";
const SALT_CONTEXT: &[u8] = b"rhizome/seal-salt/v1";

/// What a sealed payload belongs to (part of the associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A routed direct message (or fragment, or fragment note).
    Direct = 1,
    /// A routed request.
    Request = 2,
    /// The response to a request.
    Response = 3,
    /// An acknowledgement (empty plaintext).
    Ack = 4,
    /// A lookup answer: empty plaintext, the peers it names in the associated data.
    Nodes = 5,
}

/// Why a sealed payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too short, the source's id is no usable key, or the tag does not verify: forged,
    /// altered, or sealed for another frame.
    Forged,
    /// Authentic, but its nonce was seen already (or is older than the window).
    Replayed,
}

#[derive(Debug, Clone)]
struct PairKeys {
    send: [u8; 32],
    recv: [u8; 32],
    used: u64,
}

#[derive(Debug, Clone)]
struct Window {
    salt: [u8; SALT_LEN],
    /// Highest counter accepted.
    top: u64,
    /// Bit `i` (word `i / 64`): counter `top - i` was accepted.
    bits: [u64; WORDS],
    used: u64,
}

impl Window {
    fn new(salt: [u8; SALT_LEN], counter: u64, used: u64) -> Self {
        let mut bits = [0; WORDS];
        bits[0] = 1;
        Window {
            salt,
            top: counter,
            bits,
            used,
        }
    }

    /// Accepts `counter` once: false for a repeat or one older than the window.
    fn accept(&mut self, counter: u64) -> bool {
        if counter > self.top {
            let shift = counter - self.top;
            if shift >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                shift_left(&mut self.bits, shift as usize);
            }
            self.bits[0] |= 1;
            self.top = counter;
            return true;
        }
        let age = self.top - counter;
        if age >= WINDOW {
            return false;
        }
        let (word, bit) = ((age / 64) as usize, age % 64);
        if self.bits[word] & (1 << bit) != 0 {
            return false;
        }
        self.bits[word] |= 1 << bit;
        true
    }
}

/// Shifts the window's bits toward older ages by `n` (< [`WINDOW`]).
fn shift_left(bits: &mut [u64; WORDS], n: usize) {
    let (words, rest) = (n / 64, n % 64);
    for i in (0..WORDS).rev() {
        let mut v = if i >= words {
            bits[i - words] << rest
        } else {
            0
        };
        if rest > 0 && i > words {
            v |= bits[i - words - 1] >> (64 - rest);
        }
        bits[i] = v;
    }
}

/// Keys, this session's nonce state and the replay windows.
#[derive(Clone)]
pub(super) struct Sealer {
    salt: [u8; SALT_LEN],
    counter: u64,
    keys: BTreeMap<PeerId, PairKeys>,
    windows: BTreeMap<PeerId, Vec<Window>>,
    /// A logical clock for "least recently used".
    tick: u64,
    /// In a room with a secret, its sealing key, mixed into every pair key.
    room: Option<[u8; 32]>,
}

impl Sealer {
    /// A sealer whose salt comes from the overlay's seed and id (the seed is the
    /// driver's fresh randomness; no draw from the overlay's generator, so the
    /// simulator's random choices stay as they were).
    pub(super) fn new(me: &PeerId, seed: u64) -> Self {
        let mut h = Sha256::new();
        h.update(SALT_CONTEXT);
        h.update(seed.to_le_bytes());
        h.update(me.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&digest[..SALT_LEN]);
        Sealer {
            salt,
            counter: 0,
            keys: BTreeMap::new(),
            windows: BTreeMap::new(),
            tick: 0,
            room: None,
        }
    }

    /// The same sealer, with pair keys that also need the room's secret (`None`: an open
    /// room).
    pub(super) fn with_room(mut self, room: Option<[u8; 32]>) -> Self {
        self.room = room;
        self
    }

    fn pair(&mut self, identity: &Identity, peer: &PeerId) -> Option<&PairKeys> {
        self.tick += 1;
        let tick = self.tick;
        if !self.keys.contains_key(peer) {
            let shared = identity.key_agreement(peer).ok()?;
            let me = identity.peer_id();
            let room = self.room;
            let derive = |from: &PeerId, to: &PeerId| -> [u8; 32] {
                let mut h = Sha256::new();
                h.update(KEY_CONTEXT);
                h.update(shared);
                if let Some(room) = &room {
                    h.update(room);
                }
                h.update(from.as_bytes());
                h.update(to.as_bytes());
                h.finalize().into()
            };
            let keys = PairKeys {
                send: derive(&me, peer),
                recv: derive(peer, &me),
                used: tick,
            };
            if self.keys.len() >= MAX_KEYS {
                if let Some(old) = self
                    .keys
                    .iter()
                    .min_by_key(|(_, k)| k.used)
                    .map(|(p, _)| *p)
                {
                    self.keys.remove(&old);
                }
            }
            self.keys.insert(*peer, keys);
        }
        let keys = self.keys.get_mut(peer)?;
        keys.used = tick;
        Some(keys)
    }

    /// Seals `plaintext` from us to `to`, or `None` if `to` is no usable key.
    // Each argument is a part of the associated data; a struct for them would only move
    // the same list to every call site.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seal(
        &mut self,
        identity: &Identity,
        to: &PeerId,
        kind: Kind,
        rpc: u64,
        aux: u8,
        extra: &[u8],
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        let me = identity.peer_id();
        let key = self.pair(identity, to)?.send;
        let mut nonce = [0; NONCE_LEN];
        nonce[..SALT_LEN].copy_from_slice(&self.salt);
        nonce[SALT_LEN..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        let aad = associated_data(&me, to, kind, rpc, aux, extra);
        xseal(&key, nonce, &aad, plaintext)
    }

    /// Opens what `from` sealed to us, checking that it belongs to this frame and was not
    /// opened before.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        &mut self,
        identity: &Identity,
        from: &PeerId,
        kind: Kind,
        rpc: u64,
        aux: u8,
        extra: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD {
            return Err(OpenError::Forged);
        }
        let me = identity.peer_id();
        let key = self.pair(identity, from).ok_or(OpenError::Forged)?.recv;
        let aad = associated_data(from, &me, kind, rpc, aux, extra);
        let (nonce, plaintext) = xopen(&key, &aad, sealed).ok_or(OpenError::Forged)?;
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&nonce[..SALT_LEN]);
        let mut counter = [0; 8];
        counter.copy_from_slice(&nonce[SALT_LEN..]);
        if !self.fresh(from, salt, u64::from_be_bytes(counter)) {
            return Err(OpenError::Replayed);
        }
        Ok(plaintext)
    }

    /// Whether `(salt, counter)` from `from` is new; remembers it.
    fn fresh(&mut self, from: &PeerId, salt: [u8; SALT_LEN], counter: u64) -> bool {
        self.tick += 1;
        let tick = self.tick;
        if !self.windows.contains_key(from) && self.windows.len() >= MAX_PEERS {
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(_, ws)| ws.iter().map(|w| w.used).max().unwrap_or(0))
                .map(|(p, _)| *p);
            if let Some(old) = oldest {
                self.windows.remove(&old);
            }
        }
        let sessions = self.windows.entry(*from).or_default();
        if let Some(w) = sessions.iter_mut().find(|w| w.salt == salt) {
            w.used = tick;
            return w.accept(counter);
        }
        if sessions.len() >= SESSIONS {
            if let Some(i) = (0..sessions.len()).min_by_key(|&i| sessions[i].used) {
                sessions.swap_remove(i);
            }
        }
        sessions.push(Window::new(salt, counter, tick));
        true
    }
}

/// XChaCha20-Poly1305: `nonce ‖ ciphertext ‖ tag` of `plaintext` under `key` (one
/// instance of the cipher for this module and [`super::room`]).
pub(super) fn xseal(
    key: &[u8; 32],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = XChaCha20Poly1305::new(&(*key).into())
        .encrypt_inout_detached(&XNonce::from(nonce), aad, (&mut out[NONCE_LEN..]).into())
        .ok()?;
    out.extend_from_slice(&tag);
    Some(out)
}

/// Opens what [`xseal`] sealed: its nonce and plaintext, or `None` if it does not verify.
pub(super) fn xopen(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Option<([u8; NONCE_LEN], Vec<u8>)> {
    if sealed.len() < OVERHEAD {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let tag = Tag::try_from(tag).ok()?;
    let mut plaintext = ciphertext.to_vec();
    XChaCha20Poly1305::new(&(*key).into())
        .decrypt_inout_detached(
            &XNonce::from(nonce),
            aad,
            plaintext.as_mut_slice().into(),
            &tag,
        )
        .ok()?;
    Some((nonce, plaintext))
}

fn associated_data(
    from: &PeerId,
    to: &PeerId,
    kind: Kind,
    rpc: u64,
    aux: u8,
    extra: &[u8],
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + 64 + 10 + extra.len());
    aad.extend_from_slice(AAD_CONTEXT);
    aad.extend_from_slice(from.as_bytes());
    aad.extend_from_slice(to.as_bytes());
    aad.push(kind as u8);
    aad.extend_from_slice(&rpc.to_be_bytes());
    aad.push(aux);
    aad.extend_from_slice(extra);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Identity, Identity, Identity) {
        (
            Identity::from_secret_bytes([1; 32]),
            Identity::from_secret_bytes([2; 32]),
            Identity::from_secret_bytes([3; 32]),
        )
    }

    #[test]
    fn in_a_room_with_a_secret_only_its_members_open_routed_payloads() {
        let (a, b, _) = ids();
        let room = super::super::room::RoomKey::derive("r", "s");
        let other = super::super::room::RoomKey::derive("r", "t");
        let mut sa = Sealer::new(&a.peer_id(), 1).with_room(Some(*room.seal_key()));
        let sealed = sa
            .seal(&a, &b.peer_id(), Kind::Direct, 7, 0, &[], b"words")
            .unwrap();
        let a_id = a.peer_id();
        // The pair's X25519 secret alone (no room key, or another room's) opens nothing.
        for key in [None, Some(*other.seal_key())] {
            let mut sb = Sealer::new(&b.peer_id(), 2).with_room(key);
            assert_eq!(
                sb.open(&b, &a_id, Kind::Direct, 7, 0, &[], &sealed),
                Err(OpenError::Forged)
            );
        }
        let mut sb = Sealer::new(&b.peer_id(), 2).with_room(Some(*room.seal_key()));
        assert_eq!(
            sb.open(&b, &a_id, Kind::Direct, 7, 0, &[], &sealed)
                .unwrap(),
            b"words"
        );
    }

    #[test]
    fn a_sealed_payload_opens_once_for_its_frame_only() {
        let (a, b, m) = ids();
        let (mut sa, mut sb, mut sm) = (
            Sealer::new(&a.peer_id(), 1),
            Sealer::new(&b.peer_id(), 2),
            Sealer::new(&m.peer_id(), 3),
        );
        let sealed = sa
            .seal(&a, &b.peer_id(), Kind::Direct, 7, 0, &[], b"secret words")
            .unwrap();
        assert_eq!(sealed.len(), b"secret words".len() + OVERHEAD);
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "the plaintext does not show"
        );
        let a_id = a.peer_id();
        // Another kind, rpc, hop count or claimed source: refused.
        for (from, kind, rpc, aux) in [
            (a_id, Kind::Request, 7, 0),
            (a_id, Kind::Direct, 8, 0),
            (a_id, Kind::Direct, 7, 1),
            (m.peer_id(), Kind::Direct, 7, 0),
        ] {
            assert_eq!(
                sb.open(&b, &from, kind, rpc, aux, &[], &sealed),
                Err(OpenError::Forged)
            );
        }
        // A third party cannot open it.
        assert_eq!(
            sm.open(&m, &a_id, Kind::Direct, 7, 0, &[], &sealed),
            Err(OpenError::Forged)
        );
        // One flipped bit anywhere: refused.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert_eq!(
                sb.open(&b, &a_id, Kind::Direct, 7, 0, &[], &bad),
                Err(OpenError::Forged)
            );
        }
        assert_eq!(
            sb.open(&b, &a_id, Kind::Direct, 7, 0, &[], &sealed)
                .as_deref(),
            Ok(&b"secret words"[..])
        );
        assert_eq!(
            sb.open(&b, &a_id, Kind::Direct, 7, 0, &[], &sealed),
            Err(OpenError::Replayed)
        );
        assert_eq!(
            sb.open(&b, &a_id, Kind::Direct, 7, 0, &[], &sealed[..10]),
            Err(OpenError::Forged)
        );
    }

    #[test]
    fn the_replay_window_takes_reordered_counters_once_and_keeps_old_sessions() {
        let mut w = Window::new([0; SALT_LEN], 10, 0);
        assert!(!w.accept(10));
        assert!(w.accept(12));
        assert!(w.accept(11));
        assert!(!w.accept(11));
        assert!(w.accept(12 + 300));
        assert!(w.accept(12 + 1));
        assert!(!w.accept(12 + 1));
        assert!(!w.accept(12), "seen before the shift");
        assert!(w.accept(2000));
        assert!(!w.accept(2000 - WINDOW), "older than the window");
        assert!(w.accept(2000 - WINDOW + 1));

        // A sender's new session (salt) does not reopen its old one.
        let (a, b, _) = ids();
        let mut sb = Sealer::new(&b.peer_id(), 2);
        let mut old = Sealer::new(&a.peer_id(), 1);
        let mut new = Sealer::new(&a.peer_id(), 99);
        let first = old
            .seal(&a, &b.peer_id(), Kind::Direct, 1, 0, &[], b"x")
            .unwrap();
        let a_id = a.peer_id();
        assert!(sb.open(&b, &a_id, Kind::Direct, 1, 0, &[], &first).is_ok());
        for rpc in 0..3 {
            let m = new
                .seal(&a, &b.peer_id(), Kind::Direct, rpc, 0, &[], b"y")
                .unwrap();
            assert!(sb.open(&b, &a_id, Kind::Direct, rpc, 0, &[], &m).is_ok());
        }
        assert_eq!(
            sb.open(&b, &a_id, Kind::Direct, 1, 0, &[], &first),
            Err(OpenError::Replayed)
        );
    }
}
