//! The one event queue: ordered by (time, sequence number), so two events at the same
//! instant always come out in the order they were scheduled, never in a hash order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use turnpike_core::Instant;

/// A bounded priority queue of events keyed by (time, insertion sequence).
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
    capacity: usize,
    high_water: usize,
}

/// The queue is at its capacity: the simulation's own memory bound was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

impl<E> EventQueue<E> {
    /// An empty queue holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            capacity,
            high_water: 0,
        }
    }

    /// Schedules `event` at `at`.
    pub fn push(&mut self, at: Instant, event: E) -> Result<(), QueueFull> {
        if self.heap.len() >= self.capacity {
            return Err(QueueFull);
        }
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            event,
        });
        self.high_water = self.high_water.max(self.heap.len());
        Ok(())
    }

    /// The earliest event, with its time.
    pub fn pop(&mut self) -> Option<(Instant, E)> {
        self.heap.pop().map(|e| (e.at, e.event))
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The most events ever waiting at once.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// Drops every waiting event.
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[derive(Debug)]
struct Entry<E> {
    at: Instant,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_time_events_keep_their_order() {
        let mut q = EventQueue::new(10);
        let t = Instant::from_secs(1);
        q.push(Instant::from_secs(2), 'c').unwrap();
        q.push(t, 'a').unwrap();
        q.push(t, 'b').unwrap();
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|e| e.1)).collect();
        assert_eq!(order, vec!['a', 'b', 'c']);
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut q = EventQueue::new(1);
        q.push(Instant::from_secs(1), ()).unwrap();
        assert_eq!(q.push(Instant::from_secs(1), ()), Err(QueueFull));
    }
}
