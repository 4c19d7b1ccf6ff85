//! Framing of a byte stream into STUN messages and ChannelData (RFC 8656 §12.5,
//! RFC 8489 §6.2.2).
//!
//! On TCP or TLS, messages follow each other with no delimiter: the first two bits tell
//! STUN (0b00) from ChannelData (0b01), and each carries its length. ChannelData is padded
//! to a multiple of four bytes on streams. Bytes arrive split anywhere, so a partial frame
//! is kept until it completes; frames that lie wholly inside the input are handed out
//! without a copy.

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

/// Splits a byte stream into frames. Holds at most one partial frame.
#[derive(Debug, Default)]
pub struct StreamFramer {
    _buf: Vec<u8>,
}

impl StreamFramer {
    /// A framer that refuses frames longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        let _ = max_frame_len;
        todo!()
    }

    /// Feeds `data`; calls `on_frame` for each complete frame in order. `on_frame` returns
    /// false to stop: the rest is discarded and the framer refuses further input. Frames
    /// wholly inside `data` are passed without copying; only an incomplete tail is kept.
    /// After an error the framer refuses further input.
    pub fn push(
        &mut self,
        data: &[u8],
        on_frame: impl FnMut(Frame<'_>) -> bool,
    ) -> Result<(), FramingError> {
        let _ = (data, on_frame);
        todo!()
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        todo!()
    }

    /// Capacity held by the framer's buffer (for memory accounting).
    pub fn capacity(&self) -> usize {
        todo!()
    }
}
