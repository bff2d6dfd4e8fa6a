//! A vomesh node.
//!
//! # Layout
//! - [`xml`]: the XML element tree stanzas are parsed into, and the
//!   incremental stream parser that builds it.
//! - [`config`]: the TOML node configuration, its development defaults and
//!   validation.
//! - [`metrics`]: the Prometheus recorder and the names of every metric.
//! - [`tls`]: rustls server configurations of the XMPP listeners, and the
//!   self-signed development certificate.
pub mod config;
pub mod metrics;
pub mod tls;
pub mod xml;
