//! A server host's life: its drain (the runtime's exit rule, [`DrainReports`]), its
//! exit, and the fresh process that replaces one that exited or was killed.

use super::drain_reports::DrainReports;
use super::{listeners_of, ServerHost};
use crate::fleet::{self, Life};
use crate::host::Cx;
use crate::net::Side;
use crate::node::Cores;
use core::time::Duration;
use turnpike_core::auth::Credentials;
use turnpike_core::config::Reloadable;
use turnpike_core::Instant;

impl ServerHost {
    /// Starts the node's drain at `now`: every loop's core refuses new allocations
    /// (redirecting them where alternates are configured) and begins its reports.
    pub(super) fn begin_drain(&mut self, cx: &mut Cx) {
        let deadline = cx.now + Duration::from_secs(self.spec.drain_timeout_s);
        cx.note(format!("{}: drains (timeout {deadline:?})", self.name));
        cx.oracle.drain_started(self.index, cx.now, deadline);
        self.life = Life::Draining {
            since: cx.now,
            deadline,
        };
        self.drain_reports = Some(DrainReports::new(self.loops(), cx.now));
        for lp in 0..self.loops() {
            fleet::start_drain(&mut self.cores[usize::from(lp)], cx.now);
            self.drain(cx, lp);
        }
        self.maybe_exit(cx);
    }

    /// What loop `lp` reports it holds while draining: allocations, allocations being
    /// made, and reserved ports (a RESERVATION-TOKEN's second half is a call too).
    fn held(&self, lp: u16, now: Instant) -> u64 {
        self.cores.get(usize::from(lp)).map_or(0, |c| {
            let st = c.stats(now);
            st.allocations
                + st.allocations_pending
                + u64::from(st.ports_v4.reserved)
                + u64::from(st.ports_v6.reserved)
        })
    }

    /// The loops whose drain report is due report; the node exits when a fresh round of
    /// reports from every loop says nothing is held ([`DrainReports`]), or at its drain
    /// timeout; a fresh process starts after the pause.
    pub(super) fn maybe_exit(&mut self, cx: &mut Cx) {
        let Life::Draining { deadline, .. } = self.life else {
            return;
        };
        let now = cx.now;
        let due = self
            .drain_reports
            .as_ref()
            .map(|r| r.due(now))
            .unwrap_or_default();
        for lp in due {
            let held = self.held(lp, now);
            let created = self
                .cores
                .get(usize::from(lp))
                .map_or(0, |c| c.stats(now).allocations_created);
            if let Some(r) = &mut self.drain_reports {
                r.report(lp, now, held, created);
            }
        }
        let done = self.drain_reports.as_ref().is_some_and(DrainReports::done);
        if !done && now < deadline {
            return;
        }
        let held: u64 = (0..self.loops()).map(|lp| self.held(lp, now)).sum();
        cx.note(format!(
            "{}: exits its drain ({held} allocations and reservations left)",
            self.name
        ));
        cx.oracle.drain_exited(self.index, now);
        self.fresh_process(cx, true);
        self.restart_at = Some(now + Duration::from_secs(self.spec.restart_pause_s));
    }

    /// The next drain report of a draining node.
    pub(super) fn next_report(&self) -> Option<Instant> {
        match self.life {
            Life::Draining { .. } => self.drain_reports.as_ref()?.next_report(),
            _ => None,
        }
    }

    /// The process is gone: every socket with it (streams closed if it exits cleanly,
    /// dropped without a word if it vanishes); the next one starts from nothing, with
    /// new seeds, on the same addresses.
    pub(super) fn fresh_process(&mut self, cx: &mut Cx, clean: bool) {
        self.life = Life::Down;
        self.drain_reports = None;
        let last = self.stats(cx.now);
        self.retired.extend(last);
        for (&sid, _) in std::mem::take(&mut self.conns).iter() {
            if clean {
                cx.net.close(cx.now, sid, Side::Acceptor);
            }
        }
        self.relays.clear();
        self.by_addr.clear();
        self.dynamic.clear();
        self.udp_allocs.clear();
        self.next_sweep = None;
        self.handshake_deadlines.clear();
        // A reload on its way dies with the process; the next one reads the file as the
        // last reload left it (its REST secrets, below).
        self.reloads.clear();
        cx.oracle.rotation.process_gone(self.index);
        match Cores::build(&self.spec, cx.seeds, cx.now) {
            Ok(cores) => self.cores = cores.cores,
            Err(e) => cx
                .oracle
                .fail("server_restarts", format!("{}: {e}", self.name)),
        }
        let wall = cx.shared.walls[self.index];
        for core in &mut self.cores {
            core.set_wall_clock(cx.now, wall.unix_ms(cx.now));
        }
        self.listeners = listeners_of(&self.cores, &self.spec);
        if self.rest_secrets.len() != 1
            || self.rest_secrets.first().map(|r| &r.1) != Some(&self.spec.rest_secret)
        {
            let mut creds = Credentials::new(&self.spec.realm);
            for (_, text) in &self.rest_secrets {
                creds.add_rest_secret(text.as_bytes());
            }
            for core in &mut self.cores {
                let mut new = Reloadable::from_config(core.config());
                new.credentials = creds.clone();
                if let Err(e) = core.reload(cx.now, new) {
                    cx.oracle
                        .fail("server_restarts", format!("{}: {e}", self.name));
                }
            }
        }
    }
}
