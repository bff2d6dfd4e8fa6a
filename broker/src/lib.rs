//! A vomesh node.
//!
//! # Layout
//! - [`server`]: a running node: listeners, connection tasks, shutdown, and
//!   the admin API routes.
//! - [`xmpp`]: the client session state machine, the stanza router, stanza
//!   helpers and namespaces.
//! - [`client`]: the small XMPP client behind `vomesh publish/subscribe`
//!   and the integration tests.
//! - [`replica`]: the replicated state machine (the pubsub service, with
//!   the accounts) that the mesh applies at every site.
//! - [`accounts`]: making and reading account records: usernames and their
//!   SCRAM verifiers, never passwords.
//! - [`clock`]: the wall clock, read only by the I/O layer.
//! - [`sasl`]: SASL mechanisms (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN) as a pure
//!   exchange state machine, and per-address back-off against guessing.
//! - [`pubsub`]: the XEP-0060 publish-subscribe service as a pure state
//!   machine (replicated commands in, replies and notifications out), with
//!   XEP-0313 node archives; also the general XMPP stanza error type.
//! - [`voevent`]: VOEvent 2.0 validation and IVORN parsing.
//! - [`vtp`]: the VOEvent Transport Protocol bridge: author and broadcast
//!   ports, upstream subscriptions.
//! - [`xml`]: the XML element tree stanzas are parsed into, the
//!   incremental stream parser that builds it, and standalone documents.
//! - [`admin`]: the admin HTTP listener: `/healthz`, `/readyz`, `/metrics`,
//!   and the bearer-token check in front of the `/api` routes.
//! - [`cli`]: the `vomesh` command line and the admin API client.
//! - [`commands`]: the client-side commands (`publish`, `subscribe`,
//!   `certs init`, `status`, `cluster`) `main` dispatches to.
//! - [`config`]: the TOML node configuration, its development defaults and
//!   validation.
//! - [`metrics`]: the Prometheus recorder and the names of every metric.
//! - [`tls`]: rustls server configurations of the XMPP listeners, and the
//!   self-signed development certificate.
pub mod accounts;
pub mod admin;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod metrics;
pub mod pubsub;
pub mod replica;
pub mod sasl;
pub mod server;
pub mod tls;
pub mod voevent;
pub mod vtp;
pub mod xml;
pub mod xmpp;

/// Locks a mutex of this crate, ignoring poisoning: every critical section
/// here leaves its data whole (a cache, a queue, a map of sessions), so a
/// panic in another holder changes nothing that later holders rely on.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
