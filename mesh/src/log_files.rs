//! The Raft log's entries on disk: a directory of segment files, each a
//! run of consecutive entries appended as checksummed records.
//!
//! Kept in redb, the log cost a fifth of a site's CPU in the three-site
//! mesh under publish load: fresh page buffers allocated and zeroed for
//! every copy-on-write of the B-tree, and every purged segment's pages read
//! back to free them. Here an append is one positioned write and one
//! `fdatasync`, a purge unlinks whole files, and a read is one `pread` per
//! segment it spans.
//!
//! **Layout.** `<index of the first entry, 20 digits>.seg`, records back
//! to back from offset 0, each
//! `length (u32 LE) | CRC-32 of length and body (u32 LE) | body`, the body
//! a kind byte then:
//! - an entry: its index (u64 LE), then the caller's bytes (an encoded
//!   `vomesh.mesh.Entry`);
//! - a committed log id: the caller's bytes (an encoded
//!   `vomesh.mesh.LogId`). It rides along with an append so that a node
//!   restarted after a crash can apply by itself what it knew committed.
//!
//! **Zeros ahead.** Past its last record a segment holds zeros, extended
//! [`ZERO_FILL_BYTES`] at a time: on ext4 an `fdatasync` that must also
//! record a larger file size commits the journal. Measured on the test
//! machine, a 2.6 KB write and `fdatasync`: 248–267 µs at the median
//! (p99 3.4–3.6 ms) at the end of the file, 136–142 µs (p99 0.3–1.0 ms)
//! over zeros written before.
//!
//! **Past the page cache.** Appends are written with `O_DIRECT` where the
//! filesystem takes it (see `direct_io`): through the cache, the kernel's
//! copy of each append into fresh cache pages was 44 % of every log
//! thread's samples in the three-site mesh under publish load. A direct
//! write starts and ends on a 4 KiB boundary, so each append rewrites the
//! last partial block of the one before, unchanged (its bytes kept in
//! memory), then its own records, then zeros to the next boundary. The
//! rewrite risks nothing a write through the cache did not: writeback
//! writes whole pages too, and a crash in the middle of one leaves each
//! sector of the rewritten bytes old or new, which are the same.
//!
//! **Recovery.** Records are read up to the first one that is not whole: a
//! zero length (the zeros ahead), a length past the end, or a checksum
//! mismatch. Appends are sequential and each is synced before the next is
//! written, so in the last segment what follows is the torn tail of the
//! last append, never acknowledged; it is cut off (the file truncated
//! there and synced), so that later appends are never followed by stale
//! records. Unless a whole committed-id record follows: the log store
//! starts every append with one (once anything is committed), so one found
//! past the damage begins a later append, written after the damaged one
//! was synced. The damage is then in entries already acknowledged (a disk
//! that lost or changed them), and cutting them off would drop them
//! silently: the log is refused as damaged instead, with the offsets.
//! Every other segment must end with the entry just before the next
//! segment's first, or the log is refused as damaged.
//!
//! One writer at a time (openraft's log task), readers beside it: a reader
//! holds the segment list's read lock while it reads, and the writer takes
//! the write lock only to publish what it made durable, or to cut or
//! remove files.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;

use crate::direct_io::AlignedBuf;
use crate::log_store::sync_parent_dir;
use crate::power_loss::SegmentWriter;

const SEGMENT_SUFFIX: &str = ".seg";
/// Taken with an exclusive `flock` while the log is open, so that two
/// processes never write the same log.
const LOCK_FILE: &str = "lock";
/// Zeros written ahead of the appends, at a time.
pub(crate) const ZERO_FILL_BYTES: u64 = 1 << 20;
/// What is written ahead: never written to, its pages all map the kernel's
/// one zero page; aligned, as a direct write's buffer must be.
static ZEROS: Zeros = Zeros([0; ZERO_FILL_BYTES as usize]);
#[repr(C, align(4096))]
struct Zeros([u8; ZERO_FILL_BYTES as usize]);
/// What the append buffer keeps between appends: it grows for a large
/// one (a follower catching up takes many entries at once) and gives the
/// memory back after.
const STAGING_KEPT_BYTES: usize = 1 << 20;
/// `length` and `crc` before each record's body.
const HEADER_BYTES: usize = 8;
/// A length beyond this is damage, not a record (the largest command is
/// bounded far below by the broker's item limits).
const RECORD_BYTES_MAX: u32 = 1 << 30;
const KIND_ENTRY: u8 = 1;
const KIND_COMMITTED: u8 = 2;

/// What `open` found besides the entries.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The body of the last committed-id record still in the files.
    pub(crate) committed: Option<Bytes>,
    /// Bytes cut off the end of the last segment (not whole records).
    pub(crate) torn_bytes: u64,
}

/// The segment files of one log directory.
pub(crate) struct LogFiles {
    dir: PathBuf,
    /// A segment takes appends until it holds this many bytes.
    segment_bytes: u64,
    power_loss: bool,
    segments: RwLock<VecDeque<Segment>>,
    /// Held by the writer for a whole append, truncation or removal.
    writer: Mutex<Writer>,
    /// Holds the `flock` until dropped.
    _lock: File,
}

struct Segment {
    /// Index of its first entry (its file name).
    first: u64,
    file: Arc<File>,
    /// Offset of each entry's record: entry `first + i` at `offsets[i]`.
    offsets: Vec<u64>,
    /// End of its last record.
    end: u64,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }

    /// Where the record of entry `index` starts, or the end past the last.
    fn offset_of(&self, index: u64) -> u64 {
        let position = index.saturating_sub(self.first) as usize;
        self.offsets.get(position).copied().unwrap_or(self.end)
    }
}

/// What only the writer touches: how far the last segment is written with
/// zeros ahead, and its file opened for writing.
struct Writer {
    zeroed_to: u64,
    file: Option<SegmentWriter>,
    /// The next write, built here: the last segment's bytes from the
    /// alignment boundary at or before its end (`file.alignment()`: a
    /// direct write starts and ends on one, so it rewrites them, unchanged,
    /// along with the append), then the append's records, then zeros up to
    /// the next boundary. Valid while `file` is `Some`.
    staging: AlignedBuf,
}

/// An entry to append: its index and its encoded bytes.
pub(crate) struct EntryRecord {
    pub(crate) index: u64,
    pub(crate) bytes: Vec<u8>,
}

impl LogFiles {
    /// Opens (creating it if need be) the log in `dir`, reading every
    /// segment and cutting off what a crash left unfinished.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        power_loss: bool,
    ) -> io::Result<(Self, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let lock = File::create(dir.join(LOCK_FILE))?;
        lock.try_lock().map_err(|e| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{}: the log is in use by another process ({e})",
                    dir.display()
                ),
            )
        })?;
        sync_parent_dir(dir)?;

        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        let names = segment_names(dir)?;
        for (position, first) in names.iter().enumerate() {
            let is_last = position + 1 == names.len();
            let path = segment_path(dir, *first);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let scan = scan(&file, *first).map_err(|reason| damaged(&path, &reason))?;
            if let Some(committed) = scan.committed {
                recovered.committed = Some(committed);
            }
            let file_len = file.metadata()?.len();
            if is_last && file_len > scan.end {
                // Zeros ahead, or the torn tail of an append never
                // acknowledged: either way cut, so no stale record can
                // follow the next append. Unless a later append follows.
                let tail = Tail::read(&file, scan.end, file_len)?;
                if let Some(later) = tail.later_append() {
                    let reason = scan.short.as_deref().unwrap_or("not a whole record");
                    return Err(damaged(
                        &path,
                        &format!(
                            "the record at offset {} is damaged ({reason}), but an append \
                             written after it was synced starts at offset {later}: entries \
                             already acknowledged are lost or changed",
                            scan.end
                        ),
                    ));
                }
                recovered.torn_bytes = tail.nonzero_bytes();
                file.set_len(scan.end)?;
                file.sync_all()?;
            }
            if scan.offsets.is_empty() {
                if !is_last {
                    return Err(damaged(&path, "holds no entry"));
                }
                // Created by an append that never completed.
                drop(file);
                std::fs::remove_file(&path)?;
                sync_parent_dir(&path)?;
                continue;
            }
            let segment = Segment {
                first: *first,
                file: Arc::new(file),
                offsets: scan.offsets,
                end: scan.end,
            };
            if let Some(previous) = segments.back().and_then(Segment::last)
                && previous + 1 != segment.first
            {
                return Err(damaged(
                    &path,
                    &format!("starts at entry {first}, but the segment before ends at {previous}"),
                ));
            }
            segments.push_back(segment);
        }
        Ok((
            Self {
                dir: dir.to_owned(),
                segment_bytes,
                power_loss,
                segments: RwLock::new(segments),
                // The last segment was cut at its end.
                writer: Mutex::new(Writer {
                    zeroed_to: 0,
                    file: None,
                    staging: AlignedBuf::with_capacity(0),
                }),
                _lock: lock,
            },
            recovered,
        ))
    }

    /// Index of the first and of the last entry held.
    pub(crate) fn span(&self) -> Option<(u64, u64)> {
        let segments = self.read_segments();
        let first = segments.iter().find(|s| s.last().is_some())?.first;
        let last = segments.iter().rev().find_map(Segment::last)?;
        Some((first, last))
    }

    /// Appends `entries` (consecutive, following the last entry held)
    /// after a committed-id record if there is one, and syncs.
    pub(crate) fn append(
        &self,
        committed: Option<&[u8]>,
        entries: &[EntryRecord],
    ) -> io::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut writer = self.writer();
        if let Some((_, last)) = self.span()
            && last + 1 != first.index
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("append of entry {} after entry {last}", first.index),
            ));
        }
        if !entries
            .iter()
            .zip(first.index..)
            .all(|(entry, index)| entry.index == index)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "entries to append are not consecutive",
            ));
        }
        let committed_bytes = committed.map_or(0, |c| HEADER_BYTES + 1 + c.len());
        let entry_bytes = |e: &EntryRecord| HEADER_BYTES + 1 + 8 + e.bytes.len();
        let records_len = committed_bytes + entries.iter().map(entry_bytes).sum::<usize>();
        let end = self.segment_for(&mut writer, first.index, records_len as u64)?;
        let written = Self::write_records(&mut writer, end, records_len, committed, entries);
        if written.is_err() {
            // What `staging` holds is no longer known to match the file.
            writer.file = None;
        }
        let offsets = written?;
        let written_to = end + records_len as u64;

        let mut segments = self.write_segments();
        let Some(segment) = segments.back_mut() else {
            return Err(io::Error::other("log segment removed during an append"));
        };
        segment.offsets.extend(offsets);
        segment.end = written_to;
        Ok(())
    }

    /// Writes the records of `committed` and `entries` (`records_len`
    /// bytes) at `end` of the last segment, zeros ahead if they run past
    /// those written before, and syncs; returns the entries' offsets.
    fn write_records(
        writer: &mut Writer,
        end: u64,
        records_len: usize,
        committed: Option<&[u8]>,
        entries: &[EntryRecord],
    ) -> io::Result<Vec<u64>> {
        let Writer {
            zeroed_to,
            file,
            staging,
        } = writer;
        let file = file
            .as_mut()
            .ok_or_else(|| io::Error::other("no log segment open for writing"))?;
        let block_start = end - staging.len() as u64;
        let alignment = file.alignment();
        staging.reserve(records_len + alignment);
        if let Some(committed) = committed {
            push_record(staging, KIND_COMMITTED, &[], committed);
        }
        let mut offsets = Vec::with_capacity(entries.len());
        for entry in entries {
            offsets.push(block_start + staging.len() as u64);
            push_record(
                staging,
                KIND_ENTRY,
                &entry.index.to_le_bytes(),
                &entry.bytes,
            );
        }
        let written_to = block_start + staging.len() as u64;
        staging.resize(staging.len().next_multiple_of(alignment));
        file.write_at(staging.as_slice(), block_start)?;
        let padded_to = block_start + staging.len() as u64;
        let fill = written_to > *zeroed_to;
        if fill {
            // From the static zeros: appended to the records, the megabyte
            // was allocated, faulted in and set at every fill, a few per
            // cent of a follower's CPU under publish load.
            file.write_at(&ZEROS.0, padded_to)?;
        }
        timed_sync(|| file.sync_data())?;
        if fill {
            *zeroed_to = padded_to + ZERO_FILL_BYTES;
        }
        // Keep the last partial block for the next append (by the
        // alignment now: a refused direct write leaves it at 1).
        let kept_from = written_to - written_to % file.alignment() as u64;
        staging.resize((written_to - block_start) as usize);
        staging.keep_from((kept_from - block_start) as usize);
        staging.shrink_to(STAGING_KEPT_BYTES);
        Ok(offsets)
    }

    /// Points `writer` at the segment that takes an append of `bytes`
    /// starting with entry `first`, and returns where its records start;
    /// opens a new segment when there is none or the last one is full.
    fn segment_for(&self, writer: &mut Writer, first: u64, bytes: u64) -> io::Result<u64> {
        let last = self
            .read_segments()
            .back()
            .map(|s| (s.first, s.file.clone(), s.end, s.offsets.is_empty()));
        let end = match last {
            // Created by an append that then failed.
            Some((segment_first, _, _, true)) if segment_first != first => {
                return Err(io::Error::other(format!(
                    "log segment {segment_first} is empty, but the append starts at {first}"
                )));
            }
            Some((segment_first, file, end, empty))
                if empty || end + bytes <= self.segment_bytes =>
            {
                if writer.file.is_none() {
                    let path = segment_path(&self.dir, segment_first);
                    let segment_writer = SegmentWriter::open(&path, self.power_loss)?;
                    let kept = end % segment_writer.alignment() as u64;
                    writer.staging.resize(kept as usize);
                    file.read_exact_at(writer.staging.as_mut_slice(), end - kept)?;
                    writer.file = Some(segment_writer);
                }
                end
            }
            _ => {
                let path = segment_path(&self.dir, first);
                let file = Arc::new(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&path)?,
                );
                sync_parent_dir(&path)?;
                self.write_segments().push_back(Segment {
                    first,
                    file: file.clone(),
                    offsets: Vec::new(),
                    end: 0,
                });
                writer.file = Some(SegmentWriter::open(&path, self.power_loss)?);
                writer.staging.resize(0);
                writer.zeroed_to = 0;
                0
            }
        };
        Ok(end)
    }

    /// The encoded entries from `first` to `last`, those held of them.
    pub(crate) fn read(&self, first: u64, last: u64) -> io::Result<Vec<Bytes>> {
        let segments = self.read_segments();
        let mut entries = Vec::new();
        for segment in segments.iter() {
            let Some(segment_last) = segment.last() else {
                continue;
            };
            if segment_last < first || segment.first > last {
                continue;
            }
            let from = segment.offset_of(first.max(segment.first));
            let to = segment.offset_of(last.saturating_add(1).min(segment_last + 1));
            let mut buf = vec![0; (to - from) as usize];
            segment.file.read_exact_at(&mut buf, from)?;
            let mut records = Records::new(Bytes::from(buf));
            while let Some(record) = records.next_record() {
                if let Record::Entry { bytes, .. } = record {
                    entries.push(bytes);
                }
            }
            if let Some(reason) = records.stopped_short() {
                return Err(damaged(&segment_path(&self.dir, segment.first), &reason));
            }
        }
        Ok(entries)
    }

    /// Removes every entry from `from` on: later segments are deleted (the
    /// last first, so a crash leaves no gap), the one holding `from` cut.
    pub(crate) fn truncate_from(&self, from: u64) -> io::Result<()> {
        let mut writer = self.writer();
        let mut segments = self.write_segments();
        while let Some(segment) = segments.back() {
            if segment.first < from {
                break;
            }
            let path = segment_path(&self.dir, segment.first);
            std::fs::remove_file(&path)?;
            sync_parent_dir(&path)?;
            segments.pop_back();
        }
        writer.file = None;
        writer.zeroed_to = 0;
        let Some(segment) = segments.back_mut() else {
            return Ok(());
        };
        if segment.last().is_some_and(|last| last >= from) {
            let cut = segment.offset_of(from);
            segment.file.set_len(cut)?;
            timed_sync(|| segment.file.sync_all())?;
            segment.offsets.truncate((from - segment.first) as usize);
            segment.end = cut;
        }
        // What lies past its end are zeros written ahead (or nothing).
        writer.zeroed_to = segment.file.metadata()?.len();
        Ok(())
    }

    /// Deletes the segments whose entries are all at or before `upto`,
    /// oldest first.
    pub(crate) fn remove_upto(&self, upto: u64) -> io::Result<()> {
        let mut writer = self.writer();
        let mut removed = Vec::new();
        {
            let mut segments = self.write_segments();
            while let Some(segment) = segments.front() {
                if segment.last().is_some_and(|last| last > upto) {
                    break;
                }
                removed.push(segment.first);
                segments.pop_front();
            }
            if segments.is_empty() {
                writer.file = None;
            }
        }
        // Unlinked outside the lock: a reader still holding a removed
        // segment's file reads it whole.
        for first in &removed {
            std::fs::remove_file(segment_path(&self.dir, *first))?;
        }
        if let Some(first) = removed.last() {
            sync_parent_dir(&segment_path(&self.dir, *first))?;
        }
        Ok(())
    }

    /// Number of segment files.
    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.read_segments().len()
    }

    /// The file and offset of entry `index`'s record.
    #[cfg(test)]
    pub(crate) fn record_at(&self, index: u64) -> Option<(PathBuf, u64)> {
        let segments = self.read_segments();
        let segment = segments.iter().find(|s| {
            s.last()
                .is_some_and(|last| (s.first..=last).contains(&index))
        })?;
        Some((
            segment_path(&self.dir, segment.first),
            segment.offset_of(index),
        ))
    }

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, VecDeque<Segment>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_segments(&self) -> std::sync::RwLockWriteGuard<'_, VecDeque<Segment>> {
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `sync`, timed into `vomesh_storage_fsync_seconds`: every append
/// waits for one, so a slow disk shows there first.
pub(crate) fn timed_sync(sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let started = std::time::Instant::now();
    sync()?;
    metrics::histogram!("vomesh_storage_fsync_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SEGMENT_SUFFIX}"))
}

/// The first index of every segment in `dir`, in order.
fn segment_names(dir: &Path) -> io::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        firsts.push(first);
    }
    firsts.sort_unstable();
    Ok(firsts)
}

fn damaged(path: &Path, reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: damaged Raft log segment: {reason}", path.display()),
    )
}

fn push_record(buf: &mut AlignedBuf, kind: u8, prefix: &[u8], bytes: &[u8]) {
    let length = (1 + prefix.len() + bytes.len()) as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&length.to_le_bytes());
    crc.update(&[kind]);
    crc.update(prefix);
    crc.update(bytes);
    buf.extend_from_slice(&length.to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(&[kind]);
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(bytes);
}

enum Record {
    Entry { index: u64, bytes: Bytes },
    Committed(Bytes),
}

/// Whole records, read from the start of `bytes`.
struct Records {
    bytes: Bytes,
    /// Offset of the next record.
    at: usize,
    /// Why reading stopped before the end, if it did.
    short: Option<String>,
}

impl Records {
    fn new(bytes: Bytes) -> Self {
        Self {
            bytes,
            at: 0,
            short: None,
        }
    }

    /// The next whole record; `None` at the end or at the first that is
    /// not whole (see [`Records::stopped_short`]).
    fn next_record(&mut self) -> Option<Record> {
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            return None;
        }
        let body = match whole_record(rest) {
            Ok(body) => body,
            Err(reason) => {
                self.short = Some(reason);
                return None;
            }
        };
        let start = self.at + HEADER_BYTES;
        self.at = start + body;
        let kind = self.bytes[start];
        let content = self.bytes.slice(start + 1..self.at);
        match kind {
            KIND_ENTRY if content.len() >= 8 => {
                let mut index = [0; 8];
                index.copy_from_slice(&content[..8]);
                Some(Record::Entry {
                    index: u64::from_le_bytes(index),
                    bytes: content.slice(8..),
                })
            }
            KIND_COMMITTED => Some(Record::Committed(content)),
            _ => {
                self.short = Some(format!(
                    "record of unknown kind {kind} at offset {}",
                    start - HEADER_BYTES
                ));
                None
            }
        }
    }

    fn stopped_short(&self) -> Option<String> {
        self.short.clone()
    }
}

/// The body length of the record at the start of `rest`, or why it is not
/// a whole record.
fn whole_record(rest: &[u8]) -> Result<usize, String> {
    if rest.len() < HEADER_BYTES {
        return Err(format!(
            "{} bytes, shorter than a record header",
            rest.len()
        ));
    }
    let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if length == 0 {
        return Err("zeros where a record would start".into());
    }
    if length > RECORD_BYTES_MAX || length as usize > rest.len() - HEADER_BYTES {
        return Err(format!("a record of {length} bytes runs past the end"));
    }
    let body = &rest[HEADER_BYTES..HEADER_BYTES + length as usize];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length.to_le_bytes());
    hasher.update(body);
    if hasher.finalize() != crc {
        return Err("checksum mismatch".into());
    }
    Ok(length as usize)
}

/// What a segment holds up to its first record that is not whole.
struct Scan {
    offsets: Vec<u64>,
    end: u64,
    committed: Option<Bytes>,
    /// Why the record at `end` is not whole, if one is there.
    short: Option<String>,
}

/// Reads a segment's records; an entry out of sequence is damage.
fn scan(file: &File, first: u64) -> Result<Scan, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(|e| e.to_string())?;
    let mut records = Records::new(Bytes::from(buf));
    let mut scan = Scan {
        offsets: Vec::new(),
        end: 0,
        committed: None,
        short: None,
    };
    loop {
        let at = records.at as u64;
        let Some(record) = records.next_record() else {
            break;
        };
        match record {
            Record::Entry { index, .. } => {
                let expected = first + scan.offsets.len() as u64;
                if index != expected {
                    return Err(format!(
                        "entry {index} at offset {at} where {expected} belongs"
                    ));
                }
                scan.offsets.push(at);
            }
            Record::Committed(bytes) => scan.committed = Some(bytes),
        }
        scan.end = records.at as u64;
    }
    scan.short = records.stopped_short();
    Ok(scan)
}

/// The bytes of the last segment from its first record that is not whole
/// to the end of the file.
struct Tail {
    start: u64,
    bytes: Vec<u8>,
}

impl Tail {
    fn read(file: &File, start: u64, len: u64) -> io::Result<Self> {
        let mut bytes = vec![0; (len - start) as usize];
        file.read_exact_at(&mut bytes, start)?;
        Ok(Self { start, bytes })
    }

    /// How many are not zeros (a torn append rather than the zeros
    /// written ahead).
    fn nonzero_bytes(&self) -> u64 {
        self.bytes.iter().filter(|b| **b != 0).count() as u64
    }

    /// The offset of a whole committed-id record past the first byte: the
    /// start of an append written after the one that is not whole. A torn
    /// append holds one only at its start, which is not past its damage.
    fn later_append(&self) -> Option<u64> {
        (1..self.bytes.len())
            .find(|&at| is_committed_record(&self.bytes[at..]))
            .map(|at| self.start + at as u64)
    }
}

/// Whether `bytes` start with a whole committed-id record. Its body is
/// an encoded log id, a few dozen bytes: the length is checked first, so
/// that a search byte by byte through a torn tail rarely computes a CRC.
fn is_committed_record(bytes: &[u8]) -> bool {
    const BODY_BYTES_MAX: u32 = 64;
    let Some(length) = bytes.first_chunk::<4>().map(|l| u32::from_le_bytes(*l)) else {
        return false;
    };
    (1..=BODY_BYTES_MAX).contains(&length)
        && bytes.get(HEADER_BYTES) == Some(&KIND_COMMITTED)
        && whole_record(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL_SEGMENTS: u64 = 4096;

    fn record(index: u64) -> EntryRecord {
        EntryRecord {
            index,
            bytes: format!("entry {index}").into_bytes().repeat(20),
        }
    }

    fn append(files: &LogFiles, indexes: std::ops::RangeInclusive<u64>) {
        let records: Vec<_> = indexes.map(record).collect();
        files.append(None, &records).unwrap();
    }

    fn read(files: &LogFiles, first: u64, last: u64) -> Vec<Bytes> {
        files.read(first, last).unwrap()
    }

    fn expected(indexes: std::ops::RangeInclusive<u64>) -> Vec<Bytes> {
        indexes.map(|i| Bytes::from(record(i).bytes)).collect()
    }

    fn open(dir: &Path) -> (LogFiles, Recovered) {
        LogFiles::open(dir, SMALL_SEGMENTS, false).unwrap()
    }

    /// A log of entries 1 to `last`, each appended alone.
    fn appended_one_by_one(dir: &Path, last: u64) -> LogFiles {
        let (files, _) = open(dir);
        for i in 1..=last {
            append(&files, i..=i);
        }
        files
    }

    #[test]
    fn entries_come_back_across_segments_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let files = appended_one_by_one(dir.path(), 100);
        assert!(
            files.segment_count() > 3,
            "{} segments",
            files.segment_count()
        );
        assert_eq!(read(&files, 1, 100), expected(1..=100));
        assert_eq!(read(&files, 37, 63), expected(37..=63));
        assert_eq!(read(&files, 90, u64::MAX), expected(90..=100));
        drop(files);

        let (files, recovered) = open(dir.path());
        assert_eq!(files.span(), Some((1, 100)));
        assert_eq!(read(&files, 1, 100), expected(1..=100));
        assert_eq!(recovered.torn_bytes, 0, "zeros ahead are not torn bytes");
        append(&files, 101..=101);
        assert_eq!(read(&files, 99, 101), expected(99..=101));
    }

    #[test]
    fn the_last_committed_record_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let (files, recovered) = open(dir.path());
        assert!(recovered.committed.is_none());
        files.append(Some(b"first"), &[record(1)]).unwrap();
        files.append(Some(b"second"), &[record(2)]).unwrap();
        files.append(None, &[record(3)]).unwrap();
        drop(files);
        let (files, recovered) = open(dir.path());
        assert_eq!(recovered.committed.as_deref(), Some(&b"second"[..]));
        assert_eq!(read(&files, 1, 3), expected(1..=3), "not read as entries");
    }

    /// The committed-id record's body in these tests.
    const MARKER: &[u8] = b"committed id";

    /// Appends as the log store makes them: each starts with a committed
    /// id.
    fn append_marked(files: &LogFiles, indexes: std::ops::RangeInclusive<u64>) {
        let records: Vec<_> = indexes.map(record).collect();
        files.append(Some(MARKER), &records).unwrap();
    }

    #[test]
    fn a_torn_append_is_cut_off_and_never_resurfaces() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = open(dir.path());
        append_marked(&files, 1..=2);
        append_marked(&files, 3..=3);
        drop(files);
        // A crash in the middle of appending entries 4 and 5: the committed
        // id before them whole, the first record half written, the second
        // whole (its pages reached the disk, the first's did not).
        let path = segment_path(dir.path(), 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let end = {
            let (files, _) = open(dir.path());
            files.read_segments()[0].end
        };
        let mut torn = AlignedBuf::with_capacity(0);
        push_record(&mut torn, KIND_COMMITTED, &[], MARKER);
        let marker_end = torn.len() as u64;
        push_record(&mut torn, KIND_ENTRY, &4u64.to_le_bytes(), &record(4).bytes);
        let half = torn.len() / 2;
        torn.as_mut_slice()[half..].fill(0xAB);
        push_record(&mut torn, KIND_ENTRY, &5u64.to_le_bytes(), &record(5).bytes);
        file.write_at(torn.as_slice(), end).unwrap();
        drop(file);

        let (files, recovered) = open(dir.path());
        assert_eq!(files.span(), Some((1, 3)));
        assert!(recovered.torn_bytes > 0);
        let end = end + marker_end;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end, "cut");
        // A new entry 4 of the same size: the stale entry 5 behind it is
        // gone, not read back after it.
        append(&files, 4..=4);
        drop(files);
        let (files, _) = open(dir.path());
        assert_eq!(files.span(), Some((1, 4)));
    }

    /// A record that is not whole, followed by the committed id that
    /// starts a later append: that append was written after the damaged
    /// one was synced, so the damage is to acknowledged entries.
    #[test]
    fn damage_to_a_synced_append_in_the_last_segment_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = open(dir.path());
        append_marked(&files, 1..=3);
        append_marked(&files, 4..=6);
        let (path, at) = files.record_at(2).unwrap();
        // The committed-id record just before entry 4's: header, kind, body.
        let marker_bytes = (HEADER_BYTES + 1 + MARKER.len()) as u64;
        let later = files.record_at(4).unwrap().1 - marker_bytes;
        drop(files);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize + HEADER_BYTES + 3] ^= 0xFF;
        std::fs::write(&path, bytes).unwrap();
        let error = LogFiles::open(dir.path(), SMALL_SEGMENTS, false)
            .err()
            .expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let message = error.to_string();
        for expected in [
            format!("the record at offset {at} is damaged (checksum mismatch)"),
            format!("starts at offset {later}"),
            "already acknowledged".to_owned(),
        ] {
            assert!(message.contains(&expected), "{expected}: {message}");
        }
        assert!(std::fs::metadata(&path).unwrap().len() > later, "not cut");
    }

    #[test]
    fn damage_before_the_last_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = appended_one_by_one(dir.path(), 60);
        let second = files.read_segments()[1].first;
        let at = files.read_segments()[0].offsets[1] as usize + HEADER_BYTES + 3;
        drop(files);
        // Flip a byte in the first segment's second record.
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 0xFF;
        std::fs::write(&path, bytes).unwrap();
        let error = LogFiles::open(dir.path(), SMALL_SEGMENTS, false)
            .err()
            .expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error
                .to_string()
                .contains(&format!("starts at entry {second}")),
            "{error}"
        );
    }

    /// Appends of many sizes, most ending inside a direct-I/O block (which
    /// the next append rewrites), across reopens and a truncation in the
    /// middle of a block, in both write modes: every entry reads back, and
    /// the file past the last record holds only zeros.
    #[test]
    fn appends_ending_inside_a_block_leave_the_records_before_them_whole() {
        for power_loss in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let reopen = || LogFiles::open(dir.path(), 1 << 20, power_loss).unwrap().0;
            let sized = |index: u64| EntryRecord {
                index,
                bytes: vec![index as u8; 1 + (index as usize * 389) % 5000],
            };
            let mut files = reopen();
            for first in (1..=120).step_by(3) {
                let batch: Vec<_> = (first..first + 3).map(sized).collect();
                files.append(Some(b"committed"), &batch).unwrap();
                if first % 21 == 1 {
                    drop(files);
                    files = reopen();
                }
            }
            let direct = files.writer().file.as_ref().unwrap().alignment() > 1;
            let probe = crate::direct_io::open_direct(
                OpenOptions::new().write(true).create(true),
                &dir.path().join("probe"),
            )
            .unwrap()
            .1;
            assert_eq!(direct, probe, "direct I/O where the filesystem takes it");
            // One append larger than the buffer keeps between appends.
            let large = EntryRecord {
                index: 121,
                bytes: vec![121; STAGING_KEPT_BYTES * 2 + 3],
            };
            files.append(None, &[large]).unwrap();
            files.append(None, &[sized(122)]).unwrap();
            assert_eq!(
                files.read(121, 121).unwrap()[0].len(),
                STAGING_KEPT_BYTES * 2 + 3
            );
            assert_eq!(
                files.read(122, 122).unwrap(),
                vec![Bytes::from(sized(122).bytes)]
            );
            files.truncate_from(77).unwrap();
            files.append(None, &[sized(77)]).unwrap();
            drop(files);
            files = reopen();
            files.append(None, &[sized(78)]).unwrap();

            let bytes = |indexes: std::ops::RangeInclusive<u64>| -> Vec<Bytes> {
                indexes.map(|i| Bytes::from(sized(i).bytes)).collect()
            };
            assert_eq!(files.read(1, 200).unwrap(), bytes(1..=78));
            let segments = files.read_segments();
            let last = segments.back().unwrap();
            let contents = std::fs::read(segment_path(dir.path(), last.first)).unwrap();
            assert!(contents[last.end as usize..].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn truncation_cuts_and_removes_and_appends_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = appended_one_by_one(dir.path(), 60);
        let segments = files.segment_count();
        files.truncate_from(20).unwrap();
        assert_eq!(files.span(), Some((1, 19)));
        assert!(files.segment_count() < segments);
        assert_eq!(read(&files, 15, 60), expected(15..=19));
        append(&files, 20..=25);
        drop(files);
        let (files, _) = open(dir.path());
        assert_eq!(read(&files, 1, 100), expected(1..=25));
        // Truncating everything.
        files.truncate_from(0).unwrap();
        assert_eq!(files.span(), None);
        assert_eq!(files.segment_count(), 0);
        append(&files, 0..=2);
        assert_eq!(read(&files, 0, 9), expected(0..=2));
    }

    #[test]
    fn removal_takes_whole_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = appended_one_by_one(dir.path(), 60);
        let second = files.read_segments()[1].first;
        files.remove_upto(second).unwrap();
        assert_eq!(
            files.span(),
            Some((second, 60)),
            "the segment holding {second} stays"
        );
        files.remove_upto(1_000).unwrap();
        assert_eq!(files.span(), None);
        // The next append may start anywhere (after a snapshot install).
        append(&files, 500..=501);
        drop(files);
        let (files, _) = open(dir.path());
        assert_eq!(files.span(), Some((500, 501)));
    }

    #[test]
    fn appends_out_of_sequence_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = open(dir.path());
        append(&files, 1..=2);
        let gap = files.append(None, &[record(4)]).unwrap_err();
        assert_eq!(gap.kind(), io::ErrorKind::InvalidInput);
        let unordered = files.append(None, &[record(3), record(5)]).unwrap_err();
        assert_eq!(unordered.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(files.span(), Some((1, 2)));
    }

    #[test]
    fn a_second_process_cannot_open_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let (_files, _) = open(dir.path());
        let error = LogFiles::open(dir.path(), SMALL_SEGMENTS, false)
            .err()
            .expect("locked");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }
}
