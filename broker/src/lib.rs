//! A vomesh node.
//!
//! # Layout
//! - [`xml`]: the XML element tree stanzas are parsed into, and the
//!   incremental stream parser that builds it.
//! - [`admin`]: the admin HTTP listener: `/healthz`, `/readyz`, `/metrics`,
//!   and the bearer-token check in front of the `/api` routes.
//! - [`cli`]: the `vomesh` command line and the admin API client.
//! - [`config`]: the TOML node configuration, its development defaults and
//!   validation.
//! - [`metrics`]: the Prometheus recorder and the names of every metric.
//! - [`tls`]: rustls server configurations of the XMPP listeners, and the
//!   self-signed development certificate.
pub mod admin;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod tls;
pub mod xml;
