//! Bad input on a live server: random bytes and truncated STUN over UDP and TCP, a TLS
//! ClientHello and an HTTP request on the TCP port, a PROXY header from a source that is
//! not trusted. The server must keep serving everyone else (a uclient run relays with zero
//! loss afterwards) and, for turnpike, close those connections and say why in its event
//! log: once per source, however many times the source misbehaves (the log limiter's
//! window is 10 s; each kind of garbage comes from its own loopback address, five times).
//!
//! coturn's variants check the "keeps serving" half; the PROXY test is turnpike's alone.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use turnpike_tests::server::Peer;
use turnpike_tests::turn::{self, tcp_connect_from, Message, TurnClient};
use turnpike_tests::uclient::{Credentials, Uclient};
use turnpike_tests::{per_server, run_on, RunningServer, ServerKind, ServerSpec};

per_server!(garbage_leaves_the_relay_serving);

/// PROXY headers only make sense to turnpike; coturn does not speak the protocol.
#[test]
fn proxy_header_from_untrusted_source_is_refused() {
    run_on(ServerKind::Turnpike, untrusted_proxy)
}

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";
/// How many times each source repeats its bad input.
const REPEAT: usize = 5;

fn src(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// What each misbehaving source sends on its TCP connections, and the reason turnpike
/// must log for it (None: no record required, e.g. a message cut short by the client).
fn tcp_garbage() -> Vec<(&'static str, IpAddr, Vec<u8>, Option<&'static str>)> {
    let binding = turn::binding_request();
    let mut truncated = turn::Message::request(turn::ALLOCATE).encode(None, true);
    truncated.truncate(12);
    vec![
        (
            "random bytes",
            src(11),
            pseudo_random(600, 0xFF),
            Some("not_turn"),
        ),
        ("truncated STUN", src(12), truncated.clone(), None),
        ("TLS ClientHello", src(13), client_hello(), Some("not_turn")),
        (
            "HTTP request",
            src(14),
            b"GET / HTTP/1.1\r\nHost: turn.test\r\nUser-Agent: e2e\r\n\r\n".to_vec(),
            Some("not_turn"),
        ),
        (
            "STUN then junk",
            src(15),
            [binding, pseudo_random(64, 0xC0)].concat(),
            Some("not_turn"),
        ),
    ]
}

fn garbage_leaves_the_relay_serving(kind: ServerKind) {
    let peer = Peer::start();
    let mut server = RunningServer::start(kind, ServerSpec::static_user(USER, PASSWORD));

    // UDP: junk datagrams from one socket, REPEAT times each.
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket");
    let mut short_stun = Message::request(turn::ALLOCATE).encode(None, true);
    short_stun.truncate(short_stun.len() - 6);
    let mut bad_cookie = turn::binding_request();
    bad_cookie[4] ^= 0xFF;
    let unbound_channel = [0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4].to_vec();
    for _ in 0..REPEAT {
        for d in [
            pseudo_random(300, 0xFF),
            short_stun.clone(),
            bad_cookie.clone(),
            unbound_channel.clone(),
            vec![0u8; 1],
            Vec::new(),
        ] {
            let _ = udp.send_to(&d, server.addr);
        }
    }

    // TCP: each kind of garbage from its own address, on REPEAT connections.
    let mut conns: Vec<(&str, TcpStream)> = Vec::new();
    for (what, from, bytes, _) in tcp_garbage() {
        for _ in 0..REPEAT {
            let mut s = tcp_connect_from(from, server.addr)
                .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
            let _ = s.write_all(&bytes);
            if what == "truncated STUN" {
                // The client gives up mid-message.
                let _ = s.shutdown(std::net::Shutdown::Both);
                continue;
            }
            conns.push((what, s));
        }
    }
    server.assert_running();

    if server.kind == ServerKind::Turnpike {
        for (what, s) in &mut conns {
            assert!(
                closed_within(s, Duration::from_secs(3)),
                "turnpike kept a connection that sent {what} open"
            );
        }
    }
    drop(conns);

    // Everyone else is still served: a clean uclient run over UDP and over TCP.
    let alice = Credentials::Static {
        user: USER.into(),
        password: PASSWORD.into(),
    };
    Uclient::new(server.addr, peer.addr, alice.clone()).run_zero_loss();
    let mut u = Uclient::new(server.addr, peer.addr, alice);
    u.tcp = true;
    u.run_zero_loss();
    server.assert_running();

    if server.kind.has_event_log() {
        for (what, from, _, reason) in tcp_garbage() {
            let Some(reason) = reason else { continue };
            let from_source = |e: &serde_json::Value| remote_ip(e) == Some(from);
            let first = server.wait_event(Duration::from_secs(3), |e| {
                from_source(e) && e["event"] == reason
            });
            assert!(
                first.is_some(),
                "no `{reason}` record for the {what} from {from}: {:#?}",
                server.events()
            );
            let records = server
                .events()
                .into_iter()
                .filter(|e| from_source(e))
                .count();
            // Once per event loop at most: each loop keeps its own note of what it logged
            // (the kernel spreads the connections over the loops).
            assert!(
                (1..=server.loops).contains(&records),
                "{what} from {from} sent {REPEAT} times must be logged once (per event \
                 loop, of {}): {records} records: {:#?}",
                server.loops,
                server.events()
            );
        }
        let log = server.log_text();
        let udp_src = udp.local_addr().expect("local address").to_string();
        let lines = log.lines().filter(|l| l.contains(&udp_src)).count();
        assert!(
            lines <= 1,
            "UDP junk from {udp_src} logged {lines} times:\n{log}"
        );
    }
}

fn untrusted_proxy(kind: ServerKind) {
    let peer = Peer::start();
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.proxy_protocol = true;
    spec.proxy_protocol_trusted = vec!["127.0.0.1/32".into()];
    let mut server = RunningServer::start(kind, spec);
    let claimed: SocketAddr = "203.0.113.7:40000".parse().expect("an address");
    let header = turn::proxy_v1(claimed, server.addr);

    // From 127.0.0.21, not trusted: a well-formed header and a request, five times.
    let rogue = src(21);
    for _ in 0..REPEAT {
        let mut s = tcp_connect_from(rogue, server.addr).expect("connect");
        let _ = s.write_all(&[header.clone(), turn::binding_request()].concat());
        assert!(
            closed_within(&mut s, Duration::from_secs(3)),
            "a PROXY header from untrusted {rogue} was not refused"
        );
    }

    // From 127.0.0.1, trusted: the header is believed, and the allocation is the client's.
    let mut trusted =
        TurnClient::tcp(server.addr, src(1), Some(&header), USER, PASSWORD).expect("connect");
    let mapped = trusted
        .binding()
        .expect("a Binding through a trusted PROXY header");
    assert_eq!(
        mapped, claimed,
        "XOR-MAPPED-ADDRESS must be the client's address from the PROXY header"
    );
    trusted
        .allocate()
        .expect("an allocation through a trusted PROXY header");

    // `PROXY UNKNOWN` (what nginx sends from a unix socket): the connection's own address.
    let mut unknown = TurnClient::tcp(
        server.addr,
        src(1),
        Some(b"PROXY UNKNOWN\r\n"),
        USER,
        PASSWORD,
    )
    .expect("connect");
    let own = unknown.local_addr().expect("local address");
    assert_eq!(
        unknown.binding().expect("a Binding after PROXY UNKNOWN"),
        own
    );

    // Everyone else is still served.
    Uclient::new(
        server.addr,
        peer.addr,
        Credentials::Static {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    )
    .run_zero_loss();
    server.assert_running();

    let first = server.wait_event(Duration::from_secs(3), |e| {
        e["event"] == "untrusted_proxy" && remote_ip(e) == Some(rogue)
    });
    assert!(
        first.is_some(),
        "no untrusted_proxy record for {rogue}: {:#?}",
        server.events()
    );
    let records = server
        .events()
        .into_iter()
        .filter(|e| remote_ip(e) == Some(rogue))
        .count();
    // Once per event loop at most: each loop keeps its own note of what it logged (the
    // kernel spreads the connections over the loops).
    assert!(
        (1..=server.loops).contains(&records),
        "{REPEAT} untrusted headers from {rogue} must be logged once (per event loop, of \
         {}): {records} records: {:#?}",
        server.loops,
        server.events()
    );
    let created = server.wait_event(Duration::from_secs(3), |e| {
        e["event"] == "allocation_created" && e["client"] == claimed.to_string()
    });
    assert!(
        created.is_some(),
        "the allocation must be logged with the PROXY client {claimed}: {:#?}",
        server.events()
    );
}

/// The IP of a record's `remote` (stream records) or `client` field.
fn remote_ip(e: &serde_json::Value) -> Option<IpAddr> {
    let a = e["remote"].as_str().or_else(|| e["client"].as_str())?;
    a.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// True when the server closes (or resets) `s` within `limit`; bytes it sends first are
/// read and ignored (at most 64 KiB).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    let mut total = 0usize;
    while Instant::now() < deadline && total < 65_536 {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if s.set_read_timeout(Some(left)).is_err() {
            return true;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// `n` bytes from a fixed xorshift sequence, the first one `first` (so that it is neither
/// STUN, whose first two bits are 00, nor ChannelData, 01).
fn pseudo_random(n: usize, first: u8) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    if let Some(b) = v.first_mut() {
        *b = first;
    }
    v
}

/// A well-formed TLS 1.2 ClientHello record with SNI `turn.test`, as a browser pointed
/// at `turns:` on the plain TCP port would send.
fn client_hello() -> Vec<u8> {
    let name = b"turn.test";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut ext = Vec::new();
    ext.extend_from_slice(&[0x00, 0x00]);
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&pseudo_random(32, 0x42));
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xC0, 0x2F, 0x13, 0x01]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}
