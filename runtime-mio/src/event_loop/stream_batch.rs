//! The stream reads and the stream writes of a poll round, each in one io_uring submission
//! ([`crate::uring_stream`]) when the ring is on; else `tcp`'s per-connection path, which
//! also serves what the ring cannot (a slot that came back full, an interrupted entry,
//! everything after the ring failed).
//!
//! Reads: the connections that poll says are readable are gathered during the round and
//! read together once its events are served, each into a slot of its own; then each slot's
//! bytes go through the connection's layer to the core, in order. Writes: at the end of the
//! round, every connection with bytes queued (plain or TLS: its ciphertext waits in the
//! same [`crate::write_buf::WriteBuf`]) is written with one entry.

use super::Runtime;
use crate::config::IoUringMode;
use turnpike_core::ConnId;

/// Receive slots, one per connection read in one submission.
const SLOTS: usize = 64;
/// Bytes of one receive slot: many times a TURN-TCP round's worth of ChannelData.
const SLOT: usize = 16 * 1024;
/// Submission entries of the ring (a round with more dirty streams submits several times).
#[cfg(target_os = "linux")]
const ENTRIES: u32 = 256;

/// The ring, its receive slots and the per-round lists (kept from round to round).
#[derive(Default)]
pub(super) struct StreamBatch {
    #[cfg(target_os = "linux")]
    ring: Option<crate::uring_stream::UringStream>,
    /// Connections readable this round, read when its events are served.
    readable: Vec<ConnId>,
    /// `SLOTS` × `SLOT` bytes, allocated when the ring is on.
    slots: Vec<u8>,
    /// One call's entries: which connection, its socket, its buffer, and the result.
    ids: Vec<ConnId>,
    fds: Vec<i32>,
    bufs: Iovecs,
    results: Vec<i32>,
}

/// The buffers of one call.
#[derive(Default)]
struct Iovecs(Vec<libc::iovec>);

// SAFETY: the vector is empty outside one `read_chunk` or `write_streams` call, which fills
// it, hands it to the ring and clears it on the loop's own thread without returning in
// between: no pointer it ever holds crosses to another thread.
unsafe impl Send for Iovecs {}

impl StreamBatch {
    /// The ring when `mode` asks for it and the kernel has it; else the portable path.
    pub(super) fn new(mode: IoUringMode) -> StreamBatch {
        let mut b = StreamBatch::default();
        #[cfg(target_os = "linux")]
        if mode != IoUringMode::Off {
            match crate::uring_stream::UringStream::new(ENTRIES) {
                Ok(ring) => {
                    log::info!(
                        "TCP streams: reads and writes of a round in one io_uring submission each"
                    );
                    b.ring = Some(ring);
                    b.slots = vec![0; SLOTS * SLOT];
                }
                Err(e) if mode == IoUringMode::On => {
                    log::warn!("io_uring = \"on\" but unavailable for streams ({e}): one read and one write per connection");
                }
                Err(e) => log::info!(
                    "TCP streams: one read and one write per connection (io_uring unavailable: {e})"
                ),
            }
        }
        if mode == IoUringMode::Off {
            log::info!("TCP streams: one read and one write per connection (io_uring = \"off\")");
        }
        b
    }

    /// True if readable connections are gathered for one submission.
    pub(super) fn on(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.ring.is_some();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Gathers readable connection `c` for the end of the round's events.
    pub(super) fn readable(&mut self, c: ConnId) {
        self.readable.push(c);
    }
}

#[cfg(target_os = "linux")]
impl Runtime {
    /// Reads the connections gathered this round, `SLOTS` per submission.
    pub(super) fn read_streams(&mut self) {
        if self.streams.readable.is_empty() {
            return;
        }
        // Lent out while the bytes go through the layers and the core (which never touch
        // it: writes wait for the end of the round).
        let mut b = std::mem::take(&mut self.streams);
        let mut readable = std::mem::take(&mut b.readable);
        for chunk in readable.chunks(SLOTS) {
            self.read_chunk(&mut b, chunk);
        }
        readable.clear();
        b.readable = readable;
        self.streams = b;
    }

    fn read_chunk(&mut self, b: &mut StreamBatch, chunk: &[ConnId]) {
        use crate::uring_stream::{read, Dir, Read};
        use std::os::fd::AsRawFd;
        b.ids.clear();
        b.fds.clear();
        b.results.clear();
        for &c in chunk {
            let Some(conn) = self.conns.get(&c) else {
                continue;
            };
            // Entry `i` reads into slot `i` (a stream gone since it was readable takes none).
            let i = b.ids.len();
            let Some(slot) = b.slots.get_mut(i * SLOT..(i + 1) * SLOT) else {
                // No slot (chunks are never longer than the slots): read it before the
                // next poll rather than lose its edge.
                self.again.push(crate::token::Source::Conn(c));
                continue;
            };
            b.ids.push(c);
            b.fds.push(conn.stream.as_raw_fd());
            b.bufs.0.push(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            });
        }
        let results = &mut b.results;
        let r = match &mut b.ring {
            // SAFETY: each iovec points at its own `SLOT` bytes of `b.slots` (built just
            // above from `get_mut`, so in bounds and disjoint); `b` is borrowed mutably for
            // this whole call, so the slots are neither freed, read nor written by anyone
            // else until `submit` returns, and the iovecs are cleared right after.
            Some(ring) => unsafe {
                ring.submit(Dir::Recv, &b.fds, &b.bufs.0, |_, res| results.push(res))
            },
            None => {
                results.resize(b.ids.len(), -libc::ECANCELED);
                Ok(())
            }
        };
        b.bufs.0.clear();
        if let Err(e) = r {
            log::warn!("io_uring stream read failed ({e}): one read per connection from now on");
            b.ring = None;
        }
        for ((&c, &res), slot) in b.ids.iter().zip(&b.results).zip(b.slots.chunks(SLOT)) {
            let more = match read(res, SLOT) {
                Read::Closed => {
                    self.drop_conn(c, "closed by the client");
                    false
                }
                Read::Data { n, full } => {
                    let Some(conn) = self.conns.get(&c) else {
                        continue;
                    };
                    self.round_inputs += 1;
                    // As in `read_conn`: a short read emptied the socket, unless the peer
                    // closed (the end must still be read).
                    let drained = !full && !conn.hup;
                    // Once the core closed it, what still arrives is discarded.
                    if conn.closing.is_none() {
                        let now = self.clock.now();
                        self.stream_input(now, c, slot.get(..n).unwrap_or_default());
                        self.drain(now);
                    }
                    !drained && self.conns.contains_key(&c) && self.read_conn(c)
                }
                Read::Nothing => false,
                Read::Retry => self.read_conn(c),
                Read::Failed(e) => {
                    self.drop_conn(c, &format!("read failed: {e}"));
                    false
                }
            };
            if more {
                self.again.push(crate::token::Source::Conn(c));
            }
        }
    }

    /// Writes what the round queued on streams with one submission. False if the ring is
    /// off: the caller writes them one by one.
    pub(super) fn write_streams(&mut self) -> bool {
        use crate::uring_stream::{wrote, Dir, Wrote};
        use crate::write_buf::WriteError;
        use std::os::fd::AsRawFd;
        if self.streams.ring.is_none() {
            return false;
        }
        let b = &mut self.streams;
        b.ids.clear();
        b.fds.clear();
        b.results.clear();
        for c in self.dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&c) else {
                continue;
            };
            // Once per connection: a second entry would send the same bytes again.
            if !std::mem::replace(&mut conn.queued, false) {
                continue;
            }
            let pending = conn.out.pending();
            if pending.is_empty() {
                continue;
            }
            b.ids.push(c);
            b.fds.push(conn.stream.as_raw_fd());
            b.bufs.0.push(libc::iovec {
                iov_base: pending.as_ptr().cast_mut().cast(),
                iov_len: pending.len(),
            });
        }
        let results = &mut b.results;
        let r = match &mut b.ring {
            // SAFETY: each iovec points at the pending bytes of one connection's write
            // buffer in `self.conns` (taken from `pending()` just above); nothing between
            // here and the end of `submit` touches `self.conns`, so they stay allocated and
            // unchanged while the kernel reads them; the iovecs are cleared right after.
            Some(ring) => unsafe {
                ring.submit(Dir::Send, &b.fds, &b.bufs.0, |_, res| results.push(res))
            },
            None => Ok(()),
        };
        b.bufs.0.clear();
        if let Err(e) = r {
            log::warn!("io_uring stream write failed ({e}): one write per connection from now on");
            b.ring = None;
        }
        let now = self.clock.now();
        for i in 0..self.streams.ids.len() {
            let (Some(&c), Some(&res)) = (self.streams.ids.get(i), self.streams.results.get(i))
            else {
                break;
            };
            let Some(conn) = self.conns.get_mut(&c) else {
                continue;
            };
            // A partial write or EAGAIN leaves the rest queued: the socket's buffer is full,
            // and its writable edge (`flush_conn`) comes as after a `WouldBlock`.
            let failed = match wrote(res, conn.out.len()) {
                Wrote::Sent(n) => {
                    conn.out.consume(n);
                    None
                }
                Wrote::Blocked => None,
                Wrote::Retry => conn.out.flush(&mut conn.stream).err(),
                Wrote::Failed(e) => Some(e),
            };
            if let Some(e) = failed {
                self.stream_write_failed(now, c, WriteError::Io(e));
            }
        }
        true
    }
}

#[cfg(not(target_os = "linux"))]
impl Runtime {
    pub(super) fn read_streams(&mut self) {}

    pub(super) fn write_streams(&mut self) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::super::tests::loopback_settings;
    use super::super::ListenerSocket;
    use super::*;
    use crate::plan::Place;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// One loop with its stream ring on, and `k` clients it accepted (with their ids).
    fn loop_with_clients(k: usize) -> Option<(Runtime, Vec<(ConnId, TcpStream)>)> {
        let place = Place { index: 0, count: 1 };
        let mut rt = Runtime::new_loop(loopback_settings(), [5u8; 32], place, None).unwrap();
        if !rt.streams.on() {
            crate::uring::tests::unavailable("stream ring");
            return None;
        }
        let (_, addr) = rt
            .local_addrs()
            .into_iter()
            .find(|(t, _)| *t == turnpike_core::Transport::Tcp)?;
        let n = rt
            .listeners
            .iter()
            .position(|l| matches!(l.socket, ListenerSocket::Tcp(_)))?;
        let clients: Vec<TcpStream> = (0..k).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        rt.accept(n);
        assert_eq!(rt.conns.len(), k);
        let ids = clients
            .into_iter()
            .map(|s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let me = s.local_addr().unwrap();
                let (&id, _) = rt.conns.iter().find(|(_, c)| c.remote == me).unwrap();
                (id, s)
            })
            .collect();
        Some((rt, ids))
    }

    /// A STUN Binding request (RFC 8489 §6) whose transaction id is `tag` repeated.
    fn binding(tag: u8) -> [u8; 20] {
        let mut m = [tag; 20];
        m[..8].copy_from_slice(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
        m
    }

    /// Reads one STUN message from `s`: (type, transaction id's first byte).
    fn answer(s: &mut TcpStream) -> (u16, u8) {
        let mut head = [0u8; 20];
        s.read_exact(&mut head).unwrap();
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        s.read_exact(&mut vec![0u8; len]).unwrap();
        (u16::from_be_bytes([head[0], head[1]]), head[8])
    }

    #[test]
    fn one_round_reads_several_streams_in_order_and_sees_a_close() {
        let Some((mut rt, mut clients)) = loop_with_clients(3) else {
            return;
        };
        // Two requests each from 0 and 1 (their answers must come in order); 2 closes.
        for (k, (_, s)) in clients.iter_mut().enumerate().take(2) {
            let k = k as u8 * 2;
            s.write_all(&[binding(k + 1), binding(k + 2)].concat())
                .unwrap();
        }
        let (closed, _) = clients.pop().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // A stream closed earlier in the round comes first: it must not shift the slots.
        rt.streams.readable(ConnId(u64::MAX));
        for &(c, _) in &clients {
            rt.streams.readable(c);
        }
        rt.streams.readable(closed);
        rt.read_streams();
        rt.end_batch();
        assert!(
            !rt.conns.contains_key(&closed),
            "a read of 0 closes the stream"
        );
        for (k, (_, s)) in clients.iter_mut().enumerate() {
            let k = k as u8 * 2;
            assert_eq!(answer(s), (0x0101, k + 1));
            assert_eq!(answer(s), (0x0101, k + 2));
        }
        assert!(rt.streams.readable.is_empty() && rt.streams.bufs.0.is_empty());
    }

    #[test]
    fn one_round_writes_every_dirty_stream_and_a_partial_write_keeps_the_rest() {
        let Some((mut rt, mut clients)) = loop_with_clients(3) else {
            return;
        };
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for (k, (c, _)) in clients.iter().enumerate() {
            let conn = rt.conns.get_mut(c).unwrap();
            if k == 0 {
                // Small buffers, so that 200 kB cannot all go at once.
                let sock = socket2::SockRef::from(&conn.stream);
                sock.set_send_buffer_size(4096).unwrap();
            }
            let data = if k == 0 { &big[..] } else { &big[..100 + k] };
            conn.out.queue(&mut conn.stream, data).unwrap();
            conn.queued = true;
            rt.dirty.push(*c);
        }
        // Queued twice: written once all the same.
        rt.dirty.push(clients[1].0);
        rt.flush_streams();
        assert!(rt.dirty.is_empty());
        for (k, (c, s)) in clients.iter_mut().enumerate().skip(1) {
            assert!(rt.conns[c].out.is_empty());
            let mut got = vec![0u8; 100 + k];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, big[..100 + k]);
            s.set_nonblocking(true).unwrap();
            assert!(s.read(&mut [0u8; 8]).is_err(), "nothing more: sent once");
        }
        let (c0, s0) = &mut clients[0];
        let left = rt.conns[c0].out.len();
        assert!(left > 0 && left < big.len(), "{left} bytes left");
        // The rest leaves as the socket drains (its writable edge), in order.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        for _ in 0..1000 {
            if got.len() == big.len() {
                break;
            }
            let n = s0.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            rt.flush_conn(*c0);
        }
        assert!(got == big, "{} of {} bytes, in order", got.len(), big.len());
    }
}
