//! Attribute types (RFC 8489 §18.3, RFC 8656 §18, RFC 8445, RFC 6062) and typed decoders.

use super::{DecodeError, TransactionId, MAGIC_COOKIE};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// MAPPED-ADDRESS.
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME.
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY.
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE.
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES.
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// CHANNEL-NUMBER (RFC 8656).
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// LIFETIME (RFC 8656).
pub const LIFETIME: u16 = 0x000D;
/// XOR-PEER-ADDRESS (RFC 8656).
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (RFC 8656).
pub const DATA: u16 = 0x0013;
/// REALM.
pub const REALM: u16 = 0x0014;
/// NONCE.
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS (RFC 8656).
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY (RFC 8656).
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT (RFC 8656).
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT (RFC 8656).
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT (RFC 8656).
pub const DONT_FRAGMENT: u16 = 0x001A;
/// ACCESS-TOKEN (RFC 7635).
pub const ACCESS_TOKEN: u16 = 0x001B;
/// MESSAGE-INTEGRITY-SHA256.
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// PASSWORD-ALGORITHM.
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// USERHASH.
pub const USERHASH: u16 = 0x001E;
/// XOR-MAPPED-ADDRESS.
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN (RFC 8656).
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// PRIORITY (RFC 8445).
pub const PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE (RFC 8445).
pub const USE_CANDIDATE: u16 = 0x0025;
/// CONNECTION-ID (RFC 6062).
pub const CONNECTION_ID: u16 = 0x002A;
/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// ADDRESS-ERROR-CODE (RFC 8656).
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// PASSWORD-ALGORITHMS.
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// ALTERNATE-DOMAIN.
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
/// ICMP (RFC 8656).
pub const ICMP: u16 = 0x8004;
/// SOFTWARE.
pub const SOFTWARE: u16 = 0x8022;
/// ALTERNATE-SERVER.
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// FINGERPRINT.
pub const FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED (RFC 8445).
pub const ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING (RFC 8445).
pub const ICE_CONTROLLING: u16 = 0x802A;
/// RESPONSE-ORIGIN (RFC 5780).
pub const RESPONSE_ORIGIN: u16 = 0x802B;
/// OTHER-ADDRESS (RFC 5780).
pub const OTHER_ADDRESS: u16 = 0x802C;

/// Address family codes of REQUESTED-ADDRESS-FAMILY and friends (RFC 8656 §18.5).
pub const FAMILY_IPV4: u8 = 0x01;
/// IPv6 family code.
pub const FAMILY_IPV6: u8 = 0x02;

/// Protocol number of UDP in REQUESTED-TRANSPORT (RFC 8656 §18.11).
pub const TRANSPORT_UDP: u8 = 17;
/// Protocol number of TCP in REQUESTED-TRANSPORT (RFC 6062).
pub const TRANSPORT_TCP: u8 = 6;

/// Password algorithm MD5 (RFC 8489 §18.5).
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
/// Password algorithm SHA-256 (RFC 8489 §18.5).
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

/// Longest USERNAME value: "fewer than 509 bytes" (RFC 8489 §14.3).
pub const MAX_USERNAME_LEN: usize = 508;
/// Longest REALM / NONCE / SOFTWARE value: fewer than 128 characters, at most 763 bytes
/// (RFC 8489 §14.9, §14.10, §14.14).
pub const MAX_TEXT_LEN: usize = 763;

/// True for comprehension-required types (0x0000–0x7FFF, RFC 8489 §14).
pub fn is_comprehension_required(ty: u16) -> bool {
    ty < 0x8000
}

/// The attribute's name for logs ("0x1234" style names are not produced: unknown → "unknown").
pub fn name(ty: u16) -> &'static str {
    match ty {
        MAPPED_ADDRESS => "MAPPED-ADDRESS",
        USERNAME => "USERNAME",
        MESSAGE_INTEGRITY => "MESSAGE-INTEGRITY",
        ERROR_CODE => "ERROR-CODE",
        UNKNOWN_ATTRIBUTES => "UNKNOWN-ATTRIBUTES",
        CHANNEL_NUMBER => "CHANNEL-NUMBER",
        LIFETIME => "LIFETIME",
        XOR_PEER_ADDRESS => "XOR-PEER-ADDRESS",
        DATA => "DATA",
        REALM => "REALM",
        NONCE => "NONCE",
        XOR_RELAYED_ADDRESS => "XOR-RELAYED-ADDRESS",
        REQUESTED_ADDRESS_FAMILY => "REQUESTED-ADDRESS-FAMILY",
        EVEN_PORT => "EVEN-PORT",
        REQUESTED_TRANSPORT => "REQUESTED-TRANSPORT",
        DONT_FRAGMENT => "DONT-FRAGMENT",
        ACCESS_TOKEN => "ACCESS-TOKEN",
        MESSAGE_INTEGRITY_SHA256 => "MESSAGE-INTEGRITY-SHA256",
        PASSWORD_ALGORITHM => "PASSWORD-ALGORITHM",
        USERHASH => "USERHASH",
        XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS",
        RESERVATION_TOKEN => "RESERVATION-TOKEN",
        PRIORITY => "PRIORITY",
        USE_CANDIDATE => "USE-CANDIDATE",
        CONNECTION_ID => "CONNECTION-ID",
        ADDITIONAL_ADDRESS_FAMILY => "ADDITIONAL-ADDRESS-FAMILY",
        ADDRESS_ERROR_CODE => "ADDRESS-ERROR-CODE",
        PASSWORD_ALGORITHMS => "PASSWORD-ALGORITHMS",
        ALTERNATE_DOMAIN => "ALTERNATE-DOMAIN",
        ICMP => "ICMP",
        SOFTWARE => "SOFTWARE",
        ALTERNATE_SERVER => "ALTERNATE-SERVER",
        FINGERPRINT => "FINGERPRINT",
        ICE_CONTROLLED => "ICE-CONTROLLED",
        ICE_CONTROLLING => "ICE-CONTROLLING",
        RESPONSE_ORIGIN => "RESPONSE-ORIGIN",
        OTHER_ADDRESS => "OTHER-ADDRESS",
        _ => "unknown",
    }
}

/// Decodes MAPPED-ADDRESS style values (RFC 8489 §14.1). The value carries no attribute
/// type, so a malformed one is reported as `BadAttribute(MAPPED_ADDRESS)`.
pub fn decode_address(value: &[u8]) -> Result<SocketAddr, DecodeError> {
    decode_address_with(value, MAPPED_ADDRESS, [0; 2], &[0; 16])
}

/// Decodes XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS (RFC 8489 §14.2).
/// A malformed value is reported as `BadAttribute(XOR_MAPPED_ADDRESS)` whichever of the
/// three it was; the caller knows which it asked for.
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Result<SocketAddr, DecodeError> {
    decode_address_with(
        value,
        XOR_MAPPED_ADDRESS,
        xor_port_mask(),
        &xor_addr_mask(tid),
    )
}

/// Decodes a 32-bit value (LIFETIME, PRIORITY...). A value not exactly 4 bytes long is
/// reported as `BadAttribute(LIFETIME)`, the TURN attribute this mostly serves.
pub fn decode_u32(value: &[u8]) -> Result<u32, DecodeError> {
    let bytes: [u8; 4] = value
        .try_into()
        .map_err(|_| DecodeError::BadAttribute(LIFETIME))?;
    Ok(u32::from_be_bytes(bytes))
}

/// Decodes ERROR-CODE into (code, reason) (RFC 8489 §14.8). The class must be 3..=6 and
/// the number below 100; the reason phrase is UTF-8 of at most [`MAX_TEXT_LEN`] bytes.
pub fn decode_error_code(value: &[u8]) -> Result<(u16, &str), DecodeError> {
    let bad = DecodeError::BadAttribute(ERROR_CODE);
    let (class, number, reason) = match value {
        [_, _, class, number, reason @ ..] => (class & 0x07, *number, reason),
        _ => return Err(bad),
    };
    if !(3..=6).contains(&class) || number >= 100 {
        return Err(bad);
    }
    let reason = decode_text(reason, ERROR_CODE, MAX_TEXT_LEN)?;
    Ok((u16::from(class) * 100 + u16::from(number), reason))
}

/// Decodes REQUESTED-TRANSPORT: the protocol number (RFC 8656 §18.11).
pub fn decode_requested_transport(value: &[u8]) -> Result<u8, DecodeError> {
    match value {
        [protocol, _, _, _] => Ok(*protocol),
        _ => Err(DecodeError::BadAttribute(REQUESTED_TRANSPORT)),
    }
}

/// Decodes CHANNEL-NUMBER (RFC 8656 §18.1). Range is the caller's business.
pub fn decode_channel_number(value: &[u8]) -> Result<u16, DecodeError> {
    match value {
        [n0, n1, _, _] => Ok(u16::from_be_bytes([*n0, *n1])),
        _ => Err(DecodeError::BadAttribute(CHANNEL_NUMBER)),
    }
}

/// Decodes REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY: the family octet
/// (RFC 8656 §18.5, §18.10). Whether the family is supported is the caller's business
/// (it answers 440); a value not 4 bytes long is `BadAttribute(REQUESTED_ADDRESS_FAMILY)`.
pub fn decode_family(value: &[u8]) -> Result<u8, DecodeError> {
    match value {
        [family, _, _, _] => Ok(*family),
        _ => Err(DecodeError::BadAttribute(REQUESTED_ADDRESS_FAMILY)),
    }
}

/// Decodes EVEN-PORT: the R bit (RFC 8656 §18.7).
pub fn decode_even_port(value: &[u8]) -> Result<bool, DecodeError> {
    match value {
        [flags] => Ok(flags & 0x80 != 0),
        _ => Err(DecodeError::BadAttribute(EVEN_PORT)),
    }
}

/// Decodes RESERVATION-TOKEN: 8 bytes (RFC 8656 §18.9).
pub fn decode_reservation_token(value: &[u8]) -> Result<[u8; 8], DecodeError> {
    value
        .try_into()
        .map_err(|_| DecodeError::BadAttribute(RESERVATION_TOKEN))
}

/// Decodes PASSWORD-ALGORITHM into (algorithm, parameters) (RFC 8489 §14.12).
pub fn decode_password_algorithm(value: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    let bad = DecodeError::BadAttribute(PASSWORD_ALGORITHM);
    let (algorithm, params, rest) = split_algorithm(value).ok_or(bad)?;
    // One entry and nothing else but its padding.
    if rest.len() > 3 {
        return Err(bad);
    }
    Ok((algorithm, params))
}

/// Decodes PASSWORD-ALGORITHMS: calls `each(algorithm, parameters)` for each entry, in
/// order (RFC 8489 §14.11).
pub fn decode_password_algorithms(
    value: &[u8],
    mut each: impl FnMut(u16, &[u8]),
) -> Result<(), DecodeError> {
    let bad = DecodeError::BadAttribute(PASSWORD_ALGORITHMS);
    let mut rest = value;
    // Bounded: every entry consumes at least 4 bytes.
    while !rest.is_empty() {
        let (algorithm, params, after) = split_algorithm(rest).ok_or(bad)?;
        each(algorithm, params);
        rest = after;
    }
    Ok(())
}

/// Decodes a UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE) of at most `max_len`
/// bytes.
pub fn decode_text(value: &[u8], ty: u16, max_len: usize) -> Result<&str, DecodeError> {
    if value.len() > max_len {
        return Err(DecodeError::BadAttribute(ty));
    }
    core::str::from_utf8(value).map_err(|_| DecodeError::BadAttribute(ty))
}

/// The 16-bit mask of an XOR'd port: the most significant half of the cookie (§14.2).
pub(crate) fn xor_port_mask() -> [u8; 2] {
    let c = MAGIC_COOKIE.to_be_bytes();
    [c[0], c[1]]
}

/// The mask of an XOR'd address: the cookie, then the transaction ID (§14.2). An IPv4
/// address uses the first four bytes only.
pub(crate) fn xor_addr_mask(tid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    let (cookie, rest) = mask.split_at_mut(4);
    cookie.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    rest.copy_from_slice(&tid.0);
    mask
}

/// Shared by the plain and XOR address decoders: (reserved, family, port, address) with
/// the port and address xored with the masks (zero masks for the plain form).
fn decode_address_with(
    value: &[u8],
    ty: u16,
    port_mask: [u8; 2],
    addr_mask: &[u8; 16],
) -> Result<SocketAddr, DecodeError> {
    let bad = DecodeError::BadAttribute(ty);
    let (family, p0, p1, address) = match value {
        [_, family, p0, p1, address @ ..] => (*family, *p0, *p1, address),
        _ => return Err(bad),
    };
    let port = u16::from_be_bytes([p0 ^ port_mask[0], p1 ^ port_mask[1]]);
    let ip = match (family, address.len()) {
        (FAMILY_IPV4, 4) => {
            let mut octets = [0u8; 4];
            for ((o, a), m) in octets.iter_mut().zip(address).zip(addr_mask) {
                *o = a ^ m;
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (FAMILY_IPV6, 16) => {
            let mut octets = [0u8; 16];
            for ((o, a), m) in octets.iter_mut().zip(address).zip(addr_mask) {
                *o = a ^ m;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Err(bad),
    };
    Ok(SocketAddr::new(ip, port))
}

/// One (algorithm, parameters) entry of PASSWORD-ALGORITHM(S) (RFC 8489 §14.11): the
/// algorithm, its parameters, and what follows their padding. None when truncated.
fn split_algorithm(value: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let (algorithm, len, rest) = match value {
        [a0, a1, l0, l1, rest @ ..] => (
            u16::from_be_bytes([*a0, *a1]),
            usize::from(u16::from_be_bytes([*l0, *l1])),
            rest,
        ),
        _ => return None,
    };
    let params = rest.get(..len)?;
    // The parameters are padded to 4 bytes; tolerate a final entry whose padding the
    // sender left out, since the attribute's own padding covers it.
    let padded = (len.div_ceil(4) * 4).min(rest.len());
    Some((algorithm, params, rest.get(padded..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId([1; 12]);

    #[test]
    fn names() {
        assert_eq!(name(XOR_PEER_ADDRESS), "XOR-PEER-ADDRESS");
        assert_eq!(name(MESSAGE_INTEGRITY_SHA256), "MESSAGE-INTEGRITY-SHA256");
        assert_eq!(name(FINGERPRINT), "FINGERPRINT");
        assert_eq!(name(0x7777), "unknown");
    }

    #[test]
    fn comprehension_required_range() {
        assert!(is_comprehension_required(0x0000));
        assert!(is_comprehension_required(0x7FFF));
        assert!(!is_comprehension_required(0x8000));
        assert!(!is_comprehension_required(0xFFFF));
    }

    #[test]
    fn address_decoders_reject_bad_families_and_lengths() {
        let xor_bad = Err(DecodeError::BadAttribute(XOR_MAPPED_ADDRESS));
        let plain_bad = Err(DecodeError::BadAttribute(MAPPED_ADDRESS));
        let cases: [&[u8]; 7] = [
            &[],
            &[0, 1, 0, 0, 1, 2, 3],       // IPv4 truncated
            &[0, 1, 0, 0, 1, 2, 3, 4, 5], // IPv4 too long
            &[0, 3, 0, 0, 1, 2, 3, 4],    // unknown family
            &[0, 0, 0, 0, 1, 2, 3, 4],    // family zero
            &[0, 2, 0, 0, 1, 2, 3, 4],    // IPv6 family, IPv4 length
            &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // IPv6 truncated
        ];
        for value in cases {
            assert_eq!(decode_xor_address(value, &TID), xor_bad, "{value:?}");
            assert_eq!(decode_address(value), plain_bad, "{value:?}");
        }
        assert_eq!(
            decode_address(&[0xFF, 1, 0x12, 0x34, 10, 0, 0, 1]),
            Ok("10.0.0.1:4660".parse().unwrap()),
            "the reserved byte is ignored"
        );
    }

    #[test]
    fn fixed_size_decoders_reject_wrong_lengths() {
        for n in [0usize, 1, 3, 5, 8] {
            let value = vec![0u8; n];
            if n != 4 {
                assert_eq!(decode_u32(&value), Err(DecodeError::BadAttribute(LIFETIME)));
                assert_eq!(
                    decode_requested_transport(&value),
                    Err(DecodeError::BadAttribute(REQUESTED_TRANSPORT))
                );
                assert_eq!(
                    decode_channel_number(&value),
                    Err(DecodeError::BadAttribute(CHANNEL_NUMBER))
                );
                assert_eq!(
                    decode_family(&value),
                    Err(DecodeError::BadAttribute(REQUESTED_ADDRESS_FAMILY))
                );
            }
            if n != 1 {
                assert_eq!(
                    decode_even_port(&value),
                    Err(DecodeError::BadAttribute(EVEN_PORT))
                );
            }
            if n != 8 {
                assert_eq!(
                    decode_reservation_token(&value),
                    Err(DecodeError::BadAttribute(RESERVATION_TOKEN))
                );
            }
        }
    }

    #[test]
    fn fixed_size_decoders_read_their_fields() {
        assert_eq!(decode_u32(&[0, 0, 0x0e, 0x10]), Ok(3600));
        assert_eq!(
            decode_requested_transport(&[17, 0, 0, 0]),
            Ok(TRANSPORT_UDP)
        );
        assert_eq!(decode_requested_transport(&[6, 9, 9, 9]), Ok(TRANSPORT_TCP));
        assert_eq!(decode_channel_number(&[0x40, 0x01, 0, 0]), Ok(0x4001));
        assert_eq!(decode_family(&[FAMILY_IPV6, 0, 0, 0]), Ok(FAMILY_IPV6));
        assert_eq!(
            decode_family(&[0x07, 0, 0, 0]),
            Ok(0x07),
            "range is the caller's"
        );
        assert_eq!(decode_even_port(&[0x80]), Ok(true));
        assert_eq!(decode_even_port(&[0x7F]), Ok(false));
        assert_eq!(
            decode_reservation_token(&[1, 2, 3, 4, 5, 6, 7, 8]),
            Ok([1, 2, 3, 4, 5, 6, 7, 8])
        );
    }

    #[test]
    fn error_code_checks_class_number_and_reason() {
        let bad = Err(DecodeError::BadAttribute(ERROR_CODE));
        assert_eq!(decode_error_code(&[0, 0, 4]), bad);
        assert_eq!(decode_error_code(&[0, 0, 2, 0]), bad, "class 2");
        assert_eq!(decode_error_code(&[0, 0, 7, 0]), bad, "class 7");
        assert_eq!(decode_error_code(&[0, 0, 4, 100]), bad, "number 100");
        assert_eq!(
            decode_error_code(&[0, 0, 4, 1, 0xFF]),
            bad,
            "reason not UTF-8"
        );
        let mut long = vec![0, 0, 5, 0];
        long.resize(4 + MAX_TEXT_LEN + 1, b'a');
        assert_eq!(decode_error_code(&long), bad, "reason too long");
        // The reserved bits above the class are ignored.
        assert_eq!(
            decode_error_code(b"\xff\xff\xfc\x25Allocation Mismatch"),
            Ok((437, "Allocation Mismatch"))
        );
    }

    #[test]
    fn text_checks_length_and_utf8() {
        assert_eq!(decode_text(b"realm", REALM, MAX_TEXT_LEN), Ok("realm"));
        assert_eq!(decode_text("ü".as_bytes(), USERNAME, 2), Ok("ü"));
        assert_eq!(
            decode_text("ü".as_bytes(), USERNAME, 1),
            Err(DecodeError::BadAttribute(USERNAME))
        );
        assert_eq!(
            decode_text(&[0xC3], NONCE, 10),
            Err(DecodeError::BadAttribute(NONCE))
        );
        assert_eq!(
            decode_text(
                &vec![b'a'; MAX_USERNAME_LEN + 1],
                USERNAME,
                MAX_USERNAME_LEN
            ),
            Err(DecodeError::BadAttribute(USERNAME))
        );
        assert!(decode_text(&vec![b'a'; MAX_USERNAME_LEN], USERNAME, MAX_USERNAME_LEN).is_ok());
    }

    #[test]
    fn password_algorithm_entries() {
        let bad = Err(DecodeError::BadAttribute(PASSWORD_ALGORITHM));
        assert_eq!(decode_password_algorithm(&[0, 2, 0, 0]), Ok((2, &[][..])));
        assert_eq!(
            decode_password_algorithm(&[0, 9, 0, 2, 7, 8, 0, 0]),
            Ok((9, &[7, 8][..]))
        );
        assert_eq!(
            decode_password_algorithm(&[0, 9, 0, 2, 7, 8]),
            Ok((9, &[7, 8][..]))
        );
        assert_eq!(decode_password_algorithm(&[0, 2, 0]), bad);
        assert_eq!(
            decode_password_algorithm(&[0, 2, 0, 4, 1]),
            bad,
            "params overrun"
        );
        assert_eq!(
            decode_password_algorithm(&[0, 2, 0, 0, 0, 1, 0, 0]),
            bad,
            "two entries"
        );

        let mut seen = Vec::new();
        let value = [0, 9, 0, 3, 1, 2, 3, 0, 0, 2, 0, 0, 0, 1, 0, 0];
        assert_eq!(
            decode_password_algorithms(&value, |a, p| seen.push((a, p.to_vec()))),
            Ok(())
        );
        assert_eq!(seen, [(9, vec![1, 2, 3]), (2, vec![]), (1, vec![])]);
        let bad = Err(DecodeError::BadAttribute(PASSWORD_ALGORITHMS));
        assert_eq!(
            decode_password_algorithms(&[0, 2, 0xFF, 0xFF, 0], |_, _| {}),
            bad
        );
        assert_eq!(
            decode_password_algorithms(&[0, 2, 0, 0, 0, 1], |_, _| {}),
            bad
        );
        assert_eq!(decode_password_algorithms(&[], |_, _| {}), Ok(()));
    }
}
