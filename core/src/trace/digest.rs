//! The running digest of what the core produced: the recorder and the replayer fold every
//! output into it in the same order, so comparing two 8-byte values says whether a replay
//! did exactly what the recorded run did.
//!
//! **Definition.** FNV-1a, 64 bits (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`), never reset during a run. Each item folds in a tag byte, then its
//! fields, little-endian, addresses as family byte (4 or 6), address bytes and port:
//!
//! | item | tag | fields |
//! |---|---|---|
//! | `Output::Transmit` | 1 | listener u32, to, data length u32, data bytes |
//! | `Output::StreamWrite` | 2 | conn u64, data length u32, data bytes |
//! | `Output::CloseStream` | 3 | conn u64, reason name |
//! | `Output::BindRelay` | 4 | relay u32, addr |
//! | `Output::CloseRelay` | 5 | relay u32 |
//! | `Output::Event` | 6 | event kind byte, then its fields (names for enums) |
//! | `Forward::ToPeer` | 7 | relay u32, peer, payload length u32 |
//! | `Forward::ToClient` | 8 | listener u32, client, length u32 |
//! | `Forward::ToStream` | 9 | conn u64, length u32 |
//! | stream data to a peer | 10 | relay u32, peer, payload length u32 |
//! | `Output::ToLoop` | 11 | loop u16, message length u32, `LoopMsg::encode` bytes |
//!
//! Control answers (Transmit, StreamWrite) are hashed in full; relayed data only by where
//! it goes and how long it is, so a trace recorded without payloads still replays exactly.
//! FNV is not a cryptographic hash: it detects divergence, it does not resist forgery,
//! which a trace produced by our own relay does not need.

use crate::event::{Event, Output};
use crate::ids::RelayId;
use crate::server::Forward;
use std::net::{IpAddr, SocketAddr};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The running digest of a run's outputs. See the module documentation for the definition.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OutputDigest {
    state: u64,
}

impl Default for OutputDigest {
    fn default() -> Self {
        OutputDigest { state: FNV_OFFSET }
    }
}

impl OutputDigest {
    /// A digest of nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value.
    pub fn value(&self) -> u64 {
        self.state
    }

    /// Folds in one output drained with `Server::poll_output`.
    pub fn output(&mut self, out: &Output) {
        match out {
            Output::Transmit { listener, to, data } => {
                self.u8(1);
                self.u32(listener.0);
                self.addr(*to);
                self.data(data);
            }
            Output::StreamWrite { conn, data } => {
                self.u8(2);
                self.u64(conn.0);
                self.data(data);
            }
            Output::CloseStream { conn, reason } => {
                self.u8(3);
                self.u64(conn.0);
                self.name(reason.as_str());
            }
            Output::BindRelay { relay, addr } => {
                self.u8(4);
                self.u32(relay.0);
                self.addr(*addr);
            }
            Output::CloseRelay { relay } => {
                self.u8(5);
                self.u32(relay.0);
            }
            Output::Event(ev) => {
                self.u8(6);
                self.event(ev);
            }
            Output::ToLoop { to, msg } => {
                self.u8(11);
                self.u16(to.0);
                let mut b = Vec::new();
                msg.encode(&mut b);
                self.data(&b);
            }
        }
    }

    /// Folds in a [`Forward`] returned by `handle_datagram` or `handle_relay_datagram`.
    pub fn forward(&mut self, f: &Forward) {
        match f {
            Forward::ToPeer { relay, peer, range } => {
                self.u8(7);
                self.u32(relay.0);
                self.addr(*peer);
                self.len(range.len());
            }
            Forward::ToClient {
                listener,
                client,
                range,
            } => {
                self.u8(8);
                self.u32(listener.0);
                self.addr(*client);
                self.len(range.len());
            }
            Forward::ToStream { conn, range } => {
                self.u8(9);
                self.u64(conn.0);
                self.len(range.len());
            }
        }
    }

    /// Folds in one call of `handle_stream_data`'s `to_peer` callback.
    pub fn to_peer(&mut self, relay: RelayId, peer: SocketAddr, len: usize) {
        self.u8(10);
        self.u32(relay.0);
        self.addr(peer);
        self.len(len);
    }

    fn event(&mut self, ev: &Event) {
        match ev {
            Event::AllocationCreated {
                id,
                client,
                username,
                relayed,
                lifetime_s,
            } => {
                self.u8(1);
                self.u64(id.0);
                self.client(client);
                self.name(username);
                self.len(relayed.len());
                for r in relayed {
                    self.addr(*r);
                }
                self.u32(*lifetime_s);
            }
            Event::AllocationRefreshed { id, lifetime_s } => {
                self.u8(2);
                self.u64(id.0);
                self.u32(*lifetime_s);
            }
            Event::AllocationDeleted {
                id,
                client,
                username,
                reason,
                traffic,
                age_ms,
            } => {
                self.u8(3);
                self.u64(id.0);
                self.client(client);
                self.name(username);
                self.name(reason.as_str());
                for v in [
                    traffic.to_peer_packets,
                    traffic.to_peer_bytes,
                    traffic.from_peer_packets,
                    traffic.from_peer_bytes,
                    traffic.dropped_packets,
                    *age_ms,
                ] {
                    self.u64(v);
                }
            }
            Event::AllocationFailed {
                client,
                username,
                code,
            } => {
                self.u8(4);
                self.client(client);
                self.opt_name(username.as_deref());
                self.u32(u32::from(*code));
            }
            Event::AuthFailed {
                client,
                username,
                reason,
            } => {
                self.u8(5);
                self.client(client);
                self.opt_name(username.as_deref());
                self.name(reason.as_str());
            }
            Event::PeerDenied { id, peer, reason } => {
                self.u8(6);
                self.u64(id.0);
                self.addr(*peer);
                self.name(reason.as_str());
            }
            Event::PortsExhausted { client } => {
                self.u8(7);
                self.client(client);
            }
            Event::ProxyAccepted {
                conn,
                proxy,
                client,
            } => {
                self.u8(8);
                self.u64(conn.0);
                self.addr(*proxy);
                self.addr(*client);
            }
            Event::StreamRejected {
                conn,
                remote,
                reason,
            } => {
                self.u8(9);
                self.u64(conn.0);
                self.addr(*remote);
                self.name(reason.as_str());
            }
            Event::AllocationRedirected {
                client,
                username,
                to,
            } => {
                self.u8(11);
                self.client(client);
                self.name(username);
                self.addr(*to);
            }
            Event::DrainStarted => self.u8(12),
        }
    }

    fn client(&mut self, c: &crate::event::ClientInfo) {
        self.name(c.transport.as_str());
        self.addr(c.addr);
        self.u32(c.listener.0);
        match c.conn {
            Some(conn) => {
                self.u8(1);
                self.u64(conn.0);
            }
            None => self.u8(0),
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        let mut h = self.state;
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.state = h;
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn data(&mut self, d: &[u8]) {
        self.len(d.len());
        self.bytes(d);
    }
    fn name(&mut self, s: &str) {
        self.data(s.as_bytes());
    }
    fn opt_name(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.name(s);
            }
            None => self.u8(0),
        }
    }
    fn addr(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.bytes(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.bytes(&ip.octets());
            }
        }
        self.bytes(&a.port().to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConnId, ListenerId};

    #[test]
    fn fnv_matches_the_reference_values() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        let mut d = OutputDigest::new();
        d.bytes(b"a");
        assert_eq!(d.value(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(OutputDigest::new().value(), FNV_OFFSET);
    }

    #[test]
    fn order_and_content_matter_payload_bytes_do_not() {
        let a = Output::CloseRelay { relay: RelayId(1) };
        let b = Output::Transmit {
            listener: ListenerId(0),
            to: "192.0.2.1:5".parse().unwrap(),
            data: vec![1, 2, 3],
        };
        let (mut x, mut y) = (OutputDigest::new(), OutputDigest::new());
        x.output(&a);
        x.output(&b);
        y.output(&b);
        y.output(&a);
        assert_ne!(x, y);
        let f = |range| Forward::ToStream {
            conn: ConnId(3),
            range,
        };
        let (mut x, mut y) = (OutputDigest::new(), OutputDigest::new());
        x.forward(&f(48..148));
        y.forward(&f(10..110));
        assert_eq!(x, y, "only the length of a relayed payload counts");
        y.forward(&f(0..1));
        assert_ne!(x, y);
    }
}
