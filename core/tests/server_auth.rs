//! The long-term credential mechanism on the server side (RFC 8489 §9.2.4), password
//! algorithm negotiation and USERHASH (RFC 8489 §9.2.1, §14.4, §14.11, §14.12), TURN REST
//! credentials, stateless nonces, and the per-source budget for unauthenticated answers
//! (RFC 8656 §21.2).

mod support;

use core::time::Duration;
use support::*;
use turnpike_core::auth::{long_term_key, rest_password, PasswordAlgorithm};
use turnpike_core::event::Event;
use turnpike_core::event::{AuthFailure, CloseReason};
use turnpike_core::stun::{attr, Class, IntegrityKind};
use turnpike_core::ConnId;

/// PASSWORD-ALGORITHMS as the server offers it: SHA-256 then MD5, no parameters.
const OFFERED: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

#[test]
fn request_without_integrity_is_challenged_with_realm_nonce_and_algorithms() {
    // RFC 8489 §9.2.4 step 1: no MESSAGE-INTEGRITY → 401 with REALM and NONCE (and with
    // the security features, PASSWORD-ALGORITHMS), and no MESSAGE-INTEGRITY of its own.
    let mut h = Harness::new();
    let (tid, out) = h.send_plain(&Client::udp(1), &Req::allocate());
    let a = out.answer();
    assert_eq!(a.tid(), tid);
    assert_eq!(a.class(), Class::Error);
    assert_eq!(a.code(), Some(401));
    assert_eq!(a.text(attr::REALM).as_deref(), Some(REALM));
    let nonce = a.text(attr::NONCE).expect("a NONCE");
    // RFC 8489 §9.2: the nonce cookie announces the security features.
    assert!(nonce.starts_with("obMatJos2"), "nonce {nonce}");
    assert_eq!(a.get(attr::PASSWORD_ALGORITHMS), Some(OFFERED.to_vec()));
    assert!(!a.has(attr::MESSAGE_INTEGRITY));
    assert!(!a.has(attr::MESSAGE_INTEGRITY_SHA256));
    // An unauthenticated 401 is not an authentication *failure*: no event.
    assert!(auth_failures(&out).is_empty());
    // It creates no state.
    assert_eq!(h.server.stats(h.now).allocations_pending, 0);
}

#[test]
fn integrity_without_username_realm_or_nonce_is_400() {
    // RFC 8489 §9.2.4 step 2: MESSAGE-INTEGRITY present but USERNAME (or USERHASH), REALM
    // or NONCE missing → 400.
    let mut h = Harness::new();
    let mut base = Client::udp(2);
    h.challenge(&mut base, &Req::allocate());
    let mut no_user = base.clone();
    no_user.username_attr = None;
    let mut no_realm = base.clone();
    no_realm.realm_attr = None;
    let mut no_nonce = base.clone();
    no_nonce.nonce = None;
    for c in [no_user, no_realm, no_nonce] {
        let (_, out) = h.send_signed(&c, &Req::allocate());
        let a = out.answer();
        assert_eq!(a.code(), Some(400));
        assert!(!a.has(attr::MESSAGE_INTEGRITY));
    }
    assert_eq!(h.server.stats(h.now).allocations, 0);
}

#[test]
fn wrong_password_is_401_with_an_auth_failure_event() {
    // RFC 8489 §9.2.4 step 5: integrity that does not verify → 401.
    let mut h = Harness::new();
    let mut c = Client::new(Via::Udp(client(3)), USER, "not-the-password");
    h.challenge(&mut c, &Req::allocate());
    let (_, out) = h.send_signed(&c, &Req::allocate());
    let a = out.answer();
    assert_eq!(a.code(), Some(401));
    assert!(a.has(attr::NONCE) && a.has(attr::REALM));
    assert!(!a.has(attr::MESSAGE_INTEGRITY));
    assert_eq!(auth_failures(&out), vec![AuthFailure::BadIntegrity]);
    assert!(out.events.iter().any(|e| matches!(e,
        Event::AuthFailed { username: Some(u), .. } if u == USER)));
    assert!(out.binds.is_empty());
}

#[test]
fn unknown_user_is_401() {
    let mut h = Harness::new();
    let mut c = Client::new(Via::Udp(client(4)), "mallory", "whatever");
    h.challenge(&mut c, &Req::allocate());
    let (_, out) = h.send_signed(&c, &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
    assert_eq!(auth_failures(&out), vec![AuthFailure::UnknownUser]);
}

#[test]
fn wrong_realm_is_401() {
    // RFC 8489 §9.2.4: a REALM that is not ours cannot verify; the answer names ours.
    let mut h = Harness::new();
    let mut c = Client::udp(5);
    h.challenge(&mut c, &Req::allocate());
    c.realm = "other.example".to_string();
    c.realm_attr = Some(c.realm.clone());
    let (_, out) = h.send_signed(&c, &Req::allocate());
    let a = out.answer();
    assert_eq!(a.code(), Some(401));
    assert_eq!(a.text(attr::REALM).as_deref(), Some(REALM));
    assert_eq!(auth_failures(&out), vec![AuthFailure::WrongRealm]);
}

#[test]
fn stale_nonce_is_438_with_a_fresh_nonce_that_then_works() {
    // RFC 8489 §9.2.4 step 3: an expired nonce → 438 with a new NONCE (and REALM).
    let mut h = Harness::new();
    let mut c = Client::udp(6);
    h.challenge(&mut c, &Req::allocate());
    let old = c.nonce.clone().unwrap();
    let lifetime = h.server.config().nonce_lifetime;
    h.advance(lifetime + Duration::from_secs(1));
    let (_, out) = h.send_signed(&c, &Req::allocate());
    let a = out.answer();
    assert_eq!(a.code(), Some(438));
    assert_eq!(a.text(attr::REALM).as_deref(), Some(REALM));
    let fresh = a.text(attr::NONCE).expect("a new NONCE");
    assert_ne!(fresh, old);
    assert!(!a.has(attr::MESSAGE_INTEGRITY));
    assert_eq!(auth_failures(&out), vec![AuthFailure::BadNonce]);
    c.learn(a);
    let (_, out) = h.send_signed(&c, &Req::allocate());
    assert!(out.answer().is_success());
}

/// The server remembers nonces it verified (to skip their MAC on the next requests of the
/// same client); a remembered nonce still expires.
#[test]
fn a_nonce_that_authenticated_requests_still_expires() {
    let mut h = Harness::new();
    let mut c = Client::udp(10);
    h.allocate_ok(&mut c);
    let (_, out) = h.send_signed(&c, &Req::refresh(Some(600)));
    assert!(out.answer().is_success());
    let lifetime = h.server.config().nonce_lifetime;
    h.advance(lifetime + Duration::from_secs(1));
    let (_, out) = h.send_signed(&c, &Req::refresh(Some(600)));
    assert_eq!(out.answer().code(), Some(438));
}

#[test]
fn nonce_is_still_good_just_before_its_lifetime() {
    let mut h = Harness::new();
    let mut c = Client::udp(7);
    h.challenge(&mut c, &Req::allocate());
    let lifetime = h.server.config().nonce_lifetime;
    h.advance(lifetime - Duration::from_secs(1));
    let (_, out) = h.send_signed(&c, &Req::allocate());
    assert!(out.answer().is_success());
}

#[test]
fn nonce_issued_to_another_address_is_438() {
    // Nonces are bound to the client's transport address: one seen on the wire is useless
    // from elsewhere.
    let mut h = Harness::new();
    let mut a = Client::udp(8);
    h.challenge(&mut a, &Req::allocate());
    let mut b = Client::udp(9);
    b.nonce = a.nonce.clone();
    let (_, out) = h.send_signed(&b, &Req::allocate());
    assert_eq!(out.answer().code(), Some(438));
    assert_eq!(auth_failures(&out), vec![AuthFailure::BadNonce]);
    // Same IP, other port: another transport address, another nonce.
    let mut b2 = Client::new(
        Via::Udp(std::net::SocketAddr::new(client(8).ip(), 1)),
        USER,
        PASS,
    );
    b2.nonce = a.nonce.clone();
    let (_, out) = h.send_signed(&b2, &Req::allocate());
    assert_eq!(out.answer().code(), Some(438));
}

#[test]
fn forged_nonce_is_438() {
    let mut h = Harness::new();
    let mut c = Client::udp(10);
    h.challenge(&mut c, &Req::allocate());
    let real = c.nonce.clone().unwrap();
    // Flip the last hex digit of the MAC, then try plain garbage and an empty nonce.
    let mut flipped = real.clone().into_bytes();
    let last = flipped.last_mut().unwrap();
    *last = if *last == b'0' { b'1' } else { b'0' };
    for forged in [
        String::from_utf8(flipped).unwrap(),
        "obMatJos2AAAAdeadbeef".to_string(),
        "x".to_string(),
    ] {
        c.nonce = Some(forged);
        let (_, out) = h.send_signed(&c, &Req::allocate());
        assert_eq!(out.answer().code(), Some(438));
    }
}

#[test]
fn success_is_signed_with_the_md5_key_and_fingerprinted() {
    // RFC 8489 §9.2.4: the response to an authenticated request carries MESSAGE-INTEGRITY
    // computed with the same key; FINGERPRINT follows when the request had one.
    let mut h = Harness::new();
    let mut c = Client::udp(11).with_fingerprint();
    let (a, _) = h.allocate_ok(&mut c);
    let key = long_term_key(PasswordAlgorithm::Md5, USER, REALM, PASS);
    assert!(a.verifies_sha1(&key));
    assert!(!a.verifies_sha1(&long_term_key(PasswordAlgorithm::Md5, USER, REALM, "x")));
    assert!(!a.has(attr::MESSAGE_INTEGRITY_SHA256));
    assert!(a.has_fingerprint());
    // Error answers to authenticated requests are signed too (RFC 8656 §5).
    let out = h.authed(&mut c, Req::allocate());
    let e = out.answer();
    assert_eq!(e.code(), Some(437));
    assert!(e.verifies_sha1(&key));
}

#[test]
fn sha256_negotiation_gets_a_sha256_signed_answer() {
    // RFC 8489 §9.2.4: the client echoes PASSWORD-ALGORITHMS, picks SHA-256 in
    // PASSWORD-ALGORITHM, keys with SHA-256 and uses MESSAGE-INTEGRITY-SHA256; the answer
    // uses MESSAGE-INTEGRITY-SHA256 with the same key.
    let mut h = Harness::new();
    let mut c = Client::udp(12).sha256();
    let (a, _) = h.allocate_ok(&mut c);
    assert_eq!(c.echo_algorithms.as_deref(), Some(&OFFERED[..]));
    let key = long_term_key(PasswordAlgorithm::Sha256, USER, REALM, PASS);
    assert_eq!(key.as_bytes().len(), 32);
    assert!(a.has(attr::MESSAGE_INTEGRITY_SHA256));
    assert!(a.verifies_sha256(&key));
    // The allocation keeps its algorithm: a Refresh negotiated the same way works.
    let out = h.authed(&mut c, Req::refresh(Some(600)));
    assert!(out.answer().is_success());
    assert!(out.answer().verifies_sha256(&key));
}

#[test]
fn sha256_key_with_sha1_integrity_works() {
    // The password algorithm and the integrity attribute are independent: a SHA-256 key
    // with MESSAGE-INTEGRITY (HMAC-SHA1) is answered with MESSAGE-INTEGRITY.
    let mut h = Harness::new();
    let mut c = Client::udp(13).sha256();
    c.integrity = IntegrityKind::Sha1;
    let (a, _) = h.allocate_ok(&mut c);
    let key = long_term_key(PasswordAlgorithm::Sha256, USER, REALM, PASS);
    assert!(a.verifies_sha1(&key));
}

#[test]
fn password_algorithms_not_echoed_exactly_is_400() {
    // RFC 8489 §9.2.4: PASSWORD-ALGORITHMS must be the list the server sent (else 400);
    // PASSWORD-ALGORITHM alone, or one the server did not offer, is also 400.
    let mut h = Harness::new();
    let mut c = Client::udp(14).sha256();
    h.challenge(&mut c, &Req::allocate());
    let variants: Vec<(Option<Vec<u8>>, Option<u16>)> = vec![
        (Some(vec![0, 1, 0, 0, 0, 2, 0, 0]), Some(2)), // reversed
        (Some(vec![0, 2, 0, 0]), Some(2)),             // truncated
        (Some([&OFFERED[..], &[0, 3, 0, 0]].concat()), Some(2)), // extended
        (None, Some(2)),                               // algorithm without the list
        (Some(OFFERED.to_vec()), None),                // list without the choice
        (Some(OFFERED.to_vec()), Some(3)),             // not offered
    ];
    for (list, choice) in variants {
        let mut v = c.clone();
        v.echo_algorithms = list.clone();
        v.password_algorithm_attr = choice;
        let (_, out) = h.send_signed(&v, &Req::allocate());
        assert_eq!(
            out.answer().code(),
            Some(400),
            "list {list:?} choice {choice:?}"
        );
    }
    assert_eq!(h.server.stats(h.now).allocations, 0);
}

#[test]
fn userhash_instead_of_username_works_for_a_static_user() {
    // RFC 8489 §14.4: USERHASH = SHA-256(username ":" realm) stands for the username.
    let mut h = Harness::new();
    let mut c = Client::udp(15);
    c.userhash = true;
    let (a, _) = h.allocate_ok(&mut c);
    assert!(a.verifies_sha1(&c.key()));
    let created = h.server.allocations(h.now);
    assert_eq!(created[0].username, USER);
}

#[test]
fn unknown_userhash_is_401() {
    let mut h = Harness::new();
    let mut c = Client::new(Via::Udp(client(16)), "nobody", "pw");
    c.userhash = true;
    h.challenge(&mut c, &Req::allocate());
    let (_, out) = h.send_signed(&c, &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
    assert_eq!(auth_failures(&out), vec![AuthFailure::UnknownUser]);
}

fn rest_client(h: &Harness, n: u8, expiry: u64, secret: &[u8]) -> Client {
    let user = rest_user(expiry, "carol");
    let pw = rest_password(secret, &user);
    let _ = h;
    Client::new(Via::Udp(client(n)), &user, &pw)
}

#[test]
fn rest_credential_with_a_future_expiry_allocates() {
    // TURN REST: username "<expiry>:<user>", password base64(HMAC-SHA1(secret, username)).
    let mut h = Harness::new();
    let mut c = rest_client(&h, 20, h.wall_s() + 3600, REST_SECRET);
    let (a, _) = h.allocate_ok(&mut c);
    assert!(a.verifies_sha1(&c.key()));
}

#[test]
fn rest_credential_past_its_expiry_is_401() {
    let mut h = Harness::new();
    let mut c = rest_client(&h, 21, h.wall_s() - 1, REST_SECRET);
    h.challenge(&mut c, &Req::allocate());
    let (_, out) = h.send_signed(&c, &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
    assert_eq!(auth_failures(&out), vec![AuthFailure::Expired]);
}

#[test]
fn rest_credential_expires_with_the_wall_clock() {
    // The expiry is checked against the wall clock at the time of the request.
    let mut h = Harness::new();
    let mut c = rest_client(&h, 22, h.wall_s() + 60, REST_SECRET);
    h.challenge(&mut c, &Req::allocate());
    h.advance(Duration::from_secs(120));
    let out = h.authed(&mut c, Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
}

#[test]
fn rest_credential_signed_with_a_rotated_secret_works() {
    let mut cfg = config();
    cfg.credentials.add_rest_secret(b"the-new-secret");
    let mut h = Harness::with_config(cfg);
    let mut old = rest_client(&h, 23, h.wall_s() + 3600, REST_SECRET);
    let mut new = rest_client(&h, 24, h.wall_s() + 3600, b"the-new-secret");
    h.allocate_ok(&mut old);
    h.allocate_ok(&mut new);
    let mut other = rest_client(&h, 25, h.wall_s() + 3600, b"unknown-secret");
    h.challenge(&mut other, &Req::allocate());
    let (_, out) = h.send_signed(&other, &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
}

#[test]
fn rest_credential_valid_for_too_long_is_401() {
    // An expiry more than rest_max_validity (30 days) ahead is refused.
    let mut h = Harness::new();
    let max = h.server.config().rest_max_validity.as_secs();
    let mut ok = rest_client(&h, 26, h.wall_s() + max - 60, REST_SECRET);
    h.allocate_ok(&mut ok);
    let mut far = rest_client(&h, 27, h.wall_s() + max + 3600, REST_SECRET);
    h.challenge(&mut far, &Req::allocate());
    let (_, out) = h.send_signed(&far, &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
    assert_eq!(auth_failures(&out), vec![AuthFailure::Expired]);
}

#[test]
fn rest_credential_is_refused_before_the_wall_clock_is_known() {
    let mut server_cfg = config();
    server_cfg.nonce_lifetime = Duration::from_secs(600);
    let mut s = turnpike_core::Server::new(server_cfg, [1; 32], T0).unwrap();
    // No set_wall_clock: a REST credential cannot be judged, so it is refused.
    let user = rest_user(WALL0_MS / 1000 + 3600, "carol");
    let pw = rest_password(REST_SECRET, &user);
    let mut h = Harness::new();
    std::mem::swap(&mut h.server, &mut s);
    let mut c = Client::new(Via::Udp(client(28)), &user, &pw);
    h.challenge(&mut c, &Req::allocate());
    let (_, out) = h.send_signed(&c, &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
}

/// RFC 8656 §21.2 and RFC 9000 §8: answers to unauthenticated UDP requests amplify
/// spoofed ones, so a source gets at most three times the bytes it sent (plus an 8 KiB
/// advance), however slowly it sends; what is held back is counted in bytes and answers.
#[test]
fn unauthenticated_udp_answers_are_at_most_three_times_the_bytes_received() {
    let mut h = Harness::new();
    let flood = Client::udp(30);
    let (mut answers, mut answer_bytes) = (0u64, 0u64);
    let mut request_bytes = 0u64;
    for _ in 0..300 {
        let tid = h.tid();
        let req = Req::allocate().encode_plain(tid, false);
        request_bytes += req.len() as u64;
        let out = h.send_raw(flood.via, &req);
        for a in &out.answers {
            assert_eq!(a.code(), Some(401));
            answers += 1;
            answer_bytes += a.bytes.len() as u64;
        }
        h.advance(Duration::from_millis(50));
    }
    assert!(
        answer_bytes <= 3 * request_bytes + 8_192,
        "{answer_bytes} bytes of answers to {request_bytes} bytes of requests"
    );
    let st = h.server.stats(h.now);
    let u = st.unauth;
    assert_eq!(u.udp_requests, 300);
    assert_eq!(u.udp_request_bytes, request_bytes);
    assert_eq!((u.udp_answers, u.udp_answer_bytes), (answers, answer_bytes));
    assert_eq!(u.held_back_factor, 300 - answers);
    assert!(u.held_back_bytes > 0);
    assert_eq!(st.dropped.rate_limited, 300 - answers);
    // Another source is unaffected.
    let (_, out) = h.send_plain(&Client::udp(31), &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
}

/// Issue 13: a thousand browsers behind one NAT address, each with its own port, all get
/// their 401 and then their allocation; each request pays for the answers of the address.
#[test]
fn a_thousand_clients_behind_one_address_all_get_their_challenge() {
    let mut cfg = config();
    cfg.user_quota = 2_000;
    cfg.total_quota = 2_000;
    let mut h = Harness::with_config(cfg);
    // In bursts of 50 first requests before any second one, as when many start at once.
    for burst in 0..20u16 {
        let mut clients: Vec<Client> = (0..50u16)
            .map(|i| {
                let port = 10_000 + burst * 50 + i;
                Client::new(Via::Udp(sa(&format!("203.0.113.77:{port}"))), USER, PASS)
            })
            .collect();
        for c in &mut clients {
            h.challenge(c, &Req::allocate());
        }
        for c in &mut clients {
            let (_, out) = h.send_signed(c, &Req::allocate());
            assert!(out.answer().is_success());
        }
    }
    let st = h.server.stats(h.now);
    assert_eq!(st.allocations, 1_000);
    assert_eq!(st.dropped.rate_limited, 0);
}

/// A request whose source is spent still earns credit: a retransmission is answered.
#[test]
fn a_held_back_challenge_is_answered_when_the_client_retransmits() {
    let mut cfg = config();
    cfg.unauth_amplification_factor = 1;
    let mut h = Harness::with_config(cfg);
    let c = Client::udp(33);
    // Spend the advance with requests whose answers are larger than they are.
    let mut held = None;
    for _ in 0..100 {
        let (tid, out) = h.send_plain(&c, &Req::allocate());
        if out.answers.is_empty() {
            held = Some(tid);
            break;
        }
    }
    let tid = held.expect("the advance runs out");
    let mut answered = false;
    for _ in 0..10 {
        let out = h.send_raw(c.via, &Req::allocate().encode_plain(tid, false));
        if !out.answers.is_empty() {
            answered = true;
            break;
        }
    }
    assert!(answered);
}

/// The per-source ceiling (bytes per second) bounds what one victim gets however many
/// bytes a spoofer sends; another source is still answered.
#[test]
fn the_source_ceiling_bounds_a_source_that_sends_a_lot() {
    let mut cfg = config();
    cfg.unauth_source_bytes_per_s = 3_000;
    let mut h = Harness::with_config(cfg);
    let flood = Client::udp(34);
    let mut sent = 0u64;
    for _ in 0..200 {
        let (_, out) = h.send_plain(&flood, &Req::allocate().raw(attr::SOFTWARE, &[b'x'; 200]));
        sent += out
            .answers
            .iter()
            .map(|a| a.bytes.len() as u64)
            .sum::<u64>();
    }
    assert!(sent <= 3_000, "{sent}");
    let u = h.server.stats(h.now).unauth;
    assert!(u.held_back_source_ceiling > 0, "{u:?}");
    let (_, out) = h.send_plain(&Client::udp(35), &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
    // One second later the ceiling is back.
    h.advance(Duration::from_secs(1));
    let (_, out) = h.send_plain(&flood, &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
}

/// The node ceiling bounds the sum over sources.
#[test]
fn the_node_ceiling_bounds_all_sources_together() {
    let mut cfg = config();
    cfg.unauth_node_bytes_per_s = 1;
    let mut h = Harness::with_config(cfg);
    let mut sent = 0u64;
    for _ in 0..3 {
        for n in 1..=250u8 {
            let (_, out) = h.send_plain(&Client::udp(n), &Req::allocate());
            sent += out
                .answers
                .iter()
                .map(|a| a.bytes.len() as u64)
                .sum::<u64>();
        }
    }
    // The smallest bucket holds one datagram of the largest size.
    assert!(sent <= turnpike_core::server::MIN_BURST, "{sent}");
    assert!(h.server.stats(h.now).unauth.held_back_node_ceiling > 0);
}

/// Streams are never refused an answer for rate reasons: a TCP handshake proved the
/// address, so a stream sending many requests that need no credentials gets every answer.
#[test]
fn streams_get_every_unauthenticated_answer() {
    let mut h = Harness::new();
    let c = h.tcp_client(70, sa("203.0.113.9:40000"));
    for _ in 0..200 {
        let (_, out) = h.send_plain(&c, &Req::binding());
        assert!(out.answer().is_success());
    }
    let u = h.server.stats(h.now).unauth;
    assert_eq!(u.stream_answers, 200);
    assert_eq!(u.held_back_factor + u.held_back_source_ceiling, 0);
}

/// A stream that keeps failing authentication gets every 401, and is closed after
/// `stream_max_auth_failures` (10 by default) in a row.
#[test]
fn a_stream_is_closed_after_ten_failed_authentications_in_a_row() {
    let mut h = Harness::new();
    let mut c = h.tcp_client(71, sa("203.0.113.9:40001"));
    h.challenge(&mut c, &Req::allocate());
    c.password = "wrong".into();
    for i in 2..=10 {
        let (_, out) = h.send_signed(&c, &Req::allocate());
        assert_eq!(out.answer().code(), Some(401), "attempt {i}");
        if i < 10 {
            assert!(out.closed_streams.is_empty(), "attempt {i}");
        } else {
            assert_eq!(
                out.closed_streams,
                vec![(ConnId(71), CloseReason::TooManyAuthFailures)]
            );
        }
    }
    let st = h.server.stats(h.now);
    assert_eq!(st.unauth.streams_closed_auth_failures, 1);
    assert_eq!(st.streams, 0);
}

/// A success in between starts the count over: a client that refreshes with a stale
/// nonce now and then is never closed.
#[test]
fn a_successful_authentication_resets_the_failures_of_a_stream() {
    let mut h = Harness::new();
    let mut c = h.tcp_client(72, sa("203.0.113.9:40002"));
    h.allocate_ok(&mut c);
    for round in 0..3 {
        let good = c.password.clone();
        c.password = "wrong".into();
        for _ in 0..9 {
            let (_, out) = h.send_signed(&c, &Req::refresh(Some(600)));
            assert_eq!(out.answer().code(), Some(401), "round {round}");
            assert!(out.closed_streams.is_empty(), "round {round}");
        }
        c.password = good;
        let out = h.authed(&mut c, Req::refresh(Some(600)));
        assert!(out.answer().is_success());
    }
    assert_eq!(h.server.stats(h.now).streams, 1);
}

/// `stream_max_auth_failures = 0` never closes.
#[test]
fn stream_max_auth_failures_zero_never_closes() {
    let mut cfg = config();
    cfg.stream_max_auth_failures = 0;
    let mut h = Harness::with_config(cfg);
    let c = h.tcp_client(73, sa("203.0.113.9:40003"));
    for _ in 0..50 {
        let (_, out) = h.send_plain(&c, &Req::allocate());
        assert_eq!(out.answer().code(), Some(401));
        assert!(out.closed_streams.is_empty());
    }
}

#[test]
fn authenticated_requests_are_not_limited_by_the_unauthenticated_budget() {
    // Once a client holds a nonce, its signed requests are not answers "for free".
    let mut cfg = config();
    cfg.unauth_amplification_factor = 1;
    cfg.unauth_source_bytes_per_s = 1_000;
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(32);
    h.allocate_ok(&mut c);
    for _ in 0..10 {
        let out = h.authed(&mut c, Req::refresh(Some(600)));
        assert!(out.answer().is_success());
    }
}

#[test]
fn challenge_echoes_fingerprint() {
    let mut h = Harness::new();
    let (_, out) = h.send_plain(&Client::udp(40).with_fingerprint(), &Req::allocate());
    assert_eq!(out.answer().code(), Some(401));
    assert!(out.answer().has_fingerprint());
}

#[test]
fn without_security_features_there_is_no_algorithm_negotiation_nor_userhash() {
    // RFC 8489 §9.2: a server may leave the security features out: no nonce cookie, no
    // PASSWORD-ALGORITHMS; a USERHASH then cannot be resolved (400), MD5 still works.
    let mut cfg = config();
    cfg.security_features = false;
    let mut h = Harness::with_config(cfg);
    let mut c = Client::udp(41);
    let out = h.challenge(&mut c, &Req::allocate());
    let a = out.answer();
    assert!(!a.has(attr::PASSWORD_ALGORITHMS));
    assert!(!a.text(attr::NONCE).unwrap().starts_with("obMatJos2"));
    let mut hashed = c.clone();
    hashed.userhash = true;
    let (_, out) = h.send_signed(&hashed, &Req::allocate());
    assert_eq!(out.answer().code(), Some(400));
    let (_, out) = h.send_signed(&c, &Req::allocate());
    assert!(out.answer().is_success());
}

#[test]
fn a_nonce_is_good_for_several_allocations_of_one_client_address() {
    // The nonce is stateless: the same one serves every request from its address until
    // it goes stale.
    let mut h = Harness::new();
    let mut c = Client::udp(42);
    h.allocate_ok(&mut c);
    let nonce = c.nonce.clone();
    let out = h.authed(&mut c, Req::create_permission(&[peer(1)]));
    assert!(out.answer().is_success());
    assert_eq!(c.nonce, nonce);
}
