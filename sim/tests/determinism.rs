//! Same seed, same run: the digest of everything that happened is identical when a
//! scenario runs twice with one seed, and differs with another seed; also with every
//! server a node of 4 event loops (messages between loops delayed by the seed).

mod common;

use turnpike_sim::runner::{run, RunOptions};
use turnpike_sim::scenario::Scenario;

/// The scenario cut short (determinism does not need the whole story), so the check
/// stays fast in debug builds.
fn shortened(mut sc: Scenario) -> Scenario {
    sc.duration_s = sc.duration_s.min(40);
    sc.liveness_s = sc.liveness_s.min(20);
    sc.drain_s = sc.drain_s.min(60);
    sc
}

fn digest(sc: &Scenario, seed: u64) -> u64 {
    let out = run(
        sc,
        &RunOptions {
            seed,
            trace_lines: 0,
        },
    )
    .expect("scenario builds");
    assert!(out.summary.events > 100, "{}: too few events", sc.name);
    out.digest
}

#[test]
fn same_seed_same_digest_for_every_scenario() {
    for (file, sc) in common::scenarios() {
        let sc = shortened(sc);
        same_seed_same_digest(&file, &sc);
    }
}

#[test]
fn same_seed_same_digest_as_nodes_of_4_loops() {
    for (file, sc) in common::scenarios() {
        if sc.servers.iter().all(|s| s.loops > 1) {
            continue; // checked as it is
        }
        same_seed_same_digest(&file, &shortened(sc).with_loops(4));
    }
}

fn same_seed_same_digest(file: &std::path::Path, sc: &Scenario) {
    let loops = sc.servers.iter().map(|s| s.loops).max().unwrap_or(1);
    let a = digest(sc, 7);
    let b = digest(sc, 7);
    assert_eq!(
        a,
        b,
        "{} ({loops} loops): two runs with seed 7 differ",
        file.display()
    );
    let c = digest(sc, 8);
    assert_ne!(
        a,
        c,
        "{} ({loops} loops): seeds 7 and 8 gave the same digest",
        file.display()
    );
}

/// The full-length runs, churn-24h included, as declared and as nodes of 4 loops (run
/// with --release).
#[test]
#[ignore = "long: run with --release -- --ignored"]
fn same_seed_same_digest_full_length() {
    for (file, sc) in common::scenarios() {
        assert_eq!(digest(&sc, 3), digest(&sc, 3), "{}", file.display());
        if sc.servers.iter().all(|s| s.loops > 1) {
            continue;
        }
        let sc = sc.with_loops(4);
        assert_eq!(
            digest(&sc, 3),
            digest(&sc, 3),
            "{} (4 loops)",
            file.display()
        );
    }
}
