//! The short form of the randomised failover suite (`src/bin/nemesis.rs`)
//! for CI: a three-node mesh of real processes, about a minute of faults of
//! every kind from a fixed seed, and the history checker's verdict. Network
//! faults run where network namespaces can be made (root); elsewhere they
//! are skipped with the reason printed and the loopback faults (kill,
//! pause, clock, membership, power loss) still run.

use std::time::Duration;

use vomesh_tests::nemesis::{FaultKind, Options, run};

/// Any seed will do: the planner runs every kind at least once.
const SEED: u64 = 11;
/// Quiet and fault time planned (recovery waits come on top).
const DURATION: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_minute_of_every_fault_loses_nothing_acknowledged() {
    let keep_dir = std::env::temp_dir().join("vomesh-nemesis-short");
    println!("nemesis: seed {SEED}");
    let report = run(Options {
        nodes: 3,
        duration: DURATION,
        seed: SEED,
        kinds: FaultKind::ALL.to_vec(),
        snapshot_every_entries: 100,
        pause_between_publishes: Duration::from_millis(20),
        keep_dir,
        namespaces: true,
    })
    .await;
    println!("{report}");
    assert!(report.passed(), "the nemesis run failed:\n{report}");
    assert!(
        report.history.acknowledged > 100,
        "publishes were acknowledged"
    );
    // Every kind ran, except those this machine cannot do (printed).
    for kind in FaultKind::ALL {
        let skipped = report.skipped.iter().any(|(k, _)| *k == kind);
        let ran = report.faults.iter().any(|f| f.kind == kind);
        assert!(skipped || ran, "no {kind} fault was injected");
    }
}
