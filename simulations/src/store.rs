//! In-memory Raft storage: the same openraft traits as the mesh's file
//! stores, over a [`Disk`] that outlives a crash of its site.
//!
//! The log store keeps entries in a `BTreeMap` and reports an append
//! flushed at once (the simulated disk is infinitely fast and never tears a
//! write). The state machine store hands committed entries to the
//! application through the mesh's own
//! [`apply_committed`](vomesh_mesh::state_store::apply_committed), the code
//! production runs, and keeps its snapshot on the same [`Disk`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::Stream;
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine,
};
use vomesh_mesh::state_store::{SharedState, apply_committed};
use vomesh_mesh::types::{Entry, LogId, SnapshotMeta, StateMachine, StoredMembership, Vote};

pub use crate::journal::SiteReplica;
use crate::types::{SimSnapshot, SimTypes};

/// What a site keeps across a power loss.
#[derive(Debug, Default)]
pub struct DiskContents {
    log: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    snapshot: Option<SimSnapshot>,
}

/// A site's disk, shared by its log store and state machine store.
#[derive(Clone, Debug, Default)]
pub struct Disk(Arc<Mutex<DiskContents>>);

impl Disk {
    fn lock(&self) -> MutexGuard<'_, DiskContents> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The Raft log and vote, in memory.
#[derive(Clone, Debug)]
pub struct MemLogStore {
    disk: Disk,
}

impl MemLogStore {
    pub fn new(disk: Disk) -> Self {
        Self { disk }
    }
}

impl RaftLogReader<SimTypes> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        Ok(self
            .disk
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.disk.lock().vote)
    }
}

impl RaftLogStorage<SimTypes> for MemLogStore {
    type LogReader = MemLogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<SimTypes>> {
        let disk = self.disk.lock();
        let last = disk.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_log_id: last.or(disk.last_purged),
            last_purged_log_id: disk.last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.disk.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        if committed.is_some() {
            self.disk.lock().committed = committed;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.disk.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<SimTypes>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        {
            let mut disk = self.disk.lock();
            for entry in entries {
                disk.log.insert(entry.log_id.index, entry);
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.disk.lock().log.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.log = disk.log.split_off(&(log_id.index + 1));
        disk.last_purged = Some(log_id);
        Ok(())
    }
}

/// openraft's state machine side over an application [`StateMachine`],
/// with the snapshot kept on the site's [`Disk`].
pub struct MemStateStore<S> {
    state: SharedState<S>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    disk: Disk,
}

impl<S: StateMachine> MemStateStore<S> {
    /// Restores `state` from the snapshot on `disk`, if there is one, as the
    /// mesh's store does at start.
    pub fn open(disk: Disk, state: S) -> Result<Self, S::RestoreError> {
        let store = Self {
            state: SharedState::new(state),
            last_applied: None,
            last_membership: StoredMembership::default(),
            disk,
        };
        let snapshot = store.disk.lock().snapshot.clone();
        let Some(snapshot) = snapshot else {
            return Ok(store);
        };
        store.state.restore(&snapshot.snapshot)?;
        Ok(Self {
            last_applied: snapshot.meta.last_log_id,
            last_membership: snapshot.meta.last_membership,
            ..store
        })
    }

    pub fn shared(&self) -> SharedState<S> {
        self.state.clone()
    }
}

/// Builds one snapshot from state captured when the builder was created.
pub struct MemSnapshotBuilder {
    snapshot: SimSnapshot,
    disk: Disk,
}

impl RaftSnapshotBuilder<SimTypes> for MemSnapshotBuilder {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> io::Result<SimSnapshot> {
        self.disk.lock().snapshot = Some(self.snapshot.clone());
        Ok(self.snapshot.clone())
    }
}

impl<S: StateMachine> RaftStateMachine<SimTypes> for MemStateStore<S> {
    type SnapshotData = Bytes;
    type SnapshotBuilder = MemSnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<SimTypes>>> + Unpin + Send,
    {
        apply_committed(
            &self.state,
            &mut self.last_applied,
            &mut self.last_membership,
            entries,
        )
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MemSnapshotBuilder {
            snapshot: SimSnapshot {
                meta: SnapshotMeta {
                    last_log_id: self.last_applied,
                    last_membership: self.last_membership.clone(),
                },
                snapshot: self.state.read().snapshot(),
            },
            disk: self.disk.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Bytes) -> io::Result<()> {
        self.state
            .restore(&snapshot)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.disk.lock().snapshot = Some(SimSnapshot {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SimSnapshot>> {
        Ok(self.disk.lock().snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;
    use vomesh_broker::pubsub::{PubsubLimits, PubsubService};
    use vomesh_broker::replica::Replica;

    use super::*;
    use crate::journal::{SharedJournal, SiteDelivery};
    use crate::types::SimRuntime;

    /// Fresh in-memory stores over one disk, with the broker's replica.
    struct MemStores;

    impl StoreBuilder<SimTypes, MemLogStore, MemStateStore<SiteReplica>, ()> for MemStores {
        async fn build(
            &self,
        ) -> Result<((), MemLogStore, MemStateStore<SiteReplica>), StorageError<SimTypes>> {
            let journal = SharedJournal::new(tokio::time::Instant::now());
            let delivery = SiteDelivery {
                site: 1,
                subscriber_prefix: "s1-".into(),
                journal: journal.clone(),
            };
            let service = "pubsub.localhost"
                .parse()
                .map_err(|e: jid::Error| StorageError::read(SimTypes::err_from_error(&e)))?;
            let replica = Replica::new(
                PubsubService::new(service, PubsubLimits::default()),
                Arc::new(delivery),
            );
            let disk = Disk::default();
            let state = MemStateStore::open(disk.clone(), SiteReplica::new(1, replica, journal))
                .map_err(|e| StorageError::read(SimTypes::err_from_error(&e)))?;
            Ok(((), MemLogStore::new(disk), state))
        }
    }

    #[test]
    fn memory_store_passes_openraft_storage_suite() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime
            .block_on(SimRuntime::scope(1, Suite::test_all(MemStores)))
            .unwrap();
    }
}
