//! Two event loops (`workers = 2`) in the real binary: clients over UDP and TCP land on
//! both loops (allocation ids carry the loop's index), with a credential the HTTP API
//! issued (its secret reaches loop 1 too); `/v1/allocations` lists both loops and
//! `/metrics` sums them; `DELETE` ends an allocation of loop 1; relaying works through
//! both loops (coturn's `turnutils_uclient`, when installed); SIGTERM stops both loops,
//! which record their open allocations, and the process exits 0 within a second.

use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use turnpike_tests::http::{self, sample};
use turnpike_tests::server::{turnpike_binary, Peer};
use turnpike_tests::turn::TurnClient;
use turnpike_tests::uclient::{Credentials, Uclient};
use turnpike_tests::{
    e2e_mandatory, find_tool, free_port_udp_tcp, reserve_udp_range, tail, wait_until, write_file,
    Child, PortRange, TempDir, LOOPBACK,
};

/// Bits of an allocation id below the loop index (`turnpike_core::node::ID_SHIFT`).
const ID_SHIFT: u32 = 44;
/// Clients per transport: all of them on one loop by chance is 2 in 2^16.
const CLIENTS: usize = 16;

struct Relay {
    child: Child,
    api: SocketAddr,
    turn: SocketAddr,
    events: PathBuf,
    _dir: TempDir,
    _ports: PortRange,
}

impl Relay {
    fn start() -> Option<Relay> {
        let bin = turnpike_binary()?;
        let dir = TempDir::new("workers");
        let port = free_port_udp_tcp();
        let ports = reserve_udp_range(512);
        let relay = ports.span();
        let events = dir.join("events.jsonl");
        let config = dir.join("turnpike.toml");
        write_file(
            &config,
            &format!(
                "realm = \"workers.test\"\nlisten_address = \"127.0.0.1\"\n\
                 turn_udp_port = {port}\nturn_tcp_listen_port = {port}\n\
                 relay_port_min = {}\nrelay_port_max = {}\nrelay_port_quarantine_ms = 500\n\
                 allow_loopback_peers = true\napi_listen = \"127.0.0.1:0\"\ndrain_timeout_s = 0\n\
                 static_auth_secret = \"not the issuance secret\"\n\
                 user_quota = 100\nevent_log = \"{}\"\nworkers = 2\n",
                relay.0,
                relay.1,
                events.display(),
            ),
        );
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config).env("RUST_LOG", "info");
        let mut child = Child::spawn("turnpike", cmd, dir.path());
        let api = wait_until(Duration::from_secs(10), || {
            child.assert_running();
            records(&events)
                .into_iter()
                .find(|r| r["event"] == "api")
                .and_then(|r| r["listen"].as_str()?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no API address in the event log:\n{}", child.log_text()));
        Some(Relay {
            child,
            api,
            turn: SocketAddr::new(IpAddr::V4(LOOPBACK), port),
            events,
            _dir: dir,
            _ports: ports,
        })
    }

    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        http(self.api, method, path, body).unwrap_or_else(|e| {
            panic!("{method} {path}: {e}\n{}", tail(&self.child.log_text(), 50))
        })
    }

    fn allocations(&self) -> Vec<Value> {
        let (status, text) = self.http("GET", "/v1/allocations", None);
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        v["allocations"].as_array().expect("a list").clone()
    }

    fn metrics(&self) -> String {
        let (status, text) = self.http("GET", "/metrics", None);
        assert_eq!(status, 200, "{text}");
        text
    }
}

/// Every record of the event log (each line must be whole JSON).
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: a broken line {l:?}")))
        .collect()
}

/// One HTTP/1.1 exchange, closing after it.
fn http(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(api).map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    http::exchange(&mut s, method, path, &body)
}

fn loop_of(a: &Value) -> u64 {
    a["id"].as_u64().expect("an id") >> ID_SHIFT
}

#[test]
fn two_loops_share_the_clients_the_api_and_the_stop() {
    let Some(mut relay) = Relay::start() else {
        return;
    };
    let start = records(&relay.events)
        .into_iter()
        .find(|r| r["event"] == "start")
        .expect("a start record");
    assert_eq!(start["loops"], 2, "{start}");

    // One issued credential, used by every client whichever loop the kernel picks.
    let (status, text) = relay.http("POST", "/v1/ice-servers", Some(&json!({"label": "w"})));
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let user = v["iceServers"][0]["username"].as_str().expect("username");
    let pass = v["iceServers"][0]["credential"]
        .as_str()
        .expect("credential");

    let mut clients = Vec::new();
    for n in 0..2 * CLIENTS {
        let mut c = if n % 2 == 0 {
            TurnClient::udp(relay.turn, user, pass).expect("a UDP socket")
        } else {
            TurnClient::tcp(relay.turn, IpAddr::V4(LOOPBACK), None, user, pass)
                .expect("a TCP connection")
        };
        let relayed = c
            .allocate()
            .unwrap_or_else(|e| panic!("client {n}: {e:?}\n{}", relay.child.log_text()));
        assert_eq!(relayed.ip(), IpAddr::V4(LOOPBACK));
        clients.push(c);
    }

    let list = relay.allocations();
    assert_eq!(list.len(), 2 * CLIENTS, "{list:?}");
    for lp in 0..2 {
        for transport in ["udp", "tcp"] {
            let n = list
                .iter()
                .filter(|a| loop_of(a) == lp && a["transport"] == transport)
                .count();
            assert!(n > 0, "no {transport} allocation on loop {lp}: {list:?}");
        }
    }
    // Each loop relays from its own slice of the ports.
    let ports = |lp: u64| -> Vec<u16> {
        list.iter()
            .filter(|a| loop_of(a) == lp)
            .map(|a| {
                let r: SocketAddr = a["relayed"][0]
                    .as_str()
                    .expect("relayed")
                    .parse()
                    .expect("addr");
                r.port()
            })
            .collect()
    };
    let (p0, p1) = (ports(0), ports(1));
    assert!(
        p0.iter().max() < p1.iter().min(),
        "loop 0 below loop 1: {p0:?} {p1:?}"
    );

    let m = relay.metrics();
    let expected = (2 * CLIENTS) as f64;
    assert_eq!(sample(&m, "turnpike_allocations"), Some(expected), "{m}");
    let on0 = sample(&m, "turnpike_loop_allocations{loop=\"0\"}").expect("loop 0 gauge");
    let on1 = sample(&m, "turnpike_loop_allocations{loop=\"1\"}").expect("loop 1 gauge");
    assert!(on0 > 0.0 && on1 > 0.0 && on0 + on1 == expected, "{m}");

    // DELETE reaches loop 1.
    let victim = list
        .iter()
        .find(|a| loop_of(a) == 1)
        .and_then(|a| a["id"].as_u64())
        .expect("an allocation on loop 1");
    let (status, text) = relay.http("DELETE", &format!("/v1/allocations/{victim}"), None);
    assert_eq!(status, 204, "{text}");
    let after = relay.allocations();
    assert_eq!(after.len(), 2 * CLIENTS - 1);
    assert!(after.iter().all(|a| a["id"].as_u64() != Some(victim)));
    let (status, _) = relay.http("DELETE", &format!("/v1/allocations/{victim}"), None);
    assert_eq!(status, 404);

    // Relaying through both loops, with real clients when coturn's tools are here.
    if find_tool("turnutils_uclient").is_some() && find_tool("turnutils_peer").is_some() {
        let peer = Peer::start();
        let creds = Credentials::Static {
            user: user.to_string(),
            password: pass.to_string(),
        };
        let mut udp = Uclient::new(relay.turn, peer.addr, creds.clone());
        udp.clients = 16;
        udp.no_rtcp = true;
        udp.messages = 20;
        udp.run_zero_loss();
        let mut tcp = Uclient::new(relay.turn, peer.addr, creds);
        tcp.tcp = true;
        tcp.clients = 16;
        tcp.no_rtcp = true;
        tcp.messages = 20;
        tcp.run_zero_loss();
        let m = relay.metrics();
        for lp in ["0", "1"] {
            let relayed = sample(
                &m,
                &format!("turnpike_loop_relayed_packets_total{{loop=\"{lp}\"}}"),
            )
            .unwrap_or(0.0);
            assert!(relayed > 0.0, "nothing relayed on loop {lp}:\n{m}");
        }
    } else if e2e_mandatory() {
        panic!("turnutils_uclient / turnutils_peer needed (TURNPIKE_E2E=1)");
    } else {
        eprintln!("SKIP: relaying through both loops needs turnutils_uclient and turnutils_peer");
    }

    let t0 = Instant::now();
    let status = relay.child.terminate(Duration::from_secs(5));
    let took = t0.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        relay.child.log_text()
    );
    assert!(took < Duration::from_millis(1500), "stopped in {took:?}");
    drop(clients);

    let recs = records(&relay.events);
    let stops: Vec<&Value> = recs.iter().filter(|r| r["event"] == "stop").collect();
    assert_eq!(stops.len(), 2, "one stop record per loop: {stops:?}");
    let open: u64 = stops.iter().filter_map(|r| r["allocations"].as_u64()).sum();
    let shutdown = recs
        .iter()
        .filter(|r| r["event"] == "allocation_deleted" && r["reason"] == "shutdown")
        .count();
    assert_eq!(open as usize, shutdown);
    assert!(
        shutdown >= 2 * CLIENTS - 1,
        "{shutdown} recorded at shutdown"
    );
}
