//! The XMPP side of a node (RFC 6120/6121 client-to-server).
//!
//! # Layout
//! - [`session`]: one client session as a pure state machine (negotiation,
//!   SASL, binding, the IQs the server answers itself).
//! - [`outbound_queue`]: the bounded queue of stanzas waiting to be written
//!   to one connection.
//! - [`router`]: delivery of stanzas between local sessions and components.
//! - [`stanza`]: stanza kinds, IQ validation, result and error replies.
//! - [`stream_management`]: XEP-0198 acknowledgement counters.
//! - [`ns`]: the XML namespaces of the protocols above.
pub mod ns;
pub mod outbound_queue;
pub mod router;
pub mod session;
pub mod stanza;
pub mod stream_management;
