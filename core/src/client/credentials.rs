//! The client side of the long-term credential mechanism (RFC 8489 §9.2.4, §9.2.5).
//!
//! The client learns REALM and NONCE (and, from an RFC 8489 server, PASSWORD-ALGORITHMS)
//! from a 401 or 438 answer, derives the key once per realm and algorithm, and adds the
//! credential attributes and the integrity attribute to every later request.

use crate::auth::{long_term_key, userhash, Key, PasswordAlgorithm, NONCE_COOKIE};
use crate::stun::{attr, IntegrityKind, Message, MessageBuilder};
use base64::Engine as _;

/// Which security features a nonce announces (RFC 8489 §9.2: the nonce cookie followed by
/// 24 feature bits in four base64 characters).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SecurityFeatures {
    /// The nonce starts with the nonce cookie.
    pub cookie: bool,
    /// "Username anonymity" (USERHASH) is offered.
    pub username_anonymity: bool,
}

impl SecurityFeatures {
    /// Reads the features from a NONCE value.
    ///
    /// The RFC's prose numbers the bits from the most significant one, its erratum 6290
    /// from the least significant one; servers exist either way, so the username-anonymity
    /// bit is accepted in both places.
    pub fn of_nonce(nonce: &str) -> Self {
        let Some(rest) = nonce.strip_prefix(NONCE_COOKIE) else {
            return SecurityFeatures::default();
        };
        let bits = rest
            .get(..4)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .and_then(|v| <[u8; 3]>::try_from(v.as_slice()).ok())
            .map_or(0, |b| u32::from_be_bytes([0, b[0], b[1], b[2]]));
        SecurityFeatures {
            cookie: true,
            username_anonymity: bits & (0x40_0000 | 0x00_0002) != 0,
        }
    }
}

/// Why a 401 or 438 answer cannot be used to authenticate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChallengeError {
    /// REALM or NONCE is missing or malformed.
    Missing,
}

/// What the client knows about the server's challenge, and the key derived from it.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    realm: String,
    nonce: String,
    /// The PASSWORD-ALGORITHMS value offered, echoed byte for byte (RFC 8489 §9.2.5 asks
    /// the server to check it against what it sent).
    offered_algorithms: Option<Vec<u8>>,
    algorithm: PasswordAlgorithm,
    integrity: IntegrityKind,
    userhash: Option<[u8; 32]>,
    key: Key,
}

impl ClientAuth {
    /// Learns the challenge of a 401 or 438 `answer` and derives the key for it.
    pub fn from_challenge(
        answer: &Message<'_>,
        username: &str,
        password: &str,
        prefer_sha256: bool,
        use_userhash: bool,
    ) -> Result<Self, ChallengeError> {
        let realm = answer
            .get(attr::REALM)
            .and_then(|v| attr::decode_text(v, attr::REALM, attr::MAX_TEXT_LEN).ok())
            .ok_or(ChallengeError::Missing)?;
        let nonce = answer
            .get(attr::NONCE)
            .and_then(|v| attr::decode_text(v, attr::NONCE, attr::MAX_TEXT_LEN).ok())
            .ok_or(ChallengeError::Missing)?;
        let features = SecurityFeatures::of_nonce(nonce);

        // RFC 8489 §9.2.4: PASSWORD-ALGORITHMS counts only behind the nonce cookie (it
        // is what protects the list against a bid-down).
        let offered = if features.cookie {
            answer.get(attr::PASSWORD_ALGORITHMS)
        } else {
            None
        };
        let mut sha256_offered = false;
        if let Some(v) = offered {
            let walked = attr::decode_password_algorithms(v, |alg, _params| {
                sha256_offered |= alg == attr::PASSWORD_ALGORITHM_SHA256;
            });
            if walked.is_err() {
                sha256_offered = false;
            }
        }
        // A browser (RFC 5389) ignores the offer and uses MD5 without naming it; a
        // server treats a request with neither algorithm attribute as MD5 (§9.2.5).
        let (algorithm, integrity, offered_algorithms) = if prefer_sha256 && sha256_offered {
            (
                PasswordAlgorithm::Sha256,
                IntegrityKind::Sha256,
                offered.map(<[u8]>::to_vec),
            )
        } else {
            (PasswordAlgorithm::Md5, IntegrityKind::Sha1, None)
        };

        let userhash =
            (use_userhash && features.username_anonymity).then(|| userhash(username, realm));
        let key = long_term_key(algorithm, username, realm, password);
        Ok(ClientAuth {
            realm: realm.to_owned(),
            nonce: nonce.to_owned(),
            offered_algorithms,
            algorithm,
            integrity,
            userhash,
            key,
        })
    }

    /// True when `other` would produce the same request as `self`: a new challenge that
    /// changes nothing means the credentials themselves were refused.
    pub fn same_challenge(&self, other: &ClientAuth) -> bool {
        self.realm == other.realm
            && self.nonce == other.nonce
            && self.offered_algorithms == other.offered_algorithms
    }

    /// The key requests are signed with and responses verified with.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The password algorithm in use.
    pub fn algorithm(&self) -> PasswordAlgorithm {
        self.algorithm
    }

    /// Adds USERNAME (or USERHASH), REALM, NONCE and, when negotiated, PASSWORD-ALGORITHMS
    /// and PASSWORD-ALGORITHM (RFC 8489 §9.2.4). The integrity attribute is added by
    /// [`ClientAuth::sign`] once every other attribute is in.
    pub fn add_credentials(&self, b: &mut MessageBuilder, username: &str) {
        match &self.userhash {
            Some(hash) => b.add(attr::USERHASH, hash),
            None => b.add(attr::USERNAME, username.as_bytes()),
        };
        b.add(attr::REALM, self.realm.as_bytes());
        b.add(attr::NONCE, self.nonce.as_bytes());
        if let Some(offered) = &self.offered_algorithms {
            b.add(attr::PASSWORD_ALGORITHMS, offered);
            b.add_password_algorithm(self.algorithm.wire());
        }
    }

    /// Adds MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.5, §14.6).
    pub fn sign(&self, b: &mut MessageBuilder) {
        match self.integrity {
            IntegrityKind::Sha1 => b.add_integrity_sha1(self.key.as_bytes()),
            IntegrityKind::Sha256 => b.add_integrity_sha256(self.key.as_bytes()),
        };
    }
}

/// Checks the integrity of a response with `key`: the strongest attribute present must
/// verify (RFC 8489 §9.2.5). No integrity attribute at all fails.
pub fn verify(response: &Message<'_>, key: &Key) -> bool {
    match response.integrity() {
        Some(IntegrityKind::Sha256) => response.check_integrity_sha256(key.as_bytes()),
        Some(IntegrityKind::Sha1) => response.check_integrity_sha1(key.as_bytes()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_of_nonce() {
        assert_eq!(
            SecurityFeatures::of_nonce("abcdef"),
            SecurityFeatures::default()
        );
        // The RFC 8489 §B.1 example nonce: bits 0x000002.
        let f = SecurityFeatures::of_nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA");
        assert!(f.cookie && f.username_anonymity);
        // Most-significant-first numbering: bit 1 is 0x400000 ("QAAA").
        assert!(SecurityFeatures::of_nonce("obMatJos2QAAAxyz").username_anonymity);
        // Only the password-algorithms bit, either numbering.
        let f = SecurityFeatures::of_nonce("obMatJos2gAAAxyz");
        assert!(f.cookie && !f.username_anonymity);
        // A cookie with garbage after it still announces the cookie.
        let f = SecurityFeatures::of_nonce("obMatJos2");
        assert!(f.cookie && !f.username_anonymity);
    }
}
