//! How many event loops run and what each is given: its place among them, its slice of
//! the relay ports, its share of the node's limits, its range of allocation ids.

use crate::settings::Settings;
use std::net::SocketAddr;
use turnpike_core::Server;

/// Fewest relay ports a loop is given; with fewer, fewer loops run.
pub const MIN_PORTS_PER_LOOP: u32 = 64;

/// Where a loop stands among the loops of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Its index, from 0.
    pub index: usize,
    /// How many loops run.
    pub count: usize,
}

impl Place {
    /// The only loop.
    pub const SOLE: Place = Place { index: 0, count: 1 };
}

/// How many loops to run, and why fewer than asked when so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Loops to run (at least 1).
    pub count: usize,
    /// Why the count is not what was asked (for the log).
    pub notes: Vec<String>,
}

/// Decides the number of loops: `requested` (0: `cores`), at most
/// [`crate::config::MAX_WORKERS`], at most one per [`MIN_PORTS_PER_LOOP`] relay ports, and
/// one while recording a trace (a trace records one core).
pub fn plan(requested: u32, cores: usize, port_min: u16, port_max: u16, tracing: bool) -> Plan {
    let mut notes = Vec::new();
    let want = if requested == 0 {
        cores.max(1)
    } else {
        requested as usize
    };
    let mut count = want.min(crate::config::MAX_WORKERS as usize);
    if tracing && count > 1 {
        notes.push(format!(
            "recording a trace: running one event loop instead of {count} (a trace records one core)"
        ));
        count = 1;
    }
    let ports = u32::from(port_max).saturating_sub(u32::from(port_min)) + 1;
    let by_ports = (ports / MIN_PORTS_PER_LOOP).max(1) as usize;
    if count > by_ports {
        notes.push(format!(
            "relay ports {port_min}-{port_max} ({ports}) leave fewer than {MIN_PORTS_PER_LOOP} per loop for {count} loops: running {by_ports}"
        ));
        count = by_ports;
    }
    Plan { count, notes }
}

/// The slice of the relay ports `min..=max` that loop `index` of `count` owns:
/// contiguous, disjoint, together the whole range, sizes differing by at most one.
pub fn port_slice(min: u16, max: u16, count: usize, index: usize) -> (u16, u16) {
    let count = count.max(1) as u32;
    let index = (index as u32).min(count - 1);
    let total = u32::from(max).saturating_sub(u32::from(min)) + 1;
    let (base, extra) = (total / count, total % count);
    let start = u32::from(min) + index * base + index.min(extra);
    let len = base + u32::from(index < extra);
    let last = (start + len.max(1) - 1).min(u32::from(max));
    (
        u16::try_from(start).unwrap_or(max),
        u16::try_from(last).unwrap_or(max),
    )
}

/// Loop `index`'s share of a total limit of `count` loops: shares differ by at most one
/// and add up to `total`; 0 (no cap) stays 0, and no loop gets 0 of a non-zero limit.
pub fn share(total: u64, count: usize, index: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    let count = count.max(1) as u64;
    let part = total / count + u64::from((index as u64) < total % count);
    part.max(1)
}

/// The settings of loop `place`: its port slice, its share of the total limits, the
/// nonce key of `main_seed` (loops after the first), no API, trace or event-log
/// start record of its own beyond loop 0. `addrs` are the listener addresses loop 0
/// bound (ports 0 resolved), for the loops after it.
pub fn loop_settings(
    base: &Settings,
    place: Place,
    main_seed: [u8; 32],
    addrs: &[SocketAddr],
) -> Settings {
    let mut s = base.clone();
    if place.count <= 1 {
        return s;
    }
    let (lo, hi) = port_slice(
        base.core.relay_port_min,
        base.core.relay_port_max,
        place.count,
        place.index,
    );
    s.core.relay_port_min = lo;
    s.core.relay_port_max = hi;
    let split = |total: u64| share(total, place.count, place.index);
    s.core.total_quota = u32::try_from(split(u64::from(base.core.total_quota))).unwrap_or(1);
    s.core.total_max_bps = split(base.core.total_max_bps);
    s.core.max_streams = u32::try_from(split(u64::from(base.core.max_streams))).unwrap_or(1);
    if place.index > 0 {
        if s.core.nonce_key.is_none() {
            // Loop 0 derives this very key from the main seed itself.
            s.core.nonce_key = Some(Server::nonce_key_of_seed(main_seed));
        }
        s.api = None;
        s.trace = None;
        for (spec, addr) in s.listeners.iter_mut().zip(addrs) {
            spec.addr = *addr;
        }
        for (l, addr) in s.core.listeners.iter_mut().zip(addrs) {
            l.local = *addr;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_contiguous_disjoint_and_cover_the_range() {
        for (min, max) in [
            (49152u16, 65535u16),
            (40000, 40127),
            (1, 1000),
            (65000, 65535),
        ] {
            for count in 1..=16 {
                let mut next = u32::from(min);
                let mut sizes = Vec::new();
                for i in 0..count {
                    let (lo, hi) = port_slice(min, max, count, i);
                    assert_eq!(u32::from(lo), next, "{min}-{max} / {count}, slice {i}");
                    assert!(lo <= hi);
                    sizes.push(u32::from(hi) - u32::from(lo) + 1);
                    next = u32::from(hi) + 1;
                }
                assert_eq!(next, u32::from(max) + 1, "{min}-{max} / {count}");
                let (small, big) = (sizes.iter().min(), sizes.iter().max());
                assert!(big.unwrap() - small.unwrap() <= 1);
            }
        }
        assert_eq!(port_slice(49152, 65535, 2, 0), (49152, 57343));
        assert_eq!(port_slice(49152, 65535, 2, 1), (57344, 65535));
    }

    #[test]
    fn shares_add_up_and_zero_stays_no_cap() {
        for total in [1u64, 7, 100, 10_000, 100_001] {
            for count in 1..=8 {
                let sum: u64 = (0..count).map(|i| share(total, count, i)).sum();
                if total >= count as u64 {
                    assert_eq!(sum, total, "{total} / {count}");
                } else {
                    // Every loop may take at least one.
                    assert_eq!(sum, count as u64);
                }
            }
        }
        assert_eq!(share(0, 4, 2), 0);
    }

    #[test]
    fn plan_follows_cores_ports_and_tracing() {
        assert_eq!(plan(0, 2, 49152, 65535, false).count, 2);
        assert_eq!(plan(0, 0, 49152, 65535, false).count, 1);
        assert_eq!(plan(3, 2, 49152, 65535, false).count, 3);
        let p = plan(0, 8, 49152, 65535, true);
        assert_eq!(p.count, 1);
        assert_eq!(p.notes.len(), 1);
        // Four relay ports: one loop, so a fifth allocation still gets 508.
        let p = plan(0, 2, 50000, 50003, false);
        assert_eq!(p.count, 1);
        assert!(p.notes.first().is_some_and(|n| n.contains("fewer than 64")));
        assert_eq!(plan(4, 8, 50000, 50000 + 191, false).count, 3);
        assert_eq!(plan(10_000, 1_000, 1, 65535, false).count, 256);
    }
}
