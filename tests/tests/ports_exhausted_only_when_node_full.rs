//! The node answers 508 (Insufficient Capacity) for want of ports only when it has no free
//! port, whichever loop a client lands on (issue 12). A relay range of exactly 4 × 64 UDP
//! ports, `workers = 4` (each loop starts with a slice of 64), quotas out of the way: fresh
//! clients (each its own UDP 5-tuple, so spread over the loops) allocate one after another.
//! Every one of the first 256 must succeed, each on its own port of the range, and only
//! then do the next ones get 508. A loop that answers 508 when its own slice is full while
//! another loop still has free ports fails this.
//!
//! coturn, one pool for all its threads, checks the harness and the expectation.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use turnpike_tests::race::{one_by_one, Tally};
use turnpike_tests::{
    per_server, reserve_udp_range, RunningServer, ServerKind, ServerSpec, PORTS_PER_LOOP,
};

per_server!(no_508_while_a_port_is_free);

const USER: &str = "alice";
const PASSWORD: &str = "alicepass";
const LOOPS: u16 = 4;
/// Refusals in a row after which the node is taken to be full.
const FULL_AFTER: usize = 16;

fn no_508_while_a_port_is_free(kind: ServerKind) {
    let ports = usize::from(LOOPS * PORTS_PER_LOOP);
    let reserved = reserve_udp_range(LOOPS * PORTS_PER_LOOP);
    let range = reserved.span();
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.workers = Some(u32::from(LOOPS));
    spec.relay_ports = Some(range);
    spec.user_quota = Some(100_000);
    spec.total_quota = Some(100_000);
    let mut server = RunningServer::start(kind, spec);

    let t0 = Instant::now();
    let bound = (ports + 4 * FULL_AFTER, Duration::from_secs(60));
    let attempts = one_by_one(server.addr, bound, FULL_AFTER, USER, PASSWORD);
    let took = t0.elapsed();
    let tally = Tally::of(&attempts);
    let first_refusal = attempts.iter().position(|a| a.result.is_err());
    println!(
        "{}: {} attempts on {LOOPS} loops with {ports} relay ports in {took:?}: {tally}; \
         first refusal at attempt {}",
        kind.name(),
        attempts.len(),
        first_refusal.map_or("none".to_string(), |i| (i + 1).to_string()),
    );

    let relayed: BTreeSet<u16> = attempts
        .iter()
        .filter_map(|a| a.result.as_ref().ok())
        .map(|r| r.port())
        .collect();
    assert!(
        relayed.iter().all(|p| (range.0..=range.1).contains(p)),
        "relayed ports outside {range:?}: {relayed:?}"
    );
    assert_eq!(
        relayed.len(),
        tally.allocated,
        "two allocations share a relayed port"
    );
    assert_eq!(
        first_refusal,
        Some(ports),
        "the first refusal must come after all {ports} ports are taken, not before: {tally}"
    );
    assert_eq!(
        tally.allocated, ports,
        "every port of the range must be handed out: {tally}"
    );
    let after_full = attempts.get(ports..).unwrap_or_default();
    assert!(
        after_full.len() >= FULL_AFTER
            && after_full
                .iter()
                .all(|a| a.result.as_ref().err().and_then(|e| e.code()) == Some(508)),
        "once the node is full every attempt must get 508: {}",
        Tally::of(after_full)
    );
    server.assert_running();
}
