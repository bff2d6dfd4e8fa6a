//! A mesh node: wires the stores, the QUIC transport and openraft
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
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{
    ClientWriteError, Fatal, ForwardToLeader, LinearizableReadError, RaftError,
};
use openraft::{BasicNode, ReadPolicy};
use tokio::time::Instant;
use vomesh_proto::mesh as pb;

use crate::config::{MeshConfig, MeshTimeouts};
use crate::forwarder::Forwarder;
use crate::leadership::{self, Preference};
use crate::log_store::{LogStore, StoreOpenError};
use crate::metrics::MetricsExporter;
use crate::network::NetworkFactory;
use crate::peer_rpc::Handler;
use crate::progress::Progress;
use crate::snapshot_schedule::{self, SnapshotPolicy};
use crate::state_store::{SharedState, StateOpenError, StateStore};
use crate::submitter::Submitter;
use crate::transport::{RpcError, Transport, TransportError, TransportTimeouts};
use crate::types::{MeshTypes, NodeId, Raft, StateMachine};
use crate::wire;

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
    #[error("limits: {0}")]
    Limits(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a proposal has no result. [`ProposeError::Indeterminate`] leaves the
/// outcome open and [`ProposeError::NotAppliedLocally`] means it committed;
/// every other error means the command was not appended by this attempt, so
/// retrying cannot duplicate it.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Refused before anything was sent.
    #[error("command of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// This node, or the leader, has its limit of proposals in flight;
    /// nothing was appended.
    #[error("too many proposals in flight (limit {max})")]
    Overloaded { max: usize },
    /// No leader reachable within the deadline (an election is running, or
    /// this node is on the minority side of a partition).
    #[error("no leader reachable within {0:?}")]
    NoLeader(Duration),
    /// The command may or may not commit: the leader was lost or the
    /// deadline passed after it was sent. The caller must not report success,
    /// and must deduplicate if it retries.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The command is committed (durable on a majority, it will be applied
    /// everywhere) but this node had not applied it by the deadline.
    #[error("committed at index {}, not yet applied on this node", .0.index)]
    NotAppliedLocally(Committed),
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Set once this node has heard nothing from its leader (a follower:
    /// no append or heartbeat) or from a quorum (the leader) for longer
    /// than the maximum election timeout, in milliseconds. A node cut off
    /// in a minority keeps believing in its last leader (pre-vote never
    /// lets it start an election), so `leader` alone cannot tell. Local:
    /// not carried in the status RPC (always `None` in a peer's view).
    pub leader_silent_ms: Option<u64>,
    /// Clients connected to this node, as counted by the function given to
    /// [`MeshNode::count_clients_with`]; `None` without one.
    pub clients: Option<u64>,
    /// The smoothed QUIC round-trip time from this node to each peer it has
    /// a connection to, in microseconds. Local, like `leader_silent_ms`.
    pub peer_rtt_micros: BTreeMap<NodeId, u64>,
    /// The site this node's configuration names `preferred_leader`; `None`
    /// also for a peer of an earlier version, which does not say.
    pub preferred_leader: Option<NodeId>,
}

/// Counts the clients of the application using the mesh, for status views.
type ClientCounter = Box<dyn Fn() -> u64 + Send + Sync>;

type StorageClosed = Pin<Box<dyn Future<Output = ((), ())> + Send>>;

pub(crate) struct Inner<S: StateMachine> {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<S>,
    /// Where this node's proposals, and those forwarded to it, enter Raft.
    pub(crate) submitter: Submitter<MeshTypes>,
    pub(crate) transport: Arc<Transport>,
    forwarder: Arc<Forwarder>,
    pub(crate) state: SharedState<S>,
    pub(crate) timeouts: MeshTimeouts,
    pub(crate) command_bytes_max: usize,
    /// One permit per proposal in flight at this node.
    pub(crate) proposals_in_flight: Arc<tokio::sync::Semaphore>,
    pub(crate) proposals_in_flight_max: usize,
    metrics: MetricsExporter,
    /// The applied index and known leader, for proposals and reads waiting
    /// on them; its task follows Raft's metrics.
    pub(crate) progress: Arc<Progress>,
    progress_task: tokio::task::JoinHandle<()>,
    /// Asks Raft for a snapshot when one is due.
    snapshot_task: tokio::task::JoinHandle<()>,
    /// The site the leadership is handed to, if the operator named one.
    pub(crate) preferred_leader: Option<NodeId>,
    /// Hands the leadership to `preferred_leader` when due.
    preference_task: Option<tokio::task::JoinHandle<()>>,
    /// When a follower last got an append or heartbeat from its leader
    /// (the node's start until then).
    pub(crate) leader_contact: std::sync::Mutex<Instant>,
    client_counter: std::sync::OnceLock<ClientCounter>,
    /// Completes when Raft's tasks have closed the log and snapshot files;
    /// awaited by `shutdown`.
    storage_closed: tokio::sync::Mutex<Option<StorageClosed>>,
}

/// Why the leader did not do what this node forwarded to it (an operator's
/// membership change or leadership handover).
#[derive(Debug)]
pub(crate) enum LeaderRefusal {
    /// It does not lead; the leader it knows, if any.
    NotLeader(Option<NodeId>),
    /// It refused, for this reason.
    Refused(String),
    /// It could not be asked, or did not answer in time.
    Unreachable(String),
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
        config.check_limits()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let log = LogStore::open(&config.data_dir, config.log_cache_bytes)?;
        let store = StateStore::open(&config.data_dir, state_machine)?;
        let state = store.shared();
        let applied_since_snapshot = store.applied_since_snapshot();
        let storage_closed = Box::pin(futures_util::future::join(
            log.wait_closed(),
            store.wait_closed(),
        ));

        let t = &config.timeouts;
        let transport = Transport::bind(
            config.node_id,
            config.listen,
            &config.identity,
            config.transport_limits(),
            &TransportTimeouts {
                connect_timeout_ms: t.connect_timeout_ms,
                idle_timeout_ms: t.idle_timeout_ms,
                keep_alive_interval_ms: t.keep_alive_interval_ms,
            },
        )?;
        let raft_config = crate::config::raft_config(
            t,
            openraft::SnapshotPolicy::Never,
            config.log_entries_kept_after_snapshot,
            config.append_entries_max,
        )?;

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
        let (progress, progress_task) = Progress::follow(&raft);
        let snapshot_task = snapshot_schedule::follow(
            raft.clone(),
            applied_since_snapshot,
            SnapshotPolicy {
                every_entries: config.snapshot_every_entries,
                log_growth_percent: config.snapshot_log_growth_percent,
            },
        );
        let preference_task = config.preferred_leader.map(|preferred| {
            leadership::follow_preference(
                raft.clone(),
                transport.clone(),
                Preference::new(
                    preferred,
                    Duration::from_millis(
                        t.election_timeout_max_ms * leadership::HOLD_OFF_ELECTION_TIMEOUTS,
                    ),
                ),
                Duration::from_millis(t.election_timeout_min_ms),
                Duration::from_millis(t.connect_timeout_ms),
            )
        });
        let inner = Arc::new(Inner {
            id: config.node_id,
            raft: raft.clone(),
            submitter: Submitter::start(raft.clone(), config.proposals_in_flight_max),
            transport: transport.clone(),
            forwarder: Arc::new(Forwarder::new(
                transport.clone(),
                config.proposals_in_flight_max,
                config.forwarding.clone(),
            )),
            state,
            timeouts: config.timeouts.clone(),
            command_bytes_max: config.command_bytes_max,
            proposals_in_flight: Arc::new(tokio::sync::Semaphore::new(
                config.proposals_in_flight_max,
            )),
            proposals_in_flight_max: config.proposals_in_flight_max,
            metrics,
            progress,
            progress_task,
            snapshot_task,
            preferred_leader: config.preferred_leader,
            preference_task,
            leader_contact: std::sync::Mutex::new(Instant::now()),
            client_counter: std::sync::OnceLock::new(),
            storage_closed: tokio::sync::Mutex::new(Some(storage_closed)),
        });
        transport.serve(Arc::new(Handler {
            inner: inner.clone(),
        }));

        let node = Self { inner };
        if let Err(e) = node.join(&config).await {
            // Leave nothing running (Raft, the endpoint) behind a failed start.
            node.shutdown().await;
            return Err(e);
        }
        Ok(node)
    }

    /// Initialises the cluster if this node is the lowest-id initial member
    /// of a fresh one, then re-applies what this node knew to be committed.
    async fn join(&self, config: &MeshConfig) -> Result<(), StartError> {
        let raft = &self.inner.raft;
        let mut members = config.initial_members.clone();
        if members.is_empty() {
            members.insert(config.node_id, config.advertise.clone());
        }
        let first = members.keys().next().copied();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized
            && first == Some(config.node_id)
            && !self.peers_already_joined(&members).await
        {
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
        raft.wait(Some(Duration::from_millis(
            config.timeouts.propose_timeout_ms,
        )))
        .applied_index_at_least(committed, "restart: committed entries re-applied")
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        Ok(())
    }

    /// Whether any other initial member already belongs to a cluster. The
    /// lowest id founds the cluster on its first start, but it also starts
    /// empty after its data directory was lost or wiped while the others
    /// ran on: founding a second cluster then (same ids, a log of its own)
    /// would be wrong. It waits instead, like any new node, to be added
    /// (`vomesh cluster add`). Peers that do not answer count as fresh: on
    /// a real first start they are starting too.
    async fn peers_already_joined(&self, members: &BTreeMap<NodeId, String>) -> bool {
        let asked = members
            .iter()
            .filter(|(id, _)| **id != self.inner.id)
            .map(|(id, addr)| async move { (*id, self.peer_status(*id, addr).await) });
        let joined = futures_util::future::join_all(asked)
            .await
            .into_iter()
            .find_map(|(id, status)| {
                status
                    .ok()
                    .filter(|status| !status.voters.is_empty())
                    .map(|status| (id, status.term))
            });
        if let Some((peer, term)) = joined {
            tracing::warn!(
                peer,
                term,
                "mesh: not founding a cluster: node {peer} already belongs to one; \
                 this node waits to be added to it (vomesh cluster add)"
            );
        }
        joined.is_some()
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
        let max = self.inner.command_bytes_max;
        if command.len() > max {
            return Err(ProposeError::TooLarge {
                len: command.len(),
                max,
            });
        }
        let budget = Duration::from_millis(self.inner.timeouts.propose_timeout_ms);
        let deadline = Instant::now() + budget;
        let overloaded = ProposeError::Overloaded {
            max: self.inner.proposals_in_flight_max,
        };
        let _slot =
            match tokio::time::timeout_at(deadline, self.inner.proposals_in_flight.acquire()).await
            {
                Ok(Ok(permit)) => permit,
                // Elapsed, or the semaphore closed (it never is).
                _ => return Err(overloaded),
            };
        loop {
            // The leader known before this attempt: the next one waits until
            // that changes. (The one the attempt tried may differ: a leader
            // handing over names its successor before the successor leads.)
            let known = self.inner.progress.leader();
            let leader = match self.leader_elsewhere() {
                // A follower forwards at once, so its proposals reach the
                // forwarder in the order they were made. (Refused by the
                // local core, they would come back in batches answered by
                // separate tasks, in any order.)
                Some(leader) => Some(leader),
                None => match self.write_locally(command.clone(), deadline).await? {
                    Ok(committed) => return Ok(committed),
                    Err(leader) => leader,
                },
            };
            let outcome = match &leader {
                Some((leader, addr)) => {
                    self.forward(*leader, addr, command.clone(), deadline)
                        .await?
                }
                None => None,
            };
            if let Some(committed) = outcome {
                return self.wait_applied(committed, deadline).await;
            }
            // Not appended anywhere yet: wait for a leader to emerge, then retry.
            if Instant::now() >= deadline {
                return Err(ProposeError::NoLeader(budget));
            }
            self.wait_for_leader_change(known, deadline).await;
        }
    }

    /// The leader this node follows, with its address, if it knows one
    /// and it is another node. A node that leads, or knows of no leader,
    /// asks its Raft core instead.
    fn leader_elsewhere(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let leader = m.current_leader.filter(|&leader| leader != m.id)?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// Tries to write here. `Ok(Err(leader))`: this node is not the
    /// leader; `leader` is the one it knows, if any.
    async fn write_locally(
        &self,
        command: Bytes,
        deadline: Instant,
    ) -> Result<Result<Committed, Option<(NodeId, String)>>, ProposeError> {
        let write = self.inner.submitter.write(command);
        match tokio::time::timeout_at(deadline, write).await {
            Err(_) => Err(ProposeError::Indeterminate(
                "not committed before the deadline".into(),
            )),
            Ok(Ok(written)) => Ok(Ok(Committed {
                index: written.log_id.index,
                response: written.response.0,
            })),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Ok(Err(leader_of(&f)))
            }
            Ok(Err(RaftError::APIError(e))) => Err(ProposeError::Indeterminate(e.to_string())),
            Ok(Err(RaftError::Fatal(f))) => Err(fatal_to_propose(f)),
        }
    }

    /// Forwards to `leader`, in a batch with the other proposals waiting
    /// for it ([`Forwarder`]). `Ok(None)`: the leader refused before
    /// appending (not the leader any more, or not reachable before sending).
    async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        command: Bytes,
        deadline: Instant,
    ) -> Result<Option<Committed>, ProposeError> {
        let outcome = self
            .inner
            .forwarder
            .forward(leader, addr, command, deadline);
        // A leader that crashed never answers (its QUIC connection looks
        // alive until its idle timeout): once this node knows another
        // leader, the outcome is as unknowable as it will ever be, and the
        // client hears so now rather than at the propose deadline (it may
        // retry at the new leader at once).
        let replaced = async {
            self.inner
                .progress
                .leader_other_than(Some(leader), deadline)
                .await;
            // The deadline passed without a new leader: leave the proposal
            // to its own timeout.
            Instant::now() < deadline
        };
        tokio::select! {
            biased;
            outcome = tokio::time::timeout_at(deadline, outcome) => match outcome {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(ProposeError::Indeterminate(
                    "the forwarding task ended without an outcome".into(),
                )),
                Err(_) => Err(ProposeError::Indeterminate(
                    "not committed before the deadline".into(),
                )),
            },
            true = replaced => Err(ProposeError::Indeterminate(format!(
                "leader {leader} was replaced while the proposal was forwarded to it"
            ))),
        }
    }

    async fn wait_applied(
        &self,
        committed: Committed,
        deadline: Instant,
    ) -> Result<Committed, ProposeError> {
        if self
            .inner
            .progress
            .applied_at_least(committed.index, deadline)
            .await
        {
            Ok(committed)
        } else {
            Err(ProposeError::NotAppliedLocally(committed))
        }
    }

    /// Waits until the known leader differs from `known` or the deadline.
    async fn wait_for_leader_change(&self, known: Option<NodeId>, deadline: Instant) {
        // A short pause even if the leader is unchanged: it may have been
        // briefly unreachable.
        let pause = Duration::from_millis(self.inner.timeouts.heartbeat_interval_ms);
        let until = deadline.min(Instant::now() + pause);
        self.inner.progress.leader_other_than(known, until).await;
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

    /// Reads the local replica with `read` once it is linearizable (see
    /// [`MeshNode::ensure_linearizable`]).
    pub async fn linearizable_read<R>(&self, read: impl FnOnce(&S) -> R) -> Result<R, ReadError> {
        self.ensure_linearizable().await?;
        Ok(read(&self.inner.state.read()))
    }

    async fn wait_read_index(
        &self,
        index: u64,
        deadline: Instant,
        budget: Duration,
    ) -> Result<u64, ReadError> {
        if self.inner.progress.applied_at_least(index, deadline).await {
            Ok(index)
        } else {
            Err(ReadError::NoLeader(budget))
        }
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
            leader_silent_ms: self.leader_silence(&m),
            clients: self.inner.client_counter.get().map(|count| count()),
            peer_rtt_micros: self
                .inner
                .transport
                .round_trip_times()
                .into_iter()
                .map(|(peer, rtt)| (peer, u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)))
                .collect(),
            preferred_leader: self.inner.preferred_leader,
        }
    }

    /// Makes every status view of this node (its own and its peers' through
    /// [`MeshNode::cluster_status`]) carry `count()`, the clients the
    /// application serves here. Set once; later calls are ignored.
    pub fn count_clients_with(&self, count: impl Fn() -> u64 + Send + Sync + 'static) {
        // Ignoring a second counter is documented: the first one stays.
        let _ = self.inner.client_counter.set(Box::new(count));
    }

    /// See [`NodeStatus::leader_silent_ms`].
    fn leader_silence(&self, m: &openraft::RaftMetrics<MeshTypes>) -> Option<u64> {
        let silent_ms = match m.state {
            // A lone voter is its own quorum: nobody to hear from.
            openraft::ServerState::Leader
                if m.membership_config.membership().voter_ids().count() <= 1 =>
            {
                return None;
            }
            openraft::ServerState::Leader => {
                use openraft::async_runtime::Instant as _;
                let acked = m.last_quorum_acked.as_ref()?;
                u64::try_from(acked.elapsed().as_millis()).unwrap_or(u64::MAX)
            }
            _ => {
                let since = *self
                    .inner
                    .leader_contact
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
            }
        };
        (silent_ms > self.inner.timeouts.election_timeout_max_ms).then_some(silent_ms)
    }

    /// Every member's own view, as [`MeshNode::status`] gives it at that
    /// member, asked over the mesh in parallel (this node's is local). A
    /// member that does not answer within the connect timeout is an `Err`.
    pub async fn cluster_status(&self) -> BTreeMap<NodeId, Result<NodeStatus, RpcError>> {
        let own = self.status();
        let peers = own
            .voters
            .iter()
            .chain(&own.learners)
            .filter(|(id, _)| **id != own.id)
            .map(|(id, addr)| async move { (*id, self.peer_status(*id, addr).await) });
        let mut all: BTreeMap<_, _> = futures_util::future::join_all(peers)
            .await
            .into_iter()
            .collect();
        all.insert(own.id, Ok(own));
        all
    }

    /// Member `id`'s own view, asked over the mesh; an error when it does
    /// not answer within the connect timeout.
    async fn peer_status(&self, id: NodeId, addr: &str) -> Result<NodeStatus, RpcError> {
        let deadline = Duration::from_millis(self.inner.timeouts.connect_timeout_ms);
        ask_status(&self.inner.transport, id, addr, deadline).await
    }

    /// Sends an operator's request to `leader` and waits (at most
    /// `deadline`) until the leader has done it.
    pub(crate) async fn ask_leader(
        &self,
        leader: NodeId,
        kind: pb::request::Kind,
        deadline: Duration,
    ) -> Result<(), LeaderRefusal> {
        let Some(addr) = self.status().voters.get(&leader).cloned() else {
            return Err(LeaderRefusal::NotLeader(Some(leader)));
        };
        match self
            .inner
            .transport
            .call(leader, &addr, kind, None, 0, deadline)
            .await
        {
            Ok(_) => Ok(()),
            Err(RpcError::Remote { error, .. }) => Err(match error.kind() {
                pb::ErrorKind::NotLeader => LeaderRefusal::NotLeader(error.leader_id),
                pb::ErrorKind::BadRequest => LeaderRefusal::Refused(error.message),
                _ => LeaderRefusal::Unreachable(error.message),
            }),
            Err(e) => Err(LeaderRefusal::Unreachable(e.to_string())),
        }
    }

    /// Hands the leadership over if this node leads (see
    /// [`crate::leadership`]; at most an election timeout), stops Raft,
    /// closes the QUIC endpoint, and waits (at most the proposal timeout)
    /// until Raft's tasks have closed the log and snapshot files, so a
    /// process exiting afterwards has saved the committed log id and
    /// released the log's lock. Everything written was already fsynced at
    /// commit.
    pub async fn shutdown(&self) {
        if let Some(task) = &self.inner.preference_task {
            task.abort();
        }
        self.hand_over_before_stopping().await;
        self.inner.metrics.stop();
        self.inner.progress_task.abort();
        self.inner.snapshot_task.abort();
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

/// Member `id`'s own view (at `addr`), asked over the mesh within
/// `deadline`.
pub(crate) async fn ask_status(
    transport: &Transport,
    id: NodeId,
    addr: &str,
    deadline: Duration,
) -> Result<NodeStatus, RpcError> {
    let kind = pb::request::Kind::Status(pb::StatusRequest {});
    let response = transport.call(id, addr, kind, None, 0, deadline).await?;
    let unreachable = |reason: String| RpcError::Unreachable { peer: id, reason };
    match response.kind {
        Some(pb::response::Kind::Status(status)) => {
            wire::status_from_pb(*status).map_err(|e| unreachable(e.to_string()))
        }
        other => Err(unreachable(format!("unexpected response {other:?}"))),
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
