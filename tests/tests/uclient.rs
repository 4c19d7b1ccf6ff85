//! coturn's `turnutils_uclient` through the relay to `turnutils_peer` on loopback: over UDP
//! and TCP, with channels and with Send indications, with a static user and with TURN REST
//! credentials. Every run is bounded (50 messages from each of 2 clients, plus their RTCP
//! allocations) and must lose nothing. Wrong passwords and expired REST usernames must be
//! refused.
//!
//! Each test runs against turnpike and against coturn (`name::turnpike`, `name::coturn`);
//! `TURNPIKE_E2E_SERVER=coturn` runs only the latter.

use std::time::Duration;
use turnpike_tests::server::Peer;
use turnpike_tests::uclient::{Credentials, Uclient};
use turnpike_tests::{
    per_server, rest_password, rest_username, unix_now_s, RunningServer, ServerKind, ServerSpec,
};

per_server!(
    udp_channels_static_user,
    udp_send_indications_static_user,
    tcp_channels_static_user,
    tcp_send_indications_static_user,
    udp_channels_rest_credentials,
    tcp_send_indications_rest_credentials,
    wrong_password_is_refused,
    unknown_user_is_refused,
    expired_rest_username_is_refused,
    stunclient_learns_its_reflexive_address,
);

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";
const SECRET: &str = "rest-shared-secret";

fn alice() -> Credentials {
    Credentials::Static {
        user: USER.into(),
        password: PASSWORD.into(),
    }
}

/// Starts a server with the static user and a peer, runs uclient as `tune` says and
/// asserts zero loss.
fn relay_static(kind: ServerKind, tune: impl FnOnce(&mut Uclient)) {
    let peer = Peer::start();
    let server = RunningServer::start(kind, ServerSpec::static_user(USER, PASSWORD));
    let mut u = Uclient::new(server.addr, peer.addr, alice());
    tune(&mut u);
    u.run_zero_loss();
    assert_allocations_logged(&server, if u.tcp { "tcp" } else { "udp" });
}

/// On a server with an event log, the allocations uclient made are there, with the
/// transport they came over.
fn assert_allocations_logged(server: &RunningServer, transport: &str) {
    if !server.kind.has_event_log() {
        return;
    }
    let found = server.wait_event(Duration::from_secs(3), |e| {
        e["event"] == "allocation_created" && e["transport"] == transport
    });
    assert!(
        found.is_some(),
        "no allocation_created over {transport} in the event log: {:#?}",
        server.events()
    );
}

fn udp_channels_static_user(kind: ServerKind) {
    relay_static(kind, |_| {});
}

fn udp_send_indications_static_user(kind: ServerKind) {
    relay_static(kind, |u| u.send_indications = true);
}

fn tcp_channels_static_user(kind: ServerKind) {
    relay_static(kind, |u| u.tcp = true);
}

fn tcp_send_indications_static_user(kind: ServerKind) {
    relay_static(kind, |u| {
        u.tcp = true;
        u.send_indications = true;
    });
}

fn udp_channels_rest_credentials(kind: ServerKind) {
    let peer = Peer::start();
    let server = RunningServer::start(kind, ServerSpec::rest(SECRET));
    // uclient makes `<now + a day>:bob` and its HMAC password itself.
    let u = Uclient::new(
        server.addr,
        peer.addr,
        Credentials::Rest {
            user: "bob".into(),
            secret: SECRET.into(),
        },
    );
    u.run_zero_loss();
    assert_allocations_logged(&server, "udp");
}

fn tcp_send_indications_rest_credentials(kind: ServerKind) {
    let peer = Peer::start();
    let server = RunningServer::start(kind, ServerSpec::rest(SECRET));
    // A username made here, valid for ten minutes, with the password computed here.
    let user = rest_username("carol", unix_now_s() + 600);
    let password = rest_password(SECRET, &user);
    let mut u = Uclient::new(
        server.addr,
        peer.addr,
        Credentials::Static { user, password },
    );
    u.tcp = true;
    u.send_indications = true;
    u.run_zero_loss();
    assert_allocations_logged(&server, "tcp");
}

/// A bounded negative run: one client, a few messages, no RTCP.
fn refused(kind: ServerKind, spec: ServerSpec, credentials: Credentials, reason: &str) {
    let peer = Peer::start();
    let mut server = RunningServer::start(kind, spec);
    let mut u = Uclient::new(server.addr, peer.addr, credentials);
    u.clients = 1;
    u.messages = 5;
    u.no_rtcp = true;
    u.timeout = Duration::from_secs(20);
    let run = u.run();
    run.assert_allocation_refused();
    println!(
        "uclient refused as expected in {:?}: {}",
        run.output.elapsed,
        run.output.combined().lines().last().unwrap_or("")
    );
    server.assert_running();
    if server.kind.has_event_log() {
        let found = server.wait_event(Duration::from_secs(3), |e| {
            e["event"] == "auth_failed" && e["reason"] == reason
        });
        assert!(
            found.is_some(),
            "no auth_failed ({reason}) in the event log: {:#?}",
            server.events()
        );
        assert!(
            !server
                .events()
                .iter()
                .any(|e| e["event"] == "allocation_created"),
            "an allocation was created with bad credentials: {:#?}",
            server.events()
        );
    }
}

fn wrong_password_is_refused(kind: ServerKind) {
    let creds = Credentials::Static {
        user: USER.into(),
        password: "wrong-password".into(),
    };
    refused(
        kind,
        ServerSpec::static_user(USER, PASSWORD),
        creds,
        "bad_integrity",
    );
}

fn unknown_user_is_refused(kind: ServerKind) {
    let creds = Credentials::Static {
        user: "mallory".into(),
        password: PASSWORD.into(),
    };
    refused(
        kind,
        ServerSpec::static_user(USER, PASSWORD),
        creds,
        "unknown_user",
    );
}

fn expired_rest_username_is_refused(kind: ServerKind) {
    // Expired an hour ago; the password is right for that username.
    let user = rest_username("dave", unix_now_s() - 3600);
    let password = rest_password(SECRET, &user);
    refused(
        kind,
        ServerSpec::rest(SECRET),
        Credentials::Static { user, password },
        "expired",
    );
}

/// coturn's `turnutils_stunclient` from 127.0.0.3: the Binding answer (RFC 8489 §7.3)
/// carries the client's own address.
fn stunclient_learns_its_reflexive_address(kind: ServerKind) {
    let Some(stunclient) = turnpike_tests::require_tool("turnutils_stunclient") else {
        return;
    };
    let server = RunningServer::start(kind, ServerSpec::static_user(USER, PASSWORD));
    let mut cmd = std::process::Command::new(stunclient);
    cmd.args([
        "-L",
        "127.0.0.3",
        "-p",
        &server.addr.port().to_string(),
        "127.0.0.1",
    ]);
    let out = turnpike_tests::run_with_timeout(cmd, Duration::from_secs(10));
    let text = out.combined();
    println!(
        "turnutils_stunclient: {}",
        text.lines().next().unwrap_or("")
    );
    assert!(
        out.success(),
        "turnutils_stunclient failed\n{}",
        out.report()
    );
    assert!(
        text.contains("UDP reflexive addr: 127.0.0.3:"),
        "the reflexive address must be the client's own\n{}",
        out.report()
    );
}

/// The harness itself: a run whose echoes never come back (no peer listening) must not
/// pass for a clean one. Checked against coturn, the reference server.
#[test]
fn harness_detects_a_lossy_run() {
    turnpike_tests::run_on(ServerKind::Coturn, |kind| {
        let server = RunningServer::start(kind, ServerSpec::static_user(USER, PASSWORD));
        let nobody = std::net::SocketAddr::from(([127, 0, 0, 1], turnpike_tests::free_udp_port()));
        let mut u = Uclient::new(server.addr, nobody, alice());
        u.clients = 1;
        u.messages = 5;
        u.no_rtcp = true;
        u.timeout = Duration::from_secs(20);
        let run = u.run();
        match run.summary() {
            Ok(s) => {
                println!("lossy run detected: {s}");
                assert!(
                    s.recv_msgs < s.sent_msgs && s.lost_packets > 0,
                    "a run to nowhere looked clean: {s}"
                );
                let problems = run.zero_loss_problems(&s);
                assert!(
                    !problems.is_empty(),
                    "the zero-loss check accepted a lossy run: {s}"
                );
                println!("the zero-loss check says: {}", problems.join("; "));
            }
            Err(e) => println!(
                "lossy run detected (no summary): {}",
                e.lines().next().unwrap_or("")
            ),
        }
    })
}
