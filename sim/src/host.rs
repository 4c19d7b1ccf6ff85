//! Hosts of the simulated world and what they may touch while handling an event.
//!
//! Every host reacts to the same few happenings (a datagram, a stream being opened, bytes,
//! a close, its timer, a fault) through a [`Cx`]: the clock reading, the network, its
//! share of the randomness, and the oracle that watches.

use crate::browser::{Board, Browser};
use crate::clock::WallClock;
use crate::digest::{Digest, Trace};
use crate::faults::{Control, Flooder, Sink};
use crate::net::{Net, NodeId, Side, StreamId};
use crate::nginx::Nginx;
use crate::oracle::Oracle;
use crate::peer::Peer;
use crate::server::ServerHost;
use crate::uclient::UClient;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use std::net::SocketAddr;
use turnpike_core::Instant;

/// Which part of the run we are in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Phase {
    /// Faults on; invariants checked.
    Safety,
    /// Faults off, network healed: every well-behaved client must make progress.
    Liveness,
    /// Clients leave; what they left behind must expire and be released.
    Drain,
}

/// What every host may read about the world while handling an event.
#[derive(Debug)]
pub struct Shared {
    /// The phase.
    pub phase: Phase,
    /// Each server's wall clock (its REST credentials are issued and checked with it).
    pub walls: Vec<WallClock>,
    /// Each server's REST secret, as its issuer signs with it now.
    pub secrets: Vec<String>,
    /// The generation of each of those secrets (0: the scenario's, then one per rotation).
    pub generations: Vec<u32>,
    /// Each server's first REST secret (what a stale configuration still signs with).
    pub first_secrets: Vec<String>,
    /// Probability that a relay bind fails with AddrInUse (0 outside the safety phase).
    pub bind_addr_in_use: f64,
    /// Probability that a native TLS handshake is refused (0 outside the safety phase).
    pub tls_failure: f64,
    /// Each server's spreading of 4-tuples over its loops (clients that want to land on
    /// one loop pick their ports with it).
    pub loop_hashes: Vec<crate::node::LoopHash>,
}

/// The context of one event.
pub struct Cx<'a> {
    /// Now.
    pub now: Instant,
    /// The host handling the event.
    pub me: NodeId,
    /// The network.
    pub net: &'a mut Net,
    /// Randomness for behaviour (clients, faults that hosts decide).
    pub rng: &'a mut ChaCha20Rng,
    /// Seeds for the cores and clients.
    pub seeds: &'a mut ChaCha20Rng,
    /// The oracle.
    pub oracle: &'a mut Oracle,
    /// The last events, for failure reports.
    pub trace: &'a mut Trace,
    /// Digest of everything.
    pub digest: &'a mut Digest,
    /// World-wide facts.
    pub shared: &'a Shared,
    /// What browsers tell each other out of band (signalling).
    pub board: &'a mut Board,
}

impl Cx<'_> {
    /// A fresh 32-byte seed for a core or a client.
    pub fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.seeds.fill_bytes(&mut s);
        s
    }

    /// Notes a line in the trace (cheap enough to call for every event).
    pub fn note(&mut self, line: String) {
        self.trace.note(self.now, line);
    }
}

/// A host.
#[derive(Debug)]
pub enum Node {
    /// A turnpike server.
    Server(Box<ServerHost>),
    /// A browser-like client.
    Browser(Box<Browser>),
    /// A peer.
    Peer(Peer),
    /// An nginx-like hop.
    Nginx(Box<Nginx>),
    /// A spoofing flooder.
    Flooder(Flooder),
    /// The victim of a reflection: counts what reaches it.
    Sink(Sink),
    /// A scripted UDP client (`turnutils_uclient`-like).
    UClient(Box<UClient>),
}

impl Node {
    /// A datagram reached this host.
    pub fn on_datagram(&mut self, cx: &mut Cx, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        match self {
            Node::Server(h) => h.on_datagram(cx, from, to, data),
            Node::Browser(b) => b.on_datagram(cx, from, to, &data),
            Node::Peer(p) => p.on_datagram(cx, from, to, data),
            Node::UClient(u) => u.on_datagram(cx, from, to, &data),
            Node::Sink(v) => v.on_datagram(&data),
            Node::Nginx(_) | Node::Flooder(_) => {}
        }
    }

    /// A connection request: true to accept.
    pub fn on_syn(
        &mut self,
        cx: &mut Cx,
        sid: StreamId,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> bool {
        match self {
            Node::Server(h) => h.on_syn(cx, sid, local, remote),
            Node::Nginx(n) => n.on_syn(cx, sid, local, remote),
            _ => false,
        }
    }

    /// A connection this host opened was accepted.
    pub fn on_established(&mut self, cx: &mut Cx, sid: StreamId) {
        match self {
            Node::Browser(b) => b.on_established(cx, sid),
            Node::Nginx(n) => n.on_established(cx, sid),
            _ => {}
        }
    }

    /// Bytes on a stream.
    pub fn on_stream_data(&mut self, cx: &mut Cx, sid: StreamId, side: Side, data: Vec<u8>) {
        match self {
            Node::Server(h) => h.on_stream_data(cx, sid, &data),
            Node::Browser(b) => b.on_stream_data(cx, sid, &data),
            Node::Nginx(n) => n.on_stream_data(cx, sid, side, data),
            _ => {}
        }
    }

    /// A stream closed (FIN, reset, or refused).
    pub fn on_stream_closed(&mut self, cx: &mut Cx, sid: StreamId, side: Side) {
        match self {
            Node::Server(h) => h.on_stream_closed(cx, sid),
            Node::Browser(b) => b.on_stream_closed(cx, sid),
            Node::Nginx(n) => n.on_stream_closed(cx, sid, side),
            _ => {}
        }
    }

    /// The host's timer fired.
    pub fn on_wake(&mut self, cx: &mut Cx) {
        match self {
            Node::Server(h) => h.on_wake(cx),
            Node::Browser(b) => b.on_wake(cx),
            Node::Peer(p) => p.on_wake(cx),
            Node::Flooder(f) => f.on_wake(cx),
            Node::UClient(u) => u.on_wake(cx),
            Node::Nginx(_) | Node::Sink(_) => {}
        }
    }

    /// A message between two loops of a server node.
    pub fn on_loop_message(&mut self, cx: &mut Cx, m: crate::node::InFlight) {
        if let Node::Server(h) = self {
            h.on_loop_message(cx, m);
        }
    }

    /// A fault or phase change.
    pub fn on_control(&mut self, cx: &mut Cx, c: &Control) {
        match self {
            Node::Server(h) => h.on_control(cx, c),
            Node::Browser(b) => b.on_control(cx, c),
            Node::UClient(u) => u.on_control(cx, c),
            _ => {}
        }
    }

    /// When the host wants to be woken next.
    pub fn next_wake(&self) -> Option<Instant> {
        match self {
            Node::Server(h) => h.next_wake(),
            Node::Browser(b) => b.next_wake(),
            Node::Peer(p) => p.next_wake(),
            Node::Flooder(f) => f.next_wake(),
            Node::UClient(u) => u.next_wake(),
            Node::Nginx(_) | Node::Sink(_) => None,
        }
    }
}
