//! The openraft type configuration of the mesh and the [`StateMachine`]
//! trait an application (the broker) implements to be replicated.
//!
//! The type configuration is *not* generic over the application: a log
//! entry's payload is an opaque [`Command`] (bytes) and the result of applying
//! it an opaque [`CommandResponse`]. The broker's commands are already prost
//! messages from `vomesh-proto`, so it encodes a command once before
//! proposing and decodes it once in [`StateMachine::apply`]; in exchange the
//! log store, the transport and the forwarding RPC carry bytes and never see
//! a broker type, `MeshTypes` is one concrete type (no generic parameter
//! threading through every openraft signature), and a command that fails to
//! decode becomes an ordinary, deterministic error response of the broker's
//! state machine — identical at every site — instead of a storage failure.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::snapshot_data::SnapshotData;

/// A node's identity in the mesh (the `node_id` of the `[mesh]` config).
pub type NodeId = u64;

/// An application command: the payload of a normal log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub Bytes);

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

/// What [`StateMachine::apply`] returned for one [`Command`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse(pub Bytes);

openraft::declare_raft_types!(
    /// The openraft type configuration of vomesh: `u64` node ids, nodes
    /// addressed by `host:port` (`BasicNode`), opaque byte commands.
    pub MeshTypes:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// Every openraft type configuration with the mesh's data types: the same
/// commands, ids, votes, log entries and membership as [`MeshTypes`],
/// differing at most in the async runtime (and with it the RNG behind
/// election timeouts). Production runs [`MeshTypes`] (tokio); the simulator
/// (`vomesh-sim`) declares one whose RNG is seeded, so a run is replayable,
/// and reuses the wire conversions and the state-machine adapter written
/// against this trait.
pub trait MeshTypeConfig:
    openraft::RaftTypeConfig<
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = Node,
        Term = u64,
        LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>,
        Vote = Vote,
        Entry = Entry,
    >
{
}

impl<C> MeshTypeConfig for C where
    C: openraft::RaftTypeConfig<
            D = Command,
            R = CommandResponse,
            NodeId = NodeId,
            Node = Node,
            Term = u64,
            LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>,
            Vote = Vote,
            Entry = Entry,
        >
{
}

/// A node's address as stored in the Raft membership.
pub type Node = openraft::BasicNode;
pub type LogId = openraft::type_config::alias::LogIdOf<MeshTypes>;
pub type Vote = openraft::type_config::alias::VoteOf<MeshTypes>;
pub type Entry = openraft::type_config::alias::EntryOf<MeshTypes>;
pub type Membership = openraft::Membership<NodeId, Node>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<MeshTypes>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<MeshTypes>;
/// A snapshot: its data left in the snapshot file where one is sent (read
/// a chunk at a time, see [`SnapshotData`]), held whole where one is
/// received. One being built goes to the file as it is encoded, and the
/// snapshot its builder returns holds the metadata alone.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<MeshTypes, SnapshotData>;
pub type Raft<S> = openraft::Raft<MeshTypes, crate::state_store::StateStore<S>>;

/// Writes the bytes of [`StateMachine::snapshot`] for the state as it was
/// when [`StateMachine::snapshot_later`] was called, in pieces, to the
/// snapshot file (which syncs them as they come).
pub type DeferredSnapshot =
    Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + Sync>;

/// One committed command handed to [`StateMachine::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedCommand {
    /// The Raft log index of the command: its global sequence number, the
    /// same at every site, strictly increasing from one command to the next.
    /// Indexes are not contiguous: entries internal to Raft (leader blanks,
    /// membership changes) take indexes too and are not passed to `apply`.
    pub index: u64,
    pub command: Bytes,
    /// Whether a proposer waits for this command's response here: only at
    /// the leader, for the commands proposed through it. Elsewhere the
    /// response is dropped unread, so it may be left empty.
    pub response_wanted: bool,
}

/// The replicated state machine, implemented by the application.
///
/// Every node applies the same committed commands in the same order, so the
/// implementation must be deterministic: everything `apply` depends on
/// (time, ids, the author) is inside the command, never read from a clock,
/// an RNG or a hash map's iteration order.
///
/// The state lives in memory. It is rebuilt at start from the last snapshot
/// plus the committed log entries after it, which are applied again: the
/// application sees those commands a second time after a restart (before it
/// has any client to notify).
pub trait StateMachine: Send + Sync + 'static {
    /// Why a snapshot could not be restored.
    type RestoreError: std::error::Error + Send + Sync + 'static;

    /// Applies committed commands, in log order, and returns exactly one
    /// response per command, in the same order. The response travels back
    /// to the proposer (possibly on another node); where
    /// [`CommittedCommand::response_wanted`] is false, nobody reads it.
    fn apply(&mut self, commands: Vec<CommittedCommand>) -> Vec<Bytes>;

    /// Serializes the whole state. Called between two `apply` calls, so the
    /// bytes describe the state after exactly the commands applied so far
    /// (a consistent read).
    fn snapshot(&self) -> Bytes;

    /// A consistent copy of the state, to be serialized later, on a thread
    /// of its own, while `apply` goes on. Called between two `apply` calls,
    /// like [`Self::snapshot`]. Override it when the state can be copied much
    /// faster than it is serialized (shared payloads, say): serializing a
    /// large state at once holds up every command behind it; and serialize
    /// in pieces, so that a large state is never held twice in memory. The
    /// default serializes at once.
    fn snapshot_later(&self) -> DeferredSnapshot {
        let bytes = self.snapshot();
        Box::new(move |out| out.write_all(&bytes))
    }

    /// Replaces the whole state with one serialized by [`Self::snapshot`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Self::RestoreError>;
}

/// The id of entry `index` written by node 1 in term 1, for tests of
/// what stores and serves entries.
#[cfg(test)]
pub(crate) fn test_log_id(index: u64) -> LogId {
    LogId::new(
        openraft::impls::leader_id_adv::LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    )
}
