//! One simulated run: sites started from their disks, the scenario's
//! publications and faults played on virtual time, a healing phase, and
//! everything observed gathered into a [`RunOutput`].
//!
//! The run happens on a single-threaded tokio runtime whose clock is paused:
//! when every task waits, tokio jumps to the next timer, so an hour of
//! scenario takes the CPU time of its events, not an hour. Tasks are spawned
//! through openraft's runtime ([`SimRuntime`]) so each inherits a seed
//! derived from the run's.
//!
//! The proposal path follows the mesh's `MeshNode::propose`: write at the
//! local Raft; if it is not the leader, forward to the leader it names (one
//! round trip on the modelled link); without a leader wait and retry until
//! the propose deadline. A publication is acknowledged, as the broker
//! answers its publisher, once its entry is applied at the publishing site.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{AsyncRuntime, BasicNode, ChangeMembers, ServerState};
use prost::Message as _;
use tokio::time::Instant;
use vomesh_broker::commands::{ClientLimits, publish_iq, subscribe_iq};
use vomesh_broker::pubsub::{Handled, PubsubLimits, PubsubService, RequestContext};
use vomesh_broker::replica::Replica;
use vomesh_broker::xml::{Element, parse_document};
use vomesh_mesh::config::{PROPOSALS_IN_FLIGHT_MAX_DEFAULT, raft_config};
use vomesh_mesh::state_store::SharedState;
use vomesh_mesh::types::{Command, NodeId};

use crate::journal::{Journal, SharedJournal, SiteDelivery, SiteReplica, digest};
use crate::net::{SimNetworkFactory, Wan};
use crate::rng::SimRng;
use crate::scenario::{FaultKind, Scenario};
use crate::sites::{Site, rtt_ms};
use crate::store::{Disk, MemLogStore, MemStateStore};
use crate::types::{SimRaft, SimRuntime};

/// The pubsub node every publication goes to.
pub const NODE: &str = "voevent/sim/alerts";
const DOMAIN: &str = "localhost";
const PUBLISHER: &str = "publisher@localhost/sim";
/// Publication times are stamped from this instant (2026-11-25T12:00:00Z)
/// plus virtual time since the start of the scenario, so that runs are
/// identical.
pub const EPOCH_MICROS: i64 = 1_795_608_000_000_000;
/// How often the leader monitor samples every site's Raft metrics.
pub const MONITOR_PERIOD: Duration = Duration::from_millis(50);
/// After the scenario, how long the healed mesh has to accept a probe and
/// bring every site to the same applied index.
pub const LIVENESS_BUDGET: Duration = Duration::from_secs(120);
/// Subscriptions proposed through Raft while the mesh is set up; the rest
/// are installed from a snapshot (see `Sim::install_subscriptions`).
const SUBSCRIPTIONS_PROPOSED_MAX: u64 = 2_000;
/// Subscriptions proposed at once while the mesh is set up.
const SETUP_PROPOSALS_IN_FLIGHT: usize = 512;

/// The real VOEvent packets the broker's tests use; each publication is one
/// of them with its IVORN made unique.
const VOEVENTS: [&str; 2] = [
    include_str!("../../broker/src/xml/testdata/Gaia16aac.xml"),
    include_str!("../../broker/src/xml/testdata/SWIFT_bat_position_v2.0_example.xml"),
];

/// One publication.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    pub seq: u64,
    pub site: NodeId,
    /// Scheduled time since the start of the scenario.
    pub published_at: Duration,
    /// The publication timestamp inside the command (key of deliveries).
    pub published_micros: i64,
    pub digest: u64,
    pub outcome: EventOutcome,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventOutcome {
    /// Applied at the publishing site: the publisher was told "ok".
    Acked { index: u64, at: Duration },
    /// The publisher got an error or no answer before the deadline.
    NotAcked,
    /// The publisher's site was down or not a member yet.
    SiteDown,
}

/// A leader site's loss and how long the mesh took to agree on another.
#[derive(Clone, Debug, PartialEq)]
pub struct Failover {
    pub old_leader: NodeId,
    pub at: Duration,
    /// Until a majority of the running, connected sites follow a leader
    /// again (a new one, or the old one back from a partition); `None` if
    /// that never happened before the end.
    pub took: Option<Duration>,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct RunOutput {
    pub scenario: String,
    pub seed: u64,
    pub sites: Vec<Site>,
    pub events: Vec<EventRecord>,
    pub journal: Journal,
    /// Bytes each site sent during the scenario (setup excluded).
    pub bytes_sent: BTreeMap<NodeId, u64>,
    pub failovers: Vec<Failover>,
    /// Changes of the agreed leader: (time, leader).
    pub leaders: Vec<(Duration, Option<NodeId>)>,
    /// The highest Raft term at the end: 1 + the elections held.
    pub final_term: u64,
    /// Joins: (site, time the join started, time it was a voter).
    pub joins: Vec<(NodeId, Duration, Option<Duration>)>,
    /// `Err` says what did not recover after the heal.
    pub liveness: Result<(), String>,
    pub duration: Duration,
}

/// Runs `scenario` with `seed` on a fresh single-threaded runtime with a
/// paused clock.
pub fn run(scenario: &Scenario, seed: u64) -> anyhow::Result<RunOutput> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(SimRuntime::scope(seed, Sim::run(scenario.clone(), seed)))
}

/// Site-local facts: every `@localhost` account is a local user.
struct Accounts;

impl RequestContext for Accounts {
    fn is_local_user(&self, bare: &jid::BareJid) -> bool {
        bare.domain().as_str() == DOMAIN
    }

    fn in_roster_group(&self, _: &jid::BareJid, _: &jid::BareJid, _: &[String]) -> bool {
        false
    }

    fn has_presence_subscription(&self, _: &jid::BareJid, _: &jid::BareJid) -> bool {
        false
    }
}

/// The account names of site `site`'s subscribers start with this.
pub fn subscriber_prefix(site: NodeId) -> String {
    format!("s{site}-")
}

/// Subscriber `i` of `sites`: its bare JID and the full JID it subscribes
/// from. Subscribers are dealt to the sites in turn.
fn subscriber(i: u64, sites: u64) -> anyhow::Result<(jid::BareJid, jid::FullJid)> {
    let bare = jid::BareJid::new(&format!(
        "{}u{i}@{DOMAIN}",
        subscriber_prefix(i % sites + 1)
    ))?;
    let full = jid::FullJid::new(&format!("{bare}/sim"))?;
    Ok((bare, full))
}

/// State shared by the driver and its tasks.
struct Shared {
    scenario: Scenario,
    wan: Wan,
    journal: SharedJournal,
    states: Mutex<BTreeMap<NodeId, SharedState<SiteReplica>>>,
    events: Mutex<Vec<EventRecord>>,
    /// Start of the scenario (after setup).
    start: Mutex<Instant>,
    propose_timeout: Duration,
    retry_period: Duration,
    service: jid::BareJid,
    publisher: jid::FullJid,
    voevents: Vec<Element>,
}

impl Shared {
    fn since_start(&self) -> Duration {
        lock(&self.start).elapsed()
    }

    fn state(&self, site: NodeId) -> Option<SharedState<SiteReplica>> {
        lock(&self.states).get(&site).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Sim {
    shared: Arc<Shared>,
    sites: Vec<Site>,
    disks: BTreeMap<NodeId, Disk>,
    config: Arc<openraft::Config>,
}

impl Sim {
    async fn run(scenario: Scenario, seed: u64) -> anyhow::Result<RunOutput> {
        let sites = scenario.site_list();
        let mut rng = SimRng::new(seed);
        let mut rtts = BTreeMap::new();
        for (i, a) in sites.iter().enumerate() {
            for (j, b) in sites.iter().enumerate() {
                rtts.insert((i as NodeId + 1, j as NodeId + 1), rtt_ms(a, b));
            }
        }
        let timeouts = scenario.timeouts().to_mesh();
        let config = Arc::new(raft_config(
            &timeouts,
            // openraft's own trigger, by entries: the simulated state is
            // small, and the node's growth condition is covered by its own
            // tests (`vomesh_mesh::snapshot_schedule`).
            openraft::SnapshotPolicy::LogsSinceLast(scenario.raft.snapshot_every_entries),
            scenario.raft.log_entries_kept_after_snapshot,
            scenario.raft.append_entries_max,
        )?);
        let voevents = VOEVENTS
            .iter()
            .map(|text| parse_document(text.as_bytes(), ClientLimits::DEFAULT.payload))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            wan: Wan::new(rtts, scenario.network, rng.fork()),
            journal: SharedJournal::new(Instant::now()),
            states: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            start: Mutex::new(Instant::now()),
            propose_timeout: Duration::from_millis(timeouts.propose_timeout_ms),
            retry_period: Duration::from_millis(timeouts.heartbeat_interval_ms),
            service: jid::BareJid::new(&format!("pubsub.{DOMAIN}"))?,
            publisher: jid::FullJid::new(PUBLISHER)?,
            voevents,
            scenario,
        });
        let mut sim = Sim {
            shared,
            sites,
            disks: BTreeMap::new(),
            config,
        };
        sim.form_mesh().await?;
        sim.set_up_node().await?;
        let bytes_at_start = sim.shared.wan.bytes_sent();
        *lock(&sim.shared.start) = Instant::now();
        sim.shared.journal.restart_clock();
        let monitor = Monitor::start(sim.shared.clone());
        let (failovers, joins) = sim.play().await?;
        let liveness = sim.heal_and_probe().await;
        let duration = sim.shared.since_start();
        let leaders = monitor.stop().await;
        let bytes_sent = sim
            .shared
            .wan
            .bytes_sent()
            .into_iter()
            .map(|(site, b)| (site, b - bytes_at_start.get(&site).copied().unwrap_or(0)))
            .collect();
        let final_term = sim
            .shared
            .wan
            .running()
            .values()
            .map(|r| r.metrics().borrow_watched().current_term)
            .max()
            .unwrap_or(0);
        for (_, raft) in sim.shared.wan.running() {
            raft.shutdown().await.ok();
        }
        let failovers = failovers
            .into_iter()
            .map(|(old_leader, at)| Failover {
                old_leader,
                at,
                took: recovery(&leaders, at),
            })
            .collect();
        let journal = sim.shared.journal.lock().clone();
        let mut events = std::mem::take(&mut *lock(&sim.shared.events));
        events.sort_by_key(|e| e.seq);
        Ok(RunOutput {
            scenario: sim.shared.scenario.name.clone(),
            seed,
            sites: sim.sites,
            events,
            journal,
            bytes_sent,
            failovers,
            leaders,
            final_term,
            joins,
            liveness,
            duration,
        })
    }

    fn site_id(&self, name: &str) -> NodeId {
        self.sites
            .iter()
            .position(|s| s.name == name)
            .map_or(0, |i| i as NodeId + 1)
    }

    fn node(&self, id: NodeId) -> BasicNode {
        BasicNode::new(&self.sites[(id - 1) as usize].name)
    }

    /// Boots a site from its disk (empty the first time).
    async fn start_site(&mut self, id: NodeId) -> anyhow::Result<()> {
        let shared = &self.shared;
        let disk = self.disks.entry(id).or_default().clone();
        let delivery = SiteDelivery {
            site: id,
            subscriber_prefix: subscriber_prefix(id),
            journal: shared.journal.clone(),
        };
        let replica = Replica::new(
            PubsubService::new(shared.service.clone(), PubsubLimits::default()),
            Arc::new(delivery),
        );
        let store = MemStateStore::open(
            disk.clone(),
            SiteReplica::new(id, replica, shared.journal.clone()),
        )?;
        let state = store.shared();
        let network = SimNetworkFactory {
            site: id,
            wan: shared.wan.clone(),
        };
        let raft = SimRaft::new(
            id,
            self.config.clone(),
            network,
            MemLogStore::new(disk),
            store,
        )
        .await?;
        shared.wan.set_up(id, raft, PROPOSALS_IN_FLIGHT_MAX_DEFAULT);
        lock(&shared.states).insert(id, state);
        Ok(())
    }

    async fn crash_site(&mut self, id: NodeId) {
        lock(&self.shared.states).remove(&id);
        if let Some(raft) = self.shared.wan.set_down(id) {
            raft.shutdown().await.ok();
        }
    }

    /// Starts every initial member and initialises the cluster at the
    /// first, as the lowest id does in production.
    async fn form_mesh(&mut self) -> anyhow::Result<()> {
        let joining: BTreeSet<&str> = self
            .shared
            .scenario
            .joining
            .iter()
            .map(String::as_str)
            .collect();
        let members: BTreeMap<NodeId, BasicNode> = (1..=self.sites.len() as NodeId)
            .filter(|id| !joining.contains(self.sites[(id - 1) as usize].name.as_str()))
            .map(|id| (id, self.node(id)))
            .collect();
        for id in members.keys() {
            self.start_site(*id).await?;
        }
        let first = *members
            .keys()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no members"))?;
        let raft = self
            .shared
            .wan
            .raft(first)
            .ok_or_else(|| anyhow::anyhow!("first site not running"))?;
        raft.initialize(members).await?;
        raft.wait(Some(Duration::from_secs(120)))
            .metrics(|m| m.current_leader.is_some(), "a first leader")
            .await?;
        Ok(())
    }

    /// Creates the VOEvent node and subscribes the scenario's subscribers,
    /// spread evenly over the sites (every site gets at least one, so each
    /// records deliveries).
    async fn set_up_node(&mut self) -> anyhow::Result<()> {
        let create = parse_document(
            format!(
                "<iq xmlns='jabber:client' type='set' id='create' to='{}'>\
                 <pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='{NODE}'/>\
                 <configure><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
                 <field var='pubsub#type'><value>{}</value></field>\
                 <field var='pubsub#max_items'><value>100000</value></field>\
                 </x></configure></pubsub></iq>",
                self.shared.service,
                vomesh_broker::voevent::VOEVENT_NS
            )
            .as_bytes(),
            ClientLimits::DEFAULT.payload,
        )?;
        let first = *lock(&self.shared.states)
            .keys()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no site running"))?;
        let publisher = self.shared.publisher.clone();
        propose_iq(&self.shared, first, &publisher, &create)
            .await
            .ok_or_else(|| anyhow::anyhow!("the VOEvent node could not be created"))?;
        let n = self.sites.len() as u64;
        let total = self.shared.scenario.subscribers.max(n);
        let proposed = total.min(SUBSCRIPTIONS_PROPOSED_MAX);
        let mut pending = Vec::new();
        for i in 0..proposed {
            let (bare, full) = subscriber(i, n)?;
            let iq = subscribe_iq(&self.shared.service, NODE, &bare);
            let shared = self.shared.clone();
            pending.push(SimRuntime::spawn(async move {
                propose_iq(&shared, first, &full, &iq).await
            }));
            if pending.len() >= SETUP_PROPOSALS_IN_FLIGHT || i + 1 == proposed {
                for task in pending.drain(..) {
                    task.await?
                        .ok_or_else(|| anyhow::anyhow!("a subscription was not committed"))?;
                }
            }
        }
        if total > proposed {
            self.install_subscriptions(first, proposed..total).await?;
        }
        Ok(())
    }

    /// Installs the subscriptions `range` at every site at once, from one
    /// snapshot of the first site's state with them added: the state every
    /// site would reach by applying them, without `total` Raft entries.
    /// (A subscribe scans the node's subscriptions, so proposing 100 000 of
    /// them costs 5·10⁹ comparisons per site.) Done while nothing is in
    /// flight, after every site applied everything, so the sites stay
    /// identical.
    async fn install_subscriptions(
        &self,
        first: NodeId,
        range: std::ops::Range<u64>,
    ) -> anyhow::Result<()> {
        use vomesh_mesh::types::StateMachine as _;
        use vomesh_proto::pubsub::{Snapshot, SubscriptionRecord};

        let running = self.shared.wan.running();
        let leader = running
            .get(&first)
            .ok_or_else(|| anyhow::anyhow!("first site not running"))?;
        let applied = leader.metrics().borrow_watched().last_log_index;
        for raft in running.values() {
            raft.wait(Some(Duration::from_secs(600)))
                .applied_index_at_least(applied, "setup applied everywhere")
                .await?;
        }
        let state = self
            .shared
            .state(first)
            .ok_or_else(|| anyhow::anyhow!("first site not running"))?;
        let mut snapshot = Snapshot::decode(state.read().snapshot())?;
        let node = snapshot
            .nodes
            .iter_mut()
            .find(|node| node.node == NODE)
            .ok_or_else(|| anyhow::anyhow!("the VOEvent node is missing"))?;
        let template = node
            .subscriptions
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no proposed subscription to copy"))?;
        let n = self.sites.len() as u64;
        for i in range {
            node.subscriptions.push(SubscriptionRecord {
                subid: format!("sim-{i}"),
                jid: subscriber(i, n)?.0.to_string(),
                ..template.clone()
            });
        }
        let bytes = snapshot.encode_to_vec();
        for site in running.keys() {
            if let Some(state) = self.shared.state(*site) {
                state.restore(&bytes)?;
            }
        }
        Ok(())
    }

    /// The scenario's publications and faults, in time order.
    async fn play(&mut self) -> anyhow::Result<(Vec<(NodeId, Duration)>, Vec<JoinRecord>)> {
        let scenario = self.shared.scenario.clone();
        let mut actions: Vec<(Duration, Action)> = publication_times(&scenario)
            .into_iter()
            .enumerate()
            .map(|(seq, at)| (at, Action::Publish(seq as u64)))
            .collect();
        actions.extend(scenario.faults.iter().map(|f| {
            (
                Duration::from_secs_f64(f.at_s),
                Action::Fault(f.kind.clone()),
            )
        }));
        // Stable: at equal times, publications (listed first) go first.
        actions.sort_by_key(|(at, _)| *at);
        let n = self.sites.len() as NodeId;
        let mut failovers = Vec::new();
        let mut joins = Vec::new();
        let mut tasks = Vec::new();
        let start = *lock(&self.shared.start);
        for (at, action) in actions {
            tokio::time::sleep_until(start + at).await;
            match action {
                Action::Publish(seq) => {
                    let shared = self.shared.clone();
                    let site = seq % n + 1;
                    let payload = self.payload(seq);
                    tasks.push(SimRuntime::spawn(publish(shared, seq, site, at, payload)));
                }
                Action::Fault(kind) => {
                    if let Some(failover) = self.fault(kind, &mut joins).await? {
                        failovers.push(failover);
                    }
                }
            }
        }
        tokio::time::sleep_until(start + Duration::from_secs_f64(scenario.duration_s)).await;
        for task in tasks {
            task.await?;
        }
        let mut done = Vec::new();
        for join in joins {
            done.push(join.finish().await);
        }
        Ok((failovers, done))
    }

    /// Event `seq`'s payload: a real VOEvent with a unique IVORN.
    fn payload(&self, seq: u64) -> Element {
        let voevents = &self.shared.voevents;
        let mut event = voevents[(seq % voevents.len() as u64) as usize].clone();
        let ivorn = event.attr("ivorn").unwrap_or("ivo://sim/event#").to_owned();
        event.set_attr("ivorn", format!("{ivorn}-sim{seq}"));
        event
    }

    /// Applies one fault; a crash of the leading site returns it and when.
    async fn fault(
        &mut self,
        kind: FaultKind,
        joins: &mut Vec<JoinTask>,
    ) -> anyhow::Result<Option<(NodeId, Duration)>> {
        let now = self.shared.since_start();
        let leader = agreed_leader(&self.shared.wan);
        Ok(match kind {
            FaultKind::Crash { site } => {
                let id = self.site_id(&site);
                self.crash_site(id).await;
                (leader == Some(id)).then_some((id, now))
            }
            FaultKind::CrashLeader => match leader {
                Some(id) => {
                    self.crash_site(id).await;
                    Some((id, now))
                }
                None => None,
            },
            FaultKind::Restart { site } => {
                let id = self.site_id(&site);
                if self.shared.wan.raft(id).is_none() {
                    self.start_site(id).await?;
                }
                None
            }
            FaultKind::Partition { site } => {
                let id = self.site_id(&site);
                self.shared.wan.isolate(id);
                (leader == Some(id)).then_some((id, now))
            }
            FaultKind::Heal => {
                self.shared.wan.heal();
                None
            }
            FaultKind::Join { site } => {
                let id = self.site_id(&site);
                self.start_site(id).await?;
                joins.push(JoinTask::start(self.shared.clone(), id, self.node(id), now));
                None
            }
        })
    }

    /// Heals every link, boots every crashed member, then checks that the
    /// mesh makes progress: a probe publication is acknowledged and every
    /// site applies up to it.
    async fn heal_and_probe(&mut self) -> Result<(), String> {
        self.shared.wan.heal();
        let members: Vec<NodeId> = self.disks.keys().copied().collect();
        for id in members {
            if self.shared.wan.raft(id).is_none() {
                self.start_site(id).await.map_err(|e| e.to_string())?;
            }
        }
        let deadline = Instant::now() + LIVENESS_BUDGET;
        let probe = {
            let first = *self.disks.keys().next().ok_or("no site")?;
            let iq = publish_iq(&self.shared.service, NODE, self.payload(u64::MAX));
            let publisher = self.shared.publisher.clone();
            let mut index = None;
            while index.is_none() && Instant::now() < deadline {
                index = propose_iq(&self.shared, first, &publisher, &iq).await;
                if index.is_none() {
                    tokio::time::sleep(self.shared.retry_period).await;
                }
            }
            index.ok_or("no publication was acknowledged after the heal")?
        };
        for (id, raft) in self.shared.wan.running() {
            let left = deadline.saturating_duration_since(Instant::now());
            raft.wait(Some(left))
                .applied_index_at_least(Some(probe), "probe applied")
                .await
                .map_err(|_| {
                    format!("site {id} did not apply the probe (index {probe}) after the heal")
                })?;
        }
        Ok(())
    }
}

enum Action {
    Publish(u64),
    Fault(FaultKind),
}

/// How long after `at` (when the leading site was lost) the mesh was
/// without an agreed leader: from `at` to the first leader agreed after the
/// monitor saw none. `None`: no leader agreed again before the end.
fn recovery(leaders: &[(Duration, Option<NodeId>)], at: Duration) -> Option<Duration> {
    leaders
        .iter()
        .skip_while(|(t, _)| *t < at)
        .skip_while(|(_, l)| l.is_some())
        .find(|(_, l)| l.is_some())
        .map(|(t, _)| *t - at)
}

/// Publication times: the steady rate over the whole run plus the bursts,
/// each a distinct microsecond (publication timestamps key deliveries).
pub fn publication_times(scenario: &Scenario) -> Vec<Duration> {
    let mut micros: Vec<u64> = Vec::new();
    let rate = scenario.workload.rate_per_s;
    if rate > 0.0 {
        let count = (scenario.duration_s * rate).floor() as u64;
        micros.extend((0..count).map(|k| (k as f64 / rate * 1e6) as u64));
    }
    for burst in &scenario.workload.bursts {
        let step = burst.over_s * 1e6 / burst.events.max(1) as f64;
        micros.extend((0..burst.events).map(|k| (burst.at_s * 1e6 + k as f64 * step) as u64));
    }
    micros.sort_unstable();
    for i in 1..micros.len() {
        if micros[i] <= micros[i - 1] {
            micros[i] = micros[i - 1] + 1;
        }
    }
    micros.into_iter().map(Duration::from_micros).collect()
}

/// Publishes event `seq` at `site` and records what the publisher saw.
async fn publish(shared: Arc<Shared>, seq: u64, site: NodeId, at: Duration, payload: Element) {
    let record = |published_micros, digest, outcome| EventRecord {
        seq,
        site,
        published_at: at,
        published_micros,
        digest,
        outcome,
    };
    let Some(state) = shared.state(site) else {
        lock(&shared.events).push(record(0, 0, EventOutcome::SiteDown));
        return;
    };
    let iq = publish_iq(&shared.service, NODE, payload);
    let publisher = shared.publisher.clone();
    let Some(command) = handle(&shared, &state, &publisher, &iq) else {
        lock(&shared.events).push(record(0, 0, EventOutcome::NotAcked));
        return;
    };
    let bytes = Bytes::from(command.encode_to_vec());
    let d = digest(&bytes);
    let outcome = match propose(&shared, site, bytes).await {
        Some(index) => EventOutcome::Acked {
            index,
            at: shared.since_start(),
        },
        None => EventOutcome::NotAcked,
    };
    lock(&shared.events).push(record(command.timestamp_micros, d, outcome));
}

/// The command the site's pubsub service makes of `iq`, if it is a write
/// it accepts.
fn handle(
    shared: &Shared,
    state: &SharedState<SiteReplica>,
    from: &jid::FullJid,
    iq: &Element,
) -> Option<vomesh_proto::pubsub::Command> {
    let now = EPOCH_MICROS + shared.since_start().as_micros() as i64;
    let handled = state
        .read()
        .replica()
        .pubsub()
        .handle_iq(from, iq, now, &Accounts);
    match handled {
        Handled::Propose(command) => Some(command),
        _ => None,
    }
}

/// Handles `iq` at `site` and proposes the command: the index it was
/// acknowledged at.
async fn propose_iq(
    shared: &Shared,
    site: NodeId,
    from: &jid::FullJid,
    iq: &Element,
) -> Option<u64> {
    let state = shared.state(site)?;
    let command = handle(shared, &state, from, iq)?;
    propose(shared, site, Bytes::from(command.encode_to_vec())).await
}

/// The mesh's propose: local write, else forward to the leader, retried
/// until the propose deadline; then wait until the site applied it.
async fn propose(shared: &Shared, site: NodeId, bytes: Bytes) -> Option<u64> {
    let deadline = Instant::now() + shared.propose_timeout;
    loop {
        let raft = shared.wan.raft(site)?;
        let submitter = shared.wan.submitter(site)?;
        let leader = match tokio::time::timeout_at(deadline, submitter.write(bytes.clone())).await {
            Err(_) => return None,
            Ok(Ok(written)) => break wait_applied(&raft, written.log_id.index, deadline).await,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => f.leader_id,
            Ok(Err(_)) => return None,
        };
        if let Some(leader) = leader {
            let forward = shared
                .wan
                .forward_proposal(site, leader, Command(bytes.clone()));
            match tokio::time::timeout_at(deadline, forward).await {
                Ok(Some(Ok(index))) => break wait_applied(&raft, index, deadline).await,
                // Appended nowhere (not the leader any more): retry.
                Ok(Some(Err(ClientWriteError::ForwardToLeader(_)))) => {}
                // Unreachable, or refused: the outcome is unknown.
                Ok(_) | Err(_) => return None,
            }
        }
        if Instant::now() + shared.retry_period >= deadline {
            return None;
        }
        tokio::time::sleep(shared.retry_period).await;
    }
}

async fn wait_applied(raft: &SimRaft, index: u64, deadline: Instant) -> Option<u64> {
    let left = deadline.saturating_duration_since(Instant::now());
    raft.wait(Some(left))
        .applied_index_at_least(Some(index), "applied at the proposer")
        .await
        .ok()
        .map(|_| index)
}

/// The leader a majority of the running, connected sites follow.
fn agreed_leader(wan: &Wan) -> Option<NodeId> {
    let running = wan.running();
    let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut voters = 0;
    let mut leaders = BTreeSet::new();
    for (id, raft) in &running {
        let m = raft.metrics().borrow_watched().clone();
        voters = voters.max(m.membership_config.membership().voter_ids().count());
        if m.state == ServerState::Leader && !wan.is_isolated(*id) {
            leaders.insert(*id);
        }
        if let Some(l) = m.current_leader
            && !wan.is_isolated(*id)
        {
            *votes.entry(l).or_default() += 1;
        }
    }
    leaders
        .into_iter()
        .find(|l| votes.get(l).copied().unwrap_or(0) * 2 > voters)
}

/// Samples the agreed leader every [`MONITOR_PERIOD`].
struct Monitor {
    stop: tokio::sync::watch::Sender<bool>,
    task: <SimRuntime as AsyncRuntime>::JoinHandle<Vec<(Duration, Option<NodeId>)>>,
}

impl Monitor {
    fn start(shared: Arc<Shared>) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = SimRuntime::spawn(async move {
            let mut changes: Vec<(Duration, Option<NodeId>)> = Vec::new();
            loop {
                let leader = agreed_leader(&shared.wan);
                if changes.last().map(|(_, l)| *l) != Some(leader) {
                    changes.push((shared.since_start(), leader));
                }
                tokio::select! {
                    biased;
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(MONITOR_PERIOD) => {}
                }
            }
            changes
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<(Duration, Option<NodeId>)> {
        self.stop.send(true).ok();
        self.task.await.unwrap_or_default()
    }
}

type JoinRecord = (NodeId, Duration, Option<Duration>);

/// A site joining: learner, caught up, promoted to voter (at the leader).
struct JoinTask {
    site: NodeId,
    started: Duration,
    task: <SimRuntime as AsyncRuntime>::JoinHandle<Option<Duration>>,
}

impl JoinTask {
    fn start(shared: Arc<Shared>, site: NodeId, node: BasicNode, started: Duration) -> Self {
        let task = SimRuntime::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(3600);
            while Instant::now() < deadline {
                if let Some(leader) = agreed_leader(&shared.wan).and_then(|l| shared.wan.raft(l)) {
                    let added = leader.add_learner(site, node.clone(), true).await.is_ok()
                        && leader
                            .change_membership(ChangeMembers::AddVoterIds([site].into()), false)
                            .await
                            .is_ok();
                    if added {
                        return Some(shared.since_start());
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None
        });
        Self {
            site,
            started,
            task,
        }
    }

    async fn finish(self) -> JoinRecord {
        (self.site, self.started, self.task.await.ok().flatten())
    }
}
