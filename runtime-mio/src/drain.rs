//! A node's drain, shared by its event loops and the HTTP API.
//!
//! SIGTERM (every loop catches it) or `POST /v1/drain` (the API tells every loop) puts
//! each loop's core into draining ([`turnpike_core::Server::start_drain`]): new Allocates
//! are redirected (300 Try Alternate) or refused (508), live allocations go on. Each loop
//! writes here, once a second, how many allocations it still holds; the node is done when
//! every loop has written 0, or when `drain_timeout_s` has passed since the start. Then
//! every loop stops, and the process exits 0. A second SIGTERM stops at once.
//!
//! Only counts and times cross threads here, in atomics: the packet path never reads
//! them.

use core::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};
use turnpike_core::Instant;

/// Not yet reported: a loop that has not written its count holds the node up.
const UNKNOWN: u64 = u64::MAX;

/// The node's drain state.
#[derive(Debug)]
pub struct Drain {
    timeout: Duration,
    /// Core time (nanoseconds) the drain started at; 0: not draining.
    started_ns: AtomicU64,
    /// Wall clock at the start, unix milliseconds (for `/health`).
    started_unix_ms: AtomicU64,
    /// Allocations (live and being made) each loop still holds.
    counts: Box<[AtomicU64]>,
}

/// Why a draining loop stops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DrainEnd {
    /// No allocation is left on any loop.
    Drained,
    /// `drain_timeout_s` passed.
    TimedOut,
}

impl Drain {
    /// The drain of a node of `loops` loops, which may last `timeout`.
    pub fn new(loops: usize, timeout: Duration) -> Self {
        Drain {
            timeout,
            started_ns: AtomicU64::new(0),
            started_unix_ms: AtomicU64::new(0),
            counts: (0..loops.max(1)).map(|_| AtomicU64::new(UNKNOWN)).collect(),
        }
    }

    /// How long a drain may last.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Starts the drain at `now` (core time) and `unix_ms`; true if this call started it
    /// (whoever comes first logs it), false if it was under way.
    pub fn start(&self, now: Instant, unix_ms: u64) -> bool {
        let ns = now.as_nanos().max(1);
        let first = self
            .started_ns
            .compare_exchange(0, ns, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.started_unix_ms.store(unix_ms, Ordering::Release);
        }
        first
    }

    /// When the drain started (wall clock, unix ms), if it did.
    pub fn started_unix_ms(&self) -> Option<u64> {
        (self.started_ns.load(Ordering::Acquire) != 0)
            .then(|| self.started_unix_ms.load(Ordering::Acquire))
    }

    /// Whether the node drains.
    pub fn draining(&self) -> bool {
        self.started_ns.load(Ordering::Acquire) != 0
    }

    /// Loop `index` holds `allocations`.
    pub fn report(&self, index: usize, allocations: u64) {
        if let Some(c) = self.counts.get(index) {
            c.store(allocations, Ordering::Release);
        }
    }

    /// Allocations the loops hold, by their last reports (None until every loop
    /// reported).
    pub fn remaining(&self) -> Option<u64> {
        self.counts.iter().try_fold(0u64, |sum, c| {
            let n = c.load(Ordering::Acquire);
            (n != UNKNOWN).then(|| sum.saturating_add(n))
        })
    }

    /// Time left at `now` before the timeout (zero once passed); None if not draining.
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        let ns = self.started_ns.load(Ordering::Acquire);
        (ns != 0).then(|| {
            let deadline = Instant::from_nanos(ns) + self.timeout;
            deadline.since(now)
        })
    }

    /// Whether a draining node is done at `now`, and why.
    pub fn ended(&self, now: Instant) -> Option<DrainEnd> {
        if !self.draining() {
            return None;
        }
        if self.remaining() == Some(0) {
            return Some(DrainEnd::Drained);
        }
        (self.time_left(now) == Some(Duration::ZERO)).then_some(DrainEnd::TimedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_drained_when_every_loop_reported_none_left() {
        let d = Drain::new(2, Duration::from_secs(10));
        let t0 = Instant::from_secs(100);
        assert_eq!(d.ended(t0), None);
        assert!(d.start(t0, 5));
        assert!(!d.start(t0, 6));
        assert_eq!(d.started_unix_ms(), Some(5));
        d.report(0, 0);
        // Loop 1 has not reported: it may hold calls.
        assert_eq!(d.ended(t0), None);
        d.report(1, 2);
        assert_eq!(d.remaining(), Some(2));
        assert_eq!(d.ended(t0 + Duration::from_secs(9)), None);
        d.report(1, 0);
        assert_eq!(d.ended(t0), Some(DrainEnd::Drained));
    }

    #[test]
    fn a_drain_ends_at_its_timeout() {
        let d = Drain::new(1, Duration::from_secs(10));
        let t0 = Instant::from_secs(100);
        d.start(t0, 1);
        d.report(0, 3);
        assert_eq!(d.time_left(t0), Some(Duration::from_secs(10)));
        assert_eq!(d.ended(t0 + Duration::from_millis(9_999)), None);
        assert_eq!(
            d.ended(t0 + Duration::from_secs(10)),
            Some(DrainEnd::TimedOut)
        );
    }
}
