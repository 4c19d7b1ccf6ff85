//! The node-wide checks of an Allocate's answer (DESIGN.md, "Quotas hold for the node,
//! not per loop"): RESERVATION-TOKENs handed out and redeemed
//! (`reservation_redeemed_anywhere`), and no 508 while some loop had a free port
//! (`no_508_with_free_port`).

use super::shadow::{AllocKind, Check, Shadow, TokenShadow, TOKEN_LIFETIME};
use core::time::Duration;
use turnpike_core::stun::{attr, Class, Message};
use turnpike_core::Instant;

impl Shadow {
    /// The node-level checks of an Allocate's answer: tokens handed out and redeemed, and
    /// no 508 while the node could have served it.
    pub(super) fn allocate_answer(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        arrived: Instant,
        kind: AllocKind,
    ) -> Check {
        if msg.class() == Class::Success {
            if let Some(t) = msg
                .get(attr::RESERVATION_TOKEN)
                .and_then(|v| attr::decode_reservation_token(v).ok())
            {
                self.tokens.entry(t).or_insert(TokenShadow {
                    issued: now,
                    redeemed: false,
                });
            }
            if let AllocKind::Token(t) = kind {
                if let Some(ts) = self.tokens.get_mut(&t) {
                    ts.redeemed = true;
                }
            }
            return Ok(());
        }
        let code = msg
            .get(attr::ERROR_CODE)
            .and_then(|v| attr::decode_error_code(v).ok())
            .map(|(c, _)| c);
        if code != Some(508) || self.draining {
            return Ok(());
        }
        let since = |t: Option<Instant>| t.is_some_and(|t| t <= arrived);
        let room = since(self.room_since);
        let binds_ok = self.last_bind_failure.is_none_or(|f| f < arrived);
        match kind {
            AllocKind::Token(t) => {
                let live = self.tokens.get(&t).is_some_and(|ts| {
                    !ts.redeemed && arrived + Duration::from_secs(1) < ts.issued + TOKEN_LIFETIME
                });
                if live && room && binds_ok {
                    return Err((
                        "reservation_redeemed_anywhere",
                        format!(
                            "508 to an Allocate with token {t:02x?}, issued {:?} before it arrived and not redeemed",
                            arrived.since(self.tokens[&t].issued)
                        ),
                    ));
                }
            }
            AllocKind::Plain if room && binds_ok => {
                let free: Vec<usize> = (0..self.free_since.len())
                    .filter(|&l| since(self.free_since[l]))
                    .collect();
                if !free.is_empty() {
                    return Err((
                        "no_508_with_free_port",
                        format!(
                            "508 to an Allocate that arrived {:?} ago while loops {free:?} had free ports all along (and the node room under total_quota {}, no failed bind)",
                            now.since(arrived),
                            self.cfg.total_quota
                        ),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
