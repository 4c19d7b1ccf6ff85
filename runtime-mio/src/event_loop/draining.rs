//! A loop's part of the node's drain ([`crate::drain`]): SIGTERM or the API's command
//! puts its core into draining; once a second it reports what it still holds and stops
//! when the node is done (see [`crate::drain`]) or the time is up. A second SIGTERM, or SIGINT, stops at once.

use super::Runtime;
use crate::clock::Clock;
use crate::drain::{DrainEnd, Held};
use serde_json::json;
use signal_hook::consts::SIGTERM;
use turnpike_core::Instant;

/// `stop` values of a drain that ended (signals are positive, a stop command 0).
pub(super) const STOP_DRAINED: i32 = -1;
/// `stop` value of a drain cut by `drain_timeout_s`.
pub(super) const STOP_DRAIN_TIMEOUT: i32 = -2;

impl Runtime {
    /// A signal arrived: SIGTERM drains (with a drain timeout) and stops at the second;
    /// SIGINT stops.
    pub(super) fn on_signal(&mut self, sig: i32) {
        if sig != SIGTERM || self.node_drain.timeout().is_zero() {
            self.stop = Some(sig);
            return;
        }
        self.sigterms += 1;
        if self.sigterms > 1 {
            self.stop = Some(sig);
            return;
        }
        let now = self.clock.now();
        self.begin_drain(now, "SIGTERM");
    }

    /// Puts this loop's core into draining (once); the first loop of the node to start
    /// logs and records it.
    pub(super) fn begin_drain(&mut self, now: Instant, why: &str) {
        if self.server.draining() {
            return;
        }
        let unix_ms = Clock::unix_ms();
        if self.node_drain.start(now, unix_ms) {
            let st = self.server.stats(now);
            let timeout_s = self.node_drain.timeout().as_secs();
            log::info!(
                "{why}: draining: no new allocations (redirected to an alternate server or refused with 508), live ones go on; exiting when none is left or in {timeout_s} s (a second SIGTERM exits at once)"
            );
            self.reporter.record(
                unix_ms,
                "drain_started",
                json!({"by": why, "timeout_s": timeout_s, "loop_allocations": st.allocations}),
            );
        }
        if let Some(t) = &mut self.trace {
            t.drain(now);
        }
        self.server.start_drain(now);
        self.drain(now);
        self.report_drain(now);
    }

    /// Once a second while draining: reports what this loop holds, and stops when the
    /// node is done or the drain timed out.
    pub(super) fn check_drain(&mut self, now: Instant) {
        if !self.server.draining() {
            // The API started it and this loop's command is on its way; or not draining.
            if self.node_drain.draining() {
                self.begin_drain(now, "node");
            }
            return;
        }
        self.report_drain(now);
        match self.node_drain.ended(now) {
            Some(DrainEnd::Drained) => {
                self.stop.get_or_insert(STOP_DRAINED);
            }
            Some(DrainEnd::TimedOut) => {
                self.stop.get_or_insert(STOP_DRAIN_TIMEOUT);
            }
            None => {}
        }
    }

    /// What this loop holds: allocations, those being made, and reservations (a pair's
    /// second Allocate may still come).
    fn report_drain(&mut self, now: Instant) {
        let st = self.server.stats(now);
        let held = Held {
            held: st.allocations + st.allocations_pending + st.reservations,
            created: st.allocations_created,
        };
        self.node_drain.report(self.place.index, held);
    }
}
