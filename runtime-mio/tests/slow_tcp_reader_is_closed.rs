//! A TCP client that stops reading while a peer keeps sending is closed once its bounded
//! write buffer is full: the relay's memory stays bounded, the close is counted in the
//! event log, and the relay keeps serving others.

mod common;

use common::{Relay, TurnClient};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[test]
fn slow_tcp_reader_is_closed() {
    // Small kernel buffers on both ends, so that our own bound is what fills.
    let relay = Relay::start(
        "slow",
        "socket_send_buffer_size = 4096\nsocket_receive_buffer_size = 4096",
    );
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&relay.addr().into()).unwrap();
    let stream: TcpStream = s.into();
    let mut c = TurnClient::tcp(stream, relay.addr(), "alice", "pw");
    let relayed = c.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.permit(peer.local_addr().unwrap());

    // The client reads no more. The peer sends far more than the bound (256 KiB).
    let payload = [0x5au8; 1000];
    let end = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    let mut sent = 0usize;
    let mut next_check = 500;
    while Instant::now() < end && !closed {
        for _ in 0..50 {
            let _ = peer.send_to(&payload, relayed);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
        if sent >= next_check {
            next_check += 500;
            closed = relay
                .records_until(Duration::ZERO, |r| r["event"] == "slow_reader")
                .iter()
                .any(|r| r["event"] == "slow_reader");
        }
    }
    let recs = relay.records_until(Duration::from_secs(3), |r| {
        r["event"] == "allocation_deleted" && r["reason"] == "stream_closed"
    });
    assert!(
        recs.iter().any(|r| r["event"] == "slow_reader"),
        "no slow_reader record after {sent} packets: {recs:?}"
    );
    assert!(
        recs.iter()
            .any(|r| r["event"] == "allocation_deleted" && r["reason"] == "stream_closed"),
        "allocation not ended: {recs:?}"
    );

    // Others are still served.
    let mut other = TurnClient::udp(relay.addr(), "alice", "pw");
    other.allocate();
}
