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

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes written between two syncs.
pub(crate) const PACE_BYTES: usize = 1024 * 1024;

/// The alignment direct I/O asks of buffers, offsets and lengths: the
/// logical block of the device, 512 or 4,096 bytes on the disks in use.
const ALIGNMENT: usize = 4096;

const EINVAL: i32 = rustix::io::Errno::INVAL.raw_os_error();

/// A file being written, a block at a time; [`PacedFile::finish`] writes
/// the rest and syncs it all.
pub(crate) struct PacedFile {
    file: File,
    /// Written with `O_DIRECT`.
    direct: bool,
    /// `PACE_BYTES + ALIGNMENT` bytes, of which the `PACE_BYTES` from
    /// `block_start` are aligned: the block being filled.
    buffer: Vec<u8>,
    block_start: usize,
    filled: usize,
    /// Bytes written to the file: whole blocks.
    written: u64,
}

impl PacedFile {
    /// Creates (or truncates) the file at `path`.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let (file, direct) = create_direct(path)?;
        let buffer = vec![0; PACE_BYTES + ALIGNMENT];
        let block_start = buffer.as_ptr().align_offset(ALIGNMENT);
        Ok(Self {
            file,
            direct,
            buffer,
            block_start,
            filled: 0,
            written: 0,
        })
    }

    /// Writes what is left and syncs the file, data and size.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        let tail = self.filled;
        // A direct write of the last block is padded to the alignment, and
        // the padding then cut off.
        let padded = if self.direct {
            tail.next_multiple_of(ALIGNMENT)
        } else {
            tail
        };
        self.block_mut()[tail..padded].fill(0);
        self.write_block(padded)?;
        if padded != tail {
            self.file.set_len(self.written + tail as u64)?;
        }
        self.file.sync_all()
    }

    fn block_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[self.block_start..self.block_start + PACE_BYTES]
    }

    /// Writes the first `len` bytes of the block at the end of the file.
    fn write_block(&mut self, len: usize) -> io::Result<()> {
        let block = &self.buffer[self.block_start..self.block_start + len];
        match self.file.write_all_at(block, self.written) {
            Err(error) if self.direct && error.raw_os_error() == Some(EINVAL) => {
                tracing::info!(
                    "mesh: the snapshot is written through the page cache: the filesystem \
                     refused a direct write ({error})"
                );
                stop_direct_io(&self.file)?;
                self.direct = false;
                self.file.write_all_at(block, self.written)
            }
            result => result,
        }
    }
}

impl Write for PacedFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let filled = self.filled;
        let taken = data.len().min(PACE_BYTES - filled);
        self.block_mut()[filled..filled + taken].copy_from_slice(&data[..taken]);
        self.filled += taken;
        if self.filled == PACE_BYTES {
            self.write_block(PACE_BYTES)?;
            self.file.sync_data()?;
            self.written += PACE_BYTES as u64;
            self.filled = 0;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Creates the file for direct I/O where the filesystem takes it; says
/// whether it did.
#[cfg(target_os = "linux")]
fn create_direct(path: &Path) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path);
    match direct {
        Ok(file) => Ok((file, true)),
        Err(error) if error.raw_os_error() == Some(EINVAL) => Ok((File::create(path)?, false)),
        Err(error) => Err(error),
    }
}

#[cfg(not(target_os = "linux"))]
fn create_direct(path: &Path) -> io::Result<(File, bool)> {
    Ok((File::create(path)?, false))
}

#[cfg(target_os = "linux")]
fn stop_direct_io(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - rustix::fs::OFlags::DIRECT)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn stop_direct_io(_file: &File) -> io::Result<()> {
    Ok(())
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

    /// Where the filesystem takes `O_DIRECT` at the open, the file is
    /// written with it; a write it refuses goes on through the cache, and
    /// the file is whole either way.
    #[cfg(target_os = "linux")]
    #[test]
    fn direct_io_is_used_where_the_filesystem_takes_it_and_left_where_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let mut file = PacedFile::create(&path).unwrap();
        let takes_direct = create_direct(&dir.path().join("probe")).unwrap().1;
        assert_eq!(file.direct, takes_direct);
        if !takes_direct {
            println!("skipped the fallback half: {dir:?} refuses O_DIRECT");
            return;
        }
        let data = sample(PACE_BYTES * 2 + 3);
        file.write_all(&data[..PACE_BYTES + 5]).unwrap();
        assert!(file.direct, "the first block went direct");
        // Moved off the alignment, the next block's write is refused.
        file.buffer.rotate_right(1);
        file.block_start += 1;
        file.write_all(&data[PACE_BYTES + 5..]).unwrap();
        assert!(!file.direct);
        let flags = rustix::fs::fcntl_getfl(&file.file).unwrap();
        assert!(!flags.contains(rustix::fs::OFlags::DIRECT));
        file.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
