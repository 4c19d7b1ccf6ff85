//! Malformed and hostile STUN over UDP against the real binary: each case asserts the exact
//! answer, or that there is none (RFC 8489 §6.3: a message that is not valid STUN is
//! discarded silently; a valid request with an unknown comprehension-required attribute
//! gets 420; a request with a malformed attribute gets 400).

use std::net::{IpAddr, Ipv4Addr};
use turnpike_tests::adversary::{self, Reply, Session, MESSAGE_INTEGRITY, SOFTWARE};
use turnpike_tests::turn::{self, Class, Message, BINDING, CREATE_PERMISSION, USERNAME};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn binding() -> Message {
    Message::request(BINDING)
}

/// Rewrites the length field of an encoded message.
fn with_length(mut b: Vec<u8>, len: u16) -> Vec<u8> {
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// A Binding request whose body is `body` verbatim (length set to match).
fn binding_with_body(body: &[u8]) -> Vec<u8> {
    let mut b = binding().encode(None, false);
    b.extend_from_slice(body);
    let len = (b.len() - 20) as u16;
    with_length(b, len)
}

/// One unauthenticated case: what is sent, and the exact reply.
fn unauthenticated_cases() -> Vec<(&'static str, Vec<u8>, Reply)> {
    let ok = binding().encode(None, true);
    let mut bad_cookie = ok.clone();
    bad_cookie[4] ^= 0x01;
    let mut bad_fingerprint = ok.clone();
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 0x01;
    let many: Vec<u8> = (0..500).flat_map(|_| [0x80, 0x22, 0, 0]).collect();
    let mut response = binding();
    response.class = Class::Success;
    let mut indication = binding();
    indication.class = Class::Indication;
    let mut dup = binding();
    dup.add(SOFTWARE, b"one").add(SOFTWARE, b"two");
    let mut unknown_required = binding();
    unknown_required.add(0x0031, b"????");
    let mut unknown_optional = binding();
    unknown_optional.add(0xC0DE, b"????");
    let mut zero_len = binding();
    zero_len.add(SOFTWARE, b"");
    vec![
        ("a valid Binding request", ok.clone(), Reply::Success),
        ("empty datagram", Vec::new(), Reply::Nothing),
        ("shorter than a header", ok[..10].to_vec(), Reply::Nothing),
        (
            "header only, length claims 8",
            with_length(ok[..20].to_vec(), 8),
            Reply::Nothing,
        ),
        ("wrong magic cookie", bad_cookie, Reply::Nothing),
        (
            "length not a multiple of 4",
            with_length(ok.clone(), 6),
            Reply::Nothing,
        ),
        (
            "length beyond the datagram",
            with_length(ok.clone(), 400),
            Reply::Nothing,
        ),
        (
            "length short of the datagram",
            with_length(ok.clone(), 0),
            Reply::Nothing,
        ),
        (
            "attribute overrunning the message",
            binding_with_body(&[0x80, 0x22, 0, 40, 1, 2, 3, 4]),
            Reply::Nothing,
        ),
        (
            "attribute length 0xFFFF",
            binding_with_body(&[0x80, 0x22, 0xFF, 0xFF, 1, 2, 3, 4]),
            Reply::Nothing,
        ),
        (
            "attribute of length 0",
            zero_len.encode(None, true),
            Reply::Success,
        ),
        ("500 attributes", binding_with_body(&many), Reply::Nothing),
        (
            "duplicate attributes",
            dup.encode(None, true),
            Reply::Success,
        ),
        (
            "unknown comprehension-required attribute",
            unknown_required.encode(None, true),
            Reply::Error(420),
        ),
        (
            "unknown comprehension-optional attribute",
            unknown_optional.encode(None, true),
            Reply::Success,
        ),
        ("bad FINGERPRINT", bad_fingerprint, Reply::Nothing),
        (
            "FINGERPRINT not last",
            {
                let mut b = ok.clone();
                b.extend_from_slice(&[0x80, 0x22, 0, 4, b'x', b'x', b'x', b'x']);
                let len = (b.len() - 20) as u16;
                with_length(b, len)
            },
            Reply::Nothing,
        ),
        (
            "MESSAGE-INTEGRITY of 10 bytes",
            binding_with_body(&[0, 8, 0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0]),
            Reply::Nothing,
        ),
        (
            "a success response sent to the server",
            response.encode(None, true),
            Reply::Nothing,
        ),
        (
            "a Binding indication",
            indication.encode(None, true),
            Reply::Nothing,
        ),
        (
            "ChannelData-looking junk",
            vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4],
            Reply::Nothing,
        ),
        ("first bits 0b10", vec![0x80; 28], Reply::Nothing),
    ]
}

#[test]
fn malformed_stun_gets_the_exact_answer_or_none() {
    let Some(mut server) = adversary::start(&[]) else {
        return;
    };
    let mut s = Session::udp(server.addr, LOCAL);
    let mut wrong = Vec::new();
    for (what, bytes, want) in unauthenticated_cases() {
        let got = s.raw(&bytes);
        if got != want {
            wrong.push(format!("{what}: {got:?}, not {want:?}"));
        }
    }
    server.assert_running();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn malformed_attributes_in_authenticated_requests_are_400() {
    // Documentation addresses are denied by default; this test names one as a good peer.
    let Some(mut server) = adversary::start(&[("allowed_peer_ip", r#"["198.51.100.0/24"]"#)])
    else {
        return;
    };
    let mut s = Session::udp(server.addr, LOCAL);
    s.allocate();
    let xor_peer = |family: u8, len: usize| {
        let mut v = vec![
            0,
            family,
            0x21,
            0x12,
            198 ^ 0x21,
            51 ^ 0x12,
            100 ^ 0xA4,
            1 ^ 0x42,
        ];
        v.resize(len, 0);
        v
    };
    let cases: Vec<(&str, Vec<u8>, Reply)> = vec![
        (
            "XOR-PEER-ADDRESS family 3",
            xor_peer(3, 8),
            Reply::Error(400),
        ),
        (
            "XOR-PEER-ADDRESS truncated",
            xor_peer(1, 6),
            Reply::Error(400),
        ),
        (
            "XOR-PEER-ADDRESS IPv4 with IPv6 length",
            xor_peer(1, 20),
            Reply::Error(400),
        ),
        ("XOR-PEER-ADDRESS empty", Vec::new(), Reply::Error(400)),
    ];
    let mut wrong = Vec::new();
    for (what, value, want) in cases {
        let mut m = Message::request(CREATE_PERMISSION);
        m.add(turn::XOR_PEER_ADDRESS, &value);
        let got = s.signed(&m);
        if got != want {
            wrong.push(format!("{what}: {got:?}, not {want:?}"));
        }
    }
    // A well-formed one still works afterwards.
    assert_eq!(
        s.create_permission("198.51.100.1:5000".parse().expect("an address")),
        Reply::Success
    );
    server.assert_running();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn hostile_usernames_are_refused() {
    let Some(mut server) = adversary::start(&[]) else {
        return;
    };
    let mut s = Session::udp(server.addr, LOCAL);
    s.learn_nonce();
    let realm = s.realm.clone().expect("a realm");
    let nonce = s.nonce.clone().expect("a nonce");
    let signed_with_username = |name: &[u8]| {
        let mut m = Message::request(turn::ALLOCATE);
        m.add(turn::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(USERNAME, name)
            .add(turn::REALM, realm.as_bytes())
            .add(turn::NONCE, &nonce);
        m.encode(Some(b"whatever key"), true)
    };
    let cases: Vec<(&str, Vec<u8>, Reply)> = vec![
        // RFC 8489 §14.3: USERNAME is at most 509 bytes (here 513, padded).
        (
            "USERNAME of 513 bytes",
            signed_with_username(&[b'a'; 513]),
            Reply::Error(400),
        ),
        (
            "USERNAME of invalid UTF-8",
            signed_with_username(&[0xC3, 0x28, 0xFF]),
            Reply::Error(400),
        ),
        (
            "unknown USERNAME",
            signed_with_username(b"nobody"),
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
    // MESSAGE-INTEGRITY present but the request is otherwise unsigned garbage: 400 or 401,
    // never success.
    let mut m = Message::request(turn::ALLOCATE);
    m.add(turn::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .add(MESSAGE_INTEGRITY, &[0; 20]);
    let got = s.raw(&m.encode(None, true));
    assert!(
        matches!(got, Reply::Error(400) | Reply::Error(401)),
        "{got:?}"
    );
    server.assert_running();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
