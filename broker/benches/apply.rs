//! What applying a publish costs a site as its node's archive grows: every
//! site applies every committed publish, and each is archived (up to
//! `max_archive_entries_per_node`, a million by default). One node gets
//! publishes of a real 2 KiB VOEvent (`Gaia16aac.xml`) under distinct
//! IVORN-like item ids, as a broker relaying alerts would; the time per
//! publish is taken over each stretch of `STRETCH` publishes, from an empty
//! archive to `PUBLISHES` entries. `cargo bench -p vomesh-broker --bench
//! apply` prints µs per publish at each archive size.

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
        let started = Instant::now();
        for id in ids {
            fed.publish(NODE, id.clone());
        }
        let took = started.elapsed();
        println!(
            "  archive {:>7} → {:>7} entries  {:>6.2} µs per publish",
            stretch * STRETCH,
            stretch * STRETCH + ids.len(),
            took.as_secs_f64() * 1e6 / ids.len() as f64
        );
    }
    black_box(&fed.service);
}
