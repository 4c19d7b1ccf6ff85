//! The relay paths (RFC 8656 §11, §12): ChannelData and Send indications from clients,
//! peer datagrams to clients as ChannelData or Data indications, and the drops.

mod support;

use core::time::Duration;
use support::*;
use turnpike_core::event::{Event, TrafficCounters};
use turnpike_core::stun::{attr, Class, Message, Method};
use turnpike_core::{ConnId, Forward, ListenerId, HEADROOM};

#[test]
fn channel_data_over_udp_goes_to_the_peer_with_the_exact_payload_range() {
    // RFC 8656 §12.6: ChannelData on a bound channel is relayed to the peer as a UDP
    // datagram holding the application data.
    let mut h = Harness::new();
    let mut c = Client::udp(1);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4001);
    let payload = b"hello, peer";
    let (out, buf) = h.datagram_at(client(1), &channel_data(0x4001, payload, false), 13);
    assert!(out.answers.is_empty());
    assert_eq!(
        out.forward,
        Some(Forward::ToPeer {
            relay,
            peer: peer(1),
            range: 17..17 + payload.len()
        })
    );
    assert_eq!(&buf[17..17 + payload.len()], payload);
    let s = h.server.stats(h.now);
    assert_eq!(
        (s.udp.to_peer_packets, s.udp.to_peer_bytes),
        (1, payload.len() as u64)
    );
}

#[test]
fn padded_channel_data_over_udp_relays_only_the_payload() {
    // RFC 8656 §12.5: padding may be present on UDP too; it is not relayed.
    let mut h = Harness::new();
    let mut c = Client::udp(2);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let out = h.datagram(UDP, client(2), &channel_data(0x4000, b"abcde", true));
    assert_eq!(
        out.forward,
        Some(Forward::ToPeer {
            relay,
            peer: peer(1),
            range: 4..9
        })
    );
}

#[test]
fn peer_datagram_on_a_channel_becomes_unpadded_channel_data_over_udp() {
    // RFC 8656 §12.7 / §12.5: wrapped in ChannelData; no padding over UDP.
    let mut h = Harness::new();
    let mut c = Client::udp(3);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4abc);
    let payload = b"12345";
    let (out, buf) = h.peer_datagram(relay, peer(1), payload);
    let range = HEADROOM - 4..HEADROOM + payload.len();
    assert_eq!(
        out.forward,
        Some(Forward::ToClient {
            listener: UDP,
            client: client(3),
            range: range.clone()
        })
    );
    assert_eq!(
        &buf[range],
        &[&[0x4a, 0xbc, 0, 5][..], payload].concat()[..]
    );
    let s = h.server.stats(h.now);
    assert_eq!((s.udp.from_peer_packets, s.udp.from_peer_bytes), (1, 5));
}

#[test]
fn peer_datagram_on_a_channel_is_padded_to_4_over_a_stream() {
    // RFC 8656 §12.5: over TCP/TLS ChannelData is padded to a multiple of 4 bytes.
    let mut h = Harness::new();
    let mut c = h.tcp_client(7, sa("203.0.113.4:40000"));
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let payload = b"12345";
    let (out, buf) = h.peer_datagram(relay, peer(1), payload);
    let range = HEADROOM - 4..HEADROOM + 8;
    assert_eq!(
        out.forward,
        Some(Forward::ToStream {
            conn: ConnId(7),
            range: range.clone()
        })
    );
    assert_eq!(
        &buf[range],
        &[0x40, 0, 0, 5, b'1', b'2', b'3', b'4', b'5', 0, 0, 0]
    );
    let s = h.server.stats(h.now);
    assert_eq!((s.tcp.from_peer_packets, s.tcp.from_peer_bytes), (1, 5));
    // An aligned payload needs no padding.
    let (out, _) = h.peer_datagram(relay, peer(1), b"1234");
    assert!(
        matches!(out.forward, Some(Forward::ToStream { range, .. }) if range == (HEADROOM - 4..HEADROOM + 4))
    );
}

#[test]
fn peer_datagram_without_a_channel_becomes_a_data_indication() {
    // RFC 8656 §11.3: a Data indication with XOR-PEER-ADDRESS and DATA.
    let mut h = Harness::new();
    let mut c = Client::udp(4);
    let (_, relays) = h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(9)]))
        .answer()
        .is_success());
    for payload in [&b"x"[..], b"four", b"seven!!", b""] {
        let (out, buf) = h.peer_datagram(relays[0], peer(9), payload);
        let Some(Forward::ToClient {
            listener,
            client: to,
            range,
        }) = out.forward
        else {
            panic!("expected a datagram to the client, got {:?}", out.forward);
        };
        assert_eq!((listener, to), (UDP, client(4)));
        assert!(range.start <= HEADROOM && range.end <= buf.len());
        let m = Message::parse(&buf[range]).expect("a valid STUN message");
        assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
        let tid = m.transaction_id();
        assert_eq!(
            attr::decode_xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap(), &tid),
            Ok(peer(9))
        );
        assert_eq!(m.get(attr::DATA), Some(payload));
    }
}

#[test]
fn data_indication_from_an_ipv6_peer_parses() {
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = h.tcp_client(3, sa("203.0.113.5:1111"));
    let (_, relays) = h.allocate_with(&mut c, Req::allocate().family(attr::FAMILY_IPV6));
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer6(2)]))
        .answer()
        .is_success());
    let (out, buf) = h.peer_datagram(relays[0], peer6(2), b"v6 data");
    let Some(Forward::ToStream { conn, range }) = out.forward else {
        panic!("{:?}", out.forward)
    };
    assert_eq!(conn, ConnId(3));
    assert_eq!(range.len() % 4, 0);
    let m = Message::parse(&buf[range]).unwrap();
    let tid = m.transaction_id();
    assert_eq!(
        attr::decode_xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap(), &tid),
        Ok(peer6(2))
    );
    assert_eq!(m.get(attr::DATA), Some(&b"v6 data"[..]));
}

#[test]
fn send_indication_goes_to_the_peer_with_the_data_range() {
    // RFC 8656 §11.2: the DATA value is sent to XOR-PEER-ADDRESS if a permission exists.
    let mut h = Harness::new();
    let mut c = Client::udp(5);
    let (_, relays) = h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(3)]))
        .answer()
        .is_success());
    let payload = b"through a send indication";
    let tid = h.tid();
    let bytes = Req::send_indication(peer(3), payload).encode_plain(tid, false);
    let (out, buf) = h.datagram_at(client(5), &bytes, 40);
    assert!(out.answers.is_empty(), "indications get no answer");
    let Some(Forward::ToPeer {
        relay,
        peer: to,
        range,
    }) = out.forward
    else {
        panic!("{:?}", out.forward)
    };
    assert_eq!((relay, to), (relays[0], peer(3)));
    assert_eq!(&buf[range.clone()], payload);
    // The range is exactly the DATA value within the message, in buffer coordinates.
    let m = Message::parse(&bytes).unwrap();
    let data = m.get(attr::DATA).unwrap();
    let offset = data.as_ptr() as usize - bytes.as_ptr() as usize;
    assert_eq!(range, 40 + offset..40 + offset + payload.len());
}

#[test]
fn send_indication_and_channel_data_over_a_stream_reach_the_peer() {
    let mut h = Harness::new();
    let mut c = h.tcp_client(4, sa("203.0.113.6:1111"));
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(2)]))
        .answer()
        .is_success());
    let send = Req::send_indication(peer(2), b"via send").encode_plain(h.tid(), false);
    let out = h.stream_data(ConnId(4), &send);
    assert_eq!(
        out.stream_to_peer,
        vec![(relay, peer(2), b"via send".to_vec())]
    );
    let out = h.stream_data(ConnId(4), &channel_data(0x4000, b"via channel", true));
    assert_eq!(
        out.stream_to_peer,
        vec![(relay, peer(1), b"via channel".to_vec())]
    );
    let s = h.server.stats(h.now);
    assert_eq!((s.tcp.to_peer_packets, s.tcp.to_peer_bytes), (2, 19));
}

#[test]
fn no_permission_drops_both_ways() {
    // RFC 8656 §11.2, §11.3: without a permission nothing is relayed, either way.
    let mut h = Harness::new();
    let mut c = Client::udp(6);
    let (_, relays) = h.allocate_ok(&mut c);
    let (_, out) = h.send_plain(&c, &Req::send_indication(peer(1), b"no"));
    assert_eq!(out.forward, None);
    assert!(out.answers.is_empty());
    let (out, _) = h.peer_datagram(relays[0], peer(1), b"no");
    assert_eq!(out.forward, None);
    assert_eq!(h.server.stats(h.now).dropped.no_permission, 2);
}

#[test]
fn channel_whose_permission_expired_drops_data() {
    // RFC 8656 §12: the channel (600 s) outlives the permission (300 s) unless refreshed;
    // relaying needs both.
    let mut h = Harness::new();
    let mut c = Client::udp(7);
    h.allocate_with(&mut c, Req::allocate().lifetime(3600));
    let out = h.authed(&mut c, Req::channel_bind(0x4000, peer(1)));
    assert!(out.answer().is_success());
    let relays = h.server.allocations(h.now);
    assert_eq!(relays[0].channels, 1);
    h.advance(Duration::from_secs(301));
    let out = h.datagram(UDP, client(7), &channel_data(0x4000, b"x", false));
    assert_eq!(out.forward, None);
    assert_eq!(h.server.stats(h.now).dropped.no_permission, 1);
}

#[test]
fn unbound_channel_is_dropped() {
    // RFC 8656 §12.6: ChannelData on a channel not bound is discarded.
    let mut h = Harness::new();
    let mut c = Client::udp(8);
    h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let out = h.datagram(UDP, client(8), &channel_data(0x4001, b"x", false));
    assert_eq!(out.forward, None);
    assert!(out.answers.is_empty());
    assert_eq!(h.server.stats(h.now).dropped.unbound_channel, 1);
}

#[test]
fn channel_data_from_a_client_without_an_allocation_is_dropped() {
    let mut h = Harness::new();
    let mut c = Client::udp(9);
    h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let out = h.datagram(UDP, client(10), &channel_data(0x4000, b"x", false));
    assert_eq!(out.forward, None);
    assert!(out.answers.is_empty());
    // The same from the right address but another listener is another 5-tuple.
    let out = h.datagram(
        ListenerId(99),
        client(9),
        &channel_data(0x4000, b"x", false),
    );
    assert_eq!(out.forward, None);
    assert_eq!(h.server.stats(h.now).dropped.no_allocation, 1);
}

#[test]
fn malformed_channel_data_is_dropped() {
    let mut h = Harness::new();
    let mut c = Client::udp(11);
    h.allocation_with_channel(&mut c, peer(1), 0x4000);
    // Length beyond the datagram, and a header cut short.
    let mut long = channel_data(0x4000, b"abcd", false);
    long[3] = 50;
    for bytes in [long, vec![0x40, 0x00, 0x00]] {
        let out = h.datagram(UDP, client(11), &bytes);
        assert_eq!(out.forward, None);
        assert!(out.answers.is_empty());
    }
    assert_eq!(h.server.stats(h.now).dropped.malformed, 2);
}

#[test]
fn send_indication_to_port_0_is_dropped() {
    let mut h = Harness::new();
    let mut c = Client::udp(12);
    h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(1)]))
        .answer()
        .is_success());
    let p0 = std::net::SocketAddr::new(peer(1).ip(), 0);
    let (_, out) = h.send_plain(&c, &Req::send_indication(p0, b"x"));
    assert_eq!(out.forward, None);
    assert_eq!(h.server.stats(h.now).dropped.denied_peer, 1);
}

#[test]
fn datagram_on_an_unknown_relay_is_dropped() {
    let mut h = Harness::new();
    let mut c = Client::udp(13);
    let (_, relays) = h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(1)]))
        .answer()
        .is_success());
    assert!(h
        .authed(&mut c, Req::refresh(Some(0)))
        .answer()
        .is_success());
    let (out, _) = h.peer_datagram(relays[0], peer(1), b"late");
    assert_eq!(out.forward, None);
    assert_eq!(h.server.stats(h.now).dropped.unknown_relay, 1);
}

#[test]
fn traffic_counters_in_allocation_deleted_match_what_was_relayed() {
    let mut h = Harness::new();
    let mut c = Client::udp(14);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(2)]))
        .answer()
        .is_success());
    // To peers: 3 packets, 3 + 5 + 7 bytes.
    assert!(h
        .datagram(UDP, client(14), &channel_data(0x4000, b"abc", false))
        .forward
        .is_some());
    assert!(h
        .datagram(UDP, client(14), &channel_data(0x4000, b"abcde", true))
        .forward
        .is_some());
    let (_, out) = h.send_plain(&c, &Req::send_indication(peer(2), b"abcdefg"));
    assert!(out.forward.is_some());
    // From peers: 2 packets, 10 + 1 bytes.
    assert!(h
        .peer_datagram(relay, peer(1), b"0123456789")
        .0
        .forward
        .is_some());
    assert!(h.peer_datagram(relay, peer(2), b"z").0.forward.is_some());
    // Dropped: unbound channel, no permission.
    assert!(h
        .datagram(UDP, client(14), &channel_data(0x4009, b"zz", false))
        .forward
        .is_none());
    assert!(h.peer_datagram(relay, peer(3), b"zz").0.forward.is_none());

    let out = h.authed(&mut c, Req::refresh(Some(0)));
    let traffic = out
        .events
        .iter()
        .find_map(|e| match e {
            Event::AllocationDeleted { traffic, .. } => Some(*traffic),
            _ => None,
        })
        .expect("AllocationDeleted");
    assert_eq!(
        traffic,
        TrafficCounters {
            to_peer_packets: 3,
            to_peer_bytes: 15,
            from_peer_packets: 2,
            from_peer_bytes: 11,
            dropped_packets: 2,
        }
    );
    let s = h.server.stats(h.now);
    assert_eq!((s.udp.to_peer_packets, s.udp.to_peer_bytes), (3, 15));
    assert_eq!((s.udp.from_peer_packets, s.udp.from_peer_bytes), (2, 11));
}

#[test]
fn send_indication_with_an_unknown_required_attribute_is_discarded() {
    // RFC 8489 §6.3.2: an indication with unknown comprehension-required attributes is
    // discarded (no answer, nothing relayed).
    let mut h = Harness::new();
    let mut c = Client::udp(20);
    h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(1)]))
        .answer()
        .is_success());
    let (_, out) = h.send_plain(&c, &Req::send_indication(peer(1), b"x").raw(0x7777, b"?"));
    assert!(out.answers.is_empty());
    assert_eq!(out.forward, None);
}

#[test]
fn channel_is_per_transport_address_other_ports_get_data_indications() {
    // RFC 8656 §12: a channel binds a peer transport address; a datagram from another
    // port of the same IP (permitted: permissions are per IP) arrives as a Data
    // indication.
    let mut h = Harness::new();
    let mut c = Client::udp(21);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let other = std::net::SocketAddr::new(peer(1).ip(), 1234);
    let (out, buf) = h.peer_datagram(relay, other, b"hi");
    let Some(Forward::ToClient { range, .. }) = out.forward else {
        panic!("{:?}", out.forward)
    };
    let m = Message::parse(&buf[range]).unwrap();
    assert_eq!(m.method(), Method::DATA);
    let tid = m.transaction_id();
    assert_eq!(
        attr::decode_xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap(), &tid),
        Ok(other)
    );
}

#[test]
fn channel_bind_refresh_also_refreshes_the_permission() {
    // RFC 8656 §12.2: a ChannelBind refreshes the peer's permission too.
    let mut h = Harness::new();
    let mut c = Client::udp(22);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let t = h.now;
    h.advance_to(t + Duration::from_secs(250));
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    h.advance_to(t + Duration::from_secs(400));
    assert!(h
        .peer_datagram(relay, peer(1), b"still")
        .0
        .forward
        .is_some());
    assert!(h
        .datagram(UDP, client(22), &channel_data(0x4000, b"still", false))
        .forward
        .is_some());
}

#[test]
fn peer_datagram_without_headroom_is_dropped_not_a_panic() {
    let mut h = Harness::new();
    let mut c = Client::udp(23);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let mut buf = vec![0u8; 64];
    let now = h.now;
    // No headroom, no tailroom, past the end, and an inverted range.
    #[allow(clippy::reversed_empty_ranges)]
    let ranges = [0..10, 2..60, 20..64, 50..40];
    for range in ranges {
        let fwd = h
            .server
            .handle_relay_datagram(now, relay, peer(1), &mut buf, range.clone());
        assert_eq!(fwd, None, "{range:?}");
    }
}

#[test]
fn data_indication_for_the_ipv6_side_of_a_dual_stack_allocation() {
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = Client::udp(24);
    let (a, relays) = h.allocate_with(&mut c, Req::allocate().additional_family(attr::FAMILY_IPV6));
    assert_eq!(a.xors(attr::XOR_RELAYED_ADDRESS).len(), 2);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(1), peer6(1)]))
        .answer()
        .is_success());
    let (_, out) = h.send_plain(&c, &Req::send_indication(peer6(1), b"six"));
    assert!(
        matches!(out.forward, Some(Forward::ToPeer { relay, peer, .. }) if relay == relays[1] && peer == peer6(1))
    );
    let (_, out) = h.send_plain(&c, &Req::send_indication(peer(1), b"four"));
    assert!(matches!(out.forward, Some(Forward::ToPeer { relay, .. }) if relay == relays[0]));
    // And back: the IPv6 peer's datagram on the IPv6 relay socket reaches the client.
    let (out, _) = h.peer_datagram(relays[1], peer6(1), b"ok");
    assert!(out.forward.is_some());
}
