//! Refresh (RFC 8656 §8), CreatePermission (§10) and ChannelBind (§12.2). They run after
//! authentication; each returns the answer to sign.

use super::reply;
use super::Server;
use crate::channel;
use crate::event::{DeleteReason, Event};
use crate::ids::AllocationId;
use crate::policy::DenyReason;
use crate::stun::{attr, Class, Message, MessageBuilder};
use crate::time::Instant;
use core::time::Duration;
use std::net::{IpAddr, SocketAddr};

/// Permissions are per IP address (RFC 8656 §9): the policy is asked about the address
/// with a placeholder port, so that only address rules apply.
const ANY_PORT: u16 = 9;

impl Server {
    /// Refresh: a new lifetime, or 0 to delete (RFC 8656 §8).
    pub(super) fn refresh(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        existing: Option<AllocationId>,
    ) -> MessageBuilder {
        let Some(id) = existing else {
            return reply::error(msg, 437);
        };
        let Ok(lifetime) = msg.get(attr::LIFETIME).map(attr::decode_u32).transpose() else {
            return reply::error(msg, 400);
        };
        if let Some(v) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let fam = match attr::decode_family(v) {
                Ok(attr::FAMILY_IPV4) => 0,
                Ok(attr::FAMILY_IPV6) => 1,
                _ => return reply::error(msg, 400),
            };
            if self
                .allocations
                .get(&id)
                .is_some_and(|a| a.sides[fam].is_none())
            {
                return reply::error(msg, 443);
            }
        }
        let mut b = MessageBuilder::response_to(msg, Class::Success);
        if lifetime == Some(0) {
            self.remove_allocation(now, id, DeleteReason::Refreshed0);
            b.add_u32(attr::LIFETIME, 0);
            return b;
        }
        let granted = self.grant_lifetime(lifetime);
        if let Some(a) = self.allocations.get_mut(&id) {
            a.expires = now + Duration::from_secs(u64::from(granted));
            a.lifetime_s = granted;
        }
        self.reschedule_allocation(id);
        self.emit(Event::AllocationRefreshed {
            id,
            lifetime_s: granted,
        });
        b.add_u32(attr::LIFETIME, granted);
        b
    }

    /// CreatePermission with one or more XOR-PEER-ADDRESS: all installed or none (RFC 8656
    /// §10.2).
    pub(super) fn create_permission(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        existing: Option<AllocationId>,
    ) -> MessageBuilder {
        let Some(id) = existing else {
            return reply::error(msg, 437);
        };
        let tid = msg.transaction_id();
        let mut ips: Vec<IpAddr> = Vec::new();
        for (ty, value) in msg.attributes() {
            if ty == attr::XOR_PEER_ADDRESS {
                match attr::decode_xor_address(value, &tid) {
                    Ok(a) => ips.push(a.ip()),
                    Err(_) => return reply::error(msg, 400),
                }
            }
        }
        if ips.is_empty() {
            return reply::error(msg, 400);
        }
        let Some(a) = self.allocations.get(&id) else {
            return reply::error(msg, 437);
        };
        if ips.iter().any(|ip| a.side_for(*ip).is_none()) {
            return reply::error(msg, 443);
        }
        for ip in &ips {
            if let Err(reason) = self.cfg.peer_policy.check(SocketAddr::new(*ip, ANY_PORT)) {
                self.peer_denied(id, SocketAddr::new(*ip, 0), reason);
                return reply::error(msg, 403);
            }
        }
        let until = now + self.cfg.permission_lifetime;
        let max = self.cfg.max_permissions as usize;
        let installed = self
            .allocations
            .get_mut(&id)
            .is_some_and(|a| a.install_permissions(&ips, until, max));
        if !installed {
            self.stats.insufficient_capacity += 1;
            return reply::error(msg, 508);
        }
        self.reschedule_allocation(id);
        MessageBuilder::response_to(msg, Class::Success)
    }

    /// ChannelBind: binds or refreshes a channel and the peer's permission (RFC 8656 §12.2).
    pub(super) fn channel_bind(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        existing: Option<AllocationId>,
    ) -> MessageBuilder {
        let Some(id) = existing else {
            return reply::error(msg, 437);
        };
        let number = match msg
            .get(attr::CHANNEL_NUMBER)
            .map(attr::decode_channel_number)
        {
            Some(Ok(n)) if channel::is_valid_number(n) => n,
            _ => return reply::error(msg, 400),
        };
        let peer = match msg
            .get(attr::XOR_PEER_ADDRESS)
            .map(|v| attr::decode_xor_address(v, &msg.transaction_id()))
        {
            Some(Ok(p)) => p,
            _ => return reply::error(msg, 400),
        };
        let Some(a) = self.allocations.get(&id) else {
            return reply::error(msg, 437);
        };
        if a.side_for(peer.ip()).is_none() {
            return reply::error(msg, 443);
        }
        if let Err(reason) = self.cfg.peer_policy.check(peer) {
            self.peer_denied(id, peer, reason);
            return reply::error(msg, 403);
        }
        // RFC 8656 §12.2: a number tied to another peer, or a peer tied to another number
        // (even one cooling down after expiry), is a 400.
        if a.channel_conflict(number, peer) {
            return reply::error(msg, 400);
        }
        let new_channel = !a.channels.iter().any(|c| c.number == number);
        let new_permission = !a.permissions.iter().any(|p| p.ip == peer.ip());
        if (new_channel && a.channels.len() >= self.cfg.max_channels as usize)
            || (new_permission && a.permissions.len() >= self.cfg.max_permissions as usize)
        {
            self.stats.insufficient_capacity += 1;
            return reply::error(msg, 508);
        }
        let channel_until = now + self.cfg.channel_lifetime;
        let permission_until = now + self.cfg.permission_lifetime;
        let (max_c, max_p) = (
            self.cfg.max_channels as usize,
            self.cfg.max_permissions as usize,
        );
        if let Some(a) = self.allocations.get_mut(&id) {
            a.bind_channel(number, peer, channel_until, max_c);
            a.install_permissions(&[peer.ip()], permission_until, max_p);
        }
        self.reschedule_allocation(id);
        MessageBuilder::response_to(msg, Class::Success)
    }

    pub(super) fn peer_denied(&mut self, id: AllocationId, peer: SocketAddr, reason: DenyReason) {
        self.stats.peers_denied += 1;
        self.emit(Event::PeerDenied { id, peer, reason });
    }
}
