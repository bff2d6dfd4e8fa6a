//! The workload of the failure tests: publishers and subscribers of one
//! pubsub node at every site of a [`TestCluster`], recording into a
//! [`Recorder`] what the history checker ([`crate::history`]) then checks
//! against every site's final archive. Shared by `tests/mesh_failover.rs`
//! (fixed scenarios) and the nemesis (`src/bin/nemesis.rs`, randomised).

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

use crate::cluster::TestCluster;
use crate::history::{
    ArchivedItem, Attempt, Delivery, Outcome, Recorder, Report, Site, check, read_archive,
};
use crate::node::TestNode;

pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NODE: &str = "alerts";
pub const SERVICE: &str = "pubsub.localhost";

/// How long a propose may take before the site answers with an error.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_millis(3_000);

/// Small snapshots, by entries alone, so that they happen within a test
/// however large the state is, and tight timeouts, so that elections are
/// quick on loopback.
pub fn mesh_settings() -> String {
    format!(
        "snapshot_every_entries = 20\n\
         snapshot_log_growth_percent = 0\n\
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
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(3_000 + 2_000);
/// How long a read (archive page, disco) may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster gets to elect a leader or catch up after a restart.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn service() -> BareJid {
    BareJid::new(SERVICE).expect("a valid JID")
}

pub fn client_config(node: &TestNode, user: &str, password: &str, resource: &str) -> ClientConfig {
    let mut config = node.client_config(user, password);
    config.resource = Some(resource.to_owned());
    config
}

pub fn publish_iq(item_id: &str) -> Element {
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
pub async fn publish(client: &mut Client, item_id: &str) -> (Outcome, bool) {
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

/// Publishes `item_id` as `publisher` at `site` and records the attempt
/// with its times; returns whether it was acknowledged and whether the
/// connection is still usable.
pub async fn publish_recorded(
    recorder: &Recorder,
    client: &mut Client,
    publisher: usize,
    site: Site,
    item_id: String,
) -> (bool, bool) {
    let started_ms = recorder.now_ms();
    let (outcome, usable) = publish(client, &item_id).await;
    let acknowledged = outcome == Outcome::Acknowledged;
    recorder.attempt(Attempt {
        publisher,
        site,
        item_id,
        outcome,
        started_ms,
        answered_ms: recorder.now_ms(),
    });
    (acknowledged, usable)
}

/// Users, the node and bob's subscription, created through site 0, and
/// applied at every site (a site answers logins and reads from its own
/// replica, which may trail the commit by a moment).
pub async fn set_up(cluster: &TestCluster) {
    create_users_node_and_subscription(cluster).await;
    let applied = cluster.nodes[0]
        .status()
        .and_then(|s| s["applied_index"].as_u64())
        .expect("site 0's status");
    tokio::task::block_in_place(|| cluster.wait_applied(applied, RECOVERY_TIMEOUT));
}

pub async fn create_users_node_and_subscription(cluster: &TestCluster) {
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
pub struct Workload {
    pub recorder: Recorder,
    /// How long each publisher waits after an answer before its next
    /// publish (zero: publish as fast as the mesh acknowledges).
    pub pause_between_publishes: Duration,
    stop: Arc<AtomicBool>,
    publishers: Vec<JoinHandle<()>>,
    subscribers: Vec<JoinHandle<()>>,
}

impl Workload {
    /// A publisher at `site` publishing one item after the other (each
    /// waits for the previous answer), reconnecting when its connection
    /// breaks, until [`Workload::stop_publishers`].
    pub fn publisher(&mut self, publisher: usize, site: Site, node: &TestNode) {
        let config = client_config(node, "alice", "wonderland", &format!("pub-{publisher}"));
        let recorder = self.recorder.clone();
        let stop = self.stop.clone();
        let pause = self.pause_between_publishes;
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
                    let (_, usable) =
                        publish_recorded(&recorder, &mut client, publisher, site, item_id).await;
                    if !usable {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }

    /// A subscriber session of bob at `site`, recording every item
    /// notification until its connection ends. Returns once the session
    /// receives notifications.
    pub async fn subscriber(&mut self, subscriber: usize, site: Site, node: &TestNode) {
        let config = client_config(node, "bob", "builder", &format!("sub-{subscriber}"));
        let client = subscriber_session(&config).await.expect("bob logs in");
        let recorder = self.recorder.clone();
        self.subscribers.push(tokio::spawn(record_deliveries(
            client, recorder, subscriber, site,
        )));
    }

    /// Subscriber sessions of bob at `site`, one after the other: when one
    /// ends (its node was killed) the next logs in, numbered
    /// `first_session + 1`, `+ 2`… (each session is its own subscriber in
    /// the history: what it is told must be in order). Returns at once.
    pub fn resubscribing(&mut self, first_session: usize, site: Site, node: &TestNode) {
        let config = client_config(node, "bob", "builder", &format!("sub-{first_session}"));
        let recorder = self.recorder.clone();
        self.subscribers.push(tokio::spawn(async move {
            for session in first_session.. {
                match tokio::time::timeout(READ_TIMEOUT, subscriber_session(&config)).await {
                    Ok(Ok(client)) => {
                        record_deliveries(client, recorder.clone(), session, site).await;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }));
    }

    pub fn acknowledged(&self) -> usize {
        self.recorder
            .history()
            .attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Acknowledged)
            .count()
    }

    pub async fn stop_publishers(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for publisher in self.publishers.drain(..) {
            publisher.await.expect("a publisher task ends cleanly");
        }
    }

    pub fn stop_subscribers(&mut self) {
        for subscriber in self.subscribers.drain(..) {
            subscriber.abort();
        }
    }
}

/// Logs in as `config`, sends presence and waits for a round trip: the
/// session receives notifications when this returns.
async fn subscriber_session(config: &ClientConfig) -> anyhow::Result<Client> {
    let mut client = Client::connect(config).await?;
    client.send(&Element::new("presence", ns::CLIENT)).await?;
    let disco = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", SERVICE)
        .with_child(Element::new("query", DISCO_INFO));
    client.iq(disco).await?;
    Ok(client)
}

/// Records every item notification `client` receives until its
/// connection ends.
async fn record_deliveries(mut client: Client, recorder: Recorder, subscriber: usize, site: Site) {
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
}

/// Publishes at `site` until one publish is acknowledged (recording every
/// attempt as publisher `publisher`); returns the time it took.
pub async fn publish_until_acknowledged(
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
        let (acknowledged, usable) =
            publish_recorded(&recorder, active, publisher, site, item_id).await;
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
pub async fn publish_at(
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
pub fn settle(cluster: &TestCluster) {
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
pub async fn archives(cluster: &TestCluster) -> BTreeMap<Site, Vec<ArchivedItem>> {
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
pub async fn audit(cluster: &TestCluster, workload: &Workload, test: &str) -> Report {
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
pub fn followers(cluster: &TestCluster, leader: usize) -> Vec<usize> {
    (0..cluster.nodes.len())
        .filter(|i| *i != leader && cluster.nodes[*i].is_running())
        .collect()
}
