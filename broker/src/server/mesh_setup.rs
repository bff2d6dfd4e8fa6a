//! The mesh configuration of a node, derived from its `[mesh]` section.
//!
//! Without `[mesh]` a node is a single-node mesh of its own (INTERFACE.md):
//! its QUIC endpoint binds an ephemeral loopback port and authenticates
//! with a certificate generated in memory at each start, since no peer can
//! ever reach it. The same holds for a `[mesh]` that names no other member
//! and no certificate files. Peers, when there are any, authenticate with
//! the cluster CA's certificates (`vomesh certs init`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context as _;
use vomesh_mesh::certs::{ClusterCa, NodeIdentity};
use vomesh_mesh::config::{ForwardingLimits, MeshConfig as NodeMeshConfig, MeshTimeouts};

use crate::config::{Config, MeshConfig, NetworkProfile};

/// The mesh node's configuration.
pub fn mesh_config(config: &Config) -> anyhow::Result<NodeMeshConfig> {
    let standalone = MeshConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        // Nobody can dial a standalone node; say so in its status.
        advertise: "127.0.0.1:0".to_owned(),
        ..MeshConfig::default()
    };
    let mesh = config.mesh.as_ref().unwrap_or(&standalone);
    let mut node = NodeMeshConfig::new(
        mesh.node_id,
        mesh.listen,
        mesh.advertise.clone(),
        config.data_dir.join("mesh"),
        identity(mesh)?,
    );
    node.initial_members = mesh
        .members
        .iter()
        .map(|m| (m.id, m.addr.clone()))
        .collect::<BTreeMap<_, _>>();
    node.timeouts = timeouts(mesh);
    node.snapshot_every_entries = mesh.snapshot_every_entries;
    node.snapshot_log_growth_percent = mesh.snapshot_log_growth_percent;
    node.log_entries_kept_after_snapshot = mesh.log_entries_kept_after_snapshot;
    node.log_cache_bytes = mesh.log_cache_bytes;
    node.limits.snapshot_bytes_max = mesh.snapshot_bytes_max;
    node.limits.udp_buffer_bytes = mesh.udp_buffer_bytes;
    node.forwarding = ForwardingLimits {
        batches_in_flight_max: mesh.forward_batches_in_flight_max,
        batch_bytes_max: mesh.forward_batch_bytes_max,
        coalesce_yields: mesh.forward_coalesce_yields,
    };
    node.preferred_leader = mesh.preferred_leader;
    node.proposals_in_flight_max = config.pubsub.max_inflight_proposals;
    // A command carries at most one payload or stanza, plus its envelope;
    // appends of `append_entries_max` such commands must fit one frame.
    let largest_input = config
        .pubsub
        .max_payload_bytes
        .max(config.xmpp.max_stanza_bytes);
    node.command_bytes_max = node
        .command_bytes_max
        .max(largest_input + COMMAND_ENVELOPE_BYTES);
    let entries = usize::try_from(node.append_entries_max).unwrap_or(usize::MAX);
    node.limits.frame_bytes_max = node
        .limits
        .frame_bytes_max
        .max(entries.saturating_mul(node.command_bytes_max + COMMAND_ENVELOPE_BYTES));
    Ok(node)
}

/// Room for a command's fields around its payload (node, item id, actor,
/// options, protobuf framing).
const COMMAND_ENVELOPE_BYTES: usize = 64 * 1024;

fn identity(mesh: &MeshConfig) -> anyhow::Result<NodeIdentity> {
    if let (Some(ca), Some(cert), Some(key)) = (&mesh.ca, &mesh.cert, &mesh.key) {
        return NodeIdentity::from_pem_files(ca, cert, key)
            .context("cannot load the mesh certificates");
    }
    // Config validation requires the files as soon as there are peers.
    let ca = ClusterCa::generate().context("cannot generate a mesh certificate")?;
    let node = ca
        .issue_node(mesh.node_id, &[])
        .context("cannot generate a mesh certificate")?;
    NodeIdentity::from_pem(
        ca.pem().cert_pem.as_bytes(),
        node.cert_pem.as_bytes(),
        node.key_pem.as_bytes(),
    )
    .map_err(|error| anyhow::anyhow!("generated mesh identity unusable: {error}"))
}

fn timeouts(mesh: &MeshConfig) -> MeshTimeouts {
    let mut timeouts = match mesh.network {
        NetworkProfile::Lan => MeshTimeouts::loopback(),
        NetworkProfile::Wan => MeshTimeouts::wan(),
    };
    let overrides = [
        (
            mesh.heartbeat_interval_ms,
            &mut timeouts.heartbeat_interval_ms,
        ),
        (
            mesh.election_timeout_min_ms,
            &mut timeouts.election_timeout_min_ms,
        ),
        (
            mesh.election_timeout_max_ms,
            &mut timeouts.election_timeout_max_ms,
        ),
        (mesh.propose_timeout_ms, &mut timeouts.propose_timeout_ms),
    ];
    for (value, field) in overrides {
        if let Some(value) = value {
            *field = value;
        }
    }
    timeouts
}
