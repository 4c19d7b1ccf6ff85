//! The clients of a load run: one socket and one sans-IO TURN client each, their set-up
//! (Allocate with its 401 round, CreatePermission, ChannelBind, optionally Refresh 0),
//! and the clock they share.
//!
//! Every client binds its own loopback source address (127.1.x.y), as the clients of a
//! relay on the internet come from many addresses; `crowd` measures many clients behind
//! one address.

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as Clock};
use turnpike_core::client::{Client, ClientConfig, ClientEvent, ClientState};
use turnpike_core::{Instant, Transport};

/// How the clients send their data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// ChannelData on a bound channel (RFC 8656 §12).
    Channel,
    /// Send and Data indications (RFC 8656 §11).
    Indication,
    /// No TURN: raw datagrams to a bare forwarder (the baseline).
    Raw,
}

/// A shared monotonic clock mapped onto the core's [`Instant`].
#[derive(Clone, Copy, Debug)]
pub struct Epoch(Clock);

impl Epoch {
    /// Time starts now.
    pub fn new() -> Self {
        Epoch(Clock::now())
    }

    /// Nanoseconds since the epoch.
    pub fn nanos(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The core's view of now.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.nanos())
    }
}

impl Default for Epoch {
    fn default() -> Self {
        Self::new()
    }
}

/// The source IP of client number `i`: 127.1.0.1 onwards, skipping host parts 0 and 255.
pub fn client_ip(i: usize) -> IpAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX) % (254 * 254 * 126);
    let (a, rest) = (i / (254 * 254), i % (254 * 254));
    let (b, c) = (rest / 254, rest % 254 + 1);
    IpAddr::V4(Ipv4Addr::new(127, 1 + a as u8, b as u8, c as u8))
}

/// A client's socket.
pub enum Sock {
    /// A UDP socket connected to the server.
    Udp(UdpSocket),
    /// A TCP connection to the server.
    Tcp(TcpStream),
    /// A TLS connection to the server (TURN over TLS).
    Tls(Box<(TcpStream, rustls::ClientConnection)>),
}

/// One client.
pub struct Flow {
    /// Its socket.
    pub sock: Sock,
    /// Its TURN client (`None` in raw mode).
    pub client: Option<Client>,
    /// Set up and ready for data.
    pub ready: bool,
    /// Done: deleted (churn) or failed.
    pub done: bool,
    /// Set-up failed.
    pub failed: bool,
    /// Stream bytes the kernel did not take yet.
    pub pending: Vec<u8>,
    /// The socket was closed.
    pub closed: bool,
}

/// Opens a client socket to `server` from loopback address number `ip` (see
/// [`client_ip`]) and registers it with token `token`.
pub fn open_flow(
    poll: &Poll,
    token: usize,
    ip: usize,
    server: SocketAddr,
    transport: Transport,
    creds: Option<(&str, &str)>,
) -> io::Result<Flow> {
    let local = SocketAddr::new(client_ip(ip), 0);
    let mut sock = match transport {
        Transport::Udp => {
            let s = std::net::UdpSocket::bind(local)?;
            s.connect(server)?;
            s.set_nonblocking(true)?;
            Sock::Udp(UdpSocket::from_std(s))
        }
        Transport::Tcp => {
            let s = bind_connect_tcp(local, server)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            Sock::Tcp(TcpStream::from_std(s))
        }
    };
    let token = Token(token);
    match &mut sock {
        Sock::Udp(s) => poll.registry().register(s, token, Interest::READABLE)?,
        Sock::Tcp(s) => {
            poll.registry()
                .register(s, token, Interest::READABLE | Interest::WRITABLE)?
        }
        Sock::Tls(b) => {
            poll.registry()
                .register(&mut b.0, token, Interest::READABLE | Interest::WRITABLE)?
        }
    }
    let client = creds.map(|(user, pass)| {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(ip as u64).to_le_bytes());
        let mut cfg = ClientConfig::new(server, transport, user, pass);
        cfg.fingerprint = true;
        Client::new(cfg, seed, Instant::from_nanos(0))
    });
    Ok(Flow {
        sock,
        client,
        ready: false,
        done: false,
        failed: false,
        pending: Vec::new(),
        closed: false,
    })
}

/// As [`open_flow`] over TCP, with TLS on the stream (`config`: see
/// [`crate::tls_compare::client_config`]).
pub fn open_flow_tls(
    poll: &Poll,
    token: usize,
    ip: usize,
    server: SocketAddr,
    creds: Option<(&str, &str)>,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> io::Result<Flow> {
    let mut f = open_flow(poll, token, ip, server, Transport::Tcp, creds)?;
    let name = rustls::pki_types::ServerName::from(server.ip());
    let conn = rustls::ClientConnection::new(std::sync::Arc::clone(config), name)
        .map_err(io::Error::other)?;
    let placeholder = Sock::Udp(UdpSocket::from_std(std::net::UdpSocket::bind(
        "127.0.0.1:0",
    )?));
    if let Sock::Tcp(t) = std::mem::replace(&mut f.sock, placeholder) {
        f.sock = Sock::Tls(Box::new((t, conn)));
    }
    // The ClientHello.
    f.push_tls();
    Ok(f)
}

impl Flow {
    /// Moves the records a TLS session has ready to the socket (or `pending`).
    fn push_tls(&mut self) {
        let Sock::Tls(b) = &mut self.sock else {
            return;
        };
        let (_, conn) = &mut **b;
        let mut records = Vec::new();
        while conn.wants_write() {
            if conn.write_tls(&mut records).is_err() {
                break;
            }
        }
        if !records.is_empty() {
            self.write_stream(&records);
        }
    }

    /// Writes `bytes` to the stream socket, queueing what the kernel does not take.
    fn write_stream(&mut self, bytes: &[u8]) {
        let s = match &mut self.sock {
            Sock::Tcp(s) => s,
            Sock::Tls(b) => &mut b.0,
            Sock::Udp(_) => return,
        };
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(bytes);
            return;
        }
        match s.write(bytes) {
            Ok(n) if n == bytes.len() => {}
            Ok(n) => self
                .pending
                .extend_from_slice(bytes.get(n..).unwrap_or(&[])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.pending.extend_from_slice(bytes)
            }
            Err(_) => self.closed = true,
        }
    }

    /// Writes `bytes` to the server: one datagram, or the stream (queued when the kernel
    /// buffer is full). Returns false if a datagram could not be sent.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        match &mut self.sock {
            Sock::Udp(s) => s.send(bytes).is_ok(),
            Sock::Tcp(_) => {
                self.write_stream(bytes);
                true
            }
            Sock::Tls(b) => {
                // Plaintext waits in the session until the handshake is done.
                if b.1.writer().write_all(bytes).is_err() {
                    self.closed = true;
                }
                self.push_tls();
                true
            }
        }
    }

    /// Pushes queued stream bytes.
    pub fn flush_pending(&mut self) {
        let s = match &mut self.sock {
            Sock::Tcp(s) => s,
            Sock::Tls(b) => &mut b.0,
            Sock::Udp(_) => return,
        };
        while !self.pending.is_empty() {
            match s.write(&self.pending) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Sends what the TURN client queued.
    pub fn flush_client(&mut self) {
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(bytes) = c.poll_transmit() {
            out.push(bytes);
        }
        for bytes in out {
            self.write(&bytes);
        }
    }

    /// Reads one datagram or one chunk of the stream into `buf`. `Ok(0)` means nothing
    /// more now (or, on a stream, that it closed: `closed` is then set).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = match &mut self.sock {
            Sock::Udp(s) => s.recv(buf),
            Sock::Tcp(s) => match s.read(buf) {
                Ok(0) => {
                    self.closed = true;
                    Ok(0)
                }
                r => r,
            },
            Sock::Tls(_) => self.read_tls(buf),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(0),
            r => r,
        }
    }

    /// Plaintext of a TLS stream: what the session holds, else what the socket brings.
    fn read_tls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Sock::Tls(b) = &mut self.sock else {
                return Ok(0);
            };
            let (sock, conn) = &mut **b;
            match conn.reader().read(buf) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match conn.read_tls(sock) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(0);
                }
                Ok(_) => {
                    let r = conn.process_new_packets();
                    self.push_tls();
                    if let Err(e) = r {
                        return Err(io::Error::other(e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deregisters and closes the socket.
    pub fn close(&mut self, poll: &Poll) {
        if self.closed {
            return;
        }
        let _ = match &mut self.sock {
            Sock::Udp(s) => poll.registry().deregister(s),
            Sock::Tcp(s) => poll.registry().deregister(s),
            Sock::Tls(b) => poll.registry().deregister(&mut b.0),
        };
        self.closed = true;
        // Replace the socket so the descriptor is freed now.
        if let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") {
            self.sock = Sock::Udp(UdpSocket::from_std(s));
        }
    }
}

/// What [`establish`] does once a client is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Then {
    /// Keep the allocation for data.
    Keep,
    /// Delete it with a zero-lifetime Refresh and close the socket (allocation churn).
    Delete,
}

/// How [`establish`] sets clients up.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// The peer to permit and bind a channel to.
    pub peer: SocketAddr,
    /// Channel or indications (raw flows need no set-up).
    pub mode: Mode,
    /// Keep or delete the allocations.
    pub then: Then,
    /// Most clients being set up at once.
    pub concurrency: usize,
    /// When to give up.
    pub deadline: Duration,
}

/// Sets up every flow: Allocate (the client answers the 401 itself), CreatePermission for
/// `peer`'s IP, then ChannelBind to `peer` in [`Mode::Channel`]; at most `concurrency`
/// clients at a time. With [`Then::Delete`] each is then deleted (Refresh 0) and closed.
/// Returns the number of clients that made it; gives up at `deadline`.
pub fn establish(poll: &mut Poll, flows: &mut [Flow], plan: Plan, epoch: &Epoch) -> usize {
    let Plan {
        peer,
        mode,
        then,
        concurrency,
        deadline,
    } = plan;
    let start = Clock::now();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 65_536];
    let mut next = 0usize;
    let mut active: Vec<usize> = Vec::new();
    let mut succeeded = 0usize;
    loop {
        while active.len() < concurrency && next < flows.len() {
            if let Some(f) = flows.get_mut(next) {
                if let Some(c) = f.client.as_mut() {
                    c.allocate(epoch.now());
                }
                f.flush_client();
                active.push(next);
            }
            next += 1;
        }
        if active.is_empty() || start.elapsed() >= deadline {
            break;
        }
        let _ = poll.poll(&mut events, Some(Duration::from_millis(5)));
        let now = epoch.now();
        for ev in events.iter() {
            let Some(f) = flows.get_mut(ev.token().0) else {
                continue;
            };
            if f.done || f.closed {
                continue;
            }
            f.flush_pending();
            loop {
                let n = match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let (Some(c), Some(data)) = (f.client.as_mut(), buf.get(..n)) {
                    c.handle_input(now, data);
                }
            }
        }
        let mut i = 0;
        while let Some(&idx) = active.get(i) {
            let Some(f) = flows.get_mut(idx) else {
                active.swap_remove(i);
                continue;
            };
            step(f, now, peer, mode, then);
            if (f.ready && then == Then::Keep) || f.done {
                if f.ready {
                    succeeded += 1;
                }
                if then == Then::Delete || f.failed {
                    f.close(poll);
                }
                active.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
    succeeded
}

/// Runs a flow's timers and reacts to its events.
fn step(f: &mut Flow, now: Instant, peer: SocketAddr, mode: Mode, then: Then) {
    let Some(c) = f.client.as_mut() else {
        f.ready = true;
        return;
    };
    if c.poll_timeout().is_some_and(|t| t <= now) {
        c.handle_timeout(now);
    }
    while let Some(ev) = c.poll_event() {
        match ev {
            ClientEvent::Allocated { .. } => {
                c.create_permission(now, &[peer.ip()]);
                if mode == Mode::Indication {
                    continue;
                }
                if c.channel_bind(now, peer).is_none() {
                    f.failed = true;
                }
            }
            ClientEvent::PermissionCreated { .. } if mode == Mode::Indication => {
                f.ready = true;
                if then == Then::Delete {
                    c.refresh(now, 0);
                }
            }
            ClientEvent::ChannelBound { .. } => {
                f.ready = true;
                if then == Then::Delete {
                    c.refresh(now, 0);
                }
            }
            ClientEvent::Deleted | ClientEvent::RefreshFailed { .. } => f.done = true,
            ClientEvent::AllocateFailed { .. }
            | ClientEvent::PermissionFailed { .. }
            | ClientEvent::ChannelBindFailed { .. }
            | ClientEvent::TimedOut { .. }
            | ClientEvent::StreamError => {
                f.failed = true;
            }
            _ => {}
        }
    }
    if matches!(c.state(), ClientState::Failed | ClientState::Expired) {
        f.failed = true;
    }
    if f.failed || f.closed {
        f.ready = false;
        f.done = true;
    }
    f.flush_client();
}

/// A TCP connection from `local` (a loopback address of ours) to `server`.
fn bind_connect_tcp(local: SocketAddr, server: SocketAddr) -> io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let family = if server.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket creation; the descriptor is owned by the TcpStream below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let (l, ll) = sockaddr(local);
    // SAFETY: `l` is a valid sockaddr of length `ll`.
    if unsafe { libc::bind(fd, (&l as *const libc::sockaddr_storage).cast(), ll) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (s, sl) = sockaddr(server);
    // SAFETY: `s` is a valid sockaddr of length `sl`; a blocking connect on loopback.
    if unsafe { libc::connect(fd, (&s as *const libc::sockaddr_storage).cast(), sl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin) };
            (
                st,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                st,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ips_are_distinct_loopback_hosts() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..70_000 {
            let ip = client_ip(i);
            let IpAddr::V4(v4) = ip else { panic!() };
            assert!(v4.is_loopback());
            assert!(v4.octets()[3] != 0 && v4.octets()[3] != 255);
            assert!(seen.insert(ip));
        }
    }

    #[test]
    fn tcp_bind_connect_uses_the_source_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s =
            bind_connect_tcp(SocketAddr::new(client_ip(7), 0), l.local_addr().unwrap()).unwrap();
        assert_eq!(s.local_addr().unwrap().ip(), client_ip(7));
    }
}
