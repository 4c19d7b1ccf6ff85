//! nginx-like hops in front of the relay: `stream` proxies that may terminate TLS (a
//! modelled handshake of a few round trips), route by ssl_preread (TLS to one upstream,
//! anything else to another), read a PROXY header from the hop before them, and prepend
//! one (v1, v2, `PROXY UNKNOWN`, or nginx's unix-socket variant) to what they forward.

use crate::host::Cx;
use crate::net::{Side, StreamId};
use crate::scenario::ProxySpec;
use crate::tls::{ServerHandshake, Step, TLS_HANDSHAKE};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use turnpike_core::proxy_protocol::{self, ProxyHeader, ProxyParse};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    /// Reading the PROXY header of the hop in front.
    ProxyIn,
    /// Deciding the route from the first byte (ssl_preread).
    Preread,
    /// Terminating TLS ([`crate::tls`]).
    Handshake,
    /// Forwarding.
    Forward,
}

#[derive(Debug)]
struct Conn {
    phase: Phase,
    /// The downstream peer (the client, or the hop in front).
    remote: SocketAddr,
    /// The client's address from the PROXY header read, if any.
    header_source: Option<SocketAddr>,
    /// The TLS handshake, while terminating it.
    tls: Option<ServerHandshake>,
    buf: Vec<u8>,
    up: Option<StreamId>,
    up_ready: bool,
    /// Bytes for upstream, held until it is connected.
    pending: Vec<u8>,
}

/// An nginx-like hop.
#[derive(Debug)]
pub struct Nginx {
    spec: ProxySpec,
    ip: IpAddr,
    upstream: SocketAddr,
    tls_upstream: Option<SocketAddr>,
    down: BTreeMap<StreamId, Conn>,
    up: BTreeMap<StreamId, StreamId>,
    next_port: u16,
}

impl Nginx {
    /// A hop at `ip` forwarding to `upstream` (and TLS to `tls_upstream` with preread).
    pub fn new(
        spec: ProxySpec,
        ip: IpAddr,
        upstream: SocketAddr,
        tls_upstream: Option<SocketAddr>,
    ) -> Self {
        Nginx {
            spec,
            ip,
            upstream,
            tls_upstream,
            down: BTreeMap::new(),
            up: BTreeMap::new(),
            next_port: 20_000,
        }
    }

    /// A connection from a client or the hop in front.
    pub fn on_syn(
        &mut self,
        cx: &mut Cx,
        sid: StreamId,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> bool {
        if local.port() != self.spec.listen_port {
            return false;
        }
        let phase = self.first_phase();
        self.down.insert(
            sid,
            Conn {
                phase,
                remote,
                header_source: None,
                tls: None,
                buf: Vec::new(),
                up: None,
                up_ready: false,
                pending: Vec::new(),
            },
        );
        if phase == Phase::Forward {
            self.connect_up(cx, sid, self.upstream);
        }
        true
    }

    /// Our upstream connection is up: the PROXY header, then what waited.
    pub fn on_established(&mut self, cx: &mut Cx, up: StreamId) {
        let Some(&down) = self.up.get(&up) else {
            cx.net.close(cx.now, up, Side::Connector);
            return;
        };
        let header = match self.down.get(&down) {
            Some(c) => self.header(c),
            None => return,
        };
        if !header.is_empty() {
            cx.net.write(cx.now, up, Side::Connector, header);
        }
        if let Some(c) = self.down.get_mut(&down) {
            c.up_ready = true;
            let pending = std::mem::take(&mut c.pending);
            cx.net.write(cx.now, up, Side::Connector, pending);
        }
    }

    /// Bytes from downstream (our acceptor side) or upstream (our connector side).
    pub fn on_stream_data(&mut self, cx: &mut Cx, sid: StreamId, side: Side, data: Vec<u8>) {
        if side == Side::Connector {
            if let Some(&down) = self.up.get(&sid) {
                cx.net.write(cx.now, down, Side::Acceptor, data);
            }
            return;
        }
        let Some(c) = self.down.get_mut(&sid) else {
            return;
        };
        c.buf.extend_from_slice(&data);
        // Each pass consumes input (a record at least) or changes phase.
        let passes = 8 + c.buf.len() / crate::tls::TLS_RECORD;
        for _ in 0..passes {
            let next_phase = self.after_proxy_in();
            let Some(c) = self.down.get_mut(&sid) else {
                return;
            };
            match c.phase {
                Phase::ProxyIn => match proxy_protocol::parse(&c.buf, 512) {
                    Ok(ProxyParse::Incomplete) => return,
                    Ok(ProxyParse::Done { header, consumed }) => {
                        if let ProxyHeader::Proxied { source, .. } = header {
                            c.header_source = Some(source);
                        }
                        c.buf.drain(..consumed.min(c.buf.len()));
                        c.phase = next_phase;
                        if c.phase == Phase::Forward {
                            let target = self.upstream;
                            self.connect_up(cx, sid, target);
                        }
                    }
                    Err(_) => return self.drop_conn(cx, sid),
                },
                Phase::Preread => {
                    let Some(&first) = c.buf.first() else { return };
                    c.phase = Phase::Forward;
                    let target = match (first == TLS_HANDSHAKE, self.tls_upstream) {
                        (true, Some(t)) => t,
                        _ => self.upstream,
                    };
                    self.connect_up(cx, sid, target);
                }
                Phase::Handshake => {
                    let rtts = self.spec.handshake_rtts;
                    let hs = c
                        .tls
                        .get_or_insert_with(|| ServerHandshake::new(rtts, None, false));
                    match hs.step(&mut c.buf) {
                        Step::NeedMore if c.buf.len() < crate::tls::TLS_RECORD => return,
                        Step::NeedMore => {}
                        Step::Reply(r) => cx.net.write(cx.now, sid, Side::Acceptor, r),
                        Step::Done(r) => {
                            cx.net.write(cx.now, sid, Side::Acceptor, r);
                            c.tls = None;
                            c.phase = Phase::Forward;
                            let target = self.upstream;
                            self.connect_up(cx, sid, target);
                        }
                        Step::Failed(_, alert) => {
                            // Not TLS (plain TURN sent to a TLS port): nginx drops it.
                            cx.net.write(cx.now, sid, Side::Acceptor, alert);
                            return self.drop_conn(cx, sid);
                        }
                    }
                }
                Phase::Forward => {
                    let bytes = std::mem::take(&mut c.buf);
                    if bytes.is_empty() {
                        return;
                    }
                    match (c.up, c.up_ready) {
                        (Some(up), true) => cx.net.write(cx.now, up, Side::Connector, bytes),
                        _ => c.pending.extend_from_slice(&bytes),
                    }
                    return;
                }
            }
        }
    }

    /// Either side closed: close the other.
    pub fn on_stream_closed(&mut self, cx: &mut Cx, sid: StreamId, side: Side) {
        if side == Side::Connector {
            if let Some(down) = self.up.remove(&sid) {
                self.down.remove(&down);
                cx.net.close(cx.now, down, Side::Acceptor);
            }
            return;
        }
        if let Some(c) = self.down.remove(&sid) {
            if let Some(up) = c.up {
                self.up.remove(&up);
                cx.net.close(cx.now, up, Side::Connector);
            }
        }
    }

    fn first_phase(&self) -> Phase {
        if self.spec.accept_proxy {
            Phase::ProxyIn
        } else {
            self.after_proxy_in()
        }
    }

    fn after_proxy_in(&self) -> Phase {
        if self.tls_upstream.is_some() {
            Phase::Preread
        } else if self.spec.terminate_tls {
            Phase::Handshake
        } else {
            Phase::Forward
        }
    }

    fn connect_up(&mut self, cx: &mut Cx, down: StreamId, target: SocketAddr) {
        let port = self.next_port;
        self.next_port = if port >= 30_000 { 20_000 } else { port + 1 };
        let local = SocketAddr::new(self.ip, port);
        let up = cx.net.connect(cx.now, cx.me, local, target);
        self.up.insert(up, down);
        if let Some(c) = self.down.get_mut(&down) {
            c.up = Some(up);
        }
    }

    fn drop_conn(&mut self, cx: &mut Cx, sid: StreamId) {
        cx.note(format!("{}: drops connection {}", self.spec.name, sid.0));
        if let Some(c) = self.down.remove(&sid) {
            if let Some(up) = c.up {
                self.up.remove(&up);
                cx.net.close(cx.now, up, Side::Connector);
            }
        }
        cx.net.close(cx.now, sid, Side::Acceptor);
    }

    /// The PROXY header this hop sends for connection `c`.
    fn header(&self, c: &Conn) -> Vec<u8> {
        let dst = SocketAddr::new(self.ip, self.spec.listen_port);
        // Behind another hop, the client address is only known from that hop's header,
        // and only used with `set_real_ip_from`; else nginx knows a unix socket.
        let src = if self.spec.accept_proxy {
            if self.spec.real_ip_from_header {
                c.header_source
            } else {
                None
            }
        } else {
            Some(c.remote)
        };
        match (self.spec.send_proxy.as_str(), src) {
            ("v1", Some(s)) => proxy_protocol::encode_v1(Some((s, same_family(dst, s)))),
            ("v1", None) | ("unknown", _) => proxy_protocol::encode_v1(None),
            ("v2", Some(s)) => proxy_protocol::encode_v2(Some((s, same_family(dst, s)))),
            ("v2", None) => proxy_protocol::encode_v2(None),
            ("v1-unix", Some(s)) => format!(
                "PROXY TCP4 {} unix:/tmp/tls.sock {} 0\r\n",
                s.ip(),
                s.port()
            )
            .into_bytes(),
            ("v1-unix", None) => proxy_protocol::encode_v1(None),
            _ => Vec::new(),
        }
    }
}

/// `dst` in the family of `src` (a v4 hop speaking for a v6 client writes its address
/// as v4-mapped).
fn same_family(dst: SocketAddr, src: SocketAddr) -> SocketAddr {
    match (dst.ip(), src.ip()) {
        (IpAddr::V4(v4), IpAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), dst.port())
        }
        _ => dst,
    }
}
