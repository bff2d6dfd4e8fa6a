//! A test-only redb storage backend that loses every write not yet synced
//! when the process dies, as a power cut loses the kernel's page cache.
//!
//! A `kill -9` of an ordinary process loses nothing its `write` calls
//! handed to the kernel: the page cache survives the process, so a crash
//! test with real files cannot tell whether a write was fsynced before the
//! node acknowledged it. With this backend it can: writes stay in the
//! process's memory until redb calls `sync_data`, which writes them to the
//! file and then fsyncs it. A node killed between the two loses exactly what
//! a machine losing power would lose. The failover suite (`tests/src/bin/
//! nemesis.rs`) turns it on with [`POWER_LOSS_ENV`] to prove that everything
//! acknowledged was fsynced first.
//!
//! Never for production: a clean shutdown writes the pending bytes, but a
//! crash loses up to one transaction more than the real file would.

use std::fmt;
use std::fs::File;
use std::io;
use std::sync::Mutex;

use redb::StorageBackend;
use redb::backends::FileBackend;

/// Set to `1` in a node's environment to open its redb files with
/// [`UnsyncedWritesLostOnCrash`]. Test-only.
pub const POWER_LOSS_ENV: &str = "VOMESH_TEST_POWER_LOSS";

/// Whether [`POWER_LOSS_ENV`] asks for the power-loss backend.
pub fn power_loss_mode() -> bool {
    std::env::var(POWER_LOSS_ENV).is_ok_and(|value| value == "1")
}

/// Opens (or creates) the redb file at `path` on this backend.
pub fn create_database(path: &std::path::Path) -> Result<redb::Database, redb::Error> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(redb::DatabaseError::from)?;
    Ok(redb::Builder::new().create_with_backend(UnsyncedWritesLostOnCrash::new(file)?)?)
}

/// A change to the file not yet synced, in the order redb made it.
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// A file backend whose writes reach the file only at `sync_data`.
pub struct UnsyncedWritesLostOnCrash {
    file: FileBackend,
    pending: Mutex<Vec<Pending>>,
}

impl UnsyncedWritesLostOnCrash {
    pub fn new(file: File) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            file: FileBackend::new(file)?,
            pending: Mutex::new(Vec::new()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // The list stays consistent across a panic elsewhere: each change is
        // pushed whole.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the pending changes to the file (not synced).
    fn write_pending(&self, pending: &mut Vec<Pending>) -> io::Result<()> {
        for change in pending.drain(..) {
            match change {
                Pending::Write { offset, data } => self.file.write(offset, &data)?,
                Pending::SetLen(len) => self.file.set_len(len)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for UnsyncedWritesLostOnCrash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsyncedWritesLostOnCrash")
            .field("pending_changes", &self.pending().len())
            .finish()
    }
}

impl StorageBackend for UnsyncedWritesLostOnCrash {
    fn len(&self) -> io::Result<u64> {
        let mut len = self.file.len()?;
        for change in self.pending().iter() {
            len = match change {
                Pending::Write { offset, data } => len.max(offset + data.len() as u64),
                Pending::SetLen(new_len) => *new_len,
            };
        }
        Ok(len)
    }

    /// The file's bytes with the pending changes replayed over them.
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let pending = self.pending();
        let file_len = self.file.len()?;
        out.fill(0);
        let on_file = file_len.saturating_sub(offset).min(out.len() as u64) as usize;
        if on_file > 0 {
            self.file.read(offset, &mut out[..on_file])?;
        }
        let end = offset + out.len() as u64;
        let mut len = file_len;
        for change in pending.iter() {
            match change {
                Pending::Write { offset: at, data } => {
                    let from = offset.max(*at);
                    let to = end.min(at + data.len() as u64);
                    if from < to {
                        out[(from - offset) as usize..(to - offset) as usize]
                            .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
                    }
                    len = len.max(at + data.len() as u64);
                }
                Pending::SetLen(new_len) => {
                    // Shrinking drops the bytes past the end; growing again
                    // brings zeros back, as a file does.
                    if *new_len < end {
                        let cut = new_len.saturating_sub(offset) as usize;
                        out[cut..].fill(0);
                    }
                    len = *new_len;
                }
            }
        }
        if end > len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {}..{end} past the end ({len})", offset),
            ));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.pending().push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut pending = self.pending();
        self.write_pending(&mut pending)?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.pending().push(Pending::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// A clean close hands the pending writes to the kernel, as a process
    /// exiting would; only a crash loses them.
    fn close(&self) -> io::Result<()> {
        let mut pending = self.pending();
        self.write_pending(&mut pending)?;
        self.file.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn open(path: &std::path::Path) -> Database {
        create_database(path).unwrap()
    }

    fn insert(db: &Database, key: u64, durability: Durability) {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(durability).unwrap();
        txn.open_table(TABLE).unwrap().insert(key, key).unwrap();
        txn.commit().unwrap();
    }

    fn keys(db: &Database) -> Vec<u64> {
        let txn = db.begin_read().unwrap();
        let Ok(table) = txn.open_table(TABLE) else {
            return Vec::new();
        };
        let range = redb::ReadableTable::iter(&table).unwrap();
        range.map(|entry| entry.unwrap().0.value()).collect()
    }

    #[test]
    fn a_crash_loses_exactly_the_commits_that_were_not_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = open(&path);
        insert(&db, 1, Durability::Immediate);
        insert(&db, 2, Durability::None);
        // Everything is readable in the running process.
        assert_eq!(keys(&db), vec![1, 2]);
        // A crash: the process's memory (and so the pending writes) is gone
        // without redb's Drop running.
        std::mem::forget(db);
        // The forgotten handle still holds the file lock, so read a copy.
        let copy = dir.path().join("after-crash.redb");
        std::fs::copy(&path, &copy).unwrap();
        let reopened = Database::create(&copy).unwrap();
        assert_eq!(keys(&reopened), vec![1]);
    }

    #[test]
    fn a_clean_close_keeps_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = open(&path);
        insert(&db, 1, Durability::Immediate);
        insert(&db, 2, Durability::None);
        drop(db);
        assert_eq!(keys(&Database::create(&path).unwrap()), vec![1, 2]);
    }
}
