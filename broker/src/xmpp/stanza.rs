//! Stanza-level helpers shared by everything that answers stanzas: the three
//! stanza kinds, IQ validation, and building result and error replies (with
//! the stanza error type of [`crate::pubsub::error`], re-exported here).

use super::ns;
pub use crate::pubsub::error::{Condition, ErrorType, StanzaError};
use crate::xml::Element;

/// The three stanza kinds of RFC 6120 §8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    /// The kind of a top-level element in the `jabber:client` namespace.
    pub fn of(element: &Element) -> Option<StanzaKind> {
        if element.ns() != ns::CLIENT {
            return None;
        }
        match element.name() {
            "message" => Some(StanzaKind::Message),
            "presence" => Some(StanzaKind::Presence),
            "iq" => Some(StanzaKind::Iq),
            _ => None,
        }
    }
}

/// An IQ request (`get`/`set`) checked against RFC 6120 §8.2.3: an `id`, and
/// exactly one payload child.
pub struct IqRequest<'a> {
    pub is_set: bool,
    pub payload: &'a Element,
}

/// What an incoming IQ is.
pub enum IqKind<'a> {
    Request(IqRequest<'a>),
    /// `result` or `error`: a response to something this entity asked.
    Response,
}

/// Classifies an IQ, or says why it is malformed (answered `bad-request`).
pub fn classify_iq(iq: &Element) -> Result<IqKind<'_>, StanzaError> {
    if iq.attr("id").is_none_or(str::is_empty) {
        return Err(bad_request("an IQ needs an id (RFC 6120 §8.2.3)"));
    }
    let is_set = match iq.attr("type") {
        Some("get") => false,
        Some("set") => true,
        Some("result") | Some("error") => return Ok(IqKind::Response),
        _ => {
            return Err(bad_request("IQ type must be get, set, result or error"));
        }
    };
    let mut children = iq.children();
    match (children.next(), children.next()) {
        (Some(payload), None) => Ok(IqKind::Request(IqRequest { is_set, payload })),
        _ => Err(bad_request(
            "an IQ get or set carries exactly one child element",
        )),
    }
}

/// `bad-request` with an explanation.
pub fn bad_request(text: &str) -> StanzaError {
    StanzaError::new(Condition::BadRequest).with_text(text)
}

/// The `<iq type='result'/>` answering `request`, from `from`.
pub fn iq_result(request: &Element, from: &str, payload: Option<Element>) -> Element {
    let mut result = reply_envelope(request, from).with_attr("type", "result");
    if let Some(payload) = payload {
        result.push_child(payload);
    }
    result
}

/// The error reply to any stanza (RFC 6120 §8.3.1): same name and id,
/// addresses swapped, type `error`, the original payload echoed back for IQs.
pub fn error_reply(stanza: &Element, from: &str, error: &StanzaError) -> Element {
    error_reply_with(stanza, from, error.to_element())
}

/// [`error_reply`] with an `<error/>` element built elsewhere (e.g. the
/// answer of a command committed at another site).
pub fn error_reply_with(stanza: &Element, from: &str, error: Element) -> Element {
    let mut reply = reply_envelope(stanza, from).with_attr("type", "error");
    if StanzaKind::of(stanza) == Some(StanzaKind::Iq)
        && let Some(payload) = stanza.children().next()
    {
        reply.push_child(payload.clone());
    }
    reply.push_child(error);
    reply
}

/// `<NAME id=… from=FROM to=(stanza's from)/>` with the stanza's name.
fn reply_envelope(stanza: &Element, from: &str) -> Element {
    let mut reply = Element::new(stanza.name(), ns::CLIENT);
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    reply.set_attr("from", from);
    if let Some(to) = stanza.attr("from") {
        reply.set_attr("to", to);
    }
    reply
}

/// True for stanzas that must never be answered with an error, to avoid
/// error loops (RFC 6120 §8.3.1).
pub fn is_error(stanza: &Element) -> bool {
    stanza.attr("type") == Some("error")
}

/// The defined condition of an `<error/>` element (`conflict`, …).
pub fn defined_condition(error: &Element) -> Option<&str> {
    error
        .children()
        .find(|c| c.ns() == ns::STANZA_ERRORS && c.name() != "text")
        .map(Element::name)
}

/// What an `<error/>` element says went wrong, most specific first: its
/// application-specific condition (RFC 6120 §8.3.4, e.g. XEP-0060's
/// `invalid-payload`), else its defined condition.
pub fn error_condition(error: &Element) -> Option<&str> {
    error
        .children()
        .find(|c| c.ns() != ns::STANZA_ERRORS && c.ns() != ns::CLIENT)
        .map(Element::name)
        .or_else(|| defined_condition(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_application_condition_of_an_error_is_the_more_specific() {
        let error = Element::new("error", ns::CLIENT)
            .with_child(Element::new("not-acceptable", ns::STANZA_ERRORS))
            .with_child(Element::new("text", ns::STANZA_ERRORS))
            .with_child(Element::new(
                "invalid-payload",
                "http://jabber.org/protocol/pubsub#errors",
            ));
        assert_eq!(defined_condition(&error), Some("not-acceptable"));
        assert_eq!(error_condition(&error), Some("invalid-payload"));
        let plain = Element::new("error", ns::CLIENT)
            .with_child(Element::new("forbidden", ns::STANZA_ERRORS));
        assert_eq!(error_condition(&plain), Some("forbidden"));
    }

    fn iq(kind: &str) -> Element {
        Element::new("iq", ns::CLIENT)
            .with_attr("id", "1")
            .with_attr("type", kind)
            .with_attr("from", "a@localhost/r")
    }

    #[test]
    fn iq_get_with_one_child_is_a_request() {
        let ping = iq("get").with_child(Element::new("ping", ns::PING));
        assert!(matches!(
            classify_iq(&ping),
            Ok(IqKind::Request(IqRequest { is_set: false, .. }))
        ));
    }

    #[test]
    fn iq_without_child_or_id_is_bad_request() {
        let empty = iq("get");
        assert_eq!(
            classify_iq(&empty).err().map(|e| e.condition),
            Some(Condition::BadRequest)
        );
        let mut no_id = iq("get").with_child(Element::new("ping", ns::PING));
        no_id.remove_attr("id");
        assert_eq!(
            classify_iq(&no_id).err().map(|e| e.condition),
            Some(Condition::BadRequest)
        );
    }

    #[test]
    fn error_reply_swaps_addresses_and_echoes_payload() {
        let request = iq("get").with_child(Element::new("query", "urn:example"));
        let reply = error_reply(
            &request,
            "localhost",
            &StanzaError::new(Condition::ServiceUnavailable),
        );
        assert_eq!(
            reply.to_stream_xml(ns::CLIENT),
            "<iq id=\"1\" from=\"localhost\" to=\"a@localhost/r\" type=\"error\">\
             <query xmlns=\"urn:example\"/>\
             <error type=\"cancel\"><service-unavailable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"
        );
    }
}
