//! What applying a publish costs a site as its node's archive grows: every
//! site applies every committed publish, and each is archived (up to
//! `max_archive_entries_per_node`, a million by default). One node gets
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

#[path = "common/service.rs"]
mod service;

use service::Fed;

/// The node's allocator (see `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PUBLISHES: usize = 400_000;
const STRETCH: usize = 50_000;
const NODE: &str = "alerts";

fn main() {
    let mut fed = Fed::new(PUBLISHES);
    fed.create(NODE);
    println!("applying {PUBLISHES} VOEvent publishes to one node, every one archived:");
    let ids: Vec<String> = (0..PUBLISHES)
        .map(|i| format!("ivo://example.org/alerts#2026-12-07T02:40:{i:09}"))
        .collect();
    for (stretch, ids) in ids.chunks(STRETCH).enumerate() {
        let resident = resident_bytes();
        let started = Instant::now();
        for id in ids {
            fed.publish(NODE, id.clone());
        }
        let took = started.elapsed();
        let added = resident_bytes().saturating_sub(resident);
        println!(
            "  archive {:>7} → {:>7} entries  {:>6.2} µs and {:>5} B resident per publish",
            stretch * STRETCH,
            stretch * STRETCH + ids.len(),
            took.as_secs_f64() * 1e6 / ids.len() as f64,
            added / ids.len() as u64,
        );
    }
    black_box(&fed.service);
}

/// The process's resident memory (`/proc/self/statm`; 0 where there is none).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
