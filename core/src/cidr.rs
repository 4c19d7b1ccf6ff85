//! IP networks in CIDR notation (RFC 4632), for peer policy and trusted proxy ranges.
//!
//! IPv6 prefixes follow RFC 4291 §2.3. A network is stored with its host bits cleared,
//! so two spellings of the same network compare equal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network: an address and a prefix length.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is not `ADDR` or `ADDR/PREFIX`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CidrError(pub String);

impl IpNet {
    /// The network of `addr` with `prefix` bits (host bits are cleared). None if the
    /// prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix)?)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix)?)),
        };
        Some(IpNet { addr, prefix })
    }

    /// True if `ip` is inside. An IPv4 network never contains an IPv6 address (callers
    /// canonicalise first).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                // `new` guarantees the prefix fits, so the mask exists.
                mask_v4(self.prefix).is_some_and(|m| u32::from(ip) & m == u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(self.prefix).is_some_and(|m| u128::from(ip) & m == u128::from(net))
            }
            _ => false,
        }
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl core::str::FromStr for IpNet {
    type Err = CidrError;
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_part.parse().map_err(|_| {
            CidrError(format!(
                "invalid network {s:?}: {addr_part:?} is not an IP address"
            ))
        })?;
        let max = max_prefix(addr);
        let prefix = match prefix_part {
            None => max,
            Some(p) => parse_prefix(p).ok_or_else(|| {
                CidrError(format!(
                    "invalid network {s:?}: prefix {p:?} is not a number from 0 to {max}"
                ))
            })?,
        };
        IpNet::new(addr, prefix).ok_or_else(|| {
            CidrError(format!(
                "invalid network {s:?}: prefix /{prefix} is longer than {max} bits"
            ))
        })
    }
}

impl core::fmt::Display for IpNet {
    /// `10.0.0.0/8`, `fd00::/8`: the form `from_str` reads back.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The netmask of an IPv4 prefix, None past 32 bits.
fn mask_v4(prefix: u8) -> Option<u32> {
    match prefix {
        0 => Some(0),
        1..=32 => Some(u32::MAX << (32 - u32::from(prefix))),
        _ => None,
    }
}

/// The netmask of an IPv6 prefix, None past 128 bits.
fn mask_v6(prefix: u8) -> Option<u128> {
    match prefix {
        0 => Some(0),
        1..=128 => Some(u128::MAX << (128 - u32::from(prefix))),
        _ => None,
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// A prefix length: one to three ASCII digits. `u8::from_str` alone would accept `+8`.
fn parse_prefix(p: &str) -> Option<u8> {
    if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        match s.parse() {
            Ok(n) => n,
            Err(e) => panic!("{s}: {e:?}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        match s.parse() {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e:?}"),
        }
    }

    #[test]
    fn parses_ipv4_network() {
        let n = net("10.0.0.0/8");
        assert_eq!(n.addr(), ip("10.0.0.0"));
        assert_eq!(n.prefix(), 8);
        assert!(n.contains(ip("10.255.1.2")));
        assert!(!n.contains(ip("11.0.0.0")));
    }

    #[test]
    fn parses_ipv6_network() {
        let n = net("fd00::/8");
        assert_eq!(n.prefix(), 8);
        assert!(n.contains(ip("fd12:3456::1")));
        assert!(!n.contains(ip("fe80::1")));
    }

    #[test]
    fn bare_addresses_are_host_routes() {
        let v4 = net("192.0.2.1");
        assert_eq!(v4.prefix(), 32);
        assert!(v4.contains(ip("192.0.2.1")));
        assert!(!v4.contains(ip("192.0.2.2")));
        let v6 = net("::1");
        assert_eq!(v6.prefix(), 128);
        assert!(v6.contains(ip("::1")));
        assert!(!v6.contains(ip("::2")));
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(net("10.1.2.3/8"), net("10.0.0.0/8"));
        assert_eq!(net("2001:db8::1/32"), net("2001:db8::/32"));
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(
            IpNet::new(ip("172.31.255.255"), 12),
            Some(net("172.16.0.0/12"))
        );
    }

    #[test]
    fn prefix_zero_contains_the_whole_family() {
        let all4 = net("0.0.0.0/0");
        assert!(all4.contains(ip("255.255.255.255")));
        assert!(all4.contains(ip("0.0.0.0")));
        assert!(!all4.contains(ip("::")));
        let all6 = net("::/0");
        assert!(all6.contains(ip("ffff::1")));
        assert!(!all6.contains(ip("1.2.3.4")));
    }

    #[test]
    fn families_never_mix() {
        assert!(!net("0.0.0.0/0").contains(ip("::ffff:1.2.3.4")));
        assert!(!net("::ffff:0:0/96").contains(ip("1.2.3.4")));
    }

    #[test]
    fn too_long_prefixes_are_rejected() {
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("::/129".parse::<IpNet>().is_err());
        assert!("::/255".parse::<IpNet>().is_err());
        assert!("::/256".parse::<IpNet>().is_err());
        assert_eq!(IpNet::new(ip("10.0.0.0"), 33), None);
        assert_eq!(IpNet::new(ip("::"), 129), None);
        assert!("10.0.0.0/32".parse::<IpNet>().is_ok());
        assert!("::/128".parse::<IpNet>().is_ok());
    }

    #[test]
    fn malformed_input_is_an_error_naming_it() {
        for bad in [
            "",
            "/",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "10.0.0.0 /8",
            "10.0.0.0/ 8",
            "fe80::1%eth0",
            "example.com",
            "10.0.0.0/0008",
            "::/x",
        ] {
            match bad.parse::<IpNet>() {
                Ok(n) => panic!("{bad:?} parsed as {n}"),
                Err(CidrError(msg)) => assert!(msg.contains(&format!("{bad:?}")), "{msg}"),
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "192.0.2.1/32",
            "fd00::/8",
            "::/0",
            "::1/128",
            "2001:db8::/32",
        ] {
            assert_eq!(net(s).to_string(), s);
            assert_eq!(net(&net(s).to_string()), net(s));
        }
    }
}
