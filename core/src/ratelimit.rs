//! A per-source budget kept in a fixed table, so that unauthenticated traffic creates no
//! per-source state (RFC 8656 §21.2): sources hash into buckets; a collision only shares a
//! budget.
//!
//! The table is allocated once. A source is an IPv4 address, or the /64 prefix of an IPv6
//! address (one host usually owns a whole /64 and could otherwise rotate through it to get a
//! fresh budget per address). The bucket index is a keyed hash (SipHash-2-4), so without the
//! key nobody can choose addresses that all land on a victim's bucket.

use crate::time::Instant;
use std::net::IpAddr;

/// Token buckets indexed by a keyed hash of the source address.
pub(crate) struct SourceBudget {
    /// A power-of-two number of buckets, fixed at construction.
    buckets: Box<[Bucket]>,
    /// `buckets.len() - 1`: the low bits of the hash pick the bucket.
    mask: u64,
    /// Refill rate: tokens per second, which is also milli-tokens per millisecond.
    per_sec: u64,
    /// Bucket capacity in milli-tokens.
    burst_milli: u64,
    /// The two SipHash key halves.
    k0: u64,
    k1: u64,
}

impl core::fmt::Debug for SourceBudget {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Neither the key nor thousands of buckets belong in a log line.
        f.debug_struct("SourceBudget")
            .field("buckets", &self.buckets.len())
            .field("per_sec", &self.per_sec)
            .field("burst", &(self.burst_milli / MILLI))
            .finish_non_exhaustive()
    }
}

impl SourceBudget {
    /// `buckets` buckets (a power of two), each refilling `per_sec` tokens a second up to
    /// `burst`. `key` keys the hash so sources cannot aim at one bucket.
    pub(crate) fn new(buckets: usize, per_sec: u32, burst: u32, key: u64) -> Self {
        // Rounded up to a power of two so a mask picks the bucket; bounded so a bad setting
        // cannot ask for an absurd table.
        let count = buckets.clamp(1, MAX_BUCKETS).next_power_of_two();
        let burst_milli = u64::from(burst) * MILLI;
        // Every bucket starts full: a source's first packets are never refused.
        let full = Bucket {
            milli_tokens: burst_milli,
            last_ms: 0,
        };
        SourceBudget {
            buckets: vec![full; count].into_boxed_slice(),
            mask: u64::try_from(count - 1).unwrap_or(0),
            per_sec: u64::from(per_sec),
            burst_milli,
            k0: key,
            // A second, different key half derived from the first; SipHash wants 128 bits
            // and one u64 of configured secret is what we are given.
            k1: key.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
        }
    }
    /// Takes a token for `src` at `now`; false when its budget is spent.
    pub(crate) fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        let index = self.index(src);
        let (per_sec, burst_milli) = (self.per_sec, self.burst_milli);
        let Some(bucket) = self.buckets.get_mut(index) else {
            // Unreachable: the index is masked to the table size.
            return false;
        };
        bucket.refill(now.as_millis(), per_sec, burst_milli);
        if bucket.milli_tokens >= MILLI {
            bucket.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

/// Milli-tokens in one token: integer math, yet a refill of 1 token/s still accrues
/// every millisecond.
const MILLI: u64 = 1_000;

/// The largest table: 4 Mi buckets of 16 bytes, 64 MiB.
const MAX_BUCKETS: usize = 1 << 22;

/// One token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli_tokens: u64,
    /// When tokens were last added, in core milliseconds.
    last_ms: u64,
}

impl Bucket {
    /// Adds the tokens earned since the last refill, up to the capacity.
    fn refill(&mut self, now_ms: u64, per_sec: u64, burst_milli: u64) {
        // Time going backwards (or standing still) earns nothing; `last_ms` stays put so
        // the same interval is never counted twice.
        let Some(elapsed_ms) = now_ms.checked_sub(self.last_ms) else {
            return;
        };
        let earned = elapsed_ms.saturating_mul(per_sec);
        self.milli_tokens = self.milli_tokens.saturating_add(earned).min(burst_milli);
        self.last_ms = now_ms;
    }
}

impl SourceBudget {
    /// The bucket of `src`.
    fn index(&self, src: IpAddr) -> usize {
        let hash = siphash24(self.k0, self.k1, source_key(src).as_slice());
        usize::try_from(hash & self.mask).unwrap_or(0)
    }
}

/// The bytes that name a source: a family tag and the IPv4 address, or the /64 prefix of
/// an IPv6 address. IPv4-mapped IPv6 (a dual-stack socket's view of an IPv4 client) counts
/// as the IPv4 address: otherwise every such client would share the ::ffff:0:0 /64.
fn source_key(src: IpAddr) -> SourceKey {
    let mut bytes = [0u8; 9];
    let v4 = match src {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    match (v4, src) {
        (Some(ip), _) => {
            bytes[0] = 4;
            bytes[1..5].copy_from_slice(&ip.octets());
            SourceKey { bytes, len: 5 }
        }
        (None, IpAddr::V6(ip)) => {
            bytes[0] = 6;
            bytes[1..9].copy_from_slice(&ip.octets()[..8]);
            SourceKey { bytes, len: 9 }
        }
        // Unreachable: an IPv4 address always has its octets.
        (None, IpAddr::V4(_)) => SourceKey { bytes, len: 1 },
    }
}

/// A hashed source, inline.
struct SourceKey {
    bytes: [u8; 9],
    len: usize,
}

impl SourceKey {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `msg` under the key (`k0`, `k1`): a keyed
/// hash built to be cheap on short inputs and unpredictable without the key, which is what
/// choosing a bucket needs.
fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let chunks = msg.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        let m = le_u64(chunk);
        v[3] ^= m;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= m;
    }
    // The last word: the remaining bytes, and the message length (mod 256) on top.
    let mut last = (msg.len() as u64 & 0xff) << 56;
    last |= le_u64(tail);
    v[3] ^= last;
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Up to 8 bytes as a little-endian u64 (missing high bytes are zero).
fn le_u64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .enumerate()
        .fold(0, |acc, (i, b)| acc | (u64::from(*b) << (8 * i)))
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const KEY: u64 = 0x0123_4567_89ab_cdef;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// An address of `base`'s family that lands in another bucket than `base`.
    fn other_bucket(b: &SourceBudget, base: IpAddr) -> IpAddr {
        (1u8..=255)
            .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
            .find(|cand| b.index(*cand) != b.index(base))
            .unwrap()
    }

    #[test]
    fn siphash_matches_reference() {
        // The reference implementation's first test vector: key 00..0f, empty message.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(siphash24(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
        // And the standard library's SipHash-2-4 for every length 0..=20.
        let msg: Vec<u8> = (0u8..21).collect();
        for len in 0..=msg.len() {
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            std::hash::Hasher::write(&mut h, &msg[..len]);
            assert_eq!(
                siphash24(k0, k1, &msg[..len]),
                std::hash::Hasher::finish(&h),
                "len {len}"
            );
        }
    }

    #[test]
    fn bucket_count_is_a_power_of_two() {
        for (asked, got) in [(0, 1), (1, 1), (2, 2), (3, 4), (1000, 1024), (1024, 1024)] {
            assert_eq!(
                SourceBudget::new(asked, 1, 1, KEY).buckets.len(),
                got,
                "{asked}"
            );
        }
        assert_eq!(
            SourceBudget::new(usize::MAX, 1, 1, KEY).buckets.len(),
            MAX_BUCKETS
        );
    }

    #[test]
    fn burst_then_refusal() {
        let mut b = SourceBudget::new(64, 10, 5, KEY);
        let src = ip("203.0.113.7");
        for i in 0..5 {
            assert!(b.allow(src, t(1_000)), "token {i}");
        }
        assert!(!b.allow(src, t(1_000)));
        assert!(!b.allow(src, t(1_000)));
    }

    #[test]
    fn refill_over_time() {
        // 10 tokens/s: one every 100 ms.
        let mut b = SourceBudget::new(64, 10, 5, KEY);
        let src = ip("203.0.113.7");
        while b.allow(src, t(1_000)) {}
        assert!(!b.allow(src, t(1_099)));
        assert!(b.allow(src, t(1_100)), "99 + 1 ms earned one token");
        assert!(!b.allow(src, t(1_100)));
        assert!(b.allow(src, t(1_300)));
        assert!(b.allow(src, t(1_300)));
        assert!(!b.allow(src, t(1_300)));
        // A long pause refills to the burst, no further.
        let later = t(1_300) + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(b.allow(src, later));
        }
        assert!(!b.allow(src, later));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let mut b = SourceBudget::new(8, 10, 2, KEY);
        let src = ip("203.0.113.7");
        assert!(b.allow(src, t(10_000)));
        assert!(b.allow(src, t(10_000)));
        assert!(!b.allow(src, t(0)));
        assert!(!b.allow(src, t(9_999)));
        // The interval already counted is not counted again: at 10 100 one token is earned.
        assert!(b.allow(src, t(10_100)));
        assert!(!b.allow(src, t(10_100)));
        // The end of time does not overflow.
        assert!(b.allow(src, Instant::from_nanos(u64::MAX)));
        assert!(b.allow(src, Instant::from_nanos(u64::MAX)));
        assert!(!b.allow(src, Instant::from_nanos(u64::MAX)));
    }

    #[test]
    fn zero_rates() {
        let mut none = SourceBudget::new(8, 100, 0, KEY);
        assert!(!none.allow(ip("203.0.113.7"), t(5_000)));
        let mut no_refill = SourceBudget::new(8, 0, 1, KEY);
        assert!(no_refill.allow(ip("203.0.113.7"), t(0)));
        assert!(!no_refill.allow(ip("203.0.113.7"), t(u64::MAX / 2_000_000)));
    }

    #[test]
    fn sources_in_different_buckets_are_independent() {
        let mut b = SourceBudget::new(1024, 1, 3, KEY);
        let a = ip("203.0.113.7");
        let c = other_bucket(&b, a);
        while b.allow(a, t(0)) {}
        for _ in 0..3 {
            assert!(b.allow(c, t(0)), "{c} has its own budget");
        }
        assert!(!b.allow(c, t(0)));
        assert!(!b.allow(a, t(0)));
    }

    #[test]
    fn ipv6_sources_are_their_slash_64() {
        let mut b = SourceBudget::new(1024, 1, 3, KEY);
        let first = ip("2001:db8:1:2::1");
        assert_eq!(
            b.index(first),
            b.index(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        for _ in 0..3 {
            assert!(b.allow(first, t(0)));
        }
        // Another address in the same /64 finds the budget spent.
        for i in 2u16..50 {
            let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i));
            assert!(!b.allow(same_64, t(0)), "{same_64}");
        }
        // Another /64 is (with this key) another bucket.
        let neighbour = (3u16..300)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, i, 0, 0, 0, 1)))
            .find(|cand| b.index(*cand) != b.index(first))
            .unwrap();
        assert!(b.allow(neighbour, t(0)));
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let b = SourceBudget::new(1024, 1, 3, KEY);
        assert_eq!(
            b.index(ip("203.0.113.7")),
            b.index(ip("::ffff:203.0.113.7"))
        );
        // Mapped IPv4 clients do not all share the ::ffff:0:0/64 bucket.
        let spread: std::collections::BTreeSet<usize> = (1u8..=32)
            .map(|i| b.index(IpAddr::V6(Ipv4Addr::new(198, 51, 100, i).to_ipv6_mapped())))
            .collect();
        assert!(spread.len() > 16, "{spread:?}");
    }

    #[test]
    fn the_key_moves_sources_around() {
        let b1 = SourceBudget::new(1 << 16, 1, 1, 1);
        let b2 = SourceBudget::new(1 << 16, 1, 1, 2);
        let moved = (1u8..=64)
            .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
            .filter(|s| b1.index(*s) != b2.index(*s))
            .count();
        assert!(moved > 60, "{moved}");
    }

    #[test]
    fn memory_is_fixed() {
        let mut b = SourceBudget::new(256, 1, 1, KEY);
        let len = b.buckets.len();
        let ptr = b.buckets.as_ptr();
        for i in 0u32..100_000 {
            b.allow(
                IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))),
                t(u64::from(i)),
            );
            let v6 = Ipv6Addr::from(u128::from(i) << 64 | 1);
            b.allow(IpAddr::V6(v6), t(u64::from(i)));
        }
        assert_eq!(b.buckets.len(), len);
        assert_eq!(b.buckets.as_ptr(), ptr, "never reallocated");
        assert_eq!(core::mem::size_of::<Bucket>(), 16);
        let dbg = format!("{b:?}");
        assert!(
            dbg.contains("buckets: 256") && !dbg.contains(&KEY.to_string()),
            "{dbg}"
        );
    }
}
