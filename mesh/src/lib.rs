//! The replication layer of vomesh: openraft over QUIC, generic over the
//! state machine it replicates. Nothing here knows about XMPP.
//!
//! An application implements [`StateMachine`](types::StateMachine) and
//! starts a [`MeshNode`](node::MeshNode) with it. From any node it
//! [`propose`](node::MeshNode::propose)s commands (opaque bytes); each
//! command is committed on a majority, applied at every node in the same
//! order, and its Raft log index is its global sequence number.
//!
//! # Layout
//! - [`types`]: the openraft type configuration (opaque byte commands) and
//!   the [`StateMachine`](types::StateMachine) trait the application
//!   implements.
//! - [`config`]: what a node starts with; timeouts (loopback and WAN
//!   presets) and limits.
//! - [`node`]: [`MeshNode`](node::MeshNode): start, propose (forwarded to the
//!   leader from a follower), local and linearizable reads, status,
//!   shutdown.
//! - [`peer_rpc`]: serves peers' RPCs: Raft's, forwarded proposals and
//!   reads, forwarded membership changes.
//! - [`membership`]: add a node (learner, catch-up, then voter), remove one;
//!   asked at any node, forwarded to the leader.
//! - [`transport`]: the QUIC endpoint (quinn, rustls with ring, mutual TLS
//!   against the cluster CA, node ids checked against certificate SANs),
//!   framing and limits.
//! - [`network`]: openraft's network client on the transport: prioritised
//!   streams per purpose, pipelined replication, chunked snapshots.
//! - [`wire`]: conversion between openraft messages and the prost types of
//!   `vomesh-proto` (`mesh.proto`), for the network and the disk.
//! - [`log_store`]: the durable Raft log and vote (redb, fsync per batch).
//! - [`state_store`]: applies committed entries to the application state and
//!   keeps the latest snapshot (redb).
//! - [`metrics`]: openraft's metrics recorded into the `metrics` crate
//!   (`vomesh_raft_*`).
//! - [`certs`]: cluster CA, node and XMPP certificates (`vomesh certs
//!   init`); loading a node's TLS identity.
//!
//! # Choices
//! - **openraft `=0.10.0-alpha.37`**, for `RaftNetworkV2`: separate network
//!   clients for heartbeats, replication and snapshots (here: separate QUIC
//!   streams with different priorities on one connection per peer),
//!   application-defined snapshot transfer (full snapshot sent in bounded
//!   chunks on its own stream), pre-vote, and ReadIndex/lease reads. Pinned
//!   exactly because alpha releases change APIs; upgrading means re-running
//!   openraft's storage suite (`log_store` tests) and the cluster tests.
//! - **Wire format**: openraft's messages are mapped field by field onto
//!   prost messages (`vomesh.mesh.*`); only a membership configuration (rare,
//!   nested) travels as openraft's serde JSON inside a `bytes` field. The same
//!   `Entry`/`Vote`/`LogId` messages are the on-disk records.
//! - **Timeouts**: [`MeshTimeouts::loopback`](config::MeshTimeouts::loopback)
//!   (default: heartbeat 200 ms, election 1–2 s) and
//!   [`MeshTimeouts::wan`](config::MeshTimeouts::wan) (heartbeat 600 ms,
//!   election 3–6 s) for sites up to ~300 ms apart. Rule: heartbeat (which
//!   openraft also uses as the append deadline) ≥ 2× the worst inter-site
//!   round trip, election timeout ≥ 5× the heartbeat.
//! - **Lifecycle**: call [`MeshNode::shutdown`](node::MeshNode::shutdown)
//!   before exit; it returns once the redb files are closed.

pub mod certs;
pub mod config;
pub mod log_store;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod node;
pub mod peer_rpc;
pub mod state_store;
pub mod transport;
pub mod types;
pub mod wire;
