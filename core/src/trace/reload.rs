//! A configuration reload ([`crate::Server::reload`]) as a trace records it: what the
//! core took, secrets as keyed fingerprints (see [`super::config`] for how a replay gets
//! them back from the operator's file).

use super::codec::{Get, Put};
use super::config::{
    fingerprint, get_secrets, nets, put_secrets, read_nets, Fingerprint, ReplaySecrets, SecretKind,
};
use super::TraceError;
use crate::auth::Credentials;
use crate::cidr::IpNet;
use crate::config::Reloadable;
use crate::policy::PeerPolicy;

/// Every field of a [`Reloadable`], secrets as fingerprints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadDescription {
    /// Static users, in name order, with the fingerprints of their passwords.
    pub users: Vec<(String, Fingerprint)>,
    /// REST secrets, in order, as fingerprints.
    pub rest_secrets: Vec<Fingerprint>,
    /// The peer policy's allowed ranges.
    pub peer_allow: Vec<IpNet>,
    /// Its denied ranges.
    pub peer_deny: Vec<IpNet>,
    /// Loopback peers allowed.
    pub allow_loopback: bool,
    /// `user_quota`.
    pub user_quota: u32,
    /// `total_quota`.
    pub total_quota: u32,
    /// `max_bps`.
    pub max_bps: u64,
    /// `total_max_bps` (this loop's share).
    pub total_max_bps: u64,
}

impl ReloadDescription {
    /// The description of `r`, fingerprints keyed with `salt`.
    pub fn of(r: &Reloadable, salt: &[u8; 16]) -> Self {
        ReloadDescription {
            users: r
                .credentials
                .users()
                .map(|(u, p)| {
                    let fp = fingerprint(salt, SecretKind::User, u, p.as_bytes());
                    (u.to_owned(), fp)
                })
                .collect(),
            rest_secrets: r
                .credentials
                .rest_secrets()
                .map(|s| fingerprint(salt, SecretKind::RestSecret, "", s))
                .collect(),
            peer_allow: r.peer_policy.allow.clone(),
            peer_deny: r.peer_policy.deny.clone(),
            allow_loopback: r.peer_policy.allow_loopback,
            user_quota: r.user_quota,
            total_quota: r.total_quota,
            max_bps: r.max_bps,
            total_max_bps: r.total_max_bps,
        }
    }

    /// The reload to replay in realm `realm`, with the secrets from `secrets` whose
    /// fingerprints match; the users and secrets not supplied are left out and named in
    /// the second value (the replay then reports them, as for an issuance secret).
    pub fn to_reloadable(
        &self,
        realm: &str,
        salt: &[u8; 16],
        secrets: &ReplaySecrets,
    ) -> (Reloadable, Vec<String>) {
        let mut missing = Vec::new();
        let mut cr = Credentials::new(realm);
        for (user, fp) in &self.users {
            let pw = secrets.users.iter().find(|(u, p)| {
                u == user && fingerprint(salt, SecretKind::User, user, p.as_bytes()) == *fp
            });
            match pw {
                Some((_, p)) => cr.add_user(user, p),
                None => missing.push(format!("user `{user}` of a reload")),
            }
        }
        for (i, fp) in self.rest_secrets.iter().enumerate() {
            let s = secrets
                .rest_secrets
                .iter()
                .find(|s| fingerprint(salt, SecretKind::RestSecret, "", s) == *fp);
            match s {
                Some(s) => cr.add_rest_secret(s),
                None => missing.push(format!("REST secret #{} of a reload", i + 1)),
            }
        }
        let r = Reloadable {
            credentials: cr,
            peer_policy: PeerPolicy {
                allow: self.peer_allow.clone(),
                deny: self.peer_deny.clone(),
                allow_loopback: self.allow_loopback,
                own_addresses: Vec::new(),
            },
            user_quota: self.user_quota,
            total_quota: self.total_quota,
            max_bps: self.max_bps,
            total_max_bps: self.total_max_bps,
        };
        (r, missing)
    }

    pub(crate) fn encode(&self, p: &mut Put<'_>) {
        put_secrets(p, &self.users, &self.rest_secrets);
        nets(p, &self.peer_allow);
        nets(p, &self.peer_deny);
        p.bool(self.allow_loopback);
        p.u32(self.user_quota);
        p.u32(self.total_quota);
        p.u64(self.max_bps);
        p.u64(self.total_max_bps);
    }

    pub(crate) fn decode(g: &mut Get<'_>) -> Result<Self, TraceError> {
        let (users, rest_secrets) = get_secrets(g)?;
        Ok(ReloadDescription {
            users,
            rest_secrets,
            peer_allow: read_nets(g)?,
            peer_deny: read_nets(g)?,
            allow_loopback: g.bool()?,
            user_quota: g.u32()?,
            total_quota: g.u32()?,
            max_bps: g.u64()?,
            total_max_bps: g.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_back_from_the_supplied_ones_and_missing_ones_are_named() {
        let salt = [9u8; 16];
        let mut cr = Credentials::new("r");
        cr.add_user("alice", "pw-a");
        cr.add_user("bob", "pw-b");
        cr.add_rest_secret(b"s1");
        let r = Reloadable {
            credentials: cr,
            peer_policy: PeerPolicy::default(),
            user_quota: 2,
            total_quota: 5,
            max_bps: 0,
            total_max_bps: 7,
        };
        let d = ReloadDescription::of(&r, &salt);
        let text = format!("{d:?}");
        assert!(!text.contains("pw-a") && !text.contains("s1\""), "{text}");
        let secrets = ReplaySecrets {
            users: vec![
                ("alice".into(), "pw-a".into()),
                ("bob".into(), "wrong".into()),
            ],
            rest_secrets: vec![b"s1".to_vec()],
            ..ReplaySecrets::default()
        };
        let (back, missing) = d.to_reloadable("r", &salt, &secrets);
        assert_eq!(missing, vec!["user `bob` of a reload".to_string()]);
        assert_eq!(back.credentials.users().count(), 1);
        assert_eq!(back.credentials.rest_secrets().count(), 1);
        assert_eq!(
            (back.user_quota, back.total_quota, back.total_max_bps),
            (2, 5, 7)
        );
    }
}
