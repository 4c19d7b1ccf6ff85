//! Acting on what the core says: relayed packets forwarded, outputs drained, relay
//! sockets bound.

use super::tcp::write_conn;
use super::udp::send_datagram;
use super::{Listener, ListenerSocket, Runtime, CLOSE_FLUSH};
use crate::clock::Clock;
use crate::link::Command;
use crate::sockets;
use crate::tls::Layer;
use crate::token::Source;
use crate::udp_batch::Via;
use mio::Interest;
use serde_json::json;
use std::net::SocketAddr;
use turnpike_core::event::Output;
use turnpike_core::node::{LoopId, LoopMsg};
use turnpike_core::{Forward, Instant, RelayId};

impl Runtime {
    /// Sends a relayed packet where the core says: a slice of receive slot `slot`.
    pub(super) fn forward(&mut self, now: Instant, f: Forward, slot: usize) {
        if let Some(t) = &mut self.trace {
            t.forward(&f);
        }
        match f {
            Forward::ToPeer { relay, peer, range } => {
                self.queue_send(Via::Relay(relay), peer, slot, range);
            }
            Forward::ToClient {
                listener,
                client,
                range,
            } => self.queue_send(Via::Listener(listener.0), client, slot, range),
            Forward::ToStream { conn, range } => {
                let Some(data) = self.rx.slot_mut(slot).and_then(|b| b.get(range)) else {
                    return;
                };
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                // Appended now, written once per stream when the batch ends.
                match c.send(data, true) {
                    Ok(()) => {
                        if !c.queued && !c.out.is_empty() {
                            c.queued = true;
                            self.dirty.push(conn);
                        }
                    }
                    Err(problem) => self.stream_write_failed(now, conn, problem),
                }
            }
        }
    }

    /// Drains the core's outputs and acts on each.
    pub(super) fn drain(&mut self, now: Instant) {
        while let Some(out) = self.server.poll_output() {
            if let Some(t) = &mut self.trace {
                t.output(&out);
            }
            match out {
                Output::Transmit { listener, to, data } => {
                    // Keep the order of what this batch already queued.
                    self.flush_sends();
                    if let Some(Listener {
                        socket: ListenerSocket::Udp(sock),
                        ..
                    }) = self.listeners.get(listener.0 as usize)
                    {
                        send_datagram(sock, &data, to, &mut self.stats, &mut self.last_send_error);
                    }
                }
                Output::StreamWrite { conn, data } => {
                    if let Some(problem) = write_conn(&mut self.conns, conn, &data) {
                        self.stream_write_failed(now, conn, problem);
                    }
                }
                Output::CloseStream { conn, reason } => {
                    log::debug!("stream {} closed by the core: {}", conn.0, reason.as_str());
                    let Some(c) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    if let Layer::Tls(t) = &mut c.layer {
                        t.close(&mut c.out, &mut c.stream);
                        let _ = c.out.flush(&mut c.stream);
                    }
                    if c.out.is_empty() {
                        self.close_conn(conn);
                    } else {
                        c.closing = Some(now + CLOSE_FLUSH);
                    }
                }
                Output::BindRelay { relay, addr } => self.bind_relay(now, relay, addr),
                Output::CloseRelay { relay } => {
                    // What the batch queued for it still leaves.
                    self.flush_sends();
                    // close(2) takes the socket out of the epoll set (its descriptor is
                    // never duplicated), so no EPOLL_CTL_DEL first: one syscall fewer
                    // per allocation.
                    drop(self.relays.remove(&relay));
                }
                Output::ToLoop { to, msg } => self.send_to_loop(to, msg),
                Output::Event(ev) => {
                    if let Some(hook) = &self.webhook {
                        hook.event(Clock::unix_ms(), &ev);
                    }
                    self.reporter.event(Clock::unix_ms(), &ev)
                }
            }
        }
        // The events of TLS streams closed so far are out: forget those streams.
        self.reporter.forget_closed();
        if let Some(t) = &mut self.trace {
            t.end_drain();
        }
    }

    /// Carries a message of this loop's core to loop `to`'s inbox and wakes it. The channel
    /// is unbounded, so a message is never dropped while its loop runs; a loop that is gone
    /// (stopping) is logged once.
    pub(super) fn send_to_loop(&mut self, to: LoopId, msg: LoopMsg) {
        let from = LoopId(u16::try_from(self.place.index).unwrap_or(u16::MAX));
        let sent = self
            .loops
            .get(usize::from(to.0))
            .is_some_and(|h| h.send(Command::Loop { from, msg }));
        if !sent && !std::mem::replace(&mut self.loop_gone_logged, true) {
            log::warn!(
                "loop {}: a message for loop {} was lost: that loop is gone (logged once)",
                from.0,
                to.0
            );
        }
    }

    /// Opens relay socket `relay` on `addr` and tells the core how it went.
    pub(super) fn bind_relay(&mut self, now: Instant, relay: RelayId, addr: SocketAddr) {
        let result = match sockets::relay_socket(addr, self.buffers) {
            Ok(mut sock) => match self.poll.registry().register(
                &mut sock,
                Source::Relay(relay).token(),
                Interest::READABLE,
            ) {
                Ok(()) => {
                    self.relays.insert(relay, sock);
                    Ok(())
                }
                Err(e) => Err((turnpike_core::server::BindError::Other, e)),
            },
            Err(err) => Err(err),
        };
        let result = result.map_err(|(kind, e)| {
            self.stats.relay_bind_failures += 1;
            if kind != turnpike_core::server::BindError::AddrInUse {
                let msg = format!("cannot bind relay socket {addr}: {e}");
                self.reporter.relay_warning(
                    Clock::unix_ms(),
                    "relay_bind_failed",
                    &msg,
                    json!({"addr": addr.to_string(), "error": e.to_string()}),
                );
            } else {
                log::debug!("relay port {addr} in use by someone else");
            }
            kind
        });
        if let Some(t) = &mut self.trace {
            t.relay_bound(now, relay, result);
        }
        self.server.handle_relay_bound(now, relay, result);
    }
}
