//! A digest of everything that happened (FNV-1a, 64 bits: simple, stable across
//! platforms and versions), and a ring of the last events for failure reports.

use std::collections::VecDeque;
use turnpike_core::Instant;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a 64 hash fed with every record of a run, in order.
#[derive(Clone, Copy, Debug)]
pub struct Digest {
    state: u64,
    records: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            state: FNV_OFFSET,
            records: 0,
        }
    }
}

impl Digest {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.state ^= u64::from(*b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// Feeds a number (little-endian bytes).
    pub fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    /// Starts a record: a tag and the time it happened.
    pub fn record(&mut self, tag: u8, at: Instant) {
        self.records += 1;
        self.write(&[tag]);
        self.write_u64(at.as_nanos());
    }

    /// The digest so far.
    pub fn value(&self) -> u64 {
        self.state
    }

    /// Records fed so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// The last `capacity` events, as text, for the report of a failed run.
#[derive(Debug)]
pub struct Trace {
    ring: VecDeque<(Instant, String)>,
    capacity: usize,
}

impl Trace {
    /// A ring keeping the last `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Trace {
            ring: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds a line.
    pub fn note(&mut self, at: Instant, line: String) {
        if self.capacity == 0 {
            return;
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back((at, line));
    }

    /// The lines kept, oldest first, each prefixed with its virtual time in seconds since
    /// `origin`.
    pub fn lines(&self, origin: Instant) -> Vec<String> {
        self.ring
            .iter()
            .map(|(at, l)| format!("{:>12.6}s  {l}", at.since(origin).as_secs_f64()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_value() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        let mut d = Digest::default();
        d.write(b"a");
        assert_eq!(d.value(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn trace_keeps_the_last_lines() {
        let mut t = Trace::new(2);
        for i in 0..5 {
            t.note(Instant::from_secs(i), format!("{i}"));
        }
        let l = t.lines(Instant::default());
        assert_eq!(l.len(), 2);
        assert!(l[1].ends_with('4'));
    }
}
