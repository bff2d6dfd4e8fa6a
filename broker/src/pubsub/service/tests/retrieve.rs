//! XEP-0060 §6.5: retrieving items — all, by id, `max_items`, RSM pages —
//! under each access model; payloads come back as published.

use super::*;

fn publish_three(h: &mut Harness) {
    h.create(ALICE, "n");
    for id in ["a", "b", "c"] {
        h.publish(ALICE, "n", Some(id), &format!("<p xmlns='urn:p'>{id}</p>"))
            .ok();
    }
}

fn item_list(answer: &Answer) -> Vec<String> {
    let pubsub = answer.ok().unwrap();
    pubsub
        .child("items", PS)
        .unwrap()
        .children()
        .filter_map(|i| i.attr("id").map(str::to_owned))
        .collect()
}

#[test]
fn all_items_come_in_publication_order_with_their_payloads_and_stamps() {
    let mut h = Harness::new();
    publish_three(&mut h);
    // Each request advances the harness clock by a second: the publishes
    // were stamped 3, 2 and 1 seconds before the retrieval.
    let stamp = |seconds_before: i64| {
        crate::pubsub::datetime::format_micros(h.now - seconds_before * 1_000_000)
    };
    let item = |id: &str, seconds_before: i64| {
        format!(
            "<item id=\"{id}\" publisher=\"alice@localhost\"><p xmlns=\"urn:p\">{id}</p>\
             <delay xmlns=\"urn:xmpp:delay\" from=\"pubsub.localhost\" stamp=\"{}\"/></item>",
            stamp(seconds_before)
        )
    };
    let expected = format!(
        "<pubsub xmlns=\"{PS}\"><items node=\"n\">{}{}{}</items></pubsub>",
        item("a", 2),
        item("b", 1),
        item("c", 0)
    );
    let answer = h.items(BOB, "n");
    assert_eq!(answer.ok_xml(), expected);
}

#[test]
fn payload_is_returned_exactly_as_published() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let payload = "<geoloc xmlns='http://jabber.org/protocol/geoloc' xml:lang='en'><x:alt xmlns:x='urn:x' x:unit='m'>1&lt;2</x:alt><text>caf\u{e9}  </text></geoloc>";
    h.publish(ALICE, "n", Some("g"), payload).ok();
    let answer = h.items(BOB, "n");
    let answer = answer.ok().unwrap();
    let item = answer
        .child("items", PS)
        .and_then(|items| items.children().next())
        .unwrap();
    // Spliced in as stored, not parsed and serialized again.
    let Some(crate::xml::Node::Raw(returned)) = item.nodes().first() else {
        panic!("the item's first node is its stored payload: {item:?}");
    };
    assert_eq!(payload::parse(returned).unwrap(), xml(payload));
    assert_eq!(
        &**returned,
        "<geoloc xmlns=\"http://jabber.org/protocol/geoloc\" xml:lang=\"en\"><x:alt xmlns:x=\"urn:x\" x:unit=\"m\">1&lt;2</x:alt><text>caf\u{e9}  </text></geoloc>"
    );
}

#[test]
fn items_by_id_return_those_items() {
    let mut h = Harness::new();
    publish_three(&mut h);
    let answer = h.get(
        BOB,
        &format!(
            "<pubsub xmlns='{PS}'><items node='n'><item id='c'/><item id='a'/></items></pubsub>"
        ),
    );
    assert_eq!(item_list(&answer), ["c", "a"]);
}

#[test]
fn missing_item_by_id_is_item_not_found() {
    let mut h = Harness::new();
    publish_three(&mut h);
    h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><items node='n'><item id='zz'/></items></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn max_items_returns_the_most_recent() {
    let mut h = Harness::new();
    publish_three(&mut h);
    let answer = h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><items node='n' max_items='2'/></pubsub>"),
    );
    assert_eq!(item_list(&answer), ["b", "c"]);
}

#[test]
fn non_numeric_max_items_is_bad_request() {
    let mut h = Harness::new();
    publish_three(&mut h);
    h.get(
        BOB,
        &format!("<pubsub xmlns='{PS}'><items node='n' max_items='all'/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, None);
}

#[test]
fn rsm_pages_through_items() {
    let mut h = Harness::new();
    publish_three(&mut h);
    let rsm = "http://jabber.org/protocol/rsm";
    let answer = h.get(
        BOB,
        &format!(
            "<pubsub xmlns='{PS}'><items node='n'/><set xmlns='{rsm}'><max>2</max></set></pubsub>"
        ),
    );
    assert_eq!(item_list(&answer), ["a", "b"]);
    let set = answer.ok().unwrap().child("set", rsm).unwrap().to_xml();
    assert_eq!(
        set,
        format!(
            "<set xmlns=\"{rsm}\"><first index=\"0\">a</first><last>b</last><count>3</count></set>"
        )
    );
    let next = h.get(BOB, &format!("<pubsub xmlns='{PS}'><items node='n'/><set xmlns='{rsm}'><max>2</max><after>b</after></set></pubsub>"));
    assert_eq!(item_list(&next), ["c"]);
    let last = h.get(BOB, &format!("<pubsub xmlns='{PS}'><items node='n'/><set xmlns='{rsm}'><max>1</max><before/></set></pubsub>"));
    assert_eq!(item_list(&last), ["c"]);
}

#[test]
fn unbounded_retrieval_is_capped_to_a_page() {
    let mut h = Harness::with_limits(PubsubLimits {
        page_items_max: 2,
        ..PubsubLimits::default()
    });
    publish_three(&mut h);
    let answer = h.items(BOB, "n");
    assert_eq!(item_list(&answer), ["b", "c"]);
    assert!(answer.ok_xml().ends_with(
        "<set xmlns=\"http://jabber.org/protocol/rsm\"><first index=\"1\">b</first><last>c</last><count>3</count></set></pubsub>"
    ));
}

#[test]
fn items_of_a_transient_node_are_unsupported_persistent_items() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#persist_items", "0")]);
    let answer = h.items(BOB, "n");
    answer.assert_error(Condition::FeatureNotImplemented, Some("unsupported"));
    assert_eq!(
        answer.error().app.as_ref().and_then(|a| a.attr("feature")),
        Some("persistent-items")
    );
}

#[test]
fn items_of_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.items(BOB, "n")
        .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn items_without_node_is_nodeid_required() {
    let mut h = Harness::new();
    h.get(BOB, &format!("<pubsub xmlns='{PS}'><items/></pubsub>"))
        .assert_error(Condition::BadRequest, Some("nodeid-required"));
}

#[test]
fn presence_node_items_require_a_presence_subscription() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "presence")]);
    h.items(BOB, "n").assert_error(
        Condition::NotAuthorized,
        Some("presence-subscription-required"),
    );
    h.ctx
        .presence
        .insert((bare("alice@localhost"), bare("bob@localhost")));
    h.items(BOB, "n").ok();
}

#[test]
fn roster_node_items_require_an_allowed_group() {
    let mut h = Harness::new();
    h.create_with(
        ALICE,
        "n",
        &[
            ("pubsub#access_model", "roster"),
            ("pubsub#roster_groups_allowed", "team"),
        ],
    );
    h.items(BOB, "n")
        .assert_error(Condition::NotAuthorized, Some("not-in-roster-group"));
    h.ctx.groups.insert(
        (bare("alice@localhost"), bare("bob@localhost")),
        vec!["team".into()],
    );
    h.items(BOB, "n").ok();
}

#[test]
fn whitelist_node_items_are_closed_to_outsiders() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "whitelist")]);
    h.items(BOB, "n")
        .assert_error(Condition::NotAllowed, Some("closed-node"));
    h.set_affiliation(ALICE, "n", "bob@localhost", "member");
    h.items(BOB, "n").ok();
}

#[test]
fn authorize_node_items_require_an_approved_subscription() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "authorize")]);
    h.items(BOB, "n")
        .assert_error(Condition::NotAuthorized, Some("not-subscribed"));
    h.subscribe(BOB, "n").ok();
    h.items(BOB, "n")
        .assert_error(Condition::NotAuthorized, Some("not-subscribed"));
    h.items(ALICE, "n").ok();
}

#[test]
fn outcast_may_not_retrieve_items() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost", "outcast");
    h.items(BOB, "n").assert_error(Condition::Forbidden, None);
}
