//! `[pubsub]` limits of a real node: a payload over `max_payload_bytes` is
//! refused with the condition XEP-0060 names, and so is a subscription over
//! `max_subscriptions_per_node`, and a node over `max_nodes`; each refusal
//! is counted in `/metrics`. The archives of all nodes together stay
//! within `max_archive_bytes`, the site's oldest entries dropped first, and
//! resuming past dropped entries is refused rather than silently skipped;
//! entries older than `max_archive_age_seconds` go, published to or not.

use std::time::{Duration, Instant};

use vomesh_broker::client::Client;
use vomesh_tests::node::{NodeOptions, TestNode};
use vomesh_tests::pubsub::{
    alert, archive_id, archive_page, assert_resume_refused, create_iq, error_of, item_ids, publish,
    publish_iq, request, subscribe_iq,
};

const PAYLOAD_BYTES_MAX: usize = 20_000;

#[tokio::test]
async fn payload_over_the_limit_is_not_acceptable_and_counted() {
    let (node, mut alice) = alice_at_a_node_with(&format!(
        "[pubsub]\nmax_payload_bytes = {PAYLOAD_BYTES_MAX}"
    ))
    .await;
    request(&mut alice, create_iq("alerts", &[])).await;

    // Just under the limit is accepted.
    let fits = alert(&"x".repeat(PAYLOAD_BYTES_MAX - 100));
    assert!(fits.to_xml().len() < PAYLOAD_BYTES_MAX);
    publish(&mut alice, "alerts", Some("fits"), fits).await;

    let too_big = alert(&"x".repeat(PAYLOAD_BYTES_MAX + 1));
    let reply = alice
        .iq(publish_iq("alerts", Some("too-big"), too_big))
        .await
        .expect("answered");
    assert_eq!(reply.attr("type"), Some("error"), "{}", reply.to_xml());
    // XEP-0060 §7.1.3.6.
    assert_eq!(
        error_of(&reply),
        (
            Some("not-acceptable".to_owned()),
            Some("payload-too-big".to_owned())
        ),
        "{}",
        reply.to_xml()
    );

    assert_counted(&node, "vomesh_rejected_total{reason=\"payload-too-big\"} 1");
    assert_counted(
        &node,
        "vomesh_pubsub_publish_errors_total{condition=\"payload-too-big\"} 1",
    );
    // Nothing of the refused item was kept.
    let (items, _) = archive_page(&mut alice, "alerts", &[], &[]).await;
    let ids: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
    assert_eq!(ids, ["fits"]);
}

#[tokio::test]
async fn subscription_over_the_node_limit_is_refused_and_counted() {
    let node = TestNode::launch(NodeOptions {
        extra_toml: "[pubsub]\nmax_subscriptions_per_node = 1".to_owned(),
        ..NodeOptions::default()
    });
    for (user, password) in [
        ("alice", "wonderland"),
        ("bob", "builder"),
        ("carol", "singer"),
    ] {
        node.add_user(user, password);
    }
    let mut alice = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(&mut alice, create_iq("alerts", &[])).await;
    let mut bob = Client::connect(&node.client_config("bob", "builder"))
        .await
        .expect("bob logs in");
    request(&mut bob, subscribe_iq("alerts", "bob@localhost")).await;
    let mut carol = Client::connect(&node.client_config("carol", "singer"))
        .await
        .expect("carol logs in");
    let reply = carol
        .iq(subscribe_iq("alerts", "carol@localhost"))
        .await
        .expect("answered");
    // XEP-0060 §6.1.3.9.
    assert_eq!(
        error_of(&reply),
        (
            Some("policy-violation".to_owned()),
            Some("too-many-subscriptions".to_owned())
        ),
        "{}",
        reply.to_xml()
    );
    assert_counted(
        &node,
        "vomesh_rejected_total{reason=\"too-many-subscriptions\"} 1",
    );
}

#[tokio::test]
async fn a_node_over_the_service_limit_is_a_policy_violation_and_counted() {
    let (node, mut alice) = alice_at_a_node_with("[pubsub]\nmax_nodes = 1").await;
    request(&mut alice, create_iq("first", &[])).await;
    let reply = alice.iq(create_iq("second", &[])).await.expect("answered");
    assert_eq!(
        error_of(&reply),
        (Some("policy-violation".to_owned()), None),
        "{}",
        reply.to_xml()
    );
    assert_counted(&node, "vomesh_rejected_total{reason=\"max-nodes\"} 1");
}

#[tokio::test]
async fn the_archives_stay_within_the_site_bound_oldest_entries_first() {
    let payload = || alert(&"x".repeat(1_000));
    let entry_bytes = payload().to_xml().len();
    // Three entries and a half, whatever the few bytes of an item id.
    let bound = 3 * entry_bytes + entry_bytes / 2;
    let (node, mut alice) =
        alice_at_a_node_with(&format!("[pubsub]\nmax_archive_bytes = {bound}")).await;
    for name in ["odd", "even"] {
        request(&mut alice, create_iq(name, &[])).await;
    }
    for n in 1..=6 {
        let name = if n % 2 == 1 { "odd" } else { "even" };
        publish(&mut alice, name, Some(&format!("e{n}")), payload()).await;
    }
    // The three newest stay, whichever node holds them.
    let mut oldest_kept = Vec::new();
    for (name, kept) in [("odd", vec!["e5"]), ("even", vec!["e4", "e6"])] {
        let (items, _) = archive_page(&mut alice, name, &[], &[]).await;
        let ids: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
        assert_eq!(ids, kept, "archive of {name}");
        oldest_kept.push(archive_id(&items[0]));
    }
    // Resuming "even" where e2, now dropped, would come next is refused,
    // naming what is kept; resuming just before e4 misses nothing.
    assert_resume_refused(&mut alice, "even", 1, oldest_kept[1]).await;
    let before_e4 = (oldest_kept[1] - 1).to_string();
    let (items, _) = archive_page(&mut alice, "even", &[("after-id", &before_e4)], &[]).await;
    let ids: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
    assert_eq!(ids, ["e4", "e6"]);
    assert_counted(
        &node,
        "vomesh_pubsub_archive_dropped_total{limit=\"site\"} 3",
    );
    assert_counted(&node, "vomesh_pubsub_archive_entries 3");
    let metrics = node.metrics();
    let bytes: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("vomesh_pubsub_archive_bytes "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("vomesh_pubsub_archive_bytes in {metrics}"));
    assert!(
        bytes > 0.0 && bytes <= bound as f64,
        "{bytes} archived bytes, bound {bound}"
    );
}

#[tokio::test]
async fn entries_older_than_the_age_bound_go_with_no_further_publish() {
    let (node, mut alice) = alice_at_a_node_with("[pubsub]\nmax_archive_age_seconds = 1").await;
    request(&mut alice, create_iq("alerts", &[])).await;
    publish(&mut alice, "alerts", Some("old"), alert("old")).await;
    let published = Instant::now();
    // The leader checks once a second, so the entry goes 1–2 s after its
    // publication; a few seconds more allow for a loaded machine.
    let ids = loop {
        let (items, _) = archive_page(&mut alice, "alerts", &[], &[]).await;
        let ids: Vec<String> = items.into_iter().map(|i| i.item_id).collect();
        if ids.is_empty() || published.elapsed() > Duration::from_secs(6) {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ids.is_empty(), "still archived after 6 s: {ids:?}");
    assert!(published.elapsed() >= Duration::from_secs(1));
    assert_counted(
        &node,
        "vomesh_pubsub_archive_dropped_total{limit=\"age\"} 1",
    );
    // The current item is not history: it stays.
    assert_eq!(item_ids(&mut alice, "alerts").await, ["old"]);
}

/// A node whose configuration ends with `pubsub_toml` (its `[pubsub]`
/// section), and alice logged in at it.
async fn alice_at_a_node_with(pubsub_toml: &str) -> (TestNode, Client) {
    let node = TestNode::launch(NodeOptions {
        extra_toml: pubsub_toml.to_owned(),
        ..NodeOptions::default()
    });
    node.add_user("alice", "wonderland");
    let alice = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    (node, alice)
}

/// `node`'s `/metrics` has the sample line `sample` (name, labels, value).
fn assert_counted(node: &TestNode, sample: &str) {
    let metrics = node.metrics();
    assert!(
        metrics.lines().any(|line| line == sample),
        "{sample} in {metrics}"
    );
}
