//! The TCP path: connections accepted, read into the core, written (once per batch), closed.

use super::udp::{flush_queue, send_datagram};
use super::{Listener, ListenerSocket, Runtime, READ_BUDGET};
use crate::clock::Clock;
use crate::id_hash::IdMap;
use crate::settings::ListenerSpec;
use crate::tcp::Conn;
use crate::tls::{
    Layer, TlsMode, TlsStream, HANDSHAKE_MAX_BYTES, HANDSHAKE_TIMEOUT, TLS_HANDSHAKE_RECORD,
};
use crate::token::Source;
use crate::udp_batch::Via;
use crate::write_buf::WriteError;
use mio::Interest;
use serde_json::json;
use std::io::{self, Read};
use turnpike_core::proxy_protocol::{self, ProxyParse};
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
                    let mut new = Conn::new(stream, spec.id, remote);
                    match self.first_layer(&spec) {
                        Ok(layer) => new.layer = layer,
                        Err(e) => {
                            log::warn!("cannot start a TLS session for {remote}: {e}");
                            continue;
                        }
                    }
                    if spec.tls != TlsMode::Off {
                        new.handshake_deadline = Some(self.clock.now() + HANDSHAKE_TIMEOUT);
                    }
                    self.conns.insert(conn, new);
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
        // The read buffer is lent out while the bytes go through the layers and the core.
        let mut buf = std::mem::take(&mut self.stream_buf);
        let more = self.read_conn_into(c, &mut buf);
        self.stream_buf = buf;
        more
    }

    fn read_conn_into(&mut self, c: ConnId, buf: &mut [u8]) -> bool {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(&c) else {
                return false;
            };
            match conn.stream.read(buf) {
                Ok(0) => {
                    self.drop_conn(c, "closed by the client");
                    return false;
                }
                Ok(n) => {
                    self.round_inputs += 1;
                    // A short read emptied the socket: its next bytes bring a new
                    // (edge-triggered) event, so skip the read that would say WouldBlock.
                    // Not once the peer closed: that edge has come already.
                    let drained = n < buf.len() && !conn.hup;
                    if conn.closing.is_some() {
                        // The core is done with it; discard what still arrives.
                        if drained {
                            return false;
                        }
                        continue;
                    }
                    let now = self.clock.now();
                    let data = buf.get(..n).unwrap_or_default();
                    self.stream_input(now, c, data);
                    self.drain(now);
                    if drained || !self.conns.contains_key(&c) {
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

    /// The layer a new stream of listener `spec` starts with (see [`crate::tls`]).
    pub(super) fn first_layer(&self, spec: &ListenerSpec) -> Result<Layer, rustls::Error> {
        let Some(config) = &self.tls else {
            return Ok(Layer::Plain);
        };
        Ok(match (spec.tls, spec.proxy_protocol) {
            (TlsMode::Off, _) => Layer::Plain,
            (then, true) => Layer::Proxy {
                buf: Vec::new(),
                then,
            },
            (TlsMode::Auto, false) => Layer::Detect,
            (TlsMode::On, false) => Layer::Tls(Box::new(TlsStream::new(config)?)),
        })
    }

    /// Bytes read from stream `c`, through its layer to the core.
    pub(super) fn stream_input(&mut self, now: Instant, c: ConnId, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        match &mut conn.layer {
            Layer::Plain => self.feed_core(now, c, data),
            Layer::Tls(_) => self.tls_input(now, c, data),
            Layer::Detect => {
                let Some(&first) = data.first() else {
                    return;
                };
                if first == TLS_HANDSHAKE_RECORD {
                    match self.tls.as_ref().map(TlsStream::new) {
                        Some(Ok(t)) => conn.layer = Layer::Tls(Box::new(t)),
                        _ => {
                            self.drop_conn_at(now, c, Some("cannot start a TLS session"));
                            return;
                        }
                    }
                } else {
                    conn.layer = Layer::Plain;
                    conn.handshake_deadline = None;
                }
                self.stream_input(now, c, data);
            }
            Layer::Proxy { buf, then } => {
                let then = *then;
                let mut pending = std::mem::take(buf);
                pending.extend_from_slice(data);
                match proxy_protocol::parse(&pending, self.proxy_max) {
                    Ok(ProxyParse::Incomplete) => {
                        if let Layer::Proxy { buf, .. } = &mut conn.layer {
                            *buf = pending;
                        }
                    }
                    Ok(ProxyParse::Done { consumed, .. }) => {
                        conn.layer = match then {
                            TlsMode::Auto => Layer::Detect,
                            TlsMode::Off => Layer::Plain,
                            TlsMode::On => match self.tls.as_ref().map(TlsStream::new) {
                                Some(Ok(t)) => Layer::Tls(Box::new(t)),
                                _ => {
                                    self.drop_conn_at(now, c, Some("cannot start a TLS session"));
                                    return;
                                }
                            },
                        };
                        let (head, rest) = pending.split_at(consumed.min(pending.len()));
                        // The core reads the header itself: trusted sources, client address.
                        self.feed_core(now, c, head);
                        if !rest.is_empty() {
                            self.stream_input(now, c, rest);
                        }
                    }
                    Err(_) => {
                        // Not a header: the core refuses the stream as on any PROXY listener.
                        conn.layer = Layer::Plain;
                        conn.handshake_deadline = None;
                        self.feed_core(now, c, &pending);
                    }
                }
            }
        }
    }

    /// Ciphertext read from TLS stream `c`: through its session; the plaintext to the core.
    fn tls_input(&mut self, now: Instant, c: ConnId, data: &[u8]) {
        let mut plain = std::mem::take(&mut self.plain_buf);
        let result = self.tls_input_with(now, c, data, &mut plain);
        self.plain_buf = plain;
        if let Err(why) = result {
            self.stats.tls_failed += 1;
            self.drop_conn_at(now, c, Some(&why));
        }
    }

    fn tls_input_with(
        &mut self,
        now: Instant,
        c: ConnId,
        mut data: &[u8],
        plain: &mut [u8],
    ) -> Result<(), String> {
        if let Some(Layer::Tls(t)) = self.conns.get_mut(&c).map(|conn| &mut conn.layer) {
            if t.session.is_handshaking() {
                t.handshake_bytes += data.len();
                if t.handshake_bytes > HANDSHAKE_MAX_BYTES {
                    return Err(format!(
                        "TLS: more than {HANDSHAKE_MAX_BYTES} bytes before the handshake completed"
                    ));
                }
            }
        }
        while !data.is_empty() {
            let Some(conn) = self.conns.get_mut(&c) else {
                return Ok(());
            };
            let Layer::Tls(t) = &mut conn.layer else {
                return Ok(());
            };
            let was_handshaking = t.session.is_handshaking();
            t.session
                .read_tls(&mut data)
                .map_err(|e| format!("TLS: {e}"))?;
            let state = t.session.process_new_packets();
            // Handshake messages, or the alert that tells the client why it failed.
            let wrote = t.take_records(&mut conn.out, &mut conn.stream);
            if conn.out.flush(&mut conn.stream).is_err() {
                return Err("write failed".into());
            }
            let state = state.map_err(|e| format!("TLS: {e}"))?;
            if wrote.is_err() {
                return Err("write failed".into());
            }
            if was_handshaking && !t.session.is_handshaking() {
                conn.handshake_deadline = None;
                self.stats.tls_handshakes += 1;
                self.reporter.tls_stream(c);
                log::debug!(
                    "stream {} from {}: TLS {:?} established, ALPN {}",
                    c.0,
                    conn.remote,
                    t.session.protocol_version(),
                    t.alpn()
                        .map_or("none".into(), |a| String::from_utf8_lossy(a).into_owned())
                );
            }
            let mut left = state.plaintext_bytes_to_read();
            let closed = state.peer_has_closed();
            while left > 0 {
                let Some(Layer::Tls(t)) = self.conns.get_mut(&c).map(|conn| &mut conn.layer) else {
                    return Ok(());
                };
                let k = match t.session.reader().read(plain) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS: {e}")),
                };
                left = left.saturating_sub(k);
                self.feed_core(now, c, plain.get(..k).unwrap_or_default());
            }
            if closed {
                self.drop_conn_at(now, c, Some("closed by the client (TLS close_notify)"));
                return Ok(());
            }
        }
        Ok(())
    }

    /// Bytes of stream `c` (plaintext) to the core; relayed payloads leave with the batch.
    fn feed_core(&mut self, now: Instant, c: ConnId, data: &[u8]) {
        let (tx, rx) = (&mut self.tx, &self.rx);
        let (listeners, relays) = (&self.listeners, &self.relays);
        let stats = &mut self.stats;
        let last_error = &mut self.last_send_error;
        let trace = &mut self.trace;
        if let Some(t) = trace {
            t.stream_data(now, c, data);
        }
        // The frames of one read leave together when the batch ends (GSO runs when they
        // are equal-sized, as media often is).
        self.server
            .handle_stream_data(now, c, data, &mut |relay, peer, payload| {
                if let Some(t) = trace {
                    t.to_peer(relay, peer, payload.len());
                }
                let via = Via::Relay(relay);
                if !tx.push_copy(via, peer, payload) {
                    flush_queue(tx, rx, listeners, relays, stats, last_error);
                    if !tx.push_copy(via, peer, payload) {
                        // Larger than the whole arena: cannot happen for a datagram, but
                        // never drop silently.
                        if let Some(sock) = relays.get(&relay) {
                            send_datagram(sock, payload, peer, stats, last_error);
                        }
                    }
                }
            });
    }

    /// Closes the streams whose TLS handshake is not done in time (housekeeping).
    pub(super) fn sweep_handshakes(&mut self, now: Instant) {
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing.is_none() && c.handshake_deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for c in late {
            self.stats.tls_failed += 1;
            let why = format!(
                "TLS handshake not done within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            self.drop_conn_at(now, c, Some(&why));
        }
        self.drain(now);
    }

    /// Stream `c` is writable again: send what waits; finish a close the core asked for.
    pub(super) fn flush_conn(&mut self, c: ConnId) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        if conn.queued && conn.closing.is_none() {
            // The round queued bytes on it: they leave with the other streams' at its end
            // (a readable event reports writable too: this spares a write per event).
            return;
        }
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
        if self.dirty.is_empty() || self.write_streams() {
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
            if conn.is_tls() {
                self.reporter.tls_stream_closed(c);
            }
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
    c.send(data, false).err()
}
