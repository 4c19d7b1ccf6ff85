//! What the kernel says about a process: CPU time (`/proc/PID/stat`), resident memory
//! (`/proc/PID/status`) and the machine's load average.

use std::fs;
use std::io;

/// User plus system CPU time of process `pid`, all its threads (live and exited), in
/// seconds: fields 14 (`utime`) and 15 (`stime`) of `/proc/PID/stat`, in clock ticks.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks_per_second())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat"))
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss_kib(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

/// The 1-minute load average, for the record (the machine is shared).
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// CPU ticks each event-loop thread (`loop-N`) of process `pid` has used so far, by
/// name, in name order. Read before and after a phase: a loop run on another loop's thread
/// (turnpike's `pack_loops`) adds nothing to its own.
pub fn loop_ticks(pid: u32) -> Vec<(String, u64)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = tasks
        .flatten()
        .filter_map(|t| {
            let comm = fs::read_to_string(t.path().join("comm")).ok()?;
            let comm = comm.trim();
            comm.starts_with("loop-").then_some(())?;
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            Some((comm.to_owned(), parse_cpu_ticks(&stat)?))
        })
        .collect();
    out.sort();
    out
}

/// What each loop thread used between two [`loop_ticks`] readings, in CPU seconds:
/// `loop-0 2.31, loop-1 0.00`.
pub fn loop_usage(before: &[(String, u64)], after: &[(String, u64)]) -> String {
    let tick = clock_ticks_per_second();
    after
        .iter()
        .map(|(name, t)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, b)| *b);
            format!("{name} {:.2}", t.saturating_sub(was) as f64 / tick)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds of this process (the load generator), to show whether it kept up.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// `utime + stime` in ticks. The command name (field 2) may hold spaces and parentheses,
/// so the fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // After ")" come field 3 (state) ... field 14 is the 12th token, field 15 the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_from_the_last_parenthesis() {
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_line() {
        let status = "Name:\tx\nVmPeak:\t 10 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_rss_kib(status), Some(2048));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        assert!(cpu_seconds(std::process::id()).is_ok());
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
