//! `turnpike-load step`: how soon turnpike's loops go back to their own threads when the
//! load jumps. Its default node runs lightly loaded loops on fewer threads (`pack_loops`);
//! here it first carries paced audio (20k packets/s, gathered), then at once UDP flat out.
//! A watcher reads each loop thread's CPU time from `/proc` every few milliseconds: a
//! loop that used none of its own thread during the calm phase was hosted, and the first
//! tick its thread uses again is when it went home. The resolution is the kernel's clock
//! tick (10 ms at the usual 100 Hz) plus the watcher's period.

use crate::compare::{echo_any, flat, report, Options};
use crate::flows::Mode;
use crate::procfs;
use crate::scenarios::Session;
use crate::servers::{self, Kind};
use crate::shapes::{Shape, SETTLE};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use turnpike_core::Transport;

/// How often the watcher reads the loop threads' CPU time.
const WATCH: Duration = Duration::from_millis(2);

/// Runs the step `o.rounds` times, each on a fresh relay.
pub fn run(o: &Options) -> Result<(), String> {
    let calm = Shape::Audio(20_000);
    for round in 1..=o.rounds {
        let srv = servers::start(Kind::Turnpike, &o.layout)?;
        let mut quiet = Session::open(
            srv.addr,
            Transport::Udp,
            Mode::Channel,
            calm.flows(o),
            0,
            echo_any(),
        )?;
        let mut busy = Session::open(
            srv.addr,
            Transport::Udp,
            Mode::Channel,
            o.clients,
            1000,
            echo_any(),
        )?;
        std::thread::sleep(SETTLE);
        println!(
            "round {round}: {} for {} s, then UDP flat out ({} clients, {} in flight); load average {}",
            calm.name(),
            o.duration.as_secs_f64(),
            o.clients,
            o.window,
            procfs::load_average()
        );
        let t0 = procfs::loop_ticks(srv.pid);
        report("calm", quiet.run(calm.offer(o), Some(srv.pid)));
        let t1 = procfs::loop_ticks(srv.pid);
        let hosted = unused(&t0, &t1);
        println!(
            "  loop threads' CPU-s in the calm phase: {}",
            procfs::loop_usage(&t0, &t1)
        );
        if hosted.is_empty() {
            println!("  no loop was hosted during the calm phase: nothing to time");
            srv.stop();
            continue;
        }
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (done, pid, hosted, base) = (done.clone(), srv.pid, hosted.clone(), t1.clone());
            std::thread::spawn(move || watch(pid, &hosted, &base, &done))
        };
        let step = Instant::now();
        report("burst", busy.run(flat(o), Some(srv.pid)));
        done.store(true, Ordering::Relaxed);
        let home = watcher
            .join()
            .map_err(|_| "the watcher panicked".to_string())?;
        for (name, at) in hosted.iter().zip(home) {
            match at {
                Some(t) => println!(
                    "  {name}: hosted in the calm phase, on its own thread again {:.0} ms after the step",
                    t.saturating_duration_since(step).as_secs_f64() * 1000.0
                ),
                None => println!("  {name}: hosted in the calm phase, still hosted at the end of the burst"),
            }
        }
        srv.stop();
    }
    Ok(())
}

/// The loop threads that used no CPU between two readings.
fn unused(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<String> {
    after
        .iter()
        .filter(|(name, t)| before.iter().any(|(n, b)| n == name && b == t))
        .map(|(name, _)| name.clone())
        .collect()
}

/// For each of `hosted`, when its thread first used CPU beyond `base`, until `done`.
fn watch(
    pid: u32,
    hosted: &[String],
    base: &[(String, u64)],
    done: &AtomicBool,
) -> Vec<Option<Instant>> {
    let mut home: Vec<Option<Instant>> = vec![None; hosted.len()];
    while !done.load(Ordering::Relaxed) && home.iter().any(Option::is_none) {
        std::thread::sleep(WATCH);
        let now = procfs::loop_ticks(pid);
        let seen = Instant::now();
        for (name, at) in hosted.iter().zip(home.iter_mut()) {
            // A thread not read (the process gone) is not a thread that ran.
            let ticks = |v: &[(String, u64)]| v.iter().find(|(n, _)| n == name).map(|e| e.1);
            if at.is_none() && ticks(&now) > ticks(base) && ticks(base).is_some() {
                *at = Some(seen);
            }
        }
    }
    home
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_used_no_cpu_was_hosted() {
        let t = |a: u64, b: u64| vec![("loop-0".to_string(), a), ("loop-1".to_string(), b)];
        assert_eq!(unused(&t(10, 5), &t(90, 5)), vec!["loop-1".to_string()]);
        assert!(unused(&t(10, 5), &t(90, 6)).is_empty());
    }
}
