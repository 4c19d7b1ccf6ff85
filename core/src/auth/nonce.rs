//! Stateless nonces (RFC 8489 §9.2.2, §9.2.4).

use crate::time::Instant;
use core::time::Duration;
use std::net::SocketAddr;

/// The "nonce cookie" that announces the STUN security features (RFC 8489 §9.2).
pub const NONCE_COOKIE: &str = "obMatJos2";

/// The secret that signs nonces. Several event loops sharing one key accept each other's
/// nonces.
#[derive(Clone)]
pub struct NonceKey(pub [u8; 32]);

impl core::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// The verdict on a nonce presented by a client.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NonceCheck {
    /// Ours, for this client, and fresh. `security_features`: it announced password
    /// algorithms and USERHASH.
    Valid {
        /// The nonce cookie with the feature bits was present.
        security_features: bool,
    },
    /// Ours and for this client, but too old: answer 438.
    Stale,
    /// Not ours, forged, or issued to another address: answer 438 too.
    Invalid,
}

/// A nonce for `client` issued at `now`. With `security_features` it starts with the
/// nonce cookie and the feature bits for password algorithms and USERHASH.
pub fn make_nonce(key: &NonceKey, client: SocketAddr, now: Instant, security_features: bool) -> String {
    let _ = (key, client, now, security_features);
    todo!()
}

/// Checks a nonce presented by `client` at `now`; older than `lifetime` is stale.
pub fn check_nonce(key: &NonceKey, nonce: &[u8], client: SocketAddr, now: Instant, lifetime: Duration) -> NonceCheck {
    let _ = (key, nonce, client, now, lifetime);
    todo!()
}
