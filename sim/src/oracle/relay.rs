//! Relay sockets and what crosses them: `no_relay_without_permission`,
//! `no_relay_to_denied_address` (through [`denied`]), `relay_to_wrong_client`,
//! `relay_released_with_allocation`, `no_port_in_two_allocations`,
//! `no_bind_in_quarantine`, `counters_balance` and `relayed_counters_match`.

use super::shadow::{Check, Key, LoopRelay, RelayShadow, Shadow, Step};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::cidr::IpNet;
use turnpike_core::Instant;

impl Shadow {
    pub(super) fn bind_request(
        &mut self,
        now: Instant,
        relay: LoopRelay,
        addr: SocketAddr,
    ) -> Check {
        if let Some(other) = self.holders.get(&addr) {
            return Err((
                "no_port_in_two_allocations",
                format!(
                    "bind of {addr} for relay {} of loop {} while relay {} of loop {} holds it",
                    relay.1 .0, relay.0, other.1 .0, other.0
                ),
            ));
        }
        if let Some(at) = self.released.get(&(addr.is_ipv6(), addr.port())) {
            if now < *at + self.cfg.quarantine {
                return Err((
                    "no_bind_in_quarantine",
                    format!(
                        "port {} bound by loop {} {:?} after release (quarantine {:?})",
                        addr.port(),
                        relay.0,
                        now.since(*at),
                        self.cfg.quarantine
                    ),
                ));
            }
        }
        if let Some(old) = self.relays.insert(relay, RelayShadow { addr, owner: None }) {
            self.count_relay(relay.0, old.addr, false);
        }
        self.count_relay(relay.0, addr, true);
        self.holders.insert(addr, relay);
        Ok(())
    }

    /// Data between relay `relay` and `peer` needs a live allocation owning the relay
    /// and a live permission for the peer's address; towards a client it must go to the
    /// allocation's own client.
    pub(super) fn check_peer_path(
        &self,
        now: Instant,
        relay: LoopRelay,
        peer: SocketAddr,
        dest: Option<Key>,
    ) -> Check {
        let Some(owner) = self.relays.get(&relay).and_then(|r| r.owner) else {
            return Err((
                "no_relay_without_permission",
                format!(
                    "relay {} of loop {} has no live allocation ({peer})",
                    relay.1 .0, relay.0
                ),
            ));
        };
        let Some(a) = self.allocs.get(&owner) else {
            return Err((
                "no_relay_without_permission",
                format!("allocation {} is gone ({peer})", owner.0),
            ));
        };
        let live = a.perms.get(&peer.ip()).is_some_and(|until| now < *until);
        if !live {
            return Err((
                "no_relay_without_permission",
                format!(
                    "allocation {} relayed {} {peer} without a live permission",
                    owner.0,
                    if dest.is_some() { "from" } else { "to" }
                ),
            ));
        }
        if let Some(d) = dest {
            if d != a.key {
                return Err((
                    "relay_to_wrong_client",
                    format!("allocation {} of {:?} sent to {d:?}", owner.0, a.key),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn relay_released_with_allocation(&mut self, _step: &Step) -> Check {
        for r in &self.step_deleted {
            if let Some(s) = self.relays.get(r) {
                return Err((
                    "relay_released_with_allocation",
                    format!(
                        "relay {} of loop {} ({}) still open after its allocation ended",
                        r.1 .0, r.0, s.addr
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn counters_balance(&mut self, step: &Step) -> Check {
        let s = step.stats;
        let (to_peer, to_client) = (s.to_peer, s.to_client);
        if to_peer != self.fwd_peer || to_client != self.fwd_client {
            return Err((
                "relayed_counters_match",
                format!(
                    "core counts {to_peer}/{to_client} relayed, the driver forwarded {}/{}",
                    self.fwd_peer, self.fwd_client
                ),
            ));
        }
        let drops = s.drops;
        let out = to_peer + to_client + drops;
        let input = self.data_in + self.garbage_in;
        if out > input || input > out + self.step_slack {
            let d: Vec<_> = step.loops.iter().map(|l| l.dropped).collect();
            return Err((
                "counters_balance",
                format!("received {} data + {} garbage, relayed {to_peer}+{to_client}, dropped {drops} ({d:?}), slack {}", self.data_in, self.garbage_in, self.step_slack),
            ));
        }
        // What the slack covered was discarded uncounted: it is consumed input.
        if input > out {
            self.data_in -= (input - out).min(self.data_in);
        }
        Ok(())
    }
}

/// An independent statement of who may never be a peer (RFC 8656 §21, the special
/// ranges), unless `allow` says so. Deliberately written apart from the core's policy.
pub fn denied(peer: SocketAddr, allow: &[IpNet]) -> bool {
    if peer.port() == 0 {
        return true;
    }
    let ip = match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    if allow.iter().any(|n| n.contains(ip)) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xfe00) == 0xfc00
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_addresses() {
        for a in [
            "127.0.0.1:1",
            "10.0.0.1:1",
            "[::ffff:127.0.0.1]:1",
            "[::1]:1",
            "0.0.0.0:1",
            "11.0.0.1:0",
            "[fe80::1]:1",
            "100.64.0.1:1",
        ] {
            assert!(denied(a.parse().unwrap(), &[]), "{a}");
        }
        assert!(!denied("11.0.0.1:5000".parse().unwrap(), &[]));
        let allow: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(!denied("10.0.0.1:1".parse().unwrap(), &allow));
    }
}
