//! Once a second and at the end: the wall clock, stale streams, send failures and caps
//! logged, accept retried; shutdown.

use super::draining::{STOP_DRAINED, STOP_DRAIN_TIMEOUT};
use super::{ListenerSocket, Runtime};
use crate::clock::Clock;
use crate::token::Source;
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use turnpike_core::{ConnId, Instant};

impl Runtime {
    /// Once a second: the wall clock, the event log, streams slow to close, retries.
    pub(super) fn tick(&mut self, now: Instant) {
        let unix_ms = Clock::unix_ms();
        for _ in 0..self.terms.unseen() {
            self.on_signal(SIGTERM);
        }
        if let Some(t) = &mut self.trace {
            t.wall_clock(now, unix_ms);
            t.flush();
        }
        self.server.set_wall_clock(now, unix_ms);
        let stale: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for c in stale {
            self.close_conn(c);
        }
        self.sweep_handshakes(now);
        let failed = self.stats.send_errors + self.stats.send_would_block;
        if failed > self.reported_send_errors {
            let msg = format!(
                "{} datagrams could not be sent so far ({} with full buffers; last error: {:?})",
                failed, self.stats.send_would_block, self.last_send_error
            );
            let rec = json!({"send_errors": self.stats.send_errors, "send_would_block": self.stats.send_would_block});
            self.reporter
                .relay_warning(Clock::unix_ms(), "send_failed", &msg, rec);
            self.reported_send_errors = failed;
        }
        self.log_caps(now, unix_ms);
        if std::mem::take(&mut self.accept_blocked) {
            for n in 0..self.listeners.len() {
                if matches!(
                    self.listeners.get(n).map(|l| &l.socket),
                    Some(ListenerSocket::Tcp(_))
                ) {
                    self.ready(Source::Listener(n as u32));
                }
            }
        }
        self.sweep_dynamic_ports(now, unix_ms / 1000);
        self.check_drain(now);
        #[cfg(target_os = "linux")]
        if let Some(p) = &mut self.packing {
            p.tick();
        }
        self.reporter.flush();
    }

    /// Logs, at most once per window each, that a cap dropped or refused something since
    /// the last line (the counters are in `/metrics` too).
    pub(super) fn log_caps(&mut self, now: Instant, unix_ms: u64) {
        let st = self.server.stats(now);
        let caps = [
            ("rate_limited", st.dropped.rate_limited),
            ("bandwidth_dropped", st.dropped.bandwidth),
            ("queue_full", st.dropped.queue_full),
            ("streams_over_source_cap", st.streams_over_source_cap),
            ("insufficient_capacity", st.insufficient_capacity),
        ];
        for (kind, value) in caps {
            let Some(line) = self.caps.observe(unix_ms, kind, value) else {
                continue;
            };
            let (n, s) = (line.count, line.seconds);
            let msg = match kind {
                "rate_limited" => format!(
                    "{n} answers to unauthenticated UDP requests held back by anti-amplification (unauth_amplification_factor, unauth_source_bytes_per_s, unauth_node_bytes_per_s) in the last {s} s"
                ),
                "bandwidth_dropped" => format!(
                    "{n} relayed packets dropped by the bandwidth cap (max_bps or total_max_bps) in the last {s} s"
                ),
                "queue_full" => {
                    format!("{n} outputs dropped on a full output queue in the last {s} s")
                }
                "streams_over_source_cap" => format!(
                    "{n} streams refused over the per-source cap (max_streams_per_source) in the last {s} s"
                ),
                _ => format!(
                    "{n} requests refused with 508 by a capacity cap (permissions, channels, allocations) in the last {s} s"
                ),
            };
            log::warn!("{msg}");
            self.reporter.record(
                unix_ms,
                "cap_reached",
                json!({"cap": kind, "count": n, "seconds": s}),
            );
        }
    }

    /// Stops accepting, records what is still open, flushes.
    pub(super) fn shutdown(&mut self, sig: i32) {
        self.end_batch();
        let name = match sig {
            SIGTERM => "SIGTERM",
            SIGINT => "SIGINT",
            STOP_DRAINED => "drained",
            STOP_DRAIN_TIMEOUT => "drain timeout",
            // Told to by another thread: another loop ended.
            _ => "stop",
        };
        for l in &mut self.listeners {
            l.socket = ListenerSocket::Closed;
        }
        let now = self.clock.now();
        let unix_ms = Clock::unix_ms();
        let open = self.server.allocations(now);
        let which = if self.place.count > 1 {
            format!(" (loop {})", self.place.index)
        } else {
            String::new()
        };
        log::info!(
            "{name}{which}: stopping with {} allocations and {} connections open; {} slow readers were closed",
            open.len(),
            self.conns.len(),
            self.stats.slow_readers_closed
        );
        for a in &open {
            let t = a.traffic;
            let body = json!({
                "id": a.id.0,
                "client": a.client.addr.to_string(),
                "transport": a.client.transport.as_str(),
                "username": a.username,
                "relayed": a.relayed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "reason": "shutdown",
                "age_ms": a.age_ms,
                "to_peer_packets": t.to_peer_packets,
                "to_peer_bytes": t.to_peer_bytes,
                "from_peer_packets": t.from_peer_packets,
                "from_peer_bytes": t.from_peer_bytes,
                "dropped_packets": t.dropped_packets,
            });
            self.reporter.record(unix_ms, "allocation_deleted", body);
        }
        // One last try to deliver what waits, without waiting.
        for conn in self.conns.values_mut() {
            let _ = conn.out.flush(&mut conn.stream);
        }
        self.reporter.record(
            unix_ms,
            "stop",
            json!({"signal": name, "loop": self.place.index, "allocations": open.len(), "connections": self.conns.len()}),
        );
        self.reporter.flush();
        if let Some(t) = &mut self.trace {
            t.finish();
        }
    }
}
