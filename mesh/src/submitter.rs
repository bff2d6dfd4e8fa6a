//! Hands proposals to the local Raft core in batches.
//!
//! openraft's core reads `client_write` messages one at a time and, after
//! each, runs what it asks of the log and of the replication streams. A
//! leader under load therefore appended one or two entries at a time
//! (67,207 entries in 44,396 log writes over 10 s, publishers 16 × 4 at
//! the leader of a three-site mesh), each append a turn of the core's loop,
//! a wakeup of the log thread and a nudge to every replication stream.
//! `client_write_many` gives the core several entries in one message,
//! appended with one write. The submitter is one task that takes every
//! proposal queued since it last ran and submits them together. Before
//! taking them it lets the tasks already runnable have their turn (a
//! session that just parsed several publishes queues them all), and it
//! never waits longer: no timer, no batch size to reach, so a proposal
//! that finds the runtime idle goes alone, at once, and batches grow only
//! with the load.
//!
//! Each proposal is still an entry of its own, at a log index of its own
//! (its global sequence number), with its own outcome: a batch is only a
//! way of delivering entries to the core.

use bytes::Bytes;
use futures_util::StreamExt;
use openraft::base::BoxStream;
use openraft::errors::{ClientWriteError, Fatal, RaftError};
use openraft::raft::{WriteResponse, WriteResult};
use openraft::storage::RaftStateMachine;
use tokio::sync::{mpsc, oneshot};

use crate::types::{Command, MeshTypeConfig};

/// What became of one proposal: its entry's log id and the state machine's
/// response once applied here, or why it was not written.
pub type Outcome<C> = Result<WriteResponse<C>, RaftError<C, ClientWriteError<C>>>;

/// A proposal waiting for the submitter, with where its outcome goes.
type Pending<C> = (Command, oneshot::Sender<Outcome<C>>);

/// Queues proposals for the local Raft core. Dropping it ends the task
/// once the proposals queued are submitted.
#[derive(Debug)]
pub struct Submitter<C: MeshTypeConfig> {
    queue: mpsc::UnboundedSender<Pending<C>>,
}

impl<C: MeshTypeConfig> Submitter<C> {
    /// Starts the task that submits to `raft`, at most `batch_max` entries
    /// per message. The queue needs no bound of its own: every caller
    /// holds one of the node's permits for proposals in flight while its
    /// proposal is queued, and `batch_max` is that permit count.
    pub fn start<SM: RaftStateMachine<C>>(raft: openraft::Raft<C, SM>, batch_max: usize) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(submit(raft, pending, batch_max.max(1)));
        Self { queue }
    }

    /// Proposes `command` here: its outcome once applied by this node's
    /// state machine, or a `ForwardToLeader` error if this node does not
    /// lead. The proposal is queued by this call, not when the future is
    /// first polled, so proposals take log indexes in the order of the
    /// calls that made them. A caller that stops waiting leaves the entry
    /// proposed.
    pub fn write(&self, command: Bytes) -> impl Future<Output = Outcome<C>> + Send + use<C> {
        let (reply, outcome) = oneshot::channel();
        let queued = self.queue.send((Command(command), reply)).is_ok();
        async move {
            if !queued {
                return Err(RaftError::Fatal(Fatal::Stopped));
            }
            // The submitter drops a proposal unanswered only when Raft stopped.
            outcome
                .await
                .unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
        }
    }
}

/// Submits the queued proposals, every one queued so far in each message.
async fn submit<C: MeshTypeConfig, SM: RaftStateMachine<C>>(
    raft: openraft::Raft<C, SM>,
    mut pending: mpsc::UnboundedReceiver<Pending<C>>,
    batch_max: usize,
) {
    let mut batch = Vec::with_capacity(batch_max);
    while pending.recv_many(&mut batch, batch_max).await > 0 {
        // Let the tasks already runnable (proposals a session just parsed)
        // queue theirs before taking the batch.
        tokio::task::yield_now().await;
        while batch.len() < batch_max {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<Command>, Vec<_>) = batch.drain(..).unzip();
        match raft.client_write_many(commands).await {
            Ok(outcomes) => {
                tokio::spawn(deliver(outcomes, replies));
            }
            Err(fatal) => {
                for reply in replies {
                    let _ = reply.send(Err(RaftError::Fatal(fatal.clone())));
                }
            }
        }
    }
}

/// Passes each entry's outcome, in log order, to its proposer.
async fn deliver<C: MeshTypeConfig>(
    mut outcomes: BoxStream<'static, Result<WriteResult<C>, Fatal<C>>>,
    replies: Vec<oneshot::Sender<Outcome<C>>>,
) {
    for reply in replies {
        // A stream that ends early (Raft stopped) drops the rest unanswered.
        let Some(outcome) = outcomes.next().await else {
            return;
        };
        let outcome = match outcome {
            Ok(written) => written.map_err(RaftError::APIError),
            Err(fatal) => Err(RaftError::Fatal(fatal)),
        };
        // The proposer may have stopped waiting (its deadline passed).
        let _ = reply.send(outcome);
    }
}
