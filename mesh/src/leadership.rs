//! Where the leadership goes, beyond what elections decide: a leader that
//! stops hands it over first, and a leader that is not the operator's
//! preferred site hands it there once that site has caught up.
//!
//! Both use openraft's leadership transfer: the leader stops taking
//! proposals, tells every voter, and the chosen one campaigns as soon as
//! its log holds the leader's last entry, with no election timeout to wait
//! for. Proposals the old leader had already appended commit under the new
//! one and are answered as before; new ones are sent to the new leader.
//!
//! - **Stopping.** Without a handover a stopped leader is noticed only when
//!   its heartbeats are missed for an election timeout (1–2 s on a LAN,
//!   3–6 s with `network = "wan"`), and every publish in the mesh waits
//!   that long. A rolling restart would pause publishing once per site.
//! - **An operator's request** (`vomesh cluster transfer-leader ID`, asked
//!   at any site and forwarded to the leader): before maintenance of the
//!   leader's site, or to move the leadership near the publishers by hand.
//! - **A preferred site.** A publish made at a follower site is forwarded to
//!   the leader: one more crossing of the network for its payload and, for
//!   the publisher, one more round trip between sites before the
//!   acknowledgement. Where most events enter the mesh at one site (the one
//!   nearest the instruments' alert streams), `preferred_leader` keeps the
//!   leadership there. As Kafka's preferred-replica election does, the leader
//!   hands it over only once the preferred site is caught up, and not again
//!   for a while after each attempt, so a site with a flapping link is not
//!   handed the leadership over and over. Each site reads the setting from
//!   its own configuration; before each handover the leader asks the
//!   preferred site which site it names, and keeps the leadership if that
//!   is another one: two sites naming each other would otherwise hand it
//!   back and forth once per hold-off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::RaftMetrics;
use openraft::async_runtime::watch::WatchReceiver;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vomesh_proto::mesh as pb;

use crate::node::{LeaderRefusal, MeshNode, ask_status};
use crate::transport::{Transport, error_response};
use crate::types::{MeshTypes, NodeId, Raft, StateMachine};

/// Why the leadership was not handed over as asked.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("this node does not lead ({}); ask at the leader's site", leader_known(.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    #[error(
        "node {node} has stored {} of the leader's {last} entries; retry once it has caught up",
        stored(.matched)
    )]
    Behind {
        node: NodeId,
        matched: Option<u64>,
        last: u64,
    },
    #[error(
        "node {node} did not take the leadership within {waited:?} ({})",
        leader_known(.leader)
    )]
    NotTaken {
        node: NodeId,
        waited: Duration,
        leader: Option<NodeId>,
    },
    #[error("mesh is shutting down")]
    ShuttingDown,
    /// The leader, asked by this node, refused (its reason).
    #[error("the leader refused: {0}")]
    Refused(String),
    /// The leader could not be asked, or did not answer.
    #[error("the leader could not be asked: {0}")]
    Unreachable(String),
}

impl From<LeaderRefusal> for HandoverError {
    fn from(refusal: LeaderRefusal) -> Self {
        match refusal {
            LeaderRefusal::NotLeader(leader) => HandoverError::NotLeader { leader },
            LeaderRefusal::Refused(reason) => HandoverError::Refused(reason),
            LeaderRefusal::Unreachable(reason) => HandoverError::Unreachable(reason),
        }
    }
}

/// The answer a leader sends back for a forwarded handover.
pub(crate) fn handover_response(result: Result<(), HandoverError>) -> pb::Response {
    let kind = match result {
        Ok(()) => pb::response::Kind::LeadershipHanded(pb::Empty {}),
        Err(HandoverError::NotLeader { leader }) => pb::response::Kind::Error(pb::Error {
            kind: pb::ErrorKind::NotLeader as i32,
            message: "not the leader".into(),
            leader_id: leader,
        }),
        Err(e @ (HandoverError::NotAVoter(_) | HandoverError::Behind { .. })) => {
            return error_response(pb::ErrorKind::BadRequest, e.to_string());
        }
        Err(e) => return error_response(pb::ErrorKind::Unavailable, e.to_string()),
    };
    pb::Response { kind: Some(kind) }
}

fn leader_known(leader: &Option<NodeId>) -> String {
    leader.map_or_else(
        || "no leader known".to_owned(),
        |l| format!("node {l} leads"),
    )
}

fn stored(matched: &Option<u64>) -> String {
    matched.map_or_else(
        || "an unknown part (it may be unreachable)".to_owned(),
        |index| format!("up to entry {index}"),
    )
}

/// How far behind the leader's log (in entries) a voter may be and still
/// be handed the leadership: about one append. A voter further behind
/// would first have to receive the rest, while no proposal is taken.
pub(crate) const CAUGHT_UP_ENTRIES: u64 = 256;

/// The hold-off between two handovers to the preferred site, in election
/// timeouts (the longest): 20 s with the LAN timing, 60 s with the WAN's.
pub(crate) const HOLD_OFF_ELECTION_TIMEOUTS: u64 = 10;

/// The voters as the leader sees them, from openraft's metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Voters {
    /// The index of the leader's last log entry.
    pub(crate) last_log_index: u64,
    /// The other voters, each with the last index it has stored (`None`:
    /// nothing known yet, or the last exchange with it failed).
    pub(crate) matched: BTreeMap<NodeId, Option<u64>>,
}

impl Voters {
    /// What `metrics` says of the voters, if this node is their leader,
    /// with whether each is `reachable` (see [`Voters::new`]).
    pub(crate) fn led_by_me(
        metrics: &RaftMetrics<MeshTypes>,
        reachable: impl Fn(NodeId) -> bool,
    ) -> Option<Self> {
        if metrics.current_leader != Some(metrics.id) {
            return None;
        }
        let replication = metrics.replication.as_ref()?;
        let voters = metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != metrics.id)
            .map(|id| {
                let matched = replication.get(&id).cloned().flatten().map(|l| l.index);
                (id, matched, reachable(id))
            });
        Some(Self::new(metrics.last_log_index.unwrap_or(0), voters))
    }

    /// The voters, each as (id, last index stored, whether the last
    /// exchange with it got through). One not reachable counts as having
    /// stored nothing: what the leader last knew of it may be a site that
    /// has just stopped, which would otherwise be handed the leadership (a
    /// stopped preferred site, its log as long as the leader's while
    /// nothing is published).
    pub(crate) fn new(
        last_log_index: u64,
        voters: impl IntoIterator<Item = (NodeId, Option<u64>, bool)>,
    ) -> Self {
        let matched = voters
            .into_iter()
            .map(|(id, matched, reachable)| (id, matched.filter(|_| reachable)))
            .collect();
        Self {
            last_log_index,
            matched,
        }
    }

    /// Whether `voter` is one, and has stored all but the last
    /// [`CAUGHT_UP_ENTRIES`] of the leader's log.
    pub(crate) fn caught_up(&self, voter: NodeId) -> bool {
        matches!(
            self.matched.get(&voter),
            Some(Some(index)) if index + CAUGHT_UP_ENTRIES >= self.last_log_index
        )
    }

    /// The voter to hand the leadership to when this leader stops: one of
    /// those that have stored the most (`preferred` among them if it is,
    /// else the lowest id), and only if it is caught up. `None`: nobody can
    /// take over at once, and an election will follow the stop as usual.
    pub(crate) fn successor(&self, preferred: Option<NodeId>) -> Option<NodeId> {
        let most = self.matched.values().flatten().max()?;
        let best = |id: &NodeId| self.matched.get(id) == Some(&Some(*most));
        let chosen = preferred
            .filter(best)
            .or_else(|| self.matched.keys().copied().find(best))?;
        self.caught_up(chosen).then_some(chosen)
    }
}

/// When the leader hands its leadership to the preferred site: once that
/// site has been caught up at two checks in a row, and not again within
/// `hold_off` of the last attempt.
#[derive(Debug)]
pub(crate) struct Preference {
    pub(crate) preferred: NodeId,
    hold_off: Duration,
    caught_up_before: bool,
    last_attempt: Option<Instant>,
}

impl Preference {
    pub(crate) fn new(preferred: NodeId, hold_off: Duration) -> Self {
        Self {
            preferred,
            hold_off,
            caught_up_before: false,
            last_attempt: None,
        }
    }

    /// Called at each check with what the leader sees (`None`: this node
    /// does not lead); true when the handover is due now, which counts as
    /// an attempt.
    pub(crate) fn due(&mut self, voters: Option<&Voters>, now: Instant) -> bool {
        let caught_up = voters.is_some_and(|v| v.caught_up(self.preferred));
        let steady = caught_up && self.caught_up_before;
        self.caught_up_before = caught_up;
        let rested = self
            .last_attempt
            .is_none_or(|last| now.duration_since(last) >= self.hold_off);
        if steady && rested {
            self.last_attempt = Some(now);
            return true;
        }
        false
    }
}

/// Counter: handovers to the preferred site that were due and not made.
const HANDOVERS_DECLINED: &str = "vomesh_raft_leadership_handovers_declined_total";

/// Counts a handover and says so in the log.
fn record_handover(to: NodeId, reason: &'static str) {
    metrics::counter!("vomesh_raft_leadership_handovers_total", "reason" => reason).increment(1);
    tracing::info!(to, reason, "mesh: handing the leadership over");
}

impl<S: StateMachine> MeshNode<S> {
    /// The voters, if this node leads them.
    fn voters_led(&self) -> Option<Voters> {
        let transport = &self.inner.transport;
        Voters::led_by_me(&self.inner.raft.metrics().borrow_watched(), |id| {
            transport.is_reachable(id)
        })
    }

    /// If this node leads, hands the leadership to the best successor and
    /// waits (at most an election timeout) until another leader is known.
    /// Returns it.
    pub(crate) async fn hand_over_before_stopping(&self) -> Option<NodeId> {
        let voters = self.voters_led()?;
        let Some(to) = voters.successor(self.inner.preferred_leader) else {
            // A mesh of one has nobody to hand over to, and nothing to say.
            if !voters.matched.is_empty() {
                tracing::info!(
                    "mesh: no caught-up voter to hand the leadership to before stopping"
                );
            }
            return None;
        };
        let leader = self
            .hand_over(to, "stopping")
            .await
            .ok()?
            .filter(|leader| *leader != self.inner.id);
        match leader {
            Some(leader) => tracing::info!(leader, "mesh: leadership handed over"),
            None => tracing::warn!("mesh: no new leader after the handover"),
        }
        leader
    }

    /// Hands the leadership to `to` (counted under `reason`) and waits, at
    /// most an election timeout, until a leader other than this node is
    /// known; returns the leader known then.
    async fn hand_over(
        &self,
        to: NodeId,
        reason: &'static str,
    ) -> Result<Option<NodeId>, HandoverError> {
        record_handover(to, reason);
        self.inner
            .raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|_| HandoverError::ShuttingDown)?;
        let budget = Duration::from_millis(self.inner.timeouts.election_timeout_max_ms);
        let progress = &self.inner.progress;
        progress
            .leader_other_than(Some(self.inner.id), Instant::now() + budget)
            .await;
        Ok(progress.leader())
    }

    /// Hands the leadership to voter `to` once it has caught up, and
    /// returns once `to` leads (at most an election timeout later). Asked
    /// at a follower, the request is forwarded to the leader. Asking for
    /// the current leader succeeds at once.
    pub async fn hand_leadership_to(&self, to: NodeId) -> Result<(), HandoverError> {
        match self.hand_leadership_here(to).await {
            Err(HandoverError::NotLeader {
                leader: Some(leader),
            }) if leader != self.inner.id => self.forward_handover(leader, to).await,
            other => other,
        }
    }

    /// [`MeshNode::hand_leadership_to`], if this node leads.
    pub(crate) async fn hand_leadership_here(&self, to: NodeId) -> Result<(), HandoverError> {
        let leader = self.inner.progress.leader();
        if leader == Some(to) {
            return Ok(());
        }
        let voters = self
            .voters_led()
            .ok_or(HandoverError::NotLeader { leader })?;
        let matched = *voters
            .matched
            .get(&to)
            .ok_or(HandoverError::NotAVoter(to))?;
        if !voters.caught_up(to) {
            return Err(HandoverError::Behind {
                node: to,
                matched,
                last: voters.last_log_index,
            });
        }
        match self.hand_over(to, "requested").await? {
            Some(leader) if leader == to => Ok(()),
            leader => Err(HandoverError::NotTaken {
                node: to,
                waited: Duration::from_millis(self.inner.timeouts.election_timeout_max_ms),
                leader,
            }),
        }
    }

    async fn forward_handover(&self, leader: NodeId, to: NodeId) -> Result<(), HandoverError> {
        // The leader waits up to an election timeout for `to` to lead.
        let deadline = Duration::from_millis(2 * self.inner.timeouts.election_timeout_max_ms);
        let kind = pb::request::Kind::HandLeadership(pb::HandLeadership { to_node_id: to });
        Ok(self.ask_leader(leader, kind, deadline).await?)
    }
}

/// The site the preferred site names instead of itself, if it names
/// another: handing it the leadership would only start a tug of war.
/// (Naming none, or a node of an earlier version that does not say, is
/// no objection: such a site keeps the leadership it is given.)
fn names_another(preferred: NodeId, its_preference: Option<NodeId>) -> Option<NodeId> {
    its_preference.filter(|&named| named != preferred)
}

/// Asks `preferred` (within `deadline`) whether it names another site;
/// `Err` when it could not be asked.
async fn preference_of_preferred<S: StateMachine>(
    raft: &Raft<S>,
    transport: &Transport,
    preferred: NodeId,
    deadline: Duration,
) -> Result<Option<NodeId>, String> {
    let addr = raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .get_node(&preferred)
        .map(|node| node.addr.clone())
        .ok_or_else(|| format!("node {preferred} is not a member"))?;
    let status = ask_status(transport, preferred, &addr, deadline)
        .await
        .map_err(|e| e.to_string())?;
    Ok(names_another(preferred, status.preferred_leader))
}

/// Hands the leadership to `preference.preferred` whenever it is due (see
/// [`Preference`]) and that site does not name another (asked within
/// `ask_within`), checking every `interval` (a voter the transport cannot
/// reach counts as behind); ends when Raft stops (or when aborted).
pub(crate) fn follow_preference<S: StateMachine>(
    raft: Raft<S>,
    transport: Arc<Transport>,
    mut preference: Preference,
    interval: Duration,
    ask_within: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let voters = Voters::led_by_me(&raft.metrics().borrow_watched(), |id| {
                transport.is_reachable(id)
            });
            if preference.due(voters.as_ref(), Instant::now()) {
                let preferred = preference.preferred;
                match preference_of_preferred(&raft, &transport, preferred, ask_within).await {
                    Ok(None) => {}
                    Ok(Some(named)) => {
                        metrics::counter!(HANDOVERS_DECLINED, "reason" => "preference_disagrees")
                            .increment(1);
                        tracing::warn!(
                            preferred,
                            named,
                            "mesh: this site names node {preferred} preferred_leader, but that site names node {named}; the leadership stays here (set the same preferred_leader at every site)"
                        );
                        continue;
                    }
                    Err(reason) => {
                        tracing::debug!(preferred, %reason, "mesh: the preferred site could not be asked; no handover this time");
                        continue;
                    }
                }
                record_handover(preferred, "preferred");
                if raft.trigger().transfer_leader(preferred).await.is_err() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(last_log_index: u64, matched: &[(NodeId, Option<u64>)]) -> Voters {
        Voters {
            last_log_index,
            matched: matched.iter().copied().collect(),
        }
    }

    #[test]
    fn the_successor_is_the_voter_that_stored_the_most() {
        let v = voters(1_000, &[(2, Some(990)), (3, Some(1_000))]);
        assert_eq!(v.successor(None), Some(3));
        // The preferred one only if it is among those that stored the most.
        assert_eq!(v.successor(Some(2)), Some(3));
        let tie = voters(1_000, &[(2, Some(1_000)), (3, Some(1_000))]);
        assert_eq!(tie.successor(None), Some(2));
        assert_eq!(tie.successor(Some(3)), Some(3));
    }

    #[test]
    fn an_unreachable_voter_counts_as_having_stored_nothing() {
        let v = Voters::new(100, [(2, Some(100), false), (3, Some(90), true)]);
        assert!(!v.caught_up(2) && v.caught_up(3));
        assert_eq!(v.successor(Some(2)), Some(3));
    }

    #[test]
    fn nobody_takes_over_unless_caught_up() {
        let behind = voters(10_000, &[(2, Some(9_000)), (3, None)]);
        assert_eq!(behind.successor(None), None);
        assert_eq!(voters(10_000, &[(2, None)]).successor(None), None);
        assert_eq!(voters(10_000, &[]).successor(None), None);
        let just = voters(10_000, &[(2, Some(10_000 - CAUGHT_UP_ENTRIES))]);
        assert_eq!(just.successor(None), Some(2));
    }

    #[test]
    fn the_preferred_site_is_handed_the_leadership_once_steadily_caught_up() {
        let hold_off = Duration::from_secs(20);
        let mut preference = Preference::new(3, hold_off);
        let ready = voters(500, &[(2, Some(500)), (3, Some(499))]);
        let lagging = voters(5_000, &[(2, Some(5_000)), (3, Some(500))]);
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);

        // Caught up at one check is not yet steady.
        assert!(!preference.due(Some(&ready), at(0)));
        assert!(!preference.due(Some(&lagging), at(1)));
        assert!(!preference.due(Some(&ready), at(2)));
        assert!(preference.due(Some(&ready), at(3)));
        // Held off after an attempt, whatever the checks say…
        assert!(!preference.due(Some(&ready), at(4)));
        assert!(!preference.due(Some(&ready), at(22)));
        // …until the hold-off has passed.
        assert!(preference.due(Some(&ready), at(23)));
    }

    #[test]
    fn a_preferred_site_that_names_another_is_not_handed_the_leadership() {
        assert_eq!(names_another(3, Some(1)), Some(1));
        assert_eq!(names_another(3, Some(3)), None);
        // Naming none, or not saying (an earlier version): no objection.
        assert_eq!(names_another(3, None), None);
    }

    #[test]
    fn a_node_that_does_not_lead_hands_nothing_over() {
        let mut preference = Preference::new(3, Duration::ZERO);
        let start = Instant::now();
        for secs in 0..5 {
            assert!(!preference.due(None, start + Duration::from_secs(secs)));
        }
        // Nor does a preference for a node that is not a voter.
        let without_3 = voters(10, &[(2, Some(10))]);
        for secs in 5..10 {
            assert!(!preference.due(Some(&without_3), start + Duration::from_secs(secs)));
        }
    }
}
