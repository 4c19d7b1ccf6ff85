//! Tools of the adversarial suite (`tests/adversarial_*.rs`): a raw TURN session over UDP
//! or TCP whose every byte the test controls, answers read as "this code" or "no answer",
//! XOR-PEER-ADDRESS values for any address (IPv6 included), sockets bound to many loopback
//! sources, and the server's resident memory.
//!
//! Everything stays on loopback; every loop is bounded by a count and a deadline.

use crate::turn::{
    long_term_key, Class, Message, MAGIC_COOKIE, NONCE, REALM, REQUESTED_TRANSPORT, USERNAME,
    XOR_RELAYED_ADDRESS,
};
use crate::{RunningServer, ServerKind, ServerSpec};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// CHANNEL-NUMBER (RFC 8656 §18.1).
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// DATA (RFC 8656 §18.4).
pub const DATA: u16 = 0x0013;
/// ChannelBind (RFC 8656 §12).
pub const CHANNEL_BIND: u16 = 0x009;
/// Send (RFC 8656 §11), an indication.
pub const SEND: u16 = 0x006;
/// MESSAGE-INTEGRITY (RFC 8489 §14.5).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.12).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// SOFTWARE (RFC 8489 §14.14).
pub const SOFTWARE: u16 = 0x8022;

/// The user every adversarial server knows.
pub const USER: &str = "mallory-test";
/// Its password.
pub const PASSWORD: &str = "not-a-secret";

/// How long "no answer" waits: long enough for a loopback answer, short enough to keep
/// the suite fast.
pub const SILENCE: Duration = Duration::from_millis(400);

/// What the server did with one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A success response.
    Success,
    /// An error response with this code.
    Error(u16),
    /// Nothing within [`SILENCE`] (or the stream was closed).
    Nothing,
    /// The stream was closed by the server.
    Closed,
}

/// A turnpike server for the suite: one static user, loopback peers denied (the peer
/// tests need the built-in policy), extra config lines as given.
pub fn start(extra: &[(&str, &str)]) -> Option<RunningServer> {
    start_with(extra, |_| {})
}

/// As [`start`], with `adjust` applied to the spec last (e.g. to turn on PROXY headers).
pub fn start_with(
    extra: &[(&str, &str)],
    adjust: impl FnOnce(&mut ServerSpec),
) -> Option<RunningServer> {
    if !ServerKind::Turnpike.available() {
        return None;
    }
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.allow_loopback_peers = false;
    spec.extra = extra
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    adjust(&mut spec);
    Some(RunningServer::start(ServerKind::Turnpike, spec))
}

/// The value of an XOR-PEER-ADDRESS (or any XOR-…-ADDRESS) for `addr` in a message with
/// transaction id `txid` (RFC 8489 §14.2), IPv4 or IPv6.
pub fn xor_address(addr: SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 1]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 2]);
            v.extend_from_slice(&port.to_be_bytes());
            let mut mask = MAGIC_COOKIE.to_be_bytes().to_vec();
            mask.extend_from_slice(txid);
            for (o, m) in ip.octets().iter().zip(mask) {
                v.push(o ^ m);
            }
        }
    }
    v
}

/// A ChannelData message (RFC 8656 §12.4), padded to 4 bytes when `pad`.
pub fn channel_data(number: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut out = number.to_be_bytes().to_vec();
    out.extend_from_slice(
        &u16::try_from(payload.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
    if pad {
        out.resize(out.len().div_ceil(4) * 4, 0);
    }
    out
}

enum Wire {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
}

/// One client 5-tuple talking raw STUN to the server. It learns realm and nonce from the
/// first 401 and signs what it is asked to sign with the long-term key.
pub struct Session {
    wire: Wire,
    /// Realm learned from the server.
    pub realm: Option<String>,
    /// Nonce learned from the server.
    pub nonce: Option<Vec<u8>>,
    user: String,
    password: String,
}

impl Session {
    /// A UDP session from `local` (any port) to `server`.
    pub fn udp(server: SocketAddr, local: IpAddr) -> Session {
        let sock = UdpSocket::bind((local, 0)).expect("a UDP socket on loopback");
        Session::with(Wire::Udp(sock, server))
    }

    /// A TCP session from `local` to `server`, sending `preamble` first when given.
    pub fn tcp(server: SocketAddr, local: IpAddr, preamble: Option<&[u8]>) -> Session {
        let mut s = crate::turn::tcp_connect_from(local, server).expect("a TCP connection");
        s.set_nodelay(true).expect("TCP_NODELAY");
        if let Some(p) = preamble {
            s.write_all(p).expect("the preamble is written");
        }
        Session::with(Wire::Tcp(s, Vec::new()))
    }

    fn with(wire: Wire) -> Session {
        Session {
            wire,
            realm: None,
            nonce: None,
            user: USER.into(),
            password: PASSWORD.into(),
        }
    }

    /// Uses other credentials from now on.
    pub fn as_user(mut self, user: &str, password: &str) -> Session {
        self.user = user.into();
        self.password = password.into();
        self
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        match &self.wire {
            Wire::Udp(s, _) => s.local_addr().expect("a local address"),
            Wire::Tcp(s, _) => s.local_addr().expect("a local address"),
        }
    }

    /// The long-term key of this session's user in the learned realm.
    pub fn key(&self) -> Vec<u8> {
        long_term_key(
            &self.user,
            self.realm.as_deref().unwrap_or_default(),
            &self.password,
        )
    }

    /// Sends raw bytes (no answer awaited).
    pub fn send(&mut self, bytes: &[u8]) {
        match &mut self.wire {
            Wire::Udp(s, to) => {
                let _ = s.send_to(bytes, *to);
            }
            Wire::Tcp(s, _) => {
                let _ = s.write_all(bytes);
            }
        }
    }

    /// Sends raw bytes and returns the first STUN answer within [`SILENCE`].
    pub fn raw(&mut self, bytes: &[u8]) -> Reply {
        self.send(bytes);
        self.answer(SILENCE).map_or_else(|r| r, |m| reply_of(&m))
    }

    /// The next STUN message from the server within `limit`; Err(Nothing) or Err(Closed).
    pub fn answer(&mut self, limit: Duration) -> Result<Message, Reply> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Reply::Nothing);
            }
            match &mut self.wire {
                Wire::Udp(s, server) => {
                    s.set_read_timeout(Some(left)).expect("a read timeout");
                    match s.recv_from(&mut buf) {
                        Ok((n, from)) if from == *server => {
                            if let Ok(m) = Message::decode(&buf[..n]) {
                                return Ok(m);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return Err(Reply::Nothing),
                    }
                }
                Wire::Tcp(s, pending) => {
                    if let Some(m) = take_stun(pending) {
                        return Ok(m);
                    }
                    s.set_read_timeout(Some(left)).expect("a read timeout");
                    match s.read(&mut buf) {
                        Ok(0) => return Err(Reply::Closed),
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                        Err(e) if is_timeout(&e) => return Err(Reply::Nothing),
                        Err(_) => return Err(Reply::Closed),
                    }
                }
            }
        }
    }

    /// True when the server closes this TCP session within `limit` (reads and drops
    /// whatever arrives meanwhile).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let Wire::Tcp(s, _) = &mut self.wire else {
            return false;
        };
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return false,
                Err(_) => return true,
            }
        }
        false
    }

    /// `m` with USERNAME, REALM, NONCE, MESSAGE-INTEGRITY and FINGERPRINT, as learned.
    pub fn sign(&self, m: &Message) -> Vec<u8> {
        let mut m = m.clone();
        m.add(USERNAME, self.user.as_bytes())
            .add(REALM, self.realm.as_deref().unwrap_or_default().as_bytes())
            .add(NONCE, self.nonce.as_deref().unwrap_or_default());
        m.encode(Some(&self.key()), true)
    }

    /// Sends `m` signed (after one unsigned round to learn realm and nonce, if needed)
    /// and returns the answer.
    pub fn signed(&mut self, m: &Message) -> Reply {
        if self.nonce.is_none() {
            self.learn_nonce();
        }
        for _ in 0..2 {
            let bytes = self.sign(m);
            self.send(&bytes);
            match self.answer(SILENCE * 3) {
                Ok(a) if a.error_code() == Some(438) => {
                    self.nonce = a.attr(NONCE).map(<[u8]>::to_vec);
                    continue;
                }
                Ok(a) => return reply_of(&a),
                Err(r) => return r,
            }
        }
        Reply::Error(438)
    }

    /// Asks for a fresh 401 to learn realm and nonce.
    pub fn learn_nonce(&mut self) {
        let m = Message::request(crate::turn::ALLOCATE);
        self.send(&m.encode(None, true));
        if let Ok(a) = self.answer(SILENCE * 3) {
            if let Some(r) = a.attr(REALM) {
                self.realm = Some(String::from_utf8_lossy(r).into_owned());
            }
            self.nonce = a.attr(NONCE).map(<[u8]>::to_vec);
        }
    }

    /// Allocates a UDP relay; returns the relayed address.
    pub fn allocate(&mut self) -> SocketAddr {
        self.allocate_with(&[])
    }

    /// Allocates an IPv4 and an IPv6 relayed address (RFC 8656 §7.2,
    /// ADDITIONAL-ADDRESS-FAMILY); the server must relay IPv6 too.
    pub fn allocate_dual(&mut self) -> SocketAddr {
        self.allocate_with(&[(ADDITIONAL_ADDRESS_FAMILY, vec![2, 0, 0, 0])])
    }

    /// Allocates with extra attributes.
    pub fn allocate_with(&mut self, attrs: &[(u16, Vec<u8>)]) -> SocketAddr {
        let mut m = Message::request(crate::turn::ALLOCATE);
        m.add(REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        for (t, v) in attrs {
            m.add(*t, v);
        }
        if self.nonce.is_none() {
            self.learn_nonce();
        }
        let bytes = self.sign(&m);
        self.send(&bytes);
        let a = self.answer(SILENCE * 5).expect("an Allocate answer");
        assert_eq!(a.class, Class::Success, "Allocate failed: {a:?}");
        a.xor_address(XOR_RELAYED_ADDRESS)
            .expect("XOR-RELAYED-ADDRESS")
    }

    /// CreatePermission for `peer` (IPv4 or IPv6), signed.
    pub fn create_permission(&mut self, peer: SocketAddr) -> Reply {
        let mut m = Message::request(crate::turn::CREATE_PERMISSION);
        let v = xor_address(peer, &m.txid);
        m.add(crate::turn::XOR_PEER_ADDRESS, &v);
        self.signed(&m)
    }

    /// ChannelBind of `number` to `peer`, signed.
    pub fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> Reply {
        let mut m = Message::request(CHANNEL_BIND);
        let v = xor_address(peer, &m.txid);
        m.add(CHANNEL_NUMBER, &[(number >> 8) as u8, number as u8, 0, 0])
            .add(crate::turn::XOR_PEER_ADDRESS, &v);
        self.signed(&m)
    }

    /// A Send indication of `data` to `peer` (no answer is ever expected).
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Reply {
        let mut m = Message::request(SEND);
        m.class = Class::Indication;
        let v = xor_address(peer, &m.txid);
        m.add(crate::turn::XOR_PEER_ADDRESS, &v).add(DATA, data);
        self.raw(&m.encode(None, true))
    }
}

/// The reply a STUN answer stands for.
pub fn reply_of(m: &Message) -> Reply {
    match m.class {
        Class::Success => Reply::Success,
        Class::Error => Reply::Error(m.error_code().unwrap_or(0)),
        _ => Reply::Nothing,
    }
}

/// A UDP socket on loopback address 127.`b`.`c`.`d`, for floods from many sources.
pub fn udp_from(b: u8, c: u8, d: u8) -> std::io::Result<UdpSocket> {
    UdpSocket::bind((Ipv4Addr::new(127, b, c, d), 0))
}

/// Resident memory of process `pid`, KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A peer that listens on UDP 127.0.0.1 and collects what reaches it.
pub struct Sink {
    sock: UdpSocket,
}

impl Sink {
    /// A fresh sink on 127.0.0.1.
    pub fn new() -> Sink {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket");
        Sink { sock }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("a local address")
    }

    /// Datagrams received within `limit`.
    pub fn received(&self, limit: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = self
                .sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => out.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        out
    }
}

impl Default for Sink {
    fn default() -> Self {
        Sink::new()
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// One whole STUN message off the front of a stream buffer, skipping ChannelData.
fn take_stun(pending: &mut Vec<u8>) -> Option<Message> {
    loop {
        let head: [u8; 4] = pending.get(..4)?.try_into().ok()?;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let total = match head[0] >> 6 {
            0 => 20 + len,
            1 => 4 + len.div_ceil(4) * 4,
            _ => {
                pending.clear();
                return None;
            }
        };
        if pending.len() < total {
            return None;
        }
        let frame: Vec<u8> = pending.drain(..total).collect();
        if head[0] >> 6 == 0 {
            return Message::decode(&frame).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_address_of_ipv6_round_trips_through_the_test_decoder() {
        let peer: SocketAddr = "[2001:db8::7]:5000".parse().unwrap();
        let mut m = Message::request(crate::turn::CREATE_PERMISSION);
        let v = xor_address(peer, &m.txid);
        m.add(crate::turn::XOR_PEER_ADDRESS, &v);
        assert_eq!(m.xor_address(crate::turn::XOR_PEER_ADDRESS), Some(peer));
    }

    #[test]
    fn channel_data_is_padded_on_request() {
        assert_eq!(
            channel_data(0x4000, b"abc", true),
            [0x40, 0, 0, 3, b'a', b'b', b'c', 0]
        );
        assert_eq!(channel_data(0x4000, b"abc", false).len(), 7);
    }
}
