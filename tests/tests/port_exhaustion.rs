//! Port exhaustion for real: a relay range of 4 UDP ports, 4 allocations take them all,
//! the fifth is answered 508 (Insufficient Capacity, RFC 8656 §7.2 step 8 / §19); once one
//! allocation is deleted (Refresh with LIFETIME 0, RFC 8656 §8) and its port's quarantine
//! has passed, a new allocation succeeds on that very port.
//!
//! The allocations are made by this crate's own small TURN client, one UDP socket each.
//! coturn has no quarantine: its variant checks the rest (and the client). Four ports are
//! too few for several event loops: the relay runs one (`workers = 1`, stated, and checked
//! by the harness); exhaustion across loops is `ports_exhausted_only_when_node_full.rs`.

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;
use turnpike_tests::turn::TurnClient;
use turnpike_tests::{per_server, reserve_udp_range, RunningServer, ServerKind, ServerSpec};

per_server!(fifth_allocation_gets_508_until_a_port_is_freed);

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";
const QUARANTINE_MS: u64 = 1500;

fn client(server: &RunningServer) -> TurnClient {
    TurnClient::udp(server.addr, USER, PASSWORD).expect("a UDP socket on loopback")
}

fn fifth_allocation_gets_508_until_a_port_is_freed(kind: ServerKind) {
    let reserved = reserve_udp_range(4);
    let range = reserved.span();
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.relay_ports = Some(range);
    spec.workers = Some(1);
    spec.relay_port_quarantine_ms = QUARANTINE_MS;
    let mut server = RunningServer::start(kind, spec);
    let in_range = |p: u16| (range.0..=range.1).contains(&p);

    let mut holders = Vec::new();
    let mut ports = BTreeSet::new();
    for i in 0..4 {
        let mut c = client(&server);
        let relayed = c
            .allocate()
            .unwrap_or_else(|e| panic!("allocation {} of 4 failed: {e:?}", i + 1));
        assert!(
            in_range(relayed.port()),
            "relayed port {} outside {range:?}",
            relayed.port()
        );
        ports.insert(relayed.port());
        holders.push((c, relayed));
    }
    assert_eq!(
        ports.len(),
        4,
        "four allocations must hold four distinct ports: {ports:?}"
    );
    println!("{}: 4 allocations hold relay ports {ports:?}", kind.name());

    let mut fifth = client(&server);
    let refused = fifth.allocate();
    assert_eq!(
        refused.as_ref().err().and_then(|e| e.code()),
        Some(508),
        "the fifth allocation must get 508: {refused:?}"
    );
    println!("{}: fifth allocation refused: {refused:?}", kind.name());

    let (mut first, freed) = holders.remove(0);
    first
        .refresh(0)
        .expect("deleting an allocation with Refresh LIFETIME=0");
    println!(
        "{}: deleted the allocation on port {}",
        kind.name(),
        freed.port()
    );

    if kind == ServerKind::Turnpike {
        // The freed port is in quarantine: there is still no port to give.
        let mut early = client(&server);
        let r = early.allocate();
        assert_eq!(
            r.as_ref().err().and_then(|e| e.code()),
            Some(508),
            "a port in quarantine was handed out: {r:?}"
        );
    }

    thread::sleep(Duration::from_millis(QUARANTINE_MS + 700));
    let mut late = client(&server);
    let relayed = late.allocate().unwrap_or_else(|e| {
        panic!("after deletion and quarantine, an allocation must succeed: {e:?}")
    });
    assert_eq!(
        relayed.port(),
        freed.port(),
        "the only free port is the one freed"
    );
    println!(
        "{}: after the quarantine a new allocation got port {}",
        kind.name(),
        relayed.port()
    );

    server.assert_running();
    if server.kind.has_event_log() {
        let ev = server.wait_event(Duration::from_secs(3), |e| e["event"] == "ports_exhausted");
        assert!(
            ev.is_some(),
            "no ports_exhausted record in the event log: {:#?}",
            server.events()
        );
        let deleted = server.wait_event(Duration::from_secs(3), |e| {
            e["event"] == "allocation_deleted" && e["reason"] == "refresh_0"
        });
        assert!(
            deleted.is_some(),
            "no allocation_deleted (refresh_0) record: {:#?}",
            server.events()
        );
    }
}
