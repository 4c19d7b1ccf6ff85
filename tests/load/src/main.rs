//! `turnpike-load`: load generator, bare forwarder, side-by-side comparison with coturn,
//! and the core's instruction-count benchmark. Loopback only.

mod compare;
mod corebench;
mod crowd;
mod flows;
mod forwarder;
mod media;
mod mmsg;
mod pauses;
mod procfs;
mod profile;
mod scaling;
mod scenarios;
mod servers;
mod shapes;
mod step;
mod syscalls;
mod tls_compare;
mod traffic;

use flows::Mode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use turnpike_core::Transport;

const USAGE: &str = "\
usage: turnpike-load COMMAND [--key value]...

  run        --server ADDR --pid PID [--transport udp|tcp] [--mode channel|indication]
             [--clients 100] [--size 200] [--rate PKT/S (0: flat out)] [--window 512]
             [--seconds 5] [--max-packets N] [--probes 0 (peak search instead)]
             [--shape audio20k|audio50k|video|mix (paced media instead of --rate)]
  churn      --server ADDR --pid PID [--n 3000] [--concurrency 64]
  memory     --server ADDR --pid PID [--n 10000]
  forwarder  --listen ADDR [--count 100] --peer ADDR [--seconds 600]
  compare    [--rounds 2] [--clients 100] [--size 200] [--seconds 5] [--rate 20000]
             [--window 512] [--churn 3000] [--memory 10000] [--probes 6]
             [--port 31000] [--relay-min 10000] [--relay-max 29999]
             [--turnpike target/release/turnpike] [--coturn-threads N] [--dir DIR]
             [--workers N (turnpike's event loops; default: its own, one per core)]
             [--shapes audio20k,audio50k,video,mix,burst,tcp (instead of the tests above:
             these shapes against turnpike with its default loops (packed, and spread
             with pack_loops = false) and with one, coturn,
             the bare forwarder; relayed / server CPU-s, RTT and added latency, loss,
             syscalls per relayed packet and per send, from `perf stat`)]
             [--pauses 0,50,100 (with --shapes: turnpike's default loops at each of these
             coalesce_us instead, beside coturn and the forwarder: CPU against latency)]
  scaling    [--rounds 1] [--max-workers 2] [--clients 100] [--size 200] [--seconds 5]
             [--window 512] [--churn 3000] [--probes 6] [--port 31000] [--relay-min 10000]
             [--relay-max 29999] [--turnpike PATH] [--dir DIR]
             (turnpike alone with 1, 2, ... event loops: relayed pkts/s, peak with no loss,
             relayed / server CPU-s, allocations/s)
  profile    [--relay turnpike|turnpike-one|coturn] [--shape audio20k|...|tcp]
             [--seconds 5] [--record 3] (compare's --port, --relay-*, --turnpike, --dir)
             (perf record during one shape: CPU per relayed packet, kernel against the
             relay's own code, and the kernel's part by operation)
  step       [--rounds 1] [--seconds 5] [--clients 100] [--window 512] (compare's --port,
             --relay-*, --turnpike, --workers) (turnpike's default node at paced audio 20k,
             its loops gathered, then at once UDP flat out: how soon each hosted loop runs
             on its own thread again)
  tls-compare [--rounds 2] [--clients 100] [--size 200] [--seconds 5] [--window 512]
             [--port 31000 (TLS on port+1)] [--turnpike PATH] [--workers N] [--dir DIR]
             (TURN over TLS flat out: turnpike's native TLS, nginx terminating TLS in
             front of turnpike, coturn's TLS; relayed pkts / server CPU-s)
  crowd      [--clients 1000] [--rate 5000] [--transport udp|tcp] [--wrong-password false]
             [--limit-s 20] [--rounds 1] [--server ADDR --pid PID (else turnpike and coturn
             side by side, with compare's --port, --relay-*, --turnpike, --workers)]
             (every client from 127.0.0.1, one port each: Allocate with its 401 round)
  reflect    [--rates 5000,100000] [--seconds 2] [--server ADDR (else turnpike and coturn)]
             (one source, bare 20-byte Allocates: bytes out / bytes in)
  core-bench --phase to-peer|to-client|allocate|sequence [--n 100000]
  callgrind  [--n 20000]      (core-bench phases under callgrind: instructions/op)

Servers listen on 127.0.0.1; the relays need user `load`, password `load-secret`,
realm `load.test`, loopback peers allowed (compare starts them so).
A relayed packet counts once per direction: one round trip = 2 relayed packets.
";

fn main() -> ExitCode {
    // The arguments as the OS gave them (`std::env::args()` panics on one that is not
    // UTF-8); lexopt tokenizes them.
    let mut p = lexopt::Parser::from_args(std::env::args_os().skip(1));
    let cmd = match p.next() {
        Ok(Some(lexopt::Arg::Value(v))) => match v.into_string() {
            Ok(c) => c,
            Err(v) => {
                eprintln!("command `{}` is not valid UTF-8", v.to_string_lossy());
                return ExitCode::from(2);
            }
        },
        Ok(Some(lexopt::Arg::Long("help") | lexopt::Arg::Short('h'))) => "--help".to_string(),
        Ok(Some(a)) => {
            eprintln!("unexpected argument {}\n\n{USAGE}", arg_name(&a));
            return ExitCode::from(2);
        }
        Ok(None) | Err(_) => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let opts = match parse_opts(&mut p) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match cmd.as_str() {
        "run" => cmd_run(&opts),
        "churn" => cmd_churn(&opts),
        "memory" => cmd_memory(&opts),
        "forwarder" => cmd_forwarder(&opts),
        "compare" => cmd_compare(&opts),
        "tls-compare" => compare_options(&opts).and_then(|o| tls_compare::run(&o)),
        "scaling" => cmd_scaling(&opts),
        "profile" => cmd_profile(&opts),
        "step" => compare_options(&opts).and_then(|o| step::run(&o)),
        "core-bench" => corebench::run(
            &opts.str("phase", "to-peer"),
            opts.num("n", 100_000u32).unwrap_or(0),
        ),
        "callgrind" => cmd_callgrind(&opts),
        "crowd" => cmd_crowd(&opts),
        "reflect" => cmd_reflect(&opts),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command {cmd}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnpike-load {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--key value` pairs.
#[derive(Debug)]
struct Opts(BTreeMap<String, String>);

fn parse_opts(p: &mut lexopt::Parser) -> Result<Opts, String> {
    let mut m = BTreeMap::new();
    while let Some(a) = p.next().map_err(|e| e.to_string())? {
        let lexopt::Arg::Long(key) = a else {
            return Err(format!("unexpected argument {}", arg_name(&a)));
        };
        let key = key.to_string();
        let value = p
            .value()
            .map_err(|_| format!("--{key} needs a value"))?
            .into_string()
            .map_err(|v| format!("--{key}: `{}` is not valid UTF-8", v.to_string_lossy()))?;
        m.insert(key, value);
    }
    Ok(Opts(m))
}

/// An argument as the user wrote it, for messages.
fn arg_name(a: &lexopt::Arg<'_>) -> String {
    match a {
        lexopt::Arg::Long(l) => format!("--{l}"),
        lexopt::Arg::Short(c) => format!("-{c}"),
        lexopt::Arg::Value(v) => v.to_string_lossy().into_owned(),
    }
}

impl Opts {
    fn str(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: not a number: {v}")),
        }
    }

    fn addr(&self, key: &str) -> Result<SocketAddr, String> {
        let v = self
            .0
            .get(key)
            .ok_or_else(|| format!("--{key} is required"))?;
        let a: SocketAddr = v
            .parse()
            .map_err(|_| format!("--{key}: not an address: {v}"))?;
        if !a.ip().is_loopback() {
            return Err(format!("--{key}: loopback addresses only"));
        }
        Ok(a)
    }

    fn pid(&self) -> Result<u32, String> {
        self.0
            .get("pid")
            .ok_or("--pid is required (the server's process)")?
            .parse()
            .map_err(|_| "--pid: not a number".to_string())
    }
}

fn cmd_run(o: &Opts) -> Result<(), String> {
    let server = o.addr("server")?;
    let pid = o.pid()?;
    let transport = match o.str("transport", "udp").as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        t => return Err(format!("--transport: udp or tcp, not {t}")),
    };
    let mode = match o.str("mode", "channel").as_str() {
        "channel" => Mode::Channel,
        "indication" => Mode::Indication,
        m => return Err(format!("--mode: channel or indication, not {m}")),
    };
    // A paced shape (audio20k, video, mix) sets the flows and the schedule.
    let media = match o.0.get("shape") {
        Some(s) => Some(
            shapes::Shape::parse(s)?
                .media()
                .ok_or("--shape: a paced one (audio20k, audio50k, video, mix)")?,
        ),
        None => None,
    };
    let clients = media.map_or(o.num("clients", 100usize), |m| Ok(m.flows()))?;
    let offer = traffic::Offer {
        size: o.num("size", 200usize)?,
        rate: o.num("rate", 0.0f64)?,
        window: if media.is_some() {
            usize::MAX / 2
        } else {
            o.num("window", 512usize)?
        },
        duration: Duration::from_secs_f64(o.num("seconds", 5.0f64)?.clamp(0.1, 600.0)),
        max_packets: o.num("max-packets", u64::MAX)?,
        media,
    };
    let echo = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut s = scenarios::Session::open(server, transport, mode, clients, 0, echo)?;
    println!("load average {}", procfs::load_average());
    let probes = o.num("probes", 0usize)?;
    if probes > 0 {
        let flat = s.run(offer, Some(pid));
        println!("flat out: {}", flat.summary());
        let guess = flat.per_second() / 2.0;
        let (rate, r) = s.peak(
            offer.size,
            guess * 0.25,
            guess * 1.5,
            probes,
            Duration::from_secs(2),
            Some(pid),
        );
        println!("peak {rate:.0} pkt/s offered: {}", r.summary());
    } else {
        println!("{}", s.run(offer, Some(pid)).summary());
    }
    Ok(())
}

fn cmd_churn(o: &Opts) -> Result<(), String> {
    let c = scenarios::churn(
        o.addr("server")?,
        o.pid()?,
        o.num("n", 3000usize)?,
        o.num("concurrency", 64usize)?,
        100_000,
    )?;
    println!(
        "{}/{} sequences in {:.2} s; server {:.2} CPU-s → {:.0} sequences per server CPU-s",
        c.completed,
        c.attempted,
        c.seconds,
        c.server_cpu,
        c.per_cpu_second()
    );
    Ok(())
}

fn cmd_memory(o: &Opts) -> Result<(), String> {
    let m = scenarios::memory(
        o.addr("server")?,
        o.pid()?,
        o.num("n", 10_000usize)?,
        200_000,
    )?;
    println!(
        "{} allocations: VmRSS {} → {} KiB, {:.2} KiB per allocation",
        m.allocations,
        m.before_kib,
        m.after_kib,
        m.per_allocation_kib()
    );
    Ok(())
}

fn cmd_forwarder(o: &Opts) -> Result<(), String> {
    let n = forwarder::run(
        o.addr("listen")?,
        o.num("count", 100usize)?,
        o.addr("peer")?,
        Duration::from_secs(o.num("seconds", 600u64)?.min(3600)),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("forwarded {n} datagrams");
    Ok(())
}

fn cmd_compare(o: &Opts) -> Result<(), String> {
    if let Some(list) = o.0.get("shapes") {
        let shapes = list
            .split(',')
            .map(|s| shapes::Shape::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pauses = match o.0.get("pauses") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("--pauses: not a number of µs: {s}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        pauses.sort_unstable();
        pauses.dedup();
        let opts = compare_options(o)?;
        let samples = shapes::run(&opts, &shapes, &pauses)?;
        if !pauses.is_empty() {
            pauses::print_table(&opts, &shapes, &pauses, &samples);
        }
        return Ok(());
    }
    if o.0.contains_key("pauses") {
        return Err("--pauses needs --shapes".into());
    }
    compare::run(&compare_options(o)?)
}

fn cmd_profile(o: &Opts) -> Result<(), String> {
    let shape = shapes::Shape::parse(&o.str("shape", "audio20k"))?;
    let record = Duration::from_secs_f64(o.num("record", 3.0f64)?.clamp(0.5, 60.0));
    profile::run(
        &compare_options(o)?,
        &o.str("relay", "turnpike"),
        shape,
        record,
    )
}

fn cmd_scaling(o: &Opts) -> Result<(), String> {
    let opts = compare::Options {
        rounds: o.num("rounds", 1usize)?.max(1),
        ..compare_options(o)?
    };
    scaling::run(&opts, o.num("max-workers", 2u32)?.clamp(1, 64))
}

/// The options of `compare` (and `scaling`) from the command line.
fn compare_options(o: &Opts) -> Result<compare::Options, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let sibling = exe.with_file_name("turnpike");
    let layout = servers::Layout {
        port: o.num("port", 31_000u16)?,
        relay_min: o.num("relay-min", 10_000u16)?,
        relay_max: o.num("relay-max", 29_999u16)?,
        dir: PathBuf::from(
            o.str(
                "dir",
                &std::env::temp_dir()
                    .join(format!("turnpike-compare-{}", std::process::id()))
                    .display()
                    .to_string(),
            ),
        ),
        turnpike: PathBuf::from(o.str("turnpike", &sibling.display().to_string())),
        exe,
        coturn_threads: o.0.get("coturn-threads").and_then(|v| v.parse().ok()),
        workers: match o.0.get("workers") {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| format!("--workers: not a number: {v}"))?,
            ),
            None => None,
        },
        pack_loops: None,
        coalesce_us: None,
    };
    Ok(compare::Options {
        rounds: o.num("rounds", 2usize)?.max(1),
        clients: o.num("clients", 100usize)?,
        size: o.num("size", 200usize)?,
        duration: Duration::from_secs_f64(o.num("seconds", 5.0f64)?.clamp(0.5, 120.0)),
        rate: o.num("rate", 20_000.0f64)?,
        window: o.num("window", 512usize)?,
        churn: o.num("churn", 3000usize)?,
        memory: o.num("memory", 10_000usize)?,
        probes: o.num("probes", 6usize)?,
        layout,
    })
}

fn cmd_crowd(o: &Opts) -> Result<(), String> {
    let transport = match o.str("transport", "udp").as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        t => return Err(format!("--transport: udp or tcp, not {t}")),
    };
    let c = crowd::Crowd {
        clients: o.num("clients", 1000usize)?.clamp(1, 20_000),
        rate: o.num("rate", 5000.0f64)?.clamp(1.0, 100_000.0),
        transport,
        wrong_password: o.num("wrong-password", false)?,
        limit: Duration::from_secs_f64(o.num("limit-s", 20.0f64)?.clamp(1.0, 120.0)),
    };
    println!(
        "crowd: {} clients from 127.0.0.1 over {:?}, {:.0} started/s{}; load average {}",
        c.clients,
        c.transport,
        c.rate,
        if c.wrong_password {
            ", wrong password"
        } else {
            ""
        },
        procfs::load_average()
    );
    if o.0.contains_key("server") {
        let r = crowd::crowd(o.addr("server")?, o.pid().ok(), c)?;
        println!("{}", r.summary());
        return Ok(());
    }
    let layout = compare_options(o)?.layout;
    for round in 1..=o.num("rounds", 1usize)?.clamp(1, 10) {
        for kind in [servers::Kind::Turnpike, servers::Kind::Coturn] {
            let s = servers::start(kind, &layout)?;
            let r = crowd::crowd(s.addr, Some(s.pid), c);
            s.stop();
            println!("round {round} {:<9} {}", kind.name(), r?.summary());
        }
    }
    Ok(())
}

fn cmd_reflect(o: &Opts) -> Result<(), String> {
    let rates: Vec<f64> = o
        .str("rates", "5000,100000")
        .split(',')
        .map(|r| r.trim().parse::<f64>().map(|x| x.clamp(1.0, 200_000.0)))
        .collect::<Result<_, _>>()
        .map_err(|_| "--rates: numbers separated by commas".to_string())?;
    let seconds = o.num("seconds", 2.0f64)?;
    if o.0.contains_key("server") {
        let server = o.addr("server")?;
        for rate in rates {
            println!(
                "{rate:.0}/s: {}",
                crowd::reflect(server, rate, seconds)?.summary()
            );
        }
        return Ok(());
    }
    let layout = compare_options(o)?.layout;
    for kind in [servers::Kind::Turnpike, servers::Kind::Coturn] {
        for &rate in &rates {
            // A fresh server per rate: nothing banked from the run before.
            let s = servers::start(kind, &layout)?;
            let r = crowd::reflect(s.addr, rate, seconds);
            s.stop();
            println!("{:<9} {rate:.0}/s: {}", kind.name(), r?.summary());
        }
    }
    Ok(())
}

fn cmd_callgrind(o: &Opts) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let n = o.num("n", 20_000u32)?;
    println!("core-only, server side, instructions per operation (callgrind, 200-byte payloads)");
    corebench::callgrind(&exe.display().to_string(), n).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Opts, String> {
        parse_opts(&mut lexopt::Parser::from_args(args.iter().copied()))
    }

    #[test]
    fn options() {
        let o = parse(&["--n", "5", "--server=127.0.0.1:9"]).unwrap();
        assert_eq!(o.num("n", 0u32).unwrap(), 5);
        assert_eq!(o.num("x", 7u32).unwrap(), 7);
        assert!(o.addr("server").is_ok());
        assert!(parse(&["--n"]).unwrap_err().contains("--n needs a value"));
        assert!(parse(&["n"]).unwrap_err().contains("unexpected argument n"));
        assert!(parse(&["-n", "3"]).is_err());
        let o = parse(&["--server", "10.0.0.1:9"]).unwrap();
        assert!(o.addr("server").is_err());
    }
}
