//! Emitting STUN messages (RFC 8489 §5, §14).

use super::{Class, Message, Method, TransactionId};
use std::net::SocketAddr;

/// Builds one STUN message in an owned buffer. Attributes are padded to 4 bytes; the
/// header's length is kept up to date so integrity and fingerprint come out right.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// A message with this method, class and transaction ID and no attributes.
    pub fn new(method: Method, class: Class, tid: TransactionId) -> Self {
        let _ = (method, class, tid);
        todo!()
    }
    /// A response (`class` is Success or Error) to `request`: same method and transaction ID.
    pub fn response_to(request: &Message<'_>, class: Class) -> Self {
        let _ = (request, class);
        todo!()
    }
    /// Appends an attribute with a raw value.
    pub fn add(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        let _ = (ty, value);
        todo!()
    }
    /// Appends a 32-bit attribute (LIFETIME...).
    pub fn add_u32(&mut self, ty: u16, value: u32) -> &mut Self {
        let _ = (ty, value);
        todo!()
    }
    /// Appends an XOR-…-ADDRESS attribute (RFC 8489 §14.2).
    pub fn add_xor_address(&mut self, ty: u16, addr: SocketAddr) -> &mut Self {
        let _ = (ty, addr);
        todo!()
    }
    /// Appends a MAPPED-ADDRESS style attribute (RFC 8489 §14.1).
    pub fn add_address(&mut self, ty: u16, addr: SocketAddr) -> &mut Self {
        let _ = (ty, addr);
        todo!()
    }
    /// Appends ERROR-CODE (RFC 8489 §14.8).
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let _ = (code, reason);
        todo!()
    }
    /// Appends ADDRESS-ERROR-CODE for `family` (RFC 8656 §18.13).
    pub fn add_address_error_code(&mut self, family: u8, code: u16, reason: &str) -> &mut Self {
        let _ = (family, code, reason);
        todo!()
    }
    /// Appends UNKNOWN-ATTRIBUTES (RFC 8489 §14.9).
    pub fn add_unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        let _ = types;
        todo!()
    }
    /// Appends PASSWORD-ALGORITHMS with the given algorithms, no parameters (RFC 8489 §14.11).
    pub fn add_password_algorithms(&mut self, algorithms: &[u16]) -> &mut Self {
        let _ = algorithms;
        todo!()
    }
    /// Appends PASSWORD-ALGORITHM with no parameters (RFC 8489 §14.12).
    pub fn add_password_algorithm(&mut self, algorithm: u16) -> &mut Self {
        let _ = algorithm;
        todo!()
    }
    /// Appends MESSAGE-INTEGRITY computed with `key` (RFC 8489 §14.5).
    pub fn add_integrity_sha1(&mut self, key: &[u8]) -> &mut Self {
        let _ = key;
        todo!()
    }
    /// Appends MESSAGE-INTEGRITY-SHA256 (32 bytes) computed with `key` (RFC 8489 §14.6).
    pub fn add_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let _ = key;
        todo!()
    }
    /// Appends FINGERPRINT (RFC 8489 §14.7). Must come last.
    pub fn add_fingerprint(&mut self) -> &mut Self {
        todo!()
    }
    /// The message so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    /// The finished message.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Writes the value of an XOR-…-ADDRESS attribute for `addr` into `out` (which must hold
/// 20 bytes) and returns its length (8 for IPv4, 20 for IPv6). Allocation-free: used on
/// the relay path to build Data indications in place.
pub fn encode_xor_address(out: &mut [u8], addr: SocketAddr, tid: &TransactionId) -> usize {
    let _ = (out, addr, tid);
    todo!()
}
