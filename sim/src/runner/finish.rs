//! The end of a run: its figures and outcome, and what the expectations read of it.

use super::outcome::{FleetFigures, Outcome, Summary, START};
use super::world::World;
use crate::host::Node;
use crate::oracle::{Oracle, Violation};
use crate::scenario::Scenario;
use crate::server::ServerHost;
use turnpike_core::Instant;

impl World {
    pub(super) fn finish(self, sc: &Scenario) -> Outcome {
        let now = self.clock.now();
        let mut summary = Summary {
            events: self.events,
            virtual_time: now.since(START),
            sessions: self.oracle.sessions.len(),
            datagrams: (self.net.stats.datagrams, self.net.stats.lost),
            queue_high_water: self.net.queue.high_water(),
            fault_profile: self.fault_profile.clone(),
            uclients: self.oracle.tally.clone(),
            time_to_relay_ms: crate::expect::time_to_relay_ms(sc, &self.oracle, self.drain_at),
            reflection: self
                .oracle
                .reflection
                .iter()
                .flat_map(|r| r.victims().iter())
                .map(|(ip, v)| (*ip, v.spoofed_in, v.reflected))
                .collect(),
            nat_mappings: self.net.nats().iter().map(|n| n.mappings()).sum(),
            rotation: self.oracle.rotation.counts.clone(),
            fleet: (self.servers > 1 || self.oracle.fleet.restarts > 0).then(|| {
                let f = &self.oracle.fleet;
                FleetFigures {
                    redirects: f.redirects,
                    restarts: f.restarts,
                    drain_timeouts: f.timeouts,
                    kills: f.kills,
                    drain_redemptions: f.drain_redemptions,
                    reconnects: f.reconnects.len(),
                    longest_reconnect: f.reconnects.iter().max().copied().unwrap_or_default(),
                }
            }),
            ..Summary::default()
        };
        for s in &self.oracle.sessions {
            if let Some((_, via, _, _)) = &s.connected {
                *summary.connected.entry(via.as_str()).or_insert(0) += 1;
            }
            if s.failed {
                summary.failed += 1;
            }
        }
        for (i, node) in self.nodes[..self.servers].iter().enumerate() {
            let Node::Server(h) = node else { continue };
            for st in h.stats(now).iter().chain(&h.retired) {
                summary.allocations += st.allocations_created;
                summary.answers_508 += st.insufficient_capacity;
                summary.rate_limited += st.dropped.rate_limited;
                summary.proxy_accepted += st.proxy_accepted;
                summary.loop_messages += st.loop_messages_sent;
            }
            summary.tls.handshakes += h.tls.handshakes;
            for (k, v) in &h.tls.failed {
                *summary.tls.failed.entry(k).or_insert(0) += v;
            }
            if let Some(sh) = self.oracle.servers.get(i) {
                summary.requests += sh.requests;
                for (k, v) in &sh.rejected {
                    *summary.rejected.entry(k).or_insert(0) += v;
                }
            }
        }
        let mut violation = self.oracle.violation().cloned();
        if violation.is_none() {
            let ended = now >= self.end_at;
            if !ended {
                violation = Some(Violation {
                    invariant: "run_completes",
                    detail: "the event queue ran dry before the end".into(),
                    at: now,
                });
            } else if let Err((inv, detail)) = self
                .oracle
                .rotation
                .leftovers()
                .and_then(|()| crate::expect::check(sc, &self, now))
            {
                violation = Some(Violation {
                    invariant: inv,
                    detail,
                    at: now,
                });
            }
        }
        Outcome {
            seed: self.seed,
            digest: self.digest.value(),
            summary,
            violation,
            trace: self.trace.lines(START),
        }
    }
}

/// Read-only view of a finished world, for the expectations.
pub trait Finished {
    /// The oracle.
    fn oracle(&self) -> &Oracle;
    /// The server hosts.
    fn server_hosts(&self) -> Vec<&ServerHost>;
    /// Start of the liveness phase.
    fn liveness_at(&self) -> Instant;
    /// Start of the drain phase.
    fn drain_at(&self) -> Instant;
    /// Open streams in the network.
    fn open_streams(&self) -> usize;
}

impl Finished for World {
    fn oracle(&self) -> &Oracle {
        &self.oracle
    }
    fn server_hosts(&self) -> Vec<&ServerHost> {
        self.nodes[..self.servers]
            .iter()
            .filter_map(|n| match n {
                Node::Server(h) => Some(&**h),
                _ => None,
            })
            .collect()
    }
    fn liveness_at(&self) -> Instant {
        self.liveness_at
    }
    fn drain_at(&self) -> Instant {
        self.drain_at
    }
    fn open_streams(&self) -> usize {
        self.net.open_streams()
    }
}
