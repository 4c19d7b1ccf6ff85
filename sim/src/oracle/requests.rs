//! Every request answered, once: `one_response_per_request`, `every_request_answered`
//! and `loop_message_answered`. Requests are read from what is fed to the core (UDP
//! datagrams, stream bytes reframed here), answers from what it sends; permissions
//! granted by the answers are recorded for the relay checks.

use super::shadow::{
    alloc_kind, AllocKind, Check, Key, Shadow, Step, StepRequest, CROSS_LOOP_ANSWER, REPLAY_WINDOW,
};
use crate::net::StreamId;
use turnpike_core::framing::Frame;
use turnpike_core::proxy_protocol::{self, ProxyParse};
use turnpike_core::stun::{attr, Class, Message, Method};
use turnpike_core::Instant;

impl Shadow {
    pub(super) fn stun_input(&mut self, now: Instant, key: Key, lp: u16, data: &[u8]) {
        let Ok(msg) = Message::parse(data) else {
            self.garbage_in += 1;
            return;
        };
        match msg.class() {
            Class::Request => {
                let tid = msg.transaction_id();
                let peers = msg
                    .attributes()
                    .filter(|(t, _)| *t == attr::XOR_PEER_ADDRESS)
                    .filter_map(|(_, v)| attr::decode_xor_address(v, &tid).ok())
                    .collect();
                self.requests += 1;
                self.step_requests.push(StepRequest {
                    key,
                    lp,
                    tid: tid.0,
                    method: msg.method(),
                    peers,
                    answers: 0,
                    arrived: now,
                    kind: alloc_kind(&msg),
                    copies: 1,
                    username: msg
                        .get(attr::USERNAME)
                        .and_then(|u| core::str::from_utf8(u).ok())
                        .map(str::to_owned),
                });
            }
            Class::Indication if msg.method() == Method::SEND => {
                self.data_in += 1;
                if let Key::Stream(sid) = key {
                    if let Some(o) = self.streams.get_mut(&sid) {
                        o.step_data += 1;
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn stream_input(&mut self, now: Instant, sid: StreamId, data: &[u8]) {
        let Some(obs) = self.streams.get_mut(&sid) else {
            return;
        };
        let lp = obs.lp;
        let mut rest: Vec<u8> = data.to_vec();
        if let Some(h) = &mut obs.header {
            h.extend_from_slice(data);
            match proxy_protocol::parse(h, 512) {
                Ok(ProxyParse::Incomplete) if h.len() < 512 => return,
                Ok(ProxyParse::Done { consumed, .. }) => {
                    rest = h.split_off(consumed.min(h.len()));
                    obs.header = None;
                }
                _ => {
                    // The core closes it (BadProxyHeader): nothing more to watch.
                    obs.framer = None;
                    obs.header = None;
                    return;
                }
            }
        }
        let Some(mut framer) = obs.framer.take() else {
            return;
        };
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut channel_data = 0u64;
        let result = framer.push(&rest, |f| {
            match f {
                Frame::Stun(b) => frames.push(b.to_vec()),
                Frame::ChannelData(_) => channel_data += 1,
            }
            true
        });
        let failed = result.is_err();
        if let Some(obs) = self.streams.get_mut(&sid) {
            obs.step_data += channel_data;
            if !failed {
                obs.framer = Some(framer);
            }
        }
        self.data_in += channel_data;
        if failed {
            self.garbage_in += 1;
        }
        for f in frames {
            self.stun_input(now, Key::Stream(sid), lp, &f);
        }
    }

    pub(super) fn close_stream(&mut self, sid: StreamId) {
        self.step_closed.insert(sid);
        self.waiting.retain(|(_, r)| r.key != Key::Stream(sid));
        if let Some(o) = self.streams.remove(&sid) {
            self.step_slack += o.step_data;
        }
    }

    /// An answer to `key`, matched with its request; an Allocate's answer gives back
    /// when it arrived and what it asked, for the node-wide checks.
    pub(super) fn response(
        &mut self,
        now: Instant,
        key: Key,
        data: &[u8],
    ) -> Result<Option<(Instant, AllocKind)>, (&'static str, String)> {
        let Ok(msg) = Message::parse(data) else {
            return Err((
                "one_response_per_request",
                format!("unparsable answer to {key:?}"),
            ));
        };
        let class = msg.class();
        if class != Class::Success && class != Class::Error {
            return Ok(None);
        }
        let tid = msg.transaction_id().0;
        let here = |r: &StepRequest| r.key == key && r.tid == tid;
        // An unanswered copy of this step first, then any of this step, then one that
        // waited for another loop.
        let found = self
            .step_requests
            .iter()
            .position(|r| here(r) && r.answers == 0)
            .or_else(|| self.step_requests.iter().position(here));
        let req = match found {
            Some(i) => &mut self.step_requests[i],
            None => match self.waiting.iter_mut().find(|(_, r)| here(r)) {
                Some((_, r)) => {
                    if r.answers >= r.copies {
                        return Err((
                            "one_response_per_request",
                            format!(
                                "{} from {key:?} answered {} times",
                                r.method.name(),
                                r.answers + 1
                            ),
                        ));
                    }
                    r
                }
                None => {
                    return Err((
                        "one_response_per_request",
                        format!(
                            "{} answer to {key:?} for no request of this step",
                            msg.method().name()
                        ),
                    ))
                }
            },
        };
        req.answers += 1;
        let (method, peers, arrived, kind) = (req.method, req.peers.clone(), req.arrived, req.kind);
        if let Some(username) = req.username.clone() {
            let lp = req.lp;
            let live = self
                .by_key
                .get(&key)
                .and_then(|id| self.allocs.get(id))
                .map(|a| a.username.clone());
            let code = msg
                .get(attr::ERROR_CODE)
                .and_then(|v| attr::decode_error_code(v).ok())
                .map(|(c, _)| c);
            self.answered.push(crate::rotation::Answered {
                lp,
                method,
                username,
                class,
                code,
                live,
            });
        }
        if method == Method::ALLOCATE {
            // Judged node-wide by the caller (the entry point).
            return Ok(Some((arrived, kind)));
        }
        if class != Class::Success {
            return Ok(None);
        }
        let until = now + self.cfg.permission_lifetime;
        if method == Method::CREATE_PERMISSION || method == Method::CHANNEL_BIND {
            while self
                .granted
                .front()
                .is_some_and(|(at, ..)| now.since(*at) > REPLAY_WINDOW)
            {
                self.granted.pop_front();
            }
            if self.granted.iter().any(|g| g.1 == key && g.2 == tid) {
                return Ok(None);
            }
            let Some(a) = self.by_key.get(&key).and_then(|id| self.allocs.get_mut(id)) else {
                return Err((
                    "no_relay_without_permission",
                    format!("permission granted to {key:?} without allocation"),
                ));
            };
            for p in peers {
                let e = a.perms.entry(p.ip()).or_insert(until);
                *e = (*e).max(until);
            }
            self.granted.push_back((now, key, tid));
        }
        Ok(None)
    }

    pub(super) fn one_response_per_request(&mut self, step: &Step) -> Check {
        let stats = step.stats;
        let excused = (stats.rate_limited - self.prev_rate_limited.min(stats.rate_limited))
            + (stats.queue_full - self.prev_queue_full.min(stats.queue_full));
        let mut unanswered = 0u64;
        let mut deferred = Vec::new();
        for (i, r) in self.step_requests.iter().enumerate() {
            if r.answers > 1 {
                return Err((
                    "one_response_per_request",
                    format!(
                        "{} from {:?} answered {} times",
                        r.method.name(),
                        r.key,
                        r.answers
                    ),
                ));
            }
            if r.answers == 0 {
                let closed = matches!(r.key, Key::Stream(sid) if self.step_closed.contains(&sid));
                let copy_of_waiting = self
                    .waiting
                    .iter()
                    .any(|(_, w)| w.key == r.key && w.tid == r.tid);
                // Only an Allocate waits for another loop (user quota at home, a token
                // at its issuer, credits and ports borrowed), and only once
                // authenticated, so never one the per-source budget held back.
                let may_wait = r.method == Method::ALLOCATE
                    && (copy_of_waiting || self.step_sent.contains(&r.lp));
                if closed {
                } else if may_wait {
                    // Its answer waits for another loop (or it is a retransmission of one
                    // that does).
                    deferred.push(i);
                } else {
                    unanswered += 1;
                }
            }
        }
        self.unanswered += unanswered;
        if unanswered > excused {
            let r = self
                .step_requests
                .iter()
                .enumerate()
                .find(|(i, r)| r.answers == 0 && !deferred.contains(i));
            return Err((
                "every_request_answered",
                format!("{unanswered} requests unanswered, {excused} held back by the budget; first: {r:?}"),
            ));
        }
        for i in deferred.into_iter().rev() {
            let r = self.step_requests.swap_remove(i);
            match self
                .waiting
                .iter_mut()
                .find(|(_, w)| w.key == r.key && w.tid == r.tid)
            {
                Some((_, w)) => w.copies += 1,
                None => self.waiting.push((step.now + CROSS_LOOP_ANSWER, r)),
            }
        }
        Ok(())
    }

    pub(super) fn loop_message_answered(&mut self, step: &Step) -> Check {
        if let Some((_, r)) = self
            .waiting
            .iter()
            .find(|(deadline, r)| r.answers == 0 && step.now > *deadline)
        {
            return Err((
                "loop_message_answered",
                format!(
                    "{} from {:?} (loop {}) unanswered {:?} after it arrived",
                    r.method.name(),
                    r.key,
                    r.lp,
                    step.now.since(r.arrived)
                ),
            ));
        }
        // Answered ones are kept until their deadline, to catch a second answer.
        self.waiting
            .retain(|(deadline, r)| r.answers == 0 || step.now <= *deadline);
        Ok(())
    }
}
