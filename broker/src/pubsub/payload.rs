//! Item payloads are stored and delivered as the text they were published
//! as (XEP-0060 §7.1: the subscriber gets what the publisher sent). A
//! client's stream parser keeps that text as it arrives
//! ([`is_payload_parent`]); a payload that arrived as a tree (a VTP packet,
//! a file given to `vomesh publish`) is [`serialize`]d. The replicated
//! `Publish` command carries the text, notifications and archive results
//! splice it in unchanged, and only an XEP-0060 items retrieval, whose
//! reply is an [`Element`] tree, reads it back into elements.

use std::cell::OnceCell;

use quick_xml::events::Event;
use quick_xml::name::{PrefixDeclaration, ResolveResult};
use quick_xml::reader::NsReader;

use crate::pubsub::request::PUBSUB_NS;
use crate::xml::{Attr, Element};

/// Bound as the default namespace of the serialization scope, so every
/// unprefixed element declares its namespace, including `xmlns=''` for
/// unqualified ones: the text is then correct wherever it is inserted,
/// e.g. inside `<item xmlns='http://jabber.org/protocol/pubsub#event'>`.
/// A single space is not a URI, so no parsed element is in it.
const NO_DEFAULT_NS: &str = " ";

/// The payload text stored and delivered for a payload read as a tree:
/// self-contained (every namespace it uses is declared within it), content
/// unchanged.
pub fn serialize(payload: &Element) -> String {
    payload.to_stream_xml(NO_DEFAULT_NS)
}

/// The elements whose children are published payloads: a client's
/// stream parser keeps those children as they were sent
/// ([`crate::xml::StreamParser::capture_children_of`]), since they are
/// stored and delivered as text and never read as a tree.
pub fn is_payload_parent(element: &Element) -> bool {
    element.is("item", PUBSUB_NS)
}

/// A payload to find among stored ones as a document, written alike or
/// not: a packet relayed over VTP is stored as serialized from its tree
/// ([`serialize`]), the same packet published over XMPP as its publisher
/// wrote it, with its own quotes, prefixes and references. It is parsed
/// at most once, however many stored payloads it is compared with.
pub struct Document<'a> {
    text: &'a str,
    tree: OnceCell<Option<Element>>,
}

impl<'a> Document<'a> {
    pub fn new(text: &'a str) -> Self {
        Document {
            text,
            tree: OnceCell::new(),
        }
    }

    /// True when `stored` is this document: the same bytes, or the same
    /// names, namespaces, attributes and text ([`Element::same_content`]).
    pub fn is(&self, stored: &str) -> bool {
        if stored == self.text {
            return true;
        }
        let Some(tree) = self.tree.get_or_init(|| parse(self.text).ok()) else {
            return false;
        };
        parse(stored).is_ok_and(|stored| stored.same_content(tree))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("stored payload is not well-formed XML: {0}")]
    Xml(#[from] quick_xml::Error),
    #[error("stored payload is not well-formed XML: {0}")]
    Encoding(#[from] quick_xml::encoding::EncodingError),
    #[error("stored payload attribute is malformed: {0}")]
    Attr(#[from] quick_xml::events::attributes::AttrError),
    #[error("stored payload is not a single element")]
    NotOneElement,
    #[error("stored payload uses an undeclared prefix")]
    UnboundPrefix,
}

/// Reads payload text written by [`serialize`] back into an element tree,
/// without recursion (depth is bounded by the heap, not the stack).
pub fn parse(text: &str) -> Result<Element, PayloadError> {
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let (resolved, event) = reader.read_resolved_event()?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.into_inner()).into_owned(),
            ResolveResult::Unbound => String::new(),
            ResolveResult::Unknown(_) => return Err(PayloadError::UnboundPrefix),
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let name = start.name();
                let prefix = name
                    .prefix()
                    .map(|p| String::from_utf8_lossy(p.into_inner()).into_owned());
                let local = String::from_utf8_lossy(name.local_name().into_inner()).into_owned();
                let mut declared = Vec::new();
                let mut attrs = Vec::new();
                for attr in start.attributes() {
                    let attr = attr?;
                    let value = attr.unescape_value()?.into_owned();
                    if let Some(binding) = attr.key.as_namespace_binding() {
                        let prefix = match binding {
                            PrefixDeclaration::Default => None,
                            PrefixDeclaration::Named(p) => {
                                Some(String::from_utf8_lossy(p).into_owned())
                            }
                        };
                        declared.push((prefix, value));
                        continue;
                    }
                    let (attr_ns, attr_local) = reader.resolve_attribute(attr.key);
                    let attr_ns = match attr_ns {
                        ResolveResult::Bound(ns) => {
                            String::from_utf8_lossy(ns.into_inner()).into_owned()
                        }
                        ResolveResult::Unbound => String::new(),
                        ResolveResult::Unknown(_) => return Err(PayloadError::UnboundPrefix),
                    };
                    attrs.push(Attr {
                        prefix: attr
                            .key
                            .prefix()
                            .map(|p| String::from_utf8_lossy(p.into_inner()).into_owned()),
                        ns: attr_ns,
                        name: String::from_utf8_lossy(attr_local.into_inner()).into_owned(),
                        value,
                    });
                }
                let element = Element::parsed(prefix, local, ns.into(), declared, attrs);
                if matches!(event, Event::Start(_)) {
                    stack.push(element);
                } else {
                    close(&mut stack, &mut root, element)?;
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or(PayloadError::NotOneElement)?;
                close(&mut stack, &mut root, element)?;
            }
            Event::Text(text) => push_text(&mut stack, &text.xml_content()?)?,
            Event::CData(data) => push_text(&mut stack, &data.decode()?)?,
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref()? {
                    Some(c) => c.to_string(),
                    None => match reference.decode()?.as_ref() {
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "amp" => "&".to_owned(),
                        "quot" => "\"".to_owned(),
                        "apos" => "'".to_owned(),
                        _ => return Err(PayloadError::NotOneElement),
                    },
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Eof => break,
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(PayloadError::NotOneElement);
    }
    root.ok_or(PayloadError::NotOneElement)
}

fn close(
    stack: &mut [Element],
    root: &mut Option<Element>,
    element: Element,
) -> Result<(), PayloadError> {
    match stack.last_mut() {
        Some(parent) => parent.push_child(element),
        None if root.is_none() => *root = Some(element),
        None => return Err(PayloadError::NotOneElement),
    }
    Ok(())
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), PayloadError> {
    match stack.last_mut() {
        Some(parent) => parent.push_text(text),
        // Whitespace around the root element is not content.
        None if text.trim().is_empty() => {}
        None => return Err(PayloadError::NotOneElement),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unqualified_children_stay_unqualified_inside_any_parent() {
        let voevent = parse(
            "<voe:VOEvent xmlns:voe=\"urn:v\" ivorn=\"ivo://a/b#c\"><Who><Date>x &amp; y</Date></Who></voe:VOEvent>",
        )
        .unwrap();
        let text = serialize(&voevent);
        assert_eq!(
            text,
            "<voe:VOEvent xmlns:voe=\"urn:v\" ivorn=\"ivo://a/b#c\"><Who xmlns=\"\"><Date>x &amp; y</Date></Who></voe:VOEvent>"
        );
        let wrapped = Element::new("item", "http://jabber.org/protocol/pubsub#event")
            .with_child(voevent.clone());
        let reparsed = parse(&wrapped.to_xml()).unwrap();
        assert_eq!(
            reparsed
                .children()
                .next()
                .map(|c| c.children().next().map(|w| w.ns().to_owned())),
            Some(Some(String::new()))
        );
    }

    #[test]
    fn serialization_round_trips() {
        let text = "<entry xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"en\"><title type=\"text\">a\tb &lt;c&gt;</title><x:y xmlns:x=\"urn:x\" x:z=\"1\"/></entry>";
        let element = parse(text).unwrap();
        assert_eq!(serialize(&element), text);
        assert_eq!(parse(&serialize(&element)).unwrap(), element);
    }

    #[test]
    fn one_document_however_it_is_written() {
        let stored = "<v:e xmlns:v=\"urn:v\" a=\"1\" b=\"x&amp;y\"><Who xmlns=\"\">t</Who></v:e>";
        for same in [
            stored,
            "<e xmlns='urn:v' b='x&#38;y' a='1'><Who xmlns=''>t</Who></e>",
            "<w:e xmlns:w='urn:v' xmlns='' a='1' b='x&amp;y'><Who><![CDATA[t]]></Who></w:e>",
        ] {
            assert!(Document::new(same).is(stored), "{same}");
        }
        for different in [
            "<v:e xmlns:v='urn:v' a='1' b='x&amp;y'><Who xmlns=''>u</Who></v:e>",
            "<v:e xmlns:v='urn:v' a='2' b='x&amp;y'><Who xmlns=''>t</Who></v:e>",
            "<v:e xmlns:v='urn:w' a='1' b='x&amp;y'><Who xmlns=''>t</Who></v:e>",
            "<v:e xmlns:v='urn:v' a='1' b='x&amp;y'><Who xmlns='urn:v'>t</Who></v:e>",
            "<v:e xmlns:v='urn:v' a='1'><Who xmlns=''>t</Who></v:e>",
            "<v:e xmlns:v='urn:v' a='1' b='x&amp;y'><Who xmlns=''>t</Who><Who xmlns=''/></v:e>",
            "<v:e xmlns:v='urn:v' a='1' b='x&amp;y'><Who xmlns=''>t</Who>",
        ] {
            assert!(!Document::new(different).is(stored), "{different}");
        }
    }

    #[test]
    fn two_roots_are_rejected() {
        assert!(matches!(
            parse("<a/><b/>"),
            Err(PayloadError::NotOneElement)
        ));
        assert!(matches!(
            parse("<a>"),
            Err(PayloadError::NotOneElement) | Err(PayloadError::Xml(_))
        ));
        assert!(matches!(parse("<p:a/>"), Err(PayloadError::UnboundPrefix)));
    }
}
