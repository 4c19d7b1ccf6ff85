//! The relay port pool: random ports from a configured range, with quarantine.
//!
//! A port is drawn at random (RFC 8656 §7.2 and RFC 6056: hard to guess), bound by the
//! runtime, and after release kept out of use for a quarantine period, so that late
//! packets for an old allocation never reach a new one (the WCS "port auditor"). A port
//! that the OS reports busy goes back to quarantine and is tried again later.

use crate::time::Instant;
use core::time::Duration;
use rand_core::RngCore;

/// Counters of the pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PortStats {
    /// Ports that can be handed out now.
    pub free: u32,
    /// Ports handed out (bound or being bound).
    pub in_use: u32,
    /// Ports waiting out their quarantine.
    pub quarantined: u32,
    /// Ports held for a RESERVATION-TOKEN (RFC 8656 §7.2 EVEN-PORT R bit).
    pub reserved: u32,
}

/// A pool of ports `min..=max`.
#[derive(Debug)]
pub struct PortPool {}

impl PortPool {
    /// A pool of every port in `min..=max`, all free.
    pub fn new(min: u16, max: u16, quarantine: Duration) -> Self {
        let _ = (min, max, quarantine);
        todo!()
    }
    /// Draws a free port at random and marks it in use.
    pub fn acquire(&mut self, rng: &mut impl RngCore) -> Option<u16> {
        let _ = rng;
        todo!()
    }
    /// Draws a free even port at random; with `reserve_next`, the port above it must be
    /// free too and is marked reserved (RFC 8656 §7.2, EVEN-PORT with R bit).
    pub fn acquire_even(&mut self, rng: &mut impl RngCore, reserve_next: bool) -> Option<u16> {
        let _ = (rng, reserve_next);
        todo!()
    }
    /// Turns a reserved port into an in-use one (the RESERVATION-TOKEN was redeemed).
    pub fn take_reserved(&mut self, port: u16) -> bool {
        let _ = port;
        todo!()
    }
    /// Returns an in-use or reserved port: it is quarantined until `now + quarantine`.
    pub fn release(&mut self, port: u16, now: Instant) {
        let _ = (port, now);
        todo!()
    }
    /// The runtime could not bind `port` (busy in the OS): quarantine it again.
    pub fn bind_failed(&mut self, port: u16, now: Instant) {
        let _ = (port, now);
        todo!()
    }
    /// Frees the ports whose quarantine ended at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }
    /// When the next quarantine ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    /// The counters.
    pub fn stats(&self) -> PortStats {
        todo!()
    }
    /// True if `port` is handed out (in use).
    pub fn is_in_use(&self, port: u16) -> bool {
        let _ = port;
        todo!()
    }
}
