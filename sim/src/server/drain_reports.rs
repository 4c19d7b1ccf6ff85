//! The runtime's rule for when a draining node exits (`runtime-mio/src/drain.rs`),
//! modelled: each loop reports what it still holds (allocations, allocations being made,
//! reserved ports) and how many allocations it created so far, on its own once-a-second
//! schedule; the node exits only when, after the last reports of all loops said 0, a
//! fresh round of reports from every loop says 0 again with no allocation created in
//! between. A report is stale as soon as it is made: a reservation redeemed on a loop
//! after it reported 0 gives it an allocation the others' later zeros know nothing of.

use core::time::Duration;
use turnpike_core::Instant;

/// How often each loop reports (the runtime's drain check).
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The reports of a draining node's loops.
#[derive(Clone, Debug)]
pub struct DrainReports {
    /// Each loop's next report.
    next: Vec<Instant>,
    /// Each loop's last report: when, what it held, and the allocations it had created.
    last: Vec<Option<(Instant, u64, u64)>>,
    /// Every loop's last report said 0 at this instant, with these allocations created:
    /// confirmations made after it decide.
    round: Option<(Instant, Vec<u64>)>,
}

impl DrainReports {
    /// The drain of a node of `loops` loops begins at `now`: each loop reports at once
    /// (as it catches the signal), then every [`REPORT_EVERY`], the loops' schedules
    /// shifted by a fraction of the period each.
    pub fn new(loops: u16, now: Instant) -> Self {
        let n = u32::from(loops.max(1));
        DrainReports {
            next: (0..n).map(|_| now).collect(),
            last: vec![None; n as usize],
            round: None,
        }
    }

    /// The loops whose report is due at `now`.
    pub fn due(&self, now: Instant) -> Vec<u16> {
        (0..self.next.len())
            .filter(|&l| self.next[l] <= now)
            .map(|l| l as u16)
            .collect()
    }

    /// The next report of any loop.
    pub fn next_report(&self) -> Option<Instant> {
        self.next.iter().min().copied()
    }

    /// Loop `lp` reports, at `now`, that it holds `held` and created `created`
    /// allocations since it started.
    pub fn report(&mut self, lp: u16, now: Instant, held: u64, created: u64) {
        let n = self.next.len() as u32;
        let l = usize::from(lp);
        let (Some(next), Some(last)) = (self.next.get_mut(l), self.last.get_mut(l)) else {
            return;
        };
        let first = last.is_none();
        *last = Some((now, held, created));
        *next = if first {
            // Phase-shifted: loop l's checks fall (l + 1) / n of a period after the start.
            now + REPORT_EVERY * (u32::from(lp) + 1) / n
        } else {
            now + REPORT_EVERY
        };
        let made = self
            .round
            .as_ref()
            .is_some_and(|(_, c)| c.get(l) != Some(&created));
        if held > 0 || made {
            // Not quiet: a new round may begin only from here.
            self.round = None;
        }
        if self.round.is_none() && self.all_zero(|_, _| true) {
            let created = self.last.iter().flatten().map(|r| r.2).collect();
            self.round = Some((now, created));
        }
    }

    /// Whether the node may exit: a fresh round of reports, all made after every last
    /// report said 0, says 0 from every loop, none having created an allocation since.
    pub fn done(&self) -> bool {
        self.round.as_ref().is_some_and(|(r, created)| {
            self.all_zero(|l, (at, _, c)| at > *r && created.get(l) == Some(&c))
        })
    }

    /// Every loop's last report says 0 and is one `fresh` accepts (given the loop).
    fn all_zero(&self, fresh: impl Fn(usize, (Instant, u64, u64)) -> bool) -> bool {
        self.last
            .iter()
            .enumerate()
            .all(|(l, r)| r.is_some_and(|r| r.1 == 0 && fresh(l, r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_secs(1_000) + Duration::from_millis(ms)
    }

    /// The rule the runtime had: every loop's last report says 0, however old.
    fn stale_rule(d: &DrainReports) -> bool {
        d.all_zero(|_, _| true)
    }

    #[test]
    fn a_node_exits_only_on_a_fresh_round_of_zeros() {
        let mut d = DrainReports::new(2, t(0));
        assert_eq!(d.due(t(0)), vec![0, 1]);
        d.report(0, t(0), 0, 0);
        d.report(1, t(0), 1, 1);
        assert!(!d.done());
        assert_eq!(d.next_report(), Some(t(500)));
        // Loop 0 says 0 at 0.5 s; at 0.7 s a reservation is redeemed there; loop 1, its
        // call over, says 0 at 1 s. The stale rule exits with loop 0's new allocation.
        d.report(0, t(500), 0, 0);
        d.report(1, t(1_000), 0, 1);
        assert!(stale_rule(&d), "the planted rule would exit here");
        assert!(!d.done(), "a fresh round must confirm");
        d.report(0, t(1_500), 1, 1);
        assert!(!d.done());
        d.report(1, t(2_000), 0, 1);
        d.report(0, t(2_500), 0, 1);
        assert!(!d.done(), "loop 1's zero came before loop 0's");
        d.report(1, t(3_000), 0, 1);
        assert!(!d.done(), "loop 0 must confirm after the round began");
        d.report(0, t(3_500), 0, 1);
        assert!(d.done());
    }

    #[test]
    fn an_allocation_made_and_gone_between_two_rounds_holds_the_node_up() {
        let mut d = DrainReports::new(2, t(0));
        d.report(0, t(0), 0, 5);
        d.report(1, t(0), 0, 3);
        // Loop 1 takes a token's Allocate and its call ends before its next report.
        d.report(0, t(500), 0, 5);
        d.report(1, t(1_000), 0, 4);
        assert!(!d.done());
        d.report(0, t(1_500), 0, 5);
        assert!(!d.done());
        d.report(1, t(2_000), 0, 4);
        d.report(0, t(2_500), 0, 5);
        d.report(1, t(3_000), 0, 4);
        assert!(d.done());
    }

    #[test]
    fn a_single_loop_confirms_its_own_zero() {
        let mut d = DrainReports::new(1, t(0));
        d.report(0, t(0), 0, 0);
        assert!(!d.done());
        assert_eq!(d.due(t(999)), Vec::<u16>::new());
        d.report(0, t(1_000), 0, 0);
        assert!(d.done());
    }
}
