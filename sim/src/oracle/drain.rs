//! What a draining node may still do, as the shadow sees it (the rest of
//! `no_call_cut_by_drain` is judged by [`crate::fleet`]): an allocation it creates must
//! come from an Allocate carrying a RESERVATION-TOKEN (the second port of an EVEN-PORT
//! pair whose first it granted before the drain: a call already under way) or from one
//! that arrived before the drain began; and such a token's Allocate is neither
//! redirected nor refused while the token is live (RFC 8656 §7.2: the port is the
//! client's until the token expires).

use super::shadow::{AllocKind, Check, Key, Shadow, TOKEN_LIFETIME};
use crate::fleet::Made;
use core::time::Duration;
use turnpike_core::stun::{attr, Class, Message, Method};
use turnpike_core::Instant;

impl Shadow {
    /// The Allocate of `key` the core is answering (the latest of this step, or one
    /// waiting for another loop), as the fleet oracle judges an allocation created
    /// during a drain.
    pub(super) fn allocate_behind(&self, key: Key) -> Made {
        let of_key = |r: &&super::shadow::StepRequest| r.key == key && r.method == Method::ALLOCATE;
        let req = self
            .step_requests
            .iter()
            .rev()
            .find(of_key)
            .or_else(|| self.waiting.iter().map(|(_, r)| r).rev().find(of_key));
        match req.map(|r| (r.kind, r.arrived)) {
            Some((AllocKind::Token(_), _)) => Made::Token,
            Some((_, arrived)) => Made::ArrivedAt(arrived),
            None => Made::Unknown,
        }
    }

    /// A draining node answered an Allocate that arrived at `arrived`, asking `kind`:
    /// a live token of this node's, redeemed while no relay bind failed, is not sent
    /// away (300) nor refused (508).
    pub(super) fn drain_answer(
        &self,
        msg: &Message<'_>,
        arrived: Instant,
        kind: AllocKind,
    ) -> Check {
        let AllocKind::Token(t) = kind else {
            return Ok(());
        };
        if !self.draining || msg.class() == Class::Success {
            return Ok(());
        }
        let code = msg
            .get(attr::ERROR_CODE)
            .and_then(|v| attr::decode_error_code(v).ok())
            .map(|(c, _)| c);
        if !matches!(code, Some(300) | Some(508)) {
            return Ok(());
        }
        let Some(ts) = self.tokens.get(&t) else {
            return Ok(());
        };
        let live = !ts.redeemed && arrived + Duration::from_secs(1) < ts.issued + TOKEN_LIFETIME;
        let binds_ok = self.last_bind_failure.is_none_or(|f| f < arrived);
        if live && binds_ok {
            return Err((
                "no_call_cut_by_drain",
                format!(
                    "{code:?} to an Allocate with the live token {t:02x?} (issued {:?} before it arrived) while draining",
                    arrived.since(ts.issued)
                ),
            ));
        }
        Ok(())
    }
}
