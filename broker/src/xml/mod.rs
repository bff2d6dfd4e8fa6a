//! XML for XMPP streams: an owned element tree ([`Element`]) and its
//! serializer.
mod element;

pub use element::{Attr, Element, Node, escape_into};
