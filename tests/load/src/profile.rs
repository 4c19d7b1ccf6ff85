//! `turnpike-load profile --relay turnpike|turnpike-one|coturn --shape tcp`: where a
//! relay's CPU goes at one load shape. The relay runs the shape for `--seconds`, and
//! `perf record` samples it for the middle `--record` seconds; then the CPU time per
//! relayed packet is split between the kernel and the relay's own code, and the kernel's
//! part among the operations that cost it (sends with the delivery they trigger on
//! loopback, receives, readiness waits, pauses).
//! The CPU time per packet is the whole shape's; the shares are the sampled middle's
//! (the middle, so that neither the start nor the end of the shape is in them).
//!
//! This answers "why is the ratio what it is": a relay whose kernel time per packet alone
//! exceeds a target's budget cannot meet it by changing its own code.

use crate::compare::{echo_any, report, Options};
use crate::flows::Mode;
use crate::procfs;
use crate::scenarios::Session;
use crate::servers::{self, Kind, Layout};
use crate::shapes::{Shape, SETTLE};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Kernel functions that mark an operation, with what to call it. Their shares overlap:
/// on loopback a send runs the receiver's delivery too (`net_rx_action` is inside the
/// sends), and waking the receiver is part of the delivery.
const MARKERS: [(&str, &str); 10] = [
    ("TCP sends (with the delivery they run)", "tcp_sendmsg"),
    ("UDP sends (with the delivery they run)", "udp_sendmsg"),
    (
        "  of the sends: delivery to the receiver (softirq)",
        "net_rx_action",
    ),
    ("  of the sends: waking the receiver", "sock_def_readable"),
    ("TCP receives", "tcp_recvmsg"),
    ("UDP receives", "udp_recvmsg"),
    (
        "io_uring submissions (the sends and receives above)",
        "io_submit_sqes",
    ),
    ("readiness (epoll_wait)", "do_epoll_wait"),
    ("pauses (nanosleep)", "hrtimer_nanosleep"),
    ("context switches", "finish_task_switch.isra.0"),
];

/// Profiles `relay` (turnpike, turnpike-one or coturn) at `shape`.
pub fn run(o: &Options, relay: &str, shape: Shape, record: Duration) -> Result<(), String> {
    let (kind, layout) = match relay {
        "turnpike" => (Kind::Turnpike, o.layout.clone()),
        "turnpike-one" => (
            Kind::Turnpike,
            Layout {
                workers: Some(1),
                ..o.layout.clone()
            },
        ),
        "coturn" => (Kind::Coturn, o.layout.clone()),
        _ => {
            return Err(format!(
                "--relay: turnpike, turnpike-one or coturn, not {relay}"
            ))
        }
    };
    let record = record.min(o.duration);
    let data = layout.dir.join(format!("profile-{relay}.data"));
    let srv = servers::start(kind, &layout)?;
    std::thread::sleep(SETTLE);
    let mut s = Session::open(
        srv.addr,
        shape.transport(),
        Mode::Channel,
        shape.flows(o),
        0,
        echo_any(),
    )?;
    println!(
        "profile: {relay} at {}; perf record for {} s in the middle of {} s; load average {}",
        shape.name(),
        record.as_secs_f64(),
        o.duration.as_secs_f64(),
        procfs::load_average()
    );
    let perf = start_perf(srv.pid, &data, (o.duration - record) / 2, record);
    let outcome = report(&format!("{shape:?}"), s.run(shape.offer(o), Some(srv.pid)));
    let recorded = perf
        .join()
        .map_err(|_| "the perf thread panicked".to_string())??;
    srv.stop();
    if !recorded {
        return Err("perf record failed (is perf installed, perf_event_paranoid ≤ 1?)".into());
    }
    let us_per_pkt = if outcome.relayed() > 0 {
        1e6 / outcome.per_cpu_second()
    } else {
        0.0
    };
    let kernel = kernel_share(&perf_report(&data, &["--no-children", "--sort", "dso"])?);
    println!(
        "{us_per_pkt:.2} µs of server CPU per relayed packet: kernel {:.1} % ({:.2} µs), the relay's own code and libraries {:.1} % ({:.2} µs)",
        kernel,
        us_per_pkt * kernel / 100.0,
        100.0 - kernel,
        us_per_pkt * (100.0 - kernel) / 100.0
    );
    let children = perf_report(&data, &["--children", "--sort", "sym"])?;
    println!("| where (kernel function, children included) | share | µs / relayed pkt |");
    println!("|---|---:|---:|");
    for (label, sym) in MARKERS {
        if let Some(share) = children_share(&children, sym) {
            println!(
                "| {label} (`{sym}`) | {share:.1} % | {:.2} |",
                us_per_pkt * share / 100.0
            );
        }
    }
    Ok(())
}

/// Runs `perf record` on `pid` for `len` after `delay`, in a thread; true if it recorded.
fn start_perf(
    pid: u32,
    data: &Path,
    delay: Duration,
    len: Duration,
) -> std::thread::JoinHandle<Result<bool, String>> {
    let data = data.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        Command::new("perf")
            .args(["record", "-F", "1999", "-g", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .args(["--", "sleep", &format!("{:.1}", len.as_secs_f64())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .map_err(|e| format!("perf: {e} (apt-get install linux-perf)"))
    })
}

/// `perf report --stdio -g none` of `data` with `args`.
fn perf_report(data: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "-g", "none", "-i"])
        .arg(data)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("perf report: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel's share, percent, from a `--sort dso` report.
fn kernel_share(report: &str) -> f64 {
    report
        .lines()
        .filter(|l| l.contains("[kernel"))
        .filter_map(|l| percent(l.split_whitespace().next()?))
        .sum()
}

/// The "children" share of `sym`, percent, from a `--children --sort sym` report, whose
/// lines read `  12.34%   0.56%  [k] sym`.
fn children_share(report: &str, sym: &str) -> Option<f64> {
    report.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[3] == sym).then(|| percent(f[0]))?
    })
}

fn percent(s: &str) -> Option<f64> {
    s.strip_suffix('%')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse() {
        let dso = "# comment\n    93.25%  [kernel.kallsyms]\n     4.10%  turnpike\n     2.65%  libc.so.6\n";
        assert!((kernel_share(dso) - 93.25).abs() < 1e-9);
        let ch = "    87.07%     0.09%  [k] __do_sys_io_uring_enter\n    27.93%     0.16%  [k] tcp_sendmsg\n    27.23%     1.14%  [k] tcp_sendmsg_locked\n";
        assert_eq!(children_share(ch, "tcp_sendmsg"), Some(27.93));
        assert_eq!(children_share(ch, "udp_sendmsg"), None);
    }
}
