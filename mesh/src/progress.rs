//! Waiting for this node's replica to apply a log index, or for the known
//! leader to change, with one watcher of openraft's metrics per node.
//!
//! openraft's `Raft::wait` subscribes every waiter to every metrics change:
//! with hundreds of proposals forwarded by a follower, each one waiting for
//! its index to be applied, every append, commit and apply woke all of them
//! to re-check a condition (the follower spent more CPU on that than on its
//! share of the work). Here one task reads the metrics; an index waiter is
//! woken once, when its index is applied, and a leader waiter only when the
//! leader changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::async_runtime::watch::WatchReceiver;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::types::{NodeId, Raft, StateMachine};

/// The applied index and the leader this node knows, for waiters.
pub(crate) struct Progress {
    leader: watch::Sender<Option<NodeId>>,
    applied: Mutex<Applied>,
}

#[derive(Default)]
struct Applied {
    index: Option<u64>,
    /// Waiters by the index they wait for.
    waiting: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

impl Progress {
    /// Starts following `raft`'s metrics; the task ends when Raft stops
    /// (or when aborted).
    pub(crate) fn follow<S: StateMachine>(raft: &Raft<S>) -> (Arc<Progress>, JoinHandle<()>) {
        let mut metrics = raft.metrics();
        let initial = metrics.borrow_watched().clone();
        let progress = Arc::new(Progress {
            leader: watch::Sender::new(initial.current_leader),
            applied: Mutex::new(Applied {
                index: initial.last_applied.map(|id| id.index),
                waiting: BTreeMap::new(),
            }),
        });
        let observer = progress.clone();
        let task = tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let (leader, applied) = {
                    let m = metrics.borrow_watched();
                    (m.current_leader, m.last_applied.map(|id| id.index))
                };
                observer.observe(leader, applied);
            }
        });
        (progress, task)
    }

    fn observe(&self, leader: Option<NodeId>, applied: Option<u64>) {
        self.leader.send_if_modified(|known| {
            let changed = *known != leader;
            *known = leader;
            changed
        });
        let Some(applied) = applied else { return };
        let mut state = lock(&self.applied);
        state.index = Some(applied);
        let still_waiting = state.waiting.split_off(&(applied + 1));
        let done = std::mem::replace(&mut state.waiting, still_waiting);
        drop(state);
        for waiter in done.into_values().flatten() {
            let _ = waiter.send(());
        }
    }

    /// Whether the replica applied `index` before `deadline`.
    pub(crate) async fn applied_at_least(&self, index: u64, deadline: Instant) -> bool {
        let applied = {
            let mut state = lock(&self.applied);
            if state.index.is_some_and(|applied| applied >= index) {
                return true;
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.entry(index).or_default().push(tx);
            rx
        };
        matches!(tokio::time::timeout_at(deadline, applied).await, Ok(Ok(())))
    }

    /// The leader this node knows now.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        *self.leader.borrow()
    }

    /// Returns once a leader other than `known` is known, or at `deadline`.
    pub(crate) async fn leader_other_than(&self, known: Option<NodeId>, deadline: Instant) {
        let mut leader = self.leader.subscribe();
        let changed = leader.wait_for(|leader| leader.is_some() && *leader != known);
        let _ = tokio::time::timeout_at(deadline, changed).await;
    }
}

/// A panic while the lock was held leaves nothing half-updated that
/// matters here (at worst a waiter times out).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn progress() -> Progress {
        Progress {
            leader: watch::Sender::new(None),
            applied: Mutex::new(Applied::default()),
        }
    }

    #[tokio::test]
    async fn an_index_waiter_returns_once_its_index_is_applied() {
        let progress = Arc::new(progress());
        let far = Instant::now() + Duration::from_secs(10);
        let waiter = tokio::spawn({
            let progress = progress.clone();
            async move { progress.applied_at_least(5, far).await }
        });
        tokio::task::yield_now().await;
        progress.observe(Some(1), Some(4));
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "index 4 does not satisfy a wait for 5"
        );
        progress.observe(Some(1), Some(7));
        assert!(waiter.await.unwrap());
        assert!(lock(&progress.applied).waiting.is_empty());
        // Already applied: no wait at all.
        assert!(progress.applied_at_least(6, Instant::now()).await);
    }

    #[tokio::test]
    async fn an_index_waiter_gives_up_at_its_deadline() {
        let progress = progress();
        progress.observe(None, Some(1));
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!progress.applied_at_least(2, soon).await);
    }

    #[tokio::test]
    async fn a_leader_waiter_wakes_for_a_different_leader_only() {
        let progress = Arc::new(progress());
        progress.observe(Some(1), None);
        let far = Instant::now() + Duration::from_secs(10);
        let waiter = tokio::spawn({
            let progress = progress.clone();
            async move { progress.leader_other_than(Some(1), far).await }
        });
        tokio::task::yield_now().await;
        progress.observe(None, None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no leader is not a new leader");
        progress.observe(Some(1), None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        progress.observe(Some(2), None);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by leader 2")
            .unwrap();
    }
}
