//! openraft's state machine side: hands committed commands to the
//! application's [`StateMachine`], tracks what was applied, and keeps the
//! latest snapshot durable in a file of its own (`raft-snapshot.bin`, see
//! [`crate::snapshot_file`]).
//!
//! The application state is in memory. At start [`StateStore::open`]
//! restores it from the stored snapshot; openraft then re-applies the
//! committed log entries that follow. A snapshot is taken from a consistent
//! read: [`StateMachine::snapshot_later`] captures the state on the state
//! machine task between two apply batches, and a thread of its own, at a
//! lower priority, serializes it and writes it while applying goes on.
//!
//! The state is shared with the application through [`SharedState`] for
//! local (non-linearizable) reads.

use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use openraft::EntryPayload;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use prost::Message;
use redb::{Database, ReadableDatabase, TableDefinition, TableError};
use vomesh_proto::mesh as pb;

use crate::log_store::{invalid_data, io_err, sync_parent_dir};
use crate::snapshot_data::SnapshotData;
use crate::snapshot_file::{SnapshotFile, StoredSnapshot};
use crate::snapshot_schedule::AppliedSinceSnapshot;
use crate::types::{
    CommandResponse, CommittedCommand, DeferredSnapshot, LogId, MeshTypeConfig, MeshTypes,
    Snapshot, SnapshotMeta, StateMachine, StoredMembership,
};
use crate::wire;

/// Where versions before `raft-snapshot.bin` kept the snapshot; moved into
/// that file when the store opens.
const LEGACY_FILE_NAME: &str = "raft-snapshot.redb";
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const KEY_META: &str = "meta";
const KEY_DATA: &str = "data";

/// The application state, shared between the Raft state machine task (which
/// writes it) and the application (which reads it).
pub struct SharedState<S>(Arc<RwLock<S>>);

impl<S> Clone for SharedState<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> SharedState<S> {
    /// Shares `state`.
    pub fn new(state: S) -> Self {
        Self(Arc::new(RwLock::new(state)))
    }

    /// Read access to the local replica. Holding the guard blocks apply:
    /// read, copy what is needed, drop it.
    pub fn read(&self) -> RwLockReadGuard<'_, S> {
        // A panic inside `apply` poisons the lock; the state it left is what
        // every other node will also compute, so reads stay meaningful.
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, S> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: StateMachine> SharedState<S> {
    /// Replaces the state with an installed snapshot (a state machine store
    /// does this when the leader sends one).
    pub fn restore(&self, snapshot: &[u8]) -> Result<(), S::RestoreError> {
        self.write().restore(snapshot)
    }
}

/// openraft's `RaftStateMachine` over an application [`StateMachine`].
pub struct StateStore<S> {
    state: SharedState<S>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    file: Arc<SnapshotFile>,
    /// Counted for the node's snapshot schedule.
    applied_since_snapshot: Arc<AppliedSinceSnapshot>,
}

impl<S: StateMachine> StateStore<S> {
    /// Opens the snapshot file in the data directory `dir` and restores
    /// `state` from the snapshot stored there, if any.
    pub fn open(dir: &Path, state: S) -> Result<Self, StateOpenError> {
        let (file, stored) = SnapshotFile::open(dir).map_err(StateOpenError::Snapshot)?;
        let stored = stored_snapshot(dir, &file, stored).map_err(StateOpenError::Snapshot)?;
        let mut store = Self {
            state: SharedState::new(state),
            last_applied: None,
            last_membership: StoredMembership::default(),
            file: Arc::new(file),
            applied_since_snapshot: Arc::default(),
        };
        if let Some((meta, data)) = stored {
            store
                .state
                .write()
                .restore(&data)
                .map_err(|e| StateOpenError::Restore(Box::new(e)))?;
            store.last_applied = meta.last_log_id;
            store.last_membership = meta.last_membership;
            store
                .applied_since_snapshot
                .snapshot_size(data.len() as u64);
        }
        Ok(store)
    }

    /// The state shared with the application.
    pub fn shared(&self) -> SharedState<S> {
        self.state.clone()
    }

    /// What this store applied since its last snapshot, for the node's
    /// snapshot schedule.
    pub(crate) fn applied_since_snapshot(&self) -> Arc<AppliedSinceSnapshot> {
        self.applied_since_snapshot.clone()
    }

    /// Completes once the store is dropped and no snapshot is being built.
    pub(crate) fn wait_closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.file.wait_closed()
    }

    fn current_meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        }
    }
}

/// The state machine store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StateOpenError {
    #[error("stored snapshot unreadable: {0}")]
    Snapshot(io::Error),
    #[error("stored snapshot could not be restored: {0}")]
    Restore(Box<dyn std::error::Error + Send + Sync>),
}

/// The stored snapshot: the file's (`in_file`), or the one an earlier
/// version kept in redb, which is moved into the file first (the redb file
/// is then removed).
fn stored_snapshot(
    dir: &Path,
    file: &SnapshotFile,
    in_file: Option<StoredSnapshot>,
) -> io::Result<Option<(SnapshotMeta, Bytes)>> {
    let legacy = dir.join(LEGACY_FILE_NAME);
    let stored = match in_file {
        None if legacy.exists() => {
            let stored = read_legacy_snapshot(&legacy)?;
            if let Some(stored) = &stored {
                file.write(&stored.meta, |out| out.write_all(&stored.data))?;
                tracing::info!(from = %legacy.display(), "mesh: snapshot moved out of redb");
            }
            stored
        }
        stored => stored,
    };
    if legacy.exists() {
        std::fs::remove_file(&legacy)?;
        sync_parent_dir(&legacy)?;
    }
    stored.map(decode_snapshot).transpose()
}

fn read_legacy_snapshot(path: &Path) -> io::Result<Option<StoredSnapshot>> {
    let db = Database::open(path).map_err(io_err)?;
    let txn = db.begin_read().map_err(io_err)?;
    let table = match txn.open_table(SNAPSHOT) {
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        table => table.map_err(io_err)?,
    };
    let (Some(meta), Some(data)) = (
        table.get(KEY_META).map_err(io_err)?,
        table.get(KEY_DATA).map_err(io_err)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(StoredSnapshot {
        meta: pb::SnapshotMeta::decode(meta.value()).map_err(invalid_data)?,
        data: Bytes::copy_from_slice(data.value()),
    }))
}

fn decode_snapshot(stored: StoredSnapshot) -> io::Result<(SnapshotMeta, Bytes)> {
    let meta = wire::snapshot_meta_from_pb(&stored.meta).map_err(invalid_data)?;
    Ok((meta, stored.data))
}

/// Stores what `write_data` writes as the latest snapshot, durably
/// (blocking); its length, unless a newer snapshot was stored.
fn write_snapshot(
    file: &SnapshotFile,
    meta: &SnapshotMeta,
    write_data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<Option<u64>> {
    file.write(
        &wire::snapshot_meta_to_pb(meta).map_err(invalid_data)?,
        write_data,
    )
}

/// How much lower than the node's other threads the snapshot builder runs
/// (a nice value). Building one serializes and writes the whole state,
/// tens of milliseconds of CPU per 100 MB, while commits wait for the same
/// cores: at +10 the scheduler gives the builder about a tenth of a
/// contended core, and all of an idle one.
const SNAPSHOT_NICENESS: i32 = 10;

/// Runs `build` on a thread of its own at [`SNAPSHOT_NICENESS`], rather
/// than on the blocking pool, whose threads would keep the lowered
/// priority for the other work they take.
async fn in_background<T: Send + 'static>(
    build: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("vomesh-snapshot".into())
        .spawn(move || {
            lower_priority();
            // The receiver is gone only when the build was abandoned.
            let _ = done.send(build());
        })?;
    result
        .await
        .map_err(|_| io::Error::other("the snapshot thread ended without a result"))?
}

fn lower_priority() {
    let thread = rustix::thread::gettid();
    // Linux keeps a nice value per thread: this one alone is lowered.
    if let Err(e) = rustix::process::setpriority_process(Some(thread), SNAPSHOT_NICENESS) {
        tracing::debug!(error = %e, "mesh: snapshot thread keeps its priority");
    }
}

/// Hands a batch of committed entries to the application's
/// [`StateMachine`] in one `apply` call and answers each proposer, tracking
/// the last applied log id and membership.
///
/// Generic over the type configuration so that the simulator's in-memory
/// state machine store applies entries exactly as this durable one does.
pub async fn apply_committed<C, S, Strm>(
    state: &SharedState<S>,
    last_applied: &mut Option<LogId>,
    last_membership: &mut StoredMembership,
    mut entries: Strm,
) -> io::Result<()>
where
    C: MeshTypeConfig,
    S: StateMachine,
    Strm: Stream<Item = io::Result<EntryResponder<C>>> + Unpin + Send,
{
    let mut commands = Vec::new();
    let mut responders = Vec::new();
    while let Some(item) = entries.next().await {
        let (entry, responder) = item?;
        *last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Normal(command) => {
                commands.push(CommittedCommand {
                    index: entry.log_id.index,
                    command: command.0,
                    response_wanted: responder.is_some(),
                });
                responders.push(responder);
            }
            EntryPayload::Membership(membership) => {
                *last_membership = StoredMembership::new(Some(entry.log_id), membership);
                if let Some(r) = responder {
                    r.send(CommandResponse::default());
                }
            }
            EntryPayload::Blank => {
                if let Some(r) = responder {
                    r.send(CommandResponse::default());
                }
            }
        }
    }
    if commands.is_empty() {
        return Ok(());
    }
    let count = commands.len();
    let responses = state.write().apply(commands);
    if responses.len() != count {
        // A broken StateMachine: replies can no longer be matched to
        // proposals, and continuing would hide the bug.
        return Err(io::Error::other(format!(
            "state machine returned {} responses for {count} commands",
            responses.len()
        )));
    }
    for (responder, response) in responders.into_iter().zip(responses) {
        if let Some(r) = responder {
            r.send(CommandResponse(response));
        }
    }
    Ok(())
}

/// Builds one snapshot from state captured when the builder was created.
/// openraft creates it between two applies and builds it in a task of its
/// own, so the state is serialized (and written) while applying goes on.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    /// Taken by the one build.
    data: Option<DeferredSnapshot>,
    file: Arc<SnapshotFile>,
    applied_since_snapshot: Arc<AppliedSinceSnapshot>,
}

impl RaftSnapshotBuilder<MeshTypes> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let serialize = self
            .data
            .take()
            .ok_or_else(|| io::Error::other("snapshot builder used twice"))?;
        let (file, meta) = (self.file.clone(), self.meta.clone());
        let stored = in_background(move || write_snapshot(&file, &meta, serialize)).await?;
        if let Some(bytes) = stored {
            self.applied_since_snapshot.snapshot_size(bytes);
            metrics::counter!("vomesh_raft_snapshots_built_total").increment(1);
            metrics::gauge!("vomesh_raft_snapshot_bytes").set(bytes as f64);
            tracing::info!(
                index = self.meta.last_log_id.map_or(0, |id| id.index),
                bytes,
                "mesh: snapshot built"
            );
        }
        // The data went to the file as it was encoded and is not held here.
        // openraft keeps only the metadata of a snapshot it had built
        // (`core::sm::worker`, openraft 0.10.0-alpha.37, pinned) and sends
        // a peer the one `get_current_snapshot` reads from the file.
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: SnapshotData::InMemory(Bytes::new()),
        })
    }
}

impl<S: StateMachine> RaftStateMachine<MeshTypes> for StateStore<S> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<MeshTypes>>> + Unpin + Send,
    {
        let (mut entries_applied, mut bytes_applied) = (0, 0);
        let entries = entries.inspect(|item| {
            if let Ok((entry, _)) = item {
                entries_applied += 1;
                if let EntryPayload::Normal(command) = &entry.payload {
                    bytes_applied += command.0.len() as u64;
                }
            }
        });
        let result = apply_committed(
            &self.state,
            &mut self.last_applied,
            &mut self.last_membership,
            entries,
        )
        .await;
        self.applied_since_snapshot
            .applied(entries_applied, bytes_applied);
        result
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The state is captured now: what is applied from here on counts
        // towards the next snapshot.
        self.applied_since_snapshot.restart_count();
        SnapshotBuilder {
            meta: self.current_meta(),
            data: Some(self.state.read().snapshot_later()),
            file: self.file.clone(),
            applied_since_snapshot: self.applied_since_snapshot.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let snapshot = snapshot.into_bytes().await?;
        self.state
            .write()
            .restore(&snapshot)
            .map_err(invalid_data)?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        let bytes = snapshot.len();
        self.applied_since_snapshot.restart_count();
        self.applied_since_snapshot.snapshot_size(bytes as u64);
        let (file, meta_copy) = (self.file.clone(), meta.clone());
        tokio::task::spawn_blocking(move || {
            write_snapshot(&file, &meta_copy, |out| out.write_all(&snapshot))
        })
        .await
        .map_err(io::Error::other)??;
        metrics::counter!("vomesh_raft_snapshots_installed_total").increment(1);
        metrics::gauge!("vomesh_raft_snapshot_bytes").set(bytes as f64);
        tracing::info!(
            index = meta.last_log_id.map_or(0, |id| id.index),
            bytes,
            "mesh: snapshot installed from the leader"
        );
        Ok(())
    }

    /// The stored snapshot, its data left in the file (openraft asks for
    /// it to send a peer, and at start for its metadata).
    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let file = self.file.clone();
        let Some((meta, data)) = tokio::task::spawn_blocking(move || file.open_stored())
            .await
            .map_err(io::Error::other)??
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: wire::snapshot_meta_from_pb(&meta).map_err(invalid_data)?,
            snapshot: SnapshotData::Stored(data),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_log_id;

    /// A state that is its snapshot.
    #[derive(Default)]
    struct Text(Vec<u8>);

    impl StateMachine for Text {
        type RestoreError = io::Error;

        fn apply(&mut self, commands: Vec<CommittedCommand>) -> Vec<Bytes> {
            commands.iter().map(|_| Bytes::new()).collect()
        }

        fn snapshot(&self) -> Bytes {
            self.0.clone().into()
        }

        fn restore(&mut self, snapshot: &[u8]) -> Result<(), io::Error> {
            self.0 = snapshot.to_vec();
            Ok(())
        }
    }

    fn restored(dir: &Path) -> (Vec<u8>, Option<u64>) {
        let store = StateStore::open(dir, Text::default()).unwrap();
        let text = store.shared().read().0.clone();
        (text, store.last_applied.map(|id| id.index))
    }

    #[test]
    fn a_snapshot_kept_in_redb_by_an_earlier_version_is_moved_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_FILE_NAME);
        let meta = SnapshotMeta {
            last_log_id: Some(test_log_id(7)),
            last_membership: StoredMembership::default(),
        };
        let meta = wire::snapshot_meta_to_pb(&meta).unwrap().encode_to_vec();
        let db = Database::create(&legacy).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(SNAPSHOT).unwrap();
            table.insert(KEY_META, meta.as_slice()).unwrap();
            table.insert(KEY_DATA, b"the state".as_slice()).unwrap();
        }
        txn.commit().unwrap();
        drop(db);

        assert_eq!(restored(dir.path()), (b"the state".to_vec(), Some(7)));
        assert!(!legacy.exists(), "the redb file is removed once moved");
        assert!(dir.path().join(crate::snapshot_file::FILE_NAME).exists());
        assert_eq!(restored(dir.path()), (b"the state".to_vec(), Some(7)));
    }

    #[test]
    fn a_redb_file_without_a_snapshot_is_removed_and_nothing_restored() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_FILE_NAME);
        drop(Database::create(&legacy).unwrap());
        assert_eq!(restored(dir.path()), (vec![], None));
        assert!(!legacy.exists());
    }

    fn own_niceness() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            .expect("a thread may read its own priority")
    }

    #[tokio::test]
    async fn a_snapshot_is_built_at_a_lower_priority_than_the_node() {
        let node = own_niceness();
        let builder = in_background(|| Ok(own_niceness())).await.unwrap();
        assert_eq!(builder, (node + SNAPSHOT_NICENESS).min(19));
        assert_eq!(own_niceness(), node, "the caller keeps its priority");
    }

    #[tokio::test]
    async fn a_failed_build_reports_its_error() {
        let error = in_background(|| -> io::Result<()> { Err(io::Error::other("disk full")) })
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "disk full");
    }
}
