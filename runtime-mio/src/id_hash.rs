//! A cheap hash for the runtime's tables keyed by ids the process itself hands out
//! (`RelayId`, `ConnId`), looked up once or twice per relayed packet.
//!
//! These keys are counters chosen by us, not by the network, so they need no protection
//! against collision flooding (what SipHash buys); Fibonacci hashing (multiply by 2^64/φ)
//! spreads consecutive ids over the whole word, top bits included, which the standard
//! table's probing uses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hash map keyed by a runtime-assigned id.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of integer ids.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

/// 2^64 divided by the golden ratio, odd.
const PHI: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by integer ids; kept correct for any other key.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(PHI);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;
    use turnpike_core::{ConnId, RelayId};

    #[test]
    fn consecutive_ids_spread_over_the_top_bits() {
        let b = BuildHasherDefault::<IdHasher>::default();
        let mut tops = std::collections::HashSet::new();
        for r in 1..=128u32 {
            tops.insert(b.hash_one(RelayId(r)) >> 57);
        }
        assert!(tops.len() > 64, "{} distinct top-7-bit tags", tops.len());
    }

    #[test]
    fn maps_work_with_both_id_kinds() {
        let mut m: IdMap<RelayId, u32> = IdMap::default();
        let mut c: IdMap<ConnId, u32> = IdMap::default();
        for i in 0..1000u32 {
            m.insert(RelayId(i), i);
            c.insert(ConnId(u64::from(i) << 20), i);
        }
        for i in 0..1000u32 {
            assert_eq!(m.get(&RelayId(i)), Some(&i));
            assert_eq!(c.get(&ConnId(u64::from(i) << 20)), Some(&i));
        }
        assert_eq!(m.get(&RelayId(1000)), None);
    }
}
