//! `turnpike-load compare --shapes ...`: traffic shaped like media (paced audio, video
//! frame bursts, a mix) and flat out (UDP bursts, TCP), against turnpike with its default
//! loops (packed while lightly loaded, its default, and spread with `pack_loops = false`),
//! turnpike with one loop, coturn and the bare forwarder, in alternating rounds, each
//! server given a few seconds to settle before its first shape; one markdown table.
//!
//! Added latency is the relay's own contribution: its round trip minus the bare
//! forwarder's at the same shape in the same run (both go client → server → peer → server
//! → client over loopback, so what differs is the server). The figure is a difference of
//! percentiles, not a percentile of differences.

use crate::compare::{echo_any, fmt, mean, ratio, report, Options};
use crate::flows::Mode;
use crate::media::Media;
use crate::procfs;
use crate::scenarios::Session;
use crate::servers::{self, Kind, Layout};
use crate::syscalls::{Counter, Syscalls};
use crate::traffic::{Offer, Outcome};
use std::net::SocketAddr;
use std::time::Duration;
use turnpike_core::Transport;

/// One load shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Paced audio at this many packets/s: rate/50 flows of one 200-byte packet every 20 ms.
    Audio(u32),
    /// Video: this many flows, each a burst of 5–20 packets of 1 200 bytes every 33 ms.
    Video(usize),
    /// Audio and video flows together.
    Mix(Media),
    /// UDP flat out: 100 clients, 512 packets in flight (bursts).
    Burst,
    /// TCP flat out: 100 clients, 512 packets in flight.
    Tcp,
}

/// Video flows of `video` and of the mix.
const VIDEO_FLOWS: usize = 40;
/// The mix: 10k audio packets/s and about 7.5k video packets/s.
const MIX: Media = Media {
    audio: 200,
    video: 20,
};

impl Shape {
    /// Parses `audio20k`, `audio50k` (any thousands), `video`, `mix`, `burst`, `tcp`.
    pub fn parse(s: &str) -> Result<Shape, String> {
        match s {
            "video" => Ok(Shape::Video(VIDEO_FLOWS)),
            "mix" => Ok(Shape::Mix(MIX)),
            "burst" => Ok(Shape::Burst),
            "tcp" => Ok(Shape::Tcp),
            _ => s
                .strip_prefix("audio")
                .and_then(|k| k.strip_suffix('k'))
                .and_then(|k| k.parse::<u32>().ok())
                .filter(|k| (1..=200).contains(k))
                .map(|k| Shape::Audio(k * 1000))
                .ok_or_else(|| {
                    format!("shape `{s}`: audio20k, audio50k (1k..200k), video, mix, burst, tcp")
                }),
        }
    }

    /// Its name in the table.
    pub fn name(self) -> String {
        match self {
            Shape::Audio(r) => {
                format!("audio {}k pkt/s ({} flows × 50/s, 200 B)", r / 1000, r / 50)
            }
            Shape::Video(n) => format!(
                "video {n} flows × 30 frames/s of 5–20 × 1200 B (≈{:.1}k pkt/s)",
                self.media().map_or(0.0, |m| m.rate() / 1000.0)
            ),
            Shape::Mix(m) => format!(
                "mix {} audio + {} video flows (≈{:.1}k pkt/s)",
                m.audio,
                m.video,
                m.rate() / 1000.0
            ),
            Shape::Burst => "UDP flat out (100 clients, 512 in flight, 200 B)".into(),
            Shape::Tcp => "TCP flat out (100 clients, 512 in flight, 200 B)".into(),
        }
    }

    /// The media schedule of a paced shape (None for the flat-out ones).
    pub fn media(self) -> Option<Media> {
        match self {
            Shape::Audio(r) => Some(Media {
                audio: (r / 50) as usize,
                video: 0,
            }),
            Shape::Video(n) => Some(Media { audio: 0, video: n }),
            Shape::Mix(m) => Some(m),
            Shape::Burst | Shape::Tcp => None,
        }
    }

    /// Flows (allocations) the shape runs.
    pub(crate) fn flows(self, o: &Options) -> usize {
        self.media().map_or(o.clients, Media::flows)
    }

    /// The clients' transport to the relay.
    pub(crate) fn transport(self) -> Transport {
        if self == Shape::Tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }

    /// What the clients send.
    pub(crate) fn offer(self, o: &Options) -> Offer {
        let media = self.media();
        Offer {
            size: o.size,
            rate: 0.0,
            window: if media.is_some() {
                usize::MAX / 2
            } else {
                o.window
            },
            duration: o.duration,
            max_packets: u64::MAX,
            media,
        }
    }
}

/// The servers of the table, in column order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Server {
    /// turnpike, its default loops (one per core), packed while lightly loaded.
    Turnpike,
    /// turnpike, its default loops, `pack_loops = false`.
    TurnpikeSpread,
    /// turnpike, `workers = 1`.
    TurnpikeOne,
    Coturn,
    Forwarder,
    /// turnpike, its default loops, with this `coalesce_us` (`--pauses`).
    TurnpikePause(u32),
}

const SERVERS: [Server; 5] = [
    Server::Turnpike,
    Server::TurnpikeSpread,
    Server::TurnpikeOne,
    Server::Coturn,
    Server::Forwarder,
];

/// How long a server runs before its first shape: every one is measured in its steady
/// state, and turnpike packs its loops after three calm seconds.
pub(crate) const SETTLE: Duration = Duration::from_secs(4);

/// What one phase measured.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) shape: usize,
    pub(crate) server: Server,
    pub(crate) outcome: Outcome,
    pub(crate) syscalls: Option<Syscalls>,
}

/// Runs every shape against every server, `o.rounds` times, and prints the table; with
/// `pauses`, against turnpike's default loops at each of these `coalesce_us` instead of
/// the three turnpike configurations, and returns the samples for the caller's table
/// (`crate::pauses`).
pub fn run(o: &Options, shapes: &[Shape], pauses: &[u32]) -> Result<Vec<Sample>, String> {
    println!(
        "compare --shapes: {} rounds, {} s per shape; load average {}",
        o.rounds,
        o.duration.as_secs_f64(),
        procfs::load_average()
    );
    let servers: Vec<Server> = if pauses.is_empty() {
        SERVERS.to_vec()
    } else {
        let mut v: Vec<Server> = pauses.iter().map(|&us| Server::TurnpikePause(us)).collect();
        v.extend([Server::Coturn, Server::Forwarder]);
        v
    };
    let mut samples = Vec::new();
    for round in 0..o.rounds {
        let mut order = servers.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for server in order {
            println!(
                "round {} {server:?} (load average {})",
                round + 1,
                procfs::load_average()
            );
            if let Err(e) = one_server(o, shapes, server, &mut samples) {
                println!("  {server:?} failed: {e}");
            }
        }
    }
    if pauses.is_empty() {
        print_table(o, shapes, &samples);
    }
    Ok(samples)
}

fn one_server(
    o: &Options,
    shapes: &[Shape],
    server: Server,
    samples: &mut Vec<Sample>,
) -> Result<(), String> {
    let most = shapes.iter().map(|s| s.flows(o)).max().unwrap_or(1);
    let (srv, raw_base, echo) = match server {
        Server::Forwarder => {
            let base = SocketAddr::from(([127, 0, 0, 1], o.layout.port + 2));
            let echo_port = u16::try_from(most)
                .ok()
                .and_then(|n| (o.layout.port + 3).checked_add(n))
                .ok_or("too many flows for the forwarder's ports")?;
            let echo = SocketAddr::from(([127, 0, 0, 1], echo_port));
            let fwd = servers::start_forwarder(&o.layout, base, most, echo)?;
            (fwd, Some(base), echo)
        }
        _ => {
            let layout = Layout {
                workers: (server == Server::TurnpikeOne)
                    .then_some(1)
                    .or(o.layout.workers),
                pack_loops: (server == Server::TurnpikeSpread).then_some(false),
                coalesce_us: match server {
                    Server::TurnpikePause(us) => Some(us),
                    _ => None,
                },
                ..o.layout.clone()
            };
            let kind = if server == Server::Coturn {
                Kind::Coturn
            } else {
                Kind::Turnpike
            };
            (servers::start(kind, &layout)?, None, echo_any())
        }
    };
    std::thread::sleep(SETTLE);
    for (i, &shape) in shapes.iter().enumerate() {
        if raw_base.is_some() && shape.transport() == Transport::Tcp {
            continue;
        }
        let (target, mode) = match raw_base {
            Some(b) => (b, Mode::Raw),
            None => (srv.addr, Mode::Channel),
        };
        let r = Session::open(
            target,
            shape.transport(),
            mode,
            shape.flows(o),
            1000 + i * 1100,
            echo,
        )
        .map(|mut s| {
            let before = procfs::loop_ticks(srv.pid);
            let counter = Counter::start(srv.pid);
            let outcome = s.run(shape.offer(o), Some(srv.pid));
            let syscalls = counter.and_then(Counter::stop);
            let after = procfs::loop_ticks(srv.pid);
            // Whether turnpike's loops ran on one thread through the phase (pack_loops):
            // a loop run on another's thread uses no CPU of its own.
            if !before.is_empty() {
                println!(
                    "               loop threads' CPU-s: {}",
                    procfs::loop_usage(&before, &after)
                );
            }
            (outcome, syscalls)
        });
        match r {
            Ok((outcome, syscalls)) => {
                let outcome = report(&format!("{shape:?}"), outcome);
                if let Some(s) = &syscalls {
                    println!("               {}", s.summary());
                }
                samples.push(Sample {
                    shape: i,
                    server,
                    outcome,
                    syscalls,
                });
            }
            Err(e) => println!("  {shape:?} failed: {e}"),
        }
        // Let queues drain and sockets close between shapes.
        std::thread::sleep(Duration::from_millis(300));
    }
    srv.stop();
    Ok(())
}

/// The rows of each shape: label, how to read a sample, whether a ratio to coturn means
/// something.
pub(crate) type Metric = (&'static str, fn(&Sample) -> Option<f64>, bool);

pub(crate) const METRICS: [Metric; 8] = [
    (
        "relayed / server CPU-s",
        |s| Some(s.outcome.per_cpu_second()),
        true,
    ),
    (
        "relayed / s (wall)",
        |s| Some(s.outcome.per_second()),
        false,
    ),
    ("RTT p50 µs", |s| Some(s.outcome.rtt_us(0.5)), false),
    ("RTT p99 µs", |s| Some(s.outcome.rtt_us(0.99)), false),
    ("loss %", |s| Some(s.outcome.loss() * 100.0), false),
    (
        "syscalls / relayed pkt",
        |s| per_call(s, |c| c.total),
        false,
    ),
    (
        "relayed pkts / send call",
        |s| inverse(per_call(s, |c| c.sends)),
        false,
    ),
    (
        "relayed pkts / receive call",
        |s| inverse(per_call(s, |c| c.recvs)),
        false,
    ),
];

/// System calls of one kind (`count`) per relayed packet.
fn per_call(s: &Sample, count: fn(&Syscalls) -> u64) -> Option<f64> {
    let relayed = s.outcome.relayed();
    let c = count(s.syscalls.as_ref()?);
    (relayed > 0 && c > 0).then(|| c as f64 / relayed as f64)
}

fn inverse(x: Option<f64>) -> Option<f64> {
    x.map(|x| 1.0 / x)
}

pub(crate) fn values(samples: &[Sample], shape: usize, server: Server, m: &Metric) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.shape == shape && s.server == server)
        .filter_map(m.1)
        .collect()
}

/// Mean, and the range when there are several rounds.
pub(crate) fn cell(v: &[f64]) -> String {
    let Some(m) = mean(v) else {
        return "—".into();
    };
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    if v.len() > 1 {
        format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi))
    } else {
        fmt(m)
    }
}

/// Mean of `a` minus mean of the forwarder's `f`, in µs.
pub(crate) fn added(a: &[f64], f: &[f64]) -> String {
    match (mean(a), mean(f)) {
        (Some(x), Some(y)) => format!("{:.0}", x - y),
        _ => "—".into(),
    }
}

fn print_table(o: &Options, shapes: &[Shape], samples: &[Sample]) {
    println!();
    println!(
        "## Shapes: mean of {} rounds (range in parentheses), {} s each; load average now {}",
        o.rounds,
        o.duration.as_secs_f64(),
        procfs::load_average()
    );
    println!();
    println!("| shape | metric | turnpike | turnpike, spread | turnpike, 1 loop | coturn | bare forwarder | turnpike / coturn | spread / coturn | 1 loop / coturn |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, shape) in shapes.iter().enumerate() {
        for (j, m) in METRICS.iter().enumerate() {
            let v: Vec<Vec<f64>> = SERVERS.iter().map(|&s| values(samples, i, s, m)).collect();
            let [tp, spread, one, co, fw] = [&v[0], &v[1], &v[2], &v[3], &v[4]];
            let (r1, r2, r3) = if m.2 {
                (ratio(tp, co), ratio(spread, co), ratio(one, co))
            } else {
                ("".into(), "".into(), "".into())
            };
            let label = if j == 0 { shape.name() } else { String::new() };
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} | {r1} | {r2} | {r3} |",
                m.0,
                cell(tp),
                cell(spread),
                cell(one),
                cell(co),
                cell(fw)
            );
            // The relay's own latency, right under each round-trip row.
            if m.0.starts_with("RTT") && !fw.is_empty() {
                println!(
                    "|  | added {}: RTT − forwarder's | {} | {} | {} | {} | 0 | | | |",
                    &m.0[4..7],
                    added(tp, fw),
                    added(spread, fw),
                    added(one, fw),
                    added(co, fw)
                );
            }
        }
    }
    println!();
    println!("Relayed packets count both directions. Added latency: the server's RTT percentile minus the bare forwarder's at the same shape (a difference of percentiles).");
    println!("System calls: `perf stat` on the syscall tracepoints of the server's process during the phase (all threads).");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse() {
        assert_eq!(Shape::parse("audio20k"), Ok(Shape::Audio(20_000)));
        assert_eq!(Shape::parse("video"), Ok(Shape::Video(VIDEO_FLOWS)));
        assert!(Shape::parse("audio0k").is_err());
        assert!(Shape::parse("opera").is_err());
        assert_eq!(Shape::Audio(50_000).media().map(Media::flows), Some(1000));
        assert!(Shape::Audio(20_000).name().contains("400 flows"));
    }

    #[test]
    fn cells() {
        assert_eq!(cell(&[]), "—");
        assert_eq!(cell(&[100_000.0, 120_000.0]), "110.0k (100.0k–120.0k)");
        assert_eq!(added(&[300.0], &[100.0]), "200");
        assert_eq!(added(&[300.0], &[]), "—");
        assert_eq!(ratio(&[3.0], &[2.0]), "1.50×");
    }
}
