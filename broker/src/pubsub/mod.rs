//! The XEP-0060 publish-subscribe service at `pubsub.<domain>`, as a pure
//! state machine: [`PubsubService::apply`] executes a replicated
//! [`Command`](vomesh_proto::pubsub::Command) and returns the reply and the
//! notifications to emit; [`PubsubService::handle_iq`] answers reads from
//! local state and turns writes into commands to propose. No I/O, no clock,
//! no randomness: time and log indices come in as arguments, so every site
//! that applies the same log reaches the same state.
//!
//! # Driving the service
//! - An IQ `get`/`set` to the service: [`PubsubService::handle_iq`] with the
//!   sender, the current time and the site's [`RequestContext`]. The
//!   answer is [`Handled::Reply`] (send the IQ result or error now),
//!   [`Handled::Archive`] (send the XEP-0313 result messages, then the IQ
//!   result with the `<fin/>`), or [`Handled::Propose`] (propose the
//!   command; once committed, the proposing site answers the IQ with
//!   [`Outcome::reply`]). IQs of type `result`/`error` are not requests and
//!   must not be passed in (RFC 6120 §8.2.3).
//! - A `<message/>` to the service: [`PubsubService::handle_message`]
//!   (owners approving pending subscriptions, XEP-0060 §8.6).
//! - Every committed command, at every site, in log order:
//!   [`PubsubService::apply`]; deliver [`Outcome::notifications`] to the
//!   local resources they name ([`Notification::to_stanza`]). Skip entries
//!   at or below [`PubsubService::last_index`] (already in the state).
//! - A resource becoming available: [`PubsubService::on_available`].
//! - Item and archive expiry: the leader proposes `ExpireItems` stamped at
//!   or after [`PubsubService::next_expiry_micros`].
//! - Publishers that are not XMPP clients (the VTP bridge):
//!   [`PubsubService::voevent_publish`].
//! - Raft snapshots: [`PubsubService::to_snapshot`] (or
//!   [`PubsubService::freeze`] now, [`FrozenState::encode`] later) /
//!   [`PubsubService::from_snapshot`].
//!
//! # Not implemented
//! Of XEP-0248 (collection nodes), the `subscription_type`/`subscription_depth`
//! options (a collection subscription delivers the items of every leaf
//! below it) and node-creation notifications; subscription digests and
//! presence-filtered delivery (`pubsub#show-values`); offline storage of
//! notifications (subscribers catch up with XEP-0313 queries instead); and
//! pending-subscription retrieval through ad-hoc commands (§8.7).
//!
//! # Layout
//! - [`model`]: nodes, configuration, items, subscriptions, affiliations.
//! - [`config`]: node configuration defaults, `pubsub#node_config` and
//!   `pubsub#subscribe_options` forms, and the service limits.
//! - [`form`]: XEP-0004 data forms.
//! - [`request`]: typed requests parsed from IQ elements.
//! - [`response`]: result, notification and error elements.
//! - [`service`]: the state machine (requests, checks, apply, snapshots).
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
    FrozenState, Handled, MessageKind, Meta, Notification, Outcome, PubsubService, RequestContext,
    SnapshotError,
};
