//! The credential store: static users, REST secrets, one-time credentials.

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
}

impl Credentials {
    /// An empty store for `realm`.
    pub fn new(realm: &str) -> Self {
        let _ = realm;
        todo!()
    }
    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }
    /// Adds a static user.
    pub fn add_user(&mut self, username: &str, password: &str) {
        let _ = (username, password);
        todo!()
    }
    /// Adds a REST shared secret (several are accepted, for rotation).
    pub fn add_rest_secret(&mut self, secret: &[u8]) {
        let _ = secret;
        todo!()
    }
    /// True if at least one REST secret is configured.
    pub fn has_rest(&self) -> bool {
        !self.rest_secrets.is_empty()
    }
    /// Adds or replaces a one-time credential.
    pub fn insert_one_time(&mut self, username: &str, cred: OneTimeCredential) {
        let _ = (username, cred);
        todo!()
    }
    /// Removes a one-time credential.
    pub fn remove_one_time(&mut self, username: &str) -> bool {
        let _ = username;
        todo!()
    }
    /// Drops one-time credentials that expired before `wall_unix_s`.
    pub fn expire_one_time(&mut self, wall_unix_s: u64) {
        let _ = wall_unix_s;
        todo!()
    }
    /// The username of a static user whose USERHASH is `hash` (RFC 8489 §14.4).
    pub fn resolve_userhash(&self, hash: &[u8]) -> Option<&str> {
        let _ = hash;
        todo!()
    }
    /// Calls `each(kind, password)` for every password valid for `username` on `listener`
    /// at wall time `wall_unix_s` (several with REST secret rotation), until `each`
    /// returns true (found). Static users win over one-time over REST.
    pub fn passwords(
        &self,
        username: &str,
        listener: ListenerId,
        wall_unix_s: u64,
        each: impl FnMut(CredentialKind, &str) -> bool,
    ) -> Result<bool, LookupError> {
        let _ = (username, listener, wall_unix_s, each);
        todo!()
    }
}
