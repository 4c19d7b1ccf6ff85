//! The STUN test vectors of RFC 5769 §2, and RFC 8489 Appendix B.1, run through the codec:
//! parse, decode every field, verify MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT, and build
//! the same messages again byte for byte.
//!
//! The vectors are copied from the RFCs (Copyright (c) 2010, 2020 IETF Trust and the
//! persons identified as the document authors; Simplified BSD License).

use md5::{Digest, Md5};
use sha2::Sha256;
use std::net::SocketAddr;
use turnpike_core::stun::{
    attr, Class, DecodeError, IntegrityKind, Message, MessageBuilder, Method, TransactionId,
};

/// Hex as the RFCs print it (spaces, line breaks) to bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// RFC 5769 §2.1 "Sample Request": Binding request, short-term credentials. SOFTWARE
/// needs no padding; USERNAME "evtj:h6vY" is padded with three spaces.
const SAMPLE_REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// RFC 5769 §2.2 "Sample IPv4 Response": SOFTWARE "test vector" padded with one space.
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// RFC 5769 §2.3 "Sample IPv6 Response".
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

/// RFC 5769 §2.4 "Sample Request with Long-Term Authentication": no FINGERPRINT, zero
/// padding.
const SAMPLE_LONG_TERM_REQUEST: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
                53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

/// RFC 8489 Appendix B.1 exactly as published. Its length field says 0x9c (156) but the
/// attributes shown add up to 136 bytes: the PASSWORD-ALGORITHM attribute the text implies
/// is missing, and the HMAC does not match the bytes shown. The IETF errata for RFC 8489
/// Appendix B.1 correct it; see `B1_CORRECTED`.
const B1_AS_PUBLISHED: &str = "
    00 01 00 9c 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 1e 00 20 4a 3c f3 8f ef 69 92 bd a9 52 c6 78 04 17 da 0f
                24 81 94 15 56 9e 60 b2 05 c4 6e 41 40 7f 17 04
    00 15 00 29 6f 62 4d 61 74 4a 6f 73 32 41 41 41 43 66 2f 2f
                34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39
                46 53 54 76 79 36 34 73 41 00 00 00
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 1c 00 20 e4 68 6c 8f 0e de b5 90 13 e0 70 90 01 0a 93 ef
                cc bc cc 54 4c 0a 45 d9 f8 30 aa 6d 6f 73 5a 01";

/// RFC 8489 Appendix B.1 as the errata correct it: PASSWORD-ALGORITHM (SHA-256) added
/// before MESSAGE-INTEGRITY-SHA256, length 0x90, and the HMAC-SHA256 recomputed with the
/// SHA-256 long-term key, SHA-256("username:realm:password") (RFC 8489 §9.2.2).
const B1_CORRECTED: &str = "
    00 01 00 90 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 1e 00 20 4a 3c f3 8f ef 69 92 bd a9 52 c6 78 04 17 da 0f
                24 81 94 15 56 9e 60 b2 05 c4 6e 41 40 7f 17 04
    00 15 00 29 6f 62 4d 61 74 4a 6f 73 32 41 41 41 43 66 2f 2f
                34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39
                46 53 54 76 79 36 34 73 41 00 00 00
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 1d 00 04 00 02 00 00
    00 1c 00 20 b5 c7 bf 00 5b 6c 52 a2 1c 51 c5 e8 92 f8 19 24
                13 62 96 cb 92 7c 43 14 93 09 27 8c c6 51 8e 65";

/// Transaction ID of §2.1–2.3.
const TID_SHORT_TERM: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];
/// Transaction ID of §2.4 and RFC 8489 B.1.
const TID_LONG_TERM: [u8; 12] = [
    0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e,
];

/// The short-term password of §2.1–2.3; the key is the password itself.
const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
/// "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>": the long-term username of §2.4 and B.1.
const LONG_TERM_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// The long-term password after SASLprep / OpaqueString ("The<U+00AD>M<U+00AA>tr<U+2168>").
const LONG_TERM_PASSWORD: &str = "TheMatrIX";
const REALM: &str = "example.org";

/// RFC 8489 §9.2.2 (MD5 algorithm, the RFC 5389 key): MD5(username ":" realm ":" password).
fn md5_key() -> Vec<u8> {
    Md5::digest(format!("{LONG_TERM_USERNAME}:{REALM}:{LONG_TERM_PASSWORD}")).to_vec()
}

/// RFC 8489 §9.2.2 (SHA-256 algorithm): SHA-256(username ":" realm ":" password).
fn sha256_key() -> Vec<u8> {
    Sha256::digest(format!("{LONG_TERM_USERNAME}:{REALM}:{LONG_TERM_PASSWORD}")).to_vec()
}

fn text(msg: &Message<'_>, ty: u16) -> String {
    let value = msg.get(ty).expect("attribute present");
    attr::decode_text(value, ty, attr::MAX_USERNAME_LEN)
        .expect("valid text")
        .to_owned()
}

#[test]
fn rfc5769_2_1_sample_request_parses_and_verifies() {
    let bytes = hex(SAMPLE_REQUEST);
    assert_eq!(bytes.len(), 108);
    let msg = Message::parse(&bytes).expect("parses");
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.transaction_id(), TransactionId(TID_SHORT_TERM));
    assert_eq!(text(&msg, attr::SOFTWARE), "STUN test client");
    assert_eq!(text(&msg, attr::USERNAME), "evtj:h6vY");
    assert_eq!(
        attr::decode_u32(msg.get(attr::PRIORITY).unwrap()),
        Ok(0x6e00_01ff)
    );
    assert_eq!(
        msg.get(attr::ICE_CONTROLLED),
        Some(&[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36][..])
    );
    let types: Vec<u16> = msg.attributes().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            attr::SOFTWARE,
            attr::PRIORITY,
            attr::ICE_CONTROLLED,
            attr::USERNAME,
            attr::MESSAGE_INTEGRITY
        ]
    );
    assert_eq!(msg.integrity(), Some(IntegrityKind::Sha1));
    assert!(msg.check_integrity_sha1(SHORT_TERM_PASSWORD));
    assert!(!msg.check_integrity_sha1(b"VOkJxbRl1RmTxUk/WvJxBT"));
    assert!(!msg.check_integrity_sha256(SHORT_TERM_PASSWORD));
    assert!(msg.has_fingerprint());
}

#[test]
fn rfc5769_2_1_sample_request_is_rebuilt_byte_for_byte() {
    let mut b = MessageBuilder::new(
        Method::BINDING,
        Class::Request,
        TransactionId(TID_SHORT_TERM),
    );
    b.add(attr::SOFTWARE, b"STUN test client")
        .add_u32(attr::PRIORITY, 0x6e00_01ff)
        .add(
            attr::ICE_CONTROLLED,
            &[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36],
        )
        // The RFC pads with spaces; padding is covered by the HMAC and the CRC.
        .add_padded(attr::USERNAME, b"evtj:h6vY", b' ')
        .add_integrity_sha1(SHORT_TERM_PASSWORD)
        .add_fingerprint();
    assert_eq!(b.finish(), hex(SAMPLE_REQUEST));
}

#[test]
fn rfc5769_2_2_ipv4_response_parses_and_verifies() {
    let bytes = hex(SAMPLE_IPV4_RESPONSE);
    let msg = Message::parse(&bytes).expect("parses");
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(msg.transaction_id(), TransactionId(TID_SHORT_TERM));
    assert_eq!(text(&msg, attr::SOFTWARE), "test vector");
    let mapped = attr::decode_xor_address(
        msg.get(attr::XOR_MAPPED_ADDRESS).unwrap(),
        &msg.transaction_id(),
    );
    assert_eq!(mapped, Ok("192.0.2.1:32853".parse().unwrap()));
    assert!(msg.check_integrity_sha1(SHORT_TERM_PASSWORD));
    assert!(!msg.check_integrity_sha1(b"wrong"));
    assert!(msg.has_fingerprint());
}

#[test]
fn rfc5769_2_2_ipv4_response_is_rebuilt_byte_for_byte() {
    let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(build_response(addr), hex(SAMPLE_IPV4_RESPONSE));
}

#[test]
fn rfc5769_2_3_ipv6_response_parses_and_verifies() {
    let bytes = hex(SAMPLE_IPV6_RESPONSE);
    let msg = Message::parse(&bytes).expect("parses");
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(text(&msg, attr::SOFTWARE), "test vector");
    let mapped = attr::decode_xor_address(
        msg.get(attr::XOR_MAPPED_ADDRESS).unwrap(),
        &msg.transaction_id(),
    );
    assert_eq!(
        mapped,
        Ok("[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap())
    );
    assert!(msg.check_integrity_sha1(SHORT_TERM_PASSWORD));
    assert!(!msg.check_integrity_sha1(b"VOkJxbRl1RmTxUk/WvJxB"));
    assert!(msg.has_fingerprint());
}

#[test]
fn rfc5769_2_3_ipv6_response_is_rebuilt_byte_for_byte() {
    let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(build_response(addr), hex(SAMPLE_IPV6_RESPONSE));
}

#[test]
fn rfc5769_2_4_long_term_request_parses_and_verifies() {
    let bytes = hex(SAMPLE_LONG_TERM_REQUEST);
    let msg = Message::parse(&bytes).expect("parses");
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.transaction_id(), TransactionId(TID_LONG_TERM));
    assert_eq!(text(&msg, attr::USERNAME), LONG_TERM_USERNAME);
    assert_eq!(text(&msg, attr::NONCE), "f//499k954d6OL34oL9FSTvy64sA");
    assert_eq!(text(&msg, attr::REALM), REALM);
    assert!(!msg.has_fingerprint());
    assert!(msg.check_integrity_sha1(&md5_key()));
    // The password before SASLprep is not the key's input.
    let unprepared = Md5::digest(format!(
        "{LONG_TERM_USERNAME}:{REALM}:The\u{00AD}M\u{00AA}tr\u{2168}"
    ));
    assert!(!msg.check_integrity_sha1(&unprepared));
    assert!(!msg.check_integrity_sha1(SHORT_TERM_PASSWORD));
}

#[test]
fn rfc5769_2_4_long_term_request_is_rebuilt_byte_for_byte() {
    let mut b = MessageBuilder::new(
        Method::BINDING,
        Class::Request,
        TransactionId(TID_LONG_TERM),
    );
    b.add(attr::USERNAME, LONG_TERM_USERNAME.as_bytes())
        .add(attr::NONCE, b"f//499k954d6OL34oL9FSTvy64sA")
        .add(attr::REALM, REALM.as_bytes())
        .add_integrity_sha1(&md5_key());
    assert_eq!(b.finish(), hex(SAMPLE_LONG_TERM_REQUEST));
}

#[test]
fn rfc8489_b1_as_published_is_rejected_for_its_length() {
    // The length field announces 20 bytes more than the message holds.
    assert_eq!(
        Message::parse(&hex(B1_AS_PUBLISHED)).err(),
        Some(DecodeError::TooShort)
    );
    // Even with the length made to fit, its HMAC matches neither long-term key: the value
    // printed is not the HMAC of the bytes printed (hence the errata).
    let mut bytes = hex(B1_AS_PUBLISHED);
    bytes[3] = 0x88;
    let msg = Message::parse(&bytes).expect("parses once the length fits");
    assert_eq!(msg.integrity(), Some(IntegrityKind::Sha256));
    assert!(!msg.check_integrity_sha256(&sha256_key()));
    assert!(!msg.check_integrity_sha256(&md5_key()));
}

#[test]
fn rfc8489_b1_corrected_parses_and_verifies() {
    let bytes = hex(B1_CORRECTED);
    let msg = Message::parse(&bytes).expect("parses");
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.transaction_id(), TransactionId(TID_LONG_TERM));
    // RFC 8489 §14.4: USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm)).
    let userhash = Sha256::digest(format!("{LONG_TERM_USERNAME}:{REALM}"));
    assert_eq!(msg.get(attr::USERHASH), Some(&userhash[..]));
    assert_eq!(
        text(&msg, attr::NONCE),
        "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"
    );
    assert_eq!(text(&msg, attr::REALM), REALM);
    assert_eq!(
        attr::decode_password_algorithm(msg.get(attr::PASSWORD_ALGORITHM).unwrap()),
        Ok((attr::PASSWORD_ALGORITHM_SHA256, &[][..]))
    );
    assert_eq!(msg.integrity(), Some(IntegrityKind::Sha256));
    assert!(msg.check_integrity_sha256(&sha256_key()));
    // The MD5 key (what the SHA-256 algorithm replaces) does not verify it.
    assert!(!msg.check_integrity_sha256(&md5_key()));
    assert!(!msg.check_integrity_sha1(&sha256_key()));
    assert!(!msg.has_fingerprint());
}

#[test]
fn rfc8489_b1_corrected_is_rebuilt_byte_for_byte() {
    let userhash = Sha256::digest(format!("{LONG_TERM_USERNAME}:{REALM}"));
    let mut b = MessageBuilder::new(
        Method::BINDING,
        Class::Request,
        TransactionId(TID_LONG_TERM),
    );
    b.add(attr::USERHASH, &userhash)
        .add(attr::NONCE, b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
        .add(attr::REALM, REALM.as_bytes())
        .add_password_algorithm(attr::PASSWORD_ALGORITHM_SHA256)
        .add_integrity_sha256(&sha256_key());
    assert_eq!(b.finish(), hex(B1_CORRECTED));
}

/// The responses of §2.2 and §2.3: SOFTWARE padded with a space, XOR-MAPPED-ADDRESS,
/// MESSAGE-INTEGRITY, FINGERPRINT.
fn build_response(addr: SocketAddr) -> Vec<u8> {
    let request_bytes = hex(SAMPLE_REQUEST);
    let request = Message::parse(&request_bytes).unwrap();
    let mut b = MessageBuilder::response_to(&request, Class::Success);
    b.add_padded(attr::SOFTWARE, b"test vector", b' ')
        .add_xor_address(attr::XOR_MAPPED_ADDRESS, addr)
        .add_integrity_sha1(SHORT_TERM_PASSWORD)
        .add_fingerprint();
    b.finish()
}
