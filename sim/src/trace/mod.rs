//! Traces recorded by the runtime (`trace_file` / `--record-trace`), read back:
//!
//! - [`replay::replay`]: feed the recorded inputs to a fresh core and check, checkpoint by
//!   checkpoint, that it produces the same outputs (`turnpike-sim replay TRACE [--config F]`);
//! - [`dump::dump`]: one JSON object per record (`turnpike-sim trace dump TRACE`);
//! - [`to_scenario::to_scenario`]: the clients' traffic as a scripted scenario
//!   (`turnpike-sim trace to-scenario TRACE`), and [`to_scenario::run_script`] to run one.
//!
//! A run rotated into several files (`FILE.N` ... `FILE.1`, `FILE`) is read as one, from
//! its first segment; see [`load`]. A node of several event loops recorded one such run
//! per loop (`FILE` for loop 0, `FILE.loop<i>` for loop `i`); [`load_node`] finds them all
//! from any one of them.

pub mod dump;
pub mod replay;
pub mod to_scenario;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use turnpike_core::node::{LoopMsg, NodePlace, PortWant, Want};
use turnpike_core::trace::{self, Header, Input, Payload, Record, ReplaySecrets, TraceError};

/// Why a trace could not be read, or a replay could not start.
#[derive(Debug)]
pub enum ReplayError {
    /// A file could not be read.
    Io(PathBuf, std::io::Error),
    /// A trace file is not readable (bad magic, version, corruption...).
    Trace(PathBuf, TraceError),
    /// The segments of a rotated run do not fit together, or one is missing.
    Segments(String),
    /// The configuration file with the secrets is not usable.
    Config(PathBuf, String),
    /// The secrets do not match the trace, or the core refused the recorded config.
    Setup(String),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ReplayError::Trace(p, e) => write!(f, "{}: {e}", p.display()),
            ReplayError::Segments(m) => f.write_str(m),
            ReplayError::Config(p, m) => write!(f, "{}: {m}", p.display()),
            ReplayError::Setup(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReplayError {}

/// The files of one recorded run, oldest first, read into memory.
pub struct Segments {
    /// (path, bytes) of each segment, segment 0 first.
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

/// Reads the trace at `path` and, when it is a later segment of a rotated run, the older
/// segments `path.1`, `path.2`... it continues (all must be present, back to segment 0).
pub fn load(path: &Path) -> Result<Segments, ReplayError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| ReplayError::Io(p.to_path_buf(), e));
    let last = read(path)?;
    let (h, _) = trace::open(&last).map_err(|e| ReplayError::Trace(path.to_path_buf(), e))?;
    let mut files = vec![(path.to_path_buf(), last)];
    for k in 1..=h.segment {
        let p = numbered(path, k);
        let bytes = read(&p).map_err(|_| {
            ReplayError::Segments(format!(
                "{} is segment {} of a rotated run; segment {} ({}) is missing (rotated away?): a replay needs the whole run from its first segment",
                path.display(),
                h.segment,
                h.segment - k,
                p.display()
            ))
        })?;
        let (hk, _) = trace::open(&bytes).map_err(|e| ReplayError::Trace(p.clone(), e))?;
        if hk.salt != h.salt || hk.segment != h.segment - k {
            return Err(ReplayError::Segments(format!(
                "{} is not segment {} of the run of {}",
                p.display(),
                h.segment - k,
                path.display()
            )));
        }
        files.push((p, bytes));
    }
    files.reverse();
    Ok(Segments { files })
}

/// The runs of every loop of a node, loop 0 first.
pub struct NodeFiles {
    /// The header of loop 0's first file read (its seed keys the other loops' nonces).
    pub first: Header,
    /// Each loop's segments, by loop index.
    pub loops: Vec<Segments>,
}

/// Reads the trace at `path`, the file of any loop of a node, and the files of the node's
/// other loops beside it (`FILE` for loop 0, `FILE.loop<i>` for loop `i`, each with its
/// rotated segments): every loop's file must be there and of the same run (same salt,
/// same loop count). A trace of one loop (every version 1 trace) is a node of one.
pub fn load_node(path: &Path) -> Result<NodeFiles, ReplayError> {
    let given = load(path)?;
    let h = last_header(&given, path)?;
    let place = h.place;
    let base = trace::loop_base(path, place.index).ok_or_else(|| {
        ReplayError::Segments(format!(
            "{} records loop {} of {}, so it should be named {}: cannot find the node's other files",
            path.display(),
            place.index,
            place.count,
            trace::loop_path(path, place.index).display()
        ))
    })?;
    let mut given = Some(given);
    let mut loops = Vec::with_capacity(usize::from(place.count));
    for i in 0..place.count {
        let segs = if i == place.index {
            given
                .take()
                .ok_or_else(|| ReplayError::Segments("loop read twice".into()))?
        } else {
            let p = trace::loop_path(&base, i);
            if !p.exists() {
                return Err(ReplayError::Segments(format!(
                    "{} is the trace of loop {} of a node of {} loops; loop {i}'s file {} is missing (every loop records its own file)",
                    path.display(),
                    place.index,
                    place.count,
                    p.display()
                )));
            }
            let segs = load(&p)?;
            let hi = last_header(&segs, &p)?;
            if hi.salt != h.salt
                || hi.place
                    != (NodePlace {
                        index: i,
                        count: place.count,
                    })
            {
                return Err(ReplayError::Segments(format!(
                    "{} is not loop {i} of the run of {} (a file of another run?)",
                    p.display(),
                    path.display()
                )));
            }
            segs
        };
        loops.push(segs);
    }
    let first = loops
        .first()
        .and_then(|s| s.files.first())
        .ok_or_else(|| ReplayError::Segments("no trace file".into()))?;
    let (first_header, _) =
        trace::open(&first.1).map_err(|e| ReplayError::Trace(first.0.clone(), e))?;
    Ok(NodeFiles {
        first: first_header,
        loops,
    })
}

/// The header of the newest segment of `segs`.
fn last_header(segs: &Segments, path: &Path) -> Result<Header, ReplayError> {
    let (p, bytes) = segs
        .files
        .last()
        .ok_or_else(|| ReplayError::Segments(format!("{}: no trace file", path.display())))?;
    trace::open(bytes)
        .map(|(h, _)| h)
        .map_err(|e| ReplayError::Trace(p.clone(), e))
}

/// `path.n`.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The secrets for a replay from a runtime configuration file: only the keys `users`
/// (table of name → password), `static_auth_secret` (a string or a list),
/// `issuance_secret` (the HTTP API's, a string; taken as one more REST secret, which is
/// what the relay makes of it) and `node_secret` (a string) are read; every other key is ignored. No file: no secrets.
pub fn secrets_from_config(path: Option<&Path>) -> Result<ReplaySecrets, ReplayError> {
    let Some(path) = path else {
        return Ok(ReplaySecrets::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| ReplayError::Io(path.into(), e))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ReplayError::Config(path.into(), e.message().to_string()))?;
    let bad = |m: &str| ReplayError::Config(path.into(), m.to_string());
    let mut s = ReplaySecrets::default();
    if let Some(users) = table.get("users") {
        let users = users
            .as_table()
            .ok_or_else(|| bad("`users` must be a table of name = \"password\""))?;
        for (name, pw) in users {
            let pw = pw
                .as_str()
                .ok_or_else(|| bad("`users`: every password must be a string"))?;
            s.users.push((name.clone(), pw.to_string()));
        }
    }
    match table.get("static_auth_secret") {
        None => {}
        Some(toml::Value::String(x)) => s.rest_secrets.push(x.as_bytes().to_vec()),
        Some(toml::Value::Array(list)) => {
            for x in list {
                let x = x
                    .as_str()
                    .ok_or_else(|| bad("`static_auth_secret`: a string or a list of strings"))?;
                s.rest_secrets.push(x.as_bytes().to_vec());
            }
        }
        Some(_) => return Err(bad("`static_auth_secret`: a string or a list of strings")),
    }
    match table.get("issuance_secret") {
        None => {}
        Some(toml::Value::String(x)) => s.rest_secrets.push(x.as_bytes().to_vec()),
        Some(_) => return Err(bad("`issuance_secret`: a string")),
    }
    match table.get("node_secret") {
        None => {}
        Some(toml::Value::String(x)) => {
            s.node_secret = Some(turnpike_core::secret::NodeSecret::from_passphrase(
                x.as_bytes(),
            ));
        }
        Some(_) => return Err(bad("`node_secret`: a string")),
    }
    Ok(s)
}

/// The header as JSON (no secrets: the config holds fingerprints only).
pub fn header_json(h: &Header) -> Value {
    let c = &h.config;
    json!({
        "header": {
            "format_version": h.version,
            "producer": h.producer,
            "segment": h.segment,
            "loop": {"index": h.place.index, "count": h.place.count},
            "seed": hex(&h.seed),
            "start_ns": h.start.as_nanos(),
            "start_unix_ms": h.start_unix_ms,
            "payloads": h.payloads,
            "config": {
                "realm": c.realm,
                "users": c.users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
                "rest_secrets": c.rest_secrets.len(),
                "listeners": c.listeners.iter().map(|l| json!({
                    "id": l.id.0, "transport": l.transport.as_str(),
                    "local": l.local.to_string(), "proxy_protocol": l.proxy_protocol,
                })).collect::<Vec<_>>(),
                "relay_v4": c.relay_v4.map(|(b, a)| json!({"bind": b.to_string(), "advertised": a.to_string()})),
                "relay_v6": c.relay_v6.map(|(b, a)| json!({"bind": b.to_string(), "advertised": a.to_string()})),
                "relay_ports": [c.relay_ports.0, c.relay_ports.1],
                "allow_loopback": c.allow_loopback,
                "proxy_protocol_trusted": c.proxy_protocol_trusted.iter().map(|n| format!("{}/{}", n.addr(), n.prefix())).collect::<Vec<_>>(),
                "user_quota": c.user_quota,
                "total_quota": c.total_quota,
                "max_lifetime_s": c.max_lifetime.as_secs(),
                "node": {"index": c.node.index, "count": c.node.count},
            },
        }
    })
}

/// One record as JSON: `{"i": index, "kind": ..., fields...}`.
pub fn record_json(index: u64, r: &Record<'_>) -> Value {
    let mut v = match r {
        Record::Input(i) => input_json(i),
        Record::Outputs {
            count,
            drained,
            digest,
        } => {
            json!({"kind": "outputs", "count": count, "drained": drained, "digest": format!("{digest:016x}")})
        }
        Record::Panic { message } => json!({"kind": "panic", "message": message}),
        Record::End { reason } => json!({"kind": "end", "reason": reason}),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("i".into(), json!(index));
    }
    v
}

/// One input as JSON.
pub fn input_json(i: &Input<'_>) -> Value {
    let now = i.now().map(|t| t.as_nanos());
    let mut v = match i {
        Input::WallClock { unix_ms, .. } => json!({"unix_ms": unix_ms}),
        Input::Datagram {
            listener,
            from,
            payload,
            ..
        } => {
            json!({"listener": listener.0, "from": from.to_string(), "payload": payload_json(payload)})
        }
        Input::StreamOpen {
            conn,
            listener,
            local,
            remote,
            ..
        } => {
            json!({"conn": conn.0, "listener": listener.0, "local": local.to_string(), "remote": remote.to_string()})
        }
        Input::StreamData { conn, data, .. } => {
            json!({"conn": conn.0, "payload": payload_json(data)})
        }
        Input::StreamClosed { conn, .. } => json!({"conn": conn.0}),
        Input::RelayBound { relay, result, .. } => {
            json!({"relay": relay.0, "result": match result {
                Ok(()) => "ok",
                Err(turnpike_core::server::BindError::AddrInUse) => "addr_in_use",
                Err(turnpike_core::server::BindError::Other) => "other",
            }})
        }
        Input::RelayDatagram {
            relay,
            from,
            payload,
            ..
        } => json!({"relay": relay.0, "from": from.to_string(), "payload": payload_json(payload)}),
        Input::Timeout { .. } => json!({}),
        Input::DeleteAllocation { id, .. } => json!({"allocation": id.0}),
        Input::Drain { .. } => json!({}),
        Input::OneTimeAdded(o) => {
            json!({"username": o.username, "expires_unix_s": o.expires_unix_s, "listener": o.listener})
        }
        Input::OneTimeRemoved { username } => json!({"username": username}),
        Input::OneTimeExpired { wall_unix_s } => json!({"wall_unix_s": wall_unix_s}),
        Input::ListenerAdded {
            id,
            transport,
            local,
            proxy_protocol,
            ..
        } => {
            json!({"listener": id.0, "transport": transport.as_str(), "local": local.to_string(), "proxy_protocol": proxy_protocol})
        }
        Input::ListenerRemoved { id, .. } => json!({"listener": id.0}),
        Input::ListenerReserved { listener, username } => {
            json!({"listener": listener.0, "username": username})
        }
        Input::RestSecretAdded { .. } => json!({}),
        Input::LoopMessage { from, msg, .. } => json!({"from": from.0, "msg": loop_msg_json(msg)}),
        Input::Reload { reload, .. } => json!({
            "users": reload.users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
            "rest_secrets": reload.rest_secrets.len(),
            "peer_allow": reload.peer_allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "peer_deny": reload.peer_deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "allow_loopback": reload.allow_loopback,
            "user_quota": reload.user_quota,
            "total_quota": reload.total_quota,
            "max_bps": reload.max_bps,
            "total_max_bps": reload.total_max_bps,
        }),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), json!(i.kind()));
        if let Some(n) = now {
            o.insert("now_ns".into(), json!(n));
        }
    }
    v
}

/// A loop message as JSON: `{"type": "redeem_token", fields...}`.
pub fn loop_msg_json(m: &LoopMsg) -> Value {
    match m {
        LoopMsg::RedeemToken { req, token } => {
            json!({"type": "redeem_token", "req": req, "token": hex(token)})
        }
        LoopMsg::TokenRedeemed { req, port } => {
            json!({"type": "token_redeemed", "req": req, "port": port})
        }
        LoopMsg::UserAcquire { req, username } => {
            json!({"type": "user_acquire", "req": req, "username": username})
        }
        LoopMsg::UserGranted {
            req,
            granted,
            username,
        } => {
            json!({"type": "user_granted", "req": req, "granted": granted, "username": username})
        }
        LoopMsg::UserRelease { username } => json!({"type": "user_release", "username": username}),
        LoopMsg::Borrow { req, want } => {
            let want = match want {
                Want::Credits => json!({"credits": true}),
                Want::Ports { family, kind } => json!({"family": family, "ports": match kind {
                    PortWant::Any => "any",
                    PortWant::Even => "even",
                    PortWant::EvenPair => "even_pair",
                }}),
            };
            json!({"type": "borrow", "req": req, "want": want})
        }
        LoopMsg::Lend {
            req,
            credits,
            family,
            ports,
        } => {
            json!({"type": "lend", "req": req, "credits": credits, "family": family, "ports": ports})
        }
        LoopMsg::StreamAcquire { req, source } => {
            json!({"type": "stream_acquire", "req": req, "source": source.to_string()})
        }
        LoopMsg::StreamGranted {
            req,
            source,
            granted,
        } => {
            json!({"type": "stream_granted", "req": req, "source": source.to_string(), "granted": granted})
        }
        LoopMsg::StreamRelease { source } => {
            json!({"type": "stream_release", "source": source.to_string()})
        }
        LoopMsg::QuotaDebt { credits, hops } => {
            json!({"type": "quota_debt", "credits": credits, "hops": hops})
        }
    }
}

fn payload_json(p: &Payload<'_>) -> Value {
    match p {
        Payload::Full(b) => json!({"len": b.len(), "hex": hex(b)}),
        Payload::Masked { len, crc, .. } => json!({
            "len": len,
            "crc32": format!("{crc:08x}"),
            "masked": true,
            "hex": p.bytes().map(|b| hex(&b)),
        }),
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Parses lower- or upper-case hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A socket address from a JSON-ish string.
pub(crate) fn addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}
