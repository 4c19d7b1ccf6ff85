//! What other threads ask of a loop over its inbox (the waker fired). Answers go back
//! with `try_send` on the reply channel the command brought: a loop never waits.

use super::Runtime;
use crate::api::metrics::{LoopStats, RuntimeMetrics};
use crate::link::Command;

impl Runtime {
    /// This loop's counters, with its index.
    pub(super) fn own_stats(&self) -> LoopStats {
        let s = self.stats;
        LoopStats {
            index: self.place.index,
            core: self.server.stats(self.clock.now()),
            runtime: RuntimeMetrics {
                loop_lag_s: s.loop_lag_us as f64 / 1e6,
                loop_lag_max_s: s.loop_lag_max_us as f64 / 1e6,
                slow_readers_closed: s.slow_readers_closed,
                send_would_block: s.send_would_block,
                send_errors: s.send_errors,
                recv_truncated: s.recv_truncated,
                relay_bind_failures: s.relay_bind_failures,
                dynamic_ports: self.dynamic.len() as u64,
                loop_threads: self.loop_threads(),
                io_uring_udp_receive: u64::from(self.rx.uring()),
                io_uring_udp_send: u64::from(self.tx.uring()),
                io_uring_streams: u64::from(self.streams.on()),
                ..Default::default()
            },
        }
    }

    /// Threads the node's loops run on now (0: packing is off).
    fn loop_threads(&self) -> u64 {
        #[cfg(target_os = "linux")]
        if let Some(p) = &self.packing {
            return p.threads_now() as u64;
        }
        0
    }

    /// Serves what other threads asked (the waker fired), then acts on what the core
    /// queued meanwhile.
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
                    if let Some(t) = &mut self.trace {
                        t.delete_allocation(now, id);
                    }
                    let found = self.server.delete_allocation(now, id);
                    self.drain(now);
                    let _ = reply.try_send(found);
                }
                Command::Loop { from, msg } => {
                    if let Some(t) = &mut self.trace {
                        t.loop_message(now, from, &msg);
                    }
                    self.server.handle_loop_message(now, from, msg);
                    // As after any input: act on what the core says at once.
                    self.drain(now);
                }
                Command::DynamicPort(port) => self.serve_dynamic_port(now, port),
                Command::Reload(r) => self.reload(now, &r),
                Command::ReloadFailed(why) => self.reload_failed(&why),
                Command::Stop => {
                    self.stop.get_or_insert(0);
                }
                Command::Hosting => self.take_hosted(),
                Command::Drain => self.begin_drain(now, "api"),
            }
        }
    }
}
