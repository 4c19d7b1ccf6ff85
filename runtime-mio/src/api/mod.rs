//! The HTTP API: issued ICE configurations, allocations, metrics, health.
//!
//! It runs on a thread of its own with its own `mio::Poll` ([`thread`]), so no request
//! ever holds up a loop's packets. It reaches the event loops only through their inboxes
//! ([`crate::link`]): counters, allocation lists and deletions are asked of every loop and
//! awaited here, at most [`loops::ASK_TIMEOUT`]; a loop answers when its waker fires and
//! never waits. Everything that changes a core goes through the loop that owns it, so that
//! the loop's trace records it. The webhook, which waits on the network, has its own
//! thread behind a bounded queue that every loop feeds.
//!
//! With `api_loopback_address_only = true` (the default) a connection from any other
//! address is answered 403 and closed at once ([`peer_allowed`]).
//!
//! Credentials of issued configurations are stateless (see [`ice`]); dynamic UDP ports
//! are the state: the API binds each (so it knows the port number at once) and hands it to
//! loop 0, which makes it a core listener reserved for one username and closes it once the
//! credential has expired and no allocation uses it any more.

pub mod http;
pub mod ice;
pub mod local_addrs;
pub mod loops;
pub mod metrics;
pub mod routes;
pub mod thread;
pub mod webhook;

use crate::config::{Secret, UdpPort};
use crate::link::DynamicPort;
use crate::sockets;
use crate::sockets::SocketBuffers;
use crate::token::Source;
use http::Response;
use ice::IceSettings;
use metrics::{LoopStats, RuntimeMetrics};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use rand_core::{OsRng, RngCore};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::server::AllocationInfo;
use turnpike_core::{AllocationId, Instant};

/// Open API connections, at most; more are refused (closed) until some end.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections accepted per readiness event before others get their turn.
const ACCEPT_BUDGET: usize = 64;
/// Ports tried before an issuance is refused for want of a dynamic UDP port.
const DYNAMIC_PORT_TRIES: usize = 32;

/// What the API is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Bearer token of the routes that mint credentials, list or end allocations; None:
    /// open to whoever reaches the API (a warning is logged at start).
    pub token: Option<Secret>,
    /// Refuse peers that are not on loopback.
    pub loopback_only: bool,
    /// Default validity of issued credentials, seconds.
    pub ttl_s: u64,
    /// Longest validity a caller may ask for, seconds.
    pub max_ttl_s: u64,
    /// Secret signing issued credentials (random at start when None).
    pub issuance_secret: Option<Vec<u8>>,
    /// Fixed or dynamic UDP port.
    pub udp_port: UdpPort,
    /// Range of dynamic UDP ports (inclusive).
    pub dynamic_ports: (u16, u16),
    /// Addresses dynamic UDP ports are bound to (IPv4, and IPv6 when on).
    pub udp_binds: Vec<IpAddr>,
    /// Where allocation events are posted.
    pub webhook_url: Option<String>,
    /// The relay may run without the API when its port cannot be bound (the built-in
    /// default: port 3000 may be taken on a developer's machine). A configured API that
    /// cannot listen stops the start instead.
    pub optional: bool,
}

/// What the API needs from the event loops ([`loops::Loops`]).
pub trait Host {
    /// The core's time now (for the API's own timeouts).
    fn now(&self) -> Instant;
    /// The wall clock, unix milliseconds.
    fn unix_ms(&self) -> u64;
    /// Ends an allocation now, as the operator asked: its loop does it (and records it in
    /// its trace). False if no loop had it (or its loop did not answer in time).
    fn delete_allocation(&mut self, id: AllocationId) -> bool;
    /// Hands a dynamic UDP port to the loop that serves them. False if that loop is gone.
    fn serve_dynamic_port(&mut self, port: DynamicPort) -> bool;
    /// The counters of every event loop that answered in time, in loop order.
    fn loop_stats(&mut self) -> Vec<LoopStats>;
    /// The allocations of every event loop that answered in time.
    fn all_allocations(&mut self) -> Vec<AllocationInfo>;
}

/// True if a peer at `ip` may use the API: anyone, or only loopback (IPv4, IPv6, and
/// IPv4-mapped loopback on a dual-stack socket) when `loopback_only`.
pub fn peer_allowed(ip: IpAddr, loopback_only: bool) -> bool {
    if !loopback_only {
        return true;
    }
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// The API server.
pub struct Api {
    listener: TcpListener,
    conns: HashMap<u64, HttpConn>,
    next_conn: u64,
    pub(crate) settings: ApiSettings,
    pub(crate) ice: IceSettings,
    pub(crate) secret: Vec<u8>,
    pub(crate) rng: OsRng,
    /// Buffer sizes of dynamic UDP ports.
    buffers: SocketBuffers,
    webhook: Option<webhook::Webhook>,
    pub(crate) issued: u64,
    exhausted: u64,
    refused_peers: u64,
    /// Configuration reloads that succeeded and failed.
    reloads: [u64; 2],
}

struct HttpConn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// When the first byte of the request being read arrived.
    request_started: Option<Instant>,
    last_active: Instant,
    /// Close once `output` is written.
    closing: bool,
}

impl Api {
    /// Binds the API listener and registers it with `registry`. Starts the webhook
    /// thread if configured. Dynamic UDP ports get `buffers`.
    pub fn start(
        settings: ApiSettings,
        ice: IceSettings,
        buffers: SocketBuffers,
        registry: &Registry,
    ) -> io::Result<Api> {
        let mut listener = TcpListener::bind(settings.listen)?;
        registry.register(
            &mut listener,
            Source::ApiListener.token(),
            Interest::READABLE,
        )?;
        let secret = settings.issuance_secret.clone().unwrap_or_else(|| {
            let mut k = vec![0u8; 32];
            OsRng.fill_bytes(&mut k);
            k
        });
        let webhook = match &settings.webhook_url {
            Some(u) => {
                let target = webhook::parse_url(u)
                    .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
                Some(webhook::Webhook::start(target)?)
            }
            None => None,
        };
        Ok(Api {
            listener,
            conns: HashMap::new(),
            next_conn: 0,
            settings,
            ice,
            secret,
            rng: OsRng,
            buffers,
            webhook,
            issued: 0,
            exhausted: 0,
            refused_peers: 0,
            reloads: [0, 0],
        })
    }

    /// The secret that signs issued credentials: the core must accept it as a REST secret.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Where the API listens (its port, when it was 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The sending side of the webhook, if there is one: every loop posts its own events.
    pub fn webhook(&self) -> Option<webhook::Webhook> {
        self.webhook.clone()
    }

    /// Once a second: close timed-out connections.
    pub fn tick(&mut self, registry: &Registry, host: &mut dyn Host) {
        let now = host.now();
        let stale: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.request_started
                    .is_some_and(|t| now.since(t) > http::REQUEST_TIMEOUT)
                    || now.since(c.last_active) > http::IDLE_TIMEOUT
            })
            .map(|(n, _)| *n)
            .collect();
        for n in stale {
            if let Some(c) = self.conns.get_mut(&n) {
                if c.request_started.is_some() {
                    let r = Response::error(408, "request not received in time");
                    let _ = c.stream.write(&r.encode(true, false));
                }
            }
            self.close(n, registry);
        }
    }

    /// The configuration was reloaded (`ok`) or a reload failed; on success, new
    /// credentials are signed with `issuance_secret` from now on.
    pub fn reloaded(&mut self, ok: bool, issuance_secret: Option<Vec<u8>>) {
        if ok {
            self.reloads[0] += 1;
            if let Some(s) = issuance_secret {
                self.secret = s;
            }
        } else {
            self.reloads[1] += 1;
        }
    }

    /// Sets the API's own counters in `r`.
    pub fn add_own_metrics(&self, r: &mut RuntimeMetrics) {
        r.ice_issued = self.issued;
        r.dynamic_ports_exhausted = self.exhausted;
        r.api_refused_peers = self.refused_peers;
        [r.reloads_ok, r.reloads_failed] = self.reloads;
        if let Some(h) = &self.webhook {
            (r.webhook_sent, r.webhook_failed, r.webhook_dropped) = h.counts();
        }
    }

    /// Opens a UDP port for one issuance, on every bind address, and hands it to the loop
    /// that serves dynamic ports, reserved for `username` until its credential expires.
    /// None when no port could be opened.
    ///
    /// The sockets are bound without `SO_REUSEADDR`, so a port still open (or in use by
    /// anyone else) fails to bind and another is tried: the kernel keeps the books.
    pub(crate) fn open_dynamic(
        &mut self,
        host: &mut dyn Host,
        username: &str,
        expires_unix_s: u64,
    ) -> Option<u16> {
        let (min, max) = self.settings.dynamic_ports;
        let span = u32::from(max - min) + 1;
        for _ in 0..DYNAMIC_PORT_TRIES {
            let port = min + (self.rng.next_u32() % span) as u16;
            let mut opened = Vec::new();
            for ip in &self.settings.udp_binds {
                match sockets::relay_socket(SocketAddr::new(*ip, port), self.buffers) {
                    Ok(s) => opened.push(s),
                    Err((_, e)) => {
                        log::debug!("dynamic UDP port {ip} {port}: {e}");
                        break;
                    }
                }
            }
            if opened.len() != self.settings.udp_binds.len() {
                continue;
            }
            let handed = host.serve_dynamic_port(DynamicPort {
                sockets: opened,
                username: username.to_string(),
                expires_unix_s,
            });
            if !handed {
                log::warn!("dynamic UDP port {port}: the event loop serving them is gone");
                return None;
            }
            return Some(port);
        }
        self.exhausted += 1;
        log::warn!("no dynamic UDP port could be opened in {min}..={max}");
        None
    }

    /// The API listener is readable: accepts connections (refusing non-loopback peers
    /// when so configured).
    pub fn accept(&mut self, registry: &Registry, host: &mut dyn Host) {
        for _ in 0..ACCEPT_BUDGET {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("API accept failed: {e}");
                    return;
                }
            };
            if !peer_allowed(peer.ip(), self.settings.loopback_only) {
                self.refused_peers += 1;
                log::warn!("API connection from {peer} refused: api_loopback_address_only = true");
                let r = Response::error(403, "the API answers loopback peers only");
                let _ = stream.write(&r.encode(true, false));
                // Fewer resets: take what the peer already sent before closing.
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let mut sink = [0u8; 1024];
                let _ = stream.read(&mut sink);
                continue;
            }
            if self.conns.len() >= MAX_CONNECTIONS {
                let r = Response::error(503, "too many API connections");
                let _ = stream.write(&r.encode(true, false));
                continue;
            }
            let n = self.next_conn;
            self.next_conn += 1;
            if let Err(e) = registry.register(
                &mut stream,
                Source::ApiConn(n).token(),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::debug!("API connection from {peer}: {e}");
                continue;
            }
            self.conns.insert(
                n,
                HttpConn {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    request_started: None,
                    last_active: host.now(),
                    closing: false,
                },
            );
            // Edge-triggered: bytes may already be there.
            self.serve(n, registry, host);
        }
    }

    /// Connection `n` is readable or writable: reads what is there, answers every whole
    /// request, writes what it can.
    pub fn serve(&mut self, n: u64, registry: &Registry, host: &mut dyn Host) {
        let now = host.now();
        let limit = http::MAX_REQUEST;
        let mut eof = false;
        {
            let Some(c) = self.conns.get_mut(&n) else {
                return;
            };
            let mut chunk = [0u8; 4096];
            // Bounded: stop reading once a whole request's worth waits unparsed.
            while !c.closing && c.input.len() <= limit {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(k) => {
                        if c.input.is_empty() {
                            c.request_started = Some(now);
                        }
                        c.input
                            .extend_from_slice(chunk.get(..k).unwrap_or_default());
                        c.last_active = now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        }
        loop {
            let Some(c) = self.conns.get_mut(&n) else {
                return;
            };
            if c.closing || c.input.is_empty() {
                break;
            }
            match http::next_request(&mut c.input) {
                http::Next::Wait => break,
                http::Next::Refuse(r) => {
                    c.output.extend(r.encode(true, false));
                    c.closing = true;
                    break;
                }
                http::Next::Request(req) => {
                    c.request_started = (!c.input.is_empty()).then_some(now);
                    let resp = routes::handle(self, host, &req);
                    let Some(c) = self.conns.get_mut(&n) else {
                        return;
                    };
                    c.output
                        .extend(resp.encode(req.close, req.method == "HEAD"));
                    if req.close {
                        c.closing = true;
                    }
                }
            }
        }
        let Some(c) = self.conns.get_mut(&n) else {
            return;
        };
        let mut failed = false;
        while !c.output.is_empty() {
            match c.stream.write(&c.output) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(k) => {
                    c.output.drain(..k.min(c.output.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let done = failed
            || (c.closing && c.output.is_empty())
            || (eof && c.output.is_empty())
            || c.output.len() > http::MAX_PENDING_OUTPUT;
        if done {
            self.close(n, registry);
        }
    }

    fn close(&mut self, n: u64, registry: &Registry) {
        if let Some(mut c) = self.conns.remove(&n) {
            let _ = registry.deregister(&mut c.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_refuses_every_other_peer() {
        for ip in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(peer_allowed(ip, true), "{ip}");
            assert!(peer_allowed(ip, false), "{ip}");
        }
        for ip in [
            "192.0.2.1",
            "10.0.0.1",
            "::ffff:192.0.2.1",
            "2001:db8::1",
            "0.0.0.0",
            "::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!peer_allowed(ip, true), "{ip}");
            assert!(peer_allowed(ip, false), "{ip}");
        }
    }
}
