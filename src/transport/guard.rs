//! What keeps a node's handshakes and signals bounded, whoever sends it offers: pure
//! decisions the node driver (`node/driver.rs`) consults, kept here, outside the node, so
//! they are unit-tested natively without a browser or the native transport.
//!
//! - **Unsolicited handshakes.** An offer from a peer this node did not ask for and does
//!   not know (no link with it before, not in its views) costs an `RTCPeerConnection`, an
//!   answer and a few candidates. At most [`MAX_UNSOLICITED_HANDSHAKES`] such handshakes
//!   run at once; when all are taken, the oldest is given up if it is older than
//!   [`UNSOLICITED_EVICT_AFTER_MS`] (an honest one is done by then), else the offer is
//!   dropped before anything is made. Each is closed if it is not open after the
//!   overlay's handshake timeout, since nothing else would ever close it.
//! - **The page's connections.** Chromium refuses the 501st `RTCPeerConnection` of a page
//!   while 500 are alive *or closed but not yet garbage-collected*. Before making one, the
//!   driver reads the page's count of those (all nodes of the page together): unknown
//!   peers get none once [`PAGE_CONNECTION_LIMIT`] − [`RESERVED_FOR_OWN`] are in use, so
//!   the rest stays for this page's own repairs and for peers it knows; nobody gets one
//!   within [`LIMIT_MARGIN`] of the limit.
//! - **Signals to the server** are paced by a token bucket below the server's default
//!   budget (a burst of 50 messages, then 20 per second, pings included; `too-many-errors`
//!   after 10 refusals): [`SIGNAL_BURST`], then [`SIGNAL_RATE_PER_S`] per second. What
//!   cannot go yet waits, at most [`MAX_QUEUED_SIGNALS`]; signals of attempts that ended
//!   are dropped, and when the queue is full a candidate goes first (one of several paths
//!   to try; an answer is the whole handshake).
//! - **Freshness of offers.** Attempt ids grow with the sender's wall clock
//!   ([`crate::signal::attempt_id`]), so [`offer_verdict`] ignores an offer that is not
//!   newer than what this node holds from that peer: a replay cannot reset a link.

// Only the node uses it, which a native build without the `native` feature leaves out.
#![cfg_attr(not(any(target_arch = "wasm32", feature = "native")), allow(dead_code))]

use std::collections::VecDeque;

use crate::collections::BTreeMap;
use crate::id::PeerId;
use crate::signal::SignedEnvelope;

/// Chromium's limit on a page's `RTCPeerConnection`s alive or not yet collected.
pub(crate) const PAGE_CONNECTION_LIMIT: u32 = 500;
/// Connections of the page kept for its own repairs and for peers it knows: offers from
/// unknown peers get none once the page holds `PAGE_CONNECTION_LIMIT - RESERVED_FOR_OWN`.
pub(crate) const RESERVED_FOR_OWN: u32 = 100;
/// Room left under the limit for anything else on the page that makes connections.
pub(crate) const LIMIT_MARGIN: u32 = 4;
/// Most handshakes at once that unknown peers started.
pub(crate) const MAX_UNSOLICITED_HANDSHAKES: usize = 8;
/// Age after which an unsolicited handshake not yet open may be given up for a new one.
pub(crate) const UNSOLICITED_EVICT_AFTER_MS: u64 = 2_000;
/// Signals sent to the server in a burst (the server's default allows 50).
pub(crate) const SIGNAL_BURST: f64 = 40.0;
/// Signals sent to the server per second, sustained (the server's default allows 20).
pub(crate) const SIGNAL_RATE_PER_S: f64 = 15.0;
/// Signals waiting for the pace; beyond, the least valuable is dropped.
pub(crate) const MAX_QUEUED_SIGNALS: usize = 256;
/// Peers whose latest attempt id (and whether we had a link) a node remembers.
pub(crate) const REMEMBERED_PEERS: usize = 1024;

/// Who may have a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This node asked for it (the overlay's `Connect`), or the peer is one it knows.
    Own,
    /// An offer from a peer it does not know.
    Unsolicited,
}

/// Whether the page may make one more connection for `claim`, holding `alive` (created
/// and not yet garbage-collected, all nodes of the page).
pub(crate) fn page_allows(alive: u32, claim: Claim) -> bool {
    let cap = match claim {
        Claim::Own => PAGE_CONNECTION_LIMIT - LIMIT_MARGIN,
        Claim::Unsolicited => PAGE_CONNECTION_LIMIT - RESERVED_FOR_OWN,
    };
    alive < cap
}

/// What to do with an offer from an unknown peer, given when each unsolicited handshake
/// still under way started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Take it on.
    Yes,
    /// Give up the handshake that started at `since` (the oldest), then take it on.
    Evict {
        /// The start of the handshake to give up.
        since: u64,
    },
    /// Drop the offer; nothing is made.
    No,
}

/// Admission of an unsolicited offer at `now`.
pub(crate) fn admit_unsolicited(pending_since: impl Iterator<Item = u64>, now: u64) -> Admit {
    let mut count = 0;
    let mut oldest = u64::MAX;
    for since in pending_since {
        count += 1;
        oldest = oldest.min(since);
    }
    if count < MAX_UNSOLICITED_HANDSHAKES {
        Admit::Yes
    } else if now.saturating_sub(oldest) >= UNSOLICITED_EVICT_AFTER_MS {
        Admit::Evict { since: oldest }
    } else {
        Admit::No
    }
}

/// What to do with an offer from a peer, given the connection held with it (open or not,
/// and the latest attempt id it used on it) and the latest attempt id remembered from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfferVerdict {
    /// Hand it to the connection (made for it if there is none).
    Apply,
    /// The peer started over (a reload, or a new attempt): replace the connection.
    Replace,
    /// Not newer than what we hold from this peer: a replay or a leftover.
    Ignore,
}

/// Decides on an offer for `attempt`. Attempt ids of one peer grow with its clock, also
/// across restarts; ids of different peers are never compared.
pub(crate) fn offer_verdict(
    live: Option<(bool, Option<u64>)>,
    remembered: Option<u64>,
    attempt: u64,
) -> OfferVerdict {
    let held = live.and_then(|(_, a)| a);
    let newest = held.max(remembered);
    if newest.is_some_and(|n| attempt < n) {
        return OfferVerdict::Ignore;
    }
    match live {
        // The transport never renegotiates an open connection: the same attempt's offer
        // again is a replay.
        Some((true, Some(a))) if attempt == a => OfferVerdict::Ignore,
        // A newer attempt: the peer restarted, or gave up the attempt under way.
        Some((_, Some(a))) if attempt > a => OfferVerdict::Replace,
        Some(_) => OfferVerdict::Apply,
        // The attempt of a connection that has ended.
        None if remembered == Some(attempt) => OfferVerdict::Ignore,
        None => OfferVerdict::Apply,
    }
}

/// Whether a non-offer signal (answer, candidate) for `attempt` is a leftover of an
/// earlier attempt of the peer than the one the connection holds.
pub(crate) fn is_leftover(held: Option<u64>, attempt: u64) -> bool {
    held.is_some_and(|h| attempt < h)
}

/// What a node remembers of recent peers, at most [`REMEMBERED_PEERS`] (the first
/// remembered are forgotten first).
#[derive(Default)]
pub(crate) struct Memory {
    /// The latest attempt id each used, and whether we had an open link with it.
    peers: BTreeMap<PeerId, (u64, bool)>,
    order: VecDeque<PeerId>,
}

impl Memory {
    /// The latest attempt id remembered from `peer`.
    pub(crate) fn attempt(&self, peer: &PeerId) -> Option<u64> {
        self.peers.get(peer).map(|(a, _)| *a)
    }

    /// Whether we had an open link with `peer`.
    pub(crate) fn linked(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|(_, l)| *l)
    }

    /// Notes a signal of `attempt` from `peer` that was taken on, and whether a link with
    /// it opened.
    pub(crate) fn note(&mut self, peer: PeerId, attempt: u64, linked: bool) {
        if let Some((a, l)) = self.peers.get_mut(&peer) {
            *a = (*a).max(attempt);
            *l |= linked;
            return;
        }
        if self.order.len() >= REMEMBERED_PEERS {
            if let Some(old) = self.order.pop_front() {
                self.peers.remove(&old);
            }
        }
        self.peers.insert(peer, (attempt, linked));
        self.order.push_back(peer);
    }
}

/// One signal waiting for the pace.
struct Queued {
    envelope: SignedEnvelope,
    candidate: bool,
}

/// The pace of a node's signals to the server: a token bucket and a bounded queue.
pub(crate) struct Pacer {
    tokens: f64,
    last_ms: u64,
    queue: VecDeque<Queued>,
    /// A wake-up to send what waits is scheduled.
    pub(crate) armed: bool,
    /// Signals dropped: the queue was full, or their attempt ended while they waited.
    pub(crate) dropped: u64,
}

impl Pacer {
    /// A full bucket at `now`.
    pub(crate) fn new(now: u64) -> Self {
        Pacer {
            tokens: SIGNAL_BURST,
            last_ms: now,
            queue: VecDeque::new(),
            armed: false,
            dropped: 0,
        }
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now);
        self.tokens = (self.tokens + elapsed * SIGNAL_RATE_PER_S).min(SIGNAL_BURST);
    }

    /// Queues `envelope` (a candidate if `candidate`); when the queue is full, first drops
    /// what `live` says is no longer wanted, then the oldest candidate, else the oldest.
    pub(crate) fn push(
        &mut self,
        envelope: SignedEnvelope,
        candidate: bool,
        live: impl Fn(&SignedEnvelope, bool) -> bool,
    ) {
        if self.queue.len() >= MAX_QUEUED_SIGNALS {
            let before = self.queue.len();
            self.queue.retain(|q| live(&q.envelope, q.candidate));
            self.dropped += (before - self.queue.len()) as u64;
        }
        if self.queue.len() >= MAX_QUEUED_SIGNALS {
            let i = self.queue.iter().position(|q| q.candidate).unwrap_or(0);
            self.queue.remove(i);
            self.dropped += 1;
        }
        self.queue.push_back(Queued {
            envelope,
            candidate,
        });
    }

    /// The next signal that may go now and is still wanted (`live`), taking its token;
    /// `Err(ms)` when one waits and a token comes in `ms`; `Err(0)` when none waits.
    pub(crate) fn next(
        &mut self,
        now: u64,
        live: impl Fn(&SignedEnvelope, bool) -> bool,
    ) -> Result<SignedEnvelope, u32> {
        self.refill(now);
        while let Some(q) = self.queue.front() {
            if !live(&q.envelope, q.candidate) {
                self.queue.pop_front();
                self.dropped += 1;
                continue;
            }
            if self.tokens < 1.0 {
                let ms = ((1.0 - self.tokens) / SIGNAL_RATE_PER_S * 1000.0).ceil();
                return Err((ms as u32).max(1));
            }
            self.tokens -= 1.0;
            return Ok(self.queue.pop_front().expect("front exists").envelope);
        }
        Err(0)
    }

    /// Signals waiting.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Identity;
    use crate::signal::{attempt_id, SignalPayload};

    fn peer(n: u8) -> PeerId {
        Identity::from_secret_bytes([n; 32]).peer_id()
    }

    #[test]
    fn a_replayed_offer_never_resets_a_live_link_and_a_restarted_peer_replaces_it() {
        let t = 1_780_000_000_000; // a wall clock in ms
        let live = attempt_id(t, 0xfffff);
        let open = Some((true, Some(live)));
        // Replays: the live attempt itself, and any earlier one (however random its bits).
        assert_eq!(offer_verdict(open, None, live), OfferVerdict::Ignore);
        let earlier = attempt_id(t - 60_000, 0xfffff);
        assert_eq!(offer_verdict(open, None, earlier), OfferVerdict::Ignore);
        assert_eq!(offer_verdict(open, None, 1), OfferVerdict::Ignore);
        // A reload 1 ms later, with the smallest random bits, is newer: it replaces.
        let restarted = attempt_id(t + 1, 0);
        assert_eq!(offer_verdict(open, None, restarted), OfferVerdict::Replace);
        // While a handshake is under way its offers are applied, old ones ignored, and a
        // newer attempt (the peer started over) replaces it.
        let opening = Some((false, Some(live)));
        assert_eq!(offer_verdict(opening, None, live), OfferVerdict::Apply);
        assert_eq!(offer_verdict(opening, None, earlier), OfferVerdict::Ignore);
        assert_eq!(
            offer_verdict(opening, None, restarted),
            OfferVerdict::Replace
        );
        assert_eq!(
            offer_verdict(Some((false, None)), None, 1),
            OfferVerdict::Apply
        );
        // With no connection: a finished attempt's offer is ignored, a new one applied.
        assert_eq!(offer_verdict(None, Some(live), live), OfferVerdict::Ignore);
        assert_eq!(
            offer_verdict(None, Some(live), earlier),
            OfferVerdict::Ignore
        );
        assert_eq!(
            offer_verdict(None, Some(live), restarted),
            OfferVerdict::Apply
        );
        assert_eq!(offer_verdict(None, None, 1), OfferVerdict::Apply);
        // Leftover answers and candidates of an earlier attempt.
        assert!(is_leftover(Some(live), earlier));
        assert!(!is_leftover(Some(live), live));
        assert!(!is_leftover(None, earlier));
    }

    #[test]
    fn unsolicited_handshakes_are_bounded_and_a_stale_one_makes_room() {
        let now = 10_000;
        let fresh = [now - 100; MAX_UNSOLICITED_HANDSHAKES - 1];
        assert_eq!(admit_unsolicited(fresh.iter().copied(), now), Admit::Yes);
        let full = [now - 100; MAX_UNSOLICITED_HANDSHAKES];
        assert_eq!(admit_unsolicited(full.iter().copied(), now), Admit::No);
        let mut aged = full;
        aged[3] = now - UNSOLICITED_EVICT_AFTER_MS;
        assert_eq!(
            admit_unsolicited(aged.iter().copied(), now),
            Admit::Evict {
                since: now - UNSOLICITED_EVICT_AFTER_MS
            }
        );
    }

    #[test]
    fn the_page_keeps_connections_for_its_own_repairs() {
        let unknown_cap = PAGE_CONNECTION_LIMIT - RESERVED_FOR_OWN;
        assert!(page_allows(unknown_cap - 1, Claim::Unsolicited));
        assert!(!page_allows(unknown_cap, Claim::Unsolicited));
        assert!(page_allows(unknown_cap, Claim::Own));
        assert!(page_allows(
            PAGE_CONNECTION_LIMIT - LIMIT_MARGIN - 1,
            Claim::Own
        ));
        assert!(!page_allows(
            PAGE_CONNECTION_LIMIT - LIMIT_MARGIN,
            Claim::Own
        ));
    }

    fn envelope(to: u8, attempt: u64) -> SignedEnvelope {
        let payload = SignalPayload::Answer { sdp: "v=0".into() };
        SignedEnvelope::seal(
            &Identity::from_secret_bytes([9; 32]),
            peer(to),
            attempt,
            &payload,
        )
    }

    #[test]
    fn signals_are_paced_below_the_servers_budget() {
        // The server's defaults: a burst of 50, then 20 per second.
        let (server_burst, server_rate) = (50.0, 20.0);
        let mut p = Pacer::new(0);
        let all = |_: &SignedEnvelope, _: bool| true;
        for i in 0..1_000 {
            p.push(envelope(1, i), false, all);
        }
        assert_eq!(p.queued(), MAX_QUEUED_SIGNALS, "the queue is bounded");
        // Drain for 10 s, as the driver's wake-ups would, and check the server's bucket
        // never runs dry.
        let (mut now, mut sent, mut server) = (0u64, 0, server_burst);
        let mut last = 0u64;
        while now <= 10_000 {
            match p.next(now, all) {
                Ok(_) => {
                    server =
                        (server + (now - last) as f64 / 1000.0 * server_rate).min(server_burst);
                    last = now;
                    assert!(
                        server >= 1.0,
                        "the server would refuse signal {sent} at {now} ms"
                    );
                    server -= 1.0;
                    sent += 1;
                }
                Err(0) => break,
                Err(ms) => now += u64::from(ms),
            }
        }
        assert!(sent >= 40 + 15 * 9, "sent {sent} in 10 s");
        assert!(sent <= 40 + 15 * 10 + 1, "sent {sent} in 10 s");
    }

    #[test]
    fn a_full_signal_queue_drops_ended_attempts_then_candidates_first() {
        let mut p = Pacer::new(0);
        let all = |_: &SignedEnvelope, _: bool| true;
        p.push(envelope(1, 1), false, all);
        p.push(envelope(2, 1), true, all);
        for i in 2..MAX_QUEUED_SIGNALS as u64 {
            p.push(envelope(3, i), false, all);
        }
        // Full: the candidate goes, the answers stay.
        p.push(envelope(4, 1), false, all);
        assert_eq!(p.queued(), MAX_QUEUED_SIGNALS);
        assert_eq!(p.dropped, 1);
        // Full again: what is no longer wanted goes first.
        p.push(envelope(5, 1), false, |e: &SignedEnvelope, _| {
            e.to != peer(3)
        });
        assert_eq!(p.queued(), 3);
        let ended = |e: &SignedEnvelope, _: bool| e.to != peer(1);
        let first = p.next(0, ended).expect("a token");
        assert_eq!(
            first.to,
            peer(4),
            "a signal of an ended attempt is not sent"
        );
    }

    #[test]
    fn memory_is_bounded_and_keeps_the_latest_attempt() {
        let mut m = Memory::default();
        m.note(peer(1), 5, false);
        m.note(peer(1), 3, true);
        assert_eq!(m.attempt(&peer(1)), Some(5));
        assert!(m.linked(&peer(1)));
        for i in 0..REMEMBERED_PEERS as u64 {
            let p = Identity::from_secret_bytes({
                let mut s = [7u8; 32];
                s[..8].copy_from_slice(&i.to_le_bytes());
                s
            })
            .peer_id();
            m.note(p, i, false);
        }
        assert_eq!(
            m.attempt(&peer(1)),
            None,
            "the first remembered is forgotten first"
        );
        assert_eq!(m.order.len(), REMEMBERED_PEERS);
    }
}
