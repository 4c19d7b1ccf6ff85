//! Which CPUs a thread may run on: sched_getaffinity(2) and sched_setaffinity(2).

use std::io;

/// A set of CPUs by number, in increasing order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpus(pub Vec<usize>);

impl Cpus {
    /// The CPUs this thread may run on now (a `taskset` or a cgroup's cpuset narrows
    /// them).
    pub fn of_this_thread() -> io::Result<Cpus> {
        // SAFETY: cpu_set_t is plain bits; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live cpu_set_t and the size passed is its own; pid 0 is the
        // calling thread. The kernel writes only within that size.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let cpus = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: CPU_ISSET reads bit `c` of a live set; `c` < CPU_SETSIZE.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect();
        Ok(Cpus(cpus))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `k` of these CPUs, starting with `first` if it is one of them (the CPU the deciding
    /// loop runs on: its caches are warm), then the next ones in order, wrapping.
    pub fn pick(&self, k: usize, first: Option<usize>) -> Cpus {
        let start = first
            .and_then(|f| self.0.iter().position(|&c| c == f))
            .unwrap_or(0);
        let n = self.0.len();
        let mut out: Vec<usize> = (0..k.min(n))
            .filter_map(|i| self.0.get((start + i) % n.max(1)).copied())
            .collect();
        out.sort_unstable();
        Cpus(out)
    }

    /// Confines thread `tid` (of this process) to these CPUs.
    pub fn apply_to(&self, tid: libc::pid_t) -> io::Result<()> {
        // SAFETY: as above, all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in self.0.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: CPU_SET writes bit `c` of a live set; `c` < CPU_SETSIZE (filtered).
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // SAFETY: `set` is a live cpu_set_t of the size passed; the kernel only reads it.
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The CPU the calling thread runs on (sched_getcpu(3)).
    pub fn current() -> Option<usize> {
        // SAFETY: sched_getcpu takes nothing and returns a number or -1.
        let c = unsafe { libc::sched_getcpu() };
        usize::try_from(c).ok()
    }
}

impl std::fmt::Display for Cpus {
    /// As `taskset -c` lists them: `0`, `0,2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// The calling thread's id (gettid(2)).
pub fn this_thread_id() -> libc::pid_t {
    // SAFETY: gettid takes nothing and cannot fail.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_starts_at_the_given_cpu_and_wraps() {
        let c = Cpus(vec![0, 2, 4, 6]);
        assert_eq!(c.pick(1, Some(4)), Cpus(vec![4]));
        assert_eq!(c.pick(3, Some(4)), Cpus(vec![0, 4, 6]));
        assert_eq!(c.pick(2, Some(5)), Cpus(vec![0, 2]));
        assert_eq!(c.pick(9, None), c);
        assert_eq!(c.pick(2, None).to_string(), "0,2");
    }

    #[test]
    fn a_thread_confined_to_one_cpu_reads_back_that_cpu_and_can_be_spread_again() {
        let all = Cpus::of_this_thread().unwrap();
        assert!(!all.is_empty());
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send((this_thread_id(), None)).unwrap();
            go_rx.recv().unwrap();
            tx.send((0, Some(Cpus::of_this_thread().unwrap()))).unwrap();
            go_rx.recv().unwrap();
            Cpus::of_this_thread().unwrap()
        });
        let (tid, _) = rx.recv().unwrap();
        let one = all.pick(1, all.0.last().copied());
        one.apply_to(tid).unwrap();
        go_tx.send(()).unwrap();
        let (_, packed) = rx.recv().unwrap();
        let packed = packed.unwrap();
        all.apply_to(tid).unwrap();
        go_tx.send(()).unwrap();
        let spread = t.join().unwrap();
        assert_eq!(packed, one);
        assert_eq!(spread, all);
    }
}
