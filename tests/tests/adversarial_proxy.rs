//! PROXY protocol abuse on a listener that requires the header (trusted source
//! 127.0.0.1/32): each case asserts that the connection is closed, or that the header is
//! accepted and the client's address taken from it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use turnpike_tests::adversary::{self, Reply, Session};
use turnpike_tests::turn::{self, Message};

const TRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn v2(ver_cmd: u8, fam: u8, block: &[u8], announced: u16) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[ver_cmd, fam]);
    h.extend_from_slice(&announced.to_be_bytes());
    h.extend_from_slice(block);
    h
}

/// The Binding answer's XOR-MAPPED-ADDRESS over `s`.
fn mapped(s: &mut Session) -> Option<SocketAddr> {
    let m = Message::request(turn::BINDING);
    s.send(&m.encode(None, true));
    s.answer(Duration::from_secs(2))
        .ok()?
        .xor_address(turn::XOR_MAPPED_ADDRESS)
}

#[test]
fn bad_proxy_headers_close_the_connection() {
    let Some(mut server) = adversary::start_with(&[], |spec| spec.proxy_protocol = true) else {
        return;
    };
    let addr = server.addr;
    let mut tcp4 = v2(
        0x21,
        0x11,
        &[203, 0, 113, 7, 127, 0, 0, 1, 0xC0, 0x00, 0x0D, 0x96],
        12,
    );
    // A TLV whose length runs past the announced block.
    tcp4.extend_from_slice(&[0x04, 0x00, 0x20, 1, 2]);
    let tlv_overrun = {
        let mut h = tcp4.clone();
        let len = (h.len() - 16) as u16;
        h[14..16].copy_from_slice(&len.to_be_bytes());
        h
    };
    let long_v1 = format!(
        "PROXY TCP4 203.0.113.7 127.0.0.1 49314 3478{}\r\n",
        " ".repeat(80)
    );
    let cases: Vec<(&str, IpAddr, Vec<u8>)> = vec![
        (
            "a valid header from an untrusted address",
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 31)),
            b"PROXY TCP4 203.0.113.7 127.0.0.1 49314 3478\r\n".to_vec(),
        ),
        (
            "no header: STUN straight away",
            TRUSTED,
            Message::request(turn::BINDING).encode(None, true),
        ),
        ("v1 longer than 107 bytes", TRUSTED, long_v1.into_bytes()),
        (
            "v1 ended by LF alone",
            TRUSTED,
            b"PROXY TCP4 203.0.113.7 127.0.0.1 49314 3478\n".to_vec(),
        ),
        (
            "v1 with a bad address",
            TRUSTED,
            b"PROXY TCP4 203.0.113.777 127.0.0.1 49314 3478\r\n".to_vec(),
        ),
        (
            "v1 with a bad port",
            TRUSTED,
            b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 3478\r\n".to_vec(),
        ),
        ("v2 TLV overrunning the header", TRUSTED, tlv_overrun),
        (
            "v2 block shorter than its family",
            TRUSTED,
            v2(0x21, 0x11, &[1, 2, 3, 4], 4),
        ),
        ("v2 version 3", TRUSTED, v2(0x31, 0x11, &[0; 12], 12)),
        ("v2 command 0xF", TRUSTED, v2(0x2F, 0x11, &[0; 12], 12)),
        (
            "v2 announcing 60000 bytes",
            TRUSTED,
            v2(0x21, 0x11, &[0; 12], 60_000),
        ),
    ];
    for (what, from, bytes) in cases {
        let mut s = Session::tcp(addr, from, Some(&bytes));
        assert!(s.closed_within(Duration::from_secs(3)), "kept open: {what}");
    }
    server.assert_running();
}

#[test]
fn good_proxy_headers_are_read_whatever_the_split() {
    let Some(mut server) = adversary::start_with(&[], |spec| spec.proxy_protocol = true) else {
        return;
    };
    let addr = server.addr;
    let client: SocketAddr = "203.0.113.7:49314".parse().expect("an address");
    // v1, sent one byte per segment.
    let v1 = turn::proxy_v1(client, addr);
    let mut s = Session::tcp(addr, TRUSTED, None);
    for b in &v1 {
        s.send(&[*b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(mapped(&mut s), Some(client), "v1 split byte by byte");
    // v2 split inside the signature, with the first STUN message in the same segment as
    // the header's end.
    let block = [203, 0, 113, 8, 127, 0, 0, 1, 0xC0, 0x01, 0x0D, 0x96];
    let header = v2(0x21, 0x11, &block, 12);
    let mut s = Session::tcp(addr, TRUSTED, Some(&header[..5]));
    std::thread::sleep(Duration::from_millis(20));
    let mut rest = header[5..].to_vec();
    rest.extend_from_slice(&Message::request(turn::BINDING).encode(None, true));
    s.send(&rest);
    let answer = s.answer(Duration::from_secs(2)).expect("a Binding answer");
    assert_eq!(
        answer.xor_address(turn::XOR_MAPPED_ADDRESS),
        Some("203.0.113.8:49153".parse().expect("an address"))
    );
    // AF_UNIX (v2 family 0x31): accepted, the connection's own address is kept.
    let unix = v2(0x21, 0x31, &[0; 216], 216);
    let mut s = Session::tcp(addr, TRUSTED, Some(&unix));
    let own = s.local_addr();
    assert_eq!(
        mapped(&mut s),
        Some(own),
        "AF_UNIX keeps the connection's address"
    );
    // PROXY UNKNOWN likewise.
    let mut s = Session::tcp(addr, TRUSTED, Some(b"PROXY UNKNOWN\r\n"));
    let own = s.local_addr();
    assert_eq!(mapped(&mut s), Some(own));
    assert_eq!(
        s.raw(&[0x80; 4]),
        Reply::Closed,
        "garbage after a good header"
    );
    server.assert_running();
}

#[test]
fn a_header_that_never_completes_is_closed_after_the_header_timeout() {
    let Some(mut server) = adversary::start_with(&[], |spec| spec.proxy_protocol = true) else {
        return;
    };
    let started = std::time::Instant::now();
    let mut s = Session::tcp(server.addr, TRUSTED, Some(b"PROXY TCP4 203.0.113.7 "));
    // The core's PROXY header timeout is 5 s.
    assert!(
        !s.closed_within(Duration::from_secs(3)),
        "closed before the timeout"
    );
    assert!(
        s.closed_within(Duration::from_secs(5)),
        "still open after the timeout"
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(4), "closed after {took:?}");
    server.assert_running();
}
