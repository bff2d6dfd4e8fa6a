//! Typed requests to the pubsub service, parsed once from the IQ (or, for
//! subscription approvals, message) element. A malformed request is an
//! `Err` carrying the error XEP-0060 names for it; the service never sees
//! raw XML beyond a publish payload.

use jid::{BareJid, Jid};
use vomesh_proto::pubsub as proto;

use crate::pubsub::archive::ArchiveQuery;
use crate::pubsub::config::{
    NODE_CONFIG_FORM, PUBLISH_OPTIONS_FORM, node_config_patch, subscription_options_patch,
};
use crate::pubsub::error::{Condition, StanzaError};
use crate::pubsub::form::{DATA_NS, SubmittedForm, parse_bool};
use crate::pubsub::model::{Affiliation, SubscriptionState};
use crate::pubsub::payload;
use crate::pubsub::rsm::{RSM_NS, RsmRequest};
use crate::voevent::{self, InvalidVoEvent, VoEventHeader};
use crate::xml::{Captured, Element, Node};

pub const PUBSUB_NS: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_OWNER_NS: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_EVENT_NS: &str = "http://jabber.org/protocol/pubsub#event";
pub const DISCO_INFO_NS: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS_NS: &str = "http://jabber.org/protocol/disco#items";
pub const MAM_NS: &str = "urn:xmpp:mam:2";
pub const SUBSCRIBE_AUTHORIZATION_FORM: &str =
    "http://jabber.org/protocol/pubsub#subscribe_authorization";

/// One request to the service, by XEP-0060 use case.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// XEP-0060 §5.1/§5.3: disco#info of the service or a node.
    DiscoInfo { node: Option<String> },
    /// XEP-0060 §5.2/§5.5: the nodes of the service, or items of a node.
    DiscoItems {
        node: Option<String>,
        rsm: Option<RsmRequest>,
    },
    /// §8.1: `node` is `None` for an instant node.
    Create {
        node: Option<String>,
        config: Option<proto::NodeConfig>,
    },
    /// §8.2.1.
    ConfigureGet { node: String },
    /// §8.2.4; `config` is `None` when the owner cancelled the form.
    ConfigureSet {
        node: String,
        config: Option<proto::NodeConfig>,
    },
    /// §8.3: default node configuration.
    DefaultConfig,
    /// §6.4: default subscription options.
    DefaultOptions,
    /// §8.4.
    Delete {
        node: String,
        redirect: Option<String>,
    },
    /// §8.5.
    Purge { node: String },
    /// §6.1 (and §6.3.7 subscribe-and-configure).
    Subscribe {
        node: String,
        jid: Jid,
        options: Option<proto::SubscriptionOptions>,
    },
    /// §6.2.
    Unsubscribe {
        node: String,
        jid: Jid,
        subid: Option<String>,
    },
    /// §6.3.2.
    OptionsGet {
        node: String,
        jid: Jid,
        subid: Option<String>,
    },
    /// §6.3.5.
    OptionsSet {
        node: String,
        jid: Jid,
        subid: Option<String>,
        options: proto::SubscriptionOptions,
    },
    /// §7.1 (and §7.1.5 publish-options).
    Publish {
        node: String,
        item: Option<PublishedItem>,
        publish_options: Option<proto::NodeConfig>,
    },
    /// §7.2.
    Retract {
        node: String,
        item_ids: Vec<String>,
        notify: bool,
    },
    /// §6.5: all items, `max_items`, by id, or a RSM page.
    Items {
        node: String,
        max_items: Option<usize>,
        item_ids: Vec<String>,
        rsm: Option<RsmRequest>,
    },
    /// §5.6: the requester's subscriptions (optionally on one node).
    Subscriptions { node: Option<String> },
    /// §5.7: the requester's affiliations.
    Affiliations { node: Option<String> },
    /// §8.8.1.
    OwnerSubscriptionsGet { node: String },
    /// §8.8.2.
    OwnerSubscriptionsSet {
        node: String,
        changes: Vec<proto::SubscriptionChange>,
    },
    /// §8.9.1.
    OwnerAffiliationsGet { node: String },
    /// §8.9.2.
    OwnerAffiliationsSet {
        node: String,
        changes: Vec<(BareJid, Affiliation)>,
    },
    /// XEP-0313 §5.1: the query form fields of a node archive.
    ArchiveFields { node: String },
    /// XEP-0313 §4: a query on a node archive.
    ArchiveQuery(ArchiveQuery),
}

fn bad_request(text: &str) -> StanzaError {
    StanzaError::new(Condition::BadRequest).with_text(text.to_owned())
}

/// `node` attribute, required: XEP-0060 `bad-request` + `<nodeid-required/>`.
fn required_node(e: &Element) -> Result<String, StanzaError> {
    match e.attr("node") {
        Some(node) if !node.is_empty() => Ok(node.to_owned()),
        _ => Err(StanzaError::pubsub(
            Condition::BadRequest,
            "nodeid-required",
        )),
    }
}

fn optional_node(e: &Element) -> Option<String> {
    e.attr("node").filter(|n| !n.is_empty()).map(str::to_owned)
}

/// `jid` attribute: absent or malformed is `bad-request` + `<invalid-jid/>`
/// (XEP-0060 §6.1.3.1) unless the use case names another child.
fn jid_attr(e: &Element, missing_app: &str) -> Result<Jid, StanzaError> {
    let text = e
        .attr("jid")
        .ok_or_else(|| StanzaError::pubsub(Condition::BadRequest, missing_app))?;
    Jid::new(text).map_err(|_| StanzaError::pubsub(Condition::BadRequest, "invalid-jid"))
}

fn subid_attr(e: &Element) -> Option<String> {
    e.attr("subid").filter(|s| !s.is_empty()).map(str::to_owned)
}

fn form_in(e: &Element) -> Result<Option<SubmittedForm>, StanzaError> {
    e.child("x", DATA_NS).map(SubmittedForm::parse).transpose()
}

fn config_in(e: &Element, form_type: &str) -> Result<Option<proto::NodeConfig>, StanzaError> {
    match form_in(e)? {
        Some(form) if !form.is_cancel() => node_config_patch(&form, form_type).map(Some),
        _ => Ok(None),
    }
}

impl TryFrom<&Element> for Request {
    type Error = StanzaError;

    /// Parses an `<iq type='get|set'/>` addressed to the service.
    fn try_from(iq: &Element) -> Result<Self, StanzaError> {
        let is_set = match iq.attr("type") {
            Some("set") => true,
            Some("get") => false,
            _ => return Err(bad_request("IQ type must be get or set")),
        };
        // RFC 6120 §8.2.3: exactly one payload child.
        let mut children = iq.children();
        let (Some(query), None) = (children.next(), children.next()) else {
            return Err(bad_request("IQ must have exactly one child"));
        };
        let wrong_type = || bad_request("wrong IQ type for this request");
        match (query.ns(), query.name()) {
            (DISCO_INFO_NS, "query") if !is_set => Ok(Request::DiscoInfo {
                node: optional_node(query),
            }),
            (DISCO_ITEMS_NS, "query") if !is_set => Ok(Request::DiscoItems {
                node: optional_node(query),
                rsm: query
                    .child("set", RSM_NS)
                    .map(RsmRequest::try_from)
                    .transpose()?,
            }),
            (PUBSUB_NS, "pubsub") => parse_pubsub(query, is_set),
            (PUBSUB_OWNER_NS, "pubsub") => parse_owner(query, is_set),
            (MAM_NS, "query") if is_set => ArchiveQuery::try_from(query).map(Request::ArchiveQuery),
            (MAM_NS, "query") => Ok(Request::ArchiveFields {
                node: required_node(query)?,
            }),
            (DISCO_INFO_NS | DISCO_ITEMS_NS, _) => Err(wrong_type()),
            // RFC 6120 §8.3.3.19: a namespace the service does not serve.
            _ => Err(StanzaError::new(Condition::ServiceUnavailable)),
        }
    }
}

/// The one action child of `<pubsub/>` (in `ns`) besides the companion
/// elements (`configure` of create, `options` of subscribe,
/// `publish-options`); children in other namespaces, such as an RSM
/// `<set/>`, are not actions.
fn action<'a>(
    pubsub: &'a Element,
    ns: &str,
    companions: &[&str],
) -> Result<&'a Element, StanzaError> {
    let mut actions = pubsub
        .children()
        .filter(|c| c.ns() == ns && !companions.contains(&c.name()));
    match (actions.next(), actions.next()) {
        (Some(action), None) => Ok(action),
        _ => Err(bad_request("pubsub request must have exactly one action")),
    }
}

fn parse_pubsub(pubsub: &Element, is_set: bool) -> Result<Request, StanzaError> {
    // `configure` and `options` are actions of their own only without a
    // `create` or `subscribe` to accompany.
    let has = |name: &str| pubsub.child(name, PUBSUB_NS).is_some();
    let companions: &[&str] = if has("create") {
        &["configure"]
    } else if has("subscribe") {
        &["options"]
    } else if has("publish") {
        &["publish-options"]
    } else {
        &[]
    };
    let action = action(pubsub, PUBSUB_NS, companions)?;
    let wrong_type = || bad_request("wrong IQ type for this request");
    match (action.name(), is_set) {
        ("create", true) => Ok(Request::Create {
            node: optional_node(action),
            config: match pubsub.child("configure", PUBSUB_NS) {
                Some(configure) => config_in(configure, NODE_CONFIG_FORM)?,
                None => None,
            },
        }),
        ("subscribe", true) => Ok(Request::Subscribe {
            node: required_node(action)?,
            jid: jid_attr(action, "invalid-jid")?,
            options: match pubsub
                .child("options", PUBSUB_NS)
                .map(form_in)
                .transpose()?
                .flatten()
            {
                Some(form) => Some(subscription_options_patch(&form)?),
                None => None,
            },
        }),
        ("unsubscribe", true) => Ok(Request::Unsubscribe {
            node: required_node(action)?,
            jid: jid_attr(action, "invalid-jid")?,
            subid: subid_attr(action),
        }),
        ("options", _) => {
            let node = required_node(action)?;
            let jid = jid_attr(action, "jid-required")?;
            let subid = subid_attr(action);
            if !is_set {
                return Ok(Request::OptionsGet { node, jid, subid });
            }
            let form = form_in(action)?.ok_or_else(|| {
                StanzaError::pubsub(Condition::BadRequest, "invalid-options")
                    .with_text("no options form")
            })?;
            Ok(Request::OptionsSet {
                node,
                jid,
                subid,
                options: subscription_options_patch(&form)?,
            })
        }
        ("publish", true) => parse_publish(pubsub, action),
        ("retract", true) => {
            let node = required_node(action)?;
            let item_ids: Vec<String> = action
                .children()
                .filter(|c| c.is("item", PUBSUB_NS))
                .filter_map(|c| c.attr("id").map(str::to_owned))
                .collect();
            if item_ids.is_empty() {
                // XEP-0060 §7.2.3.3
                return Err(StanzaError::pubsub(Condition::BadRequest, "item-required"));
            }
            let notify = action.attr("notify").and_then(parse_bool).unwrap_or(false);
            Ok(Request::Retract {
                node,
                item_ids,
                notify,
            })
        }
        ("items", false) => {
            let max_items = action
                .attr("max_items")
                .map(|m| {
                    m.parse()
                        .map_err(|_| bad_request("max_items is not a number"))
                })
                .transpose()?;
            Ok(Request::Items {
                node: required_node(action)?,
                max_items,
                item_ids: action
                    .children()
                    .filter(|c| c.is("item", PUBSUB_NS))
                    .filter_map(|c| c.attr("id").map(str::to_owned))
                    .collect(),
                rsm: pubsub
                    .child("set", RSM_NS)
                    .map(RsmRequest::try_from)
                    .transpose()?,
            })
        }
        ("subscriptions", false) => Ok(Request::Subscriptions {
            node: optional_node(action),
        }),
        ("affiliations", false) => Ok(Request::Affiliations {
            node: optional_node(action),
        }),
        ("default", false) => Ok(Request::DefaultOptions),
        ("create" | "subscribe" | "unsubscribe" | "publish" | "retract", false)
        | ("items" | "subscriptions" | "affiliations" | "default", true) => Err(wrong_type()),
        (other, _) => Err(StanzaError::unsupported(other)),
    }
}

fn parse_publish(pubsub: &Element, publish: &Element) -> Result<Request, StanzaError> {
    let node = required_node(publish)?;
    let mut items = publish.children().filter(|c| c.is("item", PUBSUB_NS));
    let item = items.next();
    if items.next().is_some() {
        // XEP-0060 §7.1.3.6: one item per publish request.
        return Err(
            StanzaError::pubsub(Condition::BadRequest, "invalid-payload")
                .with_text("more than one item"),
        );
    }
    let item = match item {
        Some(item) => {
            let mut payloads = item.nodes().iter().filter_map(|node| match node {
                Node::Element(root) => Some(PublishedPayload::read(root)),
                Node::Captured(captured) => Some(PublishedPayload::captured(captured)),
                Node::Text(_) | Node::Raw(_) => None,
            });
            let payload = payloads.next();
            if payloads.next().is_some() {
                // §7.1.3.6: an item has at most one payload element.
                return Err(
                    StanzaError::pubsub(Condition::BadRequest, "invalid-payload")
                        .with_text("more than one payload element"),
                );
            }
            Some(PublishedItem {
                id: item
                    .attr("id")
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned),
                payload,
            })
        }
        None => None,
    };
    let publish_options = match pubsub.child("publish-options", PUBSUB_NS) {
        Some(options) => config_in(options, PUBLISH_OPTIONS_FORM)?,
        None => None,
    };
    Ok(Request::Publish {
        node,
        item,
        publish_options,
    })
}

/// The `<item/>` of a publish request.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedItem {
    pub id: Option<String>,
    /// At most one payload element (XEP-0060 §7.1.3.6).
    pub payload: Option<PublishedPayload>,
}

/// A published payload element, read once from the request: the text a
/// client's stream parser kept, or a tree (borrowed, not copied), which is
/// serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedPayload {
    /// The text stored and delivered ([`payload::serialize`]).
    pub xml: String,
    /// Its VOEvent 2.0 header, or why it is not a VOEvent packet.
    pub voevent: Result<VoEventHeader, InvalidVoEvent>,
}

impl PublishedPayload {
    pub fn read(root: &Element) -> Self {
        PublishedPayload {
            xml: payload::serialize(root),
            voevent: voevent::validate(root),
        }
    }

    /// A payload the stream parser kept as it was sent
    /// ([`payload::is_payload_parent`]): its text is already what is
    /// stored, and its outline is all the VOEvent checks read.
    pub fn captured(captured: &Captured) -> Self {
        PublishedPayload {
            xml: captured.xml.clone(),
            voevent: voevent::validate(&captured.outline),
        }
    }
}

fn parse_owner(pubsub: &Element, is_set: bool) -> Result<Request, StanzaError> {
    let action = action(pubsub, PUBSUB_OWNER_NS, &[])?;
    match (action.name(), is_set) {
        ("configure", false) => Ok(Request::ConfigureGet {
            node: required_node(action)?,
        }),
        ("configure", true) => Ok(Request::ConfigureSet {
            node: required_node(action)?,
            config: config_in(action, NODE_CONFIG_FORM)?,
        }),
        ("default", false) => Ok(Request::DefaultConfig),
        ("delete", true) => Ok(Request::Delete {
            node: required_node(action)?,
            redirect: action
                .child("redirect", PUBSUB_OWNER_NS)
                .and_then(|r| r.attr("uri"))
                .map(str::to_owned),
        }),
        ("purge", true) => Ok(Request::Purge {
            node: required_node(action)?,
        }),
        ("subscriptions", false) => Ok(Request::OwnerSubscriptionsGet {
            node: required_node(action)?,
        }),
        ("subscriptions", true) => {
            let node = required_node(action)?;
            let mut changes = Vec::new();
            for entry in action
                .children()
                .filter(|c| c.is("subscription", PUBSUB_OWNER_NS))
            {
                let jid = jid_attr(entry, "invalid-jid")?;
                let state = match entry.attr("subscription") {
                    Some("none") => SubscriptionState::None,
                    Some("pending") => SubscriptionState::Pending,
                    Some("unconfigured") => SubscriptionState::Unconfigured,
                    Some("subscribed") => SubscriptionState::Subscribed,
                    _ => return Err(bad_request("invalid subscription state")),
                };
                changes.push(proto::SubscriptionChange {
                    jid: jid.to_string(),
                    state: state.into(),
                    subid: subid_attr(entry).unwrap_or_default(),
                });
            }
            Ok(Request::OwnerSubscriptionsSet { node, changes })
        }
        ("affiliations", false) => Ok(Request::OwnerAffiliationsGet {
            node: required_node(action)?,
        }),
        ("affiliations", true) => {
            let node = required_node(action)?;
            let mut changes = Vec::new();
            for entry in action
                .children()
                .filter(|c| c.is("affiliation", PUBSUB_OWNER_NS))
            {
                let jid = jid_attr(entry, "invalid-jid")?.to_bare();
                let affiliation = entry
                    .attr("affiliation")
                    .and_then(parse_affiliation)
                    .ok_or_else(|| bad_request("invalid affiliation"))?;
                changes.push((jid, affiliation));
            }
            Ok(Request::OwnerAffiliationsSet { node, changes })
        }
        ("default", true) | ("delete" | "purge", false) => {
            Err(bad_request("wrong IQ type for this request"))
        }
        (other, _) => Err(StanzaError::unsupported(other)),
    }
}

pub fn parse_affiliation(text: &str) -> Option<Affiliation> {
    Some(match text {
        "owner" => Affiliation::Owner,
        "publisher" => Affiliation::Publisher,
        "publish-only" => Affiliation::PublishOnly,
        "member" => Affiliation::Member,
        "none" => Affiliation::None,
        "outcast" => Affiliation::Outcast,
        _ => return None,
    })
}

/// An owner's answer to a subscription authorization request (XEP-0060
/// §8.6), submitted as a data form in a `<message/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationAnswer {
    pub node: String,
    pub jid: Jid,
    pub subid: Option<String>,
    pub allow: bool,
}

impl AuthorizationAnswer {
    /// Reads the answer from a message; `Ok(None)` when the message carries
    /// no authorization form (it is not for the pubsub service to answer).
    pub fn from_message(message: &Element) -> Result<Option<Self>, StanzaError> {
        let Some(x) = message.child("x", DATA_NS) else {
            return Ok(None);
        };
        let form = SubmittedForm::parse(x)?;
        if form.form_type.as_deref() != Some(SUBSCRIBE_AUTHORIZATION_FORM) {
            return Ok(None);
        }
        let node = form
            .value("pubsub#node")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| StanzaError::pubsub(Condition::BadRequest, "nodeid-required"))?;
        let jid = form
            .value("pubsub#subscriber_jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(|| StanzaError::pubsub(Condition::BadRequest, "invalid-jid"))?;
        let allow = form
            .value("pubsub#allow")
            .and_then(parse_bool)
            .ok_or_else(|| bad_request("pubsub#allow must be a boolean"))?;
        Ok(Some(AuthorizationAnswer {
            node: node.to_owned(),
            jid,
            subid: form
                .value("pubsub#subid")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            allow,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iq(kind: &str, child: &str) -> Element {
        Element::new("iq", "jabber:client")
            .with_attr("type", kind)
            .with_child(payload::parse(child).unwrap())
    }

    #[test]
    fn publish_with_options_is_typed() {
        let request = Request::try_from(&iq(
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item id='i'><p xmlns='urn:p'/></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#access_model'><value>presence</value></field></x></publish-options></pubsub>",
        ))
        .unwrap();
        let Request::Publish {
            node,
            item: Some(item),
            publish_options,
        } = request
        else {
            panic!("not a publish with an item: {request:?}");
        };
        assert_eq!((node.as_str(), item.id.as_deref()), ("n", Some("i")));
        assert_eq!(
            item.payload.map(|p| p.xml).as_deref(),
            Some("<p xmlns=\"urn:p\"/>")
        );
        assert_eq!(
            publish_options.and_then(|o| o.access_model),
            Some(crate::pubsub::model::AccessModel::Presence.into())
        );
    }

    #[test]
    fn owner_affiliations_are_typed_with_bare_jids() {
        let request = Request::try_from(&iq(
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><affiliations node='n'>\
             <affiliation jid='bob@localhost/phone' affiliation='publish-only'/></affiliations></pubsub>",
        ))
        .unwrap();
        assert_eq!(
            request,
            Request::OwnerAffiliationsSet {
                node: "n".into(),
                changes: vec![(
                    BareJid::new("bob@localhost").unwrap(),
                    Affiliation::PublishOnly
                )],
            }
        );
    }

    #[test]
    fn pubsub_without_action_is_bad_request() {
        let error = Request::try_from(&iq(
            "get",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'/>",
        ))
        .unwrap_err();
        assert_eq!(error.condition, Condition::BadRequest);
    }

    #[test]
    fn iq_with_two_children_is_bad_request() {
        let mut two = iq(
            "get",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        );
        two.push_child(Element::new("query", DISCO_ITEMS_NS));
        assert_eq!(
            Request::try_from(&two).unwrap_err().condition,
            Condition::BadRequest
        );
    }

    #[test]
    fn result_iq_is_not_a_request() {
        let error = Request::try_from(&iq(
            "result",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        ))
        .unwrap_err();
        assert_eq!(error.condition, Condition::BadRequest);
    }

    #[test]
    fn archive_query_reads_filters_and_paging() {
        let request = Request::try_from(&iq(
            "set",
            "<query xmlns='urn:xmpp:mam:2' node='n' queryid='f27'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='start'><value>1970-01-01T00:00:01Z</value></field><field var='after-id'><value>41</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>10</max></set></query>",
        ))
        .unwrap();
        assert_eq!(
            request,
            Request::ArchiveQuery(ArchiveQuery {
                node: "n".into(),
                query_id: Some("f27".into()),
                start_micros: Some(1_000_000),
                end_micros: None,
                after_id: Some(41),
                before_id: None,
                rsm: RsmRequest {
                    max: Some(10),
                    ..RsmRequest::default()
                },
            })
        );
    }
}
