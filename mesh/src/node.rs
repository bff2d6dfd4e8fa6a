//! A mesh node: wires the redb stores, the QUIC transport and openraft
//! together, and offers the application what it needs — `propose` a
//! command from any node, read the local replica, make a read
//! linearizable, watch the cluster, shut down.
//!
//! Consistency a reader gets:
//! - [`MeshNode::state`] reads the local replica: it reflects a prefix of the
//!   committed log (never anything uncommitted), the same prefix order at
//!   every site, possibly behind the leader by the replication lag;
//! - after `propose` returns at a node, that node's replica already contains
//!   the command (read-your-writes at the proposing site);
//! - after [`MeshNode::ensure_linearizable`] returns, the local replica
//!   contains every command committed before the call started, wherever it
//!   was proposed (ReadIndex through the leader).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::base::BoxStream;
use openraft::errors::{
    ClientWriteError, Fatal, ForwardToLeader, LinearizableReadError, RaftError,
};
use openraft::{BasicNode, Config, ReadPolicy, SnapshotPolicy};
use tokio::time::Instant;
use vomesh_proto::mesh as pb;

use crate::certs::NodeIdentity;
use crate::log_store::{LogStore, StoreOpenError};
use crate::metrics::MetricsExporter;
use crate::state_store::{SharedState, StateOpenError, StateStore};
use crate::transport::{
    NetworkFactory, RpcError, RpcHandler, Transport, TransportError, TransportLimits,
    TransportTimeouts, error_response,
};
use crate::types::{Command, MeshTypes, NodeId, Raft, StateMachine};
use crate::wire;

/// Timing of the mesh. Raft needs `heartbeat < election_min` and an election
/// timeout well above the round trip between sites, or a slow link starts
/// elections. openraft also uses the heartbeat interval as the deadline of
/// each append, so it must exceed the inter-site round trip too.
#[derive(Clone, Debug)]
pub struct MeshTimeouts {
    /// How often the leader sends heartbeats (and the deadline of appends).
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in
    /// `[min, max)` starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Sending and installing a whole snapshot.
    pub snapshot_timeout_ms: u64,
    /// How long `propose` and `ensure_linearizable` wait in all (forwarding,
    /// commit, local apply).
    pub propose_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
}

impl MeshTimeouts {
    /// Nodes on one host or one LAN (round trip well under 1 ms).
    pub fn loopback() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_timeout_ms: 30_000,
            propose_timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
            idle_timeout_ms: 5_000,
            keep_alive_interval_ms: 1_000,
        }
    }

    /// Sites on different continents (round trip up to ~300 ms): the
    /// heartbeat (and append deadline) at about 2× the worst round trip, the
    /// election timeout at 5–10× it, so one slow exchange never looks like a
    /// dead leader. Failover then takes 3–6 s.
    pub fn wan() -> Self {
        Self {
            heartbeat_interval_ms: 600,
            election_timeout_min_ms: 3_000,
            election_timeout_max_ms: 6_000,
            snapshot_timeout_ms: 600_000,
            propose_timeout_ms: 15_000,
            connect_timeout_ms: 5_000,
            idle_timeout_ms: 30_000,
            keep_alive_interval_ms: 5_000,
        }
    }
}

impl Default for MeshTimeouts {
    fn default() -> Self {
        Self::loopback()
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub node_id: NodeId,
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// `host:port` other nodes dial to reach this one.
    pub advertise: String,
    /// The cluster formed on first start: node id → `host:port`, including
    /// this node. The lowest id initialises it; empty means a single-node
    /// mesh of this node alone.
    pub initial_members: BTreeMap<NodeId, String>,
    /// Where `raft-log.redb` and `raft-snapshot.redb` live.
    pub data_dir: PathBuf,
    pub identity: NodeIdentity,
    pub timeouts: MeshTimeouts,
    pub limits: TransportLimits,
    /// Take a snapshot after this many entries were applied since the last.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging
    /// follower catches up from the log rather than with a snapshot.
    pub log_entries_kept_after_snapshot: u64,
}

/// The node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log store: {0}")]
    LogStore(#[from] StoreOpenError),
    #[error("state store: {0}")]
    StateStore(#[from] StateOpenError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a proposal has no result. Only [`ProposeError::Indeterminate`]
/// leaves the outcome open; every other error means the command was not
/// appended by this attempt, so retrying cannot duplicate it.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// No leader reachable within the deadline (an election is running, or
    /// this node is on the minority side of a partition).
    #[error("no leader reachable within {0:?}")]
    NoLeader(Duration),
    /// The command may or may not commit: the leader was lost or the
    /// deadline passed after it was sent. The caller must not report success,
    /// and must deduplicate if it retries.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    #[error("mesh is shutting down")]
    ShuttingDown,
}

/// Why a linearizable read could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no leader confirmed its leadership within {0:?}")]
    NoLeader(Duration),
    #[error("mesh is shutting down")]
    ShuttingDown,
}

/// A committed proposal: its log index (the global sequence number) and
/// the response of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub response: Bytes,
}

/// The role of a node in the Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

/// A point-in-time view of this node, for status pages and metrics.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Entries up to this index were removed from the log (covered by the
    /// snapshot).
    pub purged_index: Option<u64>,
    /// Voters and learners with their addresses.
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
    /// On the leader only: entries each peer is behind the leader's log.
    pub replication_lag: BTreeMap<NodeId, u64>,
}

type StorageClosed = Pin<Box<dyn Future<Output = ((), ())> + Send>>;

pub(crate) struct Inner<S: StateMachine> {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<S>,
    pub(crate) transport: Arc<Transport>,
    pub(crate) state: SharedState<S>,
    pub(crate) timeouts: MeshTimeouts,
    metrics: MetricsExporter,
    /// Completes when Raft's tasks have dropped the redb files; awaited by
    /// `shutdown`.
    storage_closed: tokio::sync::Mutex<Option<StorageClosed>>,
}

/// A running mesh node. Cloning shares the node.
pub struct MeshNode<S: StateMachine> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S: StateMachine> Clone for MeshNode<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: StateMachine> MeshNode<S> {
    /// Opens the stores under `config.data_dir` (restoring `state_machine`
    /// from the stored snapshot and re-applying the committed log), binds the
    /// QUIC endpoint, starts Raft, and on first start of the lowest-id
    /// member initialises the cluster.
    pub async fn start(config: MeshConfig, state_machine: S) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let log = LogStore::open(&config.data_dir.join("raft-log.redb"))?;
        let store = StateStore::open(&config.data_dir.join("raft-snapshot.redb"), state_machine)?;
        let state = store.shared();
        let storage_closed = Box::pin(futures_util::future::join(
            log.wait_closed(),
            store.wait_closed(),
        ));

        let t = &config.timeouts;
        let transport = Transport::bind(
            config.node_id,
            config.listen,
            &config.identity,
            config.limits.clone(),
            &TransportTimeouts {
                connect_timeout_ms: t.connect_timeout_ms,
                idle_timeout_ms: t.idle_timeout_ms,
                keep_alive_interval_ms: t.keep_alive_interval_ms,
            },
        )?;
        let raft_config = Config {
            cluster_name: "vomesh".into(),
            heartbeat_interval: t.heartbeat_interval_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            install_snapshot_timeout: t.snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: config.log_entries_kept_after_snapshot,
            // Pre-vote: a node that was cut off does not disrupt a healthy
            // leader with a higher term when it comes back (Raft thesis §9.6).
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()?;

        let raft = openraft::Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NetworkFactory::new(transport.clone()),
            log,
            store,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let metrics = MetricsExporter::start(&raft)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let inner = Arc::new(Inner {
            id: config.node_id,
            raft: raft.clone(),
            transport: transport.clone(),
            state,
            timeouts: config.timeouts.clone(),
            metrics,
            storage_closed: tokio::sync::Mutex::new(Some(storage_closed)),
        });
        transport.serve(Arc::new(Handler {
            inner: inner.clone(),
        }));

        let mut members = config.initial_members.clone();
        if members.is_empty() {
            members.insert(config.node_id, config.advertise.clone());
        }
        let first = members.keys().next().copied();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && first == Some(config.node_id) {
            let nodes: BTreeMap<NodeId, BasicNode> = members
                .into_iter()
                .map(|(id, addr)| (id, BasicNode::new(addr)))
                .collect();
            raft.initialize(nodes)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        }
        // Before anyone reads the replica, re-apply what this node knew to
        // be committed when it stopped (persisted by the log store). This
        // needs no other node, so a site restarting alone still starts; it
        // catches up further when it hears from a leader. (openraft's
        // `wait_for_recovery` would wait for the cluster instead.)
        let committed = raft
            .metrics()
            .borrow_watched()
            .local_committed
            .map(|id| id.index);
        raft.wait(Some(Duration::from_millis(t.propose_timeout_ms)))
            .applied_index_at_least(committed, "restart: committed entries re-applied")
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        Ok(Self { inner })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The UDP address the QUIC endpoint is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.transport.local_addr()
    }

    /// The local replica of the application state (see the module docs for
    /// the consistency it offers).
    pub fn state(&self) -> &SharedState<S> {
        &self.inner.state
    }

    /// The underlying openraft handle, for what this API does not cover.
    pub fn raft(&self) -> &Raft<S> {
        &self.inner.raft
    }

    /// Replicates `command` and returns once it is committed and applied
    /// on this node, with its log index and the state machine's response.
    /// At a follower the command is forwarded to the leader over QUIC.
    /// Concurrent proposals are batched by openraft into few appends, and
    /// so few fsyncs.
    pub async fn propose(&self, command: Bytes) -> Result<Committed, ProposeError> {
        let budget = Duration::from_millis(self.inner.timeouts.propose_timeout_ms);
        let deadline = Instant::now() + budget;
        loop {
            let leader = match self.write_locally(command.clone(), deadline).await? {
                Ok(committed) => return Ok(committed),
                Err(leader) => leader,
            };
            let outcome = match &leader {
                Some((leader, addr)) => {
                    self.forward(*leader, addr, command.clone(), deadline)
                        .await?
                }
                None => None,
            };
            if let Some(committed) = outcome {
                self.wait_applied(committed.index, deadline).await?;
                return Ok(committed);
            }
            // Not appended anywhere yet: wait for a leader to emerge, then retry.
            if Instant::now() >= deadline {
                return Err(ProposeError::NoLeader(budget));
            }
            self.wait_for_leader_change(leader.map(|(id, _)| id), deadline)
                .await;
        }
    }

    /// Tries `client_write` here. `Ok(Err(leader))`: this node is not the
    /// leader; `leader` is the one it knows, if any.
    async fn write_locally(
        &self,
        command: Bytes,
        deadline: Instant,
    ) -> Result<Result<Committed, Option<(NodeId, String)>>, ProposeError> {
        let write = self.inner.raft.client_write(Command(command));
        match tokio::time::timeout_at(deadline, write).await {
            Err(_) => Err(ProposeError::Indeterminate(
                "not committed before the deadline".into(),
            )),
            Ok(Ok(resp)) => Ok(Ok(Committed {
                index: resp.log_id.index,
                response: resp.data.0,
            })),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Ok(Err(leader_of(&f)))
            }
            Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Indeterminate(e.to_string())),
            Ok(Err(RaftError::Fatal(f))) => Err(fatal_to_propose(f)),
        }
    }

    /// Forwards to `leader`. `Ok(None)`: the leader refused before appending
    /// (not the leader any more, or not reachable before sending).
    async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        command: Bytes,
        deadline: Instant,
    ) -> Result<Option<Committed>, ProposeError> {
        let kind = pb::request::Kind::ForwardProposal(pb::ForwardProposal { command });
        let remaining = deadline.saturating_duration_since(Instant::now());
        let call = self
            .inner
            .transport
            .call(leader, addr, kind, None, 0, remaining);
        // A leader that crashed never answers (its QUIC connection looks
        // alive until its idle timeout): once this node knows another
        // leader, the outcome is as unknowable as it will ever be, and the
        // client hears so now rather than at the propose deadline (it may
        // retry at the new leader at once).
        let replaced = async {
            self.inner
                .raft
                .wait(Some(remaining))
                .metrics(
                    |m| m.current_leader.is_some() && m.current_leader != Some(leader),
                    "leader replaced while forwarding",
                )
                .await
                .is_ok()
        };
        let result = tokio::select! {
            biased;
            result = call => result,
            true = replaced => {
                return Err(ProposeError::Indeterminate(format!(
                    "leader {leader} was replaced while the proposal was forwarded to it"
                )));
            }
        };
        match result {
            Ok(pb::Response {
                kind: Some(pb::response::Kind::ForwardProposal(r)),
            }) => Ok(Some(Committed {
                index: r.index,
                response: r.response,
            })),
            Ok(other) => Err(ProposeError::Indeterminate(format!(
                "unexpected response {other:?}"
            ))),
            Err(RpcError::Remote { error, .. }) if error.kind() == pb::ErrorKind::NotLeader => {
                Ok(None)
            }
            Err(RpcError::NotSent { .. }) => Ok(None),
            Err(e) => Err(ProposeError::Indeterminate(e.to_string())),
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ProposeError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "proposal applied locally")
            .await
            .map(|_| ())
            .map_err(|e| {
                ProposeError::Indeterminate(format!(
                    "committed at {index}, not applied here yet: {e}"
                ))
            })
    }

    /// Waits until the known leader differs from `known` or the deadline.
    async fn wait_for_leader_change(&self, known: Option<NodeId>, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // A short pause even if the leader is unchanged: it may have been
        // briefly unreachable.
        let pause = Duration::from_millis(self.inner.timeouts.heartbeat_interval_ms).min(remaining);
        let _ = self
            .inner
            .raft
            .wait(Some(pause))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != known,
                "leader change",
            )
            .await;
    }

    /// Returns once the local replica contains every command committed
    /// before this call, anywhere in the mesh (ReadIndex: the leader
    /// confirms its leadership with a quorum, then this node waits until it
    /// applied up to the leader's commit index). Returns that index.
    pub async fn ensure_linearizable(&self) -> Result<u64, ReadError> {
        let budget = Duration::from_millis(self.inner.timeouts.propose_timeout_ms);
        let deadline = Instant::now() + budget;
        loop {
            let known = match self
                .inner
                .raft
                .get_read_linearizer(ReadPolicy::ReadIndex)
                .await
            {
                Ok(linearizer) => {
                    let index = linearizer.read_log_id().index();
                    return self.wait_read_index(index, deadline, budget).await;
                }
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                    leader_of(&f)
                }
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => None,
                Err(RaftError::Fatal(_)) => return Err(ReadError::ShuttingDown),
            };
            if let Some((leader, addr)) = &known {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let kind = pb::request::Kind::ReadIndex(pb::ReadIndexRequest {});
                if let Ok(pb::Response {
                    kind: Some(pb::response::Kind::ReadIndex(r)),
                }) = self
                    .inner
                    .transport
                    .call(*leader, addr, kind, None, 0, remaining)
                    .await
                {
                    return self.wait_read_index(r.index, deadline, budget).await;
                }
            }
            if Instant::now() >= deadline {
                return Err(ReadError::NoLeader(budget));
            }
            self.wait_for_leader_change(known.map(|(id, _)| id), deadline)
                .await;
        }
    }

    async fn wait_read_index(
        &self,
        index: u64,
        deadline: Instant,
        budget: Duration,
    ) -> Result<u64, ReadError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "read index applied")
            .await
            .map(|_| index)
            .map_err(|_| ReadError::NoLeader(budget))
    }

    /// A point-in-time view of this node and, on the leader, its peers.
    pub fn status(&self) -> NodeStatus {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let addr = |id: &NodeId| {
            membership
                .get_node(id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        let voters = membership.voter_ids().map(|id| (id, addr(&id))).collect();
        let learners = membership.learner_ids().map(|id| (id, addr(&id))).collect();
        NodeStatus {
            id: m.id,
            role: role_of(m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            commit_index: m.local_committed.map(|id| id.index),
            applied_index: m.last_applied.map(|id| id.index),
            snapshot_index: m.snapshot.map(|id| id.index),
            purged_index: m.purged.map(|id| id.index),
            voters,
            learners,
            replication_lag: crate::metrics::replication_lag(&m),
        }
    }

    /// Stops Raft, closes the QUIC endpoint, and waits (at most the
    /// proposal timeout) until Raft's tasks have closed the redb files, so a
    /// process exiting afterwards leaves them cleanly closed (no repair at
    /// next start). Everything written was already fsynced at commit.
    pub async fn shutdown(&self) {
        self.inner.metrics.stop();
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "mesh: raft shutdown");
        }
        self.inner.transport.close();
        let Some(closed) = self.inner.storage_closed.lock().await.take() else {
            return;
        };
        let budget = Duration::from_millis(self.inner.timeouts.propose_timeout_ms);
        if tokio::time::timeout(budget, closed).await.is_err() {
            tracing::warn!("mesh: storage still open {budget:?} after shutdown");
        }
    }
}

pub(crate) fn role_of(state: openraft::ServerState) -> Role {
    match state {
        openraft::ServerState::Leader => Role::Leader,
        openraft::ServerState::Follower => Role::Follower,
        openraft::ServerState::Candidate => Role::Candidate,
        openraft::ServerState::Learner => Role::Learner,
        openraft::ServerState::Shutdown => Role::Shutdown,
    }
}

fn leader_of(f: &ForwardToLeader<MeshTypes>) -> Option<(NodeId, String)> {
    Some((f.leader_id?, f.leader_node.as_ref()?.addr.clone()))
}

fn fatal_to_propose(f: Fatal<MeshTypes>) -> ProposeError {
    match f {
        Fatal::Stopped => ProposeError::ShuttingDown,
        other => ProposeError::Indeterminate(other.to_string()),
    }
}

/// Serves the RPCs peers send to this node.
struct Handler<S: StateMachine> {
    inner: Arc<Inner<S>>,
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
        kind: Some(pb::response::Kind::Error(pb::Error {
            kind: pb::ErrorKind::NotLeader as i32,
            message: f.to_string(),
            leader_id: f.leader_id,
        })),
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
        let input = futures_util::stream::unfold(Some(requests), move |requests| async move {
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
                Ok(request) => Some((request, Some(requests))),
                Err(e) => {
                    tracing::info!(peer, error = %e, "mesh: invalid append on stream");
                    None
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
                match raft.append_entries(req).await {
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
                    snapshot: data,
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
                let budget = Duration::from_millis(self.inner.timeouts.propose_timeout_ms);
                match tokio::time::timeout(budget, raft.client_write(Command(p.command))).await {
                    Err(_) => unavailable("not committed before the deadline"),
                    Ok(Ok(resp)) => response(pb::response::Kind::ForwardProposal(
                        pb::ForwardProposalResponse {
                            index: resp.log_id.index,
                            response: resp.data.0,
                        },
                    )),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        not_leader(&f)
                    }
                    Ok(Err(e)) => unavailable(e),
                }
            }
            pb::request::Kind::AppendStream(_) => {
                bad_request("append stream opened as a unary request")
            }
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
