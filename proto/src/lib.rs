//! Wire formats of vomesh, defined once, in `proto/vomesh/*.proto` and built
//! with prost + protox (pure Rust, no system `protoc`).
//!
//! # Layout
//! - [`mesh`]: Raft RPCs between mesh nodes, forwarded proposals, snapshot
//!   transfer, and the mesh's on-disk records (`proto/vomesh/mesh.proto`).

/// Raft RPCs, forwarded proposals, snapshot transfer and on-disk records of
/// the mesh (`proto/vomesh/mesh.proto`).
pub mod mesh {
    include!(concat!(env!("OUT_DIR"), "/vomesh.mesh.rs"));
}
