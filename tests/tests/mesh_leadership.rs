//! Where the leadership goes besides elections, on a mesh of real
//! processes: a leader stopped by its operator (SIGTERM) hands it over
//! before an election timeout could pass, and `preferred_leader` keeps it
//! at the named site, which then publishes without forwarding. Publishers
//! run throughout; the history checker audits every site's archive.

use std::time::{Duration, Instant};

use vomesh_broker::client::Client;
use vomesh_tests::cluster::TestCluster;
use vomesh_tests::history::Outcome;
use vomesh_tests::node::TestNode;
use vomesh_tests::workload::{
    RECOVERY_TIMEOUT, Workload, audit, client_config, followers, mesh_settings, publish_recorded,
    set_up,
};

/// One test at a time, across the test threads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Elections that cannot be mistaken for a handover: a follower waits at
/// least this long after the last heartbeat before it campaigns.
const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(2_000);

/// The sum of the samples of `metric` with `label` in `node`'s `/metrics`
/// (0 while a counter was never incremented, which the exposition omits).
fn metric_sum(node: &TestNode, metric: &str, label: &str) -> f64 {
    node.metrics()
        .lines()
        .filter(|line| line.starts_with(metric) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The longest time no publish was acknowledged anywhere, between
/// `from_ms` and the last acknowledgement (recorder times).
fn longest_silence(workload: &Workload, from_ms: u64) -> Duration {
    let mut answered: Vec<u64> = workload
        .recorder
        .history()
        .attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Acknowledged)
        .map(|a| a.answered_ms)
        .filter(|ms| *ms >= from_ms)
        .collect();
    answered.sort_unstable();
    answered.insert(0, from_ms);
    let longest = answered.windows(2).map(|w| w[1] - w[0]).max();
    Duration::from_millis(longest.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_stopped_by_its_operator_hands_over_without_an_election_timeout() {
    let _serial = SERIAL.lock().await;
    let settings = format!(
        "heartbeat_interval_ms = 80\n\
         election_timeout_min_ms = {}\n\
         election_timeout_max_ms = {}\n",
        ELECTION_TIMEOUT_MIN.as_millis(),
        2 * ELECTION_TIMEOUT_MIN.as_millis()
    );
    let mut cluster = TestCluster::start_with(3, &settings);
    set_up(&cluster).await;
    let leader = cluster.wait_for_leader(RECOVERY_TIMEOUT);
    let survivors = followers(&cluster, leader);
    let term_before = cluster.nodes[leader].status().expect("leader status")["term"]
        .as_u64()
        .expect("a term");

    let mut workload = Workload::default();
    for site in &survivors {
        workload
            .subscriber(*site, *site, &cluster.nodes[*site])
            .await;
    }
    for (publisher, site) in survivors.iter().chain(&survivors).enumerate() {
        workload.publisher(publisher, *site, &cluster.nodes[*site]);
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(workload.acknowledged() > 0, "publishes go through");

    let stopped_ms = workload.recorder.now_ms();
    let stopping = Instant::now();
    let status = tokio::task::block_in_place(|| cluster.nodes[leader].stop());
    let stop_took = stopping.elapsed();
    assert!(status.success(), "the leader exits cleanly: {status}");
    let new_leader = tokio::task::block_in_place(|| cluster.wait_for_leader(RECOVERY_TIMEOUT));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let silence = longest_silence(&workload, stopped_ms);
    eprintln!(
        "leader (site {leader}) stopped in {stop_took:?}; new leader site {new_leader}; \
         longest time without an acknowledgement from the stop on: {silence:?}"
    );

    let log = cluster.nodes[leader].log();
    assert!(
        log.contains("handing the leadership over") && log.contains("leadership handed over"),
        "the stopping leader says it handed over:\n{log}"
    );
    let term_after = cluster.nodes[new_leader].status().expect("status")["term"]
        .as_u64()
        .expect("a term");
    assert_eq!(
        term_after,
        term_before + 1,
        "one election, the handover's, and no other"
    );
    assert!(
        silence < ELECTION_TIMEOUT_MIN,
        "publishes are acknowledged again sooner than any election timeout \
         ({ELECTION_TIMEOUT_MIN:?}) could pass: {silence:?}"
    );

    workload.stop_publishers().await;
    workload.stop_subscribers();
    tokio::task::block_in_place(|| cluster.nodes[leader].restart());
    audit(&cluster, &workload, "leader stopped").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preferred_site_leads_and_takes_the_leadership_back_after_a_crash() {
    let _serial = SERIAL.lock().await;
    const PREFERRED: usize = 2;
    let settings = format!("{}preferred_leader = {}\n", mesh_settings(), PREFERRED + 1);
    let mut cluster = TestCluster::start_with(3, &settings);
    let took = tokio::task::block_in_place(|| {
        cluster.wait_for_leader_at(PREFERRED, Duration::from_secs(15))
    });
    eprintln!("the preferred site leads {took:?} after the cluster agreed on a first leader");
    set_up(&cluster).await;

    let mut workload = Workload::default();
    // Publishes made at the preferred site are not forwarded.
    let forwarded = "vomesh_mesh_forwarded_proposals_per_request_count";
    let before = metric_sum(&cluster.nodes[PREFERRED], forwarded, "");
    let config = client_config(&cluster.nodes[PREFERRED], "alice", "wonderland", "direct");
    let mut client = Client::connect(&config).await.expect("alice logs in");
    for n in 0..20 {
        let item_id = format!("direct-{n}");
        let (acknowledged, _) =
            publish_recorded(&workload.recorder, &mut client, 99, PREFERRED, item_id).await;
        assert!(
            acknowledged,
            "publish {n} at the leading site is acknowledged"
        );
    }
    drop(client);
    assert_eq!(
        metric_sum(&cluster.nodes[PREFERRED], forwarded, ""),
        before,
        "nothing forwarded from the leading site"
    );

    for site in 0..3 {
        workload.subscriber(site, site, &cluster.nodes[site]).await;
    }
    for publisher in 0..2 {
        workload.publisher(publisher, publisher, &cluster.nodes[publisher]);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.nodes[PREFERRED].kill9();
    let interim = tokio::task::block_in_place(|| cluster.wait_for_leader(RECOVERY_TIMEOUT));
    assert_ne!(interim, PREFERRED);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    tokio::task::block_in_place(|| cluster.nodes[PREFERRED].restart());
    let back = tokio::task::block_in_place(|| {
        cluster.wait_for_leader_at(PREFERRED, Duration::from_secs(20))
    });
    eprintln!(
        "site {interim} led meanwhile; the restarted preferred site leads again {back:?} after its restart"
    );
    let handovers: f64 = (0..2)
        .map(|site| {
            metric_sum(
                &cluster.nodes[site],
                "vomesh_raft_leadership_handovers_total",
                "reason=\"preferred\"",
            )
        })
        .sum();
    assert!(handovers >= 1.0, "the interim leader counted its handover");

    tokio::time::sleep(Duration::from_millis(500)).await;
    workload.stop_publishers().await;
    workload.stop_subscribers();
    audit(&cluster, &workload, "preferred leader").await;

    // Stopped while nothing is published, the preferred site hands over and
    // is not handed the leadership back: its last acknowledged position
    // still equals the log's end, but it has gone silent.
    let status = tokio::task::block_in_place(|| cluster.nodes[PREFERRED].stop());
    assert!(status.success());
    let successor = tokio::task::block_in_place(|| cluster.wait_for_leader(RECOVERY_TIMEOUT));
    let term = |site: usize| cluster.nodes[site].status().expect("status")["term"].as_u64();
    let term_after_handover = term(successor);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        tokio::task::block_in_place(|| cluster.wait_for_leader(RECOVERY_TIMEOUT)),
        successor,
        "the successor keeps the leadership"
    );
    assert_eq!(
        term(successor),
        term_after_handover,
        "and no election followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_moves_the_leadership_from_any_site() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::start_with(3, &mesh_settings());
    let leader = cluster.wait_for_leader(RECOVERY_TIMEOUT);
    // A follower knows the leader from its first append, before it holds
    // the membership (with the leader's address) that it forwards by.
    let commit = cluster.nodes[leader]
        .status()
        .and_then(|s| s["commit_index"].as_u64())
        .expect("the leader reports its commit index");
    cluster.wait_applied(commit, RECOVERY_TIMEOUT);
    let to = followers(&cluster, leader)[0];
    let to_id = (to + 1).to_string();

    // Not a member: refused, by this site or by the leader.
    for site in [leader, to] {
        let (status, _, stderr) = tokio::task::block_in_place(|| {
            cluster.nodes[site].cli(&["cluster", "transfer-leader", "9"])
        });
        assert!(!status.success());
        assert!(
            stderr.contains("no cluster member 9") || stderr.contains("node 9 is not a voter"),
            "{stderr}"
        );
    }

    let asked = Instant::now();
    let (status, stdout, stderr) = tokio::task::block_in_place(|| {
        cluster.nodes[leader].cli(&["cluster", "transfer-leader", &to_id])
    });
    let took = asked.elapsed();
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("node {to_id} leads"));
    eprintln!("the leadership moved from site {leader} to site {to} in {took:?} (CLI included)");
    assert_eq!(cluster.wait_for_leader(RECOVERY_TIMEOUT), to);
    // Asking for the leader it already has is no error.
    let (status, _, stderr) = tokio::task::block_in_place(|| {
        cluster.nodes[leader].cli(&["cluster", "transfer-leader", &to_id])
    });
    assert!(status.success(), "{stderr}");

    // Asked at a follower (the first leader, now one), the request goes to
    // the leader, and the leadership comes back.
    let back_id = (leader + 1).to_string();
    let (status, stdout, stderr) = tokio::task::block_in_place(|| {
        cluster.nodes[leader].cli(&["cluster", "transfer-leader", &back_id])
    });
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("node {back_id} leads"));
    assert_eq!(cluster.wait_for_leader(RECOVERY_TIMEOUT), leader);

    // The mesh commits under its new leader.
    set_up(&cluster).await;
    let config = client_config(&cluster.nodes[leader], "alice", "wonderland", "after");
    let mut client = Client::connect(&config).await.expect("alice logs in");
    let (outcome, _) = vomesh_tests::workload::publish(&mut client, "after-move").await;
    assert_eq!(outcome, Outcome::Acknowledged);
}
