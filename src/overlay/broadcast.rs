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
//! **One tree per origin** (the paper's optimisation for multiple senders). One shared
//! eager/lazy split breaks when broadcasts from several origins are in flight at once: a
//! duplicate of A's message prunes a link that B's tree needs, a duplicate of B's prunes
//! another, and peers are left hanging off lazy links, waiting [`graft_timeout_ms`] for
//! every message (the browser benchmark saw deliveries cluster at 500 ms and 1 s). So each
//! origin gets its own split of our links, created from the shared tree the first time we
//! see it; PRUNE and GRAFT name the origin, and a duplicate prunes a link for that origin
//! only. The shared tree still learns from every origin and seeds the trees of new ones
//! (a peer that broadcasts once costs what it did with one tree). A peer that receives a
//! first copy over a link it had pruned for that origin (a PRUNE and a message crossed)
//! grafts the link back, so both ends agree on the tree. Trees are forgotten after
//! [`seen_ttl_ms`] without traffic and beyond [`MAX_TREES`] origins (least recently used
//! first).
//!
//! Two small additions: a new neighbour is sent `IHAVE` for the messages of the last
//! [`ihave_on_connect_ms`], so a peer that was cut off catches up once repaired; and the
//! message cache and the de-duplication set expire by age.
//!
//! [`graft_timeout_ms`]: super::Config::graft_timeout_ms
//! [`seen_ttl_ms`]: super::Config::seen_ttl_ms
//! [`ihave_on_connect_ms`]: super::Config::ihave_on_connect_ms

use rand_core::RngCore;
use std::collections::VecDeque;

use super::{Config, Event, Misbehaviour, Overlay, OverlayError, TimerKind};
use crate::collections::{fold_mul, BTreeMap, HashTable, SeededHash};
use crate::id::PeerId;
use crate::wire::{self, Gossip, Message, MsgId, MAX_IHAVE};

/// Signature context of a broadcast.
pub const BROADCAST_CONTEXT: &[u8] = b"rhizome/broadcast/v1";

/// Most message ids announced to a new neighbour.
const IHAVE_ON_CONNECT_MAX: usize = 64;

/// Most origins with a tree of their own at one peer.
pub const MAX_TREES: usize = 256;

/// Most origins whose broadcast budget is tracked (least recently heard forgotten first,
/// which refills its budget: only an adversary with this many identities gains by it).
pub const MAX_BUDGETS: usize = 1024;

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
    /// The encoded GOSSIP frame we forward (round already incremented), while cached for
    /// GRAFTs.
    frame: Option<Vec<u8>>,
}

/// One origin's tree at this peer: the links that are lazy for its broadcasts (every
/// other link of ours is eager).
#[derive(Debug, Clone)]
struct Tree {
    lazy: Vec<PeerId>,
    used: u64,
}

/// One origin's token buckets (in thousandths of a message and of a byte, so integer
/// refills are exact): see [`Config::origin_broadcasts_per_s`].
#[derive(Debug, Clone)]
struct Budget {
    msgs: u64,
    bytes: u64,
    at: u64,
}

/// Plumtree state.
#[derive(Debug, Clone)]
pub(super) struct Plumtree {
    /// Broadcast budgets of the origins heard lately (at most [`MAX_BUDGETS`]).
    budgets: BTreeMap<PeerId, Budget>,
    /// Bytes of the frames held in `seen` for GRAFTs.
    cached_bytes: usize,
    /// Eager links of the shared tree, which seeds the tree of each new origin. Together
    /// with `lazy`: every link a tree may use (our active view).
    pub(super) eager: Vec<PeerId>,
    /// Lazy links of the shared tree.
    pub(super) lazy: Vec<PeerId>,
    /// The trees of origins seen lately.
    trees: BTreeMap<PeerId, Tree>,
    next_seq: u64,
    seen: HashTable<MsgId, Seen>,
    /// Ids in arrival order, for expiry.
    order: VecDeque<(u64, MsgId)>,
    /// Ids whose payload is still cached, in arrival order.
    cached: VecDeque<(u64, MsgId)>,
    /// Announced but missing messages: who announced them, at which round.
    missing: BTreeMap<MsgId, VecDeque<(PeerId, u16)>>,
}

impl SeededHash for MsgId {
    fn seeded_hash(&self, seed: &[u64; 4]) -> u64 {
        let b = self.origin.as_bytes();
        let w = |i: usize| {
            let mut x = [0; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(x)
        };
        let a = fold_mul(w(0) ^ seed[0], w(1) ^ seed[1]);
        let c = fold_mul(w(2) ^ seed[2], w(3) ^ seed[3]);
        fold_mul(a ^ self.seq, c ^ 0x9e37_79b9_7f4a_7c15)
    }
}

impl Plumtree {
    /// `seed`: the secret seed of the de-duplication table's hash.
    pub(super) fn new(first_seq: u64, seed: [u64; 4]) -> Self {
        Plumtree {
            budgets: BTreeMap::new(),
            cached_bytes: 0,
            eager: Vec::new(),
            lazy: Vec::new(),
            trees: BTreeMap::new(),
            next_seq: first_seq,
            seen: HashTable::new(seed),
            order: VecDeque::new(),
            cached: VecDeque::new(),
            missing: BTreeMap::new(),
        }
    }

    pub(super) fn clear_links(&mut self) {
        self.eager.clear();
        self.lazy.clear();
        self.trees.clear();
        self.missing.clear();
    }

    /// `origin`'s tree, made from the shared one if we have none.
    fn tree(&mut self, origin: PeerId, now: u64) -> &mut Tree {
        if !self.trees.contains_key(&origin) && self.trees.len() >= MAX_TREES {
            let oldest = self
                .trees
                .iter()
                .min_by_key(|(o, t)| (t.used, **o))
                .map(|(o, _)| *o);
            if let Some(o) = oldest {
                self.trees.remove(&o);
            }
        }
        let shared = &self.lazy;
        let tree = self.trees.entry(origin).or_insert_with(|| Tree {
            lazy: shared.clone(),
            used: now,
        });
        tree.used = now;
        tree
    }

    /// Whether `peer` is an eager link for `origin`'s broadcasts.
    fn is_eager(&self, origin: &PeerId, peer: &PeerId) -> bool {
        match self.trees.get(origin) {
            Some(t) => !t.lazy.contains(peer) && self.is_link(peer),
            None => self.eager.contains(peer),
        }
    }

    fn is_link(&self, peer: &PeerId) -> bool {
        self.eager.contains(peer) || self.lazy.contains(peer)
    }

    /// Makes `peer` (a link) eager for `origin`, and in the shared tree.
    fn make_eager(&mut self, origin: PeerId, peer: PeerId, now: u64) {
        self.lazy.retain(|p| *p != peer);
        if !self.eager.contains(&peer) {
            self.eager.push(peer);
        }
        self.tree(origin, now).lazy.retain(|p| *p != peer);
    }

    /// Makes `peer` (a link) lazy for `origin`, and in the shared tree.
    fn make_lazy(&mut self, origin: PeerId, peer: PeerId, now: u64) {
        if !self.is_link(&peer) {
            return;
        }
        self.eager.retain(|p| *p != peer);
        if !self.lazy.contains(&peer) {
            self.lazy.push(peer);
        }
        let tree = self.tree(origin, now);
        if !tree.lazy.contains(&peer) {
            tree.lazy.push(peer);
        }
    }

    fn remember(&mut self, id: MsgId, seen: Seen, config: &Config) {
        self.order.push_back((seen.at, id));
        self.cached.push_back((seen.at, id));
        self.cached_bytes += seen.frame.as_ref().map_or(0, Vec::len);
        self.seen.insert(id, seen);
        // The memory bounds, whatever the rate: oldest payloads, then oldest ids, go first.
        while self.cached_bytes > config.max_cached_broadcast_bytes {
            let Some((_, old)) = self.cached.pop_front() else {
                break;
            };
            self.drop_frame(&old);
        }
        while self.order.len() > config.max_seen_broadcasts.max(1) {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            self.drop_frame(&old);
            self.seen.remove(&old);
        }
    }

    /// (bytes counted as cached, ids remembered, bytes actually held), for tests.
    #[cfg(test)]
    pub(super) fn cache_usage(&self) -> (usize, usize, usize) {
        let held = self
            .order
            .iter()
            .filter_map(|(_, id)| self.seen.get(id)?.frame.as_ref().map(Vec::len))
            .sum();
        (self.cached_bytes, self.order.len(), held)
    }

    /// Whether the payload of `id` is cached, for tests.
    #[cfg(test)]
    pub(super) fn holds(&self, id: &MsgId) -> bool {
        self.seen.get(id).is_some_and(|s| s.frame.is_some())
    }

    /// Stops caching the payload of `id` (it can no longer answer a GRAFT).
    fn drop_frame(&mut self, id: &MsgId) {
        if let Some(frame) = self.seen.get_mut(id).and_then(|s| s.frame.take()) {
            self.cached_bytes -= frame.len();
        }
    }

    /// Takes one broadcast of `len` payload bytes from `origin`'s budget; `false` if the
    /// origin is over its rate.
    fn admit(&mut self, origin: PeerId, len: usize, now: u64, config: &Config) -> bool {
        let cap_msgs = u64::from(config.origin_broadcast_burst).saturating_mul(1000);
        let cap_bytes = config.origin_bytes_burst.saturating_mul(1000);
        if !self.budgets.contains_key(&origin) && self.budgets.len() >= MAX_BUDGETS {
            let oldest = self
                .budgets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(o, _)| *o);
            if let Some(o) = oldest {
                self.budgets.remove(&o);
            }
        }
        let b = self.budgets.entry(origin).or_insert(Budget {
            msgs: cap_msgs,
            bytes: cap_bytes,
            at: now,
        });
        let elapsed = now.saturating_sub(b.at);
        b.at = now;
        let refill = |have: u64, per_s: u64, cap: u64| {
            have.saturating_add(elapsed.saturating_mul(per_s)).min(cap)
        };
        b.msgs = refill(b.msgs, u64::from(config.origin_broadcasts_per_s), cap_msgs);
        b.bytes = refill(b.bytes, config.origin_bytes_per_s, cap_bytes);
        let cost = (len as u64).saturating_mul(1000);
        if b.msgs < 1000 || b.bytes < cost {
            return false;
        }
        b.msgs -= 1000;
        b.bytes -= cost;
        true
    }

    /// Forgets expired ids, trees of origins gone quiet, and drops expired payloads.
    pub(super) fn gc(&mut self, now: u64, config: &Config) {
        while let Some(&(at, id)) = self.cached.front() {
            if now < at + config.message_cache_ms {
                break;
            }
            self.cached.pop_front();
            self.drop_frame(&id);
        }
        while let Some(&(at, id)) = self.order.front() {
            if now < at + config.seen_ttl_ms {
                break;
            }
            self.order.pop_front();
            self.drop_frame(&id);
            self.seen.remove(&id);
        }
        self.trees.retain(|_, t| now < t.used + config.seen_ttl_ms);
        self.budgets.retain(|_, b| now < b.at + config.seen_ttl_ms);
    }
}

impl Overlay {
    /// Signs and sends a new broadcast from us.
    pub(super) fn broadcast(&mut self, payload: Vec<u8>) {
        // Our own broadcasts count against the same budget every peer keeps for us: past
        // it they would get us banned, so the application hears it instead.
        if !self
            .plumtree
            .admit(self.me, payload.len(), self.now, &self.config)
        {
            return self.event(Event::Error(OverlayError::BroadcastRateLimited));
        }
        let seq = self.plumtree.next_seq;
        self.plumtree.next_seq = seq.wrapping_add(1);
        // In a room with a secret the payload is sealed under the room's broadcast key
        // first, and the origin signs the ciphertext.
        let payload = match &self.config.room_key {
            Some(key) => {
                let mut nonce = [0; 24];
                self.rng.fill_bytes(&mut nonce);
                match key.seal_broadcast(&self.me, seq, nonce, &payload) {
                    Some(sealed) => sealed,
                    None => return,
                }
            }
            None => payload,
        };
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
        let (frame, _) = self.forward(gossip, None);
        self.plumtree.remember(
            id,
            Seen {
                at: self.now,
                round: 0,
                parent: None,
                frame,
            },
            &self.config,
        );
        self.event(Event::BroadcastSent(id));
    }

    /// Eager-pushes `gossip` one hop further along its origin's tree and lazily
    /// announces it on the other links, skipping `except`. Returns the encoded frame
    /// (kept for GRAFTs) and the payload.
    fn forward(
        &mut self,
        mut gossip: Gossip,
        except: Option<PeerId>,
    ) -> (Option<Vec<u8>>, Vec<u8>) {
        let id = gossip.id;
        let round = gossip.round;
        let tree_lazy = self.plumtree.tree(id.origin, self.now).lazy.clone();
        let links = self.plumtree.eager.iter().chain(&self.plumtree.lazy);
        let eager: Vec<PeerId> = links
            .copied()
            .filter(|p| Some(*p) != except && !tree_lazy.contains(p))
            .collect();
        gossip.round = round.saturating_add(1);
        let msg = Message::Gossip(gossip);
        let frame = wire::encode(&msg).ok();
        let payload = match msg {
            Message::Gossip(g) => g.payload,
            _ => Vec::new(),
        };
        if let Some(frame) = &frame {
            for p in eager {
                self.send_frame(p, frame.clone());
            }
        }
        let lazy: Vec<PeerId> = tree_lazy
            .into_iter()
            .filter(|p| Some(*p) != except)
            .collect();
        if !lazy.is_empty() {
            if let Ok(frame) = wire::encode(&Message::IHave(vec![(id, round)])) {
                for p in lazy {
                    self.send_frame(p, frame.clone());
                }
            }
        }
        (frame, payload)
    }

    pub(super) fn on_gossip(&mut self, from: PeerId, gossip: Gossip) {
        let id = gossip.id;
        let now = self.now;
        if self.plumtree.seen.contains_key(&id) {
            self.stats.duplicates += 1;
            // A cycle in this origin's tree: cut it here, for this origin only. The PRUNE
            // goes out even if the link is lazy on our side already: the sender pushed
            // this copy, so it still counts us as eager.
            if self.membership.is_active(&from) {
                self.plumtree.make_lazy(id.origin, from, now);
                self.send(from, &Message::Prune { origin: id.origin });
            }
            return;
        }
        if id.origin == self.me {
            return; // Our own message, forgotten already: do not deliver it to ourselves.
        }
        if self.is_banned(&id.origin) {
            // Flooded (or otherwise misbehaved) lately: dropped before the costly check,
            // neither delivered nor relayed.
            self.stats.refused_broadcasts += 1;
            return;
        }
        let signed = signed_bytes(id.seq, &gossip.payload);
        if id
            .origin
            .verify(BROADCAST_CONTEXT, &signed, &gossip.sig)
            .is_err()
        {
            return self.punish(from, Misbehaviour::ForgedBroadcast(id.origin));
        }
        drop(signed);
        // After the signature: forged copies cannot spend an honest origin's budget.
        let len = gossip.payload.len();
        if !self.plumtree.admit(id.origin, len, now, &self.config) {
            self.stats.refused_broadcasts += 1;
            return self.punish(id.origin, Misbehaviour::Flooding);
        }
        // Only active-view links form the tree; a DHT link may carry gossip but never
        // becomes a tree edge (eager and lazy peers stay a subset of the active view).
        if self.membership.is_active(&from) {
            if !self.plumtree.is_eager(&id.origin, &from) {
                // We had pruned this link for the origin, and the sender had not yet
                // heard it (or we had never told it): say it is a tree edge after all,
                // so both ends agree.
                self.send(from, &Message::Graft { id, send: false });
            }
            self.plumtree.make_eager(id.origin, from, now);
        }
        // An IHAVE may have arrived before the payload: the tree delivered in time.
        self.plumtree.missing.remove(&id);
        self.stats.delivered += 1;
        let round = gossip.round;
        let (frame, payload) = self.forward(gossip, Some(from));
        self.plumtree.remember(
            id,
            Seen {
                at: now,
                round,
                parent: Some(from),
                frame,
            },
            &self.config,
        );
        let payload = match &self.config.room_key {
            // Relayed either way (it is signed, and its origin is a member), but only
            // delivered if it opens.
            Some(key) => match key.open_broadcast(&id.origin, id.seq, &payload) {
                Some(plain) => plain,
                None => {
                    self.stats.unreadable_broadcasts += 1;
                    return;
                }
            },
            None => payload,
        };
        self.event(Event::Broadcast {
            id,
            payload,
            hops: round,
            via: from,
        });
    }

    pub(super) fn on_ihave(&mut self, from: PeerId, ids: Vec<(MsgId, u16)>) {
        let threshold = self.config.optimization_threshold;
        let now = self.now;
        let active = self.membership.is_active(&from);
        for (id, round) in ids {
            if let Some(seen) = self.plumtree.seen.get_mut(&id) {
                // Optimisation: a much shorter path from this origin exists through `from`.
                let Some(parent) = seen.parent else { continue };
                let shorter = round.saturating_add(1).saturating_add(threshold) <= seen.round;
                if shorter && active && parent != from {
                    seen.parent = Some(from);
                    seen.round = round.saturating_add(1);
                    if self.plumtree.is_eager(&id.origin, &parent) {
                        self.plumtree.make_eager(id.origin, from, now);
                        self.plumtree.make_lazy(id.origin, parent, now);
                        self.send(from, &Message::Graft { id, send: false });
                        self.send(parent, &Message::Prune { origin: id.origin });
                    }
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
                self.plumtree.make_eager(id.origin, p, self.now);
                self.send(p, &Message::Graft { id, send: true });
                let at = self.now + self.config.graft_retry_ms;
                self.set_timer(at, TimerKind::Graft(id));
            }
            None => {
                self.plumtree.missing.remove(&id);
            }
        }
    }

    pub(super) fn on_graft(&mut self, from: PeerId, id: MsgId, send: bool) {
        if self.membership.is_active(&from) {
            self.plumtree.make_eager(id.origin, from, self.now);
        }
        if !send {
            return;
        }
        if let Some(frame) = self.plumtree.seen.get(&id).and_then(|s| s.frame.clone()) {
            self.send_frame(from, frame);
        }
    }

    pub(super) fn on_prune(&mut self, from: PeerId, origin: PeerId) {
        if self.membership.is_active(&from) {
            self.plumtree.make_lazy(origin, from, self.now);
        }
    }

    pub(super) fn plumtree_neighbor_up(&mut self, peer: PeerId) {
        // A new link starts eager in every tree: the next broadcast of each origin
        // crosses it once, and a duplicate prunes it for that origin.
        let pt = &mut self.plumtree;
        pt.lazy.retain(|p| *p != peer);
        if !pt.eager.contains(&peer) {
            pt.eager.push(peer);
        }
        for t in pt.trees.values_mut() {
            t.lazy.retain(|p| *p != peer);
        }
        let since = self.now.saturating_sub(self.config.ihave_on_connect_ms);
        let recent: Vec<(MsgId, u16)> = self
            .plumtree
            .order
            .iter()
            .rev()
            .take_while(|(at, _)| *at >= since)
            .filter_map(|(_, id)| {
                let s = self.plumtree.seen.get(id)?;
                s.frame.as_ref().map(|_| (*id, s.round))
            })
            .take(IHAVE_ON_CONNECT_MAX)
            .collect();
        if !recent.is_empty() {
            self.send(peer, &Message::IHave(recent));
        }
    }

    pub(super) fn plumtree_neighbor_down(&mut self, peer: PeerId) {
        let pt = &mut self.plumtree;
        pt.eager.retain(|p| *p != peer);
        pt.lazy.retain(|p| *p != peer);
        for t in pt.trees.values_mut() {
            t.lazy.retain(|p| *p != peer);
        }
    }
}
