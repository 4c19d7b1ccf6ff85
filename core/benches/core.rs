//! Core-only figures of the server, single-threaded, no I/O:
//!
//! (a) ChannelData relays per second, client→peer (`handle_datagram`) and peer→client
//!     (`handle_relay_datagram`, as ChannelData and as a Data indication), 200-byte
//!     payloads;
//! (b) full sequences per second: Allocate with its 401 round, CreatePermission and
//!     ChannelBind, each from a fresh client address (requests are built beforehand, so
//!     only the server's work is timed);
//! (c) bytes of core memory per allocation with one permission and one channel, from a
//!     counting allocator.
//!
//! Run with `cargo bench -p turnpike-core --bench core`. Each figure is the median of
//! five runs.

#[path = "../tests/harness/mod.rs"]
mod harness;

use harness::*;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant as Clock;
use turnpike_core::auth::{make_nonce, NonceKey};
use turnpike_core::stun::{attr, Method};
use turnpike_core::{Config, Forward, Output, RelayId, Server, HEADROOM, TAILROOM};

// The unsafe of this binary lives in `harness::Counting` (a forwarding allocator). Its
// cost (two thread-local additions per allocation) is part of figure (b).
#[global_allocator]
static COUNTING: Counting = Counting;

const RUNS: usize = 5;
const PAYLOAD: usize = 200;
const NONCE_KEY: [u8; 32] = [0x5a; 32];

fn main() {
    println!("turnpike-core benchmark (single thread, core only, median of {RUNS} runs)");
    relay_rates();
    sequence_rate();
    memory_per_allocation();
}

/// A configuration for many allocations: the whole port range, quotas out of the way,
/// and a known nonce key so the benchmark can build its signed requests in advance.
fn big_config() -> Config {
    let mut c = config();
    c.relay_port_min = 1024;
    c.relay_port_max = 65_535;
    c.user_quota = 1_000_000;
    c.total_quota = 1_000_000;
    c.max_queued_outputs = 1_000_000;
    c.nonce_key = Some(NonceKey(NONCE_KEY));
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---- (a) relays per second ------------------------------------------------------------

/// A server with one UDP client holding an allocation, a permission for PEER_PERM and a
/// channel to PEER_CHAN.
fn one_client() -> (Rig, SocketAddr, RelayId) {
    let mut rig = Rig::new(config());
    let client = sa([5, 6, 7, 8], 40_000);
    let (_, relay) = udp_session_with_channel(&mut rig, client);
    (rig, client, relay)
}

/// Runs `step` `n` times per run and prints the median rate.
fn rate(name: &str, n: u64, mut step: impl FnMut()) {
    for _ in 0..n / 10 {
        step();
    }
    let rates = (0..RUNS)
        .map(|_| {
            let t = Clock::now();
            for _ in 0..n {
                step();
            }
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    let r = median(rates);
    println!(
        "  {name:<52} {:>7.2} M/s  ({:>5.0} ns each)",
        r / 1e6,
        1e9 / r
    );
}

fn relay_rates() {
    println!("(a) relays per second, {PAYLOAD}-byte payloads");
    let (mut rig, client, relay) = one_client();
    let now = rig.now;
    let server = &mut rig.server;
    const N: u64 = 2_000_000;

    let mut buf = channel_data(CHANNEL, &[0xab; PAYLOAD], false);
    let len = buf.len();
    rate("ChannelData client→peer (handle_datagram)", N, || {
        let f = server.handle_datagram(now, UDP, client, black_box(&mut buf), 0..len);
        assert!(matches!(f, Some(Forward::ToPeer { .. })));
        black_box(f);
    });

    let mut buf = vec![0u8; HEADROOM + PAYLOAD + TAILROOM];
    rate(
        "ChannelData peer→client (handle_relay_datagram)",
        N,
        || {
            let f = server.handle_relay_datagram(
                now,
                relay,
                sa(PEER_CHAN, 6000),
                black_box(&mut buf),
                HEADROOM..HEADROOM + PAYLOAD,
            );
            assert!(matches!(f, Some(Forward::ToClient { .. })));
            black_box(f);
        },
    );

    rate(
        "Data indication peer→client (handle_relay_datagram)",
        N,
        || {
            let f = server.handle_relay_datagram(
                now,
                relay,
                sa(PEER_PERM, 5000),
                black_box(&mut buf),
                HEADROOM..HEADROOM + PAYLOAD,
            );
            assert!(matches!(f, Some(Forward::ToClient { .. })));
            black_box(f);
        },
    );

    let mut buf = send_indication(tid(9), sa(PEER_PERM, 5000), &[0xcd; PAYLOAD]);
    let len = buf.len();
    rate("Send indication client→peer (handle_datagram)", N, || {
        let f = server.handle_datagram(now, UDP, client, black_box(&mut buf), 0..len);
        assert!(matches!(f, Some(Forward::ToPeer { .. })));
        black_box(f);
    });
}

// ---- (b) allocation sequences per second ------------------------------------------------

/// The four requests of one client's sequence, signed in advance.
struct Sequence {
    from: SocketAddr,
    unauthenticated: Vec<u8>,
    allocate: Vec<u8>,
    permission: Vec<u8>,
    bind: Vec<u8>,
}

/// Client `i`'s address: a distinct public IPv4 address per client (the unauthenticated
/// budget is per source address).
fn client_addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x1400_0000 + i)), 40_000)
}

fn sequences(rig: &Rig, n: u32) -> Vec<Sequence> {
    (0..n)
        .map(|i| {
            let from = client_addr(i);
            let nonce = make_nonce(&NonceKey(NONCE_KEY), from, rig.now, true);
            let cred = Cred::user(i as usize % 2, nonce.as_bytes());
            let t = 10 * u64::from(i);
            Sequence {
                from,
                unauthenticated: request(Method::ALLOCATE, tid(t), None, udp_transport),
                allocate: request(Method::ALLOCATE, tid(t + 1), Some(&cred), udp_transport),
                permission: request(Method::CREATE_PERMISSION, tid(t + 2), Some(&cred), |b| {
                    b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_PERM, 5000));
                }),
                // The channel's peer is the permission's: one permission, one channel.
                bind: request(Method::CHANNEL_BIND, tid(t + 3), Some(&cred), |b| {
                    b.add_u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16);
                    b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_PERM, 5000));
                }),
            }
        })
        .collect()
}

/// Feeds one sequence; drains and drops the outputs, answering BindRelay at once. The
/// 401's nonce is checked on the first sequence only (parsing is not the server's cost).
fn run_sequence(server: &mut Server, now: turnpike_core::Instant, s: &mut Sequence) {
    let feed = |server: &mut Server, bytes: &mut Vec<u8>| {
        let n = bytes.len();
        black_box(server.handle_datagram(now, UDP, s.from, bytes, 0..n));
        while let Some(o) = server.poll_output() {
            if let Output::BindRelay { relay, .. } = o {
                server.handle_relay_bound(now, relay, Ok(()));
            }
        }
    };
    feed(server, &mut s.unauthenticated);
    feed(server, &mut s.allocate);
    feed(server, &mut s.permission);
    feed(server, &mut s.bind);
}

fn sequence_rate() {
    const N: u32 = 20_000;
    println!("(b) Allocate (with the 401 round) + CreatePermission + ChannelBind");
    // The nonce the benchmark computed is the server's: checked once, by hand.
    {
        let mut rig = Rig::new(big_config());
        let s = &sequences(&rig, 1)[0];
        let a = rig.udp_request(UDP, s.from, &s.unauthenticated);
        assert_eq!(
            a.nonce.as_deref(),
            Some(make_nonce(&NonceKey(NONCE_KEY), s.from, rig.now, true).as_bytes())
        );
    }
    let rates = (0..RUNS)
        .map(|_| {
            let rig = Rig::new(big_config());
            let mut seqs = sequences(&rig, N);
            let (mut server, now) = (rig.server, rig.now);
            let t = Clock::now();
            for s in &mut seqs {
                run_sequence(&mut server, now, s);
            }
            let elapsed = t.elapsed().as_secs_f64();
            let st = server.stats(now);
            assert_eq!(
                (st.allocations, st.permissions, st.channels),
                (u64::from(N), u64::from(N), u64::from(N)),
                "every sequence succeeded"
            );
            f64::from(N) / elapsed
        })
        .collect();
    let r = median(rates);
    println!(
        "  {:<52} {:>7.0} /s   ({:>5.1} µs each; {N} fresh clients per run)",
        "full sequences",
        r,
        1e6 / r
    );
}

// ---- (c) memory per allocation --------------------------------------------------------

fn memory_per_allocation() {
    const N: u32 = 10_000;
    println!("(c) core memory per allocation (one permission, one channel)");
    let mut with_cache = Vec::new();
    let mut steady = Vec::new();
    for _ in 0..RUNS {
        let rig = Rig::new(big_config());
        let mut seqs = sequences(&rig, N);
        let (mut server, now) = (rig.server, rig.now);
        let before = live_bytes();
        for s in &mut seqs {
            run_sequence(&mut server, now, s);
        }
        let made = live_bytes();
        // The answers kept for retransmissions (RFC 8489 §6.3.1) go after 40 s; the
        // allocations, permissions (300 s) and channels (600 s) stay.
        let later = now + core::time::Duration::from_secs(41);
        server.handle_timeout(later);
        while server.poll_output().is_some() {}
        let settled = live_bytes();
        let st = server.stats(later);
        assert_eq!(
            (st.allocations, st.permissions, st.channels),
            (u64::from(N), u64::from(N), u64::from(N))
        );
        with_cache.push((made - before) as f64 / f64::from(N));
        steady.push((settled - before) as f64 / f64::from(N));
        drop(seqs);
    }
    println!(
        "  {:<52} {:>7.0} bytes",
        "with the 40 s answer cache full",
        median(with_cache)
    );
    println!(
        "  {:<52} {:>7.0} bytes",
        "steady state (answer cache expired)",
        median(steady)
    );
}
