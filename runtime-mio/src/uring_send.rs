//! The sends of a whole poll round in one system call: io_uring (Linux ≥ 5.1 for
//! `IORING_OP_SENDMSG`).
//!
//! Each client→peer datagram leaves through its own allocation's relay socket (RFC 8656
//! §5: one relayed transport address per allocation), so `sendmmsg(2)`, which batches per
//! socket, sends one datagram per call at paced loads. A submission queue takes `sendmsg`
//! entries for any number of sockets: the round's messages, already built by
//! [`crate::udp_batch`], go to the kernel with one `io_uring_enter(2)`, which also waits
//! for their completions.
//!
//! Every entry carries `MSG_DONTWAIT`: a full socket buffer completes at once with
//! `EAGAIN` (the datagram is dropped and counted, as with `sendmmsg`) instead of being
//! parked until the socket drains, so the call never blocks and datagrams of one flow
//! leave in the order they were queued (entries are issued in submission order).
//!
//! The `io-uring` crate (tokio-rs) is used for the ring itself: it maps the rings and
//! builds entries with the kernel's layouts, is maintained with the kernel's ABI and has
//! no dependencies besides libc and bitflags.

use io_uring::{opcode, types, IoUring, Probe};
use std::io;
use std::os::fd::RawFd;

/// A ring for the sends of one loop.
pub struct UringSend {
    ring: IoUring,
    /// A call failed and may have left entries in the submission queue that point at
    /// buffers since released: the ring must never be entered again.
    broken: bool,
}

/// Passes through the kernel without progress (nothing taken, nothing completed) after
/// which a call gives up; a retry after `EINTR`, `EAGAIN` or `EBUSY` is one pass.
const MAX_STALLS: u32 = 1000;

/// `IORING_ENTER_GETEVENTS` (io_uring_enter(2)): wait for completions.
const ENTER_GETEVENTS: u32 = 1;

impl UringSend {
    /// A ring of `entries` submission entries, if this kernel has io_uring with
    /// `IORING_OP_SENDMSG` and lets this process use it (`kernel.io_uring_disabled`).
    pub fn new(entries: u32) -> io::Result<UringSend> {
        let ring = IoUring::new(entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::SendMsg::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_OP_SENDMSG",
            ));
        }
        Ok(UringSend {
            ring,
            broken: false,
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
        mut done: impl FnMut(usize, i32),
    ) -> io::Result<()> {
        let n = hdrs.len().min(fds.len());
        let ring = &mut self.ring;
        unless_broken(&mut self.broken, n, -libc::EBADFD, &mut done, |done| {
            send_all(&mut Entries { ring, hdrs, fds }, n, done)
        })
    }
}

/// Runs `call` over `n` entries unless the ring is `broken` (then answers each with
/// `refused` and fails); a failed call breaks the ring: entries still queued but never
/// taken point at the caller's buffers, so the ring must never submit them.
pub(crate) fn unless_broken(
    broken: &mut bool,
    n: usize,
    refused: i32,
    done: &mut dyn FnMut(usize, i32),
    call: impl FnOnce(&mut dyn FnMut(usize, i32)) -> io::Result<()>,
) -> io::Result<()> {
    if *broken {
        for i in 0..n {
            done(i, refused);
        }
        return Err(io::Error::from_raw_os_error(libc::EBADFD));
    }
    let r = call(done);
    *broken = r.is_err();
    r
}

/// What [`send_all`] needs of the kernel: a seam, so that its bookkeeping can be checked
/// against a kernel that fails on purpose (also the stream ring's, [`crate::uring_stream`]).
pub(crate) trait Queue {
    /// Queues entry `i`; false if the submission queue is full.
    fn push(&mut self, i: usize) -> bool;
    /// Submits what is queued and waits for `want` completions. Ok(entries the kernel
    /// took; the wait may have been cut short), or an error with none taken
    /// (io_uring_enter(2)).
    fn submit_and_wait(&mut self, want: usize) -> io::Result<usize>;
    /// Waits for `want` completions, submitting nothing.
    fn wait(&mut self, want: usize) -> io::Result<usize>;
    /// Hands every completion there is to `done`; how many.
    fn reap(&mut self, done: &mut dyn FnMut(usize, i32)) -> usize;
}

/// The ring over one call's messages.
struct Entries<'a> {
    ring: &'a mut IoUring,
    hdrs: &'a [libc::mmsghdr],
    fds: &'a [RawFd],
}

impl Queue for Entries<'_> {
    fn push(&mut self, i: usize) -> bool {
        let (Some(h), Some(&fd)) = (self.hdrs.get(i), self.fds.get(i)) else {
            return false;
        };
        let e = opcode::SendMsg::new(types::Fd(fd), &h.msg_hdr)
            .flags(libc::MSG_DONTWAIT as u32)
            .build()
            .user_data(i as u64);
        // SAFETY: the entry points at header `i` and what it points at, which the caller
        // of `UringSend::send` keeps alive until it returns. Once the kernel takes the
        // entry, `send_all` returns only after reaping its completion (or aborts); an
        // entry never taken is never submitted, as `send` breaks the ring on an error.
        unsafe { self.ring.submission().push(&e) }.is_ok()
    }

    fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        self.ring.submit_and_wait(want)
    }

    fn wait(&mut self, want: usize) -> io::Result<usize> {
        wait(self.ring, want)
    }

    fn reap(&mut self, done: &mut dyn FnMut(usize, i32)) -> usize {
        reap(self.ring, done)
    }
}

/// [`Queue::wait`] on `ring`.
pub(crate) fn wait(ring: &mut IoUring, want: usize) -> io::Result<usize> {
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    // SAFETY: submits nothing (to_submit 0) and passes no argument: it only waits for
    // completions of entries already taken.
    unsafe {
        ring.submitter()
            .enter::<libc::sigset_t>(0, want, ENTER_GETEVENTS, None)
    }
}

/// [`Queue::reap`] on `ring`: each completion's entry index (its user data) and result.
pub(crate) fn reap(ring: &mut IoUring, done: &mut dyn FnMut(usize, i32)) -> usize {
    let mut k = 0;
    for c in ring.completion() {
        done(c.user_data() as usize, c.result());
        k += 1;
    }
    k
}

/// Sends entries `0..n` through `q`, calling `done` once for each. Returns only once
/// every entry the kernel took has completed; on an error, after `done(i, -errno)` for
/// every entry it never took.
pub(crate) fn send_all(
    q: &mut impl Queue,
    n: usize,
    done: &mut dyn FnMut(usize, i32),
) -> io::Result<()> {
    // Entries 0..pushed are in the submission queue or were; the kernel consumes it in
    // order, so entries 0..taken are the ones it took (each answered by exactly one
    // completion), and `reaped` of those completions were read.
    let (mut pushed, mut taken, mut reaped) = (0, 0, 0);
    let mut stalls = 0;
    while reaped < n {
        while pushed < n && q.push(pushed) {
            pushed += 1;
        }
        let before = (taken, reaped);
        match q.submit_and_wait(pushed - reaped) {
            Ok(k) => taken += k,
            // Nothing was taken by this call: retry a transient refusal.
            Err(e) if transient(&e) => {}
            Err(e) => return Err(fail(q, e, taken, reaped, n, done)),
        }
        reaped += q.reap(done);
        if (taken, reaped) == before {
            stalls += 1;
            if stalls > MAX_STALLS {
                let e = io::Error::new(io::ErrorKind::WouldBlock, "io_uring makes no progress");
                return Err(fail(q, e, taken, reaped, n, done));
            }
        } else {
            stalls = 0;
        }
    }
    Ok(())
}

/// After error `e`: waits for every entry the kernel took (it may still be reading their
/// buffers), then answers the ones it never took with `-errno`.
fn fail(
    q: &mut impl Queue,
    e: io::Error,
    taken: usize,
    mut reaped: usize,
    n: usize,
    done: &mut dyn FnMut(usize, i32),
) -> io::Error {
    let mut stalls = 0;
    while reaped < taken {
        let r = q.wait(taken - reaped);
        let got = q.reap(done);
        reaped += got;
        if got == 0 {
            // Only a signal (EINTR) should end the wait early; bound the retries anyway.
            stalls += 1;
            if stalls > MAX_STALLS {
                // The kernel may still read buffers the caller is about to reuse and
                // cannot say when it stops: going on would be undefined behaviour.
                log::error!(
                    "io_uring cannot wait for sends in flight ({e}; waiting: {r:?}): aborting"
                );
                std::process::abort();
            }
        }
    }
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    for i in taken..n {
        done(i, -errno);
    }
    e
}

/// An error after which the same call may succeed.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
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
            eprintln!("io_uring unavailable here: nothing to test");
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
        ring.broken = true;
        let mut results = [0; 1];
        // SAFETY: as above.
        let r = unsafe { ring.send(&hdrs, &[a.as_raw_fd()], |i, r| results[i] = r) };
        assert!(r.is_err());
        assert_eq!(results, [-libc::EBADFD]);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.recv_from(&mut [0u8; 16]).is_err(), "nothing was sent");
    }

    /// A kernel that takes and fails as scripted: each submit takes up to the next
    /// scripted count of queued entries (completing `complete_now` of them at once) or
    /// fails with an errno; a wait completes everything in flight.
    struct Fake {
        cap: usize,
        queued: std::collections::VecDeque<usize>,
        in_flight: Vec<usize>,
        completed: Vec<usize>,
        script: std::collections::VecDeque<Result<(usize, usize), i32>>,
    }

    impl Fake {
        fn new(cap: usize, script: Vec<Result<(usize, usize), i32>>) -> Fake {
            Fake {
                cap,
                queued: Default::default(),
                in_flight: Vec::new(),
                completed: Vec::new(),
                script: script.into(),
            }
        }
    }

    impl Queue for Fake {
        fn push(&mut self, i: usize) -> bool {
            if self.queued.len() == self.cap {
                return false;
            }
            self.queued.push_back(i);
            true
        }

        fn submit_and_wait(&mut self, _want: usize) -> io::Result<usize> {
            let (take, now) = match self.script.pop_front() {
                Some(Err(errno)) => return Err(io::Error::from_raw_os_error(errno)),
                Some(Ok(t)) => t,
                // Unscripted: takes everything and completes it, and what was in flight.
                None => {
                    self.completed.append(&mut self.in_flight);
                    (usize::MAX, usize::MAX)
                }
            };
            let mut k = 0;
            while k < take {
                let Some(i) = self.queued.pop_front() else {
                    break;
                };
                if k < now {
                    self.completed.push(i);
                } else {
                    self.in_flight.push(i);
                }
                k += 1;
            }
            Ok(k)
        }

        fn wait(&mut self, _want: usize) -> io::Result<usize> {
            self.completed.append(&mut self.in_flight);
            Ok(0)
        }

        fn reap(&mut self, done: &mut dyn FnMut(usize, i32)) -> usize {
            let k = self.completed.len();
            for i in self.completed.drain(..) {
                done(i, 100);
            }
            k
        }
    }

    #[test]
    fn an_error_after_a_short_submit_waits_for_what_the_kernel_took() {
        // Six entries, four at a time: the first submit takes two and completes one, the
        // second fails. The entry in flight must complete before the call returns.
        let mut k = Fake::new(4, vec![Ok((2, 1)), Err(libc::ENOMEM)]);
        let mut results = vec![Vec::new(); 6];
        let r = send_all(&mut k, 6, &mut |i, res| results[i].push(res));
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOMEM));
        assert!(k.in_flight.is_empty(), "returned with sends in flight");
        let want: Vec<Vec<i32>> = [100, 100]
            .into_iter()
            .chain([-libc::ENOMEM; 4])
            .map(|r| vec![r])
            .collect();
        assert_eq!(results, want, "every message answered once");
    }

    #[test]
    fn transient_refusals_are_retried() {
        let mut k = Fake::new(4, vec![Err(libc::EINTR), Err(libc::EBUSY), Ok((1, 0))]);
        let mut results = vec![Vec::new(); 6];
        send_all(&mut k, 6, &mut |i, res| results[i].push(res)).unwrap();
        assert!(results.iter().all(|r| r == &vec![100]), "{results:?}");
    }
}
