//! A per-source budget kept in a fixed table, so that unauthenticated traffic creates no
//! per-source state (RFC 8656 §21.2): sources hash into buckets; a collision only shares a
//! budget.

use crate::time::Instant;
use std::net::IpAddr;

/// Token buckets indexed by a keyed hash of the source address.
#[derive(Debug)]
pub(crate) struct SourceBudget {}

impl SourceBudget {
    /// `buckets` buckets (a power of two), each refilling `per_sec` tokens a second up to
    /// `burst`. `key` keys the hash so sources cannot aim at one bucket.
    pub(crate) fn new(buckets: usize, per_sec: u32, burst: u32, key: u64) -> Self {
        let _ = (buckets, per_sec, burst, key);
        todo!()
    }
    /// Takes a token for `src` at `now`; false when its budget is spent.
    pub(crate) fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        let _ = (src, now);
        todo!()
    }
}
