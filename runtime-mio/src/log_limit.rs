//! Rate limits on log lines caused by remote input: at most one line per source and kind
//! per interval, with a count of the lines held back. A flood of 401s or garbage must not
//! flood the log, and the limiter's memory is bounded whatever the number of sources.

use std::collections::HashMap;
use std::net::IpAddr;

/// Default interval between two lines of one kind for one source, milliseconds.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Default number of (source, kind) pairs remembered.
pub const DEFAULT_CAPACITY: usize = 4096;

/// A per-source, per-kind log rate limiter with bounded memory.
///
/// When the table is full and nothing in it has expired, new sources share one window per
/// kind (reported as coming from "many sources"), so memory stays bounded under a flood
/// from spoofed addresses.
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: u64,
    capacity: usize,
    windows: HashMap<(IpAddr, &'static str), Window>,
    overflow: HashMap<&'static str, Window>,
    last_prune_ms: Option<u64>,
}

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` lines of the same source and kind were held back since the
    /// last one written. `shared`: the source is counted with many others (table full).
    Log {
        /// Lines held back since the last one written.
        suppressed: u64,
        /// The window is shared by many sources.
        shared: bool,
    },
    /// Hold it back (counted).
    Quiet,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start_ms: u64,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_INTERVAL_MS, DEFAULT_CAPACITY)
    }
}

impl LogLimiter {
    /// A limiter allowing one line per `interval_ms` per (source, kind), remembering at
    /// most `capacity` pairs.
    pub fn new(interval_ms: u64, capacity: usize) -> Self {
        LogLimiter {
            interval_ms,
            capacity,
            windows: HashMap::new(),
            overflow: HashMap::new(),
            last_prune_ms: None,
        }
    }

    /// Whether a line of `kind` caused by `source` may be written at `now_ms`.
    pub fn check(&mut self, now_ms: u64, source: IpAddr, kind: &'static str) -> Verdict {
        let interval = self.interval_ms;
        if let Some(w) = self.windows.get_mut(&(source, kind)) {
            return w.hit(now_ms, interval, false);
        }
        if self.windows.len() >= self.capacity {
            self.prune(now_ms);
        }
        if self.windows.len() >= self.capacity {
            return match self.overflow.get_mut(kind) {
                Some(w) => w.hit(now_ms, interval, true),
                None => {
                    self.overflow.insert(
                        kind,
                        Window {
                            start_ms: now_ms,
                            suppressed: 0,
                        },
                    );
                    Verdict::Log {
                        suppressed: 0,
                        shared: true,
                    }
                }
            };
        }
        self.windows.insert(
            (source, kind),
            Window {
                start_ms: now_ms,
                suppressed: 0,
            },
        );
        Verdict::Log {
            suppressed: 0,
            shared: false,
        }
    }

    /// Pairs remembered now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Forgets expired windows, at most once per interval (a full scan per packet would
    /// cost too much under a flood). Their held-back counts are dropped with them.
    fn prune(&mut self, now_ms: u64) {
        if let Some(last) = self.last_prune_ms {
            if now_ms.saturating_sub(last) < self.interval_ms {
                return;
            }
        }
        self.last_prune_ms = Some(now_ms);
        let interval = self.interval_ms;
        self.windows
            .retain(|_, w| now_ms.saturating_sub(w.start_ms) < interval);
    }
}

impl Window {
    fn hit(&mut self, now_ms: u64, interval_ms: u64, shared: bool) -> Verdict {
        if now_ms.saturating_sub(self.start_ms) < interval_ms {
            self.suppressed = self.suppressed.saturating_add(1);
            Verdict::Quiet
        } else {
            let suppressed = self.suppressed;
            *self = Window {
                start_ms: now_ms,
                suppressed: 0,
            };
            Verdict::Log { suppressed, shared }
        }
    }
}

/// Watches the counters of the relay's caps (drops and refusals counted by the core) and
/// says when to log that one grew: at most one line per cap per interval, each giving how
/// many were counted since the last line. A flood that keeps hitting a cap makes one line
/// per window, not one per packet.
#[derive(Debug)]
pub struct CapWatch {
    interval_ms: u64,
    caps: Vec<CapState>,
}

/// One line to log: `count` more of `kind` over the last `seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapLine {
    /// The cap, as given to [`CapWatch::observe`].
    pub kind: &'static str,
    /// How much the counter grew since the last line.
    pub count: u64,
    /// Over how many seconds (since the counter was last seen quiet), at least 1.
    pub seconds: u64,
}

#[derive(Clone, Copy, Debug)]
struct CapState {
    kind: &'static str,
    reported: u64,
    /// The last time nothing was pending (the counter equal to `reported`).
    quiet_ms: u64,
    last_line_ms: Option<u64>,
}

impl CapWatch {
    /// A watch allowing one line per cap per `interval_ms`.
    pub fn new(interval_ms: u64) -> Self {
        CapWatch {
            interval_ms,
            caps: Vec::new(),
        }
    }

    /// The counter of cap `kind` reads `value` at `now_ms`: the line to log, if one is due.
    /// Call it periodically (once a second) with each cap's counter.
    pub fn observe(&mut self, now_ms: u64, kind: &'static str, value: u64) -> Option<CapLine> {
        let interval = self.interval_ms;
        let state = match self.caps.iter().position(|c| c.kind == kind) {
            Some(n) => self.caps.get_mut(n)?,
            None => {
                self.caps.push(CapState {
                    kind,
                    reported: 0,
                    quiet_ms: now_ms,
                    last_line_ms: None,
                });
                self.caps.last_mut()?
            }
        };
        if value <= state.reported {
            state.reported = value;
            state.quiet_ms = now_ms;
            return None;
        }
        if state
            .last_line_ms
            .is_some_and(|l| now_ms.saturating_sub(l) < interval)
        {
            return None;
        }
        let line = CapLine {
            kind,
            count: value - state.reported,
            seconds: now_ms.saturating_sub(state.quiet_ms).div_ceil(1000).max(1),
        };
        state.reported = value;
        state.quiet_ms = now_ms;
        state.last_line_ms = Some(now_ms);
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn one_line_per_interval_with_count() {
        let mut l = LogLimiter::new(10_000, 16);
        assert_eq!(
            l.check(0, ip(1), "auth"),
            Verdict::Log {
                suppressed: 0,
                shared: false
            }
        );
        for t in 1..=5 {
            assert_eq!(l.check(t * 1000, ip(1), "auth"), Verdict::Quiet);
        }
        // Other kinds and other sources are independent.
        assert_eq!(
            l.check(1, ip(1), "garbage"),
            Verdict::Log {
                suppressed: 0,
                shared: false
            }
        );
        assert_eq!(
            l.check(1, ip(2), "auth"),
            Verdict::Log {
                suppressed: 0,
                shared: false
            }
        );
        assert_eq!(
            l.check(10_000, ip(1), "auth"),
            Verdict::Log {
                suppressed: 5,
                shared: false
            }
        );
        assert_eq!(l.check(10_001, ip(1), "auth"), Verdict::Quiet);
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_sources() {
        let mut l = LogLimiter::new(10_000, 8);
        let mut logged = 0;
        for n in 0..10_000u32 {
            if let Verdict::Log { .. } = l.check(5, ip(n), "garbage") {
                logged += 1;
            }
        }
        assert_eq!(l.len(), 8);
        // 8 sources with their own window, then one line for the shared window.
        assert_eq!(logged, 9);
        // After the interval the shared window reports what it held back.
        match l.check(20_000, ip(99_999), "garbage") {
            Verdict::Log { shared, .. } => assert!(!shared, "pruned table has room again"),
            Verdict::Quiet => panic!("must log after the interval"),
        }
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn shared_window_counts_what_it_held_back() {
        let mut l = LogLimiter::new(100, 1);
        assert!(matches!(l.check(0, ip(1), "k"), Verdict::Log { .. }));
        assert_eq!(
            l.check(0, ip(2), "k"),
            Verdict::Log {
                suppressed: 0,
                shared: true
            }
        );
        assert_eq!(l.check(1, ip(3), "k"), Verdict::Quiet);
        assert_eq!(l.check(2, ip(4), "k"), Verdict::Quiet);
        // ip(1) still inside its window: no prune possible yet, so shared.
        assert_eq!(l.check(50, ip(5), "k"), Verdict::Quiet);
        // Once ip(1)'s window expired, a new source gets its own window again...
        assert_eq!(
            l.check(100, ip(6), "k"),
            Verdict::Log {
                suppressed: 0,
                shared: false
            }
        );
        // ...and the shared window reports what it held back when it next logs.
        assert_eq!(
            l.check(101, ip(7), "k"),
            Verdict::Log {
                suppressed: 3,
                shared: true
            }
        );
    }

    #[test]
    fn a_cap_is_logged_at_most_once_per_window_with_what_it_counted() {
        let mut w = CapWatch::new(10_000);
        assert_eq!(w.observe(0, "rate_limited", 0), None);
        // Growth seen at the next tick: one line at once.
        let first = w.observe(1_000, "rate_limited", 500);
        assert_eq!(
            first,
            Some(CapLine {
                kind: "rate_limited",
                count: 500,
                seconds: 1
            })
        );
        // More within the window: held back...
        for t in 2..10u64 {
            assert_eq!(w.observe(t * 1_000, "rate_limited", 500 + t * 10), None);
        }
        // ...and reported, summed, when the window ends.
        let second = w.observe(11_000, "rate_limited", 700);
        assert_eq!(second.map(|l| (l.count, l.seconds)), Some((200, 10)));
        // Nothing more: nothing logged, however long.
        assert_eq!(w.observe(30_000, "rate_limited", 700), None);
        // Caps are independent.
        assert_eq!(w.observe(30_000, "bandwidth", 3).map(|l| l.count), Some(3));
        assert_eq!(
            w.observe(31_000, "rate_limited", 701).map(|l| l.seconds),
            Some(1)
        );
    }
}
