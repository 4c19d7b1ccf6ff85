//! ChannelData (RFC 8656 §12.4–§12.5): `channel::parse` on arbitrary bytes. An accepted
//! message names a number in the channel range and a payload inside the input; writing
//! the same header back gives the same first four bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_core::channel;

fuzz_target!(|data: &[u8]| {
    let Ok((number, range)) = channel::parse(data) else {
        return;
    };
    assert!(channel::is_valid_number(number, false));
    assert_eq!(range.start, channel::HEADER_LEN);
    assert!(range.end <= data.len());
    let len = u16::try_from(range.len()).expect("a u16 length field");
    let mut header = [0u8; channel::HEADER_LEN];
    channel::write_header(&mut header, number, len);
    assert_eq!(&header[..], &data[..channel::HEADER_LEN]);
    let pad = channel::stream_padding(range.len());
    assert!(pad < 4 && (range.len() + pad).is_multiple_of(4));
});
