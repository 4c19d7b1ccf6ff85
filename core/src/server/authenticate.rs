//! The long-term credential mechanism on the server side (RFC 8489 §9.2.4), with password
//! algorithm negotiation and USERHASH (RFC 8489 §9.2.4 steps for the security features).

use super::reply::{self, Signer};
use super::{Server, Source};
use crate::auth::{
    long_term_key, rest_expiry, CredentialKind, Key, LookupError, NonceCheck, PasswordAlgorithm,
};
use crate::event::{AuthFailure, Event};
use crate::ids::AllocationId;
use crate::stun::{attr, IntegrityKey, Message};
use crate::time::Instant;

/// What PASSWORD-ALGORITHMS says in our 401 and 438 answers: SHA-256 first (preferred),
/// then MD5, no parameters (RFC 8489 §14.11). A request must echo it byte for byte.
pub(super) const OFFERED_ALGORITHMS: [u16; 2] = [
    attr::PASSWORD_ALGORITHM_SHA256,
    attr::PASSWORD_ALGORITHM_MD5,
];

/// A request that passed authentication.
#[derive(Clone, Debug)]
pub(super) struct Authed {
    pub username: String,
    pub signer: Signer,
    pub algorithm: PasswordAlgorithm,
}

impl Server {
    /// Authenticates a TURN request. On failure the answer (401, 400, 438 or 441) is sent
    /// and None returned. The nonce of a request that passes is remembered (as is each
    /// nonce issued), so the client's next requests with it skip the nonce's MAC (not its
    /// expiry).
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        src: &Source,
        msg: &Message<'_>,
        existing: Option<AllocationId>,
    ) -> Option<Authed> {
        let authed = self.check_credentials(now, src, msg, existing)?;
        if let Some(nonce) = msg.get(attr::NONCE) {
            self.verified_nonces.remember(src.info.addr, nonce);
        }
        Some(authed)
    }

    fn check_credentials(
        &mut self,
        now: Instant,
        src: &Source,
        msg: &Message<'_>,
        existing: Option<AllocationId>,
    ) -> Option<Authed> {
        // Step 1: no integrity → challenge with realm and nonce.
        let Some(kind) = msg.integrity() else {
            self.challenge(now, src, msg, 401, None);
            return None;
        };
        // Step 2: integrity without the attributes it needs → 400.
        let (Some(realm_v), Some(nonce)) = (msg.get(attr::REALM), msg.get(attr::NONCE)) else {
            return self.bad_request(now, src, msg);
        };
        let username_v = msg.get(attr::USERNAME);
        let userhash_v = msg.get(attr::USERHASH);
        if username_v.is_none() && userhash_v.is_none() {
            return self.bad_request(now, src, msg);
        }
        // Step 3: the nonce.
        let features = match self.nonce.check_remembered(
            &self.verified_nonces,
            nonce,
            src.info.addr,
            now,
            self.cfg.nonce_lifetime,
        ) {
            NonceCheck::Valid { security_features } => security_features,
            NonceCheck::Stale | NonceCheck::Invalid => {
                self.challenge(now, src, msg, 438, Some(AuthFailure::BadNonce));
                return None;
            }
        };
        let Some(algorithm) = self.negotiate_algorithm(msg, features) else {
            return self.bad_request(now, src, msg);
        };
        let Ok(realm) = attr::decode_text(realm_v, attr::REALM, attr::MAX_TEXT_LEN) else {
            return self.bad_request(now, src, msg);
        };
        if realm != self.cfg.credentials.realm() {
            self.challenge(now, src, msg, 401, Some(AuthFailure::WrongRealm));
            return None;
        }
        // Step 4: who.
        let username = match (username_v, userhash_v) {
            (Some(u), _) => match attr::decode_text(u, attr::USERNAME, attr::MAX_USERNAME_LEN) {
                Ok(u) => u.to_string(),
                Err(_) => return self.bad_request(now, src, msg),
            },
            (None, Some(h)) => {
                if !features {
                    return self.bad_request(now, src, msg);
                }
                match self.cfg.credentials.resolve_userhash(h) {
                    Some(u) => u.to_string(),
                    None => {
                        self.challenge(now, src, msg, 401, Some(AuthFailure::UnknownUser));
                        return None;
                    }
                }
            }
            (None, None) => return self.bad_request(now, src, msg),
        };
        // An allocation keeps the key it was created with: REST and one-time credentials
        // that expire later still refresh it (the allocation's life is the Refresh's
        // business, RFC 8656 §8), and no store lookup is needed on its requests, unless a
        // reload took its credential away (`server::reload`).
        let wall = self.wall_unix_s(now);
        let key_valid = |a: &crate::allocation::Allocation| match a.key_valid_until_unix_s {
            None => true,
            Some(until) => wall.is_some_and(|w| w <= until),
        };
        if let Some(a) = existing.and_then(|id| self.allocations.get(&id)) {
            if a.username == username && a.algorithm == algorithm && key_valid(a) {
                let key = a.key;
                let mac = if a.integrity.kind() == kind {
                    a.integrity.clone()
                } else {
                    IntegrityKey::new(kind, key.as_bytes())
                };
                if msg.check_integrity_with(&mac) {
                    return Some(Authed {
                        username,
                        signer: Signer { key, mac },
                        algorithm,
                    });
                }
                self.challenge(now, src, msg, 401, Some(AuthFailure::BadIntegrity));
                return None;
            }
        }
        // Step 5: the credential store.
        let mut found: Option<(Key, IntegrityKey, CredentialKind)> = None;
        let result = self.cfg.credentials.passwords(
            &username,
            src.info.listener,
            // An unknown wall clock makes every expiring credential expired.
            wall.unwrap_or(u64::MAX),
            |ck, password| {
                let key = long_term_key(algorithm, &username, realm, password);
                let mac = IntegrityKey::new(kind, key.as_bytes());
                let ok = msg.check_integrity_with(&mac);
                if ok {
                    found = Some((key, mac, ck));
                }
                ok
            },
        );
        let failure = match result {
            Err(LookupError::UnknownUser) => Some(AuthFailure::UnknownUser),
            Err(LookupError::Expired) => Some(AuthFailure::Expired),
            Err(LookupError::WrongListener) => Some(AuthFailure::WrongListener),
            Ok(false) => Some(AuthFailure::BadIntegrity),
            Ok(true) => None,
        };
        let (key, mac, ck) = match (failure, found) {
            (None, Some(f)) => f,
            (f, _) => {
                self.challenge(
                    now,
                    src,
                    msg,
                    401,
                    Some(f.unwrap_or(AuthFailure::BadIntegrity)),
                );
                return None;
            }
        };
        // A REST username valid for years is a leaked key waiting to happen.
        if ck == CredentialKind::Rest {
            let limit = wall
                .unwrap_or(0)
                .saturating_add(self.cfg.rest_max_validity.as_secs());
            if rest_expiry(&username).is_some_and(|e| e > limit) {
                self.challenge(now, src, msg, 401, Some(AuthFailure::Expired));
                return None;
            }
        }
        let signer = Signer { key, mac };
        // RFC 8656 §5: a request on an allocation must come from its creator (441).
        if let Some(a) = existing.and_then(|id| self.allocations.get(&id)) {
            if a.username != username {
                let client = src.info;
                let b = reply::error(msg, 441);
                let bytes = reply::finish(
                    b,
                    self.cfg.software.as_deref(),
                    Some(&signer),
                    msg.has_fingerprint(),
                );
                self.send_to(src, bytes);
                self.stats.auth_failures += 1;
                self.emit(Event::AuthFailed {
                    client,
                    username: Some(username),
                    reason: AuthFailure::WrongCredentials,
                });
                return None;
            }
        }
        Some(Authed {
            username,
            signer,
            algorithm,
        })
    }

    /// RFC 8489 §9.2.4: PASSWORD-ALGORITHMS must echo what we offered and PASSWORD-ALGORITHM
    /// pick from it; with neither, MD5. None → 400.
    fn negotiate_algorithm(&self, msg: &Message<'_>, features: bool) -> Option<PasswordAlgorithm> {
        match (
            msg.get(attr::PASSWORD_ALGORITHMS),
            msg.get(attr::PASSWORD_ALGORITHM),
        ) {
            (None, None) => Some(PasswordAlgorithm::Md5),
            (Some(list), Some(chosen)) if features && self.cfg.security_features => {
                let mut echoed = [0u16; 2];
                let mut n = 0usize;
                let mut extra = false;
                attr::decode_password_algorithms(list, |alg, params| match echoed.get_mut(n) {
                    Some(slot) if params.is_empty() => {
                        *slot = alg;
                        n += 1;
                    }
                    _ => extra = true,
                })
                .ok()?;
                if extra || n != OFFERED_ALGORITHMS.len() || echoed != OFFERED_ALGORITHMS {
                    return None;
                }
                let (alg, _) = attr::decode_password_algorithm(chosen).ok()?;
                if !OFFERED_ALGORITHMS.contains(&alg) {
                    return None;
                }
                PasswordAlgorithm::from_wire(alg)
            }
            _ => None,
        }
    }

    /// Answers 401 or 438 with REALM, a fresh NONCE and, with the security features,
    /// PASSWORD-ALGORITHMS (RFC 8489 §9.2.4).
    pub(super) fn challenge(
        &mut self,
        now: Instant,
        src: &Source,
        msg: &Message<'_>,
        code: u16,
        failure: Option<AuthFailure>,
    ) {
        let features = self.cfg.security_features;
        let nonce = self.nonce.make(src.info.addr, now, features);
        // Made here for this address: its MAC is good, and the request that brings it
        // back need not check it again.
        self.verified_nonces
            .remember(src.info.addr, nonce.as_bytes());
        let mut b = reply::error(msg, code);
        b.add(attr::REALM, self.cfg.credentials.realm().as_bytes());
        b.add(attr::NONCE, nonce.as_bytes());
        if features {
            b.add_password_algorithms(&OFFERED_ALGORITHMS);
        }
        if !self.answer_unauthenticated(now, src, b, msg.has_fingerprint()) {
            return;
        }
        match code {
            401 => self.stats.unauthorized += 1,
            _ => self.stats.stale_nonce += 1,
        }
        if let Some(reason) = failure {
            self.stats.auth_failures += 1;
            let username = msg
                .get(attr::USERNAME)
                .and_then(|u| attr::decode_text(u, attr::USERNAME, attr::MAX_USERNAME_LEN).ok())
                .map(str::to_string);
            self.emit(Event::AuthFailed {
                client: src.info,
                username,
                reason,
            });
        }
    }

    fn bad_request(&mut self, now: Instant, src: &Source, msg: &Message<'_>) -> Option<Authed> {
        self.answer_unauthenticated(now, src, reply::error(msg, 400), msg.has_fingerprint());
        None
    }
}
