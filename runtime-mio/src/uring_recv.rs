//! The receives of a whole poll round in one system call: io_uring
//! (`IORING_OP_RECVMSG`, Linux ≥ 5.3).
//!
//! Each allocation has its own relay socket (RFC 8656 §5), so at paced media loads a poll
//! round finds a few ready sockets holding about one datagram each, and `recvmmsg(2)`,
//! which batches per socket, costs a call per socket. Here every ready socket of the
//! round gets a few `recvmsg` entries (each into its own receive slot, with its own
//! message header), and one `io_uring_enter(2)` runs them all ([`crate::uring`]).
//!
//! Every entry carries `MSG_DONTWAIT`, so it completes during the submission: with a
//! datagram, or with `EAGAIN` when the socket's queue is empty, which says the socket is
//! drained (its readiness is edge-triggered: a datagram arriving later is a new event).
//! A socket whose entries all got a datagram may hold more: the caller reads it on with
//! `recvmmsg`, which batches well on a busy socket. Entries are issued in submission
//! order, so a socket's datagrams fill its slots in the order they arrived.
//!
//! `MSG_TRUNC` is passed too, so that a datagram longer than its slot reports its real
//! length and is recognised (and dropped) even where the kernel would not write back the
//! header's flags.

use crate::uring::Ring;
use io_uring::{opcode, types};
use std::io;
use std::ops::Range;
use std::os::fd::RawFd;

/// A socket to read in a call: its descriptor and how many receives to post for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// The socket (non-blocking UDP).
    pub fd: RawFd,
    /// Receives to post: the most datagrams one call takes from it.
    pub k: usize,
}

/// What a call did on one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    /// The message headers (receive slots) its entries used, in arrival order; those
    /// that got no datagram hold none.
    pub slots: Range<usize>,
    /// Datagrams received.
    pub datagrams: usize,
    /// What to do with the socket next.
    pub next: Next,
}

/// What to do with a socket after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Its queue was found empty: wait for its next readiness event.
    Drained,
    /// It may hold more (every entry got a datagram, or entries did not run): read on.
    More,
    /// A receive failed with this errno: wait for the next readiness event.
    Failed(i32),
}

/// A ring for the receives of one loop, and the scratch space of a call.
pub struct UringRecv {
    ring: Ring,
    /// Per entry of a call: its socket and its header.
    at: Vec<(RawFd, usize)>,
    /// Per entry of a call: bytes received, or a negative errno.
    results: Vec<i32>,
}

impl UringRecv {
    /// A ring of `entries` submission entries (the most entries one call posts), if this
    /// kernel has io_uring with `IORING_OP_RECVMSG`, lets this process use it, and
    /// completes a `MSG_DONTWAIT` receive on an empty socket at once (a kernel that would
    /// park it instead would stall the loop until a datagram came).
    pub fn new(entries: u32) -> io::Result<UringRecv> {
        let mut ring = Ring::new(entries, opcode::RecvMsg::CODE, "IORING_OP_RECVMSG")?;
        check_completes_at_once(&mut ring)?;
        let n = entries as usize;
        Ok(UringRecv {
            ring,
            at: Vec::with_capacity(n),
            results: Vec::with_capacity(n),
        })
    }

    /// Receives from every socket of `wants` (up to `wants[i].k` datagrams each) into
    /// headers `first..end` of `hdrs`, in one call, and says what each socket got
    /// (appended to `out`, one per socket served, in `wants` order). Socket `i` gets
    /// consecutive headers, fewer than it wants when `end` is near; the sockets that get
    /// none are not served (`out` is shorter than `wants`). What each header used got is
    /// then in [`UringRecv::results`] (bytes ≥ 0: a datagram, and the header holds its
    /// sender and flags).
    ///
    /// An error of the ring is returned after `out` was filled (the sockets whose entries
    /// did not run are [`Next::More`]); the ring then refuses every later call.
    ///
    /// # Safety
    ///
    /// Every header of `first..end` must point at a live iovec array over live buffers
    /// and at a live address buffer, none of them read or written by anyone else during
    /// the call.
    pub unsafe fn recv(
        &mut self,
        hdrs: &mut [libc::mmsghdr],
        first: usize,
        end: usize,
        wants: &[Want],
        out: &mut Vec<Got>,
    ) -> io::Result<()> {
        let end = end.min(hdrs.len());
        let at0 = out.len();
        plan(wants, first, end, &mut self.at, out);
        let n = self.at.len();
        self.results.clear();
        self.results.resize(n, -libc::EIO);
        let len = hdrs.len();
        let base = hdrs.as_mut_ptr();
        let at = &self.at;
        let results = &mut self.results;
        let entry = |i: usize| {
            let &(fd, h) = at.get(i)?;
            if h >= len {
                return None;
            }
            // SAFETY: `h < len`: the pointer stays inside `hdrs`, and no reference to the
            // header is made (the kernel writes it during the call).
            let msg = unsafe { std::ptr::addr_of_mut!((*base.add(h)).msg_hdr) };
            Some(
                opcode::RecvMsg::new(types::Fd(fd), msg)
                    .flags((libc::MSG_DONTWAIT | libc::MSG_TRUNC) as u32)
                    .build(),
            )
        };
        // SAFETY: each entry points at one header of `hdrs`, borrowed exclusively for the
        // call, and through it at the iovecs, buffers and addresses the caller keeps alive
        // and unshared until this returns (the contract above); `run` returns only once
        // the kernel is done with every entry it took. Results are only stored during the
        // call; the headers are read after it.
        let r = unsafe {
            self.ring.run(n, entry, |i, res| {
                if let Some(x) = results.get_mut(i) {
                    *x = res;
                }
            })
        };
        let served = out.get_mut(at0..).unwrap_or_default();
        settle(served, first, &self.results, r.is_err());
        r
    }

    /// What the headers of the last call got, from its `first` on: bytes received (the
    /// header holds the sender and flags), or a negative errno.
    pub fn results(&self) -> &[i32] {
        &self.results
    }
}

/// Lays out a call: socket `i` of `wants` gets `min(k, left)` consecutive headers from
/// `first` (one entry each, appended to `at`), and a [`Got`] in `out`; stops at the first
/// socket that gets none.
fn plan(
    wants: &[Want],
    first: usize,
    end: usize,
    at: &mut Vec<(RawFd, usize)>,
    out: &mut Vec<Got>,
) {
    at.clear();
    let mut h = first;
    for w in wants {
        let k = w.k.min(end.saturating_sub(h));
        if k == 0 {
            break;
        }
        for j in h..h + k {
            at.push((w.fd, j));
        }
        out.push(Got {
            slots: h..h + k,
            datagrams: 0,
            next: Next::Drained,
        });
        h += k;
    }
}

/// Fills in what each socket got from the results of its entries (`results[j]` for
/// header `first + j`). `ring_failed`: the call ended with an error of the ring, and the
/// entries it never took were answered with its errno.
fn settle(out: &mut [Got], first: usize, results: &[i32], ring_failed: bool) {
    for g in out {
        let res = results
            .get(g.slots.start - first..g.slots.end - first)
            .unwrap_or_default();
        g.datagrams = res.iter().filter(|&&r| r >= 0).count();
        let drained = res.contains(&-libc::EAGAIN);
        let error = res.iter().find(|&&r| r < 0 && r != -libc::EAGAIN);
        g.next = match error {
            _ if drained => Next::Drained,
            Some(_) if ring_failed => Next::More,
            Some(&e) if e == -libc::EINTR => Next::More,
            Some(&e) => Next::Failed(-e),
            None if g.datagrams == g.slots.len() && !res.is_empty() => Next::More,
            None => Next::Drained,
        };
    }
}

/// Posts one `MSG_DONTWAIT` receive on an empty socket of our own and checks that it
/// completed during the submission, with `EAGAIN`.
fn check_completes_at_once(ring: &mut Ring) -> io::Result<()> {
    struct Probe {
        hdr: libc::msghdr,
        iov: libc::iovec,
        buf: [u8; 8],
    }
    let (a, _b) = std::os::unix::net::UnixDatagram::pair()?;
    a.set_nonblocking(true)?;
    // SAFETY: msghdr and iovec are plain old data; all zeroes is a valid value.
    let mut p: Box<Probe> = Box::new(unsafe { std::mem::zeroed() });
    p.iov = libc::iovec {
        iov_base: p.buf.as_mut_ptr().cast(),
        iov_len: p.buf.len(),
    };
    p.hdr.msg_iov = &mut p.iov;
    p.hdr.msg_iovlen = 1;
    let e = opcode::RecvMsg::new(types::Fd(std::os::fd::AsRawFd::as_raw_fd(&a)), &mut p.hdr)
        .flags(libc::MSG_DONTWAIT as u32)
        .build()
        .user_data(7);
    let raw = ring.raw();
    // SAFETY: the entry points at `p`, on the heap; if the kernel does not complete it
    // here, `p` is leaked below, so that whatever the kernel does with it later lands in
    // memory that is never freed.
    unsafe { raw.submission().push(&e) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    let submitted = raw.submit();
    let res = raw.completion().next().map(|c| c.result());
    match (submitted, res) {
        (_, Some(r)) if r == -libc::EAGAIN => Ok(()),
        (Ok(_), Some(r)) => Err(io::Error::other(format!(
            "io_uring receive on an empty socket returned {r}"
        ))),
        (r, None) => {
            Box::leak(p);
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring parks a MSG_DONTWAIT receive ({r:?})"),
            ))
        }
        (Err(e), Some(_)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uring::tests::Fake;
    use crate::uring::{run_all, Queue};

    fn wants(ks: &[usize]) -> Vec<Want> {
        ks.iter()
            .enumerate()
            .map(|(i, &k)| Want { fd: i as RawFd, k })
            .collect()
    }

    /// Plans `ks` from header `first` to `end`, runs the call through `kernel`, settles.
    fn call(kernel: &mut Fake, ks: &[usize], first: usize, end: usize) -> (Vec<Got>, bool) {
        let mut at = Vec::new();
        let mut out = Vec::new();
        plan(&wants(ks), first, end, &mut at, &mut out);
        let mut results = vec![i32::MIN; at.len()];
        let mut answered = vec![0; at.len()];
        let r = run_all(kernel, at.len(), &mut |i, res| {
            results[i] = res;
            answered[i] += 1;
        });
        assert!(answered.iter().all(|&n| n == 1), "each entry answered once");
        assert!(
            kernel.in_flight.is_empty(),
            "returned with entries in flight"
        );
        settle(&mut out, first, &results, r.is_err());
        (out, r.is_err())
    }

    #[test]
    fn sockets_get_consecutive_headers_until_the_end() {
        let mut at = Vec::new();
        let mut out = Vec::new();
        plan(&wants(&[2, 8, 2, 2]), 60, 64, &mut at, &mut out);
        let slots: Vec<_> = out.iter().map(|g| g.slots.clone()).collect();
        assert_eq!(slots, vec![60..62, 62..64], "the third socket gets none");
        assert_eq!(at, vec![(0, 60), (0, 61), (1, 62), (1, 63)]);
    }

    #[test]
    fn results_say_drained_more_or_failed() {
        // Entry answers by header: 0-1 data, data (full: more); 2-3 data, EAGAIN
        // (drained); 4-5 EAGAIN, data (a datagram came between: drained all the same);
        // 6-7 ECONNREFUSED, data (failed); 8-9 EINTR, EAGAIN (drained).
        let mut k = Fake::answering(64, vec![], |i| match i {
            3 | 4 | 9 => -libc::EAGAIN,
            6 => -libc::ECONNREFUSED,
            8 => -libc::EINTR,
            _ => 20,
        });
        let (out, failed) = call(&mut k, &[2, 2, 2, 2, 2], 0, 64);
        assert!(!failed);
        let got: Vec<_> = out.iter().map(|g| (g.datagrams, g.next)).collect();
        assert_eq!(
            got,
            vec![
                (2, Next::More),
                (1, Next::Drained),
                (1, Next::Drained),
                (1, Next::Failed(libc::ECONNREFUSED)),
                (0, Next::Drained),
            ]
        );
    }

    #[test]
    fn a_short_submit_then_a_ring_error_leaves_the_rest_to_be_read_on() {
        // Three sockets of two entries; the kernel takes three entries (completing one at
        // once, the others later), then the ring fails: what ran is kept, the sockets
        // whose entries did not all run are read on.
        let mut k = Fake::answering(4, vec![Ok((3, 1)), Err(libc::ENOMEM)], |i| {
            if i == 1 {
                -libc::EAGAIN
            } else {
                30
            }
        });
        let (out, failed) = call(&mut k, &[2, 2, 2], 0, 64);
        assert!(failed);
        let got: Vec<_> = out.iter().map(|g| (g.datagrams, g.next)).collect();
        assert_eq!(
            got,
            vec![(1, Next::Drained), (1, Next::More), (0, Next::More)]
        );
    }

    #[test]
    fn interrupted_and_busy_submissions_are_retried() {
        let mut k = Fake::new(2, vec![Err(libc::EINTR), Ok((1, 0)), Err(libc::EAGAIN)]);
        let (out, failed) = call(&mut k, &[1, 3], 10, 64);
        assert!(!failed);
        let got: Vec<_> = out.iter().map(|g| (g.datagrams, g.next)).collect();
        assert_eq!(got, vec![(1, Next::More), (3, Next::More)]);
    }

    /// Pushes refused at once: the call fails without the kernel taking anything.
    struct Refusing;
    impl Queue for Refusing {
        fn push(&mut self, _: usize) -> bool {
            true
        }
        fn submit_and_wait(&mut self, _: usize) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::EBADF))
        }
        fn wait(&mut self, _: usize) -> io::Result<usize> {
            Ok(0)
        }
        fn reap(&mut self, _: &mut dyn FnMut(usize, i32)) -> usize {
            0
        }
    }

    #[test]
    fn a_refused_submission_reads_every_socket_on() {
        let mut at = Vec::new();
        let mut out = Vec::new();
        plan(&wants(&[2, 8]), 0, 64, &mut at, &mut out);
        let mut results = vec![0; at.len()];
        let r = run_all(&mut Refusing, at.len(), &mut |i, res| results[i] = res);
        assert!(r.is_err());
        assert!(results.iter().all(|&x| x == -libc::EBADF));
        settle(&mut out, 0, &results, true);
        assert!(out.iter().all(|g| g.next == Next::More && g.datagrams == 0));
    }

    mod real {
        use super::*;
        use crate::test_sockets::{bound, wait_queued};
        use std::os::fd::AsRawFd;

        #[test]
        fn a_datagram_longer_than_its_buffer_is_flagged() {
            let Ok(mut ring) = UringRecv::new(4) else {
                crate::uring::tests::unavailable("UringRecv");
                return;
            };
            let (a, b) = (bound(), bound());
            a.send_to(&[9u8; 40], b.local_addr().unwrap()).unwrap();
            wait_queued(&b, 1);
            let mut data = [0u8; 16];
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            // SAFETY: all-zero is a valid sockaddr_storage and mmsghdr.
            let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut hdrs = [unsafe { std::mem::zeroed::<libc::mmsghdr>() }; 2];
            for h in &mut hdrs {
                h.msg_hdr.msg_iov = &mut iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = std::mem::size_of_val(&addr) as libc::socklen_t;
            }
            let mut out = Vec::new();
            let wants = [Want {
                fd: b.as_raw_fd(),
                k: 1,
            }];
            // SAFETY: header 1 points at `iov` over `data` and at `addr`, all live and
            // untouched until the call returns (header 0 is not used).
            unsafe { ring.recv(&mut hdrs, 1, 2, &wants, &mut out) }.unwrap();
            assert_eq!(ring.results(), &[40], "the datagram's real length");
            assert_ne!(hdrs[1].msg_hdr.msg_flags & libc::MSG_TRUNC, 0);
            assert_eq!(data, [9u8; 16]);
            assert_eq!(out[0].datagrams, 1);
        }
    }
}
