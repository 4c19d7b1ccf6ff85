//! Why a buffer is not a valid STUN message or attribute.

/// A decoding failure. Each variant names one rule of RFC 8489 §5 / §14 that was broken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DecodeError {
    /// Fewer bytes than a header, or than the header's length field announces.
    TooShort,
    /// The two most significant bits are not zero (RFC 8489 §5).
    NotStun,
    /// The magic cookie is not 0x2112A442.
    BadCookie,
    /// The length field is not a multiple of 4, or does not match the buffer.
    BadLength,
    /// An attribute's value runs past the end of the message.
    AttributeOverrun,
    /// More than [`super::MAX_ATTRIBUTES`] attributes.
    TooManyAttributes,
    /// FINGERPRINT is present but wrong, or not the last attribute.
    BadFingerprint,
    /// A MESSAGE-INTEGRITY(-SHA256) attribute of the wrong length.
    BadIntegrity,
    /// A known attribute whose value is malformed (its type is given).
    BadAttribute(u16),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::TooShort => f.write_str("message too short"),
            DecodeError::NotStun => f.write_str("not a STUN message"),
            DecodeError::BadCookie => f.write_str("bad magic cookie"),
            DecodeError::BadLength => f.write_str("bad message length"),
            DecodeError::AttributeOverrun => f.write_str("attribute overruns the message"),
            DecodeError::TooManyAttributes => f.write_str("too many attributes"),
            DecodeError::BadFingerprint => f.write_str("bad FINGERPRINT"),
            DecodeError::BadIntegrity => f.write_str("bad MESSAGE-INTEGRITY"),
            DecodeError::BadAttribute(t) => write!(f, "malformed attribute 0x{t:04x}"),
        }
    }
}
