//! What one event loop's thread did in the last second: CPU time it ran and time it was
//! runnable but waiting for a CPU, from `/proc/thread-self/schedstat` (proc(5): run time
//! and run-queue wait, nanoseconds, since the thread started).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The schedstat file of the thread that opened it, and its last reading.
pub struct Meter {
    file: File,
    last: Option<(u64, u64)>,
}

impl Meter {
    /// Opens the calling thread's schedstat (it names the thread that opens it, so each
    /// loop opens its own, on its own thread).
    pub fn open() -> io::Result<Meter> {
        let file = File::open("/proc/thread-self/schedstat")?;
        let mut m = Meter { file, last: None };
        m.last = Some(m.read()?);
        Ok(m)
    }

    /// Nanoseconds run and waited since the last call (or since `open`).
    pub fn since_last(&mut self) -> io::Result<(u64, u64)> {
        let now = self.read()?;
        let (run0, wait0) = self.last.unwrap_or(now);
        self.last = Some(now);
        Ok((now.0.saturating_sub(run0), now.1.saturating_sub(wait0)))
    }

    fn read(&self) -> io::Result<(u64, u64)> {
        let mut buf = [0u8; 96];
        let n = self.file.read_at(&mut buf, 0)?;
        parse(buf.get(..n).unwrap_or_default())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "schedstat: unexpected"))
    }
}

/// `run_ns wait_ns timeslices`.
fn parse(b: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut f = s.split_ascii_whitespace().map(str::parse::<u64>);
    Some((f.next()?.ok()?, f.next()?.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_line() {
        assert_eq!(parse(b"1234 56 7\n"), Some((1234, 56)));
        assert_eq!(parse(b"12x 56 7\n"), None);
        assert_eq!(parse(b""), None);
    }

    /// CPU time of the calling thread, from another clock than schedstat's file.
    fn thread_cpu_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a live timespec the call writes; the clock id is a constant.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    #[test]
    fn a_spinning_thread_is_seen_running() {
        let mut m = Meter::open().unwrap();
        // 20 ms of CPU, however long the machine takes to give them (at most 10 s).
        let (cpu0, t) = (thread_cpu_ns(), std::time::Instant::now());
        let mut x = 0u64;
        while thread_cpu_ns() - cpu0 < 20_000_000 && t.elapsed().as_secs() < 10 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let (run, _) = m.since_last().unwrap();
        assert!(run >= 15_000_000, "ran {run} ns");
    }
}
