//! The proposals a follower forwards to the leader, sent in batches.
//!
//! Forwarded one per RPC, every proposal cost a QUIC stream of its own and
//! its own packets and acknowledgements both ways: with 16 publishers × 32
//! in flight, the three sites spent 157 µs of CPU per publish made at a
//! follower against 110 µs per publish made at the leader (same boot,
//! alternating runs). Here a proposal waits in its leader's queue only
//! while [`ForwardingLimits::batches_in_flight_max`] batches are already on
//! their way to that leader; the next batch then takes all that queued, up
//! to [`ForwardingLimits::batch_bytes_max`]. A proposal alone goes at once,
//! a crowd in few RPCs.
//!
//! "At once" still lets the tasks already woken run first
//! ([`ForwardingLimits::coalesce_yields`]): tokio runs a task spawned by a
//! worker next (its LIFO slot), so the request's sender would otherwise
//! leave with the one proposal that spawned it while the sessions whose
//! publishes arrived in the same wake-up queue behind it, each to take a
//! request of its own.
//!
//! A leader of an earlier version does not know the batch request and
//! refuses it as a bad request, before proposing anything; the batch is
//! then sent again, one proposal per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use vomesh_proto::mesh as pb;

use crate::node::{Committed, ProposeError};
use crate::transport::{RpcError, Transport};
use crate::types::NodeId;

/// How a follower batches what it forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardingLimits {
    /// Batches on their way to one leader at a time. Each holds a QUIC
    /// stream until its proposals are applied, so between distant sites
    /// (a round trip of 100 ms or more) more of them keep the link busy.
    pub batches_in_flight_max: usize,
    /// Command bytes in one batch (a single larger command goes alone).
    pub batch_bytes_max: usize,
    /// Times a request's sender yields to the tasks already woken before
    /// it takes its proposals, so those about to be forwarded go with it
    /// (0: it leaves with what has queued).
    pub coalesce_yields: usize,
}

impl Default for ForwardingLimits {
    /// 16 batches of up to 1 MiB: on loopback, 4 batches in flight did as
    /// well under a full load (10,904 against 10,381–10,716 publishes/s at
    /// 16 × 32) but held 16 publishers with one publish each to 3,724/s
    /// (4,458–4,708/s with 16). Two yields: with 32 publishers × 1 in
    /// flight, 6,569–6,630 → 7,722–7,744 publishes/s at 243–245 → 195–196
    /// µs of CPU per publish (1: 7,378; 4 and 8 no better, with a longer
    /// tail).
    fn default() -> Self {
        Self {
            batches_in_flight_max: 16,
            batch_bytes_max: 1 << 20,
            coalesce_yields: 2,
        }
    }
}
/// Histogram: the proposals each forwarding request carries.
const FORWARDED_PER_REQUEST: &str = "vomesh_mesh_forwarded_proposals_per_request";

/// What became of a forwarded proposal: committed (`Some`), refused
/// before anything was appended (`None`: the proposer retries at the next
/// leader), or an error.
pub(crate) type Outcome = Result<Option<Committed>, ProposeError>;

/// Forwards proposals to leaders, in batches.
pub(crate) struct Forwarder {
    transport: Arc<Transport>,
    /// For the error of a leader at its limit of proposals in flight.
    proposals_in_flight_max: usize,
    limits: ForwardingLimits,
    queues: Mutex<HashMap<NodeId, Queue>>,
}

/// The proposals waiting for one leader, and how many batches are on their
/// way to it (each with a task sending the next one when it is answered).
struct Queue {
    addr: String,
    waiting: Vec<Waiting>,
    senders: usize,
}

struct Waiting {
    command: Bytes,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

impl Forwarder {
    pub(crate) fn new(
        transport: Arc<Transport>,
        proposals_in_flight_max: usize,
        limits: ForwardingLimits,
    ) -> Self {
        Self {
            transport,
            proposals_in_flight_max,
            limits,
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `command` for `leader` (at `addr`); the outcome comes on the
    /// returned channel. A proposer that stops waiting (drops it) before
    /// the command is sent leaves it unsent.
    pub(crate) fn forward(
        self: &Arc<Self>,
        leader: NodeId,
        addr: &str,
        command: Bytes,
        deadline: Instant,
    ) -> oneshot::Receiver<Outcome> {
        let (reply, outcome) = oneshot::channel();
        let start_sender = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = queues.entry(leader).or_insert_with(|| Queue {
                addr: String::new(),
                waiting: Vec::new(),
                senders: 0,
            });
            addr.clone_into(&mut queue.addr);
            queue.waiting.push(Waiting {
                command,
                deadline,
                reply,
            });
            let start = queue.senders < self.limits.batches_in_flight_max;
            if start {
                queue.senders += 1;
            }
            start
        };
        if start_sender {
            tokio::spawn(self.clone().send_batches(leader));
        }
        outcome
    }

    async fn send_batches(self: Arc<Self>, leader: NodeId) {
        for _ in 0..self.limits.coalesce_yields {
            tokio::task::yield_now().await;
        }
        while let Some((addr, batch)) = self.next_batch(leader) {
            let outcomes = self.send(leader, &addr, &batch).await;
            for (waiting, outcome) in batch.into_iter().zip(outcomes) {
                // The proposer may have stopped waiting.
                let _ = waiting.reply.send(outcome);
            }
        }
    }

    /// The next batch for `leader`; `None`, with one sender fewer, when no
    /// proposal waits.
    fn next_batch(&self, leader: NodeId) -> Option<(String, Vec<Waiting>)> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = queues.get_mut(&leader)?;
        queue.waiting.retain(|waiting| !waiting.reply.is_closed());
        if queue.waiting.is_empty() {
            queue.senders -= 1;
            if queue.senders == 0 {
                queues.remove(&leader);
            }
            return None;
        }
        let mut bytes = 0;
        let taken = queue
            .waiting
            .iter()
            .take_while(|waiting| {
                let first = bytes == 0;
                bytes += waiting.command.len().max(1);
                first || bytes <= self.limits.batch_bytes_max
            })
            .count();
        let batch = queue.waiting.drain(..taken).collect();
        Some((queue.addr.clone(), batch))
    }

    /// Sends `batch` in one request; an outcome per proposal, in order.
    async fn send(&self, leader: NodeId, addr: &str, batch: &[Waiting]) -> Vec<Outcome> {
        let now = Instant::now();
        let remaining = batch
            .iter()
            .map(|waiting| waiting.deadline.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        metrics::histogram!(FORWARDED_PER_REQUEST).record(batch.len() as f64);
        let kind = pb::request::Kind::ForwardProposals(pb::ForwardProposals {
            commands: batch
                .iter()
                .map(|waiting| waiting.command.clone())
                .collect(),
        });
        let result = self
            .transport
            .call(leader, addr, kind, None, 0, remaining)
            .await;
        match result {
            Ok(pb::Response {
                kind: Some(pb::response::Kind::ForwardProposals(answer)),
            }) if answer.outcomes.len() == batch.len() => answer
                .outcomes
                .into_iter()
                .map(|outcome| self.outcome(outcome.outcome))
                .collect(),
            Err(RpcError::Remote { error, .. }) if error.kind() == pb::ErrorKind::BadRequest => {
                let singly = batch
                    .iter()
                    .map(|waiting| self.send_alone(leader, addr, waiting));
                futures_util::future::join_all(singly).await
            }
            Ok(other) => batch.iter().map(|_| Err(unexpected(&other))).collect(),
            Err(error) => batch.iter().map(|_| self.failed(&error)).collect(),
        }
    }

    /// Sends one proposal in a request of its own, as followers of earlier
    /// versions do.
    async fn send_alone(&self, leader: NodeId, addr: &str, waiting: &Waiting) -> Outcome {
        let kind = pb::request::Kind::ForwardProposal(pb::ForwardProposal {
            command: waiting.command.clone(),
        });
        let remaining = waiting.deadline.saturating_duration_since(Instant::now());
        match self
            .transport
            .call(leader, addr, kind, None, 0, remaining)
            .await
        {
            Ok(pb::Response {
                kind: Some(pb::response::Kind::ForwardProposal(committed)),
            }) => Ok(Some(committed_from(committed))),
            Ok(other) => Err(unexpected(&other)),
            Err(error) => self.failed(&error),
        }
    }

    fn outcome(&self, outcome: Option<pb::forward_outcome::Outcome>) -> Outcome {
        match outcome {
            Some(pb::forward_outcome::Outcome::Committed(committed)) => {
                Ok(Some(committed_from(committed)))
            }
            Some(pb::forward_outcome::Outcome::Refused(error)) => self.refused(&error),
            None => Err(ProposeError::Indeterminate(
                "the leader answered without an outcome".into(),
            )),
        }
    }

    /// The outcome of a request that got no answer, or an error.
    fn failed(&self, error: &RpcError) -> Outcome {
        match error {
            RpcError::NotSent { .. } => Ok(None),
            RpcError::Remote { error, .. } => self.refused(error),
            error => Err(ProposeError::Indeterminate(error.to_string())),
        }
    }

    fn refused(&self, error: &pb::Error) -> Outcome {
        match error.kind() {
            pb::ErrorKind::NotLeader => Ok(None),
            pb::ErrorKind::Overloaded => Err(ProposeError::Overloaded {
                max: self.proposals_in_flight_max,
            }),
            _ => Err(ProposeError::Indeterminate(format!(
                "the leader answered with an error: {error:?}"
            ))),
        }
    }
}

fn committed_from(committed: pb::ForwardProposalResponse) -> Committed {
    Committed {
        index: committed.index,
        response: committed.response,
    }
}

fn unexpected(response: &pb::Response) -> ProposeError {
    ProposeError::Indeterminate(format!("unexpected response {response:?}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::certs::{ClusterCa, NodeIdentity};
    use crate::transport::{RpcHandler, TransportLimits, TransportTimeouts};

    /// A leader that commits every command it is sent (its response is the
    /// command, its index the order of arrival), after a pause long enough
    /// for proposals to queue behind the batches in flight. One of an
    /// earlier version refuses batches, as such a leader does.
    struct Leader {
        takes_batches: bool,
        /// The number of commands in each request answered.
        requests: Mutex<Vec<usize>>,
    }

    impl Leader {
        async fn commit(&self, commands: usize) -> Vec<pb::ForwardProposalResponse> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut requests = self.requests.lock().unwrap();
            requests.push(commands);
            let first: usize = requests.iter().sum::<usize>() - commands;
            (first..first + commands)
                .map(|index| pb::ForwardProposalResponse {
                    index: index as u64,
                    response: Bytes::new(),
                })
                .collect()
        }
    }

    impl RpcHandler for Leader {
        async fn handle(
            &self,
            _peer: NodeId,
            request: pb::request::Kind,
            _snapshot: Option<Bytes>,
        ) -> pb::Response {
            let kind = match request {
                pb::request::Kind::ForwardProposals(batch) if self.takes_batches => {
                    let committed = self.commit(batch.commands.len()).await;
                    let outcomes = batch
                        .commands
                        .into_iter()
                        .zip(committed)
                        .map(|(command, mut committed)| {
                            committed.response = command;
                            pb::ForwardOutcome {
                                outcome: Some(pb::forward_outcome::Outcome::Committed(committed)),
                            }
                        })
                        .collect();
                    pb::response::Kind::ForwardProposals(pb::ForwardProposalsResponse { outcomes })
                }
                pb::request::Kind::ForwardProposal(proposal) => {
                    let mut committed = self.commit(1).await.remove(0);
                    committed.response = proposal.command;
                    pb::response::Kind::ForwardProposal(committed)
                }
                _ => pb::response::Kind::Error(pb::Error {
                    kind: pb::ErrorKind::BadRequest as i32,
                    message: "request without a kind".into(),
                    leader_id: None,
                }),
            };
            pb::Response { kind: Some(kind) }
        }

        fn append_stream(
            &self,
            _peer: NodeId,
            _requests: openraft::base::BoxStream<'static, pb::AppendEntriesRequest>,
        ) -> openraft::base::BoxStream<'static, pb::Response> {
            Box::pin(futures_util::stream::empty())
        }
    }

    fn transport(ca: &ClusterCa, id: NodeId) -> Arc<Transport> {
        let node = ca.issue_node(id, &[]).unwrap();
        let identity = NodeIdentity::from_pem(
            ca.pem().cert_pem.as_bytes(),
            node.cert_pem.as_bytes(),
            node.key_pem.as_bytes(),
        )
        .unwrap();
        let timeouts = TransportTimeouts {
            connect_timeout_ms: 2_000,
            idle_timeout_ms: 10_000,
            keep_alive_interval_ms: 1_000,
        };
        let listen = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Transport::bind(id, listen, &identity, TransportLimits::default(), &timeouts).unwrap()
    }

    /// Forwards 100 proposals, one a millisecond, to a leader that takes
    /// batches or not; checks that each got its own outcome, in order, and
    /// returns the number of proposals in each request the leader received.
    async fn forward_100(takes_batches: bool, limits: ForwardingLimits) -> Vec<usize> {
        let (leader, forwarder, addr, _transport) = follower_of(takes_batches, limits);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut outcomes = Vec::new();
        for i in 0..100 {
            outcomes.push(forwarder.forward(2, &addr, Bytes::from(format!("c{i}")), deadline));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut results = Vec::new();
        for outcome in outcomes {
            results.push(outcome.await.unwrap());
        }
        assert_eq!(responses(&results), expected());
        let requests = leader.requests.lock().unwrap().clone();
        assert_eq!(requests.iter().sum::<usize>(), 100);
        requests
    }

    /// A forwarder at node 1 and its leader, node 2, served at `addr`
    /// (while the leader's transport is kept).
    fn follower_of(
        takes_batches: bool,
        limits: ForwardingLimits,
    ) -> (Arc<Leader>, Arc<Forwarder>, String, Arc<Transport>) {
        let leader = Arc::new(Leader {
            takes_batches,
            requests: Mutex::new(Vec::new()),
        });
        let ca = ClusterCa::generate().unwrap();
        let follower = transport(&ca, 1);
        let leader_transport = transport(&ca, 2);
        leader_transport.serve(leader.clone());
        let addr = leader_transport.local_addr().unwrap().to_string();
        let forwarder = Arc::new(Forwarder::new(follower, 4_096, limits));
        (leader, forwarder, addr, leader_transport)
    }

    /// Ten tasks, woken together, forward a proposal each; returns the
    /// number of proposals in each request the leader received.
    async fn forward_woken_together(coalesce_yields: usize) -> Vec<usize> {
        let limits = ForwardingLimits {
            coalesce_yields,
            ..ForwardingLimits::default()
        };
        let (leader, forwarder, addr, _transport) = follower_of(true, limits);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (go, ready) = tokio::sync::watch::channel(false);
        let waiting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sessions: Vec<_> = (0..10)
            .map(|i| {
                let (forwarder, addr, mut ready) = (forwarder.clone(), addr.clone(), ready.clone());
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    // Counted and parked in one poll of the one worker.
                    waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    ready.wait_for(|go| *go).await.unwrap();
                    forwarder
                        .forward(2, &addr, Bytes::from(format!("c{i}")), deadline)
                        .await
                        .unwrap()
                })
            })
            .collect();
        while waiting.load(std::sync::atomic::Ordering::SeqCst) < 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Woken from the worker, as a site's sessions are woken by its
        // I/O driver: all are queued before any of them runs.
        tokio::spawn(async move { go.send(true).unwrap() })
            .await
            .unwrap();
        for session in sessions {
            assert!(matches!(session.await.unwrap(), Ok(Some(_))));
        }
        leader.requests.lock().unwrap().clone()
    }

    fn responses(outcomes: &[Outcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|outcome| match outcome {
                Ok(Some(committed)) => String::from_utf8_lossy(&committed.response).into_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn expected() -> Vec<String> {
        (0..100).map(|i| format!("c{i}")).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proposals_that_queue_go_in_batches_and_each_gets_its_own_outcome() {
        let requests = forward_100(true, ForwardingLimits::default()).await;
        // Those that come while the most batches are on their way queue,
        // and go together.
        assert!(requests.len() < 100, "{requests:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_that_refuses_batches_gets_the_proposals_one_by_one() {
        let requests = forward_100(false, ForwardingLimits::default()).await;
        assert_eq!(requests, vec![1; 100]);
    }

    /// One worker, so that the order tokio runs tasks in is the test's
    /// subject: a sender spawned by a session runs before the sessions
    /// woken with it, unless it yields to them first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn proposals_woken_together_leave_in_one_request() {
        assert_eq!(forward_woken_together(2).await, vec![10]);
        assert_eq!(forward_woken_together(0).await, vec![1; 10]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_keep_to_the_configured_bytes() {
        // `c0`…`c99`: 2 or 3 bytes each, so at most 4 in 8 bytes.
        let limits = ForwardingLimits {
            batches_in_flight_max: 1,
            batch_bytes_max: 8,
            coalesce_yields: 0,
        };
        let requests = forward_100(true, limits).await;
        assert!(requests.iter().all(|&n| n <= 4), "{requests:?}");
    }
}
