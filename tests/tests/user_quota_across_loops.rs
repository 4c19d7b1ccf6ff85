//! One user's quota holds for the node, not per event loop (issue 12; RFC 8656 §7.2 step
//! 10: 486 Allocation Quota Reached). With `user_quota = 3` and `workers = 4`, 16 clients of
//! one user, each on its own UDP 5-tuple (so the kernel's `SO_REUSEPORT` hash spreads them
//! over the 4 loops), allocate at the same moment: exactly 3 succeed and the 13 others get
//! 486. Once the 3 are deleted (Refresh LIFETIME 0), a second race of 16 fresh clients again
//! gets exactly 3 allocations and 13 answers of 486.
//!
//! A relay that keeps the quota per loop lets up to 4 × 3 through. Against coturn (its
//! `--user-quota`, 4 relay threads) the test checks the harness and the expectation.

use std::thread;
use turnpike_tests::race::{delete_all, race, settle_after_delete, Tally};
use turnpike_tests::{per_server, RunningServer, ServerKind, ServerSpec};

per_server!(user_quota_holds_across_four_loops);

const USER: &str = "alice";
const PASSWORD: &str = "alicepass";
const QUOTA: usize = 3;
const CLIENTS: usize = 16;
const LOOPS: u32 = 4;

fn user_quota_holds_across_four_loops(kind: ServerKind) {
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.workers = Some(LOOPS);
    spec.user_quota = Some(QUOTA as u32);
    let mut server = RunningServer::start(kind, spec);

    for round in ["first race", "race after deleting them"] {
        let mut attempts = race(server.addr, CLIENTS, USER, PASSWORD);
        let tally = Tally::of(&attempts);
        println!(
            "{}: {round}: {CLIENTS} clients of one user with user_quota {QUOTA} on {LOOPS} loops: {tally}",
            kind.name()
        );
        let expected = Tally {
            allocated: QUOTA,
            refused: [(486, CLIENTS - QUOTA)].into_iter().collect(),
            unanswered: Vec::new(),
        };
        assert_eq!(
            tally, expected,
            "{round}: the user's quota of {QUOTA} must hold across the {LOOPS} loops"
        );
        delete_all(&mut attempts);
        thread::sleep(settle_after_delete(kind));
    }
    server.assert_running();
}
