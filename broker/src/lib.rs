//! A vomesh node.
//!
//! # Layout
//! - [`xml`]: the XML element tree stanzas are parsed into, and the
//!   incremental stream parser that builds it.
//! - [`config`]: the TOML node configuration, its development defaults and
//!   validation.
pub mod config;
pub mod xml;
