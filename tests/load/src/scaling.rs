//! `turnpike-load scaling`: turnpike alone with 1, 2, ... event loops (`workers`), the same
//! load each time, to show what a second loop buys on this machine.
//!
//! On a 2-core machine the load generator needs a core too: with 2 loops the server and
//! the generator compete, so the wall-clock figures understate what 2 loops would do on
//! a machine with cores to spare; the per-CPU-second figure shows the cost of a loop.

use crate::compare::{echo_any, flat, report, Options};
use crate::flows::Mode;
use crate::procfs;
use crate::scenarios::{self, Session};
use crate::servers::{self, Kind, Layout};
use std::time::Duration;
use turnpike_core::Transport;

/// What one run with `workers` loops measured.
#[derive(Clone, Copy, Debug, Default)]
struct Row {
    /// UDP flat out: relayed packets per wall second.
    pps: f64,
    /// UDP flat out: relayed packets per server CPU-second.
    per_cpu: f64,
    /// UDP peak relayed packets per second with no loss (0: not measured).
    peak: f64,
    /// Allocation sequences per wall second.
    allocs: f64,
    /// Allocation sequences per server CPU-second.
    allocs_cpu: f64,
}

/// Runs the scaling test: `o.rounds` rounds, each with 1..=`max` loops (order alternating).
pub fn run(o: &Options, max: u32) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "scaling: turnpike with 1..={max} event loops; {} rounds, {} UDP clients, {}-byte payloads, {} s flat out, {} churn sequences, {} peak probes; {cores} CPUs, load average {}",
        o.rounds,
        o.clients,
        o.size,
        o.duration.as_secs_f64(),
        o.churn,
        o.probes,
        procfs::load_average()
    );
    println!(
        "note: the load generator runs on the same {cores} CPUs and competes with the server's loops for them"
    );
    let mut rows: Vec<(u32, Row)> = Vec::new();
    for round in 0..o.rounds {
        let mut order: Vec<u32> = (1..=max).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for workers in order {
            println!(
                "round {} with {workers} loops (load average {})",
                round + 1,
                procfs::load_average()
            );
            let layout = Layout {
                workers: Some(workers),
                ..o.layout.clone()
            };
            match one(o, &layout, 1000 + round * 50_000 + workers as usize * 5000) {
                Ok(r) => rows.push((workers, r)),
                Err(e) => println!("  {workers} loops failed: {e}"),
            }
        }
    }
    print_table(&rows, max);
    println!("load average at the end: {}", procfs::load_average());
    Ok(())
}

fn one(o: &Options, layout: &Layout, ip_base: usize) -> Result<Row, String> {
    let srv = servers::start(Kind::Turnpike, layout)?;
    let pid = Some(srv.pid);
    let mut row = Row::default();
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
        row.pps = r.per_second();
        row.per_cpu = r.per_cpu_second();
        if o.probes > 0 {
            let guess = r.per_second() / 2.0;
            let (rate, r) = s.peak(
                o.size,
                guess * 0.25,
                guess * 1.5,
                o.probes,
                Duration::from_secs(2),
                pid,
            );
            println!("  peak: {rate:.0} pkt/s offered → {}", r.summary());
            row.peak = r.per_second();
        }
    }
    if o.churn > 0 {
        let c = scenarios::churn(srv.addr, srv.pid, o.churn, 64, ip_base + 2000)?;
        println!(
            "  churn: {}/{} sequences in {:.2} s, server {:.2} CPU-s",
            c.completed, c.attempted, c.seconds, c.server_cpu
        );
        row.allocs = if c.seconds > 0.0 {
            c.completed as f64 / c.seconds
        } else {
            0.0
        };
        row.allocs_cpu = c.per_cpu_second();
    }
    srv.stop();
    Ok(row)
}

/// One figure of a row.
type Metric = fn(&Row) -> f64;

fn mean(rows: &[(u32, Row)], workers: u32, f: Metric) -> f64 {
    let v: Vec<f64> = rows
        .iter()
        .filter(|(w, _)| *w == workers)
        .map(|(_, r)| f(r))
        .collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn print_table(rows: &[(u32, Row)], max: u32) {
    let metrics: [(&str, Metric); 5] = [
        ("UDP flat out: relayed pkts / s (wall)", |r| r.pps),
        ("UDP peak relayed pkts / s with no loss", |r| r.peak),
        ("UDP flat out: relayed pkts / server CPU-s", |r| r.per_cpu),
        ("Allocation sequences / s (wall)", |r| r.allocs),
        ("Allocation sequences / server CPU-s", |r| r.allocs_cpu),
    ];
    print!("\n| metric |");
    for w in 1..=max {
        print!(" {w} loop{} |", if w == 1 { "" } else { "s" });
    }
    println!(" {max} / 1 |");
    print!("|---|");
    for _ in 0..=max {
        print!("---:|");
    }
    println!();
    for (label, f) in metrics {
        print!("| {label} |");
        for w in 1..=max {
            print!(" {:.0} |", mean(rows, w, f));
        }
        let (one, top) = (mean(rows, 1, f), mean(rows, max, f));
        if one > 0.0 {
            println!(" {:.2}× |", top / one);
        } else {
            println!(" — |");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_are_per_worker_count() {
        let r = |pps| Row {
            pps,
            ..Row::default()
        };
        let rows = [(1, r(10.0)), (2, r(30.0)), (1, r(20.0))];
        assert_eq!(mean(&rows, 1, |r| r.pps), 15.0);
        assert_eq!(mean(&rows, 2, |r| r.pps), 30.0);
        assert_eq!(mean(&rows, 3, |r| r.pps), 0.0);
    }
}
