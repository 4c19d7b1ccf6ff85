//! Starting and stopping the processes under test, one at a time, on loopback: turnpike,
//! coturn's `turnserver` with an equivalent configuration, and the bare forwarder.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as Clock};
use turnpike_core::client::{Client, ClientConfig, ClientEvent};
use turnpike_core::{Instant, Transport};

/// Credentials both relays accept.
pub const USER: &str = "load";
/// The password of [`USER`].
pub const PASS: &str = "load-secret";
/// The realm of both relays.
pub const REALM: &str = "load.test";

/// Which process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// turnpike.
    Turnpike,
    /// coturn's turnserver.
    Coturn,
    /// `turnpike-load forwarder`.
    Forwarder,
}

impl Kind {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Turnpike => "turnpike",
            Kind::Coturn => "coturn",
            Kind::Forwarder => "forwarder",
        }
    }
}

/// Where the relays listen and relay. Keep the ports out of the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768-60999 by default), or other programs' sockets
/// take some of them.
#[derive(Clone, Debug)]
pub struct Layout {
    /// UDP and TCP listening port on 127.0.0.1.
    pub port: u16,
    /// Relay port range, inclusive (at least 10 000 ports for the memory test).
    pub relay_min: u16,
    /// End of the relay port range.
    pub relay_max: u16,
    /// Scratch directory for configuration and log files.
    pub dir: PathBuf,
    /// The turnpike binary.
    pub turnpike: PathBuf,
    /// This program (for the forwarder).
    pub exe: PathBuf,
    /// coturn relay threads (`-m`); None: coturn's default.
    pub coturn_threads: Option<u32>,
    /// turnpike event loops (`workers`); None: turnpike's default (one per core).
    pub workers: Option<u32>,
    /// turnpike's `pack_loops`; None: its default (on).
    pub pack_loops: Option<bool>,
    /// turnpike's `coalesce_us` (longest pause after a small round); None: its default.
    pub coalesce_us: Option<u32>,
}

/// A process under test; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Running {
    child: Child,
    /// Its PID, for /proc.
    pub pid: u32,
    /// Its client-facing address (the forwarder's base address).
    pub addr: SocketAddr,
}

impl Running {
    /// Stops the process and waits for it.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let start = Clock::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Starts relay `kind` and waits until it answers a Binding request.
pub fn start(kind: Kind, l: &Layout) -> Result<Running, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], l.port));
    std::fs::create_dir_all(&l.dir).map_err(|e| e.to_string())?;
    let log = |name: &str| -> Result<std::fs::File, String> {
        std::fs::File::create(l.dir.join(name)).map_err(|e| e.to_string())
    };
    let child = match kind {
        Kind::Turnpike => {
            let conf = l.dir.join("turnpike.toml");
            std::fs::write(&conf, turnpike_config(l)).map_err(|e| e.to_string())?;
            Command::new(&l.turnpike)
                .arg("--config")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log("turnpike.log")?)
                .spawn()
                .map_err(|e| format!("{}: {e}", l.turnpike.display()))?
        }
        Kind::Coturn => Command::new("turnserver")
            .args(coturn_args(l))
            .stdout(log("coturn.stdout")?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("turnserver: {e} (apt-get install coturn)"))?,
        Kind::Forwarder => return Err("use start_forwarder".into()),
    };
    let pid = child.id();
    let running = Running { child, pid, addr };
    wait_ready(addr)?;
    Ok(running)
}

/// Starts the bare forwarder with `count` pairs from `base`, forwarding to `peer`.
pub fn start_forwarder(
    l: &Layout,
    base: SocketAddr,
    count: usize,
    peer: SocketAddr,
) -> Result<Running, String> {
    let mut child = Command::new(&l.exe)
        .args([
            "forwarder",
            "--listen",
            &base.to_string(),
            "--count",
            &count.to_string(),
            "--peer",
            &peer.to_string(),
            "--seconds",
            "600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // It writes one line once its sockets are bound.
    let mut line = String::new();
    if let Some(err) = child.stderr.take() {
        let _ = BufReader::new(err).read_line(&mut line);
    }
    if !line.starts_with("forwarder:") {
        let _ = child.kill();
        return Err(format!("forwarder did not start: {line}"));
    }
    let pid = child.id();
    Ok(Running {
        child,
        pid,
        addr: base,
    })
}

/// turnpike's configuration for the benchmark.
pub fn turnpike_config(l: &Layout) -> String {
    format!(
        r#"realm = "{REALM}"
listen_address = "127.0.0.1"
turn_udp_port = {port}
turn_tcp = true
turn_tcp_listen_port = {port}
relay_port_min = {min}
relay_port_max = {max}
allow_loopback_peers = true
user_quota = 100000
total_quota = 100000
api_listen = "127.0.0.1:0"
{workers}{pack}{pause}[users]
{USER} = "{PASS}"
"#,
        port = l.port,
        min = l.relay_min,
        max = l.relay_max,
        workers = l
            .workers
            .map(|n| format!("workers = {n}\n"))
            .unwrap_or_default(),
        pack = l
            .pack_loops
            .map(|b| format!("pack_loops = {b}\n"))
            .unwrap_or_default(),
        pause = l
            .coalesce_us
            .map(|us| format!("coalesce_us = {us}\n"))
            .unwrap_or_default(),
    )
}

/// coturn's equivalent command line.
pub fn coturn_args(l: &Layout) -> Vec<String> {
    let mut a: Vec<String> = [
        "-n",
        "--listening-ip",
        "127.0.0.1",
        "--relay-ip",
        "127.0.0.1",
        "--lt-cred-mech",
        "--realm",
        REALM,
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--no-stdout-log",
        "--simple-log",
        "--user-quota",
        "100000",
        "--total-quota",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "--user".into(),
        format!("{USER}:{PASS}"),
        "-p".into(),
        l.port.to_string(),
        "--min-port".into(),
        l.relay_min.to_string(),
        "--max-port".into(),
        l.relay_max.to_string(),
        "--log-file".into(),
        path_str(&l.dir.join("coturn.log")),
        "--pidfile".into(),
        path_str(&l.dir.join("coturn.pid")),
    ]);
    if let Some(m) = l.coturn_threads {
        a.extend(["-m".into(), m.to_string()]);
    }
    a
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Waits (at most 10 s) until the relay at `addr` answers a STUN Binding request.
pub fn wait_ready(addr: SocketAddr) -> Result<(), String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let start = Clock::now();
    let cfg = ClientConfig::new(addr, Transport::Udp, USER, PASS);
    let mut client = Client::new(cfg, [1; 32], Instant::from_nanos(0));
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(10) {
        client.binding(Instant::from_nanos(0));
        while let Some(b) = client.poll_transmit() {
            let _ = sock.send_to(&b, addr);
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            client.handle_input(Instant::from_nanos(0), buf.get(..n).unwrap_or(&[]));
            if let Some(ClientEvent::BindingSucceeded { .. }) = client.poll_event() {
                return Ok(());
            }
        }
    }
    Err(format!("no answer from {addr} within 10 s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            port: 34780,
            relay_min: 40000,
            relay_max: 59999,
            dir: PathBuf::from("/tmp/x"),
            turnpike: PathBuf::from("turnpike"),
            exe: PathBuf::from("turnpike-load"),
            coturn_threads: Some(1),
            workers: Some(2),
            pack_loops: None,
            coalesce_us: None,
        }
    }

    #[test]
    fn configs_say_the_same_thing() {
        let l = layout();
        let t = turnpike_config(&l);
        assert!(t.contains("turn_udp_port = 34780"));
        assert!(t.contains("relay_port_max = 59999"));
        assert!(t.contains("allow_loopback_peers = true"));
        assert!(t.contains("workers = 2\n[users]"));
        let none = turnpike_config(&Layout {
            workers: None,
            ..l.clone()
        });
        assert!(!none.contains("workers"));
        let spread = turnpike_config(&Layout {
            pack_loops: Some(false),
            ..l.clone()
        });
        assert!(spread.contains("workers = 2\npack_loops = false\n[users]"));
        let pause = turnpike_config(&Layout {
            coalesce_us: Some(60),
            ..l.clone()
        });
        assert!(pause.contains("workers = 2\ncoalesce_us = 60\n[users]"));
        let c = coturn_args(&l).join(" ");
        assert!(c.contains("-p 34780"));
        assert!(c.contains("--max-port 59999"));
        assert!(c.contains("--allow-loopback-peers"));
        assert!(c.contains("--user load:load-secret"));
        assert!(c.ends_with("-m 1"));
    }
}
