//! What the Raft log keeps beside its entries (`raft-log/meta`): the vote,
//! the purge point, and the committed id as of the last write.
//!
//! Written whole, rarely (an election, a purge, a clean shutdown): to
//! `meta.tmp`, synced, renamed over `meta`, and the directory synced, so a
//! crash leaves the old contents or the new, whole. Layout: 8 magic bytes,
//! the CRC-32 of the rest (u32 LE), then a `vomesh.mesh.LogMeta`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use vomesh_proto::mesh as pb;

use crate::log_files::timed_sync;
use crate::log_store::sync_parent_dir;

const FILE_NAME: &str = "meta";
const TEMPORARY_NAME: &str = "meta.tmp";
const MAGIC: &[u8; 8] = b"vomeshL\x01";

pub(crate) struct MetaFile {
    path: PathBuf,
    temporary: PathBuf,
}

impl MetaFile {
    /// The meta file in `dir` and what it holds (all unset if there is
    /// none yet).
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, pb::LogMeta)> {
        let file = Self {
            path: dir.join(FILE_NAME),
            temporary: dir.join(TEMPORARY_NAME),
        };
        let bytes = match std::fs::read(&file.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((file, pb::LogMeta::default()));
            }
            result => result?,
        };
        let meta = parse(&bytes).map_err(|reason| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {reason}", file.path.display()),
            )
        })?;
        Ok((file, meta))
    }

    /// Replaces the contents, durably (blocking).
    pub(crate) fn write(&self, meta: &pb::LogMeta) -> io::Result<()> {
        let encoded = meta.encode_to_vec();
        let crc = crc32fast::hash(&encoded);
        let mut file = File::create(&self.temporary)?;
        file.write_all(&[&MAGIC[..], &crc.to_le_bytes(), &encoded].concat())?;
        timed_sync(|| file.sync_all())?;
        drop(file);
        std::fs::rename(&self.temporary, &self.path)?;
        sync_parent_dir(&self.path)
    }
}

fn parse(bytes: &[u8]) -> Result<pb::LogMeta, String> {
    let header = MAGIC.len() + 4;
    if bytes.len() < header || bytes[..MAGIC.len()] != MAGIC[..] {
        return Err("not a vomesh Raft log meta file".into());
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let encoded = &bytes[header..];
    if crc32fast::hash(encoded) != crc {
        return Err("checksum mismatch: the file is corrupt".into());
    }
    pb::LogMeta::decode(encoded).map_err(|e| format!("does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(term: u64) -> pb::LogMeta {
        pb::LogMeta {
            vote: Some(pb::Vote {
                term,
                node_id: 2,
                committed: true,
            }),
            committed: None,
            last_purged: Some(pb::LogId {
                term,
                node_id: 2,
                index: 77,
            }),
        }
    }

    #[test]
    fn contents_survive_a_reopen_and_replace_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let (file, empty) = MetaFile::open(dir.path()).unwrap();
        assert_eq!(empty, pb::LogMeta::default());
        file.write(&meta(1)).unwrap();
        file.write(&meta(2)).unwrap();
        assert_eq!(MetaFile::open(dir.path()).unwrap().1, meta(2));
        assert!(!dir.path().join(TEMPORARY_NAME).exists());
    }

    #[test]
    fn a_damaged_file_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = MetaFile::open(dir.path()).unwrap();
        file.write(&meta(3)).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let error = MetaFile::open(dir.path()).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
    }
}
