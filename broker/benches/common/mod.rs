//! Timing shared by the benches.

use std::time::{Duration, Instant};

/// The fastest of `rounds` runs of `run`, each on a fresh `setup()`,
/// which is not timed.
pub fn fastest<T>(rounds: usize, mut setup: impl FnMut() -> T, mut run: impl FnMut(T)) -> Duration {
    (0..rounds)
        .map(|_| {
            let input = setup();
            let started = Instant::now();
            run(input);
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}
