//! A node of several event loops (turnpike_core::node): a RESERVATION-TOKEN is redeemed
//! whichever loop receives it, `user_quota` and `total_quota` hold for the node, and a loop
//! that ran out of ports borrows before it answers 508, and `max_streams_per_source` holds
//! for the node. Messages between the loops' cores are carried here by a queue that may
//! deliver them in any order.

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use support::*;
use turnpike_core::auth::NonceKey;
use turnpike_core::event::CloseReason;
use turnpike_core::node::{source_home, LoopId, LoopMsg, NodePlace};
use turnpike_core::proxy_protocol;
use turnpike_core::stun::attr;
use turnpike_core::{Config, ConnId};

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

    /// Credits of `total_quota` each loop holds.
    fn credits(&self) -> Vec<u64> {
        self.loops
            .iter()
            .map(|h| h.server.stats(h.now).quota_credits)
            .collect()
    }

    fn live(&self) -> u64 {
        self.loops
            .iter()
            .map(|h| h.server.stats(h.now).allocations)
            .sum()
    }

    /// Loop `i` accepts TCP connection `conn` from `remote` (messages stay in flight).
    fn open(&mut self, i: usize, conn: u64, remote: SocketAddr) {
        let out = self.loops[i].open_stream(ConnId(conn), TCP, remote);
        self.absorb(i, out);
    }

    /// The client closes connection `conn` on loop `i` (messages stay in flight).
    fn close(&mut self, i: usize, conn: u64) {
        let out = self.loops[i].close_stream(ConnId(conn));
        self.absorb(i, out);
    }

    /// Open streams of the node.
    fn streams(&self) -> u64 {
        self.loops
            .iter()
            .map(|h| h.server.stats(h.now).streams)
            .sum()
    }

    /// Streams the node closed for `TooManyStreams`, and the refusals it counted.
    fn too_many(&self) -> (usize, u64) {
        let closed = self
            .seen
            .iter()
            .flat_map(|o| &o.closed_streams)
            .filter(|c| c.1 == CloseReason::TooManyStreams)
            .count();
        let counted = self
            .loops
            .iter()
            .map(|h| h.server.stats(h.now).streams_over_source_cap)
            .sum();
        (closed, counted)
    }

    /// Whether the node closed connection `conn` of loop `i`.
    fn was_closed(&self, i: usize, conn: u64) -> bool {
        self.seen[i]
            .closed_streams
            .iter()
            .any(|c| c.0 == ConnId(conn))
    }
}

/// Four loops, at most 8 streams per source.
fn capped_node(lifo: bool) -> Node {
    let mut node = Node::new(4, |c| c.max_streams_per_source = 8);
    node.lifo = lifo;
    node
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

#[test]
fn streams_per_source_hold_across_loops() {
    let from = |port: u64| sa(&format!("203.0.113.9:{}", 40_000 + port));
    // Each connection settled before the next, or all of them in flight at once.
    for (lifo, at_once) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut node = capped_node(lifo);
        for n in 0..16u64 {
            node.open((n % 4) as usize, n, from(n));
            if !at_once {
                node.settle();
            }
        }
        node.settle();
        assert_eq!(node.streams(), 8, "lifo {lifo}, at once {at_once}");
        assert_eq!(node.too_many(), (8, 8), "lifo {lifo}, at once {at_once}");
        if !at_once {
            for n in 0..16 {
                assert_eq!(node.was_closed((n % 4) as usize, n), n >= 8, "stream {n}");
            }
        }
        // Another source is not affected.
        node.open(1, 100, sa("203.0.113.10:40000"));
        node.settle();
        assert_eq!((node.streams(), node.too_many().0), (9, 8));
        // Closing three, wherever they are, makes room for three more on any loop.
        let kept: Vec<u64> = (0..16)
            .filter(|&n| !node.was_closed((n % 4) as usize, n))
            .collect();
        for &n in &kept[..3] {
            node.close((n % 4) as usize, n);
        }
        node.settle();
        for n in 16..21u64 {
            node.open(((n + 1) % 4) as usize, n, from(n));
        }
        node.settle();
        assert_eq!(node.streams(), 9);
        assert_eq!(node.too_many(), (10, 10));
        // Everything closed: the homes count nothing, a full 8 may open again.
        for n in 0..21u64 {
            for i in 0..4 {
                node.close(i, n);
            }
        }
        node.close(1, 100);
        node.settle();
        assert_eq!(node.streams(), 0);
        for n in 30..39u64 {
            node.open((n % 4) as usize, n, from(n));
            node.settle();
        }
        assert_eq!(node.streams(), 8);
        assert_eq!(node.too_many(), (11, 11));
    }
}

#[test]
fn an_ipv6_source_is_counted_by_its_64() {
    for lifo in [false, true] {
        let mut node = capped_node(lifo);
        // Sixteen addresses of one /64, spread over the loops.
        for n in 0..16u64 {
            node.open(
                (n % 4) as usize,
                n,
                sa(&format!("[2001:db8:5:6::{:x}]:4000", n + 1)),
            );
        }
        node.settle();
        assert_eq!(node.streams(), 8);
        assert_eq!(node.too_many(), (8, 8));
        // The next /64 has its own count.
        for n in 20..28u64 {
            node.open(
                (n % 4) as usize,
                n,
                sa(&format!("[2001:db8:5:7::{:x}]:4000", n)),
            );
        }
        node.settle();
        assert_eq!(node.streams(), 16);
        assert_eq!(node.too_many(), (8, 8));
    }
}

#[test]
fn a_stream_closed_while_its_home_is_asked_gives_the_count_back() {
    let source = sa("203.0.113.9:40000");
    let home = source_home(source.ip(), 4).0 as usize;
    let away = (home + 1) % 4;
    for lifo in [false, true] {
        let mut node = capped_node(lifo);
        // Granted after the stream is gone: the home is told to count it no more.
        node.open(away, 1, source);
        assert_eq!(node.flight.len(), 1, "the home is asked");
        node.close(away, 1);
        node.settle();
        // Refused after the stream is gone: nothing to give back.
        for n in 10..18u64 {
            node.open(home, n, source);
        }
        node.open(away, 2, source);
        node.close(away, 2);
        node.settle();
        assert_eq!(node.streams(), 8);
        assert_eq!(node.too_many(), (0, 0));
        // The count is exact: one closes, one more may open, and no more.
        node.close(home, 10);
        node.open(away, 3, source);
        node.settle();
        node.open(away, 4, source);
        node.settle();
        assert_eq!(node.streams(), 8);
        assert_eq!(node.too_many(), (1, 1));
        assert!(node.was_closed(away, 4));
    }
}

#[test]
fn behind_a_trusted_proxy_the_node_counts_the_client_from_the_header() {
    for lifo in [false, true] {
        let mut node = capped_node(lifo);
        let header = proxy_protocol::encode_v1(Some((sa("198.18.1.1:5000"), sa("192.0.2.1:443"))));
        for n in 0..12u64 {
            let i = (n % 4) as usize;
            node.loops[i].open_stream(ConnId(n), TCP_PROXY, proxy_addr());
            let out = node.loops[i].stream_data(ConnId(n), &header);
            node.absorb(i, out);
            node.settle();
        }
        assert_eq!(node.streams(), 8);
        assert_eq!(node.too_many(), (4, 4));
    }
}

#[test]
fn a_node_of_one_loop_counts_streams_without_messages() {
    let mut node = Node::new(1, |c| c.max_streams_per_source = 8);
    for n in 0..12u64 {
        node.open(0, n, sa(&format!("[2001:db8:5:6::{:x}]:4000", n + 1)));
    }
    assert!(node.flight.is_empty());
    assert_eq!(node.streams(), 8);
    assert_eq!(node.too_many(), (4, 4));
}

#[test]
fn a_refused_stream_ends_what_it_started_while_provisional() {
    // A stream works while its source's home is asked; refused, it is closed and its
    // allocation (made or pending) ends, giving the user quota back.
    let source = sa("203.0.113.9:40000");
    let home = source_home(source.ip(), 4).0 as usize;
    let away = (home + 1) % 4;
    for lifo in [false, true] {
        let mut node = Node::new(4, |c| {
            c.max_streams_per_source = 8;
            c.user_quota = 1;
        });
        node.lifo = lifo;
        for n in 10..18u64 {
            node.open(home, n, source);
        }
        node.settle();
        node.open(away, 1, source);
        let mut c = Client::stream(ConnId(1));
        let out = node.loops[away].authed(&mut c, Req::allocate());
        node.absorb(away, out);
        node.settle();
        assert!(node.was_closed(away, 1));
        assert_eq!(node.too_many(), (1, 1));
        assert_eq!((node.streams(), node.live()), (8, 0));
        let mut c = Client::udp(70);
        assert!(node.allocate(2, &mut c, Req::allocate()).is_success());
    }
}

#[test]
fn reservations_count_against_the_user_and_the_node_across_loops() {
    for lifo in [false, true] {
        let mut node = Node::new(4, |c| {
            c.user_quota = 4;
            c.total_quota = 100;
        });
        node.lifo = lifo;
        // Allocate(EVEN-PORT R) + Refresh 0 on every loop in turn: the reservations hold
        // the user's counts, so the fourth round is refused whatever loop it lands on.
        let mut codes = Vec::new();
        for n in 0..6u8 {
            let i = usize::from(n % 4);
            let mut c = Client::udp(70 + n);
            let a = node.allocate(i, &mut c, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
            if a.is_success() {
                let out = node.loops[i].authed(&mut c, Req::refresh(Some(0)));
                assert!(out.answer().is_success());
                node.absorb(i, out);
                node.settle();
            }
            codes.push(a.code());
        }
        assert_eq!(
            codes,
            vec![None, None, None, Some(486), Some(486), Some(486)],
            "lifo {lifo}"
        );
        let reserved: u32 = node
            .loops
            .iter()
            .map(|h| h.server.stats(h.now).ports_v4.reserved)
            .sum();
        assert_eq!(reserved, 3);
        // They expire on their loops and give the counts back at the user's home.
        for i in 0..4 {
            let out = node.loops[i].advance(core::time::Duration::from_secs(31));
            node.absorb(i, out);
        }
        node.settle();
        let mut c = Client::udp(90);
        let a = node.allocate(2, &mut c, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
        assert!(a.is_success(), "{:?}", a.code());
    }
}

#[test]
fn a_reservation_holds_a_credit_of_the_node_until_redeemed_on_another_loop() {
    let mut node = Node::new(2, |c| {
        c.total_quota = 3;
        c.user_quota = 100;
    });
    let mut first = Client::udp(100);
    let a = node.allocate(0, &mut first, Req::allocate().raw(attr::EVEN_PORT, &[0x80]));
    assert!(a.is_success(), "{:?}", a.code());
    let token = a.get(attr::RESERVATION_TOKEN).expect("a token");
    // One allocation and one reservation: one credit left in the node.
    let mut c = Client::udp(101);
    assert!(node.allocate(1, &mut c, Req::allocate()).is_success());
    let mut d = Client::udp(102);
    assert_eq!(node.allocate(1, &mut d, Req::allocate()).code(), Some(508));
    // Redeemed on loop 1: the reservation's credit serves the token's allocation.
    let mut second = Client::new(Via::Udp(client(103)), USER2, PASS2);
    let b = node.allocate(
        1,
        &mut second,
        Req::allocate().raw(attr::RESERVATION_TOKEN, &token),
    );
    assert!(b.is_success(), "{:?}", b.code());
    assert_eq!(node.live(), 3);
    let mut e = Client::udp(104);
    assert_eq!(node.allocate(0, &mut e, Req::allocate()).code(), Some(508));
}

/// Two loops of total 100; loop 0 lent loop 1 its 50 credits, and loop 1 holds 10
/// allocations; a reload lowers the total to 20, delivered in order or newest first.
fn lowered_after_lending(lifo: bool) -> Node {
    let mut node = Node::new(2, |c| {
        c.total_quota = 100;
        c.user_quota = 1000;
    });
    node.lifo = lifo;
    // Loop 0 lends half of what it has spare each time: 25, 13, 6, 3, 2, 1.
    for req in 0..6 {
        node.flight.push_back((
            LoopId(1),
            LoopId(0),
            LoopMsg::Borrow {
                req: 1000 + req,
                want: turnpike_core::node::Want::Credits,
            },
        ));
    }
    node.settle();
    assert_eq!(node.credits(), [0, 100]);
    for n in 0..10u8 {
        let mut c = Client::udp(100 + n);
        assert!(node.allocate(1, &mut c, Req::allocate()).is_success());
    }
    for i in 0..2 {
        let h = &mut node.loops[i];
        let mut r = turnpike_core::config::Reloadable::from_config(h.server.config());
        r.total_quota = 20;
        let now = h.now;
        h.server.reload(now, r).expect("the reload is valid");
        let out = h.advance(std::time::Duration::ZERO);
        node.absorb(i, out);
    }
    node.settle();
    node
}

#[test]
fn a_lowered_total_quota_holds_for_the_node_though_a_loop_lent_its_credits() {
    for lifo in [false, true] {
        let mut node = lowered_after_lending(lifo);
        // The node holds the new total, not 60 more at loop 1.
        assert_eq!(node.credits().iter().sum::<u64>(), 20, "lifo {lifo}");
        let mut made = 0;
        for n in 0..60u8 {
            let mut c = Client::udp(150 + n);
            if node
                .allocate(usize::from(n % 2), &mut c, Req::allocate())
                .is_success()
            {
                made += 1;
            }
        }
        // Ten live, so ten more fit under the new total of 20.
        assert_eq!(made, 10, "lifo {lifo}");
        assert_eq!(node.live(), 20, "lifo {lifo}");
    }
}
