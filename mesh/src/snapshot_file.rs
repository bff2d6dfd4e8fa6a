//! The latest snapshot, in a file of its own (`raft-snapshot.bin`).
//!
//! A snapshot is one blob, 100 MB and more; a database adds nothing to it
//! but copies. In redb each snapshot was copied into freshly allocated page
//! buffers (the page faults alone were a tenth of a site's CPU in the
//! three-site mesh), handed to the kernel in one go and synced, so the disk
//! took the whole snapshot in one flush while the Raft log's fsyncs, which
//! every commit waits for, queued behind it.
//!
//! Here a snapshot is written to `raft-snapshot.tmp` straight from its
//! bytes, synced every [`PACE_BYTES`] as it goes (which keeps the disk's
//! queue short for the log: on the 2-core test machine a 2.6 KB append +
//! fdatasync, 0.2 ms at the median, took up to 46–73 ms while 150 MB were
//! written and synced beside it in one go, 17–26 ms when they were synced
//! every 1–4 MiB), then renamed over the previous one and the directory
//! synced: a crash at any point leaves the old snapshot or the new one,
//! whole.
//!
//! Writers take turns, and a snapshot older than the stored one (a build
//! that finished after a newer snapshot was installed from the leader)
//! does not replace it: the log behind the newer one may already be
//! purged, and a restart from the older one would find a gap.
//!
//! Layout (`vomesh.mesh.SnapshotFileHeader`): a magic, a header with the
//! metadata, the data's length and a CRC-32, then the data. A file that is
//! shorter or longer than its header says, or whose checksum does not
//! match, is refused with the reason.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use bytes::{Buf, Bytes};
use prost::Message;
use vomesh_proto::mesh as pb;

use crate::log_store::{DropSignal, sync_parent_dir};

/// The file name in the data directory.
pub(crate) const FILE_NAME: &str = "raft-snapshot.bin";
/// Where a snapshot is written before it replaces the last one.
const TEMPORARY_NAME: &str = "raft-snapshot.tmp";

const MAGIC: &[u8; 8] = b"vomesh\0\x01";

/// Bytes written between two syncs.
pub(crate) const PACE_BYTES: usize = 1024 * 1024;

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
        parse(Bytes::from(bytes)).map(Some).map_err(|reason| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {reason}", self.path.display()),
            )
        })
    }

    /// Replaces the stored snapshot, durably (blocking), unless the stored
    /// one is newer.
    pub(crate) fn write(&self, meta: &pb::SnapshotMeta, data: &[u8]) -> io::Result<()> {
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
            return Ok(());
        }
        let header = pb::SnapshotFileHeader {
            meta: Some(meta.clone()),
            data_bytes: data.len() as u64,
            crc32: checksum(meta, data),
        }
        .encode_to_vec();
        // Headers are a few hundred bytes; a length the format cannot hold
        // is refused rather than written wrong.
        let header_len = u32::try_from(header.len())
            .map_err(|_| io::Error::other("snapshot header over 4 GiB"))?;
        let mut file = File::create(&self.temporary)?;
        file.write_all(&[&MAGIC[..], &header_len.to_be_bytes(), &header].concat())?;
        for piece in data.chunks(PACE_BYTES) {
            file.write_all(piece)?;
            file.sync_data()?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temporary, &self.path)?;
        sync_parent_dir(&self.path)?;
        *stored_index = Some(index);
        Ok(())
    }

    /// Completes once the last handle is dropped.
    pub(crate) fn wait_closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.closed.dropped()
    }
}

fn last_index(meta: &pb::SnapshotMeta) -> u64 {
    meta.last_log_id.as_ref().map_or(0, |id| id.index)
}

/// The CRC-32 of `meta` encoded, followed by `data`: the decoded metadata
/// is encoded again to check it (prost encodes a message the same way every
/// time), so that a damaged header is caught too.
fn checksum(meta: &pb::SnapshotMeta, data: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta.encode_to_vec());
    crc.update(data);
    crc.finalize()
}

fn parse(mut bytes: Bytes) -> Result<StoredSnapshot, String> {
    let size = bytes.len();
    if size < MAGIC.len() + 4 {
        return Err(format!("{size} bytes, shorter than the header"));
    }
    if bytes.split_to(MAGIC.len()) != MAGIC[..] {
        return Err("not a vomesh snapshot file (wrong magic)".into());
    }
    let header_len = bytes.get_u32() as usize;
    if header_len > bytes.len() {
        return Err(format!("{size} bytes, shorter than the header"));
    }
    let header = pb::SnapshotFileHeader::decode(bytes.split_to(header_len))
        .map_err(|e| format!("header does not decode: {e}"))?;
    if header.data_bytes != bytes.len() as u64 {
        return Err(format!(
            "{size} bytes, but the header announces {} bytes of data after its {header_len}",
            header.data_bytes
        ));
    }
    let meta = header.meta.ok_or("header without metadata")?;
    if checksum(&meta, &bytes) != header.crc32 {
        return Err("checksum mismatch: the file is corrupt".into());
    }
    Ok(StoredSnapshot { meta, data: bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn snapshot_of(file: &SnapshotFile) -> Option<(pb::SnapshotMeta, Vec<u8>)> {
        file.read().unwrap().map(|s| (s.meta, s.data.to_vec()))
    }

    #[test]
    fn a_written_snapshot_reads_back_and_replaces_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        assert_eq!(snapshot_of(&file), None);
        file.write(&meta(1), b"data 1").unwrap();
        // Several paces, and a partial one.
        let large: Vec<u8> = (0..PACE_BYTES * 5 / 2).map(|i| i as u8).collect();
        file.write(&meta(2), &large).unwrap();
        assert_eq!(snapshot_of(&file), Some((meta(2), large)));
        assert!(!dir.path().join(TEMPORARY_NAME).exists());
        file.write(&meta(3), b"").unwrap();
        assert_eq!(snapshot_of(&file), Some((meta(3), vec![])));
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        file.write(&meta(20), b"newer").unwrap();
        file.write(&meta(10), b"older").unwrap();
        assert_eq!(snapshot_of(&file), Some((meta(20), b"newer".to_vec())));
        // Also when the newer one was only read, after a restart.
        let reopened = SnapshotFile::open(dir.path()).unwrap().0;
        assert_eq!(snapshot_of(&reopened), Some((meta(20), b"newer".to_vec())));
        reopened.write(&meta(10), b"older").unwrap();
        reopened.write(&meta(30), b"newest").unwrap();
        assert_eq!(snapshot_of(&reopened), Some((meta(30), b"newest".to_vec())));
    }

    #[test]
    fn a_temporary_file_left_by_a_crash_is_removed_and_the_snapshot_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = SnapshotFile::open(dir.path()).unwrap().0;
        first.write(&meta(3), b"data").unwrap();
        std::fs::write(dir.path().join(TEMPORARY_NAME), b"half a snapshot").unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        assert!(!dir.path().join(TEMPORARY_NAME).exists());
        assert_eq!(snapshot_of(&file), Some((meta(3), b"data".to_vec())));
    }

    #[test]
    fn a_damaged_file_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap().0;
        file.write(&meta(4), b"the data").unwrap();
        let good = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let mut flipped_data = good.clone();
        *flipped_data.last_mut().unwrap() ^= 1;
        // The header ends with the checksum (5 bytes: tag, 4-byte varint at
        // most); its metadata, which starts it, holds the log index 4.
        let mut flipped_meta = good.clone();
        let index_at = good.iter().position(|&b| b == 4).unwrap();
        assert!(index_at < good.len() - b"the data".len());
        flipped_meta[index_at] ^= 2;
        let mut wrong_magic = good.clone();
        wrong_magic[0] = b'V';
        for (damaged, reason) in [
            (good[..10].to_vec(), "shorter than the header"),
            (good[..20].to_vec(), "shorter than the header"),
            (good[..good.len() - 1].to_vec(), "announces 8 bytes of data"),
            ([&good[..], b"x"].concat(), "announces 8 bytes of data"),
            (flipped_data, "checksum mismatch"),
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
        }
    }
}
