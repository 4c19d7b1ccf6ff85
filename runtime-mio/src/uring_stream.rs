//! The stream reads, and the stream writes, of a whole poll round in one system call each:
//! io_uring (Linux ≥ 5.6 for `IORING_OP_SEND` and `IORING_OP_RECV`).
//!
//! TURN over TCP (RFC 8656 §3.1, framing RFC 6062 / RFC 8656 §11.5) gives every client a
//! connection of its own, so a busy round reads and writes many sockets once each: one
//! `recv` and one `send` per connection. A submission queue takes entries for any number of
//! sockets: one `io_uring_enter(2)` submits them and waits for their completions, with the
//! bookkeeping of [`crate::uring`] (entries taken, reaped, a ring that failed is never
//! entered again).
//!
//! Every entry carries `MSG_DONTWAIT` (and a send `MSG_NOSIGNAL`): an empty or full socket
//! completes at once with `EAGAIN` instead of being parked, so the call never blocks; the
//! runtime then waits for the socket's next edge as it does after a `WouldBlock`.

use crate::uring::Ring;
use io_uring::{opcode, squeue, types, Probe};
use std::io;
use std::os::fd::RawFd;

/// Which way a call moves bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// `IORING_OP_SEND` of each buffer (`MSG_DONTWAIT | MSG_NOSIGNAL`).
    Send,
    /// `IORING_OP_RECV` into each buffer (`MSG_DONTWAIT`).
    Recv,
}

/// A ring for the stream reads and writes of one loop.
pub struct UringStream {
    ring: Ring,
    /// One call's results, by entry (kept to spare an allocation per call).
    results: Vec<i32>,
}

impl UringStream {
    /// A ring of `entries` submission entries, if this kernel has io_uring with
    /// `IORING_OP_SEND` and `IORING_OP_RECV` and lets this process use it.
    pub fn new(entries: u32) -> io::Result<UringStream> {
        let mut ring = Ring::new(entries, opcode::Send::CODE, "IORING_OP_SEND")?;
        let mut probe = Probe::new();
        ring.raw().submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::Recv::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_OP_RECV",
            ));
        }
        recv_completes_at_once(&mut ring)?;
        Ok(UringStream {
            ring,
            results: Vec::with_capacity(entries as usize),
        })
    }

    /// Sends `bufs[i]` on, or receives into `bufs[i]` from, socket `fds[i]`, for every
    /// `i`, and calls `done(i, result)` once for each, in order (bytes moved, 0 for a
    /// receive at the end of the stream, or a negative errno). Returns only once every
    /// entry the kernel took has completed. On an error of the ring itself, every entry
    /// that did not move bytes is answered with `-ECANCELED` (try the portable path) and
    /// the error is returned; the ring then refuses every later call (answering
    /// `-ECANCELED`).
    ///
    /// # Safety
    ///
    /// Every iovec must point at memory that stays valid (and, for `Dir::Recv`, writable
    /// and not otherwise accessed) for the duration of the call.
    pub unsafe fn submit(
        &mut self,
        dir: Dir,
        fds: &[RawFd],
        bufs: &[libc::iovec],
        mut done: impl FnMut(usize, i32),
    ) -> io::Result<()> {
        let n = bufs.len().min(fds.len());
        let results = &mut self.results;
        results.clear();
        results.resize(n, -libc::ECANCELED);
        let entry = |i: usize| build(dir, fds.get(i).copied()?, bufs.get(i)?);
        // SAFETY: entry `i` points at buffer `i` (at most `iov_len` bytes), which the
        // caller keeps valid (and, for receives, unshared) until this returns; `run`
        // returns only once the kernel is done with every entry it took.
        let r = unsafe {
            self.ring.run(n, entry, |i, res| {
                if let Some(slot) = results.get_mut(i) {
                    *slot = res;
                }
            })
        };
        answer(results, r.is_err(), &mut done);
        r
    }
}

/// Posts one `MSG_DONTWAIT` receive on an empty stream socket of our own and checks that
/// it completed during the submission, with `EAGAIN`: a kernel that parked it instead would
/// stall the loop (every call waits for all of its entries) until bytes came.
fn recv_completes_at_once(ring: &mut Ring) -> io::Result<()> {
    let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    a.set_nonblocking(true)?;
    let buf: &'static mut [u8; 8] = Box::leak(Box::new([0u8; 8]));
    let e = opcode::Recv::new(
        types::Fd(std::os::fd::AsRawFd::as_raw_fd(&a)),
        buf.as_mut_ptr(),
        8,
    )
    .flags(libc::MSG_DONTWAIT)
    .build()
    .user_data(7);
    let raw = ring.raw();
    // SAFETY: the entry points at `buf`, leaked (8 bytes, once per loop at start): if the
    // kernel does not complete it here, whatever it writes later lands in memory that is
    // never freed or reused.
    unsafe { raw.submission().push(&e) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    let submitted = raw.submit();
    match (submitted, raw.completion().next().map(|c| c.result())) {
        (_, Some(r)) if r == -libc::EAGAIN => Ok(()),
        (Err(e), _) => Err(e),
        (Ok(_), Some(r)) => Err(io::Error::other(format!(
            "io_uring stream receive on an empty socket returned {r}"
        ))),
        (Ok(_), None) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring parks a MSG_DONTWAIT stream receive",
        )),
    }
}

/// The entry that moves buffer `b` on socket `fd` in direction `dir`.
fn build(dir: Dir, fd: RawFd, b: &libc::iovec) -> Option<squeue::Entry> {
    let len = u32::try_from(b.iov_len).unwrap_or(u32::MAX);
    Some(match dir {
        Dir::Send => opcode::Send::new(types::Fd(fd), b.iov_base.cast_const().cast(), len)
            .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            .build(),
        Dir::Recv => opcode::Recv::new(types::Fd(fd), b.iov_base.cast(), len)
            .flags(libc::MSG_DONTWAIT)
            .build(),
    })
}

/// Answers each entry once, in index order, with its result; after an error of the ring
/// (`ring_failed`) an entry that moved nothing is answered `-ECANCELED` whatever the ring
/// said (the entries it never took got its errno, which is no error of their sockets), so
/// the caller tries the portable path: a socket that really failed fails there again.
fn answer(results: &[i32], ring_failed: bool, done: &mut dyn FnMut(usize, i32)) {
    for (i, &res) in results.iter().enumerate() {
        let res = if ring_failed && res < 0 && res != -libc::EAGAIN {
            -libc::ECANCELED
        } else {
            res
        };
        done(i, res);
    }
}

/// What a send entry's result means for the connection's pending bytes.
#[derive(Debug)]
pub enum Wrote {
    /// This many bytes left (all, or fewer: the socket buffer filled, and its writable
    /// edge will come as after a `WouldBlock`).
    Sent(usize),
    /// The socket took nothing now (`EAGAIN`): the bytes wait for the writable edge.
    Blocked,
    /// Not attempted (the ring failed) or interrupted: write with the portable path.
    Retry,
    /// The socket failed: the connection is closed.
    Failed(io::Error),
}

/// The meaning of send result `res` for `len` pending bytes.
pub fn wrote(res: i32, len: usize) -> Wrote {
    match usize::try_from(res) {
        Ok(0) if len > 0 => Wrote::Failed(io::ErrorKind::WriteZero.into()),
        Ok(n) => Wrote::Sent(n.min(len)),
        Err(_) => match -res {
            libc::EAGAIN => Wrote::Blocked,
            libc::EINTR | libc::EBADFD | libc::ECANCELED => Wrote::Retry,
            errno => Wrote::Failed(io::Error::from_raw_os_error(errno)),
        },
    }
}

/// What a receive entry's result means for the connection.
#[derive(Debug)]
pub enum Read {
    /// The peer closed its side (a read of 0).
    Closed,
    /// Bytes read.
    Data {
        /// How many.
        n: usize,
        /// They filled the slot: more may wait.
        full: bool,
    },
    /// Nothing there (`EAGAIN`): wait for the next readable edge.
    Nothing,
    /// Not attempted (the ring failed) or interrupted: read with the portable path.
    Retry,
    /// The socket failed: the connection is closed.
    Failed(io::Error),
}

/// The meaning of receive result `res` into a slot of `slot` bytes.
pub fn read(res: i32, slot: usize) -> Read {
    match usize::try_from(res) {
        Ok(0) => Read::Closed,
        Ok(n) => Read::Data {
            n: n.min(slot),
            full: n >= slot,
        },
        Err(_) => match -res {
            libc::EAGAIN => Read::Nothing,
            libc::EINTR | libc::EBADFD | libc::ECANCELED => Read::Retry,
            errno => Read::Failed(io::Error::from_raw_os_error(errno)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uring::run_all;
    use crate::uring::tests::Fake;
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn iov(b: &[u8]) -> libc::iovec {
        libc::iovec {
            iov_base: b.as_ptr().cast_mut().cast(),
            iov_len: b.len(),
        }
    }

    /// `k` connected loopback pairs (ours, theirs), ours non-blocking.
    fn pairs(k: usize) -> Vec<(TcpStream, TcpStream)> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        (0..k)
            .map(|_| {
                let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (b, _) = l.accept().unwrap();
                a.set_nonblocking(true).unwrap();
                b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .unwrap();
                (a, b)
            })
            .collect()
    }

    #[test]
    fn one_call_writes_and_one_reads_several_connections_in_order() {
        let Ok(mut ring) = UringStream::new(2) else {
            crate::uring::tests::unavailable("UringStream");
            return;
        };
        // Five connections through a ring of 2 entries: several submissions per call.
        let mut p = pairs(5);
        let data: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + i as usize]).collect();
        let fds: Vec<RawFd> = p.iter().map(|(a, _)| a.as_raw_fd()).collect();
        let bufs: Vec<libc::iovec> = data.iter().map(|d| iov(d)).collect();
        let mut res = vec![Vec::new(); 5];
        // SAFETY: `data` outlives the call and is not touched during it.
        unsafe { ring.submit(Dir::Send, &fds, &bufs, |i, r| res[i].push(r)) }.unwrap();
        let want: Vec<Vec<i32>> = (0..5).map(|i| vec![100 + i]).collect();
        assert_eq!(res, want);
        for (i, (_, b)) in p.iter_mut().enumerate() {
            let mut got = vec![0u8; 100 + i];
            b.read_exact(&mut got).unwrap();
            assert_eq!(got, data[i]);
            // Their answer: two writes that must arrive in order, and on 3 nothing.
            if i != 3 {
                b.write_all(&[i as u8, 1]).unwrap();
                b.write_all(&[i as u8, 2]).unwrap();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let slots = vec![0u8; 5 * 64];
        let bufs: Vec<libc::iovec> = slots.chunks(64).map(iov).collect();
        let mut res = vec![0; 5];
        // SAFETY: `slots` outlives the call and is not read or written during it.
        unsafe { ring.submit(Dir::Recv, &fds, &bufs, |i, r| res[i] = r) }.unwrap();
        assert_eq!(res, [4, 4, 4, -libc::EAGAIN, 4]);
        for (i, s) in slots.chunks(64).enumerate() {
            if i != 3 {
                assert_eq!(&s[..4], &[i as u8, 1, i as u8, 2], "connection {i}");
            }
        }
        assert!(matches!(read(res[3], 64), Read::Nothing));
        assert!(matches!(read(res[0], 64), Read::Data { n: 4, full: false }));
    }

    #[test]
    fn a_full_socket_takes_part_and_a_closed_peer_reads_as_zero() {
        let Ok(mut ring) = UringStream::new(4) else {
            crate::uring::tests::unavailable("UringStream");
            return;
        };
        let p = pairs(2);
        let big = vec![7u8; 16 << 20];
        let fds = [p[0].0.as_raw_fd()];
        let mut res = 0;
        // SAFETY: `big` outlives the call.
        unsafe { ring.submit(Dir::Send, &fds, &[iov(&big)], |_, r| res = r) }.unwrap();
        // The peer does not read: the socket buffers take part of 16 MiB, not all.
        assert!(res > 0 && (res as usize) < big.len(), "sent {res}");
        assert!(matches!(wrote(res, big.len()), Wrote::Sent(n) if n == res as usize));
        // Full now: the next send takes nothing, without blocking.
        // SAFETY: as above.
        unsafe { ring.submit(Dir::Send, &fds, &[iov(&big)], |_, r| res = r) }.unwrap();
        assert_eq!(res, -libc::EAGAIN);
        assert!(matches!(wrote(res, 1), Wrote::Blocked));
        // A peer that closed reads as 0 (after the bytes it sent first).
        let (a, mut b) = p.into_iter().nth(1).unwrap();
        b.write_all(b"last").unwrap();
        drop(b);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let slot = vec![0u8; 64];
        let fds = [a.as_raw_fd(), a.as_raw_fd()];
        let mut res = vec![];
        // SAFETY: `slot` outlives the call. Two entries on one socket, in order: the
        // second reads into the same slot, which nobody reads during the call.
        unsafe {
            ring.submit(Dir::Recv, &fds, &[iov(&slot), iov(&slot)], |_, r| {
                res.push(r)
            })
        }
        .unwrap();
        assert_eq!(res, [4, 0]);
        assert!(matches!(read(0, 64), Read::Closed));
    }

    #[test]
    fn a_broken_ring_answers_every_entry_and_moves_nothing() {
        let Ok(mut ring) = UringStream::new(4) else {
            crate::uring::tests::unavailable("UringStream");
            return;
        };
        let p = pairs(1);
        ring.ring.break_it();
        let mut res = vec![];
        let data = [1u8; 8];
        // SAFETY: `data` outlives the call.
        let r = unsafe {
            ring.submit(Dir::Send, &[p[0].0.as_raw_fd()], &[iov(&data)], |_, r| {
                res.push(r)
            })
        };
        assert!(r.is_err());
        assert_eq!(res, [-libc::ECANCELED]);
        assert!(matches!(wrote(res[0], 8), Wrote::Retry), "rewritten later");
        p[0].1.set_nonblocking(true).unwrap();
        assert!((&p[0].1).read(&mut [0u8; 8]).is_err(), "nothing was sent");
    }

    /// Five writes of 10 bytes: all, part, nothing, a reset, none.
    fn five_writes(i: usize) -> i32 {
        [10, 4, -libc::EAGAIN, -libc::ECONNRESET, 0][i]
    }

    /// Four reads into 16-byte slots: a full one, a close, two of 5 bytes.
    fn four_reads(i: usize) -> i32 {
        [16, 0, 5, 5][i]
    }

    /// `run_all` over the fake kernel, answered as [`UringStream::submit`] answers.
    fn through(k: &mut Fake, n: usize, done: &mut dyn FnMut(usize, i32)) -> io::Result<()> {
        let mut results = vec![-libc::ECANCELED; n];
        let r = run_all(k, n, &mut |i, res| results[i] = res);
        answer(&results, r.is_err(), done);
        r
    }

    #[test]
    fn partial_submissions_interruptions_and_errors_map_to_what_each_connection_needs() {
        // Through a queue of 2: the kernel takes one, is interrupted, takes the rest.
        let mut k = Fake::answering(
            2,
            vec![Ok((1, 1)), Err(libc::EINTR), Ok((2, 2))],
            five_writes,
        );
        let mut got: Vec<Vec<Wrote>> = (0..5).map(|_| Vec::new()).collect();
        through(&mut k, 5, &mut |i, r| got[i].push(wrote(r, 10))).unwrap();
        assert!(got.iter().all(|g| g.len() == 1), "each answered once");
        let got: Vec<Wrote> = got.into_iter().flatten().collect();
        assert!(matches!(got[0], Wrote::Sent(10)));
        assert!(matches!(got[1], Wrote::Sent(4)), "the rest stays queued");
        assert!(matches!(got[2], Wrote::Blocked));
        assert!(matches!(&got[3], Wrote::Failed(e) if e.raw_os_error() == Some(libc::ECONNRESET)));
        assert!(
            matches!(got[4], Wrote::Failed(_)),
            "a send of 0 never loops"
        );

        // The ring fails after taking two of four reads: those two count, the other two
        // are read again the portable way (never lost, never doubled).
        let mut k = Fake::answering(4, vec![Ok((2, 2)), Err(libc::ENOMEM)], four_reads);
        let mut got: Vec<Vec<Read>> = (0..4).map(|_| Vec::new()).collect();
        let r = through(&mut k, 4, &mut |i, r| got[i].push(read(r, 16)));
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOMEM));
        let got: Vec<Read> = got.into_iter().flatten().collect();
        assert_eq!(got.len(), 4);
        assert!(matches!(got[0], Read::Data { n: 16, full: true }));
        assert!(matches!(got[1], Read::Closed));
        assert!(
            matches!(got[2], Read::Retry),
            "never taken: not a socket error"
        );
        assert!(matches!(got[3], Read::Retry));
        assert!(k.in_flight.is_empty());
    }
}
