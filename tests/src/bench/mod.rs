//! A server-agnostic XMPP pubsub load generator: the same scenarios,
//! measured the same way, against vomesh, Prosody, ejabberd or any server
//! that speaks RFC 6120 (STARTTLS, SASL SCRAM, binding) and XEP-0060.
//!
//! # Layout
//! - [`target`]: what to connect to (listeners, domain, pubsub service,
//!   accounts, the server processes whose CPU and memory are read).
//! - [`sessions`]: logging many sessions in concurrently, subscribing them,
//!   and the receiver task of each subscriber session, which notes every
//!   notification's item and arrival instant.
//! - [`publisher`]: pipelined publishing, at a fixed rate or as fast as
//!   acknowledged with a window of IQs in flight.
//! - [`floor`]: the kernel's CPU per loopback write, the floor under any
//!   server's CPU per notification.
//! - [`scan`]: item ids found in raw notification bytes, without trees.
//! - [`scenarios`]: the scenarios (idle sessions, fan-out, many nodes,
//!   maximum publish rate, throughput, archive catch-up) and what each
//!   measures.
//! - [`vomesh`]: vomesh as a target, one node or a mesh started here.
//! - [`figures`]: a scenario's named figures, saved as JSON, and the
//!   comparison table of several targets with the ratios vomesh / peer.
//!
//! Everything runs in one process with one monotonic clock: a delivery
//! latency is the instant a subscriber's session parsed the notification
//! minus the instant before the publish IQ was written. The load
//! generator's own CPU time is measured alongside the server's, so a figure
//! bound by the client is never mistaken for a server limit.

pub mod figures;
pub mod floor;
pub mod publisher;
pub mod scan;
pub mod scenarios;
pub mod sessions;
pub mod target;
pub mod vomesh;

/// `http://jabber.org/protocol/pubsub` (XEP-0060).
pub const PUBSUB_NS: &str = "http://jabber.org/protocol/pubsub";
/// `http://jabber.org/protocol/rsm` (XEP-0059 paging of item retrieval).
pub const RSM_NS: &str = "http://jabber.org/protocol/rsm";
