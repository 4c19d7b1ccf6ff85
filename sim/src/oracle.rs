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

use crate::net::StreamId;
use crate::scenario::Via;
use crate::server::ServerHost;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::channel;
use turnpike_core::cidr::IpNet;
use turnpike_core::event::DeleteReason;
use turnpike_core::framing::{Frame, StreamFramer};
use turnpike_core::node::{loop_of, LoopId};
use turnpike_core::proxy_protocol::{self, ProxyParse};
use turnpike_core::server::{BindError, Stats};
use turnpike_core::stun::{attr, Class, Message, Method};
use turnpike_core::{AllocationId, Event, Forward, Instant, ListenerId, Output, RelayId};

/// A broken invariant.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// When.
    pub at: Instant,
}

/// The 5-tuple key of a client as the driver sees it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Key {
    /// A UDP client on a listener.
    Udp(ListenerId, SocketAddr),
    /// A stream.
    Stream(StreamId),
}

/// Limits of one server the shadow needs.
#[derive(Clone, Debug)]
pub struct ShadowConfig {
    /// Port quarantine.
    pub quarantine: Duration,
    /// Permission lifetime.
    pub permission_lifetime: Duration,
    /// Stream cap.
    pub max_streams: u64,
    /// Allocation cap of the node.
    pub total_quota: u64,
    /// Allocations per username, in the node.
    pub user_quota: u64,
    /// Peers allowed although special.
    pub allow: Vec<IpNet>,
    /// Event loops of the node.
    pub loops: u16,
}

/// How long an answer that waits for another loop may take: messages take at most
/// 200 µs, and a loop that runs out asks the others one by one.
pub const CROSS_LOOP_ANSWER: Duration = Duration::from_secs(1);
/// A RESERVATION-TOKEN is held this long by the loop that issued it (the core's
/// RESERVATION_LIFETIME; RFC 8656 §7.2 suggests 30 s).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30);
/// Allocation listings of the loops are compared with the shadow at most this often.
const LISTING_EVERY: Duration = Duration::from_secs(1);

/// What an Allocate asked for, as far as the node-level 508 checks care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AllocKind {
    /// Not an Allocate.
    None,
    /// An IPv4 relayed address, any port.
    Plain,
    /// With RESERVATION-TOKEN.
    Token([u8; 8]),
    /// Anything else (EVEN-PORT, address families).
    Other,
}

/// What happened to one allocation, for end-of-run expectations.
#[derive(Clone, Debug)]
pub struct AllocationRecord {
    /// Username.
    pub username: String,
    /// Client address as the core reported it.
    pub client: SocketAddr,
    /// Relayed addresses.
    pub relayed: Vec<SocketAddr>,
    /// Created at.
    pub created: Instant,
    /// Ended at, and why.
    pub deleted: Option<(Instant, DeleteReason)>,
}

/// One browser session, for liveness and expectations.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    /// Browser.
    pub browser: usize,
    /// Group.
    pub group: usize,
    /// Username of its credential.
    pub username: String,
    /// Its real address (port 0: any).
    pub real: SocketAddr,
    /// Started.
    pub start: Instant,
    /// First answer (allocation or error) from a server.
    pub first_answer: Option<Instant>,
    /// Kept allocation: when, over what, mapped address, relayed addresses.
    pub connected: Option<(Instant, Via, Option<SocketAddr>, Vec<SocketAddr>)>,
    /// Error codes seen.
    pub codes: Vec<u16>,
    /// Echoes received.
    pub echoes: u64,
    /// It talks to a peer.
    pub with_peer: bool,
    /// For a browser pair: when the partner's relayed address was learnt, and when it
    /// went away (the window in which echoes are expected).
    pub pair_window: Option<(Instant, Option<Instant>)>,
    /// Every attempt failed.
    pub failed: bool,
    /// The kept allocation was lost.
    pub lost: bool,
    /// The browser vanished.
    pub vanished: bool,
    /// Ended (released or vanished).
    pub ended: Option<Instant>,
}

#[derive(Debug)]
struct StepRequest {
    key: Key,
    lp: u16,
    tid: [u8; 12],
    method: Method,
    peers: Vec<SocketAddr>,
    answers: u32,
    arrived: Instant,
    kind: AllocKind,
    /// Copies received (retransmissions while the answer waited for another loop).
    copies: u32,
    /// Its USERNAME, if any.
    username: Option<String>,
}

#[derive(Debug)]
struct RelayShadow {
    addr: SocketAddr,
    owner: Option<AllocationId>,
}

/// A relay socket of the node: the loop that bound it and that loop's id for it.
type LoopRelay = (u16, RelayId);

#[derive(Debug)]
struct TokenShadow {
    issued: Instant,
    redeemed: bool,
}

#[derive(Debug)]
struct AllocShadow {
    key: Key,
    lp: u16,
    username: String,
    relayed: Vec<SocketAddr>,
    relays: Vec<LoopRelay>,
    expires: Instant,
    perms: BTreeMap<IpAddr, Instant>,
    record: usize,
}

#[derive(Debug)]
struct StreamObs {
    lp: u16,
    header: Option<Vec<u8>>,
    framer: Option<StreamFramer>,
    step_data: u64,
}

/// The shadow of one server.
#[derive(Debug)]
pub struct Shadow {
    cfg: ShadowConfig,
    step_requests: Vec<StepRequest>,
    /// Requests whose answer waits for another loop, with their deadline.
    waiting: Vec<(Instant, StepRequest)>,
    /// Loops that sent a loop message during this step.
    step_sent: BTreeSet<u16>,
    step_closed: BTreeSet<StreamId>,
    step_deleted: Vec<LoopRelay>,
    step_slack: u64,
    step_alloc_events: bool,
    relays: BTreeMap<LoopRelay, RelayShadow>,
    /// Open relay sockets per loop, IPv4 and IPv6.
    relays_per_loop: Vec<[u32; 2]>,
    /// Live allocations per loop.
    allocs_per_loop: Vec<u64>,
    holders: BTreeMap<SocketAddr, LoopRelay>,
    /// Live allocations per username, over the node's loops.
    by_user: BTreeMap<String, u64>,
    /// Every allocation id ever created in the node.
    ids: BTreeSet<AllocationId>,
    /// Relayed addresses of live allocations.
    relayed: BTreeMap<SocketAddr, AllocationId>,
    /// RESERVATION-TOKENs the node answered with.
    tokens: BTreeMap<[u8; 8], TokenShadow>,
    /// Per loop: since when it has had a free IPv4 port without a break, as its core
    /// said when the answer being checked went out.
    free_since: Vec<Option<Instant>>,
    /// Since when the node has had room under `total_quota` at the end of every step.
    room_since: Option<Instant>,
    /// The last failed relay bind of the node.
    last_bind_failure: Option<Instant>,
    next_listing: Instant,
    released: BTreeMap<(bool, u16), Instant>,
    allocs: BTreeMap<AllocationId, AllocShadow>,
    by_key: BTreeMap<Key, AllocationId>,
    /// Permission-granting answers already given (key, transaction), oldest first: the
    /// core replays them to retransmissions for 40 s (RFC 8489 §6.3.1), even once the
    /// allocation is gone; a replay grants nothing.
    granted: VecDeque<(Instant, Key, [u8; 12])>,
    expiry: BTreeSet<(Instant, AllocationId)>,
    streams: BTreeMap<StreamId, StreamObs>,
    data_in: u64,
    garbage_in: u64,
    fwd_peer: u64,
    fwd_client: u64,
    prev_rate_limited: u64,
    prev_queue_full: u64,
    /// Answers of this step to requests with a USERNAME, for the reload oracle.
    answered: Vec<crate::rotation::Answered>,
    /// Every allocation ever created.
    pub history: Vec<AllocationRecord>,
    /// Streams rejected by the core, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Streams refused by the driver (no file descriptors).
    pub refused: u64,
    /// Requests seen.
    pub requests: u64,
    /// Requests left unanswered (budget, closed streams).
    pub unanswered: u64,
    /// The server drains: it answers 508 to new Allocates when no alternate serves the
    /// client ([`crate::fleet`]).
    draining: bool,
}

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
                sh.response(now, Key::Udp(*listener, *to), data)
            }
            Output::StreamWrite { conn, data } => {
                sh.response(now, Key::Stream(StreamId(conn.0)), data)
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
            Event::AllocationCreated { id, .. } => self.fleet.allocation_created(s, *id, now),
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

/// How long the core keeps answers for retransmissions (with a margin).
const REPLAY_WINDOW: Duration = Duration::from_secs(45);

type Check = Result<(), (&'static str, String)>;

/// What a per-step check looks at.
struct Step<'a> {
    now: Instant,
    host: &'a ServerHost,
    /// Each loop's counters.
    loops: &'a [Stats],
    /// The node's sums of what the checks compare.
    stats: &'a NodeStats,
}

/// The node-wide sums of the loops' counters the checks compare.
#[derive(Debug, Default)]
struct NodeStats {
    allocations: u64,
    pending: u64,
    streams: u64,
    rate_limited: u64,
    queue_full: u64,
    to_peer: u64,
    to_client: u64,
    drops: u64,
}

impl NodeStats {
    fn of(loops: &[Stats]) -> NodeStats {
        let mut n = NodeStats::default();
        for s in loops {
            let d = &s.dropped;
            n.allocations += s.allocations;
            n.pending += s.allocations_pending;
            n.streams += s.streams;
            n.rate_limited += d.rate_limited;
            n.queue_full += d.queue_full;
            n.to_peer += s.udp.to_peer_packets + s.tcp.to_peer_packets;
            n.to_client += s.udp.from_peer_packets + s.tcp.from_peer_packets;
            n.drops += d.no_allocation
                + d.no_permission
                + d.unbound_channel
                + d.too_large
                + d.denied_peer
                + d.unknown_relay
                + d.malformed;
        }
        n
    }
}

type StepCheck = fn(&mut Shadow, &Step) -> Check;

impl Shadow {
    fn new(cfg: ShadowConfig) -> Self {
        let loops = usize::from(cfg.loops.max(1));
        Shadow {
            cfg,
            step_requests: Vec::new(),
            waiting: Vec::new(),
            step_sent: BTreeSet::new(),
            step_closed: BTreeSet::new(),
            step_deleted: Vec::new(),
            step_slack: 0,
            step_alloc_events: false,
            relays: BTreeMap::new(),
            relays_per_loop: vec![[0; 2]; loops],
            allocs_per_loop: vec![0; loops],
            holders: BTreeMap::new(),
            by_user: BTreeMap::new(),
            ids: BTreeSet::new(),
            relayed: BTreeMap::new(),
            tokens: BTreeMap::new(),
            free_since: vec![None; loops],
            room_since: None,
            last_bind_failure: None,
            next_listing: Instant::default(),
            released: BTreeMap::new(),
            allocs: BTreeMap::new(),
            by_key: BTreeMap::new(),
            granted: VecDeque::new(),
            expiry: BTreeSet::new(),
            streams: BTreeMap::new(),
            data_in: 0,
            garbage_in: 0,
            fwd_peer: 0,
            fwd_client: 0,
            prev_rate_limited: 0,
            prev_queue_full: 0,
            answered: Vec::new(),
            history: Vec::new(),
            rejected: BTreeMap::new(),
            refused: 0,
            requests: 0,
            unanswered: 0,
            draining: false,
        }
    }

    /// The server's process was replaced by a fresh one: nothing of the old one's state
    /// remains, but the record of what happened does.
    fn restart(&mut self) {
        let mut fresh = Shadow::new(self.cfg.clone());
        fresh.history = std::mem::take(&mut self.history);
        fresh.rejected = std::mem::take(&mut self.rejected);
        fresh.refused = self.refused;
        fresh.requests = self.requests;
        fresh.unanswered = self.unanswered;
        *self = fresh;
    }

    /// Allocations alive now.
    pub fn live_allocations(&self) -> usize {
        self.allocs.len()
    }

    /// Live allocations and reservations at `now` (tokens handed out, neither redeemed
    /// nor past their lifetime).
    fn held(&self, now: Instant) -> usize {
        let tokens = self
            .tokens
            .values()
            .filter(|t| !t.redeemed && now < t.issued + TOKEN_LIFETIME)
            .count();
        self.allocs.len() + tokens
    }

    fn remove_relay(&mut self, relay: LoopRelay) -> Option<RelayShadow> {
        let r = self.relays.remove(&relay)?;
        self.count_relay(relay.0, r.addr, false);
        Some(r)
    }

    fn count_relay(&mut self, lp: u16, addr: SocketAddr, up: bool) {
        if let Some(c) = self.relays_per_loop.get_mut(usize::from(lp)) {
            let n = &mut c[usize::from(addr.is_ipv6())];
            *n = if up { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    /// RESERVATION-TOKENs answered, and how many of them were redeemed.
    pub fn tokens(&self) -> (usize, usize) {
        let redeemed = self.tokens.values().filter(|t| t.redeemed).count();
        (self.tokens.len(), redeemed)
    }

    fn stun_input(&mut self, now: Instant, key: Key, lp: u16, data: &[u8]) {
        let Ok(msg) = Message::parse(data) else {
            self.garbage_in += 1;
            return;
        };
        match msg.class() {
            Class::Request => {
                let tid = msg.transaction_id();
                let peers = msg
                    .attributes()
                    .filter(|(t, _)| *t == attr::XOR_PEER_ADDRESS)
                    .filter_map(|(_, v)| attr::decode_xor_address(v, &tid).ok())
                    .collect();
                self.requests += 1;
                self.step_requests.push(StepRequest {
                    key,
                    lp,
                    tid: tid.0,
                    method: msg.method(),
                    peers,
                    answers: 0,
                    arrived: now,
                    kind: alloc_kind(&msg),
                    copies: 1,
                    username: msg
                        .get(attr::USERNAME)
                        .and_then(|u| core::str::from_utf8(u).ok())
                        .map(str::to_owned),
                });
            }
            Class::Indication if msg.method() == Method::SEND => {
                self.data_in += 1;
                if let Key::Stream(sid) = key {
                    if let Some(o) = self.streams.get_mut(&sid) {
                        o.step_data += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn stream_input(&mut self, now: Instant, sid: StreamId, data: &[u8]) {
        let Some(obs) = self.streams.get_mut(&sid) else {
            return;
        };
        let lp = obs.lp;
        let mut rest: Vec<u8> = data.to_vec();
        if let Some(h) = &mut obs.header {
            h.extend_from_slice(data);
            match proxy_protocol::parse(h, 512) {
                Ok(ProxyParse::Incomplete) if h.len() < 512 => return,
                Ok(ProxyParse::Done { consumed, .. }) => {
                    rest = h.split_off(consumed.min(h.len()));
                    obs.header = None;
                }
                _ => {
                    // The core closes it (BadProxyHeader): nothing more to watch.
                    obs.framer = None;
                    obs.header = None;
                    return;
                }
            }
        }
        let Some(mut framer) = obs.framer.take() else {
            return;
        };
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut channel_data = 0u64;
        let result = framer.push(&rest, |f| {
            match f {
                Frame::Stun(b) => frames.push(b.to_vec()),
                Frame::ChannelData(_) => channel_data += 1,
            }
            true
        });
        let failed = result.is_err();
        if let Some(obs) = self.streams.get_mut(&sid) {
            obs.step_data += channel_data;
            if !failed {
                obs.framer = Some(framer);
            }
        }
        self.data_in += channel_data;
        if failed {
            self.garbage_in += 1;
        }
        for f in frames {
            self.stun_input(now, Key::Stream(sid), lp, &f);
        }
    }

    fn close_stream(&mut self, sid: StreamId) {
        self.step_closed.insert(sid);
        self.waiting.retain(|(_, r)| r.key != Key::Stream(sid));
        if let Some(o) = self.streams.remove(&sid) {
            self.step_slack += o.step_data;
        }
    }

    fn response(&mut self, now: Instant, key: Key, data: &[u8]) -> Check {
        let Ok(msg) = Message::parse(data) else {
            return Err((
                "one_response_per_request",
                format!("unparsable answer to {key:?}"),
            ));
        };
        let class = msg.class();
        if class != Class::Success && class != Class::Error {
            return Ok(());
        }
        let tid = msg.transaction_id().0;
        let here = |r: &StepRequest| r.key == key && r.tid == tid;
        // An unanswered copy of this step first, then any of this step, then one that
        // waited for another loop.
        let found = self
            .step_requests
            .iter()
            .position(|r| here(r) && r.answers == 0)
            .or_else(|| self.step_requests.iter().position(here));
        let req = match found {
            Some(i) => &mut self.step_requests[i],
            None => match self.waiting.iter_mut().find(|(_, r)| here(r)) {
                Some((_, r)) => {
                    if r.answers >= r.copies {
                        return Err((
                            "one_response_per_request",
                            format!(
                                "{} from {key:?} answered {} times",
                                r.method.name(),
                                r.answers + 1
                            ),
                        ));
                    }
                    r
                }
                None => {
                    return Err((
                        "one_response_per_request",
                        format!(
                            "{} answer to {key:?} for no request of this step",
                            msg.method().name()
                        ),
                    ))
                }
            },
        };
        req.answers += 1;
        let (method, peers, arrived, kind) = (req.method, req.peers.clone(), req.arrived, req.kind);
        if let Some(username) = req.username.clone() {
            let lp = req.lp;
            let live = self
                .by_key
                .get(&key)
                .and_then(|id| self.allocs.get(id))
                .map(|a| a.username.clone());
            let code = msg
                .get(attr::ERROR_CODE)
                .and_then(|v| attr::decode_error_code(v).ok())
                .map(|(c, _)| c);
            self.answered.push(crate::rotation::Answered {
                lp,
                method,
                username,
                class,
                code,
                live,
            });
        }
        if method == Method::ALLOCATE {
            self.allocate_answer(now, &msg, arrived, kind)?;
        }
        if class != Class::Success {
            return Ok(());
        }
        let until = now + self.cfg.permission_lifetime;
        if method == Method::CREATE_PERMISSION || method == Method::CHANNEL_BIND {
            while self
                .granted
                .front()
                .is_some_and(|(at, ..)| now.since(*at) > REPLAY_WINDOW)
            {
                self.granted.pop_front();
            }
            if self.granted.iter().any(|g| g.1 == key && g.2 == tid) {
                return Ok(());
            }
            let Some(a) = self.by_key.get(&key).and_then(|id| self.allocs.get_mut(id)) else {
                return Err((
                    "no_relay_without_permission",
                    format!("permission granted to {key:?} without allocation"),
                ));
            };
            for p in peers {
                let e = a.perms.entry(p.ip()).or_insert(until);
                *e = (*e).max(until);
            }
            self.granted.push_back((now, key, tid));
        }
        Ok(())
    }

    /// The node-level checks of an Allocate's answer: tokens handed out and redeemed, and
    /// no 508 while the node could have served it.
    fn allocate_answer(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        arrived: Instant,
        kind: AllocKind,
    ) -> Check {
        if msg.class() == Class::Success {
            if let Some(t) = msg
                .get(attr::RESERVATION_TOKEN)
                .and_then(|v| attr::decode_reservation_token(v).ok())
            {
                self.tokens.entry(t).or_insert(TokenShadow {
                    issued: now,
                    redeemed: false,
                });
            }
            if let AllocKind::Token(t) = kind {
                if let Some(ts) = self.tokens.get_mut(&t) {
                    ts.redeemed = true;
                }
            }
            return Ok(());
        }
        let code = msg
            .get(attr::ERROR_CODE)
            .and_then(|v| attr::decode_error_code(v).ok())
            .map(|(c, _)| c);
        if code != Some(508) || self.draining {
            return Ok(());
        }
        let since = |t: Option<Instant>| t.is_some_and(|t| t <= arrived);
        let room = since(self.room_since);
        let binds_ok = self.last_bind_failure.is_none_or(|f| f < arrived);
        match kind {
            AllocKind::Token(t) => {
                let live = self.tokens.get(&t).is_some_and(|ts| {
                    !ts.redeemed && arrived + Duration::from_secs(1) < ts.issued + TOKEN_LIFETIME
                });
                if live && room && binds_ok {
                    return Err((
                        "reservation_redeemed_anywhere",
                        format!(
                            "508 to an Allocate with token {t:02x?}, issued {:?} before it arrived and not redeemed",
                            arrived.since(self.tokens[&t].issued)
                        ),
                    ));
                }
            }
            AllocKind::Plain if room && binds_ok => {
                let free: Vec<usize> = (0..self.free_since.len())
                    .filter(|&l| since(self.free_since[l]))
                    .collect();
                if !free.is_empty() {
                    return Err((
                        "no_508_with_free_port",
                        format!(
                            "508 to an Allocate that arrived {:?} ago while loops {free:?} had free ports all along (and the node room under total_quota {}, no failed bind)",
                            now.since(arrived),
                            self.cfg.total_quota
                        ),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn bind_request(&mut self, now: Instant, relay: LoopRelay, addr: SocketAddr) -> Check {
        if let Some(other) = self.holders.get(&addr) {
            return Err((
                "no_port_in_two_allocations",
                format!(
                    "bind of {addr} for relay {} of loop {} while relay {} of loop {} holds it",
                    relay.1 .0, relay.0, other.1 .0, other.0
                ),
            ));
        }
        if let Some(at) = self.released.get(&(addr.is_ipv6(), addr.port())) {
            if now < *at + self.cfg.quarantine {
                return Err((
                    "no_bind_in_quarantine",
                    format!(
                        "port {} bound by loop {} {:?} after release (quarantine {:?})",
                        addr.port(),
                        relay.0,
                        now.since(*at),
                        self.cfg.quarantine
                    ),
                ));
            }
        }
        if let Some(old) = self.relays.insert(relay, RelayShadow { addr, owner: None }) {
            self.count_relay(relay.0, old.addr, false);
        }
        self.count_relay(relay.0, addr, true);
        self.holders.insert(addr, relay);
        Ok(())
    }

    fn event(&mut self, now: Instant, lp: u16, e: &Event) -> Check {
        match e {
            Event::AllocationCreated {
                id,
                client,
                username,
                relayed,
                lifetime_s,
            } => {
                self.step_alloc_events = true;
                if loop_of(*id) != LoopId(lp) {
                    return Err((
                        "allocation_owned_by_one_loop",
                        format!(
                            "loop {lp} created allocation {:#x}, whose id names loop {}",
                            id.0,
                            loop_of(*id).0
                        ),
                    ));
                }
                if !self.ids.insert(*id) {
                    return Err((
                        "allocation_owned_by_one_loop",
                        format!("allocation id {:#x} created twice in the node", id.0),
                    ));
                }
                let key = match client.conn {
                    Some(c) => Key::Stream(StreamId(c.0)),
                    None => Key::Udp(client.listener, client.addr),
                };
                let mut relays = Vec::new();
                for r in relayed {
                    if let Some(other) = self.relayed.insert(*r, *id) {
                        return Err((
                            "relayed_address_unique",
                            format!(
                                "allocation {:#x} (loop {lp}) and {:#x} both relay on {r}",
                                id.0, other.0
                            ),
                        ));
                    }
                    let found = self.relays.iter_mut().find(|((l, _), s)| {
                        *l == lp
                            && s.owner.is_none()
                            && s.addr.port() == r.port()
                            && s.addr.is_ipv6() == r.is_ipv6()
                    });
                    match found {
                        Some((rid, s)) => {
                            s.owner = Some(*id);
                            relays.push(*rid);
                        }
                        None => {
                            return Err((
                                "relay_released_with_allocation",
                                format!(
                                    "allocation {} announces {r} with no bound relay socket of loop {lp}",
                                    id.0
                                ),
                            ))
                        }
                    }
                }
                if let Some(other) = self.by_key.insert(key, *id) {
                    return Err((
                        "one_allocation_per_5tuple",
                        format!("{key:?} has allocations {} and {}", other.0, id.0),
                    ));
                }
                let held = self.by_user.entry(username.clone()).or_insert(0);
                *held += 1;
                if *held > self.cfg.user_quota {
                    return Err((
                        "user_quota_for_node",
                        format!(
                            "{username} holds {held} allocations over the node's loops (user_quota {}); loop {lp} made the last",
                            self.cfg.user_quota
                        ),
                    ));
                }
                let expires = now + Duration::from_secs(u64::from(*lifetime_s));
                self.expiry.insert((expires, *id));
                self.history.push(AllocationRecord {
                    username: username.clone(),
                    client: client.addr,
                    relayed: relayed.clone(),
                    created: now,
                    deleted: None,
                });
                if let Some(n) = self.allocs_per_loop.get_mut(usize::from(lp)) {
                    *n += 1;
                }
                self.allocs.insert(
                    *id,
                    AllocShadow {
                        key,
                        lp,
                        username: username.clone(),
                        relayed: relayed.clone(),
                        relays,
                        expires,
                        perms: BTreeMap::new(),
                        record: self.history.len() - 1,
                    },
                );
                if self.allocs.len() as u64 > self.cfg.total_quota {
                    return Err((
                        "total_quota_for_node",
                        format!(
                            "{} live allocations over the node's loops (total_quota {})",
                            self.allocs.len(),
                            self.cfg.total_quota
                        ),
                    ));
                }
            }
            Event::AllocationRefreshed { id, lifetime_s } => {
                if let Some(a) = self.allocs.get_mut(id) {
                    self.expiry.remove(&(a.expires, *id));
                    a.expires = now + Duration::from_secs(u64::from(*lifetime_s));
                    self.expiry.insert((a.expires, *id));
                }
            }
            Event::AllocationDeleted { id, reason, .. } => {
                self.step_alloc_events = true;
                let Some(a) = self.allocs.remove(id) else {
                    return Err((
                        "allocation_table_matches_events",
                        format!("loop {lp} deleted unknown allocation {}", id.0),
                    ));
                };
                if let Some(n) = self.allocs_per_loop.get_mut(usize::from(a.lp)) {
                    *n = n.saturating_sub(1);
                }
                if a.lp != lp {
                    return Err((
                        "allocation_owned_by_one_loop",
                        format!("loop {lp} deleted allocation {:#x} of loop {}", id.0, a.lp),
                    ));
                }
                for r in &a.relayed {
                    self.relayed.remove(r);
                }
                if let Some(n) = self.by_user.get_mut(&a.username) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.by_user.remove(&a.username);
                    }
                }
                self.expiry.remove(&(a.expires, *id));
                self.by_key.remove(&a.key);
                self.step_deleted.extend(a.relays.iter().copied());
                if let Some(h) = self.history.get_mut(a.record) {
                    h.deleted = Some((now, *reason));
                }
            }
            Event::StreamRejected { reason, .. } => {
                *self.rejected.entry(reason.as_str()).or_insert(0) += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Data between relay `relay` and `peer` needs a live allocation owning the relay
    /// and a live permission for the peer's address; towards a client it must go to the
    /// allocation's own client.
    fn check_peer_path(
        &self,
        now: Instant,
        relay: LoopRelay,
        peer: SocketAddr,
        dest: Option<Key>,
    ) -> Check {
        let Some(owner) = self.relays.get(&relay).and_then(|r| r.owner) else {
            return Err((
                "no_relay_without_permission",
                format!(
                    "relay {} of loop {} has no live allocation ({peer})",
                    relay.1 .0, relay.0
                ),
            ));
        };
        let Some(a) = self.allocs.get(&owner) else {
            return Err((
                "no_relay_without_permission",
                format!("allocation {} is gone ({peer})", owner.0),
            ));
        };
        let live = a.perms.get(&peer.ip()).is_some_and(|until| now < *until);
        if !live {
            return Err((
                "no_relay_without_permission",
                format!(
                    "allocation {} relayed {} {peer} without a live permission",
                    owner.0,
                    if dest.is_some() { "from" } else { "to" }
                ),
            ));
        }
        if let Some(d) = dest {
            if d != a.key {
                return Err((
                    "relay_to_wrong_client",
                    format!("allocation {} of {:?} sent to {d:?}", owner.0, a.key),
                ));
            }
        }
        Ok(())
    }

    fn one_response_per_request(&mut self, step: &Step) -> Check {
        let stats = step.stats;
        let excused = (stats.rate_limited - self.prev_rate_limited.min(stats.rate_limited))
            + (stats.queue_full - self.prev_queue_full.min(stats.queue_full));
        let mut unanswered = 0u64;
        let mut deferred = Vec::new();
        for (i, r) in self.step_requests.iter().enumerate() {
            if r.answers > 1 {
                return Err((
                    "one_response_per_request",
                    format!(
                        "{} from {:?} answered {} times",
                        r.method.name(),
                        r.key,
                        r.answers
                    ),
                ));
            }
            if r.answers == 0 {
                let closed = matches!(r.key, Key::Stream(sid) if self.step_closed.contains(&sid));
                let copy_of_waiting = self
                    .waiting
                    .iter()
                    .any(|(_, w)| w.key == r.key && w.tid == r.tid);
                // Only an Allocate waits for another loop (user quota at home, a token
                // at its issuer, credits and ports borrowed), and only once
                // authenticated, so never one the per-source budget held back.
                let may_wait = r.method == Method::ALLOCATE
                    && (copy_of_waiting || self.step_sent.contains(&r.lp));
                if closed {
                } else if may_wait {
                    // Its answer waits for another loop (or it is a retransmission of one
                    // that does).
                    deferred.push(i);
                } else {
                    unanswered += 1;
                }
            }
        }
        self.unanswered += unanswered;
        if unanswered > excused {
            let r = self
                .step_requests
                .iter()
                .enumerate()
                .find(|(i, r)| r.answers == 0 && !deferred.contains(i));
            return Err((
                "every_request_answered",
                format!("{unanswered} requests unanswered, {excused} held back by the budget; first: {r:?}"),
            ));
        }
        for i in deferred.into_iter().rev() {
            let r = self.step_requests.swap_remove(i);
            match self
                .waiting
                .iter_mut()
                .find(|(_, w)| w.key == r.key && w.tid == r.tid)
            {
                Some((_, w)) => w.copies += 1,
                None => self.waiting.push((step.now + CROSS_LOOP_ANSWER, r)),
            }
        }
        Ok(())
    }

    fn loop_message_answered(&mut self, step: &Step) -> Check {
        if let Some((_, r)) = self
            .waiting
            .iter()
            .find(|(deadline, r)| r.answers == 0 && step.now > *deadline)
        {
            return Err((
                "loop_message_answered",
                format!(
                    "{} from {:?} (loop {}) unanswered {:?} after it arrived",
                    r.method.name(),
                    r.key,
                    r.lp,
                    step.now.since(r.arrived)
                ),
            ));
        }
        // Answered ones are kept until their deadline, to catch a second answer.
        self.waiting
            .retain(|(deadline, r)| r.answers == 0 || step.now <= *deadline);
        Ok(())
    }

    fn relay_released_with_allocation(&mut self, _step: &Step) -> Check {
        for r in &self.step_deleted {
            if let Some(s) = self.relays.get(r) {
                return Err((
                    "relay_released_with_allocation",
                    format!(
                        "relay {} of loop {} ({}) still open after its allocation ended",
                        r.1 .0, r.0, s.addr
                    ),
                ));
            }
        }
        Ok(())
    }

    fn tables_match(&mut self, step: &Step) -> Check {
        let host = step.host;
        for (l, stats) in step.loops.iter().enumerate() {
            let lp = l as u16;
            let [v4, v6] = self.relays_per_loop.get(l).copied().unwrap_or_default();
            if stats.ports_v4.in_use != v4 || stats.ports_v6.in_use != v6 {
                return Err((
                    "port_pool_matches_sockets",
                    format!(
                        "loop {lp}: pool says {}+{} ports in use, {v4}+{v6} relay sockets are open",
                        stats.ports_v4.in_use, stats.ports_v6.in_use
                    ),
                ));
            }
            let allocs = self.allocs_per_loop.get(l).copied().unwrap_or_default();
            if stats.allocations != allocs {
                return Err((
                    "allocation_table_matches_events",
                    format!(
                        "loop {lp}: core holds {} allocations, events say {allocs}",
                        stats.allocations
                    ),
                ));
            }
            let conns = host.open_conns_of(lp) as u64;
            if stats.streams != conns {
                return Err((
                    "stream_table_matches_driver",
                    format!(
                        "loop {lp}: core holds {} streams, the driver {conns}",
                        stats.streams
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every loop lists exactly the live allocations it created (checked at most once a
    /// second of virtual time, after steps that created or deleted one).
    fn allocation_owned_by_one_loop(&mut self, step: &Step) -> Check {
        if !self.step_alloc_events || step.now < self.next_listing {
            return Ok(());
        }
        self.next_listing = step.now + LISTING_EVERY;
        let mut listed: BTreeMap<AllocationId, u16> = BTreeMap::new();
        for (l, core) in step.host.cores.iter().enumerate() {
            for a in core.allocations(step.now) {
                if let Some(other) = listed.insert(a.id, l as u16) {
                    return Err((
                        "allocation_owned_by_one_loop",
                        format!("allocation {:#x} listed by loops {other} and {l}", a.id.0),
                    ));
                }
            }
        }
        let shadow: BTreeMap<AllocationId, u16> =
            self.allocs.iter().map(|(id, a)| (*id, a.lp)).collect();
        if listed != shadow {
            let diff: Vec<_> = listed
                .iter()
                .filter(|(id, l)| shadow.get(id) != Some(l))
                .chain(shadow.iter().filter(|(id, l)| listed.get(id) != Some(l)))
                .take(4)
                .collect();
            return Err((
                "allocation_owned_by_one_loop",
                format!("the loops' listings and the events differ: {diff:x?}"),
            ));
        }
        Ok(())
    }

    fn allocation_expires_on_time(&mut self, step: &Step) -> Check {
        let now = step.now;
        if let Some(&(at, id)) = self.expiry.first() {
            if now > at + Duration::from_millis(1) {
                return Err((
                    "allocation_expires_on_time",
                    format!(
                        "allocation {} alive {:?} past its expiry",
                        id.0,
                        now.since(at)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn counters_balance(&mut self, step: &Step) -> Check {
        let s = step.stats;
        let (to_peer, to_client) = (s.to_peer, s.to_client);
        if to_peer != self.fwd_peer || to_client != self.fwd_client {
            return Err((
                "relayed_counters_match",
                format!(
                    "core counts {to_peer}/{to_client} relayed, the driver forwarded {}/{}",
                    self.fwd_peer, self.fwd_client
                ),
            ));
        }
        let drops = s.drops;
        let out = to_peer + to_client + drops;
        let input = self.data_in + self.garbage_in;
        if out > input || input > out + self.step_slack {
            let d: Vec<_> = step.loops.iter().map(|l| l.dropped).collect();
            return Err((
                "counters_balance",
                format!("received {} data + {} garbage, relayed {to_peer}+{to_client}, dropped {drops} ({d:?}), slack {}", self.data_in, self.garbage_in, self.step_slack),
            ));
        }
        // What the slack covered was discarded uncounted: it is consumed input.
        if input > out {
            self.data_in -= (input - out).min(self.data_in);
        }
        Ok(())
    }

    fn memory_bounded(&mut self, step: &Step) -> Check {
        for (l, s) in step.loops.iter().enumerate() {
            if s.streams > self.cfg.max_streams {
                return Err(("memory_bounded", format!("loop {l}: {} streams", s.streams)));
            }
        }
        if step.stats.allocations > self.cfg.total_quota {
            return Err((
                "memory_bounded",
                format!(
                    "{} allocations over the node's loops",
                    step.stats.allocations
                ),
            ));
        }
        Ok(())
    }

    fn end_step(&mut self, step: &Step) {
        let s = step.stats;
        self.prev_rate_limited = s.rate_limited;
        self.prev_queue_full = s.queue_full;
        if s.allocations + s.pending < self.cfg.total_quota {
            self.room_since.get_or_insert(step.now);
        } else {
            self.room_since = None;
        }
        self.step_requests.clear();
        self.step_sent.clear();
        self.step_closed.clear();
        self.step_deleted.clear();
        self.step_slack = 0;
        self.step_alloc_events = false;
        for o in self.streams.values_mut() {
            o.step_data = 0;
        }
    }
}

/// What an Allocate request asks for (not an Allocate: [`AllocKind::None`]).
fn alloc_kind(msg: &Message<'_>) -> AllocKind {
    if msg.method() != Method::ALLOCATE {
        return AllocKind::None;
    }
    if let Some(t) = msg
        .get(attr::RESERVATION_TOKEN)
        .and_then(|v| attr::decode_reservation_token(v).ok())
    {
        return AllocKind::Token(t);
    }
    let special = [
        attr::EVEN_PORT,
        attr::REQUESTED_ADDRESS_FAMILY,
        attr::ADDITIONAL_ADDRESS_FAMILY,
    ];
    if special.iter().any(|t| msg.get(*t).is_some()) {
        AllocKind::Other
    } else {
        AllocKind::Plain
    }
}

/// An independent statement of who may never be a peer (RFC 8656 §21, the special
/// ranges), unless `allow` says so. Deliberately written apart from the core's policy.
pub fn denied(peer: SocketAddr, allow: &[IpNet]) -> bool {
    if peer.port() == 0 {
        return true;
    }
    let ip = match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if allow.iter().any(|n| n.contains(ip)) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xfe00) == 0xfc00
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_addresses() {
        for a in [
            "127.0.0.1:1",
            "10.0.0.1:1",
            "[::ffff:127.0.0.1]:1",
            "[::1]:1",
            "0.0.0.0:1",
            "11.0.0.1:0",
            "[fe80::1]:1",
            "100.64.0.1:1",
        ] {
            assert!(denied(a.parse().unwrap(), &[]), "{a}");
        }
        assert!(!denied("11.0.0.1:5000".parse().unwrap(), &[]));
        let allow: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(!denied("10.0.0.1:1".parse().unwrap(), &allow));
    }

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
}
