//! The XEP-0060 publish-subscribe service at `pubsub.<domain>`, as a pure
//! state machine: [`PubsubService::apply`] executes a replicated
//! [`Command`](vomesh_proto::pubsub::Command) and returns the reply and the
//! notifications to emit; [`PubsubService::handle_iq`] answers reads from
//! local state and turns writes into commands to propose. No I/O, no clock,
//! no randomness: time and log indices come in as arguments, so every site
//! that applies the same log reaches the same state.
//!
//! # Layout
//! - [`model`]: nodes, configuration, items, subscriptions, affiliations.
//! - [`config`]: node configuration defaults, `pubsub#node_config` and
//!   `pubsub#subscribe_options` forms, and the service limits.
//! - [`form`]: XEP-0004 data forms.
//! - [`request`]: typed requests parsed from IQ elements.
//! - [`response`]: result, notification and error elements.
//! - [`service`]: the state machine.
//! - [`archive`]: XEP-0313 queries on a node's history.
//! - [`rsm`]: XEP-0059 paging.
//! - [`payload`]: payload text kept as published.
//! - [`datetime`]: XEP-0082 timestamps.
//! - [`error`]: XMPP stanza errors (usable by the whole server).

pub mod archive;
pub mod config;
pub mod datetime;
pub mod error;
pub mod form;
pub mod model;
pub mod payload;
pub mod request;
pub mod response;
pub mod rsm;
pub mod service;

pub use config::PubsubLimits;
pub use error::{Condition, ErrorType, StanzaError};
pub use service::{
    Handled, MessageKind, Meta, Notification, Outcome, PubsubService, RequestContext,
};
