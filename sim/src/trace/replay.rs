//! Replay: a fresh core, the recorded configuration (secrets from the operator's file),
//! the recorded seed and start instant, and every recorded input in order. At each
//! `outputs` checkpoint the replay drains exactly as many outputs as the runtime did and
//! compares the running digest; the first mismatch is reported with the input that led to
//! it. A panic of the core is caught and reported with the records before it.
//!
//! A node of several event loops is replayed loop by loop ([`replay_node`]): each loop's
//! file is self-contained (the messages it received from other loops are among its
//! inputs, the ones it sent among its outputs), so each runs against a fresh core of its
//! own, with the place in the node, allocation id base and nonce key the runtime gave it.

use super::{load, load_node, record_json, secrets_from_config, ReplayError, Segments};
use serde_json::Value;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use turnpike_core::node::{allocation_id_base, NodePlace};
use turnpike_core::trace::{self, Fingerprint, Input, OutputDigest, Record, ReplaySecrets, Tail};
use turnpike_core::{Server, HEADROOM, TAILROOM};

/// How many records before a divergence or panic the report shows.
pub const CONTEXT_RECORDS: usize = 8;

/// What a replay found.
#[derive(Debug)]
pub struct ReplayReport {
    /// The loop of the node the files recorded (loop 0 of 1 for a single loop).
    pub place: NodePlace,
    /// The files read, first segment first.
    pub files: Vec<PathBuf>,
    /// Records read (all segments).
    pub records: u64,
    /// Inputs fed to the core.
    pub inputs: u64,
    /// Checkpoints compared (all matched up to a divergence).
    pub checkpoints: u64,
    /// How the last file ended.
    pub tail: Tail,
    /// One-time credentials whose password could not be recovered, and the issuance
    /// secret if it could not (replies to them may diverge).
    pub unrecovered_credentials: Vec<String>,
    /// The verdict.
    pub outcome: Outcome,
}

/// The verdict of a replay.
#[derive(Debug)]
pub enum Outcome {
    /// Every checkpoint matched.
    Identical,
    /// The first checkpoint that did not match.
    Diverged(Divergence),
    /// The core panicked.
    Panicked(PanicReport),
    /// A record could not be read (corruption in the middle of a file).
    Unreadable(String),
    /// The recorded run panicked (its recorder noted it at `record`) but the replay did not.
    PanicNotReproduced {
        /// Index of the panic record.
        record: u64,
        /// The recorded panic message.
        message: String,
    },
}

/// The first checkpoint where the replay's outputs differ from the recording's.
#[derive(Debug)]
pub struct Divergence {
    /// Index of the checkpoint record (over all segments).
    pub record: u64,
    /// The last input before it (index, JSON).
    pub input: Option<(u64, Value)>,
    /// Recorded: outputs drained, queue empty after, digest.
    pub expected: (u32, bool, u64),
    /// Replayed: outputs available (up to one more than expected), queue empty, digest.
    pub got: (u32, bool, u64),
    /// The outputs the replay produced since the previous checkpoint (Debug form).
    pub outputs: Vec<String>,
    /// The records before it.
    pub context: Vec<Value>,
}

/// The core panicked during a replay.
#[derive(Debug)]
pub struct PanicReport {
    /// Index of the input record being handled.
    pub record: u64,
    /// That input.
    pub input: Value,
    /// The panic message.
    pub message: String,
    /// The panic the recording noted, if it did (the production run crashed there too).
    pub recorded: Option<String>,
    /// The records before it.
    pub context: Vec<Value>,
}

impl ReplayReport {
    /// True when the replay reproduced the recording exactly (a recorded panic reproduced
    /// at the same record counts as exact).
    pub fn is_identical(&self) -> bool {
        match &self.outcome {
            Outcome::Identical => true,
            Outcome::Panicked(p) => p.recorded.is_some(),
            _ => false,
        }
    }
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        let which = if self.place.count > 1 {
            format!("loop {} of {}: ", self.place.index, self.place.count)
        } else {
            String::new()
        };
        writeln!(
            f,
            "{which}replayed {}: {} records, {} inputs, {} checkpoints",
            names.join(" + "),
            self.records,
            self.inputs,
            self.checkpoints
        )?;
        if let Tail::Torn { offset, bytes } = self.tail {
            writeln!(
                f,
                "the trace ends with a torn record at byte {offset} ({bytes} bytes skipped): replayed up to the last whole record"
            )?;
        }
        for u in &self.unrecovered_credentials {
            if u.starts_with("the issuance secret") {
                writeln!(
                    f,
                    "warning: {u} of the trace is not in the config file: replies to issued credentials may diverge"
                )?;
            } else {
                writeln!(
                    f,
                    "warning: the password of one-time credential `{u}` could not be recovered"
                )?;
            }
        }
        match &self.outcome {
            Outcome::Identical => writeln!(f, "identical: every checkpoint matched"),
            Outcome::Unreadable(m) => writeln!(f, "stopped: {m}"),
            Outcome::PanicNotReproduced { record, message } => writeln!(
                f,
                "NOT REPRODUCED: the recorded run panicked before record {record} ({message}), the replay did not"
            ),
            Outcome::Diverged(d) => {
                writeln!(f, "DIVERGED at record {}", d.record)?;
                if let Some((i, input)) = &d.input {
                    writeln!(f, "  after input record {i}: {input}")?;
                }
                let (c, e, x) = d.expected;
                let (gc, ge, gx) = d.got;
                writeln!(
                    f,
                    "  expected {c} outputs (queue empty after: {e}), digest {x:016x}"
                )?;
                writeln!(
                    f,
                    "  got      {gc} outputs (queue empty after: {ge}), digest {gx:016x}"
                )?;
                for o in &d.outputs {
                    writeln!(f, "  replay output: {o}")?;
                }
                writeln!(f, "  records before it:")?;
                for r in &d.context {
                    writeln!(f, "    {r}")?;
                }
                Ok(())
            }
            Outcome::Panicked(p) => {
                writeln!(
                    f,
                    "PANIC at record {} ({}): {}",
                    p.record, p.input, p.message
                )?;
                match &p.recorded {
                    Some(m) => writeln!(f, "  the recorded run panicked here too: {m}")?,
                    None => writeln!(f, "  the recorded run did not panic here")?,
                }
                writeln!(f, "  records before it:")?;
                for r in &p.context {
                    writeln!(f, "    {r}")?;
                }
                Ok(())
            }
        }
    }
}

/// What a replay of every loop of a node found.
#[derive(Debug)]
pub struct NodeReport {
    /// One report per loop, loop 0 first.
    pub loops: Vec<ReplayReport>,
}

impl NodeReport {
    /// True when every loop replayed identically (see [`ReplayReport::is_identical`]).
    pub fn is_identical(&self) -> bool {
        self.loops.iter().all(ReplayReport::is_identical)
    }
}

impl std::fmt::Display for NodeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.loops.len() > 1 {
            let same = self.loops.iter().filter(|r| r.is_identical()).count();
            writeln!(
                f,
                "a node of {} event loops: {same} replayed identically{}",
                self.loops.len(),
                if same == self.loops.len() {
                    ""
                } else {
                    ", the others NOT (below)"
                }
            )?;
        }
        for r in &self.loops {
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Replays every loop of the node whose trace `trace_path` is (loop 0's file `FILE`, or
/// any loop's `FILE.loop<i>`; the others are found beside it, each with its rotated
/// segments), each loop against a fresh core; secrets as for [`replay`].
pub fn replay_node(
    trace_path: &Path,
    config_path: Option<&Path>,
) -> Result<NodeReport, ReplayError> {
    let secrets = secrets_from_config(config_path)?;
    replay_node_with(trace_path, &secrets)
}

/// [`replay_node`] with the secrets given directly.
pub fn replay_node_with(
    trace_path: &Path,
    secrets: &ReplaySecrets,
) -> Result<NodeReport, ReplayError> {
    let node = load_node(trace_path)?;
    let loop0 = node.loops.first().map(FromLoop0::of);
    let mut loops = Vec::with_capacity(node.loops.len());
    for segs in &node.loops {
        loops.push(replay_segments(segs, secrets, loop0.as_ref())?);
    }
    Ok(NodeReport { loops })
}

/// Replays the trace at `trace_path` (with its older rotated segments): one loop's file,
/// self-contained (see [`replay_node`] for every loop of a node), taking the secrets
/// from the runtime configuration file `config_path` (keys `users` and
/// `static_auth_secret`; None when the trace needs none).
pub fn replay(trace_path: &Path, config_path: Option<&Path>) -> Result<ReplayReport, ReplayError> {
    let secrets = secrets_from_config(config_path)?;
    replay_with(trace_path, &secrets)
}

/// [`replay`] with the secrets given directly. A loop after the first takes its nonce key
/// and the HTTP API's issuance secret from loop 0: loop 0's file (`FILE`
/// beside `FILE.loop<i>`) is read for them when it is there.
pub fn replay_with(
    trace_path: &Path,
    secrets: &ReplaySecrets,
) -> Result<ReplayReport, ReplayError> {
    let segs = load(trace_path)?;
    let loop0 = loop0_of(trace_path, &segs);
    replay_segments(&segs, secrets, loop0.as_ref())
}

/// What the runtime gives a loop after the first from loop 0: the nonce key of loop 0's
/// seed, and the HTTP API's issuance secret (which loop 0 records as an input, the others
/// have in their config from the start; recorded as fingerprints under the node's salt).
struct FromLoop0 {
    seed: [u8; 32],
    salt: [u8; 16],
    issuance: Vec<Fingerprint>,
}

impl FromLoop0 {
    /// Reads loop 0's run (its segments).
    fn of(segs: &Segments) -> FromLoop0 {
        let mut out = FromLoop0 {
            seed: [0; 32],
            salt: [0; 16],
            issuance: Vec::new(),
        };
        for (i, (_, bytes)) in segs.files.iter().enumerate() {
            let Ok((h, reader)) = trace::open(bytes) else {
                continue;
            };
            if i == 0 {
                (out.seed, out.salt) = (h.seed, h.salt);
            }
            for rec in reader.flatten() {
                if let Record::Input(Input::RestSecretAdded { fingerprint }) = rec {
                    out.issuance.push(fingerprint);
                }
            }
        }
        out
    }
}

/// Loop 0's part of the node whose loop's run `segs` (the file at `path`) is, when loop
/// 0's file is there.
fn loop0_of(path: &Path, segs: &Segments) -> Option<FromLoop0> {
    let (_, bytes) = segs.files.first()?;
    let (h, _) = trace::open(bytes).ok()?;
    if h.place.index == 0 {
        return Some(FromLoop0::of(segs));
    }
    let loop0 = load(&trace::loop_base(path, h.place.index)?).ok()?;
    Some(FromLoop0::of(&loop0)).filter(|l| l.salt == h.salt)
}

/// Replays one loop's run (its segments, oldest first); `loop0`: what the runtime gave a
/// loop after the first from loop 0.
fn replay_segments(
    segs: &Segments,
    secrets: &ReplaySecrets,
    loop0: Option<&FromLoop0>,
) -> Result<ReplayReport, ReplayError> {
    let first = segs
        .files
        .first()
        .ok_or_else(|| ReplayError::Segments("no trace file".into()))?;
    let (header, _) = trace::open(&first.1).map_err(|e| ReplayError::Trace(first.0.clone(), e))?;
    let mut secrets = secrets.clone();
    let mut description = header.config.clone();
    let mut unrecovered = Vec::new();
    if let Some(l0) = loop0.filter(|_| header.place.index > 0) {
        secrets.nonce_keys.push(Server::nonce_key_of_seed(l0.seed));
        // The issuance secret, when not supplied: left out, as loop 0's replay leaves it.
        description.rest_secrets.retain(|fp| {
            let supplied = secrets.rest_secrets.iter().any(|x| {
                trace::config::fingerprint(&header.salt, trace::SecretKind::RestSecret, "", x)
                    == *fp
            });
            let keep = supplied || !l0.issuance.contains(fp);
            if !keep {
                unrecovered.push("the issuance secret (`issuance_secret`)".to_string());
            }
            keep
        });
    }
    let secrets = &secrets;
    let config = description.to_config(&header.salt, secrets).map_err(|e| {
        let hint = if secrets.users.is_empty() && secrets.rest_secrets.is_empty() {
            " (give the relay's configuration file with --config)"
        } else {
            ""
        };
        let which = if header.place.count > 1 {
            format!("loop {} of {}: ", header.place.index, header.place.count)
        } else {
            String::new()
        };
        ReplayError::Setup(format!("{which}{e}{hint}"))
    })?;
    let mut server = Server::new(config, header.seed, header.start).map_err(|e| {
        ReplayError::Setup(format!("the core refused the recorded configuration: {e}"))
    })?;
    if header.place.index > 0 {
        // What the runtime does for every loop after the first.
        server.set_allocation_id_base(allocation_id_base(header.place.index));
    }
    let mut r = Replayer {
        server,
        salt: header.salt,
        secrets,
        digest: OutputDigest::new(),
        window: Vec::new(),
        context: VecDeque::new(),
        last_input: None,
        unrecovered,
    };
    let mut report = ReplayReport {
        place: header.place,
        files: segs.files.iter().map(|(p, _)| p.clone()).collect(),
        records: 0,
        inputs: 0,
        checkpoints: 0,
        tail: Tail::Clean,
        unrecovered_credentials: Vec::new(),
        outcome: Outcome::Identical,
    };
    let mut index = 0u64;
    'files: for (path, bytes) in &segs.files {
        let (_, mut reader) =
            trace::open(bytes).map_err(|e| ReplayError::Trace(path.clone(), e))?;
        for rec in reader.by_ref() {
            let rec = match rec {
                Ok(rec) => rec,
                Err(e) => {
                    report.outcome = Outcome::Unreadable(format!("{}: {e}", path.display()));
                    break 'files;
                }
            };
            report.records += 1;
            if let Some(mut outcome) = r.step(index, &rec, &mut report) {
                if let Outcome::Panicked(p) = &mut outcome {
                    // Did the recorded run die here too? Its recorder notes the panic next.
                    if let Some(Ok(Record::Panic { message })) = reader.next() {
                        p.recorded = Some(message.to_string());
                    }
                }
                report.outcome = outcome;
                break 'files;
            }
            index += 1;
        }
        report.tail = reader.tail().unwrap_or(Tail::Clean);
    }
    report.unrecovered_credentials = r.unrecovered;
    Ok(report)
}

struct Replayer<'s> {
    server: Server,
    salt: [u8; 16],
    secrets: &'s ReplaySecrets,
    digest: OutputDigest,
    /// Outputs popped since the last checkpoint, for a divergence report.
    window: Vec<String>,
    context: VecDeque<Value>,
    last_input: Option<(u64, Value)>,
    unrecovered: Vec<String>,
}

impl Replayer<'_> {
    /// Handles one record; Some(outcome) ends the replay.
    fn step(&mut self, index: u64, rec: &Record<'_>, report: &mut ReplayReport) -> Option<Outcome> {
        let json = record_json(index, rec);
        let outcome = match rec {
            Record::Input(input) => {
                report.inputs += 1;
                self.last_input = Some((index, json.clone()));
                let applied = catch_unwind(AssertUnwindSafe(|| self.apply(input)));
                match applied {
                    Ok(()) => None,
                    Err(payload) => Some(Outcome::Panicked(PanicReport {
                        record: index,
                        input: json.clone(),
                        message: panic_message(&payload),
                        recorded: None,
                        context: self.context.iter().cloned().collect(),
                    })),
                }
            }
            Record::Outputs {
                count,
                drained,
                digest,
            } => {
                report.checkpoints += 1;
                self.checkpoint(index, *count, *drained, *digest)
            }
            Record::Panic { message } => Some(Outcome::PanicNotReproduced {
                record: index,
                message: message.to_string(),
            }),
            Record::End { .. } => None,
        };
        if self.context.len() == CONTEXT_RECORDS {
            self.context.pop_front();
        }
        self.context.push_back(json);
        outcome
    }

    fn checkpoint(&mut self, index: u64, count: u32, drained: bool, want: u64) -> Option<Outcome> {
        let mut got = 0u32;
        while got < count {
            let Some(out) = self.server.poll_output() else {
                break;
            };
            self.digest.output(&out);
            self.window.push(format!("{out:?}"));
            got += 1;
        }
        let mut empty = true;
        if drained {
            if let Some(extra) = self.server.poll_output() {
                self.window.push(format!("(one more) {extra:?}"));
                empty = false;
                got += 1;
            }
        }
        let value = self.digest.value();
        let outputs = std::mem::take(&mut self.window);
        if got == count && empty && value == want {
            return None;
        }
        Some(Outcome::Diverged(Divergence {
            record: index,
            input: self.last_input.clone(),
            expected: (count, drained, want),
            got: (got, empty, value),
            outputs,
            context: self.context.iter().cloned().collect(),
        }))
    }

    fn apply(&mut self, input: &Input<'_>) {
        let s = &mut self.server;
        let digest = &mut self.digest;
        match input {
            Input::WallClock { now, unix_ms } => s.set_wall_clock(*now, *unix_ms),
            Input::Datagram {
                now,
                listener,
                from,
                payload,
            } => {
                let bytes = payload.bytes().unwrap_or_default();
                let (mut buf, range) = packet(&bytes);
                if let Some(f) = s.handle_datagram(*now, *listener, *from, &mut buf, range) {
                    digest.forward(&f);
                }
            }
            Input::StreamOpen {
                now,
                conn,
                listener,
                local,
                remote,
            } => s.handle_stream_open(*now, *conn, *listener, *local, *remote),
            Input::StreamData { now, conn, data } => {
                let bytes = data.bytes().unwrap_or_default();
                s.handle_stream_data(*now, *conn, &bytes, &mut |relay, peer, payload| {
                    digest.to_peer(relay, peer, payload.len());
                });
            }
            Input::StreamClosed { now, conn } => s.handle_stream_closed(*now, *conn),
            Input::RelayBound { now, relay, result } => s.handle_relay_bound(*now, *relay, *result),
            Input::RelayDatagram {
                now,
                relay,
                from,
                payload,
            } => {
                let bytes = payload.bytes().unwrap_or_default();
                let (mut buf, range) = packet(&bytes);
                if let Some(f) = s.handle_relay_datagram(*now, *relay, *from, &mut buf, range) {
                    digest.forward(&f);
                }
            }
            Input::Timeout { now } => s.handle_timeout(*now),
            Input::DeleteAllocation { now, id } => {
                s.delete_allocation(*now, *id);
            }
            Input::Drain { now } => s.start_drain(*now),
            Input::OneTimeAdded(o) => {
                let password = o.recover(&self.salt, self.secrets).unwrap_or_else(|| {
                    self.unrecovered.push(o.username.clone());
                    String::new()
                });
                s.credentials_mut()
                    .insert_one_time(&o.username, o.credential(password));
            }
            Input::OneTimeRemoved { username } => {
                s.credentials_mut().remove_one_time(username);
            }
            Input::OneTimeExpired { wall_unix_s } => {
                s.credentials_mut().expire_one_time(*wall_unix_s);
            }
            Input::ListenerAdded {
                id,
                transport,
                local,
                proxy_protocol,
                ..
            } => {
                // The recording added it successfully (it records only what the core took).
                let _ = s.add_listener(turnpike_core::config::ListenerConfig {
                    id: *id,
                    transport: *transport,
                    local: *local,
                    proxy_protocol: *proxy_protocol,
                });
            }
            Input::ListenerRemoved { now, id } => {
                s.remove_listener(*now, *id);
            }
            Input::ListenerReserved { listener, username } => {
                s.credentials_mut().reserve_listener(*listener, username);
            }
            Input::RestSecretAdded { fingerprint } => {
                let found = self.secrets.rest_secrets.iter().find(|x| {
                    trace::config::fingerprint(&self.salt, trace::SecretKind::RestSecret, "", x)
                        == *fingerprint
                });
                match found {
                    Some(x) => s.credentials_mut().add_rest_secret(x),
                    None => self
                        .unrecovered
                        .push("the issuance secret (`issuance_secret`)".into()),
                }
            }
            Input::LoopMessage { now, from, msg } => {
                s.handle_loop_message(*now, *from, msg.clone());
            }
            Input::Reload { now, reload } => {
                let realm = s.config().credentials.realm().to_owned();
                let (r, missing) = reload.to_reloadable(&realm, &self.salt, self.secrets);
                self.unrecovered.extend(missing);
                // As in the recording: an error there changes nothing here either.
                let _ = s.reload(*now, r);
            }
        }
    }
}

/// A buffer laid out like the runtime's: headroom, the bytes, tailroom.
fn packet(bytes: &[u8]) -> (Vec<u8>, core::ops::Range<usize>) {
    let mut buf = vec![0u8; HEADROOM + bytes.len() + TAILROOM];
    if let Some(dst) = buf.get_mut(HEADROOM..HEADROOM + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    (buf, HEADROOM..HEADROOM + bytes.len())
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
