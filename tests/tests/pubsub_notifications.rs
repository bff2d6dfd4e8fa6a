//! Who receives a notification on a real node (XEP-0060 §7.1.2, §6.1.7):
//! every available resource of a subscribed bare JID, only the subscribed
//! resource of a full-JID subscription, no resource without presence; and
//! the last published item on subscription and on coming online; the
//! configuration and delete (with redirect) events; `max_items` trimming.

use std::time::Duration;

use vomesh_broker::client::Client;
use vomesh_broker::xml::Element;
use vomesh_broker::xmpp::ns;
use vomesh_tests::node::TestNode;
use vomesh_tests::pubsub::{
    DELAY_NS, EVENT_NS, OWNER_NS, alert, create_iq, ids_of, item_ids, next_event, publish, request,
    subscribe_iq,
};

const NODE: &str = "alerts";

async fn session(node: &TestNode, user: &str, password: &str, resource: &str) -> Client {
    let mut config = node.client_config(user, password);
    config.resource = Some(resource.to_owned());
    Client::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{user}/{resource} logs in: {e}"))
}

async fn available(client: &mut Client) {
    client
        .send(&Element::new("presence", ns::CLIENT))
        .await
        .expect("presence");
    // A round trip orders the presence before what the test does next.
    request(
        client,
        vomesh_tests::pubsub::iq(
            "get",
            Element::new("query", "http://jabber.org/protocol/disco#info"),
        ),
    )
    .await;
}

fn event_item_ids(message: &Element) -> Vec<String> {
    ids_of(
        message
            .child("event", EVENT_NS)
            .and_then(|e| e.child("items", EVENT_NS)),
    )
}

/// Asserts that no pubsub event arrives within a short wait.
async fn assert_no_event(client: &mut Client, who: &str) {
    let waited = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match client.next_stanza().await {
                Ok(stanza) if stanza.child("event", EVENT_NS).is_some() => return stanza,
                Ok(_) => continue,
                Err(e) => panic!("{who}'s session failed: {e}"),
            }
        }
    })
    .await;
    if let Ok(stanza) = waited {
        panic!("{who} got an unexpected event: {}", stanza.to_xml());
    }
}

#[tokio::test]
async fn bare_subscription_reaches_every_available_resource_only() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = session(&node, "alice", "wonderland", "pub").await;
    request(&mut alice, create_iq(NODE, &[])).await;
    let mut desk = session(&node, "bob", "builder", "desk").await;
    let mut laptop = session(&node, "bob", "builder", "laptop").await;
    let mut silent = session(&node, "bob", "builder", "no-presence").await;
    available(&mut desk).await;
    available(&mut laptop).await;
    request(&mut desk, subscribe_iq(NODE, "bob@localhost")).await;

    publish(&mut alice, NODE, Some("grb"), alert("GRB 251125A")).await;
    for (client, who) in [(&mut desk, "desk"), (&mut laptop, "laptop")] {
        let message = next_event(client).await;
        assert_eq!(event_item_ids(&message), ["grb"], "{who}");
        assert!(message.child("delay", DELAY_NS).is_some(), "{who}");
    }
    // RFC 6121 §8.5.2.1: no initial presence, no messages to the bare JID.
    assert_no_event(&mut silent, "the resource without presence").await;
}

#[tokio::test]
async fn full_jid_subscription_reaches_only_that_resource() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("carol", "singer");
    let mut alice = session(&node, "alice", "wonderland", "pub").await;
    request(&mut alice, create_iq(NODE, &[])).await;
    let mut desk = session(&node, "carol", "singer", "desk").await;
    let mut laptop = session(&node, "carol", "singer", "laptop").await;
    available(&mut desk).await;
    available(&mut laptop).await;
    request(&mut desk, subscribe_iq(NODE, "carol@localhost/desk")).await;

    publish(&mut alice, NODE, Some("grb"), alert("GRB 251125A")).await;
    assert_eq!(event_item_ids(&next_event(&mut desk).await), ["grb"]);
    assert_no_event(&mut laptop, "the other resource").await;
}

#[tokio::test]
async fn last_published_item_is_sent_on_subscription() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = session(&node, "alice", "wonderland", "pub").await;
    request(
        &mut alice,
        create_iq(NODE, &[("pubsub#send_last_published_item", "on_sub")]),
    )
    .await;
    publish(&mut alice, NODE, Some("old"), alert("first")).await;
    publish(&mut alice, NODE, Some("latest"), alert("second")).await;
    let mut bob = session(&node, "bob", "builder", "desk").await;
    available(&mut bob).await;
    request(&mut bob, subscribe_iq(NODE, "bob@localhost")).await;
    let message = next_event(&mut bob).await;
    assert_eq!(event_item_ids(&message), ["latest"]);
    assert!(
        message.child("delay", DELAY_NS).is_some(),
        "the item keeps its publication time: {}",
        message.to_xml()
    );
    assert_no_event(&mut bob, "bob").await;
}

#[tokio::test]
async fn last_published_item_is_sent_when_a_subscriber_comes_online() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = session(&node, "alice", "wonderland", "pub").await;
    request(
        &mut alice,
        create_iq(
            NODE,
            &[("pubsub#send_last_published_item", "on_sub_and_presence")],
        ),
    )
    .await;
    let mut bob = session(&node, "bob", "builder", "desk").await;
    request(&mut bob, subscribe_iq(NODE, "bob@localhost")).await;
    bob.close().await.expect("bob goes offline");
    publish(&mut alice, NODE, Some("while-away"), alert("GRB")).await;

    let mut bob = session(&node, "bob", "builder", "laptop").await;
    bob.send(&Element::new("presence", ns::CLIENT))
        .await
        .expect("presence");
    let message = next_event(&mut bob).await;
    assert_eq!(event_item_ids(&message), ["while-away"]);
}

#[tokio::test]
async fn configuration_change_and_delete_with_redirect_are_notified() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    node.add_user("bob", "builder");
    let mut alice = session(&node, "alice", "wonderland", "pub").await;
    request(
        &mut alice,
        create_iq(
            NODE,
            &[("pubsub#notify_config", "1"), ("pubsub#notify_delete", "1")],
        ),
    )
    .await;
    let mut bob = session(&node, "bob", "builder", "desk").await;
    available(&mut bob).await;
    request(&mut bob, subscribe_iq(NODE, "bob@localhost")).await;

    // XEP-0060 §8.2.5.4: subscribers hear of a configuration change.
    let form = vomesh_tests::pubsub::form(
        "http://jabber.org/protocol/pubsub#node_config",
        &[("pubsub#title", "Gamma-ray bursts")],
    );
    request(
        &mut alice,
        vomesh_tests::pubsub::iq(
            "set",
            Element::new("pubsub", OWNER_NS).with_child(
                Element::new("configure", OWNER_NS)
                    .with_attr("node", NODE)
                    .with_child(form),
            ),
        ),
    )
    .await;
    let message = next_event(&mut bob).await;
    let configuration = message
        .child("event", EVENT_NS)
        .and_then(|e| e.child("configuration", EVENT_NS));
    assert_eq!(
        configuration.and_then(|c| c.attr("node")),
        Some(NODE),
        "{}",
        message.to_xml()
    );

    // §8.4.2: deletion with a redirect tells subscribers where to go.
    let redirect = "xmpp:pubsub.localhost?;node=alerts-v2";
    request(
        &mut alice,
        vomesh_tests::pubsub::iq(
            "set",
            Element::new("pubsub", OWNER_NS).with_child(
                Element::new("delete", OWNER_NS)
                    .with_attr("node", NODE)
                    .with_child(Element::new("redirect", OWNER_NS).with_attr("uri", redirect)),
            ),
        ),
    )
    .await;
    let message = next_event(&mut bob).await;
    let delete = message
        .child("event", EVENT_NS)
        .and_then(|e| e.child("delete", EVENT_NS))
        .unwrap_or_else(|| panic!("a delete event: {}", message.to_xml()));
    assert_eq!(delete.attr("node"), Some(NODE));
    assert_eq!(
        delete
            .child("redirect", EVENT_NS)
            .and_then(|r| r.attr("uri")),
        Some(redirect),
        "{}",
        message.to_xml()
    );
}

#[tokio::test]
async fn max_items_keeps_only_the_newest_items() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let mut alice = session(&node, "alice", "wonderland", "pub").await;
    request(&mut alice, create_iq(NODE, &[("pubsub#max_items", "2")])).await;
    for id in ["a", "b", "c"] {
        publish(&mut alice, NODE, Some(id), alert(id)).await;
    }
    let ids = item_ids(&mut alice, NODE).await;
    assert_eq!(ids, ["b", "c"]);
}
