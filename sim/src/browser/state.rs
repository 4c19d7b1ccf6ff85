//! What the browser's parts share: its state (sessions, attempts), the board the API
//! writes on, and how an attempt is let go.

use crate::host::Cx;
use crate::link::chance;
use crate::net::{Side, StreamId};
use crate::scenario::{ClientGroup, Via};
use crate::tls::TLS_RECORD;
use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use turnpike_core::client::Client;
use turnpike_core::Instant;

/// Longest wait for Refresh 0 answers before the streams are closed anyway.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(45);
/// First byte of a packet a browser of a pair sends back to its partner.
pub(super) const ECHO: u8 = b'e';
/// Round trip of an ICE configuration fetch from the HTTP API.
pub(super) const API_DELAY: Duration = Duration::from_millis(30);
/// A server that failed a browser (no answer, or its relay lost) is avoided this long.
pub(super) const AVOID_FOR: Duration = Duration::from_secs(60);
/// Between two rounds of an ICE restart that found no relay.
pub(super) const ROUND_PAUSE: Duration = Duration::from_secs(1);
/// Addresses a probing browser tries to reach: all must be refused by the relay.
pub const DENIED_PROBES: [&str; 6] = [
    "127.0.0.1:9",
    "10.1.2.3:5000",
    "[::ffff:127.0.0.1]:80",
    "169.254.169.254:80",
    "0.0.0.0:1",
    "[::1]:22",
];

/// What browsers learn of each other out of band, as a web application's signalling
/// would tell them: the relayed address each one currently keeps.
#[derive(Debug, Default)]
pub struct Board {
    pub(super) relayed: BTreeMap<usize, SocketAddr>,
    /// ICE configurations asked of the HTTP API: browser, expiry (unix seconds), label.
    pub requests: Vec<(usize, u64, String)>,
    /// The API's answers, by browser.
    pub answers: BTreeMap<usize, crate::server::Issued>,
    /// The last credential issued to a well-behaved browser (what a thief could copy).
    pub last_issued: Option<(String, String)>,
}

impl Board {
    /// The relayed address browser `id` keeps now, if any.
    pub fn relayed(&self, id: usize) -> Option<SocketAddr> {
        self.relayed.get(&id).copied()
    }
}

/// One ICE server the browser may use.
#[derive(Clone, Debug)]
pub struct IceServer {
    /// Transport.
    pub via: Via,
    /// Where to send (the relay, or a proxy in front).
    pub addr: SocketAddr,
    /// Every address its name resolves to, in this browser's resolver's order (`addr`
    /// first); one for a plain name, the fleet for a DNS name of several servers.
    pub alts: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AState {
    /// Waiting for the TCP handshake.
    Connecting,
    /// Modelled TLS handshake; bytes gathered so far.
    Tls,
    /// TURN runs.
    Turn,
    /// A Refresh 0 is on its way.
    Releasing,
    /// Done with it (failed, released, or closed).
    Closed,
}

#[derive(Debug)]
pub(super) struct Attempt {
    pub(super) via: Via,
    pub(super) server: SocketAddr,
    pub(super) local: SocketAddr,
    pub(super) client: Client,
    pub(super) sid: Option<StreamId>,
    pub(super) state: AState,
    pub(super) tls_buf: Vec<u8>,
    pub(super) allocated: bool,
    pub(super) failed: bool,
    /// Lost the race (or the session ended): release as soon as allocated.
    pub(super) loser: bool,
    pub(super) deadline: Instant,
    /// Some answer came from a server.
    pub(super) answered: bool,
    /// Redirected: its Allocate is already queued in the client, for the new server.
    pub(super) redirected: bool,
    /// Servers it sent Allocates to, in order, as seen on the wire (the oracle's).
    pub(super) allocates_to: Vec<SocketAddr>,
}

#[derive(Debug)]
pub(super) struct Session {
    pub(super) record: usize,
    pub(super) attempts: Vec<Attempt>,
    pub(super) winner: Option<usize>,
    pub(super) end_at: Instant,
    pub(super) vanish: bool,
    pub(super) ending: Option<Instant>,
    pub(super) next_data: Option<Instant>,
    pub(super) seq: u64,
    /// Who it talks to: the group's peer, or the partner's relayed address once known.
    pub(super) peer: Option<SocketAddr>,
    /// The relay confirmed the permission for `peer`: data may flow.
    pub(super) permitted: bool,
    /// Refreshes due at the edge of the credential's validity (`probe_expiry`).
    pub(super) probes: Vec<Instant>,
    /// The credential, for an ICE restart.
    pub(super) username: String,
    pub(super) password: String,
    pub(super) udp_port: Option<u16>,
    /// The last data received through the kept allocation (ICE consent).
    pub(super) last_rx: Instant,
    /// The relay was lost at this instant; an ICE restart is under way.
    pub(super) reconnecting: Option<Instant>,
    /// A round of the ICE restart failed: the next one starts then.
    pub(super) next_round: Option<Instant>,
}

/// A browser.
#[derive(Debug)]
pub struct Browser {
    /// Index among browsers.
    pub id: usize,
    /// Its group.
    pub group: usize,
    pub(super) spec: ClientGroup,
    pub(super) ip: IpAddr,
    pub(super) ice: Vec<IceServer>,
    pub(super) peer: Option<SocketAddr>,
    /// The browser it talks to through the relay, for a browser pair.
    pub(super) partner: Option<usize>,
    /// Whose REST secret and wall clock issue the credentials.
    pub(super) issuer: usize,
    pub(super) next_port: u16,
    pub(super) next_start: Option<Instant>,
    /// An ICE configuration fetch is under way; its answer is there at this instant.
    pub(super) fetching: Option<Instant>,
    pub(super) session: Option<Session>,
    pub(super) sessions: u32,
    pub(super) done: bool,
    /// Servers that failed it lately, avoided until the instant given.
    pub(super) avoid: BTreeMap<SocketAddr, Instant>,
}

impl Browser {
    /// A browser at `ip` that starts its first session at `start`.
    pub fn new(
        id: usize,
        group: usize,
        spec: ClientGroup,
        ip: IpAddr,
        ice: Vec<IceServer>,
        peer: Option<SocketAddr>,
        start: Instant,
    ) -> Self {
        Browser {
            id,
            group,
            spec,
            ip,
            ice,
            peer,
            partner: None,
            issuer: 0,
            next_port: 40_000,
            next_start: Some(start),
            fetching: None,
            session: None,
            sessions: 0,
            done: false,
            avoid: BTreeMap::new(),
        }
    }

    /// Makes it one half of a browser pair with browser `partner`.
    pub fn pair_with(&mut self, partner: usize) {
        self.partner = Some(partner);
    }

    /// Its address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub(super) fn port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= 60_000 { 40_000 } else { p + 1 };
        p
    }

    pub(super) fn attempt_where(&self, f: impl Fn(&Attempt) -> bool) -> Option<usize> {
        self.session.as_ref()?.attempts.iter().position(f)
    }

    pub(super) fn attempt_mut(&mut self, k: usize) -> Option<&mut Attempt> {
        self.session.as_mut()?.attempts.get_mut(k)
    }
}

/// Lets go of an attempt that lost the race or whose session ends.
pub(super) fn release(cx: &mut Cx, a: &mut Attempt, mode: &str) {
    a.loser = true;
    if a.state == AState::Closed || a.state == AState::Releasing {
        return;
    }
    let refresh0 = match mode {
        "refresh0" => true,
        "close" => false,
        _ => chance(cx.rng, 0.5),
    };
    if a.allocated && (a.via == Via::Udp || refresh0) {
        a.client.refresh(cx.now, 0);
        a.state = AState::Releasing;
    } else if a.via != Via::Udp {
        close(cx, a);
    }
    // A UDP attempt still allocating stays, marked as a loser: should its allocation
    // arrive, it is released at once.
}

/// Marks an attempt failed and closes it.
pub(super) fn fail(cx: &mut Cx, a: &mut Attempt) {
    a.failed = true;
    close(cx, a);
}

/// Closes an attempt's stream, if any.
pub(super) fn close(cx: &mut Cx, a: &mut Attempt) {
    if let Some(sid) = a.sid.take() {
        cx.net.close(cx.now, sid, Side::Connector);
    }
    a.state = AState::Closed;
}

/// The ClientHello a browser's TLS attempts send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hello {
    /// One flight of so many padding records, then the closing record.
    Records(usize),
    /// Nothing at all.
    Stall,
}

impl Hello {
    /// From a group's `tls_hello`: `normal`, `stall`, or `oversize` (a ClientHello larger
    /// than the native listener's byte bound).
    pub(super) fn of(name: &str) -> Hello {
        match name {
            "stall" => Hello::Stall,
            "oversize" => Hello::Records(crate::tls::HANDSHAKE_MAX_BYTES / TLS_RECORD + 8),
            _ => Hello::Records(0),
        }
    }
}
