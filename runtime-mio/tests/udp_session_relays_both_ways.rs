//! A client allocates over UDP through the real binary, and data flows both ways between
//! it and a UDP peer; the event log names the client and the relayed address.

mod common;

use common::{Relay, TurnClient};
use std::net::UdpSocket;
use std::time::Duration;
use turnpike_core::client::ClientEvent;

#[test]
fn udp_session_relays_both_ways() {
    let relay = Relay::start("udp", "");
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer_addr = peer.local_addr().unwrap();

    let mut c = TurnClient::udp(relay.addr(), "alice", "pw");
    let relayed = c.allocate();
    assert_eq!(relayed.ip(), relay.addr().ip());
    c.permit(peer_addr);

    // Client → peer, as a Send indication.
    let now = c.now();
    c.client.send_indication(now, peer_addr, b"hello peer");
    c.pump_for(Duration::from_millis(100), |_| false);
    let mut buf = [0u8; 1500];
    let (n, from) = peer.recv_from(&mut buf).expect("peer got nothing");
    assert_eq!(&buf[..n], b"hello peer");
    assert_eq!(from, relayed);

    // Peer → client, as a Data indication.
    peer.send_to(b"hello client", relayed).unwrap();
    assert!(
        c.pump_until(|e| matches!(e, ClientEvent::Data { data, .. } if data == b"hello client")),
        "client got nothing: {:?}",
        c.events
    );

    let local = match &c.wire {
        common::Wire::Udp(s) => s.local_addr().unwrap(),
        common::Wire::Tcp(_) => unreachable!(),
    };
    let recs = relay.records_until(Duration::from_secs(3), |r| {
        r["event"] == "allocation_created"
    });
    let created = recs
        .iter()
        .find(|r| r["event"] == "allocation_created")
        .expect("no allocation_created record");
    assert_eq!(created["client"], local.to_string());
    assert_eq!(created["transport"], "udp");
    assert_eq!(created["username"], "alice");
    assert_eq!(created["relayed"][0], relayed.to_string());
}
