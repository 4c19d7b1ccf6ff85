//! Several event loops, one per core, sharing nothing on the packet path.
//!
//! Each loop is a [`Runtime`] on its own thread: its own `mio::Poll`, its own core
//! `Server` (seeded from the main seed and its index, so runs stay reproducible), its own
//! listeners on the same addresses (`SO_REUSEPORT`, socket(7): the kernel picks a loop per
//! UDP source address and port, and per TCP connection), and a contiguous slice of the
//! relay port range, so a relayed address belongs to exactly one loop and a peer's packets
//! reach it without a lock.
//!
//! What must agree across loops is stateless and fixed at start: REST and issued
//! credentials are an HMAC of secrets every loop is given before it starts (the HTTP
//! API's issuance secret included; a reload hands new ones to every loop), and every loop is given
//! the same node secret (`node_secret`, or one drawn from the OS here at start), from which
//! its core derives the nonce key ([`turnpike_core::secret`]), so a nonce from one loop is
//! good on another. The seed only makes runs reproducible: no secret comes from it.
//!
//! The HTTP API runs on a thread of its own ([`crate::api::thread`]) and reaches the loops
//! only through their inboxes ([`crate::link`]): for `/metrics`, `/v1/allocations` and
//! `DELETE` it asks the loops and waits for their answers (at most
//! [`crate::api::loops::ASK_TIMEOUT`]); a loop answers when its waker fires and never
//! waits on anyone, so relaying is never held up by the API. Dynamic UDP ports are bound
//! by the API and served by loop 0. Allocation ids carry their loop's index in the bits
//! from [`turnpike_core::node::ID_SHIFT`] up, which routes a `DELETE`.
//!
//! SIGHUP reloads the configuration file on a thread of its own ([`crate::reloader`]),
//! which hands the result to every loop's inbox and the API's: secrets change at run time
//! that way, the same for every loop.
//!
//! Limits of the node: `relay_port_min..=max` and `total_quota` are given whole to every
//! core with its place in the node; each starts with its share and borrows from the others
//! before it answers 508, and `user_quota` is counted at each user's home loop — all of it
//! by messages between cores ([`turnpike_core::node`]), which the loops carry to each
//! other's inboxes. `total_max_bps` and `max_streams` are divided among the loops here
//! ([`crate::plan::share`]).

use crate::api::thread::ApiThread;
use crate::drain::Drain;
use crate::event_loop::Runtime;
use crate::link::{Command, LoopHandle};
use crate::plan::{loop_settings, plan, Place};
use crate::reload::ConfigFile;
use crate::reloader::Reloader;
use crate::seed::loop_seed;
use crate::settings::Settings;
use crate::sockets;
use crate::start_error::StartError;
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use turnpike_core::node::port_slice;
use turnpike_core::Transport;

/// 32 bytes from the OS: the node secret when none is configured.
fn random_node_secret() -> turnpike_core::secret::NodeSecret {
    use rand_core::{OsRng, RngCore};
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    turnpike_core::secret::NodeSecret(b)
}

/// The loops of the relay and its HTTP API, started but not yet running.
pub struct Workers {
    loops: Vec<Runtime>,
    handles: Vec<LoopHandle>,
    api: Option<ApiThread>,
    drain: Arc<Drain>,
    reloader: Reloader,
}

impl Workers {
    /// Decides how many loops run (logging why fewer than asked), binds the HTTP API (the
    /// loops take its issuance secret), opens every loop's sockets (loop 0 first: the
    /// others bind the addresses it got) and its core.
    pub fn start(mut settings: Settings, seed: [u8; 32]) -> Result<Workers, StartError> {
        // First: a SIGHUP's default action ends the process.
        let mut reloader =
            Reloader::new().map_err(|e| StartError::Io("cannot catch SIGHUP".into(), e))?;
        claim_listen_addresses(&mut settings)?;
        if settings.core.node_secret.is_none() {
            settings.core.node_secret = Some(random_node_secret());
            log::info!(
                "no `node_secret` configured: drew one at random; nonces die with the process (clients re-authenticate after a restart) and other relays do not accept this one's"
            );
            if settings.trace.is_some() {
                log::warn!(
                    "recording a trace with a node secret drawn at random: it cannot be replayed (set `node_secret` to replay it)"
                );
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let plan = plan(
            settings.workers,
            cores,
            settings.core.relay_port_min,
            settings.core.relay_port_max,
            settings.trace.is_some(),
        );
        // Fewer loops than asked is a capacity surprise for whoever sized the machine.
        for w in &plan.warnings {
            log::warn!("{w}");
        }
        for n in &plan.notes {
            log::info!("{n}");
        }
        let api = start_api(&settings)?;
        let share = match &api {
            Some(a) => Some(
                a.share()
                    .map_err(|e| StartError::Io("HTTP API listener".into(), e))?,
            ),
            None => None,
        };
        if let Some(s) = &share {
            reloader.set_api_secret(s.secret.clone());
        }
        let count = plan.count;
        let first_place = Place { index: 0, count };
        let first = Runtime::new_loop(
            loop_settings(&settings, first_place, &[]),
            seed,
            first_place,
            share.as_ref(),
        )?;
        let addrs = first.listener_addrs();
        let mut loops = vec![first];
        for index in 1..count {
            let place = Place { index, count };
            let s = loop_settings(&settings, place, &addrs);
            loops.push(Runtime::new_loop(
                s,
                loop_seed(seed, index),
                place,
                share.as_ref(),
            )?);
        }
        let mut handles = Vec::new();
        for rt in &mut loops {
            handles.push(
                rt.handle()
                    .map_err(|e| StartError::Io("cannot create a loop's waker".into(), e))?,
            );
        }
        // Any loop's core may address any other (cross-loop messages); they drain as one.
        let drain = Arc::new(Drain::new(count, settings.drain_timeout));
        for rt in &mut loops {
            rt.set_loops(handles.clone());
            rt.set_drain(drain.clone());
        }
        #[cfg(target_os = "linux")]
        if settings.pack_loops {
            if let Some(p) = crate::packing::Packing::new(count) {
                let hosting = crate::event_loop::hosting::Hosting::new(p.placement(), count);
                for (index, rt) in loops.iter_mut().enumerate() {
                    rt.set_packing(crate::packing::LoopPacking::new(p.clone(), index));
                    rt.set_hosting(hosting.clone());
                }
            }
        }
        if count > 1 {
            let (min, max) = (settings.core.relay_port_min, settings.core.relay_port_max);
            let slices: Vec<String> = (0..count)
                .map(|i| {
                    let node = Place { index: i, count }.node();
                    match port_slice(min, max, node.count, node.index) {
                        Some((lo, hi)) => format!("{lo}-{hi}"),
                        None => "none".to_string(),
                    }
                })
                .collect();
            log::info!(
                "{count} event loops; relay ports at start {} (a loop that runs out borrows from the others)",
                slices.join(", ")
            );
        }
        Ok(Workers {
            loops,
            handles,
            api,
            drain,
            reloader,
        })
    }

    /// Reloads `file` on SIGHUP (the relay started from it).
    pub fn watch_config(&mut self, file: ConfigFile) {
        self.reloader.watch(file);
    }

    /// How many loops run.
    pub fn count(&self) -> usize {
        self.loops.len()
    }

    /// The listeners' bound addresses (the same on every loop).
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.loops
            .first()
            .map(Runtime::local_addrs)
            .unwrap_or_default()
    }

    /// Where the HTTP API listens, if it is served.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// Runs the HTTP API on a thread of its own and every loop on its own thread (a
    /// single loop on this one) until SIGTERM or SIGINT, which every loop catches. When
    /// one loop ends for any other reason, the others are told to stop; the API stops
    /// once every loop has. Errors if a loop's polling failed or a loop panicked.
    pub fn run(self) -> io::Result<()> {
        let Workers {
            loops,
            handles,
            api,
            drain,
            reloader,
        } = self;
        let updates = api.as_ref().map(ApiThread::updates);
        let reload_stop = reloader.stopper();
        let to_loops = handles.clone();
        let reload_thread = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || reloader.run(to_loops, updates))?;
        let api = match api {
            Some(a) => {
                let stop = a.stopper();
                let to_loops = handles.clone();
                let thread = std::thread::Builder::new()
                    .name("http-api".into())
                    .spawn(move || a.run(to_loops, drain))?;
                Some((stop, thread))
            }
            None => None,
        };
        let result = run_loops(loops, &handles);
        reload_stop.stop();
        if reload_thread.join().is_err() {
            log::error!("reload thread panicked");
        }
        if let Some((stop, thread)) = api {
            stop.stop();
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!("HTTP API failed: {e}"),
                Err(_) => log::error!("HTTP API thread panicked"),
            }
        }
        result
    }
}

/// One node per address: refuses to start when another process holds a listener's
/// address (a second relay would otherwise join this one's SO_REUSEPORT group and the
/// kernel would split the clients between them), and fixes the port of listeners asked
/// for on port 0 to one that is free, which every loop then shares.
fn claim_listen_addresses(settings: &mut Settings) -> Result<(), StartError> {
    for spec in settings.listeners.iter_mut() {
        let what = format!("cannot listen on {} {}", spec.transport.as_str(), spec.addr);
        let got = match sockets::probe_free(spec.addr, spec.transport) {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(StartError::Io(
                    format!("{what}: another process holds it (is another turnpike running?)"),
                    e,
                ))
            }
            Err(e) => return Err(StartError::Io(what, e)),
        };
        if spec.addr.port() == 0 {
            spec.addr = got;
            for l in settings
                .core
                .listeners
                .iter_mut()
                .filter(|l| l.id == spec.id)
            {
                l.local = got;
            }
        }
    }
    Ok(())
}

/// Binds the HTTP API when configured; an optional one (the built-in default) that cannot
/// listen is left out with a warning.
fn start_api(settings: &Settings) -> Result<Option<ApiThread>, StartError> {
    let Some(a) = settings.api.clone() else {
        return Ok(None);
    };
    let (listen, optional, open) = (a.listen, a.optional, a.token.is_none());
    match ApiThread::start(a, settings.ice.clone(), settings.buffers) {
        Ok(api) => {
            if open {
                let at = api.local_addr().unwrap_or(listen);
                log::warn!(
                    "the HTTP API on {at} has no api_token: whoever can connect to it can \
                     mint credentials and end allocations (set `api_token_file`)"
                );
            }
            Ok(Some(api))
        }
        Err(e) if optional => {
            log::warn!("no HTTP API: cannot listen on {listen}: {e}");
            Ok(None)
        }
        Err(e) => Err(StartError::Io(
            format!("cannot serve the HTTP API on {listen}"),
            e,
        )),
    }
}

/// Runs every loop on its own thread (a single loop on this one) until they end.
fn run_loops(mut loops: Vec<Runtime>, handles: &[LoopHandle]) -> io::Result<()> {
    if loops.len() == 1 {
        return match loops.pop() {
            Some(mut rt) => rt.run(),
            None => Ok(()),
        };
    }
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let mut threads = Vec::new();
    for (index, rt) in loops.into_iter().enumerate() {
        let done = done_tx.clone();
        let hosts = handles.to_vec();
        let spawned = std::thread::Builder::new()
            .name(format!("loop-{index}"))
            .spawn(move || {
                let wake = |h: usize| hosts.get(h).is_some_and(|l| l.send(Command::Hosting));
                let r = crate::event_loop::hosting::run_hosted_loop(Box::new(rt), wake);
                let _ = done.send(index);
                r
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                for h in handles {
                    h.send(Command::Stop);
                }
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
    }
    drop(done_tx);
    if let Ok(first_done) = done_rx.recv() {
        for h in handles.iter().filter(|h| h.index != first_done) {
            h.send(Command::Stop);
        }
    }
    let mut result = Ok(());
    for (index, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::error!("event loop {index} failed: {e}");
                result = Err(e);
            }
            Err(_) => {
                log::error!("event loop {index} panicked");
                result = Err(io::Error::other(format!("event loop {index} panicked")));
            }
        }
    }
    result
}
