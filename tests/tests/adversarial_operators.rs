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
