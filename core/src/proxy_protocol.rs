//! The PROXY protocol, versions 1 (text) and 2 (binary), as a proxy in front of the relay
//! (nginx `proxy_protocol on`) sends it at the start of a stream.
//!
//! Spec: haproxy's "The PROXY protocol" versions 1 and 2.

use std::net::SocketAddr;

/// The longest v1 header, CRLF included (spec §2.1).
pub const V1_MAX_LEN: usize = 107;
/// The 12-byte signature of a v2 header (spec §2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What a complete header says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProxyHeader {
    /// v2 LOCAL command: a connection of the proxy itself (health check); keep the
    /// connection's own addresses.
    Local,
    /// v1 `PROXY UNKNOWN`, or v2 with an unknown family / protocol or AF_UNIX: the client's
    /// address is not known; keep the connection's own addresses.
    Unknown,
    /// The client's address, and the address it connected to when it is an IP address
    /// (nginx's two-hop variant writes a unix socket path there: `destination` is None).
    Proxied {
        /// The original client.
        source: SocketAddr,
        /// The original destination, when given as an IP address.
        destination: Option<SocketAddr>,
    },
}

/// Progress of parsing a header from the first bytes of a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProxyParse {
    /// The bytes so far are a valid prefix of a header: wait for more.
    Incomplete,
    /// A whole header of `consumed` bytes.
    Done {
        /// The header.
        header: ProxyHeader,
        /// Its length; the stream's payload starts after it.
        consumed: usize,
    },
}

/// Why the bytes are not an acceptable PROXY header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProxyError {
    /// The stream does not start with a v1 or v2 signature.
    NotProxy,
    /// A v1 line over 107 bytes without CRLF.
    V1TooLong,
    /// A v1 line that breaks the grammar.
    V1Malformed,
    /// v2 with a version other than 2 or a command other than LOCAL/PROXY.
    V2BadVersion,
    /// v2 whose announced length exceeds the configured limit.
    V2TooLong,
    /// v2 whose address block is shorter than its family requires.
    V2Malformed,
}

/// Parses a header from `buf`, the first bytes of a stream (possibly more than the header).
/// A v2 header longer than `max_v2_len` bytes is refused. Answers `NotProxy` as soon as
/// the bytes cannot be the start of a header, so a missing header is noticed at once.
pub fn parse(buf: &[u8], max_v2_len: usize) -> Result<ProxyParse, ProxyError> {
    let _ = (buf, max_v2_len);
    todo!()
}

/// Encodes a v1 header (`None` → `PROXY UNKNOWN`), for tests and the simulator's proxies.
pub fn encode_v1(addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let _ = addrs;
    todo!()
}

/// Encodes a v2 header: PROXY command with (source, destination), or LOCAL when `None`.
pub fn encode_v2(addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let _ = addrs;
    todo!()
}
