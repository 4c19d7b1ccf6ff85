//! A configuration reload at run time (`Server::reload`): new credentials, peer policy and
//! quotas apply to what comes next, and a live allocation keeps the key it was made with
//! (RFC 8656 §6.2, §7), except the key of a static user who was removed or given a new
//! password, and a REST key whose secret is gone, past the username's expiry.

mod support;

use core::time::Duration;
use support::*;
use turnpike_core::auth::{rest_password, Credentials};
use turnpike_core::config::Reloadable;
use turnpike_core::event::AuthFailure;
use turnpike_core::node::{LoopId, LoopMsg, NodePlace, Want};
use turnpike_core::server::ReloadOutcome;

/// The running configuration's reloadable part, with `f` applied.
fn changed(h: &Harness, f: impl FnOnce(&mut Reloadable)) -> Reloadable {
    let mut r = Reloadable::from_config(h.server.config());
    f(&mut r);
    r
}

/// Reloads the running configuration's reloadable part with `f` applied.
fn reload_with(h: &mut Harness, f: impl FnOnce(&mut Reloadable)) -> ReloadOutcome {
    let r = changed(h, f);
    let now = h.now;
    h.server.reload(now, r).expect("the reload is valid")
}

/// Credentials of realm REALM with `users` and `secrets`.
fn store(users: &[(&str, &str)], secrets: &[&[u8]]) -> Credentials {
    let mut c = Credentials::new(REALM);
    for (u, p) in users {
        c.add_user(u, p);
    }
    for s in secrets {
        c.add_rest_secret(s);
    }
    c
}

fn rest_client(n: u8, expiry: u64, secret: &[u8]) -> Client {
    let user = rest_user(expiry, "carol");
    let pw = rest_password(secret, &user);
    Client::new(Via::Udp(client(n)), &user, &pw)
}

/// As before any reload: past its username's expiry (60 s ahead), the allocation of `live`
/// still refreshes.
fn refreshes_past_its_expiry(h: &mut Harness, live: &mut Client) {
    h.advance(Duration::from_secs(120));
    assert!(h
        .authed(live, Req::refresh(Some(600)))
        .answer()
        .is_success());
}

#[test]
fn a_rotated_rest_secret_refuses_new_allocations_and_keeps_live_ones_until_expiry() {
    let mut h = Harness::new();
    let expiry = h.wall_s() + 3600;
    let mut live = rest_client(1, expiry, REST_SECRET);
    h.allocate_ok(&mut live);

    let out = reload_with(&mut h, |r| {
        r.credentials = store(&[(USER, PASS)], &[b"new-secret"]);
    });
    assert_eq!(out.rest_keys_expiring, 1);
    assert_eq!(out.static_keys_revoked, 0, "alice kept her password");

    // A new Allocate with the old secret: 401 at once.
    let mut late = rest_client(2, expiry, REST_SECRET);
    let a = h.authed(&mut late, Req::allocate());
    assert_eq!(a.answer().code(), Some(401));
    assert_eq!(auth_failures(&a), vec![AuthFailure::BadIntegrity]);
    // The new secret works.
    let mut fresh = rest_client(3, expiry, b"new-secret");
    h.allocate_ok(&mut fresh);
    // The live allocation still refreshes and installs permissions.
    assert!(h
        .authed(&mut live, Req::refresh(Some(600)))
        .answer()
        .is_success());
    let perm = h.authed(&mut live, Req::create_permission(&[peer(1)]));
    assert!(perm.answer().is_success());

    // Past its username's expiry, its key is no longer accepted.
    h.advance(Duration::from_secs(3601));
    let out = h.authed(&mut live, Req::refresh(Some(600)));
    assert_eq!(out.answer().code(), Some(401));
}

#[test]
fn a_live_rest_allocation_whose_secret_stays_is_untouched() {
    let mut h = Harness::new();
    let expiry = h.wall_s() + 60;
    let mut live = rest_client(1, expiry, REST_SECRET);
    h.allocate_ok(&mut live);
    let out = reload_with(&mut h, |r| {
        r.credentials.add_rest_secret(b"another");
    });
    assert_eq!(out, ReloadOutcome::default());
    refreshes_past_its_expiry(&mut h, &mut live);
}

#[test]
fn a_removed_static_user_keeps_relaying_but_cannot_refresh() {
    let mut h = Harness::new();
    let mut bob = Client::new(Via::Udp(client(5)), USER2, PASS2);
    let relays = h.allocation_with_channel(&mut bob, peer(1), 0x4000);
    let mut alice = Client::udp(6);
    h.allocate_ok(&mut alice);

    let out = reload_with(&mut h, |r| {
        r.credentials = store(&[(USER, PASS)], &[REST_SECRET]);
    });
    assert_eq!(out.static_keys_revoked, 1);

    // Relaying goes on: the peer's datagram reaches bob.
    let (o, _) = h.peer_datagram(relays, peer(1), b"hello");
    assert!(
        o.forward.is_some(),
        "a live channel relays after the reload"
    );
    // Requests on bob's allocation are refused; alice's are not.
    let r = h.authed(&mut bob, Req::refresh(Some(600)));
    assert_eq!(r.answer().code(), Some(401));
    assert_eq!(auth_failures(&r), vec![AuthFailure::UnknownUser]);
    assert!(h
        .authed(&mut alice, Req::refresh(Some(600)))
        .answer()
        .is_success());
    // A new Allocate of bob's is refused.
    let mut bob2 = Client::new(Via::Udp(client(7)), USER2, PASS2);
    assert_eq!(
        h.authed(&mut bob2, Req::allocate()).answer().code(),
        Some(401)
    );
}

#[test]
fn a_changed_password_is_accepted_on_the_live_allocation() {
    let mut h = Harness::new();
    let mut bob = Client::new(Via::Udp(client(5)), USER2, PASS2);
    h.allocate_ok(&mut bob);
    let out = reload_with(&mut h, |r| {
        r.credentials = store(&[(USER, PASS), (USER2, "bob-new")], &[REST_SECRET]);
    });
    assert_eq!(out.static_keys_revoked, 1);
    assert_eq!(
        h.authed(&mut bob, Req::refresh(Some(600))).answer().code(),
        Some(401),
        "the old password is gone"
    );
    bob.password = "bob-new".into();
    let r = h.authed(&mut bob, Req::refresh(Some(600)));
    assert!(r.answer().is_success());
    assert!(r.answer().verifies_sha1(&bob.key()));
}

#[test]
fn one_time_credentials_survive_a_reload() {
    let mut h = Harness::new();
    let wall = h.wall_s();
    h.server.credentials_mut().insert_one_time(
        "issued",
        turnpike_core::auth::OneTimeCredential {
            password: "pw".into(),
            expires_unix_s: wall + 600,
            listener: None,
        },
    );
    reload_with(&mut h, |r| r.credentials = store(&[], &[]));
    let mut c = Client::new(Via::Udp(client(9)), "issued", "pw");
    h.allocate_ok(&mut c);
}

#[test]
fn a_denied_peer_loses_its_permissions_and_gets_no_new_one() {
    let mut h = Harness::new();
    let mut c = Client::udp(1);
    let relay = h.allocation_with_channel(&mut c, peer(1), 0x4000);
    assert!(h
        .authed(&mut c, Req::create_permission(&[peer(2)]))
        .answer()
        .is_success());

    let out = reload_with(&mut h, |r| {
        r.peer_policy.deny = vec![net("198.51.100.1/32")];
    });
    assert_eq!(out.permissions_removed, 1);
    // Nothing more from the denied peer; the other still relays.
    assert!(h.peer_datagram(relay, peer(1), b"x").0.forward.is_none());
    assert!(h.peer_datagram(relay, peer(2), b"x").0.forward.is_some());
    // A new permission for it: 403 (RFC 8656 §10).
    let r = h.authed(&mut c, Req::create_permission(&[peer(1)]));
    assert_eq!(r.answer().code(), Some(403));
    // Lifted again: allowed again.
    reload_with(&mut h, |r| r.peer_policy.deny.clear());
    let r = h.authed(&mut c, Req::create_permission(&[peer(1)]));
    assert!(r.answer().is_success());
}

#[test]
fn the_relays_own_addresses_stay_denied() {
    // RFC 8656 §21.4: the relay's own addresses are never peers, whatever the new file
    // says (it names none: they are the running server's).
    let mut h = Harness::new();
    let mut c = Client::udp(1);
    h.allocate_ok(&mut c);
    let own = std::net::SocketAddr::new(relay_v4(), 5000);
    reload_with(&mut h, |r| r.peer_policy.own_addresses.clear());
    let r = h.authed(&mut c, Req::create_permission(&[own]));
    assert_eq!(r.answer().code(), Some(403));
}

#[test]
fn a_lower_user_quota_keeps_allocations_and_refuses_new_ones() {
    let mut h = Harness::new();
    let mut a = Client::udp(1);
    let mut b = Client::udp(2);
    h.allocate_ok(&mut a);
    h.allocate_ok(&mut b);
    reload_with(&mut h, |r| r.user_quota = 1);
    assert_eq!(h.server.stats(h.now).allocations, 2);
    let mut c = Client::udp(3);
    assert_eq!(h.authed(&mut c, Req::allocate()).answer().code(), Some(486));
    reload_with(&mut h, |r| r.user_quota = 3);
    h.allocate_ok(&mut c);
}

#[test]
fn a_lower_total_quota_keeps_allocations_and_refuses_new_ones_until_under_it() {
    let mut h = Harness::new();
    let mut cs: Vec<Client> = (1..=3).map(Client::udp).collect();
    for c in &mut cs {
        h.allocate_ok(c);
    }
    reload_with(&mut h, |r| r.total_quota = 2);
    assert_eq!(h.server.stats(h.now).allocations, 3, "nothing is cut");
    // A single loop answers 508 when it has no credit left to borrow.
    let mut d = Client::new(Via::Udp(client(10)), USER2, PASS2);
    assert_eq!(h.authed(&mut d, Req::allocate()).answer().code(), Some(508));
    // Two end: one below the new total, so one more fits.
    for c in &mut cs[..2] {
        assert!(h.authed(c, Req::refresh(Some(0))).answer().is_success());
    }
    h.allocate_ok(&mut d);
    let mut e = Client::new(Via::Udp(client(11)), USER2, PASS2);
    assert_eq!(h.authed(&mut e, Req::allocate()).answer().code(), Some(508));
}

#[test]
fn a_loop_that_lent_its_credits_sends_the_cut_round_and_keeps_what_comes_after() {
    // Loop 0 of 2 with total 10 starts with 5 credits and lends 3 (half, rounded up).
    let mut cfg = config();
    cfg.total_quota = 10;
    cfg.node = NodePlace { index: 0, count: 2 };
    let mut h = Harness::with_config(cfg);
    let out = h.loop_message(
        LoopId(1),
        LoopMsg::Borrow {
            req: 1,
            want: Want::Credits,
        },
    );
    assert!(matches!(
        out.to_loops[..],
        [(_, LoopMsg::Lend { credits: 3, .. })]
    ));
    assert_eq!(h.server.stats(h.now).quota_credits, 2);
    // Total 2: loop 0's share goes 5 → 1, a cut of 4 from 2 credits: 2 go to loop 1.
    reload_with(&mut h, |r| r.total_quota = 2);
    assert_eq!(h.server.stats(h.now).quota_credits, 0);
    let out = h.advance(Duration::ZERO);
    assert_eq!(
        out.to_loops,
        vec![(
            LoopId(1),
            LoopMsg::QuotaDebt {
                credits: 2,
                hops: 0
            }
        )]
    );
    // Loop 1 had nothing to give: the rest comes back, and after two rounds stays here.
    let out = h.loop_message(
        LoopId(1),
        LoopMsg::QuotaDebt {
            credits: 1,
            hops: 3,
        },
    );
    assert!(out.to_loops.is_empty(), "{:?}", out.to_loops);
    // 3 credits come back: 1 pays what is owed, 2 are held.
    h.loop_message(
        LoopId(1),
        LoopMsg::Lend {
            req: 99,
            credits: 3,
            family: 0,
            ports: Vec::new(),
        },
    );
    assert_eq!(h.server.stats(h.now).quota_credits, 2);
    // Raised to 12 (share 6, +5): held 7.
    reload_with(&mut h, |r| r.total_quota = 12);
    assert_eq!(h.server.stats(h.now).quota_credits, 7);
}

#[test]
fn a_bad_reload_changes_nothing() {
    let mut h = Harness::new();
    let now = h.now;
    let mut r = changed(&h, |r| r.user_quota = 0);
    assert!(h.server.reload(now, r.clone()).is_err());
    r.user_quota = 5;
    r.credentials = Credentials::new("other.realm");
    assert!(
        h.server.reload(now, r).is_err(),
        "the realm needs a restart"
    );
    assert_eq!(h.server.config().user_quota, 10);
    assert_eq!(h.server.config().credentials.realm(), REALM);
    let mut c = Client::udp(1);
    h.allocate_ok(&mut c);
}

#[test]
fn a_secret_given_back_gives_the_key_back() {
    let mut h = Harness::new();
    let mut live = rest_client(1, h.wall_s() + 60, REST_SECRET);
    h.allocate_ok(&mut live);
    let out = reload_with(&mut h, |r| r.credentials = store(&[], &[b"other"]));
    assert_eq!(out.rest_keys_expiring, 1);
    let out = reload_with(&mut h, |r| r.credentials = store(&[], &[REST_SECRET]));
    assert_eq!(out, ReloadOutcome::default());
    refreshes_past_its_expiry(&mut h, &mut live);
}

#[test]
fn a_denied_peer_gets_no_channel_binding() {
    // RFC 8656 §12.2: a ChannelBind for a peer the policy refuses is answered 403.
    let mut h = Harness::new();
    let mut c = Client::udp(1);
    h.allocation_with_channel(&mut c, peer(1), 0x4000);
    reload_with(&mut h, |r| {
        r.peer_policy.deny = vec![net("198.51.100.0/24")]
    });
    let r = h.authed(&mut c, Req::channel_bind(0x4001, peer(2)));
    assert_eq!(r.answer().code(), Some(403));
    // Refreshing the live channel to the now denied peer is refused too.
    let r = h.authed(&mut c, Req::channel_bind(0x4000, peer(1)));
    assert_eq!(r.answer().code(), Some(403));
}
