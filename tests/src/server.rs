//! The TURN servers under test, behind one launcher: the `turnpike` binary (the product)
//! or coturn's `turnserver` (a reference that proves the harness and its assertions), both
//! on 127.0.0.1 with UDP and TCP on one free port, an own relay port range and the same
//! credentials.

use crate::{
    default_loops, find_tool, free_port_udp_tcp, reserve_udp_range, skip_or_fail, tail, turn,
    wait_for_tcp, wait_for_udp, write_file, Child, PortRange, TempDir, LOOPBACK, PORTS_PER_LOOP,
};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// The `turnpike` binary of this workspace.
    Turnpike,
    /// coturn's `turnserver`.
    Coturn,
}

impl ServerKind {
    /// Lower-case name (as in `TURNPIKE_E2E_SERVER`).
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Turnpike => "turnpike",
            ServerKind::Coturn => "coturn",
        }
    }

    /// True when the server can be started here; otherwise the test is skipped (or fails
    /// under `TURNPIKE_E2E=1`) with the reason printed.
    pub fn available(self) -> bool {
        let tools = crate::require_tools(&["turnutils_uclient", "turnutils_peer"]);
        tools
            && match self {
                ServerKind::Coturn => crate::require_tool("turnserver").is_some(),
                ServerKind::Turnpike => turnpike_binary().is_some(),
            }
    }

    /// True when the server accepts a PROXY protocol header on its TCP listener (coturn
    /// does not).
    pub fn speaks_proxy_protocol(self) -> bool {
        self == ServerKind::Turnpike
    }

    /// True when the server writes the JSON-lines event log the tests read.
    pub fn has_event_log(self) -> bool {
        self == ServerKind::Turnpike
    }
}

/// What a test wants of the server. Both launchers map it onto their own options.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// The realm.
    pub realm: String,
    /// Static long-term users (name, password).
    pub users: Vec<(String, String)>,
    /// TURN REST shared secret.
    pub rest_secret: Option<String>,
    /// Listen for TURN over TCP too (on the same port number as UDP).
    pub tcp: bool,
    /// The TCP listener expects a PROXY protocol header (turnpike only).
    pub proxy_protocol: bool,
    /// Sources trusted to send a PROXY header, CIDR.
    pub proxy_protocol_trusted: Vec<String>,
    /// Relay port range (inclusive); None: [`PORTS_PER_LOOP`] free ports per event loop
    /// (see [`ServerSpec::loops`]), reserved for this server while it runs.
    pub relay_ports: Option<(u16, u16)>,
    /// Event loops (`workers`): None leaves the relay's default, one per core. turnpike
    /// must run exactly [`ServerSpec::loops`] of them ([`RunningServer::start`] checks it
    /// in the event log's `start` record), so a test that gives a small `relay_ports` range
    /// must pin `Some(1)`. coturn gets it as `--relay-threads` when not 0.
    pub workers: Option<u32>,
    /// How long a freed relay port stays out of use (turnpike; coturn has no quarantine).
    pub relay_port_quarantine_ms: u64,
    /// Let peers be on loopback (all peers in these tests are).
    pub allow_loopback_peers: bool,
    /// Allocations per user, if limited.
    pub user_quota: Option<u32>,
    /// Allocations of the whole server, if limited otherwise than by the server's default.
    pub total_quota: Option<u32>,
    /// More lines of turnpike's configuration file, as (key, TOML value) (turnpike only).
    pub extra: Vec<(String, String)>,
    /// Ask for turnpike's HTTP API (`api_listen` on a free port); a file without it has
    /// no API.
    pub api: bool,
    /// TURN over TLS served by the server itself.
    pub tls: Option<TlsSpec>,
    /// turnpike's `drain_timeout_s`: 0 (the tests' default) makes SIGTERM stop at once,
    /// as the tests that are not about draining expect.
    pub drain_timeout_s: u64,
    /// Use this UDP/TCP port rather than a free one picked at start (a test that must
    /// name the relay in another's configuration picks it first).
    pub port: Option<u16>,
}

/// Native TLS: certificate and key (PEM files), on a port of its own or on the TCP port.
#[derive(Clone, Debug)]
pub struct TlsSpec {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
    /// A port of its own (the test picks a free one), or None: the TCP port serves TLS
    /// and plain TURN-TCP alike (coturn always does so on its listening port).
    pub port: Option<u16>,
}

impl ServerSpec {
    /// A server with one static long-term user.
    pub fn static_user(user: &str, password: &str) -> ServerSpec {
        ServerSpec {
            users: vec![(user.into(), password.into())],
            ..ServerSpec::base()
        }
    }

    /// A server taking TURN REST credentials made with `secret`.
    pub fn rest(secret: &str) -> ServerSpec {
        ServerSpec {
            rest_secret: Some(secret.into()),
            ..ServerSpec::base()
        }
    }

    /// The event loops turnpike runs for this spec: `workers`, or one per core when it is
    /// None or 0.
    pub fn loops(&self) -> usize {
        match self.workers {
            None | Some(0) => default_loops(),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    fn base() -> ServerSpec {
        ServerSpec {
            realm: "turn.test".into(),
            users: Vec::new(),
            rest_secret: None,
            tcp: true,
            proxy_protocol: false,
            proxy_protocol_trusted: vec!["127.0.0.1/32".into()],
            relay_ports: None,
            workers: None,
            relay_port_quarantine_ms: 1000,
            allow_loopback_peers: true,
            user_quota: None,
            total_quota: None,
            extra: Vec::new(),
            api: true,
            tls: None,
            drain_timeout_s: 0,
            port: None,
        }
    }
}

/// A server process on loopback, killed when dropped (its log printed if the test fails).
pub struct RunningServer {
    child: Child,
    /// Which server it is.
    pub kind: ServerKind,
    /// Its UDP listener (the TCP listener has the same port).
    pub addr: SocketAddr,
    /// The relay port range it was given.
    pub relay_ports: (u16, u16),
    /// Event loops it runs (turnpike: checked at start; coturn: as asked).
    pub loops: usize,
    /// What it was asked for.
    pub spec: ServerSpec,
    event_log: Option<PathBuf>,
    dir: TempDir,
    _reserved: Option<PortRange>,
}

impl RunningServer {
    /// Starts server `kind` as `spec` says and waits (at most 10 s) until it answers a STUN
    /// Binding request over UDP and accepts TCP connections. turnpike must then run the
    /// event loops the spec asks for ([`ServerSpec::loops`]), or the test fails here: a
    /// relay that quietly runs fewer loops would hide what spans loops.
    pub fn start(kind: ServerKind, spec: ServerSpec) -> RunningServer {
        let dir = TempDir::new(kind.name());
        let port = spec.port.unwrap_or_else(free_port_udp_tcp);
        let loops = spec.loops();
        let (relay_ports, reserved) = match spec.relay_ports {
            Some(r) => {
                let ports = usize::from(r.1.saturating_sub(r.0)) + 1;
                let room_for = (ports / usize::from(PORTS_PER_LOOP)).max(1);
                assert!(
                    kind != ServerKind::Turnpike || loops <= room_for,
                    "relay ports {}-{} ({ports}) are fewer than {PORTS_PER_LOOP} per loop for \
                     {loops} event loops: the relay would run fewer loops than the test \
                     expects; give it more ports or pin `workers` (ServerSpec::workers)",
                    r.0,
                    r.1
                );
                (r, None)
            }
            None => {
                let count = u16::try_from(usize::from(PORTS_PER_LOOP).saturating_mul(loops))
                    .expect("a relay range for this many loops fits in the port space");
                let range = reserve_udp_range(count);
                (range.span(), Some(range))
            }
        };
        let addr = SocketAddr::new(IpAddr::V4(LOOPBACK), port);
        let (cmd, event_log) = match kind {
            ServerKind::Turnpike => turnpike_command(&spec, port, relay_ports, &dir),
            ServerKind::Coturn => coturn_command(&spec, port, relay_ports, &dir),
        };
        let child = Child::spawn(kind.name(), cmd, dir.path());
        let mut server = RunningServer {
            child,
            kind,
            addr,
            relay_ports,
            loops,
            spec,
            event_log,
            dir,
            _reserved: reserved,
        };
        server.wait_ready(Duration::from_secs(10));
        if kind == ServerKind::Turnpike {
            server.assert_loops(loops);
        }
        server
    }

    /// Asserts that turnpike runs `expected` event loops: its event log's `start` record
    /// names the count (`loops`, absent for one loop).
    fn assert_loops(&self, expected: usize) {
        let start = self
            .wait_event(Duration::from_secs(3), |e| e["event"] == "start")
            .unwrap_or_else(|| {
                panic!(
                    "no start record in the event log; the log:\n{}",
                    tail(&self.log_text(), 50)
                )
            });
        let running = loops_of_start(&start);
        assert_eq!(
            usize::try_from(running).ok(),
            Some(expected),
            "turnpike runs {running} event loops, the test expects {expected} (relay ports \
             {}-{}); start record {start}; the log:\n{}",
            self.relay_ports.0,
            self.relay_ports.1,
            tail(&self.log_text(), 50)
        );
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let probe = turn::binding_request();
        let mut udp_ok = false;
        while Instant::now() < deadline {
            self.child.assert_running();
            if !udp_ok {
                udp_ok = wait_for_udp(self.addr, &probe, Duration::from_millis(200)).is_ok();
            }
            if udp_ok
                && (!self.spec.tcp || wait_for_tcp(self.addr, Duration::from_millis(200)).is_ok())
            {
                return;
            }
        }
        panic!(
            "{} did not become ready on {} within {limit:?} (UDP answered: {udp_ok}); its log:\n{}",
            self.kind.name(),
            self.addr,
            tail(&self.child.log_text(), 200)
        );
    }

    /// Where the server serves TURN over TLS, when it does ([`ServerSpec::tls`]).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        let tls = self.spec.tls.as_ref()?;
        Some(SocketAddr::new(
            self.addr.ip(),
            tls.port.unwrap_or(self.addr.port()),
        ))
    }

    /// The scratch directory of this server (configs, logs).
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// What the server printed so far (stdout and stderr).
    pub fn log_text(&self) -> String {
        self.child.log_text()
    }

    /// Path of the server's log.
    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics, with the server's log, if it has exited.
    pub fn assert_running(&mut self) {
        self.child.assert_running();
    }

    /// The event-log records written so far (empty for a server without an event log).
    pub fn events(&self) -> Vec<Value> {
        let Some(path) = &self.event_log else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits, at most `limit`, for an event-log record matching `pred`.
    pub fn wait_event(&self, limit: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        crate::wait_until(limit, || self.events().into_iter().find(|e| pred(e)))
    }

    /// Sends SIGTERM without waiting (turnpike drains when `drain_timeout_s` is set).
    pub fn send_sigterm(&self) {
        self.child.send_sigterm();
    }

    /// Waits up to `limit` for the server to exit by itself; its status, or None.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.child.wait_exit(limit)
    }

    /// turnpike's HTTP API address, from the event log's `api` record (waits up to 5 s).
    pub fn api_addr(&self) -> SocketAddr {
        let rec = self
            .wait_event(Duration::from_secs(5), |e| e["event"] == "api")
            .expect("an `api` record in the event log");
        rec["listen"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("the API's address")
    }

    /// turnpike's `GET /metrics` (Prometheus text), asserted to answer 200.
    pub fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(self.api_addr()).expect("the API accepts");
        let (status, body) =
            crate::http::exchange(&mut s, "GET", "/metrics", "").expect("the API answers");
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    /// Asks the server to stop (SIGTERM) and waits up to 3 s; returns its exit status (None
    /// if it had to be killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.terminate(Duration::from_secs(3))
    }
}

/// The event loops a turnpike event log's `start` record says the relay runs (its
/// `loops`, written only when there are several).
pub fn loops_of_start(start: &Value) -> u64 {
    start["loops"].as_u64().unwrap_or(1)
}

/// The `turnpike` binary to test: `TURNPIKE_BIN` if set, else the workspace's own, built
/// once per test process with `cargo build -p turnpike` in the profile these tests were
/// built with (a no-op when it is up to date). None (after a SKIP line, or a panic under
/// `TURNPIKE_E2E=1`) when it cannot be had.
pub fn turnpike_binary() -> Option<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(locate_or_build_turnpike) {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            skip_or_fail(why);
            None
        }
    }
}

fn locate_or_build_turnpike() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TURNPIKE_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("TURNPIKE_BIN={} is not a file", p.display()))
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no workspace directory")?;
    let profile_dir = profile_dir(&workspace);
    let release = profile_dir
        .file_name()
        .map(|n| n == "release")
        .unwrap_or(false);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("-p")
        .arg("turnpike")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"));
    if release {
        cmd.arg("--release");
    }
    eprintln!("[e2e] building the relay: {}", crate::describe(&cmd));
    let out = crate::run_with_timeout(cmd, Duration::from_secs(900));
    if !out.success() {
        return Err(format!(
            "`cargo build -p turnpike` failed:\n{}",
            tail(&out.stderr, 40)
        ));
    }
    let bin = profile_dir.join("turnpike");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("built, but {} is missing", bin.display()))
    }
}

/// `target/<profile>` of this test run: the test executable lives in `<it>/deps/`.
fn profile_dir(workspace: &Path) -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps")
            .then(|| deps.parent().map(Path::to_path_buf))
            .flatten()
    });
    from_exe.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        target.join("debug")
    })
}

fn turnpike_command(
    spec: &ServerSpec,
    port: u16,
    relay: (u16, u16),
    dir: &TempDir,
) -> (Command, Option<PathBuf>) {
    let events = dir.join("events.jsonl");
    let config = dir.join("turnpike.toml");
    write_file(&config, &turnpike_config(spec, port, relay, &events));
    let bin = turnpike_binary().expect("the turnpike binary (checked by ServerKind::available)");
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&config);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    (cmd, Some(events))
}

/// The TOML configuration of turnpike for `spec` (key names of the relay's config file).
pub fn turnpike_config(spec: &ServerSpec, port: u16, relay: (u16, u16), events: &Path) -> String {
    let mut t = String::new();
    let mut line = |k: &str, v: String| t.push_str(&format!("{k} = {v}\n"));
    line("realm", toml_str(&spec.realm));
    line("listen_address", toml_str("127.0.0.1"));
    line("ipv4_address", toml_str("127.0.0.1"));
    line("turn_udp_port", port.to_string());
    line("turn_tcp", spec.tcp.to_string());
    line("turn_tcp_listen_port", port.to_string());
    line("proxy_protocol", spec.proxy_protocol.to_string());
    line(
        "proxy_protocol_trusted",
        format!(
            "[{}]",
            spec.proxy_protocol_trusted
                .iter()
                .map(|c| toml_str(c))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    line("relay_port_min", relay.0.to_string());
    line("relay_port_max", relay.1.to_string());
    line(
        "relay_port_quarantine_ms",
        spec.relay_port_quarantine_ms.to_string(),
    );
    line(
        "allow_loopback_peers",
        spec.allow_loopback_peers.to_string(),
    );
    line("event_log", toml_str(&events.to_string_lossy()));
    line("drain_timeout_s", spec.drain_timeout_s.to_string());
    // Tests run in parallel: the API takes a free port (the event log says which).
    if spec.api {
        line("api_listen", toml_str("127.0.0.1:0"));
    }
    if let Some(q) = spec.user_quota {
        line("user_quota", q.to_string());
    }
    if let Some(q) = spec.total_quota {
        line("total_quota", q.to_string());
    }
    if let Some(w) = spec.workers {
        line("workers", w.to_string());
    }
    if let Some(s) = &spec.rest_secret {
        line("static_auth_secret", toml_str(s));
    }
    if let Some(tls) = &spec.tls {
        line("turn_tls_listen_port", tls.port.unwrap_or(port).to_string());
        line("tls_cert_file", toml_str(&tls.cert.to_string_lossy()));
        line("tls_key_file", toml_str(&tls.key.to_string_lossy()));
    }
    for (k, v) in &spec.extra {
        line(k, v.clone());
    }
    if !spec.users.is_empty() {
        let users: Vec<String> = spec
            .users
            .iter()
            .map(|(u, p)| format!("{} = {}", toml_str(u), toml_str(p)))
            .collect();
        line("users", format!("{{ {} }}", users.join(", ")));
    }
    t
}

fn coturn_command(
    spec: &ServerSpec,
    port: u16,
    relay: (u16, u16),
    dir: &TempDir,
) -> (Command, Option<PathBuf>) {
    assert!(
        !spec.proxy_protocol,
        "coturn does not speak the PROXY protocol: this test is for turnpike only"
    );
    let bin = find_tool("turnserver").expect("turnserver (checked by ServerKind::available)");
    let mut cmd = Command::new(bin);
    cmd.arg("-n") // no configuration file
        .arg("--verbose") // a line per session, with the client's address
        .arg("--listening-ip=127.0.0.1")
        .arg(format!("--listening-port={port}"))
        .arg("--relay-ip=127.0.0.1")
        .arg(format!("--min-port={}", relay.0))
        .arg(format!("--max-port={}", relay.1))
        .arg(format!("--realm={}", spec.realm))
        .arg("--fingerprint")
        .arg("--no-cli")
        .arg("--no-dtls")
        .arg("--log-file=stdout")
        .arg("--simple-log")
        .arg(format!(
            "--pidfile={}",
            dir.join("turnserver.pid").display()
        ))
        .arg(format!("--db={}", dir.join("turndb").display()));
    match &spec.tls {
        Some(tls) => {
            cmd.arg(format!("--cert={}", tls.cert.display()))
                .arg(format!("--pkey={}", tls.key.display()));
            if let Some(p) = tls.port {
                cmd.arg(format!("--tls-listening-port={p}"));
            }
        }
        None => {
            cmd.arg("--no-tls");
        }
    }
    if spec.allow_loopback_peers {
        cmd.arg("--allow-loopback-peers");
    }
    if !spec.tcp {
        cmd.arg("--no-tcp");
    }
    if let Some(q) = spec.user_quota {
        cmd.arg(format!("--user-quota={q}"));
    }
    if let Some(q) = spec.total_quota {
        cmd.arg(format!("--total-quota={q}"));
    }
    if let Some(w) = spec.workers.filter(|w| *w > 0) {
        cmd.arg(format!("--relay-threads={w}"));
    }
    if !spec.users.is_empty() {
        cmd.arg("--lt-cred-mech");
        for (u, p) in &spec.users {
            cmd.arg(format!("--user={u}:{p}"));
        }
    }
    if let Some(s) = &spec.rest_secret {
        cmd.arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={s}"));
    }
    (cmd, None)
}

/// `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A UDP echo peer: coturn's `turnutils_peer` on 127.0.0.1, killed when dropped.
pub struct Peer {
    _child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Peer {
    /// Starts `turnutils_peer -L 127.0.0.1 -p PORT` and waits until it echoes.
    pub fn start() -> Peer {
        let dir = TempDir::new("peer");
        let port = crate::free_udp_port();
        let addr = SocketAddr::new(IpAddr::V4(LOOPBACK), port);
        let bin =
            find_tool("turnutils_peer").expect("turnutils_peer (checked by ServerKind::available)");
        let mut cmd = Command::new(bin);
        cmd.arg("-L")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string());
        let mut child = Child::spawn("turnutils_peer", cmd, dir.path());
        if let Err(e) = wait_for_udp(addr, b"ping", Duration::from_secs(5)) {
            child.assert_running();
            panic!("turnutils_peer: {e}");
        }
        Peer {
            _child: child,
            addr,
            _dir: dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_default_to_one_per_core() {
        let mut spec = ServerSpec::static_user("alice", "pw");
        assert_eq!(spec.loops(), default_loops());
        spec.workers = Some(0);
        assert_eq!(spec.loops(), default_loops());
        spec.workers = Some(4);
        assert_eq!(spec.loops(), 4);
        let start: Value = serde_json::json!({"event": "start", "loops": 4});
        assert_eq!(loops_of_start(&start), 4);
        assert_eq!(loops_of_start(&serde_json::json!({"event": "start"})), 1);
    }

    #[test]
    fn turnpike_config_uses_the_documented_keys() {
        let mut spec = ServerSpec::static_user("alice", "se\"cret");
        spec.rest_secret = Some("s3".into());
        spec.workers = Some(4);
        spec.total_quota = Some(6);
        let t = turnpike_config(&spec, 3478, (61000, 61003), Path::new("/tmp/e.jsonl"));
        for key in [
            "realm = \"turn.test\"",
            "turn_udp_port = 3478",
            "turn_tcp_listen_port = 3478",
            "relay_port_min = 61000",
            "relay_port_max = 61003",
            "proxy_protocol = false",
            "proxy_protocol_trusted = [\"127.0.0.1/32\"]",
            "static_auth_secret = \"s3\"",
            "users = { \"alice\" = \"se\\\"cret\" }",
            "allow_loopback_peers = true",
            "event_log = \"/tmp/e.jsonl\"",
            "workers = 4",
            "total_quota = 6",
        ] {
            assert!(t.contains(key), "{key} missing from:\n{t}");
        }
    }
}
