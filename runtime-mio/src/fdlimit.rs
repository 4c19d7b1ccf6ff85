//! The file-descriptor limit (RLIMIT_NOFILE) against what the configured capacity needs.
//!
//! Each allocation holds a relay socket, and each TCP client a connection; Sora's manual
//! counts at least two descriptors per connection. A relay that runs out of descriptors
//! fails allocations in confusing ways, so we say so at start, with the numbers.

/// Descriptors kept for listeners, the poll, signals, the event log, and slack.
pub const BASE_FDS: u64 = 64;

/// Descriptors the capacity `total_quota` needs: one relay socket per allocation plus two
/// per connection, counting every allocation as a possible TCP client.
pub fn needed(total_quota: u32) -> u64 {
    BASE_FDS + 3 * u64::from(total_quota)
}

/// The soft and hard RLIMIT_NOFILE, or None if they cannot be read.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
pub fn current() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Raises the soft limit towards `want` (never above the hard limit). Returns the soft
/// limit in force afterwards.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
pub fn raise_soft(want: u64) -> Option<u64> {
    let (soft, hard) = current()?;
    if soft >= want {
        return Some(soft);
    }
    let target = want.min(hard);
    let lim = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass; the new soft limit is within the hard one.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc == 0 {
        Some(target)
    } else {
        Some(soft)
    }
}

/// Checks the limit at start: raises the soft limit if the hard one allows, and warns with
/// the numbers when it stays below what `total_quota` needs.
pub fn check_at_start(total_quota: u32) {
    let want = needed(total_quota);
    match raise_soft(want) {
        Some(have) if have < want => log::warn!(
            "file descriptor limit {have} is below the {want} that total_quota = {total_quota} needs \
             (1 per allocation + 2 per connection + {BASE_FDS}); raise LimitNOFILE (systemd) or `ulimit -n`"
        ),
        Some(have) => log::debug!("file descriptor limit {have} (need about {want})"),
        None => log::warn!("cannot read the file descriptor limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_counts_three_per_allocation() {
        assert_eq!(needed(0), BASE_FDS);
        assert_eq!(needed(10_000), 30_064);
    }

    #[test]
    fn limit_is_readable_and_raising_never_lowers() {
        let (soft, hard) = current().unwrap();
        assert!(soft <= hard);
        assert!(raise_soft(1).unwrap() >= soft);
    }
}
