//! XML for XMPP streams: an owned element tree ([`Element`]) and its
//! serializer.
mod element;

pub use element::{Attr, Element, Node, XML_NS, escape_into};
