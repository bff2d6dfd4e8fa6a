//! The elements the service sends: IQ result children, event notification
//! bodies (XEP-0060 §7.1.2, §7.2.2, §8.2.5.4, §8.4.2, §8.5.2, §8.6) and
//! subscription authorization forms.
//!
//! Bodies that carry a stored payload are built as text, splicing the
//! payload in unchanged, so an event is serialized once however many
//! subscribers receive it. Every item notification carries a XEP-0203
//! `<delay/>` with the publication time fixed in the replicated command.

use std::fmt::Write as _;

use jid::{BareJid, Jid};

use crate::pubsub::config::access_model_name;
use crate::pubsub::datetime::format_micros;
use crate::pubsub::form::FormBuilder;
use crate::pubsub::model::{Affiliation, Item, PubsubNode, Subscription, SubscriptionState};
use crate::pubsub::request::{
    PUBSUB_EVENT_NS, PUBSUB_NS, PUBSUB_OWNER_NS, SUBSCRIBE_AUTHORIZATION_FORM,
};
use crate::xml::{Element, escape_into};

pub const DELAY_NS: &str = "urn:xmpp:delay";
pub const FORWARD_NS: &str = "urn:xmpp:forward:0";
pub const SHIM_NS: &str = "http://jabber.org/protocol/shim";
pub const META_DATA_FORM: &str = "http://jabber.org/protocol/pubsub#meta-data";

fn attr(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, " {name}=\"");
    escape_into(out, value, true);
    out.push('"');
}

/// `<items node='…'><item id='…' publisher='…'>PAYLOAD</item></items>`
/// inside `<event/>`, as text. `with_payload` false leaves the item empty
/// (pubsub#deliver_payloads false, XEP-0060 §7.1.2.2).
pub fn item_event_xml(node: &str, item: &Item, with_payload: bool) -> String {
    let mut out = String::with_capacity(item.payload.len() + 200);
    out.push_str("<event xmlns=\"");
    out.push_str(PUBSUB_EVENT_NS);
    out.push_str("\"><items");
    attr(&mut out, "node", node);
    out.push_str("><item");
    attr(&mut out, "id", &item.id);
    attr(&mut out, "publisher", &item.publisher.to_bare().to_string());
    if with_payload && !item.payload.is_empty() {
        out.push('>');
        out.push_str(&item.payload);
        out.push_str("</item></items></event>");
    } else {
        out.push_str("/></items></event>");
    }
    out
}

/// XEP-0203 `<delay xmlns='urn:xmpp:delay' from='…' stamp='…'/>`.
pub fn delay_xml(from: &BareJid, stamp_micros: i64) -> String {
    let mut out = String::from("<delay xmlns=\"");
    out.push_str(DELAY_NS);
    out.push('"');
    attr(&mut out, "from", &from.to_string());
    attr(&mut out, "stamp", &format_micros(stamp_micros));
    out.push_str("/>");
    out
}

/// The body of an item notification: the event, then its publication time.
pub fn item_notification_xml(
    service: &BareJid,
    node: &str,
    item: &Item,
    with_payload: bool,
) -> String {
    let mut out = item_event_xml(node, item, with_payload);
    out.push_str(&delay_xml(service, item.published_micros));
    // XEP-0359: the archive id, so a subscriber knows where to resume with
    // an XEP-0313 query (`after-id`) after losing its site.
    out.push_str("<stanza-id xmlns=\"urn:xmpp:sid:0\"");
    attr(&mut out, "by", &service.to_string());
    attr(&mut out, "id", &item.archive_id.to_string());
    out.push_str("/>");
    out
}

/// XEP-0313 result body: `<result queryid id><forwarded><delay/><message>
/// <event/></message></forwarded></result>`; the publication time is the
/// delay of the forwarded wrapper (XEP-0297).
pub fn archive_result_xml(
    service: &BareJid,
    query_id: Option<&str>,
    node: &str,
    item: &Item,
) -> String {
    let mut out = String::from("<result xmlns=\"urn:xmpp:mam:2\"");
    if let Some(query_id) = query_id {
        attr(&mut out, "queryid", query_id);
    }
    attr(&mut out, "id", &item.archive_id.to_string());
    out.push_str("><forwarded xmlns=\"");
    out.push_str(FORWARD_NS);
    out.push_str("\">");
    out.push_str(&delay_xml(service, item.published_micros));
    out.push_str("<message xmlns=\"jabber:client\" type=\"headline\"");
    attr(&mut out, "from", &service.to_string());
    out.push('>');
    out.push_str(&item_event_xml(node, item, true));
    out.push_str("</message></forwarded></result>");
    out
}

fn event(child: Element) -> Element {
    Element::new("event", PUBSUB_EVENT_NS).with_child(child)
}

/// XEP-0131 SHIM `<headers/>` naming the subscriptions a notification is
/// for, appended to the notification of a JID with several subscriptions.
pub fn subid_headers_xml(subids: &[&str]) -> String {
    let mut headers = Element::new("headers", SHIM_NS);
    for subid in subids {
        headers.push_child(
            Element::new("header", SHIM_NS)
                .with_attr("name", "SubID")
                .with_text(*subid),
        );
    }
    headers.to_xml()
}

/// XEP-0131 SHIM `<headers/>` naming the collection (XEP-0248 §6) a
/// notification reached its recipient through.
pub fn collection_header_xml(collection: &str) -> String {
    Element::new("headers", SHIM_NS)
        .with_child(
            Element::new("header", SHIM_NS)
                .with_attr("name", "Collection")
                .with_text(collection),
        )
        .to_xml()
}

/// XEP-0060 §7.2.2: retraction notification.
pub fn retract_event(node: &str, ids: &[String]) -> Element {
    let mut items = Element::new("items", PUBSUB_EVENT_NS).with_attr("node", node);
    for id in ids {
        items.push_child(Element::new("retract", PUBSUB_EVENT_NS).with_attr("id", id.clone()));
    }
    event(items)
}

/// XEP-0060 §8.5.2: purge notification.
pub fn purge_event(node: &str) -> Element {
    event(Element::new("purge", PUBSUB_EVENT_NS).with_attr("node", node))
}

/// XEP-0060 §8.4.2: deletion notification, with the optional redirect.
pub fn delete_event(node: &str, redirect: Option<&str>) -> Element {
    let mut delete = Element::new("delete", PUBSUB_EVENT_NS).with_attr("node", node);
    if let Some(uri) = redirect {
        delete.push_child(Element::new("redirect", PUBSUB_EVENT_NS).with_attr("uri", uri));
    }
    event(delete)
}

/// XEP-0060 §8.2.5.4: configuration change notification, with the new
/// configuration when the node delivers payloads.
pub fn configuration_event(node: &PubsubNode) -> Element {
    let mut configuration =
        Element::new("configuration", PUBSUB_EVENT_NS).with_attr("node", node.id.clone());
    if node.config.deliver_payloads {
        configuration.push_child(
            node.config
                .to_form("result", crate::pubsub::config::NODE_CONFIG_FORM),
        );
    }
    event(configuration)
}

/// XEP-0060 §8.6 / §8.8.4: a subscription state change sent to the
/// subscriber.
pub fn subscription_event(node: &str, subscription: &Subscription) -> Element {
    event(subscription_element(
        PUBSUB_EVENT_NS,
        Some(node),
        subscription,
    ))
}

pub fn state_name(state: SubscriptionState) -> &'static str {
    match state {
        SubscriptionState::Pending => "pending",
        SubscriptionState::Unconfigured => "unconfigured",
        SubscriptionState::Subscribed => "subscribed",
        SubscriptionState::None | SubscriptionState::Unspecified => "none",
    }
}

pub fn affiliation_name(affiliation: Affiliation) -> &'static str {
    match affiliation {
        Affiliation::Owner => "owner",
        Affiliation::Publisher => "publisher",
        Affiliation::PublishOnly => "publish-only",
        Affiliation::Member => "member",
        Affiliation::Outcast => "outcast",
        Affiliation::None | Affiliation::Unspecified => "none",
    }
}

/// `<subscription [node] jid subid subscription/>` in `ns`.
pub fn subscription_element(ns: &str, node: Option<&str>, subscription: &Subscription) -> Element {
    let mut e = Element::new("subscription", ns);
    if let Some(node) = node {
        e.set_attr("node", node);
    }
    e.set_attr("jid", subscription.jid.to_string());
    e.set_attr("subscription", state_name(subscription.state));
    if subscription.state != SubscriptionState::None {
        e.set_attr("subid", subscription.subid.clone());
    }
    e
}

/// The reply to a subscribe request (XEP-0060 §6.1.2).
pub fn subscribe_reply(node: &str, subscription: &Subscription) -> Element {
    Element::new("pubsub", PUBSUB_NS).with_child(subscription_element(
        PUBSUB_NS,
        Some(node),
        subscription,
    ))
}

/// The reply to a publish (XEP-0060 §7.1.2).
pub fn publish_reply(node: &str, item_id: &str) -> Element {
    Element::new("pubsub", PUBSUB_NS).with_child(
        Element::new("publish", PUBSUB_NS)
            .with_attr("node", node)
            .with_child(Element::new("item", PUBSUB_NS).with_attr("id", item_id)),
    )
}

/// The reply to a create (XEP-0060 §8.1.2): names the node, which matters
/// for instant nodes.
pub fn create_reply(node: &str) -> Element {
    Element::new("pubsub", PUBSUB_NS)
        .with_child(Element::new("create", PUBSUB_NS).with_attr("node", node))
}

/// The owner's authorization request form (XEP-0060 §8.6.1).
pub fn authorization_request(node: &str, subscription: &Subscription) -> Element {
    FormBuilder::new("form", SUBSCRIBE_AUTHORIZATION_FORM)
        .field("pubsub#node", "text-single", "Node ID", &[node], &[])
        .field("pubsub#subid", "hidden", "", &[&subscription.subid], &[])
        .field(
            "pubsub#subscriber_jid",
            "jid-single",
            "Subscriber Address",
            &[&subscription.jid.to_string()],
            &[],
        )
        .boolean(
            "pubsub#allow",
            "Allow this JID to subscribe to this pubsub node?",
            false,
        )
        .build()
}

/// `pubsub#meta-data` of a node in its disco#info (XEP-0060 §5.4).
pub fn meta_data_form(node: &PubsubNode) -> Element {
    let owners: Vec<String> = node.owners().map(ToString::to_string).collect();
    let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
    let subscribers = node
        .subscriptions
        .iter()
        .filter(|s| s.state == SubscriptionState::Subscribed)
        .count()
        .to_string();
    FormBuilder::new("result", META_DATA_FORM)
        .field(
            "pubsub#title",
            "text-single",
            "",
            &[&node.config.title],
            &[],
        )
        .field(
            "pubsub#description",
            "text-single",
            "",
            &[&node.config.description],
            &[],
        )
        .field(
            "pubsub#type",
            "text-single",
            "",
            &[&node.config.payload_type],
            &[],
        )
        .field("pubsub#owner", "jid-multi", "", &owners, &[])
        .field(
            "pubsub#creator",
            "jid-single",
            "",
            &[&node.creator.to_string()],
            &[],
        )
        .field(
            "pubsub#creation_date",
            "text-single",
            "",
            &[&format_micros(node.created_micros)],
            &[],
        )
        .field(
            "pubsub#access_model",
            "list-single",
            "",
            &[access_model_name(node.config.access_model)],
            &[],
        )
        .field(
            "pubsub#num_subscribers",
            "text-single",
            "",
            &[&subscribers],
            &[],
        )
        .build()
}

/// `<pubsub xmlns='…#owner'>` wrapper.
pub fn owner_pubsub(child: Element) -> Element {
    Element::new("pubsub", PUBSUB_OWNER_NS).with_child(child)
}

/// An item element of an items retrieval reply (XEP-0060 §6.5.2).
pub fn retrieved_item(service: &BareJid, item: &Item) -> Element {
    let mut e = Element::new("item", PUBSUB_NS)
        .with_attr("id", item.id.clone())
        .with_attr("publisher", item.publisher.to_bare().to_string());
    // The stored text as published (self-contained), not re-parsed: a
    // catch-up of many items spent most of its CPU parsing them.
    if !item.payload.is_empty() {
        e.push_raw(item.payload.clone());
    }
    // XEP-0203: the publication time, after the payload so that clients
    // taking an item's first child as its payload still find it.
    e.push_child(
        Element::new("delay", DELAY_NS)
            .with_attr("from", service.to_string())
            .with_attr("stamp", format_micros(item.published_micros)),
    );
    e
}

/// XEP-0060 §8.9.4: the message telling an entity its affiliation changed.
pub fn affiliation_change(node: &str, jid: &Jid, affiliation: Affiliation) -> Element {
    Element::new("pubsub", PUBSUB_NS).with_child(
        Element::new("affiliations", PUBSUB_NS)
            .with_attr("node", node)
            .with_child(affiliation_element(PUBSUB_NS, None, Some(jid), affiliation)),
    )
}

/// An `<affiliation/>` of an affiliation list.
pub fn affiliation_element(
    ns: &str,
    node: Option<&str>,
    jid: Option<&Jid>,
    affiliation: Affiliation,
) -> Element {
    let mut e = Element::new("affiliation", ns);
    if let Some(node) = node {
        e.set_attr("node", node);
    }
    if let Some(jid) = jid {
        e.set_attr("jid", jid.to_string());
    }
    e.set_attr("affiliation", affiliation_name(affiliation));
    e
}
