//! XEP-0313 queries on a node archive.

use super::*;
use crate::pubsub::datetime::format_micros;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";

/// Publishes a, b, c (archive ids 2, 3, 4) and retracts a (index 5).
fn history(h: &mut Harness) {
    h.create(ALICE, "n");
    for id in ["a", "b", "c"] {
        h.publish(ALICE, "n", Some(id), &format!("<p xmlns='urn:p'>{id}</p>"))
            .ok();
    }
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{PS}'><retract node='n'><item id='a'/></retract></pubsub>"),
    )
    .ok();
}

fn query(h: &mut Harness, from: &str, inner: &str) -> Answer {
    h.set(
        from,
        &format!("<query xmlns='{MAM}' node='n' queryid='q'>{inner}</query>"),
    )
}

fn ids(answer: &Answer) -> Vec<String> {
    answer
        .archive
        .iter()
        .map(|m| {
            let start = m.message.find(" id=\"").unwrap() + 5;
            let end = start + m.message[start..].find('"').unwrap();
            m.message[start..end].to_owned()
        })
        .collect()
}

#[test]
fn query_returns_history_including_retracted_items_then_fin() {
    let mut h = Harness::new();
    history(&mut h);
    let answer = query(&mut h, BOB, "");
    assert_eq!(ids(&answer), ["2", "3", "4"]);
    assert_eq!(answer.archive[0].recipients, [jid(BOB)]);
    assert_eq!(
        &*answer.archive[0].message,
        format!(
            "<result xmlns=\"{MAM}\" queryid=\"q\" id=\"2\"><forwarded xmlns=\"urn:xmpp:forward:0\"><delay xmlns=\"urn:xmpp:delay\" from=\"pubsub.localhost\" stamp=\"{}\"/><message xmlns=\"jabber:client\" type=\"headline\" from=\"pubsub.localhost\"><event xmlns=\"http://jabber.org/protocol/pubsub#event\"><items node=\"n\"><item id=\"a\" publisher=\"alice@localhost\"><p xmlns=\"urn:p\">a</p></item></items></event></message></forwarded></result>",
            format_micros(T0 + 2_000_000)
        )
    );
    assert_eq!(
        answer.ok_xml(),
        format!(
            "<fin xmlns=\"{MAM}\" complete=\"true\"><set xmlns=\"{RSM}\"><first index=\"0\">2</first><last>4</last><count>3</count></set></fin>"
        )
    );
}

#[test]
fn rsm_pages_forward_and_backward() {
    let mut h = Harness::new();
    history(&mut h);
    let first = query(
        &mut h,
        BOB,
        &format!("<set xmlns='{RSM}'><max>2</max></set>"),
    );
    assert_eq!(ids(&first), ["2", "3"]);
    assert!(first.ok_xml().contains("complete=\"false\""));
    let next = query(
        &mut h,
        BOB,
        &format!("<set xmlns='{RSM}'><max>2</max><after>3</after></set>"),
    );
    assert_eq!(ids(&next), ["4"]);
    assert!(next.ok_xml().contains("complete=\"true\""));
    let last = query(
        &mut h,
        BOB,
        &format!("<set xmlns='{RSM}'><max>1</max><before/></set>"),
    );
    assert_eq!(ids(&last), ["4"]);
    let before = query(
        &mut h,
        BOB,
        &format!("<set xmlns='{RSM}'><max>5</max><before>4</before></set>"),
    );
    assert_eq!(ids(&before), ["2", "3"]);
    assert!(before.ok_xml().contains("complete=\"true\""));
}

#[test]
fn resuming_after_an_id_not_in_this_archive_uses_its_order() {
    let mut h = Harness::new();
    history(&mut h);
    // Index 1 created the node: not an archive entry, still a resume point.
    let answer = query(
        &mut h,
        BOB,
        &format!("<set xmlns='{RSM}'><after>1</after></set>"),
    );
    assert_eq!(ids(&answer), ["2", "3", "4"]);
}

#[test]
fn non_numeric_rsm_id_is_item_not_found() {
    let mut h = Harness::new();
    history(&mut h);
    query(
        &mut h,
        BOB,
        &format!("<set xmlns='{RSM}'><after>abc</after></set>"),
    )
    .assert_error(Condition::ItemNotFound, None);
}

#[test]
fn form_filters_by_time_and_id() {
    let mut h = Harness::new();
    history(&mut h);
    let start = format_micros(T0 + 3_000_000);
    let answer = query(&mut h, BOB, &form(MAM, &[("start", &start)]));
    assert_eq!(ids(&answer), ["3", "4"]);
    let end = format_micros(T0 + 3_000_000);
    assert_eq!(
        ids(&query(&mut h, BOB, &form(MAM, &[("end", &end)]))),
        ["2", "3"]
    );
    assert_eq!(
        ids(&query(&mut h, BOB, &form(MAM, &[("after-id", "2")]))),
        ["3", "4"]
    );
    assert_eq!(
        ids(&query(&mut h, BOB, &form(MAM, &[("before-id", "3")]))),
        ["2"]
    );
}

#[test]
fn malformed_time_filter_is_bad_request() {
    let mut h = Harness::new();
    history(&mut h);
    query(&mut h, BOB, &form(MAM, &[("start", "yesterday")]))
        .assert_error(Condition::BadRequest, None);
}

#[test]
fn unsupported_filter_is_feature_not_implemented() {
    let mut h = Harness::new();
    history(&mut h);
    query(&mut h, BOB, &form(MAM, &[("with", "bob@localhost")]))
        .assert_error(Condition::FeatureNotImplemented, None);
}

#[test]
fn replaced_items_keep_every_version_in_the_archive() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.publish(ALICE, "n", Some("x"), "<p xmlns='urn:p'>1</p>")
        .ok();
    h.publish(ALICE, "n", Some("x"), "<p xmlns='urn:p'>2</p>")
        .ok();
    let answer = query(&mut h, BOB, "");
    assert_eq!(ids(&answer), ["2", "3"]);
    assert_eq!(h.item_ids("n"), ["x"]);
}

#[test]
fn archive_is_trimmed_to_its_limit() {
    let mut h = Harness::with_limits(PubsubLimits {
        archive_entries_per_node_max: 2,
        ..PubsubLimits::default()
    });
    history(&mut h);
    assert_eq!(ids(&query(&mut h, BOB, "")), ["3", "4"]);
}

/// Every payload below archives the same number of bytes.
fn payload(id: &str) -> String {
    format!("<p xmlns='urn:p'>{id}</p>")
}

/// [`Item::archived_bytes`] of an item published with [`payload`].
fn entry_bytes() -> u64 {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    h.publish(ALICE, "n", Some("a"), &payload("a")).ok();
    h.service.archive_bytes()
}

/// Harness whose archives hold `entries` entries of [`entry_bytes`] at
/// most, all nodes together.
fn site_bound(entries: u64) -> Harness {
    Harness::with_limits(PubsubLimits {
        archive_bytes_max: entries * entry_bytes(),
        ..PubsubLimits::default()
    })
}

/// Each node's archive ids.
fn archive_ids(service: &PubsubService) -> Vec<(String, Vec<u64>)> {
    service
        .nodes()
        .map(|n| {
            (
                n.id.clone(),
                n.archive.iter().map(|i| i.archive_id).collect(),
            )
        })
        .collect()
}

/// Creates nodes m and n, then publishes a, b, c, d to n, m, n, m
/// (archive ids 3 to 6); returns what each publish dropped.
fn interleaved(h: &mut Harness) -> Vec<ArchiveDrops> {
    h.create(ALICE, "m");
    h.create(ALICE, "n");
    [("n", "a"), ("m", "b"), ("n", "c"), ("m", "d")]
        .into_iter()
        .map(|(node, id)| {
            h.publish(ALICE, node, Some(id), &payload(id))
                .archive_dropped
        })
        .collect()
}

#[test]
fn the_site_bound_drops_the_oldest_entries_whichever_node_holds_them() {
    let mut h = site_bound(3);
    let dropped = interleaved(&mut h);
    assert_eq!(
        archive_ids(&h.service),
        [("m".to_owned(), vec![4, 6]), ("n".to_owned(), vec![5])]
    );
    let site_limit: Vec<u64> = dropped.iter().map(|d| d.site_limit).collect();
    assert_eq!(site_limit, [0, 0, 0, 1]);
    assert!(dropped.iter().all(|d| d.node_limit == 0));
    assert_eq!(h.service.archive_entries(), 3);
    assert_eq!(h.service.archive_bytes(), 3 * entry_bytes());
    // The current item stays: only its archived history was dropped.
    assert_eq!(h.item_ids("n"), ["a", "c"]);
    let answer = h.set(BOB, &format!("<query xmlns='{MAM}' node='n' queryid='q'/>"));
    assert_eq!(ids(&answer), ["5"]);
}

#[test]
fn a_deleted_node_gives_back_its_share_of_the_site_bound() {
    let mut h = site_bound(2);
    h.create(ALICE, "n");
    h.publish(ALICE, "n", Some("a"), &payload("a")).ok();
    h.publish(ALICE, "n", Some("b"), &payload("b")).ok();
    h.set(
        ALICE,
        &format!("<pubsub xmlns='{OWNER}'><delete node='n'/></pubsub>"),
    )
    .ok();
    assert_eq!(
        (h.service.archive_entries(), h.service.archive_bytes()),
        (0, 0)
    );
    h.create(ALICE, "m");
    for id in ["c", "d"] {
        let answer = h.publish(ALICE, "m", Some(id), &payload(id));
        assert_eq!(answer.archive_dropped, ArchiveDrops::default());
    }
    assert_eq!(archive_ids(&h.service), [("m".to_owned(), vec![6, 7])]);
}

#[test]
fn the_node_bound_counts_what_it_drops() {
    let mut h = Harness::with_limits(PubsubLimits {
        archive_entries_per_node_max: 2,
        ..PubsubLimits::default()
    });
    h.create(ALICE, "n");
    let node_limit: Vec<u64> = ["a", "b", "c"]
        .into_iter()
        .map(|id| {
            h.publish(ALICE, "n", Some(id), &payload(id))
                .archive_dropped
                .node_limit
        })
        .collect();
    assert_eq!(node_limit, [0, 0, 1]);
    assert_eq!(h.service.archive_entries(), 2);
}

#[test]
fn a_snapshot_restored_under_smaller_bounds_keeps_the_newest_entries() {
    let mut h = Harness::new();
    h.create(ALICE, "m");
    h.create(ALICE, "n");
    // Archive ids 3 to 8, alternating between n and m.
    for (node, id) in [
        ("n", "a"),
        ("m", "b"),
        ("n", "c"),
        ("m", "d"),
        ("n", "e"),
        ("m", "f"),
    ] {
        h.publish(ALICE, node, Some(id), &payload(id)).ok();
    }
    let smaller = PubsubLimits {
        archive_entries_per_node_max: 2,
        archive_bytes_max: 3 * entry_bytes(),
        ..PubsubLimits::default()
    };
    let restored =
        PubsubService::from_snapshot(bare("pubsub.localhost"), smaller, &h.service.to_snapshot())
            .unwrap();
    // Per node: n keeps 5 and 7, m keeps 6 and 8; then the site's oldest, 5.
    assert_eq!(
        archive_ids(&restored),
        [("m".to_owned(), vec![6, 8]), ("n".to_owned(), vec![7])]
    );
    assert_eq!(restored.archive_entries(), 3);
    assert_eq!(restored.archive_bytes(), 3 * entry_bytes());
}

#[test]
fn query_of_a_missing_node_is_item_not_found() {
    let mut h = Harness::new();
    query(&mut h, BOB, "").assert_error(Condition::ItemNotFound, None);
}

#[test]
fn query_without_node_is_nodeid_required() {
    let mut h = Harness::new();
    h.set(BOB, &format!("<query xmlns='{MAM}'/>"))
        .assert_error(Condition::BadRequest, Some("nodeid-required"));
}

#[test]
fn query_obeys_the_access_model() {
    let mut h = Harness::new();
    h.create_with(ALICE, "n", &[("pubsub#access_model", "whitelist")]);
    query(&mut h, BOB, "").assert_error(Condition::NotAllowed, Some("closed-node"));
}

#[test]
fn query_fields_are_a_mam_form() {
    let mut h = Harness::new();
    h.create(ALICE, "n");
    let xml = h
        .get(BOB, &format!("<query xmlns='{MAM}' node='n'/>"))
        .ok_xml();
    assert!(
        xml.starts_with(&format!(
            "<query xmlns=\"{MAM}\" node=\"n\"><x xmlns=\"jabber:x:data\" type=\"form\">"
        )),
        "{xml}"
    );
    for var in ["start", "end", "after-id", "before-id"] {
        assert!(xml.contains(&format!("var=\"{var}\"")), "{var}");
    }
}

/// A node whose archive kept 2 entries of 3: ids 2 and 3 of a, b, c were
/// published at 2, 3 and 4, and 2 was dropped.
fn cut_history() -> Harness {
    let mut h = Harness::with_limits(PubsubLimits {
        archive_entries_per_node_max: 2,
        ..PubsubLimits::default()
    });
    h.create(ALICE, "n");
    for id in ["a", "b", "c"] {
        h.publish(ALICE, "n", Some(id), &payload(id)).ok();
    }
    h
}

fn resume(h: &mut Harness, after_id: &str) -> Answer {
    query(h, BOB, &form(MAM, &[("after-id", after_id)]))
}

#[test]
fn resuming_past_dropped_entries_is_item_not_found_naming_the_oldest_kept() {
    let mut h = cut_history();
    for after in ["0", "1"] {
        let answer = resume(&mut h, after);
        answer.assert_error(Condition::ItemNotFound, None);
        let text = answer.error().text.clone().unwrap_or_default();
        assert!(text.contains("the oldest kept is 3"), "{text}");
    }
    // RSM paging after a dropped id is refused alike.
    query(
        &mut h,
        BOB,
        &format!("<set xmlns='{RSM}'><after>1</after></set>"),
    )
    .assert_error(Condition::ItemNotFound, None);
    // From the last entry dropped on, nothing is missing.
    assert_eq!(ids(&resume(&mut h, "2")), ["3", "4"]);
    assert_eq!(ids(&resume(&mut h, "3")), ["4"]);
    // A query that does not resume reads what is kept.
    assert_eq!(ids(&query(&mut h, BOB, "")), ["3", "4"]);
}

#[test]
fn a_snapshot_keeps_where_the_archive_was_cut() {
    use prost::Message as _;
    let h = cut_history();
    let bytes = h.service.to_snapshot();
    let decoded = proto::Snapshot::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded.nodes[0].archive_dropped_through, 2);
    assert_eq!(decoded.encode_to_vec(), bytes);
    let service =
        PubsubService::from_snapshot(bare("pubsub.localhost"), *h.service.limits(), &bytes)
            .unwrap();
    assert_eq!(service, h.service);
    let mut restored = Harness {
        service,
        ..Harness::new()
    };
    resume(&mut restored, "1").assert_error(Condition::ItemNotFound, None);
}

#[test]
fn the_leaders_expiry_drops_entries_past_the_age_bound_with_no_publish() {
    let mut h = Harness::with_limits(PubsubLimits {
        archive_age_max_seconds: 2,
        ..PubsubLimits::default()
    });
    // Published 3, 4, 5 and 6 s after T0; the last publish dropped the
    // first, so the oldest is entry 4, past the bound just after 6 s.
    interleaved(&mut h);
    let entry_4_due = T0 + 6_000_001;
    assert_eq!(h.service.next_expiry_micros(), Some(entry_4_due));
    assert_eq!(h.expire(entry_4_due - 1).archive_dropped.age_limit, 0);
    assert_eq!(h.expire(entry_4_due).archive_dropped.age_limit, 1);
    assert_eq!(
        archive_ids(&h.service),
        [("m".to_owned(), vec![6]), ("n".to_owned(), vec![5])]
    );
    assert_eq!(h.expire(T0 + 9_000_000).archive_dropped.age_limit, 2);
    assert_eq!(h.service.archive_entries(), 0);
    assert_eq!(h.service.next_expiry_micros(), None);
    // The current items stay: only their archived history expired.
    assert_eq!(h.item_ids("m"), ["b", "d"]);
    resume(&mut h, "3").assert_error(Condition::ItemNotFound, None);
}

#[test]
fn entries_older_than_the_age_bound_go_at_the_next_publish_oldest_first() {
    let mut h = Harness::with_limits(PubsubLimits {
        archive_age_max_seconds: 2,
        ..PubsubLimits::default()
    });
    // A request a second: published 3, 4, 5 and 6 s after T0.
    let age_limit: Vec<u64> = interleaved(&mut h).iter().map(|d| d.age_limit).collect();
    // At 6 s only what was published before 4 s is too old.
    assert_eq!(age_limit, [0, 0, 0, 1]);
    assert_eq!(
        archive_ids(&h.service),
        [("m".to_owned(), vec![4, 6]), ("n".to_owned(), vec![5])]
    );
    resume(&mut h, "2").assert_error(Condition::ItemNotFound, None);
}
