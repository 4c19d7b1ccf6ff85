//! Opening a loop: its listeners, signal pipe, event log, trace and core (which accepts
//! the HTTP API's issuance secret).

use super::dynamic_ports::DynamicPorts;
use super::read_again::ReadAgain;
use super::{Listener, ListenerSocket, Runtime, RuntimeStats, STREAM_READ};
use crate::api::thread::ApiShare;
use crate::clock::Clock;
use crate::event_log::EventLog;
use crate::id_hash::IdMap;
use crate::log_limit::CapWatch;
use crate::plan::Place;
use crate::report::Reporter;
use crate::seed::hex;
use crate::settings::{ListenerSpec, Settings};
use crate::sockets;
use crate::sockets::SocketBuffers;
use crate::start_error::StartError;
use crate::tls::TlsMode;
use crate::token::Source;
use crate::trace_recorder::TraceRecorder;
use crate::udp_batch::{RecvBatch, SendMode, SendQueue, RECV_SLOTS};
use mio::{Interest, Poll};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use turnpike_core::{Server, Transport};

impl Runtime {
    /// Opens the listeners, the event log and the signal pipe, and creates the core with
    /// `seed` (all of its randomness), for loop `place` of the relay's loops
    /// ([`crate::workers`]): listeners shared with `SO_REUSEPORT` when there are several
    /// loops, allocation ids in the loop's own range, the start record on loop 0 only.
    /// With the HTTP API served (on its own thread), `api` is what the loop takes from it:
    /// the issuance secret, accepted as a REST secret, and the webhook.
    pub fn new_loop(
        settings: Settings,
        seed: [u8; 32],
        place: Place,
        api: Option<&ApiShare>,
    ) -> Result<Self, StartError> {
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
        // The counter first: a delivery is counted before the pipe wakes the loop.
        let terms = crate::term_count::TermCount::new()
            .map_err(|e| StartError::Io("cannot catch signals".into(), e))?;
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
        let proxy_max = settings.core.proxy_header_max_len;
        let tls = settings.tls.clone();
        let mut server =
            Server::new(settings.core, seed, now).map_err(|e| StartError::Config(e.0))?;
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
        if let Some(api) = api {
            if let Some(t) = &mut trace {
                t.rest_secret_added(&api.secret);
            }
            server.credentials_mut().add_rest_secret(&api.secret);
            if place.index == 0 {
                let addr = api.listen.to_string();
                log::info!("HTTP API on http://{addr}");
                reporter.record(Clock::unix_ms(), "api", json!({"listen": addr}));
            }
        }
        if place.index == 0 {
            for spec in &settings.listeners {
                match spec.tls {
                    TlsMode::Off => {}
                    TlsMode::On => log::info!("TLS (turns:) on tcp {}", spec.addr),
                    TlsMode::Auto => log::info!(
                        "TLS (turns:) and plain TURN-TCP on one port: tcp {}",
                        spec.addr
                    ),
                }
            }
            for w in settings.ice.start_warnings() {
                log::warn!("{w}");
            }
        }
        let (rx, tx) = udp_io(settings.io_uring);
        Ok(Runtime {
            poll,
            server,
            clock,
            listeners,
            relays: IdMap::default(),
            conns: IdMap::default(),
            next_conn: 0,
            rx,
            tx,
            ready_udp: super::udp_round::ReadyUdp::with_capacity(super::EVENTS),
            dirty: Vec::with_capacity(RECV_SLOTS),
            streams: super::stream_batch::StreamBatch::new(settings.io_uring),
            stream_buf: vec![0; STREAM_READ],
            plain_buf: if tls.is_some() {
                vec![0; STREAM_READ]
            } else {
                Vec::new()
            },
            tls,
            proxy_max,
            reporter,
            buffers: settings.buffers,
            stats: RuntimeStats::default(),
            signals,
            terms,
            again: ReadAgain::default(),
            stop: None,
            accept_blocked: false,
            last_send_error: None,
            reported_send_errors: 0,
            caps: CapWatch::new(crate::log_limit::DEFAULT_INTERVAL_MS),
            webhook: api.and_then(|a| a.webhook.clone()),
            dynamic: DynamicPorts::default(),
            trace,
            place,
            inbox: None,
            loops: Vec::new(),
            loop_gone_logged: false,
            coalesce: settings.coalesce.map(super::coalesce::Coalesce::new),
            round_inputs: 0,
            node_drain: std::sync::Arc::new(crate::drain::Drain::new(1, settings.drain_timeout)),
            sigterms: 0,
            #[cfg(target_os = "linux")]
            packing: None,
            next_tick: None,
            hosted: super::hosting::HostedLoops::default(),
        })
    }
}

/// The receive slots and the send queue, each on io_uring when `mode` asks for it and the
/// kernel allows it. Which paths run is logged once per process (again by a loop that
/// ends up on other paths than the first, which should not happen).
fn udp_io(mode: crate::config::IoUringMode) -> (RecvBatch, SendQueue) {
    use crate::config::IoUringMode;
    let mut rx = RecvBatch::new();
    let mut tx = SendQueue::new(send_mode());
    // A send mode asked for by name is being measured: it runs as named.
    let mode = if std::env::var_os("TURNPIKE_UDP_SEND").is_some() {
        IoUringMode::Off
    } else {
        mode
    };
    // Receives alone the portable way, to measure one path against the other.
    let recv_mmsg = std::env::var("TURNPIKE_UDP_RECV").is_ok_and(|v| v == "mmsg");
    let (mut recv_err, mut send_err) = (None, None);
    #[cfg(target_os = "linux")]
    if mode != IoUringMode::Off {
        if !recv_mmsg {
            recv_err = rx.use_uring().err();
        }
        send_err = tx.use_uring().err();
    }
    let why = |e: &Option<std::io::Error>| match e {
        Some(e) => format!("io_uring unavailable: {e}"),
        None if mode == IoUringMode::Off => {
            "io_uring = \"off\", or TURNPIKE_UDP_SEND set".to_string()
        }
        None => "TURNPIKE_UDP_RECV=mmsg".to_string(),
    };
    let recv = if rx.uring() {
        "one io_uring submission per poll round for every ready socket".to_string()
    } else {
        format!("recvmmsg per socket ({})", why(&recv_err))
    };
    let send = if tx.uring() {
        "one io_uring submission per poll round".to_string()
    } else {
        format!("sendmmsg per socket ({})", why(&send_err))
    };
    let line = format!("UDP receives: {recv}; sends: {send}");
    static FIRST: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
    let paths = (rx.uring(), tx.uring());
    let first = *FIRST.get_or_init(|| {
        log::info!("{line}");
        paths
    });
    let unavailable = recv_err.is_some() || send_err.is_some();
    if first != paths {
        log::warn!("this loop differs from the first: {line}");
    }
    if mode == IoUringMode::On && unavailable {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| log::warn!("io_uring = \"on\" but unavailable: {line}"));
    }
    (rx, tx)
}

/// How queued datagrams go out: `TURNPIKE_UDP_SEND` = `single`, `mmsg`, `gso` or
/// `mmsg+gso` (the default), for measuring one against another.
pub(super) fn send_mode() -> SendMode {
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

/// Warns when the kernel gave a listener smaller buffers than asked (net.core.rmem_max).
pub(super) fn check_buffers(socket: &ListenerSocket, spec: &ListenerSpec, want: SocketBuffers) {
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
