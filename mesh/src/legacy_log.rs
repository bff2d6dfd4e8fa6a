//! Moves a Raft log kept in redb by earlier versions (`raft-log.redb`:
//! entries in one `raft_log` table, or in segment tables `raft_log.<hex>`,
//! and the vote, committed id and purge point in `raft_meta`) into the
//! segment files, once, when the log opens.
//!
//! The redb file is removed only after the entries and the meta file are
//! synced, so a crash in between leaves it in place and the next start
//! moves it again, from an emptied log.

use std::io;
use std::path::Path;

use prost::Message;
use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};
use vomesh_proto::mesh as pb;

use crate::log_files::{EntryRecord, LogFiles};
use crate::log_meta::MetaFile;
use crate::log_store::{invalid_data, io_err, sync_parent_dir};

/// The file name earlier versions used, in the data directory.
pub(crate) const FILE_NAME: &str = "raft-log.redb";
const LOG_TABLE: &str = "raft_log";
const SEGMENT_PREFIX: &str = "raft_log.";
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// Entries written per append while moving.
const BATCH_ENTRIES: usize = 1024;

/// Moves the log at `path`, if there is one, into `files` and `meta_file`,
/// and returns the meta it held.
pub(crate) fn migrate(
    path: &Path,
    files: &LogFiles,
    meta_file: &MetaFile,
) -> io::Result<Option<pb::LogMeta>> {
    if !path.exists() {
        return Ok(None);
    }
    let (meta, entries) = read(path)?;
    // Left by a move that a crash interrupted.
    files.truncate_from(0)?;
    for batch in entries.chunks(BATCH_ENTRIES) {
        files.append(None, batch)?;
    }
    meta_file.write(&meta)?;
    std::fs::remove_file(path)?;
    sync_parent_dir(path)?;
    tracing::info!(
        from = %path.display(),
        entries = entries.len(),
        "mesh: Raft log moved out of redb into segment files"
    );
    Ok(Some(meta))
}

/// The meta and the unpurged entries, in index order.
fn read(path: &Path) -> io::Result<(pb::LogMeta, Vec<EntryRecord>)> {
    let db = Database::open(path).map_err(io_err)?;
    let txn = db.begin_read().map_err(io_err)?;
    let log_id = |key: &str| -> io::Result<Option<pb::LogId>> {
        let Ok(table) = txn.open_table(META) else {
            return Ok(None);
        };
        match table.get(key).map_err(io_err)? {
            None => Ok(None),
            Some(bytes) => pb::LogId::decode(bytes.value())
                .map(Some)
                .map_err(invalid_data),
        }
    };
    let vote = match txn.open_table(META) {
        Err(_) => None,
        Ok(table) => match table.get("vote").map_err(io_err)? {
            None => None,
            Some(bytes) => Some(pb::Vote::decode(bytes.value()).map_err(invalid_data)?),
        },
    };
    let meta = pb::LogMeta {
        vote,
        committed: log_id("committed")?,
        last_purged: log_id("last_purged")?,
    };
    let unpurged = meta.last_purged.as_ref().map_or(0, |id| id.index + 1);

    let mut entries = Vec::new();
    for table in txn.list_tables().map_err(io_err)? {
        let name = table.name();
        if name != LOG_TABLE && !name.starts_with(SEGMENT_PREFIX) {
            continue;
        }
        let table = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(name))
            .map_err(io_err)?;
        for item in table.range(unpurged..).map_err(io_err)? {
            let (index, bytes) = item.map_err(io_err)?;
            entries.push(EntryRecord {
                index: index.value(),
                bytes: bytes.value().to_vec(),
            });
        }
    }
    entries.sort_unstable_by_key(|entry| entry.index);
    Ok((meta, entries))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn write_legacy(path: &Path, table: &str, indexes: std::ops::RangeInclusive<u64>) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn
                .open_table(TableDefinition::<u64, &[u8]>::new(table))
                .unwrap();
            for index in indexes {
                log.insert(index, format!("entry {index}").as_bytes())
                    .unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            let vote = pb::Vote {
                term: 4,
                node_id: 1,
                committed: true,
            };
            meta.insert("vote", vote.encode_to_vec().as_slice())
                .unwrap();
            let purged = pb::LogId {
                term: 3,
                node_id: 1,
                index: 2,
            };
            meta.insert("last_purged", purged.encode_to_vec().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_redb_log_is_moved_without_its_purged_entries_and_removed() {
        for table in ["raft_log", "raft_log.0000000000000000"] {
            let dir = tempfile::tempdir().unwrap();
            let legacy = dir.path().join(FILE_NAME);
            write_legacy(&legacy, table, 1..=5);
            let log_dir = dir.path().join("raft-log");
            let (files, _) = LogFiles::open(&log_dir, 1 << 20, false).unwrap();
            let (meta_file, _) = MetaFile::open(&log_dir).unwrap();
            // As if an earlier move had been interrupted after its appends.
            files
                .append(
                    None,
                    &[EntryRecord {
                        index: 3,
                        bytes: b"stale".to_vec(),
                    }],
                )
                .unwrap();

            let meta = migrate(&legacy, &files, &meta_file).unwrap().unwrap();
            assert_eq!(meta.vote.map(|v| v.term), Some(4));
            assert_eq!(meta.last_purged.map(|id| id.index), Some(2));
            let moved: Vec<Bytes> = (3..=5).map(|i| Bytes::from(format!("entry {i}"))).collect();
            assert_eq!(files.read(0, 10).unwrap(), moved, "{table}");
            assert_eq!(
                MetaFile::open(&log_dir).unwrap().1.vote.map(|v| v.term),
                Some(4)
            );
            assert!(!legacy.exists());
            assert!(migrate(&legacy, &files, &meta_file).unwrap().is_none());
        }
    }
}
