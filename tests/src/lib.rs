//! # turnpike-tests: the relay on loopback against software we did not write
//!
//! The tests in `tests/tests/` start a real TURN server process (the `turnpike` binary, or
//! coturn's `turnserver` to check the harness itself) on 127.0.0.1 and drive it with
//! coturn's `turnutils_uclient` / `turnutils_peer`, a real nginx (stream module, TLS,
//! PROXY protocol) and a small hand-written TURN client. This library holds what they share:
//!
//! - finding tools and skipping politely when they are missing ([`require_tool`]; with
//!   `TURNPIKE_E2E=1`, as CI sets, a missing tool is a failure instead);
//! - free loopback ports ([`free_port_udp_tcp`]) and relay port ranges reserved across
//!   processes ([`reserve_udp_range`], [`free_udp_range`]), [`PORTS_PER_LOOP`] for each of
//!   the relay's event loops: a server runs the relay's default loop count (one per core)
//!   unless its test pins `workers` ([`ServerSpec::workers`]), and the harness checks that
//!   it runs that many;
//! - child processes that die with their test and print their log when it fails
//!   ([`Child`]), commands run with a bound in time ([`run_with_timeout`]);
//! - the servers under test ([`server`]), the uclient runner and its output parser
//!   ([`uclient`]), nginx ([`nginx`]), a minimal STUN/TURN client ([`turn`]), network
//!   namespaces ([`netns`]), headless Chromium in one ([`browser`]) and allocations from
//!   many 5-tuples at once ([`race`]).
//!
//! Every wait is bounded in time and every loop in count; every process started here is
//! killed when its guard drops, also when the test panics.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod adversary;
pub mod browser;
pub mod http;
pub mod netns;
pub mod nginx;
pub mod race;
pub mod server;
pub mod trace_fixture;
pub mod turn;
pub mod uclient;

pub use server::{RunningServer, ServerKind, ServerSpec};

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Environment variable that makes missing tools a failure rather than a skip (CI sets it).
pub const E2E_ENV: &str = "TURNPIKE_E2E";

/// Environment variable restricting which servers the per-server tests run against:
/// a comma-separated list of `turnpike` and `coturn` (default: both).
pub const SERVER_ENV: &str = "TURNPIKE_E2E_SERVER";

/// The loopback address every server of these tests listens on.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// True when the end-to-end tests are mandatory (`TURNPIKE_E2E=1`).
pub fn e2e_mandatory() -> bool {
    std::env::var(E2E_ENV)
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

/// Skips the current test (returns false after printing `SKIP: why`) or, when the tests
/// are mandatory, panics with `why`.
pub fn skip_or_fail(why: &str) -> bool {
    if e2e_mandatory() {
        panic!("{why} ({E2E_ENV}=1: end-to-end tests may not skip)");
    }
    eprintln!("SKIP: {why}");
    false
}

/// The full path of `name` found on `PATH` (or in the sbin directories, where nginx lives
/// and which a non-root `PATH` may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"]
        .iter()
        .map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The path of tool `name`, or None after printing `SKIP: ...` when it is missing.
/// With `TURNPIKE_E2E=1` a missing tool panics instead. Use as
/// `let Some(uclient) = require_tool("turnutils_uclient") else { return };`.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Some(p) => Some(p),
        None => {
            skip_or_fail(&format!(
                "`{name}` not found on PATH (apt-get install coturn nginx libnginx-mod-stream openssl \
                 chromium nftables)"
            ));
            None
        }
    }
}

/// True when every tool in `names` is present (each missing one is reported as for
/// [`require_tool`]).
pub fn require_tools(names: &[&str]) -> bool {
    names.iter().all(|n| require_tool(n).is_some())
}

/// Runs `f` against server `kind`, unless `TURNPIKE_E2E_SERVER` excludes it or the server
/// or the uclient tools are missing (then the test skips, or fails under `TURNPIKE_E2E=1`).
/// The per-server tests of [`per_server!`] call this.
pub fn run_on(kind: ServerKind, f: fn(ServerKind)) {
    if let Ok(list) = std::env::var(SERVER_ENV) {
        let wanted = list
            .split(',')
            .map(str::trim)
            .any(|s| s.eq_ignore_ascii_case(kind.name()));
        if !wanted {
            eprintln!("SKIP: {SERVER_ENV}={list} does not include {}", kind.name());
            return;
        }
    }
    if !kind.available() {
        return;
    }
    f(kind)
}

/// Declares one `#[test]` per server for each named test function `fn name(ServerKind)`:
/// `name::turnpike` and `name::coturn`. The turnpike variants are the product's tests; the
/// coturn variants check the harness itself against a reference server.
#[macro_export]
macro_rules! per_server {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn turnpike() {
                    $crate::run_on($crate::ServerKind::Turnpike, super::$name)
                }
                #[test]
                fn coturn() {
                    $crate::run_on($crate::ServerKind::Coturn, super::$name)
                }
            }
        )*
    };
}

/// A scratch directory for one test, removed when dropped unless the thread is panicking
/// (then it is kept and its path printed, so the logs in it can be read).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty directory named after `label` under the system's temp dir.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("turnpike-e2e-{}-{n}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("(test files kept in {})", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process that is killed when dropped. Its stdout and stderr go to one log file;
/// when the thread is panicking the tail of that log is printed, so a failing test shows
/// what the process said.
#[derive(Debug)]
pub struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    /// Starts `cmd` with its output captured in `log_dir/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Child {
        let log = log_dir.join(format!("{name}.log"));
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log file: {e}"));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        eprintln!("[e2e] start {name}: {}", describe(&cmd));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", describe(&cmd)));
        Child {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Path of its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it has written so far.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics, with its log, when it has exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.exited() {
            panic!(
                "{} exited early ({st}); its log:\n{}",
                self.name,
                tail(&self.log_text(), 200)
            );
        }
    }

    /// Sends SIGTERM and returns at once (a relay with `drain_timeout_s` starts draining).
    pub fn send_sigterm(&self) {
        send_signal(libc_pid(self.child.id()), libc::SIGTERM);
    }

    /// Waits up to `limit` for the process to exit by itself; its status, or None.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_until(limit, || self.exited())
    }

    /// Sends SIGTERM and waits up to `grace` for it to exit (then SIGKILL). Returns the exit
    /// status, or None if it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.exited() {
            return Some(st);
        }
        let pid = libc_pid(self.child.id());
        send_signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}\n----- end of {} -----",
                self.name,
                self.log.display(),
                tail(&self.log_text(), 200),
                self.name
            );
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all.get(from..).unwrap_or_default().join("\n")
}

/// What a command run to completion (or to its time limit) did.
#[derive(Debug)]
pub struct CmdOutput {
    /// Exit status; None when it was killed at the time limit.
    pub status: Option<ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
    /// The command line, for messages.
    pub command: String,
}

impl CmdOutput {
    /// True when it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }

    /// True when it was killed at its time limit.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// Standard output then standard error.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A readable account of the run, for assertion messages.
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {}\nelapsed: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "killed at its time limit".into()),
            self.elapsed,
            tail(&self.stdout, 80),
            tail(&self.stderr, 80)
        )
    }
}

/// Runs `cmd` to completion, killing it after `limit`; captures its output.
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> CmdOutput {
    let command = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let out = child.stdout.take().map(spawn_reader);
    let err = child.stderr.take().map(spawn_reader);
    let deadline = start + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for `{command}`: {e}"),
        }
    };
    let elapsed = start.elapsed();
    let join =
        |h: Option<thread::JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    CmdOutput {
        status,
        stdout: join(out),
        stderr: join(err),
        elapsed,
        command,
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `cmd` as a shell-like line, for logs.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A loopback port free for both UDP and TCP (TURN servers listen on the same number for
/// both), found by binding port 0 and reading it back.
pub fn free_port_udp_tcp() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((LOOPBACK, 0)).expect("bind an ephemeral UDP port on loopback");
        let port = udp
            .local_addr()
            .expect("local address of a bound socket")
            .port();
        if TcpListener::bind((LOOPBACK, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP after 100 tries");
}

/// A free loopback TCP port.
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind((LOOPBACK, 0)).expect("bind an ephemeral TCP port on loopback");
    l.local_addr()
        .expect("local address of a bound socket")
        .port()
}

/// A free loopback UDP port.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind((LOOPBACK, 0)).expect("bind an ephemeral UDP port on loopback");
    s.local_addr()
        .expect("local address of a bound socket")
        .port()
}

/// Relay ports each of turnpike's event loops needs at least (the runtime's
/// `workers::MIN_PORTS_PER_LOOP`): with fewer, the relay runs fewer loops than asked.
pub const PORTS_PER_LOOP: u16 = 64;

/// The event loops turnpike runs by default (`workers = 0`): one per core, as the
/// runtime counts them (`available_parallelism`).
pub fn default_loops() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Lowest port of a relay port range.
const AREA_FLOOR: u32 = 10_000;
/// End (exclusive) of the ports relay port ranges are taken from.
const AREA_CEILING: u32 = 65_472;
/// How long [`reserve_udp_range`] waits for a range to be given back before it fails.
const RESERVE_PATIENCE: Duration = Duration::from_secs(120);

/// Where relay port ranges are taken, as [start, end) areas: outside the kernel's ephemeral
/// range (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default), so that the
/// ports other tests get from the OS do not land in them.
fn range_areas() -> Vec<(u32, u32)> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|w| w.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999));
    [(AREA_FLOOR, ephemeral.0), (ephemeral.1 + 1, AREA_CEILING)]
        .into_iter()
        .filter(|(a, b)| b > a)
        .collect()
}

/// A run of consecutive UDP ports on loopback, all free when it was reserved, and
/// reserved for as long as this value lives, against every other user of this function
/// in this process and in any other (other test binaries, other checkouts on the same
/// machine).
///
/// The ports outside the kernel's ephemeral range (from 10000) are cut into blocks of
/// [`PORTS_PER_LOOP`] ports; a range takes whole blocks, and each of its blocks is held by
/// a TCP listener on the block's first port (TCP and UDP ports are separate spaces, so the
/// relay's UDP sockets are not in its way; a second listener on a port cannot bind while
/// the first listens).
#[derive(Debug)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
    tokens: Vec<TcpListener>,
}

impl PortRange {
    /// The range as (first, last), inclusive.
    pub fn span(&self) -> (u16, u16) {
        (self.first, self.last)
    }

    /// How many ports it has.
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Always false: a range has at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Keeps the reservation until this process ends.
    pub fn keep(self) -> (u16, u16) {
        static KEPT: std::sync::Mutex<Vec<TcpListener>> = std::sync::Mutex::new(Vec::new());
        let span = self.span();
        if let Ok(mut kept) = KEPT.lock() {
            kept.extend(self.tokens);
        }
        span
    }
}

/// Reserves `count` consecutive UDP ports free on loopback (see [`PortRange`]); each call
/// starts looking at another place. When every range is taken (servers of tests running
/// in parallel hold them), waits for one to be given back, at most two minutes, then
/// panics.
pub fn reserve_udp_range(count: u16) -> PortRange {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let block = u32::from(PORTS_PER_LOOP);
    let count32 = u32::from(count.max(1));
    let need = count32.div_ceil(block);
    let areas = range_areas();
    let starts: Vec<u32> = areas
        .iter()
        .flat_map(|&(a, b)| {
            (0..)
                .map(move |k| a + k * block)
                .take_while(move |s| s + need * block <= b)
        })
        .collect();
    assert!(
        !starts.is_empty(),
        "{count} ports asked; the areas {areas:?} have no run that long"
    );
    let n = u32::try_from(starts.len()).unwrap_or(u32::MAX);
    let origin = std::process::id().wrapping_mul(7919) % n;
    let deadline = Instant::now() + RESERVE_PATIENCE;
    loop {
        for step in 0..n {
            let turn = NEXT.fetch_add(1, Ordering::Relaxed);
            let at = (origin + turn.wrapping_mul(need) + step) % n;
            if let Some(range) = starts
                .get(at as usize)
                .and_then(|&f| try_reserve(f, count32))
            {
                return range;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no run of {count} free UDP ports in {areas:?} for {RESERVE_PATIENCE:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Takes the blocks of `count` ports from `first` (see [`PortRange`]) if none is held and
/// every port is free.
fn try_reserve(first: u32, count: u32) -> Option<PortRange> {
    let block = u32::from(PORTS_PER_LOOP);
    let tokens: Vec<TcpListener> = (0..count.div_ceil(block))
        .map(|b| {
            let port = u16::try_from(first + b * block).ok()?;
            TcpListener::bind((LOOPBACK, port)).ok()
        })
        .collect::<Option<_>>()?;
    let last = first + count - 1;
    let all_free = (first..=last).all(|p| {
        u16::try_from(p)
            .map(|p| UdpSocket::bind((LOOPBACK, p)).is_ok())
            .unwrap_or(false)
    });
    Some(PortRange {
        first: u16::try_from(first).ok()?,
        last: u16::try_from(last).ok()?,
        tokens,
    })
    .filter(|_| all_free)
}

/// `count` consecutive UDP ports, all free on loopback right now, for a relay port range,
/// reserved (see [`PortRange`]) until this process ends. A server that ends before the
/// test process does should hold a [`reserve_udp_range`] instead.
pub fn free_udp_range(count: u16) -> (u16, u16) {
    reserve_udp_range(count).keep()
}

/// Waits until a TCP connect to `addr` succeeds, up to `limit`.
pub fn wait_for_tcp(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(30));
    }
    Err(format!(
        "nothing accepted TCP connections on {addr} within {limit:?} (last error: {last})"
    ))
}

/// Waits until `addr` answers `probe` over UDP with any datagram, up to `limit`.
pub fn wait_for_udp(addr: SocketAddr, probe: &[u8], limit: Duration) -> Result<(), String> {
    let local: SocketAddr = match addr.ip() {
        IpAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = sock.send_to(probe, addr);
        if let Ok((_, from)) = sock.recv_from(&mut buf) {
            if from == addr {
                return Ok(());
            }
        }
    }
    Err(format!("nothing answered UDP on {addr} within {limit:?}"))
}

/// Polls `f` every 50 ms until it returns Some, up to `limit`.
pub fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `text` to `path`, panicking with the path on failure.
pub fn write_file(path: &Path, text: &str) {
    let mut f =
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The TURN REST API password for `username` (draft-uberti-behave-turn-rest-00 §2.2):
/// base64(HMAC-SHA1(secret, username)). A test helper of our own, so the tests do not lean
/// on the code they check.
pub fn rest_password(secret: &str, username: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A TURN REST username `<expiry>:<user>` valid until `expiry_unix_s`.
pub fn rest_username(user: &str, expiry_unix_s: u64) -> String {
    format!("{expiry_unix_s}:{user}")
}

/// Seconds since the Unix epoch, now (the tests, unlike the core, may read the clock).
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn libc_pid(id: u32) -> libc::pid_t {
    libc::pid_t::try_from(id).unwrap_or(libc::pid_t::MAX)
}

/// Sends `sig` to process `pid` with the `kill` command, so that this crate needs no
/// `unsafe`.
fn send_signal(pid: libc::pid_t, sig: libc::c_int) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_openssl_hmac() {
        // `printf '1000:bob' | openssl dgst -sha1 -hmac s3cr3t -binary | base64`
        assert_eq!(
            rest_password("s3cr3t", "1000:bob"),
            "Rrf0orlROFJkKuMGP5dSaof+G7c="
        );
    }

    #[test]
    fn free_ports_are_bindable() {
        let p = free_port_udp_tcp();
        assert!(UdpSocket::bind((LOOPBACK, p)).is_ok());
        let (a, b) = free_udp_range(4);
        assert_eq!(b - a, 3);
        assert!(a >= 10_000);
        assert!(range_areas()
            .iter()
            .any(|&(lo, hi)| lo <= u32::from(a) && u32::from(b) < hi));
    }

    #[test]
    fn reserved_ranges_do_not_overlap_while_held() {
        let big = reserve_udp_range(4 * PORTS_PER_LOOP);
        assert_eq!(big.len(), 256);
        let small = reserve_udp_range(4);
        let other = reserve_udp_range(2 * PORTS_PER_LOOP);
        let spans = [big.span(), small.span(), other.span()];
        for (i, a) in spans.iter().enumerate() {
            for b in spans.iter().skip(i + 1) {
                assert!(a.1 < b.0 || b.1 < a.0, "{a:?} overlaps {b:?}");
            }
        }
        // Held: its blocks cannot be taken again while it lives.
        assert!(TcpListener::bind((LOOPBACK, big.first)).is_err());
    }

    #[test]
    fn run_with_timeout_kills_at_the_limit() {
        let mut c = Command::new("sleep");
        c.arg("5");
        let out = run_with_timeout(c, Duration::from_millis(200));
        assert!(out.timed_out());
        assert!(out.elapsed < Duration::from_secs(3));
        let mut c = Command::new("sh");
        c.args(["-c", "echo hi; echo there >&2; exit 3"]);
        let out = run_with_timeout(c, Duration::from_secs(5));
        assert_eq!(out.status.and_then(|s| s.code()), Some(3));
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "there\n");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
