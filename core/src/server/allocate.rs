//! Allocate (RFC 8656 §7.2) and the asynchronous bind of relay sockets.
//!
//! An authenticated Allocate goes through stages, each of which may wait for another loop
//! of the node ([`crate::node`]): the user's quota (counted at the user's home loop), a
//! credit of `total_quota`, a port per address family (borrowed from another loop when
//! this one has none; a RESERVATION-TOKEN is redeemed at the loop that issued it), then
//! the binds (`Output::BindRelay`). The answer waits in a `Pending` until every bind is
//! reported: a port found busy is quarantined and another one tried; when none is left
//! the client gets 508. On a node of one loop every stage but the binds completes at once.

use super::authenticate::Authed;
use super::redirect::{self, DRAINING_CODE};
use super::reply::{self, finish};
use super::{RelayOwner, Reservation, Server, Source, Timer, TokenBucket, RESERVATION_LIFETIME};
use crate::allocation::{Allocation, RelaySide};
use crate::event::{Event, Output, TrafficCounters};
use crate::ids::{AllocationId, ListenerId, RelayId};
use crate::node::{home_of, LoopId, LoopMsg, PortWant, Want};
use crate::server::BindError;
use crate::stun::{attr, Class, DecodeError, Message, MessageBuilder, Method, TransactionId};
use crate::time::Instant;
use core::time::Duration;
use rand_core::RngCore;
use std::net::SocketAddr;

/// One relay socket being bound.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingSide {
    relay: RelayId,
    port: u16,
    bound: bool,
    attempts: u32,
}

/// An Allocate waiting for its relay sockets.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    src: Source,
    tid: TransactionId,
    fingerprint: bool,
    auth: Authed,
    lifetime_s: u32,
    sides: [Option<PendingSide>; 2],
    /// ADDITIONAL-ADDRESS-FAMILY asked for a family we do not serve (RFC 8656 §7.2: the
    /// allocation still succeeds, with ADDRESS-ERROR-CODE).
    address_error: Option<u8>,
    token_out: Option<[u8; 8]>,
    /// What the request asked for.
    ask: Ask,
    /// Where it stands.
    pub(super) stage: Stage,
    /// The user's home loop counted this allocation.
    pub(super) user_held: bool,
    /// It holds a credit of `total_quota`.
    credit_held: bool,
    /// EVEN-PORT with R: the user count the reservation will hold, until it is made.
    reserve_user_held: bool,
    /// EVEN-PORT with R: the credit the reservation will hold, until it is made.
    reserve_credit_held: bool,
    /// Ports drawn, not yet being bound.
    drawn: [Option<u16>; 2],
    /// The port of the RESERVATION-TOKEN it redeemed, still reserved in the pool until the
    /// Allocate holds its own counts (then it is bound at once).
    redeemed: Option<u16>,
    /// Loops asked to lend in the current stage.
    asked: u16,
}

/// The ports an Allocate asked for (RFC 8656 §7.2).
#[derive(Clone, Copy, Debug)]
struct Ask {
    want: [bool; 2],
    primary: usize,
    even: Option<bool>,
    token: Option<[u8; 8]>,
}

/// How far a pending Allocate got.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Stage {
    /// Waiting for the user's quota (RFC 8656 §7.2 step 9, 486).
    User,
    /// Waiting for a credit of `total_quota` (508).
    Credit,
    /// Waiting for ports (508).
    Ports,
    /// The relay sockets are being bound.
    Binding,
}

/// What a draw of ports came to.
enum Draw {
    /// Every wanted family has a port.
    Done,
    /// The token was issued by another loop: ask it.
    Remote(LoopId, [u8; 8]),
    /// No port of this family and kind is free here.
    Short(usize, PortWant),
    /// The token was redeemed: the Allocate takes its own counts before the port.
    Redeemed,
    /// The token is unknown or expired (508).
    Failed,
}

impl Pending {
    /// The listener its client came through.
    pub(super) fn listener(&self) -> ListenerId {
        self.src.info.listener
    }

    /// It will make a reservation (EVEN-PORT with R, in IPv4), which holds a user count
    /// and a credit of its own.
    fn reserves(&self) -> bool {
        self.ask.even == Some(true) && self.ask.primary == 0
    }

    /// Holds every user count it needs.
    fn user_counted(&self) -> bool {
        self.user_held && (self.reserve_user_held || !self.reserves() || self.token_out.is_some())
    }

    /// Holds every credit it needs.
    fn credited(&self) -> bool {
        self.credit_held
            && (self.reserve_credit_held || !self.reserves() || self.token_out.is_some())
    }

    /// The user's home loop granted one more count.
    pub(super) fn took_user_count(&mut self) {
        if self.user_held {
            self.reserve_user_held = true;
        } else {
            self.user_held = true;
        }
    }
}

impl Server {
    /// Handles an authenticated Allocate. Returns the answer, or None when it comes later
    /// (binds pending).
    pub(super) fn allocate(
        &mut self,
        now: Instant,
        src: &Source,
        msg: &Message<'_>,
        auth: &Authed,
        existing: Option<AllocationId>,
    ) -> Option<MessageBuilder> {
        if let Some(pid) = self.pending_by_client.get(&src.key) {
            if self
                .pending
                .get(pid)
                .is_some_and(|p| p.tid == msg.transaction_id())
            {
                // A retransmission while the binds are under way: the answer is coming.
                return None;
            }
            return Some(self.allocate_failed(src, msg, auth, 437));
        }
        if existing.is_some() {
            // RFC 8656 §7.2 step 2: the 5-tuple is taken (a retransmission would have
            // been answered from the cache).
            return Some(self.allocate_failed(src, msg, auth, 437));
        }
        if self.draining.is_some() && msg.get(attr::RESERVATION_TOKEN).is_none() {
            // A draining relay takes no new allocation (redirect.rs); a token's Allocate
            // still gets the port reserved for it here.
            return Some(self.allocate_failed(src, msg, auth, DRAINING_CODE));
        }
        match self.plan_allocation(now, src, msg, auth) {
            Ok(()) => None,
            Err(code) => Some(self.allocate_failed(src, msg, auth, code)),
        }
    }

    /// Checks the request (RFC 8656 §7.2 steps 3–8), draws the ports and asks for binds.
    fn plan_allocation(
        &mut self,
        now: Instant,
        src: &Source,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<(), u16> {
        let bad = |_: DecodeError| 400u16;
        let transport = msg.get(attr::REQUESTED_TRANSPORT).ok_or(400u16)?;
        if attr::decode_requested_transport(transport).map_err(bad)? != attr::TRANSPORT_UDP {
            return Err(442);
        }
        let even = msg
            .get(attr::EVEN_PORT)
            .map(attr::decode_even_port)
            .transpose()
            .map_err(bad)?;
        let token = msg
            .get(attr::RESERVATION_TOKEN)
            .map(attr::decode_reservation_token)
            .transpose()
            .map_err(bad)?;
        let family = msg
            .get(attr::REQUESTED_ADDRESS_FAMILY)
            .map(attr::decode_family)
            .transpose()
            .map_err(bad)?;
        let additional = msg
            .get(attr::ADDITIONAL_ADDRESS_FAMILY)
            .map(attr::decode_family)
            .transpose()
            .map_err(bad)?;
        let lifetime = msg
            .get(attr::LIFETIME)
            .map(attr::decode_u32)
            .transpose()
            .map_err(bad)?;
        if token.is_some() && (even.is_some() || family.is_some() || additional.is_some()) {
            return Err(400);
        }
        if family.is_some() && additional.is_some() {
            return Err(400);
        }
        let primary = match family {
            None | Some(attr::FAMILY_IPV4) => 0,
            Some(attr::FAMILY_IPV6) => 1,
            Some(_) => return Err(440),
        };
        if self.pools[primary].is_none() {
            return Err(440);
        }
        let mut want = [false; 2];
        want[primary] = true;
        let mut address_error = None;
        if let Some(f) = additional {
            if f != attr::FAMILY_IPV6 {
                return Err(400);
            }
            if self.pools[1].is_some() {
                want[1] = true;
            } else {
                address_error = Some(attr::FAMILY_IPV6);
            }
        }
        let pid = self.next_pending;
        self.next_pending += 1;
        self.pending.insert(
            pid,
            Pending {
                src: *src,
                tid: msg.transaction_id(),
                fingerprint: msg.has_fingerprint(),
                auth: auth.clone(),
                lifetime_s: self.grant_lifetime(lifetime),
                sides: [None, None],
                address_error,
                token_out: None,
                ask: Ask {
                    want,
                    primary,
                    even,
                    token,
                },
                // A token's Allocate redeems it first: the reservation gives back its
                // counts, then the Allocate takes its own (so a user at quota with a
                // reservation can still redeem it).
                stage: if token.is_some() {
                    Stage::Ports
                } else {
                    Stage::User
                },
                user_held: false,
                credit_held: false,
                reserve_user_held: false,
                reserve_credit_held: false,
                drawn: [None, None],
                redeemed: None,
                asked: 0,
            },
        );
        self.pending_by_client.insert(src.key, pid);
        self.advance(now, pid)
            .inspect_err(|_| self.drop_pending(now, pid))
    }

    /// Takes a pending Allocate as far as it can go now. Err(code): it failed (the caller
    /// answers and forgets it). Ok: it is binding, or waits for another loop's answer.
    pub(super) fn advance(&mut self, now: Instant, pid: u64) -> Result<(), u16> {
        loop {
            let Some(p) = self.pending.get(&pid) else {
                return Ok(());
            };
            match p.stage {
                Stage::User => {
                    if p.user_counted() {
                        self.set_stage(pid, Stage::Credit, |_| {});
                        continue;
                    }
                    let home = home_of(&p.auth.username, self.node.count);
                    if home != self.node.id() {
                        let username = p.auth.username.clone();
                        self.send_loop(home, LoopMsg::UserAcquire { req: pid, username });
                        return Ok(());
                    }
                    if !self.acquire_user(&p.auth.username.clone()) {
                        return Err(486);
                    }
                    if let Some(p) = self.pending.get_mut(&pid) {
                        p.took_user_count();
                    }
                }
                Stage::Credit => {
                    if p.credited() {
                        self.set_stage(pid, Stage::Ports, |_| {});
                        continue;
                    }
                    if self.credits_used() >= self.credits {
                        return self.borrow(pid, Want::Credits);
                    }
                    self.pending_credits += 1;
                    if let Some(p) = self.pending.get_mut(&pid) {
                        if p.credit_held {
                            p.reserve_credit_held = true;
                        } else {
                            p.credit_held = true;
                        }
                        p.asked = 0;
                    }
                }
                Stage::Ports => match self.draw_ports(now, pid) {
                    Draw::Redeemed => {
                        // Now the counts of its own.
                        self.set_stage(pid, Stage::User, |_| {});
                    }
                    Draw::Done => {
                        self.start_binds(pid);
                        return Ok(());
                    }
                    Draw::Remote(owner, token) => {
                        self.send_loop(owner, LoopMsg::RedeemToken { req: pid, token });
                        return Ok(());
                    }
                    Draw::Short(family, kind) => {
                        let want = Want::Ports {
                            family: family as u8,
                            kind,
                        };
                        return self.borrow(pid, want).inspect_err(|_| {
                            self.emit(Event::PortsExhausted {
                                client: p_info(self, pid),
                            });
                        });
                    }
                    Draw::Failed => {
                        self.emit(Event::PortsExhausted {
                            client: p_info(self, pid),
                        });
                        return Err(508);
                    }
                },
                Stage::Binding => return Ok(()),
            }
        }
    }

    /// Goes on with a pending Allocate after another loop answered; answers the client if
    /// it failed.
    pub(super) fn resume(&mut self, now: Instant, pid: u64) {
        if let Err(code) = self.advance(now, pid) {
            self.end_pending(now, pid, Some(code));
        }
    }

    /// Credits of `total_quota` held: by live allocations, by pending ones past the credit
    /// stage, and by reservations.
    pub(super) fn credits_used(&self) -> u32 {
        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        n(self.allocations.len())
            .saturating_add(self.pending_credits)
            .saturating_add(n(self.reservations.len()))
    }

    /// Counts one more allocation of `username` here, its home loop, unless its quota is
    /// reached (RFC 8656 §7.2: 486 Allocation Quota Reached).
    pub(super) fn acquire_user(&mut self, username: &str) -> bool {
        let held = self.per_user.get(username).copied().unwrap_or(0);
        if held >= self.cfg.user_quota {
            return false;
        }
        *self.per_user.entry(username.to_string()).or_insert(0) += 1;
        true
    }

    /// Asks the next loop to lend `want`, or fails with 508 when every other loop has
    /// been asked in this stage.
    fn borrow(&mut self, pid: u64, want: Want) -> Result<(), u16> {
        let node = self.node;
        let Some(p) = self.pending.get_mut(&pid) else {
            return Ok(());
        };
        let Some(to) = node.others().nth(usize::from(p.asked)) else {
            return Err(508);
        };
        p.asked += 1;
        self.send_loop(to, LoopMsg::Borrow { req: pid, want });
        Ok(())
    }

    fn set_stage(&mut self, pid: u64, stage: Stage, f: impl FnOnce(&mut Pending)) {
        if let Some(p) = self.pending.get_mut(&pid) {
            p.stage = stage;
            p.asked = 0;
            f(p);
        }
    }

    /// Draws a port for every wanted family that has none yet (RFC 8656 §7.2 steps 5–7).
    fn draw_ports(&mut self, now: Instant, pid: u64) -> Draw {
        let Some(p) = self.pending.get(&pid) else {
            return Draw::Failed;
        };
        let (ask, drawn, username) = (p.ask, p.drawn, p.auth.username.clone());
        let (counted, redeemed) = (p.user_held && p.credit_held, p.redeemed);
        for (fam, done) in drawn.iter().enumerate() {
            if !ask.want[fam] || done.is_some() {
                continue;
            }
            let (got, kind) = if let (Some(t), 0) = (ask.token, fam) {
                let port = match redeemed {
                    Some(port) => port,
                    None => {
                        let owner = self.token_owner(&t);
                        if owner != self.node.id() {
                            return Draw::Remote(owner, t);
                        }
                        let Some(port) = self.redeem_token(t) else {
                            return Draw::Failed;
                        };
                        if let Some(p) = self.pending.get_mut(&pid) {
                            p.redeemed = Some(port);
                        }
                        port
                    }
                };
                if !counted {
                    return Draw::Redeemed;
                }
                if let Some(p) = self.pending.get_mut(&pid) {
                    p.redeemed = None;
                }
                let taken = self.pools[0]
                    .as_mut()
                    .is_some_and(|pool| pool.take_reserved(port));
                if !taken {
                    return Draw::Failed;
                }
                (Some(port), PortWant::Any)
            } else if let (Some(r), true) = (ask.even, fam == ask.primary) {
                let mut token_out = None;
                let port = self.draw_even(now, fam, r, &username, &mut token_out);
                if let (Some(t), Some(p)) = (token_out, self.pending.get_mut(&pid)) {
                    p.token_out = Some(t);
                    // The reservation holds them now.
                    p.reserve_user_held = false;
                    if core::mem::take(&mut p.reserve_credit_held) {
                        self.pending_credits = self.pending_credits.saturating_sub(1);
                    }
                }
                let kind = if r && fam == 0 {
                    PortWant::EvenPair
                } else {
                    PortWant::Even
                };
                (port, kind)
            } else {
                let port = self.pools[fam]
                    .as_mut()
                    .and_then(|p| p.acquire(&mut self.port_rng));
                (port, PortWant::Any)
            };
            match (got, self.pending.get_mut(&pid)) {
                (Some(port), Some(p)) => p.drawn[fam] = Some(port),
                (Some(port), None) => {
                    if let Some(pool) = self.pools[fam].as_mut() {
                        pool.release(port, now);
                    }
                }
                (None, _) => return Draw::Short(fam, kind),
            }
        }
        Draw::Done
    }

    /// The loop that issued `token`: its first byte on a node of several loops.
    pub(super) fn token_owner(&self, token: &[u8; 8]) -> LoopId {
        if self.node.count > 1 {
            LoopId(u16::from(token[0]))
        } else {
            self.node.id()
        }
    }

    /// Every port is drawn: ask the driver to bind them.
    fn start_binds(&mut self, pid: u64) {
        let Some(drawn) = self.pending.get_mut(&pid).map(|p| {
            p.stage = Stage::Binding;
            core::mem::take(&mut p.drawn)
        }) else {
            return;
        };
        for (fam, port) in drawn.iter().enumerate() {
            let Some(port) = *port else { continue };
            let relay = self.new_relay_id();
            self.relays.insert(relay, RelayOwner::Pending(pid, fam));
            if let Some(p) = self.pending.get_mut(&pid) {
                p.sides[fam] = Some(PendingSide {
                    relay,
                    port,
                    bound: false,
                    attempts: 0,
                });
            }
            self.request_bind(relay, fam, port);
        }
    }

    /// A port redeemed at the loop that issued its token arrived (None: refused).
    pub(super) fn token_port_arrived(&mut self, now: Instant, pid: u64, port: Option<u16>) {
        let waiting = self.pending.get(&pid).is_some_and(|p| {
            p.stage == Stage::Ports && p.drawn[0].is_none() && p.redeemed.is_none()
        });
        let adopted = port.filter(|&port| {
            self.pools[0]
                .as_mut()
                .is_some_and(|pool| pool.adopt_reserved(port))
        });
        match (adopted, waiting) {
            (Some(port), true) => {
                if let Some(p) = self.pending.get_mut(&pid) {
                    p.redeemed = Some(port);
                }
                self.resume(now, pid);
            }
            (Some(port), false) => {
                // Nobody waits for it any more: it is ours, through quarantine.
                if let Some(pool) = self.pools[0].as_mut() {
                    pool.release(port, now);
                }
            }
            (None, true) => {
                let client = p_info(self, pid);
                self.emit(Event::PortsExhausted { client });
                self.end_pending(now, pid, Some(508));
            }
            (None, false) => {}
        }
    }

    /// Forgets a pending Allocate without answering, giving back what it held.
    pub(super) fn drop_pending(&mut self, now: Instant, pid: u64) {
        let Some(p) = self.pending.remove(&pid) else {
            return;
        };
        if self.pending_by_client.get(&p.src.key) == Some(&pid) {
            self.pending_by_client.remove(&p.src.key);
        }
        for (fam, s) in p.sides.iter().enumerate() {
            let Some(s) = s else { continue };
            if self.relays.remove(&s.relay).is_some() && s.bound {
                self.push_output(Output::CloseRelay { relay: s.relay });
            }
            if let (true, Some(pool)) = (s.port != 0, self.pools[fam].as_mut()) {
                pool.release(s.port, now);
            }
        }
        for (fam, port) in p.drawn.iter().enumerate() {
            if let (Some(port), Some(pool)) = (port, self.pools[fam].as_mut()) {
                pool.release(*port, now);
            }
        }
        if let (Some(port), Some(pool)) = (p.redeemed, self.pools[0].as_mut()) {
            pool.release(port, now);
        }
        let credits = u32::from(p.credit_held) + u32::from(p.reserve_credit_held);
        self.pending_credits = self.pending_credits.saturating_sub(credits);
        if p.user_held {
            self.give_back_user(&p.auth.username);
        }
        if p.reserve_user_held {
            self.give_back_user(&p.auth.username);
        }
        // A reservation made for an Allocate that failed: its token was never sent.
        if let Some(r) = p.token_out.and_then(|t| {
            let r = self.reservations.remove(&t)?;
            self.timers.remove(&(r.expires, Timer::Reservation(t)));
            Some(r)
        }) {
            if let Some(pool) = self.pools[0].as_mut() {
                pool.release(r.port, now);
            }
            self.give_back_user(&r.username);
        }
    }

    /// The lifetime granted for a requested one (RFC 8656 §7.2, §8): the default when
    /// none or less is asked, never more than the configured maximum.
    pub(super) fn grant_lifetime(&self, requested: Option<u32>) -> u32 {
        let default = secs_u32(self.cfg.default_lifetime);
        let max = secs_u32(self.cfg.max_lifetime);
        requested.unwrap_or(default).max(default).min(max)
    }

    /// Ends the reservation under `token` here, giving back the counts it held (the
    /// redeeming Allocate takes its own next); its port stays reserved in the pool for the
    /// Allocate, which takes it once counted.
    fn redeem_token(&mut self, token: [u8; 8]) -> Option<u16> {
        let r = self.reservations.remove(&token)?;
        self.timers.remove(&(r.expires, Timer::Reservation(token)));
        self.give_back_user(&r.username);
        Some(r.port)
    }

    fn draw_even(
        &mut self,
        now: Instant,
        fam: usize,
        reserve: bool,
        username: &str,
        token_out: &mut Option<[u8; 8]>,
    ) -> Option<u16> {
        let port = self.pools[fam]
            .as_mut()?
            .acquire_even(&mut self.port_rng, reserve && fam == 0)?;
        if reserve && fam == 0 {
            let mut token = [0u8; 8];
            self.token_rng.fill_bytes(&mut token);
            if self.node.count > 1 {
                // The token names the loop that holds the port (crate::node).
                token[0] = u8::try_from(self.node.index).unwrap_or(u8::MAX);
            }
            let expires = now + RESERVATION_LIFETIME;
            self.reservations.insert(
                token,
                Reservation {
                    port: port.wrapping_add(1),
                    expires,
                    username: username.to_string(),
                },
            );
            self.timers.insert((expires, Timer::Reservation(token)));
            *token_out = Some(token);
        }
        Some(port)
    }

    fn request_bind(&mut self, relay: RelayId, fam: usize, port: u16) {
        let relay_addr = if fam == 0 {
            self.cfg.relay_v4
        } else {
            self.cfg.relay_v6
        };
        if let Some(ra) = relay_addr {
            self.push_output(Output::BindRelay {
                relay,
                addr: SocketAddr::new(ra.bind, port),
            });
        }
    }

    /// The answer to a failed Allocate: `code`, or 300 (Try Alternate) to another relay
    /// when it is 508 (draining, or full) and an alternate serves the client (RFC 8489
    /// §10), unless it redeems a RESERVATION-TOKEN (its port is here).
    fn allocate_failed(
        &mut self,
        src: &Source,
        msg: &Message<'_>,
        auth: &Authed,
        code: u16,
    ) -> MessageBuilder {
        let redirectable = code == 508 && msg.get(attr::RESERVATION_TOKEN).is_none();
        if let Some(alt) = redirectable.then(|| self.alternate_for(src)).flatten() {
            let (to, b) = (alt.addr, redirect::try_alternate(msg, alt));
            self.note_redirect(src, &auth.username, to);
            return b;
        }
        self.count_failure(code);
        self.emit(Event::AllocationFailed {
            client: src.info,
            username: Some(auth.username.clone()),
            code,
        });
        reply::error(msg, code)
    }

    fn count_failure(&mut self, code: u16) {
        *self.stats.allocation_failures.entry(code).or_insert(0) += 1;
        if code == 508 {
            self.stats.insufficient_capacity += 1;
        }
    }

    /// The driver's answer to a BindRelay.
    pub(super) fn relay_bound(
        &mut self,
        now: Instant,
        relay: RelayId,
        result: Result<(), BindError>,
    ) {
        let Some(&RelayOwner::Pending(pid, fam)) = self.relays.get(&relay) else {
            if !self.relays.contains_key(&relay) && result.is_ok() {
                // Its Allocate was abandoned meanwhile: close what was opened.
                self.push_output(Output::CloseRelay { relay });
            }
            return;
        };
        let Some(side) = self.pending.get(&pid).and_then(|p| p.sides[fam]) else {
            self.relays.remove(&relay);
            if result.is_ok() {
                self.push_output(Output::CloseRelay { relay });
            }
            return;
        };
        match result {
            Ok(()) => {
                if let Some(s) = self
                    .pending
                    .get_mut(&pid)
                    .and_then(|p| p.sides[fam].as_mut())
                {
                    s.bound = true;
                }
            }
            Err(e) => {
                self.relays.remove(&relay);
                let attempts = side.attempts + 1;
                let retry = e == BindError::AddrInUse && attempts < self.cfg.relay_bind_attempts;
                let next = self.pools[fam].as_mut().and_then(|pool| {
                    // The port is taken by someone else: back to quarantine, try again later.
                    pool.bind_failed(side.port, now);
                    if retry {
                        pool.acquire(&mut self.port_rng)
                    } else {
                        None
                    }
                });
                match next {
                    Some(port) => {
                        let relay = self.new_relay_id();
                        self.relays.insert(relay, RelayOwner::Pending(pid, fam));
                        if let Some(s) = self
                            .pending
                            .get_mut(&pid)
                            .and_then(|p| p.sides[fam].as_mut())
                        {
                            *s = PendingSide {
                                relay,
                                port,
                                bound: false,
                                attempts,
                            };
                        }
                        self.request_bind(relay, fam, port);
                    }
                    None => {
                        if let Some(s) = self
                            .pending
                            .get_mut(&pid)
                            .and_then(|p| p.sides[fam].as_mut())
                        {
                            // Nothing to release for this side any more.
                            s.port = 0;
                        }
                        if let Some(p) = self.pending.get(&pid) {
                            let info = p.src.info;
                            self.emit(Event::PortsExhausted { client: info });
                        }
                        self.end_pending(now, pid, Some(508));
                    }
                }
                return;
            }
        }
        let done = self
            .pending
            .get(&pid)
            .is_some_and(|p| p.sides.iter().flatten().all(|s| s.bound));
        if done {
            self.complete_pending(now, pid);
        }
    }

    /// Every relay socket is bound: the allocation exists (RFC 8656 §7.2 "...the server
    /// creates the allocation and replies with a success response").
    fn complete_pending(&mut self, now: Instant, pid: u64) {
        let Some(p) = self.pending.remove(&pid) else {
            return;
        };
        self.pending_by_client.remove(&p.src.key);
        // Its credit now counts as a live allocation.
        if p.credit_held {
            self.pending_credits = self.pending_credits.saturating_sub(1);
        }
        let id = AllocationId(self.next_allocation);
        self.next_allocation += 1;
        let mut sides = [None, None];
        for (fam, s) in p.sides.iter().enumerate() {
            let Some(s) = s else { continue };
            let relay_addr = if fam == 0 {
                self.cfg.relay_v4
            } else {
                self.cfg.relay_v6
            };
            let Some(ra) = relay_addr else { continue };
            self.relays.insert(s.relay, RelayOwner::Allocation(id));
            sides[fam] = Some(RelaySide {
                relay: s.relay,
                port: s.port,
                advertised: SocketAddr::new(ra.advertised, s.port),
            });
        }
        let expires = now + Duration::from_secs(u64::from(p.lifetime_s));
        let relayed: Vec<SocketAddr> = sides
            .iter()
            .flatten()
            .map(|s: &RelaySide| s.advertised)
            .collect();
        self.allocations.insert(
            id,
            Allocation {
                id,
                key5: p.src.key,
                client: p.src.info,
                username: p.auth.username.clone(),
                key: p.auth.signer.key,
                integrity: p.auth.signer.mac.clone(),
                key_valid_until_unix_s: None,
                algorithm: p.auth.algorithm,
                sides,
                created: now,
                expires,
                lifetime_s: p.lifetime_s,
                permissions: Vec::new(),
                channels: Vec::new(),
                traffic: TrafficCounters::default(),
                bandwidth: [TokenBucket::new(self.cfg.max_bps, now); 2],
                deadline: expires,
            },
        );
        self.by_client.insert(p.src.key, id);
        self.timers.insert((expires, Timer::Allocation(id)));
        self.stats.allocations_created += 1;
        if let crate::allocation::ClientKey::Stream(conn) = p.src.key {
            self.stream_got_allocation(conn, id);
        }
        let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Success, p.tid);
        for a in &relayed {
            b.add_xor_address(attr::XOR_RELAYED_ADDRESS, *a);
        }
        if let Some(f) = p.address_error {
            b.add_address_error_code(f, 440, reply::reason(440));
        }
        b.add_u32(attr::LIFETIME, p.lifetime_s);
        if let Some(t) = p.token_out {
            b.add(attr::RESERVATION_TOKEN, &t);
        }
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, p.src.info.addr);
        self.answer_authenticated(now, &p.src, p.tid, b, &p.auth.signer, p.fingerprint);
        self.emit(Event::AllocationCreated {
            id,
            client: p.src.info,
            username: p.auth.username,
            relayed,
            lifetime_s: p.lifetime_s,
        });
    }

    /// Abandons a pending Allocate: closes and quarantines its relay sockets, and answers
    /// `code` when there is still someone to answer.
    pub(super) fn end_pending(&mut self, now: Instant, pid: u64, code: Option<u16>) {
        let Some(p) = self.pending.get(&pid) else {
            return;
        };
        let (src, tid, auth, fingerprint) = (p.src, p.tid, p.auth.clone(), p.fingerprint);
        let redirectable = p.ask.token.is_none();
        self.drop_pending(now, pid);
        if let Some(code) = code {
            let alt = (redirectable && code == 508)
                .then(|| self.alternate_for(&src))
                .flatten();
            let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Error, tid);
            if let Some(alt) = alt {
                // Full: another relay of the fleet may have room (RFC 8489 §10).
                b.add_error_code(300, reply::reason(300));
                redirect::add_alternate(&mut b, alt);
                let to = alt.addr;
                self.note_redirect(&src, &auth.username, to);
            } else {
                self.count_failure(code);
                self.emit(Event::AllocationFailed {
                    client: src.info,
                    username: Some(auth.username.clone()),
                    code,
                });
                b.add_error_code(code, reply::reason(code));
            }
            let bytes = finish(
                b,
                self.cfg.software.as_deref(),
                Some(&auth.signer),
                fingerprint,
            );
            self.cache.insert(src.key, tid, bytes.clone(), now);
            self.send_to(&src, bytes);
        }
    }
}

/// The client of pending Allocate `pid`, for events.
fn p_info(server: &Server, pid: u64) -> crate::event::ClientInfo {
    server.pending.get(&pid).map_or(
        crate::event::ClientInfo {
            transport: crate::ids::Transport::Udp,
            addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            listener: ListenerId(0),
            conn: None,
        },
        |p| p.src.info,
    )
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
