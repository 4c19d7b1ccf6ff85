//! The JSON-lines event log (`event_log = "path"`): one object per line, appended, flushed
//! about once a second and at exit. What goes in it is decided by [`crate::report`].
//!
//! Several event loops append to the same file, each through its own `EventLog`: the file
//! is opened with `O_APPEND` and records are written only as whole lines, each batch in
//! one `write(2)`, so lines of different loops never interleave mid-line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Buffered records are written once they reach this many bytes (else at the next flush).
const FLUSH_AT: usize = 64 * 1024;

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    /// Whole lines waiting for the next flush.
    pending: Vec<u8>,
    failed: bool,
}

impl EventLog {
    /// Opens (creating if needed) the file at `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            path: path.to_path_buf(),
            file,
            pending: Vec::new(),
            failed: false,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (a JSON object on one line). A write error is logged once, then
    /// records are dropped until a write works again: the relay keeps relaying.
    pub fn write(&mut self, record: &serde_json::Value) {
        let start = self.pending.len();
        match serde_json::to_writer(&mut self.pending, record) {
            Ok(()) => self.pending.push(b'\n'),
            Err(e) => {
                // Never leave half a record behind.
                self.pending.truncate(start);
                self.note(Err(io::Error::from(e)));
                return;
            }
        }
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Pushes buffered records to the file, whole lines in one write.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let res = self.file.write_all(&self.pending);
        self.pending.clear();
        self.note(res);
    }

    fn note(&mut self, res: io::Result<()>) {
        match res {
            Err(e) if !self.failed => {
                log::warn!(
                    "event log {}: {e}; records are dropped until writes work again",
                    self.path.display()
                );
                self.failed = true;
            }
            Ok(()) if self.failed => {
                log::info!("event log {}: writes work again", self.path.display());
                self.failed = false;
            }
            _ => {}
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `unix_ms` as an RFC 3339 UTC time with milliseconds, e.g. `2024-05-01T12:00:00.250Z`
/// (jiff's, which env_logger already builds for its own timestamps). A wall clock past
/// what jiff represents (late 9999) is written as jiff's last instant.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let t = i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or(jiff::Timestamp::MAX);
    format!("{t:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        // Past what jiff represents (9999-12-30T22:00Z): its last instant, no panic.
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-30T22:00:00.999Z");
    }

    #[test]
    fn appends_json_lines() {
        let path =
            std::env::temp_dir().join(format!("turnpike-evlog-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let mut log = EventLog::open(&path).unwrap();
            log.write(&serde_json::json!({"event": "a", "n": 1}));
            log.write(&serde_json::json!({"event": "b"}));
            log.flush();
        }
        let mut log = EventLog::open(&path).unwrap();
        log.write(&serde_json::json!({"event": "c"}));
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let events: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(events, ["a", "b", "c"]);
    }

    #[test]
    fn writers_on_threads_never_interleave_lines() {
        let path = std::env::temp_dir().join(format!(
            "turnpike-evlog-threads-{}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let pad = "x".repeat(300);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (path, pad) = (path.clone(), pad.clone());
                std::thread::spawn(move || {
                    let mut log = EventLog::open(&path).unwrap();
                    for n in 0..2000 {
                        log.write(&serde_json::json!({"loop": t, "n": n, "pad": pad}));
                        if n % 97 == 0 {
                            log.flush();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut seen = [0u32; 4];
        for l in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let t = v["loop"].as_u64().unwrap() as usize;
            assert_eq!(
                v["n"].as_u64().unwrap(),
                u64::from(seen[t]),
                "order within a writer"
            );
            seen[t] += 1;
        }
        assert_eq!(seen, [2000; 4]);
    }
}
