//! Framing of a byte stream into STUN messages and ChannelData (RFC 8656 §12.5,
//! RFC 8489 §6.2.2).
//!
//! On TCP or TLS, messages follow each other with no delimiter: the first two bits tell
//! STUN (0b00) from ChannelData (0b01), and each carries its length. ChannelData is padded
//! to a multiple of four bytes on streams. Bytes arrive split anywhere, so a partial frame
//! is kept until it completes; frames that lie wholly inside the input are handed out
//! without a copy.
//!
//! Reading list:
//! - RFC 8489 §5: the STUN header (length a multiple of 4, magic cookie at bytes 4..8).
//! - RFC 8489 §6.2.2: STUN over TCP/TLS carries no extra framing.
//! - RFC 8656 §12.5: ChannelData over TCP/TLS is padded to a multiple of 4 bytes; the
//!   padding is not counted in the Length field.

/// One complete frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Frame<'a> {
    /// A whole STUN message (header and attributes).
    Stun(&'a [u8]),
    /// A whole ChannelData message: the 4-byte header and the payload, without padding.
    ChannelData(&'a [u8]),
}

/// Why a stream cannot be framed any further. The stream should be closed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FramingError {
    /// The first two bits are 0b10 or 0b11: neither STUN nor ChannelData.
    NotTurn,
    /// A STUN header without the magic cookie (a TLS ClientHello looks like this).
    BadCookie,
    /// A STUN length that is not a multiple of 4.
    BadLength,
    /// A frame larger than the framer's limit.
    TooLarge,
}

/// The STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The longest frame the wire format can express, padding included: a STUN message with
/// the largest 4-aligned length, 20 + 65532 (RFC 8489 §5). A ChannelData frame is at most
/// 4 + 65535 + 1 bytes of padding, which is shorter.
pub const MAX_FRAME_LEN: usize = STUN_HEADER_LEN + 0xFFFC;

/// How far the framer's buffer may exceed its `max_frame_len`: an undecided header is
/// buffered in full before its length is known, and that takes at most this many bytes.
pub const BUFFER_SLACK: usize = DECIDE_LEN;

/// Splits a byte stream into frames. Holds at most one partial frame.
///
/// Decisions are taken from the smallest prefix that settles them, so a stream yields the
/// same frames and the same error however it is split:
/// - the first byte tells STUN, ChannelData or [`FramingError::NotTurn`];
/// - a STUN frame is judged once 8 bytes are in: the cookie first (so a TLS ClientHello is
///   reported as [`FramingError::BadCookie`]), then the length, then the limit;
/// - a ChannelData frame is judged once its 4-byte header is in.
///
/// A frame over the limit is refused from its header, before its body is buffered.
///
/// Two terminal states: after `on_frame` returns false the framer is *stopped* and every
/// later [`push`](Self::push) is a no-op returning `Ok(())`; after an error it is
/// *poisoned* and every later push returns that same error. Both release the buffer.
#[derive(Debug)]
pub struct StreamFramer {
    /// The partial frame (or partial header) carried over from earlier pushes.
    buf: Vec<u8>,
    /// Kind, length and total length (padding included) of the frame in `buf`, once its
    /// header is decided.
    pending: Option<(Kind, usize, usize)>,
    max_frame_len: usize,
    state: State,
    /// The stream must open with a STUN message (see [`StreamFramer::stun_first`]); true
    /// until the first byte has been judged.
    stun_first: bool,
}

impl Default for StreamFramer {
    /// A framer that accepts any frame the wire format can express ([`MAX_FRAME_LEN`]).
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl StreamFramer {
    /// A framer that refuses frames longer than `max_frame_len` bytes.
    ///
    /// The limit counts ChannelData padding: a frame takes `4 + length` rounded up to a
    /// multiple of 4 on the stream. Nothing is allocated until a partial frame is kept.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            pending: None,
            max_frame_len,
            state: State::Running,
            stun_first: false,
        }
    }

    /// Requires the stream to open with a STUN message: a first byte that reads as
    /// ChannelData is `NotTurn`. A TURN client's first message is always a request
    /// (ChannelData needs an allocation first, RFC 8656 §12), while every HTTP method and
    /// a PROXY v1 line sent to the wrong listener start with bits 01; without this rule
    /// they would be read as a ChannelData header and wait for thousands of bytes.
    pub fn stun_first(mut self) -> Self {
        self.stun_first = true;
        self
    }

    /// Feeds `data`; calls `on_frame` for each complete frame in order. `on_frame` returns
    /// false to stop: the rest is discarded and the framer refuses further input. Frames
    /// wholly inside `data` are passed without copying; only an incomplete tail is kept.
    /// After an error the framer refuses further input.
    ///
    /// Once stopped, a push is a no-op returning `Ok(())`. Once an error was returned, a
    /// push returns the same error. Frames that precede the error in the stream are still
    /// delivered before it.
    pub fn push(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(Frame<'_>) -> bool,
    ) -> Result<(), FramingError> {
        match self.state {
            State::Running => {}
            State::Stopped => return Ok(()),
            State::Failed(e) => return Err(e),
        }
        if let (true, Some(first)) = (self.stun_first, data.first()) {
            self.stun_first = false;
            if first >> 6 != 0b00 {
                self.state = State::Failed(FramingError::NotTurn);
                self.release();
                return Err(FramingError::NotTurn);
            }
        }
        match self.run(data, &mut on_frame) {
            Ok(Flow::Continue) => Ok(()),
            Ok(Flow::Stop) => {
                self.state = State::Stopped;
                self.release();
                Ok(())
            }
            Err(e) => {
                self.state = State::Failed(e);
                self.release();
                Err(e)
            }
        }
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Capacity held by the framer's buffer (for memory accounting).
    ///
    /// It grows only to the size of the largest partial frame seen, so it stays within
    /// `max_frame_len + BUFFER_SLACK`, and it is kept for later frames.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Length of a STUN header (RFC 8489 §5).
const STUN_HEADER_LEN: usize = 20;
/// Length of a ChannelData header (RFC 8656 §12.4).
const CHANNEL_HEADER_LEN: usize = 4;
/// Bytes needed to judge a STUN header: type, length and cookie.
const DECIDE_LEN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// `on_frame` asked to stop.
    Stopped,
    /// The stream broke the framing; the error is repeated.
    Failed(FramingError),
}

/// Whether to keep going after handing out a frame.
enum Flow {
    Continue,
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Stun,
    ChannelData,
}

/// What the first bytes of a frame say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// Not decided yet: at least this many bytes are needed.
    NeedMore(usize),
    /// A frame of `len` bytes, taking `total` bytes of the stream (padding included).
    Frame {
        kind: Kind,
        len: usize,
        total: usize,
    },
}

impl Kind {
    fn frame(self, bytes: &[u8]) -> Frame<'_> {
        match self {
            Kind::Stun => Frame::Stun(bytes),
            Kind::ChannelData => Frame::ChannelData(bytes),
        }
    }
}

/// Judges the start of a frame from `prefix` (which may hold more than one frame).
fn read_head(prefix: &[u8], max_frame_len: usize) -> Result<Head, FramingError> {
    let Some(&first) = prefix.first() else {
        return Ok(Head::NeedMore(1));
    };
    // RFC 8656 §12: the two most significant bits tell STUN (0b00) from ChannelData (0b01).
    let (kind, len, total) = match first >> 6 {
        0b00 => {
            let Some(&[_, _, len_hi, len_lo, c0, c1, c2, c3]) = prefix.get(..DECIDE_LEN) else {
                return Ok(Head::NeedMore(DECIDE_LEN));
            };
            let cookie = u32::from_be_bytes([c0, c1, c2, c3]);
            if cookie != MAGIC_COOKIE {
                return Err(FramingError::BadCookie);
            }
            // RFC 8489 §5: "the message length MUST contain the size of the message in
            // bytes, not including the 20-byte STUN header"; attributes are 4-aligned.
            let body = usize::from(u16::from_be_bytes([len_hi, len_lo]));
            if body % 4 != 0 {
                return Err(FramingError::BadLength);
            }
            let len = STUN_HEADER_LEN + body;
            (Kind::Stun, len, len)
        }
        0b01 => {
            let Some(&[_, _, len_hi, len_lo]) = prefix.get(..CHANNEL_HEADER_LEN) else {
                return Ok(Head::NeedMore(CHANNEL_HEADER_LEN));
            };
            // RFC 8656 §12.5: over TCP/TLS the ChannelData message MUST be padded to a
            // multiple of four bytes; the padding is not in the Length field.
            let body = usize::from(u16::from_be_bytes([len_hi, len_lo]));
            let len = CHANNEL_HEADER_LEN + body;
            (Kind::ChannelData, len, len.next_multiple_of(4))
        }
        _ => return Err(FramingError::NotTurn),
    };
    if total > max_frame_len {
        return Err(FramingError::TooLarge);
    }
    Ok(Head::Frame { kind, len, total })
}

impl StreamFramer {
    /// The body of `push` while running.
    fn run(
        &mut self,
        mut data: &[u8],
        on_frame: &mut impl FnMut(Frame<'_>) -> bool,
    ) -> Result<Flow, FramingError> {
        if !self.buf.is_empty() {
            match self.complete_buffered(&mut data, on_frame)? {
                Some(flow @ Flow::Stop) => return Ok(flow),
                Some(Flow::Continue) => {}
                // `data` ran out before the buffered frame completed.
                None => return Ok(Flow::Continue),
            }
        }
        // Zero copy: hand out frames lying wholly inside `data`.
        while !data.is_empty() {
            match read_head(data, self.max_frame_len)? {
                Head::NeedMore(_) => {
                    self.keep_tail(data, None);
                    return Ok(Flow::Continue);
                }
                Head::Frame { kind, len, total } => {
                    let Some((frame, rest)) = data.split_at_checked(total) else {
                        self.keep_tail(data, Some((kind, len, total)));
                        return Ok(Flow::Continue);
                    };
                    let frame = frame.get(..len).unwrap_or(frame);
                    if !on_frame(kind.frame(frame)) {
                        return Ok(Flow::Stop);
                    }
                    data = rest;
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Completes the frame kept in `buf` from the front of `data`, taking only the bytes
    /// it needs. Returns None when `data` ran out first.
    fn complete_buffered(
        &mut self,
        data: &mut &[u8],
        on_frame: &mut impl FnMut(Frame<'_>) -> bool,
    ) -> Result<Option<Flow>, FramingError> {
        // Decide the header first. Bounded: each round decides it or takes bytes.
        let (kind, len, total) = loop {
            if let Some(pending) = self.pending {
                break pending;
            }
            match read_head(&self.buf, self.max_frame_len)? {
                Head::NeedMore(need) => {
                    if !self.take_until(data, need) {
                        return Ok(None);
                    }
                }
                Head::Frame { kind, len, total } => {
                    self.pending = Some((kind, len, total));
                }
            }
        };
        if !self.take_until(data, total) {
            return Ok(None);
        }
        let frame = self.buf.get(..len).unwrap_or(&self.buf);
        let keep_going = on_frame(kind.frame(frame));
        self.buf.clear();
        self.pending = None;
        Ok(Some(if keep_going {
            Flow::Continue
        } else {
            Flow::Stop
        }))
    }

    /// Moves bytes from the front of `data` into `buf` until it holds `target` bytes.
    /// Returns whether it got there.
    fn take_until(&mut self, data: &mut &[u8], target: usize) -> bool {
        let missing = target.saturating_sub(self.buf.len());
        let (take, rest) = data.split_at(missing.min(data.len()));
        self.grow(target, take.len());
        self.buf.extend_from_slice(take);
        *data = rest;
        self.buf.len() >= target
    }

    /// Keeps an incomplete tail (`buf` is empty). `pending` is the frame's kind, length
    /// and total once its header is decided.
    fn keep_tail(&mut self, tail: &[u8], pending: Option<(Kind, usize, usize)>) {
        let target = pending
            .map_or(DECIDE_LEN, |(_, _, total)| total)
            .max(tail.len());
        self.grow(target, tail.len());
        self.buf.extend_from_slice(tail);
        self.pending = pending;
    }

    /// Makes room for `incoming` more bytes of a frame of `target` bytes. The buffer grows
    /// with what has arrived (doubling), never past `target`: a header announcing a large
    /// frame costs nothing until its bytes come, and capacity never exceeds the limit
    /// plus the slack.
    fn grow(&mut self, target: usize, incoming: usize) {
        let needed = self.buf.len() + incoming;
        if needed <= self.buf.capacity() {
            return;
        }
        let new_cap = needed
            .max(self.buf.capacity().saturating_mul(2))
            .min(target.max(needed));
        self.buf.reserve_exact(new_cap - self.buf.len());
    }

    /// Frees the buffer once the framer will take no more input.
    fn release(&mut self) {
        self.buf = Vec::new();
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An owned copy of a frame, to compare across pushes.
    #[derive(Clone, PartialEq, Eq, Debug)]
    enum Owned {
        Stun(Vec<u8>),
        ChannelData(Vec<u8>),
    }

    impl Owned {
        fn of(frame: Frame<'_>) -> Self {
            match frame {
                Frame::Stun(b) => Owned::Stun(b.to_vec()),
                Frame::ChannelData(b) => Owned::ChannelData(b.to_vec()),
            }
        }
    }

    /// A STUN message with a Binding request header, a fixed transaction id and `body`
    /// (whose length must be a multiple of 4) as attributes.
    fn stun(body: &[u8]) -> Vec<u8> {
        assert_eq!(body.len() % 4, 0);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(body);
        m
    }

    /// A STUN message with a few dummy attributes (type, length, 4-aligned value).
    fn stun_with_attrs(n: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..n {
            body.extend_from_slice(&[0x80, 0x22, 0x00, 0x04]);
            body.extend_from_slice(&[i as u8; 4]);
        }
        stun(&body)
    }

    /// A ChannelData message and its bytes on a stream (padded with `pad_byte`).
    fn channel(number: u16, payload: &[u8], pad_byte: u8) -> (Vec<u8>, Vec<u8>) {
        let mut m = number.to_be_bytes().to_vec();
        m.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        m.extend_from_slice(payload);
        let mut wire = m.clone();
        wire.resize(m.len().next_multiple_of(4), pad_byte);
        (m, wire)
    }

    /// Feeds `pieces` in order; returns the frames and the first error.
    fn feed<'a>(
        framer: &mut StreamFramer,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Owned>, Option<FramingError>) {
        let mut frames = Vec::new();
        for piece in pieces {
            if let Err(e) = framer.push(piece, |f| {
                frames.push(Owned::of(f));
                true
            }) {
                return (frames, Some(e));
            }
        }
        (frames, None)
    }

    /// Splits `bytes` at the given cut points (taken modulo its length, sorted).
    fn split_at_cuts(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.windows(2)
            .map(|w| bytes[w[0]..w[1]].to_vec())
            .collect()
    }

    fn points_into(inner: &[u8], outer: &[u8]) -> bool {
        let range = outer.as_ptr_range();
        let inner = inner.as_ptr_range();
        range.start <= inner.start && inner.end <= range.end
    }

    #[test]
    fn frames_back_to_back() {
        let s1 = stun(&[]);
        let (c, c_wire) = channel(0x4001, b"hello", 0);
        let s2 = stun_with_attrs(3);
        let stream = [s1.clone(), c_wire.clone(), s2.clone()].concat();
        assert_eq!(c_wire.len(), 12, "5-byte payload padded to 8");

        let mut framer = StreamFramer::new(1500);
        let (frames, err) = feed(&mut framer, [stream.as_slice()]);
        assert_eq!(err, None);
        assert_eq!(
            frames,
            vec![Owned::Stun(s1), Owned::ChannelData(c), Owned::Stun(s2)]
        );
        assert_eq!(framer.buffered(), 0);
        assert_eq!(framer.capacity(), 0, "nothing copied when frames are whole");
    }

    #[test]
    fn padding_is_consumed_but_not_in_the_frame() {
        // RFC 8656 §12.5: padding bytes on streams are ignored whatever their value.
        let (c, c_wire) = channel(0x4fff, b"abcdef", 0xee);
        let stream = [c_wire.clone(), stun(&[])].concat();
        let mut framer = StreamFramer::new(1500);
        // Push up to the end of the payload: the frame waits for its padding.
        let (frames, err) = feed(&mut framer, [&stream[..c.len()]]);
        assert_eq!((frames, err), (vec![], None));
        assert_eq!(framer.buffered(), c.len());
        let (frames, err) = feed(&mut framer, [&stream[c.len()..]]);
        assert_eq!(err, None);
        assert_eq!(frames, vec![Owned::ChannelData(c), Owned::Stun(stun(&[]))]);
    }

    #[test]
    fn channel_data_without_padding_and_empty() {
        let (c0, w0) = channel(0x4000, b"", 0);
        let (c4, w4) = channel(0x4000, b"1234", 0);
        assert_eq!((w0.len(), w4.len()), (4, 8));
        let mut framer = StreamFramer::new(8);
        let (frames, err) = feed(&mut framer, [[w0, w4].concat().as_slice()]);
        assert_eq!(err, None);
        assert_eq!(frames, vec![Owned::ChannelData(c0), Owned::ChannelData(c4)]);
    }

    #[test]
    fn channel_numbers_outside_the_valid_range_are_passed() {
        // Channel numbers 0x5000-0x7FFF are reserved; judging them is not framing's job.
        for number in [0x5000, 0x7fff] {
            let (c, w) = channel(number, b"xy", 0);
            let mut framer = StreamFramer::new(1500);
            let (frames, err) = feed(&mut framer, [w.as_slice()]);
            assert_eq!((frames, err), (vec![Owned::ChannelData(c)], None));
        }
    }

    #[test]
    fn whole_frames_are_not_copied() {
        let s = stun_with_attrs(2);
        let (_, w) = channel(0x4002, b"payload", 0);
        let stream = [s.clone(), w, s.clone()].concat();
        let mut framer = StreamFramer::new(1500);
        let mut n = 0;
        framer
            .push(&stream, |f| {
                let (Frame::Stun(b) | Frame::ChannelData(b)) = f;
                assert!(points_into(b, &stream));
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn stun_first_refuses_a_stream_that_opens_like_channel_data() {
        let mut framer = StreamFramer::new(1500).stun_first();
        assert_eq!(
            framer.push(b"GET / HTTP/1.1\r\n", |_| true),
            Err(FramingError::NotTurn)
        );
        let mut framer = StreamFramer::new(1500).stun_first();
        let s = stun_with_attrs(1);
        let (c, w) = channel(0x4001, b"x", 0);
        let mut n = 0;
        framer
            .push(&[&s[..], &w[..]].concat(), |_| {
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 2, "ChannelData after the first STUN message is fine");
        let _ = c;
        let mut plain = StreamFramer::new(1500);
        assert_eq!(
            plain.push(&w, |_| true),
            Ok(()),
            "without the rule, ChannelData may open"
        );
    }

    #[test]
    fn completing_a_partial_frame_takes_only_what_it_needs() {
        let s = stun_with_attrs(2);
        let (c, w) = channel(0x4003, b"abc", 0);
        let mut framer = StreamFramer::new(1500);
        let (frames, err) = feed(&mut framer, [&s[..10]]);
        assert_eq!((frames, err), (vec![], None));
        assert_eq!(framer.buffered(), 10);
        // Room for what arrived, never more than the frame: a header alone pins nothing.
        assert!(framer.capacity() >= 10 && framer.capacity() <= s.len());

        // The rest of the STUN message, a whole ChannelData, and half a STUN message.
        let second = [&s[10..], &w[..], &s[..5]].concat();
        let mut seen = Vec::new();
        framer
            .push(&second, |f| {
                if let Frame::ChannelData(b) = f {
                    assert!(points_into(b, &second), "zero copy after the completion");
                }
                seen.push(Owned::of(f));
                true
            })
            .unwrap();
        assert_eq!(seen, vec![Owned::Stun(s.clone()), Owned::ChannelData(c)]);
        assert_eq!(framer.buffered(), 5);
        let (frames, err) = feed(&mut framer, [&s[5..]]);
        assert_eq!((frames, err), (vec![Owned::Stun(s.clone())], None));
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn no_allocation_per_frame_once_warm() {
        let s = stun_with_attrs(4);
        let mut framer = StreamFramer::new(1500);
        let stream: Vec<u8> = s.iter().copied().cycle().take(s.len() * 20).collect();
        // Split every frame across two pushes so each one is buffered.
        let (frames, err) = feed(&mut framer, stream.chunks(s.len() - 3));
        assert_eq!(err, None);
        assert_eq!(frames.len(), 20);
        let warm = framer.capacity();
        let ptr = framer.buf.as_ptr();
        let (frames, err) = feed(&mut framer, stream.chunks(s.len() - 3));
        assert_eq!((frames.len(), err), (20, None));
        assert_eq!(framer.capacity(), warm);
        assert_eq!(framer.buf.as_ptr(), ptr, "the buffer was not reallocated");
    }

    #[test]
    fn not_turn_from_the_first_byte() {
        for first in [0x80, 0xbf, 0xc0, 0xff] {
            let mut framer = StreamFramer::new(1500);
            assert_eq!(framer.push(&[first], |_| true), Err(FramingError::NotTurn));
        }
    }

    #[test]
    fn tls_client_hello_is_a_bad_cookie_after_eight_bytes() {
        // The start of a TLS 1.2/1.3 ClientHello record: handshake, TLS 1.0 record
        // version, length 0x0200, ClientHello, 3-byte length.
        let hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        let mut framer = StreamFramer::new(1500);
        assert_eq!(framer.push(&hello[..7], |_| true), Ok(()));
        assert_eq!(
            framer.push(&hello[7..8], |_| true),
            Err(FramingError::BadCookie)
        );
        let mut framer = StreamFramer::new(1500);
        assert_eq!(framer.push(&hello, |_| true), Err(FramingError::BadCookie));
    }

    #[test]
    fn bad_length_is_reported() {
        let mut m = stun(&[0; 8]);
        m[3] = 5;
        let mut framer = StreamFramer::new(1500);
        assert_eq!(framer.push(&m[..8], |_| true), Err(FramingError::BadLength));
    }

    #[test]
    fn too_large_is_decided_from_the_header() {
        // A STUN message announcing 1000 bytes: refused from 8 bytes, nothing buffered.
        let mut head = stun(&[]);
        head[2..4].copy_from_slice(&1000u16.to_be_bytes());
        let mut framer = StreamFramer::new(500);
        assert_eq!(
            framer.push(&head[..8], |_| true),
            Err(FramingError::TooLarge)
        );
        assert_eq!((framer.buffered(), framer.capacity()), (0, 0));

        // Split inside the header: still refused before the body arrives.
        let mut framer = StreamFramer::new(500);
        assert_eq!(framer.push(&head[..3], |_| true), Ok(()));
        assert_eq!(
            framer.push(&head[3..], |_| true),
            Err(FramingError::TooLarge)
        );
        assert_eq!(framer.capacity(), 0);

        // ChannelData: the limit counts the padding.
        let (_, w) = channel(0x4000, b"12345", 0);
        assert_eq!(w.len(), 12);
        let mut framer = StreamFramer::new(11);
        assert_eq!(framer.push(&w[..4], |_| true), Err(FramingError::TooLarge));
        let mut framer = StreamFramer::new(12);
        let (frames, err) = feed(&mut framer, [w.as_slice()]);
        assert_eq!((frames.len(), err), (1, None));
    }

    #[test]
    fn frames_before_an_error_are_delivered_then_the_framer_is_poisoned() {
        let s = stun(&[]);
        let stream = [&s[..], &[0xff, 0, 0, 0]].concat();
        let mut framer = StreamFramer::new(1500);
        let (frames, err) = feed(&mut framer, [stream.as_slice()]);
        assert_eq!(frames, vec![Owned::Stun(s.clone())]);
        assert_eq!(err, Some(FramingError::NotTurn));
        // Every later push repeats the error and delivers nothing.
        let (frames, err) = feed(&mut framer, [s.as_slice()]);
        assert_eq!((frames, err), (vec![], Some(FramingError::NotTurn)));
        assert_eq!(framer.push(&[], |_| true), Err(FramingError::NotTurn));
        assert_eq!((framer.buffered(), framer.capacity()), (0, 0));
    }

    #[test]
    fn an_error_while_completing_a_buffered_header() {
        let mut framer = StreamFramer::new(1500);
        assert_eq!(framer.push(&[0x00, 0x01, 0x00], |_| true), Ok(()));
        assert_eq!(framer.buffered(), 3);
        assert_eq!(
            framer.push(&[0x00, 0x21, 0x12, 0xa4, 0x43], |_| true),
            Err(FramingError::BadCookie)
        );
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn stopping_discards_the_rest_and_later_pushes_are_no_ops() {
        let s = stun(&[]);
        let stream = [s.clone(), s.clone(), s.clone()].concat();
        let mut framer = StreamFramer::new(1500);
        let mut n = 0;
        framer
            .push(&stream[..50], |_| {
                n += 1;
                false
            })
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(framer.buffered(), 0);
        let mut later = 0;
        assert_eq!(
            framer.push(&stream[50..], |_| {
                later += 1;
                true
            }),
            Ok(())
        );
        // Even garbage is ignored once stopped.
        assert_eq!(framer.push(&[0xff; 8], |_| true), Ok(()));
        assert_eq!(later, 0);
    }

    #[test]
    fn stopping_on_a_buffered_frame() {
        let s = stun(&[]);
        let stream = [s.clone(), s.clone()].concat();
        let mut framer = StreamFramer::new(1500);
        framer.push(&stream[..10], |_| true).unwrap();
        let mut n = 0;
        framer
            .push(&stream[10..], |_| {
                n += 1;
                false
            })
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(framer.push(&s, |_| panic!("stopped")), Ok(()));
    }

    #[test]
    fn default_accepts_the_largest_frames() {
        let big = stun(&vec![0; 0xfffc]);
        let (c, w) = channel(0x4000, &vec![1; 0xffff], 0);
        let mut framer = StreamFramer::default();
        let stream = [big.clone(), w].concat();
        let (frames, err) = feed(&mut framer, stream.chunks(1000));
        assert_eq!(err, None);
        assert_eq!(frames, vec![Owned::Stun(big), Owned::ChannelData(c)]);
        assert!(framer.capacity() <= MAX_FRAME_LEN);
    }

    #[test]
    fn every_two_piece_split_of_one_frame_gives_the_original() {
        let s = stun_with_attrs(3);
        let (c, w) = channel(0x4abc, b"seven b", 0x55);
        for (frame, wire) in [
            (Owned::Stun(s.clone()), s.clone()),
            (Owned::ChannelData(c), w),
        ] {
            for cut in 0..=wire.len() {
                let mut framer = StreamFramer::new(1500);
                let (frames, err) = feed(&mut framer, [&wire[..cut], &wire[cut..]]);
                assert_eq!((frames, err), (vec![frame.clone()], None), "cut {cut}");
                assert_eq!(framer.buffered(), 0);
            }
        }
    }

    /// One frame for the properties: the owned frame and its bytes on the stream.
    fn arb_frame() -> impl Strategy<Value = (Owned, Vec<u8>)> {
        prop_oneof![
            (0usize..24, any::<u8>()).prop_map(|(words, fill)| {
                let m = stun(&vec![fill; words * 4]);
                (Owned::Stun(m.clone()), m)
            }),
            (
                0x4000u16..=0x7fff,
                prop::collection::vec(any::<u8>(), 0..70),
                any::<u8>()
            )
                .prop_map(|(number, payload, pad)| {
                    let (m, wire) = channel(number, &payload, pad);
                    (Owned::ChannelData(m), wire)
                }),
        ]
    }

    /// Bytes that are mostly wrong but often look like frame headers, so that the
    /// buffering and limit paths are reached, not only the first-byte checks.
    fn arb_noise() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..16),
            (
                0u8..0x40,
                any::<u16>(),
                prop::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(t, len, rest)| {
                    let mut h = vec![t, 1];
                    h.extend_from_slice(&(len & 0x1fc).to_be_bytes());
                    h.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
                    h.extend_from_slice(&rest);
                    h
                }),
            (
                0x40u8..0x80,
                any::<u8>(),
                prop::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(t, len, rest)| {
                    let mut h = vec![t, 0, 0, len];
                    h.extend_from_slice(&rest);
                    h
                }),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        /// Any split of a valid stream, down to 1-byte pieces, yields the frames of a
        /// single push, which are the original frames.
        #[test]
        fn any_split_gives_the_same_frames(
            frames in prop::collection::vec(arb_frame(), 0..8),
            cuts in prop::collection::vec(any::<usize>(), 0..40),
        ) {
            let originals: Vec<Owned> = frames.iter().map(|(f, _)| f.clone()).collect();
            let stream: Vec<u8> = frames.iter().flat_map(|(_, w)| w.clone()).collect();

            let mut whole = StreamFramer::new(200);
            let (at_once, err) = feed(&mut whole, [stream.as_slice()]);
            prop_assert_eq!(err, None);
            prop_assert_eq!(&at_once, &originals);

            let pieces = split_at_cuts(&stream, &cuts);
            let mut split = StreamFramer::new(200);
            let (got, err) = feed(&mut split, pieces.iter().map(Vec::as_slice));
            prop_assert_eq!(err, None);
            prop_assert_eq!(&got, &originals);
            prop_assert_eq!(split.buffered(), 0);

            let mut bytewise = StreamFramer::new(200);
            let (got, err) = feed(&mut bytewise, stream.chunks(1));
            prop_assert_eq!(err, None);
            prop_assert_eq!(&got, &originals);
        }

        /// Random bytes never panic; the buffer stays within the limit plus the slack;
        /// and the outcome (frames and error) does not depend on the split.
        #[test]
        fn random_bytes_are_bounded_and_split_independent(
            bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..600), arb_noise()],
            cuts in prop::collection::vec(any::<usize>(), 0..30),
            max in 0usize..300,
        ) {
            let mut whole = StreamFramer::new(max);
            let at_once = feed(&mut whole, [bytes.as_slice()]);

            let mut split = StreamFramer::new(max);
            let mut frames = Vec::new();
            let mut error = None;
            for piece in split_at_cuts(&bytes, &cuts) {
                let r = split.push(&piece, |f| {
                    frames.push(Owned::of(f));
                    true
                });
                prop_assert!(split.buffered() <= max + BUFFER_SLACK);
                prop_assert!(split.capacity() <= max + BUFFER_SLACK);
                if let Err(e) = r {
                    error = Some(e);
                    break;
                }
            }
            prop_assert_eq!(at_once, (frames, error));
        }

        /// Random bytes behind valid frames: the frames come out whole, and an error,
        /// once returned, repeats.
        #[test]
        fn random_tail_after_valid_frames(
            frames in prop::collection::vec(arb_frame(), 1..4),
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let originals: Vec<Owned> = frames.iter().map(|(f, _)| f.clone()).collect();
            let mut stream: Vec<u8> = frames.iter().flat_map(|(_, w)| w.clone()).collect();
            stream.extend_from_slice(&tail);
            let mut framer = StreamFramer::new(200);
            let (got, err) = feed(&mut framer, stream.chunks(3));
            prop_assert!(got.starts_with(&originals));
            if let Some(e) = err {
                prop_assert_eq!(framer.push(&[0], |_| true), Err(e));
            }
        }

        /// A frame split across any two or three pushes comes out equal to the original.
        #[test]
        fn split_frames_equal_the_originals(
            (frame, wire) in arb_frame(),
            a in any::<usize>(),
            b in any::<usize>(),
        ) {
            let pieces = split_at_cuts(&wire, &[a, b]);
            let mut framer = StreamFramer::new(200);
            let (got, err) = feed(&mut framer, pieces.iter().map(Vec::as_slice));
            prop_assert_eq!(err, None);
            prop_assert_eq!(got, vec![frame]);
        }
    }
}
