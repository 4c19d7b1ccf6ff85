//! The PROXY protocol, versions 1 (text) and 2 (binary), as a proxy in front of the relay
//! (nginx `proxy_protocol on`) sends it at the start of a stream.
//!
//! Spec: haproxy's "The PROXY protocol" versions 1 and 2 (§2.1 the human-readable header,
//! §2.2 the binary header).
//!
//! The parser is strict about the grammar, with one deliberate tolerance: nginx, when it
//! relays a connection that arrived on a unix socket (the TLS-terminating second hop of a
//! two-hop layout with `set_real_ip_from unix:`), writes the socket path and port 0 as
//! the destination (`PROXY TCP4 203.0.113.7 unix:/tmp/tls.sock 49314 0`). The source is
//! still read; the destination is reported as unknown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
    /// v2 whose address block is shorter than its family requires, or whose TLVs overrun
    /// the announced length.
    V2Malformed,
}

/// Parses a header from `buf`, the first bytes of a stream (possibly more than the header).
/// A v2 header longer than `max_v2_len` bytes is refused. Answers `NotProxy` as soon as
/// the bytes cannot be the start of a header, so a missing header is noticed at once.
///
/// Call it again with the bytes gathered so far each time more arrive; it keeps no state.
/// Every error is final: a prefix of a valid header is always `Incomplete`.
pub fn parse(buf: &[u8], max_v2_len: usize) -> Result<ProxyParse, ProxyError> {
    if is_prefix_of(buf, &V2_SIGNATURE) {
        return parse_v2(buf, max_v2_len);
    }
    if is_prefix_of(buf, V1_PREFIX) {
        return parse_v1(buf);
    }
    Err(ProxyError::NotProxy)
}

/// Encodes a v1 header (`None` → `PROXY UNKNOWN`), for tests and the simulator's proxies.
///
/// The two addresses should be of one family; when they are not, both are written as
/// IPv6 (an IPv4 address as IPv4-mapped), since a v1 line names a single family.
pub fn encode_v1(addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let line = match addrs.map(same_family) {
        None => "PROXY UNKNOWN\r\n".to_owned(),
        Some((src, dst)) => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
        }
    };
    line.into_bytes()
}

/// Encodes a v2 header: PROXY command with (source, destination), or LOCAL when `None`.
///
/// PROXY is sent over TCP (`STREAM`) with no TLVs; LOCAL with the `UNSPEC` family and an
/// empty address block. Mixed families are written as IPv6, as for [`encode_v1`].
pub fn encode_v2(addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let Some((src, dst)) = addrs.map(same_family) else {
        out.extend_from_slice(&[V2_VERSION | V2_CMD_LOCAL, V2_FAM_UNSPEC, 0, 0]);
        return out;
    };
    let (fam, len): (u8, u16) = match src.ip() {
        IpAddr::V4(_) => (V2_FAM_TCP4, V2_ADDR_LEN_INET as u16),
        IpAddr::V6(_) => (V2_FAM_TCP6, V2_ADDR_LEN_INET6 as u16),
    };
    out.extend_from_slice(&[V2_VERSION | V2_CMD_PROXY, fam]);
    out.extend_from_slice(&len.to_be_bytes());
    for addr in [src, dst] {
        match addr.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// What every v1 header starts with (spec §2.1).
const V1_PREFIX: &[u8] = b"PROXY ";
/// Length of the fixed part of a v2 header: signature, ver_cmd, family, length.
const V2_HEADER_LEN: usize = 16;
/// The version nibble of a v2 header (spec §2.2: "\x2").
const V2_VERSION: u8 = 0x20;
/// v2 command LOCAL: the proxy's own connection.
const V2_CMD_LOCAL: u8 = 0x0;
/// v2 command PROXY: a relayed connection.
const V2_CMD_PROXY: u8 = 0x1;
/// v2 family byte: UNSPEC.
const V2_FAM_UNSPEC: u8 = 0x00;
/// v2 family byte: AF_INET over STREAM.
const V2_FAM_TCP4: u8 = 0x11;
/// v2 family byte: AF_INET over DGRAM.
const V2_FAM_UDP4: u8 = 0x12;
/// v2 family byte: AF_INET6 over STREAM.
const V2_FAM_TCP6: u8 = 0x21;
/// v2 family byte: AF_INET6 over DGRAM.
const V2_FAM_UDP6: u8 = 0x22;
/// v2 family byte: AF_UNIX over STREAM.
const V2_FAM_UNIX_STREAM: u8 = 0x31;
/// v2 family byte: AF_UNIX over DGRAM.
const V2_FAM_UNIX_DGRAM: u8 = 0x32;
/// Address block of AF_INET: two 4-byte addresses and two ports.
const V2_ADDR_LEN_INET: usize = 12;
/// Address block of AF_INET6: two 16-byte addresses and two ports.
const V2_ADDR_LEN_INET6: usize = 36;
/// Address block of AF_UNIX: two 108-byte paths.
const V2_ADDR_LEN_UNIX: usize = 216;
/// A TLV's type and length (spec §2.2.1).
const V2_TLV_HEADER_LEN: usize = 3;

/// Whether the bytes so far agree with `pattern` (as far as either goes).
fn is_prefix_of(buf: &[u8], pattern: &[u8]) -> bool {
    buf.iter().zip(pattern).all(|(a, b)| a == b)
}

/// Writes a mixed-family pair as IPv6, since one header names one family.
fn same_family((src, dst): (SocketAddr, SocketAddr)) -> (SocketAddr, SocketAddr) {
    if src.is_ipv4() == dst.is_ipv4() {
        return (src, dst);
    }
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    (v6(src), v6(dst))
}

/// Spec §2.1: the human-readable header, a single line ending in CRLF, at most 107 bytes.
fn parse_v1(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    // The CR must sit at index V1_MAX_LEN - 2 or earlier for the line to fit.
    let window = buf.get(..V1_MAX_LEN - 1).unwrap_or(buf);
    // A bare LF can never be part of a valid line (spec §2.1: the line ends with CRLF);
    // refusing it at once beats waiting for the header timeout.
    let end = window.iter().position(|&b| b == b'\r' || b == b'\n');
    if end.is_some_and(|i| window.get(i) == Some(&b'\n')) {
        return Err(ProxyError::V1Malformed);
    }
    let Some(cr) = end else {
        if window.len() == V1_MAX_LEN - 1 {
            return Err(ProxyError::V1TooLong);
        }
        return Ok(ProxyParse::Incomplete);
    };
    match buf.get(cr + 1) {
        None => return Ok(ProxyParse::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::V1Malformed),
    }
    let line = buf
        .get(V1_PREFIX.len()..cr)
        .ok_or(ProxyError::V1Malformed)?;
    let header = parse_v1_line(line).ok_or(ProxyError::V1Malformed)?;
    Ok(ProxyParse::Done {
        header,
        consumed: cr + 2,
    })
}

/// The part of a v1 line after `PROXY ` and before CRLF.
fn parse_v1_line(line: &[u8]) -> Option<ProxyHeader> {
    // "UNKNOWN" alone, or followed by a space and anything the receiver must ignore.
    if let Some(rest) = line.strip_prefix(b"UNKNOWN") {
        return (rest.is_empty() || rest.first() == Some(&b' ')).then_some(ProxyHeader::Unknown);
    }
    let line = std::str::from_utf8(line).ok()?;
    let (family, fields) = line.split_once(' ')?;
    let v4 = match family {
        "TCP4" => true,
        "TCP6" => false,
        _ => return None,
    };
    // Exactly four fields, separated by exactly one space: an empty field means two
    // spaces in a row, or a leading or trailing space.
    let mut fields = fields.split(' ');
    let (src, dst, sport, dport) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() {
        return None;
    }
    let src = parse_ip(src, v4)?;
    let (sport, dport) = (parse_port(sport)?, parse_port(dport)?);
    // nginx's two-hop variant puts a unix socket path here; tolerate any non-address.
    let destination = parse_ip(dst, v4).map(|ip| SocketAddr::new(ip, dport));
    Some(ProxyHeader::Proxied {
        source: SocketAddr::new(src, sport),
        destination,
    })
}

/// An address of the announced family in its canonical text form (the standard parser
/// refuses leading zeros in IPv4, signs, and zone indices).
fn parse_ip(text: &str, v4: bool) -> Option<IpAddr> {
    if v4 {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// A port: 1 to 5 decimal digits, no sign, at most 65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Spec §2.2: the binary header. `buf` agrees with the signature so far.
fn parse_v2(buf: &[u8], max_v2_len: usize) -> Result<ProxyParse, ProxyError> {
    // Judge each field as soon as it is in, so a bad header is refused early.
    let Some(&ver_cmd) = buf.get(V2_SIGNATURE.len()) else {
        return Ok(ProxyParse::Incomplete);
    };
    // "The highest four bits contains the version ... MUST always be sent as \x2 and
    // the receiver MUST only accept this value."
    if ver_cmd & 0xF0 != V2_VERSION {
        return Err(ProxyError::V2BadVersion);
    }
    let local = match ver_cmd & 0x0F {
        V2_CMD_LOCAL => true,
        V2_CMD_PROXY => false,
        // "Other values are unassigned and MUST NOT be emitted by senders. Receivers
        // MUST drop connections presenting unexpected values here."
        _ => return Err(ProxyError::V2BadVersion),
    };
    let Some(&[fam, len_hi, len_lo]) = buf.get(13..V2_HEADER_LEN) else {
        return Ok(ProxyParse::Incomplete);
    };
    let total = V2_HEADER_LEN + usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if total > max_v2_len {
        return Err(ProxyError::V2TooLong);
    }
    let Some(block) = buf.get(V2_HEADER_LEN..total) else {
        return Ok(ProxyParse::Incomplete);
    };
    let header = if local {
        // "the receiver MUST accept this connection as valid and MUST use the real
        // connection endpoints and discard the protocol block including the family".
        ProxyHeader::Local
    } else {
        parse_v2_block(fam, block)?
    };
    Ok(ProxyParse::Done {
        header,
        consumed: total,
    })
}

/// The address block and TLVs of a v2 PROXY header of family byte `fam`.
fn parse_v2_block(fam: u8, block: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let addr_len = match fam {
        V2_FAM_TCP4 | V2_FAM_UDP4 => V2_ADDR_LEN_INET,
        V2_FAM_TCP6 | V2_FAM_UDP6 => V2_ADDR_LEN_INET6,
        V2_FAM_UNIX_STREAM | V2_FAM_UNIX_DGRAM => V2_ADDR_LEN_UNIX,
        // UNSPEC or unknown: "the receiver ... MUST use the real connection endpoints";
        // where the addresses end is unknown, so the TLVs cannot be found either.
        _ => return Ok(ProxyHeader::Unknown),
    };
    let (addrs, tlvs) = block
        .split_at_checked(addr_len)
        .ok_or(ProxyError::V2Malformed)?;
    walk_tlvs(tlvs)?;
    // Spec §2.2: source address, destination address, source port, destination port.
    let header = match fam {
        V2_FAM_TCP4 | V2_FAM_UDP4 => proxied(
            Ipv4Addr::from(array::<4>(addrs, 0)?).into(),
            Ipv4Addr::from(array::<4>(addrs, 4)?).into(),
            array(addrs, 8)?,
            array(addrs, 10)?,
        ),
        V2_FAM_TCP6 | V2_FAM_UDP6 => proxied(
            Ipv6Addr::from(array::<16>(addrs, 0)?).into(),
            Ipv6Addr::from(array::<16>(addrs, 16)?).into(),
            array(addrs, 32)?,
            array(addrs, 34)?,
        ),
        // AF_UNIX: a path says nothing about the client's IP address.
        _ => ProxyHeader::Unknown,
    };
    Ok(header)
}

/// `N` bytes of `bytes` at `at`.
fn array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], ProxyError> {
    bytes
        .get(at..)
        .and_then(|b| b.get(..N))
        .and_then(|b| b.try_into().ok())
        .ok_or(ProxyError::V2Malformed)
}

/// A proxied connection from its addresses and big-endian ports.
fn proxied(src: IpAddr, dst: IpAddr, sport: [u8; 2], dport: [u8; 2]) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: SocketAddr::new(src, u16::from_be_bytes(sport)),
        destination: Some(SocketAddr::new(dst, u16::from_be_bytes(dport))),
    }
}

/// Spec §2.2.1: TLVs fill the rest of the header. Their content is not used, but each
/// must fit inside the announced length.
fn walk_tlvs(mut rest: &[u8]) -> Result<(), ProxyError> {
    // Bounded: each round consumes at least the 3-byte TLV header.
    while !rest.is_empty() {
        let Some(&[_kind, len_hi, len_lo]) = rest.get(..V2_TLV_HEADER_LEN) else {
            return Err(ProxyError::V2Malformed);
        };
        let end = V2_TLV_HEADER_LEN + usize::from(u16::from_be_bytes([len_hi, len_lo]));
        rest = rest.get(end..).ok_or(ProxyError::V2Malformed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn v1_with_a_bare_lf_is_malformed_at_once() {
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 512),
            Err(ProxyError::V1Malformed)
        );
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4\n", 512),
            Err(ProxyError::V1Malformed)
        );
        // CR then LF is the end of a good line; a prefix ending in CR is still incomplete.
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", 512),
            Ok(ProxyParse::Incomplete)
        );
    }

    use super::*;
    use proptest::prelude::*;

    const MAX_V2: usize = 512;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn done(header: ProxyHeader, consumed: usize) -> Result<ProxyParse, ProxyError> {
        Ok(ProxyParse::Done { header, consumed })
    }

    fn proxied(src: &str, dst: Option<&str>) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: sa(src),
            destination: dst.map(sa),
        }
    }

    /// Feeds `bytes` one more byte at a time: every strict prefix must be Incomplete.
    fn parse_bytewise(bytes: &[u8]) -> Result<ProxyParse, ProxyError> {
        for end in 0..bytes.len() {
            let r = parse(&bytes[..end], MAX_V2);
            if r != Ok(ProxyParse::Incomplete) {
                return r;
            }
        }
        parse(bytes, MAX_V2)
    }

    /// A v2 header with the given ver_cmd, family and block.
    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[ver_cmd, fam]);
        h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    /// The IPv4 address block 192.0.2.1:5000 → 192.0.2.2:443.
    const INET_BLOCK: [u8; 12] = [192, 0, 2, 1, 192, 0, 2, 2, 0x13, 0x88, 0x01, 0xbb];

    #[test]
    fn v1_tcp4() {
        let line = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 443\r\n";
        assert_eq!(
            parse(line, MAX_V2),
            done(proxied("192.0.2.1:5000", Some("192.0.2.2:443")), line.len())
        );
    }

    #[test]
    fn v1_tcp6() {
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n";
        assert_eq!(
            parse(line, MAX_V2),
            done(
                proxied("[2001:db8::1]:65535", Some("[2001:db8::2]:0")),
                line.len()
            )
        );
        let mapped = b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n";
        assert_eq!(
            parse(mapped, MAX_V2),
            done(
                proxied("[::ffff:192.0.2.1]:1", Some("[::1]:2")),
                mapped.len()
            )
        );
    }

    #[test]
    fn v1_unknown() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY UNKNOWN \xff\x00whatever\r\n",
        ] {
            assert_eq!(parse(line, MAX_V2), done(ProxyHeader::Unknown, line.len()));
        }
        assert_eq!(
            parse(b"PROXY UNKNOWNX\r\n", MAX_V2),
            Err(ProxyError::V1Malformed)
        );
    }

    #[test]
    fn v1_nginx_two_hop_unix_destination() {
        // What nginx 1.22 sends from a server listening on a unix socket with
        // `set_real_ip_from unix:;`: the real client as source, the socket as destination.
        let line = b"PROXY TCP4 203.0.113.7 unix:/tmp/tls.sock 49314 0\r\n";
        assert_eq!(
            parse(line, MAX_V2),
            done(proxied("203.0.113.7:49314", None), line.len())
        );
        // The source must still be valid.
        assert_eq!(
            parse(
                b"PROXY TCP4 unix:/tmp/a.sock unix:/tmp/tls.sock 1 0\r\n",
                MAX_V2
            ),
            Err(ProxyError::V1Malformed)
        );
        // A destination of the other family is not an address of this header either.
        let mixed = b"PROXY TCP4 203.0.113.7 2001:db8::1 49314 443\r\n";
        assert_eq!(
            parse(mixed, MAX_V2),
            done(proxied("203.0.113.7:49314", None), mixed.len())
        );
        // The destination port is still checked.
        assert_eq!(
            parse(b"PROXY TCP4 203.0.113.7 unix:/x 49314 -0\r\n", MAX_V2),
            Err(ProxyError::V1Malformed)
        );
    }

    #[test]
    fn v1_payload_after_the_header_is_not_consumed() {
        let mut stream = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 443\r\n".to_vec();
        let len = stream.len();
        stream.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(
            parse(&stream, MAX_V2),
            done(proxied("192.0.2.1:5000", Some("192.0.2.2:443")), len)
        );
    }

    #[test]
    fn v1_grammar_is_strict() {
        for line in [
            &b"PROXY TCP4 192.0.2.1  192.0.2.2 5000 443\r\n"[..],
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 443 \r\n",
            b"PROXY  TCP4 192.0.2.1 192.0.2.2 5000 443\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 443 7\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 +5000 443\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 65536\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 4430000\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 0x10 443\r\n",
            b"PROXY TCP4 192.0.2.01 192.0.2.2 5000 443\r\n",
            b"PROXY TCP4 2001:db8::1 192.0.2.2 5000 443\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 5000 443\r\n",
            b"PROXY TCP6 fe80::1%eth0 2001:db8::2 5000 443\r\n",
            b"PROXY UDP4 192.0.2.1 192.0.2.2 5000 443\r\n",
            b"PROXY tcp4 192.0.2.1 192.0.2.2 5000 443\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 443\n\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 \xff443\r\n",
        ] {
            assert_eq!(
                parse(line, MAX_V2),
                Err(ProxyError::V1Malformed),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn v1_cr_without_lf_is_malformed() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\rX", MAX_V2),
            Err(ProxyError::V1Malformed)
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r", MAX_V2),
            Ok(ProxyParse::Incomplete)
        );
    }

    #[test]
    fn v1_longest_line_is_accepted_and_longer_is_refused() {
        // The worst case of spec §2.1, 107 bytes with CRLF, is UNKNOWN followed by the
        // longest TCP6 fields; the longest TCP6 line itself is 104.
        let fields = b" ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        let unknown = [&b"PROXY UNKNOWN"[..], fields].concat();
        assert_eq!(unknown.len(), V1_MAX_LEN);
        assert_eq!(
            parse(&unknown, MAX_V2),
            done(ProxyHeader::Unknown, V1_MAX_LEN)
        );
        let tcp6 = [&b"PROXY TCP6"[..], fields].concat();
        let all_ones = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        assert_eq!(
            parse(&tcp6, MAX_V2),
            done(proxied(all_ones, Some(all_ones)), 104)
        );

        // UNKNOWN padded to 107 bytes is fine; to 108 it is too long.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse(&line, MAX_V2), done(ProxyHeader::Unknown, V1_MAX_LEN));
        line.insert(20, b'x');
        assert_eq!(parse(&line, MAX_V2), Err(ProxyError::V1TooLong));

        // No CRLF in sight: refused once the line cannot end within the limit.
        let mut endless = b"PROXY UNKNOWN ".to_vec();
        endless.resize(200, b'y');
        assert_eq!(parse(&endless[..105], MAX_V2), Ok(ProxyParse::Incomplete));
        assert_eq!(parse(&endless[..106], MAX_V2), Err(ProxyError::V1TooLong));
        assert_eq!(parse(&endless, MAX_V2), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn not_proxy_is_noticed_at_the_first_wrong_byte() {
        // STUN, TLS ClientHello, HTTP.
        assert_eq!(parse(&[0x00], MAX_V2), Err(ProxyError::NotProxy));
        assert_eq!(parse(&[0x16, 0x03], MAX_V2), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"GET / HTTP/1.1", MAX_V2), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROXX", MAX_V2), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROXY\t", MAX_V2), Err(ProxyError::NotProxy));
        assert_eq!(
            parse(b"\r\n\r\n\0\r\nQUIX", MAX_V2),
            Err(ProxyError::NotProxy)
        );
        // Nothing yet, or a prefix of either signature: wait.
        assert_eq!(parse(b"", MAX_V2), Ok(ProxyParse::Incomplete));
        assert_eq!(parse(b"PROX", MAX_V2), Ok(ProxyParse::Incomplete));
        assert_eq!(parse(b"\r\n\r\n\0", MAX_V2), Ok(ProxyParse::Incomplete));
    }

    #[test]
    fn byte_at_a_time_is_incomplete_until_the_end() {
        let payload = [0x00, 0x01, 0x00, 0x00];
        for header in [
            b"PROXY TCP4 203.0.113.7 unix:/tmp/tls.sock 49314 0\r\n".to_vec(),
            encode_v1(None),
            encode_v2(None),
            encode_v2(Some((sa("[2001:db8::7]:1234"), sa("[2001:db8::1]:443")))),
            v2(
                0x21,
                V2_FAM_TCP4,
                &[&INET_BLOCK[..], &[0x04, 0, 2, 9, 9]].concat(),
            ),
        ] {
            let stream = [&header[..], &payload].concat();
            let r = parse_bytewise(&header);
            assert!(
                matches!(r, Ok(ProxyParse::Done { consumed, .. }) if consumed == header.len()),
                "{r:?}"
            );
            // With the payload behind it, the same answer.
            assert_eq!(parse(&stream, MAX_V2), r);
        }
    }

    #[test]
    fn v2_proxy_inet() {
        let h = v2(0x21, V2_FAM_TCP4, &INET_BLOCK);
        assert_eq!(
            parse(&h, MAX_V2),
            done(proxied("192.0.2.1:5000", Some("192.0.2.2:443")), 28)
        );
        // DGRAM is read the same way.
        let h = v2(0x21, V2_FAM_UDP4, &INET_BLOCK);
        assert_eq!(
            parse(&h, MAX_V2),
            done(proxied("192.0.2.1:5000", Some("192.0.2.2:443")), 28)
        );
    }

    #[test]
    fn v2_proxy_inet6() {
        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0xc0, 0x01, 0x01, 0xbb]);
        for fam in [V2_FAM_TCP6, V2_FAM_UDP6] {
            let h = v2(0x21, fam, &block);
            assert_eq!(
                parse(&h, MAX_V2),
                done(
                    proxied("[2001:db8::7]:49153", Some("[2001:db8::1]:443")),
                    52
                )
            );
        }
    }

    #[test]
    fn v2_local_ignores_the_block() {
        assert_eq!(
            parse(&encode_v2(None), MAX_V2),
            done(ProxyHeader::Local, 16)
        );
        // LOCAL with an address block (allowed; the receiver discards it).
        let h = v2(0x20, V2_FAM_TCP4, &INET_BLOCK);
        assert_eq!(parse(&h, MAX_V2), done(ProxyHeader::Local, 28));
        let h = v2(0x20, 0x77, &[1, 2, 3]);
        assert_eq!(parse(&h, MAX_V2), done(ProxyHeader::Local, 19));
    }

    #[test]
    fn v2_unknown_families() {
        for fam in [V2_FAM_UNSPEC, 0x10, 0x13, 0x20, 0x41, 0xff] {
            let h = v2(0x21, fam, &[9; 5]);
            assert_eq!(
                parse(&h, MAX_V2),
                done(ProxyHeader::Unknown, 21),
                "{fam:#x}"
            );
        }
        for fam in [V2_FAM_UNIX_STREAM, V2_FAM_UNIX_DGRAM] {
            let h = v2(0x21, fam, &[b'/'; V2_ADDR_LEN_UNIX]);
            assert_eq!(
                parse(&h, MAX_V2),
                done(ProxyHeader::Unknown, 16 + V2_ADDR_LEN_UNIX)
            );
            let short = v2(0x21, fam, &[b'/'; 100]);
            assert_eq!(parse(&short, MAX_V2), Err(ProxyError::V2Malformed));
        }
    }

    #[test]
    fn v2_bad_version_or_command() {
        for ver_cmd in [0x11, 0x31, 0x01, 0xf1, 0x22, 0x2f] {
            let h = v2(ver_cmd, V2_FAM_TCP4, &INET_BLOCK);
            // Refused from the 13th byte on.
            assert_eq!(parse(&h[..13], MAX_V2), Err(ProxyError::V2BadVersion));
            assert_eq!(parse(&h, MAX_V2), Err(ProxyError::V2BadVersion));
        }
    }

    #[test]
    fn v2_too_long_is_decided_from_the_fixed_header() {
        let h = v2(
            0x21,
            V2_FAM_TCP4,
            &[&INET_BLOCK[..], &[0x04, 0x00, 100], &[0; 100]].concat(),
        );
        assert_eq!(h.len(), 131);
        assert_eq!(parse(&h[..16], 130), Err(ProxyError::V2TooLong));
        assert_eq!(parse(&h[..16], 131), Ok(ProxyParse::Incomplete));
        assert!(matches!(
            parse(&h, 131),
            Ok(ProxyParse::Done { consumed: 131, .. })
        ));
        // The largest announced length against the default-sized limit.
        let huge = [&V2_SIGNATURE[..], &[0x21, 0x11, 0xff, 0xff]].concat();
        assert_eq!(parse(&huge, MAX_V2), Err(ProxyError::V2TooLong));
    }

    #[test]
    fn v2_short_address_block_is_malformed() {
        let h = v2(0x21, V2_FAM_TCP4, &INET_BLOCK[..11]);
        assert_eq!(parse(&h, MAX_V2), Err(ProxyError::V2Malformed));
        let h = v2(0x21, V2_FAM_TCP6, &[0; 35]);
        assert_eq!(parse(&h, MAX_V2), Err(ProxyError::V2Malformed));
        let h = v2(0x21, V2_FAM_TCP4, &[]);
        assert_eq!(parse(&h, MAX_V2), Err(ProxyError::V2Malformed));
    }

    #[test]
    fn v2_tlvs_are_walked() {
        let tlvs = [
            &[0x01, 0x00, 0x02][..], // ALPN "h2"
            b"h2",
            &[0x04, 0x00, 0x00],       // NOOP, empty
            &[0x20, 0x00, 0x01, 0x00], // SSL, one byte
        ]
        .concat();
        let h = v2(0x21, V2_FAM_TCP4, &[&INET_BLOCK[..], &tlvs].concat());
        assert_eq!(
            parse(&h, MAX_V2),
            done(proxied("192.0.2.1:5000", Some("192.0.2.2:443")), h.len())
        );
    }

    #[test]
    fn v2_tlv_overrun_is_malformed() {
        // A TLV announcing 5 bytes with only 4 left in the header.
        let h = v2(
            0x21,
            V2_FAM_TCP4,
            &[&INET_BLOCK[..], &[0x04, 0x00, 0x05, 1, 2, 3, 4]].concat(),
        );
        assert_eq!(parse(&h, MAX_V2), Err(ProxyError::V2Malformed));
        // Payload behind the header does not count as TLV bytes.
        let stream = [&h[..], &[5, 6, 7, 8]].concat();
        assert_eq!(parse(&stream, MAX_V2), Err(ProxyError::V2Malformed));
        // A truncated TLV header.
        let h = v2(
            0x21,
            V2_FAM_TCP4,
            &[&INET_BLOCK[..], &[0x04, 0x00]].concat(),
        );
        assert_eq!(parse(&h, MAX_V2), Err(ProxyError::V2Malformed));
        // The same in IPv6.
        let h = v2(0x21, V2_FAM_TCP6, &[&[0u8; 36][..], &[0x04]].concat());
        assert_eq!(parse(&h, MAX_V2), Err(ProxyError::V2Malformed));
    }

    #[test]
    fn encoders_write_what_nginx_and_haproxy_write() {
        assert_eq!(encode_v1(None), b"PROXY UNKNOWN\r\n");
        assert_eq!(
            encode_v1(Some((sa("203.0.113.7:49314"), sa("198.51.100.1:443")))),
            b"PROXY TCP4 203.0.113.7 198.51.100.1 49314 443\r\n"
        );
        assert_eq!(
            encode_v1(Some((sa("[2001:db8::7]:1"), sa("[2001:db8::1]:443")))),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 1 443\r\n"
        );
        assert_eq!(
            encode_v2(Some((sa("192.0.2.1:5000"), sa("192.0.2.2:443")))),
            v2(0x21, V2_FAM_TCP4, &INET_BLOCK)
        );
        assert_eq!(encode_v2(None), v2(0x20, V2_FAM_UNSPEC, &[]));
    }

    #[test]
    fn mixed_families_are_encoded_as_ipv6() {
        let src = sa("192.0.2.1:5000");
        let dst = sa("[2001:db8::1]:443");
        let want = proxied("[::ffff:192.0.2.1]:5000", Some("[2001:db8::1]:443"));
        for bytes in [encode_v1(Some((src, dst))), encode_v2(Some((src, dst)))] {
            assert_eq!(parse(&bytes, MAX_V2), done(want, bytes.len()));
        }
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
        ]
    }

    /// A pair of addresses of one family.
    fn arb_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        (arb_addr(), arb_addr()).prop_map(|(src, dst)| {
            let dst = match (src.ip(), dst.ip()) {
                (IpAddr::V4(_), IpAddr::V6(ip)) => {
                    let o = ip.octets();
                    SocketAddr::new(Ipv4Addr::new(o[0], o[1], o[2], o[3]).into(), dst.port())
                }
                (IpAddr::V6(_), IpAddr::V4(ip)) => {
                    SocketAddr::new(ip.to_ipv6_mapped().into(), dst.port())
                }
                _ => dst,
            };
            (src, dst)
        })
    }

    proptest! {
        /// Encode then parse gives the addresses back, for both versions, with the
        /// header's length consumed and the payload left alone.
        #[test]
        fn encode_parse_roundtrip(
            (src, dst) in arb_pair(),
            payload in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let want = ProxyHeader::Proxied { source: src, destination: Some(dst) };
            for header in [encode_v1(Some((src, dst))), encode_v2(Some((src, dst)))] {
                prop_assert!(header.len() <= V1_MAX_LEN.max(16 + 36));
                let stream = [&header[..], &payload].concat();
                prop_assert_eq!(parse(&stream, MAX_V2), done(want, header.len()));
            }
        }

        /// Every strict prefix of a valid header is Incomplete.
        #[test]
        fn prefixes_are_incomplete(
            pair in prop::option::of(arb_pair()),
            v1 in any::<bool>(),
            cut in any::<usize>(),
        ) {
            let header = if v1 { encode_v1(pair) } else { encode_v2(pair) };
            let cut = cut % header.len();
            prop_assert_eq!(parse(&header[..cut], MAX_V2), Ok(ProxyParse::Incomplete));
        }

        /// Random bytes never panic; a result other than Incomplete does not change when
        /// more bytes follow, and Done never claims more than the input.
        #[test]
        fn random_bytes_never_panic(
            prefix in prop_oneof![
                Just(Vec::new()),
                Just(b"PROXY ".to_vec()),
                Just(b"PROXY TCP4 ".to_vec()),
                Just(V2_SIGNATURE.to_vec()),
                Just([&V2_SIGNATURE[..], &[0x21]].concat()),
            ],
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            more in prop::collection::vec(any::<u8>(), 0..8),
            max in 0usize..600,
        ) {
            let buf = [prefix, bytes].concat();
            let r = parse(&buf, max);
            if let Ok(ProxyParse::Done { consumed, .. }) = r {
                prop_assert!(consumed <= buf.len());
            }
            if r != Ok(ProxyParse::Incomplete) {
                let longer = [&buf[..], &more].concat();
                prop_assert_eq!(parse(&longer, max), r);
            }
        }
    }
}
