//! The HTTP API of the real binary: issued ICE configurations used for real by coturn's
//! `turnutils_uclient` (UDP on the configuration's own dynamic port, and TCP), the
//! allocations seen in `/v1/allocations` and `/metrics` (checked by `promtool` when it is
//! installed), ended with `DELETE`; expired credentials refused; a credential issued for
//! one dynamic port refused on another; non-loopback API peers refused; a run recorded with
//! dynamic listeners and the issuance secret replays identically.

use serde_json::{json, Value};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use turnpike_tests::http::{self, sample};
use turnpike_tests::server::{loops_of_start, turnpike_binary, Peer};
use turnpike_tests::turn::{tcp_connect_from, TurnClient};
use turnpike_tests::uclient::{Credentials, Uclient};
use turnpike_tests::{
    default_loops, free_tcp_port, require_tools, reserve_udp_range, skip_or_fail, tail, wait_until,
    write_file, Child, PortRange, TempDir, LOOPBACK, PORTS_PER_LOOP,
};

/// A relay with `turn_udp_port = "dynamic"`, TCP, and the API on a free port.
struct Relay {
    child: Child,
    api: SocketAddr,
    tcp_port: u16,
    dynamic: (u16, u16),
    config: PathBuf,
    dir: TempDir,
    _ports: [PortRange; 2],
}

impl Relay {
    fn start(extra: &str) -> Option<Relay> {
        if !require_tools(&["turnutils_uclient", "turnutils_peer"]) {
            return None;
        }
        let bin = turnpike_binary()?;
        let dir = TempDir::new("api");
        let tcp_port = free_tcp_port();
        // A trace records one loop: a relay recording one is pinned to `workers = 1`.
        let loops = if extra.contains("workers = 1") {
            1
        } else {
            default_loops()
        };
        let relay_range = reserve_udp_range(PORTS_PER_LOOP * u16::try_from(loops).expect("loops"));
        let dynamic_range = reserve_udp_range(16);
        let (relay, dynamic) = (relay_range.span(), dynamic_range.span());
        let events = dir.join("events.jsonl");
        let config = dir.join("turnpike.toml");
        write_file(
            &config,
            &format!(
                "realm = \"api.test\"\nlisten_address = \"127.0.0.1\"\n\
                 turn_udp_port = \"dynamic\"\n\
                 turn_udp_dynamic_port_min = {}\nturn_udp_dynamic_port_max = {}\n\
                 turn_tcp_listen_port = {tcp_port}\n\
                 relay_port_min = {}\nrelay_port_max = {}\nrelay_port_quarantine_ms = 500\n\
                 drain_timeout_s = 0\n\
                 allow_loopback_peers = true\nissuance_secret = \"a test issuance secret\"\n\
                 event_log = \"{}\"\n{}\n",
                dynamic.0,
                dynamic.1,
                relay.0,
                relay.1,
                events.display(),
                extra.replace("{dir}", &dir.path().display().to_string())
            ),
        );
        if !extra.contains("api_listen") {
            let mut text = std::fs::read_to_string(&config).expect("the config just written");
            text.push_str("api_listen = \"127.0.0.1:0\"\n");
            write_file(&config, &text);
        }
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config).env("RUST_LOG", "info");
        let mut child = Child::spawn("turnpike", cmd, dir.path());
        let api = wait_until(Duration::from_secs(10), || {
            child.assert_running();
            api_addr(&events)
        })
        .unwrap_or_else(|| panic!("no API address in the event log:\n{}", child.log_text()));
        let running = records(&events)
            .iter()
            .find(|r| r["event"] == "start")
            .map(loops_of_start);
        assert_eq!(running, Some(loops as u64), "{}", child.log_text());
        let api = if api.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(LOOPBACK), api.port())
        } else {
            api
        };
        Some(Relay {
            child,
            api,
            tcp_port,
            dynamic,
            config,
            dir,
            _ports: [relay_range, dynamic_range],
        })
    }

    fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(LOOPBACK), self.tcp_port)
    }

    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        http(self.api, IpAddr::V4(LOOPBACK), method, path, body).unwrap_or_else(|e| {
            panic!("{method} {path}: {e}\n{}", tail(&self.child.log_text(), 50))
        })
    }

    fn issue(&self, body: &Value) -> Issued {
        let (status, text) = self.http("POST", "/v1/ice-servers", Some(body));
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["iceTransportPolicy"], "relay", "{v}");
        let server = &v["iceServers"][0];
        let urls: Vec<String> = server["urls"]
            .as_array()
            .expect("urls")
            .iter()
            .map(|u| u.as_str().expect("a string").to_string())
            .collect();
        Issued {
            urls,
            username: server["username"].as_str().expect("username").to_string(),
            credential: server["credential"]
                .as_str()
                .expect("credential")
                .to_string(),
        }
    }

    fn metrics(&self) -> String {
        let (status, text) = self.http("GET", "/metrics", None);
        assert_eq!(status, 200);
        text
    }
}

struct Issued {
    urls: Vec<String>,
    username: String,
    credential: String,
}

impl Issued {
    /// The UDP port written into the `turn:…?transport=udp` URL.
    fn udp_port(&self) -> u16 {
        let url = self
            .urls
            .iter()
            .find(|u| u.ends_with("?transport=udp"))
            .expect("a UDP URL");
        url.trim_end_matches("?transport=udp")
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    fn udp_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(LOOPBACK), self.udp_port())
    }
}

/// The API address from the event log's `api` record.
fn api_addr(events: &PathBuf) -> Option<SocketAddr> {
    records(events)
        .into_iter()
        .find(|r| r["event"] == "api")
        .and_then(|r| r["listen"].as_str()?.parse().ok())
}

/// The event log's records so far.
fn records(events: &PathBuf) -> Vec<Value> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// One HTTP/1.1 exchange from `local`, closing after it.
fn http(
    api: SocketAddr,
    local: IpAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let mut s = tcp_connect_from(local, api).map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    http::exchange(&mut s, method, path, &body)
}

#[test]
fn issued_configuration_relays_over_dynamic_udp_and_tcp() {
    let Some(relay) = Relay::start("") else {
        return;
    };
    let (status, body) = relay.http("GET", "/health", None);
    assert_eq!((status, body.trim()), (200, r#"{"status":"ok"}"#));

    let issued = relay.issue(&json!({"label": "user-42", "ttl": 120}));
    let port = issued.udp_port();
    assert!(
        (relay.dynamic.0..=relay.dynamic.1).contains(&port),
        "UDP port {port} from the dynamic range {:?}",
        relay.dynamic
    );
    assert_eq!(
        issued.urls,
        vec![
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{}?transport=tcp", relay.tcp_port),
        ]
    );
    assert!(issued.username.ends_with(":user-42"), "{}", issued.username);

    // Real relaying with the issued credential: UDP on its own port, and TCP.
    let peer = Peer::start();
    let creds = Credentials::Static {
        user: issued.username.clone(),
        password: issued.credential.clone(),
    };
    let mut udp = Uclient::new(issued.udp_addr(), peer.addr, creds.clone());
    udp.messages = 20;
    udp.run_zero_loss();
    let mut tcp = Uclient::new(relay.tcp_addr(), peer.addr, creds);
    tcp.messages = 20;
    tcp.tcp = true;
    tcp.run_zero_loss();
    let m = relay.metrics();
    for series in [
        "turnpike_relayed_packets_total{transport=\"udp\",direction=\"to_peer\"}",
        "turnpike_relayed_packets_total{transport=\"tcp\",direction=\"from_peer\"}",
    ] {
        assert!(sample(&m, series).unwrap_or(0.0) > 0.0, "{series}:\n{m}");
    }
    assert_eq!(sample(&m, "turnpike_ice_issued_total"), Some(1.0), "{m}");

    // An allocation held open: listed with its label, counted in /metrics, then deleted.
    let mut c = TurnClient::udp(issued.udp_addr(), &issued.username, &issued.credential)
        .expect("a UDP socket");
    let relayed = c.allocate().expect("Allocate with the issued credential");
    let (status, text) = relay.http("GET", "/v1/allocations", None);
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&text).expect("JSON");
    let mine: Vec<&Value> = list["allocations"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|a| a["relayed"][0] == relayed.to_string())
        .collect();
    assert_eq!(mine.len(), 1, "{list}");
    let a = mine[0];
    assert_eq!(a["transport"], "udp");
    assert_eq!(a["label"], "user-42");
    assert_eq!(a["username"], issued.username.as_str());
    assert_eq!(a["client"], c.local_addr().expect("bound").to_string());
    assert!(a["age_ms"].is_u64() && a["to_peer_bytes"].is_u64(), "{a}");
    let m = relay.metrics();
    assert!(
        sample(&m, "turnpike_allocations").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    promtool_check(&m);

    let id = a["id"].as_u64().expect("an id");
    let (status, _) = relay.http("DELETE", &format!("/v1/allocations/{id}"), None);
    assert_eq!(status, 204);
    let (status, text) = relay.http("DELETE", &format!("/v1/allocations/{id}"), None);
    assert_eq!(status, 404, "{text}");
    let (_, text) = relay.http("GET", "/v1/allocations", None);
    assert!(!text.contains(&relayed.to_string()), "{text}");
    // The allocation is gone for its client too (437 Allocation Mismatch).
    assert_eq!(c.refresh(600).err().and_then(|f| f.code()), Some(437));

    // Errors are JSON with a status.
    let (status, text) = relay.http("GET", "/nope", None);
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("JSON")["error"]["status"],
        404
    );
    let (status, _) = relay.http("POST", "/v1/ice-servers", Some(&json!({"ttl": 0})));
    assert_eq!(status, 400);
    let (status, _) = relay.http("GET", "/v1/ice-servers", None);
    assert_eq!(status, 405);
}

#[test]
fn expired_and_foreign_credentials_are_refused() {
    let Some(relay) = Relay::start("") else {
        return;
    };
    let a = relay.issue(&json!({}));
    let b = relay.issue(&json!({"ttl": 1}));
    assert_ne!(a.udp_port(), b.udp_port());

    // A's credential on B's port: refused (401), though valid.
    let mut c = TurnClient::udp(b.udp_addr(), &a.username, &a.credential).expect("socket");
    assert_eq!(c.allocate().err().and_then(|f| f.code()), Some(401));
    // On its own port, and on the shared TCP port (parallel attempts): accepted.
    let mut own = TurnClient::udp(a.udp_addr(), &a.username, &a.credential).expect("socket");
    own.allocate().expect("A on its own port");
    let mut over_tcp = TurnClient::tcp(
        relay.tcp_addr(),
        IpAddr::V4(LOOPBACK),
        None,
        &a.username,
        &a.credential,
    )
    .expect("a TCP connection");
    over_tcp.allocate().expect("A over TCP at the same time");

    // B expires: refused on its port and over TCP.
    std::thread::sleep(Duration::from_millis(2200));
    let mut late = TurnClient::udp(b.udp_addr(), &b.username, &b.credential).expect("socket");
    let late_code = late.allocate().err().and_then(|f| f.code());
    // Its port may already be closed (expired, no allocation): no answer at all then.
    assert!(
        late_code == Some(401) || late_code.is_none(),
        "expired credential got {late_code:?}"
    );
    let mut late_tcp = TurnClient::tcp(
        relay.tcp_addr(),
        IpAddr::V4(LOOPBACK),
        None,
        &b.username,
        &b.credential,
    )
    .expect("a TCP connection");
    assert_eq!(late_tcp.allocate().err().and_then(|f| f.code()), Some(401));
    // A's allocation, made while valid, lives on through Refresh.
    own.refresh(600).expect("Refresh of a live allocation");

    // B's port closes once expired and unused (checked once a second).
    let closed = wait_until(Duration::from_secs(5), || {
        let m = relay.metrics();
        (sample(&m, "turnpike_dynamic_udp_ports") == Some(1.0)).then_some(())
    });
    assert!(closed.is_some(), "{}", relay.metrics());
    let m = relay.metrics();
    assert!(
        sample(&m, "turnpike_unauthorized_total").unwrap_or(0.0) >= 2.0,
        "{m}"
    );
}

/// `promtool check metrics` on the exposition, when promtool is installed (Debian's
/// `prometheus` package); required under `TURNPIKE_E2E=1`.
fn promtool_check(metrics: &str) {
    let Some(promtool) = turnpike_tests::find_tool("promtool") else {
        skip_or_fail("promtool not found (apt-get install prometheus)");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A relay recording a trace while it issues a configuration over HTTP (a dynamic UDP
/// listener, reserved for the issued username, and credentials derived from the issuance
/// secret) and relays with it: the trace replays identically, the issuance secret taken
/// from the config file's `issuance_secret`.
#[test]
fn recorded_api_run_replays_identically() {
    let Some(mut relay) = Relay::start(
        "trace_file = \"{dir}/trace.bin\"\nworkers = 1\nnode_secret = \"api-trace-node-secret\"",
    ) else {
        return;
    };
    let issued = relay.issue(&json!({"label": "traced", "ttl": 120}));
    let peer = Peer::start();
    let creds = Credentials::Static {
        user: issued.username.clone(),
        password: issued.credential.clone(),
    };
    let mut udp = Uclient::new(issued.udp_addr(), peer.addr, creds);
    udp.messages = 10;
    udp.run_zero_loss();
    let st = relay.child.terminate(Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "SIGTERM: {st:?}");
    let trace = relay.dir.join("trace.bin");
    let report = turnpike_sim::trace::replay::replay(&trace, Some(&relay.config))
        .unwrap_or_else(|e| panic!("replay: {e}"));
    println!("{report}");
    assert!(
        matches!(
            report.outcome,
            turnpike_sim::trace::replay::Outcome::Identical
        ),
        "{report}\nrelay log:\n{}",
        relay.child.log_text()
    );
    assert!(report.unrecovered_credentials.is_empty(), "{report}");
    let mut dump = Vec::new();
    turnpike_sim::trace::dump::dump(&trace, &mut dump).expect("dump");
    let dump = String::from_utf8(dump).expect("UTF-8");
    for kind in ["listener_added", "listener_reserved", "rest_secret_added"] {
        assert!(dump.contains(kind), "no {kind} record:\n{dump}");
    }
    assert!(!dump.contains("a test issuance secret"));
}
