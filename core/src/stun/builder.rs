//! Emitting STUN messages (RFC 8489 §5, §14).

use super::{
    attr, fingerprint, hmac_sha1, hmac_sha256, Class, IntegrityKey, IntegrityKind, Message, Method,
    TransactionId, HEADER_LEN, MAGIC_COOKIE,
};
use std::net::{IpAddr, SocketAddr};

/// Builds one STUN message in an owned buffer. Attributes are padded to 4 bytes; the
/// header's length is kept up to date so integrity and fingerprint come out right.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// A message with this method, class and transaction ID and no attributes.
    pub fn new(method: Method, class: Class, tid: TransactionId) -> Self {
        let mut buf = Vec::with_capacity(INITIAL_CAPACITY);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageBuilder { buf }
    }
    /// A response (`class` is Success or Error) to `request`: same method and transaction ID.
    pub fn response_to(request: &Message<'_>, class: Class) -> Self {
        Self::new(request.method(), class, request.transaction_id())
    }
    /// Appends an attribute with a raw value.
    ///
    /// A value that would push the message past the 65535-byte limit of the length field
    /// is not added (and trips a debug assertion): the builder is fed by our own code, and
    /// a relay must not die on an oversized value.
    pub fn add(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        self.add_padded(ty, value, 0)
    }
    /// Appends an attribute whose padding bytes are `pad` rather than zero. RFC 8489 §14
    /// says padding "MUST be ignored by receivers" and RFC 5389 let senders put anything
    /// there; this reproduces messages (RFC 5769's vectors pad with spaces) byte for byte.
    pub fn add_padded(&mut self, ty: u16, value: &[u8], pad: u8) -> &mut Self {
        let padded = padded_len(value.len());
        let new_len = self.body_len() + 4 + padded;
        let Ok(value_len) = u16::try_from(value.len()) else {
            debug_assert!(false, "attribute value too long for STUN");
            return self;
        };
        if new_len > usize::from(u16::MAX) - 3 {
            debug_assert!(false, "STUN message too long");
            return self;
        }
        self.buf.extend_from_slice(&ty.to_be_bytes());
        self.buf.extend_from_slice(&value_len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len() + padded - value.len(), pad);
        self.set_body_len(new_len);
        self
    }
    /// Appends a 32-bit attribute (LIFETIME...).
    pub fn add_u32(&mut self, ty: u16, value: u32) -> &mut Self {
        self.add(ty, &value.to_be_bytes())
    }
    /// Appends an XOR-…-ADDRESS attribute (RFC 8489 §14.2).
    pub fn add_xor_address(&mut self, ty: u16, addr: SocketAddr) -> &mut Self {
        let mut value = [0u8; MAX_ADDRESS_LEN];
        let n = encode_xor_address(&mut value, addr, &self.transaction_id());
        self.add(ty, value.get(..n).unwrap_or(&[]))
    }
    /// Appends a MAPPED-ADDRESS style attribute (RFC 8489 §14.1).
    pub fn add_address(&mut self, ty: u16, addr: SocketAddr) -> &mut Self {
        let mut value = [0u8; MAX_ADDRESS_LEN];
        let n = encode_address_with(&mut value, addr, [0; 2], &[0; 16]);
        self.add(ty, value.get(..n).unwrap_or(&[]))
    }
    /// Appends ERROR-CODE (RFC 8489 §14.8): class = code / 100, number = code % 100.
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut value = Vec::with_capacity(4 + reason.len());
        value.extend_from_slice(&[0, 0, error_class(code), error_number(code)]);
        value.extend_from_slice(reason.as_bytes());
        self.add(attr::ERROR_CODE, &value)
    }
    /// Appends ADDRESS-ERROR-CODE for `family` (RFC 8656 §18.13): family, 13 reserved bits,
    /// 3-bit class, 8-bit number, reason phrase.
    pub fn add_address_error_code(&mut self, family: u8, code: u16, reason: &str) -> &mut Self {
        let mut value = Vec::with_capacity(4 + reason.len());
        value.extend_from_slice(&[family, 0, error_class(code), error_number(code)]);
        value.extend_from_slice(reason.as_bytes());
        self.add(attr::ADDRESS_ERROR_CODE, &value)
    }
    /// Appends UNKNOWN-ATTRIBUTES (RFC 8489 §14.9).
    pub fn add_unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        let value: Vec<u8> = types.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.add(attr::UNKNOWN_ATTRIBUTES, &value)
    }
    /// Appends PASSWORD-ALGORITHMS with the given algorithms, no parameters (RFC 8489 §14.11).
    pub fn add_password_algorithms(&mut self, algorithms: &[u16]) -> &mut Self {
        let value: Vec<u8> = algorithms
            .iter()
            .flat_map(|a| {
                let [a0, a1] = a.to_be_bytes();
                [a0, a1, 0, 0]
            })
            .collect();
        self.add(attr::PASSWORD_ALGORITHMS, &value)
    }
    /// Appends PASSWORD-ALGORITHM with no parameters (RFC 8489 §14.12).
    pub fn add_password_algorithm(&mut self, algorithm: u16) -> &mut Self {
        let [a0, a1] = algorithm.to_be_bytes();
        self.add(attr::PASSWORD_ALGORITHM, &[a0, a1, 0, 0])
    }
    /// Appends MESSAGE-INTEGRITY computed with `key` (RFC 8489 §14.5): the HMAC covers the
    /// message so far, its length field already counting the MESSAGE-INTEGRITY attribute.
    pub fn add_integrity_sha1(&mut self, key: &[u8]) -> &mut Self {
        let old = self.body_len();
        self.set_body_len(old + 4 + 20);
        let mac = hmac_sha1(key, &[&self.buf]);
        self.set_body_len(old);
        self.add(attr::MESSAGE_INTEGRITY, &mac)
    }
    /// Appends MESSAGE-INTEGRITY-SHA256 (32 bytes) computed with `key` (RFC 8489 §14.6),
    /// the length field counting the new attribute as for MESSAGE-INTEGRITY.
    pub fn add_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let old = self.body_len();
        self.set_body_len(old + 4 + 32);
        let mac = hmac_sha256(key, &[&self.buf]);
        self.set_body_len(old);
        self.add(attr::MESSAGE_INTEGRITY_SHA256, &mac)
    }
    /// Appends the integrity attribute `key` is prepared for (as
    /// [`MessageBuilder::add_integrity_sha1`] or [`MessageBuilder::add_integrity_sha256`]).
    pub fn add_integrity_with(&mut self, key: &IntegrityKey) -> &mut Self {
        let (ty, len) = match key.kind() {
            IntegrityKind::Sha1 => (attr::MESSAGE_INTEGRITY, 20),
            IntegrityKind::Sha256 => (attr::MESSAGE_INTEGRITY_SHA256, 32),
        };
        let old = self.body_len();
        self.set_body_len(old + 4 + len);
        let (mac, mac_len) = key.mac(&[&self.buf]);
        self.set_body_len(old);
        self.add(ty, mac.get(..mac_len).unwrap_or_default())
    }
    /// Appends FINGERPRINT (RFC 8489 §14.7). Must come last. The CRC covers the message so
    /// far with its length field counting the FINGERPRINT attribute.
    pub fn add_fingerprint(&mut self) -> &mut Self {
        let old = self.body_len();
        self.set_body_len(old + 8);
        let crc = fingerprint(&self.buf);
        self.set_body_len(old);
        self.add_u32(attr::FINGERPRINT, crc)
    }
    /// The message so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    /// The finished message.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// The transaction ID written by `new`.
    fn transaction_id(&self) -> TransactionId {
        let mut tid = [0u8; 12];
        if let Some(bytes) = self.buf.get(8..HEADER_LEN) {
            tid.copy_from_slice(bytes);
        }
        TransactionId(tid)
    }
    /// The header's length field.
    fn body_len(&self) -> usize {
        self.buf.len().saturating_sub(HEADER_LEN)
    }
    /// Writes `len` into the header's length field. Callers keep it within u16 (`add`
    /// checks); the integrity methods add at most 36 to a length `add` already bounded.
    fn set_body_len(&mut self, len: usize) {
        let bytes = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        if let Some(field) = self.buf.get_mut(2..4) {
            field.copy_from_slice(&bytes);
        }
    }
}

/// Writes the value of an XOR-…-ADDRESS attribute for `addr` into `out` (which must hold
/// 20 bytes) and returns its length (8 for IPv4, 20 for IPv6). Allocation-free: used on
/// the relay path to build Data indications in place. If `out` is too short for the
/// address nothing is written and 0 is returned.
pub fn encode_xor_address(out: &mut [u8], addr: SocketAddr, tid: &TransactionId) -> usize {
    encode_address_with(out, addr, attr::xor_port_mask(), &attr::xor_addr_mask(tid))
}

/// Room for the longest address value: 4 bytes of family and port, 16 of IPv6 address.
const MAX_ADDRESS_LEN: usize = 20;

/// Most messages we build fit in this without growing (a 4-byte-aligned guess).
const INITIAL_CAPACITY: usize = 128;

/// The message type field: method bits M0..M11 interleaved with class bits C0, C1
/// (RFC 8489 §5, Figure 3).
fn message_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0FFF;
    let c: u16 = match class {
        Class::Request => 0x000,
        Class::Indication => 0x010,
        Class::Success => 0x100,
        Class::Error => 0x110,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | c
}

/// Padded length of an attribute value: the next multiple of 4 (RFC 8489 §14).
fn padded_len(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// The 3-bit class of an error code (RFC 8489 §14.8).
fn error_class(code: u16) -> u8 {
    u8::try_from((code / 100) & 0x07).unwrap_or(0)
}

/// The number (0..=99) of an error code (RFC 8489 §14.8).
fn error_number(code: u16) -> u8 {
    u8::try_from(code % 100).unwrap_or(0)
}

/// Writes an address value (family, port, address) xored with the masks.
fn encode_address_with(
    out: &mut [u8],
    addr: SocketAddr,
    port_mask: [u8; 2],
    addr_mask: &[u8; 16],
) -> usize {
    let [p0, p1] = addr.port().to_be_bytes();
    let (family, octets, n): (u8, [u8; 16], usize) = match addr.ip() {
        IpAddr::V4(ip) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&ip.octets());
            (attr::FAMILY_IPV4, o, 4)
        }
        IpAddr::V6(ip) => (attr::FAMILY_IPV6, ip.octets(), 16),
    };
    let Some(dst) = out.get_mut(..4 + n) else {
        return 0;
    };
    let (head, address) = dst.split_at_mut(4);
    head.copy_from_slice(&[0, family, p0 ^ port_mask[0], p1 ^ port_mask[1]]);
    for ((d, o), m) in address.iter_mut().zip(octets.iter()).zip(addr_mask) {
        *d = o ^ m;
    }
    4 + n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::DecodeError;
    use proptest::prelude::*;

    const TID: TransactionId = TransactionId([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);

    fn builder() -> MessageBuilder {
        MessageBuilder::new(Method::ALLOCATE, Class::Success, TID)
    }

    /// Builds with `f`, parses, and hands the message to `check`.
    fn round_trip(f: impl FnOnce(&mut MessageBuilder), check: impl FnOnce(&Message<'_>)) {
        let mut b = builder();
        f(&mut b);
        let bytes = b.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            bytes.len() - HEADER_LEN
        );
        let msg = Message::parse(&bytes).expect("builder output parses");
        check(&msg);
    }

    #[test]
    fn new_writes_the_header() {
        let bytes = builder().finish();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(&bytes[..4], &[0x01, 0x03, 0, 0]);
        assert_eq!(&bytes[4..8], &MAGIC_COOKIE.to_be_bytes());
        assert_eq!(&bytes[8..], &TID.0);
    }

    #[test]
    fn response_to_keeps_method_and_transaction() {
        let request = MessageBuilder::new(Method::REFRESH, Class::Request, TID).finish();
        let request = Message::parse(&request).unwrap();
        let response = MessageBuilder::response_to(&request, Class::Error).finish();
        let response = Message::parse(&response).unwrap();
        assert_eq!(response.method(), Method::REFRESH);
        assert_eq!(response.class(), Class::Error);
        assert_eq!(response.transaction_id(), TID);
    }

    #[test]
    fn add_pads_with_zeros_and_add_padded_with_the_given_byte() {
        let mut b = builder();
        b.add(attr::DATA, b"abcde");
        assert_eq!(&b.as_bytes()[20..], b"\x00\x13\x00\x05abcde\0\0\0");
        b.add_padded(attr::SOFTWARE, b"x", b' ');
        assert_eq!(&b.as_bytes()[32..], b"\x80\x22\x00\x01x   ");
        b.add(attr::DATA, b"");
        let bytes = b.finish();
        let msg = Message::parse(&bytes).unwrap();
        let got: Vec<_> = msg.attributes().collect();
        assert_eq!(
            got,
            [
                (attr::DATA, &b"abcde"[..]),
                (attr::SOFTWARE, &b"x"[..]),
                (attr::DATA, &b""[..])
            ]
        );
    }

    #[test]
    fn add_u32_round_trips() {
        round_trip(
            |b| {
                b.add_u32(attr::LIFETIME, 3600);
            },
            |m| assert_eq!(attr::decode_u32(m.get(attr::LIFETIME).unwrap()), Ok(3600)),
        );
    }

    #[test]
    fn xor_addresses_round_trip() {
        for addr in [
            "192.0.2.1:32853",
            "[2001:db8::1]:3478",
            "0.0.0.0:0",
            "[::]:65535",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            for ty in [
                attr::XOR_MAPPED_ADDRESS,
                attr::XOR_PEER_ADDRESS,
                attr::XOR_RELAYED_ADDRESS,
            ] {
                round_trip(
                    |b| {
                        b.add_xor_address(ty, addr);
                    },
                    |m| {
                        let value = m.get(ty).unwrap();
                        assert_eq!(attr::decode_xor_address(value, &TID), Ok(addr));
                        // The XOR form is not the plain one (except by accident of zeros).
                        assert_eq!(value[0], 0);
                    },
                );
            }
        }
    }

    #[test]
    fn xor_address_matches_rfc5769_encoding() {
        // RFC 5769 §2.2 and §2.3 XOR-MAPPED-ADDRESS values.
        let mut out = [0u8; 20];
        let n = encode_xor_address(&mut out, "192.0.2.1:32853".parse().unwrap(), &TID);
        assert_eq!(&out[..n], &[0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        let n = encode_xor_address(
            &mut out,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap(),
            &TID,
        );
        assert_eq!(
            &out[..n],
            &[
                0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
                0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );
    }

    #[test]
    fn encode_xor_address_refuses_a_short_buffer() {
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let mut small = [0xAAu8; 19];
        assert_eq!(encode_xor_address(&mut small, v6, &TID), 0);
        assert_eq!(small, [0xAA; 19]);
        assert_eq!(encode_xor_address(&mut small[..8], v4, &TID), 8);
        assert_eq!(encode_xor_address(&mut small[..7], v4, &TID), 0);
    }

    #[test]
    fn plain_addresses_round_trip() {
        for addr in ["203.0.113.9:1234", "[2001:db8::2]:443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            round_trip(
                |b| {
                    b.add_address(attr::ALTERNATE_SERVER, addr);
                },
                |m| {
                    let value = m.get(attr::ALTERNATE_SERVER).unwrap();
                    assert_eq!(attr::decode_address(value), Ok(addr));
                },
            );
        }
    }

    #[test]
    fn error_code_round_trips() {
        for (code, reason) in [
            (401, "Unauthorized"),
            (438, "Stale Nonce"),
            (300, ""),
            (699, "x"),
        ] {
            round_trip(
                |b| {
                    b.add_error_code(code, reason);
                },
                |m| {
                    let value = m.get(attr::ERROR_CODE).unwrap();
                    assert_eq!(&value[..4], &[0, 0, (code / 100) as u8, (code % 100) as u8]);
                    assert_eq!(attr::decode_error_code(value), Ok((code, reason)));
                },
            );
        }
    }

    #[test]
    fn address_error_code_layout() {
        round_trip(
            |b| {
                b.add_address_error_code(attr::FAMILY_IPV6, 440, "Address Family not Supported");
            },
            |m| {
                let value = m.get(attr::ADDRESS_ERROR_CODE).unwrap();
                assert_eq!(&value[..4], &[attr::FAMILY_IPV6, 0, 4, 40]);
                assert_eq!(&value[4..], b"Address Family not Supported");
                // Past the family octet it reads like ERROR-CODE.
                let mut as_error = value.to_vec();
                as_error[0] = 0;
                assert_eq!(
                    attr::decode_error_code(&as_error),
                    Ok((440, "Address Family not Supported"))
                );
            },
        );
    }

    #[test]
    fn unknown_attributes_round_trip() {
        round_trip(
            |b| {
                b.add_unknown_attributes(&[0x0031, 0x0032, 0x7FFF]);
            },
            |m| {
                let value = m.get(attr::UNKNOWN_ATTRIBUTES).unwrap();
                let types: Vec<u16> = value
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                assert_eq!(types, [0x0031, 0x0032, 0x7FFF]);
            },
        );
    }

    #[test]
    fn password_algorithms_round_trip() {
        round_trip(
            |b| {
                b.add_password_algorithms(&[
                    attr::PASSWORD_ALGORITHM_SHA256,
                    attr::PASSWORD_ALGORITHM_MD5,
                ])
                .add_password_algorithm(attr::PASSWORD_ALGORITHM_SHA256);
            },
            |m| {
                let mut seen = Vec::new();
                attr::decode_password_algorithms(
                    m.get(attr::PASSWORD_ALGORITHMS).unwrap(),
                    |a, p| seen.push((a, p.to_vec())),
                )
                .unwrap();
                assert_eq!(
                    seen,
                    [
                        (attr::PASSWORD_ALGORITHM_SHA256, vec![]),
                        (attr::PASSWORD_ALGORITHM_MD5, vec![])
                    ]
                );
                assert_eq!(
                    attr::decode_password_algorithm(m.get(attr::PASSWORD_ALGORITHM).unwrap()),
                    Ok((attr::PASSWORD_ALGORITHM_SHA256, &[][..]))
                );
            },
        );
    }

    #[test]
    fn prepared_keys_write_what_the_raw_key_writes() {
        for kind in [IntegrityKind::Sha1, IntegrityKind::Sha256] {
            let tid = TransactionId([3; 12]);
            let mut raw = MessageBuilder::new(Method::BINDING, Class::Request, tid);
            raw.add(attr::USERNAME, b"u");
            let mut prepared = MessageBuilder::new(Method::BINDING, Class::Request, tid);
            prepared.add(attr::USERNAME, b"u");
            match kind {
                IntegrityKind::Sha1 => raw.add_integrity_sha1(b"secret"),
                IntegrityKind::Sha256 => raw.add_integrity_sha256(b"secret"),
            };
            prepared.add_integrity_with(&IntegrityKey::new(kind, b"secret"));
            raw.add_fingerprint();
            prepared.add_fingerprint();
            assert_eq!(raw.as_bytes(), prepared.as_bytes(), "{kind:?}");
        }
    }

    #[test]
    fn integrity_and_fingerprint_round_trip() {
        let key = b"secret";
        round_trip(
            |b| {
                b.add(attr::USERNAME, b"u")
                    .add_integrity_sha1(key)
                    .add_fingerprint();
            },
            |m| {
                assert_eq!(m.integrity(), Some(crate::stun::IntegrityKind::Sha1));
                assert!(m.check_integrity_sha1(key));
                assert!(!m.check_integrity_sha1(b"Secret"));
                assert!(m.has_fingerprint());
            },
        );
        round_trip(
            |b| {
                b.add(attr::USERNAME, b"u").add_integrity_sha256(key);
            },
            |m| {
                assert_eq!(m.integrity(), Some(crate::stun::IntegrityKind::Sha256));
                assert_eq!(
                    m.get(attr::MESSAGE_INTEGRITY_SHA256).map(<[u8]>::len),
                    Some(32)
                );
                assert!(m.check_integrity_sha256(key));
                assert!(!m.check_integrity_sha256(b"secreT"));
                assert!(!m.has_fingerprint());
            },
        );
    }

    #[test]
    fn fingerprint_covers_the_header_length() {
        let bytes = builder()
            .add(attr::DATA, b"abc")
            .add_fingerprint()
            .as_bytes()
            .to_vec();
        let n = bytes.len();
        let crc = u32::from_be_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]);
        assert_eq!(crc, fingerprint(&bytes[..n - 8]));
        assert!(Message::parse(&bytes).unwrap().has_fingerprint());
    }

    #[test]
    fn oversized_values_are_not_added() {
        // Only in release builds: the debug assertion is the point in debug ones.
        if cfg!(debug_assertions) {
            return;
        }
        let mut b = builder();
        b.add(attr::DATA, &vec![0; 70_000]);
        assert_eq!(b.as_bytes().len(), HEADER_LEN);
        assert_eq!(Message::parse(b.as_bytes()).err(), None::<DecodeError>);
    }

    proptest! {
        #[test]
        fn any_address_round_trips(ip in any::<std::net::IpAddr>(), port in any::<u16>(), tid in any::<[u8; 12]>()) {
            let addr = SocketAddr::new(ip, port);
            let tid = TransactionId(tid);
            let mut out = [0u8; 20];
            let n = encode_xor_address(&mut out, addr, &tid);
            prop_assert_eq!(attr::decode_xor_address(&out[..n], &tid), Ok(addr));
            let mut b = MessageBuilder::new(Method::DATA, Class::Indication, tid);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, addr).add_address(attr::MAPPED_ADDRESS, addr);
            let bytes = b.finish();
            let msg = Message::parse(&bytes).unwrap();
            prop_assert_eq!(msg.get(attr::XOR_PEER_ADDRESS), Some(&out[..n]));
            prop_assert_eq!(attr::decode_address(msg.get(attr::MAPPED_ADDRESS).unwrap()), Ok(addr));
        }

        #[test]
        fn any_error_code_round_trips(code in 300u16..700, reason in "[a-zA-Z ]{0,40}") {
            let mut b = builder();
            b.add_error_code(code, &reason);
            let bytes = b.finish();
            let msg = Message::parse(&bytes).unwrap();
            prop_assert_eq!(attr::decode_error_code(msg.get(attr::ERROR_CODE).unwrap()), Ok((code, reason.as_str())));
        }
    }
}
