//! Wire formats of vomesh, defined once, in `proto/vomesh/*.proto` and built
//! with prost + protox (pure Rust, no system `protoc`).
//!
//! # Layout
//! - [`pubsub`]: the replicated commands of the XEP-0060 pubsub service (Raft
//!   log entry payloads) and its snapshot (`proto/vomesh/pubsub.proto`).

/// Commands and snapshot of the pubsub service (`vomesh.pubsub`).
pub mod pubsub {
    include!(concat!(env!("OUT_DIR"), "/vomesh.pubsub.rs"));
}
