//! The other loops of the node: answering their questions, and their answers to ours
//! (see [`crate::node`] for who decides what).

use super::allocate::Stage;
use super::{Server, Timer};
use crate::ids::ConnId;
use crate::node::{LoopId, LoopMsg, Want};
use crate::time::Instant;

/// Most ports lent in one answer.
const LEND_MAX_PORTS: usize = 64;

impl Server {
    /// Handles a message from loop `from`.
    pub(super) fn loop_message(&mut self, now: Instant, from: LoopId, msg: LoopMsg) {
        self.stats.loop_messages_received += 1;
        match msg {
            LoopMsg::RedeemToken { req, token } => {
                let port = self.hand_over_reservation(token);
                self.send_loop(from, LoopMsg::TokenRedeemed { req, port });
            }
            LoopMsg::TokenRedeemed { req, port } => self.token_port_arrived(now, req, port),
            LoopMsg::UserAcquire { req, username } => {
                let granted = self.acquire_user(&username);
                self.send_loop(
                    from,
                    LoopMsg::UserGranted {
                        req,
                        username,
                        granted,
                    },
                );
            }
            LoopMsg::UserGranted {
                req,
                username,
                granted,
            } => self.user_answer(now, from, req, username, granted),
            LoopMsg::UserRelease { username } => self.release_user(&username),
            LoopMsg::StreamAcquire { req, source } => {
                let granted = self.acquire_source(source);
                self.send_loop(
                    from,
                    LoopMsg::StreamGranted {
                        req,
                        source,
                        granted,
                    },
                );
            }
            LoopMsg::StreamGranted {
                req,
                source,
                granted,
            } => self.source_answer(now, from, ConnId(req), source, granted),
            LoopMsg::StreamRelease { source } => self.release_source(source),
            LoopMsg::Borrow { req, want } => {
                let answer = self.lend(req, want);
                self.send_loop(from, answer);
            }
            LoopMsg::QuotaDebt { credits, hops } => self.collect_debt(credits, hops),
            LoopMsg::Lend {
                req,
                credits,
                family,
                ports,
            } => {
                self.receive_credits(credits);
                if let Some(pool) = self
                    .pools
                    .get_mut(usize::from(family))
                    .and_then(Option::as_mut)
                {
                    for port in ports {
                        pool.adopt(port, now);
                    }
                }
                let waiting = self
                    .pending
                    .get(&req)
                    .is_some_and(|p| matches!(p.stage, Stage::Credit | Stage::Ports));
                if waiting {
                    self.resume(now, req);
                }
            }
        }
    }

    /// Gives the port reserved under `token` to the loop that redeems it (and back the
    /// counts the reservation held: the redeeming Allocate takes its own).
    fn hand_over_reservation(&mut self, token: [u8; 8]) -> Option<u16> {
        let r = self.reservations.remove(&token)?;
        self.timers.remove(&(r.expires, Timer::Reservation(token)));
        self.give_back_user(&r.username);
        let pool = self.pools[0].as_mut()?;
        pool.give_reserved(r.port).then_some(r.port)
    }

    /// The home loop answered whether a pending Allocate's user may have one more.
    fn user_answer(
        &mut self,
        now: Instant,
        home: LoopId,
        req: u64,
        username: String,
        granted: bool,
    ) {
        let waiting = self
            .pending
            .get(&req)
            .is_some_and(|p| p.stage == Stage::User);
        match (waiting, granted) {
            (true, true) => {
                if let Some(p) = self.pending.get_mut(&req) {
                    p.took_user_count();
                }
                self.resume(now, req);
            }
            (true, false) => self.end_pending(now, req, Some(486)),
            // The request is gone: give the count back.
            (false, true) => self.send_loop(home, LoopMsg::UserRelease { username }),
            (false, false) => {}
        }
    }

    /// What this loop can lend for `want`: half of its spare credits, or free ports.
    fn lend(&mut self, req: u64, want: Want) -> LoopMsg {
        match want {
            Want::Credits => {
                let spare = self.credits.saturating_sub(self.credits_used());
                let give = spare.div_ceil(2);
                self.credits -= give;
                LoopMsg::Lend {
                    req,
                    credits: give,
                    family: 0,
                    ports: Vec::new(),
                }
            }
            Want::Ports { family, kind } => {
                let ports = self
                    .pools
                    .get_mut(usize::from(family))
                    .and_then(Option::as_mut)
                    .map(|pool| pool.lend(kind, LEND_MAX_PORTS))
                    .unwrap_or_default();
                LoopMsg::Lend {
                    req,
                    credits: 0,
                    family,
                    ports,
                }
            }
        }
    }
}
