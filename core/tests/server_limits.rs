//! Abuse limits added for hardening: streams per source address (`max_streams_per_source`)
//! and bandwidth caps on relayed data per allocation (`max_bps`) and for the whole server
//! (`total_max_bps`). RFC 8656 §21.1.5 leaves resource limits to the server; each cap is
//! counted in `Server::stats`.

mod support;

use core::time::Duration;
use support::*;
use turnpike_core::event::CloseReason;
use turnpike_core::proxy_protocol;
use turnpike_core::server::MIN_BURST;
use turnpike_core::ConnId;

fn capped_streams(n: u32) -> Harness {
    let mut cfg = config();
    cfg.max_streams_per_source = n;
    Harness::with_config(cfg)
}

#[test]
fn streams_beyond_the_per_source_cap_are_closed_at_once() {
    let mut h = capped_streams(3);
    let from = |port| sa(&format!("203.0.113.9:{port}"));
    for i in 0..3 {
        let out = h.open_stream(ConnId(i), TCP, from(40_000 + i as u16));
        assert!(out.closed_streams.is_empty());
    }
    let out = h.open_stream(ConnId(3), TCP, from(40_003));
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(3), CloseReason::TooManyStreams)]
    );
    // Another source is not affected.
    let out = h.open_stream(ConnId(4), TCP, sa("203.0.113.10:40000"));
    assert!(out.closed_streams.is_empty());
    let s = h.server.stats(h.now);
    assert_eq!((s.streams, s.streams_over_source_cap), (4, 1));
    // A closed stream frees its place.
    h.close_stream(ConnId(0));
    let out = h.open_stream(ConnId(5), TCP, from(40_005));
    assert!(out.closed_streams.is_empty());
}

#[test]
fn streams_closed_by_the_core_free_their_place_too() {
    let mut h = capped_streams(1);
    let from = sa("203.0.113.9:40000");
    h.open_stream(ConnId(1), TCP, from);
    // Idle timeout closes it.
    let out = h.advance(Duration::from_secs(31));
    assert_eq!(out.closed_streams, vec![(ConnId(1), CloseReason::Idle)]);
    let out = h.open_stream(ConnId(2), TCP, from);
    assert!(out.closed_streams.is_empty());
}

#[test]
fn behind_a_trusted_proxy_the_cap_counts_the_client_from_the_header() {
    let mut h = capped_streams(2);
    let header = |client: &str| proxy_protocol::encode_v1(Some((sa(client), sa("192.0.2.1:443"))));
    // Many clients through one proxy: no cap on the proxy's own address.
    for i in 0..5u64 {
        h.open_stream(ConnId(i), TCP_PROXY, proxy_addr());
        let out = h.stream_data(ConnId(i), &header(&format!("198.18.0.{}:5000", i + 1)));
        assert!(out.closed_streams.is_empty(), "client {i}");
    }
    // One client through the proxy: capped.
    for i in 10..12u64 {
        h.open_stream(ConnId(i), TCP_PROXY, proxy_addr());
        let out = h.stream_data(ConnId(i), &header("198.18.1.1:5000"));
        assert!(out.closed_streams.is_empty());
    }
    h.open_stream(ConnId(12), TCP_PROXY, proxy_addr());
    let out = h.stream_data(ConnId(12), &header("198.18.1.1:5001"));
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(12), CloseReason::TooManyStreams)]
    );
    // PROXY UNKNOWN names no client: not counted against anyone.
    for i in 20..25u64 {
        h.open_stream(ConnId(i), TCP_PROXY, proxy_addr());
        let out = h.stream_data(ConnId(i), &proxy_protocol::encode_v1(None));
        assert!(out.closed_streams.is_empty());
    }
}

#[test]
fn zero_means_no_per_source_cap() {
    let mut h = capped_streams(0);
    for i in 0..200u64 {
        let out = h.open_stream(ConnId(i), TCP, sa(&format!("203.0.113.9:{}", 1000 + i)));
        assert!(out.closed_streams.is_empty());
    }
}

fn capped_bandwidth(per_allocation: u64, total: u64) -> Harness {
    let mut cfg = config();
    cfg.max_bps = per_allocation;
    cfg.total_max_bps = total;
    Harness::with_config(cfg)
}

/// Sends `n` ChannelData messages of `size` bytes from client `c` at the current time;
/// returns how many were forwarded.
fn burst(h: &mut Harness, from: u8, channel: u16, size: usize, n: usize) -> usize {
    let payload = vec![7u8; size];
    (0..n)
        .filter(|_| {
            h.datagram(UDP, client(from), &channel_data(channel, &payload, false))
                .forward
                .is_some()
        })
        .count()
}

#[test]
fn max_bps_caps_each_allocation_client_to_peer() {
    let rate = 2 * MIN_BURST;
    let mut h = capped_bandwidth(rate, 0);
    let mut c = Client::udp(1);
    h.allocation_with_channel(&mut c, peer(1), 0x4000);
    // A full bucket holds one second: rate / 1000 packets of 1000 bytes.
    let sent = burst(&mut h, 1, 0x4000, 1000, 200);
    assert_eq!(sent as u64, rate / 1000);
    let s = h.server.stats(h.now);
    assert_eq!(s.dropped.bandwidth, 200 - sent as u64);
    assert_eq!(s.dropped.bandwidth_bytes, (200 - sent as u64) * 1000);
    assert_eq!(s.udp.to_peer_bytes, sent as u64 * 1000);
    // Half a second later, half a bucket.
    h.advance(Duration::from_millis(500));
    assert_eq!(burst(&mut h, 1, 0x4000, 1000, 200) as u64, rate / 2000);
    // Another allocation has its own budget.
    let mut d = Client::udp(2);
    h.allocation_with_channel(&mut d, peer(1), 0x4000);
    assert_eq!(burst(&mut h, 2, 0x4000, 1000, 200) as u64, rate / 1000);
}

#[test]
fn max_bps_caps_peer_to_client_separately() {
    let rate = MIN_BURST;
    let mut h = capped_bandwidth(rate, 0);
    let mut c = Client::udp(1);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    // Client to peer spends its own bucket only.
    assert_eq!(burst(&mut h, 1, 0x4000, 1024, 100), 64);
    let payload = vec![1u8; 1024];
    let got = (0..100)
        .filter(|_| {
            h.peer_datagram(relay, peer(1), &payload)
                .0
                .forward
                .is_some()
        })
        .count();
    assert_eq!(got, 64);
    let s = h.server.stats(h.now);
    assert_eq!(s.dropped.bandwidth, 72);
    assert_eq!(
        (s.udp.to_peer_bytes, s.udp.from_peer_bytes),
        (64 * 1024, 64 * 1024)
    );
}

#[test]
fn total_max_bps_caps_all_allocations_together() {
    let total = 100_000;
    let mut h = capped_bandwidth(0, total);
    let mut a = Client::udp(1);
    let mut b = Client::udp(2);
    h.allocation_with_channel(&mut a, peer(1), 0x4000);
    h.allocation_with_channel(&mut b, peer(2), 0x4000);
    let first = burst(&mut h, 1, 0x4000, 1000, 60);
    let second = burst(&mut h, 2, 0x4000, 1000, 60);
    assert_eq!((first, second), (60, 40));
    let s = h.server.stats(h.now);
    assert_eq!(s.dropped.bandwidth, 20);
}

#[test]
fn a_packet_refused_by_the_total_cap_does_not_spend_the_allocation_budget() {
    let mut h = capped_bandwidth(MIN_BURST, MIN_BURST);
    let mut a = Client::udp(1);
    let mut b = Client::udp(2);
    h.allocation_with_channel(&mut a, peer(1), 0x4000);
    h.allocation_with_channel(&mut b, peer(2), 0x4000);
    // a takes the whole server budget; b's packets are refused by the total cap.
    assert_eq!(burst(&mut h, 1, 0x4000, 1024, 64), 64);
    assert_eq!(burst(&mut h, 2, 0x4000, 1024, 10), 0);
    // One second later both buckets are full again; b's own budget is untouched.
    h.advance(Duration::from_secs(1));
    assert_eq!(burst(&mut h, 2, 0x4000, 1024, 100), 64);
}

#[test]
fn send_indications_are_capped_too() {
    let mut h = capped_bandwidth(MIN_BURST, 0);
    let mut c = Client::udp(1);
    h.allocation_with_channel(&mut c, peer(1), 0x4000);
    let payload = vec![3u8; 1024];
    let mut sent = 0;
    for _ in 0..100 {
        let (_, out) = h.send_plain(&c, &Req::send_indication(peer(1), &payload));
        if out.forward.is_some() {
            sent += 1;
        }
    }
    assert_eq!(sent, 64);
}

#[test]
fn a_proxy_v1_line_ended_by_a_bare_lf_closes_the_stream_at_once() {
    // Found by the adversarial suite: the line was held until the header timeout.
    let mut h = Harness::new();
    h.open_stream(ConnId(1), TCP_PROXY, proxy_addr());
    let out = h.stream_data(ConnId(1), b"PROXY TCP4 203.0.113.7 192.0.2.1 49314 3479\n");
    assert_eq!(
        out.closed_streams,
        vec![(ConnId(1), CloseReason::BadProxyHeader)]
    );
}
