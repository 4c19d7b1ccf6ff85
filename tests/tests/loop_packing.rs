//! Packing (`pack_loops`, on by default): the event loops of an idle node, as many as the
//! CPUs by default, gather onto one thread within a few seconds, which `/metrics`
//! (`turnpike_loop_threads`) and the log say. Gathered, they relay as before: coturn's
//! uclient, its allocations spread over both loops by the kernel, loses nothing, and the
//! second loop's own thread runs no instruction meanwhile. A flood spreads them again at
//! once; a stop while gathered stops every loop. With `pack_loops = false` they never
//! gather.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};
use turnpike_tests::http::{self, sample};
use turnpike_tests::server::{turnpike_binary, Peer};
use turnpike_tests::uclient::{Credentials, Uclient};
use turnpike_tests::{free_port_udp_tcp, wait_until, write_file, Child, ServerKind, TempDir};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";
/// Relay ports of the node: two loops get one half each.
const RELAY_MIN: u16 = 50000;
const RELAY_MAX: u16 = 50999;

/// Nanoseconds each `loop-N` thread of process `pid` has run, by name
/// (`/proc/PID/task/TID/schedstat`, first field).
fn loop_run_ns(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let comm = comm.trim().to_string();
        if !comm.starts_with("loop-") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        if let Some(ns) = stat.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.push((comm, ns));
        }
    }
    out.sort();
    out
}

fn cpus_of_this_process() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Node {
    child: Child,
    addr: SocketAddr,
    api: SocketAddr,
    _dir: TempDir,
}

fn start(extra: &str) -> Option<Node> {
    let bin = turnpike_binary()?;
    let dir = TempDir::new("packing");
    let port = free_port_udp_tcp();
    let api_port = free_port_udp_tcp();
    let config = dir.join("turnpike.toml");
    write_file(
        &config,
        &format!(
            "realm = \"packing.test\"\nlisten_address = \"127.0.0.1\"\n\
             turn_udp_port = {port}\nturn_tcp_listen_port = {port}\n\
             relay_port_min = {RELAY_MIN}\nrelay_port_max = {RELAY_MAX}\n\
             allow_loopback_peers = true\nuser_quota = 100\n\
             api_listen = \"127.0.0.1:{api_port}\"\n{extra}\n[users]\n{USER} = \"{PASSWORD}\"\n"
        ),
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&config).env("RUST_LOG", "info");
    let child = Child::spawn("turnpike", cmd, dir.path());
    Some(Node {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        api: SocketAddr::from(([127, 0, 0, 1], api_port)),
        _dir: dir,
    })
}

fn metric(api: SocketAddr, series: &str) -> Option<f64> {
    let mut s = TcpStream::connect(api).ok()?;
    let (code, body) = http::exchange(&mut s, "GET", "/metrics", "").ok()?;
    (code == 200).then_some(())?;
    sample(&body, series)
}

/// Starts a node of `loops` loops (None: the default, one per CPU) and waits until its
/// loops have gathered onto one thread. None where this machine has one CPU (then the
/// default node has one loop and the gauge says packing is off, which is checked).
fn gathered_node(loops: Option<usize>) -> Option<Node> {
    let extra = loops.map(|n| format!("workers = {n}")).unwrap_or_default();
    let mut node = start(&extra)?;
    let pid = node.child.id();
    let want = loops.unwrap_or_else(cpus_of_this_process);
    if want < 2 {
        let m = wait_until(Duration::from_secs(10), || {
            metric(node.api, "turnpike_loop_threads")
        });
        assert_eq!(m, Some(0.0), "{}", node.child.log_text());
        return None;
    }
    wait_until(Duration::from_secs(10), || {
        node.child.assert_running();
        (loop_run_ns(pid).len() == want).then_some(())
    })
    .unwrap_or_else(|| panic!("{want} loops never started:\n{}", node.child.log_text()));
    // Within the three calm seconds the rule asks, plus ticks; at most four loops to a
    // thread.
    let threads = threads_gathered(want);
    let m = wait_until(Duration::from_secs(12), || {
        metric(node.api, "turnpike_loop_threads").filter(|v| *v == threads as f64)
    });
    assert_eq!(
        m,
        Some(threads as f64),
        "not gathered:\n{}",
        node.child.log_text()
    );
    assert!(
        node.child
            .log_text()
            .contains(&format!("event loops gathered onto {threads} thread")),
        "{}",
        node.child.log_text()
    );
    // The gauge says what was decided; the hosted loops' threads hand them over within
    // their next round. Settled when those threads stop running.
    let settled = wait_until(Duration::from_secs(5), || {
        let a = loop_run_ns(pid);
        std::thread::sleep(Duration::from_millis(300));
        let b = loop_run_ns(pid);
        a.iter()
            .zip(&b)
            .skip(threads)
            .all(|(x, y)| x.1 == y.1)
            .then_some(())
    });
    assert!(settled.is_some(), "hosted loops' threads still run");
    Some(node)
}

/// Threads an idle node of `loops` loops gathers onto: one per four loops.
fn threads_gathered(loops: usize) -> usize {
    loops.div_ceil(4)
}

/// Relayed ports the log names, by loop: below the middle of the range, loop 0's.
fn relayed_ports_by_loop(log: &str) -> (usize, usize) {
    // 1 000 ports, 500 per loop (the node splits the range evenly).
    let mid = RELAY_MIN + (RELAY_MAX - RELAY_MIN).div_ceil(2);
    let ports: Vec<u16> = log
        .lines()
        .filter(|l| l.contains("created: client"))
        .filter_map(|l| l.split("relayed 127.0.0.1:").nth(1))
        .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|p| p.parse().ok())
        .collect();
    (
        ports.iter().filter(|&&p| p < mid).count(),
        ports.iter().filter(|&&p| p >= mid).count(),
    )
}

#[test]
fn idle_loops_of_the_default_node_gather_onto_one_thread_and_relay_there() {
    if !ServerKind::Turnpike.available() {
        return;
    }
    let Some(mut node) = gathered_node(None) else {
        return;
    };
    let pid = node.child.id();
    let before = loop_run_ns(pid);
    let peer = Peer::start();
    let mut u = Uclient::new(
        node.addr,
        peer.addr,
        Credentials::Static {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    );
    // 8 clients and their RTCP allocations: 16 4-tuples, spread by the kernel over the
    // loops (all on one of two: 1 in 32 768).
    u.clients = 8;
    u.run_zero_loss();
    let after = loop_run_ns(pid);
    let log = node.child.log_text();
    let (on_0, on_1) = relayed_ports_by_loop(&log);
    assert!(
        on_0 > 0 && on_1 > 0,
        "allocations on loop 0: {on_0}, on loop 1: {on_1}\n{log}"
    );
    // Still gathered, and only the hosts' threads ran: the others' own threads wait for
    // their loop to come back.
    let threads = threads_gathered(cpus_of_this_process());
    assert_eq!(
        metric(node.api, "turnpike_loop_threads"),
        Some(threads as f64),
        "{log}"
    );
    let ran: Vec<(String, u64)> = after
        .iter()
        .map(|(n, a)| {
            let b = before.iter().find(|(m, _)| m == n).map_or(0, |x| x.1);
            (n.clone(), a.saturating_sub(b))
        })
        .collect();
    assert!(ran[0].1 > 0, "{ran:?}");
    assert!(
        ran[threads..].iter().all(|(_, ns)| *ns == 0),
        "a gathered loop's own thread ran: {ran:?}"
    );
    // A stop while gathered stops every loop, each on its own SIGTERM (the first drains,
    // the second stops), each recording what it had open.
    node.child.send_sigterm();
    std::thread::sleep(Duration::from_millis(300));
    node.child.send_sigterm();
    let status = node.child.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        node.child.log_text()
    );
    let log = node.child.log_text();
    let loops = cpus_of_this_process();
    for i in 0..loops {
        assert!(
            log.contains(&format!("SIGTERM (loop {i}): stopping with")),
            "loop {i} did not stop:\n{log}"
        );
    }
}

#[test]
fn a_flood_spreads_gathered_loops_at_once() {
    let Some(mut node) = gathered_node(Some(2)) else {
        return;
    };
    let pid = node.child.id();
    // Binding requests as fast as one socket sends them, bounded in count and time, until
    // the loops spread (a socket left with its read budget spent, or the thread full).
    let sock = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    sock.set_nonblocking(true).expect("non-blocking");
    let req = turnpike_tests::turn::binding_request();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut spread = false;
    while sent < 2_000_000 && started.elapsed() < Duration::from_secs(8) {
        for _ in 0..1000 {
            if sock.send_to(&req, node.addr).is_ok() {
                sent += 1;
            }
        }
        let mut buf = [0u8; 256];
        while sock.recv_from(&mut buf).is_ok() {}
        if node.child.log_text().contains("event loops spread") {
            spread = true;
            break;
        }
    }
    let log = node.child.log_text();
    assert!(spread, "not spread after {sent} datagrams:\n{log}");
    let m = wait_until(Duration::from_secs(3), || {
        metric(node.api, "turnpike_loop_threads").filter(|v| *v == 2.0)
    });
    assert_eq!(m, Some(2.0), "{log}");
    // Back on its own thread, the second loop runs there again: its thread wakes at
    // least for its once-a-second tick.
    let before = loop_run_ns(pid);
    let ran = wait_until(Duration::from_secs(4), || {
        let after = loop_run_ns(pid);
        (after.get(1)?.1 > before.get(1)?.1).then_some(())
    });
    assert!(ran.is_some(), "loop 1's thread did not run again\n{log}");
    node.child.assert_running();
}

#[test]
fn pack_loops_false_never_gathers() {
    let Some(mut node) = start("workers = 2\npack_loops = false\n") else {
        return;
    };
    let pid = node.child.id();
    wait_until(Duration::from_secs(10), || {
        node.child.assert_running();
        (loop_run_ns(pid).len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("2 loops never started:\n{}", node.child.log_text()));
    // Longer than gathering would take.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(metric(node.api, "turnpike_loop_threads"), Some(0.0));
    assert!(!node.child.log_text().contains("event loops gathered"));
    // Each loop's own thread runs its once-a-second tick.
    let before = loop_run_ns(pid);
    std::thread::sleep(Duration::from_millis(2500));
    let after = loop_run_ns(pid);
    assert!(
        after.iter().zip(&before).all(|(a, b)| a.1 > b.1),
        "{before:?} {after:?}"
    );
}
