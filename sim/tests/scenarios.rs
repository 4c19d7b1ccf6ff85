//! Every scenario over a fixed set of seeds: the invariants hold after every step, and
//! each scenario's expectations and liveness hold at the end. A scenario that declares
//! a known core bug must stop on exactly that invariant.

mod common;

use turnpike_sim::runner::{run, RunOptions};
use turnpike_sim::scenario::Scenario;

fn check(file: &std::path::Path, sc: &Scenario, seed: u64) {
    let out = run(
        sc,
        &RunOptions {
            seed,
            trace_lines: 40,
        },
    )
    .expect("scenario builds");
    match (&out.violation, &sc.known_core_bug) {
        (None, None) => {}
        (Some(v), Some(_)) if sc.is_known_bug(v.invariant) => {}
        (None, Some(k)) => panic!(
            "{}: seed {seed} passed; known core bug fixed? {}",
            sc.name, k.note
        ),
        (Some(v), _) => panic!(
            "{}: seed {seed} violated `{}`: {}\n{}\nreproduce: turnpike-sim run {} --seed {seed}",
            sc.name,
            v.invariant,
            v.detail,
            out.trace.join("\n"),
            file.display()
        ),
    }
}

/// Quick enough for debug builds: the small scenarios, one seed each.
#[test]
fn small_scenarios_pass() {
    for (file, sc) in common::scenarios() {
        if [
            "relay-drops-udp",
            "proxy-header-to-plain-listener",
            "clock-jump",
        ]
        .contains(&sc.name.as_str())
        {
            check(&file, &sc, 1);
        }
    }
}

/// The CI suite: every scenario over fixed seeds (20 each, 2 for the day-long one).
/// Minutes in release, far longer in debug: run with --release -- --ignored.
#[test]
#[ignore = "long: run with --release -- --ignored"]
fn every_scenario_passes_on_fixed_seeds() {
    for (file, sc) in common::scenarios() {
        let seeds = if sc.duration_s > 3600 { 1..=2 } else { 1..=20 };
        for seed in seeds {
            check(&file, &sc, seed);
        }
    }
}

/// Every trace script under `scenarios/` (field traces kept as regression tests) runs with
/// its secrets and does what its `[expect]` table says.
#[test]
fn trace_scripts_pass() {
    let scripts = common::trace_scripts();
    assert!(!scripts.is_empty(), "no trace script under scenarios/");
    for file in scripts {
        if let Err(e) = turnpike_sim::trace::to_scenario::run_script_file(&file) {
            panic!("{e}");
        }
    }
}
