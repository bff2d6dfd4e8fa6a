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

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use crate::direct_io::{self, ALIGNMENT, AlignedBuf};

/// Set to `1` in a node's environment to hold the log's writes in memory
/// until they are synced. Test-only.
pub const POWER_LOSS_ENV: &str = "VOMESH_TEST_POWER_LOSS";

/// Whether [`POWER_LOSS_ENV`] asks for the power-loss mode.
pub fn power_loss_mode() -> bool {
    std::env::var(POWER_LOSS_ENV).is_ok_and(|value| value == "1")
}

/// A write not yet synced: where, and what (aligned, as a direct write
/// takes it).
type UnsyncedWrite = (u64, AlignedBuf);

/// Writes to one log segment, past the page cache where the filesystem
/// takes it (see `direct_io`): straight to the file, or in power-loss mode
/// held until [`SegmentWriter::sync_data`].
pub(crate) struct SegmentWriter {
    /// The segment opened again for writing alone, with `O_DIRECT` where it
    /// can be.
    file: File,
    direct: bool,
    /// `Some` in power-loss mode: writes not yet synced, in order.
    unsynced: Option<Vec<UnsyncedWrite>>,
}

impl SegmentWriter {
    pub(crate) fn open(path: &Path, power_loss: bool) -> io::Result<Self> {
        let (file, direct) = direct_io::open_direct(OpenOptions::new().write(true), path)?;
        Ok(Self {
            file,
            direct,
            unsynced: power_loss.then(Vec::new),
        })
    }

    /// What offsets and lengths of writes must be multiples of: the direct
    /// I/O alignment while writes go direct, else 1.
    pub(crate) fn alignment(&self) -> usize {
        if self.direct { ALIGNMENT } else { 1 }
    }

    /// Writes `bytes` (aligned in memory as [`AlignedBuf`] keeps them, and
    /// in offset and length to [`SegmentWriter::alignment`]) at `offset`.
    pub(crate) fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        match &mut self.unsynced {
            None => self.write_now(bytes, offset),
            Some(unsynced) => {
                let mut held = AlignedBuf::with_capacity(bytes.len());
                held.extend_from_slice(bytes);
                unsynced.push((offset, held));
                Ok(())
            }
        }
    }

    /// Makes every write so far durable.
    pub(crate) fn sync_data(&mut self) -> io::Result<()> {
        let held = self.unsynced.as_mut().map(std::mem::take);
        for (offset, bytes) in held.unwrap_or_default() {
            self.write_now(bytes.as_slice(), offset)?;
        }
        self.file.sync_data()
    }

    fn write_now(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        direct_io::write_all_at(&self.file, &mut self.direct, bytes, offset, "Raft log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One aligned block of `byte`s.
    fn block(byte: u8) -> AlignedBuf {
        let mut block = AlignedBuf::with_capacity(ALIGNMENT);
        block.extend_from_slice(&[byte; ALIGNMENT]);
        block
    }

    fn file_bytes(path: &std::path::Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn in_power_loss_mode_only_synced_writes_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        File::create(&path).unwrap();
        let mut writer = SegmentWriter::open(&path, true).unwrap();
        let (synced, lost) = (block(b'S'), block(b'L'));
        writer.write_at(synced.as_slice(), 0).unwrap();
        writer.sync_data().unwrap();
        writer.write_at(lost.as_slice(), ALIGNMENT as u64).unwrap();
        // A crash now: what the process held is gone.
        drop(writer);
        assert_eq!(file_bytes(&path), synced.as_slice());
    }

    #[test]
    fn otherwise_writes_reach_the_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        File::create(&path).unwrap();
        let mut writer = SegmentWriter::open(&path, false).unwrap();
        let written = block(b'W');
        writer.write_at(written.as_slice(), 0).unwrap();
        assert_eq!(file_bytes(&path), written.as_slice());
    }
}
