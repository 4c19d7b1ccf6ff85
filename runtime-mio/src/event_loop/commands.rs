//! What other threads ask of a loop over its inbox (the waker fired).

use super::Runtime;
use crate::link::Command;

impl Runtime {
    /// This loop's counters, with its index.
    pub(super) fn own_stats(&self) -> crate::api::metrics::LoopStats {
        crate::api::metrics::LoopStats {
            index: self.place.index,
            core: self.server.stats(self.clock.now()),
            runtime: crate::api::Host::runtime_metrics(self),
        }
    }

    /// Serves what other threads asked (the waker fired).
    pub(super) fn serve_commands(&mut self) {
        while let Some(cmd) = self.inbox.as_ref().and_then(|rx| rx.try_recv().ok()) {
            let now = self.clock.now();
            match cmd {
                Command::Stats(reply) => {
                    let _ = reply.try_send(self.own_stats());
                }
                Command::Allocations(reply) => {
                    let _ = reply.try_send(self.server.allocations(now));
                }
                Command::Delete(id, reply) => {
                    let found = crate::api::Host::delete_allocation(self, id);
                    self.drain(now);
                    let _ = reply.try_send(found);
                }
                Command::Stop => {
                    self.stop.get_or_insert(0);
                }
            }
        }
    }
}
