//! XEP-0060 §5: entity use cases — discovery, own subscriptions and
//! affiliations — and requests the service does not serve.

use super::*;

const INFO: &str = "http://jabber.org/protocol/disco#info";
const ITEMS: &str = "http://jabber.org/protocol/disco#items";

fn features(query: &Element) -> Vec<String> {
    query
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var").map(str::to_owned))
        .collect()
}

#[test]
fn service_disco_info_names_a_pubsub_service_and_its_features() {
    let mut h = Harness::new();
    let answer = h.get(BOB, &format!("<query xmlns='{INFO}'/>"));
    let query = answer.ok().unwrap();
    let identity = query.child("identity", INFO).unwrap();
    assert_eq!(
        (identity.attr("category"), identity.attr("type")),
        (Some("pubsub"), Some("service"))
    );
    let features = features(query);
    for wanted in [
        PS,
        "urn:xmpp:mam:2",
        "http://jabber.org/protocol/rsm",
        "http://jabber.org/protocol/pubsub#publish-options",
        "http://jabber.org/protocol/pubsub#access-authorize",
        "http://jabber.org/protocol/pubsub#instant-nodes",
        "http://jabber.org/protocol/pubsub#multi-subscribe",
    ] {
        assert!(features.iter().any(|f| f == wanted), "missing {wanted}");
    }
}

#[test]
fn node_disco_info_is_a_leaf_with_meta_data() {
    let mut h = Harness::new();
    h.create_with(ALICE, "alerts", &[("pubsub#title", "Alerts")]);
    let answer = h.get(BOB, &format!("<query xmlns='{INFO}' node='alerts'/>"));
    let query = answer.ok().unwrap();
    assert_eq!(query.attr("node"), Some("alerts"));
    let identity = query.child("identity", INFO).unwrap();
    assert_eq!(identity.attr("type"), Some("leaf"));
    let xml = query.to_xml();
    assert!(
        xml.contains("http://jabber.org/protocol/pubsub#meta-data"),
        "{xml}"
    );
    assert!(
        xml.contains("<field var=\"pubsub#title\" type=\"text-single\"><value>Alerts</value>"),
        "{xml}"
    );
    assert!(
        xml.contains(
            "<field var=\"pubsub#owner\" type=\"jid-multi\"><value>alice@localhost</value>"
        ),
        "{xml}"
    );
}

#[test]
fn disco_info_of_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.get(BOB, &format!("<query xmlns='{INFO}' node='nope'/>"))
        .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn service_disco_items_lists_nodes_in_order() {
    let mut h = Harness::new();
    h.create(ALICE, "b");
    h.create_with(ALICE, "a", &[("pubsub#title", "First")]);
    let answer = h.get(BOB, &format!("<query xmlns='{ITEMS}'/>"));
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<query xmlns=\"{ITEMS}\"><item jid=\"pubsub.localhost\" node=\"a\" name=\"First\"/><item jid=\"pubsub.localhost\" node=\"b\"/></query>"
        )
    );
}

#[test]
fn service_disco_items_pages_with_rsm() {
    let mut h = Harness::new();
    for node in ["a", "b", "c"] {
        h.create(ALICE, node);
    }
    let answer = h.get(
        BOB,
        &format!("<query xmlns='{ITEMS}'><set xmlns='http://jabber.org/protocol/rsm'><max>1</max><after>a</after></set></query>"),
    );
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<query xmlns=\"{ITEMS}\"><item jid=\"pubsub.localhost\" node=\"b\"/><set xmlns=\"http://jabber.org/protocol/rsm\"><first index=\"1\">b</first><last>b</last><count>3</count></set></query>"
        )
    );
}

#[test]
fn node_disco_items_names_item_ids() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.publish(ALICE, "n", Some("one"), ENTRY).ok();
    h.publish(ALICE, "n", Some("two"), ENTRY).ok();
    let answer = h.get(BOB, &format!("<query xmlns='{ITEMS}' node='n'/>"));
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<query xmlns=\"{ITEMS}\" node=\"n\"><item jid=\"pubsub.localhost\" name=\"one\"/><item jid=\"pubsub.localhost\" name=\"two\"/></query>"
        )
    );
}

#[test]
fn node_disco_items_of_a_whitelist_node_is_closed_to_outsiders() {
    let mut h = Harness::new();
    h.create_with(ALICE, "w", &[("pubsub#access_model", "whitelist")]);
    h.get(BOB, &format!("<query xmlns='{ITEMS}' node='w'/>"))
        .assert_error(Condition::NotAllowed, Some("closed-node"));
}

#[test]
fn own_subscriptions_list_every_node() {
    let mut h = Harness::new();
    h.create(ALICE, "a");
    h.create(ALICE, "b");
    h.subscribe(BOB, "a").ok();
    h.subscribe_jid(BOB, BOB, "b").ok();
    let answer = h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><subscriptions/></pubsub>"),
    );
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{PS}\"><subscriptions><subscription node=\"a\" jid=\"bob@localhost\" subscription=\"subscribed\" subid=\"0000000000000003\"/><subscription node=\"b\" jid=\"bob@localhost/phone\" subscription=\"subscribed\" subid=\"0000000000000004\"/></subscriptions></pubsub>"
        )
    );
}

#[test]
fn own_subscriptions_of_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><subscriptions node='x'/></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn own_affiliations_list_non_none_affiliations() {
    let mut h = Harness::new();
    h.create(ALICE, "a");
    h.create(ALICE, "b");
    h.set_affiliation(ALICE, "b", "bob@localhost", "publisher");
    let answer = h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><affiliations/></pubsub>"),
    );
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{PS}\"><affiliations><affiliation node=\"b\" affiliation=\"publisher\"/></affiliations></pubsub>"
        )
    );
}

#[test]
fn unknown_namespace_is_service_unavailable() {
    let mut h = Harness::new();
    h.get(BOB, "<vCard xmlns='vcard-temp'/>")
        .assert_error(Condition::ServiceUnavailable, None);
}

#[test]
fn unknown_pubsub_action_is_unsupported() {
    let mut h = Harness::new();
    let answer = h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><frobnicate node='x'/></pubsub>"),
    );
    answer.assert_error(Condition::FeatureNotImplemented, Some("unsupported"));
    assert_eq!(
        answer.error().app.as_ref().and_then(|a| a.attr("feature")),
        Some("frobnicate")
    );
}

#[test]
fn write_with_iq_get_is_bad_request() {
    let mut h = Harness::new();
    h.get(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><create node='x'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, None);
    assert!(h.service.node("x").is_none());
}

#[test]
fn default_subscription_options_form() {
    let mut h = Harness::new();
    let xml = h
        .get(BOB, &format!("<pubsub xmlns='{PS}'><default/></pubsub>"))
        .ok_xml();
    assert!(
        xml.contains("http://jabber.org/protocol/pubsub#subscribe_options"),
        "{xml}"
    );
    assert!(xml.contains("<field var=\"pubsub#deliver\" type=\"boolean\" label=\"Enable delivery\"><value>1</value>"), "{xml}");
}
