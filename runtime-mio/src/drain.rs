//! A node's drain, shared by its event loops and the HTTP API.
//!
//! SIGTERM (every loop catches it) or `POST /v1/drain` (the API tells every loop) puts
//! each loop's core into draining ([`turnpike_core::Server::start_drain`]): new Allocates
//! are redirected (300 Try Alternate) or refused (508), live allocations go on, and so do
//! reservations (an EVEN-PORT pair's second Allocate, with its RESERVATION-TOKEN, is still
//! taken: RFC 8656 §7.2). Each loop writes here, once a second, what it still holds
//! (allocations, those being made, reservations) and how many allocations it has created
//! so far; the node is done when every loop has held nothing for two report rounds in a
//! row without creating any allocation in between, or when `drain_timeout_s` has passed
//! since the start. Then every loop stops, and the process exits 0. A second SIGTERM
//! stops at once.
//!
//! Why two rounds: a loop's report is up to a second old when another loop reads it, and
//! a loop that held nothing can still take a token's Allocate. Round `r + 1` opens only
//! once every loop has reported in round `r`, so every report of `r + 1` comes after every
//! report of `r`; a loop that held nothing at both and created nothing between held
//! nothing all along (a gain is a pending Allocate, still counted at the second report or
//! turned into a created allocation). At the latest first report of round `r` all loops
//! then held nothing at once; with no reservation left no token can be redeemed and no
//! allocation made any more.
//!
//! Only counts and times cross threads here: the start in atomics (the API reads it), the
//! reports under a lock taken once a second per loop; the packet path never reads them.

use core::time::Duration;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use turnpike_core::Instant;

/// Not yet reported: a loop that has not written its count holds the node up.
const UNKNOWN: u64 = u64::MAX;

/// What a loop holds, as it last said.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    /// Allocations, those being made, and reservations.
    pub held: u64,
    /// Allocations created since the loop started (only grows).
    pub created: u64,
}

/// The reports of the loops, by rounds.
#[derive(Debug)]
struct Rounds {
    /// The round under way.
    round: u64,
    /// Per loop: its last report and the round it was made in.
    last: Vec<(Held, u64)>,
    /// Per loop, `created` of the last round if every loop held nothing in it.
    idle: Option<Vec<u64>>,
}

/// The node's drain state.
#[derive(Debug)]
pub struct Drain {
    timeout: Duration,
    /// Core time (nanoseconds) the drain started at; 0: not draining.
    started_ns: AtomicU64,
    /// Wall clock at the start, unix milliseconds (for `/health`).
    started_unix_ms: AtomicU64,
    rounds: Mutex<Rounds>,
    /// Every loop held nothing for two rounds: the node is drained (for good).
    drained: AtomicBool,
}

/// Why a draining loop stops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DrainEnd {
    /// No allocation or reservation is left on any loop.
    Drained,
    /// `drain_timeout_s` passed.
    TimedOut,
}

impl Drain {
    /// The drain of a node of `loops` loops, which may last `timeout`.
    pub fn new(loops: usize, timeout: Duration) -> Self {
        let unknown = Held {
            held: UNKNOWN,
            created: 0,
        };
        Drain {
            timeout,
            started_ns: AtomicU64::new(0),
            started_unix_ms: AtomicU64::new(0),
            rounds: Mutex::new(Rounds {
                round: 0,
                last: vec![(unknown, 0); loops.max(1)],
                idle: None,
            }),
            drained: AtomicBool::new(false),
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

    /// Loop `index` holds `now` (a report of the round under way); closes the round when
    /// it was the last to report in it.
    pub fn report(&self, index: usize, now: Held) {
        let Ok(mut r) = self.rounds.lock() else {
            return;
        };
        let round = r.round;
        let Some(slot) = r.last.get_mut(index) else {
            return;
        };
        *slot = (now, round);
        if r.last.iter().any(|(_, at)| *at != round) {
            return;
        }
        let created: Vec<u64> = r.last.iter().map(|(h, _)| h.created).collect();
        let empty = r.last.iter().all(|(h, _)| h.held == 0);
        if empty && r.idle.as_ref() == Some(&created) {
            self.drained.store(true, Ordering::Release);
        }
        r.idle = empty.then_some(created);
        r.round += 1;
    }

    /// What the loops hold, by their last reports (None until every loop reported).
    pub fn remaining(&self) -> Option<u64> {
        let r = self.rounds.lock().ok()?;
        r.last.iter().try_fold(0u64, |sum, (h, _)| {
            (h.held != UNKNOWN).then(|| sum.saturating_add(h.held))
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
        if self.drained.load(Ordering::Acquire) {
            return Some(DrainEnd::Drained);
        }
        (self.time_left(now) == Some(Duration::ZERO)).then_some(DrainEnd::TimedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(held: u64, created: u64) -> Held {
        Held { held, created }
    }

    #[test]
    fn a_node_is_drained_when_every_loop_held_nothing_for_two_rounds() {
        let d = Drain::new(2, Duration::from_secs(10));
        let t0 = Instant::from_secs(100);
        assert_eq!(d.ended(t0), None);
        assert!(d.start(t0, 5));
        assert!(!d.start(t0, 6));
        assert_eq!(d.started_unix_ms(), Some(5));
        d.report(0, held(0, 7));
        // Loop 1 has not reported: it may hold calls.
        assert_eq!(d.ended(t0), None);
        assert_eq!(d.remaining(), None);
        d.report(1, held(2, 3));
        assert_eq!(d.remaining(), Some(2));
        assert_eq!(d.ended(t0 + Duration::from_secs(9)), None);
        d.report(1, held(0, 3));
        d.report(0, held(0, 7));
        // Every loop held nothing once: not yet (a report may be stale).
        assert_eq!(d.remaining(), Some(0));
        assert_eq!(d.ended(t0), None);
        d.report(0, held(0, 7));
        assert_eq!(d.ended(t0), None);
        d.report(1, held(0, 3));
        assert_eq!(d.ended(t0), Some(DrainEnd::Drained));
        // For good.
        d.report(1, held(1, 4));
        assert_eq!(d.ended(t0), Some(DrainEnd::Drained));
    }

    #[test]
    fn a_loop_that_reported_nothing_and_then_took_a_token_allocate_holds_the_node() {
        let d = Drain::new(2, Duration::from_secs(10));
        let t0 = Instant::from_secs(100);
        d.start(t0, 1);
        // Loop 0 reports nothing; then takes a token's Allocate, made and ended before its
        // next report: its created count tells.
        d.report(0, held(0, 1));
        d.report(1, held(0, 1));
        d.report(1, held(0, 1));
        assert_eq!(d.ended(t0), None, "loop 0 has not reported in this round");
        d.report(0, held(0, 2));
        assert_eq!(d.ended(t0), None);
        // Two more quiet rounds end it.
        d.report(0, held(0, 2));
        d.report(1, held(0, 1));
        assert_eq!(d.ended(t0), Some(DrainEnd::Drained));
    }

    #[test]
    fn a_report_of_an_earlier_round_does_not_close_the_next() {
        let d = Drain::new(2, Duration::from_secs(10));
        let t0 = Instant::from_secs(100);
        d.start(t0, 1);
        d.report(0, held(0, 0));
        d.report(1, held(0, 0));
        // Loop 0 reports twice in the round under way; loop 1 not yet.
        d.report(0, held(0, 0));
        d.report(0, held(0, 0));
        assert_eq!(d.ended(t0), None);
        d.report(1, held(0, 0));
        assert_eq!(d.ended(t0), Some(DrainEnd::Drained));
    }

    #[test]
    fn a_reservation_holds_the_node() {
        let d = Drain::new(1, Duration::from_secs(10));
        let t0 = Instant::from_secs(100);
        d.start(t0, 1);
        for _ in 0..3 {
            d.report(0, held(1, 0));
        }
        assert_eq!(d.ended(t0), None);
    }

    #[test]
    fn a_drain_ends_at_its_timeout() {
        let d = Drain::new(1, Duration::from_secs(10));
        let t0 = Instant::from_secs(100);
        d.start(t0, 1);
        d.report(0, held(3, 0));
        assert_eq!(d.time_left(t0), Some(Duration::from_secs(10)));
        assert_eq!(d.ended(t0 + Duration::from_millis(9_999)), None);
        assert_eq!(
            d.ended(t0 + Duration::from_secs(10)),
            Some(DrainEnd::TimedOut)
        );
    }
}
