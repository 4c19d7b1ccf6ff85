//! The sends of a whole poll round in one system call: io_uring (Linux ≥ 5.1 for
//! `IORING_OP_SENDMSG`).
//!
//! Each client→peer datagram leaves through its own allocation's relay socket (RFC 8656
//! §5: one relayed transport address per allocation), so `sendmmsg(2)`, which batches per
//! socket, sends one datagram per call at paced loads. A submission queue takes `sendmsg`
//! entries for any number of sockets: the round's messages, already built by
//! [`crate::udp_batch`], go to the kernel with one `io_uring_enter(2)`, which also waits
//! for their completions ([`crate::uring`]).
//!
//! Every entry carries `MSG_DONTWAIT`: a full socket buffer completes at once with
//! `EAGAIN` (the datagram is dropped and counted, as with `sendmmsg`) instead of being
//! parked until the socket drains, so the call never blocks and datagrams of one flow
//! leave in the order they were queued (entries are issued in submission order).

use crate::uring::Ring;
use io_uring::{opcode, types};
use std::io;
use std::os::fd::RawFd;

/// A ring for the sends of one loop.
pub struct UringSend {
    ring: Ring,
}

impl UringSend {
    /// A ring of `entries` submission entries, if this kernel has io_uring with
    /// `IORING_OP_SENDMSG` and lets this process use it (`kernel.io_uring_disabled`).
    pub fn new(entries: u32) -> io::Result<UringSend> {
        Ok(UringSend {
            ring: Ring::new(entries, opcode::SendMsg::CODE, "IORING_OP_SENDMSG")?,
        })
    }

    /// Sends message `i` of `hdrs` from socket `fds[i]`, all of them, and calls
    /// `done(i, result)` once for each (bytes sent, or a negative errno). Returns only
    /// once every message the kernel took has completed, error or not. An error of the
    /// ring itself is returned after `done(i, -errno)` was called for every message the
    /// kernel never took; the ring then refuses every later call.
    ///
    /// # Safety
    ///
    /// Every header must point at a live address, iovec array, payloads and control
    /// buffer for the duration of the call.
    pub unsafe fn send(
        &mut self,
        hdrs: &[libc::mmsghdr],
        fds: &[RawFd],
        done: impl FnMut(usize, i32),
    ) -> io::Result<()> {
        let n = hdrs.len().min(fds.len());
        let entry = |i: usize| {
            let (Some(h), Some(&fd)) = (hdrs.get(i), fds.get(i)) else {
                return None;
            };
            Some(
                opcode::SendMsg::new(types::Fd(fd), &h.msg_hdr)
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build(),
            )
        };
        // SAFETY: each entry points at header `i` (borrowed for the call, and only read
        // by the kernel) and what it points at, which the caller keeps alive until this
        // returns; `run` returns only once the kernel is done with every entry it took.
        unsafe { self.ring.run(n, entry, done) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn header(
        data: &mut [u8],
        iov: &mut libc::iovec,
        to: &mut libc::sockaddr_in,
        port: u16,
    ) -> libc::mmsghdr {
        *iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: all-zero is a valid sockaddr_in and mmsghdr.
        *to = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_port = port.to_be();
        to.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        // SAFETY: as above.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_name = (to as *mut libc::sockaddr_in).cast();
        h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        h
    }

    #[test]
    fn one_call_sends_from_several_sockets_in_order() {
        let Ok(mut ring) = UringSend::new(4) else {
            crate::uring::tests::unavailable("UringSend");
            return;
        };
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let port = rx.local_addr().unwrap().port();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Six messages through a ring of 4 entries: it must submit twice.
        let mut data: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 10 + i as usize]).collect();
        let mut iovs = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            6
        ];
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut addrs = vec![unsafe { std::mem::zeroed::<libc::sockaddr_in>() }; 6];
        let mut hdrs = Vec::new();
        for ((d, iov), to) in data.iter_mut().zip(&mut iovs).zip(&mut addrs) {
            hdrs.push(header(d, iov, to, port));
        }
        let fds: Vec<RawFd> = (0..6)
            .map(|i| {
                if i % 2 == 0 {
                    a.as_raw_fd()
                } else {
                    b.as_raw_fd()
                }
            })
            .collect();
        let mut results = vec![0; 6];
        // SAFETY: the headers point at `iovs`, `addrs` and `data`, alive until the end.
        unsafe { ring.send(&hdrs, &fds, |i, r| results[i] = r) }.unwrap();
        assert_eq!(results, vec![10, 11, 12, 13, 14, 15]);
        let mut buf = [0u8; 64];
        for i in 0..6u8 {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, 10 + i as usize);
            assert_eq!(buf[0], i);
            let sender = if i % 2 == 0 { &a } else { &b };
            assert_eq!(from, sender.local_addr().unwrap());
        }
    }

    #[test]
    fn a_closed_descriptor_fails_its_message_only() {
        let Ok(mut ring) = UringSend::new(4) else {
            crate::uring::tests::unavailable("UringSend");
            return;
        };
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut data = [vec![1u8; 5], vec![2u8; 6]];
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2];
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut addrs = [unsafe { std::mem::zeroed::<libc::sockaddr_in>() }; 2];
        let [d0, d1] = &mut data;
        let [i0, i1] = &mut iovs;
        let [a0, a1] = &mut addrs;
        let hdrs = [header(d0, i0, a0, port), header(d1, i1, a1, port)];
        let mut results = [0; 2];
        // SAFETY: as above.
        unsafe { ring.send(&hdrs, &[-1, a.as_raw_fd()], |i, r| results[i] = r) }.unwrap();
        assert_eq!(results, [-libc::EBADF, 6]);
    }

    #[test]
    fn a_broken_ring_answers_every_message_and_sends_none() {
        let Ok(mut ring) = UringSend::new(4) else {
            crate::uring::tests::unavailable("UringSend");
            return;
        };
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let port = rx.local_addr().unwrap().port();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut data = [vec![1u8; 5]];
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }];
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut addrs = [unsafe { std::mem::zeroed::<libc::sockaddr_in>() }];
        let hdrs = [header(&mut data[0], &mut iovs[0], &mut addrs[0], port)];
        ring.ring.break_it();
        let mut results = [0; 1];
        // SAFETY: as above.
        let r = unsafe { ring.send(&hdrs, &[a.as_raw_fd()], |i, r| results[i] = r) };
        assert!(r.is_err());
        assert_eq!(results, [-libc::EBADFD]);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.recv_from(&mut [0u8; 16]).is_err(), "nothing was sent");
    }
}
