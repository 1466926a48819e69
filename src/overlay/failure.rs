//! Failure detection beyond "the channel closed".
//!
//! A browser tab that crashes, sleeps or loses its network does not always close its data
//! channels: the other side learns of it only when ICE consent freshness fails, which
//! takes tens of seconds. HyParView's resilience depends on noticing failures quickly, so
//! each active neighbour is watched by a small detector in the spirit of
//! [SWIM](https://www.cs.cornell.edu/projects/Quicksilver/public_pdfs/SWIM.pdf) and
//! [Lifeguard](https://arxiv.org/abs/1707.00788):
//!
//! - any frame from a neighbour proves it alive (pings piggyback on real traffic, so a busy
//!   link is never pinged);
//! - after [`Config::ping_interval_ms`](super::Config) of silence we ping it;
//! - a ping unanswered for `ping_timeout_ms` makes it **suspect**, and we keep pinging;
//! - a suspect silent for `suspicion_timeout_ms` more is declared dead: the connection is
//!   closed and HyParView repairs the active view from the passive view.
//!
//! The suspicion stage is Lifeguard's lesson: a single missed ping is usually a slow
//! peer (a busy main thread, a throttled background tab), not a dead one, and dropping a
//! neighbour costs a new RTCPeerConnection. SWIM's indirect probes (asking others to
//! ping) do not apply: nobody else is connected to our neighbour on our behalf.

use crate::collections::BTreeMap;

use super::{Message, Output, Overlay};
use crate::id::PeerId;

#[derive(Debug, Clone, Copy)]
struct Health {
    last_heard: u64,
    ping_sent: Option<u64>,
    suspect_since: Option<u64>,
}

/// Liveness of every active neighbour.
#[derive(Debug, Clone, Default)]
pub(super) struct Detector {
    peers: BTreeMap<PeerId, Health>,
    next_nonce: u64,
}

impl Detector {
    pub(super) fn add(&mut self, peer: PeerId, now: u64) {
        self.peers.insert(
            peer,
            Health {
                last_heard: now,
                ping_sent: None,
                suspect_since: None,
            },
        );
    }

    pub(super) fn remove(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    pub(super) fn heard_from(&mut self, peer: PeerId, now: u64) {
        if let Some(h) = self.peers.get_mut(&peer) {
            h.last_heard = now;
            h.ping_sent = None;
            h.suspect_since = None;
        }
    }

    /// Whether `peer` is currently suspected.
    pub(super) fn is_suspect(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|h| h.suspect_since.is_some())
    }
}

impl Overlay {
    /// Pings silent neighbours, suspects unresponsive ones, and drops dead ones.
    pub(super) fn check_liveness(&mut self) {
        let now = self.now;
        let c = &self.config;
        let (interval, timeout, suspicion) = (
            c.ping_interval_ms,
            c.ping_timeout_ms,
            c.suspicion_timeout_ms,
        );
        let mut dead = Vec::new();
        let mut ping = Vec::new();
        for (peer, h) in self.detector.peers.iter_mut() {
            if let Some(s) = h.suspect_since {
                if now >= s + suspicion {
                    dead.push(*peer);
                    continue;
                }
            }
            match h.ping_sent {
                Some(sent) if now >= sent + timeout => {
                    h.suspect_since.get_or_insert(now);
                    h.ping_sent = Some(now);
                    ping.push(*peer);
                }
                None if now >= h.last_heard + interval => {
                    h.ping_sent = Some(now);
                    ping.push(*peer);
                }
                _ => {}
            }
        }
        for peer in ping {
            self.detector.next_nonce += 1;
            let nonce = self.detector.next_nonce;
            self.send(peer, &Message::Ping { nonce });
        }
        if dead.is_empty() {
            return;
        }
        crate::collections::sort(&mut dead);
        for peer in dead {
            self.stats.declared_dead += 1;
            self.conns.remove(&peer);
            self.out.push(Output::Disconnect { peer });
            self.drop_active(peer);
        }
        self.repair();
    }
}
