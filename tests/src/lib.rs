//! Support code for vomesh's cross-crate tests (in `tests/tests/`): running
//! the real `vomesh` binary on free loopback ports and preparing the Python
//! clients used for interoperability tests.
//!
//! # Layout
//! - [`bench`]: the server-agnostic XMPP pubsub load generator behind
//!   `src/bin/xmpp_bench.rs` and `bench/run-comparison.sh` (vomesh against
//!   Prosody and ejabberd).
//! - [`cluster`]: a mesh of several nodes with certificates from
//!   `vomesh certs init`.
//! - [`docker`]: images built with `deploy/build-image.sh` and containers
//!   run from them, for the tests of the deployment files.
//! - [`history`]: a history checker: what publishers and subscribers saw
//!   against every site's final XEP-0313 archive.
//! - [`measure`]: percentiles, CPU and memory of a process from `/proc`,
//!   the machine's description: what the benchmarks print.
//! - [`node`]: a `vomesh serve` process with its own data directory.
//! - [`pubsub`]: XEP-0060 / XEP-0313 requests to a node's pubsub service
//!   with the project's client, and readers of the answers.
//! - [`nemesis`]: a seeded fault schedule (kills, pauses, partitions,
//!   packet loss/delay, clock jumps, membership changes, power loss) run
//!   against a [`cluster`], and its report.
//! - [`netns`]: a network namespace per node on one bridge, so partitions
//!   and packet loss are real; cleaned up on drop.
//! - [`python`]: a virtualenv with slixmpp and Comet, created on first use.
//! - [`snapshot_send`]: the memory a leader spends catching a site up by
//!   snapshot (`src/bin/snapshot_send.rs` runs it; `tests/snapshot_send.rs`
//!   smoke-runs it).
//! - [`workload`]: publishers and subscribers at every site recording a
//!   [`history`]; settling a cluster and auditing it.
//! - `src/bin/xmpp_bench.rs`: the load generator's command line (run by
//!   hand or by the comparison script; `tests/xmpp_bench.rs` smoke-runs it).
//! - `src/bin/nemesis.rs`: the randomised failover suite from a seed (a
//!   short form runs in `tests/nemesis_short.rs`).

pub mod bench;
pub mod cluster;
pub mod docker;
pub mod history;
pub mod measure;
pub mod nemesis;
pub mod netns;
pub mod node;
pub mod pubsub;
pub mod python;
pub mod snapshot_send;
pub mod workload;
