//! `turnpike-sim trace to-scenario TRACE`: a trace cut down to a *scripted scenario*, a
//! TOML file that keeps what the clients and peers sent, when, so that a field bug becomes
//! a permanent regression test under `scenarios/`.
//!
//! The simulator's world scenarios describe client *behaviour*; a field trace is a list of
//! *inputs*, so it gets its own small format (`kind = "trace-script"`), run by
//! [`run_script`]:
//!
//! ```toml
//! kind = "trace-script"
//! name = "trace-relay-1"
//! description = "..."
//! header = "54504b..."        # the trace header (seed, start, config without secrets)
//! bind_results = ["ok", "addr_in_use", "ok"]   # answers to BindRelay, in order
//!
//! [[script]]
//! at_ns = 1200000             # nanoseconds after the trace's start
//! input = "datagram"          # datagram | stream_open | stream_data | stream_closed |
//!                             # relay_datagram | wall_clock | delete_allocation
//! listener = 0
//! from = "127.0.0.1:50000"
//! hex = "000100002112a442..."
//! ```
//!
//! An optional `[expect]` table pins what a run must do: `inputs`, `answers`,
//! `allocations_created`, `outputs` (counts) and `digest` (hex, the running digest of
//! every output, as `turnpike-sim run` prints it). A run that differs fails.
//!
//! `turnpike-sim run FILE` and `turnpike-sim sweep DIR` recognise a script by its `kind`
//! and run it with [`run_script_file`]; the relay's secrets are read from a sibling file
//! `FILE-STEM.secrets.toml` (same keys as the `--config` file of a replay: `users`,
//! `static_auth_secret`; every other key ignored), so the script itself stays free of them.
//! Secrets files are never taken for scenarios.
//!
//! What the driver did on its own is left out and redone by the runner: timeouts (fired
//! whenever the core's `poll_timeout` falls before the next input) and binds (each
//! `BindRelay` answered with the next of `bind_results`, then `ok`). Relayed media that the
//! trace masked is replayed as zeros, which the core does not look at. A script runs one
//! core: cut from one loop of a node of several, it leaves out the messages that loop
//! received from the others ([`Input::LoopMessage`]), so what depended on them may differ.

use super::{addr, hex, load, unhex, ReplayError};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use turnpike_core::event::Output;
use turnpike_core::server::BindError;
use turnpike_core::trace::{self, Input, OutputDigest, Record, ReplaySecrets};
use turnpike_core::{ConnId, Event, Instant, ListenerId, RelayId, Server, HEADROOM, TAILROOM};

/// The scripted scenario of the trace at `trace_path` (with its older segments), named
/// `name`.
pub fn to_scenario(trace_path: &Path, name: &str) -> Result<String, ReplayError> {
    let segs = load(trace_path)?;
    let mut out = String::new();
    let mut header_hex = String::new();
    let mut binds = Vec::new();
    let mut script = String::new();
    let mut start = 0u64;
    for (i, (path, bytes)) in segs.files.iter().enumerate() {
        let (h, reader) = trace::open(bytes).map_err(|e| ReplayError::Trace(path.clone(), e))?;
        if i == 0 {
            let mut hb = Vec::new();
            trace::encode_header(&h, &mut hb);
            header_hex = hex(&hb);
            start = h.start.as_nanos();
        }
        for rec in reader {
            let Ok(Record::Input(input)) = rec else {
                continue;
            };
            let at = input.now().map(|t| t.as_nanos().saturating_sub(start));
            let entry = match &input {
                Input::Datagram {
                    listener,
                    from,
                    payload,
                    ..
                } => format!(
                    "input = \"datagram\"\nlistener = {}\nfrom = \"{from}\"\nhex = \"{}\"\n",
                    listener.0,
                    hex(&payload.bytes().unwrap_or_default())
                ),
                Input::StreamOpen {
                    conn,
                    listener,
                    local,
                    remote,
                    ..
                } => format!(
                    "input = \"stream_open\"\nconn = {}\nlistener = {}\nlocal = \"{local}\"\nremote = \"{remote}\"\n",
                    conn.0, listener.0
                ),
                Input::StreamData { conn, data, .. } => format!(
                    "input = \"stream_data\"\nconn = {}\nhex = \"{}\"\n",
                    conn.0,
                    hex(&data.bytes().unwrap_or_default())
                ),
                Input::StreamClosed { conn, .. } => {
                    format!("input = \"stream_closed\"\nconn = {}\n", conn.0)
                }
                Input::RelayDatagram {
                    relay,
                    from,
                    payload,
                    ..
                } => format!(
                    "input = \"relay_datagram\"\nrelay = {}\nfrom = \"{from}\"\nhex = \"{}\"\n",
                    relay.0,
                    hex(&payload.bytes().unwrap_or_default())
                ),
                Input::WallClock { unix_ms, .. } => {
                    format!("input = \"wall_clock\"\nunix_ms = {unix_ms}\n")
                }
                Input::DeleteAllocation { id, .. } => {
                    format!("input = \"delete_allocation\"\nallocation = {}\n", id.0)
                }
                Input::Drain { .. } => "input = \"drain\"\n".to_string(),
                Input::RelayBound { result, .. } => {
                    binds.push(match result {
                        Ok(()) => "ok",
                        Err(BindError::AddrInUse) => "addr_in_use",
                        Err(BindError::Other) => "other",
                    });
                    continue;
                }
                Input::Timeout { .. }
                | Input::ListenerAdded { .. }
                | Input::ListenerRemoved { .. }
                | Input::ListenerReserved { .. }
                | Input::RestSecretAdded { .. }
                | Input::OneTimeAdded(_)
                | Input::OneTimeRemoved { .. }
                | Input::OneTimeExpired { .. }
                | Input::LoopMessage { .. }
                | Input::Reload { .. } => continue,
            };
            let _ = write!(script, "\n[[script]]\nat_ns = {}\n{entry}", at.unwrap_or(0));
        }
    }
    let _ = writeln!(
        out,
        "# A field trace cut down to its clients' and peers' traffic (a scripted scenario).\n\
         # Run it: turnpike-sim run FILE (the relay's secrets in FILE-STEM.secrets.toml beside\n\
         # it: `users`, `static_auth_secret`). Timeouts and relay binds are redone by the runner."
    );
    let _ = writeln!(out, "kind = \"trace-script\"");
    let _ = writeln!(out, "name = {}", toml_str(name));
    let _ = writeln!(
        out,
        "description = {}",
        toml_str(&format!("from trace {}", trace_path.display()))
    );
    let _ = writeln!(out, "header = \"{header_hex}\"");
    let binds: Vec<String> = binds.iter().map(|b| format!("\"{b}\"")).collect();
    let _ = writeln!(out, "bind_results = [{}]", binds.join(", "));
    out.push_str(&script);
    Ok(out)
}

/// What running a scripted scenario did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptReport {
    /// Script entries fed.
    pub inputs: u64,
    /// Timeouts fired by the runner.
    pub timeouts: u64,
    /// Outputs drained.
    pub outputs: u64,
    /// Allocations created.
    pub allocations_created: u64,
    /// Answers sent to clients (Transmit and StreamWrite).
    pub answers: u64,
    /// The running digest of every output drained, in order.
    pub digest: u64,
}

impl std::fmt::Display for ScriptReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} inputs, {} timeouts, {} outputs, {} answers, {} allocations created, digest {:016x}",
            self.inputs,
            self.timeouts,
            self.outputs,
            self.answers,
            self.allocations_created,
            self.digest
        )
    }
}

/// True when `text` is a scripted scenario (`kind = "trace-script"`), not a world scenario.
pub fn is_trace_script(text: &str) -> bool {
    text.parse::<toml::Table>()
        .ok()
        .and_then(|t| {
            t.get("kind")
                .and_then(|k| k.as_str())
                .map(|k| k == "trace-script")
        })
        .unwrap_or(false)
}

/// True when the file at `path` is a scripted scenario (unreadable files are not).
pub fn is_trace_script_file(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| is_trace_script(&t))
}

/// The secrets file of the script at `path`: `STEM.secrets.toml` beside it.
pub fn secrets_path(path: &Path) -> std::path::PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.secrets.toml"))
}

/// Runs the script at `path` with the secrets of its sibling secrets file (none if there
/// is no such file) and checks its `[expect]` table. The error says what went wrong and
/// how to reproduce it.
pub fn run_script_file(path: &Path) -> Result<ScriptReport, String> {
    let reproduce = format!("reproduce: turnpike-sim run {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sp = secrets_path(path);
    let secrets = super::secrets_from_config(sp.exists().then_some(sp.as_path()))
        .map_err(|e| e.to_string())?;
    let rep =
        run_script(&text, &secrets).map_err(|e| format!("{}: {e}\n{reproduce}", path.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    if let Some(expect) = doc.get("expect") {
        check_expect(expect, &rep)
            .map_err(|e| format!("{}: diverged: {e} ({rep})\n{reproduce}", path.display()))?;
    }
    Ok(rep)
}

/// The `[expect]` table for what `rep` did (counts only; add `digest` by hand to pin the
/// exact outputs).
pub fn expect_table(rep: &ScriptReport) -> String {
    format!(
        "\n[expect]\ninputs = {}\nallocations_created = {}\nanswers = {}\n",
        rep.inputs, rep.allocations_created, rep.answers
    )
}

/// Compares a run with the script's `[expect]` table.
fn check_expect(expect: &toml::Value, rep: &ScriptReport) -> Result<(), String> {
    let t = expect.as_table().ok_or("`expect` must be a table")?;
    for (k, v) in t {
        let got = match k.as_str() {
            "inputs" => rep.inputs,
            "answers" => rep.answers,
            "allocations_created" => rep.allocations_created,
            "outputs" => rep.outputs,
            "digest" => {
                let want = v
                    .as_str()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or("`expect.digest` must be a hex string")?;
                if want != rep.digest {
                    return Err(format!("digest {:016x}, expected {want:016x}", rep.digest));
                }
                continue;
            }
            other => return Err(format!("unknown expectation `{other}`")),
        };
        let want = v
            .as_integer()
            .and_then(|x| u64::try_from(x).ok())
            .ok_or_else(|| format!("`expect.{k}` must be a count"))?;
        if want != got {
            return Err(format!("{k} = {got}, expected {want}"));
        }
    }
    Ok(())
}

/// Runs a scripted scenario (see the module documentation) with `secrets`. Errors name the
/// entry at fault, or the one during which the core panicked.
pub fn run_script(text: &str, secrets: &ReplaySecrets) -> Result<ScriptReport, String> {
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    if doc.get("kind").and_then(|k| k.as_str()) != Some("trace-script") {
        return Err("not a trace script (kind = \"trace-script\" expected)".into());
    }
    let header_bytes = doc
        .get("header")
        .and_then(|h| h.as_str())
        .and_then(unhex)
        .ok_or("`header` missing or not hex")?;
    let (h, _) = trace::open(&header_bytes).map_err(|e| e.to_string())?;
    let config = h
        .config
        .to_config(&h.salt, secrets)
        .map_err(|e| e.to_string())?;
    let mut binds: std::collections::VecDeque<Result<(), BindError>> = doc
        .get("bind_results")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .map(|v| match v.as_str() {
                    Some("addr_in_use") => Err(BindError::AddrInUse),
                    Some("other") => Err(BindError::Other),
                    _ => Ok(()),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut server = Server::new(config, h.seed, h.start).map_err(|e| e.to_string())?;
    let mut rep = ScriptReport::default();
    let mut digest = OutputDigest::new();
    let empty = Vec::new();
    let script = doc
        .get("script")
        .and_then(|s| s.as_array())
        .unwrap_or(&empty);
    let start = h.start.as_nanos();
    for (i, entry) in script.iter().enumerate() {
        let bad = |what: &str| format!("script entry {i}: {what}");
        let e = entry.as_table().ok_or_else(|| bad("not a table"))?;
        let at = e
            .get("at_ns")
            .and_then(|v| v.as_integer())
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| bad("`at_ns` missing"))?;
        let now = Instant::from_nanos(start.saturating_add(at));
        let int = |k: &str| {
            e.get(k)
                .and_then(|v| v.as_integer())
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| bad(&format!("`{k}` missing")))
        };
        let sock = |k: &str| {
            e.get(k)
                .and_then(|v| v.as_str())
                .and_then(addr)
                .ok_or_else(|| bad(&format!("`{k}` missing or not an address")))
        };
        let bytes = || {
            e.get("hex")
                .and_then(|v| v.as_str())
                .and_then(unhex)
                .ok_or_else(|| bad("`hex` missing or not hex"))
        };
        let kind = e.get("input").and_then(|v| v.as_str()).unwrap_or("");
        // Whatever the core had due before this input.
        let mut guard = 0;
        while let Some(t) = server.poll_timeout() {
            if t > now || guard > 1_000_000 {
                break;
            }
            guard += 1;
            server.handle_timeout(t);
            rep.timeouts += 1;
            drain(&mut server, t, &mut binds, &mut rep, &mut digest);
        }
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            match kind {
                "datagram" => {
                    let data = bytes()?;
                    let (mut buf, r) = packet(&data);
                    let listener = ListenerId(u32::try_from(int("listener")?).unwrap_or(u32::MAX));
                    server.handle_datagram(now, listener, sock("from")?, &mut buf, r);
                }
                "stream_open" => server.handle_stream_open(
                    now,
                    ConnId(int("conn")?),
                    ListenerId(u32::try_from(int("listener")?).unwrap_or(u32::MAX)),
                    sock("local")?,
                    sock("remote")?,
                ),
                "stream_data" => server.handle_stream_data(
                    now,
                    ConnId(int("conn")?),
                    &bytes()?,
                    &mut |_, _, _| {},
                ),
                "stream_closed" => server.handle_stream_closed(now, ConnId(int("conn")?)),
                "relay_datagram" => {
                    let data = bytes()?;
                    let (mut buf, r) = packet(&data);
                    let relay = RelayId(u32::try_from(int("relay")?).unwrap_or(u32::MAX));
                    server.handle_relay_datagram(now, relay, sock("from")?, &mut buf, r);
                }
                "wall_clock" => server.set_wall_clock(now, int("unix_ms")?),
                "delete_allocation" => {
                    server.delete_allocation(now, turnpike_core::AllocationId(int("allocation")?));
                }
                "drain" => server.start_drain(now),
                other => return Err(bad(&format!("unknown input `{other}`"))),
            }
            Ok(())
        }));
        match result {
            Ok(r) => r?,
            Err(_) => return Err(format!("the core panicked at script entry {i} ({kind})")),
        }
        rep.inputs += 1;
        drain(&mut server, now, &mut binds, &mut rep, &mut digest);
    }
    rep.digest = digest.value();
    Ok(rep)
}

/// Drains outputs, answering binds as the script says.
fn drain(
    server: &mut Server,
    now: Instant,
    binds: &mut std::collections::VecDeque<Result<(), BindError>>,
    rep: &mut ScriptReport,
    digest: &mut OutputDigest,
) {
    while let Some(out) = server.poll_output() {
        rep.outputs += 1;
        digest.output(&out);
        match out {
            Output::BindRelay { relay, .. } => {
                let r = binds.pop_front().unwrap_or(Ok(()));
                server.handle_relay_bound(now, relay, r);
            }
            Output::Transmit { .. } | Output::StreamWrite { .. } => rep.answers += 1,
            Output::Event(Event::AllocationCreated { .. }) => rep.allocations_created += 1,
            _ => {}
        }
    }
}

fn packet(bytes: &[u8]) -> (Vec<u8>, core::ops::Range<usize>) {
    let mut buf = vec![0u8; HEADROOM + bytes.len() + TAILROOM];
    if let Some(dst) = buf.get_mut(HEADROOM..HEADROOM + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    (buf, HEADROOM..HEADROOM + bytes.len())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
