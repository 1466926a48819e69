//! A picture of the whole network, assembled from what the peers say about themselves.
//!
//! No peer knows the whole overlay — that is the point of an overlay. To *show* it (the
//! demo page draws every peer and link), each node can broadcast a small
//! [`Announcement`] of its active view (with the round-trip time of each link) and of its
//! DHT links now and then, and every node rebuilds the graph from the announcements it has
//! heard in a [`NetworkMap`]. Entries expire, so peers that
//! crash or leave disappear from the picture without anyone saying so.
//!
//! This is opt-in (`NodeConfig::announce_topology_ms`): it costs one broadcast per peer
//! per interval, which is fine for tens of peers and wasteful for thousands.
//!
//! Announcements travel as ordinary (signed) broadcasts, tagged by the node's channel
//! byte, so their origin is authenticated by the broadcast layer. What they claim about
//! *other* peers is not checked; the map keeps an edge only when both ends announce it.
//! Everything here is pure data: no clock reads, `now` is passed in.
//!
//! Wire format: postcard, version byte first. Version 2 added `rtt_us` and `dht` at the
//! end; a version-1 announcement (from an older node) still decodes, with no RTTs and no
//! DHT links. Older nodes refuse version 2 cleanly (`bad-announcement`, unsupported
//! version) and simply do not draw the newer peers' links.
//!
//! **Hops are sent once.** `recent` (the broadcasts the announcer delivered and the
//! neighbour each came from: what [`NetworkMap::trace`] draws a broadcast's path with)
//! lists only the deliveries since the announcer's previous announcement, and the map
//! keeps the last [`MAX_KEPT_HOPS`] of every announcer. A node that sent its last 32
//! hops every time spent 2.1 KB of a 2.3 KB announcement on them, over and over; now a
//! peer with five neighbours announces ~260 bytes (+32 per DHT link) plus ~66 per
//! broadcast delivered since its previous announcement (the test
//! `an_announcement_with_one_new_hop_is_a_few_hundred_bytes_not_kilobytes` measures it).
//! The layout did not change, so this is still version 2: the map drops hops it
//! already holds, which keeps an older node's full list (re-sent every time) sane, and
//! an older node reading ours traces only the latest interval's broadcasts.

use crate::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::id::PeerId;

/// Version of the announcement format this node writes.
pub const ANNOUNCEMENT_VERSION: u8 = 2;
/// The previous version, still read: no RTTs, no DHT links.
pub const ANNOUNCEMENT_VERSION_1: u8 = 1;
/// Most active-view entries an announcement may carry.
pub const MAX_ANNOUNCED_NEIGHBORS: usize = 32;
/// Most DHT links an announcement may carry.
pub const MAX_ANNOUNCED_DHT_LINKS: usize = 32;
/// Most deliveries an announcement may carry (a node sends the ones since its previous
/// announcement, the latest of them if there were more).
pub const MAX_ANNOUNCED_HOPS: usize = 32;
/// Hops the map keeps per announcer, gathered over its announcements.
pub const MAX_KEPT_HOPS: usize = 64;
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
    /// Its deliveries since its previous announcement and where each came from (for hop
    /// traces; at most [`MAX_ANNOUNCED_HOPS`], the latest ones).
    pub recent: Vec<Hop>,
    /// Round-trip time to each peer of `active`, in the same order, in microseconds;
    /// `None` where not measured yet. Exactly as long as `active`. (Version 2.)
    pub rtt_us: Vec<Option<u32>>,
    /// Its DHT links: connections kept for routing, not in the active view. (Version 2.)
    pub dht: Vec<PeerId>,
}

/// Version 1 of [`Announcement`], as older nodes send it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct AnnouncementV1 {
    version: u8,
    interval_ms: u32,
    active: Vec<PeerId>,
    passive: u16,
    delivered: u64,
    frames_sent: u64,
    frames_received: u64,
    recent: Vec<Hop>,
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

    /// Decodes and checks an announcement from untrusted bytes (version 2, or version 1
    /// from an older node: then without RTTs and DHT links).
    pub fn decode(bytes: &[u8]) -> Result<Self, AnnouncementError> {
        let malformed = |e: postcard::Error| {
            AnnouncementError::Malformed(crate::wire::postcard_reason(&e).into())
        };
        // postcard writes a u8 as one raw byte: the version comes first.
        let a = match bytes.first().copied() {
            None => return Err(AnnouncementError::Malformed("empty".into())),
            Some(ANNOUNCEMENT_VERSION) => {
                postcard::from_bytes::<Announcement>(bytes).map_err(malformed)?
            }
            Some(ANNOUNCEMENT_VERSION_1) => {
                let v1: AnnouncementV1 = postcard::from_bytes(bytes).map_err(malformed)?;
                Announcement {
                    version: v1.version,
                    interval_ms: v1.interval_ms,
                    rtt_us: vec![None; v1.active.len().min(MAX_ANNOUNCED_NEIGHBORS)],
                    active: v1.active,
                    passive: v1.passive,
                    delivered: v1.delivered,
                    frames_sent: v1.frames_sent,
                    frames_received: v1.frames_received,
                    recent: v1.recent,
                    dht: Vec::new(),
                }
            }
            Some(other) => return Err(AnnouncementError::Version(other)),
        };
        let limits = [
            (a.active.len(), MAX_ANNOUNCED_NEIGHBORS),
            (a.recent.len(), MAX_ANNOUNCED_HOPS),
            (a.dht.len(), MAX_ANNOUNCED_DHT_LINKS),
        ];
        if let Some((len, _)) = limits.iter().find(|(len, max)| len > max) {
            return Err(AnnouncementError::TooMany(*len));
        }
        if a.rtt_us.len() != a.active.len() {
            return Err(AnnouncementError::Malformed(format!(
                "{} round-trip times for {} neighbours",
                a.rtt_us.len(),
                a.active.len()
            )));
        }
        Ok(a)
    }

    /// The round-trip time it announced to `peer`, in microseconds.
    pub fn rtt_to(&self, peer: &PeerId) -> Option<u32> {
        let i = self.active.iter().position(|p| p == peer)?;
        self.rtt_us.get(i).copied().flatten()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    announcement: Announcement,
    heard_at: u64,
    /// The hops of its announcements so far, oldest first, at most [`MAX_KEPT_HOPS`].
    hops: Vec<Hop>,
}

impl Entry {
    /// Adds hops not held yet (one delivery per broadcast: `(origin, seq)` is the key),
    /// dropping the oldest beyond [`MAX_KEPT_HOPS`].
    fn keep_hops(&mut self, hops: &[Hop]) {
        for h in hops {
            if !self
                .hops
                .iter()
                .any(|k| k.origin == h.origin && k.seq == h.seq)
            {
                self.hops.push(*h);
            }
        }
        let extra = self.hops.len().saturating_sub(MAX_KEPT_HOPS);
        self.hops.drain(..extra);
    }
}

/// The graph of the network as the announcements describe it.
#[derive(Debug, Clone, Default)]
pub struct NetworkMap {
    entries: BTreeMap<PeerId, Entry>,
}

/// A link between two peers, reported by both (ids in ascending order).
pub type Edge = (PeerId, PeerId);

impl NetworkMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `from`'s announcement heard at `now`. Returns false when it came too soon
    /// after the previous one from the same origin and was ignored (its hops, which are
    /// sent only once, are kept all the same).
    pub fn apply(&mut self, from: PeerId, announcement: Announcement, now: u64) -> bool {
        if let Some(e) = self.entries.get_mut(&from) {
            e.keep_hops(&announcement.recent);
            if now < e.heard_at + MIN_ANNOUNCE_GAP_MS {
                return false;
            }
            e.announcement = announcement;
            e.heard_at = now;
            return true;
        }
        let mut e = Entry {
            announcement,
            heard_at: now,
            hops: Vec::new(),
        };
        e.keep_hops(&e.announcement.recent.clone());
        self.entries.insert(from, e);
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

    /// Active-view links both ends of which announce each other, sorted.
    pub fn edges(&self) -> Vec<Edge> {
        self.mutual(|a| &a.active)
    }

    /// DHT links both ends of which announce each other, sorted.
    pub fn dht_edges(&self) -> Vec<Edge> {
        self.mutual(|a| &a.dht)
    }

    fn mutual(&self, list: impl Fn(&Announcement) -> &Vec<PeerId>) -> Vec<Edge> {
        let mut edges = BTreeSet::new();
        for (a, e) in &self.entries {
            for b in list(&e.announcement) {
                let back = self
                    .entries
                    .get(b)
                    .is_some_and(|eb| list(&eb.announcement).contains(a));
                if back {
                    edges.insert(if a < b { (*a, *b) } else { (*b, *a) });
                }
            }
        }
        edges.into_iter().collect()
    }

    /// The round-trip time of the link `a`–`b` in microseconds, as `a` announced it or,
    /// failing that, `b`.
    pub fn rtt_us(&self, a: &PeerId, b: &PeerId) -> Option<u32> {
        let said = |x: &PeerId, y: &PeerId| self.entries.get(x)?.announcement.rtt_to(y);
        said(a, b).or_else(|| said(b, a))
    }

    /// The hops every announcer reported for broadcast `(origin, seq)`: the tree it
    /// travelled, as (from, to) pairs.
    pub fn trace(&self, origin: &PeerId, seq: u64) -> Vec<(PeerId, PeerId)> {
        let mut out: Vec<_> = self
            .entries
            .iter()
            .flat_map(|(to, e)| {
                e.hops
                    .iter()
                    .filter(|h| &h.origin == origin && h.seq == seq)
                    .map(move |h| (h.via, *to))
            })
            .collect();
        crate::collections::sort(&mut out);
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
            rtt_us: vec![None; active.len()],
            dht: vec![],
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
    fn announcements_carry_link_rtts_and_dht_links_at_a_few_bytes_each() {
        let mut a = ann(&[2, 3, 4, 5, 6]);
        let plain = a.encode().len();
        a.rtt_us = vec![Some(850), Some(12_500), None, Some(250_000), Some(3)];
        a.dht = vec![p(7), p(8)];
        let bytes = a.encode();
        assert_eq!(Announcement::decode(&bytes), Ok(a.clone()));
        // Five RTTs (varints of at most 4 bytes here) and two 32-byte ids.
        assert!(
            bytes.len() <= plain + 5 * 4 + 2 * 32,
            "{} bytes",
            bytes.len()
        );
        assert_eq!(a.rtt_to(&p(3)), Some(12_500));
        assert_eq!(a.rtt_to(&p(4)), None);
        assert_eq!(a.rtt_to(&p(9)), None);
    }

    #[test]
    fn a_version_1_announcement_from_an_older_node_still_decodes() {
        let old = AnnouncementV1 {
            version: 1,
            interval_ms: 1_000,
            active: vec![p(2), p(3)],
            passive: 4,
            delivered: 5,
            frames_sent: 6,
            frames_received: 7,
            recent: vec![],
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        let a = Announcement::decode(&bytes).unwrap();
        assert_eq!(a.version, 1);
        assert_eq!(a.active, vec![p(2), p(3)]);
        assert_eq!((a.passive, a.delivered, a.frames_received), (4, 5, 7));
        assert_eq!(a.rtt_us, vec![None, None]);
        assert!(a.dht.is_empty());
        // ...and it draws like any other: its links, no RTTs.
        let mut m = NetworkMap::new();
        m.apply(p(1), a, 0);
        m.apply(p(2), ann(&[1]), 0);
        assert_eq!(m.edges(), vec![(p(1), p(2))]);
        assert_eq!(m.rtt_us(&p(1), &p(2)), None);
    }

    #[test]
    fn rtts_that_do_not_match_the_neighbours_are_refused() {
        let mut a = ann(&[2, 3]);
        a.rtt_us = vec![Some(1)];
        assert!(matches!(
            Announcement::decode(&a.encode()),
            Err(AnnouncementError::Malformed(_))
        ));
        let mut a = ann(&[]);
        a.dht = vec![p(1); 33];
        assert_eq!(
            Announcement::decode(&a.encode()),
            Err(AnnouncementError::TooMany(33))
        );
        assert!(Announcement::decode(&[]).is_err());
    }

    #[test]
    fn dht_links_and_rtts_show_in_the_map() {
        let mut m = NetworkMap::new();
        let mut a1 = ann(&[2]);
        a1.rtt_us = vec![Some(1_200)];
        a1.dht = vec![p(3), p(4)];
        let mut a3 = ann(&[]);
        a3.dht = vec![p(1)];
        let mut a2 = ann(&[1]);
        a2.rtt_us = vec![Some(1_500)];
        m.apply(p(1), a1, 0);
        m.apply(p(2), a2, 0);
        m.apply(p(3), a3, 0);
        m.apply(p(4), ann(&[]), 0);
        // A DHT link counts when both ends announce it, like an active one; they are
        // kept apart.
        assert_eq!(m.dht_edges(), vec![(p(1), p(3))]);
        assert_eq!(m.edges(), vec![(p(1), p(2))]);
        // Each end measures its own RTT; the first one asked for wins.
        assert_eq!(m.rtt_us(&p(1), &p(2)), Some(1_200));
        assert_eq!(m.rtt_us(&p(2), &p(1)), Some(1_500));
        assert_eq!(m.rtt_us(&p(1), &p(3)), None);
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

    fn hop(origin: u8, seq: u64, via: u8) -> Hop {
        Hop {
            origin: p(origin),
            seq,
            via: p(via),
        }
    }

    #[test]
    fn a_broadcasts_path_stays_traceable_after_announcements_that_no_longer_list_it() {
        let mut m = NetworkMap::new();
        let mut a = ann(&[1]);
        a.recent = vec![hop(1, 7, 1)];
        m.apply(p(2), a, 0);
        // Later announcements carry only newer deliveries (or none).
        m.apply(p(2), ann(&[1]), 1_000);
        let mut a = ann(&[1]);
        a.recent = vec![hop(1, 8, 1)];
        m.apply(p(2), a, 2_000);
        assert_eq!(m.trace(&p(1), 7), vec![(p(1), p(2))]);
        assert_eq!(m.trace(&p(1), 8), vec![(p(1), p(2))]);
        // ...until the announcer itself expires.
        m.expire(10_000);
        assert!(m.trace(&p(1), 7).is_empty());
    }

    #[test]
    fn an_older_nodes_full_hop_list_sent_every_time_is_not_counted_twice() {
        let mut m = NetworkMap::new();
        let mut a = ann(&[1]);
        a.recent = vec![hop(1, 1, 1), hop(1, 2, 1)];
        m.apply(p(2), a.clone(), 0);
        a.recent.push(hop(1, 3, 1));
        m.apply(p(2), a, 1_000);
        for seq in 1..=3 {
            assert_eq!(m.trace(&p(1), seq), vec![(p(1), p(2))], "seq {seq}");
        }
    }

    #[test]
    fn hops_of_an_announcement_that_came_too_soon_are_kept() {
        let mut m = NetworkMap::new();
        m.apply(p(2), ann(&[1]), 0);
        let mut a = ann(&[1]);
        a.recent = vec![hop(1, 5, 1)];
        assert!(!m.apply(p(2), a, 10));
        assert_eq!(m.trace(&p(1), 5), vec![(p(1), p(2))]);
    }

    #[test]
    fn the_map_keeps_a_bounded_number_of_hops_per_announcer() {
        let mut m = NetworkMap::new();
        for round in 0..10u64 {
            let mut a = ann(&[1]);
            a.recent = (0..MAX_ANNOUNCED_HOPS as u64)
                .map(|i| hop(1, round * 100 + i, 1))
                .collect();
            m.apply(p(2), a, round * 1_000);
        }
        let kept = (0..1_000u64)
            .filter(|seq| !m.trace(&p(1), *seq).is_empty())
            .count();
        assert_eq!(kept, MAX_KEPT_HOPS);
        // The newest are the ones kept.
        assert!(!m.trace(&p(1), 931).is_empty());
        assert!(m.trace(&p(1), 0).is_empty());
    }

    #[test]
    fn an_announcement_with_one_new_hop_is_a_few_hundred_bytes_not_kilobytes() {
        // A demo peer: five neighbours with RTTs, three DHT links, a 12-bit sequence number.
        let mut a = ann(&[2, 3, 4, 5, 6]);
        a.passive = 30;
        a.delivered = 1_234;
        a.frames_sent = 98_765;
        a.frames_received = 87_654;
        a.rtt_us = vec![Some(12_000); 5];
        a.dht = vec![p(7), p(8), p(9)];
        a.recent = vec![hop(1, 3_000, 2)];
        let now = a.encode().len();
        // What it used to carry: its last 32 deliveries, every time.
        a.recent = (0..32).map(|i| hop(1, 3_000 + i, 2)).collect();
        let before = a.encode().len();
        assert!(now <= 400, "{now} bytes");
        assert!(before >= 2_300, "{before} bytes");
    }
}
