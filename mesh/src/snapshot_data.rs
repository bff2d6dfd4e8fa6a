//! A snapshot's data as openraft passes it around (`SnapshotData`).
//!
//! A snapshot is the whole replicated state, up to `[mesh]
//! snapshot_bytes_max`. Read whole to be sent, it would sit in a leader's
//! memory, on top of the state it was taken from, for as long as a site
//! stays behind (openraft retries while the site is down). So the stored
//! snapshot is left in its file and read a chunk at a time as it is sent
//! ([`StoredData`]); only a snapshot received from the leader is held
//! whole, to be installed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::snapshot_file::CHECKSUM_MISMATCH;

/// The data of a snapshot.
#[derive(Debug)]
pub enum SnapshotData {
    /// The stored snapshot, left in its file.
    Stored(StoredData),
    /// Held in memory: received from the leader, or the empty data of a
    /// snapshot just built (openraft keeps only its metadata, and sends
    /// peers the stored one).
    InMemory(Bytes),
}

impl SnapshotData {
    /// Bytes of data.
    pub fn len(&self) -> u64 {
        match self {
            SnapshotData::Stored(stored) => stored.len,
            SnapshotData::InMemory(bytes) => bytes.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data in chunks of at most `chunk_bytes` (at least one), in order.
    pub fn chunks(self, chunk_bytes: usize) -> SnapshotChunks {
        let crc = match &self {
            SnapshotData::Stored(stored) => stored.crc_of_meta.clone(),
            SnapshotData::InMemory(_) => crc32fast::Hasher::new(),
        };
        SnapshotChunks {
            data: self,
            chunk_bytes: chunk_bytes.max(1),
            next: 0,
            crc,
            read_ahead: None,
        }
    }

    /// The data whole, read from its file (and its checksum verified) if
    /// it is stored.
    pub async fn into_bytes(self) -> io::Result<Bytes> {
        match self {
            SnapshotData::InMemory(bytes) => Ok(bytes),
            SnapshotData::Stored(stored) => {
                let mut chunks = SnapshotData::Stored(stored).chunks(usize::MAX);
                Ok(chunks.next().await?.unwrap_or_default())
            }
        }
    }
}

/// The data of the stored snapshot file: where it lies in the file, and
/// the checksum it must have. The open file keeps it readable when a newer
/// snapshot is renamed over it while it is being sent.
#[derive(Debug)]
pub struct StoredData {
    file: Arc<File>,
    /// For errors.
    path: PathBuf,
    offset: u64,
    len: u64,
    /// The checksum over the metadata, to be continued over the data.
    crc_of_meta: crc32fast::Hasher,
    /// The checksum the file's trailer (or first-layout header) gives.
    crc32: u32,
}

impl StoredData {
    pub(crate) fn new(
        file: File,
        path: PathBuf,
        (offset, len): (u64, u64),
        crc_of_meta: crc32fast::Hasher,
        crc32: u32,
    ) -> Self {
        Self {
            file: Arc::new(file),
            path,
            offset,
            len,
            crc_of_meta,
            crc32,
        }
    }

    /// Starts reading `len` bytes of the data from `start`.
    fn read(&self, start: u64, len: u64) -> JoinHandle<io::Result<Vec<u8>>> {
        let (file, at) = (self.file.clone(), self.offset + start);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; len as usize];
            file.read_exact_at(&mut buf, at).map(|()| buf)
        })
    }
}

/// [`SnapshotData::chunks`].
pub struct SnapshotChunks {
    data: SnapshotData,
    chunk_bytes: usize,
    /// Where the next chunk starts in the data.
    next: u64,
    /// The stored data's checksum so far (unused for data in memory).
    crc: crc32fast::Hasher,
    /// The read of the stored chunk after the one last returned, started
    /// then so that the disk works while that one is sent.
    read_ahead: Option<JoinHandle<io::Result<Vec<u8>>>>,
}

impl SnapshotChunks {
    /// The next chunk, or `None` past the end. A stored snapshot's
    /// checksum is verified before its last chunk is returned: a damaged
    /// file is never sent, or installed, whole.
    pub async fn next(&mut self) -> io::Result<Option<Bytes>> {
        let remaining = self.data.len().saturating_sub(self.next);
        let take = remaining.min(self.chunk_bytes as u64);
        let start = self.next;
        let chunk = match &self.data {
            SnapshotData::InMemory(bytes) => {
                if take == 0 {
                    return Ok(None);
                }
                // Within the data: `take` is at most what remains of it.
                bytes.slice(start as usize..(start + take) as usize)
            }
            SnapshotData::Stored(stored) => {
                if take == 0 {
                    // Past the end; the empty data is verified here.
                    if start == 0 && stored.len == 0 {
                        verify(stored, self.crc.clone())?;
                    }
                    return Ok(None);
                }
                let reading = match self.read_ahead.take() {
                    Some(reading) => reading,
                    None => stored.read(start, take),
                };
                let read = reading.await.map_err(io::Error::other)?.map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", stored.path.display()))
                })?;
                self.crc.update(&read);
                if take == remaining {
                    verify(stored, self.crc.clone())?;
                } else {
                    let after = remaining - take;
                    let next = stored.read(start + take, after.min(self.chunk_bytes as u64));
                    self.read_ahead = Some(next);
                }
                Bytes::from(read)
            }
        };
        self.next += take;
        Ok(Some(chunk))
    }
}

fn verify(stored: &StoredData, crc: crc32fast::Hasher) -> io::Result<()> {
    if crc.finalize() == stored.crc32 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {CHECKSUM_MISMATCH}", stored.path.display()),
        ))
    }
}
