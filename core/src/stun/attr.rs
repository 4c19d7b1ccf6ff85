//! Attribute types (RFC 8489 §18.3, RFC 8656 §18, RFC 8445, RFC 6062) and typed decoders.

use super::{DecodeError, TransactionId};
use std::net::SocketAddr;

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
    let _ = ty;
    todo!()
}

/// Decodes MAPPED-ADDRESS style values (RFC 8489 §14.1).
pub fn decode_address(value: &[u8]) -> Result<SocketAddr, DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS (RFC 8489 §14.2).
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Result<SocketAddr, DecodeError> {
    let _ = (value, tid);
    todo!()
}

/// Decodes a 32-bit value (LIFETIME, PRIORITY...).
pub fn decode_u32(value: &[u8]) -> Result<u32, DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes ERROR-CODE into (code, reason) (RFC 8489 §14.8).
pub fn decode_error_code(value: &[u8]) -> Result<(u16, &str), DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes REQUESTED-TRANSPORT: the protocol number (RFC 8656 §18.11).
pub fn decode_requested_transport(value: &[u8]) -> Result<u8, DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes CHANNEL-NUMBER (RFC 8656 §18.1). Range is the caller's business.
pub fn decode_channel_number(value: &[u8]) -> Result<u16, DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY: the family octet
/// (RFC 8656 §18.5, §18.10).
pub fn decode_family(value: &[u8]) -> Result<u8, DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes EVEN-PORT: the R bit (RFC 8656 §18.7).
pub fn decode_even_port(value: &[u8]) -> Result<bool, DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes RESERVATION-TOKEN: 8 bytes (RFC 8656 §18.9).
pub fn decode_reservation_token(value: &[u8]) -> Result<[u8; 8], DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes PASSWORD-ALGORITHM into (algorithm, parameters) (RFC 8489 §14.12).
pub fn decode_password_algorithm(value: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    let _ = value;
    todo!()
}

/// Decodes PASSWORD-ALGORITHMS: calls `each(algorithm, parameters)` for each entry, in
/// order (RFC 8489 §14.11).
pub fn decode_password_algorithms(
    value: &[u8],
    each: impl FnMut(u16, &[u8]),
) -> Result<(), DecodeError> {
    let _ = (value, each);
    todo!()
}

/// Decodes a UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE) of at most `max_len`
/// bytes.
pub fn decode_text(value: &[u8], ty: u16, max_len: usize) -> Result<&str, DecodeError> {
    let _ = (value, ty, max_len);
    todo!()
}
