//! The latest snapshot, in a file of its own (`raft-snapshot.bin`).
//!
//! A snapshot is one blob, 100 MB and more; a database adds nothing to it
//! but copies. In redb each snapshot was copied into freshly allocated page
//! buffers (the page faults alone were a tenth of a site's CPU in the
//! three-site mesh), handed to the kernel in one go and synced, so the disk
//! took the whole snapshot in one flush while the Raft log's fsyncs, which
//! every commit waits for, queued behind it.
//!
//! Here a snapshot is written to `raft-snapshot.tmp` as the state machine
//! encodes it, piece by piece: the encoding is never held whole in memory
//! (building one into a single buffer spent more than half of the
//! builder's time in page faults, the kernel zeroing the buffer's fresh
//! pages). It is synced as it goes and kept out of the page cache
//! ([`PacedFile`]), then renamed over the previous one and the directory
//! synced: a crash at any point leaves the old snapshot or the new one,
//! whole.
//!
//! Writers take turns, and a snapshot older than the stored one (a build
//! that finished after a newer snapshot was installed from the leader)
//! does not replace it: the log behind the newer one may already be
//! purged, and a restart from the older one would find a gap.
//!
//! Layout (`vomesh.mesh.SnapshotFileHeader`): a magic, a header with the
//! metadata, the data, then a trailer with the data's length and a CRC-32,
//! which are known only once the data is written. Files of the first
//! layout (the length and checksum in the header) are still read. A file
//! that is shorter or longer than it says, or whose checksum does not
//! match, is refused with the reason.

use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use bytes::{Buf, Bytes};
use prost::Message;
use vomesh_proto::mesh as pb;

use crate::log_store::{DropSignal, sync_parent_dir};
#[cfg(test)]
use crate::paced_file::PACE_BYTES;
use crate::paced_file::PacedFile;
use crate::snapshot_data::StoredData;

/// The file name in the data directory.
pub(crate) const FILE_NAME: &str = "raft-snapshot.bin";
/// Where a snapshot is written before it replaces the last one.
const TEMPORARY_NAME: &str = "raft-snapshot.tmp";

/// The magic of the layout written: the header holds the metadata alone,
/// and the trailer the data's length and checksum.
const MAGIC: &[u8; 8] = b"vomesh\0\x02";
/// The magic of the first layout: the header holds the data's length and
/// checksum too, and the data ends the file.
const MAGIC_V1: &[u8; 8] = b"vomesh\0\x01";
/// Why a file whose data does not match its checksum is refused.
pub(crate) const CHECKSUM_MISMATCH: &str = "checksum mismatch: the file is corrupt";
/// The data's length (u64) and CRC-32 (u32), big-endian.
const TRAILER_BYTES: usize = 12;

/// A snapshot as stored: its metadata and its data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: pb::SnapshotMeta,
    pub(crate) data: Bytes,
}

/// The snapshot file of one data directory. Reports when the last handle
/// is dropped (a build in progress holds one), like the log's files.
pub(crate) struct SnapshotFile {
    path: PathBuf,
    temporary: PathBuf,
    /// Held while writing (not while reading: `get_current_snapshot` must
    /// not wait for a build). The log index of the stored snapshot.
    stored_index: Mutex<Option<u64>>,
    closed: DropSignal,
}

impl SnapshotFile {
    /// The snapshot file in `dir` and the snapshot stored there, if any. A
    /// temporary file left by a crash in the middle of a write is removed.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Option<StoredSnapshot>)> {
        let mut file = Self {
            path: dir.join(FILE_NAME),
            temporary: dir.join(TEMPORARY_NAME),
            stored_index: Mutex::new(None),
            closed: DropSignal::new(),
        };
        match std::fs::remove_file(&file.temporary) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let stored = file.read()?;
        *file
            .stored_index
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) =
            stored.as_ref().map(|stored| last_index(&stored.meta));
        Ok((file, stored))
    }

    /// The stored snapshot, if there is one. Never waits for a write in
    /// progress (the rename makes the old file or the new one appear whole).
    pub(crate) fn read(&self) -> io::Result<Option<StoredSnapshot>> {
        let bytes = match std::fs::read(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            result => result?,
        };
        parse(Bytes::from(bytes))
            .map(Some)
            .map_err(|e| about(&self.path, e))
    }

    /// The stored snapshot's metadata, and its data left in the file (see
    /// [`StoredData`]): only the header and the trailer are read here, and
    /// the checksum is verified as the data is read.
    pub(crate) fn open_stored(&self) -> io::Result<Option<(pb::SnapshotMeta, StoredData)>> {
        let file = match std::fs::File::open(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            result => result?,
        };
        let size = file.metadata()?.len();
        let read_at = |at: u64, len: usize| {
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
        };
        let layout = layout(size, read_at).map_err(|e| about(&self.path, e))?;
        let crc_of_meta = checksum_of_meta(&layout.meta);
        let data = StoredData::new(
            file,
            self.path.clone(),
            layout.data,
            crc_of_meta,
            layout.crc32,
        );
        Ok(Some((layout.meta, data)))
    }

    /// Replaces the stored snapshot, durably (blocking), unless the stored
    /// one is newer, with the data `write_data` writes (in pieces, which are
    /// synced as they come). Returns the data's length, or `None` when the
    /// stored snapshot was newer (and `write_data` was not called).
    pub(crate) fn write(
        &self,
        meta: &pb::SnapshotMeta,
        write_data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Option<u64>> {
        let mut stored_index = self
            .stored_index
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let index = last_index(meta);
        if let Some(stored) = *stored_index
            && stored > index
        {
            tracing::info!(
                index,
                stored,
                "mesh: snapshot not stored, a newer one already is"
            );
            return Ok(None);
        }
        let header = pb::SnapshotFileHeader {
            meta: Some(meta.clone()),
            ..Default::default()
        }
        .encode_to_vec();
        let data_bytes = match self.write_temporary(&header, meta, write_data) {
            Ok(data_bytes) => data_bytes,
            Err(e) => {
                // Half a snapshot is of no use; the next open would remove it.
                let _ = std::fs::remove_file(&self.temporary);
                return Err(e);
            }
        };
        std::fs::rename(&self.temporary, &self.path)?;
        sync_parent_dir(&self.path)?;
        *stored_index = Some(index);
        Ok(Some(data_bytes))
    }

    /// Writes the whole file to the temporary name and syncs it.
    fn write_temporary(
        &self,
        header: &[u8],
        meta: &pb::SnapshotMeta,
        write_data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<u64> {
        // Headers are a few hundred bytes; a length the format cannot hold
        // is refused rather than written wrong.
        let header_len = u32::try_from(header.len())
            .map_err(|_| io::Error::other("snapshot header over 4 GiB"))?;
        let mut file = PacedFile::create(&self.temporary)?;
        file.write_all(&[&MAGIC[..], &header_len.to_be_bytes(), header].concat())?;
        let mut data = ChecksummedData::new(&mut file, meta);
        write_data(&mut data)?;
        let (data_bytes, crc32) = data.finish();
        file.write_all(&[&data_bytes.to_be_bytes()[..], &crc32.to_be_bytes()].concat())?;
        file.finish()?;
        Ok(data_bytes)
    }

    /// Completes once the last handle is dropped.
    pub(crate) fn wait_closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.closed.dropped()
    }
}

/// The snapshot data on its way to the file: counted and checksummed.
struct ChecksummedData<'f> {
    file: &'f mut PacedFile,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<'f> ChecksummedData<'f> {
    fn new(file: &'f mut PacedFile, meta: &pb::SnapshotMeta) -> Self {
        Self {
            file,
            crc: checksum_of_meta(meta),
            bytes: 0,
        }
    }

    /// The data's length and its checksum (see [`checksum`]).
    fn finish(self) -> (u64, u32) {
        (self.bytes, self.crc.finalize())
    }
}

impl Write for ChecksummedData<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.crc.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn last_index(meta: &pb::SnapshotMeta) -> u64 {
    meta.last_log_id.as_ref().map_or(0, |id| id.index)
}

/// The CRC-32 of `meta` encoded, followed by `data`: the decoded metadata
/// is encoded again to check it (prost encodes a message the same way every
/// time), so that a damaged header is caught too.
fn checksum(meta: &pb::SnapshotMeta, data: &[u8]) -> u32 {
    let mut crc = checksum_of_meta(meta);
    crc.update(data);
    crc.finalize()
}

/// [`checksum`] up to the data.
fn checksum_of_meta(meta: &pb::SnapshotMeta) -> crc32fast::Hasher {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta.encode_to_vec());
    crc
}

/// Where the parts of a snapshot file lie, from its header and trailer.
struct Layout {
    meta: pb::SnapshotMeta,
    /// Where the data starts, and its length.
    data: (u64, u64),
    crc32: u32,
}

/// The layout of a file of `size` bytes, which `read_at(offset, len)`
/// reads; a file that cannot be one is `InvalidData`, with the reason.
fn layout(size: u64, read_at: impl Fn(u64, usize) -> io::Result<Bytes>) -> io::Result<Layout> {
    let head_bytes = (MAGIC.len() + 4) as u64;
    if size < head_bytes {
        return Err(invalid(format!("{size} bytes, shorter than the header")));
    }
    let mut head = read_at(0, head_bytes as usize)?;
    let magic = head.split_to(MAGIC.len());
    let first_layout = match &magic[..] {
        m if m == MAGIC => false,
        m if m == MAGIC_V1 => true,
        _ => return Err(invalid("not a vomesh snapshot file (wrong magic)")),
    };
    let header_len = u64::from(head.get_u32());
    if header_len > size - head_bytes {
        return Err(invalid(format!("{size} bytes, shorter than the header")));
    }
    let header = pb::SnapshotFileHeader::decode(read_at(head_bytes, header_len as usize)?)
        .map_err(|e| invalid(format!("header does not decode: {e}")))?;
    let offset = head_bytes + header_len;
    let (data_bytes, crc32, after_data) = if first_layout {
        (header.data_bytes, header.crc32, size - offset)
    } else {
        if size - offset < TRAILER_BYTES as u64 {
            return Err(invalid(format!("{size} bytes, shorter than the trailer")));
        }
        let trailer_at = size - TRAILER_BYTES as u64;
        let mut trailer = read_at(trailer_at, TRAILER_BYTES)?;
        (trailer.get_u64(), trailer.get_u32(), trailer_at - offset)
    };
    if data_bytes != after_data {
        return Err(invalid(format!(
            "{size} bytes, but the file announces {data_bytes} bytes of data after its \
             {header_len}-byte header"
        )));
    }
    let meta = header
        .meta
        .ok_or_else(|| invalid("header without metadata"))?;
    Ok(Layout {
        meta,
        data: (offset, data_bytes),
        crc32,
    })
}

fn parse(bytes: Bytes) -> io::Result<StoredSnapshot> {
    let slice = |at: u64, len: usize| Ok(bytes.slice(at as usize..at as usize + len));
    let Layout {
        meta,
        data: (offset, len),
        crc32,
    } = layout(bytes.len() as u64, slice)?;
    let data = slice(offset, len as usize)?;
    if checksum(&meta, &data) != crc32 {
        return Err(invalid(CHECKSUM_MISMATCH));
    }
    Ok(StoredSnapshot { meta, data })
}

fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// `error` with the file it is about in front of its text.
fn about(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot_data::SnapshotData;

    fn meta(index: u64) -> pb::SnapshotMeta {
        pb::SnapshotMeta {
            last_log_id: Some(pb::LogId {
                term: 1,
                node_id: 1,
                index,
            }),
            ..Default::default()
        }
    }

    /// Writes `data` in one piece.
    fn store(file: &SnapshotFile, index: u64, data: &[u8]) -> Option<u64> {
        file.write(&meta(index), |out| out.write_all(data)).unwrap()
    }

    fn snapshot_of(file: &SnapshotFile) -> Option<(pb::SnapshotMeta, Vec<u8>)> {
        file.read().unwrap().map(|s| (s.meta, s.data.to_vec()))
    }

    #[test]
    fn a_written_snapshot_reads_back_and_replaces_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        assert_eq!(snapshot_of(&file), None);
        assert_eq!(store(&file, 1, b"data 1"), Some(6));
        // Several paces, and a partial one.
        let large: Vec<u8> = (0..PACE_BYTES * 5 / 2).map(|i| i as u8).collect();
        assert_eq!(store(&file, 2, &large), Some(large.len() as u64));
        assert_eq!(snapshot_of(&file), Some((meta(2), large)));
        assert!(!dir.path().join(TEMPORARY_NAME).exists());
        store(&file, 3, b"");
        assert_eq!(snapshot_of(&file), Some((meta(3), vec![])));
    }

    #[test]
    fn data_written_in_pieces_of_any_size_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        let data: Vec<u8> = (0..PACE_BYTES * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        // Pieces that straddle the sync points, as an encoder's do.
        let written = file
            .write(&meta(5), |out| {
                for piece in data.chunks(PACE_BYTES / 3 + 7) {
                    out.write_all(piece)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(written, Some(data.len() as u64));
        assert_eq!(snapshot_of(&file), Some((meta(5), data)));
    }

    #[test]
    fn a_failed_encoding_leaves_the_stored_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        store(&file, 1, b"kept");
        let error = file
            .write(&meta(2), |out| {
                out.write_all(b"half")?;
                Err(io::Error::other("the encoder failed"))
            })
            .unwrap_err();
        assert_eq!(error.to_string(), "the encoder failed");
        assert_eq!(snapshot_of(&file), Some((meta(1), b"kept".to_vec())));
        let reopened = SnapshotFile::open(dir.path()).unwrap();
        assert_eq!(
            reopened.1.map(|s| s.data),
            Some(Bytes::from_static(b"kept"))
        );
        assert!(!dir.path().join(TEMPORARY_NAME).exists());
    }

    #[test]
    fn a_file_of_the_first_layout_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"written by an earlier version";
        let header = pb::SnapshotFileHeader {
            meta: Some(meta(9)),
            data_bytes: data.len() as u64,
            crc32: checksum(&meta(9), data),
        }
        .encode_to_vec();
        let header_len = (header.len() as u32).to_be_bytes();
        let old = [&MAGIC_V1[..], &header_len, &header, data].concat();
        std::fs::write(dir.path().join(FILE_NAME), &old).unwrap();
        let (file, stored) = SnapshotFile::open(dir.path()).unwrap();
        assert_eq!(stored.map(|s| s.data.to_vec()), Some(data.to_vec()));
        // A damaged one is refused as the current layout is.
        let mut damaged = old;
        *damaged.last_mut().unwrap() ^= 1;
        std::fs::write(dir.path().join(FILE_NAME), &damaged).unwrap();
        assert!(
            file.read()
                .unwrap_err()
                .to_string()
                .contains("checksum mismatch")
        );
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        store(&file, 20, b"newer");
        assert_eq!(store(&file, 10, b"older"), None, "not stored");
        assert_eq!(snapshot_of(&file), Some((meta(20), b"newer".to_vec())));
        // Also when the newer one was only read, after a restart.
        let reopened = SnapshotFile::open(dir.path()).unwrap().0;
        assert_eq!(snapshot_of(&reopened), Some((meta(20), b"newer".to_vec())));
        store(&reopened, 10, b"older");
        store(&reopened, 30, b"newest");
        assert_eq!(snapshot_of(&reopened), Some((meta(30), b"newest".to_vec())));
    }

    #[test]
    fn a_temporary_file_left_by_a_crash_is_removed_and_the_snapshot_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = SnapshotFile::open(dir.path()).unwrap().0;
        store(&first, 3, b"data");
        std::fs::write(dir.path().join(TEMPORARY_NAME), b"half a snapshot").unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        assert!(!dir.path().join(TEMPORARY_NAME).exists());
        assert_eq!(snapshot_of(&file), Some((meta(3), b"data".to_vec())));
    }

    /// The stored snapshot's data read in chunks of `chunk_bytes`, or the
    /// first error, with what was read before it.
    async fn stored_chunks(file: &SnapshotFile, chunk_bytes: usize) -> (Vec<u8>, io::Result<()>) {
        let (_, data) = match file.open_stored() {
            Ok(stored) => stored.expect("a stored snapshot"),
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut chunks = SnapshotData::Stored(data).chunks(chunk_bytes);
        let mut read = Vec::new();
        loop {
            match chunks.next().await {
                Ok(Some(chunk)) => {
                    assert!(chunk.len() <= chunk_bytes);
                    read.extend_from_slice(&chunk);
                }
                Ok(None) => return (read, Ok(())),
                Err(e) => return (read, Err(e)),
            }
        }
    }

    #[tokio::test]
    async fn the_stored_data_reads_back_in_chunks_of_any_size() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        let data: Vec<u8> = (0..100_003).map(|i| (i % 253) as u8).collect();
        store(&file, 7, &data);
        let (meta_read, _) = file.open_stored().unwrap().unwrap();
        assert_eq!(meta_read, meta(7));
        for chunk_bytes in [1, 1000, 4096, 99_999, 100_003, usize::MAX] {
            let (read, result) = stored_chunks(&file, chunk_bytes).await;
            result.unwrap();
            assert!(read == data, "chunks of {chunk_bytes}");
        }
        store(&file, 8, b"");
        let (read, result) = stored_chunks(&file, 10).await;
        assert!(result.is_ok() && read.is_empty());
    }

    #[tokio::test]
    async fn stored_data_being_read_survives_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        store(&file, 1, b"the older state");
        let (_, older) = file.open_stored().unwrap().unwrap();
        store(&file, 2, b"the newer state, renamed over it");
        let read = SnapshotData::Stored(older).into_bytes().await.unwrap();
        assert_eq!(&read[..], b"the older state");
    }

    #[tokio::test]
    async fn a_damaged_file_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        store(&file, 4, b"the data");
        let good = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        // The file ends with the data, its length and the checksum.
        let mut flipped_data = good.clone();
        flipped_data[good.len() - TRAILER_BYTES - 1] ^= 1;
        let mut flipped_checksum = good.clone();
        *flipped_checksum.last_mut().unwrap() ^= 1;
        // The header holds the metadata, with the log index 4.
        let mut flipped_meta = good.clone();
        let index_at = good.iter().position(|&b| b == 4).unwrap();
        assert!(index_at < good.len() - TRAILER_BYTES - b"the data".len());
        flipped_meta[index_at] ^= 2;
        let mut wrong_magic = good.clone();
        wrong_magic[0] = b'V';
        let header_end = good.len() - TRAILER_BYTES - b"the data".len();
        for (damaged, reason) in [
            (good[..10].to_vec(), "shorter than the header"),
            (good[..header_end - 1].to_vec(), "shorter than the header"),
            (good[..header_end + 3].to_vec(), "shorter than the trailer"),
            (good[..good.len() - 1].to_vec(), "bytes of data after its"),
            ([&good[..], b"x"].concat(), "bytes of data after its"),
            (flipped_data, "checksum mismatch"),
            (flipped_checksum, "checksum mismatch"),
            (flipped_meta, "checksum mismatch"),
            (wrong_magic, "wrong magic"),
        ] {
            std::fs::write(dir.path().join(FILE_NAME), &damaged).unwrap();
            let error = file.read().unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(
                error.to_string().contains(reason) && error.to_string().contains(FILE_NAME),
                "{reason}: {error}"
            );
            // Read in chunks as it is sent: refused alike, and never
            // given out whole.
            let (read, result) = stored_chunks(&file, 3).await;
            let error = result.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(
                error.to_string().contains(reason) && error.to_string().contains(FILE_NAME),
                "{reason}, in chunks: {error}"
            );
            assert!(read.len() < b"the data".len(), "{reason}: {read:?}");
        }
    }
}
