//! XEP-0060 §6.1–§6.4 and §8.6: subscribe, unsubscribe, subscription
//! options, approval of pending subscriptions; §4.5 access models.

use super::*;

const SUB_OPTIONS: &str = "http://jabber.org/protocol/pubsub#subscribe_options";

#[test]
fn subscribe_to_an_open_node_is_subscribed_with_a_subid() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let answer = h.subscribe(BOB, "n");
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{PS}\"><subscription node=\"n\" jid=\"bob@localhost\" subscription=\"subscribed\" subid=\"0000000000000002\"/></pubsub>"
        )
    );
    assert!(answer.notifications.is_empty());
}

#[test]
fn subscribing_another_jid_is_invalid_jid() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe_jid(BOB, "carol@localhost", "n")
        .assert_error(Condition::BadRequest, Some("invalid-jid"));
}

#[test]
fn subscribe_without_jid_is_invalid_jid() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><subscribe node='n'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("invalid-jid"));
}

#[test]
fn subscribe_without_node_is_nodeid_required() {
    let mut h = Harness::new();
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><subscribe jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("nodeid-required"));
}

#[test]
fn subscribe_to_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.subscribe(BOB, "n")
        .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn outcast_may_not_subscribe() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost", "outcast");
    h.subscribe(BOB, "n")
        .assert_error(Condition::Forbidden, None);
}

#[test]
fn presence_node_requires_a_presence_subscription() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "presence")]);
    h.subscribe(BOB, "n").assert_error(
        Condition::NotAuthorized,
        Some("presence-subscription-required"),
    );
    h.ctx
        .presence
        .insert((bare("alice@localhost"), bare("bob@localhost")));
    let answer = h.subscribe(BOB, "n");
    assert!(answer.ok_xml().contains("subscription=\"subscribed\""));
    assert!(matches!(
        answer.command.and_then(|c| c.op),
        Some(Op::Subscribe(proto::Subscribe {
            contact_access: true,
            ..
        }))
    ));
}

#[test]
fn roster_node_requires_an_allowed_group() {
    let mut h = Harness::new();
    h.create_with(
        ALICE,
        "n",
        &[
            ("pubsub#access_model", "roster"),
            ("pubsub#roster_groups_allowed", "friends"),
        ],
    );
    h.ctx.groups.insert(
        (bare("alice@localhost"), bare("bob@localhost")),
        vec!["colleagues".into()],
    );
    h.subscribe(BOB, "n")
        .assert_error(Condition::NotAuthorized, Some("not-in-roster-group"));
    h.ctx.groups.insert(
        (bare("alice@localhost"), bare("bob@localhost")),
        vec!["friends".into()],
    );
    assert!(h.subscribe(BOB, "n").ok_xml().contains("subscribed"));
}

#[test]
fn whitelist_node_is_closed_except_to_members() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "whitelist")]);
    h.subscribe(BOB, "n")
        .assert_error(Condition::NotAllowed, Some("closed-node"));
    h.set_affiliation(ALICE, "n", "bob@localhost", "member");
    assert!(
        h.subscribe(BOB, "n")
            .ok_xml()
            .contains("subscription=\"subscribed\"")
    );
}

#[test]
fn publish_only_entities_may_not_subscribe() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost", "publish-only");
    h.subscribe(BOB, "n")
        .assert_error(Condition::Forbidden, None);
}

#[test]
fn node_that_disallows_subscriptions_is_unsupported_subscribe() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#subscribe", "0")]);
    let answer = h.subscribe(BOB, "n");
    answer.assert_error(Condition::FeatureNotImplemented, Some("unsupported"));
    assert_eq!(
        answer.error().app.as_ref().and_then(|a| a.attr("feature")),
        Some("subscribe")
    );
}

#[test]
fn authorize_node_makes_the_subscription_pending_and_asks_every_owner() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    h.set_affiliation(ALICE, "n", "carol@localhost", "owner");
    let answer = h.subscribe(BOB, "n");
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{PS}\"><subscription node=\"n\" jid=\"bob@localhost\" subscription=\"pending\" subid=\"0000000000000003\"/></pubsub>"
        )
    );
    let sent = answer.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, ["alice@localhost", "carol@localhost"]);
    assert_eq!(answer.notifications[0].kind, MessageKind::Normal);
    let form = &sent[0].1;
    assert!(
        form.contains("<value>http://jabber.org/protocol/pubsub#subscribe_authorization</value>"),
        "{form}"
    );
    assert!(form.contains("<field var=\"pubsub#subscriber_jid\" type=\"jid-single\" label=\"Subscriber Address\"><value>bob@localhost</value>"), "{form}");
    assert!(
        form.contains(
            "<field var=\"pubsub#subid\" type=\"hidden\"><value>0000000000000003</value>"
        ),
        "{form}"
    );
}

fn answer_authorization(h: &mut Harness, from: &str, allow: bool) -> Answer {
    let message = Element::new("message", "jabber:client").with_child(xml(&form(
        "http://jabber.org/protocol/pubsub#subscribe_authorization",
        &[
            ("pubsub#node", "n"),
            ("pubsub#subscriber_jid", "bob@localhost"),
            ("pubsub#allow", if allow { "true" } else { "false" }),
        ],
    )));
    let handled = h
        .service
        .handle_message(&full(from), &message, h.now)
        .expect("handled");
    h.finish(handled)
}

#[test]
fn owner_approval_subscribes_and_tells_the_subscriber() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    h.subscribe(BOB, "n").ok();
    let answer = answer_authorization(&mut h, ALICE, true);
    assert_eq!(
        answer.sent(),
        vec![(
            vec!["bob@localhost".to_owned()],
            "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><subscription node=\"n\" jid=\"bob@localhost\" subscription=\"subscribed\" subid=\"0000000000000002\"/></event>".to_owned()
        )]
    );
    assert!(
        h.service
            .node("n")
            .unwrap()
            .is_subscribed(&jid("bob@localhost"))
    );
}

#[test]
fn owner_denial_removes_the_pending_subscription() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    h.subscribe(BOB, "n").ok();
    let answer = answer_authorization(&mut h, ALICE, false);
    assert_eq!(
        answer.sent()[0].1,
        "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><subscription node=\"n\" jid=\"bob@localhost\" subscription=\"none\"/></event>"
    );
    assert!(h.service.node("n").unwrap().subscriptions.is_empty());
}

#[test]
fn approval_by_a_non_owner_is_forbidden() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    h.subscribe(BOB, "n").ok();
    answer_authorization(&mut h, CAROL, true).assert_error(Condition::Forbidden, None);
}

#[test]
fn approval_without_a_pending_subscription_is_item_not_found() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    answer_authorization(&mut h, ALICE, true).assert_error(Condition::ItemNotFound, None);
}

#[test]
fn subscribing_again_while_pending_is_pending_subscription() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    h.subscribe(BOB, "n").ok();
    h.subscribe(BOB, "n")
        .assert_error(Condition::NotAuthorized, Some("pending-subscription"));
}

#[test]
fn authorize_node_subscribes_members_directly() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    h.set_affiliation(ALICE, "n", "bob@localhost", "member");
    assert!(
        h.subscribe(BOB, "n")
            .ok_xml()
            .contains("subscription=\"subscribed\"")
    );
}

#[test]
fn subscriptions_beyond_the_limit_are_too_many_subscriptions() {
    let mut h = Harness::with_limits(PubsubLimits {
        subscriptions_per_node_max: 1,
        ..PubsubLimits::default()
    });
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.subscribe(CAROL, "n")
        .assert_error(Condition::PolicyViolation, Some("too-many-subscriptions"));
}

#[test]
fn resubscribing_with_the_same_options_is_idempotent() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let first = h.subscribe(BOB, "n").ok_xml();
    let second = h.subscribe(BOB, "n").ok_xml();
    assert_eq!(first, second);
    assert_eq!(h.service.node("n").unwrap().subscriptions.len(), 1);
}

fn subscribe_with_options(h: &mut Harness, from: &str, fields: &[(&str, &str)]) -> Answer {
    let who = jid(from).to_bare();
    h.set(
        from,
        &format!(
            "<pubsub xmlns='{PS}'><subscribe node='n' jid='{who}'/><options>{}</options></pubsub>",
            form(SUB_OPTIONS, fields)
        ),
    )
}

#[test]
fn different_options_make_a_second_subscription_with_its_own_subid() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    let answer = subscribe_with_options(&mut h, BOB, &[("pubsub#deliver", "0")]);
    assert!(answer.ok_xml().contains("subid=\"0000000000000003\""));
    assert_eq!(h.service.node("n").unwrap().subscriptions.len(), 2);
    // One notification per JID, however many subscriptions it holds.
    let published = h.publish(ALICE, "n", Some("i"), ENTRY);
    assert_eq!(published.recipients(), ["bob@localhost"]);
}

#[test]
fn subscribe_and_configure_applies_the_options() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    subscribe_with_options(&mut h, BOB, &[("pubsub#deliver", "0")]).ok();
    let subscription = &h.service.node("n").unwrap().subscriptions[0];
    assert!(!subscription.options.deliver);
    assert!(
        h.publish(ALICE, "n", Some("i"), ENTRY)
            .notifications
            .is_empty()
    );
}

#[test]
fn subscribe_with_invalid_options_is_invalid_options() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    subscribe_with_options(&mut h, BOB, &[("pubsub#deliver", "maybe")])
        .assert_error(Condition::BadRequest, Some("invalid-options"));
}

#[test]
fn on_sub_sends_the_last_published_item_to_the_new_subscriber() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#send_last_published_item", "on_sub")]);
    h.publish(ALICE, "n", Some("old"), ENTRY).ok();
    let published = h.now;
    h.publish(ALICE, "n", Some("last"), ENTRY).ok();
    let answer = h.subscribe_jid(BOB, BOB, "n");
    assert_eq!(
        answer.sent(),
        vec![(
            vec![BOB.to_owned()],
            format!(
                "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><items node=\"n\"><item id=\"last\" publisher=\"alice@localhost\">{ENTRY_TEXT}</item></items></event><delay xmlns=\"urn:xmpp:delay\" from=\"pubsub.localhost\" stamp=\"{}\"/><stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"pubsub.localhost\" id=\"{}\"/>",
                crate::pubsub::datetime::format_micros(published + 1_000_000),
                h.index - 1
            )
        )]
    );
}

#[test]
fn on_sub_and_presence_sends_the_last_item_to_a_resource_coming_online() {
    let mut h = Harness::new();
    h.create_with(
        ALICE,
        "n",
        &[("pubsub#send_last_published_item", "on_sub_and_presence")],
    );
    h.subscribe(BOB, "n").ok();
    assert!(
        h.service
            .on_available(&full("bob@localhost/tablet"))
            .is_empty()
    );
    h.publish(ALICE, "n", Some("x"), ENTRY).ok();
    let sent = h.service.on_available(&full("bob@localhost/tablet"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].recipients, [jid("bob@localhost/tablet")]);
    assert!(sent[0].message.contains("<item id=\"x\""));
    assert!(
        h.service
            .on_available(&full("carol@localhost/lab"))
            .is_empty()
    );
}

#[test]
fn never_sends_no_last_item() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.publish(ALICE, "n", Some("x"), ENTRY).ok();
    assert!(h.subscribe(BOB, "n").notifications.is_empty());
}

#[test]
fn unsubscribe_removes_the_subscription() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    let answer = h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><unsubscribe node='n' jid='bob@localhost'/></pubsub>"),
    );
    assert_eq!(answer.ok(), None);
    assert!(h.service.node("n").unwrap().subscriptions.is_empty());
}

#[test]
fn unsubscribe_when_not_subscribed_is_not_subscribed() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><unsubscribe node='n' jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::UnexpectedRequest, Some("not-subscribed"));
}

#[test]
fn unsubscribe_with_several_subscriptions_requires_a_subid() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    subscribe_with_options(&mut h, BOB, &[("pubsub#deliver", "0")]).ok();
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><unsubscribe node='n' jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("subid-required"));
    h.set(BOB, &format!("<pubsub xmlns='{PS}'><unsubscribe node='n' jid='bob@localhost' subid='0000000000000002'/></pubsub>"))
        .ok();
    let left: Vec<&str> = h
        .service
        .node("n")
        .unwrap()
        .subscriptions
        .iter()
        .map(|s| s.subid.as_str())
        .collect();
    assert_eq!(left, ["0000000000000003"]);
}

#[test]
fn unsubscribe_with_a_wrong_subid_is_invalid_subid() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.set(
        BOB,
        &format!(
            "<pubsub xmlns='{PS}'><unsubscribe node='n' jid='bob@localhost' subid='nope'/></pubsub>"
        ),
    )
    .assert_error(Condition::NotAcceptable, Some("invalid-subid"));
}

#[test]
fn unsubscribing_someone_else_is_forbidden() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.set(
        CAROL,
        &format!("<pubsub xmlns='{PS}'><unsubscribe node='n' jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::Forbidden, None);
}

#[test]
fn unsubscribe_from_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><unsubscribe node='n' jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn options_are_read_and_changed() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    let xml = h
        .get(
            BOB,
            &format!("<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost'/></pubsub>"),
        )
        .ok_xml();
    assert!(xml.starts_with(&format!("<pubsub xmlns=\"{PS}\"><options node=\"n\" jid=\"bob@localhost\" subid=\"0000000000000002\"><x xmlns=\"jabber:x:data\" type=\"form\">")), "{xml}");
    let answer = h.set(
        BOB,
        &format!(
            "<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost'>{}</options></pubsub>",
            form(SUB_OPTIONS, &[("pubsub#deliver", "false")])
        ),
    );
    assert_eq!(answer.ok(), None);
    assert!(
        !h.service.node("n").unwrap().subscriptions[0]
            .options
            .deliver
    );
}

#[test]
fn options_without_jid_is_jid_required() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><options node='n'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("jid-required"));
}

#[test]
fn options_when_not_subscribed_is_not_subscribed() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::UnexpectedRequest, Some("not-subscribed"));
}

#[test]
fn options_of_someone_else_are_forbidden() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.get(
        CAROL,
        &format!("<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::Forbidden, None);
}

#[test]
fn invalid_options_form_is_invalid_options() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.set(
        BOB,
        &format!(
            "<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost'>{}</options></pubsub>",
            form(SUB_OPTIONS, &[("pubsub#digest", "1")])
        ),
    )
    .assert_error(Condition::BadRequest, Some("invalid-options"));
}

#[test]
fn approval_on_an_on_sub_node_also_sends_the_last_item() {
    let mut h = Harness::new();
    h.create_with(
        ALICE,
        "n",
        &[
            ("pubsub#access_model", "authorize"),
            ("pubsub#send_last_published_item", "on_sub"),
        ],
    );
    h.publish(ALICE, "n", Some("last"), ENTRY).ok();
    h.subscribe(BOB, "n").ok();
    let answer = answer_authorization(&mut h, ALICE, true);
    let sent = answer.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].1.contains("subscription=\"subscribed\""));
    assert_eq!(sent[1].0, ["bob@localhost"]);
    assert!(sent[1].1.contains("<item id=\"last\""));
}

#[test]
fn messages_without_an_authorization_form_are_ignored() {
    let h = Harness::new();
    let chat = Element::new("message", "jabber:client")
        .with_attr("type", "chat")
        .with_child(Element::new("body", "jabber:client").with_text("hi"));
    assert_eq!(h.service.handle_message(&full(BOB), &chat, T0), None);
}

#[test]
fn authorization_form_without_allow_is_bad_request() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    let message = Element::new("message", "jabber:client").with_child(xml(&form(
        "http://jabber.org/protocol/pubsub#subscribe_authorization",
        &[
            ("pubsub#node", "n"),
            ("pubsub#subscriber_jid", "bob@localhost"),
        ],
    )));
    let handled = h
        .service
        .handle_message(&full(ALICE), &message, T0)
        .expect("answered");
    h.finish(handled).assert_error(Condition::BadRequest, None);
}

#[test]
fn error_types_follow_the_xep_examples() {
    use crate::pubsub::error::ErrorType;
    let mut h = Harness::with_limits(PubsubLimits {
        subscriptions_per_node_max: 1,
        ..PubsubLimits::default()
    });
    h.create(ALICE, "n");
    let unsubscribe = h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><unsubscribe node='n' jid='bob@localhost'/></pubsub>"),
    );
    assert_eq!(unsubscribe.error().kind, ErrorType::Cancel);
    h.subscribe(BOB, "n").ok();
    assert_eq!(h.subscribe(CAROL, "n").error().kind, ErrorType::Wait);
    assert_eq!(
        h.subscribe_jid(CAROL, BOB, "n").error().kind,
        ErrorType::Modify
    );
    assert_eq!(h.subscribe(EVE, "none").error().kind, ErrorType::Cancel);
}

#[test]
fn options_with_several_subscriptions_require_a_valid_subid() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    subscribe_with_options(&mut h, BOB, &[("pubsub#deliver", "0")]).ok();
    h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("subid-required"));
    h.get(
        BOB,
        &format!(
            "<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost' subid='zz'/></pubsub>"
        ),
    )
    .assert_error(Condition::NotAcceptable, Some("invalid-subid"));
    let xml = h
        .get(BOB, &format!("<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost' subid='0000000000000003'/></pubsub>"))
        .ok_xml();
    assert!(xml.contains("<value>0</value>"), "{xml}");
}

#[test]
fn options_of_a_missing_node_are_item_not_found() {
    let mut h = Harness::new();
    h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><options node='n' jid='bob@localhost'/></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}
