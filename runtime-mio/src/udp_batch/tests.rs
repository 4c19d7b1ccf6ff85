//! Batches crossing real loopback sockets, both ends at once.

use super::loopback::pair;
use super::*;
use mio::net::UdpSocket;
use std::time::{Duration, Instant};

/// Receives until `n` datagrams arrived (or a second passed), returning their payloads.
fn recv_n(batch: &mut RecvBatch, sock: &UdpSocket, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while out.len() < n && Instant::now() < deadline {
        if batch.free() == 0 {
            batch.reset();
        }
        match batch.recv(sock, n - out.len()) {
            Ok(slots) => {
                for i in slots {
                    let r = batch.received(i).unwrap();
                    assert!(!r.truncated);
                    let slot = batch.slot_mut(i).unwrap();
                    out.push((r.from, slot[HEADROOM..HEADROOM + r.len].to_vec()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e}"),
        }
    }
    out
}

fn tally_into<'a>(c: &'a mut (u64, u64, Option<io::ErrorKind>)) -> Tally<'a> {
    Tally {
        would_block: &mut c.0,
        errors: &mut c.1,
        last_error: &mut c.2,
    }
}

#[test]
fn a_batch_crosses_between_two_loopback_sockets_in_order() {
    let (a, b) = pair();
    let to = b.local_addr().unwrap();
    for mode in ["single", "mmsg", "gso", "mmsg+gso"] {
        let mut q = SendQueue::new(SendMode::parse(mode).unwrap());
        for k in 0..40u8 {
            let len = if k % 10 == 9 { 50 } else { 100 };
            assert!(q.push_copy(Via::Relay(RelayId(1)), to, &vec![k; len]));
        }
        let mut c = (0, 0, None);
        q.flush(&[], &mut |_| Some(&a), &mut tally_into(&mut c));
        assert_eq!(c, (0, 0, None), "{mode}");
        assert!(q.is_empty());
        let mut batch = RecvBatch::new();
        let got = recv_n(&mut batch, &b, 40);
        assert_eq!(got.len(), 40, "{mode}");
        for (k, (from, data)) in got.iter().enumerate() {
            assert_eq!(*from, a.local_addr().unwrap());
            assert_eq!(
                data.len(),
                if k % 10 == 9 { 50 } else { 100 },
                "{mode} #{k}"
            );
            assert!(data.iter().all(|&x| x == k as u8), "{mode} #{k}");
        }
        // Fewer than asked: the queue is empty.
        assert!(matches!(batch.recv(&b, 8).map(|r| r.len()), Err(_) | Ok(0)));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn one_uring_round_sends_every_sockets_datagrams_in_order() {
    let (a, b) = pair();
    let (c, _) = pair();
    let to = b.local_addr().unwrap();
    let mut q = SendQueue::new(SendMode::default());
    if q.use_uring().is_err() {
        eprintln!("io_uring unavailable here: nothing to test");
        return;
    }
    assert!(q.uring());
    // Two sockets interleaved, a GSO run on one of them, and a socket that closed.
    for k in 0..30u8 {
        let via = Via::Relay(RelayId(u32::from(k % 3)));
        assert!(q.push_copy(via, to, &[k; 100]));
    }
    let mut t = (0, 0, None);
    q.flush(
        &[],
        &mut |v| match v {
            Via::Relay(RelayId(0)) => Some(&a),
            Via::Relay(RelayId(1)) => Some(&c),
            _ => None,
        },
        &mut tally_into(&mut t),
    );
    assert_eq!(t, (0, 0, None));
    assert_eq!(q.batched_calls, 1, "one submission for the round");
    let mut batch = RecvBatch::new();
    let got = recv_n(&mut batch, &b, 20);
    let from_a: Vec<u8> = got
        .iter()
        .filter(|(f, _)| *f == a.local_addr().unwrap())
        .map(|(_, d)| d[0])
        .collect();
    let from_c: Vec<u8> = got
        .iter()
        .filter(|(f, _)| *f == c.local_addr().unwrap())
        .map(|(_, d)| d[0])
        .collect();
    assert_eq!(from_a, (0..30).step_by(3).collect::<Vec<u8>>());
    assert_eq!(from_c, (1..30).step_by(3).collect::<Vec<u8>>());
    assert!(got.iter().all(|(_, d)| d.len() == 100));
    assert!(matches!(batch.recv(&b, 8).map(|r| r.len()), Err(_) | Ok(0)));
}

#[test]
fn small_then_large_receive_calls_fill_every_slot_whole() {
    let (a, b) = pair();
    let to = b.local_addr().unwrap();
    for k in 0..10u8 {
        a.send_to(&[k; 300], to).unwrap();
    }
    let mut batch = RecvBatch::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut ask = 2;
    while got.len() < 10 && Instant::now() < deadline {
        if let Ok(slots) = batch.recv(&b, ask) {
            for i in slots {
                let r = batch.received(i).unwrap();
                got.push((r.len, batch.slot_mut(i).unwrap()[HEADROOM]));
            }
        }
        ask = 64;
    }
    let want: Vec<(usize, u8)> = (0..10).map(|k| (300, k)).collect();
    assert_eq!(got, want);
}

#[test]
fn received_ranges_are_sent_from_the_slots() {
    let (a, b) = pair();
    let to = b.local_addr().unwrap();
    a.send_to(b"hello", to).unwrap();
    a.send_to(b"world!", to).unwrap();
    let mut batch = RecvBatch::new();
    let got = recv_n(&mut batch, &b, 2);
    assert_eq!(got.len(), 2);
    // Echo both back from the slots, without copying.
    let mut q = SendQueue::new(SendMode::default());
    for i in 0..2 {
        let r = batch.received(i).unwrap();
        let s = RecvBatch::slot_start(i) + HEADROOM;
        assert!(q.push_received(Via::Listener(0), r.from, s..s + r.len));
    }
    let mut c = (0, 0, None);
    q.flush(batch.bytes(), &mut |_| Some(&b), &mut tally_into(&mut c));
    let mut back = RecvBatch::new();
    let got = recv_n(&mut back, &a, 2);
    let data: Vec<_> = got.into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, vec![b"hello".to_vec(), b"world!".to_vec()]);
}

#[test]
fn a_closed_socket_drops_its_datagrams_only() {
    let (a, b) = pair();
    let to = b.local_addr().unwrap();
    let mut q = SendQueue::new(SendMode::default());
    assert!(q.push_copy(Via::Relay(RelayId(9)), to, b"gone"));
    assert!(q.push_copy(Via::Relay(RelayId(1)), to, b"kept"));
    let mut c = (0, 0, None);
    q.flush(
        &[],
        &mut |v| (v == Via::Relay(RelayId(1))).then_some(&a),
        &mut tally_into(&mut c),
    );
    let mut batch = RecvBatch::new();
    let got = recv_n(&mut batch, &b, 1);
    assert_eq!(got[0].1, b"kept");
}

#[cfg(target_os = "linux")]
#[test]
fn refused_gso_falls_back_and_is_remembered() {
    refused_gso_falls_back(false);
}

#[cfg(target_os = "linux")]
#[test]
fn refused_gso_through_io_uring_is_resent_one_by_one() {
    refused_gso_falls_back(true);
}

#[cfg(target_os = "linux")]
fn refused_gso_falls_back(uring: bool) {
    use std::os::fd::AsRawFd;
    // Linux refuses segmentation (EINVAL) on a socket sending without UDP checksums
    // (SO_NO_CHECK, socket(7) value 11): the run must go out one by one instead.
    let (a, b) = pair();
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            a.as_raw_fd(),
            libc::SOL_SOCKET,
            11,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let to = b.local_addr().unwrap();
    let mut q = SendQueue::new(SendMode::default());
    if !q.mode().gso {
        return; // a kernel without GSO: nothing to fall back from
    }
    if uring && q.use_uring().is_err() {
        eprintln!("io_uring unavailable here: nothing to test");
        return;
    }
    for k in 0..5u8 {
        assert!(q.push_copy(Via::Listener(0), to, &[k; 30]));
    }
    let mut c = (0, 0, None);
    q.flush(&[], &mut |_| Some(&a), &mut tally_into(&mut c));
    assert!(!q.mode().gso, "GSO off for good");
    assert_eq!(c, (0, 0, None));
    let mut batch = RecvBatch::new();
    let got = recv_n(&mut batch, &b, 5);
    let firsts: Vec<u8> = got.iter().map(|(_, d)| d[0]).collect();
    assert_eq!(firsts, vec![0, 1, 2, 3, 4]);
}

#[test]
fn the_batches_can_move_to_another_thread() {
    fn is_send<T: Send>() {}
    is_send::<RecvBatch>();
    is_send::<SendQueue>();
}

#[test]
fn send_modes_parse() {
    assert_eq!(
        SendMode::parse("single"),
        Some(SendMode {
            mmsg: false,
            gso: false
        })
    );
    assert_eq!(SendMode::parse("mmsg+gso"), Some(SendMode::default()));
    assert_eq!(SendMode::parse("fast"), None);
}
