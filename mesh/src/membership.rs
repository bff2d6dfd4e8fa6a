//! Changing who is in the mesh, the way openraft's production checklist
//! asks: a new node first joins as a learner and receives the log (or a
//! snapshot) until it has caught up, and only then becomes a voter through
//! a joint-consensus membership change (Raft thesis §4.3), so adding a node
//! never stalls commits while it copies history.
//!
//! These calls must run on the leader; elsewhere they fail with
//! [`MembershipError::NotLeader`] naming the leader to ask instead.

use std::collections::BTreeSet;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use crate::node::MeshNode;
use crate::types::{MeshTypes, NodeId, StateMachine};

/// A membership change was not made.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("membership change refused: {0}")]
    Refused(String),
    #[error("mesh is shutting down")]
    ShuttingDown,
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

impl<S: StateMachine> MeshNode<S> {
    /// Adds node `id`, reachable at `addr` (`host:port`), as a voter:
    /// learner first, waiting until it has caught up with the log, then a
    /// voter. Returns once the new membership is committed.
    pub async fn add_member(&self, id: NodeId, addr: String) -> Result<(), MembershipError> {
        let raft = self.raft();
        raft.add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(|e| membership_error(e, self.status().leader))?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| membership_error(e, self.status().leader))?;
        Ok(())
    }

    /// Removes node `id` from the voters and from the cluster. Returns once
    /// the new membership is committed.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MembershipError> {
        self.raft()
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| membership_error(e, self.status().leader))?;
        Ok(())
    }
}
