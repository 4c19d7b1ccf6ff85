//! A fleet of two turnpike processes on loopback, A and B, sharing `node_secret` and the
//! REST secret: A drains on SIGTERM (or `POST /v1/drain`) while its live call goes on, new
//! Allocates to A are redirected with 300 to B (RFC 8489 §10) and the core's client relays
//! through B; A exits 0 when its last allocation ends, or at `drain_timeout_s`; a second
//! SIGTERM exits at once; a nonce of A is accepted by B; a full node redirects too.
//!
//! coturn's `turnutils_uclient` follows a 300 to its first ("probe") Allocate: its calls
//! then go to the ALTERNATE-SERVER. The core's sans-IO client, over a real UDP socket,
//! checks the redirect exactly (from A to B, the relayed address in B's range).

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use turnpike_core::client::{Client, ClientConfig, ClientEvent};
use turnpike_core::Transport;
use turnpike_tests::http::{exchange, sample};
use turnpike_tests::nginx;
use turnpike_tests::server::{Peer, TlsSpec};
use turnpike_tests::uclient::{Credentials, Uclient};
use turnpike_tests::{
    free_tcp_port, require_tools, rest_password, rest_username, unix_now_s, RunningServer,
    ServerKind, ServerSpec, TempDir,
};

const REST_SECRET: &str = "a fleet's shared REST secret";
const NODE_SECRET: &str = "a fleet's shared node secret";
const ISSUANCE_SECRET: &str = "a fleet's shared issuance secret";

/// A relay of the fleet: REST credentials, the fleet's node secret (or `node_secret`),
/// `drain_timeout_s`, and more keys.
fn node(
    workers: Option<u32>,
    drain_s: u64,
    node_secret: &str,
    extra: &[(&str, String)],
) -> RunningServer {
    node_with(workers, drain_s, node_secret, extra, |_| {})
}

/// [`node`], its spec changed by `tune` first (a fixed port, TLS).
fn node_with(
    workers: Option<u32>,
    drain_s: u64,
    node_secret: &str,
    extra: &[(&str, String)],
    tune: impl FnOnce(&mut ServerSpec),
) -> RunningServer {
    let mut spec = ServerSpec::rest(REST_SECRET);
    spec.workers = workers;
    spec.drain_timeout_s = drain_s;
    spec.extra = vec![
        ("node_secret".into(), format!("\"{node_secret}\"")),
        ("issuance_secret".into(), format!("\"{ISSUANCE_SECRET}\"")),
    ];
    spec.extra
        .extend(extra.iter().map(|(k, v)| ((*k).to_string(), v.clone())));
    tune(&mut spec);
    RunningServer::start(ServerKind::Turnpike, spec)
}

/// `alternate_servers` naming `b`'s UDP and TCP port.
fn alternate(b: &RunningServer) -> (&'static str, String) {
    alternate_port(b.addr.port())
}

/// `alternate_servers` naming 127.0.0.1:`port`.
fn alternate_port(port: u16) -> (&'static str, String) {
    (
        "alternate_servers",
        format!("[{{ address = \"127.0.0.1\", turn_port = {port} }}]"),
    )
}

/// The tools this file needs, or a skip (a failure under `TURNPIKE_E2E=1`).
fn tools() -> bool {
    ServerKind::Turnpike.available() && require_tools(&["turnutils_uclient", "turnutils_peer"])
}

/// One uclient call (one client, no RTCP allocation) to `server` with REST credentials
/// of `user`.
fn uclient(server: SocketAddr, peer: SocketAddr, user: &str) -> Uclient {
    let creds = Credentials::Rest {
        user: user.into(),
        secret: REST_SECRET.into(),
    };
    let mut u = Uclient::new(server, peer, creds);
    u.clients = 1;
    u.no_rtcp = true;
    u
}

/// The core's TURN client on a real UDP socket, sending to wherever it is told
/// ([`Client::server`]: the configured relay, or the alternate of a 300).
struct CoreClient {
    sock: UdpSocket,
    client: Client,
    t0: Instant,
    events: Vec<ClientEvent>,
}

impl CoreClient {
    /// With REST credentials of the fleet's secret.
    fn new(server: SocketAddr) -> CoreClient {
        let username = rest_username("carol", unix_now_s() + 3600);
        let password = rest_password(REST_SECRET, &username);
        CoreClient::with(server, &username, &password)
    }

    fn with(server: SocketAddr, username: &str, password: &str) -> CoreClient {
        let cc = ClientConfig::new(server, Transport::Udp, username, password);
        let sock = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("a read timeout");
        let t0 = Instant::now();
        CoreClient {
            sock,
            client: Client::new(cc, [9; 32], turnpike_core::Instant::from_secs(1)),
            t0,
            events: Vec::new(),
        }
    }

    fn now(&self) -> turnpike_core::Instant {
        turnpike_core::Instant::from_secs(1) + self.t0.elapsed()
    }

    /// Moves messages until an event matches `pred` (returned) or `limit` passes.
    fn until(
        &mut self,
        limit: Duration,
        pred: impl Fn(&ClientEvent) -> bool,
    ) -> Option<ClientEvent> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            while let Some(bytes) = self.client.poll_transmit() {
                let _ = self.sock.send_to(&bytes, self.client.server());
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e.clone());
                if pred(&e) {
                    return Some(e);
                }
            }
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let now = self.now();
                    self.client.handle_input(now, &buf[..n]);
                }
                Err(_) => {
                    let now = self.now();
                    self.client.handle_timeout(now);
                }
            }
        }
        None
    }

    /// Allocates; the relayed address, or the error code.
    fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let now = self.now();
        self.client.allocate(now);
        let e = self.until(Duration::from_secs(10), |e| {
            matches!(
                e,
                ClientEvent::Allocated { .. } | ClientEvent::AllocateFailed { .. }
            )
        });
        match e {
            Some(ClientEvent::Allocated { relayed, .. }) => Ok(relayed[0]),
            Some(ClientEvent::AllocateFailed { code, .. }) => Err(code),
            _ => Err(0),
        }
    }

    /// Sends `data` to `peer` (an echo peer) through the allocation and waits for the echo.
    fn echo(&mut self, peer: SocketAddr, data: &[u8]) -> bool {
        let now = self.now();
        self.client.create_permission(now, &[peer.ip()]);
        let permitted = self.until(Duration::from_secs(5), |e| {
            matches!(e, ClientEvent::PermissionCreated { .. })
        });
        assert!(permitted.is_some(), "no permission: {:?}", self.events);
        for _ in 0..5 {
            let now = self.now();
            self.client.send(now, peer, data);
            let got = self.until(
                Duration::from_millis(500),
                |e| matches!(e, ClientEvent::Data { data: d, .. } if d.as_slice() == data),
            );
            if got.is_some() {
                return true;
            }
        }
        false
    }

    fn redirected(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Redirected { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }
}

/// `method path` on the relay's API: status and body.
fn api(server: &RunningServer, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(server.api_addr()).expect("the API");
    exchange(&mut s, method, path, "").expect("an API answer")
}

fn metric(server: &RunningServer, series: &str) -> f64 {
    let (_, text) = api(server, "GET", "/metrics");
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn in_range(addr: SocketAddr, range: (u16, u16)) -> bool {
    (range.0..=range.1).contains(&addr.port())
}

/// The scenario: a uclient call on A keeps relaying through A's drain while new
/// Allocates to A get 300 with B's address and the client relays through B; A exits 0
/// when the call ends.
fn call_goes_on_through_the_drain(workers: Option<u32>) {
    if !tools() {
        return;
    }
    // B starts two seconds after A: a relay that dated nonces by its own uptime would find
    // A's from the future; dated from the wall clock, they read alike.
    let b_port = turnpike_tests::free_port_udp_tcp();
    let mut a = node(workers, 60, NODE_SECRET, &[alternate_port(b_port)]);
    std::thread::sleep(Duration::from_secs(2));
    let b = node_with(workers, 0, NODE_SECRET, &[], |s| s.port = Some(b_port));
    let peer = Peer::start();
    // The live call: over TCP, so that its allocations end with its connections; about
    // 10 s (uclient sends every 20 ms), so that it outlasts the checks below on a loaded
    // machine (with 200 messages it once ended before them).
    let mut u = uclient(a.addr, peer.addr, "alice");
    u.tcp = true;
    u.messages = 500;
    let call = std::thread::spawn(move || u.run_zero_loss());
    let live = a.wait_event(Duration::from_secs(10), |e| {
        e["event"] == "allocation_created"
    });
    assert!(live.is_some(), "uclient's call never allocated on A");

    a.send_sigterm();
    assert!(
        a.wait_event(Duration::from_secs(5), |e| e["event"] == "drain_started")
            .is_some(),
        "A did not start draining"
    );
    let (status, body) = api(&a, "GET", "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"status\":\"draining\""), "{body}");

    // A new client is sent to B, and relays through B.
    let mut c = CoreClient::new(a.addr);
    let relayed = c.allocate().expect("an allocation at the alternate");
    assert_eq!(c.redirected(), vec![(a.addr, b.addr)]);
    assert!(
        in_range(relayed, b.relay_ports),
        "{relayed} is not B's ({:?})",
        b.relay_ports
    );
    assert!(c.echo(peer.addr, b"through B"), "no echo through B");
    // B took A's nonce (the same client address; uclient's calls below come from new
    // sockets, whose nonce B cannot take): the fleet shares the nonce key (node_secret).
    assert_eq!(metric(&b, "turnpike_stale_nonce_total"), 0.0);
    assert_eq!(metric(&b, "turnpike_unauthorized_total"), 0.0);
    // A second uclient call, sent to A, is redirected to B and relays there.
    let mut second = uclient(a.addr, peer.addr, "bob");
    second.messages = 20;
    second.run_zero_loss();
    assert!(
        b.wait_event(Duration::from_secs(3), |e| {
            e["event"] == "allocation_created"
                && e["username"].as_str().is_some_and(|u| u.ends_with(":bob"))
        })
        .is_some(),
        "the second call did not reach B"
    );
    // The core's client, and uclient's probe.
    assert_eq!(metric(&a, "turnpike_redirects_total"), 2.0);
    assert_eq!(metric(&a, "turnpike_draining"), 1.0);
    // The call was live on A all along.
    let (_, allocations) = api(&a, "GET", "/v1/allocations");
    assert!(allocations.contains("alice"), "{allocations}");
    a.assert_running();

    let summary = call.join().expect("the uclient thread");
    println!("the call through A's drain: {summary}");
    let ended = Instant::now();
    let st = a.wait_exit(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "A did not exit 0 after its last call: {st:?}\n{}",
        a.log_text()
    );
    println!("A exited {:?} after the call ended", ended.elapsed());
    assert!(a.log_text().contains("drained"), "{}", a.log_text());
}

#[test]
fn a_call_goes_on_through_a_drain_and_new_clients_go_to_the_alternate() {
    call_goes_on_through_the_drain(None);
}

#[test]
fn a_call_goes_on_through_a_drain_with_one_loop() {
    call_goes_on_through_the_drain(Some(1));
}

#[test]
fn a_drain_ends_at_its_timeout_and_refuses_new_allocations_with_508_without_alternates() {
    if !tools() {
        return;
    }
    let mut a = node(None, 3, NODE_SECRET, &[]);
    let peer = Peer::start();
    let mut held = CoreClient::new(a.addr);
    held.allocate().expect("an allocation on A");
    let t0 = Instant::now();
    a.send_sigterm();
    assert!(a
        .wait_event(Duration::from_secs(5), |e| e["event"] == "drain_started")
        .is_some());
    // No alternate: a new client is refused; the live allocation relays on.
    let mut late = CoreClient::new(a.addr);
    assert_eq!(late.allocate(), Err(508));
    assert!(
        held.echo(peer.addr, b"still here"),
        "no echo during the drain"
    );
    let st = a.wait_exit(Duration::from_secs(8));
    let took = t0.elapsed();
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", a.log_text());
    assert!(
        took >= Duration::from_millis(2500),
        "exited after {took:?}, before its timeout"
    );
    assert!(a.log_text().contains("drain timeout"), "{}", a.log_text());
}

#[test]
fn a_second_sigterm_exits_at_once() {
    if !tools() {
        return;
    }
    let mut a = node(None, 600, NODE_SECRET, &[]);
    let mut held = CoreClient::new(a.addr);
    held.allocate().expect("an allocation on A");
    a.send_sigterm();
    assert!(a
        .wait_event(Duration::from_secs(5), |e| e["event"] == "drain_started")
        .is_some());
    a.assert_running();
    let t0 = Instant::now();
    a.send_sigterm();
    let st = a.wait_exit(Duration::from_secs(3));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", a.log_text());
    println!("the second SIGTERM: exited in {:?}", t0.elapsed());
}

/// Two SIGTERMs back to back, before the loops read the first: the signal pipe coalesces
/// them, but they are two, and the second stops at once.
fn two_quick_sigterms_exit_at_once(workers: Option<u32>) {
    if !tools() {
        return;
    }
    let mut a = node(workers, 600, NODE_SECRET, &[]);
    let mut held = CoreClient::new(a.addr);
    held.allocate().expect("an allocation on A");
    let t0 = Instant::now();
    a.send_sigterm();
    a.send_sigterm();
    let st = a.wait_exit(Duration::from_secs(3));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", a.log_text());
    println!("two quick SIGTERMs: exited in {:?}", t0.elapsed());
}

#[test]
fn two_quick_sigterms_exit_at_once_with_a_live_allocation() {
    two_quick_sigterms_exit_at_once(None);
}

#[test]
fn two_quick_sigterms_exit_at_once_with_one_loop() {
    two_quick_sigterms_exit_at_once(Some(1));
}

/// EVEN-PORT (RFC 8656 §18.8) and RESERVATION-TOKEN (§18.9).
const EVEN_PORT: u16 = 0x0018;
const RESERVATION_TOKEN: u16 = 0x0022;

/// A drain with nothing live but a reservation (an Allocate with EVEN-PORT R whose
/// allocation was deleted): the node keeps running, the pair's second Allocate (with the
/// token, from another 5-tuple, so often another loop) is taken, and the node exits once
/// that allocation ends. A node that counted allocations only exited at once.
fn a_reservation_holds_the_drain(workers: Option<u32>) {
    use turnpike_tests::adversary::{start_with, Reply, Session, PASSWORD, USER};
    use turnpike_tests::turn::{Class, Message, ALLOCATE, LIFETIME, REFRESH, REQUESTED_TRANSPORT};
    let Some(mut a) = start_with(&[], |s| {
        s.workers = workers;
        s.drain_timeout_s = 30;
    }) else {
        return;
    };
    let local = "127.0.0.1".parse().unwrap();
    let mut first = Session::udp(a.addr, local).as_user(USER, PASSWORD);
    first.learn_nonce();
    let mut m = Message::request(ALLOCATE);
    m.add(REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .add(EVEN_PORT, &[0x80]);
    let bytes = first.sign(&m);
    first.send(&bytes);
    let answer = first
        .answer(Duration::from_secs(3))
        .expect("an Allocate answer");
    assert_eq!(answer.class, Class::Success, "{answer:?}");
    let token = answer
        .attr(RESERVATION_TOKEN)
        .expect("a RESERVATION-TOKEN")
        .to_vec();
    let mut delete = Message::request(REFRESH);
    delete.add(LIFETIME, &0u32.to_be_bytes());
    assert_eq!(first.signed(&delete), Reply::Success, "Refresh 0");

    a.send_sigterm();
    assert!(a
        .wait_event(Duration::from_secs(5), |e| e["event"] == "drain_started")
        .is_some());
    // Long enough for several report rounds of every loop.
    std::thread::sleep(Duration::from_secs(4));
    a.assert_running();

    let mut second = Session::udp(a.addr, local).as_user(USER, PASSWORD);
    let mut m = Message::request(ALLOCATE);
    m.add(REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .add(RESERVATION_TOKEN, &token);
    assert_eq!(second.signed(&m), Reply::Success, "the token's Allocate");
    std::thread::sleep(Duration::from_secs(3));
    a.assert_running();
    assert_eq!(second.signed(&delete), Reply::Success, "Refresh 0");
    let t0 = Instant::now();
    let st = a.wait_exit(Duration::from_secs(8));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", a.log_text());
    println!("drained {:?} after the last allocation ended", t0.elapsed());
    assert!(a.log_text().contains("drained"), "{}", a.log_text());
}

#[test]
fn a_reservation_holds_the_drain_until_redeemed() {
    a_reservation_holds_the_drain(None);
}

#[test]
fn a_reservation_holds_the_drain_of_one_loop() {
    a_reservation_holds_the_drain(Some(1));
}

#[test]
fn post_v1_drain_drains_as_sigterm_and_the_last_refresh_to_zero_ends_it() {
    if !tools() {
        return;
    }
    let mut a = node(Some(1), 600, NODE_SECRET, &[]);
    let mut held = CoreClient::new(a.addr);
    held.allocate().expect("an allocation on A");
    assert_eq!(api(&a, "GET", "/health").0, 200);
    assert_eq!(metric(&a, "turnpike_draining"), 0.0);
    let (status, body) = api(&a, "POST", "/v1/drain");
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"allocations\":1"), "{body}");
    assert_eq!(api(&a, "GET", "/health").0, 503);
    assert_eq!(metric(&a, "turnpike_draining"), 1.0);
    // Refresh works while draining; a Refresh to 0 ends the last allocation.
    let now = held.now();
    held.client.refresh(now, 600);
    assert!(held
        .until(Duration::from_secs(5), |e| matches!(
            e,
            ClientEvent::Refreshed { .. }
        ))
        .is_some());
    let now = held.now();
    held.client.refresh(now, 0);
    assert!(held
        .until(Duration::from_secs(5), |e| matches!(
            e,
            ClientEvent::Deleted
        ))
        .is_some());
    let st = a.wait_exit(Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", a.log_text());
}

#[test]
fn a_node_with_another_node_secret_does_not_take_the_nonce_but_the_client_recovers() {
    if !tools() {
        return;
    }
    let b = node(Some(1), 0, "another node secret, not shared", &[]);
    let a = node(Some(1), 60, NODE_SECRET, &[alternate(&b)]);
    let (status, _) = api(&a, "POST", "/v1/drain");
    assert_eq!(status, 202);
    let mut c = CoreClient::new(a.addr);
    let relayed = c.allocate().expect("an allocation at the alternate");
    assert!(in_range(relayed, b.relay_ports));
    // A's nonce meant nothing to B: one 438, then B's own nonce.
    assert_eq!(metric(&b, "turnpike_stale_nonce_total"), 1.0);
}

#[test]
fn credentials_issued_by_one_node_work_on_the_other() {
    if !tools() {
        return;
    }
    let a = node(Some(1), 0, NODE_SECRET, &[]);
    let b = node(Some(1), 0, NODE_SECRET, &[]);
    let mut s = TcpStream::connect(a.api_addr()).expect("A's API");
    let (status, body) = exchange(&mut s, "POST", "/v1/ice-servers", "{}").expect("an answer");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let server = &v["iceServers"][0];
    let (user, pass) = (
        server["username"].as_str().expect("a username"),
        server["credential"].as_str().expect("a credential"),
    );
    let mut c = CoreClient::with(b.addr, user, pass);
    let relayed = c.allocate().expect("B takes A's issued credential");
    assert!(in_range(relayed, b.relay_ports));
}

/// A relay full (`total_quota` reached on the node, whichever loop the client lands on)
/// redirects rather than answering 508.
fn full_node_redirects(workers: Option<u32>) {
    if !tools() {
        return;
    }
    let b = node(workers, 0, NODE_SECRET, &[]);
    let a = node(
        workers,
        0,
        NODE_SECRET,
        &[alternate(&b), ("total_quota", "1".into())],
    );
    let mut first = CoreClient::new(a.addr);
    let r1 = first.allocate().expect("A's one allocation");
    assert!(in_range(r1, a.relay_ports));
    assert!(first.redirected().is_empty());
    let mut second = CoreClient::new(a.addr);
    let r2 = second.allocate().expect("an allocation at B");
    assert_eq!(second.redirected(), vec![(a.addr, b.addr)]);
    assert!(in_range(r2, b.relay_ports));
    assert_eq!(metric(&a, "turnpike_redirects_total"), 1.0);
    assert_eq!(metric(&a, "turnpike_draining"), 0.0);
}

#[test]
fn a_full_node_redirects_with_300_and_rest_credentials_work_on_both() {
    full_node_redirects(None);
}

#[test]
fn a_full_node_of_one_loop_redirects_with_300() {
    full_node_redirects(Some(1));
}

#[test]
fn a_tls_client_is_sent_to_the_alternates_tls_port() {
    if !tools() || !require_tools(&["openssl"]) {
        return;
    }
    let dir = TempDir::new("fleet-tls");
    let cert = nginx::self_signed_cert(dir.path());
    let tls = |port: u16| TlsSpec {
        cert: cert.cert.clone(),
        key: cert.key.clone(),
        port: Some(port),
    };
    let b_tls = free_tcp_port();
    let b = node_with(Some(1), 0, NODE_SECRET, &[], |s| s.tls = Some(tls(b_tls)));
    let alternates = format!(
        "[{{ address = \"127.0.0.1\", turn_port = {}, tls_port = {b_tls}, tls_domain = \"turn-b.test\" }}]",
        b.addr.port()
    );
    let mut a = node_with(
        Some(1),
        60,
        NODE_SECRET,
        &[("alternate_servers", alternates)],
        |s| s.tls = Some(tls(free_tcp_port())),
    );
    assert_eq!(api(&a, "POST", "/v1/drain").0, 202);
    let peer = Peer::start();
    let mut u = uclient(a.tls_addr().expect("A serves TLS"), peer.addr, "dave");
    u.tls = true;
    u.messages = 20;
    u.run_zero_loss();
    // uclient's probe was sent to B's TLS port; its call came over TLS there.
    let at_b = b.wait_event(Duration::from_secs(3), |e| {
        e["event"] == "allocation_created" && e["tls"] == true
    });
    assert!(at_b.is_some(), "no TLS allocation at B: {:#?}", b.events());
    // A held nothing: drained at once, after saying where it sent the client.
    let to_b = format!("127.0.0.1:{b_tls}");
    let redirected = a.events().into_iter().any(|e| {
        e["event"] == "allocation_redirected" && e["to"] == to_b.as_str() && e["tls"] == true
    });
    assert!(redirected, "{:#?}", a.events());
    let st = a.wait_exit(Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
}
