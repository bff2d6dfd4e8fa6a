//! Requests to the service: reads answered from local state, writes
//! checked early and turned into commands (XEP-0060 §5–§8, XEP-0313).

use std::sync::Arc;

use jid::{FullJid, Jid};
use vomesh_proto::pubsub::{self as proto, command::Op};

use super::*;
use crate::pubsub::archive::{self, ArchiveQuery};
use crate::pubsub::config::NODE_CONFIG_FORM;
use crate::pubsub::model::{
    Affiliation, Item, NodeType, SendLastPublishedItem, SubscriptionOptions, SubscriptionState,
};
use crate::pubsub::request::{
    AuthorizationAnswer, DISCO_INFO_NS, DISCO_ITEMS_NS, MAM_NS, PUBSUB_NS, PUBSUB_OWNER_NS,
    PublishedItem, PublishedPayload, Request,
};
use crate::pubsub::response::{self, affiliation_element, subscription_element};
use crate::pubsub::rsm::{self, RsmRequest};
use crate::voevent::VOEVENT_NODE_PREFIX;
use crate::voevent::{self, VOEVENT_NS};

impl PubsubService {
    /// Parses an IQ addressed to the service: reads are answered now from
    /// local state, writes become a command to propose.
    pub fn handle_iq(
        &self,
        from: &FullJid,
        iq: &Element,
        now_micros: i64,
        ctx: &dyn RequestContext,
    ) -> Handled {
        let request = match Request::try_from(iq) {
            Ok(request) => request,
            Err(error) => return Handled::Reply(Err(error)),
        };
        let actor = Jid::from(from.clone());
        match self.handle_request(&actor, request, now_micros, ctx) {
            Ok(handled) => handled,
            Err(error) => Handled::Reply(Err(error)),
        }
    }

    /// Handles a `<message/>` to the service: an owner's answer to a
    /// subscription authorization request (XEP-0060 §8.6). Returns `None`
    /// for messages the service ignores (errors, anything without an
    /// authorization form); `Handled::Reply(Err(..))` is to be sent back
    /// as a message error.
    pub fn handle_message(
        &self,
        from: &FullJid,
        message: &Element,
        now_micros: i64,
    ) -> Option<Handled> {
        if message.attr("type") == Some("error") {
            return None;
        }
        let answer = match AuthorizationAnswer::from_message(message) {
            Ok(answer) => answer?,
            Err(error) => return Some(Handled::Reply(Err(error))),
        };
        let actor = Jid::from(from.clone());
        let checked = self
            .existing(&answer.node)
            .and_then(|node| Self::require_owner(node, &actor))
            .and_then(|node| {
                Self::find_pending(node, &answer.jid, answer.subid.as_deref()).map(|_| ())
            });
        Some(match checked {
            Err(error) => Handled::Reply(Err(error)),
            Ok(()) => Handled::Propose(command(
                &actor,
                now_micros,
                Op::AuthorizeSubscription(proto::AuthorizeSubscription {
                    node: answer.node,
                    jid: answer.jid.to_string(),
                    subid: answer.subid.unwrap_or_default(),
                    allow: answer.allow,
                }),
            )),
        })
    }

    fn handle_request(
        &self,
        actor: &Jid,
        request: Request,
        now: i64,
        ctx: &dyn RequestContext,
    ) -> Result<Handled, StanzaError> {
        let reply = |e: Element| Ok(Handled::Reply(Ok(Some(e))));
        let propose = |op: Op| Ok(Handled::Propose(command(actor, now, op)));
        match request {
            Request::DiscoInfo { node } => reply(self.disco_info(node.as_deref())?),
            Request::DiscoItems { node, rsm } => {
                reply(self.disco_items(actor, node.as_deref(), rsm, ctx)?)
            }
            Request::Create { node, config } => {
                if !ctx.is_local_user(&actor.to_bare()) {
                    // XEP-0060 §8.1.3.2: only local accounts create nodes.
                    return Err(forbidden("only local users may create nodes"));
                }
                self.check_create(node.as_deref(), config.as_ref())?;
                propose(Op::CreateNode(proto::CreateNode {
                    node: node.unwrap_or_default(),
                    config,
                }))
            }
            Request::ConfigureGet { node } => {
                let node = Self::require_owner(self.existing(&node)?, actor)?;
                reply(response::owner_pubsub(
                    Element::new("configure", PUBSUB_OWNER_NS)
                        .with_attr("node", node.id.clone())
                        .with_child(node.config.to_form("form", NODE_CONFIG_FORM)),
                ))
            }
            Request::ConfigureSet { node, config } => {
                let existing = Self::require_owner(self.existing(&node)?, actor)?;
                let Some(config) = config else {
                    // XEP-0060 §8.2.6: a cancelled form changes nothing.
                    return Ok(Handled::Reply(Ok(None)));
                };
                self.check_configure(existing, &config)?;
                propose(Op::ConfigureNode(proto::ConfigureNode {
                    node,
                    config: Some(config),
                }))
            }
            Request::DefaultConfig => reply(response::owner_pubsub(
                Element::new("default", PUBSUB_OWNER_NS).with_child(
                    NodeConfig::defaults(&self.limits).to_form("form", NODE_CONFIG_FORM),
                ),
            )),
            Request::DefaultOptions => reply(
                Element::new("pubsub", PUBSUB_NS).with_child(
                    Element::new("default", PUBSUB_NS)
                        .with_child(SubscriptionOptions::default().to_form("form")),
                ),
            ),
            Request::Delete { node, redirect } => {
                Self::require_owner(self.existing(&node)?, actor)?;
                propose(Op::DeleteNode(proto::DeleteNode {
                    node,
                    redirect_uri: redirect.unwrap_or_default(),
                }))
            }
            Request::Purge { node } => {
                self.check_purge(&node, actor)?;
                propose(Op::Purge(proto::Purge { node }))
            }
            Request::Subscribe { node, jid, options } => {
                let existing = self.existing(&node)?;
                // XEP-0060 §6.1.3.1: one may only subscribe oneself.
                if jid.to_bare() != actor.to_bare() {
                    return Err(StanzaError::pubsub(Condition::BadRequest, "invalid-jid"));
                }
                let contact_access = Self::contact_access(existing, &jid.to_bare(), ctx);
                self.check_subscribe(existing, &jid, contact_access)?;
                propose(Op::Subscribe(proto::Subscribe {
                    node,
                    jid: jid.to_string(),
                    options,
                    contact_access,
                }))
            }
            Request::Unsubscribe { node, jid, subid } => {
                Self::find_own_subscription(self.existing(&node)?, actor, &jid, subid.as_deref())?;
                propose(Op::Unsubscribe(proto::Unsubscribe {
                    node,
                    jid: jid.to_string(),
                    subid: subid.unwrap_or_default(),
                }))
            }
            Request::OptionsGet { node, jid, subid } => {
                let existing = self.existing(&node)?;
                let subscription =
                    Self::find_own_subscription(existing, actor, &jid, subid.as_deref())?;
                let mut options = Element::new("options", PUBSUB_NS)
                    .with_attr("node", node)
                    .with_attr("jid", jid.to_string())
                    .with_attr("subid", subscription.subid.clone());
                options.push_child(subscription.options.to_form("form"));
                reply(Element::new("pubsub", PUBSUB_NS).with_child(options))
            }
            Request::OptionsSet {
                node,
                jid,
                subid,
                options,
            } => {
                Self::find_own_subscription(self.existing(&node)?, actor, &jid, subid.as_deref())?;
                propose(Op::SetSubscriptionOptions(proto::SetSubscriptionOptions {
                    node,
                    jid: jid.to_string(),
                    subid: subid.unwrap_or_default(),
                    options: Some(options),
                }))
            }
            Request::Publish {
                node,
                item,
                mut publish_options,
            } => {
                // INTERFACE.md: `voevent/…` nodes are created on first use
                // as VOEvent nodes, whether the event came over VTP or XMPP.
                if !self.nodes.contains_key(&node)
                    && node.starts_with(VOEVENT_NODE_PREFIX)
                    && publish_options.is_none()
                {
                    publish_options = Some(proto::NodeConfig {
                        payload_type: Some(VOEVENT_NS.to_owned()),
                        ..proto::NodeConfig::default()
                    });
                }
                let payload = item.as_ref().and_then(|i| i.payload.as_ref());
                let node_type = match self.nodes.get(&node) {
                    Some(existing) => Some(existing.config.payload_type.as_str()),
                    None => publish_options
                        .as_ref()
                        .and_then(|o| o.payload_type.as_deref()),
                };
                // Tell the publisher why a VOEvent node refuses the payload
                // (apply refuses it too, without the detail, should the node
                // become a VOEvent node before the command commits).
                if node_type == Some(VOEVENT_NS)
                    && let Some(Err(invalid)) = payload.map(|p| &p.voevent)
                {
                    return Err(
                        StanzaError::pubsub(Condition::BadRequest, "invalid-payload")
                            .with_text(invalid.to_string()),
                    );
                }
                if !self.nodes.contains_key(&node) && !ctx.is_local_user(&actor.to_bare()) {
                    return Err(not_found(&node));
                }
                let publish = publish_op(node, item, publish_options);
                self.check_publish(actor, &publish)?;
                propose(Op::Publish(publish))
            }
            Request::Retract {
                node,
                item_ids,
                notify,
            } => {
                self.check_retract(&node, actor, &item_ids)?;
                propose(Op::Retract(proto::Retract {
                    node,
                    item_ids,
                    notify,
                }))
            }
            Request::Items {
                node,
                max_items,
                item_ids,
                rsm,
            } => {
                let existing = self.existing(&node)?;
                if existing.config.node_type == NodeType::Collection {
                    // XEP-0248: items live in the leaves of a collection.
                    return Err(StanzaError::unsupported("retrieve-items"));
                }
                if !existing.config.persist_items {
                    // XEP-0060 §6.5.9.5: a transient node keeps no items.
                    return Err(StanzaError::unsupported("persistent-items"));
                }
                self.check_retrieve(existing, actor, ctx)?;
                reply(self.items_reply(existing, max_items, &item_ids, rsm)?)
            }
            Request::Subscriptions { node } => {
                reply(self.own_subscriptions(actor, node.as_deref())?)
            }
            Request::Affiliations { node } => reply(self.own_affiliations(actor, node.as_deref())?),
            Request::OwnerSubscriptionsGet { node } => {
                let existing = Self::require_owner(self.existing(&node)?, actor)?;
                let mut list =
                    Element::new("subscriptions", PUBSUB_OWNER_NS).with_attr("node", node);
                for subscription in &existing.subscriptions {
                    list.push_child(subscription_element(PUBSUB_OWNER_NS, None, subscription));
                }
                reply(response::owner_pubsub(list))
            }
            Request::OwnerSubscriptionsSet { node, changes } => {
                Self::require_owner(self.existing(&node)?, actor)?;
                propose(Op::SetSubscriptions(proto::SetSubscriptions {
                    node,
                    changes,
                }))
            }
            Request::OwnerAffiliationsGet { node } => {
                let existing = Self::require_owner(self.existing(&node)?, actor)?;
                let mut list =
                    Element::new("affiliations", PUBSUB_OWNER_NS).with_attr("node", node);
                for (jid, affiliation) in &existing.affiliations {
                    let jid = Jid::from(jid.clone());
                    list.push_child(affiliation_element(
                        PUBSUB_OWNER_NS,
                        None,
                        Some(&jid),
                        *affiliation,
                    ));
                }
                reply(response::owner_pubsub(list))
            }
            Request::OwnerAffiliationsSet { node, changes } => {
                let existing = Self::require_owner(self.existing(&node)?, actor)?;
                Self::affiliations_after(existing, &changes)?;
                propose(Op::SetAffiliations(proto::SetAffiliations {
                    node,
                    changes: changes
                        .into_iter()
                        .map(|(jid, affiliation)| proto::AffiliationChange {
                            jid: jid.to_string(),
                            affiliation: affiliation.into(),
                        })
                        .collect(),
                }))
            }
            Request::ArchiveFields { node } => {
                self.existing(&node)?;
                reply(
                    Element::new("query", MAM_NS)
                        .with_attr("node", node)
                        .with_child(archive::fields_form()),
                )
            }
            Request::ArchiveQuery(query) => self.archive_query(actor, &query, ctx),
        }
    }

    /// The command publishing the VOEvent `root` to `node` (the caller's
    /// routing rule picks it from the IVORN; INTERFACE.md's default is
    /// `voevent/<authority>/<resource-key>`), created on first use as a
    /// VOEvent node. For publishers that are not XMPP clients, such as the
    /// VTP bridge, which passes where the packet came from in `vtp`;
    /// `apply` still checks `actor`'s right to publish.
    pub fn voevent_publish(
        actor: &Jid,
        root: &Element,
        node: String,
        vtp: Option<proto::VtpIngest>,
        now_micros: i64,
    ) -> Result<Command, voevent::InvalidVoEvent> {
        let payload = PublishedPayload::read(root);
        if let Err(invalid) = &payload.voevent {
            return Err(invalid.clone());
        }
        let options = proto::NodeConfig {
            payload_type: Some(VOEVENT_NS.to_owned()),
            ..proto::NodeConfig::default()
        };
        let item = PublishedItem {
            id: None,
            payload: Some(payload),
        };
        let publish = proto::Publish {
            vtp: vtp.map(Box::new),
            ..publish_op(node, Some(item), Some(options))
        };
        Ok(command(actor, now_micros, Op::Publish(publish)))
    }

    fn archive_query(
        &self,
        actor: &Jid,
        query: &ArchiveQuery,
        ctx: &dyn RequestContext,
    ) -> Result<Handled, StanzaError> {
        let node = self.existing(&query.node)?;
        self.check_retrieve(node, actor, ctx)?;
        let page = archive::run(&self.service_jid, node, query, &self.limits)?;
        let messages = page
            .results
            .into_iter()
            .map(|body| Notification {
                recipients: vec![actor.clone()],
                kind: MessageKind::Normal,
                message: body.into(),
            })
            .collect();
        Ok(Handled::Archive {
            messages,
            fin: page.fin,
        })
    }

    /// XEP-0060 `on_sub_and_presence`: the last items to send a resource
    /// that just became available.
    pub fn on_available(&self, who: &FullJid) -> Vec<Notification> {
        let full = Jid::from(who.clone());
        let bare = Jid::from(who.to_bare());
        self.nodes
            .values()
            .filter(|n| {
                n.config.send_last_published_item == SendLastPublishedItem::OnSubAndPresence
            })
            .filter(|n| n.config.deliver_notifications)
            .filter(|n| {
                n.subscriptions.iter().any(|s| {
                    s.state == SubscriptionState::Subscribed
                        && s.options.deliver
                        && (s.jid == full || s.jid == bare)
                })
            })
            .filter_map(|n| {
                let item = n.last_item()?;
                Some(Notification {
                    recipients: vec![full.clone()],
                    kind: notification_kind(&n.config),
                    message: response::item_notification_xml(
                        &self.service_jid,
                        &n.id,
                        item,
                        n.config.deliver_payloads,
                    )
                    .into(),
                })
            })
            .collect()
    }

    fn disco_info(&self, node: Option<&str>) -> Result<Element, StanzaError> {
        let mut query = Element::new("query", DISCO_INFO_NS);
        let feature = |var: &str| Element::new("feature", DISCO_INFO_NS).with_attr("var", var);
        match node {
            None => {
                query.push_child(
                    Element::new("identity", DISCO_INFO_NS)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "service")
                        .with_attr("name", "vomesh publish-subscribe"),
                );
                for var in [
                    DISCO_INFO_NS,
                    DISCO_ITEMS_NS,
                    PUBSUB_NS,
                    MAM_NS,
                    rsm::RSM_NS,
                ] {
                    query.push_child(feature(var));
                }
                for name in PUBSUB_FEATURES {
                    query.push_child(feature(&format!("{PUBSUB_NS}#{name}")));
                }
            }
            Some(id) => {
                let node = self.existing(id)?;
                query.set_attr("node", id);
                query.push_child(
                    Element::new("identity", DISCO_INFO_NS)
                        .with_attr("category", "pubsub")
                        .with_attr(
                            "type",
                            match node.config.node_type {
                                NodeType::Collection => "collection",
                                _ => "leaf",
                            },
                        ),
                );
                for var in [DISCO_INFO_NS, DISCO_ITEMS_NS, PUBSUB_NS, MAM_NS] {
                    query.push_child(feature(var));
                }
                query.push_child(response::meta_data_form(node));
            }
        }
        Ok(query)
    }

    fn disco_items(
        &self,
        actor: &Jid,
        node: Option<&str>,
        rsm: Option<RsmRequest>,
        ctx: &dyn RequestContext,
    ) -> Result<Element, StanzaError> {
        let mut query = Element::new("query", DISCO_ITEMS_NS);
        let entry =
            || Element::new("item", DISCO_ITEMS_NS).with_attr("jid", self.service_jid.to_string());
        let node_entry = |n: &PubsubNode| {
            let mut item = entry().with_attr("node", n.id.clone());
            if !n.config.title.is_empty() {
                item.set_attr("name", n.config.title.clone());
            }
            (n.id.clone(), item)
        };
        // (rsm id, element) in result order.
        let entries: Vec<(String, Element)> = match node {
            // XEP-0248 §5.1: the service lists the nodes in no collection.
            None => self
                .nodes
                .values()
                .filter(|n| n.config.collections.is_empty())
                .map(node_entry)
                .collect(),
            Some(id) if self.existing(id)?.config.node_type == NodeType::Collection => {
                query.set_attr("node", id);
                // XEP-0248 §5.2: a collection lists its nodes.
                self.nodes
                    .values()
                    .filter(|n| n.config.collections.iter().any(|c| c == id))
                    .map(node_entry)
                    .collect()
            }
            Some(id) => {
                let node = self.existing(id)?;
                self.check_retrieve(node, actor, ctx)?;
                query.set_attr("node", id);
                // XEP-0060 §5.5: the item ids are the names.
                node.items_in_order()
                    .map(|i| (i.id.clone(), entry().with_attr("name", i.id.clone())))
                    .collect()
            }
        };
        let (range, set) = self.page(&entries, rsm.as_ref())?;
        for (_, element) in &entries[range] {
            query.push_child(element.clone());
        }
        if let Some(set) = set {
            query.push_child(set);
        }
        Ok(query)
    }

    /// Pages `entries` by their ids; without a request, everything up to
    /// the page cap (with a `<set/>` only when that truncates).
    fn page<T>(
        &self,
        entries: &[(String, T)],
        request: Option<&RsmRequest>,
    ) -> Result<(std::ops::Range<usize>, Option<Element>), StanzaError> {
        let cap = self.limits.page_items_max;
        let Some(request) = request else {
            if entries.len() <= cap {
                return Ok((0..entries.len(), None));
            }
            let request = RsmRequest::default();
            return self.page(entries, Some(&request));
        };
        let position = |id: &str| entries.iter().position(|(e, _)| e == id);
        let page = rsm::select(
            entries.len(),
            request,
            cap,
            cap,
            |id| position(id).map(|p| p + 1),
            position,
        )?;
        let first = entries
            .get(page.range.start)
            .filter(|_| !page.range.is_empty());
        let last = entries
            .get(page.range.end.wrapping_sub(1))
            .filter(|_| !page.range.is_empty());
        let set = rsm::response_set(
            first.map(|(id, _)| (id.as_str(), page.range.start)),
            last.map(|(id, _)| id.as_str()),
            page.total,
        );
        Ok((page.range, Some(set)))
    }

    /// XEP-0060 §6.5: items retrieval. Items are in publication order; each
    /// carries its publication time as an XEP-0203 `<delay/>` after its
    /// payload (the same stamp as its notifications and archive entry).
    fn items_reply(
        &self,
        node: &PubsubNode,
        max_items: Option<usize>,
        item_ids: &[String],
        rsm: Option<RsmRequest>,
    ) -> Result<Element, StanzaError> {
        let mut items = Element::new("items", PUBSUB_NS).with_attr("node", node.id.clone());
        let mut selected: Vec<&Arc<Item>> = Vec::new();
        let mut set = None;
        if !item_ids.is_empty() {
            selected.extend(item_ids.iter().filter_map(|id| node.items.get(id)));
            if selected.is_empty() {
                // XEP-0060 §6.5.8: the requested item does not exist.
                return Err(StanzaError::new(Condition::ItemNotFound).with_text("no such item"));
            }
        } else if let Some(max) = max_items {
            // §6.5.7: the most recent `max_items`, still oldest first.
            let max = max.min(self.limits.page_items_max);
            let newest: Vec<&Arc<Item>> = node.items_in_order().rev().take(max).collect();
            selected.extend(newest.into_iter().rev());
        } else {
            let entries: Vec<(String, &Arc<Item>)> =
                node.items_in_order().map(|i| (i.id.clone(), i)).collect();
            // §6.5.4: a node with more items than one response holds
            // answers with the most recent page and says so with RSM.
            let newest = RsmRequest {
                before: Some(String::new()),
                ..RsmRequest::default()
            };
            let rsm =
                rsm.or_else(|| (entries.len() > self.limits.page_items_max).then_some(newest));
            let (range, page_set) = self.page(&entries, rsm.as_ref())?;
            selected.extend(entries[range].iter().map(|(_, item)| *item));
            set = page_set;
        }
        for item in selected {
            items.push_child(response::retrieved_item(&self.service_jid, item));
        }
        let mut pubsub = Element::new("pubsub", PUBSUB_NS).with_child(items);
        if let Some(set) = set {
            pubsub.push_child(set);
        }
        Ok(pubsub)
    }

    /// XEP-0060 §5.6: the requester's subscriptions.
    fn own_subscriptions(&self, actor: &Jid, node: Option<&str>) -> Result<Element, StanzaError> {
        let mut list = Element::new("subscriptions", PUBSUB_NS);
        let nodes: Vec<&PubsubNode> = match node {
            Some(id) => {
                list.set_attr("node", id);
                vec![self.existing(id)?]
            }
            None => self.nodes.values().collect(),
        };
        let bare = actor.to_bare();
        for node in nodes {
            for subscription in node
                .subscriptions
                .iter()
                .filter(|s| s.jid.to_bare() == bare)
            {
                list.push_child(subscription_element(
                    PUBSUB_NS,
                    Some(&node.id),
                    subscription,
                ));
            }
        }
        Ok(Element::new("pubsub", PUBSUB_NS).with_child(list))
    }

    /// XEP-0060 §5.7: the requester's affiliations.
    fn own_affiliations(&self, actor: &Jid, node: Option<&str>) -> Result<Element, StanzaError> {
        let mut list = Element::new("affiliations", PUBSUB_NS);
        let nodes: Vec<&PubsubNode> = match node {
            Some(id) => {
                list.set_attr("node", id);
                vec![self.existing(id)?]
            }
            None => self.nodes.values().collect(),
        };
        for node in nodes {
            let affiliation = node.affiliation(actor);
            if affiliation != Affiliation::None {
                list.push_child(affiliation_element(
                    PUBSUB_NS,
                    Some(&node.id),
                    None,
                    affiliation,
                ));
            }
        }
        Ok(Element::new("pubsub", PUBSUB_NS).with_child(list))
    }
}

/// A publish command: the payload serialized once, as it will be
/// delivered, and its IVORN when it is a valid VOEvent (so `apply` can
/// enforce VOEvent nodes without re-reading XML).
fn publish_op(
    node: String,
    item: Option<PublishedItem>,
    publish_options: Option<proto::NodeConfig>,
) -> proto::Publish {
    let has_item = item.is_some();
    let (item_id, payload) = item.map(|i| (i.id, i.payload)).unwrap_or_default();
    let voevent_ivorn = payload
        .as_ref()
        .and_then(|p| p.voevent.as_ref().ok())
        .map(|header| header.ivorn.to_string());
    proto::Publish {
        node,
        item_id: item_id.unwrap_or_default(),
        payload: payload.map(|p| p.xml).unwrap_or_default(),
        publish_options,
        voevent_ivorn,
        has_item,
        vtp: None,
    }
}

/// The `http://jabber.org/protocol/pubsub#…` features the service
/// implements (XEP-0060 §10), advertised in its disco#info.
const PUBSUB_FEATURES: &[&str] = &[
    "access-authorize",
    "access-open",
    "access-presence",
    "access-roster",
    "access-whitelist",
    "auto-create",
    "collections",
    "config-node",
    "config-node-max",
    "create-and-configure",
    "create-nodes",
    "delete-items",
    "delete-nodes",
    "instant-nodes",
    "item-ids",
    "last-published",
    "manage-affiliations",
    "manage-subscriptions",
    "member-affiliation",
    "meta-data",
    "modify-affiliations",
    "multi-subscribe",
    "outcast-affiliation",
    "persistent-items",
    "publish",
    "publish-only-affiliation",
    "publish-options",
    "publisher-affiliation",
    "purge-nodes",
    "retract-items",
    "retrieve-affiliations",
    "retrieve-default",
    "retrieve-items",
    "retrieve-subscriptions",
    "subscribe",
    "subscription-notifications",
    "subscription-options",
];
