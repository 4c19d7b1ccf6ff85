//! Allocations, permissions and channels (RFC 8656 §2.2, §9, §12): the tables, with
//! their lifetimes and limits. Lookups are linear over small vectors: an allocation has a
//! handful of permissions and channels (bounded by configuration), and a scan of a few
//! entries beats a map on the relay path.

use crate::auth::{Key, PasswordAlgorithm};
use crate::event::{ClientInfo, TrafficCounters};
use crate::ids::{AllocationId, ConnId, ListenerId, RelayId};
use crate::server::TokenBucket;
use crate::stun::IntegrityKey;
use crate::time::Instant;
use core::time::Duration;
use std::net::{IpAddr, SocketAddr};

/// How long an expired channel's number and peer stay reserved (RFC 8656 §12: "...MUST
/// NOT be rebound ... for 5 minutes after the binding expired").
pub(crate) const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// The 5-tuple seen from the server (RFC 8656 §2.2): for UDP the listener and the client's
/// address, for a stream the stream itself.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) enum ClientKey {
    /// A UDP client.
    Udp(ListenerId, SocketAddr),
    /// A stream client.
    Stream(ConnId),
}

/// One relayed transport address of an allocation (one per family).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RelaySide {
    pub relay: RelayId,
    pub port: u16,
    /// What XOR-RELAYED-ADDRESS says.
    pub advertised: SocketAddr,
}

/// A permission (RFC 8656 §9): a peer IP address, no port.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

/// A channel binding (RFC 8656 §12). After `expires` it is cooling down until
/// `expires + CHANNEL_COOLDOWN`: unusable, but its number and peer stay tied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
}

impl Channel {
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.expires
    }
    fn gone(&self, now: Instant) -> bool {
        now >= self.expires + CHANNEL_COOLDOWN
    }
}

/// An allocation and everything hanging off it.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub id: AllocationId,
    pub key5: ClientKey,
    pub client: ClientInfo,
    pub username: String,
    pub key: Key,
    /// `key` prepared for the integrity attribute of the Allocate, which the client's
    /// later requests most likely use too.
    pub integrity: IntegrityKey,
    pub algorithm: PasswordAlgorithm,
    /// Index 0: IPv4 side, index 1: IPv6 side.
    pub sides: [Option<RelaySide>; 2],
    pub created: Instant,
    pub expires: Instant,
    pub lifetime_s: u32,
    pub permissions: Vec<Permission>,
    pub channels: Vec<Channel>,
    pub traffic: TrafficCounters,
    /// Bandwidth budget (`Config::max_bps`), indexed by `Direction`.
    pub bandwidth: [TokenBucket; 2],
    /// The deadline registered in the server's timer set.
    pub deadline: Instant,
    /// None: `key` is accepted for this allocation's requests for its whole life. Some(t):
    /// only through wall-clock second `t`; after, requests are checked against the
    /// credential store (a reload took its credential away; `server::reload`).
    pub key_valid_until_unix_s: Option<u64>,
}

impl Allocation {
    /// The side for a peer of this family, if the allocation has one (else 443).
    pub fn side_for(&self, peer: IpAddr) -> Option<&RelaySide> {
        self.sides[family_index(peer)].as_ref()
    }

    /// True if a live permission covers `ip`.
    pub fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && now < p.expires)
    }

    /// Installs or refreshes the permissions for `ips`; answers false (installing nothing)
    /// when the new ones would exceed `max`.
    pub fn install_permissions(&mut self, ips: &[IpAddr], until: Instant, max: usize) -> bool {
        let new = ips
            .iter()
            .enumerate()
            .filter(|(i, ip)| {
                !ips[..*i].contains(ip) && !self.permissions.iter().any(|p| p.ip == **ip)
            })
            .count();
        if self.permissions.len() + new > max {
            return false;
        }
        for ip in ips {
            match self.permissions.iter_mut().find(|p| p.ip == *ip) {
                Some(p) => p.expires = p.expires.max(until),
                None => self.permissions.push(Permission {
                    ip: *ip,
                    expires: until,
                }),
            }
        }
        true
    }

    /// The live channel for a number.
    pub fn channel_by_number(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.is_live(now))
    }

    /// The live channel bound to `peer`.
    pub fn channel_by_peer(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.is_live(now))
    }

    /// Checks RFC 8656 §12.2's rebinding rules: the number may not be tied to another peer,
    /// nor the peer to another number (live or cooling down).
    pub fn channel_conflict(&self, number: u16, peer: SocketAddr) -> bool {
        self.channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer))
    }

    /// Binds or refreshes a channel; false when a new one would exceed `max`.
    pub fn bind_channel(
        &mut self,
        number: u16,
        peer: SocketAddr,
        until: Instant,
        max: usize,
    ) -> bool {
        if let Some(c) = self
            .channels
            .iter_mut()
            .find(|c| c.number == number && c.peer == peer)
        {
            c.expires = until;
            return true;
        }
        if self.channels.len() >= max {
            return false;
        }
        self.channels.push(Channel {
            number,
            peer,
            expires: until,
        });
        true
    }

    /// Drops permissions that expired and channels whose cooldown is over.
    pub fn expire(&mut self, now: Instant) {
        self.permissions.retain(|p| now < p.expires);
        self.channels.retain(|c| !c.gone(now));
    }

    /// The next instant something of this allocation is due.
    pub fn next_deadline(&self) -> Instant {
        let mut t = self.expires;
        for p in &self.permissions {
            t = t.min(p.expires);
        }
        for c in &self.channels {
            t = t.min(c.expires + CHANNEL_COOLDOWN);
        }
        t
    }

    /// Live channels now.
    pub fn live_channels(&self, now: Instant) -> usize {
        self.channels.iter().filter(|c| c.is_live(now)).count()
    }
}

/// 0 for IPv4, 1 for IPv6: the index into `Allocation::sides`.
pub(crate) fn family_index(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}
