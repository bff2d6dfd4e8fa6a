//! vomesh as a benchmark target: a single node ([`TestNode`]) or a mesh of
//! sites on loopback ([`TestCluster`]), logging at `info` as in production,
//! with the benchmark accounts created through `vomesh user add`.

use std::time::Duration;

use vomesh_broker::client::Trust;

use super::target::Target;
use crate::cluster::TestCluster;
use crate::node::{DOMAIN, NodeOptions, TestNode};

/// The production log level (test nodes log at debug by default).
const LOG_FILTER: &str = "info";

/// The running processes behind a target; dropping it kills them.
pub enum Running {
    Node(TestNode),
    Cluster(TestCluster),
}

/// Localparts of `count` subscriber accounts.
pub fn account_names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// How every site started here is configured: the production log level,
/// and `worker_threads` when given.
fn site_options(worker_threads: Option<usize>) -> NodeOptions {
    NodeOptions {
        top_level: worker_threads
            .map(|threads| format!("worker_threads = {threads}"))
            .unwrap_or_default(),
        log_filter: LOG_FILTER.to_owned(),
        ..NodeOptions::default()
    }
}

/// One node accepting `connections_max` clients, with `accounts` and a
/// `publisher` account, all with `password`.
pub fn single_node(
    label: &str,
    accounts: &[String],
    publisher: &str,
    password: &str,
    connections_max: usize,
    worker_threads: Option<usize>,
) -> (Running, Target) {
    let node = TestNode::launch(NodeOptions {
        xmpp_settings: format!("max_connections = {connections_max}"),
        ..site_options(worker_threads)
    });
    for localpart in accounts.iter().map(String::as_str).chain([publisher]) {
        node.add_user(localpart, password);
    }
    let target = Target {
        label: label.to_owned(),
        servers: vec![node.xmpp.to_string()],
        domain: DOMAIN.to_owned(),
        service: format!("pubsub.{DOMAIN}"),
        accounts: accounts.to_vec(),
        publisher: publisher.to_owned(),
        password: password.to_owned(),
        trust: Trust::Roots(node.certificate()),
        server_pids: node.pid().into_iter().collect(),
    };
    (Running::Node(node), target)
}

/// Where a mesh's publishers connect (the first listener of the target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishersAt {
    /// A follower site: every publish is forwarded to the leader.
    Follower,
    /// The site named `preferred_leader` at every site, which leads by the
    /// time the run starts.
    PreferredLeader,
}

/// `sites` nodes in one mesh (default `[mesh]` timing, fsync on every log
/// append). Sessions are spread over the sites; every publish is committed
/// by a majority and applied at each site.
pub fn mesh(
    label: &str,
    sites: usize,
    publishers_at: PublishersAt,
    accounts: &[String],
    publisher: &str,
    password: &str,
    worker_threads: Option<usize>,
) -> (Running, Target) {
    // Node 1, the first site, is the preferred one.
    let settings = match publishers_at {
        PublishersAt::Follower => "",
        PublishersAt::PreferredLeader => "preferred_leader = 1\n",
    };
    let cluster = TestCluster::start_custom(
        sites,
        settings,
        Box::new(move |_| site_options(worker_threads)),
    );
    for localpart in accounts.iter().map(String::as_str).chain([publisher]) {
        cluster.add_user(localpart, password);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let order: Vec<usize> = match publishers_at {
        PublishersAt::Follower => {
            let mut order: Vec<usize> = (0..sites).filter(|&i| i != leader).collect();
            order.push(leader);
            order
        }
        PublishersAt::PreferredLeader => {
            cluster.wait_for_leader_at(0, Duration::from_secs(30));
            (0..sites).collect()
        }
    };
    let target = Target {
        label: label.to_owned(),
        servers: order
            .iter()
            .map(|&i| cluster.nodes[i].xmpp.to_string())
            .collect(),
        domain: DOMAIN.to_owned(),
        service: format!("pubsub.{DOMAIN}"),
        accounts: accounts.to_vec(),
        publisher: publisher.to_owned(),
        password: password.to_owned(),
        trust: Trust::Roots(
            cluster
                .nodes
                .iter()
                .flat_map(TestNode::certificate)
                .collect(),
        ),
        server_pids: cluster.nodes.iter().filter_map(TestNode::pid).collect(),
    };
    (Running::Cluster(cluster), target)
}
