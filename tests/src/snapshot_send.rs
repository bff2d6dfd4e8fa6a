//! The memory a leader spends catching a site up by snapshot.
//!
//! Starts three release sites on loopback, stops one (`kill -9`), publishes
//! `--events` payloads of `--payload-bytes` at the leader until snapshots
//! have compacted the log past the stopped site, then restarts it: the
//! leader sends it the stored snapshot (and, while the site is down, keeps
//! trying to). The resident memory of the leader and of the other
//! follower, which holds the same state and sends nothing, is sampled
//! every 2 ms from the stop until the site reports the snapshot installed;
//! the run prints the snapshot's size and both peaks. `VOMESH_BIN` picks
//! the build, so two builds compare on the same work:
//!
//! (`snapshot_send` runs it; `VOMESH_BIN=/tmp/before/release/vomesh
//! target/release/snapshot_send` with another build.)

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vomesh_broker::client::Client;

use crate::cluster::TestCluster;
use crate::measure::{gauge, rss_bytes};
use crate::node::NodeOptions;
use crate::pubsub::{alert, create_iq, publish, request};

const SAMPLE_EVERY: Duration = Duration::from_millis(2);
const WAIT_MAX: Duration = Duration::from_secs(120);

/// What one run measured.
#[derive(Debug)]
pub struct Measured {
    pub events: usize,
    pub payload_bytes: usize,
    /// The leader's snapshot (`vomesh_raft_snapshot_bytes`) before the restart.
    pub snapshot_bytes: f64,
    /// From the restart until the site reported the snapshot installed.
    pub installed_after: Duration,
    /// Peak resident bytes, from the stop until the install.
    pub leader_peak: f64,
    pub other_follower_peak: f64,
}

/// Runs the scenario with `events` payloads of `payload_bytes` each
/// (enough that snapshots, one every 500 entries, pass the stopped site).
pub async fn measure(events: usize, payload_bytes: usize) -> anyhow::Result<Measured> {
    let mut cluster = TestCluster::start_custom(
        3,
        // A snapshot every 500 entries, and little log kept after one, so
        // the stopped site falls behind what the leader's log holds.
        "snapshot_every_entries = 500\n\
         snapshot_log_growth_percent = 0\n\
         log_entries_kept_after_snapshot = 10\n",
        Box::new(|_| NodeOptions::default()),
    );
    cluster.add_user("alice", "wonderland");
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let behind = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let behind_last = status_index(&cluster, behind, "last_log_index")?;
    let pids = [leader, other].map(|site| cluster.nodes[site].pid());
    let [Some(leader_pid), Some(other_pid)] = pids else {
        bail!("the leader and the other follower run");
    };
    let sampler = PeakSampler::start([leader_pid, other_pid]);
    tokio::task::block_in_place(|| cluster.nodes[behind].kill9());

    let mut alice = Client::connect(&cluster.nodes[leader].client_config("alice", "wonderland"))
        .await
        .context("alice logs in")?;
    request(&mut alice, create_iq("bulk", &[])).await;
    let text = "x".repeat(payload_bytes);
    for n in 0..events {
        publish(&mut alice, "bulk", Some(&format!("e{n}")), alert(&text)).await;
    }
    // Until the leader's log no longer holds what the stopped site lacks.
    let deadline = Instant::now() + WAIT_MAX;
    while status_index(&cluster, leader, "snapshot_index")? <= behind_last + 10 + 1 {
        if Instant::now() > deadline {
            bail!("no snapshot past the stopped site in {WAIT_MAX:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snapshot_bytes = gauge(
        &cluster.nodes[leader].metrics(),
        "vomesh_raft_snapshot_bytes",
    )
    .context("the leader's snapshot size")?;

    let started = Instant::now();
    tokio::task::block_in_place(|| cluster.nodes[behind].restart());
    while !cluster.nodes[behind]
        .log()
        .contains("mesh: snapshot installed from the leader")
    {
        if started.elapsed() > WAIT_MAX {
            bail!("the restarted site installed no snapshot in {WAIT_MAX:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let [leader_peak, other_follower_peak] = sampler.finish().map(|peak| peak as f64);
    Ok(Measured {
        events,
        payload_bytes,
        snapshot_bytes,
        installed_after: elapsed,
        leader_peak,
        other_follower_peak,
    })
}

impl fmt::Display for Measured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |bytes: f64| bytes / 1e6;
        let held = self.leader_peak - self.other_follower_peak;
        writeln!(
            f,
            "snapshot: {:.1} MB ({} events of {} B), installed {:.0} ms after the restart",
            mb(self.snapshot_bytes),
            self.events,
            self.payload_bytes,
            self.installed_after.as_secs_f64() * 1e3
        )?;
        writeln!(f, "peak resident, leader: {:.1} MB", mb(self.leader_peak))?;
        writeln!(
            f,
            "peak resident, the other follower: {:.1} MB",
            mb(self.other_follower_peak)
        )?;
        write!(
            f,
            "leader - follower: {:.1} MB ({:.2} snapshots)",
            mb(held),
            held / self.snapshot_bytes
        )
    }
}

/// The peak resident memory of two processes, sampled on a thread of its
/// own every [`SAMPLE_EVERY`] until finished (or dropped, when a run fails).
struct PeakSampler {
    peaks: Arc<[AtomicU64; 2]>,
    stop: Arc<AtomicBool>,
}

impl PeakSampler {
    fn start(pids: [u32; 2]) -> Self {
        let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let (sampled, stopped) = (peaks.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                for (peak, pid) in sampled.iter().zip(pids) {
                    if let Ok(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Self { peaks, stop }
    }

    /// The peaks, in bytes, in the order of the pids.
    fn finish(self) -> [u64; 2] {
        self.stop.store(true, Ordering::Relaxed);
        [0, 1].map(|i| self.peaks[i].load(Ordering::Relaxed))
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn status_index(cluster: &TestCluster, node: usize, field: &str) -> anyhow::Result<u64> {
    cluster.nodes[node]
        .status()
        .and_then(|status| status[field].as_u64())
        .with_context(|| format!("{field} in the status of site {node}"))
}
