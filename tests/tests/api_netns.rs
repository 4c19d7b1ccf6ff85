//! `api_loopback_address_only` against a real peer that is not on loopback.
//!
//! The relay runs inside a network namespace this test creates, with a veth pair whose
//! two ends (10.231.0.1 and 10.231.0.2) live in that namespace too: the API sees a
//! non-loopback peer, and no packet ever leaves the namespace.

use std::path::Path;
use std::time::{Duration, Instant};
use turnpike_tests::netns::Netns;
use turnpike_tests::server::turnpike_binary;
use turnpike_tests::{require_tools, run_with_timeout, skip_or_fail, write_file, Child, TempDir};

const API_PORT: u16 = 13000;
const INSIDE: &str = "10.231.0.1";
const OTHER: &str = "10.231.0.2";

/// A network namespace with `lo` and a veth pair whose two ends, `INSIDE` and `OTHER`,
/// both live in it; deleted on drop.
fn netns() -> Option<Netns> {
    let ns = Netns::create("api")?;
    match ns.add_veth_pair(("va", "10.231.0.1/24"), ("vb", Some("10.231.0.2/24"))) {
        Ok(()) => Some(ns),
        Err(e) => {
            skip_or_fail(&format!("cannot set up a network namespace: {e}"));
            None
        }
    }
}

/// GETs `path` from the API at `INSIDE:API_PORT`, connecting from `source`, inside the
/// namespace. Returns the status code, or None when the connection was refused or reset.
fn get(ns: &Netns, source: &str, path: &str) -> Option<(u16, String)> {
    const CLIENT: &str = r#"
import socket, sys
src, dst, port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.socket()
s.settimeout(5)
s.bind((src, 0))
try:
    s.connect((dst, port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path).encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
except OSError as e:
    print("NO-ANSWER", e)
    sys.exit(0)
sys.stdout.write(data.decode(errors="replace"))
"#;
    let mut cmd = ns.exec(Path::new("python3"));
    cmd.args(["-c", CLIENT, source, INSIDE, &API_PORT.to_string(), path]);
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    let text = out.stdout;
    let code = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((code, text))
}

fn refused_total(ns: &Netns) -> Option<f64> {
    let (_, body) = get(ns, "127.0.0.1", "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix("turnpike_api_refused_peers_total "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn api_refuses_non_loopback_peers() {
    if !require_tools(&["ip", "python3"]) {
        return;
    }
    let Some(bin) = turnpike_binary() else { return };
    for loopback_only in [true, false] {
        let Some(ns) = netns() else {
            return;
        };
        let dir = TempDir::new("api-netns");
        let config = dir.join("turnpike.toml");
        write_file(
            &config,
            &format!(
                "realm = \"api.test\"\nlisten_address = \"127.0.0.1\"\n\
                 turn_udp_port = 3478\nturn_tcp_listen_port = 3478\n\
                 relay_port_min = 40000\nrelay_port_max = 40100\ndrain_timeout_s = 0\n\
                 static_auth_secret = \"s\"\n\
                 api_listen = \"0.0.0.0:{API_PORT}\"\napi_loopback_address_only = {loopback_only}\n"
            ),
        );
        let mut cmd = ns.exec(&bin);
        cmd.arg("--config").arg(&config);
        let mut relay = Child::spawn("turnpike", cmd, dir.path());
        let started = Instant::now();
        while get(&ns, "127.0.0.1", "/health").map(|r| r.0) != Some(200) {
            relay.assert_running();
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the API never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let from_other = get(&ns, OTHER, "/health");
        if loopback_only {
            // Answered 403 and closed: the client sees the 403, or a reset if the socket
            // closed before its request was read.
            assert!(
                matches!(from_other, None | Some((403, _))),
                "from {OTHER}: {from_other:?}"
            );
            assert_eq!(refused_total(&ns), Some(1.0));
        } else {
            assert_eq!(from_other.map(|r| r.0), Some(200), "from {OTHER}");
            assert_eq!(refused_total(&ns), Some(0.0));
        }
        relay.terminate(Duration::from_secs(2));
    }
}
