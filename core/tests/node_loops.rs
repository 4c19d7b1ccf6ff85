//! A node of several event loops (turnpike_core::node): a RESERVATION-TOKEN is redeemed
//! whichever loop receives it, `user_quota` and `total_quota` hold for the node, and a loop
//! that ran out of ports borrows before it answers 508. Messages between the loops' cores
//! are carried here by a queue that may deliver them in any order.

mod support;

use std::collections::VecDeque;
use support::*;
use turnpike_core::auth::NonceKey;
use turnpike_core::node::{LoopId, LoopMsg, NodePlace};
use turnpike_core::stun::attr;
use turnpike_core::Config;

/// N cores of one node, and the messages in flight between them.
struct Node {
    loops: Vec<Harness>,
    /// (from, to, message).
    flight: VecDeque<(LoopId, LoopId, LoopMsg)>,
    /// Deliver the newest message first instead of the oldest (an adversarial order).
    lifo: bool,
    /// Everything each loop did since the last `take`.
    seen: Vec<Outcome>,
}

impl Node {
    fn new(count: u16, f: impl Fn(&mut Config)) -> Self {
        let loops = (0..count)
            .map(|index| {
                let mut cfg = config();
                cfg.nonce_key = Some(NonceKey([3; 32]));
                cfg.node = NodePlace { index, count };
                f(&mut cfg);
                Harness::with_config(cfg)
            })
            .collect();
        Node {
            loops,
            flight: VecDeque::new(),
            lifo: false,
            seen: (0..count).map(|_| Outcome::default()).collect(),
        }
    }

    /// Records what loop `i` did and queues its messages.
    fn absorb(&mut self, i: usize, out: Outcome) {
        for (to, msg) in &out.to_loops {
            assert_ne!(to.0 as usize, i, "a loop sent itself a message");
            self.flight.push_back((LoopId(i as u16), *to, msg.clone()));
        }
        self.seen[i].merge(out);
    }

    /// Delivers messages until none is in flight (bounded).
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let next = if self.lifo {
                self.flight.pop_back()
            } else {
                self.flight.pop_front()
            };
            let Some((from, to, msg)) = next else {
                return;
            };
            let out = self.loops[to.0 as usize].loop_message(from, msg);
            self.absorb(to.0 as usize, out);
        }
        panic!("the loops keep messaging each other");
    }

    /// An authenticated Allocate `req` from `c`, received by loop `i`; the answer, once
    /// the node has settled.
    fn allocate(&mut self, i: usize, c: &mut Client, req: Req) -> Answer {
        let out = self.loops[i].authed(c, req);
        self.absorb(i, out);
        self.settle();
        let seen = std::mem::take(&mut self.seen[i]);
        let answers: Vec<&Answer> = seen
            .answers
            .iter()
            .filter(|a| {
                a.method() == turnpike_core::stun::Method::ALLOCATE && a.code() != Some(401)
            })
            .collect();
        assert_eq!(answers.len(), 1, "one answer to the Allocate: {answers:?}");
        answers[0].clone()
    }

    fn live(&self) -> u64 {
        self.loops
            .iter()
            .map(|h| h.server.stats(h.now).allocations)
            .sum()
    }
}

#[test]
fn a_reservation_token_is_redeemed_on_another_loop() {
    // RFC 8656 §7.2: the token names a port reserved by the loop that answered the first
    // Allocate; the second Allocate, from another 5-tuple, lands on another loop.
    for lifo in [false, true] {
        let mut node = Node::new(4, |_| {});
        node.lifo = lifo;
        let mut first = Client::udp(10);
        let a = node.allocate(1, &mut first, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
        assert!(a.is_success(), "{:?}", a.code());
        let port = a.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port();
        assert!(port.is_multiple_of(2));
        let token = a.get(attr::RESERVATION_TOKEN).expect("a token");
        assert_eq!(token[0], 1, "the token names loop 1");
        let mut second = Client::new(Via::Udp(client(11)), USER2, PASS2);
        let b = node.allocate(
            3,
            &mut second,
            Req::allocate().raw(attr::RESERVATION_TOKEN, &token),
        );
        assert!(b.is_success(), "{:?}", b.code());
        assert_eq!(b.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port(), port + 1);
        // Good once only.
        let mut third = Client::udp(12);
        let c = node.allocate(
            2,
            &mut third,
            Req::allocate().raw(attr::RESERVATION_TOKEN, &token),
        );
        assert_eq!(c.code(), Some(508));
        let r: u32 = node
            .loops
            .iter()
            .map(|h| h.server.stats(h.now).ports_v4.reserved)
            .sum();
        assert_eq!(r, 0);
    }
}

#[test]
fn user_quota_holds_across_loops() {
    for lifo in [false, true] {
        let mut node = Node::new(4, |c| c.user_quota = 3);
        node.lifo = lifo;
        let mut ok = Vec::new();
        let mut refused = 0;
        for n in 0..12u8 {
            let mut c = Client::udp(20 + n);
            let a = node.allocate(usize::from(n % 4), &mut c, Req::allocate());
            match a.code() {
                None => ok.push((usize::from(n % 4), c)),
                Some(486) => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((ok.len(), refused), (3, 9));
        // One ends: one more may start, on any loop.
        let (i, mut c) = ok.pop().unwrap();
        let out = node.loops[i].authed(&mut c, Req::refresh(Some(0)));
        assert!(out.answer().is_success());
        node.absorb(i, out);
        node.settle();
        let mut c = Client::udp(60);
        assert!(node.allocate(3, &mut c, Req::allocate()).is_success());
        let mut c = Client::udp(61);
        assert_eq!(node.allocate(2, &mut c, Req::allocate()).code(), Some(486));
    }
}

#[test]
fn total_quota_holds_for_the_node_and_is_borrowed() {
    // Loop 2 starts with a share of 1 or 2 of 6 and borrows the rest.
    let mut node = Node::new(4, |c| {
        c.total_quota = 6;
        c.user_quota = 100;
    });
    let mut results = Vec::new();
    for n in 0..10u8 {
        let mut c = Client::udp(30 + n);
        results.push(node.allocate(2, &mut c, Req::allocate()).code());
    }
    assert_eq!(
        results.iter().filter(|c| c.is_none()).count(),
        6,
        "{results:?}"
    );
    assert!(results[6..].iter().all(|c| *c == Some(508)), "{results:?}");
    assert_eq!(node.live(), 6);
}

#[test]
fn a_loop_out_of_ports_borrows_before_508() {
    // Eight ports for four loops: two each. Every client lands on loop 0.
    let mut node = Node::new(4, |c| {
        c.relay_port_min = 50000;
        c.relay_port_max = 50007;
        c.user_quota = 100;
    });
    let mut ports = std::collections::BTreeSet::new();
    for n in 0..8u8 {
        let mut c = Client::udp(40 + n);
        let a = node.allocate(0, &mut c, Req::allocate());
        assert!(a.is_success(), "allocation {n}: {:?}", a.code());
        assert!(ports.insert(a.xor(attr::XOR_RELAYED_ADDRESS).unwrap().port()));
    }
    // The node is full now: 508, with the event that says why.
    let mut c = Client::udp(49);
    assert_eq!(node.allocate(0, &mut c, Req::allocate()).code(), Some(508));
    assert_eq!(ports.len(), 8);
    // An even pair is borrowed too.
    let mut node = Node::new(4, |c| {
        c.relay_port_min = 50000;
        c.relay_port_max = 50015;
        c.user_quota = 100;
    });
    for n in 0..4u8 {
        let mut c = Client::udp(50 + n);
        let a = node.allocate(1, &mut c, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
        assert!(a.is_success(), "pair {n}: {:?}", a.code());
    }
}
