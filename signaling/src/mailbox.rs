//! A session's mailbox: the bounded queue other sessions relay signals into, and the
//! flag that tells a session it has been replaced.
//!
//! Most sessions are idle most of the time, so an empty mailbox must cost next to
//! nothing: a `VecDeque` allocates only once something is queued (tokio's `mpsc`
//! allocates a block of 32 slots up front, about a kilobyte per session). Pushing never
//! waits: a full mailbox is reported to the sender (`peer-busy`), so a client that stops
//! reading cannot slow anybody else down. There is one consumer, the session's own task.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PushError {
    /// `capacity` frames are waiting already.
    #[error("mailbox full")]
    Full,
    /// The session is ending.
    #[error("mailbox closed")]
    Closed,
}

/// What the session's task takes out of its mailbox.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A relayed frame, already encoded.
    Frame(Utf8Bytes),
    /// A newer session took over this session's peer id.
    Replaced,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Utf8Bytes>,
    replaced: bool,
    closed: bool,
}

/// A bounded, single-consumer mailbox.
#[derive(Debug)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

impl Mailbox {
    /// An empty mailbox holding at most `capacity` frames (at least one).
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame without waiting.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        let mut s = self.lock();
        if s.closed || s.replaced {
            return Err(PushError::Closed);
        }
        if s.queue.len() >= self.capacity {
            return Err(PushError::Full);
        }
        s.queue.push_back(frame);
        drop(s);
        self.notify.notify_one();
        Ok(())
    }

    /// Tells the owner it has been replaced; queued frames are dropped with it.
    pub fn replace(&self) {
        let mut s = self.lock();
        s.replaced = true;
        s.queue = VecDeque::new();
        drop(s);
        self.notify.notify_one();
    }

    /// Refuses further pushes and frees what is queued.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.queue = VecDeque::new();
    }

    /// A queued frame if there is one right now (not the replacement notice, which
    /// [`Mailbox::next`] reports).
    pub fn try_next(&self) -> Option<Utf8Bytes> {
        let mut s = self.lock();
        if s.replaced {
            return None;
        }
        let frame = s.queue.pop_front();
        if s.queue.is_empty() {
            s.queue = VecDeque::new();
        }
        frame
    }

    /// The next delivery; waits while the mailbox is empty. Cancel-safe: nothing is
    /// taken out unless it is returned.
    pub async fn next(&self) -> Delivery {
        loop {
            {
                let mut s = self.lock();
                if s.replaced {
                    return Delivery::Replaced;
                }
                if let Some(frame) = s.queue.pop_front() {
                    if s.queue.is_empty() {
                        // Give the memory back: idle sessions should hold none.
                        s.queue = VecDeque::new();
                    }
                    return Delivery::Frame(frame);
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the
            // check above and this await is not missed.
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_mailbox_refuses_and_a_replaced_one_says_so_first() {
        let m = Mailbox::new(2);
        m.push("a".into()).unwrap();
        m.push("b".into()).unwrap();
        assert_eq!(m.push("c".into()), Err(PushError::Full));
        assert!(matches!(m.next().await, Delivery::Frame(f) if f.as_str() == "a"));
        m.push("c".into()).unwrap();
        m.replace();
        assert!(matches!(m.next().await, Delivery::Replaced));
        assert_eq!(m.push("d".into()), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_push() {
        let m = std::sync::Arc::new(Mailbox::new(4));
        let waiter = tokio::spawn({
            let m = m.clone();
            async move { matches!(m.next().await, Delivery::Frame(_)) }
        });
        tokio::task::yield_now().await;
        m.push("x".into()).unwrap();
        assert!(waiter.await.unwrap());
    }
}
