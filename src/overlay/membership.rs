//! HyParView membership: who we are connected to, and who we could connect to next.
//!
//! [HyParView](https://asc.di.fct.unl.pt/~jleitao/pdf/dsn07-leitao.pdf) (Leitão, Pereira,
//! Rodrigues, DSN 2007) keeps two views. The **active view** is small (5 by default) and
//! symmetric: every entry is an open connection, and broadcasts travel only over it. The
//! **passive view** is larger (30) and holds addresses only; it is the reservoir from which
//! the active view is repaired when a neighbour fails. Keeping the active view small is
//! exactly what a browser needs (a page can afford only a handful of RTCPeerConnections),
//! while the passive view gives the resilience: the paper shows a broadcast still reaching
//! almost everyone with 80% of the nodes failed.
//!
//! - **Join.** A newcomer connects to a contact from the signaling server's sample and
//!   sends JOIN. The contact takes it into its active view (evicting a random neighbour if
//!   full) and sends a FORWARD_JOIN random walk to each other neighbour. A walk stops after
//!   the *active random walk length* (ARWL) hops or at a peer with a single neighbour; that
//!   peer connects to the newcomer with a high-priority NEIGHBOR request. At the *passive
//!   random walk length* (PRWL) hop the newcomer also lands in a passive view.
//!
//!   Three departures keep joins from churning RTCPeerConnections (measured with
//!   `cargo run --release -p rhizome-sim --example join`: 8, 32 and 1,000 peers joining
//!   created 7.9, 11.6 and 15.0 each before, 4.8, 6.8 and 8.1 after, against ~4.7 for the
//!   links that remain). A walk that ends at a peer already connected to the newcomer, or
//!   whose active view is full (taking the newcomer would evict a neighbour, who would
//!   then connect elsewhere), goes on to a neighbour not on the walk yet, up to twice
//!   ARWL hops. A newcomer whose JOIN connection is still being set up does not force
//!   high-priority connections on its other contacts. And for [`JOIN_SETTLE_MS`] after
//!   its JOIN, while the walks land, it does not look for neighbours itself.
//! - **Repair.** When a neighbour leaves or fails, a random passive peer is asked to
//!   become a neighbour: with high priority (must accept) if our active view is empty,
//!   with low priority (accepted only if it has room) otherwise. A refused request backs
//!   off exponentially, so a full network does not burn RTCPeerConnections. A peer with
//!   more than half its active view asks only over source routes (no connection unless
//!   the answer is yes); one with less may also connect to a route-less passive peer and
//!   ask on the connection.
//! - **Shuffle.** Once per membership round a peer sends a sample of its views on a random
//!   walk; the peer where the walk ends answers with a sample of its passive view. Both
//!   merge what they received into their passive views, which keeps them fresh and random.
//! - **Isolation.** Only a peer whose active view is empty and that cannot reach anyone
//!   in its passive view asks the signaling server for a new sample (`RequestBootstrap`).
//!   With the server gone that is no way out: a peer whose last neighbour goes has nobody
//!   to carry the signals of a new connection. So a peer with fewer than [`MIN_ACTIVE`]
//!   neighbours asks one of its open DHT links to become a neighbour (a NEIGHBOR request
//!   on the existing connection, high priority when it has none: no new
//!   RTCPeerConnection), may start source routes at a DHT link, backs off at most 8 s
//!   after refusals, and with the server down insists (high priority) when a routed query
//!   finds no room.
//! - **Components.** Shuffles never bring a peer of another component into the passive
//!   view, so two components (newcomers that joined at once and could not reach the rest
//!   of the room) would stay apart. With the server up, a peer with room and no candidate
//!   it can ask over the overlay waits 15 s for shuffles, then connects to a route-less
//!   one (a peer the server named); one whose every known peer is already linked, while
//!   the server's last sample named more, asks for a fresh sample (whose peers the first
//!   rule then tries).
//!
//! Two departures from the paper, both forced by WebRTC. A connection is expensive (an
//! offer/answer exchange and ICE), so the shuffle reply travels back along the walk's path
//! instead of over a temporary connection. And each passive entry carries a *source route*
//! (the hops that led to it) so the connection to it can be signalled through the overlay
//! (see [`super::route`]).

use super::{Conn, Event, Intent, Output, Overlay};
use crate::id::PeerId;
use crate::wire::{Message, PeerEntry, Priority, Routed, MAX_PATH_LEN};

/// Passive peers asked at once when repairing a non-empty active view.
pub const REPAIR_QUERIES: usize = 3;
/// How long a routed NEIGHBOR query waits for its answer, in ms.
pub const QUERY_TIMEOUT_MS: u64 = 3_000;
/// After its JOIN, how long a newcomer waits for the FORWARD_JOIN walks to bring it
/// neighbours before it looks for more itself, in ms (a walk is at most a dozen hops, then
/// one connection).
pub const JOIN_SETTLE_MS: u64 = 3_000;

/// How long a peer with most of its active view waits for shuffles to bring candidates
/// it can ask over the overlay before, with the server up, it connects to one only the
/// server named, in ms (a shuffle round and a half).
pub const UNROUTED_WAIT_MS: u64 = 15_000;

/// Fewest active neighbours a peer is content with (when its capacity allows): below it,
/// a peer keeps looking for neighbours, also among its open DHT links. One neighbour is
/// a single point of failure: losing it while the signaling server is down leaves the
/// peer with nobody to carry the signals of a new connection.
pub const MIN_ACTIVE: usize = 2;

/// A passive-view entry: an address and, if known, a source route to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PassiveEntry {
    pub(super) peer: PeerId,
    /// Hops from us to `peer` (ending with `peer`); empty when unknown.
    pub(super) route: Vec<PeerId>,
}

/// HyParView state.
#[derive(Debug, Clone, Default)]
pub(super) struct Membership {
    pub(super) active: Vec<PeerId>,
    pub(super) passive: Vec<PassiveEntry>,
    /// Contacts from the server not tried yet.
    join_contacts: Vec<PeerId>,
    /// No low-priority NEIGHBOR request before this time (backoff after refusals).
    repair_not_before: u64,
    /// Current backoff; 0 means "the configured initial value".
    backoff: u64,
    last_bootstrap: Option<u64>,
    /// How many peers the server's latest sample named: the room has at least that many
    /// others (see [`Overlay::repair`]).
    room_hint: usize,
    /// No low-priority repair before this time: our JOIN's walks are still landing.
    settle_until: u64,
    /// Since when repair has found no candidate to ask over the overlay.
    unrouted_since: Option<u64>,
    /// Routed NEIGHBOR queries in flight, by peer, with the time they were sent.
    queries: crate::collections::BTreeMap<PeerId, u64>,
    /// NEIGHBOR requests sent over open DHT links (to make the link an active-view link),
    /// by peer, with the time they were sent.
    promoting: crate::collections::BTreeMap<PeerId, u64>,
    /// While the signaling session is lost: when to try to reconnect next.
    reconnect_due: Option<u64>,
    /// The current reconnection window (see [`super::Config::reconnect_backoff_ms`]).
    reconnect_window: u64,
    /// The next sample from the server follows a lost session: probe it for peers of
    /// another component (see [`Overlay::probe_for_components`]).
    probe_next_sample: bool,
}

impl Membership {
    pub(super) fn is_active(&self, peer: &PeerId) -> bool {
        self.active.contains(peer)
    }

    pub(super) fn remove_passive(&mut self, peer: &PeerId) {
        self.passive.retain(|e| &e.peer != peer);
    }

    pub(super) fn passive_route(&self, peer: &PeerId) -> Option<&[PeerId]> {
        self.passive
            .iter()
            .find(|e| &e.peer == peer)
            .map(|e| e.route.as_slice())
    }

    pub(super) fn clear_route(&mut self, peer: &PeerId) {
        if let Some(e) = self.passive.iter_mut().find(|e| &e.peer == peer) {
            e.route.clear();
        }
    }
}

impl Overlay {
    pub(super) fn on_join_command(&mut self, contacts: Vec<PeerId>) {
        // A Join means the driver has a server session and a fresh sample of the room.
        self.server_up = true;
        self.membership.reconnect_due = None;
        self.membership.reconnect_window = 0;
        if !self.joined {
            self.joined = true;
            self.start_timers();
        }
        let me = self.me;
        let mut fresh: Vec<PeerId> = Vec::new();
        for c in contacts {
            if c != me && !self.is_banned(&c) && !fresh.contains(&c) {
                fresh.push(c);
            }
        }
        if std::mem::take(&mut self.membership.probe_next_sample) {
            self.probe_for_components(&fresh);
        }
        for c in &fresh {
            self.add_passive(*c, Vec::new());
        }
        self.membership.room_hint = fresh.len();
        self.membership.join_contacts = fresh;
        if self.membership.active.is_empty() {
            self.try_join_contact();
        }
    }

    /// The signaling session is gone (the server restarted, crashed, or the network
    /// dropped it). The overlay carries on without it, but a server that comes back knows
    /// only the peers that registered again: newcomers it introduces to each other would
    /// form a room of their own. So every joined peer reconnects in the background, at a
    /// random time in a window that doubles after each failure
    /// ([`super::Config::reconnect_backoff_ms`]), and probes the first sample it gets for
    /// peers of another component.
    pub(super) fn on_server_down(&mut self, reconnect: bool) {
        let was_up = std::mem::replace(&mut self.server_up, false);
        if !reconnect {
            self.membership.reconnect_due = None;
            self.membership.probe_next_sample = false;
        }
        if !self.joined || !was_up || !reconnect {
            return;
        }
        self.membership.probe_next_sample = true;
        self.membership.reconnect_window = self.config.reconnect_backoff_ms.max(1);
        self.schedule_reconnect();
    }

    fn schedule_reconnect(&mut self) {
        let window = self.membership.reconnect_window;
        let delay = 1 + self.rand_below(window as usize) as u64;
        self.membership.reconnect_due = Some(self.now + delay);
    }

    /// Once per heartbeat: reconnects to the server when it is due (see
    /// [`Self::on_server_down`]). The driver answers with `Join` when it is back; nothing
    /// comes back when it is not, and the next try waits a window twice as long.
    pub(super) fn reconnect_server(&mut self) {
        if self.server_up || !self.joined {
            self.membership.reconnect_due = None;
            return;
        }
        let Some(due) = self.membership.reconnect_due else {
            return;
        };
        if self.now < due {
            return;
        }
        self.stats.reconnects += 1;
        self.stats.bootstraps += 1;
        self.membership.last_bootstrap = Some(self.now);
        self.out.push(Output::RequestBootstrap);
        self.membership.reconnect_window =
            (self.membership.reconnect_window * 2).min(self.config.reconnect_backoff_max_ms.max(1));
        self.schedule_reconnect();
    }

    /// The first sample after a lost session may name peers that joined while we were
    /// away and that the server, which had forgotten us, introduced only to each other: a
    /// component nothing in ours knows. Ask one contact that nothing in the overlay told
    /// us of (not linked, not in the passive view) to be a neighbour: a peer with room
    /// accepts, and one link merges two components. If the whole room stayed together,
    /// the contact is one of ours that we had not heard of, and a full one refuses: one
    /// connection per peer per server restart.
    fn probe_for_components(&mut self, contacts: &[PeerId]) {
        if self.membership.active.is_empty() {
            return; // isolated: the JOIN through a contact does the merging
        }
        let unknown: Vec<PeerId> = contacts
            .iter()
            .copied()
            .filter(|c| {
                !self.conns.contains_key(c) && self.membership.passive.iter().all(|e| e.peer != *c)
            })
            .collect();
        if unknown.is_empty() {
            return;
        }
        let pick = unknown[self.rand_below(unknown.len())];
        if self.connect(pick, Intent::Neighbor(Priority::Low)) {
            self.stats.merge_probes += 1;
        }
    }

    /// Connects to a random untried contact with the intent to JOIN through it.
    fn try_join_contact(&mut self) -> bool {
        while !self.membership.join_contacts.is_empty() {
            let i = self.rand_below(self.membership.join_contacts.len());
            let c = self.membership.join_contacts.swap_remove(i);
            if self.connect(c, Intent::Join) {
                return true;
            }
        }
        false
    }

    /// Emits `Connect` to `peer` if a signal path exists. Returns whether it did.
    pub(super) fn connect(&mut self, peer: PeerId, intent: Intent) -> bool {
        if peer == self.me || self.conns.contains_key(&peer) || self.is_banned(&peer) {
            return false;
        }
        let Some(via) = self.path_for_new_connection(&peer) else {
            return false;
        };
        self.conns.insert(
            peer,
            Conn::Connecting {
                intent,
                since: self.now,
            },
        );
        self.router.set_path(peer, via.clone(), self.now);
        self.stats.connects += 1;
        self.out.push(Output::Connect { peer, via });
        true
    }

    pub(super) fn on_connection_up(&mut self, peer: PeerId) {
        self.stats.connections_up += 1;
        if !self.joined || self.is_banned(&peer) || peer == self.me {
            self.conns.remove(&peer);
            self.out.push(Output::Disconnect { peer });
            return;
        }
        self.router.connection_settled(&peer);
        match self.conns.get(&peer).copied() {
            Some(Conn::Connecting {
                intent: Intent::Join,
                ..
            }) => {
                self.send(peer, &Message::Join);
                self.add_active(peer);
                self.membership.settle_until = self.now + JOIN_SETTLE_MS;
            }
            Some(Conn::Connecting {
                intent: Intent::Neighbor(priority),
                ..
            }) => {
                self.conns
                    .insert(peer, Conn::AwaitingReply { since: self.now });
                self.send(peer, &Message::Neighbor { priority });
            }
            Some(_) => {}
            None => {
                self.conns
                    .insert(peer, Conn::AwaitingHello { since: self.now });
            }
        }
    }

    pub(super) fn on_connection_down(&mut self, peer: PeerId) {
        self.router.connection_settled(&peer);
        match self.conns.remove(&peer) {
            Some(Conn::Connecting { intent, .. }) => {
                self.stats.failed_connects += 1;
                // The attempt failed: the peer is probably gone.
                self.membership.remove_passive(&peer);
                if intent == Intent::Join && self.membership.active.is_empty() {
                    self.try_join_contact();
                }
                self.repair();
            }
            Some(Conn::AwaitingReply { .. }) => {
                // Refused (the reply raced the close) or gone: back off either way.
                self.note_refusal();
                self.repair();
            }
            Some(Conn::Active) => {
                // HyParView drops a failed neighbour rather than keeping it as passive.
                self.drop_active(peer);
                self.repair();
            }
            Some(Conn::AwaitingHello { .. }) | None => {}
        }
    }

    /// A message on a connection that is up but not yet in the active view.
    pub(super) fn on_handshake_message(&mut self, from: PeerId, conn: Conn, msg: Message) {
        match (conn, msg) {
            (_, Message::Ping { nonce }) => self.send(from, &Message::Pong { nonce }),
            (Conn::AwaitingHello { .. }, Message::Join) => self.on_join_message(from),
            (_, Message::Neighbor { priority }) => {
                // A refusal on a fresh connection also closes it.
                let accepted = self.answer_neighbor_request(from, priority);
                if !accepted {
                    self.conns.remove(&from);
                    self.out.push(Output::Disconnect { peer: from });
                }
            }
            (Conn::AwaitingReply { .. }, Message::NeighborReply { accepted: true }) => {
                self.add_active(from)
            }
            (Conn::AwaitingReply { .. }, Message::NeighborReply { accepted: false }) => {
                self.conns.remove(&from);
                self.out.push(Output::Disconnect { peer: from });
                self.stats.refused += 1;
                self.note_refusal();
            }
            // Anything else before the handshake is finished is ignored (it may be a
            // frame that raced the handshake).
            _ => {}
        }
    }

    pub(super) fn on_join_message(&mut self, from: PeerId) {
        if self.membership.is_active(&from) {
            return;
        }
        self.add_active(from);
        let ttl = self.config.active_random_walk_length;
        let me = self.me;
        for n in self.membership.active.clone() {
            if n != from {
                self.send(
                    n,
                    &Message::ForwardJoin {
                        newcomer: from,
                        ttl,
                        path: vec![me],
                    },
                );
            }
        }
    }

    pub(super) fn on_forward_join(
        &mut self,
        from: PeerId,
        newcomer: PeerId,
        ttl: u8,
        mut path: Vec<PeerId>,
    ) {
        if path.last() != Some(&from) {
            return self.punish(from, super::Misbehaviour::Protocol("forward-join path"));
        }
        if newcomer == self.me || self.is_banned(&newcomer) {
            return;
        }
        let known = self.conns.contains_key(&newcomer);
        // Route back to the newcomer: along the walk to the contact, which is its neighbour.
        let mut route: Vec<PeerId> = path.iter().rev().copied().collect();
        route.push(newcomer);
        let next = self.random_active_except(&[from, newcomer], &path);
        let full = self.membership.active.len() >= self.config.active_view_capacity;
        if ttl == 0 && (full || known) && path.len() < self.walk_limit() {
            // The walk is over, but here it would be wasted (we already have the
            // newcomer) or costly (taking it would evict a neighbour, who would then open
            // a connection of its own to repair): look a little further for a peer with
            // room (only to peers not on the walk yet).
            if let Some(next) = self.random_active_except(&[from, newcomer], &[]) {
                if !path.contains(&next) {
                    path.push(self.me);
                    self.send(
                        next,
                        &Message::ForwardJoin {
                            newcomer,
                            ttl: 0,
                            path,
                        },
                    );
                    return;
                }
            }
        }
        if ttl == 0 || self.membership.active.len() <= 1 || next.is_none() {
            if !known {
                self.add_passive(newcomer, route);
                self.connect(newcomer, Intent::Neighbor(Priority::High));
            }
            return;
        }
        if ttl == self.config.passive_random_walk_length && !known {
            self.add_passive(newcomer, route);
        }
        if let Some(next) = next {
            if path.len() < MAX_PATH_LEN {
                path.push(self.me);
                self.send(
                    next,
                    &Message::ForwardJoin {
                        newcomer,
                        ttl: ttl - 1,
                        path,
                    },
                );
            }
        }
    }

    /// Longest path a FORWARD_JOIN may grow to while looking past full peers: twice the
    /// active random walk, within the wire's bound.
    fn walk_limit(&self) -> usize {
        (2 * usize::from(self.config.active_random_walk_length)).min(MAX_PATH_LEN - 1)
    }

    pub(super) fn on_disconnect_message(&mut self, from: PeerId) {
        self.conns.remove(&from);
        self.out.push(Output::Disconnect { peer: from });
        if self.drop_active(from) {
            // It is alive, just busy: keep it for later repairs.
            self.add_passive(from, Vec::new());
            self.repair();
        }
    }

    /// A neighbour leaves the room for good: unlike an eviction, it is not kept in the
    /// passive view, so an isolated peer does not spend its repairs dialling it.
    pub(super) fn on_leave_message(&mut self, from: PeerId) {
        self.conns.remove(&from);
        self.out.push(Output::Disconnect { peer: from });
        self.membership.remove_passive(&from);
        if self.drop_active(from) {
            self.repair();
        }
    }

    /// Puts `peer` into the active view, evicting a random neighbour if it is full.
    pub(super) fn add_active(&mut self, peer: PeerId) {
        self.conns.insert(peer, Conn::Active);
        if self.membership.is_active(&peer) {
            return;
        }
        while self.membership.active.len() >= self.config.active_view_capacity.max(1) {
            let i = self.rand_below(self.membership.active.len());
            let victim = self.membership.active[i];
            self.stats.evictions += 1;
            self.send(victim, &Message::Disconnect);
            self.conns.remove(&victim);
            self.out.push(Output::Disconnect { peer: victim });
            self.drop_active(victim);
            self.add_passive(victim, Vec::new());
        }
        self.membership.remove_passive(&peer);
        self.membership.active.push(peer);
        if self.membership.active.len() >= self.config.active_view_capacity {
            // A full view ends any wait for routed candidates: a later gap waits
            // UNROUTED_WAIT_MS afresh before dialling a peer only the server named.
            self.membership.unrouted_since = None;
        }
        self.membership.backoff = 0;
        self.membership.repair_not_before = 0;
        self.detector.add(peer, self.now);
        self.event(Event::NeighborUp(peer));
        self.plumtree_neighbor_up(peer);
    }

    /// Removes `peer` from the active view (not from `conns`). Returns whether it was there.
    pub(super) fn drop_active(&mut self, peer: PeerId) -> bool {
        let Some(i) = self.membership.active.iter().position(|p| *p == peer) else {
            return false;
        };
        self.membership.active.swap_remove(i);
        // A new need: repair without waiting out an old backoff.
        self.membership.backoff = 0;
        self.membership.repair_not_before = 0;
        self.detector.remove(&peer);
        self.plumtree_neighbor_down(peer);
        self.event(Event::NeighborDown(peer));
        true
    }

    /// Adds or refreshes a passive entry; keeps the shorter known route.
    pub(super) fn add_passive(&mut self, peer: PeerId, mut route: Vec<PeerId>) {
        if peer == self.me
            || self.membership.is_active(&peer)
            || self.is_banned(&peer)
            || self.config.passive_view_capacity == 0
        {
            return;
        }
        if route.len() > self.config.max_route_len || route.last() != Some(&peer) {
            route.clear();
        }
        if let Some(e) = self.membership.passive.iter_mut().find(|e| e.peer == peer) {
            if !route.is_empty() && (e.route.is_empty() || route.len() <= e.route.len()) {
                e.route = route;
            }
            return;
        }
        if self.membership.passive.len() >= self.config.passive_view_capacity {
            let i = self.rand_below(self.membership.passive.len());
            self.membership.passive.swap_remove(i);
        }
        self.membership.passive.push(PassiveEntry { peer, route });
    }

    /// Whether we have fewer active neighbours than [`MIN_ACTIVE`] (but some).
    fn short_of_neighbours(&self) -> bool {
        let n = self.membership.active.len();
        n > 0 && n < MIN_ACTIVE.min(self.config.active_view_capacity)
    }

    fn note_refusal(&mut self) {
        let base = self.config.repair_backoff_ms;
        // A peer with a single neighbour keeps asking at least every few seconds: that
        // neighbour is all that stands between it and isolation.
        let max = if self.short_of_neighbours() {
            (4 * base).min(self.config.repair_backoff_max_ms)
        } else {
            self.config.repair_backoff_max_ms
        };
        let b = if self.membership.backoff == 0 {
            base
        } else {
            (self.membership.backoff * 2).min(max)
        };
        self.membership.backoff = b;
        self.membership.repair_not_before = self.now + b;
    }

    /// Tops the active view up from the passive view; asks for a re-bootstrap when
    /// isolated and out of options.
    ///
    /// An isolated peer connects to several passive peers at once with high priority
    /// (they must accept). A peer that merely lacks a neighbour first *asks* up to
    /// [`REPAIR_QUERIES`] passive peers over their source routes whether they have room,
    /// and connects only to one that says yes: refusals cost a few routed frames instead
    /// of an RTCPeerConnection each.
    pub(super) fn repair(&mut self) {
        if !self.joined {
            return;
        }
        let cap = self.config.active_view_capacity;
        let active = self.membership.active.len();
        if active >= cap {
            return;
        }
        let pending = self.pending_neighbor_attempts();
        let joining = self.conns.values().any(|c| {
            matches!(
                c,
                Conn::Connecting {
                    intent: Intent::Join,
                    ..
                }
            )
        });
        if active == 0 && joining {
            // Our JOIN is under way and will bring neighbours (its contact, then the
            // walks' ends): forcing high-priority connections on others now would only
            // make them evict neighbours. If it fails, we try the next contact.
            return;
        }
        // An open DHT link becomes a neighbour without a new RTCPeerConnection; and with
        // the server gone, it may be the only signal path we have left. (With one
        // neighbour left, low priority, so a refusal backs off like any other.)
        let may_ask = active == 0 || self.now >= self.membership.repair_not_before;
        if active < MIN_ACTIVE.min(cap) && may_ask {
            let asked = self.promote_link(active == 0);
            if asked && active == 0 {
                return;
            }
        }
        if active == 0 {
            let want = cap.saturating_sub(pending);
            let mut started = 0;
            while started < want {
                let candidates = self.repair_candidates();
                if candidates.is_empty() {
                    break;
                }
                let pick = candidates[self.rand_below(candidates.len())];
                if self.connect(pick, Intent::Neighbor(Priority::High)) {
                    started += 1;
                } else {
                    // No signal path to it: useless while the server is down.
                    self.membership.remove_passive(&pick);
                }
            }
            if pending == 0 && started == 0 && !self.try_join_contact() {
                self.request_bootstrap();
            }
            return;
        }
        if !self.membership.queries.is_empty()
            || self.now < self.membership.repair_not_before
            || self.now < self.membership.settle_until
        {
            return;
        }
        let deficit = cap.saturating_sub(active + pending);
        if deficit == 0 {
            return;
        }
        // With half the view or more gone (a mass failure), repair in parallel.
        let parallel = if active * 2 <= cap { deficit } else { 1 };
        if pending >= parallel {
            return;
        }
        let candidates = self.repair_candidates();
        if candidates.is_empty() && self.server_up && self.conns.len() < self.membership.room_hint {
            // Everyone we know is linked to us and we still have room, yet the server
            // named more peers than that (attempts to them failed): they may have formed
            // a component of their own, which nothing inside ours can reach. Only the
            // server knows the whole room: ask it for a fresh sample.
            self.request_bootstrap();
            return;
        }
        let routed: Vec<(PeerId, Vec<PeerId>)> = candidates
            .iter()
            .filter_map(|p| {
                let route = self.membership.passive_route(p)?;
                Some((*p, self.shorten(route)?))
            })
            .collect();
        if routed.is_empty() {
            // No route to ask through, and most of the view is there: rather than spend
            // a connection on asking (peers are mostly full, so it would mostly be
            // refused), wait for shuffles and walks to bring routed candidates. With the
            // server up, only for [`UNROUTED_WAIT_MS`]: shuffles never bring routes into
            // another component, so a peer only the server named may be the one link
            // that merges two.
            if active * 2 > cap {
                let since = *self.membership.unrouted_since.get_or_insert(self.now);
                if !self.server_up || self.now < since + UNROUTED_WAIT_MS {
                    return;
                }
            }
            // No route to ask through: connect and ask on the connection.
            let picks = self.sample(candidates, parallel - pending);
            for pick in picks {
                if !self.connect(pick, Intent::Neighbor(Priority::Low)) {
                    self.membership.remove_passive(&pick);
                }
            }
            return;
        }
        self.membership.unrouted_since = None;
        let n = REPAIR_QUERIES.max(2 * parallel);
        let picks = self.sample((0..routed.len()).collect::<Vec<_>>(), n);
        for i in picks {
            let (peer, route) = routed[i].clone();
            let mut full = vec![self.me];
            full.extend(route);
            self.membership.queries.insert(peer, self.now);
            self.send_routed(full, Routed::NeighborQuery);
        }
    }

    fn pending_neighbor_attempts(&self) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c, Conn::Connecting { .. } | Conn::AwaitingReply { .. }))
            .count()
            + self.membership.promoting.len()
    }

    /// Asks the peer at the other end of an open DHT link (outside the active view) to
    /// become an active neighbour, with high priority if `urgent`. Returns whether it
    /// asked (not when a request is already out or there is no such link).
    fn promote_link(&mut self, urgent: bool) -> bool {
        if !self.membership.promoting.is_empty() {
            return false;
        }
        let links: Vec<PeerId> = self
            .dht_links()
            .into_iter()
            .filter(|p| !self.membership.is_active(p) && !self.is_banned(p))
            .collect();
        if links.is_empty() {
            return false;
        }
        let peer = links[self.rand_below(links.len())];
        let priority = if urgent {
            Priority::High
        } else {
            Priority::Low
        };
        self.membership.promoting.insert(peer, self.now);
        self.send(peer, &Message::Neighbor { priority });
        true
    }

    /// Answers a NEIGHBOR request: accepted when it is high priority or there is room, and
    /// then `from` joins the active view. Returns whether it was accepted. Over an open
    /// link outside our active view (a DHT link) a refusal keeps the link; on a fresh
    /// connection the caller closes it.
    pub(super) fn answer_neighbor_request(&mut self, from: PeerId, priority: Priority) -> bool {
        let room = self.membership.active.len() < self.config.active_view_capacity;
        let accepted = priority == Priority::High || room;
        self.send(from, &Message::NeighborReply { accepted });
        if accepted {
            self.add_active(from);
        }
        accepted
    }

    /// The answer to a NEIGHBOR request we sent over a DHT link ([`Self::promote_link`]).
    pub(super) fn on_link_neighbor_reply(&mut self, from: PeerId, accepted: bool) {
        if self.membership.promoting.remove(&from).is_none() {
            return;
        }
        if accepted {
            self.add_active(from);
        } else {
            self.stats.refused += 1;
            self.note_refusal();
        }
    }

    fn repair_candidates(&self) -> Vec<PeerId> {
        self.membership
            .passive
            .iter()
            .map(|e| e.peer)
            .filter(|p| !self.conns.contains_key(p) && !self.is_banned(p))
            .collect()
    }

    fn request_bootstrap(&mut self) {
        let due = self
            .membership
            .last_bootstrap
            .is_none_or(|t| self.now >= t + self.config.bootstrap_backoff_ms);
        if due {
            self.membership.last_bootstrap = Some(self.now);
            self.stats.bootstraps += 1;
            self.out.push(Output::RequestBootstrap);
        }
    }

    /// A routed NEIGHBOR query from `source`: answer whether we have room.
    pub(super) fn on_neighbor_query(&mut self, source: PeerId, back: Vec<PeerId>) {
        let room = self.membership.active.len() < self.config.active_view_capacity
            && !self.membership.is_active(&source)
            && !self.is_banned(&source);
        let mut full = vec![self.me];
        full.extend(back);
        self.send_routed(full, Routed::NeighborAnswer { room });
    }

    /// The answer to one of our NEIGHBOR queries.
    pub(super) fn on_neighbor_answer(&mut self, source: PeerId, room: bool, back: Vec<PeerId>) {
        if self.membership.queries.remove(&source).is_none() {
            return;
        }
        let cap = self.config.active_view_capacity;
        let busy = self.membership.active.len() + self.pending_neighbor_attempts() >= cap;
        if room && !busy {
            // The path the answer came by is known to work: use it for the signals.
            self.add_passive(source, back);
            self.connect(source, Intent::Neighbor(Priority::Low));
        } else if !room && !busy && !self.server_up && self.short_of_neighbours() {
            // Down to one neighbour with no server to fall back on: losing it would leave
            // nobody to carry our signals, so insist (the peer evicts one of its own, who
            // has others). With the server up, isolation is repaired by a re-bootstrap.
            self.membership.queries.clear();
            self.add_passive(source, back);
            self.connect(source, Intent::Neighbor(Priority::High));
        } else if self.membership.queries.is_empty() && self.pending_neighbor_attempts() == 0 {
            self.stats.refused += 1;
            self.note_refusal();
        }
    }

    /// Forgets queries nobody answered (a broken route); the next repair asks others.
    pub(super) fn expire_queries(&mut self) {
        let deadline = QUERY_TIMEOUT_MS;
        let now = self.now;
        let expired: Vec<PeerId> = self
            .membership
            .queries
            .iter()
            .filter(|(_, at)| now >= **at + deadline)
            .map(|(p, _)| *p)
            .collect();
        // A lost query means a broken route, not a refusal: no backoff, the next
        // repair asks others.
        for p in &expired {
            self.membership.queries.remove(p);
            self.membership.clear_route(p);
        }
        let conns = &self.conns;
        self.membership
            .promoting
            .retain(|p, at| now < *at + deadline && conns.get(p) == Some(&Conn::Active));
    }

    /// Closes attempts and half-open connections past their deadline.
    pub(super) fn check_handshake_timeouts(&mut self) {
        let deadline = self.config.handshake_timeout_ms;
        let now = self.now;
        let expired: Vec<(PeerId, Conn)> = self
            .conns
            .iter()
            .filter(|(_, c)| match c {
                Conn::Connecting { since, .. }
                | Conn::AwaitingHello { since }
                | Conn::AwaitingReply { since } => now >= since + deadline,
                Conn::Active => false,
            })
            .map(|(p, c)| (*p, *c))
            .collect();
        for (peer, _) in expired {
            self.out.push(Output::Disconnect { peer });
            self.on_connection_down(peer);
        }
        // In a room with a secret: connections whose peer never sent its proof.
        let unproven: Vec<PeerId> = self
            .unproven
            .iter()
            .filter(|(_, at)| now >= *at + deadline)
            .map(|(p, _)| *p)
            .collect();
        for peer in unproven {
            self.unproven.remove(&peer);
            if !self.conns.contains_key(&peer) {
                self.out.push(Output::Disconnect { peer });
            }
        }
    }

    /// Sends a shuffle walk (once per membership round).
    pub(super) fn shuffle(&mut self) {
        if !self.joined || self.membership.active.is_empty() {
            return;
        }
        let i = self.rand_below(self.membership.active.len());
        let target = self.membership.active[i];
        let mut entries = Vec::new();
        let mut active = self.membership.active.clone();
        active.retain(|p| *p != target);
        for p in self.sample(active, self.config.shuffle_active) {
            entries.push(PeerEntry {
                peer: p,
                route: vec![p],
            });
        }
        entries.extend(self.passive_sample(self.config.shuffle_passive));
        let ttl = self.config.shuffle_ttl;
        let me = self.me;
        self.send(
            target,
            &Message::Shuffle {
                ttl,
                path: vec![me],
                entries,
            },
        );
    }

    pub(super) fn on_shuffle(
        &mut self,
        from: PeerId,
        ttl: u8,
        mut path: Vec<PeerId>,
        entries: Vec<PeerEntry>,
    ) {
        if path.last() != Some(&from) {
            return self.punish(from, super::Misbehaviour::Protocol("shuffle path"));
        }
        if path.first() == Some(&self.me) {
            return; // Our own walk came back; nothing to learn.
        }
        if ttl > 0 && self.membership.active.len() > 1 && path.len() < MAX_PATH_LEN {
            if let Some(next) = self.random_active_except(&[from], &path) {
                path.push(self.me);
                self.send(
                    next,
                    &Message::Shuffle {
                        ttl: ttl - 1,
                        path,
                        entries,
                    },
                );
                return;
            }
        }
        // The walk ends here: answer along the reverse path, then merge.
        let reply = self.passive_sample(entries.len() + 1);
        let back: Vec<PeerId> = path.iter().rev().copied().collect();
        let mut full = vec![self.me];
        full.extend_from_slice(&back);
        self.send_routed(full, Routed::ShuffleReply { entries: reply });
        self.merge_entries(&back, entries);
    }

    /// Merges shuffle entries sent by the last peer of `route_to_sender` into the passive
    /// view, composing routes: ours to the sender, then the sender's to the entry.
    pub(super) fn merge_entries(&mut self, route_to_sender: &[PeerId], entries: Vec<PeerEntry>) {
        if let Some(sender) = route_to_sender.last() {
            self.add_passive(*sender, route_to_sender.to_vec());
        }
        for e in entries {
            let route = if e.route.last() == Some(&e.peer)
                && route_to_sender.len() + e.route.len() <= self.config.max_route_len
            {
                let mut r = route_to_sender.to_vec();
                r.extend_from_slice(&e.route);
                r
            } else {
                Vec::new()
            };
            self.add_passive(e.peer, route);
        }
    }

    /// Up to `n` random passive entries, with our routes to them.
    fn passive_sample(&mut self, n: usize) -> Vec<PeerEntry> {
        let idx: Vec<usize> = (0..self.membership.passive.len()).collect();
        self.sample(idx, n)
            .into_iter()
            .map(|i| {
                let e = &self.membership.passive[i];
                PeerEntry {
                    peer: e.peer,
                    route: e.route.clone(),
                }
            })
            .collect()
    }

    /// `n` distinct random items of `items`.
    pub(super) fn sample<T: Copy>(&mut self, mut items: Vec<T>, n: usize) -> Vec<T> {
        let n = n.min(items.len());
        for i in 0..n {
            let j = i + self.rand_below(items.len() - i);
            items.swap(i, j);
        }
        items.truncate(n);
        items
    }

    /// A random active neighbour not in `except`, preferring one not in `avoid`.
    pub(super) fn random_active_except(
        &mut self,
        except: &[PeerId],
        avoid: &[PeerId],
    ) -> Option<PeerId> {
        let ok: Vec<PeerId> = self
            .membership
            .active
            .iter()
            .copied()
            .filter(|p| !except.contains(p))
            .collect();
        let fresh: Vec<PeerId> = ok.iter().copied().filter(|p| !avoid.contains(p)).collect();
        let pool = if fresh.is_empty() { ok } else { fresh };
        if pool.is_empty() {
            None
        } else {
            Some(pool[self.rand_below(pool.len())])
        }
    }
}
