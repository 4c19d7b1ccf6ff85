//! Peers on the far side of the relay: an echo peer that sends back what it gets, and a
//! rogue peer that sprays the relay's port range (nothing it sends may reach a client
//! without a permission for it).

use crate::host::Cx;
use core::time::Duration;
use rand_core::RngCore;
use std::net::{IpAddr, SocketAddr};
use turnpike_core::Instant;

/// What a peer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// Sends every datagram back to where it came from.
    Echo,
    /// Sends datagrams to random relay ports of `target`, `ports` inclusive.
    Rogue {
        /// The relay's address.
        target: IpAddr,
        /// Relay port range.
        ports: [u16; 2],
        /// Interval between datagrams.
        every: Duration,
    },
}

/// A peer.
#[derive(Debug)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    kind: PeerKind,
    next: Option<Instant>,
    /// Datagrams received.
    pub received: u64,
}

impl Peer {
    /// A peer at `addr`.
    pub fn new(addr: SocketAddr, kind: PeerKind, start: Instant) -> Self {
        let next = matches!(kind, PeerKind::Rogue { .. }).then_some(start);
        Peer {
            addr,
            kind,
            next,
            received: 0,
        }
    }

    /// A datagram reached the peer.
    pub fn on_datagram(&mut self, cx: &mut Cx, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.received += 1;
        if self.kind == PeerKind::Echo && to == self.addr {
            cx.net.send_datagram(cx.now, cx.me, to, from, data);
        }
    }

    /// Rogue peers send on a timer.
    pub fn on_wake(&mut self, cx: &mut Cx) {
        let PeerKind::Rogue {
            target,
            ports,
            every,
        } = self.kind
        else {
            return;
        };
        let span = u64::from(ports[1].saturating_sub(ports[0])) + 1;
        let port = ports[0] + (cx.rng.next_u64() % span) as u16;
        let data = b"\x80rogue datagram".to_vec();
        cx.net.send_datagram(
            cx.now,
            cx.me,
            self.addr,
            SocketAddr::new(target, port),
            data,
        );
        self.next = Some(cx.now + every);
    }

    /// When the rogue sends next.
    pub fn next_wake(&self) -> Option<Instant> {
        self.next
    }
}
