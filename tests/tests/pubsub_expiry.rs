//! `pubsub#item_expire` on a real node: an item older than its node's
//! lifetime disappears from retrieval without anyone retracting it, and a
//! younger one stays.

use std::time::{Duration, Instant};

use vomesh_broker::client::Client;
use vomesh_tests::node::TestNode;
use vomesh_tests::pubsub::{alert, create_iq, item_ids, publish, request};

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
