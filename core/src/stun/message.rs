//! Parsing: a zero-copy, validated view of one STUN message (RFC 8489 §5, §14).

use super::{
    attr, fingerprint, hmac_sha1, hmac_sha256, DecodeError, IntegrityKey, HEADER_LEN, MAGIC_COOKIE,
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
    /// (Integrity attributes that RFC 8489 §14.5 says to ignore are not length-checked:
    /// like every other ignored attribute, only their framing matters.)
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
        let Some(c) = self.covered(at, MI_SHA1_LEN) else {
            return false;
        };
        let mac = hmac_sha1(key, &[c.head, &c.length, c.rest]);
        bool::from(mac.ct_eq(c.given))
    }
    /// Checks MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6) with `key`, in constant time,
    /// accepting a truncated value as that section allows.
    pub fn check_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some((at, len)) = self.mi_sha256_at else {
            return false;
        };
        let Some(c) = self.covered(at, len) else {
            return false;
        };
        let mac = hmac_sha256(key, &[c.head, &c.length, c.rest]);
        // RFC 8489 §14.6: a truncated value is compared with the same-length prefix.
        match mac.get(..len) {
            Some(prefix) => bool::from(prefix.ct_eq(c.given)),
            None => false,
        }
    }
    /// Checks the integrity attribute `key` is prepared for, in constant time (as
    /// [`Message::check_integrity_sha1`] or [`Message::check_integrity_sha256`]).
    pub fn check_integrity_with(&self, key: &IntegrityKey) -> bool {
        let (at, len) = match key.kind() {
            IntegrityKind::Sha1 => match self.mi_at {
                Some(at) => (at, MI_SHA1_LEN),
                None => return false,
            },
            IntegrityKind::Sha256 => match self.mi_sha256_at {
                Some(found) => found,
                None => return false,
            },
        };
        let Some(c) = self.covered(at, len) else {
            return false;
        };
        let (mac, mac_len) = key.mac(&[c.head, &c.length, c.rest]);
        // RFC 8489 §14.6: a truncated SHA-256 value is compared with the same-length prefix.
        match mac.get(..mac_len).and_then(|m| m.get(..len)) {
            Some(prefix) => bool::from(prefix.ct_eq(c.given)),
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

    /// What the HMAC of the integrity attribute at `at`, with a `len`-byte value, covers.
    fn covered(&self, at: usize, len: usize) -> Option<Covered<'a>> {
        let length = u16::try_from(at + 4 + len - HEADER_LEN).ok()?;
        Some(Covered {
            head: self.buf.get(..2)?,
            length: length.to_be_bytes(),
            rest: self.buf.get(4..at)?,
            given: self.buf.get(at + 4..at + 4 + len)?,
        })
    }
}

/// The input of an integrity HMAC (RFC 8489 §14.5): the message up to the attribute, with
/// the length field rewritten as if the message ended right after that attribute (so a
/// FINGERPRINT added later does not change it), and the value the message carries.
struct Covered<'a> {
    /// The message type.
    head: &'a [u8],
    /// The rewritten length field.
    length: [u8; 2],
    /// Cookie, transaction ID and the attributes before the integrity attribute.
    rest: &'a [u8],
    /// The integrity value found in the message.
    given: &'a [u8],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::MessageBuilder;
    use proptest::prelude::*;

    const TID: TransactionId = TransactionId([7; 12]);
    const KEY: &[u8] = b"key";

    fn builder() -> MessageBuilder {
        MessageBuilder::new(Method::ALLOCATE, Class::Request, TID)
    }

    /// Sets the header length to what the buffer holds.
    fn fix_length(bytes: &mut [u8]) {
        let len = u16::try_from(bytes.len() - HEADER_LEN).unwrap();
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends a raw attribute (zero padding) and fixes the length.
    fn push_raw(bytes: &mut Vec<u8>, ty: u16, value: &[u8]) {
        bytes.extend_from_slice(&ty.to_be_bytes());
        bytes.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(bytes.len() + (4 - value.len() % 4) % 4, 0);
        fix_length(bytes);
    }

    fn types(msg: &Message<'_>) -> Vec<u16> {
        msg.attributes().map(|(t, _)| t).collect()
    }

    #[test]
    fn empty_message_parses() {
        let bytes = builder().as_bytes().to_vec();
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(msg.method(), Method::ALLOCATE);
        assert_eq!(msg.class(), Class::Request);
        assert_eq!(msg.transaction_id(), TID);
        assert_eq!(msg.attributes().count(), 0);
        assert_eq!(msg.integrity(), None);
        assert!(!msg.has_fingerprint());
        assert!(!msg.check_integrity_sha1(KEY));
        assert!(!msg.check_integrity_sha256(KEY));
        assert_eq!(msg.as_bytes(), &bytes[..]);
    }

    #[test]
    fn method_and_class_bits_round_trip() {
        // RFC 8489 §5: e.g. a Binding success response is 0x0101, an Allocate error 0x0113.
        let cases = [
            (Method::BINDING, Class::Request, 0x0001),
            (Method::BINDING, Class::Success, 0x0101),
            (Method::ALLOCATE, Class::Error, 0x0113),
            (Method::SEND, Class::Indication, 0x0016),
            (Method::DATA, Class::Indication, 0x0017),
            (Method(0x0FFF), Class::Error, 0x3FFF),
        ];
        for (method, class, ty) in cases {
            let bytes = MessageBuilder::new(method, class, TID).as_bytes().to_vec();
            assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), ty);
            let msg = Message::parse(&bytes).unwrap();
            assert_eq!((msg.method(), msg.class()), (method, class));
        }
        for m in 0..0x1000u16 {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let bytes = MessageBuilder::new(Method(m), class, TID)
                    .as_bytes()
                    .to_vec();
                let msg = Message::parse(&bytes).unwrap();
                assert_eq!((msg.method(), msg.class()), (Method(m), class));
            }
        }
    }

    #[test]
    fn method_names() {
        assert_eq!(Method::BINDING.name(), "Binding");
        assert_eq!(Method::CREATE_PERMISSION.name(), "CreatePermission");
        assert_eq!(Method::CHANNEL_BIND.name(), "ChannelBind");
        assert_eq!(Method::CONNECTION_ATTEMPT.name(), "ConnectionAttempt");
        assert_eq!(Method(0x0123).name(), "unknown");
    }

    #[test]
    fn is_stun_checks_header_only() {
        let bytes = builder().add(attr::DATA, b"x").as_bytes().to_vec();
        assert!(is_stun(&bytes));
        assert!(is_stun(&bytes[..HEADER_LEN]));
        assert!(!is_stun(&bytes[..HEADER_LEN - 1]));
        assert!(!is_stun(&[]));
        let mut channel_data = bytes.clone();
        channel_data[0] = 0x40;
        assert!(!is_stun(&channel_data));
        let mut bad_cookie = bytes;
        bad_cookie[7] ^= 1;
        assert!(!is_stun(&bad_cookie));
    }

    #[test]
    fn too_short() {
        let bytes = builder().add(attr::DATA, b"abcd").as_bytes().to_vec();
        assert_eq!(
            Message::parse(&bytes[..19]).err(),
            Some(DecodeError::TooShort)
        );
        assert_eq!(Message::parse(&[]).err(), Some(DecodeError::TooShort));
        // The header announces more than the buffer holds.
        assert_eq!(
            Message::parse(&bytes[..bytes.len() - 4]).err(),
            Some(DecodeError::TooShort)
        );
    }

    #[test]
    fn not_stun() {
        let mut bytes = builder().as_bytes().to_vec();
        bytes[0] |= 0x80;
        assert_eq!(Message::parse(&bytes).err(), Some(DecodeError::NotStun));
        bytes[0] = 0x40;
        assert_eq!(Message::parse(&bytes).err(), Some(DecodeError::NotStun));
    }

    #[test]
    fn bad_cookie() {
        let mut bytes = builder().as_bytes().to_vec();
        bytes[4] = 0;
        assert_eq!(Message::parse(&bytes).err(), Some(DecodeError::BadCookie));
    }

    #[test]
    fn bad_length() {
        let mut bytes = builder().add(attr::DATA, b"abcd").as_bytes().to_vec();
        bytes[3] = 6; // not a multiple of 4
        assert_eq!(Message::parse(&bytes).err(), Some(DecodeError::BadLength));
        // Trailing bytes beyond what the header announces: a datagram is one message.
        let mut longer = builder().add(attr::DATA, b"abcd").as_bytes().to_vec();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(Message::parse(&longer).err(), Some(DecodeError::BadLength));
    }

    #[test]
    fn attribute_overrun() {
        let mut bytes = builder().add(attr::DATA, b"abcd").as_bytes().to_vec();
        bytes[23] = 5; // value of 5 pads to 8, past the end
        assert_eq!(
            Message::parse(&bytes).err(),
            Some(DecodeError::AttributeOverrun)
        );
        bytes[22] = 0xFF;
        assert_eq!(
            Message::parse(&bytes).err(),
            Some(DecodeError::AttributeOverrun)
        );
        // An unpadded final value overruns too: the padding must fit.
        let mut unpadded = builder().as_bytes().to_vec();
        unpadded.extend_from_slice(&[0x00, 0x13, 0x00, 0x03, 1, 2, 3]);
        unpadded[3] = 7;
        assert_eq!(
            Message::parse(&unpadded).err(),
            Some(DecodeError::BadLength)
        );
    }

    #[test]
    fn too_many_attributes() {
        let mut b = builder();
        for _ in 0..MAX_ATTRIBUTES {
            b.add(attr::SOFTWARE, b"");
        }
        let at_limit = b.as_bytes().to_vec();
        assert!(Message::parse(&at_limit).is_ok());
        b.add(attr::SOFTWARE, b"");
        assert_eq!(
            Message::parse(b.as_bytes()).err(),
            Some(DecodeError::TooManyAttributes)
        );
    }

    #[test]
    fn bad_integrity_lengths() {
        let mut bytes = builder().as_bytes().to_vec();
        push_raw(&mut bytes, attr::MESSAGE_INTEGRITY, &[0; 16]);
        assert_eq!(
            Message::parse(&bytes).err(),
            Some(DecodeError::BadIntegrity)
        );
        for n in [0, 12, 18, 36] {
            let mut bytes = builder().as_bytes().to_vec();
            push_raw(&mut bytes, attr::MESSAGE_INTEGRITY_SHA256, &vec![0; n]);
            assert_eq!(
                Message::parse(&bytes).err(),
                Some(DecodeError::BadIntegrity),
                "length {n}"
            );
        }
        for n in [16, 20, 24, 28, 32] {
            let mut bytes = builder().as_bytes().to_vec();
            push_raw(&mut bytes, attr::MESSAGE_INTEGRITY_SHA256, &vec![0; n]);
            assert!(Message::parse(&bytes).is_ok(), "length {n}");
        }
    }

    #[test]
    fn bad_fingerprint() {
        let good = builder()
            .add(attr::DATA, b"abc")
            .add_fingerprint()
            .as_bytes()
            .to_vec();
        assert!(Message::parse(&good).unwrap().has_fingerprint());
        // Wrong CRC.
        let mut wrong = good.clone();
        *wrong.last_mut().unwrap() ^= 1;
        assert_eq!(
            Message::parse(&wrong).err(),
            Some(DecodeError::BadFingerprint)
        );
        // Covered bytes changed.
        let mut tampered = good.clone();
        tampered[24] ^= 1;
        assert_eq!(
            Message::parse(&tampered).err(),
            Some(DecodeError::BadFingerprint)
        );
        // Not last.
        let mut not_last = good.clone();
        push_raw(&mut not_last, attr::SOFTWARE, b"x");
        assert_eq!(
            Message::parse(&not_last).err(),
            Some(DecodeError::BadFingerprint)
        );
        // Wrong length.
        let mut long = builder().as_bytes().to_vec();
        push_raw(&mut long, attr::FINGERPRINT, &[0; 8]);
        assert_eq!(
            Message::parse(&long).err(),
            Some(DecodeError::BadFingerprint)
        );
    }

    #[test]
    fn duplicates_first_wins() {
        let bytes = builder()
            .add_u32(attr::LIFETIME, 600)
            .add_u32(attr::LIFETIME, 0)
            .as_bytes()
            .to_vec();
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(msg.get(attr::LIFETIME), Some(&600u32.to_be_bytes()[..]));
        assert_eq!(types(&msg), [attr::LIFETIME, attr::LIFETIME]);
        assert_eq!(msg.get(attr::DATA), None);
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut bytes = builder()
            .add(attr::USERNAME, b"alice")
            .add_integrity_sha1(KEY)
            .as_bytes()
            .to_vec();
        push_raw(&mut bytes, attr::LIFETIME, &[0, 0, 0, 0]);
        push_raw(&mut bytes, 0x0033, b"unknown but hidden");
        push_raw(&mut bytes, attr::MESSAGE_INTEGRITY, &[0; 20]);
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(types(&msg), [attr::USERNAME, attr::MESSAGE_INTEGRITY]);
        assert_eq!(msg.get(attr::LIFETIME), None);
        assert!(
            msg.unknown_required(|_| false).as_slice() == [attr::USERNAME, attr::MESSAGE_INTEGRITY]
        );
        // The HMAC still verifies: what follows it is outside its cover.
        assert!(msg.check_integrity_sha1(KEY));
        assert!(!msg.check_integrity_sha1(b"other"));
    }

    #[test]
    fn sha256_after_sha1_counts_then_nothing_but_fingerprint() {
        let mut b = builder();
        b.add(attr::USERNAME, b"alice").add_integrity_sha1(KEY);
        let mut bytes = b.finish();
        push_raw(&mut bytes, attr::LIFETIME, &[0, 0, 0, 1]);
        // MI-SHA256 computed over everything before it, the hidden LIFETIME included.
        let mut with_sha256 = bytes.clone();
        let len = u16::try_from(with_sha256.len() - HEADER_LEN + 36).unwrap();
        with_sha256[2..4].copy_from_slice(&len.to_be_bytes());
        let mac = hmac_sha256(KEY, &[&with_sha256]);
        push_raw(&mut with_sha256, attr::MESSAGE_INTEGRITY_SHA256, &mac);
        push_raw(&mut with_sha256, attr::DATA, b"hidden");
        push_raw(&mut with_sha256, attr::MESSAGE_INTEGRITY_SHA256, &[0; 32]);
        let len = u16::try_from(with_sha256.len() - HEADER_LEN + 8).unwrap();
        with_sha256[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = fingerprint(&with_sha256);
        push_raw(&mut with_sha256, attr::FINGERPRINT, &crc.to_be_bytes());

        let msg = Message::parse(&with_sha256).unwrap();
        assert_eq!(
            types(&msg),
            [
                attr::USERNAME,
                attr::MESSAGE_INTEGRITY,
                attr::MESSAGE_INTEGRITY_SHA256
            ]
        );
        assert_eq!(msg.integrity(), Some(IntegrityKind::Sha256));
        assert!(msg.check_integrity_sha1(KEY));
        assert!(msg.check_integrity_sha256(KEY));
        assert!(msg.has_fingerprint());
        assert_eq!(msg.get(attr::FINGERPRINT), None);
        assert_eq!(msg.get(attr::DATA), None);
    }

    #[test]
    fn sha1_after_sha256_is_ignored() {
        let bytes = builder()
            .add(attr::USERNAME, b"bob")
            .add_integrity_sha256(KEY)
            .add_integrity_sha1(KEY)
            .as_bytes()
            .to_vec();
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(
            types(&msg),
            [attr::USERNAME, attr::MESSAGE_INTEGRITY_SHA256]
        );
        assert_eq!(msg.integrity(), Some(IntegrityKind::Sha256));
        assert!(msg.check_integrity_sha256(KEY));
        assert!(!msg.check_integrity_sha1(KEY));
        assert!(msg.check_integrity_with(&IntegrityKey::new(IntegrityKind::Sha256, KEY)));
        assert!(!msg.check_integrity_with(&IntegrityKey::new(IntegrityKind::Sha1, KEY)));
    }

    #[test]
    fn truncated_sha256_is_compared_on_its_prefix() {
        for n in [16usize, 20, 24, 28] {
            let mut bytes = builder().add(attr::USERNAME, b"carol").as_bytes().to_vec();
            let len = u16::try_from(bytes.len() - HEADER_LEN + 4 + n).unwrap();
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
            let mac = hmac_sha256(KEY, &[&bytes]);
            push_raw(&mut bytes, attr::MESSAGE_INTEGRITY_SHA256, &mac[..n]);
            let msg = Message::parse(&bytes).unwrap();
            assert!(msg.check_integrity_sha256(KEY), "truncated to {n}");
            assert!(!msg.check_integrity_sha256(b"nope"));
            let prepared = IntegrityKey::new(IntegrityKind::Sha256, KEY);
            assert!(msg.check_integrity_with(&prepared), "truncated to {n}");
            assert!(!msg.check_integrity_with(&IntegrityKey::new(IntegrityKind::Sha256, b"nope")));
            // No MESSAGE-INTEGRITY to check with a SHA-1 key.
            assert!(!msg.check_integrity_with(&IntegrityKey::new(IntegrityKind::Sha1, KEY)));
            let mut flipped = bytes.clone();
            *flipped.last_mut().unwrap() ^= 0x80;
            assert!(!Message::parse(&flipped)
                .unwrap()
                .check_integrity_sha256(KEY));
        }
    }

    #[test]
    fn integrity_fails_on_tampering() {
        let bytes = builder()
            .add(attr::USERNAME, b"dave")
            .add_integrity_sha1(KEY)
            .as_bytes()
            .to_vec();
        assert!(Message::parse(&bytes).unwrap().check_integrity_sha1(KEY));
        for i in 0..bytes.len() {
            if (2..4).contains(&i) {
                continue; // changing the length breaks the parse itself
            }
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            if let Ok(msg) = Message::parse(&tampered) {
                assert!(!msg.check_integrity_sha1(KEY), "byte {i}");
            }
        }
    }

    #[test]
    fn unknown_required_collects_comprehension_required_only() {
        let bytes = builder()
            .add(0x0031, b"a")
            .add(0x8031, b"optional")
            .add(attr::LIFETIME, &[0; 4])
            .add(0x0031, b"dup")
            .add(0x0032, b"b")
            .as_bytes()
            .to_vec();
        let msg = Message::parse(&bytes).unwrap();
        let unknown = msg.unknown_required(|t| t == attr::LIFETIME);
        assert_eq!(unknown.as_slice(), [0x0031, 0x0032]);
        assert!(!unknown.is_empty());
        assert!(msg.unknown_required(|_| true).is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            exercise(&bytes);
        }

        #[test]
        fn random_bodies_behind_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..50).prop_map(|mut v| {
                v.truncate(v.len() / 4 * 4);
                v
            }),
            tid in any::<[u8; 12]>(),
        ) {
            let mut bytes = MessageBuilder::new(Method::BINDING, Class::Request, TransactionId(tid)).as_bytes().to_vec();
            bytes.extend_from_slice(&body);
            fix_length(&mut bytes);
            exercise(&bytes);
        }

        #[test]
        fn random_tlvs_never_panic(
            attrs in proptest::collection::vec(
                (prop_oneof![Just(attr::MESSAGE_INTEGRITY), Just(attr::MESSAGE_INTEGRITY_SHA256),
                             Just(attr::FINGERPRINT), Just(attr::XOR_PEER_ADDRESS),
                             Just(attr::ERROR_CODE), Just(attr::PASSWORD_ALGORITHMS), any::<u16>()],
                 proptest::collection::vec(any::<u8>(), 0..40)),
                0..8),
        ) {
            let mut bytes = builder().as_bytes().to_vec();
            for (ty, value) in &attrs {
                push_raw(&mut bytes, *ty, value);
            }
            exercise(&bytes);
        }

        #[test]
        fn builder_messages_parse_back(
            method in 0u16..0x1000,
            class in prop_oneof![Just(Class::Request), Just(Class::Indication),
                                 Just(Class::Success), Just(Class::Error)],
            tid in any::<[u8; 12]>(),
            attrs in proptest::collection::vec(
                (any::<u16>().prop_filter("integrity and fingerprint are added apart", |t| {
                    ![attr::MESSAGE_INTEGRITY, attr::MESSAGE_INTEGRITY_SHA256, attr::FINGERPRINT].contains(t)
                }), proptest::collection::vec(any::<u8>(), 0..64)),
                0..MAX_ATTRIBUTES - 3),
            integrity in 0u8..4,
            with_fingerprint in any::<bool>(),
        ) {
            let mut b = MessageBuilder::new(Method(method), class, TransactionId(tid));
            for (ty, value) in &attrs {
                b.add(*ty, value);
            }
            if integrity & 1 != 0 {
                b.add_integrity_sha1(KEY);
            }
            if integrity & 2 != 0 {
                b.add_integrity_sha256(KEY);
            }
            if with_fingerprint {
                b.add_fingerprint();
            }
            let bytes = b.finish();
            let msg = Message::parse(&bytes).unwrap();
            prop_assert_eq!(msg.method(), Method(method));
            prop_assert_eq!(msg.class(), class);
            prop_assert_eq!(msg.transaction_id(), TransactionId(tid));
            let got: Vec<(u16, Vec<u8>)> = msg
                .attributes()
                .filter(|(t, _)| *t != attr::MESSAGE_INTEGRITY && *t != attr::MESSAGE_INTEGRITY_SHA256)
                .map(|(t, v)| (t, v.to_vec()))
                .collect();
            prop_assert_eq!(&got, &attrs);
            prop_assert_eq!(msg.check_integrity_sha1(KEY), integrity & 1 != 0);
            prop_assert_eq!(msg.check_integrity_sha256(KEY), integrity & 2 != 0);
            prop_assert_eq!(msg.has_fingerprint(), with_fingerprint);
        }
    }

    /// Parses `bytes` and, if that works, runs every accessor and decoder over it.
    fn exercise(bytes: &[u8]) {
        let _ = is_stun(bytes);
        let tid = TransactionId([0; 12]);
        for value in [bytes, bytes.get(HEADER_LEN..).unwrap_or(&[])] {
            decode_everything(value, &tid);
        }
        if let Ok(msg) = Message::parse(bytes) {
            let _ = (
                msg.method(),
                msg.class(),
                msg.integrity(),
                msg.has_fingerprint(),
            );
            let _ = msg.check_integrity_sha1(KEY);
            let _ = msg.check_integrity_sha256(KEY);
            let _ = msg.unknown_required(|_| false);
            assert!(msg.attributes().count() <= MAX_ATTRIBUTES);
            for (ty, value) in msg.attributes() {
                let _ = msg.get(ty);
                decode_everything(value, &msg.transaction_id());
            }
        }
    }

    fn decode_everything(value: &[u8], tid: &TransactionId) {
        let _ = attr::decode_address(value);
        let _ = attr::decode_xor_address(value, tid);
        let _ = attr::decode_u32(value);
        let _ = attr::decode_error_code(value);
        let _ = attr::decode_requested_transport(value);
        let _ = attr::decode_channel_number(value);
        let _ = attr::decode_family(value);
        let _ = attr::decode_even_port(value);
        let _ = attr::decode_reservation_token(value);
        let _ = attr::decode_password_algorithm(value);
        let _ = attr::decode_password_algorithms(value, |_, _| {});
        let _ = attr::decode_text(value, attr::SOFTWARE, attr::MAX_TEXT_LEN);
    }
}
