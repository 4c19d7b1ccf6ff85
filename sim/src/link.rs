//! Links: what a packet meets between two hosts. Each host has an access link (latency,
//! jitter, loss, duplication, reordering, bandwidth); a path joins the sender's and the
//! receiver's. Partitions cut a host off for a window of time and then heal.

use core::time::Duration;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use turnpike_core::Instant;

/// The behaviour of one host's access link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkProfile {
    /// One-way latency.
    pub latency: Duration,
    /// Extra random delay, uniform in `0..=jitter`.
    pub jitter: Duration,
    /// Probability that a datagram is lost (streams see it as a retransmission delay).
    pub loss: f64,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back (arrives after later ones).
    pub reorder: f64,
    /// Uplink bandwidth in bits per second; 0 for unlimited.
    pub bandwidth_bps: u64,
}

impl Default for LinkProfile {
    fn default() -> Self {
        LinkProfile {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            bandwidth_bps: 0,
        }
    }
}

/// How a datagram fares on a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Lost.
    Lost,
    /// Arrives after `delay` (and a copy after `duplicate`, if set).
    Arrives {
        /// Delay of the first copy.
        delay: Duration,
        /// Delay of a duplicate.
        duplicate: Option<Duration>,
    },
}

/// The path between two access links.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    a: LinkProfile,
    b: LinkProfile,
}

impl Path {
    /// The path from a host with link `a` to a host with link `b`.
    pub fn new(a: LinkProfile, b: LinkProfile) -> Self {
        Path { a, b }
    }

    /// One-way delay of a packet: both latencies plus random jitter.
    pub fn delay(&self, rng: &mut ChaCha20Rng) -> Duration {
        let jitter = self.a.jitter + self.b.jitter;
        self.a.latency + self.b.latency + uniform(rng, jitter)
    }

    /// The fate of one datagram.
    pub fn datagram(&self, rng: &mut ChaCha20Rng) -> Fate {
        let loss = 1.0 - (1.0 - self.a.loss) * (1.0 - self.b.loss);
        if chance(rng, loss) {
            return Fate::Lost;
        }
        let mut delay = self.delay(rng);
        let reorder = self.a.reorder.max(self.b.reorder);
        if chance(rng, reorder) {
            // Held back by up to twice the path latency: later packets overtake it.
            delay += uniform(rng, (self.a.latency + self.b.latency) * 2);
        }
        let dup = self.a.duplicate.max(self.b.duplicate);
        let duplicate = chance(rng, dup).then(|| delay + uniform(rng, Duration::from_millis(20)));
        Fate::Arrives { delay, duplicate }
    }

    /// Delay of a stream segment: in-order delivery hides loss as retransmission delay.
    pub fn segment_delay(&self, rng: &mut ChaCha20Rng) -> Duration {
        let mut d = self.delay(rng);
        let loss = 1.0 - (1.0 - self.a.loss) * (1.0 - self.b.loss);
        // Each loss costs one retransmission timeout (200 ms minimum, as Linux); bounded.
        for _ in 0..6 {
            if !chance(rng, loss) {
                break;
            }
            d += Duration::from_millis(200) + self.delay(rng) * 2;
        }
        d
    }
}

/// Serialisation delay of `bytes` on an uplink of `bps` (zero when unlimited).
pub fn serialisation(bytes: usize, bps: u64) -> Duration {
    if bps == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / bps)
}

/// A window during which a host is cut off from everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The host cut off.
    pub node: usize,
    /// From.
    pub start: Instant,
    /// Until (the partition heals then).
    pub heal: Instant,
}

impl Partition {
    /// True while the partition holds at `now`.
    pub fn active(&self, now: Instant) -> bool {
        self.start <= now && now < self.heal
    }
}

/// True with probability `p`.
pub fn chance(rng: &mut ChaCha20Rng, p: f64) -> bool {
    if p <= 0.0 {
        return false;
    }
    if p >= 1.0 {
        return true;
    }
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
}

/// A duration uniform in `0..=max`.
pub fn uniform(rng: &mut ChaCha20Rng, max: Duration) -> Duration {
    let n = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.next_u64() % (n + 1))
}

/// An integer uniform in `lo..=hi`.
pub fn between(rng: &mut ChaCha20Rng, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    lo + rng.next_u64() % (hi - lo + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn lossless_path_always_arrives() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let p = Path::new(LinkProfile::default(), LinkProfile::default());
        for _ in 0..100 {
            assert!(
                matches!(p.datagram(&mut rng), Fate::Arrives { delay, duplicate: None } if delay == Duration::from_millis(20))
            );
        }
    }

    #[test]
    fn total_loss_loses_everything() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let lossy = LinkProfile {
            loss: 1.0,
            ..LinkProfile::default()
        };
        let p = Path::new(lossy, LinkProfile::default());
        assert_eq!(p.datagram(&mut rng), Fate::Lost);
    }

    #[test]
    fn serialisation_delay() {
        assert_eq!(serialisation(125, 1_000_000), Duration::from_millis(1));
        assert_eq!(serialisation(125, 0), Duration::ZERO);
    }
}
