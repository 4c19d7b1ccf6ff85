//! Listeners added and removed at run time (a UDP port opened for one issued ICE
//! configuration), and listeners reserved for one username.

mod support;

use support::*;
use turnpike_core::auth::rest_password;
use turnpike_core::config::ListenerConfig;
use turnpike_core::event::{AuthFailure, DeleteReason, Event, Output};
use turnpike_core::stun::{attr, Message};
use turnpike_core::{ListenerId, Transport};

const DYN: ListenerId = ListenerId(40);

fn dyn_listener(id: ListenerId) -> ListenerConfig {
    ListenerConfig {
        id,
        transport: Transport::Udp,
        local: sa("192.0.2.1:50000"),
        proxy_protocol: false,
    }
}

/// Sends `bytes` to `listener` from `from`; every output (relay binds answered at once).
fn send_on(
    h: &mut Harness,
    listener: ListenerId,
    from: std::net::SocketAddr,
    bytes: &[u8],
) -> Vec<Output> {
    let mut buf = bytes.to_vec();
    let len = buf.len();
    let now = h.now;
    h.server
        .handle_datagram(now, listener, from, &mut buf, 0..len);
    let mut out = Vec::new();
    while let Some(o) = h.server.poll_output() {
        if let Output::BindRelay { relay, .. } = &o {
            h.server.handle_relay_bound(now, *relay, Ok(()));
        }
        out.push(o);
    }
    out
}

/// The one answer among `outs`, with the listener it leaves from.
fn answer(outs: &[Output]) -> (ListenerId, Vec<u8>) {
    let mut it = outs.iter().filter_map(|o| match o {
        Output::Transmit { listener, data, .. } => Some((*listener, data.clone())),
        _ => None,
    });
    let a = it.next().expect("an answer");
    assert!(it.next().is_none(), "exactly one answer");
    a
}

fn code(bytes: &[u8]) -> Option<u16> {
    Answer {
        via: Via::Udp(client(0)),
        bytes: bytes.to_vec(),
    }
    .code()
}

fn nonce(bytes: &[u8]) -> String {
    let m = Message::parse(bytes).expect("a STUN answer");
    String::from_utf8(m.get(attr::NONCE).expect("a NONCE").to_vec()).expect("UTF-8")
}

/// Allocate over `listener` as `user`/`password`: the 401 round, then the signed request.
fn allocate_on(h: &mut Harness, listener: ListenerId, n: u8, user: &str, pw: &str) -> Vec<Output> {
    let from = client(n);
    let mut c = Client::new(Via::Udp(from), user, pw);
    let tid = h.tid();
    let probe = Req::allocate().encode_plain(tid, false);
    let first = send_on(h, listener, from, &probe);
    let (_, a) = answer(&first);
    assert_eq!(code(&a), Some(401));
    c.nonce = Some(nonce(&a));
    let tid = h.tid();
    let signed = Req::allocate().encode_signed(tid, &c);
    send_on(h, listener, from, &signed)
}

#[test]
fn a_listener_added_at_run_time_answers_and_stops_when_removed() {
    let mut h = Harness::new();
    let probe = Req::binding().encode_plain(h.tid(), false);
    // Unknown listener: ignored.
    assert!(send_on(&mut h, DYN, client(1), &probe).is_empty());
    h.server.add_listener(dyn_listener(DYN)).expect("added");
    let outs = send_on(&mut h, DYN, client(1), &probe);
    let (via, bytes) = answer(&outs);
    assert_eq!(via, DYN, "the answer leaves from the listener it came to");
    assert!(Message::parse(&bytes).is_ok());
    assert!(h.server.remove_listener(h.now, DYN));
    assert!(!h.server.remove_listener(h.now, DYN));
    assert!(send_on(&mut h, DYN, client(1), &probe).is_empty());
}

#[test]
fn add_listener_refuses_a_taken_id_and_proxy_on_udp() {
    let mut h = Harness::new();
    assert!(h.server.add_listener(dyn_listener(UDP)).is_err());
    let mut bad = dyn_listener(DYN);
    bad.proxy_protocol = true;
    assert!(h.server.add_listener(bad).is_err());
    h.server.add_listener(dyn_listener(DYN)).expect("added");
    assert!(h.server.add_listener(dyn_listener(DYN)).is_err());
}

#[test]
fn a_reserved_listener_takes_only_its_owner() {
    let mut h = Harness::new();
    h.server.add_listener(dyn_listener(DYN)).expect("added");
    let expiry = h.wall_s() + 300;
    let owner = format!("{expiry}:owner");
    let other = format!("{expiry}:other");
    h.server.credentials_mut().reserve_listener(DYN, &owner);
    let pw = |u: &str| rest_password(REST_SECRET, u);

    // Another issued username, and a static user, are refused there (401).
    for (n, (user, password)) in [(other.clone(), pw(&other)), (USER.into(), PASS.into())]
        .into_iter()
        .enumerate()
    {
        let outs = allocate_on(&mut h, DYN, 10 + n as u8, &user, &password);
        assert_eq!(code(&answer(&outs).1), Some(401), "{user}");
        assert!(outs.iter().any(|o| matches!(
            o,
            Output::Event(Event::AuthFailed {
                reason: AuthFailure::WrongListener,
                ..
            })
        )));
    }
    // The owner is served on its port and on the shared one (parallel attempts).
    let outs = allocate_on(&mut h, DYN, 20, &owner, &pw(&owner));
    assert_eq!(code(&answer(&outs).1), None, "Allocate succeeded");
    let outs = allocate_on(&mut h, UDP, 21, &owner, &pw(&owner));
    assert_eq!(code(&answer(&outs).1), None, "Allocate succeeded");
    let per = h.server.allocations_per_listener();
    assert_eq!(per.get(&DYN), Some(&1));
    assert_eq!(per.get(&UDP), Some(&1));

    // Removing the listener ends its allocations (only those) and lifts the reservation.
    let now = h.now;
    assert!(h.server.remove_listener(now, DYN));
    let mut deleted = Vec::new();
    while let Some(o) = h.server.poll_output() {
        if let Output::Event(Event::AllocationDeleted { client, reason, .. }) = o {
            deleted.push((client.listener, reason));
        }
    }
    assert_eq!(deleted, vec![(DYN, DeleteReason::Admin)]);
    assert_eq!(h.server.stats(now).allocations, 1);
    assert_eq!(h.server.allocations_per_listener().get(&DYN), None);
}
