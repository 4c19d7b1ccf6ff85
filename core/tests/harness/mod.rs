//! Shared helpers of the property tests, the allocation test and the benchmark: a test
//! configuration, raw authenticated requests (the long-term mechanism of RFC 8489 §9.2 by
//! hand, so the tests control every byte), a driver that answers the core's BindRelay
//! commands, and a counting global allocator type.
//!
//! Each test binary uses a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use turnpike_core::auth::{long_term_key, Credentials, Key, PasswordAlgorithm};
use turnpike_core::cidr::IpNet;
use turnpike_core::config::ListenerConfig;
use turnpike_core::stun::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use turnpike_core::{
    Config, ConnId, Forward, Instant, ListenerId, Output, RelayId, Server, Transport,
};

pub const REALM: &str = "turnpike.test";
/// Two static users.
pub const USERS: [(&str, &str); 2] = [("alice", "alice-secret"), ("bob", "bob-secret")];
/// Two UDP listeners (two 5-tuples for one client address) and a TCP listener.
pub const UDP: ListenerId = ListenerId(1);
pub const UDP2: ListenerId = ListenerId(2);
pub const TCP: ListenerId = ListenerId(3);
/// The relay's IPv4 address.
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The peer of the relay-path tests' channel, and a peer with a permission only.
pub const PEER_CHAN: [u8; 4] = [93, 184, 216, 34];
pub const PEER_PERM: [u8; 4] = [151, 101, 1, 69];
/// The channel bound to PEER_CHAN.
pub const CHANNEL: u16 = 0x4000;
/// A private range the configuration allows (a local media server).
pub const ALLOWED_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);

pub fn sa(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)
}

pub fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

/// The base configuration: two users, the listeners above, one relay address, a generous
/// unauthenticated budget (the tests send many 401s from one source, also on streams) and an allowed
/// private range.
pub fn config() -> Config {
    let mut creds = Credentials::new(REALM);
    for (u, p) in USERS {
        creds.add_user(u, p);
    }
    let mut c = Config::new(creds, IpAddr::V4(RELAY_IP));
    let local = |port| sa([192, 0, 2, 1], port);
    c.listeners = vec![
        ListenerConfig {
            id: UDP,
            transport: Transport::Udp,
            local: local(3478),
            proxy_protocol: false,
        },
        ListenerConfig {
            id: UDP2,
            transport: Transport::Udp,
            local: local(3479),
            proxy_protocol: false,
        },
        ListenerConfig {
            id: TCP,
            transport: Transport::Tcp,
            local: local(3478),
            proxy_protocol: false,
        },
    ];
    c.unauth_amplification_factor = 10;
    c.unauth_source_bytes_per_s = 1 << 40;
    c.unauth_node_bytes_per_s = 1 << 40;
    c.stream_max_auth_failures = 0;
    c.peer_policy.allow = vec![IpNet::new(IpAddr::V4(ALLOWED_PRIVATE), 32).expect("valid net")];
    c
}

/// The MD5 long-term key of user `i` of [`USERS`].
pub fn user_key(i: usize) -> Key {
    let (u, p) = USERS[i];
    long_term_key(PasswordAlgorithm::Md5, u, REALM, p)
}

/// What a request is signed with: a username, its key, and the nonce of a 401.
#[derive(Clone, Debug)]
pub struct Cred {
    pub username: String,
    pub key: Key,
    pub nonce: Vec<u8>,
}

impl Cred {
    pub fn user(i: usize, nonce: &[u8]) -> Cred {
        Cred {
            username: USERS[i].0.to_string(),
            key: user_key(i),
            nonce: nonce.to_vec(),
        }
    }
}

/// A transaction id from a counter.
pub fn tid(n: u64) -> TransactionId {
    let mut t = [0u8; 12];
    t[4..].copy_from_slice(&n.to_be_bytes());
    t[0] = 0x7e;
    TransactionId(t)
}

/// A request: `attrs` adds the method's attributes, then USERNAME, REALM, NONCE and
/// MESSAGE-INTEGRITY when `cred` is given (RFC 8489 §9.2.3), then FINGERPRINT.
pub fn request(
    method: Method,
    t: TransactionId,
    cred: Option<&Cred>,
    attrs: impl FnOnce(&mut MessageBuilder),
) -> Vec<u8> {
    let mut b = MessageBuilder::new(method, Class::Request, t);
    attrs(&mut b);
    if let Some(c) = cred {
        b.add(attr::USERNAME, c.username.as_bytes());
        b.add(attr::REALM, REALM.as_bytes());
        b.add(attr::NONCE, &c.nonce);
        b.add_integrity_sha1(c.key.as_bytes());
    }
    b.add_fingerprint();
    b.finish()
}

/// Allocate attributes: REQUESTED-TRANSPORT UDP.
pub fn udp_transport(b: &mut MessageBuilder) {
    b.add(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
}

/// A Send indication to `peer` carrying `data` (RFC 8656 §11.1).
pub fn send_indication(t: TransactionId, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::new(Method::SEND, Class::Indication, t);
    b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
    b.add(attr::DATA, data);
    b.finish()
}

/// A ChannelData message (RFC 8656 §12.4), padded to 4 bytes when `padded` (streams).
pub fn channel_data(number: u16, payload: &[u8], padded: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(&number.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    if padded {
        while v.len() % 4 != 0 {
            v.push(0);
        }
    }
    v
}

/// The parts of an answer the tests look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub tid: TransactionId,
    pub method: Method,
    pub class: Class,
    pub code: Option<u16>,
    pub nonce: Option<Vec<u8>>,
    pub relayed: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    pub lifetime: Option<u32>,
}

impl Answer {
    /// 0 for a success, else the error code (the model's way of naming an outcome).
    pub fn outcome(&self) -> u16 {
        match self.class {
            Class::Success => 0,
            _ => self.code.unwrap_or(1),
        }
    }
}

/// Parses one answer; panics on bytes that are not a STUN response (a server bug).
pub fn parse_answer(bytes: &[u8]) -> Answer {
    let m = Message::parse(bytes).expect("the server sent a well-formed STUN message");
    let t = m.transaction_id();
    Answer {
        tid: t,
        method: m.method(),
        class: m.class(),
        code: m
            .get(attr::ERROR_CODE)
            .map(|v| attr::decode_error_code(v).expect("ERROR-CODE").0),
        nonce: m.get(attr::NONCE).map(<[u8]>::to_vec),
        relayed: m
            .get(attr::XOR_RELAYED_ADDRESS)
            .map(|v| attr::decode_xor_address(v, &t).expect("XOR-RELAYED-ADDRESS")),
        mapped: m
            .get(attr::XOR_MAPPED_ADDRESS)
            .map(|v| attr::decode_xor_address(v, &t).expect("XOR-MAPPED-ADDRESS")),
        lifetime: m
            .get(attr::LIFETIME)
            .map(|v| attr::decode_u32(v).expect("LIFETIME")),
    }
}

/// Splits stream bytes into the STUN messages written back to back.
pub fn split_stun(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while bytes.len() >= 20 {
        let len = 20 + usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let (msg, rest) = bytes.split_at(len.min(bytes.len()));
        out.push(msg);
        bytes = rest;
    }
    assert!(bytes.is_empty(), "a stream write ends mid-message");
    out
}

/// Payloads handed to the stream sink: relay socket, peer, bytes.
pub type Relayed = Vec<(RelayId, SocketAddr, Vec<u8>)>;

/// A server under test with its clock; BindRelay commands are answered at once.
pub struct Rig {
    pub server: Server,
    pub now: Instant,
}

impl Rig {
    pub fn new(cfg: Config) -> Rig {
        Rig::with_seed(cfg, [7; 32])
    }

    pub fn with_seed(cfg: Config, seed: [u8; 32]) -> Rig {
        let now = secs(1_000);
        let mut server = Server::new(cfg, seed, now).expect("valid configuration");
        server.set_wall_clock(now, 1_700_000_000_000);
        Rig { server, now }
    }

    /// Drains the outputs, answering every BindRelay with success (the answers' own
    /// outputs included). Returns everything drained, BindRelay commands included.
    pub fn drain(&mut self) -> Vec<Output> {
        let mut all = Vec::new();
        while let Some(o) = self.server.poll_output() {
            if let Output::BindRelay { relay, .. } = o {
                self.server.handle_relay_bound(self.now, relay, Ok(()));
            }
            all.push(o);
        }
        all
    }

    /// A UDP datagram; returns the forward and the drained outputs.
    pub fn udp(
        &mut self,
        listener: ListenerId,
        from: SocketAddr,
        bytes: &[u8],
    ) -> (Option<Forward>, Vec<Output>) {
        let mut buf = bytes.to_vec();
        let n = buf.len();
        let f = self
            .server
            .handle_datagram(self.now, listener, from, &mut buf, 0..n);
        (f, self.drain())
    }

    /// A UDP request that must get exactly one answer, to its sender.
    pub fn udp_request(&mut self, listener: ListenerId, from: SocketAddr, bytes: &[u8]) -> Answer {
        let (f, outs) = self.udp(listener, from, bytes);
        assert!(f.is_none(), "a request is not relayed");
        let answers: Vec<Answer> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Transmit {
                    listener: l,
                    to,
                    data,
                } => {
                    assert_eq!((*l, *to), (listener, from), "answer to the sender");
                    Some(parse_answer(data))
                }
                _ => None,
            })
            .collect();
        assert_eq!(answers.len(), 1, "one answer: {outs:?}");
        answers.into_iter().next().expect("one answer")
    }

    /// The 401 round of a UDP client: the nonce to sign with.
    pub fn udp_nonce(
        &mut self,
        listener: ListenerId,
        from: SocketAddr,
        t: TransactionId,
    ) -> Vec<u8> {
        let a = self.udp_request(
            listener,
            from,
            &request(Method::ALLOCATE, t, None, udp_transport),
        );
        assert_eq!(a.code, Some(401));
        a.nonce.expect("a 401 carries a NONCE")
    }

    /// 401 round and Allocate for a UDP client: its credentials and relayed address.
    pub fn udp_allocate(
        &mut self,
        listener: ListenerId,
        from: SocketAddr,
        user: usize,
        t: u64,
    ) -> (Cred, SocketAddr) {
        let nonce = self.udp_nonce(listener, from, tid(t));
        let cred = Cred::user(user, &nonce);
        let a = self.udp_request(
            listener,
            from,
            &request(Method::ALLOCATE, tid(t + 1), Some(&cred), udp_transport),
        );
        assert_eq!(a.class, Class::Success, "{a:?}");
        (cred, a.relayed.expect("XOR-RELAYED-ADDRESS"))
    }

    /// Opens stream `conn` from `remote` on the TCP listener.
    pub fn open_stream(&mut self, conn: ConnId, remote: SocketAddr) {
        self.server
            .handle_stream_open(self.now, conn, TCP, sa([192, 0, 2, 1], 3478), remote);
    }

    /// Bytes on a stream; returns the relayed payloads and the drained outputs.
    pub fn stream(&mut self, conn: ConnId, bytes: &[u8]) -> (Relayed, Vec<Output>) {
        let mut relayed = Vec::new();
        self.server
            .handle_stream_data(self.now, conn, bytes, &mut |r, p, d| {
                relayed.push((r, p, d.to_vec()))
            });
        (relayed, self.drain())
    }

    /// A stream request that must get exactly one answer.
    pub fn stream_request(&mut self, conn: ConnId, bytes: &[u8]) -> Answer {
        let (_, outs) = self.stream(conn, bytes);
        let answers: Vec<Answer> = outs
            .iter()
            .filter_map(|o| match o {
                Output::StreamWrite { conn: c, data } => {
                    assert_eq!(*c, conn);
                    Some(
                        split_stun(data)
                            .into_iter()
                            .map(parse_answer)
                            .collect::<Vec<_>>(),
                    )
                }
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(answers.len(), 1, "one answer: {outs:?}");
        answers.into_iter().next().expect("one answer")
    }

    /// The relay socket of relayed address `relayed`, from the BindRelay commands seen.
    pub fn relay_of(outs: &[Output], relayed: SocketAddr) -> Option<RelayId> {
        outs.iter().find_map(|o| match o {
            Output::BindRelay { relay, addr } if addr.port() == relayed.port() => Some(*relay),
            _ => None,
        })
    }
}

// ---- a counting allocator ---------------------------------------------------------------

thread_local! {
    /// Allocation calls (alloc, alloc_zeroed, realloc) made by this thread.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

/// A global allocator that forwards to the system allocator and counts, per thread, the
/// allocation calls and the bytes live. Per thread, so tests running in parallel in one
/// binary do not see each other's allocations. Each binary that wants it declares
/// `#[global_allocator] static A: Counting = Counting;`.
pub struct Counting;

fn note(allocs: u64, bytes: i64) {
    // `try_with`: during thread teardown the slots may be gone; counting then stops.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + allocs));
    let _ = LIVE.try_with(|c| c.set(c.get() + bytes));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// contract of `GlobalAlloc` is exactly System's; the counting touches only thread-local
// `Cell`s with const initialisers (no allocation, no destructor, no re-entrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as i64);
        // SAFETY: same layout as given to us.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as i64);
        // SAFETY: same layout as given to us.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as i64));
        // SAFETY: `ptr` came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, new_size as i64 - layout.size() as i64);
        // SAFETY: `ptr` came from System with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocation calls made by this thread so far.
pub fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Bytes this thread holds (allocated minus freed) so far.
pub fn live_bytes() -> i64 {
    LIVE.with(Cell::get)
}

/// Gives the UDP client at `client` an allocation (with the 401 round), a permission for
/// PEER_PERM and CHANNEL bound to PEER_CHAN; returns its credentials and relay socket.
pub fn udp_session_with_channel(rig: &mut Rig, client: SocketAddr) -> (Cred, RelayId) {
    let nonce = rig.udp_nonce(UDP, client, tid(1));
    let cred = Cred::user(0, &nonce);
    let (_, outs) = rig.udp(
        UDP,
        client,
        &request(Method::ALLOCATE, tid(2), Some(&cred), udp_transport),
    );
    let relay = outs
        .iter()
        .find_map(|o| match o {
            Output::BindRelay { relay, .. } => Some(*relay),
            _ => None,
        })
        .expect("a relay socket");
    let a = rig.udp_request(
        UDP,
        client,
        &request(Method::CREATE_PERMISSION, tid(3), Some(&cred), |b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_PERM, 5000));
        }),
    );
    assert_eq!(a.outcome(), 0);
    let a = rig.udp_request(
        UDP,
        client,
        &request(Method::CHANNEL_BIND, tid(4), Some(&cred), |b| {
            b.add_u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_CHAN, 6000));
        }),
    );
    assert_eq!(a.outcome(), 0);
    (cred, relay)
}
