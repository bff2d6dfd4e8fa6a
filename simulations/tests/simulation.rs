//! The simulator's own guarantees: a seed replays bit for bit, the
//! property mode finds no violation on a few dozen seeds, the checker
//! catches a broken invariant, and every shipped scenario file loads.

use std::path::Path;

use vomesh_sim::checker::{Violation, check};
use vomesh_sim::property::run_seeds;
use vomesh_sim::report::Summary;
use vomesh_sim::scenario::Scenario;
use vomesh_sim::sim::{EventOutcome, RunOutput, run};

/// Three sites, a leader loss, a restart, a partition and a heal, with a
/// lossy, jittery network: every source of randomness in play.
const FAULTY: &str = r#"
version = 1
name = "faulty-3"
sites = 3
duration_s = 40
subscribers = 30
[network]
jitter_ms = 20
loss = 0.02
bandwidth_mbps = 20
[workload]
rate_per_s = 2
[[fault]]
at_s = 5
kind = "crash-leader"
[[fault]]
at_s = 15
kind = "partition"
site = "hawaii"
[[fault]]
at_s = 20
kind = "restart"
site = "chile"
[[fault]]
at_s = 25
kind = "heal"
"#;

fn faulty_run(seed: u64) -> RunOutput {
    run(&Scenario::parse(FAULTY).unwrap(), seed).unwrap()
}

/// The text, CSV and SVG a run writes, as bytes.
fn outputs(run: &RunOutput, dir: &Path) -> Vec<u8> {
    let summary = Summary::of(run);
    let svg = dir.join("delivery.svg");
    let series: Vec<_> = summary
        .sites
        .iter()
        .map(|s| (s.name.clone(), s.delivery_samples_ms.clone()))
        .collect();
    vomesh_sim::plot::cdf_svg(&svg, "t", "ms", &series).unwrap();
    let mut bytes = summary.to_text().into_bytes();
    bytes.extend(summary.to_csv().into_bytes());
    bytes.extend(std::fs::read(svg).unwrap());
    bytes
}

#[test]
fn same_seed_gives_identical_output_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let first = outputs(&faulty_run(7), dir.path());
    let second = outputs(&faulty_run(7), dir.path());
    assert!(first == second, "two runs of seed 7 differ");
    let other = outputs(&faulty_run(8), dir.path());
    assert!(first != other, "seeds 7 and 8 gave the same run");
}

#[test]
fn faulty_run_keeps_every_invariant_and_fails_over() {
    let out = faulty_run(3);
    let summary = Summary::of(&out);
    assert_eq!(summary.violations, Vec::new(), "{}", summary.to_text());
    assert!(summary.acked > 0);
    // The crash of the first leader, and maybe the partition of the next.
    assert!(!out.failovers.is_empty());
    assert!(
        out.failovers.iter().all(|f| f.took.is_some()),
        "{:?}",
        out.failovers
    );
}

#[test]
fn property_mode_finds_no_violation_in_two_dozen_seeds() {
    let report = run_seeds(1, 24, 2);
    let failing: Vec<String> = report
        .failing
        .iter()
        .map(|r| format!("seed {}: {:?}", r.seed, r.violations))
        .collect();
    assert!(failing.is_empty(), "{failing:#?}");
    assert!(report.acked > 0);
}

/// The first acknowledged event of a run and its index.
fn first_acked(out: &RunOutput) -> (u64, u64) {
    out.events
        .iter()
        .find_map(|e| match e.outcome {
            EventOutcome::Acked { index, .. } => Some((e.seq, index)),
            _ => None,
        })
        .expect("an acknowledged event")
}

#[test]
fn checker_reports_an_acknowledged_entry_lost_at_one_site() {
    let mut out = faulty_run(3);
    let (seq, index) = first_acked(&out);
    let site = *out.journal.applied.keys().last().unwrap();
    out.journal
        .applied
        .get_mut(&site)
        .unwrap()
        .retain(|(i, _)| *i != index);
    out.journal.snapshots.remove(&site);
    let violations = check(&out.events, &out.journal, &out.liveness);
    assert!(
        violations.contains(&Violation::AckedLost { seq, index, site }),
        "{violations:?}"
    );
}

#[test]
fn checker_reports_sites_that_applied_different_commands_at_one_index() {
    let mut out = faulty_run(3);
    let (_, index) = first_acked(&out);
    let site = *out.journal.applied.keys().next().unwrap();
    for (i, digest) in out.journal.applied.get_mut(&site).unwrap() {
        if *i == index {
            *digest ^= 1;
        }
    }
    let violations = check(&out.events, &out.journal, &out.liveness);
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, Violation::Diverged { index: i, .. } if *i == index)),
        "{violations:?}"
    );
}

#[test]
fn checker_reports_no_progress_after_heal() {
    let out = faulty_run(3);
    let stuck = Err("no publication was acknowledged after the heal".to_string());
    let violations = check(&out.events, &out.journal, &stuck);
    assert!(matches!(violations.last(), Some(Violation::NoProgress(_))));
}

#[test]
fn every_shipped_scenario_loads_and_is_version_1() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scenario.version, 1);
        assert_eq!(
            path.file_stem().and_then(|s| s.to_str()),
            Some(scenario.name.as_str()),
            "a scenario file is named after its scenario"
        );
        names.push(scenario.name);
    }
    names.sort();
    for wanted in [
        "steady-3",
        "steady-5",
        "steady-7",
        "leader-power-loss-5",
        "partition-hour-5",
        "join-backlog-5",
        "burst-10k-5",
        "subscribers-100k-5",
    ] {
        assert!(names.iter().any(|n| n == wanted), "missing {wanted}");
    }
}
