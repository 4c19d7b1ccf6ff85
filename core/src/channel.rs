//! ChannelData messages (RFC 8656 §12.4, §12.5): a 4-byte header (channel number, length)
//! and the application data.

/// The first valid channel number (RFC 8656 §12).
pub const MIN_CHANNEL: u16 = 0x4000;
/// The last channel number of RFC 8656 §12 (0x5000–0x7FFF became reserved there).
pub const MAX_CHANNEL: u16 = 0x4FFF;
/// The last channel number of RFC 5766 §11, which clients still use: libwebrtc's and
/// coturn's draw channel numbers from 0x4000–0x7FFF, and coturn's server accepts them.
pub const MAX_LEGACY_CHANNEL: u16 = 0x7FFF;
/// Size of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// True for numbers a client may bind: 0x4000 through 0x4FFF when `strict` (RFC 8656
/// §12), through 0x7FFF otherwise (RFC 5766 §11, what deployed clients use).
pub fn is_valid_number(n: u16, strict: bool) -> bool {
    let max = if strict {
        MAX_CHANNEL
    } else {
        MAX_LEGACY_CHANNEL
    };
    (MIN_CHANNEL..=max).contains(&n)
}

/// Why bytes are not a usable ChannelData message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChannelDataError {
    /// Fewer than 4 bytes.
    TooShort,
    /// The number is outside 0x4000–0x7FFF (RFC 8656 §12.4: such a message is discarded).
    BadNumber,
    /// The length field announces more data than there is (RFC 8656 §12.5).
    LengthOverrun,
}

/// Parses a ChannelData message from a datagram or a framed stream: returns the channel
/// number and the range of `buf` holding the payload. Bytes after the announced length
/// (padding) are ignored, as RFC 8656 §12.5 allows on UDP.
pub fn parse(buf: &[u8]) -> Result<(u16, core::ops::Range<usize>), ChannelDataError> {
    if buf.len() < HEADER_LEN {
        return Err(ChannelDataError::TooShort);
    }
    let number = u16::from_be_bytes([buf[0], buf[1]]);
    // Only bound numbers relay anything; here the legacy range is enough to tell
    // ChannelData from everything else.
    if !is_valid_number(number, false) {
        return Err(ChannelDataError::BadNumber);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if HEADER_LEN + len > buf.len() {
        return Err(ChannelDataError::LengthOverrun);
    }
    Ok((number, HEADER_LEN..HEADER_LEN + len))
}

/// Writes the ChannelData header for `len` payload bytes into `out[..4]`.
pub fn write_header(out: &mut [u8], number: u16, len: u16) {
    out[..2].copy_from_slice(&number.to_be_bytes());
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

/// Padding after `len` payload bytes on a stream (RFC 8656 §12.5: to a multiple of 4).
pub fn stream_padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_ignores_padding() {
        let msg = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
        assert_eq!(parse(&msg), Ok((0x4001, 4..7)));
    }

    #[test]
    fn rejects_bad_numbers_and_overruns() {
        assert_eq!(parse(&[0x3f, 0xff, 0, 0]), Err(ChannelDataError::BadNumber));
        assert_eq!(parse(&[0x80, 0x00, 0, 0]), Err(ChannelDataError::BadNumber));
        assert_eq!(parse(&[0x50, 0x00, 0, 0]), Ok((0x5000, 4..4)));
        assert_eq!(
            parse(&[0x40, 0x00, 0, 5, 1, 2]),
            Err(ChannelDataError::LengthOverrun)
        );
        assert_eq!(parse(&[0x40, 0x00, 0]), Err(ChannelDataError::TooShort));
    }

    #[test]
    fn strict_range_is_rfc_8656() {
        assert!(is_valid_number(0x4FFF, true) && !is_valid_number(0x5000, true));
        assert!(is_valid_number(0x7FFF, false) && !is_valid_number(0x8000, false));
        assert!(!is_valid_number(0x3FFF, false));
    }

    #[test]
    fn padding_rounds_to_four() {
        assert_eq!(
            (0..8).map(stream_padding).collect::<Vec<_>>(),
            vec![0, 3, 2, 1, 0, 3, 2, 1]
        );
    }

    #[test]
    fn header_roundtrip() {
        let mut b = [0u8; 4];
        write_header(&mut b, 0x4abc, 300);
        assert_eq!(b, [0x4a, 0xbc, 0x01, 0x2c]);
    }
}
