//! The stream framer (RFC 8656 §12.5, RFC 8489 §6.2.2): the input is cut into pieces whose
//! sizes come from the input itself, pushed one by one, and the frames and error must be
//! those of the same bytes pushed whole. The buffer stays within its bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_core::framing::{Frame, StreamFramer, BUFFER_SLACK};

fuzz_target!(|input: &[u8]| {
    let Some((&sel, rest)) = input.split_first() else {
        return;
    };
    let Some((&seed, data)) = rest.split_first() else {
        return;
    };
    // A small limit half of the time, so that "too large" is reached.
    let max = if sel & 1 == 0 {
        64 + usize::from(sel) * 8
    } else {
        65_552
    };

    let whole = run(max, &[data]);
    let mut pieces = Vec::new();
    let mut at = 0usize;
    let mut x = u32::from(seed) | 1;
    while at < data.len() {
        // A xorshift walk from the seed byte picks piece sizes 1..=37.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (1 + (x % 37) as usize).min(data.len() - at);
        pieces.push(&data[at..at + n]);
        at += n;
    }
    let split = run(max, &pieces);
    assert_eq!(whole, split, "a split changed the frames");
});

/// Frames (as owned bytes, tagged) and the final result of pushing `pieces` in order.
fn run(max: usize, pieces: &[&[u8]]) -> (Vec<(bool, Vec<u8>)>, Option<String>) {
    let mut framer = StreamFramer::new(max);
    let mut frames = Vec::new();
    let mut error = None;
    for p in pieces {
        let r = framer.push(p, |f| {
            match f {
                Frame::Stun(b) => {
                    assert!(b.len() <= max);
                    frames.push((true, b.to_vec()))
                }
                Frame::ChannelData(b) => {
                    assert!(b.len() <= max);
                    frames.push((false, b.to_vec()))
                }
            }
            true
        });
        assert!(framer.buffered() <= max + BUFFER_SLACK);
        if let Err(e) = r {
            error = Some(format!("{e:?}"));
            break;
        }
    }
    (frames, error)
}
