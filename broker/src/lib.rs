//! A vomesh node.
//!
//! # Layout
//! - [`xml`]: the XML element tree stanzas are parsed into, and the
//!   incremental stream parser that builds it.
pub mod xml;
