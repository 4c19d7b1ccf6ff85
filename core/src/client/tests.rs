//! The client driven against hand-built server answers.

use super::*;
use crate::auth::{long_term_key, userhash, PasswordAlgorithm};
use crate::stun::{attr, Class, Message, MessageBuilder, Method};
use rand_core::{RngCore, SeedableRng};

const REALM: &str = "example.org";
const USER: &str = "alice";
const PASS: &str = "secret";

fn server() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}
fn relayed_addr() -> SocketAddr {
    "192.0.2.1:50000".parse().unwrap()
}
fn mapped_addr() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}
fn peer() -> SocketAddr {
    "203.0.113.9:6000".parse().unwrap()
}
fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}
fn md5_key() -> Vec<u8> {
    long_term_key(PasswordAlgorithm::Md5, USER, REALM, PASS)
        .as_bytes()
        .to_vec()
}

fn client_with(transport: Transport, f: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig::new(server(), transport, USER, PASS);
    f(&mut config);
    Client::new(config, [7; 32], ms(0))
}

fn client(transport: Transport) -> Client {
    client_with(transport, |_| {})
}

/// The one transmit queued; panics if there is none or more than one.
fn one_transmit(c: &mut Client) -> Vec<u8> {
    let out = c.poll_transmit().expect("a transmit");
    assert!(c.poll_transmit().is_none(), "exactly one transmit");
    out
}

fn events(c: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes).expect("valid STUN")
}

fn text<'a>(m: &Message<'a>, ty: u16) -> &'a str {
    core::str::from_utf8(m.get(ty).expect("attribute present")).unwrap()
}

fn challenge(req: &[u8], code: u16, nonce: &str, algorithms: Option<&[u16]>) -> Vec<u8> {
    let req = parse(req);
    let mut b = MessageBuilder::response_to(&req, Class::Error);
    b.add_error_code(
        code,
        if code == 401 {
            "Unauthorized"
        } else {
            "Stale Nonce"
        },
    );
    b.add(attr::REALM, REALM.as_bytes());
    b.add(attr::NONCE, nonce.as_bytes());
    if let Some(algs) = algorithms {
        b.add_password_algorithms(algs);
    }
    b.finish()
}

/// A success answer to `req` with `add`'s attributes and MESSAGE-INTEGRITY under `key`.
fn success(req: &[u8], key: &[u8], add: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
    let req = parse(req);
    let mut b = MessageBuilder::response_to(&req, Class::Success);
    add(&mut b);
    b.add_integrity_sha1(key);
    b.finish()
}

fn error(req: &[u8], key: &[u8], code: u16) -> Vec<u8> {
    let req = parse(req);
    let mut b = MessageBuilder::response_to(&req, Class::Error);
    b.add_error_code(code, "No");
    b.add_integrity_sha1(key);
    b.finish()
}

fn allocate_success(req: &[u8], key: &[u8], lifetime_s: u32) -> Vec<u8> {
    success(req, key, |b| {
        b.add_xor_address(attr::XOR_RELAYED_ADDRESS, relayed_addr());
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, mapped_addr());
        b.add_u32(attr::LIFETIME, lifetime_s);
    })
}

/// Drives a UDP client through 401 → authenticated Allocate → success at 10 ms / 20 ms.
/// Returns the client; the authenticated Allocate went out at 10 ms.
fn allocated(transport: Transport, lifetime_s: u32) -> Client {
    let mut c = client(transport);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(ms(10), &challenge(&req, 401, "nonce-1", None));
    let req = one_transmit(&mut c);
    c.handle_input(ms(20), &allocate_success(&req, &md5_key(), lifetime_s));
    assert!(matches!(
        events(&mut c).as_slice(),
        [ClientEvent::Allocated { .. }]
    ));
    c
}

fn bind_channel(c: &mut Client, now: Instant, peer: SocketAddr) -> u16 {
    let n = c.channel_bind(now, peer).unwrap();
    let req = one_transmit(c);
    c.handle_input(now, &success(&req, &md5_key(), |_| {}));
    assert_eq!(
        events(c),
        vec![ClientEvent::ChannelBound { channel: n, peer }]
    );
    n
}

#[test]
fn first_allocate_is_unauthenticated_and_401_retry_carries_credentials() {
    let mut c = client(Transport::Udp);
    c.allocate(ms(0));
    assert_eq!(c.state(), ClientState::Allocating);
    let first = one_transmit(&mut c);
    let m = parse(&first);
    assert_eq!((m.method(), m.class()), (Method::ALLOCATE, Class::Request));
    assert_eq!(m.get(attr::REQUESTED_TRANSPORT), Some(&[17u8, 0, 0, 0][..]));
    assert!(m.get(attr::USERNAME).is_none() && m.integrity().is_none());
    assert!(m.has_fingerprint(), "browsers add FINGERPRINT");

    c.handle_input(ms(10), &challenge(&first, 401, "nonce-1", None));
    assert!(events(&mut c).is_empty(), "a 401 is handled, not reported");
    let retry = one_transmit(&mut c);
    let m = parse(&retry);
    assert_ne!(
        m.transaction_id(),
        parse(&first).transaction_id(),
        "a retry is a new transaction"
    );
    assert_eq!(text(&m, attr::USERNAME), USER);
    assert_eq!(text(&m, attr::REALM), REALM);
    assert_eq!(text(&m, attr::NONCE), "nonce-1");
    assert!(m.check_integrity_sha1(&md5_key()));
    assert!(!m.check_integrity_sha1(b"wrong key"));
    assert!(
        m.get(attr::PASSWORD_ALGORITHM).is_none(),
        "RFC 5389 style: no algorithm named"
    );
    assert_eq!(c.realm(), Some(REALM));
}

#[test]
fn allocate_success_reports_addresses_and_lifetime() {
    let mut c = client_with(Transport::Udp, |cfg| cfg.requested_lifetime_s = Some(1200));
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    assert_eq!(
        parse(&req).get(attr::LIFETIME),
        Some(&1200u32.to_be_bytes()[..])
    );
    c.handle_input(ms(10), &challenge(&req, 401, "nonce-1", None));
    let req = one_transmit(&mut c);
    c.handle_input(ms(20), &allocate_success(&req, &md5_key(), 1200));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Allocated {
            relayed: vec![relayed_addr()],
            mapped: Some(mapped_addr()),
            lifetime_s: 1200
        }]
    );
    assert_eq!(c.state(), ClientState::Allocated);
    assert_eq!(c.relayed(), &[relayed_addr()]);
    assert_eq!(c.mapped(), Some(mapped_addr()));
    assert_eq!(c.outstanding_transactions(), 0);
}

#[test]
fn responses_that_fail_integrity_or_match_nothing_are_ignored() {
    let mut c = client(Transport::Udp);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(ms(10), &challenge(&req, 401, "nonce-1", None));
    let req = one_transmit(&mut c);

    // Wrong key: discarded, the transaction goes on (RFC 8489 §9.2.5).
    c.handle_input(ms(20), &allocate_success(&req, b"not the key", 600));
    // No integrity at all on a success: discarded too.
    let unsigned = {
        let m = parse(&req);
        let mut b = MessageBuilder::response_to(&m, Class::Success);
        b.add_xor_address(attr::XOR_RELAYED_ADDRESS, relayed_addr());
        b.finish()
    };
    c.handle_input(ms(20), &unsigned);
    // An unprotected 403 to an authenticated request: discarded.
    let unsigned_403 = {
        let m = parse(&req);
        let mut b = MessageBuilder::response_to(&m, Class::Error);
        b.add_error_code(403, "Forbidden");
        b.finish()
    };
    c.handle_input(ms(20), &unsigned_403);
    // A response to a transaction that does not exist.
    let stray = {
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Success, TransactionId([5; 12]));
        b.add_xor_address(attr::XOR_RELAYED_ADDRESS, relayed_addr());
        b.add_integrity_sha1(&md5_key());
        b.finish()
    };
    c.handle_input(ms(20), &stray);
    // Garbage of every kind.
    c.handle_input(ms(20), &[]);
    c.handle_input(ms(20), &[0xff; 40]);
    c.handle_input(ms(20), &req[..30]);
    assert!(events(&mut c).is_empty());
    assert_eq!(c.state(), ClientState::Allocating);
    assert_eq!(c.ignored_inputs(), 7);

    c.handle_input(ms(30), &allocate_success(&req, &md5_key(), 600));
    assert!(matches!(
        events(&mut c).as_slice(),
        [ClientEvent::Allocated { .. }]
    ));
}

#[test]
fn stale_nonce_is_retried_once_with_the_new_nonce() {
    let mut c = allocated(Transport::Udp, 600);
    let ip = peer().ip();
    c.create_permission(ms(100), &[ip]);
    let req = one_transmit(&mut c);
    assert_eq!(text(&parse(&req), attr::NONCE), "nonce-1");

    c.handle_input(ms(110), &challenge(&req, 438, "nonce-2", None));
    assert!(events(&mut c).is_empty());
    let retry = one_transmit(&mut c);
    let m = parse(&retry);
    assert_eq!(text(&m, attr::NONCE), "nonce-2");
    assert!(m.check_integrity_sha1(&md5_key()));
    // A second 438 for the same request is final.
    c.handle_input(ms(120), &challenge(&retry, 438, "nonce-3", None));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::PermissionFailed {
            peers: vec![ip],
            code: 438
        }]
    );
    assert!(c.poll_transmit().is_none());
    assert!(!c.has_permission(ip));

    // The next request uses the newest nonce; 438 then success.
    c.create_permission(ms(200), &[ip]);
    let req = one_transmit(&mut c);
    assert_eq!(text(&parse(&req), attr::NONCE), "nonce-3");
    c.handle_input(ms(210), &success(&req, &md5_key(), |_| {}));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::PermissionCreated { peers: vec![ip] }]
    );
    assert!(c.has_permission(ip));
}

#[test]
fn wrong_password_fails_after_one_authenticated_attempt() {
    let mut c = client(Transport::Udp);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(ms(10), &challenge(&req, 401, "nonce-1", None));
    let req = one_transmit(&mut c);
    // The same challenge again: the credentials were refused.
    c.handle_input(ms(20), &challenge(&req, 401, "nonce-1", None));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::AllocateFailed {
            code: 401,
            reason: "Unauthorized".into()
        }]
    );
    assert_eq!(c.state(), ClientState::Failed);
    assert!(c.poll_transmit().is_none());
}

#[test]
fn udp_retransmits_at_rfc_8489_times_then_times_out() {
    let mut c = client(Transport::Udp);
    c.allocate(ms(0));
    let first = one_transmit(&mut c);
    let mut retransmits = Vec::new();
    let mut timed_out = None;
    for _ in 0..20 {
        let Some(at) = c.poll_timeout() else { break };
        c.handle_timeout(at);
        while let Some(bytes) = c.poll_transmit() {
            assert_eq!(bytes, first, "a retransmission is the same request");
            retransmits.push(at.as_millis());
        }
        for e in events(&mut c) {
            assert_eq!(
                e,
                ClientEvent::TimedOut {
                    method: Method::ALLOCATE
                }
            );
            timed_out = Some(at.as_millis());
        }
    }
    assert_eq!(retransmits, vec![500, 1_500, 3_500, 7_500, 15_500, 31_500]);
    assert_eq!(timed_out, Some(39_500));
    assert_eq!(c.state(), ClientState::Failed);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn stream_transport_never_retransmits() {
    let mut c = client(Transport::Tcp);
    c.binding(ms(1_000));
    let _ = one_transmit(&mut c);
    assert_eq!(c.poll_timeout(), Some(ms(40_500)));
    c.handle_timeout(ms(40_499));
    assert!(c.poll_transmit().is_none() && events(&mut c).is_empty());
    c.handle_timeout(ms(40_500));
    assert!(c.poll_transmit().is_none());
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::TimedOut {
            method: Method::BINDING
        }]
    );
}

#[test]
fn several_transactions_are_outstanding_at_once() {
    let mut c = allocated(Transport::Udp, 600);
    c.binding(ms(100));
    let binding = one_transmit(&mut c);
    c.create_permission(ms(100), &[peer().ip()]);
    let perm = one_transmit(&mut c);
    assert_eq!(c.outstanding_transactions(), 2);
    // Answered out of order.
    c.handle_input(ms(110), &success(&perm, &md5_key(), |_| {}));
    let unsigned_binding = {
        let m = parse(&binding);
        assert!(m.integrity().is_none(), "Binding goes without credentials");
        let mut b = MessageBuilder::response_to(&m, Class::Success);
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, mapped_addr());
        b.finish()
    };
    c.handle_input(ms(120), &unsigned_binding);
    assert_eq!(
        events(&mut c),
        vec![
            ClientEvent::PermissionCreated {
                peers: vec![peer().ip()]
            },
            ClientEvent::BindingSucceeded {
                mapped: mapped_addr()
            },
        ]
    );
}

#[test]
fn channel_data_write_and_parse_round_trip_udp() {
    let mut c = allocated(Transport::Udp, 600);
    let mut buf = [0xaau8; 64];
    buf[4..9].copy_from_slice(b"hello");
    assert_eq!(
        c.write_channel_data(peer(), &mut buf, 5),
        None,
        "no channel yet"
    );
    let n = bind_channel(&mut c, ms(100), peer());
    assert_eq!(n, channel::MIN_CHANNEL);
    assert_eq!(c.channel_for(peer()), Some(n));

    let len = c.write_channel_data(peer(), &mut buf, 5).unwrap();
    assert_eq!(len, 9, "no padding on UDP");
    assert_eq!(
        &buf[..9],
        &[0x40, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o']
    );
    assert_eq!(
        c.write_channel_data(peer(), &mut buf[..8], 5),
        None,
        "buffer too short"
    );

    // The server sends the same bytes back: a Data event from the bound peer.
    c.handle_input(ms(200), &buf[..len]);
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Data {
            peer: peer(),
            data: b"hello".to_vec()
        }]
    );
    assert_eq!(c.peek_data(&buf[..len]), Some((peer(), &b"hello"[..])));

    // send() uses the channel.
    c.send(ms(300), peer(), b"hello");
    assert_eq!(one_transmit(&mut c), buf[..9].to_vec());
    // ...and a Send indication to a peer without a channel.
    let other: SocketAddr = "203.0.113.10:7000".parse().unwrap();
    c.send(ms(300), other, b"x");
    let ind = one_transmit(&mut c);
    let m = parse(&ind);
    assert_eq!((m.method(), m.class()), (Method::SEND, Class::Indication));
    let xor = m.get(attr::XOR_PEER_ADDRESS).unwrap();
    assert_eq!(
        attr::decode_xor_address(xor, &m.transaction_id()),
        Ok(other)
    );
    assert_eq!(m.get(attr::DATA), Some(&b"x"[..]));

    // Unknown channel: dropped.
    c.handle_input(ms(400), &[0x40, 0x07, 0x00, 0x01, b'z']);
    assert!(events(&mut c).is_empty());
}

#[test]
fn channel_data_on_streams_is_padded_and_unpadded() {
    let mut c = allocated(Transport::Tcp, 600);
    let n = bind_channel(&mut c, ms(100), peer());
    let mut buf = [0xaau8; 16];
    buf[4..9].copy_from_slice(b"hello");
    let len = c.write_channel_data(peer(), &mut buf, 5).unwrap();
    assert_eq!(len, 12, "padded to 4 on streams (RFC 8656 §12.5)");
    assert_eq!(
        &buf[..12],
        &[0x40, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]
    );
    c.send(ms(200), peer(), b"hello");
    assert_eq!(one_transmit(&mut c), buf[..12].to_vec());

    // Two padded ChannelData back to back in one read.
    let mut stream = buf[..12].to_vec();
    stream.extend_from_slice(&[0x40, 0x00, 0x00, 0x02, b'h', b'i', 0, 0]);
    c.handle_input(ms(300), &stream);
    assert_eq!(
        events(&mut c),
        vec![
            ClientEvent::Data {
                peer: peer(),
                data: b"hello".to_vec()
            },
            ClientEvent::Data {
                peer: peer(),
                data: b"hi".to_vec()
            },
        ]
    );
    assert_eq!(n, channel::MIN_CHANNEL);
}

#[test]
fn stream_split_into_single_bytes_gives_the_same_events() {
    // Two identical clients; A reads each answer whole, B one byte at a time.
    let mut a = client(Transport::Tcp);
    let mut b = client(Transport::Tcp);
    a.allocate(ms(0));
    b.allocate(ms(0));
    let key = md5_key();
    let mut steps = 0;
    let mut now = 0;
    while let (Some(ta), Some(tb)) = (a.poll_transmit(), b.poll_transmit()) {
        assert_eq!(ta, tb, "same seed, same requests");
        now += 10;
        let m = parse(&ta);
        let mut answer = match m.method() {
            Method::ALLOCATE if m.integrity().is_none() => challenge(&ta, 401, "nonce-1", None),
            Method::ALLOCATE => allocate_success(&ta, &key, 600),
            Method::CHANNEL_BIND => success(&ta, &key, |_| {}),
            _ => unreachable!(),
        };
        if m.method() == Method::ALLOCATE && m.integrity().is_some() {
            a.handle_input(ms(now), &answer);
            for byte in &answer {
                b.handle_input(ms(now), core::slice::from_ref(byte));
            }
            a.channel_bind(ms(now), peer());
            b.channel_bind(ms(now), peer());
            continue;
        }
        if m.method() == Method::CHANNEL_BIND {
            // Follow the answer with data: padded ChannelData and a Data indication.
            answer.extend_from_slice(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0]);
            let mut ind =
                MessageBuilder::new(Method::DATA, Class::Indication, TransactionId([9; 12]));
            ind.add_xor_address(attr::XOR_PEER_ADDRESS, peer());
            ind.add(attr::DATA, &[4, 5]);
            ind.add_fingerprint();
            answer.extend_from_slice(&ind.finish());
        }
        a.handle_input(ms(now), &answer);
        for byte in &answer {
            b.handle_input(ms(now), core::slice::from_ref(byte));
        }
        steps += 1;
    }
    assert_eq!(steps, 2);
    let ea = events(&mut a);
    assert_eq!(ea, events(&mut b));
    assert_eq!(ea.len(), 4, "{ea:?}");
    assert!(matches!(ea[0], ClientEvent::Allocated { .. }));
    assert_eq!(
        ea[1],
        ClientEvent::ChannelBound {
            channel: 0x4000,
            peer: peer()
        }
    );
    assert_eq!(
        ea[2],
        ClientEvent::Data {
            peer: peer(),
            data: vec![1, 2, 3]
        }
    );
    assert_eq!(
        ea[3],
        ClientEvent::Data {
            peer: peer(),
            data: vec![4, 5]
        }
    );
}

#[test]
fn allocation_is_refreshed_a_minute_before_it_expires() {
    // The authenticated Allocate left at 10 ms: lifetimes count from there.
    let mut c = allocated(Transport::Udp, 600);
    assert_eq!(c.poll_timeout(), Some(ms(540_010)));
    c.handle_timeout(ms(540_009));
    assert!(c.poll_transmit().is_none());
    c.handle_timeout(ms(540_010));
    let req = one_transmit(&mut c);
    let m = parse(&req);
    assert_eq!(m.method(), Method::REFRESH);
    assert!(m.check_integrity_sha1(&md5_key()));
    assert!(
        m.get(attr::LIFETIME).is_none(),
        "no lifetime configured: the server decides"
    );
    c.handle_input(
        ms(540_050),
        &success(&req, &md5_key(), |b| {
            b.add_u32(attr::LIFETIME, 100);
        }),
    );
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Refreshed { lifetime_s: 100 }]
    );
    // Short lifetimes refresh half-way.
    assert_eq!(c.poll_timeout(), Some(ms(540_010 + 50_000)));
}

#[test]
fn allocation_expires_when_refreshes_get_no_answer() {
    let mut c = allocated(Transport::Tcp, 100);
    let mut seen = Vec::new();
    for _ in 0..10 {
        let Some(at) = c.poll_timeout() else { break };
        c.handle_timeout(at);
        while c.poll_transmit().is_some() {}
        seen.extend(events(&mut c).into_iter().map(|e| (at.as_millis(), e)));
    }
    // Refresh at 50 s times out at 89.5 s, is retried and the allocation ends at 100 s.
    assert_eq!(
        seen,
        vec![
            (
                89_510,
                ClientEvent::TimedOut {
                    method: Method::REFRESH
                }
            ),
            (100_010, ClientEvent::Expired),
            (
                129_010,
                ClientEvent::TimedOut {
                    method: Method::REFRESH
                }
            ),
        ]
    );
    assert_eq!(c.state(), ClientState::Expired);
    assert!(c.relayed().is_empty());
}

#[test]
fn permissions_and_channels_are_renewed() {
    let mut c = allocated(Transport::Udp, 3600);
    let ips: Vec<IpAddr> = vec![
        "203.0.113.1".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ];
    c.create_permission(ms(1_000), &ips);
    let req = one_transmit(&mut c);
    c.handle_input(ms(1_010), &success(&req, &md5_key(), |_| {}));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::PermissionCreated { peers: ips.clone() }]
    );
    let n = bind_channel(&mut c, ms(2_000), peer());

    // Permissions requested at 1 s are renewed at 241 s, in one request; the
    // channel's peer's permission (from the ChannelBind at 2 s) at 242 s.
    assert_eq!(c.poll_timeout(), Some(ms(241_000)));
    c.handle_timeout(ms(241_000));
    let req = one_transmit(&mut c);
    let m = parse(&req);
    assert_eq!(m.method(), Method::CREATE_PERMISSION);
    let peers: Vec<IpAddr> = m
        .attributes()
        .filter(|(t, _)| *t == attr::XOR_PEER_ADDRESS)
        .map(|(_, v)| {
            attr::decode_xor_address(v, &m.transaction_id())
                .unwrap()
                .ip()
        })
        .collect();
    assert_eq!(peers, ips);
    c.handle_input(ms(241_010), &success(&req, &md5_key(), |_| {}));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::PermissionCreated { peers: ips.clone() }]
    );

    assert_eq!(c.poll_timeout(), Some(ms(242_000)));
    c.handle_timeout(ms(242_000));
    let req = one_transmit(&mut c);
    c.handle_input(ms(242_010), &success(&req, &md5_key(), |_| {}));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::PermissionCreated {
            peers: vec![peer().ip()]
        }]
    );

    // The channel bound at 2 s is renewed at 542 s, after the permissions at 481/482 s.
    for at in [481_000, 482_000] {
        assert_eq!(c.poll_timeout(), Some(ms(at)));
        c.handle_timeout(ms(at));
        let req = one_transmit(&mut c);
        c.handle_input(ms(at + 10), &success(&req, &md5_key(), |_| {}));
        events(&mut c);
    }
    assert_eq!(c.poll_timeout(), Some(ms(542_000)));
    c.handle_timeout(ms(542_000));
    let req = one_transmit(&mut c);
    let m = parse(&req);
    assert_eq!(m.method(), Method::CHANNEL_BIND);
    assert_eq!(m.get(attr::CHANNEL_NUMBER), Some(&[0x40, 0x00, 0, 0][..]));
    c.handle_input(ms(542_010), &success(&req, &md5_key(), |_| {}));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::ChannelBound {
            channel: n,
            peer: peer()
        }]
    );
}

#[test]
fn channels_expire_and_their_numbers_cool_down() {
    let mut c = allocated(Transport::Udp, 3600);
    let n = bind_channel(&mut c, ms(0), peer());
    // The renewal at 540 s gets an error: the binding lives until 600 s, then cools down.
    c.handle_timeout(ms(540_000));
    while let Some(req) = c.poll_transmit() {
        let m = parse(&req);
        if m.method() == Method::CHANNEL_BIND {
            c.handle_input(ms(540_010), &error(&req, &md5_key(), 400));
        }
    }
    assert_eq!(c.channel_for(peer()), Some(n));
    c.handle_timeout(ms(600_000));
    assert_eq!(c.channel_for(peer()), None);
    // Another peer gets a new number, not the cooling one.
    let other: SocketAddr = "203.0.113.10:7000".parse().unwrap();
    assert_eq!(c.channel_bind(ms(600_000), other), Some(n + 1));
    // Data on the cooling channel is dropped.
    c.handle_input(ms(600_001), &[0x40, 0x00, 0x00, 0x01, 7]);
    assert!(!events(&mut c)
        .iter()
        .any(|e| matches!(e, ClientEvent::Data { .. })));
}

#[test]
fn channel_numbers_run_out() {
    let mut c = allocated(Transport::Udp, 600);
    for i in 0..4096u32 {
        let p = SocketAddr::new(IpAddr::from([10, 0, (i >> 8) as u8, i as u8]), 1);
        assert_eq!(c.channel_bind(ms(0), p), Some(0x4000 + i as u16));
    }
    assert_eq!(c.channel_bind(ms(0), "10.9.9.9:1".parse().unwrap()), None);
    // Rebinding an existing peer reuses its number.
    assert_eq!(
        c.channel_bind(ms(0), "10.0.0.5:1".parse().unwrap()),
        Some(0x4005)
    );
}

#[test]
fn sha256_is_negotiated_when_offered_and_preferred() {
    let mut c = client_with(Transport::Udp, |cfg| {
        cfg.prefer_sha256 = true;
        cfg.use_userhash = true;
    });
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    let offer = [
        attr::PASSWORD_ALGORITHM_MD5,
        attr::PASSWORD_ALGORITHM_SHA256,
    ];
    let nonce = "obMatJos2AAADdeadbeef";
    let answer = challenge(&req, 401, nonce, Some(&offer));
    c.handle_input(ms(10), &answer);
    let retry = one_transmit(&mut c);
    let m = parse(&retry);
    let sha_key = long_term_key(PasswordAlgorithm::Sha256, USER, REALM, PASS);
    assert_eq!(m.integrity(), Some(crate::stun::IntegrityKind::Sha256));
    assert!(m.get(attr::MESSAGE_INTEGRITY).is_none());
    assert!(m.check_integrity_sha256(sha_key.as_bytes()));
    assert!(!m.check_integrity_sha256(&md5_key()));
    // RFC 8489 §9.2.5: PASSWORD-ALGORITHMS echoed as offered, PASSWORD-ALGORITHM chosen.
    assert_eq!(
        m.get(attr::PASSWORD_ALGORITHMS),
        parse(&answer).get(attr::PASSWORD_ALGORITHMS)
    );
    assert_eq!(m.get(attr::PASSWORD_ALGORITHM), Some(&[0, 2, 0, 0][..]));
    // Username anonymity offered: USERHASH instead of USERNAME (RFC 8489 §14.4).
    assert!(m.get(attr::USERNAME).is_none());
    assert_eq!(m.get(attr::USERHASH), Some(&userhash(USER, REALM)[..]));
    assert_eq!(c.password_algorithm(), Some(PasswordAlgorithm::Sha256));

    // The answer, signed with MESSAGE-INTEGRITY-SHA256, is accepted.
    let ok = {
        let mut b = MessageBuilder::response_to(&m, Class::Success);
        b.add_xor_address(attr::XOR_RELAYED_ADDRESS, relayed_addr());
        b.add_u32(attr::LIFETIME, 600);
        b.add_integrity_sha256(sha_key.as_bytes());
        b.finish()
    };
    c.handle_input(ms(20), &ok);
    assert!(matches!(
        events(&mut c).as_slice(),
        [ClientEvent::Allocated { .. }]
    ));
}

#[test]
fn sha256_offer_is_ignored_without_cookie_or_preference() {
    let offer = [
        attr::PASSWORD_ALGORITHM_MD5,
        attr::PASSWORD_ALGORITHM_SHA256,
    ];
    // Preferred, but the nonce lacks the cookie: the offer does not count.
    let mut c = client_with(Transport::Udp, |cfg| cfg.prefer_sha256 = true);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(ms(10), &challenge(&req, 401, "plain-nonce", Some(&offer)));
    let m_bytes = one_transmit(&mut c);
    let m = parse(&m_bytes);
    assert!(m.check_integrity_sha1(&md5_key()));
    assert!(m.get(attr::PASSWORD_ALGORITHM).is_none());
    // Cookie present, but SHA-256 not preferred: a browser's MD5.
    let mut c = client(Transport::Udp);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(
        ms(10),
        &challenge(&req, 401, "obMatJos2AAADxyz", Some(&offer)),
    );
    let m_bytes = one_transmit(&mut c);
    let m = parse(&m_bytes);
    assert_eq!(m.integrity(), Some(crate::stun::IntegrityKind::Sha1));
    assert_eq!(text(&m, attr::USERNAME), USER);
}

#[test]
fn refresh_zero_deletes() {
    let mut c = allocated(Transport::Udp, 600);
    let n = bind_channel(&mut c, ms(100), peer());
    c.refresh(ms(1_000), 0);
    let req = one_transmit(&mut c);
    assert_eq!(parse(&req).get(attr::LIFETIME), Some(&[0, 0, 0, 0][..]));
    c.handle_input(
        ms(1_010),
        &success(&req, &md5_key(), |b| {
            b.add_u32(attr::LIFETIME, 0);
        }),
    );
    assert_eq!(events(&mut c), vec![ClientEvent::Deleted]);
    assert_eq!(c.state(), ClientState::Deleted);
    assert!(c.relayed().is_empty());
    assert_eq!(c.channel_for(peer()), None);
    assert_eq!(c.poll_timeout(), None, "no upkeep once deleted");
    let _ = n;
}

#[test]
fn refresh_437_means_the_allocation_is_gone() {
    let mut c = allocated(Transport::Udp, 600);
    c.refresh(ms(1_000), 600);
    let req = one_transmit(&mut c);
    c.handle_input(ms(1_010), &error(&req, &md5_key(), 437));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::RefreshFailed { code: 437 }]
    );
    assert_eq!(c.state(), ClientState::Failed);
}

#[test]
fn data_indications_need_a_permission() {
    let mut c = allocated(Transport::Udp, 600);
    let indication = |from: SocketAddr| {
        let mut b = MessageBuilder::new(Method::DATA, Class::Indication, TransactionId([3; 12]));
        b.add_xor_address(attr::XOR_PEER_ADDRESS, from);
        b.add(attr::DATA, b"pkt");
        b.finish()
    };
    c.handle_input(ms(100), &indication(peer()));
    assert!(
        events(&mut c).is_empty(),
        "RFC 8656 §11.6: no permission, discarded"
    );
    c.create_permission(ms(100), &[peer().ip()]);
    let req = one_transmit(&mut c);
    c.handle_input(ms(110), &success(&req, &md5_key(), |_| {}));
    events(&mut c);
    c.handle_input(ms(120), &indication(peer()));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Data {
            peer: peer(),
            data: b"pkt".to_vec()
        }]
    );
}

#[test]
fn event_queue_is_bounded_and_drops_oldest_data() {
    let mut c = allocated(Transport::Udp, 600);
    let n = bind_channel(&mut c, ms(100), peer());
    c.binding(ms(100));
    let req = one_transmit(&mut c);
    let [hi, lo] = n.to_be_bytes();
    for i in 0..MAX_QUEUE as u32 + 100 {
        let b = i.to_be_bytes();
        c.handle_input(ms(200), &[hi, lo, 0, 4, b[0], b[1], b[2], b[3]]);
        if i == 10 {
            // A control event in the middle survives the overflow.
            let m = parse(&req);
            let mut r = MessageBuilder::response_to(&m, Class::Success);
            r.add_xor_address(attr::XOR_MAPPED_ADDRESS, mapped_addr());
            c.handle_input(ms(200), &r.finish());
        }
    }
    assert_eq!(c.dropped_events(), 101);
    let ev = events(&mut c);
    assert_eq!(ev.len(), MAX_QUEUE);
    assert!(ev.contains(&ClientEvent::BindingSucceeded {
        mapped: mapped_addr()
    }));
    let first_data = ev.iter().find_map(|e| match e {
        ClientEvent::Data { data, .. } => Some(data.clone()),
        _ => None,
    });
    assert_eq!(
        first_data,
        Some(101u32.to_be_bytes().to_vec()),
        "the oldest were dropped"
    );
}

#[test]
fn same_seed_same_bytes() {
    let run = || {
        let mut c = client(Transport::Udp);
        c.allocate(ms(0));
        c.binding(ms(1));
        c.handle_timeout(ms(600));
        std::iter::from_fn(|| c.poll_transmit()).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
    let mut other = Client::new(
        ClientConfig::new(server(), Transport::Udp, USER, PASS),
        [8; 32],
        ms(0),
    );
    other.allocate(ms(0));
    assert_ne!(
        other.poll_transmit(),
        run().first().cloned(),
        "another seed, other IDs"
    );
}

#[test]
fn garbage_never_panics() {
    let mut rng = rand_chacha::ChaCha8Rng::from_seed([1; 32]);
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut c = allocated(transport, 600);
        bind_channel(&mut c, ms(0), peer());
        for i in 0..2_000u64 {
            let mut buf = vec![0u8; (rng.next_u32() % 120) as usize];
            rng.fill_bytes(&mut buf);
            // Bias towards plausible starts: STUN header or ChannelData.
            if let Some(first) = buf.get_mut(0) {
                *first &= 0x7f;
            }
            if buf.len() >= 8 && i % 2 == 0 {
                buf[4..8].copy_from_slice(&crate::stun::MAGIC_COOKIE.to_be_bytes());
            }
            c.handle_input(ms(i), &buf);
            let _ = c.peek_data(&buf);
        }
        c.handle_timeout(ms(10_000));
    }
}

#[test]
fn handle_input_with_hands_data_over_in_place() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut c = allocated(transport, 600);
        bind_channel(&mut c, ms(0), peer());
        let frame = [0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0];
        let mut got = Vec::new();
        // On a stream, split anywhere; on UDP, one datagram (padding ignored).
        if transport == Transport::Tcp {
            for piece in frame.chunks(3) {
                c.handle_input_with(ms(1), piece, |p, d| got.push((p, d.to_vec())));
            }
        } else {
            c.handle_input_with(ms(1), &frame, |p, d| got.push((p, d.to_vec())));
        }
        assert_eq!(got, vec![(peer(), vec![1, 2, 3])]);
        assert!(
            events(&mut c).is_empty(),
            "no Data event when a callback takes it"
        );
    }
}

/// A 300 answer to `req` naming `alt`, signed under `key` when given.
fn try_alternate(req: &[u8], alt: SocketAddr, key: Option<&[u8]>) -> Vec<u8> {
    let req = parse(req);
    let mut b = MessageBuilder::response_to(&req, Class::Error);
    b.add_error_code(300, "Try Alternate");
    b.add_address(attr::ALTERNATE_SERVER, alt);
    if let Some(k) = key {
        b.add_integrity_sha1(k);
    }
    b.finish()
}

#[test]
fn an_unsigned_300_to_an_authenticated_allocate_is_ignored() {
    // RFC 8489 §9.2.5: an answer to an authenticated request that fails integrity is
    // discarded, so an off-path attacker cannot redirect a client that holds credentials.
    let mut c = client(Transport::Udp);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(ms(10), &challenge(&req, 401, "nonce-1", None));
    let req = one_transmit(&mut c);
    let alt: SocketAddr = "192.0.2.99:3478".parse().unwrap();
    c.handle_input(ms(20), &try_alternate(&req, alt, None));
    assert!(events(&mut c).is_empty());
    assert_eq!(c.server(), server());
    // Signed, it is followed: the same Allocate, with the same credentials, to `alt`.
    c.handle_input(ms(30), &try_alternate(&req, alt, Some(&md5_key())));
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Redirected {
            from: server(),
            to: alt,
            domain: None
        }]
    );
    assert_eq!(c.server(), alt);
    let again = one_transmit(&mut c);
    let m = parse(&again);
    assert_eq!(m.method(), Method::ALLOCATE);
    assert_eq!(text(&m, attr::NONCE), "nonce-1");
}

#[test]
fn a_redirect_over_a_stream_starts_a_new_framing() {
    let mut c = client(Transport::Tcp);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(ms(5), &challenge(&req, 401, "nonce-1", None));
    let req = one_transmit(&mut c);
    let alt: SocketAddr = "192.0.2.99:3478".parse().unwrap();
    // The signed 300, and in the same read the start of something more from the old
    // connection.
    let mut answer = try_alternate(&req, alt, Some(&md5_key()));
    answer.extend_from_slice(&[0x01, 0x01, 0x00]);
    c.handle_input(ms(10), &answer);
    assert!(matches!(
        events(&mut c).as_slice(),
        [ClientEvent::Redirected { to, .. }] if *to == alt
    ));
    let again = one_transmit(&mut c);
    // The new connection's bytes are framed from scratch: a 401 split in two arrives whole.
    let ch = challenge(&again, 401, "nonce-2", None);
    c.handle_input(ms(20), &ch[..7]);
    c.handle_input(ms(21), &ch[7..]);
    let retried = one_transmit(&mut c);
    assert_eq!(text(&parse(&retried), attr::NONCE), "nonce-2");
}

#[test]
fn an_unsigned_300_to_an_unauthenticated_allocate_fails_it() {
    // Nothing vouches for an unsigned 300: following it would let anyone on the path send
    // the client (and its credentials' next use) to a server of their choosing.
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut c = client(transport);
        c.allocate(ms(0));
        let req = one_transmit(&mut c);
        let alt: SocketAddr = "192.0.2.99:3478".parse().unwrap();
        c.handle_input(ms(10), &try_alternate(&req, alt, None));
        let evs = events(&mut c);
        assert!(
            evs.iter()
                .any(|e| matches!(e, ClientEvent::AllocateFailed { code: 300, .. })),
            "{evs:?}"
        );
        assert!(!evs
            .iter()
            .any(|e| matches!(e, ClientEvent::Redirected { .. })));
        assert_eq!(c.server(), server());
        assert_eq!(c.state(), ClientState::Failed);
    }
}

/// `c` (authenticated, nonce-1) sends an Allocate at `now`, answered with a signed 300
/// naming `alt`; the client's events.
fn redirected_at(c: &mut Client, now: Instant, alt: SocketAddr) -> Vec<ClientEvent> {
    while c.poll_transmit().is_some() {}
    c.allocate(now);
    let req = one_transmit(c);
    c.handle_input(now, &try_alternate(&req, alt, Some(&md5_key())));
    events(c)
}

#[test]
fn a_server_tried_within_five_minutes_is_not_redirected_to_again() {
    let mut c = client(Transport::Udp);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(ms(10), &challenge(&req, 401, "nonce-1", None));
    let req = one_transmit(&mut c);
    let b: SocketAddr = "192.0.2.99:3478".parse().unwrap();
    c.handle_input(ms(20), &try_alternate(&req, b, Some(&md5_key())));
    assert_eq!(c.server(), b);
    // B fails the attempt with 508; a minute later a new attempt goes to B, which names A:
    // A was tried a minute ago (RFC 8489 §10), so the redirect is not followed.
    let req = one_transmit(&mut c);
    let req = parse(&req);
    let mut full = MessageBuilder::response_to(&req, Class::Error);
    full.add_error_code(508, "Insufficient Capacity");
    full.add_integrity_sha1(&md5_key());
    c.handle_input(ms(30), &full.finish());
    assert!(events(&mut c)
        .iter()
        .any(|e| matches!(e, ClientEvent::AllocateFailed { code: 508, .. })));
    let evs = redirected_at(&mut c, ms(60_000), server());
    assert!(
        evs.iter()
            .any(|e| matches!(e, ClientEvent::AllocateFailed { code: 300, .. })),
        "{evs:?}"
    );
    assert_eq!(c.server(), b);
    // Five minutes after A was last tried, it may be tried again.
    let evs = redirected_at(&mut c, ms(20 + 300_000), server());
    assert!(
        evs.contains(&ClientEvent::Redirected {
            from: b,
            to: server(),
            domain: None
        }),
        "{evs:?}"
    );
}

#[test]
fn the_servers_tried_are_bounded() {
    // Redirected round many servers, each a minute apart: the client remembers at most
    // TRIED_MAX, so the memory stays bounded however long it runs.
    let mut c = client(Transport::Udp);
    c.allocate(ms(0));
    let req = one_transmit(&mut c);
    c.handle_input(ms(10), &challenge(&req, 401, "nonce-1", None));
    one_transmit(&mut c);
    for i in 0..(3 * super::redirect::TRIED_MAX as u64) {
        let alt = SocketAddr::new([192, 0, 2, 100 + i as u8].into(), 3478);
        let evs = redirected_at(&mut c, ms(1_000 + i), alt);
        assert!(
            evs.iter()
                .any(|e| matches!(e, ClientEvent::Redirected { to, .. } if *to == alt)),
            "{i}: {evs:?}"
        );
        assert!(c.tried.len() <= super::redirect::TRIED_MAX);
    }
}
