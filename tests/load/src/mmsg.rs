//! Batched UDP receive and send (`recvmmsg` / `sendmmsg`, Linux) for the echo peer, so the
//! load generator spends as few syscalls as it can and leaves the CPU to the server.

use std::io;
use std::mem;
#[cfg(test)]
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per syscall.
pub const BATCH: usize = 64;
/// Largest datagram handled.
pub const MAX_DATAGRAM: usize = 2048;

/// Buffers for one batch: the datagrams and their source addresses.
pub struct Batch {
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    /// Datagrams held after the last `recv`.
    pub count: usize,
}

impl Batch {
    /// Empty buffers for [`BATCH`] datagrams.
    pub fn new() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        let zero: libc::sockaddr_storage = unsafe { mem::zeroed() };
        Batch {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
            addrs: vec![zero; BATCH],
            lens: vec![0; BATCH],
            count: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams from non-blocking socket `fd` in one syscall.
    /// Returns how many (0 when none is waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            })
            .collect();
        // SAFETY: mmsghdr is plain old data; all zeroes is a valid value.
        let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { mem::zeroed() }).collect();
        for ((h, iov), addr) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(self.addrs.iter_mut())
        {
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a buffer, an iovec and an address slot that live
        // until the call returns; the counts match the vectors' lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.count = 0;
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        for (len, h) in self.lens.iter_mut().zip(hdrs.iter()).take(n) {
            *len = h.msg_len as usize;
        }
        self.count = n;
        Ok(n)
    }

    /// Datagram `i` of the last receive.
    #[cfg(test)]
    pub fn datagram(&self, i: usize) -> &[u8] {
        match (self.bufs.get(i), self.lens.get(i)) {
            (Some(b), Some(&len)) => b.get(..len).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Source address of datagram `i` of the last receive.
    #[cfg(test)]
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        self.addrs.get(i).and_then(from_storage)
    }

    /// Sends every datagram of the last receive back to where it came from, in one
    /// syscall (more if the kernel takes part of the batch). Returns how many were sent;
    /// the rest are dropped (a full send buffer), as a UDP application would.
    pub fn echo(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .zip(self.lens.iter())
            .take(self.count)
            .map(|(b, &len)| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: len,
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = (0..self.count)
            // SAFETY: mmsghdr is plain old data; all zeroes is a valid value.
            .map(|_| unsafe { mem::zeroed() })
            .collect();
        for ((h, iov), addr) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(self.addrs.iter_mut())
        {
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = storage_len(addr);
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < hdrs.len() {
            let rest = hdrs.get_mut(sent..).unwrap_or(&mut []);
            // SAFETY: the headers point at buffers, iovecs and addresses alive for the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if n == 0 || e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            sent += n as usize;
        }
        Ok(sent)
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

fn storage_len(s: &libc::sockaddr_storage) -> libc::socklen_t {
    if libc::c_int::from(s.ss_family) == libc::AF_INET6 {
        mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
    } else {
        mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
    }
}

#[cfg(test)]
fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it can contain.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = u32::from_be(a.sin_addr.s_addr);
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip.into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it can contain.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn receives_a_batch_and_echoes_it() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for i in 0..5u8 {
            client
                .send_to(&[i; 10], echo.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut b = Batch::new();
        assert_eq!(b.recv(echo.as_raw_fd()).unwrap(), 5);
        assert_eq!(b.datagram(3), &[3u8; 10]);
        assert_eq!(b.source(0), Some(client.local_addr().unwrap()));
        assert_eq!(b.echo(echo.as_raw_fd()).unwrap(), 5);
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 10]);
        }
        assert_eq!(b.recv(echo.as_raw_fd()).unwrap(), 0);
    }
}
