//! Deterministic simulation of many vomesh sites on a modelled WAN.
//!
//! The simulator runs what ships: openraft (the pinned version, with the
//! mesh's own `Config` built by [`vomesh_mesh::config::raft_config`]), the
//! mesh's wire conversions and state-machine adapter, and the broker's
//! replicated state machine ([`vomesh_broker::replica::Replica`] over the
//! pubsub service) applying real publish commands carrying real VOEvents.
//! Only the I/O is replaced: the QUIC transport by a modelled network of
//! great-circle round trips, jitter, loss, bandwidth, partitions and
//! crashes; the log and snapshot files by in-memory stores that survive a
//! crash; the clock by tokio's paused clock. The same seed gives a
//! bit-identical run and output.
//!
//! # Layout
//! - [`types`]: `SimTypes`, the mesh's type configuration on a seeded
//!   runtime, and why it is not `MeshTypes` itself.
//! - [`store`]: the in-memory log and state machine stores (openraft's
//!   storage traits, a disk that outlives a crash).
//! - [`net`]: the modelled WAN and openraft's network traits over it.
//! - [`sites`]: the default observatory sites and their round trips.
//! - [`scenario`]: the versioned scenario files.
//! - [`sim`]: one run: form the mesh, publish, inject faults, heal, probe.
//! - [`journal`]: what each site applied and delivered, observed from outside.
//! - [`checker`]: safety (no acknowledged loss, one order) and liveness.
//! - [`report`]: distributions per site, text table and CSV.
//! - [`plot`]: SVG plots.
//! - [`property`]: many random seeds with random faults.
//! - [`tune`]: sweeps that chose the production timeouts and batch size.
//! - [`rng`]: the seeded random sequence.
//!
//! # Choices
//! - **A type configuration of its own, with the mesh's data types.**
//!   `MeshTypes` runs on openraft's tokio runtime, whose RNG (it draws the
//!   randomised election timeouts) is seeded by the operating system: a run
//!   on it cannot be replayed. Making `MeshTypes` generic over its runtime
//!   would thread a parameter through every production signature. Instead
//!   the mesh names what its code needs, the trait
//!   [`MeshTypeConfig`](vomesh_mesh::types::MeshTypeConfig) (same commands,
//!   ids, votes, entries), writes its wire conversions and its
//!   [`apply_committed`](vomesh_mesh::state_store::apply_committed) adapter
//!   against it, and [`types::SimTypes`] declares the same types with
//!   openraft's `DeterministicRng` runtime. Log entries, votes, log ids,
//!   memberships and snapshots are the very same Rust types in both.
//! - **tokio, current-thread, paused clock.** openraft spawns its tasks and
//!   sleeps through its runtime; on one thread with a paused clock tokio
//!   polls them in a deterministic order and jumps time forward when all
//!   wait. Nothing here reads the wall clock (except the property mode's
//!   seeds-per-second figure), every `select!` is `biased`, every map is
//!   ordered.
//! - **What is not the production path.** The QUIC transport and its
//!   pipelined `stream_append` (the simulator uses openraft's sequential
//!   default: one append in flight per follower, so its latency under load
//!   is an upper bound); the log and snapshot files (the simulated disk is instant);
//!   the XMPP sessions (subscribers are counted per site from the
//!   notifications the real `apply` emits, not written to sockets).

pub mod checker;
pub mod journal;
pub mod net;
pub mod plot;
pub mod property;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod sites;
pub mod store;
pub mod tune;
pub mod types;
