//! Changing who is in the mesh, the way openraft's production checklist
//! asks: a new node first joins as a learner and receives the log (or a
//! snapshot) until it has caught up, and only then becomes a voter through
//! a joint-consensus membership change (Raft thesis §4.3), so adding a node
//! never stalls commits while it copies history.
//!
//! Changes are made by the leader. Asked at another node, the change is
//! forwarded to the leader over the mesh, so an operator's command may reach
//! any node. Both changes are idempotent: re-adding a member or removing a
//! non-member is harmless, so a change whose outcome was lost may be retried.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use vomesh_proto::mesh as pb;

use crate::node::{LeaderRefusal, MeshNode};
use crate::transport::error_response;
use crate::types::{MeshTypes, NodeId, StateMachine};

/// A membership change was not made (or, for `Unreachable`, may not have
/// been).
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("no leader known (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("membership change refused: {0}")]
    Refused(String),
    #[error("leader unreachable, outcome unknown: {0}")]
    Unreachable(String),
    #[error("mesh is shutting down")]
    ShuttingDown,
}

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
}

impl Change {
    fn to_pb(&self) -> pb::MembershipChange {
        use pb::membership_change::Change as C;
        let change = match self {
            Change::Add { id, addr } => C::Add(pb::membership_change::AddMember {
                node_id: *id,
                addr: addr.clone(),
            }),
            Change::Remove { id } => C::RemoveNodeId(*id),
        };
        pb::MembershipChange {
            change: Some(change),
        }
    }

    pub(crate) fn from_pb(change: pb::MembershipChange) -> Option<Self> {
        use pb::membership_change::Change as C;
        Some(match change.change? {
            C::Add(add) => Change::Add {
                id: add.node_id,
                addr: add.addr,
            },
            C::RemoveNodeId(id) => Change::Remove { id },
        })
    }
}

/// `known_leader`: the leader this node's metrics show, used when openraft's
/// refusal does not name one.
fn membership_error(
    e: RaftError<MeshTypes, ClientWriteError<MeshTypes>>,
    known_leader: Option<NodeId>,
) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_id.or(known_leader),
        },
        RaftError::APIError(other) => MembershipError::Refused(other.to_string()),
        RaftError::Fatal(_) => MembershipError::ShuttingDown,
    }
}

impl From<LeaderRefusal> for MembershipError {
    fn from(refusal: LeaderRefusal) -> Self {
        match refusal {
            LeaderRefusal::NotLeader(leader) => MembershipError::NotLeader { leader },
            LeaderRefusal::Refused(reason) => MembershipError::Refused(reason),
            LeaderRefusal::Unreachable(reason) => MembershipError::Unreachable(reason),
        }
    }
}

/// The answer a leader sends back for a forwarded change.
pub(crate) fn change_response(result: Result<(), MembershipError>) -> pb::Response {
    match result {
        Ok(()) => pb::Response {
            kind: Some(pb::response::Kind::MembershipChanged(pb::Empty {})),
        },
        Err(MembershipError::NotLeader { leader }) => pb::Response {
            kind: Some(pb::response::Kind::Error(pb::Error {
                kind: pb::ErrorKind::NotLeader as i32,
                message: "not the leader".into(),
                leader_id: leader,
            })),
        },
        Err(e @ MembershipError::Refused(_)) => {
            error_response(pb::ErrorKind::BadRequest, e.to_string())
        }
        Err(e) => error_response(pb::ErrorKind::Unavailable, e.to_string()),
    }
}

impl<S: StateMachine> MeshNode<S> {
    /// Adds node `id`, reachable at `addr` (`host:port`), as a voter:
    /// learner first, waiting until it has caught up with the log, then a
    /// voter. Returns once the new membership is committed.
    pub async fn add_member(&self, id: NodeId, addr: String) -> Result<(), MembershipError> {
        self.change_membership(Change::Add { id, addr }).await
    }

    /// Removes node `id` from the voters and from the cluster. Returns once
    /// the new membership is committed.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MembershipError> {
        self.change_membership(Change::Remove { id }).await
    }

    async fn change_membership(&self, change: Change) -> Result<(), MembershipError> {
        match self.change_membership_here(change.clone()).await {
            Err(MembershipError::NotLeader {
                leader: Some(leader),
            }) if leader != self.id() => self.forward_change(leader, change).await,
            other => other,
        }
    }

    /// Makes the change if this node leads.
    pub(crate) async fn change_membership_here(
        &self,
        change: Change,
    ) -> Result<(), MembershipError> {
        let raft = self.raft();
        let refused = |e| membership_error(e, self.status().leader);
        match change {
            Change::Add { id, addr } => {
                raft.add_learner(id, BasicNode::new(addr), true)
                    .await
                    .map_err(refused)?;
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(refused)?;
            }
            Change::Remove { id } => {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(refused)?;
            }
        }
        Ok(())
    }

    async fn forward_change(&self, leader: NodeId, change: Change) -> Result<(), MembershipError> {
        // Adding waits for the learner to catch up, which may take a
        // snapshot transfer.
        let deadline = Duration::from_millis(self.inner.timeouts.snapshot_timeout_ms);
        let kind = pb::request::Kind::MembershipChange(change.to_pb());
        Ok(self.ask_leader(leader, kind, deadline).await?)
    }
}
