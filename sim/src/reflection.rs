//! The reflection oracle: what a victim whose address was spoofed receives from the relay
//! stays within the stated bound (DESIGN.md: "what a spoofed source can reflect stays
//! within the stated bound").
//!
//! The bound is the core's (`core/src/ratelimit.rs`), counted at the wire, after every
//! step:
//!
//! - **Factor.** Bytes that reached the victim ≤ `factor` × bytes that reached the relay
//!   in the victim's name + one advance of [`ADVANCE_BYTES`] per event loop (each loop
//!   keeps its own table, and a source is advanced that much before it has paid).
//! - **Ceiling.** Bytes that reached the victim ≤ `source_bytes_per_s` × the seconds since
//!   the first spoofed byte reached the relay + one second of it (each loop's bucket
//!   starts full with one second of its share; the shares are rounded up).
//!
//! An answer reaches the victim after its request reached the relay, so comparing what
//! arrived at both ends at the same instant only errs on the safe side.

use crate::net::NodeId;
use std::collections::BTreeMap;
use std::net::IpAddr;
use turnpike_core::Instant;

/// What the core advances a source before it has paid, per event loop, in bytes: the
/// core's `ratelimit::ADVANCE_BYTES` (crate-private there; a change must be made in both
/// places, or this oracle fails the reflection scenario).
pub const ADVANCE_BYTES: u64 = 8_192;

/// The limits the oracle holds the relay to.
#[derive(Clone, Copy, Debug)]
pub struct ReflectionLimits {
    /// `unauth_amplification_factor`.
    pub factor: u64,
    /// `unauth_source_bytes_per_s` of the node.
    pub source_bytes_per_s: u64,
    /// Event loops of the node.
    pub loops: u64,
}

/// What one victim's address sent (in its name) and received.
#[derive(Clone, Copy, Debug, Default)]
pub struct VictimCounts {
    /// Bytes that reached the relay with the victim's address as their source.
    pub spoofed_in: u64,
    /// Bytes that reached the victim from the relay.
    pub reflected: u64,
    /// When the first spoofed byte reached the relay.
    first_in: Option<Instant>,
}

/// Bytes in each victim's name and bytes to it, and the bound between them.
#[derive(Clone, Debug)]
pub struct ReflectionWatch {
    victims: BTreeMap<IpAddr, VictimCounts>,
    relay: NodeId,
    limits: ReflectionLimits,
}

impl ReflectionWatch {
    /// Watches what host `relay` receives in the name of victims and sends them.
    pub fn new(relay: NodeId, limits: ReflectionLimits) -> Self {
        ReflectionWatch {
            victims: BTreeMap::new(),
            relay,
            limits,
        }
    }

    /// Also watches `victim`.
    pub fn add_victim(&mut self, victim: IpAddr) {
        self.victims.entry(victim).or_default();
    }

    /// The host whose answers are watched.
    pub fn relay(&self) -> NodeId {
        self.relay
    }

    /// Each victim's counts, by address.
    pub fn victims(&self) -> &BTreeMap<IpAddr, VictimCounts> {
        &self.victims
    }

    /// A datagram from `from` reached host `to_node` at `to`, at `now`.
    pub fn datagram(
        &mut self,
        now: Instant,
        from: IpAddr,
        to_node: NodeId,
        to: IpAddr,
        bytes: usize,
    ) {
        if to_node == self.relay {
            if let Some(v) = self.victims.get_mut(&from) {
                v.spoofed_in += bytes as u64;
                v.first_in.get_or_insert(now);
            }
        } else if let Some(v) = self.victims.get_mut(&to) {
            v.reflected += bytes as u64;
        }
    }

    /// Checks the bound for every victim at `now`: the invariant's name and what broke
    /// it, if it did.
    pub fn check(&self, now: Instant) -> Result<(), (&'static str, String)> {
        for (ip, v) in &self.victims {
            self.check_one(now, *ip, v)?;
        }
        Ok(())
    }

    fn check_one(
        &self,
        now: Instant,
        ip: IpAddr,
        v: &VictimCounts,
    ) -> Result<(), (&'static str, String)> {
        let l = self.limits;
        let factor_bound = l.factor * v.spoofed_in + l.loops * ADVANCE_BYTES;
        if v.reflected > factor_bound {
            return Err((
                "reflection_within_factor",
                format!(
                    "victim {ip} got {} bytes for {} bytes spoofed in its name: more than {} x + {} x {ADVANCE_BYTES} = {factor_bound}",
                    v.reflected, v.spoofed_in, l.factor, l.loops
                ),
            ));
        }
        let Some(first) = v.first_in else {
            return Ok(());
        };
        let elapsed_ns = now.since(first).as_nanos();
        let per_loop = l.source_bytes_per_s.div_ceil(l.loops.max(1));
        let rate = u128::from(per_loop * l.loops.max(1));
        // reflected <= rate × (elapsed + 1 s), in bytes × ns.
        let ceiling_bound = rate * (elapsed_ns + 1_000_000_000);
        if u128::from(v.reflected) * 1_000_000_000 > ceiling_bound {
            return Err((
                "reflection_within_ceiling",
                format!(
                    "victim {ip} got {} bytes in {:.3} s: more than {rate} bytes/s x (that + 1 s)",
                    v.reflected,
                    elapsed_ns as f64 / 1e9,
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn watch(source_bytes_per_s: u64) -> ReflectionWatch {
        let mut w = ReflectionWatch::new(
            0,
            ReflectionLimits {
                factor: 3,
                source_bytes_per_s,
                loops: 1,
            },
        );
        w.add_victim("45.0.0.9".parse().unwrap());
        w
    }

    #[test]
    fn the_factor_and_the_ceiling_both_bind() {
        let victim: IpAddr = "45.0.0.9".parse().unwrap();
        let relay: IpAddr = "30.0.0.1".parse().unwrap();
        let t = Instant::from_secs(10);
        let mut w = watch(1_000_000);
        w.datagram(t, victim, 0, relay, 1_000);
        w.datagram(t, relay, 7, victim, 3_000 + ADVANCE_BYTES as usize);
        assert!(w.check(t).is_ok());
        w.datagram(t, relay, 7, victim, 1);
        assert_eq!(w.check(t).unwrap_err().0, "reflection_within_factor");

        let mut w = watch(10_000);
        w.datagram(t, victim, 0, relay, 100_000);
        w.datagram(t, relay, 7, victim, 20_000);
        assert!(w.check(t + Duration::from_secs(1)).is_ok());
        assert_eq!(w.check(t).unwrap_err().0, "reflection_within_ceiling");
    }
}
