//! The reload oracle: REST secrets rotated mid-run by a configuration reload
//! ([`crate::faults::Control::Reload`]), which the runtime broadcasts to every loop of a
//! node and each loop applies on its own ([`turnpike_core::Server::reload`]).
//!
//! It knows the secret generation of every credential a browser was given, and which
//! generations each loop accepts since it applied a reload. Invariants, checked at every
//! answer of a request that carries such a credential (the rule `core/src/server/reload.rs`
//! documents):
//! - `old_secret_refused_for_new_allocations`: an Allocate signed with a secret the
//!   answering loop no longer (or not yet) accepts is never answered with success;
//! - `old_credential_kept_until_expiry`: a request of a live allocation made with a
//!   rotated-out secret is not refused with 401 while the wall clock is at or before its
//!   username's expiry (second `expiry` included);
//! - `old_credential_ends_at_expiry`: past that second it is never answered with success;
//! - `reload_keeps_allocations`: a reload removes no allocation of the loop applying it;
//! - `reload_reaches_every_loop`: every loop of the node applies each reload (told apart
//!   by a sequence number, so a second one does not hide the first) within
//!   [`crate::node::MAX_MESSAGE_LATENCY`] of it, and none is still on its way when the
//!   run ends (one dies only with its process).
//!
//! The servers' wall clocks are read as the start's plus the virtual time gone: a scenario
//! with reloads has no wall-clock jumps ([`crate::scenario`] refuses the mix).

use crate::runner::{START, WALL_START_MS};
use std::collections::{BTreeMap, BTreeSet};
use turnpike_core::auth::rest_expiry;
use turnpike_core::stun::{Class, Method};
use turnpike_core::{AllocationId, Instant};

type Check = Result<(), (&'static str, String)>;

/// An answer to a request that carried a USERNAME, as the oracle saw it.
#[derive(Clone, Debug)]
pub struct Answered {
    /// The loop that received the request.
    pub lp: u16,
    /// The request's method.
    pub method: Method,
    /// Its USERNAME.
    pub username: String,
    /// Success or error.
    pub class: Class,
    /// The error code, if any.
    pub code: Option<u16>,
    /// The username of the live allocation of the request's 5-tuple, if any.
    pub live: Option<String>,
}

/// What the reload oracle counted.
#[derive(Clone, Debug, Default)]
pub struct RotationCounts {
    /// Loop reloads applied.
    pub reloads: u64,
    /// Allocates signed with a secret the loop did not accept, answered 401.
    pub old_secret_refused: u64,
    /// Requests of live allocations with a rotated-out secret, before expiry, answered
    /// with success.
    pub old_credential_kept: u64,
    /// The same past expiry, refused.
    pub old_credential_expired: u64,
}

/// The reload oracle of a run.
#[derive(Debug, Default)]
pub struct RotationWatch {
    /// Secret generation of each credential handed to a client.
    issued: BTreeMap<String, u32>,
    /// Generations accepted by (server, loop), once it applied a reload (before: 0 only).
    accepted: BTreeMap<(usize, u16), BTreeSet<u32>>,
    /// When each server's loops applied their first reload.
    pub first_reload: BTreeMap<usize, Instant>,
    /// Reloads on their way to the loops, by server and sequence number: when each was
    /// sent, and the loops that applied it so far (a second reload does not hide a
    /// first one still on its way).
    pending: BTreeMap<(usize, u64), (Instant, BTreeSet<u16>)>,
    /// Reloads sent so far (their sequence numbers).
    sent: u64,
    /// What it counted.
    pub counts: RotationCounts,
}

impl RotationWatch {
    /// A client was handed credential `username`, signed with secret `generation`.
    pub fn issued(&mut self, username: &str, generation: u32) {
        self.issued.insert(username.to_string(), generation);
    }

    /// Server `s` was told to reload at `now` (each of its loops must apply it): the
    /// reload's sequence number, which each loop's application names.
    pub fn reload_sent(&mut self, s: usize, now: Instant) -> u64 {
        self.sent += 1;
        self.pending.insert((s, self.sent), (now, BTreeSet::new()));
        self.sent
    }

    /// Server `s`'s process is gone with the reloads on their way to it (by design: the
    /// next process reads what the last reload left).
    pub fn process_gone(&mut self, s: usize) {
        self.pending.retain(|&(srv, _), _| srv != s);
    }

    /// After every step: each reload sent to server `s` (of `loops` loops) reached them
    /// all in time.
    pub fn delivered(&mut self, s: usize, now: Instant, loops: u16) -> Check {
        self.pending
            .retain(|&(srv, _), (_, applied)| srv != s || applied.len() < usize::from(loops));
        let late = self
            .pending
            .range((s, 0)..=(s, u64::MAX))
            .find(|(_, (sent, _))| now.since(*sent) > crate::node::MAX_MESSAGE_LATENCY);
        match late {
            Some(((_, seq), (sent, applied))) => Err((
                "reload_reaches_every_loop",
                format!(
                    "{} of {loops} loops applied reload #{seq} sent {:?} ago: {applied:?}",
                    applied.len(),
                    now.since(*sent)
                ),
            )),
            None => Ok(()),
        }
    }

    /// At the end of the run (after its drain): no reload is still on its way.
    pub fn leftovers(&self) -> Check {
        match self.pending.iter().next() {
            Some(((s, seq), (sent, applied))) => Err((
                "reload_reaches_every_loop",
                format!(
                    "server {s}: reload #{seq} sent at {sent:?} still on its way at the end of the run (applied by loops {applied:?})"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Loop `lp` of server `s` applied reload `seq` at `now`: it accepts `generations`
    /// now.
    pub fn reloaded(
        &mut self,
        s: usize,
        lp: u16,
        seq: u64,
        now: Instant,
        generations: BTreeSet<u32>,
    ) {
        if let Some((_, applied)) = self.pending.get_mut(&(s, seq)) {
            applied.insert(lp);
        }
        self.counts.reloads += 1;
        self.first_reload.entry(s).or_insert(now);
        self.accepted.insert((s, lp), generations);
    }

    /// Allocations of the loop before (`before`) and after (`after`) it applied a reload.
    pub fn kept(&self, before: &[AllocationId], after: &[AllocationId]) -> Check {
        let after: BTreeSet<&AllocationId> = after.iter().collect();
        match before.iter().find(|id| !after.contains(id)) {
            Some(id) => Err((
                "reload_keeps_allocations",
                format!(
                    "allocation {:#x} is gone after the reload ({} before, {} after)",
                    id.0,
                    before.len(),
                    after.len()
                ),
            )),
            None => Ok(()),
        }
    }

    /// An answer of server `s` at `now`.
    pub fn answer(&mut self, s: usize, now: Instant, a: &Answered) -> Check {
        let Some(&generation) = self.issued.get(&a.username) else {
            return Ok(());
        };
        let accepts = match self.accepted.get(&(s, a.lp)) {
            Some(g) => g.contains(&generation),
            None => generation == 0,
        };
        if accepts {
            return Ok(());
        }
        let ok = a.class == Class::Success;
        if a.method == Method::ALLOCATE {
            if ok {
                return Err((
                    "old_secret_refused_for_new_allocations",
                    format!(
                        "loop {}: Allocate of {} (secret generation {generation}) succeeded",
                        a.lp, a.username
                    ),
                ));
            }
            if a.code == Some(401) {
                self.counts.old_secret_refused += 1;
            }
            return Ok(());
        }
        if a.live.as_deref() != Some(a.username.as_str()) {
            return Ok(());
        }
        let Some(expiry) = rest_expiry(&a.username) else {
            return Ok(());
        };
        let wall_s = (WALL_START_MS + now.since(START).as_millis() as u64) / 1000;
        if wall_s <= expiry {
            if a.code == Some(401) {
                return Err((
                    "old_credential_kept_until_expiry",
                    format!(
                        "loop {}: {} of {} refused with 401 at wall second {wall_s}, expiry {expiry}",
                        a.lp,
                        a.method.name(),
                        a.username
                    ),
                ));
            }
            if ok {
                self.counts.old_credential_kept += 1;
            }
        } else if ok {
            return Err((
                "old_credential_ends_at_expiry",
                format!(
                    "loop {}: {} of {} accepted at wall second {wall_s}, past expiry {expiry}",
                    a.lp,
                    a.method.name(),
                    a.username
                ),
            ));
        } else {
            self.counts.old_credential_expired += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn answer(method: Method, username: &str, class: Class, code: Option<u16>) -> Answered {
        Answered {
            lp: 1,
            method,
            username: username.to_string(),
            class,
            code,
            live: (method != Method::ALLOCATE).then(|| username.to_string()),
        }
    }

    #[test]
    fn allocates_with_a_rotated_out_secret_must_fail() {
        let mut w = RotationWatch::default();
        w.issued("100:a", 0);
        w.issued("100:b", 1);
        let ok = |u| answer(Method::ALLOCATE, u, Class::Success, None);
        // Before loop 1 reloads: generation 0 only.
        assert!(w.answer(0, START, &ok("100:a")).is_ok());
        assert!(w.answer(0, START, &ok("100:b")).is_err());
        let seq = w.reload_sent(0, START);
        w.reloaded(0, 1, seq, START, BTreeSet::from([1]));
        assert!(w.answer(0, START, &ok("100:b")).is_ok());
        let refused = answer(Method::ALLOCATE, "100:a", Class::Error, Some(401));
        assert!(w.answer(0, START, &refused).is_ok());
        assert_eq!(w.counts.old_secret_refused, 1);
        assert_eq!(
            w.answer(0, START, &ok("100:a")).unwrap_err().0,
            "old_secret_refused_for_new_allocations"
        );
        // Loop 0 never applied it.
        let late = START + crate::node::MAX_MESSAGE_LATENCY + Duration::from_micros(1);
        assert_eq!(
            w.delivered(0, late, 2).unwrap_err().0,
            "reload_reaches_every_loop"
        );
        assert!(w.delivered(0, late, 1).is_ok());
    }

    #[test]
    fn old_keys_last_exactly_until_the_expiry_second() {
        let mut w = RotationWatch::default();
        let expiry = WALL_START_MS / 1000 + 10;
        let user = format!("{expiry}:x");
        w.issued(&user, 0);
        w.reloaded(0, 1, 0, START, BTreeSet::from([1]));
        let at = |ms: u64| START + Duration::from_millis(ms);
        let ok = answer(Method::REFRESH, &user, Class::Success, None);
        let no = answer(Method::REFRESH, &user, Class::Error, Some(401));
        assert!(w.answer(0, at(10_999), &ok).is_ok());
        assert_eq!(
            w.answer(0, at(10_999), &no).unwrap_err().0,
            "old_credential_kept_until_expiry"
        );
        assert!(w.answer(0, at(11_000), &no).is_ok());
        assert_eq!(
            w.answer(0, at(11_000), &ok).unwrap_err().0,
            "old_credential_ends_at_expiry"
        );
        assert_eq!(
            (
                w.counts.old_credential_kept,
                w.counts.old_credential_expired
            ),
            (1, 1)
        );
    }

    #[test]
    fn a_second_reload_does_not_hide_the_first_and_leftovers_are_caught() {
        let mut w = RotationWatch::default();
        let first = w.reload_sent(0, START);
        let soon = START + Duration::from_micros(1);
        let second = w.reload_sent(0, soon);
        // Planted: the host delivers the second reload to both loops, the first to one.
        w.reloaded(0, 0, first, soon, BTreeSet::from([1]));
        w.reloaded(0, 0, second, soon, BTreeSet::from([2]));
        w.reloaded(0, 1, second, soon, BTreeSet::from([2]));
        assert!(w.delivered(0, soon, 2).is_ok());
        let late = START + crate::node::MAX_MESSAGE_LATENCY + Duration::from_micros(2);
        let e = w.delivered(0, late, 2).unwrap_err();
        assert_eq!(e.0, "reload_reaches_every_loop");
        assert!(e.1.contains(&format!("#{first}")), "{}", e.1);
        // A run that ends with a reload on its way, the per-step check not yet due.
        let mut w = RotationWatch::default();
        let seq = w.reload_sent(1, START);
        assert!(w.delivered(1, START, 4).is_ok());
        assert_eq!(w.leftovers().unwrap_err().0, "reload_reaches_every_loop");
        for lp in 0..4 {
            w.reloaded(1, lp, seq, START, BTreeSet::from([1]));
        }
        assert!(w.delivered(1, START, 4).is_ok());
        assert!(w.leftovers().is_ok());
        // A process that dies takes its reloads with it.
        w.reload_sent(1, START);
        w.process_gone(1);
        assert!(w.leftovers().is_ok());
    }

    #[test]
    fn a_reload_that_drops_an_allocation_is_caught() {
        let w = RotationWatch::default();
        let (a, b) = (AllocationId(1), AllocationId(2));
        assert!(w.kept(&[a, b], &[b, a]).is_ok());
        assert_eq!(
            w.kept(&[a, b], &[b]).unwrap_err().0,
            "reload_keeps_allocations"
        );
    }
}
