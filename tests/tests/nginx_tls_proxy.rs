//! A real nginx in front of the relay's TCP listener, as Sora's production guide deploys
//! it:
//!
//! - one hop: nginx terminates TLS (self-signed certificate) and passes TURN-TCP on with
//!   `proxy_protocol on`; `turnutils_uclient -S` relays through it with zero loss, and the
//!   relay's event log names the client's own address (uclient binds 127.0.0.2, nginx
//!   connects from 127.0.0.1), with the very ports nginx saw;
//! - the guide's two-hop layout on one port: `ssl_preread` sends connections without SNI
//!   to the TURN-TCP listener (PROXY TCP4 with the client's address) and the TURN-TLS name
//!   to a unix socket where a second server terminates TLS and passes TURN-TCP on (nginx
//!   sends `PROXY UNKNOWN` there, which the relay must accept); and, for turnpike, the
//!   same route with `set_real_ip_from unix:;`, which keeps the client's address in a
//!   header whose destination is a socket path.
//!
//! uclient sends no SNI, so the TLS route is reached through a third nginx server that
//! opens TLS with SNI `turns.test` on uclient's behalf (plain TCP in, TLS out).
//!
//! coturn speaks no PROXY protocol: its variants run the same nginx layouts with
//! `proxy_protocol off`, which checks the harness; the PROXY assertions are turnpike's.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use turnpike_tests::nginx::{self, Nginx, TwoHopPorts};
use turnpike_tests::server::Peer;
use turnpike_tests::uclient::Uclient;
use turnpike_tests::{
    free_tcp_port, per_server, require_tools, run_on, skip_or_fail, RunningServer, ServerKind,
    ServerSpec, TempDir, LOOPBACK,
};

per_server!(
    tls_through_nginx_with_proxy_protocol,
    two_hop_without_sni_is_turn_tcp,
    two_hop_with_sni_is_turn_tls
);

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";

/// The address uclient connects from, distinct from nginx's 127.0.0.1.
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn nginx_available() -> bool {
    if !require_tools(&["nginx", "openssl"]) {
        return false;
    }
    nginx::has_stream_module()
        || skip_or_fail(&format!(
            "nginx has no stream module ({} missing: apt-get install libnginx-mod-stream)",
            nginx::STREAM_MODULE
        ))
}

/// A server behind nginx: PROXY protocol on its TCP listener when it speaks it.
fn server_behind_nginx(kind: ServerKind) -> RunningServer {
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.proxy_protocol = kind.speaks_proxy_protocol();
    spec.proxy_protocol_trusted = vec!["127.0.0.1/32".into()];
    RunningServer::start(kind, spec)
}

fn uclient(server: SocketAddr, peer: &Peer) -> Uclient {
    Uclient::tcp_static(server, peer.addr, USER, PASSWORD)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(LOOPBACK), port)
}

fn tls_through_nginx_with_proxy_protocol(kind: ServerKind) {
    if !nginx_available() {
        return;
    }
    let peer = Peer::start();
    let server = server_behind_nginx(kind);
    let dir = TempDir::new("nginx-tls");
    let cert = nginx::self_signed_cert(dir.path());
    let tls = loopback(free_tcp_port());
    let conf = nginx::tls_terminator_conf(
        dir.path(),
        &cert,
        tls,
        server.addr,
        kind.speaks_proxy_protocol(),
    );
    let nginx = Nginx::start(&dir, &conf, &[tls]);

    let mut u = uclient(tls, &peer);
    u.tls = true;
    u.local = Some(CLIENT_IP);
    u.run_zero_loss();

    let seen = client_ports_seen_by_nginx(&nginx, CLIENT_IP);
    assert_real_clients_logged(&server, &seen);
}

fn two_hop_without_sni_is_turn_tcp(kind: ServerKind) {
    if !nginx_available() {
        return;
    }
    let peer = Peer::start();
    let server = server_behind_nginx(kind);
    let dir = TempDir::new("nginx-2hop");
    let cert = nginx::self_signed_cert(dir.path());
    let ports = TwoHopPorts {
        front: loopback(free_tcp_port()),
        sni_bridge: loopback(free_tcp_port()),
        relay_tcp: server.addr,
    };
    let conf = nginx::two_hop_conf(
        dir.path(),
        &cert,
        ports,
        kind.speaks_proxy_protocol(),
        false,
    );
    let nginx = Nginx::start(&dir, &conf, &[ports.front, ports.sni_bridge]);

    // Plain TURN-TCP on the shared port: no ClientHello, so no SNI: the default route.
    let mut u = uclient(ports.front, &peer);
    u.local = Some(CLIENT_IP);
    u.run_zero_loss();

    let seen = client_ports_seen_by_nginx(&nginx, CLIENT_IP);
    assert!(
        nginx
            .access_log()
            .lines()
            .filter(|l| l.starts_with("127.0.0.2:"))
            .all(|l| l.contains(&format!("-> {}", server.addr))),
        "the no-SNI route did not go straight to the relay:\n{}",
        nginx.access_log()
    );
    assert_real_clients_logged(&server, &seen);
}

fn two_hop_with_sni_is_turn_tls(kind: ServerKind) {
    two_hop_tls_route(kind, false);
}

/// The seed's remedy for the lost address: `set_real_ip_from unix:;` on the second hop
/// makes nginx send `PROXY TCP4 <client> unix:/path <port> 0`, not valid PROXY v1 (the
/// destination is no address). The relay should read the source and tolerate the rest.
#[test]
fn two_hop_with_set_real_ip_from_keeps_the_client_address() {
    run_on(ServerKind::Turnpike, |kind| two_hop_tls_route(kind, true));
}

/// The TLS route of the two-hop layout: uclient → SNI bridge (TLS with SNI `turns.test`,
/// from 127.0.0.4) → front (`ssl_preread`) → unix socket (TLS terminated) → relay.
fn two_hop_tls_route(kind: ServerKind, real_ip_from_unix: bool) {
    if !nginx_available() {
        return;
    }
    let peer = Peer::start();
    let server = server_behind_nginx(kind);
    let dir = TempDir::new("nginx-2hop-sni");
    let cert = nginx::self_signed_cert(dir.path());
    let ports = TwoHopPorts {
        front: loopback(free_tcp_port()),
        sni_bridge: loopback(free_tcp_port()),
        relay_tcp: server.addr,
    };
    let pp = kind.speaks_proxy_protocol();
    let conf = nginx::two_hop_conf(dir.path(), &cert, ports, pp, real_ip_from_unix);
    let nginx = Nginx::start(&dir, &conf, &[ports.front, ports.sni_bridge]);

    uclient(ports.sni_bridge, &peer).run_zero_loss();

    let log = nginx.access_log();
    let tls_hops = log
        .lines()
        .filter(|l| {
            l.contains(&format!("sni={}", nginx::TURNS_NAME))
                && l.contains(&format!("-> {}", server.addr))
        })
        .count();
    assert!(
        tls_hops >= 2,
        "expected a session per client through the TLS-terminating hop, nginx logged:\n{log}"
    );
    let routed = log
        .lines()
        .filter(|l| {
            l.contains(&format!("preread_sni={}", nginx::TURNS_NAME)) && l.contains("-> unix:")
        })
        .count();
    assert!(
        routed >= 2,
        "ssl_preread did not route the SNI sessions to the TLS hop:\n{log}"
    );

    let bridge: IpAddr = nginx::BRIDGE_SOURCE.parse().expect("an address");
    if real_ip_from_unix {
        // The client of the front is the bridge, from 127.0.0.4.
        let seen = client_ports_seen_by_nginx(&nginx, bridge);
        assert_real_clients_logged(&server, &seen);
    } else if server.kind.has_event_log() {
        // The client's address is lost on this route (nginx says UNKNOWN): the relay falls
        // back to the connection's own peer, nginx's second hop on 127.0.0.1.
        let created = wait_allocations(&server, 2);
        for e in &created {
            assert_eq!(e["transport"], "tcp", "{e}");
            let client: SocketAddr = e["client"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no client in {e}"));
            assert_eq!(
                client.ip(),
                IpAddr::V4(LOOPBACK),
                "PROXY UNKNOWN must fall back to the connection's address: {e}"
            );
        }
    }
}

/// The client addresses from `ip` that nginx logged for the sessions it proxied (nginx
/// writes a line when a session ends; uclient opens more connections than allocations).
fn client_ports_seen_by_nginx(nginx: &Nginx, ip: IpAddr) -> BTreeSet<SocketAddr> {
    let prefix = format!("{ip}:");
    let found = turnpike_tests::wait_until(Duration::from_secs(5), || {
        let seen: BTreeSet<SocketAddr> = nginx
            .access_log()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.split_whitespace().next().and_then(|a| a.parse().ok()))
            .collect();
        (!seen.is_empty()).then_some(seen)
    });
    found.unwrap_or_else(|| panic!("nginx logged no session from {ip}:\n{}", nginx.access_log()))
}

/// The server's allocations over TCP, at least `n` of them, from its event log.
fn wait_allocations(server: &RunningServer, n: usize) -> Vec<serde_json::Value> {
    let created = turnpike_tests::wait_until(Duration::from_secs(3), || {
        let v: Vec<_> = server
            .events()
            .into_iter()
            .filter(|e| e["event"] == "allocation_created")
            .collect();
        (v.len() >= n).then_some(v)
    });
    created.unwrap_or_else(|| {
        panic!(
            "fewer than {n} allocation_created records: {:#?}",
            server.events()
        )
    })
}

/// With an event log: the allocations of the run (at least one per uclient client) name
/// clients nginx really saw (address and port), never nginx's own
/// 127.0.0.1.
fn assert_real_clients_logged(server: &RunningServer, seen_by_nginx: &BTreeSet<SocketAddr>) {
    println!("nginx saw clients {seen_by_nginx:?}");
    if !server.kind.has_event_log() {
        return;
    }
    let created = wait_allocations(server, 2);
    let logged: BTreeSet<SocketAddr> = created
        .iter()
        .filter_map(|e| e["client"].as_str().and_then(|s| s.parse().ok()))
        .collect();
    println!("the relay logged clients {logged:?}");
    assert_eq!(
        logged.len(),
        created.len(),
        "every allocation must name its client: {created:#?}"
    );
    assert!(
        logged.is_subset(seen_by_nginx),
        "the event log must name the clients nginx saw, not nginx: {created:#?}"
    );
}
