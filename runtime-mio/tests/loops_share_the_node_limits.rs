//! Two event loops hold the node's limits together, by messages between their cores that
//! the runtime carries: a user gets `user_quota` allocations in all (counted at the user's
//! home loop), and the node `total_quota` (a loop that runs out borrows from the other).
//! Clients on separate source ports land on both loops (SO_REUSEPORT); with 8 of them, all
//! on one loop happens 2 times in 256, and the counts must hold then too.

mod common;

use common::{free_range, Relay, TurnClient};
use turnpike_core::client::ClientEvent;

/// Allocates from `n` fresh UDP clients as `user`: the successes, and the error codes.
fn allocate_from(relay: &Relay, user: &str, n: usize) -> (Vec<TurnClient>, Vec<u16>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..n {
        let mut c = TurnClient::udp(relay.addr(), user, "pw");
        let now = c.now();
        c.client.allocate(now);
        let answered = c.pump_until(|e| {
            matches!(
                e,
                ClientEvent::Allocated { .. } | ClientEvent::AllocateFailed { .. }
            )
        });
        assert!(answered, "no answer: {:?}", c.events);
        let code = c.events.iter().find_map(|e| match e {
            ClientEvent::AllocateFailed { code, .. } => Some(*code),
            _ => None,
        });
        match code {
            Some(code) => refused.push(code),
            // Kept open so that they count.
            None => ok.push(c),
        }
    }
    (ok, refused)
}

fn two_loops(name: &str, quotas: &str) -> Relay {
    // 128 relay ports: 64 per loop, so two loops run.
    let base = free_range(128);
    let extra = format!(
        "workers = 2\nrelay_port_min = {}\nrelay_port_max = {}\n{quotas}",
        base,
        base + 127
    );
    Relay::start(name, &extra)
}

#[test]
fn user_quota_holds_for_the_node() {
    let relay = two_loops("user-quota", "user_quota = 2\ntotal_quota = 100");
    let (ok, refused) = allocate_from(&relay, "alice", 8);
    assert_eq!(ok.len(), 2, "refused with {refused:?}");
    assert!(refused.iter().all(|c| *c == 486), "{refused:?}");
}

#[test]
fn total_quota_holds_for_the_node() {
    let relay = two_loops("total-quota", "user_quota = 100\ntotal_quota = 3");
    let (ok, refused) = allocate_from(&relay, "alice", 8);
    assert_eq!(ok.len(), 3, "refused with {refused:?}");
    assert!(refused.iter().all(|c| *c == 508), "{refused:?}");
}
