//! Scenario files: a human-readable description of one simulated world (topology,
//! configuration, client behaviour, faults, duration) and of what must hold at the end.
//!
//! ```toml
//! name = "blocked-udp"
//! duration_s = 60
//! [[servers]]
//! name = "relay"
//! loops = 4          # a node of 4 event loops (default 1); `--loops N` overrides
//! listeners = [{ transport = "udp", port = 3478 }, { transport = "tcp", port = 3478 }]
//! firewall = "drop-udp-inbound"
//! [[clients]]
//! count = 20
//! ice = ["turn:relay:3478?transport=udp", "turn:relay:3478?transport=tcp"]
//! [expect]
//! all_connected = true
//! connected_over = ["tcp"]
//! ```

use crate::firewall::Firewall;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The `peer` of a client group whose browsers talk to each other in pairs.
pub const PAIR: &str = "pair";

/// A whole scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name (the file's stem by convention).
    pub name: String,
    /// What it is about, for humans.
    #[serde(default)]
    pub description: String,
    /// Length of the safety phase (faults on), seconds of virtual time.
    pub duration_s: u64,
    /// Length of the liveness phase (faults off, network healed), seconds.
    #[serde(default = "d_liveness")]
    pub liveness_s: u64,
    /// Length of the drain phase (clients leave; what they left behind must expire).
    #[serde(default = "d_drain")]
    pub drain_s: u64,
    /// The network.
    #[serde(default)]
    pub network: NetworkSpec,
    /// TURN servers.
    pub servers: Vec<ServerSpec>,
    /// nginx-like hops.
    #[serde(default)]
    pub proxies: Vec<ProxySpec>,
    /// Peers.
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    /// Groups of browser-like clients.
    pub clients: Vec<ClientGroup>,
    /// Faults.
    #[serde(default)]
    pub faults: FaultSpec,
    /// Names that resolve to several servers (a fleet behind one DNS name).
    #[serde(default)]
    pub dns: Vec<DnsSpec>,
    /// What must hold at the end.
    #[serde(default)]
    pub expect: Expect,
    /// A core bug this scenario exposes: until it is fixed, the run is expected to stop
    /// on this invariant (a sweep counts it as known, and flags it once it passes).
    #[serde(default)]
    pub known_core_bug: Option<KnownBug>,
}

/// A DNS name of the fleet: it resolves to every server it lists, in an order each
/// browser's resolver rotates (seeded), as round-robin DNS does.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// The name, as ICE urls use it (`turn:NAME:PORT?transport=udp`).
    pub name: String,
    /// Names of the servers it resolves to.
    pub servers: Vec<String>,
}

/// A scheduled change of a server's life: `drain` (the core stops taking allocations,
/// the host exits once empty or at `drain_timeout_s`, then restarts as a fresh process
/// after `restart_pause_s`), `kill` (it vanishes: no answers, every socket gone, all
/// state lost) or `revive` (a killed server starts again, fresh).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSpec {
    /// When, seconds.
    pub at_s: u64,
    /// Which server (its name).
    pub server: String,
    /// `drain`, `kill` or `revive`.
    pub action: String,
}

/// A known core bug.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownBug {
    /// The invariant the run stops on.
    pub invariant: String,
    /// What is wrong in the core, and where.
    pub note: String,
}

impl Scenario {
    /// The same scenario with every server running `loops` event loops (CI runs every
    /// scenario once more as nodes of 4 loops).
    pub fn with_loops(mut self, loops: u16) -> Scenario {
        for s in &mut self.servers {
            s.loops = loops;
        }
        self
    }

    /// Whether `invariant` is the known bug's.
    pub fn is_known_bug(&self, invariant: &str) -> bool {
        self.known_core_bug
            .as_ref()
            .is_some_and(|k| k.invariant == invariant)
    }
}

/// A turnpike server host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Name used in ICE urls and proxy upstreams.
    pub name: String,
    /// Its IPv4 address (listeners and relay).
    #[serde(default = "d_server_v4")]
    pub address: Ipv4Addr,
    /// Its IPv6 address, if it has one (listeners and an IPv6 relay).
    #[serde(default)]
    pub address_v6: Option<Ipv6Addr>,
    /// Realm.
    #[serde(default = "d_realm")]
    pub realm: String,
    /// TURN REST shared secret.
    #[serde(default = "d_secret")]
    pub rest_secret: String,
    /// Relay port range, inclusive.
    #[serde(default = "d_ports")]
    pub relay_ports: [u16; 2],
    /// Quarantine of a freed relay port, seconds.
    #[serde(default = "d_quarantine")]
    pub quarantine_s: u64,
    /// Listeners.
    pub listeners: Vec<ListenerSpec>,
    /// Sources trusted to send a PROXY header (CIDR).
    #[serde(default)]
    pub proxy_trusted: Vec<String>,
    /// Peers allowed although the built-in policy denies them (CIDR).
    #[serde(default)]
    pub allow_peers: Vec<String>,
    /// Firewall in front of the server.
    #[serde(default)]
    pub firewall: Firewall,
    /// Default allocation lifetime, seconds.
    #[serde(default = "d_lifetime")]
    pub lifetime_s: u64,
    /// Permission lifetime, seconds.
    #[serde(default = "d_permission")]
    pub permission_lifetime_s: u64,
    /// Channel lifetime, seconds.
    #[serde(default = "d_channel")]
    pub channel_lifetime_s: u64,
    /// Allocations per user.
    #[serde(default = "d_user_quota")]
    pub user_quota: u32,
    /// Allocations in total.
    #[serde(default = "d_total_quota")]
    pub total_quota: u32,
    /// Streams in total.
    #[serde(default = "d_max_streams")]
    pub max_streams: u32,
    /// Idle stream timeout, seconds.
    #[serde(default = "d_idle")]
    pub stream_idle_s: u64,
    /// Bytes of unauthenticated answers per byte received from a UDP source.
    #[serde(default = "d_unauth_factor")]
    pub unauth_amplification_factor: u32,
    /// Unauthenticated answer bytes per second to one UDP source.
    #[serde(default = "d_unauth_source")]
    pub unauth_source_bytes_per_s: u64,
    /// Unauthenticated answer bytes per second to all UDP sources.
    #[serde(default = "d_unauth_node")]
    pub unauth_node_bytes_per_s: u64,
    /// Failed authentications in a row before a stream is closed (0: never).
    #[serde(default = "d_stream_auth_failures")]
    pub stream_max_auth_failures: u32,
    /// Relay ports held by other processes (binds answer AddrInUse).
    #[serde(default)]
    pub foreign_ports: u32,
    /// The server's access link.
    #[serde(default)]
    pub link: Option<LinkSpec>,
    /// Ports of the UDP listeners opened per issued credential, inclusive.
    #[serde(default = "d_dynamic_ports")]
    pub dynamic_udp_ports: [u16; 2],
    /// Event loops of the node (`workers` in the runtime), each with its own core; the
    /// 4-tuples of clients are spread over them as SO_REUSEPORT does ([`crate::node`]).
    #[serde(default = "d_loops")]
    pub loops: u16,
    /// The node secret's passphrase: servers of a fleet given the same one accept each
    /// other's nonces. None: drawn from the seed.
    #[serde(default)]
    pub node_secret: Option<String>,
    /// Other servers (`name:port`) a full or draining server sends clients to
    /// (300 Try Alternate with ALTERNATE-SERVER).
    #[serde(default)]
    pub alternates: Vec<String>,
    /// A draining server exits at the latest this long after the drain began, seconds.
    #[serde(default = "d_drain_timeout")]
    pub drain_timeout_s: u64,
    /// A drained server starts again after this pause, seconds.
    #[serde(default = "d_restart_pause")]
    pub restart_pause_s: u64,
    /// `alternates` resolved by the runner.
    #[serde(skip)]
    pub alternate_addrs: Vec<std::net::SocketAddr>,
}

/// One listener of a server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// `udp` or `tcp`.
    pub transport: String,
    /// Port.
    pub port: u16,
    /// Every connection starts with a PROXY header.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Native TLS (`turns:`): the server host terminates the modelled handshake
    /// ([`crate::tls`]) before the core sees a byte, after the PROXY header if any.
    #[serde(default)]
    pub tls: bool,
    /// With `tls`: the port also takes plain TURN-TCP, told apart by the first byte.
    #[serde(default)]
    pub tls_and_tcp: bool,
    /// With `tls`: round trips of the handshake (1: TLS 1.3, 2: TLS 1.2).
    #[serde(default = "d_native_rtts")]
    pub handshake_rtts: u32,
}

/// An nginx-like hop.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Name used in urls and upstreams.
    pub name: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// Port it listens on.
    #[serde(default = "d_443")]
    pub listen_port: u16,
    /// Terminates TLS (a handshake of `handshake_rtts` round trips) before forwarding.
    #[serde(default)]
    pub terminate_tls: bool,
    /// Round trips of the modelled TLS handshake.
    #[serde(default = "d_rtts")]
    pub handshake_rtts: u32,
    /// Where plain connections go: `name:port`.
    pub upstream: String,
    /// With ssl_preread: where connections that start with a TLS ClientHello go.
    #[serde(default)]
    pub tls_upstream: Option<String>,
    /// The PROXY header sent upstream: none, v1, v2, unknown, v1-unix (nginx's two-hop
    /// variant with a unix socket as destination).
    #[serde(default = "d_none")]
    pub send_proxy: String,
    /// Reads a PROXY header from its own clients (the second hop of a chain).
    #[serde(default)]
    pub accept_proxy: bool,
    /// With `accept_proxy`: use the address from that header (`set_real_ip_from`) in the
    /// header it sends; without, it only knows a unix socket and sends `PROXY UNKNOWN`.
    #[serde(default)]
    pub real_ip_from_header: bool,
}

/// A peer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// Name used by client groups.
    pub name: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    #[serde(default = "d_peer_port")]
    pub port: u16,
    /// `echo` (sends back what it gets) or `rogue` (sprays the relay's port range).
    #[serde(default = "d_echo")]
    pub kind: String,
    /// For a rogue peer: datagrams per second.
    #[serde(default = "d_rogue_rate")]
    pub rate_per_s: u64,
}

/// A group of browser-like clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientGroup {
    /// Name.
    #[serde(default = "d_group")]
    pub name: String,
    /// How many browsers.
    pub count: u32,
    /// ICE server urls: `turn:NAME:PORT?transport=udp|tcp`, `turns:NAME:PORT?transport=tcp`.
    pub ice: Vec<String>,
    /// Their firewall.
    #[serde(default)]
    pub firewall: Firewall,
    /// They use IPv6 (their address, and the server's IPv6 address). Their addresses
    /// are `2a01::N`: all in one /64, the budget's source class for IPv6 (a carrier's
    /// /64 shared by many devices).
    #[serde(default)]
    pub ipv6: bool,
    /// They ask for an IPv6 relayed address (REQUESTED-ADDRESS-FAMILY, RFC 8656 §7.1), as
    /// a browser on an IPv6-only network would; the server needs `address_v6`.
    #[serde(default)]
    pub relay_ipv6: bool,
    /// They sit behind a NAT with this public IPv4 address ([`crate::nat`]): each has a
    /// private address, and every flow leaves from the public address with a port of its
    /// own (groups naming the same address share the NAT).
    #[serde(default)]
    pub nat: Option<Ipv4Addr>,
    /// First session starts uniformly in this window, seconds.
    #[serde(default = "d_start")]
    pub start_s: [u64; 2],
    /// Session length, seconds.
    #[serde(default = "d_session")]
    pub session_s: [u64; 2],
    /// Pause between sessions, seconds.
    #[serde(default = "d_pause")]
    pub pause_s: [u64; 2],
    /// Sessions per browser (unlimited when absent).
    #[serde(default)]
    pub sessions: Option<u32>,
    /// Probability that a session ends with the browser vanishing (no Refresh 0).
    #[serde(default)]
    pub vanish: f64,
    /// How the losers and the final allocation are released: refresh0, close, random.
    #[serde(default = "d_release")]
    pub release: String,
    /// The peer to talk to: a peer's name, or [`PAIR`] (browsers of the group talk to
    /// each other two by two, each through its own allocation: relay to relay).
    #[serde(default)]
    pub peer: Option<String>,
    /// Interval between data packets, ms (0: no data).
    #[serde(default = "d_data_interval")]
    pub data_interval_ms: u64,
    /// Also try to reach denied addresses (loopback, private, v4-mapped loopback...).
    #[serde(default)]
    pub probe_denied: bool,
    /// Give up an attempt that has no allocation after this long, seconds.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout_s: u64,
    /// After every attempt failed, wait this long before a new session, seconds.
    #[serde(default = "d_retry")]
    pub retry_s: [u64; 2],
    /// Validity of the REST credential in the ICE configuration, seconds.
    #[serde(default = "d_ttl")]
    pub credential_ttl_s: u64,
    /// Their access link.
    #[serde(default)]
    pub link: Option<LinkSpec>,
    /// Fetch the ICE configuration from the API: it issues the credential and opens a UDP
    /// listener for it alone; the browser's UDP urls use that port.
    #[serde(default)]
    pub issued_dynamic_udp: bool,
    /// Misbehaving: on its own dynamic port, use the credential issued to another browser.
    #[serde(default)]
    pub borrow_credential: bool,
    /// The ICE configuration was fetched this long ago (an old page), seconds.
    #[serde(default)]
    pub config_age_s: u64,
    /// Held to liveness (false for browsers whose only path is deliberately broken).
    #[serde(default = "d_true")]
    pub well_behaved: bool,
    /// What the clients are: `browser`, or a scripted UDP client of [`crate::uclient`]
    /// (`uclient-even-port`, `uclient-race`, `uclient-plain`; they use the first ICE url,
    /// which must name a server's UDP listener).
    #[serde(default = "d_model")]
    pub model: String,
    /// Scripted clients: UDP 5-tuples (local ports) of each (race and plain models).
    #[serde(default = "d_sockets")]
    pub sockets: u32,
    /// Scripted clients: pick local ports so that every 5-tuple hashes to this loop of
    /// the server.
    #[serde(default)]
    pub land_on_loop: Option<u16>,
    /// EVEN-PORT pairs (`uclient-even-port`): the second 5-tuple redeems the
    /// RESERVATION-TOKEN this long after the first allocation was granted, seconds
    /// (drawn to the millisecond; under the token's 30 s), and holds its allocation
    /// `session_s` from then. None: at once, the session counted from its start.
    #[serde(default)]
    pub redeem_after_s: Option<[u64; 2]>,
    /// EVEN-PORT pairs: the first allocation is released (Refresh 0) this long after it
    /// was granted, seconds (drawn to the millisecond). None: at the session's end.
    #[serde(default)]
    pub first_release_s: Option<[u64; 2]>,
    /// They refresh their kept allocation half a second into the last second their
    /// credential is valid and half a second into the first after (an exact test of what
    /// a rotated-out secret's allocations may still do, [`crate::rotation`]).
    #[serde(default)]
    pub probe_expiry: bool,
    /// They sign their credentials with the scenario's first REST secret whatever the
    /// issuer does now (a cached configuration): after a rotation they must get 401.
    #[serde(default)]
    pub stale_secret: bool,
    /// The ClientHello of their TLS attempts: `normal`, `stall` (connects and sends
    /// nothing) or `oversize` (more than a native listener takes before completion).
    #[serde(default = "d_hello")]
    pub tls_hello: String,
    /// Browsers restart ICE when their call's data has stopped this long (ICE consent
    /// failure) or their allocation is gone: a fresh allocation through another server
    /// of their ICE list or DNS name, seconds; and for a minute they avoid a server
    /// that failed them (no answer, or a relay lost). None: they do neither.
    #[serde(default)]
    pub ice_restart_s: Option<u64>,
}

/// An access link.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One-way latency range, ms (each host draws one).
    #[serde(default = "d_latency")]
    pub latency_ms: [u64; 2],
    /// Jitter, ms.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Loss probability.
    #[serde(default)]
    pub loss: f64,
    /// Duplication probability.
    #[serde(default)]
    pub duplicate: f64,
    /// Reordering probability.
    #[serde(default)]
    pub reorder: f64,
    /// Uplink, kbit/s (0: unlimited).
    #[serde(default)]
    pub bandwidth_kbps: u64,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            latency_ms: d_latency(),
            jitter_ms: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            bandwidth_kbps: 0,
        }
    }
}

/// The network as a whole.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Default access link of every host.
    #[serde(default)]
    pub link: LinkSpec,
    /// Probability that arrived stream bytes are handed over in two pieces.
    #[serde(default = "d_split")]
    pub split: f64,
    /// Probability that a stream is reset during its first `reset_within_s`.
    #[serde(default)]
    pub stream_reset: f64,
    /// Window for resets, seconds.
    #[serde(default = "d_reset_within")]
    pub reset_within_s: u64,
    /// Probability that a stream segment stalls.
    #[serde(default)]
    pub stream_stall: f64,
    /// Longest stall, ms.
    #[serde(default = "d_stall")]
    pub stall_max_ms: u64,
    /// Partitions that cut a host off and heal.
    #[serde(default)]
    pub partitions: PartitionSpec,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            link: LinkSpec::default(),
            split: d_split(),
            stream_reset: 0.0,
            reset_within_s: d_reset_within(),
            stream_stall: 0.0,
            stall_max_ms: d_stall(),
            partitions: PartitionSpec::default(),
        }
    }
}

/// Random partitions, drawn from the seed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// How many, range.
    #[serde(default)]
    pub count: [u32; 2],
    /// Length of each, seconds, range.
    #[serde(default)]
    pub length_s: [u64; 2],
    /// Who is cut off: `clients`, `servers` or `any`.
    #[serde(default)]
    pub targets: String,
}

/// Scheduled faults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Wall-clock steps on every server.
    #[serde(default)]
    pub wall_clock_jumps: Vec<ClockJump>,
    /// Probability that a relay bind fails with AddrInUse.
    #[serde(default)]
    pub bind_addr_in_use: f64,
    /// Windows of file-descriptor exhaustion on every server.
    #[serde(default)]
    pub fd_exhaustion: Vec<Window>,
    /// Drains, kills and revivals of servers (a rolling restart, a node failure).
    #[serde(default)]
    pub lifecycle: Vec<LifecycleSpec>,
    /// Spoofed-source floods of unauthenticated Allocates.
    #[serde(default)]
    pub floods: Vec<Flood>,
    /// Probability that a native TLS handshake is refused (an alert, then the close).
    #[serde(default)]
    pub tls_handshake_failure: f64,
    /// Configuration reloads of every server that rotate its REST secret.
    #[serde(default)]
    pub reloads: Vec<ReloadSpec>,
}

/// A configuration reload that rotates the REST secret.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSpec {
    /// When, seconds.
    pub at_s: u64,
    /// The new REST secret.
    pub rest_secret: String,
    /// The secrets accepted before stay accepted (a rotation in two steps).
    #[serde(default)]
    pub keep_old: bool,
    /// The issuer signs with the new secret this long after the reload, seconds (the
    /// relays first, then the issuer: browsers that fetch meanwhile get a credential the
    /// relay refuses).
    #[serde(default = "d_issuer_after")]
    pub issuer_after_s: u64,
}

/// A wall-clock step.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockJump {
    /// When, seconds.
    pub at_s: u64,
    /// By how much, seconds (negative: backwards).
    pub by_s: i64,
}

/// A window of time.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, seconds.
    pub at_s: u64,
    /// Length, seconds.
    pub for_s: u64,
}

/// A flood of unauthenticated Allocate requests from spoofed sources.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flood {
    /// Start, seconds.
    pub at_s: u64,
    /// Length, seconds.
    pub for_s: u64,
    /// Requests per second.
    pub rate_per_s: u64,
    /// Target `name:port` (a UDP listener).
    pub target: String,
    /// Distinct spoofed sources (few: the per-source budget bites).
    #[serde(default = "d_sources")]
    pub sources: u32,
    /// A reflection: every request claims this source address (a victim host that asked
    /// for nothing; random ports), so the answers land on it. The oracle bounds what it
    /// receives ([`crate::reflection`]).
    #[serde(default)]
    pub spoof: Option<IpAddr>,
    /// The request sent: `allocate` (no credentials) or `binding`.
    #[serde(default = "d_flood_request")]
    pub request: String,
}

/// What must hold at the end of the run.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every session started in the liveness phase got an allocation.
    #[serde(default)]
    pub all_connected: bool,
    /// Transports the kept allocation may use (udp, tcp, tls); empty: any.
    #[serde(default)]
    pub connected_over: Vec<String>,
    /// Every session that connected did so within this bound of its start, seconds.
    #[serde(default)]
    pub connect_within_s: Option<u64>,
    /// At least this many 508 answers.
    #[serde(default)]
    pub min_508: u64,
    /// No allocation, stream, bound relay port or port in use at the end.
    #[serde(default)]
    pub no_allocation_left: bool,
    /// At least this many allocations created.
    #[serde(default)]
    pub min_allocations: u64,
    /// Over these transports the client's real address must reach the relay (mapped
    /// address and AllocationCreated).
    #[serde(default)]
    pub real_address_over: Vec<String>,
    /// Over these transports the relay sees the last proxy's address (PROXY UNKNOWN).
    #[serde(default)]
    pub proxy_address_over: Vec<String>,
    /// Streams rejected by the core, at least, by reason (e.g. bad_proxy_header).
    #[serde(default)]
    pub min_rejected: BTreeMap<String, u64>,
    /// PROXY headers accepted, at least.
    #[serde(default)]
    pub min_proxy_accepted: u64,
    /// Every dynamic UDP listener was closed by the end (credential expired, unused).
    #[serde(default)]
    pub dynamic_listeners_closed: bool,
    /// Every session of a group that borrows credentials or uses a stale configuration
    /// was refused with 401 and kept nothing (and there was at least one).
    #[serde(default)]
    pub misuse_refused: bool,
    /// Codes no session of a well-behaved group may get (e.g. 401, 486: a parallel
    /// attempt refused).
    #[serde(default)]
    pub codes_never_seen: Vec<u16>,
    /// Every connected session with a peer got at least one echo.
    #[serde(default)]
    pub data_echoed: bool,
    /// Allocations that lost the race are gone within this long of the win, seconds.
    #[serde(default)]
    pub losers_released_within_s: Option<u64>,
    /// Each transport of the list won at least once.
    #[serde(default)]
    pub each_transport_won: Vec<String>,
    /// At least this many answers were held back by the per-source budget.
    #[serde(default)]
    pub min_rate_limited: u64,
    /// At least this many peers refused by the policy.
    #[serde(default)]
    pub min_peers_denied: u64,
    /// Scripted clients: at least this many EVEN-PORT pairs completed (token redeemed,
    /// ports adjacent).
    #[serde(default)]
    pub min_even_pairs: u64,
    /// Scripted clients: at least this many Allocates refused with 486 (user quota).
    #[serde(default)]
    pub min_486: u64,
    /// Scripted clients: every race of one user's 5-tuples was won by exactly
    /// `min(sockets, user_quota)` of them (and there was at least one race).
    #[serde(default)]
    pub races_fill_quota: bool,
    /// Scripted clients: no Allocate was refused (any code but the 401/438 challenges).
    #[serde(default)]
    pub uclients_never_refused: bool,
    /// Every session of a well-behaved group kept an allocation, in whatever phase it
    /// started (a crowd of one session each: liveness alone would not look at them).
    #[serde(default)]
    pub all_sessions_connected: bool,
    /// By browser group: the 99th percentile of time-to-relay (a session's first
    /// request to its first allocation kept) is at most this, ms; a session that never
    /// connected counts as infinitely slow.
    #[serde(default)]
    pub time_to_relay_p99_ms: BTreeMap<String, u64>,
    /// At least this many bytes were sent to the servers in a victim's name (the
    /// reflection oracle had something to watch).
    #[serde(default)]
    pub min_spoofed_bytes: u64,
    /// Allocates signed with a rotated-out REST secret answered 401, at least.
    #[serde(default)]
    pub min_old_secret_refused: u64,
    /// Requests of live allocations signed with a rotated-out secret, before their
    /// username's expiry, answered with success, at least.
    #[serde(default)]
    pub min_old_credential_kept: u64,
    /// Requests of live allocations signed with a rotated-out secret, past their
    /// username's expiry, refused, at least.
    #[serde(default)]
    pub min_old_credential_expired: u64,
    /// Every session that kept an allocation across a reload kept it until its own end
    /// (released, vanished, or expired once its credential did).
    #[serde(default)]
    pub reload_keeps_sessions: bool,
    /// Native TLS handshakes completed, at least (all servers).
    #[serde(default)]
    pub min_tls_handshakes: u64,
    /// Native TLS handshakes failed, at least, by reason ([`crate::tls::Failure`]).
    #[serde(default)]
    pub min_tls_failed: BTreeMap<String, u64>,
    /// After a server is killed, every call that had its relay there has a relay again
    /// within this long, seconds (the `reconnect_within` oracle).
    #[serde(default)]
    pub reconnect_within_s: Option<u64>,
    /// No session of a well-behaved group ends without an allocation while a server of
    /// the fleet that is up and not draining has room under its `total_quota` (the
    /// `fleet_absorbs` oracle).
    #[serde(default)]
    pub fleet_absorbs: bool,
    /// At least this many 300 Try Alternate answers were followed by clients.
    #[serde(default)]
    pub min_redirects: u64,
    /// No call of a well-behaved group lost its relay (a rolling restart whose calls all
    /// end before the drain timeout).
    #[serde(default)]
    pub no_call_lost: bool,
    /// At least this many redirects were refused by the client (a loop).
    #[serde(default)]
    pub min_redirects_refused: u64,
    /// At least this many calls got a relay again after losing theirs.
    #[serde(default)]
    pub min_reconnects: u64,
    /// At least this many drains ran to their end (server exited and restarted).
    #[serde(default)]
    pub min_restarts: u64,
    /// At least this many allocations were made by draining servers for
    /// RESERVATION-TOKENs (pairs whose second port was redeemed during a drain).
    #[serde(default)]
    pub min_drain_redemptions: u64,
}

/// Why a scenario file cannot be used.
#[derive(Debug)]
pub struct ScenarioError(pub String);

impl core::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
        Scenario::parse(&text).map_err(|e| ScenarioError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let err = |m: String| Err(ScenarioError(m));
        if self.servers.is_empty() {
            return err("at least one server is needed".into());
        }
        if self.duration_s == 0 || self.duration_s > 7 * 24 * 3600 {
            return err("duration_s must be between 1 s and a week".into());
        }
        let total: u64 = self.clients.iter().map(|g| u64::from(g.count)).sum();
        if total > 20_000 {
            return err("at most 20000 clients".into());
        }
        for g in &self.clients {
            for url in &g.ice {
                if IceUrl::parse(url).is_none() {
                    return err(format!("bad ICE url {url:?}"));
                }
            }
            if g.model != "browser" && crate::uclient::Model::named(&g.model).is_none() {
                return err(format!("bad model {:?}", g.model));
            }
            if g.redeem_after_s.is_some_and(|[lo, hi]| lo > hi || hi >= 30) {
                // A token outlives its reservation after 30 s (RFC 8656 §7.2).
                return err(format!(
                    "{}: redeem_after_s must be [lo, hi], hi under 30",
                    g.name
                ));
            }
            if g.model != "browser"
                && g.ice.first().and_then(|u| IceUrl::parse(u)).map(|u| u.via) != Some(Via::Udp)
            {
                return err(format!(
                    "{}: a scripted client needs a turn: UDP url first",
                    g.name
                ));
            }
            if g.nat.is_some() && (g.ipv6 || g.model != "browser") {
                return err(format!("{}: a NAT holds IPv4 browsers", g.name));
            }
            if !["normal", "stall", "oversize"].contains(&g.tls_hello.as_str()) {
                return err(format!("bad tls_hello {:?}", g.tls_hello));
            }
            if !["refresh0", "close", "random"].contains(&g.release.as_str()) {
                return err(format!("bad release {:?}", g.release));
            }
        }
        if !self.faults.reloads.is_empty() && !self.faults.wall_clock_jumps.is_empty() {
            // The reload oracle reads the servers' wall clocks as the start's plus the
            // virtual time gone.
            return err("reloads and wall-clock jumps do not mix".into());
        }
        for f in &self.faults.floods {
            if !["allocate", "binding"].contains(&f.request.as_str()) {
                return err(format!("bad flood request {:?}", f.request));
            }
        }
        for p in &self.proxies {
            if !["none", "v1", "v2", "unknown", "v1-unix"].contains(&p.send_proxy.as_str()) {
                return err(format!("bad send_proxy {:?}", p.send_proxy));
            }
        }
        for l in &self.faults.lifecycle {
            if !["drain", "kill", "revive"].contains(&l.action.as_str()) {
                return err(format!("bad lifecycle action {:?}", l.action));
            }
            if !self.servers.iter().any(|s| s.name == l.server) {
                return err(format!("lifecycle: unknown server {:?}", l.server));
            }
        }
        for d in &self.dns {
            if d.servers.is_empty()
                || d.servers
                    .iter()
                    .any(|n| !self.servers.iter().any(|s| &s.name == n))
            {
                return err(format!(
                    "dns {:?}: names no server or an unknown one",
                    d.name
                ));
            }
        }
        for s in &self.servers {
            for a in &s.alternates {
                let name = a.rsplit_once(':').map(|(n, _)| n);
                if name.is_none_or(|n| !self.servers.iter().any(|o| o.name == n)) {
                    return err(format!(
                        "{}: bad alternate {a:?} (name:port of a server)",
                        s.name
                    ));
                }
            }
            if s.loops == 0 || s.loops > turnpike_core::node::MAX_LOOPS {
                return err(format!("{}: loops must be 1 to 256", s.name));
            }
            for l in &s.listeners {
                if l.transport != "udp" && l.transport != "tcp" {
                    return err(format!("bad listener transport {:?}", l.transport));
                }
                if (l.tls || l.tls_and_tcp) && l.transport != "tcp" {
                    return err(format!("{}: TLS listens on TCP", s.name));
                }
                if l.tls_and_tcp && !l.tls {
                    return err(format!("{}: tls_and_tcp needs tls", s.name));
                }
            }
        }
        Ok(())
    }
}

/// The transport a browser uses for one ICE url.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Via {
    /// turn:...?transport=udp
    Udp,
    /// turn:...?transport=tcp
    Tcp,
    /// turns:...?transport=tcp
    Tls,
}

impl Via {
    /// Name as in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Udp => "udp",
            Via::Tcp => "tcp",
            Via::Tls => "tls",
        }
    }
}

/// A parsed ICE url.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceUrl {
    /// Transport.
    pub via: Via,
    /// Host name (a server or proxy of the scenario).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl IceUrl {
    /// Parses `turn:HOST:PORT?transport=udp|tcp` or `turns:HOST:PORT?transport=tcp`.
    pub fn parse(url: &str) -> Option<IceUrl> {
        let (scheme, rest) = url.split_once(':')?;
        let (hostport, query) = rest.split_once('?')?;
        let (host, port) = hostport.rsplit_once(':')?;
        let transport = query.strip_prefix("transport=")?;
        let via = match (scheme, transport) {
            ("turn", "udp") => Via::Udp,
            ("turn", "tcp") => Via::Tcp,
            ("turns", "tcp") => Via::Tls,
            _ => return None,
        };
        Some(IceUrl {
            via,
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

fn d_true() -> bool {
    true
}
fn d_liveness() -> u64 {
    60
}
fn d_drain() -> u64 {
    900
}
fn d_model() -> String {
    "browser".into()
}
fn d_sockets() -> u32 {
    2
}
fn d_drain_timeout() -> u64 {
    300
}
fn d_restart_pause() -> u64 {
    10
}
fn d_loops() -> u16 {
    1
}
fn d_dynamic_ports() -> [u16; 2] {
    [49152, 49407]
}
fn d_server_v4() -> Ipv4Addr {
    Ipv4Addr::new(30, 0, 0, 1)
}
fn d_realm() -> String {
    "turnpike.test".into()
}
fn d_secret() -> String {
    "rest-secret".into()
}
fn d_ports() -> [u16; 2] {
    [49152, 65535]
}
fn d_quarantine() -> u64 {
    5
}
fn d_lifetime() -> u64 {
    600
}
fn d_permission() -> u64 {
    300
}
fn d_channel() -> u64 {
    600
}
fn d_user_quota() -> u32 {
    10
}
fn d_total_quota() -> u32 {
    10_000
}
fn d_max_streams() -> u32 {
    20_000
}
fn d_idle() -> u64 {
    30
}
fn d_unauth_factor() -> u32 {
    turnpike_core::config::DEFAULT_UNAUTH_AMPLIFICATION_FACTOR
}
fn d_unauth_source() -> u64 {
    turnpike_core::config::DEFAULT_UNAUTH_SOURCE_BYTES_PER_S
}
fn d_unauth_node() -> u64 {
    turnpike_core::config::DEFAULT_UNAUTH_NODE_BYTES_PER_S
}
fn d_stream_auth_failures() -> u32 {
    turnpike_core::config::DEFAULT_STREAM_MAX_AUTH_FAILURES
}
fn d_443() -> u16 {
    443
}
fn d_rtts() -> u32 {
    2
}
fn d_none() -> String {
    "none".into()
}
fn d_issuer_after() -> u64 {
    1
}
fn d_native_rtts() -> u32 {
    1
}
fn d_hello() -> String {
    "normal".into()
}
fn d_peer_port() -> u16 {
    5000
}
fn d_echo() -> String {
    "echo".into()
}
fn d_rogue_rate() -> u64 {
    50
}
fn d_group() -> String {
    "browsers".into()
}
fn d_start() -> [u64; 2] {
    [0, 10]
}
fn d_session() -> [u64; 2] {
    [20, 40]
}
fn d_pause() -> [u64; 2] {
    [2, 10]
}
fn d_release() -> String {
    "random".into()
}
fn d_data_interval() -> u64 {
    1000
}
fn d_connect_timeout() -> u64 {
    10
}
fn d_retry() -> [u64; 2] {
    [1, 5]
}
fn d_ttl() -> u64 {
    86_400
}
fn d_latency() -> [u64; 2] {
    [5, 40]
}
fn d_split() -> f64 {
    0.5
}
fn d_reset_within() -> u64 {
    30
}
fn d_stall() -> u64 {
    2000
}
fn d_sources() -> u32 {
    1000
}
fn d_flood_request() -> String {
    "allocate".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_urls() {
        assert_eq!(
            IceUrl::parse("turns:edge:443?transport=tcp"),
            Some(IceUrl {
                via: Via::Tls,
                host: "edge".into(),
                port: 443
            })
        );
        assert!(IceUrl::parse("turns:edge:443?transport=udp").is_none());
        assert!(IceUrl::parse("stun:edge:443").is_none());
    }

    #[test]
    fn minimal_scenario_parses() {
        let s = Scenario::parse(
            r#"
            name = "t"
            duration_s = 10
            [[servers]]
            name = "relay"
            listeners = [{ transport = "udp", port = 3478 }]
            [[clients]]
            count = 1
            ice = ["turn:relay:3478?transport=udp"]
            "#,
        )
        .unwrap();
        assert_eq!(s.servers[0].relay_ports, [49152, 65535]);
        assert!(Scenario::parse("name = 1").is_err());
    }

    #[test]
    fn a_token_is_redeemed_within_its_lifetime() {
        let pairs = |redeem: &str| {
            Scenario::parse(&format!(
                r#"
                name = "t"
                duration_s = 10
                [[servers]]
                name = "relay"
                listeners = [{{ transport = "udp", port = 3478 }}]
                [[clients]]
                count = 1
                model = "uclient-even-port"
                ice = ["turn:relay:3478?transport=udp"]
                redeem_after_s = {redeem}
                "#
            ))
        };
        assert!(pairs("[2, 29]").is_ok());
        assert!(pairs("[2, 30]").is_err(), "past the token's 30 s");
        assert!(pairs("[9, 3]").is_err());
    }

    #[test]
    fn fleets_name_known_servers() {
        let fleet = |dns: &str, action: &str, alternate: &str| {
            Scenario::parse(&format!(
                r#"
                name = "t"
                duration_s = 10
                [[servers]]
                name = "a"
                alternates = ["{alternate}"]
                listeners = [{{ transport = "udp", port = 3478 }}]
                [[servers]]
                name = "b"
                address = "30.0.0.2"
                listeners = [{{ transport = "udp", port = 3478 }}]
                [[dns]]
                name = "fleet"
                servers = ["a", "{dns}"]
                [[clients]]
                count = 1
                ice = ["turn:fleet:3478?transport=udp"]
                [faults]
                lifecycle = [{{ at_s = 5, server = "a", action = "{action}" }}]
                "#
            ))
        };
        let s = fleet("b", "drain", "b:3478").unwrap();
        assert_eq!(s.servers[0].drain_timeout_s, 300);
        assert_eq!(s.dns[0].servers, ["a", "b"]);
        assert!(fleet("z", "drain", "b:3478").is_err(), "unknown dns server");
        assert!(fleet("b", "reboot", "b:3478").is_err(), "unknown action");
        assert!(fleet("b", "kill", "z:3478").is_err(), "unknown alternate");
    }
}
