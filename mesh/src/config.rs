//! What a mesh node is started with: identity, addresses, members, data
//! directory, timeouts (with loopback and WAN presets) and limits, and the
//! check that the limits fit together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::certs::NodeIdentity;
pub use crate::forwarder::ForwardingLimits;
use crate::node::StartError;
use crate::transport::TransportLimits;
use crate::types::NodeId;

/// Timing of the mesh. Raft needs `heartbeat < election_min` and an election
/// timeout well above the round trip between sites, or a slow link starts
/// elections. openraft also uses the heartbeat interval as the deadline of
/// each append, so it must exceed the inter-site round trip too.
#[derive(Clone, Debug)]
pub struct MeshTimeouts {
    /// How often the leader sends heartbeats (and the deadline of appends).
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in
    /// `[min, max)` starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Sending and installing a whole snapshot.
    pub snapshot_timeout_ms: u64,
    /// How long `propose` and `ensure_linearizable` wait in all (forwarding,
    /// commit, local apply).
    pub propose_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
}

impl MeshTimeouts {
    /// Nodes on one host or one LAN (round trip well under 1 ms). The
    /// heartbeat leaves an append 150 ms (openraft's soft deadline, 3/4 of
    /// it) for a follower's fsync on a busy disk.
    pub fn loopback() -> Self {
        Self {
            heartbeat_interval_ms: 200,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_timeout_ms: 30_000,
            propose_timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
            idle_timeout_ms: 5_000,
            keep_alive_interval_ms: 1_000,
        }
    }

    /// Sites on different continents (round trip up to ~300 ms): the
    /// heartbeat (and append deadline) at about 2× the worst round trip, the
    /// election timeout at 5–10× it, so one slow exchange never looks like a
    /// dead leader. Failover then takes 3–6 s.
    pub fn wan() -> Self {
        Self {
            heartbeat_interval_ms: 600,
            election_timeout_min_ms: 3_000,
            election_timeout_max_ms: 6_000,
            snapshot_timeout_ms: 600_000,
            propose_timeout_ms: 15_000,
            connect_timeout_ms: 5_000,
            idle_timeout_ms: 30_000,
            keep_alive_interval_ms: 5_000,
        }
    }
}

/// openraft's configuration for these timeouts and batching limits: the
/// same at every node (and in the simulator, which runs what ships).
/// A node passes `SnapshotPolicy::Never` and asks for its snapshots itself
/// (see [`crate::snapshot_schedule`]).
pub fn raft_config(
    timeouts: &MeshTimeouts,
    snapshot_policy: openraft::SnapshotPolicy,
    log_entries_kept_after_snapshot: u64,
    append_entries_max: u64,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "vomesh".into(),
        heartbeat_interval: timeouts.heartbeat_interval_ms,
        election_timeout_min: timeouts.election_timeout_min_ms,
        election_timeout_max: timeouts.election_timeout_max_ms,
        install_snapshot_timeout: timeouts.snapshot_timeout_ms,
        snapshot_policy,
        max_in_snapshot_log_to_keep: log_entries_kept_after_snapshot,
        max_payload_entries: append_entries_max,
        // Pre-vote: a node that was cut off does not disrupt a healthy
        // leader with a higher term when it comes back (Raft thesis §9.6).
        enable_pre_vote: Some(true),
        // A leader sends new entries to the followers as soon as its log
        // store has taken them, not once they are synced here: its own
        // fdatasync then overlaps the followers' instead of preceding them.
        // Three sites on loopback, 16 publishers x 4 in flight, ABBA: 4-5 %
        // more publishes/s for 4-5 % less CPU per publish, p50 ack 4.05
        // against 4.27 ms; neutral to +6 % at 16 x 32.
        broadcast_submitted_on_append: Some(true),
        ..Default::default()
    }
    .validate()
}

impl Default for MeshTimeouts {
    fn default() -> Self {
        Self::loopback()
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub node_id: NodeId,
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// `host:port` other nodes dial to reach this one.
    pub advertise: String,
    /// The cluster formed on first start: node id → `host:port`, including
    /// this node. The lowest id initialises it when its data directory is
    /// empty; empty means a single-node mesh of this node alone. Used only
    /// once: a node that lost its data must not be restarted with it (it
    /// would initialise a cluster of its own), but removed and added back
    /// as a new member.
    pub initial_members: BTreeMap<NodeId, String>,
    /// Where `raft-log/` and `raft-snapshot.bin` live.
    pub data_dir: PathBuf,
    pub identity: NodeIdentity,
    pub timeouts: MeshTimeouts,
    pub limits: TransportLimits,
    /// Take a snapshot after this many entries were applied since the last…
    pub snapshot_every_entries: u64,
    /// …and once the commands applied since the last add up to this
    /// percentage of its size (0: the entries alone decide). See
    /// [`crate::snapshot_schedule`].
    pub snapshot_log_growth_percent: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging
    /// follower catches up from the log rather than with a snapshot.
    pub log_entries_kept_after_snapshot: u64,
    /// Memory for the entries appended last, which replication and the
    /// apply read back right after the append (see
    /// [`crate::log_store`]); older entries are read from disk. 0: none.
    pub log_cache_bytes: usize,
    /// Largest command `propose` accepts.
    pub command_bytes_max: usize,
    /// Most entries openraft puts in one append. With `command_bytes_max` it
    /// bounds an append frame, which must fit `limits.frame_bytes_max`
    /// (checked at start: an append that can never be sent would stall
    /// replication for good).
    pub append_entries_max: u64,
    /// Proposals this node has in flight at once (its own and those
    /// forwarded to it). Beyond it `propose` waits for a slot until its
    /// deadline, then fails with `Overloaded`; a forwarded proposal is refused
    /// at once, and its proposer told it was not appended.
    pub proposals_in_flight_max: usize,
    /// How proposals made here while another node leads are batched on
    /// their way to it.
    pub forwarding: ForwardingLimits,
    /// The node the leadership is handed to whenever it is caught up (see
    /// [`crate::leadership`]); `None`: wherever elections put it. Every
    /// node should name the same one.
    pub preferred_leader: Option<NodeId>,
}

/// `proposals_in_flight_max` when not configured.
pub const PROPOSALS_IN_FLIGHT_MAX_DEFAULT: usize = 4096;

/// Largest `proposals_in_flight_max`. Each peer gets a QUIC stream of
/// credit per proposal in flight (see [`MeshConfig::transport_limits`]),
/// and quinn keeps bookkeeping for every stream it allows: the bound keeps
/// that to a few megabytes per peer connection.
pub const PROPOSALS_IN_FLIGHT_LIMIT: usize = 65_536;

/// Protobuf overhead of one entry (log id, tags, lengths), generously.
const ENTRY_OVERHEAD_BYTES: usize = 128;
/// Protobuf overhead of an append request around its entries, generously.
const APPEND_OVERHEAD_BYTES: usize = 1024;

impl MeshConfig {
    /// A configuration with the defaults: loopback timeouts, default
    /// transport limits, a snapshot every 10 000 entries once the log since
    /// the last one is as large as it (100 %), keeping 1 000 entries
    /// behind it, the last 16 MiB of entries cached in memory, commands up
    /// to 320 KiB (a 256 KiB stanza with room for its envelope), appends of
    /// at most 256 entries, 4096 proposals in flight, no initial members (a
    /// single-node mesh).
    pub fn new(
        node_id: NodeId,
        listen: SocketAddr,
        advertise: String,
        data_dir: PathBuf,
        identity: NodeIdentity,
    ) -> Self {
        Self {
            node_id,
            listen,
            advertise,
            initial_members: BTreeMap::new(),
            data_dir,
            identity,
            timeouts: MeshTimeouts::default(),
            limits: TransportLimits::default(),
            snapshot_every_entries: 10_000,
            snapshot_log_growth_percent: 100,
            log_entries_kept_after_snapshot: 1_000,
            log_cache_bytes: 16 * 1024 * 1024,
            command_bytes_max: 320 * 1024,
            append_entries_max: 256,
            proposals_in_flight_max: PROPOSALS_IN_FLIGHT_MAX_DEFAULT,
            forwarding: ForwardingLimits::default(),
            preferred_leader: None,
        }
    }

    /// The transport's limits, with a stream of credit per proposal in
    /// flight on top of `limits.inbound_streams_per_peer_max`. A follower of
    /// this version holds at most 16 forwarding streams (see
    /// `crate::forwarder`), but one of an earlier version forwards each
    /// proposal on a stream of its own, held until the proposal is applied,
    /// and may lead or follow this node during an upgrade. Before the
    /// batches, with credit for 64 streams in all, a follower
    /// holding 512 proposals queued most of them for credit while the
    /// leader had CPU to spare (three sites on loopback, 16 × 32 in flight:
    /// 3,700–3,900 publishes/s and ack p99 520–550 ms, against
    /// 4,800–5,400/s and 180–190 ms with credit for 1,024).
    pub(crate) fn transport_limits(&self) -> TransportLimits {
        let proposals = u32::try_from(self.proposals_in_flight_max).unwrap_or(u32::MAX);
        TransportLimits {
            inbound_streams_per_peer_max: self
                .limits
                .inbound_streams_per_peer_max
                .saturating_add(proposals),
            ..self.limits.clone()
        }
    }

    /// Checks that the limits fit together.
    pub(crate) fn check_limits(&self) -> Result<(), StartError> {
        if self.proposals_in_flight_max > PROPOSALS_IN_FLIGHT_LIMIT {
            return Err(StartError::Limits(format!(
                "proposals_in_flight_max {} exceeds {PROPOSALS_IN_FLIGHT_LIMIT}",
                self.proposals_in_flight_max
            )));
        }
        let entries = usize::try_from(self.append_entries_max).unwrap_or(usize::MAX);
        let append_bytes_max = entries
            .saturating_mul(self.command_bytes_max.saturating_add(ENTRY_OVERHEAD_BYTES))
            .saturating_add(APPEND_OVERHEAD_BYTES);
        if append_bytes_max > self.limits.frame_bytes_max {
            return Err(StartError::Limits(format!(
                "{} entries of {} bytes need frames of {append_bytes_max} bytes; frame_bytes_max is {}",
                self.append_entries_max, self.command_bytes_max, self.limits.frame_bytes_max
            )));
        }
        if self.forwarding.batches_in_flight_max == 0
            || self.forwarding.batch_bytes_max == 0
            || self
                .forwarding
                .batch_bytes_max
                .saturating_add(APPEND_OVERHEAD_BYTES)
                > self.limits.frame_bytes_max
        {
            return Err(StartError::Limits(format!(
                "forwarding: {} batches of {} bytes in flight; both must be positive and a batch must fit frame_bytes_max {}",
                self.forwarding.batches_in_flight_max,
                self.forwarding.batch_bytes_max,
                self.limits.frame_bytes_max
            )));
        }
        if self
            .limits
            .snapshot_chunk_bytes
            .saturating_add(APPEND_OVERHEAD_BYTES)
            > self.limits.frame_bytes_max
            || self.limits.snapshot_chunk_bytes == 0
        {
            return Err(StartError::Limits(format!(
                "snapshot_chunk_bytes {} must be positive and fit frame_bytes_max {}",
                self.limits.snapshot_chunk_bytes, self.limits.frame_bytes_max
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::ClusterCa;

    fn config() -> MeshConfig {
        let ca = ClusterCa::generate().unwrap();
        let node = ca.issue_node(1, &[]).unwrap();
        let identity = NodeIdentity::from_pem(
            ca.pem().cert_pem.as_bytes(),
            node.cert_pem.as_bytes(),
            node.key_pem.as_bytes(),
        )
        .unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        MeshConfig::new(1, listen, "127.0.0.1:1".into(), "data".into(), identity)
    }

    #[test]
    fn a_peer_gets_stream_credit_for_every_proposal_in_flight() {
        let mut config = config();
        config.limits.inbound_streams_per_peer_max = 64;
        config.proposals_in_flight_max = 4096;
        assert_eq!(config.transport_limits().inbound_streams_per_peer_max, 4160);
        config.proposals_in_flight_max = usize::MAX;
        assert_eq!(
            config.transport_limits().inbound_streams_per_peer_max,
            u32::MAX
        );
        assert!(config.check_limits().is_err(), "the credit is bounded");
        config.proposals_in_flight_max = PROPOSALS_IN_FLIGHT_LIMIT;
        assert!(config.check_limits().is_ok());
    }

    #[test]
    fn forwarded_batches_must_be_allowed_and_fit_a_frame() {
        let mut config = config();
        assert!(config.check_limits().is_ok());
        config.forwarding.batches_in_flight_max = 0;
        assert!(config.check_limits().is_err(), "nothing could be forwarded");
        config.forwarding.batches_in_flight_max = 1;
        config.forwarding.batch_bytes_max = config.limits.frame_bytes_max;
        assert!(
            config.check_limits().is_err(),
            "a full batch exceeds a frame"
        );
        config.forwarding.batch_bytes_max = 0;
        assert!(config.check_limits().is_err());
        config.forwarding.batch_bytes_max = 1;
        assert!(config.check_limits().is_ok());
    }
}
