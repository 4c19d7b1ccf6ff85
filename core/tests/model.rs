//! A model-based property test of the TURN server (RFC 8656 §7–§12).
//!
//! A reference model, plain structs and ordered maps, keeps what the RFC says a server
//! knows: allocations with their lifetimes, permissions (per IP), channels (with the
//! 5-minute cooldown of §12), the user and total quotas, the relay port pool with its
//! quarantine, stream idle timers and the 40-second answer cache of RFC 8489 §6.3.1.
//! Random sequences of requests from five clients (three UDP 5-tuples, two streams, two
//! usernames, a wrong password now and then), interleaved with relayed data, stream
//! closes and time advances, are fed to both; the model predicts the exact outcome of
//! every request, and after every step the server's counters, port pool and outputs are
//! checked against it.

mod harness;

use core::time::Duration;
use harness::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::auth::{long_term_key, PasswordAlgorithm};
use turnpike_core::event::{CloseReason, DeleteReason, Event};
use turnpike_core::stun::{attr, Class, Message, Method, TransactionId};
use turnpike_core::{
    AllocationId, Config, ConnId, Forward, Instant, ListenerId, Output, RelayId, HEADROOM, TAILROOM,
};

// ---- the configuration under test: small, so every limit is reached ---------------------

const PORT_MIN: u16 = 50_000;
const PORTS: u32 = 4;
const QUARANTINE_S: u64 = 20;
const USER_QUOTA: usize = 2;
const TOTAL_QUOTA: usize = 3;
const MAX_PERMS: usize = 2;
const MAX_CHANS: usize = 2;
const DEFAULT_LIFE_S: u32 = 100;
const MAX_LIFE_S: u32 = 200;
const PERM_LIFE_S: u64 = 30;
const CHAN_LIFE_S: u64 = 45;
/// RFC 8656 §12: a channel's number and peer stay tied for 5 minutes after it expired.
const COOLDOWN_S: u64 = 300;
const IDLE_S: u64 = 25;
/// RFC 8489 §6.3.1: answers are kept 40 s for retransmissions.
const CACHE_S: u64 = 40;

fn model_config() -> Config {
    let mut c = config();
    c.relay_port_min = PORT_MIN;
    c.relay_port_max = PORT_MIN + PORTS as u16 - 1;
    c.relay_port_quarantine = Duration::from_secs(QUARANTINE_S);
    c.user_quota = USER_QUOTA as u32;
    c.total_quota = TOTAL_QUOTA as u32;
    c.max_permissions = MAX_PERMS as u32;
    c.max_channels = MAX_CHANS as u32;
    c.default_lifetime = Duration::from_secs(u64::from(DEFAULT_LIFE_S));
    c.max_lifetime = Duration::from_secs(u64::from(MAX_LIFE_S));
    c.permission_lifetime = Duration::from_secs(PERM_LIFE_S);
    c.channel_lifetime = Duration::from_secs(CHAN_LIFE_S);
    c.stream_idle_timeout = Duration::from_secs(IDLE_S);
    // Nonces never go stale here: 438 is another test's business.
    c.nonce_lifetime = Duration::from_secs(100_000_000);
    c
}

/// Peers: 0–3 allowed (two share an IP; 3 is private but allowed by the configuration),
/// 4, 5 and 7 denied (loopback, RFC 1918, documentation), 6 IPv6 (443 on an IPv4
/// allocation).
const PEERS: [&str; 8] = [
    "93.184.216.34:5000",
    "93.184.216.34:5001",
    "151.101.1.69:6000",
    "10.1.2.3:7000",
    "127.0.0.1:8000",
    "192.168.1.1:9000",
    "[2001:4860::8888]:5000",
    "198.51.100.7:4000",
];

fn peer(i: usize) -> SocketAddr {
    PEERS[i].parse().expect("a peer address")
}

fn denied(i: usize) -> bool {
    matches!(i, 4 | 5 | 7)
}

fn is_v6(i: usize) -> bool {
    i == 6
}

/// How a client reaches the server.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Udp(ListenerId, SocketAddr),
    Stream(SocketAddr),
}

const CLIENTS: usize = 5;

/// Client 0 and 2 share an address on two UDP listeners (two 5-tuples); 3 and 4 are
/// streams. Client `c`'s own user is `c % 2`, so alice has three clients for a quota of 2.
fn kind(c: usize) -> Kind {
    match c {
        0 => Kind::Udp(UDP, sa([5, 0, 0, 1], 1000)),
        1 => Kind::Udp(UDP, sa([5, 0, 0, 2], 1000)),
        2 => Kind::Udp(UDP2, sa([5, 0, 0, 1], 1000)),
        3 => Kind::Stream(sa([5, 0, 0, 3], 2000)),
        _ => Kind::Stream(sa([5, 0, 0, 4], 2000)),
    }
}

// ---- operations ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Who {
    Home,
    Other,
    BadPassword,
}

#[derive(Clone, Debug)]
enum Req {
    Allocate {
        transport: Option<u8>,
        lifetime: Option<u32>,
    },
    Refresh {
        lifetime: Option<u32>,
        family: Option<u8>,
    },
    Permission {
        peers: Vec<usize>,
    },
    Bind {
        number: u16,
        peer: usize,
    },
}

#[derive(Clone, Debug)]
enum Op {
    Request {
        c: usize,
        who: Who,
        req: Req,
    },
    Retransmit {
        c: usize,
    },
    /// `pick`: use the client's `pick`-th channel (or permitted peer) if it has any, so
    /// that data often finds what earlier requests installed.
    ChannelData {
        c: usize,
        number: u16,
        pick: Option<u8>,
    },
    Send {
        c: usize,
        peer: usize,
        pick: Option<u8>,
    },
    PeerData {
        c: usize,
        peer: usize,
        pick: Option<u8>,
    },
    Close {
        c: usize,
    },
    Advance {
        s: u64,
    },
}

fn peer_index() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0..4usize, 2 => 4..PEERS.len()]
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![8 => Just(Who::Home), 2 => Just(Who::Other), 1 => Just(Who::BadPassword)]
}

fn req() -> impl Strategy<Value = Req> {
    let transport = prop_oneof![
        8 => Just(Some(attr::TRANSPORT_UDP)),
        1 => Just(Some(attr::TRANSPORT_TCP)),
        1 => Just(None)
    ];
    let lifetime = prop::option::of(prop::sample::select(vec![0u32, 30, 150, 1000]));
    let family = prop_oneof![
        6 => Just(None),
        1 => Just(Some(attr::FAMILY_IPV4)),
        1 => Just(Some(attr::FAMILY_IPV6))
    ];
    let number = prop_oneof![
        8 => 0x4000u16..0x4003,
        1 => prop::sample::select(vec![0x3fffu16, 0x5000, 0x8000])
    ];
    prop_oneof![
        4 => (transport, lifetime.clone())
            .prop_map(|(transport, lifetime)| Req::Allocate { transport, lifetime }),
        2 => (prop::option::of(prop::sample::select(vec![0u32, 0, 30, 150, 1000])), family)
            .prop_map(|(lifetime, family)| Req::Refresh { lifetime, family }),
        3 => prop::collection::vec(peer_index(), 0..=3)
            .prop_map(|peers| Req::Permission { peers }),
        3 => (number, peer_index()).prop_map(|(number, peer)| Req::Bind { number, peer }),
    ]
}

fn pick() -> impl Strategy<Value = Option<u8>> {
    prop::option::weighted(0.7, any::<u8>())
}

/// Up to 40 steps; most sequences start with the busy clients allocating, so that the
/// steps after find something to work on (requests on no allocation, 437, are plenty
/// anyway).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let prologue = |c| Op::Request {
        c,
        who: Who::Home,
        req: Req::Allocate {
            transport: Some(attr::TRANSPORT_UDP),
            lifetime: None,
        },
    };
    (
        prop::bool::weighted(0.7),
        prop::collection::vec(op(), 1..=38),
    )
        .prop_map(move |(start, ops)| {
            let mut v = if start {
                vec![prologue(0), prologue(3)]
            } else {
                Vec::new()
            };
            v.extend(ops);
            v
        })
}

/// Clients 0 (UDP) and 3 (stream) are busy, the others occasional: a busy client builds
/// up permissions and channels that data can then use; the others bring the quotas, the
/// shared address and 441 into play.
fn client() -> impl Strategy<Value = usize> {
    prop_oneof![5 => Just(0usize), 2 => Just(1), 1 => Just(2), 4 => Just(3), 1 => Just(4)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        14 => (client(), who(), req()).prop_map(|(c, who, req)| Op::Request { c, who, req }),
        1 => client().prop_map(|c| Op::Retransmit { c }),
        3 => (client(), 0x4000u16..0x4003, pick())
            .prop_map(|(c, number, pick)| Op::ChannelData { c, number, pick }),
        2 => (client(), peer_index(), pick()).prop_map(|(c, peer, pick)| Op::Send { c, peer, pick }),
        3 => (client(), 0..4usize, pick())
            .prop_map(|(c, peer, pick)| Op::PeerData { c, peer, pick }),
        1 => (3..CLIENTS).prop_map(|c| Op::Close { c }),
        // Mostly short steps, so that state builds up; long ones now and then, so that
        // allocations, permissions, channels and their cooldowns expire.
        3 => prop_oneof![
            4 => prop::sample::select(vec![1u64, 5, 10]),
            2 => prop::sample::select(vec![20u64, 30, 45, 65]),
            1 => prop::sample::select(vec![90u64, 130, 210, 310]),
        ]
        .prop_map(|s| Op::Advance { s }),
    ]
}

// ---- the model ----------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MChannel {
    number: u16,
    peer: usize,
    expires: Instant,
}

#[derive(Clone, Debug)]
struct MAllocation {
    user: usize,
    expires: Instant,
    /// Live permissions by peer IP (expired ones are dropped at each time advance, as the
    /// server drops them at its timeout).
    perms: BTreeMap<IpAddr, Instant>,
    /// Channels, live or cooling down.
    chans: Vec<MChannel>,
    /// Learnt from the server when the allocation is made.
    id: AllocationId,
    relay: RelayId,
    port: u16,
}

impl MAllocation {
    fn live_channel_by_number(&self, number: u16, now: Instant) -> Option<&MChannel> {
        self.chans
            .iter()
            .find(|ch| ch.number == number && now < ch.expires)
    }
    fn live_channel_by_peer(&self, peer: usize, now: Instant) -> Option<&MChannel> {
        self.chans
            .iter()
            .find(|ch| ch.peer == peer && now < ch.expires)
    }
}

/// The last authenticated request of a client, for retransmissions.
#[derive(Clone, Debug)]
struct Last {
    who: Who,
    req: Req,
    tid: TransactionId,
    bytes: Vec<u8>,
    /// The stream it went on (the cache is per 5-tuple).
    conn: Option<ConnId>,
    /// Until when the server keeps the answer, if it keeps it.
    cached_until: Option<Instant>,
    answer: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
struct MClient {
    /// Streams: the open connection.
    conn: Option<ConnId>,
    /// Streams without allocation: when the idle timer closes them.
    idle: Option<Instant>,
    alloc: Option<MAllocation>,
    last: Option<Last>,
    /// The relay socket of the latest allocation, kept after it ends (late peer data).
    last_relay: Option<RelayId>,
    nonce: Vec<u8>,
}

/// What a step must produce besides answers.
#[derive(Debug, Default)]
struct Expect {
    /// Allocations ended: (id, relay, reason).
    deleted: Vec<(AllocationId, RelayId, DeleteReason)>,
    /// Streams the core closes.
    closed: Vec<(ConnId, CloseReason)>,
    /// An allocation was made (one BindRelay).
    created: Option<usize>,
    /// The LIFETIME a success answer carries (Allocate, Refresh).
    lifetime: Option<u32>,
}

struct Model {
    now: Instant,
    clients: Vec<MClient>,
    /// Quarantined relay ports: when each is free again.
    quarantine: Vec<Instant>,
}

impl Model {
    fn allocations(&self) -> impl Iterator<Item = &MAllocation> {
        self.clients.iter().filter_map(|c| c.alloc.as_ref())
    }

    fn free_ports(&self) -> usize {
        PORTS as usize - self.allocations().count() - self.quarantine.len()
    }

    /// RFC 8656 §7.2 / §8: the default when less is asked, never more than the maximum.
    fn grant(lifetime: Option<u32>) -> u32 {
        lifetime
            .unwrap_or(DEFAULT_LIFE_S)
            .clamp(DEFAULT_LIFE_S, MAX_LIFE_S)
    }

    fn delete(&mut self, c: usize, reason: DeleteReason, exp: &mut Expect) {
        let now = self.now;
        let cl = &mut self.clients[c];
        let Some(a) = cl.alloc.take() else { return };
        exp.deleted.push((a.id, a.relay, reason));
        cl.last_relay = Some(a.relay);
        if matches!(kind(c), Kind::Stream(_)) && cl.conn.is_some() {
            cl.idle = Some(now + Duration::from_secs(IDLE_S));
        }
        self.quarantine
            .push(now + Duration::from_secs(QUARANTINE_S));
    }

    /// The outcome of a request that is not answered from the cache: 0 for success, else
    /// the error code. Applies the request's effects.
    fn request(&mut self, c: usize, who: Who, req: &Req, exp: &mut Expect) -> u16 {
        let now = self.now;
        let home = c % 2;
        // RFC 8489 §9.2.4: a wrong password is a 401 whatever else is wrong.
        let user = match who {
            Who::BadPassword => return 401,
            Who::Home => home,
            Who::Other => 1 - home,
        };
        // RFC 8656 §5: requests on an allocation must use its credentials.
        if self.clients[c]
            .alloc
            .as_ref()
            .is_some_and(|a| a.user != user)
        {
            return 441;
        }
        match req {
            Req::Allocate {
                transport,
                lifetime,
            } => {
                // §7.2 step 2: the 5-tuple already has an allocation.
                if self.clients[c].alloc.is_some() {
                    return 437;
                }
                // §7.2 step 3: REQUESTED-TRANSPORT.
                match *transport {
                    None => return 400,
                    Some(attr::TRANSPORT_UDP) => {}
                    Some(_) => return 442,
                }
                // §7.2 step 8: quotas (486), then capacity (508).
                if self.allocations().filter(|a| a.user == user).count() >= USER_QUOTA {
                    return 486;
                }
                if self.allocations().count() >= TOTAL_QUOTA || self.free_ports() == 0 {
                    return 508;
                }
                exp.lifetime = Some(Self::grant(*lifetime));
                let life = Duration::from_secs(u64::from(Self::grant(*lifetime)));
                self.clients[c].alloc = Some(MAllocation {
                    user,
                    expires: now + life,
                    perms: BTreeMap::new(),
                    chans: Vec::new(),
                    id: AllocationId(0),
                    relay: RelayId(0),
                    port: 0,
                });
                self.clients[c].idle = None;
                exp.created = Some(c);
                0
            }
            Req::Refresh { lifetime, family } => {
                if self.clients[c].alloc.is_none() {
                    return 437;
                }
                if *family == Some(attr::FAMILY_IPV6) {
                    return 443;
                }
                if *lifetime == Some(0) {
                    self.delete(c, DeleteReason::Refreshed0, exp);
                    exp.lifetime = Some(0);
                    return 0;
                }
                exp.lifetime = Some(Self::grant(*lifetime));
                let life = Duration::from_secs(u64::from(Self::grant(*lifetime)));
                if let Some(a) = self.clients[c].alloc.as_mut() {
                    a.expires = now + life;
                }
                0
            }
            Req::Permission { peers } => {
                let Some(a) = self.clients[c].alloc.as_mut() else {
                    return 437;
                };
                if peers.is_empty() {
                    return 400;
                }
                if peers.iter().any(|p| is_v6(*p)) {
                    return 443;
                }
                if peers.iter().any(|p| denied(*p)) {
                    return 403;
                }
                let ips: BTreeSet<IpAddr> = peers.iter().map(|p| peer(*p).ip()).collect();
                let new = ips.iter().filter(|ip| !a.perms.contains_key(ip)).count();
                if a.perms.len() + new > MAX_PERMS {
                    return 508;
                }
                let until = now + Duration::from_secs(PERM_LIFE_S);
                for ip in ips {
                    let e = a.perms.entry(ip).or_insert(until);
                    *e = (*e).max(until);
                }
                0
            }
            Req::Bind { number, peer: p } => {
                let Some(a) = self.clients[c].alloc.as_mut() else {
                    return 437;
                };
                // The RFC 5766 range by default (`strict_channel_numbers` is off).
                if !(0x4000..=0x7fff).contains(number) {
                    return 400;
                }
                if is_v6(*p) {
                    return 443;
                }
                if denied(*p) {
                    return 403;
                }
                // §12.2: a number bound to another peer, or the peer to another number,
                // live or cooling down.
                if a.chans
                    .iter()
                    .any(|ch| (ch.number == *number) != (ch.peer == *p))
                {
                    return 400;
                }
                let ip = peer(*p).ip();
                let new_chan = !a.chans.iter().any(|ch| ch.number == *number);
                let new_perm = !a.perms.contains_key(&ip);
                if (new_chan && a.chans.len() >= MAX_CHANS)
                    || (new_perm && a.perms.len() >= MAX_PERMS)
                {
                    return 508;
                }
                let until = now + Duration::from_secs(CHAN_LIFE_S);
                match a
                    .chans
                    .iter_mut()
                    .find(|ch| ch.number == *number && ch.peer == *p)
                {
                    Some(ch) => ch.expires = until,
                    None => a.chans.push(MChannel {
                        number: *number,
                        peer: *p,
                        expires: until,
                    }),
                }
                let until = now + Duration::from_secs(PERM_LIFE_S);
                let e = a.perms.entry(ip).or_insert(until);
                *e = (*e).max(until);
                0
            }
        }
    }

    /// Time passes to `to`: quarantined ports come back, allocations, permissions and
    /// channel cooldowns expire, idle streams close.
    fn advance(&mut self, to: Instant, exp: &mut Expect) {
        self.now = to;
        self.quarantine.retain(|until| *until > to);
        for c in 0..CLIENTS {
            if self.clients[c]
                .alloc
                .as_ref()
                .is_some_and(|a| a.expires <= to)
            {
                self.delete(c, DeleteReason::Expired, exp);
                continue;
            }
            let cl = &mut self.clients[c];
            if let Some(a) = cl.alloc.as_mut() {
                a.perms.retain(|_, until| *until > to);
                let cooldown = Duration::from_secs(COOLDOWN_S);
                a.chans.retain(|ch| to < ch.expires + cooldown);
            } else if let (Some(conn), Some(idle)) = (cl.conn, cl.idle) {
                if idle <= to {
                    exp.closed.push((conn, CloseReason::Idle));
                    cl.conn = None;
                    cl.idle = None;
                }
            }
        }
    }
}

// ---- the driver -----------------------------------------------------------------------------

struct Run {
    /// What happened, by kind (outcome codes, relay decisions, deletions): for the
    /// coverage checks.
    seen: BTreeMap<String, u64>,
    rig: Rig,
    model: Model,
    next_tid: u64,
    next_conn: u64,
}

impl Run {
    fn new() -> Run {
        let rig = Rig::new(model_config());
        let now = rig.now;
        let mut run = Run {
            seen: BTreeMap::new(),
            rig,
            model: Model {
                now,
                clients: vec![MClient::default(); CLIENTS],
                quarantine: Vec::new(),
            },
            next_tid: 1,
            next_conn: 1,
        };
        // The 401 round of every client (RFC 8489 §9.2.4: the first request has no
        // credentials and learns the nonce).
        for c in 0..CLIENTS {
            let mut exp = Expect::default();
            run.ensure_open(c);
            let t = run.tid();
            let bytes = request(Method::ALLOCATE, t, None, udp_transport);
            let (answer, _, outs) = run.send_request(c, &bytes);
            let a = parse_answer(&answer);
            assert_eq!((a.tid, a.outcome()), (t, 401));
            run.model.clients[c].nonce = a.nonce.expect("NONCE in a 401");
            run.check_outputs(&outs, &mut exp, Some(c));
        }
        run
    }

    fn note(&mut self, what: impl Into<String>) {
        *self.seen.entry(what.into()).or_insert(0) += 1;
    }

    fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        tid(self.next_tid)
    }

    /// A stream client whose stream was closed connects again.
    fn ensure_open(&mut self, c: usize) {
        let Kind::Stream(remote) = kind(c) else {
            return;
        };
        if self.model.clients[c].conn.is_some() {
            return;
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.rig.open_stream(conn, remote);
        let now = self.model.now;
        let cl = &mut self.model.clients[c];
        cl.conn = Some(conn);
        cl.idle = Some(now + Duration::from_secs(IDLE_S));
        assert_eq!(
            self.rig.server.poll_output(),
            None,
            "opening a stream is silent"
        );
    }

    fn cred(&self, c: usize, who: Who) -> Cred {
        let nonce = &self.model.clients[c].nonce;
        let home = c % 2;
        match who {
            Who::Home => Cred::user(home, nonce),
            Who::Other => Cred::user(1 - home, nonce),
            Who::BadPassword => {
                let name = USERS[home].0;
                Cred {
                    username: name.to_string(),
                    key: long_term_key(PasswordAlgorithm::Md5, name, REALM, "not-the-password"),
                    nonce: nonce.clone(),
                }
            }
        }
    }

    fn build(&self, c: usize, who: Who, req: &Req, t: TransactionId) -> Vec<u8> {
        let cred = self.cred(c, who);
        match req {
            Req::Allocate {
                transport,
                lifetime,
            } => request(Method::ALLOCATE, t, Some(&cred), |b| {
                if let Some(tr) = transport {
                    b.add(attr::REQUESTED_TRANSPORT, &[*tr, 0, 0, 0]);
                }
                if let Some(l) = lifetime {
                    b.add_u32(attr::LIFETIME, *l);
                }
            }),
            Req::Refresh { lifetime, family } => request(Method::REFRESH, t, Some(&cred), |b| {
                if let Some(l) = lifetime {
                    b.add_u32(attr::LIFETIME, *l);
                }
                if let Some(f) = family {
                    b.add(attr::REQUESTED_ADDRESS_FAMILY, &[*f, 0, 0, 0]);
                }
            }),
            Req::Permission { peers } => request(Method::CREATE_PERMISSION, t, Some(&cred), |b| {
                for p in peers {
                    b.add_xor_address(attr::XOR_PEER_ADDRESS, peer(*p));
                }
            }),
            Req::Bind { number, peer: p } => request(Method::CHANNEL_BIND, t, Some(&cred), |b| {
                b.add_u32(attr::CHANNEL_NUMBER, u32::from(*number) << 16);
                b.add_xor_address(attr::XOR_PEER_ADDRESS, peer(*p));
            }),
        }
    }

    /// Sends a request from client `c` and returns its one answer, what it relayed and
    /// the other outputs. Fails unless exactly one answer came, to `c`.
    fn send_request(&mut self, c: usize, bytes: &[u8]) -> (Vec<u8>, Relayed, Vec<Output>) {
        let (relayed, outs) = match kind(c) {
            Kind::Udp(listener, from) => {
                let (f, outs) = self.rig.udp(listener, from, bytes);
                assert_eq!(f, None, "a request is not relayed");
                (Vec::new(), outs)
            }
            Kind::Stream(_) => {
                let conn = self.model.clients[c].conn.expect("an open stream");
                self.rig.stream(conn, bytes)
            }
        };
        let answers = self.answers_to(c, &outs);
        assert_eq!(answers.len(), 1, "exactly one answer; outputs {outs:?}");
        let answer = answers.into_iter().next().expect("one answer");
        (answer, relayed, outs)
    }

    /// Every STUN message sent to client `c` in `outs`; fails on one sent elsewhere.
    fn answers_to(&self, c: usize, outs: &[Output]) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for o in outs {
            match (o, kind(c)) {
                (Output::Transmit { listener, to, data }, Kind::Udp(l, from)) => {
                    assert_eq!((*listener, *to), (l, from), "answer to the requester");
                    v.push(data.clone());
                }
                (Output::StreamWrite { conn, data }, Kind::Stream(_)) => {
                    assert_eq!(Some(*conn), self.model.clients[c].conn);
                    v.extend(split_stun(data).into_iter().map(<[u8]>::to_vec));
                }
                (Output::Transmit { .. } | Output::StreamWrite { .. }, _) => {
                    panic!("an answer to another client: {o:?}")
                }
                _ => {}
            }
        }
        v
    }

    /// A request (new, or a retransmission when `t` is the last one's).
    fn request(&mut self, c: usize, who: Who, req: Req, t: TransactionId, bytes: Vec<u8>) {
        let mut exp = Expect::default();
        self.ensure_open(c);
        let conn = self.model.clients[c].conn;
        let now = self.model.now;
        let cached = self.model.clients[c].last.as_ref().and_then(|l| {
            (l.tid == t && l.conn == conn && l.cached_until.is_some_and(|u| now < u))
                .then(|| (l.answer.clone(), l.cached_until))
        });
        let code = match &cached {
            Some(_) => None,
            None => {
                let cl = &mut self.model.clients[c];
                // A request on a stream without allocation pushes its idle timer back.
                if cl.conn.is_some() && cl.alloc.is_none() {
                    cl.idle = Some(now + Duration::from_secs(IDLE_S));
                }
                Some(self.model.request(c, who, &req, &mut exp))
            }
        };
        let (answer, relayed, outs) = self.send_request(c, &bytes);
        assert!(relayed.is_empty());
        let a = parse_answer(&answer);
        assert_eq!(a.tid, t, "the answer carries the request's transaction id");
        let cached_until = match (&cached, code) {
            (Some((bytes, until)), _) => {
                self.note("cached answer");
                assert_eq!(&answer, bytes, "a retransmission gets the very same answer");
                *until
            }
            (None, Some(code)) => {
                self.note(format!("code {code}"));
                let method = format!("{req:?}");
                let method = method.split(' ').next().unwrap_or("");
                self.note(format!("{method} {code}"));
                assert_eq!(
                    a.outcome(),
                    code,
                    "client {c} {who:?} {req:?}: answer {a:?}, model predicted {code}"
                );
                if code == 0 {
                    assert_eq!(a.lifetime, exp.lifetime, "LIFETIME of {req:?}");
                }
                // Authenticated answers are cached; 401 and 441 are not, nor those of
                // the idempotent CreatePermission and ChannelBind (RFC 8489 §6.3.1): a
                // retransmission of those is done again.
                let idempotent = matches!(req, Req::Permission { .. } | Req::Bind { .. });
                (code != 401 && code != 441 && !idempotent)
                    .then(|| now + Duration::from_secs(CACHE_S))
            }
            (None, None) => unreachable!(),
        };
        if exp.created.is_some() {
            let relayed = a
                .relayed
                .expect("XOR-RELAYED-ADDRESS in an Allocate success");
            assert_eq!(relayed.ip(), IpAddr::V4(RELAY_IP));
        }
        let created = exp.created.is_some();
        self.check_outputs(&outs, &mut exp, Some(c));
        if created {
            let port = self.model.clients[c].alloc.as_ref().map(|m| m.port);
            assert_eq!(
                a.relayed.map(|r| r.port()),
                port,
                "the bound port is the one told"
            );
        }
        self.model.clients[c].last = Some(Last {
            who,
            req,
            tid: t,
            bytes,
            conn,
            cached_until,
            answer,
        });
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Request { c, who, req } => {
                let t = self.tid();
                self.ensure_open(*c);
                let bytes = self.build(*c, *who, req, t);
                self.request(*c, *who, req.clone(), t, bytes);
            }
            Op::Retransmit { c } => {
                if let Some(l) = self.model.clients[*c].last.clone() {
                    self.request(*c, l.who, l.req, l.tid, l.bytes);
                }
            }
            Op::ChannelData { c, number, pick } => {
                let number = match (pick, &self.model.clients[*c].alloc) {
                    (Some(k), Some(a)) if !a.chans.is_empty() => {
                        a.chans[usize::from(*k) % a.chans.len()].number
                    }
                    _ => *number,
                };
                self.channel_data(*c, number)
            }
            Op::Send { c, peer: p, pick } => {
                let p = self.pick_peer(*c, *p, *pick);
                self.send(*c, p)
            }
            Op::PeerData { c, peer: p, pick } => {
                let p = self.pick_peer(*c, *p, *pick);
                self.peer_data(*c, p)
            }
            Op::Close { c } => {
                let mut exp = Expect::default();
                if let Some(conn) = self.model.clients[*c].conn {
                    self.rig.server.handle_stream_closed(self.model.now, conn);
                    self.model.delete(*c, DeleteReason::StreamClosed, &mut exp);
                    let cl = &mut self.model.clients[*c];
                    cl.conn = None;
                    cl.idle = None;
                }
                let outs = self.rig.drain();
                self.check_outputs(&outs, &mut exp, None);
            }
            Op::Advance { s } => {
                let mut exp = Expect::default();
                let to = self.model.now + Duration::from_secs(*s);
                self.model.advance(to, &mut exp);
                self.rig.now = to;
                self.rig.server.handle_timeout(to);
                let outs = self.rig.drain();
                self.check_outputs(&outs, &mut exp, None);
                // Nothing is due before the next timeout the server asks for.
                if let Some(next) = self.rig.server.poll_timeout() {
                    assert!(next > to, "poll_timeout in the past after handle_timeout");
                }
            }
        }
        self.check_state();
    }

    /// With `pick`, one of the peers that client `c`'s permissions or channels cover.
    fn pick_peer(&self, c: usize, p: usize, pick: Option<u8>) -> usize {
        let Some((k, a)) = pick.zip(self.model.clients[c].alloc.as_ref()) else {
            return p;
        };
        let covered: Vec<usize> = (0..PEERS.len())
            .filter(|i| {
                a.perms.contains_key(&peer(*i).ip()) || a.chans.iter().any(|ch| ch.peer == *i)
            })
            .collect();
        match covered.len() {
            0 => p,
            n => covered[usize::from(k) % n],
        }
    }

    /// ChannelData from a client (RFC 8656 §12.6): relayed iff a live channel and a live
    /// permission cover it; on a stream without allocation it ends the stream.
    fn channel_data(&mut self, c: usize, number: u16) {
        let mut exp = Expect::default();
        self.ensure_open(c);
        let now = self.model.now;
        let payload = [c as u8 + 1; 7];
        let cl = &self.model.clients[c];
        let expected = cl.alloc.as_ref().and_then(|a| {
            let ch = a.live_channel_by_number(number, now)?;
            let target = peer(ch.peer);
            a.perms
                .contains_key(&target.ip())
                .then_some((a.relay, target))
        });
        let got = match kind(c) {
            Kind::Udp(listener, from) => {
                let mut buf = channel_data(number, &payload, false);
                let n = buf.len();
                let f = self
                    .rig
                    .server
                    .handle_datagram(now, listener, from, &mut buf, 0..n);
                f.map(|f| match f {
                    Forward::ToPeer { relay, peer, range } => {
                        assert_eq!(&buf[range], &payload);
                        (relay, peer)
                    }
                    other => panic!("ChannelData from a client forwarded as {other:?}"),
                })
            }
            Kind::Stream(_) => {
                let conn = cl.conn.expect("open");
                if cl.alloc.is_none() {
                    // Not a TURN client's first frame (RFC 8656 §12.5 frames ChannelData
                    // only after an allocation): the core closes the stream.
                    exp.closed.push((conn, CloseReason::NotTurn));
                    let cl = &mut self.model.clients[c];
                    cl.conn = None;
                    cl.idle = None;
                }
                let (relayed, outs) = self.rig.stream(conn, &channel_data(number, &payload, true));
                self.check_outputs(&outs, &mut exp, None);
                assert!(relayed.len() <= 1);
                relayed.into_iter().next().map(|(relay, peer, data)| {
                    assert_eq!(data, payload);
                    (relay, peer)
                })
            }
        };
        assert_eq!(got, expected, "ChannelData 0x{number:04x} from client {c}");
        self.note(format!("channel data relayed: {}", got.is_some()));
        let outs = self.rig.drain();
        self.check_outputs(&outs, &mut exp, None);
    }

    /// A Send indication (RFC 8656 §11.2): relayed iff a live permission covers the peer.
    fn send(&mut self, c: usize, p: usize) {
        let mut exp = Expect::default();
        self.ensure_open(c);
        let now = self.model.now;
        let payload = [0x50 + c as u8; 6];
        let t = self.tid();
        let bytes = send_indication(t, peer(p), &payload);
        let expected = self.model.clients[c].alloc.as_ref().and_then(|a| {
            a.perms
                .contains_key(&peer(p).ip())
                .then_some((a.relay, peer(p)))
        });
        let got = match kind(c) {
            Kind::Udp(listener, from) => {
                let mut buf = bytes.clone();
                let n = buf.len();
                let f = self
                    .rig
                    .server
                    .handle_datagram(now, listener, from, &mut buf, 0..n);
                f.map(|f| match f {
                    Forward::ToPeer { relay, peer, range } => {
                        assert_eq!(&buf[range], &payload);
                        (relay, peer)
                    }
                    other => panic!("a Send indication forwarded as {other:?}"),
                })
            }
            Kind::Stream(_) => {
                let conn = self.model.clients[c].conn.expect("open");
                let (relayed, outs) = self.rig.stream(conn, &bytes);
                self.check_outputs(&outs, &mut exp, None);
                relayed.into_iter().next().map(|(relay, peer, data)| {
                    assert_eq!(data, payload);
                    (relay, peer)
                })
            }
        };
        assert_eq!(got, expected, "Send indication from client {c} to peer {p}");
        self.note(format!("send relayed: {}", got.is_some()));
        let outs = self.rig.drain();
        self.check_outputs(&outs, &mut exp, None);
    }

    /// A peer's datagram on the client's relay socket (RFC 8656 §11.3, §12.7): relayed iff
    /// a live permission covers the peer, as ChannelData when a live channel is bound to
    /// it, else as a Data indication.
    fn peer_data(&mut self, c: usize, p: usize) {
        let cl = &self.model.clients[c];
        let Some(relay) = cl.alloc.as_ref().map(|a| a.relay).or(cl.last_relay) else {
            return;
        };
        let now = self.model.now;
        let from = peer(p);
        let payload = [0xa0 + p as u8; 7];
        let mut buf = vec![0u8; HEADROOM + payload.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(&payload);
        let f = self.rig.server.handle_relay_datagram(
            now,
            relay,
            from,
            &mut buf,
            HEADROOM..HEADROOM + payload.len(),
        );
        let expect = cl.alloc.as_ref().and_then(|a| {
            a.perms
                .contains_key(&from.ip())
                .then(|| a.live_channel_by_peer(p, now).map(|ch| ch.number))
        });
        self.note(match expect {
            None => "peer data dropped",
            Some(None) => "peer data as Data indication",
            Some(Some(_)) => "peer data as ChannelData",
        });
        let cl = &self.model.clients[c];
        match (f, expect) {
            (None, None) => {}
            (Some(f), Some(channel)) => {
                let (range, on_stream) = match (f, kind(c)) {
                    (
                        Forward::ToClient {
                            listener,
                            client,
                            range,
                        },
                        Kind::Udp(l, addr),
                    ) => {
                        assert_eq!((listener, client), (l, addr));
                        (range, false)
                    }
                    (Forward::ToStream { conn, range }, Kind::Stream(_)) => {
                        assert_eq!(Some(conn), cl.conn);
                        (range, true)
                    }
                    (f, _) => panic!("peer data for client {c} forwarded as {f:?}"),
                };
                let out = &buf[range];
                match channel {
                    Some(number) => {
                        let pad = if on_stream { 1 } else { 0 };
                        assert_eq!(out.len(), 4 + payload.len() + pad);
                        assert_eq!(&out[..2], &number.to_be_bytes());
                        assert_eq!(&out[2..4], &(payload.len() as u16).to_be_bytes());
                        assert_eq!(&out[4..4 + payload.len()], &payload);
                    }
                    None => {
                        let m = Message::parse(out).expect("a well-formed Data indication");
                        assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
                        let t = m.transaction_id();
                        let addr = m.get(attr::XOR_PEER_ADDRESS).expect("XOR-PEER-ADDRESS");
                        assert_eq!(attr::decode_xor_address(addr, &t), Ok(from));
                        assert_eq!(m.get(attr::DATA), Some(&payload[..]));
                    }
                }
            }
            (f, e) => panic!("peer {p} → client {c}: got {f:?}, model expected {e:?}"),
        }
        let outs = self.rig.drain();
        self.check_outputs(&outs, &mut Expect::default(), None);
    }

    /// The outputs of a step besides answers: exactly the relay sockets, events and stream
    /// closes the model expects. Learns the ids of a new allocation.
    fn check_outputs(&mut self, outs: &[Output], exp: &mut Expect, answered: Option<usize>) {
        let mut binds = Vec::new();
        let mut closes = Vec::new();
        let mut deleted = Vec::new();
        let mut created = Vec::new();
        let mut closed = Vec::new();
        for o in outs {
            match o {
                Output::BindRelay { relay, addr } => binds.push((*relay, *addr)),
                Output::CloseRelay { relay } => closes.push(*relay),
                Output::CloseStream { conn, reason } => closed.push((*conn, *reason)),
                Output::Event(Event::AllocationDeleted { id, reason, .. }) => {
                    deleted.push((*id, *reason))
                }
                Output::Event(Event::AllocationCreated { id, .. }) => created.push(*id),
                Output::Transmit { .. } | Output::StreamWrite { .. } => {
                    assert!(answered.is_some(), "an answer without a request: {o:?}")
                }
                Output::Event(_) => {}
                Output::ToLoop { .. } => panic!("a server alone sent a loop message: {o:?}"),
            }
        }
        for d in &exp.deleted {
            self.note(format!("deleted {:?}", d.2));
        }
        for d in &exp.closed {
            self.note(format!("stream closed {:?}", d.1));
        }
        let mut want_closes: Vec<RelayId> = exp.deleted.iter().map(|d| d.1).collect();
        want_closes.sort();
        closes.sort();
        assert_eq!(
            closes, want_closes,
            "CloseRelay for exactly the deleted allocations"
        );
        let mut want_deleted: Vec<(AllocationId, DeleteReason)> =
            exp.deleted.iter().map(|d| (d.0, d.2)).collect();
        want_deleted.sort_by_key(|d| d.0);
        deleted.sort_by_key(|d| d.0);
        assert_eq!(deleted, want_deleted, "AllocationDeleted events");
        exp.closed.sort_by_key(|d| d.0);
        closed.sort_by_key(|d| d.0);
        assert_eq!(closed, exp.closed, "streams closed by the core");
        match exp.created.take() {
            Some(c) => {
                assert_eq!(binds.len(), 1, "one relay socket per allocation");
                assert_eq!(created.len(), 1, "one AllocationCreated");
                let (relay, addr) = binds[0];
                assert_eq!(addr.ip(), IpAddr::V4(RELAY_IP));
                assert!((PORT_MIN..PORT_MIN + PORTS as u16).contains(&addr.port()));
                let a = self.model.clients[c].alloc.as_mut().expect("made");
                a.relay = relay;
                a.port = addr.port();
                a.id = created[0];
            }
            None => {
                assert!(binds.is_empty(), "no relay socket without allocation");
                assert!(created.is_empty());
            }
        }
        exp.deleted.clear();
        exp.closed.clear();
    }

    /// Counters, port pool and tables agree with the model.
    fn check_state(&self) {
        let now = self.model.now;
        let s = self.rig.server.stats(now);
        let allocs: Vec<&MAllocation> = self.model.allocations().collect();
        assert_eq!(s.allocations, allocs.len() as u64, "allocations");
        assert_eq!(s.allocations_pending, 0);
        let p = s.ports_v4;
        assert_eq!(
            p.free + p.in_use + p.quarantined + p.reserved,
            PORTS,
            "the port pool balances: {p:?}"
        );
        assert_eq!(p.in_use as usize, allocs.len(), "ports in use: {p:?}");
        assert_eq!(
            p.quarantined as usize,
            self.model.quarantine.len(),
            "quarantine: {p:?}"
        );
        assert_eq!(p.reserved, 0);
        let perms: usize = allocs.iter().map(|a| a.perms.len()).sum();
        assert_eq!(s.permissions, perms as u64, "permissions");
        let chans = allocs
            .iter()
            .flat_map(|a| a.chans.iter())
            .filter(|ch| now < ch.expires)
            .count();
        assert_eq!(s.channels, chans as u64, "live channels");
        let streams = self
            .model
            .clients
            .iter()
            .filter(|c| c.conn.is_some())
            .count();
        assert_eq!(s.streams, streams as u64, "streams");
        // No port serves two live allocations, and each is the one the model learnt.
        let infos = self.rig.server.allocations(now);
        let mut ports = BTreeSet::new();
        for info in &infos {
            assert_eq!(info.relayed.len(), 1);
            assert!(ports.insert(info.relayed[0].port()), "port used twice");
            let a = allocs
                .iter()
                .find(|a| a.id == info.id)
                .expect("the model knows every allocation");
            assert_eq!(info.relayed[0].port(), a.port);
            assert_eq!(info.username, USERS[a.user].0);
            assert_eq!(info.permissions, a.perms.len());
            assert_eq!(
                info.channels,
                a.chans.iter().filter(|ch| now < ch.expires).count()
            );
        }
    }
}

/// Runs `ops` against a fresh server and the model; returns what was seen.
fn run(ops: &[Op]) -> BTreeMap<String, u64> {
    let mut r = Run::new();
    for op in ops {
        r.step(op);
    }
    r.seen
}

/// The model predicts every answer, relay decision and state change of 256 random
/// sequences of up to 40 steps. Then checks that the sequences went everywhere: every
/// error code, every way of relaying, every way an allocation ends.
#[test]
fn the_model_predicts_every_response() {
    use proptest::test_runner::{Config, TestRunner};
    let seen = std::cell::RefCell::new(BTreeMap::<String, u64>::new());
    // MODEL_CASES=n runs a longer sweep.
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let result = runner.run(&ops(), |ops| {
        for (k, n) in run(&ops) {
            *seen.borrow_mut().entry(k).or_insert(0) += n;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    println!("{seen:#?}");
    let mut wanted: Vec<String> = [0u16, 400, 401, 403, 437, 441, 442, 443, 486, 508]
        .iter()
        .map(|c| format!("code {c}"))
        .collect();
    wanted.extend(
        [
            "cached answer",
            "channel data relayed: true",
            "channel data relayed: false",
            "send relayed: true",
            "send relayed: false",
            "peer data dropped",
            "peer data as Data indication",
            "peer data as ChannelData",
            "deleted Expired",
            "deleted Refreshed0",
            "deleted StreamClosed",
            "stream closed Idle",
            "stream closed NotTurn",
        ]
        .map(String::from),
    );
    for w in wanted {
        assert!(seen.contains_key(&w), "no random sequence reached {w:?}");
    }
}

/// A fixed sequence that walks through every error code of the model, so a change that
/// makes the generator miss one is noticed.
#[test]
fn a_walk_through_every_code() {
    use Op::*;
    use Req::*;
    let home = Who::Home;
    let a = |transport, lifetime| Allocate {
        transport,
        lifetime,
    };
    let ops = vec![
        Request {
            c: 0,
            who: home,
            req: a(Some(17), None),
        },
        Request {
            c: 0,
            who: home,
            req: a(Some(17), None),
        }, // 437
        Request {
            c: 1,
            who: home,
            req: a(Some(6), None),
        }, // 442
        Request {
            c: 1,
            who: home,
            req: a(None, None),
        }, // 400
        Request {
            c: 1,
            who: Who::BadPassword,
            req: a(Some(17), None),
        }, // 401
        Request {
            c: 0,
            who: Who::Other,
            req: Refresh {
                lifetime: None,
                family: None,
            },
        }, // 441
        Request {
            c: 0,
            who: home,
            req: Permission { peers: vec![4] },
        }, // 403
        Request {
            c: 0,
            who: home,
            req: Permission { peers: vec![6] },
        }, // 443
        Request {
            c: 0,
            who: home,
            req: Permission { peers: vec![] },
        }, // 400
        Request {
            c: 0,
            who: home,
            req: Permission { peers: vec![0, 2] },
        },
        Request {
            c: 0,
            who: home,
            req: Permission { peers: vec![3] },
        }, // 508 (perms full)
        Request {
            c: 0,
            who: home,
            req: Bind {
                number: 0x4000,
                peer: 3,
            },
        }, // 508 (perms full)
        Request {
            c: 0,
            who: home,
            req: Bind {
                number: 0x4000,
                peer: 0,
            },
        },
        Request {
            c: 0,
            who: home,
            req: Bind {
                number: 0x4000,
                peer: 2,
            },
        }, // 400 (rebind)
        Request {
            c: 0,
            who: home,
            req: Bind {
                number: 0x4001,
                peer: 0,
            },
        }, // 400 (peer bound)
        Request {
            c: 0,
            who: home,
            req: Bind {
                number: 0x8000,
                peer: 2,
            },
        }, // 400 (range)
        Request {
            c: 0,
            who: home,
            req: Bind {
                number: 0x4001,
                peer: 1,
            },
        },
        Request {
            c: 0,
            who: home,
            req: Bind {
                number: 0x4002,
                peer: 2,
            },
        }, // 508 (chans full)
        Request {
            c: 2,
            who: home,
            req: a(Some(17), None),
        },
        Request {
            c: 4,
            who: home,
            req: a(Some(17), None),
        }, // 486 (alice has 2)
        Request {
            c: 1,
            who: home,
            req: a(Some(17), None),
        },
        Request {
            c: 3,
            who: home,
            req: a(Some(17), None),
        }, // 508 (total quota)
        Request {
            c: 1,
            who: home,
            req: Refresh {
                lifetime: Some(0),
                family: None,
            },
        },
        Request {
            c: 3,
            who: home,
            req: a(Some(17), None),
        }, // 508 (ports quarantined)
        Retransmit { c: 3 },
        ChannelData {
            c: 0,
            number: 0x4000,
            pick: None,
        },
        PeerData {
            c: 0,
            peer: 0,
            pick: None,
        },
        PeerData {
            c: 0,
            peer: 2,
            pick: None,
        },
        Send {
            c: 0,
            peer: 2,
            pick: None,
        },
        Advance { s: 45 },
        ChannelData {
            c: 3,
            number: 0x4000,
            pick: None,
        },
        Request {
            c: 3,
            who: home,
            req: a(Some(17), Some(1000)),
        },
        Advance { s: 130 },
        Request {
            c: 0,
            who: home,
            req: Refresh {
                lifetime: None,
                family: None,
            },
        }, // 437
        Advance { s: 310 },
    ];
    let seen = run(&ops);
    let codes = [0u16, 400, 401, 403, 437, 441, 442, 443, 486, 508];
    for code in codes {
        assert!(
            seen.contains_key(&format!("code {code}")),
            "{code} not reached: {seen:?}"
        );
    }
    for what in [
        "Permission 508",
        "Bind 508",
        "Allocate 508",
        "peer data as ChannelData",
        "peer data as Data indication",
        "send relayed: true",
        "channel data relayed: true",
        "cached answer",
    ] {
        assert!(seen.contains_key(what), "{what} not reached: {seen:?}");
    }
}

/// RFC 8656 §12: after a channel expires, its number and its peer stay tied to each other
/// for 5 minutes (rebinding either elsewhere is a 400, and the entry still counts against
/// the channel limit); binding the same pair again revives it; after the cooldown both
/// are free.
#[test]
fn channel_cooldown_walk() {
    use Op::*;
    use Req::*;
    let home = Who::Home;
    let bind = |number, peer| Request {
        c: 0,
        who: home,
        req: Bind { number, peer },
    };
    let refresh = Request {
        c: 0,
        who: home,
        req: Refresh {
            lifetime: Some(1000),
            family: None,
        },
    };
    let ops = vec![
        Request {
            c: 0,
            who: home,
            req: Allocate {
                transport: Some(attr::TRANSPORT_UDP),
                lifetime: Some(1000),
            },
        },
        bind(0x4000, 0),
        Advance { s: 50 },
        ChannelData {
            c: 0,
            number: 0x4000,
            pick: None,
        }, // dropped: expired
        bind(0x4000, 2), // 400: number cooling
        bind(0x4001, 0), // 400: peer cooling
        bind(0x4001, 1),
        bind(0x4002, 2), // 508: two entries, one cooling
        bind(0x4000, 0), // revived
        ChannelData {
            c: 0,
            number: 0x4000,
            pick: None,
        },
        Advance { s: 130 },
        refresh.clone(),
        Advance { s: 130 },
        refresh,
        Advance { s: 90 }, // both channels' cooldowns are over
        bind(0x4000, 2),
    ];
    let seen = run(&ops);
    assert_eq!(seen.get("Bind 400"), Some(&2), "{seen:?}");
    assert_eq!(seen.get("Bind 508"), Some(&1), "{seen:?}");
    assert_eq!(seen.get("Bind 0"), Some(&4), "{seen:?}");
    assert_eq!(seen.get("channel data relayed: true"), Some(&1), "{seen:?}");
}

/// A CreatePermission is idempotent, so its answer is not kept for retransmissions: one
/// retransmitted after its allocation expired is done again (437), not answered from a
/// cache (RFC 8489 §6.3.1). Found by the random walk.
#[test]
fn a_retransmitted_create_permission_is_done_again() {
    use Op::*;
    use Req::*;
    let ops = vec![
        Request {
            c: 0,
            who: Who::Home,
            req: Allocate {
                transport: Some(attr::TRANSPORT_UDP),
                lifetime: None,
            },
        },
        Advance { s: 90 },
        Request {
            c: 0,
            who: Who::Home,
            req: Permission { peers: vec![] },
        },
        Advance { s: 10 },
        Retransmit { c: 0 },
    ];
    let notes = run(&ops);
    assert!(
        notes.keys().any(|k| k.starts_with("Permission 437")),
        "{notes:?}"
    );
}
