//! STUN decoding (RFC 8489 §5, §14): `Message::parse` on arbitrary bytes, every attribute
//! decoder on every visible attribute value, and a round trip through `MessageBuilder`
//! (the visible attributes rebuilt into a new message parse back to the same list).
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_core::stun::{attr, is_stun, Message, MessageBuilder, TransactionId};

fuzz_target!(|data: &[u8]| {
    let looks_like_stun = is_stun(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert!(looks_like_stun, "parse accepted what is_stun refused");
    let tid = msg.transaction_id();
    let _ = (msg.method().name(), msg.class(), msg.integrity());
    let _ = msg.has_fingerprint();
    let _ = msg.unknown_required(|t| t <= attr::CONNECTION_ID);
    let _ = msg.check_integrity_sha1(b"fuzz-key");
    let _ = msg.check_integrity_sha256(b"fuzz-key");

    let mut rebuilt = MessageBuilder::new(msg.method(), msg.class(), tid);
    for (ty, value) in msg.attributes() {
        decode_every_way(ty, value, &tid);
        rebuilt.add(ty, value);
    }
    let bytes = rebuilt.finish();
    let again = Message::parse(&bytes).expect("a message rebuilt from visible attributes parses");
    assert_eq!(again.method(), msg.method());
    assert_eq!(again.class(), msg.class());
    assert_eq!(again.transaction_id(), tid);
    assert!(
        again.attributes().eq(msg.attributes()),
        "rebuilt attributes differ"
    );
});

/// Runs every decoder on `value` whatever its type (they must refuse, never panic), and
/// checks that decoded addresses encode back to the same address.
fn decode_every_way(ty: u16, value: &[u8], tid: &TransactionId) {
    if let Ok(addr) = attr::decode_xor_address(value, tid) {
        let mut b = MessageBuilder::new(
            turnpike_core::stun::Method::BINDING,
            turnpike_core::stun::Class::Success,
            *tid,
        );
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, addr);
        let m = b.finish();
        let back = Message::parse(&m)
            .ok()
            .and_then(|m| m.get(attr::XOR_MAPPED_ADDRESS))
            .and_then(|v| attr::decode_xor_address(v, tid).ok());
        assert_eq!(back, Some(addr), "XOR address round trip");
    }
    if let Ok(addr) = attr::decode_address(value) {
        let mut b = MessageBuilder::new(
            turnpike_core::stun::Method::BINDING,
            turnpike_core::stun::Class::Success,
            *tid,
        );
        b.add_address(attr::MAPPED_ADDRESS, addr);
        let m = b.finish();
        let back = Message::parse(&m)
            .ok()
            .and_then(|m| m.get(attr::MAPPED_ADDRESS))
            .and_then(|v| attr::decode_address(v).ok());
        assert_eq!(back, Some(addr), "address round trip");
    }
    let _ = attr::decode_u32(value);
    if let Ok((code, reason)) = attr::decode_error_code(value) {
        assert!((300..700).contains(&code));
        assert!(reason.len() <= attr::MAX_TEXT_LEN);
    }
    let _ = attr::decode_requested_transport(value);
    let _ = attr::decode_channel_number(value);
    let _ = attr::decode_family(value);
    let _ = attr::decode_even_port(value);
    let _ = attr::decode_reservation_token(value);
    let _ = attr::decode_password_algorithm(value);
    let mut n = 0usize;
    let _ = attr::decode_password_algorithms(value, |_, _| n += 1);
    assert!(n <= value.len() / 4);
    let _ = attr::decode_text(value, ty, attr::MAX_USERNAME_LEN);
    let _ = (attr::name(ty), attr::is_comprehension_required(ty));
}
