//! Refresh (RFC 8656 §8) and allocation lifetimes (RFC 8656 §3.2, §7.2).

mod support;

use core::time::Duration;
use support::*;
use turnpike_core::auth::{long_term_key, PasswordAlgorithm};
use turnpike_core::event::{AuthFailure, DeleteReason, Event};
use turnpike_core::stun::attr;
use turnpike_core::Instant;

fn deleted(out: &Outcome) -> Vec<DeleteReason> {
    out.events
        .iter()
        .filter_map(|e| match e {
            Event::AllocationDeleted { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn refresh_without_an_allocation_is_437() {
    // RFC 8656 §8: a Refresh on a 5-tuple with no allocation → 437.
    let mut h = Harness::new();
    let mut c = Client::udp(1);
    let out = h.authed(&mut c, Req::refresh(Some(600)));
    let a = out.answer();
    assert_eq!(a.code(), Some(437));
    assert!(a.verifies_sha1(&c.key()));
}

#[test]
fn refresh_with_lifetime_0_deletes_the_allocation() {
    // RFC 8656 §8: LIFETIME 0 deletes the allocation at once; the answer carries
    // LIFETIME 0. Its relay socket is closed and its port quarantined.
    let mut h = Harness::new();
    let mut c = Client::udp(2);
    let (_, relays) = h.allocate_ok(&mut c);
    let tid = h.tid();
    let req = Req::refresh(Some(0)).with_tid(tid);
    let (_, out) = h.send_signed(&c, &req);
    let a = out.answer();
    assert!(a.is_success());
    assert_eq!(a.lifetime(), Some(0));
    assert!(a.verifies_sha1(&c.key()));
    assert_eq!(deleted(&out), vec![DeleteReason::Refreshed0]);
    assert_eq!(out.closed_relays, relays);
    let s = h.server.stats(h.now);
    assert_eq!(s.allocations, 0);
    assert_eq!((s.ports_v4.in_use, s.ports_v4.quarantined), (0, 1));
    // A retransmission of the deleting Refresh gets the same success, not 437.
    let (_, again) = h.send_signed(&c, &req);
    assert_eq!(again.answer().bytes, a.bytes);
    assert!(again.events.is_empty());
    // A new Refresh finds nothing.
    let out = h.authed(&mut c, Req::refresh(Some(0)));
    assert_eq!(out.answer().code(), Some(437));
    // The 5-tuple may allocate again.
    h.allocate_ok(&mut c);
}

#[test]
fn refresh_extends_the_lifetime() {
    // RFC 8656 §8: a non-zero LIFETIME sets the time to expiry from now.
    let mut h = Harness::new();
    let mut c = Client::udp(3);
    h.allocate_ok(&mut c);
    let created = h.now;
    h.advance(Duration::from_secs(500));
    let out = h.authed(&mut c, Req::refresh(Some(600)));
    let a = out.answer();
    assert!(a.is_success());
    assert_eq!(a.lifetime(), Some(600));
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::AllocationRefreshed {
            lifetime_s: 600,
            ..
        }
    )));
    // At the old expiry nothing happens.
    let out = h.advance_to(created + Duration::from_secs(601));
    assert!(deleted(&out).is_empty());
    assert_eq!(h.server.stats(h.now).allocations, 1);
    // At the new one it goes.
    let out = h.advance_to(created + Duration::from_secs(1100));
    assert_eq!(deleted(&out), vec![DeleteReason::Expired]);
}

#[test]
fn refresh_lifetime_is_clamped_and_defaults() {
    let mut h = Harness::new();
    let mut c = Client::udp(4);
    h.allocate_ok(&mut c);
    let max = h.server.config().max_lifetime.as_secs() as u32;
    let out = h.authed(&mut c, Req::refresh(Some(1_000_000)));
    assert_eq!(out.answer().lifetime(), Some(max));
    let out = h.authed(&mut c, Req::refresh(None));
    assert_eq!(out.answer().lifetime(), Some(600));
}

#[test]
fn refresh_by_another_user_on_the_same_5_tuple_is_441() {
    // RFC 8656 §5: requests on an allocation must use the credentials that created it
    // (441 otherwise).
    let mut h = Harness::new();
    let mut alice = Client::udp(5);
    h.allocate_ok(&mut alice);
    let mut bob = Client::new(Via::Udp(client(5)), USER2, PASS2);
    let out = h.authed(&mut bob, Req::refresh(Some(0)));
    let a = out.answer();
    assert_eq!(a.code(), Some(441));
    let bob_key = long_term_key(PasswordAlgorithm::Md5, USER2, REALM, PASS2);
    assert!(a.verifies_sha1(&bob_key));
    assert_eq!(auth_failures(&out), vec![AuthFailure::WrongCredentials]);
    // The allocation is untouched.
    assert_eq!(h.server.stats(h.now).allocations, 1);
    assert!(deleted(&out).is_empty());
}

#[test]
fn refresh_with_a_family_the_allocation_lacks_is_443() {
    // RFC 8656 §8: REQUESTED-ADDRESS-FAMILY naming a family the allocation has no
    // relayed address for → 443.
    let mut h = Harness::new();
    let mut c = Client::udp(6);
    h.allocate_ok(&mut c);
    let out = h.authed(&mut c, Req::refresh(Some(600)).family(attr::FAMILY_IPV6));
    assert_eq!(out.answer().code(), Some(443));
    let out = h.authed(&mut c, Req::refresh(Some(600)).family(attr::FAMILY_IPV4));
    assert!(out.answer().is_success());
}

#[test]
fn allocation_expires_after_its_lifetime_and_poll_timeout_says_when() {
    // RFC 8656 §3.2 / §7.2: without a Refresh the allocation ends after its lifetime.
    let mut h = Harness::new();
    let mut c = Client::udp(7);
    let (_, relays) = h.allocate_ok(&mut c);
    let created = h.now;
    let expiry = created + Duration::from_secs(600);
    // Everything else due earlier (cached answers) is done after 41 s.
    h.advance(Duration::from_secs(41));
    assert_eq!(h.server.poll_timeout(), Some(expiry));
    let out = h.advance_to(Instant::from_nanos(expiry.as_nanos() - 1));
    assert!(deleted(&out).is_empty());
    let out = h.advance_to(expiry);
    assert_eq!(deleted(&out), vec![DeleteReason::Expired]);
    assert_eq!(out.closed_relays, relays);
    match out
        .events
        .iter()
        .find(|e| matches!(e, Event::AllocationDeleted { .. }))
    {
        Some(Event::AllocationDeleted {
            age_ms, username, ..
        }) => {
            assert_eq!(*age_ms, 600_000);
            assert_eq!(username, USER);
        }
        _ => unreachable!(),
    }
    assert_eq!(h.server.stats(h.now).allocations, 0);
    // Only the port quarantine is left to time.
    let q = h.server.config().relay_port_quarantine;
    assert_eq!(h.server.poll_timeout(), Some(expiry + q));
    h.advance(q);
    assert_eq!(h.server.poll_timeout(), None);
    let out = h.authed(&mut c, Req::refresh(Some(600)));
    assert_eq!(out.answer().code(), Some(437));
}
