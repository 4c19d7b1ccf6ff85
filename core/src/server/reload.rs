//! Taking a new configuration at run time: credentials, peer policy, quotas and bandwidth
//! caps change, while live allocations, streams, permissions and channels stay.
//!
//! Credentials (RFC 8656 §6.2, §7: an allocation is bound to the username, realm and key
//! of the Allocate that made it): an allocation keeps the key it was created with, so a
//! reload never cuts a call. What changes is which credentials are accepted next:
//! - A new Allocate is checked against the new store at once (a REST username signed with
//!   a secret that is gone gets 401).
//! - An allocation made with a REST secret that is gone keeps its key until its
//!   username's own expiry timestamp; past it, its requests (Refresh, CreatePermission,
//!   ChannelBind) are checked against the store, and so answered 401.
//! - An allocation of a static user that was removed, or whose password changed, loses its
//!   key at once: its requests are checked against the store (401, unless the client
//!   authenticates with the new password). Relaying goes on until its lifetime, permissions
//!   or channels run out, as no refresh is accepted.
//! - One-time credentials issued by the runtime are kept.
//!
//! Peer policy (RFC 8656 §21.4 leaves the rules to the server): the new rules decide every
//! new permission, and permissions to peers they deny are removed now, so nothing more is
//! relayed to or from those peers; the allocation itself stays.
//!
//! Quotas: `user_quota` is counted at each user's home loop, which just takes the new
//! value (holders above it keep their allocations; new ones get 486 until below).
//! `total_quota` is split in credits over the loops ([`crate::node`]): each loop's share
//! changes by the difference of its shares, paid from its credits (even those in use);
//! what it cannot pay (it lent them) it sends round the other loops, each giving up what it
//! can and passing the rest on ([`LoopMsg::QuotaDebt`]). Once those messages are
//! delivered, the node holds the new total; allocations above it stay, and new ones are
//! refused until enough have ended. Only credits still in flight to a borrower when the
//! debt went round can leave some owed after it has been round twice: the loop it stops
//! at keeps it and pays it from the next credits it receives.

use super::{Server, TokenBucket};
use crate::allocation::Allocation;
use crate::auth::{long_term_key, rest_expiry, rest_password};
use crate::config::Reloadable;
use crate::node::LoopMsg;
use crate::time::Instant;
use core::net::SocketAddr;

/// Any port: the peer policy decides on addresses (RFC 8656 §9: permissions ignore ports).
const ANY_PORT: u16 = 9;

/// What a reload changed for what was already there.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct ReloadOutcome {
    /// Allocations of static users removed or given a new password: their key is no
    /// longer accepted.
    pub static_keys_revoked: u32,
    /// Allocations made with a REST secret that is gone: their key is accepted until their
    /// username's expiry.
    pub rest_keys_expiring: u32,
    /// Permissions removed because the new peer policy denies their peer.
    pub permissions_removed: u32,
}

impl Server {
    /// Takes `new` in place of the running credentials, peer policy, quotas and bandwidth
    /// caps (a configuration reload). Live allocations, streams, permissions and channels
    /// stay, except permissions to peers the new policy denies; see the module
    /// documentation for what happens to credentials and quotas. On error nothing changes.
    ///
    /// Call it on every loop of a node with the same `new`, but for each loop's share of
    /// `total_max_bps` (as at birth).
    pub fn reload(
        &mut self,
        now: Instant,
        new: Reloadable,
    ) -> Result<ReloadOutcome, super::ConfigError> {
        let err = |m: &str| Err(super::ConfigError(m.to_string()));
        if new.credentials.realm() != self.cfg.credentials.realm() {
            return err("the realm cannot change without a restart");
        }
        if new.user_quota == 0 || new.total_quota == 0 {
            return err("quotas must be positive");
        }
        let mut outcome = ReloadOutcome::default();
        self.rekey_allocations(now, &new, &mut outcome);
        self.cfg.credentials.replace_long_term(&new.credentials);

        let policy = &mut self.cfg.peer_policy;
        policy.allow = new.peer_policy.allow;
        policy.deny = new.peer_policy.deny;
        policy.allow_loopback = new.peer_policy.allow_loopback;
        outcome.permissions_removed = self.drop_denied_permissions();

        self.cfg.user_quota = new.user_quota;
        self.change_total_quota(new.total_quota);

        self.cfg.max_bps = new.max_bps;
        if new.total_max_bps != self.cfg.total_max_bps {
            self.cfg.total_max_bps = new.total_max_bps;
            self.bandwidth = [TokenBucket::new(new.total_max_bps, now); 2];
        }
        Ok(outcome)
    }

    /// Pays `credits` arriving from another loop towards what this loop owes first.
    pub(super) fn receive_credits(&mut self, credits: u32) {
        let paid = credits.min(self.quota_debt);
        self.quota_debt -= paid;
        self.credits = self.credits.saturating_add(credits - paid);
    }

    /// Gives up what it can of `debt` credits owed by the node (in use or not: allocations
    /// above stay, new ones wait), and passes the rest on to the next loop. After two
    /// rounds what is left is kept here as owed (credits in flight will pay it).
    pub(super) fn collect_debt(&mut self, debt: u32, hops: u16) {
        let paid = debt.min(self.credits);
        self.credits -= paid;
        self.quota_debt = self.quota_debt.saturating_add(debt - paid);
        self.pass_debt_on(hops.saturating_add(1));
    }

    /// Sends what this loop owes round the others, unless it has been round twice.
    fn pass_debt_on(&mut self, hops: u16) {
        let Some(next) = self.node.others().next() else {
            return;
        };
        if self.quota_debt == 0 || hops >= self.node.count.saturating_mul(2) {
            return;
        }
        let credits = core::mem::take(&mut self.quota_debt);
        self.send_loop(next, LoopMsg::QuotaDebt { credits, hops });
    }

    /// Marks the allocations whose credential the new store no longer holds.
    fn rekey_allocations(&mut self, now: Instant, new: &Reloadable, outcome: &mut ReloadOutcome) {
        let old = &self.cfg.credentials;
        let realm = old.realm();
        let wall = self.wall_unix_s(now);
        for a in self.allocations.values_mut() {
            let was = a.key_valid_until_unix_s;
            // Static users win the lookup (`Credentials::passwords`), so an allocation of a
            // username that is a static user was made with its password.
            if old.static_password(&a.username).is_some() {
                let kept = same_key(a, realm, new.credentials.static_password(&a.username));
                a.key_valid_until_unix_s = if kept { None } else { Some(0) };
                if !kept && was.is_none() {
                    outcome.static_keys_revoked += 1;
                }
                continue;
            }
            let Some(expiry) = rest_expiry(&a.username) else {
                continue;
            };
            if old.has_one_time(&a.username) {
                continue;
            }
            // A secret given back by a later reload gives the key back too.
            let signed_by_new = new
                .credentials
                .rest_secrets()
                .any(|s| same_key(a, realm, Some(&rest_password(s, &a.username))));
            a.key_valid_until_unix_s = if signed_by_new { None } else { Some(expiry) };
            if !signed_by_new && was.is_none() && wall.is_none_or(|w| w <= expiry) {
                outcome.rest_keys_expiring += 1;
            }
        }
    }

    /// Removes the permissions to peers the running policy denies; returns how many.
    fn drop_denied_permissions(&mut self) -> u32 {
        let mut removed = 0u32;
        let mut touched = Vec::new();
        for a in self.allocations.values_mut() {
            let before = a.permissions.len();
            let policy = &self.cfg.peer_policy;
            a.permissions
                .retain(|p| policy.check(SocketAddr::new(p.ip, ANY_PORT)).is_ok());
            let gone = before - a.permissions.len();
            if gone > 0 {
                removed = removed.saturating_add(u32::try_from(gone).unwrap_or(u32::MAX));
                touched.push(a.id);
            }
        }
        // Their next deadline may have been a removed permission's expiry.
        for id in touched {
            self.reschedule_allocation(id);
        }
        removed
    }

    /// Moves this loop's share of `total_quota` to the new total's share.
    fn change_total_quota(&mut self, total: u32) {
        let (count, index) = (self.node.count, self.node.index);
        let old = crate::node::quota_share(self.cfg.total_quota, count, index);
        let new = crate::node::quota_share(total, count, index);
        self.cfg.total_quota = total;
        if new >= old {
            self.receive_credits(new - old);
        } else {
            let cut = old - new;
            let paid = cut.min(self.credits);
            self.credits -= paid;
            self.quota_debt = self.quota_debt.saturating_add(cut - paid);
            self.pass_debt_on(0);
        }
    }
}

/// True if `password` (None: no such credential) gives the key `a` was made with.
fn same_key(a: &Allocation, realm: &str, password: Option<&str>) -> bool {
    password.is_some_and(|p| long_term_key(a.algorithm, &a.username, realm, p) == a.key)
}
