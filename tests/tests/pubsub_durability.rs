//! One node killed with SIGKILL right after acknowledging publishes: after
//! a restart every acknowledged item is there with the same archive id and
//! publication stamp, and subscriptions, node configuration and accounts
//! survive, whether the state comes back from the log alone or from a
//! snapshot plus the log after it. A VOEvent republished after the restart
//! is still recognised as already published.

use std::time::{Duration, Instant};

use vomesh_broker::client::Client;
use vomesh_broker::xml::Element;
use vomesh_broker::xmpp::ns;
use vomesh_tests::cluster::TestCluster;
use vomesh_tests::node::TestNode;
use vomesh_tests::pubsub::{
    EVENT_NS, PUBSUB_NS, SAMPLES, STANZA_ID_NS, VOEVENT_NS, alert, archive_id, archive_page,
    canonically_equal, create_iq, gaia_variant, iq, item_ids, next_event, node_config, publish,
    read_xml, request, sample, subscribe_iq,
};

const NODE: &str = "alerts";
const ITEMS: usize = 20;

async fn login(node: &TestNode, user: &str, password: &str) -> Client {
    Client::connect(&node.client_config(user, password))
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"))
}

#[tokio::test]
async fn acknowledged_state_survives_kill_9() {
    let mut node = TestNode::start();
    kill_9_loses_nothing_acknowledged(&mut node, false).await;
}

#[tokio::test]
async fn acknowledged_state_survives_kill_9_after_snapshots() {
    // A one-member mesh snapshotting every 5 entries: the restart loads a
    // snapshot and replays the entries after it.
    let mut cluster = TestCluster::start_with(
        1,
        "snapshot_every_entries = 5\nlog_entries_kept_after_snapshot = 2",
    );
    cluster.wait_for_leader(Duration::from_secs(10));
    kill_9_loses_nothing_acknowledged(&mut cluster.nodes[0], true).await;
}

/// Waits until the node's `/api/status` satisfies `condition`.
fn wait_for(node: &TestNode, what: &str, condition: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !node.status().is_some_and(|status| condition(&status)) {
        assert!(Instant::now() < deadline, "no {what}: {:?}", node.status());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the restarted node accepts writes again.
fn wait_ready(node: &TestNode) {
    wait_for(node, "readiness", |status| status["ready"] == true);
}

/// With `snapshotted`, waits before the crash until the node reports a
/// snapshot, so the restart really starts from one.
async fn kill_9_loses_nothing_acknowledged(node: &mut TestNode, snapshotted: bool) {
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = login(node, "alice", "wonderland").await;
    request(
        &mut alice,
        create_iq(
            NODE,
            &[
                ("pubsub#max_items", "50"),
                ("pubsub#notify_retract", "0"),
                ("pubsub#title", "GRB alerts"),
            ],
        ),
    )
    .await;
    let mut bob = login(node, "bob", "builder").await;
    request(&mut bob, subscribe_iq(NODE, "bob@localhost")).await;
    for n in 1..=ITEMS {
        publish(
            &mut alice,
            NODE,
            Some(&format!("e{n}")),
            alert(&format!("GRB {n}")),
        )
        .await;
    }
    // An acknowledged retraction is durable too.
    request(
        &mut alice,
        iq(
            "set",
            Element::new("pubsub", PUBSUB_NS).with_child(
                Element::new("retract", PUBSUB_NS)
                    .with_attr("node", NODE)
                    .with_child(Element::new("item", PUBSUB_NS).with_attr("id", "e1")),
            ),
        ),
    )
    .await;
    // An account created just before the crash.
    node.add_user("carol", "singer");
    let (archived, _) = archive_page(&mut alice, NODE, &[], &[]).await;
    assert_eq!(archived.len(), ITEMS);
    let config = node_config(&mut alice, NODE).await;

    if snapshotted {
        wait_for(node, "a snapshot", |status| {
            status["snapshot_index"]
                .as_u64()
                .is_some_and(|index| index > 0)
        });
    }
    node.kill9();
    drop((alice, bob));
    node.restart();
    wait_ready(node);

    let mut alice = login(node, "alice", "wonderland").await;
    let (after, _) = archive_page(&mut alice, NODE, &[], &[]).await;
    assert_eq!(
        after, archived,
        "the same items, archive ids, stamps and payloads"
    );
    assert_eq!(node_config(&mut alice, NODE).await, config);
    assert!(
        config.contains(&("pubsub#max_items".to_owned(), "50".to_owned())),
        "{config:?}"
    );
    let retrieved = item_ids(&mut alice, NODE).await;
    let expected: Vec<String> = (2..=ITEMS).map(|n| format!("e{n}")).collect();
    assert_eq!(retrieved, expected, "every item but the retracted one");

    // bob's subscription survived: he is notified of the next item.
    let mut bob = login(node, "bob", "builder").await;
    bob.send(&Element::new("presence", ns::CLIENT))
        .await
        .expect("presence");
    let subscriptions = request(
        &mut bob,
        iq(
            "get",
            Element::new("pubsub", PUBSUB_NS)
                .with_child(Element::new("subscriptions", PUBSUB_NS).with_attr("node", NODE)),
        ),
    )
    .await;
    let state = subscriptions
        .child("pubsub", PUBSUB_NS)
        .and_then(|p| p.child("subscriptions", PUBSUB_NS))
        .and_then(|s| s.child("subscription", PUBSUB_NS))
        .and_then(|s| s.attr("subscription"))
        .map(str::to_owned);
    assert_eq!(
        state.as_deref(),
        Some("subscribed"),
        "{}",
        subscriptions.to_xml()
    );
    publish(&mut alice, NODE, Some("after-restart"), alert("GRB new")).await;
    let message = next_event(&mut bob).await;
    let item_id = message
        .child("event", EVENT_NS)
        .and_then(|e| e.child("items", EVENT_NS))
        .and_then(|i| i.child("item", EVENT_NS))
        .and_then(|i| i.attr("id"));
    assert_eq!(item_id, Some("after-restart"), "{}", message.to_xml());
    let new_id: u64 = message
        .child("stanza-id", STANZA_ID_NS)
        .and_then(|s| s.attr("id"))
        .and_then(|id| id.parse().ok())
        .expect("a numeric stanza-id");
    assert!(
        new_id > archive_id(archived.last().expect("items")),
        "archive ids keep increasing across the restart"
    );

    // carol's account, created just before the crash, survived.
    login(node, "carol", "singer").await;
}

#[tokio::test]
async fn republished_voevent_is_still_idempotent_after_kill_9() {
    let mut node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = login(&node, "alice", "wonderland").await;
    request(
        &mut alice,
        create_iq("gaia", &[("pubsub#type", VOEVENT_NS)]),
    )
    .await;
    let gaia = read_xml(&sample(SAMPLES[0]));
    let ivorn = gaia.attr("ivorn").expect("an IVORN").to_owned();
    assert_eq!(publish(&mut alice, "gaia", None, gaia.clone()).await, ivorn);
    let (before, _) = archive_page(&mut alice, "gaia", &[], &[]).await;
    assert_eq!(before.len(), 1);

    node.kill9();
    drop(alice);
    node.restart();
    wait_ready(&node);

    let mut bob = login(&node, "bob", "builder").await;
    bob.send(&Element::new("presence", ns::CLIENT))
        .await
        .expect("presence");
    request(&mut bob, subscribe_iq("gaia", "bob@localhost")).await;
    let mut alice = login(&node, "alice", "wonderland").await;
    // The same bytes again: the same answer, no new entry, no notification.
    assert_eq!(publish(&mut alice, "gaia", None, gaia.clone()).await, ivorn);
    let (after, _) = archive_page(&mut alice, "gaia", &[], &[]).await;
    assert_eq!(after, before);
    // Different content under the IVORN is a new version (issue 3 §4),
    // and the first notification bob gets.
    let revised = read_xml_text(&gaia_variant("Gaia16aac").replace("17.32", "17.10"));
    assert_eq!(
        publish(&mut alice, "gaia", None, revised.clone()).await,
        ivorn
    );
    let message = next_event(&mut bob).await;
    let payload = message
        .child("event", EVENT_NS)
        .and_then(|e| e.child("items", EVENT_NS))
        .and_then(|i| i.child("item", EVENT_NS))
        .and_then(|i| i.children().next())
        .unwrap_or_else(|| panic!("an item with a payload: {}", message.to_xml()));
    assert!(canonically_equal(payload, &revised), "{}", payload.to_xml());
    let (versions, _) = archive_page(&mut alice, "gaia", &[], &[]).await;
    assert_eq!(
        versions.len(),
        2,
        "the new version is archived: {versions:?}"
    );
    assert_eq!(versions[0], before[0]);
    assert!(archive_id(&versions[1]) > archive_id(&before[0]));
}

fn read_xml_text(text: &str) -> Element {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("event.xml");
    std::fs::write(&path, text).expect("writing");
    read_xml(&path)
}
