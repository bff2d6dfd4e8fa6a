//! XEP-0313 catch-up on a pubsub node of a real node: archive ids strictly
//! increase in publication order, RSM pages with `after` walk the whole
//! archive exactly once, and `start`/`end` select by publication time.

use vomesh_broker::client::Client;
use vomesh_broker::xml::Element;
use vomesh_tests::node::TestNode;
use vomesh_tests::pubsub::{
    RSM_NS, alert, archive_id, archive_page, archive_query_iq, create_iq, error_of, publish,
    request,
};

const NODE: &str = "alerts";
const ITEMS: usize = 7;

/// A node with `ITEMS` items `i1`… published by alice, and alice's session.
async fn node_with_items() -> (TestNode, Client) {
    let node = TestNode::start();
    node.add_user("alice", "wonderland");
    let mut alice = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(&mut alice, create_iq(NODE, &[("pubsub#max_items", "max")])).await;
    for n in 1..=ITEMS {
        let id = format!("i{n}");
        let published = publish(&mut alice, NODE, Some(&id), alert(&format!("event {n}"))).await;
        assert_eq!(published, id);
    }
    (node, alice)
}

fn ids(items: &[vomesh_broker::commands::ReceivedItem]) -> Vec<&str> {
    items.iter().map(|item| item.item_id.as_str()).collect()
}

fn rsm_last(fin: &Element) -> Option<String> {
    fin.child("set", RSM_NS)
        .and_then(|set| set.child("last", RSM_NS))
        .map(Element::text)
}

fn complete(fin: &Element) -> bool {
    matches!(fin.attr("complete"), Some("true" | "1"))
}

#[tokio::test]
async fn archive_ids_strictly_increase_in_publication_order() {
    let (_node, mut alice) = node_with_items().await;
    let (items, fin) = archive_page(&mut alice, NODE, &[], &[]).await;
    let expected: Vec<String> = (1..=ITEMS).map(|n| format!("i{n}")).collect();
    assert_eq!(ids(&items), expected);
    assert!(
        items
            .windows(2)
            .all(|w| archive_id(&w[0]) < archive_id(&w[1])),
        "{items:?}"
    );
    for (n, item) in items.iter().enumerate() {
        assert_eq!(
            item.payload.as_ref().map(Element::to_xml),
            Some(alert(&format!("event {}", n + 1)).to_xml())
        );
        assert!(item.stamp.is_some(), "a delay stamp on {item:?}");
    }
    assert!(complete(&fin), "{}", fin.to_xml());
    assert_eq!(
        rsm_last(&fin).as_deref(),
        items.last().and_then(|i| i.archive_id.as_deref())
    );
}

#[tokio::test]
async fn rsm_pages_after_the_last_id_walk_the_archive_once() {
    let (_node, mut alice) = node_with_items().await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut rsm = vec![("max", "3".to_owned())];
        if let Some(after) = &after {
            rsm.push(("after", after.clone()));
        }
        let rsm: Vec<(&str, &str)> = rsm.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (items, fin) = archive_page(&mut alice, NODE, &[], &rsm).await;
        pages += 1;
        assert!(items.len() <= 3, "a page holds at most max items");
        seen.extend(items);
        if complete(&fin) {
            break;
        }
        after = rsm_last(&fin);
        assert!(after.is_some(), "an incomplete page names its last id");
        assert!(pages < 10, "paging does not end: {}", fin.to_xml());
    }
    assert_eq!(pages, 3, "7 items in pages of 3");
    let expected: Vec<String> = (1..=ITEMS).map(|n| format!("i{n}")).collect();
    assert_eq!(ids(&seen), expected);

    // XEP-0059 §2.5: an empty <before/> asks for the last page.
    let (last_page, _) = archive_page(&mut alice, NODE, &[], &[("max", "3"), ("before", "")]).await;
    assert_eq!(ids(&last_page), ["i5", "i6", "i7"]);
}

#[tokio::test]
async fn catch_up_after_an_archive_id_returns_only_what_followed() {
    let (node, mut alice) = node_with_items().await;
    let (all, _) = archive_page(&mut alice, NODE, &[], &[]).await;
    let seen_up_to = all[2].archive_id.clone().expect("an archive id");

    // A subscriber that saw i3 comes back on a new session.
    node.add_user("bob", "builder");
    let mut bob = Client::connect(&node.client_config("bob", "builder"))
        .await
        .expect("bob logs in");
    let (missed, fin) = archive_page(&mut bob, NODE, &[], &[("after", &seen_up_to)]).await;
    assert_eq!(ids(&missed), ["i4", "i5", "i6", "i7"]);
    assert_eq!(
        missed,
        all[3..],
        "the same archive ids, stamps and payloads"
    );
    assert!(complete(&fin));

    // `after-id` (XEP-0313 §4.1.1 form field) means the same.
    let (missed_by_field, _) =
        archive_page(&mut bob, NODE, &[("after-id", &seen_up_to)], &[]).await;
    assert_eq!(missed_by_field, missed);
}

#[tokio::test]
async fn start_and_end_select_by_publication_time() {
    let (_node, mut alice) = node_with_items().await;
    let (all, _) = archive_page(&mut alice, NODE, &[], &[]).await;
    let stamp = |n: usize| all[n].stamp.clone().expect("a stamp");
    // Stamps may tie when items commit in the same microsecond; select by
    // the stamps themselves so the expectation holds either way.
    let (start, end) = (stamp(2), stamp(4));
    let expected: Vec<&str> = all
        .iter()
        .filter(|i| {
            let s = i.stamp.as_deref().unwrap_or_default();
            s >= start.as_str() && s <= end.as_str()
        })
        .map(|i| i.item_id.as_str())
        .collect();
    assert!(expected.contains(&"i3") && expected.contains(&"i5"));

    let (between, _) =
        archive_page(&mut alice, NODE, &[("start", &start), ("end", &end)], &[]).await;
    assert_eq!(ids(&between), expected);
    let (from, _) = archive_page(&mut alice, NODE, &[("start", &stamp(5))], &[]).await;
    assert_eq!(ids(&from).last(), Some(&"i7"));
    assert!(!ids(&from).contains(&"i5") || stamp(4) == stamp(5));
    let (until, _) = archive_page(&mut alice, NODE, &[("end", &stamp(1))], &[]).await;
    assert_eq!(ids(&until).first(), Some(&"i1"));
    assert!(!ids(&until).contains(&"i3") || stamp(1) == stamp(2));

    // A malformed time is a bad request.
    let reply = alice
        .iq(archive_query_iq(
            NODE,
            "bad",
            &[("start", "yesterday")],
            &[],
        ))
        .await
        .expect("answered");
    assert_eq!(reply.attr("type"), Some("error"));
    assert_eq!(error_of(&reply).0.as_deref(), Some("bad-request"));
}
