//! Both ways a loop moves a poll round's bytes (`io_uring`), in the real binary: with
//! `io_uring = "off"` (`recvmmsg` and `sendmmsg` per socket, one read and one write per
//! connection) and with the default, `"auto"` (one io_uring submission for a round's UDP
//! receives, one for its sends, one for its stream reads and one for its stream writes).
//! Each relays coturn's `turnutils_uclient` to `turnutils_peer` over UDP and over TCP
//! (ChannelData) without loss, on the default loops (one per core; every loop relays some
//! of it, which `/metrics` counts per loop) and, for `"off"`, on one loop too. The path
//! asked for is the path in use, before and after the traffic: `/metrics`
//! (`turnpike_io_uring_loops`, loops on io_uring by path) and the start log say so.

use std::time::Duration;
use turnpike_tests::http::sample;
use turnpike_tests::server::Peer;
use turnpike_tests::uclient::{Credentials, Summary, Uclient};
use turnpike_tests::{skip_or_fail, wait_until, RunningServer, ServerKind, ServerSpec};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";
/// Clients per uclient run: with their RTCP allocations 16 4-tuples, all on one of two
/// loops by chance 2 in 65 536.
const CLIENTS: u32 = 8;
/// Messages per client: a run takes a few seconds.
const MESSAGES: u32 = 20;
/// The paths `turnpike_io_uring_loops` counts.
const PATHS: [&str; 3] = ["udp_receive", "udp_send", "streams"];

#[test]
fn off_relays_udp_and_tcp_on_the_default_loops() {
    relay_both_transports(Mode::Off, None);
}

#[test]
fn off_relays_udp_and_tcp_on_one_loop() {
    relay_both_transports(Mode::Off, Some(1));
}

#[test]
fn auto_relays_udp_and_tcp_on_the_default_loops_with_io_uring() {
    relay_both_transports(Mode::Auto, None);
}

/// The `io_uring` setting under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// `io_uring = "off"`.
    Off,
    /// No `io_uring` line: the default, `"auto"`.
    Auto,
}

/// Starts the relay as `mode` and `workers` say, checks the path it took, relays a uclient
/// run over UDP then one over TCP, and checks the path again.
fn relay_both_transports(mode: Mode, workers: Option<u32>) {
    if !ServerKind::Turnpike.available() {
        return;
    }
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.workers = workers;
    // Both runs' allocations (uclient leaves them to expire), more than the default quota.
    spec.user_quota = Some(100);
    if mode == Mode::Off {
        spec.extra.push(("io_uring".into(), "\"off\"".into()));
    }
    let peer = Peer::start();
    let mut server = RunningServer::start(ServerKind::Turnpike, spec);
    assert_path(&server, mode, "at start");
    for tcp in [false, true] {
        let before = server.metrics();
        let mut u = Uclient::new(
            server.addr,
            peer.addr,
            Credentials::Static {
                user: USER.into(),
                password: PASSWORD.into(),
            },
        );
        u.tcp = tcp;
        u.clients = CLIENTS;
        u.messages = MESSAGES;
        u.timeout = Duration::from_secs(30);
        let s = u.run_zero_loss();
        assert_relayed(&server, &before, tcp, &s);
    }
    assert_path(&server, mode, "after the traffic");
    server.assert_running();
}

/// The relay counted every message of the run both ways, over the client's transport,
/// and, with several loops, every loop relayed some of them.
fn assert_relayed(server: &RunningServer, before: &str, tcp: bool, s: &Summary) {
    let after = server.metrics();
    let transport = if tcp { "tcp" } else { "udp" };
    let delta = |series: &str| {
        let now = sample(&after, series).unwrap_or_else(|| panic!("no {series} in\n{after}"));
        now - sample(before, series).unwrap_or(0.0)
    };
    for direction in ["to_peer", "from_peer"] {
        let series = format!(
            "turnpike_relayed_packets_total{{transport=\"{transport}\",direction=\"{direction}\"}}"
        );
        assert_eq!(
            delta(&series),
            s.sent_msgs as f64,
            "{series}: the relay's count against uclient's {s}\n{after}"
        );
    }
    if server.loops < 2 {
        return;
    }
    for i in 0..server.loops {
        let series = format!("turnpike_loop_relayed_packets_total{{loop=\"{i}\"}}");
        assert!(
            delta(&series) > 0.0,
            "loop {i} relayed nothing of the {transport} run ({series}); the kernel spreads \
             {} 4-tuples over {} loops\n{after}",
            2 * CLIENTS,
            server.loops
        );
    }
}

/// The relay runs the path `mode` asks for on every loop: `turnpike_io_uring_loops` counts
/// every loop on each io_uring path (`"auto"`) or none (`"off"`), and the log names the
/// path (the UDP line once per process, the streams line once per loop). `"auto"` on a
/// kernel that refuses io_uring runs the portable path; that skips the check here, and
/// fails it under `TURNPIKE_E2E=1`.
fn assert_path(server: &RunningServer, mode: Mode, when: &str) {
    let log = server.log_text();
    let loops = server.loops;
    if mode == Mode::Auto && log.contains("io_uring unavailable") {
        skip_or_fail(&format!(
            "the kernel refuses io_uring, io_uring = \"auto\" runs the portable path: \
             nothing to check {when}\n{log}"
        ));
        return;
    }
    let want = match mode {
        Mode::Off => 0.0,
        Mode::Auto => loops as f64,
    };
    // A loop that misses the API's deadline is left out of one answer: ask again.
    let mut last = String::new();
    let steady = wait_until(Duration::from_secs(5), || {
        last = server.metrics();
        PATHS
            .iter()
            .all(|p| sample(&last, &gauge(p)) == Some(want))
            .then_some(())
    });
    assert!(
        steady.is_some(),
        "{when}, {mode:?} on {loops} loops: turnpike_io_uring_loops should be {want} on every \
         path: {:?}\n{last}\nthe log:\n{log}",
        PATHS
            .iter()
            .map(|p| (p, sample(&last, &gauge(p))))
            .collect::<Vec<_>>()
    );
    let (udp, streams, other) = match mode {
        Mode::Off => (
            "UDP receives: recvmmsg per socket (io_uring = \"off\", or TURNPIKE_UDP_SEND set); \
             sends: sendmmsg per socket (io_uring = \"off\", or TURNPIKE_UDP_SEND set)",
            "TCP streams: one read and one write per connection (io_uring = \"off\")",
            "io_uring submission",
        ),
        Mode::Auto => (
            "UDP receives: one io_uring submission per poll round for every ready socket; \
             sends: one io_uring submission per poll round",
            "TCP streams: reads and writes of a round in one io_uring submission each",
            "one read and one write per connection",
        ),
    };
    assert_eq!(log.matches(udp).count(), 1, "{when}: no `{udp}` in\n{log}");
    assert_eq!(
        log.matches(streams).count(),
        loops,
        "{when}: `{streams}` should be logged by each of {loops} loops\n{log}"
    );
    // Neither another path on some loop nor a ring that failed and was left for good.
    let failed = [
        "io_uring receive failed",
        "io_uring send failed",
        "io_uring stream",
    ];
    for wrong in [other, "differs from the first"].iter().chain(&failed) {
        assert!(
            !log.contains(wrong),
            "{when}, {mode:?}: `{wrong}` in the log\n{log}"
        );
    }
}

/// The series of `turnpike_io_uring_loops` for `path`.
fn gauge(path: &str) -> String {
    format!("turnpike_io_uring_loops{{path=\"{path}\"}}")
}
