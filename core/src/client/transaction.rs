//! When a client transaction retransmits and when it gives up (RFC 8489 §6.2.1, §6.2.2).
//!
//! Over UDP a request is sent at `start`, then again after RTO, 2·RTO, 4·RTO... until Rc
//! transmissions have been made; after the last one the client waits Rm·RTO and gives up.
//! With the defaults (RTO 500 ms, Rc 7, Rm 16) the transmissions are at 0, 0.5, 1.5, 3.5,
//! 7.5, 15.5 and 31.5 s and the transaction times out at 39.5 s. Over a stream there is no
//! retransmission at all (§6.2.2) and the transaction times out after 39.5 s.
//!
//! All deadlines are computed from `start`, never from the time `handle_timeout` happened
//! to be called, so the schedule does not drift when the driver is late.

use crate::time::Instant;
use core::time::Duration;

/// The initial retransmission timeout (RFC 8489 §6.2.1: "SHOULD be 500 ms").
pub const RTO: Duration = Duration::from_millis(500);
/// Rc: the number of transmissions of a request over UDP (RFC 8489 §6.2.1).
pub const RC: u32 = 7;
/// Rm: the last wait is Rm times the initial RTO (RFC 8489 §6.2.1).
pub const RM: u32 = 16;
/// Transaction timeout over a stream (RFC 8489 §6.2.2: 39.5 s).
pub const STREAM_TIMEOUT: Duration = Duration::from_millis(39_500);

/// What the schedule asks for at a deadline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// Nothing is due yet.
    Wait,
    /// Send the request once more.
    Retransmit,
    /// The transaction failed: no response in time.
    GiveUp,
}

/// The retransmission schedule of one client transaction.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    /// Transmissions made so far (1 after the first send).
    sent: u32,
    reliable: bool,
}

impl Schedule {
    /// A transaction whose first transmission happens at `start`.
    pub fn new(start: Instant, reliable: bool) -> Self {
        Schedule {
            start,
            sent: 1,
            reliable,
        }
    }

    /// When the first transmission was made.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The next instant at which [`Schedule::on_timeout`] has work to do.
    pub fn deadline(&self) -> Instant {
        if self.reliable {
            return self.start + STREAM_TIMEOUT;
        }
        if self.sent < RC {
            self.start + offset(self.sent)
        } else {
            self.start + offset(RC - 1) + RTO * RM
        }
    }

    /// Advances the schedule to `now`. Transmissions whose time passed while the driver
    /// was late are counted as made, and at most one retransmission is asked for, so a
    /// late call never causes a burst.
    pub fn on_timeout(&mut self, now: Instant) -> Step {
        if now < self.deadline() {
            return Step::Wait;
        }
        if self.reliable || self.sent >= RC {
            return Step::GiveUp;
        }
        while self.sent < RC && self.start + offset(self.sent) <= now {
            self.sent += 1;
        }
        Step::Retransmit
    }
}

/// Time from the first transmission to transmission number `k` (0-based): RTO·(2^k − 1).
fn offset(k: u32) -> Duration {
    RTO * ((1u32 << k.min(16)) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: Instant) -> u64 {
        t.as_millis()
    }

    #[test]
    fn udp_schedule_matches_rfc_8489_example() {
        // RFC 8489 §6.2.1: "... sent at times 0 ms, 500 ms, 1500 ms, 3500 ms, 7500 ms,
        // 15500 ms, and 31500 ms. If the client has not received a response after 39500 ms,
        // the client will consider the transaction to have timed out."
        let mut s = Schedule::new(Instant::from_secs(0), false);
        let mut retransmits = Vec::new();
        loop {
            let d = s.deadline();
            match s.on_timeout(d) {
                Step::Retransmit => retransmits.push(ms(d)),
                Step::GiveUp => {
                    assert_eq!(ms(d), 39_500);
                    break;
                }
                Step::Wait => unreachable!(),
            }
        }
        assert_eq!(retransmits, vec![500, 1500, 3500, 7500, 15_500, 31_500]);
    }

    #[test]
    fn early_call_waits() {
        let mut s = Schedule::new(Instant::from_secs(1), false);
        assert_eq!(s.on_timeout(Instant::from_millis(1499)), Step::Wait);
        assert_eq!(s.on_timeout(Instant::from_millis(1500)), Step::Retransmit);
    }

    #[test]
    fn late_call_skips_missed_transmissions() {
        let mut s = Schedule::new(Instant::from_secs(0), false);
        // At 4 s the transmissions due at 0.5, 1.5 and 3.5 s were all missed: one resend.
        assert_eq!(s.on_timeout(Instant::from_secs(4)), Step::Retransmit);
        assert_eq!(ms(s.deadline()), 7_500);
        assert_eq!(s.on_timeout(Instant::from_secs(100)), Step::Retransmit);
        assert_eq!(s.on_timeout(Instant::from_secs(100)), Step::GiveUp);
    }

    #[test]
    fn stream_never_retransmits() {
        let mut s = Schedule::new(Instant::from_secs(0), true);
        assert_eq!(ms(s.deadline()), 39_500);
        assert_eq!(s.on_timeout(Instant::from_millis(39_499)), Step::Wait);
        assert_eq!(s.on_timeout(Instant::from_millis(39_500)), Step::GiveUp);
    }
}
