//! Choosing defaults with the simulator: candidate Raft timeouts for
//! intercontinental links, and append batch sizes, each run over many
//! seeds on the same five-site scenarios.
//!
//! - Timeouts: how long the mesh is without a leader when the leader site
//!   loses power (shorter is better), against how many needless elections
//!   jittery, lossy links cause when nothing fails (must stay 0).
//! - Batch size (`append_entries_max`): publish→delivery latency under a
//!   burst of 10 000 events in a minute.

use std::fmt::Write as _;
use std::path::Path;

use crate::report::{Distribution, Summary};
use crate::scenario::{
    Burst, Fault, FaultKind, Network, RaftLimits, Scenario, SiteList, Timeouts, Workload,
};
use crate::sim::run;

/// The timeout candidates: (heartbeat, election min, election max) ms.
pub const TIMEOUT_CANDIDATES: [(u64, u64, u64); 5] = [
    (200, 1_000, 2_000),
    (300, 1_500, 3_000),
    (500, 2_500, 5_000),
    (600, 3_000, 6_000),
    (1_000, 5_000, 10_000),
];

/// The batch candidates (entries per append).
pub const BATCH_CANDIDATES: [u64; 4] = [16, 64, 256, 1024];

fn five_sites(name: &str, timeouts: Timeouts) -> Scenario {
    Scenario {
        version: crate::scenario::SCENARIO_VERSION,
        name: name.into(),
        description: String::new(),
        seed: 1,
        sites: SiteList::Count(5),
        joining: Vec::new(),
        duration_s: 60.0,
        subscribers: 5,
        timeouts: Some(timeouts),
        raft: RaftLimits::default(),
        network: Network::default(),
        workload: Workload {
            rate_per_s: 1.0,
            bursts: Vec::new(),
        },
        faults: Vec::new(),
    }
}

fn label(t: &Timeouts) -> String {
    format!(
        "hb {} ms, election {}-{} ms",
        t.heartbeat_interval_ms, t.election_timeout_min_ms, t.election_timeout_max_ms
    )
}

/// One timeout candidate's figures.
pub struct TimeoutResult {
    pub timeouts: Timeouts,
    pub failover: Distribution,
    pub failover_samples_ms: Vec<f64>,
    pub unrecovered: usize,
    /// Runs whose mesh never committed its setup.
    pub unformed: u64,
    /// Elections beyond the first in the quiet, lossy runs, over all seeds.
    pub needless_elections: u64,
    pub quiet_runs: u64,
}

/// Runs every timeout candidate over `seeds` seeds; writes a table and
/// `failover-by-timeouts.svg` to `out`.
pub fn timeouts(out: &Path, seeds: u64) -> anyhow::Result<Vec<TimeoutResult>> {
    let mut results = Vec::new();
    for (hb, min, max) in TIMEOUT_CANDIDATES {
        let t = Timeouts {
            heartbeat_interval_ms: hb,
            election_timeout_min_ms: min,
            election_timeout_max_ms: max,
        };
        let mut failover = five_sites("tune-leader-loss", t);
        failover.faults = vec![Fault {
            at_s: 20.0,
            kind: FaultKind::CrashLeader,
        }];
        let mut quiet = five_sites("tune-quiet", t);
        quiet.duration_s = 600.0;
        quiet.workload.rate_per_s = 0.2;
        // A bad day on the links: 30 ms of jitter, 2 % loss.
        quiet.network = Network {
            jitter_ms: 30.0,
            loss: 0.02,
            bandwidth_mbps: 100.0,
        };
        let mut samples = Vec::new();
        let mut unrecovered = 0;
        let mut needless = 0;
        let mut unformed = 0;
        for seed in 1..=seeds {
            // A mesh that cannot commit its setup (appends that never fit
            // their deadline) is a result, not an error of the sweep.
            match run(&failover, seed) {
                Ok(out) => {
                    let s = Summary::of(&out);
                    samples.extend(s.failovers_ms.iter().copied());
                    unrecovered += s.failovers_unrecovered;
                }
                Err(_) => unformed += 1,
            }
            match run(&quiet, seed) {
                Ok(out) => needless += Summary::of(&out).final_term.saturating_sub(1),
                Err(_) => unformed += 1,
            }
        }
        results.push(TimeoutResult {
            timeouts: t,
            failover: Distribution::of(samples.clone()),
            failover_samples_ms: samples,
            unrecovered,
            unformed,
            needless_elections: needless,
            quiet_runs: seeds,
        });
    }
    let series: Vec<(String, Vec<f64>)> = results
        .iter()
        .map(|r| (label(&r.timeouts), r.failover_samples_ms.clone()))
        .collect();
    crate::plot::cdf_svg(
        &out.join("failover-by-timeouts.svg"),
        "5 sites: time without a leader after the leader site loses power",
        "failover time (ms of virtual time)",
        &series,
    )?;
    Ok(results)
}

pub fn timeouts_table(results: &[TimeoutResult]) -> String {
    let mut out = format!(
        "{:<36} {:>8} {:>8} {:>8} {:>8} {:>12} {:>10} {:>22}\n",
        "timeouts",
        "crashes",
        "p50 ms",
        "p99 ms",
        "max ms",
        "unrecovered",
        "no commit",
        "needless elections"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<36} {:>8} {:>8.0} {:>8.0} {:>8.0} {:>12} {:>10} {:>14} in {:>3} runs",
            label(&r.timeouts),
            r.failover.count,
            r.failover.p50_ms,
            r.failover.p99_ms,
            r.failover.max_ms,
            r.unrecovered,
            r.unformed,
            r.needless_elections,
            r.quiet_runs
        );
    }
    out
}

/// Runs the burst with each batch candidate over `seeds` seeds; returns
/// the table and writes `delivery-by-batch.svg` to `out`.
pub fn batches(out: &Path, seeds: u64) -> anyhow::Result<String> {
    let mut table = format!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>14}\n",
        "append_entries_max", "deliv p50", "deliv p99", "deliv max", "acked", "bytes/event"
    );
    let mut series = Vec::new();
    for batch in BATCH_CANDIDATES {
        let mut burst = five_sites("tune-burst", Timeouts::wan());
        burst.workload = Workload {
            rate_per_s: 0.0,
            bursts: vec![Burst {
                at_s: 5.0,
                events: 10_000,
                over_s: 60.0,
            }],
        };
        burst.duration_s = 90.0;
        burst.raft.append_entries_max = batch;
        let mut samples = Vec::new();
        let (mut acked, mut bytes) = (0usize, 0f64);
        for seed in 1..=seeds {
            let s = Summary::of(&run(&burst, seed)?);
            acked += s.acked;
            bytes += s.sites.iter().map(|x| x.bytes_per_event).sum::<f64>();
            samples.extend(s.sites.into_iter().flat_map(|x| x.delivery_samples_ms));
        }
        let d = Distribution::of(samples.clone());
        let _ = writeln!(
            table,
            "{:<24} {:>10.0} {:>10.0} {:>10.0} {:>10} {:>14.0}",
            batch,
            d.p50_ms,
            d.p99_ms,
            d.max_ms,
            acked,
            bytes / seeds as f64
        );
        series.push((format!("{batch} entries per append"), samples));
    }
    crate::plot::cdf_svg(
        &out.join("delivery-by-batch.svg"),
        "5 sites, 10 000 events in a minute: publish→delivery latency",
        "latency (ms of virtual time)",
        &series,
    )?;
    Ok(table)
}
