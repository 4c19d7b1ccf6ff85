//! The batched UDP path allocates nothing per packet: once warm, receiving a batch,
//! queueing its datagrams (from the slots and as copies) and flushing them makes no
//! allocation call.

use mio::net::UdpSocket;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};
use turnpike::udp_batch::{RecvBatch, SendMode, SendQueue, Tally, Via};
use turnpike_core::{RelayId, HEADROOM};

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Forwards to the system allocator, counting this thread's allocation calls.
struct Counting;

// SAFETY: each method forwards its arguments unchanged to `System`, so the allocator
// contract is System's; the count is a thread-local Cell with a const initialiser (no
// allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = CALLS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's layout, unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = CALLS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: `ptr` came from System with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn calls() -> u64 {
    CALLS.with(Cell::get)
}

const PER_ROUND: usize = 40;

/// One round: `a` sends PER_ROUND copies to `b`, `b` receives them into slots and echoes
/// them back from the slots, `a` receives the echoes. Returns the datagrams echoed back.
fn round(
    a: &UdpSocket,
    b: &UdpSocket,
    qa: &mut SendQueue,
    qb: &mut SendQueue,
    rb: &mut RecvBatch,
    ra: &mut RecvBatch,
    payload: &[u8],
) -> usize {
    let (mut wb, mut er, mut last) = (0, 0, None);
    let mut tally = Tally {
        would_block: &mut wb,
        errors: &mut er,
        last_error: &mut last,
    };
    let to_b = b.local_addr().unwrap();
    for k in 0..PER_ROUND {
        // Equal sizes with a shorter one now and then: GSO runs and plain sends both.
        let len = if k % 8 == 7 { 20 } else { payload.len() };
        assert!(qa.push_copy(Via::Relay(RelayId(1)), to_b, &payload[..len]));
    }
    qa.flush(&[], &mut |_| Some(a), &mut tally);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = 0;
    rb.reset();
    while got < PER_ROUND && Instant::now() < deadline {
        match rb.recv(b, PER_ROUND - got) {
            Ok(slots) => {
                for i in slots {
                    let r = rb.received(i).unwrap();
                    let s = RecvBatch::slot_start(i) + HEADROOM;
                    assert!(qb.push_received(Via::Listener(0), r.from, s..s + r.len));
                    got += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e}"),
        }
    }
    qb.flush(rb.bytes(), &mut |_| Some(b), &mut tally);
    let mut back = 0;
    ra.reset();
    while back < got && Instant::now() < deadline {
        if ra.free() == 0 {
            ra.reset();
        }
        match ra.recv(a, got - back) {
            Ok(slots) => back += slots.len(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e}"),
        }
    }
    back
}

#[test]
fn a_warm_batch_path_makes_no_allocation() {
    warm_rounds(false);
}

/// The same with the sends of each round in one io_uring submission.
#[cfg(target_os = "linux")]
#[test]
fn a_warm_io_uring_batch_path_makes_no_allocation() {
    warm_rounds(true);
}

fn warm_rounds(uring: bool) {
    let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (mut qa, mut qb) = (
        SendQueue::new(SendMode::default()),
        SendQueue::new(SendMode::default()),
    );
    #[cfg(target_os = "linux")]
    if uring && (qa.use_uring().is_err() || qb.use_uring().is_err()) {
        eprintln!("io_uring unavailable here: nothing to test");
        return;
    }
    assert_eq!(qa.uring(), uring);
    let (mut ra, mut rb) = (RecvBatch::new(), RecvBatch::new());
    let payload = vec![0x5a; 160];
    assert_eq!(
        round(&a, &b, &mut qa, &mut qb, &mut rb, &mut ra, &payload),
        PER_ROUND
    );
    let before = calls();
    let mut echoed = 0;
    for _ in 0..20 {
        echoed += round(&a, &b, &mut qa, &mut qb, &mut rb, &mut ra, &payload);
    }
    let made = calls() - before;
    assert_eq!(echoed, 20 * PER_ROUND, "loopback lost datagrams");
    assert_eq!(made, 0, "{made} allocation calls for {echoed} datagrams");
}
