//! Compiles every `.proto` file under `proto/vomesh/` with protox (a pure
//! Rust protobuf compiler, so no system `protoc` is needed) and generates the
//! prost types into `OUT_DIR`, one Rust file per protobuf package
//! (`vomesh.pubsub` → `vomesh.pubsub.rs`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let dir = root.join("vomesh");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    // Sorted so the generated code does not depend on directory order.
    files.sort();
    let descriptors = protox::compile(&files, [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
