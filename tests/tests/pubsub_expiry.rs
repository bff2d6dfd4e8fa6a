//! `pubsub#item_expire` on a real node: an item older than its node's
//! lifetime disappears from retrieval without anyone retracting it, and a
//! younger one stays.

use std::time::{Duration, Instant};

use vomesh_broker::client::Client;
use vomesh_broker::xml::Element;
use vomesh_tests::node::TestNode;
use vomesh_tests::pubsub::{PUBSUB_NS, alert, create_iq, iq, publish, request};

async fn item_ids(client: &mut Client, node: &str) -> Vec<String> {
    let reply = request(
        client,
        iq(
            "get",
            Element::new("pubsub", PUBSUB_NS)
                .with_child(Element::new("items", PUBSUB_NS).with_attr("node", node)),
        ),
    )
    .await;
    reply
        .child("pubsub", PUBSUB_NS)
        .and_then(|p| p.child("items", PUBSUB_NS))
        .map(|items| {
            items
                .children()
                .filter_map(|i| i.attr("id").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn items_expire_after_the_node_item_expire() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let mut alice = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(
        &mut alice,
        create_iq("short", &[("pubsub#item_expire", "1")]),
    )
    .await;
    request(
        &mut alice,
        create_iq("long", &[("pubsub#item_expire", "3600")]),
    )
    .await;
    publish(&mut alice, "short", Some("brief"), alert("fades")).await;
    publish(&mut alice, "long", Some("lasting"), alert("stays")).await;
    assert_eq!(item_ids(&mut alice, "short").await, ["brief"]);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !item_ids(&mut alice, "short").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the item outlived pubsub#item_expire = 1 s by far"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(item_ids(&mut alice, "long").await, ["lasting"]);
}
