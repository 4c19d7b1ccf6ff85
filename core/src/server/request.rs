//! Receiving STUN messages from clients (RFC 8489 §6.3) and dispatching requests to the
//! TURN methods (RFC 8656 §7–§12).

use super::reply::{self, Signer};
use super::{Server, Source};
use crate::allocation::ClientKey;
use crate::ids::RelayId;
use crate::ratelimit::HeldBack;
use crate::stun::{attr, Class, Message, MessageBuilder, Method};
use crate::time::Instant;
use core::ops::Range;
use std::net::SocketAddr;

impl Server {
    /// A STUN message from a client, over any transport. Returns where to relay the data
    /// of a Send indication; answers to requests are queued.
    pub(super) fn handle_stun(
        &mut self,
        now: Instant,
        src: &Source,
        data: &[u8],
    ) -> Option<(RelayId, SocketAddr, Range<usize>)> {
        let Ok(msg) = Message::parse(data) else {
            // RFC 8489 §6.3: a message that is not well-formed is discarded.
            self.stats.dropped.malformed += 1;
            return None;
        };
        match msg.class() {
            Class::Request => {
                self.handle_request(now, src, &msg, data.len());
                None
            }
            Class::Indication if msg.method() == Method::SEND => {
                // RFC 8489 §6.3.2: an indication with unknown comprehension-required
                // attributes is discarded.
                if !msg.unknown_required(is_known_attribute).is_empty() {
                    self.stats.dropped.malformed += 1;
                    return None;
                }
                self.send_indication(now, src, &msg, data)
            }
            // Responses, and indications other than Send, have no business here.
            _ => {
                self.stats.dropped.unexpected += 1;
                None
            }
        }
    }

    fn handle_request(&mut self, now: Instant, src: &Source, msg: &Message<'_>, len: usize) {
        let tid = msg.transaction_id();
        if let ClientKey::Udp(..) = src.key {
            // Every request pays for answers to its source (anti-amplification): a real
            // client's precedes each of its answers, a retransmission included.
            self.budget.received(src.info.addr.ip(), len);
            self.stats.unauth.udp_requests += 1;
            self.stats.unauth.udp_request_bytes += len as u64;
        }
        // RFC 8489 §6.3.1 / RFC 8656 §7.2: a retransmission gets the answer it already had.
        if let Some(answer) = self.cache.get(src.key, tid) {
            let answer = answer.to_vec();
            self.stats.retransmissions += 1;
            self.send_to(src, answer);
            return;
        }
        self.stream_activity(now, src);
        let fingerprint = msg.has_fingerprint();
        // RFC 8489 §6.3.1: unknown comprehension-required attributes → 420. DONT-FRAGMENT
        // is deliberately not known (RFC 8656 §7.2: "...treat as unknown" when unsupported).
        let unknown = msg.unknown_required(is_known_attribute);
        if !unknown.is_empty() {
            let mut b = reply::error(msg, 420);
            b.add_unknown_attributes(unknown.as_slice());
            self.answer_unauthenticated(now, src, b, fingerprint);
            return;
        }
        let method = msg.method();
        if method == Method::BINDING {
            // RFC 8489 §7.3.1 / RFC 8656 §5: Binding needs no credentials.
            let mut b = MessageBuilder::response_to(msg, Class::Success);
            b.add_xor_address(attr::XOR_MAPPED_ADDRESS, src.info.addr);
            self.answer_unauthenticated(now, src, b, fingerprint);
            return;
        }
        let turn_method = [
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
        ];
        if !turn_method.contains(&method) {
            // RFC 8489 §6.3.1: an unknown method in a request → 400.
            self.answer_unauthenticated(now, src, reply::error(msg, 400), fingerprint);
            return;
        }
        let existing = self.by_client.get(&src.key).copied();
        let Some(auth) = self.authenticate(now, src, msg, existing) else {
            self.stream_auth_failed(now, src);
            return;
        };
        self.stream_auth_passed(src);
        let answer = match method {
            Method::ALLOCATE => self.allocate(now, src, msg, &auth, existing),
            Method::REFRESH => Some(self.refresh(now, msg, existing)),
            Method::CREATE_PERMISSION => Some(self.create_permission(now, msg, existing)),
            _ => Some(self.channel_bind(now, msg, existing)),
        };
        let Some(b) = answer else {
            return;
        };
        // RFC 8489 §6.3.1: only the answers to requests that are not idempotent need
        // keeping for retransmissions. CreatePermission and ChannelBind are: done again,
        // they install the same permission or binding and earn the same answer, byte for
        // byte.
        if matches!(method, Method::CREATE_PERMISSION | Method::CHANNEL_BIND) {
            let bytes = reply::finish(
                b,
                self.cfg.software.as_deref(),
                Some(&auth.signer),
                fingerprint,
            );
            self.send_to(src, bytes);
            return;
        }
        self.answer_authenticated(now, src, tid, b, &auth.signer, fingerprint);
    }

    /// Sends an answer signed with the request's key, and caches it for retransmissions
    /// (RFC 8489 §6.3.1; RFC 8656 §7.2: a retransmitted Allocate must not get 437).
    pub(super) fn answer_authenticated(
        &mut self,
        now: Instant,
        src: &Source,
        tid: crate::stun::TransactionId,
        b: MessageBuilder,
        signer: &Signer,
        fingerprint: bool,
    ) {
        let bytes = reply::finish(b, self.cfg.software.as_deref(), Some(signer), fingerprint);
        self.cache.insert(src.key, tid, bytes.clone(), now);
        self.send_to(src, bytes);
    }

    /// Sends an answer to a request that is not (yet) authenticated. To a UDP source it
    /// goes within the anti-amplification budget (RFC 8656 §21.2: such answers are an
    /// amplifier for spoofed requests; RFC 9000 §8: at most three times what the address
    /// sent); a stream always gets it, its handshake having proved the address. False
    /// when it was held back (counted).
    pub(super) fn answer_unauthenticated(
        &mut self,
        now: Instant,
        src: &Source,
        b: MessageBuilder,
        fingerprint: bool,
    ) -> bool {
        let bytes = reply::finish(b, self.cfg.software.as_deref(), None, fingerprint);
        let len = bytes.len() as u64;
        let counters = &mut self.stats.unauth;
        if let ClientKey::Stream(_) = src.key {
            counters.stream_answers += 1;
            counters.stream_answer_bytes += len;
            self.send_to(src, bytes);
            return true;
        }
        if let Err(why) = self.budget.spend(src.info.addr.ip(), bytes.len(), now) {
            match why {
                HeldBack::Factor => counters.held_back_factor += 1,
                HeldBack::SourceCeiling => counters.held_back_source_ceiling += 1,
                HeldBack::NodeCeiling => counters.held_back_node_ceiling += 1,
            }
            counters.held_back_bytes += len;
            self.stats.dropped.rate_limited += 1;
            return false;
        }
        counters.udp_answers += 1;
        counters.udp_answer_bytes += len;
        self.send_to(src, bytes);
        true
    }
}

/// The comprehension-required attributes the server understands.
pub(super) fn is_known_attribute(ty: u16) -> bool {
    matches!(
        ty,
        attr::MAPPED_ADDRESS
            | attr::USERNAME
            | attr::MESSAGE_INTEGRITY
            | attr::ERROR_CODE
            | attr::UNKNOWN_ATTRIBUTES
            | attr::CHANNEL_NUMBER
            | attr::LIFETIME
            | attr::XOR_PEER_ADDRESS
            | attr::DATA
            | attr::REALM
            | attr::NONCE
            | attr::XOR_RELAYED_ADDRESS
            | attr::REQUESTED_ADDRESS_FAMILY
            | attr::EVEN_PORT
            | attr::REQUESTED_TRANSPORT
            | attr::MESSAGE_INTEGRITY_SHA256
            | attr::PASSWORD_ALGORITHM
            | attr::USERHASH
            | attr::XOR_MAPPED_ADDRESS
            | attr::RESERVATION_TOKEN
            | attr::PRIORITY
            | attr::USE_CANDIDATE
    )
}
