//! XEP-0060 §7.1 publish (with §7.1.5 publish-options) and §7.2 retract,
//! and the notifications they produce.

use super::*;
use crate::pubsub::datetime::format_micros;

fn notification(node: &str, id: &str, payload: &str, at: i64, archive_id: u64) -> String {
    format!(
        "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><items node=\"{node}\"><item id=\"{id}\" publisher=\"alice@localhost\">{payload}</item></items></event><delay xmlns=\"urn:xmpp:delay\" from=\"pubsub.localhost\" stamp=\"{}\"/><stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"pubsub.localhost\" id=\"{archive_id}\"/>",
        format_micros(at)
    )
}

#[test]
fn publish_notifies_each_subscriber_once_with_one_serialization() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.subscribe_jid(CAROL, CAROL, "n").ok();
    let answer = h.publish(ALICE, "n", Some("ae890ac52d"), ENTRY);
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{PS}\"><publish node=\"n\"><item id=\"ae890ac52d\"/></publish></pubsub>"
        )
    );
    assert_eq!(
        answer.sent(),
        vec![(
            vec!["bob@localhost".to_owned(), CAROL.to_owned()],
            notification("n", "ae890ac52d", ENTRY_TEXT, h.now, h.index)
        )]
    );
    assert_eq!(answer.notifications[0].kind, MessageKind::Headline);
    assert_eq!(
        answer.notifications[0].to_stanza("pubsub.localhost", "bob@localhost", Some("m1")),
        format!(
            "<message from=\"pubsub.localhost\" to=\"bob@localhost\" id=\"m1\" type=\"headline\">{}</message>",
            notification("n", "ae890ac52d", ENTRY_TEXT, h.now, h.index)
        )
    );
}

#[test]
fn a_site_that_does_not_answer_leaves_out_only_the_publish_result() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    let command = h
        .publish(ALICE, "n", Some("a"), ENTRY)
        .command
        .expect("a publish command");
    let mut silent = h.service.clone();
    let meta = |reply_wanted| Meta {
        index: h.index + 1,
        reply_wanted,
    };
    let answering = h.service.apply(&command, &meta(true));
    let not_answering = silent.apply(&command, &meta(false));

    assert!(matches!(answering.reply, Ok(Some(_))));
    assert_eq!(not_answering.reply, Ok(None));
    assert_eq!(not_answering.notifications, answering.notifications);
    assert_eq!(not_answering.published, answering.published);
    assert_eq!(silent, h.service);
}

#[test]
fn publish_without_id_gets_an_id_from_the_log_index() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let answer = h.publish(ALICE, "n", None, ENTRY);
    assert!(answer.ok_xml().contains("<item id=\"0000000000000002\"/>"));
    assert_eq!(h.item_ids("n"), ["0000000000000002"]);
}

#[test]
fn publishing_an_existing_id_replaces_the_item() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.publish(ALICE, "n", Some("a"), ENTRY).ok();
    h.publish(ALICE, "n", Some("b"), ENTRY).ok();
    h.publish(ALICE, "n", Some("a"), "<x xmlns='urn:x'/>").ok();
    assert_eq!(h.item_ids("n"), ["b", "a"]);
    assert_eq!(
        &*h.service.node("n").unwrap().items["a"].payload,
        "<x xmlns=\"urn:x\"/>"
    );
}

#[test]
fn publish_without_rights_is_forbidden() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.publish(BOB, "n", Some("a"), ENTRY)
        .assert_error(Condition::Forbidden, None);
}

#[test]
fn publishers_and_publish_only_entities_may_publish() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost", "publisher");
    h.set_affiliation(ALICE, "n", "carol@localhost", "publish-only");
    h.publish(BOB, "n", Some("b"), ENTRY).ok();
    h.publish(CAROL, "n", Some("c"), ENTRY).ok();
    assert_eq!(h.item_ids("n"), ["b", "c"]);
}

#[test]
fn outcast_may_not_publish_even_to_an_open_node() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#publish_model", "open")]);
    h.publish(BOB, "n", Some("a"), ENTRY).ok();
    h.set_affiliation(ALICE, "n", "bob@localhost", "outcast");
    h.publish(BOB, "n", Some("b"), ENTRY)
        .assert_error(Condition::Forbidden, None);
}

#[test]
fn subscribers_publish_model_admits_subscribers() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#publish_model", "subscribers")]);
    h.publish(BOB, "n", Some("a"), ENTRY)
        .assert_error(Condition::Forbidden, None);
    h.subscribe(BOB, "n").ok();
    h.publish(BOB, "n", Some("a"), ENTRY).ok();
}

#[test]
fn publish_to_a_missing_node_auto_creates_it_for_local_users() {
    let mut h = Harness::new();
    h.publish(BOB, "fresh", Some("a"), ENTRY).ok();
    assert_eq!(
        h.service.node("fresh").unwrap().affiliation(&jid(BOB)),
        Affiliation::Owner
    );
    h.publish(EVE, "other", Some("a"), ENTRY)
        .assert_error(Condition::ItemNotFound, None);
}

fn publish_with_options(h: &mut Harness, node: &str, fields: &[(&str, &str)]) -> Answer {
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{PS}'><publish node='{node}'><item id='i'>{ENTRY}</item></publish><publish-options>{}</publish-options></pubsub>",
            form("http://jabber.org/protocol/pubsub#publish-options", fields)
        ),
    )
}

#[test]
fn unmet_publish_option_is_precondition_not_met() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    publish_with_options(&mut h, "n", &[("pubsub#access_model", "whitelist")])
        .assert_error(Condition::Conflict, Some("precondition-not-met"));
    assert!(h.item_ids("n").is_empty());
}

#[test]
fn met_publish_options_publish() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    publish_with_options(
        &mut h,
        "n",
        &[
            ("pubsub#access_model", "open"),
            ("pubsub#persist_items", "true"),
        ],
    )
    .ok();
    assert_eq!(h.item_ids("n"), ["i"]);
}

#[test]
fn publish_options_configure_an_auto_created_node() {
    let mut h = Harness::new();
    publish_with_options(
        &mut h,
        "new",
        &[
            ("pubsub#access_model", "whitelist"),
            ("pubsub#max_items", "5"),
        ],
    )
    .ok();
    let config = &h.service.node("new").unwrap().config;
    assert_eq!(config.access_model, AccessModel::Whitelist);
    assert_eq!(config.max_items, crate::pubsub::model::MaxItems::Count(5));
}

#[test]
fn precondition_is_checked_again_at_apply() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let iq = Element::new("iq", "jabber:client").with_attr("type", "set").with_child(xml(&format!(
        "<pubsub xmlns='{PS}'><publish node='n'><item id='i'>{ENTRY}</item></publish><publish-options>{}</publish-options></pubsub>",
        form("http://jabber.org/protocol/pubsub#publish-options", &[("pubsub#access_model", "open")])
    )));
    let Handled::Propose(publish) = h.service.handle_iq(&full(ALICE), &iq, T0, &h.ctx) else {
        panic!("proposed");
    };
    // The owner reconfigures before the publish commits.
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#access_model", "presence")])
        ),
    )
    .ok();
    let outcome = h.apply(&publish);
    let error = outcome.reply.unwrap_err();
    assert_eq!(
        (error.condition, error.app_name()),
        (Condition::Conflict, Some("precondition-not-met"))
    );
}

#[test]
fn oversize_payload_is_payload_too_big() {
    let mut h = Harness::with_limits(PubsubLimits {
        payload_bytes_max: 40,
        ..PubsubLimits::default()
    });
    h.create(ALICE, "n");
    h.publish(
        ALICE,
        "n",
        Some("a"),
        "<p xmlns='urn:p'>0123456789012345678901234567890123456789</p>",
    )
    .assert_error(Condition::NotAcceptable, Some("payload-too-big"));
}

#[test]
fn publish_without_item_to_a_persistent_node_is_item_required() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><publish node='n'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("item-required"));
}

#[test]
fn publish_without_payload_to_a_payload_node_is_payload_required() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><publish node='n'><item id='a'/></publish></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("payload-required"));
}

#[test]
fn persistent_notification_node_stores_items_without_payload() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#deliver_payloads", "0")]);
    h.subscribe(BOB, "n").ok();
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><publish node='n'><item id='a'/></publish></pubsub>"),
    );
    assert!(
        answer.sent()[0]
            .1
            .contains("<item id=\"a\" publisher=\"alice@localhost\"/>")
    );
    assert_eq!(h.item_ids("n"), ["a"]);
    let retrieved = h.items(BOB, "n").ok_xml();
    assert!(
        retrieved.contains("<item id=\"a\" publisher=\"alice@localhost\"><delay "),
        "{retrieved}"
    );
}

#[test]
fn item_to_a_transient_notification_node_is_item_forbidden() {
    let mut h = Harness::new();
    h.create_with(
        ALICE,
        "n",
        &[
            ("pubsub#persist_items", "0"),
            ("pubsub#deliver_payloads", "0"),
        ],
    );
    h.publish(ALICE, "n", Some("a"), ENTRY)
        .assert_error(Condition::BadRequest, Some("item-forbidden"));
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><publish node='n'><item id='a'/></publish></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("item-forbidden"));
    h.subscribe(BOB, "n").ok();
    // Without an item, subscribers are told an event happened.
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><publish node='n'/></pubsub>"),
    );
    assert_eq!(answer.recipients(), ["bob@localhost"]);
    assert!(
        answer.sent()[0]
            .1
            .contains("<item id=\"0000000000000003\" publisher=\"alice@localhost\"/>")
    );
}

#[test]
fn two_payloads_in_one_item_are_invalid_payload() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.publish(
        ALICE,
        "n",
        Some("a"),
        "<a xmlns='urn:a'/><b xmlns='urn:b'/>",
    )
    .assert_error(Condition::BadRequest, Some("invalid-payload"));
}

#[test]
fn two_items_in_one_publish_are_invalid_payload() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><publish node='n'><item id='a'>{ENTRY}</item><item id='b'>{ENTRY}</item></publish></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("invalid-payload"));
}

#[test]
fn publish_without_node_is_nodeid_required() {
    let mut h = Harness::new();
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><publish><item>{ENTRY}</item></publish></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("nodeid-required"));
}

#[test]
fn without_deliver_payloads_the_notification_has_no_payload() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#deliver_payloads", "0")]);
    h.subscribe(BOB, "n").ok();
    let answer = h.publish(ALICE, "n", Some("a"), ENTRY);
    assert!(answer.sent()[0].1.starts_with(
        "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><items node=\"n\"><item id=\"a\" publisher=\"alice@localhost\"/></items></event><delay"
    ));
    // The item is still stored with its payload.
    assert_eq!(
        &*h.service.node("n").unwrap().items["a"].payload,
        ENTRY_TEXT
    );
}

#[test]
fn without_deliver_notifications_nothing_is_sent() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#deliver_notifications", "0")]);
    h.subscribe(BOB, "n").ok();
    assert!(
        h.publish(ALICE, "n", Some("a"), ENTRY)
            .notifications
            .is_empty()
    );
}

#[test]
fn normal_notification_type_is_honoured() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#notification_type", "normal")]);
    h.subscribe(BOB, "n").ok();
    assert_eq!(
        h.publish(ALICE, "n", Some("a"), ENTRY).notifications[0].kind,
        MessageKind::Normal
    );
}

#[test]
fn pending_and_non_delivering_subscribers_get_nothing() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    h.subscribe(BOB, "n").ok();
    assert!(
        h.publish(ALICE, "n", Some("a"), ENTRY)
            .notifications
            .is_empty()
    );
}

#[test]
fn max_items_keeps_the_newest_items() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#max_items", "2")]);
    for id in ["a", "b", "c"] {
        h.publish(ALICE, "n", Some(id), ENTRY).ok();
    }
    assert_eq!(h.item_ids("n"), ["b", "c"]);
}

#[test]
fn max_items_max_is_the_service_cap() {
    let mut h = Harness::with_limits(PubsubLimits {
        items_per_node_max: 2,
        items_per_node_default: 1,
        ..PubsubLimits::default()
    });
    h.create_with(ALICE, "n", &[("pubsub#max_items", "max")]);
    for id in ["a", "b", "c"] {
        h.publish(ALICE, "n", Some(id), ENTRY).ok();
    }
    assert_eq!(h.item_ids("n"), ["b", "c"]);
}

#[test]
fn transient_node_stores_nothing_but_notifies() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#persist_items", "0")]);
    h.subscribe(BOB, "n").ok();
    let answer = h.publish(ALICE, "n", Some("a"), ENTRY);
    assert_eq!(answer.recipients(), ["bob@localhost"]);
    assert!(h.item_ids("n").is_empty());
    assert!(h.service.node("n").unwrap().archive.is_empty());
}

#[test]
fn retract_removes_the_item_and_notifies() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.publish(ALICE, "n", Some("a"), ENTRY).ok();
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub>"),
    );
    assert_eq!(answer.ok(), None);
    assert_eq!(
        answer.sent(),
        vec![(
            vec!["bob@localhost".to_owned()],
            "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><items node=\"n\"><retract id=\"a\"/></items></event>".to_owned()
        )]
    );
    assert!(h.item_ids("n").is_empty());
}

#[test]
fn retract_notifies_when_asked_even_without_notify_retract() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#notify_retract", "0")]);
    h.subscribe(BOB, "n").ok();
    h.publish(ALICE, "n", Some("a"), ENTRY).ok();
    h.publish(ALICE, "n", Some("b"), ENTRY).ok();
    let silent = h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub>"),
    );
    assert!(silent.notifications.is_empty());
    let told = h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{PS}'><retract node='n' notify='true'><item id='b'/></retract></pubsub>"
        ),
    );
    assert_eq!(told.recipients(), ["bob@localhost"]);
}

#[test]
fn retract_of_a_missing_item_is_item_not_found() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='zz'/></retract></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn retract_from_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn retract_without_item_is_item_required() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract node='n'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("item-required"));
}

#[test]
fn retract_without_node_is_nodeid_required() {
    let mut h = Harness::new();
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract><item id='a'/></retract></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("nodeid-required"));
}

#[test]
fn retract_without_rights_is_forbidden() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.publish(ALICE, "n", Some("a"), ENTRY).ok();
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub>"),
    )
    .assert_error(Condition::Forbidden, None);
}

#[test]
fn publish_only_entities_retract_only_their_own_items() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost", "publish-only");
    h.publish(ALICE, "n", Some("alices"), ENTRY).ok();
    h.publish(BOB, "n", Some("bobs"), ENTRY).ok();
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='alices'/></retract></pubsub>"),
    )
    .assert_error(Condition::Forbidden, None);
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='bobs'/></retract></pubsub>"),
    )
    .ok();
    assert_eq!(h.item_ids("n"), ["alices"]);
}

#[test]
fn retract_from_a_transient_node_is_unsupported_persistent_items() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#persist_items", "0")]);
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub>"),
    );
    answer.assert_error(Condition::FeatureNotImplemented, Some("unsupported"));
}

#[test]
fn full_jid_subscription_is_delivered_to_that_resource_only() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe_jid(BOB, BOB, "n").ok();
    assert_eq!(h.publish(ALICE, "n", Some("a"), ENTRY).recipients(), [BOB]);
}

#[test]
fn a_jid_with_several_subscriptions_gets_one_copy_naming_them() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.subscribe(CAROL, "n").ok();
    // The owner gives bob a second subscription.
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><subscriptions node='n'><subscription jid='bob@localhost' subscription='subscribed' subid='new'/></subscriptions></pubsub>"),
    )
    .ok();
    let answer = h.publish(ALICE, "n", Some("a"), ENTRY);
    let sent = answer.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0, ["carol@localhost"]);
    assert_eq!(sent[1].0, ["bob@localhost"]);
    assert_eq!(
        sent[1].1,
        format!(
            "{}<headers xmlns=\"http://jabber.org/protocol/shim\"><header name=\"SubID\">0000000000000002</header><header name=\"SubID\">0000000000000004-0</header></headers>",
            sent[0].1
        )
    );
}
