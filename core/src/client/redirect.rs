//! Following 300 (Try Alternate) answers to Allocate (RFC 8489 §10; RFC 8656 §7.2).
//!
//! "If the client receives a 300 response with ALTERNATE-SERVER, it SHOULD consider the
//! current transaction as failed and reattempt the request with the server specified in
//! the attribute, using the same transport protocol used for the previous request. That
//! request, if authenticated, MUST utilize the same credentials that the client would have
//! used in the request to the server that performed the redirection. If the client has
//! been redirected to a server to which it has already sent this request within the last
//! five minutes, it MUST ignore the redirection and consider the transaction to have
//! failed. This prevents infinite ping-ponging between servers in case of redirection
//! loops." (RFC 8489 §10).
//!
//! The loop check lives here, in the client, as the RFC puts it: a relay cannot know
//! where a client was before (see the server's `redirect` module). The servers Allocates
//! were sent to are remembered for five minutes, across attempts ([`TRIED_FOR`], at most
//! [`TRIED_MAX`] of them), and one attempt follows at most [`MAX_REDIRECTS`] redirects.
//!
//! Only a 300 that carries a valid MESSAGE-INTEGRITY for the request's credentials is
//! followed (RFC 8489 §9.2.5 discards an answer to an authenticated request that fails the
//! check; a 300 to an unauthenticated request fails the Allocate): the client does not know
//! whether its stream is TLS, so it cannot lean on a server certificate, and a relay only
//! redirects an authenticated Allocate.

use super::{Client, ClientEvent, ClientState, Op, Retries, StreamFramer, MAX_FRAME};
use crate::ids::Transport;
use crate::stun::{attr, Message};
use crate::time::Instant;
use core::time::Duration;

/// Most redirects one Allocate attempt follows; the next 300 fails it. A fleet needs one
/// (a draining or full relay names one with room); a few more cover a second relay that
/// filled up meanwhile.
pub const MAX_REDIRECTS: usize = 4;

/// How long a server an Allocate was sent to may not be redirected to again: "within the
/// last five minutes" (RFC 8489 §10).
pub const TRIED_FOR: Duration = Duration::from_secs(300);

/// Most servers remembered as tried; the oldest is forgotten first. A few redirects every
/// five minutes is all a fleet gives, so this bounds memory, not the check.
pub const TRIED_MAX: usize = 16;

impl Client {
    /// The server the client talks to now: the configured one, or the alternate a 300
    /// answer named ([`ClientEvent::Redirected`]). The driver sends every transmit to it;
    /// on a stream transport, once it changes, over a new connection to it.
    pub fn server(&self) -> std::net::SocketAddr {
        self.config.server
    }

    /// Follows a 300 answer to an Allocate when the RFC allows it: queues the Allocate
    /// again for the alternate, with the same credentials. False when it may not (no or
    /// malformed ALTERNATE-SERVER, an alternate tried within five minutes, too many
    /// redirects, or an allocation already granted): the Allocate then fails with 300.
    pub(super) fn follow_redirect(&mut self, now: Instant, op: &Op, msg: &Message<'_>) -> bool {
        if !matches!(op, Op::Allocate) || self.state != ClientState::Allocating {
            return false;
        }
        let Some(to) = msg
            .get(attr::ALTERNATE_SERVER)
            .and_then(|v| attr::decode_address(v).ok())
        else {
            return false;
        };
        self.tried.retain(|&(_, when)| now.since(when) < TRIED_FOR);
        let from = self.config.server;
        self.note_tried(from, now);
        // RFC 8489 §10: the same family as the request's (the alternate is reached from
        // the same socket), never a server tried within five minutes, and a bound on the
        // hops.
        let loops = self.tried.iter().any(|&(a, _)| a == to);
        if loops || self.redirects >= MAX_REDIRECTS || to.is_ipv4() != from.is_ipv4() {
            return false;
        }
        let domain = msg
            .get(attr::ALTERNATE_DOMAIN)
            .and_then(|v| attr::decode_text(v, attr::ALTERNATE_DOMAIN, attr::MAX_TEXT_LEN).ok())
            .map(str::to_owned);
        self.note_tried(to, now);
        self.redirects += 1;
        self.config.server = to;
        if self.config.transport == Transport::Tcp {
            // A new connection: nothing of the old stream's framing carries over.
            self.framer = Some(StreamFramer::new(MAX_FRAME));
            self.stream_broken = false;
        }
        self.push_event(ClientEvent::Redirected { from, to, domain });
        self.start(now, Op::Allocate, Retries::default());
        true
    }

    /// Remembers that an Allocate went to `server` at `now`, forgetting the oldest when
    /// [`TRIED_MAX`] are remembered.
    fn note_tried(&mut self, server: std::net::SocketAddr, now: Instant) {
        if let Some(t) = self.tried.iter_mut().find(|(a, _)| *a == server) {
            t.1 = now;
            return;
        }
        if self.tried.len() >= TRIED_MAX {
            let oldest = self.tried.iter().enumerate().min_by_key(|(_, t)| t.1);
            if let Some(i) = oldest.map(|(i, _)| i) {
                self.tried.swap_remove(i);
            }
        }
        self.tried.push((server, now));
    }
}
