//! The bounded queue of stanzas waiting to be written to one connection.
//!
//! The router pushes (never waiting), the connection's task takes batches.
//! An empty queue holds no memory: most sessions of a node are idle
//! subscribers, and tokio's mpsc channel, used before, allocated a block of
//! 32 slots (1.5 KiB) for every connection when it was created.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::router::Outbound;

/// Slots kept after the queue drains; a larger buffer (left by a burst) is
/// released, so that a burst does not pin memory to an idle session.
const SLOTS_KEPT_WHEN_EMPTY: usize = 64;

/// Why a stanza was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The client is not reading: `capacity` stanzas are already waiting.
    Full,
    /// The connection is closing.
    Closed,
}

#[derive(Debug)]
pub struct OutboundQueue {
    state: Mutex<State>,
    capacity: usize,
    /// Notified when a stanza is queued (a permit is kept if the connection
    /// is not waiting at that moment, so no push is missed).
    ready: Notify,
    /// Notified when a push found the queue full.
    overflowed: Notify,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    closed: bool,
}

impl OutboundQueue {
    pub fn new(capacity: usize) -> Self {
        OutboundQueue {
            state: Mutex::new(State::default()),
            capacity,
            ready: Notify::new(),
            overflowed: Notify::new(),
        }
    }

    /// Queues `item`; a full queue also wakes [`OutboundQueue::overflowed`].
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.items.len() >= self.capacity {
            drop(state);
            self.overflowed.notify_one();
            return Err(PushError::Full);
        }
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Whether the oldest item queued is a stanza other than a pubsub
    /// notification: an answer, a message.
    pub fn next_is_stanza(&self) -> bool {
        matches!(self.lock().items.front(), Some(Outbound::Stanza(_)))
    }

    /// Takes up to `max` queued stanzas, oldest first. When more remain, the
    /// next [`OutboundQueue::ready`] returns at once. They are serialized by
    /// the caller after the lock is released, so the router's pushes to this
    /// connection never wait for that copy.
    pub fn take(&self, max: usize) -> Vec<Outbound> {
        let mut state = self.lock();
        let count = state.items.len().min(max);
        let taken: Vec<Outbound> = state.items.drain(..count).collect();
        if !state.items.is_empty() {
            self.ready.notify_one();
        } else if state.items.capacity() > SLOTS_KEPT_WHEN_EMPTY {
            state.items = VecDeque::new();
        }
        taken
    }

    /// Returns when stanzas may be waiting (possibly none, if an earlier
    /// [`OutboundQueue::take`] got them first).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Returns once a push found the queue full.
    pub async fn overflowed(&self) {
        self.overflowed.notified().await
    }

    /// Drops what is queued and refuses further pushes: the connection is
    /// gone.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.items = VecDeque::new();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn stanza(text: &str) -> Outbound {
        Outbound::Stanza(text.into())
    }

    fn taken(queue: &OutboundQueue, max: usize) -> Vec<String> {
        queue
            .take(max)
            .into_iter()
            .map(|item| match item {
                Outbound::Stanza(s) => s.to_string(),
                Outbound::Notification { .. } => unreachable!("only stanzas are queued here"),
            })
            .collect()
    }

    async fn is_ready(queue: &OutboundQueue) -> bool {
        tokio::time::timeout(Duration::from_millis(20), queue.ready())
            .await
            .is_ok()
    }

    #[test]
    fn the_oldest_item_tells_a_stanza_from_a_notification() {
        let queue = OutboundQueue::new(10);
        assert!(!queue.next_is_stanza(), "an empty queue");
        let notification = Outbound::Notification {
            head: "<message>".into(),
            body: "<event/>".into(),
            published_micros: 0,
        };
        queue.push(notification).unwrap();
        queue.push(stanza("<iq type='result'/>")).unwrap();
        assert!(!queue.next_is_stanza());
        queue.take(1);
        assert!(queue.next_is_stanza());
    }

    #[tokio::test]
    async fn stanzas_come_out_in_order_in_batches_and_a_remainder_stays_ready() {
        let queue = OutboundQueue::new(10);
        for text in ["a", "b", "c"] {
            queue.push(stanza(text)).unwrap();
        }
        assert!(is_ready(&queue).await);
        assert_eq!(taken(&queue, 2), ["a", "b"]);
        assert!(is_ready(&queue).await, "c is still waiting");
        assert_eq!(taken(&queue, 2), ["c"]);
        assert!(!is_ready(&queue).await);
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_connection() {
        let queue = Arc::new(OutboundQueue::new(10));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.ready().await }
        });
        tokio::task::yield_now().await;
        queue.push(stanza("a")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_signals_overflow() {
        let queue = OutboundQueue::new(2);
        queue.push(stanza("a")).unwrap();
        queue.push(stanza("b")).unwrap();
        assert_eq!(queue.push(stanza("c")), Err(PushError::Full));
        tokio::time::timeout(Duration::from_secs(5), queue.overflowed())
            .await
            .expect("overflow signalled");
        assert_eq!(taken(&queue, 10), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_closed_queue_drops_its_stanzas_and_refuses_more() {
        let queue = OutboundQueue::new(2);
        queue.push(stanza("a")).unwrap();
        queue.close();
        assert_eq!(queue.push(stanza("b")), Err(PushError::Closed));
        assert!(taken(&queue, 10).is_empty());
    }

    #[test]
    fn a_drained_queue_releases_a_burst_sized_buffer() {
        let queue = OutboundQueue::new(1_000);
        for _ in 0..500 {
            queue.push(stanza("x")).unwrap();
        }
        queue.take(1_000);
        assert!(queue.lock().items.capacity() <= SLOTS_KEPT_WHEN_EMPTY);
    }
}
