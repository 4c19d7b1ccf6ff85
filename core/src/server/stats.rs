//! Counters of the server, for metrics and the simulator's oracles.

use crate::ports::PortStats;
use std::collections::BTreeMap;

/// Relayed traffic over one client transport, both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportTraffic {
    /// Packets relayed from clients to peers.
    pub to_peer_packets: u64,
    /// Payload bytes relayed from clients to peers.
    pub to_peer_bytes: u64,
    /// Packets relayed from peers to clients.
    pub from_peer_packets: u64,
    /// Payload bytes relayed from peers to clients.
    pub from_peer_bytes: u64,
}

/// Inputs dropped without an answer, by reason (RFC 8489 §6.3: malformed messages are
/// discarded; RFC 8656 §11–12: data without a permission or channel is discarded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Not a valid STUN message or ChannelData.
    pub malformed: u64,
    /// STUN responses, or indications other than Send, sent to the server.
    pub unexpected: u64,
    /// Data from a client with no allocation.
    pub no_allocation: u64,
    /// Data to or from a peer with no live permission.
    pub no_permission: u64,
    /// ChannelData on a channel that is not bound.
    pub unbound_channel: u64,
    /// Data that would not fit in one message.
    pub too_large: u64,
    /// Send indications to a denied peer (port 0).
    pub denied_peer: u64,
    /// Answers to unauthenticated requests held back by the per-source budget.
    pub rate_limited: u64,
    /// Outputs dropped because the output queue was full.
    pub queue_full: u64,
    /// Datagrams on a relay socket the core does not know (late, after its allocation).
    pub unknown_relay: u64,
    /// Relayed packets over the bandwidth cap (`max_bps` or `total_max_bps`).
    pub bandwidth: u64,
    /// Payload bytes of the packets counted in `bandwidth`.
    pub bandwidth_bytes: u64,
}

/// A snapshot of the server's counters (`Server::stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations now.
    pub allocations: u64,
    /// Allocations waiting for their relay socket.
    pub allocations_pending: u64,
    /// Allocations created since start.
    pub allocations_created: u64,
    /// Allocations ended since start.
    pub allocations_deleted: u64,
    /// Failed Allocate requests since start, by error code.
    pub allocation_failures: BTreeMap<u16, u64>,
    /// Permissions now (gauge).
    pub permissions: u64,
    /// Live channel bindings now (gauge).
    pub channels: u64,
    /// Streams now.
    pub streams: u64,
    /// Streams accepted since start.
    pub streams_opened: u64,
    /// Streams closed by the core since start (bad input, timeouts, limits).
    pub streams_rejected: u64,
    /// Streams refused because their source had `max_streams_per_source` open (counted in
    /// `streams_rejected` too).
    pub streams_over_source_cap: u64,
    /// Traffic relayed for UDP clients.
    pub udp: TransportTraffic,
    /// Traffic relayed for stream (TCP/TLS) clients.
    pub tcp: TransportTraffic,
    /// 401 answers sent.
    pub unauthorized: u64,
    /// 438 answers sent.
    pub stale_nonce: u64,
    /// Authentication failures (bad password, unknown user, expired...).
    pub auth_failures: u64,
    /// 508 answers sent.
    pub insufficient_capacity: u64,
    /// Peers refused by the policy (403).
    pub peers_denied: u64,
    /// PROXY headers accepted.
    pub proxy_accepted: u64,
    /// PROXY headers refused (malformed, untrusted, timed out).
    pub proxy_rejected: u64,
    /// Retransmitted requests answered from the response cache.
    pub retransmissions: u64,
    /// Inputs dropped, by reason.
    pub dropped: DropCounters,
    /// IPv4 relay port pool.
    pub ports_v4: PortStats,
    /// IPv6 relay port pool.
    pub ports_v6: PortStats,
}
