//! The core [`Config`] as a trace records it: every field, with each secret replaced by a
//! keyed fingerprint.
//!
//! **How a replay authenticates.** The trace never holds a password or a REST secret. At
//! replay time the operator supplies them (the relay's own TOML file, or any file with the
//! same `users` and `static_auth_secret` keys); [`ConfigDescription::to_config`] checks
//! each against its fingerprint and refuses, naming the user or the secret's position,
//! when one is missing or wrong. With the right secrets the core computes the very same
//! MESSAGE-INTEGRITY values, so the replay's output digest matches byte for byte.
//! One-time credentials issued at run time are recorded the same way (fingerprint only);
//! the replayer recovers their passwords when they are derived from a supplied REST secret,
//! and otherwise reports which user it could not authenticate.
//!
//! A fingerprint is HMAC-SHA256 keyed with a random per-trace salt over a domain label,
//! the secret's kind and name, and the secret, truncated to 16 bytes. Like any verifier it
//! lets someone holding the trace test guesses offline, so weak passwords stay weak: treat
//! a trace as the confidential operational record it is (it also holds client addresses).

use super::codec::{Get, Put};
use super::TraceError;
use crate::auth::{Credentials, NonceKey, OneTimeCredential};
use crate::cidr::IpNet;
use crate::config::{Config, ListenerConfig, RelayAddress};
use crate::ids::{ListenerId, Transport};
use crate::node::NodePlace;
use crate::policy::PeerPolicy;
use core::time::Duration;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

/// A keyed fingerprint of a secret (16 bytes of HMAC-SHA256).
pub type Fingerprint = [u8; 16];

/// What kind of secret a fingerprint is of (part of the fingerprinted message).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SecretKind {
    /// A static user's password.
    User,
    /// A TURN REST shared secret.
    RestSecret,
    /// A one-time credential's password.
    OneTime,
    /// The nonce key.
    NonceKey,
    /// The node secret (format 3).
    NodeSecret,
}

/// The fingerprint of `secret` of kind `kind` named `name`, keyed with the trace's `salt`.
pub fn fingerprint(salt: &[u8; 16], kind: SecretKind, name: &str, secret: &[u8]) -> Fingerprint {
    let mut mac = match Hmac::<Sha256>::new_from_slice(salt) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(b"turnpike trace secret v1\0");
    mac.update(&[kind as u8, 0]);
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(secret);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(full.get(..16).unwrap_or(&[0; 16]));
    out
}

/// The secrets a replay is given (from the operator's configuration file).
#[derive(Clone, Debug, Default)]
pub struct ReplaySecrets {
    /// Static users: name and password.
    pub users: Vec<(String, String)>,
    /// REST shared secrets, any order.
    pub rest_secrets: Vec<Vec<u8>>,
    /// Nonce keys the replay can derive (not from the operator: in traces before format 3
    /// a loop after the first signed nonces with the key of loop 0's seed,
    /// `Server::nonce_key_of_seed`, which a
    /// replay of the node takes from loop 0's header). Used when the trace recorded an
    /// explicit nonce key whose fingerprint one of them matches.
    pub nonce_keys: Vec<NonceKey>,
    /// The node secret (`node_secret` in the operator's file), for traces of format 3.
    pub node_secret: Option<crate::secret::NodeSecret>,
}

/// Every field of a core [`Config`], secrets as fingerprints.
#[derive(Clone, Debug)]
pub struct ConfigDescription {
    /// The realm.
    pub realm: String,
    /// Static users, in name order, with the fingerprints of their passwords.
    pub users: Vec<(String, Fingerprint)>,
    /// REST secrets, in order, as fingerprints.
    pub rest_secrets: Vec<Fingerprint>,
    /// One-time credentials present at start: username, fingerprint, expiry, listener.
    pub one_time: Vec<OneTimeDescription>,
    /// `software`.
    pub software: Option<String>,
    /// Listeners: id, transport, local address, PROXY protocol.
    pub listeners: Vec<ListenerConfig>,
    /// IPv4 relay address (bind, advertised).
    pub relay_v4: Option<(IpAddr, IpAddr)>,
    /// IPv6 relay address (bind, advertised).
    pub relay_v6: Option<(IpAddr, IpAddr)>,
    /// Relay port range.
    pub relay_ports: (u16, u16),
    /// Port quarantine.
    pub relay_port_quarantine: Duration,
    /// Bind attempts before 508.
    pub relay_bind_attempts: u32,
    /// Peer policy: allow, deny, loopback, own addresses.
    pub peer_allow: Vec<IpNet>,
    /// Denied peer ranges.
    pub peer_deny: Vec<IpNet>,
    /// Loopback peers allowed.
    pub allow_loopback: bool,
    /// The relay's own addresses.
    pub own_addresses: Vec<IpAddr>,
    /// Trusted PROXY sources.
    pub proxy_protocol_trusted: Vec<IpNet>,
    /// `proxy_header_max_len`.
    pub proxy_header_max_len: u64,
    /// `proxy_header_timeout`.
    pub proxy_header_timeout: Duration,
    /// `default_lifetime`.
    pub default_lifetime: Duration,
    /// `max_lifetime`.
    pub max_lifetime: Duration,
    /// `permission_lifetime`.
    pub permission_lifetime: Duration,
    /// `channel_lifetime`.
    pub channel_lifetime: Duration,
    /// `nonce_lifetime`.
    pub nonce_lifetime: Duration,
    /// `rest_max_validity`.
    pub rest_max_validity: Duration,
    /// Fingerprint of an explicit nonce key (None: derived from the seed).
    pub nonce_key: Option<Fingerprint>,
    /// `security_features`.
    pub security_features: bool,
    /// `user_quota`.
    pub user_quota: u32,
    /// `total_quota`.
    pub total_quota: u32,
    /// `max_permissions`.
    pub max_permissions: u32,
    /// `strict_channel_numbers`.
    pub strict_channel_numbers: bool,
    /// `max_channels`.
    pub max_channels: u32,
    /// `max_streams`.
    pub max_streams: u32,
    /// `max_stream_frame`.
    pub max_stream_frame: u64,
    /// `stream_idle_timeout`.
    pub stream_idle_timeout: Duration,
    /// `max_queued_outputs`.
    pub max_queued_outputs: u64,
    /// `node`: the core's place among the loops of its node (format 2; version 1 files
    /// read as [`NodePlace::SOLE`]).
    pub node: NodePlace,
    /// `unauth_amplification_factor`.
    pub unauth_amplification_factor: u32,
    /// `unauth_source_bytes_per_s`.
    pub unauth_source_bytes_per_s: u64,
    /// `unauth_node_bytes_per_s`.
    pub unauth_node_bytes_per_s: u64,
    /// `stream_max_auth_failures`.
    pub stream_max_auth_failures: u32,
    /// Fingerprint of the node secret (format 3). None: the core drew its secrets from
    /// the seed (every trace before format 3, and simulations).
    pub node_secret: Option<Fingerprint>,
    /// `unauth_stream_buffer_bytes` (format 3; older traces read the default).
    pub unauth_stream_buffer_bytes: u64,
    /// `alternate_servers` (format 3, last and only when there are some: older traces
    /// read none).
    pub alternate_servers: Vec<crate::config::AlternateServer>,
}

/// What the slots of the replaced packet budget hold (its old defaults).
const LEGACY_UNAUTH_RATE_PER_S: u32 = 20;
const LEGACY_UNAUTH_BURST: u32 = 40;

/// A one-time credential as recorded: everything but the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimeDescription {
    /// The username.
    pub username: String,
    /// Fingerprint of the password.
    pub password: Fingerprint,
    /// Wall-clock expiry, unix seconds.
    pub expires_unix_s: u64,
    /// The listener it is bound to, if any.
    pub listener: Option<u32>,
}

impl ConfigDescription {
    /// Describes `c`, fingerprinting its secrets with `salt`.
    pub fn of(c: &Config, salt: &[u8; 16]) -> Self {
        let cr = &c.credentials;
        ConfigDescription {
            realm: cr.realm().to_owned(),
            users: cr
                .users()
                .map(|(u, p)| {
                    (
                        u.to_owned(),
                        fingerprint(salt, SecretKind::User, u, p.as_bytes()),
                    )
                })
                .collect(),
            rest_secrets: cr
                .rest_secrets()
                .map(|s| fingerprint(salt, SecretKind::RestSecret, "", s))
                .collect(),
            one_time: cr
                .one_time()
                .map(|(u, o)| OneTimeDescription::of(salt, u, o))
                .collect(),
            software: c.software.clone(),
            listeners: c.listeners.clone(),
            relay_v4: c.relay_v4.map(|r| (r.bind, r.advertised)),
            relay_v6: c.relay_v6.map(|r| (r.bind, r.advertised)),
            relay_ports: (c.relay_port_min, c.relay_port_max),
            relay_port_quarantine: c.relay_port_quarantine,
            relay_bind_attempts: c.relay_bind_attempts,
            peer_allow: c.peer_policy.allow.clone(),
            peer_deny: c.peer_policy.deny.clone(),
            allow_loopback: c.peer_policy.allow_loopback,
            own_addresses: c.peer_policy.own_addresses.clone(),
            proxy_protocol_trusted: c.proxy_protocol_trusted.clone(),
            proxy_header_max_len: c.proxy_header_max_len as u64,
            proxy_header_timeout: c.proxy_header_timeout,
            default_lifetime: c.default_lifetime,
            max_lifetime: c.max_lifetime,
            permission_lifetime: c.permission_lifetime,
            channel_lifetime: c.channel_lifetime,
            nonce_lifetime: c.nonce_lifetime,
            rest_max_validity: c.rest_max_validity,
            nonce_key: c
                .nonce_key
                .as_ref()
                .map(|k| fingerprint(salt, SecretKind::NonceKey, "", &k.0)),
            security_features: c.security_features,
            user_quota: c.user_quota,
            total_quota: c.total_quota,
            max_permissions: c.max_permissions,
            strict_channel_numbers: c.strict_channel_numbers,
            max_channels: c.max_channels,
            max_streams: c.max_streams,
            max_stream_frame: c.max_stream_frame as u64,
            stream_idle_timeout: c.stream_idle_timeout,
            max_queued_outputs: c.max_queued_outputs as u64,
            node: c.node,
            unauth_amplification_factor: c.unauth_amplification_factor,
            unauth_source_bytes_per_s: c.unauth_source_bytes_per_s,
            unauth_node_bytes_per_s: c.unauth_node_bytes_per_s,
            stream_max_auth_failures: c.stream_max_auth_failures,
            node_secret: c
                .node_secret
                .as_ref()
                .map(|k| fingerprint(salt, SecretKind::NodeSecret, "", &k.0)),
            unauth_stream_buffer_bytes: c.unauth_stream_buffer_bytes as u64,
            alternate_servers: c.alternate_servers.clone(),
        }
    }

    /// The configuration to replay with: this description, with the secrets from
    /// `secrets`, each checked against its fingerprint (keyed with `salt`).
    pub fn to_config(
        &self,
        salt: &[u8; 16],
        secrets: &ReplaySecrets,
    ) -> Result<Config, TraceError> {
        let mut cr = Credentials::new(&self.realm);
        for (user, fp) in &self.users {
            let pw = secrets
                .users
                .iter()
                .find(|(u, _)| u == user)
                .map(|(_, p)| p)
                .ok_or_else(|| {
                    TraceError::Secrets(format!(
                        "the trace has static user `{user}`; supply its password (`users` in the config file)"
                    ))
                })?;
            if fingerprint(salt, SecretKind::User, user, pw.as_bytes()) != *fp {
                return Err(TraceError::Secrets(format!(
                    "the password supplied for user `{user}` is not the one the trace was recorded with"
                )));
            }
            cr.add_user(user, pw);
        }
        for (i, fp) in self.rest_secrets.iter().enumerate() {
            let s = secrets
                .rest_secrets
                .iter()
                .find(|s| fingerprint(salt, SecretKind::RestSecret, "", s) == *fp)
                .ok_or_else(|| {
                    TraceError::Secrets(format!(
                        "REST secret #{} of the trace is not among the supplied `static_auth_secret` values",
                        i + 1
                    ))
                })?;
            cr.add_rest_secret(s);
        }
        for o in &self.one_time {
            let password = o.recover(salt, secrets).ok_or_else(|| {
                TraceError::Secrets(format!(
                    "one-time credential `{}` cannot be recovered from the supplied secrets",
                    o.username
                ))
            })?;
            cr.insert_one_time(&o.username, o.credential(password));
        }
        let nonce_key = match &self.nonce_key {
            None => None,
            Some(fp) => Some(
                secrets
                    .nonce_keys
                    .iter()
                    .find(|k| fingerprint(salt, SecretKind::NonceKey, "", &k.0) == *fp)
                    .cloned()
                    .ok_or_else(|| {
                        TraceError::Secrets(
                            "the trace was recorded with an explicit nonce key, which a replay cannot supply (a loop after the first takes loop 0's: replay the node from loop 0's file)"
                                .into(),
                        )
                    })?,
            ),
        };
        let node_secret = match &self.node_secret {
            None => None,
            Some(fp) => match &secrets.node_secret {
                None => {
                    return Err(TraceError::Secrets(
                        "the trace was recorded with a node secret; supply it (`node_secret` in the config file): without it the nonces, relay ports and reservation tokens would all differ from the first request on"
                            .into(),
                    ))
                }
                Some(k) if fingerprint(salt, SecretKind::NodeSecret, "", &k.0) != *fp => {
                    return Err(TraceError::Secrets(
                        "the `node_secret` supplied is not the one the trace was recorded with (nonces, relay ports and reservation tokens would differ); a relay that drew its secret at random (no `node_secret` set) cannot be replayed"
                            .into(),
                    ))
                }
                Some(k) => Some(k.clone()),
            },
        };
        let mut c = Config::new(cr, IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        c.node_secret = node_secret;
        c.unauth_stream_buffer_bytes = to_usize(self.unauth_stream_buffer_bytes)?;
        c.alternate_servers.clone_from(&self.alternate_servers);
        c.software = self.software.clone();
        c.listeners = self.listeners.clone();
        let relay = |r: Option<(IpAddr, IpAddr)>| {
            r.map(|(bind, advertised)| RelayAddress { bind, advertised })
        };
        c.relay_v4 = relay(self.relay_v4);
        c.relay_v6 = relay(self.relay_v6);
        (c.relay_port_min, c.relay_port_max) = self.relay_ports;
        c.relay_port_quarantine = self.relay_port_quarantine;
        c.relay_bind_attempts = self.relay_bind_attempts;
        c.peer_policy = PeerPolicy {
            allow: self.peer_allow.clone(),
            deny: self.peer_deny.clone(),
            allow_loopback: self.allow_loopback,
            own_addresses: self.own_addresses.clone(),
        };
        c.proxy_protocol_trusted = self.proxy_protocol_trusted.clone();
        c.proxy_header_max_len = to_usize(self.proxy_header_max_len)?;
        c.proxy_header_timeout = self.proxy_header_timeout;
        c.default_lifetime = self.default_lifetime;
        c.max_lifetime = self.max_lifetime;
        c.permission_lifetime = self.permission_lifetime;
        c.channel_lifetime = self.channel_lifetime;
        c.nonce_lifetime = self.nonce_lifetime;
        c.rest_max_validity = self.rest_max_validity;
        c.nonce_key = nonce_key;
        c.security_features = self.security_features;
        c.user_quota = self.user_quota;
        c.total_quota = self.total_quota;
        c.max_permissions = self.max_permissions;
        c.strict_channel_numbers = self.strict_channel_numbers;
        c.max_channels = self.max_channels;
        c.max_streams = self.max_streams;
        c.max_stream_frame = to_usize(self.max_stream_frame)?;
        c.stream_idle_timeout = self.stream_idle_timeout;
        c.max_queued_outputs = to_usize(self.max_queued_outputs)?;
        c.node = self.node;
        c.unauth_amplification_factor = self.unauth_amplification_factor;
        c.unauth_source_bytes_per_s = self.unauth_source_bytes_per_s;
        c.unauth_node_bytes_per_s = self.unauth_node_bytes_per_s;
        c.stream_max_auth_failures = self.stream_max_auth_failures;
        Ok(c)
    }

    /// Appends the description in format `version` (`node` from version 2 on).
    pub(crate) fn encode(&self, p: &mut Put<'_>, version: u16) {
        p.str(&self.realm);
        put_secrets(p, &self.users, &self.rest_secrets);
        p.len(self.one_time.len());
        for o in &self.one_time {
            o.encode(p);
        }
        p.opt_str(self.software.as_deref());
        p.len(self.listeners.len());
        for l in &self.listeners {
            p.u32(l.id.0);
            p.u8(transport_code(l.transport));
            p.addr(l.local);
            p.bool(l.proxy_protocol);
        }
        for r in [self.relay_v4, self.relay_v6] {
            match r {
                Some((b, a)) => {
                    p.u8(1);
                    p.ip(b);
                    p.ip(a);
                }
                None => p.u8(0),
            }
        }
        p.u16(self.relay_ports.0);
        p.u16(self.relay_ports.1);
        p.duration_ns(self.relay_port_quarantine);
        p.u32(self.relay_bind_attempts);
        nets(p, &self.peer_allow);
        nets(p, &self.peer_deny);
        p.bool(self.allow_loopback);
        p.len(self.own_addresses.len());
        for ip in &self.own_addresses {
            p.ip(*ip);
        }
        nets(p, &self.proxy_protocol_trusted);
        p.u64(self.proxy_header_max_len);
        for d in [
            self.proxy_header_timeout,
            self.default_lifetime,
            self.max_lifetime,
            self.permission_lifetime,
            self.channel_lifetime,
            self.nonce_lifetime,
            self.rest_max_validity,
        ] {
            p.duration_ns(d);
        }
        match &self.nonce_key {
            Some(fp) => {
                p.u8(1);
                p.raw(fp);
            }
            None => p.u8(0),
        }
        p.bool(self.security_features);
        p.u32(self.user_quota);
        p.u32(self.total_quota);
        p.u32(self.max_permissions);
        p.bool(self.strict_channel_numbers);
        p.u32(self.max_channels);
        p.u32(self.max_streams);
        p.u64(self.max_stream_frame);
        p.duration_ns(self.stream_idle_timeout);
        // The two slots of the packet budget that the anti-amplification limits replaced
        // (`unauth_rate_per_s`, `unauth_burst`), with the values it always had, so that
        // the format is unchanged.
        p.u32(LEGACY_UNAUTH_RATE_PER_S);
        p.u32(LEGACY_UNAUTH_BURST);
        p.u64(self.max_queued_outputs);
        if version >= 2 {
            super::put_place(p, self.node);
            // The anti-amplification limits (format 2), last and only when they are not
            // the defaults: a trace of a default configuration is what it was before them.
            let d = Config::new(Credentials::new("-"), IpAddr::from([0, 0, 0, 0]));
            let limits = (
                self.unauth_amplification_factor,
                self.unauth_source_bytes_per_s,
                self.unauth_node_bytes_per_s,
                self.stream_max_auth_failures,
            );
            let defaults = (
                d.unauth_amplification_factor,
                d.unauth_source_bytes_per_s,
                d.unauth_node_bytes_per_s,
                d.stream_max_auth_failures,
            );
            // Format 3 always writes them, so that the node secret can follow.
            if version >= 3 || limits != defaults {
                p.u32(limits.0);
                p.u64(limits.1);
                p.u64(limits.2);
                p.u32(limits.3);
            }
        }
        if version >= 3 {
            match &self.node_secret {
                Some(fp) => {
                    p.u8(1);
                    p.raw(fp);
                }
                None => p.u8(0),
            }
            p.u64(self.unauth_stream_buffer_bytes);
            if !self.alternate_servers.is_empty() {
                p.len(self.alternate_servers.len());
                for a in &self.alternate_servers {
                    p.u32(a.listener.0);
                    p.addr(a.addr);
                    p.opt_str(a.domain.as_deref());
                }
            }
        }
    }

    /// Reads what [`ConfigDescription::encode`] wrote in format `version`.
    pub(crate) fn decode(g: &mut Get<'_>, version: u16) -> Result<Self, TraceError> {
        let realm = g.str()?.to_owned();
        let (users, rest_secrets) = get_secrets(g)?;
        let n = g.count(29)?;
        let mut one_time = Vec::with_capacity(n);
        for _ in 0..n {
            one_time.push(OneTimeDescription::decode(g)?);
        }
        let software = g.opt_str()?.map(str::to_owned);
        let n = g.count(13)?;
        let mut listeners = Vec::with_capacity(n);
        for _ in 0..n {
            listeners.push(ListenerConfig {
                id: ListenerId(g.u32()?),
                transport: transport_of(g.u8()?)?,
                local: g.addr()?,
                proxy_protocol: g.bool()?,
            });
        }
        let mut relay = || -> Result<Option<(IpAddr, IpAddr)>, TraceError> {
            Ok(if g.bool()? {
                Some((g.ip()?, g.ip()?))
            } else {
                None
            })
        };
        let relay_v4 = relay()?;
        let relay_v6 = relay()?;
        let relay_ports = (g.u16()?, g.u16()?);
        let relay_port_quarantine = g.duration_ns()?;
        let relay_bind_attempts = g.u32()?;
        let peer_allow = read_nets(g)?;
        let peer_deny = read_nets(g)?;
        let allow_loopback = g.bool()?;
        let n = g.count(5)?;
        let mut own_addresses = Vec::with_capacity(n);
        for _ in 0..n {
            own_addresses.push(g.ip()?);
        }
        let proxy_protocol_trusted = read_nets(g)?;
        let proxy_header_max_len = g.u64()?;
        let mut d = [Duration::ZERO; 7];
        for x in &mut d {
            *x = g.duration_ns()?;
        }
        let nonce_key = if g.bool()? { Some(g.array()?) } else { None };
        let security_features = g.bool()?;
        let quotas = [g.u32()?, g.u32()?, g.u32()?];
        let strict_channel_numbers = g.bool()?;
        let streams = [g.u32()?, g.u32()?];
        let max_stream_frame = g.u64()?;
        let stream_idle_timeout = g.duration_ns()?;
        // The replaced packet budget's two slots.
        let _ = (g.u32()?, g.u32()?);
        let max_queued_outputs = g.u64()?;
        let place = if version >= 2 {
            super::get_place(g)?
        } else {
            NodePlace::SOLE
        };
        // Absent: the defaults (and traces written before the limits replay with them).
        let defaults = Config::new(Credentials::new("-"), IpAddr::from([0, 0, 0, 0]));
        let (factor, source, node, stream_failures) =
            if version < 2 || (version == 2 && g.is_empty()) {
                (
                    defaults.unauth_amplification_factor,
                    defaults.unauth_source_bytes_per_s,
                    defaults.unauth_node_bytes_per_s,
                    defaults.stream_max_auth_failures,
                )
            } else {
                (g.u32()?, g.u64()?, g.u64()?, g.u32()?)
            };
        let node_secret = if version >= 3 && g.bool()? {
            Some(g.array()?)
        } else {
            None
        };
        let unauth_stream_buffer_bytes = if version >= 3 {
            g.u64()?
        } else {
            defaults.unauth_stream_buffer_bytes as u64
        };
        let mut alternate_servers = Vec::new();
        if version >= 3 && !g.is_empty() {
            let n = g.count(7)?;
            for _ in 0..n {
                alternate_servers.push(crate::config::AlternateServer {
                    listener: ListenerId(g.u32()?),
                    addr: g.addr()?,
                    domain: g.opt_str()?.map(str::to_owned),
                });
            }
        }
        Ok(ConfigDescription {
            realm,
            users,
            rest_secrets,
            one_time,
            software,
            listeners,
            relay_v4,
            relay_v6,
            relay_ports,
            relay_port_quarantine,
            relay_bind_attempts,
            peer_allow,
            peer_deny,
            allow_loopback,
            own_addresses,
            proxy_protocol_trusted,
            proxy_header_max_len,
            proxy_header_timeout: d[0],
            default_lifetime: d[1],
            max_lifetime: d[2],
            permission_lifetime: d[3],
            channel_lifetime: d[4],
            nonce_lifetime: d[5],
            rest_max_validity: d[6],
            nonce_key,
            security_features,
            user_quota: quotas[0],
            total_quota: quotas[1],
            max_permissions: quotas[2],
            strict_channel_numbers,
            max_channels: streams[0],
            max_streams: streams[1],
            max_stream_frame,
            stream_idle_timeout,
            max_queued_outputs,
            node: place,
            unauth_amplification_factor: factor,
            unauth_source_bytes_per_s: source,
            unauth_node_bytes_per_s: node,
            stream_max_auth_failures: stream_failures,
            node_secret,
            unauth_stream_buffer_bytes,
            alternate_servers,
        })
    }
}

impl OneTimeDescription {
    /// Describes one-time credential `cred` of `username`.
    pub fn of(salt: &[u8; 16], username: &str, cred: &OneTimeCredential) -> Self {
        OneTimeDescription {
            username: username.to_owned(),
            password: fingerprint(
                salt,
                SecretKind::OneTime,
                username,
                cred.password.as_bytes(),
            ),
            expires_unix_s: cred.expires_unix_s,
            listener: cred.listener.map(|l| l.0),
        }
    }

    /// The password, if one of the supplied REST secrets derives it (the REST scheme over
    /// the username) or a static user of that name has it.
    pub fn recover(&self, salt: &[u8; 16], secrets: &ReplaySecrets) -> Option<String> {
        let check = |pw: &str| {
            fingerprint(salt, SecretKind::OneTime, &self.username, pw.as_bytes()) == self.password
        };
        secrets
            .rest_secrets
            .iter()
            .map(|s| crate::auth::rest_password(s, &self.username))
            .chain(
                secrets
                    .users
                    .iter()
                    .filter(|(u, _)| *u == self.username)
                    .map(|(_, p)| p.clone()),
            )
            .find(|pw| check(pw))
    }

    /// The credential with `password`.
    pub fn credential(&self, password: String) -> OneTimeCredential {
        OneTimeCredential {
            password,
            expires_unix_s: self.expires_unix_s,
            listener: self.listener.map(ListenerId),
        }
    }

    pub(crate) fn encode(&self, p: &mut Put<'_>) {
        p.str(&self.username);
        p.raw(&self.password);
        p.u64(self.expires_unix_s);
        match self.listener {
            Some(l) => {
                p.u8(1);
                p.u32(l);
            }
            None => p.u8(0),
        }
    }

    pub(crate) fn decode(g: &mut Get<'_>) -> Result<Self, TraceError> {
        Ok(OneTimeDescription {
            username: g.str()?.to_owned(),
            password: g.array()?,
            expires_unix_s: g.u64()?,
            listener: if g.bool()? { Some(g.u32()?) } else { None },
        })
    }
}

fn to_usize(v: u64) -> Result<usize, TraceError> {
    usize::try_from(v).map_err(|_| TraceError::Malformed(format!("{v} does not fit this machine")))
}

pub(crate) fn transport_code(t: Transport) -> u8 {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

pub(crate) fn transport_of(b: u8) -> Result<Transport, TraceError> {
    match b {
        0 => Ok(Transport::Udp),
        1 => Ok(Transport::Tcp),
        _ => Err(TraceError::Malformed(format!("transport {b}"))),
    }
}

/// Static users with their password fingerprints, then REST secret fingerprints.
pub(super) fn put_secrets(p: &mut Put<'_>, users: &[(String, Fingerprint)], rest: &[Fingerprint]) {
    p.len(users.len());
    for (u, fp) in users {
        p.str(u);
        p.raw(fp);
    }
    p.len(rest.len());
    for fp in rest {
        p.raw(fp);
    }
}

/// What [`put_secrets`] wrote.
pub(super) type Secrets = (Vec<(String, Fingerprint)>, Vec<Fingerprint>);

/// Reads what [`put_secrets`] wrote.
pub(super) fn get_secrets(g: &mut Get<'_>) -> Result<Secrets, TraceError> {
    let n = g.count(20)?;
    let mut users = Vec::with_capacity(n);
    for _ in 0..n {
        users.push((g.str()?.to_owned(), g.array()?));
    }
    let n = g.count(16)?;
    let mut rest_secrets = Vec::with_capacity(n);
    for _ in 0..n {
        rest_secrets.push(g.array()?);
    }
    Ok((users, rest_secrets))
}

pub(super) fn nets(p: &mut Put<'_>, list: &[IpNet]) {
    p.len(list.len());
    for n in list {
        p.ip(n.addr());
        p.u8(n.prefix());
    }
}

pub(super) fn read_nets(g: &mut Get<'_>) -> Result<Vec<IpNet>, TraceError> {
    let n = g.count(6)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let ip = g.ip()?;
        let prefix = g.u8()?;
        v.push(
            IpNet::new(ip, prefix)
                .ok_or_else(|| TraceError::Malformed(format!("network {ip}/{prefix}")))?,
        );
    }
    Ok(v)
}
