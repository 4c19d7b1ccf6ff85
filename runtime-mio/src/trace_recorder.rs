//! The trace recorder: every input the event loop feeds the core, appended to a trace file
//! (format: `turnpike_core::trace`) that `turnpike-sim replay` runs again exactly.
//!
//! The event loop calls one hook per input, *before* the core sees it (so the input that
//! makes the core panic is recorded), [`TraceRecorder::output`] for every output it drains,
//! [`TraceRecorder::forward`] / [`TraceRecorder::to_peer`] for relayed data, and
//! [`TraceRecorder::end_drain`] when a drain is over. Records are buffered in memory and
//! written in blocks; the buffer is flushed once a second, on clean exit, and when a panic
//! unwinds through the runtime (the recorder's `Drop` then adds the panic message, flushes
//! and logs the trace's path).
//!
//! Files: `FILE` is the current segment; at `trace_max_bytes` it becomes `FILE.1` (older
//! ones shift to `FILE.2`...; at most [`KEEP_ROTATED`] are kept) and a new `FILE` starts
//! with the same header. At start, an existing trace of a previous run (perhaps the one
//! that crashed) is moved to `FILE.prev` (with its rotated files) rather than overwritten.
//! A write error stops the recording (logged once); the relay keeps running.
//!
//! **Several loops.** Every event loop of a node records its own core to its own file:
//! loop 0 to `FILE`, loop `i` to `FILE.loop<i>` ([`turnpike_core::trace::loop_path`]; each
//! rotates and moves aside alike: `FILE.loop1.2`, `FILE.prev.loop1`), so nothing is shared
//! or locked between loops. The messages a loop receives from the others are recorded as
//! its inputs ([`TraceRecorder::loop_message`]), the ones it sends are outputs like any
//! other, so each file replays alone. The files of one node share one salt (drawn by the
//! first recorder, [`TraceSettings::salt`]), which tells a replay they belong together.
//! Loop 0 moves the whole previous node's files aside before the other loops start.

use rand_core::{OsRng, RngCore};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock};
use turnpike_core::event::Output;
use turnpike_core::node::{LoopId, LoopMsg, NodePlace, MAX_LOOPS};
use turnpike_core::server::BindError;
use turnpike_core::trace::mask::Masker;
use turnpike_core::trace::{
    encode_header, encode_record, loop_base, loop_path, ConfigDescription, Header, Input,
    OutputDigest, Payload, Record, FORMAT_VERSION,
};
use turnpike_core::{
    AllocationId, Config, ConnId, Forward, Instant, ListenerId, RelayId, Transport,
};

/// Rotated segments kept besides the current one.
pub const KEEP_ROTATED: u32 = 8;
/// Buffered bytes that trigger a write to the file.
const WRITE_AT: usize = 256 * 1024;

/// What to record, from the config file or `--record-trace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceSettings {
    /// The trace file: the configured one for loop 0, `FILE.loop<i>` for loop `i`
    /// (`workers::loop_settings` names it).
    pub path: PathBuf,
    /// Record relayed payloads in full.
    pub payloads: bool,
    /// Rotate at this size, bytes.
    pub max_bytes: u64,
    /// The loop this recorder records, of how many the node runs.
    pub place: NodePlace,
    /// The salt of the node's trace files: clones of these settings (one per loop) share
    /// it; the first recorder draws it.
    pub salt: SharedSalt,
}

impl TraceSettings {
    /// Recording to `path` for a node of one loop (`workers::loop_settings` sets the loop's
    /// file and place), with a salt not drawn yet.
    pub fn new(path: PathBuf, payloads: bool, max_bytes: u64) -> Self {
        TraceSettings {
            path,
            payloads,
            max_bytes,
            place: NodePlace::SOLE,
            salt: SharedSalt::default(),
        }
    }
}

/// A random salt drawn once and shared by every clone (the loops of one node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedSalt(Arc<OnceLock<[u8; 16]>>);

impl SharedSalt {
    /// The salt, drawn from the OS on first use.
    pub fn get(&self) -> [u8; 16] {
        *self.0.get_or_init(|| {
            let mut salt = [0u8; 16];
            OsRng.fill_bytes(&mut salt);
            salt
        })
    }
}

/// Appends the core's inputs to a trace file. See the module documentation.
pub struct TraceRecorder {
    settings: TraceSettings,
    header: Header,
    file: Option<File>,
    buf: Vec<u8>,
    /// Bytes of the current segment, written or buffered.
    size: u64,
    digest: OutputDigest,
    /// Outputs drained since the last checkpoint.
    popped: u32,
    /// Something was recorded since the last checkpoint.
    dirty: bool,
    scratch: Vec<u8>,
    /// Stream maskers (payloads off), by stream.
    streams: HashMap<ConnId, Masker>,
    /// Listeners that expect a PROXY header.
    proxy_listeners: Vec<ListenerId>,
}

impl TraceRecorder {
    /// Starts a trace of a core created with `config`, `seed` at `now`. Moves a previous
    /// run's trace aside, writes the header.
    pub fn create(
        settings: &TraceSettings,
        config: &Config,
        seed: [u8; 32],
        now: Instant,
        unix_ms: u64,
    ) -> io::Result<Self> {
        install_panic_hook();
        let salt = settings.salt.get();
        let header = Header {
            seed,
            start: now,
            start_unix_ms: unix_ms,
            salt,
            producer: concat!("turnpike ", env!("CARGO_PKG_VERSION")).to_string(),
            payloads: settings.payloads,
            segment: 0,
            place: settings.place,
            config: ConfigDescription::of(config, &salt),
            version: FORMAT_VERSION,
        };
        move_previous_run(&settings.path, settings.place.index)?;
        let mut rec = TraceRecorder {
            settings: settings.clone(),
            header,
            file: None,
            buf: Vec::with_capacity(2 * WRITE_AT),
            size: 0,
            digest: OutputDigest::new(),
            popped: 0,
            dirty: false,
            scratch: Vec::new(),
            streams: HashMap::new(),
            proxy_listeners: config
                .listeners
                .iter()
                .filter(|l| l.transport == Transport::Tcp && l.proxy_protocol)
                .map(|l| l.id)
                .collect(),
        };
        rec.open_segment()?;
        rec.write_out()?;
        let which = if settings.place.count > 1 {
            format!(" of loop {}", settings.place.index)
        } else {
            String::new()
        };
        log::info!(
            "recording a trace{which} to {} (payloads {})",
            settings.path.display(),
            if settings.payloads {
                "in full"
            } else {
                "as length and CRC"
            }
        );
        Ok(rec)
    }

    /// The trace file.
    pub fn path(&self) -> &Path {
        &self.settings.path
    }

    /// `set_wall_clock(now, unix_ms)` is about to be called.
    pub fn wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.input(Input::WallClock { now, unix_ms });
    }

    /// `handle_datagram` is about to be called with `data` from `from`.
    pub fn datagram(&mut self, now: Instant, listener: ListenerId, from: SocketAddr, data: &[u8]) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload = Payload::client_datagram(data, self.settings.payloads, &mut scratch);
        self.input(Input::Datagram {
            now,
            listener,
            from,
            payload,
        });
        self.scratch = scratch;
    }

    /// `handle_stream_open` is about to be called.
    pub fn stream_open(
        &mut self,
        now: Instant,
        conn: ConnId,
        listener: ListenerId,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        if !self.settings.payloads {
            let proxy = self.proxy_listeners.contains(&listener);
            self.streams.insert(conn, Masker::stream(proxy));
        }
        self.input(Input::StreamOpen {
            now,
            conn,
            listener,
            local,
            remote,
        });
    }

    /// `handle_stream_data` is about to be called with `data`.
    pub fn stream_data(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut streams = std::mem::take(&mut self.streams);
        let masker = if self.settings.payloads {
            None
        } else {
            // A stream the recorder never saw open (cannot happen): mask it from here.
            Some(streams.entry(conn).or_insert_with(|| Masker::stream(false)))
        };
        let data = Payload::stream_data(data, masker, &mut scratch);
        self.input(Input::StreamData { now, conn, data });
        self.scratch = scratch;
        self.streams = streams;
    }

    /// `handle_stream_closed` is about to be called.
    pub fn stream_closed(&mut self, now: Instant, conn: ConnId) {
        self.streams.remove(&conn);
        self.input(Input::StreamClosed { now, conn });
    }

    /// `handle_relay_bound` is about to be called.
    pub fn relay_bound(&mut self, now: Instant, relay: RelayId, result: Result<(), BindError>) {
        self.input(Input::RelayBound { now, relay, result });
    }

    /// `handle_relay_datagram` is about to be called with `data` from peer `from`.
    pub fn relay_datagram(&mut self, now: Instant, relay: RelayId, from: SocketAddr, data: &[u8]) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload = Payload::peer_datagram(data, self.settings.payloads, &mut scratch);
        self.input(Input::RelayDatagram {
            now,
            relay,
            from,
            payload,
        });
        self.scratch = scratch;
    }

    /// `handle_timeout` is about to be called.
    pub fn timeout(&mut self, now: Instant) {
        self.input(Input::Timeout { now });
    }

    /// `start_drain` is about to be called (SIGTERM or `POST /v1/drain`).
    pub fn drain(&mut self, now: Instant) {
        self.input(Input::Drain { now });
    }

    /// `delete_allocation` is about to be called (operator request).
    pub fn delete_allocation(&mut self, now: Instant, id: AllocationId) {
        self.input(Input::DeleteAllocation { now, id });
    }

    /// A one-time credential is about to be added to the core's store (its password is
    /// recorded as a fingerprint only).
    pub fn one_time_added(
        &mut self,
        username: &str,
        cred: &turnpike_core::auth::OneTimeCredential,
    ) {
        let d = turnpike_core::trace::OneTimeDescription::of(&self.header.salt, username, cred);
        self.input(Input::OneTimeAdded(d));
    }

    /// A listener was added to the core after start (a dynamic UDP port of the HTTP API).
    pub fn listener_added(&mut self, now: Instant, l: &turnpike_core::config::ListenerConfig) {
        self.input(Input::ListenerAdded {
            now,
            id: l.id,
            transport: l.transport,
            local: l.local,
            proxy_protocol: l.proxy_protocol,
        });
    }

    /// A listener is about to be removed from the core.
    pub fn listener_removed(&mut self, now: Instant, id: turnpike_core::ListenerId) {
        self.input(Input::ListenerRemoved { now, id });
    }

    /// A listener is about to be reserved for one username.
    pub fn listener_reserved(&mut self, listener: turnpike_core::ListenerId, username: &str) {
        self.input(Input::ListenerReserved { listener, username });
    }

    /// A REST secret (the HTTP API's issuance secret) is about to be added to the core's
    /// store: recorded as a fingerprint only.
    pub fn rest_secret_added(&mut self, secret: &[u8]) {
        let fingerprint = turnpike_core::trace::config::fingerprint(
            &self.header.salt,
            turnpike_core::trace::SecretKind::RestSecret,
            "",
            secret,
        );
        self.input(Input::RestSecretAdded { fingerprint });
    }

    /// `reload(now, r)` is about to be called: secrets recorded as fingerprints only.
    pub fn reload(&mut self, now: Instant, r: &turnpike_core::config::Reloadable) {
        let reload = Box::new(turnpike_core::trace::reload::ReloadDescription::of(
            r,
            &self.header.salt,
        ));
        self.input(Input::Reload { now, reload });
    }

    /// A one-time credential is about to be removed from the core's store.
    pub fn one_time_removed(&mut self, username: &str) {
        self.input(Input::OneTimeRemoved { username });
    }

    /// `expire_one_time(wall_unix_s)` is about to be called on the core's store.
    pub fn one_time_expired(&mut self, wall_unix_s: u64) {
        self.input(Input::OneTimeExpired { wall_unix_s });
    }

    /// `handle_loop_message(now, from, msg)` is about to be called: a message from the
    /// core of loop `from`, as the loop's inbox received it.
    pub fn loop_message(&mut self, now: Instant, from: LoopId, msg: &LoopMsg) {
        self.input(Input::LoopMessage {
            now,
            from,
            msg: msg.clone(),
        });
    }

    /// An output was drained with `poll_output`.
    pub fn output(&mut self, out: &Output) {
        self.digest.output(out);
        self.popped = self.popped.saturating_add(1);
        self.dirty = true;
        if let Output::CloseStream { conn, .. } = out {
            self.streams.remove(conn);
        }
    }

    /// The core returned `f` for a datagram.
    pub fn forward(&mut self, f: &Forward) {
        self.digest.forward(f);
        self.dirty = true;
    }

    /// The core handed stream data of `len` bytes for `peer` to the `to_peer` callback.
    pub fn to_peer(&mut self, relay: RelayId, peer: SocketAddr, len: usize) {
        self.digest.to_peer(relay, peer, len);
        self.dirty = true;
    }

    /// A drain is over (the output queue is empty): checkpoint the digest.
    pub fn end_drain(&mut self) {
        if self.dirty {
            self.checkpoint(true);
        }
    }

    /// Writes what is buffered (once a second, and at exit).
    pub fn flush(&mut self) {
        if let Err(e) = self.write_out() {
            self.fail(&e);
        }
    }

    /// Ends the trace cleanly (shutdown) and flushes.
    pub fn finish(&mut self) {
        if self.dirty {
            self.checkpoint(false);
        }
        self.record(&Record::End { reason: "shutdown" });
        self.flush();
        if let Some(f) = &self.file {
            let _ = f.sync_data();
        }
        log::info!("trace written to {}", self.settings.path.display());
    }

    fn input(&mut self, input: Input<'_>) {
        if self.popped > 0 {
            // Outputs were drained before this input arrived (the runtime answers a
            // BindRelay in the middle of a drain): say how many, so the replay interleaves
            // them the same way.
            self.checkpoint(false);
        }
        self.record(&Record::Input(input));
        self.dirty = true;
    }

    fn checkpoint(&mut self, drained: bool) {
        let r = Record::Outputs {
            count: self.popped,
            drained,
            digest: self.digest.value(),
        };
        self.popped = 0;
        self.dirty = false;
        self.record(&r);
    }

    fn record(&mut self, r: &Record<'_>) {
        if self.file.is_none() {
            return;
        }
        let before = self.buf.len();
        encode_record(r, &mut self.buf);
        self.size += (self.buf.len() - before) as u64;
        if self.buf.len() >= WRITE_AT {
            self.flush();
        }
        // Rotate only between drains, so that no segment starts in the middle of one.
        if self.size >= self.settings.max_bytes
            && matches!(r, Record::Outputs { drained: true, .. })
        {
            if let Err(e) = self.rotate() {
                self.fail(&e);
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        let before = self.buf.len();
        encode_record(&Record::End { reason: "rotated" }, &mut self.buf);
        self.size += (self.buf.len() - before) as u64;
        self.write_out()?;
        self.file = None;
        let path = self.settings.path.clone();
        let path = path.as_path();
        let _ = std::fs::remove_file(numbered(path, KEEP_ROTATED));
        for n in (1..KEEP_ROTATED).rev() {
            let from = numbered(path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(path, n + 1))?;
            }
        }
        std::fs::rename(path, numbered(path, 1))?;
        self.header.segment += 1;
        self.open_segment()?;
        log::info!(
            "trace {} rotated (segment {})",
            path.display(),
            self.header.segment
        );
        Ok(())
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.settings.path)?;
        self.file = Some(file);
        let before = self.buf.len();
        encode_header(&self.header, &mut self.buf);
        self.size = (self.buf.len() - before) as u64;
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        if let Some(f) = &mut self.file {
            f.write_all(&self.buf)?;
        }
        self.buf.clear();
        Ok(())
    }

    fn fail(&mut self, e: &io::Error) {
        if self.file.is_some() {
            log::error!(
                "trace {}: write failed, recording stops: {e}",
                self.settings.path.display()
            );
        }
        self.file = None;
        self.buf.clear();
    }
}

impl Drop for TraceRecorder {
    /// On a panic unwinding through the runtime: record it, flush, and say where the
    /// trace is, so that the crash can be replayed.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let message = LAST_PANIC
                .lock()
                .ok()
                .and_then(|m| m.clone())
                .unwrap_or_else(|| "unknown panic".into());
            self.record(&Record::Panic { message: &message });
            self.flush();
            if let Some(f) = &self.file {
                let _ = f.sync_data();
            }
            log::error!(
                "the relay panicked ({message}); the trace up to the panic is in {}: replay it with `turnpike-sim replay {}`",
                self.settings.path.display(),
                self.settings.path.display()
            );
        } else {
            self.flush();
        }
    }
}

/// The message of the last panic, kept by the hook for the recorder's `Drop`.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Ok(mut m) = LAST_PANIC.lock() {
                *m = Some(format!("{text}{at}"));
            }
            previous(info);
        }));
    });
}

/// `path.n`.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// `path.prev`.
fn previous(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".prev");
    PathBuf::from(s)
}

/// Moves a previous run's trace aside before loop `index` records to `path`. Loop 0 (the
/// first to start) moves the files of every loop of the previous node: `FILE`, `FILE.N`,
/// `FILE.loop<i>`, `FILE.loop<i>.N` to `FILE.prev`, `FILE.prev.N`, `FILE.prev.loop<i>`,
/// `FILE.prev.loop<i>.N`, replacing an older `.prev` set; another loop moves only its own
/// file set, if still there.
fn move_previous_run(path: &Path, index: u16) -> io::Result<()> {
    let base = loop_base(path, index).unwrap_or_else(|| path.to_path_buf());
    let prev = previous(&base);
    if index > 0 {
        // Normally loop 0 moved it already (and this loop's `.prev` is the previous run's).
        if !path.exists() {
            return Ok(());
        }
        return move_set(path, &loop_path(&prev, index));
    }
    if !base.exists() {
        return Ok(());
    }
    for i in 0..MAX_LOOPS {
        move_set(&loop_path(&base, i), &loop_path(&prev, i))?;
    }
    log::info!("the previous run's trace was moved to {}", prev.display());
    Ok(())
}

/// Moves `from` and `from.N` to `to` and `to.N`, after removing an older `to` set (even
/// when there is nothing to move, so no stale file is taken for part of the new set).
fn move_set(from: &Path, to: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(to);
    for n in 1..=KEEP_ROTATED {
        let _ = std::fs::remove_file(numbered(to, n));
    }
    if !from.exists() {
        return Ok(());
    }
    std::fs::rename(from, to)?;
    for n in 1..=KEEP_ROTATED {
        let f = numbered(from, n);
        if f.exists() {
            std::fs::rename(&f, numbered(to, n))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_core::auth::Credentials;
    use turnpike_core::trace::{open, Tail};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("turnpike-trace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn config() -> Config {
        let mut cr = Credentials::new("r");
        cr.add_user("alice", "secret-pw");
        Config::new(cr, "127.0.0.1".parse().unwrap())
    }

    fn settings(path: PathBuf, max_bytes: u64) -> TraceSettings {
        TraceSettings::new(path, false, max_bytes)
    }

    #[test]
    fn records_checkpoints_and_finishes() {
        let d = dir("basic");
        let path = d.join("t.bin");
        let mut r = TraceRecorder::create(
            &settings(path.clone(), 1 << 20),
            &config(),
            [1; 32],
            Instant::from_millis(1),
            5,
        )
        .unwrap();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        r.wall_clock(Instant::from_millis(1), 1000);
        r.datagram(
            Instant::from_millis(2),
            ListenerId(0),
            from,
            &[0x40, 0, 0, 2, 9, 9],
        );
        r.output(&Output::CloseRelay { relay: RelayId(1) });
        r.relay_bound(Instant::from_millis(2), RelayId(1), Ok(()));
        r.output(&Output::CloseRelay { relay: RelayId(2) });
        r.end_drain();
        r.finish();
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(9).any(|w| w == b"secret-pw"));
        let (h, mut reader) = open(&bytes).unwrap();
        assert_eq!(h.seed, [1; 32]);
        let recs: Vec<Record<'_>> = reader.by_ref().map(Result::unwrap).collect();
        let kinds: Vec<String> = recs
            .iter()
            .map(|r| match r {
                Record::Input(i) => i.kind().to_string(),
                Record::Outputs { count, drained, .. } => format!("outputs {count} {drained}"),
                Record::Panic { .. } => "panic".into(),
                Record::End { reason } => format!("end {reason}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "wall_clock",
                "datagram",
                "outputs 1 false",
                "relay_bound",
                "outputs 1 true",
                "end shutdown"
            ]
        );
        assert_eq!(reader.tail(), Some(Tail::Clean));
        if let Record::Input(Input::Datagram { payload, .. }) = &recs[1] {
            assert_eq!(payload.bytes().unwrap().as_ref(), &[0x40, 0, 0, 2, 0, 0]);
        }
        // A second run moves this one aside.
        let r2 = TraceRecorder::create(
            &settings(path.clone(), 1 << 20),
            &config(),
            [2; 32],
            Instant::from_millis(1),
            5,
        )
        .unwrap();
        drop(r2);
        assert_eq!(std::fs::read(previous(&path)).unwrap(), bytes);
    }

    #[test]
    fn every_loop_records_its_own_file_with_its_messages() {
        let d = dir("loops");
        let base = d.join("t.bin");
        let shared = TraceSettings::new(base.clone(), false, 1 << 20);
        let record = |index: u16, seed: u8| {
            let mut s = shared.clone();
            s.place = NodePlace { index, count: 2 };
            s.path = loop_path(&base, index);
            let mut r =
                TraceRecorder::create(&s, &config(), [seed; 32], Instant::from_millis(1), 5)
                    .unwrap();
            r.loop_message(
                Instant::from_millis(3),
                LoopId(1 - index),
                &LoopMsg::UserAcquire {
                    req: 4,
                    username: "alice".into(),
                },
            );
            r.output(&Output::ToLoop {
                to: LoopId(1 - index),
                msg: LoopMsg::UserGranted {
                    req: 4,
                    username: "alice".into(),
                    granted: true,
                },
            });
            r.end_drain();
            r.finish();
        };
        for round in 0..2u8 {
            record(0, round);
            record(1, round + 10);
        }
        let mut salts = Vec::new();
        for (index, path) in [(0u16, base.clone()), (1, d.join("t.bin.loop1"))] {
            let bytes = std::fs::read(&path).unwrap();
            let (h, reader) = open(&bytes).unwrap();
            assert_eq!(h.place, NodePlace { index, count: 2 });
            assert_eq!(h.seed[0], 1 + 10 * index as u8, "the second run's");
            salts.push(h.salt);
            let recs: Vec<Record<'_>> = reader.map(Result::unwrap).collect();
            assert!(
                matches!(&recs[0], Record::Input(Input::LoopMessage { from, msg: LoopMsg::UserAcquire { req: 4, .. }, .. }) if from.0 == 1 - index),
                "{recs:?}"
            );
            assert!(matches!(recs[1], Record::Outputs { count: 1, .. }));
            // The previous run's file of this loop was moved aside, beside loop 0's.
            let prev = loop_path(&previous(&base), index);
            let (hp, _) = open(&std::fs::read(&prev).unwrap())
                .map(|(h, r)| (h, r.count()))
                .unwrap();
            assert_eq!(hp.seed[0], 10 * index as u8);
        }
        assert_eq!(salts[0], salts[1], "one node, one salt");
        assert!(!d.join("t.bin.loop1.prev").exists());
    }

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_count() {
        let d = dir("rotate");
        let path = d.join("t.bin");
        let mut r = TraceRecorder::create(
            &settings(path.clone(), 4096),
            &config(),
            [1; 32],
            Instant::from_millis(1),
            5,
        )
        .unwrap();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for i in 0..2000u64 {
            r.datagram(Instant::from_millis(i), ListenerId(0), from, &[0u8; 100]);
            r.end_drain();
        }
        r.finish();
        drop(r);
        assert!(path.exists());
        for n in 1..=KEEP_ROTATED {
            let p = numbered(&path, n);
            assert!(p.exists(), "{}", p.display());
            let bytes = std::fs::read(&p).unwrap();
            let (h, _) = open(&bytes).unwrap();
            assert!(h.segment > 0);
            assert!(bytes.len() < 4096 + 512);
        }
        assert!(!numbered(&path, KEEP_ROTATED + 1).exists());
    }
}
