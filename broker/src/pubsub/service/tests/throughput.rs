//! Throughput of `apply` in isolation, for the figures in the closing note
//! of issue 3. Ignored by default (it measures, it does not check); run
//! with `cargo test -p vomesh-broker --release --lib throughput -- --ignored --nocapture`.

use std::time::Instant;

use super::*;

/// A 2 KiB payload.
fn payload() -> String {
    format!("<p xmlns='urn:bench'>{}</p>", "x".repeat(2048 - 30))
}

#[test]
#[ignore = "measurement, run by hand in release mode"]
fn publish_apply_rate_without_subscribers() {
    measure(0);
}

#[test]
#[ignore = "measurement, run by hand in release mode"]
fn publish_apply_rate_with_1000_subscribers() {
    measure(1_000);
}

fn measure(subscribers: usize) {
    let mut h = Harness::with_limits(PubsubLimits {
        items_per_node_default: 1_000,
        ..PubsubLimits::default()
    });
    h.create(ALICE, "n");
    for i in 0..subscribers {
        h.subscribe(&format!("user{i}@localhost/r"), "n").ok();
    }
    let publish = h
        .publish(ALICE, "n", None, &payload())
        .command
        .expect("a publish command");
    let count = 20_000u64;
    let started = Instant::now();
    let mut recipients = 0usize;
    for _ in 0..count {
        let outcome = h.apply(&publish);
        recipients += outcome
            .notifications
            .iter()
            .map(|n| n.recipients.len())
            .sum::<usize>();
    }
    let elapsed = started.elapsed();
    assert_eq!(
        recipients,
        subscribers * usize::try_from(count).unwrap_or(usize::MAX)
    );
    println!(
        "applied {count} publishes (2 KiB, {subscribers} subscribers) in {elapsed:?}: {:.0} publishes/s, {:.0} notification recipients/s",
        count as f64 / elapsed.as_secs_f64(),
        recipients as f64 / elapsed.as_secs_f64()
    );
}
