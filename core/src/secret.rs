//! The node secret: the one piece of secret material the core is given (DESIGN.md: "the
//! seed is not a secret and secrets are not derived from it").
//!
//! Everything the core keeps secret is derived from it with HMAC-SHA256 under its own
//! label: the nonce key (the same on every loop of a node, and on every relay given the
//! same secret, so they accept each other's nonces), and, mixed with the loop's seed so
//! that loops and runs differ, the keyed hash of the per-source budget and the random
//! streams of relay ports and reservation tokens. Knowing the seed (it is logged and
//! written in traces) tells nothing about any of them.

use crate::auth::NonceKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// 32 bytes of secret material for a node. Its `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSecret(pub [u8; 32]);

impl core::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NodeSecret(..)")
    }
}

impl NodeSecret {
    /// A secret from an operator's passphrase of any length (HMAC-SHA256 of it under a
    /// fixed label, so every relay given the same passphrase has the same secret).
    pub fn from_passphrase(passphrase: &[u8]) -> NodeSecret {
        NodeSecret(hmac(
            b"turnpike node secret from passphrase v1",
            &[passphrase],
        ))
    }

    /// The key that signs nonces: the same for every loop given this secret.
    pub fn nonce_key(&self) -> NonceKey {
        NonceKey(hmac(&self.0, &[b"nonce key v1"]))
    }

    /// The key of the per-source budget's hash, for the loop with `seed`.
    pub fn budget_key(&self, seed: &[u8; 32]) -> u64 {
        let k = hmac(&self.0, &[b"budget hash key v1", seed]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&k[..8]);
        u64::from_le_bytes(b)
    }

    /// The seed of the relay-port random stream of the loop with `seed`.
    pub fn port_seed(&self, seed: &[u8; 32]) -> [u8; 32] {
        hmac(&self.0, &[b"relay ports v1", seed])
    }

    /// The seed of the reservation-token (and Data indication id) stream of the loop with
    /// `seed`.
    pub fn token_seed(&self, seed: &[u8; 32]) -> [u8; 32] {
        hmac(&self.0, &[b"tokens v1", seed])
    }
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        mac.update(&(p.len() as u64).to_le_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_give_distinct_keys_and_debug_hides_the_secret() {
        let s = NodeSecret([9; 32]);
        let seed = [1; 32];
        assert_ne!(s.port_seed(&seed), s.token_seed(&seed));
        assert_ne!(s.nonce_key().0, s.port_seed(&seed));
        assert_ne!(s.port_seed(&seed), s.port_seed(&[2; 32]));
        assert_eq!(format!("{s:?}"), "NodeSecret(..)");
        assert_eq!(
            NodeSecret::from_passphrase(b"x"),
            NodeSecret::from_passphrase(b"x")
        );
        assert_ne!(
            NodeSecret::from_passphrase(b"x"),
            NodeSecret::from_passphrase(b"y")
        );
    }
}
