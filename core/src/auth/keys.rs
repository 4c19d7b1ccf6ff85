//! Long-term credential keys (RFC 8489 §9.2.2) and USERHASH (RFC 8489 §14.4).

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
        todo!()
    }
    /// From the wire number.
    pub fn from_wire(v: u16) -> Option<Self> {
        let _ = v;
        todo!()
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
    let _ = (alg, username, realm, password);
    todo!()
}

/// USERHASH: SHA-256(username ":" realm) (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let _ = (username, realm);
    todo!()
}
