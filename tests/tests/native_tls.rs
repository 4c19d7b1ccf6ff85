//! Native TLS: `turns:` served by the relay itself (rustls), without nginx.
//!
//! coturn's `turnutils_uclient -S` relays through it on a TLS port of its own and on the
//! port shared with plain TURN-TCP (where plain TURN-TCP still works); `openssl s_client
//! -alpn stun.turn` sees `stun.turn` chosen (RFC 7443), and a client offering no ALPN is
//! accepted; a handshake that never completes is closed within its time bound, and one
//! that sends too much before completing within its byte bound; TLS behind a PROXY header
//! (a load balancer passing TLS through) gets the client's address; a certificate that
//! cannot be read stops the start with the key, the line and the file.
//!
//! turnpike only: coturn's TLS listener (tried as a harness check) lost one of 100
//! messages of uclient's first TLS-1.2 run here, so it is no zero-loss reference.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use turnpike_tests::nginx::{self, Nginx};
use turnpike_tests::server::{turnpike_binary, Peer, TlsSpec};
use turnpike_tests::uclient::Uclient;
use turnpike_tests::{
    find_tool, free_tcp_port, require_tools, run_on, run_with_timeout, skip_or_fail, write_file,
    RunningServer, ServerKind, ServerSpec, TempDir, LOOPBACK,
};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";
/// The handshake bound of the relay (`turnpike::tls::HANDSHAKE_TIMEOUT`) and the
/// housekeeping tick that enforces it.
const HANDSHAKE_BOUND: Duration = Duration::from_secs(12);

/// A server with the static user and native TLS on its own port (`shared`: on the TCP
/// port), with a fresh self-signed certificate. The directory holds the certificate.
fn tls_server(
    kind: ServerKind,
    shared: bool,
    tune: impl FnOnce(&mut ServerSpec),
) -> (RunningServer, TempDir) {
    let dir = TempDir::new("native-tls");
    let cert = nginx::self_signed_cert(dir.path());
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.tls = Some(TlsSpec {
        cert: cert.cert,
        key: cert.key,
        port: (!shared).then(free_tcp_port),
    });
    tune(&mut spec);
    (RunningServer::start(kind, spec), dir)
}

fn uclient(server: SocketAddr, peer: &Peer) -> Uclient {
    Uclient::tcp_static(server, peer.addr, USER, PASSWORD)
}

fn tls_addr(server: &RunningServer) -> SocketAddr {
    server.tls_addr().expect("the server serves TLS")
}

#[test]
fn uclient_tls_on_its_own_port() {
    run_on(ServerKind::Turnpike, |kind| {
        if !require_tools(&["openssl"]) {
            return;
        }
        let peer = Peer::start();
        let (server, _dir) = tls_server(kind, false, |_| {});
        let mut u = uclient(tls_addr(&server), &peer);
        u.tls = true;
        u.run_zero_loss();
        // The event log says the allocations came over TLS.
        let created = server.wait_event(Duration::from_secs(3), |e| {
            e["event"] == "allocation_created" && e["transport"] == "tcp" && e["tls"] == true
        });
        assert!(
            created.is_some(),
            "no allocation_created with tls: {:#?}",
            server.events()
        );
    });
}

#[test]
fn uclient_tls_and_plain_tcp_on_the_shared_port() {
    run_on(ServerKind::Turnpike, |kind| {
        if !require_tools(&["openssl"]) {
            return;
        }
        let peer = Peer::start();
        let (server, _dir) = tls_server(kind, true, |_| {});
        assert_eq!(tls_addr(&server), server.addr);
        let mut u = uclient(server.addr, &peer);
        u.tls = true;
        u.run_zero_loss();
        // Plain TURN-TCP on the same port.
        let plain = uclient(server.addr, &peer);
        plain.run_zero_loss();
    });
}

/// `openssl s_client` against the relay's TLS port with `args`; its output.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let openssl = find_tool("openssl").expect("openssl (checked by the test)");
    let mut cmd = Command::new(openssl);
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::null());
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    out.combined()
}

#[test]
fn alpn_stun_turn_is_chosen_and_no_alpn_is_accepted() {
    run_on(ServerKind::Turnpike, |kind| {
        if !require_tools(&["openssl"]) {
            return;
        }
        let (server, _dir) = tls_server(kind, false, |_| {});
        let addr = tls_addr(&server);
        let with = s_client(addr, &["-alpn", "stun.turn"]);
        assert!(
            with.contains("ALPN protocol: stun.turn"),
            "ALPN stun.turn not chosen:\n{with}"
        );
        for version in ["-tls1_3", "-tls1_2"] {
            let without = s_client(addr, &[version]);
            assert!(
                without.contains("No ALPN negotiated") && without.contains("Cipher is"),
                "a handshake without ALPN ({version}) failed:\n{without}"
            );
            assert!(!without.contains("Cipher is (NONE)"), "{without}");
        }
    });
}

/// Reads from `s` until the peer closes (true) or `limit` passes (false).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn an_unfinished_handshake_is_closed_within_the_bound() {
    run_on(ServerKind::Turnpike, |kind| {
        if !require_tools(&["openssl"]) {
            return;
        }
        // The core's own idle bound is longer: the TLS bound must be what closes it.
        let (server, _dir) = tls_server(kind, false, |s| {
            s.extra.push(("stream_idle_timeout_s".into(), "60".into()));
        });
        let addr = tls_addr(&server);
        // The start of a ClientHello record, never finished.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .unwrap();
        let start = Instant::now();
        assert!(
            closed_within(&mut s, HANDSHAKE_BOUND + Duration::from_secs(3)),
            "a handshake left unfinished was not closed"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(9),
            "closed after {took:?}, before the handshake bound"
        );
        // A client that only connects is closed too.
        let mut idle = TcpStream::connect(addr).unwrap();
        assert!(closed_within(
            &mut idle,
            HANDSHAKE_BOUND + Duration::from_secs(3)
        ));
    });
}

#[test]
fn too_many_bytes_before_the_handshake_completes_close_the_stream() {
    run_on(ServerKind::Turnpike, |kind| {
        if !require_tools(&["openssl"]) {
            return;
        }
        let (server, _dir) = tls_server(kind, false, |_| {});
        let addr = tls_addr(&server);
        let mut s = TcpStream::connect(addr).unwrap();
        // A record header announcing 16 KiB, then 20 KiB: over the 16 KiB budget whatever
        // the session makes of it.
        let mut junk = vec![0x16, 0x03, 0x01, 0x40, 0x00];
        junk.extend(std::iter::repeat_n(0u8, 20 * 1024));
        let _ = s.write_all(&junk);
        assert!(
            closed_within(&mut s, Duration::from_secs(3)),
            "a client sending 20 KiB before its handshake completed was not closed"
        );
    });
}

#[test]
fn tls_behind_a_proxy_header_gets_the_client_address() {
    run_on(ServerKind::Turnpike, |kind| {
        if !require_tools(&["openssl", "nginx"]) {
            return;
        }
        if !nginx::has_stream_module() {
            skip_or_fail("nginx has no stream module (apt-get install libnginx-mod-stream)");
            return;
        }
        let peer = Peer::start();
        let (server, _dir) = tls_server(kind, false, |s| {
            s.proxy_protocol = true;
            s.proxy_protocol_trusted = vec!["127.0.0.1/32".into()];
        });
        let ndir = TempDir::new("nginx-passthrough");
        let front = SocketAddr::new(IpAddr::V4(LOOPBACK), free_tcp_port());
        let conf = nginx::passthrough_conf(ndir.path(), front, tls_addr(&server));
        let _nginx = Nginx::start(&ndir, &conf, &[front]);
        let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let mut u = uclient(front, &peer);
        u.tls = true;
        u.local = Some(client_ip);
        u.run_zero_loss();
        let created = server.wait_event(Duration::from_secs(3), |e| {
            e["event"] == "allocation_created"
        });
        let client = created
            .as_ref()
            .and_then(|e| e["client"].as_str())
            .and_then(|c| c.parse::<SocketAddr>().ok());
        assert_eq!(
            client.map(|c| c.ip()),
            Some(client_ip),
            "the relay did not take the client's address from the PROXY header: {created:?}"
        );
    });
}

#[test]
fn a_certificate_that_cannot_be_read_names_key_line_and_file() {
    let Some(bin) = turnpike_binary() else {
        skip_or_fail("the turnpike binary could not be built");
        return;
    };
    let dir = TempDir::new("native-tls-bad");
    let missing = dir.join("missing-cert.pem");
    let config = dir.join("turnpike.toml");
    write_file(
        &config,
        &format!(
            "users = {{ alice = \"pw\" }}\nturn_tls_listen_port = {}\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            free_tcp_port(),
            missing.display(),
            dir.join("key.pem").display()
        ),
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&config);
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(!out.success(), "started with a missing certificate");
    let text = out.combined();
    let want = format!("{}:3: key `tls_cert_file`", config.display());
    assert!(text.contains(&want), "no `{want}` in:\n{text}");
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("No such file"),
        "the message does not name the file and why:\n{text}"
    );
}
