//! The whole server: the fuzz bytes are decoded into a sequence of inputs (datagrams from
//! a few client addresses, streams opened from a few sources with bytes split anywhere and
//! closed, PROXY headers, peer datagrams on the relay sockets, bind results ok or failed,
//! time passing) and fed to one `Server`. Authenticated requests are built from a small
//! grammar with the realm and nonce the server last handed to that client, so the fuzzer
//! reaches allocations, permissions, channels and relaying rather than stopping at 401.
//!
//! After every input the outputs are drained and the invariants checked:
//! - no panic;
//! - every output and every forward is addressed to a known client, open stream or
//!   relay socket, and relayed data only goes to peers the policy allows;
//! - answers are well-formed STUN;
//! - stats balance: allocations created − deleted = live = what the events say; streams
//!   open = what the harness opened minus what was closed;
//! - allocations within the total and per-user quotas, permissions and channels within
//!   their caps, streams within `max_streams` and `max_streams_per_source`.
#![no_main]

use core::time::Duration;
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::auth::{long_term_key, Credentials, PasswordAlgorithm};
use turnpike_core::config::ListenerConfig;
use turnpike_core::event::{Event, Output};
use turnpike_core::proxy_protocol;
use turnpike_core::server::BindError;
use turnpike_core::stun::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use turnpike_core::{
    Config, ConnId, Forward, Instant, ListenerId, RelayId, Server, Transport, HEADROOM, TAILROOM,
};

const REALM: &str = "fuzz.test";
const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];
const UDP: ListenerId = ListenerId(1);
const TCP: ListenerId = ListenerId(2);
const TCP_PROXY: ListenerId = ListenerId(3);
const MAX_STEPS: usize = 400;

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    let mut input = Bytes(data);
    for _ in 0..MAX_STEPS {
        let Some(op) = input.u8() else { break };
        w.step(op, &mut input);
        w.check();
    }
});

/// Reads the fuzz bytes front to back; every read may run out.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        let i = usize::from(self.u8()?) % from.len();
        from.get(i).copied()
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("a literal address")
}

/// UDP clients.
fn clients() -> [SocketAddr; 4] {
    [
        sa("203.0.113.1:40001"),
        sa("203.0.113.1:40002"),
        sa("203.0.113.2:40001"),
        sa("[2001:db8:2::1]:40001"),
    ]
}

/// TCP sources (the proxy first: 10.0.0.0/8 is trusted).
fn sources() -> [SocketAddr; 4] {
    [
        sa("10.0.0.5:51000"),
        sa("203.0.113.7:50000"),
        sa("203.0.113.8:50000"),
        sa("198.18.0.1:50000"),
    ]
}

/// Peers named in requests: allowed ones and denied ones.
fn peers() -> [SocketAddr; 8] {
    [
        sa("198.51.100.1:5000"),
        sa("198.51.100.2:5001"),
        sa("[2001:db8:1::1]:5000"),
        sa("127.0.0.1:80"),
        sa("10.1.2.3:3478"),
        sa("198.51.100.3:0"),
        sa("[::ffff:127.0.0.1]:80"),
        sa("192.0.2.1:3478"),
    ]
}

fn config() -> Config {
    let mut creds = Credentials::new(REALM);
    for (u, p) in USERS {
        creds.add_user(u, p);
    }
    let mut cfg = Config::new(creds, "192.0.2.1".parse().expect("ip"));
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
    cfg.relay_v6 = Some(turnpike_core::config::RelayAddress {
        bind: "2001:db8:ffff::1".parse().expect("ip"),
        advertised: "2001:db8:ffff::1".parse().expect("ip"),
    });
    cfg.proxy_protocol_trusted = vec!["10.0.0.0/8".parse().expect("net")];
    cfg.peer_policy.allow = vec![
        "198.51.100.0/24".parse().expect("net"),
        "2001:db8:1::/48".parse().expect("net"),
    ];
    // Small limits, so that the fuzzer reaches every cap.
    cfg.relay_port_min = 50_000;
    cfg.relay_port_max = 50_007;
    cfg.user_quota = 3;
    cfg.total_quota = 5;
    cfg.max_permissions = 3;
    cfg.max_channels = 3;
    cfg.max_streams = 6;
    cfg.max_streams_per_source = 3;
    cfg.max_bps = 70_000;
    cfg.total_max_bps = 100_000;
    cfg.unauth_amplification_factor = 3;
    cfg.unauth_source_bytes_per_s = 2_000;
    cfg.unauth_node_bytes_per_s = 10_000;
    cfg.stream_max_auth_failures = 4;
    cfg.max_queued_outputs = 1024;
    cfg
}

/// Where an answer goes, for remembering the nonce each client was given.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Udp(SocketAddr),
    Stream(ConnId),
}

struct World {
    server: Server,
    cfg: Config,
    now: Instant,
    /// Open streams and their TCP peer.
    streams: BTreeMap<ConnId, SocketAddr>,
    next_conn: u64,
    /// Relay sockets the server asked for (and did not close): bound yet?
    relays: BTreeMap<RelayId, bool>,
    /// Bind requests not answered yet, oldest first.
    unbound: Vec<RelayId>,
    /// Last (realm, nonce) given to each client.
    nonces: BTreeMap<Dest, (Vec<u8>, Vec<u8>)>,
    /// Allocations per the events.
    live: BTreeSet<u64>,
}

impl World {
    fn new() -> World {
        let cfg = config();
        let now = Instant::from_secs(1_000);
        let mut server = Server::new(cfg.clone(), [7; 32], now).expect("a valid config");
        server.set_wall_clock(now, 1_700_000_000_000);
        World {
            server,
            cfg,
            now,
            streams: BTreeMap::new(),
            next_conn: 1,
            relays: BTreeMap::new(),
            unbound: Vec::new(),
            nonces: BTreeMap::new(),
            live: BTreeSet::new(),
        }
    }

    fn step(&mut self, op: u8, input: &mut Bytes<'_>) {
        match op % 12 {
            0 => {
                let Some(from) = input.pick(&clients()) else {
                    return;
                };
                let n = usize::from(input.u8().unwrap_or(0));
                let bytes = input.take(n).to_vec();
                self.datagram(from, &bytes);
            }
            1..=3 => {
                let Some(from) = input.pick(&clients()) else {
                    return;
                };
                let Some(bytes) = self.request(Dest::Udp(from), input) else {
                    return;
                };
                self.datagram(from, &bytes);
            }
            4 => {
                let Some(remote) = input.pick(&sources()) else {
                    return;
                };
                let listener = if input.u8().unwrap_or(0) & 1 == 0 {
                    TCP
                } else {
                    TCP_PROXY
                };
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                self.streams.insert(conn, remote);
                let local = if listener == TCP {
                    sa("192.0.2.1:3478")
                } else {
                    sa("192.0.2.1:3479")
                };
                self.server
                    .handle_stream_open(self.now, conn, listener, local, remote);
                self.drain(None);
            }
            5 => {
                let Some(conn) = self.pick_stream(input) else {
                    return;
                };
                let n = usize::from(input.u8().unwrap_or(0));
                let bytes = input.take(n).to_vec();
                let cut = usize::from(input.u8().unwrap_or(0));
                self.stream_bytes(conn, &bytes, cut);
            }
            6 | 7 => {
                let Some(conn) = self.pick_stream(input) else {
                    return;
                };
                let Some(bytes) = self.request(Dest::Stream(conn), input) else {
                    return;
                };
                let cut = usize::from(input.u8().unwrap_or(0));
                self.stream_bytes(conn, &bytes, cut);
            }
            8 => {
                let Some(conn) = self.pick_stream(input) else {
                    return;
                };
                if let Some(remote) = self.streams.remove(&conn) {
                    let _ = remote;
                    self.server.handle_stream_closed(self.now, conn);
                    self.drain(None);
                }
            }
            9 => {
                // A PROXY header, v1 or v2, naming one of the clients.
                let Some(conn) = self.pick_stream(input) else {
                    return;
                };
                let Some(client) = input.pick(&clients()) else {
                    return;
                };
                let kind = input.u8().unwrap_or(0);
                let dst = sa("192.0.2.1:3479");
                let dst = if client.is_ipv4() {
                    dst
                } else {
                    sa("[2001:db8:ffff::1]:3479")
                };
                let header = match kind % 4 {
                    0 => proxy_protocol::encode_v1(Some((client, dst))),
                    1 => proxy_protocol::encode_v2(Some((client, dst))),
                    2 => proxy_protocol::encode_v1(None),
                    _ => proxy_protocol::encode_v2(None),
                };
                let cut = usize::from(input.u8().unwrap_or(0));
                self.stream_bytes(conn, &header, cut);
            }
            10 => {
                // A peer datagram on a relay socket.
                let relays: Vec<RelayId> = self.relays.keys().copied().collect();
                let relay = match relays.as_slice() {
                    [] => RelayId(u32::from(input.u8().unwrap_or(0))),
                    r => input.pick(r).unwrap_or(RelayId(0)),
                };
                let Some(from) = input.pick(&peers()) else {
                    return;
                };
                let n = usize::from(input.u16().unwrap_or(0) % 2048);
                let payload = input.take(n).to_vec();
                let mut buf = vec![0xAA; HEADROOM];
                buf.extend_from_slice(&payload);
                buf.extend_from_slice(&[0xAA; TAILROOM]);
                let range = HEADROOM..HEADROOM + payload.len();
                let fwd = self
                    .server
                    .handle_relay_datagram(self.now, relay, from, &mut buf, range);
                if let Some(f) = &fwd {
                    self.check_forward(f, buf.len());
                }
                self.drain(None);
            }
            _ => {
                // Bind results, or time.
                let b = input.u8().unwrap_or(0);
                if b & 0x80 == 0 && !self.unbound.is_empty() {
                    let relay = self.unbound.remove(0);
                    let result = match b % 8 {
                        0 => Err(BindError::AddrInUse),
                        1 => Err(BindError::Other),
                        _ => Ok(()),
                    };
                    if result.is_ok() {
                        self.relays.insert(relay, true);
                    }
                    self.server.handle_relay_bound(self.now, relay, result);
                    self.drain(None);
                } else {
                    let steps = [1, 100, 1_000, 10_000, 30_001, 300_001, 600_001, 3_600_001];
                    let ms = steps[usize::from(b) % steps.len()];
                    self.now = self.now.saturating_add(Duration::from_millis(ms));
                    self.server.handle_timeout(self.now);
                    self.drain(None);
                }
            }
        }
    }

    fn pick_stream(&self, input: &mut Bytes<'_>) -> Option<ConnId> {
        let open: Vec<ConnId> = self.streams.keys().copied().collect();
        let i = usize::from(input.u8()?);
        match open.as_slice() {
            // A stream the server never saw: must be ignored.
            [] => Some(ConnId(10_000 + i as u64)),
            o => o.get(i % o.len()).copied(),
        }
    }

    fn datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let mut buf = vec![0u8; 16];
        buf.extend_from_slice(bytes);
        let len = buf.len();
        let fwd = self
            .server
            .handle_datagram(self.now, UDP, from, &mut buf, 16..len);
        if let Some(f) = &fwd {
            self.check_forward(f, buf.len());
        }
        self.drain(None);
    }

    fn stream_bytes(&mut self, conn: ConnId, bytes: &[u8], cut: usize) {
        let cut = cut.min(bytes.len());
        let (a, b) = bytes.split_at(cut);
        for part in [a, b] {
            if part.is_empty() {
                continue;
            }
            let mut sent = Vec::new();
            self.server
                .handle_stream_data(self.now, conn, part, &mut |relay, peer, payload| {
                    sent.push((relay, peer, payload.len()));
                });
            for (relay, peer, _) in sent {
                assert!(
                    self.relays.get(&relay) == Some(&true),
                    "stream data to relay {relay:?} not bound"
                );
                assert!(
                    self.cfg.peer_policy.check(peer).is_ok(),
                    "stream data to denied peer {peer}"
                );
            }
            self.drain(None);
        }
    }

    /// A request from the grammar, signed with what `dest` was last told (when it was).
    fn request(&mut self, dest: Dest, input: &mut Bytes<'_>) -> Option<Vec<u8>> {
        let kind = input.u8()?;
        let flags = input.u8().unwrap_or(0);
        let mut tid = [0u8; 12];
        tid[0] = input.u8().unwrap_or(0);
        tid[1] = input.u8().unwrap_or(0);
        let tid = TransactionId(tid);
        let peer = input.pick(&peers()).unwrap_or(peers()[0]);
        let (method, class) = match kind % 8 {
            0 => (Method::ALLOCATE, Class::Request),
            1 => (Method::REFRESH, Class::Request),
            2 => (Method::CREATE_PERMISSION, Class::Request),
            3 => (Method::CHANNEL_BIND, Class::Request),
            4 => (Method::BINDING, Class::Request),
            5 => (Method::SEND, Class::Indication),
            6 => {
                // ChannelData, padded to 4 or not.
                let number: u16 = [0x4000, 0x4001, 0x4FFF, 0x5000, 0x3FFF][usize::from(flags) % 5];
                let n = usize::from(input.u8().unwrap_or(0));
                let payload = input.take(n);
                let mut out = number.to_be_bytes().to_vec();
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                out.extend_from_slice(payload);
                if flags & 0x80 != 0 {
                    out.resize(out.len().div_ceil(4) * 4, 0);
                }
                return Some(out);
            }
            _ => (Method(u16::from(kind >> 3) & 0x0FFF), Class::Request),
        };
        let mut b = MessageBuilder::new(method, class, tid);
        match method {
            Method::ALLOCATE => {
                let proto = if flags & 0x10 != 0 {
                    attr::TRANSPORT_TCP
                } else {
                    attr::TRANSPORT_UDP
                };
                if flags & 0x20 == 0 {
                    b.add(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0]);
                }
                match (flags >> 2) & 3 {
                    1 => {
                        b.add(
                            attr::REQUESTED_ADDRESS_FAMILY,
                            &[attr::FAMILY_IPV6, 0, 0, 0],
                        );
                    }
                    2 => {
                        b.add(
                            attr::ADDITIONAL_ADDRESS_FAMILY,
                            &[attr::FAMILY_IPV6, 0, 0, 0],
                        );
                    }
                    3 => {
                        b.add(attr::EVEN_PORT, &[0x80]);
                    }
                    _ => {}
                }
                if flags & 0x40 != 0 {
                    b.add_u32(attr::LIFETIME, u32::from(input.u16().unwrap_or(0)));
                }
            }
            Method::REFRESH => {
                let l = [0u32, 60, 600, 4_000][usize::from(flags) % 4];
                b.add_u32(attr::LIFETIME, l);
            }
            Method::CREATE_PERMISSION => {
                b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
                if flags & 0x10 != 0 {
                    let second = input.pick(&peers()).unwrap_or(peer);
                    b.add_xor_address(attr::XOR_PEER_ADDRESS, second);
                }
            }
            Method::CHANNEL_BIND => {
                let number =
                    [0x4000u16, 0x4001, 0x4FFF, 0x5000, 0x7FFF, 0x3FFF][usize::from(flags) % 6];
                b.add(
                    attr::CHANNEL_NUMBER,
                    &[(number >> 8) as u8, number as u8, 0, 0],
                );
                b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
            }
            Method::SEND => {
                b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
                let n = usize::from(input.u8().unwrap_or(0));
                b.add(attr::DATA, input.take(n));
                if flags & 0x10 != 0 {
                    b.add(attr::DONT_FRAGMENT, &[]);
                }
                return Some(b.finish());
            }
            _ => {}
        }
        if flags & 0x01 != 0 {
            // An attribute of the fuzzer's choice, before the integrity.
            let ty = input.u16().unwrap_or(0);
            let n = usize::from(input.u8().unwrap_or(0) % 64);
            b.add(ty, input.take(n));
        }
        if method != Method::BINDING || flags & 0x02 != 0 {
            let (user, pass) = USERS[usize::from(flags >> 7)];
            let (realm, nonce) = self
                .nonces
                .get(&dest)
                .cloned()
                .unwrap_or_else(|| (REALM.as_bytes().to_vec(), b"no-nonce-yet".to_vec()));
            b.add(attr::USERNAME, user.as_bytes());
            b.add(attr::REALM, &realm);
            b.add(attr::NONCE, &nonce);
            let key = long_term_key(PasswordAlgorithm::Md5, user, REALM, pass);
            if flags & 0x02 == 0 {
                b.add_integrity_sha1(key.as_bytes());
            } else {
                b.add_integrity_sha1(b"a wrong key");
            }
        }
        if flags & 0x04 == 0 {
            b.add_fingerprint();
        }
        Some(b.finish())
    }

    /// Drains every output, checking where each goes.
    fn drain(&mut self, _: Option<()>) {
        let mut n = 0usize;
        while let Some(out) = self.server.poll_output() {
            n += 1;
            assert!(
                n <= self.cfg.max_queued_outputs + 1,
                "more outputs than the queue holds"
            );
            match out {
                Output::Transmit { listener, to, data } => {
                    assert_eq!(listener, UDP, "transmit on a non-UDP listener");
                    assert!(clients().contains(&to), "transmit to unknown {to}");
                    self.learn(Dest::Udp(to), &data);
                }
                Output::StreamWrite { conn, data } => {
                    assert!(
                        self.streams.contains_key(&conn),
                        "write on unknown stream {conn:?}"
                    );
                    self.learn(Dest::Stream(conn), &data);
                }
                Output::CloseStream { conn, .. } => {
                    assert!(
                        self.streams.remove(&conn).is_some(),
                        "close of unknown stream {conn:?}"
                    );
                }
                Output::BindRelay { relay, addr } => {
                    assert!(
                        !self.relays.contains_key(&relay),
                        "relay {relay:?} bound twice"
                    );
                    assert!(
                        (50_000..=50_007).contains(&addr.port()),
                        "relay port {addr}"
                    );
                    self.relays.insert(relay, false);
                    self.unbound.push(relay);
                }
                Output::CloseRelay { relay } => {
                    assert!(
                        self.relays.remove(&relay).is_some(),
                        "close of unknown relay {relay:?}"
                    );
                    self.unbound.retain(|r| *r != relay);
                }
                Output::Event(e) => match e {
                    Event::AllocationCreated { id, .. } => {
                        assert!(self.live.insert(id.0), "allocation {id:?} created twice");
                    }
                    Event::AllocationDeleted { id, .. } => {
                        assert!(self.live.remove(&id.0), "unknown allocation {id:?} deleted");
                    }
                    _ => {}
                },
                Output::ToLoop { .. } => panic!("a server alone sent a loop message"),
            }
        }
    }

    /// An answer must be STUN; remember the realm and nonce it carries.
    fn learn(&mut self, dest: Dest, data: &[u8]) {
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => panic!("the server sent a malformed answer ({e:?}): {data:02x?}"),
        };
        assert!(
            matches!(msg.class(), Class::Success | Class::Error),
            "answer of class {:?}",
            msg.class()
        );
        if let (Some(realm), Some(nonce)) = (msg.get(attr::REALM), msg.get(attr::NONCE)) {
            self.nonces.insert(dest, (realm.to_vec(), nonce.to_vec()));
        }
    }

    fn check_forward(&self, f: &Forward, buf_len: usize) {
        match f {
            Forward::ToPeer { relay, peer, range } => {
                assert!(
                    self.relays.get(relay) == Some(&true),
                    "forward to relay {relay:?} not bound"
                );
                assert!(
                    self.cfg.peer_policy.check(*peer).is_ok(),
                    "forward to denied peer {peer}"
                );
                assert!(range.start <= range.end && range.end <= buf_len);
            }
            Forward::ToClient {
                listener,
                client,
                range,
            } => {
                assert_eq!(*listener, UDP);
                assert!(
                    clients().contains(client),
                    "forward to unknown client {client}"
                );
                assert!(range.start <= range.end && range.end <= buf_len);
            }
            Forward::ToStream { conn, range } => {
                assert!(
                    self.streams.contains_key(conn),
                    "forward to unknown stream {conn:?}"
                );
                assert!(range.start <= range.end && range.end <= buf_len);
            }
        }
    }

    fn check(&self) {
        let s = self.server.stats(self.now);
        assert_eq!(
            s.allocations,
            self.live.len() as u64,
            "allocations vs events"
        );
        assert_eq!(
            s.allocations_created - s.allocations_deleted,
            s.allocations,
            "created - deleted"
        );
        assert_eq!(s.streams, self.streams.len() as u64, "streams open");
        assert!(s.allocations + s.allocations_pending <= u64::from(self.cfg.total_quota));
        assert!(s.streams <= u64::from(self.cfg.max_streams));
        let mut per_user: BTreeMap<String, u32> = BTreeMap::new();
        for a in self.server.allocations(self.now) {
            *per_user.entry(a.username.clone()).or_insert(0) += 1;
            assert!(a.permissions <= self.cfg.max_permissions as usize);
            assert!(a.channels <= self.cfg.max_channels as usize);
            assert!(!a.relayed.is_empty());
        }
        for (u, n) in per_user {
            assert!(n <= self.cfg.user_quota, "user {u} has {n} allocations");
        }
        // Direct sources (not through the proxy) are capped per address.
        let mut per_source: BTreeMap<IpAddr, u32> = BTreeMap::new();
        for remote in self.streams.values() {
            if remote.ip() != sources()[0].ip() {
                *per_source.entry(remote.ip()).or_insert(0) += 1;
            }
        }
        for (ip, n) in per_source {
            assert!(
                n <= self.cfg.max_streams_per_source,
                "{n} streams from {ip}"
            );
        }
    }
}
