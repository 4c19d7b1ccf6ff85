//! MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 §14.5–14.7).

use hmac::digest::{Digest, KeyInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::IntegrityKind;

/// The value FINGERPRINT's CRC-32 is xored with (RFC 8489 §14.7): "STUN" in ASCII.
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Block size of both SHA-1 and SHA-256, the length HMAC pads or hashes its key to.
const BLOCK_LEN: usize = 64;

/// A long-term key made ready for the HMAC of one integrity attribute (RFC 2104 §2: the
/// inner and outer padded key blocks hashed ahead, once). Checking a request and signing
/// its answer with the same prepared key hashes two blocks fewer each; the server keeps
/// one per allocation for the requests that follow.
#[derive(Clone)]
pub enum IntegrityKey {
    /// For MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5).
    Sha1(Hmac<Sha1>),
    /// For MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    Sha256(Hmac<Sha256>),
}

impl core::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IntegrityKey({:?}, ..)", self.kind())
    }
}

impl IntegrityKey {
    /// `key` prepared for the `kind` attribute.
    pub fn new(kind: IntegrityKind, key: &[u8]) -> Self {
        match kind {
            IntegrityKind::Sha1 => {
                let block = key_block::<Sha1>(key);
                IntegrityKey::Sha1(<Hmac<Sha1> as KeyInit>::new((&block).into()))
            }
            IntegrityKind::Sha256 => {
                let block = key_block::<Sha256>(key);
                IntegrityKey::Sha256(<Hmac<Sha256> as KeyInit>::new((&block).into()))
            }
        }
    }
    /// Which attribute it is for.
    pub fn kind(&self) -> IntegrityKind {
        match self {
            IntegrityKey::Sha1(_) => IntegrityKind::Sha1,
            IntegrityKey::Sha256(_) => IntegrityKind::Sha256,
        }
    }
    /// The HMAC of `parts` concatenated: 20 bytes (SHA-1) or 32 (SHA-256) of the array.
    pub fn mac(&self, parts: &[&[u8]]) -> ([u8; 32], usize) {
        let mut out = [0u8; 32];
        let len = match self {
            IntegrityKey::Sha1(prepared) => {
                let mut mac = prepared.clone();
                for part in parts {
                    mac.update(part);
                }
                copy_into(&mut out, &mac.finalize().into_bytes())
            }
            IntegrityKey::Sha256(prepared) => {
                let mut mac = prepared.clone();
                for part in parts {
                    mac.update(part);
                }
                copy_into(&mut out, &mac.finalize().into_bytes())
            }
        };
        (out, len)
    }
}

/// Copies `src` to the front of `dst`; returns how many bytes.
fn copy_into(dst: &mut [u8; 32], src: &[u8]) -> usize {
    let mut n = 0;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
        n += 1;
    }
    n
}

/// HMAC-SHA1 of `parts` concatenated, with `key` (RFC 2104, as RFC 8489 §14.5 uses it).
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let block = key_block::<Sha1>(key);
    let mut mac = <Hmac<Sha1> as KeyInit>::new((&block).into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 of `parts` concatenated, with `key` (RFC 2104, as RFC 8489 §14.6 uses it).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let block = key_block::<Sha256>(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new((&block).into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The FINGERPRINT value of `bytes`: CRC-32 xor 0x5354554E (RFC 8489 §14.7).
pub fn fingerprint(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ FINGERPRINT_XOR
}

/// The key as HMAC sees it (RFC 2104 §2): hashed when longer than a block, then
/// zero-padded to a block. Doing this ourselves lets the MAC be built from a fixed-size
/// key, an infallible constructor, instead of one returning an error that cannot happen.
fn key_block<D: Digest>(key: &[u8]) -> [u8; BLOCK_LEN] {
    let mut block = [0u8; BLOCK_LEN];
    if key.len() > BLOCK_LEN {
        let digest = D::digest(key);
        for (dst, src) in block.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
    } else {
        for (dst, src) in block.iter_mut().zip(key) {
            *dst = *src;
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_sha1_matches_rfc2202_vectors() {
        // RFC 2202 §3, test cases 2 and 6 (key longer than a block).
        assert_eq!(
            hmac_sha1(b"Jefe", &[b"what do ya want ", b"for nothing?"]).to_vec(),
            hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
        assert_eq!(
            hmac_sha1(
                &[0xaa; 80],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )
            .to_vec(),
            hex("aa4ae5e15272d00e95705637ce8a3b55ed402112")
        );
    }

    #[test]
    fn hmac_sha256_matches_rfc4231_vectors() {
        // RFC 4231 §4.3 (test case 2) and §4.7 (test case 6, 131-byte key).
        assert_eq!(
            hmac_sha256(b"Jefe", &[b"what do ya want for nothing?"]).to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            hmac_sha256(
                &[0xaa; 131],
                &[
                    b"Test Using Larger Than Block-Size Key - ",
                    b"Hash Key First"
                ]
            )
            .to_vec(),
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    #[test]
    fn prepared_keys_give_the_same_macs() {
        for key in [&b"Jefe"[..], &[0xaa; 80][..], &[0xaa; 131][..], &b""[..]] {
            let parts: [&[u8]; 2] = [b"what do ya want ", b"for nothing?"];
            let k1 = IntegrityKey::new(IntegrityKind::Sha1, key);
            assert_eq!(k1.kind(), IntegrityKind::Sha1);
            let (mac, len) = k1.mac(&parts);
            assert_eq!(mac[..len], hmac_sha1(key, &parts));
            // Prepared once, used many times.
            assert_eq!(k1.mac(&parts), (mac, len));
            let k256 = IntegrityKey::new(IntegrityKind::Sha256, key);
            assert_eq!(k256.kind(), IntegrityKind::Sha256);
            let (mac, len) = k256.mac(&parts);
            assert_eq!(mac[..len], hmac_sha256(key, &parts));
        }
    }

    #[test]
    fn fingerprint_is_crc32_xor_stun() {
        // CRC-32 of "123456789" is 0xCBF43926 (the standard check value).
        assert_eq!(fingerprint(b"123456789"), 0xCBF4_3926 ^ 0x5354_554e);
        assert_eq!(fingerprint(b""), 0x5354_554e);
    }
}
