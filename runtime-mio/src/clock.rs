//! Time for the core: a monotonic clock mapped onto [`turnpike_core::Instant`], and the
//! wall clock read separately (the core only uses it for REST-username expiry).

use core::time::Duration;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use turnpike_core::Instant;

/// The epoch of every [`Clock`] of the process, set by the first: the monotonic instant,
/// and the wall clock's time since 1970 then.
static EPOCH: OnceLock<(std::time::Instant, Duration)> = OnceLock::new();

/// The runtime's clock: the monotonic clock, anchored at the wall clock's reading when the
/// process started (nanoseconds since 1970 then, plus the monotonic time since). A wall
/// clock that moves later moves no timer; and relays of a fleet count time on about one
/// scale, so a nonce dated by one relay is dated alike by another that shares its nonce
/// key (`node_secret`), within the nonce's future slack of a second.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
    anchor: Duration,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose epoch is the process's first clock: every event loop's core then
    /// counts time on one scale, so a nonce dated by one loop is dated alike by another.
    pub fn new() -> Self {
        let (start, anchor) = *EPOCH.get_or_init(|| {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            (std::time::Instant::now(), wall)
        });
        Clock { start, anchor }
    }

    /// The core's time now.
    pub fn now(&self) -> Instant {
        to_core(self.anchor.saturating_add(self.start.elapsed()))
    }

    /// The wall clock, milliseconds since 1970 (0 if the system clock is before 1970).
    pub fn unix_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// The core instant `elapsed` after the clock's epoch (saturating after 584 years).
pub fn to_core(elapsed: Duration) -> Instant {
    Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

/// How long to wait at `now` for a deadline, rounded up to whole milliseconds: epoll
/// sleeps in milliseconds, and rounding down would wake the loop just before the
/// deadline and spin until it passes.
pub fn wait_until(now: Instant, deadline: Instant) -> Duration {
    let nanos = deadline.since(now).as_nanos();
    let millis = nanos.div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_elapsed_time_to_nanoseconds() {
        assert_eq!(
            to_core(Duration::from_millis(1500)),
            Instant::from_millis(1500)
        );
        assert_eq!(to_core(Duration::from_nanos(7)).as_nanos(), 7);
        assert_eq!(to_core(Duration::MAX), Instant::from_nanos(u64::MAX));
    }

    #[test]
    fn waits_round_up_and_never_go_negative() {
        let now = Instant::from_millis(10);
        assert_eq!(
            wait_until(now, Instant::from_nanos(10_000_001)),
            Duration::from_millis(1)
        );
        assert_eq!(
            wait_until(now, Instant::from_millis(25)),
            Duration::from_millis(15)
        );
        assert_eq!(wait_until(now, Instant::from_millis(3)), Duration::ZERO);
        assert_eq!(wait_until(now, now), Duration::ZERO);
    }

    #[test]
    fn clock_is_monotonic() {
        let c = Clock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(Clock::unix_ms() > 1_600_000_000_000);
    }

    #[test]
    fn clocks_of_one_process_share_their_epoch() {
        let first = Clock::new();
        std::thread::sleep(Duration::from_millis(5));
        let later = Clock::new();
        // Read the later clock first: with one epoch it cannot be behind the first.
        let b = later.now();
        let a = first.now();
        assert!(a >= b);
        assert!(b.as_nanos() >= 1_600_000_000 * 1_000_000_000);
    }

    #[test]
    fn core_time_starts_at_the_wall_clock() {
        // Two processes started at about the same time count about the same time.
        let now_ms = Clock::new().now().as_millis();
        let wall_ms = Clock::unix_ms();
        assert!(now_ms.abs_diff(wall_ms) < 5_000, "{now_ms} vs {wall_ms}");
    }
}
