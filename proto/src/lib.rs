//! Wire formats of vomesh, defined once, in `proto/vomesh/*.proto` and built
//! with prost + protox (pure Rust, no system `protoc`).
