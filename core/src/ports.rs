//! The relay port pool: random ports from a configured range, with quarantine.
//!
//! A port is drawn at random (RFC 8656 §7.2 and RFC 6056: hard to guess), bound by the
//! runtime, and after release kept out of use for a quarantine period, so that late
//! packets for an old allocation never reach a new one (the WCS "port auditor"). A port
//! that the OS reports busy goes back to quarantine and is tried again later.
//!
//! Every structure is sized once in [`PortPool::new`]; no operation allocates. Each port
//! has a state; free ports also sit in a free list, and each free port's state records its
//! position there, so any port leaves the list in O(1) (swap-remove and fix the moved
//! port's position). Quarantined ports wait in a FIFO of release deadlines: the quarantine
//! is constant, so release order is expiry order.

use crate::time::Instant;
use core::time::Duration;
use rand_core::RngCore;
use std::collections::VecDeque;

/// Counters of the pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PortStats {
    /// Ports that can be handed out now.
    pub free: u32,
    /// Ports handed out (bound or being bound).
    pub in_use: u32,
    /// Ports waiting out their quarantine.
    pub quarantined: u32,
    /// Ports held for a RESERVATION-TOKEN (RFC 8656 §7.2 EVEN-PORT R bit).
    pub reserved: u32,
}

impl PortStats {
    /// Adds `o`'s counts to these (pools of several servers).
    pub fn add(&mut self, o: &PortStats) {
        self.free += o.free;
        self.in_use += o.in_use;
        self.quarantined += o.quarantined;
        self.reserved += o.reserved;
    }
}

/// A pool of ports `min..=max`, of which this pool owns some (a node of several event
/// loops splits the range, and ports change owner when one loop lends to another: see
/// [`crate::node`]); the others are `Elsewhere` and never handed out here.
///
/// Invariant: a port is handed out (by [`acquire`](Self::acquire) or
/// [`acquire_even`](Self::acquire_even)) only while it is free: never while in use,
/// reserved or quarantined.
#[derive(Debug)]
pub struct PortPool {
    /// The lowest port; slot `i` is port `min + i`.
    min: u16,
    /// One state per port of the range (empty if `min > max`).
    slots: Vec<Slot>,
    /// The free ports, in no particular order.
    free: Vec<u16>,
    /// Quarantined ports with the instant they may be freed, deadlines non-decreasing.
    quarantine: VecDeque<(Instant, u16)>,
    /// How long a released port stays out of use.
    quarantine_for: Duration,
    in_use: u32,
    reserved: u32,
    /// Ports of the range another loop owns.
    elsewhere: u32,
    /// Since when at least one port has been free without a break (None: none is free);
    /// the start of time for the ports free at birth. For the simulator's node oracle
    /// ("no 508 while the node has a free port").
    free_since: Option<Instant>,
}

impl PortPool {
    /// A pool of every port in `min..=max`, all free.
    ///
    /// `min > max` gives an empty pool: every acquire returns None.
    pub fn new(min: u16, max: u16, quarantine: Duration) -> Self {
        let ports: Vec<u16> = if min <= max {
            (min..=max).collect()
        } else {
            Vec::new()
        };
        let slots = (0..ports.len())
            .map(|i| Slot::Free { at: i as u32 })
            .collect();
        PortPool {
            min,
            slots,
            quarantine: VecDeque::with_capacity(ports.len()),
            free: ports,
            quarantine_for: quarantine,
            in_use: 0,
            reserved: 0,
            elsewhere: 0,
            free_since: None,
        }
        .with_free_since_birth()
    }

    fn with_free_since_birth(mut self) -> Self {
        if !self.free.is_empty() {
            self.free_since = Some(Instant::from_nanos(0));
        }
        self
    }

    /// A pool over the node's range `min..=max` that owns only `own` (inclusive; None:
    /// nothing) at start; the rest belongs to other loops until lent here.
    pub fn with_share(min: u16, max: u16, own: Option<(u16, u16)>, quarantine: Duration) -> Self {
        let mut pool = PortPool::new(min, max, quarantine);
        let mine = |p: u16| own.is_some_and(|(lo, hi)| (lo..=hi).contains(&p));
        let others: Vec<u16> = pool.free.iter().copied().filter(|p| !mine(*p)).collect();
        for port in others {
            pool.take_free(port);
            pool.set(port, Slot::Elsewhere);
            pool.elsewhere += 1;
        }
        if pool.free.is_empty() {
            pool.free_since = None;
        }
        pool
    }

    /// Hands free ports over to another loop (they become `Elsewhere` here): for `Any`, up
    /// to half of the free ports (at least one, at most `max`); for `Even`, one even port;
    /// for `EvenPair`, an even port and the port above it. Empty when none fits.
    pub fn lend(&mut self, want: crate::node::PortWant, max: usize) -> Vec<u16> {
        use crate::node::PortWant;
        let mut out = Vec::new();
        match want {
            PortWant::Any => {
                let n = self.free.len().div_ceil(2).min(max);
                out.extend(self.free.iter().rev().take(n).copied());
            }
            PortWant::Even | PortWant::EvenPair => {
                let pair = want == PortWant::EvenPair;
                let found = self.free.iter().copied().find(|&p| {
                    p & 1 == 0
                        && (!pair
                            || p.checked_add(1).is_some_and(|next| {
                                matches!(self.slot(next), Some(Slot::Free { .. }))
                            }))
                });
                if let Some(p) = found {
                    out.push(p);
                    if pair {
                        out.push(p.wrapping_add(1));
                    }
                }
            }
        }
        for &port in &out {
            self.take_free(port);
            self.set(port, Slot::Elsewhere);
            self.elsewhere += 1;
        }
        out
    }

    /// Takes ownership of `port`, lent by another loop, as a free port. False (nothing
    /// changes) if it is not another loop's.
    pub fn adopt(&mut self, port: u16, now: Instant) -> bool {
        if !matches!(self.slot(port), Some(Slot::Elsewhere)) {
            return false;
        }
        self.elsewhere -= 1;
        self.put_free(port, now);
        true
    }

    /// Takes ownership of `port` from another loop as reserved (a RESERVATION-TOKEN
    /// redeemed here that another loop issued, until the Allocate has its counts and
    /// binds it). False if it is not another loop's.
    pub fn adopt_reserved(&mut self, port: u16) -> bool {
        if !matches!(self.slot(port), Some(Slot::Elsewhere)) {
            return false;
        }
        self.elsewhere -= 1;
        self.set(port, Slot::Reserved);
        self.reserved += 1;
        true
    }

    /// Gives a reserved port to another loop (its token was redeemed there). False if
    /// `port` is not reserved here.
    pub fn give_reserved(&mut self, port: u16) -> bool {
        if !matches!(self.slot(port), Some(Slot::Reserved)) {
            return false;
        }
        self.reserved -= 1;
        self.set(port, Slot::Elsewhere);
        self.elsewhere += 1;
        true
    }

    /// Since when at least one port has been free without a break (None: none is free
    /// now; the start of time for ports free since the pool was made).
    pub fn free_since(&self) -> Option<Instant> {
        self.free_since
    }

    /// Draws a free port at random and marks it in use.
    ///
    /// The pick is uniform up to a bias below 2^-47 (a 64-bit random value reduced
    /// modulo at most 65536): negligible, and it keeps the draw loop-free.
    pub fn acquire(&mut self, rng: &mut impl RngCore) -> Option<u16> {
        let at = random_index(rng, self.free.len())?;
        let port = *self.free.get(at)?;
        self.take_free(port);
        self.set(port, Slot::InUse);
        self.in_use += 1;
        Some(port)
    }

    /// Draws a free even port at random; with `reserve_next`, the port above it must be
    /// free too and is marked reserved (RFC 8656 §7.2, EVEN-PORT with R bit).
    ///
    /// The scan starts at a random place in the free list and goes round it once, so the
    /// cost is O(free ports) in the worst case and None means no candidate exists.
    pub fn acquire_even(&mut self, rng: &mut impl RngCore, reserve_next: bool) -> Option<u16> {
        let n = self.free.len();
        let start = random_index(rng, n)?;
        let found = (0..n).map(|k| (start + k) % n).find_map(|i| {
            let port = *self.free.get(i)?;
            let fits = port & 1 == 0
                && (!reserve_next
                    || port
                        .checked_add(1)
                        .is_some_and(|next| matches!(self.slot(next), Some(Slot::Free { .. }))));
            fits.then_some(port)
        })?;
        self.take_free(found);
        self.set(found, Slot::InUse);
        self.in_use += 1;
        if reserve_next {
            // `fits` checked that found + 1 exists and is free.
            let next = found.wrapping_add(1);
            self.take_free(next);
            self.set(next, Slot::Reserved);
            self.reserved += 1;
        }
        Some(found)
    }

    /// Turns a reserved port into an in-use one (the RESERVATION-TOKEN was redeemed).
    ///
    /// False (and nothing changes) if `port` is not reserved.
    pub fn take_reserved(&mut self, port: u16) -> bool {
        if !matches!(self.slot(port), Some(Slot::Reserved)) {
            return false;
        }
        self.set(port, Slot::InUse);
        self.reserved -= 1;
        self.in_use += 1;
        true
    }

    /// Returns an in-use or reserved port: it is quarantined until `now + quarantine`.
    ///
    /// A port that is neither in use nor reserved (already released, free, outside the
    /// range) is ignored: a double release must not put a port in the queue twice.
    pub fn release(&mut self, port: u16, now: Instant) {
        match self.slot(port) {
            Some(Slot::InUse) => self.in_use -= 1,
            Some(Slot::Reserved) => self.reserved -= 1,
            _ => return,
        }
        // Keep the queue sorted even if `now` went backwards: a port may then wait a
        // little longer than its quarantine, never less.
        let mut until = now + self.quarantine_for;
        if let Some(&(last, _)) = self.quarantine.back() {
            until = until.max(last);
        }
        self.set(port, Slot::Quarantined);
        self.quarantine.push_back((until, port));
    }

    /// The runtime could not bind `port` (busy in the OS): quarantine it again.
    pub fn bind_failed(&mut self, port: u16, now: Instant) {
        self.release(port, now);
    }

    /// Frees the ports whose quarantine ended at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(until, port)) = self.quarantine.front() {
            if until > now {
                break;
            }
            self.quarantine.pop_front();
            if matches!(self.slot(port), Some(Slot::Quarantined)) {
                self.put_free(port, now);
            }
        }
    }

    /// When the next quarantine ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.quarantine.front().map(|&(until, _)| until)
    }

    /// The counters.
    pub fn stats(&self) -> PortStats {
        PortStats {
            free: self.free.len() as u32,
            in_use: self.in_use,
            quarantined: self.quarantine.len() as u32,
            reserved: self.reserved,
        }
    }

    /// True if `port` is handed out (in use).
    pub fn is_in_use(&self, port: u16) -> bool {
        matches!(self.slot(port), Some(Slot::InUse))
    }
}

/// The state of one port.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    /// Free, at index `at` of the free list.
    Free {
        at: u32,
    },
    InUse,
    Quarantined,
    Reserved,
    /// Owned by another loop of the node.
    Elsewhere,
}

impl PortPool {
    fn index(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.min)?);
        (i < self.slots.len()).then_some(i)
    }

    fn slot(&self, port: u16) -> Option<Slot> {
        self.slots.get(self.index(port)?).copied()
    }

    fn set(&mut self, port: u16, slot: Slot) {
        if let Some(i) = self.index(port) {
            if let Some(s) = self.slots.get_mut(i) {
                *s = slot;
            }
        }
    }

    /// Removes a free port from the free list in O(1). The caller sets its new state.
    fn take_free(&mut self, port: u16) {
        let Some(Slot::Free { at }) = self.slot(port) else {
            return;
        };
        let at = at as usize;
        if at >= self.free.len() {
            return;
        }
        self.free.swap_remove(at);
        // The former last element now sits at `at`: record its new position.
        if let Some(&moved) = self.free.get(at) {
            self.set(moved, Slot::Free { at: at as u32 });
        }
        if self.free.is_empty() {
            self.free_since = None;
        }
    }

    /// Appends a port to the free list (capacity was reserved in `new`).
    fn put_free(&mut self, port: u16, now: Instant) {
        if self.free.is_empty() {
            self.free_since = Some(now);
        }
        let at = self.free.len() as u32;
        self.free.push(port);
        self.set(port, Slot::Free { at });
    }
}

/// A random index below `n`, None if `n` is 0. See [`PortPool::acquire`] for the bias.
fn random_index(rng: &mut impl RngCore, n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    usize::try_from(rng.next_u64() % n as u64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;
    use std::collections::{BTreeMap, BTreeSet};

    const Q: Duration = Duration::from_secs(60);

    fn rng(seed: u8) -> ChaCha8Rng {
        ChaCha8Rng::from_seed([seed; 32])
    }

    fn t(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    fn total(s: PortStats) -> u32 {
        s.free + s.in_use + s.quarantined + s.reserved
    }

    /// Checks the free list and the per-port states agree, and the counters with them.
    fn assert_consistent(pool: &PortPool) {
        for (i, &port) in pool.free.iter().enumerate() {
            assert_eq!(
                pool.slot(port),
                Some(Slot::Free { at: i as u32 }),
                "free list entry {i}"
            );
        }
        let count = |f: fn(&Slot) -> bool| pool.slots.iter().filter(|s| f(s)).count() as u32;
        let s = pool.stats();
        assert_eq!(s.free, count(|s| matches!(s, Slot::Free { .. })));
        assert_eq!(s.in_use, count(|s| matches!(s, Slot::InUse)));
        assert_eq!(s.quarantined, count(|s| matches!(s, Slot::Quarantined)));
        assert_eq!(s.reserved, count(|s| matches!(s, Slot::Reserved)));
        assert_eq!(pool.elsewhere, count(|s| matches!(s, Slot::Elsewhere)));
        assert_eq!((total(s) + pool.elsewhere) as usize, pool.slots.len());
        assert!(pool
            .quarantine
            .iter()
            .zip(pool.quarantine.iter().skip(1))
            .all(|(a, b)| a.0 <= b.0));
    }

    #[test]
    fn exhaustion_then_none() {
        let mut pool = PortPool::new(50000, 50003, Q);
        let mut r = rng(1);
        let mut got = BTreeSet::new();
        for _ in 0..4 {
            let p = pool.acquire(&mut r);
            assert!(p.is_some());
            got.extend(p);
        }
        assert_eq!(got, (50000..=50003).collect());
        assert_eq!(pool.acquire(&mut r), None);
        assert_eq!(pool.acquire_even(&mut r, false), None);
        assert_eq!(
            pool.stats(),
            PortStats {
                free: 0,
                in_use: 4,
                quarantined: 0,
                reserved: 0
            }
        );
        assert!(got.iter().all(|&p| pool.is_in_use(p)));
        assert_consistent(&pool);
    }

    #[test]
    fn empty_ranges_never_panic() {
        let mut pool = PortPool::new(5, 4, Q);
        let mut r = rng(2);
        assert_eq!(pool.acquire(&mut r), None);
        assert_eq!(pool.acquire_even(&mut r, true), None);
        assert!(!pool.take_reserved(4));
        pool.release(4, t(0));
        pool.bind_failed(5, t(0));
        pool.handle_timeout(t(100));
        assert_eq!(pool.poll_timeout(), None);
        assert_eq!(pool.stats(), PortStats::default());
        assert!(!pool.is_in_use(4));
    }

    #[test]
    fn single_port_and_full_range() {
        let mut r = rng(3);
        let mut one = PortPool::new(65535, 65535, Q);
        assert_eq!(one.acquire(&mut r), Some(65535));
        assert_eq!(one.acquire(&mut r), None);
        let mut even = PortPool::new(65534, 65535, Q);
        // 65534's neighbour is free; 65535's neighbour would overflow.
        assert_eq!(even.acquire_even(&mut r, true), Some(65534));
        assert!(even.take_reserved(65535));
        let all = PortPool::new(0, 65535, Q);
        assert_eq!(all.stats().free, 65536);
        assert_consistent(&all);
    }

    #[test]
    fn acquire_spreads_over_the_range() {
        // Not a statistical test, a smoke test: draws are not sequential.
        let mut pool = PortPool::new(40000, 40999, Q);
        let mut r = rng(4);
        let first: Vec<u16> = (0..20).filter_map(|_| pool.acquire(&mut r)).collect();
        assert_eq!(first.len(), 20);
        assert!(first.windows(2).any(|w| w[1] != w[0].wrapping_add(1)));
        assert!(first.iter().any(|&p| p >= 40500) && first.iter().any(|&p| p < 40500));
    }

    #[test]
    fn released_port_waits_out_its_quarantine() {
        let mut pool = PortPool::new(60000, 60000, Q);
        let mut r = rng(5);
        assert_eq!(pool.acquire(&mut r), Some(60000));
        pool.release(60000, t(10));
        assert!(!pool.is_in_use(60000));
        assert_eq!(pool.stats().quarantined, 1);
        assert_eq!(pool.poll_timeout(), Some(t(70)));
        assert_eq!(pool.acquire(&mut r), None);
        pool.handle_timeout(t(69));
        assert_eq!(pool.acquire(&mut r), None);
        pool.handle_timeout(Instant::from_nanos(t(70).as_nanos() - 1));
        assert_eq!(pool.acquire(&mut r), None);
        pool.handle_timeout(t(70));
        assert_eq!(pool.poll_timeout(), None);
        assert_eq!(pool.acquire(&mut r), Some(60000));
        assert_consistent(&pool);
    }

    #[test]
    fn quarantine_releases_in_order() {
        let mut pool = PortPool::new(1000, 1002, Q);
        let mut r = rng(6);
        let a = pool.acquire(&mut r).unwrap_or_default();
        let b = pool.acquire(&mut r).unwrap_or_default();
        pool.release(a, t(0));
        pool.release(b, t(30));
        pool.handle_timeout(t(60));
        assert_eq!(pool.stats().quarantined, 1);
        assert_eq!(pool.poll_timeout(), Some(t(90)));
        assert!(matches!(pool.slot(a), Some(Slot::Free { .. })));
        assert_eq!(pool.slot(b), Some(Slot::Quarantined));
        pool.handle_timeout(t(90));
        assert_eq!(pool.stats().free, 3);
        assert_consistent(&pool);
    }

    #[test]
    fn bind_failed_quarantines_again() {
        let mut pool = PortPool::new(7000, 7000, Q);
        let mut r = rng(7);
        assert_eq!(pool.acquire(&mut r), Some(7000));
        pool.bind_failed(7000, t(0));
        assert_eq!(pool.acquire(&mut r), None);
        pool.handle_timeout(t(60));
        assert_eq!(pool.acquire(&mut r), Some(7000));
        // Busy again: back to quarantine for a full period from now.
        pool.bind_failed(7000, t(61));
        pool.handle_timeout(t(120));
        assert_eq!(pool.acquire(&mut r), None);
        pool.handle_timeout(t(121));
        assert_eq!(pool.acquire(&mut r), Some(7000));
    }

    #[test]
    fn double_release_is_ignored() {
        let mut pool = PortPool::new(7000, 7001, Q);
        let mut r = rng(8);
        let p = pool.acquire(&mut r).unwrap_or_default();
        pool.release(p, t(0));
        pool.release(p, t(1));
        pool.bind_failed(p, t(2));
        assert_eq!(pool.stats().quarantined, 1);
        // Releasing a free port or one outside the range changes nothing.
        let other = if p == 7000 { 7001 } else { 7000 };
        pool.release(other, t(0));
        pool.release(6999, t(0));
        pool.release(7002, t(0));
        assert_eq!(
            pool.stats(),
            PortStats {
                free: 1,
                in_use: 0,
                quarantined: 1,
                reserved: 0
            }
        );
        assert_consistent(&pool);
    }

    #[test]
    fn zero_quarantine_frees_on_the_next_timeout() {
        let mut pool = PortPool::new(7000, 7000, Duration::ZERO);
        let mut r = rng(9);
        assert_eq!(pool.acquire(&mut r), Some(7000));
        pool.release(7000, t(5));
        assert_eq!(pool.poll_timeout(), Some(t(5)));
        pool.handle_timeout(t(5));
        assert_eq!(pool.acquire(&mut r), Some(7000));
    }

    #[test]
    fn time_going_backwards_never_frees_early() {
        let mut pool = PortPool::new(8000, 8001, Q);
        let mut r = rng(10);
        let a = pool.acquire(&mut r).unwrap_or_default();
        let b = pool.acquire(&mut r).unwrap_or_default();
        pool.release(a, t(100)); // until 160
        pool.release(b, t(50)); // would be 110; waits behind a
        pool.handle_timeout(t(120));
        assert_eq!(pool.stats().quarantined, 2);
        pool.handle_timeout(t(10));
        assert_eq!(pool.stats().quarantined, 2);
        pool.handle_timeout(t(160));
        assert_eq!(pool.stats().free, 2);
        assert_consistent(&pool);
    }

    #[test]
    fn far_future_does_not_overflow() {
        let mut pool = PortPool::new(8000, 8000, Duration::MAX);
        let mut r = rng(11);
        assert_eq!(pool.acquire(&mut r), Some(8000));
        pool.release(8000, Instant::from_nanos(u64::MAX - 1));
        assert_eq!(pool.poll_timeout(), Some(Instant::from_nanos(u64::MAX)));
        pool.handle_timeout(Instant::from_nanos(u64::MAX));
        assert_eq!(pool.stats().free, 1);
    }

    #[test]
    fn even_ports_only() {
        let mut pool = PortPool::new(3001, 3010, Q);
        let mut r = rng(12);
        let mut got = BTreeSet::new();
        while let Some(p) = pool.acquire_even(&mut r, false) {
            assert_eq!(p & 1, 0);
            assert!(got.insert(p));
        }
        assert_eq!(got, [3002, 3004, 3006, 3008, 3010].into_iter().collect());
        assert_eq!(pool.stats().free, 5);
        assert_eq!(pool.stats().reserved, 0);
        assert_consistent(&pool);
    }

    #[test]
    fn even_port_with_reservation() {
        let mut pool = PortPool::new(4000, 4005, Q);
        let mut r = rng(13);
        let p = pool.acquire_even(&mut r, true).unwrap_or(1);
        assert_eq!(p & 1, 0);
        assert!(pool.is_in_use(p));
        assert!(!pool.is_in_use(p + 1));
        assert_eq!(pool.slot(p + 1), Some(Slot::Reserved));
        assert_eq!(
            pool.stats(),
            PortStats {
                free: 4,
                in_use: 1,
                quarantined: 0,
                reserved: 1
            }
        );
        // The reserved port is never handed out by plain draws.
        let mut rest = BTreeSet::new();
        while let Some(q) = pool.acquire(&mut r) {
            rest.insert(q);
        }
        assert!(!rest.contains(&(p + 1)) && !rest.contains(&p));
        assert_eq!(rest.len(), 4);
        // Redeeming the token turns it into an in-use port, once.
        assert!(pool.take_reserved(p + 1));
        assert!(pool.is_in_use(p + 1));
        assert!(!pool.take_reserved(p + 1));
        assert!(!pool.take_reserved(p));
        assert_consistent(&pool);
    }

    #[test]
    fn reservation_needs_a_free_neighbour_within_the_range() {
        // 4000 and 4002 are even; 4001 is taken and 4003 is past max.
        let mut pool = PortPool::new(4000, 4002, Q);
        let mut r = rng(14);
        let mut taken = Vec::new();
        while let Some(p) = pool.acquire(&mut r) {
            taken.push(p);
        }
        for p in taken.into_iter().filter(|&p| p != 4001) {
            pool.release(p, t(0));
        }
        pool.handle_timeout(t(60));
        assert_eq!(pool.acquire_even(&mut r, true), None);
        assert!(pool.acquire_even(&mut r, false).is_some());
        assert_consistent(&pool);
    }

    #[test]
    fn unredeemed_reservation_is_released_into_quarantine() {
        let mut pool = PortPool::new(4000, 4001, Q);
        let mut r = rng(15);
        assert_eq!(pool.acquire_even(&mut r, true), Some(4000));
        pool.release(4001, t(0));
        assert!(!pool.take_reserved(4001));
        assert_eq!(
            pool.stats(),
            PortStats {
                free: 0,
                in_use: 1,
                quarantined: 1,
                reserved: 0
            }
        );
        pool.handle_timeout(t(60));
        assert_eq!(pool.acquire(&mut r), Some(4001));
    }

    #[test]
    fn same_seed_same_ports() {
        let draw = |seed| {
            let mut pool = PortPool::new(10000, 10999, Q);
            let mut r = rng(seed);
            (0..50)
                .filter_map(|_| pool.acquire(&mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(16), draw(16));
        assert_ne!(draw(16), draw(17));
    }

    // ---- model-based property test ----

    #[derive(Clone, Debug)]
    enum Op {
        Acquire,
        AcquireEven(bool),
        TakeReserved(i32),
        Release(i32),
        BindFailed(i32),
        /// Move the clock by this many seconds (may be negative) and call handle_timeout.
        Tick(i64),
    }

    fn op(max_back: i64) -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => any::<bool>().prop_map(Op::AcquireEven),
            1 => (-1i32..14).prop_map(Op::TakeReserved),
            3 => (-1i32..14).prop_map(Op::Release),
            1 => (-1i32..14).prop_map(Op::BindFailed),
            3 => (-max_back..5i64).prop_map(Op::Tick),
        ]
    }

    /// The reference: plain sets, and for each quarantined port the earliest instant it
    /// may be freed.
    #[derive(Default)]
    struct Model {
        free: BTreeSet<u16>,
        in_use: BTreeSet<u16>,
        reserved: BTreeSet<u16>,
        quarantined: BTreeMap<u16, Instant>,
    }

    impl Model {
        fn slot(&self, port: u16) -> Option<&'static str> {
            if self.free.contains(&port) {
                Some("free")
            } else if self.in_use.contains(&port) {
                Some("in_use")
            } else if self.reserved.contains(&port) {
                Some("reserved")
            } else if self.quarantined.contains_key(&port) {
                Some("quarantined")
            } else {
                None
            }
        }
    }

    fn name(s: Option<Slot>) -> Option<&'static str> {
        s.map(|s| match s {
            Slot::Free { .. } => "free",
            Slot::InUse => "in_use",
            Slot::Reserved => "reserved",
            Slot::Quarantined => "quarantined",
            Slot::Elsewhere => "elsewhere",
        })
    }

    /// Runs `ops` against the pool and the model. With `monotonic`, time never goes back
    /// and the model predicts exactly which ports are freed when; otherwise the pool may
    /// free later than the model allows, never earlier.
    fn run(
        min: u16,
        max: u16,
        ops: &[Op],
        seed: u64,
        monotonic: bool,
    ) -> Result<(), TestCaseError> {
        let q = Duration::from_secs(3);
        let mut pool = PortPool::new(min, max, q);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut m = Model::default();
        if min <= max {
            m.free = (min..=max).collect();
        }
        let size = m.free.len() as u32;
        let mut now = t(1000);
        let port_at = |off: i32| u16::try_from(i32::from(min) + off).unwrap_or(min);
        for op in ops {
            match *op {
                Op::Acquire => {
                    let got = pool.acquire(&mut rng);
                    match got {
                        None => prop_assert!(m.free.is_empty()),
                        Some(p) => {
                            prop_assert!(m.free.remove(&p), "handed out non-free port {}", p);
                            m.in_use.insert(p);
                        }
                    }
                }
                Op::AcquireEven(reserve) => {
                    let ok = |p: u16| {
                        p & 1 == 0
                            && (!reserve || p.checked_add(1).is_some_and(|n| m.free.contains(&n)))
                    };
                    let any_candidate = m.free.iter().any(|&p| ok(p));
                    match pool.acquire_even(&mut rng, reserve) {
                        None => prop_assert!(!any_candidate),
                        Some(p) => {
                            prop_assert!(ok(p) && m.free.contains(&p), "bad even port {}", p);
                            m.free.remove(&p);
                            m.in_use.insert(p);
                            if reserve {
                                m.free.remove(&(p + 1));
                                m.reserved.insert(p + 1);
                            }
                        }
                    }
                }
                Op::TakeReserved(off) => {
                    let p = port_at(off);
                    let was = m.reserved.remove(&p);
                    prop_assert_eq!(pool.take_reserved(p), was);
                    if was {
                        m.in_use.insert(p);
                    }
                }
                Op::Release(off) | Op::BindFailed(off) => {
                    let p = port_at(off);
                    if matches!(op, Op::Release(_)) {
                        pool.release(p, now);
                    } else {
                        pool.bind_failed(p, now);
                    }
                    if m.in_use.remove(&p) || m.reserved.remove(&p) {
                        m.quarantined.insert(p, now + q);
                    }
                }
                Op::Tick(secs) => {
                    let secs = if monotonic { secs.max(0) } else { secs };
                    now = Instant::from_nanos(
                        now.as_nanos().saturating_add_signed(secs * 1_000_000_000),
                    );
                    pool.handle_timeout(now);
                    let due: Vec<u16> = m
                        .quarantined
                        .iter()
                        .filter(|(_, &until)| until <= now)
                        .map(|(&p, _)| p)
                        .collect();
                    let gone: Vec<u16> = m
                        .quarantined
                        .keys()
                        .copied()
                        .filter(|&p| matches!(pool.slot(p), Some(Slot::Free { .. })))
                        .collect();
                    if monotonic {
                        prop_assert_eq!(&gone, &due);
                    } else {
                        prop_assert!(
                            gone.iter().all(|p| due.contains(p)),
                            "freed early: {:?}",
                            gone
                        );
                    }
                    for p in gone {
                        m.quarantined.remove(&p);
                        m.free.insert(p);
                    }
                }
            }
            // Every port (and its neighbours outside the range) is in the same state.
            for p in min.saturating_sub(1)..=max.saturating_add(1) {
                prop_assert_eq!(name(pool.slot(p)), m.slot(p), "port {} after {:?}", p, op);
            }
            let s = pool.stats();
            prop_assert_eq!(s.free as usize, m.free.len());
            prop_assert_eq!(s.in_use as usize, m.in_use.len());
            prop_assert_eq!(s.reserved as usize, m.reserved.len());
            prop_assert_eq!(s.quarantined as usize, m.quarantined.len());
            prop_assert_eq!(total(s), size);
            if monotonic {
                prop_assert_eq!(pool.poll_timeout(), m.quarantined.values().min().copied());
            }
            prop_assert_eq!(pool.poll_timeout().is_some(), !m.quarantined.is_empty());
            for p in m.in_use.iter() {
                prop_assert!(pool.is_in_use(*p));
            }
            assert_consistent(&pool);
        }
        // Liveness: far enough in the future, every quarantined port is free again.
        pool.handle_timeout(Instant::from_nanos(u64::MAX));
        prop_assert_eq!(pool.stats().quarantined, 0);
        prop_assert_eq!(
            pool.stats().free as usize,
            m.free.len() + m.quarantined.len()
        );
        Ok(())
    }

    #[test]
    fn lending_moves_ownership_and_conserves_the_range() {
        use crate::node::PortWant;
        let mut a = PortPool::with_share(50000, 50007, Some((50000, 50003)), Q);
        let mut b = PortPool::with_share(50000, 50007, Some((50004, 50007)), Q);
        assert_eq!(a.stats().free, 4);
        assert_consistent(&a);
        let mut r = rng(3);
        // b runs dry, then borrows from a.
        for _ in 0..4 {
            assert!(b.acquire(&mut r).is_some_and(|p| p >= 50004));
        }
        assert_eq!(b.acquire(&mut r), None);
        assert_eq!(b.free_since(), None);
        assert_eq!(a.free_since(), Some(Instant::from_nanos(0)));
        let lent = a.lend(PortWant::Any, 64);
        assert_eq!(lent.len(), 2);
        for p in &lent {
            assert!(b.adopt(*p, t(1)));
            assert!(!b.adopt(*p, t(1)), "{p} adopted twice");
        }
        assert_eq!(a.stats().free, 2);
        assert_eq!(b.free_since(), Some(t(1)));
        assert_consistent(&a);
        assert_consistent(&b);
        assert!(b.acquire(&mut r).is_some_and(|p| lent.contains(&p)));
        // An even pair, and a port adopted reserved, then taken (a redeemed token).
        let pair = a.lend(PortWant::EvenPair, 64);
        assert!(pair.is_empty() || (pair[0].is_multiple_of(2) && pair[1] == pair[0] + 1));
        for p in &pair {
            assert!(b.adopt(*p, t(2)));
        }
        let even = b.acquire_even(&mut r, true);
        assert!(even.is_some());
        let reserved = even.unwrap() + 1;
        assert!(b.give_reserved(reserved));
        assert!(a.adopt_reserved(reserved));
        assert!(!a.adopt_reserved(reserved), "adopted twice");
        assert!(a.take_reserved(reserved));
        assert!(a.is_in_use(reserved));
        assert_consistent(&a);
        assert_consistent(&b);
        // A port is never owned twice: free + in use + ... across both = the range.
        let owned = |p: &PortPool| {
            let s = p.stats();
            s.free + s.in_use + s.quarantined + s.reserved
        };
        assert_eq!(owned(&a) + owned(&b), 8);
    }

    fn range() -> impl Strategy<Value = (u16, u16)> {
        (
            prop::sample::select(vec![0u16, 1, 1000, 1001, 65524, 65535]),
            -2i32..13,
        )
            .prop_map(|(min, d)| {
                let max = (i32::from(min) + d).clamp(0, 65535) as u16;
                (min, max)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn pool_matches_model((min, max) in range(), ops in prop::collection::vec(op(0), 0..120), seed: u64) {
            run(min, max, &ops, seed, true)?;
        }

        #[test]
        fn pool_never_frees_early_when_time_jumps_back(
            (min, max) in range(),
            ops in prop::collection::vec(op(6), 0..120),
            seed: u64,
        ) {
            run(min, max, &ops, seed, false)?;
        }
    }
}
