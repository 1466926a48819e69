//! Plumtree broadcast: a spanning tree for the payloads, lazy announcements for the rest.
//!
//! [Plumtree](https://asc.di.fct.unl.pt/~jleitao/pdf/srds07-leitao.pdf) (Leitão, Pereira,
//! Rodrigues, SRDS 2007) runs over HyParView's active view. Flooding every message on
//! every link reaches everyone but sends each payload about `degree - 1` times per peer.
//! Plumtree splits the links of a peer into **eager** ones, where full messages are
//! pushed, and **lazy** ones, where only an `IHAVE(id)` is sent:
//!
//! - all links start eager, so the first broadcast floods;
//! - a peer that receives a payload it already has marks that link lazy and sends PRUNE,
//!   so the eager links quickly form a spanning tree and the payload crosses each peer
//!   once (relative message redundancy near 0);
//! - a peer that hears `IHAVE(id)` for a message it lacks waits [`graft_timeout_ms`]
//!   for the tree to deliver it, then sends GRAFT to the announcer, which both fetches
//!   the message and makes the link eager again: the tree heals itself after failures
//!   using the lazy links as backups;
//! - the *optimisation* step: if an IHAVE arrives for a message received over a path
//!   `optimization_threshold` hops longer, the lazy link replaces the eager one, which
//!   keeps the tree shallow (low last-delivery hop).
//!
//! Every broadcast is signed by its origin over its sequence number and payload
//! ([`BROADCAST_CONTEXT`]) and checked before it is delivered or forwarded, so a relay
//! can neither forge nor alter one; a neighbour that relays a bad one is reported and
//! disconnected (an honest relay never forwards what it has not verified). Only the first
//! copy of a message is verified: duplicates are recognised by id first.
//!
//! Two small additions: a new neighbour is sent `IHAVE` for the messages of the last
//! [`ihave_on_connect_ms`], so a peer that was cut off catches up once repaired; and the
//! message cache and the de-duplication set expire by age.
//!
//! [`graft_timeout_ms`]: super::Config::graft_timeout_ms
//! [`ihave_on_connect_ms`]: super::Config::ihave_on_connect_ms

use std::collections::{HashMap, VecDeque};

use super::{Config, Event, Misbehaviour, Overlay, TimerKind};
use crate::id::PeerId;
use crate::wire::{self, Gossip, Message, MsgId, MAX_IHAVE};

/// Signature context of a broadcast.
pub const BROADCAST_CONTEXT: &[u8] = b"rhizome/broadcast/v1";

/// Most message ids announced to a new neighbour.
const IHAVE_ON_CONNECT_MAX: usize = 64;

/// The bytes an origin signs for a broadcast.
pub fn signed_bytes(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + payload.len());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

#[derive(Debug, Clone)]
struct Seen {
    at: u64,
    /// Hops from the origin on the path it came by.
    round: u16,
    /// The neighbour it came from (`None` for our own).
    parent: Option<PeerId>,
    /// The message, while cached for GRAFTs.
    gossip: Option<Gossip>,
}

/// Plumtree state.
#[derive(Debug, Clone)]
pub(super) struct Plumtree {
    pub(super) eager: Vec<PeerId>,
    pub(super) lazy: Vec<PeerId>,
    next_seq: u64,
    seen: HashMap<MsgId, Seen>,
    /// Ids in arrival order, for expiry.
    order: VecDeque<(u64, MsgId)>,
    /// Ids whose payload is still cached, in arrival order.
    cached: VecDeque<(u64, MsgId)>,
    /// Announced but missing messages: who announced them, at which round.
    missing: HashMap<MsgId, VecDeque<(PeerId, u16)>>,
}

impl Plumtree {
    pub(super) fn new(first_seq: u64) -> Self {
        Plumtree {
            eager: Vec::new(),
            lazy: Vec::new(),
            next_seq: first_seq,
            seen: HashMap::new(),
            order: VecDeque::new(),
            cached: VecDeque::new(),
            missing: HashMap::new(),
        }
    }

    pub(super) fn clear_links(&mut self) {
        self.eager.clear();
        self.lazy.clear();
        self.missing.clear();
    }

    fn make_eager(&mut self, peer: PeerId) {
        self.lazy.retain(|p| *p != peer);
        if !self.eager.contains(&peer) {
            self.eager.push(peer);
        }
    }

    fn make_lazy(&mut self, peer: PeerId) {
        self.eager.retain(|p| *p != peer);
        if !self.lazy.contains(&peer) {
            self.lazy.push(peer);
        }
    }

    fn remember(&mut self, id: MsgId, seen: Seen) {
        self.order.push_back((seen.at, id));
        self.cached.push_back((seen.at, id));
        self.seen.insert(id, seen);
    }

    /// Forgets expired ids and drops expired payloads.
    pub(super) fn gc(&mut self, now: u64, config: &Config) {
        while let Some(&(at, id)) = self.cached.front() {
            if now < at + config.message_cache_ms {
                break;
            }
            self.cached.pop_front();
            if let Some(s) = self.seen.get_mut(&id) {
                s.gossip = None;
            }
        }
        while let Some(&(at, id)) = self.order.front() {
            if now < at + config.seen_ttl_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
    }
}

impl Overlay {
    /// Signs and sends a new broadcast from us.
    pub(super) fn broadcast(&mut self, payload: Vec<u8>) {
        let seq = self.plumtree.next_seq;
        self.plumtree.next_seq = seq.wrapping_add(1);
        let id = MsgId {
            origin: self.me,
            seq,
        };
        let sig = self
            .identity
            .sign(BROADCAST_CONTEXT, &signed_bytes(seq, &payload));
        let gossip = Gossip {
            id,
            round: 0,
            payload,
            sig,
        };
        self.forward(&gossip, None);
        self.plumtree.remember(
            id,
            Seen {
                at: self.now,
                round: 0,
                parent: None,
                gossip: Some(gossip),
            },
        );
        self.event(Event::BroadcastSent(id));
    }

    /// Eager-pushes `gossip` (one hop further) and lazily announces it, skipping `except`.
    fn forward(&mut self, gossip: &Gossip, except: Option<PeerId>) {
        let round = gossip.round.saturating_add(1);
        let eager: Vec<PeerId> = self
            .plumtree
            .eager
            .iter()
            .copied()
            .filter(|p| Some(*p) != except)
            .collect();
        if !eager.is_empty() {
            let msg = Message::Gossip(Gossip {
                round,
                ..gossip.clone()
            });
            if let Ok(frame) = wire::encode(&msg) {
                for p in eager {
                    self.send_frame(p, frame.clone());
                }
            }
        }
        let lazy: Vec<PeerId> = self
            .plumtree
            .lazy
            .iter()
            .copied()
            .filter(|p| Some(*p) != except)
            .collect();
        if !lazy.is_empty() {
            if let Ok(frame) = wire::encode(&Message::IHave(vec![(gossip.id, gossip.round)])) {
                for p in lazy {
                    self.send_frame(p, frame.clone());
                }
            }
        }
    }

    pub(super) fn on_gossip(&mut self, from: PeerId, gossip: Gossip) {
        let id = gossip.id;
        if self.plumtree.seen.contains_key(&id) {
            self.stats.duplicates += 1;
            if self.plumtree.eager.contains(&from) {
                self.plumtree.make_lazy(from);
                self.send(from, &Message::Prune);
            }
            return;
        }
        if id.origin == self.me {
            return; // Our own message, forgotten already: do not deliver it to ourselves.
        }
        let signed = signed_bytes(id.seq, &gossip.payload);
        if id
            .origin
            .verify(BROADCAST_CONTEXT, &signed, &gossip.sig)
            .is_err()
        {
            return self.punish(from, Misbehaviour::ForgedBroadcast(id.origin));
        }
        // Only active-view links form the tree; a DHT link may carry gossip but never
        // becomes a tree edge (eager and lazy peers stay a subset of the active view).
        if self.membership.is_active(&from) {
            self.plumtree.make_eager(from);
        }
        // An IHAVE may have arrived before the payload: the tree delivered in time.
        self.plumtree.missing.remove(&id);
        self.stats.delivered += 1;
        self.event(Event::Broadcast {
            id,
            payload: gossip.payload.clone(),
            hops: gossip.round,
            via: from,
        });
        self.forward(&gossip, Some(from));
        self.plumtree.remember(
            id,
            Seen {
                at: self.now,
                round: gossip.round,
                parent: Some(from),
                gossip: Some(gossip),
            },
        );
    }

    pub(super) fn on_ihave(&mut self, from: PeerId, ids: Vec<(MsgId, u16)>) {
        let threshold = self.config.optimization_threshold;
        for (id, round) in ids {
            if let Some(seen) = self.plumtree.seen.get_mut(&id) {
                // Optimisation: a much shorter path exists through `from`.
                let Some(parent) = seen.parent else { continue };
                let shorter = round.saturating_add(1).saturating_add(threshold) <= seen.round;
                if shorter && parent != from && self.plumtree.eager.contains(&parent) {
                    seen.parent = Some(from);
                    seen.round = round.saturating_add(1);
                    self.plumtree.make_eager(from);
                    self.plumtree.make_lazy(parent);
                    self.send(from, &Message::Graft { id: None });
                    self.send(parent, &Message::Prune);
                }
                continue;
            }
            match self.plumtree.missing.get_mut(&id) {
                Some(announcers) => {
                    if announcers.len() < 8 && !announcers.iter().any(|(p, _)| *p == from) {
                        announcers.push_back((from, round));
                    }
                }
                None => {
                    // Bound the work a flood of fake ids can cause.
                    if self.plumtree.missing.len() >= MAX_IHAVE * 4 {
                        continue;
                    }
                    self.plumtree
                        .missing
                        .insert(id, VecDeque::from([(from, round)]));
                    let at = self.now + self.config.graft_timeout_ms;
                    self.set_timer(at, TimerKind::Graft(id));
                }
            }
        }
    }

    /// The tree did not deliver an announced message in time: GRAFT an announcer.
    pub(super) fn on_graft_timer(&mut self, id: MsgId) {
        let Some(announcers) = self.plumtree.missing.get_mut(&id) else {
            return;
        };
        let mut target = None;
        while let Some((p, _)) = announcers.pop_front() {
            if self.membership.is_active(&p) {
                target = Some(p);
                break;
            }
        }
        match target {
            Some(p) => {
                self.plumtree.make_eager(p);
                self.send(p, &Message::Graft { id: Some(id) });
                let at = self.now + self.config.graft_retry_ms;
                self.set_timer(at, TimerKind::Graft(id));
            }
            None => {
                self.plumtree.missing.remove(&id);
            }
        }
    }

    pub(super) fn on_graft(&mut self, from: PeerId, id: Option<MsgId>) {
        if self.membership.is_active(&from) {
            self.plumtree.make_eager(from);
        }
        let Some(id) = id else { return };
        let Some(seen) = self.plumtree.seen.get(&id) else {
            return;
        };
        if let Some(g) = &seen.gossip {
            let msg = Message::Gossip(Gossip {
                round: seen.round.saturating_add(1),
                ..g.clone()
            });
            self.send(from, &msg);
        }
    }

    pub(super) fn on_prune(&mut self, from: PeerId) {
        if self.membership.is_active(&from) {
            self.plumtree.make_lazy(from);
        }
    }

    pub(super) fn plumtree_neighbor_up(&mut self, peer: PeerId) {
        self.plumtree.make_eager(peer);
        let since = self.now.saturating_sub(self.config.ihave_on_connect_ms);
        let recent: Vec<(MsgId, u16)> = self
            .plumtree
            .order
            .iter()
            .rev()
            .take_while(|(at, _)| *at >= since)
            .filter_map(|(_, id)| {
                let s = self.plumtree.seen.get(id)?;
                s.gossip.as_ref().map(|_| (*id, s.round))
            })
            .take(IHAVE_ON_CONNECT_MAX)
            .collect();
        if !recent.is_empty() {
            self.send(peer, &Message::IHave(recent));
        }
    }

    pub(super) fn plumtree_neighbor_down(&mut self, peer: PeerId) {
        self.plumtree.eager.retain(|p| *p != peer);
        self.plumtree.lazy.retain(|p| *p != peer);
    }
}
