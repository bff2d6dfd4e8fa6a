//! The Prometheus metrics of a node.
//!
//! Code anywhere in the node records through the `metrics` crate's macros
//! (`metrics::counter!(names::STANZAS_IN_TOTAL).increment(1)`), using the
//! names in [`names`] so the exposition stays the documented one. [`Metrics`]
//! installs the process-wide Prometheus recorder; it has no HTTP listener of
//! its own — the admin router ([`crate::admin`]) serves [`Metrics::render`] at
//! `GET /metrics`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names, all prefixed `vomesh_`. Label keys are in [`labels`].
pub mod names {
    /// Gauge: current Raft term of this node.
    pub const RAFT_TERM: &str = "vomesh_raft_term";
    /// Gauge: 1 while this node is the Raft leader, else 0.
    pub const RAFT_IS_LEADER: &str = "vomesh_raft_is_leader";
    /// Gauge: highest log index known committed.
    pub const RAFT_COMMIT_INDEX: &str = "vomesh_raft_commit_index";
    /// Gauge: highest log index applied to the pubsub state.
    pub const RAFT_APPLIED_INDEX: &str = "vomesh_raft_applied_index";
    /// Gauge `{peer}`: log entries a follower is behind the leader (leader only).
    pub const RAFT_REPLICATION_LAG: &str = "vomesh_raft_replication_lag";
    /// Counter: Raft terms this node has seen begin (recorded by the mesh).
    pub const RAFT_ELECTIONS_TOTAL: &str = "vomesh_raft_elections_total";
    /// Gauge: entries in the Raft log, last index minus purged (recorded by the mesh).
    pub const RAFT_LOG_ENTRIES: &str = "vomesh_raft_log_entries";
    /// Counter: snapshots of the state taken here (recorded by the mesh).
    pub const RAFT_SNAPSHOTS_BUILT_TOTAL: &str = "vomesh_raft_snapshots_built_total";
    /// Counter `{peer,outcome}`: whole snapshots sent to lagging peers (recorded by the mesh).
    pub const RAFT_SNAPSHOTS_SENT_TOTAL: &str = "vomesh_raft_snapshots_sent_total";
    /// Counter: snapshots installed from the leader (recorded by the mesh).
    pub const RAFT_SNAPSHOTS_INSTALLED_TOTAL: &str = "vomesh_raft_snapshots_installed_total";
    /// Gauge: bytes of the latest snapshot built or installed (recorded by the mesh).
    pub const RAFT_SNAPSHOT_BYTES: &str = "vomesh_raft_snapshot_bytes";
    /// Gauge: authenticated, resource-bound client sessions.
    pub const C2S_SESSIONS: &str = "vomesh_c2s_sessions";
    /// Gauge: open client TCP connections, authenticated or not.
    pub const C2S_CONNECTIONS: &str = "vomesh_c2s_connections";
    /// Counter: stanzas received from clients.
    pub const STANZAS_IN_TOTAL: &str = "vomesh_stanzas_in_total";
    /// Counter: stanzas written to clients.
    pub const STANZAS_OUT_TOTAL: &str = "vomesh_stanzas_out_total";
    /// Counter `{condition}`: stream errors sent, by RFC 6120 §4.9.3 condition.
    pub const STREAM_ERRORS_TOTAL: &str = "vomesh_stream_errors_total";
    /// Counter `{reason}`: failed SASL authentications, by RFC 6120 §6.5 condition.
    pub const AUTH_FAILURES_TOTAL: &str = "vomesh_auth_failures_total";
    /// Counter: clients disconnected because their outbound queue filled.
    pub const SLOW_CONSUMER_DISCONNECTS_TOTAL: &str = "vomesh_slow_consumer_disconnects_total";
    /// Counter `{reason}`: requests refused at a limit or by policy.
    pub const REJECTED_TOTAL: &str = "vomesh_rejected_total";
    /// Gauge: pubsub nodes in this site's replica.
    pub const PUBSUB_NODES: &str = "vomesh_pubsub_nodes";
    /// Gauge: current items (not the archive) across all pubsub nodes.
    pub const PUBSUB_ITEMS: &str = "vomesh_pubsub_items";
    /// Gauge: archive entries (XEP-0313) across all pubsub nodes.
    pub const PUBSUB_ARCHIVE_ENTRIES: &str = "vomesh_pubsub_archive_entries";
    /// Gauge: payload and item id bytes of those entries, what
    /// `[pubsub] max_archive_bytes` bounds.
    pub const PUBSUB_ARCHIVE_BYTES: &str = "vomesh_pubsub_archive_bytes";
    /// Counter `{limit}`: archive entries dropped to stay within
    /// `max_archive_entries_per_node` (`node`), `max_archive_bytes` (`site`)
    /// or `max_archive_age_seconds` (`age`).
    pub const PUBSUB_ARCHIVE_DROPPED_TOTAL: &str = "vomesh_pubsub_archive_dropped_total";
    /// Gauge: subscriptions across all pubsub nodes.
    pub const PUBSUB_SUBSCRIPTIONS: &str = "vomesh_pubsub_subscriptions";
    /// Counter: items committed to pubsub nodes (counted where applied).
    pub const PUBSUB_PUBLISHED_TOTAL: &str = "vomesh_pubsub_published_total";
    /// Counter `{condition}`: publish requests answered with an error, by
    /// the most specific condition (`invalid-payload`, `forbidden`, …).
    pub const PUBSUB_PUBLISH_ERRORS_TOTAL: &str = "vomesh_pubsub_publish_errors_total";
    /// Counter: notifications written to local subscribers.
    pub const PUBSUB_NOTIFICATIONS_TOTAL: &str = "vomesh_pubsub_notifications_total";
    /// Histogram: publish accepted → committed by the mesh.
    pub const PUBLISH_COMMIT_SECONDS: &str = "vomesh_publish_commit_seconds";
    /// Histogram: publication timestamp → notification written to a subscriber's socket.
    pub const DELIVERY_SECONDS: &str = "vomesh_delivery_seconds";
    /// Histogram: duration of each Raft log commit that fsyncs (recorded by the mesh).
    pub const STORAGE_FSYNC_SECONDS: &str = "vomesh_storage_fsync_seconds";
    /// Counter `{result}`: Raft log reads answered from the entries cached
    /// in memory (`hit`) or from disk (`miss`) (recorded by the mesh).
    pub const RAFT_LOG_READS_TOTAL: &str = "vomesh_raft_log_reads_total";
    /// Gauge: bytes of the files in the data directory.
    pub const STORAGE_BYTES: &str = "vomesh_storage_bytes";
    /// Gauge `{peer}`: 1 when the last mesh exchange with the peer got through, else 0 (recorded by the mesh).
    pub const MESH_PEER_REACHABLE: &str = "vomesh_mesh_peer_reachable";
    /// Gauge `{peer}`: smoothed QUIC round-trip time to the peer (recorded by the mesh).
    pub const QUIC_RTT_SECONDS: &str = "vomesh_quic_rtt_seconds";
    /// Gauge `{peer}`: largest UDP payload QUIC sends to the peer, as MTU discovery found it (recorded by the mesh).
    pub const QUIC_PATH_MTU_BYTES: &str = "vomesh_quic_path_mtu_bytes";
    /// Counter `{peer}`: QUIC packets to the peer declared lost (recorded by the mesh).
    pub const QUIC_LOST_PACKETS_TOTAL: &str = "vomesh_quic_lost_packets_total";
    /// Counter `{peer}`: UDP bytes sent to the peer (recorded by the mesh).
    pub const QUIC_SENT_BYTES_TOTAL: &str = "vomesh_quic_sent_bytes_total";
    /// Counter `{peer}`: UDP bytes received from the peer (recorded by the mesh).
    pub const QUIC_RECEIVED_BYTES_TOTAL: &str = "vomesh_quic_received_bytes_total";
    /// Gauge: 1 when `/readyz` would answer ready, else 0 (set on each scrape).
    pub const READY: &str = "vomesh_ready";
    /// Gauge: resident set size of the process.
    pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "vomesh_process_resident_memory_bytes";
    /// Gauge: file descriptors the process holds open.
    pub const PROCESS_OPEN_FDS: &str = "vomesh_process_open_fds";
    /// Counter `{source,peer}`: VOEvents received over VTP (source
    /// `author` or `upstream`; peer the author's address or the upstream's
    /// `HOST:PORT`).
    pub const VTP_EVENTS_IN_TOTAL: &str = "vomesh_vtp_events_in_total";
    /// Counter `{source,reason}`: VOEvents received over VTP and not
    /// published (invalid, not allowed, refused or not committed).
    pub const VTP_EVENTS_REFUSED_TOTAL: &str = "vomesh_vtp_events_refused_total";
    /// Counter `{peer}`: events written to VTP subscribers (peer: address).
    pub const VTP_EVENTS_OUT_TOTAL: &str = "vomesh_vtp_events_out_total";
    /// Counter `{direction}`: VTP acks `sent` and `received`.
    pub const VTP_ACKS_TOTAL: &str = "vomesh_vtp_acks_total";
    /// Counter `{direction,reason}`: VTP naks sent (by refusal reason) and
    /// received.
    pub const VTP_NAKS_TOTAL: &str = "vomesh_vtp_naks_total";
    /// Gauge `{role}`: VTP peers connected (`author`, `subscriber`, `upstream`).
    pub const VTP_PEERS: &str = "vomesh_vtp_peers";
    /// Counter `{reason}`: VTP subscribers dropped or refused.
    pub const VTP_SUBSCRIBERS_DROPPED_TOTAL: &str = "vomesh_vtp_subscribers_dropped_total";
    /// Counter: events not sent back to the VTP broker they came from.
    pub const VTP_LOOPS_PREVENTED_TOTAL: &str = "vomesh_vtp_loops_prevented_total";
    /// Counter: events not sent to a subscriber because none of its XPath
    /// filters matched.
    pub const VTP_EVENTS_FILTERED_TOTAL: &str = "vomesh_vtp_events_filtered_total";
    /// Histogram: an author's event received → its ack or nak written
    /// (the ack waits for the commit).
    pub const VTP_AUTHOR_ANSWER_SECONDS: &str = "vomesh_vtp_author_answer_seconds";
}

/// Label keys of the labelled metrics in [`names`].
pub mod labels {
    /// Of [`super::names::RAFT_REPLICATION_LAG`]: the follower's node id.
    pub const PEER: &str = "peer";
    /// Of [`super::names::STREAM_ERRORS_TOTAL`]: e.g. `policy-violation`.
    pub const CONDITION: &str = "condition";
    /// Of [`super::names::AUTH_FAILURES_TOTAL`] and [`super::names::REJECTED_TOTAL`].
    pub const REASON: &str = "reason";
}

/// Bucket bounds of every `*_seconds` histogram: 100 µs to 10 s in 1-2.5-5
/// steps, wide enough for a loopback commit and a transatlantic one.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often histogram samples are folded into their buckets between
/// scrapes, bounding the memory an unscraped node spends on them.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed recorder. Cloning is cheap; every clone renders the same
/// registry.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another (non-vomesh) recorder already owns the process.
    #[error("cannot install the Prometheus metrics recorder: {0}")]
    Install(#[from] BuildError),
}

/// The recorder of this process, once installed. `metrics` allows one global
/// recorder per process; installing is therefore idempotent and every caller
/// (the node, tests sharing a process) gets a handle to the same one.
static INSTALLED: Mutex<Option<Metrics>> = Mutex::new(None);

impl Metrics {
    /// Installs the process-wide recorder and describes every metric in
    /// [`names`]; later calls return the recorder already installed.
    pub fn install() -> Result<Metrics, MetricsError> {
        // A poisoned lock only means another installer panicked; the Option
        // inside is still either None or a complete Metrics.
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(metrics) = installed.as_ref() {
            return Ok(metrics.clone());
        }
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)?
            .install_recorder()?;
        describe_all();
        let metrics = Metrics { handle };
        *installed = Some(metrics.clone());
        Ok(metrics)
    }

    /// The Prometheus text exposition (format 0.0.4), process metrics
    /// refreshed first.
    pub fn render(&self) -> String {
        record_process_metrics();
        self.handle.render()
    }

    /// Every [`UPKEEP_INTERVAL`], folds pending histogram samples into
    /// buckets and measures the bytes under `data_dir`
    /// ([`names::STORAGE_BYTES`]), until the task is aborted or the runtime
    /// stops.
    pub fn spawn_upkeep(&self, data_dir: PathBuf) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticks.tick().await;
                handle.run_upkeep();
                let dir = data_dir.clone();
                // A walk of the directory is file system I/O: off the executor.
                match tokio::task::spawn_blocking(move || dir_bytes(&dir)).await {
                    Ok(Ok(bytes)) => metrics::gauge!(names::STORAGE_BYTES).set(bytes as f64),
                    Ok(Err(err)) => tracing::debug!(%err, "cannot measure the data directory"),
                    Err(err) => tracing::debug!(%err, "data directory measurement failed"),
                }
            }
        })
    }
}

fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_gauge!(RAFT_TERM, Unit::Count, "Current Raft term of this node.");
    describe_gauge!(
        RAFT_IS_LEADER,
        "1 while this node is the Raft leader, else 0."
    );
    describe_gauge!(
        RAFT_COMMIT_INDEX,
        Unit::Count,
        "Highest Raft log index known committed."
    );
    describe_gauge!(
        RAFT_APPLIED_INDEX,
        Unit::Count,
        "Highest Raft log index applied to the pubsub state."
    );
    describe_gauge!(
        RAFT_REPLICATION_LAG,
        Unit::Count,
        "Log entries each follower (label peer) is behind this leader."
    );
    describe_counter!(
        RAFT_ELECTIONS_TOTAL,
        Unit::Count,
        "Raft terms this node has seen begin (one per election)."
    );
    describe_gauge!(
        RAFT_LOG_ENTRIES,
        Unit::Count,
        "Entries in the Raft log (last index minus purged)."
    );
    describe_counter!(
        RAFT_SNAPSHOTS_BUILT_TOTAL,
        Unit::Count,
        "Snapshots of the replicated state taken at this node."
    );
    describe_counter!(
        RAFT_SNAPSHOTS_SENT_TOTAL,
        Unit::Count,
        "Whole snapshots sent to a lagging peer, by outcome (sent, failed)."
    );
    describe_counter!(
        RAFT_SNAPSHOTS_INSTALLED_TOTAL,
        Unit::Count,
        "Snapshots installed from the leader instead of replaying the log."
    );
    describe_gauge!(
        RAFT_SNAPSHOT_BYTES,
        Unit::Bytes,
        "Bytes of the latest snapshot built or installed."
    );
    describe_gauge!(
        C2S_SESSIONS,
        Unit::Count,
        "Authenticated, resource-bound client sessions."
    );
    describe_gauge!(
        C2S_CONNECTIONS,
        Unit::Count,
        "Open client connections, authenticated or not."
    );
    describe_counter!(
        STANZAS_IN_TOTAL,
        Unit::Count,
        "Stanzas received from clients."
    );
    describe_counter!(
        STANZAS_OUT_TOTAL,
        Unit::Count,
        "Stanzas written to clients."
    );
    describe_counter!(
        STREAM_ERRORS_TOTAL,
        Unit::Count,
        "Stream errors sent to clients, by RFC 6120 condition."
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        Unit::Count,
        "Failed SASL authentications, by reason."
    );
    describe_counter!(
        SLOW_CONSUMER_DISCONNECTS_TOTAL,
        Unit::Count,
        "Clients disconnected because their outbound stanza queue filled."
    );
    describe_counter!(
        REJECTED_TOTAL,
        Unit::Count,
        "Requests refused at a limit or by policy, by reason."
    );
    describe_counter!(
        PUBSUB_PUBLISHED_TOTAL,
        Unit::Count,
        "Items committed to pubsub nodes."
    );
    describe_counter!(
        PUBSUB_PUBLISH_ERRORS_TOTAL,
        Unit::Count,
        "Publish requests answered with an error, by condition."
    );
    describe_counter!(
        PUBSUB_NOTIFICATIONS_TOTAL,
        Unit::Count,
        "Pubsub notifications written to local subscribers."
    );
    describe_histogram!(
        PUBLISH_COMMIT_SECONDS,
        Unit::Seconds,
        "Time from a publish being accepted to its commit by the mesh."
    );
    describe_histogram!(
        DELIVERY_SECONDS,
        Unit::Seconds,
        "Time from an item's publication timestamp to its notification being written to a subscriber."
    );
    describe_gauge!(
        PUBSUB_NODES,
        Unit::Count,
        "Pubsub nodes in this site's replica."
    );
    describe_gauge!(
        PUBSUB_ITEMS,
        Unit::Count,
        "Current items across all pubsub nodes (the archive excluded)."
    );
    describe_gauge!(
        PUBSUB_ARCHIVE_ENTRIES,
        Unit::Count,
        "Archive entries (XEP-0313) across all pubsub nodes."
    );
    describe_gauge!(
        PUBSUB_ARCHIVE_BYTES,
        Unit::Bytes,
        "Payload and item id bytes of the archive entries across all pubsub nodes (bounded by max_archive_bytes)."
    );
    describe_counter!(
        PUBSUB_ARCHIVE_DROPPED_TOTAL,
        Unit::Count,
        "Archive entries dropped to stay within max_archive_entries_per_node (limit=node), max_archive_bytes (limit=site) or max_archive_age_seconds (limit=age)."
    );
    describe_gauge!(
        PUBSUB_SUBSCRIPTIONS,
        Unit::Count,
        "Subscriptions across all pubsub nodes."
    );
    describe_histogram!(
        STORAGE_FSYNC_SECONDS,
        Unit::Seconds,
        "Duration of each Raft log commit that fsyncs."
    );
    describe_counter!(
        RAFT_LOG_READS_TOTAL,
        Unit::Count,
        "Raft log reads answered from the entries cached in memory (hit) or from disk (miss)."
    );
    describe_gauge!(
        STORAGE_BYTES,
        Unit::Bytes,
        "Bytes of the files in the data directory."
    );
    describe_gauge!(
        MESH_PEER_REACHABLE,
        "1 when the last mesh exchange with the peer got through, else 0."
    );
    describe_gauge!(
        QUIC_RTT_SECONDS,
        Unit::Seconds,
        "Smoothed QUIC round-trip time to the peer."
    );
    describe_gauge!(
        QUIC_PATH_MTU_BYTES,
        Unit::Bytes,
        "Largest UDP payload QUIC sends to the peer, as MTU discovery found it."
    );
    describe_counter!(
        QUIC_LOST_PACKETS_TOTAL,
        Unit::Count,
        "QUIC packets to the peer declared lost."
    );
    describe_counter!(
        QUIC_SENT_BYTES_TOTAL,
        Unit::Bytes,
        "UDP bytes sent to the peer over QUIC."
    );
    describe_counter!(
        QUIC_RECEIVED_BYTES_TOTAL,
        Unit::Bytes,
        "UDP bytes received from the peer over QUIC."
    );
    describe_gauge!(
        READY,
        "1 when /readyz would answer ready, else 0 (evaluated at each scrape)."
    );
    describe_gauge!(
        PROCESS_RESIDENT_MEMORY_BYTES,
        Unit::Bytes,
        "Resident set size of the process."
    );
    describe_gauge!(
        PROCESS_OPEN_FDS,
        Unit::Count,
        "File descriptors the process holds open."
    );
    describe_counter!(
        VTP_EVENTS_IN_TOTAL,
        Unit::Count,
        "VOEvents received over VTP, by source (author, upstream) and peer."
    );
    describe_counter!(
        VTP_EVENTS_REFUSED_TOTAL,
        Unit::Count,
        "VOEvents received over VTP and not published, by source and reason."
    );
    describe_counter!(
        VTP_EVENTS_OUT_TOTAL,
        Unit::Count,
        "Events written to VTP subscribers, by peer."
    );
    describe_counter!(
        VTP_ACKS_TOTAL,
        Unit::Count,
        "VTP acks sent and received (label direction)."
    );
    describe_counter!(
        VTP_NAKS_TOTAL,
        Unit::Count,
        "VTP naks sent and received, by direction and reason."
    );
    describe_gauge!(
        VTP_PEERS,
        Unit::Count,
        "VTP peers connected, by role (author, subscriber, upstream)."
    );
    describe_counter!(
        VTP_SUBSCRIBERS_DROPPED_TOTAL,
        Unit::Count,
        "VTP subscribers dropped or refused, by reason."
    );
    describe_counter!(
        VTP_LOOPS_PREVENTED_TOTAL,
        Unit::Count,
        "Events not sent back to the VTP broker they were ingested from."
    );
    describe_counter!(
        VTP_EVENTS_FILTERED_TOTAL,
        Unit::Count,
        "Events not sent to a VTP subscriber because none of its XPath filters matched."
    );
    describe_histogram!(
        VTP_AUTHOR_ANSWER_SECONDS,
        Unit::Seconds,
        "VTP author event received to ack (after commit) or nak written."
    );
}

/// Samples resident memory and open descriptors from `/proc/self`. On a
/// system without procfs the gauges are left unset rather than reported as 0.
pub fn record_process_metrics() {
    match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => {
            if let Some(bytes) = vm_rss_bytes(&status) {
                metrics::gauge!(names::PROCESS_RESIDENT_MEMORY_BYTES).set(bytes as f64);
            }
        }
        Err(err) => tracing::debug!(%err, "cannot read /proc/self/status"),
    }
    match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => {
            metrics::gauge!(names::PROCESS_OPEN_FDS).set(entries.count() as f64);
        }
        Err(err) => tracing::debug!(%err, "cannot list /proc/self/fd"),
    }
}

/// Bytes of the regular files under `dir`, subdirectories included;
/// symbolic links are not followed.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// The `VmRSS:` line of `/proc/<pid>/status`, which the kernel writes in kB.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent() {
        let first = Metrics::install().unwrap();
        let second = Metrics::install().unwrap();
        metrics::counter!(names::SLOW_CONSUMER_DISCONNECTS_TOTAL).increment(1);
        assert!(
            first
                .render()
                .contains(names::SLOW_CONSUMER_DISCONNECTS_TOTAL)
        );
        assert!(
            second
                .render()
                .contains(names::SLOW_CONSUMER_DISCONNECTS_TOTAL)
        );
    }

    #[test]
    fn described_metric_renders_its_help_text() {
        let metrics = Metrics::install().unwrap();
        metrics::counter!(names::REJECTED_TOTAL, labels::REASON => "max-connections").increment(1);
        let text = metrics.render();
        assert!(
            text.contains(
                "# HELP vomesh_rejected_total Requests refused at a limit or by policy, by reason."
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE vomesh_rejected_total counter"),
            "{text}"
        );
        assert!(
            text.contains("vomesh_rejected_total{reason=\"max-connections\"}"),
            "{text}"
        );
    }

    #[test]
    fn seconds_histograms_have_buckets_from_100us_to_10s() {
        let metrics = Metrics::install().unwrap();
        metrics::histogram!(names::PUBLISH_COMMIT_SECONDS).record(0.003);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE vomesh_publish_commit_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("vomesh_publish_commit_seconds_bucket{le=\"0.0001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("vomesh_publish_commit_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vomesh_publish_commit_seconds_bucket{le=\"10\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn render_reports_process_metrics() {
        let text = Metrics::install().unwrap().render();
        assert!(text.contains("vomesh_process_open_fds "), "{text}");
        assert!(
            text.contains("vomesh_process_resident_memory_bytes "),
            "{text}"
        );
    }

    #[test]
    fn data_dir_bytes_count_files_in_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.secret"), [0u8; 32]).unwrap();
        std::fs::create_dir(dir.path().join("mesh")).unwrap();
        std::fs::write(
            dir.path().join("mesh").join("raft-snapshot.bin"),
            [0u8; 1000],
        )
        .unwrap();
        assert_eq!(dir_bytes(dir.path()).unwrap(), 1032);
    }

    #[test]
    fn vm_rss_is_read_in_kilobytes() {
        let status = "Name:\tvomesh\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(1234 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tvomesh\n"), None);
    }
}
