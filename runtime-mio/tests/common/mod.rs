//! Shared helpers of the live tests: start the `turnpike` binary on free loopback ports
//! with a test configuration, and drive the core's sans-IO client over real sockets.
#![allow(dead_code)] // each test file uses a part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};
use turnpike_core::client::{Client, ClientConfig, ClientEvent};
use turnpike_core::{Instant, Transport};

/// A running relay, killed on drop.
pub struct Relay {
    pub child: Child,
    pub port: u16,
    pub event_log: PathBuf,
    config: PathBuf,
}

impl Relay {
    /// Starts the binary with the test configuration plus `extra` lines.
    pub fn start(name: &str, extra: &str) -> Relay {
        let port = free_port();
        let dir = std::env::temp_dir();
        let tag = format!("turnpike-live-{}-{name}", std::process::id());
        let event_log = dir.join(format!("{tag}.jsonl"));
        let config = dir.join(format!("{tag}.toml"));
        let _ = std::fs::remove_file(&event_log);
        let ports = if extra.contains("relay_port_min") {
            String::new()
        } else {
            format!(
                "relay_port_min = {}\nrelay_port_max = {}\n",
                port + 1,
                port + 40
            )
        };
        // SIGTERM stops these relays at once unless a test drains on purpose.
        let drain = if extra.contains("drain_timeout_s") {
            ""
        } else {
            "drain_timeout_s = 0\n"
        };
        let text = format!(
            "realm = \"live.test\"\nturn_udp_port = {port}\nturn_tcp_listen_port = {port}\n\
             {ports}users = {{ alice = \"pw\" }}\n{drain}\
             allow_loopback_peers = true\nevent_log = \"{}\"\napi_listen = \"127.0.0.1:0\"\n{extra}\n",
            event_log.display()
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start turnpike");
        let relay = Relay {
            child,
            port,
            event_log,
            config,
        };
        relay.wait_listening();
        relay
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn wait_listening(&self) {
        let end = StdInstant::now() + Duration::from_secs(5);
        while StdInstant::now() < end {
            if TcpStream::connect(self.addr()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("turnpike did not start listening");
    }

    /// Event-log records, waiting up to `wait` for one that satisfies `want`.
    pub fn records_until(
        &self,
        wait: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let end = StdInstant::now() + wait;
        loop {
            let recs: Vec<serde_json::Value> = std::fs::read_to_string(&self.event_log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if recs.iter().any(&want) || StdInstant::now() >= end {
                return recs;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: kill() with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.event_log);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A port free for both UDP and TCP on 127.0.0.1, with 40 free-looking ports above it
/// for relays (a small race with other processes is accepted in tests).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(t) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = t.local_addr() else { continue };
        let port = addr.port();
        if port > 65_000 {
            continue;
        }
        if UdpSocket::bind(addr).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// `n` consecutive UDP ports free on 127.0.0.1 above the usual ephemeral range (so that
/// the tests' own client sockets do not land in it).
pub fn free_range(n: u16) -> u16 {
    let start = 61_000 + (std::process::id() % 3000) as u16;
    for base in (start..64_000)
        .step_by(usize::from(n))
        .chain((61_000..start).step_by(usize::from(n)))
    {
        if (base..base + n).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

/// The socket a test client talks over.
pub enum Wire {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// The core's TURN client on a real socket.
pub struct TurnClient {
    pub client: Client,
    pub wire: Wire,
    pub events: Vec<ClientEvent>,
    start: StdInstant,
}

impl TurnClient {
    pub fn udp(server: SocketAddr, user: &str, pass: &str) -> TurnClient {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(server).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        Self::new(server, Transport::Udp, Wire::Udp(s), user, pass)
    }

    pub fn tcp(stream: TcpStream, server: SocketAddr, user: &str, pass: &str) -> TurnClient {
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        Self::new(server, Transport::Tcp, Wire::Tcp(stream), user, pass)
    }

    fn new(server: SocketAddr, t: Transport, wire: Wire, user: &str, pass: &str) -> TurnClient {
        let cc = ClientConfig::new(server, t, user, pass);
        let start = StdInstant::now();
        TurnClient {
            client: Client::new(cc, [7; 32], Instant::from_secs(1)),
            wire,
            events: Vec::new(),
            start,
        }
    }

    pub fn now(&self) -> Instant {
        Instant::from_secs(1) + self.start.elapsed()
    }

    /// Sends, receives and ticks until an event satisfies `want` (true) or 5 s pass.
    pub fn pump_until(&mut self, want: impl Fn(&ClientEvent) -> bool) -> bool {
        self.pump_for(Duration::from_secs(5), want)
    }

    /// Sends, receives and ticks until an event satisfies `want` (true) or `wait` passes.
    pub fn pump_for(&mut self, wait: Duration, want: impl Fn(&ClientEvent) -> bool) -> bool {
        let end = StdInstant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        while StdInstant::now() < end {
            while let Some(out) = self.client.poll_transmit() {
                match &mut self.wire {
                    Wire::Udp(s) => {
                        let _ = s.send(&out);
                    }
                    Wire::Tcp(s) => s.write_all(&out).unwrap(),
                }
            }
            let got = match &mut self.wire {
                Wire::Udp(s) => s.recv(&mut buf).ok(),
                Wire::Tcp(s) => s.read(&mut buf).ok().filter(|n| *n > 0),
            };
            let now = self.now();
            if let Some(n) = got {
                self.client.handle_input(now, &buf[..n]);
            }
            self.client.handle_timeout(now);
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if self.events.iter().any(&want) {
                return true;
            }
        }
        false
    }

    /// Allocates; returns the relayed address.
    pub fn allocate(&mut self) -> SocketAddr {
        let now = self.now();
        self.client.allocate(now);
        assert!(
            self.pump_until(|e| matches!(e, ClientEvent::Allocated { .. })),
            "no allocation: {:?}",
            self.events
        );
        self.client.relayed()[0]
    }

    /// Installs a permission for `peer`.
    pub fn permit(&mut self, peer: SocketAddr) {
        let now = self.now();
        self.client.create_permission(now, &[peer.ip()]);
        assert!(
            self.pump_until(|e| matches!(e, ClientEvent::PermissionCreated { .. })),
            "no permission: {:?}",
            self.events
        );
    }
}
