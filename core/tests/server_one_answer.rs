//! Every well-formed request gets exactly one response (RFC 8489 §6.3; the first
//! invariant of the design), whatever the mix of methods, outcomes, transports and
//! timing; indications and data get none.

mod support;

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use support::*;
use turnpike_core::stun::{attr, Class, Method, TransactionId};
use turnpike_core::ConnId;

/// A small deterministic generator (SplitMix64): the sequence is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Sends and counts: how many times each transaction id was sent as a request, and every
/// answer seen.
#[derive(Default)]
struct Tally {
    sent: BTreeMap<[u8; 12], usize>,
    answers: Vec<Answer>,
}

impl Tally {
    fn request(&mut self, h: &mut Harness, c: &mut Client, req: &Req, signed: bool) {
        let tid = req.tid.unwrap_or_else(|| h.tid());
        let req = req.clone().with_tid(tid);
        *self.sent.entry(tid.0).or_insert(0) += 1;
        let (_, out) = if signed {
            h.send_signed(c, &req)
        } else {
            h.send_plain(c, &req)
        };
        self.absorb(c, out);
    }
    fn absorb(&mut self, c: &mut Client, out: Outcome) {
        for a in &out.answers {
            if matches!(a.code(), Some(401) | Some(438)) {
                c.learn(a);
            }
        }
        self.answers.extend(out.answers);
    }
    fn check(&self) {
        let got = count_by_tid(&self.answers);
        for (tid, n) in &self.sent {
            assert_eq!(got.get(tid), Some(n), "transaction {tid:02x?}");
        }
        for tid in got.keys() {
            assert!(
                self.sent.contains_key(tid),
                "answer to an unknown transaction"
            );
        }
    }
}

#[test]
fn a_scripted_mix_gets_one_answer_per_request() {
    let mut h = Harness::new();
    let mut t = Tally::default();
    let mut u = Client::udp(1);
    let mut s = h.tcp_client(1, sa("203.0.113.90:1000"));
    let mut bob = Client::new(Via::Udp(client(1)), USER2, PASS2);
    let unknown_method = Req::new(Method(0x0FF));

    for c in [&mut u, &mut s] {
        t.request(&mut h, c, &Req::binding(), false);
        t.request(&mut h, c, &Req::allocate(), false); // 401
        t.request(&mut h, c, &unknown_method, false); // 400
        t.request(&mut h, c, &Req::allocate().raw(0x7777, b""), true); // 420
        t.request(&mut h, c, &Req::refresh(Some(600)), true); // 437
        t.request(&mut h, c, &Req::allocate_bare(), true); // 400
        let alloc = Req::allocate().with_tid(h.tid());
        t.request(&mut h, c, &alloc, true); // success
        t.request(&mut h, c, &alloc, true); // retransmission: same answer
        t.request(&mut h, c, &Req::allocate(), true); // 437
        t.request(
            &mut h,
            c,
            &Req::create_permission(&[peer(1), peer(2)]),
            true,
        );
        t.request(&mut h, c, &Req::create_permission(&[peer6(1)]), true); // 443
        t.request(
            &mut h,
            c,
            &Req::create_permission(&[SocketAddr::new(ip("127.0.0.1"), 1)]),
            true,
        ); // 403
        t.request(&mut h, c, &Req::channel_bind(0x4000, peer(1)), true);
        t.request(&mut h, c, &Req::channel_bind(0x4000, peer(2)), true); // 400
        t.request(&mut h, c, &Req::channel_bind(0x3000, peer(2)), true); // 400
                                                                         // Indications and data: no answer.
        let (_, out) = h.send_plain(c, &Req::send_indication(peer(1), b"x"));
        t.absorb(c, out);
        let out = h.send_raw(c.via, &channel_data(0x4000, b"data", true));
        t.absorb(c, out);
        t.request(&mut h, c, &Req::refresh(Some(1200)), true);
    }
    // 441 from bob on alice's UDP 5-tuple.
    t.request(&mut h, &mut bob, &Req::refresh(Some(600)), false);
    t.request(&mut h, &mut bob, &Req::refresh(Some(600)), true);
    // A stale nonce: 438, then the retry works.
    h.advance(Duration::from_secs(700));
    t.request(&mut h, &mut u, &Req::refresh(Some(0)), true);
    t.request(&mut h, &mut u, &Req::refresh(Some(0)), true);
    t.check();
    let codes: Vec<Option<u16>> = t.answers.iter().map(Answer::code).collect();
    for code in [401, 400, 420, 437, 443, 403, 441, 438] {
        assert!(codes.contains(&Some(code)), "the mix exercises {code}");
    }
}

#[test]
fn a_random_mix_gets_one_answer_per_request() {
    for seed in 0..SEEDS {
        random_mix(seed);
    }
}

/// How many random sequences the test runs.
const SEEDS: u64 = 24;

fn random_mix(seed: u64) {
    let mut cfg = with_v6(config());
    cfg.unauth_amplification_factor = 10;
    // The stream client must outlive the idle gaps of the sequence.
    cfg.stream_idle_timeout = Duration::from_secs(1_000_000);
    cfg.max_permissions = 3;
    cfg.max_channels = 3;
    cfg.user_quota = 2;
    cfg.relay_port_min = 60_000;
    cfg.relay_port_max = 60_003;
    let mut h = Harness::with_config(cfg);
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    let mut clients = [
        Client::udp(1),
        Client::new(Via::Udp(client(2)), USER2, PASS2).sha256(),
        h.tcp_client(1, sa("203.0.113.91:1000")),
        Client::udp(3).with_fingerprint(),
    ];
    let peers = [
        peer(1),
        peer(2),
        peer6(1),
        SocketAddr::new(ip("10.0.0.1"), 9),
    ];
    let mut last: Vec<Option<(Req, bool)>> = vec![None; clients.len()];
    for _ in 0..600 {
        let i = rng.below(clients.len() as u64) as usize;
        let p = peers[rng.below(peers.len() as u64) as usize];
        let signed = rng.below(8) != 0;
        let req = match rng.below(12) {
            0 => Req::binding(),
            1 | 2 => {
                let mut r = Req::allocate();
                if rng.below(4) == 0 {
                    r = r.additional_family(attr::FAMILY_IPV6);
                }
                r
            }
            3 => Req::refresh(Some([0, 600, 5000][rng.below(3) as usize])),
            4 | 5 => Req::create_permission(&[p]),
            6 | 7 => Req::channel_bind(0x3FFE + rng.below(6) as u16, p),
            8 => Req::allocate().raw(attr::DONT_FRAGMENT, &[]),
            9 => {
                // A retransmission of this client's last request.
                match &last[i] {
                    Some((r, s)) => {
                        let (r, s) = (r.clone(), *s);
                        t.request(&mut h, &mut clients[i], &r, s);
                        continue;
                    }
                    None => Req::binding(),
                }
            }
            10 => {
                let c = &mut clients[i];
                let (_, out) = h.send_plain(c, &Req::send_indication(p, b"payload"));
                t.absorb(c, out);
                continue;
            }
            _ => {
                let c = &mut clients[i];
                if matches!(c.via, Via::Stream(_)) {
                    // ChannelData on a stream with no allocation closes it (not TURN): keep
                    // the stream client for requests.
                    continue;
                }
                let out = h.send_raw(c.via, &channel_data(0x4000, b"cd", true));
                t.absorb(c, out);
                continue;
            }
        };
        let req = req.with_tid(h.tid());
        let signed = signed && clients[i].nonce.is_some();
        t.request(&mut h, &mut clients[i], &req, signed);
        last[i] = Some((req, signed));
        if rng.below(10) == 0 {
            h.advance(Duration::from_secs(rng.below(200)));
        }
    }
    t.check();
    let mut codes = BTreeMap::new();
    for a in &t.answers {
        *codes.entry(a.code().unwrap_or(0)).or_insert(0) += 1;
    }
    // The mix reached the interesting answers.
    for code in [0, 400, 401, 403, 420, 437, 443] {
        assert!(codes.contains_key(&code), "no {code} in {codes:?}");
    }
}

#[test]
fn responses_and_garbage_get_no_answer() {
    // RFC 8489 §6.3: responses sent to the server, and bytes that are not STUN, are
    // dropped silently.
    let mut h = Harness::new();
    let mut r = Req::binding();
    r.class = Class::Success;
    let (_, out) = h.send_plain(&Client::udp(1), &r);
    assert!(out.answers.is_empty());
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff",
        b"\x00\x01\x00\x00\x21\x12\xa4\x42",
        // Good header, length beyond the datagram.
        b"\x00\x01\x00\x08\x21\x12\xa4\x42abcdefghijkl",
        // Bad cookie.
        b"\x00\x01\x00\x00\x21\x12\xa4\x43abcdefghijkl",
    ] {
        let out = h.datagram(UDP, client(1), junk);
        assert!(out.answers.is_empty() && out.forward.is_none());
    }
    let s = h.server.stats(h.now);
    assert!(s.dropped.malformed >= 4);
    assert_eq!(s.dropped.unexpected, 1);
    let _ = (ConnId(0), TransactionId([0; 12]));
}

#[test]
fn the_output_queue_is_bounded() {
    // Past max_queued_outputs, answers are dropped and counted rather than queued without
    // bound (a driver that stops draining cannot make the core grow).
    let mut cfg = config();
    cfg.max_queued_outputs = 3;
    let mut s = turnpike_core::Server::new(cfg, [3; 32], T0).unwrap();
    let req = Req::binding();
    for n in 0..10u8 {
        let mut bytes = req.encode_plain(TransactionId([n; 12]), false);
        let len = bytes.len();
        s.handle_datagram(T0, UDP, client(1), &mut bytes, 0..len);
    }
    let mut drained = 0;
    while s.poll_output().is_some() {
        drained += 1;
    }
    assert_eq!(drained, 3);
    assert_eq!(s.stats(T0).dropped.queue_full, 7);
}
