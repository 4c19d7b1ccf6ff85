//! Allocate (RFC 8656 §7.2): the success answer, retransmissions, the error codes, address
//! families, lifetimes, quotas, the relay port pool and asynchronous binds, EVEN-PORT and
//! RESERVATION-TOKEN.

mod support;

use core::time::Duration;
use std::net::SocketAddr;
use support::*;
use turnpike_core::config::RelayAddress;
use turnpike_core::event::Event;
use turnpike_core::ports::PortStats;
use turnpike_core::server::BindError;
use turnpike_core::stun::{attr, Class, Method};
use turnpike_core::{ConnId, RelayId};

fn port_range(h: &Harness) -> std::ops::RangeInclusive<u16> {
    h.server.config().relay_port_min..=h.server.config().relay_port_max
}

fn total(p: PortStats) -> u32 {
    p.free + p.in_use + p.quarantined + p.reserved
}

#[test]
fn allocate_success_carries_relayed_lifetime_and_mapped_addresses() {
    // RFC 8656 §7.2: the success response has XOR-RELAYED-ADDRESS, LIFETIME and
    // XOR-MAPPED-ADDRESS; the default lifetime is 600 s (§3.2).
    let mut h = Harness::new();
    let mut c = Client::udp(1);
    h.challenge(&mut c, &Req::allocate());
    let (tid, out) = h.send_signed(&c, &Req::allocate());
    let a = out.answer();
    assert_eq!(a.tid(), tid);
    assert_eq!(a.method(), Method::ALLOCATE);
    assert_eq!(a.class(), Class::Success);
    assert_eq!(out.binds.len(), 1);
    let (relay, bind_addr, _) = out.binds[0];
    assert_eq!(bind_addr.ip(), relay_v4());
    assert!(port_range(&h).contains(&bind_addr.port()));
    let relayed = a.xor(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relayed, SocketAddr::new(relay_v4(), bind_addr.port()));
    assert_eq!(a.lifetime(), Some(600));
    assert_eq!(a.xor(attr::XOR_MAPPED_ADDRESS), Some(client(1)));
    assert!(a.verifies_sha1(&c.key()));
    let created: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            Event::AllocationCreated {
                username,
                relayed,
                lifetime_s,
                client: info,
                ..
            } => Some((username.clone(), relayed.clone(), *lifetime_s, info.addr)),
            _ => None,
        })
        .collect();
    assert_eq!(
        created,
        vec![(USER.to_string(), vec![relayed], 600, client(1))]
    );
    let stats = h.server.stats(h.now);
    assert_eq!(stats.allocations, 1);
    assert_eq!(stats.ports_v4.in_use, 1);
    let _ = relay;
}

#[test]
fn allocate_binds_the_local_address_and_advertises_the_public_one() {
    // Behind 1:1 NAT the relay binds one address and advertises another.
    let mut cfg = config();
    cfg.relay_v4 = Some(RelayAddress {
        bind: ip("10.1.1.1"),
        advertised: ip("192.0.2.200"),
    });
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(2);
    let out = h.authed(&mut c, Req::allocate());
    let port = out.binds[0].1.port();
    assert_eq!(out.binds[0].1, SocketAddr::new(ip("10.1.1.1"), port));
    assert_eq!(
        out.answer().xor(attr::XOR_RELAYED_ADDRESS),
        Some(SocketAddr::new(ip("192.0.2.200"), port))
    );
}

#[test]
fn retransmitted_allocate_gets_the_identical_answer_not_437() {
    // RFC 8656 §7.2 / RFC 8489 §6.3.1: a retransmission (same transaction id, same
    // 5-tuple) gets the same answer, byte for byte; no second relay is bound.
    let mut h = Harness::new();
    let mut c = Client::udp(3).with_fingerprint();
    h.challenge(&mut c, &Req::allocate());
    let tid = h.tid();
    let req = Req::allocate().with_tid(tid);
    let (_, first) = h.send_signed(&c, &req);
    let (_, again) = h.send_signed(&c, &req);
    assert!(first.answer().is_success());
    assert_eq!(again.answer().bytes, first.answer().bytes);
    assert!(again.binds.is_empty());
    assert!(again.events.is_empty());
    assert_eq!(h.server.stats(h.now).allocations, 1);
    assert_eq!(h.server.stats(h.now).retransmissions, 1);
}

#[test]
fn retransmission_while_the_bind_is_pending_is_answered_once() {
    let mut h = Harness::new();
    let mut c = Client::udp(4);
    h.challenge(&mut c, &Req::allocate());
    h.binds.hold = true;
    let req = Req::allocate().with_tid(h.tid());
    let (_, first) = h.send_signed(&c, &req);
    assert!(first.answers.is_empty(), "the answer waits for the bind");
    assert_eq!(h.held.len(), 1);
    let (_, again) = h.send_signed(&c, &req);
    assert!(again.answers.is_empty());
    assert_eq!(h.held.len(), 1, "no second bind");
    let done = h.release_binds();
    assert!(done.answer().is_success());
    let (_, late) = h.send_signed(&c, &req);
    assert_eq!(late.answer().bytes, done.answer().bytes);
}

#[test]
fn new_allocate_on_an_allocated_5_tuple_is_437() {
    // RFC 8656 §7.2 step 2: the 5-tuple already has an allocation → 437.
    let mut h = Harness::new();
    let mut c = Client::udp(5);
    h.allocate_ok(&mut c);
    let out = h.authed(&mut c, Req::allocate());
    let a = out.answer();
    assert_eq!(a.code(), Some(437));
    assert!(a.verifies_sha1(&c.key()));
    assert!(out.binds.is_empty());
    // A new transaction while the first one's bind is still pending is a 437 too.
    let mut d = Client::udp(6);
    h.challenge(&mut d, &Req::allocate());
    h.binds.hold = true;
    let (_, first) = h.send_signed(&d, &Req::allocate());
    assert!(first.answers.is_empty());
    let (_, second) = h.send_signed(&d, &Req::allocate());
    assert_eq!(second.answer().code(), Some(437));
    let done = h.release_binds();
    assert!(done.answer().is_success());
}

#[test]
fn requested_transport_missing_is_400_and_tcp_is_442() {
    // RFC 8656 §7.2 step 3: no REQUESTED-TRANSPORT → 400; a transport the server does not
    // relay (TCP, 6, until RFC 6062 is supported) → 442.
    let mut h = Harness::new();
    let mut c = Client::udp(7);
    let out = h.authed(&mut c, Req::allocate_bare());
    assert_eq!(out.answer().code(), Some(400));
    let out = h.authed(&mut c, Req::allocate_bare().transport(attr::TRANSPORT_TCP));
    let a = out.answer();
    assert_eq!(a.code(), Some(442));
    assert!(a.verifies_sha1(&c.key()));
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, Event::AllocationFailed { code: 442, .. })));
    assert!(out.binds.is_empty());
    assert_eq!(
        h.server.stats(h.now).allocation_failures.get(&442),
        Some(&1)
    );
}

#[test]
fn dont_fragment_is_420_with_unknown_attributes() {
    // RFC 8656 §7.2: a server that does not support DONT-FRAGMENT treats it as an unknown
    // comprehension-required attribute: 420 with UNKNOWN-ATTRIBUTES 0x001A.
    let mut h = Harness::new();
    let mut c = Client::udp(8);
    h.challenge(&mut c, &Req::allocate());
    let (_, out) = h.send_signed(&c, &Req::allocate().raw(attr::DONT_FRAGMENT, &[]));
    let a = out.answer();
    assert_eq!(a.code(), Some(420));
    assert_eq!(a.unknown_attributes(), vec![attr::DONT_FRAGMENT]);
    assert!(out.binds.is_empty());
}

#[test]
fn unknown_required_attribute_is_420_listing_every_one() {
    // RFC 8489 §6.3.1: every unknown comprehension-required attribute is listed.
    let mut h = Harness::new();
    let mut c = Client::udp(9);
    h.challenge(&mut c, &Req::allocate());
    let req = Req::allocate()
        .raw(0x7777, b"abc")
        .raw(0x0031, &[1, 2, 3, 4]);
    let (_, out) = h.send_signed(&c, &req);
    let a = out.answer();
    assert_eq!(a.code(), Some(420));
    assert_eq!(a.unknown_attributes(), vec![0x7777, 0x0031]);
    // Unauthenticated too: an unknown attribute is reported before the 401.
    let (_, out) = h.send_plain(&Client::udp(10), &Req::allocate().raw(0x7777, b""));
    assert_eq!(out.answer().code(), Some(420));
}

#[test]
fn unknown_optional_attribute_is_ignored() {
    // RFC 8489 §14: comprehension-optional attributes (0x8000-0xFFFF) may be ignored.
    let mut h = Harness::new();
    let mut c = Client::udp(11);
    let (a, _) = h.allocate_with(&mut c, Req::allocate().raw(0xC001, b"whatever"));
    assert_eq!(a.lifetime(), Some(600));
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    // RFC 8489 §14.5: everything after MESSAGE-INTEGRITY but FINGERPRINT (and
    // MESSAGE-INTEGRITY-SHA256) is ignored: an unknown required attribute, a TCP transport
    // and a lifetime there change nothing.
    let mut h = Harness::new();
    let mut c = Client::udp(12).with_fingerprint();
    let req = Req::allocate()
        .after_integrity(A::Raw(0x7777, b"zz".to_vec()))
        .after_integrity(A::U32(attr::LIFETIME, 3000))
        .after_integrity(A::Raw(attr::REQUESTED_TRANSPORT, vec![6, 0, 0, 0]));
    let (a, _) = h.allocate_with(&mut c, req);
    assert_eq!(a.lifetime(), Some(600));
    assert!(a.has_fingerprint());
}

#[test]
fn requested_lifetime_is_floored_at_the_default_and_clamped_at_the_maximum() {
    // RFC 8656 §7.2: the server may use a lifetime other than requested; the default is
    // the floor here and max_lifetime the ceiling.
    let mut h = Harness::new();
    let max = h.server.config().max_lifetime.as_secs() as u32;
    let mut c1 = Client::udp(13);
    let (a, _) = h.allocate_with(&mut c1, Req::allocate().lifetime(10));
    assert_eq!(a.lifetime(), Some(600));
    let mut c2 = Client::udp(14);
    let (a, _) = h.allocate_with(&mut c2, Req::allocate().lifetime(99_999));
    assert_eq!(a.lifetime(), Some(max));
    let mut c3 = Client::udp(15);
    let (a, _) = h.allocate_with(&mut c3, Req::allocate().lifetime(1200));
    assert_eq!(a.lifetime(), Some(1200));
}

#[test]
fn requested_family_ipv6_without_an_ipv6_relay_is_440() {
    // RFC 8656 §7.2 step 5: a family the server cannot allocate in → 440.
    let mut h = Harness::new();
    let mut c = Client::udp(16);
    let out = h.authed(&mut c, Req::allocate().family(attr::FAMILY_IPV6));
    assert_eq!(out.answer().code(), Some(440));
    assert!(out.binds.is_empty());
    // An unknown family value is 440 as well.
    let out = h.authed(&mut c, Req::allocate().family(0x07));
    assert_eq!(out.answer().code(), Some(440));
}

#[test]
fn requested_family_ipv6_with_an_ipv6_relay_allocates_ipv6() {
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = Client::udp(17);
    let out = h.authed(&mut c, Req::allocate().family(attr::FAMILY_IPV6));
    let a = out.answer();
    assert!(a.is_success());
    assert_eq!(out.binds.len(), 1);
    assert_eq!(out.binds[0].1.ip(), relay_v6());
    let relayed = a.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(
        relayed,
        vec![SocketAddr::new(relay_v6(), out.binds[0].1.port())]
    );
    assert_eq!(h.server.stats(h.now).ports_v6.in_use, 1);
    assert_eq!(h.server.stats(h.now).ports_v4.in_use, 0);
}

#[test]
fn additional_family_ipv6_gives_a_dual_stack_allocation() {
    // RFC 8656 §7.2: ADDITIONAL-ADDRESS-FAMILY IPv6 → one IPv4 and one IPv6 relayed
    // address, two XOR-RELAYED-ADDRESS.
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = Client::udp(18);
    let out = h.authed(&mut c, Req::allocate().additional_family(attr::FAMILY_IPV6));
    let a = out.answer();
    assert!(a.is_success());
    assert_eq!(out.binds.len(), 2);
    let relayed = a.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
    for r in &relayed {
        assert!(out
            .binds
            .iter()
            .any(|b| b.1.port() == r.port() && b.1.ip() == r.ip()));
    }
    assert!(!a.has(attr::ADDRESS_ERROR_CODE));
}

#[test]
fn additional_family_without_an_ipv6_relay_succeeds_with_address_error_code() {
    // RFC 8656 §7.2: the IPv4 allocation succeeds and ADDRESS-ERROR-CODE (family IPv6,
    // 440) says the other one could not be made.
    let mut h = Harness::new();
    let mut c = Client::udp(19);
    let out = h.authed(&mut c, Req::allocate().additional_family(attr::FAMILY_IPV6));
    let a = out.answer();
    assert!(a.is_success());
    assert_eq!(a.xors(attr::XOR_RELAYED_ADDRESS).len(), 1);
    let aec = a.get(attr::ADDRESS_ERROR_CODE).expect("ADDRESS-ERROR-CODE");
    assert_eq!(aec[0], attr::FAMILY_IPV6);
    assert_eq!((aec[2] & 7, aec[3]), (4, 40));
}

#[test]
fn additional_family_ipv4_is_400() {
    // RFC 8656 §7.2: ADDITIONAL-ADDRESS-FAMILY may only ask for IPv6 → else 400.
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = Client::udp(20);
    let out = h.authed(&mut c, Req::allocate().additional_family(attr::FAMILY_IPV4));
    assert_eq!(out.answer().code(), Some(400));
}

#[test]
fn both_family_attributes_are_400() {
    // RFC 8656 §7.2: REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY together → 400.
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = Client::udp(21);
    let req = Req::allocate()
        .family(attr::FAMILY_IPV4)
        .additional_family(attr::FAMILY_IPV6);
    let out = h.authed(&mut c, req);
    assert_eq!(out.answer().code(), Some(400));
    assert!(out.binds.is_empty());
}

#[test]
fn user_quota_is_486() {
    // RFC 8656 §7.2 step 9: over the user's quota → 486.
    let mut cfg = config();
    cfg.user_quota = 2;
    let mut h = Harness::with_config(cfg);
    h.allocate_ok(&mut Client::udp(22));
    h.allocate_ok(&mut Client::udp(23));
    let mut third = Client::udp(24);
    let out = h.authed(&mut third, Req::allocate());
    assert_eq!(out.answer().code(), Some(486));
    assert!(out.binds.is_empty());
    // Another user is not affected.
    let mut bob = Client::new(Via::Udp(client(25)), USER2, PASS2);
    h.allocate_ok(&mut bob);
}

#[test]
fn user_quota_frees_up_when_an_allocation_ends() {
    let mut cfg = config();
    cfg.user_quota = 1;
    let mut h = Harness::with_config(cfg);
    let mut first = Client::udp(26);
    h.allocate_ok(&mut first);
    let mut second = Client::udp(27);
    assert_eq!(
        h.authed(&mut second, Req::allocate()).answer().code(),
        Some(486)
    );
    assert!(h
        .authed(&mut first, Req::refresh(Some(0)))
        .answer()
        .is_success());
    h.allocate_ok(&mut second);
}

#[test]
fn total_quota_is_508() {
    // RFC 8656 §7.2: the server is out of capacity → 508.
    let mut cfg = config();
    cfg.total_quota = 2;
    let mut h = Harness::with_config(cfg);
    h.allocate_ok(&mut Client::udp(28));
    h.allocate_ok(&mut Client::new(Via::Udp(client(29)), USER2, PASS2));
    let out = h.authed(&mut Client::udp(30), Req::allocate());
    assert_eq!(out.answer().code(), Some(508));
    assert_eq!(h.server.stats(h.now).insufficient_capacity, 1);
}

#[test]
fn port_exhaustion_is_508_and_a_quarantined_port_returns_after_quarantine() {
    // RFC 8656 §7.2: no relayed address available → 508. A freed port is quarantined
    // before reuse.
    let mut cfg = config();
    cfg.relay_port_min = 50_000;
    cfg.relay_port_max = 50_003;
    let quarantine = cfg.relay_port_quarantine;
    let mut h = Harness::with_config(cfg);
    let mut clients: Vec<Client> = (40..44).map(Client::udp).collect();
    let mut ports = Vec::new();
    for c in clients.iter_mut() {
        let (a, _) = h.allocate_ok(c);
        ports.push(a.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port());
        assert_eq!(total(h.server.stats(h.now).ports_v4), 4);
    }
    ports.sort_unstable();
    assert_eq!(ports, vec![50_000, 50_001, 50_002, 50_003]);
    let s = h.server.stats(h.now).ports_v4;
    assert_eq!((s.free, s.in_use, s.quarantined), (0, 4, 0));

    let mut fifth = Client::udp(44);
    let out = h.authed(&mut fifth, Req::allocate());
    assert_eq!(out.answer().code(), Some(508));
    assert!(out.events.iter().any(|e| matches!(e,
        Event::PortsExhausted { client: info } if info.addr == client(44))));
    assert!(out.binds.is_empty());

    // Free one: it is quarantined, so there is still no port.
    assert!(h
        .authed(&mut clients[0], Req::refresh(Some(0)))
        .answer()
        .is_success());
    let s = h.server.stats(h.now).ports_v4;
    assert_eq!((s.free, s.in_use, s.quarantined), (0, 3, 1));
    let out = h.authed(&mut fifth, Req::allocate());
    assert_eq!(out.answer().code(), Some(508));

    h.advance(quarantine + Duration::from_millis(1));
    let s = h.server.stats(h.now).ports_v4;
    assert_eq!((s.free, s.in_use, s.quarantined), (1, 3, 0));
    let (a, _) = h.allocate_ok(&mut fifth);
    assert!(port_range(&h).contains(&a.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port()));
    let s = h.server.stats(h.now).ports_v4;
    assert_eq!((s.free, s.in_use, s.quarantined), (0, 4, 0));
}

#[test]
fn bind_failure_addr_in_use_tries_another_port() {
    // The runtime found the port taken by someone else: the core tries another one and
    // the client only sees the success.
    let mut h = Harness::new();
    h.binds.fail_next = 2;
    let mut c = Client::udp(45);
    let out = h.authed(&mut c, Req::allocate());
    assert_eq!(out.binds.len(), 3);
    assert_eq!(out.binds[0].2, Err(BindError::AddrInUse));
    assert_eq!(out.binds[1].2, Err(BindError::AddrInUse));
    let (relay, addr, ok) = out.binds[2];
    assert_eq!(ok, Ok(()));
    let ports: Vec<u16> = out.binds.iter().map(|b| b.1.port()).collect();
    assert!(ports[0] != ports[2] && ports[1] != ports[2]);
    let a = out.answer();
    assert!(a.is_success());
    assert_eq!(
        a.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port(),
        addr.port()
    );
    assert!(
        out.closed_relays.is_empty(),
        "failed binds opened no socket"
    );
    // The relay id that works is the last one: a peer datagram on it is known.
    let (o, _) = h.peer_datagram(relay, peer(1), b"x");
    assert_eq!(o.forward, None, "no permission yet, but the relay is known");
    assert_eq!(h.server.stats(h.now).dropped.unknown_relay, 0);
    // The busy ports are quarantined, the bound one in use.
    let s = h.server.stats(h.now).ports_v4;
    assert_eq!((s.in_use, s.quarantined), (1, 2));
}

#[test]
fn bind_failing_every_time_is_508() {
    let mut h = Harness::new();
    h.binds.fail_all = Some(BindError::AddrInUse);
    let attempts = h.server.config().relay_bind_attempts as usize;
    let mut c = Client::udp(46);
    let out = h.authed(&mut c, Req::allocate());
    assert_eq!(out.binds.len(), attempts);
    let a = out.answer();
    assert_eq!(a.code(), Some(508));
    assert!(a.verifies_sha1(&c.key()));
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, Event::PortsExhausted { .. })));
    let s = h.server.stats(h.now);
    assert_eq!(s.allocations + s.allocations_pending, 0);
    assert_eq!(s.ports_v4.in_use, 0);
    // Another kind of failure is not retried.
    h.binds.fail_all = Some(BindError::Other);
    let mut d = Client::udp(47);
    let out = h.authed(&mut d, Req::allocate());
    assert_eq!(out.binds.len(), 1);
    assert_eq!(out.answer().code(), Some(508));
}

#[test]
fn even_port_gives_an_even_port() {
    // RFC 8656 §7.2 / §18.7: EVEN-PORT asks for an even relayed port.
    let mut h = Harness::new();
    for n in 50..58 {
        let mut c = Client::udp(n);
        let (a, _) = h.allocate_with(&mut c, Req::allocate().raw(attr::EVEN_PORT, &[0]));
        let port = a.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port();
        assert_eq!(port % 2, 0, "port {port}");
        assert!(!a.has(attr::RESERVATION_TOKEN));
    }
}

#[test]
fn even_port_with_r_bit_reserves_the_next_port_for_a_token() {
    // RFC 8656 §7.2: with the R bit the server reserves port+1 and returns a
    // RESERVATION-TOKEN; an Allocate with that token gets port+1.
    let mut h = Harness::new();
    let mut first = Client::udp(60);
    let (a, _) = h.allocate_with(&mut first, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
    let port = a.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port();
    assert_eq!(port % 2, 0);
    let token = a.get(attr::RESERVATION_TOKEN).expect("RESERVATION-TOKEN");
    assert_eq!(token.len(), 8);
    assert_eq!(h.server.stats(h.now).ports_v4.reserved, 1);

    let mut second = Client::new(Via::Udp(client(61)), USER2, PASS2);
    let (b, _) = h.allocate_with(
        &mut second,
        Req::allocate().raw(attr::RESERVATION_TOKEN, &token),
    );
    assert_eq!(b.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port(), port + 1);
    let s = h.server.stats(h.now).ports_v4;
    assert_eq!((s.reserved, s.in_use), (0, 2));

    // A token is good once.
    let mut third = Client::udp(62);
    let out = h.authed(
        &mut third,
        Req::allocate().raw(attr::RESERVATION_TOKEN, &token),
    );
    assert_eq!(out.answer().code(), Some(508));
}

#[test]
fn unknown_reservation_token_is_508() {
    let mut h = Harness::new();
    let mut c = Client::udp(63);
    let out = h.authed(
        &mut c,
        Req::allocate().raw(attr::RESERVATION_TOKEN, &[9; 8]),
    );
    assert_eq!(out.answer().code(), Some(508));
    assert!(out.binds.is_empty());
}

#[test]
fn reservation_token_with_even_port_is_400() {
    // RFC 8656 §7.2: RESERVATION-TOKEN together with EVEN-PORT → 400.
    let mut h = Harness::new();
    let mut c = Client::udp(64);
    let req = Req::allocate()
        .raw(attr::RESERVATION_TOKEN, &[9; 8])
        .raw(attr::EVEN_PORT, &[0]);
    assert_eq!(h.authed(&mut c, req).answer().code(), Some(400));
}

#[test]
fn reserved_port_is_released_after_about_30_seconds() {
    // RFC 8656 §7.2: a reservation unclaimed for ~30 s is released.
    let mut h = Harness::new();
    let mut c = Client::udp(65);
    let (a, _) = h.allocate_with(&mut c, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
    let token = a.get(attr::RESERVATION_TOKEN).unwrap();
    h.advance(Duration::from_secs(31));
    assert_eq!(h.server.stats(h.now).ports_v4.reserved, 0);
    let mut d = Client::udp(66);
    let out = h.authed(&mut d, Req::allocate().raw(attr::RESERVATION_TOKEN, &token));
    assert_eq!(out.answer().code(), Some(508));
}

#[test]
fn one_credential_opens_allocations_over_udp_tcp_and_proxied_tcp_at_once() {
    // A browser tries UDP, TCP and TLS (through a proxy) in parallel with one credential:
    // each 5-tuple gets its own allocation.
    let mut h = Harness::new();
    let mut udp = Client::udp(70);
    let mut tcp = h.tcp_client(1, sa("203.0.113.70:50001"));
    h.open_stream(ConnId(2), TCP_PROXY, proxy_addr());
    let hdr = turnpike_core::proxy_protocol::encode_v1(Some((
        sa("203.0.113.70:50002"),
        sa("192.0.2.1:443"),
    )));
    assert!(h.stream_data(ConnId(2), &hdr).closed_streams.is_empty());
    let mut tls = Client::stream(ConnId(2));
    for c in [&mut udp, &mut tcp, &mut tls] {
        h.challenge(c, &Req::allocate());
    }
    h.binds.hold = true;
    for c in [&udp, &tcp, &tls] {
        let (_, out) = h.send_signed(c, &Req::allocate());
        assert!(out.answers.is_empty());
    }
    assert_eq!(h.held.len(), 3);
    assert_eq!(h.server.stats(h.now).allocations_pending, 3);
    let out = h.release_binds();
    assert_eq!(out.answers.len(), 3);
    assert!(out.answers.iter().all(Answer::is_success));
    let vias: Vec<Via> = out.answers.iter().map(|a| a.via).collect();
    assert!(vias.contains(&Via::Udp(client(70))));
    assert!(vias.contains(&Via::Stream(ConnId(1))));
    assert!(vias.contains(&Via::Stream(ConnId(2))));
    let mapped: Vec<SocketAddr> = out
        .answers
        .iter()
        .map(|a| a.xor(attr::XOR_MAPPED_ADDRESS).unwrap())
        .collect();
    assert!(
        mapped.contains(&sa("203.0.113.70:50002")),
        "the proxied client"
    );
    assert_eq!(h.server.stats(h.now).allocations, 3);
    let relays: std::collections::BTreeSet<RelayId> = out.bound().iter().map(|b| b.0).collect();
    assert_eq!(relays.len(), 3);
}

#[test]
fn same_transaction_id_from_another_client_is_not_a_retransmission() {
    // The response cache is per 5-tuple: another client reusing a transaction id gets its
    // own answer, never someone else's.
    let mut h = Harness::new();
    let mut a = Client::udp(80);
    h.challenge(&mut a, &Req::allocate());
    let tid = h.tid();
    let (_, first) = h.send_signed(&a, &Req::allocate().with_tid(tid));
    assert!(first.answer().is_success());
    let b = Client::udp(81);
    let (_, other) = h.send_plain(&b, &Req::allocate().with_tid(tid));
    assert_eq!(other.answer().code(), Some(401));
    assert_eq!(other.answer().via, Via::Udp(client(81)));
}

#[test]
fn failed_binds_give_back_the_user_quota() {
    // A pending Allocate counts against the user's quota; when it fails, the quota is
    // returned.
    let mut cfg = config();
    cfg.user_quota = 1;
    let mut h = Harness::with_config(cfg);
    h.binds.fail_all = Some(BindError::Other);
    let mut c = Client::udp(82);
    assert_eq!(h.authed(&mut c, Req::allocate()).answer().code(), Some(508));
    h.binds.fail_all = None;
    h.allocate_ok(&mut c);
}

#[test]
fn dual_stack_allocate_with_one_side_failing_leaves_nothing_behind() {
    // If the IPv6 bind fails, the whole Allocate fails (508) and the IPv4 socket, bound or
    // still being bound, is closed and its port released.
    for v6_first in [false, true] {
        let mut h = Harness::with_config(with_v6(config()));
        let mut c = Client::udp(83);
        h.challenge(&mut c, &Req::allocate());
        h.binds.hold = true;
        let (_, out) = h.send_signed(&c, &Req::allocate().additional_family(attr::FAMILY_IPV6));
        assert!(out.answers.is_empty());
        assert_eq!(h.held.len(), 2);
        let v4 = h.held.iter().find(|b| b.1.is_ipv4()).copied().unwrap();
        let v6 = h.held.iter().find(|b| b.1.is_ipv6()).copied().unwrap();
        h.held.clear();
        h.binds.hold = false;
        let now = h.now;
        let mut all = Outcome::default();
        let order = if v6_first { [v6, v4] } else { [v4, v6] };
        for (relay, addr) in order {
            let result = if addr.is_ipv6() {
                Err(BindError::Other)
            } else {
                Ok(())
            };
            h.server.handle_relay_bound(now, relay, result);
            all.merge(h.drain(None));
        }
        assert_eq!(all.answer().code(), Some(508), "v6 first: {v6_first}");
        assert_eq!(all.closed_relays, vec![v4.0], "v6 first: {v6_first}");
        let s = h.server.stats(h.now);
        assert_eq!((s.allocations, s.allocations_pending), (0, 0));
        assert_eq!((s.ports_v4.in_use, s.ports_v6.in_use), (0, 0));
        assert_eq!(total(s.ports_v4), total(h.server.stats(T0).ports_v4));
    }
}

#[test]
fn dual_stack_refresh_0_closes_both_relays() {
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = Client::udp(84);
    let (_, relays) = h.allocate_with(&mut c, Req::allocate().additional_family(attr::FAMILY_IPV6));
    let out = h.authed(&mut c, Req::refresh(Some(0)));
    assert!(out.answer().is_success());
    let mut closed = out.closed_relays.clone();
    closed.sort();
    let mut expected = relays.clone();
    expected.sort();
    assert_eq!(closed, expected);
    let s = h.server.stats(h.now);
    assert_eq!((s.ports_v4.quarantined, s.ports_v6.quarantined), (1, 1));
}

#[test]
fn admin_delete_ends_the_allocation() {
    let mut h = Harness::new();
    let mut c = Client::udp(85);
    let (_, relays) = h.allocate_ok(&mut c);
    let id = h.server.allocations(h.now)[0].id;
    let now = h.now;
    assert!(h.server.delete_allocation(now, id));
    let out = h.drain(None);
    assert_eq!(out.closed_relays, relays);
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: turnpike_core::event::DeleteReason::Admin,
            ..
        }
    )));
    assert!(!h.server.delete_allocation(now, id));
}

#[test]
fn answers_carry_software_when_configured() {
    // RFC 8489 §14.14: SOFTWARE is optional; with none configured it is omitted.
    let mut h = Harness::new();
    let (_, out) = h.send_plain(&Client::udp(86), &Req::binding());
    assert!(out
        .answer()
        .text(attr::SOFTWARE)
        .unwrap()
        .starts_with("turnpike/"));
    let mut cfg = config();
    cfg.software = None;
    let mut h = Harness::with_config(cfg);
    let (_, out) = h.send_plain(&Client::udp(86), &Req::binding());
    assert!(!out.answer().has(attr::SOFTWARE));
}

/// Allocate with EVEN-PORT R, then Refresh 0: the allocation is gone, its reservation
/// stays (RFC 8656 §7.2: about 30 s). Returns the answer's code (None: success).
fn reserve_and_free(h: &mut Harness, n: u8) -> Option<u16> {
    let mut c = Client::udp(n);
    let out = h.authed(&mut c, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
    let code = out.answer().code();
    if code.is_none() {
        assert!(h
            .authed(&mut c, Req::refresh(Some(0)))
            .answer()
            .is_success());
    }
    code
}

#[test]
fn a_reservation_counts_against_the_user_quota_until_it_expires() {
    // Without the count, one user could loop Allocate(EVEN-PORT R) + Refresh 0 and hold
    // every port of the pool in reservations.
    let mut cfg = config();
    cfg.user_quota = 3;
    let mut h = Harness::with_config(cfg);
    // Each round holds one reservation; the Allocate itself needs one more count.
    assert_eq!(reserve_and_free(&mut h, 100), None);
    assert_eq!(reserve_and_free(&mut h, 101), None);
    assert_eq!(reserve_and_free(&mut h, 102), Some(486));
    assert_eq!(h.server.stats(h.now).ports_v4.reserved, 2);
    // A plain Allocate still fits (2 reservations + 1).
    let mut c = Client::udp(103);
    h.allocate_ok(&mut c);
    let mut d = Client::udp(104);
    assert_eq!(h.authed(&mut d, Req::allocate()).answer().code(), Some(486));
    // The reservations expire and give their counts back.
    h.advance(Duration::from_secs(31));
    assert_eq!(h.server.stats(h.now).ports_v4.reserved, 0);
    let mut e = Client::udp(105);
    h.allocate_ok(&mut e);
}

#[test]
fn a_reservation_counts_against_the_total_quota() {
    let mut cfg = config();
    cfg.total_quota = 4;
    cfg.user_quota = 100;
    let mut h = Harness::with_config(cfg);
    assert_eq!(reserve_and_free(&mut h, 110), None);
    assert_eq!(reserve_and_free(&mut h, 111), None);
    assert_eq!(reserve_and_free(&mut h, 112), None);
    // Three reservations and the Allocate's own credit: the fourth needs two.
    assert_eq!(reserve_and_free(&mut h, 113), Some(508));
    let mut c = Client::udp(114);
    h.allocate_ok(&mut c);
    let mut d = Client::udp(115);
    assert_eq!(h.authed(&mut d, Req::allocate()).answer().code(), Some(508));
}

#[test]
fn a_user_at_quota_with_a_reservation_can_redeem_it() {
    // The reservation gives its count back as the token's Allocate takes its own, so the
    // RTP/RTCP pair fits a quota of two.
    let mut cfg = config();
    cfg.user_quota = 2;
    let mut h = Harness::with_config(cfg);
    let mut rtp = Client::udp(120);
    let (a, _) = h.allocate_with(&mut rtp, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
    let token = a.get(attr::RESERVATION_TOKEN).expect("a token");
    let mut other = Client::udp(121);
    assert_eq!(
        h.authed(&mut other, Req::allocate()).answer().code(),
        Some(486)
    );
    let mut rtcp = Client::udp(122);
    let (b, _) = h.allocate_with(
        &mut rtcp,
        Req::allocate().raw(attr::RESERVATION_TOKEN, &token),
    );
    assert_eq!(
        b.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port(),
        a.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port() + 1
    );
    // Two allocations, no reservation: still at quota.
    assert_eq!(h.server.stats(h.now).ports_v4.reserved, 0);
    let mut third = Client::udp(123);
    assert_eq!(
        h.authed(&mut third, Req::allocate()).answer().code(),
        Some(486)
    );
    // Refresh 0 of both: two more fit again.
    for c in [&mut rtp, &mut rtcp] {
        assert!(h.authed(c, Req::refresh(Some(0))).answer().is_success());
    }
    h.allocate_ok(&mut third);
}

#[test]
fn a_reservation_of_a_failed_allocate_gives_back_its_port_and_counts() {
    // The binds fail: the client never gets the token, so nothing stays reserved.
    let mut cfg = config();
    cfg.user_quota = 2;
    let mut h = Harness::with_config(cfg);
    h.binds.fail_all = Some(turnpike_core::server::BindError::Other);
    let mut c = Client::udp(130);
    let out = h.authed(&mut c, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
    assert_eq!(out.answer().code(), Some(508));
    assert_eq!(h.server.stats(h.now).ports_v4.reserved, 0);
    h.binds.fail_all = None;
    let mut d = Client::udp(131);
    let mut e = Client::udp(132);
    h.allocate_ok(&mut d);
    h.allocate_ok(&mut e);
}
