//! Talking to a test node's pubsub service with the project's client:
//! request builders for the XEP-0060 and XEP-0313 requests the integration
//! tests send, and readers of the answers.

use std::path::PathBuf;
use std::time::Duration;

use jid::BareJid;
use vomesh_broker::client::Client;
use vomesh_broker::commands::{self, ReceivedItem};
use vomesh_broker::xml::{Element, Node, ParserLimits, parse_document};
use vomesh_broker::xmpp::ns;

use crate::node::DOMAIN;

pub const PUBSUB_NS: &str = "http://jabber.org/protocol/pubsub";
pub const OWNER_NS: &str = "http://jabber.org/protocol/pubsub#owner";
pub const EVENT_NS: &str = "http://jabber.org/protocol/pubsub#event";
pub const ERRORS_NS: &str = "http://jabber.org/protocol/pubsub#errors";
pub const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const DATA_NS: &str = "jabber:x:data";
pub const MAM_NS: &str = "urn:xmpp:mam:2";
pub const RSM_NS: &str = "http://jabber.org/protocol/rsm";
pub const DELAY_NS: &str = "urn:xmpp:delay";
pub const STANZA_ID_NS: &str = "urn:xmpp:sid:0";
/// The `pubsub#type` of a VOEvent node.
pub const VOEVENT_NS: &str = "http://www.ivoa.net/xml/VOEvent/v2.0";
/// The sample VOEvents.
pub const SAMPLES: [&str; 2] = ["Gaia16aac.xml", "SWIFT_bat_position_v2.0_example.xml"];

/// How long a test waits for a notification.
pub const NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(10);

/// `pubsub.localhost`.
pub fn service() -> BareJid {
    BareJid::new(&format!("pubsub.{DOMAIN}")).expect("a valid service JID")
}

/// The directory of the sample VOEvents.
pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../broker/tests/data/voevents")
}

/// A sample VOEvent file by name (one of [`SAMPLES`]).
pub fn sample(name: &str) -> PathBuf {
    samples_dir().join(name)
}

/// The parsed root of an XML file.
pub fn read_xml(path: &std::path::Path) -> Element {
    let bytes = std::fs::read(path).expect("reading a sample");
    parse_document(
        &bytes,
        ParserLimits {
            stanza_bytes_max: 1 << 24,
            depth_max: 256,
            attributes_max: 256,
        },
    )
    .expect("a well-formed sample")
}

/// A copy of the Gaia sample under another IVORN (a distinct event).
pub fn gaia_variant(fragment: &str) -> String {
    std::fs::read_to_string(sample(SAMPLES[0]))
        .expect("the Gaia sample")
        .replace("#Gaia16aac", &format!("#{fragment}"))
}

/// An IQ of `kind` to the service carrying `child`.
pub fn iq(kind: &str, child: Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", service().to_string())
        .with_child(child)
}

/// A data form of `form_type` (type `submit`) with `fields`.
pub fn form(form_type: &str, fields: &[(&str, &str)]) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", DATA_NS)
            .with_attr("var", var)
            .with_child(Element::new("value", DATA_NS).with_text(value))
    };
    let mut form = Element::new("x", DATA_NS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", form_type).with_attr("type", "hidden"));
    for (var, value) in fields {
        form.push_child(field(var, value));
    }
    form
}

/// XEP-0060 §8.1.3: create `node` with configuration `fields`.
pub fn create_iq(node: &str, fields: &[(&str, &str)]) -> Element {
    let configure = Element::new("configure", PUBSUB_NS)
        .with_child(form(&format!("{PUBSUB_NS}#node_config"), fields));
    iq(
        "set",
        Element::new("pubsub", PUBSUB_NS)
            .with_child(Element::new("create", PUBSUB_NS).with_attr("node", node))
            .with_child(configure),
    )
}

/// XEP-0060 §7.1: publish `payload` as item `id` (or without an id).
pub fn publish_iq(node: &str, id: Option<&str>, payload: Element) -> Element {
    let mut item = Element::new("item", PUBSUB_NS).with_child(payload);
    if let Some(id) = id {
        item.set_attr("id", id);
    }
    iq(
        "set",
        Element::new("pubsub", PUBSUB_NS).with_child(
            Element::new("publish", PUBSUB_NS)
                .with_attr("node", node)
                .with_child(item),
        ),
    )
}

/// XEP-0060 §6.1: subscribe `jid` (bare) to `node`.
pub fn subscribe_iq(node: &str, jid: &str) -> Element {
    iq(
        "set",
        Element::new("pubsub", PUBSUB_NS).with_child(
            Element::new("subscribe", PUBSUB_NS)
                .with_attr("node", node)
                .with_attr("jid", jid),
        ),
    )
}

/// Sends `request` and returns the answer, panicking unless it is a result.
pub async fn request(client: &mut Client, request: Element) -> Element {
    let sent = request.to_xml();
    let reply = client.iq(request).await.expect("the IQ is answered");
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{sent}\nwas answered\n{}",
        reply.to_xml()
    );
    reply
}

/// The defined condition and the pubsub-specific condition of an error
/// reply (RFC 6120 §8.3, XEP-0060 §14.3).
pub fn error_of(reply: &Element) -> (Option<String>, Option<String>) {
    let Some(error) = reply.child("error", ns::CLIENT) else {
        return (None, None);
    };
    let condition = error
        .children()
        .find(|c| c.ns() == STANZAS_NS && c.name() != "text")
        .map(|c| c.name().to_owned());
    let app = error
        .children()
        .find(|c| c.ns() == ERRORS_NS)
        .map(|c| c.name().to_owned());
    (condition, app)
}

/// Publishes and returns the item id the service acknowledged.
pub async fn publish(
    client: &mut Client,
    node: &str,
    id: Option<&str>,
    payload: Element,
) -> String {
    let reply = request(client, publish_iq(node, id, payload)).await;
    commands::published_item_id(&reply).expect("a publish result names the item")
}

/// A small, distinct payload.
pub fn alert(text: &str) -> Element {
    Element::new("alert", "urn:example:alert").with_text(text)
}

/// A XEP-0313 query of `node`'s archive with form `fields` (`start`, `end`,
/// …) and RSM `rsm` children (`after`, `before`, `max`).
pub fn archive_query_iq(
    node: &str,
    query_id: &str,
    fields: &[(&str, &str)],
    rsm: &[(&str, &str)],
) -> Element {
    let mut query = Element::new("query", MAM_NS)
        .with_attr("node", node)
        .with_attr("queryid", query_id)
        .with_child(form(MAM_NS, fields));
    if !rsm.is_empty() {
        let mut set = Element::new("set", RSM_NS);
        for (name, value) in rsm {
            set.push_child(Element::new(*name, RSM_NS).with_text(*value));
        }
        query.push_child(set);
    }
    iq("set", query)
}

/// The ids of `node`'s current items (XEP-0060 §6.5 retrieval).
pub async fn item_ids(client: &mut Client, node: &str) -> Vec<String> {
    let reply = request(
        client,
        iq(
            "get",
            Element::new("pubsub", PUBSUB_NS)
                .with_child(Element::new("items", PUBSUB_NS).with_attr("node", node)),
        ),
    )
    .await;
    let items = reply
        .child("pubsub", PUBSUB_NS)
        .and_then(|p| p.child("items", PUBSUB_NS));
    ids_of(items)
}

/// The `id` of each child of an `<items/>` element (a retrieval's, or an
/// event notification's); none without one.
pub fn ids_of(items: Option<&Element>) -> Vec<String> {
    items.map_or_else(Vec::new, |items| {
        items
            .children()
            .filter_map(|i| i.attr("id").map(str::to_owned))
            .collect()
    })
}

/// One archive page: its items (archive id, item id, stamp, payload) in
/// the order sent, and the `<fin/>` answer.
pub async fn archive_page(
    client: &mut Client,
    node: &str,
    fields: &[(&str, &str)],
    rsm: &[(&str, &str)],
) -> (Vec<ReceivedItem>, Element) {
    let query_id = format!("q{}", rsm.len() * 100 + fields.len());
    let reply = request(client, archive_query_iq(node, &query_id, fields, rsm)).await;
    // The result messages precede the answer (XEP-0313 §4.1.2), so
    // they are queued by now.
    let mut items = Vec::new();
    while let Ok(Ok(stanza)) = tokio::time::timeout(Duration::ZERO, client.next_stanza()).await {
        if let Some(item) = commands::archived_item(&stanza, &service(), node, &query_id) {
            items.push(item);
        }
    }
    let fin = reply
        .child("fin", MAM_NS)
        .unwrap_or_else(|| panic!("a <fin/>: {}", reply.to_xml()))
        .clone();
    (items, fin)
}

/// Checks that resuming `node`'s archive after archive id `after` is
/// refused with `item-not-found` naming `oldest_kept`: entries after it
/// were dropped at the archive's bounds.
pub async fn assert_resume_refused(client: &mut Client, node: &str, after: u64, oldest_kept: u64) {
    let reply = client
        .iq(archive_query_iq(
            node,
            "gap",
            &[("after-id", &after.to_string())],
            &[],
        ))
        .await
        .expect("answered");
    assert_eq!(
        error_of(&reply),
        (Some("item-not-found".to_owned()), None),
        "{}",
        reply.to_xml()
    );
    let oldest = format!("the oldest kept is {oldest_kept}");
    assert!(reply.to_xml().contains(&oldest), "{}", reply.to_xml());
}

/// The archive id of `item` as a number.
pub fn archive_id(item: &ReceivedItem) -> u64 {
    item.archive_id
        .as_deref()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a numeric archive id: {item:?}"))
}

/// The next pubsub event message addressed to this client.
pub async fn next_event(client: &mut Client) -> Element {
    loop {
        let stanza = tokio::time::timeout(NOTIFICATION_TIMEOUT, client.next_stanza())
            .await
            .expect("a notification in time")
            .expect("a stanza");
        if stanza.name() == "message" && stanza.child("event", EVENT_NS).is_some() {
            return stanza;
        }
    }
}

/// The values of the owner's configuration form of `node`.
pub async fn node_config(client: &mut Client, node: &str) -> Vec<(String, String)> {
    let reply = request(
        client,
        iq(
            "get",
            Element::new("pubsub", OWNER_NS)
                .with_child(Element::new("configure", OWNER_NS).with_attr("node", node)),
        ),
    )
    .await;
    let form = reply
        .child("pubsub", OWNER_NS)
        .and_then(|p| p.child("configure", OWNER_NS))
        .and_then(|c| c.child("x", DATA_NS))
        .unwrap_or_else(|| panic!("a configuration form: {}", reply.to_xml()));
    form.children()
        .filter(|f| f.is("field", DATA_NS))
        .filter_map(|f| {
            let var = f.attr("var")?.to_owned();
            let value = f.child("value", DATA_NS).map(Element::text)?;
            Some((var, value))
        })
        .collect()
}

/// Canonical equality of two trees: names and namespaces, attributes (in
/// any order, by namespace and name), text and children in order; which
/// prefixes were used and where namespaces were declared do not matter.
pub fn canonically_equal(a: &Element, b: &Element) -> bool {
    let attrs = |e: &Element| {
        let mut attrs: Vec<(String, String, String)> = e
            .attrs()
            .iter()
            .map(|a| (a.ns.clone(), a.name.clone(), a.value.clone()))
            .collect();
        attrs.sort();
        attrs
    };
    a.name() == b.name()
        && a.ns() == b.ns()
        && attrs(a) == attrs(b)
        && a.nodes().len() == b.nodes().len()
        && a.nodes().iter().zip(b.nodes()).all(|pair| match pair {
            (Node::Text(x), Node::Text(y)) => x == y,
            (Node::Element(x), Node::Element(y)) => canonically_equal(x, y),
            _ => false,
        })
}
