//! Headless Chromium relays data-channel messages through turnpike, each test in its own
//! network namespace (see `turnpike_tests::browser` for the isolation and the page): over
//! `turn:` UDP, `turn:` TCP, `turns:` through nginx (TLS terminated there, PROXY protocol
//! to the relay), with UDP to the relay blocked, and with a wrong password. One file, so
//! that they share one test binary and run in parallel.
//!
//! Native TLS (`turns:` served by the relay itself): the relay started with its TLS keys
//! in `RelayOptions::extra`, Chromium trusting the certificate's key, on a TLS port of its
//! own and on the port shared with plain TURN-TCP.

use turnpike_tests::browser::{BrowserNet, Expected, PageWaits, RelayOptions, PASSWORD};
use turnpike_tests::browser::{TLS_NAME, TURN_PORT};
use turnpike_tests::{nginx, require_tools, TempDir};

/// A call through `turn:...?transport=T` (the only URL given) is relayed over T.
fn plain_turn(tag: &str, transport: &str) {
    let Some(mut net) = BrowserNet::start(tag, &[], RelayOptions::default()) else {
        return;
    };
    let url = BrowserNet::turn_url(transport);
    let v = net.run_page(&[&url], PASSWORD, PageWaits::CONNECT);
    net.expect_relayed(
        &v,
        &Expected {
            relay_protocol: transport,
            url: &url,
            relay_transport: transport,
        },
    );
}

#[test]
fn turn_udp() {
    plain_turn("bu", "udp");
}

#[test]
fn turn_tcp() {
    plain_turn("bt", "tcp");
}

/// A call through `turns:` served by the relay itself on `port` (TURN_PORT: shared with
/// plain TURN-TCP) is relayed over TLS.
fn native_turns(tag: &str, port: u16) {
    if !require_tools(&["openssl"]) {
        return;
    }
    let certs = TempDir::new(&format!("browser-{tag}-cert"));
    let cert = nginx::self_signed_cert(certs.path());
    let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let opts = RelayOptions {
        extra: vec![
            ("turn_tls_listen_port".into(), port.to_string()),
            ("tls_cert_file".into(), path(&cert.cert)),
            ("tls_key_file".into(), path(&cert.key)),
        ],
        ..RelayOptions::default()
    };
    let Some(mut net) = BrowserNet::start(tag, &[], opts) else {
        return;
    };
    net.trust_tls_key(&cert.cert);
    let url = format!("turns:{TLS_NAME}:{port}?transport=tcp");
    let v = net.run_page(&[&url], PASSWORD, PageWaits::CONNECT);
    net.expect_relayed(
        &v,
        &Expected {
            relay_protocol: "tls",
            url: &url,
            relay_transport: "tcp",
        },
    );
}

#[test]
fn turns_native() {
    native_turns("bs", 5350);
}

#[test]
fn turns_native_on_the_shared_port() {
    native_turns("bx", TURN_PORT);
}

#[test]
fn turns_through_nginx() {
    let opts = RelayOptions {
        proxy_protocol: true,
        ..RelayOptions::default()
    };
    let Some(mut net) = BrowserNet::start("bn", &["nginx", "openssl"], opts) else {
        return;
    };
    let url = net.start_nginx_tls();
    let v = net.run_page(&[&url], PASSWORD, PageWaits::CONNECT);
    net.expect_relayed(
        &v,
        &Expected {
            relay_protocol: "tls",
            url: &url,
            relay_transport: "tcp",
        },
    );
}

#[test]
fn udp_blocked_falls_back_to_tcp() {
    let Some(mut net) = BrowserNet::start("bb", &["nft"], RelayOptions::default()) else {
        return;
    };
    net.block_udp(TURN_PORT);
    let udp = BrowserNet::turn_url("udp");
    let tcp = BrowserNet::turn_url("tcp");
    let v = net.run_page(&[&udp, &tcp], PASSWORD, PageWaits::CONNECT);
    net.expect_relayed(
        &v,
        &Expected {
            relay_protocol: "tcp",
            url: &tcp,
            relay_transport: "tcp",
        },
    );
    // Chromium did try UDP, and the rule is what stopped it.
    assert!(
        net.udp_dropped() > 0,
        "no UDP datagram to the relay was dropped"
    );
    let udp_allocations = net
        .events()
        .into_iter()
        .filter(|e| e["event"] == "allocation_created" && e["transport"] == "udp")
        .count();
    assert_eq!(udp_allocations, 0);
}

#[test]
fn wrong_password_gives_no_relay_candidate() {
    let Some(net) = BrowserNet::start("bw", &[], RelayOptions::default()) else {
        return;
    };
    let udp = BrowserNet::turn_url("udp");
    let tcp = BrowserNet::turn_url("tcp");
    let waits = PageWaits {
        connect: std::time::Duration::from_secs(4),
        ..PageWaits::CONNECT
    };
    let v = net.run_page(&[&udp, &tcp], "not-the-password", waits);
    net.expect_no_relay(&v, &[&udp, &tcp], 401);
}
