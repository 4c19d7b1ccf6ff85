//! A minimal STUN/TURN client for the tests (RFC 8489, RFC 8656): just what a test needs to
//! open, count and delete allocations by hand (Allocate, Refresh, Binding) over UDP or TCP,
//! with long-term credentials, optionally behind a PROXY protocol header.
//!
//! It is written here, apart from the relay's own code, so that a bug in the relay's codec
//! cannot hide itself by being shared with the test that should catch it.

use hmac::{Hmac, Mac};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// The magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Method: Binding (RFC 8489 §18.2).
pub const BINDING: u16 = 0x001;
/// Method: Allocate (RFC 8656 §18.1).
pub const ALLOCATE: u16 = 0x003;
/// Method: Refresh (RFC 8656 §18.1).
pub const REFRESH: u16 = 0x004;
/// Method: CreatePermission (RFC 8656 §18.1).
pub const CREATE_PERMISSION: u16 = 0x008;

/// Attribute: USERNAME.
pub const USERNAME: u16 = 0x0006;
/// Attribute: MESSAGE-INTEGRITY.
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// Attribute: ERROR-CODE.
pub const ERROR_CODE: u16 = 0x0009;
/// Attribute: LIFETIME.
pub const LIFETIME: u16 = 0x000D;
/// Attribute: XOR-PEER-ADDRESS.
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// Attribute: REALM.
pub const REALM: u16 = 0x0014;
/// Attribute: NONCE.
pub const NONCE: u16 = 0x0015;
/// Attribute: XOR-RELAYED-ADDRESS.
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// Attribute: REQUESTED-TRANSPORT.
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// Attribute: XOR-MAPPED-ADDRESS.
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Attribute: FINGERPRINT.
pub const FINGERPRINT: u16 = 0x8028;

/// The class of a STUN message (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A request.
    Request,
    /// An indication.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A STUN message: type, transaction id and attributes in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Method.
    pub method: u16,
    /// Class.
    pub class: Class,
    /// Transaction id.
    pub txid: [u8; 12],
    /// Attributes (type, value without padding), in wire order.
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl Message {
    /// A request of `method` with a fresh random transaction id.
    pub fn request(method: u16) -> Message {
        let mut txid = [0u8; 12];
        let a = random_u64().to_be_bytes();
        let b = random_u64().to_be_bytes();
        txid[..8].copy_from_slice(&a);
        txid[8..].copy_from_slice(&b[..4]);
        Message {
            method,
            class: Class::Request,
            txid,
            attrs: Vec::new(),
        }
    }

    /// Appends attribute `t` with value `v`.
    pub fn add(&mut self, t: u16, v: &[u8]) -> &mut Self {
        self.attrs.push((t, v.to_vec()));
        self
    }

    /// The value of the first attribute `t`.
    pub fn attr(&self, t: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    }

    /// The ERROR-CODE number (e.g. 401), if any (RFC 8489 §14.8).
    pub fn error_code(&self) -> Option<u16> {
        let v = self.attr(ERROR_CODE)?;
        let class = u16::from(*v.get(2)? & 0x07);
        let number = u16::from(*v.get(3)?);
        Some(class * 100 + number)
    }

    /// The ERROR-CODE reason phrase, if any.
    pub fn error_reason(&self) -> String {
        self.attr(ERROR_CODE)
            .and_then(|v| v.get(4..))
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .unwrap_or_default()
    }

    /// Decodes an XOR-…-ADDRESS attribute `t` (RFC 8489 §14.2).
    pub fn xor_address(&self, t: u16) -> Option<SocketAddr> {
        let v = self.attr(t)?;
        let family = *v.get(1)?;
        let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
        match family {
            0x01 => {
                let raw: [u8; 4] = v.get(4..8)?.try_into().ok()?;
                let ip = u32::from_be_bytes(raw) ^ MAGIC_COOKIE;
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
            }
            0x02 => {
                let raw: [u8; 16] = v.get(4..20)?.try_into().ok()?;
                let mut mask = [0u8; 16];
                mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                mask[4..].copy_from_slice(&self.txid);
                let mut ip = [0u8; 16];
                for (o, (a, b)) in ip.iter_mut().zip(raw.iter().zip(mask.iter())) {
                    *o = a ^ b;
                }
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
            }
            _ => None,
        }
    }

    /// Encodes the message; with `key`, adds MESSAGE-INTEGRITY (RFC 8489 §14.5); with
    /// `fingerprint`, adds FINGERPRINT last (RFC 8489 §14.7).
    pub fn encode(&self, key: Option<&[u8]>, fingerprint: bool) -> Vec<u8> {
        let class_bits: u16 = match self.class {
            Class::Request => 0x0000,
            Class::Indication => 0x0010,
            Class::Success => 0x0100,
            Class::Error => 0x0110,
        };
        let m = self.method;
        let msg_type = (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | class_bits;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&msg_type.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.txid);
        for (t, v) in &self.attrs {
            push_attr(&mut out, *t, v);
        }
        if let Some(key) = key {
            // The length covers MESSAGE-INTEGRITY itself when the HMAC is computed.
            let len = out.len() - 20 + 24;
            set_len(&mut out, len);
            let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            mac.update(&out);
            let tag = mac.finalize().into_bytes();
            push_attr(&mut out, MESSAGE_INTEGRITY, &tag);
        }
        if fingerprint {
            let len = out.len() - 20 + 8;
            set_len(&mut out, len);
            let crc = crc32fast::hash(&out) ^ 0x5354_554E;
            push_attr(&mut out, FINGERPRINT, &crc.to_be_bytes());
        }
        let body = out.len() - 20;
        set_len(&mut out, body);
        out
    }

    /// Decodes one whole STUN message.
    pub fn decode(buf: &[u8]) -> Result<Message, String> {
        let header: [u8; 20] = buf
            .get(..20)
            .and_then(|h| h.try_into().ok())
            .ok_or("shorter than a STUN header")?;
        let msg_type = u16::from_be_bytes([header[0], header[1]]);
        if msg_type & 0xC000 != 0 {
            return Err(format!("not STUN: first bits of type {msg_type:#06x}"));
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE {
            return Err("no magic cookie".into());
        }
        let body = buf
            .get(20..20 + len)
            .ok_or("message length beyond the bytes received")?;
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&header[8..20]);
        let method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2);
        let class = match msg_type & 0x0110 {
            0x0000 => Class::Request,
            0x0010 => Class::Indication,
            0x0100 => Class::Success,
            _ => Class::Error,
        };
        let mut attrs = Vec::new();
        let mut at = 0usize;
        while at + 4 <= body.len() {
            let t = u16::from_be_bytes([body[at], body[at + 1]]);
            let l = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
            let v = body
                .get(at + 4..at + 4 + l)
                .ok_or("attribute beyond the message")?;
            attrs.push((t, v.to_vec()));
            at += 4 + l.div_ceil(4) * 4;
        }
        Ok(Message {
            method,
            class,
            txid,
            attrs,
        })
    }
}

/// The long-term credential key MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
pub fn long_term_key(user: &str, realm: &str, password: &str) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(format!("{user}:{realm}:{password}").as_bytes()).to_vec()
}

/// A Binding request with FINGERPRINT, ready to send (for readiness probes).
pub fn binding_request() -> Vec<u8> {
    Message::request(BINDING).encode(None, true)
}

/// A PROXY protocol v1 header claiming `client` connected to `server` (TCP4/TCP6).
pub fn proxy_v1(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let fam = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        client.ip(),
        server.ip(),
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// A TCP connection to `server` from `local` (any port), so that a test can appear to come
/// from several loopback addresses (127.0.0.0/8 is all loopback on Linux).
pub fn tcp_connect_from(local: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if server.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::new(local, 0).into())?;
    s.connect_timeout(&server.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// How a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this error code and reason.
    Refused(u16, String),
    /// No answer, a broken connection, or an answer we could not read.
    Transport(String),
}

impl Failure {
    /// The error code, when the server answered one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Failure::Refused(c, _) => Some(*c),
            Failure::Transport(_) => None,
        }
    }
}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
}

/// One TURN client: one transport connection (one 5-tuple), so at most one allocation.
pub struct TurnClient {
    conn: Conn,
    user: String,
    password: String,
    realm: Option<String>,
    nonce: Option<Vec<u8>>,
}

impl TurnClient {
    /// A client on a fresh UDP socket (bound to 127.0.0.1) talking to `server`.
    pub fn udp(server: SocketAddr, user: &str, password: &str) -> std::io::Result<TurnClient> {
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (Ipv6Addr::LOCALHOST, 0).into()
        };
        let sock = UdpSocket::bind(local)?;
        Ok(Self::with(Conn::Udp(sock, server), user, password))
    }

    /// A client on a new TCP connection to `server` from `local`, which first sends
    /// `preamble` (e.g. a PROXY header) when given.
    pub fn tcp(
        server: SocketAddr,
        local: IpAddr,
        preamble: Option<&[u8]>,
        user: &str,
        password: &str,
    ) -> std::io::Result<TurnClient> {
        let mut s = tcp_connect_from(local, server)?;
        s.set_nodelay(true)?;
        if let Some(p) = preamble {
            s.write_all(p)?;
        }
        Ok(Self::with(Conn::Tcp(s, Vec::new()), user, password))
    }

    fn with(conn: Conn, user: &str, password: &str) -> TurnClient {
        TurnClient {
            conn,
            user: user.into(),
            password: password.into(),
            realm: None,
            nonce: None,
        }
    }

    /// This client's local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.conn {
            Conn::Udp(s, _) => s.local_addr(),
            Conn::Tcp(s, _) => s.local_addr(),
        }
    }

    /// A Binding request; returns the XOR-MAPPED-ADDRESS (the server's view of us).
    pub fn binding(&mut self) -> Result<SocketAddr, Failure> {
        let mut req = Message::request(BINDING);
        req.attrs.clear();
        let resp = self.exchange(&req.encode(None, true), &req.txid)?;
        match resp.class {
            Class::Success => resp
                .xor_address(XOR_MAPPED_ADDRESS)
                .ok_or(Failure::Transport("no XOR-MAPPED-ADDRESS".into())),
            _ => Err(Failure::Refused(
                resp.error_code().unwrap_or(0),
                resp.error_reason(),
            )),
        }
    }

    /// An Allocate request for a UDP relay (RFC 8656 §7.1), authenticating with the
    /// long-term mechanism; returns the relayed address.
    pub fn allocate(&mut self) -> Result<SocketAddr, Failure> {
        let resp = self.authenticated(ALLOCATE, &[(REQUESTED_TRANSPORT, vec![17, 0, 0, 0])])?;
        resp.xor_address(XOR_RELAYED_ADDRESS)
            .ok_or_else(|| Failure::Transport("success without XOR-RELAYED-ADDRESS".into()))
    }

    /// A Refresh request with LIFETIME `lifetime_s` (0 deletes the allocation, RFC 8656 §8).
    pub fn refresh(&mut self, lifetime_s: u32) -> Result<(), Failure> {
        self.authenticated(REFRESH, &[(LIFETIME, lifetime_s.to_be_bytes().to_vec())])
            .map(|_| ())
    }

    /// A CreatePermission request for `peer` (RFC 8656 §9).
    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<(), Failure> {
        self.authenticated(
            CREATE_PERMISSION,
            &[(XOR_PEER_ADDRESS, xor_address_value(peer))],
        )
        .map(|_| ())
    }

    /// Sends a request with credentials, learning realm and nonce from a 401 / 438 answer
    /// first (RFC 8489 §9.2.3); at most three rounds.
    fn authenticated(&mut self, method: u16, attrs: &[(u16, Vec<u8>)]) -> Result<Message, Failure> {
        for _ in 0..3 {
            let mut req = Message::request(method);
            for (t, v) in attrs {
                req.add(*t, v);
            }
            let bytes = match (&self.realm, &self.nonce) {
                (Some(realm), Some(nonce)) => {
                    req.add(USERNAME, self.user.as_bytes())
                        .add(REALM, realm.as_bytes())
                        .add(NONCE, nonce);
                    req.encode(
                        Some(&long_term_key(&self.user, realm, &self.password)),
                        true,
                    )
                }
                _ => req.encode(None, true),
            };
            let resp = self.exchange(&bytes, &req.txid)?;
            if resp.class == Class::Success {
                return Ok(resp);
            }
            let code = resp.error_code().unwrap_or(0);
            let fresh_nonce = resp.attr(NONCE).map(<[u8]>::to_vec);
            let retry = match code {
                401 => self.nonce.is_none(),
                438 => true,
                _ => false,
            };
            if retry && fresh_nonce.is_some() {
                self.nonce = fresh_nonce;
                if let Some(r) = resp.attr(REALM) {
                    self.realm = Some(String::from_utf8_lossy(r).into_owned());
                }
                continue;
            }
            return Err(Failure::Refused(code, resp.error_reason()));
        }
        Err(Failure::Transport(
            "authentication did not settle in three rounds".into(),
        ))
    }

    /// Sends `bytes` and waits for the response with transaction id `txid`; over UDP the
    /// request is retransmitted every 500 ms, at most 6 times (RFC 8489 §6.2.1, shortened).
    fn exchange(&mut self, bytes: &[u8], txid: &[u8; 12]) -> Result<Message, Failure> {
        let io = |e: std::io::Error| Failure::Transport(e.to_string());
        match &mut self.conn {
            Conn::Udp(sock, server) => {
                sock.set_read_timeout(Some(Duration::from_millis(500)))
                    .map_err(io)?;
                let mut buf = [0u8; 2048];
                for _ in 0..6 {
                    sock.send_to(bytes, *server).map_err(io)?;
                    let deadline = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < deadline {
                        let Ok((n, from)) = sock.recv_from(&mut buf) else {
                            break;
                        };
                        if from != *server {
                            continue;
                        }
                        if let Ok(m) = Message::decode(buf.get(..n).unwrap_or_default()) {
                            if &m.txid == txid {
                                return Ok(m);
                            }
                        }
                    }
                }
                Err(Failure::Transport(format!(
                    "no answer from {server} over UDP in 3 s"
                )))
            }
            Conn::Tcp(stream, pending) => {
                stream.write_all(bytes).map_err(io)?;
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    if let Some(m) = take_frame(pending)? {
                        if &m.txid == txid {
                            return Ok(m);
                        }
                        continue;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Failure::Transport("no answer over TCP in 3 s".into()));
                    }
                    stream.set_read_timeout(Some(left)).map_err(io)?;
                    let mut buf = [0u8; 4096];
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            return Err(Failure::Transport(
                                "the server closed the connection".into(),
                            ))
                        }
                        Ok(n) => pending.extend_from_slice(buf.get(..n).unwrap_or_default()),
                        Err(e) => {
                            return Err(Failure::Transport(format!("reading the answer: {e}")))
                        }
                    }
                }
            }
        }
    }
}

/// Takes one whole STUN message off the front of a TCP byte stream (skipping ChannelData
/// frames, RFC 8656 §12.5, padded to 4 bytes on streams); None when more bytes are needed.
fn take_frame(pending: &mut Vec<u8>) -> Result<Option<Message>, Failure> {
    loop {
        let (Some(&b0), Some(&b1), Some(&b2), Some(&b3)) = (
            pending.first(),
            pending.get(1),
            pending.get(2),
            pending.get(3),
        ) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([b2, b3]));
        let total = match b0 >> 6 {
            0 => 20 + len,
            1 => 4 + len.div_ceil(4) * 4,
            _ => {
                return Err(Failure::Transport(format!(
                    "neither STUN nor ChannelData on the stream: {b0:#04x} {b1:#04x}"
                )))
            }
        };
        if pending.len() < total {
            return Ok(None);
        }
        let frame: Vec<u8> = pending.drain(..total).collect();
        if b0 >> 6 == 0 {
            return Message::decode(&frame)
                .map(Some)
                .map_err(Failure::Transport);
        }
    }
}

fn push_attr(out: &mut Vec<u8>, t: u16, v: &[u8]) {
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&u16::try_from(v.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(v);
    out.resize(out.len() + (4 - v.len() % 4) % 4, 0);
}

fn set_len(out: &mut [u8], len: usize) {
    let l = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(dst) = out.get_mut(2..4) {
        dst.copy_from_slice(&l);
    }
}

/// The value of an XOR-…-ADDRESS attribute for an IPv4 address (IPv6 is not needed here).
fn xor_address_value(addr: SocketAddr) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = vec![0, 0x01];
    v.extend_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes()),
        IpAddr::V6(_) => unimplemented!("IPv6 peers are not used by these tests"),
    }
    v
}

/// 64 random bits from the standard library's randomly keyed hasher (transaction ids need
/// uniqueness, not cryptographic strength).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_with_integrity_and_fingerprint() {
        let mut m = Message::request(ALLOCATE);
        m.add(REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(USERNAME, b"alice");
        let key = long_term_key("alice", "turn.test", "secret");
        let bytes = m.encode(Some(&key), true);
        assert_eq!(bytes.len() % 4, 0);
        let back = Message::decode(&bytes).expect("decodes");
        assert_eq!(back.method, ALLOCATE);
        assert_eq!(back.class, Class::Request);
        assert_eq!(back.attr(USERNAME), Some(&b"alice"[..]));
        assert_eq!(back.attrs.last().map(|a| a.0), Some(FINGERPRINT));
        // The fingerprint covers everything before it.
        let crc = crc32fast::hash(&bytes[..bytes.len() - 8]) ^ 0x5354_554E;
        assert_eq!(&bytes[bytes.len() - 4..], &crc.to_be_bytes());
    }

    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        // `printf 'user:realm:pass' | md5sum`
        let hex: String = long_term_key("user", "realm", "pass")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn xor_address_round_trip() {
        let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let mut m = Message::request(BINDING);
        m.add(XOR_RELAYED_ADDRESS, &xor_address_value(addr));
        assert_eq!(m.xor_address(XOR_RELAYED_ADDRESS), Some(addr));
    }

    #[test]
    fn error_code_is_read() {
        let mut m = Message::request(ALLOCATE);
        m.class = Class::Error;
        m.add(ERROR_CODE, &[0, 0, 5, 8, b'N', b'o']);
        assert_eq!(m.error_code(), Some(508));
        assert_eq!(m.error_reason(), "No");
    }

    #[test]
    fn stream_frames_are_split_and_channel_data_skipped() {
        let stun = Message::request(BINDING).encode(None, true);
        let mut pending = vec![0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0];
        pending.extend_from_slice(&stun[..10]);
        assert_eq!(take_frame(&mut pending), Ok(None));
        pending.extend_from_slice(&stun[10..]);
        let m = take_frame(&mut pending).unwrap().unwrap();
        assert_eq!(m.method, BINDING);
        assert!(pending.is_empty());
    }
}
