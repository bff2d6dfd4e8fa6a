//! Property mode: many seeds, each a random scenario with random faults
//! (crashes, restarts, leader loss, partitions, heals, lossy and jittery
//! links), checked for safety during the chaos and liveness after the heal.
//! A failing seed is printed with the command that replays it: the seed
//! alone determines the scenario and the run.

use std::time::Instant as WallInstant;

use crate::checker::{Violation, check};
use crate::rng::SimRng;
use crate::scenario::{Fault, FaultKind, Network, Scenario, SiteList, Workload};
use crate::sim::run;
use crate::sites::default_sites;

/// Seconds of chaos (publications and faults) before the heal.
pub const CHAOS_S: f64 = 60.0;

/// The random scenario of `seed`.
pub fn random_scenario(seed: u64) -> Scenario {
    // A stream of its own, so that the scenario does not shift when the run
    // (seeded with `seed` too) draws more or fewer numbers.
    let mut rng = SimRng::new(seed ^ 0x5ce7_a210_0000_0000);
    let n = [3usize, 5][rng.below(2) as usize];
    let names: Vec<String> = default_sites()
        .into_iter()
        .take(n)
        .map(|s| s.name)
        .collect();
    let site = |rng: &mut SimRng| names[rng.below(n as u64) as usize].clone();
    let faults = (0..1 + rng.below(5))
        .map(|_| {
            let at_s = 2.0 + rng.unit() * (CHAOS_S - 4.0);
            let kind = match rng.below(6) {
                0 => FaultKind::CrashLeader,
                1 => FaultKind::Crash {
                    site: site(&mut rng),
                },
                2 => FaultKind::Restart {
                    site: site(&mut rng),
                },
                3 => FaultKind::Partition {
                    site: site(&mut rng),
                },
                4 => FaultKind::Heal,
                _ => FaultKind::Partition {
                    site: site(&mut rng),
                },
            };
            Fault { at_s, kind }
        })
        .collect();
    Scenario {
        version: crate::scenario::SCENARIO_VERSION,
        name: format!("property-{seed}"),
        description: "random faults".into(),
        seed,
        sites: SiteList::Count(n),
        joining: Vec::new(),
        duration_s: CHAOS_S,
        subscribers: n as u64,
        timeouts: None,
        raft: Default::default(),
        network: Network {
            jitter_ms: rng.unit() * 30.0,
            loss: rng.unit() * 0.02,
            bandwidth_mbps: 10.0 + rng.unit() * 90.0,
        },
        workload: Workload {
            rate_per_s: 2.0,
            bursts: Vec::new(),
        },
        faults,
    }
}

/// The outcome of one seed.
#[derive(Debug)]
pub struct SeedResult {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub acked: usize,
}

/// Runs `seed`'s scenario and checks it.
pub fn check_seed(seed: u64) -> SeedResult {
    let scenario = random_scenario(seed);
    match run(&scenario, seed) {
        Ok(out) => SeedResult {
            seed,
            violations: check(&out.events, &out.journal, &out.liveness),
            acked: out
                .events
                .iter()
                .filter(|e| matches!(e.outcome, crate::sim::EventOutcome::Acked { .. }))
                .count(),
        },
        Err(e) => SeedResult {
            seed,
            violations: vec![Violation::NoProgress(format!("the run failed: {e}"))],
            acked: 0,
        },
    }
}

/// Totals of a property run.
#[derive(Debug)]
pub struct PropertyReport {
    pub seeds: u64,
    pub failing: Vec<SeedResult>,
    pub acked: usize,
    pub wall_s: f64,
}

impl PropertyReport {
    pub fn seeds_per_s(&self) -> f64 {
        self.seeds as f64 / self.wall_s.max(1e-9)
    }
}

/// Checks seeds `first..first + count` on `jobs` threads (each seed runs
/// on a runtime of its own, so threads do not change any run).
pub fn run_seeds(first: u64, count: u64, jobs: usize) -> PropertyReport {
    let started = WallInstant::now();
    let jobs = jobs.max(1) as u64;
    let results: Vec<SeedResult> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|j| {
                scope.spawn(move || {
                    (first + j..first + count)
                        .step_by(jobs as usize)
                        .map(check_seed)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let acked = results.iter().map(|r| r.acked).sum();
    let mut failing: Vec<SeedResult> = results
        .into_iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    failing.sort_by_key(|r| r.seed);
    PropertyReport {
        seeds: count,
        failing,
        acked,
        wall_s: started.elapsed().as_secs_f64(),
    }
}
