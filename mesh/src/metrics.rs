//! Feeds openraft's metrics into the `metrics` crate (the broker installs
//! the Prometheus exporter): gauges and batch-size histograms through
//! openraft's `MetricsRecorder`, which RaftCore calls as its state changes;
//! leadership, elections and per-peer replication lag from the metrics
//! watch channel, which carries the per-peer view the recorder lacks.
//!
//! Recorded here: `vomesh_raft_term`, `_is_leader`, `_leader_id`,
//! `_last_log_index`, `_commit_index`, `_applied_index`, `_snapshot_index`,
//! `_purged_index`, `_replication_lag{peer}`, `_match_index{peer}` (the
//! leader's view of each member's log; gauges);
//! `_log_entries` (entries in the log: last minus purged);
//! `vomesh_raft_elections_total` (every new term), `_vote_requests_total`,
//! `_heartbeats_total`, `_appends_total` (counters);
//! `vomesh_raft_apply_batch_entries`, `_append_batch_entries`,
//! `_write_batch_entries` (histograms: how well proposals are batched).
//! The transport adds `vomesh_mesh_dials_total{peer,outcome}`,
//! `vomesh_mesh_rpc_failures_total{peer,error}`,
//! `vomesh_mesh_peer_reachable{peer}`, the per-peer QUIC statistics
//! `vomesh_quic_rtt_seconds`, `_path_mtu_bytes`, `_lost_packets_total`,
//! `_sent_bytes_total`, `_received_bytes_total`, and
//! `vomesh_mesh_peers_refused_total{reason}` (handshake: no certificate from
//! the cluster CA; identity: a node id its certificate does not carry), and
//! the UDP socket's `vomesh_mesh_udp_buffer_bytes{direction}` and
//! `vomesh_mesh_udp_receive_drops_total` ([`crate::udp_socket`]).
//! The log store times each fsyncing commit into
//! `vomesh_storage_fsync_seconds` and counts its reads into
//! `vomesh_raft_log_reads_total{result}` (`hit`: from the entries cached in
//! memory, `miss`: from disk); snapshots are counted where they happen:
//! `vomesh_raft_snapshots_built_total`, `_installed_total`,
//! `_sent_total{peer,outcome}`, and `vomesh_raft_snapshot_bytes`; the
//! leadership handovers a leader starts, in
//! `vomesh_raft_leadership_handovers_total{reason}` ([`crate::leadership`]).
//!
//! The watch task also logs, once each, the changes an operator reads a log
//! for: election won or lost, leadership lost, a new leader followed, and
//! membership changes ([`transitions`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram};
use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::Fatal;
use openraft::metrics::{MetricsRecorder, RaftMetrics};
use tokio::task::JoinHandle;

use crate::types::{MeshTypes, NodeId, Raft, StateMachine};

/// Records openraft's gauges, counters and batch sizes. RaftCore calls it
/// on every turn of its loop, thousands of times a second under load, so
/// it holds its handles: the `metrics` macros look the name up in the
/// registry at each call (a hash and a lock: 1.4 % of a loaded three-site
/// mesh's CPU went to those lookups, here and in the watch task).
#[derive(Debug)]
struct Recorder {
    apply_batch: Histogram,
    append_batch: Histogram,
    write_batch: Histogram,
    term: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    purged_index: Gauge,
    is_leader: Gauge,
    vote_requests: Counter,
    heartbeats: Counter,
    appends: Counter,
}

impl Recorder {
    fn new() -> Self {
        Self {
            apply_batch: metrics::histogram!("vomesh_raft_apply_batch_entries"),
            append_batch: metrics::histogram!("vomesh_raft_append_batch_entries"),
            write_batch: metrics::histogram!("vomesh_raft_write_batch_entries"),
            term: metrics::gauge!("vomesh_raft_term"),
            last_log_index: metrics::gauge!("vomesh_raft_last_log_index"),
            commit_index: metrics::gauge!("vomesh_raft_commit_index"),
            applied_index: metrics::gauge!("vomesh_raft_applied_index"),
            snapshot_index: metrics::gauge!("vomesh_raft_snapshot_index"),
            purged_index: metrics::gauge!("vomesh_raft_purged_index"),
            is_leader: metrics::gauge!("vomesh_raft_is_leader"),
            vote_requests: metrics::counter!("vomesh_raft_vote_requests_total"),
            heartbeats: metrics::counter!("vomesh_raft_heartbeats_total"),
            appends: metrics::counter!("vomesh_raft_appends_total"),
        }
    }
}

/// openraft's encoding of `ServerState` in `set_server_state`.
const SERVER_STATE_LEADER: u8 = 3;

impl MetricsRecorder for Recorder {
    fn record_apply_batch(&self, entry_count: u64) {
        self.apply_batch.record(entry_count as f64);
    }

    fn record_append_batch(&self, entry_count: u64) {
        self.append_batch.record(entry_count as f64);
    }

    fn record_write_batch(&self, entry_count: u64) {
        self.write_batch.record(entry_count as f64);
    }

    fn set_current_term(&self, term: u64) {
        self.term.set(term as f64);
    }

    fn set_last_log_index(&self, index: u64) {
        self.last_log_index.set(index as f64);
    }

    fn set_committed_index(&self, index: u64) {
        self.commit_index.set(index as f64);
    }

    fn set_applied_index(&self, index: u64) {
        self.applied_index.set(index as f64);
    }

    fn set_snapshot_index(&self, index: u64) {
        self.snapshot_index.set(index as f64);
    }

    fn set_purged_index(&self, index: u64) {
        self.purged_index.set(index as f64);
    }

    fn set_server_state(&self, state: u8) {
        self.is_leader.set(if state == SERVER_STATE_LEADER {
            1.0
        } else {
            0.0
        });
    }

    fn increment_vote(&self) {
        self.vote_requests.increment(1);
    }

    fn increment_heartbeat(&self) {
        self.heartbeats.increment(1);
    }

    fn increment_append(&self) {
        self.appends.increment(1);
    }
}

/// Entries each peer is behind the leader's last log index; empty unless
/// this node leads.
pub fn replication_lag(m: &RaftMetrics<MeshTypes>) -> BTreeMap<NodeId, u64> {
    let last = m.last_log_index.unwrap_or(0);
    m.replication
        .as_ref()
        .map(|peers| {
            peers
                .iter()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index))))
                .collect()
        })
        .unwrap_or_default()
}

/// What the watch task remembers of the last metrics it saw, to tell an
/// operator what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    term: u64,
    state: ServerState,
    leader: Option<NodeId>,
    /// Where the effective membership was proposed; changes with it.
    membership_log_index: Option<u64>,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
}

impl Seen {
    fn of(m: &RaftMetrics<MeshTypes>) -> Self {
        let membership = m.membership_config.membership();
        Self {
            term: m.current_term,
            state: m.state,
            leader: m.current_leader,
            membership_log_index: m.membership_config.log_id().map(|id| id.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }
}

/// A change in a node's Raft view that gets one log line.
#[derive(Debug, PartialEq, Eq)]
enum Transition {
    ElectionWon {
        term: u64,
    },
    ElectionLost {
        term: u64,
        leader: Option<NodeId>,
    },
    SteppedDown {
        term: u64,
        leader: Option<NodeId>,
    },
    LeaderChanged {
        term: u64,
        leader: NodeId,
    },
    MembershipChanged {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
}

/// The changes between two views of node `me`, in the order they are logged.
/// A follower whose leader vanishes (an election under way) says nothing
/// until a leader is known again: the election's outcome is the news.
fn transitions(me: NodeId, before: &Seen, now: &Seen) -> Vec<Transition> {
    let mut changes = Vec::new();
    let term = now.term;
    let leads = |s: &Seen| s.state == ServerState::Leader;
    if leads(now) && !leads(before) {
        changes.push(Transition::ElectionWon { term });
    } else if leads(before) && !leads(now) {
        changes.push(Transition::SteppedDown {
            term,
            leader: now.leader,
        });
    } else if before.state == ServerState::Candidate && now.state != ServerState::Candidate {
        changes.push(Transition::ElectionLost {
            term,
            leader: now.leader,
        });
    } else if let Some(leader) = now.leader.filter(|l| *l != me && before.leader != Some(*l)) {
        changes.push(Transition::LeaderChanged { term, leader });
    }
    if before.membership_log_index != now.membership_log_index
        && (before.voters != now.voters || before.learners != now.learners)
    {
        changes.push(Transition::MembershipChanged {
            voters: now.voters.clone(),
            learners: now.learners.clone(),
        });
    }
    changes
}

impl Transition {
    fn log(&self) {
        match self {
            Self::ElectionWon { term } => tracing::info!(term, "mesh: election won, leading"),
            Self::ElectionLost { term, leader } => {
                tracing::info!(term, leader, "mesh: election lost")
            }
            Self::SteppedDown { term, leader } => {
                tracing::warn!(term, leader, "mesh: no longer the leader")
            }
            Self::LeaderChanged { term, leader } => {
                tracing::info!(term, leader, "mesh: following a new leader")
            }
            Self::MembershipChanged { voters, learners } => {
                tracing::info!(?voters, ?learners, "mesh: membership changed")
            }
        }
    }
}

/// `vomesh_raft_replication_lag{peer}` and `vomesh_raft_match_index{peer}`,
/// with each peer's handles kept once it is first seen.
#[derive(Default)]
struct PeerGauges {
    /// Each peer's (lag, match index) gauges.
    handles: BTreeMap<NodeId, (Gauge, Gauge)>,
    /// The peers whose lag was last reported.
    lagging: BTreeMap<NodeId, u64>,
}

impl PeerGauges {
    fn handles(&mut self, peer: NodeId) -> &(Gauge, Gauge) {
        self.handles.entry(peer).or_insert_with(|| {
            let label = peer.to_string();
            (
                metrics::gauge!("vomesh_raft_replication_lag", "peer" => label.clone()),
                metrics::gauge!("vomesh_raft_match_index", "peer" => label),
            )
        })
    }

    fn export(&mut self, m: &RaftMetrics<MeshTypes>) {
        let lag = replication_lag(m);
        // A peer no longer replicated to (this node lost leadership, or the
        // peer left) reports no lag rather than a stale one.
        let gone: Vec<NodeId> = self
            .lagging
            .keys()
            .filter(|id| !lag.contains_key(id))
            .copied()
            .collect();
        for peer in gone {
            self.handles(peer).0.set(0.0);
        }
        for (peer, behind) in &lag {
            self.handles(*peer).0.set(*behind as f64);
        }
        for (peer, matched) in m.replication.iter().flatten() {
            self.handles(*peer)
                .1
                .set(matched.map_or(0.0, |id| id.index as f64));
        }
        self.lagging = lag;
    }
}

/// The running metrics feed of one node.
pub(crate) struct MetricsExporter {
    watch_task: JoinHandle<()>,
}

impl MetricsExporter {
    pub(crate) async fn start<S: StateMachine>(raft: &Raft<S>) -> Result<Self, Fatal<MeshTypes>> {
        raft.set_metrics_recorder(Some(Arc::new(Recorder::new())))
            .await?;
        let mut rx = raft.metrics();
        let watch_task = tokio::spawn(async move {
            let elections = metrics::counter!("vomesh_raft_elections_total");
            let leader_id = metrics::gauge!("vomesh_raft_leader_id");
            let log_entries = metrics::gauge!("vomesh_raft_log_entries");
            let mut peers = PeerGauges::default();
            let mut seen: Option<Seen> = None;
            while rx.changed().await.is_ok() {
                // Read in place: the metrics change on every turn of
                // RaftCore's loop, and a copy of them is a dozen
                // allocations. Gauges are set under the channel's read lock
                // (atomic stores); the log lines wait until it is released,
                // since RaftCore cannot publish its metrics meanwhile.
                let (me, now) = {
                    let m = rx.borrow_and_update();
                    leader_id.set(m.current_leader.map_or(-1.0, |l| l as f64));
                    let purged = m.purged.map_or(0, |id| id.index);
                    log_entries.set(m.last_log_index.unwrap_or(0).saturating_sub(purged) as f64);
                    peers.export(&m);
                    (m.id, Seen::of(&m))
                };
                if let Some(before) = &seen {
                    // Every new term is one election, wherever it started.
                    if before.term < now.term {
                        elections.increment(1);
                    }
                    for transition in transitions(me, before, &now) {
                        transition.log();
                    }
                }
                seen = Some(now);
            }
        });
        Ok(Self { watch_task })
    }

    pub(crate) fn stop(&self) {
        self.watch_task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::impls::leader_id_adv::LeaderId;

    use super::*;
    use crate::types::LogId;

    #[test]
    fn replication_lag_counts_entries_each_peer_is_behind_the_leader() {
        let mut m = RaftMetrics::<MeshTypes>::new_initial(1);
        m.last_log_index = Some(10);
        let at = |index| {
            Some(LogId::new(
                LeaderId {
                    term: 2,
                    node_id: 1,
                },
                index,
            ))
        };
        m.replication = Some(BTreeMap::from([(1, at(10)), (2, at(7)), (3, None)]));
        assert_eq!(replication_lag(&m), BTreeMap::from([(2, 3), (3, 10)]));
    }

    fn seen(term: u64, state: ServerState, leader: Option<NodeId>) -> Seen {
        Seen {
            term,
            state,
            leader,
            membership_log_index: Some(1),
            voters: vec![1, 2, 3],
            learners: vec![],
        }
    }

    #[test]
    fn a_candidate_that_becomes_leader_won_its_election() {
        let before = seen(3, ServerState::Candidate, None);
        let now = seen(3, ServerState::Leader, Some(1));
        assert_eq!(
            transitions(1, &before, &now),
            [Transition::ElectionWon { term: 3 }]
        );
    }

    #[test]
    fn a_candidate_that_follows_another_lost_its_election() {
        let before = seen(3, ServerState::Candidate, None);
        let now = seen(4, ServerState::Follower, Some(2));
        assert_eq!(
            transitions(1, &before, &now),
            [Transition::ElectionLost {
                term: 4,
                leader: Some(2)
            }]
        );
    }

    #[test]
    fn a_follower_logs_a_new_leader_once_and_not_the_vacancy_before_it() {
        let following = seen(3, ServerState::Follower, Some(2));
        let vacant = seen(4, ServerState::Follower, None);
        let new_leader = seen(4, ServerState::Follower, Some(3));
        assert_eq!(transitions(1, &following, &vacant), []);
        assert_eq!(
            transitions(1, &vacant, &new_leader),
            [Transition::LeaderChanged { term: 4, leader: 3 }]
        );
        assert_eq!(transitions(1, &new_leader, &new_leader), []);
    }

    #[test]
    fn a_leader_that_steps_down_says_so() {
        let before = seen(3, ServerState::Leader, Some(1));
        let now = seen(4, ServerState::Follower, None);
        assert_eq!(
            transitions(1, &before, &now),
            [Transition::SteppedDown {
                term: 4,
                leader: None
            }]
        );
    }

    #[test]
    fn a_new_member_is_logged_as_a_membership_change() {
        let before = seen(3, ServerState::Leader, Some(1));
        let mut now = before.clone();
        now.membership_log_index = Some(9);
        now.learners = vec![4];
        assert_eq!(
            transitions(1, &before, &now),
            [Transition::MembershipChanged {
                voters: vec![1, 2, 3],
                learners: vec![4]
            }]
        );
    }

    #[test]
    fn a_follower_reports_no_replication_lag() {
        let mut m = RaftMetrics::<MeshTypes>::new_initial(2);
        m.last_log_index = Some(10);
        assert!(replication_lag(&m).is_empty());
    }
}
