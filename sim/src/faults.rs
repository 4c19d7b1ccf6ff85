//! Faults and phase changes: what the seed and the scenario schedule. Wall-clock steps,
//! configuration reloads that rotate the REST secret (and the issuer that follows),
//! file-descriptor exhaustion, relay binds that fail (a probability in the shared state),
//! partitions (in the network), clients that vanish (in the browsers), and floods of
//! unauthenticated requests from spoofed sources (the [`Flooder`] host), some aimed at a
//! victim's address (the [`Sink`] host counts what reaches it).

use crate::host::{Cx, Phase};
use core::time::Duration;
use rand_core::RngCore;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use turnpike_core::stun::{attr, Class, MessageBuilder, Method, TransactionId};
use turnpike_core::Instant;

/// A scheduled change of the world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Server `server`'s wall clock steps by `by_ms`.
    WallJump {
        /// Which server.
        server: usize,
        /// By how much.
        by_ms: i64,
    },
    /// Server `server` runs out of file descriptors (`on`) or recovers.
    FdExhaustion {
        /// Which server.
        server: usize,
        /// Exhausted or not.
        on: bool,
    },
    /// Server `server` reloads its configuration: every loop of the node takes the new
    /// REST secret (generation `generation`; with `keep_old`, beside the ones it has) a
    /// little apart, as the runtime's broadcast reaches them.
    Reload {
        /// Which server.
        server: usize,
        /// The secret the reload brings.
        secret: Secret,
        /// The secrets already accepted stay accepted.
        keep_old: bool,
    },
    /// The issuer of server `server`'s credentials (the web application, the HTTP API)
    /// signs new ones with `secret` from now on.
    IssuerRotates {
        /// Which server.
        server: usize,
        /// The secret it signs with.
        secret: Secret,
    },
    /// Server `server` begins to drain: its host exits once empty or at its drain
    /// timeout, then restarts fresh after a pause ([`crate::fleet`]).
    Drain {
        /// Which server.
        server: usize,
    },
    /// Server `server` vanishes: no answers, its sockets and state gone.
    Kill {
        /// Which server.
        server: usize,
    },
    /// A killed server `server` starts again, fresh.
    Revive {
        /// Which server.
        server: usize,
    },
    /// The run enters a phase.
    Phase(Phase),
    /// The run ends.
    End,
}

/// A REST secret and its generation (0: the scenario's own, then one per rotation). Its
/// `Debug` shows the generation only: controls are written to the trace and the digest.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// Generation.
    pub generation: u32,
    /// The secret.
    pub text: String,
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "secret generation {}", self.generation)
    }
}

/// A host that sends unauthenticated requests from spoofed sources.
#[derive(Debug)]
pub struct Flooder {
    target: SocketAddr,
    start: Instant,
    stop: Instant,
    every: Duration,
    sources: u32,
    /// Every request claims this address (a reflection aimed at it).
    spoof: Option<IpAddr>,
    /// Binding requests rather than Allocates.
    binding: bool,
    next: Option<Instant>,
    /// Requests sent.
    pub sent: u64,
}

/// A host that asked for nothing and counts what reaches it: the victim of a reflection.
#[derive(Debug, Default)]
pub struct Sink {
    /// Datagrams received.
    pub datagrams: u64,
    /// Bytes received.
    pub bytes: u64,
}

impl Sink {
    /// A datagram arrived.
    pub fn on_datagram(&mut self, data: &[u8]) {
        self.datagrams += 1;
        self.bytes += data.len() as u64;
    }
}

impl Flooder {
    /// Floods `target` from `sources` spoofed addresses at `rate_per_s` in `[start, stop)`.
    pub fn new(
        target: SocketAddr,
        start: Instant,
        stop: Instant,
        rate_per_s: u64,
        sources: u32,
    ) -> Self {
        Flooder {
            target,
            start,
            stop,
            every: Duration::from_nanos(1_000_000_000 / rate_per_s.max(1)),
            sources: sources.max(1),
            spoof: None,
            binding: false,
            next: Some(start),
            sent: 0,
        }
    }

    /// Aims the flood at `victim`: every request claims it as its source.
    pub fn reflect_on(mut self, victim: IpAddr) -> Self {
        self.spoof = Some(victim);
        self
    }

    /// Sends Binding requests instead of Allocates.
    pub fn binding(mut self) -> Self {
        self.binding = true;
        self
    }

    /// Sends one request.
    pub fn on_wake(&mut self, cx: &mut Cx) {
        if cx.now >= self.stop || cx.shared.phase != Phase::Safety {
            self.next = None;
            return;
        }
        if cx.now < self.start {
            return;
        }
        let n = cx.rng.next_u32() % self.sources;
        // Spoofed sources: addresses no host holds, so the answers go nowhere.
        let src = match self.spoof {
            // The victim's address, from any of its ports (a 4-tuple of its own each, so
            // the requests spread over the loops of a node).
            Some(victim) => SocketAddr::new(victim, 1024 + (n % 50_000) as u16),
            None => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(44, (n >> 16) as u8, (n >> 8) as u8, n as u8)),
                1024 + (n % 50_000) as u16,
            ),
        };
        let mut tid = [0u8; 12];
        cx.rng.fill_bytes(&mut tid);
        let b = if self.binding {
            MessageBuilder::new(Method::BINDING, Class::Request, TransactionId(tid))
        } else {
            let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Request, TransactionId(tid));
            b.add(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
            b
        };
        cx.net
            .send_datagram(cx.now, cx.me, src, self.target, b.finish());
        self.sent += 1;
        self.next = Some(cx.now + self.every);
    }

    /// When it sends next.
    pub fn next_wake(&self) -> Option<Instant> {
        self.next
    }
}
