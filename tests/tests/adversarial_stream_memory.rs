//! Adversarial: TCP streams that never authenticate, each holding a partial 60 KB frame
//! until the idle timeout. Without a bound, `max_streams` (20 000) of them pin about
//! 1.3 GB; `unauth_stream_buffer_bytes` bounds what streams without an allocation may
//! hold for the node, closing the stream whose partial frame would grow it past the cap.
//! The relay's resident memory (VmRSS) is measured before and after.
//!
//! How it fails without the bound: every stream stays open and RSS grows by the sum of
//! the partial frames (about 24 MB here, three times the cap).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use turnpike_tests::adversary::{rss_kib, start};

const STREAMS: usize = 400;
const PARTIAL: usize = 60_000;
const CAP: u64 = 8 << 20;

/// The first `PARTIAL` bytes of a STUN Binding request announcing 61 000 bytes.
fn partial_frame() -> Vec<u8> {
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&61_000u16.to_be_bytes());
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&[7; 12]);
    m.resize(PARTIAL, 0);
    m
}

#[test]
fn unauthenticated_partial_frames_stay_within_the_cap() {
    let cap = CAP.to_string();
    let Some(mut server) = start(&[
        ("unauth_stream_buffer_bytes", cap.as_str()),
        ("max_streams_per_source", "0"),
    ]) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(server.pid());
    let frame = partial_frame();
    let mut conns = Vec::new();
    for _ in 0..STREAMS {
        let Ok(mut s) = TcpStream::connect(server.addr) else {
            continue;
        };
        if s.write_all(&frame).is_ok() {
            conns.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.assert_running();
    let after = rss_kib(server.pid());
    // Which streams did the relay close?
    let mut closed = 0;
    for s in &mut conns {
        let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => closed += 1,
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut =>
            {
                closed += 1
            }
            _ => {}
        }
    }
    let grew_kib = after.saturating_sub(before);
    let sent_kib = (conns.len() * PARTIAL / 1024) as u64;
    println!(
        "RSS before {before} KiB, after {after} KiB (+{grew_kib} KiB); {} streams sent {sent_kib} KiB of partial frames; cap {} KiB; {closed} closed",
        conns.len(),
        CAP / 1024
    );
    assert!(conns.len() >= STREAMS * 9 / 10, "connections refused");
    // Near the cap: the kept partial frames, plus per-connection state and allocator
    // slack, far below what was sent.
    assert!(
        grew_kib < CAP / 1024 + 6 * 1024,
        "RSS grew {grew_kib} KiB for a cap of {} KiB",
        CAP / 1024
    );
    let kept_max = (CAP as usize / PARTIAL) + 2;
    assert!(
        closed >= conns.len().saturating_sub(kept_max),
        "{closed} of {} closed; at most {kept_max} fit under the cap",
        conns.len()
    );
    let log = server.log_text();
    drop(conns);
    assert!(!log.contains("panicked"), "{log}");
}
