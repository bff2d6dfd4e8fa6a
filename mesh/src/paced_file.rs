//! A file written once, front to back, and seldom read: the snapshot.
//!
//! It is written in blocks of [`PACE_BYTES`], each synced before the
//! next: one sync of the whole file would have the disk take it in one
//! flush, and the Raft log's fsyncs, which every commit waits for, queue
//! behind it (on the 2-core test machine a 2.6 KB append + fdatasync, 0.2
//! ms at the median, took up to 46–73 ms while 150 MB were written and
//! synced beside it in one go, 17–26 ms when they were synced every 1–4
//! MiB).
//!
//! On Linux the blocks go past the page cache (`O_DIRECT`), from a buffer
//! aligned as direct I/O requires. Through the cache, the kernel copied
//! every byte into fresh cache pages: two thirds of the snapshot threads'
//! samples in the three-site mesh under publish load, those threads 3–12 %
//! of the machine's, and the pages then pushed out the log segments a
//! lagging follower reads. A snapshot is read back whole only at a
//! restart or to send it to a peer, which the cache would not have kept
//! it for anyway. Where the filesystem refuses direct I/O (at the open,
//! or at a write: some want a larger alignment), the file is written
//! through the cache as before.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::direct_io::{self, ALIGNMENT, AlignedBuf};

/// Bytes written between two syncs.
pub(crate) const PACE_BYTES: usize = 1024 * 1024;

/// A file being written, a block at a time; [`PacedFile::finish`] writes
/// the rest and syncs it all.
pub(crate) struct PacedFile {
    file: File,
    /// Written with `O_DIRECT`.
    direct: bool,
    /// The block being filled, up to `PACE_BYTES`.
    block: AlignedBuf,
    /// Bytes written to the file: whole blocks.
    written: u64,
}

impl PacedFile {
    /// Creates (or truncates) the file at `path`.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let (file, direct) = direct_io::open_direct(&options, path)?;
        Ok(Self {
            file,
            direct,
            block: AlignedBuf::with_capacity(PACE_BYTES),
            written: 0,
        })
    }

    /// Writes what is left and syncs the file, data and size.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        let tail = self.block.len();
        // A direct write of the last block is padded to the alignment, and
        // the padding then cut off.
        if self.direct {
            self.block.resize(tail.next_multiple_of(ALIGNMENT));
        }
        let padded = self.block.len() != tail;
        self.write_block()?;
        if padded {
            self.file.set_len(self.written + tail as u64)?;
        }
        self.file.sync_all()
    }

    /// Writes the block at the end of the file.
    fn write_block(&mut self) -> io::Result<()> {
        direct_io::write_all_at(
            &self.file,
            &mut self.direct,
            self.block.as_slice(),
            self.written,
            "snapshot",
        )
    }
}

impl Write for PacedFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let taken = data.len().min(PACE_BYTES - self.block.len());
        self.block.extend_from_slice(&data[..taken]);
        if self.block.len() == PACE_BYTES {
            self.write_block()?;
            self.file.sync_data()?;
            self.written += PACE_BYTES as u64;
            self.block.resize(0);
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn files_of_any_length_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        for len in [0, 1, 4095, 4096, 4097, PACE_BYTES, PACE_BYTES * 5 / 2 + 7] {
            let data = sample(len);
            let mut file = PacedFile::create(&path).unwrap();
            for piece in data.chunks(PACE_BYTES / 3 + 11) {
                file.write_all(piece).unwrap();
            }
            file.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "{len} bytes");
        }
    }

    #[test]
    fn whole_blocks_reach_the_file_as_they_fill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let data = sample(PACE_BYTES * 2 + 100);
        let mut file = PacedFile::create(&path).unwrap();
        for piece in data.chunks(64 * 1024) {
            file.write_all(piece).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), data[..PACE_BYTES * 2]);
        file.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    /// Where the filesystem takes `O_DIRECT`, the blocks go direct (what
    /// happens where a write is refused: `direct_io`'s tests).
    #[test]
    fn direct_io_is_used_where_the_filesystem_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let mut options = OpenOptions::new();
        options.write(true).create(true);
        let takes_direct = direct_io::open_direct(&options, &dir.path().join("probe"))
            .unwrap()
            .1;
        let mut file = PacedFile::create(&path).unwrap();
        let data = sample(PACE_BYTES + 5);
        file.write_all(&data).unwrap();
        assert_eq!(file.direct, takes_direct);
        file.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
