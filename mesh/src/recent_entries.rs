//! The entries appended last, kept in memory for the reads that follow
//! every append: the leader's replication task for each follower reads
//! the entries it just appended, and every node's state machine worker
//! reads the entries it applies, which were appended moments before.
//! Served from disk, each such read would be a turn of the log's thread, a
//! read and a protobuf decode (a copy of every payload); served from
//! here it is a clone of each entry (its command is reference-counted).
//!
//! The entries held are always a contiguous suffix of the log: appends
//! extend it, a truncation and a purge cut it, and anything that would
//! leave a gap empties it. A read is answered from here only when the
//! whole range it asks for lies within; otherwise it goes to disk.
//!
//! A follower's entries share the buffer of the append frame they arrived
//! in (and the leader's, that of the forwarded request): the budget counts
//! their commands, so at its edges the memory held can exceed it by part of
//! one frame, whose other entries were already evicted.
//!
//! An append is held here from the moment openraft hands it over, before
//! the log's writer has written it (openraft reads it back at once, to
//! replicate it while the local write is under way). Entries not yet
//! written are therefore never evicted, whatever the budget: until then,
//! this is the only place a read finds them without waiting for the
//! writer.

use std::collections::VecDeque;

use openraft::EntryPayload;

use crate::types::Entry;

/// Bytes counted for an entry besides its command: log id, payload tag,
/// the `VecDeque` slot; a membership change counts as this much alone.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// The last appended entries, within a byte budget.
#[derive(Debug)]
pub(crate) struct RecentEntries {
    entries: VecDeque<Entry>,
    bytes: usize,
    bytes_max: usize,
    /// The last index the writer wrote: entries after it are kept.
    written: Option<u64>,
}

impl RecentEntries {
    /// Holds at most `bytes_max` bytes of entries (0: none).
    pub(crate) fn new(bytes_max: usize) -> Self {
        RecentEntries {
            entries: VecDeque::new(),
            bytes: 0,
            bytes_max,
            written: None,
        }
    }

    /// Entries just handed to the writer, at the end of the log.
    pub(crate) fn appended(&mut self, appended: &[Entry]) {
        let Some(first) = appended.first() else {
            return;
        };
        if self
            .last_index()
            .is_some_and(|last| last.checked_add(1) != Some(first.log_id.index))
        {
            // Not the continuation of what is held (openraft truncates
            // before it overwrites, so this is a safeguard): start over.
            self.clear();
        }
        for entry in appended {
            self.bytes += size_of(entry);
            self.entries.push_back(entry.clone());
        }
        self.evict_beyond_budget();
    }

    /// The writer wrote every entry up to `index`: they may be evicted.
    ///
    /// An append written after a truncation that replaced some of its
    /// entries (queued before it) raises the mark over the replacements,
    /// which are not written yet. That costs no correctness: evicted, they
    /// are read through the writer's queue, behind their own write.
    pub(crate) fn written_upto(&mut self, index: u64) {
        self.written = self.written.max(Some(index));
        self.evict_beyond_budget();
    }

    fn evict_beyond_budget(&mut self) {
        while self.bytes > self.bytes_max
            && self
                .entries
                .front()
                .is_some_and(|oldest| Some(oldest.log_id.index) <= self.written)
        {
            if let Some(oldest) = self.entries.pop_front() {
                self.bytes -= size_of(&oldest);
            }
        }
    }

    /// The log lost every entry after `last` (`None`: all of them).
    pub(crate) fn truncated_after(&mut self, last: Option<u64>) {
        // What is appended next at these indexes is not written yet.
        self.written = self.written.min(last);
        while self
            .entries
            .back()
            .is_some_and(|e| last.is_none_or(|last| e.log_id.index > last))
        {
            if let Some(dropped) = self.entries.pop_back() {
                self.bytes -= size_of(&dropped);
            }
        }
    }

    /// The log lost every entry up to `upto`, included.
    pub(crate) fn purged_upto(&mut self, upto: u64) {
        while self.entries.front().is_some_and(|e| e.log_id.index <= upto) {
            if let Some(dropped) = self.entries.pop_front() {
                self.bytes -= size_of(&dropped);
            }
        }
    }

    /// The entries `first..=last`, if every one of them is held.
    pub(crate) fn get(&self, first: u64, last: u64) -> Option<Vec<Entry>> {
        let held_first = self.entries.front()?.log_id.index;
        let held_last = self.last_index()?;
        if first < held_first || last > held_last || first > last {
            return None;
        }
        let skip = usize::try_from(first - held_first).ok()?;
        let take = usize::try_from(last - first).ok()?.checked_add(1)?;
        Some(self.entries.range(skip..skip + take).cloned().collect())
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.log_id.index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

fn size_of(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(command) => command.0.len() + ENTRY_OVERHEAD_BYTES,
        EntryPayload::Blank | EntryPayload::Membership(_) => ENTRY_OVERHEAD_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::types::{Command, test_log_id};

    /// Entries `indexes`, each with a command of `len` bytes.
    fn entries(indexes: std::ops::RangeInclusive<u64>, len: usize) -> Vec<Entry> {
        indexes
            .map(|i| Entry::new_normal(test_log_id(i), Command(Bytes::from(vec![b'x'; len]))))
            .collect()
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn answers_only_ranges_it_holds_whole() {
        let mut recent = RecentEntries::new(1 << 20);
        recent.appended(&entries(5..=7, 10));
        recent.appended(&entries(8..=9, 10));
        assert_eq!(indexes(recent.get(5, 9)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(recent.get(7, 8)), Some(vec![7, 8]));
        assert_eq!(indexes(recent.get(4, 6)), None, "starts before");
        assert_eq!(indexes(recent.get(8, 10)), None, "ends after");
        assert_eq!(indexes(recent.get(9, 8)), None, "empty range");
    }

    #[test]
    fn evicts_the_oldest_written_beyond_the_budget() {
        let one = 100 + ENTRY_OVERHEAD_BYTES;
        let mut recent = RecentEntries::new(3 * one);
        recent.appended(&entries(1..=5, 100));
        assert_eq!(
            indexes(recent.get(1, 5)),
            Some(vec![1, 2, 3, 4, 5]),
            "none written yet"
        );
        recent.written_upto(1);
        assert_eq!(indexes(recent.get(2, 5)), Some(vec![2, 3, 4, 5]));
        recent.written_upto(5);
        assert_eq!(indexes(recent.get(3, 5)), Some(vec![3, 4, 5]));
        assert_eq!(indexes(recent.get(2, 5)), None);
        assert_eq!(recent.bytes, 3 * one);
        let mut nothing = RecentEntries::new(0);
        nothing.appended(&entries(1..=2, 1));
        assert_eq!(
            indexes(nothing.get(1, 2)),
            Some(vec![1, 2]),
            "until written"
        );
        nothing.written_upto(2);
        assert_eq!(indexes(nothing.get(2, 2)), None);
    }

    #[test]
    fn entries_rewritten_after_a_truncation_wait_for_their_own_write() {
        let one = 100 + ENTRY_OVERHEAD_BYTES;
        let mut recent = RecentEntries::new(2 * one);
        recent.appended(&entries(1..=4, 100));
        recent.written_upto(4);
        recent.truncated_after(Some(3));
        // 4 and 5 again, and 6: none written, all kept over the budget.
        recent.appended(&entries(4..=6, 100));
        assert_eq!(indexes(recent.get(4, 6)), Some(vec![4, 5, 6]));
        assert_eq!(indexes(recent.get(3, 6)), None, "3 was written");
        recent.written_upto(6);
        assert_eq!(indexes(recent.get(5, 6)), Some(vec![5, 6]));
        assert_eq!(indexes(recent.get(4, 6)), None);
    }

    #[test]
    fn follows_truncations_purges_and_gaps() {
        let mut recent = RecentEntries::new(1 << 20);
        recent.appended(&entries(1..=6, 10));
        recent.written_upto(6);
        recent.truncated_after(Some(4));
        assert_eq!(indexes(recent.get(1, 4)), Some(vec![1, 2, 3, 4]));
        assert_eq!(indexes(recent.get(4, 5)), None);
        // Overwritten after the truncation: the new 5 is held.
        recent.appended(&entries(5..=5, 20));
        assert_eq!(indexes(recent.get(3, 5)), Some(vec![3, 4, 5]));
        recent.purged_upto(2);
        assert_eq!(indexes(recent.get(2, 5)), None);
        assert_eq!(indexes(recent.get(3, 5)), Some(vec![3, 4, 5]));
        // A gap (a snapshot installed past the end) starts over.
        recent.appended(&entries(9..=10, 10));
        assert_eq!(indexes(recent.get(5, 9)), None);
        assert_eq!(indexes(recent.get(9, 10)), Some(vec![9, 10]));
        recent.truncated_after(None);
        assert_eq!(indexes(recent.get(9, 9)), None);
        assert_eq!(recent.bytes, 0);
    }
}
