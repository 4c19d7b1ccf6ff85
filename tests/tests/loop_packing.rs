//! Packing (`pack_loops`, on by default): the event loops of an idle node, as many as the
//! CPUs by default, are confined to one CPU within a few seconds, which `/metrics`
//! (`turnpike_loop_cpus`) and the log say; with `pack_loops = false` they stay spread.
//! Relaying through packed loops is what every other multi-loop test does once its relay
//! has been up three seconds.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;
use turnpike_tests::http::{self, sample};
use turnpike_tests::server::turnpike_binary;
use turnpike_tests::{free_port_udp_tcp, wait_until, write_file, Child, TempDir};

/// The CPUs each `loop-N` thread of process `pid` may run on, as the kernel lists them.
fn loop_cpus(pid: u32) -> Vec<(String, String)> {
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
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        if let Some(l) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            out.push((comm, l.trim().to_string()));
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
             api_listen = \"127.0.0.1:{api_port}\"\nstatic_auth_secret = \"s3cret-s3cret\"\n{extra}"
        ),
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&config).env("RUST_LOG", "info");
    let child = Child::spawn("turnpike", cmd, dir.path());
    Some(Node {
        child,
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

#[test]
fn idle_loops_of_the_default_node_pack_onto_one_cpu() {
    let Some(mut node) = start("") else {
        return;
    };
    let pid = node.child.id();
    let cpus = cpus_of_this_process();
    if cpus < 2 {
        // One loop on one CPU: nothing to pack, and the gauge says packing is off.
        let m = wait_until(Duration::from_secs(10), || {
            metric(node.api, "turnpike_loop_cpus")
        });
        assert_eq!(m, Some(0.0), "{}", node.child.log_text());
        return;
    }
    // The default: one loop per CPU.
    let spread = wait_until(Duration::from_secs(10), || {
        node.child.assert_running();
        let l = loop_cpus(pid);
        (l.len() == cpus).then_some(l)
    })
    .unwrap_or_else(|| panic!("{cpus} loops never started:\n{}", node.child.log_text()));
    // Packed within the three calm seconds the rule asks, plus ticks.
    let packed = wait_until(Duration::from_secs(10), || {
        let l = loop_cpus(pid);
        let one_cpu = l.iter().all(|(_, c)| c.parse::<usize>().is_ok());
        let same = l.windows(2).all(|w| w[0].1 == w[1].1);
        (l.len() == cpus && one_cpu && same).then_some(l)
    })
    .unwrap_or_else(|| {
        panic!(
            "idle loops not packed onto one CPU: {:?} (at start {spread:?})\n{}",
            loop_cpus(pid),
            node.child.log_text()
        )
    });
    let m = wait_until(Duration::from_secs(5), || {
        metric(node.api, "turnpike_loop_cpus").filter(|v| *v == 1.0)
    });
    assert_eq!(m, Some(1.0), "packed {packed:?}");
    assert!(
        node.child
            .log_text()
            .contains(&format!("event loops packed onto CPU {}", packed[0].1)),
        "{}",
        node.child.log_text()
    );
}

#[test]
fn pack_loops_false_leaves_the_loops_spread() {
    let Some(mut node) = start("workers = 2\npack_loops = false\n") else {
        return;
    };
    let pid = node.child.id();
    let at_start = wait_until(Duration::from_secs(10), || {
        node.child.assert_running();
        let l = loop_cpus(pid);
        (l.len() == 2).then_some(l)
    })
    .unwrap_or_else(|| panic!("2 loops never started:\n{}", node.child.log_text()));
    // Longer than packing would take.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(loop_cpus(pid), at_start);
    assert_eq!(metric(node.api, "turnpike_loop_cpus"), Some(0.0));
    assert!(!node.child.log_text().contains("event loops packed"));
}
