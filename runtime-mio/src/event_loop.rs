//! The event loop: one `mio::Poll` owning one core [`Server`] and every socket.
//!
//! The contract with the core (DESIGN.md): after every input, drain `poll_output()` and
//! act on each output; then arm the poll timeout from `poll_timeout()`. Relayed packets
//! take the fast path: they are received into one reusable buffer with
//! [`HEADROOM`] bytes in front and [`TAILROOM`] behind, the core wraps or unwraps them in
//! place, and the [`Forward`] it returns names the slice to send. Nothing is allocated per
//! relayed packet.
//!
//! Sockets are edge-triggered, so reads are drained until `WouldBlock`; to stay fair under
//! a flood, one socket gets at most [`READ_BUDGET`] reads per turn and is then put back in
//! a queue served before the next poll.

use crate::api::Api;
use crate::clock::{wait_until, Clock};
use crate::event_log::EventLog;
use crate::id_hash::IdMap;
use crate::log_limit::CapWatch;
use crate::report::Reporter;
use crate::settings::{ListenerSpec, Settings, SocketBuffers};
use crate::sockets;
use crate::tcp::Conn;
use crate::token::Source;
use crate::trace_recorder::TraceRecorder;
use crate::udp_batch::{RecvBatch, SendMode, SendQueue, Tally, Via, RECV_SLOTS};
use crate::workers::{self, Command, LoopHandle, Place};
use crate::write_buf::WriteError;
use core::time::Duration;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use turnpike_core::config::ListenerConfig;
use turnpike_core::event::Output;
use turnpike_core::{ConnId, Forward, Instant, ListenerId, RelayId, Server, Transport, HEADROOM};

/// Reads from one socket per turn before the others get theirs.
pub const READ_BUDGET: usize = 256;
/// Largest UDP payload, and the receive area of the packet buffer.
pub const MAX_DATAGRAM: usize = 65_535;
/// Size of the stream read buffer.
pub const STREAM_READ: usize = 64 * 1024;
/// How long a stream the core closed may take to flush what it was last told to write.
pub const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// Period of housekeeping: wall clock, event-log flush, stale streams.
pub const TICK: Duration = Duration::from_secs(1);
/// A poll round that received fewer datagrams (or stream reads) than this is "small": the
/// loop then pauses for `coalesce_us` before polling again.
pub const COALESCE_BELOW: usize = 16;

// The packet buffer holds the largest UDP payload (65,507 bytes over IPv4).
const _: () = assert!(MAX_DATAGRAM >= 65_507);

/// Why the relay could not start.
#[derive(Debug)]
pub enum StartError {
    /// A socket could not be opened (address, port, permission...).
    Io(String, io::Error),
    /// The core refused the configuration.
    Config(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(what, e) => write!(f, "{what}: {e}"),
            StartError::Config(m) => write!(f, "configuration refused: {m}"),
        }
    }
}

impl std::error::Error for StartError {}

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
    /// Streams with bytes queued by the current batch, written when it ends.
    dirty: Vec<ConnId>,
    stream_buf: Vec<u8>,
    reporter: Reporter,
    buffers: SocketBuffers,
    stats: RuntimeStats,
    signals: Signals,
    again: VecDeque<Source>,
    stop: Option<i32>,
    accept_blocked: bool,
    last_send_error: Option<io::ErrorKind>,
    reported_send_errors: u64,
    /// Which cap counters were last logged, and when (one line per cap per window).
    caps: CapWatch,
    /// The HTTP API, when served (taken out while it runs, see `with_api`).
    api: Option<Api>,
    /// Trace recording of the core's inputs, when on.
    trace: Option<TraceRecorder>,
    /// Which loop this is, of how many.
    place: Place,
    /// Requests from other threads (set by `handle`).
    inbox: Option<mpsc::Receiver<Command>>,
    /// Loop 0: the other loops, which the API asks for their counters and allocations.
    peers: Vec<LoopHandle>,
    /// Pause after a small round (interrupt moderation), if on.
    coalesce: Option<Duration>,
    /// Datagrams and stream reads taken in the current poll round.
    round_inputs: usize,
}

struct Listener {
    spec: ListenerSpec,
    socket: ListenerSocket,
}

enum ListenerSocket {
    Udp(UdpSocket),
    Tcp(TcpListener),
    /// Closed at shutdown.
    Closed,
}

impl Runtime {
    /// Opens the listeners, the event log and the signal pipe, and creates the core with
    /// `seed` (all of its randomness): the only event loop.
    pub fn new(settings: Settings, seed: [u8; 32]) -> Result<Self, StartError> {
        Self::new_loop(settings, seed, Place::SOLE)
    }

    /// As [`Runtime::new`], for loop `place` of several ([`crate::workers`]): listeners
    /// shared with `SO_REUSEPORT` when there are several loops, allocation ids in the
    /// loop's own range, the start record and the API on loop 0 only.
    pub fn new_loop(settings: Settings, seed: [u8; 32], place: Place) -> Result<Self, StartError> {
        let shared = place.count > 1;
        let poll = Poll::new().map_err(|e| StartError::Io("cannot create the poll".into(), e))?;
        let mut listeners = Vec::new();
        for spec in &settings.listeners {
            let what = || format!("cannot listen on {} {}", spec.transport.as_str(), spec.addr);
            let token = Source::Listener(spec.id.0).token();
            let socket = match spec.transport {
                Transport::Udp => {
                    let mut s = sockets::udp_listener_with(spec.addr, settings.buffers, shared)
                        .map_err(|e| StartError::Io(what(), e))?;
                    poll.registry()
                        .register(&mut s, token, Interest::READABLE)
                        .map_err(|e| StartError::Io(what(), e))?;
                    ListenerSocket::Udp(s)
                }
                Transport::Tcp => {
                    let mut s = sockets::tcp_listener_with(spec.addr, settings.buffers, shared)
                        .map_err(|e| StartError::Io(what(), e))?;
                    poll.registry()
                        .register(&mut s, token, Interest::READABLE)
                        .map_err(|e| StartError::Io(what(), e))?;
                    ListenerSocket::Tcp(s)
                }
            };
            check_buffers(&socket, spec, settings.buffers);
            listeners.push(Listener {
                spec: *spec,
                socket,
            });
        }
        let mut signals = Signals::new([SIGTERM, SIGINT])
            .map_err(|e| StartError::Io("cannot catch signals".into(), e))?;
        poll.registry()
            .register(&mut signals, Source::Signals.token(), Interest::READABLE)
            .map_err(|e| StartError::Io("cannot catch signals".into(), e))?;
        let event_log = match &settings.event_log {
            Some(p) => Some(EventLog::open(p).map_err(|e| {
                StartError::Io(format!("cannot open event log {}", p.display()), e)
            })?),
            None => None,
        };
        let clock = Clock::new();
        let now = clock.now();
        let unix_ms = Clock::unix_ms();
        let mut trace = match &settings.trace {
            Some(t) => Some(
                TraceRecorder::create(t, &settings.core, seed, now, unix_ms).map_err(|e| {
                    StartError::Io(format!("cannot write trace {}", t.path.display()), e)
                })?,
            ),
            None => None,
        };
        let mut server =
            Server::new(settings.core, seed, now).map_err(|e| StartError::Config(e.0))?;
        if place.index > 0 {
            server.set_allocation_id_base(workers::allocation_id_base(place.index));
        }
        if let Some(t) = &mut trace {
            t.wall_clock(now, unix_ms);
        }
        server.set_wall_clock(now, unix_ms);
        let mut reporter = Reporter::new(event_log);
        if place.index == 0 {
            let mut start = json!({"version": env!("CARGO_PKG_VERSION"), "seed": hex(&seed), "urls": settings.urls});
            if shared {
                start["loops"] = json!(place.count);
            }
            reporter.record(Clock::unix_ms(), "start", start);
        }
        let api = match settings.api {
            Some(a) => {
                let (listen, optional) = (a.listen, a.optional);
                let started = Api::start(a, settings.ice.clone(), poll.registry());
                let api = match started {
                    Ok(api) => Some(api),
                    Err(e) if optional => {
                        log::warn!("no HTTP API: cannot listen on {listen}: {e}");
                        None
                    }
                    Err(e) => {
                        return Err(StartError::Io(
                            format!("cannot serve the HTTP API on {listen}"),
                            e,
                        ));
                    }
                };
                api
            }
            None => None,
        };
        let api = match api {
            Some(api) => {
                let listen = api.local_addr().ok();
                if let Some(t) = &mut trace {
                    t.rest_secret_added(api.secret());
                }
                server.credentials_mut().add_rest_secret(api.secret());
                let addr = listen.map_or_else(|| "?".to_string(), |a| a.to_string());
                log::info!("HTTP API on http://{addr}");
                reporter.record(Clock::unix_ms(), "api", json!({"listen": addr}));
                Some(api)
            }
            None => None,
        };
        if place.index == 0 {
            for w in settings.ice.start_warnings() {
                log::warn!("{w}");
            }
        }
        Ok(Runtime {
            poll,
            server,
            clock,
            listeners,
            relays: IdMap::default(),
            conns: IdMap::default(),
            next_conn: 0,
            rx: RecvBatch::new(),
            tx: SendQueue::new(send_mode()),
            dirty: Vec::with_capacity(RECV_SLOTS),
            stream_buf: vec![0; STREAM_READ],
            reporter,
            buffers: settings.buffers,
            stats: RuntimeStats::default(),
            signals,
            again: VecDeque::new(),
            stop: None,
            accept_blocked: false,
            last_send_error: None,
            reported_send_errors: 0,
            caps: CapWatch::new(crate::log_limit::DEFAULT_INTERVAL_MS),
            api,
            trace,
            place,
            inbox: None,
            peers: Vec::new(),
            coalesce: settings.coalesce,
            round_inputs: 0,
        })
    }

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

    /// Loop 0: the other loops, for the API.
    pub fn set_peers(&mut self, peers: Vec<LoopHandle>) {
        self.peers = peers;
    }

    /// The secret of the HTTP API's issued credentials, when the API is served: the other
    /// loops must accept it as a REST secret.
    pub fn api_secret(&self) -> Option<Vec<u8>> {
        self.api.as_ref().map(|a| a.secret().to_vec())
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

    /// This loop's counters, with its index.
    fn own_stats(&self) -> crate::api::metrics::LoopStats {
        crate::api::metrics::LoopStats {
            index: self.place.index,
            core: self.server.stats(self.clock.now()),
            runtime: crate::api::Host::runtime_metrics(self),
        }
    }

    /// Serves what other threads asked (the waker fired).
    fn serve_commands(&mut self) {
        while let Some(cmd) = self.inbox.as_ref().and_then(|rx| rx.try_recv().ok()) {
            let now = self.clock.now();
            match cmd {
                Command::Stats(reply) => {
                    let _ = reply.try_send(self.own_stats());
                }
                Command::Allocations(reply) => {
                    let _ = reply.try_send(self.server.allocations(now));
                }
                Command::Delete(id, reply) => {
                    let found = crate::api::Host::delete_allocation(self, id);
                    self.drain(now);
                    let _ = reply.try_send(found);
                }
                Command::Stop => {
                    self.stop.get_or_insert(0);
                }
            }
        }
    }

    /// Where the HTTP API listens, if it is served.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|a| a.local_addr().ok())
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
        let mut events = Events::with_capacity(1024);
        let mut next_tick = self.clock.now() + TICK;
        if self.coalesce.is_some() {
            precise_sleeps();
        }
        loop {
            let now = self.clock.now();
            let timeout = if self.again.is_empty() {
                let deadline = self
                    .server
                    .poll_timeout()
                    .map_or(next_tick, |t| t.min(next_tick));
                wait_until(now, deadline)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
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
                }
                self.ready(src);
            }
            for src in std::mem::take(&mut self.again) {
                self.ready(src);
            }
            // Whatever the sockets that were ready queued leaves now, together.
            self.end_batch();
            if let Some(sig) = self.stop {
                self.shutdown(sig);
                return Ok(());
            }
            let now = self.clock.now();
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                if let Some(t) = &mut self.trace {
                    t.timeout(now);
                }
                self.server.handle_timeout(now);
                self.drain(now);
            }
            if now >= next_tick {
                let lag = u64::try_from(now.since(next_tick).as_micros()).unwrap_or(u64::MAX);
                self.stats.loop_lag_us = lag;
                self.stats.loop_lag_max_us = self.stats.loop_lag_max_us.max(lag);
                self.tick(now);
                next_tick = now + TICK;
            }
            self.coalesce_pause();
        }
    }

    /// Interrupt moderation, as a NIC does it: when the round just served moved only a few
    /// datagrams, every datagram costs a wake-up, a receive and a send of its own. Waiting
    /// `coalesce_us` before the next poll lets the kernel queue what arrives meanwhile, so
    /// the next round takes it with one wake-up, one `recvmmsg` and one `sendmmsg`. What the
    /// round received has been sent already; only datagrams that arrive during the pause
    /// wait, at most the pause. A busy loop (big rounds, or sockets left with their budget
    /// spent) never pauses, so throughput is not capped.
    fn coalesce_pause(&mut self) {
        let inputs = std::mem::take(&mut self.round_inputs);
        if let Some(pause) = self.coalesce {
            if inputs > 0 && inputs < COALESCE_BELOW && self.again.is_empty() && self.stop.is_none()
            {
                std::thread::sleep(pause);
            }
        }
    }

    /// A source is readable (or, for a listener, has connections waiting).
    fn ready(&mut self, src: Source) {
        let more = match src {
            Source::Signals => {
                for sig in self.signals.pending() {
                    self.stop = Some(sig);
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
            Source::ApiListener => {
                self.with_api(|api, rt| {
                    api.accept(&rt.poll.registry().try_clone()?, rt);
                    Ok(())
                });
                false
            }
            Source::ApiConn(n) => {
                self.with_api(|api, rt| {
                    api.serve(n, &rt.poll.registry().try_clone()?, rt);
                    Ok(())
                });
                false
            }
        };
        if more && !self.again.contains(&src) {
            self.again.push_back(src);
        }
    }

    /// Reads datagrams from a UDP listener or a relay socket, a batch of slots per system
    /// call, until the socket's queue is empty. True if its budget ran out first.
    ///
    /// A batch that comes back smaller than asked emptied the queue: the socket is not read
    /// again until the next (edge-triggered) readiness event, which saves the call that
    /// would only say `WouldBlock`.
    fn read_datagrams(&mut self, src: UdpSource) -> bool {
        let mut budget = READ_BUDGET;
        while budget > 0 {
            if self.rx.free() == 0 {
                self.end_batch();
            }
            let sock = match src {
                UdpSource::Listener(n) => match self.listeners.get(n) {
                    Some(Listener {
                        socket: ListenerSocket::Udp(sock),
                        ..
                    }) => sock,
                    _ => return false,
                },
                UdpSource::Relay(r) => match self.relays.get(&r) {
                    Some(sock) => sock,
                    None => return false,
                },
            };
            let want = budget.min(RECV_SLOTS).min(self.rx.free());
            match self.rx.recv(sock, want) {
                Ok(slots) => {
                    let got = slots.len();
                    self.round_inputs += got;
                    // One clock reading per batch.
                    let now = self.clock.now();
                    for slot in slots {
                        self.datagram_in(now, src, slot);
                    }
                    budget = budget.saturating_sub(got);
                    if got < want {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Not worth a spin: wait for the next readiness event.
                    log::debug!("{src:?}: receive failed: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// The end of a batch: what it queued is sent, and its receive slots are free again.
    fn end_batch(&mut self) {
        self.flush_sends();
        self.flush_streams();
        self.rx.reset();
    }

    /// Sends the queued datagrams, each from the socket its [`Via`] names now (a relay
    /// closed since is skipped).
    fn flush_sends(&mut self) {
        flush_queue(
            &mut self.tx,
            &self.rx,
            &self.listeners,
            &self.relays,
            &mut self.stats,
            &mut self.last_send_error,
        );
    }

    /// Writes what the batch queued on streams, once per stream.
    fn flush_streams(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for c in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&c) else {
                continue;
            };
            conn.queued = false;
            if let Err(e) = conn.out.flush(&mut conn.stream) {
                let now = self.clock.now();
                self.stream_write_failed(now, c, WriteError::Io(e));
            }
        }
        // Keep the list's memory; anything queued meanwhile (nothing, today) stays.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    /// Queues `range` of receive slot `slot` to leave from `via` to `to` when the batch
    /// ends.
    fn queue_send(
        &mut self,
        via: Via,
        to: SocketAddr,
        slot: usize,
        range: core::ops::Range<usize>,
    ) {
        let base = RecvBatch::slot_start(slot);
        let range = base + range.start..base + range.end;
        if !self.tx.push_received(via, to, range.clone()) {
            self.flush_sends();
            self.tx.push_received(via, to, range);
        }
    }

    /// Feeds the datagram in receive slot `slot` to the core (recorded first when
    /// tracing), then acts on what it says.
    fn datagram_in(&mut self, now: Instant, src: UdpSource, slot: usize) {
        let Some(got) = self.rx.received(slot) else {
            return;
        };
        if got.truncated {
            self.stats.recv_truncated += 1;
            return;
        }
        let (from, len) = (got.from, got.len);
        let Some(buf) = self.rx.slot_mut(slot) else {
            return;
        };
        let fwd = match src {
            UdpSource::Listener(n) => {
                let Some(id) = self.listeners.get(n).map(|l| l.spec.id) else {
                    return;
                };
                if let Some(t) = &mut self.trace {
                    t.datagram(now, id, from, buf.get(area_of(len)).unwrap_or_default());
                }
                self.server
                    .handle_datagram(now, id, from, buf, area_of(len))
            }
            UdpSource::Relay(r) => {
                if let Some(t) = &mut self.trace {
                    t.relay_datagram(now, r, from, buf.get(area_of(len)).unwrap_or_default());
                }
                self.server
                    .handle_relay_datagram(now, r, from, buf, area_of(len))
            }
        };
        if let Some(f) = fwd {
            self.forward(now, f, slot);
        }
        self.drain(now);
    }

    /// Accepts connections on TCP listener `n`. True if its budget ran out first.
    fn accept(&mut self, n: usize) -> bool {
        for _ in 0..READ_BUDGET {
            let Some(Listener {
                spec,
                socket: ListenerSocket::Tcp(l),
            }) = self.listeners.get(n)
            else {
                return false;
            };
            let spec = *spec;
            match l.accept() {
                Ok((mut stream, remote)) => {
                    self.stats.streams_accepted += 1;
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(spec.addr);
                    let conn = ConnId(self.next_conn);
                    self.next_conn += 1;
                    let token = Source::Conn(conn).token();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("cannot register a connection from {remote}: {e}");
                        continue;
                    }
                    self.conns.insert(conn, Conn::new(stream, spec.id, remote));
                    let now = self.clock.now();
                    if let Some(t) = &mut self.trace {
                        t.stream_open(now, conn, spec.id, local, remote);
                    }
                    self.server
                        .handle_stream_open(now, conn, spec.id, local, remote);
                    self.drain(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Typically EMFILE: the connection stays queued; retry on the next tick
                    // rather than spin.
                    self.accept_blocked = true;
                    let msg = format!("tcp listener {}: accept failed: {e}", spec.addr);
                    self.reporter.relay_warning(
                        Clock::unix_ms(),
                        "accept_failed",
                        &msg,
                        json!({"error": e.to_string()}),
                    );
                    return false;
                }
            }
        }
        true
    }

    /// Reads from stream `c` into the core. True if its budget ran out first.
    fn read_conn(&mut self, c: ConnId) -> bool {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(&c) else {
                return false;
            };
            match conn.stream.read(&mut self.stream_buf) {
                Ok(0) => {
                    self.drop_conn(c, "closed by the client");
                    return false;
                }
                Ok(n) => {
                    self.round_inputs += 1;
                    // A short read emptied the socket: its next bytes bring a new
                    // (edge-triggered) event, so skip the read that would say WouldBlock.
                    // Not once the peer closed: that edge has come already.
                    let drained = n < self.stream_buf.len() && !conn.hup;
                    if conn.closing.is_some() {
                        // The core is done with it; discard what still arrives.
                        if drained {
                            return false;
                        }
                        continue;
                    }
                    let now = self.clock.now();
                    let data = self.stream_buf.get(..n).unwrap_or_default();
                    let (tx, rx) = (&mut self.tx, &self.rx);
                    let (listeners, relays) = (&self.listeners, &self.relays);
                    let stats = &mut self.stats;
                    let last_error = &mut self.last_send_error;
                    let trace = &mut self.trace;
                    if let Some(t) = trace {
                        t.stream_data(now, c, data);
                    }
                    // The frames of one read leave together when the batch ends (GSO runs
                    // when they are equal-sized, as media often is).
                    self.server
                        .handle_stream_data(now, c, data, &mut |relay, peer, payload| {
                            if let Some(t) = trace {
                                t.to_peer(relay, peer, payload.len());
                            }
                            let via = Via::Relay(relay);
                            if !tx.push_copy(via, peer, payload) {
                                flush_queue(tx, rx, listeners, relays, stats, last_error);
                                if !tx.push_copy(via, peer, payload) {
                                    // Larger than the whole arena: cannot happen for a
                                    // datagram, but never drop silently.
                                    if let Some(sock) = relays.get(&relay) {
                                        send_datagram(sock, payload, peer, stats, last_error);
                                    }
                                }
                            }
                        });
                    self.drain(now);
                    if drained {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_conn(c, &format!("read failed: {e}"));
                    return false;
                }
            }
        }
        true
    }

    /// Stream `c` is writable again: send what waits; finish a close the core asked for.
    fn flush_conn(&mut self, c: ConnId) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        if let Err(e) = conn.out.flush(&mut conn.stream) {
            self.drop_conn(c, &format!("write failed: {e}"));
            return;
        }
        if conn.closing.is_some() && conn.out.is_empty() {
            self.drop_conn(c, "closed by the relay");
        }
    }

    /// Sends a relayed packet where the core says: a slice of receive slot `slot`.
    fn forward(&mut self, now: Instant, f: Forward, slot: usize) {
        if let Some(t) = &mut self.trace {
            t.forward(&f);
        }
        match f {
            Forward::ToPeer { relay, peer, range } => {
                self.queue_send(Via::Relay(relay), peer, slot, range);
            }
            Forward::ToClient {
                listener,
                client,
                range,
            } => self.queue_send(Via::Listener(listener.0), client, slot, range),
            Forward::ToStream { conn, range } => {
                let Some(data) = self.rx.slot_mut(slot).and_then(|b| b.get(range)) else {
                    return;
                };
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                // Appended now, written once per stream when the batch ends.
                match c.out.queue(&mut c.stream, data) {
                    Ok(()) => {
                        if !c.queued && !c.out.is_empty() {
                            c.queued = true;
                            self.dirty.push(conn);
                        }
                    }
                    Err(problem) => self.stream_write_failed(now, conn, problem),
                }
            }
        }
    }

    /// Drains the core's outputs and acts on each.
    fn drain(&mut self, now: Instant) {
        while let Some(out) = self.server.poll_output() {
            if let Some(t) = &mut self.trace {
                t.output(&out);
            }
            match out {
                Output::Transmit { listener, to, data } => {
                    // Keep the order of what this batch already queued.
                    self.flush_sends();
                    if let Some(Listener {
                        socket: ListenerSocket::Udp(sock),
                        ..
                    }) = self.listeners.get(listener.0 as usize)
                    {
                        send_datagram(sock, &data, to, &mut self.stats, &mut self.last_send_error);
                    }
                }
                Output::StreamWrite { conn, data } => {
                    if let Some(problem) = write_conn(&mut self.conns, conn, &data) {
                        self.stream_write_failed(now, conn, problem);
                    }
                }
                Output::CloseStream { conn, reason } => {
                    log::debug!("stream {} closed by the core: {}", conn.0, reason.as_str());
                    let Some(c) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    if c.out.is_empty() {
                        self.close_conn(conn);
                    } else {
                        c.closing = Some(now + CLOSE_FLUSH);
                    }
                }
                Output::BindRelay { relay, addr } => self.bind_relay(now, relay, addr),
                Output::CloseRelay { relay } => {
                    // What the batch queued for it still leaves.
                    self.flush_sends();
                    // close(2) takes the socket out of the epoll set (its descriptor is
                    // never duplicated), so no EPOLL_CTL_DEL first: one syscall fewer
                    // per allocation.
                    drop(self.relays.remove(&relay));
                }
                // Carried between loops once the runtime wires the node's links; until then
                // a loop's core is told it is alone (Config::node is SOLE) and sends none.
                Output::ToLoop { to, .. } => {
                    log::error!("a message for loop {} with no link to carry it", to.0);
                }
                Output::Event(ev) => {
                    if let Some(api) = self.api.as_mut() {
                        api.event(Clock::unix_ms(), &ev);
                    }
                    self.reporter.event(Clock::unix_ms(), &ev)
                }
            }
        }
        if let Some(t) = &mut self.trace {
            t.end_drain();
        }
    }

    /// Opens relay socket `relay` on `addr` and tells the core how it went.
    fn bind_relay(&mut self, now: Instant, relay: RelayId, addr: SocketAddr) {
        let result = match sockets::relay_socket(addr, self.buffers) {
            Ok(mut sock) => match self.poll.registry().register(
                &mut sock,
                Source::Relay(relay).token(),
                Interest::READABLE,
            ) {
                Ok(()) => {
                    self.relays.insert(relay, sock);
                    Ok(())
                }
                Err(e) => Err((turnpike_core::server::BindError::Other, e)),
            },
            Err(err) => Err(err),
        };
        let result = result.map_err(|(kind, e)| {
            self.stats.relay_bind_failures += 1;
            if kind != turnpike_core::server::BindError::AddrInUse {
                let msg = format!("cannot bind relay socket {addr}: {e}");
                self.reporter.relay_warning(
                    Clock::unix_ms(),
                    "relay_bind_failed",
                    &msg,
                    json!({"addr": addr.to_string(), "error": e.to_string()}),
                );
            } else {
                log::debug!("relay port {addr} in use by someone else");
            }
            kind
        });
        if let Some(t) = &mut self.trace {
            t.relay_bound(now, relay, result);
        }
        self.server.handle_relay_bound(now, relay, result);
    }

    /// A write to stream `conn` failed: close it and tell the core.
    fn stream_write_failed(&mut self, now: Instant, conn: ConnId, problem: WriteError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let remote = c.remote;
        match problem {
            WriteError::Overflow => {
                self.stats.slow_readers_closed += 1;
                let msg = format!(
                    "stream {} from {remote} closed: it does not read what it is sent ({} slow readers closed so far)",
                    conn.0, self.stats.slow_readers_closed
                );
                let rec = json!({"conn": conn.0, "remote": remote.to_string(), "total": self.stats.slow_readers_closed});
                self.reporter.remote(
                    Clock::unix_ms(),
                    remote.ip(),
                    "slow_reader",
                    log::Level::Warn,
                    &msg,
                    rec,
                );
                self.drop_conn_at(now, conn, None);
            }
            WriteError::Io(e) => self.drop_conn_at(now, conn, Some(&format!("write failed: {e}"))),
        }
    }

    /// Closes stream `c` now, telling the core unless it already forgot it.
    fn drop_conn(&mut self, c: ConnId, why: &str) {
        let now = self.clock.now();
        self.drop_conn_at(now, c, Some(why));
        self.drain(now);
    }

    fn drop_conn_at(&mut self, now: Instant, c: ConnId, why: Option<&str>) {
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        let core_knows = conn.closing.is_none();
        if let Some(why) = why {
            log::debug!("stream {} from {}: {why}", c.0, conn.remote);
        }
        self.close_conn(c);
        if core_knows {
            if let Some(t) = &mut self.trace {
                t.stream_closed(now, c);
            }
            self.server.handle_stream_closed(now, c);
        }
    }

    /// Forgets stream `c` and closes its socket.
    fn close_conn(&mut self, c: ConnId) {
        if let Some(mut conn) = self.conns.remove(&c) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Once a second: the wall clock, the event log, streams slow to close, retries.
    fn tick(&mut self, now: Instant) {
        let unix_ms = Clock::unix_ms();
        if let Some(t) = &mut self.trace {
            t.wall_clock(now, unix_ms);
            t.flush();
        }
        self.server.set_wall_clock(now, unix_ms);
        let stale: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for c in stale {
            self.close_conn(c);
        }
        let failed = self.stats.send_errors + self.stats.send_would_block;
        if failed > self.reported_send_errors {
            let msg = format!(
                "{} datagrams could not be sent so far ({} with full buffers; last error: {:?})",
                failed, self.stats.send_would_block, self.last_send_error
            );
            let rec = json!({"send_errors": self.stats.send_errors, "send_would_block": self.stats.send_would_block});
            self.reporter
                .relay_warning(Clock::unix_ms(), "send_failed", &msg, rec);
            self.reported_send_errors = failed;
        }
        self.log_caps(now, unix_ms);
        if std::mem::take(&mut self.accept_blocked) {
            for n in 0..self.listeners.len() {
                if matches!(
                    self.listeners.get(n).map(|l| &l.socket),
                    Some(ListenerSocket::Tcp(_))
                ) {
                    self.ready(Source::Listener(n as u32));
                }
            }
        }
        self.with_api(|api, rt| {
            api.tick(&rt.poll.registry().try_clone()?, rt);
            Ok(())
        });
        self.reporter.flush();
    }

    /// Logs, at most once per window each, that a cap dropped or refused something since
    /// the last line (the counters are in `/metrics` too).
    fn log_caps(&mut self, now: Instant, unix_ms: u64) {
        let st = self.server.stats(now);
        let caps = [
            ("rate_limited", st.dropped.rate_limited),
            ("bandwidth_dropped", st.dropped.bandwidth),
            ("queue_full", st.dropped.queue_full),
            ("streams_over_source_cap", st.streams_over_source_cap),
            ("insufficient_capacity", st.insufficient_capacity),
        ];
        for (kind, value) in caps {
            let Some(line) = self.caps.observe(unix_ms, kind, value) else {
                continue;
            };
            let (n, s) = (line.count, line.seconds);
            let msg = match kind {
                "rate_limited" => format!(
                    "{n} answers to unauthenticated UDP requests held back by anti-amplification (unauth_amplification_factor, unauth_source_bytes_per_s, unauth_node_bytes_per_s) in the last {s} s"
                ),
                "bandwidth_dropped" => format!(
                    "{n} relayed packets dropped by the bandwidth cap (max_bps or total_max_bps) in the last {s} s"
                ),
                "queue_full" => {
                    format!("{n} outputs dropped on a full output queue in the last {s} s")
                }
                "streams_over_source_cap" => format!(
                    "{n} streams refused over the per-source cap (max_streams_per_source) in the last {s} s"
                ),
                _ => format!(
                    "{n} requests refused with 508 by a capacity cap (permissions, channels, allocations) in the last {s} s"
                ),
            };
            log::warn!("{msg}");
            self.reporter.record(
                unix_ms,
                "cap_reached",
                json!({"cap": kind, "count": n, "seconds": s}),
            );
        }
    }

    /// Stops accepting, records what is still open, flushes.
    fn shutdown(&mut self, sig: i32) {
        self.end_batch();
        let name = match sig {
            SIGTERM => "SIGTERM",
            SIGINT => "SIGINT",
            // Told to by another thread: another loop ended.
            _ => "stop",
        };
        for l in &mut self.listeners {
            l.socket = ListenerSocket::Closed;
        }
        let now = self.clock.now();
        let unix_ms = Clock::unix_ms();
        let open = self.server.allocations(now);
        let which = if self.place.count > 1 {
            format!(" (loop {})", self.place.index)
        } else {
            String::new()
        };
        log::info!(
            "{name}{which}: stopping with {} allocations and {} connections open; {} slow readers were closed",
            open.len(),
            self.conns.len(),
            self.stats.slow_readers_closed
        );
        for a in &open {
            let t = a.traffic;
            let body = json!({
                "id": a.id.0,
                "client": a.client.addr.to_string(),
                "transport": a.client.transport.as_str(),
                "username": a.username,
                "relayed": a.relayed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "reason": "shutdown",
                "age_ms": a.age_ms,
                "to_peer_packets": t.to_peer_packets,
                "to_peer_bytes": t.to_peer_bytes,
                "from_peer_packets": t.from_peer_packets,
                "from_peer_bytes": t.from_peer_bytes,
                "dropped_packets": t.dropped_packets,
            });
            self.reporter.record(unix_ms, "allocation_deleted", body);
        }
        // One last try to deliver what waits, without waiting.
        for conn in self.conns.values_mut() {
            let _ = conn.out.flush(&mut conn.stream);
        }
        self.reporter.record(
            unix_ms,
            "stop",
            json!({"signal": name, "loop": self.place.index, "allocations": open.len(), "connections": self.conns.len()}),
        );
        self.reporter.flush();
        if let Some(t) = &mut self.trace {
            t.finish();
        }
    }
}

// ---- HTTP API glue ------------------------------------------------------------------

impl Runtime {
    /// Runs `f` with the API taken out of `self`, so that it can use the runtime as its
    /// host.
    fn with_api(&mut self, f: impl FnOnce(&mut Api, &mut Runtime) -> io::Result<()>) {
        if let Some(mut api) = self.api.take() {
            if let Err(e) = f(&mut api, self) {
                log::warn!("HTTP API: {e}");
            }
            self.api = Some(api);
        }
    }
}

impl crate::api::Host for Runtime {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn unix_ms(&self) -> u64 {
        Clock::unix_ms()
    }

    fn server(&mut self) -> &mut Server {
        &mut self.server
    }

    fn reserve_listener(&mut self, id: ListenerId, username: &str) {
        if let Some(t) = &mut self.trace {
            t.listener_reserved(id, username);
        }
        self.server.credentials_mut().reserve_listener(id, username);
    }

    fn delete_allocation(&mut self, id: turnpike_core::AllocationId) -> bool {
        let owner = workers::loop_of(id);
        if owner != self.place.index {
            // Another loop's allocation: ask it (only loop 0 has peers).
            return self
                .peers
                .iter()
                .find(|p| p.index == owner)
                .and_then(|p| p.ask(|reply| Command::Delete(id, reply)))
                .unwrap_or(false);
        }
        let now = self.clock.now();
        if let Some(t) = &mut self.trace {
            t.delete_allocation(now, id);
        }
        self.server.delete_allocation(now, id)
    }

    fn open_udp(&mut self, addr: SocketAddr) -> io::Result<ListenerId> {
        let slot = self
            .listeners
            .iter()
            .position(|l| matches!(l.socket, ListenerSocket::Closed))
            .unwrap_or(self.listeners.len());
        let id = ListenerId(u32::try_from(slot).map_err(|_| io::ErrorKind::OutOfMemory)?);
        let mut sock = sockets::udp_listener(addr, self.buffers)?;
        self.poll.registry().register(
            &mut sock,
            Source::Listener(id.0).token(),
            Interest::READABLE,
        )?;
        let local = sock.local_addr()?;
        let config = ListenerConfig {
            id,
            transport: Transport::Udp,
            local,
            proxy_protocol: false,
        };
        let recorded = config.clone();
        if let Err(e) = self.server.add_listener(config) {
            let _ = self.poll.registry().deregister(&mut sock);
            return Err(io::Error::other(e.0));
        }
        if let Some(t) = &mut self.trace {
            t.listener_added(self.clock.now(), &recorded);
        }
        let listener = Listener {
            spec: ListenerSpec {
                id,
                transport: Transport::Udp,
                addr: local,
                proxy_protocol: false,
            },
            socket: ListenerSocket::Udp(sock),
        };
        match self.listeners.get_mut(slot) {
            Some(l) => *l = listener,
            None => self.listeners.push(listener),
        }
        Ok(id)
    }

    fn close_udp(&mut self, id: ListenerId) {
        let now = self.clock.now();
        if let Some(t) = &mut self.trace {
            t.listener_removed(now, id);
        }
        self.server.remove_listener(now, id);
        if let Some(l) = self.listeners.get_mut(id.0 as usize) {
            if let ListenerSocket::Udp(mut s) =
                std::mem::replace(&mut l.socket, ListenerSocket::Closed)
            {
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
        self.drain(now);
    }

    fn runtime_metrics(&self) -> crate::api::metrics::RuntimeMetrics {
        let s = self.stats;
        crate::api::metrics::RuntimeMetrics {
            loop_lag_s: s.loop_lag_us as f64 / 1e6,
            loop_lag_max_s: s.loop_lag_max_us as f64 / 1e6,
            slow_readers_closed: s.slow_readers_closed,
            send_would_block: s.send_would_block,
            send_errors: s.send_errors,
            recv_truncated: s.recv_truncated,
            relay_bind_failures: s.relay_bind_failures,
            ..Default::default()
        }
    }

    fn flush(&mut self) {
        let now = self.clock.now();
        self.drain(now);
    }

    fn loop_stats(&mut self) -> Vec<crate::api::metrics::LoopStats> {
        let mut all = vec![self.own_stats()];
        for p in &self.peers {
            if let Some(s) = p.ask(Command::Stats) {
                all.push(s);
            }
        }
        all
    }

    fn all_allocations(&mut self) -> Vec<turnpike_core::server::AllocationInfo> {
        let now = self.clock.now();
        let mut all = self.server.allocations(now);
        for p in &self.peers {
            if let Some(list) = p.ask(Command::Allocations) {
                all.extend(list);
            }
        }
        all
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

/// A UDP socket the loop reads datagrams from.
#[derive(Clone, Copy, Debug)]
enum UdpSource {
    /// A listener, by its index in `Runtime::listeners`.
    Listener(usize),
    /// A relay socket.
    Relay(RelayId),
}

/// How queued datagrams go out: `TURNPIKE_UDP_SEND` = `single`, `mmsg`, `gso` or
/// `mmsg+gso` (the default), for measuring one against another.
fn send_mode() -> SendMode {
    match std::env::var("TURNPIKE_UDP_SEND") {
        Ok(v) => SendMode::parse(&v).unwrap_or_else(|| {
            log::warn!(
                "TURNPIKE_UDP_SEND={v} is not single, mmsg, gso or mmsg+gso: using mmsg+gso"
            );
            SendMode::default()
        }),
        Err(_) => SendMode::default(),
    }
}

/// The received bytes of a datagram of `len` bytes in the packet buffer.
fn area_of(len: usize) -> core::ops::Range<usize> {
    HEADROOM..HEADROOM + len
}

/// Sends what `tx` holds from the sockets named now (see [`Runtime::flush_sends`]).
fn flush_queue(
    tx: &mut SendQueue,
    rx: &RecvBatch,
    listeners: &[Listener],
    relays: &IdMap<RelayId, UdpSocket>,
    stats: &mut RuntimeStats,
    last_error: &mut Option<io::ErrorKind>,
) {
    if tx.is_empty() {
        return;
    }
    let mut tally = Tally {
        would_block: &mut stats.send_would_block,
        errors: &mut stats.send_errors,
        last_error,
    };
    tx.flush(
        rx.bytes(),
        &mut |via| match via {
            Via::Listener(n) => match listeners.get(n as usize) {
                Some(Listener {
                    socket: ListenerSocket::Udp(sock),
                    ..
                }) => Some(sock),
                _ => None,
            },
            Via::Relay(r) => relays.get(&r),
        },
        &mut tally,
    );
}

/// Writes `data` to stream `conn`; on failure, returns what went wrong (the caller closes
/// the stream).
fn write_conn(conns: &mut IdMap<ConnId, Conn>, conn: ConnId, data: &[u8]) -> Option<WriteError> {
    let c = conns.get_mut(&conn)?;
    c.out.write(&mut c.stream, data).err()
}

/// Sends one datagram; a full socket buffer or an error drops it, counted.
fn send_datagram(
    sock: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    stats: &mut RuntimeStats,
    last: &mut Option<io::ErrorKind>,
) {
    match sock.send_to(data, to) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => stats.send_would_block += 1,
        Err(e) => {
            stats.send_errors += 1;
            *last = Some(e.kind());
        }
    }
}

/// Warns when the kernel gave a listener smaller buffers than asked (net.core.rmem_max).
fn check_buffers(socket: &ListenerSocket, spec: &ListenerSpec, want: SocketBuffers) {
    let got = match socket {
        ListenerSocket::Udp(s) => sockets::buffer_sizes(s),
        ListenerSocket::Tcp(s) => sockets::buffer_sizes(s),
        ListenerSocket::Closed => return,
    };
    // Linux reports twice the size granted.
    if let Ok((r, w)) = got {
        if r / 2 < want.receive || w / 2 < want.send {
            log::warn!(
                "{} {}: the kernel granted buffers of {} / {} bytes instead of {} / {}; raise net.core.rmem_max and net.core.wmem_max",
                spec.transport.as_str(),
                spec.addr,
                r / 2,
                w / 2,
                want.receive,
                want.send
            );
        }
    }
}

/// Lower-case hex of `bytes` (the seed in logs).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a seed.
pub fn parse_seed(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_round_trip_through_hex() {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let h = hex(&seed);
        assert_eq!(h.len(), 64);
        assert_eq!(parse_seed(&h), Some(seed));
        assert_eq!(parse_seed("00"), None);
        assert_eq!(parse_seed(&"zz".repeat(32)), None);
        assert_eq!(parse_seed(&"é".repeat(32)), None);
    }
}
