//! Applying committed commands: the deterministic state transitions and
//! the notifications each produces.

use std::collections::BTreeSet;
use std::sync::Arc;

use jid::{BareJid, Jid};
use vomesh_proto::pubsub::{self as proto, command::Op};

use super::*;
use crate::pubsub::model::{
    AccessModel, Affiliation, Item, SendLastPublishedItem, Subscription, SubscriptionOptions,
    SubscriptionState,
};
use crate::pubsub::response;
use crate::voevent::VOEVENT_NS;

impl PubsubService {
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
        let at = cmd.timestamp_micros;
        let result = match (Jid::new(&cmd.actor), &cmd.op) {
            (_, None) => Err(StanzaError::new(Condition::BadRequest).with_text("empty command")),
            (Err(_), _) => Err(StanzaError::new(Condition::JidMalformed)),
            (Ok(actor), Some(op)) => self.apply_op(&actor, at, meta, op),
        };
        if cfg!(debug_assertions) {
            self.debug_check();
        }
        let archive_dropped = self.archive_ledger.take_dropped();
        match result {
            Ok((reply, notifications, published)) => Outcome {
                reply: Ok(reply),
                notifications,
                published,
                archive_dropped,
            },
            Err(error) => Outcome {
                reply: Err(error),
                notifications: Vec::new(),
                published: None,
                archive_dropped,
            },
        }
    }

    fn debug_check(&self) {
        for (id, node) in &self.nodes {
            debug_assert_eq!(id, &node.id);
            node.debug_check_recent();
        }
        self.debug_check_archive_ledger();
    }

    fn apply_op(&mut self, actor: &Jid, at: i64, meta: &Meta, op: &Op) -> Applied {
        let index = meta.index;
        let applied = match op {
            Op::Publish(p) => return self.apply_publish(actor, at, meta, p),
            Op::CreateNode(c) => self.apply_create(actor, at, index, c),
            Op::ConfigureNode(c) => self.apply_configure(actor, c),
            Op::DeleteNode(d) => self.apply_delete(actor, d),
            Op::Subscribe(s) => self.apply_subscribe(actor, index, s),
            Op::Unsubscribe(u) => self.apply_unsubscribe(actor, u),
            Op::SetSubscriptionOptions(o) => self.apply_options(actor, o),
            Op::AuthorizeSubscription(a) => self.apply_authorize(actor, a),
            Op::SetAffiliations(a) => self.apply_affiliations(actor, a),
            Op::SetSubscriptions(s) => self.apply_subscriptions(actor, index, s),
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
        };
        applied.map(|(reply, notifications)| (reply, notifications, None))
    }

    fn node_mut(&mut self, node: &str) -> Result<&mut PubsubNode, StanzaError> {
        self.nodes.get_mut(node).ok_or_else(|| not_found(node))
    }

    /// The notifications of an event on `node` to its subscribers: active
    /// subscriptions that want delivery, each JID once, in JID order. One
    /// message is shared by every JID holding one such subscription; a JID
    /// holding several gets its own copy naming them in SHIM `SubID`
    /// headers (XEP-0060 §6.1.6, XEP-0131).
    fn broadcast(node: &PubsubNode, body: String) -> Vec<Notification> {
        if !node.config.deliver_notifications {
            return Vec::new();
        }
        // (JID, subid) of every delivering subscription, grouped by JID.
        let mut delivering: Vec<(&Jid, &str)> = node
            .subscriptions
            .iter()
            .filter(|s| delivers(s))
            .map(|s| (&s.jid, s.subid.as_str()))
            .collect();
        delivering.sort_unstable();
        let kind = notification_kind(&node.config);
        let mut shared = Vec::with_capacity(delivering.len());
        let mut own = Vec::new();
        for group in delivering.chunk_by(|a, b| a.0 == b.0) {
            match group {
                [(jid, _)] => shared.push((*jid).clone()),
                [(jid, _), ..] => {
                    let subids: Vec<&str> = group.iter().map(|(_, subid)| *subid).collect();
                    own.push(Notification {
                        recipients: vec![(*jid).clone()],
                        kind,
                        message: format!("{body}{}", response::subid_headers_xml(&subids)).into(),
                    });
                }
                [] => {}
            }
        }
        let mut notifications: Vec<Notification> =
            Self::notify(shared, kind, body).into_iter().collect();
        notifications.extend(own);
        notifications
    }

    /// The notifications of an item event on the leaf `node_id`: to its
    /// subscribers, then (XEP-0248 §6) to the subscribers of the
    /// collections it belongs to, nearest first, each JID once, with a SHIM
    /// `Collection` header naming the collection it came through. Through a
    /// collection, only entities the leaf would let read its items are
    /// told: an open leaf, or one they are affiliated with (presence and
    /// roster checks need site-local rosters, which `apply` does not have).
    ///
    /// The body is made only when someone may be told: most events of a
    /// busy node have no subscriber at some site, or none at all, and the
    /// body copies the whole payload.
    fn item_event(&self, node_id: &str, body: impl FnOnce() -> String) -> Vec<Notification> {
        let Some(leaf) = self.nodes.get(node_id) else {
            return Vec::new();
        };
        let told_here =
            leaf.config.deliver_notifications && leaf.subscriptions.iter().any(delivers);
        if !told_here && leaf.config.collections.is_empty() {
            return Vec::new();
        }
        let body = body();
        if leaf.config.collections.is_empty() {
            return Self::broadcast(leaf, body);
        }
        let mut notifications = Self::broadcast(leaf, body.clone());
        let mut told: BTreeSet<Jid> = notifications
            .iter()
            .flat_map(|n| n.recipients.iter().cloned())
            .collect();
        let readable = |jid: &Jid| match leaf.affiliation(jid) {
            Affiliation::Owner | Affiliation::Publisher | Affiliation::Member => true,
            Affiliation::Outcast | Affiliation::PublishOnly => false,
            Affiliation::None | Affiliation::Unspecified => {
                leaf.config.access_model == AccessModel::Open
            }
        };
        for collection in self.ancestors(&leaf.config.collections) {
            if !collection.config.deliver_notifications {
                continue;
            }
            let recipients: Vec<Jid> = collection
                .subscriptions
                .iter()
                .filter(|s| delivers(s))
                .map(|s| &s.jid)
                .filter(|jid| readable(jid) && told.insert((*jid).clone()))
                .cloned()
                .collect();
            let message = format!("{body}{}", response::collection_header_xml(&collection.id));
            notifications.extend(Self::notify(
                recipients,
                notification_kind(&leaf.config),
                message,
            ));
        }
        notifications
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
        let existing = Self::require_owner(self.existing(&c.node)?, actor)?;
        let config = match &c.config {
            Some(patch) => self.check_configure(existing, patch)?,
            None => existing.config.clone(),
        };
        let node = self.node_mut(&c.node)?;
        node.config = config;
        if !node.config.persist_items {
            node.items.clear();
            node.order.clear();
        }
        Self::trim_items(node, &limits);
        let mut notifications = Vec::new();
        if node.config.notify_config {
            // XEP-0060 §8.2.5.4
            let body = response::configuration_event(node).to_xml();
            notifications.extend(Self::broadcast(node, body));
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
        self.archive_ledger.forget(&node);
        // XEP-0248: the nodes of a deleted collection stay, outside it.
        for other in self.nodes.values_mut() {
            other.config.collections.retain(|c| *c != d.node);
        }
        let mut notifications = Vec::new();
        if node.config.notify_delete {
            // XEP-0060 §8.4.2
            let redirect = Some(d.redirect_uri.as_str()).filter(|r| !r.is_empty());
            let body = response::delete_event(&node.id, redirect).to_xml();
            notifications.extend(Self::broadcast(&node, body));
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
        // §8.9.4: tell each affected entity its new affiliation.
        let notifications = changes
            .iter()
            .filter_map(|(jid, affiliation)| {
                let jid = Jid::from(jid.clone());
                let body = response::affiliation_change(&node.id, &jid, *affiliation).to_xml();
                Self::notify(vec![jid], MessageKind::Normal, body)
            })
            .collect();
        Ok((None, notifications))
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
                    return Err(too_many_subscriptions());
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

    /// XEP-0060 §7.1; also returns the item added, if any.
    fn apply_publish(&mut self, actor: &Jid, at: i64, meta: &Meta, p: &proto::Publish) -> Applied {
        let index = meta.index;
        if let Some(config) = self.check_publish(actor, p)? {
            // XEP-0060 §7.1.4: auto-create with the publish-options.
            self.nodes.insert(
                p.node.clone(),
                PubsubNode::new(p.node.clone(), config, actor.to_bare(), at),
            );
        }
        let limits = self.limits;
        let node = self.node_mut(&p.node)?;
        let id = match (&p.item_id, &p.voevent_ivorn) {
            (id, _) if !id.is_empty() => id.clone(),
            (_, Some(ivorn)) if node.config.payload_type == VOEVENT_NS => ivorn.clone(),
            _ => format!("{index:016x}"),
        };
        let reply = |id: &str| {
            meta.reply_wanted
                .then(|| response::publish_reply(&p.node, id))
        };
        // VOEvent republish of bytes this IVORN already had is a
        // publisher's retry, or the same packet relayed by another site (two
        // sites subscribed to one upstream): the same answer, nothing new.
        // Decided here, in the replicated apply, so every site agrees.
        if node.config.payload_type == VOEVENT_NS && node.has_version(&id, &p.payload) {
            return Ok((reply(&id), Vec::new(), None));
        }
        let item = Arc::new(Item {
            id: id.clone(),
            payload: p.payload.as_str().into(),
            publisher: actor.clone(),
            published_micros: at,
            archive_id: index,
        });
        let deliver_payloads = node.config.deliver_payloads;
        if node.config.persist_items {
            node.remove_item(&id);
            node.items.insert(id.clone(), item.clone());
            node.order.insert(index, id.clone());
            Self::trim_items(node, &limits);
            self.archive_item(&p.node, item.clone());
        }
        let body =
            || response::item_notification_xml(&self.service_jid, &p.node, &item, deliver_payloads);
        Ok((reply(&id), self.item_event(&p.node, body), Some(item)))
    }

    fn apply_retract(&mut self, actor: &Jid, r: &proto::Retract) -> Reply {
        self.check_retract(&r.node, actor, &r.item_ids)?;
        let node = self.node_mut(&r.node)?;
        for id in &r.item_ids {
            node.remove_item(id);
        }
        // XEP-0060 §7.2.2.1: notify when configured or asked to.
        if !(node.config.notify_retract || r.notify) {
            return Ok((None, Vec::new()));
        }
        let body = || response::retract_event(&r.node, &r.item_ids).to_xml();
        Ok((None, self.item_event(&r.node, body)))
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
            notifications.extend(Self::broadcast(node, body));
        }
        Ok((None, notifications))
    }

    /// Removes items older than their node's pubsub#item_expire at `now`,
    /// and archive entries older than `max_archive_age_seconds`. Expiry is
    /// housekeeping, not a retraction: no notification.
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
        self.trim_age(now);
        Vec::new()
    }
}

/// A subscription notifications go to: approved, and not switched off with
/// XEP-0060 §6.3.8 `pubsub#deliver`.
fn delivers(subscription: &Subscription) -> bool {
    subscription.state == SubscriptionState::Subscribed && subscription.options.deliver
}
