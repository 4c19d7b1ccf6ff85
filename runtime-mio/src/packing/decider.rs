//! The rule that decides how many CPUs a node's event loops may use.
//!
//! Loops spread over every CPU pay, at paced loads, for waking each CPU from idle for a
//! few datagrams (on a virtual machine each wake-up is an exit to the hypervisor); on a
//! shared CPU one loop's wake-up often finds it awake (measured: 8 % less CPU per packet
//! for 2 loops at 40k packets/s, README "Media shapes"). So while the node's loops together would keep only part of a CPU busy, they are
//! confined to as few CPUs as their load fits in (`FILL` of each), and they spread again
//! at once when those CPUs run full (`OVERFULL`) or a loop waits for its CPU
//! (`MAX_WAIT`): contention, another process on it. After spreading, the rule waits
//! `COOLDOWN_S` before packing again, so a load at the threshold does not flap.

/// Pack onto `k` CPUs only while the node's busy CPU-seconds per second would fill at most
/// this fraction of them (measured spread, where each packet costs more).
pub const FILL: f64 = 0.8;
/// Spread as soon as the packed CPUs are busier than this fraction.
pub const OVERFULL: f64 = 0.9;
/// Spread as soon as a loop spent this fraction of the last second runnable but waiting
/// for its CPU: the packed CPU is taken by others. Not less: on a machine shared with
/// other work, loops wait a quarter of the time spread as well (measured).
pub const MAX_WAIT: f64 = 0.5;
/// Seconds in a row a smaller set of CPUs must have been enough before the loops pack.
pub const CALM_S: u32 = 3;
/// Seconds after spreading before the loops may pack again; doubled each time a packing
/// ended within [`SHORT_S`], up to [`MAX_COOLDOWN_S`], so that a CPU taken by others again
/// and again is tried less and less often.
pub const COOLDOWN_S: u32 = 30;
/// A packing that ended sooner than this doubles the next cooldown.
pub const SHORT_S: u32 = 60;
/// Longest cooldown.
pub const MAX_COOLDOWN_S: u32 = 960;
/// Most loops confined to one CPU: loops woken by the same paced media wait for each
/// other on it, and with many a loop would wait half its second though the CPU is not full.
pub const MAX_LOOPS_PER_CPU: usize = 4;

/// How many CPUs the loops may use, second by second.
#[derive(Clone, Debug)]
pub struct Decider {
    /// Most CPUs the loops can use: those the process may run on, at most one per loop.
    max: usize,
    /// Fewest CPUs the loops may be packed onto ([`MAX_LOOPS_PER_CPU`]).
    min: usize,
    /// CPUs the loops are confined to now (`max`: spread).
    now: usize,
    /// Seconds in a row that fewer CPUs would have been enough.
    calm: u32,
    /// Seconds left before packing is allowed again.
    cooldown: u32,
    /// The cooldown after the next spread.
    next_cooldown: u32,
    /// Seconds the loops have been packed.
    packed_for: u32,
}

impl Decider {
    /// Loops `loops` on `cpus` allowed CPUs, spread at start.
    pub fn new(cpus: usize, loops: usize) -> Decider {
        let max = cpus.min(loops).max(1);
        Decider {
            max,
            min: loops.div_ceil(MAX_LOOPS_PER_CPU).clamp(1, max),
            now: max,
            calm: 0,
            cooldown: 0,
            next_cooldown: COOLDOWN_S,
            packed_for: 0,
        }
    }

    /// CPUs the loops are confined to now.
    pub fn cpus(&self) -> usize {
        self.now
    }

    /// Whether the loops are confined to fewer CPUs than they could use.
    pub fn packed(&self) -> bool {
        self.now < self.max
    }

    /// A loop could not keep up (a socket left with reads to do): spread now, if packed.
    /// The new number of CPUs, if it changes.
    pub fn saturated(&mut self) -> Option<usize> {
        if !self.packed() {
            return None;
        }
        Some(self.spread())
    }

    /// All of them at once: load that outgrew its CPUs may still be growing.
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

    /// After a second in which the loops together were busy `busy` CPU-seconds and the
    /// loop that waited most for its CPU waited `wait` of the second: the new number of
    /// CPUs, if it changes.
    pub fn second(&mut self, busy: f64, wait: f64) -> Option<usize> {
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
        if self.packed() && (busy > OVERFULL * self.now as f64 || wait > MAX_WAIT) {
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
    fn feed(d: &mut Decider, seconds: u32, busy: f64, wait: f64) -> Vec<usize> {
        (0..seconds).filter_map(|_| d.second(busy, wait)).collect()
    }

    #[test]
    fn a_quiet_node_packs_after_three_calm_seconds_and_not_before() {
        let mut d = Decider::new(2, 2);
        assert_eq!(feed(&mut d, 2, 0.3, 0.0), Vec::<usize>::new());
        assert_eq!(d.second(0.3, 0.0), Some(1));
        assert!(d.packed());
        assert_eq!(feed(&mut d, 10, 0.6, 0.01), Vec::<usize>::new());
    }

    #[test]
    fn a_packed_node_spreads_at_once_when_its_cpu_runs_full() {
        let mut d = Decider::new(2, 2);
        feed(&mut d, 3, 0.1, 0.0);
        assert_eq!(d.cpus(), 1);
        assert_eq!(d.second(0.95, 0.0), Some(2));
        assert!(!d.packed());
    }

    #[test]
    fn a_packed_node_spreads_when_a_loop_waits_for_its_cpu() {
        let mut d = Decider::new(4, 4);
        feed(&mut d, 3, 0.5, 0.0);
        assert_eq!(d.cpus(), 1);
        assert_eq!(d.second(0.5, 0.3), None);
        assert_eq!(d.second(0.5, 0.6), Some(4));
    }

    #[test]
    fn after_spreading_it_waits_before_packing_again() {
        let mut d = Decider::new(2, 2);
        feed(&mut d, 3, 0.1, 0.0);
        d.second(1.5, 0.0);
        assert_eq!(feed(&mut d, COOLDOWN_S - 1, 0.1, 0.0), Vec::<usize>::new());
        // Cooldown over: three calm seconds more.
        assert_eq!(feed(&mut d, CALM_S + 1, 0.1, 0.0), vec![1]);
    }

    #[test]
    fn packings_cut_short_again_and_again_are_tried_less_and_less_often() {
        let mut d = Decider::new(2, 2);
        let mut waited = Vec::new();
        for _ in 0..7 {
            // Calm until it packs, then a loop starved at once.
            let mut t = 0;
            while d.second(0.1, 0.0).is_none() {
                t += 1;
            }
            waited.push(t + 1);
            assert_eq!(d.second(0.1, 0.9), Some(2));
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
        while d.second(0.1, 0.0).is_none() {}
        for _ in 0..SHORT_S + 1 {
            assert_eq!(d.second(0.1, 0.0), None);
        }
        assert_eq!(d.second(0.95, 0.0), Some(2));
        let mut t = 0;
        while d.second(0.1, 0.0).is_none() {
            t += 1;
        }
        assert_eq!(t + 1, COOLDOWN_S + CALM_S - 1);
    }

    #[test]
    fn a_saturated_loop_spreads_packed_loops_at_once_and_nothing_else() {
        let mut d = Decider::new(2, 2);
        assert_eq!(d.saturated(), None);
        feed(&mut d, 3, 0.1, 0.0);
        assert_eq!(d.saturated(), Some(2));
        assert_eq!(d.saturated(), None);
        // The cooldown holds as after any spread.
        assert_eq!(feed(&mut d, COOLDOWN_S - 1, 0.1, 0.0), Vec::<usize>::new());
    }

    #[test]
    fn a_busy_node_packs_onto_as_many_cpus_as_its_load_needs() {
        let mut d = Decider::new(8, 8);
        // 2.0 CPU-seconds fill 3 CPUs to at most 80 %.
        assert_eq!(feed(&mut d, 3, 2.0, 0.0), vec![3]);
        // 2.5 on 3 is 83 %: not overfull, stays.
        assert_eq!(feed(&mut d, 5, 2.5, 0.0), Vec::<usize>::new());
        // 2.8 on 3 is 93 %: spread.
        assert_eq!(d.second(2.8, 0.0), Some(8));
    }

    #[test]
    fn many_loops_pack_at_most_four_to_a_cpu() {
        let mut d = Decider::new(16, 16);
        assert_eq!(feed(&mut d, 3, 0.0, 0.0), vec![4]);
        let mut d = Decider::new(4, 5);
        assert_eq!(feed(&mut d, 3, 0.0, 0.0), vec![2]);
    }

    #[test]
    fn one_loop_or_one_cpu_never_packs() {
        for (cpus, loops) in [(1, 4), (8, 1)] {
            let mut d = Decider::new(cpus, loops);
            assert_eq!(feed(&mut d, 10, 0.0, 0.0), Vec::<usize>::new());
            assert!(!d.packed());
        }
    }

    #[test]
    fn a_load_between_fill_and_overfull_does_not_flap() {
        let mut d = Decider::new(2, 2);
        // Spread at 0.85: 0.85 / 0.8 needs 2 CPUs, no packing.
        assert_eq!(feed(&mut d, 20, 0.85, 0.0), Vec::<usize>::new());
        // Packed at 0.7, then 0.85 packed: under 0.9, stays.
        assert_eq!(feed(&mut d, 3, 0.7, 0.0), vec![1]);
        assert_eq!(feed(&mut d, 20, 0.85, 0.05), Vec::<usize>::new());
    }
}
