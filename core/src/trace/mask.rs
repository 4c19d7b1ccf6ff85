//! Leaving relayed media out of a trace while keeping it replayable.
//!
//! With `trace_payloads = false`, the recorder keeps every byte the core *interprets* and
//! replaces the bytes it only *carries* by zeros: the payload of ChannelData (RFC 8656
//! §12.4) and the value of the DATA attribute of Send indications (RFC 8656 §11.1), and
//! every datagram from a peer. Lengths never change, and the core never looks inside a
//! relayed payload, so a replay of zeros produces the same outputs (the output digest only
//! counts a relayed payload's length).
//!
//! One catch: a Send indication may end with FINGERPRINT (RFC 8489 §14.7), a CRC over the
//! message; zeroing DATA would make it fail. The masker rewrites the FINGERPRINT value so
//! that it is valid for the masked message exactly when it was valid for the original,
//! deciding byte by byte, so it works on streams split anywhere without buffering.
//!
//! The masked bytes are written as *segments*: literal runs and zero runs (see
//! [`Segments`]). Streams are scanned frame by frame across reads (PROXY header first when
//! the listener expects one); anything that is not STUN or ChannelData is kept as is (the
//! core closes such a stream or drops such a datagram without relaying it).

use super::codec::Put;

/// STUN method+class of a Send indication (RFC 8656 §11.1, method 0x006, class 01).
const SEND_INDICATION: u16 = 0x0016;
/// DATA attribute (RFC 8656 §18.4).
const DATA: u16 = 0x0013;
/// FINGERPRINT attribute (RFC 8489 §14.7).
const FINGERPRINT: u16 = 0x8028;
/// FINGERPRINT is the CRC-32 XORed with this (RFC 8489 §14.7).
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Longest PROXY v1 line (spec: 107 bytes with CRLF).
const PROXY_V1_MAX: usize = 107;
/// PROXY v2 signature (12 bytes); the fixed header is 16.
const PROXY_V2_SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Builds the segment encoding of masked bytes: a sequence of `0, len u32, bytes` (literal)
/// and `1, len u32` (that many zero bytes). Adjacent runs of one kind are merged.
pub struct Segments<'a> {
    out: &'a mut Vec<u8>,
    /// Kind and position of the length field of the open run.
    open: Option<(u8, usize)>,
}

impl<'a> Segments<'a> {
    /// Appends segments to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Segments { out, open: None }
    }

    /// Literal bytes.
    pub fn literal(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        let at = self.run(0);
        self.bump(at, b.len());
        self.out.extend_from_slice(b);
    }

    /// `n` zero bytes.
    pub fn zeros(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let at = self.run(1);
        self.bump(at, n);
    }

    fn run(&mut self, kind: u8) -> usize {
        match self.open {
            Some((k, at)) if k == kind => at,
            _ => {
                self.out.push(kind);
                let at = self.out.len();
                Put(self.out).u32(0);
                self.open = Some((kind, at));
                at
            }
        }
    }

    fn bump(&mut self, at: usize, n: usize) {
        if let Some(field) = self.out.get_mut(at..at + 4) {
            let mut v = [0u8; 4];
            v.copy_from_slice(field);
            let total = u32::from_le_bytes(v).saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            field.copy_from_slice(&total.to_le_bytes());
        }
    }
}

/// Expands the segment encoding into bytes (zero runs as zeros). Fails on a malformed
/// encoding or when the result would exceed `max_len`.
pub fn expand(segments: &[u8], max_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut g = super::codec::Get::new(segments);
    while !g.is_empty() {
        let kind = g.u8().ok()?;
        let n = g.len().ok()?;
        if out.len().saturating_add(n) > max_len {
            return None;
        }
        match kind {
            0 => out.extend_from_slice(g.take(n).ok()?),
            1 => out.resize(out.len() + n, 0),
            _ => return None,
        }
    }
    Some(out)
}

/// Where the scanner is in the byte stream.
#[derive(Clone, Copy, Debug)]
enum State {
    /// A PROXY header is expected; `seen` bytes of it so far.
    Proxy { seen: usize },
    /// Reading the 4 first bytes of a frame.
    FrameStart,
    /// ChannelData payload to zero, then padding to keep.
    ChannelPayload { left: usize, pad: usize },
    /// Padding after a ChannelData payload.
    Padding { left: usize },
    /// The rest of a STUN header (20 bytes in all).
    StunHeader,
    /// A STUN body kept as is.
    StunBody { left: usize },
    /// Send indication: reading an attribute header; `body` bytes of the body left.
    AttrHeader { body: usize },
    /// Send indication: an attribute value (and padding); zeroed when `zero`.
    AttrValue {
        body: usize,
        left: usize,
        zero: usize,
    },
    /// Send indication: the FINGERPRINT value, `done` bytes of 4 written; `ok` while every
    /// original byte so far matched a valid fingerprint.
    Fingerprint { body: usize, done: usize, ok: bool },
    /// Not STUN nor ChannelData: keep everything.
    Passthrough,
}

/// Scans one stream (or one datagram) and writes its masked segments.
#[derive(Clone, Debug)]
pub struct Masker {
    state: State,
    /// Only the first frame is scanned (a datagram holds one message).
    datagram: bool,
    /// No frame seen yet.
    first: bool,
    /// First bytes of the current frame or PROXY v2 header, for lengths and types.
    head: [u8; 20],
    have: usize,
    /// CRC-32 of the current Send indication as received, and as masked.
    crc_orig: crc32fast::Hasher,
    crc_masked: crc32fast::Hasher,
    /// Expected FINGERPRINT values (as received / as masked), big-endian.
    fp_orig: [u8; 4],
    fp_masked: [u8; 4],
}

impl Masker {
    /// A scanner for a stream; `proxy_header` when the listener expects a PROXY header.
    pub fn stream(proxy_header: bool) -> Self {
        let state = if proxy_header {
            State::Proxy { seen: 0 }
        } else {
            State::FrameStart
        };
        Masker {
            state,
            datagram: false,
            first: true,
            head: [0; 20],
            have: 0,
            crc_orig: crc32fast::Hasher::new(),
            crc_masked: crc32fast::Hasher::new(),
            fp_orig: [0; 4],
            fp_masked: [0; 4],
        }
    }

    /// A scanner for one datagram from a client.
    pub fn datagram() -> Self {
        Masker {
            datagram: true,
            ..Self::stream(false)
        }
    }

    /// Scans the next bytes of the stream, writing their masked form to `seg`.
    pub fn mask(&mut self, data: &[u8], seg: &mut Segments<'_>) {
        let mut rest = data;
        let mut idle = 0;
        while !rest.is_empty() {
            let used = self.step(rest, seg);
            // Every state consumes a byte or moves on; should one ever do neither, keep
            // the rest as it is rather than spin.
            idle = if used == 0 { idle + 1 } else { 0 };
            if idle > 4 {
                self.state = State::Passthrough;
            }
            rest = rest.get(used..).unwrap_or_default();
        }
    }

    /// Consumes at least one byte of `data` (non-empty); returns how many.
    fn step(&mut self, data: &[u8], seg: &mut Segments<'_>) -> usize {
        match self.state {
            State::Passthrough => {
                seg.literal(data);
                data.len()
            }
            State::Proxy { seen } => self.proxy(data, seen, seg),
            State::FrameStart => {
                let n = self.collect(data, 4);
                seg.literal(&data[..n]);
                if self.have == 4 {
                    let len = usize::from(u16::from_be_bytes([self.head[2], self.head[3]]));
                    self.state = match self.head[0] >> 6 {
                        // A stream must open with STUN (the core closes it otherwise, and
                        // "GET " looks like ChannelData): keep such bytes as they are.
                        0b01 if self.first && !self.datagram => State::Passthrough,
                        0b01 => {
                            let pad = if self.datagram { 0 } else { (4 - len % 4) % 4 };
                            State::ChannelPayload { left: len, pad }
                        }
                        0b00 => State::StunHeader,
                        _ => State::Passthrough,
                    };
                    self.first = false;
                    if let State::ChannelPayload { left: 0, pad } = self.state {
                        self.state = State::Padding { left: pad };
                        self.frame_done_if_empty();
                    }
                }
                n
            }
            State::ChannelPayload { left, pad } => {
                let n = left.min(data.len());
                seg.zeros(n);
                self.state = State::ChannelPayload {
                    left: left - n,
                    pad,
                };
                if n == left {
                    self.state = State::Padding { left: pad };
                    self.frame_done_if_empty();
                }
                n
            }
            State::Padding { left } => {
                let n = left.min(data.len());
                seg.literal(&data[..n]);
                self.state = State::Padding { left: left - n };
                self.frame_done_if_empty();
                n
            }
            State::StunHeader => {
                let n = self.collect(data, 20);
                seg.literal(&data[..n]);
                if self.have == 20 {
                    let ty = u16::from_be_bytes([self.head[0], self.head[1]]);
                    let body = usize::from(u16::from_be_bytes([self.head[2], self.head[3]]));
                    if ty == SEND_INDICATION {
                        self.crc_orig = crc32fast::Hasher::new();
                        self.crc_orig.update(&self.head);
                        self.crc_masked = self.crc_orig.clone();
                        self.have = 0;
                        self.state = State::AttrHeader { body };
                    } else {
                        self.state = State::StunBody { left: body };
                    }
                    self.end_of_body(body);
                }
                n
            }
            State::StunBody { left } => {
                let n = left.min(data.len());
                seg.literal(&data[..n]);
                self.state = State::StunBody { left: left - n };
                self.end_of_body(left - n);
                n
            }
            State::AttrHeader { body } => {
                // `body` counts what follows the header bytes already collected.
                let want = (self.have + body).min(4);
                let n = self.collect(data, want);
                seg.literal(&data[..n]);
                let body = body - n;
                if self.have == want {
                    let h = [self.head[0], self.head[1], self.head[2], self.head[3]];
                    let header = h.get(..want).unwrap_or_default();
                    let ty = u16::from_be_bytes([h[0], h[1]]);
                    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
                    let padded = (len + 3) & !3;
                    self.have = 0;
                    if want == 4 && ty == FINGERPRINT && len == 4 && body >= 4 {
                        // The CRC covers everything before this attribute's header.
                        let o = self.crc_orig.clone().finalize() ^ FINGERPRINT_XOR;
                        let m = self.crc_masked.clone().finalize() ^ FINGERPRINT_XOR;
                        self.fp_orig = o.to_be_bytes();
                        self.fp_masked = m.to_be_bytes();
                        self.crc_orig.update(header);
                        self.crc_masked.update(header);
                        self.state = State::Fingerprint {
                            body,
                            done: 0,
                            ok: true,
                        };
                    } else {
                        self.crc_orig.update(header);
                        self.crc_masked.update(header);
                        let zero = if ty == DATA { len } else { 0 };
                        self.state = State::AttrValue {
                            body,
                            left: padded.min(body),
                            zero: zero.min(body),
                        };
                    }
                } else {
                    self.state = State::AttrHeader { body };
                }
                self.end_of_body(body);
                n
            }
            State::AttrValue { body, left, zero } => {
                let n = if zero > 0 {
                    zero.min(data.len())
                } else {
                    left.min(data.len())
                };
                let chunk = &data[..n];
                self.crc_orig.update(chunk);
                if zero > 0 {
                    seg.zeros(n);
                    update_zeros(&mut self.crc_masked, n);
                } else {
                    seg.literal(chunk);
                    self.crc_masked.update(chunk);
                }
                let (body, left) = (body - n, left - n);
                self.state = if left == 0 {
                    State::AttrHeader { body }
                } else {
                    State::AttrValue {
                        body,
                        left,
                        zero: zero.saturating_sub(n),
                    }
                };
                self.end_of_body(body);
                n
            }
            State::Fingerprint { body, done, ok } => {
                let b = data[0];
                let i = done.min(3);
                let matches = ok && b == self.fp_orig[i];
                let out = if matches {
                    self.fp_masked[i]
                } else if ok {
                    // The first wrong byte: make the masked value wrong too.
                    self.fp_masked[i] ^ 0xFF
                } else {
                    b
                };
                seg.literal(&[out]);
                self.crc_orig.update(&[b]);
                self.crc_masked.update(&[out]);
                let body = body - 1;
                self.state = if done + 1 == 4 {
                    State::AttrHeader { body }
                } else {
                    State::Fingerprint {
                        body,
                        done: done + 1,
                        ok: matches,
                    }
                };
                self.end_of_body(body);
                1
            }
        }
    }

    /// Copies bytes of `data` into `head` until it holds `want`; returns how many.
    fn collect(&mut self, data: &[u8], want: usize) -> usize {
        let n = want.saturating_sub(self.have).min(data.len());
        if let (Some(dst), Some(src)) = (self.head.get_mut(self.have..self.have + n), data.get(..n))
        {
            dst.copy_from_slice(src);
        }
        self.have += n;
        n
    }

    /// A frame's body ended when `left` is 0: on to the next frame.
    fn end_of_body(&mut self, left: usize) {
        if left == 0 {
            self.next_frame();
        }
    }

    fn frame_done_if_empty(&mut self) {
        if let State::Padding { left: 0 } = self.state {
            self.next_frame();
        }
    }

    fn next_frame(&mut self) {
        self.have = 0;
        self.state = if self.datagram {
            State::Passthrough
        } else {
            State::FrameStart
        };
    }

    /// The PROXY header (v1 line or v2 binary), kept as is; then frames.
    fn proxy(&mut self, data: &[u8], seen: usize, seg: &mut Segments<'_>) -> usize {
        let first = if seen == 0 { data[0] } else { self.head[0] };
        if first == b'P' {
            // v1: up to and including CRLF, at most 107 bytes.
            let limit = PROXY_V1_MAX - seen;
            let window = &data[..data.len().min(limit)];
            self.head[0] = b'P';
            let prev_cr = seen > 0 && self.head[1] == b'\r';
            let end = if prev_cr && window.first() == Some(&b'\n') {
                Some(1)
            } else {
                window.windows(2).position(|w| w == b"\r\n").map(|p| p + 2)
            };
            let n = end.unwrap_or(window.len());
            seg.literal(&data[..n]);
            self.head[1] = data[n - 1];
            let seen = seen + n;
            self.state = if end.is_some() {
                State::FrameStart
            } else if seen >= PROXY_V1_MAX {
                State::Passthrough
            } else {
                State::Proxy { seen }
            };
            self.have = 0;
            n
        } else if first == PROXY_V2_SIG[0] {
            // v2: 16-byte header, then its length field's worth of addresses and TLVs.
            if seen < 16 {
                self.have = seen;
                let n = self.collect(data, 16);
                seg.literal(&data[..n]);
                let seen = seen + n;
                if seen == 16 {
                    if self.head[..12] != PROXY_V2_SIG {
                        self.state = State::Passthrough;
                    } else {
                        let len = usize::from(u16::from_be_bytes([self.head[14], self.head[15]]));
                        self.state = State::Proxy { seen: 16 + len };
                        if len == 0 {
                            self.state = State::FrameStart;
                            self.have = 0;
                        }
                        // Remember the end: stored as `seen` past 16 counting down below.
                        self.have = 0;
                        self.head[0] = PROXY_V2_SIG[0];
                    }
                } else {
                    self.state = State::Proxy { seen };
                }
                n
            } else {
                // `seen` holds 16 + bytes of the address block still to come.
                let left = seen - 16;
                let n = left.min(data.len());
                seg.literal(&data[..n]);
                self.state = if n == left {
                    self.have = 0;
                    State::FrameStart
                } else {
                    State::Proxy { seen: seen - n }
                };
                n
            }
        } else {
            self.state = State::Passthrough;
            0
        }
    }
}

/// Masks a datagram from a peer: all of it is relayed payload.
pub fn mask_all(len: usize, seg: &mut Segments<'_>) {
    seg.zeros(len);
}

fn update_zeros(h: &mut crc32fast::Hasher, mut n: usize) {
    const Z: [u8; 256] = [0; 256];
    while n > 0 {
        let k = n.min(Z.len());
        h.update(&Z[..k]);
        n -= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId};

    fn masked(m: &mut Masker, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            let mut enc = Vec::new();
            m.mask(p, &mut Segments::new(&mut enc));
            out.extend(expand(&enc, 1 << 20).unwrap());
        }
        out
    }

    fn send_indication(payload: &[u8], fingerprint: bool) -> Vec<u8> {
        let mut b = MessageBuilder::new(Method(0x006), Class::Indication, TransactionId([7; 12]));
        b.add_xor_address(0x0012, "192.0.2.9:4000".parse().unwrap());
        b.add(DATA, payload);
        if fingerprint {
            b.add_fingerprint();
        }
        b.finish()
    }

    fn channel_data(ch: u16, payload: &[u8], pad: bool) -> Vec<u8> {
        let mut v = ch.to_be_bytes().to_vec();
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(payload);
        while pad && !v.len().is_multiple_of(4) {
            v.push(0xEE);
        }
        v
    }

    #[test]
    fn channel_data_payload_is_zeroed_header_kept() {
        let d = channel_data(0x4001, b"secret media", false);
        let out = masked(&mut Masker::datagram(), &[&d]);
        assert_eq!(out.len(), d.len());
        assert_eq!(&out[..4], &d[..4]);
        assert!(out[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn send_indication_keeps_a_valid_fingerprint_at_any_split() {
        let m = send_indication(b"0123456789 media bytes", true);
        for split in 0..=m.len() {
            let (a, b) = m.split_at(split);
            let out = masked(&mut Masker::stream(false), &[a, b]);
            assert_eq!(out.len(), m.len());
            assert!(!out.windows(5).any(|w| w == b"media"), "split {split}");
            Message::parse(&out).unwrap_or_else(|e| panic!("split {split}: {e:?}"));
        }
        // One byte at a time too.
        let parts: Vec<&[u8]> = m.chunks(1).collect();
        Message::parse(&masked(&mut Masker::stream(false), &parts)).unwrap();
    }

    #[test]
    fn a_bad_fingerprint_stays_bad() {
        let mut m = send_indication(b"abcd", true);
        let last = m.len() - 1;
        m[last] ^= 1;
        assert!(Message::parse(&m).is_err());
        let out = masked(&mut Masker::datagram(), &[&m]);
        assert!(Message::parse(&out).is_err());
    }

    #[test]
    fn requests_are_kept_in_full() {
        let mut b = MessageBuilder::new(Method(0x003), Class::Request, TransactionId([1; 12]));
        b.add(0x0006, b"alice");
        b.add_fingerprint();
        let m = b.finish();
        assert_eq!(masked(&mut Masker::datagram(), &[&m]), m);
    }

    #[test]
    fn streams_of_frames_behind_proxy_headers() {
        let v1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 3478\r\n".to_vec();
        let mut v2 = PROXY_V2_SIG.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12]);
        v2.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2, 0x13, 0x88, 0x0D, 0x96]);
        for header in [v1, v2] {
            let mut stream = header.clone();
            let req = send_indication(b"", false);
            stream.extend_from_slice(&req);
            let cd = channel_data(0x4000, b"xyz", true);
            let si = send_indication(b"hello peer", true);
            stream.extend_from_slice(&cd);
            stream.extend_from_slice(&si);
            stream.extend_from_slice(&cd);
            for split in [1, 3, 7, 13, 64] {
                let parts: Vec<&[u8]> = stream.chunks(split).collect();
                let out = masked(&mut Masker::stream(true), &parts);
                assert_eq!(out.len(), stream.len());
                assert_eq!(&out[..header.len()], &header[..]);
                let at = header.len() + req.len();
                assert_eq!(&out[at..at + 4], &cd[..4]);
                assert_eq!(&out[at + 4..at + 7], &[0, 0, 0]);
                assert_eq!(out[at + 7], 0xEE, "padding kept");
                let si_at = at + cd.len();
                Message::parse(&out[si_at..si_at + si.len()]).unwrap();
                assert!(!out.windows(5).any(|w| w == b"hello"));
            }
        }
    }

    #[test]
    fn random_bytes_at_random_splits_keep_their_length() {
        let mut x: u64 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..300 {
            let len = (next() % 400) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Often start like STUN, sometimes like a Send indication.
            if let (true, Some(b)) = (next() % 2 == 0, data.get_mut(..2)) {
                b.copy_from_slice(&[0x00, 0x16]);
            }
            let mut parts = Vec::new();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let k = 1 + (next() as usize % rest.len().min(50));
                parts.push(&rest[..k]);
                rest = &rest[k..];
            }
            let proxy = next() % 2 == 0;
            assert_eq!(masked(&mut Masker::stream(proxy), &parts).len(), len);
            assert_eq!(masked(&mut Masker::datagram(), &[&data]).len(), len);
        }
    }

    #[test]
    fn garbage_is_kept_and_peers_are_zeroed() {
        let g = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(masked(&mut Masker::stream(false), &[g]), g);
        assert_eq!(masked(&mut Masker::stream(true), &[g]), g);
        let mut enc = Vec::new();
        mask_all(5, &mut Segments::new(&mut enc));
        assert_eq!(expand(&enc, 10).unwrap(), vec![0; 5]);
        assert!(expand(&enc, 4).is_none());
        assert!(expand(&[9, 0, 0, 0, 0], 10).is_none());
    }
}
