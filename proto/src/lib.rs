//! Wire formats of vomesh, defined once, in `proto/vomesh/*.proto` and built
//! with prost + protox (pure Rust, no system `protoc`).
//!
//! # Layout
//! - [`mesh`]: Raft RPCs between mesh nodes, forwarded proposals, snapshot
//!   transfer, and the mesh's on-disk records (`proto/vomesh/mesh.proto`).
//! - [`pubsub`]: the replicated commands of the XEP-0060 pubsub service (Raft
//!   log entry payloads) and its snapshot (`proto/vomesh/pubsub.proto`).

/// Raft RPCs, forwarded proposals, snapshot transfer and on-disk records of
/// the mesh (`proto/vomesh/mesh.proto`).
pub mod mesh {
    include!(concat!(env!("OUT_DIR"), "/vomesh.mesh.rs"));
}

/// Commands and snapshot of the pubsub service (`vomesh.pubsub`).
pub mod pubsub {
    include!(concat!(env!("OUT_DIR"), "/vomesh.pubsub.rs"));
}
