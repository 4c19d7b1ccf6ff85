//! The configuration file: TOML text → a checked [`FileConfig`].
//!
//! Key names follow Sora's and coturn's, so that users of either feel at home. Every
//! error names the key and the line it is on: syntax and type errors through the TOML
//! parser's span, semantic errors (a port range upside down, a CIDR that does not parse)
//! by finding the key in the text. Turning a checked file into what the core and the event
//! loop need is [`crate::settings`]'s job.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use turnpike_core::cidr::IpNet;
use turnpike_core::config::{
    DEFAULT_STREAM_MAX_AUTH_FAILURES, DEFAULT_UNAUTH_AMPLIFICATION_FACTOR,
    DEFAULT_UNAUTH_NODE_BYTES_PER_S, DEFAULT_UNAUTH_SOURCE_BYTES_PER_S,
};

/// Default size of the kernel socket buffers (WCS uses 1 MiB each).
pub const DEFAULT_SOCKET_BUFFER: usize = 1 << 20;

/// Size at which a trace file is rotated (256 MiB).
pub const DEFAULT_TRACE_MAX_BYTES: u64 = 256 << 20;

/// Most event loops a relay runs (`workers`); see [`crate::workers`].
pub const MAX_WORKERS: u32 = 256;

/// Default `coalesce_us`: how long a loop that just handled a small batch waits before
/// polling again, microseconds (see [`crate::event_loop::COALESCE_BELOW`]).
pub const DEFAULT_COALESCE_US: u32 = 100;

/// Longest `coalesce_us` accepted: beyond it the added latency is felt by media.
pub const MAX_COALESCE_US: u32 = 1000;

/// Smallest `unauth_source_bytes_per_s`: a few challenges a second.
pub const MIN_UNAUTH_BYTES_PER_S: u64 = 1_000;

/// The realm of the built-in default.
pub const DEFAULT_REALM: &str = "turnpike";

/// The configuration file, key for key. Every key is optional; missing keys take the
/// defaults of [`FileConfig::default`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The realm (RFC 8489 §14.9) of long-term credentials.
    pub realm: String,
    /// Bind address of the IPv4 listeners and relay sockets (WCS `turn_ip_local`).
    pub listen_address: Ipv4Addr,
    /// Advertised IPv4 address: XOR-RELAYED-ADDRESS and URLs (WCS `turn_ip`, Sora
    /// `ipv4_address`). Defaults to `listen_address` when that is not a wildcard.
    pub ipv4_address: Option<Ipv4Addr>,
    /// Also listen and relay on IPv6.
    pub ipv6: bool,
    /// Advertised IPv6 address. Defaults to `ipv6_listen_address` when that is not a
    /// wildcard.
    pub ipv6_address: Option<Ipv6Addr>,
    /// Bind address of the IPv6 listeners and relay sockets (used when `ipv6 = true`).
    pub ipv6_listen_address: Ipv6Addr,
    /// Port of the TURN-over-UDP listeners, or `"dynamic"`: no shared UDP port, but one
    /// opened for each issued ICE configuration (Sora's only mode).
    pub turn_udp_port: UdpPort,
    /// Lowest port of dynamic UDP ports.
    pub turn_udp_dynamic_port_min: u16,
    /// Highest port of dynamic UDP ports (inclusive).
    pub turn_udp_dynamic_port_max: u16,
    /// Verification mode: issue TURN-TCP URLs only (a warning is logged at start).
    pub turn_tcp_only: bool,
    /// Verification mode: issue TURN-TLS URLs only (a warning is logged at start).
    pub turn_tls_only: bool,
    /// `false` turns the HTTP API off even with `api_listen`; `true` alone serves it on
    /// [`DEFAULT_API_LISTEN`]. Unset: the API is served when `api_listen` is set.
    pub api: Option<bool>,
    /// Address of the HTTP API. A file that sets neither this nor `api = true` has no API.
    pub api_listen: Option<SocketAddr>,
    /// Bearer token the credential-issuing, listing and DELETE routes require.
    pub api_token: Option<Secret>,
    /// A file holding that token (its surrounding whitespace ignored), so that the secret
    /// need not be in this file.
    pub api_token_file: Option<PathBuf>,
    /// Refuse every API peer that is not on loopback (strongly recommended).
    pub api_loopback_address_only: bool,
    /// Default validity of issued credentials, seconds.
    pub ice_ttl_s: u64,
    /// Longest validity a caller may ask for, seconds.
    pub ice_max_ttl_s: u64,
    /// Secret that signs issued credentials; relays sharing it accept each other's
    /// credentials, across restarts. Random at start when unset.
    pub issuance_secret: Option<Secret>,
    /// `http://` URL to which allocation events are posted as JSON.
    pub event_webhook_url: Option<String>,
    /// Listen for TURN over TCP.
    pub turn_tcp: bool,
    /// Port of the TURN-over-TCP listeners.
    pub turn_tcp_listen_port: u16,
    /// The TCP port written into URLs (e.g. 443 behind nginx). Defaults to
    /// `turn_tcp_listen_port`.
    pub turn_tcp_port: Option<u16>,
    /// TCP listeners expect a PROXY protocol (v1 or v2) header first.
    pub proxy_protocol: bool,
    /// Sources allowed to send a PROXY header, CIDR ranges.
    pub proxy_protocol_trusted: Vec<String>,
    /// Lowest relay port.
    pub relay_port_min: u16,
    /// Highest relay port (inclusive).
    pub relay_port_max: u16,
    /// How long a freed relay port stays out of use, milliseconds.
    pub relay_port_quarantine_ms: u64,
    /// TURN REST shared secret(s): a string or a list (the first issues, all verify).
    pub static_auth_secret: Secrets,
    /// Static long-term users: name → password.
    pub users: BTreeMap<String, Secret>,
    /// Allow peers on loopback addresses (tests on one machine).
    pub allow_loopback_peers: bool,
    /// Accept only RFC 8656 channel numbers (0x4000–0x4FFF); by default the RFC 5766 range
    /// (to 0x7FFF) that browsers and coturn's client use is accepted too.
    pub strict_channel_numbers: bool,
    /// Peer ranges allowed although a built-in rule denies them (CIDR).
    pub allowed_peer_ip: Vec<String>,
    /// Peer ranges denied on top of the built-in rules (CIDR).
    pub denied_peer_ip: Vec<String>,
    /// Allocations per username.
    pub user_quota: u32,
    /// Allocations in total.
    pub total_quota: u32,
    /// Longest allocation lifetime granted, seconds.
    pub max_allocation_lifetime_s: u64,
    /// A TCP connection with no allocation is closed after this many seconds without a
    /// valid request (slow clients that never finish a message included).
    pub stream_idle_timeout_s: u64,
    /// Open TCP connections per client address (0: no cap).
    pub max_streams_per_source: u32,
    /// Relayed bytes per second per allocation, each way, as coturn's `max-bps` (0: no cap).
    pub max_bps: u64,
    /// Relayed bytes per second for the whole relay, each way (0: no cap).
    pub total_max_bps: u64,
    /// Anti-amplification: bytes of unauthenticated answers (401, 438, 400, Binding) sent
    /// to a UDP source per byte received from it (RFC 9000 §8 uses 3), 1..=10.
    pub unauth_amplification_factor: u32,
    /// Bytes per second of unauthenticated answers to one UDP source address (an IPv4
    /// address or an IPv6 /64), for the whole relay.
    pub unauth_source_bytes_per_s: u64,
    /// Bytes per second of unauthenticated answers to all UDP sources, for the whole relay.
    pub unauth_node_bytes_per_s: u64,
    /// A TCP connection whose requests fail authentication this many times in a row is
    /// closed (0: never).
    pub stream_max_auth_failures: u32,
    /// SO_RCVBUF of every socket, bytes (0: the OS default).
    pub socket_receive_buffer_size: usize,
    /// SO_SNDBUF of every socket, bytes (0: the OS default).
    pub socket_send_buffer_size: usize,
    /// Path of the JSON-lines event log (none: no event log).
    pub event_log: Option<PathBuf>,
    /// Issue `turns:` URLs (TLS terminated in front of the relay).
    pub turn_tls: bool,
    /// Name written into `turns:` URLs (wins over `turn_fqdn`).
    pub turn_tls_fqdn: Option<String>,
    /// Port written into `turns:` URLs. Defaults to `turn_tls_listen_port` when the relay
    /// serves TLS itself, else 443.
    pub turn_tls_port: Option<u16>,
    /// Serve TURN over TLS natively on this port (`turns:` URLs then point at it). Equal to
    /// `turn_tcp_listen_port` (with `turn_tcp = true`): one port for TLS and plain
    /// TURN-TCP, told apart by the first byte.
    pub turn_tls_listen_port: Option<u16>,
    /// PEM file of the certificate chain of native TLS (leaf first).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the private key of native TLS (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// Name of the relay, used in `turns:` URLs when `turn_tls_fqdn` is not set.
    pub turn_fqdn: Option<String>,
    /// Record every input of the core to this trace file (none: no recording).
    pub trace_file: Option<PathBuf>,
    /// Record relayed payloads in full (default: only their length and checksum).
    pub trace_payloads: bool,
    /// Rotate the trace file when it reaches this size, bytes.
    pub trace_max_bytes: u64,
    /// Event loops (threads), each with its own sockets and core; 0: one per core.
    pub workers: u32,
    /// After a poll round that moved only a few datagrams, wait this long (µs) before
    /// polling again, so that the next round carries a batch; 0: never wait.
    pub coalesce_us: u32,
    /// How a loop reads and sends a poll round's datagrams: `"auto"` (io_uring, one
    /// submission for every ready socket's receives and one for every socket's sends,
    /// where the kernel allows it; else `recvmmsg` and `sendmmsg` per socket), `"on"` (the
    /// same, with a warning when it is unavailable) or `"off"`.
    /// It also covers stream reads and writes ([`crate::uring_stream`]).
    pub io_uring: IoUringMode,
    /// Run the event loops on as few threads as their load needs while it is light, and
    /// each on its own thread again when it grows (Linux; default true).
    pub pack_loops: bool,

    // Secrets kept apart from the seed (issue 14).
    /// The node secret (a passphrase of at least 16 characters) from which nonce keys, the
    /// per-source budget's hash key and the relay-port and token streams are derived.
    /// Relays given the same one accept each other's nonces, across restarts too. None:
    /// drawn from the OS at start (nonces then die with the process).
    pub node_secret: Option<Secret>,
    /// Bytes that streams without an allocation may hold in partial frames, for the whole
    /// node (each loop takes its share); 0: no cap.
    pub unauth_stream_buffer_bytes: u64,
    /// How much the relay logs: `off`, `error`, `warn`, `info` (the default), `debug` or
    /// `trace`. `RUST_LOG`, when set, wins. Reloaded on SIGHUP.
    pub log_level: Option<String>,

    // A fleet of relays.
    /// After SIGTERM (or `POST /v1/drain`), how long live allocations may go on before the
    /// relay exits anyway, seconds. 0: exit at once, as SIGINT does.
    pub drain_timeout_s: u64,
    /// Other relays of the fleet, offered with 300 (Try Alternate) to new clients while
    /// this one drains or is full (RFC 8489 §10).
    pub alternate_servers: Vec<AlternateServerConfig>,
}

/// Default `drain_timeout_s`: an hour, the default `max_allocation_lifetime_s`, so that a
/// call that stops refreshing is gone by then, and one that goes on is cut at a time the
/// operator knows. Behind an orchestrator, its grace period must be at least this long
/// (Kubernetes' `terminationGracePeriodSeconds`, 30 s by default, ends the process with
/// SIGKILL).
pub const DEFAULT_DRAIN_TIMEOUT_S: u64 = 3600;

/// One `[[alternate_servers]]` entry: another relay of the fleet.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlternateServerConfig {
    /// Its address (IPv4 or IPv6): offered to clients of the same family.
    pub address: IpAddr,
    /// Its UDP and TCP port, offered to the clients of this relay's UDP and TCP listeners.
    #[serde(default = "default_turn_port")]
    pub turn_port: u16,
    /// Its TLS port, offered to the clients of this relay's TLS listener (none: TLS
    /// clients are not redirected to it).
    #[serde(default)]
    pub tls_port: Option<u16>,
    /// The name on its certificate, sent as ALTERNATE-DOMAIN to TLS clients (RFC 8489
    /// §14.16).
    #[serde(default)]
    pub tls_domain: Option<String>,
}

fn default_turn_port() -> u16 {
    3478
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            realm: DEFAULT_REALM.to_string(),
            listen_address: Ipv4Addr::LOCALHOST,
            ipv4_address: None,
            ipv6: false,
            ipv6_address: None,
            ipv6_listen_address: Ipv6Addr::UNSPECIFIED,
            turn_udp_port: UdpPort::Fixed(3478),
            turn_udp_dynamic_port_min: 40000,
            turn_udp_dynamic_port_max: 49151,
            turn_tcp_only: false,
            turn_tls_only: false,
            api: None,
            api_listen: None,
            api_token: None,
            api_token_file: None,
            api_loopback_address_only: true,
            ice_ttl_s: 300,
            ice_max_ttl_s: 3600,
            issuance_secret: None,
            event_webhook_url: None,
            turn_tcp: true,
            turn_tcp_listen_port: 3478,
            turn_tcp_port: None,
            proxy_protocol: false,
            proxy_protocol_trusted: vec!["127.0.0.1/32".to_string(), "::1/128".to_string()],
            relay_port_min: 49152,
            relay_port_max: 65535,
            relay_port_quarantine_ms: 5000,
            static_auth_secret: Secrets::default(),
            users: BTreeMap::new(),
            allow_loopback_peers: false,
            strict_channel_numbers: false,
            allowed_peer_ip: Vec::new(),
            denied_peer_ip: Vec::new(),
            user_quota: 10,
            total_quota: 10_000,
            max_allocation_lifetime_s: 3600,
            stream_idle_timeout_s: 30,
            max_streams_per_source: turnpike_core::config::DEFAULT_MAX_STREAMS_PER_SOURCE,
            max_bps: 0,
            total_max_bps: 0,
            unauth_amplification_factor: DEFAULT_UNAUTH_AMPLIFICATION_FACTOR,
            unauth_source_bytes_per_s: DEFAULT_UNAUTH_SOURCE_BYTES_PER_S,
            unauth_node_bytes_per_s: DEFAULT_UNAUTH_NODE_BYTES_PER_S,
            stream_max_auth_failures: DEFAULT_STREAM_MAX_AUTH_FAILURES,
            socket_receive_buffer_size: DEFAULT_SOCKET_BUFFER,
            socket_send_buffer_size: DEFAULT_SOCKET_BUFFER,
            event_log: None,
            turn_tls: false,
            turn_tls_fqdn: None,
            turn_tls_port: None,
            turn_tls_listen_port: None,
            tls_cert_file: None,
            tls_key_file: None,
            turn_fqdn: None,
            trace_file: None,
            trace_payloads: false,
            trace_max_bytes: DEFAULT_TRACE_MAX_BYTES,
            workers: 0,
            coalesce_us: DEFAULT_COALESCE_US,
            io_uring: IoUringMode::default(),
            pack_loops: true,
            node_secret: None,
            unauth_stream_buffer_bytes: 64 << 20,
            log_level: None,
            drain_timeout_s: DEFAULT_DRAIN_TIMEOUT_S,
            alternate_servers: Vec::new(),
        }
    }
}

impl FileConfig {
    /// The safe built-in default used without `--config`: everything on 127.0.0.1, UDP
    /// and TCP on 3478, one REST secret (`secret`, random at start).
    ///
    /// Loopback peers are allowed here, unlike in a file's default: the listeners and
    /// relay sockets are bound to 127.0.0.1, so only this machine can reach the relay and
    /// the relay can reach nothing but this machine. Denying loopback would make the
    /// default useless without protecting anything.
    pub fn builtin_default(secret: String) -> Self {
        FileConfig {
            static_auth_secret: Secrets(vec![Secret(secret)]),
            allow_loopback_peers: true,
            api_listen: Some(DEFAULT_API_LISTEN),
            ..FileConfig::default()
        }
    }

    /// The configured log level (`info` when unset).
    pub fn log_filter(&self) -> log::LevelFilter {
        self.log_level
            .as_deref()
            .and_then(|l| l.parse().ok())
            .unwrap_or(log::LevelFilter::Info)
    }

    /// Where the HTTP API listens, if the file asks for it.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        match (self.api, self.api_listen) {
            (Some(false), _) => None,
            (_, Some(a)) => Some(a),
            (Some(true), None) => Some(DEFAULT_API_LISTEN),
            (None, None) => None,
        }
    }

    /// Parses and checks the text of a configuration file named `file` (the name is only
    /// used in error messages).
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(file, text, &e))?;
        let err = |(key, message): (&str, String)| ConfigError {
            file: file.to_string(),
            line: find_key_line(text, key),
            key: Some(key.to_string()),
            message,
        };
        config.check().map_err(err)?;
        config.load_tls().map_err(|e| err((e.key, e.message)))?;
        Ok(config)
    }

    /// Reads, parses and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_text(path).map(|(c, _)| c)
    }

    /// [`FileConfig::load`], and the text it was read from.
    pub fn load_text(path: &Path) -> Result<(Self, String), ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Ok((Self::parse(&name, &text)?, text))
    }

    /// The advertised IPv4 address: `ipv4_address`, else `listen_address`.
    pub fn advertised_v4(&self) -> Ipv4Addr {
        self.ipv4_address.unwrap_or(self.listen_address)
    }

    /// The advertised IPv6 address: `ipv6_address`, else `ipv6_listen_address`.
    pub fn advertised_v6(&self) -> Ipv6Addr {
        self.ipv6_address.unwrap_or(self.ipv6_listen_address)
    }

    /// The port of `turns:` URLs: `turn_tls_port`, else the native TLS port, else 443.
    pub fn url_tls_port(&self) -> u16 {
        self.turn_tls_port
            .or(self.turn_tls_listen_port)
            .unwrap_or(443)
    }

    /// True if the relay serves TLS itself (`turn_tls_listen_port`).
    pub fn native_tls(&self) -> bool {
        self.turn_tls_listen_port.is_some()
    }

    /// Loads the native TLS certificate and key, if configured: an unreadable or bad file
    /// is an error naming its key.
    pub fn load_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, crate::tls::TlsLoadError> {
        match (
            &self.turn_tls_listen_port,
            &self.tls_cert_file,
            &self.tls_key_file,
        ) {
            (Some(_), Some(cert), Some(key)) => crate::tls::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// The TCP port written into URLs.
    pub fn url_tcp_port(&self) -> u16 {
        self.turn_tcp_port.unwrap_or(self.turn_tcp_listen_port)
    }

    /// The native TLS keys: a port and both files, or none of them.
    fn check_native_tls(&self) -> Result<(), (&'static str, String)> {
        match self.turn_tls_listen_port {
            Some(0) => Err(("turn_tls_listen_port", "must be 1..=65535".into())),
            Some(_) if self.tls_cert_file.is_none() => Err((
                "tls_cert_file",
                "required when `turn_tls_listen_port` is set".into(),
            )),
            Some(_) if self.tls_key_file.is_none() => Err((
                "tls_key_file",
                "required when `turn_tls_listen_port` is set".into(),
            )),
            None if self.tls_cert_file.is_some() => Err((
                "tls_cert_file",
                "has no effect without `turn_tls_listen_port`".into(),
            )),
            None if self.tls_key_file.is_some() => Err((
                "tls_key_file",
                "has no effect without `turn_tls_listen_port`".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Checks the rules the types cannot express. On failure: the key at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        check_realm(&self.realm).map_err(|m| ("realm", m))?;
        if let Some(a) = self.ipv4_address {
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                return Err(("ipv4_address", format!("{a} cannot be advertised")));
            }
        }
        if self.listen_address.is_multicast() || self.listen_address.is_broadcast() {
            return Err((
                "listen_address",
                format!("{} cannot be bound", self.listen_address),
            ));
        }
        if self.ipv6 {
            if self.ipv6_address.is_none() && self.ipv6_listen_address.is_unspecified() {
                return Err((
                    "ipv6_address",
                    "required when `ipv6 = true` and `ipv6_listen_address` is a wildcard".into(),
                ));
            }
            if self.advertised_v6().is_unspecified() || self.advertised_v6().is_multicast() {
                return Err((
                    "ipv6_address",
                    format!("{} cannot be advertised", self.advertised_v6()),
                ));
            }
        }
        if self.turn_udp_port == UdpPort::Fixed(0) {
            return Err(("turn_udp_port", "must be 1..=65535".into()));
        }
        self.check_issuance()?;
        if self.turn_tcp_listen_port == 0 {
            return Err(("turn_tcp_listen_port", "must be 1..=65535".into()));
        }
        if self.turn_tcp_port == Some(0) {
            return Err(("turn_tcp_port", "must be 1..=65535".into()));
        }
        if self.turn_tls_port == Some(0) {
            return Err(("turn_tls_port", "must be 1..=65535".into()));
        }
        self.check_native_tls()?;
        if self.relay_port_min == 0 {
            return Err(("relay_port_min", "must be 1..=65535".into()));
        }
        if self.relay_port_min > self.relay_port_max {
            return Err((
                "relay_port_min",
                format!(
                    "{} is above `relay_port_max` ({})",
                    self.relay_port_min, self.relay_port_max
                ),
            ));
        }
        if self.relay_port_quarantine_ms > 3_600_000 {
            return Err((
                "relay_port_quarantine_ms",
                "at most 3600000 (one hour)".into(),
            ));
        }
        check_secrets(&self.static_auth_secret).map_err(|m| ("static_auth_secret", m))?;
        check_users(&self.users).map_err(|m| ("users", m))?;
        if self.static_auth_secret.0.is_empty()
            && self.users.is_empty()
            && !(self.api_addr().is_some() && self.issuance_secret.is_some())
        {
            return Err((
                "static_auth_secret",
                "no credentials: set `static_auth_secret`, `users` or `issuance_secret`".into(),
            ));
        }
        if self.user_quota == 0 {
            return Err(("user_quota", "must be at least 1".into()));
        }
        self.check_unauth()?;
        if self.total_quota == 0 {
            return Err(("total_quota", "must be at least 1".into()));
        }
        if !(60..=86_400).contains(&self.max_allocation_lifetime_s) {
            return Err((
                "max_allocation_lifetime_s",
                "must be 60..=86400 seconds".into(),
            ));
        }
        if !(1..=3600).contains(&self.stream_idle_timeout_s) {
            return Err(("stream_idle_timeout_s", "must be 1..=3600 seconds".into()));
        }
        check_buffer(self.socket_receive_buffer_size)
            .map_err(|m| ("socket_receive_buffer_size", m))?;
        check_buffer(self.socket_send_buffer_size).map_err(|m| ("socket_send_buffer_size", m))?;
        if let Some(p) = &self.event_log {
            if p.as_os_str().is_empty() {
                return Err(("event_log", "empty path".into()));
            }
        }
        for (key, name) in [
            ("turn_tls_fqdn", &self.turn_tls_fqdn),
            ("turn_fqdn", &self.turn_fqdn),
        ] {
            if let Some(n) = name {
                check_host_name(n).map_err(|m| (key, m))?;
            }
        }
        if let Some(p) = &self.trace_file {
            if p.as_os_str().is_empty() {
                return Err(("trace_file", "empty path".into()));
            }
        }
        if self.workers > MAX_WORKERS {
            return Err((
                "workers",
                format!("at most {MAX_WORKERS} (0: one per core)"),
            ));
        }
        if self.coalesce_us > MAX_COALESCE_US {
            return Err((
                "coalesce_us",
                format!("at most {MAX_COALESCE_US} (0: never wait)"),
            ));
        }
        if let Some(l) = &self.log_level {
            l.parse::<log::LevelFilter>().map_err(|_| {
                (
                    "log_level",
                    format!("`{l}`: one of off, error, warn, info, debug, trace"),
                )
            })?;
        }
        if self.trace_max_bytes < 1 << 20 {
            return Err(("trace_max_bytes", "at least 1048576 (1 MiB)".into()));
        }
        if self.turn_tls
            && !self.native_tls()
            && self.turn_tls_fqdn.is_none()
            && self.turn_fqdn.is_none()
        {
            return Err((
                "turn_tls_fqdn",
                "required when `turn_tls = true` (or set `turn_fqdn`)".into(),
            ));
        }
        // Last: these need the core's CIDR parser.
        check_cidrs(&self.proxy_protocol_trusted).map_err(|m| ("proxy_protocol_trusted", m))?;
        check_cidrs(&self.allowed_peer_ip).map_err(|m| ("allowed_peer_ip", m))?;
        check_cidrs(&self.denied_peer_ip).map_err(|m| ("denied_peer_ip", m))?;
        Ok(())
    }
}

/// `io_uring`: whether a loop reads a poll round's ready UDP sockets, and sends the
/// round's datagrams, with one io_uring submission each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoUringMode {
    /// Where the kernel has it (Linux ≥ 5.6, which answers the opcode probe; not disabled
    /// by `kernel.io_uring_disabled`).
    #[default]
    Auto,
    /// Asked for: a warning if the kernel refuses it.
    On,
    /// `recvmmsg(2)` and `sendmmsg(2)` per socket.
    Off,
}

/// `turn_udp_port`: a fixed port, or `"dynamic"` (one port per issued configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpPort {
    /// One shared UDP port.
    Fixed(u16),
    /// A port opened for each issued ICE configuration.
    Dynamic,
}

impl<'de> Deserialize<'de> for UdpPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UdpPortVisitor)
    }
}

struct UdpPortVisitor;

impl Visitor<'_> for UdpPortVisitor {
    type Value = UdpPort;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer 0..=65535 or \"dynamic\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<UdpPort, E> {
        u16::try_from(v).map(UdpPort::Fixed).map_err(|_| {
            E::custom(format!(
                "{v} is not a port: expected an integer 0..=65535 or \"dynamic\""
            ))
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<UdpPort, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<UdpPort, E> {
        if v == "dynamic" {
            Ok(UdpPort::Dynamic)
        } else {
            Err(E::custom(format!(
                "`{v}`: expected an integer 0..=65535 or \"dynamic\""
            )))
        }
    }
}

impl FileConfig {
    /// The rules of the HTTP API and of issuance.
    /// The anti-amplification limits: a factor the core accepts, and ceilings that let at
    /// least a few challenges through.
    fn check_unauth(&self) -> Result<(), (&'static str, String)> {
        let max = turnpike_core::config::MAX_UNAUTH_AMPLIFICATION_FACTOR;
        if !(1..=max).contains(&self.unauth_amplification_factor) {
            return Err((
                "unauth_amplification_factor",
                format!("must be 1..={max} (3 is RFC 9000's rule)"),
            ));
        }
        if self.unauth_source_bytes_per_s < MIN_UNAUTH_BYTES_PER_S {
            return Err((
                "unauth_source_bytes_per_s",
                format!("must be at least {MIN_UNAUTH_BYTES_PER_S} (a 401 is about 150 bytes)"),
            ));
        }
        if self.unauth_node_bytes_per_s < self.unauth_source_bytes_per_s {
            return Err((
                "unauth_node_bytes_per_s",
                format!(
                    "{} is below `unauth_source_bytes_per_s` ({})",
                    self.unauth_node_bytes_per_s, self.unauth_source_bytes_per_s
                ),
            ));
        }
        Ok(())
    }

    fn check_issuance(&self) -> Result<(), (&'static str, String)> {
        let (dmin, dmax) = (
            self.turn_udp_dynamic_port_min,
            self.turn_udp_dynamic_port_max,
        );
        if self.turn_udp_port == UdpPort::Dynamic {
            if dmin == 0 || dmin > dmax {
                return Err((
                    "turn_udp_dynamic_port_min",
                    format!("{dmin}..={dmax} is not a port range"),
                ));
            }
            if dmin <= self.relay_port_max && self.relay_port_min <= dmax {
                return Err((
                    "turn_udp_dynamic_port_min",
                    format!(
                        "{dmin}..={dmax} overlaps the relay ports {}..={}",
                        self.relay_port_min, self.relay_port_max
                    ),
                ));
            }
            if self.api_addr().is_none() && !self.turn_tcp_only && !self.turn_tls_only {
                return Err((
                    "turn_udp_port",
                    "\"dynamic\" ports are opened by issuance: it needs the HTTP API \
                     (`api_listen`)"
                        .into(),
                ));
            }
        }
        if self.turn_tcp_only && !self.turn_tcp {
            return Err(("turn_tcp_only", "needs `turn_tcp = true`".into()));
        }
        if self.turn_tls_only && !self.turn_tls && !self.native_tls() {
            return Err((
                "turn_tls_only",
                "needs `turn_tls = true` or `turn_tls_listen_port`".into(),
            ));
        }
        if !(1..=86_400).contains(&self.ice_max_ttl_s) {
            return Err(("ice_max_ttl_s", "must be 1..=86400 seconds".into()));
        }
        if self.ice_ttl_s == 0 || self.ice_ttl_s > self.ice_max_ttl_s {
            return Err((
                "ice_ttl_s",
                format!("must be 1..={} (`ice_max_ttl_s`)", self.ice_max_ttl_s),
            ));
        }
        if let Some(s) = &self.issuance_secret {
            if s.0.len() < 16 {
                return Err(("issuance_secret", "at least 16 characters".into()));
            }
        }
        if let Some(s) = &self.node_secret {
            if s.0.len() < 16 {
                return Err(("node_secret", "at least 16 characters".into()));
            }
        }
        for a in &self.alternate_servers {
            if a.address.is_unspecified() || a.turn_port == 0 || a.tls_port == Some(0) {
                return Err((
                    "alternate_servers",
                    format!(
                        "`{}`: an address and ports that a client can reach",
                        a.address
                    ),
                ));
            }
        }
        if let Some(u) = &self.event_webhook_url {
            crate::api::webhook::parse_url(u).map_err(|m| ("event_webhook_url", m))?;
        }
        self.check_api_token()
    }

    fn check_api_token(&self) -> Result<(), (&'static str, String)> {
        if self.api_token.is_some() && self.api_token_file.is_some() {
            return Err((
                "api_token_file",
                "set `api_token` or `api_token_file`, not both".into(),
            ));
        }
        if let Some(t) = &self.api_token {
            check_api_token(&t.0).map_err(|m| ("api_token", m))?;
        }
        let key = if self.api_token.is_some() {
            "api_token"
        } else {
            "api_token_file"
        };
        if (self.api_token.is_some() || self.api_token_file.is_some()) && self.api_addr().is_none()
        {
            return Err((key, "there is no HTTP API: set `api_listen`".into()));
        }
        Ok(())
    }

    /// The API's bearer token: `api_token`, or the content of `api_token_file` without
    /// its surrounding whitespace. Errors name the key, never the token.
    pub fn api_token(&self) -> Result<Option<Secret>, (&'static str, String)> {
        if let Some(t) = &self.api_token {
            return Ok(Some(t.clone()));
        }
        let Some(path) = &self.api_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            (
                "api_token_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let token = text.trim();
        check_api_token(token)
            .map_err(|m| ("api_token_file", format!("{}: {m}", path.display())))?;
        Ok(Some(Secret(token.to_string())))
    }
}

/// Where the HTTP API listens when asked for with `api = true` alone, and in the built-in
/// default.
pub const DEFAULT_API_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3000);

/// Shortest API token accepted (characters): a token is guessed online, but 16 random
/// characters keep that out of reach.
pub const MIN_API_TOKEN_LEN: usize = 16;

/// An API token: at least [`MIN_API_TOKEN_LEN`] visible ASCII characters (what an
/// `Authorization: Bearer` header can carry, RFC 6750 §2.1).
fn check_api_token(t: &str) -> Result<(), String> {
    if t.len() < MIN_API_TOKEN_LEN {
        return Err(format!(
            "the token is shorter than {MIN_API_TOKEN_LEN} characters"
        ));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be visible ASCII characters, without spaces".into());
    }
    Ok(())
}

/// A secret string (password or shared secret) that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `static_auth_secret`: one string or a list of strings (rotation: every one verifies,
/// the first one issues).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets(pub Vec<Secret>);

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretsVisitor)
    }
}

struct SecretsVisitor;

impl<'de> Visitor<'de> for SecretsVisitor {
    type Value = Secrets;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secrets, E> {
        Ok(Secrets(vec![Secret(v.to_string())]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Secrets, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element::<String>()? {
            out.push(Secret(s));
        }
        Ok(Secrets(out))
    }
}

/// A configuration error, naming the file, the line and the key when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (as given on the command line), or `<built-in>`.
    pub file: String,
    /// 1-based line number.
    pub line: Option<usize>,
    /// The key at fault (`users.alice` for a key inside a table).
    pub key: Option<String>,
    /// What is wrong, on one line.
    pub message: String,
}

impl ConfigError {
    /// An error from the TOML parser: line from its span, key from the message or the
    /// line the span points into.
    fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> Self {
        let span = e.span();
        let line = span.as_ref().map(|s| line_of(text, s.start));
        let raw = e.message().trim();
        let unknown = raw
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next());
        let (key, message) = match unknown {
            Some(k) if REPLACED_KEYS.iter().any(|(old, _)| *old == k) => {
                let new = REPLACED_KEYS
                    .iter()
                    .find(|(old, _)| *old == k)
                    .map_or("", |(_, new)| new);
                (Some(k.to_string()), format!("no longer supported: {new}"))
            }
            Some(k) => {
                let hint = suggest(k)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                (Some(k.to_string()), format!("unknown key{hint}"))
            }
            None => {
                let key = span.and_then(|s| key_at(text, s.start));
                let message = match &key {
                    // serde's messages quote the value they reject: never a secret's.
                    Some(k) if holds_secret(k) => hidden_value(raw),
                    _ => plain_types(first_line(raw)),
                };
                (key, message)
            }
        };
        ConfigError {
            file: file.to_string(),
            line,
            key,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        f.write_str(": ")?;
        if let Some(k) = &self.key {
            write!(f, "key `{k}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Keys of earlier versions, with what replaced them.
const REPLACED_KEYS: &[(&str, &str)] = &[
    (
        "unauth_rate_per_s",
        "unauthenticated answers are bounded by bytes; see `unauth_amplification_factor` and `unauth_source_bytes_per_s`",
    ),
    (
        "unauth_burst",
        "unauthenticated answers are bounded by bytes; see `unauth_amplification_factor` and `unauth_source_bytes_per_s`",
    ),
];

/// Every key the file accepts, for suggestions.
const KEYS: &[&str] = &[
    "realm",
    "listen_address",
    "ipv4_address",
    "ipv6",
    "ipv6_address",
    "ipv6_listen_address",
    "turn_udp_port",
    "turn_udp_dynamic_port_min",
    "turn_udp_dynamic_port_max",
    "turn_tcp_only",
    "turn_tls_only",
    "api",
    "api_listen",
    "api_loopback_address_only",
    "api_token",
    "api_token_file",
    "ice_ttl_s",
    "ice_max_ttl_s",
    "issuance_secret",
    "event_webhook_url",
    "turn_tcp",
    "turn_tcp_listen_port",
    "turn_tcp_port",
    "proxy_protocol",
    "proxy_protocol_trusted",
    "relay_port_min",
    "relay_port_max",
    "relay_port_quarantine_ms",
    "static_auth_secret",
    "users",
    "allow_loopback_peers",
    "strict_channel_numbers",
    "allowed_peer_ip",
    "denied_peer_ip",
    "user_quota",
    "total_quota",
    "max_allocation_lifetime_s",
    "stream_idle_timeout_s",
    "max_streams_per_source",
    "max_bps",
    "total_max_bps",
    "unauth_amplification_factor",
    "unauth_source_bytes_per_s",
    "unauth_node_bytes_per_s",
    "stream_max_auth_failures",
    "socket_receive_buffer_size",
    "socket_send_buffer_size",
    "event_log",
    "turn_tls",
    "turn_tls_fqdn",
    "turn_tls_port",
    "turn_tls_listen_port",
    "tls_cert_file",
    "tls_key_file",
    "turn_fqdn",
    "trace_file",
    "trace_payloads",
    "trace_max_bytes",
    "workers",
    "coalesce_us",
    "io_uring",
    "pack_loops",
    "node_secret",
    "unauth_stream_buffer_bytes",
    "log_level",
    "drain_timeout_s",
    "alternate_servers",
];

/// The known key closest to `k`, if it is close (a typo): Levenshtein distance (in
/// characters, strsim's) of at most 3; of equally close keys, the first by name.
fn suggest(k: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|c| (strsim::levenshtein(k, c), *c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c)
}

/// Serde's Rust type names in plain words.
/// Whether `key` (dotted) holds a secret or part of one: its value must not be echoed.
fn holds_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "users"
        || k.starts_with("users.")
        || ["secret", "token", "password", "passwd", "credential"]
            .iter()
            .any(|w| k.contains(w))
}

/// A type error's message without the value it quotes: what was expected only.
fn hidden_value(raw: &str) -> String {
    const HIDDEN: &str = "invalid value (not shown: the key holds a secret)";
    match first_line(raw).rsplit_once(", expected ") {
        Some((_, e)) => format!("{HIDDEN}; {}", plain_types(&format!("expected {e}"))),
        None => HIDDEN.to_string(),
    }
}

fn plain_types(msg: &str) -> String {
    msg.replace("expected u16", "expected an integer 0..=65535")
        .replace("expected u32", "expected an integer 0..=4294967295")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected usize", "expected a non-negative integer")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// 1-based line of byte offset `pos`.
fn line_of(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key assigned on the line holding byte `pos`, prefixed with its table
/// (`users.alice`), or the table itself for a header line.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let target = line_of(text, pos);
    let mut table: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = table_header(l) {
            table = Some(h.to_string());
            if i + 1 == target {
                return table;
            }
            continue;
        }
        if i + 1 == target {
            let key = line_key(l)?;
            return Some(match &table {
                Some(t) => format!("{t}.{key}"),
                None => key.to_string(),
            });
        }
    }
    None
}

/// The 1-based line on which top-level `key` is set (`key = ...`, `key.x = ...` or a
/// `[key]` table header).
pub fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let mut in_root = true;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = table_header(l) {
            if h == key {
                return Some(i + 1);
            }
            in_root = false;
            continue;
        }
        if in_root
            && line_key(l).map(|k| k == key || k.starts_with(&format!("{key}."))) == Some(true)
        {
            return Some(i + 1);
        }
    }
    None
}

/// `users` for a line `[users]` (or `[[users]]`).
fn table_header(l: &str) -> Option<&str> {
    let inner = l.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(inner[..end].trim_matches(|c| c == '[' || c == ' '))
}

/// The (unquoted) key of a `key = value` line.
fn line_key(l: &str) -> Option<&str> {
    if l.starts_with('#') {
        return None;
    }
    let (k, _) = l.split_once('=')?;
    let k = k.trim().trim_matches('"').trim_matches('\'');
    (!k.is_empty()).then_some(k)
}

/// RFC 8489 §14.9: fewer than 128 characters; we also refuse control characters and
/// quotes, which would break the WWW-Authenticate-like attribute in logs and URLs.
fn check_realm(realm: &str) -> Result<(), String> {
    if realm.is_empty() {
        return Err("must not be empty".into());
    }
    if realm.chars().count() >= 128 {
        return Err("must be shorter than 128 characters (RFC 8489 §14.9)".into());
    }
    if realm.chars().any(|c| c.is_control() || c == '"') {
        return Err("must not contain control characters or quotes".into());
    }
    Ok(())
}

fn check_secrets(s: &Secrets) -> Result<(), String> {
    if s.0.iter().any(|x| x.0.is_empty()) {
        return Err("a secret must not be empty".into());
    }
    Ok(())
}

fn check_users(users: &BTreeMap<String, Secret>) -> Result<(), String> {
    for (name, pass) in users {
        if name.is_empty() || name.len() > 512 || name.chars().any(char::is_control) {
            return Err(format!(
                "user name `{name}` is empty, too long or has control characters"
            ));
        }
        if pass.0.is_empty() {
            return Err(format!("user `{name}` has an empty password"));
        }
    }
    Ok(())
}

fn check_cidrs(list: &[String]) -> Result<(), String> {
    for s in list {
        s.parse::<IpNet>()
            .map_err(|e| format!("`{s}` is not an address or CIDR range: {}", e.0))?;
    }
    Ok(())
}

fn check_buffer(n: usize) -> Result<(), String> {
    if n != 0 && !(4096..=(1 << 30)).contains(&n) {
        return Err("must be 0 (OS default) or 4096..=1073741824 bytes".into());
    }
    Ok(())
}

/// Checks a host name (or an IP address) written into URLs.
pub fn check_host_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || n.parse::<IpAddr>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(format!("`{n}` is not a host name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl FileConfig {
        fn with_loopback(self, allow_loopback_peers: bool) -> Self {
            FileConfig {
                allow_loopback_peers,
                ..self
            }
        }
    }

    const FULL: &str = r#"
realm = "turnpike.example"
listen_address = "0.0.0.0"
ipv4_address = "192.0.2.10"
ipv6 = true
ipv6_address = "2001:db8::10"
ipv6_listen_address = "::"
turn_udp_port = 3479
turn_tcp = true
turn_tcp_listen_port = 3480
turn_tcp_port = 443
proxy_protocol = true
proxy_protocol_trusted = ["127.0.0.1/32"]
relay_port_min = 36001
relay_port_max = 37000
relay_port_quarantine_ms = 4000
static_auth_secret = ["new", "old"]
users = { alice = "change-me", bob = "pw" }
allow_loopback_peers = true
allowed_peer_ip = ["10.0.0.5"]
denied_peer_ip = ["203.0.113.0/24"]
user_quota = 5
total_quota = 100
max_allocation_lifetime_s = 1200
stream_idle_timeout_s = 7
max_streams_per_source = 9
max_bps = 125000
total_max_bps = 12500000
unauth_amplification_factor = 2
unauth_source_bytes_per_s = 500000
unauth_node_bytes_per_s = 5000000
stream_max_auth_failures = 4
socket_receive_buffer_size = 2097152
socket_send_buffer_size = 0
event_log = "turnpike.jsonl"
turn_tls = true
turn_tls_fqdn = "turn.example.com"
turn_tls_port = 5349
turn_fqdn = "relay.example.com"
"#;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse("t.toml", text)
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.realm, "turnpike.example");
        assert_eq!(c.listen_address, Ipv4Addr::UNSPECIFIED);
        assert_eq!(c.ipv4_address, Some(Ipv4Addr::new(192, 0, 2, 10)));
        assert!(c.ipv6);
        assert_eq!(c.ipv6_address, Some("2001:db8::10".parse().unwrap()));
        assert_eq!(c.ipv6_listen_address, Ipv6Addr::UNSPECIFIED);
        assert_eq!(
            (c.turn_udp_port, c.turn_tcp_listen_port, c.turn_tcp_port),
            (UdpPort::Fixed(3479), 3480, Some(443))
        );
        assert!(c.turn_tcp && c.proxy_protocol && c.allow_loopback_peers && c.turn_tls);
        assert_eq!(c.proxy_protocol_trusted, vec!["127.0.0.1/32"]);
        assert_eq!(
            (
                c.relay_port_min,
                c.relay_port_max,
                c.relay_port_quarantine_ms
            ),
            (36001, 37000, 4000)
        );
        let secrets: Vec<&str> = c
            .static_auth_secret
            .0
            .iter()
            .map(|s| s.0.as_str())
            .collect();
        assert_eq!(secrets, ["new", "old"]);
        assert_eq!(
            c.users.get("alice").map(|s| s.0.as_str()),
            Some("change-me")
        );
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.allowed_peer_ip, vec!["10.0.0.5"]);
        assert_eq!(c.denied_peer_ip, vec!["203.0.113.0/24"]);
        assert_eq!(
            (c.user_quota, c.total_quota, c.max_allocation_lifetime_s),
            (5, 100, 1200)
        );
        assert_eq!(
            (
                c.stream_idle_timeout_s,
                c.max_streams_per_source,
                c.max_bps,
                c.total_max_bps
            ),
            (7, 9, 125_000, 12_500_000)
        );
        assert_eq!(
            (c.socket_receive_buffer_size, c.socket_send_buffer_size),
            (2 << 20, 0)
        );
        assert_eq!(c.event_log, Some(PathBuf::from("turnpike.jsonl")));
        assert_eq!(c.turn_tls_fqdn.as_deref(), Some("turn.example.com"));
        assert_eq!(c.turn_tls_port, Some(5349));
        assert_eq!(c.turn_fqdn.as_deref(), Some("relay.example.com"));
        assert_eq!(c.url_tcp_port(), 443);
    }

    #[test]
    fn secret_may_be_one_string_and_users_a_table() {
        let c = parse("static_auth_secret = \"s3\"\n[users]\nalice = \"pw\"\n").unwrap();
        assert_eq!(c.static_auth_secret, Secrets(vec![Secret("s3".into())]));
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.url_tcp_port(), 3478);
        assert_eq!(c.advertised_v4(), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse("static_auth_secret = \"s\"\n\nrelay_port_mim = 5\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("relay_port_mim"));
        let shown = e.to_string();
        assert!(
            shown.starts_with("t.toml:3: key `relay_port_mim`: unknown key"),
            "{shown}"
        );
        assert!(shown.contains("relay_port_min"), "{shown}");
    }

    #[test]
    fn bad_type_names_key_and_line() {
        let e = parse("static_auth_secret = \"s\"\nrealm = \"r\"\nturn_udp_port = \"x\"\n")
            .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("turn_udp_port")),
            "{e}"
        );
        let e = parse("static_auth_secret = \"s\"\nturn_udp_port = 70000\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("turn_udp_port")),
            "{e}"
        );
        assert!(e.message.contains("expected an integer 0..=65535"), "{e}");
        let e = parse("static_auth_secret = \"s\"\nlisten_address = \"1.2.3\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("listen_address")),
            "{e}"
        );
        let e = parse("static_auth_secret = 5\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(1), Some("static_auth_secret")),
            "{e}"
        );
        assert!(e.message.contains("a string or a list of strings"), "{e}");
        let e = parse("static_auth_secret = \"s\"\n[users]\nalice = 3\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("users.alice")),
            "{e}"
        );
    }

    #[test]
    fn a_type_error_of_a_secret_names_key_line_and_type_but_not_the_value() {
        let cases = [
            ("realm = \"r\"\nusers = { alice = 1234 }\n", 2, "users"),
            (
                "static_auth_secret = \"s\"\n[users]\nalice = 1234\n",
                3,
                "users.alice",
            ),
            ("static_auth_secret = 1234\n", 1, "static_auth_secret"),
            (
                "static_auth_secret = \"s\"\nnode_secret = 1234\n",
                2,
                "node_secret",
            ),
            (
                "static_auth_secret = \"s\"\nissuance_secret = 1234\n",
                2,
                "issuance_secret",
            ),
            (
                "static_auth_secret = \"s\"\napi_token = 1234\n",
                2,
                "api_token",
            ),
        ];
        for (text, line, key) in cases {
            let e = parse(text).unwrap_err();
            let shown = e.to_string();
            assert_eq!(
                (e.line, e.key.as_deref()),
                (Some(line), Some(key)),
                "{shown}"
            );
            assert!(!shown.contains("1234"), "the value is echoed: {shown}");
            assert!(shown.contains("expected"), "no expected type: {shown}");
        }
        // A key that holds no secret still shows what it got.
        let e = parse("static_auth_secret = \"s\"\nrealm = 1234\n").unwrap_err();
        assert!(e.to_string().contains("1234"), "{e}");
    }

    #[test]
    fn syntax_error_names_line() {
        let e = parse("realm = \"a\"\nrelay_port_min = = 3\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn unauthenticated_limits_are_read_and_checked() {
        let c = parse(FULL).unwrap();
        assert_eq!(
            (
                c.unauth_amplification_factor,
                c.unauth_source_bytes_per_s,
                c.unauth_node_bytes_per_s,
                c.stream_max_auth_failures
            ),
            (2, 500_000, 5_000_000, 4)
        );
        let d = parse("static_auth_secret = \"s\"\n").unwrap();
        assert_eq!(
            (
                d.unauth_amplification_factor,
                d.unauth_source_bytes_per_s,
                d.unauth_node_bytes_per_s,
                d.stream_max_auth_failures
            ),
            (3, 1_000_000, 20_000_000, 10)
        );
        let bad = |text: &str| {
            let e = parse(&format!("static_auth_secret = \"s\"\n{text}\n")).unwrap_err();
            (e.line, e.key.unwrap_or_default(), e.message)
        };
        for (text, key) in [
            (
                "unauth_amplification_factor = 0",
                "unauth_amplification_factor",
            ),
            (
                "unauth_amplification_factor = 11",
                "unauth_amplification_factor",
            ),
            (
                "unauth_source_bytes_per_s = 999",
                "unauth_source_bytes_per_s",
            ),
            ("unauth_node_bytes_per_s = 1000", "unauth_node_bytes_per_s"),
            (
                "unauth_source_bytes_per_s = -1",
                "unauth_source_bytes_per_s",
            ),
            (
                "stream_max_auth_failures = \"ten\"",
                "stream_max_auth_failures",
            ),
        ] {
            let (line, k, m) = bad(text);
            assert_eq!((line, k.as_str()), (Some(2), key), "{text}: {m}");
        }
        assert!(parse("static_auth_secret = \"s\"\nstream_max_auth_failures = 0\n").is_ok());
        // The packet budget's keys name what replaced them.
        for old in ["unauth_rate_per_s = 20", "unauth_burst = 40"] {
            let (line, _, m) = bad(old);
            assert_eq!(line, Some(2));
            assert!(m.contains("unauth_amplification_factor"), "{m}");
        }
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let e = parse("static_auth_secret = \"s\"\nrelay_port_max = 100\n relay_port_min = 200\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:3: key `relay_port_min`: 200 is above `relay_port_max` (100)"
        );
        let e = parse("static_auth_secret = \"s\"\nuser_quota = 0\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("user_quota")));
        let e = parse("static_auth_secret = \"s\"\ntotal_quota = 0\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("total_quota")));
        // A wildcard without an address is fine: the interfaces' addresses are used.
        assert!(parse("static_auth_secret = \"s\"\nlisten_address = \"0.0.0.0\"\n").is_ok());
        let e = parse("static_auth_secret = \"s\"\nstream_idle_timeout_s = 0\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("stream_idle_timeout_s"))
        );
        let e = parse("realm = \"r\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("static_auth_secret"));
        let e = parse("static_auth_secret = \"s\"\n[users]\nalice = \"\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("users")));
        let e = parse("static_auth_secret = \"s\"\nturn_tls = true\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("turn_tls_fqdn"));
        let e = parse("static_auth_secret = \"s\"\nsocket_send_buffer_size = 10\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("socket_send_buffer_size"))
        );
        let e = parse("static_auth_secret = \"s\"\nmax_allocation_lifetime_s = 5\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("max_allocation_lifetime_s"));
        let e = parse("static_auth_secret = \"s\"\nrealm = \"\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("realm")));
        let e = parse("static_auth_secret = \"s\"\ncoalesce_us = 5000\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("coalesce_us")));
        assert!(parse("static_auth_secret = \"s\"\ncoalesce_us = 0\n").is_ok());
    }

    #[test]
    fn bad_cidr_names_key_and_line() {
        // Needs the core's CIDR parser.
        let e =
            parse("static_auth_secret = \"s\"\ndenied_peer_ip = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(2), Some("denied_peer_ip")),
            "{e}"
        );
        let e = parse("static_auth_secret = \"s\"\nallowed_peer_ip = [\"nope\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("allowed_peer_ip"));
    }

    #[test]
    fn issuance_keys() {
        let c = parse(
            "turn_udp_port = \"dynamic\"\nturn_udp_dynamic_port_min = 30000\n\
             turn_udp_dynamic_port_max = 30099\nissuance_secret = \"0123456789abcdef\"\n\
             api_listen = \"127.0.0.1:0\"\nevent_webhook_url = \"http://127.0.0.1:9/e\"\n",
        )
        .unwrap();
        assert_eq!(c.turn_udp_port, UdpPort::Dynamic);
        assert_eq!(c.api_addr().map(|a| a.port()), Some(0));
        let err = |text: &str| {
            parse(&format!("static_auth_secret = \"s\"\n{text}\n"))
                .unwrap_err()
                .key
        };
        assert_eq!(
            err("turn_udp_port = \"dynamic\"\nturn_udp_dynamic_port_min = 50000"),
            Some("turn_udp_dynamic_port_min".into()),
            "overlaps the relay ports"
        );
        assert_eq!(
            err("turn_udp_port = \"random\""),
            Some("turn_udp_port".into())
        );
        assert_eq!(
            err("turn_udp_port = \"dynamic\"\napi = false"),
            Some("turn_udp_port".into())
        );
        assert_eq!(err("turn_tls_only = true"), Some("turn_tls_only".into()));
        assert_eq!(err("ice_ttl_s = 0"), Some("ice_ttl_s".into()));
        assert_eq!(
            err("ice_ttl_s = 100\nice_max_ttl_s = 50"),
            Some("ice_ttl_s".into())
        );
        assert_eq!(
            err("event_webhook_url = \"https://x/\""),
            Some("event_webhook_url".into())
        );
        assert_eq!(
            err("issuance_secret = \"short\""),
            Some("issuance_secret".into())
        );
        assert_eq!(err("node_secret = \"short\""), Some("node_secret".into()));
    }

    #[test]
    fn default_config_is_safe() {
        let d = FileConfig::default();
        assert_eq!(d.listen_address, Ipv4Addr::LOCALHOST);
        assert!(!d.allow_loopback_peers && !d.ipv6 && !d.proxy_protocol);
        assert_eq!(
            (d.turn_udp_port, d.turn_tcp_listen_port),
            (UdpPort::Fixed(3478), 3478)
        );
        // A file must ask for the API: it mints credentials, and port 3000 may be taken.
        assert_eq!(d.api_addr(), None);
        assert!(d.api_loopback_address_only);
        assert_eq!((d.relay_port_min, d.relay_port_max), (49152, 65535));
        assert_eq!(d.socket_receive_buffer_size, 1 << 20);
        // A file with no credentials at all is refused.
        assert!(d.check().is_err());
        let b = FileConfig::builtin_default("secret".into());
        assert_eq!(b.realm, "turnpike");
        assert!(b.allow_loopback_peers);
        assert_eq!(b.static_auth_secret.0.len(), 1);
        assert_eq!(
            b.api_addr().map(|a| a.to_string()),
            Some("127.0.0.1:3000".into())
        );
    }

    #[test]
    fn the_api_is_served_only_when_asked_for() {
        let api = |text: &str| {
            parse(&format!("static_auth_secret = \"s\"\n{text}\n"))
                .unwrap()
                .api_addr()
                .map(|a| a.to_string())
        };
        assert_eq!(api(""), None);
        assert_eq!(
            api("api_listen = \"127.0.0.1:8080\""),
            Some("127.0.0.1:8080".into())
        );
        assert_eq!(api("api = true"), Some("127.0.0.1:3000".into()));
        assert_eq!(api("api = false\napi_listen = \"127.0.0.1:8080\""), None);
    }

    #[test]
    fn api_token_keys() {
        let base = "static_auth_secret = \"s\"\napi_listen = \"127.0.0.1:0\"\n";
        let c = parse(&format!("{base}api_token = \"0123456789abcdefXYZ\"\n")).unwrap();
        assert_eq!(c.api_token().unwrap().unwrap().0, "0123456789abcdefXYZ");
        let err = |text: &str| parse(&format!("{base}{text}\n")).unwrap_err();
        let e = err("api_token = \"tiny-tok\"");
        assert_eq!(
            (e.key.as_deref(), e.line),
            (Some("api_token"), Some(3)),
            "{e}"
        );
        assert!(
            !e.to_string().contains("tiny-tok"),
            "the token shows in {e}"
        );
        let e = err("api_token = \"0123456789 abcdef\"");
        assert_eq!(e.key.as_deref(), Some("api_token"), "{e}");
        let e = err("api_token = \"0123456789abcdefXYZ\"\napi_token_file = \"/t\"");
        assert_eq!(e.key.as_deref(), Some("api_token_file"), "{e}");
        let e =
            parse("static_auth_secret = \"s\"\napi_token = \"0123456789abcdefXYZ\"\n").unwrap_err();
        assert!(e.message.contains("no HTTP API"), "{e}");

        let dir = std::env::temp_dir().join(format!("turnpike-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  0123456789abcdefXYZ\n").unwrap();
        let c = parse(&format!("{base}api_token_file = \"{}\"\n", file.display())).unwrap();
        assert_eq!(c.api_token().unwrap().unwrap().0, "0123456789abcdefXYZ");
        std::fs::write(&file, "tiny-tok\n").unwrap();
        let c = parse(&format!("{base}api_token_file = \"{}\"\n", file.display())).unwrap();
        let (key, m) = c.api_token().unwrap_err();
        assert_eq!(key, "api_token_file");
        assert!(!m.contains("tiny-tok"), "{m}");
        std::fs::remove_dir_all(&dir).unwrap();
        let (key, _) = c.api_token().unwrap_err();
        assert_eq!(key, "api_token_file");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let b = FileConfig::builtin_default("hunter2".into());
        assert!(!format!("{b:?}").contains("hunter2"));
    }

    #[test]
    fn example_file_documents_every_key() {
        let text = include_str!("../turnpike.example.toml");
        for k in KEYS {
            assert!(
                text.contains(&format!("\n{k} =")) || text.contains(&format!("# {k} =")),
                "{k} not in the example"
            );
            // And every suggested key is a real one.
            if let Err(e) = parse(&format!("{k} = {{ x = 1 }}\n")) {
                assert!(!e.message.starts_with("unknown key"), "{k}: {e}");
            }
        }
    }

    #[test]
    fn example_file_parses() {
        // Needs the core's CIDR parser.
        let text = format!(
            "{}\nstatic_auth_secret = \"x\"\n",
            include_str!("../turnpike.example.toml")
        );
        assert_eq!(
            parse(&text).unwrap(),
            FileConfig::builtin_default("x".into()).with_loopback(false)
        );
    }

    #[test]
    fn native_tls_keys_name_key_line_and_file() {
        let base = "static_auth_secret = \"s\"\n";
        let e = parse(&format!("{base}turn_tls_listen_port = 5349\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls_cert_file"));
        let e = parse(&format!(
            "{base}turn_tls_listen_port = 5349\ntls_cert_file = \"/nonexistent/c.pem\"\ntls_key_file = \"/nonexistent/k.pem\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls_cert_file"));
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("/nonexistent/c.pem"), "{e}");
        assert!(e.message.contains("cannot read"), "{e}");
        let e = parse(&format!("{base}tls_key_file = \"k.pem\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls_key_file"));
        let e = parse(&format!("{base}turn_tls_listen_port = 0\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("turn_tls_listen_port"));
    }

    #[test]
    fn key_lines_are_found() {
        let t = "# relay_port_min = 1\nrealm = \"x\"\n\"relay_port_min\" = 3\n[users]\nrelay_port_min = 4\n";
        assert_eq!(find_key_line(t, "relay_port_min"), Some(3));
        assert_eq!(find_key_line(t, "users"), Some(4));
        assert_eq!(find_key_line(t, "total_quota"), None);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(suggest("relay_port_mim"), Some("relay_port_min"));
    }
}
