//! Overlay routing: carrying a frame to a peer we are not connected to.
//!
//! Its main job is to carry WebRTC signals (a [`SignedEnvelope`] with an offer, answer or
//! ICE candidate) so that a peer can open a connection to a passive-view peer **with the
//! signaling server gone**. It also carries shuffle replies back along their walk.
//!
//! # Why source routes
//! The candidates were a bounded flood (TTL), a random walk, breadcrumbs left at every
//! hop, or a source route. A passive peer can be anywhere in a 10,000-peer network, so a
//! flood must reach most of the network (thousands of frames per ICE candidate) and a
//! random walk rarely finds it. But every passive entry was *learned along a path*: a
//! FORWARD_JOIN walk (which ends next to the newcomer's contact, a direct neighbour of the
//! newcomer) or a shuffle walk (which starts at the peer that sent the entries). So each
//! entry keeps the hops that led to it ([`super::membership`]), composed when entries are
//! passed on, capped at [`super::Config::max_route_len`]. The frame carries the whole
//! path and an index; each relay checks that the next hop is one of its open links (active
//! neighbours or DHT links) and forwards. Relays keep no state, a frame cannot loop, and
//! the recipient answers by reversing the path it arrived on, which is known to work at
//! that moment.
//!
//! Before use a route is *shortened*: we cut it at the last hop that is one of our own
//! active neighbours (often the target itself, or the target's neighbour), so most routes
//! are one to three hops. A route breaks when a hop has left; the relay that notices sends
//! `Unreachable` back to the source, which re-sends its envelopes through the server if
//! it has one, or else gives up on that peer and tries another passive entry. In the
//! simulator, with HyParView's stable active views, routes learned within the last few
//! shuffle rounds almost always work (see `docs/BENCHMARKS.md`).
//!
//! Relays cannot forge or alter a signal: the envelope is signed end to end and the
//! recipient verifies it (`SignedEnvelope::open`). A relay can drop it, which costs the
//! sender one handshake timeout.

use crate::collections::BTreeMap;

use super::{Conn, Event, Misbehaviour, Output, Overlay, OverlayError, SignalPath};
use crate::id::PeerId;
use crate::signal::SignedEnvelope;
use crate::wire::{Message, Routed};

/// How long a signal path is remembered after its last use, in ms.
const PATH_TTL_MS: u64 = 60_000;
/// Envelopes kept per attempt so they can be re-sent via the server after `Unreachable`.
const RESEND_BUFFER: usize = 16;

/// Routing state: the signal path chosen for each peer we are setting up a connection
/// with, and the envelopes sent along overlay routes.
#[derive(Debug, Clone, Default)]
pub(super) struct Router {
    paths: BTreeMap<PeerId, (SignalPath, u64)>,
    sent: BTreeMap<PeerId, Vec<SignedEnvelope>>,
}

/// Most signal paths remembered. Every verified signal's sender gets one, and a hostile
/// server (or relays) can bring signals from any number of fresh keys: past this, the
/// least recently used path goes.
pub(super) const MAX_PATHS: usize = 4_096;

impl Router {
    pub(super) fn set_path(&mut self, peer: PeerId, path: SignalPath, now: u64) {
        if self.paths.len() >= MAX_PATHS && !self.paths.contains_key(&peer) {
            self.gc(now);
            if self.paths.len() >= MAX_PATHS {
                let oldest = self
                    .paths
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(p, _)| *p);
                if let Some(oldest) = oldest {
                    self.paths.remove(&oldest);
                    self.sent.remove(&oldest);
                }
            }
        }
        self.paths.insert(peer, (path, now));
    }

    /// The handshake with `peer` is over (up or down): envelopes need not be re-sent.
    pub(super) fn connection_settled(&mut self, peer: &PeerId) {
        self.sent.remove(peer);
    }

    #[cfg(test)]
    pub(super) fn path_count(&self) -> usize {
        self.paths.len()
    }

    pub(super) fn gc(&mut self, now: u64) {
        self.paths.retain(|_, (_, at)| now < *at + PATH_TTL_MS);
        let paths = &self.paths;
        self.sent.retain(|p, _| paths.contains_key(p));
    }
}

impl Overlay {
    /// The path for a new connection to `peer`: a usable overlay route if we have one
    /// (the server is for bootstrap only), else the server if we have a session.
    pub(super) fn path_for_new_connection(&self, peer: &PeerId) -> Option<SignalPath> {
        if let Some(route) = self
            .membership
            .passive_route(peer)
            .and_then(|r| self.shorten(r))
        {
            return Some(SignalPath::Overlay { route });
        }
        self.server_up.then_some(SignalPath::Server)
    }

    /// Cuts `route` to start at its last hop that is one of our active neighbours, or,
    /// for a peer with fewer than [`super::membership::MIN_ACTIVE`] of them, one we hold
    /// any open link to (a DHT link: relays forward over either, and such a peer may have
    /// nothing else left). `None` if no hop is linked (the route is useless from here).
    pub(super) fn shorten(&self, route: &[PeerId]) -> Option<Vec<PeerId>> {
        let start = route
            .iter()
            .rposition(|p| *p == self.me)
            .map_or(0, |i| i + 1);
        let route = &route[start..];
        let any_link = self.membership.active.len()
            < super::membership::MIN_ACTIVE.min(self.config.active_view_capacity);
        let first = route.iter().rposition(|p| {
            self.membership.is_active(p) || (any_link && self.conns.get(p) == Some(&Conn::Active))
        })?;
        Some(route[first..].to_vec())
    }

    /// Sends a routed frame along `path` (`path[0]` is us, `path[1]` a neighbour).
    pub(super) fn send_routed(&mut self, path: Vec<PeerId>, body: Routed) {
        if path.len() < 2 || path[0] != self.me {
            return;
        }
        let next = path[1];
        self.send(next, &Message::Route { path, hop: 0, body });
    }

    /// The transport produced an envelope for a connection attempt: send it on the path
    /// chosen for that peer.
    pub(super) fn on_send_signal(&mut self, envelope: SignedEnvelope) {
        if envelope.from != self.me {
            return self.event(Event::Error(OverlayError::ForeignEnvelope));
        }
        let to = envelope.to;
        let path = match self.router.paths.get_mut(&to) {
            Some((path, at)) => {
                *at = self.now;
                Some(path.clone())
            }
            None => self.path_for_new_connection(&to),
        };
        match path {
            Some(SignalPath::Overlay { route }) => {
                match self.shorten(&route) {
                    Some(route) => {
                        let mut full = vec![self.me];
                        full.extend_from_slice(&route);
                        let buf = self.router.sent.entry(to).or_default();
                        if buf.len() < RESEND_BUFFER {
                            buf.push(envelope.clone());
                        }
                        self.router
                            .set_path(to, SignalPath::Overlay { route }, self.now);
                        self.send_routed(full, Routed::Signal(envelope));
                    }
                    // The route broke since it was chosen.
                    None => self.signal_via_server(envelope),
                }
            }
            Some(SignalPath::Server) => self.signal_via_server(envelope),
            Some(SignalPath::Dht) => self.send_signal_via_dht(envelope),
            None => self.event(Event::Error(OverlayError::NoSignalPath(to))),
        }
    }

    fn signal_via_server(&mut self, envelope: SignedEnvelope) {
        let to = envelope.to;
        if self.server_up {
            self.router.set_path(to, SignalPath::Server, self.now);
            self.out.push(Output::SendViaServer { envelope });
        } else {
            self.event(Event::Error(OverlayError::NoSignalPath(to)));
        }
    }

    /// An envelope relayed by the signaling server.
    pub(super) fn on_server_signal(&mut self, envelope: SignedEnvelope) {
        match envelope.open(&self.me) {
            Ok(payload) => {
                if self.is_banned(&envelope.from) {
                    return;
                }
                self.router
                    .set_path(envelope.from, SignalPath::Server, self.now);
                self.out.push(Output::DeliverSignal { envelope, payload });
            }
            Err(e) => self.event(Event::Misbehaving {
                peer: envelope.from,
                reason: Misbehaviour::BadSignal(e),
            }),
        }
    }

    /// A routed frame from the active neighbour `from`.
    pub(super) fn on_route(&mut self, from: PeerId, path: Vec<PeerId>, hop: u8, body: Routed) {
        let h = hop as usize;
        if h + 1 >= path.len() || path[h] != from || path[h + 1] != self.me {
            return self.punish(from, Misbehaviour::Protocol("inconsistent route"));
        }
        let here = h + 1;
        if here == path.len() - 1 {
            return self.deliver_routed(path, body);
        }
        let next = path[here + 1];
        if self.conns.get(&next) == Some(&Conn::Active) {
            self.stats.relayed += 1;
            self.send(
                next,
                &Message::Route {
                    path,
                    hop: here as u8,
                    body,
                },
            );
        } else if !matches!(body, Routed::Unreachable { .. }) {
            let target = path[path.len() - 1];
            let back: Vec<PeerId> = path[..=here].iter().rev().copied().collect();
            self.send_routed(back, Routed::Unreachable { target });
        }
    }

    fn deliver_routed(&mut self, path: Vec<PeerId>, body: Routed) {
        // Our route back to the source: the path reversed, without us.
        let back: Vec<PeerId> = path[..path.len() - 1].iter().rev().copied().collect();
        let source = path[0];
        match body {
            Routed::Signal(envelope) => {
                if envelope.from != source || self.is_banned(&source) {
                    return;
                }
                match envelope.open(&self.me) {
                    Ok(payload) => {
                        self.router
                            .set_path(source, SignalPath::Overlay { route: back }, self.now);
                        self.out.push(Output::DeliverSignal { envelope, payload });
                    }
                    Err(e) => self.event(Event::Misbehaving {
                        peer: source,
                        reason: Misbehaviour::BadSignal(e),
                    }),
                }
            }
            Routed::ShuffleReply { entries } => self.merge_entries(&back, entries),
            Routed::NeighborQuery => self.on_neighbor_query(source, back),
            Routed::NeighborAnswer { room } => self.on_neighbor_answer(source, room, back),
            Routed::Unreachable { target } => self.on_unreachable(target),
        }
    }

    /// A relay could not reach `target`: fall back to the server, or give up on it.
    fn on_unreachable(&mut self, target: PeerId) {
        self.membership.clear_route(&target);
        let connecting = matches!(self.conns.get(&target), Some(Conn::Connecting { .. }));
        let Some(envelopes) = self.router.sent.remove(&target) else {
            return;
        };
        if !connecting {
            return;
        }
        if self.server_up {
            self.router.set_path(target, SignalPath::Server, self.now);
            for envelope in envelopes {
                self.out.push(Output::SendViaServer { envelope });
            }
        } else {
            self.out.push(Output::Disconnect { peer: target });
            self.on_connection_down(target);
        }
    }
}
