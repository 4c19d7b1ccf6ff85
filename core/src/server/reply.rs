//! Building answers: error responses with the RFC's reason phrases, and the common tail
//! (SOFTWARE, integrity with the request's algorithm, FINGERPRINT when the request had one).

use crate::auth::Key;
use crate::stun::{attr, Class, IntegrityKey, Message, MessageBuilder};

/// How to sign an answer: with the key that authenticated the request, using the same
/// integrity attribute it used (RFC 8489 §9.2.4). `mac` is `key` prepared for that
/// attribute's HMAC: the one that checked the request signs the answer.
#[derive(Clone, Debug)]
pub(crate) struct Signer {
    pub key: Key,
    pub mac: IntegrityKey,
}

/// The reason phrase for an error code (RFC 8489 §14.8, RFC 8656 §19).
pub(crate) fn reason(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// An error response to `req` with `code`, no tail yet.
pub(crate) fn error(req: &Message<'_>, code: u16) -> MessageBuilder {
    let mut b = MessageBuilder::response_to(req, Class::Error);
    b.add_error_code(code, reason(code));
    b
}

/// Adds SOFTWARE, the integrity attribute and FINGERPRINT, and returns the bytes.
pub(crate) fn finish(
    mut b: MessageBuilder,
    software: Option<&str>,
    signer: Option<&Signer>,
    fingerprint: bool,
) -> Vec<u8> {
    if let Some(sw) = software {
        b.add(attr::SOFTWARE, sw.as_bytes());
    }
    if let Some(s) = signer {
        b.add_integrity_with(&s.mac);
    }
    if fingerprint {
        b.add_fingerprint();
    }
    b.finish()
}
