//! The measurements, each against one running process: relayed data (flat out, at a fixed
//! rate, the peak rate with no loss), allocation churn, and memory per allocation.

use crate::flows::{establish, open_flow, Epoch, Flow, Mode, Plan, Then};
use crate::procfs;
use crate::traffic::{self, EchoPeer, Offer, Outcome};
use mio::Poll;
use std::net::SocketAddr;
use std::time::{Duration, Instant as Clock};
use turnpike_core::Transport;

/// Set-up deadline of a batch of clients.
const SETUP_DEADLINE: Duration = Duration::from_secs(120);

/// Clients with their allocations, channels and an echo peer, ready for data.
pub struct Session {
    poll: Poll,
    flows: Vec<Flow>,
    echo: EchoPeer,
    mode: Mode,
    epoch: Epoch,
}

impl Session {
    /// Opens `clients` clients to `server` (in raw mode, client `i` goes to
    /// `server.port() + i`, the forwarder's pair `i`), sets them up, and binds the echo
    /// peer at `echo_at`. Client source addresses start at number `first_ip`.
    pub fn open(
        server: SocketAddr,
        transport: Transport,
        mode: Mode,
        clients: usize,
        first_ip: usize,
        echo_at: SocketAddr,
    ) -> Result<Session, String> {
        let mut poll = Poll::new().map_err(|e| e.to_string())?;
        let echo = EchoPeer::bind(&poll, echo_at).map_err(|e| format!("echo peer: {e}"))?;
        let peer = echo.addr();
        let creds = (mode != Mode::Raw).then_some((crate::servers::USER, crate::servers::PASS));
        let mut flows = Vec::with_capacity(clients);
        for i in 0..clients {
            let target = if mode == Mode::Raw {
                let port = server.port().saturating_add(i as u16);
                SocketAddr::new(server.ip(), port)
            } else {
                server
            };
            let f = open_flow(&poll, i, first_ip + i, target, transport, creds)
                .map_err(|e| format!("client {i}: {e}"))?;
            flows.push(f);
        }
        let epoch = Epoch::new();
        let ok = establish(
            &mut poll,
            &mut flows,
            Plan {
                peer,
                mode,
                then: Then::Keep,
                concurrency: 64,
                deadline: SETUP_DEADLINE,
            },
            &epoch,
        );
        if ok < clients {
            return Err(format!("only {ok} of {clients} clients set up"));
        }
        Ok(Session {
            poll,
            flows,
            echo,
            mode,
            epoch,
        })
    }

    /// As [`Session::open`] in channel mode, each client over TLS on TCP (`config`).
    pub fn open_tls(
        server: SocketAddr,
        clients: usize,
        first_ip: usize,
        echo_at: SocketAddr,
        config: &std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Session, String> {
        let mut poll = Poll::new().map_err(|e| e.to_string())?;
        let echo = EchoPeer::bind(&poll, echo_at).map_err(|e| format!("echo peer: {e}"))?;
        let peer = echo.addr();
        let creds = Some((crate::servers::USER, crate::servers::PASS));
        let mut flows = Vec::with_capacity(clients);
        for i in 0..clients {
            let f = crate::flows::open_flow_tls(&poll, i, first_ip + i, server, creds, config)
                .map_err(|e| format!("client {i}: {e}"))?;
            flows.push(f);
        }
        let epoch = Epoch::new();
        let plan = Plan {
            peer,
            mode: Mode::Channel,
            then: Then::Keep,
            concurrency: 64,
            deadline: SETUP_DEADLINE,
        };
        let ok = establish(&mut poll, &mut flows, plan, &epoch);
        if ok < clients {
            return Err(format!("only {ok} of {clients} clients set up"));
        }
        Ok(Session {
            poll,
            flows,
            echo,
            mode: Mode::Channel,
            epoch,
        })
    }

    /// One data phase, measuring process `pid`.
    pub fn run(&mut self, offer: Offer, pid: Option<u32>) -> Outcome {
        traffic::run(
            &mut self.poll,
            &mut self.flows,
            &mut self.echo,
            self.mode,
            offer,
            &self.epoch,
            pid,
        )
    }

    /// The highest offered rate (packets/s sent by the clients) that came back with no
    /// loss (at most 1 packet in 10 000), searched by bisection between `lo` and `hi` with
    /// `probes` probes of `probe` each. Returns the rate and its outcome.
    pub fn peak(
        &mut self,
        size: usize,
        mut lo: f64,
        mut hi: f64,
        probes: usize,
        probe: Duration,
        pid: Option<u32>,
    ) -> (f64, Outcome) {
        let mut best = (0.0, Outcome::default());
        for _ in 0..probes {
            let rate = (lo + hi) / 2.0;
            let o = self.run(
                Offer {
                    size,
                    rate,
                    window: usize::MAX / 2,
                    duration: probe,
                    max_packets: u64::MAX,
                    media: None,
                },
                pid,
            );
            // Not lossless, or not keeping up with the offer.
            let kept_up = o.sent as f64 >= 0.97 * rate * probe.as_secs_f64();
            if o.loss() <= 1e-4 && kept_up {
                lo = rate;
                best = (rate, o);
            } else {
                hi = rate;
            }
            // Let queues drain between probes.
            std::thread::sleep(Duration::from_millis(200));
        }
        best
    }
}

/// What allocation churn measured.
#[derive(Clone, Debug, Default)]
pub struct Churn {
    /// Full sequences done.
    pub completed: usize,
    /// Sequences attempted.
    pub attempted: usize,
    /// Wall seconds.
    pub seconds: f64,
    /// Server CPU seconds.
    pub server_cpu: f64,
}

impl Churn {
    /// Sequences per server CPU-second.
    pub fn per_cpu_second(&self) -> f64 {
        if self.server_cpu > 0.0 {
            self.completed as f64 / self.server_cpu
        } else {
            0.0
        }
    }
}

/// `n` clients over UDP, `concurrency` at a time, each on its own socket and address:
/// Allocate (401 round), CreatePermission, ChannelBind, Refresh 0.
pub fn churn(
    server: SocketAddr,
    pid: u32,
    n: usize,
    concurrency: usize,
    first_ip: usize,
) -> Result<Churn, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    // A peer address that need not exist: no data is sent.
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));
    let mut flows = Vec::with_capacity(n);
    for i in 0..n {
        let f = open_flow(
            &poll,
            i,
            first_ip + i,
            server,
            Transport::Udp,
            Some((crate::servers::USER, crate::servers::PASS)),
        )
        .map_err(|e| format!("client {i}: {e}"))?;
        flows.push(f);
    }
    let epoch = Epoch::new();
    let cpu0 = procfs::cpu_seconds(pid).map_err(|e| e.to_string())?;
    let t0 = Clock::now();
    let completed = establish(
        &mut poll,
        &mut flows,
        Plan {
            peer,
            mode: Mode::Channel,
            then: Then::Delete,
            concurrency,
            deadline: SETUP_DEADLINE,
        },
        &epoch,
    );
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = procfs::cpu_seconds(pid).map_err(|e| e.to_string())?;
    Ok(Churn {
        completed,
        attempted: n,
        seconds,
        server_cpu: cpu1 - cpu0,
    })
}

/// What the memory test measured.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// Allocations held.
    pub allocations: usize,
    /// Server VmRSS before, KiB.
    pub before_kib: u64,
    /// Server VmRSS with the allocations, KiB.
    pub after_kib: u64,
}

impl Memory {
    /// RSS growth per allocation, KiB.
    pub fn per_allocation_kib(&self) -> f64 {
        if self.allocations == 0 {
            return 0.0;
        }
        self.after_kib.saturating_sub(self.before_kib) as f64 / self.allocations as f64
    }
}

/// Sets up `n` UDP allocations (each with a permission and a channel) and holds them
/// while the server's RSS is read.
pub fn memory(server: SocketAddr, pid: u32, n: usize, first_ip: usize) -> Result<Memory, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let peer = SocketAddr::from(([127, 0, 0, 1], 9));
    let before_kib = procfs::rss_kib(pid).map_err(|e| e.to_string())?;
    let mut flows = Vec::with_capacity(n);
    for i in 0..n {
        let f = open_flow(
            &poll,
            i,
            first_ip + i,
            server,
            Transport::Udp,
            Some((crate::servers::USER, crate::servers::PASS)),
        )
        .map_err(|e| format!("client {i}: {e}"))?;
        flows.push(f);
    }
    let epoch = Epoch::new();
    let allocations = establish(
        &mut poll,
        &mut flows,
        Plan {
            peer,
            mode: Mode::Channel,
            then: Then::Keep,
            concurrency: 128,
            deadline: SETUP_DEADLINE,
        },
        &epoch,
    );
    std::thread::sleep(Duration::from_millis(500));
    let after_kib = procfs::rss_kib(pid).map_err(|e| e.to_string())?;
    Ok(Memory {
        allocations,
        before_kib,
        after_kib,
    })
}
