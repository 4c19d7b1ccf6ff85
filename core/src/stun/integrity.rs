//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 §14.5–14.7).

/// HMAC-SHA1 of `parts` concatenated, with `key`.
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let _ = (key, parts);
    todo!()
}

/// HMAC-SHA256 of `parts` concatenated, with `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let _ = (key, parts);
    todo!()
}

/// The FINGERPRINT value of `bytes`: CRC-32 xor 0x5354554E (RFC 8489 §14.7).
pub fn fingerprint(bytes: &[u8]) -> u32 {
    let _ = bytes;
    todo!()
}
