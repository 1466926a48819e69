//! A picture of the whole network, assembled from what the peers say about themselves.
//!
//! No peer knows the whole overlay — that is the point of an overlay. To *show* it (the
//! demo page draws every peer and link), each node can broadcast a small
//! [`Announcement`] of its active view now and then, and every node rebuilds the graph
//! from the announcements it has heard in a [`NetworkMap`]. Entries expire, so peers that
//! crash or leave disappear from the picture without anyone saying so.
//!
//! This is opt-in (`NodeConfig::announce_topology_ms`): it costs one broadcast per peer
//! per interval, which is fine for tens of peers and wasteful for thousands.
//!
//! Announcements travel as ordinary (signed) broadcasts, tagged by the node's channel
//! byte, so their origin is authenticated by the broadcast layer. What they claim about
//! *other* peers is not checked; the map keeps an edge only when both ends announce it.
//! Everything here is pure data: no clock reads, `now` is passed in.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::id::PeerId;

/// Version of the announcement format.
pub const ANNOUNCEMENT_VERSION: u8 = 1;
/// Most active-view entries an announcement may carry.
pub const MAX_ANNOUNCED_NEIGHBORS: usize = 32;
/// Most recent deliveries an announcement may carry.
pub const MAX_ANNOUNCED_HOPS: usize = 32;
/// Announcements from one origin closer together than this are ignored.
pub const MIN_ANNOUNCE_GAP_MS: u64 = 250;

/// One hop a broadcast took: `via` handed the broadcast `(origin, seq)` to the announcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hop {
    /// Origin of the broadcast.
    pub origin: PeerId,
    /// The origin's sequence number.
    pub seq: u64,
    /// The neighbour it arrived from.
    pub via: PeerId,
}

/// What one node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// [`ANNOUNCEMENT_VERSION`].
    pub version: u8,
    /// The announcer's interval, so receivers know when to expire it.
    pub interval_ms: u32,
    /// The announcer's active view.
    pub active: Vec<PeerId>,
    /// Size of its passive view.
    pub passive: u16,
    /// Broadcasts it delivered so far.
    pub delivered: u64,
    /// Frames it sent so far.
    pub frames_sent: u64,
    /// Frames it received so far.
    pub frames_received: u64,
    /// Its most recent deliveries and where each came from (for hop traces).
    pub recent: Vec<Hop>,
}

/// Why an announcement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementError {
    /// Not decodable.
    #[error("malformed announcement: {0}")]
    Malformed(String),
    /// A version this node does not read.
    #[error("unsupported announcement version {0}")]
    Version(u8),
    /// A list over its bound.
    #[error("announcement lists {0} entries, over the limit")]
    TooMany(usize),
}

impl Announcement {
    /// Encodes the announcement (postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks an announcement from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, AnnouncementError> {
        let a: Announcement =
            postcard::from_bytes(bytes).map_err(|e| AnnouncementError::Malformed(e.to_string()))?;
        if a.version != ANNOUNCEMENT_VERSION {
            return Err(AnnouncementError::Version(a.version));
        }
        if a.active.len() > MAX_ANNOUNCED_NEIGHBORS {
            return Err(AnnouncementError::TooMany(a.active.len()));
        }
        if a.recent.len() > MAX_ANNOUNCED_HOPS {
            return Err(AnnouncementError::TooMany(a.recent.len()));
        }
        Ok(a)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    announcement: Announcement,
    heard_at: u64,
}

/// The graph of the network as the announcements describe it.
#[derive(Debug, Clone, Default)]
pub struct NetworkMap {
    entries: HashMap<PeerId, Entry>,
}

/// A link between two peers, reported by both (ids in ascending order).
pub type Edge = (PeerId, PeerId);

impl NetworkMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `from`'s announcement heard at `now`. Returns false when it came too soon
    /// after the previous one from the same origin and was ignored.
    pub fn apply(&mut self, from: PeerId, announcement: Announcement, now: u64) -> bool {
        if let Some(e) = self.entries.get(&from) {
            if now < e.heard_at + MIN_ANNOUNCE_GAP_MS {
                return false;
            }
        }
        self.entries.insert(
            from,
            Entry {
                announcement,
                heard_at: now,
            },
        );
        true
    }

    /// Forgets `peer` (it left, or we saw it fail).
    pub fn remove(&mut self, peer: &PeerId) {
        self.entries.remove(peer);
    }

    /// Drops announcements older than three of their announcer's intervals.
    pub fn expire(&mut self, now: u64) {
        self.entries.retain(|_, e| {
            let ttl = 3 * u64::from(e.announcement.interval_ms.max(500));
            now < e.heard_at + ttl
        });
    }

    /// Peers with a live announcement.
    pub fn peers(&self) -> impl Iterator<Item = (&PeerId, &Announcement)> {
        self.entries.iter().map(|(p, e)| (p, &e.announcement))
    }

    /// Links both ends of which announce each other, sorted.
    pub fn edges(&self) -> Vec<Edge> {
        let mut edges = BTreeSet::new();
        for (a, e) in &self.entries {
            for b in &e.announcement.active {
                let back = self
                    .entries
                    .get(b)
                    .is_some_and(|eb| eb.announcement.active.contains(a));
                if back {
                    edges.insert(if a < b { (*a, *b) } else { (*b, *a) });
                }
            }
        }
        edges.into_iter().collect()
    }

    /// The hops every announcer reported for broadcast `(origin, seq)`: the tree it
    /// travelled, as (from, to) pairs.
    pub fn trace(&self, origin: &PeerId, seq: u64) -> Vec<(PeerId, PeerId)> {
        let mut out: Vec<_> = self
            .entries
            .iter()
            .flat_map(|(to, e)| {
                e.announcement
                    .recent
                    .iter()
                    .filter(|h| &h.origin == origin && h.seq == seq)
                    .map(move |h| (h.via, *to))
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn ann(active: &[u8]) -> Announcement {
        Announcement {
            version: ANNOUNCEMENT_VERSION,
            interval_ms: 1_000,
            active: active.iter().map(|n| p(*n)).collect(),
            passive: 0,
            delivered: 0,
            frames_sent: 0,
            frames_received: 0,
            recent: vec![],
        }
    }

    #[test]
    fn an_edge_counts_only_when_both_ends_announce_it() {
        let mut m = NetworkMap::new();
        m.apply(p(1), ann(&[2, 3]), 0);
        m.apply(p(2), ann(&[1]), 0);
        m.apply(p(3), ann(&[]), 0);
        assert_eq!(m.edges(), vec![(p(1), p(2))]);
    }

    #[test]
    fn silent_peers_expire_from_the_map() {
        let mut m = NetworkMap::new();
        m.apply(p(1), ann(&[2]), 0);
        m.apply(p(2), ann(&[1]), 2_000);
        m.expire(3_500);
        assert_eq!(m.peers().count(), 1);
        assert!(m.edges().is_empty());
    }

    #[test]
    fn announcements_round_trip_and_garbage_is_refused() {
        let mut a = ann(&[1, 2]);
        a.recent.push(Hop {
            origin: p(1),
            seq: 4,
            via: p(2),
        });
        assert_eq!(Announcement::decode(&a.encode()), Ok(a.clone()));
        assert!(Announcement::decode(&[0xff, 0xff, 0xff]).is_err());
        a.version = 9;
        assert_eq!(
            Announcement::decode(&a.encode()),
            Err(AnnouncementError::Version(9))
        );
        let too_many = ann(&[7; 40]);
        assert!(matches!(
            Announcement::decode(&too_many.encode()),
            Err(AnnouncementError::TooMany(40))
        ));
    }

    #[test]
    fn a_flood_of_announcements_from_one_peer_is_thinned() {
        let mut m = NetworkMap::new();
        assert!(m.apply(p(1), ann(&[]), 0));
        assert!(!m.apply(p(1), ann(&[2]), 100));
        assert!(m.apply(p(1), ann(&[2]), MIN_ANNOUNCE_GAP_MS));
    }

    #[test]
    fn a_trace_lists_the_hops_of_one_broadcast() {
        let mut m = NetworkMap::new();
        let mut a = ann(&[]);
        a.recent = vec![Hop {
            origin: p(1),
            seq: 1,
            via: p(1),
        }];
        m.apply(p(2), a.clone(), 0);
        a.recent = vec![Hop {
            origin: p(1),
            seq: 1,
            via: p(2),
        }];
        m.apply(p(3), a, 0);
        assert_eq!(m.trace(&p(1), 1), vec![(p(1), p(2)), (p(2), p(3))]);
        assert!(m.trace(&p(1), 2).is_empty());
    }
}
