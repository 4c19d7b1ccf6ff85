//! Credentials: long-term keys (RFC 8489 §9.2), TURN REST shared-secret usernames
//! (draft-uberti-behave-turn-rest), one-time credentials, and stateless nonces.
//!
//! Nothing here is per-request state: a nonce is an HMAC over the client's address and a
//! timestamp, so an unauthenticated request leaves nothing behind (RFC 8489 §9.2.2 allows
//! any nonce construction; RFC 8656 §21.2 asks for protection from floods).

mod credentials;
mod keys;
mod nonce;
mod rest;

pub use credentials::{CredentialKind, Credentials, LookupError, OneTimeCredential};
pub use keys::{long_term_key, userhash, Key, PasswordAlgorithm};
pub use nonce::{
    check_nonce, make_nonce, NonceCheck, NonceKey, NonceSigner, VerifiedNonces, NONCE_COOKIE,
};
pub use rest::{rest_expiry, rest_password};
