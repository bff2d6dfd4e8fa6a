//! The snapshot-transfer measurement (`snapshot_send`), run in miniature on
//! real sites so that it does not rot between manual runs: a stopped site
//! is caught up by snapshot and the figures are read.

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_site_is_caught_up_by_snapshot_and_measured() {
    // Past the first snapshot (every 500 entries) with room to spare.
    let measured = vomesh_tests::snapshot_send::measure(700, 1024)
        .await
        .expect("the run");
    println!("{measured}");
    // The snapshot (one every 500 entries) holds at least the first 500
    // payloads of 1 KiB.
    assert!(measured.snapshot_bytes > 500.0 * 1024.0, "{measured}");
    assert!(measured.leader_peak > 0.0 && measured.other_follower_peak > 0.0);
}
