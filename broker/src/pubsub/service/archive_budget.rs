//! What the archives of all nodes hold together, and the bounds on them:
//! entries per node (`[pubsub] max_archive_entries_per_node`), bytes per
//! site (`[pubsub] max_archive_bytes`) and, when set, age
//! (`[pubsub] max_archive_age_seconds`).
//!
//! A site keeps every node's archive in memory, and a snapshot carries all
//! of them. Bounded per node only, their sum grew with the number of
//! nodes, past the memory of the site and past `[mesh] snapshot_bytes_max`,
//! beyond which a site that falls behind can no longer be caught up. When
//! the sum exceeds the site's bound, the site's oldest entries go first,
//! whichever node holds them: archive ids are log indexes, so "oldest" is
//! the same at every site configured alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::PubsubService;
use crate::pubsub::config::PubsubLimits;
use crate::pubsub::model::{ArchiveId, Item, PubsubNode};

/// The archives' totals and where the oldest entry of each is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ArchiveLedger {
    entries: u64,
    /// [`Item::archived_bytes`] summed over every archive.
    bytes: u64,
    /// The archive id of each non-empty archive's oldest entry, and its
    /// node: the first is the site's oldest entry.
    oldest: BTreeMap<ArchiveId, String>,
    /// What the command being applied dropped: taken into its outcome, so
    /// zero between commands.
    dropped: ArchiveDrops,
}

/// Archive entries one command dropped, by the bound that dropped them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveDrops {
    /// `max_archive_entries_per_node`.
    pub node_limit: u64,
    /// `max_archive_bytes`.
    pub site_limit: u64,
    /// `max_archive_age_seconds`.
    pub age_limit: u64,
}

impl ArchiveDrops {
    pub fn total(&self) -> u64 {
        self.node_limit + self.site_limit + self.age_limit
    }
}

impl ArchiveLedger {
    /// The ledger of `nodes` as they are.
    fn of<'a>(nodes: impl Iterator<Item = &'a PubsubNode>) -> Self {
        let mut ledger = ArchiveLedger::default();
        for node in nodes {
            ledger.entries += node.archive.len() as u64;
            ledger.bytes += node.archive_bytes();
            if let Some(front) = node.archive.front() {
                ledger.oldest.insert(front.archive_id, node.id.clone());
            }
        }
        ledger
    }

    /// Archive entries across all nodes.
    pub(super) fn entries(&self) -> u64 {
        self.entries
    }

    /// [`Item::archived_bytes`] across all nodes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn take_dropped(&mut self) -> ArchiveDrops {
        std::mem::take(&mut self.dropped)
    }

    fn push(&mut self, node: &mut PubsubNode, item: Arc<Item>) {
        if node.archive.is_empty() {
            self.oldest.insert(item.archive_id, node.id.clone());
        }
        self.entries += 1;
        self.bytes += item.archived_bytes();
        node.archive_push(item);
    }

    /// Drops `node`'s oldest entry; false when its archive is empty.
    fn pop_oldest(&mut self, node: &mut PubsubNode) -> bool {
        let Some(oldest) = node.archive_pop_oldest() else {
            return false;
        };
        self.entries -= 1;
        self.bytes -= oldest.archived_bytes();
        // The node's id moves to its next entry, not copied again.
        let id = self.oldest.remove(&oldest.archive_id);
        if let (Some(next), Some(id)) = (node.archive.front(), id) {
            self.oldest.insert(next.archive_id, id);
        }
        true
    }

    /// Drops `node`'s oldest entries beyond the per-node bound.
    fn trim_node(&mut self, node: &mut PubsubNode, limits: &PubsubLimits) {
        while node.archive.len() > limits.archive_entries_per_node_max && self.pop_oldest(node) {
            self.dropped.node_limit += 1;
        }
    }

    /// Forgets a deleted node's archive.
    pub(super) fn forget(&mut self, node: &PubsubNode) {
        self.entries -= node.archive.len() as u64;
        self.bytes -= node.archive_bytes();
        if let Some(front) = node.archive.front() {
            self.oldest.remove(&front.archive_id);
        }
    }
}

impl PubsubService {
    /// Appends `item` to node `node_id`'s archive, then drops the oldest
    /// entries beyond the node's bound and the site's, and those published
    /// longer ago than the age bound allows.
    pub(super) fn archive_item(&mut self, node_id: &str, item: Arc<Item>) {
        let Some(node) = self.nodes.get_mut(node_id) else {
            return;
        };
        let now = item.published_micros;
        self.archive_ledger.push(node, item);
        self.archive_ledger.trim_node(node, &self.limits);
        self.trim_site();
        self.trim_age(now);
    }

    /// Drops the site's oldest entries while the archives exceed
    /// `max_archive_bytes`.
    fn trim_site(&mut self) {
        let max = self.limits.archive_bytes_max;
        self.archive_ledger.dropped.site_limit +=
            self.drop_site_oldest_while(|ledger, _| ledger.bytes > max);
    }

    /// Drops the site's oldest entries while they were published more than
    /// `max_archive_age_seconds` before `now_micros`, the time stamped on
    /// the publish or the leader's `ExpireItems` being applied: the
    /// replicated clock, so every site drops the same. Entries go in
    /// archive order, which follows the publication times as far as the
    /// sites' clocks agree.
    pub(super) fn trim_age(&mut self, now_micros: i64) {
        let Some(age) = self.limits.archive_age_max_micros() else {
            return;
        };
        let cutoff = now_micros.saturating_sub(age);
        self.archive_ledger.dropped.age_limit +=
            self.drop_site_oldest_while(|_, oldest| oldest.published_micros < cutoff);
    }

    /// When the site's oldest archive entry outlives the age bound: the
    /// leader proposes `ExpireItems` stamped at or after this time, so
    /// that entries expire where nothing more is published.
    pub(super) fn archive_expiry_micros(&self) -> Option<i64> {
        let age = self.limits.archive_age_max_micros()?;
        let (_, node_id) = self.archive_ledger.oldest.first_key_value()?;
        let oldest = self.nodes.get(node_id.as_str())?.archive.front()?;
        // Past the bound means strictly older than `now - age`.
        Some(
            oldest
                .published_micros
                .saturating_add(age)
                .saturating_add(1),
        )
    }

    /// Drops the site's oldest entry, whichever node holds it, while
    /// `drop(ledger, entry)` holds; returns how many it dropped.
    fn drop_site_oldest_while(&mut self, drop: impl Fn(&ArchiveLedger, &Item) -> bool) -> u64 {
        let mut dropped = 0;
        while let Some((_, node_id)) = self.archive_ledger.oldest.first_key_value() {
            let Some(node) = self.nodes.get_mut(node_id.as_str()) else {
                debug_assert!(false, "the archive ledger names a node that is gone");
                break;
            };
            let due = node
                .archive
                .front()
                .is_some_and(|oldest| drop(&self.archive_ledger, oldest));
            if !due || !self.archive_ledger.pop_oldest(node) {
                break;
            }
            dropped += 1;
        }
        dropped
    }

    /// Rebuilds the ledger after a restore and applies this site's bounds
    /// (a snapshot built where they are larger may exceed them); returns
    /// what they dropped.
    pub(super) fn rebuild_archive_ledger(&mut self) -> ArchiveDrops {
        self.archive_ledger = ArchiveLedger::of(self.nodes.values());
        for node in self.nodes.values_mut() {
            self.archive_ledger.trim_node(node, &self.limits);
        }
        self.trim_site();
        self.archive_ledger.take_dropped()
    }

    /// Checks the ledger against the archives (debug builds only; linear
    /// in the number of nodes).
    pub(super) fn debug_check_archive_ledger(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let mut expected = ArchiveLedger::of(self.nodes.values());
        expected.dropped = self.archive_ledger.dropped;
        debug_assert_eq!(self.archive_ledger, expected, "archive ledger out of step");
    }
}
