//! XEP-0060 §8.1–§8.5: create, configure, default, delete, purge; item
//! expiry; accounts; determinism and snapshots.

use super::*;
use crate::pubsub::model::MaxItems;

#[test]
fn create_named_node_makes_the_creator_owner() {
    let mut h = Harness::new();
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><create node='princely_musings'/></pubsub>"),
    );
    assert_eq!(
        answer.ok_xml(),
        format!("<pubsub xmlns=\"{PS}\"><create node=\"princely_musings\"/></pubsub>")
    );
    let node = h.service.node("princely_musings").unwrap();
    assert_eq!(node.affiliation(&jid(ALICE)), Affiliation::Owner);
    assert_eq!(node.created_micros, T0 + 1_000_000);
}

#[test]
fn create_instant_node_is_named_from_the_log_index() {
    let mut h = Harness::new();
    h.create(ALICE, "first");
    let answer = h.set(ALICE, &format!("<pubsub xmlns='{PS}'><create/></pubsub>"));
    assert_eq!(
        answer.ok_xml(),
        format!("<pubsub xmlns=\"{PS}\"><create node=\"instant-0000000000000002\"/></pubsub>")
    );
}

#[test]
fn create_existing_node_is_conflict() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        BOB,
        &format!("<pubsub xmlns='{PS}'><create node='n'/></pubsub>"),
    )
    .assert_error(Condition::Conflict, None);
}

#[test]
fn conflict_is_decided_at_apply_for_racing_creates() {
    let mut h = Harness::new();
    let iq = |from: &str| {
        h.service.handle_iq(
            &full(from),
            &Element::new("iq", "jabber:client")
                .with_attr("type", "set")
                .with_child(xml(&format!(
                    "<pubsub xmlns='{PS}'><create node='n'/></pubsub>"
                ))),
            T0,
            &h.ctx,
        )
    };
    let (Handled::Propose(first), Handled::Propose(second)) = (iq(ALICE), iq(BOB)) else {
        panic!("both creates are proposed");
    };
    assert!(h.apply(&first).reply.is_ok());
    let outcome = h.apply(&second);
    assert_eq!(outcome.reply.unwrap_err().condition, Condition::Conflict);
    assert_eq!(
        h.service.node("n").unwrap().affiliation(&jid(ALICE)),
        Affiliation::Owner
    );
}

#[test]
fn create_by_a_remote_user_is_forbidden() {
    let mut h = Harness::new();
    h.set(
        EVE,
        &format!("<pubsub xmlns='{PS}'><create node='n'/></pubsub>"),
    )
    .assert_error(Condition::Forbidden, None);
}

#[test]
fn create_and_configure_applies_the_form() {
    let mut h = Harness::new();
    h.create_with(
        ALICE,
        "n",
        &[
            ("pubsub#access_model", "whitelist"),
            ("pubsub#max_items", "max"),
            ("pubsub#title", "T"),
        ],
    );
    let config = &h.service.node("n").unwrap().config;
    assert_eq!(config.access_model, AccessModel::Whitelist);
    assert_eq!(config.max_items, MaxItems::Max);
    assert_eq!(config.title, "T");
}

#[test]
fn create_with_an_invalid_configuration_is_not_acceptable() {
    let mut h = Harness::new();
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{PS}'><create node='n'/><configure>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#max_items", "lots")])
        ),
    )
    .assert_error(Condition::NotAcceptable, None);
    assert!(h.service.node("n").is_none());
}

#[test]
fn create_beyond_nodes_max_is_policy_violation() {
    let mut h = Harness::with_limits(PubsubLimits {
        nodes_max: 1,
        ..PubsubLimits::default()
    });
    h.create(ALICE, "a");
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><create node='b'/></pubsub>"),
    )
    .assert_error(Condition::PolicyViolation, None);
}

#[test]
fn create_with_a_too_long_node_id_is_not_acceptable() {
    let mut h = Harness::with_limits(PubsubLimits {
        node_id_bytes_max: 4,
        ..PubsubLimits::default()
    });
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><create node='abcde'/></pubsub>"),
    )
    .assert_error(Condition::NotAcceptable, None);
}

#[test]
fn configure_get_returns_the_node_config_form() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let xml = h
        .get(
            ALICE,
            &format!("<pubsub xmlns='{OWNER}'><configure node='n'/></pubsub>"),
        )
        .ok_xml();
    assert!(xml.starts_with(&format!("<pubsub xmlns=\"{OWNER}\"><configure node=\"n\"><x xmlns=\"jabber:x:data\" type=\"form\">")), "{xml}");
    assert!(
        xml.contains("<value>http://jabber.org/protocol/pubsub#node_config</value>"),
        "{xml}"
    );
    assert!(xml.contains("<field var=\"pubsub#max_items\" type=\"text-single\" label=\"Maximum number of items to persist (or max)\"><value>1000</value>"), "{xml}");
}

#[test]
fn configure_by_a_non_owner_is_forbidden() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.get(
        BOB,
        &format!("<pubsub xmlns='{OWNER}'><configure node='n'/></pubsub>"),
    )
    .assert_error(Condition::Forbidden, None);
    h.set(
        BOB,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[])
        ),
    )
    .assert_error(Condition::Forbidden, None);
}

#[test]
fn configure_of_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.get(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><configure node='n'/></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn configure_without_node_is_nodeid_required() {
    let mut h = Harness::new();
    h.get(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><configure/></pubsub>"),
    )
    .assert_error(Condition::BadRequest, Some("nodeid-required"));
}

#[test]
fn configure_set_notifies_subscribers_when_notify_config_is_set() {
    let mut h = Harness::new();
    h.create_with(
        ALICE,
        "n",
        &[
            ("pubsub#notify_config", "1"),
            ("pubsub#deliver_payloads", "0"),
        ],
    );
    h.subscribe(BOB, "n").ok();
    let answer = h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#title", "New")])
        ),
    );
    assert_eq!(answer.ok(), None);
    assert_eq!(
        answer.sent(),
        vec![(
            vec!["bob@localhost".to_owned()],
            "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><configuration node=\"n\"/></event>".to_owned()
        )]
    );
    assert_eq!(h.service.node("n").unwrap().config.title, "New");
}

#[test]
fn configure_set_is_silent_without_notify_config() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    let answer = h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#title", "New")])
        ),
    );
    assert!(answer.notifications.is_empty());
}

#[test]
fn cancelled_configuration_changes_nothing() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><configure node='n'><x xmlns='jabber:x:data' type='cancel'/></configure></pubsub>"),
    );
    assert_eq!(answer.ok(), None);
    assert!(answer.command.is_none());
}

#[test]
fn lowering_max_items_drops_the_oldest_items() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    for id in ["a", "b", "c"] {
        h.publish(ALICE, "n", Some(id), ENTRY).ok();
    }
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#max_items", "2")])
        ),
    )
    .ok();
    assert_eq!(h.item_ids("n"), ["b", "c"]);
}

#[test]
fn max_items_above_the_cap_is_not_acceptable() {
    let mut h = Harness::with_limits(PubsubLimits {
        items_per_node_max: 10,
        ..PubsubLimits::default()
    });
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#max_items", "11")])
        ),
    )
    .assert_error(Condition::NotAcceptable, None);
}

#[test]
fn default_node_configuration_is_a_form() {
    let mut h = Harness::new();
    let xml = h
        .get(
            ALICE,
            &format!("<pubsub xmlns='{OWNER}'><default/></pubsub>"),
        )
        .ok_xml();
    assert!(
        xml.starts_with(&format!(
            "<pubsub xmlns=\"{OWNER}\"><default><x xmlns=\"jabber:x:data\" type=\"form\">"
        )),
        "{xml}"
    );
    assert!(xml.contains("<field var=\"pubsub#access_model\" type=\"list-single\" label=\"Who may subscribe and retrieve items\"><value>open</value>"), "{xml}");
}

#[test]
fn delete_notifies_subscribers_with_the_redirect() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.subscribe_jid(CAROL, CAROL, "n").ok();
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><delete node='n'><redirect uri='xmpp:pubsub.localhost?;node=m'/></delete></pubsub>"),
    );
    assert_eq!(answer.ok(), None);
    assert_eq!(
        answer.sent(),
        vec![(
            vec!["bob@localhost".to_owned(), "carol@localhost/lab".to_owned()],
            "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><delete node=\"n\"><redirect uri=\"xmpp:pubsub.localhost?;node=m\"/></delete></event>".to_owned()
        )]
    );
    assert!(h.service.node("n").is_none());
}

#[test]
fn delete_is_silent_without_notify_delete() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#notify_delete", "0")]);
    h.subscribe(BOB, "n").ok();
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><delete node='n'/></pubsub>"),
    );
    assert!(answer.notifications.is_empty());
}

#[test]
fn delete_by_a_non_owner_is_forbidden() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        BOB,
        &format!("<pubsub xmlns='{OWNER}'><delete node='n'/></pubsub>"),
    )
    .assert_error(Condition::Forbidden, None);
}

#[test]
fn delete_of_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><delete node='n'/></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn purge_removes_every_item_and_notifies() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.subscribe(BOB, "n").ok();
    h.publish(ALICE, "n", Some("a"), ENTRY).ok();
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><purge node='n'/></pubsub>"),
    );
    assert_eq!(
        answer.sent(),
        vec![(
            vec!["bob@localhost".to_owned()],
            "<event xmlns=\"http://jabber.org/protocol/pubsub#event\"><purge node=\"n\"/></event>"
                .to_owned()
        )]
    );
    assert!(h.item_ids("n").is_empty());
}

#[test]
fn purge_by_a_non_owner_is_forbidden() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set_affiliation(ALICE, "n", "bob@localhost", "publisher");
    h.set(
        BOB,
        &format!("<pubsub xmlns='{OWNER}'><purge node='n'/></pubsub>"),
    )
    .assert_error(Condition::Forbidden, None);
}

#[test]
fn purge_of_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><purge node='n'/></pubsub>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn purge_of_a_transient_node_is_unsupported_persistent_items() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#persist_items", "0")]);
    let answer = h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><purge node='n'/></pubsub>"),
    );
    answer.assert_error(Condition::FeatureNotImplemented, Some("unsupported"));
    assert_eq!(
        answer.error().app.as_ref().and_then(|a| a.attr("feature")),
        Some("persistent-items")
    );
}

#[test]
fn expired_items_are_removed_by_the_leaders_command() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#item_expire", "60")]);
    h.publish(ALICE, "n", Some("old"), ENTRY).ok();
    let published = h.now;
    h.now += 30_000_000;
    h.publish(ALICE, "n", Some("new"), ENTRY).ok();
    assert_eq!(h.service.next_expiry_micros(), Some(published + 60_000_000));
    let outcome = h.expire(published + 60_000_000);
    assert!(outcome.reply.is_ok() && outcome.notifications.is_empty());
    assert_eq!(h.item_ids("n"), ["new"]);
    // History stays: the archive still holds both publishes.
    assert_eq!(h.service.node("n").unwrap().archive.len(), 2);
}

#[test]
fn accounts_are_added_once_and_removed() {
    let mut h = Harness::new();
    let add = Command {
        actor: "admin@localhost".into(),
        timestamp_micros: T0,
        op: Some(Op::AddAccount(proto::AddAccount {
            username: "bob".into(),
            credentials: vec![1, 2, 3],
        })),
    };
    assert!(h.apply(&add).reply.is_ok());
    assert_eq!(h.service.account("bob"), Some(&[1u8, 2, 3][..]));
    assert_eq!(
        h.apply(&add).reply.unwrap_err().condition,
        Condition::Conflict
    );
    let remove = Command {
        op: Some(Op::RemoveAccount(proto::RemoveAccount {
            username: "bob".into(),
        })),
        ..add
    };
    assert!(h.apply(&remove).reply.is_ok());
    assert_eq!(h.service.account("bob"), None);
    assert_eq!(
        h.apply(&remove).reply.unwrap_err().condition,
        Condition::ItemNotFound
    );
}

/// Drives a scenario touching every kind of state and returns the
/// commands it proposed.
fn scenario(h: &mut Harness) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut run = |answer: Answer| commands.extend(answer.command);
    run(h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><create node='n'/></pubsub>"),
    ));
    run(h.subscribe(BOB, "n"));
    run(h.subscribe_jid(CAROL, CAROL, "n"));
    run(h.publish(ALICE, "n", Some("a"), ENTRY));
    run(h.publish(ALICE, "n", None, ENTRY));
    run(h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub>"),
    ));
    h.set_affiliation(ALICE, "n", "carol@localhost", "publisher");
    commands
}

#[test]
fn applying_the_same_commands_gives_the_same_state_and_outcomes() {
    let mut leader = Harness::new();
    let commands = scenario(&mut leader);
    let mut follower = Harness::new();
    let mut replayed = Harness::new();
    for command in &commands {
        let a = follower.apply(command);
        let b = replayed.apply(command);
        assert_eq!(a, b);
    }
    assert_eq!(follower.service, replayed.service);
    assert_eq!(
        follower.service.node("n"),
        {
            let mut fresh = Harness::new();
            for command in &commands {
                fresh.apply(command);
            }
            fresh.service.node("n").cloned()
        }
        .as_ref()
    );
}

#[test]
fn snapshot_restores_the_same_state() {
    let mut h = Harness::new();
    scenario(&mut h);
    h.create_with(
        ALICE,
        "cfg",
        &[
            ("pubsub#max_items", "max"),
            ("pubsub#access_model", "authorize"),
        ],
    );
    let bytes = h.service.to_snapshot();
    let restored =
        PubsubService::from_snapshot(bare("pubsub.localhost"), PubsubLimits::default(), &bytes)
            .unwrap();
    assert_eq!(restored, h.service);
    assert_eq!(restored.last_index(), h.index);
}

#[test]
fn encodes_as_prost_does() {
    use prost::Message as _;
    let mut h = Harness::new();
    scenario(&mut h);
    h.create(ALICE, "empty");
    h.publish(
        ALICE,
        "n",
        Some("c"),
        "<entry xmlns='urn:x'>&lt;é&gt;</entry>",
    );
    h.apply(&Command {
        actor: "pubsub.localhost".into(),
        timestamp_micros: T0,
        op: Some(Op::AddAccount(proto::AddAccount {
            username: "dave".into(),
            credentials: vec![1, 2, 3],
        })),
    });
    let bytes = h.service.to_snapshot();
    let decoded = proto::Snapshot::decode(bytes.as_slice()).unwrap();
    // Every part of a snapshot is in it, so each is compared.
    assert_eq!(decoded.nodes.len(), 2);
    assert!(
        decoded
            .nodes
            .iter()
            .any(|n| n.items.len() == 2 && n.archive.len() == 3)
    );
    assert_eq!(decoded.accounts.len(), 1);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn a_snapshot_restores_as_prost_reads_it_whatever_its_length() {
    use prost::Message as _;
    let mut h = Harness::new();
    scenario(&mut h);
    let bytes = h.service.to_snapshot();
    // Every prefix: the restore fails where prost's decode does, and never
    // panics; where both read it, they read the same state.
    for len in 0..=bytes.len() {
        let prefix = &bytes[..len];
        let restored =
            PubsubService::from_snapshot(bare("pubsub.localhost"), PubsubLimits::default(), prefix);
        let decoded = proto::Snapshot::decode(prefix);
        assert_eq!(restored.is_ok(), decoded.is_ok(), "prefix of {len} bytes");
        if let (Ok(restored), Ok(decoded)) = (restored, decoded) {
            let nodes: Vec<&str> = restored.nodes().map(|n| n.id.as_str()).collect();
            let expected: Vec<&str> = decoded.nodes.iter().map(|n| n.node.as_str()).collect();
            assert_eq!(nodes, expected, "prefix of {len} bytes");
        }
    }
}

#[test]
fn fields_of_a_later_version_are_skipped_on_restore() {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut h = Harness::new();
    scenario(&mut h);
    let mut bytes = h.service.to_snapshot();
    // A varint, a 64-bit and a length-delimited field no version has yet.
    encode_key(15, WireType::Varint, &mut bytes);
    encode_varint(300, &mut bytes);
    encode_key(16, WireType::SixtyFourBit, &mut bytes);
    bytes.extend_from_slice(&7u64.to_le_bytes());
    encode_key(17, WireType::LengthDelimited, &mut bytes);
    encode_varint(3, &mut bytes);
    bytes.extend_from_slice(b"new");
    let restored =
        PubsubService::from_snapshot(bare("pubsub.localhost"), PubsubLimits::default(), &bytes)
            .unwrap();
    assert_eq!(restored, h.service);
}

#[test]
fn a_known_field_of_the_wrong_type_is_an_error() {
    use prost::encoding::{WireType, encode_key};
    let mut bytes = Vec::new();
    // `nodes` as a varint.
    encode_key(2, WireType::Varint, &mut bytes);
    bytes.push(1);
    let result =
        PubsubService::from_snapshot(bare("pubsub.localhost"), PubsubLimits::default(), &bytes);
    assert!(
        matches!(&result, Err(SnapshotError::Malformed(text)) if text.contains("field 2")),
        "{result:?}"
    );
}

#[test]
fn garbage_snapshot_is_an_error() {
    let result = PubsubService::from_snapshot(
        bare("pubsub.localhost"),
        PubsubLimits::default(),
        &[0xff, 0xff, 0xff],
    );
    assert!(matches!(result, Err(SnapshotError::Decode(_))));
}

#[test]
fn command_with_a_malformed_actor_is_refused() {
    let mut h = Harness::new();
    let outcome = h.apply(&Command {
        actor: "@@".into(),
        timestamp_micros: T0,
        op: Some(Op::Purge(proto::Purge { node: "n".into() })),
    });
    assert_eq!(
        outcome.reply.unwrap_err().condition,
        Condition::JidMalformed
    );
}

#[test]
fn turning_off_presence_based_delivery_is_not_acceptable() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#presence_based_delivery", "0")])
        ),
    )
    .assert_error(Condition::NotAcceptable, None);
    h.set(
        ALICE,
        &format!(
            "<pubsub xmlns='{OWNER}'><configure node='n'>{}</configure></pubsub>",
            form(NODE_CONFIG_FORM, &[("pubsub#presence_based_delivery", "1")])
        ),
    )
    .ok();
}
