//! What a run is given and what it gives back: its options, figures and outcome, and the
//! constants of the virtual world.

use crate::oracle::Violation;
use core::time::Duration;
use std::collections::BTreeMap;
use std::net::IpAddr;
use turnpike_core::Instant;

/// Where virtual time starts (an arbitrary, non-zero instant).
pub const START: Instant = Instant::from_secs(1_000);
/// The wall clock at `START` (2023-11-14T22:13:20Z).
pub const WALL_START_MS: u64 = 1_700_000_000_000;
/// Most events in one run: a run that needs more is not making progress.
pub const MAX_EVENTS: u64 = 200_000_000;
/// Capacity of the event queue: the simulator's own memory bound.
pub const QUEUE_CAPACITY: usize = 2_000_000;
/// Lines of trace kept for a failure report.
pub const TRACE_LINES: usize = 40;

/// Options of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Keep this many trace lines.
    pub trace_lines: usize,
}

/// Figures of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Events processed.
    pub events: u64,
    /// Virtual time covered.
    pub virtual_time: Duration,
    /// Browser sessions started.
    pub sessions: usize,
    /// Sessions that kept an allocation, by transport.
    pub connected: BTreeMap<&'static str, usize>,
    /// Sessions where every attempt failed.
    pub failed: usize,
    /// Allocations created (all servers).
    pub allocations: u64,
    /// 508 answers.
    pub answers_508: u64,
    /// Answers held back by the per-source budget.
    pub rate_limited: u64,
    /// Requests seen by the oracle.
    pub requests: u64,
    /// Streams rejected by the core, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// PROXY headers accepted.
    pub proxy_accepted: u64,
    /// Datagrams sent / lost on the network.
    pub datagrams: (u64, u64),
    /// Most events waiting at once.
    pub queue_high_water: usize,
    /// The fault profile drawn from the seed.
    pub fault_profile: Vec<String>,
    /// Messages between the event loops of server nodes.
    pub loop_messages: u64,
    /// What the scripted clients achieved.
    pub uclients: crate::uclient::Tally,
    /// Time-to-relay of the well-behaved browsers' sessions, ms: 50th and 99th
    /// percentiles over all (`all`), then by group (`u64::MAX`: sessions that never
    /// connected reach that rank).
    pub time_to_relay_ms: Vec<(String, [u64; 2])>,
    /// Reflections, by victim: bytes spoofed in its name that reached the relay, and
    /// bytes that reached it.
    pub reflection: Vec<(IpAddr, u64, u64)>,
    /// Port mappings the NATs hold at the end.
    pub nat_mappings: usize,
    /// Native TLS handshakes completed, and failed by reason.
    pub tls: crate::server::TlsCounts,
    /// What the reload oracle counted.
    pub rotation: crate::rotation::RotationCounts,
    /// Fleets: redirects followed, drains run to their end, servers killed, and the
    /// calls that got a relay again after losing theirs (count, longest wait).
    pub fleet: Option<FleetFigures>,
}

/// What a fleet did in a run.
#[derive(Clone, Debug, Default)]
pub struct FleetFigures {
    /// Redirects (300 Try Alternate) followed by clients.
    pub redirects: u64,
    /// Drains that ran to their end.
    pub restarts: u64,
    /// Of those, the ones that hit their timeout with calls left.
    pub drain_timeouts: u64,
    /// Servers killed.
    pub kills: u64,
    /// Allocations draining servers made for RESERVATION-TOKENs.
    pub drain_redemptions: u64,
    /// Calls that had a relay again after their server was killed.
    pub reconnects: usize,
    /// The longest of those waits.
    pub longest_reconnect: Duration,
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The digest of everything that happened.
    pub digest: u64,
    /// Figures.
    pub summary: Summary,
    /// The violation that stopped the run, if any.
    pub violation: Option<Violation>,
    /// The last events before the end (or the violation).
    pub trace: Vec<String>,
}
