//! The event loop: one `mio::Poll` owning one core [`turnpike_core::Server`] and every
//! socket.
//!
//! The contract with the core (DESIGN.md): after every input, drain `poll_output()` and
//! act on each output; then arm the poll timeout from `poll_timeout()`. Relayed packets
//! take the fast path: they are received into one reusable buffer with
//! [`turnpike_core::HEADROOM`] bytes in front and [`turnpike_core::TAILROOM`] behind, the
//! core wraps or unwraps them in place, and the [`turnpike_core::Forward`] it returns names
//! the slice to send. Nothing is allocated per relayed packet.
//!
//! Sockets are edge-triggered, so reads are drained until `WouldBlock`; to stay fair under
//! a flood, one socket gets at most [`READ_BUDGET`] reads per turn and is then put back in
//! a queue served before the next poll.
//!
//! The UDP sockets a poll round reports are read together once the round's other events
//! are served: with one io_uring call for all of them where the kernel allows it
//! (`udp_round`).
//!
//! One file per job: `setup` opens a loop, `udp` and `tcp` are the packet paths,
//! `outputs` acts on what the core says, `housekeeping` runs once a second and at the end,
//! `commands` serves the inbox, `reload` takes a reloaded configuration, `listeners` adds
//! and sweeps the HTTP API's dynamic UDP ports (`dynamic_ports` is their table,
//! `read_again` the queue of busy sockets), `stream_batch` reads and writes a round's
//! streams with one io_uring submission each, `draining` is the loop's part of a drain and
//! `coalesce` paces small rounds.

mod coalesce;
mod commands;
mod draining;
mod dynamic_ports;
pub mod hosting;
mod housekeeping;
mod listeners;
mod outputs;
mod read_again;
mod reload;
mod setup;
mod stream_batch;
mod tcp;
mod udp;
mod udp_round;

use crate::api::webhook::Webhook;
use crate::clock::{wait_until, Clock};
use crate::id_hash::IdMap;
use crate::link::{Command, LoopHandle};
use crate::log_limit::CapWatch;
use crate::plan::Place;
use crate::report::Reporter;
use crate::settings::ListenerSpec;
use crate::sockets::SocketBuffers;
use crate::tcp::Conn;
use crate::token::Source;
use crate::trace_recorder::TraceRecorder;
use crate::udp_batch::{RecvBatch, SendQueue};
use core::time::Duration;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Poll};
use read_again::ReadAgain;
use signal_hook::consts::SIGTERM;
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use turnpike_core::{ConnId, RelayId, Server, Transport};

/// Readiness events taken from one poll.
pub const EVENTS: usize = 1024;
/// Reads from one socket per turn before the others get theirs.
pub const READ_BUDGET: usize = 256;
/// Size of the stream read buffer.
pub const STREAM_READ: usize = 64 * 1024;
/// How long a stream the core closed may take to flush what it was last told to write.
pub const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// Period of housekeeping: wall clock, event-log flush, stale streams.
pub const TICK: Duration = Duration::from_secs(1);
/// A poll round that received fewer datagrams (or stream reads) than this is "small": the
/// loop may then pause before polling again, for as long as its own rate needs to gather a
/// batch and at most `coalesce_us` (the `coalesce` module).
pub const COALESCE_BELOW: usize = 16;

/// Counters of the runtime itself (the core counts the protocol).
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeStats {
    /// Streams closed because they did not read what we wrote (bounded write buffer full).
    pub slow_readers_closed: u64,
    /// Datagrams the kernel would not take (buffer full): dropped.
    pub send_would_block: u64,
    /// Datagrams that failed to send for another reason.
    pub send_errors: u64,
    /// Streams accepted.
    pub streams_accepted: u64,
    /// Relay sockets that failed to bind.
    pub relay_bind_failures: u64,
    /// How late the last once-a-second tick ran, microseconds (event-loop lag).
    pub loop_lag_us: u64,
    /// The largest lag seen, microseconds.
    pub loop_lag_max_us: u64,
    /// Datagrams longer than the receive slot (MSG_TRUNC): dropped.
    pub recv_truncated: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS streams closed for a failed, oversized or late handshake or a TLS error.
    pub tls_failed: u64,
}

/// The relay: sockets, the core, and the loop that joins them.
pub struct Runtime {
    poll: Poll,
    server: Server,
    clock: Clock,
    listeners: Vec<Listener>,
    relays: IdMap<RelayId, UdpSocket>,
    conns: IdMap<ConnId, Conn>,
    next_conn: u64,
    /// Receive slots of UDP datagrams: HEADROOM, up to MAX_DATAGRAM bytes, TAILROOM each.
    rx: RecvBatch,
    /// Datagrams the current batch produced, sent when it ends.
    tx: SendQueue,
    /// UDP sockets the current poll round found ready, read together once it is served.
    ready_udp: udp_round::ReadyUdp,
    /// Streams with bytes queued by the current batch, written when it ends.
    dirty: Vec<ConnId>,
    /// The round's stream reads and writes through io_uring, when on.
    streams: stream_batch::StreamBatch,
    stream_buf: Vec<u8>,
    /// Plaintext out of a TLS session, on its way to the core.
    plain_buf: Vec<u8>,
    /// The native TLS configuration, when a listener serves TLS.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The longest PROXY v2 header accepted (the core's bound), for TLS listeners.
    proxy_max: usize,
    reporter: Reporter,
    buffers: SocketBuffers,
    stats: RuntimeStats,
    signals: Signals,
    /// SIGTERM deliveries, which `signals` coalesces.
    terms: crate::term_count::TermCount,
    /// Sockets whose read budget ran out, read again before the next poll.
    again: ReadAgain,
    stop: Option<i32>,
    accept_blocked: bool,
    last_send_error: Option<io::ErrorKind>,
    reported_send_errors: u64,
    /// Which cap counters were last logged, and when (one line per cap per window).
    caps: CapWatch,
    /// The webhook of the HTTP API, when configured: this loop's allocation events go there.
    webhook: Option<Webhook>,
    /// Dynamic UDP ports served for the HTTP API (loop 0).
    dynamic: dynamic_ports::DynamicPorts,
    /// Trace recording of the core's inputs, when on.
    trace: Option<TraceRecorder>,
    /// Which loop this is, of how many.
    place: Place,
    /// Requests from other threads (set by `handle`).
    inbox: Option<mpsc::Receiver<Command>>,
    /// Every loop of the node by index, this one included: where `Output::ToLoop` goes.
    loops: Vec<LoopHandle>,
    /// A message could not be carried to a loop that is gone (logged once).
    loop_gone_logged: bool,
    /// Pause after a small round (interrupt moderation), if on.
    coalesce: Option<coalesce::Coalesce>,
    /// Datagrams and stream reads taken in the current poll round.
    round_inputs: usize,
    /// The node's drain, shared with the other loops and the HTTP API.
    node_drain: Arc<crate::drain::Drain>,
    /// SIGTERMs this loop caught: the first drains, the second stops.
    sigterms: u32,
    /// This loop's part in packing the node's loops onto few CPUs, when on.
    #[cfg(target_os = "linux")]
    packing: Option<crate::packing::LoopPacking>,
    /// When the once-a-second tick runs next (set by the first round).
    next_tick: Option<turnpike_core::Instant>,
    /// Other loops this loop's thread runs ([`hosting`]).
    hosted: hosting::HostedLoops,
}

/// How [`Runtime::run_or_hand_off`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The loop stopped and shut down.
    Stopped,
    /// The loop is to run on the thread of loop `n`.
    HandOff(usize),
}

/// A UDP socket the loop reads datagrams from.
#[derive(Clone, Copy, Debug)]
enum UdpSource {
    /// A listener, by its index in `Runtime::listeners`.
    Listener(usize),
    /// A relay socket.
    Relay(RelayId),
}

struct Listener {
    spec: ListenerSpec,
    socket: ListenerSocket,
}

enum ListenerSocket {
    Udp(UdpSocket),
    Tcp(TcpListener),
    /// Closed at shutdown, or a dynamic UDP port closed (its slot is reused).
    Closed,
}

impl Runtime {
    /// A handle other threads reach this loop with (a command channel and a waker on its
    /// poll). The channel is created on the first call.
    pub fn handle(&mut self) -> io::Result<LoopHandle> {
        let waker = Arc::new(mio::Waker::new(
            self.poll.registry(),
            Source::Waker.token(),
        )?);
        let (tx, rx) = mpsc::channel();
        self.inbox = Some(rx);
        Ok(LoopHandle::new(self.place.index, tx, waker))
    }

    /// The handles of every loop of the node, by index (this one's included): its core's
    /// messages to other loops go there.
    pub fn set_loops(&mut self, loops: Vec<LoopHandle>) {
        self.loops = loops;
    }

    /// This loop's part in packing the node's loops onto as few CPUs as their load needs.
    #[cfg(target_os = "linux")]
    pub fn set_packing(&mut self, packing: crate::packing::LoopPacking) {
        self.packing = Some(packing);
    }

    /// The node's drain, shared by every loop and the HTTP API (by default this loop's
    /// own, as for a node of one loop without an API).
    pub fn set_drain(&mut self, drain: Arc<crate::drain::Drain>) {
        self.node_drain = drain;
    }

    /// The bound address of each configured listener, in `ListenerId` order (a port 0
    /// resolved), for the loops that share them.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .map(|l| {
                let a = match &l.socket {
                    ListenerSocket::Udp(s) => s.local_addr().ok(),
                    ListenerSocket::Tcp(s) => s.local_addr().ok(),
                    ListenerSocket::Closed => None,
                };
                a.unwrap_or(l.spec.addr)
            })
            .collect()
    }

    /// The bound address of each listener (useful when a port was 0).
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|l| {
                let a = match &l.socket {
                    ListenerSocket::Udp(s) => s.local_addr().ok(),
                    ListenerSocket::Tcp(s) => s.local_addr().ok(),
                    ListenerSocket::Closed => None,
                }?;
                Some((l.spec.transport, a))
            })
            .collect()
    }

    /// The runtime's own counters.
    pub fn stats(&self) -> RuntimeStats {
        self.stats
    }

    /// Runs until SIGTERM or SIGINT, then stops accepting, records what is still open and
    /// returns. Errors only if polling itself fails.
    pub fn run(&mut self) -> io::Result<()> {
        match self.run_or_hand_off()? {
            Ended::Stopped => Ok(()),
            // Only a node's loops take part in hosting, and their threads hand them over
            // (`hosting::run_hosted_loop`); this caller cannot.
            Ended::HandOff(_) => Err(io::Error::other(
                "a loop asked to run on another loop's thread where it cannot move",
            )),
        }
    }

    /// Runs as [`Runtime::run`], or until the node's packing asks this loop to run on
    /// another loop's thread ([`hosting`]): then it returns `HandOff(host)` and the caller
    /// hands it over.
    pub fn run_or_hand_off(&mut self) -> io::Result<Ended> {
        let mut events = Events::with_capacity(EVENTS);
        if self.coalesce.is_some() {
            precise_sleeps();
        }
        #[cfg(target_os = "linux")]
        if let Some(p) = &mut self.packing {
            p.start();
        }
        loop {
            if let Some(host) = self.hand_off_to() {
                return Ok(Ended::HandOff(host));
            }
            let own = self.timeout();
            let timeout = self.hosted_timeout(own);
            match self.round(&mut events, timeout) {
                Ok(false) => {}
                Ok(true) => {
                    self.return_hosted();
                    return Ok(Ended::Stopped);
                }
                Err(e) => {
                    self.return_hosted();
                    return Err(e);
                }
            }
            self.run_hosted();
            self.coalesce_pause();
        }
    }

    /// How long the next poll may wait: until the core's next timer or the next tick; not
    /// at all while sockets wait to be read again.
    fn timeout(&mut self) -> Duration {
        let now = self.clock.now();
        let next_tick = *self.next_tick.get_or_insert(now + TICK);
        if self.again.is_empty() {
            let deadline = self
                .server
                .poll_timeout()
                .map_or(next_tick, |t| t.min(next_tick));
            wait_until(now, deadline)
        } else {
            Duration::ZERO
        }
    }

    /// One poll round: wait at most `timeout`, serve what is ready, send what it
    /// produced, run the timers. True once the loop has stopped (and shut down).
    fn round(&mut self, events: &mut Events, timeout: Duration) -> io::Result<bool> {
        if let Err(e) = self.poll.poll(events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        for ev in events.iter() {
            let Some(src) = Source::from_token(ev.token()) else {
                continue;
            };
            if let Source::Conn(c) = src {
                if ev.is_writable() {
                    self.flush_conn(c);
                }
                if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                    continue;
                }
                if ev.is_read_closed() || ev.is_error() {
                    // The end of the stream may be queued behind data: read to it.
                    if let Some(conn) = self.conns.get_mut(&c) {
                        conn.hup = true;
                    }
                }
                if self.streams.on() {
                    self.streams.readable(c);
                    continue;
                }
            }
            if !self.defer_udp(src) {
                self.ready(src);
            }
        }
        // The UDP sockets found ready, read together.
        if !self.ready_udp.is_empty() {
            self.read_ready_udp();
        }
        self.read_streams();
        // Those that were waiting; what runs out of budget again waits for the next round.
        for _ in 0..self.again.len() {
            if let Some(src) = self.again.pop() {
                self.ready(src);
            }
        }
        // A socket left with its read budget spent: the loop cannot keep up. Packed
        // loops spread at once rather than at the next second's look.
        #[cfg(target_os = "linux")]
        if !self.again.is_empty() {
            if let Some(p) = &mut self.packing {
                p.saturated();
            }
        }
        // Whatever the sockets that were ready queued leaves now, together.
        self.end_batch();
        if let Some(sig) = self.stop {
            self.shutdown(sig);
            return Ok(true);
        }
        let now = self.clock.now();
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            if let Some(t) = &mut self.trace {
                t.timeout(now);
            }
            self.server.handle_timeout(now);
            self.drain(now);
        }
        let next_tick = *self.next_tick.get_or_insert(now + TICK);
        if now >= next_tick {
            let lag = u64::try_from(now.since(next_tick).as_micros()).unwrap_or(u64::MAX);
            self.stats.loop_lag_us = lag;
            self.stats.loop_lag_max_us = self.stats.loop_lag_max_us.max(lag);
            self.tick(now);
            self.next_tick = Some(now + TICK);
        }
        Ok(false)
    }

    /// Interrupt moderation, as a NIC does it: when the round just served moved only a few
    /// datagrams, every datagram costs a wake-up, a receive and a send of its own. Pausing
    /// before the next poll lets the kernel queue what arrives meanwhile, so the next round
    /// takes it with one wake-up, one `recvmmsg` and one send call. What the round received
    /// has been sent already; only datagrams that arrive during the pause wait, at most the
    /// pause. How long: as long as the loop's own rate needs to gather a batch, at most
    /// `coalesce_us`, and not at all where even that would gather next to nothing (see
    /// [`coalesce`]). A busy loop (big rounds, or sockets left with their budget spent)
    /// never pauses, so throughput is not capped.
    fn coalesce_pause(&mut self) {
        let inputs = std::mem::take(&mut self.round_inputs);
        let small = inputs < COALESCE_BELOW
            && self.again.is_empty()
            && self.stop.is_none()
            && !self.hosted.busy();
        if let Some(c) = &mut self.coalesce {
            if let Some(pause) = c.after_round(std::time::Instant::now(), inputs, small) {
                std::thread::sleep(pause);
            }
        }
    }

    /// A source is readable (or, for a listener, has connections waiting).
    fn ready(&mut self, src: Source) {
        let more = match src {
            Source::Signals => {
                let pending: Vec<i32> = self.signals.pending().collect();
                for sig in pending {
                    // The pipe coalesces repeats; the counter does not.
                    let times = if sig == SIGTERM { self.terms.take() } else { 1 };
                    for _ in 0..times {
                        self.on_signal(sig);
                    }
                }
                false
            }
            Source::Waker => {
                self.serve_commands();
                false
            }
            Source::Listener(n) => match self.listeners.get(n as usize).map(|l| &l.socket) {
                Some(ListenerSocket::Udp(_)) => {
                    self.read_datagrams(UdpSource::Listener(n as usize))
                }
                Some(ListenerSocket::Tcp(_)) => self.accept(n as usize),
                _ => false,
            },
            Source::Relay(r) => self.read_datagrams(UdpSource::Relay(r)),
            Source::Conn(c) => self.read_conn(c),
            Source::Hosted(n) => {
                self.hosted.ready(n as usize);
                false
            }
            // The HTTP API has a poll of its own: never registered here.
            Source::ApiListener | Source::ApiConn(_) => false,
        };
        if more {
            self.again.push(src);
        }
    }
}

/// Sleeps of this thread end within a microsecond of their deadline instead of the default
/// 50 µs timer slack (PR_SET_TIMERSLACK, prctl(2)): the coalescing pause is a few hundred
/// microseconds at most, and a quarter of it in slack would be felt.
fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    {
        const SLACK_NS: libc::c_ulong = 1_000;
        // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only changes this
        // thread's timer slack; no memory is passed.
        let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, SLACK_NS) };
        if rc != 0 {
            log::debug!("timer slack unchanged: {}", io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use crate::plan::loop_settings;
    use crate::settings::Settings;
    use turnpike_core::node::{LoopId, LoopMsg};

    #[test]
    fn the_runtime_can_move_to_another_thread() {
        fn is_send<T: Send>() {}
        is_send::<Runtime>();
    }

    /// Two loops of one node on loopback ports the kernel picks, linked to each other.
    pub(super) fn two_loops() -> (Runtime, Runtime) {
        let base = loopback_settings();
        let seed = [3u8; 32];
        let place = |index| Place { index, count: 2 };
        let mut a =
            Runtime::new_loop(loop_settings(&base, place(0), &[]), seed, place(0), None).unwrap();
        let addrs = a.listener_addrs();
        let s = loop_settings(&base, place(1), &addrs);
        let mut b = Runtime::new_loop(s, [4u8; 32], place(1), None).unwrap();
        let handles = vec![a.handle().unwrap(), b.handle().unwrap()];
        a.set_loops(handles.clone());
        b.set_loops(handles);
        (a, b)
    }

    /// A node's settings on a loopback port the kernel picks (UDP and TCP).
    pub(super) fn loopback_settings() -> Settings {
        // A port free for UDP and TCP alike, as the kernel hands them out.
        let port = (0..64)
            .find_map(|_| {
                let u = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
                let p = u.local_addr().ok()?.port();
                std::net::TcpListener::bind(("127.0.0.1", p)).ok()?;
                Some(p)
            })
            .unwrap();
        let text = format!(
            "realm = \"t\"\nlisten_address = \"127.0.0.1\"\nturn_udp_port = {port}\n\
             turn_tcp_listen_port = {port}\nusers = {{ a = \"pw\" }}\napi = false\n\
             relay_port_min = 50000\nrelay_port_max = 50999\n"
        );
        let fc = FileConfig::parse("t.toml", &text).unwrap();
        Settings::from_file(&fc, "t.toml").unwrap()
    }

    #[test]
    fn a_core_message_reaches_the_addressed_loop_and_a_gone_loop_is_logged_once() {
        let (mut a, mut b) = two_loops();
        let msg = LoopMsg::UserRelease {
            username: "a".into(),
        };
        a.send_to_loop(LoopId(1), msg.clone());
        match b.inbox.as_ref().map(|rx| rx.try_recv()) {
            Some(Ok(Command::Loop { from, msg: got })) => {
                assert_eq!(from, LoopId(0));
                assert_eq!(got, msg);
            }
            _ => panic!("loop 1 got no message"),
        }
        // Served as an input; the inbox is empty afterwards.
        b.send_to_loop(LoopId(0), msg.clone());
        a.serve_commands();
        assert!(a.inbox.as_ref().is_some_and(|rx| rx.try_recv().is_err()));
        drop(b);
        assert!(!a.loop_gone_logged);
        a.send_to_loop(LoopId(1), msg.clone());
        a.send_to_loop(LoopId(1), msg);
        assert!(a.loop_gone_logged);
    }
}
