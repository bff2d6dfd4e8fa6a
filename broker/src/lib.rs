//! A vomesh node.
//!
//! # Layout
//! - [`accounts`]: the durable account store (redb): usernames and their
//!   SCRAM verifiers, never passwords.
//! - [`sasl`]: SASL mechanisms (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN) as a pure
//!   exchange state machine, and per-address back-off against guessing.
//! - [`xml`]: the XML element tree stanzas are parsed into, and the
//!   incremental stream parser that builds it.
pub mod accounts;
pub mod sasl;
pub mod xml;
