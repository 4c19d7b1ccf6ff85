//! What an operator (or a careless script) can do to a running relay from the same host:
//!
//! - start a second `turnpike` on the same configuration: it must fail at once, naming the
//!   address it could not have, and leave the first serving every client (with
//!   SO_REUSEPORT it used to join the first one's group and the kernel split the clients
//!   between the two);
//! - a second relay whose UDP port differs but whose TCP port is taken: refused the same
//!   way, naming the TCP address.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};
use turnpike_tests::adversary::{self, Reply, Session};
use turnpike_tests::server::turnpike_binary;
use turnpike_tests::turn;
use turnpike_tests::{free_udp_port, tail, write_file, Child, RunningServer};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Starts a second relay on `config`, waits (at most 10 s) for it to exit and returns its
/// exit code and what it printed. Fails the test if it keeps running.
fn second_instance(first: &RunningServer, config: &std::path::Path, name: &str) -> (i32, String) {
    let bin = turnpike_binary().expect("the turnpike binary (the first one started)");
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).env("RUST_LOG", "info");
    let mut second = Child::spawn(name, cmd, first.dir().path());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = second.exited() {
            return (st.code().unwrap_or(-1), second.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "a second turnpike on the same addresses is still running after 10 s; its log:\n{}",
            tail(&second.log_text(), 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first relay answers Binding requests from many source ports (the kernel's
/// SO_REUSEPORT spread is by source address and port: a second member would get some).
fn assert_serves_every_source(server: &mut RunningServer) {
    for _ in 0..16 {
        let mut s = Session::udp(server.addr, LOCAL);
        assert_eq!(s.raw(&turn::binding_request()), Reply::Success);
    }
    server.assert_running();
}

#[test]
fn a_second_instance_on_the_same_config_fails_naming_the_address() {
    let Some(mut server) = adversary::start(&[]) else {
        return;
    };
    let config = server.dir().join("turnpike.toml");
    let (code, log) = second_instance(&server, &config, "turnpike-second");
    assert_ne!(code, 0, "the second instance exited 0; its log:\n{log}");
    let want = format!("udp 127.0.0.1:{}", server.addr.port());
    assert!(
        log.contains(&want) && log.contains("another process holds it"),
        "the second instance does not name `{want}`; its log:\n{log}"
    );
    assert!(
        !log.contains("listening on"),
        "the second instance listened before failing; its log:\n{log}"
    );
    assert_serves_every_source(&mut server);
}

#[test]
fn a_second_instance_sharing_only_the_tcp_port_fails_naming_it() {
    let Some(mut server) = adversary::start(&[]) else {
        return;
    };
    let text = std::fs::read_to_string(server.dir().join("turnpike.toml")).expect("its config");
    let port = server.addr.port();
    let other_udp = free_udp_port();
    let changed: String = text
        .lines()
        .map(|l| {
            if l.starts_with("turn_udp_port") {
                format!("turn_udp_port = {other_udp}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let config = server.dir().join("second.toml");
    write_file(&config, &changed);
    let (code, log) = second_instance(&server, &config, "turnpike-second-tcp");
    assert_ne!(code, 0, "the second instance exited 0; its log:\n{log}");
    let want = format!("tcp 127.0.0.1:{port}");
    assert!(
        log.contains(&want),
        "the second instance does not name `{want}`; its log:\n{log}"
    );
    assert_serves_every_source(&mut server);
}

/// Sends one HTTP/1.1 request (with `Connection: close`) and returns the status, the
/// `WWW-Authenticate` header if any, and the body.
fn http(
    api: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (u16, Option<String>, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(api).expect("the API accepts");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let body = if method == "POST" { "{}" } else { "" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("request sent");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let www = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("www-authenticate")
            .then(|| v.trim().to_string())
    });
    (status, www, body.to_string())
}

/// The API's address, from the event log's `api` record.
fn api_addr(server: &RunningServer) -> std::net::SocketAddr {
    server.api_addr()
}

#[test]
fn a_file_without_api_listen_serves_no_api_even_with_port_3000_busy() {
    // Port 3000 taken (by this test, or already by someone else): the relay must not care.
    let _busy = std::net::TcpListener::bind("127.0.0.1:3000");
    let Some(mut server) = adversary::start_with(&[], |spec| spec.api = false) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    server.assert_running();
    assert!(
        !server.events().iter().any(|e| e["event"] == "api"),
        "an HTTP API was started from a file that does not ask for one"
    );
    let log = server.log_text();
    assert!(
        !log.contains("HTTP API"),
        "the log mentions an HTTP API:\n{log}"
    );
}

#[test]
fn the_api_token_guards_the_credential_and_delete_routes() {
    const TOKEN: &str = "e2e-token-0123456789abcdef";
    let dir = turnpike_tests::TempDir::new("api-token");
    let file = dir.join("api.token");
    write_file(&file, &format!("{TOKEN}\n"));
    let path = format!("\"{}\"", file.display());
    let Some(mut server) = adversary::start(&[("api_token_file", &path)]) else {
        return;
    };
    let api = api_addr(&server);
    let bearer = format!("Bearer {TOKEN}");
    for (method, path) in [
        ("POST", "/v1/ice-servers"),
        ("GET", "/v1/allocations"),
        ("DELETE", "/v1/allocations/1"),
    ] {
        for auth in [
            None,
            Some("Bearer not-the-token-0123456789"),
            Some("Basic ZTJlOnRva2Vu"),
        ] {
            let (status, www, body) = http(api, method, path, auth);
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {body}");
            assert!(
                www.as_deref().is_some_and(|w| w.starts_with("Bearer")),
                "{method} {path} with {auth:?}: WWW-Authenticate {www:?}"
            );
        }
    }
    let (status, _, body) = http(api, "POST", "/v1/ice-servers", Some(&bearer));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("iceServers"), "{body}");
    let (status, _, body) = http(api, "GET", "/v1/allocations", Some(&bearer));
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = http(api, "DELETE", "/v1/allocations/1", Some(&bearer));
    assert_eq!(status, 404);
    // Scrapers and probes need no token.
    assert_eq!(http(api, "GET", "/health", None).0, 200);
    assert_eq!(http(api, "GET", "/metrics", None).0, 200);
    // The token is never logged; no warning about an open API.
    server.assert_running();
    let log = server.log_text();
    assert!(!log.contains(TOKEN), "the token is in the log");
    assert!(!log.contains("has no api_token"), "{log}");
}

#[test]
fn an_api_without_a_token_is_warned_about() {
    let Some(server) = adversary::start(&[]) else {
        return;
    };
    let _ = api_addr(&server);
    let log = server.log_text();
    assert!(
        log.contains("has no api_token"),
        "no warning about an API without a token:\n{log}"
    );
}
