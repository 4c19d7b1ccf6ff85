//! Floods against the real binary, bounded in count and time, on loopback only. Each test
//! prints the server's resident memory (VmRSS) before and after as `RSS <flood>: A -> B KiB`.
//!
//! - spoofed-source Allocates from 1,000 loopback addresses: no state before
//!   authentication, memory flat, no allocation;
//! - a 401 flood towards one source with wrong credentials: every request answered (each
//!   pays for its 401), one `auth_failed` log line;
//! - the smallest unauthenticated requests from one source: at most 3 times their bytes
//!   come back (plus 8 KiB per event loop), one line counting the answers held back per
//!   10 s window;
//! - an invalid-packet flood: memory flat, the relay still answers;
//! - permission and channel floods on one allocation: capped with 508 (RFC 8656 §9, §12);
//! - slow TCP clients that never finish a message: closed after `stream_idle_timeout_s`
//!   (the per-source cap on connections is `streams_per_source_across_loops.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use turnpike_tests::adversary::{self, rss_kib, udp_from, Reply, Session};
use turnpike_tests::turn::{self, Message};
use turnpike_tests::RunningServer;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Memory growth tolerated by a flood that must leave no state, KiB.
const FLAT_KIB: u64 = 4 * 1024;

fn report(what: &str, before: u64, after: u64) {
    println!(
        "RSS {what}: {before} -> {after} KiB ({:+} KiB)",
        after as i64 - before as i64
    );
}

/// Settles the server (a Binding round trip) and reads its RSS.
fn settled_rss(server: &RunningServer) -> u64 {
    let mut s = Session::udp(server.addr, LOCAL);
    let _ = s.raw(&Message::request(turn::BINDING).encode(None, true));
    rss_kib(server.pid())
}

#[test]
fn spoofed_source_allocates_leave_no_state() {
    let Some(mut server) = adversary::start(&[]) else {
        return;
    };
    let before = settled_rss(&server);
    let started = Instant::now();
    let mut sent = 0u32;
    // 1,000 sources (127.1.x.y), 4 Allocates each, answers never read: what a spoofer sees.
    for i in 0..1000u32 {
        let Ok(sock) = udp_from(1, (i / 250) as u8, (i % 250 + 1) as u8) else {
            continue;
        };
        for _ in 0..4 {
            let mut m = Message::request(turn::ALLOCATE);
            m.add(turn::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            if sock.send_to(&m.encode(None, true), server.addr).is_ok() {
                sent += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "flood too slow"
        );
    }
    let after = settled_rss(&server);
    report("spoofed Allocates", before, after);
    assert!(sent >= 3000, "only {sent} sent");
    assert!(
        after <= before + FLAT_KIB,
        "RSS grew from {before} to {after} KiB"
    );
    assert!(
        !server
            .events()
            .iter()
            .any(|e| e["event"] == "allocation_created"),
        "an allocation without authentication"
    );
    server.assert_running();
}

#[test]
fn a_401_flood_towards_one_source_is_answered_and_logged_once() {
    let Some(mut server) = adversary::start(&[]) else {
        return;
    };
    let before = settled_rss(&server);
    let mut s = Session::udp(server.addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77)));
    s.learn_nonce();
    let realm = s.realm.clone().expect("a realm");
    let nonce = s.nonce.clone().expect("a nonce");
    const FLOOD: usize = 300;
    for _ in 0..FLOOD {
        // Wrong password: a 401 and an auth failure each time. The request is as large
        // as its 401, so it pays for it (anti-amplification): every one is answered.
        let mut m = Message::request(turn::ALLOCATE);
        m.add(turn::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(turn::USERNAME, adversary::USER.as_bytes())
            .add(turn::REALM, realm.as_bytes())
            .add(turn::NONCE, &nonce);
        s.send(&m.encode(Some(b"wrong key"), true));
        // Read as we go, so the client's socket buffer loses nothing.
        if let Ok(m) = s.answer(Duration::from_millis(200)) {
            assert_eq!(m.error_code(), Some(401));
        } else {
            panic!("a 401 with wrong credentials was not answered");
        }
    }
    // One log line for the source within the 10 s window.
    server.wait_event(Duration::from_secs(3), |e| e["event"] == "auth_failed");
    let lines = server
        .events()
        .iter()
        .filter(|e| e["event"] == "auth_failed")
        .count();
    assert_eq!(lines, 1, "auth_failed records: {:#?}", server.events());
    let log_lines = server
        .log_text()
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .count();
    assert_eq!(log_lines, 1, "log lines:\n{}", server.log_text());
    let after = settled_rss(&server);
    report("401 flood", before, after);
    assert!(after <= before + FLAT_KIB);
    server.assert_running();
}

/// Reflection: the smallest unauthenticated requests (a bare 20-byte Allocate; its 401 is
/// about 150 bytes) from one source get at most 3 times their bytes back, plus the 8 KiB
/// advanced once per event loop; what is held back is counted and logged once per window.
#[test]
fn the_smallest_requests_from_one_source_get_at_most_three_times_their_bytes() {
    let Some(mut server) = adversary::start(&[("workers", "2")]) else {
        return;
    };
    let sock = udp_from(0, 0, 78).expect("a socket on 127.0.0.78");
    let reader = sock.try_clone().expect("a second handle");
    reader
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("a read timeout");
    let counting = std::thread::spawn(move || {
        let (mut answers, mut bytes) = (0u64, 0u64);
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = reader.recv_from(&mut buf) {
            answers += 1;
            bytes += n as u64;
        }
        (answers, bytes)
    });
    let bare = Message::request(turn::ALLOCATE).encode(None, false);
    assert_eq!(bare.len(), 20);
    let started = Instant::now();
    let mut sent_bytes = 0u64;
    for i in 0..20_000u32 {
        if sock.send_to(&bare, server.addr).is_ok() {
            sent_bytes += bare.len() as u64;
        }
        if i % 64 == 0 {
            // Paced, so the relay drops nothing on a full socket buffer.
            std::thread::sleep(Duration::from_micros(500));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "flood too slow"
        );
    }
    let (answers, got) = counting.join().expect("the counting thread");
    let limit = 3 * sent_bytes + 2 * 8_192;
    println!(
        "reflection: {sent_bytes} bytes in, {got} bytes out in {answers} answers (ratio {:.2}, bound {limit})",
        got as f64 / sent_bytes as f64
    );
    assert!(got <= limit, "{got} bytes out for {sent_bytes} in");
    assert!(got >= sent_bytes, "too few answers: {got} bytes");
    // What was held back: counted, and one line per 10 s window says how many.
    const HELD_LINE: &str = "held back by anti-amplification";
    let held_lines = |server: &RunningServer| {
        server
            .log_text()
            .lines()
            .filter(|l| l.contains(HELD_LINE))
            .count()
    };
    let logged = turnpike_tests::wait_until(Duration::from_secs(3), || {
        (held_lines(&server) > 0).then_some(())
    });
    assert!(
        logged.is_some(),
        "no held-back line:\n{}",
        server.log_text()
    );
    let records: Vec<_> = server
        .events()
        .into_iter()
        .filter(|e| e["event"] == "cap_reached" && e["cap"] == "rate_limited")
        .collect();
    assert_eq!(records.len(), 1, "cap_reached records: {records:#?}");
    server.assert_running();
}

#[test]
fn an_invalid_packet_flood_leaves_memory_flat() {
    let Some(mut server) = adversary::start(&[]) else {
        return;
    };
    let before = settled_rss(&server);
    let socks: Vec<_> = (1..=50u8).filter_map(|d| udp_from(2, 0, d).ok()).collect();
    let mut junk = Vec::new();
    let ok = Message::request(turn::BINDING).encode(None, true);
    let mut bad_cookie = ok.clone();
    bad_cookie[5] ^= 0xFF;
    let mut truncated = ok.clone();
    truncated.truncate(16);
    junk.push(bad_cookie);
    junk.push(truncated);
    junk.push(vec![0x40, 0x01, 0x00, 0x10, 1, 2]);
    junk.push(vec![0xFF; 1200]);
    junk.push(vec![0x00, 0x01, 0xFF, 0xFC, 0x21, 0x12, 0xA4, 0x42]);
    let started = Instant::now();
    let mut sent = 0u32;
    for round in 0..400usize {
        for (i, sock) in socks.iter().enumerate() {
            let j = &junk[(round + i) % junk.len()];
            if sock.send_to(j, server.addr).is_ok() {
                sent += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let after = settled_rss(&server);
    report("invalid packets", before, after);
    println!("invalid packets: {sent} sent in {:?}", started.elapsed());
    assert!(
        after <= before + FLAT_KIB,
        "RSS grew from {before} to {after} KiB"
    );
    // Still serving: a Binding is answered. UDP, and a loaded machine (the relay's loops
    // share the cores with the tests): up to 5 tries of 400 ms.
    let mut s = Session::udp(server.addr, LOCAL);
    let replies: Vec<Reply> = (0..5)
        .map(|_| s.raw(&ok))
        .take_while(|r| *r != Reply::Success)
        .collect();
    assert!(replies.len() < 5, "no answer to a Binding: {replies:?}");
    server.assert_running();
}

#[test]
fn permission_and_channel_floods_are_capped_with_508() {
    // No traffic goes to these peers: permissions and bindings only.
    let Some(mut server) = adversary::start(&[("allowed_peer_ip", r#"["10.0.0.0/8"]"#)]) else {
        return;
    };
    let before = settled_rss(&server);
    let peer = |i: u32| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)), 5000);
    let mut s = Session::udp(server.addr, LOCAL);
    s.allocate();
    let mut granted = 0;
    let mut refused = 0;
    for i in 1..=100u32 {
        match s.create_permission(peer(i)) {
            Reply::Success => granted += 1,
            Reply::Error(508) => refused += 1,
            other => panic!("permission {i}: {other:?}"),
        }
    }
    println!("permission flood: {granted} granted, {refused} refused with 508");
    assert_eq!((granted, refused), (64, 36));
    // Refreshing an existing permission still works at the cap.
    assert_eq!(s.create_permission(peer(1)), Reply::Success);

    let mut c = Session::udp(server.addr, LOCAL);
    c.allocate();
    let (mut bound, mut full) = (0, 0);
    for i in 0..100u32 {
        match c.channel_bind(0x4000 + i as u16, peer(1000 + i)) {
            Reply::Success => bound += 1,
            Reply::Error(508) => full += 1,
            other => panic!("channel {i}: {other:?}"),
        }
    }
    println!("channel flood: {bound} bound, {full} refused with 508");
    assert_eq!((bound, full), (64, 36));
    let after = settled_rss(&server);
    report("permission and channel floods", before, after);
    server.assert_running();
}

#[test]
fn slow_tcp_clients_are_closed_after_the_idle_timeout() {
    let Some(mut server) = adversary::start(&[
        ("stream_idle_timeout_s", "2"),
        ("max_streams_per_source", "8"),
    ]) else {
        return;
    };
    let before = settled_rss(&server);
    let binding = Message::request(turn::BINDING).encode(None, true);
    // 40 slow clients from 5 sources, each sends part of a message and stops.
    let mut slow = Vec::new();
    for i in 0..40u8 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 3, 0, 1 + i % 5));
        let cut = 1 + usize::from(i) % (binding.len() - 1);
        slow.push(Session::tcp(server.addr, from, Some(&binding[..cut])));
    }
    let opened = Instant::now();
    let mid = rss_kib(server.pid());
    for (i, s) in slow.iter_mut().enumerate() {
        let left = Duration::from_secs(5).saturating_sub(opened.elapsed());
        assert!(
            s.closed_within(left),
            "slow client {i} still open after 5 s"
        );
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    let after = settled_rss(&server);
    report(
        "slow TCP clients (before / with 40 open / after)",
        before,
        mid,
    );
    report("slow TCP clients, after close", before, after);
    assert!(after <= before + FLAT_KIB);
    server.assert_running();
}

/// Streams are never refused an answer for rate reasons: a TCP client guessing passwords
/// gets every 401, and its connection is closed after `stream_max_auth_failures` (10) failed
/// authentications in a row, its last 401 delivered first.
#[test]
fn a_tcp_client_guessing_gets_every_401_then_is_closed_after_ten() {
    let Some(mut server) = adversary::start(&[]) else {
        return;
    };
    let mut s = Session::tcp(server.addr, LOCAL, None);
    s.learn_nonce();
    let realm = s.realm.clone().expect("a realm");
    let nonce = s.nonce.clone().expect("a nonce");
    let mut answers = 1;
    let mut closed = false;
    for _ in 0..20 {
        let mut m = Message::request(turn::ALLOCATE);
        m.add(turn::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(turn::USERNAME, adversary::USER.as_bytes())
            .add(turn::REALM, realm.as_bytes())
            .add(turn::NONCE, &nonce);
        s.send(&m.encode(Some(b"wrong key"), true));
        match s.answer(Duration::from_secs(2)) {
            Ok(m) => {
                assert_eq!(m.error_code(), Some(401));
                answers += 1;
            }
            Err(Reply::Closed) => {
                closed = true;
                break;
            }
            Err(r) => panic!("no answer and not closed: {r:?} after {answers} answers"),
        }
    }
    assert_eq!(answers, 10, "every failed authentication is answered");
    if !closed {
        closed = s.closed_within(Duration::from_secs(2));
    }
    assert!(closed, "the connection is closed after 10 failures");
    server.assert_running();
}
