//! The replication layer of vomesh: openraft over QUIC, generic over the
//! state machine it replicates. Nothing here knows about XMPP.
//!
//! # Layout
//! - [`types`]: the openraft type configuration (opaque byte commands) and
//!   the [`StateMachine`](types::StateMachine) trait the application
//!   implements.
//! - [`wire`]: conversion between openraft messages and the prost types of
//!   `vomesh-proto` (`mesh.proto`), for the network and the disk.
//! - [`log_store`]: the durable Raft log and vote (redb).
//! - [`state_store`]: applies committed entries to the application state and
//!   keeps the latest snapshot (redb).
//! - [`certs`]: cluster CA, node and XMPP certificates; loading a node's
//!   TLS identity.

pub mod certs;
pub mod log_store;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod state_store;
pub mod transport;
pub mod types;
pub mod wire;
