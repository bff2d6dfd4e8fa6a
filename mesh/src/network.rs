//! openraft's network client for the mesh: one [`PeerClient`] per peer and
//! purpose (replication, heartbeats, snapshots), each RPC a stream on the
//! peer's shared QUIC connection (see [`crate::transport`]).
//!
//! Heartbeats get a higher stream priority and snapshots a lower one, so on
//! a contended link a heartbeat is sent before a large append or snapshot
//! chunk. Replication is pipelined: openraft's stream of appends gets one
//! QUIC stream for its session, where requests are written without waiting
//! for the previous answer (up to `APPEND_PIPELINE_DEPTH`) and answered in
//! order, so the follower's fsync of one batch overlaps the transfer of the
//! next. Every failure is reported to openraft as `Unreachable`, which makes
//! it back off.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use prost::Message;
use vomesh_proto::mesh as pb;

use crate::snapshot_data::SnapshotData;
use crate::transport::{Transport, read_frame, write_frame};
use crate::types::{MeshTypes, Node, NodeId, Snapshot, Vote};
use crate::wire;

/// Stream priorities (higher is sent first by quinn when a connection's
/// send window is contended).
const PRIORITY_HEARTBEAT: i32 = 10;
const PRIORITY_REPLICATION: i32 = 0;
const PRIORITY_SNAPSHOT: i32 = -10;

/// openraft's network factory: hands out clients for peers, never dialling.
pub struct NetworkFactory {
    transport: Arc<Transport>,
}

impl NetworkFactory {
    pub fn new(transport: Arc<Transport>) -> Self {
        Self { transport }
    }

    fn client(&self, target: NodeId, node: &Node, priority: i32) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
            priority,
        }
    }
}

impl RaftNetworkFactory<MeshTypes> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(target, node, PRIORITY_REPLICATION)
    }

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(target, node, PRIORITY_HEARTBEAT)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(target, node, PRIORITY_SNAPSHOT)
    }
}

/// openraft's client for one peer; every call is one stream on the shared
/// connection.
pub struct PeerClient {
    transport: Arc<Transport>,
    target: NodeId,
    addr: String,
    priority: i32,
}

/// How long a peer may take over a message: openraft's deadline, plus the
/// time its bytes take at the slowest rate a live peer is expected to keep
/// (`TransportLimits::peer_bytes_per_second_min`). A large batch of large
/// commands is then not mistaken for a dead follower, while a follower that
/// stops answering is still noticed within about a heartbeat.
#[derive(Clone, Copy, Debug)]
struct Pace {
    base: Duration,
    bytes_per_second: u64,
}

impl Pace {
    fn deadline(&self, bytes: usize) -> Duration {
        let transfer_ms = (bytes as u64).saturating_mul(1000) / self.bytes_per_second.max(1);
        self.base + Duration::from_millis(transfer_ms)
    }
}

/// Append requests in flight on one append stream before the writer waits
/// for responses: enough to cover a round trip of batches at WAN latency,
/// few enough that a stalled follower does not buffer much.
const APPEND_PIPELINE_DEPTH: usize = 16;

/// Writes `input` to the append stream; tells the reader, through `sent`,
/// the deadline of each request's response (or the failure that ended the
/// writing). A request must be written, and answered, within openraft's
/// deadline stretched by its size (see [`Pace`]).
async fn write_appends<St>(
    mut send: quinn::SendStream,
    mut input: St,
    sent: tokio::sync::mpsc::Sender<Result<Duration, String>>,
    pace: Pace,
) where
    St: Stream<Item = AppendEntriesRequest<MeshTypes>> + Send + Unpin + 'static,
{
    while let Some(request) = input.next().await {
        // Waits while the pipeline is full; fails once the reader is gone.
        let Ok(permit) = sent.reserve().await else {
            return;
        };
        let written = match wire::append_request_to_pb(&request) {
            Ok(pb) => {
                let deadline = pace.deadline(pb.encoded_len());
                match tokio::time::timeout(deadline, write_frame(&mut send, &pb)).await {
                    Ok(Ok(())) => Ok(deadline),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("append not written within {deadline:?}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let failed = written.is_err();
        permit.send(written);
        if failed {
            return;
        }
    }
    let _ = send.finish();
}

fn decode_stream_response(
    frame: Bytes,
) -> Result<StreamAppendResult<MeshTypes>, Unreachable<MeshTypes>> {
    match pb::Response::decode(frame).map_err(unreachable)?.kind {
        Some(pb::response::Kind::AppendStream(result)) => {
            wire::stream_result_from_pb(result).map_err(unreachable)
        }
        other => Err(unreachable(format!(
            "unexpected append stream response {other:?}"
        ))),
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<MeshTypes> {
    Unreachable::from_string(e)
}

impl PeerClient {
    async fn call(
        &self,
        kind: pb::request::Kind,
        snapshot: Option<SnapshotData>,
        deadline: Duration,
    ) -> Result<pb::response::Kind, Unreachable<MeshTypes>> {
        let response = self
            .transport
            .call(
                self.target,
                &self.addr,
                kind,
                snapshot,
                self.priority,
                deadline,
            )
            .await
            .map_err(unreachable)?;
        response.kind.ok_or_else(|| unreachable("empty response"))
    }

    async fn vote_rpc(
        &self,
        kind: pb::request::Kind,
        option: RPCOption,
    ) -> Result<VoteResponse<MeshTypes>, RPCError<MeshTypes>> {
        match self.call(kind, None, option.soft_ttl()).await? {
            pb::response::Kind::Vote(resp) => {
                Ok(wire::vote_response_from_pb(resp).map_err(unreachable)?)
            }
            other => Err(unreachable(format!("unexpected response {other:?}")).into()),
        }
    }
}

impl RaftNetworkV2<MeshTypes> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MeshTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MeshTypes>, RPCError<MeshTypes>> {
        let request = wire::append_request_to_pb(&rpc).map_err(unreachable)?;
        let kind = pb::request::Kind::AppendEntries(request);
        match self.call(kind, None, option.soft_ttl()).await? {
            pb::response::Kind::AppendEntries(resp) => {
                Ok(wire::append_response_from_pb(resp).map_err(unreachable)?)
            }
            other => Err(unreachable(format!("unexpected response {other:?}")).into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MeshTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<MeshTypes>, RPCError<MeshTypes>> {
        self.vote_rpc(
            pb::request::Kind::Vote(wire::vote_request_to_pb(&rpc)),
            option,
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<MeshTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<MeshTypes>, RPCError<MeshTypes>> {
        self.vote_rpc(
            pb::request::Kind::PreVote(wire::vote_request_to_pb(&rpc)),
            option,
        )
        .await
    }

    /// Pipelined replication on one QUIC stream: requests are written as
    /// openraft produces them, without waiting for the previous response, up
    /// to `APPEND_PIPELINE_DEPTH` unanswered; the single stream keeps them in
    /// order, and the follower answers them in order. Each request must be
    /// written, and then answered, within the RPC deadline stretched by its
    /// size (`Pace`), so an idle stream never times out but a stalled
    /// follower is detected.
    fn stream_append<'s, St>(
        &'s mut self,
        input: St,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<MeshTypes>, RPCError<MeshTypes>>>,
            RPCError<MeshTypes>,
        >,
    >
    where
        St: Stream<Item = AppendEntriesRequest<MeshTypes>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let deadline = option.soft_ttl();
            let header = pb::request::Kind::AppendStream(pb::AppendStreamOpen {});
            let (connection, send, recv) = self
                .transport
                .open_stream(self.target, &self.addr, header, self.priority, deadline)
                .await
                .map_err(unreachable)?;
            let (sent_tx, sent_rx) = tokio::sync::mpsc::channel(APPEND_PIPELINE_DEPTH);
            let pace = Pace {
                base: deadline,
                bytes_per_second: self.transport.limits.peer_bytes_per_second_min,
            };
            tokio::spawn(write_appends(send, input, sent_tx, pace));
            let max = self.transport.limits.frame_bytes_max;
            let transport = self.transport.clone();
            let target = self.target;
            let state = Some((recv, sent_rx));
            let responses = futures_util::stream::unfold(state, move |state| {
                let transport = transport.clone();
                let connection = connection.clone();
                async move {
                    let (mut recv, mut sent_rx) = state?;
                    // One response is owed per request the writer sent; none
                    // owed (and the writer done) ends the stream.
                    let result = match sent_rx.recv().await? {
                        Err(reason) => Err(unreachable(reason)),
                        Ok(answer_within) => {
                            match tokio::time::timeout(answer_within, read_frame(&mut recv, max))
                                .await
                            {
                                Err(_) => Err(unreachable(format!(
                                    "no append response within {answer_within:?}"
                                ))),
                                Ok(Err(e)) => Err(unreachable(e)),
                                Ok(Ok(frame)) => decode_stream_response(frame),
                            }
                        }
                    };
                    match result {
                        Ok(r) => Some((Ok(r), Some((recv, sent_rx)))),
                        Err(e) => {
                            transport.forget(target, &connection);
                            Some((Err(e.into()), None))
                        }
                    }
                }
            });
            let responses: BoxStream<'s, _> = Box::pin(responses);
            Ok(responses)
        })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<MeshTypes>, StreamingError<MeshTypes>> {
        let bytes = snapshot.snapshot.len();
        let index = snapshot.meta.last_log_id.map_or(0, |id| id.index);
        let offer = pb::SnapshotOffer {
            vote: Some(wire::vote_to_pb(&vote)),
            meta: Some(wire::snapshot_meta_to_pb(&snapshot.meta).map_err(unreachable)?),
            total_bytes: bytes,
        };
        let started = std::time::Instant::now();
        let transfer = self.call(
            pb::request::Kind::Snapshot(offer),
            Some(snapshot.snapshot),
            option.soft_ttl(),
        );
        let sent = tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            response = transfer => match response {
                Ok(pb::response::Kind::Snapshot(resp)) => {
                    let vote = resp.vote.as_ref().map(wire::vote_from_pb).ok_or_else(|| unreachable("snapshot response without vote"))?;
                    Ok(SnapshotResponse::new(vote))
                }
                Ok(other) => Err(unreachable(format!("unexpected response {other:?}")).into()),
                Err(e) => Err(e.into()),
            },
        };
        // Sending a whole snapshot means a peer fell behind the log kept
        // after compaction: rare, costly, and worth an operator's attention.
        let outcome = if sent.is_ok() { "sent" } else { "failed" };
        metrics::counter!("vomesh_raft_snapshots_sent_total", "peer" => self.target.to_string(), "outcome" => outcome)
            .increment(1);
        match &sent {
            Ok(_) => tracing::info!(
                peer = self.target,
                index,
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "mesh: snapshot sent"
            ),
            Err(e) => {
                tracing::warn!(peer = self.target, index, bytes, error = %e, "mesh: snapshot not sent")
            }
        }
        sent
    }

    /// A leader handing over its leadership (see [`crate::leadership`]).
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<MeshTypes>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<MeshTypes>, RPCError<MeshTypes>> {
        let kind = pb::request::Kind::TransferLeader(wire::transfer_request_to_pb(&req));
        match self.call(kind, None, option.soft_ttl()).await? {
            pb::response::Kind::TransferLeader(resp) => {
                Ok(wire::transfer_response_from_pb(&req, resp))
            }
            other => Err(unreachable(format!("unexpected response {other:?}")).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_append_gets_time_for_its_bytes_on_top_of_the_rpc_deadline() {
        let pace = Pace {
            base: Duration::from_millis(150),
            bytes_per_second: 2 * 1024 * 1024,
        };
        assert_eq!(pace.deadline(0), Duration::from_millis(150));
        assert_eq!(pace.deadline(1024 * 1024), Duration::from_millis(650));
    }
}
