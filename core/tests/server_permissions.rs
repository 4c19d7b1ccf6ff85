//! CreatePermission (RFC 8656 §9, §10), ChannelBind (RFC 8656 §12.2) and the peer policy
//! (RFC 8656 §21.4) they apply.

mod support;

use core::time::Duration;
use std::net::SocketAddr;
use support::*;
use turnpike_core::config::RelayAddress;
use turnpike_core::event::Event;
use turnpike_core::policy::DenyReason;
use turnpike_core::stun::attr;
use turnpike_core::Forward;

fn denied(out: &Outcome) -> Vec<(SocketAddr, DenyReason)> {
    out.events
        .iter()
        .filter_map(|e| match e {
            Event::PeerDenied { peer, reason, .. } => Some((*peer, *reason)),
            _ => None,
        })
        .collect()
}

/// True if a datagram from `from` to `relay` is relayed to the client.
fn relays_from(h: &mut Harness, relay: turnpike_core::RelayId, from: SocketAddr) -> bool {
    let (out, _) = h.peer_datagram(relay, from, b"ping");
    matches!(out.forward, Some(Forward::ToClient { .. }))
}

// ---- CreatePermission -------------------------------------------------------------

#[test]
fn create_permission_installs_every_peer_of_the_request() {
    // RFC 8656 §10.2: one request may carry several XOR-PEER-ADDRESS; all are installed.
    let mut h = Harness::new();
    let mut c = Client::udp(1);
    let (_, relays) = h.allocate_ok(&mut c);
    let peers = [peer(1), peer(2), peer(3)];
    let out = h.authed(&mut c, Req::create_permission(&peers));
    let a = out.answer();
    assert!(a.is_success());
    assert!(a.verifies_sha1(&c.key()));
    assert_eq!(h.server.stats(h.now).permissions, 3);
    for p in peers {
        assert!(relays_from(&mut h, relays[0], p));
        // Permissions are per IP address: any port of the peer is allowed (§9).
        assert!(relays_from(
            &mut h,
            relays[0],
            SocketAddr::new(p.ip(), 1234)
        ));
    }
    assert!(!relays_from(&mut h, relays[0], peer(4)));
}

#[test]
fn create_permission_without_a_peer_is_400() {
    let mut h = Harness::new();
    let mut c = Client::udp(2);
    h.allocate_ok(&mut c);
    let out = h.authed(&mut c, Req::create_permission(&[]));
    assert_eq!(out.answer().code(), Some(400));
}

#[test]
fn create_permission_without_an_allocation_is_437() {
    let mut h = Harness::new();
    let mut c = Client::udp(3);
    let out = h.authed(&mut c, Req::create_permission(&[peer(1)]));
    assert_eq!(out.answer().code(), Some(437));
}

#[test]
fn create_permission_for_an_ipv6_peer_on_an_ipv4_allocation_is_443() {
    // RFC 8656 §10.2: a peer of a family the allocation has no relayed address for → 443,
    // and nothing of the request is installed.
    let mut h = Harness::new();
    let mut c = Client::udp(4);
    h.allocate_ok(&mut c);
    let out = h.authed(&mut c, Req::create_permission(&[peer(1), peer6(1)]));
    assert_eq!(out.answer().code(), Some(443));
    assert_eq!(h.server.stats(h.now).permissions, 0);
}

#[test]
fn create_permission_for_ipv6_peers_on_a_dual_stack_allocation() {
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = Client::udp(5);
    let (_, relays) = h.allocate_with(&mut c, Req::allocate().additional_family(attr::FAMILY_IPV6));
    let out = h.authed(&mut c, Req::create_permission(&[peer(1), peer6(1)]));
    assert!(out.answer().is_success());
    assert_eq!(relays.len(), 2);
    assert!(relays_from(&mut h, relays[0], peer(1)));
    assert!(relays_from(&mut h, relays[1], peer6(1)));
}

#[test]
fn denied_ipv4_peers_are_403_with_a_peer_denied_event() {
    // RFC 8656 §21.4 (and the coturn CVE-2020-26262 class): loopback, unspecified,
    // private, shared, link-local, multicast, broadcast peers are refused by default.
    let mut h = Harness::new();
    let mut c = Client::udp(6);
    h.allocate_ok(&mut c);
    let cases = [
        ("127.0.0.1", DenyReason::Loopback),
        ("0.0.0.0", DenyReason::Unspecified),
        ("10.0.0.1", DenyReason::Private),
        ("172.16.5.5", DenyReason::Private),
        ("192.168.1.1", DenyReason::Private),
        ("100.64.0.1", DenyReason::SharedAddressSpace),
        ("169.254.169.254", DenyReason::LinkLocal),
        ("224.0.0.1", DenyReason::Multicast),
        ("255.255.255.255", DenyReason::Broadcast),
        ("192.0.2.55", DenyReason::Documentation),
        ("240.0.0.1", DenyReason::Reserved),
    ];
    for (addr, reason) in cases {
        let p = SocketAddr::new(ip(addr), 3478);
        let out = h.authed(&mut c, Req::create_permission(&[p]));
        let a = out.answer();
        assert_eq!(a.code(), Some(403), "{addr}");
        assert!(a.verifies_sha1(&c.key()));
        let d = denied(&out);
        assert_eq!(d.len(), 1, "{addr}");
        assert_eq!(d[0].0.ip(), p.ip());
        assert_eq!(d[0].1, reason, "{addr}");
    }
    assert_eq!(h.server.stats(h.now).permissions, 0);
    assert_eq!(h.server.stats(h.now).peers_denied, cases.len() as u64);
}

#[test]
fn one_denied_peer_refuses_the_whole_request() {
    // RFC 8656 §10.2: the request is atomic: a 403 installs none of its peers.
    let mut h = Harness::new();
    let mut c = Client::udp(7);
    h.allocate_ok(&mut c);
    let out = h.authed(
        &mut c,
        Req::create_permission(&[peer(1), SocketAddr::new(ip("127.0.0.1"), 1)]),
    );
    assert_eq!(out.answer().code(), Some(403));
    assert_eq!(h.server.stats(h.now).permissions, 0);
}

#[test]
fn denied_peers_in_ipv6_spellings_are_403() {
    // The policy decides on the canonical address: IPv4-mapped, IPv4-compatible, NAT64,
    // 6to4 and Teredo spellings of loopback or private IPv4 are refused, and so are the
    // IPv6 special ranges.
    let mut h = Harness::with_config(with_v6(config()));
    let mut c = Client::udp(8);
    h.allocate_with(&mut c, Req::allocate().additional_family(attr::FAMILY_IPV6));
    let cases = [
        ("::ffff:127.0.0.1", DenyReason::Loopback),
        ("::ffff:10.0.0.1", DenyReason::Private),
        ("::127.0.0.1", DenyReason::Loopback),
        ("64:ff9b::7f00:1", DenyReason::Loopback),
        ("2002:7f00:1::1", DenyReason::Loopback),
        ("2002:a00:1::1", DenyReason::Private),
        // Teredo: the client IPv4 is stored inverted in the last 32 bits (127.0.0.1).
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", DenyReason::Loopback),
        ("::1", DenyReason::Loopback),
        ("::", DenyReason::Unspecified),
        ("fc00::1", DenyReason::UniqueLocal),
        ("fe80::1", DenyReason::LinkLocal),
        ("ff02::1", DenyReason::Multicast),
    ];
    for (addr, reason) in cases {
        let p = SocketAddr::new(ip(addr), 3478);
        let out = h.authed(&mut c, Req::create_permission(&[p]));
        assert_eq!(out.answer().code(), Some(403), "{addr}");
        let d = denied(&out);
        assert_eq!(d.len(), 1, "{addr}");
        assert_eq!(d[0].1, reason, "{addr}");
    }
    assert_eq!(h.server.stats(h.now).permissions, 0);
}

#[test]
fn the_relays_own_address_is_denied() {
    // RFC 8656 §21.4: the relay must not relay to itself. With a public-looking relay
    // address that no built-in rule covers, only the own-address rule can refuse it.
    let mut cfg = config();
    cfg.relay_v4 = Some(RelayAddress {
        bind: ip("11.22.33.44"),
        advertised: ip("11.22.33.44"),
    });
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(9);
    h.allocate_ok(&mut c);
    let own = SocketAddr::new(ip("11.22.33.44"), 3478);
    let out = h.authed(&mut c, Req::create_permission(&[own]));
    assert_eq!(out.answer().code(), Some(403));
    assert_eq!(
        denied(&out).first().map(|d| d.1),
        Some(DenyReason::OwnAddress)
    );
}

#[test]
fn an_own_address_listed_in_the_config_is_denied() {
    // The policy itself refuses what `own_addresses` lists (canonical comparison, so the
    // IPv4-mapped spelling is caught as well).
    let mut cfg = with_v6(config());
    cfg.peer_policy.own_addresses.push(ip("11.22.33.44"));
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(9);
    h.allocate_with(&mut c, Req::allocate().additional_family(attr::FAMILY_IPV6));
    for own in ["11.22.33.44", "::ffff:11.22.33.44"] {
        let out = h.authed(
            &mut c,
            Req::create_permission(&[SocketAddr::new(ip(own), 1)]),
        );
        assert_eq!(out.answer().code(), Some(403), "{own}");
        assert_eq!(denied(&out)[0].1, DenyReason::OwnAddress);
    }
}

#[test]
fn the_allow_list_permits_a_private_peer() {
    // Config can allow ranges (e.g. the local media server) that the defaults deny.
    let mut cfg = config();
    cfg.peer_policy.allow.push(net("10.0.0.0/24"));
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(10);
    let (_, relays) = h.allocate_ok(&mut c);
    let media = SocketAddr::new(ip("10.0.0.1"), 5000);
    let out = h.authed(&mut c, Req::create_permission(&[media]));
    assert!(out.answer().is_success());
    assert!(relays_from(&mut h, relays[0], media));
    // Outside the allowed block, private is still private.
    let other = SocketAddr::new(ip("10.0.1.1"), 5000);
    let out = h.authed(&mut c, Req::create_permission(&[other]));
    assert_eq!(out.answer().code(), Some(403));
}

#[test]
fn the_deny_list_refuses_a_public_peer() {
    let mut cfg = config();
    cfg.peer_policy.deny.push(net("198.51.100.66/32"));
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(11);
    h.allocate_ok(&mut c);
    let out = h.authed(&mut c, Req::create_permission(&[peer(66)]));
    assert_eq!(out.answer().code(), Some(403));
    assert_eq!(denied(&out)[0].1, DenyReason::ConfigDenied);
}

#[test]
fn max_permissions_is_508() {
    // Every table has a limit; at the limit the answer is 508 (RFC 8656 §10.2 allows
    // refusing for lack of resources).
    let mut cfg = config();
    cfg.max_permissions = 2;
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(12);
    h.allocate_ok(&mut c);
    let out = h.authed(&mut c, Req::create_permission(&[peer(1), peer(2), peer(3)]));
    assert_eq!(out.answer().code(), Some(508));
    assert_eq!(h.server.stats(h.now).permissions, 0);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(1), peer(2)]))
        .answer()
        .is_success());
    let out = h.authed(&mut c, Req::create_permission(&[peer(3)]));
    assert_eq!(out.answer().code(), Some(508));
    // Refreshing existing permissions (and duplicates in one request) is fine.
    let out = h.authed(&mut c, Req::create_permission(&[peer(1), peer(1), peer(2)]));
    assert!(out.answer().is_success());
}

#[test]
fn permission_expires_after_300_seconds() {
    // RFC 8656 §9: a permission lives 300 s unless refreshed; data is dropped after.
    let mut h = Harness::new();
    let mut c = Client::udp(13);
    let (_, relays) = h.allocate_with(&mut c, Req::allocate().lifetime(3600));
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(1), peer(2)]))
        .answer()
        .is_success());
    let t = h.now;
    h.advance_to(t + Duration::from_secs(299));
    assert!(relays_from(&mut h, relays[0], peer(1)));
    // Refresh one of them at 299 s.
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(2)]))
        .answer()
        .is_success());
    h.advance_to(t + Duration::from_secs(300));
    let before = h.server.stats(h.now).dropped.no_permission;
    assert!(!relays_from(&mut h, relays[0], peer(1)));
    assert_eq!(h.server.stats(h.now).dropped.no_permission, before + 1);
    assert!(relays_from(&mut h, relays[0], peer(2)));
    assert_eq!(h.server.stats(h.now).permissions, 1);
    // Nor from the client side: a Send indication to the expired peer is dropped.
    let (_, out) = h.send_plain(&c, &Req::send_indication(peer(1), b"late"));
    assert_eq!(out.forward, None);
}

// ---- ChannelBind ------------------------------------------------------------------

#[test]
fn channel_number_outside_the_range_is_400() {
    // RFC 5766 §11 range by default (0x4000–0x7FFF): what libwebrtc and coturn's client
    // draw from; anything else is a 400.
    let mut h = Harness::new();
    let mut c = Client::udp(20);
    h.allocate_ok(&mut c);
    for n in [0x0000, 0x3FFF, 0x8000, 0xFFFF] {
        let out = h.authed(&mut c, Req::channel_bind(n, peer(1)));
        assert_eq!(out.answer().code(), Some(400), "{n:#x}");
    }
    for n in [0x4000, 0x4FFF, 0x5000, 0x7FFF] {
        let out = h.authed(
            &mut c,
            Req::channel_bind(n, SocketAddr::new(peer(1).ip(), n)),
        );
        assert!(out.answer().is_success(), "{n:#x}");
    }
}

#[test]
fn strict_channel_numbers_are_rfc_8656() {
    // RFC 8656 §12.2: the number must be 0x4000 through 0x4FFF.
    let mut cfg = support::config();
    cfg.strict_channel_numbers = true;
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(20);
    h.allocate_ok(&mut c);
    for n in [0x3FFF, 0x5000, 0x7FFF] {
        let out = h.authed(&mut c, Req::channel_bind(n, peer(1)));
        assert_eq!(out.answer().code(), Some(400), "{n:#x}");
    }
    let out = h.authed(&mut c, Req::channel_bind(0x4FFF, peer(1)));
    assert!(out.answer().is_success());
}

#[test]
fn channel_bind_missing_attributes_is_400() {
    let mut h = Harness::new();
    let mut c = Client::udp(21);
    h.allocate_ok(&mut c);
    let no_peer = Req::new(turnpike_core::stun::Method::CHANNEL_BIND)
        .raw(attr::CHANNEL_NUMBER, &channel_number(0x4001));
    assert_eq!(h.authed(&mut c, no_peer).answer().code(), Some(400));
    let no_number =
        Req::new(turnpike_core::stun::Method::CHANNEL_BIND).xor(attr::XOR_PEER_ADDRESS, peer(1));
    assert_eq!(h.authed(&mut c, no_number).answer().code(), Some(400));
    let short_number = Req::new(turnpike_core::stun::Method::CHANNEL_BIND)
        .raw(attr::CHANNEL_NUMBER, &[0x40, 0x01])
        .xor(attr::XOR_PEER_ADDRESS, peer(1));
    assert_eq!(h.authed(&mut c, short_number).answer().code(), Some(400));
    assert_eq!(h.server.stats(h.now).channels, 0);
}

#[test]
fn channel_bind_without_an_allocation_is_437() {
    let mut h = Harness::new();
    let mut c = Client::udp(22);
    assert_eq!(
        h.authed(&mut c, Req::channel_bind(0x4000, peer(1)))
            .answer()
            .code(),
        Some(437)
    );
}

#[test]
fn channel_bind_binds_and_installs_a_permission() {
    // RFC 8656 §12.2: a successful ChannelBind also installs or refreshes the permission.
    let mut h = Harness::new();
    let mut c = Client::udp(23);
    h.allocate_ok(&mut c);
    let out = h.authed(&mut c, Req::channel_bind(0x4000, peer(1)));
    let a = out.answer();
    assert!(a.is_success());
    assert!(a.verifies_sha1(&c.key()));
    let s = h.server.stats(h.now);
    assert_eq!((s.channels, s.permissions), (1, 1));
}

#[test]
fn channel_rebinding_rules() {
    // RFC 8656 §12.2: a number bound to one peer cannot go to another, a peer bound to
    // one number cannot take another; re-binding the same pair refreshes it.
    let mut h = Harness::new();
    let mut c = Client::udp(24);
    h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    assert_eq!(
        h.authed(&mut c, Req::channel_bind(0x4000, peer(2)))
            .answer()
            .code(),
        Some(400)
    );
    // Same IP, other port: another transport address, so another peer.
    let same_ip = SocketAddr::new(peer(1).ip(), peer(1).port() + 1);
    assert_eq!(
        h.authed(&mut c, Req::channel_bind(0x4000, same_ip))
            .answer()
            .code(),
        Some(400)
    );
    assert_eq!(
        h.authed(&mut c, Req::channel_bind(0x4001, peer(1)))
            .answer()
            .code(),
        Some(400)
    );
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4001, same_ip))
        .answer()
        .is_success());
    assert_eq!(h.server.stats(h.now).channels, 2);
}

#[test]
fn channel_refresh_extends_the_binding() {
    // RFC 8656 §12: a binding lasts 600 s; re-binding refreshes it.
    let mut h = Harness::new();
    let mut c = Client::udp(25);
    let (_, relays) = h.allocate_with(&mut c, Req::allocate().lifetime(3600));
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    let t = h.now;
    h.advance_to(t + Duration::from_secs(500));
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    h.advance_to(t + Duration::from_secs(700));
    let (out, buf) = h.peer_datagram(relays[0], peer(1), b"data");
    match out.forward {
        Some(Forward::ToClient { range, .. }) => assert_eq!(&buf[range][..2], &[0x40, 0x00]),
        other => panic!("expected ChannelData, got {other:?}"),
    }
    assert_eq!(h.server.stats(h.now).channels, 1);
}

#[test]
fn expired_channel_number_and_peer_stay_tied_for_five_minutes() {
    // RFC 8656 §12: after a binding expires, neither its number nor its peer may be bound
    // otherwise for 5 minutes; after that they are free.
    let mut h = Harness::new();
    let mut c = Client::udp(26);
    h.allocate_with(&mut c, Req::allocate().lifetime(3600));
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    let t = h.now;
    h.advance_to(t + Duration::from_secs(600));
    assert_eq!(h.server.stats(h.now).channels, 0, "expired at 600 s");
    h.advance_to(t + Duration::from_secs(700));
    assert_eq!(
        h.authed(&mut c, Req::channel_bind(0x4000, peer(2)))
            .answer()
            .code(),
        Some(400)
    );
    assert_eq!(
        h.authed(&mut c, Req::channel_bind(0x4001, peer(1)))
            .answer()
            .code(),
        Some(400)
    );
    h.advance_to(t + Duration::from_secs(901));
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(2)))
        .answer()
        .is_success());
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4001, peer(1)))
        .answer()
        .is_success());
}

#[test]
fn expired_channel_may_be_rebound_to_the_same_peer() {
    // The same (number, peer) pair during the cooldown is not a conflict.
    let mut h = Harness::new();
    let mut c = Client::udp(27);
    h.allocate_with(&mut c, Req::allocate().lifetime(3600));
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    h.advance(Duration::from_secs(650));
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    assert_eq!(h.server.stats(h.now).channels, 1);
}

#[test]
fn channel_bind_to_port_0_is_403() {
    let mut h = Harness::new();
    let mut c = Client::udp(28);
    h.allocate_ok(&mut c);
    let p = SocketAddr::new(peer(1).ip(), 0);
    let out = h.authed(&mut c, Req::channel_bind(0x4000, p));
    assert_eq!(out.answer().code(), Some(403));
    assert_eq!(denied(&out), vec![(p, DenyReason::PortZero)]);
}

#[test]
fn channel_bind_to_a_denied_peer_is_403() {
    let mut h = Harness::new();
    let mut c = Client::udp(29);
    h.allocate_ok(&mut c);
    let p = SocketAddr::new(ip("127.0.0.1"), 3478);
    let out = h.authed(&mut c, Req::channel_bind(0x4000, p));
    assert_eq!(out.answer().code(), Some(403));
    assert_eq!(denied(&out), vec![(p, DenyReason::Loopback)]);
    assert_eq!(h.server.stats(h.now).channels, 0);
}

#[test]
fn channel_bind_ipv6_peer_on_an_ipv4_allocation_is_443() {
    let mut h = Harness::new();
    let mut c = Client::udp(30);
    h.allocate_ok(&mut c);
    let out = h.authed(&mut c, Req::channel_bind(0x4000, peer6(1)));
    assert_eq!(out.answer().code(), Some(443));
}

#[test]
fn max_channels_is_508() {
    let mut cfg = config();
    cfg.max_channels = 2;
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(31);
    h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4001, peer(2)))
        .answer()
        .is_success());
    let out = h.authed(&mut c, Req::channel_bind(0x4002, peer(3)));
    assert_eq!(out.answer().code(), Some(508));
    // Refreshing an existing binding at the limit still works.
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4001, peer(2)))
        .answer()
        .is_success());
}

#[test]
fn channel_bind_needing_a_new_permission_past_max_permissions_is_508() {
    let mut cfg = config();
    cfg.max_permissions = 1;
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(32);
    h.allocate_ok(&mut c);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(1)]))
        .answer()
        .is_success());
    let out = h.authed(&mut c, Req::channel_bind(0x4000, peer(2)));
    assert_eq!(out.answer().code(), Some(508));
    assert!(h
        .authed(&mut c, Req::channel_bind(0x4000, peer(1)))
        .answer()
        .is_success());
}

/// RFC 8489 §6.3.1: CreatePermission and ChannelBind are idempotent, so their answers are
/// not kept for retransmissions (no copy into the cache): a retransmission is done again
/// and gets the very same bytes.
#[test]
fn retransmitted_create_permission_and_channel_bind_are_done_again_with_the_same_answer() {
    let mut h = Harness::new();
    let mut c = Client::udp(60).with_fingerprint();
    h.allocate_ok(&mut c);
    let peer: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    for req in [
        Req::create_permission(&[peer]),
        Req::channel_bind(0x4001, peer),
    ] {
        let req = req.with_tid(h.tid());
        let (_, first) = h.send_signed(&c, &req);
        let (_, again) = h.send_signed(&c, &req);
        assert!(first.answer().is_success());
        assert_eq!(again.answer().bytes, first.answer().bytes);
    }
    assert_eq!(h.server.stats(h.now).retransmissions, 0);
    assert_eq!(h.server.stats(h.now).channels, 1);
}
