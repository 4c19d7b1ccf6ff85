//! A server host's configuration reloads: the runtime broadcasts each to every loop of
//! the node, and each loop applies it on its own after a small delay (the reload
//! oracle, [`crate::rotation`], watches both ends).

use super::ServerHost;
use crate::host::Cx;
use crate::node::message_latency;
use std::collections::BTreeSet;
use turnpike_core::auth::Credentials;
use turnpike_core::config::Reloadable;
use turnpike_core::AllocationId;

impl ServerHost {
    /// A configuration reload that rotates the REST secret: as the runtime broadcasts it,
    /// each loop gets it after its own small delay and applies it on its own.
    pub(super) fn reload(&mut self, cx: &mut Cx, secret: &crate::faults::Secret, keep_old: bool) {
        if !keep_old {
            self.rest_secrets.clear();
        }
        self.rest_secrets
            .push((secret.generation, secret.text.clone()));
        let Some(first) = self.cores.first() else {
            return;
        };
        let mut creds = Credentials::new(first.config().credentials.realm());
        for (_, text) in &self.rest_secrets {
            creds.add_rest_secret(text.as_bytes());
        }
        let generations: BTreeSet<u32> = self.rest_secrets.iter().map(|(g, _)| *g).collect();
        let seq = cx.oracle.rotation.reload_sent(self.index, cx.now);
        for (lp, core) in self.cores.iter().enumerate() {
            let mut new = Reloadable::from_config(core.config());
            new.credentials = creds.clone();
            let at = cx.now + message_latency(cx.rng);
            self.reloads
                .push((at, lp as u16, seq, generations.clone(), new));
        }
        cx.note(format!(
            "{}: reload on its way to {} loops ({secret:?}{})",
            self.name,
            self.cores.len(),
            if keep_old { ", old secrets kept" } else { "" }
        ));
    }

    /// Applies the reloads that reached their loop; none may take an allocation away.
    pub(super) fn apply_reloads(&mut self, cx: &mut Cx) {
        // In the order they arrive (ties: the order sent); bounded by the loops.
        for _ in 0..self.reloads.len() {
            let Some(k) = self
                .reloads
                .iter()
                .enumerate()
                .filter(|(_, r)| r.0 <= cx.now)
                .min_by_key(|(i, r)| (r.0, *i))
                .map(|(i, _)| i)
            else {
                return;
            };
            let (_, lp, seq, generations, new) = self.reloads.remove(k);
            let Some(core) = self.cores.get_mut(usize::from(lp)) else {
                continue;
            };
            let before: Vec<AllocationId> = core.allocations(cx.now).iter().map(|a| a.id).collect();
            match core.reload(cx.now, new) {
                Ok(o) => cx.note(format!("{} loop {lp}: reloaded ({o:?})", self.name)),
                Err(e) => cx
                    .oracle
                    .fail("reload_accepted", format!("{} loop {lp}: {e}", self.name)),
            }
            self.drain(cx, lp);
            let after: Vec<AllocationId> = self.cores[usize::from(lp)]
                .allocations(cx.now)
                .iter()
                .map(|a| a.id)
                .collect();
            cx.oracle
                .rotation
                .reloaded(self.index, lp, seq, cx.now, generations);
            if let Err((inv, d)) = cx.oracle.rotation.kept(&before, &after) {
                cx.oracle.fail(inv, format!("{} loop {lp}: {d}", self.name));
            }
        }
    }
}
