//! `turnpike-load compare`: the same load against turnpike, coturn and the bare forwarder,
//! one process at a time, in alternating rounds, and a table of the results with ratios.

use crate::flows::Mode;
use crate::procfs;
use crate::scenarios::{self, Session};
use crate::servers::{self, Kind, Layout, Running};
use crate::traffic::{Offer, Outcome};
use std::net::SocketAddr;
use std::time::Duration;
use turnpike_core::Transport;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds (each runs every process once; the order alternates).
    pub rounds: usize,
    /// Clients (allocations) of the data tests.
    pub clients: usize,
    /// Payload bytes.
    pub size: usize,
    /// Length of each data test.
    pub duration: Duration,
    /// The fixed offered rate, packets/s sent by the clients.
    pub rate: f64,
    /// Packets in flight when flat out.
    pub window: usize,
    /// Sequences of the churn test.
    pub churn: usize,
    /// Allocations of the memory test (0: skip).
    pub memory: usize,
    /// Bisection probes of the peak search (0: skip it and the latency test).
    pub probes: usize,
    /// Processes, as laid out.
    pub layout: Layout,
}

/// The metrics, in table order: (key, label, applies to the forwarder, higher is better).
const METRICS: [(&str, &str, bool, bool); 12] = [
    (
        "udp_cpu",
        "UDP ChannelData flat out: relayed pkts / server CPU-s",
        true,
        true,
    ),
    (
        "udp_pps",
        "UDP flat out: relayed pkts / s (wall)",
        true,
        true,
    ),
    (
        "udp_rate_cpu",
        "UDP at the fixed rate: relayed pkts / server CPU-s",
        true,
        true,
    ),
    (
        "udp_rate_p99",
        "UDP at the fixed rate: p99 RTT µs",
        true,
        false,
    ),
    (
        "tcp_cpu",
        "TCP ChannelData flat out: relayed pkts / server CPU-s",
        false,
        true,
    ),
    (
        "tcp_pps",
        "TCP flat out: relayed pkts / s (wall)",
        false,
        true,
    ),
    ("peak", "UDP peak relayed pkts / s with no loss", true, true),
    ("lat_p50", "RTT p50 µs at 50% of own peak", true, false),
    ("lat_p99", "RTT p99 µs at 50% of own peak", true, false),
    ("lat_p999", "RTT p999 µs at 50% of own peak", true, false),
    (
        "alloc_cpu",
        "Allocation sequences / server CPU-s",
        false,
        true,
    ),
    (
        "rss_kib",
        "RSS growth per allocation, KiB (10k UDP)",
        false,
        false,
    ),
];

/// Values per metric and process, one per round.
#[derive(Default)]
struct Table {
    rows: Vec<(&'static str, Kind, f64)>,
}

impl Table {
    fn add(&mut self, key: &'static str, kind: Kind, v: f64) {
        println!("    {:<10} {key:<14} {v:.1}", kind.name());
        self.rows.push((key, kind, v));
    }

    fn values(&self, key: &str, kind: Kind) -> Vec<f64> {
        self.rows
            .iter()
            .filter(|(k, w, _)| *k == key && *w == kind)
            .map(|(_, _, v)| *v)
            .collect()
    }
}

/// Runs the comparison and prints the table.
pub fn run(o: &Options) -> Result<(), String> {
    println!(
        "compare: {} rounds, {} clients, {}-byte payloads, {} s per data test, fixed rate {} pkt/s offered, turnpike event loops {}, load average {}",
        o.rounds,
        o.clients,
        o.size,
        o.duration.as_secs_f64(),
        o.rate,
        o.layout
            .workers
            .map_or_else(|| "its default (one per core)".to_string(), |n| n.to_string()),
        procfs::load_average()
    );
    let mut t = Table::default();
    for round in 0..o.rounds {
        let order = if round % 2 == 0 {
            [Kind::Turnpike, Kind::Coturn, Kind::Forwarder]
        } else {
            [Kind::Coturn, Kind::Turnpike, Kind::Forwarder]
        };
        for kind in order {
            println!(
                "round {} {} (load average {})",
                round + 1,
                kind.name(),
                procfs::load_average()
            );
            let ip_base = 1000 + round * 50_000;
            let r = if kind == Kind::Forwarder {
                forwarder_round(o, &mut t)
            } else {
                relay_round(o, kind, ip_base, &mut t)
            };
            // One failed test (a port taken by someone else...) does not void the rest.
            if let Err(e) = r {
                println!("  {} failed: {e}", kind.name());
            }
        }
    }
    print_table(o, &t);
    Ok(())
}

pub(crate) fn flat(o: &Options) -> Offer {
    Offer {
        size: o.size,
        rate: 0.0,
        window: o.window,
        duration: o.duration,
        max_packets: u64::MAX,
        media: None,
    }
}

fn fixed(o: &Options, rate: f64) -> Offer {
    Offer {
        size: o.size,
        rate,
        window: usize::MAX / 2,
        duration: o.duration,
        max_packets: u64::MAX,
        media: None,
    }
}

pub(crate) fn echo_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn relay_round(o: &Options, kind: Kind, ip_base: usize, t: &mut Table) -> Result<(), String> {
    let srv = servers::start(kind, &o.layout)?;
    let pid = Some(srv.pid);
    {
        let mut s = Session::open(
            srv.addr,
            Transport::Udp,
            Mode::Channel,
            o.clients,
            ip_base,
            echo_any(),
        )?;
        let r = report("udp flat", s.run(flat(o), pid));
        t.add("udp_cpu", kind, r.per_cpu_second());
        t.add("udp_pps", kind, r.per_second());
        let flat_rate = r.per_second() / 2.0;
        let r = report("udp fixed", s.run(fixed(o, o.rate), pid));
        t.add("udp_rate_cpu", kind, r.per_cpu_second());
        t.add("udp_rate_p99", kind, r.rtt_us(0.99));
        peak_and_latency(o, &mut s, pid, kind, t, flat_rate);
    }
    {
        let mut s = Session::open(
            srv.addr,
            Transport::Tcp,
            Mode::Channel,
            o.clients,
            ip_base + 1000,
            echo_any(),
        )?;
        let r = report("tcp flat", s.run(flat(o), pid));
        t.add("tcp_cpu", kind, r.per_cpu_second());
        t.add("tcp_pps", kind, r.per_second());
    }
    if o.churn > 0 {
        let c = scenarios::churn(srv.addr, srv.pid, o.churn, 64, ip_base + 2000)?;
        println!(
            "  churn: {}/{} sequences in {:.2} s, server {:.2} CPU-s",
            c.completed, c.attempted, c.seconds, c.server_cpu
        );
        t.add("alloc_cpu", kind, c.per_cpu_second());
    }
    srv.stop();
    if o.memory > 0 {
        // A fresh process, so the figure is the allocations' alone.
        let srv = servers::start(kind, &o.layout)?;
        let m = scenarios::memory(srv.addr, srv.pid, o.memory, ip_base + 10_000)?;
        println!(
            "  memory: {} allocations, VmRSS {} → {} KiB",
            m.allocations, m.before_kib, m.after_kib
        );
        t.add("rss_kib", kind, m.per_allocation_kib());
        srv.stop();
    }
    Ok(())
}

fn peak_and_latency(
    o: &Options,
    s: &mut Session,
    pid: Option<u32>,
    kind: Kind,
    t: &mut Table,
    guess: f64,
) {
    if o.probes == 0 {
        return;
    }
    // Bisection on the offered rate (packets/s sent by the clients) around the rate
    // reached flat out (`guess`, round trips per second).
    let (rate, r) = s.peak(
        o.size,
        guess * 0.25,
        guess * 1.5,
        o.probes,
        Duration::from_secs(2),
        pid,
    );
    println!("  peak: {rate:.0} pkt/s offered → {}", r.summary());
    t.add("peak", kind, r.per_second());
    if rate > 0.0 {
        let r = report("50% of peak", s.run(fixed(o, rate / 2.0), pid));
        t.add("lat_p50", kind, r.rtt_us(0.5));
        t.add("lat_p99", kind, r.rtt_us(0.99));
        t.add("lat_p999", kind, r.rtt_us(0.999));
    }
}

fn forwarder_round(o: &Options, t: &mut Table) -> Result<(), String> {
    // The forwarder's client-facing pairs start just above the relays' port; the echo
    // peer sits above them.
    let base = SocketAddr::from(([127, 0, 0, 1], o.layout.port + 2));
    let echo = SocketAddr::from((
        [127, 0, 0, 1],
        o.layout.port + 2 + u16::try_from(o.clients).unwrap_or(0) + 1,
    ));
    let fwd: Running = servers::start_forwarder(&o.layout, base, o.clients, echo)?;
    let pid = Some(fwd.pid);
    let mut s = Session::open(base, Transport::Udp, Mode::Raw, o.clients, 0, echo)?;
    let r = report("udp flat", s.run(flat(o), pid));
    t.add("udp_cpu", Kind::Forwarder, r.per_cpu_second());
    t.add("udp_pps", Kind::Forwarder, r.per_second());
    let flat_rate = r.per_second() / 2.0;
    let r = report("udp fixed", s.run(fixed(o, o.rate), pid));
    t.add("udp_rate_cpu", Kind::Forwarder, r.per_cpu_second());
    t.add("udp_rate_p99", Kind::Forwarder, r.rtt_us(0.99));
    peak_and_latency(o, &mut s, pid, Kind::Forwarder, t, flat_rate);
    drop(s);
    fwd.stop();
    Ok(())
}

pub(crate) fn report(what: &str, r: Outcome) -> Outcome {
    println!("  {what:<12} {}", r.summary());
    r
}

pub(crate) fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn cell(v: &[f64]) -> String {
    match mean(v) {
        None => "—".to_string(),
        Some(m) => {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            if v.len() > 1 && m > 0.0 {
                format!("{} ±{:.0}%", fmt(m), (hi - lo) / 2.0 / m * 100.0)
            } else {
                fmt(m)
            }
        }
    }
}

pub(crate) fn fmt(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 || x == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

pub(crate) fn ratio(a: &[f64], b: &[f64]) -> String {
    match (mean(a), mean(b)) {
        (Some(x), Some(y)) if y > 0.0 => format!("{:.2}×", x / y),
        _ => "—".to_string(),
    }
}

fn print_table(o: &Options, t: &Table) {
    println!();
    println!(
        "## {} clients, {}-byte payloads, fixed rate {} pkt/s offered (mean of {} rounds, ± half the spread); load average now {}",
        o.clients,
        o.size,
        o.rate,
        o.rounds,
        procfs::load_average()
    );
    println!();
    println!(
        "| metric | turnpike | coturn | turnpike/coturn | bare forwarder | turnpike/forwarder |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (key, label, fwd, _) in METRICS {
        let tp = t.values(key, Kind::Turnpike);
        let co = t.values(key, Kind::Coturn);
        let fw = t.values(key, Kind::Forwarder);
        if tp.is_empty() && co.is_empty() {
            continue;
        }
        let (fw_cell, fw_ratio) = if fwd {
            (cell(&fw), ratio(&tp, &fw))
        } else {
            ("—".into(), "—".into())
        };
        println!(
            "| {label} | {} | {} | {} | {fw_cell} | {fw_ratio} |",
            cell(&tp),
            cell(&co),
            ratio(&tp, &co)
        );
    }
    println!();
    println!("Relayed packets count both directions: a packet that reaches the echo peer and comes back is 2.");
    println!("RTT, latency and RSS: lower is better. Allocation sequence: Allocate + 401 round, CreatePermission, ChannelBind, Refresh 0.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_ratios() {
        assert_eq!(cell(&[]), "—");
        assert_eq!(cell(&[150_000.0, 170_000.0]), "160.0k ±6%");
        assert_eq!(ratio(&[2.0], &[1.0]), "2.00×");
        assert_eq!(ratio(&[2.0], &[]), "—");
        assert_eq!(fmt(5.25), "5.2");
        assert_eq!(fmt(0.3125), "0.312");
    }
}
