//! One client address holds at most `max_streams_per_source` TCP connections to the node,
//! whichever event loops they land on (DESIGN: quotas hold for the node, not per loop).
//! With `max_streams_per_source = 8` and `workers = 4`: 8 connections from 127.3.0.9 are
//! kept; 8 more from the same address (the kernel spreads connections over the loops) are
//! each closed within a second; a connection from another address is still served.
//!
//! A relay that counts per loop keeps up to 4 × 8 connections from one address. turnpike
//! only: coturn has no such cap.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use turnpike_tests::adversary::{self, Reply, Session};
use turnpike_tests::turn::{self, Message};

const CAP: usize = 8;
const LOOPS: u32 = 4;

#[test]
fn one_address_holds_at_most_the_cap_across_loops() {
    let Some(mut server) = adversary::start_with(&[("max_streams_per_source", "8")], |spec| {
        spec.workers = Some(LOOPS)
    }) else {
        return;
    };
    let source = IpAddr::V4(Ipv4Addr::new(127, 3, 0, 9));
    let mut kept: Vec<Session> = (0..CAP)
        .map(|_| Session::tcp(server.addr, source, None))
        .collect();
    for (i, s) in kept.iter_mut().enumerate() {
        assert!(
            !s.closed_within(Duration::from_millis(200)),
            "connection {} of {CAP} from {source} was closed",
            i + 1
        );
    }
    let extra_kept = (0..CAP)
        .filter(|_| !Session::tcp(server.addr, source, None).closed_within(Duration::from_secs(1)))
        .count();
    println!(
        "{CAP} connections from {source} held, then {extra_kept} of {CAP} more kept on {LOOPS} loops"
    );
    assert_eq!(
        extra_kept, 0,
        "max_streams_per_source = {CAP} must hold for the node: {extra_kept} connections \
         beyond it were kept (the {LOOPS} loops count each on their own?)"
    );

    // Another address is still served.
    let other = IpAddr::V4(Ipv4Addr::new(127, 3, 0, 10));
    let mut s = Session::tcp(server.addr, other, None);
    let binding = Message::request(turn::BINDING).encode(None, true);
    assert_eq!(s.raw(&binding), Reply::Success);
    drop(kept);
    server.assert_running();
}
