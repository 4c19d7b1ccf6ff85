//! A harness for the server conformance tests: a `Server` with one UDP listener, one plain
//! TCP listener and one TCP listener behind a PROXY-protocol speaking proxy, a driver loop
//! that answers relay binds, and a raw-message client whose every attribute the test
//! controls.
//!
//! Nothing here touches the network: addresses are values, time is an `Instant` moved by
//! hand, and the wall clock is set once and follows the monotonic one.

#![allow(dead_code)]

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::auth::{long_term_key, userhash, Credentials, Key, PasswordAlgorithm};
use turnpike_core::cidr::IpNet;
use turnpike_core::config::{ListenerConfig, RelayAddress};
use turnpike_core::event::{CloseReason, Event, Output};
use turnpike_core::server::BindError;
use turnpike_core::stun::{
    attr, Class, IntegrityKind, Message, MessageBuilder, Method, TransactionId,
};
use turnpike_core::{
    Config, ConnId, Forward, Instant, ListenerId, RelayId, Server, Transport, HEADROOM, TAILROOM,
};

pub const REALM: &str = "example.org";
pub const USER: &str = "alice";
pub const PASS: &str = "alice-secret";
pub const USER2: &str = "bob";
pub const PASS2: &str = "bob-secret";
pub const REST_SECRET: &[u8] = b"shared-rest-secret";

pub const UDP: ListenerId = ListenerId(1);
pub const TCP: ListenerId = ListenerId(2);
pub const TCP_PROXY: ListenerId = ListenerId(3);

/// Monotonic time at which every server is born.
pub const T0: Instant = Instant::from_secs(1000);
/// Wall clock (unix ms) at `T0`.
pub const WALL0_MS: u64 = 1_700_000_000_000;

/// The relay's IPv4 address (bind = advertised).
pub fn relay_v4() -> IpAddr {
    ip("192.0.2.1")
}
/// The relay's IPv6 address, when a test turns IPv6 relaying on.
pub fn relay_v6() -> IpAddr {
    ip("2001:db8:ffff::1")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A client address on the UDP listener (documentation range, only a value).
pub fn client(n: u8) -> SocketAddr {
    SocketAddr::new(ip(&format!("203.0.113.{n}")), 40_000 + u16::from(n))
}

/// A peer the policy allows (the test configuration allows 198.51.100.0/24).
pub fn peer(n: u8) -> SocketAddr {
    SocketAddr::new(ip(&format!("198.51.100.{n}")), 50_000 + u16::from(n))
}

/// An IPv6 peer the policy allows (2001:db8:1::/48 is allowed).
pub fn peer6(n: u8) -> SocketAddr {
    SocketAddr::new(ip(&format!("2001:db8:1::{n}")), 50_000 + u16::from(n))
}

/// The proxy in front of the PROXY listener (trusted: 10.0.0.0/8).
pub fn proxy_addr() -> SocketAddr {
    sa("10.0.0.5:51000")
}

/// The test configuration: static users alice and bob, a REST secret, three listeners,
/// the test peer ranges allowed.
pub fn config() -> Config {
    let mut creds = Credentials::new(REALM);
    creds.add_user(USER, PASS);
    creds.add_user(USER2, PASS2);
    creds.add_rest_secret(REST_SECRET);
    let mut cfg = Config::new(creds, relay_v4());
    cfg.listeners = vec![
        ListenerConfig {
            id: UDP,
            transport: Transport::Udp,
            local: sa("192.0.2.1:3478"),
            proxy_protocol: false,
        },
        ListenerConfig {
            id: TCP,
            transport: Transport::Tcp,
            local: sa("192.0.2.1:3478"),
            proxy_protocol: false,
        },
        ListenerConfig {
            id: TCP_PROXY,
            transport: Transport::Tcp,
            local: sa("192.0.2.1:3479"),
            proxy_protocol: true,
        },
    ];
    cfg.proxy_protocol_trusted = vec![net("10.0.0.0/8")];
    cfg.peer_policy.allow = vec![net("198.51.100.0/24"), net("2001:db8:1::/48")];
    cfg
}

/// Adds an IPv6 relay address to `cfg`.
pub fn with_v6(mut cfg: Config) -> Config {
    cfg.relay_v6 = Some(RelayAddress {
        bind: relay_v6(),
        advertised: relay_v6(),
    });
    cfg
}

/// Where a client's messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Datagrams from `addr` to the UDP listener.
    Udp(SocketAddr),
    /// Bytes on an open stream.
    Stream(ConnId),
}

/// One answer the server sent (Transmit or StreamWrite).
#[derive(Clone, Debug)]
pub struct Answer {
    pub via: Via,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("the server's answer parses")
    }
    pub fn class(&self) -> Class {
        self.msg().class()
    }
    pub fn method(&self) -> Method {
        self.msg().method()
    }
    pub fn tid(&self) -> TransactionId {
        self.msg().transaction_id()
    }
    /// The error code, or None for a success.
    pub fn code(&self) -> Option<u16> {
        self.msg()
            .get(attr::ERROR_CODE)
            .map(|v| attr::decode_error_code(v).expect("ERROR-CODE decodes").0)
    }
    pub fn is_success(&self) -> bool {
        self.class() == Class::Success
    }
    pub fn get(&self, ty: u16) -> Option<Vec<u8>> {
        self.msg().get(ty).map(<[u8]>::to_vec)
    }
    pub fn has(&self, ty: u16) -> bool {
        self.msg().get(ty).is_some()
    }
    /// Every visible attribute type, in order.
    pub fn types(&self) -> Vec<u16> {
        self.msg().attributes().map(|(t, _)| t).collect()
    }
    /// The first XOR-…-ADDRESS of type `ty`.
    pub fn xor(&self, ty: u16) -> Option<SocketAddr> {
        let m = self.msg();
        m.get(ty)
            .map(|v| attr::decode_xor_address(v, &m.transaction_id()).expect("address decodes"))
    }
    /// Every XOR-…-ADDRESS of type `ty`.
    pub fn xors(&self, ty: u16) -> Vec<SocketAddr> {
        let m = self.msg();
        let tid = m.transaction_id();
        m.attributes()
            .filter(|(t, _)| *t == ty)
            .map(|(_, v)| attr::decode_xor_address(v, &tid).expect("address decodes"))
            .collect()
    }
    pub fn lifetime(&self) -> Option<u32> {
        self.msg()
            .get(attr::LIFETIME)
            .map(|v| attr::decode_u32(v).unwrap())
    }
    pub fn text(&self, ty: u16) -> Option<String> {
        self.msg()
            .get(ty)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }
    pub fn has_fingerprint(&self) -> bool {
        self.msg().has_fingerprint()
    }
    /// True if MESSAGE-INTEGRITY verifies with `key`.
    pub fn verifies_sha1(&self, key: &Key) -> bool {
        self.msg().check_integrity_sha1(key.as_bytes())
    }
    /// True if MESSAGE-INTEGRITY-SHA256 verifies with `key`.
    pub fn verifies_sha256(&self, key: &Key) -> bool {
        self.msg().check_integrity_sha256(key.as_bytes())
    }
    /// UNKNOWN-ATTRIBUTES as a list of types.
    pub fn unknown_attributes(&self) -> Vec<u16> {
        self.get(attr::UNKNOWN_ATTRIBUTES)
            .map(|v| {
                v.chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Everything the server did in answer to one input (and the binds the harness answered).
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub answers: Vec<Answer>,
    pub events: Vec<Event>,
    /// Relay binds requested, in order, with the result the harness gave.
    pub binds: Vec<(RelayId, SocketAddr, Result<(), BindError>)>,
    pub closed_relays: Vec<RelayId>,
    pub closed_streams: Vec<(ConnId, CloseReason)>,
    /// Messages for other loops of the node.
    pub to_loops: Vec<(turnpike_core::node::LoopId, turnpike_core::node::LoopMsg)>,
    /// What the datagram call returned (relayed data).
    pub forward: Option<Forward>,
    /// Payloads handed to the stream `to_peer` callback.
    pub stream_to_peer: Vec<(RelayId, SocketAddr, Vec<u8>)>,
}

impl Outcome {
    /// The only answer; panics if there is not exactly one.
    pub fn answer(&self) -> &Answer {
        assert_eq!(
            self.answers.len(),
            1,
            "expected exactly one answer, got {:?}",
            self.answers
                .iter()
                .map(|a| (a.class(), a.code()))
                .collect::<Vec<_>>()
        );
        &self.answers[0]
    }
    pub fn merge(&mut self, other: Outcome) {
        self.answers.extend(other.answers);
        self.events.extend(other.events);
        self.binds.extend(other.binds);
        self.closed_relays.extend(other.closed_relays);
        self.closed_streams.extend(other.closed_streams);
        self.to_loops.extend(other.to_loops);
        self.stream_to_peer.extend(other.stream_to_peer);
        if other.forward.is_some() {
            self.forward = other.forward;
        }
    }
    /// The successful binds (relay, address).
    pub fn bound(&self) -> Vec<(RelayId, SocketAddr)> {
        self.binds
            .iter()
            .filter(|b| b.2.is_ok())
            .map(|b| (b.0, b.1))
            .collect()
    }
}

/// How the harness answers `Output::BindRelay`.
#[derive(Clone, Debug, Default)]
pub struct BindPlan {
    /// Ports that are "in use by someone else": binding them fails with AddrInUse.
    pub busy_ports: BTreeSet<u16>,
    /// Fail the next N binds with AddrInUse, whatever the port.
    pub fail_next: u32,
    /// Fail every bind with this error.
    pub fail_all: Option<BindError>,
    /// Do not answer binds at all: they wait in `held` until `release_binds`.
    pub hold: bool,
}

/// The server and its simulated driver.
pub struct Harness {
    pub server: Server,
    pub now: Instant,
    pub binds: BindPlan,
    pub held: VecDeque<(RelayId, SocketAddr)>,
    next_tid: u64,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(config())
    }

    pub fn with_config(cfg: Config) -> Self {
        Self::with_seed(cfg, [7u8; 32])
    }

    pub fn with_seed(cfg: Config, seed: [u8; 32]) -> Self {
        let mut server = Server::new(cfg, seed, T0).expect("the config is valid");
        server.set_wall_clock(T0, WALL0_MS);
        Harness {
            server,
            now: T0,
            binds: BindPlan::default(),
            held: VecDeque::new(),
            next_tid: 1,
        }
    }

    /// Wall clock now, unix seconds.
    pub fn wall_s(&self) -> u64 {
        (WALL0_MS + self.now.since(T0).as_millis() as u64) / 1000
    }

    /// A fresh transaction id.
    pub fn tid(&mut self) -> TransactionId {
        let n = self.next_tid;
        self.next_tid += 1;
        let mut t = [0xA5u8; 12];
        t[4..].copy_from_slice(&n.to_be_bytes());
        TransactionId(t)
    }

    /// Moves time forward by `d` and runs the timers.
    pub fn advance(&mut self, d: Duration) -> Outcome {
        self.now = self.now + d;
        let now = self.now;
        self.server.handle_timeout(now);
        self.drain(None)
    }

    /// Moves time to `t` (not backwards) and runs the timers.
    pub fn advance_to(&mut self, t: Instant) -> Outcome {
        if t > self.now {
            self.now = t;
        }
        let now = self.now;
        self.server.handle_timeout(now);
        self.drain(None)
    }

    /// Delivers a message from loop `from` of the node (see `turnpike_core::node`).
    pub fn loop_message(
        &mut self,
        from: turnpike_core::node::LoopId,
        msg: turnpike_core::node::LoopMsg,
    ) -> Outcome {
        let now = self.now;
        self.server.handle_loop_message(now, from, msg);
        self.drain(None)
    }

    /// Sends raw bytes from `via`: a datagram to the UDP listener or bytes on a stream.
    pub fn send_raw(&mut self, via: Via, bytes: &[u8]) -> Outcome {
        match via {
            Via::Udp(from) => self.datagram(UDP, from, bytes),
            Via::Stream(conn) => self.stream_data(conn, bytes),
        }
    }

    /// A datagram on `listener` from `from`.
    pub fn datagram(&mut self, listener: ListenerId, from: SocketAddr, bytes: &[u8]) -> Outcome {
        let mut buf = bytes.to_vec();
        let len = buf.len();
        let now = self.now;
        let fwd = self
            .server
            .handle_datagram(now, listener, from, &mut buf, 0..len);
        self.drain(fwd)
    }

    /// A datagram whose payload sits at `offset` in a larger buffer, to check that forward
    /// ranges are given in the caller's coordinates.
    pub fn datagram_at(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        offset: usize,
    ) -> (Outcome, Vec<u8>) {
        let mut buf = vec![0xEEu8; offset];
        buf.extend_from_slice(bytes);
        buf.extend_from_slice(&[0xEE; 7]);
        let now = self.now;
        let fwd =
            self.server
                .handle_datagram(now, UDP, from, &mut buf, offset..offset + bytes.len());
        (self.drain(fwd), buf)
    }

    /// Opens a stream on `listener` from `remote`.
    pub fn open_stream(
        &mut self,
        conn: ConnId,
        listener: ListenerId,
        remote: SocketAddr,
    ) -> Outcome {
        let now = self.now;
        let local = if listener == TCP_PROXY {
            sa("192.0.2.1:3479")
        } else {
            sa("192.0.2.1:3478")
        };
        self.server
            .handle_stream_open(now, conn, listener, local, remote);
        self.drain(None)
    }

    /// Bytes on a stream.
    pub fn stream_data(&mut self, conn: ConnId, bytes: &[u8]) -> Outcome {
        let now = self.now;
        let mut sent = Vec::new();
        self.server
            .handle_stream_data(now, conn, bytes, &mut |relay, peer, payload| {
                sent.push((relay, peer, payload.to_vec()));
            });
        let mut out = self.drain(None);
        out.stream_to_peer = sent;
        out
    }

    /// The driver saw the stream close.
    pub fn close_stream(&mut self, conn: ConnId) -> Outcome {
        let now = self.now;
        self.server.handle_stream_closed(now, conn);
        self.drain(None)
    }

    /// A datagram from `from` to relay socket `relay`, laid out with the headroom and
    /// tailroom the core asks for. Returns the outcome and the buffer (the relayed bytes
    /// are `buf[range]` of the forward).
    pub fn peer_datagram(
        &mut self,
        relay: RelayId,
        from: SocketAddr,
        payload: &[u8],
    ) -> (Outcome, Vec<u8>) {
        let mut buf = vec![0xCCu8; HEADROOM];
        buf.extend_from_slice(payload);
        buf.extend_from_slice(&[0xCC; TAILROOM]);
        let now = self.now;
        let fwd = self.server.handle_relay_datagram(
            now,
            relay,
            from,
            &mut buf,
            HEADROOM..HEADROOM + payload.len(),
        );
        (self.drain(fwd), buf)
    }

    /// Answers the binds that were held.
    pub fn release_binds(&mut self) -> Outcome {
        self.binds.hold = false;
        let mut out = Outcome::default();
        let held: Vec<_> = self.held.drain(..).collect();
        for (relay, addr) in held {
            let result = self.bind_result(addr.port());
            out.binds.push((relay, addr, result));
            let now = self.now;
            self.server.handle_relay_bound(now, relay, result);
            out.merge(self.drain(None));
        }
        out
    }

    fn bind_result(&mut self, port: u16) -> Result<(), BindError> {
        if let Some(e) = self.binds.fail_all {
            return Err(e);
        }
        if self.binds.fail_next > 0 {
            self.binds.fail_next -= 1;
            return Err(BindError::AddrInUse);
        }
        if self.binds.busy_ports.contains(&port) {
            return Err(BindError::AddrInUse);
        }
        Ok(())
    }

    /// Drains every output, answering binds as the plan says, until nothing is left.
    pub fn drain(&mut self, forward: Option<Forward>) -> Outcome {
        let mut out = Outcome {
            forward,
            ..Outcome::default()
        };
        let mut guard = 0;
        while let Some(o) = self.server.poll_output() {
            guard += 1;
            assert!(guard < 100_000, "the server keeps producing outputs");
            match o {
                Output::Transmit { listener, to, data } => {
                    assert_eq!(listener, UDP, "answers leave from the UDP listener");
                    out.answers.push(Answer {
                        via: Via::Udp(to),
                        bytes: data,
                    });
                }
                Output::StreamWrite { conn, data } => out.answers.push(Answer {
                    via: Via::Stream(conn),
                    bytes: data,
                }),
                Output::CloseStream { conn, reason } => out.closed_streams.push((conn, reason)),
                Output::BindRelay { relay, addr } => {
                    if self.binds.hold {
                        self.held.push_back((relay, addr));
                        continue;
                    }
                    let result = self.bind_result(addr.port());
                    out.binds.push((relay, addr, result));
                    let now = self.now;
                    self.server.handle_relay_bound(now, relay, result);
                }
                Output::CloseRelay { relay } => out.closed_relays.push(relay),
                Output::Event(e) => out.events.push(e),
                Output::ToLoop { to, msg } => out.to_loops.push((to, msg)),
            }
        }
        out
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// One attribute of a request, encoded when the transaction id is known.
#[derive(Clone, Debug)]
pub enum A {
    Raw(u16, Vec<u8>),
    U32(u16, u32),
    Xor(u16, SocketAddr),
}

/// A request (or indication) under construction: the test chooses every attribute.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: Method,
    pub class: Class,
    pub tid: Option<TransactionId>,
    pub attrs: Vec<A>,
    /// Attributes appended after MESSAGE-INTEGRITY (RFC 8489 §14.5: to be ignored).
    pub after_integrity: Vec<A>,
}

impl Req {
    pub fn new(method: Method) -> Self {
        Req {
            method,
            class: Class::Request,
            tid: None,
            attrs: Vec::new(),
            after_integrity: Vec::new(),
        }
    }
    pub fn binding() -> Self {
        Req::new(Method::BINDING)
    }
    /// Allocate with REQUESTED-TRANSPORT UDP.
    pub fn allocate() -> Self {
        Req::new(Method::ALLOCATE).transport(attr::TRANSPORT_UDP)
    }
    /// Allocate with no attribute at all.
    pub fn allocate_bare() -> Self {
        Req::new(Method::ALLOCATE)
    }
    pub fn refresh(lifetime: Option<u32>) -> Self {
        let r = Req::new(Method::REFRESH);
        match lifetime {
            Some(l) => r.u32(attr::LIFETIME, l),
            None => r,
        }
    }
    pub fn create_permission(peers: &[SocketAddr]) -> Self {
        let mut r = Req::new(Method::CREATE_PERMISSION);
        for p in peers {
            r = r.xor(attr::XOR_PEER_ADDRESS, *p);
        }
        r
    }
    pub fn channel_bind(number: u16, peer: SocketAddr) -> Self {
        Req::new(Method::CHANNEL_BIND)
            .raw(attr::CHANNEL_NUMBER, &channel_number(number))
            .xor(attr::XOR_PEER_ADDRESS, peer)
    }
    pub fn send_indication(peer: SocketAddr, data: &[u8]) -> Self {
        let mut r = Req::new(Method::SEND)
            .xor(attr::XOR_PEER_ADDRESS, peer)
            .raw(attr::DATA, data);
        r.class = Class::Indication;
        r
    }
    pub fn with_tid(mut self, tid: TransactionId) -> Self {
        self.tid = Some(tid);
        self
    }
    pub fn raw(mut self, ty: u16, v: &[u8]) -> Self {
        self.attrs.push(A::Raw(ty, v.to_vec()));
        self
    }
    pub fn u32(mut self, ty: u16, v: u32) -> Self {
        self.attrs.push(A::U32(ty, v));
        self
    }
    pub fn xor(mut self, ty: u16, a: SocketAddr) -> Self {
        self.attrs.push(A::Xor(ty, a));
        self
    }
    pub fn transport(self, proto: u8) -> Self {
        self.raw(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0])
    }
    pub fn lifetime(self, s: u32) -> Self {
        self.u32(attr::LIFETIME, s)
    }
    pub fn family(self, fam: u8) -> Self {
        self.raw(attr::REQUESTED_ADDRESS_FAMILY, &[fam, 0, 0, 0])
    }
    pub fn additional_family(self, fam: u8) -> Self {
        self.raw(attr::ADDITIONAL_ADDRESS_FAMILY, &[fam, 0, 0, 0])
    }
    pub fn after_integrity(mut self, a: A) -> Self {
        self.after_integrity.push(a);
        self
    }

    fn tid_or(&self, h: &mut Harness) -> TransactionId {
        match self.tid {
            Some(t) => t,
            None => h.tid(),
        }
    }

    /// Encodes without any credential attributes.
    pub fn encode_plain(&self, tid: TransactionId, fingerprint: bool) -> Vec<u8> {
        let mut b = MessageBuilder::new(self.method, self.class, tid);
        put(&mut b, &self.attrs);
        put(&mut b, &self.after_integrity);
        if fingerprint {
            b.add_fingerprint();
        }
        b.finish()
    }

    /// Encodes with the credential attributes of `c`.
    pub fn encode_signed(&self, tid: TransactionId, c: &Client) -> Vec<u8> {
        let mut b = MessageBuilder::new(self.method, self.class, tid);
        put(&mut b, &self.attrs);
        if c.userhash {
            b.add(attr::USERHASH, &userhash(&c.username, &c.realm));
        } else if let Some(u) = &c.username_attr {
            b.add(attr::USERNAME, u.as_bytes());
        }
        if let Some(r) = &c.realm_attr {
            b.add(attr::REALM, r.as_bytes());
        }
        if let Some(n) = &c.nonce {
            b.add(attr::NONCE, n.as_bytes());
        }
        if let Some(algs) = &c.echo_algorithms {
            b.add(attr::PASSWORD_ALGORITHMS, algs);
        }
        if let Some(alg) = c.password_algorithm_attr {
            b.add_password_algorithm(alg);
        }
        let key = c.key();
        match c.integrity {
            IntegrityKind::Sha1 => b.add_integrity_sha1(key.as_bytes()),
            IntegrityKind::Sha256 => b.add_integrity_sha256(key.as_bytes()),
        };
        put(&mut b, &self.after_integrity);
        if c.fingerprint {
            b.add_fingerprint();
        }
        b.finish()
    }
}

fn put(b: &mut MessageBuilder, attrs: &[A]) {
    for a in attrs {
        match a {
            A::Raw(t, v) => b.add(*t, v),
            A::U32(t, v) => b.add_u32(*t, *v),
            A::Xor(t, addr) => b.add_xor_address(*t, *addr),
        };
    }
}

/// CHANNEL-NUMBER value: the number and two reserved bytes (RFC 8656 §18.1).
pub fn channel_number(n: u16) -> [u8; 4] {
    let [a, b] = n.to_be_bytes();
    [a, b, 0, 0]
}

/// A ChannelData message; `pad` adds the stream padding (RFC 8656 §12.5).
pub fn channel_data(number: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut v = number.to_be_bytes().to_vec();
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    if pad {
        v.resize(v.len().div_ceil(4) * 4, 0);
    }
    v
}

/// A client: where it sends from and its credentials. The long-term credential state (the
/// nonce, what PASSWORD-ALGORITHMS to echo) is learned from the 401.
#[derive(Clone, Debug)]
pub struct Client {
    pub via: Via,
    pub username: String,
    pub password: String,
    pub realm: String,
    /// The USERNAME value sent (None: omitted). Normally `username`.
    pub username_attr: Option<String>,
    /// The REALM value sent (None: omitted).
    pub realm_attr: Option<String>,
    pub nonce: Option<String>,
    /// Send USERHASH instead of USERNAME.
    pub userhash: bool,
    /// The PASSWORD-ALGORITHMS value to echo (None: not sent).
    pub echo_algorithms: Option<Vec<u8>>,
    /// The PASSWORD-ALGORITHM to send (None: not sent).
    pub password_algorithm_attr: Option<u16>,
    /// The key's algorithm.
    pub algorithm: PasswordAlgorithm,
    /// The integrity attribute used.
    pub integrity: IntegrityKind,
    pub fingerprint: bool,
}

impl Client {
    pub fn new(via: Via, username: &str, password: &str) -> Self {
        Client {
            via,
            username: username.to_string(),
            password: password.to_string(),
            realm: REALM.to_string(),
            username_attr: Some(username.to_string()),
            realm_attr: Some(REALM.to_string()),
            nonce: None,
            userhash: false,
            echo_algorithms: None,
            password_algorithm_attr: None,
            algorithm: PasswordAlgorithm::Md5,
            integrity: IntegrityKind::Sha1,
            fingerprint: false,
        }
    }
    /// alice over UDP from `client(n)`.
    pub fn udp(n: u8) -> Self {
        Client::new(Via::Udp(client(n)), USER, PASS)
    }
    /// alice over stream `conn`.
    pub fn stream(conn: ConnId) -> Self {
        Client::new(Via::Stream(conn), USER, PASS)
    }
    pub fn key(&self) -> Key {
        long_term_key(self.algorithm, &self.username, &self.realm, &self.password)
    }
    /// Learns the nonce (and the offered algorithms) from a 401/438 answer.
    pub fn learn(&mut self, a: &Answer) {
        if let Some(n) = a.text(attr::NONCE) {
            self.nonce = Some(n);
        }
        if self.algorithm == PasswordAlgorithm::Sha256 {
            self.echo_algorithms = a.get(attr::PASSWORD_ALGORITHMS);
            self.password_algorithm_attr = Some(attr::PASSWORD_ALGORITHM_SHA256);
        }
    }
    /// Switches to the RFC 8489 §9.2 negotiation of SHA-256 with MESSAGE-INTEGRITY-SHA256.
    pub fn sha256(mut self) -> Self {
        self.algorithm = PasswordAlgorithm::Sha256;
        self.integrity = IntegrityKind::Sha256;
        self
    }
    pub fn with_fingerprint(mut self) -> Self {
        self.fingerprint = true;
        self
    }
}

impl Harness {
    /// Sends `req` without credentials from `c`.
    pub fn send_plain(&mut self, c: &Client, req: &Req) -> (TransactionId, Outcome) {
        let tid = req.tid_or(self);
        let bytes = req.encode_plain(tid, c.fingerprint);
        (tid, self.send_raw(c.via, &bytes))
    }

    /// Sends `req` signed with `c`'s current credential state (no 401 round).
    pub fn send_signed(&mut self, c: &Client, req: &Req) -> (TransactionId, Outcome) {
        let tid = req.tid_or(self);
        let bytes = req.encode_signed(tid, c);
        (tid, self.send_raw(c.via, &bytes))
    }

    /// The 401 round: sends `req` unsigned, expects 401, learns the nonce.
    pub fn challenge(&mut self, c: &mut Client, req: &Req) -> Outcome {
        // Attributes meant to follow MESSAGE-INTEGRITY are not part of the unsigned probe.
        let probe = Req {
            tid: None,
            after_integrity: Vec::new(),
            ..req.clone()
        };
        let (_, out) = self.send_plain(c, &probe);
        let a = out.answer();
        assert_eq!(a.code(), Some(401), "the first request is challenged");
        c.learn(a);
        out
    }

    /// Sends `req` authenticated: does the 401 round first if `c` has no nonce yet, and
    /// re-sends once on a 438 with the new nonce.
    pub fn authed(&mut self, c: &mut Client, req: Req) -> Outcome {
        if c.nonce.is_none() {
            self.challenge(c, &req);
        }
        let (_, out) = self.send_signed(c, &req);
        if out.answers.len() == 1 && out.answers[0].code() == Some(438) {
            c.learn(&out.answers[0]);
            return self.send_signed(c, &req).1;
        }
        out
    }

    /// An authenticated Allocate that must succeed; returns the answer and the relay ids
    /// bound for it (in family order as bound).
    pub fn allocate_ok(&mut self, c: &mut Client) -> (Answer, Vec<RelayId>) {
        self.allocate_with(c, Req::allocate())
    }

    pub fn allocate_with(&mut self, c: &mut Client, req: Req) -> (Answer, Vec<RelayId>) {
        let out = self.authed(c, req);
        let a = out.answer().clone();
        assert!(a.is_success(), "Allocate failed with {:?}", a.code());
        let relays = out.bound().into_iter().map(|b| b.0).collect();
        (a, relays)
    }

    /// Opens a plain TCP stream from `remote`.
    pub fn tcp_client(&mut self, conn: u64, remote: SocketAddr) -> Client {
        let out = self.open_stream(ConnId(conn), TCP, remote);
        assert!(out.closed_streams.is_empty());
        Client::stream(ConnId(conn))
    }

    /// An allocation with a permission for `p` and channel `number` bound to it.
    pub fn allocation_with_channel(
        &mut self,
        c: &mut Client,
        p: SocketAddr,
        number: u16,
    ) -> RelayId {
        let (_, relays) = self.allocate_ok(c);
        let out = self.authed(c, Req::channel_bind(number, p));
        assert!(
            out.answer().is_success(),
            "ChannelBind: {:?}",
            out.answer().code()
        );
        relays[0]
    }
}

/// The events of one kind.
pub fn auth_failures(out: &Outcome) -> Vec<turnpike_core::event::AuthFailure> {
    out.events
        .iter()
        .filter_map(|e| match e {
            Event::AuthFailed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// A unix-seconds timestamp as a REST username prefix.
pub fn rest_user(expiry: u64, user: &str) -> String {
    format!("{expiry}:{user}")
}

/// Counts answers per transaction id.
pub fn count_by_tid(answers: &[Answer]) -> BTreeMap<[u8; 12], usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.tid().0).or_insert(0) += 1;
    }
    m
}
