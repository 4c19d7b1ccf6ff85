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
    /// Answers to unauthenticated UDP requests held back by the anti-amplification
    /// budget (the sum of [`UnauthCounters`]' `held_back_*`).
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

/// Unauthenticated answers (401, 438, 400, Binding...) and what paid for them, by source
/// class: UDP sources, bounded by anti-amplification (RFC 8656 §21.2, RFC 9000 §8), and
/// streams, which are always answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnauthCounters {
    /// Requests received from UDP sources (any: each earns credit).
    pub udp_requests: u64,
    /// Their bytes (STUN message lengths).
    pub udp_request_bytes: u64,
    /// Unauthenticated answers sent to UDP sources.
    pub udp_answers: u64,
    /// Their bytes.
    pub udp_answer_bytes: u64,
    /// Answers held back because the source had not sent enough (the factor).
    pub held_back_factor: u64,
    /// Answers held back by the per-source ceiling.
    pub held_back_source_ceiling: u64,
    /// Answers held back by the loop's share of the node ceiling.
    pub held_back_node_ceiling: u64,
    /// Bytes of the answers held back.
    pub held_back_bytes: u64,
    /// Unauthenticated answers sent on streams (never held back).
    pub stream_answers: u64,
    /// Their bytes.
    pub stream_answer_bytes: u64,
    /// Streams closed after `stream_max_auth_failures` failed authentications in a row.
    pub streams_closed_auth_failures: u64,
}

impl UnauthCounters {
    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &UnauthCounters) {
        self.udp_requests += o.udp_requests;
        self.udp_request_bytes += o.udp_request_bytes;
        self.udp_answers += o.udp_answers;
        self.udp_answer_bytes += o.udp_answer_bytes;
        self.held_back_factor += o.held_back_factor;
        self.held_back_source_ceiling += o.held_back_source_ceiling;
        self.held_back_node_ceiling += o.held_back_node_ceiling;
        self.held_back_bytes += o.held_back_bytes;
        self.stream_answers += o.stream_answers;
        self.stream_answer_bytes += o.stream_answer_bytes;
        self.streams_closed_auth_failures += o.streams_closed_auth_failures;
    }
}

/// A snapshot of the server's counters (`Server::stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// New Allocates redirected with 300 (Try Alternate): draining or full.
    pub redirects: u64,
    /// Messages sent to other loops of the node.
    pub loop_messages_sent: u64,
    /// Messages received from other loops of the node.
    pub loop_messages_received: u64,
    /// Allocations of `total_quota` this loop may hold now (its share, plus borrowed,
    /// minus lent), gauge.
    pub quota_credits: u64,
    /// Allocations now.
    pub allocations: u64,
    /// Allocations waiting for their relay socket.
    pub allocations_pending: u64,
    /// Live reservations: ports held for a RESERVATION-TOKEN's Allocate (RFC 8656 §7.2),
    /// gauge.
    pub reservations: u64,
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
    /// Streams without an allocation closed because their partial frames would have grown
    /// past `unauth_stream_buffer_bytes` (counted in `streams_rejected` too).
    pub streams_unauth_buffer_full: u64,
    /// Bytes held now in partial frames by streams without an allocation.
    pub unauth_stream_buffered: u64,
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
    /// Unauthenticated answers and what paid for them.
    pub unauth: UnauthCounters,
    /// IPv4 relay port pool.
    pub ports_v4: PortStats,
    /// IPv6 relay port pool.
    pub ports_v6: PortStats,
}

impl TransportTraffic {
    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &TransportTraffic) {
        self.to_peer_packets += o.to_peer_packets;
        self.to_peer_bytes += o.to_peer_bytes;
        self.from_peer_packets += o.from_peer_packets;
        self.from_peer_bytes += o.from_peer_bytes;
    }
}

impl DropCounters {
    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &DropCounters) {
        self.malformed += o.malformed;
        self.unexpected += o.unexpected;
        self.no_allocation += o.no_allocation;
        self.no_permission += o.no_permission;
        self.unbound_channel += o.unbound_channel;
        self.too_large += o.too_large;
        self.denied_peer += o.denied_peer;
        self.rate_limited += o.rate_limited;
        self.queue_full += o.queue_full;
        self.unknown_relay += o.unknown_relay;
        self.bandwidth += o.bandwidth;
        self.bandwidth_bytes += o.bandwidth_bytes;
    }
}

impl Stats {
    /// Adds `o`'s counters and gauges to these: the totals of several servers (one per
    /// event loop) that together are one relay.
    pub fn add(&mut self, o: &Stats) {
        self.allocations += o.allocations;
        self.allocations_pending += o.allocations_pending;
        self.reservations += o.reservations;
        self.allocations_created += o.allocations_created;
        self.allocations_deleted += o.allocations_deleted;
        self.redirects += o.redirects;
        for (code, n) in &o.allocation_failures {
            *self.allocation_failures.entry(*code).or_default() += n;
        }
        self.permissions += o.permissions;
        self.channels += o.channels;
        self.streams += o.streams;
        self.streams_opened += o.streams_opened;
        self.streams_rejected += o.streams_rejected;
        self.streams_over_source_cap += o.streams_over_source_cap;
        self.streams_unauth_buffer_full += o.streams_unauth_buffer_full;
        self.unauth_stream_buffered += o.unauth_stream_buffered;
        self.udp.add(&o.udp);
        self.tcp.add(&o.tcp);
        self.unauthorized += o.unauthorized;
        self.stale_nonce += o.stale_nonce;
        self.auth_failures += o.auth_failures;
        self.insufficient_capacity += o.insufficient_capacity;
        self.peers_denied += o.peers_denied;
        self.proxy_accepted += o.proxy_accepted;
        self.proxy_rejected += o.proxy_rejected;
        self.retransmissions += o.retransmissions;
        self.dropped.add(&o.dropped);
        self.unauth.add(&o.unauth);
        self.ports_v4.add(&o.ports_v4);
        self.ports_v6.add(&o.ports_v6);
        self.loop_messages_sent += o.loop_messages_sent;
        self.loop_messages_received += o.loop_messages_received;
        self.quota_credits += o.quota_credits;
    }
}
