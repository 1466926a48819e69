//! The overlay's random number generator: ChaCha8 with a 64-bit block counter and a
//! 64-bit stream id, output for output the same as `rand_chacha::ChaCha8Rng` (the tests
//! check), in a loop-rolled form.
//!
//! Why not `rand_chacha` itself: its block function is unrolled four blocks wide and came
//! to 5.5 KB of the browser build; this one is a few hundred bytes, and the overlay draws
//! a handful of numbers per event, so speed does not matter here.

use rand_core::{RngCore, SeedableRng};

const WORDS: usize = 64; // four 16-word blocks per refill, like rand_chacha

#[derive(Clone)]
pub(crate) struct ChaCha8 {
    key: [u32; 8],
    counter: u64,
    stream: u64,
    buf: [u32; WORDS],
    /// Next unread word of `buf`; `WORDS` when empty.
    index: usize,
}

impl std::fmt::Debug for ChaCha8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChaCha8 { .. }")
    }
}

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

impl ChaCha8 {
    /// Draws from stream `stream` from now on (the words left of the current refill are
    /// dropped). On a generator that has not drawn yet, the same as `ChaCha8Rng::set_stream`.
    pub(crate) fn set_stream(&mut self, stream: u64) {
        self.stream = stream;
        self.index = WORDS;
    }

    fn refill(&mut self) {
        for (n, out) in self.buf.chunks_exact_mut(16).enumerate() {
            let counter = self.counter.wrapping_add(n as u64);
            let mut input = [0u32; 16];
            input[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
            input[4..12].copy_from_slice(&self.key);
            input[12] = counter as u32;
            input[13] = (counter >> 32) as u32;
            input[14] = self.stream as u32;
            input[15] = (self.stream >> 32) as u32;
            let mut s = input;
            for _ in 0..4 {
                quarter(&mut s, 0, 4, 8, 12);
                quarter(&mut s, 1, 5, 9, 13);
                quarter(&mut s, 2, 6, 10, 14);
                quarter(&mut s, 3, 7, 11, 15);
                quarter(&mut s, 0, 5, 10, 15);
                quarter(&mut s, 1, 6, 11, 12);
                quarter(&mut s, 2, 7, 8, 13);
                quarter(&mut s, 3, 4, 9, 14);
            }
            for ((o, s), i) in out.iter_mut().zip(s).zip(input) {
                *o = s.wrapping_add(i);
            }
        }
        self.counter = self.counter.wrapping_add(4);
        self.index = 0;
    }
}

impl SeedableRng for ChaCha8 {
    type Seed = [u8; 32];

    fn from_seed(seed: [u8; 32]) -> Self {
        let mut key = [0u32; 8];
        for (k, b) in key.iter_mut().zip(seed.chunks_exact(4)) {
            *k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        ChaCha8 {
            key,
            counter: 0,
            stream: 0,
            buf: [0; WORDS],
            index: WORDS,
        }
    }
}

impl RngCore for ChaCha8 {
    fn next_u32(&mut self) -> u32 {
        if self.index >= WORDS {
            self.refill();
        }
        self.index += 1;
        self.buf[self.index - 1]
    }

    /// Two words, low first; across a refill, the last word and the new first (as
    /// rand_core's `BlockRng`).
    fn next_u64(&mut self) -> u64 {
        let lo = u64::from(self.next_u32());
        let hi = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            let w = self.next_u32().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn draws_the_same_numbers_as_rand_chacha() {
        for seed in [0, 1, 42, 0xdead_beef, u64::MAX] {
            let mut ours = ChaCha8::seed_from_u64(seed);
            let mut theirs = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..300 {
                assert_eq!(ours.next_u64(), theirs.next_u64());
            }
            // An odd word count, so u64s straddle refills.
            assert_eq!(ours.next_u32(), theirs.next_u32());
            for _ in 0..100 {
                assert_eq!(ours.next_u64(), theirs.next_u64());
            }
            let mut clone = ours.clone();
            assert_eq!(clone.next_u64(), theirs.next_u64());

            let mut ours = ChaCha8::seed_from_u64(seed);
            let mut theirs = ChaCha8Rng::seed_from_u64(seed);
            ours.set_stream(7);
            theirs.set_stream(7);
            for _ in 0..100 {
                assert_eq!(ours.next_u64(), theirs.next_u64());
            }
        }
    }
}
