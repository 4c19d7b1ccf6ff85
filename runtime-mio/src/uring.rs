//! An io_uring ring used as one batched system call: a round of entries goes to the
//! kernel with one `io_uring_enter(2)`, which also waits for their completions, and the
//! call returns only once the kernel is done with every entry it took.
//!
//! The bookkeeping is shared by [`crate::uring_send`] (a round's sends),
//! [`crate::uring_recv`] (a round's receives) and [`crate::uring_stream`] (a round's
//! stream reads and writes); they differ only in the entries they build.
//! Every entry they build carries `MSG_DONTWAIT`, so it completes during the submission
//! (data, or `EAGAIN`) instead of being parked until its socket is ready: nothing stays in
//! flight after a call.
//!
//! The `io-uring` crate (tokio-rs) is used for the ring itself: it maps the rings and
//! builds entries with the kernel's layouts, is maintained with the kernel's ABI and has
//! no dependencies besides libc and bitflags.

use io_uring::{squeue, IoUring, Probe};
use std::io;

/// A ring that a call uses whole: submit a round, wait for all of it.
pub struct Ring {
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

impl Ring {
    /// A ring of `entries` submission entries, if this kernel has io_uring with opcode
    /// `code` (named `name` in the error) and lets this process use it
    /// (`kernel.io_uring_disabled`).
    pub fn new(entries: u32, code: u8, name: &str) -> io::Result<Ring> {
        let ring = IoUring::new(entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring without {name}"),
            ));
        }
        Ok(Ring {
            ring,
            broken: false,
        })
    }

    /// The ring itself, for a check at start that submits outside [`Ring::run`].
    pub fn raw(&mut self) -> &mut IoUring {
        &mut self.ring
    }

    /// Submits entries `0..n`, entry `i` being what `entry(i)` builds (None: it cannot be
    /// built, and the call fails), and calls `done(i, result)` once for each (the
    /// operation's result, or a negative errno). Returns only once every entry the kernel
    /// took has completed, error or not. An error of the ring itself is returned after
    /// `done(i, -errno)` was called for every entry the kernel never took; the ring then
    /// refuses every later call.
    ///
    /// # Safety
    ///
    /// Every entry `entry` builds must point only at memory that stays alive, and that
    /// nothing else reads or writes (where the operation writes) or writes (where it
    /// reads), until `run` returns.
    pub unsafe fn run(
        &mut self,
        n: usize,
        entry: impl FnMut(usize) -> Option<squeue::Entry>,
        mut done: impl FnMut(usize, i32),
    ) -> io::Result<()> {
        if self.broken {
            for i in 0..n {
                done(i, -libc::EBADFD);
            }
            return Err(io::Error::from_raw_os_error(libc::EBADFD));
        }
        let mut q = Entries {
            ring: &mut self.ring,
            entry,
        };
        let r = run_all(&mut q, n, &mut done);
        // Entries still queued but never taken point at the caller's buffers: the ring
        // must never submit them.
        self.broken = r.is_err();
        r
    }

    /// True once a call failed: the ring refuses every later call.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Marks the ring as failed (for tests of what follows).
    #[cfg(test)]
    pub fn break_it(&mut self) {
        self.broken = true;
    }
}

/// What [`run_all`] needs of the kernel: a seam, so that its bookkeeping can be checked
/// against a kernel that fails on purpose.
pub(crate) trait Queue {
    /// Queues entry `i`; false if the submission queue is full (or the entry cannot be
    /// built).
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

/// The ring over one call's entries.
struct Entries<'a, F> {
    ring: &'a mut IoUring,
    entry: F,
}

impl<F: FnMut(usize) -> Option<squeue::Entry>> Queue for Entries<'_, F> {
    fn push(&mut self, i: usize) -> bool {
        let Some(e) = (self.entry)(i) else {
            return false;
        };
        let e = e.user_data(i as u64);
        // SAFETY: the entry points at memory the caller of `Ring::run` keeps alive and
        // unshared until it returns. Once the kernel takes the entry, `run_all` returns
        // only after reaping its completion (or aborts); an entry never taken is never
        // submitted, as `run` breaks the ring on an error.
        unsafe { self.ring.submission().push(&e) }.is_ok()
    }

    fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        self.ring.submit_and_wait(want)
    }

    fn wait(&mut self, want: usize) -> io::Result<usize> {
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        // SAFETY: submits nothing (to_submit 0) and passes no argument: it only waits for
        // completions of entries already taken.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(0, want, ENTER_GETEVENTS, None)
        }
    }

    fn reap(&mut self, done: &mut dyn FnMut(usize, i32)) -> usize {
        let mut k = 0;
        for c in self.ring.completion() {
            done(c.user_data() as usize, c.result());
            k += 1;
        }
        k
    }
}

/// Submits entries `0..n` through `q`, calling `done` once for each. Returns only once
/// every entry the kernel took has completed; on an error, after `done(i, -errno)` for
/// every entry it never took.
pub(crate) fn run_all(
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
        if pushed == reaped {
            // Nothing queued or in flight, yet entry `pushed` did not go in: it cannot be
            // built (a full queue takes at least one entry).
            let e = io::Error::new(io::ErrorKind::InvalidInput, "io_uring entry not built");
            return Err(fail(q, e, taken, reaped, n, done));
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

/// After error `e`: waits for every entry the kernel took (it may still be using their
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
                // The kernel may still use buffers the caller is about to reuse and
                // cannot say when it stops: going on would be undefined behaviour.
                log::error!(
                    "io_uring cannot wait for operations in flight ({e}; waiting: {r:?}): aborting"
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
pub(crate) mod tests {
    use super::*;

    /// A test of a real ring found io_uring unavailable: it passes on a developer's machine
    /// whose kernel lacks it, and fails where the end-to-end tests are mandatory
    /// (`TURNPIKE_E2E=1`, as in CI), so that CI never skips the io_uring paths.
    pub(crate) fn unavailable(why: &str) {
        let mandatory =
            std::env::var("TURNPIKE_E2E").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        assert!(
            !mandatory,
            "io_uring unavailable ({why}) and TURNPIKE_E2E=1"
        );
        eprintln!("io_uring unavailable here ({why}): nothing to test");
    }

    /// A kernel that takes and fails as scripted: each submit takes up to the next
    /// scripted count of queued entries (completing `complete_now` of them at once) or
    /// fails with an errno; a wait completes everything in flight. Completed entries
    /// answer `answer(i)`.
    pub(crate) struct Fake {
        cap: usize,
        queued: std::collections::VecDeque<usize>,
        pub(crate) in_flight: Vec<usize>,
        completed: Vec<usize>,
        script: std::collections::VecDeque<Result<(usize, usize), i32>>,
        answer: fn(usize) -> i32,
    }

    impl Fake {
        pub(crate) fn new(cap: usize, script: Vec<Result<(usize, usize), i32>>) -> Fake {
            Fake::answering(cap, script, |_| 100)
        }

        pub(crate) fn answering(
            cap: usize,
            script: Vec<Result<(usize, usize), i32>>,
            answer: fn(usize) -> i32,
        ) -> Fake {
            Fake {
                cap,
                queued: Default::default(),
                in_flight: Vec::new(),
                completed: Vec::new(),
                script: script.into(),
                answer,
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
                done(i, (self.answer)(i));
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
        let r = run_all(&mut k, 6, &mut |i, res| results[i].push(res));
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOMEM));
        assert!(k.in_flight.is_empty(), "returned with entries in flight");
        let want: Vec<Vec<i32>> = [100, 100]
            .into_iter()
            .chain([-libc::ENOMEM; 4])
            .map(|r| vec![r])
            .collect();
        assert_eq!(results, want, "every entry answered once");
    }

    #[test]
    fn an_entry_that_cannot_be_built_fails_the_call_at_once() {
        // A queue of no room at all stands for an entry that cannot be built.
        let mut k = Fake::new(0, Vec::new());
        let mut results = vec![Vec::new(); 2];
        let r = run_all(&mut k, 2, &mut |i, res| results[i].push(res));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(results, vec![vec![-libc::EIO]; 2], "each answered once");
    }

    #[test]
    fn transient_refusals_are_retried() {
        let mut k = Fake::new(4, vec![Err(libc::EINTR), Err(libc::EBUSY), Ok((1, 0))]);
        let mut results = vec![Vec::new(); 6];
        run_all(&mut k, 6, &mut |i, res| results[i].push(res)).unwrap();
        assert!(results.iter().all(|r| r == &vec![100]), "{results:?}");
    }

    #[test]
    fn a_kernel_that_never_takes_anything_fails_the_call() {
        let mut k = Fake::new(4, vec![Ok((0, 0)); MAX_STALLS as usize + 2]);
        let mut results = vec![Vec::new(); 3];
        let r = run_all(&mut k, 3, &mut |i, res| results[i].push(res));
        assert!(r.is_err());
        assert!(
            results.iter().all(|r| r == &vec![-libc::EIO]),
            "{results:?}"
        );
    }
}
