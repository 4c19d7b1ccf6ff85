//! STUN messages (RFC 8489): the wire format, parse and emit, nothing else.
//!
//! Reading list: RFC 8489 §5 (header), §14 (attributes), §14.5–14.7 (integrity and
//! fingerprint), RFC 8656 §18 (TURN attributes), RFC 5769 (test vectors).
//!
//! [`Message::parse`] validates a whole message without copying it and gives access to its
//! attributes; [`MessageBuilder`] emits one. Attributes that follow MESSAGE-INTEGRITY are
//! ignored as RFC 8489 §14.5 requires (except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT).

pub mod attr;
mod builder;
mod error;
mod integrity;
mod message;

pub use builder::{encode_xor_address, MessageBuilder};
pub use error::DecodeError;
pub use integrity::{fingerprint, hmac_sha1, hmac_sha256, IntegrityKey};
pub use message::{
    is_stun, Class, IntegrityKind, Message, Method, TransactionId, UnknownAttributes,
};

/// The fixed magic cookie of RFC 8489 §5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;
/// The most attributes [`Message::parse`] walks; a message with more is rejected, which
/// bounds the work an attacker can ask of the parser.
pub const MAX_ATTRIBUTES: usize = 64;
