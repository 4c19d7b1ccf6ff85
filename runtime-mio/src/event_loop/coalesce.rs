//! Interrupt moderation that follows the loop's own packet rate.
//!
//! A fixed pause buys a loop `rate × pause` datagrams per wake-up: with N loops each sees
//! 1/N of the node's packets, so the same pause buys N times less, and at low rates it
//! only adds latency. The loop keeps a moving average of the datagrams (and stream reads)
//! it takes per second, and after a small round pauses just long enough for the next
//! round to carry [`TARGET_BATCH`] inputs, at most `coalesce_us`. Where even the longest
//! pause would gather fewer than [`WORTH_PAUSING`] inputs (half a datagram), it does not
//! pause: the wake-ups are few, and waiting would only delay the packets.

use std::time::{Duration, Instant};

/// Inputs a round should carry for its wake-up to be cheap per packet.
pub const TARGET_BATCH: f64 = 16.0;
/// Fewest inputs the longest pause must be expected to gather to be worth its latency.
/// Half an input: a round of one, then a pause gathering half a datagram, already carries
/// 1.5 per wake-up; below that (under 5 000 inputs a second per loop at 100 µs) the loop
/// is quiet enough that its wake-ups cost little, and it answers at once.
pub const WORTH_PAUSING: f64 = 0.5;
/// Time constant of the rate's moving average.
const WINDOW: Duration = Duration::from_millis(20);

/// The loop's rate and the pause it implies.
#[derive(Clone, Debug)]
pub struct Coalesce {
    /// Longest pause (`coalesce_us`).
    max: Duration,
    /// Moving average of inputs per second.
    rate: f64,
    /// End of the last round.
    last: Option<Instant>,
}

impl Coalesce {
    /// Pauses of at most `max`.
    pub fn new(max: Duration) -> Coalesce {
        Coalesce {
            max,
            rate: 0.0,
            last: None,
        }
    }

    /// After a round that took `inputs` and ended at `now`: how long to pause before
    /// polling again (None: poll at once). `small` is false for a round that was big, or
    /// left sockets with reads to do: a busy loop never pauses.
    pub fn after_round(&mut self, now: Instant, inputs: usize, small: bool) -> Option<Duration> {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            if dt > 0.0 {
                // An exponential moving average over time, not over rounds: a long idle
                // wait counts as long.
                let w = (dt / WINDOW.as_secs_f64()).min(1.0);
                self.rate += w * (inputs as f64 / dt - self.rate);
            }
        }
        self.last = Some(now);
        if !small || inputs == 0 {
            return None;
        }
        let max = self.max.as_secs_f64();
        if self.rate * max < WORTH_PAUSING {
            return None;
        }
        // What arrives during the pause is counted over the time since `now`, the pause
        // included: the rate is of arrivals, not of the loop's work.
        Some(Duration::from_secs_f64((TARGET_BATCH / self.rate).min(max)))
    }

    /// The moving average of inputs per second.
    #[cfg(test)]
    fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop fed `rate` inputs a second for a second: a round takes 5 µs, then the loop
    /// pauses as told, or waits for the next input. The pauses it took.
    fn steady(c: &mut Coalesce, rate: f64) -> Vec<Option<Duration>> {
        let mut now = Instant::now();
        let (mut carry, mut pause, mut t) = (0.0, Duration::ZERO, 0.0);
        let mut pauses = Vec::new();
        while t < 1.0 {
            let gap = (1.0 / rate).max(5e-6 + pause.as_secs_f64());
            t += gap;
            now += Duration::from_secs_f64(gap);
            carry += rate * gap;
            let inputs = carry.floor();
            carry -= inputs;
            let p = c.after_round(now, inputs as usize, inputs < 16.0);
            pause = p.unwrap_or_default();
            pauses.push(p);
        }
        pauses
    }

    #[test]
    fn a_slow_loop_does_not_pause() {
        // 1 000 inputs a second: 100 µs would gather 0.1 of one.
        let mut c = Coalesce::new(Duration::from_micros(100));
        assert!(steady(&mut c, 1000.0).iter().all(Option::is_none));
        assert!((c.rate() - 1000.0).abs() < 100.0, "{}", c.rate());
    }

    #[test]
    fn a_moderate_loop_pauses_the_maximum() {
        // 40 000 a second: 16 take 400 µs, more than the 100 µs allowed.
        let mut c = Coalesce::new(Duration::from_micros(100));
        let p = steady(&mut c, 40_000.0);
        assert_eq!(p.last(), Some(&Some(Duration::from_micros(100))));
    }

    #[test]
    fn a_fast_loop_pauses_just_long_enough_for_a_batch() {
        // 400 000 a second: 16 take 40 µs, well under the 1 ms allowed.
        let mut c = Coalesce::new(Duration::from_micros(1000));
        let p = steady(&mut c, 400_000.0);
        let late: Vec<Duration> = p.iter().skip(p.len() / 2).flatten().copied().collect();
        assert!(!late.is_empty());
        assert!(
            late.iter().all(|d| (30..=50).contains(&d.as_micros())),
            "{:?}",
            late.first()
        );
    }

    #[test]
    fn a_busy_round_never_pauses() {
        let mut c = Coalesce::new(Duration::from_micros(100));
        let _ = steady(&mut c, 40_000.0);
        assert_eq!(c.after_round(Instant::now(), 300, false), None);
    }
}
