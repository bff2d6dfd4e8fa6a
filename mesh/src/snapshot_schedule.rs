//! When this node takes its next snapshot.
//!
//! A snapshot is the whole state, so taking one every
//! `snapshot_every_entries` entries costs in proportion to the state, not
//! to what changed: with an archive of a million events, every 10 000
//! publishes re-encoded and rewrote all of them. As Redis does for its
//! append-only file (`auto-aof-rewrite-percentage`), a snapshot is also
//! held back until the commands applied since the last one add up to
//! `snapshot_log_growth_percent` of that snapshot's size: the bytes a
//! snapshot writes then stay within a fixed multiple of the bytes
//! committed, however large the state grows, and the log kept between
//! snapshots within that share of the state.
//!
//! The state machine store counts what it applies; a task of the node
//! looks at the count every [`CHECK_INTERVAL`] and asks openraft for a
//! snapshot when one is due (openraft's own policy is then `Never`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::types::{Raft, StateMachine};

/// How often the node checks whether a snapshot is due: a snapshot comes
/// at most this late, and asking openraft while it builds one costs a
/// dropped message.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The two thresholds; both must be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub every_entries: u64,
    /// 0: entries alone decide.
    pub log_growth_percent: u64,
}

impl SnapshotPolicy {
    /// Whether a snapshot is due after `entries` commands of `bytes` in all
    /// were applied since the last snapshot, which was `last_bytes` long
    /// (0 before the first).
    pub fn due(&self, entries: u64, bytes: u64, last_bytes: u64) -> bool {
        let grown =
            u128::from(bytes) * 100 >= u128::from(last_bytes) * u128::from(self.log_growth_percent);
        entries >= self.every_entries && grown
    }
}

/// What was applied since the last snapshot, shared by the state machine
/// store (which counts) and the node's check.
#[derive(Debug, Default)]
pub(crate) struct AppliedSinceSnapshot {
    entries: AtomicU64,
    bytes: AtomicU64,
    /// Size of the last snapshot built or installed.
    last_bytes: AtomicU64,
}

impl AppliedSinceSnapshot {
    pub(crate) fn applied(&self, entries: u64, bytes: u64) {
        self.entries.fetch_add(entries, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The state was captured for a snapshot (or replaced by one): what
    /// follows is counted towards the next.
    pub(crate) fn restart_count(&self) {
        self.entries.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// The last snapshot's size, once known.
    pub(crate) fn snapshot_size(&self, bytes: u64) {
        self.last_bytes.store(bytes, Ordering::Relaxed);
    }

    fn due(&self, policy: &SnapshotPolicy) -> bool {
        policy.due(
            self.entries.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.last_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Asks `raft` for a snapshot whenever `policy` says one is due; ends when
/// Raft stops (or when aborted).
pub(crate) fn follow<S: StateMachine>(
    raft: Raft<S>,
    applied: Arc<AppliedSinceSnapshot>,
    policy: SnapshotPolicy,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            // While a build is in progress openraft drops the request; the
            // count is only restarted when a build captures the state, so
            // the next check asks again.
            if applied.due(&policy) && raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: SnapshotPolicy = SnapshotPolicy {
        every_entries: 100,
        log_growth_percent: 50,
    };

    #[test]
    fn the_first_snapshot_waits_for_the_entries_only() {
        assert!(!POLICY.due(99, 1 << 30, 0));
        assert!(POLICY.due(100, 1, 0));
    }

    #[test]
    fn later_ones_also_wait_for_the_log_to_grow_by_the_share_of_the_last() {
        // Last snapshot 1 MB: due once 500 kB were applied, not before.
        assert!(!POLICY.due(10_000, 499_999, 1_000_000));
        assert!(POLICY.due(10_000, 500_000, 1_000_000));
        // Enough bytes in too few entries is not enough.
        assert!(!POLICY.due(99, 10_000_000, 1_000_000));
    }

    #[test]
    fn zero_percent_is_the_entry_count_alone() {
        let entries_only = SnapshotPolicy {
            log_growth_percent: 0,
            ..POLICY
        };
        assert!(entries_only.due(100, 0, u64::MAX));
    }

    #[test]
    fn huge_figures_do_not_overflow() {
        let policy = SnapshotPolicy {
            every_entries: 1,
            log_growth_percent: u64::MAX,
        };
        assert!(!policy.due(1, u64::MAX, u64::MAX));
        assert!(policy.due(1, u64::MAX, 0));
    }

    #[test]
    fn the_count_restarts_when_a_snapshot_captures_the_state() {
        let applied = AppliedSinceSnapshot::default();
        applied.applied(150, 10);
        assert!(applied.due(&POLICY));
        applied.restart_count();
        applied.snapshot_size(1_000);
        applied.applied(100, 499);
        assert!(!applied.due(&POLICY));
        applied.applied(0, 1);
        assert!(applied.due(&POLICY));
    }
}
