//! The proposals a follower forwards to the leader, sent in batches on one
//! stream.
//!
//! Forwarded one per RPC, every proposal cost a QUIC stream of its own and
//! its own packets and acknowledgements both ways: with 16 publishers × 32
//! in flight, the three sites spent 157 µs of CPU per publish made at a
//! follower against 110 µs per publish made at the leader (same boot,
//! alternating runs). Here a follower keeps one forwarding stream open to
//! the leader while it has proposals for it. A proposal waits in the
//! leader's queue only while [`ForwardingLimits::batches_in_flight_max`]
//! batches are unanswered; the next batch then takes all that queued, up
//! to [`ForwardingLimits::batch_bytes_max`]. A proposal alone goes at once,
//! a crowd in few batches.
//!
//! One stream, not a request per batch, because the leader proposes a
//! stream's batches in the order they come, each before it reads the next:
//! the proposals take log indexes in the order they were made here, so a
//! session's publishes at a follower's site are archived in the order sent
//! (RFC 6120 §10.1), as at the leader's. Concurrent requests were proposed
//! in whatever order the leader's tasks ran.
//!
//! "At once" still lets the tasks already woken run first
//! ([`ForwardingLimits::coalesce_yields`]): tokio runs a task woken by a
//! worker next (its LIFO slot), so the stream's sender would otherwise
//! leave with the one proposal that woke it while the sessions whose
//! publishes arrived in the same wake-up queue behind it.
//!
//! A leader of an earlier version refuses the stream as a bad request,
//! before proposing anything; the batches then go as requests of their own
//! (and to one older still, one proposal per request).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;
use vomesh_proto::mesh as pb;

use crate::node::{Committed, ProposeError};
use crate::transport::{RpcError, Transport, read_frame, write_frame};
use crate::types::NodeId;

/// How a follower batches what it forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardingLimits {
    /// Batches unanswered on the stream to one leader at a time. Each
    /// waits until its proposals are applied, so between distant sites (a
    /// round trip of 100 ms or more) more of them keep the link busy.
    pub batches_in_flight_max: usize,
    /// Command bytes in one batch (a single larger command goes alone).
    pub batch_bytes_max: usize,
    /// Times the stream's sender yields to the tasks already woken before
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
    /// tail). (Measured with a request per batch, before the stream.)
    fn default() -> Self {
        Self {
            batches_in_flight_max: 16,
            batch_bytes_max: 1 << 20,
            coalesce_yields: 2,
        }
    }
}

/// Histogram: the proposals each forwarded batch carries.
const FORWARDED_PER_REQUEST: &str = "vomesh_mesh_forwarded_proposals_per_request";

/// How long a forwarding stream stays open with nothing to send: an idle
/// stream costs nothing on the wire, and reopening one costs a round trip
/// of the stream's opening before the leader proposes.
const STREAM_IDLE_CLOSE: Duration = Duration::from_secs(10);

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
    /// A queue per leader with proposals for it, while a task sends them.
    queues: Mutex<HashMap<NodeId, Queue>>,
}

/// The proposals waiting for one leader.
struct Queue {
    addr: String,
    waiting: Vec<Waiting>,
    /// Wakes the queue's task when a proposal joins it.
    queued: Arc<Notify>,
}

struct Waiting {
    command: Bytes,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// A batch sent on a stream and not yet answered.
struct InFlight {
    batch: Vec<Waiting>,
    /// Numbers the stream's batches, so that a watch on the oldest knows
    /// whether it is still the same one.
    sequence: u64,
    /// The latest of its proposals' deadlines: past it, no one waits for
    /// the answer.
    deadline: Instant,
}

/// Why a forwarding stream ended.
enum StreamEnd {
    /// Nothing to send or to wait for, for [`STREAM_IDLE_CLOSE`].
    Idle,
    /// The leader runs an earlier version, without forwarding streams.
    Refused,
    /// Broken: the batches unanswered may or may not have been proposed.
    Broken(String),
    /// Not opened (the leader unreachable): nothing was sent, and the
    /// proposers were told so, to try again.
    Unopened(String),
}

impl StreamEnd {
    fn label(&self) -> &'static str {
        match self {
            StreamEnd::Idle => "idle",
            StreamEnd::Refused => "refused",
            StreamEnd::Broken(_) => "broken",
            StreamEnd::Unopened(_) => "unopened",
        }
    }
}

/// Counter: forwarding streams ended, by how (`idle`, `refused`,
/// `broken`, `unopened`).
const FORWARDING_STREAMS_ENDED: &str = "vomesh_mesh_forwarding_streams_ended_total";

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
    /// returned channel. Proposals queued for one leader are sent in the
    /// order queued. A proposer that stops waiting (drops it) before the
    /// command is sent leaves it unsent.
    pub(crate) fn forward(
        self: &Arc<Self>,
        leader: NodeId,
        addr: &str,
        command: Bytes,
        deadline: Instant,
    ) -> oneshot::Receiver<Outcome> {
        let (reply, outcome) = oneshot::channel();
        let mut queues = self.lock();
        let queue = match queues.entry(leader) {
            Entry::Occupied(queue) => queue.into_mut(),
            Entry::Vacant(vacant) => {
                let queued = Arc::new(Notify::new());
                tokio::spawn(self.clone().send_queue(leader, queued.clone()));
                vacant.insert(Queue {
                    addr: String::new(),
                    waiting: Vec::new(),
                    queued,
                })
            }
        };
        addr.clone_into(&mut queue.addr);
        queue.waiting.push(Waiting {
            command,
            deadline,
            reply,
        });
        queue.queued.notify_one();
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Queue>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the proposals queued for `leader` until none come for a
    /// while; the queue is then removed, and the next proposal starts a
    /// task of its own.
    async fn send_queue(self: Arc<Self>, leader: NodeId, queued: Arc<Notify>) {
        let mut streams = true;
        loop {
            if streams {
                let end = self.send_on_stream(leader, &queued).await;
                metrics::counter!(FORWARDING_STREAMS_ENDED, "end" => end.label()).increment(1);
                match end {
                    StreamEnd::Refused => {
                        tracing::info!(
                            leader,
                            "mesh: the leader does not take forwarding streams (an earlier version); forwarding in requests"
                        );
                        streams = false;
                        continue;
                    }
                    StreamEnd::Broken(reason) => {
                        tracing::info!(
                            leader,
                            %reason,
                            "mesh: forwarding stream broken; what it left unanswered is indeterminate"
                        );
                    }
                    StreamEnd::Unopened(reason) => {
                        tracing::debug!(leader, %reason, "mesh: no forwarding stream opened");
                    }
                    StreamEnd::Idle => {}
                }
            } else {
                self.send_in_requests(leader).await;
                self.wait_queued(leader, &queued, Instant::now() + STREAM_IDLE_CLOSE)
                    .await;
            }
            let mut queues = self.lock();
            if queues
                .get_mut(&leader)
                .is_none_or(|queue| take_live(&mut queue.waiting).is_empty())
            {
                queues.remove(&leader);
                return;
            }
        }
    }

    /// Waits until a proposal for `leader` waits (true), or `until`.
    async fn wait_queued(&self, leader: NodeId, queued: &Notify, until: Instant) -> bool {
        loop {
            {
                let mut queues = self.lock();
                if let Some(queue) = queues.get_mut(&leader)
                    && !take_live(&mut queue.waiting).is_empty()
                {
                    return true;
                }
            }
            // A proposal queued since the check left a permit: no wakeup
            // is lost.
            if tokio::time::timeout_at(until, queued.notified())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Opens a forwarding stream to `leader` and sends the proposals that
    /// queue on it, until it idles or breaks. The batches it leaves
    /// unanswered are answered here: queued again for requests if the
    /// leader refused the stream, or as indeterminate if it broke.
    async fn send_on_stream(&self, leader: NodeId, queued: &Notify) -> StreamEnd {
        let Some((addr, within)) = self.destination(leader) else {
            return StreamEnd::Idle;
        };
        let header = pb::request::Kind::ForwardStream(pb::ForwardStreamOpen {});
        let (connection, send, recv) = match self
            .transport
            .open_stream(leader, &addr, header, 0, within)
            .await
        {
            Ok(streams) => streams,
            Err(error) => {
                // Nothing was proposed: the proposers try again when
                // the leader is reachable, or at the next one.
                self.answer_waiting(leader, |_| Ok(None));
                return StreamEnd::Unopened(error.to_string());
            }
        };
        let in_flight = Mutex::new(VecDeque::new());
        let end = self
            .run_stream(leader, queued, send, recv, &in_flight)
            .await;
        let unanswered = in_flight
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        match &end {
            StreamEnd::Refused => {
                let mut queues = self.lock();
                if let Some(queue) = queues.get_mut(&leader) {
                    let sent = unanswered.into_iter().flat_map(|sent: InFlight| sent.batch);
                    queue.waiting.splice(0..0, sent);
                }
            }
            StreamEnd::Broken(reason) => {
                self.transport.forget(leader, &connection);
                for sent in unanswered {
                    answer(sent.batch, |_| {
                        Err(ProposeError::Indeterminate(format!(
                            "the forwarding stream to node {leader} broke: {reason}"
                        )))
                    });
                }
            }
            StreamEnd::Idle | StreamEnd::Unopened(_) => {}
        }
        end
    }

    /// Sends batches on the stream while answers come back, in order.
    async fn run_stream(
        &self,
        leader: NodeId,
        queued: &Notify,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        in_flight: &Mutex<VecDeque<InFlight>>,
    ) -> StreamEnd {
        let in_flight_lock = || in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        let slots = Semaphore::new(self.limits.batches_in_flight_max.max(1));
        let sent = Notify::new();
        let writer = async {
            let mut sequence = 0;
            loop {
                // Never closed.
                let Ok(slot) = slots.acquire().await else {
                    return StreamEnd::Idle;
                };
                let idle_close = Instant::now() + STREAM_IDLE_CLOSE;
                if !self.wait_queued(leader, queued, idle_close).await {
                    if in_flight_lock().is_empty() {
                        return StreamEnd::Idle;
                    }
                    continue;
                }
                for _ in 0..self.limits.coalesce_yields {
                    tokio::task::yield_now().await;
                }
                let Some(batch) = self.next_batch(leader) else {
                    continue;
                };
                let frame = pb::ForwardProposals {
                    commands: batch
                        .iter()
                        .map(|waiting| waiting.command.clone())
                        .collect(),
                };
                metrics::histogram!(FORWARDED_PER_REQUEST).record(batch.len() as f64);
                sequence += 1;
                // No await between taking the batch and recording it: a
                // proposal is always queued, in flight, or answered.
                in_flight_lock().push_back(InFlight {
                    deadline: latest_deadline(&batch),
                    batch,
                    sequence,
                });
                slot.forget();
                sent.notify_one();
                if write_frame(&mut send, &frame).await.is_err() {
                    // The reader learns why: a leader that refused the
                    // stream stops reading it after its answer.
                    std::future::pending::<()>().await;
                }
            }
        };
        let reader = async {
            let max = self.transport.limits.frame_bytes_max;
            let mut answers = 0_usize;
            loop {
                let response = match read_frame(&mut recv, max).await {
                    Ok(frame) => pb::Response::decode(frame),
                    Err(error) => return StreamEnd::Broken(error.to_string()),
                };
                let response = match response {
                    Ok(response) => response,
                    Err(error) => return StreamEnd::Broken(error.to_string()),
                };
                if let Some(pb::response::Kind::Error(error)) = &response.kind
                    && answers == 0
                    && error.kind() == pb::ErrorKind::BadRequest
                {
                    return StreamEnd::Refused;
                }
                let Some(sent) = in_flight_lock().pop_front() else {
                    return StreamEnd::Broken("an answer to no batch".into());
                };
                answers += 1;
                slots.add_permits(1);
                match response.kind {
                    Some(pb::response::Kind::ForwardProposals(outcomes))
                        if outcomes.outcomes.len() == sent.batch.len() =>
                    {
                        let mut outcomes = outcomes.outcomes.into_iter();
                        answer(sent.batch, |_| {
                            self.outcome(outcomes.next().and_then(|outcome| outcome.outcome))
                        });
                    }
                    Some(pb::response::Kind::Error(error)) => {
                        answer(sent.batch, |_| self.refused(&error));
                    }
                    other => {
                        let reason = format!("unexpected answer {other:?}");
                        in_flight_lock().push_front(sent);
                        return StreamEnd::Broken(reason);
                    }
                }
            }
        };
        // The leader answers the oldest batch first: once its proposals'
        // deadlines pass unanswered, the stream is given up.
        let watch = async {
            loop {
                let oldest = in_flight_lock()
                    .front()
                    .map(|sent| (sent.sequence, sent.deadline));
                let Some((sequence, deadline)) = oldest else {
                    sent.notified().await;
                    continue;
                };
                tokio::time::sleep_until(deadline).await;
                if in_flight_lock().front().map(|sent| sent.sequence) == Some(sequence) {
                    return StreamEnd::Broken("no answer before the proposals' deadline".into());
                }
            }
        };
        let end = tokio::select! {
            end = writer => end,
            end = reader => end,
            end = watch => end,
        };
        if let StreamEnd::Idle = end {
            // Tell the leader the stream is done (it may already be gone).
            let _ = send.finish();
        }
        end
    }

    /// Sends the batches queued for `leader` as requests of their own, as
    /// to a leader of an earlier version, with at most
    /// [`ForwardingLimits::batches_in_flight_max`] on their way.
    async fn send_in_requests(&self, leader: NodeId) {
        let sender = || async {
            for _ in 0..self.limits.coalesce_yields {
                tokio::task::yield_now().await;
            }
            while let Some((addr, _)) = self.destination(leader) {
                let Some(batch) = self.next_batch(leader) else {
                    break;
                };
                let outcomes = self.send(leader, &addr, &batch).await;
                let mut outcomes = outcomes.into_iter();
                answer(batch, |_| {
                    outcomes.next().unwrap_or_else(|| {
                        Err(ProposeError::Indeterminate(
                            "the leader's answer was cut short".into(),
                        ))
                    })
                });
            }
        };
        let senders = (0..self.limits.batches_in_flight_max.max(1)).map(|_| sender());
        futures_util::future::join_all(senders).await;
    }

    /// Where `leader` is, and how long its waiting proposals have left;
    /// `None` when none waits.
    fn destination(&self, leader: NodeId) -> Option<(String, Duration)> {
        let mut queues = self.lock();
        let queue = queues.get_mut(&leader)?;
        let waiting = take_live(&mut queue.waiting);
        if waiting.is_empty() {
            return None;
        }
        let within = latest_deadline(waiting).saturating_duration_since(Instant::now());
        Some((queue.addr.clone(), within))
    }

    /// Answers every proposal waiting for `leader` with `outcome`.
    fn answer_waiting(&self, leader: NodeId, outcome: impl FnMut(&Waiting) -> Outcome) {
        let waiting = match self.lock().get_mut(&leader) {
            Some(queue) => std::mem::take(&mut queue.waiting),
            None => return,
        };
        answer(waiting, outcome);
    }

    /// The next batch for `leader`: the proposals waiting, in order, up to
    /// the batch's bytes; `None` if none waits.
    fn next_batch(&self, leader: NodeId) -> Option<Vec<Waiting>> {
        let mut queues = self.lock();
        let queue = queues.get_mut(&leader)?;
        let waiting = take_live(&mut queue.waiting);
        if waiting.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let taken = waiting
            .iter()
            .take_while(|waiting| {
                let first = bytes == 0;
                bytes += waiting.command.len().max(1);
                first || bytes <= self.limits.batch_bytes_max
            })
            .count();
        Some(queue.waiting.drain(..taken).collect())
    }

    /// Sends `batch` in one request; an outcome per proposal, in order.
    async fn send(&self, leader: NodeId, addr: &str, batch: &[Waiting]) -> Vec<Outcome> {
        let remaining = latest_deadline(batch).saturating_duration_since(Instant::now());
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

/// Drops the proposals whose proposers stopped waiting; the rest.
fn take_live(waiting: &mut Vec<Waiting>) -> &[Waiting] {
    waiting.retain(|waiting| !waiting.reply.is_closed());
    waiting
}

fn latest_deadline(batch: &[Waiting]) -> Instant {
    batch
        .iter()
        .map(|waiting| waiting.deadline)
        .max()
        .unwrap_or_else(Instant::now)
}

/// Answers each proposal of `batch` with `outcome`'s for it.
fn answer(batch: Vec<Waiting>, mut outcome: impl FnMut(&Waiting) -> Outcome) {
    for waiting in batch {
        let outcome = outcome(&waiting);
        // The proposer may have stopped waiting.
        let _ = waiting.reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt;

    use super::*;
    use crate::certs::{ClusterCa, NodeIdentity};
    use crate::transport::{RpcHandler, TransportLimits, TransportTimeouts, UDP_PAYLOAD_BYTES_MAX};

    /// What the leader's version understands.
    #[derive(Clone, Copy, PartialEq)]
    enum Version {
        /// Forwarding streams (this version).
        Streams,
        /// Batches, a request each.
        Batches,
        /// One proposal per request.
        Singles,
        /// Takes the stream, and never answers.
        Silent,
    }

    /// A leader that commits every command it is sent, its response being
    /// the command, after a pause long enough for proposals to queue behind
    /// the batches in flight. A stream's commands take indexes as they are
    /// read, as a real leader's do; a request's commands take them after
    /// the pause, in whatever order the requests' tasks run.
    struct Leader {
        version: Version,
        /// The number of commands in each batch or request answered.
        requests: Arc<Mutex<Vec<usize>>>,
        next_index: Arc<AtomicUsize>,
    }

    const PAUSE: Duration = Duration::from_millis(100);

    fn committed(commands: Vec<Bytes>, first: usize) -> Vec<pb::ForwardProposalResponse> {
        commands
            .into_iter()
            .zip(first..)
            .map(|(command, index)| pb::ForwardProposalResponse {
                index: index as u64,
                response: command,
            })
            .collect()
    }

    impl Leader {
        async fn commit(&self, commands: Vec<Bytes>) -> Vec<pb::ForwardProposalResponse> {
            tokio::time::sleep(PAUSE).await;
            self.requests.lock().unwrap().push(commands.len());
            let first = self.next_index.fetch_add(commands.len(), Ordering::SeqCst);
            committed(commands, first)
        }
    }

    fn bad_request() -> pb::response::Kind {
        pb::response::Kind::Error(pb::Error {
            kind: pb::ErrorKind::BadRequest as i32,
            message: "request without a kind".into(),
            leader_id: None,
        })
    }

    fn outcomes(committed: Vec<pb::ForwardProposalResponse>) -> pb::Response {
        let outcomes = committed
            .into_iter()
            .map(|committed| pb::ForwardOutcome {
                outcome: Some(pb::forward_outcome::Outcome::Committed(committed)),
            })
            .collect();
        pb::Response {
            kind: Some(pb::response::Kind::ForwardProposals(
                pb::ForwardProposalsResponse { outcomes },
            )),
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
                pb::request::Kind::ForwardProposals(batch) if self.version == Version::Batches => {
                    return outcomes(self.commit(batch.commands).await);
                }
                pb::request::Kind::ForwardProposal(proposal) => {
                    let committed = self.commit(vec![proposal.command]).await.remove(0);
                    pb::response::Kind::ForwardProposal(committed)
                }
                _ => bad_request(),
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

        fn forward_stream(
            &self,
            _peer: NodeId,
            requests: openraft::base::BoxStream<'static, pb::ForwardProposals>,
        ) -> openraft::base::BoxStream<'static, pb::Response> {
            match self.version {
                Version::Streams => {
                    let (log, next_index) = (self.requests.clone(), self.next_index.clone());
                    let answered = requests.map(move |batch| {
                        log.lock().unwrap().push(batch.commands.len());
                        let first = next_index.fetch_add(batch.commands.len(), Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(PAUSE).await;
                            outcomes(committed(batch.commands, first))
                        }
                    });
                    Box::pin(answered.buffered(32))
                }
                Version::Silent => Box::pin(requests.filter_map(|_| async { None })),
                // As a leader of an earlier version answers the opening.
                Version::Batches | Version::Singles => {
                    Box::pin(futures_util::stream::once(async {
                        pb::Response {
                            kind: Some(bad_request()),
                        }
                    }))
                }
            }
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

    /// A forwarder at node 1 and its leader, node 2, served at `addr`
    /// (while the leader's transport is kept).
    fn follower_of(
        version: Version,
        limits: ForwardingLimits,
    ) -> (Arc<Leader>, Arc<Forwarder>, String, Arc<Transport>) {
        let leader = Arc::new(Leader {
            version,
            requests: Arc::new(Mutex::new(Vec::new())),
            next_index: Arc::new(AtomicUsize::new(0)),
        });
        let ca = ClusterCa::generate().unwrap();
        let follower = transport(&ca, 1);
        let leader_transport = transport(&ca, 2);
        leader_transport.serve(leader.clone());
        let addr = leader_transport.local_addr().unwrap().to_string();
        let forwarder = Arc::new(Forwarder::new(follower, 4_096, limits));
        (leader, forwarder, addr, leader_transport)
    }

    /// Forwards 100 proposals, one a millisecond, to a leader of
    /// `version`; checks that each got its own outcome, in order, and
    /// returns the index each took and the number of proposals in each
    /// batch the leader received.
    async fn forward_100(version: Version, limits: ForwardingLimits) -> (Vec<u64>, Vec<usize>) {
        let (leader, forwarder, addr, _transport) = follower_of(version, limits);
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
        let indexes = results
            .iter()
            .map(|outcome| match outcome {
                Ok(Some(committed)) => committed.index,
                other => panic!("{other:?}"),
            })
            .collect();
        let requests = leader.requests.lock().unwrap().clone();
        assert_eq!(requests.iter().sum::<usize>(), 100);
        (indexes, requests)
    }

    /// Ten tasks, woken together, forward a proposal each, on a stream
    /// already open; returns the number of proposals in each batch the
    /// leader received.
    async fn forward_woken_together(coalesce_yields: usize) -> Vec<usize> {
        let limits = ForwardingLimits {
            coalesce_yields,
            ..ForwardingLimits::default()
        };
        let (leader, forwarder, addr, _transport) = follower_of(Version::Streams, limits);
        let deadline = Instant::now() + Duration::from_secs(10);
        let opening = forwarder.forward(2, &addr, Bytes::from("open"), deadline);
        assert!(matches!(opening.await.unwrap(), Ok(Some(_))));
        let (go, ready) = tokio::sync::watch::channel(false);
        let waiting = Arc::new(AtomicUsize::new(0));
        let sessions: Vec<_> = (0..10)
            .map(|i| {
                let (forwarder, addr, mut ready) = (forwarder.clone(), addr.clone(), ready.clone());
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    // Counted and parked in one poll of the one worker.
                    waiting.fetch_add(1, Ordering::SeqCst);
                    ready.wait_for(|go| *go).await.unwrap();
                    forwarder
                        .forward(2, &addr, Bytes::from(format!("c{i}")), deadline)
                        .await
                        .unwrap()
                })
            })
            .collect();
        while waiting.load(Ordering::SeqCst) < 10 {
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
        leader.requests.lock().unwrap()[1..].to_vec()
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
    async fn proposals_on_a_stream_go_in_batches_and_take_indexes_in_the_order_made() {
        let (indexes, batches) = forward_100(Version::Streams, ForwardingLimits::default()).await;
        // Those that come while the most batches are on their way queue,
        // and go together.
        assert!(batches.len() < 100, "{batches:?}");
        assert_eq!(indexes, (0..100).collect::<Vec<u64>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_without_streams_gets_the_batches_as_requests() {
        let (_, requests) = forward_100(Version::Batches, ForwardingLimits::default()).await;
        assert!(requests.len() < 100, "{requests:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_that_refuses_batches_gets_the_proposals_one_by_one() {
        let (_, requests) = forward_100(Version::Singles, ForwardingLimits::default()).await;
        assert_eq!(requests, vec![1; 100]);
    }

    /// One worker, so that the order tokio runs tasks in is the test's
    /// subject: the stream's sender, woken by a session, runs before the
    /// sessions woken with it, unless it yields to them first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn proposals_woken_together_leave_in_one_batch() {
        assert_eq!(forward_woken_together(2).await, vec![10]);
        assert_eq!(forward_woken_together(0).await.first(), Some(&1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_keep_to_the_configured_bytes() {
        // `c0`…`c99`: 2 or 3 bytes each, so at most 4 in 8 bytes.
        let limits = ForwardingLimits {
            batches_in_flight_max: 1,
            batch_bytes_max: 8,
            coalesce_yields: 0,
        };
        let (indexes, batches) = forward_100(Version::Streams, limits).await;
        assert!(batches.iter().all(|&n| n <= 4), "{batches:?}");
        assert_eq!(indexes, (0..100).collect::<Vec<u64>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_left_unanswered_is_given_up_at_the_proposals_deadline() {
        let (_leader, forwarder, addr, _transport) =
            follower_of(Version::Silent, ForwardingLimits::default());
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let outcome = forwarder.forward(2, &addr, Bytes::from("c0"), deadline);
        let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
            .await
            .expect("answered soon after the deadline")
            .unwrap();
        assert!(
            matches!(outcome, Err(ProposeError::Indeterminate(_))),
            "{outcome:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    /// On a link of large MTU (loopback here), MTU discovery raises the
    /// datagrams to `UDP_PAYLOAD_BYTES_MAX`, and they stay that large
    /// through bursts of large forwards, which quinn sends ten datagrams
    /// to a system call.
    #[tokio::test]
    async fn datagrams_grow_to_the_largest_payload_and_stay_through_a_burst() {
        let (_leader, forwarder, addr, _transport) =
            follower_of(Version::Streams, ForwardingLimits::default());
        let deadline = Instant::now() + Duration::from_secs(10);
        let command = || Bytes::from(vec![b'x'; 20_000]);
        let path = || {
            let connections = forwarder.transport.live_connections();
            assert!(!connections.is_empty());
            let stats: Vec<_> = connections.iter().map(|(_, c)| c.stats().path).collect();
            let mtu = stats.iter().map(|p| p.current_mtu).min().unwrap_or(0);
            (mtu, stats.iter().map(|p| p.lost_packets).sum::<u64>())
        };
        let discovered = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(matches!(
                forwarder.forward(2, &addr, command(), deadline).await,
                Ok(Ok(Some(_)))
            ));
            if path().0 == UDP_PAYLOAD_BYTES_MAX || Instant::now() > discovered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(path().0, UDP_PAYLOAD_BYTES_MAX, "discovered");

        // Bursts of 200 kB: enough for batches of several datagrams, and
        // within the 208 KiB receive buffer a stock Linux grants, so that
        // the kernel drops nothing (with 200 at once it dropped 162).
        for _ in 0..10 {
            let burst = (0..10).map(|_| forwarder.forward(2, &addr, command(), deadline));
            for outcome in futures_util::future::join_all(burst).await {
                assert!(matches!(outcome, Ok(Ok(Some(_)))), "{outcome:?}");
            }
        }
        // A ceiling too large for a batch lost the batches, and black-hole
        // detection then brought the datagrams back to 1,200 bytes.
        assert_eq!(path(), (UDP_PAYLOAD_BYTES_MAX, 0), "after the burst");
    }
}
