//! A NAT: many hosts behind one public address (an office's NAT, a carrier's CGNAT).
//!
//! Each inside endpoint (host, private address and port) that sends or connects out gets
//! its own public port, endpoint-independent (RFC 4787 §4.1: the same mapping whatever
//! the destination), the behaviour of most office and carrier NATs. A datagram to the
//! public address and a mapped port is handed to the inside endpoint; to an unmapped port
//! it is dropped. Mappings live in ordered maps (never a hash map's order) and their
//! number is bounded by the public ports: when every port is taken, the oldest mapping is
//! recycled, as a NAT's mapping timeout would.

use crate::net::NodeId;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The first public port a NAT hands out.
pub const FIRST_PORT: u16 = 1024;
/// The last public port a NAT hands out.
pub const LAST_PORT: u16 = 65535;

/// One NAT: a public address and its port mappings.
#[derive(Debug)]
pub struct Nat {
    /// The public address every inside host shares.
    pub public: IpAddr,
    out: BTreeMap<(NodeId, SocketAddr), u16>,
    back: BTreeMap<u16, (NodeId, SocketAddr)>,
    next_port: u16,
    /// Mappings recycled because every public port was taken.
    pub recycled: u64,
}

impl Nat {
    /// A NAT with no mapping yet.
    pub fn new(public: IpAddr) -> Self {
        Nat {
            public,
            out: BTreeMap::new(),
            back: BTreeMap::new(),
            next_port: FIRST_PORT,
            recycled: 0,
        }
    }

    /// The public address of inside endpoint `inside` of host `node`, mapped now if new.
    pub fn outbound(&mut self, node: NodeId, inside: SocketAddr) -> SocketAddr {
        if let Some(&port) = self.out.get(&(node, inside)) {
            return SocketAddr::new(self.public, port);
        }
        let port = self.next_port;
        self.next_port = if port == LAST_PORT {
            FIRST_PORT
        } else {
            port + 1
        };
        if let Some(old) = self.back.remove(&port) {
            self.out.remove(&old);
            self.recycled += 1;
        }
        self.out.insert((node, inside), port);
        self.back.insert(port, (node, inside));
        debug_assert_eq!(self.out.len(), self.back.len());
        SocketAddr::new(self.public, port)
    }

    /// Who a packet to public port `port` belongs to, if that port is mapped.
    pub fn inbound(&self, port: u16) -> Option<(NodeId, SocketAddr)> {
        self.back.get(&port).copied()
    }

    /// Mappings held now (at most the number of public ports).
    pub fn mappings(&self) -> usize {
        self.out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_distinct_ports_and_answers_find_their_way_back() {
        let mut nat = Nat::new("198.51.100.7".parse().unwrap());
        let a: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let pa = nat.outbound(5, a);
        let pb = nat.outbound(6, b);
        assert_eq!(pa.ip(), nat.public);
        assert_ne!(pa.port(), pb.port());
        assert_eq!(nat.outbound(5, a), pa, "endpoint-independent mapping");
        assert_eq!(nat.inbound(pa.port()), Some((5, a)));
        assert_eq!(nat.inbound(pb.port()), Some((6, b)));
        assert_eq!(nat.inbound(9), None);
    }

    #[test]
    fn mappings_are_bounded_by_the_public_ports() {
        let mut nat = Nat::new("198.51.100.7".parse().unwrap());
        let ports = usize::from(LAST_PORT - FIRST_PORT) + 1;
        for i in 0..ports + 10 {
            let inside = SocketAddr::new("10.0.0.1".parse().unwrap(), 1);
            nat.outbound(i, inside);
        }
        assert_eq!(nat.mappings(), ports);
        assert_eq!(nat.recycled, 10);
    }
}
