//! Peer addresses a client must never reach through the relay (RFC 8656 §21.4 and the
//! coturn CVEs: CVE-2020-26262 peer `0.0.0.0`, CVE-2026-27624 peer `::ffff:127.0.0.1`),
//! named in CreatePermission, ChannelBind and Send, against the real binary on loopback.
//! With the default policy every one is refused with 403 (Send indications are dropped
//! without an answer, and nothing reaches a loopback listener); `allowed_peer_ip` opens
//! exactly the ranges it names.
//!
//! The allocations are dual-stack (IPv4 and IPv6 relayed addresses, on 127.0.0.1 and ::1),
//! so that IPv6 spellings meet the peer policy; on an IPv4-only allocation they are
//! refused earlier with 443 (RFC 8656 §9.1, address family mismatch), checked apart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use turnpike_tests::adversary::{self, Reply, Session, Sink};

/// Every address the relay must refuse by default, with why.
fn denied() -> Vec<(&'static str, SocketAddr)> {
    let v = |s: &str| s.parse::<SocketAddr>().expect("a test address");
    vec![
        ("unspecified v4 (CVE-2020-26262)", v("0.0.0.0:5000")),
        ("this network 0/8", v("0.1.2.3:5000")),
        ("unspecified v6", v("[::]:5000")),
        ("loopback v6", v("[::1]:5000")),
        ("loopback v4", v("127.0.0.1:5000")),
        ("loopback v4, top of 127/8", v("127.255.255.254:5000")),
        (
            "v4-mapped loopback (CVE-2026-27624)",
            v("[::ffff:127.0.0.1]:5000"),
        ),
        ("v4-mapped unspecified", v("[::ffff:0.0.0.0]:5000")),
        ("v4-compatible loopback", v("[::127.0.0.1]:5000")),
        ("NAT64 of loopback", v("[64:ff9b::7f00:1]:5000")),
        ("6to4 of loopback", v("[2002:7f00:1::1]:5000")),
        // Teredo: client 127.0.0.1 stored inverted (0x80ff_fffe) in the last 32 bits.
        (
            "Teredo of loopback",
            v("[2001:0:4136:e378:8000:63bf:80ff:fffe]:5000"),
        ),
        ("cloud metadata", v("169.254.169.254:80")),
        ("v4-mapped cloud metadata", v("[::ffff:169.254.169.254]:80")),
        ("link-local v6", v("[fe80::1]:5000")),
        ("unique local v6", v("[fd00::1]:5000")),
        ("site-local v6", v("[fec0::1]:5000")),
        ("multicast v4", v("224.0.0.1:5000")),
        ("broadcast", v("255.255.255.255:5000")),
        ("multicast v6", v("[ff02::1]:5000")),
        ("RFC 1918 10/8", v("10.1.2.3:5000")),
        ("RFC 1918 172.16/12", v("172.16.0.1:5000")),
        ("RFC 1918 192.168/16", v("192.168.1.1:5000")),
        ("shared address space 100.64/10", v("100.64.0.1:5000")),
        ("port 0", v("198.51.100.1:0")),
    ]
}

fn with_server(extra: &[(&str, &str)], f: impl FnOnce(&mut turnpike_tests::RunningServer)) {
    let mut all = vec![
        ("ipv6", "true"),
        ("ipv6_listen_address", "\"::1\""),
        ("ipv6_address", "\"::1\""),
    ];
    all.extend_from_slice(extra);
    let Some(mut server) = adversary::start(&all) else {
        return;
    };
    f(&mut server);
    server.assert_running();
}

#[test]
fn create_permission_to_each_denied_address_is_403() {
    with_server(&[], |server| {
        let mut s = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        s.allocate_dual();
        let mut wrong = Vec::new();
        for (what, peer) in denied() {
            let r = s.create_permission(peer);
            if r != Reply::Error(403) {
                wrong.push(format!("{what} {peer}: {r:?}"));
            }
        }
        // The relay's own addresses (listener and relayed address) too: on this test
        // machine they are loopback, covered above; the listener port itself:
        let r = s.create_permission(server.addr);
        if r != Reply::Error(403) {
            wrong.push(format!("the relay's own listener {}: {r:?}", server.addr));
        }
        assert!(
            wrong.is_empty(),
            "not refused with 403:\n{}",
            wrong.join("\n")
        );
    });
}

#[test]
fn channel_bind_to_each_denied_address_is_403() {
    with_server(&[], |server| {
        let mut s = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        s.allocate_dual();
        let mut wrong = Vec::new();
        for (i, (what, peer)) in denied().into_iter().enumerate() {
            let r = s.channel_bind(0x4000 + i as u16, peer);
            if r != Reply::Error(403) {
                wrong.push(format!("{what} {peer}: {r:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "not refused with 403:\n{}",
            wrong.join("\n")
        );
    });
}

#[test]
fn send_to_a_denied_address_is_dropped_silently_and_reaches_nothing() {
    with_server(&[], |server| {
        let sink = Sink::new();
        let mut s = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        s.allocate_dual();
        // A permission for the loopback sink cannot be had...
        assert_eq!(s.create_permission(sink.addr()), Reply::Error(403));
        // ...and Send indications to it, in any spelling, are dropped without an answer.
        let port = sink.addr().port();
        let spellings: Vec<SocketAddr> = [
            "127.0.0.1",
            "[::ffff:127.0.0.1]",
            "[::127.0.0.1]",
            "[64:ff9b::7f00:1]",
            "[2002:7f00:1::1]",
        ]
        .iter()
        .map(|ip| format!("{ip}:{port}").parse().expect("an address"))
        .collect();
        for peer in &spellings {
            assert_eq!(
                s.send_indication(*peer, b"escape"),
                Reply::Nothing,
                "{peer}"
            );
        }
        for (what, peer) in denied() {
            if peer.ip().is_loopback() || peer.port() == 0 {
                assert_eq!(s.send_indication(peer, b"escape"), Reply::Nothing, "{what}");
            }
        }
        assert!(
            sink.received(Duration::from_millis(300)).is_empty(),
            "a denied Send reached the loopback peer"
        );
    });
}

#[test]
fn allowed_peer_ip_opens_exactly_the_named_ranges() {
    with_server(
        &[("allowed_peer_ip", r#"["169.254.169.254/32", "10.0.0.0/8"]"#)],
        |server| {
            let mut s = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
            s.allocate_dual();
            let v = |x: &str| x.parse::<SocketAddr>().expect("an address");
            // Permissions only: nothing is sent to these addresses.
            assert_eq!(s.create_permission(v("169.254.169.254:80")), Reply::Success);
            assert_eq!(s.create_permission(v("10.1.2.3:5000")), Reply::Success);
            assert_eq!(s.channel_bind(0x4001, v("10.9.9.9:5000")), Reply::Success);
            // The allow-list matches the address a packet reaches: the mapped form of an
            // allowed address is allowed; its neighbours and other ranges are not.
            assert_eq!(
                s.create_permission(v("[::ffff:169.254.169.254]:80")),
                Reply::Success
            );
            assert_eq!(
                s.create_permission(v("169.254.169.253:80")),
                Reply::Error(403)
            );
            assert_eq!(s.create_permission(v("192.168.1.1:80")), Reply::Error(403));
            assert_eq!(s.create_permission(v("127.0.0.1:80")), Reply::Error(403));
            assert_eq!(
                s.create_permission(v("[::ffff:127.0.0.1]:80")),
                Reply::Error(403)
            );
            // Port 0 stays refused inside an allowed range.
            assert_eq!(s.channel_bind(0x4002, v("10.1.2.3:0")), Reply::Error(403));
        },
    );
}

#[test]
fn denied_peer_ip_wins_over_allowed_peer_ip() {
    with_server(
        &[
            ("allowed_peer_ip", r#"["10.0.0.0/8"]"#),
            ("denied_peer_ip", r#"["10.1.0.0/16"]"#),
        ],
        |server| {
            let mut s = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
            s.allocate_dual();
            let v = |x: &str| x.parse::<SocketAddr>().expect("an address");
            assert_eq!(s.create_permission(v("10.2.0.1:80")), Reply::Success);
            assert_eq!(s.create_permission(v("10.1.0.1:80")), Reply::Error(403));
            assert_eq!(
                s.create_permission(v("[::ffff:10.1.0.1]:80")),
                Reply::Error(403)
            );
        },
    );
}

#[test]
fn on_an_ipv4_only_allocation_ipv6_spellings_are_443() {
    with_server(&[], |server| {
        let mut s = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        s.allocate();
        let mut wrong = Vec::new();
        for (what, peer) in denied() {
            let want = if peer.is_ipv6() {
                Reply::Error(443)
            } else {
                Reply::Error(403)
            };
            let r = s.create_permission(peer);
            if r != want {
                wrong.push(format!("{what} {peer}: {r:?}, not {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    });
}

/// The relay's own listener, its relayed addresses and its HTTP API port, named as peers:
/// with loopback peers not allowed (the default) each is refused with 403 and a Send
/// towards it goes nowhere, so a client can neither loop the relay into itself nor reach
/// the API through it (RFC 8656 §21.4). Non-loopback own addresses are denied even where
/// loopback is allowed (the core adds every listener address to the deny list); loopback
/// ones follow `allow_loopback_peers`, which only test setups turn on.
#[test]
fn the_relays_own_addresses_and_api_port_are_403() {
    with_server(&[], |server| {
        let api: SocketAddr = server
            .wait_event(Duration::from_secs(3), |e| e["event"] == "api")
            .and_then(|e| e["listen"].as_str()?.parse().ok())
            .expect("the API address in the event log");
        let mut s = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let relayed = s.allocate_dual();
        let mut other = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)));
        let other_relayed = other.allocate();
        let own = [
            ("the TURN listener", server.addr),
            ("the HTTP API", api),
            ("this allocation's relayed address", relayed),
            ("another allocation's relayed address", other_relayed),
        ];
        let mut wrong = Vec::new();
        for (i, (what, peer)) in own.iter().enumerate() {
            let r = s.create_permission(*peer);
            if r != Reply::Error(403) {
                wrong.push(format!("CreatePermission {what} {peer}: {r:?}"));
            }
            let r = s.channel_bind(0x4100 + i as u16, *peer);
            if r != Reply::Error(403) {
                wrong.push(format!("ChannelBind {what} {peer}: {r:?}"));
            }
            let r = s.send_indication(*peer, b"GET /metrics HTTP/1.1\r\n\r\n");
            if r != Reply::Nothing {
                wrong.push(format!("Send {what} {peer}: {r:?}"));
            }
        }
        assert!(wrong.is_empty(), "not refused:\n{}", wrong.join("\n"));
        // Nothing was relayed: the other allocation got no Data indication.
        assert_eq!(
            other
                .answer(Duration::from_millis(300))
                .ok()
                .map(|m| m.method),
            None,
            "a Send reached the relay's own address"
        );
    });
}
