//! Stateless nonces (RFC 8489 §9.2.2, §9.2.4).
//!
//! A nonce is `[cookie features] timestamp mac`: the issue time on the core's monotonic clock
//! (milliseconds, 16 lower-case hex digits) and the first 12 bytes of
//! HMAC-SHA256(key, flag || timestamp || client IP || client port) (24 lower-case hex
//! digits). The server keeps nothing per nonce: checking one is recomputing its MAC. Binding
//! the MAC to the client's transport address means a nonce seen on the wire is useless from
//! elsewhere; binding it to the `flag` (cookie present or not) means a man in the middle
//! cannot strip the nonce cookie to bid the client down (RFC 8489 §9.2.1).

use crate::time::Instant;
use core::time::Duration;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

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

/// A [`NonceKey`] made ready for HMAC once (RFC 2104 §2: the inner and outer padded key
/// blocks are hashed ahead), so that issuing or checking a nonce hashes two blocks, not
/// four. The server keeps one; every request with credentials checks a nonce.
#[derive(Clone)]
pub struct NonceSigner {
    mac: Hmac<Sha256>,
}

impl core::fmt::Debug for NonceSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NonceSigner(..)")
    }
}

impl NonceSigner {
    /// The signer for `key`.
    pub fn new(key: &NonceKey) -> Self {
        let mac = match Hmac::<Sha256>::new_from_slice(&key.0) {
            Ok(mac) => mac,
            // HMAC takes keys of any length: there is no invalid one.
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        NonceSigner { mac }
    }

    /// A nonce for `client` issued at `now` (see [`make_nonce`]).
    pub fn make(&self, client: SocketAddr, now: Instant, security_features: bool) -> String {
        let ts_ms = now.as_millis();
        let mac = self.mac(security_features, ts_ms, client);
        let mut out = String::with_capacity(NONCE_COOKIE.len() + FEATURES.len() + PAYLOAD_LEN);
        if security_features {
            out.push_str(NONCE_COOKIE);
            out.push_str(FEATURES);
        }
        push_hex(&mut out, &ts_ms.to_be_bytes());
        push_hex(&mut out, &mac);
        out
    }

    /// Checks a nonce presented by `client` at `now` (see [`check_nonce`]).
    pub fn check(
        &self,
        nonce: &[u8],
        client: SocketAddr,
        now: Instant,
        lifetime: Duration,
    ) -> NonceCheck {
        let Some(parsed) = parse(nonce) else {
            return NonceCheck::Invalid;
        };
        let expected = self.mac(parsed.security_features, parsed.ts_ms, client);
        // Constant time, so the MAC cannot be guessed byte by byte from response timing.
        if !bool::from(expected.ct_eq(&parsed.mac)) {
            return NonceCheck::Invalid;
        }
        judge_age(&parsed, now, lifetime)
    }

    /// Checks a nonce presented by `client` at `now`, skipping the MAC when `memo` holds
    /// the very same bytes as verified for `client`: the MAC covers the issue time, the
    /// feature flag and the client's address, so it would verify again. The age is judged
    /// all the same (RFC 8489 §9.2: a nonce expires).
    pub fn check_remembered(
        &self,
        memo: &VerifiedNonces,
        nonce: &[u8],
        client: SocketAddr,
        now: Instant,
        lifetime: Duration,
    ) -> NonceCheck {
        if !memo.holds(client, nonce) {
            return self.check(nonce, client, now, lifetime);
        }
        match parse(nonce) {
            Some(parsed) => judge_age(&parsed, now, lifetime),
            None => NonceCheck::Invalid,
        }
    }

    /// The truncated HMAC that signs a nonce for `client`.
    fn mac(&self, security_features: bool, ts_ms: u64, client: SocketAddr) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(&[u8::from(security_features)]);
        mac.update(&ts_ms.to_be_bytes());
        // Fixed-length fields around the address, whose length tells the family apart.
        match client.ip() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        for (o, b) in out.iter_mut().zip(full.iter()) {
            *o = *b;
        }
        out
    }
}

/// A nonce for `client` issued at `now`. With `security_features` it starts with the
/// nonce cookie and the feature bits for password algorithms and USERHASH.
pub fn make_nonce(
    key: &NonceKey,
    client: SocketAddr,
    now: Instant,
    security_features: bool,
) -> String {
    NonceSigner::new(key).make(client, now, security_features)
}

/// Checks a nonce presented by `client` at `now`; older than `lifetime` is stale.
pub fn check_nonce(
    key: &NonceKey,
    nonce: &[u8],
    client: SocketAddr,
    now: Instant,
    lifetime: Duration,
) -> NonceCheck {
    NonceSigner::new(key).check(nonce, client, now, lifetime)
}

/// The 24-bit STUN Security Feature set we announce, as 4 base64 characters
/// (RFC 8489 §9.2, §18.1): "Password algorithms" is bit 0 and "Username anonymity" bit 1,
/// counted from the least significant bit (RFC 8489 erratum 6290; the Appendix B.1 nonce
/// "obMatJos2AAAC..." is the anonymity bit alone). Both set: 0x000003 = "AAAD".
const FEATURES: &str = "AAAD";

/// Bytes of the MAC kept in a nonce: 96 bits is plenty against forgery within a lifetime.
const MAC_LEN: usize = 12;

/// Hex characters of the timestamp (a whole u64) and of the MAC.
const TS_HEX_LEN: usize = 16;
const PAYLOAD_LEN: usize = TS_HEX_LEN + 2 * MAC_LEN;

/// How far in the future an issue time may be and still be accepted.
const FUTURE_SLACK_MS: u64 = 1_000;

/// A nonce taken apart, MAC not yet checked.
struct Parsed {
    security_features: bool,
    ts_ms: u64,
    mac: [u8; MAC_LEN],
}

/// Judges the age of a nonce whose MAC is known to be good.
fn judge_age(parsed: &Parsed, now: Instant, lifetime: Duration) -> NonceCheck {
    let now_ms = now.as_millis();
    // Our own clock never issues from the future; a little slack covers event loops
    // whose clocks were read a moment apart.
    if parsed.ts_ms > now_ms.saturating_add(FUTURE_SLACK_MS) {
        return NonceCheck::Invalid;
    }
    let age_ms = now_ms.saturating_sub(parsed.ts_ms);
    if u128::from(age_ms) > lifetime.as_millis() {
        return NonceCheck::Stale;
    }
    NonceCheck::Valid {
        security_features: parsed.security_features,
    }
}

/// Nonces whose MAC was verified, with the client address they were verified for: a
/// small direct-mapped table (a slot per hash of the address; a newer nonce evicts an
/// older one), fixed at construction, so that the requests of an authenticated client
/// skip the nonce's HMAC. The server remembers the nonces it issues and those of requests
/// that passed authentication; a flood that overwrites slots only costs MACs: nothing
/// here can be grown or abused into accepting a nonce the MAC would not.
#[derive(Clone)]
pub struct VerifiedNonces {
    slots: Box<[Remembered]>,
}

/// One remembered nonce.
#[derive(Clone, Copy)]
struct Remembered {
    client: Option<SocketAddr>,
    len: u8,
    nonce: [u8; REMEMBERED_MAX],
}

/// The longest nonce remembered: ours are 53 bytes with the cookie, 40 without.
const REMEMBERED_MAX: usize = 56;

impl core::fmt::Debug for VerifiedNonces {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VerifiedNonces")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl VerifiedNonces {
    /// A table of `slots` entries (rounded up to a power of two, at least one).
    pub fn new(slots: usize) -> Self {
        let empty = Remembered {
            client: None,
            len: 0,
            nonce: [0; REMEMBERED_MAX],
        };
        VerifiedNonces {
            slots: vec![empty; slots.clamp(1, 1 << 20).next_power_of_two()].into_boxed_slice(),
        }
    }

    /// Remembers that `nonce` verified for `client` (call it once the request it came
    /// with has passed authentication).
    pub fn remember(&mut self, client: SocketAddr, nonce: &[u8]) {
        let i = self.slot(client);
        let (Some(slot), Ok(len)) = (self.slots.get_mut(i), u8::try_from(nonce.len())) else {
            return;
        };
        let Some(dst) = slot.nonce.get_mut(..nonce.len()) else {
            return;
        };
        dst.copy_from_slice(nonce);
        slot.len = len;
        slot.client = Some(client);
    }

    /// True when `nonce` is, byte for byte, one remembered for `client`.
    pub fn holds(&self, client: SocketAddr, nonce: &[u8]) -> bool {
        self.slots.get(self.slot(client)).is_some_and(|s| {
            s.client == Some(client) && s.nonce.get(..usize::from(s.len)) == Some(nonce)
        })
    }

    fn slot(&self, client: SocketAddr) -> usize {
        // Fibonacci hashing of the address and port: cheap, and an uneven spread only
        // costs MACs.
        let ip: u64 = match client.ip() {
            IpAddr::V4(ip) => u64::from(u32::from(ip)),
            IpAddr::V6(ip) => {
                let v = u128::from(ip);
                (v as u64) ^ ((v >> 64) as u64)
            }
        };
        let h = (ip ^ (u64::from(client.port()) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & (self.slots.len() - 1)
    }
}

/// Splits a nonce into its fields; None if it is not exactly in our format.
fn parse(nonce: &[u8]) -> Option<Parsed> {
    let (security_features, payload) = match nonce.strip_prefix(NONCE_COOKIE.as_bytes()) {
        Some(rest) => {
            // A cookie with other feature bits is not one we wrote.
            let payload = rest.strip_prefix(FEATURES.as_bytes())?;
            (true, payload)
        }
        None => (false, nonce),
    };
    if payload.len() != PAYLOAD_LEN {
        return None;
    }
    let (ts_hex, mac_hex) = payload.split_at(TS_HEX_LEN);
    let mut ts = [0u8; 8];
    decode_hex(ts_hex, &mut ts)?;
    let mut mac = [0u8; MAC_LEN];
    decode_hex(mac_hex, &mut mac)?;
    Some(Parsed {
        security_features,
        ts_ms: u64::from_be_bytes(ts),
        mac,
    })
}

/// Appends `bytes` as lower-case hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Decodes lower-case hex (the only form we write) into `out`; `hex` must be twice its size.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (nibble(*hi)?, nibble(*lo)?),
            _ => return None,
        };
        *o = (hi << 4) | lo;
    }
    Some(())
}

/// The value of one lower-case hex digit.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use proptest::prelude::*;

    const KEY: NonceKey = NonceKey([7u8; 32]);
    const LIFETIME: Duration = Duration::from_secs(3600);

    fn client() -> SocketAddr {
        "192.0.2.1:40000".parse().unwrap()
    }

    fn t0() -> Instant {
        Instant::from_secs(1_000_000)
    }

    fn check(nonce: &str, client: SocketAddr, now: Instant) -> NonceCheck {
        check_nonce(&KEY, nonce.as_bytes(), client, now, LIFETIME)
    }

    #[test]
    fn feature_bits_are_password_algorithms_and_username_anonymity() {
        let bits = STANDARD.decode(FEATURES).unwrap();
        assert_eq!(bits, [0x00, 0x00, 0x03]);
        // RFC 8489 Appendix B.1 announces username anonymity alone as "AAAC": bit 1.
        assert_eq!(STANDARD.decode("AAAC").unwrap(), [0x00, 0x00, 0x02]);
    }

    #[test]
    fn signer_agrees_with_the_key() {
        let signer = NonceSigner::new(&KEY);
        for features in [true, false] {
            let n = signer.make(client(), t0(), features);
            assert_eq!(n, make_nonce(&KEY, client(), t0(), features));
            assert_eq!(
                signer.check(n.as_bytes(), client(), t0(), LIFETIME),
                check(&n, client(), t0())
            );
            let other = NonceSigner::new(&NonceKey([8u8; 32]));
            assert_eq!(
                other.check(n.as_bytes(), client(), t0(), LIFETIME),
                NonceCheck::Invalid
            );
        }
    }

    #[test]
    fn a_remembered_nonce_skips_the_mac_but_still_expires() {
        let signer = NonceSigner::new(&KEY);
        let mut memo = VerifiedNonces::new(64);
        let n = signer.make(client(), t0(), true);
        memo.remember(client(), n.as_bytes());
        assert!(memo.holds(client(), n.as_bytes()));
        let check = |memo: &VerifiedNonces, nonce: &[u8], c: SocketAddr, now: Instant| {
            signer.check_remembered(memo, nonce, c, now, LIFETIME)
        };
        assert_eq!(
            check(&memo, n.as_bytes(), client(), t0()),
            NonceCheck::Valid {
                security_features: true
            }
        );
        // RFC 8489 §9.2: it expires all the same.
        let late = t0() + LIFETIME + Duration::from_millis(1);
        assert_eq!(
            check(&memo, n.as_bytes(), client(), late),
            NonceCheck::Stale
        );
        // From another address it is not held, and the MAC says no.
        let other: SocketAddr = "192.0.2.1:40001".parse().unwrap();
        assert!(!memo.holds(other, n.as_bytes()));
        assert_eq!(check(&memo, n.as_bytes(), other, t0()), NonceCheck::Invalid);
        // A changed byte is not held either.
        let mut forged = n.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert!(!memo.holds(client(), &forged));
        assert_eq!(check(&memo, &forged, client(), t0()), NonceCheck::Invalid);
        // A newer nonce for the same client takes the slot.
        let n2 = signer.make(client(), t0() + Duration::from_secs(1), true);
        memo.remember(client(), n2.as_bytes());
        assert!(memo.holds(client(), n2.as_bytes()));
        assert!(!memo.holds(client(), n.as_bytes()));
        // Too long to remember: never held, checked in full.
        let long = [b'a'; 100];
        memo.remember(client(), &long);
        assert!(!memo.holds(client(), &long));
    }

    proptest! {
        /// With or without the memo, the verdict is the same.
        #[test]
        fn the_memo_never_changes_a_verdict(
            issued_s in 0u64..10_000,
            age_ms in 0u64..8_000_000,
            port in 1u16..4,
            remembered_port in 1u16..4,
            flip in proptest::option::of(0usize..53),
        ) {
            let signer = NonceSigner::new(&KEY);
            let issued_at = Instant::from_secs(1_000_000 + issued_s);
            let issued_to: SocketAddr = SocketAddr::new(client().ip(), remembered_port);
            let mut nonce = signer.make(issued_to, issued_at, true).into_bytes();
            let mut memo = VerifiedNonces::new(8);
            memo.remember(issued_to, &nonce);
            if let Some(i) = flip {
                nonce[i] ^= 1;
            }
            let from = SocketAddr::new(client().ip(), port);
            let now = issued_at + Duration::from_millis(age_ms);
            prop_assert_eq!(
                signer.check_remembered(&memo, &nonce, from, now, LIFETIME),
                signer.check(&nonce, from, now, LIFETIME)
            );
        }
    }

    #[test]
    fn roundtrip_with_and_without_features() {
        for features in [true, false] {
            let n = make_nonce(&KEY, client(), t0(), features);
            assert_eq!(n.starts_with("obMatJos2AAAD"), features, "{n}");
            assert_eq!(
                check(&n, client(), t0()),
                NonceCheck::Valid {
                    security_features: features
                }
            );
            assert_eq!(
                check(&n, client(), t0() + Duration::from_secs(60)),
                NonceCheck::Valid {
                    security_features: features
                }
            );
        }
    }

    /// RFC 8489 §14.10: NONCE is fewer than 128 characters of qdtext; ours are plain ASCII
    /// with no quote or backslash.
    #[test]
    fn nonce_is_short_printable_ascii() {
        for client in [client(), "[2001:db8::1]:65535".parse().unwrap()] {
            for features in [true, false] {
                let n = make_nonce(&KEY, client, Instant::from_nanos(u64::MAX), features);
                assert!(n.len() < 128);
                assert_eq!(n.len(), if features { 53 } else { 40 });
                assert!(
                    n.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn another_client_address_is_invalid() {
        let n = make_nonce(&KEY, client(), t0(), true);
        for other in [
            "192.0.2.2:40000",
            "192.0.2.1:40001",
            "[::ffff:192.0.2.1]:40000",
            "[2001:db8::1]:40000",
        ] {
            assert_eq!(
                check(&n, other.parse().unwrap(), t0()),
                NonceCheck::Invalid,
                "{other}"
            );
        }
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let n6 = make_nonce(&KEY, v6, t0(), false);
        assert_eq!(
            check(&n6, v6, t0()),
            NonceCheck::Valid {
                security_features: false
            }
        );
        assert_eq!(
            check(&n6, "[2001:db8::2]:5000".parse().unwrap(), t0()),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn another_key_is_invalid() {
        let n = make_nonce(&KEY, client(), t0(), true);
        let other = NonceKey([8u8; 32]);
        assert_eq!(
            check_nonce(&other, n.as_bytes(), client(), t0(), LIFETIME),
            NonceCheck::Invalid
        );
        // The same key in another event loop accepts it.
        let same = NonceKey([7u8; 32]);
        assert_eq!(
            check_nonce(&same, n.as_bytes(), client(), t0(), LIFETIME),
            NonceCheck::Valid {
                security_features: true
            }
        );
    }

    #[test]
    fn stale_after_lifetime_and_only_then() {
        let n = make_nonce(&KEY, client(), t0(), true);
        assert_eq!(
            check(&n, client(), t0() + LIFETIME),
            NonceCheck::Valid {
                security_features: true
            }
        );
        let later = t0() + LIFETIME + Duration::from_millis(1);
        assert_eq!(check(&n, client(), later), NonceCheck::Stale);
        // A stale nonce for another address is not "ours": still Invalid.
        assert_eq!(
            check(&n, "192.0.2.9:40000".parse().unwrap(), later),
            NonceCheck::Invalid
        );
        // Zero lifetime: stale one millisecond later.
        let z = check_nonce(
            &KEY,
            n.as_bytes(),
            client(),
            t0() + Duration::from_millis(1),
            Duration::ZERO,
        );
        assert_eq!(z, NonceCheck::Stale);
    }

    #[test]
    fn future_beyond_a_second_is_invalid() {
        let n = make_nonce(&KEY, client(), t0() + Duration::from_millis(1_000), true);
        assert_eq!(
            check(&n, client(), t0()),
            NonceCheck::Valid {
                security_features: true
            }
        );
        let n = make_nonce(&KEY, client(), t0() + Duration::from_millis(1_001), true);
        assert_eq!(check(&n, client(), t0()), NonceCheck::Invalid);
        // Issued near the end of time, checked at the start: no overflow.
        let n = make_nonce(&KEY, client(), Instant::from_nanos(u64::MAX), false);
        assert_eq!(
            check(&n, client(), Instant::from_nanos(0)),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn tampering_is_invalid() {
        let n = make_nonce(&KEY, client(), t0(), true);
        // Every single-byte change, including case changes of hex digits.
        for i in 0..n.len() {
            for replacement in [b'0', b'f', b'A', b'z', b'"', 0] {
                let mut bytes = n.clone().into_bytes();
                if bytes[i] == replacement {
                    continue;
                }
                bytes[i] = replacement;
                assert_eq!(
                    check_nonce(&KEY, &bytes, client(), t0(), LIFETIME),
                    NonceCheck::Invalid,
                    "byte {i} -> {replacement}"
                );
            }
        }
        // Truncated or extended.
        assert_eq!(
            check(&n[..n.len() - 1], client(), t0()),
            NonceCheck::Invalid
        );
        assert_eq!(check(&format!("{n}0"), client(), t0()), NonceCheck::Invalid);
    }

    #[test]
    fn stripping_or_changing_the_cookie_is_invalid() {
        let n = make_nonce(&KEY, client(), t0(), true);
        // Bid-down: the cookie removed by a man in the middle.
        assert_eq!(check(&n[13..], client(), t0()), NonceCheck::Invalid);
        // Other feature bits than the ones we write.
        for other in ["AAAA", "AAAB", "AAAC", "wAAA", "////"] {
            let forged = format!("obMatJos2{other}{}", &n[13..]);
            assert_eq!(
                check(&forged, client(), t0()),
                NonceCheck::Invalid,
                "{other}"
            );
        }
        // A cookie added to a nonce issued without one.
        let plain = make_nonce(&KEY, client(), t0(), false);
        assert_eq!(
            check(&format!("obMatJos2AAAD{plain}"), client(), t0()),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn garbage_is_invalid() {
        for g in [
            &b""[..],
            b"obMatJos2",
            b"obMatJos2AAAD",
            b"x",
            &[0xff; 40],
            &[b'0'; 40],
            &[b'0'; 53],
        ] {
            assert_eq!(
                check_nonce(&KEY, g, client(), t0(), LIFETIME),
                NonceCheck::Invalid
            );
        }
        let huge = vec![b'a'; 1 << 20];
        assert_eq!(
            check_nonce(&KEY, &huge, client(), t0(), LIFETIME),
            NonceCheck::Invalid
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_invalid(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(check_nonce(&KEY, &bytes, client(), t0(), LIFETIME), NonceCheck::Invalid);
        }

        #[test]
        fn arbitrary_hex_shaped_input_is_invalid(
            cookie in any::<bool>(),
            payload in "[0-9a-f]{40}",
        ) {
            let s = if cookie { format!("obMatJos2AAAD{payload}") } else { payload };
            prop_assert_eq!(check(&s, client(), t0()), NonceCheck::Invalid);
        }

        #[test]
        fn roundtrip_any_time_and_address(
            ms in 0u64..(u64::MAX / 1_000_000),
            ip in any::<[u8; 16]>(),
            port in any::<u16>(),
            v4 in any::<bool>(),
            features in any::<bool>(),
        ) {
            let addr = if v4 {
                SocketAddr::new(IpAddr::from([ip[0], ip[1], ip[2], ip[3]]), port)
            } else {
                SocketAddr::new(IpAddr::from(ip), port)
            };
            let now = Instant::from_millis(ms);
            let n = make_nonce(&KEY, addr, now, features);
            prop_assert_eq!(
                check_nonce(&KEY, n.as_bytes(), addr, now, LIFETIME),
                NonceCheck::Valid { security_features: features }
            );
        }
    }
}
