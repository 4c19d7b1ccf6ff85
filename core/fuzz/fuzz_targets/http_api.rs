//! The HTTP API's request reader (RFC 9112; runtime-mio/src/api/http.rs): the input is cut
//! into pieces whose sizes come from the input itself and fed as a connection would
//! receive them. Never a panic; every request served stays within the size limits; and
//! the requests served, and the refusal that closes the connection, are those of the same
//! bytes received whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike::api::http::{read_requests, MAX_BODY, MAX_HEAD};

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = read_requests(&[data]);
    for r in &whole.0 {
        assert!(r.body.len() <= MAX_BODY, "a body beyond the limit");
        let target = r.path.len() + r.query.as_ref().map_or(0, |q| q.len() + 1);
        assert!(r.method.len() + target <= MAX_HEAD, "a head beyond the limit");
    }
    if let Some(status) = whole.1 {
        assert!(
            matches!(status, 400 | 411 | 413 | 431),
            "an unexpected refusal {status}"
        );
    }

    let mut pieces = Vec::new();
    let mut at = 0usize;
    let mut x = u32::from(seed) | 1;
    while at < data.len() {
        // A xorshift walk from the seed byte picks piece sizes 1..=61 (or one byte at a
        // time when the seed is odd-looking), so that every boundary is tried somewhere.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let most = if seed & 0x80 == 0 { 61 } else { 1 };
        let n = (1 + (x % most) as usize).min(data.len() - at);
        pieces.push(&data[at..at + n]);
        at += n;
    }
    let split = read_requests(&pieces);
    assert_eq!(whole, split, "a split changed the requests");
});
