//! Tests of the pubsub state machine, one file per group of XEP-0060 use
//! cases. Requests are written as XML text (read with the payload reader)
//! and driven through `handle_iq` and, for writes, `apply` at the next log
//! index, as the server does.

mod archive;
mod collection;
mod discovery;
mod lifecycle;
mod owner;
mod publish;
mod replay;
mod retrieve;
mod subscribe;
mod throughput;
mod voevent;

use std::collections::{BTreeMap, BTreeSet};

use jid::{BareJid, FullJid, Jid};
use vomesh_proto::pubsub::{self as proto, Command};

use super::*;
use crate::pubsub::config::NODE_CONFIG_FORM;
use crate::pubsub::model::{AccessModel, Affiliation};
use crate::pubsub::payload;
use crate::xml::{ParserLimits, StreamEvent, StreamParser};

pub const PS: &str = "http://jabber.org/protocol/pubsub";
pub const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";

pub const ALICE: &str = "alice@localhost/desk";
pub const BOB: &str = "bob@localhost/phone";
pub const CAROL: &str = "carol@localhost/lab";
pub const EVE: &str = "eve@remote.example/x";

/// Site-local facts for tests: local accounts, presence subscriptions
/// and roster groups, keyed `(owner, who)`.
#[derive(Default)]
pub struct Contacts {
    pub presence: BTreeSet<(BareJid, BareJid)>,
    pub groups: BTreeMap<(BareJid, BareJid), Vec<String>>,
}

impl RequestContext for Contacts {
    fn is_local_user(&self, bare: &BareJid) -> bool {
        bare.domain().as_str() == "localhost"
    }

    fn in_roster_group(&self, owner: &BareJid, who: &BareJid, groups: &[String]) -> bool {
        self.groups
            .get(&(owner.clone(), who.clone()))
            .is_some_and(|mine| mine.iter().any(|g| groups.contains(g)))
    }

    fn has_presence_subscription(&self, owner: &BareJid, who: &BareJid) -> bool {
        self.presence.contains(&(owner.clone(), who.clone()))
    }
}

pub fn bare(jid: &str) -> BareJid {
    BareJid::new(jid).unwrap()
}

pub fn full(jid: &str) -> FullJid {
    FullJid::new(jid).unwrap()
}

pub fn jid(jid: &str) -> Jid {
    Jid::new(jid).unwrap()
}

/// An element from XML text.
pub fn xml(text: &str) -> Element {
    payload::parse(text).unwrap()
}

/// What a request led to, in the form the server sends it.
#[derive(Debug)]
pub struct Answer {
    pub reply: Result<Option<Element>, StanzaError>,
    pub notifications: Vec<Notification>,
    /// The command that was proposed and applied, if any.
    pub command: Option<Command>,
    /// XEP-0313 result messages.
    pub archive: Vec<Notification>,
    /// The item a publish added.
    pub published: Option<std::sync::Arc<crate::pubsub::model::Item>>,
    /// Archive entries the command pushed out.
    pub archive_dropped: ArchiveDrops,
}

impl Answer {
    /// The reply child serialized, panicking on an error reply.
    pub fn ok_xml(&self) -> String {
        match &self.reply {
            Ok(Some(e)) => e.to_xml(),
            Ok(None) => String::new(),
            Err(e) => panic!("expected success, got {e}"),
        }
    }

    pub fn ok(&self) -> Option<&Element> {
        match &self.reply {
            Ok(e) => e.as_ref(),
            Err(e) => panic!("expected success, got {e}"),
        }
    }

    pub fn error(&self) -> &StanzaError {
        match &self.reply {
            Ok(e) => panic!(
                "expected an error, got {:?}",
                e.as_ref().map(Element::to_xml)
            ),
            Err(e) => e,
        }
    }

    /// Asserts the error condition and pubsub-specific child.
    pub fn assert_error(&self, condition: Condition, app: Option<&str>) {
        let error = self.error();
        assert_eq!(
            (error.condition, error.app_name()),
            (condition, app),
            "{error}"
        );
    }

    /// `(recipients, message)` of each notification.
    pub fn sent(&self) -> Vec<(Vec<String>, String)> {
        self.notifications
            .iter()
            .map(|n| {
                (
                    n.recipients.iter().map(ToString::to_string).collect(),
                    n.message.to_string(),
                )
            })
            .collect()
    }

    /// Recipients of every notification, flattened.
    pub fn recipients(&self) -> Vec<String> {
        self.sent().into_iter().flat_map(|(r, _)| r).collect()
    }
}

/// The leader's periodic `ExpireItems`, stamped `at`.
pub fn expire_command(at: i64) -> Command {
    Command {
        actor: "pubsub.localhost".into(),
        timestamp_micros: at,
        op: Some(Op::ExpireItems(proto::ExpireItems {})),
    }
}

pub struct Harness {
    pub service: PubsubService,
    pub index: u64,
    pub now: i64,
    pub ctx: Contacts,
}

/// 2026-11-25T12:00:00Z
pub const T0: i64 = 1_795_608_000_000_000;

impl Harness {
    pub fn new() -> Self {
        Self::with_limits(PubsubLimits::default())
    }

    pub fn with_limits(limits: PubsubLimits) -> Self {
        Harness {
            service: PubsubService::new(bare("pubsub.localhost"), limits),
            index: 0,
            now: T0,
            ctx: Contacts::default(),
        }
    }

    /// Handles `<iq type=kind>child</iq>` from `from`, applying a proposed
    /// command at the next index. Time advances one second per request.
    pub fn iq(&mut self, from: &str, kind: &str, child: &str) -> Answer {
        self.send(kind, from, xml(child))
    }

    pub fn finish(&mut self, handled: Handled) -> Answer {
        match handled {
            Handled::Reply(reply) => Answer {
                reply,
                notifications: Vec::new(),
                command: None,
                archive: Vec::new(),
                published: None,
                archive_dropped: ArchiveDrops::default(),
            },
            Handled::Archive { messages, fin } => Answer {
                reply: Ok(Some(fin)),
                notifications: Vec::new(),
                command: None,
                archive: messages,
                published: None,
                archive_dropped: ArchiveDrops::default(),
            },
            Handled::Propose(command) => {
                let outcome = self.apply(&command);
                Answer {
                    reply: outcome.reply,
                    notifications: outcome.notifications,
                    command: Some(command),
                    archive: Vec::new(),
                    published: outcome.published,
                    archive_dropped: outcome.archive_dropped,
                }
            }
        }
    }

    pub fn apply(&mut self, command: &Command) -> Outcome {
        self.index += 1;
        self.service.apply(
            command,
            &Meta {
                index: self.index,
                reply_wanted: true,
            },
        )
    }

    /// Applies the leader's periodic `ExpireItems`, stamped `at`.
    pub fn expire(&mut self, at: i64) -> Outcome {
        self.apply(&expire_command(at))
    }

    pub fn set(&mut self, from: &str, child: &str) -> Answer {
        self.iq(from, "set", child)
    }

    pub fn get(&mut self, from: &str, child: &str) -> Answer {
        self.iq(from, "get", child)
    }

    pub fn create(&mut self, from: &str, node: &str) {
        self.set(
            from,
            &format!("<pubsub xmlns='{PS}'><create node='{node}'/></pubsub>"),
        )
        .ok();
    }

    /// Creates `node` with node_config `fields`.
    pub fn create_with(&mut self, from: &str, node: &str, fields: &[(&str, &str)]) {
        let answer = self.set(
            from,
            &format!(
                "<pubsub xmlns='{PS}'><create node='{node}'/><configure>{}</configure></pubsub>",
                form(NODE_CONFIG_FORM, fields)
            ),
        );
        answer.ok();
    }

    pub fn subscribe(&mut self, from: &str, node: &str) -> Answer {
        let who = jid(from).to_bare();
        self.subscribe_jid(from, &who.to_string(), node)
    }

    pub fn subscribe_jid(&mut self, from: &str, who: &str, node: &str) -> Answer {
        self.set(
            from,
            &format!("<pubsub xmlns='{PS}'><subscribe node='{node}' jid='{who}'/></pubsub>"),
        )
    }

    /// Publishes `payload`, read as a document of its own (so unqualified
    /// elements stay unqualified) and placed in the `<item/>`.
    pub fn publish(&mut self, from: &str, node: &str, id: Option<&str>, payload: &str) -> Answer {
        let id = id.map(|id| format!(" id='{id}'")).unwrap_or_default();
        let request = with_payload(
            &format!("<pubsub xmlns='{PS}'><publish node='{node}'><item{id}/></publish></pubsub>"),
            payload,
        );
        self.send("set", from, request)
    }

    /// Sends `<iq type=kind>child</iq>` built as an element.
    pub fn send(&mut self, kind: &str, from: &str, child: Element) -> Answer {
        self.now += 1_000_000;
        let iq = Element::new("iq", "jabber:client")
            .with_attr("type", kind)
            .with_attr("id", "q1")
            .with_child(child);
        let handled = self
            .service
            .handle_iq(&full(from), &iq, self.now, &self.ctx);
        self.finish(handled)
    }

    pub fn set_affiliation(&mut self, owner: &str, node: &str, who: &str, affiliation: &str) {
        self.set(
            owner,
            &format!("<pubsub xmlns='{OWNER}'><affiliations node='{node}'><affiliation jid='{who}' affiliation='{affiliation}'/></affiliations></pubsub>"),
        )
        .ok();
    }

    pub fn items(&mut self, from: &str, node: &str) -> Answer {
        self.get(
            from,
            &format!("<pubsub xmlns='{PS}'><items node='{node}'/></pubsub>"),
        )
    }

    /// Ids of the current items of `node`, in publication order.
    pub fn item_ids(&self, node: &str) -> Vec<String> {
        self.service
            .node(node)
            .map(|n| n.items_in_order().map(|i| i.id.clone()).collect())
            .unwrap_or_default()
    }
}

/// `request` (a `<pubsub/>` with a `<publish><item/></publish>`) with the
/// roots of `payload` placed in the item, read as the server reads a
/// client's stream (payloads kept as sent). Each root is written as a
/// namespace-aware client writes it: read as a document of its own and
/// serialized, so unqualified elements stay unqualified.
pub fn with_payload(request: &str, payload: &str) -> Element {
    let roots: String = xml(&format!("<w>{payload}</w>"))
        .children()
        .map(payload::serialize)
        .collect();
    as_sent(&request.replacen("/></publish>", &format!(">{roots}</item></publish>"), 1))
}

/// The request `text` read as the server reads a client's stream, which
/// keeps payloads as they were sent.
pub fn as_sent(text: &str) -> Element {
    let stream = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>{text}"
    );
    let limits = ParserLimits {
        stanza_bytes_max: 1 << 20,
        depth_max: 64,
        attributes_max: 64,
    };
    let mut parser = StreamParser::new(limits).capture_children_of(payload::is_payload_parent);
    let mut events = Vec::new();
    parser.push(stream.as_bytes(), &mut events).unwrap();
    let stanza = events.into_iter().find_map(StreamEvent::into_stanza);
    stanza.expect("the request is one complete element")
}

/// A submitted data form of `form_type` with single-valued fields.
pub fn form(form_type: &str, fields: &[(&str, &str)]) -> String {
    let mut out = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
    );
    for (var, value) in fields {
        out.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    out.push_str("</x>");
    out
}

pub const ENTRY: &str = "<entry xmlns='http://www.w3.org/2005/Atom'><title>hello</title></entry>";
pub const ENTRY_TEXT: &str =
    "<entry xmlns=\"http://www.w3.org/2005/Atom\"><title>hello</title></entry>";

/// A canonical rendering of `e` for comparing trees: expanded names,
/// attributes sorted by expanded name, text; prefixes and where namespaces
/// were declared do not matter (Canonical XML's notion of equality).
pub fn canonical(e: &Element) -> String {
    let mut attrs: Vec<String> = e
        .attrs()
        .iter()
        .map(|a| format!("{{{}}}{}={:?}", a.ns, a.name, a.value))
        .collect();
    attrs.sort();
    let mut out = format!("<{{{}}}{} {}>", e.ns(), e.name(), attrs.join(" "));
    for node in e.nodes() {
        match node {
            crate::xml::Node::Element(child) => out.push_str(&canonical(child)),
            crate::xml::Node::Text(text) => out.push_str(&format!("{text:?}")),
            crate::xml::Node::Raw(xml) => out.push_str(&canonical(&payload::parse(xml).unwrap())),
            crate::xml::Node::Captured(captured) => {
                out.push_str(&canonical(&payload::parse(&captured.xml).unwrap()))
            }
        }
    }
    out.push_str("</>");
    out
}
