//! Failure behaviour of a mesh of real processes (issue 4, item 6): a
//! leader killed with SIGKILL, a follower that misses more than a snapshot's
//! worth of entries, a minority that must not commit, a whole-cluster power
//! cut, and a five-site mesh losing two sites. Each test records what its
//! publishers and subscribers saw and checks it with the history checker
//! against every site's final XEP-0313 archive.
//!
//! The tests run one at a time (they measure failover times, and several
//! clusters at once on a small machine would mostly measure each other).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jid::BareJid;
use tokio::task::JoinHandle;
use vomesh_broker::client::{Client, ClientConfig};
use vomesh_broker::commands::{IqError, NodeEvent, node_event, subscribe_iq};
use vomesh_broker::xml::Element;
use vomesh_broker::xmpp::ns;
use vomesh_tests::cluster::TestCluster;
use vomesh_tests::history::{
    ArchivedItem, Attempt, Delivery, Outcome, Recorder, Report, Site, check, read_archive,
};
use vomesh_tests::node::TestNode;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NODE: &str = "alerts";
const SERVICE: &str = "pubsub.localhost";

/// How long a propose may take before the site answers with an error.
const PROPOSE_TIMEOUT: Duration = Duration::from_millis(3_000);

/// Small snapshots, so that they happen within a test, and tight timeouts,
/// so that elections are quick on loopback.
fn mesh_settings() -> String {
    format!(
        "snapshot_every_entries = 20\n\
         log_entries_kept_after_snapshot = 5\n\
         heartbeat_interval_ms = 80\n\
         election_timeout_min_ms = 400\n\
         election_timeout_max_ms = 800\n\
         propose_timeout_ms = {}\n",
        PROPOSE_TIMEOUT.as_millis()
    )
}

/// A client gives up on a publish after this long and counts it
/// indeterminate: longer than the site's own propose timeout, so a site
/// that works answers first.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(3_000 + 2_000);
/// How long a read (archive page, disco) may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster gets to elect a leader or catch up after a restart.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// One test at a time, across the test threads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn service() -> BareJid {
    BareJid::new(SERVICE).expect("a valid JID")
}

fn client_config(node: &TestNode, user: &str, password: &str, resource: &str) -> ClientConfig {
    let mut config = node.client_config(user, password);
    config.resource = Some(resource.to_owned());
    config
}

fn publish_iq(item_id: &str) -> Element {
    let payload = Element::new("alert", "urn:example:alert").with_text(item_id);
    let item = Element::new("item", PUBSUB)
        .with_attr("id", item_id)
        .with_child(payload);
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("to", SERVICE)
        .with_child(
            Element::new("pubsub", PUBSUB).with_child(
                Element::new("publish", PUBSUB)
                    .with_attr("node", NODE)
                    .with_child(item),
            ),
        )
}

/// Publishes `item_id` and classifies the answer; `Err` means the
/// connection is unusable (it timed out or broke) and was not recorded yet.
async fn publish(client: &mut Client, item_id: &str) -> (Outcome, bool) {
    match tokio::time::timeout(PUBLISH_TIMEOUT, client.iq(publish_iq(item_id))).await {
        Ok(Ok(reply)) if reply.attr("type") == Some("result") => (Outcome::Acknowledged, true),
        Ok(Ok(reply)) => {
            let error = IqError::from_reply(&reply);
            // The site's own words for "may or may not have been committed".
            let outcome = if error.condition == "remote-server-timeout" {
                Outcome::Indeterminate(error.to_string())
            } else {
                Outcome::Failed(error.to_string())
            };
            (outcome, true)
        }
        Ok(Err(error)) => (Outcome::Indeterminate(error.to_string()), false),
        Err(_) => (Outcome::Indeterminate("no answer in time".into()), false),
    }
}

/// Users, the node and bob's subscription, created through site 0, and
/// applied at every site (a site answers logins and reads from its own
/// replica, which may trail the commit by a moment).
async fn set_up(cluster: &TestCluster) {
    create_users_node_and_subscription(cluster).await;
    let applied = cluster.nodes[0]
        .status()
        .and_then(|s| s["applied_index"].as_u64())
        .expect("site 0's status");
    tokio::task::block_in_place(|| cluster.wait_applied(applied, RECOVERY_TIMEOUT));
}

async fn create_users_node_and_subscription(cluster: &TestCluster) {
    cluster.nodes[0].add_user("alice", "wonderland");
    cluster.nodes[0].add_user("bob", "builder");
    let mut alice = Client::connect(&client_config(
        &cluster.nodes[0],
        "alice",
        "wonderland",
        "setup",
    ))
    .await
    .expect("alice logs in");
    let create = Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("to", SERVICE)
        .with_child(
            Element::new("pubsub", PUBSUB)
                .with_child(Element::new("create", PUBSUB).with_attr("node", NODE)),
        );
    let created = alice.iq(create).await.expect("create answered");
    assert_eq!(created.attr("type"), Some("result"), "{}", created.to_xml());
    let bob = BareJid::new("bob@localhost").expect("a valid JID");
    let subscribed = alice
        .iq(subscribe_iq(&service(), NODE, &bob))
        .await
        .expect("subscribe answered");
    // alice may not subscribe bob; bob subscribes himself then.
    if subscribed.attr("type") != Some("result") {
        let mut bob_client =
            Client::connect(&client_config(&cluster.nodes[0], "bob", "builder", "setup"))
                .await
                .expect("bob logs in");
        let subscribed = bob_client
            .iq(subscribe_iq(&service(), NODE, &bob))
            .await
            .expect("subscribe answered");
        assert_eq!(
            subscribed.attr("type"),
            Some("result"),
            "{}",
            subscribed.to_xml()
        );
    }
}

/// Publishers and subscribers running against a cluster.
#[derive(Default)]
struct Workload {
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    publishers: Vec<JoinHandle<()>>,
    subscribers: Vec<JoinHandle<()>>,
}

impl Workload {
    /// A publisher at `site` publishing one item after the other (each
    /// waits for the previous answer), reconnecting when its connection
    /// breaks, until [`Workload::stop_publishers`].
    fn publisher(&mut self, publisher: usize, site: Site, node: &TestNode) {
        let config = client_config(node, "alice", "wonderland", &format!("pub-{publisher}"));
        let recorder = self.recorder.clone();
        let stop = self.stop.clone();
        self.publishers.push(tokio::spawn(async move {
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok(mut client)) =
                    tokio::time::timeout(READ_TIMEOUT, Client::connect(&config)).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while !stop.load(Ordering::Relaxed) {
                    sequence += 1;
                    let item_id = format!("p{publisher}-{sequence}");
                    let (outcome, usable) = publish(&mut client, &item_id).await;
                    recorder.attempt(Attempt {
                        publisher,
                        site,
                        item_id,
                        outcome,
                    });
                    if !usable {
                        break;
                    }
                }
            }
        }));
    }

    /// A subscriber session of bob at `site`, recording every item
    /// notification until its connection ends. Returns once the session
    /// receives notifications.
    async fn subscriber(&mut self, subscriber: usize, site: Site, node: &TestNode) {
        let config = client_config(node, "bob", "builder", &format!("sub-{subscriber}"));
        let mut client = Client::connect(&config).await.expect("bob logs in");
        client
            .send(&Element::new("presence", ns::CLIENT))
            .await
            .expect("presence sent");
        // A round trip after the presence: the session is available by the
        // time the answer comes.
        let disco = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", SERVICE)
            .with_child(Element::new("query", DISCO_INFO));
        client.iq(disco).await.expect("disco answered");
        let recorder = self.recorder.clone();
        self.subscribers.push(tokio::spawn(async move {
            let service = service();
            while let Ok(message) = client.next_stanza().await {
                if let Some(NodeEvent::Items(items)) = node_event(&message, &service, NODE) {
                    for item in items {
                        recorder.delivery(Delivery {
                            subscriber,
                            site,
                            item_id: item.item_id,
                            archive_id: item.archive_id.and_then(|id| id.parse().ok()),
                            stamp: item.stamp,
                        });
                    }
                }
            }
        }));
    }

    fn acknowledged(&self) -> usize {
        self.recorder
            .history()
            .attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Acknowledged)
            .count()
    }

    async fn stop_publishers(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for publisher in self.publishers.drain(..) {
            publisher.await.expect("a publisher task ends cleanly");
        }
    }

    fn stop_subscribers(&mut self) {
        for subscriber in self.subscribers.drain(..) {
            subscriber.abort();
        }
    }
}

/// Publishes at `site` until one publish is acknowledged (recording every
/// attempt as publisher `publisher`); returns the time it took.
async fn publish_until_acknowledged(
    recorder: Recorder,
    publisher: usize,
    site: Site,
    config: ClientConfig,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let mut sequence = 0;
    let mut client = None;
    loop {
        assert!(
            started.elapsed() < timeout,
            "no publish acknowledged at site {site} within {timeout:?}: {:?}",
            recorder.history().attempts.last()
        );
        let active = match client.as_mut() {
            Some(active) => active,
            None => match tokio::time::timeout(READ_TIMEOUT, Client::connect(&config)).await {
                Ok(Ok(connected)) => client.insert(connected),
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        sequence += 1;
        let item_id = format!("probe{publisher}-{sequence}");
        let (outcome, usable) = publish(active, &item_id).await;
        let acknowledged = outcome == Outcome::Acknowledged;
        recorder.attempt(Attempt {
            publisher,
            site,
            item_id,
            outcome,
        });
        if acknowledged {
            return started.elapsed();
        }
        if !usable {
            client = None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes one acknowledged item at `site` (see
/// [`publish_until_acknowledged`]).
async fn publish_at(
    workload: &Workload,
    publisher: usize,
    cluster: &TestCluster,
    site: Site,
) -> Duration {
    let config = client_config(
        &cluster.nodes[site],
        "alice",
        "wonderland",
        &format!("probe-{publisher}"),
    );
    publish_until_acknowledged(
        workload.recorder.clone(),
        publisher,
        site,
        config,
        RECOVERY_TIMEOUT,
    )
    .await
}

/// Waits until every running node has applied everything in every running
/// node's log (so nothing in flight can still change an archive).
fn settle(cluster: &TestCluster) {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let statuses: Vec<Option<(u64, u64)>> = cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| {
                let status = n.status()?;
                Some((
                    status["last_log_index"].as_u64().unwrap_or(0),
                    status["applied_index"].as_u64().unwrap_or(0),
                ))
            })
            .collect();
        let settled = statuses.iter().all(|s| {
            s.is_some_and(|(last, applied)| applied == last && Some((last, applied)) == statuses[0])
        });
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle within {RECOVERY_TIMEOUT:?}: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every running site's archive of the node.
async fn archives(cluster: &TestCluster) -> BTreeMap<Site, Vec<ArchivedItem>> {
    let mut archives = BTreeMap::new();
    for (site, node) in cluster.nodes.iter().enumerate() {
        if !node.is_running() {
            continue;
        }
        let mut auditor = Client::connect(&client_config(node, "alice", "wonderland", "audit"))
            .await
            .expect("the auditor logs in");
        let archive = read_archive(&mut auditor, &service(), NODE, 100, READ_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("reading site {site}'s archive: {e:#}"));
        archives.insert(site, archive);
    }
    archives
}

/// Settles the cluster, reads every archive and checks the history.
async fn audit(cluster: &TestCluster, workload: &Workload, test: &str) -> Report {
    let started = Instant::now();
    tokio::task::block_in_place(|| settle(cluster));
    let settled = started.elapsed();
    let archives = archives(cluster).await;
    eprintln!(
        "{test}: settled in {settled:?}, archives read in {:?}",
        started.elapsed() - settled
    );
    let report = check(&workload.recorder.history(), &archives);
    eprintln!(
        "{test}: attempted {}, acknowledged {}, failed {}, indeterminate {}, committed {}, \
         lost {}, duplicates {}, order violations {}, divergent nodes {}, failed but committed {}",
        report.attempted,
        report.acknowledged,
        report.failed,
        report.indeterminate,
        report.committed,
        report.lost,
        report.duplicates,
        report.order_violations,
        report.divergent_nodes,
        report.failed_committed,
    );
    report.assert_clean();
    report
}

/// The index of a running node other than `leader`.
fn followers(cluster: &TestCluster, leader: usize) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|i| *i != leader && cluster.nodes[*i].is_running())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_leader_is_replaced_and_publishes_at_survivors_resume() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start_with(3, &mesh_settings());
    set_up(&cluster).await;
    let leader = cluster.wait_for_leader(RECOVERY_TIMEOUT);
    let survivors = followers(&cluster, leader);

    let mut workload = Workload::default();
    for site in 0..3 {
        workload.subscriber(site, site, &cluster.nodes[site]).await;
    }
    for (publisher, site) in survivors.iter().chain(&survivors).enumerate() {
        workload.publisher(publisher, *site, &cluster.nodes[*site]);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before_kill = workload.acknowledged();
    assert!(
        before_kill > 0,
        "publishes are acknowledged before the kill"
    );

    cluster.nodes[leader].kill9();
    let killed = Instant::now();
    // The probe publishes from the moment of the kill, at a survivor.
    let probe_site = survivors[0];
    let probe = tokio::spawn(publish_until_acknowledged(
        workload.recorder.clone(),
        100,
        probe_site,
        client_config(&cluster.nodes[probe_site], "alice", "wonderland", "probe"),
        RECOVERY_TIMEOUT,
    ));
    let new_leader = tokio::task::block_in_place(|| cluster.wait_for_leader(RECOVERY_TIMEOUT));
    let election = killed.elapsed();
    let first_publish = probe.await.expect("the probe ends cleanly");
    eprintln!(
        "leader kill -> new leader (site {new_leader}) agreed by the survivors: {election:?}; \
         -> first acknowledged publish at site {probe_site}: {first_publish:?}"
    );
    assert_ne!(new_leader, leader);
    assert!(
        election < Duration::from_secs(10),
        "a new leader within 10 s of the kill, took {election:?}"
    );
    // A publish forwarded to the dead leader is answered (indeterminate)
    // once the survivors know the new leader, not at the propose deadline,
    // so the next one commits well before that deadline.
    assert!(
        first_publish < PROPOSE_TIMEOUT,
        "the first publish after the kill is acknowledged within {PROPOSE_TIMEOUT:?}, \
         took {first_publish:?}: {:?}",
        workload
            .recorder
            .history()
            .attempts
            .iter()
            .filter(|a| a.publisher == 100)
            .collect::<Vec<_>>()
    );

    // Publishes at the survivors resume.
    let after_kill = workload.acknowledged();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        workload.acknowledged() > after_kill,
        "the survivors' publishers get acknowledgements again"
    );

    // The killed node restarts and catches up while publishers run.
    tokio::task::block_in_place(|| cluster.nodes[leader].restart());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    workload.stop_publishers().await;
    workload.stop_subscribers();
    let report = audit(&cluster, &workload, "leader kill").await;
    assert!(report.committed >= report.acknowledged);
}

#[tokio::test(flavor = "multi_thread")]
async fn follower_that_missed_compacted_entries_catches_up_by_snapshot() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start_with(3, &mesh_settings());
    set_up(&cluster).await;
    let leader = cluster.wait_for_leader(RECOVERY_TIMEOUT);
    let follower = followers(&cluster, leader)[0];
    let follower_last = cluster.nodes[follower]
        .status()
        .and_then(|s| s["last_log_index"].as_u64())
        .expect("the follower's status");
    cluster.nodes[follower].kill9();

    // Well over a snapshot's worth (20 entries, 5 kept) while it is down.
    let mut workload = Workload::default();
    for publisher in 0..2 {
        workload.publisher(publisher, leader, &cluster.nodes[leader]);
    }
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    while workload.acknowledged() < 80 {
        assert!(
            Instant::now() < deadline,
            "80 publishes acknowledged in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workload.stop_publishers().await;
    let snapshot_index = cluster.nodes[leader]
        .status()
        .and_then(|s| s["snapshot_index"].as_u64())
        .unwrap_or(0);
    // The leader keeps 5 entries behind its snapshot: the follower's next
    // entry is no longer in the leader's log, only in its snapshot.
    assert!(
        snapshot_index > follower_last + 5 + 1,
        "the leader compacted its log past the follower (snapshot at {snapshot_index}, \
         follower at {follower_last})"
    );

    let restarted = Instant::now();
    tokio::task::block_in_place(|| cluster.nodes[follower].restart());
    settle(&cluster);
    eprintln!(
        "follower {follower} (last index {follower_last}) caught up with a snapshot at \
         {snapshot_index} in {:?}",
        restarted.elapsed()
    );
    // Both ends say so in their logs and count it in their metrics.
    assert!(
        cluster.nodes[follower]
            .log()
            .contains("mesh: snapshot installed from the leader"),
        "the follower installed the leader's snapshot"
    );
    assert!(cluster.nodes[leader].log().contains("mesh: snapshot sent"));
    let sent_to_follower = format!("peer=\"{}\"", follower + 1);
    assert!(
        cluster.nodes[leader].metrics().lines().any(|l| {
            l.starts_with("vomesh_raft_snapshots_sent_total{")
                && l.contains(&sent_to_follower)
                && l.contains("outcome=\"sent\"")
        }),
        "the leader counted the snapshot it sent"
    );
    assert!(
        cluster.nodes[follower]
            .metrics()
            .lines()
            .any(|l| l.starts_with("vomesh_raft_snapshots_installed_total ")),
        "the follower counted the snapshot it installed"
    );
    let report = audit(&cluster, &workload, "follower catch-up").await;
    assert!(report.acknowledged >= 80);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minority_cannot_commit_and_the_cluster_commits_again_after_it_heals() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start_with(3, &mesh_settings());
    set_up(&cluster).await;
    let leader = cluster.wait_for_leader(RECOVERY_TIMEOUT);
    let workload = Workload::default();
    publish_at(&workload, 0, &cluster, leader).await;

    // The leader is left alone: it may not commit anything any more.
    let mut alice = Client::connect(&client_config(
        &cluster.nodes[leader],
        "alice",
        "wonderland",
        "minority",
    ))
    .await
    .expect("alice logs in at the leader");
    let others = followers(&cluster, leader);
    for other in &others {
        cluster.nodes[*other].kill9();
    }
    for attempt in 1..=2 {
        let item_id = format!("minority-{attempt}");
        let started = Instant::now();
        let (outcome, usable) = publish(&mut alice, &item_id).await;
        let answered = started.elapsed();
        eprintln!("minority publish {attempt}: {outcome:?} after {answered:?}");
        assert!(usable, "the site answers, not the client's timeout");
        assert_ne!(outcome, Outcome::Acknowledged, "no false success");
        assert!(
            answered <= PROPOSE_TIMEOUT + Duration::from_secs(1),
            "the error comes within the propose timeout: {answered:?}"
        );
        workload.recorder.attempt(Attempt {
            publisher: 1,
            site: leader,
            item_id,
            outcome,
        });
    }

    for other in &others {
        tokio::task::block_in_place(|| cluster.nodes[*other].restart());
    }
    let healed = Instant::now();
    let leader = tokio::task::block_in_place(|| cluster.wait_for_leader(RECOVERY_TIMEOUT));
    let first = publish_at(&workload, 2, &cluster, leader).await;
    eprintln!(
        "healed -> first acknowledged publish: {:?} (probe {first:?})",
        healed.elapsed()
    );
    // The refused publishes are either absent or committed exactly once.
    let report = audit(&cluster, &workload, "minority").await;
    assert!(report.acknowledged >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_sites_killed_and_restarted_lose_nothing_acknowledged() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start_with(3, &mesh_settings());
    set_up(&cluster).await;
    let mut workload = Workload::default();
    for site in 0..3 {
        workload.subscriber(site, site, &cluster.nodes[site]).await;
        workload.publisher(site, site, &cluster.nodes[site]);
    }
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    // A power cut while publishes are in flight everywhere.
    for node in &mut cluster.nodes {
        node.kill9();
    }
    workload.stop_publishers().await;
    workload.stop_subscribers();
    let acknowledged = workload.acknowledged();
    assert!(
        acknowledged > 0,
        "publishes were acknowledged before the cut"
    );

    let restarted = Instant::now();
    for node in &mut cluster.nodes {
        tokio::task::block_in_place(|| node.restart());
    }
    tokio::task::block_in_place(|| cluster.wait_for_leader(RECOVERY_TIMEOUT));
    eprintln!(
        "all sites restarted, leader agreed in {:?}",
        restarted.elapsed()
    );
    let report = audit(&cluster, &workload, "power cut").await;
    assert!(report.committed >= acknowledged);
    // The cluster still commits after the restart.
    publish_at(&workload, 10, &cluster, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_sites_deliver_everywhere_and_commit_without_two_of_them() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start_with(5, &mesh_settings());
    set_up(&cluster).await;
    let mut workload = Workload::default();
    for site in 0..5 {
        workload.subscriber(site, site, &cluster.nodes[site]).await;
    }
    const ROUND: usize = 10;
    let mut publisher = 0;
    for _ in 0..ROUND {
        publish_at(&workload, publisher, &cluster, 0).await;
        publisher += 1;
    }
    // Every acknowledged item reaches the subscriber at each of `sites`.
    let delivered_everywhere = |sites: &[Site]| {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        loop {
            let history = workload.recorder.history();
            let missing: Vec<(Site, &str)> = sites
                .iter()
                .flat_map(|site| {
                    history
                        .attempts
                        .iter()
                        .filter(|a| a.outcome == Outcome::Acknowledged)
                        .filter(|a| {
                            !history
                                .deliveries
                                .iter()
                                .any(|d| d.site == *site && d.item_id == a.item_id)
                        })
                        .map(move |a| (*site, a.item_id.as_str()))
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "acknowledged items not delivered (site, item): {missing:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let all: Vec<Site> = (0..5).collect();
    tokio::task::block_in_place(|| delivered_everywhere(&all));

    // Two sites down, the leader among them if it is not site 0.
    let leader = cluster.wait_for_leader(RECOVERY_TIMEOUT);
    let mut victims: Vec<usize> = Vec::new();
    if leader != 0 {
        victims.push(leader);
    }
    let more = 2 - victims.len();
    victims.extend((1..5).filter(|s| *s != leader).take(more));
    for victim in &victims {
        cluster.nodes[*victim].kill9();
    }
    let killed = Instant::now();
    for _ in 0..ROUND {
        publish_at(&workload, publisher, &cluster, 0).await;
        publisher += 1;
    }
    eprintln!(
        "five sites, {victims:?} killed: {ROUND} publishes acknowledged in {:?}",
        killed.elapsed()
    );
    let survivors: Vec<Site> = all
        .iter()
        .copied()
        .filter(|s| !victims.contains(s))
        .collect();
    tokio::task::block_in_place(|| delivered_everywhere(&survivors));

    for victim in &victims {
        tokio::task::block_in_place(|| cluster.nodes[*victim].restart());
    }
    workload.stop_subscribers();
    let report = audit(&cluster, &workload, "five sites").await;
    assert!(report.acknowledged >= 2 * ROUND);
}
