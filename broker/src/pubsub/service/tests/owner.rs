//! XEP-0060 §8.8 and §8.9: owners manage subscriptions and affiliations.

use super::*;

#[test]
fn owner_lists_subscriptions() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    let answer = h.get(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='n'/></pubsub>"),
    );
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{OWNER}\"><subscriptions node=\"n\"><subscription jid=\"bob@localhost\" subscription=\"subscribed\" subid=\"0000000000000002\"/></subscriptions></pubsub>"
        )
    );
}

#[test]
fn non_owner_may_not_manage_subscriptions_or_affiliations() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    for child in [
        format!("<pubsub xmlns='{OWNER}'><subscriptions node='n'/></pubsub>"),
        format!("<pubsub xmlns='{OWNER}'><affiliations node='n'/></pubsub>"),
    ] {
        h.get(BOB, &child).assert_error(Condition::Forbidden, None);
    }
    h.set(BOB, &format!("<pubsub xmlns='{OWNER}'><affiliations node='n'><affiliation jid='bob@localhost' affiliation='owner'/></affiliations></pubsub>"))
        .assert_error(Condition::Forbidden, None);
    h.set(BOB, &format!("<pubsub xmlns='{OWNER}'><subscriptions node='n'><subscription jid='bob@localhost' subscription='subscribed'/></subscriptions></pubsub>"))
        .assert_error(Condition::Forbidden, None);
}

#[test]
fn managing_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.get(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='n'/></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
    h.get(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><affiliations node='n'/></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn owner_subscribes_an_entity_and_it_is_told() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='n'><subscription jid='carol@localhost' subscription='subscribed'/></subscriptions></pubsub>"),
    );
    assert_eq!(answer.ok(), None);
    assert_eq!(
        answer.sent(),
        vec![(
            vec!["carol@localhost".to_owned()],
            "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><subscription node=\"n\" jid=\"carol@localhost\" subscription=\"subscribed\" subid=\"0000000000000002-0\"/></event>".to_owned()
        )]
    );
    assert_eq!(
        h.publish(ALICE, "n", Some("a"), ENTRY).recipients(),
        ["carol@localhost"]
    );
}

#[test]
fn owner_removes_a_subscription() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='n'><subscription jid='bob@localhost' subscription='none'/></subscriptions></pubsub>"),
    );
    assert_eq!(answer.recipients(), ["bob@localhost"]);
    assert!(h.service.node("n").unwrap().subscriptions.is_empty());
}

#[test]
fn owner_lists_affiliations() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost/phone", "publisher");
    let answer = h.get(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><affiliations node='n'/></pubsub>"),
    );
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{OWNER}\"><affiliations node=\"n\"><affiliation jid=\"alice@localhost\" affiliation=\"owner\"/><affiliation jid=\"bob@localhost\" affiliation=\"publisher\"/></affiliations></pubsub>"
        )
    );
}

#[test]
fn affected_entity_is_told_its_new_affiliation() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><affiliations node='n'><affiliation jid='bob@localhost' affiliation='publisher'/></affiliations></pubsub>"),
    );
    assert_eq!(answer.ok(), None);
    assert_eq!(
        answer.sent(),
        vec![(
            vec!["bob@localhost".to_owned()],
            format!(
                "<pubsub xmlns=\"{PS}\"><affiliations node=\"n\"><affiliation jid=\"bob@localhost\" affiliation=\"publisher\"/></affiliations></pubsub>"
            )
        )]
    );
    assert_eq!(answer.notifications[0].kind, MessageKind::Normal);
}

#[test]
fn affiliation_none_removes_the_entry() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost", "member");
    h.set_affiliation(ALICE, "n", "bob@localhost", "none");
    assert_eq!(h.service.node("n").unwrap().affiliations.len(), 1);
}

#[test]
fn removing_the_last_owner_is_not_acceptable() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><affiliations node='n'><affiliation jid='alice@localhost' affiliation='member'/></affiliations></pubsub>"),
    )
    .assert_error(Condition::NotAcceptable, None);
    assert_eq!(
        h.service.node("n").unwrap().affiliation(&jid(ALICE)),
        Affiliation::Owner
    );
}

#[test]
fn unknown_affiliation_is_bad_request() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><affiliations node='n'><affiliation jid='bob@localhost' affiliation='king'/></affiliations></pubsub>"),
    )
    .assert_error(Condition::BadRequest, None);
}

#[test]
fn making_a_subscriber_outcast_ends_its_subscription() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.set_affiliation(ALICE, "n", "bob@localhost", "outcast");
    assert!(h.service.node("n").unwrap().subscriptions.is_empty());
    assert!(
        h.publish(ALICE, "n", Some("a"), ENTRY)
            .notifications
            .is_empty()
    );
}

#[test]
fn a_second_owner_may_manage_the_node() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost", "owner");
    h.set(
        BOB,
        &format!("<pubsub xmlns='{OWNER}'><purge node='n'/></pubsub>"),
    )
    .ok();
}
