//! Faults and phase changes: what the seed and the scenario schedule. Wall-clock steps,
//! file-descriptor exhaustion, relay binds that fail (a probability in the shared state),
//! partitions (in the network), clients that vanish (in the browsers), and floods of
//! unauthenticated Allocates from spoofed sources (the [`Flooder`] host).

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
    /// The run enters a phase.
    Phase(Phase),
    /// The run ends.
    End,
}

/// A host that sends unauthenticated Allocate requests from spoofed sources.
#[derive(Debug)]
pub struct Flooder {
    target: SocketAddr,
    start: Instant,
    stop: Instant,
    every: Duration,
    sources: u32,
    next: Option<Instant>,
    /// Requests sent.
    pub sent: u64,
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
            next: Some(start),
            sent: 0,
        }
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
        let src = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(44, (n >> 16) as u8, (n >> 8) as u8, n as u8)),
            1024 + (n % 50_000) as u16,
        );
        let mut tid = [0u8; 12];
        cx.rng.fill_bytes(&mut tid);
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Request, TransactionId(tid));
        b.add(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
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
