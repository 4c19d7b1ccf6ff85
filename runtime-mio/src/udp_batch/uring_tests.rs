//! The receive batch over io_uring, on real loopback sockets: one call reads several
//! sockets, and a bad descriptor fails its socket only.

use super::{RecvBatch, RECV_SLOTS};
use crate::test_sockets::{bound, wait_queued};
use crate::uring_recv::{Next, Want};
use mio::net::UdpSocket;
use std::os::fd::AsRawFd;

#[test]
fn one_call_reads_several_sockets_in_order() {
    let mut batch = RecvBatch::new();
    if let Err(e) = batch.use_uring() {
        crate::uring::tests::unavailable(&e.to_string());
        return;
    }
    let from = bound();
    let socks: Vec<UdpSocket> = (0..4).map(|_| bound()).collect();
    // Datagrams queued: 0, 1, 3, 3; receives posted: 2, 2, 2, 8.
    let counts = [0usize, 1, 3, 3];
    for (s, &n) in socks.iter().zip(&counts) {
        for k in 0..n {
            let to = s.local_addr().unwrap();
            from.send_to(&vec![k as u8 + 1; 10 + k], to).unwrap();
        }
        wait_queued(s, n);
    }
    let wants: Vec<Want> = socks
        .iter()
        .zip([2, 2, 2, 8])
        .map(|(s, k)| Want {
            fd: s.as_raw_fd(),
            k,
        })
        .collect();
    // Start past slot 0, as after an earlier read of the same batch.
    assert_eq!(
        batch.recv(&socks[0], 1).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock)
    );
    let mut out = Vec::new();
    batch.recv_many(&wants, &mut out);
    let summary: Vec<_> = out
        .iter()
        .map(|g| (g.slots.clone(), g.datagrams, g.next))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0..2, 0, Next::Drained),
            (2..4, 1, Next::Drained),
            (4..6, 2, Next::More),
            (6..14, 3, Next::Drained),
        ]
    );
    assert_eq!(batch.free(), RECV_SLOTS - 14);
    let me = from.local_addr().unwrap();
    let mut seen = Vec::new();
    for g in &out {
        let mut per = Vec::new();
        for slot in g.slots.clone() {
            let Some(r) = batch.received(slot) else {
                continue;
            };
            assert_eq!(r.from, me);
            assert!(!r.truncated);
            let at = turnpike_core::HEADROOM;
            let data = &batch.slot_mut(slot).unwrap()[at..at + r.len];
            assert!(data.iter().all(|&b| b == data[0]));
            per.push((data[0], r.len));
        }
        seen.push(per);
    }
    assert_eq!(
        seen,
        vec![
            vec![],
            vec![(1, 10)],
            vec![(1, 10), (2, 11)],
            vec![(1, 10), (2, 11), (3, 12)],
        ],
        "each socket's datagrams in arrival order"
    );
    // The socket left with more is read on: its third datagram comes next.
    let rest = batch.recv(&socks[2], 8).unwrap();
    assert_eq!(rest.len(), 1);
    let r = batch.received(rest.start).unwrap();
    assert_eq!(r.len, 12);
}

#[test]
fn a_closed_descriptor_fails_its_socket_only() {
    let mut batch = RecvBatch::new();
    if let Err(e) = batch.use_uring() {
        crate::uring::tests::unavailable(&e.to_string());
        return;
    }
    let (a, b) = (bound(), bound());
    a.send_to(b"x", b.local_addr().unwrap()).unwrap();
    wait_queued(&b, 1);
    let wants = [
        Want { fd: -1, k: 2 },
        Want {
            fd: b.as_raw_fd(),
            k: 2,
        },
    ];
    let mut out = Vec::new();
    batch.recv_many(&wants, &mut out);
    let got: Vec<_> = out.iter().map(|g| (g.datagrams, g.next)).collect();
    assert_eq!(
        got,
        vec![(0, Next::Failed(libc::EBADF)), (1, Next::Drained)]
    );
    assert!(batch.uring(), "a socket's error leaves the ring working");
}
