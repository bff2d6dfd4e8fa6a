//! The pubsub service state machine (XEP-0060 with XEP-0313 node archives).
//!
//! Reads are answered by [`PubsubService::handle_iq`] from local state.
//! Writes are checked there as far as local state allows (to avoid
//! proposing garbage) and become a [`Command`]; once the command is
//! committed, every site runs [`PubsubService::apply`], which repeats the
//! checks against the state at that log position — its answer is the
//! authoritative reply — and returns the notifications this site delivers
//! to its own clients. `apply` reads no clock: the command's timestamp is
//! the publication time, and ids derived from the log index (`Meta::index`)
//! are the same at every site.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use prost::Message as _;
use vomesh_proto::pubsub::{self as proto, Command, command::Op};

use crate::pubsub::archive::{self, ArchiveQuery};
use crate::pubsub::config::{NODE_CONFIG_FORM, PubsubLimits};
use crate::pubsub::error::{Condition, StanzaError};
use crate::pubsub::model::{
    AccessModel, Affiliation, Item, NodeConfig, NotificationType, PublishModel, PubsubNode,
    SendLastPublishedItem, Subscription, SubscriptionOptions, SubscriptionState,
};
use crate::pubsub::payload;
use crate::pubsub::request::{
    AuthorizationAnswer, DISCO_INFO_NS, DISCO_ITEMS_NS, MAM_NS, PUBSUB_NS, PUBSUB_OWNER_NS, Request,
};
use crate::pubsub::response::{self, affiliation_element, subscription_element};
use crate::pubsub::rsm::{self, RsmRequest};
use crate::voevent::{self, VOEVENT_NS};
use crate::xml::Element;

/// Where a command sits in the replicated log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Raft log index = archive id = global sequence number.
    pub index: u64,
}

/// The `type` of a notification message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Headline,
    Normal,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Headline => "headline",
            MessageKind::Normal => "normal",
        }
    }
}

/// One message the service sends, to one or more recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// A bare JID means every available resource of that account on this
    /// site; a full JID means that resource only.
    pub recipients: Vec<Jid>,
    pub kind: MessageKind,
    /// The children of the `<message/>`, serialized once for every
    /// recipient; each declares its own namespace, so the text is correct
    /// inside any stream.
    pub message: Arc<str>,
}

impl Notification {
    /// The complete `<message/>` for one recipient.
    pub fn to_stanza(&self, from: &str, to: &str, id: Option<&str>) -> String {
        let mut out = String::with_capacity(self.message.len() + 128);
        out.push_str("<message");
        for (name, value) in [("from", Some(from)), ("to", Some(to)), ("id", id)] {
            if let Some(value) = value {
                out.push(' ');
                out.push_str(name);
                out.push_str("=\"");
                crate::xml::escape_into(&mut out, value, true);
                out.push('"');
            }
        }
        out.push_str(" type=\"");
        out.push_str(self.kind.as_str());
        out.push_str("\">");
        out.push_str(&self.message);
        out.push_str("</message>");
        out
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The child of the IQ result to send the requester (at the site that
    /// proposed the command), or the error.
    pub reply: Result<Option<Element>, StanzaError>,
    pub notifications: Vec<Notification>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Answer now: the child of the IQ result, or the error.
    Reply(Result<Option<Element>, StanzaError>),
    /// XEP-0313: send these messages to the requester, then the IQ result
    /// whose child is `fin`.
    Archive {
        messages: Vec<Notification>,
        fin: Element,
    },
    /// Propose this command; the reply comes from [`PubsubService::apply`].
    Propose(Command),
}

/// Site-local facts the service consults when a request is handled (they
/// are not replicated, so their answers are carried in the command).
pub trait RequestContext {
    /// Whether `bare` is an account of this deployment.
    fn is_local_user(&self, bare: &BareJid) -> bool;
    /// Whether `who` is in one of `groups` of `owner`'s roster.
    fn in_roster_group(&self, owner: &BareJid, who: &BareJid, groups: &[String]) -> bool;
    /// Whether `who` has a presence subscription to `owner`.
    fn has_presence_subscription(&self, owner: &BareJid, who: &BareJid) -> bool;
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("snapshot holds an invalid JID {0:?}")]
    Jid(String),
    #[error("snapshot holds an invalid configuration of node {node}: {error}")]
    Config { node: String, error: StanzaError },
}

type Reply = Result<(Option<Element>, Vec<Notification>), StanzaError>;

/// The pubsub service at `pubsub.<domain>`.
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubService {
    service_jid: BareJid,
    limits: PubsubLimits,
    nodes: BTreeMap<String, PubsubNode>,
    /// Replicated user accounts: username → opaque stored credentials.
    accounts: BTreeMap<String, Vec<u8>>,
    /// Log index of the last applied command.
    last_index: u64,
}

fn not_found(node: &str) -> StanzaError {
    StanzaError::new(Condition::ItemNotFound).with_text(format!("no node {node}"))
}

fn forbidden(text: &str) -> StanzaError {
    StanzaError::new(Condition::Forbidden).with_text(text.to_owned())
}

fn command(actor: &Jid, now_micros: i64, op: Op) -> Command {
    Command {
        actor: actor.to_string(),
        timestamp_micros: now_micros,
        op: Some(op),
    }
}

fn parse_jid(text: &str) -> Result<Jid, StanzaError> {
    Jid::new(text).map_err(|_| StanzaError::pubsub(Condition::BadRequest, "invalid-jid"))
}

impl PubsubService {
    pub fn new(service_jid: BareJid, limits: PubsubLimits) -> Self {
        PubsubService {
            service_jid,
            limits,
            nodes: BTreeMap::new(),
            accounts: BTreeMap::new(),
            last_index: 0,
        }
    }

    pub fn service_jid(&self) -> &BareJid {
        &self.service_jid
    }

    pub fn node(&self, id: &str) -> Option<&PubsubNode> {
        self.nodes.get(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &PubsubNode> {
        self.nodes.values()
    }

    /// The stored credentials of a replicated account.
    pub fn account(&self, username: &str) -> Option<&[u8]> {
        self.accounts.get(username).map(Vec::as_slice)
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.accounts
            .iter()
            .map(|(u, c)| (u.as_str(), c.as_slice()))
    }

    /// Log index of the last applied command.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// When the next item expires (pubsub#item_expire): the leader proposes
    /// `ExpireItems` stamped at or after this time.
    pub fn next_expiry_micros(&self) -> Option<i64> {
        self.nodes
            .values()
            .filter(|n| n.config.item_expire_seconds > 0)
            .filter_map(|n| {
                let lifetime = i64::try_from(n.config.item_expire_seconds)
                    .ok()?
                    .saturating_mul(1_000_000);
                n.items
                    .values()
                    .map(|i| i.published_micros.saturating_add(lifetime))
                    .min()
            })
            .min()
    }

    // ------------------------------------------------------------------
    // Requests
    // ------------------------------------------------------------------

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
    /// for messages the service ignores.
    pub fn handle_message(
        &self,
        from: &FullJid,
        message: &Element,
        now_micros: i64,
    ) -> Option<Handled> {
        if message.attr("type") == Some("error") {
            return None;
        }
        let answer = match AuthorizationAnswer::try_from(message) {
            Ok(answer) => answer,
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
                existing.config.clone().apply_patch(&config, &self.limits)?;
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
                item_id,
                payload,
                publish_options,
            } => {
                let voevent_ivorn = match &payload {
                    Some(root) if root.ns() == VOEVENT_NS => voevent::validate(root)
                        .ok()
                        .map(|header| header.ivorn.to_string()),
                    _ => None,
                };
                let node_type = match self.nodes.get(&node) {
                    Some(existing) => Some(existing.config.payload_type.as_str()),
                    None => publish_options
                        .as_ref()
                        .and_then(|o| o.payload_type.as_deref()),
                };
                // Report why a VOEvent node refuses this payload now, with
                // the reason; apply refuses it too if the node became a
                // VOEvent node meanwhile.
                if node_type == Some(VOEVENT_NS) {
                    let root = payload.as_ref().ok_or_else(|| {
                        StanzaError::pubsub(Condition::BadRequest, "payload-required")
                    })?;
                    if let Err(invalid) = voevent::validate(root) {
                        return Err(
                            StanzaError::pubsub(Condition::BadRequest, "invalid-payload")
                                .with_text(invalid.to_string()),
                        );
                    }
                }
                if !self.nodes.contains_key(&node) && !ctx.is_local_user(&actor.to_bare()) {
                    return Err(not_found(&node));
                }
                let publish = proto::Publish {
                    node,
                    item_id: item_id.unwrap_or_default(),
                    payload: payload.as_ref().map(payload::serialize).unwrap_or_default(),
                    publish_options,
                    voevent_ivorn,
                };
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

    // ------------------------------------------------------------------
    // Reads
    // ------------------------------------------------------------------

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
                        .with_attr("type", "leaf"),
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
        // (rsm id, element) in result order.
        let entries: Vec<(String, Element)> = match node {
            None => self
                .nodes
                .values()
                .map(|n| {
                    let mut item = entry().with_attr("node", n.id.clone());
                    if !n.config.title.is_empty() {
                        item.set_attr("name", n.config.title.clone());
                    }
                    (n.id.clone(), item)
                })
                .collect(),
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

    /// XEP-0060 §6.5: items retrieval. Items are in publication order. The
    /// publication time of each is available from the node archive
    /// (XEP-0313, in the `<forwarded/>` delay): an extra `<delay/>` in an
    /// `<item/>` would break the one-payload-per-item rule of §7.1.
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
            items.set_attr("max_items", max.to_string());
        } else {
            let entries: Vec<(String, &Arc<Item>)> =
                node.items_in_order().map(|i| (i.id.clone(), i)).collect();
            let (range, page_set) = self.page(&entries, rsm.as_ref())?;
            selected.extend(entries[range].iter().map(|(_, item)| *item));
            set = page_set;
        }
        for item in selected {
            let content = if item.payload.is_empty() {
                None
            } else {
                Some(payload::parse(&item.payload).map_err(|e| {
                    StanzaError::new(Condition::InternalServerError).with_text(e.to_string())
                })?)
            };
            items.push_child(response::retrieved_item(item, content));
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

    // ------------------------------------------------------------------
    // Checks shared by handle_iq (early) and apply (authoritative)
    // ------------------------------------------------------------------

    fn existing(&self, node: &str) -> Result<&PubsubNode, StanzaError> {
        self.nodes.get(node).ok_or_else(|| not_found(node))
    }

    fn require_owner<'a>(node: &'a PubsubNode, actor: &Jid) -> Result<&'a PubsubNode, StanzaError> {
        if node.affiliation(actor) == Affiliation::Owner {
            Ok(node)
        } else {
            Err(forbidden("only an owner of the node may do this"))
        }
    }

    /// Whether `who` passes the presence or roster check of the node's
    /// access model, by any owner's roster.
    fn contact_access(node: &PubsubNode, who: &BareJid, ctx: &dyn RequestContext) -> bool {
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
    fn check_access(node: &PubsubNode, who: &Jid, contact_access: bool) -> Result<(), StanzaError> {
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

    fn check_retrieve(
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

    fn check_create(
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
            NodeConfig::defaults(&self.limits).apply_patch(config, &self.limits)?;
        }
        Ok(())
    }

    fn check_new_node_id(&self, id: &str) -> Result<(), StanzaError> {
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

    fn check_subscribe(
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
            return Err(StanzaError::pubsub(
                Condition::PolicyViolation,
                "too-many-subscriptions",
            ));
        }
        Ok(())
    }

    /// The subscription `jid`/`subid` that `actor` may manage (its own, or
    /// any when `actor` owns the node): XEP-0060 §6.2.3 and §6.3.4 errors.
    fn find_own_subscription<'a>(
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
                        StanzaError::pubsub(Condition::UnexpectedRequest, "not-subscribed")
                    }
                }),
            None => match (mine.next(), mine.next()) {
                (Some(only), None) => Ok(only),
                (Some(_), Some(_)) => {
                    Err(StanzaError::pubsub(Condition::BadRequest, "subid-required"))
                }
                (None, _) => Err(StanzaError::pubsub(
                    Condition::UnexpectedRequest,
                    "not-subscribed",
                )),
            },
        }
    }

    fn find_pending<'a>(
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

    fn check_publish_rights(node: &PubsubNode, actor: &Jid) -> Result<(), StanzaError> {
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
    fn check_publish(
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
        let has_payload = !publish.payload.is_empty();
        if (config.persist_items || config.deliver_payloads) && !has_payload {
            // §7.1.3.4 / §7.1.3.5; our requests always hold one item, so a
            // missing payload is the payload's fault.
            return Err(StanzaError::pubsub(
                Condition::BadRequest,
                "payload-required",
            ));
        }
        if !config.persist_items && !config.deliver_payloads && has_payload {
            // §7.1.3.6: a transient notification node takes no payload.
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

    fn check_retract(
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

    fn check_purge(&self, node: &str, actor: &Jid) -> Result<(), StanzaError> {
        let node = Self::require_owner(self.existing(node)?, actor)?;
        if !node.config.persist_items {
            // XEP-0060 §8.5.3.2
            return Err(StanzaError::unsupported("persistent-items"));
        }
        Ok(())
    }

    /// The affiliations after `changes`; a node must keep an owner.
    fn affiliations_after(
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

    // ------------------------------------------------------------------
    // Apply
    // ------------------------------------------------------------------

    /// Applies a committed command. Deterministic: the same commands at the
    /// same indices give the same state, reply and notifications at every
    /// site.
    pub fn apply(&mut self, cmd: &Command, meta: &Meta) -> Outcome {
        debug_assert!(
            meta.index > self.last_index,
            "log index {} applied after {}",
            meta.index,
            self.last_index
        );
        self.last_index = meta.index;
        let result = match (Jid::new(&cmd.actor), &cmd.op) {
            (_, None) => Err(StanzaError::new(Condition::BadRequest).with_text("empty command")),
            (Err(_), _) => Err(StanzaError::new(Condition::JidMalformed)),
            (Ok(actor), Some(op)) => self.apply_op(&actor, cmd.timestamp_micros, meta.index, op),
        };
        if cfg!(debug_assertions) {
            self.debug_check();
        }
        match result {
            Ok((reply, notifications)) => Outcome {
                reply: Ok(reply),
                notifications,
            },
            Err(error) => Outcome {
                reply: Err(error),
                notifications: Vec::new(),
            },
        }
    }

    fn debug_check(&self) {
        for (id, node) in &self.nodes {
            debug_assert_eq!(id, &node.id);
            node.debug_check();
        }
    }

    fn apply_op(&mut self, actor: &Jid, at: i64, index: u64, op: &Op) -> Reply {
        match op {
            Op::CreateNode(c) => self.apply_create(actor, at, index, c),
            Op::ConfigureNode(c) => self.apply_configure(actor, c),
            Op::DeleteNode(d) => self.apply_delete(actor, d),
            Op::Subscribe(s) => self.apply_subscribe(actor, index, s),
            Op::Unsubscribe(u) => self.apply_unsubscribe(actor, u),
            Op::SetSubscriptionOptions(o) => self.apply_options(actor, o),
            Op::AuthorizeSubscription(a) => self.apply_authorize(actor, a),
            Op::SetAffiliations(a) => self.apply_affiliations(actor, a),
            Op::SetSubscriptions(s) => self.apply_subscriptions(actor, index, s),
            Op::Publish(p) => self.apply_publish(actor, at, index, p),
            Op::Retract(r) => self.apply_retract(actor, r),
            Op::Purge(p) => self.apply_purge(actor, p),
            Op::ExpireItems(_) => Ok((None, self.apply_expire(at))),
            Op::AddAccount(a) => {
                if self.accounts.contains_key(&a.username) {
                    return Err(StanzaError::new(Condition::Conflict).with_text("account exists"));
                }
                self.accounts
                    .insert(a.username.clone(), a.credentials.clone());
                Ok((None, Vec::new()))
            }
            Op::RemoveAccount(r) => match self.accounts.remove(&r.username) {
                Some(_) => Ok((None, Vec::new())),
                None => Err(StanzaError::new(Condition::ItemNotFound).with_text("no such account")),
            },
        }
    }

    fn node_mut(&mut self, node: &str) -> Result<&mut PubsubNode, StanzaError> {
        self.nodes.get_mut(node).ok_or_else(|| not_found(node))
    }

    /// The subscribers an event on `node` is delivered to: active
    /// subscriptions that want delivery, each JID once, in JID order.
    fn recipients(node: &PubsubNode) -> Vec<Jid> {
        if !node.config.deliver_notifications {
            return Vec::new();
        }
        let set: BTreeSet<&Jid> = node
            .subscriptions
            .iter()
            .filter(|s| s.state == SubscriptionState::Subscribed && s.options.deliver)
            .map(|s| &s.jid)
            .collect();
        set.into_iter().cloned().collect()
    }

    fn notify(recipients: Vec<Jid>, kind: MessageKind, body: String) -> Option<Notification> {
        (!recipients.is_empty()).then(|| Notification {
            recipients,
            kind,
            message: body.into(),
        })
    }

    fn apply_create(&mut self, actor: &Jid, at: i64, index: u64, c: &proto::CreateNode) -> Reply {
        let id = if c.node.is_empty() {
            // XEP-0060 §8.1.2: the service names instant nodes; the log
            // index makes the name the same at every site.
            let base = format!("instant-{index:016x}");
            let mut id = base.clone();
            let mut n = 0u32;
            while self.nodes.contains_key(&id) {
                n += 1;
                id = format!("{base}-{n}");
            }
            id
        } else {
            c.node.clone()
        };
        self.check_create(Some(&id), c.config.as_ref())?;
        let mut config = NodeConfig::defaults(&self.limits);
        if let Some(patch) = &c.config {
            config.apply_patch(patch, &self.limits)?;
        }
        self.nodes.insert(
            id.clone(),
            PubsubNode::new(id.clone(), config, actor.to_bare(), at),
        );
        Ok((Some(response::create_reply(&id)), Vec::new()))
    }

    fn apply_configure(&mut self, actor: &Jid, c: &proto::ConfigureNode) -> Reply {
        let limits = self.limits;
        let node = self.node_mut(&c.node)?;
        Self::require_owner(node, actor)?;
        if let Some(patch) = &c.config {
            node.config.apply_patch(patch, &limits)?;
        }
        if !node.config.persist_items {
            node.items.clear();
            node.order.clear();
        }
        Self::trim_items(node, &limits);
        let mut notifications = Vec::new();
        if node.config.notify_config {
            // XEP-0060 §8.2.5.4
            let body = response::configuration_event(node).to_xml();
            notifications.extend(Self::notify(
                Self::recipients(node),
                notification_kind(&node.config),
                body,
            ));
        }
        Ok((None, notifications))
    }

    /// Drops the oldest items beyond pubsub#max_items (XEP-0060 §7.1.2:
    /// the oldest item is removed, without a retract notification).
    fn trim_items(node: &mut PubsubNode, limits: &PubsubLimits) {
        let max = usize::try_from(node.config.max_items_count(limits)).unwrap_or(usize::MAX);
        while node.items.len() > max {
            let Some((_, oldest)) = node.order.pop_first() else {
                break;
            };
            node.items.remove(&oldest);
        }
    }

    fn apply_delete(&mut self, actor: &Jid, d: &proto::DeleteNode) -> Reply {
        Self::require_owner(self.existing(&d.node)?, actor)?;
        let Some(node) = self.nodes.remove(&d.node) else {
            return Err(not_found(&d.node));
        };
        let mut notifications = Vec::new();
        if node.config.notify_delete {
            // XEP-0060 §8.4.2
            let redirect = Some(d.redirect_uri.as_str()).filter(|r| !r.is_empty());
            let body = response::delete_event(&node.id, redirect).to_xml();
            notifications.extend(Self::notify(
                Self::recipients(&node),
                notification_kind(&node.config),
                body,
            ));
        }
        Ok((None, notifications))
    }

    fn apply_subscribe(&mut self, actor: &Jid, index: u64, s: &proto::Subscribe) -> Reply {
        let jid = parse_jid(&s.jid)?;
        if jid.to_bare() != actor.to_bare() {
            return Err(StanzaError::pubsub(Condition::BadRequest, "invalid-jid"));
        }
        let service = self.service_jid.clone();
        let node = self.existing(&s.node)?;
        let mut options = SubscriptionOptions::default();
        if let Some(patch) = &s.options {
            options.apply_patch(patch);
        }
        // Idempotent for retries: the same JID with the same options keeps
        // its subscription (XEP-0060 §6.1.6 allows several with different
        // options).
        if let Some(existing) = node
            .subscriptions_of(&jid)
            .find(|e| e.state == SubscriptionState::Subscribed && e.options == options)
        {
            return Ok((
                Some(response::subscribe_reply(&node.id, existing)),
                Vec::new(),
            ));
        }
        self.check_subscribe(node, &jid, s.contact_access)?;
        let needs_approval = node.config.access_model == AccessModel::Authorize
            && node.affiliation(&jid) == Affiliation::None;
        let subscription = Subscription {
            subid: format!("{index:016x}"),
            jid: jid.clone(),
            state: if needs_approval {
                SubscriptionState::Pending
            } else {
                SubscriptionState::Subscribed
            },
            options,
        };
        let mut notifications = Vec::new();
        if needs_approval {
            // XEP-0060 §8.6.1: ask every owner.
            let form = response::authorization_request(&node.id, &subscription).to_xml();
            let owners = node.owners().cloned().map(Jid::from).collect();
            notifications.extend(Self::notify(owners, MessageKind::Normal, form));
        } else {
            notifications.extend(Self::last_item_on_subscribe(&service, node, &subscription));
        }
        let reply = response::subscribe_reply(&node.id, &subscription);
        self.node_mut(&s.node)?.subscriptions.push(subscription);
        Ok((Some(reply), notifications))
    }

    fn apply_unsubscribe(&mut self, actor: &Jid, u: &proto::Unsubscribe) -> Reply {
        let jid = parse_jid(&u.jid)?;
        let subid = Some(u.subid.as_str()).filter(|s| !s.is_empty());
        let node = self.node_mut(&u.node)?;
        let found = Self::find_own_subscription(node, actor, &jid, subid)?
            .subid
            .clone();
        node.subscriptions
            .retain(|s| !(s.jid == jid && s.subid == found));
        Ok((None, Vec::new()))
    }

    fn apply_options(&mut self, actor: &Jid, o: &proto::SetSubscriptionOptions) -> Reply {
        let jid = parse_jid(&o.jid)?;
        let subid = Some(o.subid.as_str()).filter(|s| !s.is_empty());
        let node = self.node_mut(&o.node)?;
        let found = Self::find_own_subscription(node, actor, &jid, subid)?
            .subid
            .clone();
        if let (Some(patch), Some(subscription)) = (
            &o.options,
            node.subscriptions
                .iter_mut()
                .find(|s| s.jid == jid && s.subid == found),
        ) {
            subscription.options.apply_patch(patch);
        }
        Ok((None, Vec::new()))
    }

    fn apply_authorize(&mut self, actor: &Jid, a: &proto::AuthorizeSubscription) -> Reply {
        let jid = parse_jid(&a.jid)?;
        let subid = Some(a.subid.as_str()).filter(|s| !s.is_empty());
        let PubsubService {
            nodes, service_jid, ..
        } = self;
        let node = nodes.get_mut(&a.node).ok_or_else(|| not_found(&a.node))?;
        Self::require_owner(node, actor)?;
        let found = Self::find_pending(node, &jid, subid)?.subid.clone();
        let position = node
            .subscriptions
            .iter()
            .position(|s| s.jid == jid && s.subid == found)
            .ok_or_else(|| StanzaError::new(Condition::ItemNotFound))?;
        let subscription = if a.allow {
            node.subscriptions[position].state = SubscriptionState::Subscribed;
            node.subscriptions[position].clone()
        } else {
            let mut removed = node.subscriptions.remove(position);
            removed.state = SubscriptionState::None;
            removed
        };
        // XEP-0060 §8.6.2: tell the subscriber the outcome.
        let body = response::subscription_event(&node.id, &subscription).to_xml();
        let mut notifications: Vec<Notification> =
            Self::notify(vec![jid], notification_kind(&node.config), body)
                .into_iter()
                .collect();
        if a.allow {
            notifications.extend(Self::last_item_on_subscribe(
                service_jid,
                node,
                &subscription,
            ));
        }
        Ok((None, notifications))
    }

    /// XEP-0060 §6.1.7: the last published item, sent to a new active
    /// subscription when the node says so (`on_sub`, `on_sub_and_presence`).
    fn last_item_on_subscribe(
        service: &BareJid,
        node: &PubsubNode,
        subscription: &Subscription,
    ) -> Option<Notification> {
        if node.config.send_last_published_item == SendLastPublishedItem::Never
            || !node.config.deliver_notifications
            || !subscription.options.deliver
        {
            return None;
        }
        let last = node.last_item()?;
        let body =
            response::item_notification_xml(service, &node.id, last, node.config.deliver_payloads);
        Self::notify(
            vec![subscription.jid.clone()],
            notification_kind(&node.config),
            body,
        )
    }

    fn apply_affiliations(&mut self, actor: &Jid, a: &proto::SetAffiliations) -> Reply {
        let mut changes = Vec::with_capacity(a.changes.len());
        for change in &a.changes {
            let affiliation = Affiliation::try_from(change.affiliation).map_err(|_| {
                StanzaError::new(Condition::BadRequest).with_text("invalid affiliation")
            })?;
            changes.push((parse_jid(&change.jid)?.to_bare(), affiliation));
        }
        let node = self.node_mut(&a.node)?;
        Self::require_owner(node, actor)?;
        node.affiliations = Self::affiliations_after(node, &changes)?;
        // §4.1: an outcast has no subscriptions.
        node.subscriptions
            .retain(|s| node.affiliations.get(&s.jid.to_bare()) != Some(&Affiliation::Outcast));
        Ok((None, Vec::new()))
    }

    fn apply_subscriptions(
        &mut self,
        actor: &Jid,
        index: u64,
        s: &proto::SetSubscriptions,
    ) -> Reply {
        let mut changes = Vec::with_capacity(s.changes.len());
        for change in &s.changes {
            let state = SubscriptionState::try_from(change.state)
                .ok()
                .filter(|s| *s != SubscriptionState::Unspecified)
                .ok_or_else(|| {
                    StanzaError::new(Condition::BadRequest).with_text("invalid subscription state")
                })?;
            changes.push((parse_jid(&change.jid)?, state, change.subid.as_str()));
        }
        let max = self.limits.subscriptions_per_node_max;
        let node = self.node_mut(&s.node)?;
        Self::require_owner(node, actor)?;
        let mut notifications = Vec::new();
        for (position, (jid, state, subid)) in changes.into_iter().enumerate() {
            let matches =
                |sub: &Subscription| sub.jid == jid && (subid.is_empty() || sub.subid == subid);
            let changed = if state == SubscriptionState::None {
                let before = node.subscriptions.len();
                node.subscriptions.retain(|sub| !matches(sub));
                (node.subscriptions.len() != before).then(|| Subscription {
                    subid: subid.to_owned(),
                    jid: jid.clone(),
                    state,
                    options: SubscriptionOptions::default(),
                })
            } else if let Some(existing) = node.subscriptions.iter_mut().find(|sub| matches(sub)) {
                existing.state = state;
                Some(existing.clone())
            } else {
                if node.subscriptions.len() >= max {
                    return Err(StanzaError::pubsub(
                        Condition::PolicyViolation,
                        "too-many-subscriptions",
                    ));
                }
                let created = Subscription {
                    subid: format!("{index:016x}-{position}"),
                    jid: jid.clone(),
                    state,
                    options: SubscriptionOptions::default(),
                };
                node.subscriptions.push(created.clone());
                Some(created)
            };
            if let Some(subscription) = changed {
                // XEP-0060 §8.8.4: notify the affected entity.
                let body = response::subscription_event(&node.id, &subscription).to_xml();
                notifications.extend(Self::notify(
                    vec![jid],
                    notification_kind(&node.config),
                    body,
                ));
            }
        }
        Ok((None, notifications))
    }

    fn apply_publish(&mut self, actor: &Jid, at: i64, index: u64, p: &proto::Publish) -> Reply {
        if let Some(config) = self.check_publish(actor, p)? {
            // XEP-0060 §7.1.4: auto-create with the publish-options.
            self.nodes.insert(
                p.node.clone(),
                PubsubNode::new(p.node.clone(), config, actor.to_bare(), at),
            );
        }
        let limits = self.limits;
        let PubsubService {
            nodes, service_jid, ..
        } = self;
        let node = nodes.get_mut(&p.node).ok_or_else(|| not_found(&p.node))?;
        let id = match (&p.item_id, &p.voevent_ivorn) {
            (id, _) if !id.is_empty() => id.clone(),
            (_, Some(ivorn)) if node.config.payload_type == VOEVENT_NS => ivorn.clone(),
            _ => format!("{index:016x}"),
        };
        // VOEvent republish of identical bytes is a publisher's retry: the
        // same answer, nothing new.
        if node.config.payload_type == VOEVENT_NS
            && node
                .items
                .get(&id)
                .is_some_and(|existing| *existing.payload == *p.payload)
        {
            return Ok((Some(response::publish_reply(&p.node, &id)), Vec::new()));
        }
        let item = Arc::new(Item {
            id: id.clone(),
            payload: p.payload.as_str().into(),
            publisher: actor.clone(),
            published_micros: at,
            archive_id: index,
        });
        if node.config.persist_items {
            node.remove_item(&id);
            node.items.insert(id.clone(), item.clone());
            node.order.insert(index, id.clone());
            Self::trim_items(node, &limits);
            node.archive.push_back(item.clone());
            while node.archive.len() > limits.archive_entries_per_node_max {
                node.archive.pop_front();
            }
        }
        let body = response::item_notification_xml(
            service_jid,
            &node.id,
            &item,
            node.config.deliver_payloads,
        );
        let notifications = Self::notify(
            Self::recipients(node),
            notification_kind(&node.config),
            body,
        );
        Ok((
            Some(response::publish_reply(&p.node, &id)),
            notifications.into_iter().collect(),
        ))
    }

    fn apply_retract(&mut self, actor: &Jid, r: &proto::Retract) -> Reply {
        self.check_retract(&r.node, actor, &r.item_ids)?;
        let node = self.node_mut(&r.node)?;
        for id in &r.item_ids {
            node.remove_item(id);
        }
        let mut notifications = Vec::new();
        // XEP-0060 §7.2.2.1: notify when configured or asked to.
        if node.config.notify_retract || r.notify {
            let body = response::retract_event(&node.id, &r.item_ids).to_xml();
            notifications.extend(Self::notify(
                Self::recipients(node),
                notification_kind(&node.config),
                body,
            ));
        }
        Ok((None, notifications))
    }

    fn apply_purge(&mut self, actor: &Jid, p: &proto::Purge) -> Reply {
        self.check_purge(&p.node, actor)?;
        let node = self.node_mut(&p.node)?;
        node.items.clear();
        node.order.clear();
        let mut notifications = Vec::new();
        if node.config.notify_retract {
            // XEP-0060 §8.5.2
            let body = response::purge_event(&node.id).to_xml();
            notifications.extend(Self::notify(
                Self::recipients(node),
                notification_kind(&node.config),
                body,
            ));
        }
        Ok((None, notifications))
    }

    /// Removes items older than their node's pubsub#item_expire at `now`.
    /// Expiry is housekeeping, not a retraction: no notification.
    fn apply_expire(&mut self, now: i64) -> Vec<Notification> {
        for node in self.nodes.values_mut() {
            let Ok(seconds) = i64::try_from(node.config.item_expire_seconds) else {
                continue;
            };
            if seconds == 0 {
                continue;
            }
            let cutoff = now.saturating_sub(seconds.saturating_mul(1_000_000));
            let expired: Vec<String> = node
                .items_in_order()
                .filter(|i| i.published_micros <= cutoff)
                .map(|i| i.id.clone())
                .collect();
            for id in expired {
                node.remove_item(&id);
            }
        }
        Vec::new()
    }

    // ------------------------------------------------------------------
    // Snapshots
    // ------------------------------------------------------------------

    /// The whole state as a `vomesh.pubsub.Snapshot`.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let record = |item: &Item| proto::ItemRecord {
            id: item.id.clone(),
            payload: item.payload.to_string(),
            publisher: item.publisher.to_string(),
            published_micros: item.published_micros,
            archive_id: item.archive_id,
        };
        let nodes = self
            .nodes
            .values()
            .map(|node| proto::NodeState {
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
                items: node.items_in_order().map(|i| record(i)).collect(),
                archive: node.archive.iter().map(|i| record(i)).collect(),
            })
            .collect();
        proto::Snapshot {
            last_index: self.last_index,
            nodes,
            accounts: self
                .accounts
                .iter()
                .map(|(username, credentials)| proto::AddAccount {
                    username: username.clone(),
                    credentials: credentials.clone(),
                })
                .collect(),
        }
        .encode_to_vec()
    }

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
                node.archive.push_back(Arc::new(item(r)?));
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

fn notification_kind(config: &NodeConfig) -> MessageKind {
    match config.notification_type {
        NotificationType::Normal => MessageKind::Normal,
        _ => MessageKind::Headline,
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

#[cfg(test)]
mod tests;
