//! Writing past the page cache (`O_DIRECT`), where the filesystem takes it.
//!
//! On the test machine (a VM whose freed memory goes back to the host)
//! the kernel's copy of every written byte into fresh page-cache pages was
//! the largest cost of writing: two thirds of the snapshot threads'
//! samples, and 44 % of each log thread's, in the three-site mesh under
//! publish load. A direct write sends the bytes to the disk from the
//! writer's own buffer, which is reused.
//!
//! Direct I/O asks that buffers, offsets and lengths be multiples of the
//! device's logical block: [`AlignedBuf`] keeps its bytes at [`ALIGNMENT`],
//! and the writers pad their writes to it. Where the filesystem refuses
//! direct I/O at the open (tmpfs) or at a write (a device with a larger
//! block), the same writes go through the page cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The alignment direct I/O asks of buffers, offsets and lengths: the
/// logical block of the device, 512 or 4,096 bytes on the disks in use.
pub(crate) const ALIGNMENT: usize = 4096;

const EINVAL: i32 = rustix::io::Errno::INVAL.raw_os_error();

/// Bytes whose first one sits at an [`ALIGNMENT`] boundary in memory.
pub(crate) struct AlignedBuf {
    /// `start` unused bytes, then the content; never grown past its
    /// capacity, which would move the content off the alignment.
    storage: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut storage: Vec<u8> = Vec::with_capacity(capacity + ALIGNMENT);
        let start = storage.as_ptr().align_offset(ALIGNMENT);
        storage.resize(start, 0);
        Self { storage, start }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..]
    }

    pub(crate) fn len(&self) -> usize {
        self.storage.len() - self.start
    }

    /// Makes room for `additional` bytes more, moving the content to a
    /// larger aligned buffer if it has to.
    pub(crate) fn reserve(&mut self, additional: usize) {
        if self.storage.capacity() - self.storage.len() < additional {
            let mut larger = Self::with_capacity((self.len() + additional).next_power_of_two());
            larger.extend_from_slice(self.as_slice());
            *self = larger;
        }
    }

    /// Gives back the memory of a buffer grown past `capacity` (for a
    /// rare large write), keeping the content.
    pub(crate) fn shrink_to(&mut self, capacity: usize) {
        if self.storage.capacity() > capacity + ALIGNMENT && self.len() <= capacity {
            let mut smaller = Self::with_capacity(capacity);
            smaller.extend_from_slice(self.as_slice());
            *self = smaller;
        }
    }

    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.storage.extend_from_slice(bytes);
    }

    /// Sets the length, with zeros where it grows.
    pub(crate) fn resize(&mut self, len: usize) {
        self.reserve(len.saturating_sub(self.len()));
        self.storage.resize(self.start + len, 0);
    }

    /// Keeps only the content from `from` on, moved to the front.
    pub(crate) fn keep_from(&mut self, from: usize) {
        self.storage.copy_within(self.start + from.., self.start);
        self.storage.truncate(self.storage.len() - from);
    }
}

/// Opens `path` with `options` plus `O_DIRECT` where the filesystem takes
/// it; says whether it did.
#[cfg(target_os = "linux")]
pub(crate) fn open_direct(options: &OpenOptions, path: &Path) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut direct = options.clone();
    direct.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
    match direct.open(path) {
        Ok(file) => Ok((file, true)),
        Err(error) if error.raw_os_error() == Some(EINVAL) => Ok((options.open(path)?, false)),
        Err(error) => Err(error),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn open_direct(options: &OpenOptions, path: &Path) -> io::Result<(File, bool)> {
    Ok((options.open(path)?, false))
}

/// Writes `bytes` at `offset` of a file opened by [`open_direct`]; where
/// the write is refused as unaligned, clears `O_DIRECT` on the file, sets
/// `direct` to false, and writes through the cache.
pub(crate) fn write_all_at(
    file: &File,
    direct: &mut bool,
    bytes: &[u8],
    offset: u64,
    what: &str,
) -> io::Result<()> {
    match file.write_all_at(bytes, offset) {
        Err(error) if *direct && error.raw_os_error() == Some(EINVAL) => {
            tracing::info!(
                "mesh: the {what} is written through the page cache: the filesystem \
                 refused a direct write ({error})"
            );
            stop_direct_io(file)?;
            *direct = false;
            file.write_all_at(bytes, offset)
        }
        result => result,
    }
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

    fn is_aligned(buf: &AlignedBuf) -> bool {
        (buf.as_slice().as_ptr() as usize).is_multiple_of(ALIGNMENT)
    }

    #[test]
    fn content_stays_aligned_as_it_grows_and_moves() {
        let mut buf = AlignedBuf::with_capacity(10);
        let data: Vec<u8> = (0..=255).cycle().take(3 * ALIGNMENT + 5).collect();
        for piece in data.chunks(1000) {
            buf.extend_from_slice(piece);
            assert!(is_aligned(&buf));
        }
        assert_eq!(buf.as_slice(), data);
        buf.keep_from(2 * ALIGNMENT);
        assert_eq!(buf.as_slice(), &data[2 * ALIGNMENT..]);
        buf.shrink_to(2 * ALIGNMENT);
        assert!(buf.storage.capacity() <= 3 * ALIGNMENT);
        assert!(is_aligned(&buf));
        assert_eq!(buf.as_slice(), &data[2 * ALIGNMENT..]);
        buf.resize(ALIGNMENT * 2);
        assert!(is_aligned(&buf));
        assert_eq!(&buf.as_slice()[..ALIGNMENT + 5], &data[2 * ALIGNMENT..]);
        assert!(buf.as_slice()[ALIGNMENT + 5..].iter().all(|b| *b == 0));
    }

    /// Where the filesystem takes `O_DIRECT` at the open, an aligned write
    /// goes direct; an unaligned one that it refuses (ext4 does) goes on
    /// through the cache, and the file holds both either way.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_unaligned_write_falls_back_to_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let (file, mut direct) = open_direct(&options, &path).unwrap();
        let mut block = AlignedBuf::with_capacity(ALIGNMENT);
        block.resize(ALIGNMENT);
        block.as_mut_slice().fill(7);
        write_all_at(&file, &mut direct, block.as_slice(), 0, "test file").unwrap();
        if !direct {
            println!("skipped the fallback half: {dir:?} refuses O_DIRECT");
            return;
        }
        write_all_at(
            &file,
            &mut direct,
            b"unaligned",
            ALIGNMENT as u64,
            "test file",
        )
        .unwrap();
        if direct {
            // tmpfs, since Linux 6.6, takes direct writes of any alignment.
            println!("skipped the fallback half: {dir:?} takes unaligned direct writes");
        } else {
            let flags = rustix::fs::fcntl_getfl(&file).unwrap();
            assert!(!flags.contains(rustix::fs::OFlags::DIRECT));
        }
        let mut expected = vec![7; ALIGNMENT];
        expected.extend_from_slice(b"unaligned");
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
