//! Virtual time: the monotonic clock every host shares, and the wall clock that faults may
//! move without touching the monotonic one.

use core::time::Duration;
use turnpike_core::Instant;

/// The simulation's monotonic clock. It only moves forward, and only to the time of the
/// next event: there are no ticks.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    now: Instant,
}

impl Clock {
    /// A clock that starts at `start`.
    pub fn new(start: Instant) -> Self {
        Clock { now: start }
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves to `at`. Returns false (and stays put) if `at` lies in the past: the queue
    /// never hands out an earlier event, so that would be a bug of the simulator.
    pub fn advance_to(&mut self, at: Instant) -> bool {
        if at < self.now {
            return false;
        }
        self.now = at;
        true
    }
}

/// The wall clock of a host: monotonic time plus an offset that a fault can change, as an
/// NTP step or an operator's `date -s` would.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ms: i128,
}

impl WallClock {
    /// A wall clock reading `unix_ms` at monotonic `now`.
    pub fn new(now: Instant, unix_ms: u64) -> Self {
        WallClock {
            offset_ms: i128::from(unix_ms) - i128::from(now.as_millis()),
        }
    }

    /// Unix milliseconds at monotonic `now` (0 if the clock was set before 1970).
    pub fn unix_ms(&self, now: Instant) -> u64 {
        u64::try_from(i128::from(now.as_millis()) + self.offset_ms).unwrap_or(0)
    }

    /// Unix seconds at monotonic `now`.
    pub fn unix_s(&self, now: Instant) -> u64 {
        self.unix_ms(now) / 1000
    }

    /// Steps the wall clock by `delta_ms` (negative: backwards).
    pub fn jump(&mut self, delta_ms: i64) {
        self.offset_ms += i128::from(delta_ms);
    }
}

/// Milliseconds as a `Duration` (helper for scenario values).
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_never_goes_back() {
        let mut c = Clock::new(Instant::from_secs(5));
        assert!(c.advance_to(Instant::from_secs(6)));
        assert!(!c.advance_to(Instant::from_secs(1)));
        assert_eq!(c.now(), Instant::from_secs(6));
    }

    #[test]
    fn wall_clock_jumps_without_moving_monotonic_time() {
        let t = Instant::from_secs(10);
        let mut w = WallClock::new(t, 1_700_000_000_000);
        w.jump(-3_600_000);
        assert_eq!(w.unix_s(t), 1_700_000_000 - 3600);
        assert_eq!(w.unix_s(t + ms(1000)), 1_700_000_000 - 3599);
    }
}
