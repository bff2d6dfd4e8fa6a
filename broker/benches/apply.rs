//! What applying a publish costs a site as its node's archive grows: every
//! site applies every committed publish, and each is archived (up to
//! `max_archive_entries_per_node`, a million by default), then the same
//! with the site's archives bounded (`max_archive_bytes`). One node gets
//! publishes of a real 2 KiB VOEvent (`Gaia16aac.xml`) under distinct
//! IVORN-like item ids, as a broker relaying alerts would; the time per
//! publish is taken over each stretch of `STRETCH` publishes, from an empty
//! archive to `PUBLISHES` entries. `cargo bench -p vomesh-broker --bench
//! apply` prints µs per publish at each archive size, and the resident
//! memory each publish added: memory a site touches for the first time
//! costs a page fault per 4 KiB, and on the test machine (a VM) each
//! costs 6.5–10 µs.

use std::hint::black_box;
use std::time::Instant;

#[path = "common/memory.rs"]
mod memory;
#[path = "common/service.rs"]
mod service;

use memory::resident_bytes;
use service::Fed;
use vomesh_broker::pubsub::PubsubLimits;

/// The node's allocator (see `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PUBLISHES: usize = 400_000;
const STRETCH: usize = 50_000;
const NODE: &str = "alerts";

fn main() {
    let ids: Vec<String> = (0..PUBLISHES)
        .map(|i| format!("ivo://example.org/alerts#2026-12-07T02:40:{i:09}"))
        .collect();
    if std::env::args().any(|arg| arg == BOUNDED) {
        return run(bounded(&ids), &ids);
    }
    println!("applying {PUBLISHES} VOEvent publishes to one node, every one archived:");
    run(Fed::new(PUBLISHES), &ids);
    // In a process of its own, so that it does not reuse the memory the
    // first run freed.
    let status = std::process::Command::new(std::env::current_exe().expect("this bench's path"))
        .arg(BOUNDED)
        .status()
        .expect("the bench runs again");
    assert!(status.success(), "the bounded run failed: {status}");
}

/// The argument that runs the bench with the site's archives bounded.
const BOUNDED: &str = "bounded";

/// A service whose archives hold a quarter of `ids` at most
/// (`max_archive_bytes`): past the bound each publish drops the oldest
/// entry, and the memory it frees holds the next.
fn bounded(ids: &[String]) -> Fed {
    let mut probe = Fed::new(PUBLISHES);
    probe.create("probe");
    probe.publish("probe", ids[0].clone());
    let entry_bytes = probe.service.archive_bytes();
    let entries = PUBLISHES / 4;
    println!("the same, with max_archive_bytes at {entries} entries ({entry_bytes} B each):");
    Fed::with_limits(PubsubLimits {
        archive_bytes_max: entry_bytes * entries as u64,
        ..*probe.service.limits()
    })
}

/// Publishes `ids` to one node of `fed`, a stretch at a time.
fn run(mut fed: Fed, ids: &[String]) {
    fed.create(NODE);
    for ids in ids.chunks(STRETCH) {
        let (entries, resident) = (fed.service.archive_entries(), resident_bytes());
        let started = Instant::now();
        for id in ids {
            fed.publish(NODE, id.clone());
        }
        let took = started.elapsed();
        let added = resident_bytes().saturating_sub(resident);
        println!(
            "  archive {:>7} → {:>7} entries  {:>6.2} µs and {:>5} B resident per publish",
            entries,
            fed.service.archive_entries(),
            took.as_secs_f64() * 1e6 / ids.len() as f64,
            added / ids.len() as u64,
        );
    }
    black_box(&fed.service);
}
