//! Snapshots of the whole service state (`vomesh.pubsub.Snapshot`), for
//! Raft snapshot transfer and restart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use jid::{BareJid, Jid};
use prost::Message as _;
use vomesh_proto::pubsub as proto;

use super::*;
use crate::pubsub::model::{
    Affiliation, Item, Subscription, SubscriptionOptions, SubscriptionState,
};

/// Why snapshot bytes cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
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
                })
                .collect(),
            accounts: self.accounts.clone(),
        }
    }
}

impl FrozenState {
    /// The captured state as a `vomesh.pubsub.Snapshot`.
    pub fn encode(self) -> Vec<u8> {
        let record = |item: &Arc<Item>| proto::ItemRecord {
            id: item.id.clone(),
            payload: item.payload.to_string(),
            publisher: item.publisher.to_string(),
            published_micros: item.published_micros,
            archive_id: item.archive_id,
        };
        let nodes = self
            .nodes
            .into_iter()
            .map(|node| proto::NodeState {
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
                items: node.items.iter().map(record).collect(),
                archive: node.archive.iter().map(record).collect(),
                node: node.id,
            })
            .collect();
        proto::Snapshot {
            last_index: self.last_index,
            nodes,
            accounts: self
                .accounts
                .into_iter()
                .map(|(username, credentials)| proto::AddAccount {
                    username,
                    credentials,
                })
                .collect(),
        }
        .encode_to_vec()
    }
}

impl PubsubService {
    /// Restores a service from [`PubsubService::to_snapshot`] bytes.
    pub fn from_snapshot(
        service_jid: BareJid,
        limits: PubsubLimits,
        bytes: &[u8],
    ) -> Result<Self, SnapshotError> {
        let snapshot = proto::Snapshot::decode(bytes)?;
        let jid = |text: &str| Jid::new(text).map_err(|_| SnapshotError::Jid(text.to_owned()));
        let item = |r: &proto::ItemRecord| -> Result<Item, SnapshotError> {
            Ok(Item {
                id: r.id.clone(),
                payload: r.payload.as_str().into(),
                publisher: jid(&r.publisher)?,
                published_micros: r.published_micros,
                archive_id: r.archive_id,
            })
        };
        let mut service = PubsubService::new(service_jid, limits);
        service.last_index = snapshot.last_index;
        for state in &snapshot.nodes {
            let mut config = NodeConfig::defaults(&service.limits);
            if let Some(patch) = &state.config {
                config
                    .apply_patch(patch, &service.limits)
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
            for r in &state.archive {
                node.archive_push(Arc::new(item(r)?));
            }
            for r in &state.items {
                // Share the payload with the archive entry of the same publish.
                let position = node
                    .archive
                    .partition_point(|a| a.archive_id < r.archive_id);
                let shared = node
                    .archive
                    .get(position)
                    .filter(|a| a.archive_id == r.archive_id && a.id == r.id)
                    .cloned();
                let current = match shared {
                    Some(entry) => entry,
                    None => Arc::new(item(r)?),
                };
                node.order.insert(current.archive_id, current.id.clone());
                node.items.insert(current.id.clone(), current);
            }
            node.debug_check();
            service.nodes.insert(node.id.clone(), node);
        }
        for account in snapshot.accounts {
            service
                .accounts
                .insert(account.username, account.credentials);
        }
        Ok(service)
    }
}
