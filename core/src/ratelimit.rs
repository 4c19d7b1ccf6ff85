//! Anti-amplification for answers to unauthenticated UDP sources, kept in a fixed table so
//! that unauthenticated traffic creates no per-source state (RFC 8656 §21.2): sources hash
//! into buckets; a collision only shares a budget.
//!
//! An answer to a request that is not authenticated (401, 438, 400, a Binding response...)
//! goes to an address nobody has proven: a spoofed request turns the relay into a
//! reflector. The rule is QUIC's for unvalidated addresses (RFC 9000 §8): what is sent to a
//! source is bounded by what it sent, at most `factor` times the bytes received from it.
//! A real client's request precedes every answer it gets, so however many clients share an
//! address (an office or carrier NAT), their requests pay for their answers. A request
//! earns `factor` × its length in credit (banked up to [`CREDIT_CAP_BYTES`]); an answer
//! takes its length off. A source is advanced [`ADVANCE_BYTES`] before it has paid: a
//! lone client's first 401 (about 150 bytes) is larger than three times its Allocate
//! (28 bytes), and the first clients of a NAT arrive before any has sent its second,
//! larger request; the debt is paid from their next requests and is never forgiven by
//! time. So whatever the timing, the bytes sent to a source are at most `factor` × the
//! bytes received from it plus [`ADVANCE_BYTES`]. Two ceilings bound the rest: bytes per
//! second per source (what one reflection victim can get) and for the whole loop (what a
//! flood from many sources can make the relay send).
//!
//! The table is allocated once. A source is an IPv4 address, or the /64 prefix of an IPv6
//! address (one host usually owns a whole /64 and could otherwise rotate through it to get a
//! fresh budget per address). The bucket index is a keyed hash (SipHash-2-4), so without the
//! key nobody can choose addresses that all land on a victim's bucket.

use crate::server::TokenBucket;
use crate::time::Instant;
use std::net::IpAddr;

/// The limits of a [`SourceBudget`], for one event loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BudgetLimits {
    /// Bytes that may be sent per byte received from a source (RFC 9000 §8 uses 3).
    pub factor: u32,
    /// Bytes per second to one source at most; also the most credit a source can bank.
    pub source_bytes_per_s: u64,
    /// Bytes per second to all unauthenticated UDP sources together.
    pub node_bytes_per_s: u64,
}

/// Why an answer was held back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeldBack {
    /// The source has not sent enough to pay for it (`factor` × its bytes).
    Factor,
    /// The source's ceiling (bytes per second) is spent.
    SourceCeiling,
    /// The loop's ceiling for all sources is spent.
    NodeCeiling,
}

/// Credit and ceilings indexed by a keyed hash of the source address.
pub(crate) struct SourceBudget {
    /// A power-of-two number of buckets, fixed at construction.
    buckets: Box<[Bucket]>,
    /// `buckets.len() - 1`: the low bits of the hash pick the bucket.
    mask: u64,
    limits: BudgetLimits,
    /// Capacity of a bucket's ceiling, in milli-bytes: one second of it.
    ceiling_milli: u64,
    /// The most credit a bucket banks, in bytes.
    credit_cap: i64,
    /// The loop-wide ceiling.
    node: TokenBucket,
    /// The last source hashed and its bucket: a request and its answer hash once.
    last: Option<(IpAddr, usize)>,
    /// The two SipHash key halves.
    k0: u64,
    k1: u64,
}

impl core::fmt::Debug for SourceBudget {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Neither the key nor thousands of buckets belong in a log line.
        f.debug_struct("SourceBudget")
            .field("buckets", &self.buckets.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl SourceBudget {
    /// `buckets` buckets (rounded up to a power of two) with `limits`, from `now`. `key`
    /// keys the hash so sources cannot aim at one bucket.
    pub(crate) fn new(buckets: usize, limits: BudgetLimits, key: u64, now: Instant) -> Self {
        // Rounded up to a power of two so a mask picks the bucket; bounded so a bad setting
        // cannot ask for an absurd table.
        let count = buckets.clamp(1, MAX_BUCKETS).next_power_of_two();
        let ceiling_milli = limits.source_bytes_per_s.saturating_mul(MILLI);
        // Every ceiling starts full; no source starts with credit.
        let fresh = Bucket {
            credit: 0,
            ceiling_milli,
            last_ms: now.as_millis(),
        };
        SourceBudget {
            buckets: vec![fresh; count].into_boxed_slice(),
            mask: u64::try_from(count - 1).unwrap_or(0),
            limits,
            ceiling_milli,
            credit_cap: i64::try_from(limits.source_bytes_per_s.min(CREDIT_CAP_BYTES))
                .unwrap_or(i64::MAX),
            node: TokenBucket::new(limits.node_bytes_per_s.max(1), now),
            last: None,
            k0: key,
            // A second, different key half derived from the first; SipHash wants 128 bits
            // and one u64 of configured secret is what we are given.
            k1: key.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// `bytes` arrived from `src`: it earns `factor` times as much credit, up to
    /// [`CREDIT_CAP_BYTES`] or one second of its ceiling, whichever is less.
    pub(crate) fn received(&mut self, src: IpAddr, bytes: usize) {
        let earned = u64::try_from(bytes)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.limits.factor));
        let earned = i64::try_from(earned).unwrap_or(i64::MAX);
        let cap = self.credit_cap;
        let index = self.index(src);
        if let Some(b) = self.buckets.get_mut(index) {
            b.credit = b.credit.saturating_add(earned).min(cap);
        }
    }

    /// Takes `bytes` for an answer to `src` at `now`, or says why it must be held back (and
    /// then takes nothing).
    pub(crate) fn spend(
        &mut self,
        src: IpAddr,
        bytes: usize,
        now: Instant,
    ) -> Result<(), HeldBack> {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let index = self.index(src);
        let (per_s, cap_milli) = (self.limits.source_bytes_per_s, self.ceiling_milli);
        let Some(b) = self.buckets.get_mut(index) else {
            // Unreachable: the index is masked to the table size.
            return Err(HeldBack::Factor);
        };
        let cost = i64::try_from(bytes).unwrap_or(i64::MAX);
        if b.credit.saturating_sub(cost) < -ADVANCE_BYTES {
            return Err(HeldBack::Factor);
        }
        b.refill(now.as_millis(), per_s, cap_milli);
        let milli = bytes.saturating_mul(MILLI);
        if b.ceiling_milli < milli {
            return Err(HeldBack::SourceCeiling);
        }
        if !self.node.take(now, bytes) {
            return Err(HeldBack::NodeCeiling);
        }
        b.ceiling_milli -= milli;
        b.credit = b.credit.saturating_sub(cost);
        Ok(())
    }
}

/// Credit a source gets before it has paid, in bytes: 55 challenges of 150 bytes, or the
/// first 120 of a crowd whose 28-byte Allocates (84 bytes of credit each) arrive before
/// any of them sends its second request.
/// It adds to the bound on what a spoofed source can reflect, once (the debt is not
/// forgiven by time).
pub(crate) const ADVANCE_BYTES: i64 = 8_192;

/// The most credit a source banks, in bytes: 64 KiB is 400 challenges ahead of a NAT's
/// next requests, and all a spoofer can spend of what the real clients of an address paid.
pub(crate) const CREDIT_CAP_BYTES: u64 = 65_536;

/// Milli-bytes in one byte: integer math, yet a ceiling of a few bytes a second still
/// accrues every millisecond.
const MILLI: u64 = 1_000;

/// The largest table: 4 Mi buckets of 24 bytes, 96 MiB.
const MAX_BUCKETS: usize = 1 << 22;

/// One source's (or a few colliding sources') account.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// `factor` × bytes received − bytes sent, at most the cap; below zero by at most
    /// [`ADVANCE_BYTES`].
    credit: i64,
    /// What is left of the ceiling, in milli-bytes.
    ceiling_milli: u64,
    /// When the ceiling was last refilled, in core milliseconds.
    last_ms: u64,
}

impl Bucket {
    /// Adds the ceiling earned since the last refill, up to its capacity.
    fn refill(&mut self, now_ms: u64, per_s: u64, cap_milli: u64) {
        // Time going backwards (or standing still) earns nothing; `last_ms` stays put so
        // the same interval is never counted twice.
        let Some(elapsed_ms) = now_ms.checked_sub(self.last_ms) else {
            return;
        };
        let earned = elapsed_ms.saturating_mul(per_s);
        self.ceiling_milli = self.ceiling_milli.saturating_add(earned).min(cap_milli);
        self.last_ms = now_ms;
    }
}

impl SourceBudget {
    /// The bucket of `src`.
    fn index(&mut self, src: IpAddr) -> usize {
        if let Some((ip, index)) = self.last {
            if ip == src {
                return index;
            }
        }
        let hash = siphash24(self.k0, self.k1, source_key(src).as_slice());
        let index = usize::try_from(hash & self.mask).unwrap_or(0);
        self.last = Some((src, index));
        index
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

    fn limits(factor: u32, source: u64, node: u64) -> BudgetLimits {
        BudgetLimits {
            factor,
            source_bytes_per_s: source,
            node_bytes_per_s: node,
        }
    }

    /// Generous ceilings: only the factor bites.
    fn budget(buckets: usize) -> SourceBudget {
        SourceBudget::new(buckets, limits(3, 1 << 30, 1 << 40), KEY, t(0))
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
            assert_eq!(budget(asked).buckets.len(), got, "{asked}");
        }
        assert_eq!(budget(usize::MAX).buckets.len(), MAX_BUCKETS);
    }

    #[test]
    fn a_source_that_sent_nothing_gets_the_advance_and_no_more() {
        let mut b = budget(64);
        let src = ip("203.0.113.7");
        assert_eq!(b.spend(src, 8_193, t(0)), Err(HeldBack::Factor));
        assert_eq!(b.spend(src, 8_192, t(0)), Ok(()));
        assert_eq!(b.spend(src, 1, t(0)), Err(HeldBack::Factor));
        // The debt is not forgiven by time.
        assert_eq!(b.spend(src, 1, t(3_600_000)), Err(HeldBack::Factor));
        b.received(src, 1);
        assert_eq!(b.spend(src, 3, t(3_600_000)), Ok(()));
    }

    #[test]
    fn a_lone_client_gets_its_first_answer_even_when_it_is_larger_than_three_times_the_request() {
        // A 28-byte Allocate earns 84 bytes; its 401 is about 150: it goes out, and the
        // debt is paid by the next request.
        let mut b = budget(64);
        let src = ip("203.0.113.7");
        b.received(src, 28);
        assert_eq!(b.spend(src, 150, t(0)), Ok(()));
        assert_eq!(b.buckets[b.index(src)].credit, -66);
        b.received(src, 180);
        assert_eq!(b.buckets[b.index(src)].credit, 474);
    }

    /// RFC 9000 §8: at most three times the bytes received (plus the advance here).
    #[test]
    fn a_flood_of_small_requests_is_answered_with_at_most_three_times_its_bytes() {
        let mut b = budget(64);
        let src = ip("203.0.113.7");
        let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
        for i in 0..10_000u64 {
            b.received(src, 20);
            bytes_in += 20;
            if b.spend(src, 148, t(i)).is_ok() {
                bytes_out += 148;
            }
        }
        assert!(
            bytes_out <= 3 * bytes_in + 8_192,
            "{bytes_out} for {bytes_in}"
        );
        assert!(
            bytes_out + 148 >= 3 * bytes_in + 8_192,
            "{bytes_out} for {bytes_in}"
        );
    }

    #[test]
    fn many_clients_behind_one_address_pay_for_each_other() {
        // 1 000 clients in bursts of 100: each sends a 28-byte Allocate (401 of 150 back)
        // before any of the burst sends its authenticated one of 180 bytes (whose answer
        // is not charged here).
        let mut b = budget(64);
        let nat = ip("198.51.100.1");
        let mut held = 0;
        for _ in 0..10 {
            for _ in 0..100 {
                b.received(nat, 28);
                if b.spend(nat, 150, t(0)).is_err() {
                    held += 1;
                }
            }
            for _ in 0..100 {
                b.received(nat, 180);
            }
        }
        assert_eq!(held, 0);
    }

    #[test]
    fn the_source_ceiling_holds_and_refills() {
        // 10 000 bytes a second per source, so 1 000 bytes per 100 ms.
        let mut b = SourceBudget::new(64, limits(3, 10_000, 1 << 40), KEY, t(0));
        let src = ip("203.0.113.7");
        let mut sent = 0;
        for _ in 0..100 {
            b.received(src, 1_000);
            if b.spend(src, 100, t(0)).is_ok() {
                sent += 100;
            }
        }
        assert_eq!(sent, 10_000, "one second of ceiling at once");
        b.received(src, 1_000);
        assert_eq!(b.spend(src, 100, t(0)), Err(HeldBack::SourceCeiling));
        assert_eq!(b.spend(src, 100, t(9)), Err(HeldBack::SourceCeiling));
        assert_eq!(b.spend(src, 100, t(10)), Ok(()));
        assert_eq!(b.spend(src, 100, t(10)), Err(HeldBack::SourceCeiling));
        // A long pause refills one second, no more.
        let later = t(10) + Duration::from_secs(3600);
        let mut sent = 0;
        for _ in 0..200 {
            b.received(src, 1_000);
            if b.spend(src, 100, later).is_ok() {
                sent += 100;
            }
        }
        assert_eq!(sent, 10_000);
    }

    #[test]
    fn credit_is_banked_up_to_the_cap_or_one_second_of_ceiling() {
        let mut b = SourceBudget::new(64, limits(3, 1_000, 1 << 40), KEY, t(0));
        let src = ip("203.0.113.7");
        b.received(src, 1_000_000);
        assert_eq!(b.buckets[b.index(src)].credit, 1_000);
        let mut b = budget(64);
        b.received(src, 1_000_000);
        assert_eq!(b.buckets[b.index(src)].credit, 65_536);
    }

    #[test]
    fn the_node_ceiling_holds_across_sources() {
        // MIN_BURST bytes at once, then the rate.
        let mut b = SourceBudget::new(1024, limits(3, 1 << 30, 1_000), KEY, t(0));
        let mut sent = 0u64;
        for i in 0..=255u8 {
            let src = IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
            for _ in 0..10 {
                b.received(src, 100);
                if b.spend(src, 100, t(0)).is_ok() {
                    sent += 100;
                }
            }
        }
        assert_eq!(sent, crate::server::MIN_BURST / 100 * 100);
        let src = ip("192.0.2.1");
        b.received(src, 100);
        assert_eq!(b.spend(src, 100, t(0)), Err(HeldBack::NodeCeiling));
        assert_eq!(b.spend(src, 100, t(1_000)), Ok(()));
    }

    #[test]
    fn a_refusal_takes_nothing() {
        let mut b = SourceBudget::new(64, limits(3, 1_000, 1 << 40), KEY, t(0));
        let src = ip("203.0.113.7");
        b.received(src, 10_000);
        assert_eq!(b.spend(src, 2_000, t(0)), Err(HeldBack::SourceCeiling));
        assert_eq!(b.spend(src, 1_000, t(0)), Ok(()));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let mut b = SourceBudget::new(8, limits(3, 1_000, 1 << 40), KEY, t(10_000));
        let src = ip("203.0.113.7");
        b.received(src, 100_000);
        assert_eq!(b.spend(src, 1_000, t(10_000)), Ok(()));
        b.received(src, 100_000);
        assert_eq!(b.spend(src, 100, t(0)), Err(HeldBack::SourceCeiling));
        assert_eq!(b.spend(src, 100, t(9_999)), Err(HeldBack::SourceCeiling));
        assert_eq!(b.spend(src, 100, t(10_100)), Ok(()));
        // The end of time does not overflow.
        assert_eq!(b.spend(src, 900, Instant::from_nanos(u64::MAX)), Ok(()));
    }

    #[test]
    fn sources_in_different_buckets_are_independent() {
        let mut b = budget(1024);
        let a = ip("203.0.113.7");
        let c = (1u8..=255)
            .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
            .find(|cand| b.index(*cand) != b.index(a))
            .unwrap();
        b.received(a, 10_000);
        assert_eq!(
            b.spend(c, 30_000, t(0)),
            Err(HeldBack::Factor),
            "{c} earned nothing"
        );
        assert_eq!(b.spend(a, 30_000, t(0)), Ok(()));
    }

    #[test]
    fn ipv6_sources_are_their_slash_64() {
        let mut b = budget(1024);
        let first = ip("2001:db8:1:2::1");
        assert_eq!(
            b.index(first),
            b.index(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        // Another address in the same /64 shares the credit.
        b.received(first, 100);
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        assert_eq!(b.spend(same_64, 300 + 8_192, t(0)), Ok(()));
        assert_eq!(b.spend(first, 1, t(0)), Err(HeldBack::Factor));
        // Another /64 is (with this key) another bucket.
        let neighbour = (3u16..300)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, i, 0, 0, 0, 1)))
            .find(|cand| b.index(*cand) != b.index(first))
            .unwrap();
        b.received(neighbour, 1);
        assert_eq!(b.spend(neighbour, 3 + 8_192, t(0)), Ok(()));
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let mut b = budget(1024);
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
        let l = limits(3, 1, 1);
        let mut b1 = SourceBudget::new(1 << 16, l, 1, t(0));
        let mut b2 = SourceBudget::new(1 << 16, l, 2, t(0));
        let moved = (1u8..=64)
            .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
            .filter(|s| b1.index(*s) != b2.index(*s))
            .count();
        assert!(moved > 60, "{moved}");
    }

    #[test]
    fn memory_is_fixed() {
        let mut b = budget(256);
        let len = b.buckets.len();
        let ptr = b.buckets.as_ptr();
        for i in 0u32..100_000 {
            let v4 = IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761)));
            b.received(v4, 20);
            let _ = b.spend(v4, 100, t(u64::from(i)));
            let v6 = IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64 | 1));
            b.received(v6, 20);
            let _ = b.spend(v6, 100, t(u64::from(i)));
        }
        assert_eq!(b.buckets.len(), len);
        assert_eq!(b.buckets.as_ptr(), ptr, "never reallocated");
        assert_eq!(core::mem::size_of::<Bucket>(), 24);
        let dbg = format!("{b:?}");
        assert!(
            dbg.contains("buckets: 256") && !dbg.contains(&KEY.to_string()),
            "{dbg}"
        );
    }
}
