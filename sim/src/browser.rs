//! Browser-like clients, built on the core's sans-IO TURN client.
//!
//! A browser gets an ICE configuration (urls and one REST username/credential), tries
//! TURN-UDP, TURN-TCP and TURN-TLS at once with the same credential, keeps the first
//! allocation that succeeds and releases the others (Refresh 0, or closing the stream),
//! then installs a permission, binds a channel and exchanges data with its peer. The
//! client refreshes by itself, as browsers do. A session ends with a release, or with the
//! browser vanishing (no Refresh 0); then, after a pause, a new session begins.

use crate::faults::Control;
use crate::host::{Cx, Phase};
use crate::link::{between, chance};
use crate::net::{Side, StreamId};
use crate::scenario::{ClientGroup, Via};
use crate::tls::{record, TLS_CLIENT, TLS_DONE, TLS_MORE, TLS_PAD, TLS_RECORD};
use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use turnpike_core::auth::rest_password;
use turnpike_core::client::{Client, ClientConfig, ClientEvent};
use turnpike_core::stun::{attr, Method};
use turnpike_core::{Instant, Transport};

/// Longest wait for Refresh 0 answers before the streams are closed anyway.
const RELEASE_WAIT: Duration = Duration::from_secs(45);
/// First byte of a packet a browser of a pair sends back to its partner.
const ECHO: u8 = b'e';
/// Round trip of an ICE configuration fetch from the HTTP API.
const API_DELAY: Duration = Duration::from_millis(30);
/// A server that failed a browser (no answer, or its relay lost) is avoided this long.
const AVOID_FOR: Duration = Duration::from_secs(60);
/// Between two rounds of an ICE restart that found no relay.
const ROUND_PAUSE: Duration = Duration::from_secs(1);
/// Addresses a probing browser tries to reach: all must be refused by the relay.
pub const DENIED_PROBES: [&str; 6] = [
    "127.0.0.1:9",
    "10.1.2.3:5000",
    "[::ffff:127.0.0.1]:80",
    "169.254.169.254:80",
    "0.0.0.0:1",
    "[::1]:22",
];

/// What browsers learn of each other out of band, as a web application's signalling
/// would tell them: the relayed address each one currently keeps.
#[derive(Debug, Default)]
pub struct Board {
    relayed: BTreeMap<usize, SocketAddr>,
    /// ICE configurations asked of the HTTP API: browser, expiry (unix seconds), label.
    pub requests: Vec<(usize, u64, String)>,
    /// The API's answers, by browser.
    pub answers: BTreeMap<usize, crate::server::Issued>,
    /// The last credential issued to a well-behaved browser (what a thief could copy).
    pub last_issued: Option<(String, String)>,
}

impl Board {
    /// The relayed address browser `id` keeps now, if any.
    pub fn relayed(&self, id: usize) -> Option<SocketAddr> {
        self.relayed.get(&id).copied()
    }
}

/// One ICE server the browser may use.
#[derive(Clone, Debug)]
pub struct IceServer {
    /// Transport.
    pub via: Via,
    /// Where to send (the relay, or a proxy in front).
    pub addr: SocketAddr,
    /// Every address its name resolves to, in this browser's resolver's order (`addr`
    /// first); one for a plain name, the fleet for a DNS name of several servers.
    pub alts: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AState {
    /// Waiting for the TCP handshake.
    Connecting,
    /// Modelled TLS handshake; bytes gathered so far.
    Tls,
    /// TURN runs.
    Turn,
    /// A Refresh 0 is on its way.
    Releasing,
    /// Done with it (failed, released, or closed).
    Closed,
}

#[derive(Debug)]
struct Attempt {
    via: Via,
    server: SocketAddr,
    local: SocketAddr,
    client: Client,
    sid: Option<StreamId>,
    state: AState,
    tls_buf: Vec<u8>,
    allocated: bool,
    failed: bool,
    /// Lost the race (or the session ended): release as soon as allocated.
    loser: bool,
    deadline: Instant,
    /// Some answer came from a server.
    answered: bool,
    /// Redirected: its Allocate is already queued in the client, for the new server.
    redirected: bool,
    /// Servers it sent Allocates to, in order, as seen on the wire (the oracle's).
    allocates_to: Vec<SocketAddr>,
}

#[derive(Debug)]
struct Session {
    record: usize,
    attempts: Vec<Attempt>,
    winner: Option<usize>,
    end_at: Instant,
    vanish: bool,
    ending: Option<Instant>,
    next_data: Option<Instant>,
    seq: u64,
    /// Who it talks to: the group's peer, or the partner's relayed address once known.
    peer: Option<SocketAddr>,
    /// The relay confirmed the permission for `peer`: data may flow.
    permitted: bool,
    /// Refreshes due at the edge of the credential's validity (`probe_expiry`).
    probes: Vec<Instant>,
    /// The credential, for an ICE restart.
    username: String,
    password: String,
    udp_port: Option<u16>,
    /// The last data received through the kept allocation (ICE consent).
    last_rx: Instant,
    /// The relay was lost at this instant; an ICE restart is under way.
    reconnecting: Option<Instant>,
    /// A round of the ICE restart failed: the next one starts then.
    next_round: Option<Instant>,
}

/// A browser.
#[derive(Debug)]
pub struct Browser {
    /// Index among browsers.
    pub id: usize,
    /// Its group.
    pub group: usize,
    spec: ClientGroup,
    ip: IpAddr,
    ice: Vec<IceServer>,
    peer: Option<SocketAddr>,
    /// The browser it talks to through the relay, for a browser pair.
    partner: Option<usize>,
    /// Whose REST secret and wall clock issue the credentials.
    issuer: usize,
    next_port: u16,
    next_start: Option<Instant>,
    /// An ICE configuration fetch is under way; its answer is there at this instant.
    fetching: Option<Instant>,
    session: Option<Session>,
    sessions: u32,
    done: bool,
    /// Servers that failed it lately, avoided until the instant given.
    avoid: BTreeMap<SocketAddr, Instant>,
}

impl Browser {
    /// A browser at `ip` that starts its first session at `start`.
    pub fn new(
        id: usize,
        group: usize,
        spec: ClientGroup,
        ip: IpAddr,
        ice: Vec<IceServer>,
        peer: Option<SocketAddr>,
        start: Instant,
    ) -> Self {
        Browser {
            id,
            group,
            spec,
            ip,
            ice,
            peer,
            partner: None,
            issuer: 0,
            next_port: 40_000,
            next_start: Some(start),
            fetching: None,
            session: None,
            sessions: 0,
            done: false,
            avoid: BTreeMap::new(),
        }
    }

    /// Makes it one half of a browser pair with browser `partner`.
    pub fn pair_with(&mut self, partner: usize) {
        self.partner = Some(partner);
    }

    /// Its address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// A datagram: the answer of the server to a UDP attempt.
    pub fn on_datagram(&mut self, cx: &mut Cx, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let Some(k) =
            self.attempt_where(|a| a.via == Via::Udp && a.local == to && a.server == from)
        else {
            return;
        };
        if let Some(a) = self.attempt_mut(k) {
            if a.state != AState::Closed {
                a.answered = true;
                a.client.handle_input(cx.now, data);
            }
        }
        self.after(cx);
    }

    /// A stream of an attempt is up.
    pub fn on_established(&mut self, cx: &mut Cx, sid: StreamId) {
        let Some(k) = self.attempt_where(|a| a.sid == Some(sid)) else {
            cx.net.close(cx.now, sid, Side::Connector);
            return;
        };
        let now = cx.now;
        let spec_hello = Hello::of(&self.spec.tls_hello);
        if let Some(a) = self.attempt_mut(k) {
            match (a.state, a.via) {
                (AState::Connecting, Via::Tls) => {
                    a.state = AState::Tls;
                    match spec_hello {
                        // Connects, then says nothing: the handshake's time bound.
                        Hello::Stall => {}
                        Hello::Records(pads) => {
                            let mut hello = Vec::with_capacity((pads + 1) * TLS_RECORD);
                            for _ in 0..pads {
                                hello.extend(record(TLS_PAD));
                            }
                            hello.extend(record(TLS_CLIENT));
                            cx.net.write(now, sid, Side::Connector, hello);
                        }
                    }
                }
                (AState::Connecting, _) => {
                    a.state = AState::Turn;
                    if !a.redirected {
                        a.client.allocate(now);
                    }
                }
                _ => {}
            }
        }
        self.after(cx);
    }

    /// Bytes from the server (or the proxy in front).
    pub fn on_stream_data(&mut self, cx: &mut Cx, sid: StreamId, data: &[u8]) {
        let Some(k) = self.attempt_where(|a| a.sid == Some(sid)) else {
            return;
        };
        let now = cx.now;
        if let Some(a) = self.attempt_mut(k) {
            match a.state {
                AState::Tls => {
                    a.tls_buf.extend_from_slice(data);
                    // Bounded: a peer that never completes a record is cut off by the
                    // connect deadline.
                    while a.tls_buf.len() >= TLS_RECORD && a.state == AState::Tls {
                        let rec: Vec<u8> = a.tls_buf.drain(..TLS_RECORD).collect();
                        match rec.get(3).copied() {
                            Some(TLS_MORE) => {
                                cx.net.write(now, sid, Side::Connector, record(TLS_CLIENT))
                            }
                            Some(TLS_DONE) => {
                                a.state = AState::Turn;
                                let rest = std::mem::take(&mut a.tls_buf);
                                if !a.redirected {
                                    a.client.allocate(now);
                                }
                                if !rest.is_empty() {
                                    a.client.handle_input(now, &rest);
                                }
                            }
                            _ => a.failed = true,
                        }
                    }
                }
                AState::Turn | AState::Releasing => {
                    a.answered = true;
                    a.client.handle_input(now, data)
                }
                AState::Connecting | AState::Closed => {}
            }
        }
        self.after(cx);
    }

    /// A stream of an attempt closed (refused, reset, or closed by the relay).
    pub fn on_stream_closed(&mut self, cx: &mut Cx, sid: StreamId) {
        let Some(k) = self.attempt_where(|a| a.sid == Some(sid)) else {
            return;
        };
        let winner = self.session.as_ref().and_then(|s| s.winner);
        if let Some(a) = self.attempt_mut(k) {
            a.sid = None;
            if a.state != AState::Closed {
                a.state = AState::Closed;
                if !a.allocated {
                    a.failed = true;
                }
            }
        }
        if winner == Some(k) {
            self.relay_lost(cx);
        }
        self.after(cx);
    }

    /// Timers: session start and end, client timers, data, deadlines.
    pub fn on_wake(&mut self, cx: &mut Cx) {
        let now = cx.now;
        if self.next_start.is_some_and(|t| t <= now) && self.session.is_none() {
            self.next_start = None;
            if self.spec.issued_dynamic_udp {
                let wall = cx.shared.walls[self.issuer].unix_s(now);
                let expiry =
                    (wall + self.spec.credential_ttl_s).saturating_sub(self.spec.config_age_s);
                cx.board
                    .requests
                    .push((self.id, expiry, format!("b{}", self.id)));
                self.fetching = Some(now + API_DELAY);
            } else {
                self.start_session(cx, None);
            }
        }
        if self.fetching.is_some_and(|t| t <= now) {
            self.fetching = None;
            if let Some(issued) = cx.board.answers.remove(&self.id) {
                self.start_session(cx, Some(issued));
            }
        }
        if let Some(s) = &mut self.session {
            for a in &mut s.attempts {
                if a.state != AState::Closed && a.client.poll_timeout().is_some_and(|t| t <= now) {
                    a.client.handle_timeout(now);
                }
            }
        }
        self.after(cx);
    }

    /// Phase changes: in the drain phase, sessions end and no new one starts.
    pub fn on_control(&mut self, cx: &mut Cx, c: &Control) {
        if let Control::Phase(Phase::Drain) = c {
            self.next_start = None;
            if let Some(s) = &mut self.session {
                s.end_at = s.end_at.min(cx.now);
            }
            self.done = true;
            self.after(cx);
        }
    }

    /// The next instant something is due.
    pub fn next_wake(&self) -> Option<Instant> {
        let mut next = self.next_start.or(self.fetching);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        if let Some(s) = &self.session {
            if s.ending.is_none() {
                consider(Some(s.end_at));
            }
            consider(s.ending);
            consider(s.next_data);
            consider(s.probes.iter().min().copied());
            consider(s.next_round);
            if let (Some(n), Some(_), true) =
                (self.spec.ice_restart_s, s.winner, s.ending.is_none())
            {
                consider(Some(s.last_rx + Duration::from_secs(n)));
            }
            for a in &s.attempts {
                if a.state == AState::Closed {
                    continue;
                }
                consider(a.client.poll_timeout());
                if !a.allocated {
                    consider(Some(a.deadline));
                }
            }
        }
        next
    }

    // ---- helpers ---------------------------------------------------------------------

    fn start_session(&mut self, cx: &mut Cx, issued: Option<crate::server::Issued>) {
        let now = cx.now;
        self.sessions += 1;
        let wall = cx.shared.walls[self.issuer];
        let expiry = wall.unix_s(now) + self.spec.credential_ttl_s;
        let (mut username, mut password, udp_port) = match issued {
            Some(i) => (i.username, i.password, i.udp_port),
            None => {
                let u = format!("{expiry}:b{}s{}", self.id, self.sessions);
                let (secret, generation) = if self.spec.stale_secret {
                    (&cx.shared.first_secrets[self.issuer], 0)
                } else {
                    (
                        &cx.shared.secrets[self.issuer],
                        cx.shared.generations[self.issuer],
                    )
                };
                let p = rest_password(secret.as_bytes(), &u);
                cx.oracle.rotation.issued(&u, generation);
                (u, p, None)
            }
        };
        if self.spec.borrow_credential {
            // Someone else's credential, on the port reserved for our own.
            if let Some((u, p)) = cx.board.last_issued.clone() {
                username = u;
                password = p;
            }
        } else if self.spec.issued_dynamic_udp && self.spec.config_age_s == 0 {
            cx.board.last_issued = Some((username.clone(), password.clone()));
        }
        let real = SocketAddr::new(self.ip, 0);
        let record = cx.oracle.session_start(
            self.id,
            self.group,
            &username,
            real,
            now,
            self.peer.is_some(),
        );
        let session_s = between(cx.rng, self.spec.session_s[0], self.spec.session_s[1]);
        let vanish = chance(cx.rng, self.spec.vanish) && cx.shared.phase == Phase::Safety;
        let attempts = self.open_attempts(cx, &username, &password, udp_port);
        cx.note(format!(
            "browser {} starts session {} ({username})",
            self.id, self.sessions
        ));
        self.session = Some(Session {
            record,
            attempts,
            winner: None,
            end_at: now + Duration::from_secs(session_s),
            vanish,
            ending: None,
            next_data: None,
            seq: 0,
            peer: self.peer,
            permitted: false,
            probes: Vec::new(),
            username,
            password,
            udp_port,
            last_rx: now,
            reconnecting: None,
            next_round: None,
        });
    }

    /// One attempt per ICE server, each to the first of its addresses not avoided.
    fn open_attempts(
        &mut self,
        cx: &mut Cx,
        username: &str,
        password: &str,
        udp_port: Option<u16>,
    ) -> Vec<Attempt> {
        let now = cx.now;
        let deadline = now + Duration::from_secs(self.spec.connect_timeout_s);
        self.avoid.retain(|_, until| *until > now);
        let mut attempts = Vec::new();
        let fresh = |i: &IceServer| i.alts.iter().any(|a| !self.avoid.contains_key(a));
        // With nothing left to try, every server gets another chance.
        let skip_avoided = self.ice.iter().any(fresh);
        for ice in self.ice.clone() {
            let mut addr = ice
                .alts
                .iter()
                .copied()
                .find(|a| !self.avoid.contains_key(a))
                .unwrap_or(ice.addr);
            if skip_avoided && self.avoid.contains_key(&addr) {
                continue; // the others of the list will do
            }
            if let (Via::Udp, Some(port)) = (ice.via, udp_port) {
                addr.set_port(port);
            }
            let local = SocketAddr::new(self.ip, self.port());
            let transport = if ice.via == Via::Udp {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            let mut cc = ClientConfig::new(addr, transport, username, password);
            if self.spec.relay_ipv6 {
                cc.requested_family = Some(attr::FAMILY_IPV6);
            }
            let mut client = Client::new(cc, cx.seed(), now);
            let (sid, state) = match ice.via {
                Via::Udp => {
                    client.allocate(now);
                    (None, AState::Turn)
                }
                _ => (
                    Some(cx.net.connect(now, cx.me, local, addr)),
                    AState::Connecting,
                ),
            };
            attempts.push(Attempt {
                via: ice.via,
                server: addr,
                local,
                client,
                sid,
                state,
                tls_buf: Vec::new(),
                allocated: false,
                failed: false,
                loser: false,
                deadline,
                answered: false,
                redirected: false,
                allocates_to: Vec::new(),
            });
        }
        attempts
    }

    /// The call's relay is gone (its data stopped, its allocation or stream ended): with
    /// ICE restarts, a fresh allocation through another server; else the call goes on
    /// without a relay.
    fn relay_lost(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else { return };
        let Some(k) = s.winner else { return };
        cx.oracle.session_lost(s.record, now);
        cx.board.relayed.remove(&self.id);
        let Some(_) = self.spec.ice_restart_s else {
            return;
        };
        if s.ending.is_some() {
            return;
        }
        cx.oracle.session_relay_lost(s.record, now);
        if let Some(a) = s.attempts.get_mut(k) {
            self.avoid.insert(a.server, now + AVOID_FOR);
            cx.note(format!(
                "browser {} lost its relay at {}: ICE restart",
                self.id, a.server
            ));
            close(cx, a);
        }
        s.winner = None;
        s.permitted = false;
        s.next_data = None;
        s.reconnecting = Some(now);
        s.peer = self.peer;
        self.restart_ice(cx);
    }

    /// New attempts for the session (an ICE restart, or another round of one).
    fn restart_ice(&mut self, cx: &mut Cx) {
        let Some(s) = &self.session else { return };
        let (u, p, port) = (s.username.clone(), s.password.clone(), s.udp_port);
        let fresh = self.open_attempts(cx, &u, &p, port);
        if let Some(s) = &mut self.session {
            s.attempts.extend(fresh);
        }
    }

    /// ICE consent: a kept relay through which nothing came back for `ice_restart_s`
    /// is lost.
    fn consent(&mut self, cx: &mut Cx) {
        let Some(n) = self.spec.ice_restart_s else {
            return;
        };
        let Some(s) = &self.session else { return };
        if s.winner.is_none() || s.ending.is_some() {
            return;
        }
        if cx.now.since(s.last_rx) >= Duration::from_secs(n) {
            self.relay_lost(cx);
        }
    }

    /// After any input: process client events, flush transmits, check deadlines.
    fn after(&mut self, cx: &mut Cx) {
        let now = cx.now;
        // Bounded: each pass handles what is queued; events rarely cascade twice.
        for _ in 0..4 {
            let mut progressed = false;
            let n = self.session.as_ref().map_or(0, |s| s.attempts.len());
            for k in 0..n {
                while let Some(ev) = self.attempt_mut(k).and_then(|a| a.client.poll_event()) {
                    progressed = true;
                    self.on_client_event(cx, k, ev);
                }
            }
            self.deadlines(cx);
            self.consent(cx);
            self.data(cx);
            self.probe(cx);
            self.session_end(cx);
            self.flush(cx);
            if !progressed {
                break;
            }
        }
        let _ = now;
    }

    fn on_client_event(&mut self, cx: &mut Cx, k: usize, ev: ClientEvent) {
        let now = cx.now;
        let Some(s) = &mut self.session else {
            return;
        };
        let record = s.record;
        match ev {
            ClientEvent::Allocated {
                relayed, mapped, ..
            } => {
                cx.oracle.session_answer(record, now);
                let ending = s.ending.is_some() || now >= s.end_at;
                let Some(a) = s.attempts.get_mut(k) else {
                    return;
                };
                a.allocated = true;
                let via = a.via;
                if s.winner.is_none() && !ending && !a.loser {
                    s.winner = Some(k);
                    s.last_rx = now;
                    cx.note(format!(
                        "browser {} kept {} allocation {:?}",
                        self.id,
                        via.as_str(),
                        relayed
                    ));
                    if let Some(r) = relayed.first() {
                        cx.board.relayed.insert(self.id, *r);
                    }
                    if s.reconnecting.take().is_some() {
                        cx.oracle
                            .session_reconnected(record, now, relayed.first().copied());
                    } else {
                        cx.oracle
                            .session_connected(record, now, via, mapped, relayed);
                    }
                    if self.spec.probe_expiry {
                        s.probes = expiry_probes(cx, self.issuer, record);
                    }
                    if self.partner.is_some() && self.spec.data_interval_ms > 0 {
                        // Polls the signalling for the partner's address.
                        s.next_data = Some(now);
                    }
                    for j in 0..s.attempts.len() {
                        if j != k {
                            release(cx, &mut s.attempts[j], &self.spec.release);
                        }
                    }
                    if let (Some(peer), Some(a)) = (s.peer, s.attempts.get_mut(k)) {
                        a.client.create_permission(now, &[peer.ip()]);
                        if self.spec.probe_denied {
                            for p in DENIED_PROBES {
                                if let Ok(addr) = p.parse::<SocketAddr>() {
                                    a.client.create_permission(now, &[addr.ip()]);
                                    a.client.send_indication(now, addr, b"probe");
                                }
                            }
                        }
                    }
                } else {
                    release(cx, a, &self.spec.release);
                }
            }
            ClientEvent::AllocateFailed { code, .. } => {
                if code == 300 {
                    cx.oracle.fleet.redirects_refused += 1;
                }
                cx.oracle.session_answer(record, now);
                cx.oracle.session_code(record, code);
                if let Some(a) = s.attempts.get_mut(k) {
                    fail(cx, a);
                }
            }
            ClientEvent::TimedOut { method } => {
                if let Some(a) = s.attempts.get_mut(k) {
                    if method == Method::ALLOCATE {
                        fail(cx, a);
                    } else if a.state == AState::Releasing {
                        close(cx, a);
                    }
                }
            }
            ClientEvent::PermissionCreated { peers } => {
                if let (Some(peer), Some(a)) = (s.peer, s.attempts.get_mut(k)) {
                    if peers.contains(&peer.ip()) && Some(k) == s.winner {
                        s.permitted = true;
                    }
                    if peers.contains(&peer.ip())
                        && Some(k) == s.winner
                        && a.client.channel_for(peer).is_none()
                    {
                        let _ = a.client.channel_bind(now, peer);
                        if self.spec.data_interval_ms > 0
                            && s.next_data.is_none()
                            && s.ending.is_none()
                        {
                            s.next_data = Some(now);
                        }
                    }
                }
            }
            ClientEvent::PermissionFailed { code, .. } => cx.oracle.session_code(record, code),
            ClientEvent::Data { peer, data } => {
                if Some(k) == s.winner {
                    s.last_rx = now;
                }
                if self.partner.is_none() || data.first() == Some(&ECHO) {
                    cx.oracle.session_echo(record);
                } else if let Some(a) = s.attempts.get_mut(k) {
                    // The partner's packet goes back the way it came: relay to relay.
                    let mut back = data;
                    back.insert(0, ECHO);
                    if a.state == AState::Turn {
                        a.client.send(now, peer, &back);
                    }
                }
            }
            ClientEvent::Redirected { from, to, .. } => {
                if let Some(a) = s.attempts.get_mut(k) {
                    cx.oracle.redirect();
                    cx.note(format!(
                        "browser {} redirected from {from} to {to}",
                        self.id
                    ));
                    a.server = to;
                    a.redirected = true;
                    if a.via != Via::Udp {
                        // A new connection to the alternate; the Allocate waits in the
                        // client until it is up (and, for TLS, its handshake done).
                        if let Some(old) = a.sid.take() {
                            cx.net.close(now, old, Side::Connector);
                        }
                        a.sid = Some(cx.net.connect(now, cx.me, a.local, to));
                        a.state = AState::Connecting;
                        a.tls_buf.clear();
                    }
                }
            }
            ClientEvent::Deleted => {
                if let Some(a) = s.attempts.get_mut(k) {
                    close(cx, a);
                }
            }
            ClientEvent::RefreshFailed { code } => {
                cx.oracle.session_code(record, code);
                if let Some(a) = s.attempts.get_mut(k) {
                    if a.state == AState::Releasing || code == 437 {
                        close(cx, a);
                    }
                }
                if code == 437 && s.winner == Some(k) {
                    self.relay_lost(cx);
                }
            }
            ClientEvent::Expired | ClientEvent::StreamError => {
                if let Some(a) = s.attempts.get_mut(k) {
                    close(cx, a);
                }
                if s.winner == Some(k) {
                    self.relay_lost(cx);
                }
            }
            _ => {}
        }
    }

    /// Attempts that got nowhere in time fail; a session with nothing left retries.
    fn deadlines(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else { return };
        for a in &mut s.attempts {
            if !a.allocated && a.state != AState::Closed && now >= a.deadline {
                if !a.answered && self.spec.ice_restart_s.is_some() {
                    self.avoid.insert(a.server, now + AVOID_FOR);
                }
                fail(cx, a);
            }
            if a.failed && a.state != AState::Closed {
                close(cx, a);
            }
        }
        if s.winner.is_none()
            && s.ending.is_none()
            && s.attempts.iter().all(|a| a.state == AState::Closed)
        {
            if s.reconnecting.is_some() && now < s.end_at {
                // The call goes on: another round of the ICE restart, a second on.
                match s.next_round {
                    Some(t) if t <= now => {
                        s.next_round = None;
                        self.restart_ice(cx);
                    }
                    Some(_) => {}
                    None => s.next_round = Some(now + ROUND_PAUSE),
                }
                return;
            }
            if self.spec.well_behaved {
                cx.oracle.fleet_session_failed(s.record);
            }
            cx.oracle.session_failed(s.record, now);
            self.session = None;
            if !self.done {
                let wait = between(cx.rng, self.spec.retry_s[0], self.spec.retry_s[1]);
                self.next_start = Some(now + Duration::from_secs(wait));
            }
        }
    }

    /// Sends the next data packet to the peer through the kept allocation.
    fn data(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else {
            return;
        };
        let (Some(k), Some(at)) = (s.winner, s.next_data) else {
            return;
        };
        if s.ending.is_some() {
            s.next_data = None;
            return;
        }
        if at > now {
            return;
        }
        if let Some(partner) = self.partner {
            let known = cx.board.relayed(partner);
            if known != s.peer {
                if s.peer.is_some() {
                    cx.oracle.session_partner_gone(s.record, now);
                }
                s.peer = known;
                s.permitted = false;
                if let (Some(p), Some(a)) = (known, s.attempts.get_mut(k)) {
                    cx.note(format!("browser {} learns its partner at {p}", self.id));
                    cx.oracle.session_partner(s.record, now);
                    a.client.create_permission(now, &[p.ip()]);
                }
            }
        }
        let (Some(peer), true) = (s.peer, s.permitted) else {
            s.next_data = Some(now + Duration::from_millis(self.spec.data_interval_ms));
            return;
        };
        s.seq += 1;
        let payload = format!("b{} #{}", self.id, s.seq);
        if let Some(a) = s.attempts.get_mut(k) {
            if a.state == AState::Turn {
                a.client.send(now, peer, payload.as_bytes());
            }
        }
        s.next_data = Some(now + Duration::from_millis(self.spec.data_interval_ms));
    }

    /// Refreshes the kept allocation when a probe is due (see [`expiry_probes`]).
    fn probe(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else { return };
        let due = s.probes.iter().filter(|&&t| t <= now).count();
        if due == 0 {
            return;
        }
        // Due probes go, whether they can be sent or not (the session may be ending).
        s.probes.retain(|&t| t > now);
        let (Some(k), false) = (s.winner, s.ending.is_some()) else {
            return;
        };
        if let Some(a) = s.attempts.get_mut(k) {
            if a.state == AState::Turn {
                a.client.refresh(now, PROBE_LIFETIME_S);
            }
        }
    }

    /// Ends the session: vanish, or release everything and wait for the answers.
    fn session_end(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else { return };
        if now < s.end_at {
            return;
        }
        if s.ending.is_none() {
            cx.board.relayed.remove(&self.id);
            cx.oracle.session_ended(s.record, now);
            s.ending = Some(now + RELEASE_WAIT);
            s.next_data = None;
            if s.vanish {
                cx.note(format!("browser {} vanishes", self.id));
                cx.oracle.session_vanished(s.record);
                for a in &mut s.attempts {
                    a.state = AState::Closed;
                }
            } else {
                for a in &mut s.attempts {
                    release(cx, a, &self.spec.release);
                }
            }
        }
        let all_closed = s.attempts.iter().all(|a| a.state == AState::Closed);
        if all_closed || s.ending.is_some_and(|t| now >= t) {
            if !s.vanish {
                for a in &mut s.attempts {
                    close(cx, a);
                }
            }
            cx.oracle.session_ended(s.record, now);
            self.session = None;
            let last = self.spec.sessions.is_some_and(|n| self.sessions >= n);
            if !self.done && !last {
                let pause = between(cx.rng, self.spec.pause_s[0], self.spec.pause_s[1]);
                self.next_start = Some(now + Duration::from_secs(pause));
            }
        }
    }

    /// Sends what the clients queued.
    fn flush(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let me = cx.me;
        let Some(s) = &mut self.session else { return };
        let record = s.record;
        for a in &mut s.attempts {
            if matches!(a.state, AState::Connecting | AState::Tls) {
                continue; // the client keeps what it queued until the stream is up
            }
            while let Some(bytes) = a.client.poll_transmit() {
                if a.state == AState::Closed {
                    continue;
                }
                if crate::fleet::is_allocate_request(&bytes) {
                    cx.oracle
                        .allocate_sent(record, &mut a.allocates_to, a.server);
                }
                match (a.via, a.sid) {
                    (Via::Udp, _) => cx.net.send_datagram(now, me, a.local, a.server, bytes),
                    (_, Some(sid)) => cx.net.write(now, sid, Side::Connector, bytes),
                    _ => {}
                }
            }
        }
    }

    fn port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= 60_000 { 40_000 } else { p + 1 };
        p
    }

    fn attempt_where(&self, f: impl Fn(&Attempt) -> bool) -> Option<usize> {
        self.session.as_ref()?.attempts.iter().position(f)
    }

    fn attempt_mut(&mut self, k: usize) -> Option<&mut Attempt> {
        self.session.as_mut()?.attempts.get_mut(k)
    }
}

/// The lifetime a probing Refresh asks for, seconds.
const PROBE_LIFETIME_S: u32 = 60;

/// When a probing browser refreshes its kept allocation: half a second into the last
/// wall-clock second its REST credential is valid, and half a second into the first after
/// (the reload oracle's boundary, [`crate::rotation`]).
fn expiry_probes(cx: &mut Cx, issuer: usize, record: usize) -> Vec<Instant> {
    let Some(expiry) = cx
        .oracle
        .sessions
        .get(record)
        .and_then(|s| turnpike_core::auth::rest_expiry(&s.username))
    else {
        return Vec::new();
    };
    let wall_ms = cx.shared.walls[issuer].unix_ms(cx.now);
    [500u64, 1500]
        .iter()
        .map(|off| expiry * 1000 + off)
        .filter(|&t| t > wall_ms)
        .map(|t| cx.now + Duration::from_millis(t - wall_ms))
        .collect()
}

/// Lets go of an attempt that lost the race or whose session ends.
fn release(cx: &mut Cx, a: &mut Attempt, mode: &str) {
    a.loser = true;
    if a.state == AState::Closed || a.state == AState::Releasing {
        return;
    }
    let refresh0 = match mode {
        "refresh0" => true,
        "close" => false,
        _ => chance(cx.rng, 0.5),
    };
    if a.allocated && (a.via == Via::Udp || refresh0) {
        a.client.refresh(cx.now, 0);
        a.state = AState::Releasing;
    } else if a.via != Via::Udp {
        close(cx, a);
    }
    // A UDP attempt still allocating stays, marked as a loser: should its allocation
    // arrive, it is released at once.
}

fn fail(cx: &mut Cx, a: &mut Attempt) {
    a.failed = true;
    close(cx, a);
}

fn close(cx: &mut Cx, a: &mut Attempt) {
    if let Some(sid) = a.sid.take() {
        cx.net.close(cx.now, sid, Side::Connector);
    }
    a.state = AState::Closed;
}

/// The ClientHello a browser's TLS attempts send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hello {
    /// One flight of so many padding records, then the closing record.
    Records(usize),
    /// Nothing at all.
    Stall,
}

impl Hello {
    /// From a group's `tls_hello`: `normal`, `stall`, or `oversize` (a ClientHello larger
    /// than the native listener's byte bound).
    fn of(name: &str) -> Hello {
        match name {
            "stall" => Hello::Stall,
            "oversize" => Hello::Records(crate::tls::HANDSHAKE_MAX_BYTES / TLS_RECORD + 8),
            _ => Hello::Records(0),
        }
    }
}
