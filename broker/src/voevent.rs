//! VOEvent 2.0 checks (IVOA Recommendation "VOEvent 2.0", schema
//! `VOEvent-v2.0.xsd`): what a pubsub node typed
//! `http://www.ivoa.net/xml/VOEvent/v2.0` requires of a payload root, and
//! IVORN parsing per the IVOA Identifiers syntax (`ivo://authority/path#local`).
//!
//! Only the root is checked — the namespace, `version`, `role` and `ivorn`
//! attributes that routing and idempotent republishing depend on, and that
//! its children are the schema's, each at most once — not the whole
//! schema: brokers forward what authors wrote.

use std::fmt;

use crate::xml::Element;

/// The VOEvent 2.0 namespace, also the `pubsub#type` of VOEvent nodes.
pub const VOEVENT_NS: &str = "http://www.ivoa.net/xml/VOEvent/v2.0";

/// The pubsub nodes that carry VOEvent streams, `voevent/<authority>/<resource>`:
/// created on first use as VOEvent nodes.
pub const VOEVENT_NODE_PREFIX: &str = "voevent/";

/// VOEvent 2.0 §2.1 (`roleValues` in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Observation,
    Prediction,
    Utility,
    Test,
}

/// A parsed IVORN: `ivo://{authority}/{resource_key}#{local_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ivorn {
    pub authority: String,
    pub resource_key: String,
    pub local_id: String,
}

impl Ivorn {
    /// Parses `ivo://authority/resource-key#local-id`. The authority is at
    /// least three characters from the IVOA Identifiers 2.0 §2.2 set, the
    /// resource key a non-empty path, the local id a non-empty URI fragment.
    pub fn parse(text: &str) -> Result<Ivorn, InvalidVoEvent> {
        let bad = |reason: &'static str| InvalidVoEvent::Ivorn {
            ivorn: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix("ivo://")
            .ok_or_else(|| bad("does not start with ivo://"))?;
        let (path, local_id) = rest
            .split_once('#')
            .ok_or_else(|| bad("has no #local-id"))?;
        let (authority, resource_key) = path
            .split_once('/')
            .ok_or_else(|| bad("has no /resource-key"))?;
        let authority_char = |c: char| c.is_ascii_alphanumeric() || "-_.~!*'()+=".contains(c);
        if authority.len() < 3
            || !authority.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !authority.chars().all(authority_char)
        {
            return Err(bad("has an invalid authority"));
        }
        let path_char = |c: char| authority_char(c) || c == '/' || c == '%';
        if resource_key.is_empty() || !resource_key.chars().all(path_char) {
            return Err(bad("has an invalid resource key"));
        }
        // RFC 3986 §3.5 fragment characters.
        let fragment_char =
            |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?%".contains(c);
        if local_id.is_empty() || !local_id.chars().all(fragment_char) {
            return Err(bad("has an invalid local id"));
        }
        Ok(Ivorn {
            authority: authority.to_owned(),
            resource_key: resource_key.to_owned(),
            local_id: local_id.to_owned(),
        })
    }

    /// The pubsub node events of this stream are published to
    /// (`voevent/<authority>/<resource-key>`, INTERFACE.md).
    pub fn pubsub_node(&self) -> String {
        format!(
            "{VOEVENT_NODE_PREFIX}{}/{}",
            self.authority, self.resource_key
        )
    }
}

impl fmt::Display for Ivorn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ivo://{}/{}#{}",
            self.authority, self.resource_key, self.local_id
        )
    }
}

/// The checked root attributes of a VOEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoEventHeader {
    pub ivorn: Ivorn,
    pub role: Role,
}

/// Why a payload is not a VOEvent 2.0 root; the text goes to the publisher
/// in the `<text/>` of the `bad-request` + `<invalid-payload/>` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidVoEvent {
    #[error("payload root is {{{ns}}}{name}, not a VOEvent in {VOEVENT_NS}")]
    NotVoEvent { ns: String, name: String },
    #[error("VOEvent version must be \"2.0\", found {0:?}")]
    Version(Option<String>),
    #[error("VOEvent role must be observation, prediction, utility or test, found {0:?}")]
    Role(String),
    #[error("VOEvent has no ivorn attribute")]
    MissingIvorn,
    #[error("VOEvent ivorn {ivorn:?} {reason}")]
    Ivorn { ivorn: String, reason: &'static str },
    #[error("VOEvent child <{0}> is not one of {CHILDREN:?}")]
    UnknownChild(String),
    #[error("VOEvent has more than one <{0}>")]
    RepeatedChild(String),
}

/// The children a VOEvent may have, each at most once, in any order
/// (`xs:all` of the VOEvent element in `VOEvent-v2.0.xsd`); they are
/// unqualified (the schema's elementFormDefault).
const CHILDREN: [&str; 8] = [
    "Who",
    "What",
    "WhereWhen",
    "How",
    "Why",
    "Citations",
    "Description",
    "Reference",
];

/// Checks the root of a VOEvent 2.0 packet and returns its IVORN and role.
/// An absent `role` is `observation`, the schema's default.
pub fn validate(root: &Element) -> Result<VoEventHeader, InvalidVoEvent> {
    if !root.is("VOEvent", VOEVENT_NS) {
        return Err(InvalidVoEvent::NotVoEvent {
            ns: root.ns().to_owned(),
            name: root.name().to_owned(),
        });
    }
    match root.attr("version") {
        Some(v) if v.trim() == "2.0" => {}
        other => return Err(InvalidVoEvent::Version(other.map(str::to_owned))),
    }
    let role = match root.attr("role").map(str::trim) {
        None | Some("observation") => Role::Observation,
        Some("prediction") => Role::Prediction,
        Some("utility") => Role::Utility,
        Some("test") => Role::Test,
        Some(other) => return Err(InvalidVoEvent::Role(other.to_owned())),
    };
    let ivorn = Ivorn::parse(root.attr("ivorn").ok_or(InvalidVoEvent::MissingIvorn)?)?;
    let mut seen = [false; CHILDREN.len()];
    for child in root.children() {
        let position = CHILDREN
            .iter()
            .position(|name| child.name() == *name && child.ns().is_empty())
            .ok_or_else(|| InvalidVoEvent::UnknownChild(child.name().to_owned()))?;
        if std::mem::replace(&mut seen[position], true) {
            return Err(InvalidVoEvent::RepeatedChild(child.name().to_owned()));
        }
    }
    Ok(VoEventHeader { ivorn, role })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::payload;

    const SWIFT: &str = include_str!("../tests/data/voevents/SWIFT_bat_position_v2.0_example.xml");
    const GAIA: &str = include_str!("../tests/data/voevents/Gaia16aac.xml");

    fn root(text: &str) -> Element {
        payload::parse(text).expect("sample parses")
    }

    #[test]
    fn sample_events_are_valid() {
        let swift = validate(&root(SWIFT)).unwrap();
        assert_eq!(
            swift.ivorn.to_string(),
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729"
        );
        assert_eq!(swift.role, Role::Observation);
        assert_eq!(swift.ivorn.pubsub_node(), "voevent/nasa.gsfc.gcn/SWIFT");
        let gaia = validate(&root(GAIA)).unwrap();
        assert_eq!(gaia.ivorn.local_id, "Gaia16aac");
    }

    fn voevent(attrs: &[(&str, &str)]) -> Element {
        attrs
            .iter()
            .fold(Element::new("VOEvent", VOEVENT_NS), |e, (k, v)| {
                e.with_attr(k, *v)
            })
    }

    #[test]
    fn wrong_namespace_is_rejected() {
        let error = validate(&Element::new(
            "VOEvent",
            "http://www.ivoa.net/xml/VOEvent/v1.1",
        ))
        .unwrap_err();
        assert!(matches!(error, InvalidVoEvent::NotVoEvent { .. }));
    }

    #[test]
    fn version_must_be_2_0() {
        let error =
            validate(&voevent(&[("version", "1.1"), ("ivorn", "ivo://a.b/c#d")])).unwrap_err();
        assert_eq!(error, InvalidVoEvent::Version(Some("1.1".into())));
        let error = validate(&voevent(&[("ivorn", "ivo://a.b/c#d")])).unwrap_err();
        assert_eq!(error, InvalidVoEvent::Version(None));
    }

    #[test]
    fn unknown_role_is_rejected_and_absent_role_is_observation() {
        let error = validate(&voevent(&[
            ("version", "2.0"),
            ("role", "rumour"),
            ("ivorn", "ivo://a.b/c#d"),
        ]))
        .unwrap_err();
        assert_eq!(error, InvalidVoEvent::Role("rumour".into()));
        let ok = validate(&voevent(&[("version", "2.0"), ("ivorn", "ivo://a.b/c#d")])).unwrap();
        assert_eq!(ok.role, Role::Observation);
        let ok = validate(&voevent(&[
            ("version", "2.0"),
            ("role", "test"),
            ("ivorn", "ivo://a.b/c#d"),
        ]))
        .unwrap();
        assert_eq!(ok.role, Role::Test);
    }

    #[test]
    fn children_are_the_schema_s_each_at_most_once() {
        let valid = || voevent(&[("version", "2.0"), ("ivorn", "ivo://a.b/c#d")]);
        let ok = valid()
            .with_child(Element::new("What", ""))
            .with_child(Element::new("Who", ""));
        assert!(validate(&ok).is_ok());
        let unknown = valid().with_child(Element::new("Whence", ""));
        assert_eq!(
            validate(&unknown).unwrap_err(),
            InvalidVoEvent::UnknownChild("Whence".into())
        );
        let qualified = valid().with_child(Element::new("Who", VOEVENT_NS));
        assert!(matches!(
            validate(&qualified),
            Err(InvalidVoEvent::UnknownChild(_))
        ));
        let twice = valid()
            .with_child(Element::new("Why", ""))
            .with_child(Element::new("Why", ""));
        assert_eq!(
            validate(&twice).unwrap_err(),
            InvalidVoEvent::RepeatedChild("Why".into())
        );
    }

    #[test]
    fn malformed_ivorns_are_rejected() {
        for bad in [
            "http://a.b/c#d",
            "ivo://a.b/c",
            "ivo://a.b#d",
            "ivo://ab/c#d",
            "ivo://a.b/#d",
            "ivo://a.b/c#",
            "ivo://a b/c#d",
            "ivo://a.b/c#d e",
        ] {
            let error = validate(&voevent(&[("version", "2.0"), ("ivorn", bad)])).unwrap_err();
            assert!(
                matches!(error, InvalidVoEvent::Ivorn { .. }),
                "{bad}: {error}"
            );
        }
        let error = validate(&voevent(&[("version", "2.0")])).unwrap_err();
        assert_eq!(error, InvalidVoEvent::MissingIvorn);
    }
}
