//! A three-site mesh of real processes: an account created at one site logs
//! in at another, and an event published at one site reaches subscribers at
//! every site with the same archive id and timestamp; a bounded archive is
//! cut alike at every site, one that caught up by snapshot included, and
//! entries past the age bound expire at every site with nothing published.

use std::time::Duration;

use vomesh_broker::client::Client;
use vomesh_broker::xml::Element;
use vomesh_broker::xmpp::ns;
use vomesh_tests::cluster::TestCluster;
use vomesh_tests::measure::gauge;
use vomesh_tests::node::NodeOptions;
use vomesh_tests::pubsub::{alert, archive_id, archive_page, create_iq, publish_iq, request};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";

/// Three sites with the `[mesh]` settings `mesh_settings` and the
/// `[pubsub]` section `pubsub_toml`, alice's account, and the leader.
fn three_sites_with(mesh_settings: &str, pubsub_toml: &'static str) -> (TestCluster, usize) {
    let cluster = TestCluster::start_custom(
        3,
        mesh_settings,
        Box::new(move |_| NodeOptions {
            extra_toml: pubsub_toml.to_owned(),
            ..NodeOptions::default()
        }),
    );
    cluster.add_user("alice", "wonderland");
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    (cluster, leader)
}

fn pubsub_iq(kind: &str, child: Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", "pubsub.localhost")
        .with_child(Element::new("pubsub", PUBSUB).with_child(child))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_published_at_one_site_reaches_subscribers_at_every_site() {
    let cluster = TestCluster::start(3);
    cluster.add_user("alice", "wonderland");
    cluster.add_user("bob", "builder");

    // Accounts are replicated: bob logs in at sites 2 and 3 too.
    let mut subscribers = Vec::new();
    for node in &cluster.nodes {
        let mut config = node.client_config("bob", "builder");
        config.resource = Some(format!("site-{}", node.admin.port()));
        let mut bob = Client::connect(&config)
            .await
            .expect("bob logs in at every site");
        bob.send(&Element::new("presence", ns::CLIENT))
            .await
            .expect("presence");
        subscribers.push(bob);
    }
    let mut alice = Client::connect(&cluster.nodes[1].client_config("alice", "wonderland"))
        .await
        .expect("alice logs in at site 2");
    let created = alice
        .iq(pubsub_iq(
            "set",
            Element::new("create", PUBSUB).with_attr("node", "alerts"),
        ))
        .await
        .expect("create answered");
    assert_eq!(created.attr("type"), Some("result"), "{}", created.to_xml());
    let subscribed = subscribers[2]
        .iq(pubsub_iq(
            "set",
            Element::new("subscribe", PUBSUB)
                .with_attr("node", "alerts")
                .with_attr("jid", "bob@localhost"),
        ))
        .await
        .expect("subscribe answered");
    assert_eq!(
        subscribed.attr("type"),
        Some("result"),
        "{}",
        subscribed.to_xml()
    );

    let payload = Element::new("alert", "urn:example:alert").with_text("GRB 251125A");
    let published = alice
        .iq(pubsub_iq(
            "set",
            Element::new("publish", PUBSUB)
                .with_attr("node", "alerts")
                .with_child(
                    Element::new("item", PUBSUB)
                        .with_attr("id", "grb")
                        .with_child(payload.clone()),
                ),
        ))
        .await
        .expect("publish answered");
    assert_eq!(
        published.attr("type"),
        Some("result"),
        "{}",
        published.to_xml()
    );

    let mut seen = Vec::new();
    for bob in &mut subscribers {
        let message = tokio::time::timeout(Duration::from_secs(10), bob.next_stanza())
            .await
            .expect("a notification in time")
            .expect("a stanza");
        let item = message
            .child("event", EVENT)
            .and_then(|e| e.child("items", EVENT))
            .and_then(|i| i.child("item", EVENT))
            .unwrap_or_else(|| panic!("an item notification: {}", message.to_xml()));
        assert_eq!(
            item.children().next().map(Element::to_xml),
            Some(payload.to_xml())
        );
        let stamp = message
            .child("delay", "urn:xmpp:delay")
            .and_then(|d| d.attr("stamp"))
            .map(str::to_owned);
        let archive_id = message
            .child("stanza-id", "urn:xmpp:sid:0")
            .and_then(|s| s.attr("id"))
            .map(str::to_owned);
        seen.push((
            stamp.expect("a delay stamp"),
            archive_id.expect("an archive id"),
        ));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every site reports the same publication: {seen:?}"
    );
}

#[test]
fn status_shows_every_member_as_it_sees_itself() {
    let cluster = TestCluster::start(3);
    let (status, table, stderr) = cluster.nodes[1].cli(&["status"]);
    assert!(status.success(), "vomesh status failed: {stderr}");
    let rows: Vec<&str> = table.lines().skip(1).take(3).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for row in &rows {
        assert!(!row.contains("unreachable"), "{table}");
    }
    assert_eq!(
        rows.iter().filter(|r| r.contains(" leader ")).count(),
        1,
        "{table}"
    );
    let (_, json, _) = cluster.nodes[2].cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("status --json is JSON");
    let members = json["members"].as_array().expect("members");
    let terms: Vec<_> = members.iter().map(|m| m["term"].as_u64()).collect();
    assert!(
        terms.iter().all(|t| t.is_some() && *t == terms[0]),
        "{json}"
    );
    assert_eq!(json["ready"], true, "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_added_with_cluster_add_catches_up_and_serves_the_history() {
    use vomesh_tests::pubsub::{alert, archive_page, create_iq, publish, request};

    let mut cluster = TestCluster::start(3);
    cluster.add_user("alice", "wonderland");
    let mut alice = Client::connect(&cluster.nodes[0].client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(&mut alice, create_iq("history", &[])).await;
    let before = publish(&mut alice, "history", Some("before-join"), alert("before")).await;

    let joiner = cluster.prepare_joiner();
    cluster.nodes[joiner].restart();
    let address = cluster.mesh_address(joiner);
    let id = (joiner + 1).to_string();
    let (status, _, stderr) = cluster.nodes[1].cli(&["cluster", "add", &id, &address]);
    assert!(status.success(), "vomesh cluster add failed: {stderr}");
    cluster.wait_for_leader(Duration::from_secs(30));
    let (_, json, _) = cluster.nodes[joiner].cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("status --json is JSON");
    let voters = json["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["voter"] == true)
        .count();
    assert_eq!(voters, 4, "{json}");

    // The new site received the history (and the account) it missed.
    publish(&mut alice, "history", Some("after-join"), alert("after")).await;
    let commit = cluster.nodes[0]
        .status()
        .and_then(|s| s["commit_index"].as_u64())
        .expect("a commit index");
    cluster.wait_applied(commit, Duration::from_secs(30));
    let mut at_new_site =
        Client::connect(&cluster.nodes[joiner].client_config("alice", "wonderland"))
            .await
            .expect("alice logs in at the new site");
    let (items, _) = archive_page(&mut at_new_site, "history", &[], &[("max", "10")]).await;
    let ids: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
    assert_eq!(ids, [before.as_str(), "after-join"]);
}

/// Publishes a session sends at once reach the leader's Raft core together
/// (the mesh's submitter hands them over in batches), each is still
/// answered as an entry of its own, and they are archived in the order
/// sent.
#[tokio::test(flavor = "multi_thread")]
async fn publishes_sent_at_once_are_appended_in_batches_in_the_order_sent() {
    publish_at_once(Site::Leader).await;
}

/// The same at a follower's site: its forwarded publishes reach the
/// leader's core in batches too, and in the order the session sent them.
#[tokio::test(flavor = "multi_thread")]
async fn publishes_sent_at_once_at_a_follower_are_appended_in_the_order_sent() {
    publish_at_once(Site::Follower).await;
}

enum Site {
    Leader,
    Follower,
}

/// Sends 64 publishes in one write from a session at `site`, and checks
/// that each is answered, that the leader appended them in few batches,
/// and that the archive holds them in the order sent.
async fn publish_at_once(site: Site) {
    const PUBLISHES: usize = 64;
    let cluster = TestCluster::start(3);
    cluster.add_user("alice", "wonderland");
    let leader_index = cluster.wait_for_leader(Duration::from_secs(30));
    let leader = &cluster.nodes[leader_index];
    let session_site = match site {
        Site::Leader => leader,
        Site::Follower => &cluster.nodes[(leader_index + 1) % cluster.nodes.len()],
    };
    let mut alice = Client::connect(&session_site.client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(&mut alice, create_iq("burst", &[])).await;

    let written = |metrics: &str| {
        let entries = gauge(metrics, "vomesh_raft_write_batch_entries_sum").unwrap_or(0.0);
        let batches = gauge(metrics, "vomesh_raft_write_batch_entries_count").unwrap_or(0.0);
        (entries, batches)
    };
    let (entries_before, batches_before) = written(&leader.metrics());
    let publishes: Vec<Element> = (0..PUBLISHES)
        .map(|i| {
            publish_iq("burst", Some(&format!("item-{i}")), alert(&format!("{i}")))
                .with_attr("id", format!("p{i}"))
        })
        .collect();
    alice.send_all(&publishes).await.expect("publishes sent");
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < PUBLISHES {
        let reply = tokio::time::timeout(Duration::from_secs(10), alice.next_stanza())
            .await
            .expect("every publish answered in time")
            .expect("a stanza");
        assert_eq!(reply.attr("type"), Some("result"), "{}", reply.to_xml());
        let id = reply.attr("id").expect("an IQ id").to_owned();
        assert!(answered.insert(id.clone()), "{id} answered twice");
    }

    let (entries_after, batches_after) = written(&leader.metrics());
    let entries = entries_after - entries_before;
    let batches = batches_after - batches_before;
    assert!(entries >= PUBLISHES as f64, "{entries} entries written");
    // Sent in one write, they reach the core in one batch or a few (the
    // build before the submitter wrote them in 32 to 41).
    assert!(
        batches <= entries / 16.0,
        "{entries} entries written in {batches} batches"
    );
    let (archived, _) = archive_page(&mut alice, "burst", &[], &[("max", "100")]).await;
    let ids: std::collections::BTreeSet<u64> = archived.iter().map(archive_id).collect();
    assert_eq!(ids.len(), PUBLISHES, "every publish archived at its own id");
    // RFC 6120 §10.1: one stream's stanzas are processed in the order
    // sent, so its publishes take log indexes (archive ids) in that order.
    let order: Vec<&str> = archived.iter().map(|i| i.item_id.as_str()).collect();
    let sent: Vec<String> = (0..PUBLISHES).map(|i| format!("item-{i}")).collect();
    assert_eq!(order, sent, "archived in the order published");
}

/// Every site cuts a bounded archive alike, a site that caught up by
/// snapshot included: the same entries kept, and the same refusal, naming
/// the same oldest entry, to resume past those dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_bounded_archive_is_cut_alike_at_every_site_and_through_a_snapshot() {
    use vomesh_tests::pubsub::assert_resume_refused;

    let (mut cluster, leader) = three_sites_with(
        "snapshot_every_entries = 5\n\
         snapshot_log_growth_percent = 0\n\
         log_entries_kept_after_snapshot = 2\n",
        "[pubsub]\nmax_archive_entries_per_node = 3\n",
    );
    let behind = (leader + 1) % 3;
    let behind_last = cluster.nodes[behind]
        .status()
        .and_then(|s| s["last_log_index"].as_u64())
        .expect("the follower's status");
    tokio::task::block_in_place(|| cluster.nodes[behind].kill9());

    let mut alice = Client::connect(&cluster.nodes[leader].client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(&mut alice, create_iq("cut", &[])).await;
    for n in 1..=12 {
        let item = Element::new("item", PUBSUB)
            .with_attr("id", format!("e{n}"))
            .with_child(alert(&format!("event {n}")));
        let publish = Element::new("publish", PUBSUB)
            .with_attr("node", "cut")
            .with_child(item);
        request(&mut alice, pubsub_iq("set", publish)).await;
    }
    // Snapshots are asked for every 500 ms: wait until the leader's log no
    // longer holds what the stopped site lacks.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.nodes[leader]
        .status()
        .and_then(|s| s["snapshot_index"].as_u64())
        .is_none_or(|snapshot| snapshot <= behind_last + 2 + 1)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a snapshot past the stopped site"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| cluster.nodes[behind].restart());
    let commit = cluster.nodes[leader]
        .status()
        .and_then(|s| s["commit_index"].as_u64())
        .expect("a commit index");
    cluster.wait_applied(commit, Duration::from_secs(30));
    assert!(
        cluster.nodes[behind]
            .log()
            .contains("mesh: snapshot installed from the leader"),
        "the restarted site caught up by snapshot"
    );

    let mut answers = Vec::new();
    for site in &cluster.nodes {
        let mut at_site = Client::connect(&site.client_config("alice", "wonderland"))
            .await
            .expect("alice logs in");
        let (items, _) = archive_page(&mut at_site, "cut", &[], &[]).await;
        let kept: Vec<(String, u64)> = items
            .iter()
            .map(|i| (i.item_id.clone(), archive_id(i)))
            .collect();
        assert_resume_refused(&mut at_site, "cut", 1, kept[0].1).await;
        answers.push(kept);
    }
    let ids: Vec<&str> = answers[0].iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["e10", "e11", "e12"]);
    assert!(
        answers.iter().all(|kept| *kept == answers[0]),
        "{answers:?}"
    );
}

/// The leader's expiry command drops entries past `max_archive_age_seconds`
/// at every site, where nothing more is published: each site counts the
/// same drops and keeps the current items.
#[tokio::test(flavor = "multi_thread")]
async fn entries_past_the_age_bound_expire_at_every_site_with_no_publish() {
    use vomesh_tests::pubsub::{item_ids, publish};

    let (cluster, leader) = three_sites_with("", "[pubsub]\nmax_archive_age_seconds = 1\n");
    let publisher = (leader + 1) % 3;
    let mut alice = Client::connect(&cluster.nodes[publisher].client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(&mut alice, create_iq("brief", &[])).await;
    for id in ["e1", "e2"] {
        publish(&mut alice, "brief", Some(id), alert(id)).await;
    }

    // The leader checks once a second; a few more allow for a loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for site in &cluster.nodes {
        loop {
            let metrics = site.metrics();
            let dropped = gauge(
                &metrics,
                "vomesh_pubsub_archive_dropped_total{limit=\"age\"}",
            );
            if dropped == Some(2.0) {
                assert_eq!(gauge(&metrics, "vomesh_pubsub_archive_entries"), Some(0.0));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "entries still archived at a site: {dropped:?} dropped for age"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (archived, _) = archive_page(&mut alice, "brief", &[], &[]).await;
    assert!(archived.is_empty(), "{archived:?}");
    assert_eq!(item_ids(&mut alice, "brief").await, ["e1", "e2"]);
}
