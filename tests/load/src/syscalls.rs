//! System calls of a server during a data phase, counted by `perf stat` on the kernel's
//! syscall tracepoints (`perf stat -x, -e raw_syscalls:sys_enter,... -p PID`).
//!
//! Counting tracepoints costs the server a little per system call (the same for every
//! server measured), nothing per instruction. Without `perf`, or without the right to trace
//! (`kernel.perf_event_paranoid`), the figures are simply absent.

use std::io::Read;
use std::process::{Child, Command, Stdio};

/// The send calls, for datagrams per send. turnpike's `io_uring_enter` is counted here: it
/// carries a round's sends, and with io_uring receives the round's receives (UDP and
/// stream) too, so turnpike's datagrams per send call are understated and its datagrams
/// per receive call, which count only the `recvmmsg` that read on busy sockets, are
/// overstated; the calls per relayed packet count every call once and are exact.
const SENDS: [&str; 6] = [
    "sendto",
    "sendmsg",
    "sendmmsg",
    "write",
    "writev",
    "io_uring_enter",
];
/// The receive calls.
const RECVS: [&str; 5] = ["recvfrom", "recvmsg", "recvmmsg", "read", "readv"];
/// Other calls shown by name.
const OTHERS: [&str; 4] = ["epoll_wait", "epoll_pwait", "nanosleep", "clock_nanosleep"];

/// A running `perf stat` on one process.
pub struct Counter {
    child: Child,
}

/// What it counted.
#[derive(Clone, Debug, Default)]
pub struct Syscalls {
    /// Every system call.
    pub total: u64,
    /// Calls that send (`sendto`, `sendmsg`, `sendmmsg`, `write`, `writev`,
    /// `io_uring_enter`).
    pub sends: u64,
    /// Calls that receive.
    pub recvs: u64,
    /// Per call name, for the record.
    pub by_name: Vec<(String, u64)>,
}

impl Syscalls {
    /// One line for humans.
    pub fn summary(&self) -> String {
        let names: Vec<String> = self
            .by_name
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!("syscalls {} ({})", self.total, names.join(", "))
    }
}

impl Counter {
    /// Starts counting the system calls of `pid` (all its threads); None if `perf` is
    /// missing or refuses.
    pub fn start(pid: u32) -> Option<Counter> {
        let mut events = vec!["raw_syscalls:sys_enter".to_string()];
        for name in SENDS.iter().chain(&RECVS).chain(&OTHERS) {
            events.push(format!("syscalls:sys_enter_{name}"));
        }
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events.join(","), "-p"])
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        // perf attaches within a few milliseconds; what it misses is at the start.
        std::thread::sleep(std::time::Duration::from_millis(50));
        Some(Counter { child })
    }

    /// Stops counting and reads the counts.
    pub fn stop(mut self) -> Option<Syscalls> {
        let pid = libc::pid_t::try_from(self.child.id()).ok()?;
        // SAFETY: kill sends a signal to our own child process, which has not been waited
        // for yet, so its id is still ours.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.child.wait();
        parse(&err)
    }
}

/// Parses `perf stat -x,` output: `count,unit,event,...` per line.
fn parse(text: &str) -> Option<Syscalls> {
    let mut s = Syscalls::default();
    let mut seen = false;
    for line in text.lines() {
        let mut f = line.split(',');
        let (Some(count), Some(_unit), Some(event)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let n: u64 = match count.trim().parse() {
            Ok(n) => n,
            Err(_) if count.contains("not counted") => 0,
            Err(_) => continue,
        };
        seen = true;
        if event == "raw_syscalls:sys_enter" {
            s.total = n;
            continue;
        }
        let Some(name) = event.strip_prefix("syscalls:sys_enter_") else {
            continue;
        };
        if SENDS.contains(&name) {
            s.sends += n;
        } else if RECVS.contains(&name) {
            s.recvs += n;
        }
        s.by_name.push((name.to_string(), n));
    }
    seen.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv() {
        let text = "1000,,raw_syscalls:sys_enter,1,100.00,,\n\
                    300,,syscalls:sys_enter_sendto,1,100.00,,\n\
                    20,,syscalls:sys_enter_sendmmsg,1,100.00,,\n\
                    <not counted>,,syscalls:sys_enter_io_uring_enter,0,100.00,,\n\
                    <not counted>,,syscalls:sys_enter_epoll_pwait,0,100.00,,\n\
                    250,,syscalls:sys_enter_recvmmsg,1,100.00,,\n";
        let s = parse(text).unwrap();
        assert_eq!((s.total, s.sends, s.recvs), (1000, 320, 250));
        assert!(s.summary().contains("sendto 300"));
        assert!(!s.summary().contains("io_uring"));
        assert!(!s.summary().contains("epoll_pwait"));
        let s = parse("10,,syscalls:sys_enter_io_uring_enter,1,100.00,,\n").unwrap();
        assert_eq!(s.sends, 10);
        assert!(parse("perf: not found\n").is_none());
    }
}
