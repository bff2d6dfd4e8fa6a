//! VOEvent nodes (`pubsub#type` = the VOEvent 2.0 namespace): only valid
//! packets, IVORNs as item ids, idempotent republishing, new versions.

use super::*;
use crate::voevent::VOEVENT_NS;

const SWIFT: &str =
    include_str!("../../../../tests/data/voevents/SWIFT_bat_position_v2.0_example.xml");
const GAIA: &str = include_str!("../../../../tests/data/voevents/Gaia16aac.xml");
const SWIFT_IVORN: &str = "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729";

/// The sample without its XML declaration, ready to sit in an `<item/>`.
fn body(sample: &str) -> &str {
    let start = sample.find("<voe:VOEvent").unwrap();
    sample[start..].trim_end()
}

fn voevent_node(h: &mut Harness) {
    h.create_with(
        ALICE,
        "voevent/nasa.gsfc.gcn/SWIFT",
        &[("pubsub#type", VOEVENT_NS)],
    );
    h.subscribe(BOB, "voevent/nasa.gsfc.gcn/SWIFT").ok();
}

const NODE: &str = "voevent/nasa.gsfc.gcn/SWIFT";

#[test]
fn voevent_without_id_is_stored_under_its_ivorn() {
    let mut h = Harness::new();
    voevent_node(&mut h);
    let answer = h.publish(ALICE, NODE, None, body(SWIFT));
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{PS}\"><publish node=\"{NODE}\"><item id=\"{SWIFT_IVORN}\"/></publish></pubsub>"
        )
    );
    assert_eq!(answer.recipients(), ["bob@localhost"]);
    assert_eq!(h.item_ids(NODE), [SWIFT_IVORN]);
}

#[test]
fn delivered_voevent_is_the_published_packet() {
    let mut h = Harness::new();
    voevent_node(&mut h);
    let answer = h.publish(ALICE, NODE, None, body(GAIA));
    let message = &answer.notifications[0].message;
    let start = message.find("<voe:VOEvent").unwrap();
    let end = message.find("</voe:VOEvent>").unwrap() + "</voe:VOEvent>".len();
    // Canonically equal: the same tree as the publisher's.
    assert_eq!(
        canonical(&xml(&message[start..end])),
        canonical(&xml(body(GAIA)))
    );
}

#[test]
fn invalid_voevent_is_invalid_payload_with_the_reason() {
    let mut h = Harness::new();
    voevent_node(&mut h);
    let broken = body(SWIFT).replacen("role=\"observation\"", "role=\"rumour\"", 1);
    let answer = h.publish(ALICE, NODE, None, &broken);
    answer.assert_error(Condition::BadRequest, Some("invalid-payload"));
    assert_eq!(
        answer.error().text.as_deref(),
        Some("VOEvent role must be observation, prediction, utility or test, found \"rumour\"")
    );
    assert!(answer.command.is_none());
}

#[test]
fn non_voevent_payload_is_invalid_payload() {
    let mut h = Harness::new();
    voevent_node(&mut h);
    h.publish(ALICE, NODE, Some("x"), ENTRY)
        .assert_error(Condition::BadRequest, Some("invalid-payload"));
}

#[test]
fn item_id_other_than_the_ivorn_is_invalid_payload() {
    let mut h = Harness::new();
    voevent_node(&mut h);
    h.publish(ALICE, NODE, Some("mine"), body(SWIFT))
        .assert_error(Condition::BadRequest, Some("invalid-payload"));
}

#[test]
fn identical_republish_is_idempotent() {
    let mut h = Harness::new();
    voevent_node(&mut h);
    let first = h.publish(ALICE, NODE, None, body(SWIFT));
    let again = h.publish(ALICE, NODE, None, body(SWIFT));
    assert_eq!(again.ok_xml(), first.ok_xml());
    assert!(again.notifications.is_empty());
    assert_eq!(first.published.as_ref().map(|i| i.archive_id), Some(3));
    assert_eq!(again.published, None);
    assert_eq!(h.service.node(NODE).unwrap().archive.len(), 1);
    let explicit = h.publish(ALICE, NODE, Some(SWIFT_IVORN), body(SWIFT));
    assert_eq!(explicit.ok_xml(), first.ok_xml());
    assert!(explicit.notifications.is_empty());
}

#[test]
fn new_content_under_an_ivorn_is_a_new_version() {
    let mut h = Harness::new();
    voevent_node(&mut h);
    h.publish(ALICE, NODE, None, body(SWIFT)).ok();
    let revised = body(SWIFT).replacen("4622", "4623", 1);
    let answer = h.publish(ALICE, NODE, None, &revised);
    assert_eq!(answer.recipients(), ["bob@localhost"]);
    let node = h.service.node(NODE).unwrap();
    assert_eq!(h.item_ids(NODE), [SWIFT_IVORN]);
    assert_eq!(node.archive.len(), 2);
    assert!(node.items[SWIFT_IVORN].payload.contains("4623"));
}

#[test]
fn an_earlier_version_relayed_again_after_a_newer_one_is_a_duplicate() {
    // Two sites relaying one upstream's versions A, B may commit A, B, A, B.
    let mut h = Harness::new();
    voevent_node(&mut h);
    let revised = body(SWIFT).replacen("4622", "4623", 1);
    h.publish(ALICE, NODE, None, body(SWIFT)).ok();
    h.publish(ALICE, NODE, None, &revised).ok();
    let a_again = h.publish(ALICE, NODE, None, body(SWIFT));
    let b_again = h.publish(ALICE, NODE, None, &revised);
    assert_eq!(a_again.published, None);
    assert_eq!(b_again.published, None);
    assert!(a_again.notifications.is_empty() && b_again.notifications.is_empty());
    let node = h.service.node(NODE).unwrap();
    assert_eq!(node.archive.len(), 2);
    assert!(node.items[SWIFT_IVORN].payload.contains("4623"));
}

#[test]
fn versions_seen_survive_a_snapshot() {
    let mut h = Harness::new();
    voevent_node(&mut h);
    let revised = body(SWIFT).replacen("4622", "4623", 1);
    h.publish(ALICE, NODE, None, body(SWIFT)).ok();
    h.publish(ALICE, NODE, None, &revised).ok();
    let restored = PubsubService::from_snapshot(
        h.service.service_jid().clone(),
        *h.service.limits(),
        &h.service.to_snapshot(),
    )
    .unwrap();
    let node = restored.node(NODE).unwrap();
    // The first version is no longer current, only archived.
    assert!(node.has_version(SWIFT_IVORN, &node.archive[0].payload));
    assert_eq!(restored, h.service);
}

#[test]
fn auto_created_voevent_node_validates_the_first_packet() {
    let mut h = Harness::new();
    let options = form(
        "http://jabber.org/protocol/pubsub#publish-options",
        &[("pubsub#type", VOEVENT_NS)],
    );
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><publish node='v'><item>{ENTRY}</item></publish><publish-options>{options}</publish-options></pubsub>"),
    );
    answer.assert_error(Condition::BadRequest, Some("invalid-payload"));
    assert!(h.service.node("v").is_none());
    let request = with_payload(
        &format!(
            "<pubsub xmlns='{PS}'><publish node='v'><item/></publish><publish-options>{options}</publish-options></pubsub>"
        ),
        body(GAIA),
    );
    h.send("set", ALICE, request).ok();
    assert_eq!(h.item_ids("v"), ["ivo://gaia.cam.uk/alerts#Gaia16aac"]);
}

#[test]
fn node_that_became_a_voevent_node_refuses_an_unvalidated_publish_at_apply() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let iq = Element::new("iq", "jabber:client")
        .with_attr("type", "set")
        .with_child(xml(&format!(
            "<pubsub xmlns='{PS}'><publish node='n'><item id='a'>{ENTRY}</item></publish></pubsub>"
        )));
    let Handled::Propose(publish) = h.service.handle_iq(&full(ALICE), &iq, T0, &h.ctx) else {
        panic!("proposed");
    };
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#type", VOEVENT_NS)])
        ),
    )
    .ok();
    let error = h.apply(&publish).reply.unwrap_err();
    assert_eq!(
        (error.condition, error.app_name()),
        (Condition::BadRequest, Some("invalid-payload"))
    );
}

#[test]
fn other_nodes_accept_voevents_under_any_id() {
    let mut h = Harness::new();
    h.create(ALICE, "plain");
    h.publish(ALICE, "plain", Some("mine"), body(SWIFT)).ok();
    assert_eq!(h.item_ids("plain"), ["mine"]);
}

#[test]
fn bridge_publish_goes_to_the_stream_node_created_on_first_use() {
    let mut h = Harness::new();
    let root = xml(body(SWIFT));
    let command =
        PubsubService::voevent_publish(&jid("vtp@localhost"), &root, NODE.into(), None, T0)
            .unwrap();
    let outcome = h.apply(&command);
    assert_eq!(
        outcome.reply.unwrap().map(|e| e.to_xml()),
        Some(format!(
            "<pubsub xmlns=\"{PS}\"><publish node=\"{NODE}\"><item id=\"{SWIFT_IVORN}\"/></publish></pubsub>"
        ))
    );
    assert_eq!(
        h.service.node(NODE).unwrap().config.payload_type,
        VOEVENT_NS
    );
    // A retry of the same packet is idempotent.
    let again = h.apply(
        &PubsubService::voevent_publish(&jid("vtp@localhost"), &root, NODE.into(), None, T0 + 1)
            .unwrap(),
    );
    assert!(again.reply.is_ok() && again.notifications.is_empty());
    assert_eq!(h.service.node(NODE).unwrap().archive.len(), 1);
}

#[test]
fn a_packet_published_over_xmpp_and_relayed_over_vtp_is_one_version() {
    let mut h = Harness::new();
    h.create_with(
        ALICE,
        NODE,
        &[
            ("pubsub#type", VOEVENT_NS),
            ("pubsub#publish_model", "open"),
        ],
    );
    // The publisher undeclares the default namespace once, on the root;
    // the bridge's copy is serialized with `xmlns=""` on every child.
    let written = body(SWIFT).replacen("<voe:VOEvent", "<voe:VOEvent xmlns=''", 1);
    let request = as_sent(&format!(
        "<pubsub xmlns='{PS}'><publish node='{NODE}'><item>{written}</item></publish></pubsub>"
    ));
    h.send("set", ALICE, request).ok();
    let stored = h.service.node(NODE).unwrap().items[SWIFT_IVORN]
        .payload
        .clone();
    assert_eq!(&*stored, written);
    let relayed = PubsubService::voevent_publish(
        &jid("vtp@localhost"),
        &xml(body(SWIFT)),
        NODE.into(),
        None,
        T0,
    )
    .unwrap();
    let outcome = h.apply(&relayed);
    assert!(outcome.reply.is_ok() && outcome.notifications.is_empty());
    assert_eq!(h.service.node(NODE).unwrap().archive.len(), 1);
}

#[test]
fn bridge_publish_of_an_invalid_packet_is_refused_before_proposal() {
    let root = xml(&body(GAIA).replacen("version=\"2.0\"", "version=\"1.1\"", 1));
    let error = PubsubService::voevent_publish(&jid("vtp@localhost"), &root, NODE.into(), None, T0)
        .unwrap_err();
    assert_eq!(
        error,
        crate::voevent::InvalidVoEvent::Version(Some("1.1".into()))
    );
}

#[test]
fn publishing_to_a_missing_voevent_stream_node_creates_a_voevent_node() {
    let mut h = Harness::new();
    let answer = h.publish(ALICE, NODE, None, body(SWIFT));
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<pubsub xmlns=\"{PS}\"><publish node=\"{NODE}\"><item id=\"{SWIFT_IVORN}\"/></publish></pubsub>"
        )
    );
    h.publish(ALICE, NODE, None, "<not-a-voevent xmlns='urn:x'/>")
        .assert_error(Condition::BadRequest, Some("invalid-payload"));
}
