//! The PROXY protocol parser (v1 text, v2 binary): `proxy_protocol::parse` on arbitrary
//! bytes, with the v2 length limit taken from the input. A complete header consumes no
//! more than was given; every prefix of an accepted header is `Incomplete` (the parser
//! keeps no state, so the runtime calls it again as bytes arrive); an encoded header of
//! the addresses found parses back to them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_core::proxy_protocol::{self, ProxyHeader, ProxyParse};

fuzz_target!(|input: &[u8]| {
    let (limit, data) = match input.split_first() {
        Some((l, rest)) => (16 + usize::from(*l) * 4, rest),
        None => return,
    };
    let Ok(ProxyParse::Done { header, consumed }) = proxy_protocol::parse(data, limit) else {
        return;
    };
    assert!(
        consumed > 0 && consumed <= data.len(),
        "consumed {consumed}"
    );
    for cut in [1, consumed / 2, consumed - 1] {
        if cut == 0 || cut >= consumed {
            continue;
        }
        assert_eq!(
            proxy_protocol::parse(&data[..cut], limit),
            Ok(ProxyParse::Incomplete),
            "prefix of {cut} bytes of a {consumed}-byte header"
        );
    }
    // What follows the header does not change the header.
    assert_eq!(
        proxy_protocol::parse(&data[..consumed], limit),
        Ok(ProxyParse::Done { header, consumed })
    );
    if let ProxyHeader::Proxied {
        source,
        destination: Some(destination),
    } = header
    {
        if source.is_ipv4() == destination.is_ipv4() {
            for encoded in [
                proxy_protocol::encode_v1(Some((source, destination))),
                proxy_protocol::encode_v2(Some((source, destination))),
            ] {
                match proxy_protocol::parse(&encoded, 512) {
                    Ok(ProxyParse::Done {
                        header: ProxyHeader::Proxied { source: s, .. },
                        consumed: c,
                    }) => {
                        assert_eq!(s, source);
                        assert_eq!(c, encoded.len());
                    }
                    other => panic!("re-encoded header parsed as {other:?}"),
                }
            }
        }
    }
});
