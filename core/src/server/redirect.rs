//! Draining and redirection: a relay leaving the fleet stops taking new allocations and
//! keeps relaying its live ones; a draining or full relay points new clients at another
//! relay with 300 (Try Alternate) and ALTERNATE-SERVER (RFC 8489 §10, RFC 8656 §7.2:
//! "The server MAY choose to reject the request with a 300 (Try Alternate) error if it
//! would like to redirect the client to a different server").
//!
//! Reading list: RFC 8489 §10 (ALTERNATE-SERVER mechanism), §14.15 (ALTERNATE-SERVER),
//! §14.16 (ALTERNATE-DOMAIN); RFC 8656 §7.2 (Allocate), §19 (508).
//!
//! Loops. RFC 8489 §10 puts the loop check on the client: "If the client has been
//! redirected to a server to which it has already sent this request within the last five
//! minutes, it MUST ignore the redirection and consider the transaction to have failed"
//! (the core's client does, [`crate::client`]). A relay cannot: the redirected Allocate
//! is a new transaction (over a stream, on a new connection) that carries nothing of where
//! it was before, and the relays of a fleet share no state. What a relay does: it never
//! names itself, and it picks among its alternates by a hash of the client's IP address
//! (an IPv6 client's /64), so a client that asks again is sent to the same place.
//!
//! Only a new allocation is redirected: an Allocate that redeems a RESERVATION-TOKEN
//! must come to the relay that holds the port, and Refresh, CreatePermission, ChannelBind,
//! Send and ChannelData of live allocations are served as ever (a drain cuts no call).

use super::reply;
use super::{Server, Source};
use crate::config::AlternateServer;
use crate::event::Event;
use crate::stun::{attr, MessageBuilder};
use crate::time::Instant;
use std::net::SocketAddr;

/// The error answered to a new Allocate while draining with no alternate for the client.
/// RFC 8656 §19, 508 (Insufficient Capacity): "The server is unable to carry out the
/// request due to some capacity limit being reached. In an Allocate response, this could
/// be due to the server having no more relayed transport addresses available at that
/// time": a draining relay has none for new clients, and clients take 508 as "try another
/// server" (RFC 8656 §7.3). 486 would blame the user's quota, 403 the user's rights.
pub const DRAINING_CODE: u16 = 508;

impl Server {
    /// Starts draining at `now` (idempotent). From then on a new Allocate is answered 300
    /// with ALTERNATE-SERVER when an alternate serves the client's listener and address
    /// family ([`crate::config::Config::alternate_servers`]), and 508 otherwise; Allocates
    /// already under way complete, and the live allocations keep being refreshed and
    /// relayed until they end. The driver stops when [`Server::stats`] counts no
    /// allocation left (or at its own deadline). On a node, every loop must be told.
    pub fn start_drain(&mut self, now: Instant) {
        if self.draining.is_none() {
            self.draining = Some(now);
            self.emit(Event::DrainStarted);
        }
    }

    /// Whether the server drains ([`Server::start_drain`]).
    pub fn draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Since when the server drains.
    pub fn draining_since(&self) -> Option<Instant> {
        self.draining
    }

    /// The alternate offered to `src`, if any: one of those configured for its listener,
    /// of its address family, that is not this relay, chosen by a hash of the client's
    /// IP address (the same client is sent to the same place). Allocates nothing: it
    /// counts the candidates, then walks to the chosen one.
    pub(super) fn alternate_for(&self, src: &Source) -> Option<&AlternateServer> {
        let candidates = || {
            self.cfg
                .alternate_servers
                .iter()
                .filter(|a| a.listener == src.info.listener)
                .filter(|a| a.addr.is_ipv4() == src.info.addr.is_ipv4())
                .filter(|a| !self.is_own_address(a.addr))
        };
        let n = candidates().count() as u64;
        if n == 0 {
            return None;
        }
        let pick = usize::try_from(client_hash(src.info.addr) % n).unwrap_or(0);
        candidates().nth(pick)
    }

    /// Counts and reports a redirect of `src` to `alt`.
    pub(super) fn note_redirect(&mut self, src: &Source, username: &str, to: SocketAddr) {
        self.stats.redirects += 1;
        *self.stats.allocation_failures.entry(300).or_insert(0) += 1;
        self.emit(Event::AllocationRedirected {
            client: src.info,
            username: username.to_string(),
            to,
        });
    }

    /// A listener of this relay answers at `addr` (RFC 8489 §10 leaves loops to the
    /// client; a relay at least never sends a client back to itself). On a listener's
    /// port, the relay is its bound address and its relay addresses, advertised and bound,
    /// whatever the listener is bound to: behind 1:1 NAT a relay bound to 10.0.0.5 is
    /// known to its fleet by its advertised address. Loopback counts for a listener bound
    /// to the unspecified address.
    fn is_own_address(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip();
        let own_ip = [self.cfg.relay_v4, self.cfg.relay_v6]
            .iter()
            .flatten()
            .any(|r| r.advertised == ip || r.bind == ip);
        self.listeners.values().any(|l| {
            l.local.port() == addr.port()
                && (l.local.ip() == ip
                    || own_ip
                    || (l.local.ip().is_unspecified() && ip.is_loopback()))
        })
    }
}

/// Adds ALTERNATE-SERVER (RFC 8489 §14.15: encoded like MAPPED-ADDRESS, not XOR'd) and,
/// for a TLS alternate, ALTERNATE-DOMAIN (§14.16) to a 300 answer.
pub(super) fn add_alternate(b: &mut MessageBuilder, alt: &AlternateServer) {
    b.add_address(attr::ALTERNATE_SERVER, alt.addr);
    if let Some(d) = &alt.domain {
        b.add(attr::ALTERNATE_DOMAIN, d.as_bytes());
    }
}

/// A 300 (Try Alternate) answer to `req` naming `alt`, no tail yet.
pub(super) fn try_alternate(
    req: &crate::stun::Message<'_>,
    alt: &AlternateServer,
) -> MessageBuilder {
    let mut b = reply::error(req, 300);
    add_alternate(&mut b, alt);
    b
}

/// FNV-1a of the client's IP address (an IPv6 client's /64): stable across runs and
/// builds, not secret (it only spreads clients over alternates). The port is left out, so
/// a client that comes back over another transport, or whose NAT gave it a new port, is
/// sent to the same alternate.
fn client_hash(addr: SocketAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    match addr.ip() {
        std::net::IpAddr::V4(ip) => eat(&ip.octets()),
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => eat(&v4.octets()),
            None => eat(&ip.octets()[..8]),
        },
    }
    h
}

#[cfg(test)]
mod tests {
    use super::client_hash;
    use std::net::SocketAddr;

    fn h(s: &str) -> u64 {
        client_hash(s.parse::<SocketAddr>().expect("address"))
    }

    #[test]
    fn the_hash_ignores_the_port_and_the_ipv6_host() {
        assert_eq!(h("198.51.100.7:40000"), h("198.51.100.7:1"));
        assert_ne!(h("198.51.100.7:40000"), h("198.51.100.8:40000"));
        assert_eq!(
            h("[2001:db8:1:2::1]:40000"),
            h("[2001:db8:1:2:aa:bb:cc:dd]:5")
        );
        assert_ne!(h("[2001:db8:1:2::1]:40000"), h("[2001:db8:1:3::1]:40000"));
        assert_eq!(h("[::ffff:198.51.100.7]:9"), h("198.51.100.7:40000"));
    }
}
