//! A loop takes a reloaded configuration ([`crate::reload`]): its core the new credentials,
//! peer policy and quotas, and new TLS handshakes the new certificate. Live connections,
//! TLS sessions and allocations go on as they were.

use super::Runtime;
use crate::clock::Clock;
use crate::plan::share;
use crate::reload::LoopReload;
use serde_json::json;
use turnpike_core::Instant;

impl Runtime {
    /// Applies `r`: the core's part first (on error, nothing of it changed), then the TLS
    /// configuration for new handshakes. Records the outcome in the event log.
    pub(super) fn reload(&mut self, now: Instant, r: &LoopReload) {
        let mut core = r.core.clone();
        // Divided among the loops as at start (`plan::loop_settings`).
        if self.place.count > 1 {
            core.total_max_bps = share(core.total_max_bps, self.place.count, self.place.index);
        }
        if self.trace.is_some() {
            log::warn!(
                "loop {}: the trace does not record reloads: a replay diverges from here",
                self.place.index
            );
        }
        let unix_ms = Clock::unix_ms();
        let outcome = match self.server.reload(now, core) {
            Ok(o) => o,
            Err(e) => {
                log::error!("loop {}: reload refused: {e}", self.place.index);
                self.reporter.record(
                    unix_ms,
                    "reload",
                    json!({"result": "error", "loop": self.place.index, "error": e.0}),
                );
                return;
            }
        };
        // Only when the relay serves TLS already: starting or stopping needs a restart.
        if let (Some(_), Some(new)) = (&self.tls, &r.tls) {
            self.tls = Some(new.clone());
        }
        // The core may have removed permissions (a denied peer): act on what it queued.
        self.drain(now);
        log::debug!("loop {}: reloaded: {outcome:?}", self.place.index);
        self.reporter.record(
            unix_ms,
            "reload",
            json!({
                "result": "ok",
                "loop": self.place.index,
                "static_keys_revoked": outcome.static_keys_revoked,
                "rest_keys_expiring": outcome.rest_keys_expiring,
                "permissions_removed": outcome.permissions_removed,
            }),
        );
        self.reporter.flush();
    }

    /// A reload failed before reaching the loops: loop 0 records it.
    pub(super) fn reload_failed(&mut self, why: &str) {
        if self.place.index == 0 {
            self.reporter.record(
                Clock::unix_ms(),
                "reload",
                json!({"result": "error", "error": why}),
            );
            self.reporter.flush();
        }
    }
}
