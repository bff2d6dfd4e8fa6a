//! The in-memory model of the pubsub service: nodes, their configuration,
//! affiliations, subscriptions, current items and archive (XEP-0060 §4,
//! XEP-0313). Enumerations are the prost types of `vomesh.pubsub`, so the
//! log, the snapshot and the model share one definition of each.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use jid::{BareJid, Jid};
pub use vomesh_proto::pubsub::{
    AccessModel, Affiliation, NodeType, NotificationType, PublishModel, SendLastPublishedItem,
    SubscriptionState,
};

use crate::pubsub::payload;

/// The Raft log index of the publish that produced an archive entry: its
/// XEP-0313 id and global sequence number.
pub type ArchiveId = u64;

/// pubsub#max_items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxItems {
    Count(u64),
    /// "max": the service's hard cap (`PubsubLimits::items_per_node_max`).
    Max,
}

/// A complete node configuration (`pubsub#node_config`, XEP-0060 §16.4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub title: String,
    pub description: String,
    pub access_model: AccessModel,
    pub roster_groups_allowed: Vec<String>,
    pub publish_model: PublishModel,
    pub persist_items: bool,
    pub max_items: MaxItems,
    /// Seconds after publication an item is removed; 0 means never.
    pub item_expire_seconds: u64,
    pub deliver_payloads: bool,
    pub deliver_notifications: bool,
    pub notify_retract: bool,
    pub notify_delete: bool,
    pub notify_config: bool,
    pub send_last_published_item: SendLastPublishedItem,
    /// pubsub#type: the payload namespace; empty when unspecified.
    pub payload_type: String,
    pub notification_type: NotificationType,
    /// pubsub#subscribe: whether entities may subscribe.
    pub subscribe: bool,
    /// pubsub#node_type: leaf or collection (XEP-0248), fixed at creation.
    pub node_type: NodeType,
    /// pubsub#collection: the collections this node belongs to.
    pub collections: Vec<String>,
}

/// pubsub#subscribe_options of one subscription (XEP-0060 §16.4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// pubsub#deliver: whether notifications are sent at all.
    pub deliver: bool,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions { deliver: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Derived from the log index of the subscribe, so equal at every site.
    pub subid: String,
    /// Bare (every available resource) or full (that resource only).
    pub jid: Jid,
    pub state: SubscriptionState,
    pub options: SubscriptionOptions,
}

/// A published item; current items and archive entries share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    /// Payload XML exactly as delivered; empty for a payload-less publish.
    pub payload: Arc<str>,
    pub publisher: Jid,
    pub published_micros: i64,
    pub archive_id: ArchiveId,
}

impl Item {
    /// What an archive entry counts against `[pubsub] max_archive_bytes`:
    /// its payload and id, nearly all the memory it holds.
    pub fn archived_bytes(&self) -> u64 {
        (self.payload.len() + self.id.len()) as u64
    }
}

/// One pubsub leaf node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubNode {
    pub id: String,
    pub config: NodeConfig,
    pub creator: BareJid,
    pub created_micros: i64,
    /// Affiliations other than `none`, by bare JID (XEP-0060 §4.1).
    pub affiliations: BTreeMap<BareJid, Affiliation>,
    /// In creation order.
    pub subscriptions: Vec<Subscription>,
    /// Current items by id.
    pub items: BTreeMap<String, Arc<Item>>,
    /// Current item ids by the archive id of their latest publish: the
    /// publication order (first = oldest).
    pub order: BTreeMap<ArchiveId, String>,
    /// XEP-0313 history: every publish, oldest first, ids strictly
    /// increasing. Retracted and replaced items stay. Changed only through
    /// [`PubsubNode::archive_push`] and [`PubsubNode::archive_pop_oldest`],
    /// which keep `archived_versions` in step.
    pub archive: VecDeque<Arc<Item>>,
    /// The archive ids of each item id's entries in `archive`, oldest
    /// first: finds every earlier version of an IVORN without a scan of
    /// the whole history (see [`PubsubNode::has_version`]).
    archived_versions: BTreeMap<String, VecDeque<ArchiveId>>,
    /// [`Item::archived_bytes`] summed over `archive`.
    archive_bytes: u64,
    /// The archive id of the newest entry the archive's bounds dropped; 0
    /// when none was. A query resuming after an earlier id would miss
    /// entries (see [`PubsubNode::dropped_after`]).
    archive_dropped_through: ArchiveId,
}

impl PubsubNode {
    pub fn new(id: String, config: NodeConfig, creator: BareJid, created_micros: i64) -> Self {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(creator.clone(), Affiliation::Owner);
        PubsubNode {
            id,
            config,
            creator,
            created_micros,
            affiliations,
            subscriptions: Vec::new(),
            items: BTreeMap::new(),
            order: BTreeMap::new(),
            archive: VecDeque::new(),
            archived_versions: BTreeMap::new(),
            archive_bytes: 0,
            archive_dropped_through: 0,
        }
    }

    /// Appends a publish to the archive (ids strictly increase).
    pub fn archive_push(&mut self, item: Arc<Item>) {
        self.archived_versions
            .entry(item.id.clone())
            .or_default()
            .push_back(item.archive_id);
        self.archive_bytes += item.archived_bytes();
        self.archive.push_back(item);
    }

    /// Drops the oldest archive entry (the archive is bounded), returning it.
    pub fn archive_pop_oldest(&mut self) -> Option<Arc<Item>> {
        let oldest = self.archive.pop_front()?;
        if let Some(versions) = self.archived_versions.get_mut(&oldest.id) {
            versions.pop_front();
            if versions.is_empty() {
                self.archived_versions.remove(&oldest.id);
            }
        }
        self.archive_bytes -= oldest.archived_bytes();
        self.archive_dropped_through = oldest.archive_id;
        Some(oldest)
    }

    /// The newest archive id the archive's bounds dropped (0: none).
    pub fn archive_dropped_through(&self) -> ArchiveId {
        self.archive_dropped_through
    }

    /// Whether entries published after archive id `after` were dropped
    /// from the archive: a subscriber resuming there would miss them.
    pub fn dropped_after(&self, after: ArchiveId) -> bool {
        after < self.archive_dropped_through
    }

    /// Restores what [`PubsubNode::archive_dropped_through`] was when a
    /// snapshot was taken; a later drop only raises it.
    pub fn restore_archive_dropped_through(&mut self, through: ArchiveId) {
        self.archive_dropped_through = self.archive_dropped_through.max(through);
    }

    /// [`Item::archived_bytes`] summed over the archive.
    pub fn archive_bytes(&self) -> u64 {
        self.archive_bytes
    }

    /// Whether item `id` holds, or held in the archived history, the
    /// document `payload` ([`payload::Document`]): a VOEvent packet
    /// is immutable, so seeing it again under its IVORN is a duplicate
    /// even after a newer version — as when two sites relay the same
    /// upstream's versions interleaved, or one relays over VTP what an
    /// author also published over XMPP.
    pub fn has_version(&self, id: &str, payload: &str) -> bool {
        let document = payload::Document::new(payload);
        if self.items.get(id).is_some_and(|i| document.is(&i.payload)) {
            return true;
        }
        let Some(versions) = self.archived_versions.get(id) else {
            return false;
        };
        versions.iter().any(|archive_id| {
            let position = self.archive.partition_point(|a| a.archive_id < *archive_id);
            self.archive
                .get(position)
                .is_some_and(|entry| document.is(&entry.payload))
        })
    }

    /// The affiliation of `jid`'s bare JID; `none` when it has none.
    pub fn affiliation(&self, jid: &Jid) -> Affiliation {
        self.affiliations
            .get(&jid.to_bare())
            .copied()
            .unwrap_or(Affiliation::None)
    }

    pub fn owners(&self) -> impl Iterator<Item = &BareJid> {
        self.affiliations
            .iter()
            .filter(|(_, a)| **a == Affiliation::Owner)
            .map(|(jid, _)| jid)
    }

    /// Subscriptions of exactly `jid` (bare matches bare, full matches full).
    pub fn subscriptions_of(&self, jid: &Jid) -> impl Iterator<Item = &Subscription> {
        let jid = jid.clone();
        self.subscriptions.iter().filter(move |s| s.jid == jid)
    }

    /// Whether `jid` (or its bare JID) holds an active subscription.
    pub fn is_subscribed(&self, jid: &Jid) -> bool {
        let bare = Jid::from(jid.to_bare());
        self.subscriptions
            .iter()
            .any(|s| s.state == SubscriptionState::Subscribed && (&s.jid == jid || s.jid == bare))
    }

    /// The most recently published current item.
    pub fn last_item(&self) -> Option<&Arc<Item>> {
        let (_, id) = self.order.last_key_value()?;
        self.items.get(id)
    }

    /// Current items in publication order.
    pub fn items_in_order(&self) -> impl DoubleEndedIterator<Item = &Arc<Item>> + '_ {
        self.order.values().filter_map(|id| self.items.get(id))
    }

    /// Removes the current item `id`, returning it.
    pub fn remove_item(&mut self, id: &str) -> Option<Arc<Item>> {
        let item = self.items.remove(id)?;
        self.order.remove(&item.archive_id);
        Some(item)
    }

    /// Checks every invariant `apply` relies on (debug builds only; linear
    /// in the node's size, so run on restore, not per command).
    pub fn debug_check(&self) {
        debug_assert_eq!(self.items.len(), self.order.len(), "node {}", self.id);
        debug_assert!(
            self.order.iter().all(|(archive_id, id)| self
                .items
                .get(id)
                .is_some_and(|i| i.archive_id == *archive_id)),
            "order and items disagree in node {}",
            self.id
        );
        debug_assert!(
            self.archive
                .iter()
                .zip(self.archive.iter().skip(1))
                .all(|(a, b)| a.archive_id < b.archive_id),
            "archive ids of node {} do not strictly increase",
            self.id
        );
        debug_assert_eq!(
            self.archive.iter().map(|i| i.archived_bytes()).sum::<u64>(),
            self.archive_bytes,
            "archive bytes of node {}",
            self.id
        );
    }

    /// The invariants a single command can break, checked in constant time
    /// per node after each command (debug builds only): as many items as
    /// ordered ids, the newest ordered id is a current item, and the
    /// archive's newest ids strictly increase.
    pub fn debug_check_recent(&self) {
        debug_assert_eq!(self.items.len(), self.order.len(), "node {}", self.id);
        debug_assert!(
            self.order
                .last_key_value()
                .is_none_or(|(archive_id, id)| self
                    .items
                    .get(id)
                    .is_some_and(|i| i.archive_id == *archive_id)),
            "newest item of node {} is not current",
            self.id
        );
        let mut newest = self.archive.iter().rev();
        if let (Some(last), Some(before)) = (newest.next(), newest.next()) {
            debug_assert!(
                before.archive_id < last.archive_id,
                "archive ids of node {} do not strictly increase",
                self.id
            );
        }
    }
}
