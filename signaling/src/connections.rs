//! Every TCP connection from accept to close: the cap on how many may be open at once,
//! and which of them gives way when the cap is reached.
//!
//! Each connection holds one permit of a semaphore sized `max_connections` (clamped to
//! the open-files limit, see [`connection_cap`]); a connection that becomes a WebSocket
//! session hands its permit to the session, so sessions and plain HTTP connections share
//! one bound and the process never runs out of descriptors.
//!
//! At the cap, a new connection does not simply wait behind the old ones: the oldest
//! connection that is doing nothing for anybody (no request being handled, not a
//! session: a client that has not finished its request head, an idle keep-alive, a slow
//! reader of a finished response) is dropped to make room. An attacker who holds
//! hundreds of unfinished heads therefore delays an honest client by one eviction, not
//! by the header timeout. (A few are evicted at once, so a crowd of them is cleared
//! quickly.) If every connection is busy, the newcomer is closed at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Idle connections evicted at once when the cap is reached.
const EVICT_BATCH: usize = 8;

/// Longest wait for an evicted connection to give its permit back.
const EVICT_WAIT: Duration = Duration::from_millis(200);

/// Descriptors kept for everything that is not a connection (the listener, the runtime's
/// epoll and event descriptors, standard streams, logs).
const FD_RESERVE: u64 = 32;

/// The connection cap actually used: `configured`, but never more than the open-files
/// limit allows. Static files served also take a descriptor each while they are sent,
/// so with `serves_files` half the room is kept for them.
pub(crate) fn connection_cap(configured: usize, serves_files: bool) -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(u64::MAX);
    let mut room = soft.saturating_sub(FD_RESERVE);
    if serves_files {
        room /= 2;
    }
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    let cap = configured.min(room).clamp(1, Semaphore::MAX_PERMITS);
    if cap < configured {
        warn!(
            configured,
            cap, "the open-files limit ({soft}) lowers the connection cap"
        );
    }
    cap
}

/// One open connection, as the registry and its request handlers see it.
#[derive(Debug)]
pub(crate) struct Conn {
    id: u64,
    /// Requests being handled right now.
    busy: AtomicUsize,
    /// Cancelled to drop the connection.
    pub evict: CancellationToken,
    /// The connection's share of the cap, until a session takes it over.
    permit: Mutex<Option<ConnPermit>>,
}

/// A connection's share of the cap; released (and counted closed) when dropped.
#[derive(Debug)]
pub(crate) struct ConnPermit {
    _permit: OwnedSemaphorePermit,
}

impl ConnPermit {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        crate::telemetry::connection_opened();
        ConnPermit { _permit: permit }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        crate::telemetry::connection_closed();
    }
}

impl Conn {
    /// Takes over the connection's permit (for a session that outlives its HTTP request).
    pub fn take_permit(&self) -> Option<ConnPermit> {
        self.permit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Marks a request as being handled until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.clone())
    }
}

/// See [`Conn::busy`].
pub(crate) struct BusyGuard(Arc<Conn>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// All open connections of one server.
pub(crate) struct Connections {
    permits: Arc<Semaphore>,
    cap: usize,
    /// Connections that have not become sessions, oldest first.
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Connections {
    /// Room for `cap` connections.
    pub fn new(cap: usize) -> Self {
        Connections {
            permits: Arc::new(Semaphore::new(cap)),
            cap,
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open now (sessions included).
    pub fn count(&self) -> usize {
        self.cap - self.permits.available_permits()
    }

    /// Admits a new connection, evicting the oldest idle one if the cap is reached;
    /// `None` if nothing could make room (the caller closes the new connection).
    pub async fn admit(&self) -> Option<Arc<Conn>> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // A few at once: when the cap is reached it is usually by a crowd of
                // connections that do nothing, and each wait for an evicted connection
                // to let go holds up the accept loop (and everyone queued behind it).
                let victims: Vec<Arc<Conn>> = {
                    let mut open = self.lock();
                    let ids: Vec<u64> = open
                        .iter()
                        .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
                        .map(|(id, _)| *id)
                        .take(EVICT_BATCH)
                        .collect();
                    ids.iter().filter_map(|id| open.remove(id)).collect()
                };
                if victims.is_empty() {
                    return None;
                }
                for victim in victims {
                    crate::telemetry::connection_dropped("evicted");
                    victim.evict.cancel();
                }
                tokio::time::timeout(EVICT_WAIT, self.permits.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            busy: AtomicUsize::new(0),
            evict: CancellationToken::new(),
            permit: Mutex::new(Some(ConnPermit::new(permit))),
        });
        self.lock().insert(conn.id, conn.clone());
        Some(conn)
    }

    /// Forgets a connection that closed or became a session (it can no longer be evicted).
    pub fn remove(&self, conn: &Conn) {
        self.lock().remove(&conn.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_gives_way() {
        let conns = Connections::new(2);
        let a = conns.admit().await.unwrap();
        let b = conns.admit().await.unwrap();
        let _busy = a.busy();
        // `a` is handling a request, so `b` is the one evicted; its task drops it.
        let dropper = tokio::spawn({
            let b = b.clone();
            async move {
                b.evict.cancelled().await;
                drop(b.take_permit());
            }
        });
        let c = conns.admit().await.unwrap();
        dropper.await.unwrap();
        assert!(b.evict.is_cancelled());
        assert!(!a.evict.is_cancelled());
        assert_eq!(conns.count(), 2);
        // Now `a` is busy and `c`'s permit moves to a session: nothing can give way.
        let _session = c.take_permit();
        conns.remove(&c);
        assert!(conns.admit().await.is_none());
    }
}
