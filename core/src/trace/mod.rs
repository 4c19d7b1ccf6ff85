//! The trace format: every input a driver fed a [`crate::Server`], so that a run seen in
//! production replays exactly in the simulator. Pure code: encode to and decode from byte
//! slices; the runtime writes files, the simulator reads them.
//!
//! ## Layout (format version 3, all integers little-endian)
//!
//! ```text
//! file    = header record*
//! header  = "TPKTRACE" version:u16 len:u32 body[len] crc:u32      (crc = CRC-32 of body)
//! body    = seed[32] start_ns:u64 start_unix_ms:u64 salt[16] producer:str payloads:u8
//!           segment:u32 loop_index:u16 loop_count:u16 config
//! record  = len:u32 body[len] crc:u32                              (len <= MAX_RECORD_LEN)
//! ```
//!
//! The header holds the core's seed, the instant the core was created at, and a
//! [`ConfigDescription`]: every field of the core's `Config`, with secrets replaced by
//! keyed fingerprints (see [`config`] for how a replay authenticates), `Config::node`
//! included (last, as index:u16 count:u16). `segment` numbers the files of one run when
//! the recorder rotates them (0 for the first); every segment repeats the header, and
//! `salt` identifies the run.
//!
//! **A node of several loops** records one file per event loop, each self-contained: its
//! core's seed, config and every input it was fed, the [`LoopMsg`]s it received from
//! other loops included ([`Input::LoopMessage`], record kind 17: `now_ns:u64 from:u16
//! len:u32 msg[len]`, the message in its [`LoopMsg::encode`] form, refused on read when it
//! does not decode as exactly one message); the messages it sent are outputs
//! (`Output::ToLoop`), checked through the digest like any other. `loop_index` and
//! `loop_count` say which loop of how many the file records (the runtime's place, which
//! names the file; `Config::node` is what the core was told, the same once the runtime
//! wires loop messages). Loop 0 writes `FILE`, loop `i` writes `FILE.loop<i>`
//! ([`loop_path`]); rotated segments append `.N` to either (`FILE.loop1.2`). The files of
//! one node share one `salt`. A loop `i > 0` counts allocation ids from
//! [`crate::node::allocation_id_base`]`(i)` (the driver sets it after `Server::new`; a
//! replay does the same). Every loop is given the node's secret ([`crate::secret`]),
//! recorded as a fingerprint only (format 3, last in the config: `0` or `1 fp[16]`); a
//! replay takes it from the operator's file like the passwords, and refuses, saying
//! so, when it is missing (nonces, relay ports and reservation tokens would differ).
//!
//! **A drain** is an input ([`Input::Drain`], record kind 19: `now_ns:u64`), added to
//! format 3 without a version change (older readers refuse kind 19 as unknown); the
//! configuration's alternate servers follow the node secret, last and only when there are
//! some (`count` then `listener:u32 addr opt_str(domain)` each), so a file without them is
//! written as before.
//!
//! **Version 2** has no node secret: its cores drew their secrets from the seed, and a
//! loop `i > 0` signed nonces with the key of loop 0's seed (recorded as a nonce-key
//! fingerprint: a replay derives it from loop 0's header and checks it). It is still read
//! and replays as before.
//!
//! **Version 1** (a node of one loop) is still read: its header has no `loop_index`,
//! `loop_count` nor `Config::node`, which read as loop 0 of 1 ([`NodePlace::SOLE`]); its
//! records are those of version 2 but [`Input::LoopMessage`].
//!
//! A record is one [`Input`] (written *before* the core sees it, so the input that made
//! the core panic is in the trace), an [`Record::Outputs`] checkpoint, or a note. The
//! checkpoint carries how many outputs the driver drained with `poll_output` since the
//! previous checkpoint, whether the queue was then empty, and the running
//! [`OutputDigest`] (FNV-1a 64, defined in [`digest`]) of everything the core produced so
//! far, `Forward`s and stream data to peers included. The recorder writes one at the end of
//! each drain, and before any input that arrives while outputs were drained (the runtime
//! answers `BindRelay` with `handle_relay_bound` in the middle of a drain): a replay that
//! drains exactly `count` outputs at each checkpoint reproduces the interleaving exactly.
//!
//! Payloads are recorded in full, or with relayed media zeroed ([`mask`]) as a length, a
//! CRC-32 of the original and the bytes the core interprets. STUN control messages are
//! always kept: they carry no passwords, only usernames and HMACs.
//!
//! **Torn tails.** A crash can cut the file mid-record. [`TraceReader`] stops at a record
//! that runs past the end of the file, or whose CRC fails when it is the last one, and
//! reports it in [`TraceReader::tail`]; a CRC failure followed by more data is corruption,
//! an error. **Versions.** A reader refuses a format version outside
//! [`OLDEST_READABLE_VERSION`]`..=`[`FORMAT_VERSION`] with [`TraceError::Version`]: "trace
//! format version N not supported (this build reads 1 to 3)".

pub mod config;
pub mod digest;
pub mod mask;

mod codec;
pub mod reload;

pub use config::{ConfigDescription, Fingerprint, OneTimeDescription, ReplaySecrets, SecretKind};
pub use digest::OutputDigest;

use crate::ids::{AllocationId, ConnId, ListenerId, RelayId};
use crate::node::{LoopId, LoopMsg, NodePlace, MAX_LOOPS};
use crate::server::BindError;
use crate::time::Instant;
use codec::{Get, Put};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The first bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"TPKTRACE";
/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// The longest record body accepted (a 64 KiB stream read plus its framing fits easily).
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// Why a trace cannot be read or replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceError {
    /// The bytes do not start with [`MAGIC`].
    NotATrace,
    /// A format version this build does not read.
    Version {
        /// The file's version.
        found: u16,
        /// The newest this build reads (it reads from [`OLDEST_READABLE_VERSION`] up).
        supported: u16,
    },
    /// A field does not decode.
    Malformed(String),
    /// A record fails its CRC (or its length is impossible) with more data after it.
    Corrupt {
        /// Index of the record (0 = first after the header).
        record: u64,
        /// Byte offset of the record in the file.
        offset: usize,
    },
    /// The secrets supplied for a replay do not match the trace's fingerprints.
    Secrets(String),
}

impl core::fmt::Display for TraceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TraceError::NotATrace => f.write_str("not a turnpike trace (bad magic)"),
            TraceError::Version { found, supported } => write!(
                f,
                "trace format version {found} not supported (this build reads {OLDEST_READABLE_VERSION} to {supported})"
            ),
            TraceError::Malformed(m) => write!(f, "malformed trace: {m}"),
            TraceError::Corrupt { record, offset } => write!(
                f,
                "trace corrupt at record {record} (byte {offset}): CRC mismatch or impossible length"
            ),
            TraceError::Secrets(m) => write!(f, "cannot authenticate the replay: {m}"),
        }
    }
}

impl std::error::Error for TraceError {}

/// The header of a trace file.
#[derive(Clone, Debug)]
pub struct Header {
    /// The core's seed.
    pub seed: [u8; 32],
    /// The instant `Server::new` was called with.
    pub start: Instant,
    /// The wall clock when recording started (for people; the core gets it from records).
    pub start_unix_ms: u64,
    /// Key of the secrets' fingerprints; also identifies the run across segments.
    pub salt: [u8; 16],
    /// What wrote it, e.g. `turnpike 0.1.0`.
    pub producer: String,
    /// Relayed payloads recorded in full (`trace_payloads = true`).
    pub payloads: bool,
    /// Number of this file among the run's rotated files (0 = the first).
    pub segment: u32,
    /// The event loop this file records, of how many the node ran (version 1: loop 0 of
    /// 1). It names the file ([`loop_path`]); the core's own view is `config.node`.
    pub place: NodePlace,
    /// The core's configuration, secrets as fingerprints.
    pub config: ConfigDescription,
    /// The format version the file was read in; [`encode_header`] always writes
    /// [`FORMAT_VERSION`].
    pub version: u16,
}

/// The file of loop `index` of a node whose loop 0 records to `base`: `base` itself for
/// loop 0, `base.loop<index>` for the others.
pub fn loop_path(base: &Path, index: u16) -> PathBuf {
    if index == 0 {
        return base.to_path_buf();
    }
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".loop{index}"));
    PathBuf::from(s)
}

/// Loop 0's file, given the file `path` of loop `index` ([`loop_path`] undone); None if
/// `path` is not named as loop `index`'s file.
pub fn loop_base(path: &Path, index: u16) -> Option<PathBuf> {
    if index == 0 {
        return Some(path.to_path_buf());
    }
    let s = path.to_str()?;
    let base = s.strip_suffix(&format!(".loop{index}"))?;
    Some(PathBuf::from(base))
}

/// Bytes an input carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Every byte, as received.
    Full(&'a [u8]),
    /// Relayed media left out (see [`mask`]): the length, the CRC-32 of the original bytes,
    /// and the segment encoding of the kept bytes (zero runs for what was left out).
    Masked {
        /// Length of the original.
        len: u32,
        /// CRC-32 of the original.
        crc: u32,
        /// Segment encoding ([`mask::Segments`]).
        segments: &'a [u8],
    },
}

impl Payload<'_> {
    /// Length of the original bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Full(b) => b.len(),
            Payload::Masked { len, .. } => *len as usize,
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes to replay: the original, or with relayed media as zeros. None if the
    /// segment encoding is malformed or disagrees with the length.
    pub fn bytes(&self) -> Option<Cow<'_, [u8]>> {
        match self {
            Payload::Full(b) => Some(Cow::Borrowed(b)),
            Payload::Masked { len, segments, .. } => {
                let v = mask::expand(segments, *len as usize)?;
                (v.len() == *len as usize).then_some(Cow::Owned(v))
            }
        }
    }

    /// A client's datagram: in full, or masked (ChannelData payload, Send DATA zeroed).
    /// `scratch` holds the segments.
    pub fn client_datagram<'b>(
        data: &'b [u8],
        full: bool,
        scratch: &'b mut Vec<u8>,
    ) -> Payload<'b> {
        if full {
            return Payload::Full(data);
        }
        scratch.clear();
        mask::Masker::datagram().mask(data, &mut mask::Segments::new(scratch));
        Payload::masked(data, scratch)
    }

    /// A peer's datagram: in full, or only its length and CRC.
    pub fn peer_datagram<'b>(data: &'b [u8], full: bool, scratch: &'b mut Vec<u8>) -> Payload<'b> {
        if full {
            return Payload::Full(data);
        }
        scratch.clear();
        mask::mask_all(data.len(), &mut mask::Segments::new(scratch));
        Payload::masked(data, scratch)
    }

    /// Bytes read from a stream: in full, or masked by the stream's own `masker` (which
    /// carries the frame state across reads).
    pub fn stream_data<'b>(
        data: &'b [u8],
        masker: Option<&mut mask::Masker>,
        scratch: &'b mut Vec<u8>,
    ) -> Payload<'b> {
        let Some(m) = masker else {
            return Payload::Full(data);
        };
        scratch.clear();
        m.mask(data, &mut mask::Segments::new(scratch));
        Payload::masked(data, scratch)
    }

    fn masked<'b>(data: &'b [u8], segments: &'b [u8]) -> Payload<'b> {
        // Nothing was left out (a control message): keep it simple, in full. That is one
        // literal run of every byte: its kind and its length say so. (The size of the
        // encoding alone does not: a 4-byte literal and a 5-byte zero run take 5 + 9 bytes
        // too, and a 9-byte ChannelData datagram was recorded in the clear.)
        let one_literal_run = segments.first() == Some(&0)
            && segments.get(1..5) == Some(&(data.len() as u32).to_le_bytes()[..])
            && segments.len() == 5 + data.len();
        if one_literal_run {
            return Payload::Full(data);
        }
        Payload::Masked {
            len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            crc: crc32fast::hash(data),
            segments,
        }
    }
}

/// One input a driver fed the core, with the instant it passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// `set_wall_clock(now, unix_ms)`.
    WallClock {
        /// Monotonic instant.
        now: Instant,
        /// Wall clock, ms since 1970.
        unix_ms: u64,
    },
    /// `handle_datagram(now, listener, from, ..)`.
    Datagram {
        /// Instant.
        now: Instant,
        /// Listener.
        listener: ListenerId,
        /// Client.
        from: SocketAddr,
        /// The datagram.
        payload: Payload<'a>,
    },
    /// `handle_stream_open(now, conn, listener, local, remote)`.
    StreamOpen {
        /// Instant.
        now: Instant,
        /// Stream.
        conn: ConnId,
        /// Listener.
        listener: ListenerId,
        /// Local address.
        local: SocketAddr,
        /// Remote address.
        remote: SocketAddr,
    },
    /// `handle_stream_data(now, conn, data, ..)`.
    StreamData {
        /// Instant.
        now: Instant,
        /// Stream.
        conn: ConnId,
        /// The bytes read.
        data: Payload<'a>,
    },
    /// `handle_stream_closed(now, conn)`.
    StreamClosed {
        /// Instant.
        now: Instant,
        /// Stream.
        conn: ConnId,
    },
    /// `handle_relay_bound(now, relay, result)`.
    RelayBound {
        /// Instant.
        now: Instant,
        /// Relay socket.
        relay: RelayId,
        /// Outcome.
        result: Result<(), BindError>,
    },
    /// `handle_relay_datagram(now, relay, from, ..)`.
    RelayDatagram {
        /// Instant.
        now: Instant,
        /// Relay socket.
        relay: RelayId,
        /// Peer.
        from: SocketAddr,
        /// The datagram.
        payload: Payload<'a>,
    },
    /// `handle_timeout(now)`.
    Timeout {
        /// Instant.
        now: Instant,
    },
    /// `delete_allocation(now, id)`.
    DeleteAllocation {
        /// Instant.
        now: Instant,
        /// Allocation.
        id: AllocationId,
    },
    /// `credentials_mut().insert_one_time(..)`, the password as a fingerprint.
    OneTimeAdded(OneTimeDescription),
    /// `credentials_mut().remove_one_time(username)`.
    OneTimeRemoved {
        /// The username.
        username: &'a str,
    },
    /// `credentials_mut().expire_one_time(wall_unix_s)`.
    OneTimeExpired {
        /// Wall clock, unix seconds.
        wall_unix_s: u64,
    },
    /// `add_listener(listener)`: a listener opened after start (the HTTP API's dynamic
    /// UDP ports). Added in format 1 without a version change: older traces lack it.
    ListenerAdded {
        /// Instant (the runtime's clock when it opened the socket).
        now: Instant,
        /// Its id.
        id: ListenerId,
        /// UDP or TCP.
        transport: crate::Transport,
        /// The address it is bound to.
        local: SocketAddr,
        /// TCP only: PROXY protocol required.
        proxy_protocol: bool,
    },
    /// `remove_listener(now, id)`.
    ListenerRemoved {
        /// Instant.
        now: Instant,
        /// The listener.
        id: ListenerId,
    },
    /// `credentials_mut().reserve_listener(listener, username)`.
    ListenerReserved {
        /// The listener.
        listener: ListenerId,
        /// The only username it accepts.
        username: &'a str,
    },
    /// `credentials_mut().add_rest_secret(secret)` after start (the HTTP API's issuance
    /// secret), as a fingerprint of kind [`SecretKind::RestSecret`]; replay finds the
    /// secret among the supplied ones (`issuance_secret`, `static_auth_secret`).
    RestSecretAdded {
        /// The secret's fingerprint.
        fingerprint: Fingerprint,
    },
    /// `start_drain(now)`. Added in format 3 without a version change: older traces lack
    /// it.
    Drain {
        /// Instant.
        now: Instant,
    },
    /// `handle_loop_message(now, from, msg)`: a message from another loop's core
    /// (format 2).
    LoopMessage {
        /// Instant.
        now: Instant,
        /// The loop that sent it.
        from: LoopId,
        /// The message.
        msg: LoopMsg,
    },
    /// `reload(now, reloadable)`: a configuration reload (format 3, written only by
    /// relays that reload), secrets as fingerprints.
    Reload {
        /// Instant.
        now: Instant,
        /// What the core was given.
        reload: Box<reload::ReloadDescription>,
    },
}

impl Input<'_> {
    /// The instant the input carried (None for credential changes).
    pub fn now(&self) -> Option<Instant> {
        match self {
            Input::WallClock { now, .. }
            | Input::Datagram { now, .. }
            | Input::StreamOpen { now, .. }
            | Input::StreamData { now, .. }
            | Input::StreamClosed { now, .. }
            | Input::RelayBound { now, .. }
            | Input::RelayDatagram { now, .. }
            | Input::Timeout { now }
            | Input::DeleteAllocation { now, .. } => Some(*now),
            Input::ListenerAdded { now, .. }
            | Input::ListenerRemoved { now, .. }
            | Input::Drain { now }
            | Input::LoopMessage { now, .. }
            | Input::Reload { now, .. } => Some(*now),
            Input::OneTimeAdded(_)
            | Input::OneTimeRemoved { .. }
            | Input::OneTimeExpired { .. }
            | Input::ListenerReserved { .. }
            | Input::RestSecretAdded { .. } => None,
        }
    }

    /// Short name of the input kind (`datagram`, `stream_data`...).
    pub fn kind(&self) -> &'static str {
        match self {
            Input::WallClock { .. } => "wall_clock",
            Input::Datagram { .. } => "datagram",
            Input::StreamOpen { .. } => "stream_open",
            Input::StreamData { .. } => "stream_data",
            Input::StreamClosed { .. } => "stream_closed",
            Input::RelayBound { .. } => "relay_bound",
            Input::RelayDatagram { .. } => "relay_datagram",
            Input::Timeout { .. } => "timeout",
            Input::DeleteAllocation { .. } => "delete_allocation",
            Input::OneTimeAdded(_) => "one_time_added",
            Input::OneTimeRemoved { .. } => "one_time_removed",
            Input::OneTimeExpired { .. } => "one_time_expired",
            Input::ListenerAdded { .. } => "listener_added",
            Input::ListenerRemoved { .. } => "listener_removed",
            Input::ListenerReserved { .. } => "listener_reserved",
            Input::RestSecretAdded { .. } => "rest_secret_added",
            Input::LoopMessage { .. } => "loop_message",
            Input::Drain { .. } => "drain",
            Input::Reload { .. } => "reload",
        }
    }
}

/// One record of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// An input, written before the core saw it.
    Input(Input<'a>),
    /// A checkpoint of the outputs (see the module documentation).
    Outputs {
        /// Outputs drained with `poll_output` since the previous checkpoint.
        count: u32,
        /// The output queue was empty afterwards (the end of a drain).
        drained: bool,
        /// The running [`OutputDigest`] value.
        digest: u64,
    },
    /// The core panicked while handling the previous input; the message.
    Panic {
        /// The panic message.
        message: &'a str,
    },
    /// The recorder stopped cleanly (shutdown, or rotation to the next segment).
    End {
        /// Why: `shutdown` or `rotated`.
        reason: &'a str,
    },
}

/// Record kind codes.
mod kind {
    pub const WALL_CLOCK: u8 = 1;
    pub const DATAGRAM: u8 = 2;
    pub const STREAM_OPEN: u8 = 3;
    pub const STREAM_DATA: u8 = 4;
    pub const STREAM_CLOSED: u8 = 5;
    pub const RELAY_BOUND: u8 = 6;
    pub const RELAY_DATAGRAM: u8 = 7;
    pub const TIMEOUT: u8 = 8;
    pub const DELETE_ALLOCATION: u8 = 9;
    pub const ONE_TIME_ADDED: u8 = 10;
    pub const ONE_TIME_REMOVED: u8 = 11;
    pub const ONE_TIME_EXPIRED: u8 = 12;
    pub const LISTENER_ADDED: u8 = 13;
    pub const LISTENER_REMOVED: u8 = 14;
    pub const LISTENER_RESERVED: u8 = 15;
    pub const REST_SECRET_ADDED: u8 = 16;
    pub const LOOP_MESSAGE: u8 = 17;
    pub const RELOAD: u8 = 18;
    pub const DRAIN: u8 = 19;
    pub const OUTPUTS: u8 = 20;
    pub const PANIC: u8 = 21;
    pub const END: u8 = 22;
}

/// Appends the encoded header to `out`, in format [`FORMAT_VERSION`] (`h.version` is
/// ignored).
pub fn encode_header(h: &Header, out: &mut Vec<u8>) {
    encode_header_as(h, FORMAT_VERSION, out);
}

/// [`encode_header`] in an older format `version` that this build reads, for fixtures
/// that pin what an older build wrote (version 1 leaves out the loop's place and
/// `Config::node`: only a node of one loop fits). Records are written alike in every
/// version; a version 1 file must hold no [`Input::LoopMessage`].
pub fn encode_header_version(
    h: &Header,
    version: u16,
    out: &mut Vec<u8>,
) -> Result<(), TraceError> {
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(TraceError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version < 2 && (h.place != NodePlace::SOLE || h.config.node != NodePlace::SOLE) {
        return Err(TraceError::Malformed(format!(
            "format version {version} holds only a node of one loop"
        )));
    }
    encode_header_as(h, version, out);
    Ok(())
}

fn encode_header_as(h: &Header, version: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    let mut body = Vec::new();
    let mut p = Put(&mut body);
    p.raw(&h.seed);
    p.u64(h.start.as_nanos());
    p.u64(h.start_unix_ms);
    p.raw(&h.salt);
    p.str(&h.producer);
    p.bool(h.payloads);
    p.u32(h.segment);
    if version >= 2 {
        put_place(&mut p, h.place);
    }
    h.config.encode(&mut p, version);
    frame(&body, out);
}

pub(crate) fn put_place(p: &mut Put<'_>, place: NodePlace) {
    p.u16(place.index);
    p.u16(place.count);
}

/// A place in a node: `count` in 1..=[`MAX_LOOPS`], `index < count`.
pub(crate) fn get_place(g: &mut Get<'_>) -> Result<NodePlace, TraceError> {
    let index = g.u16()?;
    let count = g.u16()?;
    if count == 0 || count > MAX_LOOPS || index >= count {
        return Err(TraceError::Malformed(format!(
            "loop {index} of {count} is not a place in a node"
        )));
    }
    Ok(NodePlace { index, count })
}

/// Appends one encoded record (length, body, CRC) to `out`.
pub fn encode_record(r: &Record<'_>, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut p = Put(out);
    match r {
        Record::Input(i) => encode_input(i, &mut p),
        Record::Outputs {
            count,
            drained,
            digest,
        } => {
            p.u8(kind::OUTPUTS);
            p.u32(*count);
            p.bool(*drained);
            p.u64(*digest);
        }
        Record::Panic { message } => {
            p.u8(kind::PANIC);
            p.str(message);
        }
        Record::End { reason } => {
            p.u8(kind::END);
            p.str(reason);
        }
    }
    let len = out.len() - at - 4;
    let crc = crc32fast::hash(out.get(at + 4..).unwrap_or_default());
    if let Some(field) = out.get_mut(at..at + 4) {
        field.copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    }
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads the header of `bytes` and returns it with a reader of the records after it.
pub fn open(bytes: &[u8]) -> Result<(Header, TraceReader<'_>), TraceError> {
    let mut g = Get::new(bytes);
    let magic: [u8; 8] = g.array().map_err(|_| TraceError::NotATrace)?;
    if magic != MAGIC {
        return Err(TraceError::NotATrace);
    }
    let version = g.u16()?;
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(TraceError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let len = g.len()?;
    if len > MAX_RECORD_LEN {
        return Err(TraceError::Malformed("header too long".into()));
    }
    let body = g.take(len)?;
    let crc = g.u32()?;
    if crc32fast::hash(body) != crc {
        return Err(TraceError::Malformed("header CRC mismatch".into()));
    }
    let mut h = Get::new(body);
    let header = Header {
        seed: h.array()?,
        start: Instant::from_nanos(h.u64()?),
        start_unix_ms: h.u64()?,
        salt: h.array()?,
        producer: h.str()?.to_owned(),
        payloads: h.bool()?,
        segment: h.u32()?,
        place: if version >= 2 {
            get_place(&mut h)?
        } else {
            NodePlace::SOLE
        },
        config: ConfigDescription::decode(&mut h, version)?,
        version,
    };
    if !h.is_empty() {
        return Err(TraceError::Malformed("stray bytes after the header".into()));
    }
    let pos = 8 + 2 + 4 + len + 4;
    Ok((
        header,
        TraceReader {
            buf: bytes,
            pos,
            index: 0,
            last_offset: pos,
            tail: None,
            failed: false,
        },
    ))
}

/// How a trace ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// At a record boundary.
    Clean,
    /// Cut inside the record starting at `offset`: `bytes` bytes were skipped.
    Torn {
        /// Byte offset of the incomplete record.
        offset: usize,
        /// Bytes skipped.
        bytes: usize,
    },
}

/// Iterates over the records of a trace. Stops at the end, at a torn tail (see
/// [`TraceReader::tail`]), or after yielding one error.
#[derive(Clone, Debug)]
pub struct TraceReader<'a> {
    buf: &'a [u8],
    pos: usize,
    index: u64,
    last_offset: usize,
    tail: Option<Tail>,
    failed: bool,
}

impl<'a> TraceReader<'a> {
    /// How the trace ended, once the iteration has: None before.
    pub fn tail(&self) -> Option<Tail> {
        self.tail
    }

    /// Byte offset of the record last returned.
    pub fn offset(&self) -> usize {
        self.last_offset
    }

    /// Index of the next record (the number returned so far).
    pub fn index(&self) -> u64 {
        self.index
    }

    fn read(&mut self) -> Option<Result<Record<'a>, TraceError>> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            self.tail = Some(Tail::Clean);
            return None;
        }
        let torn = |s: &mut Self| {
            s.tail = Some(Tail::Torn {
                offset: s.pos,
                bytes: rest.len(),
            });
            None
        };
        let Some(len) = rest.get(..4).map(|b| {
            let mut a = [0u8; 4];
            a.copy_from_slice(b);
            u32::from_le_bytes(a) as usize
        }) else {
            return torn(self);
        };
        let corrupt = |s: &mut Self| {
            s.failed = true;
            Some(Err(TraceError::Corrupt {
                record: s.index,
                offset: s.pos,
            }))
        };
        let total = len.saturating_add(8);
        if total > rest.len() {
            return torn(self);
        }
        if len > MAX_RECORD_LEN {
            return corrupt(self);
        }
        let body = rest.get(4..4 + len).unwrap_or_default();
        let crc = rest.get(4 + len..8 + len).map(|b| {
            let mut a = [0u8; 4];
            a.copy_from_slice(b);
            u32::from_le_bytes(a)
        });
        if crc != Some(crc32fast::hash(body)) {
            // The last record of the file: a write cut short (e.g. space allocated, data
            // not yet written). Anything after it means the middle of the file is damaged.
            if total == rest.len() {
                return torn(self);
            }
            return corrupt(self);
        }
        self.last_offset = self.pos;
        self.pos += total;
        self.index += 1;
        Some(decode_record(body).inspect_err(|_| self.failed = true))
    }
}

impl<'a> Iterator for TraceReader<'a> {
    type Item = Result<Record<'a>, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.tail.is_some() {
            return None;
        }
        self.read()
    }
}

fn frame(body: &[u8], out: &mut Vec<u8>) {
    let mut p = Put(out);
    p.bytes(body);
    p.u32(crc32fast::hash(body));
}

fn encode_payload(p: &mut Put<'_>, payload: &Payload<'_>) {
    match payload {
        Payload::Full(b) => {
            p.u8(0);
            p.bytes(b);
        }
        Payload::Masked { len, crc, segments } => {
            p.u8(1);
            p.u32(*len);
            p.u32(*crc);
            p.bytes(segments);
        }
    }
}

fn decode_payload<'a>(g: &mut Get<'a>) -> Result<Payload<'a>, TraceError> {
    match g.u8()? {
        0 => Ok(Payload::Full(g.bytes()?)),
        1 => Ok(Payload::Masked {
            len: g.u32()?,
            crc: g.u32()?,
            segments: g.bytes()?,
        }),
        k => Err(TraceError::Malformed(format!("payload kind {k}"))),
    }
}

fn encode_input(i: &Input<'_>, p: &mut Put<'_>) {
    match i {
        Input::WallClock { now, unix_ms } => {
            p.u8(kind::WALL_CLOCK);
            p.u64(now.as_nanos());
            p.u64(*unix_ms);
        }
        Input::Datagram {
            now,
            listener,
            from,
            payload,
        } => {
            p.u8(kind::DATAGRAM);
            p.u64(now.as_nanos());
            p.u32(listener.0);
            p.addr(*from);
            encode_payload(p, payload);
        }
        Input::StreamOpen {
            now,
            conn,
            listener,
            local,
            remote,
        } => {
            p.u8(kind::STREAM_OPEN);
            p.u64(now.as_nanos());
            p.u64(conn.0);
            p.u32(listener.0);
            p.addr(*local);
            p.addr(*remote);
        }
        Input::StreamData { now, conn, data } => {
            p.u8(kind::STREAM_DATA);
            p.u64(now.as_nanos());
            p.u64(conn.0);
            encode_payload(p, data);
        }
        Input::StreamClosed { now, conn } => {
            p.u8(kind::STREAM_CLOSED);
            p.u64(now.as_nanos());
            p.u64(conn.0);
        }
        Input::RelayBound { now, relay, result } => {
            p.u8(kind::RELAY_BOUND);
            p.u64(now.as_nanos());
            p.u32(relay.0);
            p.u8(match result {
                Ok(()) => 0,
                Err(BindError::AddrInUse) => 1,
                Err(BindError::Other) => 2,
            });
        }
        Input::RelayDatagram {
            now,
            relay,
            from,
            payload,
        } => {
            p.u8(kind::RELAY_DATAGRAM);
            p.u64(now.as_nanos());
            p.u32(relay.0);
            p.addr(*from);
            encode_payload(p, payload);
        }
        Input::Timeout { now } => {
            p.u8(kind::TIMEOUT);
            p.u64(now.as_nanos());
        }
        Input::DeleteAllocation { now, id } => {
            p.u8(kind::DELETE_ALLOCATION);
            p.u64(now.as_nanos());
            p.u64(id.0);
        }
        Input::Drain { now } => {
            p.u8(kind::DRAIN);
            p.u64(now.as_nanos());
        }
        Input::OneTimeAdded(o) => {
            p.u8(kind::ONE_TIME_ADDED);
            o.encode(p);
        }
        Input::OneTimeRemoved { username } => {
            p.u8(kind::ONE_TIME_REMOVED);
            p.str(username);
        }
        Input::OneTimeExpired { wall_unix_s } => {
            p.u8(kind::ONE_TIME_EXPIRED);
            p.u64(*wall_unix_s);
        }
        Input::ListenerAdded {
            now,
            id,
            transport,
            local,
            proxy_protocol,
        } => {
            p.u8(kind::LISTENER_ADDED);
            p.u64(now.as_nanos());
            p.u32(id.0);
            p.u8(config::transport_code(*transport));
            p.addr(*local);
            p.bool(*proxy_protocol);
        }
        Input::ListenerRemoved { now, id } => {
            p.u8(kind::LISTENER_REMOVED);
            p.u64(now.as_nanos());
            p.u32(id.0);
        }
        Input::ListenerReserved { listener, username } => {
            p.u8(kind::LISTENER_RESERVED);
            p.u32(listener.0);
            p.str(username);
        }
        Input::RestSecretAdded { fingerprint } => {
            p.u8(kind::REST_SECRET_ADDED);
            p.raw(fingerprint);
        }
        Input::LoopMessage { now, from, msg } => {
            p.u8(kind::LOOP_MESSAGE);
            p.u64(now.as_nanos());
            p.u16(from.0);
            let mut wire = Vec::new();
            msg.encode(&mut wire);
            p.bytes(&wire);
        }
        Input::Reload { now, reload } => {
            p.u8(kind::RELOAD);
            p.u64(now.as_nanos());
            reload.encode(p);
        }
    }
}

fn decode_record(body: &[u8]) -> Result<Record<'_>, TraceError> {
    let mut g = Get::new(body);
    let now = |g: &mut Get<'_>| g.u64().map(Instant::from_nanos);
    let k = g.u8()?;
    let r = match k {
        kind::WALL_CLOCK => Record::Input(Input::WallClock {
            now: now(&mut g)?,
            unix_ms: g.u64()?,
        }),
        kind::DATAGRAM => Record::Input(Input::Datagram {
            now: now(&mut g)?,
            listener: ListenerId(g.u32()?),
            from: g.addr()?,
            payload: decode_payload(&mut g)?,
        }),
        kind::STREAM_OPEN => Record::Input(Input::StreamOpen {
            now: now(&mut g)?,
            conn: ConnId(g.u64()?),
            listener: ListenerId(g.u32()?),
            local: g.addr()?,
            remote: g.addr()?,
        }),
        kind::STREAM_DATA => Record::Input(Input::StreamData {
            now: now(&mut g)?,
            conn: ConnId(g.u64()?),
            data: decode_payload(&mut g)?,
        }),
        kind::STREAM_CLOSED => Record::Input(Input::StreamClosed {
            now: now(&mut g)?,
            conn: ConnId(g.u64()?),
        }),
        kind::RELAY_BOUND => Record::Input(Input::RelayBound {
            now: now(&mut g)?,
            relay: RelayId(g.u32()?),
            result: match g.u8()? {
                0 => Ok(()),
                1 => Err(BindError::AddrInUse),
                2 => Err(BindError::Other),
                b => return Err(TraceError::Malformed(format!("bind result {b}"))),
            },
        }),
        kind::RELAY_DATAGRAM => Record::Input(Input::RelayDatagram {
            now: now(&mut g)?,
            relay: RelayId(g.u32()?),
            from: g.addr()?,
            payload: decode_payload(&mut g)?,
        }),
        kind::TIMEOUT => Record::Input(Input::Timeout { now: now(&mut g)? }),
        kind::DRAIN => Record::Input(Input::Drain { now: now(&mut g)? }),
        kind::DELETE_ALLOCATION => Record::Input(Input::DeleteAllocation {
            now: now(&mut g)?,
            id: AllocationId(g.u64()?),
        }),
        kind::ONE_TIME_ADDED => {
            Record::Input(Input::OneTimeAdded(OneTimeDescription::decode(&mut g)?))
        }
        kind::ONE_TIME_REMOVED => Record::Input(Input::OneTimeRemoved { username: g.str()? }),
        kind::ONE_TIME_EXPIRED => Record::Input(Input::OneTimeExpired {
            wall_unix_s: g.u64()?,
        }),
        kind::LISTENER_ADDED => Record::Input(Input::ListenerAdded {
            now: now(&mut g)?,
            id: ListenerId(g.u32()?),
            transport: config::transport_of(g.u8()?)?,
            local: g.addr()?,
            proxy_protocol: g.bool()?,
        }),
        kind::LISTENER_REMOVED => Record::Input(Input::ListenerRemoved {
            now: now(&mut g)?,
            id: ListenerId(g.u32()?),
        }),
        kind::LISTENER_RESERVED => Record::Input(Input::ListenerReserved {
            listener: ListenerId(g.u32()?),
            username: g.str()?,
        }),
        kind::REST_SECRET_ADDED => Record::Input(Input::RestSecretAdded {
            fingerprint: g.array()?,
        }),
        kind::LOOP_MESSAGE => {
            let now = now(&mut g)?;
            let from = LoopId(g.u16()?);
            let wire = g.bytes()?;
            let msg = LoopMsg::decode(wire).ok_or_else(|| {
                TraceError::Malformed(format!(
                    "a loop message from loop {} that does not decode ({} bytes)",
                    from.0,
                    wire.len()
                ))
            })?;
            Record::Input(Input::LoopMessage { now, from, msg })
        }
        kind::RELOAD => {
            let now = now(&mut g)?;
            let reload = Box::new(reload::ReloadDescription::decode(&mut g)?);
            Record::Input(Input::Reload { now, reload })
        }
        kind::OUTPUTS => Record::Outputs {
            count: g.u32()?,
            drained: g.bool()?,
            digest: g.u64()?,
        },
        kind::PANIC => Record::Panic { message: g.str()? },
        kind::END => Record::End { reason: g.str()? },
        k => return Err(TraceError::Malformed(format!("record kind {k}"))),
    };
    if !g.is_empty() {
        return Err(TraceError::Malformed(format!(
            "{} stray bytes after a record of kind {k}",
            body.len()
        )));
    }
    Ok(r)
}

#[cfg(test)]
mod tests;
