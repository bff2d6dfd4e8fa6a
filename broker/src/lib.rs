//! A vomesh node.
//!
//! # Layout
//! - [`pubsub`]: the XEP-0060 publish-subscribe service as a pure state
//!   machine (replicated commands in, replies and notifications out), with
//!   XEP-0313 node archives; also the general XMPP stanza error type.
//! - [`voevent`]: VOEvent 2.0 validation and IVORN parsing.
//! - [`xml`]: the XML element tree stanzas are parsed into, and the
//!   incremental stream parser that builds it.
pub mod pubsub;
pub mod voevent;
pub mod xml;
