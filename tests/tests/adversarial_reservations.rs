//! Adversarial: one user drains the relay ports with reservations (RFC 8656 §7.2).
//!
//! An Allocate with EVEN-PORT R=1 makes the relay hold the port above for about 30 s
//! under a RESERVATION-TOKEN; a Refresh with LIFETIME 0 then deletes the allocation and
//! leaves the reservation. Looping the two, one user with `user_quota = 10` used to hold
//! every port of the pool (no quota counted reservations): another user then got 508.
//! Now a live reservation holds one count of its user's quota (and a credit of the node's
//! `total_quota`) until it is redeemed or expires: the loop is refused with 486 once the
//! reservations and the Allocate's own count reach the quota, and another user still
//! allocates. The relay runs its default loop count (the harness gives 64 relay ports per
//! loop), so the reservations spread over the loops and the user's quota is counted at
//! its home loop.
//!
//! How it fails on a relay that does not count reservations: the loop ends with 508
//! (pool drained) after dozens of rounds, not 486 after 9, and the other user gets 508.

use turnpike_tests::adversary::{start_with, Reply, Session, PASSWORD, USER};
use turnpike_tests::turn::{Message, ALLOCATE, LIFETIME, REFRESH, REQUESTED_TRANSPORT};

/// EVEN-PORT (RFC 8656 §18.8).
const EVEN_PORT: u16 = 0x0018;
const QUOTA: u32 = 10;

#[test]
fn reservations_cannot_drain_the_port_pool() {
    let Some(mut server) = start_with(&[], |s| {
        s.user_quota = Some(QUOTA);
        s.users.push(("bob".into(), "bob-password".into()));
    }) else {
        return;
    };
    let local = "127.0.0.1".parse().unwrap();
    let mut rounds = 0u32;
    let mut refusal = None;
    // More rounds than the pool has even pairs: without a quota the pool runs dry first.
    for _ in 0..400 {
        let mut s = Session::udp(server.addr, local).as_user(USER, PASSWORD);
        let mut m = Message::request(ALLOCATE);
        m.add(REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .add(EVEN_PORT, &[0x80]);
        match s.signed(&m) {
            Reply::Success => {
                rounds += 1;
                let mut r = Message::request(REFRESH);
                r.add(LIFETIME, &0u32.to_be_bytes());
                assert_eq!(s.signed(&r), Reply::Success, "Refresh 0");
            }
            other => {
                refusal = Some(other);
                break;
            }
        }
    }
    server.assert_running();
    println!("Allocate(EVEN-PORT R) + Refresh 0 rounds before refusal: {rounds}, then {refusal:?}");
    // Each live reservation holds one count; the Allocate needs its own next to them.
    assert_eq!(refusal, Some(Reply::Error(486)), "after {rounds} rounds");
    assert_eq!(rounds, QUOTA - 1);
    // The pool is not drained: another user allocates.
    let mut bob = Session::udp(server.addr, local).as_user("bob", "bob-password");
    let relayed = bob.allocate();
    println!("bob got {relayed}");
}
