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
    /// Allocation cap.
    pub total_quota: u64,
    /// Peers allowed although special.
    pub allow: Vec<IpNet>,
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
    tid: [u8; 12],
    method: Method,
    peers: Vec<SocketAddr>,
    answers: u32,
}

#[derive(Debug)]
struct RelayShadow {
    addr: SocketAddr,
    owner: Option<AllocationId>,
}

#[derive(Debug)]
struct AllocShadow {
    key: Key,
    relays: Vec<RelayId>,
    expires: Instant,
    perms: BTreeMap<IpAddr, Instant>,
    record: usize,
}

#[derive(Debug)]
struct StreamObs {
    header: Option<Vec<u8>>,
    framer: Option<StreamFramer>,
    step_data: u64,
}

/// The shadow of one server.
#[derive(Debug)]
pub struct Shadow {
    cfg: ShadowConfig,
    step_requests: Vec<StepRequest>,
    step_closed: BTreeSet<StreamId>,
    step_deleted: Vec<RelayId>,
    step_slack: u64,
    relays: BTreeMap<RelayId, RelayShadow>,
    holders: BTreeMap<SocketAddr, RelayId>,
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
}

/// All the oracles of a run.
#[derive(Debug)]
pub struct Oracle {
    /// Per server.
    pub servers: Vec<Shadow>,
    /// Browser sessions.
    pub sessions: Vec<SessionRecord>,
    violation: Option<Violation>,
    now: Instant,
}

impl Oracle {
    /// Oracles for servers with these limits.
    pub fn new(configs: Vec<ShadowConfig>) -> Self {
        Oracle {
            servers: configs.into_iter().map(Shadow::new).collect(),
            sessions: Vec::new(),
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

    // ---- inputs the driver feeds --------------------------------------------------------

    /// A datagram fed to a UDP listener.
    pub fn udp_input(&mut self, s: usize, listener: ListenerId, from: SocketAddr, data: &[u8]) {
        let key = Key::Udp(listener, from);
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        match data.first().map(|b| b >> 6) {
            None => {}
            Some(0) => sh.stun_input(key, data),
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

    /// A stream accepted on a listener (`proxy`: it must start with a PROXY header).
    pub fn stream_open(&mut self, s: usize, sid: StreamId, proxy: bool) {
        if let Some(sh) = self.servers.get_mut(s) {
            sh.streams.insert(
                sid,
                StreamObs {
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
        if let Some(sh) = self.servers.get_mut(s) {
            sh.stream_input(sid, data);
        }
    }

    /// The driver reported a stream closed.
    pub fn stream_closed(&mut self, s: usize, sid: StreamId) {
        if let Some(sh) = self.servers.get_mut(s) {
            sh.close_stream(sid);
        }
    }

    /// The driver's answer to a BindRelay.
    pub fn bind_result(
        &mut self,
        s: usize,
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
            sh.relays.remove(&relay);
            sh.holders.remove(&addr);
            sh.released.insert((addr.is_ipv6(), addr.port()), now);
        }
    }

    // ---- outputs the core produced ------------------------------------------------------

    /// A fast-path forward towards a client (ToPeer is seen through [`Oracle::to_peer`]).
    pub fn forward(
        &mut self,
        s: usize,
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
        let result = sh.check_peer_path(now, relay, from, Some(dest));
        if let Err((inv, d)) = result {
            self.fail(inv, d);
        }
    }

    /// Relayed data leaves relay socket `relay` for `peer`.
    pub fn to_peer(&mut self, s: usize, now: Instant, relay: RelayId, peer: SocketAddr) {
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        sh.fwd_peer += 1;
        if let Err((inv, d)) = sh.check_peer_path(now, relay, peer, None) {
            return self.fail(inv, d);
        }
        if denied(peer, &sh.cfg.allow) {
            self.fail(
                "no_relay_to_denied_address",
                format!("relay {} sent to {peer}", relay.0),
            );
        }
    }

    /// One output drained from the core.
    pub fn output(&mut self, s: usize, now: Instant, out: &Output) {
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
            Output::BindRelay { relay, addr } => sh.bind_request(now, *relay, *addr),
            Output::CloseRelay { relay } => {
                if let Some(r) = sh.relays.remove(relay) {
                    sh.holders.remove(&r.addr);
                    sh.released.insert((r.addr.is_ipv6(), r.addr.port()), now);
                }
                Ok(())
            }
            Output::Event(_) | Output::ToLoop { .. } => Ok(()),
        };
        if let Err((inv, d)) = r {
            self.fail(inv, d);
        }
    }

    /// An event from the core.
    pub fn event(&mut self, s: usize, now: Instant, e: &Event) {
        let Some(sh) = self.servers.get_mut(s) else {
            return;
        };
        if let Err((inv, d)) = sh.event(now, e) {
            self.fail(inv, d);
        }
    }

    // ---- the checks after every step ----------------------------------------------------

    /// Runs every per-step invariant against each server.
    pub fn after_step(&mut self, now: Instant, hosts: &[&ServerHost]) {
        self.now = now;
        for (i, host) in hosts.iter().enumerate() {
            let Some(sh) = self.servers.get_mut(i) else {
                continue;
            };
            let stats = host.server.stats(now);
            let step = Step {
                now,
                host,
                stats: &stats,
            };
            let checks: [StepCheck; 6] = [
                Shadow::one_response_per_request,
                Shadow::relay_released_with_allocation,
                Shadow::tables_match,
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
            sh.end_step(&stats);
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
    stats: &'a Stats,
}

type StepCheck = fn(&mut Shadow, &Step) -> Check;

impl Shadow {
    fn new(cfg: ShadowConfig) -> Self {
        Shadow {
            cfg,
            step_requests: Vec::new(),
            step_closed: BTreeSet::new(),
            step_deleted: Vec::new(),
            step_slack: 0,
            relays: BTreeMap::new(),
            holders: BTreeMap::new(),
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
            history: Vec::new(),
            rejected: BTreeMap::new(),
            refused: 0,
            requests: 0,
            unanswered: 0,
        }
    }

    /// Allocations alive now.
    pub fn live_allocations(&self) -> usize {
        self.allocs.len()
    }

    fn stun_input(&mut self, key: Key, data: &[u8]) {
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
                    tid: tid.0,
                    method: msg.method(),
                    peers,
                    answers: 0,
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

    fn stream_input(&mut self, sid: StreamId, data: &[u8]) {
        let Some(obs) = self.streams.get_mut(&sid) else {
            return;
        };
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
            self.stun_input(Key::Stream(sid), &f);
        }
    }

    fn close_stream(&mut self, sid: StreamId) {
        self.step_closed.insert(sid);
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
        let Some(req) = self
            .step_requests
            .iter_mut()
            .find(|r| r.key == key && r.tid == tid)
        else {
            return Err((
                "one_response_per_request",
                format!(
                    "{} answer to {key:?} for no request of this step",
                    msg.method().name()
                ),
            ));
        };
        req.answers += 1;
        if class != Class::Success {
            return Ok(());
        }
        let until = now + self.cfg.permission_lifetime;
        let (method, peers) = (req.method, req.peers.clone());
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

    fn bind_request(&mut self, now: Instant, relay: RelayId, addr: SocketAddr) -> Check {
        if let Some(other) = self.holders.get(&addr) {
            return Err((
                "no_port_in_two_allocations",
                format!(
                    "bind of {addr} for relay {} while relay {} holds it",
                    relay.0, other.0
                ),
            ));
        }
        if let Some(at) = self.released.get(&(addr.is_ipv6(), addr.port())) {
            if now < *at + self.cfg.quarantine {
                return Err((
                    "no_bind_in_quarantine",
                    format!(
                        "port {} bound {:?} after release (quarantine {:?})",
                        addr.port(),
                        now.since(*at),
                        self.cfg.quarantine
                    ),
                ));
            }
        }
        self.relays.insert(relay, RelayShadow { addr, owner: None });
        self.holders.insert(addr, relay);
        Ok(())
    }

    fn event(&mut self, now: Instant, e: &Event) -> Check {
        match e {
            Event::AllocationCreated {
                id,
                client,
                username,
                relayed,
                lifetime_s,
            } => {
                let key = match client.conn {
                    Some(c) => Key::Stream(StreamId(c.0)),
                    None => Key::Udp(client.listener, client.addr),
                };
                let mut relays = Vec::new();
                for r in relayed {
                    let found = self.relays.iter_mut().find(|(_, s)| {
                        s.owner.is_none()
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
                                    "allocation {} announces {r} with no bound relay socket",
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
                let expires = now + Duration::from_secs(u64::from(*lifetime_s));
                self.expiry.insert((expires, *id));
                self.history.push(AllocationRecord {
                    username: username.clone(),
                    client: client.addr,
                    relayed: relayed.clone(),
                    created: now,
                    deleted: None,
                });
                self.allocs.insert(
                    *id,
                    AllocShadow {
                        key,
                        relays,
                        expires,
                        perms: BTreeMap::new(),
                        record: self.history.len() - 1,
                    },
                );
            }
            Event::AllocationRefreshed { id, lifetime_s } => {
                if let Some(a) = self.allocs.get_mut(id) {
                    self.expiry.remove(&(a.expires, *id));
                    a.expires = now + Duration::from_secs(u64::from(*lifetime_s));
                    self.expiry.insert((a.expires, *id));
                }
            }
            Event::AllocationDeleted { id, reason, .. } => {
                let Some(a) = self.allocs.remove(id) else {
                    return Err((
                        "allocation_table_matches_events",
                        format!("deleted unknown allocation {}", id.0),
                    ));
                };
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
        relay: RelayId,
        peer: SocketAddr,
        dest: Option<Key>,
    ) -> Check {
        let Some(owner) = self.relays.get(&relay).and_then(|r| r.owner) else {
            return Err((
                "no_relay_without_permission",
                format!("relay {} has no live allocation ({peer})", relay.0),
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
        let excused = (stats.dropped.rate_limited
            - self.prev_rate_limited.min(stats.dropped.rate_limited))
            + (stats.dropped.queue_full - self.prev_queue_full.min(stats.dropped.queue_full));
        let mut unanswered = 0u64;
        for r in &self.step_requests {
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
                if !closed {
                    unanswered += 1;
                }
            }
        }
        self.unanswered += unanswered;
        if unanswered > excused {
            let r = self.step_requests.iter().find(|r| r.answers == 0);
            return Err((
                "every_request_answered",
                format!("{unanswered} requests unanswered, {excused} held back by the budget; first: {r:?}"),
            ));
        }
        Ok(())
    }

    fn relay_released_with_allocation(&mut self, _step: &Step) -> Check {
        for r in &self.step_deleted {
            if let Some(s) = self.relays.get(r) {
                return Err((
                    "relay_released_with_allocation",
                    format!(
                        "relay {} ({}) still open after its allocation ended",
                        r.0, s.addr
                    ),
                ));
            }
        }
        Ok(())
    }

    fn tables_match(&mut self, step: &Step) -> Check {
        let (host, stats) = (step.host, step.stats);
        let v4 = self.relays.values().filter(|r| r.addr.is_ipv4()).count() as u32;
        let v6 = self.relays.values().filter(|r| r.addr.is_ipv6()).count() as u32;
        if stats.ports_v4.in_use != v4 || stats.ports_v6.in_use != v6 {
            return Err((
                "port_pool_matches_sockets",
                format!(
                    "pool says {}+{} ports in use, {v4}+{v6} relay sockets are open",
                    stats.ports_v4.in_use, stats.ports_v6.in_use
                ),
            ));
        }
        if stats.allocations != self.allocs.len() as u64 {
            return Err((
                "allocation_table_matches_events",
                format!(
                    "core holds {} allocations, events say {}",
                    stats.allocations,
                    self.allocs.len()
                ),
            ));
        }
        if stats.streams != host.open_conns() as u64 {
            return Err((
                "stream_table_matches_driver",
                format!(
                    "core holds {} streams, the driver {}",
                    stats.streams,
                    host.open_conns()
                ),
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
        let stats = step.stats;
        let s = stats;
        let to_peer = s.udp.to_peer_packets + s.tcp.to_peer_packets;
        let to_client = s.udp.from_peer_packets + s.tcp.from_peer_packets;
        if to_peer != self.fwd_peer || to_client != self.fwd_client {
            return Err((
                "relayed_counters_match",
                format!(
                    "core counts {to_peer}/{to_client} relayed, the driver forwarded {}/{}",
                    self.fwd_peer, self.fwd_client
                ),
            ));
        }
        let d = s.dropped;
        let drops = d.no_allocation
            + d.no_permission
            + d.unbound_channel
            + d.too_large
            + d.denied_peer
            + d.unknown_relay
            + d.malformed;
        let out = to_peer + to_client + drops;
        let input = self.data_in + self.garbage_in;
        if out > input || input > out + self.step_slack {
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
        let stats = step.stats;
        let s = stats;
        if s.streams > self.cfg.max_streams || s.allocations > self.cfg.total_quota {
            return Err((
                "memory_bounded",
                format!("{} streams, {} allocations", s.streams, s.allocations),
            ));
        }
        Ok(())
    }

    fn end_step(&mut self, s: &Stats) {
        self.prev_rate_limited = s.dropped.rate_limited;
        self.prev_queue_full = s.dropped.queue_full;
        self.step_requests.clear();
        self.step_closed.clear();
        self.step_deleted.clear();
        self.step_slack = 0;
        for o in self.streams.values_mut() {
            o.step_data = 0;
        }
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
}
