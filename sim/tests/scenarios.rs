//! Every scenario over a fixed set of seeds: the invariants hold after every step, and
//! each scenario's expectations and liveness hold at the end. A scenario that declares
//! a known core bug must stop on exactly that invariant. Every scenario runs again with
//! its servers as nodes of 4 event loops (DESIGN.md: "nodes of several loops").

/// Loops of the second pass over every scenario.
const LOOPS: u16 = 4;

mod common;

use turnpike_sim::runner::{run, RunOptions};
use turnpike_sim::scenario::Scenario;

fn check(file: &std::path::Path, sc: &Scenario, seed: u64) {
    check_as(file, sc, seed, None)
}

/// Runs `sc` with `seed` (its servers overridden to `loops` loops, if given) and panics
/// with the command that reproduces a violation.
fn check_as(file: &std::path::Path, sc: &Scenario, seed: u64, loops: Option<u16>) {
    let sc = &match loops {
        Some(n) => sc.clone().with_loops(n),
        None => sc.clone(),
    };
    let flag = loops.map(|n| format!(" --loops {n}")).unwrap_or_default();
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
            "{}: seed {seed}{flag} violated `{}`: {}\n{}\nreproduce: turnpike-sim run {} --seed {seed}{flag}",
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
            "even-port-pairs-4-loops",
            "user-quota-race-4-loops",
            "uneven-hash-borrow-4-loops",
        ]
        .contains(&sc.name.as_str())
        {
            check(&file, &sc, 1);
        }
        if ["relay-drops-udp", "clock-jump"].contains(&sc.name.as_str()) {
            check_as(&file, &sc, 1, Some(LOOPS));
        }
    }
}

/// The CI suite: every scenario over fixed seeds (20 each, 10 for a crowd of 1 000, 2 for
/// the day-long one).
/// Minutes in release, far longer in debug: run with --release -- --ignored.
#[test]
#[ignore = "long: run with --release -- --ignored"]
fn every_scenario_passes_on_fixed_seeds() {
    for (file, sc) in common::scenarios() {
        for seed in seeds_of(&sc) {
            check(&file, &sc, seed);
        }
    }
}

/// The CI suite's seeds for a scenario: 1..=20, 1..=10 for a crowd of 1 000 browsers
/// or more (about 0.5 s a run: CI time), or 1..=2 for a day-long one.
fn seeds_of(sc: &Scenario) -> std::ops::RangeInclusive<u64> {
    let clients: u32 = sc.clients.iter().map(|g| g.count).sum();
    if sc.duration_s > 3600 {
        1..=2
    } else if clients >= 1000 {
        1..=10
    } else {
        1..=20
    }
}

/// The CI suite's second pass: every scenario whose servers are not all nodes of 4
/// loops already, now as nodes of 4 loops, over the same seeds. Run with --release --
/// --ignored.
#[test]
#[ignore = "long: run with --release -- --ignored"]
fn every_scenario_passes_as_a_node_of_4_loops() {
    for (file, sc) in common::scenarios() {
        if sc.servers.iter().all(|s| s.loops == LOOPS) {
            continue; // already nodes of 4 loops in the first pass
        }
        for seed in seeds_of(&sc) {
            check_as(&file, &sc, seed, Some(LOOPS));
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
