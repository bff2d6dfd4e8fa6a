//! XEP-0248 collection nodes: nodes grouped under collections, and
//! subscriptions to a collection that deliver the items of its leaves.

use super::*;

const ITEMS_NS: &str = "http://jabber.org/protocol/disco#items";

/// `voevent` (a collection) holding leaves `voevent/a` and `voevent/b`.
fn tree(h: &mut Harness) {
    h.create_with(ALICE, "voevent", &[("pubsub#node_type", "collection")]);
    for leaf in ["voevent/a", "voevent/b"] {
        h.create_with(ALICE, leaf, &[("pubsub#collection", "voevent")]);
    }
}

#[test]
fn collection_subscribers_get_the_items_of_its_leaves_with_a_collection_header() {
    let mut h = Harness::new();
    tree(&mut h);
    h.subscribe(BOB, "voevent").ok();
    h.subscribe(CAROL, "voevent/a").ok();
    let answer = h.publish(ALICE, "voevent/a", Some("i"), ENTRY);
    let sent = answer.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0, ["carol@localhost"]);
    assert_eq!(sent[1].0, ["bob@localhost"]);
    assert_eq!(
        sent[1].1,
        format!(
            "{}<headers xmlns=\"http://jabber.org/protocol/shim\"><header name=\"Collection\">voevent</header></headers>",
            sent[0].1
        )
    );
    assert!(sent[0].1.contains("<items node=\"voevent/a\">"));
}

#[test]
fn a_jid_subscribed_to_leaf_and_collection_is_told_once() {
    let mut h = Harness::new();
    tree(&mut h);
    h.subscribe(BOB, "voevent").ok();
    h.subscribe(BOB, "voevent/b").ok();
    assert_eq!(
        h.publish(ALICE, "voevent/b", Some("i"), ENTRY).recipients(),
        ["bob@localhost"]
    );
}

#[test]
fn nested_collections_deliver_through_every_level() {
    let mut h = Harness::new();
    h.create_with(ALICE, "all", &[("pubsub#node_type", "collection")]);
    h.create_with(
        ALICE,
        "mid",
        &[
            ("pubsub#node_type", "collection"),
            ("pubsub#collection", "all"),
        ],
    );
    h.create_with(ALICE, "leaf", &[("pubsub#collection", "mid")]);
    h.subscribe(BOB, "all").ok();
    let answer = h.publish(ALICE, "leaf", Some("i"), ENTRY);
    assert_eq!(answer.recipients(), ["bob@localhost"]);
    assert!(
        answer.sent()[0]
            .1
            .ends_with("<header name=\"Collection\">all</header></headers>")
    );
}

#[test]
fn closed_leaves_are_not_delivered_through_a_collection_to_outsiders() {
    let mut h = Harness::new();
    tree(&mut h);
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='voevent/a'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#access_model", "whitelist")])
        ),
    )
    .ok();
    h.subscribe(BOB, "voevent").ok();
    h.subscribe(CAROL, "voevent").ok();
    h.set_affiliation(ALICE, "voevent/a", "carol@localhost", "member");
    assert_eq!(
        h.publish(ALICE, "voevent/a", Some("i"), ENTRY).recipients(),
        ["carol@localhost"]
    );
}

#[test]
fn retractions_reach_collection_subscribers_too() {
    let mut h = Harness::new();
    tree(&mut h);
    h.publish(ALICE, "voevent/a", Some("i"), ENTRY).ok();
    h.subscribe(BOB, "voevent").ok();
    let answer = h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{PS}'><retract node='voevent/a'><item id='i'/></retract></pubsub>"
        ),
    );
    assert_eq!(answer.recipients(), ["bob@localhost"]);
}

#[test]
fn publishing_to_a_collection_is_unsupported() {
    let mut h = Harness::new();
    tree(&mut h);
    let answer = h.publish(ALICE, "voevent", Some("i"), ENTRY);
    answer.assert_error(Condition::FeatureNotImplemented, Some("unsupported"));
    assert_eq!(
        answer.error().app.as_ref().and_then(|a| a.attr("feature")),
        Some("publish")
    );
}

#[test]
fn retrieving_items_of_a_collection_is_unsupported() {
    let mut h = Harness::new();
    tree(&mut h);
    h.items(BOB, "voevent")
        .assert_error(Condition::FeatureNotImplemented, Some("unsupported"));
}

#[test]
fn disco_lists_top_level_nodes_and_collection_children() {
    let mut h = Harness::new();
    tree(&mut h);
    h.create(ALICE, "other");
    let top = h.get(BOB, &format!("<query xmlns='{ITEMS_NS}'/>"));
    assert_eq!(
        top.ok_xml(),
        format!(
            "<query xmlns=\"{ITEMS_NS}\"><item jid=\"pubsub.localhost\" node=\"other\"/><item jid=\"pubsub.localhost\" node=\"voevent\"/></query>"
        )
    );
    let children = h.get(BOB, &format!("<query xmlns='{ITEMS_NS}' node='voevent'/>"));
    assert_eq!(
        children.ok_xml(),
        format!(
            "<query xmlns=\"{ITEMS_NS}\" node=\"voevent\"><item jid=\"pubsub.localhost\" node=\"voevent/a\"/><item jid=\"pubsub.localhost\" node=\"voevent/b\"/></query>"
        )
    );
    let info = h.get(
        BOB,
        "<query xmlns='http://jabber.org/protocol/disco#info' node='voevent'/>",
    );
    assert!(
        info.ok_xml()
            .contains("<identity category=\"pubsub\" type=\"collection\"/>")
    );
}

#[test]
fn a_missing_or_leaf_parent_is_refused() {
    let mut h = Harness::new();
    h.create(ALICE, "leaf");
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{PS}'><create node='x'/><configure>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#collection", "nope")])
        ),
    )
    .assert_error(Condition::ItemNotFound, None);
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{PS}'><create node='x'/><configure>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#collection", "leaf")])
        ),
    )
    .assert_error(Condition::NotAcceptable, None);
}

#[test]
fn a_collection_may_not_contain_itself() {
    let mut h = Harness::new();
    h.create_with(ALICE, "a", &[("pubsub#node_type", "collection")]);
    h.create_with(
        ALICE,
        "b",
        &[
            ("pubsub#node_type", "collection"),
            ("pubsub#collection", "a"),
        ],
    );
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='a'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#collection", "b")])
        ),
    )
    .assert_error(Condition::NotAcceptable, None);
}

#[test]
fn node_type_is_fixed_at_creation() {
    let mut h = Harness::new();
    h.create(ALICE, "leaf");
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='leaf'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#node_type", "collection")])
        ),
    )
    .assert_error(Condition::NotAcceptable, None);
}

#[test]
fn deleting_a_collection_keeps_its_nodes_outside_it() {
    let mut h = Harness::new();
    tree(&mut h);
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><delete node='voevent'/></pubsub>"),
    )
    .ok();
    assert!(
        h.service
            .node("voevent/a")
            .unwrap()
            .config
            .collections
            .is_empty()
    );
    let top = h.get(BOB, &format!("<query xmlns='{ITEMS_NS}'/>")).ok_xml();
    assert!(
        top.contains("node=\"voevent/a\"") && top.contains("node=\"voevent/b\""),
        "{top}"
    );
}
