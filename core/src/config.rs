//! The core's configuration: what the runtime (or the simulator) tells a `Server` at birth.
//!
//! The runtime's TOML file maps onto this; defaults follow RFC 8656 and common practice.

use crate::auth::{Credentials, NonceKey};
use crate::cidr::IpNet;
use crate::ids::{ListenerId, Transport};
use crate::policy::PeerPolicy;
use core::time::Duration;
use std::net::{IpAddr, SocketAddr};

/// Default `unauth_amplification_factor`: RFC 9000 §8's limit for unvalidated addresses.
pub const DEFAULT_UNAUTH_AMPLIFICATION_FACTOR: u32 = 3;

/// The largest `unauth_amplification_factor` accepted: beyond, the relay is a reflector.
pub const MAX_UNAUTH_AMPLIFICATION_FACTOR: u32 = 10;

/// Default `unauth_source_bytes_per_s`: about 6 600 challenges (401 of about 150 bytes) a
/// second to one address, so a carrier-NAT address with thousands of browsers starting at
/// once is answered, while one reflection victim gets no more than 8 Mbit/s from a relay.
pub const DEFAULT_UNAUTH_SOURCE_BYTES_PER_S: u64 = 1_000_000;

/// Default `unauth_node_bytes_per_s`: about 130 000 challenges a second from the node,
/// more than two cores answer; it bounds what a flood from many sources makes a bigger
/// node send (160 Mbit/s).
pub const DEFAULT_UNAUTH_NODE_BYTES_PER_S: u64 = 20_000_000;

/// Default `stream_max_auth_failures`: a client needs two failures (its first request is
/// challenged, a stale nonce is answered 438); ten in a row is a client guessing.
pub const DEFAULT_STREAM_MAX_AUTH_FAILURES: u32 = 10;

/// Default `max_streams_per_source`: behind a corporate NAT whose firewall drops UDP,
/// every browser comes over TCP or TLS from one address, and tries both at once; 4 096
/// connections is 2 000 such browsers. One source can still hold no more than a fifth of
/// the default `max_streams`, and a connection that only fails authentication is closed
/// after `stream_max_auth_failures`, one that sends nothing after `stream_idle_timeout`.
pub const DEFAULT_MAX_STREAMS_PER_SOURCE: u32 = 4096;

/// One listening socket of the driver.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// The driver's name for it.
    pub id: ListenerId,
    /// UDP socket or TCP listener.
    pub transport: Transport,
    /// The address it is bound to (for logs and the peer policy's own addresses).
    pub local: SocketAddr,
    /// TCP only: every connection must start with a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// An address family the relay can allocate in, with the address it binds relay sockets
/// to and the address it advertises in XOR-RELAYED-ADDRESS (they differ behind 1:1 NAT).
#[derive(Clone, Copy, Debug)]
pub struct RelayAddress {
    /// Where relay sockets are bound (WCS `turn_ip_local`).
    pub bind: IpAddr,
    /// What clients are told (WCS `turn_ip`, Sora `ipv4_address`).
    pub advertised: IpAddr,
}

/// Everything a `Server` needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// Credentials, with the realm.
    pub credentials: Credentials,
    /// SOFTWARE attribute in responses (None: omitted).
    pub software: Option<String>,
    /// The listeners.
    pub listeners: Vec<ListenerConfig>,
    /// IPv4 relay address, if the relay allocates IPv4.
    pub relay_v4: Option<RelayAddress>,
    /// IPv6 relay address, if the relay allocates IPv6.
    pub relay_v6: Option<RelayAddress>,
    /// Relay ports, inclusive range.
    pub relay_port_min: u16,
    /// Relay ports, inclusive range.
    pub relay_port_max: u16,
    /// How long a freed relay port stays out of use.
    pub relay_port_quarantine: Duration,
    /// How many ports to try when the runtime reports a bind failure before answering 508.
    pub relay_bind_attempts: u32,
    /// Who may be a peer.
    pub peer_policy: PeerPolicy,
    /// Sources allowed to send a PROXY protocol header.
    pub proxy_protocol_trusted: Vec<IpNet>,
    /// Longest PROXY v2 header accepted.
    pub proxy_header_max_len: usize,
    /// A PROXY header must be complete within this time of the connection opening.
    pub proxy_header_timeout: Duration,
    /// Default allocation lifetime (RFC 8656 §3.2: 600 s).
    pub default_lifetime: Duration,
    /// Longest lifetime granted (requests for more are clamped).
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656 §9: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656 §12: 600 s).
    pub channel_lifetime: Duration,
    /// Nonce lifetime before 438.
    pub nonce_lifetime: Duration,
    /// REST usernames whose expiry lies further ahead than this are refused (a credential
    /// valid for years is a leaked key waiting to happen).
    pub rest_max_validity: Duration,
    /// Secret for nonces, overriding the one of `node_secret`. Only replays of traces
    /// recorded before format 3 set it (a loop after the first took loop 0's key).
    pub nonce_key: Option<NonceKey>,
    /// The node's secret material (nonce key, budget hash key, relay-port and token
    /// streams; [`crate::secret`]). The runtime always gives one. None: all of them are
    /// drawn from the seed, as before trace format 3 (simulations, and replays of older
    /// traces): then anyone who knows the seed knows them.
    pub node_secret: Option<crate::secret::NodeSecret>,
    /// Offer PASSWORD-ALGORITHMS (SHA-256) and USERHASH in 401 answers (RFC 8489 §9.2).
    pub security_features: bool,
    /// Allocations per username (486 beyond).
    pub user_quota: u32,
    /// Allocations in total (486 beyond; 508 when ports run out).
    pub total_quota: u32,
    /// Permissions per allocation (508 beyond).
    pub max_permissions: u32,
    /// Accept only RFC 8656's channel numbers (0x4000–0x4FFF). Off by default: browsers
    /// (libwebrtc) and coturn's client pick numbers up to 0x7FFF (RFC 5766).
    pub strict_channel_numbers: bool,
    /// Channels per allocation (508 beyond).
    pub max_channels: u32,
    /// Open streams in total; beyond, new streams are closed at once.
    pub max_streams: u32,
    /// Open streams per source (the client's IPv4 address or IPv6 /64, from the PROXY
    /// header when a trusted proxy sends one), counted for the whole node
    /// ([`crate::node`]); beyond, new streams are closed (at once, or as soon as the
    /// source's home loop answers). 0: no cap.
    pub max_streams_per_source: u32,
    /// Longest frame (STUN or ChannelData) accepted on a stream.
    pub max_stream_frame: usize,
    /// A stream with no allocation is closed after this long without a valid request.
    pub stream_idle_timeout: Duration,
    /// Anti-amplification for answers to unauthenticated UDP requests (401, 438, 400,
    /// Binding...; RFC 8656 §21.2): at most this many bytes sent to a source (an IPv4
    /// address or IPv6 /64) per byte received from it (RFC 9000 §8's rule for unvalidated
    /// addresses uses 3), plus 8 KiB advanced once. Streams are not limited: a TCP
    /// handshake proved the address.
    pub unauth_amplification_factor: u32,
    /// Unauthenticated answer bytes per second to one source (an IPv4 address or IPv6
    /// /64) for the whole node; each of `node.count` loops gets its share.
    pub unauth_source_bytes_per_s: u64,
    /// Unauthenticated answer bytes per second to all UDP sources together, for the whole
    /// node; each loop gets its share.
    pub unauth_node_bytes_per_s: u64,
    /// A stream whose requests fail authentication this many times in a row (401, 438,
    /// 400 before authentication) is closed. 0: never.
    pub stream_max_auth_failures: u32,
    /// Capacity of the output queue; past it, control answers are dropped and counted.
    pub max_queued_outputs: usize,
    /// Relayed payload bytes per second per allocation, each way (coturn's `max-bps`);
    /// beyond, packets are dropped and counted. 0: no cap.
    pub max_bps: u64,
    /// Relayed payload bytes per second for the whole server, each way (coturn's
    /// `bps-capacity`); beyond, packets are dropped and counted. 0: no cap.
    pub total_max_bps: u64,
    /// Bytes the node's streams without an allocation (every stream before its Allocate
    /// succeeds) may hold in partial frames, all loops together (each loop takes its
    /// share, `/ node.count`); past it, the stream whose partial frame would grow it is
    /// closed ([`crate::event::CloseReason::UnauthBufferFull`]). 0: no cap.
    pub unauth_stream_buffer_bytes: usize,
    /// This core's place in its node of event loops. `relay_port_min..=max` and
    /// `total_quota` are the node's: the core starts with its share and borrows the rest
    /// from the other loops ([`crate::node`]).
    pub node: crate::node::NodePlace,
}

impl Config {
    /// A configuration with the RFC's defaults, one IPv4 relay address, and `credentials`.
    /// The caller adds listeners.
    pub fn new(credentials: Credentials, relay_v4: IpAddr) -> Self {
        Config {
            credentials,
            software: Some(concat!("turnpike/", env!("CARGO_PKG_VERSION")).to_string()),
            listeners: Vec::new(),
            relay_v4: Some(RelayAddress {
                bind: relay_v4,
                advertised: relay_v4,
            }),
            relay_v6: None,
            relay_port_min: 49152,
            relay_port_max: 65535,
            relay_port_quarantine: Duration::from_secs(5),
            relay_bind_attempts: 8,
            peer_policy: PeerPolicy::default(),
            proxy_protocol_trusted: Vec::new(),
            proxy_header_max_len: 512,
            proxy_header_timeout: Duration::from_secs(5),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            rest_max_validity: Duration::from_secs(30 * 24 * 3600),
            nonce_key: None,
            node_secret: None,
            security_features: true,
            user_quota: 10,
            total_quota: 10_000,
            max_permissions: 64,
            strict_channel_numbers: false,
            max_channels: 64,
            max_streams: 20_000,
            max_streams_per_source: DEFAULT_MAX_STREAMS_PER_SOURCE,
            max_stream_frame: 65_535 + 20,
            stream_idle_timeout: Duration::from_secs(30),
            unauth_amplification_factor: DEFAULT_UNAUTH_AMPLIFICATION_FACTOR,
            unauth_source_bytes_per_s: DEFAULT_UNAUTH_SOURCE_BYTES_PER_S,
            unauth_node_bytes_per_s: DEFAULT_UNAUTH_NODE_BYTES_PER_S,
            stream_max_auth_failures: DEFAULT_STREAM_MAX_AUTH_FAILURES,
            max_queued_outputs: 65_536,
            max_bps: 0,
            total_max_bps: 0,
            node: crate::node::NodePlace::SOLE,
            unauth_stream_buffer_bytes: 64 << 20,
        }
    }
}

/// What a running [`crate::Server`] takes from a new configuration without a restart
/// ([`crate::Server::reload`]). Everything else of [`Config`] (listeners, relay addresses
/// and ports, lifetimes, the realm, the node's place and secret) is fixed at birth.
#[derive(Clone, Debug)]
pub struct Reloadable {
    /// Its static users and REST secrets replace the running ones; one-time credentials
    /// issued by the runtime are kept. Its realm must be the running one.
    pub credentials: Credentials,
    /// Its `allow`, `deny` and `allow_loopback` replace the running ones; the relay's own
    /// addresses stay the running server's.
    pub peer_policy: PeerPolicy,
    /// Allocations per username, for the node (RFC 8656 §7.2 step 9: 486 beyond).
    pub user_quota: u32,
    /// Allocations in total, for the node (486 beyond).
    pub total_quota: u32,
    /// Relayed payload bytes per second per allocation, each way; new allocations take it.
    pub max_bps: u64,
    /// Relayed payload bytes per second for the whole server, each way.
    pub total_max_bps: u64,
}

impl Reloadable {
    /// The reloadable part of `config`.
    pub fn from_config(config: &Config) -> Self {
        Reloadable {
            credentials: config.credentials.clone(),
            peer_policy: config.peer_policy.clone(),
            user_quota: config.user_quota,
            total_quota: config.total_quota,
            max_bps: config.max_bps,
            total_max_bps: config.total_max_bps,
        }
    }
}
