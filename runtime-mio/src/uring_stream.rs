//! The stream reads, and the stream writes, of a whole poll round in one system call each:
//! io_uring (Linux ≥ 5.6 for `IORING_OP_SEND` and `IORING_OP_RECV`).
//!
//! TURN over TCP (RFC 8656 §3.1, framing RFC 6062 / RFC 8656 §11.5) gives every client a
//! connection of its own, so a busy round reads and writes many sockets once each: one
//! `recv` and one `send` per connection. A submission queue takes entries for any number of
//! sockets: one `io_uring_enter(2)` submits them and waits for their completions, with the
//! bookkeeping of [`crate::uring_send`] (entries taken, reaped, a ring that failed is never
//! entered again).
//!
//! Every entry carries `MSG_DONTWAIT` (and a send `MSG_NOSIGNAL`): an empty or full socket
//! completes at once with `EAGAIN` instead of being parked, so the call never blocks; the
//! runtime then waits for the socket's next edge as it does after a `WouldBlock`.

use crate::uring_send::{reap, send_all, unless_broken, wait, Queue};
use io_uring::{opcode, types, IoUring, Probe};
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
    ring: IoUring,
    /// A call failed and may have left entries in the submission queue that point at
    /// buffers since released: the ring must never be entered again.
    broken: bool,
    /// One call's results, by entry (kept to spare an allocation per call).
    results: Vec<i32>,
}

impl UringStream {
    /// A ring of `entries` submission entries, if this kernel has io_uring with
    /// `IORING_OP_SEND` and `IORING_OP_RECV` and lets this process use it.
    pub fn new(entries: u32) -> io::Result<UringStream> {
        let ring = IoUring::new(entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::Send::CODE) || !probe.is_supported(opcode::Recv::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_OP_SEND / IORING_OP_RECV",
            ));
        }
        Ok(UringStream {
            ring,
            broken: false,
            results: Vec::with_capacity(entries as usize),
        })
    }

    /// Sends `bufs[i]` on, or receives into `bufs[i]` from, socket `fds[i]`, for every
    /// `i`, and calls `done(i, result)` once for each, in order (bytes moved, 0 for a
    /// receive at the end of the stream, or a negative errno). Returns only once every
    /// entry the kernel took has completed. On an error of the ring itself, the entries the
    /// kernel never took (nothing was moved for them) are answered with `-ECANCELED` and the
    /// error is returned; the ring then refuses every later call (answering `-ECANCELED`).
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
        let (ring, results) = (&mut self.ring, &mut self.results);
        unless_broken(&mut self.broken, n, -libc::ECANCELED, &mut done, |done| {
            let mut q = Entries {
                ring,
                dir,
                fds,
                bufs,
                taken: 0,
            };
            run(&mut q, n, results, done)
        })
    }
}

/// What [`run`] needs besides the queue: how many entries the kernel took so far.
trait Taken {
    fn taken(&self) -> usize;
}

/// Runs entries `0..n` through `q` ([`send_all`]) and answers each once, in index order:
/// its result, or `-ECANCELED` if the kernel never took it (the ring failed first).
/// `results` is scratch space kept from call to call.
fn run<Q: Queue + Taken>(
    q: &mut Q,
    n: usize,
    results: &mut Vec<i32>,
    done: &mut dyn FnMut(usize, i32),
) -> io::Result<()> {
    results.clear();
    results.resize(n, -libc::ECANCELED);
    let r = send_all(q, n, &mut |i, res| {
        if let Some(slot) = results.get_mut(i) {
            *slot = res;
        }
    });
    // The kernel takes entries in queue order: those it never took are the last ones.
    let taken = if r.is_err() { q.taken().min(n) } else { n };
    for (i, &res) in results.iter().enumerate() {
        done(i, if i < taken { res } else { -libc::ECANCELED });
    }
    r
}

/// The ring over one call's buffers.
struct Entries<'a> {
    ring: &'a mut IoUring,
    dir: Dir,
    fds: &'a [RawFd],
    bufs: &'a [libc::iovec],
    /// Entries the kernel took, in queue order.
    taken: usize,
}

impl Taken for Entries<'_> {
    fn taken(&self) -> usize {
        self.taken
    }
}

impl Queue for Entries<'_> {
    fn push(&mut self, i: usize) -> bool {
        let (Some(b), Some(&fd)) = (self.bufs.get(i), self.fds.get(i)) else {
            return false;
        };
        let len = u32::try_from(b.iov_len).unwrap_or(u32::MAX);
        let e = match self.dir {
            Dir::Send => opcode::Send::new(types::Fd(fd), b.iov_base.cast_const().cast(), len)
                .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                .build(),
            Dir::Recv => opcode::Recv::new(types::Fd(fd), b.iov_base.cast(), len)
                .flags(libc::MSG_DONTWAIT)
                .build(),
        }
        .user_data(i as u64);
        // SAFETY: the entry points at buffer `i` (at most `iov_len` bytes), which the
        // caller of `UringStream::submit` keeps valid until it returns. Once the kernel
        // takes the entry, `send_all` returns only after reaping its completion (or
        // aborts); an entry never taken is never submitted, as `submit` breaks the ring on
        // an error.
        unsafe { self.ring.submission().push(&e) }.is_ok()
    }

    fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        let k = self.ring.submit_and_wait(want)?;
        self.taken += k;
        Ok(k)
    }

    fn wait(&mut self, want: usize) -> io::Result<usize> {
        wait(self.ring, want)
    }

    fn reap(&mut self, done: &mut dyn FnMut(usize, i32)) -> usize {
        reap(self.ring, done)
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
            eprintln!("io_uring unavailable here: nothing to test");
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
            return;
        };
        let p = pairs(1);
        ring.broken = true;
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

    /// A kernel that takes and fails as scripted, with a result per entry: each submit
    /// takes up to the next scripted count of queued entries or fails with an errno.
    struct Fake {
        cap: usize,
        queued: std::collections::VecDeque<usize>,
        done: Vec<usize>,
        results: Vec<i32>,
        script: std::collections::VecDeque<Result<usize, i32>>,
        taken: usize,
    }

    impl Taken for Fake {
        fn taken(&self) -> usize {
            self.taken
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
            let take = match self.script.pop_front() {
                Some(Err(errno)) => return Err(io::Error::from_raw_os_error(errno)),
                Some(Ok(t)) => t,
                None => usize::MAX,
            };
            let mut k = 0;
            while k < take {
                let Some(i) = self.queued.pop_front() else {
                    break;
                };
                self.done.push(i);
                k += 1;
            }
            self.taken += k;
            Ok(k)
        }

        fn wait(&mut self, _want: usize) -> io::Result<usize> {
            Ok(0)
        }

        fn reap(&mut self, done: &mut dyn FnMut(usize, i32)) -> usize {
            let k = self.done.len();
            for i in self.done.drain(..) {
                done(i, self.results[i]);
            }
            k
        }
    }

    fn fake(cap: usize, results: Vec<i32>, script: Vec<Result<usize, i32>>) -> Fake {
        Fake {
            cap,
            queued: Default::default(),
            done: Vec::new(),
            results,
            script: script.into(),
            taken: 0,
        }
    }

    #[test]
    fn partial_submissions_interruptions_and_errors_map_to_what_each_connection_needs() {
        // Five writes of 10 bytes through a queue of 2: the kernel takes one, is
        // interrupted, takes the rest. Results: all, part, nothing, a reset, none.
        let results = vec![10, 4, -libc::EAGAIN, -libc::ECONNRESET, 0];
        let mut k = fake(2, results, vec![Ok(1), Err(libc::EINTR), Ok(2)]);
        let mut got: Vec<Vec<Wrote>> = (0..5).map(|_| Vec::new()).collect();
        let mut scratch = Vec::new();
        run(&mut k, 5, &mut scratch, &mut |i, r| {
            got[i].push(wrote(r, 10))
        })
        .unwrap();
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
        let results = vec![16, 0, 5, 5];
        let mut k = fake(4, results, vec![Ok(2), Err(libc::ENOMEM)]);
        let mut got: Vec<Vec<Read>> = (0..4).map(|_| Vec::new()).collect();
        let r = run(&mut k, 4, &mut scratch, &mut |i, r| {
            got[i].push(read(r, 16))
        });
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
        assert!(k.done.is_empty() && k.queued.len() <= 2);
    }
}
