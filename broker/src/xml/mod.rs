//! XML for XMPP streams: an owned element tree ([`Element`]) with its
//! serializer, the incremental stream parser ([`StreamParser`]) that
//! builds it from socket bytes, and [`parse_document`] for standalone
//! documents (VOEvent files and packets).
mod element;
mod parser;

pub use element::{Attr, Captured, Element, Node, XML_NS, escape_into};
pub use parser::{
    ParseError, ParserLimits, StreamEvent, StreamHeader, StreamParser, parse_document,
};
