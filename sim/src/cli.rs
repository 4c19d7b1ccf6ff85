//! The command line: `run` one scenario with one seed, or `sweep` many seeds over many
//! scenarios. Wall time is measured here only, outside the simulated world, to report
//! events per second and how much faster than real time the run went.

use crate::runner::{run, Outcome, RunOptions, TRACE_LINES};
use crate::scenario::Scenario;
use crate::trace::to_scenario::is_trace_script_file;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

const USAGE: &str = "usage:
  turnpike-sim run SCENARIO.toml [--seed N] [--loops N]
  turnpike-sim sweep DIR|SCENARIO.toml... [--seeds A..B] [--loops N] [--keep-going]
  turnpike-sim replay TRACE [--config FILE]
  turnpike-sim trace dump TRACE
  turnpike-sim trace to-scenario TRACE [--name NAME] [--config FILE]

A node of several event loops records one trace per loop: TRACE for loop 0, TRACE.loop1,
TRACE.loop2... beside it. `replay` replays them all; `trace dump` shows one file.

A trace script (kind = \"trace-script\", from `trace to-scenario`) is run once by `run` and
`sweep`, whatever the seed, with the secrets of its sibling FILE-STEM.secrets.toml.
--loops N runs every server of the scenarios as a node of N event loops.";

/// Runs the tool with `args` (without the program name, as the OS gave them: paths may be
/// any bytes); returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let word = |i: usize| args.get(i).and_then(|a| a.to_str());
    let rest = |i: usize| args.get(i..).unwrap_or_default();
    let parsed = |i: usize, valued: &[&'static str], flags: &[&'static str]| {
        parse_args(rest(i), valued, flags)
    };
    match word(0) {
        Some("run") => with_args(parsed(1, &["seed", "loops"], &[]), cmd_run),
        Some("sweep") => with_args(parsed(1, &["seeds", "loops"], &["keep-going"]), cmd_sweep),
        Some("replay") => with_args(parsed(1, &["config"], &[]), cmd_replay),
        Some("trace") => match word(1) {
            Some("dump") => with_args(parsed(2, &[], &[]), cmd_dump),
            Some("to-scenario") => with_args(parsed(2, &["name", "config"], &[]), cmd_to_scenario),
            _ => {
                eprintln!("{USAGE}");
                2
            }
        },
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

/// `replay TRACE [--config FILE]`: feeds a recorded trace to a fresh core, every loop of a
/// node of several (their files found beside TRACE); exit 0 when every output digest of
/// every loop matched.
fn cmd_replay(args: Args) -> i32 {
    let Some(trace) = args.one_path() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let config = args.path("config");
    match crate::trace::replay::replay_node(&trace, config.as_deref()) {
        Ok(report) => {
            println!("{report}");
            if report.is_identical() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("turnpike-sim: {e}");
            2
        }
    }
}

/// `trace dump TRACE`: the trace as JSON lines on stdout.
fn cmd_dump(args: Args) -> i32 {
    let Some(trace) = args.one_path() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match crate::trace::dump::dump(&trace, &mut out) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("turnpike-sim: {e}");
            2
        }
    }
}

/// `trace to-scenario TRACE [--name NAME] [--config FILE]`: the clients' traffic as a
/// script, on stdout. With `--config` (the relay's secrets), the script is run once and an
/// `[expect]` table pins what it did.
fn cmd_to_scenario(args: Args) -> i32 {
    let Some(trace) = args.one_path() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let name = match args.string("name") {
        Ok(n) => n.unwrap_or_else(|| "from-trace".to_string()),
        Err(e) => return usage(&e),
    };
    match crate::trace::to_scenario::to_scenario(&trace, &name) {
        Ok(text) => {
            let Some(config) = args.path("config") else {
                print!("{text}");
                return 0;
            };
            let secrets = match crate::trace::secrets_from_config(Some(&config)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("turnpike-sim: {e}");
                    return 2;
                }
            };
            match crate::trace::to_scenario::run_script(&text, &secrets) {
                Ok(rep) => {
                    print!("{text}{}", crate::trace::to_scenario::expect_table(&rep));
                    0
                }
                Err(e) => {
                    eprintln!("turnpike-sim: the script does not run: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("turnpike-sim: {e}");
            2
        }
    }
}

/// A subcommand's arguments, tokenized by lexopt: its paths (the positional arguments,
/// as the OS gave them), the values of its options and the flags given.
#[derive(Debug, Default)]
struct Args {
    paths: Vec<PathBuf>,
    values: BTreeMap<&'static str, OsString>,
    flags: BTreeSet<&'static str>,
}

impl Args {
    /// The only path, if exactly one was given.
    fn one_path(&self) -> Option<PathBuf> {
        match self.paths.as_slice() {
            [p] => Some(p.clone()),
            _ => None,
        }
    }

    /// The value of `--key`, as a path.
    fn path(&self, key: &str) -> Option<PathBuf> {
        self.values.get(key).map(PathBuf::from)
    }

    /// The value of `--key`, which must be UTF-8.
    fn string(&self, key: &str) -> Result<Option<String>, String> {
        self.values
            .get(key)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("--{key}: `{}` is not valid UTF-8", v.to_string_lossy()))
            })
            .transpose()
    }

    /// The value of `--key` parsed, or `err` when it does not parse.
    fn parsed<T: std::str::FromStr>(&self, key: &str, err: &str) -> Result<Option<T>, String> {
        match self.string(key)? {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| err.to_string()),
        }
    }
}

/// Tokenizes `args` with lexopt: `--key value` (or `--key=value`) for the keys in
/// `valued`, `--flag` for those in `flags`, paths otherwise. An unknown option is an
/// error (it was taken for a path, or swallowed the next argument, before).
fn parse_args(
    args: &[OsString],
    valued: &[&'static str],
    flags: &[&'static str],
) -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    let mut out = Args::default();
    while let Some(a) = p.next().map_err(|e| e.to_string())? {
        let key = match a {
            Value(v) => {
                out.paths.push(PathBuf::from(v));
                continue;
            }
            Long(l) => l.to_string(),
            Short(c) => return Err(format!("unknown option -{c}")),
        };
        if let Some(k) = valued.iter().find(|k| **k == key) {
            let v = p.value().map_err(|_| format!("--{key} needs a value"))?;
            out.values.insert(k, v);
        } else if let Some(k) = flags.iter().find(|k| **k == key) {
            out.flags.insert(k);
        } else {
            return Err(format!("unknown option --{key}"));
        }
    }
    Ok(out)
}

/// Runs `cmd` on parsed arguments, or prints the parse error and the usage (exit 2).
fn with_args(args: Result<Args, String>, cmd: fn(Args) -> i32) -> i32 {
    match args {
        Ok(a) => cmd(a),
        Err(e) => usage(&e),
    }
}

fn cmd_run(args: Args) -> i32 {
    let seed = match args.parsed("seed", "--seed needs a number") {
        Ok(s) => s.unwrap_or(1u64),
        Err(e) => return usage(&e),
    };
    let loops = match args.parsed("loops", "--loops needs a number") {
        Ok(n) => n,
        Err(e) => return usage(&e),
    };
    if let Some(extra) = args.paths.get(1) {
        return usage(&format!("unexpected {:?}", extra.display().to_string()));
    }
    let file = args.paths.first().cloned();
    let Some(file) = file else {
        return usage("which scenario?");
    };
    if is_trace_script_file(&file) {
        return match run_trace_script(&file) {
            Ok(_) => {
                println!("result: ok");
                0
            }
            Err(()) => 1,
        };
    }
    let sc = match Scenario::load(&file) {
        Ok(s) => with_loops(s, loops),
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let started = std::time::Instant::now();
    let out = match run(
        &sc,
        &RunOptions {
            seed,
            trace_lines: TRACE_LINES,
        },
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return 2;
        }
    };
    let wall = started.elapsed();
    println!("scenario {} ({}), seed {seed}", sc.name, file.display());
    for f in &out.summary.fault_profile {
        println!("  fault: {f}");
    }
    print_summary(&out, wall);
    if let Some(k) = &sc.known_core_bug {
        println!(
            "  known core bug (expected to stop on `{}`): {}",
            k.invariant,
            k.note.trim()
        );
    }
    match &out.violation {
        None if sc.known_core_bug.is_some() => {
            println!("result: ok, but the known core bug did not show: is it fixed?");
            1
        }
        None => {
            println!("result: ok");
            0
        }
        Some(v) if sc.is_known_bug(v.invariant) => {
            print_failure(&file, &out, loops);
            println!("result: the known core bug, as expected");
            0
        }
        Some(_) => {
            print_failure(&file, &out, loops);
            1
        }
    }
}

fn cmd_sweep(args: Args) -> i32 {
    let seeds = match args.string("seeds") {
        Ok(None) => 1..=100u64,
        Ok(Some(s)) => match parse_range(&s) {
            Some(r) => r,
            None => return usage("--seeds wants A..B"),
        },
        Err(e) => return usage(&e),
    };
    let loops = match args.parsed("loops", "--loops needs a number") {
        Ok(n) => n,
        Err(e) => return usage(&e),
    };
    let keep_going = args.flags.contains("keep-going");
    let paths = args.paths;
    let files = match scenario_files(&paths) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => return usage("no scenario files"),
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let mut failures = 0u32;
    let mut known_bugs = 0u32;
    let started = std::time::Instant::now();
    let mut events = 0u64;
    // A trace script runs once, whatever the seeds.
    let total: u64 = files
        .iter()
        .map(|f| {
            if is_trace_script_file(f) {
                1
            } else {
                seeds.end() - seeds.start() + 1
            }
        })
        .sum();
    let mut done = 0u64;
    for file in &files {
        if is_trace_script_file(file) {
            done += 1;
            match run_trace_script(file) {
                Ok(rep) => events += rep.inputs + rep.timeouts,
                Err(()) => {
                    failures += 1;
                    if !keep_going {
                        return 1;
                    }
                }
            }
            continue;
        }
        let sc = match Scenario::load(file) {
            Ok(s) => with_loops(s, loops),
            Err(e) => {
                eprintln!("{e}");
                return 2;
            }
        };
        for seed in seeds.clone() {
            done += 1;
            print!(
                "\r{:<28} seed {seed:<6} [{done}/{total}] failures {failures}   ",
                sc.name
            );
            let _ = std::io::stdout().flush();
            let out = match run(
                &sc,
                &RunOptions {
                    seed,
                    trace_lines: TRACE_LINES,
                },
            ) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("\n{}: {e}", file.display());
                    return 2;
                }
            };
            events += out.summary.events;
            let known = match (&out.violation, &sc.known_core_bug) {
                (Some(v), Some(_)) => sc.is_known_bug(v.invariant),
                (None, Some(_)) => {
                    println!(
                        "\n{}: seed {seed} passed although a known core bug is declared: fixed?",
                        sc.name
                    );
                    failures += 1;
                    true
                }
                _ => false,
            };
            if known {
                known_bugs += 1;
            } else if out.violation.is_some() {
                failures += 1;
                println!();
                print_failure(file, &out, loops);
                if !keep_going {
                    return 1;
                }
            }
        }
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "\n{done} runs, {failures} failures, {known_bugs} runs stopped by a known core bug, {events} events in {wall:.1} s ({:.0} events/s)",
        events as f64 / wall
    );
    i32::from(failures > 0)
}

/// Runs a trace script once and prints what it did, or why it failed (with the command that
/// reproduces it).
fn run_trace_script(file: &Path) -> Result<crate::trace::to_scenario::ScriptReport, ()> {
    let started = std::time::Instant::now();
    match crate::trace::to_scenario::run_script_file(file) {
        Ok(rep) => {
            println!(
                "\ntrace script {}: {rep} in {:.3} s",
                file.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(rep)
        }
        Err(e) => {
            println!("\nFAILED: trace script {e}");
            Err(())
        }
    }
}

fn print_summary(out: &Outcome, wall: std::time::Duration) {
    let s = &out.summary;
    let wall_s = wall.as_secs_f64().max(1e-9);
    println!(
        "  virtual time {:.1} s, {} events, queue high water {}",
        s.virtual_time.as_secs_f64(),
        s.events,
        s.queue_high_water
    );
    println!(
        "  sessions {}: connected {:?}, failed {}; allocations {}; requests {}",
        s.sessions, s.connected, s.failed, s.allocations, s.requests
    );
    if s.loop_messages > 0 {
        println!("  messages between event loops {}", s.loop_messages);
    }
    let u = &s.uclients;
    if u.sessions > 0 {
        println!(
            "  scripted clients: {} sessions, {} allocated, {} EVEN-PORT pairs, races {}/{} filled the quota, refusals {:?}, timeouts {}",
            u.sessions, u.allocated, u.pairs, u.races.1, u.races.0, u.codes, u.timeouts
        );
    }
    println!(
        "  508 answers {}, rate-limited {}, PROXY accepted {}, streams rejected {:?}",
        s.answers_508, s.rate_limited, s.proxy_accepted, s.rejected
    );
    println!("  datagrams {} (lost {})", s.datagrams.0, s.datagrams.1);
    let ms = |v: u64| match v {
        u64::MAX => "never".to_string(),
        v => format!("{v} ms"),
    };
    for (group, [p50, p99]) in &s.time_to_relay_ms {
        println!(
            "  time-to-relay ({group}) p50 {}, p99 {}",
            ms(*p50),
            ms(*p99)
        );
    }
    for &(victim, spoofed, reflected) in &s.reflection {
        println!(
            "  reflection on {victim}: {spoofed} bytes in its name reached the relay, it got {reflected} ({:.2}x)",
            reflected as f64 / spoofed.max(1) as f64
        );
    }
    if let Some(f) = &s.fleet {
        println!(
            "  fleet: redirects {}, drains ended {} ({} at the timeout, {} tokens redeemed while draining), kills {}, calls reconnected {} (longest {} ms)",
            f.redirects,
            f.restarts,
            f.drain_timeouts,
            f.drain_redemptions,
            f.kills,
            f.reconnects,
            f.longest_reconnect.as_millis()
        );
    }
    if s.nat_mappings > 0 {
        println!("  NAT port mappings {}", s.nat_mappings);
    }
    let r = &s.rotation;
    if r.reloads > 0 {
        println!(
            "  reloads applied by loops {}: old-secret Allocates refused {}, old credentials kept before expiry {}, refused past it {}",
            r.reloads, r.old_secret_refused, r.old_credential_kept, r.old_credential_expired
        );
    }
    if s.tls.handshakes > 0 || !s.tls.failed.is_empty() {
        println!(
            "  native TLS handshakes {}, failed {:?}",
            s.tls.handshakes, s.tls.failed
        );
    }
    println!(
        "  wall {:.3} s: {:.0} events/s, virtual/wall {:.0}x",
        wall_s,
        s.events as f64 / wall_s,
        s.virtual_time.as_secs_f64() / wall_s
    );
    println!("  digest {:016x}", out.digest);
}

/// The scenario as loaded, or with every server a node of `loops` loops.
fn with_loops(sc: Scenario, loops: Option<u16>) -> Scenario {
    match loops {
        Some(n) => sc.with_loops(n),
        None => sc,
    }
}

fn print_failure(file: &Path, out: &Outcome, loops: Option<u16>) {
    let Some(v) = &out.violation else { return };
    println!(
        "FAILED: seed {} violated `{}` at {:.6} s",
        out.seed,
        v.invariant,
        v.at.since(crate::runner::START).as_secs_f64()
    );
    println!("  {}", v.detail);
    println!("  last events:");
    for l in &out.trace {
        println!("    {l}");
    }
    let loops = loops.map(|n| format!(" --loops {n}")).unwrap_or_default();
    println!(
        "  reproduce: turnpike-sim run {} --seed {}{loops}",
        file.display(),
        out.seed
    );
}

/// `A..B` (inclusive of both ends, as people read it) or a single number.
fn parse_range(s: &str) -> Option<std::ops::RangeInclusive<u64>> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.trim_start_matches('=').parse().ok()?);
            (a <= b).then_some(a..=b)
        }
        None => {
            let n = s.parse().ok()?;
            Some(n..=n)
        }
    }
}

/// The `.toml` files named, or found (sorted) in the directories named; a trace script's
/// secrets (`*.secrets.toml`) are not scenarios and are left out of directories.
pub fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .filter(|f| {
                    !f.file_name()
                        .is_some_and(|n| n.to_string_lossy().ends_with(".secrets.toml"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn usage(msg: &str) -> i32 {
    eprintln!("{msg}\n{USAGE}");
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str], valued: &[&'static str], flags: &[&'static str]) -> Result<Args, String> {
        let a: Vec<OsString> = a.iter().map(OsString::from).collect();
        parse_args(&a, valued, flags)
    }

    #[test]
    fn arguments() {
        let a = args(
            &["s.toml", "--seed=7", "--loops", "2"],
            &["seed", "loops"],
            &[],
        )
        .unwrap();
        assert_eq!(a.one_path(), Some(PathBuf::from("s.toml")));
        assert_eq!(a.parsed::<u64>("seed", "x"), Ok(Some(7)));
        assert_eq!(a.parsed::<u32>("loops", "x"), Ok(Some(2)));
        let a = args(&["d", "--keep-going", "e"], &["seeds"], &["keep-going"]).unwrap();
        assert_eq!(a.paths.len(), 2);
        assert!(a.flags.contains("keep-going"));
        assert!(args(&["t", "--frob", "x"], &["config"], &[])
            .unwrap_err()
            .contains("unknown option --frob"));
        assert!(args(&["t", "--config"], &["config"], &[])
            .unwrap_err()
            .contains("--config needs a value"));
        assert!(args(&["-x"], &[], &[]).is_err());
        let a = args(&["--seed", "x"], &["seed"], &[]).unwrap();
        assert_eq!(
            a.parsed::<u64>("seed", "--seed needs a number"),
            Err("--seed needs a number".into())
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("1..1000"), Some(1..=1000));
        assert_eq!(parse_range("7"), Some(7..=7));
        assert_eq!(parse_range("5..1"), None);
    }
}
