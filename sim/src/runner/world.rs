//! The world of one run: every host, the network, the oracles and the clocks, and the
//! helpers that building and running it share.

use super::outcome::START;
use crate::browser::Board;
use crate::clock::Clock;
use crate::digest::{Digest, Trace};
use crate::host::{Node, Shared};
use crate::link::{between, LinkProfile};
use crate::net::Net;
use crate::oracle::Oracle;
use crate::scenario::{LinkSpec, Via};
use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use turnpike_core::Instant;

/// One run's world, built by `build`, stepped by `step`, judged by `finish`.
pub(super) struct World {
    pub(super) seed: u64,
    pub(super) clock: Clock,
    pub(super) net: Net,
    pub(super) nodes: Vec<Node>,
    pub(super) armed: Vec<Option<Instant>>,
    pub(super) servers: usize,
    pub(super) rng: ChaCha20Rng,
    pub(super) seeds: ChaCha20Rng,
    pub(super) oracle: Oracle,
    pub(super) trace: Trace,
    pub(super) digest: Digest,
    pub(super) shared: Shared,
    pub(super) board: Board,
    pub(super) events: u64,
    pub(super) liveness_at: Instant,
    pub(super) drain_at: Instant,
    pub(super) end_at: Instant,
    pub(super) fault_profile: Vec<String>,
    pub(super) fd_windows: Vec<(usize, Instant, Instant)>,
}

/// A ChaCha stream `n` of the run's seed: one independent sub-stream per purpose.
pub(super) fn substream(seed: u64, n: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(b"turnpike");
    let mut r = ChaCha20Rng::from_seed(key);
    r.set_stream(n);
    r
}

/// The access link a group or host is given, its latency drawn from `rng`.
pub(super) fn link_of(spec: &LinkSpec, rng: &mut ChaCha20Rng) -> LinkProfile {
    LinkProfile {
        latency: Duration::from_millis(between(rng, spec.latency_ms[0], spec.latency_ms[1])),
        jitter: Duration::from_millis(spec.jitter_ms),
        loss: spec.loss,
        duplicate: spec.duplicate,
        reorder: spec.reorder,
        bandwidth_bps: spec.bandwidth_kbps * 1000,
    }
}

/// Seconds of virtual time since the start.
pub(super) fn secs_of(t: Instant) -> f64 {
    t.since(START).as_secs_f64()
}

/// Parses a transport name of a scenario file.
pub fn via_named(name: &str) -> Option<Via> {
    match name {
        "udp" => Some(Via::Udp),
        "tcp" => Some(Via::Tcp),
        "tls" => Some(Via::Tls),
        _ => None,
    }
}
