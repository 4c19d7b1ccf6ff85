//! `turnpike-load compare --shapes ... --pauses 0,50,100,...`: what turnpike's coalescing
//! pause (`coalesce_us`) buys and costs at each shape. Every pause runs turnpike's default
//! loops in the same alternating rounds as coturn and the bare forwarder, so each row's
//! CPU ratio and added latency come from the same run.
//!
//! A longer pause gathers more datagrams per wake-up (fewer wake-ups, system calls and
//! context switches per packet) and holds each datagram up to the pause, once per pass
//! through the relay: a round trip passes twice. The table is that trade-off, measured.

use crate::compare::{fmt, mean, ratio, Options};
use crate::procfs;
use crate::shapes::{added, cell, values, Sample, Server, Shape, METRICS};

/// The rows METRICS index: relayed / CPU-s, RTT p50, RTT p99, loss, syscalls / relayed pkt.
const CPU: usize = 0;
const P50: usize = 2;
const P99: usize = 3;
const LOSS: usize = 4;
const SYSCALLS: usize = 5;

/// One table per shape: a row per pause, coturn and the forwarder below.
pub fn print_table(o: &Options, shapes: &[Shape], pauses: &[u32], samples: &[Sample]) {
    println!();
    println!(
        "## Pauses: mean of {} rounds (range in parentheses), {} s each; turnpike's default loops; load average now {}",
        o.rounds,
        o.duration.as_secs_f64(),
        procfs::load_average()
    );
    for (i, shape) in shapes.iter().enumerate() {
        let of = |server, m: usize| values(samples, i, server, &METRICS[m]);
        let (co_cpu, fw_p50, fw_p99) = (
            of(Server::Coturn, CPU),
            of(Server::Forwarder, P50),
            of(Server::Forwarder, P99),
        );
        println!();
        println!("### {}", shape.name());
        println!();
        println!("| server | relayed / server CPU-s | / coturn | RTT p50 µs | added p50 µs | RTT p99 µs | added p99 µs | loss % | syscalls / relayed pkt |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let rows = pauses
            .iter()
            .map(|&us| {
                (
                    format!("turnpike, coalesce_us = {us}"),
                    Server::TurnpikePause(us),
                )
            })
            .chain([
                ("coturn".to_string(), Server::Coturn),
                ("bare forwarder".to_string(), Server::Forwarder),
            ]);
        for (label, server) in rows {
            let cpu = of(server, CPU);
            let (p50, p99) = (of(server, P50), of(server, P99));
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&cpu),
                ratio(&cpu, &co_cpu),
                cell(&p50),
                added(&p50, &fw_p50),
                cell(&p99),
                added(&p99, &fw_p99),
                mean(&of(server, LOSS)).map_or("—".into(), fmt),
                mean(&of(server, SYSCALLS)).map_or("—".into(), fmt),
            );
        }
    }
    println!();
    println!("Relayed packets count both directions. Added latency: the server's RTT percentile minus the bare forwarder's at the same shape (a difference of percentiles).");
}
