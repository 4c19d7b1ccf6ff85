//! The core's configuration: what the runtime (or the simulator) tells a `Server` at birth.
//!
//! The runtime's TOML file maps onto this; defaults follow RFC 8656 and common practice.

use crate::auth::{Credentials, NonceKey};
use crate::cidr::IpNet;
use crate::ids::{ListenerId, Transport};
use crate::policy::PeerPolicy;
use core::time::Duration;
use std::net::{IpAddr, SocketAddr};

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
    /// Secret for nonces; None: derived from the seed (then nonces die with the process).
    pub nonce_key: Option<NonceKey>,
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
    /// Unauthenticated answers (401, 400...) per source and second, with this burst.
    pub unauth_rate_per_s: u32,
    /// Burst of the budget above.
    pub unauth_burst: u32,
    /// Capacity of the output queue; past it, control answers are dropped and counted.
    pub max_queued_outputs: usize,
    /// Relayed payload bytes per second per allocation, each way (coturn's `max-bps`);
    /// beyond, packets are dropped and counted. 0: no cap.
    pub max_bps: u64,
    /// Relayed payload bytes per second for the whole server, each way (coturn's
    /// `bps-capacity`); beyond, packets are dropped and counted. 0: no cap.
    pub total_max_bps: u64,
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
            security_features: true,
            user_quota: 10,
            total_quota: 10_000,
            max_permissions: 64,
            strict_channel_numbers: false,
            max_channels: 64,
            max_streams: 20_000,
            max_streams_per_source: 64,
            max_stream_frame: 65_535 + 20,
            stream_idle_timeout: Duration::from_secs(30),
            unauth_rate_per_s: 20,
            unauth_burst: 40,
            max_queued_outputs: 65_536,
            max_bps: 0,
            total_max_bps: 0,
            node: crate::node::NodePlace::SOLE,
        }
    }
}
