//! Snapshots of the whole service state (`vomesh.pubsub.Snapshot`), for
//! Raft snapshot transfer and restart: captured and encoded here, read back
//! by `restore`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use jid::BareJid;
use prost::Message as _;
use vomesh_proto::pubsub as proto;

use super::*;
use crate::pubsub::model::{Affiliation, Item, Subscription};

/// Why snapshot bytes cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("snapshot does not decode: {0}")]
    Malformed(String),
    #[error("snapshot holds an invalid JID {0:?}")]
    Jid(String),
    #[error("snapshot holds an invalid configuration of node {node}: {error}")]
    Config { node: String, error: StanzaError },
}

/// The state a snapshot encodes, as it was at one log index: what
/// [`PubsubService::freeze`] captures between two applies, encoded later
/// by [`FrozenState::encode`] off the apply path. Items are shared
/// (`Arc`), not copied, and the node's derived indexes (the current items
/// by id, every IVORN's archived versions) are left out, since a restore
/// rebuilds them: copying them took an allocation per archived event, all
/// while no command could apply.
pub struct FrozenState {
    last_index: u64,
    nodes: Vec<FrozenNode>,
    accounts: BTreeMap<String, Vec<u8>>,
}

struct FrozenNode {
    id: String,
    config: NodeConfig,
    creator: BareJid,
    created_micros: i64,
    affiliations: BTreeMap<BareJid, Affiliation>,
    subscriptions: Vec<Subscription>,
    /// The current items, in publication order.
    items: Vec<Arc<Item>>,
    archive: VecDeque<Arc<Item>>,
    archive_dropped_through: u64,
}

impl PubsubService {
    /// The whole state as a `vomesh.pubsub.Snapshot`.
    pub fn to_snapshot(&self) -> Vec<u8> {
        self.freeze().encode()
    }

    /// Captures the state for a snapshot encoded later.
    pub fn freeze(&self) -> FrozenState {
        FrozenState {
            last_index: self.last_index,
            nodes: self
                .nodes
                .values()
                .map(|node| FrozenNode {
                    id: node.id.clone(),
                    config: node.config.clone(),
                    creator: node.creator.clone(),
                    created_micros: node.created_micros,
                    affiliations: node.affiliations.clone(),
                    subscriptions: node.subscriptions.clone(),
                    items: node.items_in_order().cloned().collect(),
                    archive: node.archive.clone(),
                    archive_dropped_through: node.archive_dropped_through(),
                })
                .collect(),
            accounts: self.accounts.clone(),
        }
    }
}

impl FrozenState {
    /// The captured state as a `vomesh.pubsub.Snapshot`, in memory.
    pub fn encode(self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec never fails");
        out
    }

    /// Writes the captured state as a `vomesh.pubsub.Snapshot` to `out`, in
    /// pieces of about `PIECE_BYTES`: the snapshot thread streams it to
    /// the snapshot file, so a state of gigabytes is never encoded whole
    /// in memory (the page faults of such a buffer, the kernel zeroing its
    /// fresh pages, were more than half of a snapshot's cost).
    ///
    /// The items, nearly all of a snapshot's bytes, are written straight
    /// from the shared [`Item`]s: building a `proto::ItemRecord` for each
    /// copied its id, payload and publisher into fresh strings only to copy
    /// them again into the output and free them. Everything else goes
    /// through the generated messages. The bytes are the ones prost writes
    /// for the whole `proto::Snapshot` (fields in number order, defaults
    /// left out), which `encodes_as_prost_does` checks, so any version reads
    /// them.
    pub fn write_to(self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        // Each node as (its other fields encoded, its encoded length, node).
        let nodes: Vec<(Vec<u8>, usize, FrozenNode)> = self
            .nodes
            .into_iter()
            .map(|node| {
                let fields = node_fields(&node).encode_to_vec();
                let len = fields.len()
                    + records_len(NODE_ITEMS, &node.items)
                    + records_len(NODE_ARCHIVE, &node.archive)
                    + wire::varint_len(NODE_ARCHIVE_DROPPED_THROUGH, node.archive_dropped_through);
                (fields, len, node)
            })
            .collect();
        let head = proto::Snapshot {
            last_index: self.last_index,
            nodes: Vec::new(),
            accounts: Vec::new(),
        };
        let accounts = proto::Snapshot {
            accounts: self
                .accounts
                .into_iter()
                .map(|(username, credentials)| proto::AddAccount {
                    username,
                    credentials,
                })
                .collect(),
            ..proto::Snapshot::default()
        };
        let mut piece = Pieces::new(out);
        head.encode_raw(&mut piece.buffer);
        for (fields, len, node) in &nodes {
            wire::message_header(SNAPSHOT_NODES, *len, &mut piece.buffer);
            piece.buffer.extend_from_slice(fields);
            for item in &node.items {
                write_record(NODE_ITEMS, item, &mut piece.buffer);
                piece.send_when_full()?;
            }
            for item in &node.archive {
                write_record(NODE_ARCHIVE, item, &mut piece.buffer);
                piece.send_when_full()?;
            }
            wire::varint(
                NODE_ARCHIVE_DROPPED_THROUGH,
                node.archive_dropped_through,
                &mut piece.buffer,
            );
        }
        accounts.encode_raw(&mut piece.buffer);
        piece.send()
    }
}

/// About how many bytes [`FrozenState::write_to`] writes at once: enough
/// to make each write system call worth its cost, few enough to stay in
/// the core's cache.
const PIECE_BYTES: usize = 256 * 1024;

/// The encoding of a snapshot on its way out, a piece at a time.
struct Pieces<'a> {
    buffer: Vec<u8>,
    out: &'a mut dyn std::io::Write,
}

impl<'a> Pieces<'a> {
    fn new(out: &'a mut dyn std::io::Write) -> Self {
        Self {
            // A piece is sent once it reaches PIECE_BYTES, so it exceeds
            // them by at most one item.
            buffer: Vec::with_capacity(2 * PIECE_BYTES),
            out,
        }
    }

    fn send_when_full(&mut self) -> std::io::Result<()> {
        if self.buffer.len() >= PIECE_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }
}

/// Field numbers of `vomesh.pubsub.Snapshot`, of the last fields of
/// `NodeState` and of `ItemRecord`, as in `pubsub.proto`.
pub(super) const SNAPSHOT_LAST_INDEX: u32 = 1;
pub(super) const SNAPSHOT_NODES: u32 = 2;
pub(super) const SNAPSHOT_ACCOUNTS: u32 = 3;
pub(super) const NODE_ITEMS: u32 = 7;
pub(super) const NODE_ARCHIVE: u32 = 8;
const NODE_ARCHIVE_DROPPED_THROUGH: u32 = 9;
pub(super) const RECORD_ID: u32 = 1;
pub(super) const RECORD_PAYLOAD: u32 = 2;
pub(super) const RECORD_PUBLISHER: u32 = 3;
pub(super) const RECORD_PUBLISHED_MICROS: u32 = 4;
pub(super) const RECORD_ARCHIVE_ID: u32 = 5;

/// A node's fields other than its items, archive and archive cut (its last
/// three fields, so prost writes them after these).
fn node_fields(node: &FrozenNode) -> proto::NodeState {
    proto::NodeState {
        node: node.id.clone(),
        config: Some(node.config.to_proto()),
        creator: node.creator.to_string(),
        created_micros: node.created_micros,
        affiliations: node
            .affiliations
            .iter()
            .map(|(jid, a)| proto::AffiliationChange {
                jid: jid.to_string(),
                affiliation: (*a).into(),
            })
            .collect(),
        subscriptions: node
            .subscriptions
            .iter()
            .map(|s| proto::SubscriptionRecord {
                subid: s.subid.clone(),
                jid: s.jid.to_string(),
                state: s.state.into(),
                options: Some(s.options.to_proto()),
            })
            .collect(),
        items: Vec::new(),
        archive: Vec::new(),
        archive_dropped_through: 0,
    }
}

/// The encoded length of `items` as `ItemRecord`s in field `tag`.
fn records_len<'a>(tag: u32, items: impl IntoIterator<Item = &'a Arc<Item>>) -> usize {
    items
        .into_iter()
        .map(|item| wire::message_len(tag, record_len(item)))
        .sum()
}

/// The encoded length of `item` as an `ItemRecord`, without its header.
fn record_len(item: &Item) -> usize {
    wire::string_len(RECORD_ID, &item.id)
        + wire::string_len(RECORD_PAYLOAD, &item.payload)
        + wire::string_len(RECORD_PUBLISHER, item.publisher.as_str())
        + wire::varint_len(RECORD_PUBLISHED_MICROS, item.published_micros as u64)
        + wire::varint_len(RECORD_ARCHIVE_ID, item.archive_id)
}

/// `item` as an `ItemRecord` in field `tag`, as prost writes one.
fn write_record(tag: u32, item: &Item, out: &mut Vec<u8>) {
    wire::message_header(tag, record_len(item), out);
    wire::string(RECORD_ID, &item.id, out);
    wire::string(RECORD_PAYLOAD, &item.payload, out);
    wire::string(RECORD_PUBLISHER, item.publisher.as_str(), out);
    // int64 is written as the varint of its two's complement.
    wire::varint(RECORD_PUBLISHED_MICROS, item.published_micros as u64, out);
    wire::varint(RECORD_ARCHIVE_ID, item.archive_id, out);
}

/// Protobuf fields written with prost's own encoding primitives (the ones
/// its generated code calls), leaving out default values as proto3 does.
mod wire {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

    pub fn message_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    pub fn message_header(tag: u32, len: usize, out: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
    }

    pub fn string_len(tag: u32, value: &str) -> usize {
        if value.is_empty() {
            0
        } else {
            message_len(tag, value.len())
        }
    }

    pub fn string(tag: u32, value: &str, out: &mut Vec<u8>) {
        if !value.is_empty() {
            message_header(tag, value.len(), out);
            out.extend_from_slice(value.as_bytes());
        }
    }

    pub fn varint_len(tag: u32, value: u64) -> usize {
        if value == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(value)
        }
    }

    pub fn varint(tag: u32, value: u64, out: &mut Vec<u8>) {
        if value != 0 {
            encode_key(tag, WireType::Varint, out);
            encode_varint(value, out);
        }
    }
}
