//! Rooms: which live session answers for which peer id in which room.
//!
//! This is the server's only state. It must make three things cheap whatever the size
//! of a room: a join (answered with a *random sample* of members, never the full list),
//! a relay to one named member, and a leave. Each room therefore keeps its members both
//! in a vector (uniform sampling of k members in O(k)) and in a map from peer id to
//! vector position (O(1) lookup and swap-remove).
//!
//! A relay never waits on its target: it pushes a pre-encoded frame into the
//! target's bounded mailbox, so a client that stops reading fills only its own queue and
//! its senders are told `peer-busy`. One mutex guards everything; every critical
//! section is a few map operations and never awaits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use rand::seq::index;
use rhizome::id::PeerId;

use crate::mailbox::{Mailbox, PushError};
use crate::telemetry;

/// Identifies one WebSocket session (a server-local counter).
pub(crate) type SessionId = u64;

/// How the registry reaches a joined session.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The session currently answering for the peer id.
    pub session: SessionId,
    /// Where relayed frames (already encoded) and the replacement notice go.
    pub mailbox: Arc<Mailbox>,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinError {
    /// The room has `max_peers_per_room` members.
    #[error("room is full")]
    RoomFull,
    /// Creating the room would exceed `max_rooms`.
    #[error("too many rooms")]
    TooManyRooms,
}

/// Why a relay was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RelayError {
    /// No such member in the sender's room.
    #[error("unknown peer")]
    UnknownPeer,
    /// The target's queue is full.
    #[error("peer busy")]
    PeerBusy,
    /// The sender itself is no longer the member (a newer session replaced it).
    #[error("sender was replaced")]
    SenderReplaced,
}

/// What a successful join returns.
#[derive(Debug)]
pub(crate) struct Joined {
    /// Random sample of other members.
    pub sample: Vec<PeerId>,
    /// Whether an older session of the same peer was replaced.
    pub replaced: bool,
}

#[derive(Default)]
struct Room {
    order: Vec<PeerId>,
    members: HashMap<PeerId, (usize, Member)>,
}

impl Room {
    fn sample(&self, exclude: &PeerId, k: usize) -> Vec<PeerId> {
        let n = self.order.len();
        let amount = (k + 1).min(n);
        let mut rng = rand::rng();
        index::sample(&mut rng, n, amount)
            .into_iter()
            .map(|i| self.order[i])
            .filter(|p| p != exclude)
            .take(k)
            .collect()
    }

    fn remove(&mut self, peer: &PeerId) {
        if let Some((pos, _)) = self.members.remove(peer) {
            self.order.swap_remove(pos);
            if let Some(moved) = self.order.get(pos) {
                if let Some(entry) = self.members.get_mut(moved) {
                    entry.0 = pos;
                }
            }
        }
    }
}

/// All rooms of one server.
pub(crate) struct Rooms {
    inner: Mutex<HashMap<Box<str>, Room>>,
    max_rooms: usize,
    max_peers: usize,
    sample_size: usize,
}

impl Rooms {
    /// An empty registry with the given limits.
    pub fn new(max_rooms: usize, max_peers: usize, sample_size: usize) -> Self {
        Rooms {
            inner: Mutex::new(HashMap::new()),
            max_rooms,
            max_peers,
            sample_size,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Room>> {
        // No critical section can leave the maps inconsistent halfway, so a poisoned
        // lock (a panic elsewhere while holding it) is still safe to use.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (or replaces) `peer` in `room` and samples other members for the welcome.
    pub fn join(&self, room: &str, peer: PeerId, member: Member) -> Result<Joined, JoinError> {
        let mut rooms = self.lock();
        if !rooms.contains_key(room) {
            if rooms.len() >= self.max_rooms {
                return Err(JoinError::TooManyRooms);
            }
            rooms.insert(room.into(), Room::default());
            telemetry::room_opened();
        }
        let Some(r) = rooms.get_mut(room) else {
            return Err(JoinError::TooManyRooms);
        };
        if let Some(entry) = r.members.get_mut(&peer) {
            let old = std::mem::replace(&mut entry.1, member);
            old.mailbox.replace();
            let sample = r.sample(&peer, self.sample_size);
            return Ok(Joined {
                sample,
                replaced: true,
            });
        }
        if r.order.len() >= self.max_peers {
            if r.order.is_empty() {
                // max_peers == 0: do not leave an empty room behind.
                rooms.remove(room);
                telemetry::room_closed();
            }
            return Err(JoinError::RoomFull);
        }
        let sample = r.sample(&peer, self.sample_size);
        r.members.insert(peer, (r.order.len(), member));
        r.order.push(peer);
        Ok(Joined {
            sample,
            replaced: false,
        })
    }

    /// Removes `peer` from `room` if `session` still answers for it (a replaced session
    /// leaving must not remove its successor). Drops the room when it empties. Returns
    /// whether a member was removed.
    pub fn leave(&self, room: &str, peer: &PeerId, session: SessionId) -> bool {
        let mut rooms = self.lock();
        let Some(r) = rooms.get_mut(room) else {
            return false;
        };
        if r.members.get(peer).map(|(_, m)| m.session) != Some(session) {
            return false;
        }
        r.remove(peer);
        if r.order.is_empty() {
            rooms.remove(room);
            telemetry::room_closed();
        }
        true
    }

    /// Queues `frame` for member `to` of `room`, on behalf of `from` in session `session`.
    pub fn relay(
        &self,
        room: &str,
        from: &PeerId,
        session: SessionId,
        to: &PeerId,
        frame: Utf8Bytes,
    ) -> Result<(), RelayError> {
        let rooms = self.lock();
        let Some(r) = rooms.get(room) else {
            return Err(RelayError::SenderReplaced);
        };
        if r.members.get(from).map(|(_, m)| m.session) != Some(session) {
            return Err(RelayError::SenderReplaced);
        }
        if to == from {
            return Err(RelayError::UnknownPeer);
        }
        let Some((_, target)) = r.members.get(to) else {
            return Err(RelayError::UnknownPeer);
        };
        target.mailbox.push(frame).map_err(|e| match e {
            PushError::Full => RelayError::PeerBusy,
            // The target's session is ending and will leave the room in a moment.
            PushError::Closed => RelayError::UnknownPeer,
        })
    }

    /// Queues `frame` for member `to` of `room` on behalf of another server (a signal
    /// relayed through the cluster, or an error frame bounced back to its sender).
    pub fn deliver(&self, room: &str, to: &PeerId, frame: Utf8Bytes) -> Result<(), RelayError> {
        let rooms = self.lock();
        let Some((_, target)) = rooms.get(room).and_then(|r| r.members.get(to)) else {
            return Err(RelayError::UnknownPeer);
        };
        target.mailbox.push(frame).map_err(|e| match e {
            PushError::Full => RelayError::PeerBusy,
            PushError::Closed => RelayError::UnknownPeer,
        })
    }

    /// Tells the local session answering for `peer` in `room` that a session on another
    /// server replaced it. Its session then ends and leaves. Returns whether there was one.
    pub fn replace_remote(&self, room: &str, peer: &PeerId) -> bool {
        let rooms = self.lock();
        match rooms.get(room).and_then(|r| r.members.get(peer)) {
            Some((_, m)) => {
                m.mailbox.replace();
                true
            }
            None => false,
        }
    }

    /// Every member: room, peer id and session (to publish them to the cluster again).
    pub fn members(&self) -> Vec<(Box<str>, PeerId, SessionId)> {
        let rooms = self.lock();
        rooms
            .iter()
            .flat_map(|(name, r)| {
                r.members
                    .iter()
                    .map(move |(p, (_, m))| (name.clone(), *p, m.session))
            })
            .collect()
    }

    /// Whether `session` still answers for `peer` in `room`.
    pub fn holds(&self, room: &str, peer: &PeerId, session: SessionId) -> bool {
        let rooms = self.lock();
        rooms
            .get(room)
            .and_then(|r| r.members.get(peer))
            .is_some_and(|(_, m)| m.session == session)
    }

    /// Number of rooms and of joined members.
    pub fn counts(&self) -> (usize, usize) {
        let rooms = self.lock();
        (rooms.len(), rooms.values().map(|r| r.order.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhizome::id::Identity;

    fn member(session: SessionId) -> (Member, Arc<Mailbox>) {
        let mailbox = Arc::new(Mailbox::new(1));
        let m = Member {
            session,
            mailbox: mailbox.clone(),
        };
        (m, mailbox)
    }

    fn peer(n: u8) -> PeerId {
        Identity::from_secret_bytes([n; 32]).peer_id()
    }

    #[test]
    fn a_sample_never_names_the_joiner_and_never_exceeds_its_size() {
        let rooms = Rooms::new(10, 100, 3);
        let mut keep = Vec::new();
        for n in 0..20 {
            let (m, rx) = member(n as u64);
            keep.push(rx);
            let joined = rooms.join("r", peer(n), m).unwrap();
            assert!(joined.sample.len() <= 3);
            assert_eq!(joined.sample.len(), (n as usize).min(3));
            assert!(!joined.sample.contains(&peer(n)));
        }
    }

    #[test]
    fn leaving_keeps_positions_consistent() {
        let rooms = Rooms::new(10, 100, 8);
        let mut keep = Vec::new();
        for n in 0..5 {
            let (m, rx) = member(n as u64);
            keep.push(rx);
            rooms.join("r", peer(n), m).unwrap();
        }
        rooms.leave("r", &peer(1), 1);
        rooms.leave("r", &peer(3), 99); // wrong session: ignored
        assert_eq!(rooms.counts(), (1, 4));
        for n in [0u8, 2, 3, 4] {
            let to = peer(n);
            let from = if n == 0 { peer(2) } else { peer(0) };
            let s = if n == 0 { 2 } else { 0 };
            rooms.relay("r", &from, s, &to, "x".into()).unwrap();
        }
        assert_eq!(
            rooms.relay("r", &peer(0), 0, &peer(1), "x".into()),
            Err(RelayError::UnknownPeer)
        );
        for n in [0u8, 2, 3, 4] {
            rooms.leave("r", &peer(n), n as u64);
        }
        assert_eq!(rooms.counts(), (0, 0));
    }
}
