//! TURN REST API credentials: username `<expiry-unix-seconds>:<user>`, password
//! base64(HMAC-SHA1(secret, username)) (draft-uberti-behave-turn-rest-00 §2.2).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The password the REST scheme derives from `secret` for `username`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // draft-uberti-behave-turn-rest-00 §2.2: standard base64, with padding, of the
    // HMAC-SHA1 of the whole username (expiry included) keyed with the shared secret.
    let mut mac = hmac_sha1(secret);
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The expiry (unix seconds) that starts a REST username, or None if it has none.
pub fn rest_expiry(username: &str) -> Option<u64> {
    // draft-uberti-behave-turn-rest-00 §2.2: the username is the expiry timestamp,
    // optionally followed by ':' and an application user id.
    let head = username.split(':').next().unwrap_or("");
    // Digits only: `u64::from_str` would also take a leading '+'.
    if head.is_empty() || !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    head.parse().ok()
}

/// HMAC-SHA1 keyed with `secret`; HMAC accepts keys of any length, so this cannot fail.
fn hmac_sha1(secret: &[u8]) -> Hmac<Sha1> {
    match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC hashes long keys and pads short ones: there is no invalid length.
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Expected value from
    /// `python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"secret",
    /// b"1700000000:alice", hashlib.sha1).digest()).decode())'`.
    #[test]
    fn password_matches_reference_generator() {
        assert_eq!(
            rest_password(b"secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn password_depends_on_secret_and_username() {
        let p = rest_password(b"secret", "1700000000:alice");
        assert_ne!(p, rest_password(b"secret2", "1700000000:alice"));
        assert_ne!(p, rest_password(b"secret", "1700000001:alice"));
        // 20-byte MAC: 28 base64 characters with one '=' of padding.
        assert_eq!(p.len(), 28);
        assert!(p.ends_with('='));
        // Empty and very long secrets are fine.
        assert_eq!(rest_password(b"", "x").len(), 28);
        assert_eq!(rest_password(&[7u8; 500], "x").len(), 28);
    }

    #[test]
    fn expiry_parsing() {
        assert_eq!(rest_expiry("1700000000:alice"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000:"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000:a:b"), Some(1_700_000_000));
        assert_eq!(rest_expiry("0:x"), Some(0));
        assert_eq!(rest_expiry("18446744073709551615:x"), Some(u64::MAX));
        assert_eq!(rest_expiry("18446744073709551616:x"), None, "overflow");
        assert_eq!(rest_expiry("alice"), None);
        assert_eq!(rest_expiry("alice:1700000000"), None);
        assert_eq!(rest_expiry(""), None);
        assert_eq!(rest_expiry(":alice"), None);
        assert_eq!(rest_expiry("+17:alice"), None);
        assert_eq!(rest_expiry("-17:alice"), None);
        assert_eq!(rest_expiry("17a:alice"), None);
        assert_eq!(rest_expiry(" 17:alice"), None);
        assert_eq!(
            rest_expiry("\u{0661}\u{0662}:alice"),
            None,
            "non-ASCII digits"
        );
    }

    proptest! {
        #[test]
        fn expiry_never_panics(s in ".*") {
            let _ = rest_expiry(&s);
        }

        #[test]
        fn expiry_roundtrips(t in any::<u64>(), user in "[a-z]{0,8}") {
            prop_assert_eq!(rest_expiry(&format!("{t}:{user}")), Some(t));
        }
    }
}
