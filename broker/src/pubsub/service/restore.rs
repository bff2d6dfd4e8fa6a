//! Restoring the service from a `vomesh.pubsub.Snapshot`, read field by
//! field rather than decoded whole.
//!
//! prost's decode of the whole message copied every item's id, payload and
//! publisher into `String`s, only for the restore to copy them again into
//! the model and drop them: a site held each payload three times at once
//! (the snapshot's bytes, the decoded message, the model), more than half
//! a gigabyte extra for a snapshot at the default archive bound. Here
//! each item record is read in place ([`RecordView`]) and copied once,
//! into its [`Item`]; the rest of a node, small, still goes through prost.
//! Fields this version does not know are skipped, as prost skips them.

use std::sync::Arc;

use jid::Jid;
use prost::Message as _;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use vomesh_proto::pubsub as proto;

use super::PubsubService;
use super::snapshot::{
    NODE_ARCHIVE, NODE_ITEMS, RECORD_ARCHIVE_ID, RECORD_ID, RECORD_PAYLOAD,
    RECORD_PUBLISHED_MICROS, RECORD_PUBLISHER, SNAPSHOT_ACCOUNTS, SNAPSHOT_LAST_INDEX,
    SNAPSHOT_NODES, SnapshotError,
};
use crate::pubsub::config::PubsubLimits;
use crate::pubsub::model::{
    Affiliation, Item, NodeConfig, PubsubNode, Subscription, SubscriptionOptions, SubscriptionState,
};

impl PubsubService {
    /// Restores a service from [`PubsubService::to_snapshot`] bytes.
    pub fn from_snapshot(
        service_jid: jid::BareJid,
        limits: PubsubLimits,
        bytes: &[u8],
    ) -> Result<Self, SnapshotError> {
        let mut service = PubsubService::new(service_jid, limits);
        for field in fields(bytes) {
            let field = field?;
            match (field.tag, field.value) {
                (SNAPSHOT_LAST_INDEX, Value::Varint(index)) => service.last_index = index,
                (SNAPSHOT_NODES, Value::Bytes(node)) => {
                    let node = restore_node(node, &service.limits)?;
                    service.nodes.insert(node.id.clone(), node);
                }
                (SNAPSHOT_ACCOUNTS, Value::Bytes(account)) => {
                    let account = proto::AddAccount::decode(account)?;
                    service
                        .accounts
                        .insert(account.username, account.credentials);
                }
                (SNAPSHOT_LAST_INDEX | SNAPSHOT_NODES | SNAPSHOT_ACCOUNTS, _) => {
                    return Err(wrong_type("Snapshot", field.tag));
                }
                _ => {}
            }
        }
        let dropped = service.rebuild_archive_ledger();
        if dropped.total() > 0 {
            tracing::warn!(
                node_limit = dropped.node_limit,
                site_limit = dropped.site_limit,
                "the snapshot's archives exceed this site's bounds \
                 (max_archive_entries_per_node, max_archive_bytes): the oldest entries were dropped"
            );
        }
        service.debug_check_archive_ledger();
        Ok(service)
    }
}

/// One `NodeState`: its items and archive read in place, its other fields
/// (configuration, affiliations, subscriptions…) decoded by prost.
fn restore_node(bytes: &[u8], limits: &PubsubLimits) -> Result<PubsubNode, SnapshotError> {
    let mut head = Vec::new();
    let (mut items, mut archive) = (Vec::new(), Vec::new());
    for field in fields(bytes) {
        let field = field?;
        match (field.tag, field.value) {
            (NODE_ITEMS, Value::Bytes(record)) => items.push(RecordView::read(record)?),
            (NODE_ARCHIVE, Value::Bytes(record)) => archive.push(RecordView::read(record)?),
            (NODE_ITEMS | NODE_ARCHIVE, _) => return Err(wrong_type("NodeState", field.tag)),
            _ => head.extend_from_slice(field.raw),
        }
    }
    let state = proto::NodeState::decode(head.as_slice())?;
    let mut config = NodeConfig::defaults(limits);
    if let Some(patch) = &state.config {
        config
            .apply_patch(patch, limits)
            .map_err(|error| SnapshotError::Config {
                node: state.node.clone(),
                error,
            })?;
    }
    let mut node = PubsubNode::new(
        state.node.clone(),
        config,
        jid(&state.creator)?.to_bare(),
        state.created_micros,
    );
    node.affiliations.clear();
    for a in &state.affiliations {
        let affiliation = Affiliation::try_from(a.affiliation).unwrap_or(Affiliation::None);
        node.affiliations
            .insert(jid(&a.jid)?.to_bare(), affiliation);
    }
    for s in &state.subscriptions {
        let mut options = SubscriptionOptions::default();
        if let Some(patch) = &s.options {
            options.apply_patch(patch);
        }
        node.subscriptions.push(Subscription {
            subid: s.subid.clone(),
            jid: jid(&s.jid)?,
            state: SubscriptionState::try_from(s.state).unwrap_or(SubscriptionState::None),
            options,
        });
    }
    for record in &archive {
        node.archive_push(Arc::new(record.item()?));
    }
    node.restore_archive_dropped_through(state.archive_dropped_through);
    for record in &items {
        // Share the payload with the archive entry of the same publish.
        let position = node
            .archive
            .partition_point(|a| a.archive_id < record.archive_id);
        let shared = node
            .archive
            .get(position)
            .filter(|a| a.archive_id == record.archive_id && a.id == record.id)
            .cloned();
        let current = match shared {
            Some(entry) => entry,
            None => Arc::new(record.item()?),
        };
        node.order.insert(current.archive_id, current.id.clone());
        node.items.insert(current.id.clone(), current);
    }
    node.debug_check();
    Ok(node)
}

fn jid(text: &str) -> Result<Jid, SnapshotError> {
    Jid::new(text).map_err(|_| SnapshotError::Jid(text.to_owned()))
}

/// An `ItemRecord` as it lies in the snapshot's bytes.
#[derive(Default)]
struct RecordView<'a> {
    id: &'a str,
    payload: &'a str,
    publisher: &'a str,
    published_micros: i64,
    archive_id: u64,
}

impl<'a> RecordView<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, SnapshotError> {
        let mut record = RecordView::default();
        for field in fields(bytes) {
            let field = field?;
            match (field.tag, field.value) {
                (RECORD_ID, Value::Bytes(id)) => record.id = utf8(id)?,
                (RECORD_PAYLOAD, Value::Bytes(payload)) => record.payload = utf8(payload)?,
                (RECORD_PUBLISHER, Value::Bytes(publisher)) => record.publisher = utf8(publisher)?,
                // int64: the varint holds the two's complement.
                (RECORD_PUBLISHED_MICROS, Value::Varint(micros)) => {
                    record.published_micros = micros as i64;
                }
                (RECORD_ARCHIVE_ID, Value::Varint(id)) => record.archive_id = id,
                (
                    RECORD_ID
                    | RECORD_PAYLOAD
                    | RECORD_PUBLISHER
                    | RECORD_PUBLISHED_MICROS
                    | RECORD_ARCHIVE_ID,
                    _,
                ) => return Err(wrong_type("ItemRecord", field.tag)),
                _ => {}
            }
        }
        Ok(record)
    }

    fn item(&self) -> Result<Item, SnapshotError> {
        Ok(Item {
            id: self.id.to_owned(),
            payload: self.payload.into(),
            publisher: jid(self.publisher)?,
            published_micros: self.published_micros,
            archive_id: self.archive_id,
        })
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, SnapshotError> {
    std::str::from_utf8(bytes)
        .map_err(|_| SnapshotError::Malformed("a string field is not UTF-8".to_owned()))
}

fn wrong_type(message: &str, tag: u32) -> SnapshotError {
    SnapshotError::Malformed(format!("field {tag} of {message} has the wrong wire type"))
}

/// One field of a message: its number, its value, and its encoding as read
/// (key included).
struct Field<'a> {
    tag: u32,
    value: Value<'a>,
    raw: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    /// Length-delimited: a string, bytes or an embedded message.
    Bytes(&'a [u8]),
    /// A fixed-width or group field, which no field read here is.
    Other,
}

/// The fields of the message encoded in `bytes`, in order; after an error,
/// none.
fn fields(mut rest: &[u8]) -> impl Iterator<Item = Result<Field<'_>, SnapshotError>> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let start = rest;
        let field = next_field(&mut rest).map(|(tag, value)| Field {
            tag,
            value,
            raw: &start[..start.len() - rest.len()],
        });
        if field.is_err() {
            rest = &[];
        }
        Some(field)
    })
}

fn next_field<'a>(rest: &mut &'a [u8]) -> Result<(u32, Value<'a>), SnapshotError> {
    let (tag, wire_type) = decode_key(rest)?;
    let value = match wire_type {
        WireType::Varint => Value::Varint(decode_varint(rest)?),
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(rest)?)
                .ok()
                .filter(|len| *len <= rest.len())
                .ok_or_else(|| {
                    SnapshotError::Malformed(format!(
                        "field {tag} runs past the end of its message"
                    ))
                })?;
            let (value, after) = rest.split_at(len);
            *rest = after;
            Value::Bytes(value)
        }
        other => {
            skip_field(other, tag, rest, DecodeContext::default())?;
            Value::Other
        }
    };
    Ok((tag, value))
}
