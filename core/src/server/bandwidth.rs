//! Bandwidth caps on relayed data: a token bucket per allocation and direction
//! (`Config::max_bps`) and one per direction for the whole server
//! (`Config::total_max_bps`). RFC 8656 §21.1.5 (and RFC 8489 §16.1.3) leave resource
//! limits to the server; a relay on the open internet needs them, as coturn's `max-bps`
//! and `bps-capacity` show. Rates are in bytes of relayed payload per second, each way.
//!
//! A bucket holds one second of traffic (at least [`MIN_BURST`] bytes, so one datagram of
//! the largest size always fits). Refilling is integer arithmetic on the time the core is
//! given: nothing here reads a clock or allocates.

use crate::time::Instant;

/// The smallest bucket: the largest UDP payload, so that a low rate still lets single
/// packets through instead of starving them forever.
pub const MIN_BURST: u64 = 65_536;

/// A token bucket counting bytes. Rate 0 means unlimited.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

/// Which way relayed data flows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Direction {
    /// From the client to peers.
    ToPeer = 0,
    /// From peers to the client.
    FromPeer = 1,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (0: unlimited).
    pub fn new(rate: u64, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: capacity(rate),
            last: now,
        }
    }

    /// True when the bucket has no limit.
    pub fn unlimited(&self) -> bool {
        self.rate == 0
    }

    /// Takes `bytes` if the bucket holds that many (always, when unlimited).
    pub fn take(&mut self, now: Instant, bytes: u64) -> bool {
        self.refill(now);
        if self.unlimited() {
            return true;
        }
        if self.tokens < bytes {
            return false;
        }
        self.tokens -= bytes;
        true
    }

    /// Adds the tokens earned since the last refill.
    fn refill(&mut self, now: Instant) {
        if self.unlimited() || now <= self.last {
            return;
        }
        let ns = u128::from(now.as_nanos() - self.last.as_nanos());
        let earned = ns * u128::from(self.rate) / 1_000_000_000;
        if earned == 0 {
            // Keep `last` so that sub-token intervals add up instead of being lost.
            return;
        }
        let cap = capacity(self.rate);
        self.tokens = u64::try_from(u128::from(self.tokens) + earned)
            .unwrap_or(u64::MAX)
            .min(cap);
        self.last = now;
    }
}

/// Takes `bytes` from both buckets if both hold enough, else from neither: a packet dropped
/// by the server-wide cap does not eat the allocation's budget, and the other way round.
pub(crate) fn admit(now: Instant, bytes: u64, a: &mut TokenBucket, b: &mut TokenBucket) -> bool {
    a.refill(now);
    b.refill(now);
    let fits = |t: &TokenBucket| t.unlimited() || t.tokens >= bytes;
    if !(fits(a) && fits(b)) {
        return false;
    }
    for t in [a, b] {
        if !t.unlimited() {
            t.tokens -= bytes;
        }
    }
    true
}

/// One second of traffic, at least one datagram.
fn capacity(rate: u64) -> u64 {
    rate.max(MIN_BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn unlimited_buckets_admit_everything() {
        let mut a = TokenBucket::new(0, t(0));
        let mut b = TokenBucket::new(0, t(0));
        for _ in 0..1000 {
            assert!(admit(t(0), 65_535, &mut a, &mut b));
        }
    }

    #[test]
    fn a_full_bucket_holds_one_second_then_refills_at_the_rate() {
        let mut a = TokenBucket::new(100_000, t(0));
        let mut none = TokenBucket::new(0, t(0));
        let mut sent = 0;
        while admit(t(0), 1000, &mut a, &mut none) {
            sent += 1000;
        }
        assert_eq!(sent, 100_000);
        // 10 ms earn 1000 bytes at 100 kB/s.
        assert!(!admit(t(9), 1000, &mut a, &mut none));
        assert!(admit(t(10), 1000, &mut a, &mut none));
        assert!(!admit(t(10), 1, &mut a, &mut none));
    }

    #[test]
    fn small_steps_of_time_add_up() {
        let mut a = TokenBucket::new(100_000, t(0));
        let mut none = TokenBucket::new(0, t(0));
        while admit(t(0), 1000, &mut a, &mut none) {}
        // 1 ns earns nothing at this rate; a million of them earn 100 bytes.
        for ns in 1..=1_000_000u64 {
            let _ = admit(Instant::from_nanos(ns), 0, &mut a, &mut none);
        }
        assert!(admit(
            Instant::from_nanos(1_000_000),
            100,
            &mut a,
            &mut none
        ));
    }

    #[test]
    fn a_low_rate_still_passes_one_large_datagram() {
        let mut a = TokenBucket::new(10, t(0));
        let mut none = TokenBucket::new(0, t(0));
        assert!(admit(t(0), 65_535, &mut a, &mut none));
        assert!(!admit(t(0), 65_535, &mut a, &mut none));
    }

    #[test]
    fn both_buckets_must_agree_and_a_refusal_takes_nothing() {
        let mut a = TokenBucket::new(MIN_BURST, t(0));
        let mut b = TokenBucket::new(MIN_BURST * 2, t(0));
        assert!(admit(t(0), MIN_BURST, &mut a, &mut b));
        // a is empty: b must keep its tokens.
        assert!(!admit(t(0), MIN_BURST, &mut a, &mut b));
        let mut fresh = TokenBucket::new(0, t(0));
        assert!(admit(t(0), MIN_BURST, &mut b, &mut fresh));
    }
}
