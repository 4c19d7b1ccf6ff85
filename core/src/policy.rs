//! Which peers the relay may talk to (RFC 8656 §21.4: "...a TURN server SHOULD NOT relay
//! to..."; coturn CVE-2020-26262 and the IPv4-mapped bypasses).
//!
//! Decisions are taken on the canonical address: `::ffff:a.b.c.d`, `::a.b.c.d`, 6to4
//! (2002::/16), NAT64 (64:ff9b::/96) and Teredo (2001::/32) are unwrapped to the IPv4
//! address they reach, so a denied IPv4 range cannot be reached through an IPv6 spelling.
//!
//! Order of the checks in [`PeerPolicy::check`]:
//! 1. port 0 is refused (no service is reachable on it);
//! 2. the operator's deny list (matched on the address as written and on its canonical form);
//! 3. the operator's allow list (matched on the canonical form only: the address a packet
//!    really reaches, so that allowing an IPv6 block never lets an embedded IPv4 through);
//! 4. the relay's own addresses (compared in canonical form);
//! 5. the built-in special-purpose ranges (IANA IPv4 and IPv6 Special-Purpose Address
//!    Registries, RFC 6890), applied to the address as written *and* to its canonical form:
//!    a peer is refused if either falls in a denied range.

use crate::cidr::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
        match self {
            DenyReason::PortZero => "port_zero",
            DenyReason::Loopback => "loopback",
            DenyReason::Unspecified => "unspecified",
            DenyReason::Private => "private",
            DenyReason::SharedAddressSpace => "shared_address_space",
            DenyReason::UniqueLocal => "unique_local",
            DenyReason::LinkLocal => "link_local",
            DenyReason::SiteLocal => "site_local",
            DenyReason::Multicast => "multicast",
            DenyReason::Broadcast => "broadcast",
            DenyReason::Documentation => "documentation",
            DenyReason::Reserved => "reserved",
            DenyReason::OwnAddress => "own_address",
            DenyReason::ConfigDenied => "config_denied",
        }
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
    ///
    /// Call it for every peer address a client names (CreatePermission, ChannelBind, Send)
    /// before installing or using a permission. See the module documentation for the order
    /// of the checks.
    pub fn check(&self, peer: SocketAddr) -> Result<(), DenyReason> {
        if peer.port() == 0 {
            return Err(DenyReason::PortZero);
        }
        let raw = peer.ip();
        let canon = canonical(raw);

        // Deny matches any spelling: refusing more is always safe.
        if self
            .deny
            .iter()
            .map(canonical_net)
            .any(|n| n.contains(raw) || n.contains(canon))
        {
            return Err(DenyReason::ConfigDenied);
        }
        // Allow matches only the address a packet really reaches. Matching the raw form
        // would let e.g. an allowed `::/0` or `2002::/16` open a path to 127.0.0.1.
        if self
            .allow
            .iter()
            .map(canonical_net)
            .any(|n| n.contains(canon))
        {
            return Ok(());
        }
        if self
            .own_addresses
            .iter()
            .any(|own| canonical(*own) == canon)
        {
            return Err(DenyReason::OwnAddress);
        }
        for ip in [raw, canon] {
            match builtin_category(ip) {
                None => {}
                Some(DenyReason::Loopback) if self.allow_loopback => {}
                Some(reason) => return Err(reason),
            }
        }
        Ok(())
    }
}

/// The address a packet to `ip` really reaches: IPv4 embedded in IPv4-mapped,
/// IPv4-compatible, 6to4, NAT64 or Teredo IPv6 addresses; other addresses unchanged.
///
/// - `::ffff:a.b.c.d` (IPv4-mapped, RFC 4291 §2.5.5.2) and `::ffff:0:a.b.c.d`
///   (IPv4-translated, RFC 2765 §2.1): the stack sends IPv4 to a.b.c.d;
/// - `::a.b.c.d` (IPv4-compatible, RFC 4291 §2.5.5.1, deprecated), except `::` and `::1`;
/// - `2002:AABB:CCDD::/48` (6to4, RFC 3056 §2): the 6to4 router A.B.C.D;
/// - `64:ff9b::a.b.c.d` (NAT64 well-known prefix, RFC 6052 §2.1);
/// - `2001:0::/32` (Teredo, RFC 4380 §4): the client's IPv4, stored bit-inverted in the
///   last 32 bits.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let bits = u128::from(v6);
    // Truncation is the point: the embedded IPv4 is the low 32 bits.
    let low32 = bits as u32;
    let top96 = bits >> 32;
    let v4 = |x: u32| IpAddr::V4(Ipv4Addr::from(x));
    let mapped = top96 == 0x0000_0000_0000_0000_0000_ffff;
    let translated = top96 == 0x0000_0000_0000_0000_ffff_0000;
    let compatible = top96 == 0 && bits > 1;
    let nat64 = top96 == 0x0064_ff9b_0000_0000_0000_0000;
    if mapped || translated || compatible || nat64 {
        v4(low32)
    } else if bits >> 112 == 0x2002 {
        v4((bits >> 80) as u32)
    } else if bits >> 96 == 0x2001_0000 {
        v4(!low32)
    } else {
        ip
    }
}

/// Converts an operator's network written in IPv4-mapped form (`::ffff:10.0.0.0/104`)
/// into the IPv4 network it means, so that it matches canonical addresses.
fn canonical_net(net: &IpNet) -> IpNet {
    if let IpAddr::V6(a) = net.addr() {
        if net.prefix() >= 96 && u128::from(a) >> 32 == 0xffff {
            let v4 = IpAddr::V4(Ipv4Addr::from(u128::from(a) as u32));
            if let Some(n) = IpNet::new(v4, net.prefix() - 96) {
                return n;
            }
        }
    }
    *net
}

/// The built-in denied range `ip` falls in, if any (IANA special-purpose registries).
fn builtin_category(ip: IpAddr) -> Option<DenyReason> {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            V4_RANGES
                .iter()
                .find(|(net, prefix, _)| in_v4(bits, *net, *prefix))
                .map(|r| r.2)
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            if let Some(r) = V6_RANGES
                .iter()
                .find(|(net, prefix, _)| in_v6(bits, *net, *prefix))
            {
                return Some(r.2);
            }
            // The rest of ::/8 (IETF reserved) that `canonical` does not unwrap: no
            // legitimate peer lives there, and some stacks route odd spellings of it
            // unpredictably.
            if bits >> 120 == 0 && canonical(ip) == ip {
                return Some(DenyReason::Reserved);
            }
            None
        }
    }
}

/// Built-in IPv4 denials: (network, prefix, reason). First match wins, so the
/// broadcast address comes before 240.0.0.0/4.
const V4_RANGES: &[(u32, u8, DenyReason)] = &[
    (v4(0, 0, 0, 0), 8, DenyReason::Unspecified), // RFC 1122 §3.2.1.3 "this network"
    (v4(10, 0, 0, 0), 8, DenyReason::Private),    // RFC 1918
    (v4(172, 16, 0, 0), 12, DenyReason::Private), // RFC 1918
    (v4(192, 168, 0, 0), 16, DenyReason::Private), // RFC 1918
    (v4(100, 64, 0, 0), 10, DenyReason::SharedAddressSpace), // RFC 6598
    (v4(127, 0, 0, 0), 8, DenyReason::Loopback),  // RFC 1122 §3.2.1.3
    (v4(169, 254, 0, 0), 16, DenyReason::LinkLocal), // RFC 3927
    (v4(192, 0, 0, 0), 24, DenyReason::Reserved), // RFC 6890 IETF protocol assignments
    (v4(192, 0, 2, 0), 24, DenyReason::Documentation), // RFC 5737 TEST-NET-1
    (v4(198, 51, 100, 0), 24, DenyReason::Documentation), // RFC 5737 TEST-NET-2
    (v4(203, 0, 113, 0), 24, DenyReason::Documentation), // RFC 5737 TEST-NET-3
    (v4(192, 88, 99, 0), 24, DenyReason::Reserved), // RFC 7526 ex-6to4 relay anycast
    (v4(198, 18, 0, 0), 15, DenyReason::Reserved), // RFC 2544 benchmarking
    (v4(224, 0, 0, 0), 4, DenyReason::Multicast), // RFC 5771
    (v4(255, 255, 255, 255), 32, DenyReason::Broadcast), // RFC 919 limited broadcast
    (v4(240, 0, 0, 0), 4, DenyReason::Reserved),  // RFC 1112 §4 class E
];

/// Built-in IPv6 denials: (network, prefix, reason). The rest of ::/8 is handled in
/// [`builtin_category`].
const V6_RANGES: &[(u128, u8, DenyReason)] = &[
    (0, 128, DenyReason::Unspecified),           // RFC 4291 §2.5.2
    (1, 128, DenyReason::Loopback),              // RFC 4291 §2.5.3
    (0xfe80 << 112, 10, DenyReason::LinkLocal),  // RFC 4291 §2.5.6
    (0xfec0 << 112, 10, DenyReason::SiteLocal),  // RFC 3879 (deprecated)
    (0xfc00 << 112, 7, DenyReason::UniqueLocal), // RFC 4193
    (0xff00 << 112, 8, DenyReason::Multicast),   // RFC 4291 §2.7
    (0x2001_0db8 << 96, 32, DenyReason::Documentation), // RFC 3849
    (0x3fff << 112, 20, DenyReason::Documentation), // RFC 9637
    (0x0100 << 112, 64, DenyReason::Reserved),   // RFC 6666 discard-only
    // RFC 8215 local-use NAT64: the IPv4 embedding is not fixed, so it cannot be
    // unwrapped and checked; refuse it whole.
    (0x0064_ff9b_0001 << 80, 48, DenyReason::Reserved),
    (0x2001_0002 << 96, 48, DenyReason::Reserved), // RFC 5180 benchmarking
    (0x2001_0010 << 96, 28, DenyReason::Reserved), // RFC 4843 ORCHID (deprecated)
    (0x2001_0020 << 96, 28, DenyReason::Reserved), // RFC 7343 ORCHIDv2
    (0x5f00 << 112, 16, DenyReason::Reserved),     // RFC 9602 SRv6 SIDs
];

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

fn in_v4(ip: u32, net: u32, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    ip & mask == net & mask
}

fn in_v6(ip: u128, net: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    };
    ip & mask == net & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn ip(s: &str) -> IpAddr {
        match s.parse() {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e:?}"),
        }
    }

    fn net(s: &str) -> IpNet {
        match s.parse() {
            Ok(n) => n,
            Err(e) => panic!("{s}: {e:?}"),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 3478)
    }

    fn check(p: &PeerPolicy, s: &str) -> Result<(), DenyReason> {
        p.check(sa(s))
    }

    fn default_verdict(s: &str) -> Result<(), DenyReason> {
        check(&PeerPolicy::default(), s)
    }

    /// The Teredo address of a client whose public IPv4 is `client` (RFC 4380 §4): server
    /// 65.54.227.120, cone flag, an obfuscated port, and the client address bit-inverted.
    fn teredo(client: Ipv4Addr) -> IpAddr {
        let bits = (0x2001_0000_u128 << 96)
            | (u128::from(u32::from(Ipv4Addr::new(65, 54, 227, 120))) << 64)
            | (0x8000_u128 << 48)
            | (0x63bf_u128 << 32)
            | u128::from(!u32::from(client));
        IpAddr::V6(Ipv6Addr::from(bits))
    }

    fn six_to_four(v: Ipv4Addr) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(
            (0x2002_u128 << 112) | (u128::from(u32::from(v)) << 80) | 1,
        ))
    }

    fn nat64(v: Ipv4Addr) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(
            (0x0064_ff9b_u128 << 96) | u128::from(u32::from(v)),
        ))
    }

    // ---- canonical(), one test per encoding ----

    #[test]
    fn canonical_leaves_ipv4_alone() {
        assert_eq!(canonical(ip("127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("8.8.8.8")), ip("8.8.8.8"));
    }

    #[test]
    fn canonical_unwraps_ipv4_mapped() {
        assert_eq!(canonical(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::ffff:0.0.0.0")), ip("0.0.0.0"));
        assert_eq!(canonical(ip("::ffff:8.8.8.8")), ip("8.8.8.8"));
    }

    #[test]
    fn canonical_unwraps_ipv4_translated() {
        assert_eq!(canonical(ip("::ffff:0:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::ffff:0:a01:203")), ip("10.1.2.3"));
    }

    #[test]
    fn canonical_unwraps_ipv4_compatible_but_not_unspecified_or_loopback() {
        assert_eq!(canonical(ip("::127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("::0.0.0.2")), ip("0.0.0.2"));
        assert_eq!(canonical(ip("::")), ip("::"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
    }

    #[test]
    fn canonical_unwraps_6to4() {
        assert_eq!(canonical(ip("2002:7f00:1::1")), ip("127.0.0.1"));
        assert_eq!(
            canonical(ip("2002:c000:0201:1234:5678::9")),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn canonical_unwraps_nat64_well_known_prefix() {
        assert_eq!(canonical(ip("64:ff9b::7f00:1")), ip("127.0.0.1"));
        assert_eq!(canonical(ip("64:ff9b::8.8.8.8")), ip("8.8.8.8"));
        // Local-use prefix (RFC 8215) is not unwrapped: its embedding is not fixed.
        assert_eq!(canonical(ip("64:ff9b:1::7f00:1")), ip("64:ff9b:1::7f00:1"));
    }

    #[test]
    fn canonical_unwraps_teredo_client() {
        let t = teredo(Ipv4Addr::LOCALHOST);
        assert_eq!(t, ip("2001:0:4136:e378:8000:63bf:80ff:fffe"));
        assert_eq!(canonical(t), ip("127.0.0.1"));
        assert_eq!(
            canonical(teredo(Ipv4Addr::new(192, 0, 2, 45))),
            ip("192.0.2.45")
        );
    }

    #[test]
    fn canonical_leaves_ordinary_ipv6_alone() {
        for s in [
            "2001:4860::8888",
            "fe80::1",
            "fd00::1",
            "::1",
            "::",
            "2001:db8::1",
            "64:ff9b:1::1",
        ] {
            assert_eq!(canonical(ip(s)), ip(s), "{s}");
        }
        // Near misses of the embedding prefixes.
        for s in [
            "::1:ffff:7f00:1",
            "::fffe:7f00:1",
            "2003::1",
            "2001:1::1",
            "64:ff9b:0:0:1::1",
        ] {
            assert_eq!(canonical(ip(s)), ip(s), "{s}");
        }
    }

    // ---- built-in categories, default policy ----

    #[test]
    fn port_zero_is_denied() {
        let p = PeerPolicy::default();
        assert_eq!(
            p.check(SocketAddr::new(ip("8.8.8.8"), 0)),
            Err(DenyReason::PortZero)
        );
        assert_eq!(
            p.check(SocketAddr::new(ip("2001:4860::8888"), 0)),
            Err(DenyReason::PortZero)
        );
        // Port 0 wins even over an allow list.
        let p = PeerPolicy {
            allow: vec![net("0.0.0.0/0")],
            ..PeerPolicy::default()
        };
        assert_eq!(
            p.check(SocketAddr::new(ip("8.8.8.8"), 0)),
            Err(DenyReason::PortZero)
        );
    }

    #[test]
    fn unspecified_is_denied_in_every_spelling() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::ffff:0.0.0.0",
            "::0.0.0.2",
            "64:ff9b::",
            "2002::1",
        ] {
            assert_eq!(default_verdict(s), Err(DenyReason::Unspecified), "{s}");
        }
        let t = teredo(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            default_verdict(&t.to_string()),
            Err(DenyReason::Unspecified)
        );
    }

    #[test]
    fn loopback_is_denied_in_every_spelling() {
        for s in [
            "127.0.0.1",
            "127.255.255.254",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
        ] {
            assert_eq!(default_verdict(s), Err(DenyReason::Loopback), "{s}");
        }
        let t = teredo(Ipv4Addr::LOCALHOST);
        assert_eq!(
            PeerPolicy::default().check(SocketAddr::new(t, 3478)),
            Err(DenyReason::Loopback)
        );
    }

    #[test]
    fn private_ranges_are_denied() {
        for s in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "::ffff:10.1.2.3",
        ] {
            assert_eq!(default_verdict(s), Err(DenyReason::Private), "{s}");
        }
        for s in ["172.15.255.255", "172.32.0.0", "192.169.0.1", "11.0.0.1"] {
            assert_eq!(default_verdict(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn shared_address_space_is_denied() {
        assert_eq!(
            default_verdict("100.64.0.1"),
            Err(DenyReason::SharedAddressSpace)
        );
        assert_eq!(
            default_verdict("100.127.255.255"),
            Err(DenyReason::SharedAddressSpace)
        );
        assert_eq!(default_verdict("100.128.0.1"), Ok(()));
    }

    #[test]
    fn link_local_is_denied_including_cloud_metadata() {
        for s in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fe80::1",
            "febf::1",
        ] {
            assert_eq!(default_verdict(s), Err(DenyReason::LinkLocal), "{s}");
        }
    }

    #[test]
    fn site_local_is_denied() {
        assert_eq!(default_verdict("fec0::1"), Err(DenyReason::SiteLocal));
        assert_eq!(default_verdict("feff::1"), Err(DenyReason::SiteLocal));
    }

    #[test]
    fn unique_local_is_denied() {
        assert_eq!(default_verdict("fd00::1"), Err(DenyReason::UniqueLocal));
        assert_eq!(default_verdict("fc00::1"), Err(DenyReason::UniqueLocal));
    }

    #[test]
    fn multicast_is_denied() {
        for s in [
            "224.0.0.1",
            "239.255.255.255",
            "::ffff:224.0.0.251",
            "ff02::1",
            "ff0e::1",
        ] {
            assert_eq!(default_verdict(s), Err(DenyReason::Multicast), "{s}");
        }
    }

    #[test]
    fn broadcast_is_denied() {
        assert_eq!(
            default_verdict("255.255.255.255"),
            Err(DenyReason::Broadcast)
        );
        assert_eq!(
            default_verdict("::ffff:255.255.255.255"),
            Err(DenyReason::Broadcast)
        );
    }

    #[test]
    fn documentation_ranges_are_denied() {
        for s in [
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.200",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
        ] {
            assert_eq!(default_verdict(s), Err(DenyReason::Documentation), "{s}");
        }
        assert_eq!(default_verdict("3fff:1000::1"), Ok(()));
    }

    #[test]
    fn reserved_ipv4_ranges_are_denied() {
        for s in [
            "192.0.0.8",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "254.1.1.1",
        ] {
            assert_eq!(default_verdict(s), Err(DenyReason::Reserved), "{s}");
        }
        assert_eq!(default_verdict("198.20.0.1"), Ok(()));
    }

    #[test]
    fn reserved_ipv6_ranges_are_denied() {
        for s in [
            "100::1",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1::808:808",
            "2001:2::1",
            "2001:10::1",
            "2001:1f::1",
            "2001:20::1",
            "2001:2f::1",
            "5f00::1",
            // Parts of ::/8 that are not an IPv4 embedding.
            "::1:0:0:1",
            "::fffe:7f00:1",
            "0:0:0:1::",
            "ff::1",
        ] {
            assert_eq!(default_verdict(s), Err(DenyReason::Reserved), "{s}");
        }
        assert_eq!(default_verdict("100:0:0:1::1"), Ok(()));
        assert_eq!(default_verdict("2001:3::1"), Ok(()));
        assert_eq!(default_verdict("2001:30::1"), Ok(()));
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = PeerPolicy::default();
        assert_eq!(p.check(SocketAddr::new(ip("8.8.8.8"), 53)), Ok(()));
        assert_eq!(p.check(SocketAddr::new(ip("2001:4860::8888"), 53)), Ok(()));
        for s in [
            "1.1.1.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2a00:1450::1",
        ] {
            assert_eq!(default_verdict(s), Ok(()), "{s}");
        }
        let t = teredo(Ipv4Addr::new(8, 8, 8, 8));
        assert_eq!(p.check(SocketAddr::new(t, 3478)), Ok(()));
    }

    // ---- operator lists, own addresses, allow_loopback ----

    #[test]
    fn own_address_is_denied_in_any_spelling() {
        let p = PeerPolicy {
            own_addresses: vec![
                ip("203.0.114.10"),
                ip("2001:4860::1"),
                ip("::ffff:198.51.99.1"),
            ],
            ..PeerPolicy::default()
        };
        for s in [
            "203.0.114.10",
            "::ffff:203.0.114.10",
            "64:ff9b::cb00:720a",
            "2001:4860::1",
            "198.51.99.1",
        ] {
            assert_eq!(check(&p, s), Err(DenyReason::OwnAddress), "{s}");
        }
        assert_eq!(check(&p, "203.0.114.11"), Ok(()));
        assert_eq!(check(&p, "2001:4860::2"), Ok(()));
    }

    #[test]
    fn own_address_can_be_allowed() {
        let p = PeerPolicy {
            own_addresses: vec![ip("203.0.114.10")],
            allow: vec![net("203.0.114.10")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "203.0.114.10"), Ok(()));
    }

    #[test]
    fn allow_list_overrides_built_in_denials() {
        let p = PeerPolicy {
            allow: vec![net("10.0.0.0/8"), net("fd00::/8")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "10.1.2.3"), Ok(()));
        assert_eq!(check(&p, "::ffff:10.1.2.3"), Ok(()));
        assert_eq!(check(&p, "fd00::1"), Ok(()));
        assert_eq!(check(&p, "172.16.0.1"), Err(DenyReason::Private));
        assert_eq!(check(&p, "fc00::1"), Err(DenyReason::UniqueLocal));
    }

    #[test]
    fn allow_list_in_mapped_form_means_the_ipv4_network() {
        let p = PeerPolicy {
            allow: vec![net("::ffff:10.0.0.0/104")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "10.1.2.3"), Ok(()));
        assert_eq!(check(&p, "::ffff:10.1.2.3"), Ok(()));
        assert_eq!(check(&p, "11.0.0.1"), Ok(()));
        assert_eq!(check(&p, "192.168.0.1"), Err(DenyReason::Private));
    }

    #[test]
    fn allowing_an_ipv6_block_does_not_open_embedded_ipv4() {
        // An operator allowing "all IPv6" or "6to4" must not thereby reach loopback.
        let p = PeerPolicy {
            allow: vec![net("::/0")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "fd00::1"), Ok(()));
        assert_eq!(check(&p, "::ffff:127.0.0.1"), Err(DenyReason::Loopback));
        assert_eq!(check(&p, "2002:7f00:1::1"), Err(DenyReason::Loopback));
        assert_eq!(check(&p, "64:ff9b::a01:203"), Err(DenyReason::Private));
        let p = PeerPolicy {
            allow: vec![net("2002::/16")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "2002:7f00:1::1"), Err(DenyReason::Loopback));
    }

    #[test]
    fn deny_list_beats_allow_list() {
        let p = PeerPolicy {
            allow: vec![net("10.0.0.0/8")],
            deny: vec![net("10.1.0.0/16")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "10.2.0.1"), Ok(()));
        assert_eq!(check(&p, "10.1.2.3"), Err(DenyReason::ConfigDenied));
        assert_eq!(check(&p, "::ffff:10.1.2.3"), Err(DenyReason::ConfigDenied));
    }

    #[test]
    fn deny_list_matches_every_spelling() {
        let p = PeerPolicy {
            deny: vec![net("8.8.8.0/24")],
            ..PeerPolicy::default()
        };
        for s in [
            "8.8.8.8",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(check(&p, s), Err(DenyReason::ConfigDenied), "{s}");
        }
        assert_eq!(check(&p, "8.8.4.4"), Ok(()));
        // A deny written in IPv6 form also matches the raw IPv6 spelling.
        let p = PeerPolicy {
            deny: vec![net("2002::/16"), net("::ffff:1.1.1.0/120")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "2002:808:808::1"), Err(DenyReason::ConfigDenied));
        assert_eq!(check(&p, "8.8.8.8"), Ok(()));
        assert_eq!(check(&p, "1.1.1.1"), Err(DenyReason::ConfigDenied));
    }

    #[test]
    fn deny_list_adds_to_built_ins() {
        let p = PeerPolicy {
            deny: vec![net("2001:4860::/32")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "2001:4860::8888"), Err(DenyReason::ConfigDenied));
        assert_eq!(check(&p, "127.0.0.1"), Err(DenyReason::Loopback));
    }

    #[test]
    fn allow_loopback_permits_loopback_only() {
        let p = PeerPolicy {
            allow_loopback: true,
            ..PeerPolicy::default()
        };
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
        ] {
            assert_eq!(check(&p, s), Ok(()), "{s}");
        }
        assert_eq!(check(&p, "10.0.0.1"), Err(DenyReason::Private));
        assert_eq!(check(&p, "0.0.0.0"), Err(DenyReason::Unspecified));
        assert_eq!(check(&p, "::"), Err(DenyReason::Unspecified));
        assert_eq!(
            check(&p, "::ffff:169.254.169.254"),
            Err(DenyReason::LinkLocal)
        );
    }

    #[test]
    fn allow_loopback_does_not_override_deny_or_own_address() {
        let p = PeerPolicy {
            allow_loopback: true,
            deny: vec![net("127.0.0.53")],
            own_addresses: vec![ip("127.0.0.2")],
            ..PeerPolicy::default()
        };
        assert_eq!(check(&p, "127.0.0.53"), Err(DenyReason::ConfigDenied));
        assert_eq!(
            check(&p, "::ffff:127.0.0.53"),
            Err(DenyReason::ConfigDenied)
        );
        assert_eq!(check(&p, "127.0.0.2"), Err(DenyReason::OwnAddress));
        assert_eq!(check(&p, "127.0.0.1"), Ok(()));
    }

    #[test]
    fn deny_reason_names_are_short_snake_case() {
        let all = [
            DenyReason::PortZero,
            DenyReason::Loopback,
            DenyReason::Unspecified,
            DenyReason::Private,
            DenyReason::SharedAddressSpace,
            DenyReason::UniqueLocal,
            DenyReason::LinkLocal,
            DenyReason::SiteLocal,
            DenyReason::Multicast,
            DenyReason::Broadcast,
            DenyReason::Documentation,
            DenyReason::Reserved,
            DenyReason::OwnAddress,
            DenyReason::ConfigDenied,
        ];
        let mut names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        for n in &names {
            assert!(
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert_eq!(
            DenyReason::SharedAddressSpace.as_str(),
            "shared_address_space"
        );
    }

    fn policies() -> Vec<PeerPolicy> {
        vec![
            PeerPolicy::default(),
            PeerPolicy {
                allow_loopback: true,
                ..PeerPolicy::default()
            },
            PeerPolicy {
                allow: vec![net("10.0.0.0/8"), net("::ffff:192.168.0.0/112")],
                deny: vec![net("8.0.0.0/7"), net("10.128.0.0/9")],
                own_addresses: vec![ip("9.9.9.9"), ip("::ffff:1.1.1.1")],
                ..PeerPolicy::default()
            },
        ]
    }

    proptest! {
        /// An IPv4 address and its IPv4-mapped, NAT64 and 6to4 spellings get the same
        /// verdict, under several policies.
        #[test]
        fn ipv6_spellings_get_the_ipv4_verdict(v in any::<u32>(), port in 1u16..) {
            let v = Ipv4Addr::from(v);
            for p in policies() {
                let want = p.check(SocketAddr::new(IpAddr::V4(v), port));
                for spelling in [IpAddr::V6(v.to_ipv6_mapped()), nat64(v), six_to_four(v)] {
                    prop_assert_eq!(p.check(SocketAddr::new(spelling, port)), want, "{} {}", v, spelling);
                }
            }
        }

        /// The same, for addresses drawn from the denied ranges (random u32s rarely land
        /// in the small ones).
        #[test]
        fn ipv6_spellings_of_special_addresses(i in 0..V4_RANGES.len(), host in any::<u32>()) {
            let (netbits, prefix, _) = V4_RANGES[i];
            let hostmask = if prefix == 0 { u32::MAX } else { u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0) };
            let v = Ipv4Addr::from(netbits | (host & hostmask));
            for p in policies() {
                let want = p.check(SocketAddr::new(IpAddr::V4(v), 9));
                prop_assert!(want.is_err() || p.allow_loopback || !p.allow.is_empty());
                for spelling in [IpAddr::V6(v.to_ipv6_mapped()), nat64(v), six_to_four(v)] {
                    prop_assert_eq!(p.check(SocketAddr::new(spelling, 9)), want, "{} {}", v, spelling);
                }
            }
        }

        /// No IPv6 spelling is more permissive than the address it reaches.
        #[test]
        fn raw_is_never_more_permissive_than_canonical(bits in any::<u128>(), port in 1u16..) {
            let raw = IpAddr::V6(Ipv6Addr::from(bits));
            for p in policies() {
                if p.check(SocketAddr::new(canonical(raw), port)).is_err() {
                    prop_assert!(p.check(SocketAddr::new(raw, port)).is_err(), "{}", raw);
                }
            }
        }

        /// Same, with the interesting prefixes forced on random low bits.
        #[test]
        fn embedded_spellings_never_more_permissive(
            prefix in prop::sample::select(vec![
                0u128, 0xffff_u128 << 32, 0xffff_0000_u128 << 32, 0x0064_ff9b_u128 << 96,
                0x2001_0000_u128 << 96, 0x0064_ff9b_0001_u128 << 80,
            ]),
            low in any::<u64>(),
            six_to_four_v4 in any::<u32>(),
        ) {
            for raw in [
                IpAddr::V6(Ipv6Addr::from(prefix | u128::from(low as u32))),
                IpAddr::V6(Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(six_to_four_v4) << 80) | u128::from(low))),
            ] {
                for p in policies() {
                    if p.check(SocketAddr::new(canonical(raw), 1)).is_err() {
                        prop_assert!(p.check(SocketAddr::new(raw, 1)).is_err(), "{}", raw);
                    }
                }
            }
        }
    }
}
