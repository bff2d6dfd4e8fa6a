//! The wall clock, read in one place: the I/O layer stamps commands with it
//! before they are proposed (the replicated state never reads a clock).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch. A clock set before 1970 reads as 0,
/// one past the year 294247 as `i64::MAX`; neither happens on a working host.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}
