//! Fleets: several relays behind one DNS name or ICE list, drained, restarted and killed
//! while calls run, and the oracles that judge what the fleet did with those calls.
//!
//! Each server has a life ([`Life`]): up, draining (the core refuses new allocations,
//! answering 300 Try Alternate where alternates are configured; the host exits when its
//! loops' reports say nothing is held, by the runtime's rule ([`crate::server`]'s drain
//! reports), or at its drain timeout, then starts again as a fresh process with a new
//! seed), or down (killed, or between a drain's exit and its restart).
//!
//! Invariants (named as reported):
//! - `no_call_cut_by_drain`: a draining server creates an allocation only for an
//!   Allocate that carries a RESERVATION-TOKEN (the second port of a pair it granted
//!   before: a call under way) or that arrived before the drain began, and it neither
//!   redirects nor refuses a live token's Allocate (the shadow's part,
//!   `crate::oracle`'s `drain`); an allocation live when its server began to drain is
//!   not deleted by the server (only by its client's Refresh 0, its stream's close, or
//!   its own expiry); no call loses a relay that is draining; a drained server exits
//!   only when it holds no allocation and no reservation, or at its timeout (what it
//!   left is counted by the oracle's shadow, never taken from the host that decided to
//!   exit).
//! - `no_redirect_loop`: a 300 never names the server that sent it (read from the answer's
//!   bytes as they leave the server: ALTERNATE-SERVER against the server's own listening
//!   addresses), and within one attempt a client never sends an Allocate to a server it
//!   left (read from the bytes the client sends and where they go: independent of the
//!   client's own check, RFC 8489 §10).
//! - `reconnect_within`: after a server is killed, every call that had its relay there
//!   has a relay again within the scenario's bound (or has ended).
//! - `fleet_absorbs`: no well-behaved session ends without an allocation while some
//!   server that is up and not draining has room under its `total_quota`.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use turnpike_core::config::AlternateServer;
use turnpike_core::event::DeleteReason;
use turnpike_core::stun::{attr, Class, Message, Method};
use turnpike_core::{AllocationId, Instant, Server};

/// Where a server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Serving.
    Up,
    /// Draining since `since`; exits at `deadline` at the latest.
    Draining {
        /// When the drain began.
        since: Instant,
        /// The drain timeout.
        deadline: Instant,
    },
    /// Gone: killed, or restarting after a drain.
    Down,
}

/// Asks every loop's core to drain (RFC 8489 §10 ALTERNATE-SERVER; the core answers new
/// Allocates with 300 Try Alternate, or refuses them without alternates).
pub fn start_drain(core: &mut Server, now: Instant) {
    core.start_drain(now);
}

/// Gives a server's core the alternates it sends clients to when full or draining.
/// Every listener offers every alternate (a fleet's relays listen alike).
pub fn configure(cfg: &mut turnpike_core::Config, alternates: &[SocketAddr]) {
    let listeners: Vec<_> = cfg.listeners.iter().map(|l| l.id).collect();
    for listener in listeners {
        for &addr in alternates {
            cfg.alternate_servers.push(AlternateServer {
                listener,
                addr,
                domain: None,
            });
        }
    }
}

/// The Allocate behind an allocation, as the oracle's shadow saw it arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Made {
    /// It carried a RESERVATION-TOKEN.
    Token,
    /// Any other, which arrived then.
    ArrivedAt(Instant),
    /// None seen (an allocation nobody asked for).
    Unknown,
}

/// What the fleet oracles know of one server.
#[derive(Debug)]
struct ServerWatch {
    addrs: Vec<IpAddr>,
    /// Its listening ports (every address listens on each); empty: any port.
    ports: Vec<u16>,
    total_quota: u64,
    life: Life,
    /// Allocations live when the drain began (not yet ended).
    live_at_drain: BTreeSet<AllocationId>,
    /// The last drain ended at its timeout (calls still there were cut by design).
    exited_at_timeout: Option<Instant>,
}

/// The fleet oracles of a run.
#[derive(Debug, Default)]
pub struct FleetWatch {
    servers: Vec<ServerWatch>,
    /// Each connected call's current relay server.
    current: BTreeMap<usize, usize>,
    /// Calls whose relay was killed: when they must have a relay again.
    pending: BTreeMap<usize, (Instant, Instant)>,
    deadlines: BTreeSet<(Instant, usize)>,
    /// The `reconnect_within` bound, if the scenario states one.
    pub reconnect_bound: Option<Duration>,
    /// Whether `fleet_absorbs` is checked.
    pub absorbs: bool,
    /// Redirects followed by clients.
    pub redirects: u64,
    /// Allocates that failed with 300: the client would not follow (a loop, or too many
    /// hops).
    pub redirects_refused: u64,
    /// Calls that got a relay again after losing theirs, and how long each took.
    pub reconnects: Vec<Duration>,
    /// Drains that ran to their end.
    pub restarts: u64,
    /// Of those, the ones that ended at their timeout with calls left.
    pub timeouts: u64,
    /// Servers killed.
    pub kills: u64,
    /// Allocations draining servers made for RESERVATION-TOKENs.
    pub drain_redemptions: u64,
}

/// A fleet invariant broken: its name and what was seen.
pub type FleetCheck = Result<(), (&'static str, String)>;

impl FleetWatch {
    /// Watches servers with these addresses and allocation caps.
    pub fn new(servers: Vec<(Vec<IpAddr>, u64)>) -> Self {
        FleetWatch {
            servers: servers
                .into_iter()
                .map(|(addrs, total_quota)| ServerWatch {
                    addrs,
                    ports: Vec::new(),
                    total_quota,
                    life: Life::Up,
                    live_at_drain: BTreeSet::new(),
                    exited_at_timeout: None,
                })
                .collect(),
            ..FleetWatch::default()
        }
    }

    /// Server `s` listens on these ports (on each of its addresses).
    pub fn set_ports(&mut self, s: usize, ports: Vec<u16>) {
        if let Some(w) = self.servers.get_mut(s) {
            w.ports = ports;
        }
    }

    /// The server holding address `ip`.
    pub fn server_of(&self, ip: IpAddr) -> Option<usize> {
        self.servers.iter().position(|s| s.addrs.contains(&ip))
    }

    /// Server `s` began to drain with these allocations live.
    pub fn drain_started(
        &mut self,
        s: usize,
        since: Instant,
        deadline: Instant,
        live: impl Iterator<Item = AllocationId>,
    ) {
        if let Some(w) = self.servers.get_mut(s) {
            w.life = Life::Draining { since, deadline };
            w.live_at_drain = live.collect();
            w.exited_at_timeout = None;
        }
    }

    /// Server `s`'s host exits its drain with `live` allocations (and reservations) left,
    /// as the oracle's shadow counts them.
    pub fn drain_exited(&mut self, s: usize, now: Instant, live: u64) -> FleetCheck {
        let Some(w) = self.servers.get_mut(s) else {
            return Ok(());
        };
        let Life::Draining { deadline, .. } = w.life else {
            return Err((
                "no_call_cut_by_drain",
                format!("server {s} exits a drain it is not in"),
            ));
        };
        w.life = Life::Down;
        w.live_at_drain.clear();
        if now >= deadline {
            w.exited_at_timeout = Some(now);
            self.timeouts += u64::from(live > 0);
        } else if live > 0 {
            return Err((
                "no_call_cut_by_drain",
                format!(
                    "server {s} exited {:?} before its drain timeout with {live} allocations",
                    deadline.since(now)
                ),
            ));
        }
        self.restarts += 1;
        Ok(())
    }

    /// Server `s` was killed at `now`: every call relayed there must reconnect in time.
    pub fn killed(&mut self, s: usize, now: Instant) {
        if let Some(w) = self.servers.get_mut(s) {
            w.life = Life::Down;
            w.live_at_drain.clear();
        }
        self.kills += 1;
        let Some(bound) = self.reconnect_bound else {
            return;
        };
        let hit: Vec<usize> = self
            .current
            .iter()
            .filter(|(_, &srv)| srv == s)
            .map(|(&r, _)| r)
            .collect();
        for r in hit {
            self.current.remove(&r);
            self.pending.insert(r, (now, now + bound));
            self.deadlines.insert((now + bound, r));
        }
    }

    /// Server `s` is up again (revived, or restarted after its drain).
    pub fn up(&mut self, s: usize) {
        if let Some(w) = self.servers.get_mut(s) {
            w.life = Life::Up;
        }
    }

    /// Server `s`'s life now.
    pub fn life(&self, s: usize) -> Life {
        self.servers.get(s).map_or(Life::Down, |w| w.life)
    }

    /// Server `s` created an allocation, answering the Allocate `made` says. While
    /// draining only a RESERVATION-TOKEN's Allocate (the second port of a pair granted
    /// before) or one that arrived before the drain began may make one. Every loop of
    /// the node begins its drain at the same instant ([`crate::server`]); an Allocate
    /// that arrived in that instant was taken or refused by the core's own order, so it
    /// is given the benefit.
    pub fn allocation_created(
        &mut self,
        s: usize,
        id: AllocationId,
        now: Instant,
        made: Made,
    ) -> FleetCheck {
        let Life::Draining { since, .. } = self.life(s) else {
            return Ok(());
        };
        match made {
            Made::Token => {
                self.drain_redemptions += 1;
                Ok(())
            }
            Made::ArrivedAt(at) if at <= since => Ok(()),
            _ => Err((
                "no_call_cut_by_drain",
                format!(
                    "server {s} granted allocation {id:?} {:?} into its drain to a new Allocate ({made:?})",
                    now.since(since)
                ),
            )),
        }
    }

    /// Server `s` deleted an allocation.
    pub fn allocation_deleted(
        &mut self,
        s: usize,
        id: AllocationId,
        reason: DeleteReason,
    ) -> FleetCheck {
        let Some(w) = self.servers.get_mut(s) else {
            return Ok(());
        };
        if !w.live_at_drain.remove(&id) {
            return Ok(());
        }
        match reason {
            DeleteReason::Refreshed0 | DeleteReason::StreamClosed | DeleteReason::Expired => Ok(()),
            DeleteReason::Admin => Err((
                "no_call_cut_by_drain",
                format!(
                    "server {s} deleted allocation {id:?}, live when its drain began ({})",
                    reason.as_str()
                ),
            )),
        }
    }

    /// Call `record` keeps a relay on the server holding `relayed`'s address.
    pub fn connected(&mut self, record: usize, now: Instant, relayed: Option<SocketAddr>) {
        if let Some((lost, _)) = self.pending.remove(&record) {
            self.deadlines.retain(|&(_, r)| r != record);
            self.reconnects.push(now.since(lost));
        }
        match relayed.and_then(|a| self.server_of(a.ip())) {
            Some(s) => {
                self.current.insert(record, s);
            }
            None => {
                self.current.remove(&record);
            }
        }
    }

    /// Call `record` lost its relay at `now` (its client saw it). Losing a relay that is
    /// draining, and has not hit its timeout, is a call cut by the drain.
    pub fn relay_lost(&mut self, record: usize, now: Instant) -> FleetCheck {
        let Some(s) = self.current.remove(&record) else {
            return Ok(());
        };
        let w = &self.servers[s];
        match w.life {
            Life::Draining { since, .. } => Err((
                "no_call_cut_by_drain",
                format!(
                    "call {record} lost its relay on server {s}, draining for {:?}",
                    now.since(since)
                ),
            )),
            Life::Up => Ok(()),
            Life::Down => Ok(()),
        }
    }

    /// Call `record` ended (released, vanished, or gave up).
    pub fn ended(&mut self, record: usize) {
        self.current.remove(&record);
        if self.pending.remove(&record).is_some() {
            self.deadlines.retain(|&(_, r)| r != record);
        }
    }

    /// Server `s` answered an Allocate with 300 naming `to`: never itself.
    pub fn server_redirected(&self, s: usize, to: SocketAddr) -> FleetCheck {
        match self.servers.get(s) {
            Some(w) if w.addrs.contains(&to.ip()) => Err((
                "no_redirect_loop",
                format!("server {s} redirected a client to itself ({to})"),
            )),
            _ => Ok(()),
        }
    }

    /// Server `s` sent `data` (a whole STUN message, or anything else): a 300 answer to an
    /// Allocate must name, in ALTERNATE-SERVER, an address the server does not listen on.
    pub fn server_answered(&self, s: usize, data: &[u8]) -> FleetCheck {
        let Some(to) = try_alternate_of(data) else {
            return Ok(());
        };
        let Some(w) = self.servers.get(s) else {
            return Ok(());
        };
        if w.addrs.contains(&to.ip()) && (w.ports.is_empty() || w.ports.contains(&to.port())) {
            return Err((
                "no_redirect_loop",
                format!("server {s} answered 300 naming itself ({to}) in ALTERNATE-SERVER"),
            ));
        }
        Ok(())
    }

    /// A client followed a 300 (counted; where it goes next is checked on the wire,
    /// [`FleetWatch::allocate_sent`]).
    pub fn redirect(&mut self) {
        self.redirects += 1;
    }

    /// An attempt of call `record` sends an Allocate to `to`; `went` lists the servers it
    /// sent Allocates to so far, in order (each once per run: retransmissions and the
    /// authenticated retry go to the same one). Going back to a server it left is a loop,
    /// whatever the client believed it tried.
    pub fn allocate_sent(
        &self,
        record: usize,
        went: &mut Vec<SocketAddr>,
        to: SocketAddr,
    ) -> FleetCheck {
        if went.last() == Some(&to) {
            return Ok(());
        }
        if went.contains(&to) {
            return Err((
                "no_redirect_loop",
                format!(
                    "an attempt of call {record} sent an Allocate back to {to}, after {went:?}"
                ),
            ));
        }
        went.push(to);
        Ok(())
    }

    /// A well-behaved session ended without an allocation: with `absorbs`, some server
    /// that is up and not draining must have been full. `live(s)`: allocations of `s`.
    pub fn session_failed(&self, record: usize, live: impl Fn(usize) -> u64) -> FleetCheck {
        if !self.absorbs {
            return Ok(());
        }
        let room: Vec<(usize, u64)> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.life == Life::Up)
            .map(|(s, w)| (s, w.total_quota.saturating_sub(live(s))))
            .filter(|&(_, room)| room > 0)
            .collect();
        if room.is_empty() {
            return Ok(());
        }
        Err((
            "fleet_absorbs",
            format!("session {record} ended without a relay while the fleet had room: {room:?} (server, free)"),
        ))
    }

    /// The first call whose reconnection is overdue at `now`.
    pub fn after_step(&self, now: Instant) -> FleetCheck {
        let Some(&(deadline, r)) = self.deadlines.first() else {
            return Ok(());
        };
        if now <= deadline {
            return Ok(());
        }
        let lost = self.pending.get(&r).map(|p| p.0).unwrap_or(deadline);
        Err((
            "reconnect_within",
            format!(
                "call {r} has had no relay for {:?} since its server was killed (bound {:?})",
                now.since(lost),
                self.reconnect_bound.unwrap_or_default()
            ),
        ))
    }
}

/// The ALTERNATE-SERVER of a 300 (Try Alternate) answer to an Allocate (RFC 8489 §10).
fn try_alternate_of(data: &[u8]) -> Option<SocketAddr> {
    let msg = Message::parse(data).ok()?;
    if msg.method() != Method::ALLOCATE || msg.class() != Class::Error {
        return None;
    }
    let code = msg
        .get(attr::ERROR_CODE)
        .and_then(|v| attr::decode_error_code(v).ok())?
        .0;
    if code != 300 {
        return None;
    }
    msg.get(attr::ALTERNATE_SERVER)
        .and_then(|v| attr::decode_address(v).ok())
}

/// Whether `data` is an Allocate request (what a client sends to get a relay).
pub fn is_allocate_request(data: &[u8]) -> bool {
    Message::parse(data)
        .is_ok_and(|m| m.method() == Method::ALLOCATE && m.class() == Class::Request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Instant {
        Instant::from_secs(1_000 + s)
    }

    fn fleet() -> FleetWatch {
        let ip = |n: u8| vec![IpAddr::from([30, 0, 0, n])];
        FleetWatch::new(vec![(ip(1), 2), (ip(2), 2)])
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([30, 0, 0, n], 3478))
    }

    #[test]
    fn a_redirect_never_loops_nor_names_its_sender() {
        let f = fleet();
        let mut went = Vec::new();
        assert!(f.allocate_sent(0, &mut went, addr(1)).is_ok());
        assert!(f.allocate_sent(0, &mut went, addr(1)).is_ok(), "a retry");
        assert!(f.allocate_sent(0, &mut went, addr(2)).is_ok(), "redirected");
        let back = f.allocate_sent(0, &mut went, addr(1));
        assert_eq!(back.map_err(|e| e.0), Err("no_redirect_loop"));
        assert!(f.server_redirected(0, addr(2)).is_ok());
        assert_eq!(
            f.server_redirected(0, addr(1)).map_err(|e| e.0),
            Err("no_redirect_loop")
        );
    }

    /// A 300 as the core sends it, naming `alt`.
    fn try_alternate(alt: SocketAddr) -> Vec<u8> {
        let mut b = turnpike_core::stun::MessageBuilder::new(
            Method::ALLOCATE,
            Class::Error,
            turnpike_core::stun::TransactionId([7; 12]),
        );
        b.add_error_code(300, "Try Alternate");
        b.add_address(attr::ALTERNATE_SERVER, alt);
        b.finish()
    }

    #[test]
    fn a_300_on_the_wire_never_names_its_sender() {
        let mut f = fleet();
        f.set_ports(0, vec![3478]);
        assert!(f.server_answered(0, &try_alternate(addr(2))).is_ok());
        assert!(f.server_answered(0, b"not stun").is_ok());
        let own = f.server_answered(0, &try_alternate(addr(1)));
        assert_eq!(own.map_err(|e| e.0), Err("no_redirect_loop"));
        let other_port = SocketAddr::from(([30, 0, 0, 1], 5349));
        assert!(f.server_answered(0, &try_alternate(other_port)).is_ok());
    }

    #[test]
    fn a_drain_grants_only_calls_under_way_and_exits_empty_or_at_its_timeout() {
        let mut f = fleet();
        let id = AllocationId(7);
        f.drain_started(0, t(10), t(300), [id].into_iter());
        let new = Made::ArrivedAt(t(11));
        assert!(f
            .allocation_created(0, AllocationId(8), t(11), new)
            .is_err());
        let unknown = Made::Unknown;
        assert!(f
            .allocation_created(0, AllocationId(8), t(11), unknown)
            .is_err());
        assert!(f.allocation_created(1, AllocationId(8), t(11), new).is_ok());
        // A token's second port, and an Allocate that came in before the drain.
        assert!(f
            .allocation_created(0, AllocationId(9), t(12), Made::Token)
            .is_ok());
        let early = Made::ArrivedAt(t(9));
        assert!(f
            .allocation_created(0, AllocationId(10), t(12), early)
            .is_ok());
        assert!(f.allocation_deleted(0, id, DeleteReason::Admin).is_err());
        assert!(f.drain_exited(0, t(20), 1).is_err(), "early, not empty");
        f.drain_started(0, t(400), t(700), [id].into_iter());
        assert!(f
            .allocation_deleted(0, id, DeleteReason::Refreshed0)
            .is_ok());
        assert!(f.drain_exited(0, t(500), 0).is_ok());
        f.drain_started(0, t(800), t(1100), [id].into_iter());
        assert!(f.drain_exited(0, t(1100), 3).is_ok(), "at the timeout");
        assert_eq!(f.restarts, 2);
    }

    #[test]
    fn a_call_on_a_draining_relay_keeps_it() {
        let mut f = fleet();
        f.connected(5, t(0), Some(SocketAddr::from(([30, 0, 0, 1], 50_000))));
        f.drain_started(0, t(1), t(300), std::iter::empty());
        assert_eq!(
            f.relay_lost(5, t(2)).map_err(|e| e.0),
            Err("no_call_cut_by_drain")
        );
    }

    #[test]
    fn a_killed_relay_s_calls_must_reconnect_in_time() {
        let mut f = fleet();
        f.reconnect_bound = Some(Duration::from_secs(7));
        f.connected(1, t(0), Some(SocketAddr::from(([30, 0, 0, 1], 50_000))));
        f.connected(2, t(0), Some(SocketAddr::from(([30, 0, 0, 1], 50_001))));
        f.connected(3, t(0), Some(SocketAddr::from(([30, 0, 0, 2], 50_000))));
        f.killed(0, t(10));
        assert!(f.after_step(t(16)).is_ok());
        f.connected(1, t(16), Some(SocketAddr::from(([30, 0, 0, 2], 50_001))));
        f.ended(2);
        assert!(f.after_step(t(30)).is_ok());
        assert_eq!(f.reconnects, vec![Duration::from_secs(6)]);
        f.connected(4, t(31), Some(SocketAddr::from(([30, 0, 0, 2], 50_002))));
        f.killed(1, t(40));
        assert_eq!(
            f.after_step(t(48)).map_err(|e| e.0),
            Err("reconnect_within")
        );
    }

    #[test]
    fn a_session_fails_only_when_the_fleet_is_full() {
        let mut f = fleet();
        assert!(f.session_failed(0, |_| 0).is_ok(), "not checked");
        f.absorbs = true;
        assert!(f.session_failed(0, |_| 2).is_ok(), "all full");
        assert_eq!(
            f.session_failed(0, |s| if s == 0 { 2 } else { 1 })
                .map_err(|e| e.0),
            Err("fleet_absorbs")
        );
        f.drain_started(1, t(0), t(300), std::iter::empty());
        assert!(
            f.session_failed(0, |s| if s == 0 { 2 } else { 1 }).is_ok(),
            "a draining relay's room does not count"
        );
    }
}
