//! The simulator's openraft type configuration.
//!
//! It declares exactly the data types of the mesh's `MeshTypes` (opaque
//! byte [`Command`]s and responses, `u64` node ids, `BasicNode`, openraft's
//! default leader ids, votes and entries), so it satisfies
//! [`MeshTypeConfig`](vomesh_mesh::types::MeshTypeConfig) and runs the
//! mesh's own wire conversions and state-machine adapter. It differs in one
//! associated type: the async runtime is tokio wrapped in openraft's
//! [`DeterministicRng`], whose `thread_rng` (the source of openraft's
//! randomised election timeouts) is seeded from the run's seed instead of
//! the operating system. With tokio's single-threaded scheduler and paused
//! clock that makes a run a function of its seed.

use openraft_rt::deterministic_rng::DeterministicRng;
use openraft_rt_tokio::TokioRuntime;
use vomesh_mesh::types::{Command, CommandResponse, NodeId};

use crate::store::{MemStateStore, SiteReplica};

/// tokio with a seeded RNG.
pub type SimRuntime = DeterministicRng<TokioRuntime>;

openraft::declare_raft_types!(
    /// `MeshTypes` with a seeded runtime.
    pub SimTypes:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        AsyncRuntime = SimRuntime,
);

/// One simulated site's Raft.
pub type SimRaft = openraft::Raft<SimTypes, MemStateStore<SiteReplica>>;

/// A snapshot of the simulator, held in memory whole (the sites' "disks"
/// are in memory too).
pub type SimSnapshot = openraft::type_config::alias::SnapshotOf<SimTypes, bytes::Bytes>;
