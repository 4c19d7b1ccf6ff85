//! What every oracle family shares: the shadow of one server (its state as seen from
//! the core's boundary), the records kept for the end of the run, and the view of one
//! step the per-step checks look at. The families (sibling files) add `impl Shadow`
//! blocks over this state; this file depends on none of them.

use crate::net::StreamId;
use crate::scenario::Via;
use crate::server::ServerHost;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::cidr::IpNet;
use turnpike_core::event::{ClientInfo, DeleteReason};
use turnpike_core::framing::StreamFramer;
use turnpike_core::server::Stats;
use turnpike_core::stun::{attr, Message, Method};
use turnpike_core::{AllocationId, Instant, ListenerId, RelayId};

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

impl Key {
    /// The key of the client the core names in an event.
    pub fn of(client: &ClientInfo) -> Key {
        match client.conn {
            Some(c) => Key::Stream(StreamId(c.0)),
            None => Key::Udp(client.listener, client.addr),
        }
    }
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
pub(super) const LISTING_EVERY: Duration = Duration::from_secs(1);

/// What an Allocate asked for, as far as the node-level 508 checks care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AllocKind {
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
pub(super) struct StepRequest {
    pub(super) key: Key,
    pub(super) lp: u16,
    pub(super) tid: [u8; 12],
    pub(super) method: Method,
    pub(super) peers: Vec<SocketAddr>,
    pub(super) answers: u32,
    pub(super) arrived: Instant,
    pub(super) kind: AllocKind,
    /// Copies received (retransmissions while the answer waited for another loop).
    pub(super) copies: u32,
    /// Its USERNAME, if any.
    pub(super) username: Option<String>,
}

#[derive(Debug)]
pub(super) struct RelayShadow {
    pub(super) addr: SocketAddr,
    pub(super) owner: Option<AllocationId>,
}

/// A relay socket of the node: the loop that bound it and that loop's id for it.
pub(super) type LoopRelay = (u16, RelayId);

#[derive(Debug)]
pub(super) struct TokenShadow {
    pub(super) issued: Instant,
    pub(super) redeemed: bool,
}

#[derive(Debug)]
pub(super) struct AllocShadow {
    pub(super) key: Key,
    pub(super) lp: u16,
    pub(super) username: String,
    pub(super) relayed: Vec<SocketAddr>,
    pub(super) relays: Vec<LoopRelay>,
    pub(super) expires: Instant,
    pub(super) perms: BTreeMap<IpAddr, Instant>,
    pub(super) record: usize,
}

#[derive(Debug)]
pub(super) struct StreamObs {
    pub(super) lp: u16,
    pub(super) header: Option<Vec<u8>>,
    pub(super) framer: Option<StreamFramer>,
    pub(super) step_data: u64,
}

/// The shadow of one server.
#[derive(Debug)]
pub struct Shadow {
    pub(super) cfg: ShadowConfig,
    pub(super) step_requests: Vec<StepRequest>,
    /// Requests whose answer waits for another loop, with their deadline.
    pub(super) waiting: Vec<(Instant, StepRequest)>,
    /// Loops that sent a loop message during this step.
    pub(super) step_sent: BTreeSet<u16>,
    pub(super) step_closed: BTreeSet<StreamId>,
    pub(super) step_deleted: Vec<LoopRelay>,
    pub(super) step_slack: u64,
    pub(super) step_alloc_events: bool,
    pub(super) relays: BTreeMap<LoopRelay, RelayShadow>,
    /// Open relay sockets per loop, IPv4 and IPv6.
    pub(super) relays_per_loop: Vec<[u32; 2]>,
    /// Live allocations per loop.
    pub(super) allocs_per_loop: Vec<u64>,
    pub(super) holders: BTreeMap<SocketAddr, LoopRelay>,
    /// Live allocations per username, over the node's loops.
    pub(super) by_user: BTreeMap<String, u64>,
    /// Every allocation id ever created in the node.
    pub(super) ids: BTreeSet<AllocationId>,
    /// Relayed addresses of live allocations.
    pub(super) relayed: BTreeMap<SocketAddr, AllocationId>,
    /// RESERVATION-TOKENs the node answered with.
    pub(super) tokens: BTreeMap<[u8; 8], TokenShadow>,
    /// Per loop: since when it has had a free IPv4 port without a break, as its core
    /// said when the answer being checked went out.
    pub(super) free_since: Vec<Option<Instant>>,
    /// Since when the node has had room under `total_quota` at the end of every step.
    pub(super) room_since: Option<Instant>,
    /// The last failed relay bind of the node.
    pub(super) last_bind_failure: Option<Instant>,
    pub(super) next_listing: Instant,
    pub(super) released: BTreeMap<(bool, u16), Instant>,
    pub(super) allocs: BTreeMap<AllocationId, AllocShadow>,
    pub(super) by_key: BTreeMap<Key, AllocationId>,
    /// Permission-granting answers already given (key, transaction), oldest first: the
    /// core replays them to retransmissions for 40 s (RFC 8489 §6.3.1), even once the
    /// allocation is gone; a replay grants nothing.
    pub(super) granted: VecDeque<(Instant, Key, [u8; 12])>,
    pub(super) expiry: BTreeSet<(Instant, AllocationId)>,
    pub(super) streams: BTreeMap<StreamId, StreamObs>,
    pub(super) data_in: u64,
    pub(super) garbage_in: u64,
    pub(super) fwd_peer: u64,
    pub(super) fwd_client: u64,
    pub(super) prev_rate_limited: u64,
    pub(super) prev_queue_full: u64,
    /// Answers of this step to requests with a USERNAME, for the reload oracle.
    pub(super) answered: Vec<crate::rotation::Answered>,
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
    pub(super) draining: bool,
}

/// How long the core keeps answers for retransmissions (with a margin).
pub(super) const REPLAY_WINDOW: Duration = Duration::from_secs(45);

pub(super) type Check = Result<(), (&'static str, String)>;

/// What a per-step check looks at.
pub(super) struct Step<'a> {
    pub(super) now: Instant,
    pub(super) host: &'a ServerHost,
    /// Each loop's counters.
    pub(super) loops: &'a [Stats],
    /// The node's sums of what the checks compare.
    pub(super) stats: &'a NodeStats,
}

/// The node-wide sums of the loops' counters the checks compare.
#[derive(Debug, Default)]
pub(super) struct NodeStats {
    pub(super) allocations: u64,
    pub(super) pending: u64,
    pub(super) streams: u64,
    pub(super) rate_limited: u64,
    pub(super) queue_full: u64,
    pub(super) to_peer: u64,
    pub(super) to_client: u64,
    pub(super) drops: u64,
}

impl NodeStats {
    pub(super) fn of(loops: &[Stats]) -> NodeStats {
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

pub(super) type StepCheck = fn(&mut Shadow, &Step) -> Check;

impl Shadow {
    pub(super) fn new(cfg: ShadowConfig) -> Self {
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
    pub(super) fn restart(&mut self) {
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
    pub(super) fn held(&self, now: Instant) -> usize {
        let tokens = self
            .tokens
            .values()
            .filter(|t| !t.redeemed && now < t.issued + TOKEN_LIFETIME)
            .count();
        self.allocs.len() + tokens
    }

    pub(super) fn remove_relay(&mut self, relay: LoopRelay) -> Option<RelayShadow> {
        let r = self.relays.remove(&relay)?;
        self.count_relay(relay.0, r.addr, false);
        Some(r)
    }

    pub(super) fn count_relay(&mut self, lp: u16, addr: SocketAddr, up: bool) {
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

    pub(super) fn end_step(&mut self, step: &Step) {
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
pub(super) fn alloc_kind(msg: &Message<'_>) -> AllocKind {
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
