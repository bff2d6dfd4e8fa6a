//! The durable Raft log and vote, in a redb file (`raft-log.redb`).
//!
//! Durability rules (openraft's storage contract, §5 of the Raft paper):
//! - the vote is committed with `Durability::Immediate` (fsync) before
//!   `save_vote` returns, so a node never votes twice in a term across a crash;
//! - `append` writes all entries it is given in **one** write transaction, so
//!   one fsync covers a whole batch of proposals (openraft merges concurrent
//!   client writes into one append), and the flush callback fires only after
//!   that commit returned;
//! - the committed log id is an optimisation (it lets a restarted node apply
//!   up to it without waiting for a leader): `save_committed` only notes it,
//!   and the next append (or vote) writes it in its own transaction, or
//!   the store when it is closed.
//!   openraft awaits `save_committed` in its core loop between a commit and
//!   the apply, so a transaction of its own there (a blocking-pool hop and
//!   a redb commit) delayed every commit round on every node. A node
//!   restarted after a crash may therefore find a committed id one append
//!   older than the last one it learned; what it does not apply by itself
//!   it applies once a leader tells it the commit index again.
//!
//! Entries are stored as `vomesh.mesh.Entry` protobufs keyed by log index,
//! in one table per segment of [`SEGMENT_ENTRIES`] consecutive indexes. A
//! purge drops the segments it covers whole, which frees their pages in
//! bulk; deleting entries one at a time is a copy-on-write update of the
//! B-tree each, and was 11% of a 3-node mesh's CPU under publish load.
//! The entries a purge leaves in a partly covered segment stay on disk
//! until a later purge covers all of it, and reads never return them.
//!
//! redb is synchronous; every transaction runs on tokio's blocking pool so
//! an fsync never stalls the Raft core's executor thread. The entries
//! appended last are also kept in memory ([`RecentEntries`]), and the reads
//! that follow each append (replication, apply) are answered from there.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use vomesh_proto::mesh as pb;

use crate::power_loss;
use crate::recent_entries::RecentEntries;
use crate::types::{Entry, LogId, MeshTypes, Vote};
use crate::wire;

/// Entries per log segment (one redb table each).
const SEGMENT_ENTRIES: u64 = 1024;
/// Segment tables are named this, then the segment number in hex.
const SEGMENT_PREFIX: &str = "raft_log.";
/// The single log table of earlier versions, moved into segments on open.
const UNSEGMENTED_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
/// Counter `{result}`: reads answered from [`RecentEntries`] or from disk.
const LOG_READS_TOTAL: &str = "vomesh_raft_log_reads_total";

/// Could not open or initialise a redb file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct StoreOpenError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: redb::Error,
}

/// Lets others wait until its owner is dropped: declared as the owner's
/// last field, it is dropped after the fields that hold files.
pub(crate) struct DropSignal(tokio::sync::watch::Sender<()>);

impl DropSignal {
    pub(crate) fn new() -> Self {
        Self(tokio::sync::watch::channel(()).0)
    }

    /// A future that completes once the owner is dropped. Holds no handle
    /// to the owner itself.
    pub(crate) fn dropped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move { while rx.changed().await.is_ok() {} }
    }
}

/// A redb database that reports when it has been closed: `db` is declared
/// before `closed`, so the database is dropped (flushed, its file lock
/// released) before `closed` wakes whoever waits on
/// [`RedbFile::wait_closed`].
pub(crate) struct RedbFile {
    db: Database,
    closed: DropSignal,
}

impl RedbFile {
    /// Opens (or creates) the file and its tables.
    pub(crate) fn open(
        path: &Path,
        init: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<Arc<Self>, StoreOpenError> {
        let open = || -> Result<Database, redb::Error> {
            let db = if power_loss::power_loss_mode() {
                tracing::warn!(
                    path = %path.display(),
                    "{}=1: unsynced writes are kept in memory and lost on a crash (test-only)",
                    power_loss::POWER_LOSS_ENV
                );
                power_loss::create_database(path)?
            } else {
                Database::create(path)?
            };
            let txn = db.begin_write()?;
            init(&txn)?;
            txn.commit()?;
            // The commit fsynced the file's contents, not its directory
            // entry: without this a power cut soon after the first start
            // could leave a data directory without the file, and so a node
            // that forgot its vote and log.
            sync_parent_dir(path).map_err(redb::DatabaseError::from)?;
            Ok(db)
        };
        let db = open().map_err(|source| StoreOpenError {
            path: path.to_owned(),
            source,
        })?;
        Ok(Arc::new(Self {
            db,
            closed: DropSignal::new(),
        }))
    }

    /// A future that completes once the last handle is dropped and the file
    /// is closed. Holds no handle itself.
    pub(crate) fn wait_closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.closed.dropped()
    }
}

impl std::ops::Deref for RedbFile {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

/// The Raft log store. Cloning shares the same database; a clone is also
/// the log reader openraft's replication tasks use.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<RedbFile>,
    committed: Arc<NotedCommitted>,
    recent: Arc<std::sync::Mutex<RecentEntries>>,
}

/// The committed log id (encoded) last noted by `save_committed` and not
/// yet written: taken by the next transaction that writes, or written when
/// the last handle of the store is dropped (the node shuts down), so that a
/// node restarted alone after a clean stop applies all it had committed.
struct NotedCommitted {
    db: Arc<RedbFile>,
    id: std::sync::Mutex<Option<Vec<u8>>>,
}

impl NotedCommitted {
    fn note(&self, id: Vec<u8>) {
        *self.lock() = Some(id);
    }

    /// Taken before a write transaction that stores it: if that
    /// transaction fails the id is lost, which only means a restart
    /// applies less by itself.
    fn take(&self) -> Option<Vec<u8>> {
        self.lock().take()
    }

    fn noted(&self) -> Option<Vec<u8>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Blocks the dropping thread for one small fsynced transaction, once, when
/// the node shuts down.
impl Drop for NotedCommitted {
    fn drop(&mut self) {
        let Some(id) = self.take() else {
            return;
        };
        let write = || -> io::Result<()> {
            let txn = self.db.begin_write().map_err(io_err)?;
            insert_committed(&txn, &id)?;
            commit(txn)
        };
        if let Err(error) = write() {
            tracing::warn!(%error, "mesh: the committed log id was not saved at shutdown");
        }
    }
}

fn insert_committed(txn: &redb::WriteTransaction, id: &[u8]) -> io::Result<()> {
    txn.open_table(META)
        .map_err(io_err)?
        .insert(KEY_COMMITTED, id)
        .map_err(io_err)?;
    Ok(())
}

impl LogStore {
    /// Opens (or creates) the log file at `path`, keeping up to
    /// `cache_bytes` of the entries appended last in memory.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreOpenError> {
        let db = RedbFile::open(path, |txn| {
            txn.open_table(META)?;
            segment_unsegmented_log(txn)
        })?;
        Ok(Self {
            committed: Arc::new(NotedCommitted {
                db: db.clone(),
                id: std::sync::Mutex::new(None),
            }),
            db,
            recent: Arc::new(std::sync::Mutex::new(RecentEntries::new(cache_bytes))),
        })
    }

    /// Completes once every clone of this store is dropped and the file closed.
    pub(crate) fn wait_closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.db.wait_closed()
    }

    async fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> io::Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(io::Error::other)?
    }

    /// Writes `value` under `key`, with the committed log id noted since
    /// the last write, and fsyncs.
    async fn write_meta(&self, key: &'static str, value: Vec<u8>) -> io::Result<()> {
        let committed = self.committed.take();
        self.run(move |db| {
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(META)
                .map_err(io_err)?
                .insert(key, value.as_slice())
                .map_err(io_err)?;
            if let Some(committed) = &committed {
                insert_committed(&txn, committed)?;
            }
            commit(txn)
        })
        .await
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn read_meta<M: Message + Default + 'static>(
        &self,
        key: &'static str,
    ) -> io::Result<Option<M>> {
        self.run(move |db| {
            let txn = db.begin_read().map_err(io_err)?;
            let table = txn.open_table(META).map_err(io_err)?;
            match table.get(key).map_err(io_err)? {
                None => Ok(None),
                Some(bytes) => M::decode(bytes.value()).map(Some).map_err(invalid_data),
            }
        })
        .await
    }
}

/// Commits `txn` with redb's default `Durability::Immediate` (it returns
/// after the fsync), timed into `vomesh_storage_fsync_seconds`: every Raft
/// append waits for one, so a slow disk shows there first.
fn commit(txn: redb::WriteTransaction) -> io::Result<()> {
    let started = std::time::Instant::now();
    txn.commit().map_err(io_err)?;
    metrics::histogram!("vomesh_storage_fsync_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

/// fsyncs the directory holding `path`, making its entry durable.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

pub(crate) fn io_err(e: impl Into<redb::Error>) -> io::Error {
    io::Error::other(e.into())
}

pub(crate) fn invalid_data(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn segment_of(index: u64) -> u64 {
    index / SEGMENT_ENTRIES
}

fn segment_table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

fn segment_name(segment: u64) -> String {
    format!("{SEGMENT_PREFIX}{segment:016x}")
}

/// The segments among `tables`, in index order.
fn segments(tables: impl Iterator<Item = redb::UntypedTableHandle>) -> Vec<u64> {
    let mut segments: Vec<u64> = tables
        .filter_map(|table| {
            let hex = table.name().strip_prefix(SEGMENT_PREFIX)?;
            u64::from_str_radix(hex, 16).ok()
        })
        .collect();
    segments.sort_unstable();
    segments
}

/// Moves the entries of a log written before segments existed into
/// segments, in the transaction that opens the file.
fn segment_unsegmented_log(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    let exists = txn
        .list_tables()?
        .any(|table| table.name() == UNSEGMENTED_LOG.name());
    if !exists {
        return Ok(());
    }
    {
        let old = txn.open_table(UNSEGMENTED_LOG)?;
        for item in old.iter()? {
            let (index, value) = item?;
            let name = segment_name(segment_of(index.value()));
            txn.open_table(segment_table(&name))?
                .insert(index.value(), value.value())?;
        }
    }
    txn.delete_table(UNSEGMENTED_LOG)?;
    Ok(())
}

/// The index of the last purged entry, as the purge marker records it.
fn last_purged_index(txn: &redb::ReadTransaction) -> io::Result<Option<u64>> {
    let meta = txn.open_table(META).map_err(io_err)?;
    match meta.get(KEY_LAST_PURGED).map_err(io_err)? {
        None => Ok(None),
        Some(bytes) => pb::LogId::decode(bytes.value())
            .map(|id| Some(id.index))
            .map_err(invalid_data),
    }
}

/// The first and last index `range` includes, `None` if it includes none.
fn index_span<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, u64)> {
    let first = match range.start_bound() {
        Bound::Included(&index) => index,
        Bound::Excluded(&index) => index.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let last = match range.end_bound() {
        Bound::Included(&index) => index,
        Bound::Excluded(&index) => index.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (first <= last).then_some((first, last))
}

fn decode_entry(bytes: &[u8]) -> io::Result<Entry> {
    let pb = pb::Entry::decode(bytes).map_err(invalid_data)?;
    wire::entry_from_pb(pb).map_err(invalid_data)
}

impl RaftLogReader<MeshTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        // An empty range needs neither the cache nor the disk.
        let Some((first, last)) = index_span(&range) else {
            return Ok(Vec::new());
        };
        if let Some(entries) = self.recent().get(first, last) {
            metrics::counter!(LOG_READS_TOTAL, "result" => "hit").increment(1);
            return Ok(entries);
        }
        metrics::counter!(LOG_READS_TOTAL, "result" => "miss").increment(1);
        self.run(move |db| {
            let txn = db.begin_read().map_err(io_err)?;
            let mut entries = Vec::new();
            // Purged entries still in a partly purged segment are skipped.
            let unpurged = last_purged_index(&txn)?.map_or(Some(0), |i| i.checked_add(1));
            let Some(first) = unpurged
                .map(|unpurged| first.max(unpurged))
                .filter(|first| *first <= last)
            else {
                return Ok(entries);
            };
            let wanted = segment_of(first)..=segment_of(last);
            let tables = txn.list_tables().map_err(io_err)?;
            for segment in segments(tables).into_iter().filter(|s| wanted.contains(s)) {
                let name = segment_name(segment);
                let table = txn.open_table(segment_table(&name)).map_err(io_err)?;
                for item in table.range(first..=last).map_err(io_err)? {
                    let (_, value) = item.map_err(io_err)?;
                    entries.push(decode_entry(value.value())?);
                }
            }
            Ok(entries)
        })
        .await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self
            .read_meta::<pb::Vote>(KEY_VOTE)
            .await?
            .map(|v| wire::vote_from_pb(&v)))
    }
}

impl RaftLogStorage<MeshTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<MeshTypes>> {
        let last_purged = self
            .read_meta::<pb::LogId>(KEY_LAST_PURGED)
            .await?
            .map(|id| wire::log_id_from_pb(&id));
        let last_in_log = self
            .run(|db| {
                let txn = db.begin_read().map_err(io_err)?;
                let tables = txn.list_tables().map_err(io_err)?;
                let Some(&segment) = segments(tables).last() else {
                    return Ok(None);
                };
                let name = segment_name(segment);
                let table = txn.open_table(segment_table(&name)).map_err(io_err)?;
                match table.last().map_err(io_err)? {
                    None => Ok(None),
                    Some((_, value)) => decode_entry(value.value()).map(|e| Some(e.log_id)),
                }
            })
            .await?;
        // The last entry kept can be a purged one (purges drop whole
        // segments), or older than the purge point (a snapshot installed
        // past the end of the log).
        let last_log_id = match (last_in_log, last_purged) {
            (Some(kept), Some(purged)) if kept.index <= purged.index => Some(purged),
            (kept, purged) => kept.or(purged),
        };
        Ok(LogState {
            last_log_id,
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let bytes = wire::vote_to_pb(vote).encode_to_vec();
        self.write_meta(KEY_VOTE, bytes).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let Some(committed) = committed else {
            return Ok(());
        };
        let bytes = wire::log_id_to_pb(&committed).encode_to_vec();
        self.committed.note(bytes);
        Ok(())
    }

    /// The id noted last, written or not: within one process the store
    /// answers with what it was told; after a restart, with what reached
    /// the disk.
    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        let committed = match self.committed.noted() {
            Some(bytes) => Some(pb::LogId::decode(bytes.as_slice()).map_err(invalid_data)?),
            None => self.read_meta::<pb::LogId>(KEY_COMMITTED).await?,
        };
        Ok(committed.map(|id| wire::log_id_from_pb(&id)))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<MeshTypes>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| {
                Ok((
                    e.log_id.index,
                    wire::entry_to_pb(e).map_err(invalid_data)?.encode_to_vec(),
                ))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let committed = self.committed.take();
        let result = self
            .run(move |db| {
                let txn = db.begin_write().map_err(io_err)?;
                if let Some(committed) = &committed {
                    insert_committed(&txn, committed)?;
                }
                for run in encoded.chunk_by(|(a, _), (b, _)| segment_of(*a) == segment_of(*b)) {
                    let name = segment_name(segment_of(run[0].0));
                    let mut table = txn.open_table(segment_table(&name)).map_err(io_err)?;
                    for (index, bytes) in run {
                        table.insert(*index, bytes.as_slice()).map_err(io_err)?;
                    }
                }
                // Default durability is Immediate: commit returns after fsync.
                commit(txn)
            })
            .await;
        match result {
            Ok(()) => {
                self.recent().appended(&entries);
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        // Forgotten first: whatever the transaction does, no read may be
        // answered with an entry that is being removed.
        self.recent()
            .truncated_after(last_log_id.map(|id| id.index));
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.run(move |db| {
            let txn = db.begin_write().map_err(io_err)?;
            let tables = txn.list_tables().map_err(io_err)?;
            for segment in segments(tables)
                .into_iter()
                .filter(|&s| s >= segment_of(from))
            {
                let name = segment_name(segment);
                if segment * SEGMENT_ENTRIES >= from {
                    txn.delete_table(segment_table(&name)).map_err(io_err)?;
                } else {
                    txn.open_table(segment_table(&name))
                        .map_err(io_err)?
                        .retain_in(from.., |_, _| false)
                        .map_err(io_err)?;
                }
            }
            commit(txn)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let marker = wire::log_id_to_pb(&log_id).encode_to_vec();
        let upto = log_id.index;
        self.recent().purged_upto(upto);
        self.run(move |db| {
            let txn = db.begin_write().map_err(io_err)?;
            // The purge marker and the deletion commit together, so the log
            // state never shows a gap that no snapshot covers.
            txn.open_table(META)
                .map_err(io_err)?
                .insert(KEY_LAST_PURGED, marker.as_slice())
                .map_err(io_err)?;
            let tables = txn.list_tables().map_err(io_err)?;
            // Only segments that end at or before `upto`.
            let covered = segments(tables)
                .into_iter()
                .take_while(|&s| (s + 1) * SEGMENT_ENTRIES - 1 <= upto);
            for segment in covered {
                txn.delete_table(segment_table(&segment_name(segment)))
                    .map_err(io_err)?;
            }
            commit(txn)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::StorageError;
    use openraft::entry::RaftEntry;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::state_store::StateStore;
    use crate::types::{CommittedCommand, StateMachine, test_log_id};

    /// Remembers the indexes it applied; enough for openraft's suite, which
    /// only applies blank and membership entries.
    #[derive(Default)]
    struct Indexes(Vec<u64>);

    impl StateMachine for Indexes {
        type RestoreError = std::io::Error;

        fn apply(&mut self, commands: Vec<CommittedCommand>) -> Vec<Bytes> {
            commands
                .iter()
                .map(|c| {
                    self.0.push(c.index);
                    Bytes::new()
                })
                .collect()
        }

        fn snapshot(&self) -> Bytes {
            self.0
                .iter()
                .flat_map(|i| i.to_be_bytes())
                .collect::<Vec<u8>>()
                .into()
        }

        fn restore(&mut self, snapshot: &[u8]) -> Result<(), Self::RestoreError> {
            self.0 = snapshot
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
                .collect();
            Ok(())
        }
    }

    struct RedbStores;

    fn storage_error<E: std::error::Error + 'static>(e: &E) -> StorageError<MeshTypes> {
        StorageError::read(MeshTypes::err_from_error(e))
    }

    impl StoreBuilder<MeshTypes, LogStore, StateStore<Indexes>, tempfile::TempDir> for RedbStores {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateStore<Indexes>), StorageError<MeshTypes>>
        {
            let dir = tempfile::tempdir().map_err(|e| storage_error(&e))?;
            let log = LogStore::open(&dir.path().join("raft-log.redb"), 1 << 20)
                .map_err(|e| storage_error(&e))?;
            let sm =
                StateStore::open(dir.path(), Indexes::default()).map_err(|e| storage_error(&e))?;
            Ok((dir, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_store_passes_openraft_storage_suite() {
        Suite::test_all(RedbStores).await.unwrap();
    }

    async fn append_blanks(store: &mut LogStore, indexes: std::ops::RangeInclusive<u64>) {
        let entries = indexes.map(|i| Entry::new_blank(test_log_id(i)));
        store.append(entries, IOFlushed::noop()).await.unwrap();
    }

    async fn indexes(
        store: &mut LogStore,
        range: impl RangeBounds<u64> + Clone + Debug + Send,
    ) -> Vec<u64> {
        let entries = store.try_get_log_entries(range).await.unwrap();
        entries.iter().map(|e| e.log_id.index).collect()
    }

    fn segment_count(store: &LogStore) -> usize {
        segments(store.db.begin_read().unwrap().list_tables().unwrap()).len()
    }

    #[tokio::test]
    async fn the_committed_id_reaches_the_disk_with_the_next_append_or_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let mut store = LogStore::open(&path, 1 << 20).unwrap();
        append_blanks(&mut store, 1..=3).await;
        store.save_committed(Some(test_log_id(2))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(test_log_id(2)));
        // Noted, not written: the file does not hold it yet.
        let on_disk = |store: &LogStore| {
            let txn = store.db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            meta.get(KEY_COMMITTED)
                .unwrap()
                .map(|bytes| pb::LogId::decode(bytes.value()).unwrap().index)
        };
        assert_eq!(on_disk(&store), None);
        append_blanks(&mut store, 4..=4).await;
        assert_eq!(on_disk(&store), Some(2));
        store.save_committed(Some(test_log_id(4))).await.unwrap();
        let closed = store.wait_closed();
        drop(store);
        closed.await;
        // Written when the store closed.
        let mut reopened = LogStore::open(&path, 1 << 20).unwrap();
        assert_eq!(
            reopened.read_committed().await.unwrap(),
            Some(test_log_id(4))
        );
    }

    #[tokio::test]
    async fn purge_drops_whole_segments_and_hides_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(&dir.path().join("log.redb"), 0).unwrap();
        let n = SEGMENT_ENTRIES;
        append_blanks(&mut store, 1..=3 * n).await;
        assert_eq!(segment_count(&store), 4, "segments 0..=3");

        // Into segment 1: segment 0 goes, segment 1 stays but reads hide
        // what was purged of it.
        store.purge(test_log_id(n + 9)).await.unwrap();
        assert_eq!(segment_count(&store), 3);
        assert_eq!(indexes(&mut store, ..n + 12).await, [n + 10, n + 11]);
        assert_eq!(indexes(&mut store, 5..=n + 9).await, Vec::<u64>::new());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(test_log_id(n + 9)));
        assert_eq!(state.last_log_id, Some(test_log_id(3 * n)));

        // A read spanning segments comes back whole and in order.
        let spanning = indexes(&mut store, 2 * n - 2..2 * n + 2).await;
        assert_eq!(spanning, (2 * n - 2..2 * n + 2).collect::<Vec<_>>());

        // Truncating inside segment 2 drops segment 3 and the tail of 2.
        store
            .truncate_after(Some(test_log_id(2 * n + 5)))
            .await
            .unwrap();
        assert_eq!(segment_count(&store), 2);
        assert_eq!(
            indexes(&mut store, 2 * n + 4..).await,
            [2 * n + 4, 2 * n + 5]
        );
        append_blanks(&mut store, 2 * n + 6..=2 * n + 6).await;
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(test_log_id(2 * n + 6))
        );

        // A purge past the end of the log (a snapshot installed ahead of
        // it) leaves the purge point as the last log id.
        store.purge(test_log_id(5 * n)).await.unwrap();
        assert_eq!(segment_count(&store), 0);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(test_log_id(5 * n)));
        assert_eq!(indexes(&mut store, ..).await, Vec::<u64>::new());
    }

    #[tokio::test]
    async fn a_log_written_before_segments_is_moved_into_them_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut old = txn.open_table(UNSEGMENTED_LOG).unwrap();
                for index in [1, SEGMENT_ENTRIES + 1] {
                    let entry = Entry::new_blank(test_log_id(index));
                    let bytes = wire::entry_to_pb(&entry).unwrap().encode_to_vec();
                    old.insert(index, bytes.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let mut store = LogStore::open(&path, 1 << 20).unwrap();
        assert_eq!(indexes(&mut store, ..).await, [1, SEGMENT_ENTRIES + 1]);
        assert_eq!(segment_count(&store), 2);
        let txn = store.db.begin_read().unwrap();
        let mut tables = txn.list_tables().unwrap();
        assert!(!tables.any(|t| t.name() == UNSEGMENTED_LOG.name()));
    }
}
