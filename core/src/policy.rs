//! Which peers the relay may talk to (RFC 8656 §21.4: "...a TURN server SHOULD NOT relay
//! to..."; coturn CVE-2020-26262 and the IPv4-mapped bypasses).
//!
//! Decisions are taken on the canonical address: `::ffff:a.b.c.d`, `::a.b.c.d`, 6to4
//! (2002::/16), NAT64 (64:ff9b::/96) and Teredo (2001::/32) are unwrapped to the IPv4
//! address they reach, so a denied IPv4 range cannot be reached through an IPv6 spelling.

use crate::cidr::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Why a peer is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DenyReason {
    /// Port 0.
    PortZero,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// RFC 1918 private ranges.
    Private,
    /// 100.64.0.0/10 (RFC 6598 shared address space, CGNAT).
    SharedAddressSpace,
    /// fc00::/7 unique local addresses.
    UniqueLocal,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// fec0::/10 (deprecated site-local).
    SiteLocal,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).
    Documentation,
    /// Other special-purpose ranges (240.0.0.0/4, 192.0.0.0/24, 198.18.0.0/15, ...).
    Reserved,
    /// One of the relay's own addresses.
    OwnAddress,
    /// Matched `denied_peer_ip`.
    ConfigDenied,
}

impl DenyReason {
    /// Short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        todo!()
    }
}

/// The peer policy: built-in denials, the operator's allow and deny lists, and the relay's
/// own addresses.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    /// Ranges allowed although a built-in rule would deny them (e.g. the local media server).
    pub allow: Vec<IpNet>,
    /// Ranges denied in addition to the built-in ones. Deny wins over allow.
    pub deny: Vec<IpNet>,
    /// Allow loopback peers (tests on one machine).
    pub allow_loopback: bool,
    /// The relay's own addresses (listeners, relays, API), denied unless allowed.
    pub own_addresses: Vec<IpAddr>,
}

impl PeerPolicy {
    /// Decides for `peer`: Ok(()) to relay, or the reason to refuse (403).
    pub fn check(&self, peer: SocketAddr) -> Result<(), DenyReason> {
        let _ = peer;
        todo!()
    }
}

/// The address a packet to `ip` really reaches: IPv4 embedded in IPv4-mapped,
/// IPv4-compatible, 6to4, NAT64 or Teredo IPv6 addresses; other addresses unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let _ = ip;
    todo!()
}
