//! Sockets whose read budget ran out, to be read again before the next poll.
//!
//! Anyone can make relay ports busy (a peer only has to send), so the queue may hold many
//! sockets at once: "is it queued already?" is a set lookup, not a scan of the queue, so a
//! round costs O(busy) rather than O(busy²).

use crate::id_hash::IdHasher;
use crate::token::Source;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasherDefault;

/// A first-in first-out queue of sources, each at most once.
#[derive(Debug, Default)]
pub struct ReadAgain {
    queue: VecDeque<Source>,
    /// The tokens of what `queue` holds.
    queued: HashSet<u64, BuildHasherDefault<IdHasher>>,
}

impl ReadAgain {
    /// Queues `src` at the back, unless it is queued already.
    pub fn push(&mut self, src: Source) {
        if self.queued.insert(key(src)) {
            self.queue.push_back(src);
        }
    }

    /// Takes the source at the front.
    pub fn pop(&mut self) -> Option<Source> {
        let src = self.queue.pop_front()?;
        self.queued.remove(&key(src));
        Some(src)
    }

    /// How many sources wait.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

fn key(src: Source) -> u64 {
    src.token().0 as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_core::{ConnId, RelayId};

    #[test]
    fn each_source_waits_once_in_arrival_order() {
        let mut q = ReadAgain::default();
        let (a, b, c) = (
            Source::Relay(RelayId(7)),
            Source::Conn(ConnId(7)),
            Source::Listener(7),
        );
        for s in [a, b, a, c, b, a] {
            q.push(s);
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some(a));
        // Taken out, it may be queued again, behind the others.
        q.push(a);
        q.push(b);
        assert_eq!(q.pop(), Some(b));
        assert_eq!(q.pop(), Some(c));
        assert_eq!(q.pop(), Some(a));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn many_busy_sources_queue_in_linear_time() {
        // 100k sources pushed twice each: with a scan per push this takes minutes.
        let mut q = ReadAgain::default();
        for round in 0..2 {
            for r in 0..100_000u32 {
                q.push(Source::Relay(RelayId(r)));
            }
            assert_eq!(q.len(), 100_000, "round {round}");
        }
        let mut n = 0;
        while q.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, 100_000);
    }
}
