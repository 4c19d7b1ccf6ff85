//! The virtual network: hosts by address, UDP datagrams, TCP-like byte streams.
//!
//! Datagrams meet the path's loss, jitter, duplication and reordering. Streams deliver
//! bytes in order but in arbitrary pieces (a write may arrive split, or merged with the
//! next), may stall, and may be reset. Everything is scheduled on the one event queue;
//! the network decides, the runner delivers.

use crate::faults::Control;
use crate::firewall::{Direction, Firewall};
use crate::link::{between, chance, serialisation, uniform, Fate, LinkProfile, Partition, Path};
use crate::nat::Nat;
use crate::queue::{EventQueue, QueueFull};
use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::Instant;

/// A host of the simulation, by index.
pub type NodeId = usize;

/// A stream, named by the network for its whole life (never reused).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StreamId(pub u64);

/// One end of a stream.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Side {
    /// The end that connected.
    Connector,
    /// The end that accepted.
    Acceptor,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::Connector => 0,
            Side::Acceptor => 1,
        }
    }
    fn other(self) -> Side {
        match self {
            Side::Connector => Side::Acceptor,
            Side::Acceptor => Side::Connector,
        }
    }
}

/// Everything the queue holds.
#[derive(Clone, Debug)]
pub enum Ev {
    /// A datagram reaches `to_node`.
    Datagram {
        /// Receiving host.
        to_node: NodeId,
        /// Source address (may be spoofed).
        from: SocketAddr,
        /// Destination address.
        to: SocketAddr,
        /// Payload.
        data: Vec<u8>,
    },
    /// A connection request reaches the acceptor.
    Syn(StreamId),
    /// The acceptor's answer reaches the connector: established.
    SynAck(StreamId),
    /// The acceptor refused (RST) or nobody listens.
    Refused(StreamId),
    /// Bytes may be due for the receiver of `from`'s writes.
    Deliver(StreamId, Side),
    /// `from` closed: the other side learns it after the data.
    Fin(StreamId, Side),
    /// The stream was reset: `to` learns it.
    Reset(StreamId, Side),
    /// A host's timer.
    Wake(NodeId),
    /// A message between two event loops of a server node reaches its core.
    Loop {
        /// The server host.
        node: NodeId,
        /// The message, with its sending and receiving loops.
        msg: crate::node::InFlight,
    },
    /// A fault or a phase change.
    Control(Control),
}

/// What the runner must tell a host after a stream event.
#[derive(Clone, Debug)]
pub enum StreamNews {
    /// Bytes for `node` on its side `side`.
    Data(NodeId, Side, Vec<u8>),
    /// The stream closed (FIN or reset) for `node`.
    Closed(NodeId, Side),
}

/// Network-wide fault knobs for streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamFaults {
    /// Probability that a stream is reset at some point of its first `reset_within`.
    pub reset: f64,
    /// Window for resets.
    pub reset_within: Duration,
    /// Probability that a segment stalls.
    pub stall: f64,
    /// Longest stall.
    pub stall_max: Duration,
    /// Probability that arrived bytes are handed over in two pieces rather than one.
    pub split: f64,
}

/// Counters of the network.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Lost on the path.
    pub lost: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// Dropped by a firewall.
    pub firewalled: u64,
    /// Dropped by a partition.
    pub partitioned: u64,
    /// Sent to an address no host holds.
    pub no_route: u64,
    /// Streams opened.
    pub streams: u64,
    /// Streams reset by a fault.
    pub resets: u64,
    /// Stream bytes written.
    pub stream_bytes: u64,
}

#[derive(Debug)]
struct Dir {
    inflight: VecDeque<(Instant, Vec<u8>)>,
    last: Instant,
}

#[derive(Debug)]
struct Stream {
    ends: [(NodeId, SocketAddr); 2],
    /// Side i no longer receives anything.
    closed: [bool; 2],
    /// Bytes written by side i, on their way to the other.
    dirs: [Dir; 2],
    /// The acceptor took it.
    accepted: bool,
}

/// The network.
#[derive(Debug)]
pub struct Net {
    /// The event queue (the network schedules; the runner pops).
    pub queue: EventQueue<Ev>,
    rng: ChaCha20Rng,
    routes: BTreeMap<IpAddr, NodeId>,
    links: Vec<LinkProfile>,
    firewalls: Vec<Firewall>,
    busy_until: Vec<Instant>,
    partitions: Vec<Partition>,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: u64,
    /// Stream faults in force (off in the liveness phase).
    pub faults: StreamFaults,
    /// Partitions and faults are ignored from this instant on (the liveness phase).
    pub healed_from: Option<Instant>,
    /// Counters.
    pub stats: NetStats,
    /// Set when the queue overflowed: the simulation's own bound.
    pub overflow: bool,
    /// NATs, by index.
    nats: Vec<Nat>,
    /// The NAT each host behind one sends through.
    behind: BTreeMap<NodeId, usize>,
    /// The NAT holding each public address.
    publics: BTreeMap<IpAddr, usize>,
    /// Per host: streams it accepted whose acceptor side it has not closed or heard closed.
    accepted_open: BTreeMap<NodeId, u64>,
}

impl Net {
    /// An empty network with a queue of `capacity` events, drawing from `rng`.
    pub fn new(rng: ChaCha20Rng, capacity: usize) -> Self {
        Net {
            queue: EventQueue::new(capacity),
            rng,
            routes: BTreeMap::new(),
            links: Vec::new(),
            firewalls: Vec::new(),
            busy_until: Vec::new(),
            partitions: Vec::new(),
            streams: BTreeMap::new(),
            next_stream: 1,
            faults: StreamFaults::default(),
            healed_from: None,
            stats: NetStats::default(),
            overflow: false,
            nats: Vec::new(),
            behind: BTreeMap::new(),
            publics: BTreeMap::new(),
            accepted_open: BTreeMap::new(),
        }
    }

    /// Adds a NAT with public address `public` (held by no host: packets to it go to the
    /// inside endpoint its port is mapped to); returns its index.
    pub fn add_nat(&mut self, public: IpAddr) -> usize {
        if let Some(&i) = self.publics.get(&public) {
            return i;
        }
        self.nats.push(Nat::new(public));
        let i = self.nats.len() - 1;
        self.publics.insert(public, i);
        i
    }

    /// Puts host `node` behind NAT `nat`: what it sends leaves from the NAT's address.
    pub fn put_behind_nat(&mut self, node: NodeId, nat: usize) {
        self.behind.insert(node, nat);
    }

    /// The NATs of the network.
    pub fn nats(&self) -> &[Nat] {
        &self.nats
    }

    /// The address a packet or connection from `node` at `local` carries once out of
    /// its NAT (itself when the host is behind none).
    fn translate_out(&mut self, node: NodeId, local: SocketAddr) -> SocketAddr {
        match self.behind.get(&node) {
            Some(&i) => self.nats[i].outbound(node, local),
            None => local,
        }
    }

    /// The host and address a packet to `to` reaches: through a NAT's mapping when `to`
    /// is a NAT's public address.
    fn deliver_to(&self, to: SocketAddr) -> Option<(NodeId, SocketAddr)> {
        match self.publics.get(&to.ip()) {
            Some(&i) => self.nats[i].inbound(to.port()),
            None => self.route(to.ip()).map(|n| (n, to)),
        }
    }

    /// Registers host `node` with its link and firewall. Hosts are added in index order.
    pub fn add_node(&mut self, node: NodeId, link: LinkProfile, firewall: Firewall) {
        while self.links.len() <= node {
            self.links.push(LinkProfile::default());
            self.firewalls.push(Firewall::None);
            self.busy_until.push(Instant::default());
        }
        self.links[node] = link;
        self.firewalls[node] = firewall;
    }

    /// Gives `ip` to `node`.
    pub fn add_address(&mut self, ip: IpAddr, node: NodeId) {
        self.routes.insert(ip, node);
    }

    /// The host holding `ip`.
    pub fn route(&self, ip: IpAddr) -> Option<NodeId> {
        self.routes.get(&ip).copied()
    }

    /// Cuts a host off for a window.
    pub fn add_partition(&mut self, p: Partition) {
        self.partitions.push(p);
    }

    /// Schedules an event.
    pub fn schedule(&mut self, at: Instant, ev: Ev) {
        if self.queue.push(at, ev) == Err(QueueFull) {
            self.overflow = true;
        }
    }

    /// Open streams (both ends not yet closed).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Sends a UDP datagram from `node` (source `from`, which a spoofer may forge).
    pub fn send_datagram(
        &mut self,
        now: Instant,
        node: NodeId,
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    ) {
        self.stats.datagrams += 1;
        if !self.firewall(node).allows_udp(Direction::Outbound) {
            self.stats.firewalled += 1;
            return;
        }
        let from = self.translate_out(node, from);
        let Some((dst, to)) = self.deliver_to(to) else {
            self.stats.no_route += 1;
            return;
        };
        if !self.firewall(dst).allows_udp(Direction::Inbound) {
            self.stats.firewalled += 1;
            return;
        }
        if self.cut(node, now).is_some() || self.cut(dst, now).is_some() {
            self.stats.partitioned += 1;
            return;
        }
        let fate = if node == dst {
            Fate::Arrives {
                delay: Duration::ZERO,
                duplicate: None,
            }
        } else if self.faulty(now) {
            self.path(node, dst).datagram(&mut self.rng)
        } else {
            Fate::Arrives {
                delay: self.path(node, dst).delay(&mut self.rng),
                duplicate: None,
            }
        };
        let Fate::Arrives { delay, duplicate } = fate else {
            self.stats.lost += 1;
            return;
        };
        let queued = self.uplink(now, node, data.len());
        if let Some(d) = duplicate {
            self.stats.duplicated += 1;
            let ev = Ev::Datagram {
                to_node: dst,
                from,
                to,
                data: data.clone(),
            };
            self.schedule(now + queued + d, ev);
        }
        let ev = Ev::Datagram {
            to_node: dst,
            from,
            to,
            data,
        };
        self.schedule(now + queued + delay, ev);
    }

    /// Opens a stream from `node` at `local` to `remote`. The connector hears `SynAck`,
    /// `Refused`, or nothing (firewall, partition, nobody at that address: its timeout).
    pub fn connect(
        &mut self,
        now: Instant,
        node: NodeId,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> StreamId {
        let sid = StreamId(self.next_stream);
        self.next_stream += 1;
        self.stats.streams += 1;
        let local = self.translate_out(node, local);
        let dst = self.route(remote.ip());
        let stream = Stream {
            ends: [(node, local), (dst.unwrap_or(usize::MAX), remote)],
            closed: [false, false],
            dirs: [Dir::new(now), Dir::new(now)],
            accepted: false,
        };
        self.streams.insert(sid, stream);
        let Some(dst) = dst else {
            return sid;
        };
        if !self.firewall(node).allows_tcp_connect(remote.port())
            || !self.firewall(dst).allows_tcp_accept()
        {
            self.stats.firewalled += 1;
            return sid;
        }
        let delay = self.stream_delay(now, node, dst);
        self.schedule(now + delay, Ev::Syn(sid));
        if self.faulty(now) && chance(&mut self.rng, self.faults.reset) {
            let at = now + delay + uniform(&mut self.rng, self.faults.reset_within);
            self.stats.resets += 1;
            self.schedule(at, Ev::Reset(sid, Side::Connector));
            self.schedule(at, Ev::Reset(sid, Side::Acceptor));
        }
        sid
    }

    /// The ends of a stream: (node, address) of the connector and of the acceptor.
    pub fn ends(&self, sid: StreamId) -> Option<[(NodeId, SocketAddr); 2]> {
        self.streams.get(&sid).map(|s| s.ends)
    }

    /// The acceptor took the connection (`accept`) or refused it.
    pub fn answer_syn(&mut self, now: Instant, sid: StreamId, accept: bool) {
        let Some(s) = self.streams.get(&sid) else {
            return;
        };
        let (a, b) = (s.ends[0].0, s.ends[1].0);
        let delay = self.stream_delay(now, b, a);
        if accept {
            // The acceptor may have closed it while accepting (a core that refuses the
            // connection at once): then it holds nothing open.
            if let Some(s) = self.streams.get_mut(&sid) {
                s.accepted = true;
                if !s.closed[1] {
                    *self.accepted_open.entry(b).or_insert(0) += 1;
                }
            }
            self.schedule(now + delay, Ev::SynAck(sid));
        } else {
            if let Some(s) = self.streams.get_mut(&sid) {
                s.closed[1] = true;
            }
            self.schedule(now + delay, Ev::Refused(sid));
        }
    }

    /// The connector learnt it was refused: forget the stream.
    pub fn refused(&mut self, sid: StreamId) {
        self.streams.remove(&sid);
    }

    /// Writes bytes on `side` of a stream; they arrive in order, in any pieces.
    pub fn write(&mut self, now: Instant, sid: StreamId, side: Side, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        let Some(s) = self.streams.get(&sid) else {
            return;
        };
        let (from, to) = (s.ends[side.index()].0, s.ends[side.other().index()].0);
        if s.closed[side.index()] || s.closed[side.other().index()] || to == usize::MAX {
            return;
        }
        self.stats.stream_bytes += data.len() as u64;
        let mut delay = self.stream_delay(now, from, to) + self.uplink(now, from, data.len());
        if self.faulty(now) && chance(&mut self.rng, self.faults.stall) {
            delay += uniform(&mut self.rng, self.faults.stall_max);
        }
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        let dir = &mut s.dirs[side.index()];
        let at = (now + delay).max(dir.last);
        dir.last = at;
        dir.inflight.push_back((at, data));
        self.schedule(at, Ev::Deliver(sid, side));
    }

    /// `side` closes: it receives nothing more; the other side learns it after the data.
    pub fn close(&mut self, now: Instant, sid: StreamId, side: Side) {
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        if s.closed[side.index()] {
            return;
        }
        s.closed[side.index()] = true;
        s.dirs[side.other().index()].inflight.clear();
        let shut = shut_acceptor(s, side);
        let at = s.dirs[side.index()].last.max(now);
        let (from, to) = (s.ends[side.index()].0, s.ends[side.other().index()].0);
        if to != usize::MAX {
            let delay = self.stream_delay(now, from, to);
            self.schedule(at + delay, Ev::Fin(sid, side));
        }
        self.note_shut(shut);
        self.collect(sid);
    }

    /// Bytes due for the reader of `writer`'s direction: all that arrived by `now`, or a
    /// random first piece of it (the rest follows shortly).
    pub fn take_delivery(
        &mut self,
        now: Instant,
        sid: StreamId,
        writer: Side,
    ) -> Option<StreamNews> {
        let split = self.faults.split;
        let s = self.streams.get_mut(&sid)?;
        let reader = writer.other();
        if s.closed[reader.index()] {
            return None;
        }
        let dir = &mut s.dirs[writer.index()];
        let mut out = Vec::new();
        while dir.inflight.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, bytes)) = dir.inflight.pop_front() {
                out.extend_from_slice(&bytes);
            }
        }
        if out.is_empty() {
            return None;
        }
        let node = s.ends[reader.index()].0;
        if out.len() > 1 && chance(&mut self.rng, split) {
            let cut = between(&mut self.rng, 1, out.len() as u64 - 1) as usize;
            let rest = out.split_off(cut);
            dir.inflight.push_front((now, rest));
            let later = now + uniform(&mut self.rng, Duration::from_micros(500));
            self.schedule(later, Ev::Deliver(sid, writer));
        }
        Some(StreamNews::Data(node, reader, out))
    }

    /// A FIN from `closer` arrives: the other side is told, once.
    pub fn take_fin(&mut self, now: Instant, sid: StreamId, closer: Side) -> Option<StreamNews> {
        let s = self.streams.get_mut(&sid)?;
        let reader = closer.other();
        if s.closed[reader.index()] {
            self.collect(sid);
            return None;
        }
        if s.dirs[closer.index()].inflight.iter().any(|_| true) {
            // Data still on its way (a split piece): it must land before the FIN.
            self.schedule(now + Duration::from_millis(1), Ev::Fin(sid, closer));
            return None;
        }
        s.closed[reader.index()] = true;
        let shut = shut_acceptor(s, reader);
        let node = s.ends[reader.index()].0;
        self.note_shut(shut);
        self.collect(sid);
        Some(StreamNews::Closed(node, reader))
    }

    /// A reset reaches `side`: it is told unless it already closed.
    pub fn take_reset(&mut self, sid: StreamId, side: Side) -> Option<StreamNews> {
        let s = self.streams.get_mut(&sid)?;
        if s.closed[side.index()] {
            self.collect(sid);
            return None;
        }
        s.closed[side.index()] = true;
        s.dirs[side.other().index()].inflight.clear();
        let shut = shut_acceptor(s, side);
        let node = s.ends[side.index()].0;
        self.note_shut(shut);
        self.collect(sid);
        Some(StreamNews::Closed(node, side))
    }

    /// Resets a stream now (both sides hear of it shortly).
    pub fn reset(&mut self, now: Instant, sid: StreamId) {
        if self.streams.contains_key(&sid) {
            self.stats.resets += 1;
            self.schedule(now, Ev::Reset(sid, Side::Connector));
            self.schedule(now, Ev::Reset(sid, Side::Acceptor));
        }
    }

    /// Whether faults (loss, resets, stalls) apply at `now`.
    pub fn faulty(&self, now: Instant) -> bool {
        match self.healed_from {
            Some(t) => now < t,
            None => true,
        }
    }

    fn firewall(&self, node: NodeId) -> Firewall {
        self.firewalls.get(node).copied().unwrap_or_default()
    }

    fn path(&self, a: NodeId, b: NodeId) -> Path {
        let l = |n: NodeId| self.links.get(n).copied().unwrap_or_default();
        Path::new(l(a), l(b))
    }

    /// Until when `node` is cut off, if it is at `now`.
    fn cut(&self, node: NodeId, now: Instant) -> Option<Instant> {
        if !self.faulty(now) {
            return None;
        }
        self.partitions
            .iter()
            .filter(|p| p.node == node && p.active(now))
            .map(|p| p.heal)
            .max()
    }

    /// Delay of a stream segment: path delay (loss shows as retransmissions when faults
    /// apply), held until a partition of either end heals.
    fn stream_delay(&mut self, now: Instant, a: NodeId, b: NodeId) -> Duration {
        if a == b {
            return Duration::ZERO;
        }
        let path = self.path(a, b);
        let d = if self.faulty(now) {
            path.segment_delay(&mut self.rng)
        } else {
            path.delay(&mut self.rng)
        };
        let heal = self.cut(a, now).max(self.cut(b, now));
        match heal {
            Some(h) => h.since(now) + d,
            None => d,
        }
    }

    /// Queueing plus serialisation on `node`'s uplink.
    fn uplink(&mut self, now: Instant, node: NodeId, bytes: usize) -> Duration {
        let bps = self.links.get(node).map_or(0, |l| l.bandwidth_bps);
        if bps == 0 {
            return Duration::ZERO;
        }
        let Some(busy) = self.busy_until.get_mut(node) else {
            return Duration::ZERO;
        };
        let start = (*busy).max(now);
        let done = start + serialisation(bytes, bps);
        *busy = done;
        done.since(now)
    }

    /// Forgets a stream both of whose sides are closed.
    /// Streams host `node` accepted and still holds open on its side.
    pub fn accepted_open(&self, node: NodeId) -> u64 {
        self.accepted_open.get(&node).copied().unwrap_or(0)
    }

    fn note_shut(&mut self, node: Option<NodeId>) {
        if let Some(n) = node.and_then(|n| self.accepted_open.get_mut(&n)) {
            *n = n.saturating_sub(1);
        }
    }

    fn collect(&mut self, sid: StreamId) {
        if self
            .streams
            .get(&sid)
            .is_some_and(|s| s.closed[0] && s.closed[1])
        {
            self.streams.remove(&sid);
        }
    }
}

/// The acceptor of `s` whose side `side` just closed, if that side is an accepted
/// acceptor's.
fn shut_acceptor(s: &Stream, side: Side) -> Option<NodeId> {
    (side == Side::Acceptor && s.accepted).then_some(s.ends[1].0)
}

impl Dir {
    fn new(now: Instant) -> Self {
        Dir {
            inflight: VecDeque::new(),
            last: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn net() -> Net {
        let mut n = Net::new(ChaCha20Rng::from_seed([1; 32]), 1000);
        n.add_node(0, LinkProfile::default(), Firewall::None);
        n.add_node(1, LinkProfile::default(), Firewall::DropUdpInbound);
        n.add_address("10.0.0.1".parse().unwrap(), 0);
        n.add_address("10.0.0.2".parse().unwrap(), 1);
        n
    }

    #[test]
    fn firewall_drops_inbound_udp() {
        let mut n = net();
        let t = Instant::from_secs(1);
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:2".parse().unwrap();
        n.send_datagram(t, 0, a, b, vec![1]);
        assert_eq!(n.stats.firewalled, 1);
        n.send_datagram(t, 1, b, a, vec![1]);
        assert_eq!(n.queue.len(), 1);
    }

    #[test]
    fn a_nat_rewrites_sources_and_brings_answers_back() {
        let mut n = net();
        n.add_node(2, LinkProfile::default(), Firewall::None);
        n.add_address("10.0.0.3".parse().unwrap(), 2);
        let nat = n.add_nat("198.51.100.7".parse().unwrap());
        n.put_behind_nat(0, nat);
        n.put_behind_nat(2, nat);
        n.firewalls[1] = Firewall::None;
        let t = Instant::from_secs(1);
        let server: SocketAddr = "10.0.0.2:3478".parse().unwrap();
        let mut seen = Vec::new();
        for (node, inside) in [(0, "10.0.0.1:5000"), (2, "10.0.0.3:5000")] {
            n.send_datagram(t, node, inside.parse().unwrap(), server, vec![1]);
            let Some((_, Ev::Datagram { from, to_node, .. })) = n.queue.pop() else {
                panic!("no datagram");
            };
            assert_eq!((from.ip(), to_node), ("198.51.100.7".parse().unwrap(), 1));
            seen.push(from);
        }
        assert_ne!(seen[0].port(), seen[1].port(), "a public port per flow");
        n.send_datagram(t, 1, server, seen[1], vec![2]);
        let Some((_, Ev::Datagram { to, to_node, .. })) = n.queue.pop() else {
            panic!("no answer");
        };
        assert_eq!((to, to_node), ("10.0.0.3:5000".parse().unwrap(), 2));
    }

    #[test]
    fn stream_bytes_arrive_in_order_whatever_the_splits() {
        let mut n = net();
        n.faults.split = 0.9;
        let t = Instant::from_secs(1);
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:2".parse().unwrap();
        let sid = n.connect(t, 0, a, b);
        n.answer_syn(t, sid, true);
        for i in 0..50u8 {
            n.write(t, sid, Side::Connector, vec![i, i]);
        }
        let mut got = Vec::new();
        for _ in 0..10_000 {
            let Some((at, ev)) = n.queue.pop() else { break };
            if let Ev::Deliver(s, w) = ev {
                if let Some(StreamNews::Data(_, _, bytes)) = n.take_delivery(at, s, w) {
                    got.extend(bytes);
                }
            }
        }
        let want: Vec<u8> = (0..50u8).flat_map(|i| [i, i]).collect();
        assert_eq!(got, want);
    }
}
