//! Parsing: a zero-copy, validated view of one STUN message (RFC 8489 §5, §14).

use super::{
    attr, fingerprint, hmac_sha1, hmac_sha256, DecodeError, HEADER_LEN, MAGIC_COOKIE,
    MAX_ATTRIBUTES,
};
use subtle::ConstantTimeEq;

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
        match self {
            Method::BINDING => "Binding",
            Method::ALLOCATE => "Allocate",
            Method::REFRESH => "Refresh",
            Method::SEND => "Send",
            Method::DATA => "Data",
            Method::CREATE_PERMISSION => "CreatePermission",
            Method::CHANNEL_BIND => "ChannelBind",
            Method::CONNECT => "Connect",
            Method::CONNECTION_BIND => "ConnectionBind",
            Method::CONNECTION_ATTEMPT => "ConnectionAttempt",
            _ => "unknown",
        }
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
    match (buf.first(), buf.get(4..8)) {
        (Some(first), Some(cookie)) => {
            buf.len() >= HEADER_LEN && first & 0xC0 == 0 && cookie == MAGIC_COOKIE.to_be_bytes()
        }
        _ => false,
    }
}

/// A validated STUN message borrowed from the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    /// Offset of the visible MESSAGE-INTEGRITY attribute's header, if any.
    mi_at: Option<usize>,
    /// Offset and value length of the visible MESSAGE-INTEGRITY-SHA256 attribute, if any.
    mi_sha256_at: Option<(usize, usize)>,
    /// Whether the message ends with a FINGERPRINT (checked by `parse`).
    fingerprint: bool,
}

impl<'a> Message<'a> {
    /// Validates `buf` as exactly one STUN message: header rules of RFC 8489 §5, every
    /// attribute inside the message, at most [`super::MAX_ATTRIBUTES`] attributes, a
    /// FINGERPRINT if present last and correct, integrity attributes of the right length.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let header = buf.get(..HEADER_LEN).ok_or(DecodeError::TooShort)?;
        let (first, length, cookie) = match header {
            [b0, _, l0, l1, c0, c1, c2, c3, ..] => {
                (*b0, u16::from_be_bytes([*l0, *l1]), [*c0, *c1, *c2, *c3])
            }
            _ => return Err(DecodeError::TooShort),
        };
        // RFC 8489 §5: "The most significant 2 bits of every STUN message MUST be zeroes."
        if first & 0xC0 != 0 {
            return Err(DecodeError::NotStun);
        }
        if cookie != MAGIC_COOKIE.to_be_bytes() {
            return Err(DecodeError::BadCookie);
        }
        // RFC 8489 §5: the length "MUST contain the size of the message in bytes, not
        // including the 20-byte STUN header"; attributes are padded, so it is a multiple of 4.
        let length = usize::from(length);
        if length % 4 != 0 {
            return Err(DecodeError::BadLength);
        }
        let body = buf.len() - HEADER_LEN;
        if body < length {
            return Err(DecodeError::TooShort);
        }
        if body > length {
            return Err(DecodeError::BadLength);
        }

        let mut msg = Message {
            buf,
            mi_at: None,
            mi_sha256_at: None,
            fingerprint: false,
        };
        let mut visibility = Visibility::default();
        let mut pos = HEADER_LEN;
        let mut count = 0usize;
        while pos < buf.len() {
            let (ty, value, next) = next_tlv(buf, pos).ok_or(DecodeError::AttributeOverrun)?;
            count += 1;
            if count > MAX_ATTRIBUTES {
                return Err(DecodeError::TooManyAttributes);
            }
            if ty == attr::FINGERPRINT {
                // RFC 8489 §14.7: FINGERPRINT "MUST be the last attribute in the message".
                if next != buf.len() || value.len() != 4 {
                    return Err(DecodeError::BadFingerprint);
                }
                let given = u32_of(value).ok_or(DecodeError::BadFingerprint)?;
                let covered = buf.get(..pos).ok_or(DecodeError::BadFingerprint)?;
                if fingerprint(covered) != given {
                    return Err(DecodeError::BadFingerprint);
                }
                msg.fingerprint = true;
            } else if visibility.admit(ty) {
                match ty {
                    attr::MESSAGE_INTEGRITY => {
                        // RFC 8489 §14.5: the HMAC-SHA1 value is 20 bytes.
                        if value.len() != MI_SHA1_LEN {
                            return Err(DecodeError::BadIntegrity);
                        }
                        msg.mi_at = Some(pos);
                    }
                    attr::MESSAGE_INTEGRITY_SHA256 => {
                        // RFC 8489 §14.6: at least 16 bytes, at most 32, a multiple of 4.
                        let n = value.len();
                        if !(MI_SHA256_MIN_LEN..=MI_SHA256_LEN).contains(&n) || n % 4 != 0 {
                            return Err(DecodeError::BadIntegrity);
                        }
                        msg.mi_sha256_at = Some((pos, n));
                    }
                    _ => {}
                }
            }
            pos = next;
        }
        Ok(msg)
    }
    /// The method.
    pub fn method(&self) -> Method {
        let t = self.message_type();
        // RFC 8489 §5: the method bits M0..M11 are split by the class bits C0 and C1.
        Method((t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80))
    }
    /// The class.
    pub fn class(&self) -> Class {
        let t = self.message_type();
        match ((t >> 8) & 1, (t >> 4) & 1) {
            (0, 0) => Class::Request,
            (0, _) => Class::Indication,
            (_, 0) => Class::Success,
            _ => Class::Error,
        }
    }
    /// The transaction ID.
    pub fn transaction_id(&self) -> TransactionId {
        let mut tid = [0u8; 12];
        if let Some(bytes) = self.buf.get(8..HEADER_LEN) {
            tid.copy_from_slice(bytes);
        }
        TransactionId(tid)
    }
    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// The attributes a receiver must look at, in order: all of them up to and including
    /// the first MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256; after MESSAGE-INTEGRITY, a
    /// MESSAGE-INTEGRITY-SHA256 still counts; FINGERPRINT is never yielded (RFC 8489 §14.5).
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        Attributes {
            buf: self.buf,
            pos: HEADER_LEN,
            visibility: Visibility::default(),
        }
    }
    /// The value of the first visible attribute of type `ty` (RFC 8489 §14: a receiver
    /// uses the first of duplicates).
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.attributes().find(|(t, _)| *t == ty).map(|(_, v)| v)
    }
    /// The visible comprehension-required attributes (type < 0x8000) for which `known`
    /// answers false (RFC 8489 §14: they call for a 420 answer).
    pub fn unknown_required(&self, known: fn(u16) -> bool) -> UnknownAttributes {
        let mut unknown = UnknownAttributes::default();
        for (ty, _) in self.attributes() {
            if attr::is_comprehension_required(ty) && !known(ty) {
                unknown.push(ty);
            }
        }
        unknown
    }
    /// The strongest integrity attribute present: SHA-256 over SHA-1.
    pub fn integrity(&self) -> Option<IntegrityKind> {
        match (self.mi_sha256_at, self.mi_at) {
            (Some(_), _) => Some(IntegrityKind::Sha256),
            (None, Some(_)) => Some(IntegrityKind::Sha1),
            (None, None) => None,
        }
    }
    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key`, in constant time.
    pub fn check_integrity_sha1(&self, key: &[u8]) -> bool {
        let Some(at) = self.mi_at else {
            return false;
        };
        let Some((covered, given)) = self.integrity_parts(at, MI_SHA1_LEN) else {
            return false;
        };
        let mac = hmac_sha1(key, &[covered.0, &covered.1, covered.2]);
        bool::from(mac.ct_eq(given))
    }
    /// Checks MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6) with `key`, in constant time,
    /// accepting a truncated value as that section allows.
    pub fn check_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some((at, len)) = self.mi_sha256_at else {
            return false;
        };
        let Some((covered, given)) = self.integrity_parts(at, len) else {
            return false;
        };
        let mac = hmac_sha256(key, &[covered.0, &covered.1, covered.2]);
        // RFC 8489 §14.6: a truncated value is compared with the same-length prefix.
        match mac.get(..len) {
            Some(prefix) => bool::from(prefix.ct_eq(given)),
            None => false,
        }
    }
    /// True when the message ends with a (valid, since parse checked it) FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }

    /// The STUN message type field (RFC 8489 §5), class and method bits interleaved.
    fn message_type(&self) -> u16 {
        match self.buf {
            [b0, b1, ..] => u16::from_be_bytes([*b0, *b1]),
            _ => 0,
        }
    }

    /// What the HMAC of an integrity attribute at `at` with a `len`-byte value covers
    /// (RFC 8489 §14.5): the first two header bytes, the length field rewritten as if the
    /// message ended right after that attribute, and the rest up to the attribute; and the
    /// value given in the message.
    #[allow(clippy::type_complexity)]
    fn integrity_parts(
        &self,
        at: usize,
        len: usize,
    ) -> Option<((&'a [u8], [u8; 2], &'a [u8]), &'a [u8])> {
        let adjusted = u16::try_from(at + 4 + len - HEADER_LEN).ok()?;
        let head = self.buf.get(..2)?;
        let rest = self.buf.get(4..at)?;
        let given = self.buf.get(at + 4..at + 4 + len)?;
        Some(((head, adjusted.to_be_bytes(), rest), given))
    }
}

/// Length of the MESSAGE-INTEGRITY value: an HMAC-SHA1 (RFC 8489 §14.5).
const MI_SHA1_LEN: usize = 20;
/// Longest MESSAGE-INTEGRITY-SHA256 value: a whole HMAC-SHA256 (RFC 8489 §14.6).
const MI_SHA256_LEN: usize = 32;
/// Shortest MESSAGE-INTEGRITY-SHA256 value, truncated as RFC 8489 §14.6 allows.
const MI_SHA256_MIN_LEN: usize = 16;

/// Which attributes a receiver takes into account (RFC 8489 §14.5, §14.6): everything up
/// to the first MESSAGE-INTEGRITY; after it only MESSAGE-INTEGRITY-SHA256; after that,
/// nothing (FINGERPRINT is handled apart).
#[derive(Default, Clone, Copy)]
struct Visibility {
    after_sha1: bool,
    after_sha256: bool,
}

impl Visibility {
    /// Whether an attribute of type `ty` at this point is visible; advances the state.
    fn admit(&mut self, ty: u16) -> bool {
        if self.after_sha256 || (self.after_sha1 && ty != attr::MESSAGE_INTEGRITY_SHA256) {
            return false;
        }
        match ty {
            attr::MESSAGE_INTEGRITY => self.after_sha1 = true,
            attr::MESSAGE_INTEGRITY_SHA256 => self.after_sha256 = true,
            _ => {}
        }
        true
    }
}

/// The visible attributes of a parsed message, in order.
struct Attributes<'a> {
    buf: &'a [u8],
    pos: usize,
    visibility: Visibility,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Bounded: `parse` walked the same attributes, at most MAX_ATTRIBUTES of them.
        loop {
            let (ty, value, next) = next_tlv(self.buf, self.pos)?;
            self.pos = next;
            if ty != attr::FINGERPRINT && self.visibility.admit(ty) {
                return Some((ty, value));
            }
        }
    }
}

/// The attribute whose header starts at `pos`: (type, value, offset of the next one).
/// None at the end of `buf` or when the value, padded to 4 bytes, does not fit.
fn next_tlv(buf: &[u8], pos: usize) -> Option<(u16, &[u8], usize)> {
    let (ty, len) = match buf.get(pos..pos.checked_add(4)?)? {
        [t0, t1, l0, l1] => (
            u16::from_be_bytes([*t0, *t1]),
            usize::from(u16::from_be_bytes([*l0, *l1])),
        ),
        _ => return None,
    };
    let start = pos + 4;
    let next = start + len.div_ceil(4) * 4;
    if next > buf.len() {
        return None;
    }
    Some((ty, buf.get(start..start + len)?, next))
}

/// A big-endian u32 from exactly four bytes.
fn u32_of(value: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = value.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}
