//! Streams (TCP, or TLS terminated in front): framing split at any byte (RFC 8656 §12.5,
//! RFC 8489 §6.2.2), the PROXY protocol header (v1, v2, UNKNOWN, LOCAL, nginx's unix
//! socket variant) from trusted sources only, timeouts, limits, and the allocation that
//! ends with its stream (RFC 8656 §3.1).

mod support;

use core::time::Duration;
use std::net::SocketAddr;
use support::*;
use turnpike_core::event::{CloseReason, DeleteReason, Event};
use turnpike_core::proxy_protocol::{encode_v1, encode_v2};
use turnpike_core::stun::attr;
use turnpike_core::ConnId;

/// A harness whose per-source budget for unauthenticated answers does not get in the
/// way of tests that send many Binding requests from one address.
fn generous() -> Harness {
    let mut cfg = config();
    cfg.unauth_amplification_factor = 10;
    Harness::with_config(cfg)
}

fn proxied_binding(h: &mut Harness, conn: u64, header: &[u8]) -> Outcome {
    let out = h.open_stream(ConnId(conn), TCP_PROXY, proxy_addr());
    assert!(out.closed_streams.is_empty());
    let mut bytes = header.to_vec();
    let tid = h.tid();
    bytes.extend(Req::binding().encode_plain(tid, false));
    h.stream_data(ConnId(conn), &bytes)
}

#[test]
fn request_split_at_every_byte_boundary_gets_the_same_answer() {
    // Bytes arrive split anywhere: the answer must not depend on the split.
    let mut h = generous();
    let remote = sa("203.0.113.20:40000");
    let tid = h.tid();
    let req = Req::binding()
        .raw(0xC001, b"optional padding!")
        .encode_plain(tid, true);
    h.open_stream(ConnId(1), TCP, remote);
    let reference = h.stream_data(ConnId(1), &req).answer().bytes.clone();
    for cut in 1..req.len() {
        let conn = ConnId(100 + cut as u64);
        h.open_stream(conn, TCP, remote);
        let first = h.stream_data(conn, &req[..cut]);
        assert!(first.answers.is_empty(), "cut {cut}: answered early");
        let second = h.stream_data(conn, &req[cut..]);
        assert_eq!(second.answer().bytes, reference, "cut {cut}");
    }
    // And one byte at a time.
    h.open_stream(ConnId(2), TCP, remote);
    let mut answers = Vec::new();
    for b in &req {
        answers.extend(h.stream_data(ConnId(2), std::slice::from_ref(b)).answers);
    }
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].bytes, reference);
}

#[test]
fn authenticated_allocate_fed_one_byte_at_a_time_succeeds() {
    let mut h = Harness::new();
    let mut c = h.tcp_client(3, sa("203.0.113.21:40000"));
    h.challenge(&mut c, &Req::allocate());
    let bytes = Req::allocate().encode_signed(h.tid(), &c);
    let mut out = Outcome::default();
    for b in &bytes {
        out.merge(h.stream_data(ConnId(3), std::slice::from_ref(b)));
    }
    assert!(out.answer().is_success());
}

#[test]
fn stun_and_padded_channel_data_back_to_back() {
    // RFC 8656 §12.5: on a stream, ChannelData (padded to 4) and STUN messages follow each
    // other without delimiter.
    let mut h = generous();
    let mut c = h.tcp_client(4, sa("203.0.113.22:40000"));
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let tid = h.tid();
    let mut bytes = channel_data(0x4000, b"one", true);
    bytes.extend(Req::binding().encode_plain(tid, false));
    bytes.extend(channel_data(0x4000, b"second", true));
    bytes.extend(channel_data(0x4000, b"", true));
    bytes.extend(channel_data(0x4000, b"four", true));
    let expected = vec![
        (relay, peer(1), b"one".to_vec()),
        (relay, peer(1), b"second".to_vec()),
        (relay, peer(1), b"".to_vec()),
        (relay, peer(1), b"four".to_vec()),
    ];
    let out = h.stream_data(ConnId(4), &bytes);
    assert_eq!(out.stream_to_peer, expected);
    assert_eq!(out.answer().tid(), tid);
    // The same bytes split at every boundary give the same frames.
    for cut in 1..bytes.len() {
        let mut out = h.stream_data(ConnId(4), &bytes[..cut]);
        out.merge(h.stream_data(ConnId(4), &bytes[cut..]));
        assert_eq!(out.stream_to_peer, expected, "cut {cut}");
        assert_eq!(out.answers.len(), 1, "cut {cut}");
        assert!(out.closed_streams.is_empty());
    }
}

#[test]
fn proxy_v1_header_sets_the_client_address() {
    let mut h = Harness::new();
    let real = sa("203.0.113.30:41000");
    let out = proxied_binding(&mut h, 10, &encode_v1(Some((real, sa("192.0.2.1:443")))));
    assert_eq!(out.answer().xor(attr::XOR_MAPPED_ADDRESS), Some(real));
    assert_eq!(h.server.stats(h.now).proxy_accepted, 1);
}

#[test]
fn proxy_v1_tcp6_header_sets_the_client_address() {
    let mut h = Harness::new();
    let real = sa("[2001:db8:5::5]:41001");
    let out = proxied_binding(
        &mut h,
        11,
        &encode_v1(Some((real, sa("[2001:db8::1]:443")))),
    );
    assert_eq!(out.answer().xor(attr::XOR_MAPPED_ADDRESS), Some(real));
}

#[test]
fn proxy_v2_header_sets_the_client_address() {
    let mut h = Harness::new();
    let real = sa("203.0.113.31:41002");
    let out = proxied_binding(&mut h, 12, &encode_v2(Some((real, sa("192.0.2.1:443")))));
    assert_eq!(out.answer().xor(attr::XOR_MAPPED_ADDRESS), Some(real));
}

#[test]
fn proxy_unknown_and_v2_local_keep_the_connection_address() {
    // PROXY v1 UNKNOWN (nginx's second hop) and v2 LOCAL (health checks): the receiver
    // uses the connection's own endpoints.
    let mut h = Harness::new();
    let out = proxied_binding(&mut h, 13, b"PROXY UNKNOWN\r\n");
    assert_eq!(
        out.answer().xor(attr::XOR_MAPPED_ADDRESS),
        Some(proxy_addr())
    );
    let out = proxied_binding(&mut h, 14, b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
    assert_eq!(
        out.answer().xor(attr::XOR_MAPPED_ADDRESS),
        Some(proxy_addr())
    );
    let out = proxied_binding(&mut h, 15, &encode_v2(None));
    assert_eq!(
        out.answer().xor(attr::XOR_MAPPED_ADDRESS),
        Some(proxy_addr())
    );
}

#[test]
fn proxy_v1_nginx_unix_socket_variant_is_accepted() {
    // nginx relaying from a unix socket writes the destination as `unix:/path`: the
    // source address is still the client.
    let mut h = Harness::new();
    let out = proxied_binding(
        &mut h,
        16,
        b"PROXY TCP4 203.0.113.32 unix:/run/turn.sock 41003 0\r\n",
    );
    assert_eq!(
        out.answer().xor(attr::XOR_MAPPED_ADDRESS),
        Some(sa("203.0.113.32:41003"))
    );
}

#[test]
fn proxy_header_split_at_every_byte_is_accepted() {
    let mut h = Harness::new();
    let real = sa("203.0.113.33:41004");
    for (i, header) in [
        encode_v1(Some((real, sa("192.0.2.1:443")))),
        encode_v2(Some((real, sa("192.0.2.1:443")))),
    ]
    .into_iter()
    .enumerate()
    {
        let conn = ConnId(20 + i as u64);
        h.open_stream(conn, TCP_PROXY, proxy_addr());
        let mut bytes = header;
        bytes.extend(Req::binding().encode_plain(h.tid(), false));
        let mut out = Outcome::default();
        for b in &bytes {
            out.merge(h.stream_data(conn, std::slice::from_ref(b)));
        }
        assert!(out.closed_streams.is_empty());
        assert_eq!(out.answer().xor(attr::XOR_MAPPED_ADDRESS), Some(real));
    }
}

#[test]
fn proxy_header_from_an_untrusted_source_closes_the_stream() {
    let mut h = Harness::new();
    let out = h.open_stream(ConnId(30), TCP_PROXY, sa("203.0.113.99:5000"));
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(30), CloseReason::UntrustedProxy)]
    );
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::StreamRejected {
            conn: ConnId(30),
            reason: CloseReason::UntrustedProxy,
            ..
        }
    )));
    // Whatever it sends afterwards is ignored.
    let out = h.stream_data(ConnId(30), &encode_v1(Some((client(1), client(2)))));
    assert!(out.answers.is_empty() && out.closed_streams.is_empty());
    assert_eq!(h.server.stats(h.now).streams, 0);
}

#[test]
fn proxy_header_on_a_plain_listener_is_not_honoured() {
    // A PROXY header is accepted only on listeners configured for it: elsewhere the
    // client cannot choose its reported address. "PR" reads as ChannelData, which no TURN
    // client opens with, so the stream is closed at once.
    let mut h = Harness::new();
    h.open_stream(ConnId(31), TCP, sa("10.0.0.5:1000"));
    let mut bytes = encode_v1(Some((client(1), client(2))));
    bytes.extend(Req::binding().encode_plain(h.tid(), false));
    let out = h.stream_data(ConnId(31), &bytes);
    assert!(out.answers.is_empty());
    assert_eq!(h.server.stats(h.now).proxy_accepted, 0);
    assert_eq!(out.closed_streams, vec![(ConnId(31), CloseReason::NotTurn)]);
}

#[test]
fn missing_proxy_header_closes_the_stream() {
    let mut h = Harness::new();
    h.open_stream(ConnId(32), TCP_PROXY, proxy_addr());
    let bytes = Req::binding().encode_plain(h.tid(), false);
    let out = h.stream_data(ConnId(32), &bytes);
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(32), CloseReason::BadProxyHeader)]
    );
    assert!(out.answers.is_empty());
    assert_eq!(h.server.stats(h.now).proxy_rejected, 1);
}

#[test]
fn malformed_proxy_headers_close_the_stream() {
    let mut h = Harness::new();
    let bad: [&[u8]; 3] = [
        b"PROXY TCP4 300.1.1.1 192.0.2.1 1 2\r\n",
        b"PROXY TCP5 203.0.113.1 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.1 192.0.2.1 70000 2\r\n",
    ];
    for (i, header) in bad.iter().enumerate() {
        let conn = ConnId(40 + i as u64);
        h.open_stream(conn, TCP_PROXY, proxy_addr());
        let out = h.stream_data(conn, header);
        assert_eq!(
            out.closed_streams,
            vec![(conn, CloseReason::BadProxyHeader)],
            "{}",
            String::from_utf8_lossy(header)
        );
    }
    // A v1 line that never ends within 107 bytes.
    h.open_stream(ConnId(49), TCP_PROXY, proxy_addr());
    let mut long = b"PROXY TCP4 ".to_vec();
    long.extend(vec![b'1'; 200]);
    let out = h.stream_data(ConnId(49), &long);
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(49), CloseReason::BadProxyHeader)]
    );
}

#[test]
fn proxy_header_that_never_completes_is_closed_after_the_timeout() {
    let mut h = Harness::new();
    let timeout = h.server.config().proxy_header_timeout;
    h.open_stream(ConnId(50), TCP_PROXY, proxy_addr());
    assert!(h
        .stream_data(ConnId(50), b"PROXY TCP4 203.0.")
        .closed_streams
        .is_empty());
    let out = h.advance(timeout - Duration::from_millis(1));
    assert!(out.closed_streams.is_empty());
    let out = h.advance(Duration::from_millis(1));
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(50), CloseReason::ProxyHeaderTimeout)]
    );
    assert_eq!(h.server.stats(h.now).streams, 0);
}

#[test]
fn tls_client_hello_on_a_plain_listener_is_not_turn() {
    // A TLS ClientHello starts 0x16 0x03: it reads as a STUN header without the magic
    // cookie, and the stream is closed at once.
    let mut h = Harness::new();
    let client_hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xab, 0xcd, 0xef, 0x01,
        0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
    ];
    h.open_stream(ConnId(60), TCP, sa("203.0.113.40:1000"));
    let out = h.stream_data(ConnId(60), &client_hello);
    assert_eq!(out.closed_streams, vec![(ConnId(60), CloseReason::NotTurn)]);
    assert!(out.answers.is_empty());
    assert_eq!(h.server.stats(h.now).streams, 0);
}

#[test]
fn http_on_a_plain_listener_is_not_turn() {
    let mut h = Harness::new();
    let inputs: [&[u8]; 2] = [
        b"GET / HTTP/1.1\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for (i, bytes) in inputs.iter().enumerate() {
        let conn = ConnId(61 + i as u64);
        h.open_stream(conn, TCP, sa("203.0.113.40:1000"));
        let out = h.stream_data(conn, bytes);
        assert_eq!(
            out.closed_streams,
            vec![(conn, CloseReason::NotTurn)],
            "input {i}"
        );
        assert!(out.answers.is_empty());
    }
    assert_eq!(h.server.stats(h.now).streams, 0);
}

#[test]
fn short_channel_data_before_any_allocation_is_not_turn() {
    // A complete ChannelData frame on a stream that never allocated: not a TURN client.
    let mut h = Harness::new();
    h.open_stream(ConnId(63), TCP, sa("203.0.113.40:1001"));
    let out = h.stream_data(ConnId(63), &channel_data(0x4000, b"abcd", true));
    assert_eq!(out.closed_streams, vec![(ConnId(63), CloseReason::NotTurn)]);
}

#[test]
fn oversized_frame_closes_the_stream() {
    let mut cfg = config();
    cfg.max_stream_frame = 200;
    let mut h = Harness::with_config(cfg);
    h.open_stream(ConnId(65), TCP, sa("203.0.113.41:1000"));
    let big = Req::binding()
        .raw(0xC002, &[0u8; 400])
        .encode_plain(h.tid(), false);
    let out = h.stream_data(ConnId(65), &big[..24]);
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(65), CloseReason::FrameTooLarge)]
    );
}

#[test]
fn idle_stream_without_an_allocation_is_closed() {
    let mut h = Harness::new();
    let idle = h.server.config().stream_idle_timeout;
    h.open_stream(ConnId(70), TCP, sa("203.0.113.42:1000"));
    let out = h.advance(idle - Duration::from_millis(1));
    assert!(out.closed_streams.is_empty());
    // A valid request pushes the deadline back.
    let (_, out) = h.send_plain(&Client::stream(ConnId(70)), &Req::binding());
    assert!(out.answer().is_success());
    let out = h.advance(idle - Duration::from_millis(1));
    assert!(out.closed_streams.is_empty());
    let out = h.advance(Duration::from_millis(1));
    assert_eq!(out.closed_streams, vec![(ConnId(70), CloseReason::Idle)]);
}

#[test]
fn stream_with_an_allocation_is_not_idle_closed() {
    let mut h = Harness::new();
    let mut c = h.tcp_client(71, sa("203.0.113.43:1000"));
    h.allocate_ok(&mut c);
    let idle = h.server.config().stream_idle_timeout;
    let out = h.advance(idle * 3);
    assert!(out.closed_streams.is_empty());
    assert_eq!(h.server.stats(h.now).allocations, 1);
}

#[test]
fn closing_the_stream_deletes_its_allocation() {
    // RFC 8656 §3.1: over TCP/TLS the allocation lives as long as the connection.
    let mut h = Harness::new();
    let mut c = h.tcp_client(72, sa("203.0.113.44:1000"));
    let (_, relays) = h.allocate_ok(&mut c);
    let out = h.close_stream(ConnId(72));
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::StreamClosed,
            ..
        }
    )));
    assert_eq!(out.closed_relays, relays);
    assert!(
        out.closed_streams.is_empty(),
        "the driver closed it already"
    );
    let s = h.server.stats(h.now);
    assert_eq!(
        (s.allocations, s.streams, s.ports_v4.quarantined),
        (0, 0, 1)
    );
}

#[test]
fn closing_the_stream_while_its_bind_is_pending_abandons_the_allocate() {
    let mut h = Harness::new();
    let mut c = h.tcp_client(73, sa("203.0.113.45:1000"));
    h.challenge(&mut c, &Req::allocate());
    h.binds.hold = true;
    let (_, out) = h.send_signed(&c, &Req::allocate());
    assert!(out.answers.is_empty());
    h.close_stream(ConnId(73));
    let out = h.release_binds();
    assert!(out.answers.is_empty(), "nobody to answer");
    // The bound socket is closed again, nothing is left behind.
    let bound: Vec<_> = out.bound().into_iter().map(|b| b.0).collect();
    assert_eq!(out.closed_relays, bound);
    let s = h.server.stats(h.now);
    assert_eq!(
        (s.allocations, s.allocations_pending, s.ports_v4.in_use),
        (0, 0, 0)
    );
}

#[test]
fn allocation_ending_on_a_live_stream_lets_it_idle_out() {
    let mut h = Harness::new();
    let mut c = h.tcp_client(74, sa("203.0.113.46:1000"));
    h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::refresh(Some(0)))
        .answer()
        .is_success());
    let idle = h.server.config().stream_idle_timeout;
    let out = h.advance(idle);
    assert_eq!(out.closed_streams, vec![(ConnId(74), CloseReason::Idle)]);
}

#[test]
fn max_streams_is_enforced() {
    let mut cfg = config();
    cfg.max_streams = 2;
    let mut h = Harness::with_config(cfg);
    let r: SocketAddr = sa("203.0.113.47:1000");
    assert!(h.open_stream(ConnId(80), TCP, r).closed_streams.is_empty());
    assert!(h.open_stream(ConnId(81), TCP, r).closed_streams.is_empty());
    let out = h.open_stream(ConnId(82), TCP, r);
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(82), CloseReason::TooManyStreams)]
    );
    assert_eq!(h.server.stats(h.now).streams, 2);
    h.close_stream(ConnId(80));
    assert!(h.open_stream(ConnId(83), TCP, r).closed_streams.is_empty());
}

#[test]
fn stream_on_a_udp_listener_id_is_refused() {
    let mut h = Harness::new();
    let out = h.open_stream(ConnId(90), UDP, sa("203.0.113.48:1000"));
    assert_eq!(out.closed_streams.len(), 1);
    assert_eq!(h.server.stats(h.now).streams, 0);
}
