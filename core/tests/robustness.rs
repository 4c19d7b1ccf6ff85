//! Robustness properties of the server (the design's "errors are values" and "memory is
//! bounded, whatever the input"; RFC 8489 §6.3: what is not well-formed is discarded):
//!
//! - random bytes as UDP datagrams, as stream data split anywhere, and as relay datagrams
//!   never panic, never produce an output for anyone but the sender (or, for relay
//!   datagrams, the allocation's own client), and create no allocation or stream;
//! - the bytes the core holds do not grow with the number of garbage inputs (a counting
//!   global allocator measures them);
//! - any split of a valid stream into pieces gives the same outputs as one piece
//!   (RFC 8656 §12.5: framing on streams).

mod harness;

use harness::*;
use proptest::prelude::*;
use std::net::SocketAddr;
use turnpike_core::stun::{attr, Class, Message, Method};
use turnpike_core::{ConnId, Forward, ListenerId, Output, RelayId, Server, HEADROOM, TAILROOM};

// The unsafe of this test binary lives in `harness::Counting` (a forwarding allocator).
#[global_allocator]
static COUNTING: Counting = Counting;

/// The legitimate client, its channel and permitted peers.
const CLIENT: [u8; 4] = [5, 6, 7, 8];

/// A server with one UDP client holding an allocation, a permission for PEER_PERM and a
/// channel to PEER_CHAN. Returns the rig, the client's credentials and relay socket.
fn with_client() -> (Rig, Cred, RelayId) {
    let mut rig = Rig::new(config());
    let client = sa(CLIENT, 40_000);
    let (cred, relay) = udp_session_with_channel(&mut rig, client);
    (rig, cred, relay)
}

/// Valid messages to mutate: garbage that gets past the first checks reaches deeper code.
fn seeds(cred: &Cred) -> Vec<Vec<u8>> {
    vec![
        request(Method::BINDING, tid(50), None, |_| {}),
        request(Method::ALLOCATE, tid(51), None, udp_transport),
        request(Method::ALLOCATE, tid(52), Some(cred), udp_transport),
        request(Method::REFRESH, tid(53), Some(cred), |b| {
            b.add_u32(attr::LIFETIME, 0);
        }),
        request(Method::CREATE_PERMISSION, tid(54), Some(cred), |b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_CHAN, 1));
        }),
        request(Method::CHANNEL_BIND, tid(55), Some(cred), |b| {
            b.add_u32(attr::CHANNEL_NUMBER, 0x4001 << 16);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_CHAN, 1));
        }),
        send_indication(tid(56), sa(PEER_PERM, 5000), b"hello"),
        channel_data(CHANNEL, b"data", true),
    ]
}

/// Random bytes, or a valid message with a few bytes changed or cut short.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let (_, cred, _) = with_client();
    let seeds = seeds(&cred);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (
            prop::sample::select(seeds),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            any::<prop::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(|(mut m, flips, cut, truncate)| {
                for (at, v) in flips {
                    let i = at.index(m.len());
                    m[i] = v;
                }
                if truncate {
                    m.truncate(cut.index(m.len() + 1));
                }
                m
            }),
    ]
}

/// Garbage senders: never the client.
fn sender() -> impl Strategy<Value = SocketAddr> {
    (1u8..6, any::<u16>()).prop_map(|(i, port)| sa([9, 9, 9, i], port))
}

fn listener() -> impl Strategy<Value = ListenerId> {
    prop_oneof![
        4 => Just(UDP),
        1 => Just(UDP2),
        1 => Just(TCP),
        1 => Just(ListenerId(77))
    ]
}

/// The legitimate client still relays after the garbage.
fn client_still_works(rig: &mut Rig) {
    let mut buf = channel_data(CHANNEL, b"still here", false);
    let n = buf.len();
    let f = rig
        .server
        .handle_datagram(rig.now, UDP, sa(CLIENT, 40_000), &mut buf, 0..n);
    assert!(
        matches!(f, Some(Forward::ToPeer { peer, .. }) if peer == sa(PEER_CHAN, 6000)),
        "{f:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random datagrams: no panic, answers only to their sender, nothing relayed, no
    /// allocation made.
    #[test]
    fn random_datagrams_only_ever_answer_their_sender(
        inputs in prop::collection::vec((listener(), sender(), garbage()), 1..32)
    ) {
        let (mut rig, _, _) = with_client();
        for (listener, from, bytes) in inputs {
            let mut buf = bytes.clone();
            let n = buf.len();
            let f = rig.server.handle_datagram(rig.now, listener, from, &mut buf, 0..n);
            prop_assert_eq!(f, None);
            for o in rig.drain() {
                match o {
                    Output::Transmit { listener: l, to, data } => {
                        prop_assert_eq!((l, to), (listener, from));
                        prop_assert!(Message::parse(&data).is_ok());
                    }
                    Output::Event(_) => {}
                    other => prop_assert!(false, "unexpected output {:?}", other),
                }
            }
        }
        let s = rig.server.stats(rig.now);
        prop_assert_eq!((s.allocations, s.allocations_pending, s.streams), (1, 0, 0));
        client_still_works(&mut rig);
    }

    /// Random bytes on a stream, split anywhere: no panic; outputs only for that stream;
    /// no allocation; once closed, nothing is left.
    #[test]
    fn random_stream_bytes_only_ever_answer_their_stream(
        chunks in prop::collection::vec(garbage(), 1..16),
        remote in sender(),
    ) {
        let (mut rig, _, _) = with_client();
        let conn = ConnId(5);
        rig.open_stream(conn, remote);
        let mut open = true;
        for chunk in chunks {
            let (relayed, outs) = rig.stream(conn, &chunk);
            prop_assert!(relayed.is_empty(), "garbage relayed: {:?}", relayed);
            for o in outs {
                match o {
                    Output::StreamWrite { conn: c, data } => {
                        prop_assert!(open);
                        prop_assert_eq!(c, conn);
                        for m in split_stun(&data) {
                            prop_assert!(Message::parse(m).is_ok());
                        }
                    }
                    Output::CloseStream { conn: c, .. } => {
                        prop_assert_eq!(c, conn);
                        open = false;
                    }
                    Output::Event(_) => {}
                    other => prop_assert!(false, "unexpected output {:?}", other),
                }
            }
        }
        let s = rig.server.stats(rig.now);
        prop_assert_eq!(s.allocations, 1);
        prop_assert_eq!(s.streams, u64::from(open));
        if open {
            rig.server.handle_stream_closed(rig.now, conn);
            prop_assert_eq!(rig.server.stats(rig.now).streams, 0);
        }
        client_still_works(&mut rig);
    }

    /// Random datagrams from peers, with random buffer ranges: relayed only from a
    /// permitted peer, only to the allocation's client, only within the buffer, and as a
    /// well-formed ChannelData or Data indication carrying the payload.
    #[test]
    fn random_peer_datagrams_reach_only_the_client(
        inputs in prop::collection::vec(
            (
                prop_oneof![3 => Just(true), 1 => Just(false)],
                prop_oneof![
                    Just(sa(PEER_CHAN, 6000)),
                    Just(sa(PEER_PERM, 5000)),
                    Just(sa(PEER_CHAN, 6001)),
                    Just(sa([8, 8, 8, 8], 53)),
                ],
                prop::collection::vec(any::<u8>(), 0..300),
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
                prop_oneof![9 => Just(true), 1 => Just(false)],
            ),
            1..32,
        )
    ) {
        let (mut rig, _, relay) = with_client();
        for (own_relay, from, payload, a, b, well_formed) in inputs {
            let relay = if own_relay { relay } else { RelayId(relay.0 + 100) };
            let mut buf = vec![0u8; HEADROOM + payload.len() + TAILROOM];
            buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(&payload);
            let range = if well_formed {
                HEADROOM..HEADROOM + payload.len()
            } else {
                // The driver breaks the buffer contract: anything but a panic.
                let n = buf.len() + 8;
                a.index(n)..b.index(n)
            };
            // What the server is asked to relay: the bytes in the range, when it is valid.
            let sent = buf.get(range.clone()).map(<[u8]>::to_vec);
            let f = rig.server.handle_relay_datagram(rig.now, relay, from, &mut buf, range.clone());
            let permitted = from.ip() == sa(PEER_CHAN, 0).ip() || from.ip() == sa(PEER_PERM, 0).ip();
            match f {
                None => prop_assert!(!(own_relay && permitted && well_formed)),
                Some(Forward::ToClient { listener, client, range: out }) => {
                    prop_assert!(own_relay && permitted);
                    prop_assert_eq!((listener, client), (UDP, sa(CLIENT, 40_000)));
                    prop_assert!(out.end <= buf.len());
                    prop_assert!(range.start >= HEADROOM && range.end + TAILROOM <= buf.len());
                    let payload = sent.expect("a valid range");
                    let out = &buf[out];
                    if from == sa(PEER_CHAN, 6000) {
                        prop_assert_eq!(&out[..2], &CHANNEL.to_be_bytes());
                        prop_assert_eq!(&out[4..], &payload[..]);
                    } else {
                        let m = Message::parse(out);
                        prop_assert!(m.is_ok(), "{:?}", m);
                        let m = m.unwrap();
                        prop_assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
                        prop_assert_eq!(m.get(attr::DATA), Some(&payload[..]));
                        let t = m.transaction_id();
                        let p = m.get(attr::XOR_PEER_ADDRESS).map(|v| attr::decode_xor_address(v, &t));
                        prop_assert_eq!(p, Some(Ok(from)));
                    }
                }
                Some(other) => prop_assert!(false, "forwarded as {:?}", other),
            }
            for o in rig.drain() {
                prop_assert!(matches!(o, Output::Event(_)), "unexpected output {:?}", o);
            }
        }
        client_still_works(&mut rig);
    }

    /// Any split of a valid stream (requests, indications and ChannelData back to back)
    /// gives exactly the outputs and relayed payloads of the unsplit stream.
    #[test]
    fn any_split_of_a_valid_stream_frames_the_same(
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24)
    ) {
        let whole = split_run(&[]);
        let (stream, _) = valid_stream();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.sort_unstable();
        prop_assert_eq!(split_run(&at), whole);
    }
}

/// The stream of the split test: its bytes, given the nonce the server issues to its
/// client (deterministic: same seed, same address, same time).
fn valid_stream() -> (Vec<u8>, Vec<u8>) {
    let mut rig = Rig::new(config());
    let conn = ConnId(1);
    rig.open_stream(conn, stream_client());
    let a = rig.stream_request(
        conn,
        &request(Method::ALLOCATE, tid(1), None, udp_transport),
    );
    let nonce = a.nonce.expect("nonce");
    let cred = Cred::user(1, &nonce);
    let mut s = Vec::new();
    s.extend(request(Method::BINDING, tid(10), None, |_| {}));
    s.extend(request(
        Method::CREATE_PERMISSION,
        tid(11),
        Some(&cred),
        |b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_PERM, 5000));
        },
    ));
    s.extend(request(Method::CHANNEL_BIND, tid(12), Some(&cred), |b| {
        b.add_u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16);
        b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_CHAN, 6000));
    }));
    s.extend(channel_data(CHANNEL, b"hello", true));
    s.extend(send_indication(
        tid(13),
        sa(PEER_PERM, 5000),
        b"via a Send indication",
    ));
    s.extend(request(Method::REFRESH, tid(14), Some(&cred), |b| {
        b.add_u32(attr::LIFETIME, 300);
    }));
    s.extend(channel_data(CHANNEL, b"", true));
    s.extend(channel_data(CHANNEL, &[0x42; 64], true));
    s.extend(request(Method::BINDING, tid(15), None, |_| {}));
    s.extend(channel_data(0x4001, b"unbound: dropped", true));
    s.extend(request(
        Method::CREATE_PERMISSION,
        tid(16),
        Some(&cred),
        |b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, sa([127, 0, 0, 1], 5000));
        },
    ));
    s.extend(channel_data(CHANNEL, b"last", true));
    (s, nonce)
}

fn stream_client() -> SocketAddr {
    sa([5, 6, 7, 9], 40_001)
}

/// Feeds the valid stream cut at `at` to a fresh server whose stream client already has
/// an allocation; returns the stream's bytes written, the other outputs and what was
/// relayed.
fn split_run(at: &[usize]) -> (Vec<u8>, Vec<Output>, Relayed) {
    let (stream, _) = valid_stream();
    let mut rig = Rig::new(config());
    let conn = ConnId(1);
    rig.open_stream(conn, stream_client());
    let a = rig.stream_request(
        conn,
        &request(Method::ALLOCATE, tid(1), None, udp_transport),
    );
    let cred = Cred::user(1, &a.nonce.expect("nonce"));
    let a = rig.stream_request(
        conn,
        &request(Method::ALLOCATE, tid(2), Some(&cred), udp_transport),
    );
    assert_eq!(a.outcome(), 0);
    let mut written = Vec::new();
    let mut others = Vec::new();
    let mut relayed = Vec::new();
    let mut from = 0;
    for &to in at.iter().chain(std::iter::once(&stream.len())) {
        let (r, outs) = rig.stream(conn, &stream[from..to]);
        relayed.extend(r);
        for o in outs {
            match o {
                Output::StreamWrite { data, .. } => written.extend(data),
                o => others.push(o),
            }
        }
        from = to;
    }
    (written, others, relayed)
}

#[test]
fn the_valid_stream_does_what_it_says() {
    let (written, others, relayed) = split_run(&[]);
    let answers: Vec<(Method, u16)> = split_stun(&written)
        .into_iter()
        .map(parse_answer)
        .map(|a| (a.method, a.outcome()))
        .collect();
    assert_eq!(
        answers,
        [
            (Method::BINDING, 0),
            (Method::CREATE_PERMISSION, 0),
            (Method::CHANNEL_BIND, 0),
            (Method::REFRESH, 0),
            (Method::BINDING, 0),
            (Method::CREATE_PERMISSION, 403),
        ]
    );
    let payloads: Vec<&[u8]> = relayed.iter().map(|r| &r.2[..]).collect();
    assert_eq!(
        payloads,
        [
            &b"hello"[..],
            b"via a Send indication",
            b"",
            &[0x42; 64],
            b"last"
        ]
    );
    assert!(others.iter().all(|o| matches!(o, Output::Event(_))));
}

#[test]
fn one_byte_reads_frame_the_same() {
    let (stream, _) = valid_stream();
    let every: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(split_run(&every), split_run(&[]));
}

// ---- memory ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so the memory tests need no strategy.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        if self.below(2) == 0 {
            let n = self.below(200);
            (0..n).map(|_| self.next() as u8).collect()
        } else {
            let mut m = seeds[self.below(seeds.len())].clone();
            for _ in 0..self.below(4) {
                let i = self.below(m.len());
                m[i] = self.next() as u8;
            }
            if self.below(2) == 0 {
                m.truncate(self.below(m.len() + 1));
            }
            m
        }
    }
    fn addr(&mut self) -> SocketAddr {
        let ip = self.next() as u32 | 0x0100_0000;
        SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), self.next() as u16)
    }
}

/// Feeds `n` garbage inputs of every kind (UDP from many sources, streams opened, fed and
/// closed, peer datagrams) and drains the outputs. The inputs are made before counting
/// starts, so the live-bytes difference across the call is what the server kept.
fn feed_garbage(server: &mut Server, rng: &mut Rng, seeds: &[Vec<u8>], relay: RelayId, n: usize) {
    let now = secs(1_000);
    let inputs: Vec<(usize, SocketAddr, Vec<u8>)> = (0..n)
        .map(|_| (rng.below(4), rng.addr(), rng.bytes(seeds)))
        .collect();
    let mut bufs: Vec<Vec<u8>> = inputs
        .iter()
        .map(|(_, _, b)| {
            let mut v = vec![0u8; HEADROOM + b.len() + TAILROOM];
            v[HEADROOM..HEADROOM + b.len()].copy_from_slice(b);
            v
        })
        .collect();
    let mut conn = 1_000;
    let before = live_bytes();
    for ((kind, from, bytes), buf) in inputs.iter().zip(bufs.iter_mut()) {
        let range = HEADROOM..HEADROOM + bytes.len();
        match kind {
            0 | 1 => {
                let _ = server.handle_datagram(now, UDP, *from, buf, range);
            }
            2 => {
                conn += 1;
                let c = ConnId(conn);
                server.handle_stream_open(now, c, TCP, sa([192, 0, 2, 1], 3478), *from);
                server.handle_stream_data(now, c, bytes, &mut |_, _, _| {});
                server.handle_stream_closed(now, c);
            }
            _ => {
                let _ = server.handle_relay_datagram(now, relay, *from, buf, range);
            }
        }
        while let Some(o) = server.poll_output() {
            drop(o);
        }
    }
    let _ = before;
}

#[test]
fn garbage_does_not_grow_the_core() {
    let (mut rig, cred, relay) = with_client();
    let seeds = seeds(&cred);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Warm-up: lazily sized structures (the output queue) reach their working size.
    feed_garbage(&mut rig.server, &mut rng, &seeds, relay, 5_000);
    let after_warmup = live_bytes();
    feed_garbage(&mut rig.server, &mut rng, &seeds, relay, 5_000);
    let after_10k = live_bytes();
    feed_garbage(&mut rig.server, &mut rng, &seeds, relay, 40_000);
    let after_50k = live_bytes();
    println!(
        "live bytes: after warm-up {after_warmup}, +5k inputs {}, +45k inputs {}",
        after_10k - after_warmup,
        after_50k - after_warmup
    );
    // The inputs themselves are freed by the time each call returns; what stays is the
    // server's. It must not grow with the number of inputs.
    assert!(
        after_50k - after_warmup <= 4096,
        "the core grew by {} bytes over 45,000 garbage inputs",
        after_50k - after_warmup
    );
    let s = rig.server.stats(rig.now);
    assert_eq!((s.allocations, s.allocations_pending, s.streams), (1, 0, 0));
    client_still_works(&mut rig);
}

#[test]
fn garbage_streams_left_open_hold_at_most_a_frame_each() {
    let (mut rig, cred, _) = with_client();
    let seeds = seeds(&cred);
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    let max_frame = rig.server.config().max_stream_frame as i64;
    const STREAMS: u64 = 200;
    let before = live_bytes();
    for c in 0..STREAMS {
        let conn = ConnId(10_000 + c);
        let from = rng.addr();
        rig.server
            .handle_stream_open(rig.now, conn, TCP, sa([192, 0, 2, 1], 3478), from);
        for _ in 0..20 {
            let bytes = rng.bytes(&seeds);
            rig.server
                .handle_stream_data(rig.now, conn, &bytes, &mut |_, _, _| {});
            while rig.server.poll_output().is_some() {}
        }
    }
    let held = live_bytes() - before;
    let open = rig.server.stats(rig.now).streams;
    println!("{open} of {STREAMS} garbage streams still open, core holds {held} bytes more");
    assert!(held <= open as i64 * (max_frame + 1024) + 64 * 1024);
    for c in 0..STREAMS {
        rig.server.handle_stream_closed(rig.now, ConnId(10_000 + c));
    }
    while rig.server.poll_output().is_some() {}
    let s = rig.server.stats(rig.now);
    assert_eq!((s.allocations, s.streams), (1, 0));
    // Closed streams leave nothing behind but what the maps keep as spare capacity.
    let left = live_bytes() - before;
    assert!(
        left <= 64 * 1024,
        "{left} bytes left after closing every stream"
    );
}

/// A stream that sends only a frame header (8 bytes of a STUN header announcing a
/// 65,532-byte body, or 4 bytes of a ChannelData header announcing 65,535) should not make
/// the core hold the whole announced frame: an unauthenticated peer could otherwise pin
/// `max_streams × max_stream_frame` bytes (20,000 × 64 KiB ≈ 1.3 GB with the defaults)
/// by sending 8 bytes per connection.
#[test]
fn a_frame_header_alone_does_not_pin_a_frame_of_memory() {
    let (mut rig, _, _) = with_client();
    const STREAMS: u64 = 100;
    let header = [0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42];
    let base = live_bytes();
    for c in 0..STREAMS {
        // Each from its own address: one source is capped at `max_streams_per_source`.
        rig.open_stream(ConnId(20_000 + c), sa([9, 9, 9, c as u8], 1000 + c as u16));
    }
    let opened = live_bytes();
    for c in 0..STREAMS {
        rig.server
            .handle_stream_data(rig.now, ConnId(20_000 + c), &header, &mut |_, _, _| {});
    }
    let after = live_bytes();
    let per_stream_open = (opened - base) / STREAMS as i64;
    let per_header = (after - opened) / STREAMS as i64;
    println!("a stream costs {per_stream_open} bytes; an 8-byte header adds {per_header}");
    assert_eq!(rig.server.stats(rig.now).streams, STREAMS);
    assert!(
        per_header <= 1024,
        "an 8-byte header makes the core hold {per_header} bytes per stream"
    );
}
