//! ChannelData abuse (RFC 8656 §12) and authentication attacks (RFC 8489 §9.2) against the
//! real binary: every case asserts the exact answer, or that nothing was answered and
//! nothing reached the peer.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use turnpike_tests::adversary::{self, channel_data, Reply, Session, Sink};
use turnpike_tests::turn::{self, Message};
use turnpike_tests::{rest_password, rest_username, unix_now_s};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The loopback sink peers are allowed explicitly (loopback is denied by default).
const ALLOW_SINK: (&str, &str) = ("allowed_peer_ip", r#"["127.0.0.1/32"]"#);
const SECRET: &str = "rest-secret-for-tests";

#[test]
fn channel_data_abuse_is_dropped_and_reaches_nothing() {
    let Some(mut server) = adversary::start(&[ALLOW_SINK]) else {
        return;
    };
    let (a, b) = (Sink::new(), Sink::new());
    let mut s = Session::udp(server.addr, LOCAL);
    s.allocate();
    assert_eq!(s.channel_bind(0x4000, a.addr()), Reply::Success);
    // The positive control: a bound channel relays the exact payload.
    s.send(&channel_data(0x4000, b"hello", false));
    assert_eq!(
        a.received(Duration::from_millis(500)),
        vec![b"hello".to_vec()]
    );

    let mut long = channel_data(0x4000, b"abcd", false);
    long[3] = 200; // length beyond the payload
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "channel 0x3FFF (below the range)",
            channel_data(0x3FFF, b"x", false),
        ),
        (
            "channel 0x8000 (above the range)",
            channel_data(0x8000, b"x", false),
        ),
        ("channel 0xFFFF", channel_data(0xFFFF, b"x", false)),
        ("length beyond the payload", long),
        ("header only, length 4", vec![0x40, 0x00, 0x00, 0x04]),
        ("unbound channel 0x4001", channel_data(0x4001, b"x", false)),
        ("shorter than a header", vec![0x40, 0x00, 0x00]),
    ];
    for (what, bytes) in cases {
        assert_eq!(s.raw(&bytes), Reply::Nothing, "{what}");
    }
    assert!(a.received(Duration::from_millis(200)).is_empty());
    // RFC 8656 §12.2: a channel stays bound to its peer, a peer to its channel.
    assert_eq!(
        s.channel_bind(0x4000, b.addr()),
        Reply::Error(400),
        "rebinding 0x4000 to another peer"
    );
    assert_eq!(
        s.channel_bind(0x4001, a.addr()),
        Reply::Error(400),
        "a second channel for the same peer"
    );
    assert_eq!(
        s.channel_bind(0x4000, a.addr()),
        Reply::Success,
        "refreshing the same binding"
    );
    assert!(b.received(Duration::from_millis(200)).is_empty());
    server.assert_running();
}

#[test]
fn authentication_attacks_get_the_rfc_answers() {
    let secret = format!("\"{SECRET}\"");
    let Some(mut server) = adversary::start(&[("static_auth_secret", secret.as_str())]) else {
        return;
    };
    let alloc = || {
        let mut m = Message::request(turn::ALLOCATE);
        m.add(turn::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        m
    };
    let mut s = Session::udp(server.addr, LOCAL);
    s.learn_nonce();
    let realm = s.realm.clone().expect("a realm");
    let nonce = s.nonce.clone().expect("a nonce");
    let key = s.key();
    let with_creds = |user: &str, realm: &str, nonce: &[u8], key: Option<&[u8]>| {
        let mut m = alloc();
        m.add(turn::USERNAME, user.as_bytes())
            .add(turn::REALM, realm.as_bytes())
            .add(turn::NONCE, nonce);
        m.encode(key, true)
    };
    let rest_key = |user: &str| turn::long_term_key(user, &realm, &rest_password(SECRET, user));
    let expired = rest_username("eve", unix_now_s() - 60);
    let far = rest_username("eve", unix_now_s() + 10 * 365 * 24 * 3600);
    let mut forged = nonce.clone();
    if let Some(last) = forged.last_mut() {
        *last = if *last == b'A' { b'B' } else { b'A' };
    }
    let cases: Vec<(&str, Vec<u8>, Reply)> = vec![
        (
            "no credentials at all",
            alloc().encode(None, true),
            Reply::Error(401),
        ),
        (
            // RFC 8489 §9.2.4: no integrity attribute is a 401, whatever else is there.
            "USERNAME but no MESSAGE-INTEGRITY",
            with_creds(adversary::USER, &realm, &nonce, None),
            Reply::Error(401),
        ),
        (
            "wrong password",
            with_creds(adversary::USER, &realm, &nonce, Some(b"0123456789abcdef")),
            Reply::Error(401),
        ),
        (
            "unknown user",
            with_creds("nobody", &realm, &nonce, Some(&key)),
            Reply::Error(401),
        ),
        (
            "wrong realm",
            with_creds(adversary::USER, "evil.example", &nonce, Some(&key)),
            Reply::Error(401),
        ),
        (
            "forged nonce",
            with_creds(adversary::USER, &realm, &forged, Some(&key)),
            Reply::Error(438),
        ),
        (
            "nonce of another format",
            with_creds(adversary::USER, &realm, b"0123456789", Some(&key)),
            Reply::Error(438),
        ),
        (
            "expired REST username",
            with_creds(&expired, &realm, &nonce, Some(&rest_key(&expired))),
            Reply::Error(401),
        ),
        (
            "far-future REST username",
            with_creds(&far, &realm, &nonce, Some(&rest_key(&far))),
            Reply::Error(401),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, bytes, want) in cases {
        let got = s.raw(&bytes);
        if got != want {
            wrong.push(format!("{what}: {got:?}, not {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A nonce issued to one address is stale from another (replay from elsewhere).
    let mut other = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 23)));
    assert_eq!(
        other.raw(&with_creds(adversary::USER, &realm, &nonce, Some(&key))),
        Reply::Error(438)
    );
    // A replayed request (same bytes, same transaction) is answered from the cache with
    // the same answer; it creates nothing new.
    let signed = with_creds(adversary::USER, &realm, &nonce, Some(&key));
    assert_eq!(s.raw(&signed), Reply::Success);
    assert_eq!(s.raw(&signed), Reply::Success);
    // A new transaction with the same credentials: the 5-tuple already has an allocation.
    let again = with_creds(adversary::USER, &realm, &nonce, Some(&key));
    assert_eq!(s.raw(&again), Reply::Error(437));
    server.wait_event(Duration::from_secs(3), |e| {
        e["event"] == "allocation_created"
    });
    let created = server
        .events()
        .into_iter()
        .filter(|e| e["event"] == "allocation_created")
        .count();
    assert_eq!(created, 1);
    server.assert_running();
}
