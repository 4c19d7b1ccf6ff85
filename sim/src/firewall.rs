//! Firewalls in front of a host: drop UDP (both ways, or inbound only), or let nothing
//! but TCP to port 443 out, as corporate networks do.

use serde::Deserialize;

/// A host's firewall rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firewall {
    /// Everything passes.
    #[default]
    None,
    /// No UDP in or out.
    DropUdp,
    /// Inbound UDP is dropped (iptables `-A INPUT -p udp -j DROP` on the relay).
    DropUdpInbound,
    /// Only TCP to remote port 443 goes out (and its answers come back); no UDP at all.
    #[serde(rename = "only-443")]
    Only443,
}

/// Which way a packet crosses the firewall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Leaving the host.
    Outbound,
    /// Reaching the host.
    Inbound,
}

impl Firewall {
    /// May a UDP datagram cross in `dir`?
    pub fn allows_udp(self, dir: Direction) -> bool {
        match self {
            Firewall::None => true,
            Firewall::DropUdp | Firewall::Only443 => false,
            Firewall::DropUdpInbound => dir == Direction::Outbound,
        }
    }

    /// May this host open a TCP connection to `remote_port`?
    pub fn allows_tcp_connect(self, remote_port: u16) -> bool {
        match self {
            Firewall::Only443 => remote_port == 443,
            _ => true,
        }
    }

    /// May a TCP connection from outside reach this host?
    pub fn allows_tcp_accept(self) -> bool {
        !matches!(self, Firewall::Only443)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(!Firewall::DropUdp.allows_udp(Direction::Outbound));
        assert!(Firewall::DropUdpInbound.allows_udp(Direction::Outbound));
        assert!(!Firewall::DropUdpInbound.allows_udp(Direction::Inbound));
        assert!(Firewall::Only443.allows_tcp_connect(443));
        assert!(!Firewall::Only443.allows_tcp_connect(3478));
        assert!(Firewall::None.allows_udp(Direction::Inbound));
    }
}
