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
        for (&c, slot) in chunk.iter().zip(b.slots.chunks_mut(SLOT)) {
            let Some(conn) = self.conns.get(&c) else {
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
            // SAFETY: each iovec points at its own `SLOT` bytes of `b.slots`, which lives
            // in `b` (owned here) and is neither read nor written until `submit` returns.
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
            conn.queued = false;
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
            // buffer in `self.conns`, which nothing touches until `submit` returns (the
            // kernel only reads them).
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
