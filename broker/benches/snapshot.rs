//! What a snapshot of a site's pubsub state costs: capturing it between two
//! applies (`freeze`, which holds up applying), encoding it (on the snapshot
//! thread, beside the commits, in pieces that go to the snapshot file; and,
//! for comparison, whole into one buffer, as `to_snapshot` does), and
//! restoring a site from it. The state is
//! 30,000 publishes of a real 2 KiB VOEvent (`Gaia16aac.xml`) over ten
//! nodes, all kept in the archive: about the state two seconds of the
//! mesh's full load leave behind. `cargo bench -p vomesh-broker --bench
//! snapshot` prints each stage's time and its cost per archived item.

use std::hint::black_box;
use std::time::Duration;

use vomesh_broker::pubsub::service::PubsubService;

mod common;
#[path = "common/memory.rs"]
mod memory;
#[path = "common/service.rs"]
mod service;

use service::{Fed, limits, service_jid};

/// The node's allocator (see `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 10;
const PUBLISHES: usize = 30_000;
const ROUNDS: usize = 5;

fn main() {
    if let Some(path) = std::env::args()
        .skip_while(|arg| arg != RESTORE_MEMORY)
        .nth(1)
    {
        return restore_memory(std::path::Path::new(&path));
    }
    let service = populated();
    let bytes = service.to_snapshot();
    println!(
        "snapshot of {PUBLISHES} publishes over {NODES} nodes ({:.1} MB), best of {ROUNDS}:",
        bytes.len() as f64 / 1e6
    );
    restore_memory_in_a_fresh_process(&bytes);
    let freeze = best(|| drop(black_box(service.freeze())));
    let encode_whole = common::fastest(
        ROUNDS,
        || service.freeze(),
        |frozen| drop(black_box(frozen.encode())),
    );
    let encode_in_pieces = common::fastest(
        ROUNDS,
        || service.freeze(),
        |frozen| {
            frozen
                .write_to(&mut std::io::sink())
                .expect("the sink takes every write")
        },
    );
    let restore = best(|| {
        let restored = PubsubService::from_snapshot(service_jid(), limits(PUBLISHES), &bytes)
            .expect("the snapshot restores");
        drop(black_box(restored));
    });
    for (stage, time) in [
        ("freeze (applying waits)", freeze),
        ("encode whole, in memory", encode_whole),
        ("encode in pieces (thread)", encode_in_pieces),
        ("restore", restore),
    ] {
        println!(
            "  {stage:<26} {:>8.2} ms  {:>6.3} µs per item",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() * 1e6 / PUBLISHES as f64
        );
    }
}

fn populated() -> PubsubService {
    let mut fed = Fed::new(PUBLISHES);
    for node in 0..NODES {
        fed.create(&format!("events-{node}"));
    }
    for i in 0..PUBLISHES {
        fed.publish(&format!("events-{}", i % NODES), format!("item-{i}"));
    }
    fed.service
}

/// The fastest of `ROUNDS` runs of `run`.
fn best(mut run: impl FnMut()) -> Duration {
    common::fastest(ROUNDS, || (), |()| run())
}

/// The argument that makes this bench restore the snapshot in the file
/// that follows and report the memory it took.
const RESTORE_MEMORY: &str = "restore-memory";

/// Restores `bytes` in a process of its own, which never held the state
/// (an allocator keeps freed memory, which a restore would reuse unseen).
fn restore_memory_in_a_fresh_process(bytes: &[u8]) {
    let path = std::env::temp_dir().join(format!("vomesh-snapshot-bench-{}", std::process::id()));
    std::fs::write(&path, bytes).expect("the snapshot is written to a temporary file");
    let status = std::process::Command::new(std::env::current_exe().expect("this bench's path"))
        .arg(RESTORE_MEMORY)
        .arg(&path)
        .status()
        .expect("the bench runs again");
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "the restore failed: {status}");
}

/// Resident memory a fresh process gains restoring the snapshot in `path`:
/// the state it builds and whatever it held on the way (the allocator
/// keeps what was freed, so the two are not told apart).
fn restore_memory(path: &std::path::Path) {
    let bytes = std::fs::read(path).expect("the snapshot file");
    let before = memory::resident_bytes();
    let restored = PubsubService::from_snapshot(service_jid(), limits(PUBLISHES), &bytes)
        .expect("the snapshot restores");
    println!(
        "  restore, in a fresh process: {:.1} MB resident added",
        memory::resident_bytes().saturating_sub(before) as f64 / 1e6
    );
    drop(black_box(restored));
}
