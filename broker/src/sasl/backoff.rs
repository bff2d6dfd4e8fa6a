//! Per-address back-off against online password guessing.
//!
//! After `failures_free` failed authentications from one address, every
//! further attempt must wait `delay_base_ms * 2^(n-1)` (capped at
//! `delay_max_ms`) after the latest failure, where `n` counts failures beyond
//! the free ones. The caller asks [`AuthBackoff::check`] before evaluating an
//! `<auth/>` and answers an early attempt with `<temporary-auth-failure/>`
//! (RFC 6120 §6.5.13) without looking at the credentials, so a guess made
//! while backing off tells the attacker nothing. Pure: time comes in as an
//! argument.
//!
//! # Address grouping
//! IPv6 addresses are tracked per /64: a single host or subscriber normally
//! owns a whole /64 (RFC 7421) and can change its interface identifier at will
//! (temporary addresses, RFC 8981), so per-address tracking would be evaded by
//! rotating addresses and would let one host fill the table. IPv4-mapped IPv6
//! addresses count as the IPv4 address they carry.
//!
//! # Memory bound
//! At most `tracked_ips_max` addresses are tracked. When a new one arrives at
//! the limit the entry whose latest failure is oldest is evicted. That is the
//! entry closest to being forgotten anyway, and evicting it only matters to an
//! attacker who already controls more than `tracked_ips_max` distinct
//! prefixes; per-address throttling is no defence against that scale, which
//! needs network-level measures, while the bound protects the server itself.
//!
//! # Success resets
//! A successful login clears the address, so users behind a shared NAT are
//! not punished for a colleague's typos. An attacker with one valid account
//! could use this to reset between guesses; the delay still bounds the
//! guessing rate for everyone else behind that address.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Limits for [`AuthBackoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffLimits {
    /// Failures allowed before any delay applies.
    pub failures_free: u32,
    /// Delay after the first failure beyond the free ones; doubles with each further failure.
    pub delay_base_ms: u64,
    /// Upper bound on the delay.
    pub delay_max_ms: u64,
    /// An address with no failure for this long starts afresh.
    pub forget_after_secs: u64,
    /// Most addresses (IPv6: /64 prefixes) tracked at once.
    pub tracked_ips_max: usize,
}

/// The key an address is tracked under.
type AddressKey = IpAddr;

#[derive(Debug, Clone, Copy)]
struct FailureRecord {
    failures: u32,
    last_failure: Instant,
}

/// Failed-authentication counts per client address.
#[derive(Debug)]
pub struct AuthBackoff {
    limits: BackoffLimits,
    records: HashMap<AddressKey, FailureRecord>,
    /// The same entries ordered by latest failure, for eviction and expiry
    /// without scanning the whole table.
    by_last_failure: BTreeSet<(Instant, AddressKey)>,
}

impl AuthBackoff {
    pub fn new(limits: BackoffLimits) -> Self {
        AuthBackoff {
            limits,
            records: HashMap::new(),
            by_last_failure: BTreeSet::new(),
        }
    }

    /// `Err(retry_after)` while the address must wait before its next
    /// attempt may be evaluated.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.forget_quiet(now);
        let Some(record) = self.records.get(&address_key(ip)) else {
            return Ok(());
        };
        let ready_at = record.last_failure + self.delay_after(record.failures);
        match ready_at.checked_duration_since(now) {
            Some(wait) if !wait.is_zero() => Err(wait),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `ip` at `now`.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        self.forget_quiet(now);
        let key = address_key(ip);
        let failures = match self.records.get(&key) {
            Some(record) => {
                self.by_last_failure.remove(&(record.last_failure, key));
                record.failures.saturating_add(1)
            }
            None => {
                self.make_room();
                1
            }
        };
        self.records.insert(
            key,
            FailureRecord {
                failures,
                last_failure: now,
            },
        );
        self.by_last_failure.insert((now, key));
        debug_assert_eq!(self.records.len(), self.by_last_failure.len());
    }

    /// Forgets the failures of `ip` after a successful authentication.
    pub fn record_success(&mut self, ip: IpAddr) {
        let key = address_key(ip);
        if let Some(record) = self.records.remove(&key) {
            self.by_last_failure.remove(&(record.last_failure, key));
        }
    }

    /// How many addresses are tracked now.
    pub fn tracked(&self) -> usize {
        self.records.len()
    }

    /// The wait imposed after `failures` failures.
    fn delay_after(&self, failures: u32) -> Duration {
        let Some(beyond_free) = failures.checked_sub(self.limits.failures_free) else {
            return Duration::ZERO;
        };
        if beyond_free == 0 {
            return Duration::ZERO;
        }
        let factor = 2u64.saturating_pow(beyond_free - 1);
        let delay_ms = self
            .limits
            .delay_base_ms
            .saturating_mul(factor)
            .min(self.limits.delay_max_ms);
        Duration::from_millis(delay_ms)
    }

    /// Drops every address whose latest failure is older than the quiet period.
    fn forget_quiet(&mut self, now: Instant) {
        let quiet = Duration::from_secs(self.limits.forget_after_secs);
        while let Some(&(last_failure, key)) = self.by_last_failure.first() {
            if now.saturating_duration_since(last_failure) < quiet {
                break;
            }
            self.by_last_failure.pop_first();
            self.records.remove(&key);
        }
    }

    /// Evicts the entries with the oldest failures until one more fits.
    fn make_room(&mut self) {
        while self.records.len() >= self.limits.tracked_ips_max {
            let Some((_, key)) = self.by_last_failure.pop_first() else {
                break;
            };
            self.records.remove(&key);
        }
    }
}

/// Groups an address with the others its owner can trivially use.
fn address_key(ip: IpAddr) -> AddressKey {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BackoffLimits = BackoffLimits {
        failures_free: 2,
        delay_base_ms: 1_000,
        delay_max_ms: 10_000,
        forget_after_secs: 600,
        tracked_ips_max: 3,
    };

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn failures(backoff: &mut AuthBackoff, address: IpAddr, count: u32, now: Instant) {
        for _ in 0..count {
            backoff.record_failure(address, now);
        }
    }

    #[test]
    fn free_failures_impose_no_delay() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let now = Instant::now();
        failures(&mut backoff, ip("192.0.2.1"), 2, now);
        assert_eq!(backoff.check(ip("192.0.2.1"), now), Ok(()));
    }

    #[test]
    fn delay_doubles_per_failure_and_is_capped() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let now = Instant::now();
        let address = ip("192.0.2.1");
        failures(&mut backoff, address, 2, now);
        for expected_ms in [1_000, 2_000, 4_000, 8_000, 10_000, 10_000] {
            backoff.record_failure(address, now);
            assert_eq!(
                backoff.check(address, now),
                Err(Duration::from_millis(expected_ms))
            );
        }
    }

    #[test]
    fn waiting_out_the_delay_allows_the_next_attempt() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let start = Instant::now();
        let address = ip("192.0.2.1");
        failures(&mut backoff, address, 3, start);
        assert_eq!(
            backoff.check(address, start + Duration::from_millis(400)),
            Err(Duration::from_millis(600))
        );
        assert_eq!(
            backoff.check(address, start + Duration::from_secs(1)),
            Ok(())
        );
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let limits = BackoffLimits {
            failures_free: 0,
            delay_max_ms: u64::MAX,
            ..LIMITS
        };
        let mut backoff = AuthBackoff::new(limits);
        let now = Instant::now();
        failures(&mut backoff, ip("192.0.2.1"), 200, now);
        assert!(backoff.check(ip("192.0.2.1"), now).is_err());
    }

    #[test]
    fn other_addresses_are_unaffected() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let now = Instant::now();
        failures(&mut backoff, ip("192.0.2.1"), 5, now);
        assert_eq!(backoff.check(ip("192.0.2.2"), now), Ok(()));
    }

    #[test]
    fn success_clears_the_address() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let now = Instant::now();
        failures(&mut backoff, ip("192.0.2.1"), 5, now);
        backoff.record_success(ip("192.0.2.1"));
        assert_eq!(backoff.check(ip("192.0.2.1"), now), Ok(()));
        assert_eq!(backoff.tracked(), 0);
    }

    #[test]
    fn quiet_addresses_are_forgotten() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let start = Instant::now();
        failures(&mut backoff, ip("192.0.2.1"), 20, start);
        let later = start + Duration::from_secs(600);
        assert_eq!(backoff.check(ip("192.0.2.1"), later), Ok(()));
        assert_eq!(backoff.tracked(), 0);
        // Counting starts afresh: the next failures are free again.
        failures(&mut backoff, ip("192.0.2.1"), 2, later);
        assert_eq!(backoff.check(ip("192.0.2.1"), later), Ok(()));
    }

    #[test]
    fn table_is_bounded_by_evicting_the_oldest_failure() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let start = Instant::now();
        for (offset_secs, address) in [(0, "192.0.2.1"), (1, "192.0.2.2"), (2, "192.0.2.3")] {
            failures(
                &mut backoff,
                ip(address),
                5,
                start + Duration::from_secs(offset_secs),
            );
        }
        let now = start + Duration::from_secs(3);
        backoff.record_failure(ip("192.0.2.4"), now);
        assert_eq!(backoff.tracked(), LIMITS.tracked_ips_max);
        assert_eq!(backoff.check(ip("192.0.2.1"), now), Ok(()));
        assert!(backoff.check(ip("192.0.2.2"), now).is_err());
        assert!(backoff.check(ip("192.0.2.3"), now).is_err());
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_share_a_counter() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let now = Instant::now();
        failures(&mut backoff, ip("2001:db8:1:2::1"), 2, now);
        backoff.record_failure(ip("2001:db8:1:2:ffff:abcd:1:2"), now);
        assert!(backoff.check(ip("2001:db8:1:2::99"), now).is_err());
        assert_eq!(backoff.check(ip("2001:db8:1:3::1"), now), Ok(()));
        assert_eq!(backoff.tracked(), 1);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let mut backoff = AuthBackoff::new(LIMITS);
        let now = Instant::now();
        failures(&mut backoff, ip("::ffff:192.0.2.1"), 3, now);
        assert!(backoff.check(ip("192.0.2.1"), now).is_err());
        assert_eq!(backoff.check(ip("::ffff:192.0.2.2"), now), Ok(()));
    }
}
