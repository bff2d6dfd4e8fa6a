//! The load generator of the Prosody/ejabberd comparison, run in miniature
//! against a real vomesh node so that it does not rot between the (long,
//! manual) comparison runs: every scenario runs, and every notification it
//! expects arrives exactly once.

use std::time::Duration;

use vomesh_tests::bench::figures::Report;
use vomesh_tests::bench::scenarios::{self, Plan};
use vomesh_tests::bench::vomesh;
use vomesh_tests::pubsub::{read_xml, sample};

fn figure(report: &Report, scenario: &str, name: &str) -> f64 {
    report
        .figures
        .iter()
        .find(|f| f.scenario == scenario && f.name == name)
        .unwrap_or_else(|| panic!("no figure {scenario}/{name}: {:?}", report.figures))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_delivers_each_notification_once() {
    let accounts = vomesh::account_names("bench", 3);
    let (_node, target) = tokio::task::block_in_place(|| {
        vomesh::single_node(
            "vomesh",
            &accounts,
            "publisher",
            "bench-password",
            100,
            None,
        )
    });
    let plan = Plan {
        sessions: 20,
        concurrency: 8,
        fanouts: vec![(10, 5, 50.0), (20, 4, 20.0)],
        nodes: 2,
        subscribers_per_node: 5,
        nodes_events: 10,
        nodes_rate: 100.0,
        rate_subscribers: 5,
        rate_window: 4,
        rate_seconds: 1.0,
        throughput_publishers: 2,
        throughput_window: 4,
        throughput_seconds: 1.0,
        catchup_items: 30,
        payload: read_xml(&sample("Gaia16aac.xml")),
        scenarios: ["fanout", "nodes", "rate", "throughput", "catchup"]
            .map(String::from)
            .to_vec(),
        phase_timeout: Duration::from_secs(60),
        drain_quiet: Duration::from_secs(5),
        drain_max: Duration::from_secs(20),
    };
    let report = scenarios::run(&target, &plan).await.expect("the run");

    assert_eq!(figure(&report, "idle", "sessions established"), 20.0);
    assert!(figure(&report, "idle", "server RSS per idle session (KiB)") > 0.0);
    assert!(figure(&report, "idle", "server CPU per login (µs)") >= 0.0);
    for scenario in ["fanout-10", "fanout-20", "nodes", "rate"] {
        assert_eq!(
            figure(&report, scenario, "delivered (% of expected)"),
            100.0,
            "{scenario}"
        );
        assert_eq!(figure(&report, scenario, "missing deliveries"), 0.0);
        assert_eq!(figure(&report, scenario, "duplicate deliveries"), 0.0);
        assert_eq!(figure(&report, scenario, "sessions lost"), 0.0);
        assert!(figure(&report, scenario, "publish→delivery p99 (ms)") > 0.0);
    }
    assert_eq!(figure(&report, "fanout-20", "publishes sent"), 4.0);
    assert!(figure(&report, "rate", "publishes acknowledged/s") > 0.0);
    assert!(figure(&report, "throughput", "publishes acknowledged/s") > 0.0);
    assert_eq!(
        figure(&report, "catchup", "items retrieved (% of published)"),
        100.0
    );
    assert!(
        report.notes.iter().all(|n| !n.contains("refused")),
        "{:?}",
        report.notes
    );
}
