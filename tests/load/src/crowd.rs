//! A crowd behind one address: many clients from 127.0.0.1 (one port each), as an office
//! or carrier NAT presents them, each doing Allocate with its 401 round, started at a fixed
//! offered rate. Measured: clients that never got an answer, the time from a client's
//! first request to its first answer, allocations made (or, with a wrong password, 401s
//! seen), and the server's CPU. And reflection: one source sending the smallest
//! unauthenticated request (a bare 20-byte Allocate) at a fixed rate, bytes out ÷ bytes in.

use crate::flows::Epoch;
use crate::procfs;
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant as Clock};
use turnpike_core::client::{Client, ClientConfig, ClientEvent};
use turnpike_core::Transport;

/// What a crowd run does.
#[derive(Clone, Copy, Debug)]
pub struct Crowd {
    /// Clients, all from 127.0.0.1.
    pub clients: usize,
    /// Clients started per second.
    pub rate: f64,
    /// UDP or TCP.
    pub transport: Transport,
    /// Sign with a wrong password: every client must see 401 (twice).
    pub wrong_password: bool,
    /// The run ends at the latest this long after its start.
    pub limit: Duration,
}

/// What a crowd run measured.
#[derive(Clone, Debug, Default)]
pub struct CrowdResult {
    /// Clients started.
    pub started: usize,
    /// Clients that got no answer at all.
    pub unanswered: usize,
    /// Per answered client: time from its first request to its first answer, sorted.
    pub first_answer: Vec<Duration>,
    /// From the first client's start to the last client's first answer.
    pub all_answered_after: Duration,
    /// Allocations made.
    pub allocated: usize,
    /// Clients that ended on a 401 (the wrong-password run's goal).
    pub saw_401: usize,
    /// Clients that ended otherwise (timeout, other error code).
    pub failed: usize,
    /// Those by error code (0: timed out, 1: the server closed the stream first).
    pub failures: std::collections::BTreeMap<u16, usize>,
    /// Server CPU-seconds during the run, when its PID was given.
    pub server_cpu: Option<f64>,
}

impl CrowdResult {
    /// The `q`-quantile of the time to a first answer.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.first_answer.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.first_answer.len() - 1) as f64 * q).round() as usize;
        self.first_answer[i.min(self.first_answer.len() - 1)]
    }

    /// The longest time to a first answer.
    pub fn max(&self) -> Duration {
        self.first_answer.last().copied().unwrap_or_default()
    }

    /// One line.
    pub fn summary(&self) -> String {
        let cpu = self
            .server_cpu
            .map(|c| format!(", server {c:.2} CPU-s"))
            .unwrap_or_default();
        format!(
            "{} clients: {} without an answer; first answer p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; all answered {:.2} s after the start; {} allocated, {} ended on 401, {} failed {:?}{cpu}",
            self.started,
            self.unanswered,
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.max()),
            self.all_answered_after.as_secs_f64(),
            self.allocated,
            self.saw_401,
            self.failed,
            self.failures,
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One client of the crowd.
struct Member {
    sock: Option<Sock>,
    client: Option<Client>,
    started: Option<Clock>,
    answered: Option<Clock>,
    /// Stream bytes the kernel did not take yet.
    pending: Vec<u8>,
    done: bool,
}

enum Sock {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// Runs a crowd against `server` (on loopback), measuring `pid`'s CPU when given.
pub fn crowd(server: SocketAddr, pid: Option<u32>, c: Crowd) -> Result<CrowdResult, String> {
    if !server.ip().is_loopback() {
        return Err("loopback servers only".into());
    }
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let (user, pass) = (
        crate::servers::USER,
        if c.wrong_password {
            "wrong-password"
        } else {
            crate::servers::PASS
        },
    );
    let mut members: Vec<Member> = (0..c.clients)
        .map(|_| Member {
            sock: None,
            client: None,
            started: None,
            answered: None,
            pending: Vec::new(),
            done: false,
        })
        .collect();
    let epoch = Epoch::new();
    let cpu0 = pid.and_then(|p| procfs::cpu_seconds(p).ok());
    let t0 = Clock::now();
    let interval = Duration::from_secs_f64(1.0 / c.rate.max(1.0));
    let mut next_start = 0usize;
    let mut buf = vec![0u8; 65_536];
    let mut result = CrowdResult::default();
    let mut open = 0usize;
    loop {
        let elapsed = t0.elapsed();
        if elapsed > c.limit || (next_start == c.clients && open == 0) {
            break;
        }
        // Start the clients that are due.
        while next_start < c.clients && interval * next_start as u32 <= elapsed {
            let i = next_start;
            next_start += 1;
            let m = &mut members[i];
            match open_sock(&poll, i, server, c.transport) {
                Ok(s) => m.sock = Some(s),
                Err(e) => {
                    eprintln!("client {i}: {e}");
                    m.done = true;
                    result.failed += 1;
                    continue;
                }
            }
            let now = epoch.now();
            let mut cfg = ClientConfig::new(server, c.transport, user, pass);
            cfg.fingerprint = true;
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut client = Client::new(cfg, seed, now);
            client.allocate(now);
            m.client = Some(client);
            m.started = Some(Clock::now());
            open += 1;
            result.started += 1;
            flush(m);
        }
        // Wait for input, the next start or the next retransmission.
        let now = epoch.now();
        let mut wait = Duration::from_millis(10);
        if next_start < c.clients {
            let due = interval * next_start as u32;
            wait = wait.min(due.saturating_sub(t0.elapsed()));
        }
        poll.poll(&mut events, Some(wait))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(m) = members.get_mut(i) else {
                continue;
            };
            if m.done {
                continue;
            }
            if ev.is_writable() {
                flush(m);
            }
            if ev.is_readable() {
                read_into(m, &mut buf, &epoch);
            }
            finish_if_done(m, &mut result, &mut open);
        }
        // Retransmissions and give-ups.
        let now2 = epoch.now();
        for m in members.iter_mut().filter(|m| !m.done && m.client.is_some()) {
            if let Some(cl) = m.client.as_mut() {
                if cl.poll_timeout().is_some_and(|t| t <= now2) {
                    cl.handle_timeout(now2);
                }
            }
            flush(m);
            finish_if_done(m, &mut result, &mut open);
        }
        let _ = now;
    }
    let cpu1 = pid.and_then(|p| procfs::cpu_seconds(p).ok());
    result.server_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    for m in &members {
        match (m.started, m.answered) {
            (Some(s), Some(a)) => {
                result.first_answer.push(a.duration_since(s));
                result.all_answered_after = result.all_answered_after.max(a.duration_since(t0));
            }
            (Some(_), None) => result.unanswered += 1,
            _ => {}
        }
        if m.started.is_some() && !m.done {
            result.failed += 1;
        }
    }
    result.first_answer.sort();
    Ok(result)
}

fn open_sock(poll: &Poll, i: usize, server: SocketAddr, t: Transport) -> io::Result<Sock> {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut s = match t {
        Transport::Udp => {
            let s = std::net::UdpSocket::bind(local)?;
            s.connect(server)?;
            s.set_nonblocking(true)?;
            Sock::Udp(UdpSocket::from_std(s))
        }
        Transport::Tcp => {
            let s = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            Sock::Tcp(TcpStream::from_std(s))
        }
    };
    match &mut s {
        Sock::Udp(u) => poll.registry().register(u, Token(i), Interest::READABLE)?,
        Sock::Tcp(tc) => {
            poll.registry()
                .register(tc, Token(i), Interest::READABLE | Interest::WRITABLE)?
        }
    }
    Ok(s)
}

/// Sends what the client has to send (and what a stream left pending).
fn flush(m: &mut Member) {
    let (Some(sock), Some(client)) = (m.sock.as_mut(), m.client.as_mut()) else {
        return;
    };
    while let Some(bytes) = client.poll_transmit() {
        match sock {
            Sock::Udp(u) => {
                let _ = u.send(&bytes);
            }
            Sock::Tcp(_) => m.pending.extend_from_slice(&bytes),
        }
    }
    if let Sock::Tcp(t) = sock {
        while !m.pending.is_empty() {
            match t.write(&m.pending) {
                Ok(0) => break,
                Ok(n) => {
                    m.pending.drain(..n);
                }
                Err(_) => break,
            }
        }
    }
}

/// Reads what arrived and feeds the client.
fn read_into(m: &mut Member, buf: &mut [u8], epoch: &Epoch) {
    let (Some(sock), Some(client)) = (m.sock.as_mut(), m.client.as_mut()) else {
        return;
    };
    // Bounded: a socket that keeps delivering is read again on the next round.
    for _ in 0..64 {
        let n = match sock {
            Sock::Udp(u) => match u.recv(buf) {
                Ok(n) => n,
                Err(_) => break,
            },
            Sock::Tcp(t) => match t.read(buf) {
                Ok(0) => {
                    m.done = true;
                    break;
                }
                Ok(n) => n,
                Err(_) => break,
            },
        };
        if m.answered.is_none() {
            m.answered = Some(Clock::now());
        }
        client.handle_input(epoch.now(), &buf[..n]);
    }
    flush(m);
}

/// Ends a client whose Allocate is settled: counted, socket closed.
fn finish_if_done(m: &mut Member, r: &mut CrowdResult, open: &mut usize) {
    let Some(client) = m.client.as_mut() else {
        return;
    };
    let closed = m.done;
    let mut ended = false;
    while let Some(ev) = client.poll_event() {
        match ev {
            ClientEvent::Allocated { .. } => {
                r.allocated += 1;
                ended = true;
            }
            ClientEvent::AllocateFailed { code: 401, .. } => {
                r.saw_401 += 1;
                ended = true;
            }
            ClientEvent::AllocateFailed { code, .. } => {
                r.failed += 1;
                *r.failures.entry(code).or_default() += 1;
                ended = true;
            }
            ClientEvent::TimedOut { .. } => {
                r.failed += 1;
                *r.failures.entry(0).or_default() += 1;
                ended = true;
            }
            _ => {}
        }
    }
    if closed && !ended {
        // The server closed the stream before the Allocate was settled.
        r.failed += 1;
        *r.failures.entry(1).or_default() += 1;
        ended = true;
    }
    if ended && m.client.is_some() {
        m.done = true;
        // Closing a stream ends its allocation. A UDP socket stays open until the run
        // ends: a later client given the same port would find the allocation (437).
        if let Some(Sock::Tcp(_)) = m.sock {
            m.sock = None;
        }
        m.client = None;
        *open = open.saturating_sub(1);
    }
}

/// What a reflection run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reflection {
    /// Bare Allocates sent.
    pub requests: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Answers received.
    pub answers: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Seconds of sending.
    pub seconds: f64,
}

impl Reflection {
    /// Bytes out ÷ bytes in.
    pub fn ratio(&self) -> f64 {
        self.bytes_out as f64 / self.bytes_in.max(1) as f64
    }

    /// One line.
    pub fn summary(&self) -> String {
        format!(
            "{} requests ({} B) in {:.2} s, {} answers ({} B): out/in {:.2}, {:.0} B/s out",
            self.requests,
            self.bytes_in,
            self.seconds,
            self.answers,
            self.bytes_out,
            self.ratio(),
            self.bytes_out as f64 / self.seconds.max(1e-9),
        )
    }
}

/// One source (127.0.0.1, one port) sends bare 20-byte Allocates to `server` at `rate` a
/// second for `seconds` (at most 60), and counts what comes back.
pub fn reflect(server: SocketAddr, rate: f64, seconds: f64) -> Result<Reflection, String> {
    if !server.ip().is_loopback() {
        return Err("loopback servers only".into());
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.connect(server).map_err(|e| e.to_string())?;
    let reader = sock.try_clone().map_err(|e| e.to_string())?;
    reader
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let counter = std::thread::spawn(move || {
        let (mut answers, mut bytes) = (0u64, 0u64);
        let mut buf = [0u8; 2048];
        while let Ok(n) = reader.recv(&mut buf) {
            answers += 1;
            bytes += n as u64;
        }
        (answers, bytes)
    });
    let seconds = seconds.clamp(0.1, 60.0);
    let total = (rate * seconds).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let t0 = Clock::now();
    let mut r = Reflection::default();
    let mut tid = [0u8; 12];
    for i in 0..total {
        // Paced: no faster than the rate, in bursts of at most 16.
        let due = interval * u32::try_from(i).unwrap_or(u32::MAX);
        let now = t0.elapsed();
        if due > now + Duration::from_micros(200) {
            std::thread::sleep(due - now);
        }
        tid[..8].copy_from_slice(&i.to_le_bytes());
        let req = bare_allocate(&tid);
        if sock.send(&req).is_ok() {
            r.requests += 1;
            r.bytes_in += req.len() as u64;
        }
        if t0.elapsed().as_secs_f64() > seconds * 2.0 + 1.0 {
            break;
        }
    }
    r.seconds = t0.elapsed().as_secs_f64();
    let (answers, bytes) = counter
        .join()
        .map_err(|_| "the counting thread panicked".to_string())?;
    r.answers = answers;
    r.bytes_out = bytes;
    Ok(r)
}

/// An Allocate request with no attribute at all (RFC 8489 §5: the 20-byte header), the
/// smallest request that earns a 401.
fn bare_allocate(tid: &[u8; 12]) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&0x0003u16.to_be_bytes());
    m[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    m[8..20].copy_from_slice(tid);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bare_allocate_parses_as_one() {
        let m = bare_allocate(&[7; 12]);
        let msg = turnpike_core::stun::Message::parse(&m).unwrap();
        assert_eq!(msg.method(), turnpike_core::stun::Method::ALLOCATE);
        assert_eq!(msg.class(), turnpike_core::stun::Class::Request);
    }

    #[test]
    fn quantiles() {
        let r = CrowdResult {
            first_answer: (1..=100).map(Duration::from_millis).collect(),
            ..CrowdResult::default()
        };
        assert_eq!(r.quantile(0.5), Duration::from_millis(51));
        assert_eq!(r.max(), Duration::from_millis(100));
        assert_eq!(CrowdResult::default().quantile(0.5), Duration::ZERO);
    }
}
