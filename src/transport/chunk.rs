//! Chunking of large messages over one ordered, reliable data channel.
//!
//! Only messages up to 64 KiB cross every browser's data channel in one piece, and large
//! messages block the channel for everything behind them. So every message is sent as
//! one or more chunks of at most [`MAX_CHUNK`] bytes ([`CHUNK_PAYLOAD`] of payload where
//! the remote's limit is not known to be larger), each preceded by a one-byte header
//! saying whether more chunks of the same message follow. The channel is ordered and
//! reliable, so reassembly is concatenation: no ids, no offsets, nothing to reorder.
//!
//! The receiver bounds what it buffers ([`Reassembler::new`]'s limit): a peer announcing
//! an endless message gets an error, not our memory. This module is pure (no browser
//! types), so both transports and the tests share it.

/// Payload bytes per chunk when the remote's limit is unknown: 16 KiB, the size every
/// WebRTC stack handles without fragmentation trouble.
pub const CHUNK_PAYLOAD: usize = 16 * 1024;

/// The largest chunk (header included) sent when the remote takes it: 64 KiB, the
/// `max-message-size` an SDP without the attribute means (RFC 8841), and what webrtc-rs
/// advertises. Fewer, larger chunks mean fewer `send` calls and message events per MiB.
/// Receivers take chunks of any size (up to their message limit), so the size is the
/// sender's choice alone.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Payload bytes per chunk for a remote whose SCTP transport takes messages of up to
/// `max_message_size` bytes (`RTCSctpTransport.maxMessageSize`: infinite for "no
/// limit"; `None` when not known yet): the largest chunk up to [`MAX_CHUNK`] it takes,
/// and [`CHUNK_PAYLOAD`] while the limit is unknown or smaller than that.
pub fn payload_for(max_message_size: Option<f64>) -> usize {
    match max_message_size {
        Some(m) if m >= (CHUNK_PAYLOAD + 1) as f64 => {
            // `as` saturates: an infinite limit becomes usize::MAX, then MAX_CHUNK.
            (m as usize).min(MAX_CHUNK) - 1
        }
        _ => CHUNK_PAYLOAD,
    }
}

/// Header of a chunk after which the message continues.
const MORE: u8 = 0x01;
/// Header of the last (or only) chunk of a message.
const LAST: u8 = 0x00;

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk with no header byte.
    #[error("empty chunk")]
    Empty,
    /// A header byte that is neither "more" nor "last".
    #[error("unknown chunk header {0:#04x}")]
    BadHeader(u8),
    /// The message grew beyond the receiver's limit.
    #[error("message exceeds the {max}-byte limit")]
    TooLarge {
        /// The limit.
        max: usize,
    },
}

/// Splits `message` into chunks of `payload` bytes (at least 1; [`CHUNK_PAYLOAD`] or
/// [`payload_for`] the remote) ready to send, in order. An empty message is one chunk.
pub fn split(message: &[u8], payload: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let payload = payload.max(1);
    let n = message.len().div_ceil(payload).max(1);
    (0..n).map(move |i| {
        let start = i * payload;
        let end = (start + payload).min(message.len());
        let mut chunk = Vec::with_capacity(1 + end - start);
        chunk.push(if i + 1 == n { LAST } else { MORE });
        chunk.extend_from_slice(&message[start..end]);
        chunk
    })
}

/// Chunks accepted for sending and not yet handed to the data channel, with their byte
/// count. Both transports queue through it, so a message is admitted (whole, or refused
/// with nothing queued) the same way in the browser and natively; each transport drains
/// it at its own pace.
#[derive(Debug, Default)]
pub struct SendQueue {
    /// Chunks in sending order.
    pub chunks: std::collections::VecDeque<Vec<u8>>,
    /// Bytes of the chunks still counted as queued.
    pub bytes: usize,
}

impl SendQueue {
    /// Splits `message` into chunks of `payload` bytes and queues them all, unless that
    /// would take the queue past `max_queued` bytes: then nothing is queued and the
    /// caller gets [`TransportError::Backpressure`](super::TransportError::Backpressure).
    pub fn push_message(
        &mut self,
        message: &[u8],
        max_queued: usize,
        payload: usize,
    ) -> Result<(), super::TransportError> {
        if self.bytes + message.len() > max_queued {
            return Err(super::TransportError::Backpressure);
        }
        for c in split(message, payload) {
            self.push_raw(c);
        }
        Ok(())
    }

    /// Queues one data-channel message as is (no chunk header), counted like the rest.
    pub fn push_raw(&mut self, bytes: Vec<u8>) {
        self.bytes += bytes.len();
        self.chunks.push_back(bytes);
    }
}

/// Checks a message against the largest one a connection sends.
pub fn check_size(message: &[u8], max_message: usize) -> Result<(), super::TransportError> {
    if message.len() > max_message {
        return Err(super::TransportError::TooLarge {
            size: message.len(),
            max: max_message,
        });
    }
    Ok(())
}

/// Reassembles messages from the chunks of one channel.
#[derive(Debug)]
pub struct Reassembler {
    max: usize,
    partial: Vec<u8>,
}

impl Reassembler {
    /// A reassembler that refuses messages larger than `max` bytes.
    pub fn new(max: usize) -> Self {
        Reassembler {
            max,
            partial: Vec::new(),
        }
    }

    /// Feeds one chunk; returns the message it completes, if any. After an error the
    /// partial message is dropped, and the next chunk starts a new message.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let (&header, payload) = chunk.split_first().ok_or(ChunkError::Empty)?;
        self.push_from(header, payload.len(), |dst| dst.copy_from_slice(payload))
    }

    /// [`Reassembler::push`] for a chunk that lives elsewhere (the browser's
    /// `ArrayBuffer`): its header byte, its payload length, and `fill`, which copies the
    /// payload into the slice it is given. The payload is copied once, straight into the
    /// message: a message of one chunk becomes its own buffer, a longer one is appended
    /// to the message in progress.
    pub fn push_from(
        &mut self,
        header: u8,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        if header != MORE && header != LAST {
            self.partial.clear();
            return Err(ChunkError::BadHeader(header));
        }
        if self.partial.len() + payload_len > self.max {
            self.partial = Vec::new();
            return Err(ChunkError::TooLarge { max: self.max });
        }
        if header == LAST && self.partial.is_empty() {
            let mut message = vec![0; payload_len];
            fill(&mut message);
            return Ok(Some(message));
        }
        let start = self.partial.len();
        self.partial.resize(start + payload_len, 0);
        fill(&mut self.partial[start..]);
        if header == LAST {
            Ok(Some(std::mem::take(&mut self.partial)))
        } else {
            Ok(None)
        }
    }

    /// Bytes buffered for the message in progress.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(message: &[u8]) -> Vec<u8> {
        let mut r = Reassembler::new(8 << 20);
        let mut out = None;
        for c in split(message, CHUNK_PAYLOAD) {
            assert!(c.len() <= CHUNK_PAYLOAD + 1);
            assert!(out.is_none(), "nothing completes before the last chunk");
            out = r.push(&c).unwrap();
        }
        out.expect("the last chunk completes the message")
    }

    #[test]
    fn messages_of_every_size_survive_chunking() {
        for len in [
            0,
            1,
            CHUNK_PAYLOAD - 1,
            CHUNK_PAYLOAD,
            CHUNK_PAYLOAD + 1,
            5 << 20,
        ] {
            let m: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(roundtrip(&m), m, "length {len}");
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_and_the_next_one_still_arrives() {
        let mut r = Reassembler::new(3 * CHUNK_PAYLOAD);
        let big = vec![1u8; 4 * CHUNK_PAYLOAD];
        let result: Result<Vec<_>, _> = split(&big, CHUNK_PAYLOAD).map(|c| r.push(&c)).collect();
        assert_eq!(
            result,
            Err(ChunkError::TooLarge {
                max: 3 * CHUNK_PAYLOAD
            })
        );
        assert!(r.buffered() <= 3 * CHUNK_PAYLOAD);
        // The sender's remaining chunks of the refused message would be garbage to us; a
        // real transport closes the channel here. A fresh message on a fresh reassembler:
        let mut r = Reassembler::new(3 * CHUNK_PAYLOAD);
        assert_eq!(r.push(&[LAST, 9]).unwrap(), Some(vec![9]));
    }

    #[test]
    fn a_message_that_would_overflow_the_send_queue_is_refused_whole() {
        let mut q = SendQueue::default();
        q.push_message(&[1; 3 * CHUNK_PAYLOAD], 4 * CHUNK_PAYLOAD, CHUNK_PAYLOAD)
            .unwrap();
        assert_eq!(q.chunks.len(), 3);
        let queued = q.bytes;
        assert_eq!(
            q.push_message(&[2; 2 * CHUNK_PAYLOAD], 4 * CHUNK_PAYLOAD, CHUNK_PAYLOAD),
            Err(super::super::TransportError::Backpressure)
        );
        assert_eq!(
            (q.chunks.len(), q.bytes),
            (3, queued),
            "nothing of it queued"
        );
    }

    #[test]
    fn chunks_are_as_large_as_the_remote_takes_up_to_64_kib() {
        // Chrome (256 KiB), Firefox (1 GiB or unlimited), webrtc-rs and the RFC default
        // (64 KiB): whole 64 KiB chunks, header included.
        for limit in [262_144.0, 1_073_741_823.0, f64::INFINITY, 65_536.0] {
            assert_eq!(payload_for(Some(limit)), MAX_CHUNK - 1, "limit {limit}");
        }
        // Unknown, nonsense or small limits: the 16 KiB every stack takes.
        for limit in [None, Some(0.0), Some(f64::NAN), Some(-1.0), Some(16_384.0)] {
            assert_eq!(payload_for(limit), CHUNK_PAYLOAD, "limit {limit:?}");
        }
        assert_eq!(payload_for(Some(40_000.0)), 39_999);
    }

    #[test]
    fn large_chunks_reassemble_into_the_same_message_as_small_ones() {
        let m: Vec<u8> = (0..(1 << 20) + 5).map(|i| (i * 13 + 1) as u8).collect();
        let mut r = Reassembler::new(8 << 20);
        let mut out = None;
        let big = payload_for(Some(262_144.0));
        let chunks: Vec<_> = split(&m, big).collect();
        assert_eq!(chunks.len(), m.len().div_ceil(big));
        for c in &chunks {
            assert!(c.len() <= MAX_CHUNK);
            out = r.push(c).unwrap();
        }
        assert_eq!(out.as_deref(), Some(&m[..]));
    }

    #[test]
    fn garbage_chunks_are_errors_not_panics() {
        let mut r = Reassembler::new(1024);
        assert_eq!(r.push(&[]), Err(ChunkError::Empty));
        assert_eq!(r.push(&[0x7f, 1, 2]), Err(ChunkError::BadHeader(0x7f)));
        assert_eq!(r.push(&[LAST, 1, 2]).unwrap(), Some(vec![1, 2]));
    }
}
