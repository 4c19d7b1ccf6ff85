//! A turnpike server host: a node of one or more event loops, each running the production
//! core, driven exactly as the runtime drives it (feed one input, drain every output, arm
//! the next timeout), on virtual sockets.
//!
//! With several loops ([`crate::node`]) a datagram to a listener and a new connection go
//! to the loop the 4-tuple hashes to, a relayed datagram to the loop that bound the relay
//! socket, a stream's bytes to the loop that accepted it; a core's `Output::ToLoop` is an
//! event of the run's queue, delivered to the addressed core after a virtual latency.
//! Dynamic listeners (one per issued credential) belong to loop 0, as in the runtime.
//!
//! A native TLS listener (`tls = true`) terminates the modelled handshake ([`crate::tls`])
//! in the host, as the runtime does: the core is told of the stream when it is accepted
//! and sees only plaintext; a PROXY header in front (a load balancer without TLS) goes to
//! the core as it is, then the handshake; on a port shared with plain TURN-TCP the first
//! byte decides. A failed handshake (refused, not TLS, past the byte or time bound) closes
//! the stream for the core too, and is counted ([`TlsCounts`]).
//!
//! Configuration reloads (child module `reload`) and the host's life,
//! its drain by the runtime's exit rule, exit and fresh process (child modules
//! `lifecycle` and `drain_reports`), live in files of their own.
//!
//! Relay sockets live in a virtual port table: a bind fails with AddrInUse when another
//! process holds the port or a fault says so, and with `Other` while file descriptors are
//! exhausted (when new streams are refused too).

mod drain_reports;
mod lifecycle;
mod reload;

use crate::faults::Control;
use crate::fleet::{self, Life};
use crate::host::Cx;
use crate::link::chance;
use crate::net::{Ev, Side, StreamId};
use crate::node::{message_latency, Cores, InFlight, LoopHash};
use crate::scenario::ServerSpec;
use crate::tls::{Failure, ServerHandshake, Step, TlsMode, HANDSHAKE_MAX_BYTES, HANDSHAKE_TIMEOUT};
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use turnpike_core::auth::{rest_password, Credentials};
use turnpike_core::cidr::IpNet;
use turnpike_core::config::{ListenerConfig, RelayAddress, Reloadable};
use turnpike_core::node::{LoopId, LoopMsg};
use turnpike_core::proxy_protocol::{self, ProxyParse};
use turnpike_core::server::{BindError, Stats};
use turnpike_core::{
    AllocationId, Config, ConnId, Event, Forward, Instant, ListenerId, Output, RelayId, Server,
    Transport, HEADROOM, TAILROOM,
};

/// Most outputs drained after one input; past it the core is looping.
pub const MAX_OUTPUTS_PER_INPUT: usize = 1_000_000;

/// One listener of the host.
#[derive(Clone, Copy, Debug)]
pub struct Listener {
    /// The core's id for it.
    pub id: ListenerId,
    /// UDP or TCP.
    pub transport: Transport,
    /// Port (on every address of the host).
    pub port: u16,
    /// Expects a PROXY header.
    pub proxy: bool,
    /// Native TLS.
    pub tls: TlsMode,
    /// Round trips of its TLS handshake.
    pub rtts: u32,
}

/// Native TLS handshakes of a host.
#[derive(Clone, Debug, Default)]
pub struct TlsCounts {
    /// Completed.
    pub handshakes: u64,
    /// Failed, by reason.
    pub failed: BTreeMap<&'static str, u64>,
}

/// What stands between a stream of a TLS listener and the core (the runtime's `Layer`);
/// a stream without one is plain.
#[derive(Debug)]
enum Layer {
    /// A PROXY header is being gathered; then `then`.
    Proxy { buf: Vec<u8>, then: TlsMode },
    /// The first byte decides between TLS and plain.
    Detect,
    /// The handshake, and the ciphertext not yet consumed.
    Handshake(ServerHandshake, Vec<u8>),
}

/// A stream's layer, its listener's handshake round trips, and its handshake deadline.
#[derive(Debug)]
struct Layered {
    layer: Layer,
    rtts: u32,
    deadline: Instant,
}

/// The PROXY header's longest accepted length (the runtime's default `proxy_max`).
const PROXY_MAX: usize = 536;

/// A turnpike server host.
#[derive(Debug)]
pub struct ServerHost {
    /// Index among the servers (for the oracle and the shared wall clocks).
    pub index: usize,
    /// Name.
    pub name: String,
    /// The cores, loop `i` at index `i` (one for a node of one loop).
    pub cores: Vec<Server>,
    /// How the kernel spreads 4-tuples over the loops.
    pub hash: LoopHash,
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Bound relay sockets, by loop and the loop's relay id (ids of loops may collide).
    relays: BTreeMap<(u16, RelayId), SocketAddr>,
    /// The node's port table: who holds each bound address.
    by_addr: BTreeMap<SocketAddr, (u16, RelayId)>,
    /// Ports held by other processes.
    foreign: BTreeSet<u16>,
    /// Streams open towards the cores, with the loop that accepted each.
    conns: BTreeMap<StreamId, u16>,
    /// Layers of the streams of TLS listeners not yet plain (handshake done or not TLS).
    layers: BTreeMap<StreamId, Layered>,
    /// Handshake deadlines, soonest first.
    handshake_deadlines: BTreeSet<(Instant, StreamId)>,
    /// Native TLS handshakes.
    pub tls: TlsCounts,
    /// File descriptors exhausted: binds fail, streams are refused.
    fd_exhausted: bool,
    /// Relay port range (for rogue peers).
    pub relay_ports: [u16; 2],
    /// Ports for listeners opened per issued credential.
    dynamic_ports: [u16; 2],
    /// Dynamic UDP listeners: credential expiry (unix seconds) and username.
    pub dynamic: BTreeMap<ListenerId, (u64, String)>,
    /// Allocations of UDP clients, by the listener they came through.
    udp_allocs: BTreeMap<(u16, AllocationId), ListenerId>,
    next_listener: u32,
    next_sweep: Option<Instant>,
    issued: u64,
    /// The REST secrets the node accepts, with their generations (changed by reloads).
    rest_secrets: Vec<(u32, String)>,
    /// Reloads on their way to each loop: when, which loop, the reload's sequence number
    /// (the oracle's), the generations it will accept, what it takes.
    reloads: Vec<(Instant, u16, u64, BTreeSet<u32>, Reloadable)>,
    /// Its spec, to start a fresh process after a drain or a kill.
    spec: ServerSpec,
    /// Up, draining or down ([`crate::fleet`]).
    pub life: Life,
    /// The loops' drain reports, while draining.
    drain_reports: Option<drain_reports::DrainReports>,
    /// A process that exited (drained, or killed and revived) starts again then.
    restart_at: Option<Instant>,
    /// The last counters of each loop of the processes that exited, for the run's figures.
    pub retired: Vec<Stats>,
}

/// An ICE configuration issued by the HTTP API: a REST credential and, with a dynamic
/// UDP port, the port of the listener opened for (and reserved to) that username.
#[derive(Clone, Debug)]
pub struct Issued {
    /// `<expiry>:<random>[:<label>]`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// The dynamic UDP port, if one could be opened.
    pub udp_port: Option<u16>,
}

/// How often expired dynamic listeners are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The static listeners of a node, as its first core was configured.
fn listeners_of(cores: &[Server], spec: &ServerSpec) -> Vec<Listener> {
    cores
        .first()
        .map(|c| c.config().listeners.as_slice())
        .unwrap_or_default()
        .iter()
        .zip(&spec.listeners)
        .map(|(l, ls)| Listener {
            id: l.id,
            transport: l.transport,
            port: l.local.port(),
            proxy: l.proxy_protocol,
            tls: match (ls.tls, ls.tls_and_tcp) {
                (false, _) => TlsMode::Off,
                (true, false) => TlsMode::On,
                (true, true) => TlsMode::Auto,
            },
            rtts: ls.handshake_rtts,
        })
        .collect()
}

/// Builds the core configuration of a server spec.
pub fn config_of(spec: &ServerSpec) -> Result<Config, String> {
    let mut creds = Credentials::new(&spec.realm);
    creds.add_rest_secret(spec.rest_secret.as_bytes());
    let mut cfg = Config::new(creds, IpAddr::V4(spec.address));
    if let Some(v6) = spec.address_v6 {
        cfg.relay_v6 = Some(RelayAddress {
            bind: IpAddr::V6(v6),
            advertised: IpAddr::V6(v6),
        });
    }
    cfg.relay_port_min = spec.relay_ports[0];
    cfg.relay_port_max = spec.relay_ports[1];
    cfg.relay_port_quarantine = Duration::from_secs(spec.quarantine_s);
    cfg.default_lifetime = Duration::from_secs(spec.lifetime_s);
    cfg.max_lifetime = cfg.max_lifetime.max(cfg.default_lifetime);
    cfg.permission_lifetime = Duration::from_secs(spec.permission_lifetime_s);
    cfg.channel_lifetime = Duration::from_secs(spec.channel_lifetime_s);
    cfg.user_quota = spec.user_quota;
    cfg.total_quota = spec.total_quota;
    cfg.max_streams = spec.max_streams;
    cfg.stream_idle_timeout = Duration::from_secs(spec.stream_idle_s);
    cfg.unauth_amplification_factor = spec.unauth_amplification_factor;
    cfg.unauth_source_bytes_per_s = spec.unauth_source_bytes_per_s;
    cfg.unauth_node_bytes_per_s = spec.unauth_node_bytes_per_s;
    cfg.stream_max_auth_failures = spec.stream_max_auth_failures;
    if let Some(p) = &spec.node_secret {
        cfg.node_secret = Some(turnpike_core::secret::NodeSecret::from_passphrase(
            p.as_bytes(),
        ));
    }
    let nets = |v: &[String]| -> Result<Vec<IpNet>, String> {
        v.iter()
            .map(|s| s.parse::<IpNet>().map_err(|e| format!("{s}: {e:?}")))
            .collect()
    };
    cfg.proxy_protocol_trusted = nets(&spec.proxy_trusted)?;
    cfg.peer_policy.allow = nets(&spec.allow_peers)?;
    cfg.peer_policy.own_addresses = std::iter::once(IpAddr::V4(spec.address))
        .chain(spec.address_v6.map(IpAddr::V6))
        .collect();
    for (i, l) in spec.listeners.iter().enumerate() {
        let transport = if l.transport == "udp" {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        cfg.listeners.push(ListenerConfig {
            id: ListenerId(i as u32 + 1),
            transport,
            local: SocketAddr::new(IpAddr::V4(spec.address), l.port),
            proxy_protocol: l.proxy_protocol,
        });
    }
    fleet::configure(&mut cfg, &spec.alternate_addrs);
    Ok(cfg)
}

impl ServerHost {
    /// A host running `cores` (already configured from `spec`), spread by `hash`.
    pub fn new(
        index: usize,
        spec: &ServerSpec,
        cores: Cores,
        hash: LoopHash,
        foreign: BTreeSet<u16>,
    ) -> Self {
        let cores = cores.cores;
        let listeners = listeners_of(&cores, spec);
        ServerHost {
            index,
            name: spec.name.clone(),
            cores,
            hash,
            v4: spec.address,
            v6: spec.address_v6,
            listeners,
            relays: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            foreign,
            conns: BTreeMap::new(),
            layers: BTreeMap::new(),
            handshake_deadlines: BTreeSet::new(),
            tls: TlsCounts::default(),
            fd_exhausted: false,
            relay_ports: spec.relay_ports,
            dynamic_ports: spec.dynamic_udp_ports,
            dynamic: BTreeMap::new(),
            udp_allocs: BTreeMap::new(),
            next_listener: 1000,
            next_sweep: None,
            issued: 0,
            rest_secrets: vec![(0, spec.rest_secret.clone())],
            reloads: Vec::new(),
            spec: spec.clone(),
            life: Life::Up,
            drain_reports: None,
            restart_at: None,
            retired: Vec::new(),
        }
    }

    /// The HTTP API's issuance (as the runtime does with a dynamic UDP port): a REST
    /// credential valid until `expiry` (unix seconds), and a UDP listener on a free
    /// dynamic port that only this username may use (401 for any other).
    pub fn issue(&mut self, now: Instant, secret: &str, expiry: u64, label: &str) -> Issued {
        self.issued += 1;
        let username = format!("{expiry}:i{}:{label}", self.issued);
        let password = rest_password(secret.as_bytes(), &username);
        let free = (self.dynamic_ports[0]..=self.dynamic_ports[1])
            .find(|p| !self.listeners.iter().any(|l| l.port == *p));
        let mut udp_port = None;
        if let Some(port) = free {
            let id = ListenerId(self.next_listener);
            self.next_listener += 1;
            let cfg = ListenerConfig {
                id,
                transport: Transport::Udp,
                local: SocketAddr::new(IpAddr::V4(self.v4), port),
                proxy_protocol: false,
            };
            let loop0 = &mut self.cores[0];
            if loop0.add_listener(cfg).is_ok() {
                loop0.credentials_mut().reserve_listener(id, &username);
                self.listeners.push(Listener {
                    id,
                    transport: Transport::Udp,
                    port,
                    proxy: false,
                    tls: TlsMode::Off,
                    rtts: 0,
                });
                self.dynamic.insert(id, (expiry, username.clone()));
                self.next_sweep.get_or_insert(now + SWEEP_EVERY);
                udp_port = Some(port);
            }
        }
        Issued {
            username,
            password,
            udp_port,
        }
    }

    /// Closes the dynamic listeners whose credential expired and that no allocation uses.
    fn sweep(&mut self, cx: &mut Cx) {
        let unix = cx.shared.walls[self.index].unix_s(cx.now);
        let doomed: Vec<ListenerId> = self
            .dynamic
            .iter()
            .filter(|(id, (expiry, _))| {
                *expiry < unix && !self.udp_allocs.values().any(|l| l == *id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.dynamic.remove(&id);
            self.listeners.retain(|l| l.id != id);
            self.cores[0].remove_listener(cx.now, id);
            cx.note(format!("{}: dynamic listener {} closed", self.name, id.0));
        }
        self.next_sweep = (!self.dynamic.is_empty()).then_some(cx.now + SWEEP_EVERY);
    }

    /// Relay sockets bound now.
    pub fn bound_relays(&self) -> usize {
        self.relays.len()
    }

    /// Streams open towards the cores.
    pub fn open_conns(&self) -> usize {
        self.conns.len()
    }

    /// Streams open towards the core of loop `l`.
    pub fn open_conns_of(&self, l: u16) -> usize {
        if self.cores.len() == 1 {
            return self.conns.len();
        }
        self.conns.values().filter(|&&c| c == l).count()
    }

    /// Loops of the node.
    pub fn loops(&self) -> u16 {
        self.cores.len() as u16
    }

    /// Each loop's counters, loop 0 first.
    pub fn stats(&self, now: Instant) -> Vec<Stats> {
        self.cores.iter().map(|c| c.stats(now)).collect()
    }

    /// The loop that receives what `from` sends to `to` on a listener: loop 0 for the
    /// dynamic listeners, else the 4-tuple's hash.
    fn loop_for(&self, listener: ListenerId, from: SocketAddr, to: SocketAddr) -> u16 {
        if self.dynamic.contains_key(&listener) {
            0
        } else {
            self.hash.loop_of(from, to)
        }
    }

    /// A datagram for one of our addresses: a UDP listener, a relay socket, or nothing.
    pub fn on_datagram(&mut self, cx: &mut Cx, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if self.life == Life::Down {
            return;
        }
        self.deliver_datagram(cx, from, to, data);
        self.maybe_exit(cx);
    }

    fn deliver_datagram(&mut self, cx: &mut Cx, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let now = cx.now;
        if let Some(l) = self
            .listeners
            .iter()
            .find(|l| l.transport == Transport::Udp && l.port == to.port())
            .copied()
        {
            let lp = self.loop_for(l.id, from, to);
            cx.oracle.udp_input(self.index, lp, l.id, from, &data);
            let mut buf = data;
            let n = buf.len();
            let fwd = self.cores[usize::from(lp)].handle_datagram(now, l.id, from, &mut buf, 0..n);
            self.forward(cx, lp, fwd, &buf, None);
            self.drain(cx, lp);
            return;
        }
        let Some(&(lp, relay)) = self.by_addr.get(&to) else {
            return;
        };
        cx.oracle.relay_input(self.index, relay, from);
        let mut buf = vec![0u8; HEADROOM + data.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(&data);
        let range = HEADROOM..HEADROOM + data.len();
        let fwd =
            self.cores[usize::from(lp)].handle_relay_datagram(now, relay, from, &mut buf, range);
        self.forward(cx, lp, fwd, &buf, Some((relay, from)));
        self.drain(cx, lp);
    }

    /// A connection to one of our TCP listeners.
    pub fn on_syn(
        &mut self,
        cx: &mut Cx,
        sid: StreamId,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> bool {
        let Some(l) = self
            .listeners
            .iter()
            .find(|l| l.transport == Transport::Tcp && l.port == local.port())
            .copied()
        else {
            return false;
        };
        if self.fd_exhausted || self.life == Life::Down {
            cx.oracle.stream_refused(self.index);
            return false;
        }
        let lp = self.hash.loop_of(remote, local);
        self.conns.insert(sid, lp);
        let first = match (l.tls, l.proxy) {
            (TlsMode::Off, _) => None,
            (then, true) => Some(Layer::Proxy {
                buf: Vec::new(),
                then,
            }),
            (TlsMode::Auto, false) => Some(Layer::Detect),
            (TlsMode::On, false) => Some(Self::handshake(cx, l.rtts)),
        };
        if let Some(layer) = first {
            let deadline = cx.now + HANDSHAKE_TIMEOUT;
            self.layers.insert(
                sid,
                Layered {
                    layer,
                    rtts: l.rtts,
                    deadline,
                },
            );
            self.handshake_deadlines.insert((deadline, sid));
        }
        cx.oracle.stream_open(self.index, lp, sid, l.proxy);
        self.cores[usize::from(lp)].handle_stream_open(cx.now, ConnId(sid.0), l.id, local, remote);
        self.drain(cx, lp);
        true
    }

    /// Bytes from a client (or a proxy) on a stream: through its layer to the core.
    pub fn on_stream_data(&mut self, cx: &mut Cx, sid: StreamId, data: &[u8]) {
        if !self.conns.contains_key(&sid) {
            return;
        }
        if self.layers.contains_key(&sid) {
            self.layered_input(cx, sid, data.to_vec());
        } else {
            self.feed_core(cx, sid, data);
        }
    }

    /// Bytes of a stream of a TLS listener, through its layers (each pass moves to a later
    /// layer or ends, so three suffice).
    fn layered_input(&mut self, cx: &mut Cx, sid: StreamId, mut pending: Vec<u8>) {
        for _ in 0..3 {
            let Some(l) = self.layers.get_mut(&sid) else {
                return self.feed_core(cx, sid, &pending);
            };
            let rtts = l.rtts;
            match &mut l.layer {
                Layer::Proxy { buf, then } => {
                    let then = *then;
                    buf.extend_from_slice(&pending);
                    let all = std::mem::take(buf);
                    match proxy_protocol::parse(&all, PROXY_MAX) {
                        Ok(ProxyParse::Incomplete) => {
                            if let Some(Layered {
                                layer: Layer::Proxy { buf, .. },
                                ..
                            }) = self.layers.get_mut(&sid)
                            {
                                *buf = all;
                            }
                            return;
                        }
                        Ok(ProxyParse::Done { consumed, .. }) => {
                            let next = match then {
                                TlsMode::Auto => Some(Layer::Detect),
                                TlsMode::Off => None,
                                TlsMode::On => Some(Self::handshake(cx, rtts)),
                            };
                            self.set_layer(sid, next);
                            let (head, rest) = all.split_at(consumed.min(all.len()));
                            // The core reads the header itself: trusted sources, the
                            // client's address.
                            self.feed_core(cx, sid, head);
                            if rest.is_empty() || !self.conns.contains_key(&sid) {
                                return;
                            }
                            pending = rest.to_vec();
                        }
                        Err(_) => {
                            // Not a header: the core refuses it as on any PROXY listener.
                            self.set_layer(sid, None);
                            return self.feed_core(cx, sid, &all);
                        }
                    }
                }
                Layer::Detect => {
                    let Some(&first) = pending.first() else {
                        return;
                    };
                    let next =
                        (first == crate::tls::TLS_HANDSHAKE).then(|| Self::handshake(cx, rtts));
                    self.set_layer(sid, next);
                }
                Layer::Handshake(_, buf) => {
                    buf.extend_from_slice(&pending);
                    // One record per step: bounded by what arrived.
                    for _ in 0..=buf.len() / crate::tls::TLS_RECORD {
                        let Some(Layered {
                            layer: Layer::Handshake(hs, buf),
                            ..
                        }) = self.layers.get_mut(&sid)
                        else {
                            return;
                        };
                        match hs.step(buf) {
                            Step::NeedMore if buf.len() < crate::tls::TLS_RECORD => return,
                            Step::NeedMore => {}
                            Step::Reply(r) => cx.net.write(cx.now, sid, Side::Acceptor, r),
                            Step::Done(r) => {
                                let rest = std::mem::take(buf);
                                cx.net.write(cx.now, sid, Side::Acceptor, r);
                                self.set_layer(sid, None);
                                self.tls.handshakes += 1;
                                if !rest.is_empty() {
                                    self.feed_core(cx, sid, &rest);
                                }
                                return;
                            }
                            Step::Failed(why, alert) => {
                                cx.net.write(cx.now, sid, Side::Acceptor, alert);
                                return self.tls_failed(cx, sid, why);
                            }
                        }
                    }
                    return;
                }
            }
        }
    }

    /// A new server handshake of `rtts` round trips: refused with the fault's probability.
    fn handshake(cx: &mut Cx, rtts: u32) -> Layer {
        let refuse = chance(cx.rng, cx.shared.tls_failure);
        Layer::Handshake(
            ServerHandshake::new(rtts, Some(HANDSHAKE_MAX_BYTES), refuse),
            Vec::new(),
        )
    }

    /// Moves stream `sid` to its next layer (None: plain, the handshake deadline gone).
    fn set_layer(&mut self, sid: StreamId, next: Option<Layer>) {
        match (next, self.layers.get_mut(&sid)) {
            (Some(next), Some(l)) => l.layer = next,
            _ => self.forget_layer(sid),
        }
    }

    /// A native handshake failed: counted, and the stream closed for the core as well.
    fn tls_failed(&mut self, cx: &mut Cx, sid: StreamId, why: Failure) {
        *self.tls.failed.entry(why.as_str()).or_insert(0) += 1;
        cx.note(format!(
            "{}: TLS handshake of stream {} failed ({})",
            self.name,
            sid.0,
            why.as_str()
        ));
        self.forget_layer(sid);
        if let Some(lp) = self.conns.remove(&sid) {
            cx.oracle.stream_closed(self.index, sid);
            self.cores[usize::from(lp)].handle_stream_closed(cx.now, ConnId(sid.0));
            self.drain(cx, lp);
        }
        cx.net.close(cx.now, sid, Side::Acceptor);
    }

    /// Drops what the TLS layer held for a stream.
    fn forget_layer(&mut self, sid: StreamId) {
        if let Some(l) = self.layers.remove(&sid) {
            self.handshake_deadlines.remove(&(l.deadline, sid));
        }
    }

    /// Plaintext of a stream to its loop's core.
    fn feed_core(&mut self, cx: &mut Cx, sid: StreamId, data: &[u8]) {
        let Some(&lp) = self.conns.get(&sid) else {
            return;
        };
        cx.oracle.stream_input(self.index, sid, data);
        let mut sends: Vec<(RelayId, SocketAddr, Vec<u8>)> = Vec::new();
        self.cores[usize::from(lp)].handle_stream_data(
            cx.now,
            ConnId(sid.0),
            data,
            &mut |relay, peer, payload| {
                sends.push((relay, peer, payload.to_vec()));
            },
        );
        for (relay, peer, payload) in sends {
            self.send_to_peer(cx, lp, relay, peer, payload);
        }
        self.drain(cx, lp);
        self.maybe_exit(cx);
    }

    /// The client side closed (or the stream was reset).
    pub fn on_stream_closed(&mut self, cx: &mut Cx, sid: StreamId) {
        self.forget_layer(sid);
        let Some(lp) = self.conns.remove(&sid) else {
            return;
        };
        cx.oracle.stream_closed(self.index, sid);
        self.cores[usize::from(lp)].handle_stream_closed(cx.now, ConnId(sid.0));
        self.drain(cx, lp);
        self.maybe_exit(cx);
    }

    /// The cores' timers: each loop whose timeout is due handles it; handshakes past
    /// their deadline fail.
    pub fn on_wake(&mut self, cx: &mut Cx) {
        if self.restart_at.is_some_and(|t| t <= cx.now) {
            self.restart_at = None;
            self.life = Life::Up;
            cx.oracle.fleet.up(self.index);
            cx.note(format!("{}: a fresh process starts", self.name));
        }
        if self.life == Life::Down {
            return;
        }
        self.maybe_exit(cx);
        self.apply_reloads(cx);
        while let Some(&(at, sid)) = self.handshake_deadlines.first() {
            if at > cx.now {
                break;
            }
            self.handshake_deadlines.pop_first();
            self.tls_failed(cx, sid, Failure::Timeout);
        }
        for lp in 0..self.loops() {
            let core = &mut self.cores[usize::from(lp)];
            if core.poll_timeout().is_some_and(|t| t <= cx.now) {
                core.handle_timeout(cx.now);
                self.drain(cx, lp);
            }
        }
        if self.next_sweep.is_some_and(|t| t <= cx.now) {
            self.sweep(cx);
            self.drain(cx, 0);
        }
        self.maybe_exit(cx);
    }

    /// A message from another loop of this node reaches its core.
    pub fn on_loop_message(&mut self, cx: &mut Cx, m: InFlight) {
        if self.life == Life::Down {
            return; // from a process that is gone
        }
        let lp = m.to.0;
        let Some(core) = self.cores.get_mut(usize::from(lp)) else {
            return;
        };
        cx.note(format!(
            "{}: loop {} -> loop {}: {:?}",
            self.name, m.from.0, lp, m.msg
        ));
        core.handle_loop_message(cx.now, m.from, m.msg);
        self.drain(cx, lp);
        self.maybe_exit(cx);
    }

    /// Faults aimed at servers.
    pub fn on_control(&mut self, cx: &mut Cx, c: &Control) {
        match *c {
            Control::WallJump { server, .. } if server == self.index => {
                let wall = cx.shared.walls[server];
                for core in &mut self.cores {
                    core.set_wall_clock(cx.now, wall.unix_ms(cx.now));
                }
                cx.note(format!(
                    "{}: wall clock now {} s",
                    self.name,
                    wall.unix_s(cx.now)
                ));
            }
            Control::FdExhaustion { server, on } if server == self.index => {
                self.fd_exhausted = on;
            }
            Control::Reload {
                server,
                ref secret,
                keep_old,
            } if server == self.index => self.reload(cx, secret, keep_old),
            Control::Drain { server } if server == self.index && self.life == Life::Up => {
                self.begin_drain(cx)
            }
            Control::Kill { server } if server == self.index && self.life != Life::Down => {
                cx.note(format!("{}: killed", self.name));
                cx.oracle.killed(self.index, cx.now);
                self.fresh_process(cx, false);
                self.restart_at = None;
            }
            Control::Revive { server } if server == self.index && self.life == Life::Down => {
                self.restart_at = Some(cx.now);
            }
            _ => {}
        }
    }

    /// When a core wants `handle_timeout` (the earliest of the loops), or the sweep.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.life == Life::Down {
            return self.restart_at;
        }
        let deadline = match self.life {
            Life::Draining { deadline, .. } => Some(deadline),
            _ => None,
        };
        self.cores
            .iter()
            .filter_map(Server::poll_timeout)
            .chain(self.next_sweep)
            .chain(self.handshake_deadlines.first().map(|d| d.0))
            .chain(self.reloads.iter().map(|r| r.0))
            .chain(self.next_report())
            .chain(deadline)
            .min()
    }

    /// Acts on a fast-path answer.
    fn forward(
        &mut self,
        cx: &mut Cx,
        lp: u16,
        fwd: Option<Forward>,
        buf: &[u8],
        from_peer: Option<(RelayId, SocketAddr)>,
    ) {
        let Some(fwd) = fwd else {
            return;
        };
        cx.oracle.forward(self.index, lp, cx.now, &fwd, from_peer);
        match fwd {
            Forward::ToPeer { relay, peer, range } => {
                let payload = buf.get(range).map(<[u8]>::to_vec).unwrap_or_default();
                self.send_to_peer(cx, lp, relay, peer, payload);
            }
            Forward::ToClient {
                listener,
                client,
                range,
            } => {
                let Some(port) = self
                    .listeners
                    .iter()
                    .find(|l| l.id == listener)
                    .map(|l| l.port)
                else {
                    return;
                };
                let local = SocketAddr::new(self.ip_for(client.ip()), port);
                let payload = buf.get(range).map(<[u8]>::to_vec).unwrap_or_default();
                cx.net.send_datagram(cx.now, cx.me, local, client, payload);
            }
            Forward::ToStream { conn, range } => {
                let payload = buf.get(range).map(<[u8]>::to_vec).unwrap_or_default();
                cx.net
                    .write(cx.now, StreamId(conn.0), Side::Acceptor, payload);
            }
        }
    }

    /// Sends relayed data from a relay socket.
    fn send_to_peer(
        &mut self,
        cx: &mut Cx,
        lp: u16,
        relay: RelayId,
        peer: SocketAddr,
        payload: Vec<u8>,
    ) {
        cx.oracle.to_peer(self.index, lp, cx.now, relay, peer);
        if let Some(&local) = self.relays.get(&(lp, relay)) {
            cx.net.send_datagram(cx.now, cx.me, local, peer, payload);
        }
    }

    /// Drains the outputs of loop `lp`'s core after an input, acting on each.
    fn drain(&mut self, cx: &mut Cx, lp: u16) {
        let multi = self.cores.len() > 1;
        for _ in 0..MAX_OUTPUTS_PER_INPUT {
            let Some(out) = self.cores[usize::from(lp)].poll_output() else {
                return;
            };
            if matches!(out, Output::Transmit { .. } | Output::StreamWrite { .. }) {
                for (l, core) in self.cores.iter().enumerate() {
                    cx.oracle
                        .free_ports(self.index, l as u16, core.free_ports_since(0));
                }
            }
            cx.oracle.output(self.index, lp, cx.now, &out);
            cx.digest.record(b'O', cx.now);
            if multi {
                cx.digest.write_u64(u64::from(lp));
            }
            match out {
                Output::Transmit { listener, to, data } => {
                    cx.digest.write(&data);
                    let Some(port) = self
                        .listeners
                        .iter()
                        .find(|l| l.id == listener)
                        .map(|l| l.port)
                    else {
                        continue;
                    };
                    let local = SocketAddr::new(self.ip_for(to.ip()), port);
                    cx.net.send_datagram(cx.now, cx.me, local, to, data);
                }
                Output::StreamWrite { conn, data } => {
                    cx.digest.write(&data);
                    cx.net.write(cx.now, StreamId(conn.0), Side::Acceptor, data);
                }
                Output::CloseStream { conn, reason } => {
                    cx.note(format!(
                        "{}: core closes stream {} ({})",
                        self.name,
                        conn.0,
                        reason.as_str()
                    ));
                    let sid = StreamId(conn.0);
                    if self.conns.get(&sid) == Some(&lp) {
                        self.conns.remove(&sid);
                        self.forget_layer(sid);
                    }
                    cx.net.close(cx.now, sid, Side::Acceptor);
                }
                Output::BindRelay { relay, addr } => {
                    let result = self.bind(cx, lp, relay, addr);
                    cx.digest
                        .write_u64(u64::from(relay.0) << 16 | u64::from(addr.port()));
                    cx.oracle
                        .bind_result(self.index, lp, cx.now, relay, addr, result);
                    self.cores[usize::from(lp)].handle_relay_bound(cx.now, relay, result);
                }
                Output::CloseRelay { relay } => {
                    if let Some(addr) = self.relays.remove(&(lp, relay)) {
                        self.by_addr.remove(&addr);
                    }
                }
                Output::ToLoop { to, msg } => self.send_to_loop(cx, lp, to, msg),
                Output::Event(e) => {
                    match &e {
                        Event::AllocationCreated { id, client, .. }
                            if client.transport == Transport::Udp =>
                        {
                            self.udp_allocs.insert((lp, *id), client.listener);
                        }
                        Event::AllocationDeleted { id, .. } => {
                            self.udp_allocs.remove(&(lp, *id));
                        }
                        _ => {}
                    }
                    let line = if multi {
                        format!("{} loop {lp}: {e:?}", self.name)
                    } else {
                        format!("{}: {e:?}", self.name)
                    };
                    cx.digest.write(line.as_bytes());
                    cx.note(line);
                    cx.oracle.event(self.index, lp, cx.now, &e);
                }
            }
        }
        cx.oracle.fail(
            "drain_bounded",
            format!(
                "{}: more than {MAX_OUTPUTS_PER_INPUT} outputs after one input",
                self.name
            ),
        );
    }

    /// Puts a message from loop `from` on its way to loop `to` (virtual latency from the
    /// run's randomness; the queue's order keeps it deterministic).
    fn send_to_loop(&mut self, cx: &mut Cx, from: u16, to: LoopId, msg: LoopMsg) {
        let mut wire = Vec::new();
        msg.encode(&mut wire);
        cx.digest.write_u64(u64::from(from) << 16 | u64::from(to.0));
        cx.digest.write(&wire);
        if usize::from(to.0) >= self.cores.len() || to.0 == from {
            cx.oracle.fail(
                "loop_message_addressed",
                format!(
                    "{}: loop {from} sent {msg:?} to loop {} of {}",
                    self.name,
                    to.0,
                    self.cores.len()
                ),
            );
            return;
        }
        let at = cx.now + message_latency(cx.rng);
        cx.net.schedule(
            at,
            Ev::Loop {
                node: cx.me,
                msg: InFlight {
                    from: LoopId(from),
                    to,
                    msg,
                },
            },
        );
    }

    /// Binds a relay socket in the node's virtual port table.
    fn bind(
        &mut self,
        cx: &mut Cx,
        lp: u16,
        relay: RelayId,
        addr: SocketAddr,
    ) -> Result<(), BindError> {
        if self.fd_exhausted {
            return Err(BindError::Other);
        }
        if self.foreign.contains(&addr.port())
            || self.by_addr.contains_key(&addr)
            || chance(cx.rng, cx.shared.bind_addr_in_use)
        {
            return Err(BindError::AddrInUse);
        }
        self.relays.insert((lp, relay), addr);
        self.by_addr.insert(addr, (lp, relay));
        Ok(())
    }

    /// Our address of the family of `ip`.
    fn ip_for(&self, ip: IpAddr) -> IpAddr {
        match (ip, self.v6) {
            (IpAddr::V6(_), Some(v6)) => IpAddr::V6(v6),
            _ => IpAddr::V4(self.v4),
        }
    }
}
