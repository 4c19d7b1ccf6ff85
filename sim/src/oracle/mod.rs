//! The oracles: a shadow of what the core must be doing, built only from what crosses its
//! boundary (inputs fed, outputs drained, events), checked after every step. A violation
//! stops the run with the invariant's name.
//!
//! Invariants (one function each, named as reported):
//! - `one_response_per_request` / `every_request_answered`: a well-formed request gets
//!   exactly one answer, unless the per-source budget held it back (counted) or its
//!   stream closed;
//! - `no_relay_without_permission`, `no_relay_to_denied_address`, `relay_to_wrong_client`;
//! - `allocation_expires_on_time`;
//! - `relay_released_with_allocation`, `port_pool_matches_sockets`,
//!   `no_port_in_two_allocations`, `no_bind_in_quarantine`;
//! - `counters_balance`, `relayed_counters_match`;
//! - `memory_bounded`, `allocation_table_matches_events`, `stream_table_matches_driver`.
//!
//! A server is a node of one or more event loops ([`crate::node`]): what is per core
//! (relay ids, tables, counters of a loop) is checked per loop, what is node-wide (ports
//! in use and in quarantine, since a port moves between loops; quotas; requests, whose
//! answers may wait for another loop) per node. The node's own invariants (DESIGN.md,
//! "Quotas hold for the node, not per loop"):
//! - `user_quota_for_node` / `total_quota_for_node`: a username never holds more than
//!   `user_quota` live allocations over all loops, the node never more than
//!   `total_quota` (RFC 8656 §7.2 step 9: 486, step 10: 508);
//! - `no_508_with_free_port`: a plain IPv4 Allocate (no EVEN-PORT, RESERVATION-TOKEN or
//!   address family) is not answered 508 while some loop of the node has had a free port
//!   without a break since the request arrived (the core's own account,
//!   `Server::free_ports_since`, read from every loop when the answer goes out), unless
//!   the node lacked room under `total_quota` at the end of some step since then or a
//!   relay bind of the node failed meanwhile (both excuse a 508: conservative, so it
//!   cannot flake), or the node drains (508 is then its answer when no alternate serves
//!   the client);
//! - `reservation_redeemed_anywhere`: an Allocate carrying a RESERVATION-TOKEN that the
//!   node issued, not yet redeemed and more than a second from expiry (30 s) is not
//!   answered 508, whichever loop receives it (RFC 8656 §7.2);
//! - `allocation_owned_by_one_loop`, `relayed_address_unique`: an allocation id is
//!   created once in the node, by the loop its id names (`loop_of`), every loop's listing
//!   shows exactly its own allocations, and no two live allocations share a relayed
//!   address;
//! - `loop_message_answered`: an Allocate whose answer waits for another loop (its loop
//!   sent a loop message in the step it arrived) is answered within
//!   [`CROSS_LOOP_ANSWER`], exactly once (retransmissions meanwhile included).
//!
//! One file per family, each an `impl Shadow` over the state of [`shadow`] (which
//! depends on none of them): `requests` (answers), `relay` (relay paths, ports,
//! counters), `allocations` (the allocation table, quotas, expiry, memory), `node` (an
//! Allocate's answer judged node-wide), `drain` (what a draining node may still do). This file is the entry point the driver calls,
//! and hands the fleet, reload and reflection oracles ([`crate::fleet`],
//! [`crate::rotation`], [`crate::reflection`]) what they watch.

mod allocations;
mod drain;
mod node;
mod relay;
mod requests;
mod shadow;

pub use relay::denied;
pub use shadow::{
    AllocationRecord, Key, SessionRecord, Shadow, ShadowConfig, Violation, CROSS_LOOP_ANSWER,
    TOKEN_LIFETIME,
};

use crate::fleet::Made;
use crate::net::StreamId;
use crate::scenario::Via;
use crate::server::ServerHost;
use shadow::{Check, NodeStats, Step, StepCheck, StreamObs};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::channel;
use turnpike_core::framing::StreamFramer;
use turnpike_core::server::BindError;
use turnpike_core::stun::Message;
use turnpike_core::{AllocationId, Event, Forward, Instant, ListenerId, Output, RelayId};

/// All the oracles of a run.
#[derive(Debug)]
pub struct Oracle {
    /// Per server.
    pub servers: Vec<Shadow>,
    /// Browser sessions.
    pub sessions: Vec<SessionRecord>,
    /// What the scripted clients achieved.
    pub tally: crate::uclient::Tally,
    /// The reflection oracle, when a flood is aimed at a victim's address.
    pub reflection: Option<crate::reflection::ReflectionWatch>,
    /// The reload oracle.
    pub rotation: crate::rotation::RotationWatch,
    /// The fleet oracles: drains, redirects, reconnections ([`crate::fleet`]).
    pub fleet: crate::fleet::FleetWatch,
    violation: Option<Violation>,
    now: Instant,
}

impl Oracle {
    /// Oracles for servers with these limits.
    pub fn new(configs: Vec<ShadowConfig>) -> Self {
        Oracle {
            servers: configs.into_iter().map(Shadow::new).collect(),
            sessions: Vec::new(),
            tally: Default::default(),
            reflection: None,
            rotation: Default::default(),
            fleet: Default::default(),
            violation: None,
            now: Instant::default(),
        }
    }

    /// The first violation, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Records a violation (the first one wins).
    pub fn fail(&mut self, invariant: &'static str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant,
                detail,
                at: self.now,
            });
        }
    }

    /// Sets the time of the current step.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// A datagram from `from` reached host `to_node` at `to`: the reflection oracle
    /// counts it and checks its bound.
    pub fn datagram_delivered(&mut self, from: IpAddr, to_node: usize, to: IpAddr, bytes: usize) {
        let Some(w) = &mut self.reflection else {
            return;
        };
        w.datagram(self.now, from, to_node, to, bytes);
        if let Err((invariant, detail)) = w.check(self.now) {
            self.fail(invariant, detail);
        }
    }

    // ---- inputs the driver feeds --------------------------------------------------------

    /// A datagram fed to a UDP listener of loop `lp`.
    pub fn udp_input(
        &mut self,
        s: usize,
        lp: u16,
        listener: ListenerId,
        from: SocketAddr,
        data: &[u8],
    ) {
        let key = Key::Udp(listener, from);
        let now = self.now;
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        match data.first().map(|b| b >> 6) {
            None => {}
            Some(0) => sh.stun_input(now, key, lp, data),
            Some(1) => match channel::parse(data) {
                Ok(_) => sh.data_in += 1,
                Err(_) => sh.garbage_in += 1,
            },
            Some(_) => sh.garbage_in += 1,
        }
    }

    /// A datagram fed to a relay socket.
    pub fn relay_input(&mut self, s: usize, _relay: RelayId, _from: SocketAddr) {
        if let Some(sh) = self.servers.get_mut(s) {
            sh.data_in += 1;
        }
    }

    /// A stream accepted on a listener by loop `lp` (`proxy`: it must start with a PROXY
    /// header).
    pub fn stream_open(&mut self, s: usize, lp: u16, sid: StreamId, proxy: bool) {
        if let Some(sh) = self.servers.get_mut(s) {
            sh.streams.insert(
                sid,
                StreamObs {
                    lp,
                    header: proxy.then(Vec::new),
                    framer: Some(StreamFramer::new(65_535 + 20).stun_first()),
                    step_data: 0,
                },
            );
        }
    }

    /// A stream refused for lack of file descriptors.
    pub fn stream_refused(&mut self, s: usize) {
        if let Some(sh) = self.servers.get_mut(s) {
            sh.refused += 1;
        }
    }

    /// Bytes fed to a stream.
    pub fn stream_input(&mut self, s: usize, sid: StreamId, data: &[u8]) {
        let now = self.now;
        if let Some(sh) = self.servers.get_mut(s) {
            sh.stream_input(now, sid, data);
        }
    }

    /// The driver reported a stream closed.
    pub fn stream_closed(&mut self, s: usize, sid: StreamId) {
        if let Some(sh) = self.servers.get_mut(s) {
            sh.close_stream(sid);
        }
    }

    /// The driver's answer to a BindRelay of loop `lp`.
    pub fn bind_result(
        &mut self,
        s: usize,
        lp: u16,
        now: Instant,
        relay: RelayId,
        addr: SocketAddr,
        result: Result<(), BindError>,
    ) {
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        if result.is_err() {
            // The pool quarantines a port that failed to bind.
            sh.remove_relay((lp, relay));
            sh.holders.remove(&addr);
            sh.released.insert((addr.is_ipv6(), addr.port()), now);
            sh.last_bind_failure = Some(now);
        }
    }

    // ---- outputs the core produced ------------------------------------------------------

    /// A fast-path forward towards a client (ToPeer is seen through [`Oracle::to_peer`]).
    pub fn forward(
        &mut self,
        s: usize,
        lp: u16,
        now: Instant,
        fwd: &Forward,
        from_peer: Option<(RelayId, SocketAddr)>,
    ) {
        let dest = match *fwd {
            Forward::ToPeer { .. } => return,
            Forward::ToClient {
                listener, client, ..
            } => Key::Udp(listener, client),
            Forward::ToStream { conn, .. } => Key::Stream(StreamId(conn.0)),
        };
        let Some((relay, from)) = from_peer else {
            return self.fail(
                "relay_to_wrong_client",
                format!("data for {dest:?} without a peer datagram"),
            );
        };
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        sh.fwd_client += 1;
        let result = sh.check_peer_path(now, (lp, relay), from, Some(dest));
        if let Err((inv, d)) = result {
            self.fail(inv, d);
        }
    }

    /// Relayed data leaves relay socket `relay` of loop `lp` for `peer`.
    pub fn to_peer(&mut self, s: usize, lp: u16, now: Instant, relay: RelayId, peer: SocketAddr) {
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        sh.fwd_peer += 1;
        if let Err((inv, d)) = sh.check_peer_path(now, (lp, relay), peer, None) {
            return self.fail(inv, d);
        }
        if denied(peer, &sh.cfg.allow) {
            self.fail(
                "no_relay_to_denied_address",
                format!("relay {} sent to {peer}", relay.0),
            );
        }
    }

    /// One output drained from the core of loop `lp`.
    pub fn output(&mut self, s: usize, lp: u16, now: Instant, out: &Output) {
        if let Output::Transmit { data, .. } | Output::StreamWrite { data, .. } = out {
            if let Err((inv, d)) = self.fleet.server_answered(s, data) {
                self.fail(inv, d);
            }
        }
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        let r = match out {
            Output::Transmit { listener, to, data } => {
                answer(sh, now, Key::Udp(*listener, *to), data)
            }
            Output::StreamWrite { conn, data } => {
                answer(sh, now, Key::Stream(StreamId(conn.0)), data)
            }
            Output::CloseStream { conn, .. } => {
                sh.close_stream(StreamId(conn.0));
                Ok(())
            }
            Output::BindRelay { relay, addr } => sh.bind_request(now, (lp, *relay), *addr),
            Output::CloseRelay { relay } => {
                if let Some(r) = sh.remove_relay((lp, *relay)) {
                    sh.holders.remove(&r.addr);
                    sh.released.insert((r.addr.is_ipv6(), r.addr.port()), now);
                }
                Ok(())
            }
            Output::ToLoop { .. } => {
                sh.step_sent.insert(lp);
                Ok(())
            }
            Output::Event(_) => Ok(()),
        };
        let answered = std::mem::take(&mut sh.answered);
        if let Err((inv, d)) = r {
            self.fail(inv, d);
        }
        for a in &answered {
            if let Err((inv, d)) = self.rotation.answer(s, now, a) {
                self.fail(inv, d);
            }
        }
    }

    /// What the core of loop `lp` says now: since when it has had a free IPv4 relay port
    /// without a break (None: it has none). Given for every loop before each answer.
    pub fn free_ports(&mut self, s: usize, lp: u16, since: Option<Instant>) {
        if let Some(f) = self
            .servers
            .get_mut(s)
            .and_then(|sh| sh.free_since.get_mut(usize::from(lp)))
        {
            *f = since;
        }
    }

    /// An event from the core of loop `lp`.
    pub fn event(&mut self, s: usize, lp: u16, now: Instant, e: &Event) {
        let fleet = match e {
            Event::AllocationCreated { id, client, .. } => {
                let made = self
                    .servers
                    .get(s)
                    .map_or(Made::Unknown, |sh| sh.allocate_behind(Key::of(client)));
                self.fleet.allocation_created(s, *id, now, made)
            }
            Event::AllocationDeleted { id, reason, .. } => {
                self.fleet.allocation_deleted(s, *id, *reason)
            }
            Event::AllocationRedirected { to, .. } => self.fleet.server_redirected(s, *to),
            _ => Ok(()),
        };
        if let Err((inv, d)) = fleet {
            self.fail(inv, d);
        }
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        if let Err((inv, d)) = sh.event(now, lp, e) {
            self.fail(inv, d);
        }
    }

    // ---- the checks after every step ----------------------------------------------------

    /// Runs every per-step invariant against each server.
    pub fn after_step(&mut self, now: Instant, hosts: &[&ServerHost]) {
        self.now = now;
        if let Err((inv, d)) = self.fleet.after_step(now) {
            self.fail(inv, d);
            return;
        }
        for (i, host) in hosts.iter().enumerate() {
            let Some(sh) = self.servers.get_mut(i) else {
                continue;
            };
            let loops = host.stats(now);
            let stats = NodeStats::of(&loops);
            let step = Step {
                now,
                host,
                loops: &loops,
                stats: &stats,
            };
            let checks: [StepCheck; 8] = [
                Shadow::one_response_per_request,
                Shadow::loop_message_answered,
                Shadow::relay_released_with_allocation,
                Shadow::tables_match,
                Shadow::allocation_owned_by_one_loop,
                Shadow::allocation_expires_on_time,
                Shadow::counters_balance,
                Shadow::memory_bounded,
            ];
            for check in checks {
                if let Err((inv, d)) = check(sh, &step) {
                    let d = format!("{}: {d}", host.name);
                    self.fail(inv, d);
                    return;
                }
            }
            if let Err((inv, d)) = self.rotation.delivered(i, now, host.loops()) {
                let d = format!("{}: {d}", host.name);
                self.fail(inv, d);
                return;
            }
            sh.end_step(&step);
        }
    }

    // ---- fleets ----------------------------------------------------------------------------

    /// Server `s` begins to drain at `now`; it exits at `deadline` at the latest.
    pub fn drain_started(&mut self, s: usize, now: Instant, deadline: Instant) {
        let live: Vec<AllocationId> = self
            .servers
            .get_mut(s)
            .map(|sh| {
                sh.draining = true;
                sh.allocs.keys().copied().collect()
            })
            .unwrap_or_default();
        self.fleet.drain_started(s, now, deadline, live.into_iter());
    }

    /// Server `s`'s host exits its drain; its next process starts from nothing. What it
    /// left behind is counted from the shadow (allocations created and not deleted, and
    /// RESERVATION-TOKENs handed out, not redeemed nor expired), not from the host.
    pub fn drain_exited(&mut self, s: usize, now: Instant) {
        let live = self.servers.get(s).map_or(0, |sh| sh.held(now) as u64);
        if let Err((inv, d)) = self.fleet.drain_exited(s, now, live) {
            self.fail(inv, d);
        }
        self.restarted(s);
    }

    /// Server `s` vanished at `now`: all its state is gone.
    pub fn killed(&mut self, s: usize, now: Instant) {
        self.fleet.killed(s, now);
        self.restarted(s);
    }

    /// Server `s`'s process is replaced by a fresh one: its shadow starts from nothing
    /// (what was created and seen so far is kept for the end of the run).
    fn restarted(&mut self, s: usize) {
        if let Some(sh) = self.servers.get_mut(s) {
            sh.restart();
        }
    }

    /// A call has a relay again (an ICE restart got a fresh allocation).
    pub fn session_reconnected(&mut self, r: usize, now: Instant, relayed: Option<SocketAddr>) {
        self.fleet.connected(r, now, relayed);
    }

    /// A call lost its relay (its client saw it).
    pub fn session_relay_lost(&mut self, r: usize, now: Instant) {
        if let Err((inv, d)) = self.fleet.relay_lost(r, now) {
            self.fail(inv, d);
        }
    }

    /// A client followed a 300 Try Alternate.
    pub fn redirect(&mut self) {
        self.fleet.redirect();
    }

    /// An attempt of call `r` sends an Allocate to `to`, having sent Allocates to `went`.
    pub fn allocate_sent(&mut self, r: usize, went: &mut Vec<SocketAddr>, to: SocketAddr) {
        if let Err((inv, d)) = self.fleet.allocate_sent(r, went, to) {
            self.fail(inv, d);
        }
    }

    /// A well-behaved session ended without an allocation.
    pub fn fleet_session_failed(&mut self, r: usize) {
        let servers = &self.servers;
        let check = self.fleet.session_failed(r, |s| {
            servers.get(s).map_or(0, |sh| sh.live_allocations() as u64)
        });
        if let Err((inv, d)) = check {
            self.fail(inv, d);
        }
    }

    // ---- sessions ------------------------------------------------------------------------

    /// A browser starts a session; returns its record number.
    pub fn session_start(
        &mut self,
        browser: usize,
        group: usize,
        username: &str,
        real: SocketAddr,
        now: Instant,
        with_peer: bool,
    ) -> usize {
        self.sessions.push(SessionRecord {
            browser,
            group,
            username: username.to_string(),
            real,
            start: now,
            first_answer: None,
            connected: None,
            codes: Vec::new(),
            echoes: 0,
            with_peer,
            pair_window: None,
            failed: false,
            lost: false,
            vanished: false,
            ended: None,
        });
        self.sessions.len() - 1
    }

    /// A server answered (allocation or error).
    pub fn session_answer(&mut self, r: usize, now: Instant) {
        if let Some(s) = self.sessions.get_mut(r) {
            s.first_answer.get_or_insert(now);
        }
    }

    /// The session kept an allocation.
    pub fn session_connected(
        &mut self,
        r: usize,
        now: Instant,
        via: Via,
        mapped: Option<SocketAddr>,
        relayed: Vec<SocketAddr>,
    ) {
        self.fleet.connected(r, now, relayed.first().copied());
        if let Some(s) = self.sessions.get_mut(r) {
            s.connected = Some((now, via, mapped, relayed));
        }
    }

    /// An error code.
    pub fn session_code(&mut self, r: usize, code: u16) {
        if let Some(s) = self.sessions.get_mut(r) {
            if s.codes.len() < 64 {
                s.codes.push(code);
            }
        }
    }

    /// An echo.
    pub fn session_echo(&mut self, r: usize) {
        if let Some(s) = self.sessions.get_mut(r) {
            s.echoes += 1;
        }
    }

    /// A browser pair: the partner's relayed address is known from `now` on.
    pub fn session_partner(&mut self, r: usize, now: Instant) {
        if let Some(s) = self.sessions.get_mut(r) {
            s.with_peer = true;
            if s.pair_window.is_none_or(|(_, gone)| gone.is_some()) {
                s.pair_window = Some((now, None));
            }
        }
    }

    /// A browser pair: the partner left (its session ended) at `now`.
    pub fn session_partner_gone(&mut self, r: usize, now: Instant) {
        if let Some(s) = self.sessions.get_mut(r) {
            if let Some((_, gone)) = &mut s.pair_window {
                gone.get_or_insert(now);
            }
        }
    }

    /// Every attempt failed.
    pub fn session_failed(&mut self, r: usize, now: Instant) {
        self.fleet.ended(r);
        if let Some(s) = self.sessions.get_mut(r) {
            s.failed = true;
            s.ended = Some(now);
        }
    }

    /// The kept allocation was lost.
    pub fn session_lost(&mut self, r: usize, _now: Instant) {
        if let Some(s) = self.sessions.get_mut(r) {
            s.lost = true;
        }
    }

    /// The browser vanished.
    pub fn session_vanished(&mut self, r: usize) {
        if let Some(s) = self.sessions.get_mut(r) {
            s.vanished = true;
        }
    }

    /// The session ended.
    pub fn session_ended(&mut self, r: usize, now: Instant) {
        self.fleet.ended(r);
        if let Some(s) = self.sessions.get_mut(r) {
            s.ended.get_or_insert(now);
        }
    }
}

/// The answer `data` to `key`: matched with its request, and an Allocate's checked
/// node-wide.
fn answer(sh: &mut Shadow, now: Instant, key: Key, data: &[u8]) -> Check {
    let Some((arrived, kind)) = sh.response(now, key, data)? else {
        return Ok(());
    };
    match Message::parse(data) {
        Ok(msg) => {
            sh.drain_answer(&msg, arrived, kind)?;
            sh.allocate_answer(now, &msg, arrived, kind)
        }
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn node(loops: u16, user_quota: u64, total_quota: u64) -> Oracle {
        Oracle::new(vec![ShadowConfig {
            quarantine: Duration::from_secs(5),
            permission_lifetime: Duration::from_secs(300),
            max_streams: 100,
            total_quota,
            user_quota,
            allow: Vec::new(),
            loops,
        }])
    }

    /// Loop `lp` binds relay `relay` on `port` and creates allocation `n` of its own
    /// on it for `user`.
    fn create(o: &mut Oracle, lp: u16, n: u64, relay: u32, port: u16, user: &str) {
        let id = AllocationId(turnpike_core::node::allocation_id_base(lp) + n);
        create_id(o, lp, id, relay, port, user);
    }

    /// Loop `lp` binds relay `relay` on `port` and announces allocation `id` on it.
    fn create_id(o: &mut Oracle, lp: u16, id: AllocationId, relay: u32, port: u16, user: &str) {
        let now = Instant::from_secs(10);
        let addr = SocketAddr::from(([30, 0, 0, 1], port));
        let relay = RelayId(relay);
        o.output(0, lp, now, &Output::BindRelay { relay, addr });
        let client = turnpike_core::event::ClientInfo {
            transport: turnpike_core::Transport::Udp,
            addr: SocketAddr::from(([20, 0, 0, 1], port - 10_000)),
            listener: ListenerId(1),
            conn: None,
        };
        let e = Event::AllocationCreated {
            id,
            client,
            username: user.into(),
            relayed: vec![addr],
            lifetime_s: 600,
        };
        o.event(0, lp, now, &e);
    }

    #[test]
    fn user_quota_counts_every_loop() {
        let mut o = node(4, 2, 100);
        create(&mut o, 0, 1, 1, 50_000, "alice");
        create(&mut o, 1, 1, 1, 50_002, "alice");
        create(&mut o, 2, 1, 1, 50_004, "bob");
        assert!(o.violation().is_none(), "{:?}", o.violation());
        create(&mut o, 3, 1, 1, 50_006, "alice");
        assert_eq!(
            o.violation().map(|v| v.invariant),
            Some("user_quota_for_node")
        );
    }

    #[test]
    fn total_quota_counts_every_loop() {
        let mut o = node(2, 10, 2);
        create(&mut o, 0, 1, 1, 50_000, "a");
        create(&mut o, 1, 1, 1, 50_002, "b");
        assert!(o.violation().is_none(), "{:?}", o.violation());
        create(&mut o, 1, 2, 2, 50_004, "c");
        assert_eq!(
            o.violation().map(|v| v.invariant),
            Some("total_quota_for_node")
        );
    }

    #[test]
    fn an_id_names_its_loop_and_relay_ids_of_loops_may_collide() {
        let mut o = node(2, 10, 100);
        // Relay 1 of loop 0 and relay 1 of loop 1 are two sockets.
        create(&mut o, 0, 1, 1, 50_000, "a");
        create(&mut o, 1, 1, 1, 50_002, "b");
        assert!(o.violation().is_none(), "{:?}", o.violation());
        // Loop 1 announcing an id of loop 0's range.
        let mut o = node(2, 10, 100);
        create_id(&mut o, 1, AllocationId(1), 1, 50_000, "a");
        assert_eq!(
            o.violation().map(|v| v.invariant),
            Some("allocation_owned_by_one_loop")
        );
    }

    #[test]
    fn a_port_held_by_one_loop_is_not_bound_by_another() {
        let mut o = node(2, 10, 100);
        let now = Instant::from_secs(10);
        let addr = SocketAddr::from(([30, 0, 0, 1], 50_000));
        o.output(
            0,
            0,
            now,
            &Output::BindRelay {
                relay: RelayId(1),
                addr,
            },
        );
        o.output(
            0,
            1,
            now,
            &Output::BindRelay {
                relay: RelayId(7),
                addr,
            },
        );
        assert_eq!(
            o.violation().map(|v| v.invariant),
            Some("no_port_in_two_allocations")
        );
    }

    /// A node of 2 loops in a fleet watch, so that its drain is judged.
    fn fleet_node() -> Oracle {
        let mut o = node(2, 10, 100);
        o.fleet = crate::fleet::FleetWatch::new(vec![(vec![[30, 0, 0, 1].into()], 100)]);
        o
    }

    /// `client` sends an Allocate (transaction `tid`) to loop `lp`: with `token`, or
    /// else with EVEN-PORT R.
    fn allocate(o: &mut Oracle, lp: u16, client: SocketAddr, tid: u8, token: Option<[u8; 8]>) {
        use turnpike_core::stun::{attr, Class, MessageBuilder, Method, TransactionId};
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Request, TransactionId([tid; 12]));
        b.add(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
        match token {
            Some(t) => b.add(attr::RESERVATION_TOKEN, &t),
            None => b.add(attr::EVEN_PORT, &[0x80]),
        };
        o.udp_input(0, lp, ListenerId(1), client, &b.finish());
    }

    /// Loop `lp` answers `client`'s Allocate `tid`: success with `token`, or `code`.
    fn answer_allocate(
        o: &mut Oracle,
        lp: u16,
        client: SocketAddr,
        tid: u8,
        token: Option<[u8; 8]>,
        code: Option<u16>,
    ) {
        use turnpike_core::stun::{attr, Class, MessageBuilder, Method, TransactionId};
        let class = if code.is_some() {
            Class::Error
        } else {
            Class::Success
        };
        let mut b = MessageBuilder::new(Method::ALLOCATE, class, TransactionId([tid; 12]));
        if let Some(c) = code {
            b.add_error_code(c, "refused");
        }
        if let Some(t) = token {
            b.add(attr::RESERVATION_TOKEN, &t);
        }
        let data = b.finish();
        let out = Output::Transmit {
            listener: ListenerId(1),
            to: client,
            data,
        };
        o.output(0, lp, o.now, &out);
    }

    /// Loop `lp` announces allocation `n` of its own for `client`, on relay port `port`.
    fn created(o: &mut Oracle, lp: u16, n: u64, client: SocketAddr, port: u16) {
        let id = AllocationId(turnpike_core::node::allocation_id_base(lp) + n);
        let addr = SocketAddr::from(([30, 0, 0, 1], port));
        let relay = RelayId(n as u32);
        o.output(0, lp, o.now, &Output::BindRelay { relay, addr });
        let client = turnpike_core::event::ClientInfo {
            transport: turnpike_core::Transport::Udp,
            addr: client,
            listener: ListenerId(1),
            conn: None,
        };
        let e = Event::AllocationCreated {
            id,
            client,
            username: "u".into(),
            relayed: vec![addr],
            lifetime_s: 600,
        };
        o.event(0, lp, o.now, &e);
    }

    /// A draining node takes a live token's Allocate (the second port of a call under
    /// way) on any loop, and an Allocate that came in before the drain; a new one, or a
    /// token's refused, is a call cut by the drain.
    #[test]
    fn a_drain_takes_tokens_and_allocates_under_way_only() {
        let (a, b, c) = (
            SocketAddr::from(([20, 0, 0, 1], 1000)),
            SocketAddr::from(([20, 0, 0, 2], 1000)),
            SocketAddr::from(([20, 0, 0, 3], 1000)),
        );
        let token = [7u8; 8];
        let run = |refuse_token: bool, new_during_drain: bool| {
            let mut o = fleet_node();
            o.set_now(Instant::from_secs(10));
            allocate(&mut o, 0, a, 1, None);
            created(&mut o, 0, 1, a, 50_000);
            answer_allocate(&mut o, 0, a, 1, Some(token), None);
            allocate(&mut o, 0, c, 2, None);
            o.set_now(Instant::from_secs(11));
            o.drain_started(0, Instant::from_secs(11), Instant::from_secs(300));
            // C's Allocate arrived before the drain: it may still be made.
            created(&mut o, 0, 2, c, 50_004);
            o.set_now(Instant::from_secs(15));
            allocate(&mut o, 1, b, 3, Some(token));
            if refuse_token {
                answer_allocate(&mut o, 1, b, 3, None, Some(508));
            } else {
                created(&mut o, 1, 1, b, 50_001);
                answer_allocate(&mut o, 1, b, 3, None, None);
            }
            if new_during_drain {
                let d = SocketAddr::from(([20, 0, 0, 4], 1000));
                allocate(&mut o, 0, d, 4, None);
                created(&mut o, 0, 3, d, 50_006);
            }
            o.violation().map(|v| v.invariant)
        };
        assert_eq!(run(false, false), None);
        assert_eq!(run(true, false), Some("no_call_cut_by_drain"));
        assert_eq!(run(false, true), Some("no_call_cut_by_drain"));
    }
}
