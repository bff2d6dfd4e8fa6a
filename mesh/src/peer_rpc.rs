//! Serves the RPCs peers send to this node: Raft's own (appends, votes,
//! snapshots, leadership transfers), proposals and read-index requests
//! forwarded by followers, and membership changes and leadership handovers
//! asked at another node. Every Raft message must carry
//! the authenticated peer's own id in its vote: a node campaigns and leads
//! only as itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use openraft::ReadPolicy;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::base::BoxStream;
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use vomesh_proto::mesh as pb;

use crate::leadership::handover_response;
use crate::membership::{Change, change_response};
use crate::node::{Inner, MeshNode};
use crate::snapshot_data::SnapshotData;
use crate::transport::{RpcHandler, error, error_response};
use crate::types::{MeshTypes, NodeId, StateMachine};
use crate::wire;

/// Serves the RPCs peers send to this node.
pub(crate) struct Handler<S: StateMachine> {
    pub(crate) inner: Arc<Inner<S>>,
}

/// Notes that `peer` just sent a well-formed append (or heartbeat), if it
/// is the leader this node follows: the freshness behind
/// [`crate::node::NodeStatus::leader_silent_ms`].
fn heard_from<S: StateMachine>(inner: &Inner<S>, peer: NodeId) {
    if inner.raft.metrics().borrow_watched().current_leader == Some(peer) {
        *inner
            .leader_contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
    }
}

fn unauthenticated(peer: NodeId, claimed: u64) -> pb::Response {
    error_response(
        pb::ErrorKind::Unauthenticated,
        format!("node {peer} may not speak for node {claimed}"),
    )
}

fn unavailable(e: impl std::fmt::Display) -> pb::Response {
    error_response(pb::ErrorKind::Unavailable, e.to_string())
}

fn bad_request(e: impl std::fmt::Display) -> pb::Response {
    error_response(pb::ErrorKind::BadRequest, e.to_string())
}

fn response(kind: pb::response::Kind) -> pb::Response {
    pb::Response { kind: Some(kind) }
}

fn not_leader(f: &ForwardToLeader<MeshTypes>) -> pb::Response {
    pb::Response {
        kind: Some(pb::response::Kind::Error(not_leader_error(f))),
    }
}

fn not_leader_error(f: &ForwardToLeader<MeshTypes>) -> pb::Error {
    pb::Error {
        kind: pb::ErrorKind::NotLeader as i32,
        message: f.to_string(),
        leader_id: f.leader_id,
    }
}

/// Batches of a forwarding stream proposed and not yet answered, at most:
/// past them the leader stops reading the stream, and QUIC's flow control
/// holds the follower back. Each batch's proposals hold this node's
/// permits for proposals in flight, the limit that counts; this only keeps
/// a follower from queueing batches without end. Twice a follower's
/// default of batches in flight.
const FORWARDED_BATCHES_AHEAD: usize = 32;

/// What became of a forwarded command.
type Forwarded = Result<pb::ForwardProposalResponse, pb::Error>;

impl<S: StateMachine> Handler<S> {
    /// Proposes a command a follower forwarded: it is queued for the Raft
    /// core by this call (so commands take log indexes in the order of the
    /// calls), and the future answers once it is applied here. Refused at
    /// once when this node has its limit of proposals in flight: the
    /// proposer holds its own slot and deadline, and learns that nothing
    /// was appended.
    fn propose_forwarded(
        inner: &Inner<S>,
        command: Bytes,
    ) -> impl Future<Output = Forwarded> + Send + use<S> {
        let refused = |kind, message| {
            futures_util::future::Either::Left(async move { Err(error(kind, message)) })
        };
        if command.len() > inner.command_bytes_max {
            return refused(
                pb::ErrorKind::BadRequest,
                format!(
                    "command of {} bytes exceeds the limit of {}",
                    command.len(),
                    inner.command_bytes_max
                ),
            );
        }
        let Ok(slot) = inner.proposals_in_flight.clone().try_acquire_owned() else {
            return refused(
                pb::ErrorKind::Overloaded,
                format!("{} proposals in flight", inner.proposals_in_flight_max),
            );
        };
        let budget = Duration::from_millis(inner.timeouts.propose_timeout_ms);
        let write = inner.submitter.write(command);
        futures_util::future::Either::Right(async move {
            let _slot = slot;
            match tokio::time::timeout(budget, write).await {
                Err(_) => Err(error(
                    pb::ErrorKind::Unavailable,
                    "not committed before the deadline".into(),
                )),
                Ok(Ok(written)) => Ok(pb::ForwardProposalResponse {
                    index: written.log_id.index,
                    response: written.response.0,
                }),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    Err(not_leader_error(&f))
                }
                Ok(Err(e)) => Err(error(pb::ErrorKind::Unavailable, e.to_string())),
            }
        })
    }

    /// Proposes a batch of forwarded commands, in order, now; the future
    /// answers with every command's outcome, in the same order. A batch of
    /// more than could ever be taken in flight at once is refused whole,
    /// before a future is made for each (the sender then forwards them one
    /// per request).
    fn propose_batch(
        inner: &Inner<S>,
        batch: pb::ForwardProposals,
    ) -> impl Future<Output = pb::Response> + Send + use<S> {
        if batch.commands.len() > inner.proposals_in_flight_max {
            let refused = bad_request(format!(
                "{} proposals in one batch exceed the limit of {} in flight",
                batch.commands.len(),
                inner.proposals_in_flight_max
            ));
            return futures_util::future::Either::Left(std::future::ready(refused));
        }
        // Proposed together, so that openraft appends them together.
        let proposed: Vec<_> = batch
            .commands
            .into_iter()
            .map(|command| Self::propose_forwarded(inner, command))
            .collect();
        futures_util::future::Either::Right(async move {
            let outcomes = futures_util::future::join_all(proposed)
                .await
                .into_iter()
                .map(|outcome| pb::ForwardOutcome {
                    outcome: Some(match outcome {
                        Ok(committed) => pb::forward_outcome::Outcome::Committed(committed),
                        Err(refused) => pb::forward_outcome::Outcome::Refused(refused),
                    }),
                })
                .collect();
            response(pb::response::Kind::ForwardProposals(
                pb::ForwardProposalsResponse { outcomes },
            ))
        })
    }
}

impl<S: StateMachine> RpcHandler for Handler<S> {
    fn append_stream(
        &self,
        peer: NodeId,
        requests: BoxStream<'static, pb::AppendEntriesRequest>,
    ) -> BoxStream<'static, pb::Response> {
        // Requests are converted until one is invalid (or not from the
        // authenticated leader); the stream then ends, and so do the
        // responses once the valid ones are answered.
        let inner = self.inner.clone();
        let input = futures_util::stream::unfold(Some(requests), move |requests| {
            let inner = inner.clone();
            async move {
                let mut requests = requests?;
                let request = requests.next().await?;
                let claimed = request.vote.as_ref().map_or(0, |v| v.node_id);
                if claimed != peer {
                    tracing::warn!(
                        peer,
                        claimed,
                        "mesh: append stream from a node speaking for another"
                    );
                    return None;
                }
                match wire::append_request_from_pb(request) {
                    Ok(request) => {
                        heard_from(&inner, peer);
                        Some((request, Some(requests)))
                    }
                    Err(e) => {
                        tracing::info!(peer, error = %e, "mesh: invalid append on stream");
                        None
                    }
                }
            }
        });
        let responses = self
            .inner
            .raft
            .stream_append(input)
            .map(|result| match result {
                Ok(result) => response(pb::response::Kind::AppendStream(
                    wire::stream_result_to_pb(&result),
                )),
                Err(fatal) => unavailable(fatal),
            });
        Box::pin(responses)
    }

    fn forward_stream(
        &self,
        _peer: NodeId,
        requests: BoxStream<'static, pb::ForwardProposals>,
    ) -> BoxStream<'static, pb::Response> {
        // A batch is proposed when `buffered` takes it from the stream,
        // which it does in order, and only once the batches before it are
        // proposed: so the commands take log indexes in the order the
        // follower sent them. The answers come back in the same order.
        let inner = self.inner.clone();
        let proposed = requests.map(move |batch| Self::propose_batch(&inner, batch));
        Box::pin(proposed.buffered(FORWARDED_BATCHES_AHEAD))
    }

    async fn handle(
        &self,
        peer: NodeId,
        request: pb::request::Kind,
        snapshot: Option<Bytes>,
    ) -> pb::Response {
        let raft = &self.inner.raft;
        // A node campaigns and leads only as itself: the vote inside a Raft
        // RPC must name the authenticated peer.
        let voter = |vote: &Option<pb::Vote>| vote.as_ref().map_or(0, |v| v.node_id);
        match request {
            pb::request::Kind::AppendEntries(req) => {
                if voter(&req.vote) != peer {
                    return unauthenticated(peer, voter(&req.vote));
                }
                let req = match wire::append_request_from_pb(req) {
                    Ok(req) => req,
                    Err(e) => return bad_request(e),
                };
                let result = raft.append_entries(req).await;
                heard_from(&self.inner, peer);
                match result {
                    Ok(resp) => response(pb::response::Kind::AppendEntries(
                        wire::append_response_to_pb(&resp),
                    )),
                    Err(e) => unavailable(e),
                }
            }
            pb::request::Kind::Vote(req) | pb::request::Kind::PreVote(req)
                if voter(&req.vote) != peer =>
            {
                unauthenticated(peer, voter(&req.vote))
            }
            pb::request::Kind::Vote(req) => match wire::vote_request_from_pb(req) {
                Err(e) => bad_request(e),
                Ok(req) => match raft.vote(req).await {
                    Ok(resp) => {
                        response(pb::response::Kind::Vote(wire::vote_response_to_pb(&resp)))
                    }
                    Err(e) => unavailable(e),
                },
            },
            pb::request::Kind::PreVote(req) => match wire::vote_request_from_pb(req) {
                Err(e) => bad_request(e),
                Ok(req) => match raft.pre_vote(req).await {
                    Ok(resp) => {
                        response(pb::response::Kind::Vote(wire::vote_response_to_pb(&resp)))
                    }
                    Err(e) => unavailable(e),
                },
            },
            pb::request::Kind::TransferLeader(req) => {
                if voter(&req.from_leader) != peer {
                    return unauthenticated(peer, voter(&req.from_leader));
                }
                match wire::transfer_request_from_pb(req) {
                    Err(e) => bad_request(e),
                    Ok(req) => match raft.handle_transfer_leader(req).await {
                        Ok(resp) => response(pb::response::Kind::TransferLeader(
                            wire::transfer_response_to_pb(&resp),
                        )),
                        Err(e) => unavailable(e),
                    },
                }
            }
            pb::request::Kind::Snapshot(offer) => {
                if voter(&offer.vote) != peer {
                    return unauthenticated(peer, voter(&offer.vote));
                }
                let (Some(vote), Some(meta), Some(data)) = (offer.vote, offer.meta, snapshot)
                else {
                    return bad_request("snapshot offer without vote, meta or data");
                };
                let meta = match wire::snapshot_meta_from_pb(&meta) {
                    Ok(meta) => meta,
                    Err(e) => return bad_request(e),
                };
                let snapshot = crate::types::Snapshot {
                    meta,
                    snapshot: SnapshotData::InMemory(data),
                };
                match raft
                    .install_full_snapshot(wire::vote_from_pb(&vote), snapshot)
                    .await
                {
                    Ok(resp) => response(pb::response::Kind::Snapshot(pb::SnapshotResponse {
                        vote: Some(wire::vote_to_pb(&resp.vote)),
                    })),
                    Err(e) => unavailable(e),
                }
            }
            pb::request::Kind::ForwardProposal(p) => {
                match Self::propose_forwarded(&self.inner, p.command).await {
                    Ok(committed) => response(pb::response::Kind::ForwardProposal(committed)),
                    Err(refused) => pb::Response {
                        kind: Some(pb::response::Kind::Error(refused)),
                    },
                }
            }
            pb::request::Kind::ForwardProposals(batch) => {
                Self::propose_batch(&self.inner, batch).await
            }
            pb::request::Kind::ForwardStream(_) => {
                bad_request("forwarding stream opened as a unary request")
            }
            pb::request::Kind::AppendStream(_) => {
                bad_request("append stream opened as a unary request")
            }
            pb::request::Kind::Status(_) => {
                let node = MeshNode {
                    inner: self.inner.clone(),
                };
                response(pb::response::Kind::Status(Box::new(wire::status_to_pb(
                    &node.status(),
                ))))
            }
            pb::request::Kind::HandLeadership(asked) => {
                let node = MeshNode {
                    inner: self.inner.clone(),
                };
                handover_response(node.hand_leadership_here(asked.to_node_id).await)
            }
            pb::request::Kind::MembershipChange(change) => match Change::from_pb(change) {
                None => bad_request("membership change without a change"),
                Some(change) => {
                    let node = MeshNode {
                        inner: self.inner.clone(),
                    };
                    change_response(node.change_membership_here(change).await)
                }
            },
            pb::request::Kind::ReadIndex(_) => match raft
                .get_read_linearizer(ReadPolicy::ReadIndex)
                .await
            {
                Ok(linearizer) => response(pb::response::Kind::ReadIndex(pb::ReadIndexResponse {
                    index: linearizer.read_log_id().index(),
                })),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                    not_leader(&f)
                }
                Err(e) => unavailable(e),
            },
        }
    }
}
