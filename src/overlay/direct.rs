//! Direct messages from the application to one peer ([`Input::Send`](super::Input::Send)):
//! the overlay's `send(peer, bytes)`, acknowledged by the receiver.
//!
//! Each message takes one of two paths, chosen when it is sent:
//! - **Over an open connection** — to an active-view neighbour or a DHT link — it goes as
//!   one [`Message::Data`] frame of up to [`MAX_MESSAGE_LEN`] (16 MiB; the transport cuts
//!   it into 16 KiB chunks and applies backpressure). It is not signed: the data channel
//!   is DTLS-authenticated end to end and the fingerprint was checked through the signed
//!   signaling envelopes, so the receiver knows who sent it. That makes it the fast path:
//!   no per-message Ed25519 signature, which is what bounds the broadcast rate. The
//!   receiver reports it and answers [`Message::DataAck`].
//! - **Otherwise** it is routed through the DHT ([`dht::Command::SendDirect`]), hop by
//!   hop over other peers' open links, which needs structured or hybrid mode and carries
//!   at most [`dht::MAX_DIRECT_PAYLOAD`] bytes (a routed frame must fit every relay's
//!   64 KiB frame limit). Larger messages to a peer with no open connection are refused
//!   with [`DhtError::TooLarge`] rather than fragmented: see `docs/ARCHITECTURE.md`.
//!
//! Both paths report alike, so a driver handles one set of events: the receiver gets
//! [`DhtEvent::Direct`], the sender [`DhtEvent::Delivered`] or [`DhtEvent::Failed`].
//!
//! Bounds: a message on the direct path is not kept after it is handed to the transport
//! (the channel is reliable and ordered, so there is nothing to retry); only its id, peer
//! and deadline wait for the acknowledgement. If the connection goes before the
//! acknowledgement comes, the send fails with [`DhtError::Unreachable`] — as with any
//! acknowledged protocol, a failure does not prove the message was not delivered.

use super::dht::{self, Command, DhtError, DhtEvent, Mode};
use super::{Conn, Event, Overlay};
use crate::id::PeerId;
use crate::wire::{Message, MAX_MESSAGE_LEN};

/// Least time a direct-path message waits for its acknowledgement, in ms.
pub const ACK_TIMEOUT_MS: u64 = 10_000;
/// Extra waiting time per byte, as the slowest throughput assumed: 256 KB/s (a 5 MiB
/// message may take ~20 s more).
const ASSUMED_BYTES_PER_MS: u64 = 256;

/// Sends waiting for their acknowledgement on the direct path.
#[derive(Debug, Clone, Default)]
pub(super) struct Direct {
    /// By the application's id: the recipient and the deadline.
    waiting: crate::collections::BTreeMap<u64, (PeerId, u64)>,
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
        } else if payload.len() > dht::MAX_DIRECT_PAYLOAD {
            Some(DhtError::TooLarge {
                what: "message to a peer without an open connection",
                len: payload.len(),
                max: dht::MAX_DIRECT_PAYLOAD,
            })
        } else {
            return self.on_dht_command(Command::SendDirect { id, to, payload });
        };
        if let Some(error) = refused {
            return self.event(Event::Dht(DhtEvent::Failed { id, error }));
        }
        let wait = ACK_TIMEOUT_MS + payload.len() as u64 / ASSUMED_BYTES_PER_MS;
        self.direct.waiting.insert(id, (to, self.now + wait));
        self.send(to, &Message::Data { id, payload });
    }

    /// A [`Message::Data`] from the peer at the other end of an open connection.
    pub(super) fn on_data(&mut self, from: PeerId, id: u64, payload: Vec<u8>) {
        self.event(Event::Dht(DhtEvent::Direct {
            from,
            id,
            payload,
            hops: 1,
        }));
        self.send(from, &Message::DataAck { id });
    }

    /// A [`Message::DataAck`]: only the peer a message went to can acknowledge it.
    pub(super) fn on_data_ack(&mut self, from: PeerId, id: u64) {
        if self
            .direct
            .waiting
            .get(&id)
            .is_some_and(|(to, _)| *to == from)
        {
            self.direct.waiting.remove(&id);
            self.event(Event::Dht(DhtEvent::Delivered {
                id,
                to: from,
                hops: 1,
            }));
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
            self.direct.waiting.remove(&id);
            self.event(Event::Dht(DhtEvent::Failed { id, error }));
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
        let at_a = deliver(&b, &mut a, at_b);
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

    #[test]
    fn a_large_message_to_a_non_neighbour_is_refused_and_a_small_one_is_routed() {
        let (mut a, _b) = pair(Mode::Hybrid);
        let stranger = Identity::from_secret_bytes([9; 32]).peer_id();
        let out = send(&mut a, 1, stranger, vec![0; dht::MAX_DIRECT_PAYLOAD + 1]);
        assert!(matches!(
            dht_events(&out)[..],
            [DhtEvent::Failed {
                id: 1,
                error: DhtError::TooLarge { max, .. }
            }] if max == dht::MAX_DIRECT_PAYLOAD
        ));
        // A small one leaves as a routed DHT frame through the only open link.
        let out = send(&mut a, 2, stranger, b"hi".to_vec());
        let frames: Vec<Message> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send { frame, .. } => wire::decode(frame).ok(),
                _ => None,
            })
            .collect();
        assert!(matches!(frames[..], [Message::Dht(_)]), "{frames:?}");
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
        let ack = |id| wire::encode(&Message::DataAck { id }).unwrap();
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
