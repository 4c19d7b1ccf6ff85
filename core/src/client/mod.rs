//! A sans-IO TURN client (RFC 8656 §6–§12, client side; STUN transactions of RFC 8489 §6).
//!
//! Reading list: RFC 8489 §6.2 (retransmission), §9.2 (long-term credentials, password
//! algorithms, USERHASH), RFC 8656 §7 (Allocate), §8 (Refresh), §9–§10 (permissions),
//! §11 (Send and Data indications), §12 (channels).
//!
//! Used by the simulator's browser-like clients, the load generator and the tests. Like
//! the server it owns no socket and reads no clock: time comes in as an argument, the
//! transaction IDs come from a ChaCha RNG seeded by the caller, so a run is reproducible.
//!
//! ## The run loop
//!
//! ```text
//! let mut client = Client::new(config, seed, now);
//! client.allocate(now);
//! loop {
//!     while let Some(bytes) = client.poll_transmit() { /* send to the server */ }
//!     while let Some(event) = client.poll_event() { /* Allocated, Data, ... */ }
//!     // wait for input from the server or until client.poll_timeout()
//!     client.handle_input(now, bytes);   // or
//!     client.handle_timeout(now);
//! }
//! ```
//!
//! Once allocated the client keeps itself alive the way a browser does: it refreshes the
//! allocation before it expires, renews permissions every 240 s and channel bindings every
//! 540 s. Those are timers behind [`Client::poll_timeout`].
//!
//! Relayed data: [`Client::send`] picks ChannelData when a channel to the peer is bound and
//! a Send indication otherwise. [`Client::write_channel_data`] frames a payload in the
//! caller's buffer and [`Client::peek_data`] reads one without copying, for drivers (the
//! load generator) that must not allocate per packet.

mod credentials;
mod redirect;
mod transaction;

use crate::auth::PasswordAlgorithm;
use crate::channel;
use crate::framing::{Frame, StreamFramer};
use crate::ids::Transport;
use crate::stun::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use crate::time::Instant;
use core::time::Duration;
use credentials::ClientAuth;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use transaction::{Schedule, Step};

pub use redirect::MAX_REDIRECTS;
pub use transaction::{RC, RM, RTO, STREAM_TIMEOUT};

/// Most queued transmits and most queued events; beyond it the oldest are dropped (and,
/// for events, the oldest `Data` first) and counted.
pub const MAX_QUEUE: usize = 4096;
/// Allocation lifetime assumed when a success answer lacks LIFETIME (RFC 8656 §7.2: the
/// default lifetime is 10 minutes).
pub const DEFAULT_LIFETIME_S: u32 = 600;
/// Permission lifetime (RFC 8656 §9: 300 s).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Permissions are renewed this long after they were requested.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channel binding lifetime (RFC 8656 §12: 10 minutes).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Channel bindings are renewed this long after they were requested.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// After a binding ends its number is not reused for another peer for 5 minutes
/// (RFC 8656 §12).
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// Most XOR-PEER-ADDRESS attributes in one CreatePermission request; longer lists are
/// split over several requests so a request stays well under a path MTU.
pub const MAX_PEERS_PER_REQUEST: usize = 32;
/// Largest payload [`Client::send`] accepts: a Send indication carrying it, with its
/// XOR-PEER-ADDRESS and FINGERPRINT, still fits in a STUN message.
pub const MAX_PAYLOAD: usize = 65_000;
/// Largest frame accepted from a stream: a STUN message of the largest length.
const MAX_FRAME: usize = 65_535 + 20;
/// Error codes a server may send before it could check the request's integrity, hence
/// without MESSAGE-INTEGRITY: they are accepted unprotected (RFC 8489 §9.2.5). Any other
/// unprotected answer to an authenticated request is discarded.
const UNPROTECTED_ERRORS: [u16; 4] = [400, 401, 420, 438];

/// What the client needs to know about its server and credentials.
#[derive(Clone)]
pub struct ClientConfig {
    /// The TURN server.
    pub server: SocketAddr,
    /// UDP (retransmissions, one message per datagram) or a stream (framing, no
    /// retransmission).
    pub transport: Transport,
    /// Long-term credential username (RFC 8489 §9.2).
    pub username: String,
    /// Long-term credential password.
    pub password: String,
    /// LIFETIME to ask for in Allocate and in the automatic refreshes (RFC 8656 §7.1);
    /// `None` leaves it to the server.
    pub requested_lifetime_s: Option<u32>,
    /// REQUESTED-ADDRESS-FAMILY (`attr::FAMILY_IPV4` / `FAMILY_IPV6`, RFC 8656 §7.1).
    pub requested_family: Option<u8>,
    /// Ask for an IPv6 relayed address too: ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §7.1).
    pub additional_ipv6: bool,
    /// Add FINGERPRINT to requests and indications, as browsers do (RFC 8489 §14.7).
    pub fingerprint: bool,
    /// Answer a PASSWORD-ALGORITHMS offer with SHA-256 and sign with
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §9.2.4). Off, the client acts as an RFC 5389
    /// client: MD5 key, MESSAGE-INTEGRITY, no algorithm attributes.
    pub prefer_sha256: bool,
    /// Send USERHASH instead of USERNAME when the server's nonce offers username
    /// anonymity (RFC 8489 §9.2.4, §14.4).
    pub use_userhash: bool,
    /// SOFTWARE to add to requests (RFC 8489 §14.14).
    pub software: Option<String>,
}

impl ClientConfig {
    /// A browser-like configuration: no LIFETIME or family requested, FINGERPRINT on,
    /// MD5 credentials, no USERHASH, no SOFTWARE.
    pub fn new(server: SocketAddr, transport: Transport, username: &str, password: &str) -> Self {
        ClientConfig {
            server,
            transport,
            username: username.to_owned(),
            password: password.to_owned(),
            requested_lifetime_s: None,
            requested_family: None,
            additional_ipv6: false,
            fingerprint: true,
            prefer_sha256: false,
            use_userhash: false,
            software: None,
        }
    }
}

impl core::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("requested_lifetime_s", &self.requested_lifetime_s)
            .field("requested_family", &self.requested_family)
            .field("additional_ipv6", &self.additional_ipv6)
            .field("fingerprint", &self.fingerprint)
            .field("prefer_sha256", &self.prefer_sha256)
            .field("use_userhash", &self.use_userhash)
            .field("software", &self.software)
            .finish_non_exhaustive()
    }
}

/// Where the client's allocation stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClientState {
    /// Nothing asked yet.
    Idle,
    /// An Allocate transaction is under way (RFC 8656 §7.1).
    Allocating,
    /// The server granted an allocation; [`Client::relayed`] holds its addresses.
    Allocated,
    /// The allocation was deleted with a zero-lifetime Refresh (RFC 8656 §8).
    Deleted,
    /// The allocation expired: no refresh succeeded in time.
    Expired,
    /// Allocate failed, or the server no longer knows the allocation (437).
    Failed,
}

/// What happened, for the driver (drained with [`Client::poll_event`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ClientEvent {
    /// The allocation was granted (RFC 8656 §7.3).
    Allocated {
        /// Relayed transport addresses (two for a dual-stack allocation).
        relayed: Vec<SocketAddr>,
        /// XOR-MAPPED-ADDRESS: the client's address as the server sees it.
        mapped: Option<SocketAddr>,
        /// Granted lifetime.
        lifetime_s: u32,
    },
    /// Allocate failed. `code` is the ERROR-CODE, or 0 for a success answer the client
    /// could not use (no XOR-RELAYED-ADDRESS).
    AllocateFailed {
        /// The error code.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// A Refresh (explicit or automatic) succeeded (RFC 8656 §8.3).
    Refreshed {
        /// Granted lifetime.
        lifetime_s: u32,
    },
    /// A zero-lifetime Refresh deleted the allocation (RFC 8656 §8.3).
    Deleted,
    /// A Refresh failed; 437 means the allocation is gone.
    RefreshFailed {
        /// The error code.
        code: u16,
    },
    /// The allocation expired without a successful refresh.
    Expired,
    /// Permissions were installed or renewed (RFC 8656 §10.3).
    PermissionCreated {
        /// The peers, as requested.
        peers: Vec<IpAddr>,
    },
    /// CreatePermission failed (RFC 8656 §10.3).
    PermissionFailed {
        /// The peers, as requested.
        peers: Vec<IpAddr>,
        /// The error code.
        code: u16,
    },
    /// A channel was bound or renewed (RFC 8656 §12.3).
    ChannelBound {
        /// The channel number.
        channel: u16,
        /// The peer.
        peer: SocketAddr,
    },
    /// ChannelBind failed (RFC 8656 §12.3).
    ChannelBindFailed {
        /// The peer.
        peer: SocketAddr,
        /// The error code.
        code: u16,
    },
    /// A Binding request succeeded (RFC 8489 §3).
    BindingSucceeded {
        /// XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an old server).
        mapped: SocketAddr,
    },
    /// A Binding request failed; 0 for a success answer without a mapped address.
    BindingFailed {
        /// The error code.
        code: u16,
    },
    /// Data from a peer, from a Data indication or ChannelData (RFC 8656 §11.6, §12.7).
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The application data.
        data: Vec<u8>,
    },
    /// A transaction got no answer in time (RFC 8489 §6.2.1, §6.2.2).
    TimedOut {
        /// The method of the request.
        method: Method,
    },
    /// A 300 (Try Alternate) answer to Allocate was followed (RFC 8489 §10): the Allocate
    /// is queued again for `to`, which [`Client::server`] now names. On a stream
    /// transport the driver closes the connection to `from` and opens one to `to` before
    /// sending what is queued.
    Redirected {
        /// The server that redirected.
        from: SocketAddr,
        /// The ALTERNATE-SERVER it named.
        to: SocketAddr,
        /// ALTERNATE-DOMAIN, if given: the name to check `to`'s certificate against
        /// (RFC 8489 §14.16).
        domain: Option<String>,
    },
    /// The server's byte stream is not STUN/ChannelData any more: the connection is
    /// useless and should be closed. Further input is ignored.
    StreamError,
}

/// A sans-IO TURN client for one allocation on one server.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    rng: ChaCha20Rng,
    state: ClientState,
    auth: Option<ClientAuth>,
    transactions: BTreeMap<TransactionId, Transaction>,
    /// Present on stream transports.
    framer: Option<StreamFramer>,
    stream_broken: bool,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    dropped_events: u64,
    dropped_transmits: u64,
    ignored_inputs: u64,
    relayed: Vec<SocketAddr>,
    mapped: Option<SocketAddr>,
    alloc_refresh_at: Option<Instant>,
    alloc_expires_at: Option<Instant>,
    permissions: BTreeMap<IpAddr, Permission>,
    channels: BTreeMap<u16, Channel>,
    peer_channels: BTreeMap<SocketAddr, u16>,
    next_channel: u16,
    /// Reused by `handle_timeout` so that timers allocate nothing.
    scratch: Vec<TransactionId>,
    /// The servers Allocates were sent to in the last five minutes, and when (RFC 8489
    /// §10 loop check; filled by redirects, at most [`redirect::TRIED_MAX`]).
    tried: Vec<(SocketAddr, Instant)>,
    /// Redirects followed by the current Allocate attempt.
    redirects: usize,
}

impl Client {
    /// A client for `config`. `seed` drives the transaction IDs (and nothing else), so the
    /// same seed and the same inputs give the same bytes.
    pub fn new(config: ClientConfig, seed: [u8; 32], now: Instant) -> Self {
        let _ = now;
        let framer = match config.transport {
            Transport::Udp => None,
            Transport::Tcp => Some(StreamFramer::new(MAX_FRAME)),
        };
        Client {
            config,
            rng: ChaCha20Rng::from_seed(seed),
            state: ClientState::Idle,
            auth: None,
            transactions: BTreeMap::new(),
            framer,
            stream_broken: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dropped_events: 0,
            dropped_transmits: 0,
            ignored_inputs: 0,
            relayed: Vec::new(),
            mapped: None,
            alloc_refresh_at: None,
            alloc_expires_at: None,
            permissions: BTreeMap::new(),
            channels: BTreeMap::new(),
            peer_channels: BTreeMap::new(),
            next_channel: channel::MIN_CHANNEL,
            scratch: Vec::new(),
            tried: Vec::new(),
            redirects: 0,
        }
    }

    /// Sends an Allocate request for a UDP relay (RFC 8656 §7.1). The first one carries no
    /// credentials; the 401 answer's REALM and NONCE are learnt and the request retried
    /// with them, and a 438 is retried once with the new nonce.
    pub fn allocate(&mut self, now: Instant) {
        if self.state != ClientState::Allocated {
            self.state = ClientState::Allocating;
        }
        self.redirects = 0;
        self.start(now, Op::Allocate, Retries::default());
    }

    /// Sends a Refresh (RFC 8656 §8.1) asking for `lifetime_s`; 0 deletes the allocation.
    pub fn refresh(&mut self, now: Instant, lifetime_s: u32) {
        self.start(
            now,
            Op::Refresh {
                lifetime_s: Some(lifetime_s),
                auto: false,
            },
            Retries::default(),
        );
    }

    /// Sends CreatePermission for `peers` (RFC 8656 §10.1): several XOR-PEER-ADDRESS in
    /// one request, at most [`MAX_PEERS_PER_REQUEST`] per request. Once installed, the
    /// permissions are renewed every 240 s.
    pub fn create_permission(&mut self, now: Instant, peers: &[IpAddr]) {
        for chunk in peers.chunks(MAX_PEERS_PER_REQUEST) {
            for ip in chunk {
                self.permissions.entry(*ip).or_insert(Permission {
                    active: false,
                    refresh_at: None,
                    expires_at: None,
                });
            }
            self.start(
                now,
                Op::CreatePermission {
                    peers: chunk.to_vec(),
                    auto: false,
                },
                Retries::default(),
            );
        }
    }

    /// Sends ChannelBind for `peer` (RFC 8656 §12.1) and returns the channel number: the
    /// peer's current one if it has one (a renewal), else the next free number from
    /// 0x4000 on. `None` when all 4096 numbers are taken or cooling down (§12: a number is
    /// not given to another peer for 5 minutes after its binding ends).
    pub fn channel_bind(&mut self, now: Instant, peer: SocketAddr) -> Option<u16> {
        let number = match self.peer_channels.get(&peer) {
            Some(&n) => n,
            None => {
                let n = self.free_channel()?;
                self.channels.insert(
                    n,
                    Channel {
                        peer,
                        state: ChannelState::Pending,
                        refresh_at: None,
                        expires_at: None,
                    },
                );
                self.peer_channels.insert(peer, n);
                n
            }
        };
        self.start(
            now,
            Op::ChannelBind {
                channel: number,
                peer,
                auto: false,
            },
            Retries::default(),
        );
        Some(number)
    }

    /// Sends a plain STUN Binding request (RFC 8489 §3), without credentials, as a
    /// browser's keep-alive or reflexive-address query does.
    pub fn binding(&mut self, now: Instant) {
        self.start(now, Op::Binding, Retries::default());
    }

    /// Queues a Send indication carrying `data` to `peer` (RFC 8656 §11.1). Payloads over
    /// [`MAX_PAYLOAD`] are dropped and counted in [`Client::dropped_transmits`].
    pub fn send_indication(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        let _ = now;
        if data.len() > MAX_PAYLOAD {
            self.dropped_transmits += 1;
            return;
        }
        let tid = self.new_tid();
        let mut b = MessageBuilder::new(Method::SEND, Class::Indication, tid);
        b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        b.add(attr::DATA, data);
        if self.config.fingerprint {
            b.add_fingerprint();
        }
        self.push_transmit(b.finish());
    }

    /// Queues `data` for `peer`: ChannelData when a channel to the peer is bound and
    /// confirmed (RFC 8656 §12.6; padded to 4 bytes on streams, §12.5), a Send indication
    /// otherwise.
    pub fn send(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        let len = data.len();
        if len > MAX_PAYLOAD || self.bound_channel(peer).is_none() {
            self.send_indication(now, peer, data);
            return;
        }
        let mut out = vec![0u8; channel::HEADER_LEN + len + self.padding(len)];
        if let Some(payload) = out.get_mut(channel::HEADER_LEN..channel::HEADER_LEN + len) {
            payload.copy_from_slice(data);
        }
        if let Some(total) = self.write_channel_data(peer, &mut out, len) {
            out.truncate(total);
            self.push_transmit(out);
        }
    }

    /// Zero-allocation data path: frames the payload the caller already put at
    /// `out[4..4 + payload_len]` as ChannelData for `peer` (RFC 8656 §12.4): writes the
    /// header into `out[..4]` and, on streams, zeroes the padding after the payload
    /// (§12.5). Returns the number of bytes to send, or `None` when no confirmed channel
    /// leads to `peer`, the payload is longer than 65535 bytes, or `out` is too short.
    pub fn write_channel_data(
        &self,
        peer: SocketAddr,
        out: &mut [u8],
        payload_len: usize,
    ) -> Option<usize> {
        let number = self.bound_channel(peer)?;
        let len = u16::try_from(payload_len).ok()?;
        let end = channel::HEADER_LEN + payload_len;
        let total = end + self.padding(payload_len);
        let buf = out.get_mut(..total)?;
        channel::write_header(buf, number, len);
        if let Some(pad) = buf.get_mut(end..) {
            pad.fill(0);
        }
        Some(total)
    }

    /// Zero-copy read of relayed data: if `message` (one datagram, or one frame of a
    /// stream) is ChannelData on a known channel or a Data indication from a permitted
    /// peer, returns the peer and the payload inside `message`. Drivers that must not
    /// allocate per packet call this first and give the message to
    /// [`Client::handle_input`] only when it answers `None`.
    pub fn peek_data<'a>(&self, message: &'a [u8]) -> Option<(SocketAddr, &'a [u8])> {
        match message.first()? >> 6 {
            0b00 => {
                let msg = Message::parse(message).ok()?;
                self.data_indication(&msg)
            }
            0b01 => self.channel_data(message),
            _ => None,
        }
    }

    /// Feeds what came from the server: one whole datagram on UDP (STUN or ChannelData,
    /// told apart by the first two bits, RFC 8656 §12.4), or the next bytes of the stream,
    /// split anywhere, on TCP.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.input(now, data, None);
    }

    /// Like [`Client::handle_input`], but relayed data (ChannelData, Data indications) is
    /// handed to `on_data(peer, payload)` in place instead of being copied into
    /// [`ClientEvent::Data`]: the zero-copy receive path for both transports. Everything
    /// else still becomes events.
    pub fn handle_input_with(
        &mut self,
        now: Instant,
        data: &[u8],
        mut on_data: impl FnMut(SocketAddr, &[u8]),
    ) {
        self.input(now, data, Some(&mut on_data));
    }

    /// Runs the timers that are due at `now`: retransmissions and transaction timeouts,
    /// the allocation's refresh and expiry, permission and channel renewals and expiries.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_transactions(now);
        self.run_allocation_timers(now);
        self.run_permission_timers(now);
        self.run_channel_timers(now);
    }

    /// The next bytes to send to the server: one datagram on UDP, the next piece of the
    /// stream on TCP. Drain after every call into the client.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event. Drain after every call into the client.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] next has work to do; `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = None;
        for t in self.transactions.values() {
            next = earliest(next, Some(t.schedule.deadline()));
        }
        next = earliest(next, self.alloc_refresh_at);
        next = earliest(next, self.alloc_expires_at);
        for p in self.permissions.values() {
            next = earliest(next, p.refresh_at);
            next = earliest(next, p.expires_at);
        }
        for c in self.channels.values() {
            next = earliest(next, c.refresh_at);
            next = earliest(next, c.expires_at);
            if let ChannelState::Cooldown { until } = c.state {
                next = earliest(next, Some(until));
            }
        }
        next
    }

    /// The relayed transport addresses of the allocation (empty when not allocated).
    pub fn relayed(&self) -> &[SocketAddr] {
        &self.relayed
    }

    /// The client's reflexive address, from the last Allocate or Binding answer.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// Where the allocation stands.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The confirmed channel to `peer`, if any.
    pub fn channel_for(&self, peer: SocketAddr) -> Option<u16> {
        self.bound_channel(peer)
    }

    /// True when a permission for `ip` is installed (confirmed by the server, not expired).
    pub fn has_permission(&self, ip: IpAddr) -> bool {
        self.permissions.get(&ip).is_some_and(|p| p.active)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The realm learnt from the server, once challenged.
    pub fn realm(&self) -> Option<&str> {
        self.auth.as_ref().map(ClientAuth::realm)
    }

    /// The password algorithm in use, once challenged.
    pub fn password_algorithm(&self) -> Option<PasswordAlgorithm> {
        self.auth.as_ref().map(ClientAuth::algorithm)
    }

    /// Transactions waiting for an answer.
    pub fn outstanding_transactions(&self) -> usize {
        self.transactions.len()
    }

    /// Events dropped because the event queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Transmits dropped: the queue was full, or a payload too large to send.
    pub fn dropped_transmits(&self) -> u64 {
        self.dropped_transmits
    }

    /// Inputs ignored: malformed, unmatched responses, responses failing integrity, data
    /// on unknown channels or from peers without a permission.
    pub fn ignored_inputs(&self) -> u64 {
        self.ignored_inputs
    }
}

// ---------------------------------------------------------------------------------------
// Internals.

/// A request the client makes, kept so that it can be rebuilt for a 401/438 retry.
#[derive(Clone, Debug)]
enum Op {
    Allocate,
    Refresh {
        lifetime_s: Option<u32>,
        auto: bool,
    },
    CreatePermission {
        peers: Vec<IpAddr>,
        auto: bool,
    },
    ChannelBind {
        channel: u16,
        peer: SocketAddr,
        auto: bool,
    },
    Binding,
}

impl Op {
    fn method(&self) -> Method {
        match self {
            Op::Allocate => Method::ALLOCATE,
            Op::Refresh { .. } => Method::REFRESH,
            Op::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Op::ChannelBind { .. } => Method::CHANNEL_BIND,
            Op::Binding => Method::BINDING,
        }
    }
}

/// Which authentication retries a request has had: at most one after a 401 and one after
/// a 438 (RFC 8489 §9.2.5), so a server cannot keep the client busy.
#[derive(Clone, Copy, Debug, Default)]
struct Retries {
    after_401: bool,
    after_438: bool,
}

/// One outstanding request.
#[derive(Debug)]
struct Transaction {
    op: Op,
    /// The request as sent, for retransmission.
    bytes: Vec<u8>,
    /// The credentials the request was signed with: the answer must verify with them.
    auth: Option<ClientAuth>,
    schedule: Schedule,
    retries: Retries,
}

#[derive(Clone, Copy, Debug)]
struct Permission {
    /// Confirmed by a success answer (to CreatePermission or ChannelBind).
    active: bool,
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelState {
    Pending,
    Bound,
    Cooldown { until: Instant },
}

#[derive(Clone, Copy, Debug)]
struct Channel {
    peer: SocketAddr,
    state: ChannelState,
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
}

/// Where relayed data goes: a caller's callback, or (`None`) the event queue.
type Sink<'a, 'f> = Option<&'a mut (dyn FnMut(SocketAddr, &[u8]) + 'f)>;

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// When to refresh an allocation of `lifetime_s`: a minute before it ends, or half-way
/// for lifetimes of two minutes or less, where a minute would be most of it.
fn refresh_delay(lifetime_s: u32) -> Duration {
    if lifetime_s > 120 {
        Duration::from_secs(u64::from(lifetime_s - 60))
    } else {
        Duration::from_millis(u64::from(lifetime_s) * 500)
    }
}

impl Client {
    fn new_tid(&mut self) -> TransactionId {
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        TransactionId(id)
    }

    fn reliable(&self) -> bool {
        self.config.transport == Transport::Tcp
    }

    fn padding(&self, len: usize) -> usize {
        if self.reliable() {
            channel::stream_padding(len)
        } else {
            0
        }
    }

    fn push_transmit(&mut self, bytes: Vec<u8>) {
        if self.transmits.len() >= MAX_QUEUE {
            self.transmits.pop_front();
            self.dropped_transmits += 1;
        }
        self.transmits.push_back(bytes);
    }

    fn push_event(&mut self, event: ClientEvent) {
        if self.events.len() >= MAX_QUEUE {
            self.dropped_events += 1;
            let oldest_data = self
                .events
                .iter()
                .position(|e| matches!(e, ClientEvent::Data { .. }));
            match oldest_data {
                Some(i) => {
                    self.events.remove(i);
                }
                // Only control events are queued: new data is what gives way.
                None if matches!(event, ClientEvent::Data { .. }) => return,
                None => {
                    self.events.pop_front();
                }
            }
        }
        self.events.push_back(event);
    }

    /// Starts a transaction for `op`: builds, queues and remembers the request.
    fn start(&mut self, now: Instant, op: Op, retries: Retries) {
        let tid = self.new_tid();
        // Binding goes without credentials, like a browser's, unless a 401 asked for them.
        let signed = !matches!(op, Op::Binding) || retries.after_401;
        let auth = if signed { self.auth.clone() } else { None };
        let bytes = self.build_request(&op, tid, auth.as_ref());
        self.push_transmit(bytes.clone());
        let schedule = Schedule::new(now, self.reliable());
        self.transactions.insert(
            tid,
            Transaction {
                op,
                bytes,
                auth,
                schedule,
                retries,
            },
        );
    }

    fn build_request(&self, op: &Op, tid: TransactionId, auth: Option<&ClientAuth>) -> Vec<u8> {
        let mut b = MessageBuilder::new(op.method(), Class::Request, tid);
        match op {
            Op::Allocate => {
                b.add(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
                if let Some(l) = self.config.requested_lifetime_s {
                    b.add_u32(attr::LIFETIME, l);
                }
                if let Some(f) = self.config.requested_family {
                    b.add(attr::REQUESTED_ADDRESS_FAMILY, &[f, 0, 0, 0]);
                }
                if self.config.additional_ipv6 {
                    b.add(
                        attr::ADDITIONAL_ADDRESS_FAMILY,
                        &[attr::FAMILY_IPV6, 0, 0, 0],
                    );
                }
            }
            Op::Refresh { lifetime_s, .. } => {
                if let Some(l) = lifetime_s {
                    b.add_u32(attr::LIFETIME, *l);
                }
            }
            Op::CreatePermission { peers, .. } => {
                for ip in peers {
                    b.add_xor_address(attr::XOR_PEER_ADDRESS, SocketAddr::new(*ip, 0));
                }
            }
            Op::ChannelBind { channel, peer, .. } => {
                let [hi, lo] = channel.to_be_bytes();
                b.add(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0]);
                b.add_xor_address(attr::XOR_PEER_ADDRESS, *peer);
            }
            Op::Binding => {}
        }
        if let Some(software) = &self.config.software {
            b.add(attr::SOFTWARE, software.as_bytes());
        }
        if let Some(a) = auth {
            a.add_credentials(&mut b, &self.config.username);
            a.sign(&mut b);
        }
        if self.config.fingerprint {
            b.add_fingerprint();
        }
        b.finish()
    }

    fn free_channel(&mut self) -> Option<u16> {
        let count = channel::MAX_CHANNEL - channel::MIN_CHANNEL + 1;
        let first = self.next_channel.saturating_sub(channel::MIN_CHANNEL) % count;
        (0..count)
            .map(|i| channel::MIN_CHANNEL + (first + i) % count)
            .find(|n| !self.channels.contains_key(n))
            .inspect(|&n| {
                self.next_channel = if n >= channel::MAX_CHANNEL {
                    channel::MIN_CHANNEL
                } else {
                    n + 1
                };
            })
    }

    fn bound_channel(&self, peer: SocketAddr) -> Option<u16> {
        let n = *self.peer_channels.get(&peer)?;
        let c = self.channels.get(&n)?;
        (c.state == ChannelState::Bound).then_some(n)
    }

    fn input(&mut self, now: Instant, data: &[u8], mut sink: Sink<'_, '_>) {
        let Some(mut framer) = self.framer.take() else {
            self.on_frame(now, data, sink);
            return;
        };
        if !self.stream_broken {
            let pushed = framer.push(data, |frame| {
                let bytes = match frame {
                    Frame::Stun(bytes) | Frame::ChannelData(bytes) => bytes,
                };
                self.on_frame(now, bytes, sink.as_deref_mut());
                true
            });
            if pushed.is_err() && self.framer.is_none() {
                self.stream_broken = true;
                self.push_event(ClientEvent::StreamError);
            }
        }
        // A redirect put a fresh framer in place for the new connection: the old one, and
        // what it held of the old connection, is done.
        if self.framer.is_none() {
            self.framer = Some(framer);
        }
    }

    /// One whole message: a datagram, or a frame of the stream. STUN and ChannelData are
    /// told apart by the first two bits (RFC 8656 §12.4).
    fn on_frame(&mut self, now: Instant, data: &[u8], sink: Sink<'_, '_>) {
        match data.first().map(|b| b >> 6) {
            Some(0b00) => self.on_stun(now, data, sink),
            Some(0b01) => match self.channel_data(data) {
                Some((peer, payload)) => self.deliver(peer, payload, sink),
                None => self.ignored_inputs += 1,
            },
            _ => self.ignored_inputs += 1,
        }
    }

    fn deliver(&mut self, peer: SocketAddr, payload: &[u8], sink: Sink<'_, '_>) {
        match sink {
            Some(on_data) => on_data(peer, payload),
            None => self.push_event(ClientEvent::Data {
                peer,
                data: payload.to_vec(),
            }),
        }
    }

    /// ChannelData on a bound (or being bound) channel; others are discarded (RFC 8656
    /// §12.7).
    fn channel_data<'a>(&self, data: &'a [u8]) -> Option<(SocketAddr, &'a [u8])> {
        let (number, range) = channel::parse(data).ok()?;
        let c = self.channels.get(&number)?;
        if matches!(c.state, ChannelState::Cooldown { .. }) {
            return None;
        }
        Some((c.peer, data.get(range)?))
    }

    /// A Data indication from a peer the client has a permission (or channel) for: RFC
    /// 8656 §11.6 says to discard the others.
    fn data_indication<'a>(&self, msg: &Message<'a>) -> Option<(SocketAddr, &'a [u8])> {
        if msg.class() != Class::Indication || msg.method() != Method::DATA {
            return None;
        }
        let tid = msg.transaction_id();
        let peer = attr::decode_xor_address(msg.get(attr::XOR_PEER_ADDRESS)?, &tid).ok()?;
        let data = msg.get(attr::DATA)?;
        let permitted = self.permissions.contains_key(&peer.ip())
            || self.channels.values().any(|c| {
                c.peer.ip() == peer.ip() && !matches!(c.state, ChannelState::Cooldown { .. })
            });
        permitted.then_some((peer, data))
    }

    fn on_stun(&mut self, now: Instant, bytes: &[u8], sink: Sink<'_, '_>) {
        let Ok(msg) = Message::parse(bytes) else {
            self.ignored_inputs += 1;
            return;
        };
        match msg.class() {
            Class::Indication => match self.data_indication(&msg) {
                Some((peer, data)) => self.deliver(peer, data, sink),
                None => self.ignored_inputs += 1,
            },
            Class::Success | Class::Error => self.on_response(now, &msg),
            Class::Request => self.ignored_inputs += 1,
        }
    }

    fn on_response(&mut self, now: Instant, msg: &Message<'_>) {
        let tid = msg.transaction_id();
        let Some(txn) = self.transactions.get(&tid) else {
            self.ignored_inputs += 1;
            return;
        };
        if msg.method() != txn.op.method() {
            self.ignored_inputs += 1;
            return;
        }
        let error = if msg.class() == Class::Error {
            match msg
                .get(attr::ERROR_CODE)
                .and_then(|v| attr::decode_error_code(v).ok())
            {
                Some((code, reason)) => Some((code, reason)),
                // An error answer without ERROR-CODE says nothing: as if never received.
                None => {
                    self.ignored_inputs += 1;
                    return;
                }
            }
        } else {
            None
        };
        if let Some(auth) = &txn.auth {
            let verified = credentials::verify(msg, &auth.key());
            let unprotected_ok = msg.integrity().is_none()
                && error.is_some_and(|(code, _)| UNPROTECTED_ERRORS.contains(&code));
            if !verified && !unprotected_ok {
                // RFC 8489 §9.2.5: discarded as if never received; the retransmissions
                // go on.
                self.ignored_inputs += 1;
                return;
            }
        }
        let Some(txn) = self.transactions.remove(&tid) else {
            return;
        };
        let start = txn.schedule.start();
        match error {
            None => self.on_success(start, txn.op, msg),
            Some((code, reason)) => {
                if (code == 401 || code == 438) && self.retry_with_challenge(now, &txn, code, msg) {
                    return;
                }
                // Only a 300 whose integrity was checked above: unsigned, anyone on the
                // path could send the client to a server of their choosing.
                if code == 300 && txn.auth.is_some() && self.follow_redirect(now, &txn.op, msg) {
                    return;
                }
                self.on_failure(now, txn.op, code, reason);
            }
        }
    }

    /// Retries a request answered with 401 or 438 with the challenge's credentials
    /// (RFC 8489 §9.2.5). The challenge is learnt in any case, so the next request carries
    /// the newest nonce. Returns false when the request may not be retried: already
    /// retried for this code, a challenge without REALM/NONCE, or a 401 to a request that
    /// already carried exactly these credentials (the password is wrong).
    fn retry_with_challenge(
        &mut self,
        now: Instant,
        txn: &Transaction,
        code: u16,
        msg: &Message<'_>,
    ) -> bool {
        let c = &self.config;
        let Ok(auth) = ClientAuth::from_challenge(
            msg,
            &c.username,
            &c.password,
            c.prefer_sha256,
            c.use_userhash,
        ) else {
            return false;
        };
        let refused = code == 401
            && txn
                .auth
                .as_ref()
                .is_some_and(|sent| sent.same_challenge(&auth));
        self.auth = Some(auth);
        let mut retries = txn.retries;
        let already = if code == 401 {
            &mut retries.after_401
        } else {
            &mut retries.after_438
        };
        if *already || refused {
            return false;
        }
        *already = true;
        self.start(now, txn.op.clone(), retries);
        true
    }

    fn on_success(&mut self, start: Instant, op: Op, msg: &Message<'_>) {
        let tid = msg.transaction_id();
        match op {
            Op::Allocate => {
                let relayed: Vec<SocketAddr> = msg
                    .attributes()
                    .filter(|(ty, _)| *ty == attr::XOR_RELAYED_ADDRESS)
                    .filter_map(|(_, v)| attr::decode_xor_address(v, &tid).ok())
                    .collect();
                if relayed.is_empty() {
                    if self.state == ClientState::Allocating {
                        self.state = ClientState::Failed;
                    }
                    let reason = "success without XOR-RELAYED-ADDRESS".to_owned();
                    self.push_event(ClientEvent::AllocateFailed { code: 0, reason });
                    return;
                }
                let mapped = msg
                    .get(attr::XOR_MAPPED_ADDRESS)
                    .and_then(|v| attr::decode_xor_address(v, &tid).ok());
                let lifetime_s = self.lifetime_of(msg, self.config.requested_lifetime_s);
                self.relayed.clone_from(&relayed);
                if mapped.is_some() {
                    self.mapped = mapped;
                }
                self.state = ClientState::Allocated;
                self.arm_allocation(start, lifetime_s);
                self.push_event(ClientEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime_s,
                });
            }
            Op::Refresh {
                lifetime_s: requested,
                ..
            } => {
                let lifetime_s = if requested == Some(0) {
                    0
                } else {
                    self.lifetime_of(msg, requested)
                };
                if lifetime_s == 0 {
                    self.end_allocation(ClientState::Deleted);
                    self.push_event(ClientEvent::Deleted);
                } else {
                    // A late answer after the allocation ended revives nothing.
                    if self.state == ClientState::Allocated {
                        self.arm_allocation(start, lifetime_s);
                    }
                    self.push_event(ClientEvent::Refreshed { lifetime_s });
                }
            }
            Op::CreatePermission { peers, .. } => {
                for ip in &peers {
                    self.confirm_permission(*ip, start);
                }
                self.push_event(ClientEvent::PermissionCreated { peers });
            }
            Op::ChannelBind { channel, peer, .. } => {
                let entry = self.channels.get_mut(&channel).filter(|c| {
                    c.peer == peer && !matches!(c.state, ChannelState::Cooldown { .. })
                });
                let Some(entry) = entry else {
                    // A late answer: the binding was given up, or its allocation ended,
                    // while the request was out.
                    self.ignored_inputs += 1;
                    return;
                };
                entry.state = ChannelState::Bound;
                entry.refresh_at = Some(start + CHANNEL_REFRESH);
                entry.expires_at = Some(start + CHANNEL_LIFETIME);
                self.peer_channels.insert(peer, channel);
                // RFC 8656 §12.2: a ChannelBind installs or refreshes the permission too.
                self.confirm_permission(peer.ip(), start);
                self.push_event(ClientEvent::ChannelBound { channel, peer });
            }
            Op::Binding => {
                let mapped = msg
                    .get(attr::XOR_MAPPED_ADDRESS)
                    .and_then(|v| attr::decode_xor_address(v, &tid).ok())
                    .or_else(|| {
                        msg.get(attr::MAPPED_ADDRESS)
                            .and_then(|v| attr::decode_address(v).ok())
                    });
                match mapped {
                    Some(mapped) => {
                        self.mapped = Some(mapped);
                        self.push_event(ClientEvent::BindingSucceeded { mapped });
                    }
                    None => self.push_event(ClientEvent::BindingFailed { code: 0 }),
                }
            }
        }
    }

    fn on_failure(&mut self, now: Instant, op: Op, code: u16, reason: &str) {
        match op {
            Op::Allocate => {
                if self.state == ClientState::Allocating {
                    self.state = ClientState::Failed;
                }
                self.push_event(ClientEvent::AllocateFailed {
                    code,
                    reason: reason.to_owned(),
                });
            }
            Op::Refresh { lifetime_s, .. } => {
                if code == 437 {
                    // RFC 8656 §8.3: the server has no such allocation (any more).
                    let state = if lifetime_s == Some(0) {
                        ClientState::Deleted
                    } else {
                        ClientState::Failed
                    };
                    self.end_allocation(state);
                }
                self.push_event(ClientEvent::RefreshFailed { code });
            }
            Op::CreatePermission { peers, .. } => {
                self.abandon_permissions(&peers, now, false);
                self.push_event(ClientEvent::PermissionFailed { peers, code });
            }
            Op::ChannelBind { channel, peer, .. } => {
                self.abandon_channel(channel, peer, now, false);
                self.push_event(ClientEvent::ChannelBindFailed { peer, code });
            }
            Op::Binding => self.push_event(ClientEvent::BindingFailed { code }),
        }
    }

    fn on_timeout(&mut self, now: Instant, op: Op) {
        let method = op.method();
        match op {
            Op::Allocate => {
                if self.state == ClientState::Allocating {
                    self.state = ClientState::Failed;
                }
            }
            Op::Refresh { auto, .. } => {
                // Try again while the allocation lives: the next attempt may get through.
                if auto
                    && self.state == ClientState::Allocated
                    && self.alloc_expires_at.is_some_and(|e| e > now)
                {
                    self.alloc_refresh_at = Some(now);
                }
            }
            Op::CreatePermission { peers, auto } => self.abandon_permissions(&peers, now, auto),
            Op::ChannelBind {
                channel,
                peer,
                auto,
            } => self.abandon_channel(channel, peer, now, auto),
            Op::Binding => {}
        }
        self.push_event(ClientEvent::TimedOut { method });
    }

    /// After a failed or timed-out CreatePermission: forgets permissions never confirmed;
    /// confirmed ones live on until they expire, renewed again only if `retry`.
    fn abandon_permissions(&mut self, peers: &[IpAddr], now: Instant, retry: bool) {
        for ip in peers {
            let Some(p) = self.permissions.get_mut(ip) else {
                continue;
            };
            if !p.active {
                self.permissions.remove(ip);
            } else if retry && p.expires_at.is_some_and(|e| e > now) {
                p.refresh_at = Some(now);
            }
        }
    }

    /// After a failed or timed-out ChannelBind: a binding never confirmed is forgotten
    /// (its number is free again); a confirmed one lives until it expires, renewed again
    /// only if `retry`.
    fn abandon_channel(&mut self, channel: u16, peer: SocketAddr, now: Instant, retry: bool) {
        let Some(c) = self.channels.get_mut(&channel) else {
            return;
        };
        if c.peer != peer {
            return;
        }
        match c.state {
            ChannelState::Pending => {
                self.channels.remove(&channel);
                self.peer_channels.remove(&peer);
            }
            ChannelState::Bound => {
                if retry && c.expires_at.is_some_and(|e| e > now) {
                    c.refresh_at = Some(now);
                }
            }
            ChannelState::Cooldown { .. } => {}
        }
    }

    fn confirm_permission(&mut self, ip: IpAddr, start: Instant) {
        let p = self.permissions.entry(ip).or_insert(Permission {
            active: false,
            refresh_at: None,
            expires_at: None,
        });
        p.active = true;
        p.refresh_at = earliest_later(p.refresh_at, start + PERMISSION_REFRESH);
        p.expires_at = earliest_later(p.expires_at, start + PERMISSION_LIFETIME);
    }

    fn lifetime_of(&self, msg: &Message<'_>, requested: Option<u32>) -> u32 {
        msg.get(attr::LIFETIME)
            .and_then(|v| attr::decode_u32(v).ok())
            .or(requested)
            .unwrap_or(DEFAULT_LIFETIME_S)
    }

    fn arm_allocation(&mut self, start: Instant, lifetime_s: u32) {
        self.alloc_refresh_at = Some(start + refresh_delay(lifetime_s));
        self.alloc_expires_at = Some(start + Duration::from_secs(u64::from(lifetime_s)));
    }

    /// The allocation is over: everything hanging off it goes.
    fn end_allocation(&mut self, state: ClientState) {
        self.state = state;
        self.relayed.clear();
        self.alloc_refresh_at = None;
        self.alloc_expires_at = None;
        self.permissions.clear();
        self.channels.clear();
        self.peer_channels.clear();
    }

    fn run_transactions(&mut self, now: Instant) {
        let mut due = core::mem::take(&mut self.scratch);
        due.clear();
        due.extend(
            self.transactions
                .iter()
                .filter(|(_, t)| t.schedule.deadline() <= now)
                .map(|(id, _)| *id),
        );
        for tid in &due {
            let Some(txn) = self.transactions.get_mut(tid) else {
                continue;
            };
            match txn.schedule.on_timeout(now) {
                Step::Wait => {}
                Step::Retransmit => {
                    let bytes = txn.bytes.clone();
                    self.push_transmit(bytes);
                }
                Step::GiveUp => {
                    if let Some(txn) = self.transactions.remove(tid) {
                        self.on_timeout(now, txn.op);
                    }
                }
            }
        }
        self.scratch = due;
    }

    fn run_allocation_timers(&mut self, now: Instant) {
        if self.alloc_expires_at.is_some_and(|e| e <= now) {
            self.end_allocation(ClientState::Expired);
            self.push_event(ClientEvent::Expired);
            return;
        }
        if self.alloc_refresh_at.is_some_and(|t| t <= now) {
            self.alloc_refresh_at = None;
            let lifetime_s = self.config.requested_lifetime_s;
            self.start(
                now,
                Op::Refresh {
                    lifetime_s,
                    auto: true,
                },
                Retries::default(),
            );
        }
    }

    fn run_permission_timers(&mut self, now: Instant) {
        self.permissions
            .retain(|_, p| !matches!(p.expires_at, Some(e) if e <= now));
        let mut due = Vec::new();
        for (ip, p) in self.permissions.iter_mut() {
            if p.refresh_at.is_some_and(|t| t <= now) {
                p.refresh_at = None;
                due.push(*ip);
            }
        }
        for chunk in due.chunks(MAX_PEERS_PER_REQUEST) {
            self.start(
                now,
                Op::CreatePermission {
                    peers: chunk.to_vec(),
                    auto: true,
                },
                Retries::default(),
            );
        }
    }

    fn run_channel_timers(&mut self, now: Instant) {
        let mut rebind = Vec::new();
        let mut gone = Vec::new();
        for (&n, c) in self.channels.iter_mut() {
            match c.state {
                ChannelState::Cooldown { until } => {
                    if until <= now {
                        gone.push(n);
                    }
                }
                ChannelState::Pending | ChannelState::Bound => {
                    if let Some(e) = c.expires_at.filter(|e| *e <= now) {
                        c.state = ChannelState::Cooldown {
                            until: e + CHANNEL_COOLDOWN,
                        };
                        c.refresh_at = None;
                        c.expires_at = None;
                        self.peer_channels.remove(&c.peer);
                    } else if c.refresh_at.is_some_and(|t| t <= now) {
                        c.refresh_at = None;
                        rebind.push((n, c.peer));
                    }
                }
            }
        }
        for n in gone {
            self.channels.remove(&n);
        }
        for (channel, peer) in rebind {
            self.start(
                now,
                Op::ChannelBind {
                    channel,
                    peer,
                    auto: true,
                },
                Retries::default(),
            );
        }
    }
}

/// The later of an optional deadline and a new one: a renewal never shortens.
fn earliest_later(current: Option<Instant>, new: Instant) -> Option<Instant> {
    Some(current.map_or(new, |c| c.max(new)))
}

#[cfg(test)]
mod tests;
