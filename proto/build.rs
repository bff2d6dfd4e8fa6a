//! Compiles every `.proto` file under `proto/vomesh/` with protox (pure Rust,
//! no system `protoc`) and generates the prost types, one Rust file per
//! protobuf package (`vomesh.<package>.rs` in `OUT_DIR`). Adding a `.proto`
//! file needs no change here, only a `pub mod` in `src/lib.rs`.

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
    // Plain prost defaults, but for two things. The mesh's `bytes` fields
    // (commands, their answers, snapshot chunks) are `Bytes`: decoded from
    // a received frame they share its buffer rather than each being copied
    // out of it (the pubsub package keeps `Vec<u8>`). And two rarely set,
    // large fields are boxed so that the messages around them stay small:
    // a status answer (the largest mesh response, beside every append and
    // vote response) and a publish's VTP origin (inside every `Command`).
    prost_build::Config::new()
        .bytes([".vomesh.mesh"])
        .boxed(".vomesh.mesh.Response.kind.status")
        .boxed(".vomesh.pubsub.Publish.vtp")
        .compile_fds(descriptors)?;
    Ok(())
}
