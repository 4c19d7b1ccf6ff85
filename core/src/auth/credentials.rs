//! The credential store: static users, REST secrets, one-time credentials.

use super::keys::userhash;
use super::rest::{rest_expiry, rest_password};
use crate::ids::ListenerId;
use std::collections::BTreeMap;

/// Where a password came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CredentialKind {
    /// A static user from the configuration.
    Static,
    /// A TURN REST username signed with a shared secret.
    Rest,
    /// A one-time credential issued by the runtime.
    OneTime,
}

/// Why no password is known for a username.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LookupError {
    /// No such user, and not a REST username (or no REST secret configured).
    UnknownUser,
    /// A REST or one-time username whose expiry has passed.
    Expired,
    /// A one-time credential issued for another listener (a dynamic port).
    WrongListener,
}

/// A one-time credential issued by the runtime (issue of ICE configurations).
#[derive(Clone, Debug)]
pub struct OneTimeCredential {
    /// The password.
    pub password: String,
    /// Wall-clock expiry, unix seconds: no new allocation after it.
    pub expires_unix_s: u64,
    /// If set, only valid on this listener (a dynamic UDP port issued with it).
    pub listener: Option<ListenerId>,
}

/// All the credentials a server accepts.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    realm: String,
    users: BTreeMap<String, String>,
    userhashes: BTreeMap<[u8; 32], String>,
    rest_secrets: Vec<Vec<u8>>,
    one_time: BTreeMap<String, OneTimeCredential>,
    /// Listeners reserved for one username (dynamic UDP ports of issued configurations).
    reserved: BTreeMap<ListenerId, String>,
}

impl Credentials {
    /// An empty store for `realm`.
    pub fn new(realm: &str) -> Self {
        Credentials {
            realm: realm.to_owned(),
            ..Credentials::default()
        }
    }
    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }
    /// Adds a static user.
    pub fn add_user(&mut self, username: &str, password: &str) {
        // Precomputed so a USERHASH request costs one lookup, not a hash per user.
        self.userhashes
            .insert(userhash(username, &self.realm), username.to_owned());
        self.users.insert(username.to_owned(), password.to_owned());
    }
    /// Adds a REST shared secret (several are accepted, for rotation).
    pub fn add_rest_secret(&mut self, secret: &[u8]) {
        self.rest_secrets.push(secret.to_vec());
    }
    /// True if at least one REST secret is configured.
    pub fn has_rest(&self) -> bool {
        !self.rest_secrets.is_empty()
    }
    /// Takes the static users and REST secrets of `other` in place of this store's, keeping
    /// the one-time credentials and listener reservations the runtime issued (a
    /// configuration reload). The realm stays this store's: keys are derived from it.
    pub fn replace_long_term(&mut self, other: &Credentials) {
        self.users = other.users.clone();
        self.rest_secrets = other.rest_secrets.clone();
        // USERHASH depends on the realm (RFC 8489 §14.4): recomputed with ours.
        self.userhashes = self
            .users
            .keys()
            .map(|u| (userhash(u, &self.realm), u.clone()))
            .collect();
    }
    /// True if `username` has a one-time credential.
    pub fn has_one_time(&self, username: &str) -> bool {
        self.one_time.contains_key(username)
    }
    /// The password of static user `username`, if there is one.
    pub fn static_password(&self, username: &str) -> Option<&str> {
        self.users.get(username).map(String::as_str)
    }
    /// Adds or replaces a one-time credential.
    pub fn insert_one_time(&mut self, username: &str, cred: OneTimeCredential) {
        self.one_time.insert(username.to_owned(), cred);
    }
    /// Removes a one-time credential.
    pub fn remove_one_time(&mut self, username: &str) -> bool {
        self.one_time.remove(username).is_some()
    }
    /// Drops one-time credentials that expired before `wall_unix_s`.
    pub fn expire_one_time(&mut self, wall_unix_s: u64) {
        // Same boundary as `passwords`: valid through its expiry second.
        self.one_time
            .retain(|_, cred| cred.expires_unix_s >= wall_unix_s);
    }
    /// Reserves `listener` for `username`: every other username is refused there
    /// ([`LookupError::WrongListener`]), while `username` stays valid wherever its own kind
    /// of credential is. A dynamic UDP port opened for one issued configuration accepts
    /// only that configuration's credentials, yet the same credentials still work on the
    /// shared TCP port for the client's parallel attempts.
    pub fn reserve_listener(&mut self, listener: ListenerId, username: &str) {
        self.reserved.insert(listener, username.to_owned());
    }
    /// Lifts the reservation of `listener` (when the listener closes). False if it had none.
    pub fn release_listener(&mut self, listener: ListenerId) -> bool {
        self.reserved.remove(&listener).is_some()
    }
    /// The username of a static user whose USERHASH is `hash` (RFC 8489 §14.4).
    pub fn resolve_userhash(&self, hash: &[u8]) -> Option<&str> {
        // USERHASH has a fixed length of 32 bytes; anything else matches nobody.
        let hash: &[u8; 32] = hash.try_into().ok()?;
        self.userhashes.get(hash).map(String::as_str)
    }
    /// The static users and their passwords, in name order (the trace recorder writes
    /// keyed fingerprints of them, never the passwords).
    pub fn users(&self) -> impl Iterator<Item = (&str, &str)> {
        self.users.iter().map(|(u, p)| (u.as_str(), p.as_str()))
    }
    /// The REST shared secrets, in the order they were added.
    pub fn rest_secrets(&self) -> impl Iterator<Item = &[u8]> {
        self.rest_secrets.iter().map(Vec::as_slice)
    }
    /// The one-time credentials, in username order.
    pub fn one_time(&self) -> impl Iterator<Item = (&str, &OneTimeCredential)> {
        self.one_time.iter().map(|(u, c)| (u.as_str(), c))
    }
    /// Calls `each(kind, password)` for every password valid for `username` on `listener`
    /// at wall time `wall_unix_s` (several with REST secret rotation), until `each`
    /// returns true (found). Static users win over one-time over REST.
    pub fn passwords(
        &self,
        username: &str,
        listener: ListenerId,
        wall_unix_s: u64,
        mut each: impl FnMut(CredentialKind, &str) -> bool,
    ) -> Result<bool, LookupError> {
        if self.reserved.get(&listener).is_some_and(|u| u != username) {
            return Err(LookupError::WrongListener);
        }
        if let Some(password) = self.users.get(username) {
            return Ok(each(CredentialKind::Static, password));
        }
        if let Some(cred) = self.one_time.get(username) {
            if cred.expires_unix_s < wall_unix_s {
                return Err(LookupError::Expired);
            }
            if cred.listener.is_some_and(|l| l != listener) {
                return Err(LookupError::WrongListener);
            }
            return Ok(each(CredentialKind::OneTime, &cred.password));
        }
        // draft-uberti-behave-turn-rest-00 §2.2: the username carries its own expiry, and
        // the password is derived from it; with several secrets (rotation) any may match.
        let expiry = match rest_expiry(username) {
            Some(e) if self.has_rest() => e,
            _ => return Err(LookupError::UnknownUser),
        };
        if expiry < wall_unix_s {
            return Err(LookupError::Expired);
        }
        for secret in &self.rest_secrets {
            if each(CredentialKind::Rest, &rest_password(secret, username)) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const L1: ListenerId = ListenerId(1);
    const L2: ListenerId = ListenerId(2);

    /// Every candidate offered, in order, with `each` answering true for `accept`.
    fn offered(
        c: &Credentials,
        user: &str,
        listener: ListenerId,
        now: u64,
        accept: Option<&str>,
    ) -> (Result<bool, LookupError>, Vec<(CredentialKind, String)>) {
        let mut seen = Vec::new();
        let r = c.passwords(user, listener, now, |kind, pw| {
            seen.push((kind, pw.to_owned()));
            Some(pw) == accept
        });
        (r, seen)
    }

    fn one_time(
        password: &str,
        expires_unix_s: u64,
        listener: Option<ListenerId>,
    ) -> OneTimeCredential {
        OneTimeCredential {
            password: password.to_owned(),
            expires_unix_s,
            listener,
        }
    }

    #[test]
    fn new_store_is_empty() {
        let c = Credentials::new("example.org");
        assert_eq!(c.realm(), "example.org");
        assert!(!c.has_rest());
        assert_eq!(
            offered(&c, "alice", L1, NOW, None).0,
            Err(LookupError::UnknownUser)
        );
        assert_eq!(
            offered(&c, "1800000000:alice", L1, NOW, None).0,
            Err(LookupError::UnknownUser)
        );
    }

    #[test]
    fn static_user() {
        let mut c = Credentials::new("example.org");
        c.add_user("alice", "pw1");
        let (r, seen) = offered(&c, "alice", L1, NOW, Some("pw1"));
        assert_eq!(r, Ok(true));
        assert_eq!(seen, vec![(CredentialKind::Static, "pw1".to_owned())]);
        let (r, seen) = offered(&c, "alice", L2, u64::MAX, None);
        assert_eq!(
            r,
            Ok(false),
            "static users neither expire nor depend on the listener"
        );
        assert_eq!(seen.len(), 1);
        // Replaced, not duplicated.
        c.add_user("alice", "pw2");
        assert_eq!(
            offered(&c, "alice", L1, NOW, None).1,
            vec![(CredentialKind::Static, "pw2".to_owned())]
        );
        assert_eq!(
            offered(&c, "bob", L1, NOW, None).0,
            Err(LookupError::UnknownUser)
        );
    }

    #[test]
    fn userhash_resolves_static_users_only() {
        let mut c = Credentials::new("example.org");
        c.add_user("alice", "pw");
        let h = userhash("alice", "example.org");
        assert_eq!(c.resolve_userhash(&h), Some("alice"));
        assert_eq!(c.resolve_userhash(&userhash("alice", "other.org")), None);
        assert_eq!(c.resolve_userhash(&userhash("bob", "example.org")), None);
        assert_eq!(c.resolve_userhash(&h[..31]), None);
        let mut long = h.to_vec();
        long.push(0);
        assert_eq!(c.resolve_userhash(&long), None);
        assert_eq!(c.resolve_userhash(&[]), None);
    }

    #[test]
    fn static_wins_over_one_time_and_rest() {
        let mut c = Credentials::new("r");
        c.add_rest_secret(b"s");
        c.add_user("1800000000:alice", "static");
        c.insert_one_time("1800000000:alice", one_time("otp", 0, Some(L2)));
        let (r, seen) = offered(&c, "1800000000:alice", L1, NOW, None);
        assert_eq!(r, Ok(false));
        assert_eq!(seen, vec![(CredentialKind::Static, "static".to_owned())]);
    }

    #[test]
    fn one_time_credentials() {
        let mut c = Credentials::new("r");
        c.insert_one_time("otp-any", one_time("a", NOW, None));
        c.insert_one_time("otp-l1", one_time("b", NOW + 10, Some(L1)));
        // Valid up to and including its expiry second, on any listener when unbound.
        for l in [L1, L2] {
            let (r, seen) = offered(&c, "otp-any", l, NOW, Some("a"));
            assert_eq!(r, Ok(true));
            assert_eq!(seen, vec![(CredentialKind::OneTime, "a".to_owned())]);
        }
        assert_eq!(
            offered(&c, "otp-any", L1, NOW + 1, None).0,
            Err(LookupError::Expired)
        );
        // Bound to a listener.
        assert_eq!(offered(&c, "otp-l1", L1, NOW, Some("b")).0, Ok(true));
        assert_eq!(offered(&c, "otp-l1", L1, NOW, None).0, Ok(false));
        assert_eq!(
            offered(&c, "otp-l1", L2, NOW, None).0,
            Err(LookupError::WrongListener)
        );
        // Expiry is checked before the listener.
        assert_eq!(
            offered(&c, "otp-l1", L2, NOW + 11, None).0,
            Err(LookupError::Expired)
        );
        // Replace, remove.
        c.insert_one_time("otp-l1", one_time("c", NOW, Some(L2)));
        assert_eq!(offered(&c, "otp-l1", L2, NOW, Some("c")).0, Ok(true));
        assert!(c.remove_one_time("otp-l1"));
        assert!(!c.remove_one_time("otp-l1"));
        assert_eq!(
            offered(&c, "otp-l1", L2, NOW, None).0,
            Err(LookupError::UnknownUser)
        );
    }

    #[test]
    fn expire_one_time_drops_only_the_expired() {
        let mut c = Credentials::new("r");
        c.insert_one_time("old", one_time("a", NOW - 1, None));
        c.insert_one_time("edge", one_time("b", NOW, None));
        c.insert_one_time("new", one_time("c", NOW + 1, None));
        c.expire_one_time(NOW);
        assert!(!c.remove_one_time("old"));
        assert!(c.remove_one_time("edge"));
        assert!(c.remove_one_time("new"));
    }

    #[test]
    fn reserved_listener_takes_its_owner_only() {
        let mut c = Credentials::new("r");
        c.add_user("alice", "pw");
        c.add_rest_secret(b"s");
        let owner = "1800000000:abc";
        let other = "1800000000:def";
        c.reserve_listener(L2, owner);
        // On the reserved listener: its owner only, static users included in the refusal.
        let owner_pw = rest_password(b"s", owner);
        assert_eq!(offered(&c, owner, L2, NOW, Some(&owner_pw)).0, Ok(true));
        assert_eq!(
            offered(&c, other, L2, NOW, None).0,
            Err(LookupError::WrongListener)
        );
        assert_eq!(
            offered(&c, "alice", L2, NOW, None).0,
            Err(LookupError::WrongListener)
        );
        // Elsewhere, everyone as before: the owner too (parallel TCP attempts).
        assert_eq!(offered(&c, owner, L1, NOW, Some(&owner_pw)).0, Ok(true));
        assert_eq!(offered(&c, "alice", L1, NOW, Some("pw")).0, Ok(true));
        // Still subject to its own expiry on its listener.
        assert_eq!(
            offered(&c, owner, L2, 1_800_000_001, None).0,
            Err(LookupError::Expired)
        );
        assert!(c.release_listener(L2));
        assert!(!c.release_listener(L2));
        assert_eq!(offered(&c, "alice", L2, NOW, Some("pw")).0, Ok(true));
    }

    #[test]
    fn one_time_wins_over_rest() {
        let mut c = Credentials::new("r");
        c.add_rest_secret(b"s");
        c.insert_one_time("1800000000:x", one_time("otp", NOW, None));
        let (_, seen) = offered(&c, "1800000000:x", L1, NOW, None);
        assert_eq!(seen, vec![(CredentialKind::OneTime, "otp".to_owned())]);
        // An expired one-time credential does not fall through to REST.
        assert_eq!(
            offered(&c, "1800000000:x", L1, NOW + 1, None).0,
            Err(LookupError::Expired)
        );
    }

    #[test]
    fn rest_usernames() {
        let mut c = Credentials::new("r");
        c.add_rest_secret(b"secret");
        assert!(c.has_rest());
        let user = "1700000000:alice";
        // The password of the reference generator (see rest.rs).
        let (r, seen) = offered(&c, user, L2, NOW, Some("d8soP47RbdIKLDUOpnJPVQyq5Ts="));
        assert_eq!(r, Ok(true), "expiry == now is still valid");
        assert_eq!(
            seen,
            vec![(
                CredentialKind::Rest,
                "d8soP47RbdIKLDUOpnJPVQyq5Ts=".to_owned()
            )]
        );
        assert_eq!(offered(&c, user, L1, NOW - 1000, None).0, Ok(false));
        assert_eq!(
            offered(&c, user, L1, NOW + 1, None).0,
            Err(LookupError::Expired)
        );
        // Not a REST username.
        assert_eq!(
            offered(&c, "alice", L1, NOW, None).0,
            Err(LookupError::UnknownUser)
        );
        assert_eq!(
            offered(&c, "alice:1800000000", L1, NOW, None).0,
            Err(LookupError::UnknownUser)
        );
        assert_eq!(
            offered(&c, "", L1, NOW, None).0,
            Err(LookupError::UnknownUser)
        );
    }

    #[test]
    fn rest_secret_rotation() {
        let mut c = Credentials::new("r");
        c.add_rest_secret(b"new");
        c.add_rest_secret(b"old");
        let user = "1800000000:alice";
        let old_pw = rest_password(b"old", user);
        let new_pw = rest_password(b"new", user);
        // The second secret matches: both are offered, in order.
        let (r, seen) = offered(&c, user, L1, NOW, Some(&old_pw));
        assert_eq!(r, Ok(true));
        assert_eq!(
            seen,
            vec![
                (CredentialKind::Rest, new_pw.clone()),
                (CredentialKind::Rest, old_pw)
            ]
        );
        // The first matches: the search stops there.
        let (r, seen) = offered(&c, user, L1, NOW, Some(&new_pw));
        assert_eq!(r, Ok(true));
        assert_eq!(seen.len(), 1);
        // Neither matches: every one tried.
        let (r, seen) = offered(&c, user, L1, NOW, Some("wrong"));
        assert_eq!(r, Ok(false));
        assert_eq!(seen.len(), 2);
    }
}
