//! Long-term credential keys (RFC 8489 §9.2.2) and USERHASH (RFC 8489 §14.4).

use md5::Md5;
use sha2::{Digest, Sha256};

/// The algorithm that turns a password into a key (RFC 8489 §18.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PasswordAlgorithm {
    /// MD5(username ":" realm ":" password): 16 bytes. The classic one.
    Md5,
    /// SHA-256(username ":" realm ":" password): 32 bytes.
    Sha256,
}

impl PasswordAlgorithm {
    /// The wire number (1 for MD5, 2 for SHA-256).
    pub fn wire(self) -> u16 {
        // RFC 8489 §18.5: the "STUN Password Algorithms" registry.
        match self {
            PasswordAlgorithm::Md5 => 1,
            PasswordAlgorithm::Sha256 => 2,
        }
    }
    /// From the wire number.
    pub fn from_wire(v: u16) -> Option<Self> {
        match v {
            1 => Some(PasswordAlgorithm::Md5),
            2 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// A long-term key: 16 (MD5) or 32 (SHA-256) bytes, kept inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; 32],
    len: u8,
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// The key bytes, for HMAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The long-term key for `username` in `realm` with `password` (RFC 8489 §9.2.2).
/// Realm and password are used as given (the OpaqueString profile leaves ASCII as is).
pub fn long_term_key(alg: PasswordAlgorithm, username: &str, realm: &str, password: &str) -> Key {
    let mut bytes = [0u8; 32];
    match alg {
        PasswordAlgorithm::Md5 => {
            let digest = colon_joined::<Md5>(&[username, realm, password]);
            bytes[..16].copy_from_slice(&digest);
            Key { bytes, len: 16 }
        }
        PasswordAlgorithm::Sha256 => {
            let digest = colon_joined::<Sha256>(&[username, realm, password]);
            bytes.copy_from_slice(&digest);
            Key { bytes, len: 32 }
        }
    }
}

/// USERHASH: SHA-256(username ":" realm) (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    colon_joined::<Sha256>(&[username, realm]).into()
}

/// The digest of `parts` joined with ':', fed piecewise so no joined string is allocated.
fn colon_joined<D: Digest>(parts: &[&str]) -> sha2::digest::Output<D> {
    let mut h = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha1::Sha1;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn wire_numbers_roundtrip() {
        assert_eq!(PasswordAlgorithm::Md5.wire(), 1);
        assert_eq!(PasswordAlgorithm::Sha256.wire(), 2);
        for alg in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            assert_eq!(PasswordAlgorithm::from_wire(alg.wire()), Some(alg));
        }
        assert_eq!(PasswordAlgorithm::from_wire(0), None);
        assert_eq!(PasswordAlgorithm::from_wire(3), None);
        assert_eq!(PasswordAlgorithm::from_wire(u16::MAX), None);
    }

    /// Expected digests from `echo -n 'user:realm:pass' | md5sum` (and sha256sum).
    #[test]
    fn ascii_keys_match_coreutils() {
        let md5 = long_term_key(PasswordAlgorithm::Md5, "user", "realm", "pass");
        assert_eq!(md5.as_bytes().len(), 16);
        assert_eq!(hex(md5.as_bytes()), "8493fbc53ba582fb4c044c456bdc40eb");
        let sha = long_term_key(PasswordAlgorithm::Sha256, "user", "realm", "pass");
        assert_eq!(sha.as_bytes().len(), 32);
        assert_eq!(
            hex(sha.as_bytes()),
            "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b"
        );
    }

    /// Expected digest from `echo -n 'user:realm' | sha256sum`.
    #[test]
    fn userhash_matches_coreutils() {
        assert_eq!(
            hex(&userhash("user", "realm")),
            "6a3029116b47aa98bcaa325399733dc1a23cd57e26b81bef3ff6531ce624e2da"
        );
    }

    /// RFC 5769 §2.4: the sample request's MESSAGE-INTEGRITY verifies under our MD5 key for
    /// the Katakana username, "example.org" and the SASLprep'd password "TheMatrIX".
    #[test]
    fn rfc5769_long_term_key_verifies_the_sample_request() {
        let msg = unhex(
            "00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
             00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
             00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
                         53 54 76 79 36 34 73 41
             00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
             00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66",
        );
        assert_eq!(msg.len(), 116);
        let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        let key = long_term_key(PasswordAlgorithm::Md5, username, "example.org", "TheMatrIX");
        // MESSAGE-INTEGRITY is the last attribute, so the length field already ends at it and
        // the HMAC covers everything before its 4-byte header.
        let (signed, rest) = msg.split_at(msg.len() - 24);
        let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(signed);
        assert_eq!(mac.finalize().into_bytes().as_slice(), &rest[4..]);
        assert_eq!(hex(key.as_bytes()), "e8ca7ad59d5eb0518e312911d2dab2a9");
    }

    #[test]
    fn keys_differ_by_every_input_and_debug_hides_them() {
        let base = long_term_key(PasswordAlgorithm::Md5, "u", "r", "p");
        assert_ne!(base, long_term_key(PasswordAlgorithm::Md5, "u2", "r", "p"));
        assert_ne!(base, long_term_key(PasswordAlgorithm::Md5, "u", "r2", "p"));
        assert_ne!(base, long_term_key(PasswordAlgorithm::Md5, "u", "r", "p2"));
        // The input is the plain joined string, as RFC 8489 §9.2.2 defines it (so "a:b" + "c"
        // and "a" + "b:c" give the same key, as in every other implementation).
        assert_eq!(
            long_term_key(PasswordAlgorithm::Md5, "a:b", "c", "p"),
            long_term_key(PasswordAlgorithm::Md5, "a", "b:c", "p")
        );
        assert_eq!(format!("{base:?}"), "Key(..)");
    }
}
