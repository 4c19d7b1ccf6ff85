//! A checked [`FileConfig`] turned into what the runtime runs: the core's
//! [`turnpike_core::Config`], the sockets to open, and the URLs to hand out.

use crate::api::ice::IceSettings;
use crate::api::ApiSettings;
use crate::config::{ConfigError, FileConfig, UdpPort};
/// Buffer sizes live with the sockets they are for; re-exported for the old path.
pub use crate::sockets::SocketBuffers;
use crate::tls::TlsMode;
use core::time::Duration;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use turnpike_core::auth::Credentials;
use turnpike_core::cidr::IpNet;
use turnpike_core::config::{AlternateServer, ListenerConfig, RelayAddress};
use turnpike_core::policy::PeerPolicy;
use turnpike_core::{Config, ListenerId, Transport};

/// One listening socket to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The name the core knows it by.
    pub id: ListenerId,
    /// UDP socket or TCP listener.
    pub transport: Transport,
    /// Where to bind.
    pub addr: SocketAddr,
    /// TCP only: connections start with a PROXY header.
    pub proxy_protocol: bool,
    /// TCP only: plain TURN-TCP, TLS, or either (decided on the first byte).
    pub tls: TlsMode,
}

/// Everything the runtime needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The core's configuration (credentials, listeners, relay addresses, policy...).
    pub core: Config,
    /// Listening sockets, in `ListenerId` order.
    pub listeners: Vec<ListenerSpec>,
    /// Buffer sizes of listeners and relay sockets.
    pub buffers: SocketBuffers,
    /// Where the JSON-lines event log goes, if anywhere.
    pub event_log: Option<PathBuf>,
    /// The TURN URLs a client is given (RFC 7065), in the order of the seed's rules.
    pub urls: Vec<String>,
    /// The first REST secret, which issues example credentials.
    pub rest_secret: Option<String>,
    /// Allocations in total (for the file-descriptor estimate).
    pub total_quota: u32,
    /// The URL rules of issued ICE configurations.
    pub ice: IceSettings,
    /// The HTTP API, if served.
    pub api: Option<ApiSettings>,
    /// Trace recording, when on.
    pub trace: Option<crate::trace_recorder::TraceSettings>,
    /// Event loops asked for (`workers`; 0: one per core). [`crate::workers`] decides how
    /// many run.
    pub workers: u32,
    /// Pause after a small poll round (`coalesce_us`), or none.
    pub coalesce: Option<core::time::Duration>,
    /// `io_uring`.
    pub io_uring: crate::config::IoUringMode,
    /// `pack_loops`.
    pub pack_loops: bool,
    /// The native TLS configuration (certificate, key, ALPN), when TLS is served.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a drain may last before the relay exits anyway (`drain_timeout_s`).
    pub drain_timeout: Duration,
}

impl Settings {
    /// Builds the settings from a checked file configuration. `file` names the source in
    /// errors.
    pub fn from_file(fc: &FileConfig, file: &str) -> Result<Self, ConfigError> {
        Self::from_file_with(fc, file, &crate::api::local_addrs::collect())
    }

    /// As [`Settings::from_file`], with the addresses found on the interfaces given
    /// (`interfaces`): used when the listen address is a wildcard and no address is
    /// configured, for the relayed address and the URLs.
    pub fn from_file_with(
        fc: &FileConfig,
        file: &str,
        interfaces: &[IpAddr],
    ) -> Result<Self, ConfigError> {
        let cidrs = |key: &'static str, list: &[String]| -> Result<Vec<IpNet>, ConfigError> {
            list.iter()
                .map(|s| {
                    s.parse::<IpNet>().map_err(|e| ConfigError {
                        file: file.to_string(),
                        line: None,
                        key: Some(key.to_string()),
                        message: format!("`{s}`: {}", e.0),
                    })
                })
                .collect()
        };

        let mut credentials = Credentials::new(&fc.realm);
        for (user, pass) in &fc.users {
            credentials.add_user(user, &pass.0);
        }
        for secret in &fc.static_auth_secret.0 {
            credentials.add_rest_secret(secret.0.as_bytes());
        }

        let v4_bind = IpAddr::V4(fc.listen_address);
        let v6_bind = IpAddr::V6(fc.ipv6_listen_address);
        let listeners = listener_specs(fc);
        let collected = collected_addresses(fc, interfaces);
        let advertised_v4 = if fc.ipv4_address.is_some() || !fc.listen_address.is_unspecified() {
            IpAddr::V4(fc.advertised_v4())
        } else {
            collected
                .iter()
                .copied()
                .find(IpAddr::is_ipv4)
                .ok_or_else(|| ConfigError {
                    file: file.to_string(),
                    line: None,
                    key: Some("ipv4_address".into()),
                    message: "required: `listen_address` is a wildcard and no IPv4 address was found on the interfaces".into(),
                })?
        };
        let mut core = Config::new(credentials, v4_bind);
        core.relay_v4 = Some(RelayAddress {
            bind: v4_bind,
            advertised: advertised_v4,
        });
        if fc.ipv6 {
            core.relay_v6 = Some(RelayAddress {
                bind: v6_bind,
                advertised: IpAddr::V6(fc.advertised_v6()),
            });
        }
        core.listeners = listeners
            .iter()
            .map(|l| ListenerConfig {
                id: l.id,
                transport: l.transport,
                local: l.addr,
                proxy_protocol: l.proxy_protocol,
            })
            .collect();
        core.relay_port_min = fc.relay_port_min;
        core.relay_port_max = fc.relay_port_max;
        core.relay_port_quarantine = Duration::from_millis(fc.relay_port_quarantine_ms);
        core.proxy_protocol_trusted = cidrs("proxy_protocol_trusted", &fc.proxy_protocol_trusted)?;
        core.peer_policy = PeerPolicy {
            allow: cidrs("allowed_peer_ip", &fc.allowed_peer_ip)?,
            deny: cidrs("denied_peer_ip", &fc.denied_peer_ip)?,
            allow_loopback: fc.allow_loopback_peers,
            own_addresses: own_addresses(fc),
        };
        core.strict_channel_numbers = fc.strict_channel_numbers;
        core.user_quota = fc.user_quota;
        core.total_quota = fc.total_quota;
        core.max_lifetime = Duration::from_secs(fc.max_allocation_lifetime_s);
        core.stream_idle_timeout = Duration::from_secs(fc.stream_idle_timeout_s);
        core.max_streams_per_source = fc.max_streams_per_source;
        core.max_bps = fc.max_bps;
        core.total_max_bps = fc.total_max_bps;
        core.unauth_amplification_factor = fc.unauth_amplification_factor;
        core.unauth_source_bytes_per_s = fc.unauth_source_bytes_per_s;
        core.unauth_node_bytes_per_s = fc.unauth_node_bytes_per_s;
        core.stream_max_auth_failures = fc.stream_max_auth_failures;
        if core.default_lifetime > core.max_lifetime {
            core.default_lifetime = core.max_lifetime;
        }
        // Unset: `Workers::start` draws one from the OS.
        core.node_secret = fc
            .node_secret
            .as_ref()
            .map(|s| turnpike_core::secret::NodeSecret::from_passphrase(s.0.as_bytes()));
        core.unauth_stream_buffer_bytes =
            usize::try_from(fc.unauth_stream_buffer_bytes).unwrap_or(usize::MAX);
        core.alternate_servers = alternate_servers(fc, &listeners);

        let tls = fc.load_tls().map_err(|e| ConfigError {
            file: file.to_string(),
            line: None,
            key: Some(e.key.to_string()),
            message: e.message,
        })?;
        let ice = ice_settings(fc, collected);
        let token = fc.api_token().map_err(|(key, message)| ConfigError {
            file: file.to_string(),
            line: None,
            key: Some(key.to_string()),
            message,
        })?;
        let api = fc.api_addr().map(|listen| ApiSettings {
            listen,
            token,
            loopback_only: fc.api_loopback_address_only,
            ttl_s: fc.ice_ttl_s,
            max_ttl_s: fc.ice_max_ttl_s,
            issuance_secret: fc.issuance_secret.as_ref().map(|s| s.0.as_bytes().to_vec()),
            udp_port: fc.turn_udp_port,
            dynamic_ports: (fc.turn_udp_dynamic_port_min, fc.turn_udp_dynamic_port_max),
            udp_binds: udp_binds(fc),
            optional: false,
            webhook_url: fc.event_webhook_url.clone(),
        });
        Ok(Settings {
            urls: turn_urls(&ice, fc.turn_udp_port),
            ice,
            api,
            core,
            listeners,
            buffers: SocketBuffers {
                receive: fc.socket_receive_buffer_size,
                send: fc.socket_send_buffer_size,
            },
            event_log: fc.event_log.clone(),
            rest_secret: fc.static_auth_secret.0.first().map(|s| s.0.clone()),
            total_quota: fc.total_quota,
            workers: fc.workers,
            tls,
            drain_timeout: Duration::from_secs(fc.drain_timeout_s),
            io_uring: fc.io_uring,
            pack_loops: fc.pack_loops,
            coalesce: (fc.coalesce_us > 0)
                .then(|| core::time::Duration::from_micros(u64::from(fc.coalesce_us))),
            trace: fc.trace_file.as_ref().map(|path| {
                crate::trace_recorder::TraceSettings::new(
                    path.clone(),
                    fc.trace_payloads,
                    fc.trace_max_bytes,
                )
            }),
        })
    }
}

/// The listeners of a configuration: UDP v4, TCP v4, TLS v4, then UDP v6, TCP v6, TLS v6
/// when enabled. TLS on the TCP port makes the TCP listener serve both.
pub fn listener_specs(fc: &FileConfig) -> Vec<ListenerSpec> {
    let mut binds = vec![IpAddr::V4(fc.listen_address)];
    if fc.ipv6 {
        binds.push(IpAddr::V6(fc.ipv6_listen_address));
    }
    let mut out = Vec::new();
    for ip in binds {
        let mut push = |transport, port, proxy_protocol, tls| {
            let id = ListenerId(out.len() as u32);
            out.push(ListenerSpec {
                id,
                transport,
                addr: SocketAddr::new(ip, port),
                proxy_protocol,
                tls,
            });
        };
        if let UdpPort::Fixed(port) = fc.turn_udp_port {
            push(Transport::Udp, port, false, TlsMode::Off);
        }
        let tls_port = fc.turn_tls_listen_port;
        let shared = fc.turn_tcp && tls_port == Some(fc.turn_tcp_listen_port);
        if fc.turn_tcp {
            let mode = if shared { TlsMode::Auto } else { TlsMode::Off };
            push(
                Transport::Tcp,
                fc.turn_tcp_listen_port,
                fc.proxy_protocol,
                mode,
            );
        }
        if let (Some(port), false) = (tls_port, shared) {
            push(Transport::Tcp, port, fc.proxy_protocol, TlsMode::On);
        }
    }
    out
}

/// The core's alternates (`[[alternate_servers]]`), per listener: its UDP and TCP
/// listeners offer each alternate's `turn_port`, its TLS listener the alternate's
/// `tls_port` with `tls_domain` as ALTERNATE-DOMAIN (RFC 8489 §10: the client comes back
/// "using the same transport protocol"). A TCP port that serves TLS too offers
/// `turn_port`, and the domain for its TLS clients. The core offers a client only the
/// alternates of its own address family.
pub fn alternate_servers(fc: &FileConfig, listeners: &[ListenerSpec]) -> Vec<AlternateServer> {
    let mut out = Vec::new();
    for l in listeners {
        for a in &fc.alternate_servers {
            let (port, domain) = match l.tls {
                TlsMode::On => match a.tls_port {
                    Some(p) => (p, a.tls_domain.clone()),
                    None => continue,
                },
                TlsMode::Auto => (a.turn_port, a.tls_domain.clone()),
                TlsMode::Off => (a.turn_port, None),
            };
            out.push(AlternateServer {
                listener: l.id,
                addr: SocketAddr::new(a.address, port),
                domain,
            });
        }
    }
    out
}

/// The relay's own addresses for the peer policy: advertised and bind addresses that are
/// not wildcards. Loopback is left out: whether loopback peers are allowed is
/// `allow_loopback_peers`'s call alone (tests relay between two clients on 127.0.0.1).
pub fn own_addresses(fc: &FileConfig) -> Vec<IpAddr> {
    let mut v = vec![
        IpAddr::V4(fc.listen_address),
        IpAddr::V4(fc.advertised_v4()),
    ];
    if fc.ipv6 {
        v.push(IpAddr::V6(fc.ipv6_listen_address));
        v.push(IpAddr::V6(fc.advertised_v6()));
    }
    v.retain(|ip| !ip.is_unspecified() && !ip.is_loopback());
    v.sort();
    v.dedup();
    v
}

/// TURN URLs (RFC 7065) of a client without overrides, for the start log and the banner:
/// the rules of [`crate::api::ice`]. With dynamic UDP ports the UDP URLs are left out
/// (each issuance gets its own port).
pub fn turn_urls(ice: &IceSettings, udp: UdpPort) -> Vec<String> {
    match udp {
        UdpPort::Fixed(port) => ice.urls(&Default::default(), port),
        UdpPort::Dynamic => {
            let no_udp = IceSettings {
                udp: false,
                ..ice.clone()
            };
            no_udp.urls(&Default::default(), 0)
        }
    }
}

/// The URL rules of a configuration, with the addresses collected at start.
pub fn ice_settings(fc: &FileConfig, collected: Vec<IpAddr>) -> IceSettings {
    IceSettings {
        udp: true,
        tcp: fc.turn_tcp,
        tcp_port: fc.url_tcp_port(),
        tls: fc.turn_tls || fc.native_tls(),
        tls_fqdn: fc.turn_tls_fqdn.clone(),
        fqdn: fc.turn_fqdn.clone(),
        tls_port: fc.url_tls_port(),
        tls_by_address: fc.native_tls(),
        ipv6: fc.ipv6,
        ipv4_address: fc.ipv4_address,
        ipv6_address: fc.ipv6_address,
        collected,
        tcp_only: fc.turn_tcp_only,
        tls_only: fc.turn_tls_only,
    }
}

/// The addresses the relay is reachable on when none is configured: the listen
/// addresses when they are specific, else those found on the interfaces.
pub fn collected_addresses(fc: &FileConfig, interfaces: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if fc.listen_address.is_unspecified() {
        out.extend(interfaces.iter().copied().filter(IpAddr::is_ipv4));
    } else {
        out.push(IpAddr::V4(fc.listen_address));
    }
    if fc.ipv6 {
        if fc.ipv6_listen_address.is_unspecified() {
            out.extend(interfaces.iter().copied().filter(IpAddr::is_ipv6));
        } else {
            out.push(IpAddr::V6(fc.ipv6_listen_address));
        }
    }
    out
}

/// Where dynamic UDP ports are bound: the IPv4 listen address, and the IPv6 one when on.
pub fn udp_binds(fc: &FileConfig) -> Vec<IpAddr> {
    let mut v = vec![IpAddr::V4(fc.listen_address)];
    if fc.ipv6 {
        v.push(IpAddr::V6(fc.ipv6_listen_address));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn dual() -> FileConfig {
        FileConfig {
            listen_address: Ipv4Addr::UNSPECIFIED,
            ipv4_address: Some(Ipv4Addr::new(192, 0, 2, 10)),
            ipv6: true,
            ipv6_address: Some("2001:db8::10".parse().unwrap()),
            turn_tcp_port: Some(443),
            proxy_protocol: true,
            turn_tls: true,
            turn_fqdn: Some("relay.example.com".into()),
            ..FileConfig::builtin_default("s".into())
        }
    }

    #[test]
    fn alternates_are_offered_per_listener_with_the_port_of_its_transport() {
        let text = "static_auth_secret = \"s\"\nalternate_servers = [\n\
                    { address = \"192.0.2.11\", tls_port = 443, tls_domain = \"b.example\" },\n\
                    { address = \"192.0.2.12\", turn_port = 3479 },\n]\n";
        let parsed = FileConfig::parse("t.toml", text).unwrap();
        let fc = FileConfig {
            turn_tls_listen_port: Some(5349),
            tls_cert_file: Some("c.pem".into()),
            tls_key_file: Some("k.pem".into()),
            alternate_servers: parsed.alternate_servers,
            ..FileConfig::builtin_default("s".into())
        };
        let alts = alternate_servers(&fc, &listener_specs(&fc));
        let got: Vec<(u32, String, Option<&str>)> = alts
            .iter()
            .map(|a| (a.listener.0, a.addr.to_string(), a.domain.as_deref()))
            .collect();
        // Listeners: 0 UDP 3478, 1 TCP 3478, 2 TLS 5349. The second relay serves no TLS.
        assert_eq!(
            got,
            vec![
                (0, "192.0.2.11:3478".into(), None),
                (0, "192.0.2.12:3479".into(), None),
                (1, "192.0.2.11:3478".into(), None),
                (1, "192.0.2.12:3479".into(), None),
                (2, "192.0.2.11:443".into(), Some("b.example")),
            ]
        );
        assert_eq!(fc.drain_timeout_s, crate::config::DEFAULT_DRAIN_TIMEOUT_S);
        let bad = "static_auth_secret = \"s\"\nalternate_servers = [{ address = \"0.0.0.0\" }]\n";
        let e = FileConfig::parse("t.toml", bad).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("alternate_servers"), "{e}");
    }

    #[test]
    fn native_tls_has_a_listener_and_turns_urls_at_its_port() {
        let own = FileConfig {
            turn_tls_listen_port: Some(5349),
            tls_cert_file: Some("c.pem".into()),
            tls_key_file: Some("k.pem".into()),
            ipv4_address: Some(std::net::Ipv4Addr::new(192, 0, 2, 10)),
            ..FileConfig::builtin_default("s".into())
        };
        let modes: Vec<(u16, TlsMode)> = listener_specs(&own)
            .iter()
            .filter(|l| l.transport == Transport::Tcp)
            .map(|l| (l.addr.port(), l.tls))
            .collect();
        assert_eq!(modes, vec![(3478, TlsMode::Off), (5349, TlsMode::On)]);
        let urls = turn_urls(&ice_settings(&own, Vec::new()), own.turn_udp_port);
        assert_eq!(
            urls.last().map(String::as_str),
            Some("turns:192.0.2.10:5349?transport=tcp")
        );
        // One port for both: the TCP listener detects TLS; the nginx layout's
        // turn_tls_port still decides the port written into URLs.
        let shared = FileConfig {
            turn_tls_listen_port: Some(3478),
            turn_tls_port: Some(443),
            turn_fqdn: Some("turn.example.com".into()),
            ..own
        };
        let modes: Vec<TlsMode> = listener_specs(&shared)
            .iter()
            .filter(|l| l.transport == Transport::Tcp)
            .map(|l| l.tls)
            .collect();
        assert_eq!(modes, vec![TlsMode::Auto]);
        let urls = turn_urls(&ice_settings(&shared, Vec::new()), shared.turn_udp_port);
        assert_eq!(
            urls.last().map(String::as_str),
            Some("turns:turn.example.com:443?transport=tcp")
        );
    }

    #[test]
    fn listeners_in_id_order() {
        let l = listener_specs(&dual());
        let got: Vec<(u32, Transport, String, bool)> = l
            .iter()
            .map(|s| (s.id.0, s.transport, s.addr.to_string(), s.proxy_protocol))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Transport::Udp, "0.0.0.0:3478".into(), false),
                (1, Transport::Tcp, "0.0.0.0:3478".into(), true),
                (2, Transport::Udp, "[::]:3478".into(), false),
                (3, Transport::Tcp, "[::]:3478".into(), true),
            ]
        );
        let only_udp = FileConfig {
            turn_tcp: false,
            ..FileConfig::builtin_default("s".into())
        };
        assert_eq!(listener_specs(&only_udp).len(), 1);
    }

    #[test]
    fn urls_follow_the_rules() {
        let urls = |fc: &FileConfig| {
            let s = Settings::from_file_with(fc, "t", &[]).unwrap();
            assert_eq!(s.urls, turn_urls(&s.ice, fc.turn_udp_port));
            s.urls
        };
        // turn_fqdn wins over the configured addresses (seed example 1).
        assert_eq!(
            urls(&dual()),
            vec![
                "turn:relay.example.com:3478?transport=udp",
                "turn:relay.example.com:443?transport=tcp",
                "turns:relay.example.com:443?transport=tcp",
            ]
        );
        let no_fqdn = FileConfig {
            turn_fqdn: None,
            turn_tls_fqdn: Some("tls.example.com".into()),
            ..dual()
        };
        assert_eq!(
            urls(&no_fqdn),
            vec![
                "turn:192.0.2.10:3478?transport=udp",
                "turn:192.0.2.10:443?transport=tcp",
                "turn:[2001:db8::10]:3478?transport=udp",
                "turn:[2001:db8::10]:443?transport=tcp",
                "turns:tls.example.com:443?transport=tcp",
            ]
        );
        let dynamic = FileConfig {
            turn_udp_port: UdpPort::Dynamic,
            ..no_fqdn
        };
        assert_eq!(urls(&dynamic).len(), 3, "no UDP URL before issuance");
        assert!(listener_specs(&dynamic)
            .iter()
            .all(|l| l.transport == Transport::Tcp));
        let d = FileConfig::builtin_default("s".into());
        assert_eq!(
            urls(&d),
            vec![
                "turn:127.0.0.1:3478?transport=udp",
                "turn:127.0.0.1:3478?transport=tcp"
            ]
        );
    }

    #[test]
    fn wildcard_without_address_uses_the_interfaces() {
        let fc = FileConfig {
            listen_address: Ipv4Addr::UNSPECIFIED,
            ..FileConfig::builtin_default("s".into())
        };
        let found: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "192.0.2.20".parse().unwrap(),
        ];
        let s = Settings::from_file_with(&fc, "t", &found).unwrap();
        assert_eq!(
            s.core.relay_v4.unwrap().advertised,
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))
        );
        assert_eq!(
            s.urls,
            vec![
                "turn:192.0.2.10:3478?transport=udp",
                "turn:192.0.2.10:3478?transport=tcp",
                "turn:192.0.2.20:3478?transport=udp",
                "turn:192.0.2.20:3478?transport=tcp",
            ]
        );
        let e = Settings::from_file_with(&fc, "t", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ipv4_address"));
    }

    #[test]
    fn own_addresses_skip_wildcards_and_loopback() {
        let ips = own_addresses(&dual());
        assert_eq!(
            ips,
            vec![
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
                IpAddr::V6("2001:db8::10".parse::<Ipv6Addr>().unwrap())
            ]
        );
        assert!(own_addresses(&FileConfig::builtin_default("s".into())).is_empty());
    }

    #[test]
    fn core_config_from_file() {
        // Needs the core's credential store and CIDR parser.
        let fc = FileConfig {
            relay_port_min: 40000,
            relay_port_max: 40010,
            max_allocation_lifetime_s: 300,
            denied_peer_ip: vec!["10.0.0.0/8".into()],
            stream_idle_timeout_s: 4,
            max_streams_per_source: 3,
            max_bps: 1000,
            total_max_bps: 5000,
            unauth_amplification_factor: 2,
            unauth_source_bytes_per_s: 4000,
            unauth_node_bytes_per_s: 8000,
            stream_max_auth_failures: 5,
            ..dual()
        };
        let s = Settings::from_file(&fc, "t.toml").unwrap();
        assert_eq!(s.core.listeners.len(), 4);
        assert_eq!(
            (s.core.relay_port_min, s.core.relay_port_max),
            (40000, 40010)
        );
        assert_eq!(s.core.max_lifetime, Duration::from_secs(300));
        assert_eq!(s.core.default_lifetime, Duration::from_secs(300));
        assert_eq!(s.core.peer_policy.deny.len(), 1);
        assert!(s.core.peer_policy.allow_loopback);
        assert_eq!(s.core.stream_idle_timeout, Duration::from_secs(4));
        assert_eq!(
            (
                s.core.max_streams_per_source,
                s.core.max_bps,
                s.core.total_max_bps
            ),
            (3, 1000, 5000)
        );
        assert_eq!(
            (
                s.core.unauth_amplification_factor,
                s.core.unauth_source_bytes_per_s,
                s.core.unauth_node_bytes_per_s,
                s.core.stream_max_auth_failures
            ),
            (2, 4000, 8000, 5)
        );
        let v4 = s.core.relay_v4.unwrap();
        assert_eq!(
            (v4.bind, v4.advertised),
            (
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))
            )
        );
        assert!(s.core.relay_v6.is_some());
        assert!(s.core.credentials.has_rest());
        assert_eq!(s.rest_secret.as_deref(), Some("s"));
    }
}
