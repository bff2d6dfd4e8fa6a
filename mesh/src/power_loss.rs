//! Writes to the Raft log that, in a test-only mode, are lost when the
//! process dies before they are synced, as a power cut loses the kernel's
//! page cache.
//!
//! A `kill -9` of an ordinary process loses nothing its `write` calls
//! handed to the kernel: the page cache survives the process, so a crash
//! test with real files cannot tell whether a write was fsynced before the
//! node acknowledged it. In this mode it can: a segment's writes stay in
//! the process's memory until `sync_data`, which writes them to the file
//! and then fsyncs it. A node killed between the two loses exactly what a
//! machine losing power would lose. The failover suite (`tests/src/bin/
//! nemesis.rs`) turns it on with [`POWER_LOSS_ENV`] to prove that
//! everything acknowledged was fsynced first.
//!
//! The vote and purge point (`raft-log/meta`) and the snapshot file are
//! written whole to a temporary file, synced, and renamed: they have no
//! unsynced state to lose.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

/// Set to `1` in a node's environment to hold the log's writes in memory
/// until they are synced. Test-only.
pub const POWER_LOSS_ENV: &str = "VOMESH_TEST_POWER_LOSS";

/// Whether [`POWER_LOSS_ENV`] asks for the power-loss mode.
pub fn power_loss_mode() -> bool {
    std::env::var(POWER_LOSS_ENV).is_ok_and(|value| value == "1")
}

/// A write not yet synced: where, and what.
type UnsyncedWrite = (u64, Vec<u8>);

/// Writes to one log segment: straight to the file, or in power-loss mode
/// held until [`SegmentWriter::sync_data`].
pub(crate) struct SegmentWriter {
    file: Arc<File>,
    /// `Some` in power-loss mode: writes not yet synced, in order.
    unsynced: Option<Mutex<Vec<UnsyncedWrite>>>,
}

impl SegmentWriter {
    pub(crate) fn new(file: Arc<File>, power_loss: bool) -> Self {
        Self {
            file,
            unsynced: power_loss.then(|| Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        match &self.unsynced {
            None => self.file.write_all_at(bytes, offset),
            Some(unsynced) => {
                let mut unsynced = unsynced.lock().unwrap_or_else(PoisonError::into_inner);
                unsynced.push((offset, bytes.to_vec()));
                Ok(())
            }
        }
    }

    /// Makes every write so far durable.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        if let Some(unsynced) = &self.unsynced {
            let mut unsynced = unsynced.lock().unwrap_or_else(PoisonError::into_inner);
            for (offset, bytes) in unsynced.drain(..) {
                self.file.write_all_at(&bytes, offset)?;
            }
        }
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(path: &std::path::Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn in_power_loss_mode_only_synced_writes_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let writer = SegmentWriter::new(Arc::new(File::create(&path).unwrap()), true);
        writer.write_at(b"synced", 0).unwrap();
        writer.sync_data().unwrap();
        writer.write_at(b" lost", 6).unwrap();
        // A crash now: what the process held is gone.
        drop(writer);
        assert_eq!(file_bytes(&path), b"synced");
    }

    #[test]
    fn otherwise_writes_reach_the_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let writer = SegmentWriter::new(Arc::new(File::create(&path).unwrap()), false);
        writer.write_at(b"written", 0).unwrap();
        assert_eq!(file_bytes(&path), b"written");
    }
}
