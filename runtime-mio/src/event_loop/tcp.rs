//! The TCP path: connections accepted, read into the core, written (once per batch), closed.

use super::udp::{flush_queue, send_datagram};
use super::{Listener, ListenerSocket, Runtime, READ_BUDGET};
use crate::clock::Clock;
use crate::id_hash::IdMap;
use crate::tcp::Conn;
use crate::token::Source;
use crate::udp_batch::Via;
use crate::write_buf::WriteError;
use mio::Interest;
use serde_json::json;
use std::io::{self, Read};
use turnpike_core::{ConnId, Instant};

impl Runtime {
    /// Accepts connections on TCP listener `n`. True if its budget ran out first.
    pub(super) fn accept(&mut self, n: usize) -> bool {
        for _ in 0..READ_BUDGET {
            let Some(Listener {
                spec,
                socket: ListenerSocket::Tcp(l),
            }) = self.listeners.get(n)
            else {
                return false;
            };
            let spec = *spec;
            match l.accept() {
                Ok((mut stream, remote)) => {
                    self.stats.streams_accepted += 1;
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(spec.addr);
                    let conn = ConnId(self.next_conn);
                    self.next_conn += 1;
                    let token = Source::Conn(conn).token();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("cannot register a connection from {remote}: {e}");
                        continue;
                    }
                    self.conns.insert(conn, Conn::new(stream, spec.id, remote));
                    let now = self.clock.now();
                    if let Some(t) = &mut self.trace {
                        t.stream_open(now, conn, spec.id, local, remote);
                    }
                    self.server
                        .handle_stream_open(now, conn, spec.id, local, remote);
                    self.drain(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Typically EMFILE: the connection stays queued; retry on the next tick
                    // rather than spin.
                    self.accept_blocked = true;
                    let msg = format!("tcp listener {}: accept failed: {e}", spec.addr);
                    self.reporter.relay_warning(
                        Clock::unix_ms(),
                        "accept_failed",
                        &msg,
                        json!({"error": e.to_string()}),
                    );
                    return false;
                }
            }
        }
        true
    }

    /// Reads from stream `c` into the core. True if its budget ran out first.
    pub(super) fn read_conn(&mut self, c: ConnId) -> bool {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(&c) else {
                return false;
            };
            match conn.stream.read(&mut self.stream_buf) {
                Ok(0) => {
                    self.drop_conn(c, "closed by the client");
                    return false;
                }
                Ok(n) => {
                    self.round_inputs += 1;
                    // A short read emptied the socket: its next bytes bring a new
                    // (edge-triggered) event, so skip the read that would say WouldBlock.
                    // Not once the peer closed: that edge has come already.
                    let drained = n < self.stream_buf.len() && !conn.hup;
                    if conn.closing.is_some() {
                        // The core is done with it; discard what still arrives.
                        if drained {
                            return false;
                        }
                        continue;
                    }
                    let now = self.clock.now();
                    let data = self.stream_buf.get(..n).unwrap_or_default();
                    let (tx, rx) = (&mut self.tx, &self.rx);
                    let (listeners, relays) = (&self.listeners, &self.relays);
                    let stats = &mut self.stats;
                    let last_error = &mut self.last_send_error;
                    let trace = &mut self.trace;
                    if let Some(t) = trace {
                        t.stream_data(now, c, data);
                    }
                    // The frames of one read leave together when the batch ends (GSO runs
                    // when they are equal-sized, as media often is).
                    self.server
                        .handle_stream_data(now, c, data, &mut |relay, peer, payload| {
                            if let Some(t) = trace {
                                t.to_peer(relay, peer, payload.len());
                            }
                            let via = Via::Relay(relay);
                            if !tx.push_copy(via, peer, payload) {
                                flush_queue(tx, rx, listeners, relays, stats, last_error);
                                if !tx.push_copy(via, peer, payload) {
                                    // Larger than the whole arena: cannot happen for a
                                    // datagram, but never drop silently.
                                    if let Some(sock) = relays.get(&relay) {
                                        send_datagram(sock, payload, peer, stats, last_error);
                                    }
                                }
                            }
                        });
                    self.drain(now);
                    if drained {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_conn(c, &format!("read failed: {e}"));
                    return false;
                }
            }
        }
        true
    }

    /// Stream `c` is writable again: send what waits; finish a close the core asked for.
    pub(super) fn flush_conn(&mut self, c: ConnId) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        if let Err(e) = conn.out.flush(&mut conn.stream) {
            self.drop_conn(c, &format!("write failed: {e}"));
            return;
        }
        if conn.closing.is_some() && conn.out.is_empty() {
            self.drop_conn(c, "closed by the relay");
        }
    }

    /// Writes what the batch queued on streams, once per stream.
    pub(super) fn flush_streams(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for c in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&c) else {
                continue;
            };
            conn.queued = false;
            if let Err(e) = conn.out.flush(&mut conn.stream) {
                let now = self.clock.now();
                self.stream_write_failed(now, c, WriteError::Io(e));
            }
        }
        // Keep the list's memory; anything queued meanwhile (nothing, today) stays.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    /// A write to stream `conn` failed: close it and tell the core.
    pub(super) fn stream_write_failed(&mut self, now: Instant, conn: ConnId, problem: WriteError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let remote = c.remote;
        match problem {
            WriteError::Overflow => {
                self.stats.slow_readers_closed += 1;
                let msg = format!(
                    "stream {} from {remote} closed: it does not read what it is sent ({} slow readers closed so far)",
                    conn.0, self.stats.slow_readers_closed
                );
                let rec = json!({"conn": conn.0, "remote": remote.to_string(), "total": self.stats.slow_readers_closed});
                self.reporter.remote(
                    Clock::unix_ms(),
                    remote.ip(),
                    "slow_reader",
                    log::Level::Warn,
                    &msg,
                    rec,
                );
                self.drop_conn_at(now, conn, None);
            }
            WriteError::Io(e) => self.drop_conn_at(now, conn, Some(&format!("write failed: {e}"))),
        }
    }

    /// Closes stream `c` now, telling the core unless it already forgot it.
    pub(super) fn drop_conn(&mut self, c: ConnId, why: &str) {
        let now = self.clock.now();
        self.drop_conn_at(now, c, Some(why));
        self.drain(now);
    }

    pub(super) fn drop_conn_at(&mut self, now: Instant, c: ConnId, why: Option<&str>) {
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        let core_knows = conn.closing.is_none();
        if let Some(why) = why {
            log::debug!("stream {} from {}: {why}", c.0, conn.remote);
        }
        self.close_conn(c);
        if core_knows {
            if let Some(t) = &mut self.trace {
                t.stream_closed(now, c);
            }
            self.server.handle_stream_closed(now, c);
        }
    }

    /// Forgets stream `c` and closes its socket.
    pub(super) fn close_conn(&mut self, c: ConnId) {
        if let Some(mut conn) = self.conns.remove(&c) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Writes `data` to stream `conn`; on failure, returns what went wrong (the caller closes
/// the stream).
pub(super) fn write_conn(
    conns: &mut IdMap<ConnId, Conn>,
    conn: ConnId,
    data: &[u8],
) -> Option<WriteError> {
    let c = conns.get_mut(&conn)?;
    c.out.write(&mut c.stream, data).err()
}
