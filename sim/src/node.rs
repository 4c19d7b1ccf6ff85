//! A relay node of several event loops, as the runtime runs it (`workers = N`): one core
//! per loop, clients spread over the loops as SO_REUSEPORT spreads them, and the messages
//! the cores exchange carried as events with virtual latency.
//!
//! - [`LoopHash`]: the kernel's choice of loop for a datagram or a new connection, a
//!   seeded hash of the 4-tuple (source address and port, destination address and port).
//!   The same 4-tuple always lands on the same loop; the key changes with the run's seed,
//!   so a sweep explores different spreads.
//! - [`Cores`]: the cores of one node, each configured from the same server spec with
//!   its place (`config.node`) and its own seed, sharing the nonce key of loop 0 (as the
//!   runtime's loops of one process do, so a nonce issued by one loop is accepted by
//!   another: RFC 8489 §9.2).
//! - [`message_latency`]: how long a [`LoopMsg`] takes from one loop to another (2 to
//!   200 µs, drawn from the run's randomness: messages are delayed and overtake each other
//!   as the seed decides, which [`turnpike_core::node`] says every exchange survives).

use crate::scenario::ServerSpec;
use crate::server::config_of;
use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use std::net::SocketAddr;
use turnpike_core::node::{LoopId, LoopMsg, NodePlace, MAX_LOOPS};
use turnpike_core::{Instant, Server};

/// Shortest virtual latency of a message between two loops.
pub const MIN_MESSAGE_LATENCY: Duration = Duration::from_micros(2);
/// Longest virtual latency of a message between two loops.
pub const MAX_MESSAGE_LATENCY: Duration = Duration::from_micros(200);

/// A message on its way from one loop of a node to another.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// The sending loop.
    pub from: LoopId,
    /// The receiving loop.
    pub to: LoopId,
    /// The message.
    pub msg: LoopMsg,
}

/// SO_REUSEPORT's spreading of 4-tuples over the loops of a node, keyed by the run.
#[derive(Clone, Copy, Debug)]
pub struct LoopHash {
    key: u64,
    count: u16,
}

impl LoopHash {
    /// A spreading over `count` loops with hash key `key` (from the run's seed).
    pub fn new(key: u64, count: u16) -> Self {
        LoopHash {
            key,
            count: count.clamp(1, MAX_LOOPS),
        }
    }

    /// Loops of the node.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The loop that receives datagrams and connections of this 4-tuple.
    pub fn loop_of(&self, from: SocketAddr, to: SocketAddr) -> u16 {
        if self.count <= 1 {
            return 0;
        }
        let mut h = self.key;
        for part in [addr_bits(from), addr_bits(to)] {
            for word in part {
                h = mix(h ^ word);
            }
        }
        u16::try_from(h % u64::from(self.count)).unwrap_or(0)
    }
}

/// The cores of one node, loop `i` at index `i`.
#[derive(Debug)]
pub struct Cores {
    /// The cores.
    pub cores: Vec<Server>,
}

impl Cores {
    /// Builds the `spec.loops` cores of a server spec, drawing one seed per loop from
    /// `seeds`, each told its place; the loops after the first take loop 0's nonce key.
    pub fn build(spec: &ServerSpec, seeds: &mut ChaCha20Rng, now: Instant) -> Result<Self, String> {
        let count = spec.loops.clamp(1, MAX_LOOPS);
        let mut cores = Vec::with_capacity(usize::from(count));
        let mut first_seed = None;
        for index in 0..count {
            let mut cfg = config_of(spec)?;
            let mut seed = [0u8; 32];
            seeds.fill_bytes(&mut seed);
            let seed0 = *first_seed.get_or_insert(seed);
            cfg.node = NodePlace { index, count };
            if index > 0 && cfg.nonce_key.is_none() {
                cfg.nonce_key = Some(Server::nonce_key_of_seed(seed0));
            }
            let server = Server::new(cfg, seed, now)
                .map_err(|e| format!("{} loop {index}: {e}", spec.name))?;
            cores.push(server);
        }
        Ok(Cores { cores })
    }
}

/// Draws the virtual latency of one message between loops.
pub fn message_latency(rng: &mut ChaCha20Rng) -> Duration {
    let lo = MIN_MESSAGE_LATENCY.as_nanos() as u64;
    let hi = MAX_MESSAGE_LATENCY.as_nanos() as u64;
    Duration::from_nanos(lo + rng.next_u64() % (hi - lo + 1))
}

/// The bits of an address and port as hash input: 128 bits of address (IPv4 mapped) and
/// the port.
fn addr_bits(a: SocketAddr) -> [u64; 3] {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        std::net::IpAddr::V6(v6) => v6.to_bits(),
    };
    [(ip >> 64) as u64, ip as u64, u64::from(a.port())]
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn same_tuple_same_loop_and_spread() {
        let h = LoopHash::new(42, 4);
        let to: SocketAddr = "30.0.0.1:3478".parse().unwrap();
        let mut seen = [0u32; 4];
        for port in 40_000..40_400u16 {
            let from = SocketAddr::from(([20, 0, 0, 1], port));
            let l = h.loop_of(from, to);
            assert_eq!(l, h.loop_of(from, to));
            seen[usize::from(l)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(LoopHash::new(42, 1).loop_of(to, to), 0);
    }

    #[test]
    fn the_key_changes_the_spread() {
        let to: SocketAddr = "30.0.0.1:3478".parse().unwrap();
        let differ = (40_000..40_100u16)
            .filter(|&p| {
                let from = SocketAddr::from(([20, 0, 0, 1], p));
                LoopHash::new(1, 4).loop_of(from, to) != LoopHash::new(2, 4).loop_of(from, to)
            })
            .count();
        assert!(differ > 30, "{differ}");
    }

    #[test]
    fn latencies_stay_in_bounds() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let d = message_latency(&mut rng);
            assert!((MIN_MESSAGE_LATENCY..=MAX_MESSAGE_LATENCY).contains(&d));
        }
    }
}
