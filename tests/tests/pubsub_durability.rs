//! One node killed with SIGKILL right after acknowledging publishes: after
//! a restart every acknowledged item is there with the same archive id and
//! publication stamp, and subscriptions, node configuration and accounts
//! survive.

use vomesh_broker::client::Client;
use vomesh_broker::xml::Element;
use vomesh_broker::xmpp::ns;
use vomesh_tests::node::TestNode;
use vomesh_tests::pubsub::{
    EVENT_NS, PUBSUB_NS, STANZA_ID_NS, alert, archive_id, archive_page, create_iq, iq, next_event,
    node_config, publish, request, subscribe_iq,
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
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = login(&node, "alice", "wonderland").await;
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
    let mut bob = login(&node, "bob", "builder").await;
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
    // An account created just before the crash.
    node.add_user("carol", "singer");
    let (archived, _) = archive_page(&mut alice, NODE, &[], &[]).await;
    assert_eq!(archived.len(), ITEMS);
    let config = node_config(&mut alice, NODE).await;

    node.kill9();
    drop((alice, bob));
    node.restart();

    let mut alice = login(&node, "alice", "wonderland").await;
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
    let items = request(
        &mut alice,
        iq(
            "get",
            Element::new("pubsub", PUBSUB_NS)
                .with_child(Element::new("items", PUBSUB_NS).with_attr("node", NODE)),
        ),
    )
    .await;
    let retrieved = items
        .child("pubsub", PUBSUB_NS)
        .and_then(|p| p.child("items", PUBSUB_NS))
        .map(|i| i.children().count());
    assert_eq!(retrieved, Some(ITEMS));

    // bob's subscription survived: he is notified of the next item.
    let mut bob = login(&node, "bob", "builder").await;
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
    login(&node, "carol", "singer").await;
}
