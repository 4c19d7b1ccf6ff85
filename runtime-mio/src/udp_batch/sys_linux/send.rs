//! Sending: sendmmsg(2), sendmsg(2) with UDP_SEGMENT for GSO runs, sendto(2) for a lone
//! datagram, or one io_uring submission for a whole round.

use super::addr::{from_socket_addr, zeroed_storage};
use super::gso::{set_segment, CmsgBuf};
use super::{empty_iovec, zeroed_mmsghdr};
use crate::udp_batch::queued::{Queued, SendOutcome};
use crate::udp_batch::{Tally, SEND_ENTRIES};
use crate::uring_send::UringSend;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Headers for sendmmsg / sendmsg, one per message, rebuilt per group.
pub struct SendSys {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    cmsgs: Vec<CmsgBuf>,
    /// Per message: sorted position of its first datagram, and how many it carries.
    spans: Vec<(usize, usize, bool)>,
    /// The io_uring ring, when sends go through one.
    uring: Option<UringSend>,
    /// Per message of a round sent through the ring: its socket.
    fds: Vec<RawFd>,
    /// GSO messages of the last ring round the kernel refused (first sorted
    /// position, datagrams), to resend one by one.
    refused: Vec<(usize, usize)>,
}

// SAFETY: as for RecvSys (in `recv.rs`): the pointers are rewritten before each call and
// only used during it.
unsafe impl Send for SendSys {}

/// Empty, allocating nothing: the placeholder while the real buffers are in use.
impl Default for SendSys {
    fn default() -> Self {
        SendSys {
            hdrs: Vec::new(),
            iovs: Vec::new(),
            addrs: Vec::new(),
            cmsgs: Vec::new(),
            spans: Vec::new(),
            uring: None,
            fds: Vec::new(),
            refused: Vec::new(),
        }
    }
}

impl SendSys {
    pub fn new() -> Self {
        SendSys {
            hdrs: (0..SEND_ENTRIES).map(|_| zeroed_mmsghdr()).collect(),
            iovs: (0..SEND_ENTRIES).map(|_| empty_iovec()).collect(),
            addrs: vec![(zeroed_storage(), 0); SEND_ENTRIES],
            cmsgs: vec![[0; 4]; SEND_ENTRIES],
            spans: Vec::with_capacity(SEND_ENTRIES),
            uring: None,
            fds: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// True if a round's sends go through io_uring.
    pub fn uring_on(&self) -> bool {
        self.uring.is_some()
    }

    /// Sets up the io_uring ring (one entry per queued datagram at most).
    pub fn start_uring(&mut self) -> io::Result<()> {
        self.uring = Some(UringSend::new(SEND_ENTRIES as u32)?);
        self.fds = Vec::with_capacity(SEND_ENTRIES);
        self.refused = Vec::with_capacity(SEND_ENTRIES);
        Ok(())
    }

    /// Forgets the messages of the last round.
    pub fn begin_round(&mut self) {
        self.spans.clear();
        self.fds.clear();
    }

    /// Adds the messages of the datagrams at sorted positions `group` of `q`, all
    /// from `sock`, to the round.
    pub fn build(
        &mut self,
        q: Queued<'_>,
        group: core::ops::Range<usize>,
        recv: &[u8],
        sock: &impl AsRawFd,
        tally: &mut Tally<'_>,
    ) {
        if !self.build_messages(q, group.clone(), recv) {
            tally.failed(&io::ErrorKind::InvalidInput.into(), group.len());
        }
        self.fds.resize(self.spans.len(), sock.as_raw_fd());
    }

    /// Sends the round's messages with one io_uring submission. Returns the calls
    /// that carried more than one datagram (0 or 1) and whether a GSO message was
    /// refused (its datagrams are not counted: [`SendSys::refused`] names them for a
    /// resend). A failure of the ring itself turns it off: the next rounds take the
    /// portable path.
    pub fn submit_round(&mut self, tally: &mut Tally<'_>) -> (u64, bool) {
        self.refused.clear();
        let Some(ring) = self.uring.as_mut() else {
            return (0, false);
        };
        let m = self.spans.len();
        let spans = &self.spans;
        let refused = &mut self.refused;
        let datagrams: usize = spans.iter().map(|s| s.1).sum();
        let hdrs = self.hdrs.get(..m).unwrap_or_default();
        // SAFETY: headers 0..m were built this round by build_messages and point at
        // self.iovs, self.addrs and self.cmsgs and at payloads in the receive slots
        // and the queue's arena. All of them stay borrowed, unmoved and unwritten
        // until `send` returns (`self.hdrs` through `hdrs`, the rest through the
        // headers: nothing here writes them), and `send` returns only once the kernel
        // is done with every entry it took, also on an error (UringSend::send).
        let r = unsafe {
            ring.send(hdrs, &self.fds, |i, res| {
                let Some(&(start, count, gso)) = spans.get(i) else {
                    return;
                };
                if res >= 0 {
                    return;
                }
                if gso && matches!(-res, libc::EINVAL | libc::EIO | libc::ENOPROTOOPT) {
                    // Within capacity: at most one per message (SEND_ENTRIES).
                    if refused.len() < refused.capacity() {
                        refused.push((start, count));
                        return;
                    }
                }
                tally.failed(&io::Error::from_raw_os_error(-res), count);
            })
        };
        if let Err(e) = r {
            log::warn!("io_uring send failed ({e}): sending with sendmmsg from now on");
            self.uring = None;
        }
        (u64::from(datagrams > 1), !self.refused.is_empty())
    }

    /// The `r`th GSO message refused in the last round: the sorted position of its
    /// first datagram and how many it carried.
    pub fn refused(&self, r: usize) -> Option<(usize, usize)> {
        self.refused.get(r).copied()
    }

    /// Builds the iovecs of the datagrams at sorted positions `group` of `q` (each at
    /// its position) and the messages over them, appended to the round's. False if the
    /// group does not fit (the queue holds at most SEND_ENTRIES datagrams; a larger
    /// group is refused here rather than trusted).
    fn build_messages(
        &mut self,
        q: Queued<'_>,
        group: core::ops::Range<usize>,
        recv: &[u8],
    ) -> bool {
        let Some(iovs) = self.iovs.get_mut(group.clone()) else {
            return false;
        };
        for (iov, pos) in iovs.iter_mut().zip(group.clone()) {
            let data = q.data(recv, pos);
            *iov = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
        }
        let m0 = self.spans.len();
        let spans = &mut self.spans;
        q.messages(group.clone(), q.mode.gso, |j, k, seg| {
            spans.push((j, k - j, seg.is_some()));
        });
        for m in m0..self.spans.len() {
            let Some(&(j, count, gso)) = self.spans.get(m) else {
                break;
            };
            // The message's datagrams: a checked sub-slice of the iovecs built above.
            let iov = j
                .checked_add(count)
                .and_then(|end| self.iovs.get_mut(j..end))
                .filter(|iov| !iov.is_empty() && j >= group.start && j + count <= group.end);
            let (Some(h), Some(addr), Some(cmsg), Some(entry), Some(iov)) = (
                self.hdrs.get_mut(m),
                self.addrs.get_mut(m),
                self.cmsgs.get_mut(m),
                q.entry_at(j),
                iov,
            ) else {
                self.spans.truncate(m);
                break;
            };
            *addr = from_socket_addr(entry.to);
            *h = zeroed_mmsghdr();
            h.msg_hdr.msg_name = (&mut addr.0 as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = addr.1;
            h.msg_hdr.msg_iov = iov.as_mut_ptr();
            h.msg_hdr.msg_iovlen = iov.len() as _;
            if gso {
                let seg = entry.len as u16;
                set_segment(&mut h.msg_hdr, cmsg, seg);
            }
        }
        true
    }

    /// Sends the datagrams at sorted positions `group` of `q`, all from `sock`.
    pub fn send(
        &mut self,
        q: Queued<'_>,
        sock: &impl AsRawFd,
        group: core::ops::Range<usize>,
        recv: &[u8],
        tally: &mut Tally<'_>,
    ) -> SendOutcome {
        let mut out = SendOutcome::default();
        self.spans.clear();
        if !self.build_messages(q, group.clone(), recv) {
            tally.failed(&io::ErrorKind::InvalidInput.into(), group.len());
            return out;
        }
        let m = self.spans.len();
        let fd = sock.as_raw_fd();
        let mut done = 0;
        while done < m {
            let rc = if q.mode.mmsg && m - done > 1 {
                // SAFETY: headers `done..m` are built above and point at live iovecs,
                // addresses, control buffers and payloads, all borrowed for this call.
                unsafe {
                    libc::sendmmsg(
                        fd,
                        self.hdrs.as_mut_ptr().add(done),
                        (m - done) as libc::c_uint,
                        0,
                    )
                }
            } else {
                let (Some(h), Some(&(_, count, gso))) = (self.hdrs.get(done), self.spans.get(done))
                else {
                    break;
                };
                let rc = if count == 1 && !gso {
                    // One plain datagram: sendto(2) spares the kernel copying in a
                    // message header and an iovec array.
                    // SAFETY: msg_iov points at one live iovec over the payload and
                    // msg_name at a live address of msg_namelen bytes.
                    unsafe {
                        let iov = &*h.msg_hdr.msg_iov;
                        libc::sendto(
                            fd,
                            iov.iov_base,
                            iov.iov_len,
                            0,
                            h.msg_hdr.msg_name.cast(),
                            h.msg_hdr.msg_namelen,
                        )
                    }
                } else {
                    // SAFETY: as for sendmmsg, for the one header `done`.
                    unsafe { libc::sendmsg(fd, &h.msg_hdr, 0) }
                };
                if rc >= 0 {
                    1
                } else {
                    -1
                }
            };
            if rc > 0 {
                let sent = rc as usize;
                let datagrams: usize = self
                    .spans
                    .get(done..done + sent)
                    .map_or(0, |s| s.iter().map(|x| x.1).sum());
                if datagrams > 1 {
                    out.batched_calls += 1;
                }
                done += sent;
                continue;
            }
            let e = io::Error::last_os_error();
            let Some(&(j, count, gso)) = self.spans.get(done) else {
                break;
            };
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT) if gso => {
                    out.gso_refused_at = Some(j);
                    return out;
                }
                Some(libc::EAGAIN) => {
                    // The socket buffer is full: the rest of this socket's datagrams
                    // are dropped, as one send_to each would have been.
                    let rest: usize = self
                        .spans
                        .get(done..m)
                        .map_or(0, |s| s.iter().map(|x| x.1).sum());
                    tally.failed(&e, rest);
                    return out;
                }
                _ => {
                    tally.failed(&e, count);
                    done += 1;
                }
            }
        }
        out
    }
}
