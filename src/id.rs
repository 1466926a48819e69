//! Identities: every peer is an Ed25519 key pair, and its [`PeerId`] *is* the public key.
//!
//! Making the id the key means nobody has to trust a directory to map ids to keys: a
//! signature made by a peer can be checked against its id alone. The signaling server
//! uses this to check that a joining session owns the id it claims, and peers use it to
//! check that a signal envelope (offer, answer, ICE candidate) or a broadcast really comes
//! from the peer it names, whichever relays carried it.
//!
//! Every signature is made over a *context* string followed by the message, so that a
//! signature produced for one purpose (say, a join proof) can never be replayed as
//! another (say, a broadcast).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a [`PeerId`] in bytes (an Ed25519 public key).
pub const PEER_ID_LEN: usize = 32;
/// Length of a [`Signature`] in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Errors about identities, keys and signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The operating system or browser gave no randomness.
    #[error("no secure randomness available: {0}")]
    Randomness(String),
    /// Text that should hold a hex-encoded id, key or signature did not.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed ("peer id", "signature", "secret key").
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The bytes are not a valid Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    InvalidKey,
    /// The signature does not match the message and the claimed signer.
    #[error("bad signature")]
    BadSignature,
}

/// The identity of a peer: its Ed25519 public key.
///
/// Displayed as 64 lowercase hex characters; [`PeerId::short`] gives the first 8 for logs
/// and pictures. Ordered bytewise, which gives every pair of peers an agreed order (used,
/// for instance, to decide who is "polite" in WebRTC perfect negotiation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; PEER_ID_LEN]);

impl PeerId {
    /// Wraps raw public-key bytes. Validity as a curve point is checked on verification.
    pub const fn from_bytes(bytes: [u8; PEER_ID_LEN]) -> Self {
        PeerId(bytes)
    }

    /// The raw public-key bytes.
    pub const fn as_bytes(&self) -> &[u8; PEER_ID_LEN] {
        &self.0
    }

    /// The first 8 hex characters: enough to tell peers apart in logs and in the demo.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Checks that `sig` is this peer's signature over `context || message`.
    ///
    /// Strict: a key of small order (a "weak" key, such as the identity point) is refused
    /// as [`IdError::InvalidKey`], and so is a signature whose `R` has small order.
    /// Plain Ed25519 verification accepts a forged signature for such a key (for the
    /// identity point, `R` = identity and `s` = 0 verify any message), so "this id signed
    /// it" would prove nothing for those ids. No honest key is of small order.
    pub fn verify(&self, context: &[u8], message: &[u8], sig: &Signature) -> Result<(), IdError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| IdError::InvalidKey)?;
        if key.is_weak() {
            return Err(IdError::InvalidKey);
        }
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(&contextualize(context, message), &sig)
            .map_err(|_| IdError::BadSignature)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        decode_hex_array("peer id", s).map(PeerId)
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps raw signature bytes.
    pub const fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Signature(bytes)
    }

    /// The raw signature bytes.
    pub const fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..6]))
    }
}

impl FromStr for Signature {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        decode_hex_array("signature", s).map(Signature)
    }
}

/// A peer's key pair. The secret never leaves this struct except through
/// [`Identity::secret_bytes`], which exists so an application can persist its identity.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh identity from the platform's secure randomness (`crypto.getRandomValues`
    /// in a browser, the OS elsewhere).
    pub fn generate() -> Result<Self, IdError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdError::Randomness(e.to_string()))?;
        Ok(Self::from_secret_bytes(seed))
    }

    /// A deterministic identity from a 32-byte seed: for tests and the simulator, and to
    /// restore a persisted identity.
    pub fn from_secret_bytes(seed: [u8; 32]) -> Self {
        Identity {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Parses a secret key written as 64 hex characters (see [`Identity::secret_hex`]).
    pub fn from_secret_hex(s: &str) -> Result<Self, IdError> {
        decode_hex_array("secret key", s).map(Self::from_secret_bytes)
    }

    /// The 32-byte secret seed. Handle with care.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The secret seed as hex, for persisting an identity (e.g. in `localStorage`).
    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// This identity's public id.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.key.verifying_key().to_bytes())
    }

    /// Signs `context || message`.
    pub fn sign(&self, context: &[u8], message: &[u8]) -> Signature {
        Signature(self.key.sign(&contextualize(context, message)).to_bytes())
    }

    /// The X25519 shared secret of this identity and `peer`, from both Ed25519 keys
    /// (the birationally equivalent Montgomery points, as libsodium's
    /// `crypto_sign_ed25519_pk_to_curve25519`): `peer` computes the same value from its
    /// own secret and our id. Refused for an id that is not a point, or that is of small
    /// order (the secret would then be known to anyone), like [`PeerId::verify`].
    ///
    /// The secret is not uniformly random: hash it before using it as a key.
    pub fn key_agreement(&self, peer: &PeerId) -> Result<[u8; 32], IdError> {
        let key = VerifyingKey::from_bytes(&peer.0).map_err(|_| IdError::InvalidKey)?;
        if key.is_weak() {
            return Err(IdError::InvalidKey);
        }
        let shared = key.to_montgomery().mul_clamped(self.key.to_scalar_bytes());
        if shared.to_bytes() == [0; 32] {
            return Err(IdError::InvalidKey);
        }
        Ok(shared.to_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.peer_id().short())
    }
}

/// Domain separation: the context is length-prefixed so `("ab", "c")` and `("a", "bc")`
/// sign different bytes.
fn contextualize(context: &[u8], message: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(2 + context.len() + message.len());
    buf.extend_from_slice(&(context.len() as u16).to_be_bytes());
    buf.extend_from_slice(context);
    buf.extend_from_slice(message);
    buf
}

fn decode_hex_array<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], IdError> {
    let mut out = [0u8; N];
    if s.len() != 2 * N {
        return Err(IdError::Malformed {
            what,
            reason: format!("expected {} hex characters, got {}", 2 * N, s.len()),
        });
    }
    // Our own text: hex's Display prints the bad character with `{:?}`, whose escaping
    // brought `char`'s Debug and Unicode tables into the browser build (~1 KB gzipped).
    hex::decode_to_slice(s, &mut out).map_err(|e| IdError::Malformed {
        what,
        reason: match e {
            hex::FromHexError::InvalidHexCharacter { index, .. } => {
                format!("not a hex digit at position {index}")
            }
            _ => "not hex".to_owned(),
        },
    })?;
    Ok(out)
}

// Serde: hex strings in human-readable formats (JSON on the signaling socket and in the
// JS API), raw bytes in binary ones (the peer-to-peer wire format).
macro_rules! serde_fixed_bytes {
    ($ty:ident, $len:expr, $what:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    use serde::ser::SerializeTuple;
                    let mut t = s.serialize_tuple($len)?;
                    for b in &self.0 {
                        t.serialize_element(b)?;
                    }
                    t.end()
                }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    decode_hex_array($what, &s)
                        .map($ty)
                        .map_err(serde::de::Error::custom)
                } else {
                    struct V;
                    impl<'de> serde::de::Visitor<'de> for V {
                        type Value = $ty;
                        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                            write!(f, "{} bytes", $len)
                        }
                        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<$ty, E> {
                            <[u8; $len]>::try_from(v)
                                .map($ty)
                                .map_err(|_| E::invalid_length(v.len(), &self))
                        }
                        fn visit_seq<A: serde::de::SeqAccess<'de>>(
                            self,
                            mut seq: A,
                        ) -> Result<$ty, A::Error> {
                            let mut out = [0u8; $len];
                            for (i, b) in out.iter_mut().enumerate() {
                                *b = seq
                                    .next_element()?
                                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                            }
                            Ok($ty(out))
                        }
                    }
                    d.deserialize_tuple($len, V)
                }
            }
        }
    };
}

serde_fixed_bytes!(PeerId, PEER_ID_LEN, "peer id");
serde_fixed_bytes!(Signature, SIGNATURE_LEN, "signature");

/// `#[serde(with = "crate::id::byte_array")]` for a `[u8; N]` field: the encoding of serde's
/// own impl for arrays (a tuple of `N` bytes, in every format), read in a loop. Serde reads
/// an array with one unrolled step per element, ~2 KB of wasm for a 32-byte key.
pub(crate) mod byte_array {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(N)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        struct V<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for V<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of length {N}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
                let mut out = [0u8; N];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        d.deserialize_tuple(N, V::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_agree_on_the_shared_secret_and_weak_ids_are_refused() {
        let a = Identity::from_secret_bytes([1; 32]);
        let b = Identity::from_secret_bytes([2; 32]);
        let c = Identity::from_secret_bytes([3; 32]);
        let ab = a.key_agreement(&b.peer_id()).unwrap();
        assert_eq!(ab, b.key_agreement(&a.peer_id()).unwrap());
        assert_ne!(ab, a.key_agreement(&c.peer_id()).unwrap());
        // The identity point (small order) and bytes that are no point at all.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            a.key_agreement(&PeerId::from_bytes(identity_point)),
            Err(IdError::InvalidKey)
        );
        let not_a_point = (0u8..=255)
            .map(|i| [i; 32])
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        assert_eq!(
            a.key_agreement(&PeerId::from_bytes(not_a_point)),
            Err(IdError::InvalidKey)
        );
    }

    #[test]
    fn a_byte_array_field_keeps_serdes_own_encoding_in_postcard_and_json() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Ours(#[serde(with = "byte_array")] [u8; 32]);
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Serdes([u8; 32]);
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 200) as u8);
        let wire = postcard::to_allocvec(&Serdes(bytes)).unwrap();
        assert_eq!(postcard::to_allocvec(&Ours(bytes)).unwrap(), wire);
        assert_eq!(postcard::from_bytes::<Ours>(&wire).unwrap(), Ours(bytes));
        assert!(postcard::from_bytes::<Ours>(&wire[..31]).is_err());
        let json = serde_json::to_string(&Serdes(bytes)).unwrap();
        assert_eq!(serde_json::to_string(&Ours(bytes)).unwrap(), json);
        assert_eq!(serde_json::from_str::<Ours>(&json).unwrap(), Ours(bytes));
        assert!(serde_json::from_str::<Ours>("[1,2,3]").is_err());
    }

    #[test]
    fn a_signature_verifies_only_for_its_signer_context_and_message() {
        let alice = Identity::from_secret_bytes([1; 32]);
        let bob = Identity::from_secret_bytes([2; 32]);
        let sig = alice.sign(b"ctx", b"hello");
        assert_eq!(alice.peer_id().verify(b"ctx", b"hello", &sig), Ok(()));
        assert_eq!(
            alice.peer_id().verify(b"ctx", b"hellO", &sig),
            Err(IdError::BadSignature)
        );
        assert_eq!(
            alice.peer_id().verify(b"ctx2", b"hello", &sig),
            Err(IdError::BadSignature)
        );
        assert_eq!(
            bob.peer_id().verify(b"ctx", b"hello", &sig),
            Err(IdError::BadSignature)
        );
        // Context and message boundaries matter.
        let sig2 = alice.sign(b"ab", b"c");
        assert!(alice.peer_id().verify(b"a", b"bc", &sig2).is_err());
    }

    #[test]
    fn a_small_order_key_proves_nothing_so_its_signatures_are_refused() {
        // The identity point: with R = identity and s = 0, sB = R + hA holds for every
        // message, so plain verification accepts this forgery for any message.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut forged = [0u8; SIGNATURE_LEN];
        forged[0] = 1;
        let forged = Signature::from_bytes(forged);
        let weak = PeerId::from_bytes(identity);
        assert_eq!(
            weak.verify(b"ctx", b"anything", &forged),
            Err(IdError::InvalidKey)
        );
        // The other small-order points are refused too, whatever the signature.
        let honest = Identity::from_secret_bytes([3; 32]).sign(b"ctx", b"m");
        let mut order_two = [0xffu8; 32];
        order_two[0] = 0xec;
        order_two[31] = 0x7f;
        for key in [[0u8; 32], order_two] {
            let weak = PeerId::from_bytes(key);
            assert_eq!(weak.verify(b"ctx", b"m", &honest), Err(IdError::InvalidKey));
            assert_eq!(weak.verify(b"ctx", b"m", &forged), Err(IdError::InvalidKey));
        }
        // An honest key with a small-order R and s = 0 is refused as a bad signature.
        let alice = Identity::from_secret_bytes([4; 32]).peer_id();
        assert_eq!(
            alice.verify(b"ctx", b"m", &forged),
            Err(IdError::BadSignature)
        );
    }

    #[test]
    fn peer_ids_round_trip_through_text_and_json() {
        let id = Identity::generate().unwrap().peer_id();
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<PeerId>(&json).unwrap(), id);
        assert_eq!(id.short().len(), 8);
    }

    #[test]
    fn malformed_ids_are_refused_with_a_reason() {
        assert!(matches!(
            "abc".parse::<PeerId>(),
            Err(IdError::Malformed { .. })
        ));
        assert!(matches!(
            "zz".repeat(32).parse::<PeerId>(),
            Err(IdError::Malformed { .. })
        ));
        assert!(serde_json::from_str::<Signature>("\"00\"").is_err());
    }

    #[test]
    fn identities_persist_through_their_secret() {
        let a = Identity::generate().unwrap();
        let b = Identity::from_secret_hex(&a.secret_hex()).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
    }
}
