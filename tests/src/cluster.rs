//! A mesh of real `vomesh serve` processes on loopback, with certificates
//! from `vomesh certs init`, each node on its own free ports and data
//! directory.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::node::{DOMAIN, NodeOptions, TestNode, free_port, vomesh_bin};

/// Certificates made beyond the initial members, for nodes a test adds
/// with `vomesh cluster add` (the CA cannot issue more after `certs init`).
const SPARE_NODE_IDS: usize = 1;

/// A running mesh; node `i` has mesh id `i + 1`.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    certs: tempfile::TempDir,
    /// `members` entries of the initial configuration.
    members: Vec<String>,
    mesh_settings: String,
    node_options: NodeOptionsFor,
}

/// The options of node `index` (its host, launcher and environment); the
/// cluster adds the `[mesh]` section.
pub type NodeOptionsFor = Box<dyn Fn(usize) -> NodeOptions + Send + Sync>;

impl TestCluster {
    /// `size` nodes with the default mesh settings.
    pub fn start(size: usize) -> TestCluster {
        TestCluster::start_with(size, "")
    }

    /// `size` nodes whose `[mesh]` sections also contain `mesh_settings`
    /// (e.g. `snapshot_every_entries = 20`).
    pub fn start_with(size: usize, mesh_settings: &str) -> TestCluster {
        TestCluster::start_logging(size, mesh_settings, &NodeOptions::default().log_filter)
    }

    /// Like [`TestCluster::start_with`], with `log_filter` as every node's
    /// `RUST_LOG` (benchmarks log as production does, at `info`).
    pub fn start_logging(size: usize, mesh_settings: &str, log_filter: &str) -> TestCluster {
        let log_filter = log_filter.to_owned();
        TestCluster::start_custom(
            size,
            mesh_settings,
            Box::new(move |_| NodeOptions {
                log_filter: log_filter.clone(),
                ..NodeOptions::default()
            }),
        )
    }

    /// `size` nodes, node `i` started with `node_options(i)` (e.g. each in
    /// its own network namespace, or with a `[vtp]` section of its own in
    /// `extra_toml`, which follows the `[mesh]` section). Also used for
    /// nodes added later.
    pub fn start_custom(
        size: usize,
        mesh_settings: &str,
        node_options: NodeOptionsFor,
    ) -> TestCluster {
        let certs = tempfile::tempdir().expect("a temporary directory");
        let ids: Vec<String> = (1..=size + SPARE_NODE_IDS)
            .map(|id| id.to_string())
            .collect();
        let status = Command::new(vomesh_bin())
            .args(["certs", "init", "--out"])
            .arg(certs.path())
            .args(["--nodes", &ids.join(","), "--domain", DOMAIN])
            .output()
            .expect("running vomesh certs init");
        assert!(
            status.status.success(),
            "certs init failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let quic_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let members: Vec<String> = quic_ports
            .iter()
            .enumerate()
            .map(|(i, port)| member(i as u64 + 1, node_options(i).host, *port))
            .collect();
        let mut nodes: Vec<TestNode> = quic_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let options = node_options(i);
                TestNode::prepare(NodeOptions {
                    extra_toml: mesh_section(
                        i as u64 + 1,
                        options.host,
                        *port,
                        &members,
                        certs.path(),
                        mesh_settings,
                    ) + &options.extra_toml,
                    ..options
                })
            })
            .collect();
        for node in &mut nodes {
            node.restart();
        }
        let cluster = TestCluster {
            nodes,
            certs,
            members,
            mesh_settings: mesh_settings.to_owned(),
            node_options,
        };
        cluster.wait_for_leader(Duration::from_secs(30));
        cluster
    }

    /// Waits until a running node reports a leader that every running node
    /// agrees on; returns the index (in `nodes`) of the leader.
    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<Option<u64>> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| n.status().and_then(|s| s["leader"].as_u64()))
                .collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && self.nodes[(*leader - 1) as usize].is_running()
            {
                return (*leader - 1) as usize;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node agrees that node `index` (in
    /// `nodes`) leads; returns how long that took.
    pub fn wait_for_leader_at(&self, index: usize, timeout: Duration) -> Duration {
        let started = Instant::now();
        while self.wait_for_leader(timeout) != index {
            assert!(
                started.elapsed() < timeout,
                "node {index} does not lead within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }

    /// Prepares (does not start) one more node with a certificate from the
    /// cluster CA, configured with the current members plus itself, so it
    /// waits to be added (`vomesh cluster add`) instead of forming a cluster
    /// of its own. Returns its index in `nodes`; its mesh id is index + 1.
    pub fn prepare_joiner(&mut self) -> usize {
        let id = self.nodes.len() as u64 + 1;
        assert!(
            id as usize <= self.members.len() + SPARE_NODE_IDS,
            "no spare certificate left"
        );
        let port = free_port();
        let options = (self.node_options)(id as usize - 1);
        let mut members = self.members.clone();
        members.push(member(id, options.host, port));
        self.nodes.push(TestNode::prepare(NodeOptions {
            extra_toml: mesh_section(
                id,
                options.host,
                port,
                &members,
                self.certs.path(),
                &self.mesh_settings,
            ) + &options.extra_toml,
            ..options
        }));
        self.nodes.len() - 1
    }

    /// The mesh address (`host:port`) of node `index`.
    pub fn mesh_address(&self, index: usize) -> String {
        let config =
            std::fs::read_to_string(self.nodes[index].config_path()).expect("the node config");
        config
            .lines()
            .find_map(|line| line.strip_prefix("advertise = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .expect("an advertise line")
            .to_owned()
    }

    /// Creates an account at the first node and waits until every running
    /// site has applied it (each site answers logins from its own replica,
    /// which may trail the commit by a moment).
    pub fn add_user(&self, localpart: &str, password: &str) {
        self.nodes[0].add_user(localpart, password);
        let commit = self.nodes[0]
            .status()
            .and_then(|s| s["commit_index"].as_u64())
            .expect("the node reports its commit index");
        self.wait_applied(commit, Duration::from_secs(10));
    }

    /// Waits until every running node has applied at least `index`.
    pub fn wait_applied(&self, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let applied = node.status().and_then(|s| s["applied_index"].as_u64());
                if applied.is_some_and(|a| a >= index) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a node did not apply {index} within {timeout:?}: {applied:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A `members` entry: `"ID@HOST:PORT"`.
fn member(id: u64, host: IpAddr, port: u16) -> String {
    format!("\"{id}@{host}:{port}\"")
}

fn mesh_section(
    id: u64,
    host: IpAddr,
    port: u16,
    members: &[String],
    certs: &Path,
    settings: &str,
) -> String {
    format!(
        "[mesh]\n\
         node_id = {id}\n\
         listen = \"{host}:{port}\"\n\
         advertise = \"{host}:{port}\"\n\
         members = [{members}]\n\
         ca = \"{ca}\"\n\
         cert = \"{cert}\"\n\
         key = \"{key}\"\n\
         {settings}\n",
        members = members.join(", "),
        ca = certs.join("ca.crt").display(),
        cert = certs.join(format!("node-{id}.crt")).display(),
        key = certs.join(format!("node-{id}.key")).display(),
    )
}
