//! Scripted UDP clients in the manner of coturn's `turnutils_uclient`: one host, several
//! UDP 5-tuples (local ports), one REST credential, and Allocates the browser model never
//! sends.
//!
//! Models (the `model` of a client group):
//! - `uclient-even-port`: what `turnutils_uclient` does without `-c` (RTP and RTCP on
//!   adjacent ports): an Allocate with EVEN-PORT and the R bit (RFC 8656 §7.1, §14.6)
//!   from a first 5-tuple, then an Allocate from a second 5-tuple carrying the
//!   RESERVATION-TOKEN of the answer (§14.9). The second relayed address must be the
//!   port above the first, which must be even (§7.2): a client that sees otherwise
//!   reports `even_port_pair_adjacent`.
//!   With `redeem_after_s` the token is redeemed that long after the first allocation
//!   (the reservation held meanwhile) and the session held `session_s` from then; with
//!   `first_release_s` the first allocation is released that long after it was granted
//!   (so that a reservation may be all a loop holds).
//! - `uclient-race`: one user's Allocates from `sockets` 5-tuples at the same instant,
//!   racing for `user_quota` (§7.2 step 9: 486 past it).
//! - `uclient-plain`: a plain Allocate per 5-tuple.
//!
//! With `land_on_loop = L`, local ports are picked so that every 5-tuple hashes to loop
//! L of the server (the run's [`crate::node::LoopHash`]): uneven spreading on purpose.
//!
//! Each session: challenge (401), Allocate(s), hold for `session_s`, Refresh with
//! LIFETIME 0 for each allocation, pause, next session. Requests are retransmitted as
//! RFC 8489 §6.2.1 says (RTO 500 ms doubling, 7 sends), 438 takes the new nonce.

use crate::faults::Control;
use crate::host::{Cx, Phase};
use crate::link::between;
use crate::scenario::ClientGroup;
use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use turnpike_core::auth::{long_term_key, rest_password, Key, PasswordAlgorithm};
use turnpike_core::stun::{attr, Class, Message, MessageBuilder, Method, TransactionId};
use turnpike_core::Instant;

/// First retransmission timeout (RFC 8489 §6.2.1).
const RTO: Duration = Duration::from_millis(500);
/// Sends of one request at most (Rc).
const MAX_SENDS: u32 = 7;
/// Most sockets of one client.
pub const MAX_SOCKETS: u32 = 64;
/// Ports tried to find one that hashes to the wanted loop.
const PORT_SEARCH: u16 = 4096;

/// What one of the model's sessions is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// EVEN-PORT R=1, then the RESERVATION-TOKEN from another 5-tuple.
    EvenPort,
    /// Every socket allocates at once, one username.
    Race,
    /// Every socket allocates.
    Plain,
}

impl Model {
    /// The model a client group names, if it is one of these.
    pub fn named(name: &str) -> Option<Model> {
        match name {
            "uclient-even-port" => Some(Model::EvenPort),
            "uclient-race" => Some(Model::Race),
            "uclient-plain" => Some(Model::Plain),
            _ => None,
        }
    }
}

/// What the scripted clients of a run achieved (for expectations).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Sessions started.
    pub sessions: u64,
    /// EVEN-PORT pairs completed (both allocations, adjacent ports).
    pub pairs: u64,
    /// Allocations granted.
    pub allocated: u64,
    /// Error codes of Allocates, by code.
    pub codes: BTreeMap<u16, u64>,
    /// Race sessions, and those in which exactly `min(sockets, user_quota)` won.
    pub races: (u64, u64),
    /// Requests given up after the last retransmission.
    pub timeouts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Nothing to do this session.
    Idle,
    /// Waiting for the 401 of an unauthenticated Allocate.
    Challenge,
    /// Challenge done: waiting for the signal to allocate (races start together).
    Ready,
    /// An authenticated Allocate is out.
    Allocating,
    /// Allocated.
    Allocated,
    /// Refresh 0 is out.
    Releasing,
    /// Done (refused, released, given up).
    Done,
}

#[derive(Debug)]
struct Sock {
    local: SocketAddr,
    step: Step,
    tid: [u8; 12],
    request: Vec<u8>,
    sends: u32,
    retransmit_at: Option<Instant>,
    relayed: Option<SocketAddr>,
    token: Option<[u8; 8]>,
    /// The token to present (second socket of a pair).
    redeem: Option<[u8; 8]>,
    code: Option<u16>,
}

/// A scripted client host.
#[derive(Debug)]
pub struct UClient {
    id: usize,
    model: Model,
    spec: ClientGroup,
    server: SocketAddr,
    ip: IpAddr,
    server_index: usize,
    land_on_loop: Option<u16>,
    user_quota: u32,
    username: String,
    password: String,
    auth: Option<(String, String, Key)>,
    socks: Vec<Sock>,
    next_port: u16,
    next_session: Option<Instant>,
    end_at: Option<Instant>,
    /// EVEN-PORT pair: when the second 5-tuple redeems the token.
    redeem_at: Option<Instant>,
    /// EVEN-PORT pair: when the first allocation is released.
    first_release_at: Option<Instant>,
    sessions: u32,
    tid_counter: u64,
    phase: Phase,
}

impl UClient {
    /// A client `id` of `spec` at `ip`, talking to `server` (server number
    /// `server_index` of the scenario, whose `user_quota` is given), starting at `start`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        model: Model,
        spec: ClientGroup,
        ip: IpAddr,
        server: SocketAddr,
        server_index: usize,
        user_quota: u32,
        start: Instant,
    ) -> Self {
        UClient {
            id,
            model,
            land_on_loop: spec.land_on_loop,
            spec,
            server,
            ip,
            server_index,
            user_quota,
            username: String::new(),
            password: String::new(),
            auth: None,
            socks: Vec::new(),
            next_port: 30_000,
            next_session: Some(start),
            end_at: None,
            redeem_at: None,
            first_release_at: None,
            sessions: 0,
            tid_counter: 0,
            phase: Phase::Safety,
        }
    }

    /// A datagram from the server.
    pub fn on_datagram(&mut self, cx: &mut Cx, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        if from != self.server {
            return;
        }
        let Some(i) = self.socks.iter().position(|s| s.local == to) else {
            return;
        };
        let Ok(msg) = Message::parse(data) else {
            return;
        };
        if msg.transaction_id().0 != self.socks[i].tid {
            return;
        }
        let class = msg.class();
        if class != Class::Success && class != Class::Error {
            return;
        }
        self.socks[i].retransmit_at = None;
        let code = msg
            .get(attr::ERROR_CODE)
            .and_then(|v| attr::decode_error_code(v).ok())
            .map(|(c, _)| c);
        if matches!(code, Some(401) | Some(438)) {
            let realm = msg
                .get(attr::REALM)
                .and_then(|v| attr::decode_text(v, attr::REALM, attr::MAX_TEXT_LEN).ok());
            let nonce = msg
                .get(attr::NONCE)
                .and_then(|v| attr::decode_text(v, attr::NONCE, attr::MAX_TEXT_LEN).ok());
            let (Some(realm), Some(nonce)) = (realm, nonce) else {
                self.socks[i].step = Step::Done;
                return;
            };
            let fresh = self.auth.as_ref().is_none_or(|a| a.1 != nonce);
            let key = long_term_key(
                PasswordAlgorithm::Md5,
                &self.username,
                realm,
                &self.password,
            );
            self.auth = Some((realm.to_string(), nonce.to_string(), key));
            match self.socks[i].step {
                Step::Challenge => {
                    self.socks[i].step = Step::Ready;
                    self.ready(cx);
                }
                // A stale nonce (438), or a 401 with a new one: once more.
                Step::Allocating | Step::Releasing if fresh => {
                    let step = self.socks[i].step;
                    self.send_request(cx, i, step);
                }
                _ => self.socks[i].step = Step::Done,
            }
            return;
        }
        match self.socks[i].step {
            Step::Allocating => self.allocate_answer(cx, i, &msg, code),
            Step::Releasing => self.socks[i].step = Step::Done,
            _ => {}
        }
    }

    /// The host's timer.
    pub fn on_wake(&mut self, cx: &mut Cx) {
        let now = cx.now;
        for i in 0..self.socks.len() {
            if self.socks[i].retransmit_at.is_some_and(|t| t <= now) {
                self.retransmit(cx, i);
            }
        }
        if self.redeem_at.is_some_and(|t| t <= now) {
            self.redeem_at = None;
            self.redeem(cx);
        }
        if self.first_release_at.is_some_and(|t| t <= now) {
            self.first_release_at = None;
            if self
                .socks
                .first()
                .is_some_and(|s| s.step == Step::Allocated)
            {
                self.send_request(cx, 0, Step::Releasing);
            }
        }
        if self.end_at.is_some_and(|t| t <= now) {
            self.end_at = None;
            self.release(cx);
        }
        if self.next_session.is_some_and(|t| t <= now) {
            self.next_session = None;
            self.start_session(cx);
        }
    }

    /// Faults and phases.
    pub fn on_control(&mut self, _cx: &mut Cx, c: &Control) {
        if let Control::Phase(p) = c {
            self.phase = *p;
            if *p == Phase::Drain {
                self.next_session = None;
            }
        }
    }

    /// When to wake.
    pub fn next_wake(&self) -> Option<Instant> {
        self.socks
            .iter()
            .filter_map(|s| s.retransmit_at)
            .chain(self.end_at)
            .chain(self.redeem_at)
            .chain(self.first_release_at)
            .chain(self.next_session)
            .min()
    }

    fn start_session(&mut self, cx: &mut Cx) {
        if self.spec.sessions.is_some_and(|n| self.sessions >= n) {
            return;
        }
        self.sessions += 1;
        cx.oracle.tally.sessions += 1;
        let unix = cx.shared.walls[self.server_index].unix_s(cx.now);
        self.username = format!("{}:u{}", unix + self.spec.credential_ttl_s, self.id);
        let secret = cx.shared.secrets[self.server_index].clone();
        self.password = rest_password(secret.as_bytes(), &self.username);
        self.auth = None;
        let n = match self.model {
            Model::EvenPort => 2,
            Model::Race | Model::Plain => self.spec.sockets.clamp(1, MAX_SOCKETS),
        };
        self.socks.clear();
        for _ in 0..n {
            let local = self.pick_local(cx);
            self.socks.push(Sock {
                local,
                step: Step::Idle,
                tid: [0; 12],
                request: Vec::new(),
                sends: 0,
                retransmit_at: None,
                relayed: None,
                token: None,
                redeem: None,
                code: None,
            });
        }
        // Every socket learns the challenge (the EVEN-PORT pair: the first only; the
        // second asks once it has the token).
        let first = if self.model == Model::EvenPort { 1 } else { n };
        for i in 0..first as usize {
            self.send_request(cx, i, Step::Challenge);
        }
        let hold = between(cx.rng, self.spec.session_s[0], self.spec.session_s[1]);
        self.end_at = Some(cx.now + Duration::from_secs(hold));
    }

    /// Every socket that learnt the challenge allocates; a race waits for all of them.
    fn ready(&mut self, cx: &mut Cx) {
        let all = self
            .socks
            .iter()
            .all(|s| matches!(s.step, Step::Ready | Step::Done | Step::Idle));
        if self.model == Model::Race && !all {
            return;
        }
        for i in 0..self.socks.len() {
            if self.socks[i].step == Step::Ready {
                self.send_request(cx, i, Step::Allocating);
            }
        }
    }

    fn allocate_answer(&mut self, cx: &mut Cx, i: usize, msg: &Message<'_>, code: Option<u16>) {
        if let Some(c) = code {
            *cx.oracle.tally.codes.entry(c).or_insert(0) += 1;
            self.socks[i].code = Some(c);
            self.socks[i].step = Step::Done;
            cx.note(format!("uclient {}: socket {i} refused {c}", self.id));
            self.race_done(cx);
            return;
        }
        let tid = msg.transaction_id();
        let relayed = msg
            .get(attr::XOR_RELAYED_ADDRESS)
            .and_then(|v| attr::decode_xor_address(v, &tid).ok());
        let token = msg
            .get(attr::RESERVATION_TOKEN)
            .and_then(|v| attr::decode_reservation_token(v).ok());
        let s = &mut self.socks[i];
        s.step = Step::Allocated;
        s.relayed = relayed;
        s.token = token;
        cx.oracle.tally.allocated += 1;
        cx.note(format!(
            "uclient {}: socket {i} allocated {relayed:?} token {}",
            self.id,
            token.is_some()
        ));
        if self.model == Model::EvenPort {
            self.pair_step(cx, i, relayed, token);
        }
        self.race_done(cx);
    }

    /// EVEN-PORT: the first allocation hands its token to the second socket; the second
    /// must sit on the port above.
    fn pair_step(
        &mut self,
        cx: &mut Cx,
        i: usize,
        relayed: Option<SocketAddr>,
        token: Option<[u8; 8]>,
    ) {
        if i == 0 {
            let Some(r) = relayed else { return };
            if r.port() % 2 != 0 || token.is_none() {
                cx.oracle.fail(
                    "even_port_pair_adjacent",
                    format!(
                        "uclient {}: EVEN-PORT R=1 gave {r} with token {token:?}",
                        self.id
                    ),
                );
                return;
            }
            if let Some(s) = self.socks.get_mut(1) {
                s.redeem = token;
            }
            if let Some([lo, hi]) = self.spec.first_release_s {
                let ms = between(cx.rng, lo * 1000, hi * 1000);
                self.first_release_at = Some(cx.now + Duration::from_millis(ms));
            }
            match self.spec.redeem_after_s {
                // Later: the pair's reservation is held meanwhile, and the session runs
                // its course from the redemption.
                Some([lo, hi]) => {
                    let ms = between(cx.rng, lo * 1000, hi * 1000);
                    self.redeem_at = Some(cx.now + Duration::from_millis(ms));
                    self.end_at = None;
                }
                None => self.send_request(cx, 1, Step::Allocating),
            }
        } else {
            let first = self.socks[0].relayed;
            match (first, relayed) {
                (Some(a), Some(b)) if b.port() == a.port().wrapping_add(1) && a.ip() == b.ip() => {
                    cx.oracle.tally.pairs += 1;
                }
                _ => cx.oracle.fail(
                    "even_port_pair_adjacent",
                    format!(
                        "uclient {}: RESERVATION-TOKEN gave {relayed:?}, the pair's first is {first:?}",
                        self.id
                    ),
                ),
            }
        }
    }

    /// EVEN-PORT pair, later: the second 5-tuple presents the token, and the session
    /// holds what it gets for `session_s`.
    fn redeem(&mut self, cx: &mut Cx) {
        if self
            .socks
            .get(1)
            .is_none_or(|s| s.step != Step::Idle || s.redeem.is_none())
        {
            // Nothing to redeem: the session ends now.
            self.end_at = Some(cx.now);
            return;
        }
        self.send_request(cx, 1, Step::Allocating);
        let hold = between(cx.rng, self.spec.session_s[0], self.spec.session_s[1]);
        self.end_at = Some(cx.now + Duration::from_secs(hold));
    }

    /// A race is judged once every socket has its answer: exactly min(sockets, quota)
    /// allocations must have been granted.
    fn race_done(&mut self, cx: &mut Cx) {
        if self.model != Model::Race {
            return;
        }
        if self
            .socks
            .iter()
            .any(|s| matches!(s.step, Step::Challenge | Step::Ready | Step::Allocating))
        {
            return;
        }
        let won = self
            .socks
            .iter()
            .filter(|s| s.step == Step::Allocated)
            .count() as u32;
        let want = (self.socks.len() as u32).min(self.user_quota);
        cx.oracle.tally.races.0 += 1;
        if won == want {
            cx.oracle.tally.races.1 += 1;
        } else {
            cx.note(format!(
                "uclient {}: race won by {won} of {}, quota {}",
                self.id,
                self.socks.len(),
                self.user_quota
            ));
        }
    }

    /// Session over: Refresh 0 for every allocation, then the next session after a pause.
    fn release(&mut self, cx: &mut Cx) {
        self.redeem_at = None;
        self.first_release_at = None;
        for i in 0..self.socks.len() {
            match self.socks[i].step {
                Step::Allocated => self.send_request(cx, i, Step::Releasing),
                _ => {
                    let s = &mut self.socks[i];
                    s.step = Step::Done;
                    s.retransmit_at = None;
                }
            }
        }
        if self.phase != Phase::Drain {
            let pause = between(cx.rng, self.spec.pause_s[0], self.spec.pause_s[1]);
            self.next_session = Some(cx.now + Duration::from_secs(pause.max(1)));
        }
    }

    fn send_request(&mut self, cx: &mut Cx, i: usize, step: Step) {
        self.tid_counter += 1;
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&self.tid_counter.to_le_bytes());
        tid[8..].copy_from_slice(&(self.id as u32).to_le_bytes());
        let tid = TransactionId(tid);
        let method = if step == Step::Releasing {
            Method::REFRESH
        } else {
            Method::ALLOCATE
        };
        let mut b = MessageBuilder::new(method, Class::Request, tid);
        if method == Method::ALLOCATE {
            b.add(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
            match (self.model, i, self.socks[i].redeem) {
                (_, _, Some(token)) => {
                    b.add(attr::RESERVATION_TOKEN, &token);
                }
                (Model::EvenPort, 0, None) => {
                    b.add(attr::EVEN_PORT, &[0x80]);
                }
                _ => {}
            }
        } else {
            b.add_u32(attr::LIFETIME, 0);
        }
        if step != Step::Challenge {
            if let Some((realm, nonce, key)) = &self.auth {
                b.add(attr::USERNAME, self.username.as_bytes());
                b.add(attr::REALM, realm.as_bytes());
                b.add(attr::NONCE, nonce.as_bytes());
                b.add_integrity_sha1(key.as_bytes());
            }
        }
        b.add_fingerprint();
        let s = &mut self.socks[i];
        s.step = step;
        s.tid = tid.0;
        s.request = b.finish();
        s.sends = 0;
        self.retransmit(cx, i);
    }

    fn retransmit(&mut self, cx: &mut Cx, i: usize) {
        let s = &mut self.socks[i];
        if s.sends >= MAX_SENDS {
            s.retransmit_at = None;
            s.step = Step::Done;
            cx.oracle.tally.timeouts += 1;
            self.race_done(cx);
            self.ready(cx);
            return;
        }
        s.sends += 1;
        s.retransmit_at = Some(cx.now + RTO * (1u32 << (s.sends - 1).min(6)));
        let (local, data) = (s.local, s.request.clone());
        cx.net
            .send_datagram(cx.now, cx.me, local, self.server, data);
    }

    /// A local port for a new 5-tuple: the next one, or with `land_on_loop` the next one
    /// the server's hash sends to that loop.
    fn pick_local(&mut self, cx: &mut Cx) -> SocketAddr {
        let hash = cx.shared.loop_hashes.get(self.server_index).copied();
        let mut local = SocketAddr::new(self.ip, self.take_port());
        if let (Some(want), Some(hash)) = (self.land_on_loop, hash) {
            for _ in 0..PORT_SEARCH {
                if hash.loop_of(local, self.server) == want % hash.count() {
                    break;
                }
                local = SocketAddr::new(self.ip, self.take_port());
            }
        }
        local
    }

    fn take_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= 60_000 { 30_000 } else { p + 1 };
        p
    }
}
