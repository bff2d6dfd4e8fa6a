//! `pubsub#item_expire`: the leader proposes the expiry, so every site
//! removes the same items at the same log position.

use std::time::{Duration, Instant};

use vomesh_broker::client::Client;
use vomesh_broker::xml::{Element, ParserLimits, parse_document};
use vomesh_tests::node::TestNode;

fn iq(xml: &str) -> Element {
    let limits = ParserLimits {
        stanza_bytes_max: 1 << 20,
        depth_max: 32,
        attributes_max: 32,
    };
    parse_document(xml.as_bytes(), limits).expect("a well-formed IQ")
}

#[tokio::test(flavor = "multi_thread")]
async fn items_expire_after_item_expire_seconds() {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let mut alice = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("login");
    let created = alice
        .iq(iq("<iq xmlns='jabber:client' type='set' to='pubsub.localhost'>\
                <pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='flash'/><configure>\
                <x xmlns='jabber:x:data' type='submit'>\
                <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
                <field var='pubsub#item_expire'><value>1</value></field>\
                </x></configure></pubsub></iq>"))
        .await
        .expect("create answered");
    assert_eq!(created.attr("type"), Some("result"), "{}", created.to_xml());
    let published = alice
        .iq(iq(
            "<iq xmlns='jabber:client' type='set' to='pubsub.localhost'>\
                <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='flash'>\
                <item id='a'><flare xmlns='urn:example'/></item></publish></pubsub></iq>",
        ))
        .await
        .expect("publish answered");
    assert_eq!(
        published.attr("type"),
        Some("result"),
        "{}",
        published.to_xml()
    );

    let items = "<iq xmlns='jabber:client' type='get' to='pubsub.localhost'>\
                 <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='flash'/></pubsub></iq>";
    let before = alice.iq(iq(items)).await.expect("items answered");
    assert!(
        before.to_xml().contains("<item id=\"a\""),
        "{}",
        before.to_xml()
    );

    // One second of lifetime, checked once a second by the leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = alice.iq(iq(items)).await.expect("items answered");
        if !after.to_xml().contains("<item id=\"a\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the item did not expire: {}",
            after.to_xml()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
