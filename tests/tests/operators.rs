//! What an operator sees of a running three-site mesh: `/metrics` scraped
//! and parsed with a Prometheus text parser (`prometheus-parse`, not our
//! own), its values followed as events are published and as the leader is
//! killed, and `/readyz` turning not-ready on a site left alone.

use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use vomesh_broker::client::Client;
use vomesh_tests::cluster::TestCluster;
use vomesh_tests::node::{NodeOptions, TestNode};
use vomesh_tests::pubsub::{alert, create_iq, publish, request};

/// `/metrics` of `node`, parsed.
fn scrape(node: &TestNode) -> Scrape {
    let text = node.metrics();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

/// The value of the sample `name` whose labels include `labels`; `None`
/// when the node does not export it.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            Value::Histogram(_) | Value::Summary(_) => None,
        })
}

/// Like [`value`], 0 for a metric not exported yet (a counter never
/// incremented is absent from the exposition).
fn or_zero(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, name, labels).unwrap_or(0.0)
}

/// Scrapes `node` until `check` holds, panicking with the last values after
/// `timeout`.
fn wait_metric(
    node: &TestNode,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + timeout;
    loop {
        let scrape = scrape(node);
        if check(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {timeout:?}:\n{}",
            node.metrics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `line` without the terminal colour escapes of the human log format.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of `node`'s log saying mesh peer `peer` became unreachable (a
/// peer not up yet when the mesh started also gets one).
fn unreachable_lines(node: &TestNode, peer: String) -> usize {
    let needle = format!("mesh: peer unreachable peer={peer}");
    node.log()
        .lines()
        .filter(|l| strip_ansi(l).contains(&needle))
        .count()
}

async fn publish_n(client: &mut Client, from: usize, count: usize) {
    for i in from..from + count {
        publish(client, "ops", None, alert(&format!("event {i}"))).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_publishes_and_a_leader_kill_and_readyz_fails_in_a_minority() {
    let mut cluster = TestCluster::start(3);
    cluster.add_user("alice", "wonderland");
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    // alice publishes through a follower that survives the leader's death.
    let site = (leader + 1) % 3;
    let third = (leader + 2) % 3;
    let id = |index: usize| (index + 1).to_string();

    // Idle for longer than an election timeout, every site stays ready:
    // heartbeats count as word from the leader (and a quorum's acks).
    std::thread::sleep(Duration::from_secs(5));
    for node in &cluster.nodes {
        let (status, body) = readyz(node);
        assert_eq!(status, 200, "{body}");
        assert_eq!(value(&scrape(node), "vomesh_ready", &[]), Some(1.0));
    }

    let before: Vec<Scrape> = cluster.nodes.iter().map(scrape).collect();
    let term_before = value(&before[leader], "vomesh_raft_term", &[]).expect("a term");
    assert_eq!(
        value(&before[leader], "vomesh_raft_is_leader", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&before[site], "vomesh_raft_is_leader", &[]),
        Some(0.0)
    );
    let mut alice = Client::connect(&cluster.nodes[site].client_config("alice", "wonderland"))
        .await
        .expect("alice logs in");
    request(&mut alice, create_iq("ops", &[])).await;
    publish_n(&mut alice, 0, 5).await;
    let commit = value(
        &scrape(&cluster.nodes[site]),
        "vomesh_raft_commit_index",
        &[],
    )
    .expect("a commit index");
    cluster.wait_applied(commit as u64, Duration::from_secs(10));

    // Every site counts the items it applied; the commit index moved by at
    // least the six commands; the proposing site timed five commits.
    for (index, node) in cluster.nodes.iter().enumerate() {
        let after = wait_metric(
            node,
            "five more published items",
            Duration::from_secs(10),
            |s| {
                or_zero(s, "vomesh_pubsub_published_total", &[])
                    >= or_zero(&before[index], "vomesh_pubsub_published_total", &[]) + 5.0
            },
        );
        assert!(
            value(&after, "vomesh_raft_commit_index", &[]).unwrap_or(0.0)
                >= value(&before[index], "vomesh_raft_commit_index", &[]).unwrap_or(0.0) + 6.0
        );
    }
    let at_site = scrape(&cluster.nodes[site]);
    assert!(
        or_zero(&at_site, "vomesh_publish_commit_seconds_count", &[])
            >= or_zero(&before[site], "vomesh_publish_commit_seconds_count", &[]) + 5.0
    );
    // The leader has heard from both followers.
    let at_leader = scrape(&cluster.nodes[leader]);
    for peer in [site, third] {
        assert_eq!(
            value(
                &at_leader,
                "vomesh_mesh_peer_reachable",
                &[("peer", &id(peer))]
            ),
            Some(1.0),
            "peer {} reachable",
            id(peer)
        );
    }

    // Help text comes with the metrics an operator alerts on.
    for name in [
        "vomesh_raft_commit_index",
        "vomesh_pubsub_published_total",
        "vomesh_mesh_peer_reachable",
        "vomesh_storage_fsync_seconds",
    ] {
        assert!(at_leader.docs.contains_key(name), "no HELP for {name}");
    }
    // Every metric a site exports is documented for operators.
    let documented = metric_names(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
        )
        .expect("the README"),
    );
    let exported = metric_names(&cluster.nodes[leader].metrics());
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in the README: {undocumented:?}"
    );

    // The size gauges count the replica: one node, five items.
    assert_eq!(value(&at_leader, "vomesh_pubsub_nodes", &[]), Some(1.0));
    assert_eq!(value(&at_leader, "vomesh_pubsub_items", &[]), Some(5.0));
    assert_eq!(
        value(&at_leader, "vomesh_pubsub_archive_entries", &[]),
        Some(5.0)
    );
    assert!(value(&at_leader, "vomesh_pubsub_archive_bytes", &[]).is_some_and(|b| b > 0.0));
    assert!(or_zero(&at_leader, "vomesh_storage_fsync_seconds_count", &[]) >= 6.0);

    // The transport's QUIC statistics and the data directory's size are
    // refreshed every few seconds.
    let follower = id(site);
    wait_metric(
        &cluster.nodes[leader],
        "QUIC statistics of the link to a follower, and the data dir size",
        Duration::from_secs(15),
        |s| {
            value(s, "vomesh_quic_rtt_seconds", &[("peer", &follower)]).is_some_and(|r| r > 0.0)
                && value(s, "vomesh_quic_path_mtu_bytes", &[("peer", &follower)])
                    .is_some_and(|m| m >= 1200.0)
                && or_zero(s, "vomesh_quic_sent_bytes_total", &[("peer", &follower)]) > 0.0
                && or_zero(
                    s,
                    "vomesh_quic_received_bytes_total",
                    &[("peer", &follower)],
                ) > 0.0
                && value(s, "vomesh_storage_bytes", &[]).is_some_and(|b| b > 0.0)
                && value(s, "vomesh_mesh_udp_receive_drops_total", &[]).is_some()
        },
    );
    // The kernel granted the socket's buffers (how much depends on its
    // `net.core.rmem_max`, so only that it answered is asserted here).
    for direction in ["receive", "send"] {
        assert!(
            value(
                &at_leader,
                "vomesh_mesh_udp_buffer_bytes",
                &[("direction", direction)]
            )
            .is_some_and(|bytes| bytes > 0.0),
            "{direction} buffer"
        );
    }

    // `vomesh status` (the admin API under it), asked at the leader: every
    // member's sessions as that member counts them, and the leader's round
    // trip to each follower.
    let status = cluster.nodes[leader].status().expect("the leader's status");
    let members = status["members"].as_array().expect("members");
    for (index, member) in members.iter().enumerate() {
        let expected_sessions = u64::from(index == site);
        assert_eq!(
            member["sessions"].as_u64(),
            Some(expected_sessions),
            "{member}"
        );
        let rtt = member["rtt_ms"].as_f64();
        if index == leader {
            assert_eq!(rtt, None, "no round trip to itself: {member}");
        } else {
            assert!(rtt.is_some_and(|ms| ms > 0.0 && ms < 1000.0), "{member}");
        }
    }

    // kill -9 the leader: another site takes over in a later term.
    let unreachable_before: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| unreachable_lines(n, id(leader)))
        .collect();
    cluster.nodes[leader].kill9();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(30));
    assert_ne!(new_leader, leader);
    let elected = wait_metric(
        &cluster.nodes[new_leader],
        "the new leader's gauges",
        Duration::from_secs(10),
        |s| {
            value(s, "vomesh_raft_is_leader", &[]) == Some(1.0)
                && value(s, "vomesh_raft_term", &[]).is_some_and(|t| t > term_before)
        },
    );
    assert!(or_zero(&elected, "vomesh_raft_elections_total", &[]) >= 1.0);
    // One line each on the sites that saw the election: won, and followed.
    let logged = |node: usize, message: &str| {
        cluster.nodes[node]
            .log()
            .lines()
            .any(|l| strip_ansi(l).contains(message))
    };
    assert!(logged(new_leader, "mesh: election won, leading"));
    let other = 3 - leader - new_leader;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged(other, "mesh: following a new leader") && !logged(other, "mesh: election lost") {
        assert!(
            Instant::now() < deadline,
            "node {} logged the new leader",
            id(other)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Publishes go on; the dead site falls further behind with each, and
    // the new leader marks it unreachable.
    publish_n(&mut alice, 5, 3).await;
    let dead = [("peer", id(leader))];
    let dead: Vec<(&str, &str)> = dead.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let lagging = wait_metric(
        &cluster.nodes[new_leader],
        "the dead peer lagging and unreachable",
        Duration::from_secs(10),
        |s| {
            value(s, "vomesh_raft_replication_lag", &dead).is_some_and(|l| l >= 3.0)
                && value(s, "vomesh_mesh_peer_reachable", &dead) == Some(0.0)
        },
    );
    let lag = or_zero(&lagging, "vomesh_raft_replication_lag", &dead);
    // One log line says so (not one per failed retry).
    assert_eq!(
        unreachable_lines(&cluster.nodes[new_leader], id(leader)) - unreachable_before[new_leader],
        1,
        "one 'peer unreachable' line for node {}",
        id(leader)
    );
    publish_n(&mut alice, 8, 4).await;
    wait_metric(
        &cluster.nodes[new_leader],
        "the dead peer's lag rising",
        Duration::from_secs(10),
        |s| or_zero(s, "vomesh_raft_replication_lag", &dead) >= lag + 4.0,
    );
    // The live follower keeps up.
    let live = if new_leader == site { third } else { site };
    wait_metric(
        &cluster.nodes[new_leader],
        "the live follower caught up",
        Duration::from_secs(10),
        |s| value(s, "vomesh_raft_replication_lag", &[("peer", &id(live))]) == Some(0.0),
    );

    // Kill the new leader too: the site left alone is a minority, and says so.
    cluster.nodes[new_leader].kill9();
    let alone = &cluster.nodes[live];
    let deadline = Instant::now() + Duration::from_secs(30);
    let reasons = loop {
        let (status, body) = readyz(alone);
        if status == 503 {
            assert_eq!(body["ready"], false, "{body}");
            assert_eq!(value(&scrape(alone), "vomesh_ready", &[]), Some(0.0));
            break body["reasons"].clone();
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "a lone site still ready after 30 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let reasons = reasons.as_array().expect("a list of reasons");
    assert!(!reasons.is_empty());
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("leader"))),
        "{reasons:?}"
    );
}

/// `/readyz` of `node`: the HTTP status and the JSON body.
fn readyz(node: &TestNode) -> (u16, serde_json::Value) {
    let response = ureq::get(&format!("http://{}/readyz", node.admin))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("/readyz answers");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .read_json()
        .expect("a JSON readiness body");
    (status, body)
}

#[test]
fn a_single_site_mesh_stays_ready_while_idle() {
    let node = TestNode::start();
    // Longer than any election timeout: a lone site is its own quorum.
    std::thread::sleep(Duration::from_secs(7));
    let (status, body) = readyz(&node);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true, "{body}");
}

#[test]
fn a_site_runs_as_many_workers_as_it_is_given() {
    for threads in [1, 3] {
        let node = TestNode::launch(NodeOptions {
            top_level: format!("worker_threads = {threads}"),
            ..NodeOptions::default()
        });
        let ready = node
            .log()
            .lines()
            .map(strip_ansi)
            .find(|line| line.contains("vomesh node ready"))
            .expect("the node logged that it is ready");
        assert!(
            ready.contains(&format!("workers={threads}")),
            "worker_threads = {threads}, but: {ready}"
        );
        // Healthy is not yet ready: the single site elects itself first,
        // which takes longer on a loaded machine.
        let (status, body) = readyz_within(&node, Duration::from_secs(30));
        assert_eq!(status, 200, "{body}");
    }
}

/// `/readyz`, asked again until it answers 200 or `timeout` passes.
fn readyz_within(node: &TestNode, timeout: Duration) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = readyz(node);
        if status == 200 || Instant::now() >= deadline {
            return (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `vomesh_*` metric names `text` mentions, histogram series folded
/// into their histogram's name.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("vomesh_")
        .map(|(at, _)| {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).map(str::to_owned))
                .unwrap_or(name)
        })
        .collect()
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |path: &str| std::fs::read_to_string(root.join(path)).expect(path);
    let documented = metric_names(&read("README.md"));
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/vomesh-dashboard.json",
    ] {
        let used = metric_names(&read(file));
        assert!(!used.is_empty(), "{file} uses no vomesh metric");
        let undocumented: Vec<_> = used.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "{file} uses metrics the README does not document: {undocumented:?}"
        );
    }
}
