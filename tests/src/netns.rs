//! Network namespaces made by a test: a fresh namespace with `lo` up and, when a test needs
//! a non-loopback address, a veth pair whose two ends both stay inside it. Nothing is
//! bridged to the machine's own namespace, so no packet sent inside ever leaves it. The
//! namespace (and everything in it) is deleted when the guard drops.
//!
//! Creating one needs root (`ip netns add`); without it the test skips, or fails under
//! `TURNPIKE_E2E=1`.

use crate::{run_with_timeout, skip_or_fail};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace holding only `lo` (up), named after `tag`, this process and a
    /// counter. None, after a `SKIP:` line (or a panic under `TURNPIKE_E2E=1`), when it
    /// cannot be made.
    pub fn create(tag: &str) -> Option<Netns> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("tp{tag}{}x{n}", std::process::id());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "add", &name]);
        let out = run_with_timeout(cmd, Duration::from_secs(10));
        if !out.success() {
            skip_or_fail(&format!(
                "cannot create a network namespace (root needed): {}",
                out.report()
            ));
            return None;
        }
        let ns = Netns { name };
        if let Err(e) = ns.ip(&["link", "set", "lo", "up"]) {
            skip_or_fail(&format!("cannot set up a network namespace: {e}"));
            return None;
        }
        Some(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...` (bounded to 10 s); the error holds its output.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        let out = run_with_timeout(cmd, Duration::from_secs(10));
        if out.success() {
            Ok(())
        } else {
            Err(out.report())
        }
    }

    /// Adds a veth pair `a`–`b`, both ends inside this namespace and up, with address
    /// `a_cidr` on `a` and `b_cidr` (if any) on `b`. Packets between them never leave the
    /// namespace; a program inside sees an ordinary, non-loopback interface.
    pub fn add_veth_pair(
        &self,
        (a, a_cidr): (&str, &str),
        (b, b_cidr): (&str, Option<&str>),
    ) -> Result<(), String> {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        self.ip(&["addr", "add", a_cidr, "dev", a])?;
        if let Some(cidr) = b_cidr {
            self.ip(&["addr", "add", cidr, "dev", b])?;
        }
        self.ip(&["link", "set", a, "up"])?;
        self.ip(&["link", "set", b, "up"])
    }

    /// `ip netns exec NAME PROGRAM`: a command that runs `program` inside the namespace.
    pub fn exec(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    /// Kills what still runs inside (only processes the test started: the namespace is
    /// its own), then deletes the namespace.
    fn drop(&mut self) {
        let mut pids = Command::new("ip");
        pids.args(["netns", "pids", &self.name]);
        let out = run_with_timeout(pids, Duration::from_secs(5));
        for pid in out.stdout.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
