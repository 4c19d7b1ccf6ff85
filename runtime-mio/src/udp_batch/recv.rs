//! The receive side of a batch: the slots datagrams are received into.

use super::{sys, Received, RECV_SLOTS, SLOT_LEN};
use mio::net::UdpSocket;
use std::io;

/// The receive slots and what the last receives put in them.
pub struct RecvBatch {
    buf: Vec<u8>,
    got: Vec<Option<Received>>,
    used: usize,
    sys: sys::RecvSys,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// [`RECV_SLOTS`] empty slots. The memory is reserved once; pages never written cost
    /// no resident memory.
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0; RECV_SLOTS * SLOT_LEN],
            got: vec![None; RECV_SLOTS],
            used: 0,
            sys: sys::RecvSys::new(),
        }
    }

    /// Slots not yet filled since the last [`RecvBatch::reset`].
    pub fn free(&self) -> usize {
        RECV_SLOTS - self.used
    }

    /// Forgets every received datagram: the slots may be filled again. Only once nothing
    /// queued for sending points into them.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Receives up to `max` datagrams (at most the free slots) from non-blocking `sock`
    /// into the next free slots. Returns the slot numbers filled; fewer than asked means
    /// the socket's queue is empty. `WouldBlock` when nothing was waiting.
    pub fn recv(&mut self, sock: &UdpSocket, max: usize) -> io::Result<core::ops::Range<usize>> {
        let first = self.used;
        let want = max.min(self.free());
        if want == 0 {
            return Ok(first..first);
        }
        let n = self
            .sys
            .recv(sock, &mut self.buf, &mut self.got, first, want)?;
        self.used = first + n;
        Ok(first..first + n)
    }

    /// From now on, [`RecvBatch::recv_many`] reads several sockets with one io_uring
    /// call ([`crate::uring_recv`]). An error if this kernel or process cannot.
    #[cfg(target_os = "linux")]
    pub fn use_uring(&mut self) -> io::Result<()> {
        self.sys.start_uring()
    }

    /// True if [`RecvBatch::recv_many`] can be used (it turns off for good if the ring
    /// fails).
    pub fn uring(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.sys.uring_on();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Receives from several non-blocking sockets with one io_uring call: up to
    /// `wants[i].k` datagrams from each, into the next free slots (socket by socket, in
    /// arrival order). `out` says, per socket served (a prefix of `wants`: those whose
    /// receives fit the free slots), which slots it was given and what to do next with it
    /// (see [`crate::uring_recv::Next`]). Empty when nothing can be served (no free slot,
    /// or io_uring off).
    #[cfg(target_os = "linux")]
    pub fn recv_many(
        &mut self,
        wants: &[crate::uring_recv::Want],
        out: &mut Vec<crate::uring_recv::Got>,
    ) {
        out.clear();
        let first = self.used;
        self.used = self
            .sys
            .recv_many(&mut self.buf, &mut self.got, first, wants, out);
    }

    /// What slot `i` holds.
    pub fn received(&self, i: usize) -> Option<Received> {
        self.got.get(i).copied().flatten()
    }

    /// Slot `i`, headroom and tailroom included (the received bytes are at
    /// `HEADROOM..HEADROOM + len`).
    pub fn slot_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        self.buf.get_mut(i * SLOT_LEN..(i + 1) * SLOT_LEN)
    }

    /// Where slot `i` starts in [`RecvBatch::bytes`].
    pub fn slot_start(i: usize) -> usize {
        i * SLOT_LEN
    }

    /// All slots, for [`SendQueue::flush`](super::SendQueue::flush).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}
