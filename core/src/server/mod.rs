//! The TURN server state machine (RFC 8656 on RFC 8489).
//!
//! Reading list: RFC 8656 §5 (general behaviour), §7 (Allocate), §8 (Refresh), §9–10
//! (permissions), §11 (Send and Data), §12 (channels), §21 (security); RFC 8489 §6.3
//! (receiving requests), §9.2 (long-term credentials).
//!
//! [`Server`] is fed inputs (`handle_*`) and drained of outputs ([`Server::poll_output`]);
//! [`Server::poll_timeout`] says when to call [`Server::handle_timeout`]. Relayed data takes
//! the fast path: `handle_datagram` and `handle_relay_datagram` return a [`Forward`] naming
//! a range of the caller's buffer, and stream data reaches peers through a callback, so no
//! payload is copied or queued by the core.

mod allocate;
mod authenticate;
mod bandwidth;
mod cache;
mod loops;
mod methods;
mod redirect;
mod relay;
mod reload;
mod reply;
mod request;
mod stats;
mod stream;

pub use bandwidth::MIN_BURST;
pub use redirect::DRAINING_CODE;
pub use reload::ReloadOutcome;
pub use stats::{DropCounters, Stats, TransportTraffic, UnauthCounters};

pub(crate) use bandwidth::TokenBucket;

use crate::allocation::{Allocation, ClientKey};
use crate::auth::{Credentials, NonceKey, NonceSigner, VerifiedNonces};
use crate::config::{Config, ListenerConfig};
use crate::event::{ClientInfo, DeleteReason, Event, Output};
use crate::ids::{AllocationId, ConnId, ListenerId, RelayId, Transport};
use crate::ports::PortPool;
use crate::ratelimit::{BudgetLimits, SourceBudget};
use crate::time::Instant;
use allocate::Pending;
use cache::ResponseCache;
use core::ops::Range;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use stream::Stream;

/// Bytes the caller leaves free before a relayed payload, so the core can write a
/// ChannelData header (4) or a Data indication header (20 + XOR-PEER-ADDRESS up to 24 +
/// DATA header 4) in place.
pub const HEADROOM: usize = 48;
/// Bytes the caller leaves free after a relayed payload, for padding to 4 bytes.
pub const TAILROOM: usize = 4;

/// Where to send a relayed packet: a range of the caller's own buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Send `buf[range]` from relay socket `relay` to `peer`.
    ToPeer {
        /// The relay socket.
        relay: RelayId,
        /// The peer.
        peer: SocketAddr,
        /// The payload within the caller's buffer.
        range: Range<usize>,
    },
    /// Send `buf[range]` from UDP listener `listener` to `client`.
    ToClient {
        /// The listener the client uses.
        listener: ListenerId,
        /// The client.
        client: SocketAddr,
        /// ChannelData or Data indication within the caller's buffer.
        range: Range<usize>,
    },
    /// Write `buf[range]` on stream `conn`.
    ToStream {
        /// The stream.
        conn: ConnId,
        /// ChannelData (padded) or Data indication within the caller's buffer.
        range: Range<usize>,
    },
}

/// Why the runtime could not bind a relay socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BindError {
    /// The port is in use by someone else (EADDRINUSE): try another.
    AddrInUse,
    /// Any other failure (e.g. out of file descriptors).
    Other,
}

/// A configuration the core cannot run with.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConfigError(pub String);

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A snapshot of one allocation, for the runtime's API.
#[derive(Clone, Debug)]
pub struct AllocationInfo {
    /// Its id.
    pub id: AllocationId,
    /// The client.
    pub client: ClientInfo,
    /// The username.
    pub username: String,
    /// Relayed addresses.
    pub relayed: Vec<SocketAddr>,
    /// Age, milliseconds.
    pub age_ms: u64,
    /// Time left, milliseconds.
    pub expires_in_ms: u64,
    /// Permissions installed.
    pub permissions: usize,
    /// Channels bound.
    pub channels: usize,
    /// Traffic so far.
    pub traffic: crate::event::TrafficCounters,
}

/// A timer the server keeps in its ordered set.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Timer {
    Allocation(AllocationId),
    Stream(ConnId),
    Reservation([u8; 8]),
}

/// Who owns a relay socket.
#[derive(Clone, Copy, Debug)]
enum RelayOwner {
    /// A live allocation.
    Allocation(AllocationId),
    /// An Allocate waiting for its binds.
    Pending(u64, usize),
}

/// A port held for a RESERVATION-TOKEN (RFC 8656 §7.2, EVEN-PORT with R set). Until it is
/// redeemed or expires it holds one count of its user's `user_quota` (at the user's home
/// loop) and one credit of `total_quota` (here), so that reservations cannot drain the
/// port pool past the quotas.
#[derive(Clone, Debug)]
struct Reservation {
    port: u16,
    expires: Instant,
    username: String,
}

/// How long a reserved port waits for its token (RFC 8656 §7.2: "about 30 seconds").
const RESERVATION_LIFETIME: core::time::Duration = core::time::Duration::from_secs(30);

/// The TURN server. See the module documentation for the run loop.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    listeners: BTreeMap<ListenerId, ListenerConfig>,
    /// Relay port choices (RFC 6056: unpredictable).
    port_rng: ChaCha20Rng,
    /// Transaction ids of Data indications and reservation tokens.
    token_rng: ChaCha20Rng,
    /// Issues and checks nonces, its key made ready once.
    nonce: NonceSigner,
    /// Nonces verified for the clients of recent authenticated requests.
    verified_nonces: VerifiedNonces,
    /// Wall clock in ms minus monotonic ms, once the driver has told us.
    wall_offset_ms: Option<i128>,
    budget: SourceBudget,
    allocations: BTreeMap<AllocationId, Allocation>,
    by_client: BTreeMap<ClientKey, AllocationId>,
    relays: BTreeMap<RelayId, RelayOwner>,
    pending: BTreeMap<u64, Pending>,
    pending_by_client: BTreeMap<ClientKey, u64>,
    streams: BTreeMap<ConnId, Stream>,
    /// Bytes held by the framers of streams without an allocation (their `unauth_held`).
    unauth_buffered: usize,
    /// Open streams per source (`node::stream_source`), for `max_streams_per_source`: on a
    /// node, those of the node for the sources whose home is this loop.
    streams_per_source: BTreeMap<std::net::IpAddr, u32>,
    /// Server-wide bandwidth budget (`total_max_bps`), indexed by `bandwidth::Direction`.
    bandwidth: [TokenBucket; 2],
    /// Allocations (live or pending) per username, for the user quota.
    per_user: BTreeMap<String, u32>,
    /// Port pools: [IPv4, IPv6].
    pools: [Option<PortPool>; 2],
    reservations: BTreeMap<[u8; 8], Reservation>,
    /// This core's place in its node of event loops.
    node: crate::node::NodePlace,
    /// Allocations of `total_quota` this loop may hold (its share, plus what it borrowed,
    /// minus what it lent).
    credits: u32,
    /// Pending Allocates holding a credit.
    pending_credits: u32,
    /// Credits this loop owes the node after a reload lowered `total_quota` below what it
    /// held: paid from the next credits it receives.
    quota_debt: u32,
    timers: BTreeSet<(Instant, Timer)>,
    cache: ResponseCache,
    outputs: VecDeque<Output>,
    stats: Stats,
    next_allocation: u64,
    next_relay: u32,
    next_pending: u64,
    /// Since when the server drains (no new allocations; [`Server::start_drain`]).
    draining: Option<Instant>,
}

impl Server {
    /// A server with `config`, born at `now`, drawing its randomness from `seed` and its
    /// secrets from `config.node_secret` (mixed with the seed; see [`crate::secret`]).
    ///
    /// Call [`Server::set_wall_clock`] before the first request: REST and one-time
    /// credentials are refused until the wall clock is known.
    pub fn new(mut config: Config, seed: [u8; 32], now: Instant) -> Result<Self, ConfigError> {
        validate(&config)?;
        add_own_addresses(&mut config);
        // Separate streams of one seed, so that e.g. the number of nonces issued never
        // changes which ports are drawn (RFC 6056 wants ports unpredictable, not related).
        let stream = |seed: [u8; 32], n: u64| {
            let mut r = ChaCha20Rng::from_seed(seed);
            r.set_stream(n);
            r
        };
        // Secrets come from the node secret, mixed with the seed where loops may differ;
        // without one (simulations, traces before format 3), from the seed as before.
        let (nonce_key, budget_key, port_rng, token_rng) = match &config.node_secret {
            Some(s) => (
                s.nonce_key(),
                s.budget_key(&seed),
                stream(s.port_seed(&seed), 1),
                stream(s.token_seed(&seed), 2),
            ),
            None => {
                let mut key_rng = stream(seed, 3);
                let mut k = [0u8; 32];
                key_rng.fill_bytes(&mut k);
                let budget_key = key_rng.next_u64();
                (NonceKey(k), budget_key, stream(seed, 1), stream(seed, 2))
            }
        };
        let nonce_key = config.nonce_key.clone().unwrap_or(nonce_key);
        let node = config.node;
        let budget = SourceBudget::new(BUDGET_BUCKETS, budget_limits(&config), budget_key, now);
        let pool = |present: bool| {
            present.then(|| {
                let (min, max) = (config.relay_port_min, config.relay_port_max);
                if node.count > 1 {
                    let own = crate::node::port_slice(min, max, node.count, node.index);
                    PortPool::with_share(min, max, own, config.relay_port_quarantine)
                } else {
                    PortPool::new(min, max, config.relay_port_quarantine)
                }
            })
        };
        let pools = [
            pool(config.relay_v4.is_some()),
            pool(config.relay_v6.is_some()),
        ];
        let listeners = config.listeners.iter().map(|l| (l.id, l.clone())).collect();
        Ok(Server {
            listeners,
            port_rng,
            token_rng,
            nonce: NonceSigner::new(&nonce_key),
            verified_nonces: VerifiedNonces::new(VERIFIED_NONCES),
            wall_offset_ms: None,
            budget,
            allocations: BTreeMap::new(),
            by_client: BTreeMap::new(),
            relays: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_by_client: BTreeMap::new(),
            streams: BTreeMap::new(),
            unauth_buffered: 0,
            streams_per_source: BTreeMap::new(),
            bandwidth: [TokenBucket::new(config.total_max_bps, now); 2],
            per_user: BTreeMap::new(),
            pools,
            reservations: BTreeMap::new(),
            node,
            credits: crate::node::quota_share(config.total_quota, node.count, node.index),
            pending_credits: 0,
            quota_debt: 0,
            timers: BTreeSet::new(),
            cache: ResponseCache::new(config.max_queued_outputs.clamp(1024, 65_536)),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            next_allocation: crate::node::allocation_id_base(node.index) + 1,
            next_relay: 1,
            next_pending: 1,
            draining: None,
            cfg: config,
        })
    }

    /// The nonce key a server born from `seed` derives when its configuration has neither
    /// a node secret nor a nonce key (simulations; traces before format 3, whose loops
    /// after the first were given the key of loop 0's seed).
    pub fn nonce_key_of_seed(seed: [u8; 32]) -> NonceKey {
        let mut r = ChaCha20Rng::from_seed(seed);
        r.set_stream(3);
        let mut k = [0u8; 32];
        r.fill_bytes(&mut k);
        NonceKey(k)
    }

    /// Makes allocation ids count up from `base + 1`. Superseded by `Config::node` (which
    /// sets the base from the loop's index); kept until every driver gives the node.
    pub fn set_allocation_id_base(&mut self, base: u64) {
        self.next_allocation = base.saturating_add(1);
    }

    /// Sets the wall clock: at monotonic `now` it is `unix_ms` milliseconds since 1970.
    /// Call it at start and whenever the driver notices the wall clock moved (once a second
    /// is plenty); timers are unaffected, only credential expiry uses it.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall_offset_ms = Some(i128::from(unix_ms) - i128::from(now.as_millis()));
    }

    /// A UDP datagram `buf[payload]` from `from` arrived on `listener`.
    ///
    /// Returns where to send relayed data (ChannelData or a Send indication from a client
    /// with an allocation); anything else (answers, events) is queued for `poll_output`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<Forward> {
        let transport = self.listeners.get(&listener)?.transport;
        if transport != Transport::Udp {
            return None;
        }
        let data = buf.get(payload.clone())?;
        let src = Source {
            key: ClientKey::Udp(listener, from),
            info: ClientInfo {
                transport: Transport::Udp,
                addr: from,
                listener,
                conn: None,
            },
        };
        let first = *data.first()?;
        let (relay, peer, range) = match first >> 6 {
            0b00 => self.handle_stun(now, &src, data)?,
            0b01 => self.channel_data_from_client(now, src.key, data)?,
            _ => {
                self.stats.dropped.malformed += 1;
                return None;
            }
        };
        Some(Forward::ToPeer {
            relay,
            peer,
            range: payload.start + range.start..payload.start + range.end,
        })
    }

    /// A stream was accepted on `listener`: `remote` is its TCP peer (the client, or the
    /// proxy in front when the listener expects a PROXY header).
    pub fn handle_stream_open(
        &mut self,
        now: Instant,
        conn: ConnId,
        listener: ListenerId,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        self.open_stream(now, conn, listener, local, remote);
    }

    /// Bytes arrived on a stream, split anywhere. Relayed payloads for peers are handed to
    /// `to_peer(relay, peer, payload)` at once, straight from `data` when they lie in it.
    pub fn handle_stream_data(
        &mut self,
        now: Instant,
        conn: ConnId,
        data: &[u8],
        to_peer: &mut dyn FnMut(RelayId, SocketAddr, &[u8]),
    ) {
        self.stream_data(now, conn, data, to_peer);
    }

    /// The stream closed (by the client, or an error). Its allocation ends (RFC 8656 §3.1).
    pub fn handle_stream_closed(&mut self, now: Instant, conn: ConnId) {
        self.forget_stream(now, conn);
    }

    /// The runtime's answer to `Output::BindRelay`.
    pub fn handle_relay_bound(
        &mut self,
        now: Instant,
        relay: RelayId,
        result: Result<(), BindError>,
    ) {
        self.relay_bound(now, relay, result);
    }

    /// A peer sent `buf[payload]` to relay socket `relay`. The caller leaves
    /// `payload.start >= HEADROOM` and `buf.len() >= payload.end + TAILROOM`, so the
    /// ChannelData or Data indication header is written in place before the payload.
    pub fn handle_relay_datagram(
        &mut self,
        now: Instant,
        relay: RelayId,
        from: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<Forward> {
        self.relay_to_client(now, relay, from, buf, payload)
    }

    /// A message from the core of loop `from` of this node (carried by the driver from that
    /// core's `Output::ToLoop`). See [`crate::node`].
    pub fn handle_loop_message(
        &mut self,
        now: Instant,
        from: crate::node::LoopId,
        msg: crate::node::LoopMsg,
    ) {
        self.loop_message(now, from, msg);
    }

    /// Time passed: expire what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for pool in self.pools.iter_mut().flatten() {
            pool.handle_timeout(now);
        }
        self.cache.expire(now);
        // Each due timer is handled once per call: a timer rescheduled into the past (a
        // bug) then shows as a timeout due again, not as a loop that never returns.
        let mut budget = self.timers.len();
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.timers.pop_first();
            match timer {
                Timer::Allocation(id) => self.allocation_timer(now, id),
                Timer::Stream(conn) => self.stream_timer(now, conn),
                Timer::Reservation(token) => {
                    if let Some(r) = self.reservations.remove(&token) {
                        if let Some(pool) = self.pools[0].as_mut() {
                            pool.release(r.port, now);
                        }
                        self.give_back_user(&r.username);
                    }
                }
            }
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.timers.first().map(|t| t.0);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for pool in self.pools.iter().flatten() {
            consider(pool.poll_timeout());
        }
        consider(self.cache.next_expiry());
        next
    }

    /// Ends an allocation now (operator request). False if there is no such allocation.
    pub fn delete_allocation(&mut self, now: Instant, id: AllocationId) -> bool {
        self.remove_allocation(now, id, DeleteReason::Admin)
    }

    /// Adds a listener at run time (e.g. a UDP port opened for one issued configuration).
    /// Refused if its id is taken or the configuration is inconsistent.
    pub fn add_listener(&mut self, listener: ListenerConfig) -> Result<(), ConfigError> {
        if self.listeners.contains_key(&listener.id) {
            return Err(ConfigError(format!(
                "listener {} already exists",
                listener.id.0
            )));
        }
        if listener.proxy_protocol && listener.transport != Transport::Tcp {
            return Err(ConfigError(
                "the PROXY protocol is only for TCP listeners".into(),
            ));
        }
        // The relay's own addresses are never peers (RFC 8656 §21.4).
        let ip = crate::policy::canonical(listener.local.ip());
        let own = &mut self.cfg.peer_policy.own_addresses;
        if !ip.is_unspecified() && !ip.is_loopback() && !own.contains(&ip) {
            own.push(ip);
        }
        self.cfg.listeners.push(listener.clone());
        self.listeners.insert(listener.id, listener);
        Ok(())
    }

    /// Removes a listener. The allocations of UDP clients that came through it end now
    /// (their answers would have nowhere to go); its reservation, if any, is lifted.
    /// False if there was no such listener. Streams accepted on a TCP listener live on:
    /// they no longer need it.
    pub fn remove_listener(&mut self, now: Instant, id: ListenerId) -> bool {
        if self.listeners.remove(&id).is_none() {
            return false;
        }
        self.cfg.listeners.retain(|l| l.id != id);
        self.cfg.credentials.release_listener(id);
        let doomed: Vec<AllocationId> = self
            .allocations
            .values()
            .filter(|a| matches!(a.key5, ClientKey::Udp(l, _) if l == id))
            .map(|a| a.id)
            .collect();
        for a in doomed {
            self.remove_allocation(now, a, DeleteReason::Admin);
        }
        true
    }

    /// How many allocations (live or waiting for their relay socket) came through each
    /// listener, for a driver deciding whether a per-client listener may close.
    pub fn allocations_per_listener(&self) -> BTreeMap<ListenerId, usize> {
        let mut out = BTreeMap::new();
        let live = self.allocations.values().map(|a| a.client.listener);
        let pending = self.pending.values().map(|p| p.listener());
        for l in live.chain(pending) {
            *out.entry(l).or_insert(0) += 1;
        }
        out
    }

    /// The credential store, to add or revoke one-time credentials.
    pub fn credentials_mut(&mut self) -> &mut Credentials {
        &mut self.cfg.credentials
    }

    /// A snapshot of the counters, with the gauges computed at `now`.
    pub fn stats(&self, now: Instant) -> Stats {
        let mut s = self.stats.clone();
        s.allocations = self.allocations.len() as u64;
        s.allocations_pending = self.pending.len() as u64;
        s.reservations = self.reservations.len() as u64;
        s.streams = self.streams.len() as u64;
        s.unauth_stream_buffered = self.unauth_buffered as u64;
        s.permissions = self
            .allocations
            .values()
            .map(|a| a.permissions.iter().filter(|p| now < p.expires).count() as u64)
            .sum();
        s.channels = self
            .allocations
            .values()
            .map(|a| a.live_channels(now) as u64)
            .sum();
        s.quota_credits = u64::from(self.credits);
        if let Some(p) = &self.pools[0] {
            s.ports_v4 = p.stats();
        }
        if let Some(p) = &self.pools[1] {
            s.ports_v6 = p.stats();
        }
        s
    }

    /// A snapshot of every allocation, in id order.
    pub fn allocations(&self, now: Instant) -> Vec<AllocationInfo> {
        self.allocations
            .values()
            .map(|a| AllocationInfo {
                id: a.id,
                client: a.client,
                username: a.username.clone(),
                relayed: a.sides.iter().flatten().map(|s| s.advertised).collect(),
                age_ms: u64::try_from(now.since(a.created).as_millis()).unwrap_or(u64::MAX),
                expires_in_ms: u64::try_from(a.expires.since(now).as_millis()).unwrap_or(u64::MAX),
                permissions: a.permissions.iter().filter(|p| now < p.expires).count(),
                channels: a.live_channels(now),
                traffic: a.traffic,
            })
            .collect()
    }

    /// Since when this loop has had a free relay port of `family` (0 IPv4, 1 IPv6)
    /// without a break; None when it has none now. A node that answers 508 for want of
    /// ports must have had no loop free since before that Allocate arrived (the
    /// simulator's node oracle).
    pub fn free_ports_since(&self, family: usize) -> Option<Instant> {
        self.pools.get(family)?.as_ref()?.free_since()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    // ---- shared helpers -------------------------------------------------------------

    /// The wall clock in unix seconds at `now`, once known.
    fn wall_unix_s(&self, now: Instant) -> Option<u64> {
        let ms = self.wall_offset_ms? + i128::from(now.as_millis());
        u64::try_from(ms / 1000).ok()
    }

    /// Queues an output. Past `max_queued_outputs`, answers and events are dropped and
    /// counted; control outputs (binds, closes, loop messages) never are: dropping one
    /// would leak a socket or a stream, or lose a port or a quota count of the node.
    fn push_output(&mut self, out: Output) {
        let droppable = matches!(
            out,
            Output::Transmit { .. } | Output::StreamWrite { .. } | Output::Event(_)
        );
        if droppable && self.outputs.len() >= self.cfg.max_queued_outputs {
            self.stats.dropped.queue_full += 1;
            return;
        }
        self.outputs.push_back(out);
    }

    /// Sends `msg` to loop `to` of the node.
    fn send_loop(&mut self, to: crate::node::LoopId, msg: crate::node::LoopMsg) {
        self.stats.loop_messages_sent += 1;
        self.push_output(Output::ToLoop { to, msg });
    }

    /// One of `username`'s allocations ended (or was given up): its home loop counts one
    /// fewer.
    fn give_back_user(&mut self, username: &str) {
        let home = crate::node::home_of(username, self.node.count);
        if home == self.node.id() {
            self.release_user(username);
        } else {
            let username = username.to_string();
            self.send_loop(home, crate::node::LoopMsg::UserRelease { username });
        }
    }

    fn emit(&mut self, event: Event) {
        self.push_output(Output::Event(event));
    }

    /// Sends an answer to a client over its transport.
    fn send_to(&mut self, src: &Source, data: Vec<u8>) {
        let out = match src.key {
            ClientKey::Udp(listener, addr) => Output::Transmit {
                listener,
                to: addr,
                data,
            },
            ClientKey::Stream(conn) => Output::StreamWrite { conn, data },
        };
        self.push_output(out);
    }

    fn new_relay_id(&mut self) -> RelayId {
        // Ids are not reused until the counter wraps: a late datagram for a closed relay
        // socket must not be taken for a new allocation's.
        loop {
            let id = RelayId(self.next_relay);
            self.next_relay = self.next_relay.wrapping_add(1).max(1);
            if !self.relays.contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers `id`'s current deadline in the timer set, replacing the old one.
    fn reschedule_allocation(&mut self, id: AllocationId) {
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        let next = a.next_deadline();
        self.timers.remove(&(a.deadline, Timer::Allocation(id)));
        a.deadline = next;
        self.timers.insert((next, Timer::Allocation(id)));
    }

    fn allocation_timer(&mut self, now: Instant, id: AllocationId) {
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        if a.expires <= now {
            self.remove_allocation(now, id, DeleteReason::Expired);
            return;
        }
        a.expire(now);
        self.reschedule_allocation(id);
        debug_assert!(
            self.allocations.get(&id).is_none_or(|a| a.deadline > now),
            "allocation {id:?} rescheduled into the past"
        );
    }

    /// Ends allocation `id`: closes its relay sockets, quarantines its ports, reports it.
    fn remove_allocation(&mut self, now: Instant, id: AllocationId, reason: DeleteReason) -> bool {
        let Some(a) = self.allocations.remove(&id) else {
            return false;
        };
        self.timers.remove(&(a.deadline, Timer::Allocation(id)));
        self.by_client.remove(&a.key5);
        for (family, side) in a.sides.iter().enumerate() {
            if let Some(side) = side {
                self.relays.remove(&side.relay);
                self.push_output(Output::CloseRelay { relay: side.relay });
                if let Some(pool) = self.pools[family].as_mut() {
                    pool.release(side.port, now);
                }
            }
        }
        self.give_back_user(&a.username);
        if let ClientKey::Stream(conn) = a.key5 {
            self.stream_lost_allocation(now, conn);
        }
        self.stats.allocations_deleted += 1;
        self.emit(Event::AllocationDeleted {
            id,
            client: a.client,
            username: a.username,
            reason,
            traffic: a.traffic,
            age_ms: u64::try_from(now.since(a.created).as_millis()).unwrap_or(u64::MAX),
        });
        true
    }

    fn release_user(&mut self, username: &str) {
        if let Some(n) = self.per_user.get_mut(username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(username);
            }
        }
    }
}

/// Where a request came from: its 5-tuple key and what the relay reports about it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Source {
    pub key: ClientKey,
    pub info: ClientInfo,
}

/// Slots of the verified-nonce table: 1 Ki of about 90 bytes per loop, so that a few
/// hundred clients setting up at once find their nonce.
const VERIFIED_NONCES: usize = 1024;

/// Buckets of the unauthenticated answer budget: 16 Ki of 24 bytes, 384 KiB per loop.
const BUDGET_BUCKETS: usize = 16_384;

/// This loop's share of the unauthenticated answer budget. SO_REUSEPORT spreads one
/// address's ports (and so a NAT's clients) over the loops, so the per-source ceiling is
/// split like the node's; the factor holds per loop as a request and its answer share one.
fn budget_limits(c: &Config) -> BudgetLimits {
    let loops = u64::from(c.node.count.max(1));
    BudgetLimits {
        factor: c.unauth_amplification_factor,
        source_bytes_per_s: c.unauth_source_bytes_per_s.div_ceil(loops),
        node_bytes_per_s: c.unauth_node_bytes_per_s.div_ceil(loops),
    }
}

/// The relay's own addresses are never peers (RFC 8656 §21.4: a client must not reach the
/// server's own services through it). Loopback addresses are left to `allow_loopback`.
fn add_own_addresses(c: &mut Config) {
    let relays = [c.relay_v4, c.relay_v6];
    let ips: Vec<std::net::IpAddr> = relays
        .iter()
        .flatten()
        .flat_map(|r| [r.bind, r.advertised])
        .chain(c.listeners.iter().map(|l| l.local.ip()))
        .collect();
    for ip in ips {
        let ip = crate::policy::canonical(ip);
        if !ip.is_unspecified() && !ip.is_loopback() && !c.peer_policy.own_addresses.contains(&ip) {
            c.peer_policy.own_addresses.push(ip);
        }
    }
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    let err = |m: &str| Err(ConfigError(m.to_string()));
    if c.credentials.realm().is_empty() {
        return err("the realm must not be empty");
    }
    if c.relay_v4.is_none() && c.relay_v6.is_none() {
        return err("at least one relay address (IPv4 or IPv6) is needed");
    }
    if c.relay_port_min > c.relay_port_max {
        return err("relay_port_min is above relay_port_max");
    }
    if c.relay_port_min == 0 {
        return err("relay_port_min must be at least 1");
    }
    if c.default_lifetime.is_zero() || c.max_lifetime < c.default_lifetime {
        return err("the maximum allocation lifetime must be at least the default lifetime");
    }
    if c.permission_lifetime.is_zero() || c.channel_lifetime.is_zero() {
        return err("permission and channel lifetimes must be positive");
    }
    if c.user_quota == 0 || c.total_quota == 0 {
        return err("quotas must be positive");
    }
    if c.node.count == 0 || c.node.count > crate::node::MAX_LOOPS || c.node.index >= c.node.count {
        return err("the node's loop index must be below its loop count (1 to 256 loops)");
    }
    if !(1..=crate::config::MAX_UNAUTH_AMPLIFICATION_FACTOR)
        .contains(&c.unauth_amplification_factor)
    {
        return err("unauth_amplification_factor must be 1 to 10");
    }
    if c.unauth_source_bytes_per_s == 0 || c.unauth_node_bytes_per_s == 0 {
        return err("unauth_source_bytes_per_s and unauth_node_bytes_per_s must be positive");
    }
    let mut ids = BTreeSet::new();
    for l in &c.listeners {
        if !ids.insert(l.id) {
            return err("two listeners share an id");
        }
        if l.proxy_protocol && l.transport != Transport::Tcp {
            return err("the PROXY protocol is only for TCP listeners");
        }
    }
    Ok(())
}
