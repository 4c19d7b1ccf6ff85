//! Receiving: recvmmsg(2) from one socket, or one io_uring call over several.

use super::addr::{to_socket_addr, zeroed_storage};
use super::{empty_iovec, zeroed_mmsghdr};
use crate::udp_batch::{Received, MAX_DATAGRAM, RECV_SLOTS, SLOT_LEN};
use crate::uring_recv::{Got, UringRecv, Want};
use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use turnpike_core::HEADROOM;

/// Headers for recvmmsg, built over one receive buffer and rebuilt whenever a
/// different one is passed (their pointers then name live memory).
pub struct RecvSys {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Start of the buffer the headers point into (None: never built). The buffer is
    /// always [`RECV_BUF_LEN`] bytes long, so its start names all of it.
    linked_to: Option<*const u8>,
    /// The io_uring ring, when a round's sockets are read through one.
    uring: Option<UringRecv>,
}

/// The only length of buffer [`RecvSys::recv`] accepts: one slot per header.
pub const RECV_BUF_LEN: usize = RECV_SLOTS * SLOT_LEN;

// SAFETY: the raw pointers in the headers point only into heap buffers owned by the
// same RecvBatch (its slots, and these iovecs and addresses), which move with it and
// are shared with no one; they are checked before each call and used only during it.
// So the owner may move to another thread (an event loop per thread).
unsafe impl Send for RecvSys {}

impl RecvSys {
    pub fn new() -> Self {
        RecvSys {
            hdrs: (0..RECV_SLOTS).map(|_| zeroed_mmsghdr()).collect(),
            iovs: (0..RECV_SLOTS).map(|_| empty_iovec()).collect(),
            addrs: vec![zeroed_storage(); RECV_SLOTS],
            linked_to: None,
            uring: None,
        }
    }

    /// True if several sockets can be read with one io_uring call.
    pub fn uring_on(&self) -> bool {
        self.uring.is_some()
    }

    /// Sets up the io_uring ring (one entry per slot at most).
    pub fn start_uring(&mut self) -> io::Result<()> {
        self.uring = Some(UringRecv::new(RECV_SLOTS as u32)?);
        Ok(())
    }

    /// Receives from the sockets of `wants` into slots `first..` of `buf` with one
    /// io_uring call (see `RecvBatch::recv_many`). Returns where the slots it used
    /// end. A failure of the ring itself turns it off: the caller reads on with
    /// recvmmsg.
    pub fn recv_many(
        &mut self,
        buf: &mut [u8],
        got: &mut [Option<Received>],
        first: usize,
        wants: &[Want],
        out: &mut Vec<Got>,
    ) -> usize {
        if self.uring.is_none() || first >= RECV_SLOTS || self.link(buf).is_err() {
            return first;
        }
        let Some(ring) = self.uring.as_mut() else {
            return first;
        };
        for h in self.hdrs.iter_mut().skip(first) {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at its own iovec over its own slot of `buf`
        // (linked over this very buffer just above) and at its own address entry; all
        // of them belong to `self` or `buf`, which stay borrowed (and untouched here)
        // until `recv` returns; the kernel writes within the lengths given
        // (MAX_DATAGRAM, sockaddr_storage).
        let r = unsafe { ring.recv(&mut self.hdrs, first, RECV_SLOTS, wants, out) };
        let results = ring.results();
        for (k, &res) in results.iter().enumerate() {
            let h = first + k;
            let (Some(slot), Some(hdr), Some(addr)) =
                (got.get_mut(h), self.hdrs.get(h), self.addrs.get(h))
            else {
                break;
            };
            *slot = match usize::try_from(res) {
                Ok(len) => to_socket_addr(addr, hdr.msg_hdr.msg_namelen).map(|from| Received {
                    from,
                    len: len.min(MAX_DATAGRAM),
                    truncated: len > MAX_DATAGRAM || hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                }),
                Err(_) => None,
            };
        }
        let end = first + results.len();
        if let Err(e) = r {
            log::warn!("io_uring receive failed ({e}): receiving with recvmmsg from now on");
            self.uring = None;
        }
        end
    }

    /// Points the headers at `buf`'s slots, unless they already do. `buf` must be
    /// the batch's own buffer of [`RECV_BUF_LEN`] bytes (anything else is refused with
    /// `InvalidInput`: the headers are built over whole slots of it).
    fn link(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() != RECV_BUF_LEN {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // The headers keep pointing at their slot, iovec and address between calls
        // (none of these buffers is ever resized, and `buf` is the batch's own). They
        // are rebuilt, all of them, when `buf` is not the buffer they were built over:
        // the same start and the same length is the same memory.
        if self.linked_to != Some(buf.as_ptr()) {
            self.linked_to = None;
            for (((h, iov), addr), slot) in self
                .hdrs
                .iter_mut()
                .zip(self.iovs.iter_mut())
                .zip(self.addrs.iter_mut())
                .zip(buf.chunks_exact_mut(SLOT_LEN))
            {
                let rx = slot
                    .get_mut(HEADROOM..HEADROOM + MAX_DATAGRAM)
                    .ok_or(io::ErrorKind::InvalidInput)?;
                *iov = libc::iovec {
                    iov_base: rx.as_mut_ptr().cast(),
                    iov_len: rx.len(),
                };
                *h = zeroed_mmsghdr();
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
            }
            self.linked_to = Some(buf.as_ptr());
        }
        Ok(())
    }

    /// Receives up to `want` datagrams into slots `first..first + want` of `buf`,
    /// which must be the batch's own buffer of [`RECV_BUF_LEN`] bytes (anything else
    /// is refused with `InvalidInput`: the headers are built over whole slots of it).
    pub fn recv(
        &mut self,
        sock: &impl AsRawFd,
        buf: &mut [u8],
        got: &mut [Option<Received>],
        first: usize,
        want: usize,
    ) -> io::Result<usize> {
        if buf.len() != RECV_BUF_LEN {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let want = want.min(RECV_SLOTS.saturating_sub(first));
        if want == 0 {
            return Ok(0);
        }
        self.link(buf)?;
        let hdrs = self
            .hdrs
            .get_mut(first..first + want)
            .ok_or(io::ErrorKind::InvalidInput)?;
        for h in hdrs.iter_mut() {
            // The kernel wrote the last sender's length here.
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        let n = loop {
            // SAFETY: every header points at its own iovec over its own slot of `buf`
            // (built over this very buffer, of RECV_BUF_LEN bytes: checked above) and
            // at its own address entry; headers `first..first + want` exist (the
            // `get_mut` above), and all of it is alive and borrowed for this call; the
            // kernel writes within the lengths given (MAX_DATAGRAM, sockaddr_storage).
            let rc = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    want as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let addrs = self.addrs.iter().skip(first);
        for (k, (h, addr)) in hdrs.iter().zip(addrs).take(n).enumerate() {
            let slot = got.get_mut(first + k).ok_or(io::ErrorKind::InvalidInput)?;
            *slot = to_socket_addr(addr, h.msg_hdr.msg_namelen).map(|from| Received {
                from,
                len: (h.msg_len as usize).min(MAX_DATAGRAM),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp_batch::loopback::pair;
    use std::time::{Duration, Instant};

    #[cfg(target_os = "linux")]
    #[test]
    fn recvmmsg_takes_only_a_whole_batch_buffer() {
        let (a, b) = pair();
        let mut got = vec![None; RECV_SLOTS];
        let mut sys = RecvSys::new();
        for len in [0, SLOT_LEN, RECV_BUF_LEN - 1, RECV_BUF_LEN + SLOT_LEN] {
            let mut buf = vec![0u8; len];
            let e = sys.recv(&b, &mut buf, &mut got, 0, 1).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{len}");
        }
        // Another buffer of the right length: the headers are rebuilt over it.
        let mut buf = vec![0u8; RECV_BUF_LEN];
        assert_eq!(
            sys.recv(&b, &mut buf, &mut got, 0, 1).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.send_to(b"hello", b.local_addr().unwrap()).unwrap();
        let mut other = vec![0u8; RECV_BUF_LEN];
        let deadline = Instant::now() + Duration::from_secs(2);
        let n = loop {
            match sys.recv(&b, &mut other, &mut got, 3, 2) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(n, 1);
        let r = got[3].unwrap();
        let at = 3 * SLOT_LEN + HEADROOM;
        assert_eq!(&other[at..at + r.len], b"hello");
        assert!(
            buf.iter().all(|&x| x == 0),
            "written into the buffer of an earlier call"
        );
    }
}
