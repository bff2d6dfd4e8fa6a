//! The modelled WAN: openraft's network traits over simulated links.
//!
//! Every RPC is encoded with the mesh's own wire conversions (the prost
//! messages QUIC carries in production), and its encoded size plus
//! [`FRAME_OVERHEAD_BYTES`] is what the link carries and what is counted as
//! sent. The receiving site decodes the bytes back before its Raft sees
//! them, so a field the wire format drops would show up here too.
//!
//! A message from `a` to `b` leaves when the link is free (bandwidth: one
//! message at a time per direction, as on one QUIC connection), travels half
//! the round trip plus uniform jitter, and is delivered in order (a QUIC
//! stream does not reorder). A lost packet costs one more round trip (QUIC
//! retransmits; loss shows as latency, not as a lost message). A message to
//! or from a crashed or cut-off site vanishes: the caller sees nothing until
//! its deadline, as with a real peer that stopped answering.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{
    ClientWriteError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use prost::Message as _;
use tokio::time::Instant;
use vomesh_mesh::submitter::Submitter;
use vomesh_mesh::types::{Command, Node, NodeId, Vote};
use vomesh_mesh::wire;

use crate::rng::SimRng;
use crate::scenario::Network;
use crate::types::{SimRaft, SimSnapshot, SimTypes};

/// QUIC short header, stream frame header and AEAD tag around each message,
/// plus the mesh's length prefix: an estimate, per message.
pub const FRAME_OVERHEAD_BYTES: usize = 64;

/// A link's state in one direction.
#[derive(Debug)]
struct Link {
    /// The link's own random sequence (jitter, loss): the order in which
    /// sites send on *different* links at one instant cannot shift it.
    /// (tokio wakes the receivers of a watch channel, such as openraft's
    /// metrics, in an order drawn from an unseeded RNG; tasks woken at the
    /// same instant may therefore run in either order.)
    rng: SimRng,
    /// When the last message finishes leaving the sender.
    free_at: Option<Instant>,
    /// When the last message arrives (later messages never overtake it).
    last_arrival: Option<Instant>,
}

#[derive(Debug)]
struct WanState {
    rtt_ms: BTreeMap<(NodeId, NodeId), f64>,
    params: Network,
    links: BTreeMap<(NodeId, NodeId), Link>,
    /// Sites whose links are all cut.
    isolated: BTreeSet<NodeId>,
    /// Running sites.
    up: BTreeMap<NodeId, SimRaft>,
    /// Where each running site's proposals enter its Raft, as in production.
    submitters: BTreeMap<NodeId, Arc<Submitter<SimTypes>>>,
    bytes_sent: BTreeMap<NodeId, u64>,
    /// Each link's random sequence is seeded from this and its ends.
    seed: u64,
}

/// The network between the simulated sites.
#[derive(Clone, Debug)]
pub struct Wan(Arc<Mutex<WanState>>);

/// The message did not arrive (site down or cut off).
#[derive(Debug)]
pub struct Vanished;

impl Wan {
    pub fn new(rtt_ms: BTreeMap<(NodeId, NodeId), f64>, params: Network, mut rng: SimRng) -> Self {
        Self(Arc::new(Mutex::new(WanState {
            rtt_ms,
            params,
            links: BTreeMap::new(),
            isolated: BTreeSet::new(),
            up: BTreeMap::new(),
            submitters: BTreeMap::new(),
            bytes_sent: BTreeMap::new(),
            seed: rng.next_u64(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, WanState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts a site on the network, its proposals submitted to `raft` at
    /// most `batch_max` at a time.
    pub fn set_up(&self, site: NodeId, raft: SimRaft, batch_max: usize) {
        let submitter = Arc::new(Submitter::start(raft.clone(), batch_max));
        let mut state = self.lock();
        state.up.insert(site, raft);
        state.submitters.insert(site, submitter);
    }

    /// Takes a site off the network (it crashed); returns its Raft to stop.
    pub fn set_down(&self, site: NodeId) -> Option<SimRaft> {
        let mut state = self.lock();
        state.submitters.remove(&site);
        state.up.remove(&site)
    }

    pub fn submitter(&self, site: NodeId) -> Option<Arc<Submitter<SimTypes>>> {
        self.lock().submitters.get(&site).cloned()
    }

    pub fn raft(&self, site: NodeId) -> Option<SimRaft> {
        self.lock().up.get(&site).cloned()
    }

    pub fn running(&self) -> BTreeMap<NodeId, SimRaft> {
        self.lock().up.clone()
    }

    pub fn isolate(&self, site: NodeId) {
        self.lock().isolated.insert(site);
    }

    pub fn heal(&self) {
        self.lock().isolated.clear();
    }

    pub fn is_isolated(&self, site: NodeId) -> bool {
        self.lock().isolated.contains(&site)
    }

    pub fn bytes_sent(&self) -> BTreeMap<NodeId, u64> {
        self.lock().bytes_sent.clone()
    }

    pub fn rtt_ms(&self, a: NodeId, b: NodeId) -> f64 {
        self.lock().rtt_ms.get(&(a, b)).copied().unwrap_or(0.0)
    }

    fn reachable(state: &WanState, from: NodeId, to: NodeId) -> bool {
        state.up.contains_key(&from)
            && state.up.contains_key(&to)
            && !state.isolated.contains(&from)
            && !state.isolated.contains(&to)
    }

    /// Carries `bytes` from `from` to `to`; returns the receiver's Raft on
    /// arrival, or [`Vanished`] if either end was down or cut off when it
    /// left or when it arrived.
    pub async fn carry(&self, from: NodeId, to: NodeId, bytes: usize) -> Result<SimRaft, Vanished> {
        let arrival = {
            let mut state = self.lock();
            if !Self::reachable(&state, from, to) {
                return Err(Vanished);
            }
            let now = Instant::now();
            let rtt = state.rtt_ms.get(&(from, to)).copied().unwrap_or(0.0);
            let Network {
                jitter_ms,
                loss,
                bandwidth_mbps,
            } = state.params;
            let wire_bytes = bytes + FRAME_OVERHEAD_BYTES;
            let transmit =
                Duration::from_secs_f64(wire_bytes as f64 * 8.0 / (bandwidth_mbps * 1e6));
            *state.bytes_sent.entry(from).or_default() += wire_bytes as u64;
            let seed = state.seed;
            let link = state.links.entry((from, to)).or_insert_with(|| Link {
                rng: SimRng::new(seed ^ (from << 32) ^ to).fork(),
                free_at: None,
                last_arrival: None,
            });
            let mut one_way_ms = rtt / 2.0 + jitter_ms * link.rng.unit();
            let mut retransmits = 0;
            while retransmits < 8 && link.rng.chance(loss) {
                one_way_ms += rtt.max(1.0);
                retransmits += 1;
            }
            let start = link.free_at.map_or(now, |t| t.max(now));
            let sent = start + transmit;
            link.free_at = Some(sent);
            let arrival = (sent + Duration::from_secs_f64(one_way_ms / 1000.0))
                .max(link.last_arrival.unwrap_or(now));
            link.last_arrival = Some(arrival);
            arrival
        };
        tokio::time::sleep_until(arrival).await;
        let state = self.lock();
        if !Self::reachable(&state, from, to) {
            return Err(Vanished);
        }
        state.up.get(&to).cloned().ok_or(Vanished)
    }

    /// Proposes `command` at `leader` on behalf of `from`: the forwarded
    /// proposal of the mesh (`ForwardProposal`), one round trip plus the
    /// commit. `None`: not appended there (not the leader, or unreachable
    /// before or after).
    pub async fn forward_proposal(
        &self,
        from: NodeId,
        leader: NodeId,
        command: Command,
    ) -> Option<Result<u64, ClientWriteError<SimTypes>>> {
        self.carry(from, leader, command.0.len()).await.ok()?;
        let submitter = self.submitter(leader)?;
        let result = match submitter.write(command.0).await {
            Ok(written) => Ok(written.log_id.index),
            Err(RaftError::APIError(e)) => Err(e),
            Err(RaftError::Fatal(_)) => return None,
        };
        // The reply: the log index and the encoded CommandReply.
        self.carry(leader, from, 64).await.ok()?;
        Some(result)
    }
}

/// Runs `rpc` with `deadline`. An RPC whose message vanished waits out
/// its deadline: the caller of a peer that stopped answering learns nothing
/// sooner.
async fn within<T>(
    deadline: Duration,
    rpc: impl Future<Output = Result<T, Vanished>>,
) -> Result<T, Unreachable<SimTypes>> {
    let until = Instant::now() + deadline;
    match tokio::time::timeout_at(until, rpc).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Vanished)) => {
            tokio::time::sleep_until(until).await;
            Err(unreachable("no answer before the deadline"))
        }
        Err(_) => Err(unreachable("no answer before the deadline")),
    }
}

/// Creates a site's clients to its peers (they never dial: the links exist).
pub struct SimNetworkFactory {
    pub site: NodeId,
    pub wan: Wan,
}

impl RaftNetworkFactory<SimTypes> for SimNetworkFactory {
    type Network = SimPeer;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> SimPeer {
        SimPeer {
            from: self.site,
            to: target,
            wan: self.wan.clone(),
        }
    }
}

/// One site's client to one peer.
pub struct SimPeer {
    from: NodeId,
    to: NodeId,
    wan: Wan,
}

impl SimPeer {
    fn deadline(option: &RPCOption, bytes: usize, wan: &Wan) -> Duration {
        // As the mesh's network: the RPC deadline plus the time its bytes
        // need on the wire.
        let bandwidth = wan.lock().params.bandwidth_mbps;
        option.soft_ttl() + Duration::from_secs_f64(bytes as f64 * 8.0 / (bandwidth * 1e6))
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<SimTypes> {
    Unreachable::from_string(e)
}

impl RaftNetworkV2<SimTypes> for SimPeer {
    type SnapshotData = bytes::Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<SimTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<SimTypes>, RPCError<SimTypes>> {
        let request = wire::append_request_to_pb(&rpc).map_err(unreachable)?;
        let bytes = request.encoded_len();
        let deadline = Self::deadline(&option, bytes, &self.wan);
        let (from, to, wan) = (self.from, self.to, &self.wan);
        let trip = async move {
            let raft = wan.carry(from, to, bytes).await?;
            let rpc = wire::append_request_from_pb(request).map_err(|_| Vanished)?;
            let resp = raft.append_entries(rpc).await.map_err(|_| Vanished)?;
            let resp = wire::append_response_to_pb(&resp);
            wan.carry(to, from, resp.encoded_len()).await?;
            Ok(resp)
        };
        let resp = within(deadline, trip).await?;
        Ok(wire::append_response_from_pb(resp).map_err(unreachable)?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<SimTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<SimTypes>, RPCError<SimTypes>> {
        self.vote_rpc(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<SimTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<SimTypes>, RPCError<SimTypes>> {
        self.vote_rpc(rpc, option, true).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SimSnapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<SimTypes>, StreamingError<SimTypes>> {
        let meta = wire::snapshot_meta_to_pb(&snapshot.meta).map_err(unreachable)?;
        let bytes = snapshot.snapshot.len() + meta.encoded_len();
        let deadline = Self::deadline(&option, bytes, &self.wan);
        let (from, to, wan) = (self.from, self.to, &self.wan);
        let trip = async move {
            let raft = wan.carry(from, to, bytes).await?;
            let resp = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|_| Vanished)?;
            wan.carry(to, from, wire::vote_to_pb(&resp.vote).encoded_len())
                .await?;
            Ok(resp)
        };
        // biased: tokio's unbiased select draws from an unseeded RNG.
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            resp = within(deadline, trip) => Ok(resp?),
        }
    }
}

impl SimPeer {
    async fn vote_rpc(
        &mut self,
        rpc: VoteRequest<SimTypes>,
        option: RPCOption,
        pre_vote: bool,
    ) -> Result<VoteResponse<SimTypes>, RPCError<SimTypes>> {
        let request = wire::vote_request_to_pb(&rpc);
        let bytes = request.encoded_len();
        let deadline = Self::deadline(&option, bytes, &self.wan);
        let (from, to, wan) = (self.from, self.to, &self.wan);
        let trip = async move {
            let raft = wan.carry(from, to, bytes).await?;
            let rpc = wire::vote_request_from_pb(request).map_err(|_| Vanished)?;
            let resp = if pre_vote {
                raft.pre_vote(rpc).await
            } else {
                raft.vote(rpc).await
            };
            let resp = wire::vote_response_to_pb(&resp.map_err(|_| Vanished)?);
            wan.carry(to, from, resp.encoded_len()).await?;
            Ok(resp)
        };
        let resp = within(deadline, trip).await?;
        Ok(wire::vote_response_from_pb(resp).map_err(unreachable)?)
    }
}
