//! Direct messages from the application to one peer ([`Input::Send`](super::Input::Send)):
//! the overlay's `send(peer, bytes)`, acknowledged by the receiver.
//!
//! Each message takes one of two paths, chosen when it is sent:
//! - **Over an open connection** — to an active-view neighbour or a DHT link — it goes as
//!   [`Message::Data`] frames, pieces of up to [`MAX_DATA_PIECE`] (256 KiB) of a message
//!   of up to [`MAX_MESSAGE_LEN`] (16 MiB), queued back to back (the transport cuts them
//!   into 16 KiB chunks and applies backpressure). Pieces, not one frame, so that the
//!   receiver keeps hearing from the sender while a large message crosses a slow link:
//!   otherwise its failure detector would find the sender silent and drop it. The
//!   receiver joins them (at most one message in progress per connection, within the
//!   reassembly budget below). It is not signed: the data channel
//!   is DTLS-authenticated end to end and the fingerprint was checked through the signed
//!   signaling envelopes, so the receiver knows who sent it. That makes it the fast path:
//!   no per-message Ed25519 signature, which is what bounds the broadcast rate. The
//!   receiver reports it and acknowledges it in a [`Message::DataAck`] that carries the
//!   ids of every message from that sender since the last one. Acknowledgements are
//!   batched per connection, paced by the sender: each `Data` frame says how many of the
//!   sender's messages to us were unacknowledged when it left (`unacked`, this one
//!   included). Once at least half of those wait for an acknowledgement here — always so
//!   for a lone message, or for a sender that awaits each send — the batch goes
//!   [`ACK_DELAY_MS`] later (so what arrives in the same turn shares it); until then more
//!   messages are on their way and each of them would re-check, so the batch waits for
//!   them, at most [`ACK_IDLE_MS`] after the last arrival (the tail of a stream) and
//!   [`ACK_MAX_WAIT_MS`] after the first; [`ACK_BATCH`] ids go at once. A sender that
//!   keeps a window of messages in flight thus gets an acknowledgement per half window
//!   (a bulk transfer: one per ~2 MiB, not one per message, which cost ~6 % of the
//!   browser's CPU per MiB), and never waits on us with a full window; the price is that
//!   the last sends of a burst resolve up to [`ACK_IDLE_MS`] later. Each message is still
//!   reported delivered on its own, when the batch carrying its id arrives.
//! - **Otherwise** it is routed through the DHT ([`dht::Command::SendDirect`]), hop by
//!   hop over other peers' open links, which needs structured or hybrid mode. A routed
//!   frame must fit every relay's 64 KiB frame limit, so a message over
//!   [`dht::MAX_DIRECT_PAYLOAD`] is cut into **fragments** of [`FRAGMENT_LEN`] bytes, each
//!   its own routed (and DHT-acknowledged, once-retried) direct message carrying a small
//!   header ([`FRAGMENT_MAGIC`], message id, index, count, total length). The receiver
//!   reassembles them in any order and, once complete, reports the message and routes a
//!   `done` note back; the sender reports the message delivered only on that note, so an
//!   acknowledged fragment of a message the receiver had to drop never counts as
//!   delivered.
//!
//! Both paths report alike, so a driver handles one set of events: the receiver gets
//! [`DhtEvent::Direct`], the sender [`DhtEvent::Delivered`] or [`DhtEvent::Failed`]
//! (fragments and notes are consumed here and never reach the driver).
//!
//! Bounds: a message on the direct path is not kept after it is handed to the transport
//! (the channel is reliable and ordered, so there is nothing to retry); only its id, peer
//! and deadline wait for the acknowledgement. If the connection goes before the
//! acknowledgement comes, the send fails with [`DhtError::Unreachable`] — as with any
//! acknowledged protocol, a failure does not prove the message was not delivered.
//! Fragments in flight are held by the DHT for their retry (at most the message, 16 MiB);
//! reassembly holds at most [`MAX_REASSEMBLY_BYTES`] for all senders together (a message
//! that would exceed it is dropped, and its sender times out), and an incomplete message
//! is dropped [`REASSEMBLY_TIMEOUT_MS`] after its last fragment. Malformed fragments are
//! dropped, never trusted: lengths are checked against the header before anything is
//! allocated.

use super::dht::{self, Command, DhtError, DhtEvent, Mode};
use super::{Conn, Event, Output, Overlay};
use crate::id::PeerId;
use crate::wire::{Message, MAX_DATA_ACK_IDS, MAX_DATA_PIECE, MAX_MESSAGE_LEN};

/// Least time a direct-path message waits for its acknowledgement, in ms.
pub const ACK_TIMEOUT_MS: u64 = 10_000;
/// Extra waiting time per byte, as the slowest throughput assumed: 256 KB/s (a 5 MiB
/// message may take ~20 s more).
const ASSUMED_BYTES_PER_MS: u64 = 256;

/// How long a due acknowledgement waits for others to share its frame, in ms.
pub const ACK_DELAY_MS: u64 = 1;
/// Longest a batch not yet due waits after its last message arrived, in ms.
pub const ACK_IDLE_MS: u64 = 10;
/// Longest a batch not yet due waits after its first message arrived, in ms.
pub const ACK_MAX_WAIT_MS: u64 = 100;
/// Acknowledgements waiting for one peer that make a batch go at once.
pub const ACK_BATCH: usize = 128;
const _: () = assert!(ACK_BATCH <= MAX_DATA_ACK_IDS);

/// First bytes of a routed payload that is a fragment of a larger direct message.
pub const FRAGMENT_MAGIC: [u8; 4] = *b"rzF1";
/// First bytes of the receiver's note that a fragmented message is complete.
const DONE_MAGIC: [u8; 4] = *b"rzD1";
/// Fragment header: magic, message id (8 bytes), index, count and total length (4 each).
const FRAGMENT_HEADER: usize = 4 + 8 + 4 + 4 + 4;
/// Message bytes per fragment.
pub const FRAGMENT_LEN: usize = dht::MAX_DIRECT_PAYLOAD - FRAGMENT_HEADER;
/// Most bytes held in incomplete reassemblies, all senders together (32 MiB).
pub const MAX_REASSEMBLY_BYTES: usize = 32 * 1024 * 1024;
/// An incomplete message is dropped this long after its last fragment, ms.
pub const REASSEMBLY_TIMEOUT_MS: u64 = 30_000;
/// Internal ids of fragments and notes start here, far above any driver's counter.
const INTERNAL_IDS: u64 = 1 << 63;

/// A message arriving in pieces over a connection.
#[derive(Debug, Clone)]
struct Partial {
    id: u64,
    parts: u32,
    next: u32,
    data: Vec<u8>,
    last: u64,
}

/// A fragmented message of ours waiting for the receiver's `done` note.
#[derive(Debug, Clone)]
struct Outgoing {
    to: PeerId,
    deadline: u64,
    /// Most hops a fragment took.
    hops: u8,
}

/// A message being reassembled.
#[derive(Debug, Clone)]
struct Incoming {
    total: usize,
    pieces: Vec<Option<Vec<u8>>>,
    missing: usize,
    last: u64,
    hops: u8,
}

/// Direct messages in flight, both ways.
#[derive(Debug, Clone, Default)]
pub(super) struct Direct {
    /// By the application's id: the recipient and the deadline.
    waiting: crate::collections::BTreeMap<u64, (PeerId, u64)>,
    /// How many of `waiting` go to each peer (no zero entries).
    unacked: crate::collections::BTreeMap<PeerId, u32>,
    /// Fragmented messages of ours, by the application's id.
    outgoing: crate::collections::BTreeMap<u64, Outgoing>,
    /// Our fragments and notes in flight in the DHT: internal id → the application's id
    /// (`None` for a note).
    internal: crate::collections::BTreeMap<u64, Option<u64>>,
    next_internal: u64,
    /// Messages being reassembled, by sender and message id.
    incoming: crate::collections::BTreeMap<(PeerId, u64), Incoming>,
    /// Messages arriving in pieces over a connection, by sender.
    partial: crate::collections::BTreeMap<PeerId, Partial>,
    /// Bytes reserved by `incoming` and held by `partial`.
    incoming_bytes: usize,
    /// Messages received over a connection and not yet acknowledged, by sender.
    acks: crate::collections::BTreeMap<PeerId, AckBatch>,
    /// The earliest `AckFlush` timer set, if any.
    ack_timer: Option<u64>,
}

/// Acknowledgements waiting for one peer.
#[derive(Debug, Clone)]
struct AckBatch {
    /// Fewer than [`ACK_BATCH`] ids, in the order the messages arrived.
    ids: Vec<u64>,
    /// When the first of them arrived.
    first: u64,
    /// When the batch goes.
    due: u64,
    /// Whether half the sender's unacknowledged messages are here: `due` is final.
    urgent: bool,
}

impl Direct {
    /// Takes `id` off the messages waiting for an acknowledgement; its recipient.
    fn settle(&mut self, id: u64) -> Option<PeerId> {
        let (to, _) = self.waiting.remove(&id)?;
        if let Some(n) = self.unacked.get_mut(&to) {
            *n -= 1;
            if *n == 0 {
                self.unacked.remove(&to);
            }
        }
        Some(to)
    }

    fn internal_id(&mut self, app: Option<u64>) -> u64 {
        let id = INTERNAL_IDS | self.next_internal;
        self.next_internal = (self.next_internal + 1) & (INTERNAL_IDS - 1);
        self.internal.insert(id, app);
        id
    }
}

/// The header fields of a fragment, checked against each other.
fn parse_fragment(payload: &[u8]) -> Option<(u64, usize, usize, usize, &[u8])> {
    let header = payload.get(..FRAGMENT_HEADER)?;
    let u32_at = |i: usize| -> Option<usize> {
        Some(u32::from_be_bytes(header.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let msg = u64::from_be_bytes(header.get(4..12)?.try_into().ok()?);
    let (index, count, total) = (u32_at(12)?, u32_at(16)?, u32_at(20)?);
    let piece = &payload[FRAGMENT_HEADER..];
    // Checked before any arithmetic on them (usize is 32 bits in wasm).
    let valid = total <= MAX_MESSAGE_LEN && count == total.div_ceil(FRAGMENT_LEN).max(1);
    if !valid || index >= count {
        return None;
    }
    let want_len = if index == count - 1 {
        total - (count - 1) * FRAGMENT_LEN
    } else {
        FRAGMENT_LEN
    };
    (piece.len() == want_len).then_some((msg, index, count, total, piece))
}

impl Overlay {
    /// `Input::Send`: an application message for `to`, whichever path it takes.
    pub(super) fn on_send_command(&mut self, id: u64, to: PeerId, payload: Vec<u8>) {
        let refused = if !self.joined {
            Some(DhtError::NotJoined)
        } else if to == self.me {
            Some(DhtError::SelfTarget)
        } else if self.direct.waiting.contains_key(&id) {
            Some(DhtError::DuplicateId(id))
        } else if payload.len() > MAX_MESSAGE_LEN {
            Some(DhtError::TooLarge {
                what: "message",
                len: payload.len(),
                max: MAX_MESSAGE_LEN,
            })
        } else if self.conns.get(&to) == Some(&Conn::Active) {
            None
        } else if self.config.mode == Mode::Unstructured {
            // No routing without the DHT: only neighbours are reachable.
            Some(DhtError::Disabled(Mode::Unstructured))
        } else if self.direct.outgoing.contains_key(&id) {
            Some(DhtError::DuplicateId(id))
        } else if payload.len() > dht::MAX_DIRECT_PAYLOAD
            || payload.starts_with(&FRAGMENT_MAGIC)
            || payload.starts_with(&DONE_MAGIC)
        {
            // (A small payload that looks like our framing is framed too, so the
            // receiver never mistakes it.)
            return self.send_fragments(id, to, payload);
        } else {
            return self.on_dht_command(Command::SendDirect { id, to, payload });
        };
        if let Some(error) = refused {
            return self.event(Event::Dht(DhtEvent::Failed { id, error }));
        }
        let wait = ACK_TIMEOUT_MS + payload.len() as u64 / ASSUMED_BYTES_PER_MS;
        self.direct.waiting.insert(id, (to, self.now + wait));
        let unacked = self.direct.unacked.entry(to).or_default();
        *unacked += 1;
        let unacked = *unacked;
        let parts = payload.len().div_ceil(MAX_DATA_PIECE).max(1);
        if parts == 1 {
            return self.send(
                to,
                &Message::Data {
                    id,
                    part: 0,
                    parts: 1,
                    unacked,
                    payload,
                },
            );
        }
        for (part, piece) in payload.chunks(MAX_DATA_PIECE).enumerate() {
            let data = Message::Data {
                id,
                part: part as u32,
                parts: parts as u32,
                unacked,
                payload: piece.to_vec(),
            };
            self.send(to, &data);
        }
    }

    /// Routes `payload` to `to` in fragments (see the module docs).
    fn send_fragments(&mut self, id: u64, to: PeerId, payload: Vec<u8>) {
        let count = payload.len().div_ceil(FRAGMENT_LEN).max(1);
        let wait = ACK_TIMEOUT_MS + 2 * payload.len() as u64 / ASSUMED_BYTES_PER_MS;
        let outgoing = Outgoing {
            to,
            deadline: self.now + wait,
            hops: 0,
        };
        self.direct.outgoing.insert(id, outgoing);
        for index in 0..count {
            let start = index * FRAGMENT_LEN;
            let piece = &payload[start..(start + FRAGMENT_LEN).min(payload.len())];
            let mut fragment = Vec::with_capacity(FRAGMENT_HEADER + piece.len());
            fragment.extend_from_slice(&FRAGMENT_MAGIC);
            fragment.extend_from_slice(&id.to_be_bytes());
            for n in [index, count, payload.len()] {
                fragment.extend_from_slice(&(n as u32).to_be_bytes());
            }
            fragment.extend_from_slice(piece);
            let rpc = self.direct.internal_id(Some(id));
            self.on_dht_command(Command::SendDirect {
                id: rpc,
                to,
                payload: fragment,
            });
            // A fragment that failed at once (no route): the rest would too. Its failure
            // is turned into the message's by `filter_fragment_events`.
            let failed = |o: &Output| matches!(o, Output::Event(Event::Dht(DhtEvent::Failed { id, .. })) if *id == rpc);
            if self.out.iter().rev().any(failed) {
                return;
            }
        }
    }

    /// Takes the DHT's reports about fragments and notes out of this step's outputs and
    /// turns them into reports about whole messages. Runs at the end of every step.
    pub(super) fn filter_fragment_events(&mut self) {
        let ours = |o: &Output| match o {
            Output::Event(Event::Dht(DhtEvent::Direct { payload, .. })) => {
                payload.starts_with(&FRAGMENT_MAGIC) || payload.starts_with(&DONE_MAGIC)
            }
            Output::Event(Event::Dht(
                DhtEvent::Delivered { id, .. } | DhtEvent::Failed { id, .. },
            )) => *id >= INTERNAL_IDS,
            _ => false,
        };
        if !self.out.iter().any(ours) {
            return;
        }
        for out in std::mem::take(&mut self.out) {
            if !ours(&out) {
                self.out.push(out);
                continue;
            }
            let Output::Event(Event::Dht(ev)) = out else {
                continue;
            };
            match ev {
                DhtEvent::Direct {
                    from,
                    payload,
                    hops,
                    ..
                } => self.on_fragment_or_note(from, payload, hops),
                DhtEvent::Delivered { id, hops, .. } => {
                    if let Some(Some(app)) = self.direct.internal.remove(&id) {
                        if let Some(o) = self.direct.outgoing.get_mut(&app) {
                            o.hops = o.hops.max(hops);
                        }
                    }
                }
                DhtEvent::Failed { id, error } => {
                    if let Some(Some(app)) = self.direct.internal.remove(&id) {
                        if self.direct.outgoing.remove(&app).is_some() {
                            self.direct.internal.retain(|_, a| *a != Some(app));
                            self.event(Event::Dht(DhtEvent::Failed { id: app, error }));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// A routed payload in our framing: a fragment to reassemble, or a `done` note.
    fn on_fragment_or_note(&mut self, from: PeerId, payload: Vec<u8>, hops: u8) {
        if let Some(rest) = payload.strip_prefix(&DONE_MAGIC) {
            let Some(msg) = rest.try_into().ok().map(u64::from_be_bytes) else {
                return;
            };
            if self.direct.outgoing.get(&msg).is_some_and(|o| o.to == from) {
                if let Some(o) = self.direct.outgoing.remove(&msg) {
                    self.direct.internal.retain(|_, a| *a != Some(msg));
                    let hops = o.hops.max(hops);
                    self.event(Event::Dht(DhtEvent::Delivered {
                        id: msg,
                        to: from,
                        hops,
                    }));
                }
            }
            return;
        }
        let Some((msg, index, count, total, piece)) = parse_fragment(&payload) else {
            return; // malformed: dropped
        };
        let key = (from, msg);
        if !self.direct.incoming.contains_key(&key) {
            if self.direct.incoming_bytes + total > MAX_REASSEMBLY_BYTES {
                return; // no room: the sender times out
            }
            self.direct.incoming_bytes += total;
            let incoming = Incoming {
                total,
                pieces: vec![None; count],
                missing: count,
                last: self.now,
                hops,
            };
            self.direct.incoming.insert(key, incoming);
        }
        let now = self.now;
        let Some(m) = self.direct.incoming.get_mut(&key) else {
            return;
        };
        if m.total != total || m.pieces.len() != count {
            return; // contradicts the fragments before it
        }
        m.last = now;
        m.hops = m.hops.max(hops);
        if let Some(slot @ None) = m.pieces.get_mut(index) {
            *slot = Some(piece.to_vec());
            m.missing -= 1;
        }
        if m.missing > 0 {
            return;
        }
        let Some(m) = self.direct.incoming.remove(&key) else {
            return;
        };
        self.direct.incoming_bytes -= m.total;
        let mut whole = Vec::with_capacity(m.total);
        for piece in m.pieces.into_iter().flatten() {
            whole.extend_from_slice(&piece);
        }
        self.event(Event::Dht(DhtEvent::Direct {
            from,
            id: msg,
            payload: whole,
            hops: m.hops,
        }));
        let mut note = DONE_MAGIC.to_vec();
        note.extend_from_slice(&msg.to_be_bytes());
        let rpc = self.direct.internal_id(None);
        self.on_dht_command(Command::SendDirect {
            id: rpc,
            to: from,
            payload: note,
        });
    }

    /// A [`Message::Data`] piece from the peer at the other end of an open connection
    /// (the wire checked `part < parts <= MAX_DATA_PARTS` and the piece's size).
    pub(super) fn on_data(
        &mut self,
        from: PeerId,
        id: u64,
        (part, parts): (u32, u32),
        unacked: u32,
        payload: Vec<u8>,
    ) {
        let payload = if parts == 1 {
            payload
        } else {
            match self.join_piece(from, id, part, parts, payload) {
                Some(whole) => whole,
                None => return,
            }
        };
        self.event(Event::Dht(DhtEvent::Direct {
            from,
            id,
            payload,
            hops: 1,
        }));
        self.queue_ack(from, id, unacked);
    }

    /// Adds `id` to the acknowledgements waiting for `to`, which had `unacked` messages
    /// to us waiting for theirs when it sent this one: the batch is sent at once when
    /// full, else by the `AckFlush` timer when due (see the module docs).
    fn queue_ack(&mut self, to: PeerId, id: u64, unacked: u32) {
        let now = self.now;
        let batch = self.direct.acks.entry(to).or_insert_with(|| AckBatch {
            ids: Vec::new(),
            first: now,
            due: now,
            urgent: false,
        });
        batch.ids.push(id);
        if batch.ids.len() >= ACK_BATCH {
            let ids = self
                .direct
                .acks
                .remove(&to)
                .map(|b| b.ids)
                .unwrap_or_default();
            return self.send(to, &Message::DataAck { ids });
        }
        if batch.urgent {
            return;
        }
        if 2 * batch.ids.len() as u64 >= u64::from(unacked) {
            batch.urgent = true;
            batch.due = now + ACK_DELAY_MS;
        } else {
            batch.due = (now + ACK_IDLE_MS).min(batch.first + ACK_MAX_WAIT_MS);
        }
        let due = batch.due;
        if self.direct.ack_timer.is_none_or(|at| due < at) {
            self.direct.ack_timer = Some(due);
            self.set_timer(due, super::TimerKind::AckFlush);
        }
    }

    /// Whether a message to or from `peer` is in flight on our connection with it: one of
    /// ours waits for its acknowledgement, or one of theirs is half reassembled.
    pub(super) fn direct_in_flight_with(&self, peer: &PeerId) -> bool {
        self.direct.unacked.contains_key(peer) || self.direct.partial.contains_key(peer)
    }

    /// Sends the acknowledgements that are due (the `AckFlush` timer), or all of them
    /// (`all`: before leaving), and sets the timer for the rest.
    pub(super) fn flush_acks(&mut self, all: bool) {
        let now = self.now;
        self.direct.ack_timer = None;
        let due: Vec<PeerId> = self
            .direct
            .acks
            .iter()
            .filter(|(_, b)| all || b.due <= now)
            .map(|(to, _)| *to)
            .collect();
        for to in due {
            let Some(batch) = self.direct.acks.remove(&to) else {
                continue;
            };
            // A peer that went meanwhile gets nothing: its sends failed as Unreachable.
            if self.conns.get(&to) == Some(&Conn::Active) && !batch.ids.is_empty() {
                self.send(to, &Message::DataAck { ids: batch.ids });
            }
        }
        if let Some(next) = self.direct.acks.values().map(|b| b.due).min() {
            self.direct.ack_timer = Some(next);
            self.set_timer(next, super::TimerKind::AckFlush);
        }
    }

    /// Adds a piece to the message `from` is sending; the whole message once complete.
    /// Pieces of one message follow each other on the channel, so anything else (a new
    /// message before the last ended, a gap) drops the message in progress; so does the
    /// reassembly budget. The sender then times out.
    fn join_piece(
        &mut self,
        from: PeerId,
        id: u64,
        part: u32,
        parts: u32,
        piece: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let now = self.now;
        let d = &mut self.direct;
        let fits = |d: &Direct, len: usize| d.incoming_bytes + len <= MAX_REASSEMBLY_BYTES;
        if part == 0 {
            if let Some(old) = d.partial.remove(&from) {
                d.incoming_bytes -= old.data.len();
            }
            if fits(d, piece.len()) {
                d.incoming_bytes += piece.len();
                let partial = Partial {
                    id,
                    parts,
                    next: 1,
                    data: piece,
                    last: now,
                };
                d.partial.insert(from, partial);
            }
            return None;
        }
        let follows = d
            .partial
            .get(&from)
            .is_some_and(|p| p.id == id && p.parts == parts && p.next == part);
        if !follows || !fits(d, piece.len()) {
            if let Some(old) = d.partial.remove(&from) {
                d.incoming_bytes -= old.data.len();
            }
            return None;
        }
        let p = d.partial.get_mut(&from)?;
        d.incoming_bytes += piece.len();
        p.data.extend_from_slice(&piece);
        p.next += 1;
        p.last = now;
        if p.next < p.parts {
            return None;
        }
        let done = d.partial.remove(&from)?;
        d.incoming_bytes -= done.data.len();
        Some(done.data)
    }

    /// A [`Message::DataAck`]: only the peer a message went to can acknowledge it; ids
    /// it does not know (or already acknowledged) are ignored.
    pub(super) fn on_data_acks(&mut self, from: PeerId, ids: Vec<u64>) {
        for id in ids {
            if self
                .direct
                .waiting
                .get(&id)
                .is_some_and(|(to, _)| *to == from)
            {
                self.direct.settle(id);
                self.event(Event::Dht(DhtEvent::Delivered {
                    id,
                    to: from,
                    hops: 1,
                }));
            }
        }
    }

    /// Fails the sends whose deadline passed or whose connection is gone; `all` fails
    /// every one (the overlay is leaving).
    pub(super) fn expire_sends(&mut self, all: bool) {
        let now = self.now;
        let mut failed = Vec::new();
        for (&id, &(to, deadline)) in &self.direct.waiting {
            let error = if all {
                DhtError::NotJoined
            } else if self.conns.get(&to) != Some(&Conn::Active) {
                DhtError::Unreachable
            } else if deadline <= now {
                DhtError::Timeout
            } else {
                continue;
            };
            failed.push((id, error));
        }
        for (id, error) in failed {
            self.direct.settle(id);
            self.event(Event::Dht(DhtEvent::Failed { id, error }));
        }
        // Fragmented messages: no `done` note in time (or leaving).
        let expired: Vec<u64> = self
            .direct
            .outgoing
            .iter()
            .filter(|(_, o)| all || o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.direct.outgoing.remove(&id);
            self.direct.internal.retain(|_, a| *a != Some(id));
            let error = if all {
                DhtError::NotJoined
            } else {
                DhtError::Timeout
            };
            self.event(Event::Dht(DhtEvent::Failed { id, error }));
        }
        // Incomplete reassemblies gone quiet, or whose connection went.
        let conns = &self.conns;
        let d = &mut self.direct;
        let mut freed = 0;
        d.partial.retain(|from, p| {
            let keep = !all
                && p.last + REASSEMBLY_TIMEOUT_MS > now
                && conns.get(from) == Some(&Conn::Active);
            if !keep {
                freed += p.data.len();
            }
            keep
        });
        d.incoming_bytes -= freed;
        let before = d.incoming.len();
        let mut freed = 0;
        d.incoming.retain(|_, m| {
            let keep = !all && m.last + REASSEMBLY_TIMEOUT_MS > now;
            if !keep {
                freed += m.total;
            }
            keep
        });
        if d.incoming.len() != before {
            d.incoming_bytes -= freed;
        }
        if all {
            d.internal.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Identity;
    use crate::overlay::{Config, Input, Output};
    use crate::wire;

    fn node(seed: u8, mode: Mode) -> Overlay {
        let config = Config {
            mode,
            ..Config::default()
        };
        Overlay::new(Identity::from_secret_bytes([seed; 32]), config, seed as u64)
    }

    /// Two joined overlays, `a` and `b`, neighbours of each other.
    fn pair(mode: Mode) -> (Overlay, Overlay) {
        let (mut a, mut b) = (node(1, mode), node(2, mode));
        b.handle(0, Input::Join { contacts: vec![] });
        let out = a.handle(
            0,
            Input::Join {
                contacts: vec![b.peer_id()],
            },
        );
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Connect { peer, .. } if *peer == b.peer_id())));
        let out = a.handle(0, Input::ConnectionUp { peer: b.peer_id() });
        b.handle(0, Input::ConnectionUp { peer: a.peer_id() });
        deliver(&a, &mut b, out);
        assert_eq!(a.active_view(), &[b.peer_id()]);
        assert_eq!(b.active_view(), &[a.peer_id()]);
        (a, b)
    }

    /// Hands `from`'s frames for `to` to `to`; returns what `to` output.
    fn deliver(from: &Overlay, to: &mut Overlay, out: Vec<Output>) -> Vec<Output> {
        let mut result = Vec::new();
        for o in out {
            if let Output::Send { to: t, frame } = o {
                if t == to.peer_id() {
                    result.extend(to.handle(
                        0,
                        Input::Frame {
                            from: from.peer_id(),
                            bytes: frame,
                        },
                    ));
                }
            }
        }
        result
    }

    fn dht_events(out: &[Output]) -> Vec<DhtEvent> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(Event::Dht(e)) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn send(o: &mut Overlay, id: u64, to: PeerId, payload: Vec<u8>) -> Vec<Output> {
        o.handle(0, Input::Send { id, to, payload })
    }

    #[test]
    fn a_5_mib_message_to_a_neighbour_is_delivered_once_and_acknowledged() {
        let (mut a, mut b) = pair(Mode::Unstructured);
        let data: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let out = send(&mut a, 7, b.peer_id(), data.clone());
        let at_b = deliver(&a, &mut b, out);
        assert_eq!(
            dht_events(&at_b),
            vec![DhtEvent::Direct {
                from: a.peer_id(),
                id: 7,
                payload: data,
                hops: 1
            }]
        );
        // Acknowledged by b's next ack flush, ACK_DELAY_MS later.
        let flushed = b.handle(ACK_DELAY_MS, Input::Timer);
        let at_a = deliver(&b, &mut a, flushed);
        assert_eq!(
            dht_events(&at_a),
            vec![DhtEvent::Delivered {
                id: 7,
                to: b.peer_id(),
                hops: 1
            }]
        );
        assert!(a.direct.waiting.is_empty());
    }

    #[test]
    fn a_large_message_travels_in_pieces_and_a_broken_sequence_is_dropped_not_garbled() {
        let (mut a, mut b) = pair(Mode::Unstructured);
        let data = vec![3u8; 3 * MAX_DATA_PIECE + 5];
        let out = send(&mut a, 1, b.peer_id(), data.clone());
        let pieces: Vec<Vec<u8>> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send { frame, .. } => Some(frame.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(pieces.len(), 4, "four frames of at most 256 KiB");
        assert!(pieces.iter().all(|f| f.len() <= wire::MAX_DATA_FRAME_LEN));
        let feed = |b: &mut Overlay, frame: &Vec<u8>| {
            dht_events(&b.handle(
                0,
                Input::Frame {
                    from: a.peer_id(),
                    bytes: frame.clone(),
                },
            ))
        };
        // A gap (piece 2 missing): nothing is delivered, and nothing is held after.
        for i in [0, 1, 3] {
            assert!(feed(&mut b, &pieces[i]).is_empty());
        }
        assert_eq!(b.direct.incoming_bytes, 0);
        // A new message before the last ended replaces it; in order, it arrives whole.
        feed(&mut b, &pieces[0]);
        for f in &pieces {
            let events = feed(&mut b, f);
            if f == pieces.last().unwrap() {
                assert!(
                    matches!(&events[..], [DhtEvent::Direct { payload, .. }] if *payload == data)
                );
            } else {
                assert!(events.is_empty());
            }
        }
        assert_eq!(b.direct.incoming_bytes, 0);
        // A message left half-way is dropped when its connection goes.
        feed(&mut b, &pieces[0]);
        assert!(b.direct.incoming_bytes > 0);
        b.handle(0, Input::ConnectionDown { peer: a.peer_id() });
        assert_eq!(b.direct.incoming_bytes, 0);
    }

    #[test]
    fn a_message_over_16_mib_is_refused_with_too_large() {
        let (mut a, b) = pair(Mode::Hybrid);
        let out = send(&mut a, 1, b.peer_id(), vec![0; MAX_MESSAGE_LEN + 1]);
        assert!(matches!(
            dht_events(&out)[..],
            [DhtEvent::Failed {
                id: 1,
                error: DhtError::TooLarge { .. }
            }]
        ));
        assert!(!out.iter().any(|o| matches!(o, Output::Send { .. })));
    }

    #[test]
    fn in_unstructured_mode_a_non_neighbour_is_refused_with_the_mode() {
        let (mut a, _b) = pair(Mode::Unstructured);
        let stranger = Identity::from_secret_bytes([9; 32]).peer_id();
        let out = send(&mut a, 1, stranger, b"hi".to_vec());
        assert_eq!(
            dht_events(&out),
            vec![DhtEvent::Failed {
                id: 1,
                error: DhtError::Disabled(Mode::Unstructured)
            }]
        );
    }

    /// Three overlays in a chain, a — b — c: a and c share no connection.
    fn chain() -> Vec<Overlay> {
        let (mut a, mut b) = pair(Mode::Hybrid);
        let mut c = node(3, Mode::Hybrid);
        c.handle(
            0,
            Input::Join {
                contacts: vec![b.peer_id()],
            },
        );
        let out = c.handle(0, Input::ConnectionUp { peer: b.peer_id() });
        b.handle(0, Input::ConnectionUp { peer: c.peer_id() });
        deliver(&c, &mut b, out);
        assert!(b.active_view().contains(&c.peer_id()));
        assert!(!a.connections().any(|p| p == c.peer_id()));
        a.handle(0, Input::Timer);
        vec![a, b, c]
    }

    /// Carries frames between the overlays until none is left; returns each one's events.
    fn pump(nodes: &mut [Overlay], first: (usize, Vec<Output>)) -> Vec<Vec<DhtEvent>> {
        let mut events = vec![Vec::new(); nodes.len()];
        let mut queue = std::collections::VecDeque::from([first]);
        while let Some((at, outs)) = queue.pop_front() {
            events[at].extend(dht_events(&outs));
            let from = nodes[at].peer_id();
            for o in outs {
                if let Output::Send { to, frame } = o {
                    if let Some(j) = nodes.iter().position(|n| n.peer_id() == to) {
                        let out = nodes[j].handle(0, Input::Frame { from, bytes: frame });
                        queue.push_back((j, out));
                    }
                }
            }
        }
        events
    }

    #[test]
    fn a_message_too_large_for_one_routed_frame_reaches_a_non_neighbour_in_fragments() {
        let mut nodes = chain();
        let (a, c) = (nodes[0].peer_id(), nodes[2].peer_id());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let out = send(&mut nodes[0], 5, c, data.clone());
        let events = pump(&mut nodes, (0, out));
        let got: Vec<&DhtEvent> = events[2]
            .iter()
            .filter(|e| matches!(e, DhtEvent::Direct { .. }))
            .collect();
        assert!(
            matches!(got[..], [DhtEvent::Direct { from, id: 5, payload, hops }]
                if *from == a && *payload == data && *hops >= 2),
            "c gets the whole message once: {:?}",
            got.len()
        );
        assert!(
            matches!(events[0][..], [DhtEvent::Delivered { id: 5, to, hops }] if to == c && hops >= 2),
            "a hears only that its message was delivered: {:?}",
            events[0]
        );
        assert!(nodes[0].direct.outgoing.is_empty() && nodes[0].direct.internal.is_empty());
        assert_eq!(nodes[2].direct.incoming_bytes, 0);
        // A small message still travels as one routed frame.
        let out = send(&mut nodes[0], 6, c, b"hi".to_vec());
        let events = pump(&mut nodes, (0, out));
        assert!(events[2].iter().any(
            |e| matches!(e, DhtEvent::Direct { payload, hops, .. } if payload == b"hi" && *hops >= 2)
        ));
        assert!(events[0]
            .iter()
            .any(|e| matches!(e, DhtEvent::Delivered { id: 6, .. })));
    }

    /// The routed DHT frames in `out`, with their next hop.
    fn routed(out: &[Output]) -> Vec<(PeerId, dht::DhtFrame)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, frame } => match wire::decode(frame) {
                    Ok(Message::Dht(f)) => Some((*to, *f)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn frame_bytes(f: &dht::DhtFrame) -> Vec<u8> {
        wire::encode(&Message::Dht(Box::new(f.clone()))).unwrap()
    }

    /// Hostile relay (issue 20): in a — b — c, b carries a's routed message to c. It sees
    /// only ciphertext, cannot make c believe a said something else, and cannot replay a's
    /// frame once c's duplicate memory has expired. Before sealing, b read the payload in
    /// clear and c reported b's forgery, and the replay, as messages from a.
    #[test]
    fn a_relay_sees_ciphertext_and_cannot_forge_alter_or_replay_a_routed_message() {
        let mut nodes = chain();
        let (a, b, c) = (nodes[0].peer_id(), nodes[1].peer_id(), nodes[2].peer_id());
        let secret = b"meet at the old mill at nine".to_vec();
        let out = send(&mut nodes[0], 1, c, secret.clone());
        let to_b = routed(&out);
        assert_eq!(to_b.len(), 1);
        let dht::DhtBody::Direct { payload, .. } = &to_b[0].1.body else {
            panic!("{to_b:?}")
        };
        assert!(
            !payload
                .windows(8)
                .any(|w| secret.windows(8).any(|s| s == w)),
            "no 8 bytes of the message show on the wire"
        );
        let out_b = nodes[1].handle(
            0,
            Input::Frame {
                from: a,
                bytes: frame_bytes(&to_b[0].1),
            },
        );
        let to_c = routed(&out_b);
        assert_eq!(to_c[0].0, c);
        let relayed = to_c[0].1.clone();
        let out_c = nodes[2].handle(
            0,
            Input::Frame {
                from: b,
                bytes: frame_bytes(&relayed),
            },
        );
        assert!(dht_events(&out_c).iter().any(
            |e| matches!(e, DhtEvent::Direct { from, payload, .. } if *from == a && *payload == secret)
        ));

        // b forges a message "from a", and alters a's: neither is reported.
        let mut forged = relayed.clone();
        forged.body = dht::DhtBody::Direct {
            rpc: 4242,
            payload: b"send the money to b".to_vec(),
        };
        let mut altered = relayed.clone();
        if let dht::DhtBody::Direct { payload, .. } = &mut altered.body {
            let last = payload.len() - 1;
            payload[last - 20] ^= 1;
        }
        for f in [forged, altered] {
            let out = nodes[2].handle(
                1,
                Input::Frame {
                    from: b,
                    bytes: frame_bytes(&f),
                },
            );
            assert!(
                !dht_events(&out)
                    .iter()
                    .any(|e| matches!(e, DhtEvent::Direct { .. })),
                "{:?}",
                dht_events(&out)
            );
            assert!(routed(&out).is_empty(), "not acknowledged either");
        }
        assert_eq!(nodes[2].dht_stats().forged, 2);

        // b replays a's frame after c's duplicate memory (120 s) expired.
        // (b keeps talking to c meanwhile, so c keeps the connection.)
        let ping = wire::encode(&Message::Ping { nonce: 1 }).unwrap();
        for t in (0..=130_000).step_by(1_000) {
            nodes[2].handle(
                t,
                Input::Frame {
                    from: b,
                    bytes: ping.clone(),
                },
            );
            nodes[2].handle(t, Input::Timer);
        }
        assert!(nodes[2].connections().any(|p| p == b));
        let out = nodes[2].handle(
            130_000,
            Input::Frame {
                from: b,
                bytes: frame_bytes(&relayed),
            },
        );
        assert!(
            !dht_events(&out)
                .iter()
                .any(|e| matches!(e, DhtEvent::Direct { .. })),
            "a replay is not delivered again"
        );
        assert_eq!(nodes[2].dht_stats().replayed, 1);
    }

    /// Hostile relay (issue 20): b drops a's routed message and acknowledges it "for c";
    /// or answers a's request "as c". Before, a reported the message delivered and took
    /// b's response as c's.
    #[test]
    fn a_relay_cannot_acknowledge_or_answer_for_the_target() {
        let mut nodes = chain();
        let (b, c) = (nodes[1].peer_id(), nodes[2].peer_id());
        let out = send(&mut nodes[0], 1, c, b"hello".to_vec());
        let frame = routed(&out).remove(0).1;
        let rpc = match frame.body {
            dht::DhtBody::Direct { rpc, .. } => rpc,
            _ => unreachable!(),
        };
        let me = nodes[0].peer_id();
        let fake_ack = dht::DhtFrame {
            target: dht::Key::of_peer(&me),
            exact: true,
            path: vec![c, b],
            route: vec![],
            detours: 0,
            body: dht::DhtBody::Ack {
                rpc,
                hops: 2,
                seal: vec![0; crate::overlay::seal::OVERHEAD],
            },
        };
        let out = nodes[0].handle(
            1,
            Input::Frame {
                from: b,
                bytes: frame_bytes(&fake_ack),
            },
        );
        assert!(
            !dht_events(&out)
                .iter()
                .any(|e| matches!(e, DhtEvent::Delivered { .. })),
            "{:?}",
            dht_events(&out)
        );
        let request = Command::Request {
            id: 2,
            to: c,
            payload: b"balance?".to_vec(),
        };
        let request_out = nodes[0].handle(2, Input::Dht(request));
        let rpc = match routed(&request_out).remove(0).1.body {
            dht::DhtBody::Request { rpc, .. } => rpc,
            other => panic!("{other:?}"),
        };
        let fake_response = dht::DhtFrame {
            body: dht::DhtBody::Response {
                rpc,
                payload: b"a million".to_vec(),
            },
            ..fake_ack
        };
        let out = nodes[0].handle(
            3,
            Input::Frame {
                from: b,
                bytes: frame_bytes(&fake_response),
            },
        );
        assert!(
            !dht_events(&out)
                .iter()
                .any(|e| matches!(e, DhtEvent::Response { .. })),
            "{:?}",
            dht_events(&out)
        );
        assert_eq!(nodes[0].dht_stats().forged, 2);
        // The real request and response still get through.
        let events = pump(&mut nodes, (0, request_out));
        assert!(events[2]
            .iter()
            .any(|e| matches!(e, DhtEvent::Request { id, .. } if *id == rpc)));
        let a = nodes[0].peer_id();
        let respond = Command::Respond {
            to: a,
            id: rpc,
            payload: b"42".to_vec(),
        };
        let out = nodes[2].handle(4, Input::Dht(respond));
        let events = pump(&mut nodes, (2, out));
        assert!(events[0].iter().any(
            |e| matches!(e, DhtEvent::Response { id: 2, from, payload } if *from == c && payload == b"42")
        ));
    }

    #[test]
    fn a_large_message_with_no_route_fails_once_without_sending_every_fragment() {
        let (mut a, b) = pair(Mode::Hybrid);
        // Drop the only neighbour: nothing can route.
        a.handle(0, Input::ConnectionDown { peer: b.peer_id() });
        let stranger = Identity::from_secret_bytes([9; 32]).peer_id();
        let out = send(&mut a, 4, stranger, vec![1; 10 * FRAGMENT_LEN]);
        let events = dht_events(&out);
        assert_eq!(
            events,
            vec![DhtEvent::Failed {
                id: 4,
                error: DhtError::Unreachable
            }],
            "one failure for the message, none for its fragments"
        );
        assert!(a.direct.outgoing.is_empty() && a.direct.internal.is_empty());
    }

    fn fragment(msg: u64, index: usize, count: usize, total: usize, piece: &[u8]) -> Vec<u8> {
        let mut f = FRAGMENT_MAGIC.to_vec();
        f.extend_from_slice(&msg.to_be_bytes());
        for n in [index, count, total] {
            f.extend_from_slice(&(n as u32).to_be_bytes());
        }
        f.extend_from_slice(piece);
        f
    }

    #[test]
    fn malformed_fragments_are_dropped_and_reassembly_memory_is_bounded() {
        let (mut a, _b) = pair(Mode::Hybrid);
        let from = Identity::from_secret_bytes([9; 32]).peer_id();
        // Lies about lengths, indices and counts: dropped, nothing reserved.
        for bad in [
            FRAGMENT_MAGIC.to_vec(),
            fragment(1, 0, 1, 10, &[0; 9]),
            fragment(1, 1, 1, 10, &[0; 10]),
            fragment(1, 0, 2, 10, &[0; 10]),
            fragment(1, 0, 1, MAX_MESSAGE_LEN + 1, &[]),
            fragment(1, 0, u32::MAX as usize, u32::MAX as usize, &[]),
        ] {
            a.on_fragment_or_note(from, bad, 2);
        }
        assert!(a.direct.incoming.is_empty());
        assert_eq!(a.direct.incoming_bytes, 0);
        // Two 16 MiB messages fill the budget; a third is refused until one expires.
        let total = MAX_MESSAGE_LEN;
        let count = total.div_ceil(FRAGMENT_LEN);
        for msg in 0..3 {
            a.on_fragment_or_note(from, fragment(msg, 0, count, total, &[7; FRAGMENT_LEN]), 2);
        }
        assert_eq!(a.direct.incoming.len(), 2);
        assert!(a.direct.incoming_bytes <= MAX_REASSEMBLY_BYTES);
        a.now += REASSEMBLY_TIMEOUT_MS;
        a.expire_sends(false);
        assert!(a.direct.incoming.is_empty());
        assert_eq!(a.direct.incoming_bytes, 0);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_fragment_bytes_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let (mut a, _b) = pair(Mode::Hybrid);
            let from = Identity::from_secret_bytes([9; 32]).peer_id();
            let mut f = FRAGMENT_MAGIC.to_vec();
            f.extend_from_slice(&tail);
            a.on_fragment_or_note(from, f, 1);
            let mut d = DONE_MAGIC.to_vec();
            d.extend_from_slice(&tail);
            a.on_fragment_or_note(from, d, 1);
        }
    }

    #[test]
    fn a_send_fails_when_the_connection_closes_or_no_ack_comes_in_time() {
        let (mut a, b) = pair(Mode::Unstructured);
        send(&mut a, 1, b.peer_id(), b"lost".to_vec());
        let out = a.handle(10, Input::ConnectionDown { peer: b.peer_id() });
        assert!(dht_events(&out).contains(&DhtEvent::Failed {
            id: 1,
            error: DhtError::Unreachable
        }));

        let (mut a, b) = pair(Mode::Unstructured);
        send(&mut a, 2, b.peer_id(), b"unanswered".to_vec());
        // Keep the neighbour alive for the failure detector while time passes.
        let mut events = Vec::new();
        for t in (1_000..=ACK_TIMEOUT_MS + 1_000).step_by(1_000) {
            a.handle(
                t,
                Input::Frame {
                    from: b.peer_id(),
                    bytes: wire::encode(&Message::Pong { nonce: 0 }).unwrap(),
                },
            );
            events.extend(dht_events(&a.handle(t, Input::Timer)));
        }
        assert_eq!(
            events,
            vec![DhtEvent::Failed {
                id: 2,
                error: DhtError::Timeout
            }]
        );
    }

    #[test]
    fn only_the_recipient_can_acknowledge_and_sending_to_oneself_or_before_joining_fails() {
        let (mut a, b) = pair(Mode::Unstructured);
        send(&mut a, 1, b.peer_id(), b"x".to_vec());
        // An ack for an unknown id, or the same id twice, changes nothing.
        let ack = |id| wire::encode(&Message::DataAck { ids: vec![id] }).unwrap();
        let out = a.handle(
            0,
            Input::Frame {
                from: b.peer_id(),
                bytes: ack(99),
            },
        );
        assert!(dht_events(&out).is_empty());
        let out = a.handle(
            0,
            Input::Frame {
                from: b.peer_id(),
                bytes: ack(1),
            },
        );
        assert_eq!(dht_events(&out).len(), 1);
        let out = a.handle(
            0,
            Input::Frame {
                from: b.peer_id(),
                bytes: ack(1),
            },
        );
        assert!(dht_events(&out).is_empty());

        let me = a.peer_id();
        let out = send(&mut a, 2, me, b"x".to_vec());
        assert_eq!(
            dht_events(&out),
            vec![DhtEvent::Failed {
                id: 2,
                error: DhtError::SelfTarget
            }]
        );
        let mut fresh = node(3, Mode::Hybrid);
        let out = send(&mut fresh, 3, b.peer_id(), b"x".to_vec());
        assert_eq!(
            dht_events(&out),
            vec![DhtEvent::Failed {
                id: 3,
                error: DhtError::NotJoined
            }]
        );
    }

    /// The frames in `out` for `to`, decoded.
    fn frames_to(out: &[Output], to: PeerId) -> Vec<Message> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to: t, frame } if *t == to => wire::decode(frame).ok(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stream_of_small_messages_costs_one_acknowledgement_frame_and_each_send_resolves() {
        let (mut a, mut b) = pair(Mode::Unstructured);
        let mut at_b = Vec::new();
        for id in 1..=10 {
            let out = send(&mut a, id, b.peer_id(), vec![id as u8; 1024]);
            at_b.extend(deliver(&a, &mut b, out));
        }
        let received: Vec<u64> = dht_events(&at_b)
            .iter()
            .filter_map(|e| match e {
                DhtEvent::Direct { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(
            received,
            (1..=10).collect::<Vec<_>>(),
            "each reported at once"
        );
        assert!(frames_to(&at_b, a.peer_id()).is_empty(), "no ack yet");
        // The timer for the batch is at most ACK_DELAY_MS away.
        assert!(at_b
            .iter()
            .any(|o| matches!(o, Output::SetTimer { at } if *at <= ACK_DELAY_MS)));
        let flushed = b.handle(ACK_DELAY_MS, Input::Timer);
        assert_eq!(
            frames_to(&flushed, a.peer_id()),
            vec![Message::DataAck {
                ids: (1..=10).collect()
            }],
            "one frame acknowledges all ten"
        );
        let at_a = deliver(&b, &mut a, flushed);
        let delivered: Vec<u64> = dht_events(&at_a)
            .iter()
            .filter_map(|e| match e {
                DhtEvent::Delivered { id, hops: 1, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(delivered, (1..=10).collect::<Vec<_>>());
        assert!(a.direct.waiting.is_empty());
        // Nothing is left to flush: the next timer sends no ack.
        assert!(frames_to(&b.handle(2 * ACK_DELAY_MS, Input::Timer), a.peer_id()).is_empty());
    }

    #[test]
    fn a_full_batch_of_acknowledgements_goes_at_once_without_waiting_for_the_timer() {
        let (mut a, mut b) = pair(Mode::Unstructured);
        let mut acks = Vec::new();
        for id in 0..ACK_BATCH as u64 + 1 {
            let out = send(&mut a, id, b.peer_id(), b"x".to_vec());
            acks.extend(frames_to(&deliver(&a, &mut b, out), a.peer_id()));
        }
        assert_eq!(
            acks,
            vec![Message::DataAck {
                ids: (0..ACK_BATCH as u64).collect()
            }]
        );
        // The one after the batch left with 128 others unacknowledged, so more were on
        // their way: it waits for them, and goes ACK_IDLE_MS after it came.
        assert!(frames_to(&b.handle(ACK_DELAY_MS, Input::Timer), a.peer_id()).is_empty());
        let flushed = b.handle(ACK_IDLE_MS, Input::Timer);
        assert_eq!(
            frames_to(&flushed, a.peer_id()),
            vec![Message::DataAck {
                ids: vec![ACK_BATCH as u64]
            }]
        );
    }

    /// What [`stream`] saw.
    #[derive(Debug)]
    struct Stream {
        /// DataAck frames b sent.
        ack_frames: usize,
        /// Longest time from a message's arrival at b to its sender learning it arrived.
        slowest_ack: u64,
        /// When the last send resolved.
        end: u64,
    }

    /// `count` messages of 60 KiB from a to b, a keeping up to `window` of them in flight
    /// (sending the next as soon as one resolves, as an app awaiting its sends would) and
    /// b taking one every `gap` ms (a browser hands each its own turn); acknowledgements
    /// reach a the same ms. Timers run every ms.
    fn stream(window: usize, count: u64, gap: u64) -> Stream {
        let (mut a, mut b) = pair(Mode::Unstructured);
        let payload = vec![7u8; 60 * 1024];
        let mut wire = std::collections::VecDeque::new();
        let mut arrived = std::collections::BTreeMap::new();
        let (mut next, mut in_flight, mut resolved) = (0, 0, 0);
        let mut seen = Stream {
            ack_frames: 0,
            slowest_ack: 0,
            end: 0,
        };
        let mut next_arrival = 0;
        for t in 0..10_000 {
            while in_flight < window && next < count {
                let to = b.peer_id();
                let out = a.handle(
                    t,
                    Input::Send {
                        id: next,
                        to,
                        payload: payload.clone(),
                    },
                );
                for o in out {
                    if let Output::Send { frame, .. } = o {
                        wire.push_back((next, frame));
                    }
                }
                next += 1;
                in_flight += 1;
            }
            let mut at_b = b.handle(t, Input::Timer);
            if t >= next_arrival {
                if let Some((id, bytes)) = wire.pop_front() {
                    arrived.insert(id, t);
                    let from = a.peer_id();
                    at_b.extend(b.handle(t, Input::Frame { from, bytes }));
                    next_arrival = t + gap;
                }
            }
            for o in at_b {
                let Output::Send { frame, .. } = o else {
                    continue;
                };
                if let Ok(Message::DataAck { .. }) = wire::decode(&frame) {
                    seen.ack_frames += 1;
                }
                let from = b.peer_id();
                for e in dht_events(&a.handle(t, Input::Frame { from, bytes: frame })) {
                    let DhtEvent::Delivered { id, .. } = e else {
                        panic!("{e:?}")
                    };
                    in_flight -= 1;
                    resolved += 1;
                    seen.slowest_ack = seen.slowest_ack.max(t - arrived[&id]);
                    seen.end = t;
                }
            }
            if resolved == count {
                return seen;
            }
        }
        panic!("{resolved} of {count} sends resolved: {seen:?}");
    }

    #[test]
    fn a_bulk_stream_with_a_window_in_flight_costs_an_acknowledgement_per_half_window() {
        // 64 messages 4 ms apart, 16 in flight: one DataAck per message before; now one
        // per 8 once the window is full (the first messages left with fewer in flight, so
        // they are acknowledged sooner: a few more).
        let seen = stream(16, 64, 4);
        assert!(seen.ack_frames <= 64 / 8 + 4, "{seen:?}");
        // The sender never waited with a full window: the stream ends with its last
        // arrival, but for the tail's idle wait.
        assert!(seen.end <= 63 * 4 + ACK_IDLE_MS + ACK_DELAY_MS, "{seen:?}");
        assert!(seen.slowest_ack <= ACK_MAX_WAIT_MS, "{seen:?}");
    }

    #[test]
    fn a_sender_that_awaits_each_send_or_keeps_two_in_flight_is_acknowledged_at_once() {
        for window in [1, 2] {
            let seen = stream(window, 10, 4);
            assert_eq!(seen.slowest_ack, ACK_DELAY_MS, "window {window}: {seen:?}");
        }
    }

    #[test]
    fn an_unpaced_burst_is_acknowledged_within_ack_idle_ms_of_its_last_arrival() {
        // Everything sent at once: the sender's count says more are coming, so b's
        // batches wait for them, and the tail goes ACK_IDLE_MS after the last.
        let seen = stream(100, 40, 4);
        assert!(seen.end <= 39 * 4 + ACK_IDLE_MS, "{seen:?}");
        assert!(seen.ack_frames < 40 / 4, "{seen:?}");
    }

    #[test]
    fn losing_the_connection_mid_batch_fails_the_unacknowledged_sends_as_unreachable() {
        let (mut a, mut b) = pair(Mode::Unstructured);
        for id in 1..=3 {
            let out = send(&mut a, id, b.peer_id(), b"acked".to_vec());
            deliver(&a, &mut b, out);
        }
        let flushed = b.handle(ACK_DELAY_MS, Input::Timer);
        deliver(&b, &mut a, flushed);
        assert!(
            a.direct.waiting.is_empty(),
            "the first batch was acknowledged"
        );
        for id in 4..=6 {
            let out = send(&mut a, id, b.peer_id(), b"in the batch".to_vec());
            deliver(&a, &mut b, out);
        }
        // The connection goes before b's batch is sent.
        let out = a.handle(ACK_DELAY_MS, Input::ConnectionDown { peer: b.peer_id() });
        let mut failed: Vec<u64> = dht_events(&out)
            .iter()
            .filter_map(|e| match e {
                DhtEvent::Failed {
                    id,
                    error: DhtError::Unreachable,
                } => Some(*id),
                _ => None,
            })
            .collect();
        failed.sort();
        assert_eq!(failed, vec![4, 5, 6]);
        // b, seeing the connection go too, sends its batch nowhere.
        b.handle(ACK_DELAY_MS, Input::ConnectionDown { peer: a.peer_id() });
        let out = b.handle(2 * ACK_DELAY_MS, Input::Timer);
        assert!(frames_to(&out, a.peer_id()).is_empty());
        assert!(b.direct.acks.is_empty());
    }

    #[test]
    fn leaving_acknowledges_what_was_received_first() {
        let (mut a, mut b) = pair(Mode::Unstructured);
        let out = send(&mut a, 1, b.peer_id(), b"x".to_vec());
        deliver(&a, &mut b, out);
        let out = b.handle(0, Input::Leave);
        let frames = frames_to(&out, a.peer_id());
        assert_eq!(frames.first(), Some(&Message::DataAck { ids: vec![1] }));
    }

    #[test]
    fn leaving_fails_the_sends_in_flight() {
        let (mut a, b) = pair(Mode::Unstructured);
        send(&mut a, 1, b.peer_id(), b"x".to_vec());
        let out = a.handle(0, Input::Leave);
        assert!(dht_events(&out).contains(&DhtEvent::Failed {
            id: 1,
            error: DhtError::NotJoined
        }));
    }
}
