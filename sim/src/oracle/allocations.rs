//! The allocation table as the events tell it, against the loops' own accounts:
//! `allocation_table_matches_events`, `allocation_owned_by_one_loop`,
//! `relayed_address_unique`, `one_allocation_per_5tuple`, `user_quota_for_node`,
//! `total_quota_for_node`, `port_pool_matches_sockets`, `stream_table_matches_driver`,
//! `allocation_expires_on_time` and `memory_bounded`.

use super::shadow::{AllocShadow, AllocationRecord, Check, Key, Shadow, Step, LISTING_EVERY};
use core::time::Duration;
use std::collections::BTreeMap;
use turnpike_core::node::{loop_of, LoopId};
use turnpike_core::{AllocationId, Event, Instant};

impl Shadow {
    pub(super) fn event(&mut self, now: Instant, lp: u16, e: &Event) -> Check {
        match e {
            Event::AllocationCreated {
                id,
                client,
                username,
                relayed,
                lifetime_s,
            } => {
                self.step_alloc_events = true;
                if loop_of(*id) != LoopId(lp) {
                    return Err((
                        "allocation_owned_by_one_loop",
                        format!(
                            "loop {lp} created allocation {:#x}, whose id names loop {}",
                            id.0,
                            loop_of(*id).0
                        ),
                    ));
                }
                if !self.ids.insert(*id) {
                    return Err((
                        "allocation_owned_by_one_loop",
                        format!("allocation id {:#x} created twice in the node", id.0),
                    ));
                }
                let key = Key::of(client);
                let mut relays = Vec::new();
                for r in relayed {
                    if let Some(other) = self.relayed.insert(*r, *id) {
                        return Err((
                            "relayed_address_unique",
                            format!(
                                "allocation {:#x} (loop {lp}) and {:#x} both relay on {r}",
                                id.0, other.0
                            ),
                        ));
                    }
                    let found = self.relays.iter_mut().find(|((l, _), s)| {
                        *l == lp
                            && s.owner.is_none()
                            && s.addr.port() == r.port()
                            && s.addr.is_ipv6() == r.is_ipv6()
                    });
                    match found {
                        Some((rid, s)) => {
                            s.owner = Some(*id);
                            relays.push(*rid);
                        }
                        None => {
                            return Err((
                                "relay_released_with_allocation",
                                format!(
                                    "allocation {} announces {r} with no bound relay socket of loop {lp}",
                                    id.0
                                ),
                            ))
                        }
                    }
                }
                if let Some(other) = self.by_key.insert(key, *id) {
                    return Err((
                        "one_allocation_per_5tuple",
                        format!("{key:?} has allocations {} and {}", other.0, id.0),
                    ));
                }
                let held = self.by_user.entry(username.clone()).or_insert(0);
                *held += 1;
                if *held > self.cfg.user_quota {
                    return Err((
                        "user_quota_for_node",
                        format!(
                            "{username} holds {held} allocations over the node's loops (user_quota {}); loop {lp} made the last",
                            self.cfg.user_quota
                        ),
                    ));
                }
                let expires = now + Duration::from_secs(u64::from(*lifetime_s));
                self.expiry.insert((expires, *id));
                self.history.push(AllocationRecord {
                    username: username.clone(),
                    client: client.addr,
                    relayed: relayed.clone(),
                    created: now,
                    deleted: None,
                });
                if let Some(n) = self.allocs_per_loop.get_mut(usize::from(lp)) {
                    *n += 1;
                }
                self.allocs.insert(
                    *id,
                    AllocShadow {
                        key,
                        lp,
                        username: username.clone(),
                        relayed: relayed.clone(),
                        relays,
                        expires,
                        perms: BTreeMap::new(),
                        record: self.history.len() - 1,
                    },
                );
                if self.allocs.len() as u64 > self.cfg.total_quota {
                    return Err((
                        "total_quota_for_node",
                        format!(
                            "{} live allocations over the node's loops (total_quota {})",
                            self.allocs.len(),
                            self.cfg.total_quota
                        ),
                    ));
                }
            }
            Event::AllocationRefreshed { id, lifetime_s } => {
                if let Some(a) = self.allocs.get_mut(id) {
                    self.expiry.remove(&(a.expires, *id));
                    a.expires = now + Duration::from_secs(u64::from(*lifetime_s));
                    self.expiry.insert((a.expires, *id));
                }
            }
            Event::AllocationDeleted { id, reason, .. } => {
                self.step_alloc_events = true;
                let Some(a) = self.allocs.remove(id) else {
                    return Err((
                        "allocation_table_matches_events",
                        format!("loop {lp} deleted unknown allocation {}", id.0),
                    ));
                };
                if let Some(n) = self.allocs_per_loop.get_mut(usize::from(a.lp)) {
                    *n = n.saturating_sub(1);
                }
                if a.lp != lp {
                    return Err((
                        "allocation_owned_by_one_loop",
                        format!("loop {lp} deleted allocation {:#x} of loop {}", id.0, a.lp),
                    ));
                }
                for r in &a.relayed {
                    self.relayed.remove(r);
                }
                if let Some(n) = self.by_user.get_mut(&a.username) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.by_user.remove(&a.username);
                    }
                }
                self.expiry.remove(&(a.expires, *id));
                self.by_key.remove(&a.key);
                self.step_deleted.extend(a.relays.iter().copied());
                if let Some(h) = self.history.get_mut(a.record) {
                    h.deleted = Some((now, *reason));
                }
            }
            Event::StreamRejected { reason, .. } => {
                *self.rejected.entry(reason.as_str()).or_insert(0) += 1;
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn tables_match(&mut self, step: &Step) -> Check {
        let host = step.host;
        for (l, stats) in step.loops.iter().enumerate() {
            let lp = l as u16;
            let [v4, v6] = self.relays_per_loop.get(l).copied().unwrap_or_default();
            if stats.ports_v4.in_use != v4 || stats.ports_v6.in_use != v6 {
                return Err((
                    "port_pool_matches_sockets",
                    format!(
                        "loop {lp}: pool says {}+{} ports in use, {v4}+{v6} relay sockets are open",
                        stats.ports_v4.in_use, stats.ports_v6.in_use
                    ),
                ));
            }
            let allocs = self.allocs_per_loop.get(l).copied().unwrap_or_default();
            if stats.allocations != allocs {
                return Err((
                    "allocation_table_matches_events",
                    format!(
                        "loop {lp}: core holds {} allocations, events say {allocs}",
                        stats.allocations
                    ),
                ));
            }
            let conns = host.open_conns_of(lp) as u64;
            if stats.streams != conns {
                return Err((
                    "stream_table_matches_driver",
                    format!(
                        "loop {lp}: core holds {} streams, the driver {conns}",
                        stats.streams
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every loop lists exactly the live allocations it created (checked at most once a
    /// second of virtual time, after steps that created or deleted one).
    pub(super) fn allocation_owned_by_one_loop(&mut self, step: &Step) -> Check {
        if !self.step_alloc_events || step.now < self.next_listing {
            return Ok(());
        }
        self.next_listing = step.now + LISTING_EVERY;
        let mut listed: BTreeMap<AllocationId, u16> = BTreeMap::new();
        for (l, core) in step.host.cores.iter().enumerate() {
            for a in core.allocations(step.now) {
                if let Some(other) = listed.insert(a.id, l as u16) {
                    return Err((
                        "allocation_owned_by_one_loop",
                        format!("allocation {:#x} listed by loops {other} and {l}", a.id.0),
                    ));
                }
            }
        }
        let shadow: BTreeMap<AllocationId, u16> =
            self.allocs.iter().map(|(id, a)| (*id, a.lp)).collect();
        if listed != shadow {
            let diff: Vec<_> = listed
                .iter()
                .filter(|(id, l)| shadow.get(id) != Some(l))
                .chain(shadow.iter().filter(|(id, l)| listed.get(id) != Some(l)))
                .take(4)
                .collect();
            return Err((
                "allocation_owned_by_one_loop",
                format!("the loops' listings and the events differ: {diff:x?}"),
            ));
        }
        Ok(())
    }

    pub(super) fn allocation_expires_on_time(&mut self, step: &Step) -> Check {
        let now = step.now;
        if let Some(&(at, id)) = self.expiry.first() {
            if now > at + Duration::from_millis(1) {
                return Err((
                    "allocation_expires_on_time",
                    format!(
                        "allocation {} alive {:?} past its expiry",
                        id.0,
                        now.since(at)
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn memory_bounded(&mut self, step: &Step) -> Check {
        for (l, s) in step.loops.iter().enumerate() {
            if s.streams > self.cfg.max_streams {
                return Err(("memory_bounded", format!("loop {l}: {} streams", s.streams)));
            }
        }
        if step.stats.allocations > self.cfg.total_quota {
            return Err((
                "memory_bounded",
                format!(
                    "{} allocations over the node's loops",
                    step.stats.allocations
                ),
            ));
        }
        Ok(())
    }
}
