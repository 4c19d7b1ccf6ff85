//! Traces recorded by the real relay replay exactly in the simulator.
//!
//! - `recorded_runs_replay_identically`: the `turnpike` binary on loopback with recording
//!   on, driven by `turnutils_uclient` over UDP and TCP (payloads masked), and a second one
//!   whose TCP listener expects PROXY headers, reached through a small in-test forwarder
//!   that prepends `PROXY TCP4` (payloads recorded in full); both stopped with SIGTERM and
//!   replayed through the simulator's `replay`: identical outputs, checkpoint for
//!   checkpoint.
//! - `committed_trace_replays_forever`: `tests/data/trace-v1.bin`, recorded by format
//!   version 1, must replay identically (or fail with the clear version message once the
//!   format changes on purpose). `TURNPIKE_WRITE_TRACE_FIXTURE=1` regenerates it.
//! - `torn_trace_replays_to_the_last_whole_record`.
//! - `a_node_of_two_loops_replays_loop_by_loop`: the binary with `workers = 2` records one
//!   trace per event loop (`trace.bin`, `trace.bin.loop1`) under uclient with RTCP (so
//!   EVEN-PORT pairs and reservation tokens, and allocations of one user, land on both
//!   loops); `turnpike-sim replay` replays each loop against a fresh core, identically.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;
use turnpike_sim::trace::replay::{replay, replay_node, Outcome};
use turnpike_tests::server::{turnpike_binary, turnpike_config, Peer, ServerSpec};
use turnpike_tests::trace_fixture;
use turnpike_tests::uclient::{Credentials, Uclient};
use turnpike_tests::{
    free_port_udp_tcp, require_tools, reserve_udp_range, wait_for_tcp, wait_for_udp, Child,
    PortRange, TempDir,
};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";

/// A relay recording a trace, with the config file that has its secrets.
struct Recording {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
    trace: PathBuf,
    _dir: TempDir,
    _ports: PortRange,
}

fn start_recording(spec: &ServerSpec, label: &str, extra: &str) -> Option<Recording> {
    start_recording_ports(spec, label, extra, 64)
}

/// [`start_recording`] with `relay_ports` relay ports.
fn start_recording_ports(
    spec: &ServerSpec,
    label: &str,
    extra: &str,
    relay_ports: u16,
) -> Option<Recording> {
    let bin = turnpike_binary()?;
    let dir = TempDir::new(label);
    let port = free_port_udp_tcp();
    let ports = reserve_udp_range(relay_ports);
    let relay = ports.span();
    let trace = dir.join("trace.bin");
    let config = dir.join("turnpike.toml");
    // One loop unless the test asks for more (64 relay ports leave room for one): say so,
    // rather than leave the relay to fall back.
    let spec = &ServerSpec {
        workers: spec.workers.or(Some(1)),
        ..spec.clone()
    };
    let mut text = turnpike_config(spec, port, relay, &dir.join("events.jsonl"));
    // Without it the relay draws its secret at random and the trace cannot be replayed.
    text.push_str("node_secret = \"trace-replay-node-secret\"\n");
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(&config)
        .arg("--record-trace")
        .arg(&trace)
        .env("RUST_LOG", "info");
    let mut child = Child::spawn(label, cmd, dir.path());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let probe = turnpike_tests::turn::binding_request();
    let mut ready = false;
    for _ in 0..50 {
        child.assert_running();
        if wait_for_udp(addr, &probe, Duration::from_millis(200)).is_ok()
            && wait_for_tcp(addr, Duration::from_millis(200)).is_ok()
        {
            ready = true;
            break;
        }
    }
    assert!(ready, "the relay did not start:\n{}", child.log_text());
    Some(Recording {
        child,
        addr,
        config,
        trace,
        _dir: dir,
        _ports: ports,
    })
}

fn stop_and_replay(mut r: Recording) {
    let st = r.child.terminate(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.success()),
        "SIGTERM: {st:?}\n{}",
        r.child.log_text()
    );
    let report = replay(&r.trace, Some(&r.config)).unwrap_or_else(|e| panic!("replay: {e}"));
    println!("{report}");
    assert!(
        matches!(report.outcome, Outcome::Identical),
        "{report}\nrelay log:\n{}",
        r.child.log_text()
    );
    assert!(report.inputs > 100, "{report}");
    assert!(report.checkpoints > 50, "{report}");
}

/// Accepts connections on `listen` and forwards each to `upstream` after a PROXY v1 header
/// naming the real client; bounded to `max` connections.
fn proxy_v1(max: usize, upstream: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for conn in l.incoming().take(max) {
            let Ok(down) = conn else { continue };
            let Ok(mut up) = TcpStream::connect(upstream) else {
                continue;
            };
            let (c, p) = (down.peer_addr().unwrap(), down.local_addr().unwrap());
            let header = format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                c.ip(),
                p.ip(),
                c.port(),
                p.port()
            );
            if up.write_all(header.as_bytes()).is_err() {
                continue;
            }
            let pipe = |mut a: TcpStream, mut b: TcpStream| {
                thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = a.read(&mut buf) {
                        if n == 0 || b.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = b.shutdown(std::net::Shutdown::Both);
                });
            };
            pipe(down.try_clone().unwrap(), up.try_clone().unwrap());
            pipe(up, down);
        }
    });
    addr
}

#[test]
fn recorded_runs_replay_identically() {
    if !require_tools(&["turnutils_uclient", "turnutils_peer"]) {
        return;
    }
    let peer = Peer::start();
    let alice = || Credentials::Static {
        user: USER.into(),
        password: PASSWORD.into(),
    };

    // UDP and TCP, relayed payloads masked (the default).
    let spec = ServerSpec::static_user(USER, PASSWORD);
    let Some(rec) = start_recording(&spec, "trace-plain", "") else {
        return;
    };
    let mut u = Uclient::new(rec.addr, peer.addr, alice());
    u.messages = 30;
    u.run_zero_loss();
    u.tcp = true;
    u.send_indications = true;
    u.run_zero_loss();
    stop_and_replay(rec);

    // TCP through a PROXY v1 hop, payloads in full.
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.proxy_protocol = true;
    let Some(rec) = start_recording(&spec, "trace-proxy", "trace_payloads = true\n") else {
        return;
    };
    let front = proxy_v1(16, rec.addr);
    let mut u = Uclient::new(front, peer.addr, alice());
    u.messages = 30;
    u.tcp = true;
    u.run_zero_loss();
    let log = rec.child.log_text();
    stop_and_replay(rec);
    assert!(!log.contains("panicked"), "{log}");
}

/// A drain (SIGTERM) and the 300 answers of the drain replay: the trace holds the drain
/// and the alternate servers of the configuration.
#[test]
fn a_drain_and_its_redirects_replay() {
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.drain_timeout_s = 60;
    let alt = "alternate_servers = [{ address = \"127.0.0.2\", turn_port = 3478 }]\n";
    let Some(rec) = start_recording(&spec, "trace-drain", alt) else {
        return;
    };
    let mut held = turnpike_tests::turn::TurnClient::udp(rec.addr, USER, PASSWORD).unwrap();
    held.allocate().expect("an allocation before the drain");
    rec.child.send_sigterm();
    let draining = turnpike_tests::wait_until(Duration::from_secs(5), || {
        rec.child.log_text().contains("draining").then_some(())
    });
    assert!(draining.is_some(), "{}", rec.child.log_text());
    let mut late = turnpike_tests::turn::TurnClient::udp(rec.addr, USER, PASSWORD).unwrap();
    let refused = late.allocate().expect_err("a redirect");
    assert_eq!(refused.code(), Some(300), "{refused:?}");
    held.refresh(600).expect("a Refresh while draining");
    // The second SIGTERM stops at once.
    let mut rec = rec;
    let st = rec.child.terminate(Duration::from_secs(5));
    assert!(st.is_some_and(|s| s.success()), "SIGTERM: {st:?}");
    let bytes = std::fs::read(&rec.trace).unwrap();
    let (header, reader) = turnpike_core::trace::open(&bytes).unwrap();
    assert_eq!(
        header.config.alternate_servers.len(),
        2,
        "UDP and TCP listeners"
    );
    let drains = reader
        .filter(|r| {
            matches!(
                r,
                Ok(turnpike_core::trace::Record::Input(
                    turnpike_core::trace::Input::Drain { .. }
                ))
            )
        })
        .count();
    assert_eq!(drains, 1);
    let report = replay(&rec.trace, Some(&rec.config)).unwrap_or_else(|e| panic!("replay: {e}"));
    println!("{report}");
    assert!(matches!(report.outcome, Outcome::Identical), "{report}");
}

#[test]
fn a_node_of_two_loops_replays_loop_by_loop() {
    use turnpike_core::trace::{loop_path, open, Input, Record};
    if !require_tools(&["turnutils_uclient", "turnutils_peer"]) {
        return;
    }
    let peer = Peer::start();
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    // A quota makes every allocation of `alice` count at her home loop.
    spec.user_quota = Some(100);
    spec.workers = Some(2);
    // 128 relay ports: 64 per loop, the least a loop is given.
    let Some(mut rec) = start_recording_ports(&spec, "trace-loops", "", 128) else {
        return;
    };
    let mut u = Uclient::new(
        rec.addr,
        peer.addr,
        Credentials::Static {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    );
    // RTCP on (no `-c`): each client allocates an EVEN-PORT pair and redeems its
    // RESERVATION-TOKEN from another socket, which the kernel may hand to the other loop.
    // Whether uclient succeeds is not this test's business (tests/workers.rs checks that
    // a node serves it); that the trace reproduces what the node did, 508s included, is.
    // Then a run without RTCP (`-c`), which a node serves without any message between
    // loops, so that both loops relay plenty whatever the RTCP runs did.
    u.clients = 6;
    u.messages = 20;
    for (tcp, no_rtcp) in [(false, false), (true, false), (false, true)] {
        (u.tcp, u.no_rtcp) = (tcp, no_rtcp);
        let run = u.run();
        println!("uclient (tcp {tcp}, -c {no_rtcp}): {:?}", run.summary());
    }
    let st = rec.child.terminate(Duration::from_secs(5));
    let log = rec.child.log_text();
    assert!(st.is_some_and(|s| s.success()), "SIGTERM: {st:?}\n{log}");
    assert!(log.contains("2 event loops"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!loop_path(&rec.trace, 2).exists());

    let report =
        replay_node(&rec.trace, Some(&rec.config)).unwrap_or_else(|e| panic!("replay: {e}"));
    println!("{report}");
    assert_eq!(report.loops.len(), 2, "{report}");
    assert!(report.is_identical(), "{report}\nrelay log:\n{log}");
    for (i, l) in report.loops.iter().enumerate() {
        assert_eq!(l.place.index as usize, i);
        assert_eq!(l.place.count, 2);
        // Clients spread over both loops (the kernel hashes their 4-tuples).
        assert!(l.inputs > 50, "loop {i} saw almost nothing:\n{report}");
        assert!(l.checkpoints > 20, "{report}");
    }
    // Replaying from loop 1's file finds loop 0's: the same verdict. Loop 1's file alone
    // replays too (its inputs are all in it).
    let again = replay_node(&loop_path(&rec.trace, 1), Some(&rec.config)).unwrap();
    assert!(again.is_identical(), "{again}");
    let one = replay(&loop_path(&rec.trace, 1), Some(&rec.config)).unwrap();
    assert!(matches!(one.outcome, Outcome::Identical), "{one}");
    // Loop 0's file without loop 1's is not the whole node: said so, by name.
    let lone = TempDir::new("trace-loops-lone");
    std::fs::copy(&rec.trace, lone.join("trace.bin")).unwrap();
    let e = replay_node(&lone.join("trace.bin"), Some(&rec.config))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trace.bin.loop1") && e.contains("missing"),
        "{e}"
    );

    // The messages each loop received are in its own file. Cores told they are in a node
    // (Config::node, recorded in the header) exchange them for the user's quota at home
    // and for reservation tokens; a runtime that has not wired loop messages yet tells
    // each core it is alone, and none are sent.
    let mut messages = 0;
    let mut told_node = false;
    for i in 0..2 {
        let bytes = std::fs::read(loop_path(&rec.trace, i)).unwrap();
        let (h, reader) = open(&bytes).unwrap();
        assert_eq!((h.place.index, h.place.count), (i, 2));
        told_node |= h.config.node.count > 1;
        messages += reader
            .filter(|r| matches!(r, Ok(Record::Input(Input::LoopMessage { .. }))))
            .count();
    }
    println!("loop messages recorded: {messages} (cores told they are in a node: {told_node})");
    if told_node {
        assert!(messages > 0, "{report}");
    }
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/trace-v1.bin")
}

#[test]
fn committed_trace_replays_forever() {
    let path = fixture_path();
    if std::env::var_os("TURNPIKE_WRITE_TRACE_FIXTURE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, trace_fixture::record()).unwrap();
    }
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/trace-v1.toml");
    match replay(&path, Some(&config)) {
        Ok(report) => {
            println!("{report}");
            assert!(matches!(report.outcome, Outcome::Identical), "{report}");
            assert!(report.inputs >= 20, "{report}");
        }
        Err(e) => {
            // The one acceptable failure: the format changed on purpose.
            let msg = e.to_string();
            assert!(
                msg.contains("trace format version 1 not supported (this build reads"),
                "{msg}"
            );
        }
    }
    // The generator is deterministic: today's recording is the committed one.
    assert_eq!(
        trace_fixture::record(),
        std::fs::read(&path).unwrap(),
        "the fixture generator changed: if on purpose, bump the format version"
    );
}

#[test]
fn torn_trace_replays_to_the_last_whole_record() {
    let bytes = trace_fixture::record();
    let dir = TempDir::new("torn");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/trace-v1.toml");
    let whole = {
        let p = dir.join("whole.bin");
        std::fs::write(&p, &bytes).unwrap();
        replay(&p, Some(&config)).unwrap()
    };
    // Cut 3 bytes into the last record, and in the middle of it.
    for cut in [bytes.len() - 3, bytes.len() - 9] {
        let p = dir.join("torn.bin");
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let r = replay(&p, Some(&config)).unwrap();
        let text = r.to_string();
        println!("{text}");
        assert!(text.contains("torn record"), "{text}");
        assert!(matches!(r.outcome, Outcome::Identical), "{text}");
        assert_eq!(r.records, whole.records - 1);
    }
    // A wrong password is refused by name, before anything runs.
    let wrong = dir.join("wrong.toml");
    std::fs::write(&wrong, "[users]\nalice = \"nope\"\n").unwrap();
    let p = dir.join("whole.bin");
    let e = replay(&p, Some(&wrong)).unwrap_err().to_string();
    assert!(e.contains("user `alice`"), "{e}");
}

#[test]
fn a_divergence_is_reported_at_its_checkpoint() {
    use turnpike_core::trace::{encode_header, encode_record, open, Record};
    let bytes = trace_fixture::record();
    let (h, reader) = open(&bytes).unwrap();
    let mut out = Vec::new();
    encode_header(&h, &mut out);
    let mut target = None;
    for (i, rec) in reader.enumerate() {
        let mut rec = rec.unwrap();
        if let Record::Outputs { digest, .. } = &mut rec {
            if i > 20 && target.is_none() {
                *digest ^= 1;
                target = Some(i as u64);
            }
        }
        encode_record(&rec, &mut out);
    }
    let dir = TempDir::new("diverge");
    let p = dir.join("t.bin");
    std::fs::write(&p, &out).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/trace-v1.toml");
    let r = replay(&p, Some(&config)).unwrap();
    let text = r.to_string();
    println!("{text}");
    match &r.outcome {
        Outcome::Diverged(d) => {
            assert_eq!(Some(d.record), target, "{text}");
            assert!(d.input.is_some() && !d.context.is_empty(), "{text}");
            assert_eq!(d.expected.2 ^ 1, d.got.2, "{text}");
        }
        _ => panic!("{text}"),
    }
    assert!(text.contains("DIVERGED at record"), "{text}");
}

#[test]
fn dump_and_to_scenario_read_the_committed_trace() {
    use turnpike_sim::trace::dump::dump;
    use turnpike_sim::trace::secrets_from_config;
    use turnpike_sim::trace::to_scenario::{run_script, to_scenario};
    let path = fixture_path();
    let mut out = Vec::new();
    let summary = dump(&path, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as u64,
        summary.records + 2,
        "header + records + end"
    );
    assert_eq!(lines[0]["header"]["config"]["users"][0], "alice");
    assert_eq!(lines[1]["kind"], "wall_clock");
    assert_eq!(lines.last().unwrap()["end"], "clean");
    assert!(!text.contains("correct-horse"));

    let script = to_scenario(&path, "fixture").unwrap();
    assert!(script.contains("kind = \"trace-script\""), "{script}");
    assert!(script.contains("input = \"stream_data\""), "{script}");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/trace-v1.toml");
    let secrets = secrets_from_config(Some(&config)).unwrap();
    let rep = run_script(&script, &secrets).unwrap();
    assert_eq!(rep.allocations_created, 2, "{rep:?}");
    assert!(rep.answers >= 10, "{rep:?}");
}

/// A node whose cores exchange messages (the user's quota at her home loop, borrowed
/// quota), recorded in memory loop by loop as the runtime records: every loop replays
/// identically, fed the messages it received.
#[test]
fn a_node_whose_loops_exchange_messages_replays_loop_by_loop() {
    use turnpike_core::trace::{loop_path, open, Input, Record};
    let files = trace_fixture::record_node();
    let dir = TempDir::new("trace-node");
    let base = dir.join("trace.bin");
    let mut messages = Vec::new();
    for (i, bytes) in files.iter().enumerate() {
        std::fs::write(loop_path(&base, i as u16), bytes).unwrap();
        let (_, reader) = open(bytes).unwrap();
        messages.push(
            reader
                .filter(|r| matches!(r, Ok(Record::Input(Input::LoopMessage { .. }))))
                .count(),
        );
    }
    assert!(
        messages.iter().all(|&n| n > 0),
        "messages received per loop: {messages:?}"
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/trace-v1.toml");
    let report = replay_node(&base, Some(&config)).unwrap();
    println!("{report}\nmessages received per loop: {messages:?}");
    assert!(report.is_identical(), "{report}");
    assert_eq!(report.loops.len(), 2);
    // The generator is deterministic.
    assert_eq!(trace_fixture::record_node(), files);

    // A message left out of loop 1's file: its replay diverges, loop 0's does not.
    let (h, reader) = open(&files[1]).unwrap();
    let mut cut = Vec::new();
    turnpike_core::trace::encode_header(&h, &mut cut);
    let mut dropped = false;
    for rec in reader {
        let rec = rec.unwrap();
        if !dropped && matches!(rec, Record::Input(Input::LoopMessage { .. })) {
            dropped = true;
            continue;
        }
        turnpike_core::trace::encode_record(&rec, &mut cut);
    }
    std::fs::write(loop_path(&base, 1), &cut).unwrap();
    let report = replay_node(&base, Some(&config)).unwrap();
    println!("{report}");
    assert!(report.loops[0].is_identical(), "{report}");
    assert!(
        matches!(report.loops[1].outcome, Outcome::Diverged(_)),
        "{report}"
    );
    assert!(report.to_string().contains("NOT"), "{report}");
}

#[test]
fn dump_shows_loop_messages_and_the_loop() {
    use turnpike_core::node::{LoopId, LoopMsg, NodePlace};
    use turnpike_core::trace::{encode_header, encode_record, open, Input, Record};
    use turnpike_sim::trace::dump::dump;
    let bytes = trace_fixture::record();
    let (mut h, reader) = open(&bytes).unwrap();
    h.place = NodePlace { index: 1, count: 2 };
    let mut out = Vec::new();
    encode_header(&h, &mut out);
    encode_record(
        &Record::Input(Input::LoopMessage {
            now: h.start,
            from: LoopId(0),
            msg: LoopMsg::RedeemToken {
                req: 3,
                token: [0, 1, 2, 3, 4, 5, 6, 7],
            },
        }),
        &mut out,
    );
    for rec in reader {
        encode_record(&rec.unwrap(), &mut out);
    }
    let dir = TempDir::new("dump-loops");
    let p = dir.join("t.bin.loop1");
    std::fs::write(&p, &out).unwrap();
    let mut text = Vec::new();
    dump(&p, &mut text).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["header"]["format_version"],
        turnpike_core::trace::FORMAT_VERSION
    );
    assert_eq!(lines[0]["header"]["loop"]["index"], 1);
    assert_eq!(lines[0]["header"]["loop"]["count"], 2);
    assert_eq!(lines[1]["kind"], "loop_message");
    assert_eq!(lines[1]["from"], 0);
    assert_eq!(lines[1]["msg"]["type"], "redeem_token");
    assert_eq!(lines[1]["msg"]["token"], "0001020304050607");
}

/// The cost of recording: relayed ChannelData per second through the relay, with and
/// without a trace (payloads masked). Not a CI test: run it by hand on an otherwise idle
/// machine with a release build, e.g.
/// `TURNPIKE_BIN=target/release/turnpike cargo test -p turnpike-tests --release --test
/// trace_replay relay_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn relay_throughput_with_and_without_recording() {
    for round in 0..2 {
        for label in ["without recording", "with recording"] {
            let spec = ServerSpec::static_user(USER, PASSWORD);
            let rec = if label == "with recording" {
                start_recording(&spec, "tput-rec", "")
            } else {
                start_plain(&spec, "tput-plain")
            };
            let Some(rec) = rec else { return };
            let (pps, lost) = blast(rec.addr, 200_000, 200);
            let size = std::fs::metadata(&rec.trace).map(|m| m.len()).unwrap_or(0);
            println!(
                "round {round}: {label}: {pps:.0} packets/s relayed ({:.1} Mbit/s of payload), {lost} lost, trace {size} bytes",
                pps * 200.0 * 8.0 / 1e6
            );
            drop(rec);
        }
    }
}

/// Like `start_recording` without the trace flag.
fn start_plain(spec: &ServerSpec, label: &str) -> Option<Recording> {
    let bin = turnpike_binary()?;
    let dir = TempDir::new(label);
    let port = free_port_udp_tcp();
    let ports = reserve_udp_range(64);
    let relay = ports.span();
    let config = dir.join("turnpike.toml");
    // One loop, as the recording relay runs, so that the two compare.
    let spec = &ServerSpec {
        workers: Some(1),
        ..spec.clone()
    };
    std::fs::write(
        &config,
        turnpike_config(spec, port, relay, &dir.join("events.jsonl")),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&config).env("RUST_LOG", "warn");
    let mut child = Child::spawn(label, cmd, dir.path());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let probe = turnpike_tests::turn::binding_request();
    for _ in 0..50 {
        child.assert_running();
        if wait_for_udp(addr, &probe, Duration::from_millis(200)).is_ok() {
            break;
        }
    }
    Some(Recording {
        child,
        addr,
        config,
        trace: dir.join("none"),
        _dir: dir,
        _ports: ports,
    })
}

/// Allocates with the core's client, binds a channel to a local peer socket, then sends
/// `count` ChannelData packets of `len` bytes as fast as the socket takes them; returns
/// packets per second received by the peer (first to last) and how many were lost.
fn blast(server: SocketAddr, count: u64, len: usize) -> (f64, u64) {
    use std::net::UdpSocket;
    use std::time::Instant as StdInstant;
    use turnpike_core::client::{Client, ClientConfig, ClientEvent};
    use turnpike_core::{Instant, Transport};
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let t0 = StdInstant::now();
    let now = || Instant::from_nanos(t0.elapsed().as_nanos() as u64);
    let mut c = Client::new(
        ClientConfig::new(server, Transport::Udp, USER, PASSWORD),
        [3; 32],
        now(),
    );
    c.allocate(now());
    let mut buf = vec![0u8; 2048];
    let mut step = 0;
    let mut channel = None;
    let deadline = StdInstant::now() + Duration::from_secs(10);
    while channel.is_none() && StdInstant::now() < deadline {
        while let Some(t) = c.poll_transmit() {
            sock.send(&t).unwrap();
        }
        if let Ok(n) = sock.recv(&mut buf) {
            c.handle_input(now(), &buf[..n]);
        }
        c.handle_timeout(now());
        while let Some(ev) = c.poll_event() {
            match (step, ev) {
                (0, ClientEvent::Allocated { .. }) => {
                    step = 1;
                    c.channel_bind(now(), peer_addr);
                }
                (1, ClientEvent::ChannelBound { .. }) => channel = c.channel_for(peer_addr),
                _ => {}
            }
        }
    }
    let ch = channel.expect("a channel bound within 10 s");
    let receiver = thread::spawn(move || {
        peer.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut b = vec![0u8; 2048];
        let (mut n, mut first, mut last) = (0u64, None, StdInstant::now());
        while peer.recv(&mut b).is_ok() {
            n += 1;
            last = StdInstant::now();
            first.get_or_insert(last);
        }
        (n, first.map(|f| last.duration_since(f)))
    });
    let mut pkt = vec![0xABu8; 4 + len];
    pkt[..2].copy_from_slice(&ch.to_be_bytes());
    pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    for i in 0..count {
        // A short pause now and then, so the kernel buffers (not the relay) are not the
        // bottleneck of the measurement.
        while sock.send(&pkt).is_err() {}
        if i % 64 == 63 {
            thread::sleep(Duration::from_micros(200));
        }
    }
    let (got, span) = receiver.join().unwrap();
    let secs = span.map_or(f64::NAN, |d| d.as_secs_f64());
    (got as f64 / secs, count - got)
}
