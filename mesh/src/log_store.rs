//! The durable Raft log and vote, in `raft-log/` of the data directory:
//! the entries in segment files ([`crate::log_files`]), the vote and the
//! purge point in a meta file ([`crate::log_meta`]).
//!
//! Durability rules (openraft's storage contract, §5 of the Raft paper):
//! - the vote is written and synced before `save_vote` returns, so a node
//!   never votes twice in a term across a crash;
//! - `append` writes all entries it is given with **one** write and one
//!   `fdatasync`, together with the appends queued behind it, so one sync
//!   covers a whole batch of proposals (openraft merges concurrent client
//!   writes into one append), and the flush callback fires only after the
//!   sync returned;
//! - the purge point is written before the segments it covers are deleted,
//!   so the log state never shows a gap that no snapshot covers;
//! - the committed log id is an optimisation (it lets a restarted node
//!   apply up to it without waiting for a leader): `save_committed` only
//!   notes it, and the next append writes it as a record before its
//!   entries (the next vote or purge, or the store's close, into the meta
//!   file); every append starts with the last one known, which marks
//!   where each append begins for recovery. openraft awaits
//!   `save_committed` in its core loop between a commit and the apply, so
//!   a write of its own there delayed every commit round on every node. A node restarted after a crash may therefore find
//!   a committed id one append older than the last one it learned; what it
//!   does not apply by itself it applies once a leader tells it the commit
//!   index again.
//!
//! Disk I/O runs on the log's own thread ([`crate::log_writer`]), in the
//! order it was asked for: `append` returns once the entries are readable
//! and the flush callback fires after their sync, so the Raft core
//! replicates while the local copy is being written. The entries appended
//! last are kept in memory ([`RecentEntries`]), those not yet written
//! always, and the reads that follow each append (replication, apply) are
//! answered from there.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use prost::Message;
use vomesh_proto::mesh as pb;

use crate::legacy_log;
use crate::log_files::{EntryRecord, LogFiles};
use crate::log_meta::MetaFile;
use crate::log_writer::{self, Append, LogWriter};
use crate::power_loss;
use crate::recent_entries::RecentEntries;
use crate::types::{Entry, LogId, MeshTypes, Vote};
use crate::wire;

/// The log's directory in the data directory.
pub const DIR_NAME: &str = "raft-log";
/// A segment takes appends until it holds this many bytes; purges delete
/// whole segments.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Bytes of appends waiting for the log's thread, beyond which `append`
/// waits for it: at one site, a quarter of a second of appends at 100 MB/s
/// (over 100,000 2 KiB events), held in memory.
const UNWRITTEN_BYTES_MAX: usize = 32 << 20;
/// Counter `{result}`: reads answered from [`RecentEntries`] or from disk.
const LOG_READS_TOTAL: &str = "vomesh_raft_log_reads_total";

/// Could not open the log.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct StoreOpenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
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

/// The Raft log store. Cloning shares the same files; a clone is also the
/// log reader openraft's replication tasks use.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writer: LogWriter<Shared>,
}

struct Shared {
    files: LogFiles,
    meta_file: MetaFile,
    /// The meta as last written.
    meta: Mutex<pb::LogMeta>,
    /// Held across a meta file write, so writes land in the order made.
    meta_write: Mutex<()>,
    /// The committed log id noted last by `save_committed` (in memory:
    /// what a read answers), and whether it is not yet written.
    committed: Mutex<NotedCommitted>,
    recent: Mutex<RecentEntries>,
    /// Last: the files are closed when it fires.
    closed: DropSignal,
}

#[derive(Default)]
struct NotedCommitted {
    id: Option<pb::LogId>,
    unwritten: bool,
}

/// Blocks the dropping thread for one small synced write, once, when the
/// node shuts down, so that a node restarted alone after a clean stop
/// applies all it had committed.
impl Drop for Shared {
    fn drop(&mut self) {
        if !lock(&self.committed).unwritten {
            return;
        }
        if let Err(error) = self.write_meta(|_| {}) {
            tracing::warn!(%error, "mesh: the committed log id was not saved at shutdown");
        }
    }
}

impl Shared {
    /// The committed id noted and not yet written, marked written: if the
    /// write that takes it fails, it is lost, which only means a restart
    /// applies less by itself.
    fn take_committed(&self) -> Option<pb::LogId> {
        let mut noted = lock(&self.committed);
        std::mem::take(&mut noted.unwritten)
            .then(|| noted.id)
            .flatten()
    }

    /// Changes the meta with `change` and writes it, with the committed id
    /// noted since the last write (blocking).
    fn write_meta(&self, change: impl FnOnce(&mut pb::LogMeta)) -> io::Result<()> {
        let _turn = lock(&self.meta_write);
        let committed = self.take_committed();
        let meta = {
            let mut meta = lock(&self.meta);
            change(&mut meta);
            if committed.is_some() {
                meta.committed = committed;
            }
            *meta
        };
        self.meta_file.write(&meta)
    }

    fn last_purged(&self) -> Option<pb::LogId> {
        lock(&self.meta).last_purged
    }
}

impl log_writer::Store for Shared {
    /// One write and one sync, starting with the committed id: the one
    /// noted since the last write, or else the last known. Written every
    /// time (once there is one), it marks where each append starts, which
    /// tells recovery a torn append from damage to synced ones (see
    /// [`crate::log_files`]).
    fn write(&self, records: &[EntryRecord]) -> io::Result<()> {
        let committed = {
            let mut noted = lock(&self.committed);
            noted.unwritten = false;
            noted.id.map(|id| id.encode_to_vec())
        };
        self.files.append(committed.as_deref(), records)
    }

    fn written_upto(&self, index: u64) {
        lock(&self.recent).written_upto(index);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The later of two committed ids.
fn later(a: Option<pb::LogId>, b: Option<pb::LogId>) -> Option<pb::LogId> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.index > a.index { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl LogStore {
    /// Opens (or creates) the log in `data_dir`, keeping up to
    /// `cache_bytes` of the entries appended last in memory. A log an
    /// earlier version kept in redb is moved into it first.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<Self, StoreOpenError> {
        Self::open_with_segments(data_dir, cache_bytes, SEGMENT_BYTES)
    }

    fn open_with_segments(
        data_dir: &Path,
        cache_bytes: usize,
        segment_bytes: u64,
    ) -> Result<Self, StoreOpenError> {
        let dir = data_dir.join(DIR_NAME);
        let error = |source| StoreOpenError {
            path: dir.clone(),
            source,
        };
        let power_loss = power_loss::power_loss_mode();
        if power_loss {
            tracing::warn!(
                path = %dir.display(),
                "{}=1: unsynced log writes are kept in memory and lost on a crash (test-only)",
                power_loss::POWER_LOSS_ENV
            );
        }
        let (files, recovered) = LogFiles::open(&dir, segment_bytes, power_loss).map_err(error)?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                path = %dir.display(),
                bytes = recovered.torn_bytes,
                "mesh: cut the end of the log, written by an append that was never synced"
            );
        }
        let (meta_file, mut meta) = MetaFile::open(&dir).map_err(error)?;
        let legacy = data_dir.join(legacy_log::FILE_NAME);
        if let Some(moved) = legacy_log::migrate(&legacy, &files, &meta_file).map_err(error)? {
            meta = moved;
        }
        let in_files = recovered
            .committed
            .map(pb::LogId::decode)
            .transpose()
            .map_err(|e| error(invalid_data(e)))?;
        let committed = later(meta.committed, in_files);
        let shared = Arc::new(Shared {
            files,
            meta_file,
            meta: Mutex::new(meta),
            meta_write: Mutex::new(()),
            committed: Mutex::new(NotedCommitted {
                id: committed,
                unwritten: false,
            }),
            recent: Mutex::new(RecentEntries::new(cache_bytes)),
            closed: DropSignal::new(),
        });
        let writer = LogWriter::start(shared.clone(), UNWRITTEN_BYTES_MAX).map_err(error)?;
        Ok(Self { shared, writer })
    }

    /// Completes once every clone of this store is dropped and the files
    /// closed.
    pub(crate) fn wait_closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.closed.dropped()
    }

    /// Runs `f` on the log's thread, after the writes asked for before.
    async fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> io::Result<T> + Send + 'static,
    {
        self.writer.run(f).await
    }

    fn recent(&self) -> MutexGuard<'_, RecentEntries> {
        lock(&self.shared.recent)
    }
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

fn decode_entry(bytes: bytes::Bytes) -> io::Result<Entry> {
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
        self.run(move |shared| {
            // Purged entries still in a segment not yet deleted are skipped.
            let unpurged = shared
                .last_purged()
                .map_or(Some(0), |id| id.index.checked_add(1));
            let Some(first) = unpurged
                .map(|unpurged| first.max(unpurged))
                .filter(|first| *first <= last)
            else {
                return Ok(Vec::new());
            };
            shared
                .files
                .read(first, last)?
                .into_iter()
                .map(decode_entry)
                .collect()
        })
        .await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(lock(&self.shared.meta)
            .vote
            .as_ref()
            .map(wire::vote_from_pb))
    }
}

impl RaftLogStorage<MeshTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<MeshTypes>> {
        let last_purged = self
            .shared
            .last_purged()
            .map(|id| wire::log_id_from_pb(&id));
        let last_in_log = self
            .run(|shared| {
                let Some((_, last)) = shared.files.span() else {
                    return Ok(None);
                };
                let entry = shared.files.read(last, last)?.pop();
                entry
                    .map(|bytes| decode_entry(bytes).map(|e| e.log_id))
                    .transpose()
            })
            .await?;
        // The last entry kept can be a purged one (purges delete whole
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
        let vote = wire::vote_to_pb(vote);
        self.run(move |shared| shared.write_meta(|meta| meta.vote = Some(vote)))
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let Some(committed) = committed else {
            return Ok(());
        };
        *lock(&self.shared.committed) = NotedCommitted {
            id: Some(wire::log_id_to_pb(&committed)),
            unwritten: true,
        };
        Ok(())
    }

    /// The id noted last, written or not: within one process the store
    /// answers with what it was told; after a restart, with what reached
    /// the disk.
    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(lock(&self.shared.committed)
            .id
            .as_ref()
            .map(wire::log_id_from_pb))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<MeshTypes>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let records = entries
            .iter()
            .map(|e| {
                Ok(EntryRecord {
                    index: e.log_id.index,
                    bytes: wire::entry_to_pb(e).map_err(invalid_data)?.encode_to_vec(),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        // Readable from now on, as openraft requires of a returned append.
        self.recent().appended(&entries);
        self.writer
            .append(Append {
                records,
                flushed: callback,
            })
            .await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        // Forgotten first: whatever the files do, no read may be answered
        // with an entry that is being removed.
        self.recent()
            .truncated_after(last_log_id.map(|id| id.index));
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.run(move |shared| shared.files.truncate_from(from))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let marker = wire::log_id_to_pb(&log_id);
        self.recent().purged_upto(log_id.index);
        self.run(move |shared| {
            shared.write_meta(|meta| meta.last_purged = Some(marker))?;
            shared.files.remove_upto(marker.index)
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

    struct FileStores;

    fn storage_error<E: std::error::Error + 'static>(e: &E) -> StorageError<MeshTypes> {
        StorageError::read(MeshTypes::err_from_error(e))
    }

    impl StoreBuilder<MeshTypes, LogStore, StateStore<Indexes>, tempfile::TempDir> for FileStores {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateStore<Indexes>), StorageError<MeshTypes>>
        {
            let dir = tempfile::tempdir().map_err(|e| storage_error(&e))?;
            let log = LogStore::open(dir.path(), 1 << 20).map_err(|e| storage_error(&e))?;
            let sm =
                StateStore::open(dir.path(), Indexes::default()).map_err(|e| storage_error(&e))?;
            Ok((dir, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_store_passes_openraft_storage_suite() {
        Suite::test_all(FileStores).await.unwrap();
    }

    async fn append_blanks(store: &mut LogStore, indexes: std::ops::RangeInclusive<u64>) {
        let entries = indexes.map(|i| Entry::new_blank(test_log_id(i)));
        let (sender, flushed) = MeshTypes::oneshot();
        store
            .append(entries, IOFlushed::signal(sender))
            .await
            .unwrap();
        // `append` returns before the write; the callback says it is synced.
        flushed.await.unwrap().unwrap();
    }

    async fn indexes(
        store: &mut LogStore,
        range: impl RangeBounds<u64> + Clone + Debug + Send,
    ) -> Vec<u64> {
        let entries = store.try_get_log_entries(range).await.unwrap();
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// The log as a crash would leave it: a copy of its files, opened.
    async fn after_crash(data_dir: &Path) -> (tempfile::TempDir, LogStore) {
        let copy = tempfile::tempdir().unwrap();
        let to = copy.path().join(DIR_NAME);
        std::fs::create_dir(&to).unwrap();
        for file in std::fs::read_dir(data_dir.join(DIR_NAME)).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
        }
        let store = LogStore::open(copy.path(), 1 << 20).unwrap();
        (copy, store)
    }

    #[tokio::test]
    async fn the_committed_id_reaches_the_disk_with_the_next_append_or_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), 1 << 20).unwrap();
        append_blanks(&mut store, 1..=3).await;
        store.save_committed(Some(test_log_id(2))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(test_log_id(2)));
        // Noted, not written: a crash now forgets it.
        let (_copy, mut crashed) = after_crash(dir.path()).await;
        assert_eq!(crashed.read_committed().await.unwrap(), None);
        // The next append writes it.
        append_blanks(&mut store, 4..=4).await;
        let (_copy, mut crashed) = after_crash(dir.path()).await;
        assert_eq!(
            crashed.read_committed().await.unwrap(),
            Some(test_log_id(2))
        );
        // And a clean close.
        store.save_committed(Some(test_log_id(4))).await.unwrap();
        let closed = store.wait_closed();
        drop(store);
        closed.await;
        let mut reopened = LogStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            reopened.read_committed().await.unwrap(),
            Some(test_log_id(4))
        );
    }

    /// Appends made while no new commit is noted still start with the
    /// committed id, so recovery refuses damage to them (they were synced
    /// before the next) rather than cutting them off as a torn tail.
    #[tokio::test]
    async fn damage_to_an_append_before_the_last_is_refused_at_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), 1 << 20).unwrap();
        append_blanks(&mut store, 0..=2).await;
        store.save_committed(Some(test_log_id(1))).await.unwrap();
        append_blanks(&mut store, 3..=4).await;
        append_blanks(&mut store, 5..=6).await;
        append_blanks(&mut store, 7..=8).await;
        let (path, at) = store.shared.files.record_at(5).unwrap();
        let closed = store.wait_closed();
        drop(store);
        closed.await;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize + 9] ^= 0xFF;
        std::fs::write(&path, bytes).unwrap();
        let error = LogStore::open(dir.path(), 1 << 20).err().expect("refused");
        assert_eq!(error.source.kind(), io::ErrorKind::InvalidData);
        assert!(
            error.to_string().contains("already acknowledged"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_vote_and_appended_entries_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), 1 << 20).unwrap();
        let vote = Vote::new(7, 2);
        store.save_vote(&vote).await.unwrap();
        append_blanks(&mut store, 0..=9).await;
        let (_copy, mut crashed) = after_crash(dir.path()).await;
        assert_eq!(crashed.read_vote().await.unwrap(), Some(vote));
        assert_eq!(indexes(&mut crashed, ..).await, (0..=9).collect::<Vec<_>>());
        let state = crashed.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(test_log_id(9)));
    }

    /// openraft reads an append back as soon as `append` returns, before
    /// the flush callback: with no cache budget at all, the entries not yet
    /// written are still found (held in memory until written, or read
    /// after the write they queue behind), many appends in a row.
    #[tokio::test]
    async fn an_append_is_readable_when_it_returns_before_it_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path(), 0).unwrap();
        let mut flushes = Vec::new();
        for index in 0..200 {
            let (sender, flushed) = MeshTypes::oneshot();
            let entry = Entry::new_blank(test_log_id(index));
            store
                .append([entry], IOFlushed::signal(sender))
                .await
                .unwrap();
            assert_eq!(indexes(&mut store, index..=index).await, [index]);
            flushes.push(flushed);
        }
        for flushed in flushes {
            flushed.await.unwrap().unwrap();
        }
        assert_eq!(indexes(&mut store, ..).await, (0..200).collect::<Vec<_>>());
        assert_eq!(
            store.recent().get(0, 0).map(|e| e.len()),
            None,
            "evicted once written"
        );
    }

    #[tokio::test]
    async fn purge_deletes_whole_segments_and_hides_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open_with_segments(dir.path(), 0, 512).unwrap();
        for i in 1..=300 {
            append_blanks(&mut store, i..=i).await;
        }
        let segments = store.shared.files.segment_count();
        assert!(segments > 3, "{segments} segments");

        store.purge(test_log_id(150)).await.unwrap();
        assert!(store.shared.files.segment_count() < segments);
        assert_eq!(indexes(&mut store, ..153).await, [151, 152]);
        assert_eq!(indexes(&mut store, 5..=150).await, Vec::<u64>::new());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(test_log_id(150)));
        assert_eq!(state.last_log_id, Some(test_log_id(300)));

        store.truncate_after(Some(test_log_id(205))).await.unwrap();
        assert_eq!(indexes(&mut store, 204..).await, [204, 205]);
        append_blanks(&mut store, 206..=206).await;
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(test_log_id(206))
        );

        // A purge past the end of the log (a snapshot installed ahead of
        // it) leaves the purge point as the last log id, and survives a
        // restart.
        store.purge(test_log_id(500)).await.unwrap();
        assert_eq!(store.shared.files.segment_count(), 0);
        let closed = store.wait_closed();
        drop(store);
        closed.await;
        let mut store = LogStore::open(dir.path(), 0).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(test_log_id(500)));
        assert_eq!(indexes(&mut store, ..).await, Vec::<u64>::new());
        append_blanks(&mut store, 501..=501).await;
        assert_eq!(indexes(&mut store, ..).await, [501]);
    }

    #[tokio::test]
    async fn a_log_an_earlier_version_kept_in_redb_is_moved_on_open() {
        use redb::{Database, TableDefinition};
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new(3, 1);
        {
            let db = Database::create(dir.path().join(legacy_log::FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn
                    .open_table(TableDefinition::<u64, &[u8]>::new(
                        "raft_log.0000000000000000",
                    ))
                    .unwrap();
                for index in 0..=4 {
                    let entry = Entry::new_blank(test_log_id(index));
                    let bytes = wire::entry_to_pb(&entry).unwrap().encode_to_vec();
                    log.insert(index, bytes.as_slice()).unwrap();
                }
                let mut meta = txn
                    .open_table(TableDefinition::<&str, &[u8]>::new("raft_meta"))
                    .unwrap();
                let vote = wire::vote_to_pb(&vote).encode_to_vec();
                meta.insert("vote", vote.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let mut store = LogStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&mut store, ..).await, [0, 1, 2, 3, 4]);
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert!(!dir.path().join(legacy_log::FILE_NAME).exists());
    }
}
