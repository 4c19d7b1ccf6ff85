//! A browser's sessions: attempts opened over UDP, TCP and TLS, the race they run, ICE
//! restarts when a relay is lost, what the core's client reports, and the end.

use super::state::{
    close, fail, release, AState, Attempt, Browser, IceServer, Session, AVOID_FOR, DENIED_PROBES,
    ECHO, RELEASE_WAIT, ROUND_PAUSE,
};
use crate::host::{Cx, Phase};
use crate::link::{between, chance};
use crate::net::Side;
use crate::scenario::Via;
use core::time::Duration;
use std::net::SocketAddr;
use turnpike_core::auth::rest_password;
use turnpike_core::client::{Client, ClientConfig, ClientEvent};
use turnpike_core::stun::{attr, Method};
use turnpike_core::{Instant, Transport};

impl Browser {
    pub(super) fn start_session(&mut self, cx: &mut Cx, issued: Option<crate::server::Issued>) {
        let now = cx.now;
        self.sessions += 1;
        let wall = cx.shared.walls[self.issuer];
        let expiry = wall.unix_s(now) + self.spec.credential_ttl_s;
        let (mut username, mut password, udp_port) = match issued {
            Some(i) => (i.username, i.password, i.udp_port),
            None => {
                let u = format!("{expiry}:b{}s{}", self.id, self.sessions);
                let (secret, generation) = if self.spec.stale_secret {
                    (&cx.shared.first_secrets[self.issuer], 0)
                } else {
                    (
                        &cx.shared.secrets[self.issuer],
                        cx.shared.generations[self.issuer],
                    )
                };
                let p = rest_password(secret.as_bytes(), &u);
                cx.oracle.rotation.issued(&u, generation);
                (u, p, None)
            }
        };
        if self.spec.borrow_credential {
            // Someone else's credential, on the port reserved for our own.
            if let Some((u, p)) = cx.board.last_issued.clone() {
                username = u;
                password = p;
            }
        } else if self.spec.issued_dynamic_udp && self.spec.config_age_s == 0 {
            cx.board.last_issued = Some((username.clone(), password.clone()));
        }
        let real = SocketAddr::new(self.ip, 0);
        let record = cx.oracle.session_start(
            self.id,
            self.group,
            &username,
            real,
            now,
            self.peer.is_some(),
        );
        let session_s = between(cx.rng, self.spec.session_s[0], self.spec.session_s[1]);
        let vanish = chance(cx.rng, self.spec.vanish) && cx.shared.phase == Phase::Safety;
        let attempts = self.open_attempts(cx, &username, &password, udp_port);
        cx.note(format!(
            "browser {} starts session {} ({username})",
            self.id, self.sessions
        ));
        self.session = Some(Session {
            record,
            attempts,
            winner: None,
            end_at: now + Duration::from_secs(session_s),
            vanish,
            ending: None,
            next_data: None,
            seq: 0,
            peer: self.peer,
            permitted: false,
            probes: Vec::new(),
            username,
            password,
            udp_port,
            last_rx: now,
            reconnecting: None,
            next_round: None,
        });
    }

    /// One attempt per ICE server, each to the first of its addresses not avoided.
    pub(super) fn open_attempts(
        &mut self,
        cx: &mut Cx,
        username: &str,
        password: &str,
        udp_port: Option<u16>,
    ) -> Vec<Attempt> {
        let now = cx.now;
        let deadline = now + Duration::from_secs(self.spec.connect_timeout_s);
        self.avoid.retain(|_, until| *until > now);
        let mut attempts = Vec::new();
        let fresh = |i: &IceServer| i.alts.iter().any(|a| !self.avoid.contains_key(a));
        // With nothing left to try, every server gets another chance.
        let skip_avoided = self.ice.iter().any(fresh);
        for ice in self.ice.clone() {
            let mut addr = ice
                .alts
                .iter()
                .copied()
                .find(|a| !self.avoid.contains_key(a))
                .unwrap_or(ice.addr);
            if skip_avoided && self.avoid.contains_key(&addr) {
                continue; // the others of the list will do
            }
            if let (Via::Udp, Some(port)) = (ice.via, udp_port) {
                addr.set_port(port);
            }
            let local = SocketAddr::new(self.ip, self.port());
            let transport = if ice.via == Via::Udp {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            let mut cc = ClientConfig::new(addr, transport, username, password);
            if self.spec.relay_ipv6 {
                cc.requested_family = Some(attr::FAMILY_IPV6);
            }
            let mut client = Client::new(cc, cx.seed(), now);
            let (sid, state) = match ice.via {
                Via::Udp => {
                    client.allocate(now);
                    (None, AState::Turn)
                }
                _ => (
                    Some(cx.net.connect(now, cx.me, local, addr)),
                    AState::Connecting,
                ),
            };
            attempts.push(Attempt {
                via: ice.via,
                server: addr,
                local,
                client,
                sid,
                state,
                tls_buf: Vec::new(),
                allocated: false,
                failed: false,
                loser: false,
                deadline,
                answered: false,
                redirected: false,
                allocates_to: Vec::new(),
            });
        }
        attempts
    }

    /// The call's relay is gone (its data stopped, its allocation or stream ended): with
    /// ICE restarts, a fresh allocation through another server; else the call goes on
    /// without a relay.
    pub(super) fn relay_lost(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else { return };
        let Some(k) = s.winner else { return };
        cx.oracle.session_lost(s.record, now);
        cx.board.relayed.remove(&self.id);
        let Some(_) = self.spec.ice_restart_s else {
            return;
        };
        if s.ending.is_some() {
            return;
        }
        cx.oracle.session_relay_lost(s.record, now);
        if let Some(a) = s.attempts.get_mut(k) {
            self.avoid.insert(a.server, now + AVOID_FOR);
            cx.note(format!(
                "browser {} lost its relay at {}: ICE restart",
                self.id, a.server
            ));
            close(cx, a);
        }
        s.winner = None;
        s.permitted = false;
        s.next_data = None;
        s.reconnecting = Some(now);
        s.peer = self.peer;
        self.restart_ice(cx);
    }

    /// New attempts for the session (an ICE restart, or another round of one).
    pub(super) fn restart_ice(&mut self, cx: &mut Cx) {
        let Some(s) = &self.session else { return };
        let (u, p, port) = (s.username.clone(), s.password.clone(), s.udp_port);
        let fresh = self.open_attempts(cx, &u, &p, port);
        if let Some(s) = &mut self.session {
            s.attempts.extend(fresh);
        }
    }

    /// ICE consent: a kept relay through which nothing came back for `ice_restart_s`
    /// is lost.
    pub(super) fn consent(&mut self, cx: &mut Cx) {
        let Some(n) = self.spec.ice_restart_s else {
            return;
        };
        let Some(s) = &self.session else { return };
        if s.winner.is_none() || s.ending.is_some() {
            return;
        }
        if cx.now.since(s.last_rx) >= Duration::from_secs(n) {
            self.relay_lost(cx);
        }
    }

    /// Attempts that got nowhere in time fail; a session with nothing left retries.
    pub(super) fn deadlines(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else { return };
        for a in &mut s.attempts {
            if !a.allocated && a.state != AState::Closed && now >= a.deadline {
                if !a.answered && self.spec.ice_restart_s.is_some() {
                    self.avoid.insert(a.server, now + AVOID_FOR);
                }
                fail(cx, a);
            }
            if a.failed && a.state != AState::Closed {
                close(cx, a);
            }
        }
        if s.winner.is_none()
            && s.ending.is_none()
            && s.attempts.iter().all(|a| a.state == AState::Closed)
        {
            if s.reconnecting.is_some() && now < s.end_at {
                // The call goes on: another round of the ICE restart, a second on.
                match s.next_round {
                    Some(t) if t <= now => {
                        s.next_round = None;
                        self.restart_ice(cx);
                    }
                    Some(_) => {}
                    None => s.next_round = Some(now + ROUND_PAUSE),
                }
                return;
            }
            if self.spec.well_behaved {
                cx.oracle.fleet_session_failed(s.record);
            }
            cx.oracle.session_failed(s.record, now);
            self.session = None;
            if !self.done {
                let wait = between(cx.rng, self.spec.retry_s[0], self.spec.retry_s[1]);
                self.next_start = Some(now + Duration::from_secs(wait));
            }
        }
    }

    pub(super) fn on_client_event(&mut self, cx: &mut Cx, k: usize, ev: ClientEvent) {
        let now = cx.now;
        let Some(s) = &mut self.session else {
            return;
        };
        let record = s.record;
        match ev {
            ClientEvent::Allocated {
                relayed, mapped, ..
            } => {
                cx.oracle.session_answer(record, now);
                let ending = s.ending.is_some() || now >= s.end_at;
                let Some(a) = s.attempts.get_mut(k) else {
                    return;
                };
                a.allocated = true;
                let via = a.via;
                if s.winner.is_none() && !ending && !a.loser {
                    s.winner = Some(k);
                    s.last_rx = now;
                    cx.note(format!(
                        "browser {} kept {} allocation {:?}",
                        self.id,
                        via.as_str(),
                        relayed
                    ));
                    if let Some(r) = relayed.first() {
                        cx.board.relayed.insert(self.id, *r);
                    }
                    if s.reconnecting.take().is_some() {
                        cx.oracle
                            .session_reconnected(record, now, relayed.first().copied());
                    } else {
                        cx.oracle
                            .session_connected(record, now, via, mapped, relayed);
                    }
                    if self.spec.probe_expiry {
                        s.probes = expiry_probes(cx, self.issuer, record);
                    }
                    if self.partner.is_some() && self.spec.data_interval_ms > 0 {
                        // Polls the signalling for the partner's address.
                        s.next_data = Some(now);
                    }
                    for j in 0..s.attempts.len() {
                        if j != k {
                            release(cx, &mut s.attempts[j], &self.spec.release);
                        }
                    }
                    if let (Some(peer), Some(a)) = (s.peer, s.attempts.get_mut(k)) {
                        a.client.create_permission(now, &[peer.ip()]);
                        if self.spec.probe_denied {
                            for p in DENIED_PROBES {
                                if let Ok(addr) = p.parse::<SocketAddr>() {
                                    a.client.create_permission(now, &[addr.ip()]);
                                    a.client.send_indication(now, addr, b"probe");
                                }
                            }
                        }
                    }
                } else {
                    release(cx, a, &self.spec.release);
                }
            }
            ClientEvent::AllocateFailed { code, .. } => {
                if code == 300 {
                    cx.oracle.fleet.redirects_refused += 1;
                }
                cx.oracle.session_answer(record, now);
                cx.oracle.session_code(record, code);
                if let Some(a) = s.attempts.get_mut(k) {
                    fail(cx, a);
                }
            }
            ClientEvent::TimedOut { method } => {
                if let Some(a) = s.attempts.get_mut(k) {
                    if method == Method::ALLOCATE {
                        fail(cx, a);
                    } else if a.state == AState::Releasing {
                        close(cx, a);
                    }
                }
            }
            ClientEvent::PermissionCreated { peers } => {
                if let (Some(peer), Some(a)) = (s.peer, s.attempts.get_mut(k)) {
                    if peers.contains(&peer.ip()) && Some(k) == s.winner {
                        s.permitted = true;
                    }
                    if peers.contains(&peer.ip())
                        && Some(k) == s.winner
                        && a.client.channel_for(peer).is_none()
                    {
                        let _ = a.client.channel_bind(now, peer);
                        if self.spec.data_interval_ms > 0
                            && s.next_data.is_none()
                            && s.ending.is_none()
                        {
                            s.next_data = Some(now);
                        }
                    }
                }
            }
            ClientEvent::PermissionFailed { code, .. } => cx.oracle.session_code(record, code),
            ClientEvent::Data { peer, data } => {
                if Some(k) == s.winner {
                    s.last_rx = now;
                }
                if self.partner.is_none() || data.first() == Some(&ECHO) {
                    cx.oracle.session_echo(record);
                } else if let Some(a) = s.attempts.get_mut(k) {
                    // The partner's packet goes back the way it came: relay to relay.
                    let mut back = data;
                    back.insert(0, ECHO);
                    if a.state == AState::Turn {
                        a.client.send(now, peer, &back);
                    }
                }
            }
            ClientEvent::Redirected { from, to, .. } => {
                if let Some(a) = s.attempts.get_mut(k) {
                    cx.oracle.redirect();
                    cx.note(format!(
                        "browser {} redirected from {from} to {to}",
                        self.id
                    ));
                    a.server = to;
                    a.redirected = true;
                    if a.via != Via::Udp {
                        // A new connection to the alternate; the Allocate waits in the
                        // client until it is up (and, for TLS, its handshake done).
                        if let Some(old) = a.sid.take() {
                            cx.net.close(now, old, Side::Connector);
                        }
                        a.sid = Some(cx.net.connect(now, cx.me, a.local, to));
                        a.state = AState::Connecting;
                        a.tls_buf.clear();
                    }
                }
            }
            ClientEvent::Deleted => {
                if let Some(a) = s.attempts.get_mut(k) {
                    close(cx, a);
                }
            }
            ClientEvent::RefreshFailed { code } => {
                cx.oracle.session_code(record, code);
                if let Some(a) = s.attempts.get_mut(k) {
                    if a.state == AState::Releasing || code == 437 {
                        close(cx, a);
                    }
                }
                if code == 437 && s.winner == Some(k) {
                    self.relay_lost(cx);
                }
            }
            ClientEvent::Expired | ClientEvent::StreamError => {
                if let Some(a) = s.attempts.get_mut(k) {
                    close(cx, a);
                }
                if s.winner == Some(k) {
                    self.relay_lost(cx);
                }
            }
            _ => {}
        }
    }

    /// Ends the session: vanish, or release everything and wait for the answers.
    pub(super) fn session_end(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else { return };
        if now < s.end_at {
            return;
        }
        if s.ending.is_none() {
            cx.board.relayed.remove(&self.id);
            cx.oracle.session_ended(s.record, now);
            s.ending = Some(now + RELEASE_WAIT);
            s.next_data = None;
            if s.vanish {
                cx.note(format!("browser {} vanishes", self.id));
                cx.oracle.session_vanished(s.record);
                for a in &mut s.attempts {
                    a.state = AState::Closed;
                }
            } else {
                for a in &mut s.attempts {
                    release(cx, a, &self.spec.release);
                }
            }
        }
        let all_closed = s.attempts.iter().all(|a| a.state == AState::Closed);
        if all_closed || s.ending.is_some_and(|t| now >= t) {
            if !s.vanish {
                for a in &mut s.attempts {
                    close(cx, a);
                }
            }
            cx.oracle.session_ended(s.record, now);
            self.session = None;
            let last = self.spec.sessions.is_some_and(|n| self.sessions >= n);
            if !self.done && !last {
                let pause = between(cx.rng, self.spec.pause_s[0], self.spec.pause_s[1]);
                self.next_start = Some(now + Duration::from_secs(pause));
            }
        }
    }
}

/// When a probing browser refreshes its kept allocation: half a second into the last
/// wall-clock second its REST credential is valid, and half a second into the first after
/// (the reload oracle's boundary, [`crate::rotation`]).
fn expiry_probes(cx: &mut Cx, issuer: usize, record: usize) -> Vec<Instant> {
    let Some(expiry) = cx
        .oracle
        .sessions
        .get(record)
        .and_then(|s| turnpike_core::auth::rest_expiry(&s.username))
    else {
        return Vec::new();
    };
    let wall_ms = cx.shared.walls[issuer].unix_ms(cx.now);
    [500u64, 1500]
        .iter()
        .map(|off| expiry * 1000 + off)
        .filter(|&t| t > wall_ms)
        .map(|t| cx.now + Duration::from_millis(t - wall_ms))
        .collect()
}
