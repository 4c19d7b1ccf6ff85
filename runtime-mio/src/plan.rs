//! How many event loops run and what each is given: its place in the node (from which its
//! core takes its starting slice of the relay ports and share of `total_quota`, and its
//! range of allocation ids) and its share of the limits the runtime divides itself.

use crate::settings::Settings;
use std::net::SocketAddr;
use turnpike_core::node::NodePlace;
use turnpike_core::trace::loop_path;
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

    /// The same place, as the core's configuration names it (at most
    /// [`crate::config::MAX_WORKERS`] loops run, which fits).
    pub fn node(self) -> NodePlace {
        NodePlace {
            index: u16::try_from(self.index).unwrap_or(u16::MAX),
            count: u16::try_from(self.count).unwrap_or(u16::MAX),
        }
    }
}

/// How many loops to run, why fewer than asked when so, and what else to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Loops to run (at least 1).
    pub count: usize,
    /// Why fewer loops run than asked (logged at warn: a capacity surprise).
    pub warnings: Vec<String>,
    /// Other things worth a line in the log (logged at info).
    pub notes: Vec<String>,
}

/// Decides the number of loops: `requested` (0: `cores`), at most
/// [`crate::config::MAX_WORKERS`], at most one per [`MIN_PORTS_PER_LOOP`] relay ports.
/// Recording a trace (`tracing`) changes nothing: every loop records its own file.
pub fn plan(requested: u32, cores: usize, port_min: u16, port_max: u16, tracing: bool) -> Plan {
    let (mut warnings, mut notes) = (Vec::new(), Vec::new());
    let want = if requested == 0 {
        cores.max(1)
    } else {
        requested as usize
    };
    let mut count = want.min(crate::config::MAX_WORKERS as usize);
    let ports = u32::from(port_max).saturating_sub(u32::from(port_min)) + 1;
    let by_ports = (ports / MIN_PORTS_PER_LOOP).max(1) as usize;
    if count > by_ports {
        warnings.push(format!(
            "relay ports {port_min}-{port_max} ({ports}) leave fewer than {MIN_PORTS_PER_LOOP} per loop for {count} loops: running {by_ports}"
        ));
        count = by_ports;
    }
    if tracing && count > 1 {
        notes.push(format!(
            "recording a trace of each of the {count} event loops (loop i's file is the trace file's name with .loop<i> appended, loop 0's the name itself)"
        ));
    }
    Plan {
        count,
        warnings,
        notes,
    }
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

/// The settings of loop `place`: its place in the node (`relay_port_min..=max` and
/// `total_quota` stay the node's: the core starts with its share and borrows from the
/// other loops), its share of `total_max_bps` and `max_streams`, the nonce key of
/// `main_seed` (loops after the first), its own trace file (`FILE.loop<i>` after loop 0's
/// `FILE`), and no API beyond loop 0.
/// `addrs` are the listener addresses loop 0 bound (ports 0 resolved), for the loops
/// after it.
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
    s.core.node = place.node();
    let split = |total: u64| share(total, place.count, place.index);
    s.core.total_max_bps = split(base.core.total_max_bps);
    s.core.max_streams = u32::try_from(split(u64::from(base.core.max_streams))).unwrap_or(1);
    if let Some(t) = &mut s.trace {
        t.place = s.core.node;
        t.path = loop_path(&t.path, s.core.node.index);
    }
    if place.index > 0 {
        if s.core.nonce_key.is_none() {
            // Loop 0 derives this very key from the main seed itself.
            s.core.nonce_key = Some(Server::nonce_key_of_seed(main_seed));
        }
        s.api = None;
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
        // Recording a trace runs as many loops: each records its own file.
        let p = plan(0, 8, 49152, 65535, true);
        assert_eq!(p.count, 8);
        assert!(p.notes.iter().all(|n| n.contains(".loop<i>")), "{p:?}");
        assert_eq!(plan(0, 1, 49152, 65535, true).notes.len(), 0);
        // Four relay ports: one loop, so a fifth allocation still gets 508.
        let p = plan(0, 2, 50000, 50003, false);
        assert_eq!(p.count, 1);
        assert!(p
            .warnings
            .first()
            .is_some_and(|n| n.contains("fewer than 64")));
        assert!(plan(0, 8, 49152, 65535, true).warnings.is_empty());
        assert_eq!(plan(4, 8, 50000, 50000 + 191, false).count, 3);
        assert_eq!(plan(10_000, 1_000, 1, 65535, false).count, 256);
    }

    #[test]
    fn a_loop_gets_its_place_and_the_node_keeps_ports_and_total_quota() {
        let text = "users = { a = \"pw\" }\nrelay_port_min = 50000\nrelay_port_max = 50999\n\
                    total_quota = 100\ntotal_max_bps = 1000\n";
        let fc = crate::config::FileConfig::parse("t.toml", text).unwrap();
        let base = Settings::from_file(&fc, "t.toml").unwrap();
        let one = loop_settings(&base, Place::SOLE, [1; 32], &[]);
        assert_eq!(one.core.node, NodePlace::SOLE);
        let s = loop_settings(&base, Place { index: 1, count: 2 }, [1; 32], &[]);
        assert_eq!(s.core.node, NodePlace { index: 1, count: 2 });
        // The core takes its own share of these.
        assert_eq!(
            (s.core.relay_port_min, s.core.relay_port_max),
            (50000, 50999)
        );
        assert_eq!(s.core.total_quota, 100);
        // The runtime divides these.
        assert_eq!(s.core.total_max_bps, 500);
        assert!(s.api.is_none());
    }
}
