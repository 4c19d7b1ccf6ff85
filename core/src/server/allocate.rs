//! Allocate (RFC 8656 §7.2) and the asynchronous bind of relay sockets.
//!
//! An authenticated Allocate draws a port per address family and asks the driver to bind
//! it (`Output::BindRelay`). The answer waits in a `Pending` until every bind is reported:
//! a port found busy is quarantined and another one tried; when none is left the client
//! gets 508.

use super::authenticate::Authed;
use super::reply::{self, finish};
use super::{RelayOwner, Reservation, Server, Source, Timer, TokenBucket, RESERVATION_LIFETIME};
use crate::allocation::{Allocation, RelaySide};
use crate::event::{Event, Output, TrafficCounters};
use crate::ids::{AllocationId, ListenerId, RelayId};
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
}

impl Pending {
    /// The listener its client came through.
    pub(super) fn listener(&self) -> ListenerId {
        self.src.info.listener
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
        if self.per_user.get(&auth.username).copied().unwrap_or(0) >= self.cfg.user_quota {
            return Err(486);
        }
        if self.allocations.len() + self.pending.len() >= self.cfg.total_quota as usize {
            return Err(508);
        }
        let mut ports: [Option<u16>; 2] = [None, None];
        let mut token_out = None;
        for fam in 0..2 {
            if !want[fam] {
                continue;
            }
            let drawn = if let (Some(t), 0) = (token, fam) {
                self.redeem_token(t)
            } else if let (Some(r), true) = (even, fam == primary) {
                self.draw_even(now, fam, r, &mut token_out)
            } else {
                self.pools[fam]
                    .as_mut()
                    .and_then(|p| p.acquire(&mut self.port_rng))
            };
            match drawn {
                Some(port) => ports[fam] = Some(port),
                None => {
                    for (f, p) in ports.iter().enumerate() {
                        if let (Some(p), Some(pool)) = (p, self.pools[f].as_mut()) {
                            pool.release(*p, now);
                        }
                    }
                    self.emit(Event::PortsExhausted { client: src.info });
                    return Err(508);
                }
            }
        }
        let pid = self.next_pending;
        self.next_pending += 1;
        let mut sides = [None, None];
        for (fam, port) in ports.iter().enumerate() {
            let Some(port) = *port else { continue };
            let relay = self.new_relay_id();
            self.relays.insert(relay, RelayOwner::Pending(pid, fam));
            sides[fam] = Some(PendingSide {
                relay,
                port,
                bound: false,
                attempts: 0,
            });
            self.request_bind(relay, fam, port);
        }
        *self.per_user.entry(auth.username.clone()).or_insert(0) += 1;
        self.pending.insert(
            pid,
            Pending {
                src: *src,
                tid: msg.transaction_id(),
                fingerprint: msg.has_fingerprint(),
                auth: auth.clone(),
                lifetime_s: self.grant_lifetime(lifetime),
                sides,
                address_error,
                token_out,
            },
        );
        self.pending_by_client.insert(src.key, pid);
        Ok(())
    }

    /// The lifetime granted for a requested one (RFC 8656 §7.2, §8): the default when
    /// none or less is asked, never more than the configured maximum.
    pub(super) fn grant_lifetime(&self, requested: Option<u32>) -> u32 {
        let default = secs_u32(self.cfg.default_lifetime);
        let max = secs_u32(self.cfg.max_lifetime);
        requested.unwrap_or(default).max(default).min(max)
    }

    fn redeem_token(&mut self, token: [u8; 8]) -> Option<u16> {
        let r = self.reservations.remove(&token)?;
        self.timers.remove(&(r.expires, Timer::Reservation(token)));
        let pool = self.pools[0].as_mut()?;
        pool.take_reserved(r.port).then_some(r.port)
    }

    fn draw_even(
        &mut self,
        now: Instant,
        fam: usize,
        reserve: bool,
        token_out: &mut Option<[u8; 8]>,
    ) -> Option<u16> {
        let port = self.pools[fam]
            .as_mut()?
            .acquire_even(&mut self.port_rng, reserve && fam == 0)?;
        if reserve && fam == 0 {
            let mut token = [0u8; 8];
            self.token_rng.fill_bytes(&mut token);
            let expires = now + RESERVATION_LIFETIME;
            self.reservations.insert(
                token,
                Reservation {
                    port: port.wrapping_add(1),
                    expires,
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

    fn allocate_failed(
        &mut self,
        src: &Source,
        msg: &Message<'_>,
        auth: &Authed,
        code: u16,
    ) -> MessageBuilder {
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
        self.release_user(&p.auth.username);
        if let Some(code) = code {
            self.count_failure(code);
            self.emit(Event::AllocationFailed {
                client: p.src.info,
                username: Some(p.auth.username.clone()),
                code,
            });
            let mut b = MessageBuilder::new(Method::ALLOCATE, Class::Error, p.tid);
            b.add_error_code(code, reply::reason(code));
            let bytes = finish(
                b,
                self.cfg.software.as_deref(),
                Some(&p.auth.signer),
                p.fingerprint,
            );
            self.cache.insert(p.src.key, p.tid, bytes.clone(), now);
            self.send_to(&p.src, bytes);
        }
    }
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
