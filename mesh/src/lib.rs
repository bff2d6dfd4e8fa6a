//! The replication layer of vomesh: openraft over QUIC, generic over the
//! state machine it replicates. Nothing here knows about XMPP.
//!
//! An application implements [`StateMachine`](types::StateMachine) and
//! starts a [`MeshNode`](node::MeshNode) with it. From any node it
//! [`propose`](node::MeshNode::propose)s commands (opaque bytes); each
//! command is committed on a majority, applied at every node in the same
//! order, and its Raft log index is its global sequence number.
//!
//! ```no_run
//! use bytes::Bytes;
//! use vomesh_mesh::certs::NodeIdentity;
//! use vomesh_mesh::config::MeshConfig;
//! use vomesh_mesh::node::MeshNode;
//! use vomesh_mesh::types::{CommittedCommand, StateMachine};
//!
//! /// Counts the commands applied; answers each with the new count.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type RestoreError = std::array::TryFromSliceError;
//!
//!     fn apply(&mut self, commands: Vec<CommittedCommand>) -> Vec<Bytes> {
//!         let mut responses = Vec::with_capacity(commands.len());
//!         for _ in &commands {
//!             self.0 += 1;
//!             responses.push(Bytes::from(self.0.to_be_bytes().to_vec()));
//!         }
//!         responses
//!     }
//!
//!     fn snapshot(&self) -> Bytes {
//!         Bytes::from(self.0.to_be_bytes().to_vec())
//!     }
//!
//!     fn restore(&mut self, snapshot: &[u8]) -> Result<(), Self::RestoreError> {
//!         self.0 = u64::from_be_bytes(snapshot.try_into()?);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = NodeIdentity::from_pem_files(
//!     "ca.crt".as_ref(),
//!     "node-1.crt".as_ref(),
//!     "node-1.key".as_ref(),
//! )?;
//! let config = MeshConfig::new(
//!     1,
//!     "0.0.0.0:7001".parse()?,
//!     "site-a.example.org:7001".into(),
//!     "/var/lib/vomesh/mesh".into(),
//!     identity,
//! );
//! let node = MeshNode::start(config, Counter::default()).await?;
//! let committed = node.propose(Bytes::from_static(b"count")).await?;
//! println!("global sequence number {}", committed.index);
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`types`]: the openraft type configuration (opaque byte commands) and
//!   the [`StateMachine`](types::StateMachine) trait the application
//!   implements.
//! - [`config`]: what a node starts with; timeouts (loopback and WAN
//!   presets) and limits.
//! - [`node`]: [`MeshNode`](node::MeshNode): start, propose (forwarded to the
//!   leader from a follower), local and linearizable reads, this node's
//!   status and every member's (`cluster_status`), shutdown.
//! - [`peer_rpc`]: serves peers' RPCs: Raft's, forwarded proposals and
//!   reads, forwarded membership changes, status.
//! - [`membership`]: add a node (learner, catch-up, then voter), remove one;
//!   asked at any node, forwarded to the leader.
//! - [`transport`]: the QUIC endpoint (quinn, rustls with ring, mutual TLS
//!   against the cluster CA, node ids checked against certificate SANs),
//!   framing and limits.
//! - [`network`]: openraft's network client on the transport: prioritised
//!   streams per purpose, pipelined replication, chunked snapshots.
//! - [`wire`]: conversion between openraft messages and the prost types of
//!   `vomesh-proto` (`mesh.proto`), for the network and the disk.
//! - [`log_store`]: the durable Raft log and vote (segment files, one
//!   `fdatasync` per batch, written past the page cache; a log kept in redb
//!   by earlier versions is moved into them at start).
//! - [`state_store`]: applies committed entries to the application state and
//!   keeps the latest snapshot (`raft-snapshot.bin`).
//! - [`power_loss`]: log writes that, in a test-only mode, are lost on a
//!   crash unless synced (`VOMESH_TEST_POWER_LOSS=1`), for the failover suite.
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
//!   before exit; it returns once the log and snapshot files are closed.

pub mod certs;
pub mod config;
mod direct_io;
mod forwarder;
pub mod leadership;
mod legacy_log;
mod log_files;
mod log_meta;
pub mod log_store;
mod log_writer;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod node;
mod paced_file;
pub mod peer_rpc;
pub mod power_loss;
mod progress;
mod recent_entries;
pub mod snapshot_data;
mod snapshot_file;
pub mod snapshot_schedule;
pub mod state_store;
pub mod submitter;
pub mod transport;
pub mod types;
mod udp_socket;
pub mod wire;
