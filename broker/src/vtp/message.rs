//! VTP messages: what a peer sent (a VOEvent or a Transport message), and
//! the Transport messages this broker sends, as in the IVOA VOEvent
//! Transport Protocol 2.0 §4 and `transport-1.1.xsd`.
//!
//! Messages are built as text, in the shape Comet (the reference
//! implementation) writes them: a `trn:`-prefixed root in the Transport
//! namespace with unqualified children `Origin`, `Response`, `TimeStamp`,
//! `Meta`, in the schema's order.

use crate::pubsub::datetime;
use crate::voevent::VOEVENT_NS;
use crate::xml::{Element, ParseError, ParserLimits, escape_into, parse_document};

/// The Transport namespace of VTP 2.0.
pub const TRANSPORT_NS: &str = "http://www.telescope-networks.org/xml/Transport/v1.1";

/// Namespaces accepted as Transport: the Recommendation's, and the two that
/// circulate in deployed brokers' schemaLocation hints.
const TRANSPORT_NAMESPACES: [&str; 3] = [
    TRANSPORT_NS,
    "http://telescope-networks.org/schema/Transport/v1.1",
    "http://www.telescope-networks.org/schema/Transport/v1.1",
];

/// The XML declaration opening every message sent.
pub const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// The `role` of a Transport message (`roleType` in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    IAmAlive,
    Authenticate,
    Ack,
    Nak,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::IAmAlive => "iamalive",
            Role::Authenticate => "authenticate",
            Role::Ack => "ack",
            Role::Nak => "nak",
        }
    }
}

/// A received Transport message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub role: Role,
    /// `Origin`: the sender's IVORN (iamalive, authenticate) or the event
    /// acknowledged (ack, nak).
    pub origin: Option<String>,
    /// `Response`: who answers.
    pub response: Option<String>,
    /// `Meta/Result`: a nak's reason.
    pub result: Option<String>,
    /// `Meta/Param[@name='xpath-filter']/@value` of a subscriber's
    /// `authenticate` answer: the events it asks for (Comet's convention).
    pub filters: Vec<String>,
}

/// What a peer sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Transport(Transport),
    /// A VOEvent packet (its root; the caller keeps the bytes).
    VoEvent(Element),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MessageError {
    #[error(transparent)]
    Xml(#[from] ParseError),
    #[error("Transport message role {0:?} is not iamalive, authenticate, ack or nak")]
    Role(Option<String>),
    #[error("root element {{{ns}}}{name} is neither a VOEvent nor a VTP Transport message")]
    Root { ns: String, name: String },
}

/// Parses one message body. Entities and DOCTYPEs are refused by the
/// parser: bodies come from untrusted peers.
pub fn parse(body: &[u8], limits: ParserLimits) -> Result<Incoming, MessageError> {
    let root = parse_document(body, limits)?;
    if root.name() == "VOEvent" && root.ns() == VOEVENT_NS {
        return Ok(Incoming::VoEvent(root));
    }
    if root.name() != "Transport" || !TRANSPORT_NAMESPACES.contains(&root.ns()) {
        return Err(MessageError::Root {
            ns: root.ns().to_owned(),
            name: root.name().to_owned(),
        });
    }
    let role = match root.attr("role").map(str::trim) {
        Some("iamalive") => Role::IAmAlive,
        Some("authenticate") => Role::Authenticate,
        Some("ack") => Role::Ack,
        Some("nak") => Role::Nak,
        other => return Err(MessageError::Role(other.map(str::to_owned))),
    };
    // Children are unqualified in the schema; some writers qualify them.
    let text = |name: &str| {
        root.children()
            .find(|c| c.name() == name)
            .map(|c| c.text().trim().to_owned())
    };
    let meta = root.children().find(|c| c.name() == "Meta");
    let result = meta
        .and_then(|meta| meta.children().find(|c| c.name() == "Result"))
        .map(|r| r.text().trim().to_owned());
    let filters = meta
        .into_iter()
        .flat_map(Element::children)
        .filter(|c| c.name() == "Param" && c.attr("name") == Some("xpath-filter"))
        .filter_map(|param| param.attr("value").map(str::to_owned))
        .collect();
    Ok(Incoming::Transport(Transport {
        role,
        origin: text("Origin"),
        response: text("Response"),
        result,
        filters,
    }))
}

/// A Transport message of `role`, stamped `now_micros`.
fn transport(
    role: Role,
    origin: &str,
    response: Option<&str>,
    result: Option<&str>,
    now_micros: i64,
) -> Vec<u8> {
    let mut out = String::with_capacity(384);
    out.push_str(DECLARATION);
    out.push_str("<trn:Transport xmlns:trn=\"");
    out.push_str(TRANSPORT_NS);
    out.push_str("\" version=\"1.0\" role=\"");
    out.push_str(role.as_str());
    out.push_str("\"><Origin>");
    escape_into(&mut out, origin, false);
    out.push_str("</Origin>");
    if let Some(response) = response {
        out.push_str("<Response>");
        escape_into(&mut out, response, false);
        out.push_str("</Response>");
    }
    out.push_str("<TimeStamp>");
    out.push_str(&datetime::format_micros(now_micros));
    out.push_str("</TimeStamp>");
    if let Some(result) = result {
        out.push_str("<Meta><Result>");
        escape_into(&mut out, result, false);
        out.push_str("</Result></Meta>");
    }
    out.push_str("</trn:Transport>");
    out.into_bytes()
}

/// A broker's periodic liveness message (Origin: the broker).
pub fn iamalive(local_ivo: &str, now_micros: i64) -> Vec<u8> {
    transport(Role::IAmAlive, local_ivo, None, None, now_micros)
}

/// A subscriber's answer to `iamalive` from the broker `remote_ivo`.
pub fn iamalive_response(local_ivo: &str, remote_ivo: &str, now_micros: i64) -> Vec<u8> {
    transport(
        Role::IAmAlive,
        remote_ivo,
        Some(local_ivo),
        None,
        now_micros,
    )
}

/// A broker's request that a new subscriber name itself (and its filters),
/// as Comet sends on every new connection.
pub fn authenticate(local_ivo: &str, now_micros: i64) -> Vec<u8> {
    transport(Role::Authenticate, local_ivo, None, None, now_micros)
}

/// A subscriber's answer to `authenticate`: it names itself, asks for no
/// filters.
pub fn authenticate_response(local_ivo: &str, remote_ivo: &str, now_micros: i64) -> Vec<u8> {
    transport(
        Role::Authenticate,
        remote_ivo,
        Some(local_ivo),
        None,
        now_micros,
    )
}

/// The receipt of the event `ivorn`.
pub fn ack(local_ivo: &str, ivorn: &str, now_micros: i64) -> Vec<u8> {
    transport(Role::Ack, ivorn, Some(local_ivo), None, now_micros)
}

/// The refusal of the event `ivorn` (empty when it had none), with why.
pub fn nak(local_ivo: &str, ivorn: &str, reason: &str, now_micros: i64) -> Vec<u8> {
    transport(Role::Nak, ivorn, Some(local_ivo), Some(reason), now_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParserLimits = ParserLimits {
        stanza_bytes_max: 1 << 20,
        depth_max: 64,
        attributes_max: 64,
    };
    const T: i64 = 1_764_000_000_000_000;

    fn transport_of(body: &[u8]) -> Transport {
        match parse(body, LIMITS).unwrap() {
            Incoming::Transport(t) => t,
            other => panic!("not a Transport message: {other:?}"),
        }
    }

    #[test]
    fn an_ack_names_the_event_and_the_acknowledging_broker() {
        let ack = ack("ivo://site/vomesh", "ivo://a.b/c#d&e", T);
        let text = String::from_utf8(ack.clone()).unwrap();
        assert!(text.starts_with(DECLARATION), "{text}");
        assert!(text.contains("<Origin>ivo://a.b/c#d&amp;e</Origin><Response>ivo://site/vomesh</Response><TimeStamp>2025-11-24T16:00:00.000000Z</TimeStamp>"), "{text}");
        assert_eq!(
            transport_of(&ack),
            Transport {
                role: Role::Ack,
                origin: Some("ivo://a.b/c#d&e".into()),
                response: Some("ivo://site/vomesh".into()),
                result: None,
                filters: Vec::new(),
            }
        );
    }

    #[test]
    fn a_nak_carries_its_reason_in_meta_result() {
        let nak = transport_of(&nak("ivo://s/v", "ivo://a.b/c#d", "not <allowed>", T));
        assert_eq!(nak.role, Role::Nak);
        assert_eq!(nak.result.as_deref(), Some("not <allowed>"));
    }

    #[test]
    fn every_accepted_namespace_is_a_transport_message() {
        for ns in TRANSPORT_NAMESPACES {
            let body = format!(
                "<?xml version='1.0'?><t:Transport xmlns:t='{ns}' role='iamalive' version='1.0'><Origin>ivo://x.y/z</Origin><TimeStamp>2025-01-01T00:00:00Z</TimeStamp></t:Transport>"
            );
            let message = transport_of(body.as_bytes());
            assert_eq!(message.role, Role::IAmAlive);
            assert_eq!(message.origin.as_deref(), Some("ivo://x.y/z"));
        }
    }

    #[test]
    fn comet_authenticate_response_names_the_subscriber() {
        // As comet.protocol.messages.authenticateresponse writes it.
        let body = br#"<?xml version='1.0' encoding='UTF-8'?>
<trn:Transport xmlns:trn="http://www.telescope-networks.org/xml/Transport/v1.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.0" xsi:schemaLocation="http://telescope-networks.org/schema/Transport/v1.1 http://www.telescope-networks.org/schema/Transport-v1.1.xsd" role="authenticate">
  <Origin>ivo://site/vomesh</Origin>
  <Response>ivo://comet/broker</Response>
  <TimeStamp>2025-01-01T00:00:00Z</TimeStamp>
  <Meta><Param name="xpath-filter" value="//Param[@name='SC_Lat']"/></Meta>
</trn:Transport>"#;
        let message = transport_of(body);
        assert_eq!(message.role, Role::Authenticate);
        assert_eq!(message.response.as_deref(), Some("ivo://comet/broker"));
        assert_eq!(message.filters, ["//Param[@name='SC_Lat']"]);
    }

    #[test]
    fn a_voevent_is_returned_as_its_root() {
        let body = br#"<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" version="2.0" role="test" ivorn="ivo://a.b/c#d"/>"#;
        assert!(matches!(parse(body, LIMITS), Ok(Incoming::VoEvent(_))));
    }

    #[test]
    fn unknown_roots_and_roles_are_errors() {
        assert!(matches!(
            parse(b"<x/>", LIMITS),
            Err(MessageError::Root { .. })
        ));
        let body = format!("<Transport xmlns='{TRANSPORT_NS}' role='hello' version='1.0'/>");
        assert_eq!(
            parse(body.as_bytes(), LIMITS),
            Err(MessageError::Role(Some("hello".into())))
        );
        assert!(matches!(
            parse(b"<a><b></a>", LIMITS),
            Err(MessageError::Xml(_))
        ));
    }

    #[test]
    fn entities_are_refused() {
        let body = b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>";
        assert!(matches!(parse(body, LIMITS), Err(MessageError::Xml(_))));
    }
}
