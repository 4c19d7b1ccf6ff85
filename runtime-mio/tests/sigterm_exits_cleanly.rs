//! SIGTERM stops the relay within a second with exit code 0, recording what was open.

mod common;

use common::{Relay, TurnClient};
use std::time::{Duration, Instant};

#[test]
fn sigterm_exits_cleanly() {
    let mut relay = Relay::start("sigterm", "");
    let mut c = TurnClient::udp(relay.addr(), "alice", "pw");
    c.allocate();
    let t0 = Instant::now();
    relay.terminate();
    let status = loop {
        if let Some(s) = relay.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "still running 1 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let recs = relay.records_until(Duration::ZERO, |_| true);
    let events: Vec<&str> = recs.iter().filter_map(|r| r["event"].as_str()).collect();
    assert_eq!(events.first(), Some(&"start"), "{events:?}");
    assert_eq!(events.last(), Some(&"stop"), "{events:?}");
    assert!(
        recs.iter()
            .any(|r| r["event"] == "allocation_deleted" && r["reason"] == "shutdown"),
        "{recs:?}"
    );
}
