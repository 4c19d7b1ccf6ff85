//! `turnpike-sim trace dump TRACE`: the trace as JSON lines, for people and tools.
//!
//! The first line is `{"header": {...}}` (seed, start, config without secrets: user names
//! only, the number of REST secrets); then one object per record, `{"i": N, "kind": ...}`
//! with the record's fields (instants as `now_ns`, payloads as `len` and `hex`, masked
//! payloads with `masked: true`, their `crc32` and the zeroed bytes); the last line is
//! `{"end": "clean"}` or `{"end": "torn", "offset": B, "bytes": N}` or `{"end": "error",
//! "error": "..."}`. A rotated run is dumped from its first segment, each segment's header
//! in its place. The header names the loop the file records (`"loop": {"index", "count"}`;
//! a node of several loops has one file per loop, `FILE.loop<i>` beside loop 0's `FILE`,
//! dumped one at a time); messages from other loops are `"kind": "loop_message"` records
//! with `from` and `msg` (`{"type": "redeem_token", ...}`).

use super::{header_json, load, record_json, ReplayError};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use turnpike_core::trace::{self, Tail};

/// What a dump wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpSummary {
    /// Records written (headers not counted).
    pub records: u64,
    /// How the last file ended.
    pub tail: Tail,
}

/// Writes the trace at `trace_path` (with its older segments) to `out` as JSON lines.
pub fn dump(trace_path: &Path, out: &mut dyn Write) -> Result<DumpSummary, ReplayError> {
    let segs = load(trace_path)?;
    let io = |e: std::io::Error| ReplayError::Io("<output>".into(), e);
    let mut index = 0u64;
    let mut tail = Tail::Clean;
    for (path, bytes) in &segs.files {
        let (h, mut reader) =
            trace::open(bytes).map_err(|e| ReplayError::Trace(path.clone(), e))?;
        writeln!(out, "{}", header_json(&h)).map_err(io)?;
        for rec in reader.by_ref() {
            match rec {
                Ok(r) => writeln!(out, "{}", record_json(index, &r)).map_err(io)?,
                Err(e) => {
                    writeln!(
                        out,
                        "{}",
                        json!({"end": "error", "error": format!("{}: {e}", path.display())})
                    )
                    .map_err(io)?;
                    return Ok(DumpSummary {
                        records: index,
                        tail: Tail::Clean,
                    });
                }
            }
            index += 1;
        }
        tail = reader.tail().unwrap_or(Tail::Clean);
    }
    let end = match tail {
        Tail::Clean => json!({"end": "clean"}),
        Tail::Torn { offset, bytes } => json!({"end": "torn", "offset": offset, "bytes": bytes}),
    };
    writeln!(out, "{end}").map_err(io)?;
    Ok(DumpSummary {
        records: index,
        tail,
    })
}
