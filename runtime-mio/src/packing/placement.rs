//! Which thread each loop of a node runs on: its own, or another loop's (hosting).
//!
//! The table packing writes and the loops read: one atomic per loop, read once per round by
//! the loop itself and by the loop that hosts it. A loop's host never has a host itself.

use std::sync::atomic::{AtomicUsize, Ordering};

/// No host: the loop runs on its own thread.
const OWN: usize = usize::MAX;

/// Per loop, the loop whose thread it should run on.
#[derive(Debug)]
pub struct Placement {
    host: Vec<AtomicUsize>,
}

impl Placement {
    /// `loops` loops, each on its own thread.
    pub fn new(loops: usize) -> Placement {
        Placement {
            host: (0..loops).map(|_| AtomicUsize::new(OWN)).collect(),
        }
    }

    /// The loops run on `threads` threads: loops `0..threads` on their own, every other
    /// loop `i` on loop `i % threads`'s (all their own: spread).
    pub fn gather(&self, threads: usize) {
        for (i, h) in self.host.iter().enumerate() {
            let host = if threads == 0 || i < threads {
                OWN
            } else {
                i % threads
            };
            h.store(host, Ordering::Relaxed);
        }
    }

    /// Loop `index` runs on its own thread from now on.
    pub fn release(&self, index: usize) {
        if let Some(h) = self.host.get(index) {
            h.store(OWN, Ordering::Relaxed);
        }
    }

    /// The loop whose thread loop `index` should run on, if not its own.
    pub fn host_of(&self, index: usize) -> Option<usize> {
        let h = self.host.get(index)?.load(Ordering::Relaxed);
        (h != OWN && h != index).then_some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathering_onto_fewer_threads_and_spreading_again() {
        let p = Placement::new(5);
        assert!((0..5).all(|i| p.host_of(i).is_none()));
        p.gather(2);
        let hosts: Vec<_> = (0..5).map(|i| p.host_of(i)).collect();
        assert_eq!(hosts, [None, None, Some(0), Some(1), Some(0)]);
        // A host is never hosted.
        for h in hosts.iter().flatten() {
            assert_eq!(p.host_of(*h), None);
        }
        p.gather(1);
        assert!((1..5).all(|i| p.host_of(i) == Some(0)));
        p.release(3);
        assert_eq!(p.host_of(3), None);
        p.gather(5);
        assert!((0..5).all(|i| p.host_of(i).is_none()));
        assert_eq!(p.host_of(9), None);
    }
}
