//! The addresses of this host's interfaces, collected once at start: the URLs of issued
//! configurations use them when no address is configured (Sora's behaviour).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every usable address of the interfaces (see [`usable`]), in interface order, without
/// duplicates. Empty if the interfaces cannot be read.
pub fn collect() -> Vec<IpAddr> {
    select(&interface_addresses())
}

/// The usable addresses among `all`, in order, without duplicates.
pub fn select(all: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in all {
        if usable(ip) && !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// True for an address a remote client could reach: not loopback, unspecified,
/// multicast, link-local (IPv4 169.254/16, IPv6 fe80::/10) or broadcast.
pub fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_link_local()
                || *a == Ipv4Addr::BROADCAST)
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Every address of every interface, from getifaddrs(3).
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: the family is AF_INET, so this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: the family is AF_INET6, so this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reachable_addresses_are_kept_in_order() {
        let all: Vec<IpAddr> = [
            "127.0.0.1",
            "192.0.2.10",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "2001:db8::1",
            "192.0.2.20",
            "192.0.2.10",
            "0.0.0.0",
            "224.0.0.1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let got: Vec<String> = select(&all).iter().map(ToString::to_string).collect();
        assert_eq!(got, vec!["192.0.2.10", "2001:db8::1", "192.0.2.20"]);
    }

    #[test]
    fn the_interfaces_can_be_read() {
        // Loopback is always there, and always left out.
        let raw = interface_addresses();
        assert!(raw.iter().any(|ip| ip.is_loopback()), "{raw:?}");
        assert!(collect().iter().all(usable));
    }
}
