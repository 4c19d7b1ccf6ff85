//! The rule that decides how many threads a node's event loops run on.
//!
//! At paced loads every loop wakes for a few datagrams at a time, and each wake-up costs
//! about as much as one for many: loops run on one thread share their wake-ups (measured:
//! two loops on one thread spend a third less CPU per packet than on two, README "Media
//! shapes"). So while the node's loops together would keep only part of a CPU busy, they
//! run on as few threads as their load fits in (`FILL` of a CPU each), and they spread
//! again at once when those threads run full (`OVERFULL`) or one waits for its CPU
//! (`MAX_WAIT`: contention, another process on it). After spreading, the rule waits
//! `COOLDOWN_S` before gathering again, so a load at the threshold does not flap.

/// Gather onto `k` threads only while the node's busy CPU-seconds per second would fill
/// at most this fraction of `k` CPUs (measured spread, where each packet costs more).
pub const FILL: f64 = 0.8;
/// Spread as soon as a thread carrying loops is busier than this fraction of a CPU.
pub const OVERFULL: f64 = 0.9;
/// Spread as soon as a loop spent this fraction of the last second runnable but waiting
/// for its CPU: the CPU is taken by others. Not less: on a machine shared with
/// other work, loops wait a quarter of the time spread as well (measured).
pub const MAX_WAIT: f64 = 0.5;
/// Seconds in a row fewer threads must have been enough before the loops gather.
pub const CALM_S: u32 = 3;
/// Seconds after spreading before the loops may pack again; doubled each time a packing
/// ended within [`SHORT_S`], up to [`MAX_COOLDOWN_S`], so that a CPU taken by others again
/// and again is tried less and less often.
pub const COOLDOWN_S: u32 = 30;
/// A packing that ended sooner than this doubles the next cooldown.
pub const SHORT_S: u32 = 60;
/// Longest cooldown.
pub const MAX_COOLDOWN_S: u32 = 960;
/// Most loops run on one thread: each adds its own receive and send calls to every
/// wake-up, and with many a round would take long though the CPU is not full.
pub const MAX_LOOPS_PER_THREAD: usize = 4;

/// How many threads the loops run on, second by second.
#[derive(Clone, Debug)]
pub struct Decider {
    /// Most threads: one per loop.
    max: usize,
    /// Fewest threads the loops may gather onto ([`MAX_LOOPS_PER_THREAD`]).
    min: usize,
    /// Threads the loops run on now (`max`: spread).
    now: usize,
    /// Seconds in a row that fewer threads would have been enough.
    calm: u32,
    /// Seconds left before packing is allowed again.
    cooldown: u32,
    /// The cooldown after the next spread.
    next_cooldown: u32,
    /// Seconds the loops have been packed.
    packed_for: u32,
}

impl Decider {
    /// `loops` loops, spread at start.
    pub fn new(loops: usize) -> Decider {
        let max = loops.max(1);
        Decider {
            max,
            min: loops.div_ceil(MAX_LOOPS_PER_THREAD).clamp(1, max),
            now: max,
            calm: 0,
            cooldown: 0,
            next_cooldown: COOLDOWN_S,
            packed_for: 0,
        }
    }

    /// Threads the loops run on now.
    pub fn threads(&self) -> usize {
        self.now
    }

    /// Whether the loops run on fewer threads than there are loops.
    pub fn packed(&self) -> bool {
        self.now < self.max
    }

    /// A loop could not keep up (a socket left with reads to do): spread now, if packed.
    /// The new number of threads, if it changes.
    pub fn saturated(&mut self) -> Option<usize> {
        if !self.packed() {
            return None;
        }
        Some(self.spread())
    }

    /// All of them at once: load that outgrew its threads may still be growing.
    fn spread(&mut self) -> usize {
        self.now = self.max;
        self.calm = 0;
        self.cooldown = self.next_cooldown;
        if self.packed_for <= SHORT_S {
            self.next_cooldown = (self.next_cooldown * 2).min(MAX_COOLDOWN_S);
        }
        self.packed_for = 0;
        self.now
    }

    /// After a second in which the loops' threads together were busy `busy` CPU-seconds,
    /// the busiest of them `busiest`, and the thread that waited most for its CPU waited
    /// `wait` of the second: the new number of threads, if it changes. The busiest thread,
    /// not the mean, decides the spread: loops are placed on threads by index, not by load.
    pub fn second(&mut self, busy: f64, busiest: f64, wait: f64) -> Option<usize> {
        if self.max < 2 {
            return None;
        }
        self.cooldown = self.cooldown.saturating_sub(1);
        if self.packed() {
            self.packed_for = self.packed_for.saturating_add(1);
            if self.packed_for > SHORT_S {
                self.next_cooldown = COOLDOWN_S;
            }
        }
        if self.packed() && (busiest > OVERFULL || wait > MAX_WAIT) {
            return Some(self.spread());
        }
        let fit = ((busy / FILL).ceil() as usize).clamp(self.min, self.max);
        if fit < self.now && self.cooldown == 0 {
            self.calm += 1;
            if self.calm >= CALM_S {
                self.now = fit;
                self.calm = 0;
                return Some(fit);
            }
        } else {
            self.calm = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seconds` seconds of the same load; the changes it made.
    /// A second of `busy` CPU-seconds spread evenly over the threads.
    fn sec(d: &mut Decider, busy: f64, wait: f64) -> Option<usize> {
        let busiest = busy / d.threads() as f64;
        d.second(busy, busiest, wait)
    }

    fn feed(d: &mut Decider, seconds: u32, busy: f64, wait: f64) -> Vec<usize> {
        (0..seconds).filter_map(|_| sec(d, busy, wait)).collect()
    }

    #[test]
    fn one_full_thread_spreads_the_loops_though_the_others_idle() {
        let mut d = Decider::new(4);
        assert_eq!(feed(&mut d, 3, 1.5, 0.0), vec![2]);
        // 1.0 CPU-s on 2 threads is half of them, but one thread carries 0.95 of it.
        assert_eq!(d.second(1.0, 0.95, 0.0), Some(4));
    }

    #[test]
    fn a_quiet_node_gathers_after_three_calm_seconds_and_not_before() {
        let mut d = Decider::new(2);
        assert_eq!(feed(&mut d, 2, 0.3, 0.0), Vec::<usize>::new());
        assert_eq!(sec(&mut d, 0.3, 0.0), Some(1));
        assert!(d.packed());
        assert_eq!(feed(&mut d, 10, 0.6, 0.01), Vec::<usize>::new());
    }

    #[test]
    fn a_gathered_node_spreads_at_once_when_its_thread_runs_full() {
        let mut d = Decider::new(2);
        feed(&mut d, 3, 0.1, 0.0);
        assert_eq!(d.threads(), 1);
        assert_eq!(sec(&mut d, 0.97, 0.0), Some(2));
        assert!(!d.packed());
    }

    #[test]
    fn a_gathered_node_spreads_when_a_loop_waits_for_its_cpu() {
        let mut d = Decider::new(4);
        feed(&mut d, 3, 0.5, 0.0);
        assert_eq!(d.threads(), 1);
        assert_eq!(sec(&mut d, 0.5, 0.3), None);
        assert_eq!(sec(&mut d, 0.5, 0.6), Some(4));
    }

    #[test]
    fn after_spreading_it_waits_before_gathering_again() {
        let mut d = Decider::new(2);
        feed(&mut d, 3, 0.1, 0.0);
        sec(&mut d, 1.5, 0.0);
        assert_eq!(feed(&mut d, COOLDOWN_S - 1, 0.1, 0.0), Vec::<usize>::new());
        // Cooldown over: three calm seconds more.
        assert_eq!(feed(&mut d, CALM_S + 1, 0.1, 0.0), vec![1]);
    }

    #[test]
    fn gatherings_cut_short_again_and_again_are_tried_less_and_less_often() {
        let mut d = Decider::new(2);
        let mut waited = Vec::new();
        for _ in 0..7 {
            // Calm until it packs, then a loop starved at once.
            let mut t = 0;
            while sec(&mut d, 0.1, 0.0).is_none() {
                t += 1;
            }
            waited.push(t + 1);
            assert_eq!(sec(&mut d, 0.1, 0.9), Some(2));
        }
        assert_eq!(
            waited,
            [
                CALM_S,
                30 + CALM_S - 1,
                60 + CALM_S - 1,
                120 + CALM_S - 1,
                240 + CALM_S - 1,
                480 + CALM_S - 1,
                960 + CALM_S - 1
            ]
        );
        // A packing that lasts resets the cooldown.
        while sec(&mut d, 0.1, 0.0).is_none() {}
        for _ in 0..SHORT_S + 1 {
            assert_eq!(sec(&mut d, 0.1, 0.0), None);
        }
        assert_eq!(sec(&mut d, 0.97, 0.0), Some(2));
        let mut t = 0;
        while sec(&mut d, 0.1, 0.0).is_none() {
            t += 1;
        }
        assert_eq!(t + 1, COOLDOWN_S + CALM_S - 1);
    }

    #[test]
    fn a_saturated_loop_spreads_packed_loops_at_once_and_nothing_else() {
        let mut d = Decider::new(2);
        assert_eq!(d.saturated(), None);
        feed(&mut d, 3, 0.1, 0.0);
        assert_eq!(d.saturated(), Some(2));
        assert_eq!(d.saturated(), None);
        // The cooldown holds as after any spread.
        assert_eq!(feed(&mut d, COOLDOWN_S - 1, 0.1, 0.0), Vec::<usize>::new());
    }

    #[test]
    fn a_busy_node_gathers_onto_as_many_threads_as_its_load_needs() {
        let mut d = Decider::new(8);
        // 2.0 CPU-seconds fill 3 threads to at most 80 %.
        assert_eq!(feed(&mut d, 3, 2.0, 0.0), vec![3]);
        // 2.6 on 3 is 87 %: not overfull, stays.
        assert_eq!(feed(&mut d, 5, 2.6, 0.0), Vec::<usize>::new());
        // 2.8 on 3 is 93 %: spread.
        assert_eq!(sec(&mut d, 2.8, 0.0), Some(8));
    }

    #[test]
    fn many_loops_gather_at_most_four_to_a_thread() {
        let mut d = Decider::new(16);
        assert_eq!(feed(&mut d, 3, 0.0, 0.0), vec![4]);
        let mut d = Decider::new(5);
        assert_eq!(feed(&mut d, 3, 0.0, 0.0), vec![2]);
    }

    #[test]
    fn one_loop_never_gathers() {
        {
            let mut d = Decider::new(1);
            assert_eq!(feed(&mut d, 10, 0.0, 0.0), Vec::<usize>::new());
            assert!(!d.packed());
        }
    }

    #[test]
    fn a_load_between_fill_and_overfull_does_not_flap() {
        let mut d = Decider::new(2);
        // Spread at 0.82: 0.82 / 0.8 needs 2 threads, no gathering.
        assert_eq!(feed(&mut d, 20, 0.82, 0.0), Vec::<usize>::new());
        // Gathered at 0.7, then 0.84 gathered: under 0.9, stays.
        assert_eq!(feed(&mut d, 3, 0.7, 0.0), vec![1]);
        assert_eq!(feed(&mut d, 20, 0.84, 0.05), Vec::<usize>::new());
    }
}
