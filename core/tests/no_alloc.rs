//! The relay hot path allocates nothing per packet (the design's rule for ChannelData and
//! Send/Data in both directions, RFC 8656 §11–§12): a counting global allocator watches
//! 10,000 packets on each path after a warm-up and must see zero allocation calls.

mod harness;

use harness::*;
use std::net::SocketAddr;
use turnpike_core::stun::{attr, Method};
use turnpike_core::{ConnId, Forward, Output, RelayId, Server, HEADROOM, TAILROOM};

// The unsafe of this test binary lives in `harness::Counting` (a forwarding allocator).
#[global_allocator]
static COUNTING: Counting = Counting;

const ITERATIONS: usize = 10_000;
const PAYLOAD: usize = 200;

struct Setup {
    rig: Rig,
    client: SocketAddr,
    relay: RelayId,
    stream_relay: RelayId,
    conn: ConnId,
}

/// A UDP client with an allocation, a permission for PEER_PERM and a channel to
/// PEER_CHAN; a stream client with a channel to PEER_CHAN.
fn setup() -> Setup {
    let mut rig = Rig::new(config());
    let client = sa([5, 6, 7, 8], 40_000);
    let (_, relay) = udp_session_with_channel(&mut rig, client);

    let conn = ConnId(9);
    let remote = sa([5, 6, 7, 9], 40_001);
    rig.open_stream(conn, remote);
    let a = rig.stream_request(
        conn,
        &request(Method::ALLOCATE, tid(10), None, udp_transport),
    );
    let cred = Cred::user(1, &a.nonce.expect("nonce"));
    let (_, outs) = rig.stream(
        conn,
        &request(Method::ALLOCATE, tid(11), Some(&cred), udp_transport),
    );
    let stream_relay = outs
        .iter()
        .find_map(|o| match o {
            Output::BindRelay { relay, .. } => Some(*relay),
            _ => None,
        })
        .expect("a relay socket");
    let a = rig.stream_request(
        conn,
        &request(Method::CHANNEL_BIND, tid(12), Some(&cred), |b| {
            b.add_u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, sa(PEER_CHAN, 6000));
        }),
    );
    assert_eq!(a.outcome(), 0);
    Setup {
        rig,
        client,
        relay,
        stream_relay,
        conn,
    }
}

/// Runs `step` for a warm-up, then counts the allocation calls of ITERATIONS more.
fn count(mut step: impl FnMut()) -> u64 {
    for _ in 0..100 {
        step();
    }
    let before = allocs();
    for _ in 0..ITERATIONS {
        step();
    }
    allocs() - before
}

fn no_outputs(server: &mut Server) {
    assert_eq!(server.poll_output(), None, "the relay path queues nothing");
}

#[test]
fn channel_data_from_a_udp_client_allocates_nothing() {
    let mut s = setup();
    let mut buf = channel_data(CHANNEL, &[0xab; PAYLOAD], false);
    let (now, client) = (s.rig.now, s.client);
    let n = count(|| {
        let len = buf.len();
        let f = s
            .rig
            .server
            .handle_datagram(now, UDP, client, &mut buf, 0..len);
        assert!(matches!(f, Some(Forward::ToPeer { ref range, .. }) if range.len() == PAYLOAD));
    });
    no_outputs(&mut s.rig.server);
    assert_eq!(
        n, 0,
        "allocations over {ITERATIONS} ChannelData client→peer"
    );
}

#[test]
fn send_indication_from_a_udp_client_allocates_nothing() {
    let mut s = setup();
    let mut buf = send_indication(tid(99), sa(PEER_PERM, 5000), &[0xcd; PAYLOAD]);
    let (now, client) = (s.rig.now, s.client);
    let n = count(|| {
        let len = buf.len();
        let f = s
            .rig
            .server
            .handle_datagram(now, UDP, client, &mut buf, 0..len);
        assert!(matches!(f, Some(Forward::ToPeer { ref range, .. }) if range.len() == PAYLOAD));
    });
    no_outputs(&mut s.rig.server);
    assert_eq!(n, 0, "allocations over {ITERATIONS} Send indications");
}

#[test]
fn peer_datagram_on_a_channel_allocates_nothing() {
    let mut s = setup();
    let mut buf = vec![0u8; HEADROOM + PAYLOAD + TAILROOM];
    let (now, relay) = (s.rig.now, s.relay);
    let n = count(|| {
        let f = s.rig.server.handle_relay_datagram(
            now,
            relay,
            sa(PEER_CHAN, 6000),
            &mut buf,
            HEADROOM..HEADROOM + PAYLOAD,
        );
        assert!(
            matches!(f, Some(Forward::ToClient { ref range, .. }) if range.len() == PAYLOAD + 4)
        );
    });
    no_outputs(&mut s.rig.server);
    assert_eq!(
        n, 0,
        "allocations over {ITERATIONS} peer→client ChannelData"
    );
}

#[test]
fn peer_datagram_as_data_indication_allocates_nothing() {
    let mut s = setup();
    let mut buf = vec![0u8; HEADROOM + PAYLOAD + TAILROOM];
    let (now, relay) = (s.rig.now, s.relay);
    let n = count(|| {
        let f = s.rig.server.handle_relay_datagram(
            now,
            relay,
            sa(PEER_PERM, 5000),
            &mut buf,
            HEADROOM..HEADROOM + PAYLOAD,
        );
        // 20 header + XOR-PEER-ADDRESS (4 + 8) + DATA header 4 + payload.
        assert!(
            matches!(f, Some(Forward::ToClient { ref range, .. }) if range.len() == 36 + PAYLOAD)
        );
    });
    no_outputs(&mut s.rig.server);
    assert_eq!(n, 0, "allocations over {ITERATIONS} Data indications");
}

#[test]
fn peer_datagram_to_a_stream_client_allocates_nothing() {
    let mut s = setup();
    let mut buf = vec![0u8; HEADROOM + PAYLOAD + 2 + TAILROOM];
    let (now, relay, conn) = (s.rig.now, s.stream_relay, s.conn);
    let n = count(|| {
        // An odd length, so the stream padding is written too.
        let f = s.rig.server.handle_relay_datagram(
            now,
            relay,
            sa(PEER_CHAN, 6000),
            &mut buf,
            HEADROOM..HEADROOM + PAYLOAD + 1,
        );
        assert!(
            matches!(f, Some(Forward::ToStream { conn: c, ref range }) if c == conn
            && range.len() == 4 + PAYLOAD + 4)
        );
    });
    no_outputs(&mut s.rig.server);
    assert_eq!(
        n, 0,
        "allocations over {ITERATIONS} peer→stream ChannelData"
    );
}

#[test]
fn channel_data_on_a_stream_allocates_nothing() {
    let mut s = setup();
    // Odd payload length: the padded frame, then a frame split across two reads, so the
    // framer's reassembly buffer is exercised as well.
    let frame = channel_data(CHANNEL, &[0xef; PAYLOAD + 1], true);
    let mut twice = frame.clone();
    twice.extend_from_slice(&frame);
    let (first, second) = twice.split_at(frame.len() + 7);
    let (now, conn) = (s.rig.now, s.conn);
    let mut relayed = 0usize;
    let mut sink = |_: RelayId, _: SocketAddr, payload: &[u8]| {
        assert_eq!(payload.len(), PAYLOAD + 1);
        relayed += 1;
    };
    let n = count(|| {
        s.rig.server.handle_stream_data(now, conn, first, &mut sink);
        s.rig
            .server
            .handle_stream_data(now, conn, second, &mut sink);
    });
    no_outputs(&mut s.rig.server);
    assert_eq!(relayed, 2 * (ITERATIONS + 100));
    assert_eq!(n, 0, "allocations over {ITERATIONS}×2 stream ChannelData");
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the tests above against a counter that counts nothing.
    let n = count(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(16));
    });
    assert_eq!(n, ITERATIONS as u64);
}
