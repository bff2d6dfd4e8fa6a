//! Permission and precondition checks, shared by `handle_iq` (early, to
//! avoid proposing garbage) and `apply` (authoritative, at the command's
//! log position).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use jid::{BareJid, Jid};
use vomesh_proto::pubsub as proto;

use super::*;
use crate::pubsub::model::{
    AccessModel, Affiliation, NodeType, PublishModel, Subscription, SubscriptionState,
};
use crate::voevent::VOEVENT_NS;

impl PubsubService {
    pub(super) fn existing(&self, node: &str) -> Result<&PubsubNode, StanzaError> {
        self.nodes.get(node).ok_or_else(|| not_found(node))
    }

    pub(super) fn require_owner<'a>(
        node: &'a PubsubNode,
        actor: &Jid,
    ) -> Result<&'a PubsubNode, StanzaError> {
        if node.affiliation(actor) == Affiliation::Owner {
            Ok(node)
        } else {
            Err(forbidden("only an owner of the node may do this"))
        }
    }

    /// Whether `who` passes the presence or roster check of the node's
    /// access model, by any owner's roster.
    pub(super) fn contact_access(
        node: &PubsubNode,
        who: &BareJid,
        ctx: &dyn RequestContext,
    ) -> bool {
        match node.config.access_model {
            AccessModel::Presence => node
                .owners()
                .any(|owner| ctx.has_presence_subscription(owner, who)),
            AccessModel::Roster => node
                .owners()
                .any(|owner| ctx.in_roster_group(owner, who, &node.config.roster_groups_allowed)),
            _ => false,
        }
    }

    /// XEP-0060 §6.1.3 / §6.5.9: whether `who` may see the node's items
    /// under its access model. `authorize` is decided by the caller.
    pub(super) fn check_access(
        node: &PubsubNode,
        who: &Jid,
        contact_access: bool,
    ) -> Result<(), StanzaError> {
        match node.affiliation(who) {
            Affiliation::Outcast => return Err(forbidden("you are banned from this node")),
            Affiliation::PublishOnly => {
                return Err(forbidden("publish-only entities may not read this node"));
            }
            Affiliation::Owner | Affiliation::Publisher | Affiliation::Member => return Ok(()),
            Affiliation::None | Affiliation::Unspecified => {}
        }
        match node.config.access_model {
            AccessModel::Presence if !contact_access => Err(StanzaError::pubsub(
                Condition::NotAuthorized,
                "presence-subscription-required",
            )),
            AccessModel::Roster if !contact_access => Err(StanzaError::pubsub(
                Condition::NotAuthorized,
                "not-in-roster-group",
            )),
            AccessModel::Whitelist => {
                Err(StanzaError::pubsub(Condition::NotAllowed, "closed-node"))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn check_retrieve(
        &self,
        node: &PubsubNode,
        actor: &Jid,
        ctx: &dyn RequestContext,
    ) -> Result<(), StanzaError> {
        Self::check_access(
            node,
            actor,
            Self::contact_access(node, &actor.to_bare(), ctx),
        )?;
        // §6.5.9.4: an authorize node shows items to approved subscribers only.
        if node.config.access_model == AccessModel::Authorize
            && node.affiliation(actor) == Affiliation::None
            && !node.is_subscribed(actor)
        {
            return Err(StanzaError::pubsub(
                Condition::NotAuthorized,
                "not-subscribed",
            ));
        }
        Ok(())
    }

    pub(super) fn check_create(
        &self,
        node: Option<&str>,
        config: Option<&proto::NodeConfig>,
    ) -> Result<(), StanzaError> {
        if let Some(id) = node {
            self.check_new_node_id(id)?;
        }
        if self.nodes.len() >= self.limits.nodes_max {
            return Err(
                StanzaError::new(Condition::PolicyViolation).with_text(format!(
                    "the service holds at most {} nodes",
                    self.limits.nodes_max
                )),
            );
        }
        if let Some(config) = config {
            let mut new = NodeConfig::defaults(&self.limits);
            new.apply_patch(config, &self.limits)?;
            self.check_collections(node, &new.collections)?;
        }
        Ok(())
    }

    /// The configuration `node` would have after `patch` (XEP-0060 §8.2.5):
    /// a valid patch that keeps the node type (XEP-0248 §5: it is fixed at
    /// creation) and names valid collections.
    pub(super) fn check_configure(
        &self,
        node: &PubsubNode,
        patch: &proto::NodeConfig,
    ) -> Result<NodeConfig, StanzaError> {
        let mut next = node.config.clone();
        next.apply_patch(patch, &self.limits)?;
        if next.node_type != node.config.node_type {
            return Err(StanzaError::new(Condition::NotAcceptable)
                .with_text("pubsub#node_type cannot change after creation"));
        }
        if next.collections != node.config.collections {
            self.check_collections(Some(&node.id), &next.collections)?;
        }
        Ok(next)
    }

    /// XEP-0248: every collection `node` is to belong to exists, is a
    /// collection, and does not have `node` among its own ancestors.
    pub(super) fn check_collections(
        &self,
        node: Option<&str>,
        parents: &[String],
    ) -> Result<(), StanzaError> {
        for parent in parents {
            let collection = self.nodes.get(parent).ok_or_else(|| {
                StanzaError::new(Condition::ItemNotFound)
                    .with_text(format!("no collection {parent}"))
            })?;
            if collection.config.node_type != NodeType::Collection {
                return Err(StanzaError::new(Condition::NotAcceptable)
                    .with_text(format!("{parent} is not a collection")));
            }
        }
        if let Some(node) = node
            && self.ancestors(parents).iter().any(|a| a.id == node)
        {
            return Err(StanzaError::new(Condition::NotAcceptable)
                .with_text(format!("{node} would contain itself")));
        }
        Ok(())
    }

    /// The collections reachable upwards from `parents`, each once, nearest
    /// first (a cycle in stored data cannot loop: each node is visited once).
    pub(super) fn ancestors(&self, parents: &[String]) -> Vec<&PubsubNode> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<&str> = parents.iter().map(String::as_str).collect();
        let mut found = Vec::new();
        while let Some(id) = queue.pop_front() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(collection) = self.nodes.get(id) {
                queue.extend(collection.config.collections.iter().map(String::as_str));
                found.push(collection);
            }
        }
        found
    }

    pub(super) fn check_new_node_id(&self, id: &str) -> Result<(), StanzaError> {
        if id.len() > self.limits.node_id_bytes_max {
            return Err(
                StanzaError::new(Condition::NotAcceptable).with_text(format!(
                    "node ids are at most {} bytes",
                    self.limits.node_id_bytes_max
                )),
            );
        }
        if self.nodes.contains_key(id) {
            // XEP-0060 §8.1.3.4
            return Err(
                StanzaError::new(Condition::Conflict).with_text(format!("node {id} exists"))
            );
        }
        Ok(())
    }

    pub(super) fn check_subscribe(
        &self,
        node: &PubsubNode,
        jid: &Jid,
        contact_access: bool,
    ) -> Result<(), StanzaError> {
        if !node.config.subscribe {
            return Err(StanzaError::unsupported("subscribe"));
        }
        Self::check_access(node, jid, contact_access)?;
        if node
            .subscriptions_of(jid)
            .any(|s| s.state == SubscriptionState::Pending)
        {
            // XEP-0060 §6.1.3.7
            return Err(StanzaError::pubsub(
                Condition::NotAuthorized,
                "pending-subscription",
            ));
        }
        if node.subscriptions.len() >= self.limits.subscriptions_per_node_max {
            // §6.1.3.9
            return Err(too_many_subscriptions());
        }
        Ok(())
    }

    /// The subscription `jid`/`subid` that `actor` may manage (its own, or
    /// any when `actor` owns the node): XEP-0060 §6.2.3 and §6.3.4 errors.
    pub(super) fn find_own_subscription<'a>(
        node: &'a PubsubNode,
        actor: &Jid,
        jid: &Jid,
        subid: Option<&str>,
    ) -> Result<&'a Subscription, StanzaError> {
        if jid.to_bare() != actor.to_bare() && node.affiliation(actor) != Affiliation::Owner {
            return Err(forbidden("you may only manage your own subscriptions"));
        }
        let mut mine = node
            .subscriptions_of(jid)
            .filter(|s| s.state != SubscriptionState::None);
        match subid {
            Some(subid) => node
                .subscriptions_of(jid)
                .find(|s| s.subid == subid)
                .ok_or_else(|| {
                    if node.subscriptions_of(jid).next().is_some() {
                        StanzaError::pubsub(Condition::NotAcceptable, "invalid-subid")
                    } else {
                        not_subscribed()
                    }
                }),
            None => match (mine.next(), mine.next()) {
                (Some(only), None) => Ok(only),
                (Some(_), Some(_)) => {
                    Err(StanzaError::pubsub(Condition::BadRequest, "subid-required"))
                }
                (None, _) => Err(not_subscribed()),
            },
        }
    }

    pub(super) fn find_pending<'a>(
        node: &'a PubsubNode,
        jid: &Jid,
        subid: Option<&str>,
    ) -> Result<&'a Subscription, StanzaError> {
        node.subscriptions_of(jid)
            .find(|s| s.state == SubscriptionState::Pending && subid.is_none_or(|id| s.subid == id))
            .ok_or_else(|| {
                StanzaError::new(Condition::ItemNotFound).with_text("no pending subscription")
            })
    }

    pub(super) fn check_publish_rights(node: &PubsubNode, actor: &Jid) -> Result<(), StanzaError> {
        let allowed = match node.affiliation(actor) {
            Affiliation::Owner | Affiliation::Publisher | Affiliation::PublishOnly => true,
            Affiliation::Outcast => false,
            Affiliation::Member | Affiliation::None | Affiliation::Unspecified => {
                match node.config.publish_model {
                    PublishModel::Open => true,
                    PublishModel::Subscribers => node.is_subscribed(actor),
                    PublishModel::Publishers | PublishModel::Unspecified => false,
                }
            }
        };
        if allowed {
            Ok(())
        } else {
            // XEP-0060 §7.1.3.1
            Err(forbidden("you may not publish to this node"))
        }
    }

    /// Every check of XEP-0060 §7.1.3 against the current state. Returns
    /// the configuration of the node to auto-create (§7.1.4) when the node
    /// does not exist.
    pub(super) fn check_publish(
        &self,
        actor: &Jid,
        publish: &proto::Publish,
    ) -> Result<Option<NodeConfig>, StanzaError> {
        let config: Cow<'_, NodeConfig> = match self.nodes.get(&publish.node) {
            Some(node) => {
                Self::check_publish_rights(node, actor)?;
                if let Some(options) = &publish.publish_options
                    && let Some(field) = node.config.unmet_precondition(options, &self.limits)
                {
                    // §7.1.5: the precondition is not met.
                    return Err(
                        StanzaError::pubsub(Condition::Conflict, "precondition-not-met")
                            .with_text(format!("{field} differs")),
                    );
                }
                Cow::Borrowed(&node.config)
            }
            None => {
                self.check_create(Some(&publish.node), publish.publish_options.as_ref())?;
                let mut config = NodeConfig::defaults(&self.limits);
                if let Some(options) = &publish.publish_options {
                    config.apply_patch(options, &self.limits)?;
                }
                Cow::Owned(config)
            }
        };
        if config.node_type == NodeType::Collection {
            // XEP-0248: items are published to leaves, not collections.
            return Err(StanzaError::unsupported("publish"));
        }
        // XEP-0060 §7.1.3.6: the request must match the node's event type.
        let has_payload = !publish.payload.is_empty();
        if config.persist_items && !publish.has_item {
            return Err(StanzaError::pubsub(Condition::BadRequest, "item-required"));
        }
        if config.deliver_payloads && !has_payload {
            return Err(StanzaError::pubsub(
                Condition::BadRequest,
                "payload-required",
            ));
        }
        if !config.persist_items && !config.deliver_payloads && publish.has_item {
            return Err(StanzaError::pubsub(Condition::BadRequest, "item-forbidden"));
        }
        if publish.payload.len() > self.limits.payload_bytes_max {
            // §7.1.3.6
            return Err(
                StanzaError::pubsub(Condition::NotAcceptable, "payload-too-big").with_text(
                    format!(
                        "payloads are at most {} bytes",
                        self.limits.payload_bytes_max
                    ),
                ),
            );
        }
        if config.payload_type == VOEVENT_NS {
            let Some(ivorn) = &publish.voevent_ivorn else {
                return Err(
                    StanzaError::pubsub(Condition::BadRequest, "invalid-payload")
                        .with_text("payload is not a valid VOEvent 2.0 packet"),
                );
            };
            if !publish.item_id.is_empty() && &publish.item_id != ivorn {
                return Err(
                    StanzaError::pubsub(Condition::BadRequest, "invalid-payload")
                        .with_text(format!("item id must be the IVORN {ivorn}")),
                );
            }
        }
        Ok(match config {
            Cow::Owned(config) => Some(config),
            Cow::Borrowed(_) => None,
        })
    }

    pub(super) fn check_retract(
        &self,
        node: &str,
        actor: &Jid,
        item_ids: &[String],
    ) -> Result<(), StanzaError> {
        let node = self.existing(node)?;
        if !node.config.persist_items {
            // XEP-0060 §7.2.3.5
            return Err(StanzaError::unsupported("persistent-items"));
        }
        let affiliation = node.affiliation(actor);
        for id in item_ids {
            let item = node.items.get(id).ok_or_else(|| {
                StanzaError::new(Condition::ItemNotFound).with_text(format!("no item {id}"))
            })?;
            let allowed = match affiliation {
                Affiliation::Owner | Affiliation::Publisher => true,
                // §4.1: publish-only entities delete only their own items.
                Affiliation::PublishOnly => item.publisher.to_bare() == actor.to_bare(),
                _ => false,
            };
            if !allowed {
                // §7.2.3.1
                return Err(forbidden("you may not retract this item"));
            }
        }
        Ok(())
    }

    pub(super) fn check_purge(&self, node: &str, actor: &Jid) -> Result<(), StanzaError> {
        let node = Self::require_owner(self.existing(node)?, actor)?;
        if !node.config.persist_items {
            // XEP-0060 §8.5.3.2
            return Err(StanzaError::unsupported("persistent-items"));
        }
        Ok(())
    }

    /// The affiliations after `changes`; a node must keep an owner.
    pub(super) fn affiliations_after(
        node: &PubsubNode,
        changes: &[(BareJid, Affiliation)],
    ) -> Result<BTreeMap<BareJid, Affiliation>, StanzaError> {
        let mut next = node.affiliations.clone();
        for (jid, affiliation) in changes {
            match affiliation {
                Affiliation::None | Affiliation::Unspecified => next.remove(jid),
                other => next.insert(jid.clone(), *other),
            };
        }
        if !next.values().any(|a| *a == Affiliation::Owner) {
            // XEP-0060 §8.9.2.4
            return Err(
                StanzaError::new(Condition::NotAcceptable).with_text("a node must keep an owner")
            );
        }
        Ok(next)
    }
}
