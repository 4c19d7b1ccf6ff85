//! Issuing ICE configurations: the TURN URLs one client is given, and its one-time
//! username and credential.
//!
//! # URL rules
//!
//! One `turn:HOST:PORT?transport=udp` and one `turn:HOST:PORT?transport=tcp` per host
//! (RFC 7065 URIs), then `turns:FQDN:PORT?transport=tcp` when TLS is on. The hosts, by
//! priority:
//!
//! 1. the addresses the caller supplied for this client (`ipv4_address`, and
//!    `ipv6_address` when `ipv6 = true`);
//! 2. else `turn_fqdn`, one name for every family (its DNS records carry them);
//! 3. else the configured `ipv4_address` (and `ipv6_address` when `ipv6 = true`);
//! 4. else every address collected from the interfaces at start.
//!
//! The `turns:` name is the caller's `turn_tls_fqdn`, else the configured one, else
//! `turn_fqdn`; when the relay serves TLS itself (`turn_tls_listen_port`) and no name is
//! known, the `turn:` hosts (the certificate must then name those addresses). Its port is
//! `turn_tls_port`, else the native TLS port, else 443. The UDP port is the fixed `turn_udp_port`, or a port opened for this
//! issuance alone (`turn_udp_port = "dynamic"`). `turn_tcp_only` keeps only the TCP URLs,
//! `turn_tls_only` only the `turns:` URL (both: TCP and TLS).
//!
//! # Credentials
//!
//! Stateless where possible: the username is `<expiry-unix-s>:<random>` (plus
//! `:<label>` when the caller gave one) and the credential is
//! base64(HMAC-SHA1(issuance secret, username)) — the TURN REST scheme, signed with a
//! secret dedicated to issuance. Any relay holding the secret accepts the credential until
//! its expiry, across restarts, over UDP, TCP and TLS at once (a browser's parallel
//! attempts), and allocations opened with it live on through Refresh. One-time where it
//! matters: a dynamic UDP port exists for one issuance and is reserved for its username,
//! so it accepts no other credential; it dies with the process, which is why that part
//! is state.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use turnpike_core::auth::rest_password;

/// Firefox logs an error when an ICE server has more URLs than this.
pub const FIREFOX_MAX_URLS: usize = 5;
/// Longest label accepted.
pub const MAX_LABEL: usize = 64;

/// The configuration of issuance (from the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceSettings {
    /// Issue `turn:…?transport=udp` URLs.
    pub udp: bool,
    /// Issue `turn:…?transport=tcp` URLs.
    pub tcp: bool,
    /// The TCP port written into URLs.
    pub tcp_port: u16,
    /// Issue a `turns:` URL.
    pub tls: bool,
    /// Configured `turn_tls_fqdn`.
    pub tls_fqdn: Option<String>,
    /// Configured `turn_fqdn`.
    pub fqdn: Option<String>,
    /// The port of `turns:` URLs.
    pub tls_port: u16,
    /// The relay serves TLS itself: without a name, `turns:` URLs name the `turn:` hosts.
    pub tls_by_address: bool,
    /// Issue IPv6 URLs.
    pub ipv6: bool,
    /// Configured advertised IPv4 address.
    pub ipv4_address: Option<Ipv4Addr>,
    /// Configured advertised IPv6 address.
    pub ipv6_address: Option<Ipv6Addr>,
    /// Addresses collected from the interfaces at start.
    pub collected: Vec<IpAddr>,
    /// `turn_tcp_only`.
    pub tcp_only: bool,
    /// `turn_tls_only`.
    pub tls_only: bool,
}

/// What the caller may say about one client (the body of `POST /v1/ice-servers`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceRequest {
    /// Advertised IPv4 address for this client.
    pub ipv4_address: Option<Ipv4Addr>,
    /// Advertised IPv6 address for this client.
    pub ipv6_address: Option<Ipv6Addr>,
    /// Name for the `turns:` URL.
    pub turn_tls_fqdn: Option<String>,
    /// Validity of the credential, seconds.
    pub ttl: Option<u64>,
    /// Free label (e.g. the application's user id), part of the username.
    pub label: Option<String>,
}

/// A credential pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCredential {
    /// `<expiry>:<random>[:<label>]`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
    /// Expiry, unix seconds.
    pub expires_unix_s: u64,
}

impl IceSettings {
    /// True when the URLs include UDP (a dynamic port is needed only then).
    pub fn wants_udp(&self) -> bool {
        self.udp && !self.tcp_only && !self.tls_only
    }

    /// The URLs for a client, with `udp_port` the fixed or dynamic UDP port.
    pub fn urls(&self, req: &IceRequest, udp_port: u16) -> Vec<String> {
        let udp = self.wants_udp();
        let tcp = self.tcp && (!self.tls_only || self.tcp_only);
        let tls = self.tls && (!self.tcp_only || self.tls_only);
        let mut urls = Vec::new();
        for host in self.hosts(req) {
            if udp {
                urls.push(format!("turn:{host}:{udp_port}?transport=udp"));
            }
            if tcp {
                urls.push(format!("turn:{host}:{}?transport=tcp", self.tcp_port));
            }
        }
        if tls {
            let name = req
                .turn_tls_fqdn
                .as_ref()
                .or(self.tls_fqdn.as_ref())
                .or(self.fqdn.as_ref());
            if let Some(name) = name {
                urls.push(format!("turns:{name}:{}?transport=tcp", self.tls_port));
            } else if self.tls_by_address {
                for host in self.hosts(req) {
                    urls.push(format!("turns:{host}:{}?transport=tcp", self.tls_port));
                }
            }
        }
        urls
    }

    /// The hosts of `turn:` URLs, by the priority of the module documentation.
    pub fn hosts(&self, req: &IceRequest) -> Vec<String> {
        let pair = |v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>| {
            let mut out: Vec<IpAddr> = v4.into_iter().map(IpAddr::V4).collect();
            if self.ipv6 {
                out.extend(v6.map(IpAddr::V6));
            }
            out
        };
        let caller = pair(req.ipv4_address, req.ipv6_address);
        let ips = if !caller.is_empty() {
            caller
        } else if let Some(name) = &self.fqdn {
            return vec![name.clone()];
        } else {
            let configured = pair(self.ipv4_address, self.ipv6_address);
            if configured.is_empty() {
                self.collected
                    .iter()
                    .copied()
                    .filter(|ip| self.ipv6 || ip.is_ipv4())
                    .collect()
            } else {
                configured
            }
        };
        ips.iter().map(url_host).collect()
    }

    /// How many URLs a client without overrides gets (for the warning at start).
    pub fn url_count(&self) -> usize {
        self.urls(&IceRequest::default(), 1).len()
    }

    /// Warnings to log at start: verification-only modes, and too many URLs for Firefox.
    pub fn start_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.tcp_only {
            w.push("turn_tcp_only = true: clients get TURN-TCP URLs only; meant for verification, not production".to_string());
        }
        if self.tls_only {
            w.push("turn_tls_only = true: clients get TURN-TLS URLs only; meant for verification, not production".to_string());
        }
        let n = self.url_count();
        if n > FIREFOX_MAX_URLS {
            w.push(format!(
                "issued configurations carry {n} TURN URLs: Firefox logs an error when given more than {FIREFOX_MAX_URLS}"
            ));
        }
        w
    }
}

/// Checks a caller's request: label characters and length, FQDN syntax, ttl bounds.
/// `max_ttl_s` is the longest validity allowed.
pub fn check_request(req: &IceRequest, max_ttl_s: u64) -> Result<(), String> {
    if let Some(l) = &req.label {
        if l.is_empty() || l.len() > MAX_LABEL {
            return Err(format!("label: 1 to {MAX_LABEL} characters"));
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b))
        {
            return Err("label: only letters, digits and . _ - @ +".into());
        }
    }
    if let Some(t) = req.ttl {
        if t == 0 || t > max_ttl_s {
            return Err(format!("ttl: 1 to {max_ttl_s} seconds"));
        }
    }
    if let Some(n) = &req.turn_tls_fqdn {
        crate::config::check_host_name(n).map_err(|m| format!("turn_tls_fqdn: {m}"))?;
    }
    for ip in [
        req.ipv4_address.map(IpAddr::V4),
        req.ipv6_address.map(IpAddr::V6),
    ]
    .into_iter()
    .flatten()
    {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!("{ip} cannot be advertised"));
        }
    }
    Ok(())
}

/// A credential valid until `expires_unix_s`, made unique by `random`, signed with
/// `secret`.
pub fn issue_credential(
    secret: &[u8],
    expires_unix_s: u64,
    random: &[u8],
    label: Option<&str>,
) -> IssuedCredential {
    let mut username = format!("{expires_unix_s}:{}", URL_SAFE_NO_PAD.encode(random));
    if let Some(l) = label {
        username.push(':');
        username.push_str(l);
    }
    IssuedCredential {
        credential: rest_password(secret, &username),
        username,
        expires_unix_s,
    }
}

/// The label of an issued username (`<expiry>:<random>:<label>`), if it has one.
pub fn label_of(username: &str) -> Option<&str> {
    let mut parts = username.splitn(3, ':');
    let expiry = parts.next()?;
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parts.next()?;
    parts.next()
}

/// An address as the host part of a URL: IPv6 in brackets (RFC 3986 §3.2.2).
fn url_host(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's defaults: UDP and TCP on, TCP port 3478, no TLS, no address.
    fn defaults() -> IceSettings {
        IceSettings {
            udp: true,
            tcp: true,
            tcp_port: 3478,
            tls: false,
            tls_fqdn: None,
            fqdn: None,
            tls_port: 5349,
            tls_by_address: false,
            ipv6: false,
            ipv4_address: None,
            ipv6_address: None,
            collected: Vec::new(),
            tcp_only: false,
            tls_only: false,
        }
    }

    #[test]
    fn seed_example_1() {
        // ipv4_address = 192.0.2.10, ipv6 = false, turn_fqdn = turn_tls_fqdn =
        // sora-turn.example.com, TCP 3478, TLS 5349; the caller supplies turn_tls_fqdn;
        // the dynamic UDP port is 54321.
        let s = IceSettings {
            ipv4_address: Some(Ipv4Addr::new(192, 0, 2, 10)),
            fqdn: Some("sora-turn.example.com".into()),
            tls: true,
            tls_fqdn: Some("sora-turn.example.com".into()),
            tls_port: 5349,
            ..defaults()
        };
        let req = IceRequest {
            turn_tls_fqdn: Some("sora-turn.example.com".into()),
            ..IceRequest::default()
        };
        assert_eq!(
            s.urls(&req, 54321),
            vec![
                "turn:sora-turn.example.com:54321?transport=udp",
                "turn:sora-turn.example.com:3478?transport=tcp",
                "turns:sora-turn.example.com:5349?transport=tcp",
            ]
        );
    }

    #[test]
    fn seed_example_2() {
        // Everything default, collected addresses 192.0.2.10 and 192.0.2.20, nothing from
        // the caller; the dynamic UDP port is 54321.
        let s = IceSettings {
            collected: vec!["192.0.2.10".parse().unwrap(), "192.0.2.20".parse().unwrap()],
            ..defaults()
        };
        assert_eq!(
            s.urls(&IceRequest::default(), 54321),
            vec![
                "turn:192.0.2.10:54321?transport=udp",
                "turn:192.0.2.10:3478?transport=tcp",
                "turn:192.0.2.20:54321?transport=udp",
                "turn:192.0.2.20:3478?transport=tcp",
            ]
        );
    }

    #[test]
    fn caller_addresses_win_over_configuration() {
        let s = IceSettings {
            ipv6: true,
            ipv4_address: Some(Ipv4Addr::new(192, 0, 2, 10)),
            ipv6_address: Some("2001:db8::10".parse().unwrap()),
            fqdn: Some("relay.example.com".into()),
            tls: true,
            tls_fqdn: Some("tls.example.com".into()),
            collected: vec!["198.51.100.1".parse().unwrap()],
            ..defaults()
        };
        let req = IceRequest {
            ipv4_address: Some(Ipv4Addr::new(203, 0, 113, 5)),
            ipv6_address: Some("2001:db8::5".parse().unwrap()),
            turn_tls_fqdn: Some("edge.example.com".into()),
            ..IceRequest::default()
        };
        assert_eq!(
            s.urls(&req, 3478),
            vec![
                "turn:203.0.113.5:3478?transport=udp",
                "turn:203.0.113.5:3478?transport=tcp",
                "turn:[2001:db8::5]:3478?transport=udp",
                "turn:[2001:db8::5]:3478?transport=tcp",
                "turns:edge.example.com:5349?transport=tcp",
            ]
        );
        // Without the caller: turn_fqdn, and turn_tls_fqdn for turns:.
        assert_eq!(
            s.urls(&IceRequest::default(), 3478),
            vec![
                "turn:relay.example.com:3478?transport=udp",
                "turn:relay.example.com:3478?transport=tcp",
                "turns:tls.example.com:5349?transport=tcp",
            ]
        );
        // Without turn_fqdn: the configured pair, IPv6 included; turns: falls back to
        // turn_tls_fqdn.
        let s2 = IceSettings {
            fqdn: None,
            ..s.clone()
        };
        assert_eq!(
            s2.urls(&IceRequest::default(), 3478),
            vec![
                "turn:192.0.2.10:3478?transport=udp",
                "turn:192.0.2.10:3478?transport=tcp",
                "turn:[2001:db8::10]:3478?transport=udp",
                "turn:[2001:db8::10]:3478?transport=tcp",
                "turns:tls.example.com:5349?transport=tcp",
            ]
        );
        assert_eq!(s2.url_count(), 5);
        assert!(s2.start_warnings().is_empty());
    }

    #[test]
    fn tls_fqdn_falls_back_to_turn_fqdn() {
        let s = IceSettings {
            tls: true,
            fqdn: Some("relay.example.com".into()),
            ..defaults()
        };
        let urls = s.urls(&IceRequest::default(), 1);
        assert_eq!(
            urls.last().map(String::as_str),
            Some("turns:relay.example.com:5349?transport=tcp")
        );
    }

    #[test]
    fn ipv6_urls_only_when_enabled() {
        let mut s = IceSettings {
            collected: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            ..defaults()
        };
        assert_eq!(s.hosts(&IceRequest::default()), vec!["192.0.2.1"]);
        s.ipv6 = true;
        assert_eq!(
            s.hosts(&IceRequest::default()),
            vec!["192.0.2.1", "[2001:db8::1]"]
        );
        // A caller's IPv6 address is ignored when IPv6 is off.
        s.ipv6 = false;
        let req = IceRequest {
            ipv6_address: Some("2001:db8::9".parse().unwrap()),
            ..IceRequest::default()
        };
        assert_eq!(s.hosts(&req), vec!["192.0.2.1"]);
    }

    #[test]
    fn tcp_only_and_tls_only_restrict_the_urls() {
        let base = IceSettings {
            ipv4_address: Some(Ipv4Addr::new(192, 0, 2, 10)),
            tls: true,
            fqdn: Some("r.example.com".into()),
            ..defaults()
        };
        let s = IceSettings {
            fqdn: None,
            tls_fqdn: Some("r.example.com".into()),
            tcp_only: true,
            ..base.clone()
        };
        assert!(!s.wants_udp());
        assert_eq!(
            s.urls(&IceRequest::default(), 9),
            vec!["turn:192.0.2.10:3478?transport=tcp"]
        );
        let s = IceSettings {
            tls_only: true,
            ..base.clone()
        };
        assert_eq!(
            s.urls(&IceRequest::default(), 9),
            vec!["turns:r.example.com:5349?transport=tcp"]
        );
        let w = s.start_warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("turn_tls_only"));
        let both = IceSettings {
            tcp_only: true,
            tls_only: true,
            ..base
        };
        assert_eq!(
            both.urls(&IceRequest::default(), 9),
            vec![
                "turn:r.example.com:3478?transport=tcp",
                "turns:r.example.com:5349?transport=tcp"
            ]
        );
        assert_eq!(both.start_warnings().len(), 2);
    }

    #[test]
    fn more_than_five_urls_warns_about_firefox() {
        let s = IceSettings {
            collected: vec![
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
                "192.0.2.3".parse().unwrap(),
            ],
            ..defaults()
        };
        assert_eq!(s.url_count(), 6);
        let w = s.start_warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("Firefox"), "{w:?}");
    }

    #[test]
    fn credentials_are_rest_style_and_carry_the_label() {
        let c = issue_credential(b"issuer", 1_800_000_000, &[1, 2, 3, 4, 5, 6, 7, 8, 9], None);
        assert_eq!(c.username, "1800000000:AQIDBAUGBwgJ");
        assert_eq!(c.credential, rest_password(b"issuer", &c.username));
        assert_eq!(label_of(&c.username), None);
        let c = issue_credential(b"issuer", 1_800_000_000, &[0; 9], Some("user-42"));
        assert_eq!(c.username, "1800000000:AAAAAAAAAAAA:user-42");
        assert_eq!(label_of(&c.username), Some("user-42"));
        assert_eq!(label_of("alice"), None);
        assert_eq!(label_of("x:y:z"), None);
        assert_eq!(
            turnpike_core::auth::rest_expiry(&c.username),
            Some(1_800_000_000)
        );
    }

    #[test]
    fn requests_are_checked() {
        let ok = IceRequest {
            label: Some("a.b_c-d@e+f".into()),
            ttl: Some(60),
            turn_tls_fqdn: Some("x.example.com".into()),
            ..IceRequest::default()
        };
        assert_eq!(check_request(&ok, 3600), Ok(()));
        for bad in [
            IceRequest {
                label: Some("has:colon".into()),
                ..IceRequest::default()
            },
            IceRequest {
                label: Some(String::new()),
                ..IceRequest::default()
            },
            IceRequest {
                label: Some("x".repeat(MAX_LABEL + 1)),
                ..IceRequest::default()
            },
            IceRequest {
                ttl: Some(0),
                ..IceRequest::default()
            },
            IceRequest {
                ttl: Some(3601),
                ..IceRequest::default()
            },
            IceRequest {
                turn_tls_fqdn: Some("bad name".into()),
                ..IceRequest::default()
            },
            IceRequest {
                ipv4_address: Some(Ipv4Addr::UNSPECIFIED),
                ..IceRequest::default()
            },
        ] {
            assert!(check_request(&bad, 3600).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn native_tls_without_a_name_points_turns_at_the_addresses() {
        let s = IceSettings {
            tls: true,
            tls_by_address: true,
            ipv4_address: Some(Ipv4Addr::new(192, 0, 2, 10)),
            ..defaults()
        };
        let urls = s.urls(&IceRequest::default(), 3478);
        assert_eq!(
            urls.last().map(String::as_str),
            Some("turns:192.0.2.10:5349?transport=tcp")
        );
        // A name, when known, wins.
        let named = IceSettings {
            fqdn: Some("turn.example.com".into()),
            ..s
        };
        assert_eq!(
            named
                .urls(&IceRequest::default(), 3478)
                .last()
                .map(String::as_str),
            Some("turns:turn.example.com:5349?transport=tcp")
        );
    }
}
