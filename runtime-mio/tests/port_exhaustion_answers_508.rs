//! With a relay range of four ports, a fifth allocation is refused with 508 (RFC 8656
//! §7.2); the exhaustion is in the event log; once an allocation is deleted and its port's
//! quarantine has passed, a new allocation succeeds.

mod common;

use common::{free_range, Relay, TurnClient};
use std::time::Duration;
use turnpike_core::client::ClientEvent;

#[test]
fn port_exhaustion_answers_508() {
    let base = free_range(4);
    let extra = format!(
        "relay_port_min = {}\nrelay_port_max = {}\nrelay_port_quarantine_ms = 300",
        base,
        base + 3
    );
    let relay = Relay::start("ports", &extra);
    let mut clients: Vec<TurnClient> = (0..4)
        .map(|_| {
            let mut c = TurnClient::udp(relay.addr(), "alice", "pw");
            c.allocate();
            c
        })
        .collect();
    let mut fifth = TurnClient::udp(relay.addr(), "alice", "pw");
    let now = fifth.now();
    fifth.client.allocate(now);
    assert!(
        fifth.pump_until(|e| matches!(e, ClientEvent::AllocateFailed { code: 508, .. })),
        "{:?}",
        fifth.events
    );
    let recs = relay.records_until(Duration::from_secs(3), |r| r["event"] == "ports_exhausted");
    assert!(
        recs.iter().any(|r| r["event"] == "ports_exhausted"),
        "{recs:?}"
    );

    // Delete one (Refresh with lifetime 0), wait out the quarantine, try again.
    let mut first = clients.remove(0);
    let now = first.now();
    first.client.refresh(now, 0);
    assert!(
        first.pump_until(|e| matches!(e, ClientEvent::Deleted)),
        "{:?}",
        first.events
    );
    std::thread::sleep(Duration::from_millis(600));
    let mut again = TurnClient::udp(relay.addr(), "alice", "pw");
    again.allocate();
}
