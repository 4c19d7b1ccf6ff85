//! Browser-like clients, built on the core's sans-IO TURN client.
//!
//! A browser gets an ICE configuration (urls and one REST username/credential), tries
//! TURN-UDP, TURN-TCP and TURN-TLS at once with the same credential, keeps the first
//! allocation that succeeds and releases the others (Refresh 0, or closing the stream),
//! then installs a permission, binds a channel and exchanges data with its peer. The
//! client refreshes by itself, as browsers do. A session ends with a release, or with the
//! browser vanishing (no Refresh 0); then, after a pause, a new session begins.
//!
//! Files: `state` (what the parts share), `session` (attempts, ICE restarts, client
//! events, the end of a session), `traffic` (data, probes, transmits). This file is
//! what the runner calls.

mod session;
mod state;
mod traffic;

pub use state::{Board, Browser, IceServer, DENIED_PROBES};

use crate::faults::Control;
use crate::host::{Cx, Phase};
use crate::net::{Side, StreamId};
use crate::scenario::Via;
use crate::tls::{record, TLS_CLIENT, TLS_DONE, TLS_MORE, TLS_PAD, TLS_RECORD};
use core::time::Duration;
use state::{AState, Hello, API_DELAY};
use std::net::SocketAddr;
use turnpike_core::Instant;

impl Browser {
    /// A datagram: the answer of the server to a UDP attempt.
    pub fn on_datagram(&mut self, cx: &mut Cx, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let Some(k) =
            self.attempt_where(|a| a.via == Via::Udp && a.local == to && a.server == from)
        else {
            return;
        };
        if let Some(a) = self.attempt_mut(k) {
            if a.state != AState::Closed {
                a.answered = true;
                a.client.handle_input(cx.now, data);
            }
        }
        self.after(cx);
    }

    /// A stream of an attempt is up.
    pub fn on_established(&mut self, cx: &mut Cx, sid: StreamId) {
        let Some(k) = self.attempt_where(|a| a.sid == Some(sid)) else {
            cx.net.close(cx.now, sid, Side::Connector);
            return;
        };
        let now = cx.now;
        let spec_hello = Hello::of(&self.spec.tls_hello);
        if let Some(a) = self.attempt_mut(k) {
            match (a.state, a.via) {
                (AState::Connecting, Via::Tls) => {
                    a.state = AState::Tls;
                    match spec_hello {
                        // Connects, then says nothing: the handshake's time bound.
                        Hello::Stall => {}
                        Hello::Records(pads) => {
                            let mut hello = Vec::with_capacity((pads + 1) * TLS_RECORD);
                            for _ in 0..pads {
                                hello.extend(record(TLS_PAD));
                            }
                            hello.extend(record(TLS_CLIENT));
                            cx.net.write(now, sid, Side::Connector, hello);
                        }
                    }
                }
                (AState::Connecting, _) => {
                    a.state = AState::Turn;
                    if !a.redirected {
                        a.client.allocate(now);
                    }
                }
                _ => {}
            }
        }
        self.after(cx);
    }

    /// Bytes from the server (or the proxy in front).
    pub fn on_stream_data(&mut self, cx: &mut Cx, sid: StreamId, data: &[u8]) {
        let Some(k) = self.attempt_where(|a| a.sid == Some(sid)) else {
            return;
        };
        let now = cx.now;
        if let Some(a) = self.attempt_mut(k) {
            match a.state {
                AState::Tls => {
                    a.tls_buf.extend_from_slice(data);
                    // Bounded: a peer that never completes a record is cut off by the
                    // connect deadline.
                    while a.tls_buf.len() >= TLS_RECORD && a.state == AState::Tls {
                        let rec: Vec<u8> = a.tls_buf.drain(..TLS_RECORD).collect();
                        match rec.get(3).copied() {
                            Some(TLS_MORE) => {
                                cx.net.write(now, sid, Side::Connector, record(TLS_CLIENT))
                            }
                            Some(TLS_DONE) => {
                                a.state = AState::Turn;
                                let rest = std::mem::take(&mut a.tls_buf);
                                if !a.redirected {
                                    a.client.allocate(now);
                                }
                                if !rest.is_empty() {
                                    a.client.handle_input(now, &rest);
                                }
                            }
                            _ => a.failed = true,
                        }
                    }
                }
                AState::Turn | AState::Releasing => {
                    a.answered = true;
                    a.client.handle_input(now, data)
                }
                AState::Connecting | AState::Closed => {}
            }
        }
        self.after(cx);
    }

    /// A stream of an attempt closed (refused, reset, or closed by the relay).
    pub fn on_stream_closed(&mut self, cx: &mut Cx, sid: StreamId) {
        let Some(k) = self.attempt_where(|a| a.sid == Some(sid)) else {
            return;
        };
        let winner = self.session.as_ref().and_then(|s| s.winner);
        if let Some(a) = self.attempt_mut(k) {
            a.sid = None;
            if a.state != AState::Closed {
                a.state = AState::Closed;
                if !a.allocated {
                    a.failed = true;
                }
            }
        }
        if winner == Some(k) {
            self.relay_lost(cx);
        }
        self.after(cx);
    }

    /// Timers: session start and end, client timers, data, deadlines.
    pub fn on_wake(&mut self, cx: &mut Cx) {
        let now = cx.now;
        if self.next_start.is_some_and(|t| t <= now) && self.session.is_none() {
            self.next_start = None;
            if self.spec.issued_dynamic_udp {
                let wall = cx.shared.walls[self.issuer].unix_s(now);
                let expiry =
                    (wall + self.spec.credential_ttl_s).saturating_sub(self.spec.config_age_s);
                cx.board
                    .requests
                    .push((self.id, expiry, format!("b{}", self.id)));
                self.fetching = Some(now + API_DELAY);
            } else {
                self.start_session(cx, None);
            }
        }
        if self.fetching.is_some_and(|t| t <= now) {
            self.fetching = None;
            if let Some(issued) = cx.board.answers.remove(&self.id) {
                self.start_session(cx, Some(issued));
            }
        }
        if let Some(s) = &mut self.session {
            for a in &mut s.attempts {
                if a.state != AState::Closed && a.client.poll_timeout().is_some_and(|t| t <= now) {
                    a.client.handle_timeout(now);
                }
            }
        }
        self.after(cx);
    }

    /// Phase changes: in the drain phase, sessions end and no new one starts.
    pub fn on_control(&mut self, cx: &mut Cx, c: &Control) {
        if let Control::Phase(Phase::Drain) = c {
            self.next_start = None;
            if let Some(s) = &mut self.session {
                s.end_at = s.end_at.min(cx.now);
            }
            self.done = true;
            self.after(cx);
        }
    }

    /// The next instant something is due.
    pub fn next_wake(&self) -> Option<Instant> {
        let mut next = self.next_start.or(self.fetching);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        if let Some(s) = &self.session {
            if s.ending.is_none() {
                consider(Some(s.end_at));
            }
            consider(s.ending);
            consider(s.next_data);
            consider(s.probes.iter().min().copied());
            consider(s.next_round);
            if let (Some(n), Some(_), true) =
                (self.spec.ice_restart_s, s.winner, s.ending.is_none())
            {
                consider(Some(s.last_rx + Duration::from_secs(n)));
            }
            for a in &s.attempts {
                if a.state == AState::Closed {
                    continue;
                }
                consider(a.client.poll_timeout());
                if !a.allocated {
                    consider(Some(a.deadline));
                }
            }
        }
        next
    }

    /// After any input: process client events, flush transmits, check deadlines.
    fn after(&mut self, cx: &mut Cx) {
        let now = cx.now;
        // Bounded: each pass handles what is queued; events rarely cascade twice.
        for _ in 0..4 {
            let mut progressed = false;
            let n = self.session.as_ref().map_or(0, |s| s.attempts.len());
            for k in 0..n {
                while let Some(ev) = self.attempt_mut(k).and_then(|a| a.client.poll_event()) {
                    progressed = true;
                    self.on_client_event(cx, k, ev);
                }
            }
            self.deadlines(cx);
            self.consent(cx);
            self.data(cx);
            self.probe(cx);
            self.session_end(cx);
            self.flush(cx);
            if !progressed {
                break;
            }
        }
        let _ = now;
    }
}
