//! The trace recorder's masking of relayed media (`trace::mask`), which scans network
//! bytes (datagrams, and streams split anywhere, PROXY header first or not) and writes
//! segments. Input: a mode byte (datagram, stream, stream after a PROXY header), a seed
//! byte for how the bytes are cut into reads, then the bytes.
//!
//! Checked: no panic; every read's segments expand to exactly its length; masking a
//! stream in pieces gives the same bytes as masking it in one piece (the masker carries
//! its state across reads); a datagram's recorded payload replays to the masked bytes, or
//! is the original when nothing was left out (it once kept some media in the clear).
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_core::trace::mask::{expand, Masker, Segments};
use turnpike_core::trace::Payload;

fn masker(mode: u8) -> Masker {
    match mode % 3 {
        0 => Masker::datagram(),
        1 => Masker::stream(false),
        _ => Masker::stream(true),
    }
}

/// Masks each of `reads` with one masker, returning the concatenated expansions.
fn mask_reads(mode: u8, reads: &[&[u8]]) -> Vec<u8> {
    let mut m = masker(mode);
    let mut all = Vec::new();
    for r in reads {
        let mut segs = Vec::new();
        m.mask(r, &mut Segments::new(&mut segs));
        let v = expand(&segs, r.len()).expect("segments of a read expand");
        assert_eq!(v.len(), r.len(), "segments of a read expand to its length");
        all.extend_from_slice(&v);
    }
    all
}

fuzz_target!(|input: &[u8]| {
    let [mode, seed, data @ ..] = input else {
        return;
    };
    if mode % 3 == 0 {
        // A datagram is masked in one piece.
        let whole = mask_reads(*mode, &[data]);
        assert_eq!(whole.len(), data.len());
        let mut scratch = Vec::new();
        let p = Payload::client_datagram(data, false, &mut scratch);
        assert_eq!(p.len(), data.len());
        let replayed = p.bytes().expect("a masked datagram replays");
        match &p {
            // Nothing was zeroed (the masker may still have rewritten an invalid
            // FINGERPRINT into another invalid one): the original is kept.
            Payload::Full(b) => assert_eq!(*b, data),
            Payload::Masked { .. } => assert_eq!(&replayed[..], &whole[..]),
        }
        return;
    }
    // Cut the stream into reads of 1..=16 bytes (seed 0: one byte each).
    let mut reads = Vec::new();
    let mut rest = data;
    let mut x = u32::from(*seed);
    while !rest.is_empty() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = if *seed == 0 { 1 } else { (x >> 16) as usize % 16 + 1 };
        let (a, b) = rest.split_at(n.min(rest.len()));
        reads.push(a);
        rest = b;
    }
    let pieces = mask_reads(*mode, &reads);
    let whole = mask_reads(*mode, &[data]);
    assert_eq!(pieces, whole, "masking depends on how the stream was cut");
});
