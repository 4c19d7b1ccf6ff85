//! Parsing: a zero-copy, validated view of one STUN message (RFC 8489 §5, §14).

use super::DecodeError;

/// The 96-bit transaction ID (RFC 8489 §5).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TransactionId(pub [u8; 12]);

/// The message class (RFC 8489 §5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// A request, answered by exactly one response.
    Request,
    /// An indication, never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A 12-bit STUN method (RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Method(pub u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656 §7).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656 §8).
    pub const REFRESH: Method = Method(0x004);
    /// Send indication (RFC 8656 §11).
    pub const SEND: Method = Method(0x006);
    /// Data indication (RFC 8656 §11).
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656 §10).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656 §12).
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// Connect (RFC 6062).
    pub const CONNECT: Method = Method(0x00A);
    /// ConnectionBind (RFC 6062).
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// ConnectionAttempt (RFC 6062).
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// The method's name for logs.
    pub fn name(self) -> &'static str {
        todo!()
    }
}

/// Which message-integrity attribute a message carries (RFC 8489 §14.5, §14.6).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY: HMAC-SHA1.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256: HMAC-SHA256 (possibly truncated, 16..=32 bytes).
    Sha256,
}

/// Up to 16 attribute types, for the UNKNOWN-ATTRIBUTES of a 420 answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct UnknownAttributes {
    types: [u16; 16],
    len: u8,
}

impl UnknownAttributes {
    /// The types collected, in message order, without duplicates.
    pub fn as_slice(&self) -> &[u16] {
        &self.types[..usize::from(self.len)]
    }
    /// True when no unknown comprehension-required attribute was found.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Adds `t` unless present or full.
    pub fn push(&mut self, t: u16) {
        if !self.as_slice().contains(&t) && usize::from(self.len) < self.types.len() {
            self.types[usize::from(self.len)] = t;
            self.len += 1;
        }
    }
}

/// Quick test that `buf` starts like a STUN message: at least a header, top bits zero, the
/// magic cookie in place. Used to tell STUN from ChannelData and from garbage.
pub fn is_stun(buf: &[u8]) -> bool {
    let _ = buf;
    todo!()
}

/// A validated STUN message borrowed from the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
}

impl<'a> Message<'a> {
    /// Validates `buf` as exactly one STUN message: header rules of RFC 8489 §5, every
    /// attribute inside the message, at most [`super::MAX_ATTRIBUTES`] attributes, a
    /// FINGERPRINT if present last and correct, integrity attributes of the right length.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let _ = buf;
        todo!()
    }
    /// The method.
    pub fn method(&self) -> Method {
        todo!()
    }
    /// The class.
    pub fn class(&self) -> Class {
        todo!()
    }
    /// The transaction ID.
    pub fn transaction_id(&self) -> TransactionId {
        todo!()
    }
    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// The attributes a receiver must look at, in order: all of them up to and including
    /// the first MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256; after MESSAGE-INTEGRITY, a
    /// MESSAGE-INTEGRITY-SHA256 still counts; FINGERPRINT is never yielded (RFC 8489 §14.5).
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        core::iter::empty()
    }
    /// The value of the first visible attribute of type `ty` (RFC 8489 §14: a receiver
    /// uses the first of duplicates).
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        let _ = ty;
        todo!()
    }
    /// The visible comprehension-required attributes (type < 0x8000) for which `known`
    /// answers false (RFC 8489 §14: they call for a 420 answer).
    pub fn unknown_required(&self, known: fn(u16) -> bool) -> UnknownAttributes {
        let _ = known;
        todo!()
    }
    /// The strongest integrity attribute present: SHA-256 over SHA-1.
    pub fn integrity(&self) -> Option<IntegrityKind> {
        todo!()
    }
    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key`, in constant time.
    pub fn check_integrity_sha1(&self, key: &[u8]) -> bool {
        let _ = key;
        todo!()
    }
    /// Checks MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6) with `key`, in constant time,
    /// accepting a truncated value as that section allows.
    pub fn check_integrity_sha256(&self, key: &[u8]) -> bool {
        let _ = key;
        todo!()
    }
    /// True when the message ends with a (valid, since parse checked it) FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        todo!()
    }
}
