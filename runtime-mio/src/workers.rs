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
//! API's issuance secret included: it never changes at run time), and every loop signs
//! nonces with the key of the main seed ([`Server::nonce_key_of_seed`]), so a nonce from
//! one loop is good on another.
//!
//! The HTTP API and the dynamic UDP ports live on loop 0. For `/metrics`,
//! `/v1/allocations` and `DELETE`, loop 0 asks the other loops over a command channel
//! with a [`mio::Waker`] and waits for the answer, at most [`ASK_TIMEOUT`]. Only loop 0
//! ever waits, and never on itself, so this cannot deadlock; a loop that does not answer
//! in time is left out of the answer. Allocation ids carry their loop's index in the
//! bits from [`ID_SHIFT`] up, which routes a `DELETE`.
//!
//! Limits are split: `total_quota`, `total_max_bps` and `max_streams` are divided among
//! the loops ([`share`]); `user_quota` holds per loop.

use crate::api::metrics::LoopStats;
use crate::event_loop::{Runtime, StartError};
use crate::settings::Settings;
use core::time::Duration;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use turnpike_core::server::AllocationInfo;
use turnpike_core::{AllocationId, Server, Transport};

/// Fewest relay ports a loop is given; with fewer, fewer loops run.
pub const MIN_PORTS_PER_LOOP: u32 = 64;
/// Allocation ids of loop `i` start at `i << ID_SHIFT` (2^44 ids per loop; ids of up to
/// 256 loops stay below 2^53, exact in JavaScript numbers).
pub const ID_SHIFT: u32 = 44;
/// How long loop 0 waits for another loop's answer to an API request.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a loop stands among the loops of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Its index, from 0.
    pub index: usize,
    /// How many loops run.
    pub count: usize,
}

impl Place {
    /// The only loop.
    pub const SOLE: Place = Place { index: 0, count: 1 };
}

/// How many loops to run, and why fewer than asked when so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Loops to run (at least 1).
    pub count: usize,
    /// Why the count is not what was asked (for the log).
    pub notes: Vec<String>,
}

/// Decides the number of loops: `requested` (0: `cores`), at most
/// [`crate::config::MAX_WORKERS`], at most one per [`MIN_PORTS_PER_LOOP`] relay ports, and
/// one while recording a trace (a trace records one core).
pub fn plan(requested: u32, cores: usize, port_min: u16, port_max: u16, tracing: bool) -> Plan {
    let mut notes = Vec::new();
    let want = if requested == 0 {
        cores.max(1)
    } else {
        requested as usize
    };
    let mut count = want.min(crate::config::MAX_WORKERS as usize);
    if tracing && count > 1 {
        notes.push(format!(
            "recording a trace: running one event loop instead of {count} (a trace records one core)"
        ));
        count = 1;
    }
    let ports = u32::from(port_max).saturating_sub(u32::from(port_min)) + 1;
    let by_ports = (ports / MIN_PORTS_PER_LOOP).max(1) as usize;
    if count > by_ports {
        notes.push(format!(
            "relay ports {port_min}-{port_max} ({ports}) leave fewer than {MIN_PORTS_PER_LOOP} per loop for {count} loops: running {by_ports}"
        ));
        count = by_ports;
    }
    Plan { count, notes }
}

/// The slice of the relay ports `min..=max` that loop `index` of `count` owns:
/// contiguous, disjoint, together the whole range, sizes differing by at most one.
pub fn port_slice(min: u16, max: u16, count: usize, index: usize) -> (u16, u16) {
    let count = count.max(1) as u32;
    let index = (index as u32).min(count - 1);
    let total = u32::from(max).saturating_sub(u32::from(min)) + 1;
    let (base, extra) = (total / count, total % count);
    let start = u32::from(min) + index * base + index.min(extra);
    let len = base + u32::from(index < extra);
    let last = (start + len.max(1) - 1).min(u32::from(max));
    (
        u16::try_from(start).unwrap_or(max),
        u16::try_from(last).unwrap_or(max),
    )
}

/// Loop `index`'s share of a total limit of `count` loops: shares differ by at most one
/// and add up to `total`; 0 (no cap) stays 0, and no loop gets 0 of a non-zero limit.
pub fn share(total: u64, count: usize, index: usize) -> u64 {
    if total == 0 {
        return 0;
    }
    let count = count.max(1) as u64;
    let part = total / count + u64::from((index as u64) < total % count);
    part.max(1)
}

/// The seed of loop `index`: the main seed for loop 0 (a single loop runs exactly as
/// before), for the others a ChaCha20 stream of the main seed, one per index.
pub fn loop_seed(seed: [u8; 32], index: usize) -> [u8; 32] {
    if index == 0 {
        return seed;
    }
    let mut r = ChaCha20Rng::from_seed(seed);
    r.set_stream(0x6c6f_6f70_0000_0000 | index as u64);
    let mut out = [0u8; 32];
    r.fill_bytes(&mut out);
    out
}

/// The first allocation id of loop `index` is this plus 1.
pub fn allocation_id_base(index: usize) -> u64 {
    (index as u64) << ID_SHIFT
}

/// The loop that created allocation `id`.
pub fn loop_of(id: AllocationId) -> usize {
    usize::try_from(id.0 >> ID_SHIFT).unwrap_or(usize::MAX)
}

/// The settings of loop `place`: its port slice, its share of the total limits, the
/// nonce key of `main_seed` (loops after the first), no API, trace or event-log
/// start record of its own beyond loop 0. `addrs` are the listener addresses loop 0
/// bound (ports 0 resolved), for the loops after it.
pub fn loop_settings(
    base: &Settings,
    place: Place,
    main_seed: [u8; 32],
    addrs: &[SocketAddr],
) -> Settings {
    let mut s = base.clone();
    if place.count <= 1 {
        return s;
    }
    let (lo, hi) = port_slice(
        base.core.relay_port_min,
        base.core.relay_port_max,
        place.count,
        place.index,
    );
    s.core.relay_port_min = lo;
    s.core.relay_port_max = hi;
    let split = |total: u64| share(total, place.count, place.index);
    s.core.total_quota = u32::try_from(split(u64::from(base.core.total_quota))).unwrap_or(1);
    s.core.total_max_bps = split(base.core.total_max_bps);
    if s.core.node.count <= 1 {
        // A core that knows its node splits these itself.
        s.core.unauth_source_bytes_per_s = split(base.core.unauth_source_bytes_per_s);
        s.core.unauth_node_bytes_per_s = split(base.core.unauth_node_bytes_per_s);
    }
    s.core.max_streams = u32::try_from(split(u64::from(base.core.max_streams))).unwrap_or(1);
    if place.index > 0 {
        if s.core.nonce_key.is_none() {
            // Loop 0 derives this very key from the main seed itself.
            s.core.nonce_key = Some(Server::nonce_key_of_seed(main_seed));
        }
        s.api = None;
        s.trace = None;
        for (spec, addr) in s.listeners.iter_mut().zip(addrs) {
            spec.addr = *addr;
        }
        for (l, addr) in s.core.listeners.iter_mut().zip(addrs) {
            l.local = *addr;
        }
    }
    s
}

/// A request to a loop, served when its waker fires.
pub enum Command {
    /// Its core's counters and the runtime's.
    Stats(SyncSender<LoopStats>),
    /// Its allocations.
    Allocations(SyncSender<Vec<AllocationInfo>>),
    /// End one of its allocations (true if it had it).
    Delete(AllocationId, SyncSender<bool>),
    /// Stop, as on SIGTERM (another loop stopped).
    Stop,
}

/// How to reach a loop from another thread.
#[derive(Clone)]
pub struct LoopHandle {
    /// The loop's index.
    pub index: usize,
    tx: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl LoopHandle {
    /// A handle sending on `tx` and waking the loop with `waker`.
    pub fn new(index: usize, tx: mpsc::Sender<Command>, waker: Arc<mio::Waker>) -> Self {
        LoopHandle { index, tx, waker }
    }

    /// Queues `cmd` and wakes the loop. False if the loop is gone.
    pub fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok() && self.waker.wake().is_ok()
    }

    /// Sends the command `make` builds around a reply channel and waits for the answer,
    /// at most [`ASK_TIMEOUT`]. None if the loop is gone or too slow.
    pub fn ask<T>(&self, make: impl FnOnce(SyncSender<T>) -> Command) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !self.send(make(tx)) {
            return None;
        }
        match rx.recv_timeout(ASK_TIMEOUT) {
            Ok(v) => Some(v),
            Err(_) => {
                log::warn!(
                    "event loop {} did not answer within {ASK_TIMEOUT:?}",
                    self.index
                );
                None
            }
        }
    }
}

/// The loops of the relay, started but not yet running.
pub struct Workers {
    loops: Vec<Runtime>,
    handles: Vec<LoopHandle>,
}

impl Workers {
    /// Decides how many loops run (logging why fewer than asked), opens every loop's
    /// sockets (loop 0 first: the others bind the addresses it got) and its core.
    pub fn start(settings: Settings, seed: [u8; 32]) -> Result<Workers, StartError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let plan = plan(
            settings.workers,
            cores,
            settings.core.relay_port_min,
            settings.core.relay_port_max,
            settings.trace.is_some(),
        );
        for n in &plan.notes {
            log::info!("{n}");
        }
        let count = plan.count;
        let first_place = Place { index: 0, count };
        let first = Runtime::new_loop(
            loop_settings(&settings, first_place, seed, &[]),
            seed,
            first_place,
        )?;
        let addrs = first.listener_addrs();
        let secret = first.api_secret();
        let mut loops = vec![first];
        for index in 1..count {
            let place = Place { index, count };
            let mut s = loop_settings(&settings, place, seed, &addrs);
            if let Some(k) = &secret {
                s.core.credentials.add_rest_secret(k);
            }
            loops.push(Runtime::new_loop(s, loop_seed(seed, index), place)?);
        }
        let mut handles = Vec::new();
        for rt in &mut loops {
            handles.push(
                rt.handle()
                    .map_err(|e| StartError::Io("cannot create a loop's waker".into(), e))?,
            );
        }
        if let Some(first) = loops.first_mut() {
            first.set_peers(handles.iter().skip(1).cloned().collect());
        }
        if count > 1 {
            let slices: Vec<String> = (0..count)
                .map(|i| {
                    let (lo, hi) = port_slice(
                        settings.core.relay_port_min,
                        settings.core.relay_port_max,
                        count,
                        i,
                    );
                    format!("{lo}-{hi}")
                })
                .collect();
            log::info!("{count} event loops; relay ports {}", slices.join(", "));
        }
        Ok(Workers { loops, handles })
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

    /// Where the HTTP API listens (on loop 0), if it is served.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.loops.first().and_then(Runtime::api_addr)
    }

    /// Runs every loop on its own thread (a single loop on this one) until SIGTERM or
    /// SIGINT, which every loop catches. When one loop ends for any other reason, the
    /// others are told to stop. Errors if a loop's polling failed or a loop panicked.
    pub fn run(self) -> io::Result<()> {
        let Workers { mut loops, handles } = self;
        if loops.len() == 1 {
            return match loops.pop() {
                Some(mut rt) => rt.run(),
                None => Ok(()),
            };
        }
        let (done_tx, done_rx) = mpsc::channel::<usize>();
        let mut threads = Vec::new();
        for (index, mut rt) in loops.into_iter().enumerate() {
            let done = done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("loop-{index}"))
                .spawn(move || {
                    let r = rt.run();
                    let _ = done.send(index);
                    r
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    for h in &handles {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_contiguous_disjoint_and_cover_the_range() {
        for (min, max) in [
            (49152u16, 65535u16),
            (40000, 40127),
            (1, 1000),
            (65000, 65535),
        ] {
            for count in 1..=16 {
                let mut next = u32::from(min);
                let mut sizes = Vec::new();
                for i in 0..count {
                    let (lo, hi) = port_slice(min, max, count, i);
                    assert_eq!(u32::from(lo), next, "{min}-{max} / {count}, slice {i}");
                    assert!(lo <= hi);
                    sizes.push(u32::from(hi) - u32::from(lo) + 1);
                    next = u32::from(hi) + 1;
                }
                assert_eq!(next, u32::from(max) + 1, "{min}-{max} / {count}");
                let (small, big) = (sizes.iter().min(), sizes.iter().max());
                assert!(big.unwrap() - small.unwrap() <= 1);
            }
        }
        assert_eq!(port_slice(49152, 65535, 2, 0), (49152, 57343));
        assert_eq!(port_slice(49152, 65535, 2, 1), (57344, 65535));
    }

    #[test]
    fn shares_add_up_and_zero_stays_no_cap() {
        for total in [1u64, 7, 100, 10_000, 100_001] {
            for count in 1..=8 {
                let sum: u64 = (0..count).map(|i| share(total, count, i)).sum();
                if total >= count as u64 {
                    assert_eq!(sum, total, "{total} / {count}");
                } else {
                    // Every loop may take at least one.
                    assert_eq!(sum, count as u64);
                }
            }
        }
        assert_eq!(share(0, 4, 2), 0);
    }

    #[test]
    fn plan_follows_cores_ports_and_tracing() {
        assert_eq!(plan(0, 2, 49152, 65535, false).count, 2);
        assert_eq!(plan(0, 0, 49152, 65535, false).count, 1);
        assert_eq!(plan(3, 2, 49152, 65535, false).count, 3);
        let p = plan(0, 8, 49152, 65535, true);
        assert_eq!(p.count, 1);
        assert_eq!(p.notes.len(), 1);
        // Four relay ports: one loop, so a fifth allocation still gets 508.
        let p = plan(0, 2, 50000, 50003, false);
        assert_eq!(p.count, 1);
        assert!(p.notes.first().is_some_and(|n| n.contains("fewer than 64")));
        assert_eq!(plan(4, 8, 50000, 50000 + 191, false).count, 3);
        assert_eq!(plan(10_000, 1_000, 1, 65535, false).count, 256);
    }

    #[test]
    fn ids_route_to_their_loop() {
        for index in [0usize, 1, 2, 15, 255] {
            let base = allocation_id_base(index);
            for n in [1u64, 2, 1 << 20, (1 << ID_SHIFT) - 1] {
                assert_eq!(loop_of(AllocationId(base + n)), index);
            }
        }
        // Ids of loop 0 are what a single loop always handed out.
        assert_eq!(loop_of(AllocationId(1)), 0);
        assert!(allocation_id_base(255) + (1 << ID_SHIFT) <= 1 << 53);
    }

    #[test]
    fn loop_seeds_are_distinct_and_stable() {
        let seed = [7u8; 32];
        assert_eq!(loop_seed(seed, 0), seed);
        let a = loop_seed(seed, 1);
        assert_ne!(a, seed);
        assert_ne!(a, loop_seed(seed, 2));
        assert_eq!(a, loop_seed(seed, 1));
    }

    /// Sends the client's Allocate to `first` (learning realm and nonce from its 401),
    /// then its authenticated Allocate to `second`: true if `second` accepted the nonce
    /// and went on to bind a relay socket.
    fn nonce_carries_over(first: &mut Server, second: &mut Server) -> bool {
        use turnpike_core::client::{Client, ClientConfig};
        use turnpike_core::event::Output;
        use turnpike_core::{Instant, ListenerId};
        let now = Instant::from_secs(1);
        let relay: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let cfg = ClientConfig::new(relay, Transport::Udp, "u", "pw");
        let mut client = Client::new(cfg, [9; 32], now);
        client.allocate(now);
        let feed = |server: &mut Server, client: &mut Client| -> Vec<Output> {
            let mut bytes = client.poll_transmit().expect("a request");
            let len = bytes.len();
            let _ = server.handle_datagram(now, ListenerId(0), from, &mut bytes, 0..len);
            let mut outs = Vec::new();
            while let Some(o) = server.poll_output() {
                if let Output::Transmit { data, .. } = &o {
                    client.handle_input(now, data);
                }
                outs.push(o);
            }
            outs
        };
        feed(first, &mut client);
        feed(second, &mut client)
            .iter()
            .any(|o| matches!(o, Output::BindRelay { .. }))
    }

    #[test]
    fn a_nonce_from_one_loop_is_good_on_another() {
        use turnpike_core::auth::Credentials;
        use turnpike_core::config::ListenerConfig;
        use turnpike_core::{Config, Instant, ListenerId};
        let mut credentials = Credentials::new("loops.test");
        credentials.add_user("u", "pw");
        let mut cfg = Config::new(credentials, "127.0.0.1".parse().unwrap());
        cfg.listeners = vec![ListenerConfig {
            id: ListenerId(0),
            transport: Transport::Udp,
            local: "127.0.0.1:3478".parse().unwrap(),
            proxy_protocol: false,
        }];
        let seed = [5u8; 32];
        let now = Instant::from_secs(1);
        let mut loop0 = Server::new(cfg.clone(), seed, now).unwrap();
        let mut shared = cfg.clone();
        shared.nonce_key = Some(Server::nonce_key_of_seed(seed));
        let mut loop1 = Server::new(shared, loop_seed(seed, 1), now).unwrap();
        assert!(nonce_carries_over(&mut loop0, &mut loop1));
        // Control: a loop with a key of its own would answer 438 instead.
        let mut loop0 = Server::new(cfg.clone(), seed, now).unwrap();
        let mut alone = Server::new(cfg, loop_seed(seed, 1), now).unwrap();
        assert!(!nonce_carries_over(&mut loop0, &mut alone));
    }
}
