//! Answers to authenticated requests, kept for 40 s so that a retransmission gets the same
//! answer (RFC 8489 §6.3.1: "...the server SHOULD cache the response for 40 seconds";
//! RFC 8656 §7.2: a retransmitted Allocate must not get 437).
//!
//! Only authenticated requests are cached, so an attacker cannot fill the cache without
//! credentials; it is bounded all the same.

use crate::allocation::ClientKey;
use crate::stun::TransactionId;
use crate::time::Instant;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

/// How long an answer is kept (RFC 8489 §6.3.1: 40 s, Ti).
pub(crate) const RESPONSE_TTL: Duration = Duration::from_secs(40);

#[derive(Debug)]
pub(crate) struct ResponseCache {
    map: BTreeMap<(ClientKey, TransactionId), Vec<u8>>,
    order: VecDeque<(Instant, ClientKey, TransactionId)>,
    capacity: usize,
}

impl ResponseCache {
    pub fn new(capacity: usize) -> Self {
        ResponseCache {
            map: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: ClientKey, tid: TransactionId) -> Option<&[u8]> {
        self.map.get(&(key, tid)).map(Vec::as_slice)
    }

    pub fn insert(&mut self, key: ClientKey, tid: TransactionId, answer: Vec<u8>, now: Instant) {
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some((_, k, t)) => {
                    self.map.remove(&(k, t));
                }
                None => break,
            }
        }
        if self.map.insert((key, tid), answer).is_none() {
            self.order.push_back((now + RESPONSE_TTL, key, tid));
        }
    }

    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, k, t)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            self.map.remove(&(k, t));
        }
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|e| e.0)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConnId;

    #[test]
    fn keeps_answers_for_40s_and_stays_bounded() {
        let mut c = ResponseCache::new(2);
        let k = ClientKey::Stream(ConnId(1));
        let t0 = Instant::from_secs(1);
        c.insert(k, TransactionId([1; 12]), vec![1], t0);
        assert_eq!(c.get(k, TransactionId([1; 12])), Some(&[1u8][..]));
        c.insert(k, TransactionId([2; 12]), vec![2], t0);
        c.insert(k, TransactionId([3; 12]), vec![3], t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(k, TransactionId([1; 12])), None);
        c.expire(t0 + Duration::from_secs(39));
        assert_eq!(c.len(), 2);
        c.expire(t0 + RESPONSE_TTL);
        assert_eq!(c.len(), 0);
        assert_eq!(c.next_expiry(), None);
    }
}
