//! The send side of a batch: datagrams queued by socket and destination, then flushed as
//! few system calls as the kernel allows (sendmmsg, UDP GSO runs, or one io_uring round).

use super::queued::{Entry, Queued, Store};
use super::{sys, SendMode, Tally, Via, SEND_ARENA, SEND_ENTRIES};
use mio::net::UdpSocket;
#[cfg(target_os = "linux")]
use std::io;
use std::net::SocketAddr;

/// Datagrams waiting to be sent at the end of a batch.
pub struct SendQueue {
    entries: Vec<Entry>,
    /// Sort keys: flow key above, entry index in the low 32 bits.
    order: Vec<u128>,
    arena: Vec<u8>,
    mode: SendMode,
    sys: sys::SendSys,
    /// Calls that handed the kernel more than one datagram (sendmmsg or GSO).
    pub batched_calls: u64,
}

impl SendQueue {
    /// An empty queue sending as `mode` says (GSO only where the kernel has it).
    pub fn new(mode: SendMode) -> Self {
        let mode = SendMode {
            mmsg: mode.mmsg,
            gso: mode.gso && sys::gso_supported(),
        };
        SendQueue {
            entries: Vec::with_capacity(SEND_ENTRIES),
            order: Vec::with_capacity(SEND_ENTRIES),
            arena: Vec::with_capacity(SEND_ARENA),
            mode,
            sys: sys::SendSys::new(),
            batched_calls: 0,
        }
    }

    /// The mode in effect (GSO turns off for good if the kernel refuses it).
    pub fn mode(&self) -> SendMode {
        self.mode
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Queues the datagram at `range` of the receive slots
    /// ([`RecvBatch::bytes`](super::RecvBatch::bytes)). False
    /// (and nothing queued) when the queue is full: flush, then queue again.
    pub fn push_received(
        &mut self,
        via: Via,
        to: SocketAddr,
        range: core::ops::Range<usize>,
    ) -> bool {
        if self.entries.len() >= SEND_ENTRIES {
            return false;
        }
        self.entries.push(Entry {
            via,
            to,
            store: Store::Recv,
            start: range.start,
            len: range.len(),
        });
        true
    }

    /// Queues a copy of `data`. False (and nothing queued) when the queue or its arena is
    /// full: flush, then queue again.
    pub fn push_copy(&mut self, via: Via, to: SocketAddr, data: &[u8]) -> bool {
        let start = self.arena.len();
        if self.entries.len() >= SEND_ENTRIES || start + data.len() > SEND_ARENA {
            return false;
        }
        self.arena.extend_from_slice(data);
        self.entries.push(Entry {
            via,
            to,
            store: Store::Arena,
            start,
            len: data.len(),
        });
        true
    }

    /// Sends everything queued and empties the queue. `recv` is the receive slots the
    /// queued ranges point into; `socket` names the socket of a [`Via`] (None: it closed,
    /// and its datagrams are dropped). Datagrams of one socket go out together, in order
    /// per destination.
    pub fn flush<'s>(
        &mut self,
        recv: &[u8],
        socket: &mut dyn FnMut(Via) -> Option<&'s UdpSocket>,
        tally: &mut Tally<'_>,
    ) {
        if self.entries.is_empty() {
            return;
        }
        self.sort();
        #[cfg(target_os = "linux")]
        if self.sys.uring_on() {
            self.flush_uring(recv, socket, tally);
            self.entries.clear();
            self.arena.clear();
            return;
        }
        let mut a = 0;
        while let Some((via, b)) = self.group_at(a) {
            if let Some(sock) = socket(via) {
                self.send_group(sock, a..b, recv, tally);
            }
            a = b;
        }
        self.entries.clear();
        self.arena.clear();
    }

    /// From now on, sends each round's datagrams, whatever their sockets, with one
    /// io_uring submission ([`crate::uring_send`]). An error if this kernel or process
    /// cannot: the portable path stays.
    #[cfg(target_os = "linux")]
    pub fn use_uring(&mut self) -> io::Result<()> {
        self.sys.start_uring()
    }

    /// True if sends go through io_uring.
    pub fn uring(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.sys.uring_on();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// The socket of the group starting at sorted position `a`, and where the group ends.
    fn group_at(&self, a: usize) -> Option<(Via, usize)> {
        let via = self.entry_at(a)?.via;
        let mut b = a + 1;
        while self.entry_at(b).is_some_and(|e| e.via == via) {
            b += 1;
        }
        Some((via, b))
    }

    /// Every socket's messages of the round built first, then handed to the kernel in one
    /// io_uring submission.
    #[cfg(target_os = "linux")]
    fn flush_uring<'s>(
        &mut self,
        recv: &[u8],
        socket: &mut dyn FnMut(Via) -> Option<&'s UdpSocket>,
        tally: &mut Tally<'_>,
    ) {
        let mut sys = std::mem::take(&mut self.sys);
        sys.begin_round();
        let mut a = 0;
        while let Some((via, b)) = self.group_at(a) {
            if let Some(sock) = socket(via) {
                sys.build(self.view(), a..b, recv, sock, tally);
            }
            a = b;
        }
        let (batched, gso_refused) = sys.submit_round(tally);
        self.batched_calls += batched;
        self.sys = sys;
        if gso_refused {
            // The kernel or the route will not segment: resend the refused runs one
            // datagram per message (as the portable path does), and never try again.
            log::warn!("UDP segmentation offload refused by the kernel: sending datagrams one by one from now on");
            self.mode.gso = false;
            let mut r = 0;
            while let Some((start, count)) = self.sys.refused(r) {
                let sock = match self.entry_at(start) {
                    Some(e) => socket(e.via),
                    None => None,
                };
                if let Some(sock) = sock {
                    self.send_group(sock, start..start + count, recv, tally);
                }
                r += 1;
            }
        }
    }

    /// Orders the entries by socket, then destination (a flow), keeping arrival order
    /// inside a flow: one integer sort on a packed key. Two destinations whose hashes
    /// collide interleave, which only shortens a GSO run.
    fn sort(&mut self) {
        self.order.clear();
        for (i, e) in self.entries.iter().enumerate() {
            let key = (u128::from(via_key(e.via)) << 64) | (u128::from(addr_hash(e.to)) << 32);
            self.order.push(key | i as u128);
        }
        self.order.sort_unstable();
    }

    /// What the system calls read of the queue.
    fn view(&self) -> Queued<'_> {
        Queued::new(&self.entries, &self.order, &self.arena, self.mode)
    }

    fn entry_at(&self, pos: usize) -> Option<&Entry> {
        self.view().entry_at(pos)
    }

    fn send_group(
        &mut self,
        sock: &UdpSocket,
        group: core::ops::Range<usize>,
        recv: &[u8],
        tally: &mut Tally<'_>,
    ) {
        let mut start = group.start;
        loop {
            // Moving the buffers out and back costs nothing: the placeholder is empty.
            let mut sys = std::mem::take(&mut self.sys);
            let outcome = sys.send(self.view(), sock, start..group.end, recv, tally);
            self.sys = sys;
            self.batched_calls += outcome.batched_calls;
            match outcome.gso_refused_at {
                Some(pos) => {
                    // The kernel or the route will not segment: resend the rest one
                    // datagram per message, and never try again.
                    log::warn!("UDP segmentation offload refused by the kernel: sending datagrams one by one from now on");
                    self.mode.gso = false;
                    start = pos;
                }
                None => return,
            }
        }
    }
}

/// A socket as a number: sockets sort apart, relays after listeners.
fn via_key(v: Via) -> u64 {
    match v {
        Via::Listener(n) => u64::from(n),
        Via::Relay(r) => (1 << 32) | u64::from(r.0),
    }
}

/// 32 bits standing for a destination address (Fibonacci hashing of its parts).
fn addr_hash(a: SocketAddr) -> u32 {
    const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |h: u64, x: u64| (h.rotate_left(5) ^ x).wrapping_mul(PHI);
    let h = match a {
        SocketAddr::V4(v4) => mix(u64::from(v4.port()), u64::from(u32::from(*v4.ip()))),
        SocketAddr::V6(v6) => {
            let ip = u128::from(*v6.ip());
            let h = mix(u64::from(v6.port()) | 1 << 16, ip as u64);
            mix(mix(h, (ip >> 64) as u64), u64::from(v6.scope_id()))
        }
    };
    (h >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp_batch::{GSO_MAX_BYTES, GSO_MAX_SEGMENT};
    use turnpike_core::RelayId;

    /// The messages (first position, datagrams, GSO segment) a queue would send.
    fn plan(q: &mut SendQueue, gso: bool) -> Vec<(usize, usize, Option<usize>)> {
        q.order.clear();
        q.order.extend(0..q.entries.len() as u128);
        let mut v = Vec::new();
        q.view()
            .messages(0..q.entries.len(), gso, |j, k, s| v.push((j, k - j, s)));
        v
    }

    fn arena_queue(sizes: &[(usize, SocketAddr)]) -> SendQueue {
        let mut q = SendQueue::new(SendMode::default());
        for &(len, to) in sizes {
            assert!(q.push_copy(Via::Listener(0), to, &vec![7u8; len]));
        }
        q
    }

    #[test]
    fn gso_runs_take_equal_sizes_and_a_shorter_last() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut q = arena_queue(&[(100, p), (100, p), (100, p), (60, p), (100, p), (100, p)]);
        assert_eq!(
            plan(&mut q, true),
            vec![(0, 4, Some(100)), (4, 2, Some(100))]
        );
        // A longer one starts a new run.
        let mut q = arena_queue(&[(100, p), (120, p), (120, p)]);
        assert_eq!(plan(&mut q, true), vec![(0, 1, None), (1, 2, Some(120))]);
        // Without GSO, one message per datagram.
        assert_eq!(
            plan(&mut q, false),
            vec![(0, 1, None), (1, 1, None), (2, 1, None)]
        );
    }

    #[test]
    fn gso_runs_stop_at_another_destination() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let r: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let mut q = arena_queue(&[(100, p), (100, r), (100, p)]);
        assert_eq!(
            plan(&mut q, true),
            vec![(0, 1, None), (1, 1, None), (2, 1, None)]
        );
    }

    #[test]
    fn flushing_groups_each_destination_keeping_its_order() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let r: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let mut q = SendQueue::new(SendMode::default());
        for (k, to) in [p, r, p, r, p].into_iter().enumerate() {
            assert!(q.push_copy(Via::Listener(0), to, &[k as u8; 10]));
        }
        assert!(q.push_copy(Via::Relay(RelayId(3)), p, &[9; 10]));
        q.sort();
        let order: Vec<u32> = q.order.iter().map(|&k| k as u32).collect();
        let (pp, rr) = (addr_hash(p), addr_hash(r));
        assert_ne!(pp, rr);
        if pp < rr {
            assert_eq!(order, vec![0, 2, 4, 1, 3, 5]);
        } else {
            assert_eq!(order, vec![1, 3, 0, 2, 4, 5]);
        }
    }

    #[test]
    fn gso_runs_are_capped_at_64_segments_and_64_kib() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut q = arena_queue(&vec![(10, p); 130]);
        assert_eq!(
            plan(&mut q, true),
            vec![(0, 64, Some(10)), (64, 64, Some(10)), (128, 2, Some(10))]
        );
        // Segments above the MTU-safe size are never segmented.
        let mut q = arena_queue(&[(GSO_MAX_SEGMENT + 1, p); 3]);
        assert!(plan(&mut q, true).iter().all(|m| m.1 == 1));
        // 64 segments of 1452 bytes exceed one datagram's 65,507: the run stops before.
        let mut q = SendQueue::new(SendMode::default());
        q.arena = Vec::with_capacity(0);
        for _ in 0..50 {
            q.entries.push(Entry {
                via: Via::Listener(0),
                to: p,
                store: Store::Arena,
                start: 0,
                len: GSO_MAX_SEGMENT,
            });
        }
        let runs = plan(&mut q, true);
        assert_eq!(runs[0].1, GSO_MAX_BYTES / GSO_MAX_SEGMENT);
        assert_eq!(runs.iter().map(|m| m.1).sum::<usize>(), 50);
    }

    #[test]
    fn full_queues_refuse_instead_of_growing() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut q = SendQueue::new(SendMode::default());
        assert!(!q.push_copy(Via::Listener(0), p, &vec![0; SEND_ARENA + 1]));
        for _ in 0..SEND_ENTRIES {
            assert!(q.push_received(Via::Listener(0), p, 0..1));
        }
        assert!(!q.push_received(Via::Listener(0), p, 0..1));
        assert!(!q.push_copy(Via::Listener(0), p, b"x"));
        assert_eq!(q.len(), SEND_ENTRIES);
    }
}
