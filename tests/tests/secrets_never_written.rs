//! "Secrets are never written" (README, DESIGN.md "Traces"), checked on the binary: a node
//! of two loops with static users, a REST secret, the API's issuance secret and a node
//! secret records a trace under uclient traffic (UDP and TCP, RTCP on so EVEN-PORT
//! reservations are made); then every trace file, the captured log and the event log are
//! searched for each secret and each key derived from one (raw, hex, base64): none may be
//! there. The seed is logged and traced (it is not a secret): the test also checks that
//! the nonce key cannot be derived from it, by comparing a nonce the relay issued with
//! the one a key drawn from the seed (as the relay did before the node secret) signs.
//!
//! How it fails on a relay that derives its secrets from the seed: the nonce forged from
//! the logged seed equals the relay's own.

use base64::Engine as _;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use turnpike_core::auth::make_nonce;
use turnpike_core::secret::NodeSecret;
use turnpike_core::{Instant, Server};
use turnpike_sim::trace::replay::replay_node;
use turnpike_tests::server::{Peer, RunningServer, ServerKind, ServerSpec};
use turnpike_tests::turn::{self, Message};
use turnpike_tests::uclient::{Credentials, Uclient};
use turnpike_tests::{require_tools, TempDir};

const USER: &str = "alice";
const PASSWORD: &str = "alice-Pa55word-never-written";
const REST_SECRET: &str = "rest-secret-never-written-0123";
const ISSUANCE_SECRET: &str = "issuance-secret-never-written-4567";
const NODE_SECRET: &str = "node-secret-never-written-89ab";

/// Every spelling of `bytes` a log or a trace might hold.
fn spellings(bytes: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let e = base64::engine::general_purpose::STANDARD;
    let n = base64::engine::general_purpose::STANDARD_NO_PAD;
    let u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        bytes.to_vec(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
        e.encode(bytes).into_bytes(),
        n.encode(bytes).into_bytes(),
        u.encode(bytes).into_bytes(),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() >= 8 && hay.windows(needle.len()).any(|w| w == needle)
}

/// Sends an unauthenticated Allocate from a fresh socket and returns (our address, the
/// NONCE of the 401).
fn challenge(server: SocketAddr) -> (SocketAddr, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut req = Message::request(turn::ALLOCATE);
    req.add(turn::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    let bytes = req.encode(None, true);
    let mut buf = [0u8; 2048];
    for _ in 0..6 {
        sock.send_to(&bytes, server).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = Message::decode(&buf[..n]).unwrap();
            let nonce = m.attr(turn::NONCE).expect("a 401 with a NONCE");
            return (
                sock.local_addr().unwrap(),
                String::from_utf8(nonce.to_vec()).unwrap(),
            );
        }
    }
    panic!("no answer to an unauthenticated Allocate");
}

/// The issue time in a nonce (`[cookie features] ts:16 hex mac:24 hex`), and whether it
/// carries the security features.
fn nonce_time(nonce: &str) -> (Instant, bool) {
    let body = nonce.get(nonce.len() - 40..).expect("a nonce of ours");
    let ms = u64::from_str_radix(&body[..16], 16).expect("hex time");
    (Instant::from_millis(ms), nonce.len() > 40)
}

/// The 64-hex seed the relay logged at start.
fn logged_seed(log: &str) -> [u8; 32] {
    let at = log.find("; seed ").expect("the seed in the start line") + 7;
    let hex = log.get(at..at + 64).expect("64 hex digits");
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    seed
}

#[test]
fn no_secret_nor_derived_key_is_in_the_trace_or_the_logs() {
    if !require_tools(&["turnutils_uclient", "turnutils_peer"]) {
        return;
    }
    let traces = TempDir::new("secrets-trace");
    let trace = traces.join("trace.bin");
    let peer = Peer::start();
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.rest_secret = Some(REST_SECRET.into());
    spec.workers = Some(2);
    spec.tcp = true;
    let q = |s: &str| format!("\"{s}\"");
    spec.extra = vec![
        ("issuance_secret".into(), q(ISSUANCE_SECRET)),
        ("node_secret".into(), q(NODE_SECRET)),
        ("trace_file".into(), q(&trace.to_string_lossy())),
    ];
    let mut server = RunningServer::start(ServerKind::Turnpike, spec);

    // The nonce key is the node secret's, not the seed's.
    let (me, nonce) = challenge(server.addr);
    let (at, features) = nonce_time(&nonce);
    let seed = logged_seed(&server.log_text());
    let forged = make_nonce(&Server::nonce_key_of_seed(seed), me, at, features);
    assert_ne!(
        nonce, forged,
        "a nonce forged with a key drawn from the logged seed is the relay's own"
    );
    let node = NodeSecret::from_passphrase(NODE_SECRET.as_bytes());
    assert_eq!(nonce, make_nonce(&node.nonce_key(), me, at, features));

    for (tcp, creds) in [
        (
            false,
            Credentials::Static {
                user: USER.into(),
                password: PASSWORD.into(),
            },
        ),
        (
            true,
            Credentials::Rest {
                user: "bob".into(),
                secret: REST_SECRET.into(),
            },
        ),
    ] {
        let mut u = Uclient::new(server.addr, peer.addr, creds);
        u.clients = 4;
        u.messages = 10;
        u.tcp = tcp;
        let run = u.run();
        println!("uclient (tcp {tcp}): {:?}", run.summary());
    }
    let st = server.stop();
    assert!(st.is_some_and(|s| s.success()), "{st:?}");

    let mut files: Vec<(String, Vec<u8>)> = vec![("log".into(), server.log_text().into_bytes())];
    let events = server.dir().join("events.jsonl");
    files.push((
        "event log".into(),
        std::fs::read(&events).expect("an event log"),
    ));
    let mut trace_files = 0;
    for entry in std::fs::read_dir(traces.path()).unwrap() {
        let path = entry.unwrap().path();
        trace_files += 1;
        files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    assert!(trace_files >= 2, "one trace file per loop");

    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("the password".into(), PASSWORD.as_bytes().to_vec()),
        ("the REST secret".into(), REST_SECRET.as_bytes().to_vec()),
        (
            "the issuance secret".into(),
            ISSUANCE_SECRET.as_bytes().to_vec(),
        ),
        ("the node secret".into(), NODE_SECRET.as_bytes().to_vec()),
        ("the node secret's bytes".into(), node.0.to_vec()),
        ("the nonce key".into(), node.nonce_key().0.to_vec()),
        (
            "the long-term key".into(),
            turn::long_term_key(
                USER,
                &ServerSpec::static_user(USER, PASSWORD).realm,
                PASSWORD,
            ),
        ),
    ];
    // The per-loop keys, from each loop's seed (in the trace headers).
    for (name, bytes) in &files {
        if let Ok((h, _)) = turnpike_core::trace::open(bytes) {
            secrets.push((
                format!("the port seed of {name}"),
                node.port_seed(&h.seed).to_vec(),
            ));
            secrets.push((
                format!("the token seed of {name}"),
                node.token_seed(&h.seed).to_vec(),
            ));
            secrets.push((
                format!("the budget key of {name}"),
                node.budget_key(&h.seed).to_le_bytes().to_vec(),
            ));
            assert!(
                h.config.node_secret.is_some(),
                "{name}: no node secret fingerprint"
            );
        }
    }
    let mut found = Vec::new();
    for (what, secret) in &secrets {
        for s in spellings(secret) {
            for (name, bytes) in &files {
                if contains(bytes, &s) {
                    found.push(format!(
                        "{what} ({}) in {name}",
                        String::from_utf8_lossy(&s)
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "secrets written:\n{}", found.join("\n"));

    // Replay takes the node secret from the config file, and says so when it is missing.
    let config = server.dir().join("turnpike.toml");
    let report = replay_node(&trace, Some(&config)).unwrap_or_else(|e| panic!("replay: {e}"));
    assert!(report.is_identical(), "{report}");
    let text = std::fs::read_to_string(&config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("node_secret"))
        .map(|l| format!("{l}\n"))
        .collect();
    let bare = traces.join("no-node-secret.toml");
    std::fs::write(&bare, without).unwrap();
    let e = replay_node(&trace, Some(&bare)).unwrap_err().to_string();
    assert!(e.contains("node_secret"), "{e}");
}
