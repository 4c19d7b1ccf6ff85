//! The UDP path: datagrams read in batches from listeners and relay sockets, fed to the
//! core, and the sends they cause queued until the batch ends.

use super::{Listener, ListenerSocket, Runtime, RuntimeStats, UdpSource, READ_BUDGET};
use crate::id_hash::IdMap;
use crate::udp_batch::{RecvBatch, SendQueue, Tally, Via, RECV_SLOTS};
use mio::net::UdpSocket;
use std::io;
use std::net::SocketAddr;
use turnpike_core::{Instant, RelayId, HEADROOM};

impl Runtime {
    /// Reads datagrams from a UDP listener or a relay socket, a batch of slots per system
    /// call, until the socket's queue is empty. True if its budget ran out first.
    ///
    /// A batch that comes back smaller than asked emptied the queue: the socket is not read
    /// again until the next (edge-triggered) readiness event, which saves the call that
    /// would only say `WouldBlock`.
    pub(super) fn read_datagrams(&mut self, src: UdpSource) -> bool {
        self.read_datagrams_within(src, READ_BUDGET)
    }

    /// [`Runtime::read_datagrams`] with `budget` reads left of the socket's turn.
    pub(super) fn read_datagrams_within(&mut self, src: UdpSource, mut budget: usize) -> bool {
        while budget > 0 {
            if self.rx.free() == 0 {
                self.end_batch();
            }
            let Some(sock) = udp_socket(&self.listeners, &self.relays, src) else {
                return false;
            };
            let want = budget.min(RECV_SLOTS).min(self.rx.free());
            match self.rx.recv(sock, want) {
                Ok(slots) => {
                    let got = slots.len();
                    self.round_inputs += got;
                    // One clock reading per batch.
                    let now = self.clock.now();
                    for slot in slots {
                        self.datagram_in(now, src, slot);
                    }
                    budget = budget.saturating_sub(got);
                    if got < want {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Not worth a spin: wait for the next readiness event.
                    log::debug!("{src:?}: receive failed: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// The socket of `src`, if it is (still) open.
    pub(super) fn udp_socket(&self, src: UdpSource) -> Option<&UdpSocket> {
        udp_socket(&self.listeners, &self.relays, src)
    }

    /// The end of a batch: what it queued is sent, and its receive slots are free again.
    pub(super) fn end_batch(&mut self) {
        self.flush_sends();
        self.flush_streams();
        self.rx.reset();
    }

    /// Sends the queued datagrams, each from the socket its [`Via`] names now (a relay
    /// closed since is skipped).
    pub(super) fn flush_sends(&mut self) {
        flush_queue(
            &mut self.tx,
            &self.rx,
            &self.listeners,
            &self.relays,
            &mut self.stats,
            &mut self.last_send_error,
        );
    }

    /// Queues `range` of receive slot `slot` to leave from `via` to `to` when the batch
    /// ends.
    pub(super) fn queue_send(
        &mut self,
        via: Via,
        to: SocketAddr,
        slot: usize,
        range: core::ops::Range<usize>,
    ) {
        let base = RecvBatch::slot_start(slot);
        let range = base + range.start..base + range.end;
        if !self.tx.push_received(via, to, range.clone()) {
            self.flush_sends();
            self.tx.push_received(via, to, range);
        }
    }

    /// Feeds the datagram in receive slot `slot` to the core (recorded first when
    /// tracing), then acts on what it says.
    pub(super) fn datagram_in(&mut self, now: Instant, src: UdpSource, slot: usize) {
        let Some(got) = self.rx.received(slot) else {
            return;
        };
        if got.truncated {
            self.stats.recv_truncated += 1;
            return;
        }
        let (from, len) = (got.from, got.len);
        let Some(buf) = self.rx.slot_mut(slot) else {
            return;
        };
        let fwd = match src {
            UdpSource::Listener(n) => {
                let Some(id) = self.listeners.get(n).map(|l| l.spec.id) else {
                    return;
                };
                if let Some(t) = &mut self.trace {
                    t.datagram(now, id, from, buf.get(area_of(len)).unwrap_or_default());
                }
                self.server
                    .handle_datagram(now, id, from, buf, area_of(len))
            }
            UdpSource::Relay(r) => {
                if let Some(t) = &mut self.trace {
                    t.relay_datagram(now, r, from, buf.get(area_of(len)).unwrap_or_default());
                }
                self.server
                    .handle_relay_datagram(now, r, from, buf, area_of(len))
            }
        };
        if let Some(f) = fwd {
            self.forward(now, f, slot);
        }
        self.drain(now);
    }
}

/// The socket of `src` among `listeners` and `relays`, if it is (still) open.
fn udp_socket<'a>(
    listeners: &'a [Listener],
    relays: &'a IdMap<RelayId, UdpSocket>,
    src: UdpSource,
) -> Option<&'a UdpSocket> {
    match src {
        UdpSource::Listener(n) => match listeners.get(n) {
            Some(Listener {
                socket: ListenerSocket::Udp(sock),
                ..
            }) => Some(sock),
            _ => None,
        },
        UdpSource::Relay(r) => relays.get(&r),
    }
}

/// The received bytes of a datagram of `len` bytes in the packet buffer.
pub(super) fn area_of(len: usize) -> core::ops::Range<usize> {
    HEADROOM..HEADROOM + len
}

/// Sends what `tx` holds from the sockets named now (see [`Runtime::flush_sends`]).
pub(super) fn flush_queue(
    tx: &mut SendQueue,
    rx: &RecvBatch,
    listeners: &[Listener],
    relays: &IdMap<RelayId, UdpSocket>,
    stats: &mut RuntimeStats,
    last_error: &mut Option<io::ErrorKind>,
) {
    if tx.is_empty() {
        return;
    }
    let mut tally = Tally {
        would_block: &mut stats.send_would_block,
        errors: &mut stats.send_errors,
        last_error,
    };
    tx.flush(
        rx.bytes(),
        &mut |via| match via {
            Via::Listener(n) => match listeners.get(n as usize) {
                Some(Listener {
                    socket: ListenerSocket::Udp(sock),
                    ..
                }) => Some(sock),
                _ => None,
            },
            Via::Relay(r) => relays.get(&r),
        },
        &mut tally,
    );
}

/// Sends one datagram; a full socket buffer or an error drops it, counted.
pub(super) fn send_datagram(
    sock: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    stats: &mut RuntimeStats,
    last: &mut Option<io::ErrorKind>,
) {
    match sock.send_to(data, to) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => stats.send_would_block += 1,
        Err(e) => {
            stats.send_errors += 1;
            *last = Some(e.kind());
        }
    }
}
