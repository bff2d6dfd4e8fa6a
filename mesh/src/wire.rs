//! Conversion between openraft's in-memory messages and the prost types of
//! `proto/vomesh/mesh.proto`: the one place where the mesh's wire and disk
//! formats meet openraft. Decoding never trusts the peer: a missing field or
//! an unparsable membership is a [`WireError`], never a panic.

use openraft::EntryPayload;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
    TransferLeaderError, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use vomesh_proto::mesh as pb;

use crate::node::{NodeStatus, Role};
use crate::types::{
    Command, Entry, LogId, Membership, MeshTypeConfig, MeshTypes, SnapshotMeta, StoredMembership,
    Vote,
};

/// A message that does not describe a valid openraft value.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("required field `{0}` is missing")]
    Missing(&'static str),
    #[error("membership is not valid JSON: {0}")]
    Membership(#[from] serde_json::Error),
    #[error("protobuf decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

pub fn log_id_to_pb(id: &LogId) -> pb::LogId {
    pb::LogId {
        term: id.leader_id.term,
        node_id: id.leader_id.node_id,
        index: id.index,
    }
}

pub fn log_id_from_pb(id: &pb::LogId) -> LogId {
    LogId::new(
        LeaderId {
            term: id.term,
            node_id: id.node_id,
        },
        id.index,
    )
}

fn opt_log_id_from_pb(id: &Option<pb::LogId>) -> Option<LogId> {
    id.as_ref().map(log_id_from_pb)
}

pub fn vote_to_pb(vote: &Vote) -> pb::Vote {
    pb::Vote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

pub fn vote_from_pb(vote: &pb::Vote) -> Vote {
    if vote.committed {
        Vote::new_committed(vote.term, vote.node_id)
    } else {
        Vote::new(vote.term, vote.node_id)
    }
}

fn required_vote(vote: &Option<pb::Vote>) -> Result<Vote, WireError> {
    vote.as_ref()
        .map(vote_from_pb)
        .ok_or(WireError::Missing("vote"))
}

pub fn entry_to_pb(entry: &Entry) -> Result<pb::Entry, WireError> {
    let payload = match &entry.payload {
        EntryPayload::Blank => pb::entry::Payload::Blank(pb::Empty {}),
        EntryPayload::Normal(cmd) => pb::entry::Payload::Command(cmd.0.clone()),
        EntryPayload::Membership(m) => {
            pb::entry::Payload::MembershipJson(serde_json::to_vec(m)?.into())
        }
    };
    Ok(pb::Entry {
        log_id: Some(log_id_to_pb(&entry.log_id)),
        payload: Some(payload),
    })
}

pub fn entry_from_pb(entry: pb::Entry) -> Result<Entry, WireError> {
    let log_id = entry
        .log_id
        .as_ref()
        .map(log_id_from_pb)
        .ok_or(WireError::Missing("entry.log_id"))?;
    let payload = match entry.payload.ok_or(WireError::Missing("entry.payload"))? {
        pb::entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::entry::Payload::Command(bytes) => EntryPayload::Normal(Command(bytes)),
        pb::entry::Payload::MembershipJson(json) => {
            EntryPayload::Membership(serde_json::from_slice(&json)?)
        }
    };
    Ok(Entry { log_id, payload })
}

pub fn append_request_to_pb<C: MeshTypeConfig>(
    req: &AppendEntriesRequest<C>,
) -> Result<pb::AppendEntriesRequest, WireError> {
    Ok(pb::AppendEntriesRequest {
        vote: Some(vote_to_pb(&req.vote)),
        prev_log_id: req.prev_log_id.as_ref().map(log_id_to_pb),
        entries: req
            .entries
            .iter()
            .map(entry_to_pb)
            .collect::<Result<_, _>>()?,
        leader_commit: req.leader_commit.as_ref().map(log_id_to_pb),
    })
}

pub fn append_request_from_pb<C: MeshTypeConfig>(
    req: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<C>, WireError> {
    Ok(AppendEntriesRequest {
        vote: required_vote(&req.vote)?,
        prev_log_id: opt_log_id_from_pb(&req.prev_log_id),
        leader_commit: opt_log_id_from_pb(&req.leader_commit),
        entries: req
            .entries
            .into_iter()
            .map(entry_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

pub fn append_response_to_pb<C: MeshTypeConfig>(
    resp: &AppendEntriesResponse<C>,
) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match resp {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(matching) => R::PartialSuccess(pb::PartialSuccess {
            matching: matching.as_ref().map(log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

pub fn append_response_from_pb<C: MeshTypeConfig>(
    resp: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<C>, WireError> {
    use pb::append_entries_response::Result as R;
    Ok(
        match resp
            .result
            .ok_or(WireError::Missing("append_entries_response.result"))?
        {
            R::Success(_) => AppendEntriesResponse::Success,
            R::PartialSuccess(p) => {
                AppendEntriesResponse::PartialSuccess(opt_log_id_from_pb(&p.matching))
            }
            R::Conflict(_) => AppendEntriesResponse::Conflict,
            R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from_pb(&v)),
        },
    )
}

pub fn stream_result_to_pb(result: &StreamAppendResult<MeshTypes>) -> pb::AppendStreamResult {
    use pb::append_stream_result::Result as R;
    let result = match result {
        Ok(matching) => R::Matching(pb::PartialSuccess {
            matching: matching.as_ref().map(log_id_to_pb),
        }),
        Err(StreamAppendError::Conflict(prev)) => R::Conflict(log_id_to_pb(prev)),
        Err(StreamAppendError::HigherVote(v)) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendStreamResult {
        result: Some(result),
    }
}

pub fn stream_result_from_pb(
    result: pb::AppendStreamResult,
) -> Result<StreamAppendResult<MeshTypes>, WireError> {
    use pb::append_stream_result::Result as R;
    Ok(
        match result
            .result
            .ok_or(WireError::Missing("append_stream_result.result"))?
        {
            R::Matching(p) => Ok(opt_log_id_from_pb(&p.matching)),
            R::Conflict(prev) => Err(StreamAppendError::Conflict(log_id_from_pb(&prev))),
            R::HigherVote(v) => Err(StreamAppendError::HigherVote(vote_from_pb(&v))),
        },
    )
}

pub fn vote_request_to_pb<C: MeshTypeConfig>(req: &VoteRequest<C>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_pb(&req.vote)),
        last_log_id: req.last_log_id.as_ref().map(log_id_to_pb),
        leadership_transfer: req.leadership_transfer,
    }
}

pub fn vote_request_from_pb<C: MeshTypeConfig>(
    req: pb::VoteRequest,
) -> Result<VoteRequest<C>, WireError> {
    let mut out = VoteRequest::new(
        required_vote(&req.vote)?,
        opt_log_id_from_pb(&req.last_log_id),
    );
    out.leadership_transfer = req.leadership_transfer;
    Ok(out)
}

pub fn vote_response_to_pb<C: MeshTypeConfig>(resp: &VoteResponse<C>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&resp.vote)),
        vote_granted: resp.vote_granted,
        last_log_id: resp.last_log_id.as_ref().map(log_id_to_pb),
    }
}

pub fn vote_response_from_pb<C: MeshTypeConfig>(
    resp: pb::VoteResponse,
) -> Result<VoteResponse<C>, WireError> {
    Ok(VoteResponse::new(
        required_vote(&resp.vote)?,
        opt_log_id_from_pb(&resp.last_log_id),
        resp.vote_granted,
    ))
}

pub fn transfer_request_to_pb<C: MeshTypeConfig>(
    req: &TransferLeaderRequest<C>,
) -> pb::TransferLeaderRequest {
    pb::TransferLeaderRequest {
        from_leader: Some(vote_to_pb(req.from_leader())),
        to_node_id: *req.to_node_id(),
        last_log_id: req.last_log_id().map(log_id_to_pb),
    }
}

pub fn transfer_request_from_pb<C: MeshTypeConfig>(
    req: pb::TransferLeaderRequest,
) -> Result<TransferLeaderRequest<C>, WireError> {
    Ok(TransferLeaderRequest::new(
        required_vote(&req.from_leader)?,
        req.to_node_id,
        opt_log_id_from_pb(&req.last_log_id),
    ))
}

pub fn transfer_response_to_pb<C: MeshTypeConfig>(
    resp: &TransferLeaderResponse<C>,
) -> pb::TransferLeaderResponse {
    let mut out = pb::TransferLeaderResponse::default();
    match resp {
        Ok(()) => {}
        Err(TransferLeaderError::VoteChanged { actual, .. }) => {
            out.vote_changed = Some(vote_to_pb(actual));
        }
        Err(TransferLeaderError::LogNotFlushed { actual, .. }) => {
            out.log_not_flushed = Some(pb::LogIdReached {
                flushed: actual.as_ref().map(log_id_to_pb),
            });
        }
    }
    out
}

/// The answer to `req`, whose vote and last log id are the refusal's
/// expected values (they are not sent back).
pub fn transfer_response_from_pb<C: MeshTypeConfig>(
    req: &TransferLeaderRequest<C>,
    resp: pb::TransferLeaderResponse,
) -> TransferLeaderResponse<C> {
    if let Some(actual) = resp.vote_changed {
        return Err(TransferLeaderError::VoteChanged {
            expected: *req.from_leader(),
            actual: vote_from_pb(&actual),
        });
    }
    match resp.log_not_flushed {
        Some(reached) => Err(TransferLeaderError::LogNotFlushed {
            expected: req.last_log_id().copied(),
            actual: opt_log_id_from_pb(&reached.flushed),
        }),
        None => Ok(()),
    }
}

pub fn snapshot_meta_to_pb(meta: &SnapshotMeta) -> Result<pb::SnapshotMeta, WireError> {
    Ok(pb::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(log_id_to_pb),
        last_membership_log_id: meta.last_membership.log_id().as_ref().map(log_id_to_pb),
        last_membership_json: serde_json::to_vec(meta.last_membership.membership())?.into(),
    })
}

pub fn snapshot_meta_from_pb(meta: &pb::SnapshotMeta) -> Result<SnapshotMeta, WireError> {
    let membership: Membership = serde_json::from_slice(&meta.last_membership_json)?;
    Ok(SnapshotMeta {
        last_log_id: opt_log_id_from_pb(&meta.last_log_id),
        last_membership: StoredMembership::new(
            opt_log_id_from_pb(&meta.last_membership_log_id),
            membership,
        ),
    })
}

pub fn status_to_pb(status: &NodeStatus) -> pb::NodeStatus {
    let role = match status.role {
        Role::Leader => pb::Role::Leader,
        Role::Follower => pb::Role::Follower,
        Role::Candidate => pb::Role::Candidate,
        Role::Learner => pb::Role::Learner,
        Role::Shutdown => pb::Role::Shutdown,
    };
    pb::NodeStatus {
        id: status.id,
        role: role as i32,
        term: status.term,
        leader: status.leader,
        last_log_index: status.last_log_index,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        purged_index: status.purged_index,
        voters: status.voters.clone().into_iter().collect(),
        learners: status.learners.clone().into_iter().collect(),
        replication_lag: status.replication_lag.clone().into_iter().collect(),
        clients: status.clients,
        preferred_leader: status.preferred_leader,
    }
}

pub fn status_from_pb(status: pb::NodeStatus) -> Result<NodeStatus, WireError> {
    let role = match pb::Role::try_from(status.role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::Leader => Role::Leader,
        pb::Role::Follower => Role::Follower,
        pb::Role::Candidate => Role::Candidate,
        pb::Role::Learner => Role::Learner,
        pb::Role::Shutdown => Role::Shutdown,
        pb::Role::Unspecified => return Err(WireError::Missing("status.role")),
    };
    Ok(NodeStatus {
        id: status.id,
        role,
        term: status.term,
        leader: status.leader,
        last_log_index: status.last_log_index,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        purged_index: status.purged_index,
        voters: status.voters.into_iter().collect(),
        learners: status.learners.into_iter().collect(),
        replication_lag: status.replication_lag.into_iter().collect(),
        clients: status.clients,
        // Only the node itself judges its leader's silence (readiness).
        leader_silent_ms: None,
        // Round trips are measured by whoever asks.
        peer_rtt_micros: Default::default(),
        preferred_leader: status.preferred_leader,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::types::Node;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            LeaderId {
                term,
                node_id: node,
            },
            index,
        )
    }

    #[test]
    fn every_entry_payload_survives_a_round_trip() {
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([(1, Node::new("a:1")), (2, Node::new("b:2"))]),
        )
        .unwrap();
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Command(bytes::Bytes::from_static(b"publish"))),
            EntryPayload::Membership(membership),
        ] {
            let entry = Entry {
                log_id: log_id(3, 2, 17),
                payload,
            };
            let back = entry_from_pb(entry_to_pb(&entry).unwrap()).unwrap();
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn append_request_without_vote_is_rejected() {
        let req = pb::AppendEntriesRequest::default();
        assert!(matches!(
            append_request_from_pb::<MeshTypes>(req),
            Err(WireError::Missing("vote"))
        ));
    }

    #[test]
    fn every_append_stream_result_survives_a_round_trip() {
        let results: [StreamAppendResult<MeshTypes>; 4] = [
            Ok(None),
            Ok(Some(log_id(2, 1, 9))),
            Err(StreamAppendError::Conflict(log_id(2, 1, 4))),
            Err(StreamAppendError::HigherVote(Vote::new_committed(5, 3))),
        ];
        for result in results {
            assert_eq!(
                stream_result_from_pb(stream_result_to_pb(&result)).unwrap(),
                result
            );
        }
    }

    #[test]
    fn a_leadership_handover_and_every_answer_survive_a_round_trip() {
        let leader = Vote::new_committed(4, 1);
        let req = TransferLeaderRequest::<MeshTypes>::new(leader, 3, Some(log_id(4, 1, 80)));
        let back = transfer_request_from_pb::<MeshTypes>(transfer_request_to_pb(&req)).unwrap();
        assert_eq!(
            (back.from_leader(), back.to_node_id(), back.last_log_id()),
            (req.from_leader(), req.to_node_id(), req.last_log_id())
        );
        let answers: [TransferLeaderResponse<MeshTypes>; 4] = [
            Ok(()),
            Err(TransferLeaderError::VoteChanged {
                expected: leader,
                actual: Vote::new(5, 2),
            }),
            Err(TransferLeaderError::LogNotFlushed {
                expected: Some(log_id(4, 1, 80)),
                actual: Some(log_id(4, 1, 77)),
            }),
            Err(TransferLeaderError::LogNotFlushed {
                expected: Some(log_id(4, 1, 80)),
                actual: None,
            }),
        ];
        for answer in answers {
            assert_eq!(
                transfer_response_from_pb(&req, transfer_response_to_pb(&answer)),
                answer
            );
        }
    }

    #[test]
    fn a_handover_without_the_leader_s_vote_is_rejected() {
        let req = pb::TransferLeaderRequest::default();
        assert!(matches!(
            transfer_request_from_pb::<MeshTypes>(req),
            Err(WireError::Missing("vote"))
        ));
    }

    #[test]
    fn a_node_status_survives_a_round_trip() {
        let status = NodeStatus {
            id: 2,
            role: Role::Leader,
            term: 7,
            leader: Some(2),
            last_log_index: Some(40),
            commit_index: Some(39),
            applied_index: Some(39),
            snapshot_index: None,
            purged_index: None,
            voters: BTreeMap::from([(1, "a:1".into()), (2, "b:2".into())]),
            learners: BTreeMap::from([(3, "c:3".into())]),
            replication_lag: BTreeMap::from([(1, 1), (3, 40)]),
            leader_silent_ms: None,
            clients: Some(12),
            peer_rtt_micros: BTreeMap::new(),
            preferred_leader: Some(1),
        };
        assert_eq!(status_from_pb(status_to_pb(&status)).unwrap(), status);
    }

    #[test]
    fn committed_vote_keeps_its_commitment() {
        let v = Vote::new_committed(7, 3);
        assert_eq!(vote_from_pb(&vote_to_pb(&v)), v);
        let v = Vote::new(7, 3);
        assert_eq!(vote_from_pb(&vote_to_pb(&v)), v);
    }
}
