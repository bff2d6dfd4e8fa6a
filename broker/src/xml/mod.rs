//! XML for XMPP streams: an owned element tree ([`Element`]) with its
//! serializer, and the incremental stream parser ([`StreamParser`]) that
//! builds it from socket bytes.
mod element;
mod parser;

pub use element::{Attr, Element, Node, XML_NS};
pub use parser::{ParseError, ParserLimits, StreamEvent, StreamHeader, StreamParser};
